//! The staged cutover's set: which devices mdmctl answers while `serve --upstream` forwards the
//! others to the old server. A percentage of the fleet chosen by a stable hash of the UDID
//! (FNV-1a 32 modulo 100, as Fleet's `mdmproxy` does, so a percentage picks the same devices in
//! both, and raising it only adds devices), `--all`, and devices moved in or taken back one by
//! one, which win over the percentage. Shared by every instance on the store.
//!
//! Also the mirror outbox: what devices served by mdmctl send that the old server needs to take
//! them back (Authenticate, TokenUpdate, SetBootstrapToken, CheckOut), raw and sealed, kept in
//! order per device until the old server has it.

use serde::{Deserialize, Serialize};

use super::sql::Val;
use super::tx::SqlTx;
use super::{Meta, StoreError};
use crate::timestamp::Timestamp;

const META_KEY: &str = "cutover.set";
const MIRROR: &str = "mirror";

/// A check-in waiting to be sent to the old server.
#[derive(Clone, Debug)]
pub struct MirrorItem {
    pub id: i64,
    pub device_id: String,
    /// `Authenticate`, `TokenUpdate`, `SetBootstrapToken`, `CheckOut`.
    pub message: String,
    /// The raw check-in (it holds push credentials).
    pub body: zeroize::Zeroizing<Vec<u8>>,
    pub attempts: i64,
    pub next_attempt_at: Timestamp,
}

/// What waits in the mirror outbox.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorBacklog {
    pub waiting: i64,
    pub oldest: Option<Timestamp>,
    /// Items tried at least once without success.
    pub failing: i64,
    pub last_error: Option<String>,
}

/// The percentage and `--all`; without one, no device is in the set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutoverSet {
    pub percent: u8,
    pub all: bool,
}

/// FNV-1a, 32 bits.
pub fn fnv1a32(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

impl CutoverSet {
    /// Whether mdmctl answers this device: its own move (`Some(inside)`) wins; else `--all`,
    /// else its place in the percentage.
    pub fn contains(&self, device_id: &str, moved: Option<bool>) -> bool {
        match moved {
            Some(inside) => inside,
            None => self.all || fnv1a32(device_id) % 100 < u32::from(self.percent),
        }
    }
}

pub trait Cutover {
    fn cutover_set(&mut self) -> Result<CutoverSet, StoreError>;
    fn set_cutover_set(&mut self, set: &CutoverSet) -> Result<(), StoreError>;
    /// A device's own move, if any: `true` in, `false` taken back.
    fn cutover_move(&mut self, device_id: &str) -> Result<Option<bool>, StoreError>;
    /// Every device's own move.
    fn cutover_moves(&mut self) -> Result<Vec<(String, bool)>, StoreError>;
    /// Move these devices in (`inside`) or take them back, whatever the percentage.
    fn set_cutover_moves(&mut self, device_ids: &[String], inside: bool) -> Result<(), StoreError>;
    /// Forget every device's own move; returns how many there were.
    fn clear_cutover_moves(&mut self) -> Result<u64, StoreError>;
    /// Open commands (pending, sent, NotNow) per device, for devices that have any.
    fn open_commands_per_device(&mut self) -> Result<Vec<(String, i64)>, StoreError>;
    /// Keep a device's check-in for the old server (after those already waiting).
    fn mirror_enqueue(
        &mut self,
        device_id: &str,
        message: &str,
        body: &[u8],
    ) -> Result<(), StoreError>;
    /// The oldest waiting items, due or not (the sender keeps each device's order).
    fn mirror_waiting(&mut self, limit: u32) -> Result<Vec<MirrorItem>, StoreError>;
    fn mirror_done(&mut self, id: i64) -> Result<(), StoreError>;
    fn mirror_failed(
        &mut self,
        id: i64,
        error: &str,
        next_attempt_at: Timestamp,
    ) -> Result<(), StoreError>;
    fn mirror_backlog(&mut self) -> Result<MirrorBacklog, StoreError>;
    /// Note that a device's request went to the old server.
    fn note_routed(&mut self, device_id: &str, at: Timestamp) -> Result<(), StoreError>;
    /// Devices whose requests went to the old server since `since`.
    fn routed_since(&mut self, since: Timestamp) -> Result<i64, StoreError>;
    /// Identity renewals by state (`sent`, `renewed`, `failed`).
    fn renewal_states(&mut self) -> Result<Vec<(String, i64)>, StoreError>;
    /// Channels whose last push failed, by APNs reason.
    fn push_failures(&mut self) -> Result<Vec<(String, i64)>, StoreError>;
    /// This instance's refused requests by reason, totals since it started.
    fn record_refusals(
        &mut self,
        instance_id: &str,
        totals: &[(&str, u64)],
    ) -> Result<(), StoreError>;
    /// Refused requests by reason, summed over the instances seen since `since`.
    fn refusals_since(&mut self, since: Timestamp) -> Result<Vec<(String, i64)>, StoreError>;
}

impl Cutover for SqlTx<'_> {
    fn cutover_set(&mut self) -> Result<CutoverSet, StoreError> {
        match self.meta_get(META_KEY)? {
            None => Ok(CutoverSet::default()),
            Some(v) => serde_json::from_str(&v)
                .map_err(|e| StoreError::Decode(format!("meta `{META_KEY}`: {e}"))),
        }
    }

    fn set_cutover_set(&mut self, set: &CutoverSet) -> Result<(), StoreError> {
        let v = serde_json::to_string(set).map_err(|e| StoreError::Decode(e.to_string()))?;
        self.meta_set(META_KEY, &v)
    }

    fn cutover_move(&mut self, device_id: &str) -> Result<Option<bool>, StoreError> {
        self.conn
            .query_opt(
                "SELECT inside FROM cutover_devices WHERE device_id = ?",
                &[device_id.into()],
            )?
            .map(|r| r.bool(0))
            .transpose()
    }

    fn cutover_moves(&mut self) -> Result<Vec<(String, bool)>, StoreError> {
        self.conn
            .query(
                "SELECT device_id, inside FROM cutover_devices ORDER BY device_id",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.text(0)?, r.bool(1)?)))
            .collect()
    }

    fn set_cutover_moves(&mut self, device_ids: &[String], inside: bool) -> Result<(), StoreError> {
        let now = Timestamp::now();
        for chunk in device_ids.chunks(300) {
            let rows = vec!["(?, ?, ?)"; chunk.len()].join(", ");
            let mut params: Vec<Val<'_>> = Vec::with_capacity(chunk.len() * 3);
            for id in chunk {
                params.push(Val::Text(id));
                params.push(inside.into());
                params.push(now.into());
            }
            self.conn.execute(
                &format!(
                    "INSERT INTO cutover_devices (device_id, inside, changed_at) VALUES {rows} \
                     ON CONFLICT (device_id) DO UPDATE SET inside = excluded.inside, changed_at = excluded.changed_at"
                ),
                &params,
            )?;
        }
        Ok(())
    }

    fn clear_cutover_moves(&mut self) -> Result<u64, StoreError> {
        self.conn.execute("DELETE FROM cutover_devices", &[])
    }

    fn mirror_enqueue(
        &mut self,
        device_id: &str,
        message: &str,
        body: &[u8],
    ) -> Result<(), StoreError> {
        let sealed = self.seal(MIRROR, body)?;
        let now = Timestamp::now();
        self.conn.execute(
            "INSERT INTO mirror_outbox (device_id, message, body_sealed, queued_at, next_attempt_at) VALUES (?, ?, ?, ?, ?)",
            &[device_id.into(), message.into(), (&sealed).into(), now.into(), now.into()],
        )?;
        Ok(())
    }

    fn mirror_waiting(&mut self, limit: u32) -> Result<Vec<MirrorItem>, StoreError> {
        let rows = self.conn.query(
            &format!(
                "SELECT id, device_id, message, body_sealed, attempts, next_attempt_at FROM mirror_outbox ORDER BY id LIMIT {limit}"
            ),
            &[],
        )?;
        rows.iter().map(|r| self.mirror_item(r)).collect()
    }

    fn mirror_done(&mut self, id: i64) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM mirror_outbox WHERE id = ?", &[id.into()])?;
        Ok(())
    }

    fn mirror_failed(
        &mut self,
        id: i64,
        error: &str,
        next_attempt_at: Timestamp,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE mirror_outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? WHERE id = ?",
            &[error.into(), next_attempt_at.into(), id.into()],
        )?;
        Ok(())
    }

    fn mirror_backlog(&mut self) -> Result<MirrorBacklog, StoreError> {
        let r = self.conn.query_one(
            "SELECT COUNT(*), MIN(queued_at), COALESCE(SUM(CASE WHEN attempts > 0 THEN 1 ELSE 0 END), 0) FROM mirror_outbox",
            &[],
        )?;
        let last_error = self
            .conn
            .query_opt(
                "SELECT last_error FROM mirror_outbox WHERE last_error IS NOT NULL ORDER BY id LIMIT 1",
                &[],
            )?
            .map(|r| r.text(0))
            .transpose()?;
        Ok(MirrorBacklog {
            waiting: r.int(0)?,
            oldest: r.opt_ts(1)?,
            failing: r.int(2)?,
            last_error,
        })
    }

    fn note_routed(&mut self, device_id: &str, at: Timestamp) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO cutover_routed (device_id, at) VALUES (?, ?) \
             ON CONFLICT (device_id) DO UPDATE SET at = excluded.at",
            &[device_id.into(), at.into()],
        )?;
        Ok(())
    }

    fn routed_since(&mut self, since: Timestamp) -> Result<i64, StoreError> {
        self.conn
            .query_one(
                "SELECT COUNT(*) FROM cutover_routed WHERE at >= ?",
                &[since.into()],
            )?
            .int(0)
    }

    fn renewal_states(&mut self) -> Result<Vec<(String, i64)>, StoreError> {
        self.conn
            .query(
                "SELECT status, COUNT(*) FROM identity_renewal GROUP BY status ORDER BY status",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.text(0)?, r.int(1)?)))
            .collect()
    }

    fn push_failures(&mut self) -> Result<Vec<(String, i64)>, StoreError> {
        self.conn
            .query(
                "SELECT push_error, COUNT(*) FROM enrollments WHERE push_error IS NOT NULL \
                 GROUP BY push_error ORDER BY COUNT(*) DESC, push_error",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.text(0)?, r.int(1)?)))
            .collect()
    }

    fn record_refusals(
        &mut self,
        instance_id: &str,
        totals: &[(&str, u64)],
    ) -> Result<(), StoreError> {
        for (reason, count) in totals {
            self.conn.execute(
                "INSERT INTO refusals (instance_id, reason, count) VALUES (?, ?, ?) \
                 ON CONFLICT (instance_id, reason) DO UPDATE SET count = excluded.count",
                &[
                    instance_id.into(),
                    (*reason).into(),
                    i64::try_from(*count).unwrap_or(i64::MAX).into(),
                ],
            )?;
        }
        Ok(())
    }

    fn refusals_since(&mut self, since: Timestamp) -> Result<Vec<(String, i64)>, StoreError> {
        self.conn
            .query(
                "SELECT r.reason, SUM(r.count) FROM refusals r JOIN servers s ON s.id = r.instance_id \
                 WHERE s.seen_at >= ? GROUP BY r.reason ORDER BY SUM(r.count) DESC, r.reason",
                &[since.into()],
            )?
            .iter()
            .map(|r| Ok((r.text(0)?, r.int(1)?)))
            .collect()
    }

    fn open_commands_per_device(&mut self) -> Result<Vec<(String, i64)>, StoreError> {
        self.conn
            .query(
                "SELECT e.device_id, COUNT(*) FROM command_queue q JOIN enrollments e ON e.id = q.enrollment_id \
                 WHERE q.status IN ('pending', 'sent', 'notnow') GROUP BY e.device_id ORDER BY e.device_id",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.text(0)?, r.int(1)?)))
            .collect()
    }
}

impl SqlTx<'_> {
    fn mirror_item(&mut self, r: &super::sql::Row) -> Result<MirrorItem, StoreError> {
        Ok(MirrorItem {
            id: r.int(0)?,
            device_id: r.text(1)?,
            message: r.text(2)?,
            body: self.open(MIRROR, &r.opt_blob(3)?.unwrap_or_default())?,
            attempts: r.int(4)?,
            next_attempt_at: r.ts(5)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        // From the FNV reference (draft-eastlake-fnv): "" and "a", "foobar".
        assert_eq!(fnv1a32(""), 0x811c_9dc5);
        assert_eq!(fnv1a32("a"), 0xe40c_292c);
        assert_eq!(fnv1a32("foobar"), 0xbf9c_f968);
    }

    #[test]
    fn raising_the_percentage_only_adds_devices() {
        let ids: Vec<String> = (0..2000).map(|i| format!("UDID-{i:05}")).collect();
        let mut before = 0;
        for p in [0u8, 1, 10, 50, 99, 100] {
            let low = CutoverSet {
                percent: p,
                all: false,
            };
            let n = ids.iter().filter(|i| low.contains(i, None)).count();
            assert!(n >= before);
            if p < 100 {
                let high = CutoverSet {
                    percent: p + 1,
                    all: false,
                };
                assert!(
                    ids.iter()
                        .all(|i| !low.contains(i, None) || high.contains(i, None))
                );
            }
            before = n;
        }
        assert_eq!(before, 2000, "100 % is everyone");
        let ten = ids
            .iter()
            .filter(|i| {
                CutoverSet {
                    percent: 10,
                    all: false,
                }
                .contains(i, None)
            })
            .count();
        assert!((140..=260).contains(&ten), "about 10 %: {ten}");
        assert!(
            !CutoverSet {
                percent: 100,
                all: true
            }
            .contains("X", Some(false)),
            "a device taken back stays back"
        );
        assert!(
            CutoverSet::default().contains("X", Some(true)),
            "a device moved in is in"
        );
    }
}
