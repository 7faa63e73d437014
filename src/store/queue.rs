//! The command queue: a command is stored once (sealed: it may carry a PIN or a profile with
//! passwords) and queued once per enrollment; each entry moves pending → sent → acknowledged /
//! error / format_error, or notnow (kept, offered again on the device's next Idle).

use serde::Serialize;
use zeroize::Zeroizing;

use super::StoreError;
use super::sql::{Row, Val, marks};
use super::tx::SqlTx;
use crate::timestamp::Timestamp;

const PAYLOAD: &str = "command";
const RESULT: &str = "command-result";
/// Enrollment IDs per statement when queueing to many devices.
const CHUNK: usize = 500;

/// Where one enrollment's copy of a command is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueStatus {
    Pending,
    Sent,
    Acknowledged,
    Error,
    FormatError,
    NotNow,
}

impl QueueStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueStatus::Pending => "pending",
            QueueStatus::Sent => "sent",
            QueueStatus::Acknowledged => "acknowledged",
            QueueStatus::Error => "error",
            QueueStatus::FormatError => "format_error",
            QueueStatus::NotNow => "notnow",
        }
    }

    pub fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "pending" => QueueStatus::Pending,
            "sent" => QueueStatus::Sent,
            "acknowledged" => QueueStatus::Acknowledged,
            "error" => QueueStatus::Error,
            "format_error" => QueueStatus::FormatError,
            "notnow" => QueueStatus::NotNow,
            other => {
                return Err(StoreError::Decode(format!(
                    "unknown queue status `{other}`"
                )));
            }
        })
    }

    /// Still waiting for the device.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            QueueStatus::Pending | QueueStatus::Sent | QueueStatus::NotNow
        )
    }
}

/// A command to store.
#[derive(Clone, Debug)]
pub struct NewCommand<'a> {
    pub uuid: &'a str,
    pub request_type: &'a str,
    pub plist: &'a [u8],
    pub created_by: &'a str,
}

/// What recording a device's answer did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// The answer is recorded: the command (of this request type) was waiting for it.
    New(String),
    /// The command already has its answer (a device that re-sent its report, or two reports
    /// racing): nothing changed, and nothing must run again.
    Already(String),
    /// The command is not queued for this enrollment (a stale or forged report).
    Unknown,
}

/// The next command to hand a device.
#[derive(Clone, Debug)]
pub struct QueuedCommand {
    pub uuid: String,
    pub request_type: String,
    pub plist: Zeroizing<Vec<u8>>,
}

/// One enrollment's copy of a command, as listings show it.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct QueueEntry {
    pub enrollment_id: String,
    pub command_uuid: String,
    pub request_type: String,
    pub status: QueueStatus,
    pub created_at: Timestamp,
    pub sent_at: Option<Timestamp>,
    pub result_at: Option<Timestamp>,
    pub not_now_count: i64,
    /// Apple's ErrorChain, for errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_chain: Option<serde_json::Value>,
}

pub trait CommandQueue {
    /// Store `command` and queue it for each of `enrollment_ids` that exists. Returns the IDs it
    /// was queued for (unknown IDs are left out; the caller reports them).
    fn enqueue(
        &mut self,
        command: &NewCommand<'_>,
        enrollment_ids: &[String],
    ) -> Result<Vec<String>, StoreError>;
    /// The next command for an enrollment, marked sent. NotNow'd commands are offered only when
    /// `include_not_now` (the device reported Idle: a new session).
    fn next_command(
        &mut self,
        enrollment_id: &str,
        include_not_now: bool,
    ) -> Result<Option<QueuedCommand>, StoreError>;
    /// Whether the enrollment has a command to hand out (without marking anything sent): the
    /// cheap question an Idle check-in asks first.
    fn has_open_command(
        &mut self,
        enrollment_id: &str,
        include_not_now: bool,
    ) -> Result<bool, StoreError>;
    /// Record a device's answer, once: an answer for a command that already has its final
    /// answer changes nothing ([`Recorded::Already`]). Correct at READ COMMITTED: the update
    /// is conditional on the entry still being open, and two racing reports serialize on its row.
    fn record_result(
        &mut self,
        enrollment_id: &str,
        command_uuid: &str,
        status: QueueStatus,
        result: &[u8],
        error_chain: Option<&serde_json::Value>,
    ) -> Result<Recorded, StoreError>;
    /// Every enrollment's copy of one command.
    fn command_entries(&mut self, command_uuid: &str) -> Result<Vec<QueueEntry>, StoreError>;
    /// A device's commands (all its channels), newest first.
    fn device_commands(
        &mut self,
        device_id: &str,
        limit: u32,
    ) -> Result<Vec<QueueEntry>, StoreError>;
    /// The raw report a device sent for a command (decrypted).
    fn command_result(
        &mut self,
        enrollment_id: &str,
        command_uuid: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError>;
    /// Drop an enrollment's open entries (on re-enrollment); returns how many.
    fn clear_queue(&mut self, enrollment_id: &str) -> Result<u64, StoreError>;
    /// The channels [`enqueue`](Self::enqueue) put in the push outbox before `before` and
    /// nobody has pushed since (their queuer died before pushing), oldest first. Those whose
    /// device has fetched every command meanwhile need no push: their rows are dropped here
    /// (a device fetching its commands does not write to the outbox).
    fn push_outbox_due(&mut self, before: Timestamp, limit: u32)
    -> Result<Vec<String>, StoreError>;
    /// Take channels out of the push outbox (pushed, or not pushable), those put in at or
    /// before `upto` (a command queued since still needs its push).
    fn clear_push_outbox(
        &mut self,
        enrollment_ids: &[String],
        upto: Timestamp,
    ) -> Result<u64, StoreError>;
    /// Move these channels' outbox time to `at`: claimed by a push under way, or to be tried
    /// again later (their push failed for a reason that may pass).
    fn retry_push_outbox(
        &mut self,
        enrollment_ids: &[String],
        at: Timestamp,
    ) -> Result<(), StoreError>;
}

const ENTRY_COLUMNS: &str = "q.enrollment_id, q.command_uuid, c.request_type, q.status, q.created_at, q.sent_at, q.result_at, q.not_now_count, q.error_chain";

fn entry(r: &Row) -> Result<QueueEntry, StoreError> {
    Ok(QueueEntry {
        enrollment_id: r.text(0)?,
        command_uuid: r.text(1)?,
        request_type: r.text(2)?,
        status: QueueStatus::parse(&r.text(3)?)?,
        created_at: r.ts(4)?,
        sent_at: r.opt_ts(5)?,
        result_at: r.opt_ts(6)?,
        not_now_count: r.int(7)?,
        error_chain: r.opt_text(8)?.and_then(|t| serde_json::from_str(&t).ok()),
    })
}

impl CommandQueue for SqlTx<'_> {
    fn enqueue(
        &mut self,
        c: &NewCommand<'_>,
        enrollment_ids: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let sealed = self.seal(PAYLOAD, c.plist)?;
        let now = Timestamp::now();
        self.conn.execute(
            "INSERT INTO commands (uuid, request_type, payload_sealed, created_at, created_by) VALUES (?, ?, ?, ?, ?)",
            &[c.uuid.into(), c.request_type.into(), (&sealed).into(), now.into(), c.created_by.into()],
        )?;
        let mut queued = Vec::with_capacity(enrollment_ids.len());
        for chunk in enrollment_ids.chunks(CHUNK) {
            let marks = marks(chunk.len());
            let sql = format!(
                "INSERT INTO command_queue (enrollment_id, command_uuid, status, created_at) \
                 SELECT e.id, ?, 'pending', ? FROM enrollments e WHERE e.id IN ({marks}) \
                 ON CONFLICT (enrollment_id, command_uuid) DO NOTHING RETURNING enrollment_id"
            );
            let mut params: Vec<Val<'_>> = vec![c.uuid.into(), now.into()];
            params.extend(chunk.iter().map(|id| Val::Text(id)));
            for r in self.conn.query(&sql, &params)? {
                queued.push(r.text(0)?);
            }
            // In the same transaction: the channel waits in the outbox until pushed, so a push
            // lost to a crash after the commit is still sent (by the `push` job).
            let sql = format!(
                "INSERT INTO push_outbox (enrollment_id, queued_at) \
                 SELECT e.id, ? FROM enrollments e WHERE e.id IN ({marks}) \
                 ON CONFLICT (enrollment_id) DO NOTHING"
            );
            let mut params: Vec<Val<'_>> = vec![now.into()];
            params.extend(chunk.iter().map(|id| Val::Text(id)));
            self.conn.execute(&sql, &params)?;
        }
        Ok(queued)
    }

    fn next_command(
        &mut self,
        enrollment_id: &str,
        include_not_now: bool,
    ) -> Result<Option<QueuedCommand>, StoreError> {
        let statuses = if include_not_now {
            "('pending', 'sent', 'notnow')"
        } else {
            "('pending', 'sent')"
        };
        // One statement takes the next open entry and returns what to send. The status is
        // checked again by the update itself: on PostgreSQL (READ COMMITTED) an entry answered
        // by a concurrent request of the same channel between the subquery and the update is
        // not handed out again; the device then gets an empty reply and the rest of its queue
        // at its next check-in (a device sends one request at a time; only a re-sent report
        // races its original).
        let sql = format!(
            "UPDATE command_queue SET status = 'sent', sent_at = ? \
             WHERE id = (SELECT q.id FROM command_queue q WHERE q.enrollment_id = ? AND q.status IN {statuses} \
                         ORDER BY q.priority DESC, q.id LIMIT 1) \
               AND status IN {statuses} \
             RETURNING command_uuid, \
               (SELECT c.request_type FROM commands c WHERE c.uuid = command_queue.command_uuid), \
               (SELECT c.payload_sealed FROM commands c WHERE c.uuid = command_queue.command_uuid)"
        );
        let Some(r) = self
            .conn
            .query_opt(&sql, &[Timestamp::now().into(), enrollment_id.into()])?
        else {
            return Ok(None);
        };
        // Its push-outbox row, if any, is left to the `push` job, which drops rows whose
        // commands were all fetched: one statement fewer on every command sent.
        let plist = self.open(PAYLOAD, &r.opt_blob(2)?.unwrap_or_default())?;
        Ok(Some(QueuedCommand {
            uuid: r.text(0)?,
            request_type: r.text(1)?,
            plist,
        }))
    }

    fn has_open_command(
        &mut self,
        enrollment_id: &str,
        include_not_now: bool,
    ) -> Result<bool, StoreError> {
        let sql = if include_not_now {
            "SELECT COUNT(*) FROM (SELECT 1 FROM command_queue WHERE enrollment_id = ? AND status IN ('pending', 'sent', 'notnow') LIMIT 1) x"
        } else {
            "SELECT COUNT(*) FROM (SELECT 1 FROM command_queue WHERE enrollment_id = ? AND status IN ('pending', 'sent') LIMIT 1) x"
        };
        Ok(self.conn.query_one(sql, &[enrollment_id.into()])?.int(0)? > 0)
    }

    fn record_result(
        &mut self,
        enrollment_id: &str,
        command_uuid: &str,
        status: QueueStatus,
        result: &[u8],
        error_chain: Option<&serde_json::Value>,
    ) -> Result<Recorded, StoreError> {
        let sealed = self.seal(RESULT, result)?;
        let chain = error_chain.map(|c| c.to_string());
        let now = Timestamp::now();
        // The common case, a new result, is one statement; only when it changes nothing is the
        // entry looked up to tell a re-sent report from one for a command never queued.
        let request_type =
            "(SELECT c.request_type FROM commands c WHERE c.uuid = command_queue.command_uuid)";
        let updated = if status == QueueStatus::NotNow {
            self.conn.query_opt(
                &format!(
                    "UPDATE command_queue SET status = 'notnow', not_now_count = not_now_count + 1, result_at = ?, result_sealed = ? \
                     WHERE enrollment_id = ? AND command_uuid = ? AND status IN ('pending', 'sent') RETURNING {request_type}"
                ),
                &[now.into(), (&sealed).into(), enrollment_id.into(), command_uuid.into()],
            )?
        } else {
            self.conn.query_opt(
                &format!(
                    "UPDATE command_queue SET status = ?, result_at = ?, result_sealed = ?, error_chain = ? \
                     WHERE enrollment_id = ? AND command_uuid = ? AND status IN ('pending', 'sent', 'notnow') RETURNING {request_type}"
                ),
                &[
                    status.as_str().into(),
                    now.into(),
                    (&sealed).into(),
                    chain.as_deref().into(),
                    enrollment_id.into(),
                    command_uuid.into(),
                ],
            )?
        };
        if let Some(r) = updated {
            return Ok(Recorded::New(r.text(0)?));
        }
        Ok(
            match self.conn.query_opt(
                "SELECT c.request_type FROM command_queue q JOIN commands c ON c.uuid = q.command_uuid \
                 WHERE q.enrollment_id = ? AND q.command_uuid = ?",
                &[enrollment_id.into(), command_uuid.into()],
            )? {
                Some(r) => Recorded::Already(r.text(0)?),
                None => Recorded::Unknown,
            },
        )
    }

    fn command_entries(&mut self, command_uuid: &str) -> Result<Vec<QueueEntry>, StoreError> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM command_queue q JOIN commands c ON c.uuid = q.command_uuid WHERE q.command_uuid = ? ORDER BY q.enrollment_id"
        );
        self.conn
            .query(&sql, &[command_uuid.into()])?
            .iter()
            .map(entry)
            .collect()
    }

    fn device_commands(
        &mut self,
        device_id: &str,
        limit: u32,
    ) -> Result<Vec<QueueEntry>, StoreError> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM command_queue q JOIN commands c ON c.uuid = q.command_uuid \
             JOIN enrollments e ON e.id = q.enrollment_id WHERE e.device_id = ? ORDER BY q.id DESC LIMIT {limit}"
        );
        self.conn
            .query(&sql, &[device_id.into()])?
            .iter()
            .map(entry)
            .collect()
    }

    fn command_result(
        &mut self,
        enrollment_id: &str,
        command_uuid: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let sealed = self
            .conn
            .query_opt(
                "SELECT result_sealed FROM command_queue WHERE enrollment_id = ? AND command_uuid = ?",
                &[enrollment_id.into(), command_uuid.into()],
            )?
            .map(|r| r.opt_blob(0))
            .transpose()?
            .flatten();
        self.open_opt(RESULT, sealed)
    }

    fn clear_queue(&mut self, enrollment_id: &str) -> Result<u64, StoreError> {
        self.conn.execute(
            "DELETE FROM command_queue WHERE enrollment_id = ? AND status IN ('pending', 'sent', 'notnow')",
            &[enrollment_id.into()],
        )
    }

    fn push_outbox_due(
        &mut self,
        before: Timestamp,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        self.conn.execute(
            "DELETE FROM push_outbox WHERE queued_at < ? AND NOT EXISTS \
             (SELECT 1 FROM command_queue q WHERE q.enrollment_id = push_outbox.enrollment_id AND q.status = 'pending')",
            &[before.into()],
        )?;
        self.conn
            .query(
                &format!(
                    "SELECT enrollment_id FROM push_outbox WHERE queued_at < ? ORDER BY queued_at LIMIT {limit}"
                ),
                &[before.into()],
            )?
            .iter()
            .map(|r| r.text(0))
            .collect()
    }

    fn clear_push_outbox(
        &mut self,
        enrollment_ids: &[String],
        upto: Timestamp,
    ) -> Result<u64, StoreError> {
        let mut n = 0;
        for chunk in enrollment_ids.chunks(CHUNK) {
            let marks = marks(chunk.len());
            let mut params: Vec<Val<'_>> = vec![upto.into()];
            params.extend(chunk.iter().map(|id| Val::Text(id)));
            n += self.conn.execute(
                &format!(
                    "DELETE FROM push_outbox WHERE queued_at <= ? AND enrollment_id IN ({marks})"
                ),
                &params,
            )?;
        }
        Ok(n)
    }

    fn retry_push_outbox(
        &mut self,
        enrollment_ids: &[String],
        at: Timestamp,
    ) -> Result<(), StoreError> {
        for chunk in enrollment_ids.chunks(CHUNK) {
            let marks = marks(chunk.len());
            let mut params: Vec<Val<'_>> = vec![at.into()];
            params.extend(chunk.iter().map(|id| Val::Text(id)));
            self.conn.execute(
                &format!("UPDATE push_outbox SET queued_at = ? WHERE enrollment_id IN ({marks})"),
                &params,
            )?;
        }
        Ok(())
    }
}
