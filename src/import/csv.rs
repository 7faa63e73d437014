//! The CSV format for any other MDM: one row per channel (the device channel, and optionally
//! user channels), with documented columns. `mdmctl import-devices --csv-template` prints the
//! header and an example row.

use std::io::Read;

use base64::Engine as _;

use super::identity::parse_sql_time;
use super::{ImportError, Importer, SrcDevice, SrcEnrollment};

/// The columns, in template order, with what each holds.
pub const COLUMNS: &[(&str, &str)] = &[
    (
        "udid",
        "device UDID (or EnrollmentID for a user enrollment); required",
    ),
    ("serial", "serial number"),
    ("topic", "APNs push topic (`com.apple.mgmt.…`); required"),
    ("push_magic", "PushMagic from the last TokenUpdate"),
    ("token_hex", "APNs device token, hex"),
    ("unlock_token", "UnlockToken, base64"),
    ("bootstrap_token", "bootstrap token, base64"),
    (
        "identity_cert_sha256",
        "hex SHA-256 of the identity certificate's DER",
    ),
    (
        "identity_not_after",
        "identity certificate expiry, RFC 3339",
    ),
    (
        "enrollment_type",
        "`Device` (default), `User`, `User Enrollment (Device)`, …",
    ),
    (
        "user_id",
        "for a user channel: the UserID (the row then describes that channel)",
    ),
    ("user_short_name", "user channel: short name"),
    ("user_long_name", "user channel: long name"),
    ("enabled", "`true` (default) or `false`"),
    ("last_seen", "last check-in, RFC 3339"),
    ("model", "model identifier, e.g. `MacBookPro18,3`"),
    ("os_version", "OS version"),
    ("device_name", "device name"),
];

/// The header and one example row.
pub fn template() -> String {
    let header: Vec<&str> = COLUMNS.iter().map(|(c, _)| *c).collect();
    let example = [
        "0000FE00-1234-5678-9ABC-DEF012345678",
        "C02XK1ABJG5H",
        "com.apple.mgmt.External.00000000-0000-4000-8000-000000000001",
        "8B6E1E2C-0000-4000-8000-5D2B3C4D5E6F",
        "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90",
        "",
        "",
        "3f1c9c1b2d8e7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29",
        "2027-03-01T00:00:00Z",
        "Device",
        "",
        "",
        "",
        "true",
        "2026-11-20T09:30:00Z",
        "MacBookPro18,3",
        "15.1",
        "Jane's MacBook Pro",
    ];
    let mut w = ::csv::Writer::from_writer(Vec::new());
    // Writing to memory cannot fail.
    let _ = w.write_record(&header);
    let _ = w.write_record(example);
    let bytes = w.into_inner().unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn base64_col(v: &str) -> Option<Result<Vec<u8>, ()>> {
    if v.is_empty() {
        return None;
    }
    Some(
        base64::engine::general_purpose::STANDARD
            .decode(v.trim())
            .map_err(|_| ()),
    )
}

/// Read a CSV source into the importer; returns the bytes read.
/// A reader that fails once more than `limit` bytes were read since the last [`mark`]: the
/// CSV reader holds a whole record in memory, so one endless record (`/dev/zero`, a file with
/// no line breaks) must stop it.
struct RecordBound<R> {
    inner: R,
    since_mark: std::rc::Rc<std::cell::Cell<usize>>,
    limit: usize,
}

impl<R: Read> Read for RecordBound<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.since_mark.get() > self.limit {
            return Err(std::io::Error::other(format!(
                "a record longer than {} MiB (raise the limit with `--max-row-size`)",
                self.limit / (1024 * 1024)
            )));
        }
        let n = self.inner.read(buf)?;
        self.since_mark.set(self.since_mark.get() + n);
        Ok(n)
    }
}

pub fn read_csv(r: impl Read, path: &str, imp: &mut Importer<'_>) -> Result<u64, ImportError> {
    let since_mark = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let bounded = RecordBound {
        inner: r,
        since_mark: since_mark.clone(),
        // The CSV reader reads ahead in 8 KB blocks: a little slack for that.
        limit: imp.max_row_size().saturating_add(64 * 1024),
    };
    let mut rdr = ::csv::ReaderBuilder::new()
        .flexible(false)
        .trim(::csv::Trim::All)
        .from_reader(bounded);
    let err = |line: u64, reason: String| ImportError::Csv {
        path: path.to_string(),
        line,
        reason,
    };
    let headers = rdr
        .headers()
        .map_err(|e| err(1, e.to_string()))?
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect::<Vec<_>>();
    for h in &headers {
        if !COLUMNS.iter().any(|(c, _)| c == h) {
            return Err(err(1, format!("unknown column `{h}`")));
        }
    }
    for required in ["udid", "topic"] {
        if !headers.iter().any(|h| h == required) {
            return Err(err(1, format!("the header has no `{required}` column")));
        }
    }
    let idx = |name: &str| headers.iter().position(|h| h == name);
    let cols: Vec<Option<usize>> = COLUMNS.iter().map(|(c, _)| idx(c)).collect();
    let mut rec = ::csv::StringRecord::new();
    let mut bytes = 0u64;
    loop {
        let more = rdr
            .read_record(&mut rec)
            .map_err(|e| err(e.position().map_or(0, |p| p.line()), e.to_string()))?;
        if !more {
            break;
        }
        since_mark.set(0);
        let line = rec.position().map_or(0, |p| p.line());
        bytes = rec.position().map_or(bytes, |p| p.byte());
        let get = |name: &str| -> String {
            let i = COLUMNS
                .iter()
                .position(|(c, _)| *c == name)
                .and_then(|k| cols[k]);
            i.and_then(|i| rec.get(i)).unwrap_or("").to_string()
        };
        let opt = |name: &str| Some(get(name)).filter(|s| !s.is_empty());
        let udid = get("udid");
        let token = match opt("token_hex") {
            Some(h) => Some(
                super::sqldump::decode_hex(h.as_bytes())
                    .ok_or_else(|| err(line, format!("`token_hex` of `{udid}` is not hex")))?,
            ),
            None => None,
        };
        let unlock = base64_col(&get("unlock_token"))
            .transpose()
            .map_err(|_| err(line, format!("`unlock_token` of `{udid}` is not base64")))?;
        let bootstrap = base64_col(&get("bootstrap_token"))
            .transpose()
            .map_err(|_| err(line, format!("`bootstrap_token` of `{udid}` is not base64")))?;
        let time = |name: &str| -> Result<Option<crate::timestamp::Timestamp>, ImportError> {
            match opt(name) {
                Some(v) => parse_sql_time(v.as_bytes()).map(Some).ok_or_else(|| {
                    err(
                        line,
                        format!("`{name}` of `{udid}` is not an RFC 3339 time: `{v}`"),
                    )
                }),
                None => Ok(None),
            }
        };
        let enabled = match get("enabled").to_ascii_lowercase().as_str() {
            "" | "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            other => {
                return Err(err(
                    line,
                    format!("`enabled` of `{udid}` must be `true` or `false`, not `{other}`"),
                ));
            }
        };
        let last_seen = time("last_seen")?;
        let user_id = opt("user_id");
        let topic = get("topic");
        if user_id.is_none() {
            imp.device(SrcDevice {
                id: udid.clone(),
                serial: opt("serial"),
                identity_sha256: opt("identity_cert_sha256"),
                identity_not_after: time("identity_not_after")?,
                unlock_token: unlock.clone(),
                bootstrap_token: bootstrap,
                last_seen,
                topic: Some(topic.clone()).filter(|t| !t.is_empty()),
                model: opt("model"),
                os_version: opt("os_version"),
                device_name: opt("device_name"),
                ..SrcDevice::default()
            })?;
        }
        let id = match &user_id {
            Some(u) => format!("{udid}:{u}"),
            None => udid.clone(),
        };
        imp.enrollment(SrcEnrollment {
            id,
            device_id: udid,
            kind: opt("enrollment_type")
                .unwrap_or_else(|| if user_id.is_some() { "User" } else { "Device" }.into()),
            user_id,
            user_short_name: opt("user_short_name"),
            user_long_name: opt("user_long_name"),
            topic,
            push_magic: opt("push_magic"),
            token,
            unlock_token: unlock,
            token_update_raw: None,
            enabled,
            last_seen,
        })?;
    }
    Ok(bytes)
}

/// Property tests: any bytes as a CSV source end in rows or a clear error, never a panic or
/// unbounded memory; device lists written by a spreadsheet round-trip.
#[cfg(test)]
mod props {
    use std::sync::{Arc, OnceLock};

    use proptest::prelude::*;

    use super::*;
    use crate::import::ImportOptions;
    use crate::store::{Location, NewKey, Store};

    /// One throwaway SQLite store for every case (each case rolls its transaction back).
    fn store() -> &'static Arc<dyn Store> {
        static STORE: OnceLock<(tempfile::TempDir, Arc<dyn Store>)> = OnceLock::new();
        &STORE
            .get_or_init(|| {
                let dir = tempfile::tempdir().unwrap();
                let (s, _) = crate::store::create(
                    &Location::Sqlite(dir.path().join("fuzz.db")),
                    NewKey::Passphrase(zeroize::Zeroizing::new("fuzz passphrase".into())),
                )
                .unwrap();
                (dir, s)
            })
            .1
    }

    /// Read `bytes` as a CSV source inside a transaction that is rolled back; the devices found
    /// (id, serial) or the error.
    fn read(bytes: &[u8], max_row: usize) -> Result<Vec<(String, Option<String>)>, String> {
        let mut out = None;
        let _ = store().write(|tx| -> Result<(), ImportError> {
            let mut imp = Importer::new(
                tx,
                ImportOptions {
                    dry_run: true,
                    max_row_size: max_row,
                    ..ImportOptions::default()
                },
            )?;
            imp.begin_source("t.csv", "CSV", "csv");
            let r = read_csv(bytes, "t.csv", &mut imp).map_err(|e| e.to_string());
            out = Some(r.map(|_| {
                let mut devices = Vec::new();
                let ids: Vec<String> = imp.seen.keys().cloned().collect();
                for id in ids {
                    // Through `tx()`, which writes the pending batch first.
                    if let Ok(Some(d)) = imp.tx().and_then(|tx| Ok(tx.device(&id)?)) {
                        devices.push((d.id, d.serial));
                    }
                }
                devices.sort();
                devices
            }));
            // Never commit.
            Err(ImportError::Read {
                path: String::new(),
                reason: "rolled back".into(),
            })
        });
        out.unwrap_or_else(|| Err("no result".into()))
    }

    proptest! {
        #![proptest_config(crate::fuzz::config())]

        #[test]
        fn any_bytes_end_in_rows_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = read(&bytes, 512);
            let mut with_header = b"udid,serial,topic\n".to_vec();
            with_header.extend(&bytes);
            let _ = read(&with_header, 512);
        }

        #[test]
        fn device_lists_round_trip(
            rows in proptest::collection::btree_map("[A-F0-9]{8}-[A-F0-9]{4}", "[^\\p{Cc},\"]{0,12}", 1..10),
        ) {
            let mut w = ::csv::Writer::from_writer(Vec::new());
            w.write_record(["udid", "serial", "topic"]).unwrap();
            for (udid, serial) in &rows {
                w.write_record([udid.as_str(), serial.as_str(), "com.apple.mgmt.External.x"]).unwrap();
            }
            let bytes = w.into_inner().unwrap();
            let got = read(&bytes, 1 << 20).unwrap();
            let want: Vec<(String, Option<String>)> = rows
                .iter()
                .map(|(u, s)| (u.clone(), Some(s.trim().to_string()).filter(|s| !s.is_empty())))
                .collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn records_longer_than_the_limit_are_refused(len in 1usize..4096) {
            let mut bytes = b"udid,topic\nA,".to_vec();
            bytes.extend(std::iter::repeat_n(b'x', len * 64));
            let r = read(&bytes, 1024);
            if len * 64 > 1024 + 64 * 1024 {
                prop_assert!(r.unwrap_err().contains("--max-row-size"));
            }
        }
    }
}
