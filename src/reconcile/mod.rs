//! Profile delivery: the reconciler that makes each device's profiles match desired state.
//!
//! Owns: comparing a device's desired profiles (its team's, or the global ones; mdmctl's own
//! FileVault and Nudge profiles included, declarations excluded) with its
//! [`DeviceProfile`] rows and queueing InstallProfile / RemoveProfile plus one ProfileList to
//! verify ([`reconcile_device`]); reading the answers back into the rows ([`on_result`]):
//! acknowledged installs are `verifying` until a ProfileList shows the identifier with the
//! desired PayloadUUID, errors retry with backoff up to a cap and then `failed` with Apple's
//! error chain; profiles mdmctl did not install are listed as `unmanaged` and never touched.
//! [`tick`] is one incremental pass for `serve`: the devices marked dirty (apply, team
//! transfer, enrollment, first contact after cutover) and those with a retry due, then a push
//! to the devices that got commands. No HTTP here.
//!
//! FileVault key escrow, which follows the FileVault profile, is [`filevault`]; releasing a Mac
//! from Setup Assistant once its profiles are verified is [`release`]; which devices
//! get the update enforcement (Nudge or the declaration) and the DDM declaration set is
//! [`declarations`]: a device whose set changed gets a DeclarativeManagement command.

pub mod declarations;
pub mod filevault;
pub mod release;
pub mod renewal;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::apple::command::named;
use crate::push::PushService;
use crate::store::{
    DesiredProfile, DeviceProfile, NewActivity, NewCommand, ProfileKind, ProfileState, QueueStatus,
    ReconcileTarget, Store, StoreError, Tx,
};
use crate::timestamp::Timestamp;

/// Who the reconciler's commands are created by.
pub const ACTOR: &str = "reconcile";

/// How the reconciler runs.
#[derive(Clone, Debug)]
pub struct Policy {
    /// How often `serve` looks for dirty devices and due retries.
    pub interval: Duration,
    /// Wait before each retry of a failed install; after `backoff.len()` retries the profile
    /// is `failed`.
    pub backoff: Vec<Duration>,
    /// Devices per pass.
    pub batch: u32,
    /// FileVault: how long to wait before asking SecurityInfo again while someone must act (the
    /// user must log out, the key cannot be escrowed) or after an error.
    pub filevault_recheck: Duration,
    /// FileVault: how often to ask SecurityInfo of a device whose key is escrowed (the user may
    /// have rotated it).
    pub filevault_reverify: Duration,
    /// Identity renewal for migrated devices; `None`: off.
    pub renewal: Option<renewal::RenewalPolicy>,
    /// How often devices under macOS update enforcement are asked for DeviceInformation (their
    /// OS version decides what they get).
    pub facts_interval: Duration,
    /// How often a pass also looks for daily work (identity renewals due, DeviceInformation
    /// due): those queries scan the devices, so not every `interval`.
    pub housekeeping: Duration,
    /// How long a Mac waits in Setup Assistant for its profiles before it is released anyway
    /// (`--release-after`).
    pub release_after: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            backoff: vec![
                Duration::from_secs(60),
                Duration::from_secs(300),
                Duration::from_secs(1800),
            ],
            batch: 2000,
            filevault_recheck: Duration::from_secs(3600),
            filevault_reverify: Duration::from_secs(24 * 3600),
            renewal: None,
            facts_interval: Duration::from_secs(24 * 3600),
            housekeeping: Duration::from_secs(60),
            release_after: release::DEFAULT_AFTER,
        }
    }
}

/// What reconciling one device queued.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceOutcome {
    pub installs: usize,
    pub removals: usize,
    /// Told to sync its declarations.
    pub declarations: bool,
    /// The device channel to push, when something was queued.
    pub push: Option<String>,
}

/// Whether a desired profile goes to this device as InstallProfile (declarations go by DDM).
fn deliverable(p: &DesiredProfile, os_version: Option<&str>) -> bool {
    p.kind != ProfileKind::Ddm && declarations::applies(p, os_version)
}

/// Compare one device's desired profiles with its rows and queue what differs: InstallProfile
/// for new or changed profiles (and due retries), RemoveProfile for profiles mdmctl installed
/// that are no longer desired, then one ProfileList to verify. Clears the device's dirty mark.
/// A device without an enabled device channel gets nothing (its TokenUpdate marks it again).
pub fn reconcile_device(tx: &mut dyn Tx, device_id: &str) -> Result<DeviceOutcome, StoreError> {
    Ok(
        reconcile_batch(tx, std::slice::from_ref(&device_id.to_string()))?
            .pop()
            .unwrap_or_default(),
    )
}

/// The device channel commands go to: enabled, with a push token.
pub(crate) fn device_channel(
    tx: &mut dyn Tx,
    device_id: &str,
) -> Result<Option<String>, StoreError> {
    Ok(tx
        .enrollments_of(device_id)?
        .into_iter()
        .find(|e| e.kind == "Device" && e.enabled && e.token.is_some())
        .map(|e| e.id))
}

/// What a batch will queue: one command per distinct profile (or removal), sent to every
/// channel that needs it, and one ProfileList for them all.
#[derive(Default)]
struct Queued {
    /// By SHA-256 of the content.
    installs: BTreeMap<String, Group>,
    /// By identifier.
    removals: BTreeMap<String, Group>,
    verify: Vec<String>,
    /// Channels told to sync their declarations.
    declarations: Vec<String>,
    /// Channels asked for DeviceInformation (their OS version decides what they get), and
    /// their devices.
    facts: Vec<String>,
    facts_devices: Vec<String>,
    /// `verifying` rows whose confirmation is overdue (asked again; their time reset).
    reverify: Vec<DeviceProfile>,
    /// Devices FileVault is enforced on (tracked from now on, if not already).
    filevault: Vec<String>,
}

/// One command to queue: its profile (for installs), the rows to write with its UUID, and the
/// channels it goes to.
#[derive(Default)]
struct Group {
    content: Vec<u8>,
    rows: Vec<DeviceProfile>,
    channels: Vec<String>,
}

/// Queue one stored command (created by the reconciler) to these channels.
pub(crate) fn enqueue_one(
    tx: &mut dyn Tx,
    c: &crate::apple::command::Command,
    channels: &[String],
) -> Result<(), StoreError> {
    tx.enqueue(
        &NewCommand {
            uuid: &c.uuid,
            request_type: &c.request_type,
            plist: &c.plist,
            created_by: ACTOR,
        },
        channels,
    )?;
    Ok(())
}

/// [`reconcile_device`] for many devices in one transaction: each distinct InstallProfile /
/// RemoveProfile is stored once and queued to every device that needs it, as is the ProfileList
/// that follows. Outcomes are in the order of `device_ids`.
pub fn reconcile_batch(
    tx: &mut dyn Tx,
    device_ids: &[String],
) -> Result<Vec<DeviceOutcome>, StoreError> {
    let now = Timestamp::now();
    let mut q = Queued::default();
    let mut outcomes = Vec::with_capacity(device_ids.len());
    tx.clear_dirty(device_ids)?;
    let tokens_sent: BTreeMap<String, String> = tx
        .declarations_tokens_sent(device_ids)?
        .into_iter()
        .collect();
    let mut desired_of: BTreeMap<String, Vec<DesiredProfile>> = tx
        .devices_desired_profiles(device_ids)?
        .into_iter()
        .collect();
    let targets: BTreeMap<String, ReconcileTarget> = tx
        .reconcile_targets(device_ids)?
        .into_iter()
        .map(|t| (t.device_id.clone(), t))
        .collect();
    let mut rows_of: BTreeMap<String, BTreeMap<String, DeviceProfile>> = BTreeMap::new();
    for r in tx.devices_profiles(device_ids)? {
        rows_of
            .entry(r.device_id.clone())
            .or_default()
            .insert(r.identifier.clone(), r);
    }
    for device_id in device_ids {
        let mut out = DeviceOutcome::default();
        let Some(ReconcileTarget {
            os_version,
            channel: Some(channel),
            ..
        }) = targets.get(device_id)
        else {
            outcomes.push(out);
            continue;
        };
        let channel = channel.clone();
        let all_desired = desired_of.remove(device_id).unwrap_or_default();
        let os = os_version.as_deref();
        if os.is_none()
            && all_desired
                .iter()
                .any(|p| matches!(p.kind, ProfileKind::Nudge | ProfileKind::Ddm))
        {
            q.facts.push(channel.clone());
            q.facts_devices.push(device_id.clone());
            out.push = Some(channel.clone());
        }
        let decl_token = declarations::token(&declarations::declarations_from(&all_desired, os));
        let sent = tokens_sent.get(device_id).map(String::as_str);
        if sent.unwrap_or(declarations::EMPTY_TOKEN) != decl_token {
            tx.set_declarations_token_sent(device_id, &decl_token, now)?;
            q.declarations.push(channel.clone());
            out.declarations = true;
            out.push = Some(channel.clone());
        }
        let desired: Vec<DesiredProfile> = all_desired
            .into_iter()
            .filter(|p| deliverable(p, os))
            .collect();
        if desired.iter().any(|p| p.kind == ProfileKind::FileVault) {
            q.filevault.push(device_id.clone());
        }
        let rows = rows_of.remove(device_id).unwrap_or_default();

        for p in desired.iter() {
            let attempts = match rows.get(&p.identifier) {
                Some(r) if r.ours && r.sha256.as_deref() == Some(p.sha256.as_str()) => {
                    let due =
                        r.command_uuid.is_none() && r.next_attempt_at.is_none_or(|t| t <= now);
                    match r.status {
                        ProfileState::Pending if due => r.attempts,
                        ProfileState::Removing => 0,
                        _ => continue,
                    }
                }
                // New, changed, or taking over an identifier another MDM installed.
                _ => 0,
            };
            let entry = q.installs.entry(p.sha256.clone()).or_insert_with(|| Group {
                content: p.content.clone(),
                ..Default::default()
            });
            entry.rows.push(DeviceProfile {
                device_id: device_id.clone(),
                identifier: p.identifier.clone(),
                name: Some(p.name.clone()),
                sha256: Some(p.sha256.clone()),
                payload_uuid: None,
                status: ProfileState::Pending,
                ours: true,
                attempts,
                next_attempt_at: None,
                command_uuid: None,
                error_chain: rows.get(&p.identifier).and_then(|r| r.error_chain.clone()),
                updated_at: now,
            });
            entry.channels.push(channel.clone());
            out.installs += 1;
        }

        let wanted: BTreeSet<&str> = desired.iter().map(|p| p.identifier.as_str()).collect();
        for r in rows.values() {
            if wanted.contains(r.identifier.as_str())
                || !r.ours
                || r.status == ProfileState::Removing
            {
                continue;
            }
            if r.status == ProfileState::Failed {
                // It never got installed: nothing to remove.
                tx.delete_device_profile(device_id, &r.identifier)?;
                continue;
            }
            let mut row = r.clone();
            row.status = ProfileState::Removing;
            row.next_attempt_at = None;
            row.updated_at = now;
            let entry = q.removals.entry(r.identifier.clone()).or_default();
            entry.rows.push(row);
            entry.channels.push(channel.clone());
            out.removals += 1;
        }

        // Installed but never confirmed (the ProfileList was lost or failed): ask again.
        let stale: Vec<DeviceProfile> = rows
            .values()
            .filter(|r| {
                r.status == ProfileState::Verifying && r.updated_at.0 <= now.0 - VERIFY_AGAIN_AFTER
            })
            .cloned()
            .collect();
        if out.installs + out.removals > 0 || !stale.is_empty() {
            for mut r in stale {
                r.updated_at = now;
                q.reverify.push(r);
            }
            q.verify.push(channel.clone());
            out.push = Some(channel);
        }
        outcomes.push(out);
    }

    // Queue order per device: installs and removals, then the ProfileList that verifies them.
    let mut rows = std::mem::take(&mut q.reverify);
    for g in q.installs.into_values() {
        let payload_uuid = crate::apple::profile::check_profile(&g.content)
            .ok()
            .map(|x| x.uuid);
        let c = named::install_profile(g.content);
        enqueue_one(tx, &c, &g.channels)?;
        for mut row in g.rows {
            row.payload_uuid = payload_uuid.clone();
            row.command_uuid = Some(c.uuid.clone());
            rows.push(row);
        }
    }
    for (identifier, g) in q.removals {
        let c = named::remove_profile(&identifier);
        enqueue_one(tx, &c, &g.channels)?;
        for mut row in g.rows {
            row.command_uuid = Some(c.uuid.clone());
            rows.push(row);
        }
    }
    tx.put_device_profiles(&rows)?;
    if !q.verify.is_empty() {
        enqueue_one(tx, &named::profile_list(false), &q.verify)?;
    }
    tx.track_disk_encryption(&q.filevault, now)?;
    if !q.declarations.is_empty() {
        enqueue_one(tx, &named::declarative_management(), &q.declarations)?;
    }
    if !q.facts.is_empty() {
        enqueue_one(
            tx,
            &named::device_information(named::DEFAULT_QUERIES),
            &q.facts,
        )?;
        tx.mark_facts_requested(&q.facts_devices, now)?;
    }
    Ok(outcomes)
}

/// A device's answer to one command, as the command channel recorded it.
pub struct Answer<'a> {
    pub command_uuid: &'a str,
    pub request_type: &'a str,
    pub status: QueueStatus,
    /// The raw report (ProfileList answers carry the list).
    pub body: &'a [u8],
    /// Apple's ErrorChain, for errors.
    pub error_chain: Option<&'a serde_json::Value>,
}

/// Read a device's answer to a profile command into its rows (inside the transaction that
/// records the result). Other request types are ignored.
pub fn on_result(
    tx: &mut dyn Tx,
    policy: &Policy,
    device_id: &str,
    answer: &Answer<'_>,
) -> Result<(), StoreError> {
    let Answer {
        command_uuid,
        request_type,
        status,
        body,
        error_chain,
    } = *answer;
    if status == QueueStatus::NotNow {
        return Ok(());
    }
    let now = Timestamp::now();
    match request_type {
        "InstallProfile" => {
            if renewal::on_result(tx, device_id, answer)? {
                return Ok(());
            }
            let Some(mut row) = tx.device_profile_by_command(device_id, command_uuid)? else {
                return Ok(());
            };
            row.command_uuid = None;
            row.updated_at = now;
            if status == QueueStatus::Acknowledged {
                row.status = ProfileState::Verifying;
                row.error_chain = None;
                tx.put_device_profile(&row)?;
            } else {
                let chain = error_chain.cloned().unwrap_or_else(|| {
                    serde_json::json!([{ "LocalizedDescription": format!("the device answered {}", status.as_str()) }])
                });
                failed_attempt(tx, policy, row, chain, now)?;
            }
        }
        "RemoveProfile" => {
            if let Some(row) = tx.device_profile_by_command(device_id, command_uuid)? {
                // Removed, or not installed anyway: either way it is gone.
                tx.delete_device_profile(device_id, &row.identifier)?;
                tx.record_activity(&NewActivity {
                    actor: ACTOR.into(),
                    kind: "profile.removed".into(),
                    device_id: Some(device_id.to_string()),
                    summary: format!("removed `{}` from {device_id}", row.identifier),
                    details: serde_json::json!({ "identifier": row.identifier, "status": status.as_str() }),
                })?;
            }
        }
        "ProfileList" if status == QueueStatus::Acknowledged => {
            verify(tx, policy, device_id, body, now)?;
        }
        "SecurityInfo" | "RotateFileVaultKey" => {
            filevault::on_result(tx, policy, device_id, answer)?;
        }
        _ => {}
    }
    Ok(())
}

/// One failed attempt: retry after the next backoff step, or give up at the cap.
fn failed_attempt(
    tx: &mut dyn Tx,
    policy: &Policy,
    mut row: DeviceProfile,
    chain: serde_json::Value,
    now: Timestamp,
) -> Result<(), StoreError> {
    row.attempts += 1;
    row.error_chain = Some(chain.clone());
    row.command_uuid = None;
    row.updated_at = now;
    let retry = usize::try_from(row.attempts - 1)
        .ok()
        .and_then(|i| policy.backoff.get(i));
    match retry {
        Some(wait) => {
            row.status = ProfileState::Pending;
            row.next_attempt_at = Some(Timestamp(
                now.0 + i64::try_from(wait.as_secs()).unwrap_or(i64::MAX / 2),
            ));
        }
        None => {
            row.status = ProfileState::Failed;
            row.next_attempt_at = None;
            warn!(device = %row.device_id, profile = %row.identifier, attempts = row.attempts, "profile install failed; giving up");
            tx.record_activity(&NewActivity {
                actor: ACTOR.into(),
                kind: "profile.failed".into(),
                device_id: Some(row.device_id.clone()),
                summary: format!(
                    "`{}` could not be installed on {} after {} attempts",
                    row.identifier, row.device_id, row.attempts
                ),
                details: serde_json::json!({ "identifier": row.identifier, "error_chain": chain }),
            })?;
        }
    }
    tx.put_device_profile(&row)
}

/// A profile as a device's ProfileList reports it.
struct Listed {
    uuid: Option<String>,
    name: Option<String>,
}

fn parse_profile_list(body: &[u8]) -> Option<BTreeMap<String, Listed>> {
    let top: plist::Value = crate::apple::plist_in::from_bytes(body).ok()?;
    let list = top.as_dictionary()?.get("ProfileList")?.as_array()?;
    let mut out = BTreeMap::new();
    for item in list {
        let Some(d) = item.as_dictionary() else {
            continue;
        };
        let s = |k: &str| d.get(k).and_then(|v| v.as_string()).map(str::to_string);
        if let Some(id) = s("PayloadIdentifier") {
            out.insert(
                id,
                Listed {
                    uuid: s("PayloadUUID"),
                    name: s("PayloadDisplayName"),
                },
            );
        }
    }
    Some(out)
}

/// Compare a ProfileList with the device's rows: installs show up (`verified`), missing ones
/// go back to `pending`, profiles we did not install are recorded as `unmanaged`.
fn verify(
    tx: &mut dyn Tx,
    policy: &Policy,
    device_id: &str,
    body: &[u8],
    now: Timestamp,
) -> Result<(), StoreError> {
    let Some(listed) = parse_profile_list(body) else {
        warn!(
            device = device_id,
            "a ProfileList answer without a readable list; ignored"
        );
        return Ok(());
    };
    let rows = tx.device_profiles(device_id)?;
    let known: BTreeSet<String> = rows.iter().map(|r| r.identifier.clone()).collect();
    for mut row in rows {
        let seen = listed.get(&row.identifier);
        match row.status {
            ProfileState::Verifying => match seen {
                Some(l) if row.payload_uuid.is_none() || l.uuid == row.payload_uuid => {
                    row.status = ProfileState::Verified;
                    row.attempts = 0;
                    row.error_chain = None;
                    row.updated_at = now;
                    info!(device = device_id, profile = %row.identifier, "profile verified");
                    tx.put_device_profile(&row)?;
                    if row.identifier == crate::apple::profile::FILEVAULT_ID {
                        filevault::profile_verified(tx, device_id, now)?;
                    }
                }
                _ => {
                    let chain = serde_json::json!([{
                        "LocalizedDescription": match seen {
                            Some(_) => "the device lists the profile with another PayloadUUID after installing it",
                            None => "the device does not list the profile after installing it",
                        }
                    }]);
                    failed_attempt(tx, policy, row, chain, now)?;
                }
            },
            // Removed on the device behind our back: install it again.
            ProfileState::Verified if seen.is_none() => {
                row.status = ProfileState::Pending;
                row.next_attempt_at = Some(now);
                row.updated_at = now;
                tx.put_device_profile(&row)?;
            }
            ProfileState::Unmanaged => match seen {
                None => {
                    tx.delete_device_profile(device_id, &row.identifier)?;
                }
                Some(l) => {
                    row.payload_uuid = l.uuid.clone();
                    row.name = l.name.clone();
                    row.updated_at = now;
                    tx.put_device_profile(&row)?;
                }
            },
            _ => {}
        }
    }
    for (id, l) in listed {
        if known.contains(&id) {
            continue;
        }
        tx.put_device_profile(&DeviceProfile {
            device_id: device_id.to_string(),
            identifier: id,
            name: l.name,
            sha256: None,
            payload_uuid: l.uuid,
            status: ProfileState::Unmanaged,
            ours: false,
            attempts: 0,
            next_attempt_at: None,
            command_uuid: None,
            error_chain: None,
            updated_at: now,
        })?;
    }
    Ok(())
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TickSummary {
    pub devices: usize,
    pub installs: usize,
    pub removals: usize,
    /// Devices told to sync their declarations.
    pub declarations: usize,
    /// SecurityInfo asked for FileVault keys.
    pub filevault_checks: usize,
    /// Identity renewals started.
    pub renewals: usize,
    /// Devices asked for DeviceInformation (macOS update enforcement).
    pub facts: usize,
    /// Devices released from Setup Assistant (DeviceConfigured).
    pub released: usize,
    pub pushed: usize,
}

/// Ask devices under macOS update enforcement that were not asked within `interval` for
/// DeviceInformation (one stored command for all); returns the channels to push.
fn ask_facts(tx: &mut dyn Tx, interval: Duration, limit: u32) -> Result<Vec<String>, StoreError> {
    let now = Timestamp::now();
    let before = Timestamp(now.0 - i64::try_from(interval.as_secs()).unwrap_or(i64::MAX / 4));
    let due = tx.devices_due_for_facts(before, limit)?;
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let (devices, channels): (Vec<String>, Vec<String>) = due.into_iter().unzip();
    enqueue_one(
        tx,
        &named::device_information(named::DEFAULT_QUERIES),
        &channels,
    )?;
    tx.mark_facts_requested(&devices, now)?;
    Ok(channels)
}

/// Seconds after which a profile still `verifying` is checked with another ProfileList.
pub const VERIFY_AGAIN_AFTER: i64 = 600;

/// Batches per [`tick`].
const MAX_ROUNDS: usize = 64;

/// Devices per transaction when reconciling many.
const DEVICES_PER_TX: usize = 200;

/// Reconcile these devices, [`DEVICES_PER_TX`] to a transaction (a transaction that fails is
/// redone one device at a time, so one bad device holds up no other); returns the channels to
/// push.
pub fn reconcile_devices(
    store: &dyn Store,
    device_ids: &[String],
) -> Result<(TickSummary, Vec<String>), StoreError> {
    let mut summary = TickSummary::default();
    let mut push = Vec::new();
    let mut add = |outcomes: Vec<DeviceOutcome>| {
        for o in outcomes {
            summary.devices += 1;
            summary.installs += o.installs;
            summary.removals += o.removals;
            summary.declarations += usize::from(o.declarations);
            push.extend(o.push);
        }
    };
    for chunk in device_ids.chunks(DEVICES_PER_TX) {
        let together = store.write(|tx| reconcile_batch(tx, chunk));
        match together {
            Ok(outcomes) => add(outcomes),
            Err(e) if chunk.len() > 1 => {
                warn!(error = %e, devices = chunk.len(), "reconciling a batch failed; one device at a time");
                for id in chunk {
                    match store.write(|tx| reconcile_device(tx, id)) {
                        Ok(o) => add(vec![o]),
                        Err(e) => warn!(device = %id, error = %e, "reconciling a device failed"),
                    }
                }
            }
            Err(e) => warn!(device = %chunk[0], error = %e, "reconciling a device failed"),
        }
    }
    Ok((summary, push))
}

/// The `reconcile` job's pass: dirty devices and due retries, `policy.batch` devices at a time
/// (each batch pushed as soon as it is queued) until no device is left marked, and the
/// FileVault checks due. With several instances on one store, only the holder of the job's
/// lease runs it (`server::jobs`).
pub async fn tick(
    store: Arc<dyn Store>,
    pushes: &PushService,
    policy: &Policy,
) -> Result<TickSummary, StoreError> {
    let batch = policy.batch.max(1);
    let release_after = policy.release_after;
    let mut total = TickSummary::default();
    let mut first = true;
    // Bounded, so devices that keep failing cannot hold the loop.
    for _ in 0..MAX_ROUNDS {
        let work = store.clone();
        let with_retries = first;
        let (found, summary, push) = tokio::task::spawn_blocking(move || {
            let (ids, dirty) = work.read(|tx| -> Result<(Vec<String>, usize), StoreError> {
                let mut ids = tx.dirty_devices(batch)?;
                let dirty = ids.len();
                if with_retries {
                    let now = Timestamp::now();
                    ids.extend(tx.due_retries(
                        now,
                        Timestamp(now.0 - VERIFY_AGAIN_AFTER),
                        batch,
                    )?);
                    ids.sort();
                    ids.dedup();
                }
                Ok((ids, dirty))
            })?;
            let (mut summary, mut push) = if ids.is_empty() {
                (TickSummary::default(), Vec::new())
            } else {
                reconcile_devices(work.as_ref(), &ids)?
            };
            if with_retries {
                let due = work.read(|tx| tx.due_disk_encryption_checks(Timestamp::now(), batch))?;
                if !due.is_empty() {
                    let asked = work.write(|tx| filevault::queue_checks(tx, &due))?;
                    summary.filevault_checks += asked.len();
                    push.extend(asked);
                }
                let released =
                    work.write(|tx| release::release_due(tx, Timestamp::now(), release_after))?;
                summary.released += released.len();
                push.extend(released);
            }
            Ok::<_, StoreError>((dirty, summary, push))
        })
        .await
        .map_err(|e| StoreError::Decode(format!("reconciler task failed: {e}")))??;
        first = false;
        total.devices += summary.devices;
        total.installs += summary.installs;
        total.removals += summary.removals;
        total.declarations += summary.declarations;
        total.filevault_checks += summary.filevault_checks;
        total.released += summary.released;
        if !push.is_empty() {
            info!(
                devices = summary.devices,
                installs = summary.installs,
                removals = summary.removals,
                declarations = summary.declarations,
                "profiles queued"
            );
            total.pushed += push_queued(pushes, &push, "profiles").await;
        }
        // A full batch of marked devices: more may be waiting.
        if found < batch as usize {
            break;
        }
    }
    Ok(total)
}

/// The `renewals` job's pass: migrated identities nearing expiry get their renewal (when
/// `policy.renewal` is set), and are pushed.
pub async fn renew_due(
    store: Arc<dyn Store>,
    pushes: &PushService,
    policy: &Policy,
) -> Result<TickSummary, StoreError> {
    let Some(r) = policy.renewal.clone() else {
        return Ok(TickSummary::default());
    };
    let sent = tokio::task::spawn_blocking(move || store.write(|tx| renewal::queue_due(tx, &r)))
        .await
        .map_err(|e| StoreError::Decode(format!("renewal task failed: {e}")))??;
    let pushed = push_queued(pushes, &sent, "identity renewals").await;
    Ok(TickSummary {
        renewals: sent.len(),
        pushed,
        ..Default::default()
    })
}

/// The `device-facts` job's pass: devices under macOS update enforcement not asked within
/// `policy.facts_interval` get DeviceInformation, and are pushed.
pub async fn ask_facts_due(
    store: Arc<dyn Store>,
    pushes: &PushService,
    policy: &Policy,
) -> Result<TickSummary, StoreError> {
    let (interval, batch) = (policy.facts_interval, policy.batch.max(1));
    let asked =
        tokio::task::spawn_blocking(move || store.write(|tx| ask_facts(tx, interval, batch)))
            .await
            .map_err(|e| StoreError::Decode(format!("device facts task failed: {e}")))??;
    let pushed = push_queued(pushes, &asked, "DeviceInformation").await;
    Ok(TickSummary {
        facts: asked.len(),
        pushed,
        ..Default::default()
    })
}

/// Push the channels a pass queued commands for; how many pushes were requested.
async fn push_queued(pushes: &PushService, channels: &[String], what: &str) -> usize {
    if channels.is_empty() {
        return 0;
    }
    match pushes.push(channels).await {
        Ok(p) => p.requested,
        Err(e) => {
            warn!(error = %e, what, "push after queueing failed; devices get their commands on their next check-in");
            0
        }
    }
}
