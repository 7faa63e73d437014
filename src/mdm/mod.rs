//! MDM operations the CLI (on a local store), the admin API and `serve` share: sending a
//! command to devices (queue, then push), reading what devices answered.
//!
//! Must not import the server or the CLI: both call in.

pub mod api;
mod instances;

pub use instances::{InstanceView, Instances, JobView, instances};

use serde::{Deserialize, Serialize};

use crate::apple::command::Command;
use crate::push::{PushService, PushSummary};
use crate::store::{DeviceSummary, NewActivity, NewCommand, QueueEntry, Store, StoreError, Tx};
use crate::timestamp::Timestamp;

/// One device as `get device` and the API show it: no secrets unless asked for.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceDetail {
    pub id: String,
    pub serial: Option<String>,
    pub model: Option<String>,
    pub model_name: Option<String>,
    pub device_name: Option<String>,
    pub os_version: Option<String>,
    pub build_version: Option<String>,
    pub source: String,
    pub imported_at: Option<Timestamp>,
    pub enrolled_at: Option<Timestamp>,
    pub migrated_at: Option<Timestamp>,
    pub last_seen_at: Option<Timestamp>,
    pub identity_sha256: Option<String>,
    pub identity_not_after: Option<Timestamp>,
    pub enrollments: Vec<ChannelDetail>,
    /// The most recent commands on any of its channels.
    pub commands: Vec<QueueEntry>,
    /// Its profiles and their delivery status (unmanaged ones too).
    #[serde(default)]
    pub profiles: Vec<crate::store::DeviceProfile>,
    /// FileVault state, when mdmctl enforces it (never the key).
    #[serde(default)]
    pub disk_encryption: Option<crate::store::DiskEncryption>,
    /// Its declarations as its last status reports gave them.
    #[serde(default)]
    pub declarations: Vec<crate::store::DeclarationStatus>,
    /// The updates the device offered in its latest AvailableOSUpdates answer.
    #[serde(default)]
    pub available_os_updates: Option<AvailableOsUpdates>,
    /// Where renewing its identity certificate stands, once started.
    #[serde(default)]
    pub identity_renewal: Option<crate::store::Renewal>,
}

/// A device's latest AvailableOSUpdates answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AvailableOsUpdates {
    pub at: Option<Timestamp>,
    pub updates: Vec<OsUpdate>,
}

/// One update a device offers (Apple's AvailableOSUpdatesItem, the fields admins act on).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OsUpdate {
    pub product_key: Option<String>,
    pub human_readable_name: Option<String>,
    pub version: Option<String>,
    pub build: Option<String>,
    pub is_critical: bool,
    pub is_major_os_update: bool,
    pub restart_required: bool,
}

/// The device's latest acknowledged AvailableOSUpdates answer, read from its stored report.
fn available_os_updates(
    tx: &mut dyn Tx,
    device_id: &str,
) -> Result<Option<AvailableOsUpdates>, StoreError> {
    let Some(entry) = tx.device_commands(device_id, 500)?.into_iter().find(|e| {
        e.request_type == "AvailableOSUpdates"
            && e.status == crate::store::QueueStatus::Acknowledged
    }) else {
        return Ok(None);
    };
    let Some(body) = tx.command_result(&entry.enrollment_id, &entry.command_uuid)? else {
        return Ok(None);
    };
    let Ok(plist::Value::Dictionary(top)) = crate::apple::plist_in::from_bytes(&body) else {
        return Ok(None);
    };
    let updates = top
        .get("AvailableOSUpdates")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|u| u.as_dictionary())
                .map(|u| {
                    let s = |k: &str| u.get(k).and_then(|v| v.as_string()).map(str::to_string);
                    let b = |k: &str| u.get(k).and_then(|v| v.as_boolean()).unwrap_or(false);
                    OsUpdate {
                        product_key: s("ProductKey"),
                        human_readable_name: s("HumanReadableName"),
                        version: s("Version"),
                        build: s("Build"),
                        is_critical: b("IsCritical"),
                        is_major_os_update: b("IsMajorOSUpdate"),
                        restart_required: b("RestartRequired"),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(AvailableOsUpdates {
        at: entry.result_at,
        updates,
    }))
}

/// A device or user channel.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChannelDetail {
    pub id: String,
    pub kind: String,
    pub user_short_name: Option<String>,
    pub topic: String,
    pub enabled: bool,
    pub last_seen_at: Option<Timestamp>,
    pub has_push_token: bool,
    /// Only with `secrets`: the push credentials (their viewing is recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_hex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_magic: Option<String>,
}

/// A device by UDID, EnrollmentID or serial; with `secrets`, its channels' push token and
/// magic, and an activity-log entry saying who looked.
pub fn device_detail(
    tx: &mut dyn Tx,
    id: &str,
    secrets: Option<&str>,
) -> Result<Option<DeviceDetail>, StoreError> {
    let Some(d) = tx.device(id)? else {
        return Ok(None);
    };
    let enrollments = tx
        .enrollments_of(&d.id)?
        .into_iter()
        .map(|e| ChannelDetail {
            has_push_token: e.token.is_some() && e.push_magic.is_some(),
            token_hex: secrets.and(e.token.as_ref().map(|t| hex::encode(&t[..]))),
            push_magic: secrets.and(e.push_magic.as_ref().map(|m| m.to_string())),
            id: e.id,
            kind: e.kind,
            user_short_name: e.user_short_name,
            topic: e.topic,
            enabled: e.enabled,
            last_seen_at: e.last_seen_at,
        })
        .collect();
    if let Some(actor) = secrets {
        tx.record_activity(&NewActivity {
            actor: actor.to_string(),
            kind: "device.push_credentials_viewed".into(),
            device_id: Some(d.id.clone()),
            summary: format!("viewed the push token and push magic of {}", d.id),
            details: serde_json::json!({}),
        })?;
    }
    let commands = tx.device_commands(&d.id, 20)?;
    let profiles = tx.device_profiles(&d.id)?;
    let disk_encryption = tx.disk_encryption(&d.id)?;
    let declarations = tx.declaration_statuses(&d.id)?;
    let available_os_updates = available_os_updates(tx, &d.id)?;
    let identity_renewal = tx.renewal(&d.id)?;
    Ok(Some(DeviceDetail {
        id: d.id,
        serial: d.serial,
        model: d.model,
        model_name: d.model_name,
        device_name: d.device_name,
        os_version: d.os_version,
        build_version: d.build_version,
        source: d.source,
        imported_at: d.imported_at,
        enrolled_at: d.enrolled_at,
        migrated_at: d.migrated_at,
        last_seen_at: d.last_seen_at,
        identity_sha256: d.identity_sha256,
        identity_not_after: d.identity_not_after,
        enrollments,
        commands,
        profiles,
        disk_encryption,
        declarations,
        available_os_updates,
        identity_renewal,
    }))
}

/// A device's escrowed FileVault recovery key, as `get disk-encryption-key` prints it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DiskEncryptionKey {
    pub device_id: String,
    pub serial: Option<String>,
    pub key: String,
    pub escrowed_at: Option<Timestamp>,
}

/// Why there is no key to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoKey {
    NoDevice,
    /// FileVault is not enforced on the device (or no key has arrived yet): its state, if any.
    NotEscrowed(Option<crate::store::DiskEncryption>),
}

/// The escrowed recovery key of a device (by UDID, enrollment ID or serial), recording that
/// `actor` viewed it. Runs in a write transaction: no key is shown without its record.
pub fn disk_encryption_key(
    tx: &mut dyn Tx,
    id: &str,
    actor: &str,
) -> Result<Result<DiskEncryptionKey, NoKey>, StoreError> {
    let Some(d) = tx.device(id)? else {
        return Ok(Err(NoKey::NoDevice));
    };
    let state = tx.disk_encryption(&d.id)?;
    let Some(key) = crate::reconcile::filevault::recovery_key(tx, &d.id, actor)? else {
        return Ok(Err(NoKey::NotEscrowed(state)));
    };
    let key = String::from_utf8(key.to_vec())
        .map_err(|_| StoreError::Decode(format!("the recovery key of {} is not text", d.id)))?;
    Ok(Ok(DiskEncryptionKey {
        device_id: d.id,
        serial: d.serial,
        key,
        escrowed_at: state.and_then(|s| s.key_escrowed_at),
    }))
}

impl NoKey {
    /// The error and hint for people, for the CLI and the API alike.
    pub fn explain(&self, id: &str) -> (String, String) {
        match self {
            NoKey::NoDevice => (
                format!("no device `{id}`"),
                "check the UDID or serial with `mdmctl get devices`".into(),
            ),
            NoKey::NotEscrowed(None) => (
                format!("no FileVault recovery key is escrowed for `{id}`: mdmctl does not enforce FileVault on it"),
                "turn on `enable_disk_encryption` for its team (or globally) and `mdmctl apply`".into(),
            ),
            NoKey::NotEscrowed(Some(s)) => (
                format!(
                    "no FileVault recovery key is escrowed for `{id}` yet: {}{}",
                    s.status.label(),
                    s.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
                ),
                "the key arrives once FileVault is on and the Mac answers SecurityInfo; see `mdmctl get device`".into(),
            ),
        }
    }
}

/// Devices matching the API's filters.
pub fn devices(
    tx: &mut dyn Tx,
    filter: &api::DeviceFilter,
) -> Result<Vec<DeviceSummary>, StoreError> {
    let since = filter
        .seen_since
        .as_deref()
        .and_then(Timestamp::parse_rfc3339);
    let not_since = filter
        .not_seen_since
        .as_deref()
        .and_then(Timestamp::parse_rfc3339);
    // Apple Business Manager's devices that have not enrolled yet are listed as pending.
    let pending = tx
        .abm_devices(&crate::store::AbmFilter {
            pending_only: true,
            ..Default::default()
        })?
        .into_iter()
        .map(|a| DeviceSummary {
            id: a.serial.clone(),
            serial: Some(a.serial),
            model: a.model,
            source: "abm".into(),
            team: a.team,
            pending: true,
            ..Default::default()
        });
    Ok(tx
        .device_summaries()?
        .into_iter()
        .chain(pending)
        .filter(|d| filter.migrated.is_none_or(|m| d.migrated_at.is_some() == m))
        .filter(|d| since.is_none_or(|s| d.last_seen_at.is_some_and(|l| l >= s)))
        .filter(|d| not_since.is_none_or(|s| d.last_seen_at.is_none_or(|l| l < s)))
        .filter(|d| filter.team.is_none() || d.team == filter.team)
        .collect())
}

/// What sending a command did.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Sent {
    pub command_uuid: String,
    pub request_type: String,
    /// The device channels it was queued for.
    pub queued: Vec<String>,
    /// Targets that name no known device.
    pub unknown: Vec<String>,
    /// What APNs said, when pushed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<PushSummary>,
}

/// Map each target (UDID, EnrollmentID or serial number) to its device channel; unknown ones
/// are returned apart.
pub fn resolve_devices(
    tx: &mut dyn Tx,
    targets: &[String],
) -> Result<(Vec<String>, Vec<String>), StoreError> {
    // UDIDs in one query per 500 (a fan-out names thousands); serial numbers one by one.
    let mut found = tx.existing_devices(targets)?;
    let known: std::collections::HashSet<&str> = found.iter().map(String::as_str).collect();
    let others: Vec<String> = targets
        .iter()
        .filter(|t| !known.contains(t.as_str()))
        .cloned()
        .collect();
    let mut unknown = Vec::new();
    for t in others {
        match tx.device(&t)? {
            Some(d) => found.push(d.id),
            None => unknown.push(t),
        }
    }
    found.sort();
    found.dedup();
    Ok((found, unknown))
}

/// How a scope complies: its device profiles per delivery state and its devices per FileVault
/// state (`get profile-status`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Compliance {
    #[serde(flatten)]
    pub profiles: crate::store::ProfileStatusCounts,
    /// Devices per FileVault state (`enforcing`, `verifying`, `verified`, `action_required`),
    /// for the devices FileVault is enforced on.
    #[serde(default)]
    pub disk_encryption: std::collections::BTreeMap<String, i64>,
}

/// The compliance of all devices (`team` `None`) or one team's; `None` when there is no such
/// team.
pub fn compliance(tx: &mut dyn Tx, team: Option<&str>) -> Result<Option<Compliance>, StoreError> {
    if let Some(t) = team
        && !tx.teams()?.iter().any(|x| x.name == t)
    {
        return Ok(None);
    }
    let scope = team.map(Some);
    Ok(Some(Compliance {
        profiles: tx.profile_status_counts(scope)?,
        disk_encryption: tx
            .disk_encryption_counts(scope)?
            .into_iter()
            .map(|(state, n)| (state.as_str().to_string(), n))
            .collect(),
    }))
}

/// What a team transfer did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Transferred {
    /// The team the devices are in now (`None`: no team, the global settings apply).
    pub team: Option<String>,
    pub moved: Vec<String>,
    /// Already in that team.
    pub unchanged: Vec<String>,
    /// Named but not in the store.
    pub unknown: Vec<String>,
}

/// Move the devices named by `targets` into `team` (`None`: out of any team), in one
/// transaction: each moved device is marked for reconciliation (the new team's profiles are
/// installed, the old team's removed) and the move is recorded. `Ok(Err(team))` when there is
/// no such team.
pub fn transfer(
    tx: &mut dyn Tx,
    team: Option<&str>,
    targets: &[String],
    actor: &str,
) -> Result<Result<Transferred, String>, StoreError> {
    if let Some(t) = team
        && !tx.teams()?.iter().any(|x| x.name == t)
    {
        return Ok(Err(t.to_string()));
    }
    let (ids, unknown) = resolve_devices(tx, targets)?;
    let mut out = Transferred {
        team: team.map(str::to_string),
        moved: Vec::new(),
        unchanged: Vec::new(),
        unknown: Vec::new(),
    };
    // A serial not enrolled yet may be an Apple Business Manager device: it enrolls into the
    // team, and the team's enrollment profile is assigned to it at the next ABM sync.
    for serial in unknown {
        match tx.abm_device(&serial)? {
            Some(d) if d.enrolled_udid.is_none() && !d.deleted => {
                if d.team.as_deref() == team {
                    out.unchanged.push(serial);
                    continue;
                }
                tx.set_abm_device_team(&serial, team)?;
                tx.record_activity(&NewActivity {
                    actor: actor.to_string(),
                    kind: "abm.team_transfer".into(),
                    device_id: None,
                    summary: format!(
                        "moved Apple Business Manager device {serial} (not enrolled yet) from {} to {}",
                        d.team.as_deref().unwrap_or("no team"),
                        team.unwrap_or("no team")
                    ),
                    details: serde_json::json!({ "serial": serial, "from": d.team, "to": team }),
                })?;
                out.moved.push(serial);
            }
            _ => out.unknown.push(serial),
        }
    }
    for id in ids {
        let from = tx.device_team(&id)?;
        if from.as_deref() == team {
            out.unchanged.push(id);
            continue;
        }
        tx.set_device_team(&id, team)?;
        tx.record_activity(&NewActivity {
            actor: actor.to_string(),
            kind: "device.team_transfer".into(),
            device_id: Some(id.clone()),
            summary: format!(
                "moved {id} from {} to {}",
                from.as_deref().unwrap_or("no team"),
                team.unwrap_or("no team")
            ),
            details: serde_json::json!({ "from": from, "to": team }),
        })?;
        out.moved.push(id);
    }
    Ok(Ok(out))
}

/// Queue `command` for the devices named by `targets`, record who did it, and push unless told
/// not to. One transaction for the queueing: all targets get it or none.
pub async fn send(
    store: &std::sync::Arc<dyn Store>,
    pushes: Option<&PushService>,
    command: &Command,
    targets: &[String],
    actor: &str,
) -> Result<Sent, StoreError> {
    let store2 = store.clone();
    let (c, t, a) = (command.clone(), targets.to_vec(), actor.to_string());
    let (queued, unknown) = tokio::task::spawn_blocking(move || queue(store2.as_ref(), &c, &t, &a))
        .await
        .map_err(|e| StoreError::Decode(e.to_string()))??;
    let push = match pushes {
        Some(p) if !queued.is_empty() => match p.push(&queued).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "queued, but could not push");
                Some(PushSummary {
                    requested: queued.len(),
                    certificate_problem: Some(e.to_string()),
                    ..Default::default()
                })
            }
        },
        Some(_) => None,
        None => {
            // `--no-push`: the devices get it at their next check-in; no `serve` pushes it.
            let (store, q) = (store.clone(), queued.clone());
            tokio::task::spawn_blocking(move || {
                store.write_rows(|tx| tx.clear_push_outbox(&q, Timestamp(i64::MAX)))
            })
            .await
            .map_err(|e| StoreError::Decode(e.to_string()))??;
            None
        }
    };
    Ok(Sent {
        command_uuid: command.uuid.clone(),
        request_type: command.request_type.clone(),
        queued,
        unknown,
        push,
    })
}

/// The queueing half of [`send`] (no push): for a CLI on a local store with no APNs access.
pub fn queue(
    store: &dyn Store,
    command: &Command,
    targets: &[String],
    actor: &str,
) -> Result<(Vec<String>, Vec<String>), StoreError> {
    // INSERT … SELECT … ON CONFLICT DO NOTHING: correct at READ COMMITTED, so a fan-out does
    // not conflict with the devices checking in meanwhile.
    store.write_rows(|tx| -> Result<_, StoreError> {
        let (ids, unknown) = resolve_devices(tx, targets)?;
        if ids.is_empty() {
            return Ok((Vec::new(), unknown));
        }
        let queued = tx.enqueue(
            &NewCommand {
                uuid: &command.uuid,
                request_type: &command.request_type,
                plist: &command.plist,
                created_by: actor,
            },
            &ids,
        )?;
        tx.record_activity(&NewActivity {
            actor: actor.to_string(),
            kind: "command.sent".into(),
            device_id: (queued.len() == 1).then(|| queued[0].clone()),
            summary: format!(
                "sent {} to {} device(s)",
                command.request_type,
                queued.len()
            ),
            details: serde_json::json!({
                "command_uuid": command.uuid, "request_type": command.request_type,
                "devices": queued.len(), "unknown": unknown,
            }),
        })?;
        Ok((queued, unknown))
    })
}

/// Activity-log entries matching the filter, the most recent `limit` (default 100), oldest
/// first; `None` when the filter names a device the store does not know.
pub fn activities(
    tx: &mut dyn Tx,
    filter: &api::ActivityFilter,
) -> Result<Option<Vec<crate::store::Activity>>, StoreError> {
    let device_id = match &filter.device {
        Some(d) => match tx.device(d)? {
            Some(dev) => Some(dev.id),
            None => return Ok(None),
        },
        None => None,
    };
    tx.activities(&crate::store::ActivityQuery {
        device_id,
        kind: filter.kind.clone(),
        since: filter.since.as_deref().and_then(Timestamp::parse_rfc3339),
        limit: Some(filter.limit.unwrap_or(100).min(10_000)),
        latest: true,
    })
    .map(Some)
}

/// A command's status on every device it was sent to.
pub fn status(store: &dyn Store, command_uuid: &str) -> Result<Vec<QueueEntry>, StoreError> {
    store.read(|tx| tx.command_entries(command_uuid))
}
