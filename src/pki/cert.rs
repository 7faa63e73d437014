//! Facts about a certificate that admins and checks need: subject, issuer, serial, validity,
//! SHA-256 fingerprint, and the APNs topic an MDM push certificate carries.

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::x509::{X509, X509NameRef};
use serde::Serialize;

use super::PkiError;
use crate::timestamp::Timestamp;

/// The prefix of every MDM push topic Apple issues.
pub const MDM_TOPIC_PREFIX: &str = "com.apple.mgmt.";

/// What `get mdm-apple` and the asset checks show about a certificate.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub common_name: Option<String>,
    pub serial: String,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    pub sha256: String,
    /// The APNs topic (`UID` of the subject) when this is an MDM push certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

impl CertInfo {
    pub fn of(cert: &X509) -> Result<Self, PkiError> {
        Ok(Self {
            subject: name_line(cert.subject_name()),
            issuer: name_line(cert.issuer_name()),
            common_name: first_entry(cert.subject_name(), Nid::COMMONNAME),
            serial: cert.serial_number().to_bn()?.to_hex_str()?.to_string(),
            not_before: to_timestamp(cert.not_before())?,
            not_after: to_timestamp(cert.not_after())?,
            sha256: fingerprint_sha256(cert)?,
            topic: apns_topic(cert),
        })
    }

    pub fn expired_at(&self, now: Timestamp) -> bool {
        self.not_after < now
    }

    pub fn not_yet_valid_at(&self, now: Timestamp) -> bool {
        self.not_before > now
    }
}

/// The MDM push topic: the subject's `UID` (0.9.2342.19200300.100.1.1) when it starts with
/// `com.apple.mgmt.` (production `External`, or a vendor's own topic).
pub fn apns_topic(cert: &X509) -> Option<String> {
    first_entry(cert.subject_name(), Nid::USERID).filter(|t| t.starts_with(MDM_TOPIC_PREFIX))
}

/// Lowercase hex SHA-256 of the DER certificate: how identities are matched to devices.
pub fn fingerprint_sha256(cert: &X509) -> Result<String, PkiError> {
    Ok(hex::encode(cert.digest(MessageDigest::sha256())?))
}

/// Whether the certificate says it is a CA (basicConstraints cA=TRUE).
pub fn is_ca(cert: &X509) -> bool {
    // rust-openssl has no getter for basicConstraints; the text form is stable across 3.x.
    cert.to_text()
        .map(|t| String::from_utf8_lossy(&t).contains("CA:TRUE"))
        .unwrap_or(false)
}

fn first_entry(name: &X509NameRef, nid: Nid) -> Option<String> {
    name.entries_by_nid(nid)
        .next()
        .and_then(|e| e.data().to_string().ok())
}

/// `CN=…, O=…, C=…` in the order the certificate lists them.
pub fn name_line(name: &X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_else(|_| "?".into());
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn to_timestamp(t: &Asn1TimeRef) -> Result<Timestamp, PkiError> {
    let epoch = Asn1Time::from_unix(0)?;
    let diff = epoch.diff(t)?;
    Ok(Timestamp(
        i64::from(diff.days) * 86_400 + i64::from(diff.secs),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CaSpec, new_ca};

    #[test]
    fn reads_validity_and_fingerprint_like_openssl() {
        let (cert, _) = new_ca(&CaSpec {
            common_name: "Test CA".into(),
            organization: "Acme".into(),
            country: "US".into(),
            key_bits: 2048,
            years: 10,
        })
        .unwrap();
        let info = CertInfo::of(&cert).unwrap();
        assert_eq!(info.subject, "CN=Test CA, O=Acme, C=US");
        assert_eq!(info.common_name.as_deref(), Some("Test CA"));
        let now = Timestamp::now();
        // NotBefore is ten minutes in the past, NotAfter ten years ahead.
        assert!((now.0 - info.not_before.0 - 600).abs() < 5);
        let years = (info.not_after.0 - now.0) as f64 / (365.25 * 86_400.0);
        assert!((years - 10.0).abs() < 0.01, "{years}");
        assert_eq!(info.sha256.len(), 64);
        assert!(info.topic.is_none());
        assert!(is_ca(&cert));
    }
}
