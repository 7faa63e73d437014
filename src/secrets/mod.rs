//! Secrets at rest: the store's master key and the encryption of every secret column.
//!
//! Owns: the master key (a random 256-bit data key), how it is protected (wrapped by a key
//! derived with scrypt from the admin's passphrase, or by a random key kept in the OS
//! keyring), and sealing values with AES-256-GCM. The wrapped key travels with the store (a
//! JSON [`KeyEnvelope`] in its `meta` table), so a PostgreSQL store shared by several servers
//! needs only the passphrase on each. Must not import store internals: the store calls in.
//!
//! Also the credentials the server checks by hash only (API tokens, enrollment secrets,
//! one-time SCEP challenges): [`new_credential`] makes one and the hash that is stored.
//!
//! Sealed value layout: `0x01 | nonce (12) | ciphertext | tag (16)`. The associated data is
//! the value's purpose (`"asset-key"`, `"push-magic"`…), so a sealed value copied into
//! another column does not decrypt.

mod keyring;

pub use keyring::{KEYRING_SERVICE, keyring_status};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use openssl::symm::{Cipher, decrypt_aead, encrypt_aead};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

const SEALED_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const WRAP_PURPOSE: &str = "mdmctl master key";
/// Passphrases shorter than this are refused when a store is created.
pub const MIN_PASSPHRASE_LEN: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("wrong passphrase for this store")]
    WrongPassphrase,
    #[error("the master key in the OS keyring does not open this store")]
    WrongKeyringKey,
    #[error("no passphrase to unlock the store's secrets")]
    NoPassphrase,
    #[error("the passphrase is too short ({len} characters; at least {MIN_PASSPHRASE_LEN} needed)")]
    PassphraseTooShort { len: usize },
    #[error("the passphrases do not match")]
    PassphraseMismatch,
    #[error("cannot read the passphrase file `{path}`: {reason}")]
    PassphraseFile { path: String, reason: String },
    #[error("the OS keyring is not available: {0}")]
    KeyringUnavailable(String),
    #[error(
        "the OS keyring has no master key for this store (service `{service}`, account `{account}`)"
    )]
    KeyringMissing { service: String, account: String },
    #[error(
        "a stored secret ({purpose}) cannot be decrypted: it is damaged or belongs to another store"
    )]
    Damaged { purpose: String },
    #[error("the store's key envelope is unreadable: {0}")]
    BadEnvelope(String),
    #[error("encryption failed: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
}

/// A new random credential (`prefix` then 48 hex digits: 192 bits) and the hex SHA-256 that is
/// stored in its place ([`credential_hash`]). The credential itself is shown once and never
/// kept.
pub fn new_credential(prefix: &str) -> Result<(Zeroizing<String>, String), SecretsError> {
    let mut raw = Zeroizing::new([0u8; 24]);
    openssl::rand::rand_bytes(raw.as_mut())?;
    let secret = Zeroizing::new(format!("{prefix}{}", hex::encode(raw.as_ref())));
    let hash = credential_hash(&secret);
    Ok((secret, hash))
}

/// The hex SHA-256 a presented credential is looked up by.
pub fn credential_hash(presented: &str) -> String {
    hex::encode(openssl::sha::sha256(presented.trim().as_bytes()))
}

impl crate::diagnose::Diagnose for SecretsError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            SecretsError::WrongPassphrase => "use the passphrase the store was created with (`MDMCTL_PASSPHRASE` or `--passphrase-file`); nothing was changed".into(),
            SecretsError::WrongKeyringKey | SecretsError::KeyringMissing { .. } => "run mdmctl as the user and on the machine whose keyring holds this store's key".into(),
            SecretsError::NoPassphrase => "set `MDMCTL_PASSPHRASE`, pass `--passphrase-file FILE`, or run on a terminal to be prompted".into(),
            SecretsError::PassphraseTooShort { .. } => format!("choose a passphrase of at least {MIN_PASSPHRASE_LEN} characters and keep it safe: without it the store's keys cannot be read"),
            SecretsError::PassphraseMismatch => "type the same passphrase twice".into(),
            SecretsError::PassphraseFile { .. } => "check the path given to `--passphrase-file` (or `MDMCTL_PASSPHRASE_FILE`)".into(),
            SecretsError::KeyringUnavailable(_) => "use a passphrase instead: `mdmctl init --key-source passphrase` with `MDMCTL_PASSPHRASE` set".into(),
            SecretsError::Damaged { .. } | SecretsError::BadEnvelope(_) => "restore the store from a backup; the secrets in it do not match its master key".into(),
            SecretsError::Crypto(_) => return None,
        })
    }

    fn unexpected(&self) -> bool {
        matches!(self, SecretsError::Crypto(_))
    }
}

/// The 256-bit key that seals every secret in a store. Zeroized when dropped.
pub struct MasterKey {
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(…)")
    }
}

impl MasterKey {
    pub fn generate() -> Result<Self, SecretsError> {
        let mut key = Zeroizing::new([0u8; 32]);
        openssl::rand::rand_bytes(key.as_mut())?;
        Ok(Self { key })
    }

    fn from_slice(bytes: &[u8]) -> Option<Self> {
        let mut key = Zeroizing::new([0u8; 32]);
        if bytes.len() != 32 {
            return None;
        }
        key.copy_from_slice(bytes);
        Some(Self { key })
    }

    /// Encrypt `plaintext`; `purpose` binds the result to where it is stored.
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Result<Vec<u8>, SecretsError> {
        seal_with(&self.key[..], purpose, plaintext)
    }

    /// Decrypt a value sealed for `purpose`.
    pub fn open(&self, purpose: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        open_with(&self.key[..], purpose, sealed).ok_or_else(|| SecretsError::Damaged {
            purpose: purpose.to_string(),
        })
    }
}

fn seal_with(key: &[u8], purpose: &str, plaintext: &[u8]) -> Result<Vec<u8>, SecretsError> {
    let mut nonce = [0u8; NONCE_LEN];
    openssl::rand::rand_bytes(&mut nonce)?;
    let mut tag = [0u8; TAG_LEN];
    let ct = encrypt_aead(
        Cipher::aes_256_gcm(),
        key,
        Some(&nonce),
        purpose.as_bytes(),
        plaintext,
        &mut tag,
    )?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len() + TAG_LEN);
    out.push(SEALED_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out.extend_from_slice(&tag);
    Ok(out)
}

fn open_with(key: &[u8], purpose: &str, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < 1 + NONCE_LEN + TAG_LEN || sealed[0] != SEALED_VERSION {
        return None;
    }
    let (nonce, rest) = sealed[1..].split_at(NONCE_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    decrypt_aead(
        Cipher::aes_256_gcm(),
        key,
        Some(nonce),
        purpose.as_bytes(),
        ct,
        tag,
    )
    .ok()
    .map(Zeroizing::new)
}

/// Where the key that wraps the master key comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeySource {
    Passphrase,
    Keyring,
}

/// scrypt parameters, stored so they can be raised for new stores without breaking old ones.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Kdf {
    pub algorithm: String,
    pub salt: String,
    pub log_n: u8,
    pub r: u32,
    pub p: u32,
}

/// The master key, wrapped, as kept in the store's `meta` table. Holds nothing secret in clear.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyEnvelope {
    pub version: u32,
    pub source: KeySource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdf: Option<Kdf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyring_account: Option<String>,
    pub wrapped_key: String,
}

impl KeyEnvelope {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(s: &str) -> Result<Self, SecretsError> {
        serde_json::from_str(s).map_err(|e| SecretsError::BadEnvelope(e.to_string()))
    }
}

/// Supplies the passphrase of an existing store, when (and only when) a secret is needed.
pub trait KeyProvider: Send + Sync {
    fn passphrase(&self) -> Result<Zeroizing<String>, SecretsError>;
}

/// A provider for stores that must never need a passphrase (tests of keyring stores, tools).
pub struct NoPassphrase;

impl KeyProvider for NoPassphrase {
    fn passphrase(&self) -> Result<Zeroizing<String>, SecretsError> {
        Err(SecretsError::NoPassphrase)
    }
}

/// A fixed passphrase (tests, the demo, and callers that already hold it).
pub struct FixedPassphrase(pub Zeroizing<String>);

impl KeyProvider for FixedPassphrase {
    fn passphrase(&self) -> Result<Zeroizing<String>, SecretsError> {
        Ok(self.0.clone())
    }
}

const SCRYPT_LOG_N: u8 = 15;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;

fn derive(passphrase: &str, kdf: &Kdf) -> Result<Zeroizing<[u8; 32]>, SecretsError> {
    if kdf.algorithm != "scrypt" || kdf.log_n > 22 || kdf.r == 0 || kdf.p == 0 {
        return Err(SecretsError::BadEnvelope(format!(
            "unsupported key derivation `{}` (log_n {}, r {}, p {})",
            kdf.algorithm, kdf.log_n, kdf.r, kdf.p
        )));
    }
    let salt = B64
        .decode(&kdf.salt)
        .map_err(|e| SecretsError::BadEnvelope(e.to_string()))?;
    let n = 1u64 << kdf.log_n;
    // scrypt needs 128·N·r·p bytes; allow twice that.
    let maxmem = 256 * n * u64::from(kdf.r) * u64::from(kdf.p);
    let mut out = Zeroizing::new([0u8; 32]);
    openssl::pkcs5::scrypt(
        passphrase.as_bytes(),
        &salt,
        n,
        u64::from(kdf.r),
        u64::from(kdf.p),
        maxmem,
        out.as_mut(),
    )?;
    Ok(out)
}

/// A new master key protected by `passphrase`.
pub fn create_with_passphrase(passphrase: &str) -> Result<(MasterKey, KeyEnvelope), SecretsError> {
    let len = passphrase.chars().count();
    if len < MIN_PASSPHRASE_LEN {
        return Err(SecretsError::PassphraseTooShort { len });
    }
    let mut salt = [0u8; 16];
    openssl::rand::rand_bytes(&mut salt)?;
    let kdf = Kdf {
        algorithm: "scrypt".into(),
        salt: B64.encode(salt),
        log_n: SCRYPT_LOG_N,
        r: SCRYPT_R,
        p: SCRYPT_P,
    };
    let kek = derive(passphrase, &kdf)?;
    let master = MasterKey::generate()?;
    let wrapped = seal_with(&kek[..], WRAP_PURPOSE, &master.key[..])?;
    Ok((
        master,
        KeyEnvelope {
            version: 1,
            source: KeySource::Passphrase,
            kdf: Some(kdf),
            keyring_account: None,
            wrapped_key: B64.encode(wrapped),
        },
    ))
}

/// A new master key protected by a random key kept in the OS keyring under `account`.
pub fn create_with_keyring(account: &str) -> Result<(MasterKey, KeyEnvelope), SecretsError> {
    let mut kek = Zeroizing::new([0u8; 32]);
    openssl::rand::rand_bytes(kek.as_mut())?;
    keyring::set(account, &kek[..])?;
    let master = MasterKey::generate()?;
    let wrapped = seal_with(&kek[..], WRAP_PURPOSE, &master.key[..])?;
    Ok((
        master,
        KeyEnvelope {
            version: 1,
            source: KeySource::Keyring,
            kdf: None,
            keyring_account: Some(account.to_string()),
            wrapped_key: B64.encode(wrapped),
        },
    ))
}

/// Unwrap the master key from its envelope, asking `provider` for the passphrase if needed.
pub fn unlock(env: &KeyEnvelope, provider: &dyn KeyProvider) -> Result<MasterKey, SecretsError> {
    let wrapped = B64
        .decode(&env.wrapped_key)
        .map_err(|e| SecretsError::BadEnvelope(e.to_string()))?;
    match env.source {
        KeySource::Passphrase => {
            let kdf = env
                .kdf
                .as_ref()
                .ok_or_else(|| SecretsError::BadEnvelope("passphrase store without kdf".into()))?;
            let passphrase = provider.passphrase()?;
            let kek = derive(&passphrase, kdf)?;
            let raw =
                open_with(&kek[..], WRAP_PURPOSE, &wrapped).ok_or(SecretsError::WrongPassphrase)?;
            MasterKey::from_slice(&raw)
                .ok_or_else(|| SecretsError::BadEnvelope("bad key length".into()))
        }
        KeySource::Keyring => {
            let account = env
                .keyring_account
                .as_deref()
                .ok_or_else(|| SecretsError::BadEnvelope("keyring store without account".into()))?;
            let kek = keyring::get(account)?;
            let raw =
                open_with(&kek[..], WRAP_PURPOSE, &wrapped).ok_or(SecretsError::WrongKeyringKey)?;
            MasterKey::from_slice(&raw)
                .ok_or_else(|| SecretsError::BadEnvelope("bad key length".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_purpose() {
        let k = MasterKey::generate().unwrap();
        let sealed = k.seal("asset-key", b"-----BEGIN PRIVATE KEY-----").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"PRIVATE"));
        assert_eq!(
            &k.open("asset-key", &sealed).unwrap()[..],
            b"-----BEGIN PRIVATE KEY-----"
        );
        assert!(matches!(
            k.open("push-magic", &sealed),
            Err(SecretsError::Damaged { .. })
        ));
        let other = MasterKey::generate().unwrap();
        assert!(other.open("asset-key", &sealed).is_err());
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(k.open("asset-key", &tampered).is_err());
        assert!(k.open("asset-key", b"\x01short").is_err());
    }

    #[test]
    fn passphrase_envelope_round_trip_and_wrong_passphrase() {
        let (master, env) = create_with_passphrase("correct horse battery").unwrap();
        let json = env.to_json();
        assert!(!json.contains("correct horse"));
        let env = KeyEnvelope::from_json(&json).unwrap();
        let good = FixedPassphrase(Zeroizing::new("correct horse battery".into()));
        let again = unlock(&env, &good).unwrap();
        let sealed = master.seal("x", b"secret").unwrap();
        assert_eq!(&again.open("x", &sealed).unwrap()[..], b"secret");
        let bad = FixedPassphrase(Zeroizing::new("wrong horse battery".into()));
        assert!(matches!(
            unlock(&env, &bad),
            Err(SecretsError::WrongPassphrase)
        ));
        assert!(matches!(
            unlock(&env, &NoPassphrase),
            Err(SecretsError::NoPassphrase)
        ));
    }

    #[test]
    fn short_passphrases_are_refused() {
        assert!(matches!(
            create_with_passphrase("short"),
            Err(SecretsError::PassphraseTooShort { len: 5 })
        ));
    }
}
