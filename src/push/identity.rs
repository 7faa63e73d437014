//! The MDM push identity: the customer's APNs push certificate, its private
//! key and the topic the certificate is bound to.
//!
//! An MDM push certificate (issued by Apple through the Apple Push
//! Certificates Portal) carries its topic in the subject `UID` attribute,
//! `com.apple.mgmt.External.<uuid>`; that value goes into every push's
//! `apns-topic` header. See
//! <https://developer.apple.com/documentation/usernotifications/establishing-a-certificate-based-connection-to-apns>.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::{X509, X509Ref};

use super::error::IdentityError;

/// The prefix Apple gives MDM push topics. A certificate whose topic lacks
/// it is still loaded (some test setups use other topics) but logged.
pub const MDM_TOPIC_PREFIX: &str = "com.apple.mgmt.";

/// A push certificate with its matching private key and topic.
///
/// `Debug` prints the topic and validity only, never key material.
#[derive(Clone)]
pub struct PushIdentity {
    certificate: X509,
    chain: Vec<X509>,
    key: PKey<Private>,
    topic: String,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl fmt::Debug for PushIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushIdentity")
            .field("topic", &self.topic)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl PushIdentity {
    /// Loads the identity from a PEM certificate (the leaf first, optionally
    /// followed by intermediates) and an unencrypted PEM private key in
    /// PKCS#1 (`BEGIN RSA PRIVATE KEY`), SEC1 or PKCS#8 (`BEGIN PRIVATE KEY`)
    /// form.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, IdentityError> {
        if is_encrypted_pem(key_pem) {
            return Err(IdentityError::EncryptedKey);
        }
        let key = PKey::private_key_from_pem(key_pem).map_err(IdentityError::KeyPem)?;
        Self::from_cert_pem_and_key(cert_pem, key)
    }

    /// Like [`Self::from_pem`] for a passphrase-protected key.
    pub fn from_pem_with_passphrase(
        cert_pem: &[u8],
        key_pem: &[u8],
        passphrase: &[u8],
    ) -> Result<Self, IdentityError> {
        let key = PKey::private_key_from_pem_passphrase(key_pem, passphrase)
            .map_err(IdentityError::KeyPem)?;
        Self::from_cert_pem_and_key(cert_pem, key)
    }

    /// Reads both PEM files; errors name the file that could not be read.
    pub fn from_pem_files(cert_path: &Path, key_path: &Path) -> Result<Self, IdentityError> {
        let read = |what: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| IdentityError::ReadFile {
                what,
                path: path.to_path_buf(),
                source,
            })
        };
        let cert = read("push certificate", cert_path)?;
        let key = read("private key", key_path)?;
        Self::from_pem(&cert, &key)
    }

    /// Builds the identity from already parsed parts (tests, the demo).
    pub fn from_parts(
        certificate: X509,
        chain: Vec<X509>,
        key: PKey<Private>,
    ) -> Result<Self, IdentityError> {
        // The key must be the one the certificate certifies, or the TLS
        // handshake fails with an opaque error much later.
        let cert_public = certificate
            .public_key()
            .map_err(|source| IdentityError::Openssl {
                doing: "reading the certificate public key",
                source,
            })?;
        if !cert_public.public_eq(&key) {
            return Err(IdentityError::KeyMismatch);
        }
        let topic = topic_of(&certificate).ok_or(IdentityError::MissingTopic)?;
        if !topic.starts_with(MDM_TOPIC_PREFIX) {
            tracing::warn!(%topic, "push certificate topic is not an mdm topic ({MDM_TOPIC_PREFIX}...)");
        }
        let not_before = asn1_to_system_time(certificate.not_before())?;
        let not_after = asn1_to_system_time(certificate.not_after())?;
        Ok(Self {
            certificate,
            chain,
            key,
            topic,
            not_before,
            not_after,
        })
    }

    fn from_cert_pem_and_key(cert_pem: &[u8], key: PKey<Private>) -> Result<Self, IdentityError> {
        let mut certs = X509::stack_from_pem(cert_pem).map_err(IdentityError::CertificatePem)?;
        if certs.is_empty() {
            return Err(IdentityError::NoCertificate);
        }
        let leaf = certs.remove(0);
        Self::from_parts(leaf, certs, key)
    }

    /// The APNs topic (`apns-topic`), the certificate subject's `UID`.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The push certificate.
    pub fn certificate(&self) -> &X509Ref {
        &self.certificate
    }

    /// The start of the certificate's validity.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// The end of the certificate's validity: APNs refuses the certificate
    /// after this, so the operator must renew it before.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Fails if the certificate is not valid at `now`.
    pub fn check_validity(&self, now: SystemTime) -> Result<(), IdentityError> {
        if now < self.not_before {
            return Err(IdentityError::NotYetValid {
                not_before: self.not_before,
            });
        }
        if now > self.not_after {
            return Err(IdentityError::Expired {
                not_after: self.not_after,
            });
        }
        Ok(())
    }

    /// The identity as reqwest wants it: certificate chain PEM plus the key
    /// as PKCS#8 PEM (native-tls accepts nothing else).
    pub(crate) fn to_reqwest_identity(&self) -> Result<reqwest::Identity, IdentityError> {
        let openssl_err = |doing| move |source| IdentityError::Openssl { doing, source };
        let mut cert_pem = self
            .certificate
            .to_pem()
            .map_err(openssl_err("encoding the certificate"))?;
        for c in &self.chain {
            cert_pem.extend(c.to_pem().map_err(openssl_err("encoding the chain"))?);
        }
        let key_pem = self
            .key
            .private_key_to_pem_pkcs8()
            .map_err(openssl_err("converting the key to pkcs#8"))?;
        reqwest::Identity::from_pkcs8_pem(&cert_pem, &key_pem).map_err(IdentityError::TlsIdentity)
    }
}

/// The subject `UID` (OID 0.9.2342.19200300.100.1.1) of a certificate: the
/// APNs topic of an MDM push certificate.
pub fn topic_of(cert: &X509Ref) -> Option<String> {
    cert.subject_name()
        .entries_by_nid(Nid::USERID)
        .next()
        .and_then(|e| e.data().to_string().ok())
        .filter(|s| !s.is_empty())
}

fn is_encrypted_pem(pem: &[u8]) -> bool {
    let text = String::from_utf8_lossy(pem);
    text.contains("BEGIN ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED")
}

pub(crate) fn asn1_to_system_time(t: &Asn1TimeRef) -> Result<SystemTime, IdentityError> {
    let openssl_err = |source| IdentityError::Openssl {
        doing: "reading the certificate validity",
        source,
    };
    let epoch = Asn1Time::from_unix(0).map_err(openssl_err)?;
    let diff = epoch.diff(t).map_err(openssl_err)?;
    let secs = i64::from(diff.days) * 86_400 + i64::from(diff.secs);
    Ok(if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    })
}
