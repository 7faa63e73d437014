//! Keys, certificates and CMS: everything mdmctl does with X.509.
//!
//! Owns: RSA key generation and loading (PEM, DER, PKCS#12), CSRs (the APNs push CSR and the
//! vendor-signed "plist CSR" Apple's portal takes), CA and self-signed certificates, reading
//! certificate facts (topic, expiry, fingerprint), and S/MIME decryption (Apple's ABM server
//! token). OpenSSL is the one crypto stack. Must not import the store, the server or the CLI.

mod apple;
mod ca;
mod cert;
mod csr;
pub(crate) mod der;
pub mod identity;
mod keys;
pub mod scep;
mod smime;

pub use apple::{
    APPLE_IPHONE_DEVICE_CA_PEM, APPLE_ROOT_CA_PEM, APPLE_WWDR_G3_PEM, apple_chain_pem,
};
pub use ca::{CaSpec, new_ca, random_serial, self_signed};
pub use cert::{CertInfo, apns_topic, fingerprint_sha256, is_ca, name_line};
pub use csr::{Subject, build_csr, push_request_plist};
pub use keys::{generate_rsa, key_matches_cert, load_private_key, private_key_pem};
pub use smime::{decrypt_smime, sign_attached};

use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

/// Errors from keys, certificates and CMS. Messages say what the bytes were expected to be;
/// the caller adds which file they came from.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("not a certificate (expected PEM `-----BEGIN CERTIFICATE-----` or DER)")]
    NotACertificate,
    #[error("not a private key (expected PEM, DER or a .p12)")]
    NotAPrivateKey,
    #[error("the private key is encrypted and no password was given")]
    KeyNeedsPassword,
    #[error("the password does not decrypt this key or .p12")]
    WrongKeyPassword,
    #[error("the private key does not match the certificate `{subject}`")]
    KeyMismatch { subject: String },
    #[error("expected an RSA key, found {found}")]
    NotRsa { found: String },
    #[error("the message is not encrypted to this key (or it is damaged)")]
    CannotDecrypt,
    #[error("not an S/MIME or CMS encrypted message")]
    NotEncrypted,
    #[error("cannot encode: {0}")]
    Encode(String),
    #[error("openssl: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
}

impl crate::diagnose::Diagnose for PkiError {
    fn hint(&self) -> Option<String> {
        match self {
            PkiError::NotACertificate => Some(
                "check the file: `openssl x509 -in FILE -noout -subject` should print a subject"
                    .into(),
            ),
            PkiError::NotAPrivateKey => Some(
                "check the file: `openssl pkey -in FILE -noout` should succeed; for a .p12 give its password".into(),
            ),
            // The command that read the key names its own password flag; this is the way out
            // that works for every command.
            PkiError::KeyNeedsPassword | PkiError::WrongKeyPassword => Some(
                "give the key's password to the command (see its `--help`), or decrypt the key first: `openssl pkey -in KEY -out KEY.decrypted`".into(),
            ),
            PkiError::KeyMismatch { .. } => {
                Some("use the key that was generated with this certificate's CSR".into())
            }
            PkiError::NotRsa { .. } => Some("Apple requires RSA keys here; generate a 2048-bit RSA key".into()),
            PkiError::NotEncrypted => Some(
                "give the encrypted file as downloaded (an Apple Business Manager server token is a `.p7m`)".into(),
            ),
            PkiError::CannotDecrypt | PkiError::Encode(_) | PkiError::OpenSsl(_) => None,
        }
    }
}

/// Parse one certificate from PEM or DER.
pub fn parse_cert(bytes: &[u8]) -> Result<X509, PkiError> {
    if looks_like_pem(bytes) {
        X509::from_pem(bytes).map_err(|_| PkiError::NotACertificate)
    } else {
        X509::from_der(bytes).map_err(|_| PkiError::NotACertificate)
    }
}

/// Parse every certificate in a PEM bundle (or a single DER certificate).
pub fn parse_certs(bytes: &[u8]) -> Result<Vec<X509>, PkiError> {
    if looks_like_pem(bytes) {
        let certs = X509::stack_from_pem(bytes).map_err(|_| PkiError::NotACertificate)?;
        if certs.is_empty() {
            return Err(PkiError::NotACertificate);
        }
        Ok(certs)
    } else {
        Ok(vec![parse_cert(bytes)?])
    }
}

/// A certificate and its key from a PKCS#12 (`.p12`/`.pfx`) file.
pub fn parse_p12(bytes: &[u8], password: &str) -> Result<(X509, PKey<Private>), PkiError> {
    let p12 = Pkcs12::from_der(bytes).map_err(|_| PkiError::NotAPrivateKey)?;
    let parsed = p12
        .parse2(password)
        .map_err(|_| PkiError::WrongKeyPassword)?;
    match (parsed.cert, parsed.pkey) {
        (Some(cert), Some(key)) => Ok((cert, key)),
        _ => Err(PkiError::NotAPrivateKey),
    }
}

/// True if the bytes are a DER PKCS#12 container rather than a key or certificate.
pub fn is_p12(bytes: &[u8]) -> bool {
    !looks_like_pem(bytes) && Pkcs12::from_der(bytes).is_ok()
}

pub(crate) fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).take(4096).any(|w| w == b"-----BEGIN ")
}

pub fn cert_pem(cert: &X509) -> Result<String, PkiError> {
    Ok(String::from_utf8_lossy(&cert.to_pem()?).into_owned())
}
