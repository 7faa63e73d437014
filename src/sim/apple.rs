//! A pretend Apple: a CA that signs push CSRs into MDM push certificates shaped like Apple's
//! (`UID=com.apple.mgmt.External.<uuid>`, `CN=APSP:<uuid>`), and Apple Business Manager's
//! server token, S/MIME-encrypted to the MDM server's certificate.

use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::extension::ExtendedKeyUsage;
use openssl::x509::{X509, X509Builder, X509NameBuilder, X509Req};

use crate::pki::{self, CaSpec, PkiError};
use crate::timestamp::Timestamp;

pub struct FakeApple {
    pub ca_cert: X509,
    pub ca_key: PKey<Private>,
}

impl FakeApple {
    pub fn new() -> Result<Self, PkiError> {
        let (ca_cert, ca_key) = pki::new_ca(&CaSpec {
            common_name: "DEMO Apple Application Integration CA (not Apple)".into(),
            organization: "DEMO".into(),
            country: "US".into(),
            key_bits: 2048,
            years: 5,
        })?;
        Ok(Self { ca_cert, ca_key })
    }

    /// Sign a push CSR the way Apple's portal does: a new subject carrying the topic.
    pub fn issue_push_cert(&self, csr: &X509Req, topic: &str, days: i64) -> Result<X509, PkiError> {
        let uuid = topic.rsplit('.').next().unwrap_or(topic);
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_text("UID", topic)?;
        name.append_entry_by_text("CN", &format!("APSP:{uuid}"))?;
        name.append_entry_by_text("C", "US")?;
        let name = name.build();
        let now = Timestamp::now().0;
        let mut b = X509Builder::new()?;
        b.set_version(2)?;
        b.set_serial_number(pki::random_serial()?.as_ref())?;
        b.set_subject_name(&name)?;
        b.set_issuer_name(self.ca_cert.subject_name())?;
        b.set_pubkey(csr.public_key()?.as_ref())?;
        b.set_not_before(Asn1Time::from_unix(now - 600)?.as_ref())?;
        b.set_not_after(Asn1Time::from_unix(now + days * 86_400)?.as_ref())?;
        b.append_extension(ExtendedKeyUsage::new().client_auth().build()?)?;
        b.sign(&self.ca_key, MessageDigest::sha256())?;
        Ok(b.build())
    }

    /// A fresh MDM topic as Apple mints them.
    pub fn new_topic() -> String {
        format!("com.apple.mgmt.External.{}", uuid::Uuid::new_v4())
    }

    /// Apple Business Manager's server token for the server whose certificate is `server_cert`.
    pub fn abm_token(
        server_cert: &X509,
        consumer_key: &str,
        expiry: Timestamp,
    ) -> Result<Vec<u8>, PkiError> {
        let json = serde_json::json!({
            "consumer_key": consumer_key,
            "consumer_secret": format!("CS_{}", uuid::Uuid::new_v4().simple()),
            "access_token": format!("AT_{}", uuid::Uuid::new_v4().simple()),
            "access_secret": format!("AS_{}", uuid::Uuid::new_v4().simple()),
            "access_token_expiry": expiry.to_string(),
        });
        let content = format!(
            "Content-Type: text/plain;charset=UTF-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n-----BEGIN MESSAGE-----\r\n{json}\r\n-----END MESSAGE-----\r\n"
        );
        let mut certs = Stack::new()?;
        certs.push(server_cert.clone())?;
        let p7 = Pkcs7::encrypt(
            &certs,
            content.as_bytes(),
            Cipher::aes_256_cbc(),
            Pkcs7Flags::BINARY,
        )?;
        Ok(p7.to_smime(content.as_bytes(), Pkcs7Flags::BINARY)?)
    }
}
