//! The `serve` instances sharing a store, as `mdmctl get servers` and `GET /api/v1/servers`
//! show them: each instance's version and heartbeat, the jobs it runs, and each job's holder,
//! lease and last run.

use serde::{Deserialize, Serialize};

use crate::store::{JobRun, ServerInstance, StoreError, Tx};
use crate::timestamp::Timestamp;

/// The instances and the jobs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Instances {
    /// The store's clock when this was read.
    pub now: Timestamp,
    pub servers: Vec<InstanceView>,
    pub jobs: Vec<JobView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstanceView {
    #[serde(flatten)]
    pub instance: ServerInstance,
    /// Seen within its lease period.
    pub alive: bool,
    /// The jobs whose lease it holds now.
    pub jobs: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobView {
    pub name: String,
    /// The instance holding its lease now, if any.
    pub holder: Option<String>,
    pub lease_expires_at: Option<Timestamp>,
    pub last_run: Option<JobRun>,
}

pub fn instances(tx: &mut dyn Tx) -> Result<Instances, StoreError> {
    let now = tx.store_now()?;
    let leases = tx.leases()?;
    let runs = tx.job_runs()?;
    let live: Vec<_> = leases.iter().filter(|l| l.expires_at > now).collect();
    let servers = tx
        .servers()?
        .into_iter()
        .map(|s| InstanceView {
            alive: now.0 - s.seen_at.0 <= s.lease_seconds,
            jobs: live
                .iter()
                .filter(|l| l.owner == s.id)
                .map(|l| l.name.clone())
                .collect(),
            instance: s,
        })
        .collect();
    let mut names: Vec<String> = leases
        .iter()
        .map(|l| l.name.clone())
        .chain(runs.iter().map(|r| r.name.clone()))
        .collect();
    names.sort();
    names.dedup();
    let jobs = names
        .into_iter()
        .map(|name| {
            let lease = live.iter().find(|l| l.name == name);
            JobView {
                holder: lease.map(|l| l.owner.clone()),
                lease_expires_at: lease.map(|l| l.expires_at),
                last_run: runs.iter().find(|r| r.name == name).cloned(),
                name,
            }
        })
        .collect();
    Ok(Instances { now, servers, jobs })
}
