//! Sources: telling what a SOURCE argument is from its content (or `--from`), opening it
//! (gzip included), and streaming it into the [`Importer`]. A live MySQL database is read by
//! `mysqldump --single-transaction` (one consistent, read-only snapshot) into a private
//! temporary file before the store transaction starts, so a retried transaction reads exactly
//! the same rows; a live PostgreSQL database is read directly ([`super::livepg`]).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::nanomdm::{NanoSink, base_table};
use super::sqldump::{Dialect, read_dump};
use super::{ImportError, Importer};
use crate::store::redact_url;

/// What `--from` may say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum From {
    Nanomdm,
    Fleet,
    Micromdm,
    Csv,
}

/// No `Debug`: a live URL may hold a password.
#[derive(Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// A plain SQL dump of NanoMDM's (or Fleet's) tables.
    SqlDump { dialect: Dialect, gzip: bool },
    /// A live PostgreSQL database (the URL keeps its password; it is never printed).
    LivePostgres { url: String },
    /// MicroMDM v1's BoltDB file.
    Bolt,
    /// A NanoMDM `filekv` or `file` storage directory.
    Dir,
    /// A CSV device list (gzip-compressed or not).
    Csv { gzip: bool },
}

/// An opened, identified source.
pub struct Source {
    /// What the user gave (a path, or a URL without its password).
    pub label: String,
    pub path: PathBuf,
    pub kind: SourceKind,
    /// `nanomdm`, `fleet`, `csv`.
    pub origin: String,
    /// A human line: "NanoMDM on MySQL: mysqldump file (gzip)".
    pub detected: String,
    /// A dump made from a live database: a file already unlinked from the filesystem (so
    /// nothing of it outlives the process, whatever kills it), read through this handle.
    temp: Option<File>,
}

fn read_head(path: &Path, n: usize) -> Result<Vec<u8>, ImportError> {
    // A FIFO or a device (`/dev/zero`) is refused before it is opened: either would hang or
    // never end.
    let mut f = crate::input::open_regular(path)?;
    let mut head = vec![0; n];
    let mut got = 0;
    while got < n {
        match f.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) => {
                return Err(ImportError::Read {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                });
            }
        }
    }
    head.truncate(got);
    Ok(head)
}

fn gunzip_head(path: &Path, n: usize) -> Result<Vec<u8>, ImportError> {
    let f = crate::input::open_regular(path)?;
    let mut dec = flate2::read::MultiGzDecoder::new(f).take(n as u64);
    let mut out = Vec::new();
    dec.read_to_end(&mut out).map_err(|e| ImportError::Read {
        path: path.display().to_string(),
        reason: format!("damaged gzip data: {e}"),
    })?;
    Ok(out)
}

/// Identify a SOURCE argument.
pub fn open(spec: &str, from: Option<From>) -> Result<Source, ImportError> {
    if spec.starts_with("mysql://") || spec.starts_with("mariadb://") {
        return live_mysql(spec, from);
    }
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        return live_postgres(spec, from);
    }
    let mut path = PathBuf::from(spec);
    // `-` (stdin), or a FIFO named on purpose (`/dev/stdin` from a pipe, `<(zcat dump.gz)`):
    // copied once (at most 16 GiB) into an unlinked private file, then read like any file (the
    // format detection peeks at its start, the importer reads it again). Nothing is kept in
    // memory. A device (`/dev/zero`) is still refused: it never ends.
    let mut spooled = None;
    let fifo = {
        use std::os::unix::fs::FileTypeExt;
        std::fs::metadata(&path).is_ok_and(|m| m.file_type().is_fifo())
    };
    if spec == "-" || fifo {
        let mut file = unlinked_temp("stdin")?;
        let copied = if spec == "-" {
            std::io::copy(&mut std::io::stdin().lock().take(MAX_STREAM + 1), &mut file)
        } else {
            File::open(&path).and_then(|f| std::io::copy(&mut f.take(MAX_STREAM + 1), &mut file))
        };
        let copied = copied.map_err(|e| ImportError::Read {
            path: spec.into(),
            reason: e.to_string(),
        })?;
        if copied > MAX_STREAM {
            return Err(ImportError::Read {
                path: spec.into(),
                reason: format!(
                    "the stream is larger than {} GiB; import it from a file",
                    MAX_STREAM >> 30
                ),
            });
        }
        use std::os::fd::AsRawFd;
        path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        spooled = Some(file);
    }
    if spooled.is_some() {
        let mut s = detect(spec, path, from)?;
        s.temp = spooled;
        return Ok(s);
    }
    detect(spec, path, from)
}

/// What the file at `path` holds (`spec` names it in messages).
fn detect(spec: &str, path: PathBuf, from: Option<From>) -> Result<Source, ImportError> {
    if path.is_dir() {
        let Some(storage) = super::nanofile::detect(&path) else {
            return Err(ImportError::Unknown {
                path: spec.into(),
                reason: "a directory that is neither NanoMDM `filekv` storage (`devices/`, `enrollments/`) nor `file` storage (`<id>/Authenticate.plist`)".into(),
            });
        };
        return Ok(Source {
            label: spec.into(),
            path,
            kind: SourceKind::Dir,
            origin: "nanomdm".into(),
            detected: format!("NanoMDM `{storage}` storage directory"),
            temp: None,
        });
    }
    let mut head = read_head(&path, 8192)?;
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    if gzip {
        head = gunzip_head(&path, 8192)?;
    }
    if head.starts_with(b"PGDMP") {
        return Err(ImportError::CustomFormat { path: spec.into() });
    }
    if head.starts_with(b"SQLite format 3") {
        return Err(ImportError::Unknown {
            path: spec.into(),
            reason: "a SQLite database".into(),
        });
    }
    if super::micromdm::is_bolt(&head) || (matches!(from, Some(From::Micromdm)) && !gzip) {
        return Ok(Source {
            label: spec.into(),
            path,
            kind: SourceKind::Bolt,
            origin: "micromdm".into(),
            detected: "MicroMDM v1 BoltDB (micromdm.db)".into(),
            temp: None,
        });
    }
    let text = String::from_utf8_lossy(&head);
    let gz = if gzip { ", gzip" } else { "" };
    let first_line = text.lines().next().unwrap_or("").to_ascii_lowercase();
    let csv_like = matches!(from, Some(From::Csv))
        || (from.is_none()
            && first_line
                .split(',')
                .any(|c| c.trim().trim_matches('"') == "udid"));
    if csv_like {
        return Ok(Source {
            label: spec.into(),
            path,
            kind: SourceKind::Csv { gzip },
            origin: "csv".into(),
            detected: format!("CSV device list{gz}"),
            temp: None,
        });
    }
    let pg = text.contains("PostgreSQL database dump")
        || text.contains("COPY ")
        || text.contains("standard_conforming_strings");
    let my = text.contains("MySQL dump")
        || text.contains("MariaDB dump")
        || text.contains("/*!40")
        || text.contains("LOCK TABLES")
        || text.contains('`');
    let sqlish = {
        let t = text.trim_start();
        ["--", "/*", "CREATE", "INSERT", "SET", "DROP", "LOCK"]
            .iter()
            .any(|p| t.get(..p.len()).is_some_and(|s| s.eq_ignore_ascii_case(p)))
    };
    let dialect = if pg {
        Dialect::Postgres
    } else if my || sqlish {
        Dialect::MySql
    } else {
        return Err(ImportError::Unknown {
            path: spec.into(),
            reason: "neither a SQL dump nor a CSV with a `udid` column".into(),
        });
    };
    // Fleet's own tables come first in its dumps (alphabetical), so its `nano_` tables are
    // rarely in the head; the reader relabels the source when it meets them.
    let fleet = matches!(from, Some(From::Fleet))
        || [
            "nano_",
            "`app_config_json`",
            "`abm_tokens`",
            "`aggregated_stats`",
        ]
        .iter()
        .any(|m| text.contains(m));
    let (origin, who) = if fleet {
        ("fleet", "Fleet")
    } else {
        ("nanomdm", "NanoMDM")
    };
    let tool = match dialect {
        Dialect::MySql => "MySQL: mysqldump file",
        Dialect::Postgres => "PostgreSQL: pg_dump plain file",
    };
    Ok(Source {
        label: spec.into(),
        path,
        kind: SourceKind::SqlDump { dialect, gzip },
        origin: origin.into(),
        detected: format!("{who} on {tool}{gz}"),
        temp: None,
    })
}

fn temp_path(tag: &str) -> PathBuf {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "mdmctl-import-{tag}-{}-{n}.sql",
        std::process::id()
    ))
}

fn tool_error(tool: &str, spec: &str, e: std::io::Error) -> ImportError {
    if e.kind() == std::io::ErrorKind::NotFound {
        ImportError::ToolMissing {
            tool: tool.into(),
            source_name: redact_url(spec),
        }
    } else {
        ImportError::Tool {
            what: format!("`{tool}`"),
            reason: e.to_string(),
        }
    }
}

/// Run a dump tool into a private temporary file, unlinked as soon as it is created: the dump
/// holds the push certificate's key and every device's push credentials, and must not be left
/// behind by a Ctrl-C or a crash.
/// The most read from stdin or a FIFO (copied to a private temporary file first).
const MAX_STREAM: u64 = 16 << 30;

/// A new private file (0600), already unlinked: nothing of it outlives the process.
fn unlinked_temp(tool: &str) -> Result<File, ImportError> {
    let out = temp_path(tool);
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&out)
            .map_err(|e| ImportError::Read {
                path: out.display().to_string(),
                reason: e.to_string(),
            })?
    };
    let _ = std::fs::remove_file(&out);
    Ok(file)
}

fn run_dump(tool: &str, spec: &str, mut cmd: Command) -> Result<File, ImportError> {
    let file = unlinked_temp(tool)?;
    let sink = file.try_clone().map_err(|e| ImportError::Read {
        path: tool.to_string(),
        reason: e.to_string(),
    })?;
    let output = cmd
        .stdout(sink)
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| tool_error(tool, spec, e))?;
    if !output.status.success() {
        let msg = String::from_utf8_lossy(&output.stderr);
        return Err(ImportError::Tool {
            what: format!("`{tool}` of `{}`", redact_url(spec)),
            reason: msg.trim().lines().last().unwrap_or("failed").to_string(),
        });
    }
    Ok(file)
}

struct UrlParts {
    user: Option<String>,
    password: Option<String>,
    host: String,
    port: Option<String>,
    db: String,
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = super::sqldump::decode_hex(&b[i + 1..i + 3])
        {
            out.extend(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_url(spec: &str) -> Option<UrlParts> {
    let rest = spec.split_once("://")?.1;
    // User info ends at the last `@` (an unencoded password may hold `/` or `?`).
    let (auth, host_path) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    let (host, path) = host_path.split_once('/').unwrap_or((host_path, ""));
    let db = path.split('?').next().unwrap_or("").to_string();
    let (user, password) = match auth {
        Some(a) => match a.split_once(':') {
            Some((u, p)) => (Some(pct_decode(u)), Some(pct_decode(p))),
            None => (Some(pct_decode(a)), None),
        },
        None => (None, None),
    };
    let (host, port) = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => {
            (h.to_string(), Some(p.to_string()))
        }
        _ => (host.to_string(), None),
    };
    Some(UrlParts {
        user,
        password,
        host: if host.is_empty() {
            "localhost".into()
        } else {
            host
        },
        port,
        db,
    })
}

fn live_mysql(spec: &str, from: Option<From>) -> Result<Source, ImportError> {
    let u = parse_url(spec)
        .filter(|u| !u.db.is_empty())
        .ok_or_else(|| ImportError::Unknown {
            path: redact_url(spec),
            reason: "a MySQL URL needs a database: `mysql://user[:password]@host[:port]/DATABASE`"
                .into(),
        })?;
    let mut cmd = Command::new("mysqldump");
    cmd.arg("--single-transaction")
        .arg("--skip-lock-tables")
        .arg("--no-tablespaces")
        .arg("--hex-blob")
        .arg("--skip-triggers")
        .arg(format!("--host={}", u.host));
    if let Some(p) = &u.port {
        cmd.arg(format!("--port={p}"));
    }
    if let Some(user) = &u.user {
        cmd.arg(format!("--user={user}"));
    }
    if let Some(pw) = &u.password {
        // Through the environment, never on the command line.
        cmd.env("MYSQL_PWD", pw);
    }
    cmd.arg(&u.db);
    let dump = run_dump("mysqldump", spec, cmd)?;
    let fleet = matches!(from, Some(From::Fleet));
    Ok(Source {
        label: redact_url(spec),
        path: PathBuf::new(),
        kind: SourceKind::SqlDump {
            dialect: Dialect::MySql,
            gzip: false,
        },
        origin: if fleet { "fleet" } else { "nanomdm" }.into(),
        detected: format!(
            "{} on MySQL: live database `{}` (one consistent snapshot via `mysqldump --single-transaction`)",
            if fleet { "Fleet" } else { "NanoMDM" },
            u.db
        ),
        temp: Some(dump),
    })
}

fn live_postgres(spec: &str, from: Option<From>) -> Result<Source, ImportError> {
    let u = parse_url(spec).ok_or_else(|| ImportError::Unknown {
        path: redact_url(spec),
        reason: "not a `postgres://user@host/db` URL".into(),
    })?;
    let fleet = matches!(from, Some(From::Fleet));
    Ok(Source {
        label: redact_url(spec),
        path: PathBuf::new(),
        kind: SourceKind::LivePostgres { url: spec.into() },
        origin: if fleet { "fleet" } else { "nanomdm" }.into(),
        detected: format!(
            "{} on PostgreSQL: live database `{}` (one consistent read-only snapshot)",
            if fleet { "Fleet" } else { "NanoMDM" },
            if u.db.is_empty() { "(default)" } else { &u.db }
        ),
        temp: None,
    })
}

impl Source {
    fn reader(&self) -> Result<Box<dyn Read>, ImportError> {
        let read_error = |e: std::io::Error| ImportError::Read {
            path: self.label.clone(),
            reason: e.to_string(),
        };
        let f = match &self.temp {
            Some(held) => {
                let mut f = held.try_clone().map_err(read_error)?;
                std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0)).map_err(read_error)?;
                f
            }
            None => crate::input::open_regular(&self.path)?,
        };
        let gzip = matches!(
            self.kind,
            SourceKind::SqlDump { gzip: true, .. } | SourceKind::Csv { gzip: true }
        );
        Ok(if gzip {
            Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
                256 * 1024,
                f,
            )))
        } else {
            Box::new(f)
        })
    }

    /// Stream the source into the importer.
    pub fn read_into(
        &self,
        imp: &mut Importer<'_>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), ImportError> {
        imp.begin_source(&self.label, &self.detected, &self.origin);
        match &self.kind {
            SourceKind::Csv { .. } => {
                let bytes = super::csv::read_csv(self.reader()?, &self.label, imp)?;
                imp.end_source(bytes);
            }
            SourceKind::SqlDump { dialect, .. } => {
                let mut sink = NanoSink::new(imp, &self.label, progress);
                let summary =
                    read_dump(self.reader()?, *dialect, &mut sink).map_err(|e| match e {
                        ImportError::Dump { path, error } if path.is_empty() => ImportError::Dump {
                            path: self.label.clone(),
                            error,
                        },
                        other => other,
                    })?;
                let mut found: Vec<String> =
                    summary.tables.iter().map(|(t, _)| t.clone()).collect();
                found.extend(sink.tables_seen.iter().cloned());
                let bytes = summary.bytes;
                self.finish_tables(sink, found, bytes)?;
            }
            SourceKind::Dir => {
                super::nanofile::read(&self.path, &self.label, imp)?;
                imp.end_source(0);
            }
            SourceKind::Bolt => {
                let bytes = super::micromdm::read(&self.path, &self.label, imp)?;
                imp.end_source(bytes);
            }
            SourceKind::LivePostgres { url } => {
                let mut sink = NanoSink::new(imp, &self.label, progress);
                super::livepg::read(url, &self.label, &mut sink)?;
                let found = sink.tables_seen.clone();
                self.finish_tables(sink, found, 0)?;
            }
        }
        Ok(())
    }

    /// After a NanoMDM reader: refuse a source without NanoMDM tables, count what is left
    /// behind.
    fn finish_tables(
        &self,
        sink: NanoSink<'_, '_, '_>,
        mut found: Vec<String>,
        bytes: u64,
    ) -> Result<(), ImportError> {
        let has = sink
            .tables_seen
            .iter()
            .any(|t| matches!(base_table(t), "devices" | "enrollments"));
        let (commands, queued) = (sink.commands, sink.queued);
        let (fleet_assets, fleet_encrypted) = (sink.fleet_assets, sink.fleet_encrypted);
        let imp = sink.imp;
        let find = |n: &str| {
            fleet_assets
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
        };
        if let (Some(c), Some(k)) = (find("apns_cert"), find("apns_key")) {
            imp.push_cert(c, k);
        }
        if let (Some(c), Some(k)) = (find("ca_cert"), find("ca_key")) {
            imp.scep_ca(&format!("{} (mdm_config_assets)", self.label), c, k);
        }
        if fleet_encrypted > 0 {
            imp.asset_not_imported(
                "apns/scep_ca",
                "Fleet's push certificate and SCEP CA in `mdm_config_assets`",
                "encrypted; pass `--fleet-private-key FILE` (Fleet's `server.private_key`)",
            );
        }
        if !has {
            found.sort();
            found.dedup();
            return Err(ImportError::NoTables {
                path: self.label.clone(),
                found: if found.is_empty() {
                    "no table data".into()
                } else {
                    let names: Vec<String> = found.iter().map(|t| format!("`{t}`")).collect();
                    format!("rows for {}", names.join(", "))
                },
            });
        }
        imp.commands_left_behind(commands, queued);
        imp.end_source(bytes);
        Ok(())
    }

    /// Size of the input on disk (for progress bars).
    pub fn size(&self) -> Option<u64> {
        match self.kind {
            SourceKind::SqlDump { gzip: false, .. }
            | SourceKind::Csv { gzip: false }
            | SourceKind::Bolt => match &self.temp {
                Some(held) => held.metadata().ok().map(|m| m.len()),
                None => std::fs::metadata(&self.path).ok().map(|m| m.len()),
            },
            SourceKind::SqlDump { gzip: true, .. }
            | SourceKind::Csv { gzip: true }
            | SourceKind::LivePostgres { .. }
            | SourceKind::Dir => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_with_slashes_and_question_marks_parse() {
        let u = parse_url("mysql://nano:pa/ss?w@db.example:3307/nanomdm?ssl=1").unwrap();
        assert_eq!(u.user.as_deref(), Some("nano"));
        assert_eq!(u.password.as_deref(), Some("pa/ss?w"));
        assert_eq!(u.host, "db.example");
        assert_eq!(u.port.as_deref(), Some("3307"));
        assert_eq!(u.db, "nanomdm");
        let plain = parse_url("postgres://db/fleet").unwrap();
        assert_eq!(
            (plain.user, plain.host.as_str(), plain.db.as_str()),
            (None, "db", "fleet")
        );
    }
}
