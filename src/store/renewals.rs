//! Identity renewal per device: the enrollment-profile InstallProfile that renews a device's
//! identity certificate through mdmctl's SCEP, the identity it replaces, and the outcome.

use serde::{Deserialize, Serialize};

use super::StoreError;
use super::sql::Row;
use super::tx::SqlTx;
use crate::timestamp::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RenewalState {
    /// The enrollment profile is on its way or installed; waiting for the new identity.
    Sent,
    /// The device presented a new identity from mdmctl's CA; the association moved to it.
    Renewed,
    /// The device refused the profile, or it cannot be renewed; `reason` says which.
    Failed,
}

impl RenewalState {
    pub fn as_str(self) -> &'static str {
        match self {
            RenewalState::Sent => "sent",
            RenewalState::Renewed => "renewed",
            RenewalState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "sent" => RenewalState::Sent,
            "renewed" => RenewalState::Renewed,
            "failed" => RenewalState::Failed,
            other => {
                return Err(StoreError::Decode(format!(
                    "unknown renewal status `{other}`"
                )));
            }
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renewal {
    pub device_id: String,
    pub status: RenewalState,
    /// The identity (SHA-256) being replaced.
    pub old_sha256: String,
    pub command_uuid: Option<String>,
    /// SHA-256 of the one-time SCEP challenge the renewal profile carries.
    pub challenge_sha256: Option<String>,
    pub reason: Option<String>,
    pub updated_at: Timestamp,
}

pub trait Renewals {
    fn renewal(&mut self, device_id: &str) -> Result<Option<Renewal>, StoreError>;
    fn put_renewal(&mut self, r: &Renewal) -> Result<(), StoreError>;
    /// Imported devices with a command channel whose identity expires by `expiring_by` and that have no
    /// renewal for that identity yet (or a failed one last tried before `retry_before`), soonest
    /// expiry first.
    fn renewals_due(
        &mut self,
        expiring_by: Timestamp,
        retry_before: Timestamp,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;
}

const COLUMNS: &str =
    "device_id, status, old_sha256, command_uuid, challenge_sha256, reason, updated_at";

fn from_row(r: &Row) -> Result<Renewal, StoreError> {
    Ok(Renewal {
        device_id: r.text(0)?,
        status: RenewalState::parse(&r.text(1)?)?,
        old_sha256: r.text(2)?,
        command_uuid: r.opt_text(3)?,
        challenge_sha256: r.opt_text(4)?,
        reason: r.opt_text(5)?,
        updated_at: r.ts(6)?,
    })
}

impl Renewals for SqlTx<'_> {
    fn renewal(&mut self, device_id: &str) -> Result<Option<Renewal>, StoreError> {
        self.conn
            .query_opt(
                &format!("SELECT {COLUMNS} FROM identity_renewal WHERE device_id = ?"),
                &[device_id.into()],
            )?
            .map(|r| from_row(&r))
            .transpose()
    }

    fn put_renewal(&mut self, r: &Renewal) -> Result<(), StoreError> {
        self.conn.execute(
            &format!(
                "INSERT INTO identity_renewal ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (device_id) DO UPDATE SET status = excluded.status, old_sha256 = excluded.old_sha256, \
                 command_uuid = excluded.command_uuid, challenge_sha256 = excluded.challenge_sha256, \
                 reason = excluded.reason, updated_at = excluded.updated_at"
            ),
            &[
                r.device_id.as_str().into(),
                r.status.as_str().into(),
                r.old_sha256.as_str().into(),
                r.command_uuid.as_deref().into(),
                r.challenge_sha256.as_deref().into(),
                r.reason.as_deref().into(),
                r.updated_at.into(),
            ],
        )?;
        Ok(())
    }

    fn renewals_due(
        &mut self,
        expiring_by: Timestamp,
        retry_before: Timestamp,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        self.conn
            .query(
                &format!(
                    "SELECT d.id FROM devices d LEFT JOIN identity_renewal r ON r.device_id = d.id \
                     WHERE d.source LIKE 'imported%' AND d.identity_sha256 IS NOT NULL AND d.identity_not_after IS NOT NULL \
                     AND d.identity_not_after <= ? \
                     AND EXISTS (SELECT 1 FROM enrollments e WHERE e.device_id = d.id AND e.type = 'Device' \
                                 AND e.enabled AND e.token_sealed IS NOT NULL) \
                     AND (r.device_id IS NULL \
                          OR (r.old_sha256 <> d.identity_sha256 AND r.status <> 'sent') \
                          OR (r.status = 'failed' AND r.updated_at <= ?)) \
                     ORDER BY d.identity_not_after, d.id LIMIT {limit}"
                ),
                &[expiring_by.into(), retry_before.into()],
            )?
            .iter()
            .map(|r| r.text(0))
            .collect()
    }
}
