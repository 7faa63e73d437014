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
use postgres::{Client, IsolationLevel, Statement, Transaction};
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
    client: Client,
    statements: HashMap<String, Statement>,
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
    config.application_name("mdmctl");
    let client = config
        .connect(tls_connector(location)?)
        .map_err(|e| open_err(location, describe(&e)))?;
    Ok(PgClient {
        client,
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
    let PgClient { client, statements } = pg;
    let mut tx = client
        .build_transaction()
        .read_only(mode == Mode::Read)
        .start()
        .map_err(pg_err)?;
    let mut conflict = false;
    let result = f(&mut PgConn {
        tx: &mut tx,
        statements,
        conflict: &mut conflict,
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
        let mut pooled = self.pool.get()?;
        let result = {
            let PgClient { client, statements } = &mut *pooled;
            run(client, statements, mode, &self.keys, f)
        };
        if pooled.client.is_closed() {
            pooled.mark_broken();
        }
        result
    }

    fn unlock(&self) -> Result<(), StoreError> {
        self.transact(Mode::Read, &mut |tx| {
            tx.unlock_secrets()?;
            Ok(Finish::Commit)
        })
    }
}

/// Write transactions are SERIALIZABLE, so they behave as SQLite's (which are serialized):
/// no lost updates, no write skew. PostgreSQL may abort one of two conflicting transactions;
/// it is then run again, up to [`MAX_ATTEMPTS`] times. Reads use a REPEATABLE READ snapshot.
fn run(
    client: &mut Client,
    statements: &mut HashMap<String, Statement>,
    mode: Mode,
    keys: &Keys,
    f: &mut dyn FnMut(&mut dyn Tx) -> Result<Finish, StoreError>,
) -> Result<(), StoreError> {
    let isolation = match mode {
        Mode::Write => IsolationLevel::Serializable,
        Mode::Read => IsolationLevel::RepeatableRead,
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
        let mut conflict = false;
        let finish = {
            let mut conn = PgConn {
                tx: &mut tx,
                statements,
                conflict: &mut conflict,
            };
            let mut sql_tx = SqlTx {
                conn: &mut conn,
                keys,
            };
            f(&mut sql_tx)
        };
        let outcome = match finish {
            _ if conflict => {
                let _ = tx.rollback();
                Err(StoreError::Busy)
            }
            Ok(Finish::Commit) => tx.commit().map_err(pg_err),
            Ok(Finish::Rollback) => tx.rollback().map_err(pg_err),
            Err(e) => {
                let _ = tx.rollback();
                Err(e)
            }
        };
        match outcome {
            Err(StoreError::Busy) if attempt < MAX_ATTEMPTS => {
                // Jittered exponential backoff (1, 2, 4 … ms) so the retries do not collide again.
                let base = 1u64 << attempt.min(7);
                let jitter =
                    u64::from(std::process::id().wrapping_mul(31).wrapping_add(attempt)) % base;
                std::thread::sleep(Duration::from_millis(base + jitter));
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

fn pg_err(e: postgres::Error) -> StoreError {
    use postgres::error::SqlState;
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

struct PgConn<'t, 'c> {
    tx: &'t mut Transaction<'c>,
    statements: &'t mut HashMap<String, Statement>,
    /// Set when PostgreSQL aborted the transaction for a conflict: the caller's error (whatever
    /// it wrapped this in) must not end the transaction's retries.
    conflict: &'t mut bool,
}

impl PgConn<'_, '_> {
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
        if matches!(err, StoreError::Busy) {
            *self.conflict = true;
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

impl Conn for PgConn<'_, '_> {
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
