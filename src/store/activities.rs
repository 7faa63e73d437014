//! The activity log: an append-only record of who did what, when (imports, asset changes,
//! forced overrides, keys viewed, first contacts after cutover). The database refuses updates
//! and deletes of this table (triggers in the schema).

use serde::Serialize;

use super::StoreError;
use super::sql::Val;
use super::tx::SqlTx;
use crate::timestamp::Timestamp;

/// An entry to append.
#[derive(Clone, Debug)]
pub struct NewActivity {
    /// `user@host` for the CLI, `api:<token name>` for the admin API, `serve` for the server.
    pub actor: String,
    /// Dotted kind, e.g. `apns.set`, `apns.topic_override`, `abm.token_set`.
    pub kind: String,
    pub device_id: Option<String>,
    /// One human line.
    pub summary: String,
    pub details: serde_json::Value,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Activity {
    pub id: i64,
    pub at: Timestamp,
    pub actor: String,
    pub kind: String,
    pub device_id: Option<String>,
    pub summary: String,
    pub details: serde_json::Value,
}

/// Filters for reading the log; all optional.
#[derive(Clone, Debug, Default)]
pub struct ActivityQuery {
    pub device_id: Option<String>,
    /// Exact kind, or a prefix ending in `.` (`apns.`).
    pub kind: Option<String>,
    pub since: Option<Timestamp>,
    pub limit: Option<u32>,
    /// With `limit`: the most recent entries (still returned oldest first).
    pub latest: bool,
}

pub trait Activities {
    fn record_activity(&mut self, activity: &NewActivity) -> Result<i64, StoreError>;
    /// Entries matching the query, oldest first.
    fn activities(&mut self, query: &ActivityQuery) -> Result<Vec<Activity>, StoreError>;
}

impl Activities for SqlTx<'_> {
    fn record_activity(&mut self, a: &NewActivity) -> Result<i64, StoreError> {
        let details = a.details.to_string();
        self.conn
            .query_one(
                "INSERT INTO activities (at, actor, kind, device_id, summary, details) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                &[
                    Timestamp::now().into(),
                    a.actor.as_str().into(),
                    a.kind.as_str().into(),
                    a.device_id.as_deref().into(),
                    a.summary.as_str().into(),
                    details.as_str().into(),
                ],
            )?
            .int(0)
    }

    fn activities(&mut self, q: &ActivityQuery) -> Result<Vec<Activity>, StoreError> {
        let mut sql = String::from(
            "SELECT id, at, actor, kind, device_id, summary, details FROM activities WHERE 1 = 1",
        );
        let mut params: Vec<Val<'_>> = Vec::new();
        if let Some(d) = &q.device_id {
            sql.push_str(" AND device_id = ?");
            params.push(d.as_str().into());
        }
        let prefix;
        if let Some(k) = &q.kind {
            if k.ends_with('.') {
                sql.push_str(" AND kind LIKE ?");
                prefix = format!("{}%", k.replace('%', "").replace('_', "\\_"));
                sql.push_str(" ESCAPE '\\'");
                params.push(prefix.as_str().into());
            } else {
                sql.push_str(" AND kind = ?");
                params.push(k.as_str().into());
            }
        }
        if let Some(s) = q.since {
            sql.push_str(" AND at >= ?");
            params.push(s.into());
        }
        sql.push_str(if q.latest {
            " ORDER BY id DESC"
        } else {
            " ORDER BY id"
        });
        if let Some(l) = q.limit {
            sql.push_str(&format!(" LIMIT {l}"));
        }
        let mut rows = self.conn.query(&sql, &params)?;
        if q.latest {
            rows.reverse();
        }
        rows.iter()
            .map(|r| {
                Ok(Activity {
                    id: r.int(0)?,
                    at: r.ts(1)?,
                    actor: r.text(2)?,
                    kind: r.text(3)?,
                    device_id: r.opt_text(4)?,
                    summary: r.text(5)?,
                    details: serde_json::from_str(&r.text(6)?).unwrap_or(serde_json::Value::Null),
                })
            })
            .collect()
    }
}
