//! Profile assignment after a sync: each scope's enrollment profile (the team's
//! `macos_setup_assistant` JSON, else the global one, else mdmctl's defaults; `abm::profile`) is
//! defined with Apple when its content changed (`POST /profile`: a profile UUID is immutable, so
//! a change is a new profile and every serial of the scope is assigned again), then the due
//! serials are assigned (`PUT /profile/devices`, at most 1,000 per call).
//!
//! Every serial sent ends in a recorded state, so none is lost when the sync cursor moves on:
//! `SUCCESS` → assigned; `FAILED`, `NOT_ACCESSIBLE`, no answer for it, or a failed call → tried
//! again on the next run the first time and after 24 hours when it keeps failing (Apple's
//! guidance: fleetdm/fleet#14957, #37072); `THROTTLED` → after `retry_after_seconds`, else 24
//! hours. A 403 `T_C_NOT_SIGNED` or a rejected token stops the run and leaves the rest due.

use std::collections::BTreeMap;
use std::sync::Arc;

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::client::{DepClient, DepError};
use crate::store::{AbmDue, AbmProfile, AssignOutcome, NewActivity, Store, StoreError};
use crate::timestamp::Timestamp;

/// Serials per assignment call (Apple: "limit requests to 1000 devices at a time").
pub const BATCH: usize = 1000;
/// How long a serial that keeps failing waits.
pub const COOLDOWN_SECS: i64 = 24 * 3600;
/// Failed serials named in an activity at most.
const NAMED: usize = 100;
/// Due serials taken in one run at most.
const MAX_DUE: usize = 1_000_000;

/// Where the server's public URL is kept (`serve --url` records it), so `mdmctl abm sync` run
/// from elsewhere builds the same profile.
pub const SERVER_URL_KEY: &str = "server.url";

#[derive(Debug, thiserror::Error)]
pub enum AssignError {
    #[error(transparent)]
    Dep(#[from] DepError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot build the enrollment profile for {scope}: {reason}")]
    Build { scope: String, reason: String },
    #[error("Apple refused the enrollment profile for {scope}: {body}")]
    Refused { scope: String, body: String },
}

impl crate::diagnose::Diagnose for AssignError {
    fn hint(&self) -> Option<String> {
        match self {
            AssignError::Dep(e) => e.hint(),
            AssignError::Store(e) => e.hint(),
            AssignError::Build { .. } => Some(
                "run `mdmctl serve --url https://…` once against this store (it records its URL), or set `url` in the JSON named by `mdm.macos_setup.macos_setup_assistant`".into(),
            ),
            AssignError::Refused { .. } => Some(
                "fix the JSON named by `mdm.macos_setup.macos_setup_assistant` and `mdmctl apply` it".into(),
            ),
        }
    }

    fn unexpected(&self) -> bool {
        matches!(self, AssignError::Store(e) if e.unexpected())
    }
}

/// What one run did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AssignSummary {
    /// Scopes whose profile was defined (`null` for devices in no team) and the UUID Apple gave.
    pub defined: Vec<(Option<String>, String)>,
    pub calls: usize,
    pub assigned: usize,
    pub failed: usize,
    pub throttled: usize,
    pub not_accessible: usize,
    /// Serials Apple's answer did not mention (recorded as failed).
    pub unanswered: usize,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AssignAnswer {
    devices: BTreeMap<String, String>,
    retry_after_seconds: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DefineAnswer {
    profile_uuid: String,
}

fn scope_name(team: Option<&str>) -> String {
    team.map_or_else(|| "devices in no team".into(), |t| format!("team `{t}`"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Decode(e.to_string()))?
}

fn activity(kind: &str, summary: String, details: serde_json::Value) -> NewActivity {
    NewActivity {
        actor: "abm".into(),
        kind: kind.into(),
        device_id: None,
        summary,
        details,
    }
}

/// Define what changed and assign what is due. `server_url` is the server's public URL (else
/// the one recorded in the store).
pub async fn assign(
    client: &DepClient,
    store: &Arc<dyn Store>,
    server_url: Option<&str>,
) -> Result<AssignSummary, AssignError> {
    let s = store.clone();
    let (global, teams, defined, recorded_url) = blocking(move || {
        s.read(|tx| {
            Ok((
                tx.global_settings()?,
                tx.teams()?,
                tx.abm_profiles()?,
                tx.meta_get(SERVER_URL_KEY)?,
            ))
        })
    })
    .await?;
    let url = server_url.map(str::to_string).or(recorded_url);
    let global_json = global.and_then(|g| g.settings.setup_assistant);
    let team_json: BTreeMap<String, Option<String>> = teams
        .into_iter()
        .map(|t| (t.name, t.settings.setup_assistant))
        .collect();
    let defined: BTreeMap<Option<String>, AbmProfile> =
        defined.into_iter().map(|p| (p.team.clone(), p)).collect();
    let mut summary = AssignSummary::default();

    // The profile of a scope: a team that no longer exists takes the global one.
    let profile_for = |team: Option<&str>| -> Result<serde_json::Value, AssignError> {
        let own = team.and_then(|t| team_json.get(t)).cloned().flatten();
        super::profile::build(
            own.as_deref().or(global_json.as_deref()),
            url.as_deref(),
            team.filter(|t| team_json.contains_key(*t)),
        )
        .map_err(|reason| AssignError::Build {
            scope: scope_name(team),
            reason,
        })
    };

    // Scopes already defined whose content changed are defined again first: that makes their
    // devices due.
    let mut uuids: BTreeMap<Option<String>, String> = BTreeMap::new();
    for (team, old) in &defined {
        let Ok(body) = profile_for(team.as_deref()) else {
            continue;
        };
        let sha = crate::gitops::sha256_hex(body.to_string().as_bytes());
        if sha == old.sha256 {
            uuids.insert(team.clone(), old.profile_uuid.clone());
        } else {
            let uuid = define(client, store, team.as_deref(), &body, sha).await?;
            summary.defined.push((team.clone(), uuid.clone()));
            uuids.insert(team.clone(), uuid);
        }
    }

    let s = store.clone();
    let due = blocking(move || s.read(|tx| tx.abm_due(Timestamp::now(), MAX_DUE))).await?;
    let mut by_scope: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
    for AbmDue { serial, team } in due {
        by_scope.entry(team).or_default().push(serial);
    }
    let mut failed_named: Vec<(String, String)> = Vec::new();
    'scopes: for (team, serials) in by_scope {
        let uuid = match uuids.get(&team) {
            Some(u) => u.clone(),
            None => {
                let body = profile_for(team.as_deref())?;
                let sha = crate::gitops::sha256_hex(body.to_string().as_bytes());
                let uuid = define(client, store, team.as_deref(), &body, sha).await?;
                summary.defined.push((team.clone(), uuid.clone()));
                uuids.insert(team.clone(), uuid.clone());
                uuid
            }
        };
        for batch in serials.chunks(BATCH) {
            summary.calls += 1;
            let body = serde_json::json!({ "profile_uuid": uuid, "devices": batch });
            let answer = client
                .call::<AssignAnswer>(Method::PUT, "/profile/devices", Some(&body))
                .await;
            let now = Timestamp::now();
            let later = Timestamp(now.0 + COOLDOWN_SECS);
            let fail = |state: &'static str, detail: String, retry_at: Timestamp| AssignOutcome {
                state,
                profile_uuid: uuid.clone(),
                detail,
                retry_at: Some(retry_at),
                cooldown_until: Some(later),
            };
            let answer = match answer {
                Ok(a) => a,
                Err(e @ (DepError::TermsNotSigned | DepError::TokenRejected(_))) => {
                    return Err(e.into());
                }
                Err(e) => {
                    // No terminal answer: every serial of the batch is failed (and retried).
                    let outcome = fail("failed", format!("no answer: {e}"), now);
                    let (s, b) = (store.clone(), batch.to_vec());
                    blocking(move || s.write(|tx| tx.record_abm_assignments(&b, &outcome))).await?;
                    summary.failed += batch.len();
                    summary.unanswered += batch.len();
                    failed_named.extend(batch.iter().map(|s| (s.clone(), e.to_string())));
                    tracing::warn!(error = %e, serials = batch.len(), "ABM assignment call failed; the serials are retried");
                    // Apple is not answering: the rest stays due for the next run.
                    break 'scopes;
                }
            };
            let mut groups: BTreeMap<(&'static str, String), Vec<String>> = BTreeMap::new();
            for serial in batch {
                let (state, detail) = match answer.devices.get(serial).map(String::as_str) {
                    Some("SUCCESS") => ("assigned", "SUCCESS".to_string()),
                    Some("THROTTLED") => ("throttled", "THROTTLED".to_string()),
                    Some("NOT_ACCESSIBLE") => ("not_accessible", "NOT_ACCESSIBLE".to_string()),
                    Some("FAILED") => ("failed", "FAILED".to_string()),
                    Some(other) => ("failed", format!("unexpected answer `{other}`")),
                    None => ("failed", "no answer for this serial".to_string()),
                };
                match state {
                    "assigned" => summary.assigned += 1,
                    "throttled" => summary.throttled += 1,
                    "not_accessible" => summary.not_accessible += 1,
                    _ => {
                        summary.failed += 1;
                        if detail.starts_with("no answer") {
                            summary.unanswered += 1;
                        }
                    }
                }
                if state != "assigned" && failed_named.len() < NAMED {
                    failed_named.push((serial.clone(), detail.clone()));
                }
                groups
                    .entry((state, detail))
                    .or_default()
                    .push(serial.clone());
            }
            let throttle_until = Timestamp(
                now.0
                    + answer
                        .retry_after_seconds
                        .filter(|s| *s > 0)
                        .unwrap_or(COOLDOWN_SECS),
            );
            let outcomes: Vec<(Vec<String>, AssignOutcome)> = groups
                .into_iter()
                .map(|((state, detail), serials)| {
                    let o = match state {
                        "assigned" => AssignOutcome {
                            state,
                            profile_uuid: uuid.clone(),
                            detail,
                            retry_at: None,
                            cooldown_until: None,
                        },
                        "throttled" => AssignOutcome {
                            cooldown_until: Some(throttle_until),
                            ..fail(state, detail, throttle_until)
                        },
                        "not_accessible" => fail(state, detail, later),
                        _ => fail(state, detail, now),
                    };
                    (serials, o)
                })
                .collect();
            let s = store.clone();
            blocking(move || {
                s.write(|tx| {
                    for (serials, o) in &outcomes {
                        tx.record_abm_assignments(serials, o)?;
                    }
                    Ok(())
                })
            })
            .await?;
        }
    }

    if summary.calls > 0 || !summary.defined.is_empty() {
        let sum = summary.clone();
        let s = store.clone();
        blocking(move || {
            s.write(|tx| {
                tx.record_activity(&activity(
                    "abm.assign",
                    format!(
                        "assigned enrollment profiles in Apple Business Manager: {} assigned, {} failed, {} throttled, {} not accessible ({} call(s))",
                        sum.assigned, sum.failed, sum.throttled, sum.not_accessible, sum.calls
                    ),
                    serde_json::json!({
                        "summary": sum,
                        "not_assigned": failed_named
                            .iter()
                            .map(|(s, d)| serde_json::json!({ "serial": s, "detail": d }))
                            .collect::<Vec<_>>(),
                    }),
                ))
            })
        })
        .await?;
    }
    Ok(summary)
}

/// `POST /profile`; records the UUID (making the scope's devices due) and an activity.
async fn define(
    client: &DepClient,
    store: &Arc<dyn Store>,
    team: Option<&str>,
    body: &serde_json::Value,
    sha256: String,
) -> Result<String, AssignError> {
    let answer: DefineAnswer = match client.call(Method::POST, "/profile", Some(body)).await {
        Ok(a) => a,
        Err(DepError::Http { status: 400, body }) => {
            return Err(AssignError::Refused {
                scope: scope_name(team),
                body,
            });
        }
        Err(e) => return Err(e.into()),
    };
    if answer.profile_uuid.is_empty() {
        return Err(DepError::Decode {
            path: "/profile".into(),
            reason: "no profile_uuid in the answer".into(),
        }
        .into());
    }
    let profile = AbmProfile {
        team: team.map(str::to_string),
        sha256,
        profile_uuid: answer.profile_uuid.clone(),
        defined_at: Timestamp::now(),
    };
    let scope = scope_name(team);
    let s = store.clone();
    blocking(move || {
        s.write(|tx| {
            tx.put_abm_profile(&profile)?;
            tx.record_activity(&activity(
                "abm.profile_defined",
                format!(
                    "defined the enrollment profile for {scope} in Apple Business Manager ({})",
                    profile.profile_uuid
                ),
                serde_json::json!({ "team": profile.team, "profile_uuid": profile.profile_uuid, "sha256": profile.sha256 }),
            ))
        })
    })
    .await?;
    Ok(answer.profile_uuid)
}
