//! `import-devices`: moving device records, push certificates, old SCEP CAs and identity
//! hashes out of an old MDM's storage into the store, losslessly and all-or-nothing.
//!
//! Owns: the common record model every source reader produces ([`SrcDevice`],
//! [`SrcEnrollment`], [`SrcUser`]); the one writer ([`Importer`]) that upserts them inside the
//! caller's store transaction with the rules (idempotency through per-record fingerprints,
//! "kept newer" for devices that already checked in to mdmctl, skipped records with reasons,
//! synthesized Authenticate/TokenUpdate messages, topic and expiry checks); source detection
//! ([`source`]); and the readers: SQL dumps ([`sqldump`]), NanoMDM / Fleet tables
//! ([`nanomdm`]), live PostgreSQL ([`livepg`]), NanoMDM file storages ([`nanofile`]),
//! MicroMDM's BoltDB ([`micromdm`]), CSV ([`csv`]).

pub mod csv;
pub mod identity;
pub mod livepg;
pub mod micromdm;
pub mod nanofile;
pub mod nanomdm;
pub mod source;
pub mod sqldump;

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use zeroize::Zeroizing;

use crate::assets::AssetError;
use crate::assets::apns::{SetMdmApple, set_mdm_apple};
use crate::pki::{self, PkiError};
use crate::store::{
    AssetKind, AssetState, DeviceRecord, EnrollmentRecord, ImportRow, NewActivity, NewAsset,
    StoreError, Tx,
};
use crate::timestamp::Timestamp;

pub use source::{Source, SourceKind};
pub use sqldump::DumpError;

/// Certificates expiring within this many days are reported.
pub const EXPIRY_WARN_DAYS: i64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("`{path}`: malformed dump: {error}")]
    Dump { path: String, error: DumpError },
    #[error("cannot read `{path}`: {reason}")]
    Read { path: String, reason: String },
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    #[error("`{path}` is a pg_dump custom-format archive (`-Fc`), not a plain SQL dump")]
    CustomFormat { path: String },
    #[error("cannot tell what `{path}` is: {reason}")]
    Unknown { path: String, reason: String },
    #[error("`{path}` is a damaged BoltDB file: {reason}")]
    DamagedBolt { path: String, reason: String },
    #[error("`{path}` holds no NanoMDM tables (found {found})")]
    NoTables { path: String, found: String },
    #[error(
        "`{path}` is a BoltDB file but not MicroMDM's: it has no `mdm.Devices` bucket (its buckets: {buckets})"
    )]
    NotMicroMdm { path: String, buckets: String },
    #[error(
        "`{path}`: table `{table}` is not laid out like NanoMDM's: it has no `{column}` column"
    )]
    Layout {
        path: String,
        table: String,
        column: String,
    },
    #[error("`{path}` line {line}: {reason}")]
    Csv {
        path: String,
        line: u64,
        reason: String,
    },
    #[error("{what} failed: {reason}")]
    Tool { what: String, reason: String },
    #[error("`{tool}` is not installed (needed to read `{source_name}`)")]
    ToolMissing { tool: String, source_name: String },
    #[error("{count} records were skipped and `--strict` is set; the first: {first}")]
    Strict {
        count: usize,
        first: String,
        /// What the import found, for `--report`.
        summary: Box<Summary>,
    },
    #[error("`{path}`: {reason}")]
    Asset { path: String, reason: String },
    #[error(transparent)]
    Assets(#[from] AssetError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Not an error: a dry run ends by rolling back.
    #[error("dry run")]
    DryRun(Box<Summary>),
}

impl crate::diagnose::Diagnose for ImportError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            ImportError::Dump { .. } => "re-create the dump (`mysqldump DB > dump.sql` or `pg_dump DB > dump.sql`) and check it copied completely; nothing was written".into(),
            ImportError::Read { .. } => "check the path and its permissions".into(),
            ImportError::Input(e) => return e.hint(),
            ImportError::DamagedBolt { .. } => "copy `micromdm.db` again while MicroMDM is stopped, or take a consistent copy with MicroMDM's `GET /boltbackup`".into(),
            ImportError::CustomFormat { path } => format!("convert it to plain SQL with `pg_restore -f out.sql {path}`, then import `out.sql`"),
            ImportError::Unknown { .. } => "give a mysqldump or pg_dump file (plain or .gz), a `mysql://` or `postgres://` URL, or a CSV (`mdmctl import-devices --csv-template`); or say what it is with `--from`".into(),
            ImportError::NotMicroMdm { .. } => "give MicroMDM's own database, `micromdm.db` in its `-config-path` (default `/var/db/micromdm`), copied while MicroMDM is stopped".into(),
            ImportError::NoTables { .. } => "dump the old MDM's database (it has `devices` and `enrollments` tables), or pass the right `--from`".into(),
            ImportError::Layout { .. } => "dump the NanoMDM database itself (schema from micromdm/nanomdm storage/mysql or storage/pgsql), not a modified copy".into(),
            ImportError::Csv { .. } => "fix the row; `mdmctl import-devices --csv-template` prints the columns and an example".into(),
            ImportError::Tool { .. } => "check the URL, user and password (`MYSQL_PWD`/`PGPASSWORD` or in the URL) and that the database is reachable".into(),
            ImportError::ToolMissing { tool, .. } => format!("install `{tool}` (Debian: `apt-get install {}`), or dump the database elsewhere and import the file", if tool == "mysqldump" { "mariadb-client" } else { "postgresql-client" }),
            ImportError::Strict { .. } => "see every skipped record with `--report FILE` (try `--dry-run`), fix the source, or drop `--strict`".into(),
            ImportError::Asset { .. } => "check the file; the old MDM's CA is `ca.pem` and `ca.key` in a micromdm/scep depot".into(),
            ImportError::Assets(e) => return e.hint(),
            ImportError::Pki(e) => return e.hint(),
            ImportError::Store(e) => return e.hint(),
            ImportError::DryRun(_) => return None,
        })
    }

    fn unexpected(&self) -> bool {
        match self {
            ImportError::Store(e) => e.unexpected(),
            _ => false,
        }
    }
}

impl From<DumpError> for ImportError {
    fn from(error: DumpError) -> Self {
        ImportError::Dump {
            path: String::new(),
            error,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The record model.

/// A device-channel record as a source holds it.
#[derive(Clone, Debug, Default)]
pub struct SrcDevice {
    pub id: String,
    pub serial: Option<String>,
    /// The identity certificate (PEM or DER), when the source keeps it.
    pub identity_cert: Option<Vec<u8>>,
    /// A stored hash (hex SHA-256 of the DER) when the source keeps only that.
    pub identity_sha256: Option<String>,
    pub identity_not_after: Option<Timestamp>,
    pub unlock_token: Option<Vec<u8>>,
    pub authenticate_raw: Option<Vec<u8>>,
    pub token_update_raw: Option<Vec<u8>>,
    pub bootstrap_token: Option<Vec<u8>>,
    pub enrolled_at: Option<Timestamp>,
    pub last_seen: Option<Timestamp>,
    pub topic: Option<String>,
    pub model: Option<String>,
    pub model_name: Option<String>,
    pub product_name: Option<String>,
    pub os_version: Option<String>,
    pub build_version: Option<String>,
    pub device_name: Option<String>,
}

/// A channel (device or user) as a source holds it.
#[derive(Clone, Debug, Default)]
pub struct SrcEnrollment {
    pub id: String,
    pub device_id: String,
    pub kind: String,
    pub user_id: Option<String>,
    pub user_short_name: Option<String>,
    pub user_long_name: Option<String>,
    pub topic: String,
    pub push_magic: Option<String>,
    pub token: Option<Vec<u8>>,
    pub unlock_token: Option<Vec<u8>>,
    pub token_update_raw: Option<Vec<u8>>,
    pub enabled: bool,
    pub last_seen: Option<Timestamp>,
}

/// A user of a device (NanoMDM's `users` table): names and the user channel's TokenUpdate.
#[derive(Clone, Debug, Default)]
pub struct SrcUser {
    pub id: String,
    pub device_id: String,
    pub short_name: Option<String>,
    pub long_name: Option<String>,
    pub token_update_raw: Option<Vec<u8>>,
}

// ---------------------------------------------------------------------------------------------
// The summary.

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub found: u64,
    pub imported: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub kept_newer: u64,
    pub skipped: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Skipped {
    /// `device`, `enrollment`, `user`.
    pub kind: String,
    pub id: String,
    pub source: String,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AssetFound {
    /// `apns` or `scep_ca`.
    pub kind: String,
    pub source: String,
    pub detail: String,
    /// `imported`, `already present`, `not imported: …`.
    pub outcome: String,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Warnings {
    /// Enrollments whose topic is not the push certificate's.
    pub topic_mismatch: u64,
    /// Devices with no push token (no device channel, or no token/push magic).
    pub no_push_token: u64,
    pub identity_expiring_30d: u64,
    pub identity_expired: u64,
    pub no_identity: u64,
    pub duplicate_udids: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SourceReport {
    pub source: String,
    pub detected: String,
    pub bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub dry_run: bool,
    pub sources: Vec<SourceReport>,
    pub devices: Counts,
    pub enrollments: Counts,
    pub users: u64,
    /// Enrollments per push topic, as found in the sources.
    pub topics: BTreeMap<String, u64>,
    pub assets: Vec<AssetFound>,
    /// Queued commands not imported (NanoMDM `enrollment_queue` rows) and stored commands.
    pub commands_left_behind: u64,
    pub queued_left_behind: u64,
    pub warnings: Warnings,
    pub skipped: Vec<Skipped>,
}

impl Summary {
    /// Skip reasons with their counts, most frequent first.
    pub fn skip_reasons(&self) -> Vec<(String, u64)> {
        let mut m: HashMap<String, u64> = HashMap::new();
        for s in &self.skipped {
            let general = s.reason.split(':').next().unwrap_or(&s.reason).to_string();
            *m.entry(general).or_default() += 1;
        }
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

// ---------------------------------------------------------------------------------------------
// The writer.

/// What the caller decided.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    pub dry_run: bool,
    pub strict: bool,
    pub actor: String,
    /// Fleet's `server.private_key`: its first 32 bytes decrypt `mdm_config_assets`.
    pub fleet_key: Option<Zeroizing<Vec<u8>>>,
    /// The largest row (dump) or record (CSV) read into memory (`--max-row-size`).
    pub max_row_size: usize,
}

impl Default for ImportOptions {
    /// What an import does unless told otherwise.
    fn default() -> Self {
        Self {
            dry_run: false,
            strict: false,
            actor: String::new(),
            fleet_key: None,
            max_row_size: sqldump::DEFAULT_MAX_ROW,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DevState {
    Written,
    Unchanged,
    KeptNewer,
    Skipped,
}

struct Seen {
    source: u16,
    state: DevState,
    has_channel: bool,
    has_identity: bool,
    /// The device record holds the source's raw TokenUpdate.
    has_token_update: bool,
}

/// Upserts records into one transaction. Create one per transaction attempt; feed it every
/// source in order; then [`Importer::finish`].
pub struct Importer<'t> {
    tx: &'t mut dyn Tx,
    opts: ImportOptions,
    now: Timestamp,
    pub summary: Summary,
    source_idx: u16,
    source_label: String,
    /// `imported:nanomdm`, …
    origin: String,
    /// The topic of the store's active push certificate, if any.
    store_topic: Option<String>,
    seen: HashMap<String, Seen>,
    /// Enrollment ID → (hash, when the association was made): a re-enrolled device has
    /// several, and the newest one is the identity it uses now.
    cert_auth: HashMap<String, (String, Option<String>)>,
    pending_users: HashMap<(String, String), SrcUser>,
    /// (user id, device id) → (enrollment id, written in this run)
    user_channels: HashMap<(String, String), (String, bool)>,
    deferred: Vec<(u16, SrcEnrollment)>,
    push_certs: Vec<(String, Vec<u8>, Vec<u8>)>,
    scep_cas: Vec<(String, Vec<u8>, Vec<u8>)>,
    /// The store held no devices when the import started: nothing to compare with, so no
    /// per-record look-ups (identities are checked against this run's own).
    fresh: bool,
    identities: HashMap<String, String>,
    /// Records written, not yet sent: see [`Pending`].
    pending: Pending,
}

/// Devices, channels and fingerprints waiting to go to the store in multi-row statements (a
/// fresh import of 100,000 devices into PostgreSQL is otherwise 300,000 round trips). Sent
/// in that order (a channel's device first) when a batch is full, and before anything else
/// touches the transaction, so every read sees every write before it.
#[derive(Default)]
struct Pending {
    devices: Vec<DeviceRecord>,
    enrollments: Vec<EnrollmentRecord>,
    fingerprints: Vec<ImportRow>,
    /// `(kind, id)` of what is waiting: an upsert statement may not touch a row twice, so a
    /// record written again flushes the batch first.
    keys: HashSet<(&'static str, String)>,
}

/// Records per batch.
const BATCH: usize = 500;

/// Fingerprint of a record: SHA-256 over its fields, length-prefixed.
fn fingerprint(parts: &[Option<&[u8]>]) -> String {
    let mut h = openssl::sha::Sha256::new();
    for p in parts {
        match p {
            None => h.update(&[0]),
            Some(b) => {
                h.update(&[1]);
                h.update(&(b.len() as u64).to_le_bytes());
                h.update(b);
            }
        }
    }
    hex::encode(h.finish())
}

fn s(o: &Option<String>) -> Option<&[u8]> {
    o.as_deref().map(str::as_bytes)
}

fn ts(t: Option<Timestamp>) -> Option<Vec<u8>> {
    t.map(|t| t.0.to_le_bytes().to_vec())
}

impl<'t> Importer<'t> {
    pub fn new(tx: &'t mut dyn Tx, opts: ImportOptions) -> Result<Self, ImportError> {
        let store_topic = tx.active_asset(AssetKind::Apns)?.and_then(|a| a.topic);
        let fresh = tx.count_devices()? == 0;
        Ok(Self {
            fresh,
            identities: HashMap::new(),
            pending: Pending::default(),
            tx,
            now: Timestamp::now(),
            summary: Summary {
                dry_run: opts.dry_run,
                ..Summary::default()
            },
            opts,
            source_idx: 0,
            source_label: String::new(),
            origin: String::new(),
            store_topic,
            seen: HashMap::new(),
            cert_auth: HashMap::new(),
            pending_users: HashMap::new(),
            user_channels: HashMap::new(),
            deferred: Vec::new(),
            push_certs: Vec::new(),
            scep_cas: Vec::new(),
        })
    }

    /// The transaction, with every pending record written to it first.
    fn tx(&mut self) -> Result<&mut (dyn Tx + 't), ImportError> {
        self.flush()?;
        Ok(&mut *self.tx)
    }

    fn flush(&mut self) -> Result<(), ImportError> {
        let p = &mut self.pending;
        if p.keys.is_empty() {
            return Ok(());
        }
        self.tx.put_devices(&p.devices)?;
        self.tx.put_enrollments(&p.enrollments)?;
        self.tx.set_import_fingerprints(&p.fingerprints)?;
        p.devices.clear();
        p.enrollments.clear();
        p.fingerprints.clear();
        p.keys.clear();
        Ok(())
    }

    /// Make room for a record keyed `(kind, id)` in the batch.
    fn reserve(&mut self, kind: &'static str, id: &str) -> Result<(), ImportError> {
        let key = (kind, id.to_string());
        if self.pending.keys.len() >= BATCH || self.pending.keys.contains(&key) {
            self.flush()?;
        }
        self.pending.keys.insert(key);
        Ok(())
    }

    fn write_fingerprint(&mut self, kind: &'static str, id: &str, sha256: String) {
        self.pending.fingerprints.push(ImportRow {
            kind,
            id: id.to_string(),
            sha256,
            source: self.source_label.clone(),
        });
    }

    /// Start reading the next source.
    pub fn begin_source(&mut self, label: &str, detected: &str, origin: &str) {
        self.source_idx = self.summary.sources.len() as u16;
        self.source_label = label.to_string();
        self.origin = format!("imported:{origin}");
        self.summary.sources.push(SourceReport {
            source: label.to_string(),
            detected: detected.to_string(),
            bytes: 0,
        });
    }

    /// The largest row a source reader may hold in memory.
    pub fn max_row_size(&self) -> usize {
        self.opts.max_row_size
    }

    /// The source turned out to be Fleet's database (its NanoMDM tables carry the `nano_`
    /// prefix, or it has Fleet's `mdm_config_assets`), which the first bytes of a dump do not
    /// show (Fleet's own tables come first): what it brings is labelled `imported:fleet`.
    pub fn source_is_fleet(&mut self) {
        if self.origin == "imported:fleet" {
            return;
        }
        self.origin = "imported:fleet".into();
        if let Some(s) = self.summary.sources.last_mut()
            && let Some(rest) = s.detected.strip_prefix("NanoMDM ")
        {
            s.detected = format!("Fleet {rest}");
        }
    }

    pub fn end_source(&mut self, bytes: u64) {
        if let Some(s) = self.summary.sources.last_mut() {
            s.bytes = bytes;
        }
    }

    pub(crate) fn skip(&mut self, kind: &str, id: &str, reason: String) {
        match kind {
            "device" => self.summary.devices.skipped += 1,
            "enrollment" => self.summary.enrollments.skipped += 1,
            _ => {}
        }
        self.summary.skipped.push(Skipped {
            kind: kind.to_string(),
            id: id.to_string(),
            source: self.source_label.clone(),
            reason,
        });
    }

    pub fn commands_left_behind(&mut self, commands: u64, queued: u64) {
        self.summary.commands_left_behind += commands;
        self.summary.queued_left_behind += queued;
    }

    /// A cert-auth association (enrollment ID → hex SHA-256 of the identity's DER), with when
    /// it was made (`YYYY-MM-DD HH:MM:SS…` as the source writes it) when the source says.
    pub fn cert_auth(
        &mut self,
        id: String,
        sha256: String,
        at: Option<String>,
    ) -> Result<(), ImportError> {
        let sha = sha256.trim().to_ascii_lowercase();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            self.skip(
                "cert_auth",
                &id,
                format!("invalid identity hash: `{sha}` is not a hex SHA-256"),
            );
            return Ok(());
        }
        // Arriving after its device: bind now if the device has no identity yet.
        if let Some(seen) = self.seen.get(&id)
            && !seen.has_identity
            && matches!(seen.state, DevState::Written | DevState::Unchanged)
        {
            let other = match self.identities.get(&sha) {
                Some(o) => Some(o.clone()),
                None => self.tx()?.device_by_identity(&sha)?,
            };
            if let Some(other) = other.filter(|o| *o != id) {
                self.skip(
                    "cert_auth",
                    &id,
                    format!("identity certificate in use: it already identifies device `{other}`"),
                );
                return Ok(());
            }
            self.tx()?.bind_identity(&id, &sha, None)?;
            self.identities.insert(sha, id.clone());
            if let Some(seen) = self.seen.get_mut(&id) {
                seen.has_identity = true;
            }
            self.summary.warnings.no_identity = self.summary.warnings.no_identity.saturating_sub(1);
            return Ok(());
        }
        let newer = match self.cert_auth.get(&id) {
            Some((_, known)) => at.as_deref() >= known.as_deref(),
            None => true,
        };
        if newer {
            self.cert_auth.insert(id, (sha, at));
        }
        Ok(())
    }

    pub fn fleet_key(&self) -> Option<&[u8]> {
        self.opts.fleet_key.as_deref().map(|k| k.as_slice())
    }

    /// An asset the source holds but that could not be read (reported, not imported).
    pub fn asset_not_imported(&mut self, kind: &str, detail: &str, why: &str) {
        self.summary.assets.push(AssetFound {
            kind: kind.into(),
            source: self.source_label.clone(),
            detail: detail.into(),
            outcome: format!("not imported: {why}"),
        });
    }

    pub fn push_cert(&mut self, cert_pem: Vec<u8>, key_pem: Vec<u8>) {
        self.push_certs
            .push((self.source_label.clone(), cert_pem, key_pem));
    }

    pub fn scep_ca(&mut self, label: &str, cert: Vec<u8>, key: Vec<u8>) {
        self.scep_cas.push((label.to_string(), cert, key));
    }

    pub fn device(&mut self, mut d: SrcDevice) -> Result<(), ImportError> {
        self.summary.devices.found += 1;
        if d.id.trim().is_empty() {
            self.skip("device", "", "no UDID".into());
            return Ok(());
        }
        if let Some(prev) = self.seen.get(&d.id) {
            let other = self
                .summary
                .sources
                .get(prev.source as usize)
                .map(|s| s.source.clone())
                .unwrap_or_default();
            self.summary.warnings.duplicate_udids += 1;
            let id = d.id.clone();
            self.skip(
                "device",
                &id,
                format!("duplicate UDID: already read from `{other}`"),
            );
            return Ok(());
        }
        // The identity: from the certificate, else a stored hash.
        if let Some(cert) = &d.identity_cert {
            match identity::identity_of(cert) {
                Ok((sha, na)) => {
                    d.identity_sha256 = Some(sha);
                    d.identity_not_after = Some(na);
                }
                Err(e) => {
                    let id = d.id.clone();
                    self.mark(&id, DevState::Skipped, false);
                    self.skip("device", &id, format!("invalid identity certificate: {e}"));
                    return Ok(());
                }
            }
        } else if d.identity_sha256.is_none() {
            d.identity_sha256 = self.cert_auth.remove(&d.id).map(|(sha, _)| sha);
        }
        if let Some(sha) = &d.identity_sha256 {
            let lower = sha.trim().to_ascii_lowercase();
            if lower.len() != 64 || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
                let id = d.id.clone();
                self.mark(&id, DevState::Skipped, false);
                self.skip(
                    "device",
                    &id,
                    format!("invalid identity hash: `{sha}` is not a hex SHA-256"),
                );
                return Ok(());
            }
            let other = if self.fresh {
                self.identities.get(&lower).cloned()
            } else {
                self.tx()?.device_by_identity(&lower)?
            };
            d.identity_sha256 = Some(lower);
            if let Some(other) = other
                && other != d.id
            {
                let id = d.id.clone();
                self.mark(&id, DevState::Skipped, false);
                self.skip(
                    "device",
                    &id,
                    format!("identity certificate in use: it already identifies device `{other}`"),
                );
                return Ok(());
            }
        } else {
            self.summary.warnings.no_identity += 1;
        }
        if let Some(na) = d.identity_not_after {
            if na < self.now {
                self.summary.warnings.identity_expired += 1;
            } else if self.now.days_until(na) < EXPIRY_WARN_DAYS {
                self.summary.warnings.identity_expiring_30d += 1;
            }
        }
        // Facts from the Authenticate message; synthesize one when the source has none. A
        // stored message that does not parse is damage to report, not to paper over.
        let damaged = match d.authenticate_raw.take() {
            Some(raw) => {
                let filled = fill_from_authenticate(&mut d, &raw);
                d.authenticate_raw = Some(raw);
                filled
                    .err()
                    .map(|e| format!("damaged Authenticate message: {e}"))
            }
            None => {
                d.authenticate_raw = Some(synth_authenticate(&d));
                None
            }
        };
        let damaged = damaged.or_else(|| {
            let raw = d.token_update_raw.as_deref()?;
            crate::apple::plist_in::parse(raw, crate::apple::plist_in::Limits::default())
                .err()
                .map(|e| format!("damaged TokenUpdate message: {e}"))
        });
        if let Some(why) = damaged {
            let id = d.id.clone();
            self.mark(&id, DevState::Skipped, false);
            self.skip("device", &id, why);
            return Ok(());
        }
        let fp = fingerprint(&[
            Some(d.id.as_bytes()),
            s(&d.serial),
            s(&d.model),
            s(&d.model_name),
            s(&d.product_name),
            s(&d.os_version),
            s(&d.build_version),
            s(&d.device_name),
            d.authenticate_raw.as_deref(),
            d.token_update_raw.as_deref(),
            d.unlock_token.as_deref(),
            d.bootstrap_token.as_deref(),
            s(&d.identity_sha256),
            ts(d.identity_not_after).as_deref(),
            ts(d.enrolled_at).as_deref(),
            ts(d.last_seen).as_deref(),
            Some(self.origin.as_bytes()),
        ]);
        let existing = if self.fresh {
            None
        } else {
            self.tx()?.import_state(&d.id)?
        };
        let has_identity = d.identity_sha256.is_some();
        let has_token_update = d.token_update_raw.is_some();
        if let Some(st) = &existing {
            let checked_in = st.migrated_at.is_some()
                || !st.source.starts_with("imported")
                || matches!((st.last_seen_at, d.last_seen), (Some(a), Some(b)) if a > b);
            if checked_in {
                self.summary.devices.kept_newer += 1;
                self.mark(&d.id, DevState::KeptNewer, has_identity);
                return Ok(());
            }
            if st.fingerprint.as_deref() == Some(fp.as_str()) {
                self.summary.devices.unchanged += 1;
                self.mark(&d.id, DevState::Unchanged, has_identity);
                self.set_has_token_update(&d.id, has_token_update);
                return Ok(());
            }
            self.summary.devices.updated += 1;
        } else {
            self.summary.devices.imported += 1;
        }
        let rec = DeviceRecord {
            id: d.id.clone(),
            serial: d.serial,
            model: d.model,
            model_name: d.model_name,
            product_name: d.product_name,
            os_version: d.os_version,
            build_version: d.build_version,
            device_name: d.device_name,
            source: self.origin.clone(),
            imported_at: Some(self.now),
            enrolled_at: d.enrolled_at,
            migrated_at: None,
            last_seen_at: d.last_seen,
            authenticate_raw: d.authenticate_raw,
            token_update_raw: d.token_update_raw.map(Zeroizing::new),
            unlock_token: d.unlock_token.map(Zeroizing::new),
            bootstrap_token: d.bootstrap_token.map(Zeroizing::new),
            identity_sha256: d.identity_sha256,
            identity_not_after: d.identity_not_after,
        };
        self.reserve("device", &rec.id)?;
        self.write_fingerprint("device", &rec.id, fp);
        if self.fresh
            && let Some(sha) = &rec.identity_sha256
        {
            self.identities.insert(sha.clone(), rec.id.clone());
        }
        self.mark(&rec.id, DevState::Written, has_identity);
        self.set_has_token_update(&rec.id, has_token_update);
        self.pending.devices.push(rec);
        Ok(())
    }

    fn set_has_token_update(&mut self, id: &str, v: bool) {
        if let Some(s) = self.seen.get_mut(id) {
            s.has_token_update = v;
        }
    }

    fn mark(&mut self, id: &str, state: DevState, has_identity: bool) {
        self.seen.insert(
            id.to_string(),
            Seen {
                source: self.source_idx,
                state,
                has_channel: false,
                has_identity,
                has_token_update: false,
            },
        );
    }

    pub fn enrollment(&mut self, e: SrcEnrollment) -> Result<(), ImportError> {
        self.summary.enrollments.found += 1;
        self.enrollment_inner(e, self.source_idx)
    }

    fn enrollment_inner(&mut self, mut e: SrcEnrollment, src: u16) -> Result<(), ImportError> {
        if e.id.trim().is_empty() {
            self.skip("enrollment", "", "no enrollment ID".into());
            return Ok(());
        }
        let Some(dev) = self.seen.get(&e.device_id) else {
            self.deferred.push((src, e));
            return Ok(());
        };
        let device_tu = dev.has_token_update && e.id == e.device_id;
        if dev.source != src {
            // The device is a duplicate from another source: its channels stay with the first.
            let other = self
                .summary
                .sources
                .get(dev.source as usize)
                .map(|s| s.source.clone())
                .unwrap_or_default();
            let id = e.id.clone();
            self.skip(
                "enrollment",
                &id,
                format!("duplicate UDID: its device was already read from `{other}`"),
            );
            return Ok(());
        }
        match dev.state {
            DevState::Skipped => {
                let (id, dev_id) = (e.id.clone(), e.device_id.clone());
                self.skip(
                    "enrollment",
                    &id,
                    format!("its device was skipped: see device `{dev_id}`"),
                );
                return Ok(());
            }
            DevState::KeptNewer => {
                self.summary.enrollments.kept_newer += 1;
                return Ok(());
            }
            DevState::Written | DevState::Unchanged => {}
        }
        if e.topic.trim().is_empty() {
            let id = e.id.clone();
            self.skip("enrollment", &id, "no push topic".into());
            return Ok(());
        }
        *self.summary.topics.entry(e.topic.clone()).or_default() += 1;
        if let Some(t) = &self.store_topic
            && *t != e.topic
        {
            self.summary.warnings.topic_mismatch += 1;
            let (id, topic, t) = (e.id.clone(), e.topic.clone(), t.clone());
            self.skip(
                "enrollment",
                &id,
                format!("topic mismatch: `{topic}` is not the stored push certificate's `{t}`"),
            );
            return Ok(());
        }
        let pushable = e.token.as_ref().is_some_and(|t| !t.is_empty())
            && e.push_magic.as_ref().is_some_and(|m| !m.is_empty());
        if e.id == e.device_id
            && let Some(d) = self.seen.get_mut(&e.device_id)
        {
            d.has_channel = pushable;
        }
        if let Some(uid) = &e.user_id
            && let Some(u) = self
                .pending_users
                .remove(&(uid.clone(), e.device_id.clone()))
        {
            e.user_short_name = e.user_short_name.or(u.short_name);
            e.user_long_name = e.user_long_name.or(u.long_name);
            if u.token_update_raw.is_some() {
                e.token_update_raw = u.token_update_raw;
            }
        }
        // A device channel's raw TokenUpdate is its device's (kept once, on the device
        // record); other channels without one get one synthesized as the device would send it.
        if e.token_update_raw.is_none() && pushable && !device_tu {
            e.token_update_raw = Some(synth_token_update(&e));
        }
        let fp = fingerprint(&[
            Some(e.id.as_bytes()),
            Some(e.device_id.as_bytes()),
            Some(e.kind.as_bytes()),
            s(&e.user_id),
            s(&e.user_short_name),
            s(&e.user_long_name),
            Some(e.topic.as_bytes()),
            s(&e.push_magic),
            e.token.as_deref(),
            e.token_update_raw.as_deref(),
            Some(if e.enabled { b"1" } else { b"0" }),
            ts(e.last_seen).as_deref(),
        ]);
        let existing = if self.fresh {
            None
        } else {
            self.tx()?.import_fingerprint("enrollment", &e.id)?
        };
        let written = match existing {
            Some(f) if f == fp => {
                self.summary.enrollments.unchanged += 1;
                false
            }
            other => {
                if other.is_some() || (!self.fresh && self.tx()?.enrollment(&e.id)?.is_some()) {
                    self.summary.enrollments.updated += 1;
                } else {
                    self.summary.enrollments.imported += 1;
                }
                let rec = EnrollmentRecord {
                    id: e.id.clone(),
                    device_id: e.device_id.clone(),
                    kind: e.kind.clone(),
                    user_id: e.user_id.clone(),
                    user_short_name: e.user_short_name.clone(),
                    user_long_name: e.user_long_name.clone(),
                    topic: e.topic.clone(),
                    push_magic: e.push_magic.clone().map(Zeroizing::new),
                    token: e.token.clone().map(Zeroizing::new),
                    token_update_raw: e.token_update_raw.clone().map(Zeroizing::new),
                    enabled: e.enabled,
                    last_seen_at: e.last_seen,
                };
                self.reserve("enrollment", &rec.id)?;
                self.write_fingerprint("enrollment", &rec.id, fp);
                self.pending.enrollments.push(rec);
                true
            }
        };
        if let Some(uid) = e.user_id {
            self.user_channels
                .insert((uid, e.device_id), (e.id, written));
        }
        Ok(())
    }

    pub fn user(&mut self, u: SrcUser) -> Result<(), ImportError> {
        self.summary.users += 1;
        let key = (u.id.clone(), u.device_id.clone());
        let Some((eid, written)) = self.user_channels.get(&key).cloned() else {
            self.pending_users.insert(key, u);
            return Ok(());
        };
        let fp = fingerprint(&[
            Some(eid.as_bytes()),
            s(&u.short_name),
            s(&u.long_name),
            u.token_update_raw.as_deref(),
        ]);
        if !written && self.tx()?.import_fingerprint("user", &eid)?.as_deref() == Some(fp.as_str())
        {
            return Ok(());
        }
        self.tx()?.set_enrollment_user(
            &eid,
            u.short_name.as_deref(),
            u.long_name.as_deref(),
            u.token_update_raw.as_deref(),
        )?;
        self.reserve("user", &eid)?;
        self.write_fingerprint("user", &eid, fp);
        Ok(())
    }

    /// After every source: deferred records, assets, warnings, `--strict`, the activity entry.
    pub fn finish(mut self) -> Result<Summary, ImportError> {
        let deferred = std::mem::take(&mut self.deferred);
        for (src, e) in deferred {
            if self.seen.contains_key(&e.device_id) {
                self.enrollment_inner(e, src)?;
            } else {
                self.source_label = self
                    .summary
                    .sources
                    .get(src as usize)
                    .map(|s| s.source.clone())
                    .unwrap_or_default();
                let (id, dev) = (e.id.clone(), e.device_id.clone());
                self.skip(
                    "enrollment",
                    &id,
                    format!("its device is not in the source: no device `{dev}`"),
                );
            }
        }
        let users: Vec<_> = self.pending_users.drain().collect();
        for ((uid, dev), _) in users {
            self.summary.skipped.push(Skipped {
                kind: "user".into(),
                id: format!("{dev}:{uid}"),
                source: self.source_label.clone(),
                reason: "user without an enrollment: it never sent a TokenUpdate".into(),
            });
        }
        self.summary.warnings.no_push_token = self
            .seen
            .values()
            .filter(|s| {
                matches!(s.state, DevState::Written | DevState::Unchanged) && !s.has_channel
            })
            .count() as u64;
        self.apply_assets()?;
        if self.opts.strict && !self.summary.skipped.is_empty() {
            let f = &self.summary.skipped[0];
            return Err(ImportError::Strict {
                count: self.summary.skipped.len(),
                first: format!("{} `{}` ({}): {}", f.kind, f.id, f.source, f.reason),
                summary: Box::new(self.summary.clone()),
            });
        }
        self.flush()?;
        let sm = &self.summary;
        let sources: Vec<&str> = sm.sources.iter().map(|s| s.source.as_str()).collect();
        self.tx.record_activity(&NewActivity {
            actor: self.opts.actor.clone(),
            kind: "devices.import".into(),
            device_id: None,
            summary: format!(
                "imported devices from {}: {} found, {} new, {} updated, {} unchanged, {} kept newer, {} skipped",
                sources.join(", "),
                sm.devices.found,
                sm.devices.imported,
                sm.devices.updated,
                sm.devices.unchanged,
                sm.devices.kept_newer,
                sm.devices.skipped
            ),
            details: serde_json::json!({
                "sources": sm.sources,
                "devices": sm.devices,
                "enrollments": sm.enrollments,
                "assets": sm.assets,
                "skipped": sm.skipped.len(),
                "skip_reasons": sm.skip_reasons().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
                "commands_left_behind": sm.commands_left_behind,
            }),
        })?;
        if self.opts.dry_run {
            return Err(ImportError::DryRun(Box::new(self.summary)));
        }
        Ok(self.summary)
    }

    fn apply_assets(&mut self) -> Result<(), ImportError> {
        let certs = std::mem::take(&mut self.push_certs);
        // With no push certificate in the store yet, the channels were written before the
        // source's certificates were read: when they use several topics (a multi-topic server,
        // channels left from an older certificate), the topic most channels use wins, its
        // certificate goes in (the other channels are reported as topic mismatches: that
        // certificate cannot push them), and the other certificates are left out.
        let fresh_multi_topic = self.store_topic.is_none() && self.summary.topics.len() > 1;
        let main_topic = self
            .summary
            .topics
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(t, _)| t.clone());
        if fresh_multi_topic && let Some(main) = &main_topic {
            let others: u64 = self
                .summary
                .topics
                .iter()
                .filter(|(t, _)| *t != main)
                .map(|(_, n)| *n)
                .sum();
            self.summary.warnings.topic_mismatch += others;
        }
        for (src, cert_pem, key_pem) in certs {
            let cert = pki::parse_cert(&cert_pem).map_err(|e| ImportError::Asset {
                path: src.clone(),
                reason: format!("the push certificate in `push_certs`: {e}"),
            })?;
            let key = pki::load_private_key(&key_pem, None).map_err(|e| ImportError::Asset {
                path: src.clone(),
                reason: format!("the push key in `push_certs`: {e}"),
            })?;
            let topic = pki::apns_topic(&cert).unwrap_or_default();
            // Never go backwards: after a renewal (here or in the old MDM after an earlier
            // import), the store's certificate for the same topic outlives the source's, and
            // putting the old one back would break pushes when it expires.
            let info = pki::CertInfo::of(&cert)?;
            if let Some(active) = self.tx()?.active_asset(AssetKind::Apns)?
                && active.topic.as_deref() == Some(topic.as_str())
                && active.sha256.as_deref() != Some(info.sha256.as_str())
                && let Some(kept) = active.not_after.filter(|n| *n >= info.not_after)
            {
                self.summary.assets.push(AssetFound {
                    kind: "apns".into(),
                    source: src,
                    detail: format!("push certificate, topic `{topic}`"),
                    outcome: format!(
                        "kept newer: the store's certificate is valid until {}, this one until {}",
                        kept.date(),
                        info.not_after.date()
                    ),
                });
                continue;
            }
            if fresh_multi_topic && main_topic.as_deref() != Some(topic.as_str()) {
                self.summary.assets.push(AssetFound {
                    kind: "apns".into(),
                    source: src,
                    detail: format!("push certificate, topic `{topic}`"),
                    outcome: format!(
                        "not imported: most channels use `{}`",
                        main_topic.as_deref().unwrap_or_default()
                    ),
                });
                continue;
            }
            let input = SetMdmApple {
                apns_cert: Some(cert),
                apns_key: Some(key),
                scep: None,
                // The minority channels' topics would refuse it; they are reported above.
                force: fresh_multi_topic,
                actor: self.opts.actor.clone(),
            };
            let outcome = match set_mdm_apple(self.tx()?, &input) {
                Ok(o) if o.apns_unchanged => "already present".to_string(),
                Ok(_) => "imported".to_string(),
                Err(AssetError::Expired { not_after, .. }) => {
                    format!("not imported: expired on {}", not_after.date())
                }
                Err(e) => return Err(e.into()),
            };
            self.summary.assets.push(AssetFound {
                kind: "apns".into(),
                source: src,
                detail: format!("push certificate, topic `{topic}`"),
                outcome,
            });
        }
        let cas = std::mem::take(&mut self.scep_cas);
        for (src, cert_pem, key_pem) in cas {
            let cert = pki::parse_cert(&cert_pem).map_err(|e| ImportError::Asset {
                path: src.clone(),
                reason: format!("the SCEP CA certificate: {e}"),
            })?;
            let key = pki::load_private_key(&key_pem, None).map_err(|e| ImportError::Asset {
                path: src.clone(),
                reason: format!("the SCEP CA key: {e}"),
            })?;
            let outcome = self.add_trusted_ca(&cert, &key)?;
            let info = pki::CertInfo::of(&cert)?;
            self.summary.assets.push(AssetFound {
                kind: "scep_ca".into(),
                source: src,
                detail: format!("SCEP CA `{}`", info.subject),
                outcome,
            });
        }
        Ok(())
    }

    /// The old MDM's CA goes next to the store's: trusted (it issued the devices' identities),
    /// never issuing: new identities come from a CA the admin chose to issue with (`generate
    /// mdm-apple`, or `set mdm-apple --scep-cert` for the old one), so an old CA's key is never
    /// used to hand out identities behind the admin's back.
    fn add_trusted_ca(
        &mut self,
        cert: &openssl::x509::X509,
        key: &openssl::pkey::PKey<openssl::pkey::Private>,
    ) -> Result<String, ImportError> {
        let info = pki::CertInfo::of(cert)?;
        if !pki::is_ca(cert) {
            return Err(AssetError::NotACa {
                subject: info.subject,
            }
            .into());
        }
        if !pki::key_matches_cert(key, cert)? {
            return Err(PkiError::KeyMismatch {
                subject: info.subject,
            }
            .into());
        }
        if self
            .tx
            .asset_by_fingerprint(AssetKind::ScepCa, &info.sha256)?
            .is_some()
        {
            return Ok("already present".into());
        }
        let state = AssetState::Trusted;
        let mut a = NewAsset::new(AssetKind::ScepCa, state, self.origin.clone());
        a.cert_pem = Some(pki::cert_pem(cert)?);
        a.key_pem = Some(pki::private_key_pem(key)?);
        a.sha256 = Some(info.sha256.clone());
        a.not_after = Some(info.not_after);
        let id = self.tx()?.insert_asset(&a)?;
        self.tx.record_activity(&NewActivity {
            actor: self.opts.actor.clone(),
            kind: "scep_ca.import".into(),
            device_id: None,
            summary: format!("imported the old SCEP CA `{}` ({})", info.subject, state.as_str()),
            details: serde_json::json!({ "asset": id, "sha256": info.sha256, "state": state.as_str() }),
        })?;
        Ok(format!("imported ({})", state.as_str()))
    }
}

/// Model, OS and name from a raw Authenticate message (fields the source did not give); an
/// error when the message does not parse (or is not a dictionary).
fn fill_from_authenticate(d: &mut SrcDevice, raw: &[u8]) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Auth {
        serial_number: Option<String>,
        model: Option<String>,
        model_name: Option<String>,
        product_name: Option<String>,
        #[serde(rename = "OSVersion")]
        os_version: Option<String>,
        build_version: Option<String>,
        device_name: Option<String>,
        topic: Option<String>,
    }
    let a: Auth = crate::apple::plist_in::from_bytes(raw).map_err(|e| e.to_string())?;
    d.serial = d.serial.take().or(a.serial_number);
    d.model = d.model.take().or(a.model);
    d.model_name = d.model_name.take().or(a.model_name);
    d.product_name = d.product_name.take().or(a.product_name);
    d.os_version = d.os_version.take().or(a.os_version);
    d.build_version = d.build_version.take().or(a.build_version);
    d.device_name = d.device_name.take().or(a.device_name);
    d.topic = d.topic.take().or(a.topic);
    Ok(())
}

fn xml(dict: plist::Dictionary) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing a dictionary of strings and data to memory cannot fail.
    let _ = plist::Value::Dictionary(dict).to_writer_xml(&mut out);
    out
}

/// An Authenticate check-in as a device sends it, for sources that do not keep one.
pub fn synth_authenticate(d: &SrcDevice) -> Vec<u8> {
    let mut m = plist::Dictionary::new();
    m.insert("MessageType".into(), "Authenticate".into());
    m.insert("UDID".into(), d.id.clone().into());
    let opt = [
        ("Topic", &d.topic),
        ("SerialNumber", &d.serial),
        ("Model", &d.model),
        ("ModelName", &d.model_name),
        ("ProductName", &d.product_name),
        ("OSVersion", &d.os_version),
        ("BuildVersion", &d.build_version),
        ("DeviceName", &d.device_name),
    ];
    for (k, v) in opt {
        if let Some(v) = v {
            m.insert(k.into(), v.clone().into());
        }
    }
    xml(m)
}

/// A TokenUpdate check-in as a device (or user channel) sends it.
pub fn synth_token_update(e: &SrcEnrollment) -> Vec<u8> {
    let mut m = plist::Dictionary::new();
    m.insert("MessageType".into(), "TokenUpdate".into());
    m.insert("UDID".into(), e.device_id.clone().into());
    if let Some(u) = &e.user_id {
        m.insert("UserID".into(), u.clone().into());
        if let Some(n) = &e.user_short_name {
            m.insert("UserShortName".into(), n.clone().into());
        }
        if let Some(n) = &e.user_long_name {
            m.insert("UserLongName".into(), n.clone().into());
        }
    }
    m.insert("Topic".into(), e.topic.clone().into());
    if let Some(p) = &e.push_magic {
        m.insert("PushMagic".into(), p.clone().into());
    }
    if let Some(t) = &e.token {
        m.insert("Token".into(), plist::Value::Data(t.clone()));
    }
    if let Some(u) = &e.unlock_token {
        m.insert("UnlockToken".into(), plist::Value::Data(u.clone()));
    }
    xml(m)
}

/// Read every source into the caller's transaction. The sources are re-read from the start
/// each time this runs (a PostgreSQL retry runs it again).
pub fn import_into(
    tx: &mut dyn Tx,
    sources: &[Source],
    opts: &ImportOptions,
    scep_cas: &[(String, Vec<u8>, Vec<u8>)],
    progress: &mut dyn FnMut(u64),
) -> Result<Summary, ImportError> {
    let mut imp = Importer::new(tx, opts.clone())?;
    // Progress counts bytes across all sources.
    let mut base = 0u64;
    for src in sources {
        let mut within = |b: u64| progress(base + b);
        src.read_into(&mut imp, &mut within)?;
        base += src.size().unwrap_or(0);
    }
    for (label, cert, key) in scep_cas {
        imp.scep_ca(label, cert.clone(), key.clone());
    }
    imp.finish()
}

/// The set of device IDs a summary skipped (for tests and reports).
pub fn skipped_ids(summary: &Summary) -> HashSet<String> {
    summary.skipped.iter().map(|s| s.id.clone()).collect()
}
