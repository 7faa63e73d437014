//! The PostgreSQL backend, for several `serve` instances sharing one database. A pool of
//! blocking clients (the `postgres` crate; server code calls the store from blocking threads),
//! prepared statements cached per connection, TLS through OpenSSL when the URL asks for it,
//! and migrations serialized across instances by an advisory lock.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use bytes::BytesMut;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, GenericClient, IsolationLevel, Statement};
use postgres_openssl::MakeTlsConnector;

use super::keys::Keys;
use super::pool::Pool;
use super::sql::{Cell, Conn, Row, Val, numbered_placeholders};
use super::tx::SqlTx;
use super::{Backend, Finish, Location, Mode, Store, StoreError, Tx, meta, migrate};
use crate::secrets::KeyEnvelope;

const POOL_SIZE: usize = 16;
/// How often a transaction is tried when PostgreSQL aborts it for a serialization conflict.
const MAX_ATTEMPTS: u32 = 10;
const POOL_WAIT: Duration = Duration::from_secs(30);
/// Any fixed number: every mdmctl instance takes this lock to migrate.
const MIGRATION_LOCK: i64 = 0x6d64_6d63_746c;

pub(crate) struct PgStore {
    location: Location,
    pool: Pool<PgClient>,
    keys: Keys,
}

struct PgClient {
    /// Always `Some` until dropped (see the `Drop` below).
    client: Option<Client>,
    statements: HashMap<String, Statement>,
}

impl PgClient {
    fn parts(&mut self) -> Result<(&mut Client, &mut HashMap<String, Statement>), StoreError> {
        match self.client.as_mut() {
            Some(client) => Ok((client, &mut self.statements)),
            // Only `Drop` takes it; a closed connection is what it would mean.
            None => Err(StoreError::Unreachable("the connection was closed".into())),
        }
    }

    fn is_closed(&self) -> bool {
        self.client.as_ref().is_none_or(Client::is_closed)
    }
}

impl Drop for PgClient {
    /// The synchronous client owns a small Tokio runtime and closes the connection by blocking
    /// on it; dropped on an async worker thread (a store released inside `serve`'s runtime),
    /// that panics. There, it is closed on a thread of its own instead.
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            let _ = std::thread::Builder::new()
                .name("pg-close".into())
                .spawn(move || drop(client));
        } else {
            drop(client);
        }
    }
}

fn open_err(location: &Location, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Open {
        location: location.to_string(),
        reason: reason.to_string(),
    }
}

fn connect(location: &Location, url: &str) -> Result<PgClient, StoreError> {
    let mut config = postgres::Config::from_str(url).map_err(|e| open_err(location, e))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    // Named, so an operator sees mdmctl's sessions in pg_stat_activity; a URL's own
    // `application_name` (one per instance, say) is kept.
    if config.get_application_name().is_none() {
        config.application_name("mdmctl");
    }
    let client = config
        .connect(tls_connector(location)?)
        .map_err(|e| open_err(location, describe(&e)))?;
    Ok(PgClient {
        client: Some(client),
        statements: HashMap::new(),
    })
}

/// TLS as libpq does it: `sslmode=prefer` (the default) and `require` encrypt without
/// checking the server's certificate; with `PGSSLROOTCERT` set, the certificate must chain to
/// that CA (libpq's `verify-ca`).
fn tls_connector(location: &Location) -> Result<MakeTlsConnector, StoreError> {
    let mut b = SslConnector::builder(SslMethod::tls()).map_err(|e| open_err(location, e))?;
    match std::env::var_os("PGSSLROOTCERT") {
        Some(ca) => b.set_ca_file(&ca).map_err(|e| {
            open_err(
                location,
                format!("PGSSLROOTCERT `{}`: {e}", ca.to_string_lossy()),
            )
        })?,
        None => b.set_verify(SslVerifyMode::NONE),
    }
    let mut connector = MakeTlsConnector::new(b.build());
    if std::env::var_os("PGSSLROOTCERT").is_some() {
        // verify-ca: the chain is checked, the host name is not (libpq's meaning).
        connector.set_callback(|config, _| {
            config.set_verify_hostname(false);
            Ok(())
        });
    }
    Ok(connector)
}

impl PgStore {
    fn assemble(location: Location, url: &str, first: PgClient, keys: Keys) -> Self {
        let loc = location.clone();
        let url = url.to_string();
        let pool = Pool::new(POOL_SIZE, POOL_WAIT, Box::new(move || connect(&loc, &url)));
        pool.seed(first);
        Self {
            location,
            pool,
            keys,
        }
    }

    pub fn open(location: Location, url: &str, keys: Keys) -> Result<Self, StoreError> {
        blocking(|| Self::open_here(location, url, keys))
    }

    fn open_here(location: Location, url: &str, keys: Keys) -> Result<Self, StoreError> {
        let mut first = connect(&location, url)?;
        let loc = location.to_string();
        let version = with_tx(&mut first, Mode::Read, |c| migrate::current_version(c))?;
        match version {
            None => return Err(StoreError::NotInitialized { location: loc }),
            Some(v) => migrate::check_not_newer(&loc, v)?,
        }
        if with_tx(&mut first, Mode::Read, migrate::pending)? {
            with_tx(&mut first, Mode::Write, |c| {
                c.execute("SELECT pg_advisory_xact_lock(?)", &[MIGRATION_LOCK.into()])?;
                migrate::upgrade(c, &loc)
            })?;
        }
        Ok(Self::assemble(location, url, first, keys))
    }

    pub fn create(
        location: Location,
        url: &str,
        keys: Keys,
        store_id: &str,
        envelope: &KeyEnvelope,
    ) -> Result<Self, StoreError> {
        blocking(|| Self::create_here(location, url, keys, store_id, envelope))
    }

    fn create_here(
        location: Location,
        url: &str,
        keys: Keys,
        store_id: &str,
        envelope: &KeyEnvelope,
    ) -> Result<Self, StoreError> {
        let mut first = connect(&location, url)?;
        let loc = location.to_string();
        with_tx(&mut first, Mode::Write, |c| {
            c.execute("SELECT pg_advisory_xact_lock(?)", &[MIGRATION_LOCK.into()])?;
            if migrate::current_version(c)?.is_some() {
                return Err(StoreError::AlreadyInitialized {
                    location: loc.clone(),
                });
            }
            migrate::upgrade(c, &loc)?;
            meta::initialize(c, store_id, envelope)
        })?;
        Ok(Self::assemble(location, url, first, keys))
    }
}

/// Run `f` in a transaction on one client (used before the pool exists).
fn with_tx<T>(
    pg: &mut PgClient,
    mode: Mode,
    f: impl FnOnce(&mut dyn Conn) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let (client, statements) = pg.parts()?;
    let mut tx = client
        .build_transaction()
        .read_only(mode == Mode::Read)
        .start()
        .map_err(pg_err)?;
    let mut aborted = Aborted::default();
    let result = f(&mut PgConn {
        tx: &mut tx,
        statements,
        aborted: &mut aborted,
    });
    match result {
        Ok(v) => {
            tx.commit().map_err(pg_err)?;
            Ok(v)
        }
        Err(e) => {
            let _ = tx.rollback();
            Err(e)
        }
    }
}

impl Store for PgStore {
    fn location(&self) -> &Location {
        &self.location
    }

    fn transact(
        &self,
        mode: Mode,
        f: &mut dyn FnMut(&mut dyn Tx) -> Result<Finish, StoreError>,
    ) -> Result<(), StoreError> {
        blocking(|| self.transact_here(mode, f))
    }

    fn unlock(&self) -> Result<(), StoreError> {
        self.transact(Mode::Read, &mut |tx| {
            tx.unlock_secrets()?;
            Ok(Finish::Commit)
        })
    }
}

/// The synchronous client blocks on a runtime of its own, which panics on an async worker
/// thread ("Cannot start a runtime from within a runtime"). `serve` calls the store from
/// blocking threads; anything that calls it from an async task on a multi-threaded runtime
/// gets the same effect through `block_in_place`.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

impl PgStore {
    fn transact_here(
        &self,
        mode: Mode,
        f: &mut dyn FnMut(&mut dyn Tx) -> Result<Finish, StoreError>,
    ) -> Result<(), StoreError> {
        // A connection found dead (PostgreSQL restarted, the session terminated) fails before
        // anything was committed: the work is run again on a fresh connection. One that fails
        // while committing is not (its outcome is unknown); the caller sees `Unreachable`.
        let mut fresh_tries = 2;
        loop {
            let mut pooled = self.pool.get().map_err(|e| match e {
                StoreError::Open { reason, .. } => StoreError::Unreachable(reason),
                other => other,
            })?;
            let mut committing = false;
            let result = {
                match pooled.parts() {
                    Ok((client, statements)) => {
                        run(client, statements, mode, &self.keys, &mut committing, f)
                    }
                    Err(e) => Err(e),
                }
            };
            if pooled.is_closed() || matches!(result, Err(StoreError::Unreachable(_))) {
                pooled.mark_broken();
                // The others idle beside it were most likely cut off too.
                self.pool.discard_idle();
            }
            match result {
                Err(StoreError::Unreachable(reason)) if !committing && fresh_tries > 0 => {
                    fresh_tries -= 1;
                    tracing::debug!(%reason, "the database connection was lost; trying a fresh one");
                }
                other => return other,
            }
        }
    }
}

/// [`Mode::Write`] transactions are SERIALIZABLE, so they behave as SQLite's (which are
/// serialized): no lost updates, no write skew, for the invariants that span rows.
/// [`Mode::WriteRows`] transactions (the check-in path: single-row upserts and conditional
/// updates) run at READ COMMITTED, where concurrent devices do not abort each other. Either
/// may still be aborted (a serialization failure, a deadlock): it is then run again, up to
/// [`MAX_ATTEMPTS`] times, each retry logged at debug. Reads use a REPEATABLE READ snapshot.
fn run(
    client: &mut Client,
    statements: &mut HashMap<String, Statement>,
    mode: Mode,
    keys: &Keys,
    committing: &mut bool,
    f: &mut dyn FnMut(&mut dyn Tx) -> Result<Finish, StoreError>,
) -> Result<(), StoreError> {
    let isolation = match mode {
        Mode::Write => IsolationLevel::Serializable,
        Mode::WriteRows => IsolationLevel::ReadCommitted,
        Mode::Read => IsolationLevel::RepeatableRead,
        Mode::Glance => {
            // No BEGIN/COMMIT: two round trips fewer for the Idle check-in's reads.
            let mut aborted = Aborted::default();
            let mut conn = PgConn {
                tx: client,
                statements,
                aborted: &mut aborted,
            };
            let mut sql_tx = SqlTx {
                conn: &mut conn,
                keys,
            };
            let finish = f(&mut sql_tx);
            // `f` may have kept a lost connection's error to itself (as its own result): with
            // no ROLLBACK to fail on, the loss is reported here, so the work runs again on a
            // fresh connection.
            if let Some(reason) = aborted.lost {
                return Err(StoreError::Unreachable(reason));
            }
            return finish.map(|_| ());
        }
    };
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let mut tx = client
            .build_transaction()
            .isolation_level(isolation)
            .read_only(mode == Mode::Read)
            .start()
            .map_err(pg_err)?;
        let mut aborted = Aborted::default();
        let finish = {
            let mut conn = PgConn {
                tx: &mut tx,
                statements,
                aborted: &mut aborted,
            };
            let mut sql_tx = SqlTx {
                conn: &mut conn,
                keys,
            };
            f(&mut sql_tx)
        };
        let outcome = match finish {
            // As in autocommit: `f` may have kept the loss to itself; nothing was committed.
            _ if aborted.lost.is_some() => {
                let _ = tx.rollback();
                Err(StoreError::Unreachable(
                    aborted.lost.take().unwrap_or_default(),
                ))
            }
            _ if aborted.conflict => {
                let _ = tx.rollback();
                Err(StoreError::Busy)
            }
            Ok(Finish::Commit) => {
                *committing = true;
                let r = tx.commit().map_err(pg_err);
                if r.is_err() {
                    // Aborted at commit (a serialization failure) is known not to have
                    // committed: only a lost connection leaves the outcome unknown.
                    *committing = matches!(r, Err(StoreError::Unreachable(_)));
                }
                r
            }
            Ok(Finish::Rollback) => tx.rollback().map_err(pg_err),
            Err(e) => {
                let _ = tx.rollback();
                Err(e)
            }
        };
        match outcome {
            Err(StoreError::Busy) if attempt < MAX_ATTEMPTS => {
                tracing::debug!(
                    attempt,
                    ?mode,
                    "transaction aborted for a concurrent update; retrying"
                );
                // Jittered exponential backoff (1, 2, 4 … ms) so the retries do not collide again.
                let base = 1u64 << attempt.min(7);
                std::thread::sleep(Duration::from_millis(base + jitter(base)));
            }
            Err(StoreError::Busy) => {
                return Err(StoreError::Contention { attempts: attempt });
            }
            other => return other,
        }
    }
}

/// The server's message and detail, which say far more than the client error's Display
/// (`db error`); for a connection that failed, the cause (`Connection refused`, a TLS or
/// authentication failure) after the client's words.
pub(crate) fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(d) => format!("{}: {d}", db.message()),
            None => db.message().to_string(),
        },
        None => {
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                let more = c.to_string();
                if !text.contains(&more) {
                    text = format!("{text}: {more}");
                }
                cause = c.source();
            }
            text
        }
    }
}

/// A pseudo-random number below `bound`, different per thread and call (for backoff jitter).
fn jitter(bound: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish() % bound.max(1)
}

/// Whether the error says the database cannot be reached: the connection is closed or broke
/// (an I/O error), or the server is shutting down or refusing connections (SQLSTATE class 08,
/// 57P01-57P03).
fn unreachable(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let c = code.code();
        return c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03");
    }
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.is::<std::io::Error>() {
            return true;
        }
        cause = c.source();
    }
    false
}

fn pg_err(e: postgres::Error) -> StoreError {
    use postgres::error::SqlState;
    if unreachable(&e) {
        return StoreError::Unreachable(describe(&e));
    }
    match e.code() {
        Some(c)
            if *c == SqlState::UNIQUE_VIOLATION
                || *c == SqlState::FOREIGN_KEY_VIOLATION
                || *c == SqlState::CHECK_VIOLATION =>
        {
            StoreError::Conflict(describe(&e))
        }
        Some(c)
            if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::LOCK_NOT_AVAILABLE =>
        {
            StoreError::Busy
        }
        _ => StoreError::Postgres(describe(&e)),
    }
}

/// Statements on a transaction, or on the bare client (autocommit, for [`Mode::Glance`]).
struct PgConn<'t, C: GenericClient> {
    tx: &'t mut C,
    statements: &'t mut HashMap<String, Statement>,
    aborted: &'t mut Aborted,
}

/// What a statement's failure means for the whole unit of work, whatever the caller wrapped
/// the error in.
#[derive(Default)]
struct Aborted {
    /// PostgreSQL aborted the transaction for a conflict: it is run again.
    conflict: bool,
    /// The connection was lost: the work is run again on a fresh one, if nothing was committed.
    lost: Option<String>,
}

impl<C: GenericClient> PgConn<'_, C> {
    fn statement(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let prepared = self.tx.prepare(&numbered_placeholders(sql));
        let s = prepared.map_err(|e| self.fail(e))?;
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    fn fail(&mut self, e: postgres::Error) -> StoreError {
        let err = pg_err(e);
        match &err {
            StoreError::Busy => self.aborted.conflict = true,
            StoreError::Unreachable(reason) => self.aborted.lost = Some(reason.clone()),
            _ => {}
        }
        err
    }
}

impl ToSql for Val<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Val::Null => Ok(IsNull::Yes),
            Val::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                _ => Err(format!("cannot store an integer in a `{ty}` column").into()),
            },
            Val::Bool(b) => b.to_sql(ty, out),
            Val::Text(s) => s.to_sql(ty, out),
            Val::Blob(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn params<'a>(vals: &'a [Val<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    vals.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

fn row_cells(row: &postgres::Row) -> Result<Row, StoreError> {
    let mut cells = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let get_err =
            |e: postgres::Error| StoreError::Decode(format!("column `{}`: {e}", col.name()));
        let cell = match *col.type_() {
            Type::INT8 => row
                .try_get::<_, Option<i64>>(i)
                .map_err(get_err)?
                .map(Cell::Int),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)
                .map_err(get_err)?
                .map(|v| Cell::Int(v.into())),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)
                .map_err(get_err)?
                .map(|v| Cell::Int(v.into())),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)
                .map_err(get_err)?
                .map(Cell::Bool),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => row
                .try_get::<_, Option<String>>(i)
                .map_err(get_err)?
                .map(Cell::Text),
            Type::BYTEA => row
                .try_get::<_, Option<Vec<u8>>>(i)
                .map_err(get_err)?
                .map(Cell::Blob),
            ref other => {
                return Err(StoreError::Decode(format!(
                    "column `{}` has type `{other}`, which mdmctl does not read",
                    col.name()
                )));
            }
        };
        cells.push(cell.unwrap_or(Cell::Null));
    }
    Ok(Row(cells))
}

impl<C: GenericClient> Conn for PgConn<'_, C> {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        self.tx.batch_execute(sql).map_err(|e| self.fail(e))
    }

    fn execute(&mut self, sql: &str, vals: &[Val<'_>]) -> Result<u64, StoreError> {
        let stmt = self.statement(sql)?;
        let r = self.tx.execute(&stmt, &params(vals));
        r.map_err(|e| self.fail(e))
    }

    fn query(&mut self, sql: &str, vals: &[Val<'_>]) -> Result<Vec<Row>, StoreError> {
        let stmt = self.statement(sql)?;
        let rows = self.tx.query(&stmt, &params(vals));
        rows.map_err(|e| self.fail(e))?
            .iter()
            .map(row_cells)
            .collect()
    }

    fn query_each(
        &mut self,
        sql: &str,
        vals: &[Val<'_>],
        f: &mut dyn FnMut(&Row) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        use postgres::fallible_iterator::FallibleIterator;
        let stmt = self.statement(sql)?;
        let mut failed = None;
        match self.tx.query_raw(&stmt, params(vals)) {
            Ok(mut rows) => loop {
                match rows.next() {
                    Ok(Some(r)) => f(&row_cells(&r)?)?,
                    Ok(None) => break,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            },
            Err(e) => failed = Some(e),
        }
        match failed {
            Some(e) => Err(self.fail(e)),
            None => Ok(()),
        }
    }
}
