//! Error types of the push client: loading the push identity and building
//! the long-lived HTTP/2 client. Per-device push failures are not errors;
//! they are [`super::PushOutcome`]s.

use std::path::PathBuf;
use std::time::SystemTime;

use openssl::error::ErrorStack;

/// What is wrong with a push certificate / private key pair.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("could not read {what} file {path}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the push certificate is not valid pem")]
    CertificatePem(#[source] ErrorStack),
    #[error("the push certificate pem holds no certificate")]
    NoCertificate,
    #[error("the private key is encrypted: supply its passphrase")]
    EncryptedKey,
    #[error("the private key is not a valid pem key (expected pkcs#1 or pkcs#8)")]
    KeyPem(#[source] ErrorStack),
    #[error("the private key does not match the push certificate")]
    KeyMismatch,
    #[error("the push certificate subject has no uid attribute, so it carries no apns topic")]
    MissingTopic,
    #[error("the push certificate expired at {not_after:?}")]
    Expired { not_after: SystemTime },
    #[error("the push certificate is not valid before {not_before:?}")]
    NotYetValid { not_before: SystemTime },
    #[error("the tls stack refused the push identity")]
    TlsIdentity(#[source] reqwest::Error),
    #[error("openssl failed while {doing}")]
    Openssl {
        doing: &'static str,
        #[source]
        source: ErrorStack,
    },
}

/// Building an [`super::ApnsClient`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("invalid apns base url {url:?}: {why}")]
    BaseUrl { url: String, why: String },
    #[error("the certificate topic {topic:?} cannot be sent as an http header")]
    Topic { topic: String },
    #[error("apns-priority must be 10, 5 or 1, not {0}")]
    Priority(u8),
    #[error("a trusted server root certificate could not be encoded")]
    RootCertificate(#[source] ErrorStack),
    #[error("could not build the http/2 client")]
    Http(#[source] reqwest::Error),
}

/// A device token could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("device token is empty")]
    Empty,
    #[error("device token is not hex (odd length or a non-hex character)")]
    NotHex,
}
