//! Numbered schema migrations, embedded per backend and applied in order inside one
//! transaction. A store whose schema is newer than this binary knows is refused.

use super::sql::Conn;
use super::{Backend, StoreError};
use crate::timestamp::Timestamp;

pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
    /// What an upgrade must tell the admin (a log warning and an activity), run after `sql`
    /// on a store that existed before.
    pub notice: Option<Notice>,
}

/// What an upgrade says to the admin, if anything.
pub(crate) type Notice = fn(&mut dyn Conn) -> Result<Option<String>, StoreError>;

/// The schema version this mdmctl writes.
pub const LATEST_SCHEMA_VERSION: i64 = 13;

const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("migrations/sqlite/0001_init.sql"),
        notice: None,
    },
    Migration {
        version: 2,
        name: "desired_state",
        sql: include_str!("migrations/sqlite/0002_desired_state.sql"),
        notice: None,
    },
    Migration {
        version: 3,
        name: "import",
        sql: include_str!("migrations/sqlite/0003_import.sql"),
        notice: None,
    },
    Migration {
        version: 4,
        name: "serve",
        sql: include_str!("migrations/sqlite/0004_serve.sql"),
        notice: None,
    },
    Migration {
        version: 5,
        name: "reconcile",
        sql: include_str!("migrations/sqlite/0005_reconcile.sql"),
        notice: None,
    },
    Migration {
        version: 6,
        name: "disk_encryption",
        sql: include_str!("migrations/sqlite/0006_disk_encryption.sql"),
        notice: None,
    },
    Migration {
        version: 7,
        name: "declarations",
        sql: include_str!("migrations/sqlite/0007_declarations.sql"),
        notice: None,
    },
    Migration {
        version: 8,
        name: "identity_renewal",
        sql: include_str!("migrations/sqlite/0008_identity_renewal.sql"),
        notice: None,
    },
    Migration {
        version: 9,
        name: "device_facts",
        sql: include_str!("migrations/sqlite/0009_device_facts.sql"),
        notice: None,
    },
    Migration {
        version: 10,
        name: "security",
        sql: include_str!("migrations/sqlite/0010_security.sql"),
        notice: Some(tokens_became_admin),
    },
    Migration {
        version: 11,
        name: "instances",
        sql: include_str!("migrations/sqlite/0011_instances.sql"),
        notice: None,
    },
    Migration {
        version: 12,
        name: "cutover",
        sql: include_str!("migrations/sqlite/0012_cutover.sql"),
        notice: None,
    },
    Migration {
        version: 13,
        name: "abm_assign",
        sql: include_str!("migrations/sqlite/0013_abm_assign.sql"),
        notice: None,
    },
];

const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("migrations/postgres/0001_init.sql"),
        notice: None,
    },
    Migration {
        version: 2,
        name: "desired_state",
        sql: include_str!("migrations/postgres/0002_desired_state.sql"),
        notice: None,
    },
    Migration {
        version: 3,
        name: "import",
        sql: include_str!("migrations/postgres/0003_import.sql"),
        notice: None,
    },
    Migration {
        version: 4,
        name: "serve",
        sql: include_str!("migrations/postgres/0004_serve.sql"),
        notice: None,
    },
    Migration {
        version: 5,
        name: "reconcile",
        sql: include_str!("migrations/postgres/0005_reconcile.sql"),
        notice: None,
    },
    Migration {
        version: 6,
        name: "disk_encryption",
        sql: include_str!("migrations/postgres/0006_disk_encryption.sql"),
        notice: None,
    },
    Migration {
        version: 7,
        name: "declarations",
        sql: include_str!("migrations/postgres/0007_declarations.sql"),
        notice: None,
    },
    Migration {
        version: 8,
        name: "identity_renewal",
        sql: include_str!("migrations/postgres/0008_identity_renewal.sql"),
        notice: None,
    },
    Migration {
        version: 9,
        name: "device_facts",
        sql: include_str!("migrations/postgres/0009_device_facts.sql"),
        notice: None,
    },
    Migration {
        version: 10,
        name: "security",
        sql: include_str!("migrations/postgres/0010_security.sql"),
        notice: Some(tokens_became_admin),
    },
    Migration {
        version: 11,
        name: "instances",
        sql: include_str!("migrations/postgres/0011_instances.sql"),
        notice: None,
    },
    Migration {
        version: 12,
        name: "cutover",
        sql: include_str!("migrations/postgres/0012_cutover.sql"),
        notice: None,
    },
    Migration {
        version: 13,
        name: "abm_assign",
        sql: include_str!("migrations/postgres/0013_abm_assign.sql"),
        notice: None,
    },
];

/// Schema 10 gave API tokens roles; the tokens made before keep every right as `admin`.
fn tokens_became_admin(conn: &mut dyn Conn) -> Result<Option<String>, StoreError> {
    let n = conn
        .query_one(
            "SELECT COUNT(*) FROM api_tokens WHERE revoked_at IS NULL",
            &[],
        )?
        .int(0)?;
    Ok((n > 0).then(|| {
        format!(
            "schema 10: the {n} existing API token(s) became `admin` (tokens now have roles); \
             give CI and read-only users narrower tokens (`mdmctl token create --role gitops|observer`) \
             and revoke the old ones (`mdmctl token list`, `mdmctl token revoke`)"
        )
    }))
}

fn migrations(backend: Backend) -> &'static [Migration] {
    match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    }
}

/// The schema version of the database (its highest applied migration), or `None` if it is
/// not an mdmctl store.
pub(crate) fn current_version(conn: &mut dyn Conn) -> Result<Option<i64>, StoreError> {
    if !table_exists(conn, "schema_migrations")? {
        return Ok(None);
    }
    let row = conn.query_one("SELECT MAX(version) FROM schema_migrations", &[])?;
    Ok(Some(row.opt_int(0)?.unwrap_or(0)))
}

/// Whether some embedded migration has not been applied yet.
pub(crate) fn pending(conn: &mut dyn Conn) -> Result<bool, StoreError> {
    let applied = applied_versions(conn)?;
    Ok(migrations(conn.backend())
        .iter()
        .any(|m| !applied.contains(&m.version)))
}

fn applied_versions(conn: &mut dyn Conn) -> Result<Vec<i64>, StoreError> {
    if !table_exists(conn, "schema_migrations")? {
        return Ok(Vec::new());
    }
    conn.query("SELECT version FROM schema_migrations", &[])?
        .iter()
        .map(|r| r.int(0))
        .collect()
}

pub(crate) fn table_exists(conn: &mut dyn Conn, table: &str) -> Result<bool, StoreError> {
    let sql = match conn.backend() {
        Backend::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
        // The table must be visible on the search path, like every query mdmctl runs.
        Backend::Postgres => {
            "SELECT COUNT(*) FROM (SELECT to_regclass(?) AS t) r WHERE r.t IS NOT NULL"
        }
    };
    Ok(conn.query_one(sql, &[table.into()])?.int(0)? > 0)
}

/// Refuse a store written by a newer mdmctl.
pub(crate) fn check_not_newer(location: &str, version: i64) -> Result<(), StoreError> {
    if version > LATEST_SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            location: location.to_string(),
            found: version,
            supported: LATEST_SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// Apply every embedded migration the database has not recorded, in version order, in the
/// caller's transaction. Versions are compared as a set, not against the highest one, so
/// migrations written on parallel branches apply whatever order they land in.
/// Returns the versions applied.
pub(crate) fn upgrade(conn: &mut dyn Conn, location: &str) -> Result<Vec<i64>, StoreError> {
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        &[],
    )?;
    let done = applied_versions(conn)?;
    if let Some(max) = done.iter().max() {
        check_not_newer(location, *max)?;
    }
    let mut applied = Vec::new();
    let existed = !done.is_empty();
    for m in migrations(conn.backend()) {
        if done.contains(&m.version) {
            continue;
        }
        conn.batch(m.sql)?;
        if let Some(notice) = m.notice.filter(|_| existed)
            && let Some(text) = notice(conn)?
        {
            tracing::warn!("{text}");
            conn.execute(
                "INSERT INTO activities (at, actor, kind, device_id, summary, details) VALUES (?, ?, ?, ?, ?, ?)",
                &[
                    Timestamp::now().into(),
                    "mdmctl".into(),
                    "store.upgraded".into(),
                    None::<&str>.into(),
                    text.as_str().into(),
                    serde_json::json!({ "version": m.version }).to_string().as_str().into(),
                ],
            )?;
        }
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            &[m.version.into(), m.name.into(), Timestamp::now().into()],
        )?;
        applied.push(m.version);
    }
    Ok(applied)
}
