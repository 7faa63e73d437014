//! Prometheus metrics for `serve` (`/metrics`, text format by `prometheus-client`).
//!
//! Owns two kinds of figures. Counters kept by this process since it started (check-ins by
//! message and outcome, refused identities by reason, command results by status, pushes by
//! APNs outcome), recorded by the server and the push service through the functions here;
//! with several instances, Prometheus sums them. Gauges read from the store at each scrape,
//! the same for every instance (open commands, the reconciler's backlog, channels waiting for
//! a push, devices migrated and not yet seen, days until each certificate expires, each
//! background job's last run). Label values come from closed sets: whatever a device sends
//! that is not a known name is counted as `other`.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::store::{AssetKind, FleetCounts, JobRun, StoreError, Tx};
use crate::timestamp::Timestamp;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckinLabels {
    /// `checkin` (CheckInURL) or `command` (ServerURL).
    endpoint: &'static str,
    /// The MessageType, or the command report's Status.
    message: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    /// `delivered`, or why not: APNs's reason (`Unregistered`, `BadDeviceToken`, …).
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AssetLabels {
    certificate: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job: String,
}

#[derive(Default)]
struct Counters {
    checkins: Family<CheckinLabels, Counter>,
    refusals: Family<ReasonLabels, Counter>,
    results: Family<StatusLabels, Counter>,
    pushes: Family<OutcomeLabels, Counter>,
}

static COUNTERS: LazyLock<Counters> = LazyLock::new(Counters::default);

/// How a device's request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered 200.
    Ok,
    /// Refused (400, 403, 404, 410, 413).
    Refused,
    /// 503: the store could not serve it; the device retries.
    Unavailable,
    /// 500: a fault of ours.
    Error,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Unavailable => "unavailable",
            Outcome::Error => "error",
        }
    }
}

const MESSAGES: &[&str] = &[
    "Authenticate",
    "TokenUpdate",
    "CheckOut",
    "SetBootstrapToken",
    "GetBootstrapToken",
    "UserAuthenticate",
    "DeclarativeManagement",
    "GetToken",
    "Idle",
    "Acknowledged",
    "Error",
    "CommandFormatError",
    "NotNow",
];

fn known(value: &str, set: &'static [&'static str]) -> &'static str {
    set.iter()
        .find(|m| **m == value)
        .copied()
        .unwrap_or("other")
}

/// A check-in (`command == false`) or command-channel request (`command == true`), by its
/// MessageType or Status; `"unparsed"` for a body that did not parse.
pub fn request(command: bool, message: &str, outcome: Outcome) {
    let message = if message == "unparsed" {
        "unparsed"
    } else {
        known(message, MESSAGES)
    };
    COUNTERS
        .checkins
        .get_or_create(&CheckinLabels {
            endpoint: if command { "command" } else { "checkin" },
            message,
            outcome: outcome.label(),
        })
        .inc();
}

/// Refusals by reason since this process started, also kept apart from the Prometheus family
/// so they can be written to the store (`cutover status` sums them over the instances).
static REFUSED: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// This process's refusals by reason since it started.
pub fn refusal_totals() -> Vec<(&'static str, u64)> {
    REFUSED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, v)| (*k, *v))
        .collect()
}

/// Why an identity was refused.
pub fn refused(reason: &'static str) {
    *REFUSED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(reason)
        .or_default() += 1;
    COUNTERS
        .refusals
        .get_or_create(&ReasonLabels { reason })
        .inc();
}

const STATUSES: &[&str] = &["acknowledged", "error", "format_error", "notnow"];

/// A command result recorded (the first report of a command, not a re-sent one).
pub fn command_result(status: &str) {
    COUNTERS
        .results
        .get_or_create(&StatusLabels {
            status: known(status, STATUSES),
        })
        .inc();
}

/// `delivered`, what mdmctl decided before sending, the TLS/network failures, and APNs's
/// documented reasons (Apple's "Handling notification responses from APNs").
const PUSH_OUTCOMES: &[&str] = &[
    "delivered",
    "not_pushable",
    "wrong_topic",
    "certificate_refused",
    "network",
    "BadCollapseId",
    "BadDeviceToken",
    "BadExpirationDate",
    "BadMessageId",
    "BadPriority",
    "BadTopic",
    "DeviceTokenNotForTopic",
    "DuplicateHeaders",
    "IdleTimeout",
    "InvalidPushType",
    "MissingDeviceToken",
    "MissingTopic",
    "PayloadEmpty",
    "TopicDisallowed",
    "BadCertificate",
    "BadCertificateEnvironment",
    "ExpiredProviderToken",
    "Forbidden",
    "InvalidProviderToken",
    "MissingProviderToken",
    "BadPath",
    "MethodNotAllowed",
    "ExpiredToken",
    "Unregistered",
    "PayloadTooLarge",
    "TooManyProviderTokenUpdates",
    "TooManyRequests",
    "InternalServerError",
    "ServiceUnavailable",
    "Shutdown",
];

/// `n` pushes with this outcome (`delivered`, or APNs's reason; anything else is `other`).
pub fn push(outcome: &str, n: u64) {
    if n == 0 {
        return;
    }
    COUNTERS
        .pushes
        .get_or_create(&OutcomeLabels {
            outcome: known(outcome, PUSH_OUTCOMES),
        })
        .inc_by(n);
}

/// What a scrape reads from the store.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Whether the store answered (the gauges below are empty when it did not).
    pub store_up: bool,
    pub counts: FleetCounts,
    /// Certificate name (`apns`, `scep_ca`, `abm_token`, `server_tls`) and when it expires.
    pub expiries: Vec<(&'static str, Timestamp)>,
    pub jobs: Vec<JobRun>,
}

/// Read the gauges' figures (`server_tls`: the certificate `serve` presents, if any).
pub fn snapshot(tx: &mut dyn Tx, server_tls: Option<Timestamp>) -> Result<Snapshot, StoreError> {
    let mut expiries = Vec::new();
    for (name, kind) in [("apns", AssetKind::Apns), ("scep_ca", AssetKind::ScepCa)] {
        if let Some(t) = tx.active_asset(kind)?.and_then(|a| a.not_after) {
            expiries.push((name, t));
        }
    }
    // The ABM server token (not its key pair): what stops ABM syncs when it lapses.
    if let Ok(Some(abm)) = crate::assets::abm::abm_status(tx)
        && let Some(t) = abm.access_token_expiry
    {
        expiries.push(("abm_token", t));
    }
    if let Some(t) = server_tls {
        expiries.push(("server_tls", t));
    }
    Ok(Snapshot {
        store_up: true,
        counts: tx.fleet_counts()?,
        expiries,
        jobs: tx.job_runs()?,
    })
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    registry.register(name, help, g);
}

/// The text exposition of the counters and `snapshot`'s gauges.
pub fn render(snapshot: &Snapshot, now: Timestamp) -> String {
    let mut r = Registry::with_prefix("mdmctl");
    let c = &*COUNTERS;
    r.register(
        "checkins",
        "Device requests by endpoint, message type (or report status) and outcome",
        c.checkins.clone(),
    );
    r.register(
        "identity_refusals",
        "Device identities refused, by reason",
        c.refusals.clone(),
    );
    r.register(
        "command_results",
        "Command results recorded, by status",
        c.results.clone(),
    );
    r.register("pushes", "APNs pushes by outcome", c.pushes.clone());
    gauge(
        &mut r,
        "store_up",
        "Whether the store answered this scrape (1) or not (0)",
        i64::from(snapshot.store_up),
    );
    let n = &snapshot.counts;
    gauge(
        &mut r,
        "command_queue_open",
        "Commands queued and not answered yet (pending, sent, NotNow)",
        n.open_commands,
    );
    gauge(
        &mut r,
        "reconcile_backlog",
        "Devices waiting for the reconciler",
        n.reconcile_backlog,
    );
    gauge(
        &mut r,
        "push_outbox",
        "Channels with queued commands not pushed yet",
        n.push_outbox,
    );
    gauge(&mut r, "devices", "Devices in the store", n.devices);
    gauge(
        &mut r,
        "devices_migrated",
        "Imported devices that have checked in since the cutover",
        n.migrated,
    );
    gauge(
        &mut r,
        "devices_not_yet_migrated",
        "Imported devices not seen since the cutover",
        n.not_yet_migrated,
    );
    let days = Family::<AssetLabels, Gauge<f64, AtomicU64>>::default();
    for (certificate, t) in &snapshot.expiries {
        days.get_or_create(&AssetLabels { certificate })
            .set((t.0 - now.0) as f64 / 86_400.0);
    }
    r.register_with_unit(
        "certificate_expiry",
        "Days until a certificate expires (negative: expired)",
        Unit::Other("days".into()),
        days,
    );
    let last = Family::<JobLabels, Gauge<i64>>::default();
    let ok = Family::<JobLabels, Gauge<i64>>::default();
    for j in &snapshot.jobs {
        let l = JobLabels {
            job: j.name.clone(),
        };
        last.get_or_create(&l).set(j.finished_at.0);
        ok.get_or_create(&l).set(i64::from(j.ok));
    }
    r.register_with_unit(
        "job_last_run",
        "When each background job last finished (Unix time), on whichever instance ran it",
        Unit::Seconds,
        last,
    );
    r.register(
        "job_last_run_ok",
        "Whether each background job's last run succeeded (1) or failed (0)",
        ok,
    );
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_bounded_labels() {
        request(false, "TokenUpdate", Outcome::Ok);
        request(true, "Acknowledged", Outcome::Unavailable);
        request(false, "SomethingAttackerChosen-123", Outcome::Refused);
        refused("unknown_device");
        command_result("acknowledged");
        push("delivered", 3);
        let snap = Snapshot {
            store_up: true,
            counts: FleetCounts {
                open_commands: 7,
                migrated: 5,
                not_yet_migrated: 2,
                ..Default::default()
            },
            expiries: vec![("apns", Timestamp(86_400 * 10))],
            jobs: vec![JobRun {
                name: "reconcile".into(),
                owner: "A".into(),
                started_at: Timestamp(100),
                finished_at: Timestamp(101),
                ok: true,
                summary: String::new(),
            }],
        };
        let text = render(&snap, Timestamp(0));
        for line in [
            r#"mdmctl_checkins_total{endpoint="checkin",message="TokenUpdate",outcome="ok"} 1"#,
            r#"mdmctl_checkins_total{endpoint="command",message="Acknowledged",outcome="unavailable"} 1"#,
            r#"mdmctl_checkins_total{endpoint="checkin",message="other",outcome="refused"} 1"#,
            r#"mdmctl_identity_refusals_total{reason="unknown_device"} 1"#,
            r#"mdmctl_command_results_total{status="acknowledged"} 1"#,
            r#"mdmctl_pushes_total{outcome="delivered"} 3"#,
            "mdmctl_command_queue_open 7",
            "mdmctl_store_up 1",
            "mdmctl_devices_migrated 5",
            "mdmctl_devices_not_yet_migrated 2",
            r#"mdmctl_certificate_expiry_days{certificate="apns"} 10.0"#,
            r#"mdmctl_job_last_run_seconds{job="reconcile"} 101"#,
            r#"mdmctl_job_last_run_ok{job="reconcile"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("SomethingAttackerChosen"));
        assert!(text.ends_with("# EOF\n"));
    }
}
