//! Declarative management per device: the DeclarationsToken mdmctl last asked the device to
//! sync to, and what the device's status reports say of each declaration.

use serde::{Deserialize, Serialize};

use super::StoreError;
use super::sql::{Row, Val, marks};
use super::tx::SqlTx;
use crate::timestamp::Timestamp;

/// One declaration on one device, as its status report gives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclarationStatus {
    pub device_id: String,
    pub identifier: String,
    /// The ServerToken the device applied.
    pub server_token: Option<String>,
    pub active: Option<bool>,
    /// `valid`, `invalid` or `unknown`.
    pub valid: Option<String>,
    /// Apple's reasons (for invalid or inactive declarations).
    pub reasons: Option<serde_json::Value>,
    pub updated_at: Timestamp,
}

pub trait Declarations {
    /// The DeclarationsToken the device was last asked to sync to.
    fn declarations_token_sent(&mut self, device_id: &str) -> Result<Option<String>, StoreError>;
    /// [`Declarations::declarations_token_sent`] for many devices at once: `(device, token)`
    /// for those that have one.
    fn declarations_tokens_sent(
        &mut self,
        device_ids: &[String],
    ) -> Result<Vec<(String, String)>, StoreError>;
    fn set_declarations_token_sent(
        &mut self,
        device_id: &str,
        token: &str,
        at: Timestamp,
    ) -> Result<(), StoreError>;
    /// Insert or replace the rows of these `(device_id, identifier)` pairs.
    fn put_declaration_statuses(&mut self, rows: &[DeclarationStatus]) -> Result<(), StoreError>;
    /// A device's declarations, by identifier.
    fn declaration_statuses(
        &mut self,
        device_id: &str,
    ) -> Result<Vec<DeclarationStatus>, StoreError>;
}

const COLUMNS: &str = "device_id, identifier, server_token, active, valid, reasons, updated_at";

fn from_row(r: &Row) -> Result<DeclarationStatus, StoreError> {
    Ok(DeclarationStatus {
        device_id: r.text(0)?,
        identifier: r.text(1)?,
        server_token: r.opt_text(2)?,
        active: r.opt_bool(3)?,
        valid: r.opt_text(4)?,
        reasons: r
            .opt_text(5)?
            .map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|e| StoreError::Decode(format!("declaration reasons: {e}")))?,
        updated_at: r.ts(6)?,
    })
}

impl Declarations for SqlTx<'_> {
    fn declarations_token_sent(&mut self, device_id: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_opt(
                "SELECT token_sent FROM ddm_sync WHERE device_id = ?",
                &[device_id.into()],
            )?
            .map(|r| r.text(0))
            .transpose()
    }

    fn declarations_tokens_sent(
        &mut self,
        device_ids: &[String],
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut out = Vec::new();
        for chunk in device_ids.chunks(500) {
            let marks = marks(chunk.len());
            let params: Vec<Val<'_>> = chunk.iter().map(|id| Val::Text(id)).collect();
            for r in self.conn.query(
                &format!("SELECT device_id, token_sent FROM ddm_sync WHERE device_id IN ({marks})"),
                &params,
            )? {
                out.push((r.text(0)?, r.text(1)?));
            }
        }
        Ok(out)
    }

    fn set_declarations_token_sent(
        &mut self,
        device_id: &str,
        token: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO ddm_sync (device_id, token_sent, sent_at) VALUES (?, ?, ?) \
             ON CONFLICT (device_id) DO UPDATE SET token_sent = excluded.token_sent, sent_at = excluded.sent_at",
            &[device_id.into(), token.into(), at.into()],
        )?;
        Ok(())
    }

    fn put_declaration_statuses(&mut self, rows: &[DeclarationStatus]) -> Result<(), StoreError> {
        for d in rows {
            let reasons = d.reasons.as_ref().map(|r| r.to_string());
            self.conn.execute(
                &format!(
                    "INSERT INTO declaration_status ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) \
                     ON CONFLICT (device_id, identifier) DO UPDATE SET server_token = excluded.server_token, \
                     active = excluded.active, valid = excluded.valid, reasons = excluded.reasons, \
                     updated_at = excluded.updated_at"
                ),
                &[
                    d.device_id.as_str().into(),
                    d.identifier.as_str().into(),
                    d.server_token.as_deref().into(),
                    d.active.into(),
                    d.valid.as_deref().into(),
                    reasons.as_deref().into(),
                    d.updated_at.into(),
                ],
            )?;
        }
        Ok(())
    }

    fn declaration_statuses(
        &mut self,
        device_id: &str,
    ) -> Result<Vec<DeclarationStatus>, StoreError> {
        self.conn
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM declaration_status WHERE device_id = ? ORDER BY identifier"
                ),
                &[device_id.into()],
            )?
            .iter()
            .map(from_row)
            .collect()
    }
}
