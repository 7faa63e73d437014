//! Apple Business Manager's devices as the last sync left them (one row per serial number), and
//! the sync cursor (kept in `meta` with when Apple issued it: cursors older than 7 days are not
//! used).

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
}

/// The sync cursor and when it was issued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbmCursor {
    pub value: String,
    pub at: Timestamp,
}

const COLUMNS: &str = "serial, model, description, color, os, device_family, profile_status, profile_uuid, \
     assigned_by, assigned_date, op_type, op_date, migration_deadline, deleted";

pub trait AbmDevices {
    /// Insert or replace these records (their serials distinct).
    fn put_abm_devices(&mut self, devices: &[AbmDevice]) -> Result<(), StoreError>;
    /// The records, by serial; `status` filters on the profile status.
    fn abm_devices(&mut self, status: Option<&str>) -> Result<Vec<AbmDevice>, StoreError>;
    fn abm_cursor(&mut self) -> Result<Option<AbmCursor>, StoreError>;
    /// Store the cursor (`None` forgets it: the next sync fetches everything).
    fn set_abm_cursor(&mut self, cursor: Option<&AbmCursor>) -> Result<(), StoreError>;
}

impl AbmDevices for SqlTx<'_> {
    fn put_abm_devices(&mut self, devices: &[AbmDevice]) -> Result<(), StoreError> {
        let now = Timestamp::now();
        for chunk in devices.chunks(100) {
            let rows =
                vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            let mut params: Vec<Val<'_>> = Vec::with_capacity(chunk.len() * 15);
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
            }
            let updates = COLUMNS
                .split(", ")
                .skip(1)
                .map(|c| format!("{c} = excluded.{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            self.conn.execute(
                &format!(
                    "INSERT INTO abm_devices ({COLUMNS}, updated_at) VALUES {rows} \
                     ON CONFLICT (serial) DO UPDATE SET {updates}, updated_at = excluded.updated_at"
                ),
                &params,
            )?;
        }
        Ok(())
    }

    fn abm_devices(&mut self, status: Option<&str>) -> Result<Vec<AbmDevice>, StoreError> {
        let (filter, params): (&str, Vec<Val<'_>>) = match status {
            Some(s) => ("WHERE profile_status = ?", vec![s.into()]),
            None => ("", Vec::new()),
        };
        self.conn
            .query(
                &format!("SELECT {COLUMNS} FROM abm_devices {filter} ORDER BY serial"),
                &params,
            )?
            .iter()
            .map(|r| {
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
                })
            })
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
