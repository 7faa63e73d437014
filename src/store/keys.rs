//! The store's master key, unlocked on first use: commands that touch no secret never ask
//! for a passphrase, and a wrong passphrase fails the transaction that needed it (so nothing
//! is written).

use std::sync::{Mutex, OnceLock};

use crate::secrets::{KeyEnvelope, KeyProvider, MasterKey, NoPassphrase};

use super::StoreError;
use super::meta::KEY_ENVELOPE;
use super::sql::Conn;

pub(crate) struct Keys {
    provider: Box<dyn KeyProvider>,
    key: OnceLock<MasterKey>,
    // Only one thread asks for the passphrase.
    unlocking: Mutex<()>,
}

impl Keys {
    pub fn new(provider: Box<dyn KeyProvider>) -> Self {
        Self {
            provider,
            key: OnceLock::new(),
            unlocking: Mutex::new(()),
        }
    }

    pub fn unlocked(key: MasterKey) -> Self {
        let keys = Self::new(Box::new(NoPassphrase));
        let _ = keys.key.set(key);
        keys
    }

    pub fn get(&self, conn: &mut dyn Conn) -> Result<&MasterKey, StoreError> {
        if let Some(k) = self.key.get() {
            return Ok(k);
        }
        let _guard = self.unlocking.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = self.key.get() {
            return Ok(k);
        }
        let row = conn.query_opt(
            "SELECT value FROM meta WHERE key = ?",
            &[KEY_ENVELOPE.into()],
        )?;
        let json = match row {
            Some(r) => r.text(0)?,
            None => {
                return Err(StoreError::Decode(
                    "the store has no key envelope (was `mdmctl init` interrupted?)".into(),
                ));
            }
        };
        let envelope = KeyEnvelope::from_json(&json)?;
        let key = crate::secrets::unlock(&envelope, self.provider.as_ref())?;
        Ok(self.key.get_or_init(|| key))
    }
}
