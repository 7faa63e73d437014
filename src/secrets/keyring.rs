//! The OS keyring (macOS Keychain, Windows Credential Manager, the Secret Service on Linux
//! desktops) as a home for the key that wraps a store's master key.
//!
//! Headless servers have no Secret Service; there the passphrase is the tested default and
//! `keyring_status` says why the keyring cannot be used.

use zeroize::Zeroizing;

use super::SecretsError;

/// The keyring service name every mdmctl entry uses; the account is `store:<store id>`.
pub const KEYRING_SERVICE: &str = "mdmctl";

/// Whether the platform keyring can be used here, and if not, why. A credential store the
/// embedding program installed with `keyring_core::set_default_store` wins over the platform's.
pub fn keyring_status() -> Result<(), String> {
    if keyring_core::get_default_store().is_some() {
        return Ok(());
    }
    ::keyring::Entry::store_status()
        .as_ref()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn entry(account: &str) -> Result<keyring_core::Entry, SecretsError> {
    keyring_status().map_err(SecretsError::KeyringUnavailable)?;
    keyring_core::Entry::new(KEYRING_SERVICE, account)
        .map_err(|e| SecretsError::KeyringUnavailable(e.to_string()))
}

pub(super) fn set(account: &str, secret: &[u8]) -> Result<(), SecretsError> {
    entry(account)?
        .set_secret(secret)
        .map_err(|e| SecretsError::KeyringUnavailable(e.to_string()))
}

pub(super) fn get(account: &str) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
    match entry(account)?.get_secret() {
        Ok(s) => Ok(Zeroizing::new(s)),
        Err(keyring_core::Error::NoEntry) => Err(SecretsError::KeyringMissing {
            service: KEYRING_SERVICE.into(),
            account: account.into(),
        }),
        Err(e) => Err(SecretsError::KeyringUnavailable(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{KeySource, NoPassphrase, create_with_keyring, unlock};

    #[test]
    fn keyring_envelope_round_trip() {
        keyring_core::set_default_store(keyring_core::sample::Store::new().unwrap());
        let (master, env) = create_with_keyring("store:test-roundtrip").unwrap();
        assert_eq!(env.source, KeySource::Keyring);
        let sealed = master.seal("x", b"secret").unwrap();
        let again = unlock(&env, &NoPassphrase).unwrap();
        assert_eq!(&again.open("x", &sealed).unwrap()[..], b"secret");
        let mut other = env.clone();
        other.keyring_account = Some("store:absent".into());
        assert!(matches!(
            unlock(&other, &NoPassphrase),
            Err(super::SecretsError::KeyringMissing { .. })
        ));
    }
}
