//! `serve`'s background jobs, and which instance runs each when several share a store.
//!
//! Every job has a lease row in the store (`leases`: name, owner, expiry). A keeper task takes
//! or renews this instance's leases every third of the lease period (so a lease is renewed
//! twice before it can lapse) and records the instance's heartbeat; a job runs only while the
//! instance holds its lease, by a deadline kept locally (the time the lease was taken plus its
//! period, less a margin), so an instance that stalls stops running jobs before another one
//! can take them over. When the holder dies, its leases lapse and another instance takes them
//! within one lease period; on shutdown they are released at once.
//!
//! Jobs: `push` (channels whose commands were queued but whose queuer died before pushing:
//! every queued command puts its channel in the store's push outbox in the same transaction,
//! and the push takes it out), `reconcile` (profiles, declarations, FileVault checks, each batch pushed as queued),
//! `renewals` (identities nearing expiry), `device-facts` (DeviceInformation for devices under
//! macOS update enforcement), `housekeeping` (expired SCEP challenges, instances gone for good),
//! `mirror-back` (during a staged cutover, the check-ins of devices served here sent to the old
//! server, `--upstream-migration-url`), `abm-sync` (Apple Business Manager's devices, every
//! `--abm-sync-interval`).
//! Commands queued through the API are pushed by the instance that queued them, once; the
//! `push` job only sends what such an instance left behind.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::AppState;
use crate::store::{JobRun, ServerInstance, Store, StoreError};
use crate::timestamp::Timestamp;

/// A background job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    Push,
    Reconcile,
    Renewals,
    DeviceFacts,
    Housekeeping,
    Mirror,
    AbmSync,
}

impl Job {
    pub const ALL: [Job; 7] = [
        Job::Push,
        Job::Reconcile,
        Job::Renewals,
        Job::DeviceFacts,
        Job::Housekeeping,
        Job::Mirror,
        Job::AbmSync,
    ];

    /// Its lease's name (and the name `get servers` shows).
    pub fn name(self) -> &'static str {
        match self {
            Job::Push => "push",
            Job::Reconcile => "reconcile",
            Job::Renewals => "renewals",
            Job::DeviceFacts => "device-facts",
            Job::Housekeeping => "housekeeping",
            Job::Mirror => "mirror-back",
            Job::AbmSync => "abm-sync",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// How often it runs.
    fn every(self, policy: &crate::reconcile::Policy) -> Duration {
        match self {
            Job::Reconcile => policy.interval,
            Job::Push | Job::Mirror => policy.interval.max(Duration::from_secs(2)),
            // Their queries scan the devices: not every reconcile interval.
            _ => policy.housekeeping.max(policy.interval),
        }
    }
}

/// How long a lease lasts when not renewed (`serve --lease-seconds`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// How long a channel waits in the push outbox (since it was queued, or since a push of it
/// started) before the `push` job pushes it: two lease periods (a minute by default), as the
/// time after which a dead instance's work is taken over. Its queuer pushes it at once; this
/// is for the queuer that died first.
fn push_grace(lease: Duration) -> Duration {
    (lease * 2).max(Duration::from_secs(5))
}

/// Instances not seen for this long are dropped from `servers`.
const FORGET_AFTER_SECS: i64 = 24 * 3600;

/// This instance: its identity in the store and the leases it holds.
pub struct Instance {
    pub info: ServerInstance,
    /// Per job: until when this instance may run it (its lease, less a margin).
    held: Mutex<[Option<Instant>; 7]>,
    /// Per job: its last run here.
    last: Mutex<[Option<JobRun>; 7]>,
}

impl Instance {
    pub fn new(url: &str, lease: Duration) -> Self {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "unknown".into());
        let now = Timestamp::now();
        Self {
            info: ServerInstance {
                id: uuid::Uuid::new_v4().to_string(),
                hostname,
                pid: i64::from(std::process::id()),
                version: env!("CARGO_PKG_VERSION").to_string(),
                url: url.to_string(),
                lease_seconds: i64::try_from(lease.as_secs()).unwrap_or(i64::MAX / 4),
                started_at: now,
                seen_at: now,
            },
            held: Mutex::new([None; 7]),
            last: Mutex::new(Default::default()),
        }
    }

    /// Whether this instance holds `job`'s lease now.
    pub fn holds(&self, job: Job) -> bool {
        self.held.lock().unwrap_or_else(|e| e.into_inner())[job.index()]
            .is_some_and(|until| Instant::now() < until)
    }

    /// The jobs this instance holds.
    pub fn held(&self) -> Vec<&'static str> {
        Job::ALL
            .into_iter()
            .filter(|j| self.holds(*j))
            .map(Job::name)
            .collect()
    }

    /// The last run of each job here.
    pub fn last_runs(&self) -> Vec<JobRun> {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flatten()
            .cloned()
            .collect()
    }

    fn set_held(&self, job: Job, until: Option<Instant>) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let before = held[job.index()].is_some_and(|u| Instant::now() < u);
        held[job.index()] = until;
        before
    }
}

/// Start the keeper and one loop per job; they stop when the state is dropped.
pub fn start(state: &Arc<AppState>, runtime: &tokio::runtime::Handle) {
    runtime.spawn(keeper(Arc::downgrade(state)));
    for job in Job::ALL {
        runtime.spawn(run_loop(Arc::downgrade(state), job));
    }
}

/// Take or renew every job's lease, every third of the lease period, and beat the heart.
async fn keeper(state: Weak<AppState>) {
    loop {
        // Seconds until the first lease another instance holds runs out, if any.
        let mut next_foreign_expiry: Option<i64> = None;
        let Some(st) = state.upgrade() else {
            return;
        };
        let ttl = st.config.lease;
        let store = st.store.clone();
        let me = st.instance.info.clone();
        let asked = Instant::now();
        let taken = tokio::task::spawn_blocking(move || take_all(store.as_ref(), &me, ttl)).await;
        match taken {
            Ok(Ok((taken, foreign))) => {
                next_foreign_expiry = foreign;
                // The lease runs from when it was asked for; stop a second short of its end.
                let until = asked + ttl.saturating_sub(Duration::from_secs(1).min(ttl / 3));
                for (job, mine) in Job::ALL.into_iter().zip(taken) {
                    let had = st.instance.set_held(job, mine.then_some(until));
                    if mine && !had {
                        info!(job = job.name(), instance = %st.instance.info.id, "this instance runs the job now");
                    } else if !mine && had {
                        info!(job = job.name(), "another instance runs the job now");
                    }
                }
            }
            Ok(Err(e)) => {
                // Unconfirmed leases are not relied on: the jobs wait until they are.
                for job in Job::ALL {
                    st.instance.set_held(job, None);
                }
                warn!(error = %e, "cannot renew the job leases; background jobs pause until the store answers");
            }
            Err(e) => warn!(error = %e, "lease keeper task failed"),
        }
        // Renew every third of the period; wake when another instance's lease runs out too, so a
        // dead holder's jobs are taken over as soon as its lease lapses.
        let pause = match next_foreign_expiry {
            Some(secs) => (ttl / 3).min(
                Duration::from_secs(u64::try_from(secs.max(0)).unwrap_or(0))
                    + Duration::from_millis(250),
            ),
            None => ttl / 3,
        };
        drop(st);
        tokio::time::sleep(pause).await;
    }
}

/// Beat, take or renew every job's lease; which are ours, and the seconds until the first lease
/// held by another instance runs out.
fn take_all(
    store: &dyn Store,
    me: &ServerInstance,
    ttl: Duration,
) -> Result<(Vec<bool>, Option<i64>), StoreError> {
    let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 4).max(1);
    // Each lease is one upsert: correct at READ COMMITTED.
    let refused = crate::metrics::refusal_totals();
    store.write_rows(|tx| {
        tx.heartbeat(me)?;
        tx.record_refusals(&me.id, &refused)?;
        let mine = Job::ALL
            .into_iter()
            .map(|j| tx.take_lease(j.name(), &me.id, secs))
            .collect::<Result<Vec<bool>, StoreError>>()?;
        let foreign = if mine.iter().all(|m| *m) {
            None
        } else {
            let now = tx.store_now()?;
            tx.leases()?
                .iter()
                .filter(|l| l.owner != me.id)
                .map(|l| l.expires_at.0 - now.0)
                .min()
        };
        Ok((mine, foreign))
    })
}

/// Run `job` every `job.every()` while this instance holds its lease; at once when it gets
/// the lease (at start, or taking over from an instance that died).
async fn run_loop(state: Weak<AppState>, job: Job) {
    let mut last_run: Option<Instant> = None;
    loop {
        let Some((every, poll)) = state.upgrade().map(|s| {
            // Without a staged cutover the mirror-back job only says so, as rarely as
            // housekeeping runs.
            let every = if job == Job::Mirror && s.config.mirror.is_none() {
                Job::Housekeeping.every(&s.config.reconcile)
            } else if job == Job::AbmSync && !s.config.abm_sync_interval.is_zero() {
                s.config.abm_sync_interval
            } else if job == Job::AbmSync {
                Job::Housekeeping.every(&s.config.reconcile)
            } else {
                job.every(&s.config.reconcile)
            };
            (
                every,
                every.min(s.config.lease / 3).max(Duration::from_millis(10)),
            )
        }) else {
            return;
        };
        tokio::time::sleep(poll).await;
        let Some(st) = state.upgrade() else {
            return;
        };
        if !st.instance.holds(job) {
            last_run = None;
            continue;
        }
        if last_run.is_some_and(|t| t.elapsed() < every) {
            continue;
        }
        last_run = Some(Instant::now());
        let started = Timestamp::now();
        let outcome = run(&st, job).await;
        let run = JobRun {
            name: job.name().into(),
            owner: st.instance.info.id.clone(),
            started_at: started,
            finished_at: Timestamp::now(),
            ok: outcome.is_ok(),
            summary: match &outcome {
                Ok(s) => s.clone(),
                Err(e) => e.to_string(),
            },
        };
        match &outcome {
            Ok(summary) => debug!(job = job.name(), %summary, "background job ran"),
            Err(e) => {
                tracing::error!(job = job.name(), error = %e, "background job failed; it runs again")
            }
        }
        st.instance.last.lock().unwrap_or_else(|e| e.into_inner())[job.index()] = Some(run.clone());
        let store = st.store.clone();
        let recorded =
            tokio::task::spawn_blocking(move || store.write_rows(|tx| tx.record_job_run(&run)))
                .await;
        if let Ok(Err(e)) = recorded {
            debug!(job = job.name(), error = %e, "cannot record the job's run");
        }
    }
}

async fn run(st: &Arc<AppState>, job: Job) -> Result<String, StoreError> {
    let policy = &st.config.reconcile;
    let store = st.store.clone();
    match job {
        Job::Push => {
            let grace = i64::try_from(push_grace(st.config.lease).as_secs()).unwrap_or(60);
            let due = tokio::task::spawn_blocking(move || {
                store.write_rows(|tx| {
                    tx.push_outbox_due(Timestamp(Timestamp::now().0 - grace), 5000)
                })
            })
            .await
            .map_err(|e| StoreError::Decode(format!("push task failed: {e}")))??;
            if due.is_empty() {
                return Ok("nothing waiting".into());
            }
            info!(
                channels = due.len(),
                "pushing channels whose queuer did not push them"
            );
            match st.pushes.push(&due).await {
                Ok(p) => Ok(format!(
                    "{} channel(s) left unpushed by their queuer: {} delivered",
                    due.len(),
                    p.delivered
                )),
                Err(e) => Ok(format!(
                    "{} channel(s) waiting; cannot push: {e}",
                    due.len()
                )),
            }
        }
        Job::Reconcile => {
            let s = crate::reconcile::tick(store, &st.pushes, policy).await?;
            Ok(format!(
                "{} device(s): {} install(s), {} removal(s), {} declaration sync(s), {} FileVault check(s); {} push(es)",
                s.devices, s.installs, s.removals, s.declarations, s.filevault_checks, s.pushed
            ))
        }
        Job::Renewals if st.config.upstream.is_some() => {
            // A staged cutover: an identity renewed here (mdmctl's CA, a new certificate the
            // old server has no association for) would not be accepted by the old server after
            // a rollback. Renewals wait until `--upstream` is gone; `cutover check` lists the
            // identities that expire meanwhile.
            Ok("postponed during the staged cutover (--upstream)".into())
        }
        Job::Renewals => {
            let s = crate::reconcile::renew_due(store, &st.pushes, policy).await?;
            Ok(format!("{} renewal(s) started", s.renewals))
        }
        Job::DeviceFacts => {
            let s = crate::reconcile::ask_facts_due(store, &st.pushes, policy).await?;
            Ok(format!("{} device(s) asked for DeviceInformation", s.facts))
        }
        Job::Housekeeping => {
            let (challenges, servers) = tokio::task::spawn_blocking(move || {
                store.write_rows(|tx| {
                    let now = tx.store_now()?;
                    // One-time challenges nobody used, and used ones past their time: what they
                    // issued is kept in `scep_issued`.
                    let c = tx.prune_scep_challenges(Timestamp::now())?;
                    let s = tx.forget_servers(None, Timestamp(now.0 - FORGET_AFTER_SECS))?;
                    Ok::<_, StoreError>((c, s))
                })
            })
            .await
            .map_err(|e| StoreError::Decode(format!("housekeeping task failed: {e}")))??;
            Ok(format!(
                "{challenges} expired SCEP challenge(s), {servers} instance(s) gone for good"
            ))
        }
        Job::AbmSync => abm_sync(st).await,
        Job::Mirror => match st.config.mirror.clone() {
            Some(m) => super::upstream::mirror_pass(st, &m).await,
            None => Ok("not configured".into()),
        },
    }
}

/// The `abm-sync` job: Apple Business Manager's devices into the store and their enrollment
/// profiles assigned, when a server token is installed. A failure (Apple unreachable, new terms) is the job's error, shown by `get
/// servers` and logged; it runs again at the next interval.
async fn abm_sync(st: &Arc<AppState>) -> Result<String, StoreError> {
    if st.config.abm_sync_interval.is_zero() {
        return Ok("off (--abm-sync-interval 0)".into());
    }
    let (store, base) = (st.store.clone(), st.config.abm_url.clone());
    let client = tokio::task::spawn_blocking(move || crate::abm::client_for(store.as_ref(), &base))
        .await
        .map_err(|e| StoreError::Decode(format!("ABM sync task failed: {e}")))?
        .map_err(|e| StoreError::Decode(e.to_string()))?;
    let Some(client) = client else {
        return Ok("no Apple Business Manager server token".into());
    };
    // Assigned after every sync: what failed before and whose wait is over is tried again.
    let (pass, failed) = match crate::abm::sync_now(
        &client,
        &st.store,
        false,
        true,
        Some(&st.config.url),
    )
    .await
    {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "Apple Business Manager sync failed; it runs again at the next interval");
            return Err(StoreError::Decode(format!("ABM sync: {e}")));
        }
    };
    let s = &pass.sync;
    let sync_text = format!(
        "{} record(s): {} added, {} modified, {} deleted{}",
        s.records,
        s.added,
        s.modified,
        s.deleted,
        if s.full_fetch { " (every device)" } else { "" }
    );
    match (pass.assign, failed) {
        (Some(a), _) => Ok(format!(
            "{sync_text}; profiles: {} assigned, {} failed, {} throttled, {} not accessible",
            a.assigned, a.failed, a.throttled, a.not_accessible
        )),
        (None, e) => {
            let e = e.map(|e| e.to_string()).unwrap_or_default();
            warn!(error = %e, "Apple Business Manager profile assignment failed; it runs again at the next interval");
            Err(StoreError::Decode(format!(
                "{sync_text}; ABM assignment: {e}"
            )))
        }
    }
}

/// On shutdown: give this instance's leases up (another instance takes the jobs at once) and
/// leave the list of instances.
pub async fn stop(state: &Arc<AppState>) {
    let store = state.store.clone();
    let me = state.instance.info.id.clone();
    for job in Job::ALL {
        state.instance.set_held(job, None);
    }
    let released = tokio::task::spawn_blocking(move || {
        store.write_rows(|tx| {
            for job in Job::ALL {
                tx.release_lease(job.name(), &me)?;
            }
            tx.forget_servers(Some(&me), Timestamp(i64::MIN))
        })
    })
    .await;
    match released {
        Ok(Ok(_)) => debug!("job leases released"),
        Ok(Err(e)) => warn!(error = %e, "cannot release the job leases; they lapse on their own"),
        Err(_) => {}
    }
}
