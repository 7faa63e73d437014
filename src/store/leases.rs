//! Several `serve` instances on one store: the lease that makes one instance at a time run each
//! background job (taken when free or lapsed, renewed by its holder, released on shutdown), the
//! instances' heartbeats, and each job's last run. Times come from the database's clock on
//! PostgreSQL, so instances on hosts whose clocks disagree still agree on who holds a lease.

use serde::{Deserialize, Serialize};

use super::Backend;
use super::StoreError;
use super::sql::Row;
use super::tx::SqlTx;
use crate::timestamp::Timestamp;

/// Who holds a job's lease, and until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub name: String,
    /// The holding instance's id ([`ServerInstance::id`]).
    pub owner: String,
    pub acquired_at: Timestamp,
    pub renewed_at: Timestamp,
    pub expires_at: Timestamp,
}

/// A `serve` process sharing the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInstance {
    /// Unique per process (a new one at every start).
    pub id: String,
    pub hostname: String,
    pub pid: i64,
    pub version: String,
    /// The public URL it serves.
    pub url: String,
    /// Its lease period: it beats every third of it, and is gone when not seen for longer.
    pub lease_seconds: i64,
    pub started_at: Timestamp,
    /// Its last heartbeat.
    pub seen_at: Timestamp,
}

/// A background job's last run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRun {
    pub name: String,
    /// The instance that ran it.
    pub owner: String,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub ok: bool,
    /// What it did, or why it failed.
    pub summary: String,
}

pub trait Leases {
    /// Now, by the store's clock (the database server's on PostgreSQL).
    fn store_now(&mut self) -> Result<Timestamp, StoreError>;
    /// Take the lease `name` for `owner` for `ttl_seconds`, or renew it when `owner` holds it.
    /// True when `owner` holds it afterwards; false while another instance's lease runs.
    /// One statement (an upsert whose update applies only to its holder or a lapsed lease), so
    /// two instances racing for it cannot both win, at any isolation level.
    fn take_lease(&mut self, name: &str, owner: &str, ttl_seconds: i64)
    -> Result<bool, StoreError>;
    /// Give the lease up now (shutdown), when `owner` holds it.
    fn release_lease(&mut self, name: &str, owner: &str) -> Result<(), StoreError>;
    fn leases(&mut self) -> Result<Vec<Lease>, StoreError>;
    /// Record that this instance is alive (`seen_at` is the store's now).
    fn heartbeat(&mut self, server: &ServerInstance) -> Result<(), StoreError>;
    /// Forget an instance (shutdown), and instances not seen since `before` (gone for good).
    fn forget_servers(&mut self, id: Option<&str>, before: Timestamp) -> Result<u64, StoreError>;
    fn servers(&mut self) -> Result<Vec<ServerInstance>, StoreError>;
    fn record_job_run(&mut self, run: &JobRun) -> Result<(), StoreError>;
    fn job_runs(&mut self) -> Result<Vec<JobRun>, StoreError>;
}

fn lease(r: &Row) -> Result<Lease, StoreError> {
    Ok(Lease {
        name: r.text(0)?,
        owner: r.text(1)?,
        acquired_at: r.ts(2)?,
        renewed_at: r.ts(3)?,
        expires_at: r.ts(4)?,
    })
}

fn server(r: &Row) -> Result<ServerInstance, StoreError> {
    Ok(ServerInstance {
        id: r.text(0)?,
        hostname: r.text(1)?,
        pid: r.int(2)?,
        version: r.text(3)?,
        url: r.text(4)?,
        lease_seconds: r.int(5)?,
        started_at: r.ts(6)?,
        seen_at: r.ts(7)?,
    })
}

impl Leases for SqlTx<'_> {
    fn store_now(&mut self) -> Result<Timestamp, StoreError> {
        match self.conn.backend() {
            Backend::Postgres => Ok(self
                .conn
                .query_one(
                    "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS BIGINT)",
                    &[],
                )?
                .ts(0)?),
            // One host: its clock is the store's.
            Backend::Sqlite => Ok(Timestamp::now()),
        }
    }

    fn take_lease(
        &mut self,
        name: &str,
        owner: &str,
        ttl_seconds: i64,
    ) -> Result<bool, StoreError> {
        let now = self.store_now()?;
        let expires = Timestamp(now.0 + ttl_seconds.max(1));
        let held = self.conn.query(
            "INSERT INTO leases (name, owner, acquired_at, renewed_at, expires_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, \
               acquired_at = CASE WHEN leases.owner = excluded.owner THEN leases.acquired_at ELSE excluded.acquired_at END, \
               renewed_at = excluded.renewed_at, expires_at = excluded.expires_at \
             WHERE leases.owner = excluded.owner OR leases.expires_at <= excluded.renewed_at \
             RETURNING owner",
            &[name.into(), owner.into(), now.into(), now.into(), expires.into()],
        )?;
        Ok(!held.is_empty())
    }

    fn release_lease(&mut self, name: &str, owner: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "DELETE FROM leases WHERE name = ? AND owner = ?",
            &[name.into(), owner.into()],
        )?;
        Ok(())
    }

    fn leases(&mut self) -> Result<Vec<Lease>, StoreError> {
        self.conn
            .query(
                "SELECT name, owner, acquired_at, renewed_at, expires_at FROM leases ORDER BY name",
                &[],
            )?
            .iter()
            .map(lease)
            .collect()
    }

    fn heartbeat(&mut self, s: &ServerInstance) -> Result<(), StoreError> {
        let now = self.store_now()?;
        self.conn.execute(
            "INSERT INTO servers (id, hostname, pid, version, url, lease_seconds, started_at, seen_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
            &[
                s.id.as_str().into(),
                s.hostname.as_str().into(),
                s.pid.into(),
                s.version.as_str().into(),
                s.url.as_str().into(),
                s.lease_seconds.into(),
                s.started_at.into(),
                now.into(),
            ],
        )?;
        Ok(())
    }

    fn forget_servers(&mut self, id: Option<&str>, before: Timestamp) -> Result<u64, StoreError> {
        self.conn.execute(
            "DELETE FROM servers WHERE id = ? OR seen_at < ?",
            &[id.into(), before.into()],
        )
    }

    fn servers(&mut self) -> Result<Vec<ServerInstance>, StoreError> {
        self.conn
            .query(
                "SELECT id, hostname, pid, version, url, lease_seconds, started_at, seen_at FROM servers ORDER BY started_at, id",
                &[],
            )?
            .iter()
            .map(server)
            .collect()
    }

    fn record_job_run(&mut self, run: &JobRun) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO job_runs (name, owner, started_at, finished_at, ok, summary) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, started_at = excluded.started_at, \
               finished_at = excluded.finished_at, ok = excluded.ok, summary = excluded.summary",
            &[
                run.name.as_str().into(),
                run.owner.as_str().into(),
                run.started_at.into(),
                run.finished_at.into(),
                run.ok.into(),
                run.summary.as_str().into(),
            ],
        )?;
        Ok(())
    }

    fn job_runs(&mut self) -> Result<Vec<JobRun>, StoreError> {
        self.conn
            .query(
                "SELECT name, owner, started_at, finished_at, ok, summary FROM job_runs ORDER BY name",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(JobRun {
                    name: r.text(0)?,
                    owner: r.text(1)?,
                    started_at: r.ts(2)?,
                    finished_at: r.ts(3)?,
                    ok: r.bool(4)?,
                    summary: r.text(5)?,
                })
            })
            .collect()
    }
}
