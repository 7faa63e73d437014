//! The server assets a seamless migration rests on, and the rules that protect them.
//!
//! Owns: generating the APNs push key and CSR (optionally vendor-signed), the SCEP CA and the
//! Apple Business Manager key pair ([`generate`]); installing Apple's push certificate and old
//! or new SCEP CAs with the checks that keep devices reachable, above all "never change the push
//! topic by accident" ([`apns`]); decrypting and storing the ABM server token ([`abm`]); and the
//! status `get mdm-apple` / `get mdm-apple-bm` report. Works on `&mut dyn Tx`; no I/O of its own.

pub mod abm;
pub mod apns;
pub mod generate;

use crate::pki::PkiError;
use crate::store::StoreError;
use crate::timestamp::Timestamp;

/// Certificates expiring within this many days get a warning.
pub const WARN_DAYS: i64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error("`{value}` is not an email address")]
    InvalidEmail { value: String },
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error(
        "the certificate `{subject}` is not an MDM push certificate: its subject has no `UID=com.apple.mgmt.…` topic"
    )]
    NoTopic { subject: String },
    #[error("the {what} expired on {not_after}")]
    Expired {
        what: &'static str,
        not_after: Timestamp,
    },
    #[error("the {what} is not valid until {not_before}")]
    NotYetValid {
        what: &'static str,
        not_before: Timestamp,
    },
    #[error(
        "no private key for the push certificate: none given and none of the keys generated into this store matches it"
    )]
    MissingApnsKey,
    #[error(
        "the push certificate's topic `{new}` differs from {existing}; a newly created certificate instead of a renewed one strands every enrolled device"
    )]
    TopicChanged { new: String, existing: String },
    #[error("the certificate `{subject}` is not a CA (basicConstraints CA:TRUE missing)")]
    NotACa { subject: String },
    #[error("nothing to set")]
    NothingToSet,
    #[error("this store has no Apple Business Manager key")]
    NoAbmKey,
    #[error("the server token is not encrypted to this store's Apple Business Manager certificate")]
    TokenNotForUs,
    #[error("the server token is not what Apple Business Manager issues: {reason}")]
    BadToken { reason: String },
    #[error("the vendor certificate `{subject}` expired on {not_after}")]
    VendorExpired {
        subject: String,
        not_after: Timestamp,
    },
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl crate::diagnose::Diagnose for AssetError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            AssetError::InvalidEmail { .. } => "give the Apple ID email, e.g. `--email it@example.com`".into(),
            AssetError::Empty { what } => format!("give a value for the {what}"),
            AssetError::NoTopic { .. } => "use the certificate Apple's Push Certificates Portal (https://identity.apple.com) issued for your CSR".into(),
            AssetError::Expired { .. } => "renew at https://identity.apple.com with the same Apple ID: choose Renew (not Create) so the topic stays the same, then `mdmctl set mdm-apple --apns-cert FILE`".into(),
            AssetError::NotYetValid { .. } => "check this machine's clock".into(),
            AssetError::MissingApnsKey => "pass the key with `--apns-key FILE`, or generate the CSR with `mdmctl generate mdm-apple` against this store so its key is kept".into(),
            AssetError::TopicChanged { .. } => "renew the existing certificate instead (same Apple ID, Renew, not Create); only if every device will re-enroll, repeat with `--force` (recorded in the activity log)".into(),
            AssetError::NotACa { .. } => "give the CA certificate that issued the device identities (the old MDM's SCEP CA), not a device certificate".into(),
            AssetError::NothingToSet => "pass `--apns-cert FILE` and/or `--scep-cert FILE --scep-key FILE`".into(),
            AssetError::NoAbmKey => "run `mdmctl generate mdm-apple-bm` against this store, upload `mdm-apple-bm.crt` to Apple Business Manager, and download the token for that MDM server".into(),
            AssetError::TokenNotForUs => "download the token again from Apple Business Manager for the MDM server that has this store's `mdm-apple-bm.crt`".into(),
            AssetError::BadToken { .. } => "download the server token (`.p7m`) again from Apple Business Manager › Preferences › your MDM server".into(),
            AssetError::VendorExpired { .. } => "renew the MDM CSR vendor certificate at developer.apple.com (`mdmctl generate mdm-vendor-csr` makes the request)".into(),
            AssetError::Pki(e) => return e.hint(),
            AssetError::Store(e) => return e.hint(),
        })
    }

    fn unexpected(&self) -> bool {
        match self {
            AssetError::Pki(e) => e.unexpected(),
            AssetError::Store(e) => e.unexpected(),
            _ => false,
        }
    }
}

/// A loose but useful check: one `@`, something before it, a dotted domain after, no spaces.
pub fn validate_email(value: &str) -> Result<(), AssetError> {
    let bad = || AssetError::InvalidEmail {
        value: value.to_string(),
    };
    let (local, domain) = value.split_once('@').ok_or_else(bad)?;
    let ok = !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !value.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok { Ok(()) } else { Err(bad()) }
}

/// Whether a certificate's validity window contains `now`, as an asset error.
pub(crate) fn check_validity(
    info: &crate::pki::CertInfo,
    what: &'static str,
    now: Timestamp,
) -> Result<(), AssetError> {
    if info.expired_at(now) {
        return Err(AssetError::Expired {
            what,
            not_after: info.not_after,
        });
    }
    if info.not_yet_valid_at(now) {
        return Err(AssetError::NotYetValid {
            what,
            not_before: info.not_before,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_validation() {
        for ok in ["it@acme.com", "a.b+c@sub.example.org"] {
            assert!(validate_email(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "it",
            "@acme.com",
            "it@acme",
            "it@@acme.com",
            "it @acme.com",
            "it@.com",
            "it@acme.com.",
        ] {
            assert!(validate_email(bad).is_err(), "{bad}");
        }
    }
}
