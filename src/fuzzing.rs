//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer): each runs one parser
//! of network or file input over arbitrary bytes and must return, never panic, hang or grow
//! without bound. Not part of the API; the property tests beside each parser run the same
//! parsers with proptest on the stable toolchain.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::import::sqldump::{self, Dialect, DumpError, Position, RowSink, Value};

/// Check-in and command report bodies, and the bounded plist parser under them.
pub fn plist(data: &[u8]) {
    let _ = crate::apple::plist_in::parse(data, crate::apple::plist_in::Limits::default());
    let _ = crate::apple::checkin::parse(data);
    let _ = crate::apple::command::parse_report(data);
}

/// The BER/DER reader under SCEP messages and `Mdm-Signature`.
pub fn der(data: &[u8]) {
    let _ = crate::pki::der::ber_to_der(data);
    let _ = crate::pki::der::Tlv::parse(data).and_then(|t| t.children());
}

/// A SCEP PKIOperation body.
pub fn scep(data: &[u8]) {
    let _ = crate::pki::scep::ScepRequest::parse(data);
}

struct Discard;

impl RowSink for Discard {
    type Error = DumpError;
    fn wants(&mut self, _: &str) -> bool {
        true
    }
    fn row(&mut self, _: &str, _: &[String], _: Vec<Value>, _: &Position) -> Result<(), DumpError> {
        Ok(())
    }
    fn max_row_size(&self) -> usize {
        1 << 20
    }
}

/// A mysqldump or pg_dump file.
pub fn sql_dump(data: &[u8]) {
    let _ = sqldump::read_dump(data, Dialect::MySql, &mut Discard);
    let _ = sqldump::read_dump(data, Dialect::Postgres, &mut Discard);
}

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("mdmctl-fuzz-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&d);
        d
    })
}

/// MicroMDM's BoltDB (`micromdm.db`) and the protobuf records in it.
pub fn bolt(data: &[u8]) {
    let path = scratch().join("micromdm.db");
    if std::fs::write(&path, data).is_ok() {
        let _ = crate::import::micromdm::device_records(&path);
    }
}

fn store() -> Option<&'static Arc<dyn crate::store::Store>> {
    static STORE: OnceLock<Option<Arc<dyn crate::store::Store>>> = OnceLock::new();
    STORE
        .get_or_init(|| {
            let location = crate::store::Location::Sqlite(scratch().join("store.db"));
            crate::store::create(
                &location,
                crate::store::NewKey::Passphrase(zeroize::Zeroizing::new("fuzz passphrase".into())),
            )
            .ok()
            .map(|(s, _)| s)
        })
        .as_ref()
}

/// A CSV device list, read into a transaction that is rolled back.
pub fn csv(data: &[u8]) {
    let Some(store) = store() else { return };
    let _ = store.write(|tx| -> Result<(), crate::import::ImportError> {
        let mut imp = crate::import::Importer::new(
            tx,
            crate::import::ImportOptions {
                dry_run: true,
                max_row_size: 1 << 20,
                ..Default::default()
            },
        )?;
        imp.begin_source("fuzz.csv", "CSV", "csv");
        let _ = crate::import::csv::read_csv(data, "fuzz.csv", &mut imp);
        Err(crate::import::ImportError::Read {
            path: String::new(),
            reason: "rolled back".into(),
        })
    });
}

/// A GitOps YAML file (validated as a remote apply's bundle is).
pub fn yaml(data: &[u8]) {
    use base64::Engine as _;
    let path = PathBuf::from("/repo/default.yml");
    let mut files = std::collections::BTreeMap::new();
    files.insert(
        path.clone(),
        base64::engine::general_purpose::STANDARD.encode(data),
    );
    let _ = crate::gitops::Bundle {
        yaml: vec![path],
        files,
        env: Default::default(),
        resolved: Default::default(),
        allow_unknown_keys: false,
        max_profile_size: crate::gitops::validate::DEFAULT_MAX_PROFILE,
    }
    .load();
}

#[cfg(test)]
mod tests {
    /// Each entry point returns on empty and small inputs (what a fuzzer starts from).
    #[test]
    fn entry_points_run() {
        for data in [
            &b""[..],
            b"\x00",
            b"udid,topic\nA,B\n",
            b"bplist00",
            b"<plist>",
        ] {
            super::plist(data);
            super::der(data);
            super::scep(data);
            super::sql_dump(data);
            super::bolt(data);
            super::csv(data);
            super::yaml(data);
        }
    }
}
