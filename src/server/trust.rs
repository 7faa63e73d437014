//! The server's view of the store's CAs, refreshed every few seconds so every instance sharing a
//! PostgreSQL store sees a CA added or rotated; and a cache of certificates already found
//! valid, so an Idle check-in costs one signature check, not a chain build.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use crate::pki::identity::{
    IdentityError, ParsedSignature, Presented, TrustAnchors, Verified, verify_mdm_signature,
};
use crate::pki::{self, fingerprint_sha256};
use crate::store::{AssetKind, AssetState, Store, StoreError};

const REFRESH: Duration = Duration::from_secs(15);
const VERIFIED_TTL: Duration = Duration::from_secs(600);
const VERIFIED_MAX: usize = 20_000;

/// The CAs and push topic as loaded from the store.
pub struct Loaded {
    pub anchors: TrustAnchors,
    /// The CA that issues new identities, with its key.
    pub issuing: Option<(X509, PKey<Private>)>,
    /// The active push certificate's topic.
    pub topic: Option<String>,
    generation: String,
    at: Instant,
}

pub struct Trust {
    loaded: RwLock<Option<Arc<Loaded>>>,
    /// Certificates already found valid, by SHA-256 of their DER, with their public key.
    known: Mutex<HashMap<[u8; 32], Known>>,
}

struct Known {
    verified: Verified,
    key: openssl::pkey::PKey<openssl::pkey::Public>,
    at: Instant,
    generation: String,
}

/// How a request presented its identity.
pub enum Credential<'a> {
    /// An `Mdm-Signature` header over the body.
    Signature { header: &'a str, body: &'a [u8] },
    /// A certificate as DER (a proxy's header).
    Der(Vec<u8>),
    /// The TLS client certificate.
    Peer(X509),
}

impl Default for Trust {
    fn default() -> Self {
        Self::new()
    }
}

impl Trust {
    pub fn new() -> Self {
        Self {
            loaded: RwLock::new(None),
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The current CAs, reloaded from the store when older than a few seconds.
    pub fn current(&self, store: &dyn Store) -> Result<Arc<Loaded>, StoreError> {
        if let Some(l) = self
            .loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            && l.at.elapsed() < REFRESH
        {
            return Ok(l.clone());
        }
        let fresh = Arc::new(load(store)?);
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = Some(fresh.clone());
        Ok(fresh)
    }

    /// Drop what is loaded (after this process changed the CAs).
    pub fn invalidate(&self) {
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Check a request's identity: the signature (if any) over its body, and the certificate
    /// against the current CAs. A certificate seen before is not decoded or chain-checked again
    /// (OpenSSL 3.0 spends ~180 µs decoding one): only the signature is verified, with the
    /// cached public key.
    pub fn check(
        &self,
        store: &dyn Store,
        credential: Credential<'_>,
    ) -> Result<Verified, VerifyError> {
        let loaded = self.current(store).map_err(VerifyError::Store)?;
        match credential {
            Credential::Signature { header, body } => {
                let parsed = ParsedSignature::parse(header).map_err(VerifyError::Identity)?;
                if let Some(p) = &parsed {
                    let fp = openssl::sha::sha256(&p.cert_der);
                    if let Some((v, key)) = self.cached(&fp, &loaded) {
                        p.check(body, &key).map_err(VerifyError::Identity)?;
                        return Ok(v);
                    }
                }
                // First sight (or an unusual shape): OpenSSL's complete verification.
                let presented =
                    verify_mdm_signature(header, body).map_err(VerifyError::Identity)?;
                self.verify_new(&loaded, &presented)
            }
            Credential::Der(der) => {
                let fp = openssl::sha::sha256(&der);
                if let Some((v, _)) = self.cached(&fp, &loaded) {
                    return Ok(v);
                }
                let cert = X509::from_der(&der)
                    .map_err(|e| VerifyError::Identity(IdentityError::BadHeader(e.to_string())))?;
                self.verify_new(
                    &loaded,
                    &Presented {
                        cert,
                        chain: Vec::new(),
                        via: "client certificate header",
                    },
                )
            }
            Credential::Peer(cert) => {
                let der = cert.to_der().map_err(|e| VerifyError::Identity(e.into()))?;
                if let Some((v, _)) = self.cached(&openssl::sha::sha256(&der), &loaded) {
                    return Ok(v);
                }
                self.verify_new(
                    &loaded,
                    &Presented {
                        cert,
                        chain: Vec::new(),
                        via: "TLS client certificate",
                    },
                )
            }
        }
    }

    /// Whether the certificate an `Mdm-Signature` carries is one already found valid (a
    /// memory lookup, no store and no chain building): the common case for a device's request.
    pub fn knows_signer(&self, header: &str) -> bool {
        let Some(l) = self
            .loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|l| l.at.elapsed() < REFRESH)
        else {
            return false;
        };
        match ParsedSignature::parse(header) {
            Ok(Some(p)) => self
                .cached(&openssl::sha::sha256(&p.cert_der), &l)
                .is_some(),
            _ => false,
        }
    }

    /// Whether a store CA vouches for the certificate an `Mdm-Signature` carries, judged
    /// before the body it signs is read (a request nobody vouches for is refused unread); the
    /// signature over the body is checked by [`Trust::check`] once the body is in.
    pub fn vouch_for_signer(&self, store: &dyn Store, header: &str) -> Result<(), VerifyError> {
        let loaded = self.current(store).map_err(VerifyError::Store)?;
        let presented =
            crate::pki::identity::signature_certificates(header).map_err(VerifyError::Identity)?;
        self.verify_new(&loaded, &presented).map(|_| ())
    }

    fn cached(
        &self,
        fp: &[u8; 32],
        loaded: &Loaded,
    ) -> Option<(Verified, openssl::pkey::PKey<openssl::pkey::Public>)> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let k = known.get(fp)?;
        let fresh = k.at.elapsed() < VERIFIED_TTL
            && k.generation == loaded.generation
            && k.verified.not_after > crate::timestamp::Timestamp::now();
        fresh.then(|| (k.verified.clone(), k.key.clone()))
    }

    fn verify_new(&self, loaded: &Loaded, presented: &Presented) -> Result<Verified, VerifyError> {
        let v = loaded
            .anchors
            .verify(presented)
            .map_err(VerifyError::Identity)?;
        let key = presented
            .cert
            .public_key()
            .map_err(|e| VerifyError::Identity(e.into()))?;
        let der = presented
            .cert
            .to_der()
            .map_err(|e| VerifyError::Identity(e.into()))?;
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= VERIFIED_MAX {
            // Bounded memory: start over rather than grow (a miss costs one decode).
            known.clear();
        }
        known.insert(
            openssl::sha::sha256(&der),
            Known {
                verified: v.clone(),
                key,
                at: Instant::now(),
                generation: loaded.generation.clone(),
            },
        );
        Ok(v)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Identity(IdentityError),
    #[error(transparent)]
    Store(StoreError),
}

fn load(store: &dyn Store) -> Result<Loaded, StoreError> {
    store.read(|tx| {
        let mut cas = Vec::new();
        let mut issuing = None;
        let mut generation = String::new();
        for a in tx.assets(AssetKind::ScepCa)? {
            if a.state == AssetState::Retired {
                continue;
            }
            let Some(pem) = &a.cert_pem else { continue };
            let Ok(cert) = pki::parse_cert(pem.as_bytes()) else {
                tracing::warn!(asset = a.id, "a stored SCEP CA certificate does not parse; skipped");
                continue;
            };
            let active = a.state == AssetState::Active;
            generation.push_str(&format!("{}:{}:{};", a.id, a.state.as_str(), a.sha256.as_deref().unwrap_or("")));
            if active && a.has_key
                && let Some(key) = tx.asset_key(a.id)? {
                    match pki::load_private_key(&key, None) {
                        Ok(k) => issuing = Some((cert.clone(), k)),
                        Err(e) => tracing::warn!(asset = a.id, error = %e, "the issuing CA's key does not load"),
                    }
                }
            cas.push((cert, active));
        }
        let topic = tx.active_asset(AssetKind::Apns)?.and_then(|a| a.topic);
        let anchors = TrustAnchors::new(&cas).map_err(|e| StoreError::Decode(e.to_string()))?;
        if let Some((c, _)) = &issuing {
            generation.push_str(&fingerprint_sha256(c).unwrap_or_default());
        }
        Ok(Loaded {
            anchors,
            issuing,
            topic,
            generation,
            at: Instant::now(),
        })
    })
}
