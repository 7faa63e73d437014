//! Check-in messages (`PUT` to the CheckInURL, `Content-Type: application/x-apple-aspen-mdm-checkin`):
//! Authenticate, TokenUpdate, CheckOut, bootstrap tokens, UserAuthenticate, DeclarativeManagement,
//! GetToken. Each is decoded into its own struct; the raw bytes are kept by the caller.
//!
//! Decoding reads the common header first (message type and who sent it), then the concrete
//! struct, rather than an internally tagged enum: serde's tagged enums buffer the content and
//! lose plist `<data>` typing.

use serde::Deserialize;

use super::{ProtocolError, data_bytes};

/// The fields every check-in and command report may carry to say who is speaking.
#[derive(Clone, Debug, Default)]
pub struct Sender {
    pub udid: Option<String>,
    pub enrollment_id: Option<String>,
    pub enrollment_user_id: Option<String>,
    pub user_id: Option<String>,
    pub user_short_name: Option<String>,
    pub user_long_name: Option<String>,
}

/// The UserID Shared iPad sends for its channels; the short name identifies the user instead.
const SHARED_IPAD_USER: &str = "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF";

/// Which channel a message belongs to, as mdmctl stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelId {
    /// The device's ID: UDID, or EnrollmentID for a user enrollment (BYOD).
    pub device_id: String,
    /// The enrollment (channel) ID: the device ID for the device channel, `<device>:<user>`
    /// for a user channel.
    pub id: String,
    /// Apple's enrollment type.
    pub kind: &'static str,
}

impl ChannelId {
    pub fn is_device_channel(&self) -> bool {
        self.id == self.device_id
    }
}

impl Sender {
    /// Resolve the channel: device channels are keyed by UDID (or EnrollmentID), user channels by
    /// `<device>:<UserID>` (`<device>:<UserShortName>` on Shared iPad, `<EnrollmentID>:<EnrollmentUserID>`
    /// for user enrollment), so each channel has its own queue and push token.
    pub fn channel(&self) -> Result<ChannelId, ProtocolError> {
        let nonempty =
            |s: &Option<String>| s.as_deref().filter(|v| !v.is_empty()).map(str::to_string);
        if let Some(udid) = nonempty(&self.udid) {
            return Ok(match nonempty(&self.user_id) {
                Some(uid) if uid.eq_ignore_ascii_case(SHARED_IPAD_USER) => {
                    let short = nonempty(&self.user_short_name).unwrap_or(uid);
                    ChannelId {
                        id: format!("{udid}:{short}"),
                        device_id: udid,
                        kind: "Shared iPad",
                    }
                }
                Some(uid) => ChannelId {
                    id: format!("{udid}:{uid}"),
                    device_id: udid,
                    kind: "User",
                },
                None => ChannelId {
                    id: udid.clone(),
                    device_id: udid,
                    kind: "Device",
                },
            });
        }
        if let Some(eid) = nonempty(&self.enrollment_id) {
            return Ok(match nonempty(&self.enrollment_user_id) {
                Some(euid) => ChannelId {
                    id: format!("{eid}:{euid}"),
                    device_id: eid,
                    kind: "User Enrollment",
                },
                None => ChannelId {
                    id: eid.clone(),
                    device_id: eid,
                    kind: "User Enrollment (Device)",
                },
            });
        }
        Err(ProtocolError::NoDevice)
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Authenticate {
    pub topic: Option<String>,
    pub serial_number: Option<String>,
    #[serde(rename = "OSVersion")]
    pub os_version: Option<String>,
    pub build_version: Option<String>,
    pub product_name: Option<String>,
    pub model: Option<String>,
    pub model_name: Option<String>,
    pub device_name: Option<String>,
    #[serde(rename = "IMEI")]
    pub imei: Option<String>,
    #[serde(rename = "MEID")]
    pub meid: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct TokenUpdate {
    pub topic: String,
    pub token: Vec<u8>,
    pub push_magic: String,
    pub unlock_token: Option<Vec<u8>>,
    pub awaiting_configuration: bool,
    pub not_on_console: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TokenUpdateWire {
    topic: Option<String>,
    token: Option<plist::Data>,
    push_magic: Option<String>,
    unlock_token: Option<plist::Data>,
    awaiting_configuration: Option<bool>,
    not_on_console: Option<bool>,
}

#[derive(Clone, Debug, Default)]
pub struct SetBootstrapToken {
    /// Absent when the device clears its token.
    pub bootstrap_token: Option<Vec<u8>>,
    pub awaiting_configuration: bool,
}

#[derive(Clone, Debug, Default)]
pub struct DeclarativeManagement {
    /// `tokens`, `declaration-items`, `status`, `declaration/<type>/<identifier>`.
    pub endpoint: String,
    /// JSON the device sends (status reports).
    pub data: Option<Vec<u8>>,
}

/// A decoded check-in.
#[derive(Clone, Debug)]
pub enum CheckinMessage {
    Authenticate(Authenticate),
    TokenUpdate(TokenUpdate),
    CheckOut,
    SetBootstrapToken(SetBootstrapToken),
    GetBootstrapToken,
    UserAuthenticate,
    DeclarativeManagement(DeclarativeManagement),
    GetToken {
        service_type: String,
    },
    /// A message type this server does not know.
    Unknown(String),
}

impl CheckinMessage {
    pub fn name(&self) -> &str {
        match self {
            CheckinMessage::Authenticate(_) => "Authenticate",
            CheckinMessage::TokenUpdate(_) => "TokenUpdate",
            CheckinMessage::CheckOut => "CheckOut",
            CheckinMessage::SetBootstrapToken(_) => "SetBootstrapToken",
            CheckinMessage::GetBootstrapToken => "GetBootstrapToken",
            CheckinMessage::UserAuthenticate => "UserAuthenticate",
            CheckinMessage::DeclarativeManagement(_) => "DeclarativeManagement",
            CheckinMessage::GetToken { .. } => "GetToken",
            CheckinMessage::Unknown(t) => t,
        }
    }
}

/// A check-in: who sent it and what it says.
#[derive(Clone, Debug)]
pub struct Checkin {
    pub sender: Sender,
    pub topic: Option<String>,
    pub message: CheckinMessage,
}

// No `#[serde(flatten)]`: it would buffer every other key of the message (whole profile lists)
// just to read these few.
#[derive(Deserialize)]
pub(crate) struct Header {
    #[serde(rename = "MessageType")]
    pub(crate) message_type: Option<String>,
    #[serde(rename = "Topic")]
    topic: Option<String>,
    #[serde(rename = "UDID")]
    udid: Option<String>,
    #[serde(rename = "EnrollmentID")]
    enrollment_id: Option<String>,
    #[serde(rename = "EnrollmentUserID")]
    enrollment_user_id: Option<String>,
    #[serde(rename = "UserID")]
    user_id: Option<String>,
    #[serde(rename = "UserShortName")]
    user_short_name: Option<String>,
    #[serde(rename = "UserLongName")]
    user_long_name: Option<String>,
}

impl Header {
    pub(crate) fn sender(&mut self) -> Sender {
        Sender {
            udid: self.udid.take(),
            enrollment_id: self.enrollment_id.take(),
            enrollment_user_id: self.enrollment_user_id.take(),
            user_id: self.user_id.take(),
            user_short_name: self.user_short_name.take(),
            user_long_name: self.user_long_name.take(),
        }
    }
}

/// Parse a body from a device: depth and expansion bounded (`plist_in`), before any serde type
/// sees it.
pub(crate) fn value_of(body: &[u8]) -> Result<plist::Value, ProtocolError> {
    match super::plist_in::parse(body, super::plist_in::Limits::default()) {
        Ok(v) => Ok(v),
        Err(super::plist_in::PlistError::Invalid(e)) => Err(ProtocolError::NotPlist(e)),
        Err(e) => Err(ProtocolError::Refused(e)),
    }
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    value: &plist::Value,
) -> Result<T, ProtocolError> {
    plist::from_value(value).map_err(|e| ProtocolError::NotPlist(e.to_string()))
}

/// Decode a check-in body (XML or binary plist).
pub fn parse(body: &[u8]) -> Result<Checkin, ProtocolError> {
    let body = &value_of(body)?;
    let mut header: Header = decode(body)?;
    let sender = header.sender();
    let message_type = header.message_type.ok_or(ProtocolError::Field {
        field: "MessageType",
        expected: "a string",
    })?;
    let message = match message_type.as_str() {
        "Authenticate" => CheckinMessage::Authenticate(decode(body)?),
        "TokenUpdate" => {
            let w: TokenUpdateWire = decode(body)?;
            CheckinMessage::TokenUpdate(TokenUpdate {
                topic: w.topic.ok_or(ProtocolError::Field {
                    field: "Topic",
                    expected: "a string",
                })?,
                token: data_bytes(w.token).ok_or(ProtocolError::Field {
                    field: "Token",
                    expected: "data",
                })?,
                push_magic: w.push_magic.ok_or(ProtocolError::Field {
                    field: "PushMagic",
                    expected: "a string",
                })?,
                unlock_token: data_bytes(w.unlock_token),
                awaiting_configuration: w.awaiting_configuration.unwrap_or(false),
                not_on_console: w.not_on_console.unwrap_or(false),
            })
        }
        "CheckOut" => CheckinMessage::CheckOut,
        "SetBootstrapToken" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct W {
                bootstrap_token: Option<plist::Data>,
                awaiting_configuration: Option<bool>,
            }
            let w: W = decode(body)?;
            CheckinMessage::SetBootstrapToken(SetBootstrapToken {
                bootstrap_token: data_bytes(w.bootstrap_token),
                awaiting_configuration: w.awaiting_configuration.unwrap_or(false),
            })
        }
        "GetBootstrapToken" => CheckinMessage::GetBootstrapToken,
        "UserAuthenticate" => CheckinMessage::UserAuthenticate,
        "DeclarativeManagement" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct W {
                endpoint: Option<String>,
                data: Option<plist::Data>,
            }
            let w: W = decode(body)?;
            CheckinMessage::DeclarativeManagement(DeclarativeManagement {
                endpoint: w.endpoint.ok_or(ProtocolError::Field {
                    field: "Endpoint",
                    expected: "a string",
                })?,
                data: data_bytes(w.data),
            })
        }
        "GetToken" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct W {
                token_service_type: Option<String>,
            }
            let w: W = decode(body)?;
            CheckinMessage::GetToken {
                service_type: w.token_service_type.unwrap_or_default(),
            }
        }
        _ => CheckinMessage::Unknown(message_type),
    };
    Ok(Checkin {
        sender,
        topic: header.topic,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plist(entries: &[(&str, plist::Value)]) -> Vec<u8> {
        let mut d = plist::Dictionary::new();
        for (k, v) in entries {
            d.insert((*k).into(), v.clone());
        }
        let mut out = Vec::new();
        plist::Value::Dictionary(d).to_writer_xml(&mut out).unwrap();
        out
    }

    #[test]
    fn token_update_keeps_data_fields() {
        let body = plist(&[
            ("MessageType", "TokenUpdate".into()),
            ("UDID", "UDID-1".into()),
            ("Topic", "com.apple.mgmt.External.x".into()),
            ("Token", plist::Value::Data(vec![1, 2, 3, 255])),
            ("PushMagic", "MAGIC".into()),
            ("UnlockToken", plist::Value::Data(vec![9; 40])),
            ("AwaitingConfiguration", true.into()),
        ]);
        let c = parse(&body).unwrap();
        let CheckinMessage::TokenUpdate(t) = c.message else {
            panic!()
        };
        assert_eq!(t.token, vec![1, 2, 3, 255]);
        assert_eq!(t.push_magic, "MAGIC");
        assert_eq!(t.unlock_token.unwrap().len(), 40);
        assert!(t.awaiting_configuration);
        assert_eq!(c.sender.channel().unwrap().kind, "Device");
    }

    #[test]
    fn binary_plists_and_unknown_types() {
        let mut d = plist::Dictionary::new();
        d.insert("MessageType".into(), "FutureThing".into());
        d.insert("UDID".into(), "U".into());
        let mut bin = Vec::new();
        plist::Value::Dictionary(d)
            .to_writer_binary(&mut bin)
            .unwrap();
        let c = parse(&bin).unwrap();
        assert!(matches!(c.message, CheckinMessage::Unknown(ref t) if t == "FutureThing"));
        assert!(matches!(
            parse(b"not a plist"),
            Err(ProtocolError::NotPlist(_))
        ));
        let no_type = plist(&[("UDID", "U".into())]);
        assert!(matches!(
            parse(&no_type),
            Err(ProtocolError::Field {
                field: "MessageType",
                ..
            })
        ));
        let no_token = plist(&[
            ("MessageType", "TokenUpdate".into()),
            ("UDID", "U".into()),
            ("Topic", "t".into()),
            ("PushMagic", "m".into()),
        ]);
        assert!(matches!(
            parse(&no_token),
            Err(ProtocolError::Field { field: "Token", .. })
        ));
    }

    #[test]
    fn channels_resolve_like_apple_enrollment_types() {
        let s = |udid: Option<&str>,
                 eid: Option<&str>,
                 uid: Option<&str>,
                 short: Option<&str>,
                 euid: Option<&str>| Sender {
            udid: udid.map(Into::into),
            enrollment_id: eid.map(Into::into),
            user_id: uid.map(Into::into),
            user_short_name: short.map(Into::into),
            enrollment_user_id: euid.map(Into::into),
            user_long_name: None,
        };
        let c = s(Some("D"), None, Some("501"), None, None)
            .channel()
            .unwrap();
        assert_eq!(
            (c.device_id.as_str(), c.id.as_str(), c.kind),
            ("D", "D:501", "User")
        );
        assert!(!c.is_device_channel());
        let c = s(Some("D"), None, Some(SHARED_IPAD_USER), Some("ada"), None)
            .channel()
            .unwrap();
        assert_eq!((c.id.as_str(), c.kind), ("D:ada", "Shared iPad"));
        let c = s(None, Some("E"), None, None, Some("EU"))
            .channel()
            .unwrap();
        assert_eq!(
            (c.device_id.as_str(), c.id.as_str(), c.kind),
            ("E", "E:EU", "User Enrollment")
        );
        let c = s(None, Some("E"), None, None, None).channel().unwrap();
        assert!(c.is_device_channel());
        assert!(s(None, None, Some("501"), None, None).channel().is_err());
    }
}
