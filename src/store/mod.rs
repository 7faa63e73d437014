//! The store: everything mdmctl knows, in one SQLite file (the default) or one PostgreSQL
//! database shared by several `serve` instances.
//!
//! Owns: the role traits ([`Meta`], [`Assets`], [`Devices`], [`Activities`], [`DesiredState`], [`ProfileStatus`], [`DiskEncryptionState`], [`Declarations`], [`Renewals`], …) that the rest of
//! mdmctl programs against, combined in [`Tx`]; transactions ([`Store::write`],
//! [`Store::read`]); the two backends and their numbered, embedded migrations; sealing of secret
//! columns with the master key (see [`crate::secrets`]). Must not import the server or the CLI.
//!
//! # Shape
//! Each role trait is implemented once, over [`sql::Conn`], in the file named after it
//! (`assets.rs`, `devices.rs`, …): the SQL is shared, so the backends cannot drift apart. A
//! backend (`sqlite.rs`, `postgres.rs`) owns connections, pooling, transactions, type mapping
//! and its DDL. Callers only ever see `Arc<dyn Store>` and `&mut dyn Tx`.

mod abm;
mod activities;
mod assets;
mod cutover;
mod declarations;
mod desired;
mod devices;
mod disk_encryption;
mod enrollment;
mod imports;
mod keys;
mod leases;
mod location;
mod meta;
mod migrate;
mod pool;
mod postgres;
mod profiles;
mod queue;
mod renewals;
mod sql;
mod sqlite;
mod stats;
mod tokens;
mod tx;

pub use abm::{AbmCursor, AbmDevice, AbmDevices, AbmDue, AbmFilter, AbmProfile, AssignOutcome};
pub use activities::{Activities, Activity, ActivityQuery, NewActivity};
pub use assets::{Asset, AssetKind, AssetState, Assets, NewAsset};
pub use cutover::{Cutover, CutoverSet, MirrorBacklog, MirrorItem};
pub use declarations::{DeclarationStatus, Declarations};
pub use desired::{DesiredProfile, DesiredState, GlobalSettings, ProfileKind, Settings, Team};
pub use devices::{
    ChannelOverview, DeviceAuth, DeviceFacts, DeviceRecord, DeviceSummary, Devices,
    EnrollmentRecord, PushCreds, ReconcileTarget, TopicCount,
};
pub use disk_encryption::{DiskEncryption, DiskEncryptionState, FdeState};
pub use enrollment::{EnrollSecret, EnrollmentTrust, Issued, IssuedHow};
pub use imports::{ImportRow, ImportState, Imports};
pub use leases::{JobRun, Lease, Leases, ServerInstance};
pub use location::{Location, redact_url};
pub use meta::{Meta, StoreInfo};
pub use migrate::LATEST_SCHEMA_VERSION;
pub(crate) use postgres::describe as postgres_error_text;
pub use profiles::{DeviceProfile, ProfileState, ProfileStatus, ProfileStatusCounts};
pub use queue::{CommandQueue, NewCommand, QueueEntry, QueueStatus, QueuedCommand, Recorded};
pub use renewals::{Renewal, RenewalState, Renewals};
pub use stats::{FleetCounts, Stats};
pub use tokens::{ApiToken, ChallengePurpose, ChallengeScope, Role, Tokens};

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::secrets::{KeyProvider, SecretsError};
use keys::Keys;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no mdmctl store at `{location}`")]
    NotInitialized { location: String },
    #[error("`{location}` already holds an mdmctl store")]
    AlreadyInitialized { location: String },
    #[error(
        "the store at `{location}` was written by a newer mdmctl (schema version {found}; this mdmctl knows up to {supported})"
    )]
    TooNew {
        location: String,
        found: i64,
        supported: i64,
    },
    #[error("cannot open the store at `{location}`: {reason}")]
    Open { location: String, reason: String },
    #[error("the store is busy: another mdmctl holds a write lock")]
    Busy,
    /// The database cannot be reached (connection refused or lost, server shutting down).
    #[error("the database cannot be reached: {0}")]
    Unreachable(String),
    #[error(
        "the database aborted the transaction {attempts} times for concurrent updates (serialization failure or deadlock)"
    )]
    Contention { attempts: u32 },
    #[error("no database connection free after {waited_ms} ms ({max} in use)")]
    PoolExhausted { max: usize, waited_ms: u64 },
    #[error("{0}")]
    Conflict(String),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(String),
    #[error("unexpected data in the store: {0}")]
    Decode(String),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
}

impl crate::diagnose::Diagnose for StoreError {
    fn hint(&self) -> Option<String> {
        match self {
            StoreError::NotInitialized { .. } => Some(
                "create one with `mdmctl init`, or point `--db` / `MDMCTL_DB` at an existing store"
                    .into(),
            ),
            StoreError::AlreadyInitialized { .. } => {
                Some("the store is ready to use; pick another `--db` to create a new one".into())
            }
            StoreError::TooNew { .. } => {
                Some("upgrade mdmctl to the version that wrote this store (`mdmctl --version`)".into())
            }
            StoreError::Open { .. } => Some(
                "check `--db` / `MDMCTL_DB`: a writable file path, or a reachable `postgres://user@host/db` URL".into(),
            ),
            StoreError::Busy => Some("wait for the other mdmctl to finish and retry".into()),
            StoreError::Unreachable(_) => Some(
                "check that the database is running and reachable at `--db` / `MDMCTL_DB`".into(),
            ),
            StoreError::Contention { .. } => {
                Some("retry; if it persists, the database is overloaded".into())
            }
            StoreError::PoolExhausted { .. } => {
                Some("the database is overloaded or a query hangs; check the server".into())
            }
            StoreError::Secrets(e) => e.hint(),
            _ => None,
        }
    }

    fn unexpected(&self) -> bool {
        matches!(self, StoreError::Decode(_))
    }
}

/// What a transaction may do, and how it is isolated from concurrent ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A consistent snapshot (REPEATABLE READ on PostgreSQL).
    Read,
    /// Reads that need no snapshot across statements: each sees the latest committed data
    /// (autocommit on PostgreSQL: no BEGIN and COMMIT round trips). The Idle check-in's path.
    Glance,
    /// Writes that keep an invariant over several rows (a profile installed once per device,
    /// an asset active once per kind): SERIALIZABLE on PostgreSQL, retried on conflict.
    Write,
    /// Writes that are single-row upserts and conditional updates, correct at READ COMMITTED
    /// (each statement sees committed data and locks the rows it changes): the check-in path,
    /// where SERIALIZABLE's predicate locks make concurrent devices abort each other.
    WriteRows,
}

/// Whether a transaction's work is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    Commit,
    Rollback,
}

/// Everything a transaction can do: the role traits together.
pub trait Tx:
    Meta
    + Assets
    + Devices
    + Activities
    + CommandQueue
    + Tokens
    + DesiredState
    + Imports
    + ProfileStatus
    + DiskEncryptionState
    + Declarations
    + Renewals
    + EnrollmentTrust
    + Leases
    + Cutover
    + AbmDevices
    + Stats
{
}
impl<
    T: Meta
        + Assets
        + Devices
        + Activities
        + CommandQueue
        + Tokens
        + DesiredState
        + Imports
        + ProfileStatus
        + DiskEncryptionState
        + Declarations
        + Renewals
        + EnrollmentTrust
        + Leases
        + Cutover
        + AbmDevices
        + Stats,
> Tx for T
{
}

/// A store backend. Work happens in transactions; see [`dyn Store::write`] and
/// [`dyn Store::read`] for the convenient forms.
pub trait Store: Send + Sync {
    fn location(&self) -> &Location;

    /// Run `f` in one transaction; keep its work if it returns [`Finish::Commit`]. A backend
    /// may run `f` again after a serialization conflict.
    fn transact(
        &self,
        mode: Mode,
        f: &mut dyn FnMut(&mut dyn Tx) -> Result<Finish, StoreError>,
    ) -> Result<(), StoreError>;

    /// Unlock the master key now (asking for the passphrase if needed), so that no transaction
    /// waits on a prompt. Later secret access reuses it.
    fn unlock(&self) -> Result<(), StoreError>;
}

impl dyn Store + '_ {
    /// Run `f` in one write transaction: all of it is committed, or (on any error) none of it.
    /// Write transactions are serializable on both backends; when PostgreSQL reports a
    /// serialization conflict the whole of `f` runs again, so `f` must not have side effects
    /// outside the transaction.
    pub fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnMut(&mut dyn Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        self.run(Mode::Write, f)
    }

    /// Run `f` in one write transaction of single-row upserts and conditional updates, which
    /// are correct at READ COMMITTED (see [`Mode::WriteRows`]). On SQLite it is [`Self::write`].
    pub fn write_rows<T, E: From<StoreError>>(
        &self,
        f: impl FnMut(&mut dyn Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        self.run(Mode::WriteRows, f)
    }

    /// Run `f`'s reads without a snapshot across them (see [`Mode::Glance`]); on SQLite it is
    /// [`Self::read`].
    pub fn glance<T, E: From<StoreError>>(
        &self,
        f: impl FnMut(&mut dyn Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        self.run(Mode::Glance, f)
    }

    /// Run `f` in one read transaction (a consistent snapshot).
    pub fn read<T, E: From<StoreError>>(
        &self,
        f: impl FnMut(&mut dyn Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        self.run(Mode::Read, f)
    }

    fn run<T, E: From<StoreError>>(
        &self,
        mode: Mode,
        mut f: impl FnMut(&mut dyn Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut outcome: Option<Result<T, E>> = None;
        self.transact(mode, &mut |tx| {
            let result = f(tx);
            let finish = if result.is_ok() {
                Finish::Commit
            } else {
                Finish::Rollback
            };
            outcome = Some(result);
            Ok(finish)
        })?;
        outcome.unwrap_or_else(|| {
            Err(StoreError::Decode("transaction body did not run".into()).into())
        })
    }
}

/// How a new store protects its master key.
pub enum NewKey {
    Passphrase(Zeroizing<String>),
    Keyring,
}

/// What `init` created.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Created {
    pub location: String,
    pub backend: Backend,
    pub store_id: String,
    pub key_source: crate::secrets::KeySource,
    pub schema_version: i64,
}

/// Open an initialized store, upgrading its schema if this mdmctl is newer. `provider` is asked
/// for the passphrase only when a secret is first needed.
pub fn open(
    location: &Location,
    provider: Box<dyn KeyProvider>,
) -> Result<Arc<dyn Store>, StoreError> {
    let keys = Keys::new(provider);
    match location {
        Location::Sqlite(path) => Ok(Arc::new(sqlite::SqliteStore::open(
            location.clone(),
            path,
            keys,
        )?)),
        Location::Postgres(url) => Ok(Arc::new(postgres::PgStore::open(
            location.clone(),
            url,
            keys,
        )?)),
    }
}

/// Create a new store at `location` with fresh key material. Fails if one is already there;
/// on failure nothing is left behind.
pub fn create(location: &Location, key: NewKey) -> Result<(Arc<dyn Store>, Created), StoreError> {
    let store_id = uuid::Uuid::new_v4().to_string();
    let (master, envelope) = match key {
        NewKey::Passphrase(p) => crate::secrets::create_with_passphrase(&p)?,
        NewKey::Keyring => crate::secrets::create_with_keyring(&format!("store:{store_id}"))?,
    };
    let keys = Keys::unlocked(master);
    let store: Arc<dyn Store> = match location {
        Location::Sqlite(path) => Arc::new(sqlite::SqliteStore::create(
            location.clone(),
            path,
            keys,
            &store_id,
            &envelope,
        )?),
        Location::Postgres(url) => Arc::new(postgres::PgStore::create(
            location.clone(),
            url,
            keys,
            &store_id,
            &envelope,
        )?),
    };
    let created = Created {
        location: location.to_string(),
        backend: location.backend(),
        store_id,
        key_source: envelope.source,
        schema_version: LATEST_SCHEMA_VERSION,
    };
    Ok((store, created))
}
