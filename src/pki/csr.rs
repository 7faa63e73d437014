//! Certificate signing requests, and the vendor-signed push request ("plist CSR") that
//! Apple's Push Certificates Portal (identity.apple.com) accepts.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use openssl::x509::{X509, X509Req, X509ReqBuilder};

use super::ca::name;
use super::{PkiError, apple_chain_pem};

/// The subject of a CSR; empty fields are left out.
#[derive(Clone, Debug, Default)]
pub struct Subject {
    pub common_name: String,
    pub organization: String,
    pub country: String,
    pub email: String,
}

/// A SHA-256 CSR for `key` with the given subject.
pub fn build_csr(key: &PKey<Private>, subject: &Subject) -> Result<X509Req, PkiError> {
    let mut b = X509ReqBuilder::new()?;
    b.set_version(0)?;
    let n = name(&[
        ("CN", &subject.common_name),
        ("O", &subject.organization),
        ("C", &subject.country),
        ("emailAddress", &subject.email),
    ])?;
    b.set_subject_name(&n)?;
    b.set_pubkey(key)?;
    b.sign(key, MessageDigest::sha256())?;
    Ok(b.build())
}

/// The XML plist Apple's portal takes, before the outer base64:
/// `PushCertRequestCSR` (base64 DER CSR), `PushCertCertificateChain` (vendor certificate,
/// Apple WWDR G3, Apple Root CA, PEM), `PushCertSignature` (base64 RSA PKCS#1 v1.5 SHA-256
/// signature of the CSR DER by the vendor key).
pub fn push_request_plist(
    csr: &X509Req,
    vendor_cert: &X509,
    vendor_key: &PKey<Private>,
) -> Result<Vec<u8>, PkiError> {
    let csr_der = csr.to_der()?;
    let mut signer = Signer::new(MessageDigest::sha256(), vendor_key)?;
    signer.update(&csr_der)?;
    let signature = signer.sign_to_vec()?;

    let mut chain = String::from_utf8_lossy(&vendor_cert.to_pem()?).into_owned();
    chain.push_str(&apple_chain_pem());

    let mut dict = plist::Dictionary::new();
    dict.insert("PushCertRequestCSR".into(), B64.encode(&csr_der).into());
    dict.insert("PushCertCertificateChain".into(), chain.into());
    dict.insert("PushCertSignature".into(), B64.encode(&signature).into());
    let mut xml = Vec::new();
    plist::Value::Dictionary(dict)
        .to_writer_xml(&mut xml)
        .map_err(|e| PkiError::Encode(e.to_string()))?;
    Ok(xml)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::generate_rsa;

    #[test]
    fn csr_carries_subject_and_verifies() {
        let key = generate_rsa(2048).unwrap();
        let csr = build_csr(
            &key,
            &Subject {
                organization: "Acme".into(),
                email: "it@acme.test".into(),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(csr.verify(&csr.public_key().unwrap()).unwrap());
        let text = String::from_utf8(csr.to_text().unwrap()).unwrap();
        assert!(text.contains("O=Acme"), "{text}");
        assert!(text.contains("emailAddress=it@acme.test"), "{text}");
    }
}
