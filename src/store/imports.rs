//! What `import-devices` needs beyond plain device writes: the fingerprint of every record it
//! last imported (so importing the same source twice changes nothing), the state that decides
//! "kept newer" (a device that already checked in to mdmctl), and filling in a user channel's
//! names and TokenUpdate when the source lists users after their enrollments.

use super::StoreError;
use super::sql::{Val, insert_rows, rows_per_statement};
use super::tx::SqlTx;
use crate::timestamp::Timestamp;

const FINGERPRINT_HEAD: &str = "INSERT INTO import_rows (kind, id, sha256, source, imported_at)";
const FINGERPRINT_TAIL: &str = "ON CONFLICT (kind, id) DO UPDATE SET sha256 = excluded.sha256, \
     source = excluded.source, imported_at = excluded.imported_at";

/// The same purpose string as `devices.rs` uses for raw TokenUpdate messages.
const TOKEN_UPDATE: &str = "token-update";

/// A stored device as the importer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportState {
    pub source: String,
    pub migrated_at: Option<Timestamp>,
    pub last_seen_at: Option<Timestamp>,
    /// The fingerprint of the device record the last import wrote, if any.
    pub fingerprint: Option<String>,
}

/// One record's fingerprint, as [`Imports::set_import_fingerprints`] writes it.
#[derive(Clone, Debug)]
pub struct ImportRow {
    /// `device`, `enrollment` or `user`.
    pub kind: &'static str,
    pub id: String,
    pub sha256: String,
    /// The source it came from.
    pub source: String,
}

pub trait Imports {
    /// The device's origin, check-in times and last imported fingerprint; `None` if unknown.
    fn import_state(&mut self, device_id: &str) -> Result<Option<ImportState>, StoreError>;
    /// The last imported fingerprint of a record (`kind` = `device`, `enrollment`, `user`).
    fn import_fingerprint(&mut self, kind: &str, id: &str) -> Result<Option<String>, StoreError>;
    /// Record the fingerprint of a record just imported.
    fn set_import_fingerprint(
        &mut self,
        kind: &'static str,
        id: &str,
        sha256: &str,
        source: &str,
    ) -> Result<(), StoreError> {
        self.set_import_fingerprints(&[ImportRow {
            kind,
            id: id.to_string(),
            sha256: sha256.to_string(),
            source: source.to_string(),
        }])
    }
    /// [`Self::set_import_fingerprint`] for many, in multi-row statements; their
    /// `(kind, id)` must be distinct.
    fn set_import_fingerprints(&mut self, rows: &[ImportRow]) -> Result<(), StoreError>;
    /// Set a user channel's names and raw TokenUpdate; returns the rows changed.
    fn set_enrollment_user(
        &mut self,
        enrollment_id: &str,
        short_name: Option<&str>,
        long_name: Option<&str>,
        token_update_raw: Option<&[u8]>,
    ) -> Result<u64, StoreError>;
}

impl Imports for SqlTx<'_> {
    fn import_state(&mut self, device_id: &str) -> Result<Option<ImportState>, StoreError> {
        let row = self.conn.query_opt(
            "SELECT d.source, d.migrated_at, d.last_seen_at, r.sha256 FROM devices d \
             LEFT JOIN import_rows r ON r.kind = 'device' AND r.id = d.id WHERE d.id = ?",
            &[device_id.into()],
        )?;
        row.map(|r| {
            Ok(ImportState {
                source: r.text(0)?,
                migrated_at: r.opt_ts(1)?,
                last_seen_at: r.opt_ts(2)?,
                fingerprint: r.opt_text(3)?,
            })
        })
        .transpose()
    }

    fn import_fingerprint(&mut self, kind: &str, id: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_opt(
                "SELECT sha256 FROM import_rows WHERE kind = ? AND id = ?",
                &[kind.into(), id.into()],
            )?
            .map(|r| r.text(0))
            .transpose()
    }

    fn set_import_fingerprints(&mut self, rows: &[ImportRow]) -> Result<(), StoreError> {
        const WIDTH: usize = 5;
        for chunk in rows.chunks(rows_per_statement(WIDTH)) {
            let now = Timestamp::now();
            let mut params: Vec<Val<'_>> = Vec::with_capacity(chunk.len() * WIDTH);
            for r in chunk {
                let row: [Val<'_>; WIDTH] = [
                    r.kind.into(),
                    r.id.as_str().into(),
                    r.sha256.as_str().into(),
                    r.source.as_str().into(),
                    now.into(),
                ];
                params.extend(row);
            }
            let sql = insert_rows(FINGERPRINT_HEAD, WIDTH, chunk.len(), FINGERPRINT_TAIL);
            self.conn.execute(&sql, &params)?;
        }
        Ok(())
    }

    fn set_enrollment_user(
        &mut self,
        enrollment_id: &str,
        short_name: Option<&str>,
        long_name: Option<&str>,
        token_update_raw: Option<&[u8]>,
    ) -> Result<u64, StoreError> {
        let sealed = self.seal_opt(TOKEN_UPDATE, token_update_raw)?;
        self.conn.execute(
            "UPDATE enrollments SET user_short_name = COALESCE(?, user_short_name), \
             user_long_name = COALESCE(?, user_long_name), \
             token_update_raw_sealed = COALESCE(?, token_update_raw_sealed), updated_at = ? WHERE id = ?",
            &[
                short_name.into(),
                long_name.into(),
                sealed.as_ref().into(),
                Timestamp::now().into(),
                enrollment_id.into(),
            ],
        )
    }
}
