//! Profile delivery state, per device and profile identifier: what the reconciler sent, where
//! it is (pending → verifying → verified, or failed with Apple's error chain; removing), its
//! retries, whether mdmctl installed it, and the profiles another MDM installed (`unmanaged`).
//! Also the "dirty devices" list: devices whose desired profiles changed, which `serve`
//! reconciles (apply and team transfers may run in another process).

use serde::{Deserialize, Serialize};

use super::StoreError;
use super::sql::{Row, Val, marks};
use super::tx::SqlTx;
use crate::timestamp::Timestamp;

/// Where one profile is on one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileState {
    /// To be installed (or re-installed after an error, at `next_attempt_at`).
    Pending,
    /// The device acknowledged InstallProfile; a ProfileList will confirm it.
    Verifying,
    /// The device's ProfileList shows it with the desired PayloadUUID.
    Verified,
    /// Gave up after the retry cap; `error_chain` says why.
    Failed,
    /// RemoveProfile sent (no longer desired).
    Removing,
    /// Installed by someone else (the old MDM): listed, never touched.
    Unmanaged,
}

impl ProfileState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileState::Pending => "pending",
            ProfileState::Verifying => "verifying",
            ProfileState::Verified => "verified",
            ProfileState::Failed => "failed",
            ProfileState::Removing => "removing",
            ProfileState::Unmanaged => "unmanaged",
        }
    }

    pub fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "pending" => ProfileState::Pending,
            "verifying" => ProfileState::Verifying,
            "verified" => ProfileState::Verified,
            "failed" => ProfileState::Failed,
            "removing" => ProfileState::Removing,
            "unmanaged" => ProfileState::Unmanaged,
            other => {
                return Err(StoreError::Decode(format!(
                    "unknown profile status `{other}`"
                )));
            }
        })
    }
}

/// One profile on one device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceProfile {
    pub device_id: String,
    pub identifier: String,
    /// Display name, when known.
    pub name: Option<String>,
    /// SHA-256 of the content mdmctl sent (none for unmanaged profiles).
    pub sha256: Option<String>,
    /// PayloadUUID of what mdmctl sent, or what the device reported for unmanaged ones.
    pub payload_uuid: Option<String>,
    pub status: ProfileState,
    /// mdmctl sent InstallProfile for it: only these are ever removed.
    pub ours: bool,
    /// Failed install attempts so far.
    pub attempts: i64,
    pub next_attempt_at: Option<Timestamp>,
    /// The InstallProfile / RemoveProfile in flight.
    pub command_uuid: Option<String>,
    /// Apple's ErrorChain from the last failed attempt.
    pub error_chain: Option<serde_json::Value>,
    pub updated_at: Timestamp,
}

/// How many device profiles are in each state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileStatusCounts {
    pub verified: i64,
    pub verifying: i64,
    pub pending: i64,
    pub failed: i64,
    pub removing: i64,
    pub unmanaged: i64,
}

pub trait ProfileStatus {
    /// A device's profiles, by identifier.
    fn device_profiles(&mut self, device_id: &str) -> Result<Vec<DeviceProfile>, StoreError>;
    /// The profiles of many devices, by device then identifier.
    fn devices_profiles(&mut self, device_ids: &[String])
    -> Result<Vec<DeviceProfile>, StoreError>;
    /// Insert or replace the row for `(device_id, identifier)`.
    fn put_device_profile(&mut self, p: &DeviceProfile) -> Result<(), StoreError>;
    /// Forget a profile on a device; true if it was there.
    fn delete_device_profile(
        &mut self,
        device_id: &str,
        identifier: &str,
    ) -> Result<bool, StoreError>;
    /// The row a command in flight belongs to.
    fn device_profile_by_command(
        &mut self,
        device_id: &str,
        command_uuid: &str,
    ) -> Result<Option<DeviceProfile>, StoreError>;
    /// Mark devices for reconciliation (unknown IDs are ignored).
    fn mark_dirty(&mut self, device_ids: &[String]) -> Result<(), StoreError>;
    /// Mark every device of a scope (`None`: devices in no team); returns how many.
    fn mark_scope_dirty(&mut self, team: Option<&str>) -> Result<u64, StoreError>;
    /// Up to `limit` dirty devices, oldest mark first.
    fn dirty_devices(&mut self, limit: u32) -> Result<Vec<String>, StoreError>;
    /// Clear devices' marks (in the transaction that reconciles them); how many were marked.
    fn clear_dirty(&mut self, device_ids: &[String]) -> Result<u64, StoreError>;
    /// Insert or replace many rows (as [`ProfileStatus::put_device_profile`]), in few statements.
    fn put_device_profiles(&mut self, rows: &[DeviceProfile]) -> Result<(), StoreError>;
    /// Devices with a retry due by `now` (pending, nothing in flight), or a profile still
    /// `verifying` since before `verifying_before`.
    fn due_retries(
        &mut self,
        now: Timestamp,
        verifying_before: Timestamp,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;
    /// Counts per state over all devices, or one scope's (`Some(None)`: devices in no team).
    fn profile_status_counts(
        &mut self,
        scope: Option<Option<&str>>,
    ) -> Result<ProfileStatusCounts, StoreError>;
}

const COLUMNS: &str = "device_id, identifier, name, sha256, payload_uuid, status, ours, attempts, next_attempt_at, command_uuid, error_chain, updated_at";

fn from_row(r: &Row) -> Result<DeviceProfile, StoreError> {
    Ok(DeviceProfile {
        device_id: r.text(0)?,
        identifier: r.text(1)?,
        name: r.opt_text(2)?,
        sha256: r.opt_text(3)?,
        payload_uuid: r.opt_text(4)?,
        status: ProfileState::parse(&r.text(5)?)?,
        ours: r.bool(6)?,
        attempts: r.int(7)?,
        next_attempt_at: r.opt_ts(8)?,
        command_uuid: r.opt_text(9)?,
        error_chain: r
            .opt_text(10)?
            .map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|e| StoreError::Decode(format!("profile error chain: {e}")))?,
        updated_at: r.ts(11)?,
    })
}

impl ProfileStatus for SqlTx<'_> {
    fn device_profiles(&mut self, device_id: &str) -> Result<Vec<DeviceProfile>, StoreError> {
        self.conn
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM profile_status WHERE device_id = ? ORDER BY identifier"
                ),
                &[device_id.into()],
            )?
            .iter()
            .map(from_row)
            .collect()
    }

    fn devices_profiles(
        &mut self,
        device_ids: &[String],
    ) -> Result<Vec<DeviceProfile>, StoreError> {
        let mut out = Vec::new();
        for chunk in device_ids.chunks(500) {
            let marks = marks(chunk.len());
            let params: Vec<Val<'_>> = chunk.iter().map(|id| Val::Text(id)).collect();
            for r in self.conn.query(
                &format!(
                    "SELECT {COLUMNS} FROM profile_status WHERE device_id IN ({marks}) ORDER BY device_id, identifier"
                ),
                &params,
            )? {
                out.push(from_row(&r)?);
            }
        }
        Ok(out)
    }

    fn put_device_profile(&mut self, p: &DeviceProfile) -> Result<(), StoreError> {
        self.put_device_profiles(std::slice::from_ref(p))
    }

    fn delete_device_profile(
        &mut self,
        device_id: &str,
        identifier: &str,
    ) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM profile_status WHERE device_id = ? AND identifier = ?",
            &[device_id.into(), identifier.into()],
        )? > 0)
    }

    fn device_profile_by_command(
        &mut self,
        device_id: &str,
        command_uuid: &str,
    ) -> Result<Option<DeviceProfile>, StoreError> {
        self.conn
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM profile_status WHERE device_id = ? AND command_uuid = ?"
                ),
                &[device_id.into(), command_uuid.into()],
            )?
            .map(|r| from_row(&r))
            .transpose()
    }

    fn mark_dirty(&mut self, device_ids: &[String]) -> Result<(), StoreError> {
        // A mark already there is rewritten (same time, so its place in line is kept): a
        // reconciler pass that read the old mark and is about to clear it then conflicts with
        // this one and runs again, instead of clearing a change it never saw (the check-in
        // path marks at READ COMMITTED, the reconciler runs SERIALIZABLE).
        let now = Timestamp::now();
        for chunk in device_ids.chunks(500) {
            let marks = marks(chunk.len());
            let mut params: Vec<Val<'_>> = vec![now.into()];
            params.extend(chunk.iter().map(|id| Val::Text(id)));
            self.conn.execute(
                &format!(
                    "INSERT INTO reconcile_dirty (device_id, marked_at) SELECT id, ? FROM devices \
                     WHERE id IN ({marks}) ON CONFLICT (device_id) DO UPDATE SET marked_at = reconcile_dirty.marked_at"
                ),
                &params,
            )?;
        }
        Ok(())
    }

    fn mark_scope_dirty(&mut self, team: Option<&str>) -> Result<u64, StoreError> {
        let now = Timestamp::now();
        match team {
            None => self.conn.execute(
                "INSERT INTO reconcile_dirty (device_id, marked_at) SELECT id, ? FROM devices \
                 WHERE team_id IS NULL ON CONFLICT (device_id) DO NOTHING",
                &[now.into()],
            ),
            Some(t) => self.conn.execute(
                "INSERT INTO reconcile_dirty (device_id, marked_at) SELECT d.id, ? FROM devices d \
                 JOIN teams t ON t.id = d.team_id WHERE t.name = ? ON CONFLICT (device_id) DO NOTHING",
                &[now.into(), t.into()],
            ),
        }
    }

    fn dirty_devices(&mut self, limit: u32) -> Result<Vec<String>, StoreError> {
        self.conn
            .query(
                &format!(
                    "SELECT device_id FROM reconcile_dirty ORDER BY marked_at, device_id LIMIT {limit}"
                ),
                &[],
            )?
            .iter()
            .map(|r| r.text(0))
            .collect()
    }

    fn clear_dirty(&mut self, device_ids: &[String]) -> Result<u64, StoreError> {
        let mut n = 0;
        for chunk in device_ids.chunks(500) {
            let marks = marks(chunk.len());
            let params: Vec<Val<'_>> = chunk.iter().map(|id| Val::Text(id)).collect();
            n += self.conn.execute(
                &format!("DELETE FROM reconcile_dirty WHERE device_id IN ({marks})"),
                &params,
            )?;
        }
        Ok(n)
    }

    fn put_device_profiles(&mut self, rows: &[DeviceProfile]) -> Result<(), StoreError> {
        for chunk in rows.chunks(200) {
            let chains: Vec<Option<String>> = chunk
                .iter()
                .map(|p| p.error_chain.as_ref().map(|c| c.to_string()))
                .collect();
            let mut params: Vec<Val<'_>> = Vec::with_capacity(chunk.len() * 12);
            for (p, chain) in chunk.iter().zip(&chains) {
                params.extend::<[Val<'_>; 12]>([
                    p.device_id.as_str().into(),
                    p.identifier.as_str().into(),
                    p.name.as_deref().into(),
                    p.sha256.as_deref().into(),
                    p.payload_uuid.as_deref().into(),
                    p.status.as_str().into(),
                    p.ours.into(),
                    p.attempts.into(),
                    p.next_attempt_at.into(),
                    p.command_uuid.as_deref().into(),
                    chain.as_deref().into(),
                    p.updated_at.into(),
                ]);
            }
            let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            self.conn.execute(
                &format!(
                    "INSERT INTO profile_status ({COLUMNS}) VALUES {values} \
                     ON CONFLICT (device_id, identifier) DO UPDATE SET name = excluded.name, sha256 = excluded.sha256, \
                     payload_uuid = excluded.payload_uuid, status = excluded.status, ours = excluded.ours, \
                     attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at, \
                     command_uuid = excluded.command_uuid, error_chain = excluded.error_chain, updated_at = excluded.updated_at"
                ),
                &params,
            )?;
        }
        Ok(())
    }

    fn due_retries(
        &mut self,
        now: Timestamp,
        verifying_before: Timestamp,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        self.conn
            .query(
                &format!(
                    "SELECT DISTINCT device_id FROM profile_status WHERE (status = 'pending' \
                     AND command_uuid IS NULL AND next_attempt_at IS NOT NULL AND next_attempt_at <= ?) \
                     OR (status = 'verifying' AND updated_at <= ?) \
                     ORDER BY device_id LIMIT {limit}"
                ),
                &[now.into(), verifying_before.into()],
            )?
            .iter()
            .map(|r| r.text(0))
            .collect()
    }

    fn profile_status_counts(
        &mut self,
        scope: Option<Option<&str>>,
    ) -> Result<ProfileStatusCounts, StoreError> {
        let mut sql = String::from(
            "SELECT p.status, COUNT(*) FROM profile_status p JOIN devices d ON d.id = p.device_id \
             LEFT JOIN teams t ON t.id = d.team_id",
        );
        let mut params: Vec<Val<'_>> = Vec::new();
        super::sql::push_scope(scope, &mut sql, &mut params);
        sql.push_str(" GROUP BY p.status");
        let mut c = ProfileStatusCounts::default();
        for r in self.conn.query(&sql, &params)? {
            let n = r.int(1)?;
            match ProfileState::parse(&r.text(0)?)? {
                ProfileState::Pending => c.pending = n,
                ProfileState::Verifying => c.verifying = n,
                ProfileState::Verified => c.verified = n,
                ProfileState::Failed => c.failed = n,
                ProfileState::Removing => c.removing = n,
                ProfileState::Unmanaged => c.unmanaged = n,
            }
        }
        Ok(c)
    }
}
