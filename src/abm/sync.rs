//! Device sync with Apple Business Manager: fetch every device (`POST /server/devices`, paged
//! until `more_to_follow` is false), then the changes since the stored cursor (`POST
//! /devices/sync`). An expired or invalid cursor (400 `EXPIRED_CURSOR`, `INVALID_CURSOR`) and a
//! cursor older than 7 days start a full fetch again; `EXHAUSTED_CURSOR` on a fetch means it is
//! done. Records are deduplicated by serial, the latest `op_date` winning; a device reassigned
//! to this server arrives as `modified` and is kept like an added one; `deleted` marks it.
//! (micromdm/nanodep's syncer, with MicroMDM's guard against a cursor that does not move.)

use std::collections::BTreeMap;

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::client::{DepClient, DepError};
use crate::store::{AbmCursor, AbmDevice, Store, StoreError};
use crate::timestamp::Timestamp;

/// Devices per page (Apple's maximum is 1,000).
pub const PAGE: u32 = 1000;
/// Apple's cursors last 7 days.
const CURSOR_DAYS: i64 = 7;
/// Pages per sync at most (a guard against a service that never says it is done).
const MAX_PAGES: usize = 10_000;

/// A device as Apple lists it (the fields kept).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct DeviceJson {
    pub serial_number: String,
    pub model: Option<String>,
    pub description: Option<String>,
    pub color: Option<String>,
    pub os: Option<String>,
    pub device_family: Option<String>,
    pub profile_status: Option<String>,
    pub profile_uuid: Option<String>,
    pub device_assigned_by: Option<String>,
    pub device_assigned_date: Option<String>,
    pub op_type: Option<String>,
    pub op_date: Option<String>,
    pub mdm_migration_deadline: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Page {
    cursor: Option<String>,
    devices: Vec<DeviceJson>,
    more_to_follow: bool,
}

/// What one sync did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SyncSummary {
    /// A full fetch (no usable cursor) rather than changes only.
    pub full_fetch: bool,
    pub pages: usize,
    pub records: usize,
    pub added: usize,
    pub modified: usize,
    pub deleted: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Dep(#[from] DepError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Asset(#[from] crate::assets::AssetError),
}

impl crate::diagnose::Diagnose for SyncError {
    fn hint(&self) -> Option<String> {
        match self {
            SyncError::Dep(e) => e.hint(),
            SyncError::Store(e) => e.hint(),
            SyncError::Asset(e) => e.hint(),
        }
    }

    fn unexpected(&self) -> bool {
        matches!(self, SyncError::Store(e) if e.unexpected())
    }
}

fn cursor_error(e: &DepError, what: &str) -> bool {
    matches!(e, DepError::Http { status: 400, body } if body.contains(what))
}

/// Sync the store's ABM devices; `reset` forgets the cursor first (a full fetch).
pub async fn sync(
    client: &DepClient,
    store: &std::sync::Arc<dyn Store>,
    reset: bool,
) -> Result<SyncSummary, SyncError> {
    let s = store.clone();
    let stored = tokio::task::spawn_blocking(move || s.read(|tx| tx.abm_cursor()))
        .await
        .map_err(|e| StoreError::Decode(e.to_string()))??;
    let now = Timestamp::now();
    let prior = stored.clone();
    let mut cursor = stored
        .filter(|c| !reset && now.0 - c.at.0 < CURSOR_DAYS * 86_400)
        .map(|c| c.value);
    let mut fetch = cursor.is_none();
    let mut summary = SyncSummary {
        full_fetch: fetch,
        ..Default::default()
    };
    let mut latest: BTreeMap<String, DeviceJson> = BTreeMap::new();
    let mut restarted = false;
    loop {
        if summary.pages >= MAX_PAGES {
            break;
        }
        let (path, body) = if fetch {
            let mut b = serde_json::json!({ "limit": PAGE });
            if let Some(c) = &cursor {
                b["cursor"] = c.clone().into();
            }
            ("/server/devices", b)
        } else {
            let Some(c) = &cursor else { break };
            (
                "/devices/sync",
                serde_json::json!({ "cursor": c, "limit": PAGE }),
            )
        };
        let page: Page = match client.call(Method::POST, path, Some(&body)).await {
            Ok(p) => p,
            Err(e) if fetch && cursor_error(&e, "EXHAUSTED_CURSOR") => {
                fetch = false;
                continue;
            }
            Err(e)
                if !restarted
                    && (cursor_error(&e, "EXPIRED_CURSOR")
                        || cursor_error(&e, "INVALID_CURSOR")) =>
            {
                tracing::info!("the ABM cursor is no longer valid; fetching every device again");
                restarted = true;
                cursor = None;
                fetch = true;
                summary.full_fetch = true;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        summary.pages += 1;
        for d in page.devices {
            summary.records += 1;
            let keep = latest
                .get(&d.serial_number)
                .is_none_or(|old| old.op_date <= d.op_date);
            if keep {
                latest.insert(d.serial_number.clone(), d);
            }
        }
        let moved = page.cursor.is_some() && page.cursor != cursor;
        if let Some(c) = page.cursor {
            cursor = Some(c);
        }
        if page.more_to_follow && moved {
            continue;
        }
        if fetch {
            // One sync right after the fetch, for what changed meanwhile.
            fetch = false;
            continue;
        }
        break;
    }
    let devices: Vec<AbmDevice> = latest
        .into_values()
        .map(|d| {
            match d.op_type.as_deref() {
                Some("deleted") => summary.deleted += 1,
                Some("modified") => summary.modified += 1,
                _ => summary.added += 1,
            }
            AbmDevice {
                deleted: d.op_type.as_deref() == Some("deleted"),
                serial: d.serial_number,
                model: d.model,
                description: d.description,
                color: d.color,
                os: d.os,
                device_family: d.device_family,
                profile_status: d.profile_status,
                profile_uuid: d.profile_uuid,
                assigned_by: d.device_assigned_by,
                assigned_date: d.device_assigned_date,
                op_type: d.op_type,
                op_date: d.op_date,
                migration_deadline: d.mdm_migration_deadline,
                ..Default::default()
            }
        })
        .collect();
    let s = store.clone();
    let sum = summary.clone();
    tokio::task::spawn_blocking(move || {
        s.write(|tx| {
            let default_team = tx
                .global_settings()?
                .and_then(|g| g.apple_bm_default_team)
                .filter(|t| !t.is_empty());
            tx.put_abm_devices(&devices, default_team.as_deref())?;
            // A cursor keeps the time Apple first gave it (they last 7 days from then).
            if let Some(c) = &cursor
                && prior.as_ref().is_none_or(|p| &p.value != c)
            {
                tx.set_abm_cursor(Some(&AbmCursor {
                    value: c.clone(),
                    at: Timestamp::now(),
                }))?;
            }
            tx.record_activity(&crate::store::NewActivity {
                actor: "abm".into(),
                kind: "abm.sync".into(),
                device_id: None,
                summary: format!(
                    "synced Apple Business Manager{}: {} record(s) in {} page(s): {} added, {} modified, {} deleted",
                    if sum.full_fetch { " (every device)" } else { "" },
                    sum.records,
                    sum.pages,
                    sum.added,
                    sum.modified,
                    sum.deleted
                ),
                details: serde_json::to_value(&sum).unwrap_or_default(),
            })?;
            Ok::<_, StoreError>(())
        })
    })
    .await
    .map_err(|e| StoreError::Decode(e.to_string()))??;
    Ok(summary)
}
