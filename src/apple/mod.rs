//! Apple's MDM protocol as data: check-in messages, command reports and commands, the
//! enrollment profile. Pure: parsing and building plists, no I/O, no store.
//!
//! Field names and presence follow Apple's schemas (apple/device-management `mdm/checkin`,
//! `mdm/commands`, `mdm/profiles`).

pub mod checkin;
pub mod command;
pub mod enroll;
pub mod machine_info;
pub mod paths;
pub mod plist_in;
pub mod profile;

/// A message that is not what Apple sends.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("not a property list: {0}")]
    NotPlist(String),
    #[error(transparent)]
    Refused(#[from] plist_in::PlistError),
    #[error("`{field}` is missing or not {expected}")]
    Field {
        field: &'static str,
        expected: &'static str,
    },
    #[error("the message names no device (no `UDID` and no `EnrollmentID`)")]
    NoDevice,
    #[error("{0}")]
    Invalid(String),
}

impl crate::diagnose::Diagnose for ProtocolError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            ProtocolError::NotPlist(_) => "the file must be an XML or binary property list".into(),
            ProtocolError::Refused(_) => {
                "send a complete XML or binary property list of ordinary depth".into()
            }
            ProtocolError::Field { field, .. } => format!("add `{field}` to the property list"),
            ProtocolError::NoDevice => "the message must carry `UDID` or `EnrollmentID`".into(),
            ProtocolError::Invalid(_) => return None,
        })
    }
}

/// The shape of Apple's `<data>` values inside serde structs.
pub(crate) fn data_bytes(d: Option<plist::Data>) -> Option<Vec<u8>> {
    d.map(Into::into)
}
