//! The SQLite backend: one file, WAL journal, foreign keys on, a busy timeout for other
//! processes. Writers are serialized in-process on one connection (no busy-wait between our
//! own threads); readers use a small pool and never block the writer.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::keys::Keys;
use super::pool::Pool;
use super::sql::{Cell, Conn, Row, Val};
use super::tx::SqlTx;
use super::{Backend, Finish, Location, Mode, Store, StoreError, Tx, meta, migrate};
use crate::secrets::KeyEnvelope;

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
const READERS: usize = 4;

pub(crate) struct SqliteStore {
    location: Location,
    writer: Mutex<Connection>,
    readers: Pool<Connection>,
    keys: Keys,
}

fn open_err(location: &Location, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Open {
        location: location.to_string(),
        reason: reason.to_string(),
    }
}

fn connect(location: &Location, path: &Path, create: bool) -> Result<Connection, StoreError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
        // The store holds sealed secrets and the key envelope: readable by its owner only.
        // SQLite gives the `-wal` and `-shm` files the main file's mode.
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| open_err(location, e))?;
    }
    let conn = Connection::open_with_flags(path, flags).map_err(|e| open_err(location, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL: readers never block the writer, and a crash loses nothing committed.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| open_err(location, format!("not an SQLite database ({e})")))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(open_err(
            location,
            format!("cannot switch to WAL (journal mode `{mode}`)"),
        ));
    }
    // A small page cache per connection (the OS caches the file for all of them): six
    // connections at SQLite's default 2 MiB each were most of `serve`'s memory. An 8 MiB
    // cache for the writer cost 6 MB of RSS for no fan-out gain beyond the noise.
    conn.execute_batch(
        "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -512;",
    )?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

impl SqliteStore {
    fn assemble(location: Location, path: &Path, writer: Connection, keys: Keys) -> Self {
        let loc = location.clone();
        let p = path.to_path_buf();
        Self {
            location,
            writer: Mutex::new(writer),
            readers: Pool::new(
                READERS,
                BUSY_TIMEOUT,
                Box::new(move || connect(&loc, &p, false)),
            ),
            keys,
        }
    }

    /// Open an existing store, upgrading its schema if needed.
    pub fn open(location: Location, path: &Path, keys: Keys) -> Result<Self, StoreError> {
        if !path.exists() {
            return Err(StoreError::NotInitialized {
                location: location.to_string(),
            });
        }
        let mut conn = connect(&location, path, false)?;
        let loc = location.to_string();
        let version = migrate::current_version(&mut SqliteConn(&conn))?;
        match version {
            None => return Err(StoreError::NotInitialized { location: loc }),
            Some(v) => migrate::check_not_newer(&loc, v)?,
        }
        if migrate::pending(&mut SqliteConn(&conn))? {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            migrate::upgrade(&mut SqliteConn(&tx), &loc)?;
            tx.commit()?;
        }
        Ok(Self::assemble(location, path, conn, keys))
    }

    /// Create a store in a new (or empty) file: schema and key envelope in one transaction.
    pub fn create(
        location: Location,
        path: &Path,
        keys: Keys,
        store_id: &str,
        envelope: &KeyEnvelope,
    ) -> Result<Self, StoreError> {
        let existed = path.exists();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.is_dir()
        {
            return Err(open_err(
                &location,
                format!("directory `{}` does not exist", parent.display()),
            ));
        }
        let result = (|| {
            let mut conn = connect(&location, path, true)?;
            if existed {
                let c: &mut dyn Conn = &mut SqliteConn(&conn);
                if migrate::current_version(c)?.is_some() {
                    return Err(StoreError::AlreadyInitialized {
                        location: location.to_string(),
                    });
                }
                let tables = c
                    .query_one("SELECT COUNT(*) FROM sqlite_master", &[])?
                    .int(0)?;
                if tables > 0 {
                    return Err(open_err(
                        &location,
                        "the file is an SQLite database of something else",
                    ));
                }
            }
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut c = SqliteConn(&tx);
                migrate::upgrade(&mut c, &location.to_string())?;
                meta::initialize(&mut c, store_id, envelope)?;
            }
            tx.commit()?;
            Ok(conn)
        })();
        match result {
            Ok(conn) => Ok(Self::assemble(location, path, conn, keys)),
            Err(e) => {
                if !existed {
                    remove_files(path);
                }
                Err(e)
            }
        }
    }
}

/// Remove a store file we created and its WAL companions.
pub(crate) fn remove_files(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

impl Store for SqliteStore {
    fn location(&self) -> &Location {
        &self.location
    }

    fn transact(
        &self,
        mode: Mode,
        f: &mut dyn FnMut(&mut dyn Tx) -> Result<Finish, StoreError>,
    ) -> Result<(), StoreError> {
        match mode {
            // One writer at a time: SQLite's writes are serialized whatever the mode.
            Mode::Write | Mode::WriteRows => {
                let mut conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
                run(&mut conn, TransactionBehavior::Immediate, &self.keys, f)
            }
            Mode::Read | Mode::Glance => {
                let mut conn = self.readers.get()?;
                run(&mut conn, TransactionBehavior::Deferred, &self.keys, f)
            }
        }
    }

    fn unlock(&self) -> Result<(), StoreError> {
        let conn = self.readers.get()?;
        self.keys.get(&mut SqliteConn(&conn)).map(|_| ())
    }
}

fn run(
    conn: &mut Connection,
    behavior: TransactionBehavior,
    keys: &Keys,
    f: &mut dyn FnMut(&mut dyn Tx) -> Result<Finish, StoreError>,
) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(behavior).map_err(map_err)?;
    let finish = {
        let mut c = SqliteConn(&tx);
        let mut sql_tx = SqlTx { conn: &mut c, keys };
        f(&mut sql_tx)
    };
    match finish {
        Ok(Finish::Commit) => tx.commit().map_err(map_err),
        Ok(Finish::Rollback) => tx.rollback().map_err(map_err),
        Err(e) => {
            let _ = tx.rollback();
            Err(e)
        }
    }
}

fn map_err(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => {
            StoreError::Busy
        }
        Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::Conflict(e.to_string()),
        _ => StoreError::Sqlite(e),
    }
}

/// A connection (or open transaction, which derefs to one).
struct SqliteConn<'a>(&'a Connection);

impl rusqlite::ToSql for Val<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Val::Null => ValueRef::Null,
            Val::Int(i) => ValueRef::Integer(i),
            Val::Bool(b) => ValueRef::Integer(i64::from(b)),
            Val::Text(s) => ValueRef::Text(s.as_bytes()),
            Val::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn cell(v: ValueRef<'_>) -> Result<Cell, StoreError> {
    Ok(match v {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(i) => Cell::Int(i),
        ValueRef::Real(r) => Cell::Int(r as i64),
        ValueRef::Text(t) => Cell::Text(
            String::from_utf8(t.to_vec())
                .map_err(|_| StoreError::Decode("text column is not UTF-8".into()))?,
        ),
        ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
    })
}

impl Conn for SqliteConn<'_> {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        self.0.execute_batch(sql).map_err(map_err)
    }

    fn execute(&mut self, sql: &str, params: &[Val<'_>]) -> Result<u64, StoreError> {
        let mut stmt = self.0.prepare_cached(sql).map_err(map_err)?;
        let n = stmt
            .execute(rusqlite::params_from_iter(params.iter()))
            .map_err(map_err)?;
        Ok(n as u64)
    }

    fn query(&mut self, sql: &str, params: &[Val<'_>]) -> Result<Vec<Row>, StoreError> {
        let mut out = Vec::new();
        for_each_row(self.0, sql, params, |r| {
            out.push(r);
            Ok(())
        })?;
        Ok(out)
    }

    fn query_each(
        &mut self,
        sql: &str,
        params: &[Val<'_>],
        f: &mut dyn FnMut(&Row) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for_each_row(self.0, sql, params, |r| f(&r))
    }
}

fn for_each_row(
    conn: &Connection,
    sql: &str,
    params: &[Val<'_>],
    mut f: impl FnMut(Row) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(map_err)?;
    let n = stmt.column_count();
    let mut rows = stmt
        .query(rusqlite::params_from_iter(params.iter()))
        .map_err(map_err)?;
    while let Some(r) = rows.next().map_err(map_err)? {
        let mut cells = Vec::with_capacity(n);
        for i in 0..n {
            cells.push(cell(r.get_ref(i)?)?);
        }
        f(Row(cells))?;
    }
    Ok(())
}
