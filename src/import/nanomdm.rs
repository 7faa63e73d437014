//! NanoMDM's SQL storage (MySQL and PostgreSQL schemas; Fleet's `nano_`-prefixed copy) read
//! from a dump: `devices`, `enrollments`, `users`, `cert_auth_associations` and `push_certs`
//! become records; `commands` and `enrollment_queue` are only counted (left behind).

use base64::Engine as _;

use super::identity::parse_sql_time;
use super::sqldump::{DumpError, Position, RowSink, Value};
use super::{ImportError, Importer, SrcDevice, SrcEnrollment, SrcUser};

const WANTED: &[&str] = &[
    "devices",
    "enrollments",
    "users",
    "cert_auth_associations",
    "push_certs",
    "mdm_config_assets",
];

/// Rows of a NanoMDM dump into an [`Importer`].
pub struct NanoSink<'a, 'b, 't> {
    pub imp: &'a mut Importer<'t>,
    pub path: String,
    pub progress: &'b mut dyn FnMut(u64),
    pub tables_seen: Vec<String>,
    /// Whether this source's NanoMDM tables carry Fleet's `nano_` prefix (decided by the first).
    prefixed: Option<bool>,
    pub commands: u64,
    pub queued: u64,
    /// Fleet's decrypted server assets by name (`apns_cert`, `apns_key`, `ca_cert`, `ca_key`).
    pub fleet_assets: Vec<(String, Vec<u8>)>,
    pub fleet_encrypted: u64,
}

impl<'a, 'b, 't> NanoSink<'a, 'b, 't> {
    pub fn new(imp: &'a mut Importer<'t>, path: &str, progress: &'b mut dyn FnMut(u64)) -> Self {
        Self {
            imp,
            path: path.to_string(),
            progress,
            tables_seen: Vec::new(),
            prefixed: None,
            commands: 0,
            queued: 0,
            fleet_assets: Vec::new(),
            fleet_encrypted: 0,
        }
    }
}

/// `nano_devices` (Fleet) reads as `devices`.
pub fn base_table(t: &str) -> &str {
    t.strip_prefix("nano_").unwrap_or(t)
}

struct Cols<'c> {
    table: &'c str,
    columns: &'c [String],
    values: Vec<Value>,
    path: &'c str,
}

impl Cols<'_> {
    fn idx(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }
    fn require(&self, name: &str) -> Result<usize, ImportError> {
        self.idx(name).ok_or_else(|| ImportError::Layout {
            path: self.path.to_string(),
            table: self.table.to_string(),
            column: name.to_string(),
        })
    }
    fn take(&mut self, name: &str) -> Option<Vec<u8>> {
        let i = self.idx(name)?;
        match std::mem::replace(&mut self.values[i], Value::Null) {
            Value::Null => None,
            Value::Data(d) => Some(d),
        }
    }
    fn text(&mut self, name: &str) -> Option<String> {
        self.take(name).map(|b| {
            String::from_utf8(b)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        })
    }
    fn req_text(&mut self, name: &str) -> Result<String, ImportError> {
        self.require(name)?;
        Ok(self.text(name).unwrap_or_default())
    }
    /// A text column that must be UTF-8: bytes that are not are reported (the record is
    /// skipped), never replaced.
    fn utf8(&mut self, name: &str) -> Result<Option<String>, String> {
        match self.take(name) {
            None => Ok(None),
            Some(b) => String::from_utf8(b).map(Some).map_err(|e| {
                let bytes = e.as_bytes();
                let at = e.utf8_error().valid_up_to();
                format!(
                    "`{name}` is not UTF-8 text (byte {at}: 0x{:02x})",
                    bytes.get(at).copied().unwrap_or(0)
                )
            }),
        }
    }
}

fn truthy(v: &[u8]) -> bool {
    matches!(
        v,
        b"1" | b"t" | b"true" | b"TRUE" | b"True" | b"y" | b"yes" | [1]
    )
}

impl RowSink for NanoSink<'_, '_, '_> {
    type Error = ImportError;

    fn wants(&mut self, table: &str) -> bool {
        let t = base_table(table);
        if !self.tables_seen.iter().any(|s| s == table) {
            self.tables_seen.push(table.to_string());
        }
        if !WANTED.contains(&t) {
            return false;
        }
        if t == "mdm_config_assets" {
            self.imp.source_is_fleet();
            return true;
        }
        // Fleet keeps NanoMDM's tables with a `nano_` prefix beside tables of its own with the
        // same names (its admin `users`): the first NanoMDM table seen decides which family
        // this source uses, and the other is left alone.
        let prefixed = table.starts_with("nano_");
        let family = *self.prefixed.get_or_insert(prefixed);
        if family {
            self.imp.source_is_fleet();
        }
        family == prefixed
    }

    fn max_row_size(&self) -> usize {
        self.imp.max_row_size()
    }

    fn other_row(&mut self, table: &str) {
        match base_table(table) {
            "commands" => self.commands += 1,
            "enrollment_queue" => self.queued += 1,
            _ => {}
        }
    }

    fn progress(&mut self, bytes: u64) {
        (self.progress)(bytes);
    }

    fn row(
        &mut self,
        table: &str,
        columns: &[String],
        values: Vec<Value>,
        at: &Position,
    ) -> Result<(), ImportError> {
        let t = base_table(table);
        let mut c = Cols {
            table,
            columns,
            values,
            path: &self.path,
        };
        match t {
            "devices" => {
                c.require("id")?;
                let id = c.utf8("id");
                let serial = c.utf8("serial_number");
                let (id, serial) = match (id, serial) {
                    (Ok(id), Ok(serial)) => (id.unwrap_or_default(), serial),
                    (id, serial) => {
                        let why = match (&id, &serial) {
                            (Err(why), _) | (_, Err(why)) => why.clone(),
                            _ => String::new(),
                        };
                        self.imp.summary.devices.found += 1;
                        let shown = id.ok().flatten().unwrap_or_else(|| "(not UTF-8)".into());
                        self.imp.skip("device", &shown, why);
                        return Ok(());
                    }
                };
                let bootstrap = match c.take("bootstrap_token_b64") {
                    Some(b64) => {
                        let clean: Vec<u8> = b64
                            .into_iter()
                            .filter(|b| !b.is_ascii_whitespace())
                            .collect();
                        match base64::engine::general_purpose::STANDARD.decode(&clean) {
                            Ok(b) => Some(b),
                            Err(_) => {
                                return Err(bad_value(
                                    &self.path,
                                    at,
                                    "bootstrap_token_b64",
                                    "not base64",
                                ));
                            }
                        }
                    }
                    None => None,
                };
                let d = SrcDevice {
                    id,
                    serial: serial.filter(|s| !s.is_empty()),
                    identity_cert: c.take("identity_cert").filter(|b| !b.is_empty()),
                    unlock_token: c.take("unlock_token").filter(|b| !b.is_empty()),
                    authenticate_raw: c.take("authenticate").filter(|b| !b.is_empty()),
                    token_update_raw: c.take("token_update").filter(|b| !b.is_empty()),
                    bootstrap_token: bootstrap,
                    enrolled_at: c.take("authenticate_at").and_then(|v| parse_sql_time(&v)),
                    ..SrcDevice::default()
                };
                self.imp.device(d)
            }
            "enrollments" => {
                let id = c.req_text("id")?;
                let device_id = c.req_text("device_id")?;
                let topic = c.req_text("topic")?;
                let token = match c.take("token_hex") {
                    Some(h) if !h.is_empty() => match super::sqldump::decode_hex(h.trim_ascii()) {
                        Some(t) => Some(t),
                        None => {
                            self.imp.summary.enrollments.found += 1;
                            self.imp.skip(
                                "enrollment",
                                &id,
                                "invalid push token: `token_hex` is not hex".into(),
                            );
                            return Ok(());
                        }
                    },
                    _ => None,
                };
                let e = SrcEnrollment {
                    id,
                    device_id,
                    kind: c.text("type").unwrap_or_else(|| "Device".into()),
                    user_id: c.text("user_id").filter(|s| !s.is_empty()),
                    topic,
                    push_magic: c.text("push_magic").filter(|s| !s.is_empty()),
                    token,
                    enabled: c.take("enabled").is_none_or(|v| truthy(&v)),
                    last_seen: c.take("last_seen_at").and_then(|v| parse_sql_time(&v)),
                    ..SrcEnrollment::default()
                };
                self.imp.enrollment(e)
            }
            "users" => {
                let u = SrcUser {
                    id: c.req_text("id")?,
                    device_id: c.req_text("device_id")?,
                    short_name: c.text("user_short_name").filter(|s| !s.is_empty()),
                    long_name: c.text("user_long_name").filter(|s| !s.is_empty()),
                    token_update_raw: c.take("token_update").filter(|b| !b.is_empty()),
                };
                self.imp.user(u)
            }
            "cert_auth_associations" => {
                let id = c.req_text("id")?;
                let sha = c.req_text("sha256")?;
                let at = c.text("updated_at").or_else(|| c.text("created_at"));
                self.imp.cert_auth(id, sha, at)
            }
            "mdm_config_assets" => {
                let name = c.req_text("name")?;
                let value = c.take("value").unwrap_or_default();
                if c.take("deleted_at").is_some() {
                    return Ok(());
                }
                if !matches!(
                    name.as_str(),
                    "apns_cert" | "apns_key" | "ca_cert" | "ca_key"
                ) {
                    return Ok(());
                }
                match self.imp.fleet_key().map(|k| fleet_decrypt(&value, k)) {
                    Some(Ok(plain)) => self.fleet_assets.push((name, plain)),
                    Some(Err(why)) => {
                        return Err(ImportError::Asset {
                            path: self.path.clone(),
                            reason: format!(
                                "Fleet asset `{name}` in `mdm_config_assets` does not decrypt with `--fleet-private-key`: {why}"
                            ),
                        });
                    }
                    None => self.fleet_encrypted += 1,
                }
                Ok(())
            }
            "push_certs" => {
                c.require("cert_pem")?;
                c.require("key_pem")?;
                let cert = c.take("cert_pem").unwrap_or_default();
                let key = c.take("key_pem").unwrap_or_default();
                self.imp.push_cert(cert, key);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

fn bad_value(path: &str, at: &Position, column: &str, what: &str) -> ImportError {
    ImportError::Dump {
        path: path.to_string(),
        error: DumpError {
            reason: format!("column `{column}` is {what}"),
            at: at.clone(),
            excerpt: String::new(),
        },
    }
}

/// Fleet's asset encryption: AES-256-GCM under the first 32 bytes of `server.private_key`,
/// the 12-byte nonce first, the tag last; stored raw or base64-encoded.
pub fn fleet_decrypt(value: &[u8], server_key: &[u8]) -> Result<Vec<u8>, String> {
    use openssl::symm::{Cipher, decrypt_aead};
    let key = server_key
        .get(..32)
        .ok_or("the server private key is shorter than 32 bytes")?;
    let clean: Vec<u8> = value
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&clean)
        .unwrap_or_else(|_| value.to_vec());
    if raw.len() < 12 + 16 {
        return Err("too short to be AES-GCM ciphertext".into());
    }
    let (nonce, rest) = raw.split_at(12);
    let (ct, tag) = rest.split_at(rest.len() - 16);
    decrypt_aead(Cipher::aes_256_gcm(), key, Some(nonce), &[], ct, tag)
        .map_err(|_| "wrong key or damaged value".to_string())
}
