//! Apple Business Manager's devices as the last sync left them (one row per serial number) with
//! mdmctl's own state for each (its team, its profile assignment: every serial ends in a state,
//! and one that failed waits before the next try), the profiles defined with Apple per scope,
//! the devices held in Setup Assistant until mdmctl releases them, and the sync cursor (kept
//! in `meta` with when Apple issued it: cursors older than 7 days are
//! not used).

use serde::{Deserialize, Serialize};

use super::sql::Val;
use super::tx::SqlTx;
use super::{Meta, StoreError};
use crate::timestamp::Timestamp;

const CURSOR_KEY: &str = "abm.cursor";

/// One ABM device record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbmDevice {
    pub serial: String,
    pub model: Option<String>,
    pub description: Option<String>,
    pub color: Option<String>,
    pub os: Option<String>,
    pub device_family: Option<String>,
    /// `empty`, `assigned`, `pushed`, `removed`.
    pub profile_status: Option<String>,
    pub profile_uuid: Option<String>,
    pub assigned_by: Option<String>,
    pub assigned_date: Option<String>,
    /// `added`, `modified`, `deleted` (empty from a full fetch).
    pub op_type: Option<String>,
    pub op_date: Option<String>,
    /// ABM-driven migration to this server by this date (macOS 26).
    pub migration_deadline: Option<String>,
    /// ABM no longer lists it for this server.
    pub deleted: bool,
    /// mdmctl's: the team it joins when it enrolls (the default team when first synced).
    #[serde(default)]
    pub team: Option<String>,
    /// mdmctl's: `assigned`, `failed`, `throttled`, `not_accessible`; `None` until tried.
    #[serde(default)]
    pub assign_state: Option<String>,
    /// The profile UUID last assigned (or tried).
    #[serde(default)]
    pub assigned_profile: Option<String>,
    /// Failed tries in a row.
    #[serde(default)]
    pub assign_failures: i64,
    /// A failed one is not tried again before this.
    #[serde(default)]
    pub assign_retry_at: Option<Timestamp>,
    /// Apple's answer, or why there was none.
    #[serde(default)]
    pub assign_detail: Option<String>,
    /// The device once it enrolled here.
    #[serde(default)]
    pub enrolled_udid: Option<String>,
}

/// A device due for assignment: its serial and team.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbmDue {
    pub serial: String,
    pub team: Option<String>,
}

/// How one assignment ended for a set of serials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssignOutcome {
    /// `assigned`, `failed`, `throttled`, `not_accessible`.
    pub state: &'static str,
    pub profile_uuid: String,
    /// Apple's word, or what went wrong.
    pub detail: String,
    /// For a failure: when to try again the first time (a repeated failure waits `cooldown`).
    pub retry_at: Option<Timestamp>,
    pub cooldown_until: Option<Timestamp>,
}

/// A profile defined with Apple for one scope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbmProfile {
    /// `None`: devices in no team.
    pub team: Option<String>,
    pub sha256: String,
    pub profile_uuid: String,
    pub defined_at: Timestamp,
}

/// Which ABM devices to list.
#[derive(Clone, Debug, Default)]
pub struct AbmFilter {
    /// ABM's profile status.
    pub status: Option<String>,
    /// `Some(None)`: devices in no team.
    pub team: Option<Option<String>>,
    /// Not enrolled yet (and not deleted).
    pub pending_only: bool,
}

/// The sync cursor and when it was issued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbmCursor {
    pub value: String,
    pub at: Timestamp,
}

const COLUMNS: &str = "serial, model, description, color, os, device_family, profile_status, profile_uuid, \
     assigned_by, assigned_date, op_type, op_date, migration_deadline, deleted";
const OWN_COLUMNS: &str = "team, assign_state, assigned_profile, assign_failures, assign_retry_at, \
     assign_detail, enrolled_udid";

fn scope_key(team: Option<&str>) -> &str {
    team.unwrap_or("")
}

pub trait AbmDevices {
    /// Insert or replace Apple's fields of these records (their serials distinct); a new one
    /// joins `default_team`. A device deleted and now listed again, or whose profile ABM
    /// shows removed, is assigned again.
    fn put_abm_devices(
        &mut self,
        devices: &[AbmDevice],
        default_team: Option<&str>,
    ) -> Result<(), StoreError>;
    /// The records, by serial.
    fn abm_devices(&mut self, filter: &AbmFilter) -> Result<Vec<AbmDevice>, StoreError>;
    /// Devices to assign now: never tried, or failed and their wait over (oldest try first).
    fn abm_due(&mut self, now: Timestamp, limit: usize) -> Result<Vec<AbmDue>, StoreError>;
    /// Record how assigning `serials` ended.
    fn record_abm_assignments(
        &mut self,
        serials: &[String],
        outcome: &AssignOutcome,
    ) -> Result<(), StoreError>;
    /// The profiles defined with Apple, per scope.
    fn abm_profiles(&mut self) -> Result<Vec<AbmProfile>, StoreError>;
    /// Record a newly defined profile; the scope's devices are assigned it next.
    fn put_abm_profile(&mut self, profile: &AbmProfile) -> Result<(), StoreError>;
    /// Move a device not enrolled yet to `team` (it is assigned that team's profile next).
    /// `false` if no such ABM device.
    fn set_abm_device_team(&mut self, serial: &str, team: Option<&str>)
    -> Result<bool, StoreError>;
    /// The ABM record of a serial.
    fn abm_device(&mut self, serial: &str) -> Result<Option<AbmDevice>, StoreError>;
    /// Note the device that enrolled with this serial (nothing if the serial is not ABM's).
    fn set_abm_enrolled(&mut self, serial: &str, udid: &str) -> Result<(), StoreError>;
    /// Hold a device in Setup Assistant from `since`, unless it is held already (`None`:
    /// released). Whether anything changed.
    fn set_awaiting_configuration(
        &mut self,
        device_id: &str,
        since: Option<Timestamp>,
    ) -> Result<bool, StoreError>;
    /// The devices held in Setup Assistant, and since when.
    fn awaiting_configuration(&mut self) -> Result<Vec<(String, Timestamp)>, StoreError>;
    fn abm_cursor(&mut self) -> Result<Option<AbmCursor>, StoreError>;
    /// Store the cursor (`None` forgets it: the next sync fetches everything).
    fn set_abm_cursor(&mut self, cursor: Option<&AbmCursor>) -> Result<(), StoreError>;
}

impl AbmDevices for SqlTx<'_> {
    fn put_abm_devices(
        &mut self,
        devices: &[AbmDevice],
        default_team: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = Timestamp::now();
        let updates = COLUMNS
            .split(", ")
            .skip(1)
            .map(|c| format!("{c} = excluded.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let reassign = "CASE WHEN (abm_devices.deleted AND NOT excluded.deleted) \
             OR excluded.profile_status = 'removed' THEN NULL ELSE abm_devices.assign_state END";
        for chunk in devices.chunks(100) {
            let rows =
                vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            let mut params: Vec<Val<'_>> = Vec::with_capacity(chunk.len() * 16);
            for d in chunk {
                params.push(Val::Text(&d.serial));
                for v in [
                    &d.model,
                    &d.description,
                    &d.color,
                    &d.os,
                    &d.device_family,
                    &d.profile_status,
                    &d.profile_uuid,
                    &d.assigned_by,
                    &d.assigned_date,
                    &d.op_type,
                    &d.op_date,
                    &d.migration_deadline,
                ] {
                    params.push(v.as_deref().into());
                }
                params.push(d.deleted.into());
                params.push(now.into());
                params.push(default_team.into());
            }
            self.conn.execute(
                &format!(
                    "INSERT INTO abm_devices ({COLUMNS}, updated_at, team) VALUES {rows} \
                     ON CONFLICT (serial) DO UPDATE SET assign_state = {reassign}, \
                     assign_retry_at = CASE WHEN {reassign} IS NULL THEN NULL ELSE abm_devices.assign_retry_at END, \
                     {updates}, updated_at = excluded.updated_at"
                ),
                &params,
            )?;
        }
        Ok(())
    }

    fn abm_devices(&mut self, filter: &AbmFilter) -> Result<Vec<AbmDevice>, StoreError> {
        let mut clauses: Vec<&str> = Vec::new();
        let mut params: Vec<Val<'_>> = Vec::new();
        if let Some(s) = &filter.status {
            clauses.push("profile_status = ?");
            params.push(s.into());
        }
        match &filter.team {
            Some(Some(t)) => {
                clauses.push("team = ?");
                params.push(t.into());
            }
            Some(None) => clauses.push("team IS NULL"),
            None => {}
        }
        if filter.pending_only {
            clauses.push("enrolled_udid IS NULL AND NOT deleted");
        }
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        self.conn
            .query(
                &format!(
                    "SELECT {COLUMNS}, {OWN_COLUMNS} FROM abm_devices {filter} ORDER BY serial"
                ),
                &params,
            )?
            .iter()
            .map(device_from_row)
            .collect()
    }

    fn abm_device(&mut self, serial: &str) -> Result<Option<AbmDevice>, StoreError> {
        self.conn
            .query_opt(
                &format!("SELECT {COLUMNS}, {OWN_COLUMNS} FROM abm_devices WHERE serial = ?"),
                &[serial.into()],
            )?
            .as_ref()
            .map(device_from_row)
            .transpose()
    }

    fn abm_due(&mut self, now: Timestamp, limit: usize) -> Result<Vec<AbmDue>, StoreError> {
        self.conn
            .query(
                "SELECT serial, team FROM abm_devices WHERE NOT deleted AND (assign_state IS NULL \
                 OR (assign_state <> 'assigned' AND assign_retry_at <= ?)) \
                 ORDER BY assign_at IS NOT NULL, assign_at, serial LIMIT ?",
                &[now.into(), (limit as i64).into()],
            )?
            .iter()
            .map(|r| {
                Ok(AbmDue {
                    serial: r.text(0)?,
                    team: r.opt_text(1)?,
                })
            })
            .collect()
    }

    fn record_abm_assignments(
        &mut self,
        serials: &[String],
        o: &AssignOutcome,
    ) -> Result<(), StoreError> {
        let now = Timestamp::now();
        for chunk in serials.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let mut params: Vec<Val<'_>> = Vec::with_capacity(chunk.len() + 8);
            let sql = if o.state == "assigned" {
                params.extend([
                    Val::Text(&o.profile_uuid),
                    Val::Text(&o.detail),
                    now.into(),
                    Val::Text(&o.profile_uuid),
                ]);
                format!(
                    "UPDATE abm_devices SET assign_state = 'assigned', assigned_profile = ?, \
                     assign_detail = ?, assign_at = ?, assign_failures = 0, assign_retry_at = NULL, \
                     profile_uuid = ?, profile_status = CASE WHEN profile_status = 'pushed' \
                     THEN profile_status ELSE 'assigned' END WHERE serial IN ({marks})"
                )
            } else {
                params.extend([
                    Val::Text(o.state),
                    Val::Text(&o.profile_uuid),
                    Val::Text(&o.detail),
                    now.into(),
                    o.cooldown_until.into(),
                    o.retry_at.into(),
                ]);
                format!(
                    "UPDATE abm_devices SET assign_state = ?, assigned_profile = ?, assign_detail = ?, \
                     assign_at = ?, assign_retry_at = CASE WHEN assign_failures >= 1 THEN CAST(? AS BIGINT) ELSE CAST(? AS BIGINT) END, \
                     assign_failures = assign_failures + 1 WHERE serial IN ({marks})"
                )
            };
            params.extend(chunk.iter().map(Val::from));
            self.conn.execute(&sql, &params)?;
        }
        Ok(())
    }

    fn abm_profiles(&mut self) -> Result<Vec<AbmProfile>, StoreError> {
        self.conn
            .query(
                "SELECT scope, sha256, profile_uuid, defined_at FROM abm_profiles ORDER BY scope",
                &[],
            )?
            .iter()
            .map(|r| {
                let scope = r.text(0)?;
                Ok(AbmProfile {
                    team: (!scope.is_empty()).then_some(scope),
                    sha256: r.text(1)?,
                    profile_uuid: r.text(2)?,
                    defined_at: Timestamp(r.int(3)?),
                })
            })
            .collect()
    }

    fn put_abm_profile(&mut self, p: &AbmProfile) -> Result<(), StoreError> {
        let scope = scope_key(p.team.as_deref());
        self.conn.execute(
            "INSERT INTO abm_profiles (scope, sha256, profile_uuid, defined_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (scope) DO UPDATE SET sha256 = excluded.sha256, \
             profile_uuid = excluded.profile_uuid, defined_at = excluded.defined_at",
            &[
                scope.into(),
                p.sha256.as_str().into(),
                p.profile_uuid.as_str().into(),
                p.defined_at.into(),
            ],
        )?;
        let (clause, params): (&str, Vec<Val<'_>>) = match &p.team {
            Some(t) => ("team = ?", vec![t.into()]),
            None => ("team IS NULL", Vec::new()),
        };
        self.conn.execute(
            &format!(
                "UPDATE abm_devices SET assign_state = NULL, assign_retry_at = NULL, \
                 assign_failures = 0 WHERE {clause}"
            ),
            &params,
        )?;
        Ok(())
    }

    fn set_abm_device_team(
        &mut self,
        serial: &str,
        team: Option<&str>,
    ) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE abm_devices SET team = ?, assign_state = NULL, assign_retry_at = NULL, \
             assign_failures = 0 WHERE serial = ?",
            &[team.into(), serial.into()],
        )?;
        Ok(n > 0)
    }

    fn set_abm_enrolled(&mut self, serial: &str, udid: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE abm_devices SET enrolled_udid = ? WHERE serial = ?",
            &[udid.into(), serial.into()],
        )?;
        Ok(())
    }

    fn set_awaiting_configuration(
        &mut self,
        device_id: &str,
        since: Option<Timestamp>,
    ) -> Result<bool, StoreError> {
        let n = match since {
            Some(t) => self.conn.execute(
                "UPDATE devices SET awaiting_configuration_since = ? \
                 WHERE id = ? AND awaiting_configuration_since IS NULL",
                &[t.into(), device_id.into()],
            )?,
            None => self.conn.execute(
                "UPDATE devices SET awaiting_configuration_since = NULL WHERE id = ?",
                &[device_id.into()],
            )?,
        };
        Ok(n > 0)
    }

    fn awaiting_configuration(&mut self) -> Result<Vec<(String, Timestamp)>, StoreError> {
        self.conn
            .query(
                "SELECT id, awaiting_configuration_since FROM devices \
                 WHERE awaiting_configuration_since IS NOT NULL ORDER BY awaiting_configuration_since",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.text(0)?, Timestamp(r.int(1)?))))
            .collect()
    }

    fn abm_cursor(&mut self) -> Result<Option<AbmCursor>, StoreError> {
        match self.meta_get(CURSOR_KEY)? {
            None => Ok(None),
            Some(v) => serde_json::from_str::<Option<AbmCursor>>(&v)
                .map_err(|e| StoreError::Decode(format!("meta `{CURSOR_KEY}`: {e}"))),
        }
    }

    fn set_abm_cursor(&mut self, cursor: Option<&AbmCursor>) -> Result<(), StoreError> {
        let v = serde_json::to_string(&cursor).map_err(|e| StoreError::Decode(e.to_string()))?;
        self.meta_set(CURSOR_KEY, &v)
    }
}

fn device_from_row(r: &super::sql::Row) -> Result<AbmDevice, StoreError> {
    Ok(AbmDevice {
        serial: r.text(0)?,
        model: r.opt_text(1)?,
        description: r.opt_text(2)?,
        color: r.opt_text(3)?,
        os: r.opt_text(4)?,
        device_family: r.opt_text(5)?,
        profile_status: r.opt_text(6)?,
        profile_uuid: r.opt_text(7)?,
        assigned_by: r.opt_text(8)?,
        assigned_date: r.opt_text(9)?,
        op_type: r.opt_text(10)?,
        op_date: r.opt_text(11)?,
        migration_deadline: r.opt_text(12)?,
        deleted: r.bool(13)?,
        team: r.opt_text(14)?,
        assign_state: r.opt_text(15)?,
        assigned_profile: r.opt_text(16)?,
        assign_failures: r.int(17)?,
        assign_retry_at: r.opt_int(18)?.map(Timestamp),
        assign_detail: r.opt_text(19)?,
        enrolled_udid: r.opt_text(20)?,
    })
}
