//! The MDM enrollment profile: a `com.apple.mdm` payload whose identity comes from a
//! `com.apple.security.scep` payload in the same profile, plus the server's CA when it is
//! private (Apple's "Deploying MDM Enrollment Profiles": trust, identity, MDM payload).
//!
//! Also the shape used to renew a migrated device's identity: a profile that keeps the old
//! profile's top-level `PayloadIdentifier`, `ServerURL`, `CheckInURL` and `Topic` replaces
//! the installed enrollment in place, with a new SCEP identity.

use plist::{Dictionary, Value};

/// Every MDM access right (Apple: 8191). Rights may not be added by a later profile.
pub const ACCESS_RIGHTS_ALL: u64 = 8191;

/// The capabilities mdmctl announces in a new enrollment: user channels and bootstrap tokens.
pub const SERVER_CAPABILITIES: &[&str] = &[
    "com.apple.mdm.per-user-connections",
    "com.apple.mdm.bootstraptoken",
];

/// Payload types that install certificates without keys (trust anchors and intermediates):
/// what a renewal carries over from the old enrollment profile so the device's trust in the
/// server is not removed with it.
pub const CERTIFICATE_PAYLOAD_TYPES: &[&str] = &[
    "com.apple.security.root",
    "com.apple.security.pkcs1",
    "com.apple.security.pem",
];

/// What goes into an enrollment profile.
#[derive(Clone, Debug)]
pub struct EnrollmentProfile {
    /// Top-level `PayloadIdentifier`: keep the old MDM's to update its enrollment in place.
    pub identifier: String,
    pub display_name: String,
    pub organization: String,
    pub server_url: String,
    pub check_in_url: Option<String>,
    pub topic: String,
    pub scep: ScepPayload,
    /// DER certificates to trust (the server's private CA), as `com.apple.security.root`.
    pub anchors: Vec<Vec<u8>>,
    /// Certificate payloads kept verbatim (identifiers and UUIDs included) from the profile
    /// this one replaces.
    pub kept_payloads: Vec<Dictionary>,
    /// `ServerCapabilities`; `None` leaves the key out (a renewal keeps the old profile's,
    /// absent included).
    pub server_capabilities: Option<Vec<String>>,
    pub sign_message: bool,
    pub check_out_when_removed: bool,
    /// `AccessRights` (a renewal must keep the installed profile's: rights cannot be added).
    pub access_rights: u64,
}

#[derive(Clone, Debug)]
pub struct ScepPayload {
    pub url: String,
    pub name: String,
    pub challenge: Option<String>,
    /// `[["O", "Example"]], [["CN", "…"]]` as in Apple's schema (one RDN per entry).
    pub subject: Vec<(String, String)>,
    pub key_size: u32,
    /// SHA-256 of the CA certificate DER, so the device checks it fetched the right CA.
    pub ca_fingerprint: Option<Vec<u8>>,
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string().to_uppercase()
}

fn payload(kind: &str, identifier: &str, display: &str, uuid: &str) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("PayloadType".into(), kind.into());
    d.insert("PayloadVersion".into(), 1u64.into());
    d.insert("PayloadIdentifier".into(), identifier.into());
    d.insert("PayloadUUID".into(), uuid.into());
    d.insert("PayloadDisplayName".into(), display.into());
    d
}

impl EnrollmentProfile {
    /// The profile as an XML plist (unsigned; sign it with `pki::sign_profile`).
    pub fn to_xml(&self) -> Vec<u8> {
        let scep_uuid = uuid();
        let mut content: Vec<Value> = self
            .kept_payloads
            .iter()
            .cloned()
            .map(Value::Dictionary)
            .collect();
        for (i, der) in self.anchors.iter().enumerate() {
            let mut d = payload(
                "com.apple.security.root",
                &format!("{}.anchor{i}", self.identifier),
                "Server certificate authority",
                &uuid(),
            );
            d.insert("PayloadContent".into(), Value::Data(der.clone()));
            content.push(Value::Dictionary(d));
        }

        let mut scep = Dictionary::new();
        scep.insert("URL".into(), self.scep.url.as_str().into());
        scep.insert("Name".into(), self.scep.name.as_str().into());
        let subject: Vec<Value> = self
            .scep
            .subject
            .iter()
            .map(|(k, v)| {
                Value::Array(vec![Value::Array(vec![
                    k.as_str().into(),
                    v.as_str().into(),
                ])])
            })
            .collect();
        scep.insert("Subject".into(), Value::Array(subject));
        if let Some(c) = &self.scep.challenge {
            scep.insert("Challenge".into(), c.as_str().into());
        }
        scep.insert("Keysize".into(), u64::from(self.scep.key_size).into());
        scep.insert("Key Type".into(), "RSA".into());
        // 1 signing | 4 encryption: the identity signs Mdm-Signature and is a TLS client.
        scep.insert("Key Usage".into(), 5u64.into());
        scep.insert("Retries".into(), 3u64.into());
        scep.insert("RetryDelay".into(), 10u64.into());
        if let Some(fp) = &self.scep.ca_fingerprint {
            scep.insert("CAFingerprint".into(), Value::Data(fp.clone()));
        }
        let mut d = payload(
            "com.apple.security.scep",
            &format!("{}.scep", self.identifier),
            "Device identity",
            &scep_uuid,
        );
        d.insert("PayloadContent".into(), Value::Dictionary(scep));
        content.push(Value::Dictionary(d));

        let mut mdm = payload(
            "com.apple.mdm",
            &format!("{}.mdm", self.identifier),
            "Device management",
            &uuid(),
        );
        mdm.insert("ServerURL".into(), self.server_url.as_str().into());
        if let Some(c) = &self.check_in_url {
            mdm.insert("CheckInURL".into(), c.as_str().into());
        }
        mdm.insert("Topic".into(), self.topic.as_str().into());
        mdm.insert("IdentityCertificateUUID".into(), scep_uuid.into());
        mdm.insert("SignMessage".into(), self.sign_message.into());
        mdm.insert("AccessRights".into(), self.access_rights.into());
        mdm.insert(
            "CheckOutWhenRemoved".into(),
            self.check_out_when_removed.into(),
        );
        if let Some(caps) = &self.server_capabilities {
            mdm.insert(
                "ServerCapabilities".into(),
                Value::Array(caps.iter().map(|c| c.as_str().into()).collect()),
            );
        }
        content.push(Value::Dictionary(mdm));

        let mut top = Dictionary::new();
        top.insert("PayloadType".into(), "Configuration".into());
        top.insert("PayloadVersion".into(), 1u64.into());
        top.insert("PayloadIdentifier".into(), self.identifier.as_str().into());
        top.insert("PayloadUUID".into(), uuid().into());
        top.insert(
            "PayloadDisplayName".into(),
            self.display_name.as_str().into(),
        );
        top.insert(
            "PayloadOrganization".into(),
            self.organization.as_str().into(),
        );
        top.insert("PayloadScope".into(), "System".into());
        top.insert("PayloadContent".into(), Value::Array(content));
        let mut xml = Vec::new();
        // A dictionary of strings, numbers and data always serializes.
        let _ = Value::Dictionary(top).to_writer_xml(&mut xml);
        xml
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_links_the_mdm_payload_to_its_scep_identity() {
        let p = EnrollmentProfile {
            identifier: "com.example.mdm".into(),
            display_name: "Example MDM".into(),
            organization: "Example".into(),
            server_url: "https://mdm.example.com/mdm".into(),
            check_in_url: Some("https://mdm.example.com/mdm".into()),
            topic: "com.apple.mgmt.External.x".into(),
            scep: ScepPayload {
                url: "https://mdm.example.com/scep".into(),
                name: "mdmctl".into(),
                challenge: Some("secret".into()),
                subject: vec![
                    ("O".into(), "Example".into()),
                    ("CN".into(), "device".into()),
                ],
                key_size: 2048,
                ca_fingerprint: Some(vec![1; 32]),
            },
            anchors: vec![vec![0x30, 0x00]],
            kept_payloads: Vec::new(),
            server_capabilities: Some(SERVER_CAPABILITIES.iter().map(|c| c.to_string()).collect()),
            sign_message: true,
            access_rights: ACCESS_RIGHTS_ALL,
            check_out_when_removed: true,
        };
        let v: Value = plist::from_bytes(&p.to_xml()).unwrap();
        let top = v.as_dictionary().unwrap();
        assert_eq!(top["PayloadType"].as_string(), Some("Configuration"));
        let content = top["PayloadContent"].as_array().unwrap();
        assert_eq!(content.len(), 3);
        let scep = content[1].as_dictionary().unwrap();
        let mdm = content[2].as_dictionary().unwrap();
        assert_eq!(
            mdm["IdentityCertificateUUID"].as_string(),
            scep["PayloadUUID"].as_string()
        );
        assert_eq!(mdm["AccessRights"].as_unsigned_integer(), Some(8191));
        assert_eq!(mdm["SignMessage"].as_boolean(), Some(true));
        let sc = scep["PayloadContent"].as_dictionary().unwrap();
        assert_eq!(
            sc["Subject"].as_array().unwrap()[1].as_array().unwrap()[0]
                .as_array()
                .unwrap()[1]
                .as_string(),
            Some("device")
        );
    }
}
