//! FileVault state per device: where enforcement is, why the user or admin must act, and the
//! escrowed personal recovery key, sealed with the store's master key. The key is written and
//! read by its own two methods only; every other read sees whether a key is there, never the key.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::StoreError;
use super::sql::Row;
use super::tx::SqlTx;
use crate::timestamp::Timestamp;

/// Sealing purpose of recovery keys (binds the ciphertext to its column).
const RECOVERY_KEY_PURPOSE: &str = "filevault-recovery-key";

/// Where FileVault enforcement is on one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FdeState {
    /// The FileVault profile is on its way (not verified yet).
    Enforcing,
    /// The profile is installed; SecurityInfo is asked for the escrowed key.
    Verifying,
    /// FileVault is on and its recovery key is escrowed with mdmctl.
    Verified,
    /// Someone must act (the user must log out, or the key cannot be escrowed); see the reason.
    ActionRequired,
}

impl FdeState {
    pub fn as_str(self) -> &'static str {
        match self {
            FdeState::Enforcing => "enforcing",
            FdeState::Verifying => "verifying",
            FdeState::Verified => "verified",
            FdeState::ActionRequired => "action_required",
        }
    }

    /// As admins read it.
    pub fn label(self) -> &'static str {
        match self {
            FdeState::Enforcing => "enforcing",
            FdeState::Verifying => "verifying",
            FdeState::Verified => "verified",
            FdeState::ActionRequired => "action required",
        }
    }

    pub fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "enforcing" => FdeState::Enforcing,
            "verifying" => FdeState::Verifying,
            "verified" => FdeState::Verified,
            "action_required" => FdeState::ActionRequired,
            other => {
                return Err(StoreError::Decode(format!(
                    "unknown disk encryption status `{other}`"
                )));
            }
        })
    }
}

/// One device's FileVault state (without the key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskEncryption {
    pub device_id: String,
    pub status: FdeState,
    /// Why, for `action_required` (and `key escrowed` once verified).
    pub reason: Option<String>,
    /// A recovery key is escrowed.
    pub has_key: bool,
    /// SHA-256 of the escrow certificate the key was decrypted with.
    pub escrow_sha256: Option<String>,
    pub key_escrowed_at: Option<Timestamp>,
    /// The SecurityInfo / RotateFileVaultKey in flight.
    pub command_uuid: Option<String>,
    /// When to ask the device again.
    pub next_check_at: Option<Timestamp>,
    pub updated_at: Timestamp,
}

impl DiskEncryption {
    pub fn new(device_id: &str, status: FdeState, now: Timestamp) -> Self {
        Self {
            device_id: device_id.to_string(),
            status,
            reason: None,
            has_key: false,
            escrow_sha256: None,
            key_escrowed_at: None,
            command_uuid: None,
            next_check_at: None,
            updated_at: now,
        }
    }
}

pub trait DiskEncryptionState {
    fn disk_encryption(&mut self, device_id: &str) -> Result<Option<DiskEncryption>, StoreError>;
    /// Insert or replace the state of `row.device_id`; the escrowed key (and `has_key`,
    /// `escrow_sha256`, `key_escrowed_at`) is left as it is.
    fn put_disk_encryption(&mut self, row: &DiskEncryption) -> Result<(), StoreError>;
    /// Start tracking these devices (`enforcing`) unless they are tracked already.
    fn track_disk_encryption(
        &mut self,
        device_ids: &[String],
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// Seal and store a device's recovery key (the state row must exist).
    fn set_recovery_key(
        &mut self,
        device_id: &str,
        key: &[u8],
        escrow_sha256: Option<&str>,
        at: Timestamp,
    ) -> Result<(), StoreError>;
    /// The escrowed recovery key, opened. Callers record who asked.
    fn recovery_key(&mut self, device_id: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError>;
    /// Devices whose check is due by `now` (nothing in flight), soonest first.
    fn due_disk_encryption_checks(
        &mut self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;
    /// How many devices are in each state, over all devices or one scope (`Some(None)`: devices
    /// in no team), in state order.
    fn disk_encryption_counts(
        &mut self,
        scope: Option<Option<&str>>,
    ) -> Result<Vec<(FdeState, i64)>, StoreError>;
}

const COLUMNS: &str = "device_id, status, reason, key_sealed IS NOT NULL, escrow_sha256, key_escrowed_at, command_uuid, next_check_at, updated_at";

fn from_row(r: &Row) -> Result<DiskEncryption, StoreError> {
    Ok(DiskEncryption {
        device_id: r.text(0)?,
        status: FdeState::parse(&r.text(1)?)?,
        reason: r.opt_text(2)?,
        has_key: r.bool(3)?,
        escrow_sha256: r.opt_text(4)?,
        key_escrowed_at: r.opt_ts(5)?,
        command_uuid: r.opt_text(6)?,
        next_check_at: r.opt_ts(7)?,
        updated_at: r.ts(8)?,
    })
}

impl DiskEncryptionState for SqlTx<'_> {
    fn disk_encryption(&mut self, device_id: &str) -> Result<Option<DiskEncryption>, StoreError> {
        self.conn
            .query_opt(
                &format!("SELECT {COLUMNS} FROM disk_encryption WHERE device_id = ?"),
                &[device_id.into()],
            )?
            .map(|r| from_row(&r))
            .transpose()
    }

    fn put_disk_encryption(&mut self, d: &DiskEncryption) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO disk_encryption (device_id, status, reason, command_uuid, next_check_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET status = excluded.status, \
             reason = excluded.reason, command_uuid = excluded.command_uuid, \
             next_check_at = excluded.next_check_at, updated_at = excluded.updated_at",
            &[
                d.device_id.as_str().into(),
                d.status.as_str().into(),
                d.reason.as_deref().into(),
                d.command_uuid.as_deref().into(),
                d.next_check_at.into(),
                d.updated_at.into(),
            ],
        )?;
        Ok(())
    }

    fn track_disk_encryption(
        &mut self,
        device_ids: &[String],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        for chunk in device_ids.chunks(500) {
            let values = vec!["(?, 'enforcing', ?)"; chunk.len()].join(", ");
            let mut params: Vec<super::sql::Val<'_>> = Vec::with_capacity(chunk.len() * 2);
            for id in chunk {
                params.push(id.as_str().into());
                params.push(now.into());
            }
            self.conn.execute(
                &format!(
                    "INSERT INTO disk_encryption (device_id, status, updated_at) VALUES {values} \
                     ON CONFLICT (device_id) DO NOTHING"
                ),
                &params,
            )?;
        }
        Ok(())
    }

    fn set_recovery_key(
        &mut self,
        device_id: &str,
        key: &[u8],
        escrow_sha256: Option<&str>,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let sealed = self.seal(RECOVERY_KEY_PURPOSE, key)?;
        let n = self.conn.execute(
            "UPDATE disk_encryption SET key_sealed = ?, escrow_sha256 = ?, key_escrowed_at = ?, updated_at = ? \
             WHERE device_id = ?",
            &[
                (&sealed).into(),
                escrow_sha256.into(),
                at.into(),
                at.into(),
                device_id.into(),
            ],
        )?;
        if n == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "no disk encryption state for device {device_id}"
            )))
        }
    }

    fn recovery_key(&mut self, device_id: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let sealed = self
            .conn
            .query_opt(
                "SELECT key_sealed FROM disk_encryption WHERE device_id = ?",
                &[device_id.into()],
            )?
            .map(|r| r.opt_blob(0))
            .transpose()?
            .flatten();
        self.open_opt(RECOVERY_KEY_PURPOSE, sealed)
    }

    fn due_disk_encryption_checks(
        &mut self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        self.conn
            .query(
                &format!(
                    "SELECT device_id FROM disk_encryption WHERE command_uuid IS NULL \
                     AND next_check_at IS NOT NULL AND next_check_at <= ? \
                     ORDER BY next_check_at, device_id LIMIT {limit}"
                ),
                &[now.into()],
            )?
            .iter()
            .map(|r| r.text(0))
            .collect()
    }

    fn disk_encryption_counts(
        &mut self,
        scope: Option<Option<&str>>,
    ) -> Result<Vec<(FdeState, i64)>, StoreError> {
        let mut sql = String::from(
            "SELECT e.status, COUNT(*) FROM disk_encryption e JOIN devices d ON d.id = e.device_id \
             LEFT JOIN teams t ON t.id = d.team_id",
        );
        let mut params: Vec<super::sql::Val<'_>> = Vec::new();
        super::sql::push_scope(scope, &mut sql, &mut params);
        sql.push_str(" GROUP BY e.status");
        let mut out = self
            .conn
            .query(&sql, &params)?
            .iter()
            .map(|r| Ok((FdeState::parse(&r.text(0)?)?, r.int(1)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        out.sort();
        Ok(out)
    }
}
