//! Store-wide facts: its ID, when and by which mdmctl it was made, and the wrapped master key.

use serde::Serialize;

use super::sql::Conn;
use super::tx::SqlTx;
use super::{Backend, StoreError};
use crate::secrets::{KeyEnvelope, KeySource};
use crate::timestamp::Timestamp;

pub(crate) const KEY_ENVELOPE: &str = "key_envelope";
const STORE_ID: &str = "store_id";
const CREATED_AT: &str = "created_at";
const CREATED_BY: &str = "created_by";

/// What `mdmctl` prints about a store.
#[derive(Clone, Debug, Serialize)]
pub struct StoreInfo {
    pub store_id: String,
    pub backend: Backend,
    pub created_at: Option<Timestamp>,
    pub created_by: Option<String>,
    pub key_source: KeySource,
    pub schema_version: i64,
}

pub trait Meta {
    fn meta_get(&mut self, key: &str) -> Result<Option<String>, StoreError>;
    fn meta_set(&mut self, key: &str, value: &str) -> Result<(), StoreError>;
    fn store_info(&mut self) -> Result<StoreInfo, StoreError>;
    /// Unlock the master key now (for commands that will need it).
    fn unlock_secrets(&mut self) -> Result<(), StoreError>;
}

impl Meta for SqlTx<'_> {
    fn meta_get(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_opt("SELECT value FROM meta WHERE key = ?", &[key.into()])?
            .map(|r| r.text(0))
            .transpose()
    }

    fn meta_set(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[key.into(), value.into()],
        )?;
        Ok(())
    }

    fn store_info(&mut self) -> Result<StoreInfo, StoreError> {
        let envelope = KeyEnvelope::from_json(
            &self
                .meta_get(KEY_ENVELOPE)?
                .ok_or_else(|| StoreError::Decode("no key envelope".into()))?,
        )?;
        let version = super::migrate::current_version(self.conn)?.unwrap_or(0);
        Ok(StoreInfo {
            store_id: self.meta_get(STORE_ID)?.unwrap_or_default(),
            backend: self.conn.backend(),
            created_at: self
                .meta_get(CREATED_AT)?
                .and_then(|s| s.parse().ok())
                .map(Timestamp),
            created_by: self.meta_get(CREATED_BY)?,
            key_source: envelope.source,
            schema_version: version,
        })
    }

    fn unlock_secrets(&mut self) -> Result<(), StoreError> {
        self.unlock()
    }
}

/// Write the facts of a new store (inside the transaction that created its schema).
pub(crate) fn initialize(
    conn: &mut dyn Conn,
    store_id: &str,
    envelope: &KeyEnvelope,
) -> Result<(), StoreError> {
    let now = Timestamp::now().0.to_string();
    let created_by = format!("mdmctl {}", env!("CARGO_PKG_VERSION"));
    for (k, v) in [
        (STORE_ID, store_id),
        (CREATED_AT, now.as_str()),
        (CREATED_BY, created_by.as_str()),
        (KEY_ENVELOPE, envelope.to_json().as_str()),
    ] {
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            &[k.into(), v.into()],
        )?;
    }
    Ok(())
}
