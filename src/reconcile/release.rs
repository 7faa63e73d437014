//! Release from Setup Assistant: a Mac enrolled automatically with `await_device_configured`
//! waits at "Remote Management" until the server sends `DeviceConfigured`. mdmctl sends it once
//! every profile the device should have (its team's, mdmctl's own FileVault and Nudge ones
//! included; declarations follow later by DDM) is verified by a ProfileList, or has failed for
//! good, so the user meets a configured Mac. A Mac still waiting after `after` is released
//! anyway and reported (an activity naming the profiles still pending), never left on that
//! screen (Fleet's fleetdm/fleet#18160, #28962).

use std::collections::BTreeMap;
use std::time::Duration;

use super::{ACTOR, deliverable, device_channel, enqueue_one};
use crate::apple::command::named;
use crate::store::{NewActivity, ProfileState, StoreError, Tx};
use crate::timestamp::Timestamp;

/// How long a Mac may wait in Setup Assistant for its profiles by default.
pub const DEFAULT_AFTER: Duration = Duration::from_secs(15 * 60);

/// Release the devices whose profiles are settled, or whose wait ran out; the channels to push.
pub fn release_due(
    tx: &mut dyn Tx,
    now: Timestamp,
    after: Duration,
) -> Result<Vec<String>, StoreError> {
    let limit = i64::try_from(after.as_secs()).unwrap_or(i64::MAX);
    let mut push = Vec::new();
    for (device_id, since) in tx.awaiting_configuration()? {
        let os = tx.device(&device_id)?.and_then(|d| d.os_version);
        let desired: Vec<_> = tx
            .device_desired_profiles(&device_id)?
            .into_iter()
            .filter(|p| deliverable(p, os.as_deref()))
            .collect();
        let rows: BTreeMap<String, (ProfileState, Option<String>)> = tx
            .device_profiles(&device_id)?
            .into_iter()
            .map(|r| (r.identifier, (r.status, r.sha256)))
            .collect();
        let mut pending = Vec::new();
        let mut failed = Vec::new();
        for p in &desired {
            match rows.get(&p.identifier) {
                Some((ProfileState::Verified, sha)) if sha.as_deref() == Some(&p.sha256) => {}
                Some((ProfileState::Failed, _)) => failed.push(p.identifier.clone()),
                _ => pending.push(p.identifier.clone()),
            }
        }
        let waited = now.0 - since.0;
        let timed_out = waited >= limit;
        if !pending.is_empty() && !timed_out {
            continue;
        }
        let Some(channel) = device_channel(tx, &device_id)? else {
            continue;
        };
        enqueue_one(
            tx,
            &named::device_configured(),
            std::slice::from_ref(&channel),
        )?;
        tx.set_awaiting_configuration(&device_id, None)?;
        let verified = desired.len() - pending.len() - failed.len();
        let (kind, summary) = if pending.is_empty() && failed.is_empty() {
            (
                "device.released",
                format!(
                    "released {device_id} from Setup Assistant after {waited} s: its {verified} profile(s) are verified"
                ),
            )
        } else if pending.is_empty() {
            (
                "device.released",
                format!(
                    "released {device_id} from Setup Assistant after {waited} s: {verified} profile(s) verified, {} failed ({})",
                    failed.len(),
                    failed.join(", ")
                ),
            )
        } else {
            (
                "device.released_incomplete",
                format!(
                    "released {device_id} from Setup Assistant after waiting {waited} s (the limit): {} profile(s) still not verified ({})",
                    pending.len(),
                    pending.join(", ")
                ),
            )
        };
        if pending.is_empty() {
            tracing::info!(device = %device_id, waited, "released from Setup Assistant");
        } else {
            tracing::warn!(device = %device_id, waited, pending = pending.len(), "released from Setup Assistant before its profiles were verified");
        }
        tx.record_activity(&NewActivity {
            actor: ACTOR.into(),
            kind: kind.into(),
            device_id: Some(device_id.clone()),
            summary,
            details: serde_json::json!({
                "waited_seconds": waited, "verified": verified, "failed": failed,
                "not_verified": pending,
            }),
        })?;
        push.push(channel);
    }
    Ok(push)
}
