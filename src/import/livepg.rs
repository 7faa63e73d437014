//! A live NanoMDM (or Fleet-style `nano_`) database on PostgreSQL, read with the `postgres`
//! crate in one `REPEATABLE READ READ ONLY` transaction (one consistent snapshot, nothing
//! written), table by table through server-side cursors so memory stays flat. Rows go to the
//! same [`RowSink`] the dump reader feeds.

use std::str::FromStr;
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres::SimpleQueryMessage;
use postgres_openssl::MakeTlsConnector;

use super::ImportError;
use super::sqldump::{Position, RowSink, Value, decode_hex};

const TABLES: &[&str] = &[
    "cert_auth_associations",
    "devices",
    "enrollments",
    "users",
    "push_certs",
];
const FETCH: usize = 2000;

fn tool(label: &str, e: impl std::fmt::Display) -> ImportError {
    ImportError::Tool {
        what: format!("reading `{label}`"),
        reason: e.to_string(),
    }
}

/// A PostgreSQL failure with the server's own message (`database "x" does not exist`) or the
/// connection's cause (`Connection refused`), not the client's bare `db error`.
fn pg(label: &str, e: &postgres::Error) -> ImportError {
    tool(label, crate::store::postgres_error_text(e))
}

fn connect(url: &str, label: &str) -> Result<postgres::Client, ImportError> {
    let mut config = postgres::Config::from_str(url).map_err(|e| tool(label, e))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    config.application_name("mdmctl import-devices");
    let mut b = SslConnector::builder(SslMethod::tls()).map_err(|e| tool(label, e))?;
    match std::env::var_os("PGSSLROOTCERT") {
        Some(ca) => b.set_ca_file(&ca).map_err(|e| tool(label, e))?,
        None => b.set_verify(SslVerifyMode::NONE),
    }
    config
        .connect(MakeTlsConnector::new(b.build()))
        .map_err(|e| pg(label, &e))
}

/// Stream every NanoMDM table of the database into `sink`; returns the rows read.
pub fn read<S: RowSink<Error = ImportError>>(
    url: &str,
    label: &str,
    sink: &mut S,
) -> Result<u64, ImportError> {
    let mut c = connect(url, label)?;
    c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .map_err(|e| pg(label, &e))?;
    let list = |c: &mut postgres::Client, sql: &str| -> Result<Vec<Vec<String>>, ImportError> {
        let mut out = Vec::new();
        for m in c.simple_query(sql).map_err(|e| pg(label, &e))? {
            if let SimpleQueryMessage::Row(r) = m {
                out.push(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or_default().to_string())
                        .collect(),
                );
            }
        }
        Ok(out)
    };
    let present: Vec<String> = list(
        &mut c,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()",
    )?
    .into_iter()
    .map(|r| r[0].clone())
    .collect();
    let bytea = list(
        &mut c,
        "SELECT table_name, column_name FROM information_schema.columns \
         WHERE table_schema = current_schema() AND data_type = 'bytea'",
    )?;
    let prefix = if present.iter().any(|t| t == "nano_devices") {
        "nano_"
    } else {
        ""
    };
    let mut rows = 0u64;
    for base in TABLES {
        let table = format!("{prefix}{base}");
        if !present.contains(&table) {
            continue;
        }
        sink.wants(&table);
        c.batch_execute(&format!(
            "DECLARE mdmctl_import NO SCROLL CURSOR FOR SELECT * FROM \"{table}\""
        ))
        .map_err(|e| pg(label, &e))?;
        let mut columns: Vec<String> = Vec::new();
        let mut is_bytea: Vec<bool> = Vec::new();
        loop {
            let batch = c
                .simple_query(&format!("FETCH {FETCH} FROM mdmctl_import"))
                .map_err(|e| pg(label, &e))?;
            let mut got = 0;
            for m in batch {
                let SimpleQueryMessage::Row(r) = m else {
                    continue;
                };
                if columns.is_empty() {
                    columns = r.columns().iter().map(|c| c.name().to_string()).collect();
                    is_bytea = columns
                        .iter()
                        .map(|col| bytea.iter().any(|b| b[0] == table && b[1] == *col))
                        .collect();
                }
                got += 1;
                rows += 1;
                let mut values = Vec::with_capacity(columns.len());
                for (i, b) in is_bytea.iter().enumerate() {
                    values.push(match r.get(i) {
                        None => Value::Null,
                        Some(v) if *b && v.starts_with("\\x") => {
                            Value::Data(decode_hex(&v.as_bytes()[2..]).ok_or_else(|| {
                                tool(label, format!("`{table}`: a bytea value is not hex"))
                            })?)
                        }
                        Some(v) => Value::Data(v.as_bytes().to_vec()),
                    });
                }
                let at = Position {
                    line: rows,
                    offset: 0,
                    table: Some(table.clone()),
                };
                sink.row(&table, &columns, values, &at)?;
            }
            if got < FETCH {
                break;
            }
        }
        c.batch_execute("CLOSE mdmctl_import")
            .map_err(|e| pg(label, &e))?;
    }
    for base in ["commands", "enrollment_queue"] {
        let table = format!("{prefix}{base}");
        if !present.contains(&table) {
            continue;
        }
        let n: u64 = list(&mut c, &format!("SELECT COUNT(*) FROM \"{table}\""))?
            .first()
            .and_then(|r| r[0].parse().ok())
            .unwrap_or(0);
        for _ in 0..n {
            sink.other_row(&table);
        }
    }
    c.batch_execute("COMMIT").map_err(|e| pg(label, &e))?;
    Ok(rows)
}
