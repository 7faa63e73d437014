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
    /// Stands in for "Apple iPhone Device CA": the issuer of the (expired) certificates
    /// devices sign their MachineInfo with (`serve --machine-info-ca` trusts it).
    pub device_ca_cert: X509,
    pub device_ca_key: PKey<Private>,
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
        let (device_ca_cert, device_ca_key) = pki::new_ca(&CaSpec {
            common_name: "DEMO Apple iPhone Device CA (not Apple)".into(),
            organization: "DEMO".into(),
            country: "US".into(),
            key_bits: 2048,
            years: 5,
        })?;
        Ok(Self {
            ca_cert,
            ca_key,
            device_ca_cert,
            device_ca_key,
        })
    }

    /// A device certificate as Apple's are: issued by the device CA, and expired two years ago.
    pub fn device_certificate(&self, udid: &str) -> Result<(X509, PKey<Private>), PkiError> {
        let key = pki::generate_rsa(1024)?;
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_text("CN", udid)?;
        let name = name.build();
        let mut b = X509Builder::new()?;
        b.set_version(2)?;
        let serial_bn = openssl::bn::BigNum::from_u32(rand_u32())?;
        let serial_int = serial_bn.to_asn1_integer()?;
        b.set_serial_number(&serial_int)?;
        b.set_subject_name(&name)?;
        b.set_issuer_name(self.device_ca_cert.subject_name())?;
        b.set_pubkey(&key)?;
        let now = Timestamp::now();
        let (from, until) = (
            Asn1Time::from_unix(now.0 - 3 * 365 * 86_400)?,
            Asn1Time::from_unix(now.0 - 2 * 365 * 86_400)?,
        );
        b.set_not_before(&from)?;
        b.set_not_after(&until)?;
        b.sign(&self.device_ca_key, MessageDigest::sha256())?;
        Ok((b.build(), key))
    }

    /// A Mac's MachineInfo as it reaches the automated-enrollment URL: the property list
    /// (`UDID`, `SERIAL`, `PRODUCT`, `OS_VERSION`, `LANGUAGE`, …) in a CMS SignedData (DER) by a
    /// device certificate that, like Apple's, expired long ago, issued by the stand-in device
    /// CA. (Apple signs with SHA-1; this signs with OpenSSL's default, SHA-256: the server
    /// takes either, and a test signs with SHA-1 through the `openssl` command.)
    pub fn machine_info(
        &self,
        udid: &str,
        serial: &str,
        product: &str,
        os_version: &str,
    ) -> Result<Vec<u8>, PkiError> {
        let (cert, key) = self.device_certificate(udid)?;
        let mut info = plist::Dictionary::new();
        for (k, v) in [
            ("UDID", udid),
            ("SERIAL", serial),
            ("PRODUCT", product),
            ("VERSION", "24B83"),
            ("OS_VERSION", os_version),
            ("LANGUAGE", "en-US"),
        ] {
            info.insert(k.into(), v.into());
        }
        let mut xml = Vec::new();
        plist::to_writer_xml(&mut xml, &plist::Value::Dictionary(info))
            .map_err(|e| PkiError::Encode(e.to_string()))?;
        let none: Stack<X509> = Stack::new()?;
        let p7 = Pkcs7::sign(&cert, &key, &none, &xml, Pkcs7Flags::BINARY)?;
        Ok(p7.to_der()?)
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

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = openssl::rand::rand_bytes(&mut b);
    u32::from_be_bytes(b) | 1
}
