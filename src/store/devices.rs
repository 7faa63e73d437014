//! Devices and their enrollments (device and user channels): identity, push credentials,
//! the raw check-in messages that enrolled them, and where they came from.
//!
//! Push magic, push tokens, unlock and bootstrap tokens and raw TokenUpdate messages (which
//! hold all of those) are sealed; the rest is plain so it can be listed and filtered.

use serde::Serialize;
use zeroize::Zeroizing;

use super::StoreError;
use super::sql::{Row, Val, insert_rows, marks, rows_per_statement};
use super::tx::SqlTx;
use crate::timestamp::Timestamp;

const TOKEN_UPDATE: &str = "token-update";
const UNLOCK_TOKEN: &str = "unlock-token";
const BOOTSTRAP_TOKEN: &str = "bootstrap-token";
const PUSH_MAGIC: &str = "push-magic";
const PUSH_TOKEN: &str = "push-token";

/// What a DeviceInformation answer says about a device; `None` leaves the stored value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceFacts {
    pub os_version: Option<String>,
    pub build_version: Option<String>,
    pub device_name: Option<String>,
    pub model_name: Option<String>,
    pub model: Option<String>,
    pub product_name: Option<String>,
    pub serial: Option<String>,
}

/// Everything stored about a device channel enrollment (one per Mac or iPhone).
#[derive(Clone, Debug, Default)]
pub struct DeviceRecord {
    /// UDID, or EnrollmentID for a user enrollment.
    pub id: String,
    pub serial: Option<String>,
    pub model: Option<String>,
    pub model_name: Option<String>,
    pub product_name: Option<String>,
    pub os_version: Option<String>,
    pub build_version: Option<String>,
    pub device_name: Option<String>,
    /// `enrolled`, or `imported:<source>` (`imported:nanomdm`, `imported:csv`, …).
    pub source: String,
    pub imported_at: Option<Timestamp>,
    pub enrolled_at: Option<Timestamp>,
    /// First authenticated request after the DNS cutover.
    pub migrated_at: Option<Timestamp>,
    pub last_seen_at: Option<Timestamp>,
    pub authenticate_raw: Option<Vec<u8>>,
    pub token_update_raw: Option<Zeroizing<Vec<u8>>>,
    pub unlock_token: Option<Zeroizing<Vec<u8>>>,
    pub bootstrap_token: Option<Zeroizing<Vec<u8>>>,
    /// Lowercase hex SHA-256 of the DER identity certificate.
    pub identity_sha256: Option<String>,
    pub identity_not_after: Option<Timestamp>,
}

/// A channel APNs can wake: the device channel (id = device id) or a user channel.
#[derive(Clone, Debug, Default)]
pub struct EnrollmentRecord {
    pub id: String,
    pub device_id: String,
    /// Apple's enrollment type: `Device`, `User`, `User Enrollment (Device)`, …
    pub kind: String,
    pub user_id: Option<String>,
    pub user_short_name: Option<String>,
    pub user_long_name: Option<String>,
    pub topic: String,
    pub push_magic: Option<Zeroizing<String>>,
    /// The APNs device token (raw bytes; APNs wants them hex-encoded).
    pub token: Option<Zeroizing<Vec<u8>>>,
    pub token_update_raw: Option<Zeroizing<Vec<u8>>>,
    pub enabled: bool,
    pub last_seen_at: Option<Timestamp>,
}

/// A device as listings show it (no secrets).
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct DeviceSummary {
    pub id: String,
    pub serial: Option<String>,
    pub topic: Option<String>,
    pub source: String,
    pub imported_at: Option<Timestamp>,
    pub migrated_at: Option<Timestamp>,
    pub last_seen_at: Option<Timestamp>,
    pub identity_not_after: Option<Timestamp>,
    /// The SHA-256 of its identity certificate is recorded (else only a retro-association,
    /// `serve --allow-retro-association`, lets it in).
    #[serde(default)]
    pub identity_recorded: bool,
    /// The team the device is in (`None`: the global settings apply).
    #[serde(default)]
    pub team: Option<String>,
    /// The device's name, model and macOS version, as it last reported them (or the old
    /// server's import said).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// An Apple Business Manager device that has not enrolled yet: no UDID is known, so `id`
    /// is its serial number and `source` is `abm`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

/// What the reconciler needs of a device: its OS version and the channel commands go to (the
/// device channel, enabled, with a push token), read without opening any secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconcileTarget {
    pub device_id: String,
    pub os_version: Option<String>,
    pub channel: Option<String>,
}

/// What the server checks on every request: the device's recorded identity and where it came
/// from, and (for a known channel) whether the channel is enabled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceAuth {
    pub device_id: String,
    pub identity_sha256: Option<String>,
    pub identity_not_after: Option<Timestamp>,
    pub source: String,
    pub migrated_at: Option<Timestamp>,
    /// `None` when the channel asked about has no enrollment yet.
    pub channel_enabled: Option<bool>,
}

impl DeviceAuth {
    pub fn imported(&self) -> bool {
        self.source.starts_with("imported")
    }
}

/// What APNs needs to wake one channel.
#[derive(Clone, Debug)]
pub struct PushCreds {
    pub enrollment_id: String,
    pub device_id: String,
    pub topic: String,
    pub token: Zeroizing<Vec<u8>>,
    pub push_magic: Zeroizing<String>,
}

/// A channel as a preflight sees it (`cutover check`): whether its push credentials are there,
/// without opening them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelOverview {
    pub id: String,
    pub device_id: String,
    /// Apple's enrollment type: `Device`, `User`, `User Enrollment (Device)`, …
    pub kind: String,
    pub topic: String,
    /// It has a push token and push magic: APNs can wake it.
    pub pushable: bool,
    pub enabled: bool,
}

/// How many enrollments use each push topic.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TopicCount {
    pub topic: String,
    pub enrollments: i64,
}

pub trait Devices {
    /// Insert or replace a device record.
    fn put_device(&mut self, device: &DeviceRecord) -> Result<(), StoreError>;
    /// [`Self::put_device`] for many, in multi-row statements; their IDs must be distinct.
    fn put_devices(&mut self, devices: &[DeviceRecord]) -> Result<(), StoreError>;
    /// Insert or replace an enrollment; its device must exist.
    fn put_enrollment(&mut self, enrollment: &EnrollmentRecord) -> Result<(), StoreError>;
    /// [`Self::put_enrollment`] for many, in multi-row statements; their IDs must be distinct.
    fn put_enrollments(&mut self, enrollments: &[EnrollmentRecord]) -> Result<(), StoreError>;
    /// A device by ID (UDID/EnrollmentID) or, failing that, by serial number.
    fn device(&mut self, id_or_serial: &str) -> Result<Option<DeviceRecord>, StoreError>;
    fn enrollments_of(&mut self, device_id: &str) -> Result<Vec<EnrollmentRecord>, StoreError>;
    /// Devices under macOS update enforcement (their scope has a `minimum_version`) with a
    /// command channel, not asked for DeviceInformation since `before`: `(device, channel)`,
    /// never-asked first.
    fn devices_due_for_facts(
        &mut self,
        before: Timestamp,
        limit: u32,
    ) -> Result<Vec<(String, String)>, StoreError>;
    /// Record that these devices were asked for DeviceInformation at `at`.
    fn mark_facts_requested(
        &mut self,
        device_ids: &[String],
        at: Timestamp,
    ) -> Result<(), StoreError>;
    /// Keep a device's reported facts (one UPDATE; its secrets untouched). `None` when there
    /// is no such device, else whether its OS version changed.
    fn set_device_facts(
        &mut self,
        device_id: &str,
        facts: &DeviceFacts,
    ) -> Result<Option<bool>, StoreError>;
    /// Those of `device_ids` that are devices in the store (one query per 500).
    fn existing_devices(&mut self, device_ids: &[String]) -> Result<Vec<String>, StoreError>;
    /// [`ReconcileTarget`]s of the devices that exist among `device_ids`.
    fn reconcile_targets(
        &mut self,
        device_ids: &[String],
    ) -> Result<Vec<ReconcileTarget>, StoreError>;
    /// All devices, ordered by ID, without secrets.
    fn device_summaries(&mut self) -> Result<Vec<DeviceSummary>, StoreError>;
    /// The push topics in use and how many enrollments use each.
    fn enrollment_topics(&mut self) -> Result<Vec<TopicCount>, StoreError>;
    /// Every channel, by device then channel ID; no secret is opened.
    fn channel_overview(&mut self) -> Result<Vec<ChannelOverview>, StoreError>;
    fn count_devices(&mut self) -> Result<i64, StoreError>;

    // What check-ins need.
    fn enrollment(&mut self, id: &str) -> Result<Option<EnrollmentRecord>, StoreError>;
    /// The identity and origin of a device, and whether `channel_id` (if given) is enabled.
    fn device_auth(
        &mut self,
        device_id: &str,
        channel_id: Option<&str>,
    ) -> Result<Option<DeviceAuth>, StoreError>;
    /// The device an identity certificate is bound to.
    fn device_by_identity(&mut self, sha256: &str) -> Result<Option<String>, StoreError>;
    fn bind_identity(
        &mut self,
        device_id: &str,
        sha256: &str,
        not_after: Option<Timestamp>,
    ) -> Result<(), StoreError>;
    /// Record an imported device's first authenticated request after cutover; true the first time.
    fn mark_migrated(&mut self, device_id: &str) -> Result<bool, StoreError>;
    /// Last seen: now, for the channel and its device.
    fn touch(&mut self, enrollment_id: &str, device_id: &str) -> Result<(), StoreError>;
    fn set_enrollment_enabled(&mut self, id: &str, enabled: bool) -> Result<u64, StoreError>;
    /// Disable every channel of a device (CheckOut); returns how many.
    fn disable_device(&mut self, device_id: &str) -> Result<u64, StoreError>;
    fn set_bootstrap_token(
        &mut self,
        device_id: &str,
        token: Option<&[u8]>,
    ) -> Result<(), StoreError>;
    /// Push credentials of these channels, for those enabled and holding a token.
    fn push_targets(&mut self, enrollment_ids: &[String]) -> Result<Vec<PushCreds>, StoreError>;
    /// What APNs last refused for a channel (`None` clears it).
    fn record_push_error(
        &mut self,
        enrollment_id: &str,
        error: Option<&str>,
    ) -> Result<(), StoreError>;
}

const DEVICE_COLUMNS: &str = "id, serial, model, model_name, product_name, os_version, build_version, device_name, source, \
     imported_at, enrolled_at, migrated_at, last_seen_at, authenticate_raw, token_update_raw_sealed, \
     unlock_token_sealed, bootstrap_token_sealed, identity_sha256, identity_not_after";

const ENROLLMENT_COLUMNS: &str = "id, device_id, type, user_id, user_short_name, user_long_name, topic, push_magic_sealed, \
     token_sealed, token_update_raw_sealed, enabled, last_seen_at";

impl SqlTx<'_> {
    fn device_from_row(&mut self, r: &Row) -> Result<DeviceRecord, StoreError> {
        Ok(DeviceRecord {
            id: r.text(0)?,
            serial: r.opt_text(1)?,
            model: r.opt_text(2)?,
            model_name: r.opt_text(3)?,
            product_name: r.opt_text(4)?,
            os_version: r.opt_text(5)?,
            build_version: r.opt_text(6)?,
            device_name: r.opt_text(7)?,
            source: r.text(8)?,
            imported_at: r.opt_ts(9)?,
            enrolled_at: r.opt_ts(10)?,
            migrated_at: r.opt_ts(11)?,
            last_seen_at: r.opt_ts(12)?,
            authenticate_raw: r.opt_blob(13)?,
            token_update_raw: self.open_opt(TOKEN_UPDATE, r.opt_blob(14)?)?,
            unlock_token: self.open_opt(UNLOCK_TOKEN, r.opt_blob(15)?)?,
            bootstrap_token: self.open_opt(BOOTSTRAP_TOKEN, r.opt_blob(16)?)?,
            identity_sha256: r.opt_text(17)?,
            identity_not_after: r.opt_ts(18)?,
        })
    }

    fn enrollment_from_row(&mut self, r: &Row) -> Result<EnrollmentRecord, StoreError> {
        let push_magic = self
            .open_opt(PUSH_MAGIC, r.opt_blob(7)?)?
            .map(|b| Zeroizing::new(String::from_utf8_lossy(&b).into_owned()));
        Ok(EnrollmentRecord {
            id: r.text(0)?,
            device_id: r.text(1)?,
            kind: r.text(2)?,
            user_id: r.opt_text(3)?,
            user_short_name: r.opt_text(4)?,
            user_long_name: r.opt_text(5)?,
            topic: r.text(6)?,
            push_magic,
            token: self.open_opt(PUSH_TOKEN, r.opt_blob(8)?)?,
            token_update_raw: self.open_opt(TOKEN_UPDATE, r.opt_blob(9)?)?,
            enabled: r.bool(10)?,
            last_seen_at: r.opt_ts(11)?,
        })
    }
}

impl Devices for SqlTx<'_> {
    fn put_device(&mut self, d: &DeviceRecord) -> Result<(), StoreError> {
        self.put_devices(std::slice::from_ref(d))
    }

    fn put_devices(&mut self, devices: &[DeviceRecord]) -> Result<(), StoreError> {
        const WIDTH: usize = 21;
        for chunk in devices.chunks(rows_per_statement(WIDTH)) {
            let mut sealed = Vec::with_capacity(chunk.len());
            for d in chunk {
                sealed.push([
                    self.seal_opt(TOKEN_UPDATE, d.token_update_raw.as_deref().map(|v| &v[..]))?,
                    self.seal_opt(UNLOCK_TOKEN, d.unlock_token.as_deref().map(|v| &v[..]))?,
                    self.seal_opt(
                        BOOTSTRAP_TOKEN,
                        d.bootstrap_token.as_deref().map(|v| &v[..]),
                    )?,
                ]);
            }
            let now = Timestamp::now();
            let mut params: Vec<Val<'_>> = Vec::with_capacity(chunk.len() * WIDTH);
            for (d, [token_update, unlock, bootstrap]) in chunk.iter().zip(&sealed) {
                let row: [Val<'_>; WIDTH] = [
                    d.id.as_str().into(),
                    d.serial.as_deref().into(),
                    d.model.as_deref().into(),
                    d.model_name.as_deref().into(),
                    d.product_name.as_deref().into(),
                    d.os_version.as_deref().into(),
                    d.build_version.as_deref().into(),
                    d.device_name.as_deref().into(),
                    d.source.as_str().into(),
                    d.imported_at.into(),
                    d.enrolled_at.into(),
                    d.migrated_at.into(),
                    d.last_seen_at.into(),
                    d.authenticate_raw.as_ref().into(),
                    token_update.as_ref().into(),
                    unlock.as_ref().into(),
                    bootstrap.as_ref().into(),
                    d.identity_sha256.as_deref().into(),
                    d.identity_not_after.into(),
                    now.into(),
                    now.into(),
                ];
                params.extend(row);
            }
            let sql = insert_rows(
                "INSERT INTO devices (id, serial, model, model_name, product_name, os_version, build_version, device_name, source, \
                    imported_at, enrolled_at, migrated_at, last_seen_at, authenticate_raw, token_update_raw_sealed, \
                    unlock_token_sealed, bootstrap_token_sealed, identity_sha256, identity_not_after, created_at, updated_at)",
                WIDTH,
                chunk.len(),
                "ON CONFLICT (id) DO UPDATE SET serial = excluded.serial, model = excluded.model, \
                    model_name = excluded.model_name, product_name = excluded.product_name, \
                    os_version = excluded.os_version, build_version = excluded.build_version, \
                    device_name = excluded.device_name, source = excluded.source, imported_at = excluded.imported_at, \
                    enrolled_at = excluded.enrolled_at, migrated_at = excluded.migrated_at, \
                    last_seen_at = excluded.last_seen_at, authenticate_raw = excluded.authenticate_raw, \
                    token_update_raw_sealed = excluded.token_update_raw_sealed, \
                    unlock_token_sealed = excluded.unlock_token_sealed, \
                    bootstrap_token_sealed = excluded.bootstrap_token_sealed, \
                    identity_sha256 = excluded.identity_sha256, identity_not_after = excluded.identity_not_after, \
                    updated_at = excluded.updated_at",
            );
            self.conn.execute(&sql, &params)?;
        }
        Ok(())
    }

    fn put_enrollment(&mut self, e: &EnrollmentRecord) -> Result<(), StoreError> {
        self.put_enrollments(std::slice::from_ref(e))
    }

    fn put_enrollments(&mut self, enrollments: &[EnrollmentRecord]) -> Result<(), StoreError> {
        const WIDTH: usize = 14;
        for chunk in enrollments.chunks(rows_per_statement(WIDTH)) {
            let mut sealed = Vec::with_capacity(chunk.len());
            for e in chunk {
                sealed.push([
                    self.seal_opt(PUSH_MAGIC, e.push_magic.as_deref().map(|m| m.as_bytes()))?,
                    self.seal_opt(PUSH_TOKEN, e.token.as_deref().map(|t| &t[..]))?,
                    self.seal_opt(TOKEN_UPDATE, e.token_update_raw.as_deref().map(|v| &v[..]))?,
                ]);
            }
            let now = Timestamp::now();
            let mut params: Vec<Val<'_>> = Vec::with_capacity(chunk.len() * WIDTH);
            for (e, [magic, token, token_update]) in chunk.iter().zip(&sealed) {
                let row: [Val<'_>; WIDTH] = [
                    e.id.as_str().into(),
                    e.device_id.as_str().into(),
                    e.kind.as_str().into(),
                    e.user_id.as_deref().into(),
                    e.user_short_name.as_deref().into(),
                    e.user_long_name.as_deref().into(),
                    e.topic.as_str().into(),
                    magic.as_ref().into(),
                    token.as_ref().into(),
                    token_update.as_ref().into(),
                    e.enabled.into(),
                    e.last_seen_at.into(),
                    now.into(),
                    now.into(),
                ];
                params.extend(row);
            }
            let sql = insert_rows(
                "INSERT INTO enrollments (id, device_id, type, user_id, user_short_name, user_long_name, topic, \
                    push_magic_sealed, token_sealed, token_update_raw_sealed, enabled, last_seen_at, created_at, updated_at)",
                WIDTH,
                chunk.len(),
                "ON CONFLICT (id) DO UPDATE SET device_id = excluded.device_id, type = excluded.type, \
                    user_id = excluded.user_id, user_short_name = excluded.user_short_name, \
                    user_long_name = excluded.user_long_name, topic = excluded.topic, \
                    push_magic_sealed = excluded.push_magic_sealed, token_sealed = excluded.token_sealed, \
                    token_update_raw_sealed = excluded.token_update_raw_sealed, enabled = excluded.enabled, \
                    last_seen_at = excluded.last_seen_at, updated_at = excluded.updated_at",
            );
            self.conn.execute(&sql, &params)?;
        }
        Ok(())
    }

    fn device(&mut self, id_or_serial: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let by_id = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?");
        let row = match self.conn.query_opt(&by_id, &[id_or_serial.into()])? {
            Some(r) => Some(r),
            None => {
                let by_serial = format!(
                    "SELECT {DEVICE_COLUMNS} FROM devices WHERE serial = ? ORDER BY id LIMIT 1"
                );
                self.conn.query_opt(&by_serial, &[id_or_serial.into()])?
            }
        };
        row.map(|r| self.device_from_row(&r)).transpose()
    }

    fn devices_due_for_facts(
        &mut self,
        before: Timestamp,
        limit: u32,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.conn
            .query(
                &format!(
                    "SELECT d.id, (SELECT e.id FROM enrollments e WHERE e.device_id = d.id AND e.type = 'Device' \
                     AND e.enabled AND e.token_sealed IS NOT NULL ORDER BY (e.id = d.id) DESC, e.id LIMIT 1) AS channel \
                     FROM devices d LEFT JOIN teams t ON t.id = d.team_id \
                     WHERE (d.facts_requested_at IS NULL OR d.facts_requested_at <= ?) \
                     AND CASE WHEN d.team_id IS NULL \
                         THEN (SELECT g.minimum_version FROM global_settings g WHERE g.id = 1) \
                         ELSE t.minimum_version END IS NOT NULL \
                     AND EXISTS (SELECT 1 FROM enrollments e WHERE e.device_id = d.id AND e.type = 'Device' \
                                 AND e.enabled AND e.token_sealed IS NOT NULL) \
                     ORDER BY COALESCE(d.facts_requested_at, 0), d.id LIMIT {limit}"
                ),
                &[before.into()],
            )?
            .iter()
            .map(|r| Ok((r.text(0)?, r.text(1)?)))
            .collect()
    }

    fn mark_facts_requested(
        &mut self,
        device_ids: &[String],
        at: Timestamp,
    ) -> Result<(), StoreError> {
        for chunk in device_ids.chunks(500) {
            let marks = marks(chunk.len());
            let mut params: Vec<Val<'_>> = vec![at.into()];
            params.extend(chunk.iter().map(|id| Val::Text(id)));
            self.conn.execute(
                &format!("UPDATE devices SET facts_requested_at = ? WHERE id IN ({marks})"),
                &params,
            )?;
        }
        Ok(())
    }

    fn set_device_facts(
        &mut self,
        device_id: &str,
        f: &DeviceFacts,
    ) -> Result<Option<bool>, StoreError> {
        let Some(row) = self.conn.query_opt(
            "SELECT os_version FROM devices WHERE id = ?",
            &[device_id.into()],
        )?
        else {
            return Ok(None);
        };
        let before = row.opt_text(0)?;
        self.conn.execute(
            "UPDATE devices SET os_version = COALESCE(?, os_version), \
             build_version = COALESCE(?, build_version), device_name = COALESCE(?, device_name), \
             model_name = COALESCE(?, model_name), model = COALESCE(?, model), \
             product_name = COALESCE(?, product_name), serial = COALESCE(?, serial), updated_at = ? \
             WHERE id = ?",
            &[
                f.os_version.as_deref().into(),
                f.build_version.as_deref().into(),
                f.device_name.as_deref().into(),
                f.model_name.as_deref().into(),
                f.model.as_deref().into(),
                f.product_name.as_deref().into(),
                f.serial.as_deref().into(),
                Timestamp::now().into(),
                device_id.into(),
            ],
        )?;
        Ok(Some(f.os_version.is_some() && f.os_version != before))
    }

    fn existing_devices(&mut self, device_ids: &[String]) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::with_capacity(device_ids.len());
        for chunk in device_ids.chunks(500) {
            let marks = marks(chunk.len());
            let params: Vec<Val<'_>> = chunk.iter().map(|id| Val::Text(id)).collect();
            for r in self.conn.query(
                &format!("SELECT id FROM devices WHERE id IN ({marks})"),
                &params,
            )? {
                out.push(r.text(0)?);
            }
        }
        Ok(out)
    }

    fn reconcile_targets(
        &mut self,
        device_ids: &[String],
    ) -> Result<Vec<ReconcileTarget>, StoreError> {
        let mut out = Vec::with_capacity(device_ids.len());
        for chunk in device_ids.chunks(500) {
            let marks = marks(chunk.len());
            let params: Vec<Val<'_>> = chunk.iter().map(|id| Val::Text(id)).collect();
            for r in self.conn.query(
                &format!(
                    "SELECT d.id, d.os_version, (SELECT e.id FROM enrollments e WHERE e.device_id = d.id \
                     AND e.type = 'Device' AND e.enabled AND e.token_sealed IS NOT NULL \
                     ORDER BY (e.id = d.id) DESC, e.id LIMIT 1) FROM devices d WHERE d.id IN ({marks})"
                ),
                &params,
            )? {
                out.push(ReconcileTarget {
                    device_id: r.text(0)?,
                    os_version: r.opt_text(1)?,
                    channel: r.opt_text(2)?,
                });
            }
        }
        Ok(out)
    }

    fn enrollments_of(&mut self, device_id: &str) -> Result<Vec<EnrollmentRecord>, StoreError> {
        let sql = format!(
            "SELECT {ENROLLMENT_COLUMNS} FROM enrollments WHERE device_id = ? ORDER BY (id = device_id) DESC, id"
        );
        let rows = self.conn.query(&sql, &[device_id.into()])?;
        rows.iter().map(|r| self.enrollment_from_row(r)).collect()
    }

    fn device_summaries(&mut self) -> Result<Vec<DeviceSummary>, StoreError> {
        let mut out = Vec::new();
        self.conn.query_each(
            "SELECT d.id, d.serial, e.topic, d.source, d.imported_at, d.migrated_at, d.last_seen_at, d.identity_not_after, t.name, \
             (d.identity_sha256 IS NOT NULL), d.device_name, COALESCE(d.model_name, d.model), d.os_version \
             FROM devices d LEFT JOIN enrollments e ON e.id = d.id LEFT JOIN teams t ON t.id = d.team_id ORDER BY d.id",
            &[],
            &mut |r| {
                out.push(DeviceSummary {
                    id: r.text(0)?,
                    serial: r.opt_text(1)?,
                    topic: r.opt_text(2)?,
                    source: r.text(3)?,
                    imported_at: r.opt_ts(4)?,
                    migrated_at: r.opt_ts(5)?,
                    last_seen_at: r.opt_ts(6)?,
                    identity_not_after: r.opt_ts(7)?,
                    team: r.opt_text(8)?,
                    identity_recorded: r.bool(9)?,
                    name: r.opt_text(10)?,
                    model: r.opt_text(11)?,
                    os_version: r.opt_text(12)?,
                    pending: false,
                });
                Ok(())
            },
        )?;
        Ok(out)
    }

    fn enrollment_topics(&mut self) -> Result<Vec<TopicCount>, StoreError> {
        let rows = self.conn.query(
            "SELECT topic, COUNT(*) FROM enrollments GROUP BY topic ORDER BY COUNT(*) DESC, topic",
            &[],
        )?;
        rows.iter()
            .map(|r| {
                Ok(TopicCount {
                    topic: r.text(0)?,
                    enrollments: r.int(1)?,
                })
            })
            .collect()
    }

    fn channel_overview(&mut self) -> Result<Vec<ChannelOverview>, StoreError> {
        let rows = self.conn.query(
            "SELECT id, device_id, type, topic, \
             (push_magic_sealed IS NOT NULL AND token_sealed IS NOT NULL), enabled \
             FROM enrollments ORDER BY device_id, id",
            &[],
        )?;
        rows.iter()
            .map(|r| {
                Ok(ChannelOverview {
                    id: r.text(0)?,
                    device_id: r.text(1)?,
                    kind: r.text(2)?,
                    topic: r.text(3)?,
                    pushable: r.bool(4)?,
                    enabled: r.bool(5)?,
                })
            })
            .collect()
    }

    fn count_devices(&mut self) -> Result<i64, StoreError> {
        self.conn
            .query_one("SELECT COUNT(*) FROM devices", &[])?
            .int(0)
    }

    fn enrollment(&mut self, id: &str) -> Result<Option<EnrollmentRecord>, StoreError> {
        let sql = format!("SELECT {ENROLLMENT_COLUMNS} FROM enrollments WHERE id = ?");
        let row = self.conn.query_opt(&sql, &[id.into()])?;
        row.map(|r| self.enrollment_from_row(&r)).transpose()
    }

    fn device_auth(
        &mut self,
        device_id: &str,
        channel_id: Option<&str>,
    ) -> Result<Option<DeviceAuth>, StoreError> {
        let row = match channel_id {
            Some(ch) => self.conn.query_opt(
                "SELECT d.id, d.identity_sha256, d.identity_not_after, d.source, d.migrated_at, e.enabled \
                 FROM devices d LEFT JOIN enrollments e ON e.id = ? AND e.device_id = d.id WHERE d.id = ?",
                &[ch.into(), device_id.into()],
            )?,
            None => self.conn.query_opt(
                "SELECT id, identity_sha256, identity_not_after, source, migrated_at FROM devices WHERE id = ?",
                &[device_id.into()],
            )?,
        };
        row.map(|r| {
            let channel_enabled = match channel_id {
                Some(_) => r.opt_bool(5)?,
                None => None,
            };
            Ok(DeviceAuth {
                device_id: r.text(0)?,
                identity_sha256: r.opt_text(1)?,
                identity_not_after: r.opt_ts(2)?,
                source: r.text(3)?,
                migrated_at: r.opt_ts(4)?,
                channel_enabled,
            })
        })
        .transpose()
    }

    fn device_by_identity(&mut self, sha256: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_opt(
                "SELECT id FROM devices WHERE identity_sha256 = ?",
                &[sha256.into()],
            )?
            .map(|r| r.text(0))
            .transpose()
    }

    fn bind_identity(
        &mut self,
        device_id: &str,
        sha256: &str,
        not_after: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE devices SET identity_sha256 = ?, identity_not_after = ?, updated_at = ? WHERE id = ?",
            &[sha256.into(), not_after.into(), Timestamp::now().into(), device_id.into()],
        )?;
        Ok(())
    }

    fn mark_migrated(&mut self, device_id: &str) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE devices SET migrated_at = ? WHERE id = ? AND migrated_at IS NULL AND source LIKE 'imported%'",
            &[Timestamp::now().into(), device_id.into()],
        )?;
        Ok(n == 1)
    }

    fn touch(&mut self, enrollment_id: &str, device_id: &str) -> Result<(), StoreError> {
        let now = Timestamp::now();
        self.conn.execute(
            "UPDATE enrollments SET last_seen_at = ? WHERE id = ?",
            &[now.into(), enrollment_id.into()],
        )?;
        self.conn.execute(
            "UPDATE devices SET last_seen_at = ? WHERE id = ?",
            &[now.into(), device_id.into()],
        )?;
        Ok(())
    }

    fn set_enrollment_enabled(&mut self, id: &str, enabled: bool) -> Result<u64, StoreError> {
        self.conn.execute(
            "UPDATE enrollments SET enabled = ?, updated_at = ? WHERE id = ?",
            &[enabled.into(), Timestamp::now().into(), id.into()],
        )
    }

    fn disable_device(&mut self, device_id: &str) -> Result<u64, StoreError> {
        self.conn.execute(
            "UPDATE enrollments SET enabled = ?, updated_at = ? WHERE device_id = ?",
            &[false.into(), Timestamp::now().into(), device_id.into()],
        )
    }

    fn set_bootstrap_token(
        &mut self,
        device_id: &str,
        token: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let sealed = self.seal_opt(BOOTSTRAP_TOKEN, token)?;
        self.conn.execute(
            "UPDATE devices SET bootstrap_token_sealed = ?, updated_at = ? WHERE id = ?",
            &[
                sealed.as_ref().into(),
                Timestamp::now().into(),
                device_id.into(),
            ],
        )?;
        Ok(())
    }

    fn push_targets(&mut self, enrollment_ids: &[String]) -> Result<Vec<PushCreds>, StoreError> {
        let mut out = Vec::with_capacity(enrollment_ids.len());
        for chunk in enrollment_ids.chunks(500) {
            let marks = marks(chunk.len());
            let sql = format!(
                "SELECT id, device_id, topic, token_sealed, push_magic_sealed FROM enrollments \
                 WHERE id IN ({marks}) AND enabled = ? AND token_sealed IS NOT NULL AND push_magic_sealed IS NOT NULL ORDER BY id"
            );
            let mut params: Vec<Val<'_>> = chunk.iter().map(|id| Val::Text(id)).collect();
            params.push(true.into());
            for r in self.conn.query(&sql, &params)? {
                let token = self.open(PUSH_TOKEN, &r.opt_blob(3)?.unwrap_or_default())?;
                let magic = self.open(PUSH_MAGIC, &r.opt_blob(4)?.unwrap_or_default())?;
                out.push(PushCreds {
                    enrollment_id: r.text(0)?,
                    device_id: r.text(1)?,
                    topic: r.text(2)?,
                    token,
                    push_magic: Zeroizing::new(String::from_utf8_lossy(&magic).into_owned()),
                });
            }
        }
        Ok(out)
    }

    fn record_push_error(
        &mut self,
        enrollment_id: &str,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let at = error.map(|_| Timestamp::now());
        self.conn.execute(
            "UPDATE enrollments SET push_error = ?, push_error_at = ? WHERE id = ?",
            &[error.into(), at.into(), enrollment_id.into()],
        )?;
        Ok(())
    }
}
