//! Counts for monitoring (`/metrics`): open commands, the reconciler's backlog, channels waiting
//! for a push, and how far the migration is. Each is one indexed count or one scan of
//! `devices`, cheap enough for a scrape every few seconds.

use super::StoreError;
use super::tx::SqlTx;

/// What the store holds right now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetCounts {
    /// Command queue entries not answered yet (pending, sent, NotNow).
    pub open_commands: i64,
    /// Devices marked for the reconciler.
    pub reconcile_backlog: i64,
    /// Channels with queued commands not pushed yet.
    pub push_outbox: i64,
    pub devices: i64,
    /// Imported devices that have checked in since the cutover.
    pub migrated: i64,
    /// Imported devices not seen since the cutover.
    pub not_yet_migrated: i64,
}

pub trait Stats {
    fn fleet_counts(&mut self) -> Result<FleetCounts, StoreError>;
    /// `SELECT 1`: the store answers (readiness).
    fn ping(&mut self) -> Result<(), StoreError>;
}

impl Stats for SqlTx<'_> {
    fn ping(&mut self) -> Result<(), StoreError> {
        self.conn.query_one("SELECT 1", &[])?;
        Ok(())
    }

    fn fleet_counts(&mut self) -> Result<FleetCounts, StoreError> {
        let mut count =
            |sql: &str| -> Result<i64, StoreError> { self.conn.query_one(sql, &[])?.int(0) };
        let open_commands = count(
            "SELECT COUNT(*) FROM command_queue WHERE status IN ('pending', 'sent', 'notnow')",
        )?;
        let reconcile_backlog = count("SELECT COUNT(*) FROM reconcile_dirty")?;
        let push_outbox = count("SELECT COUNT(*) FROM push_outbox")?;
        let r = self.conn.query_one(
            "SELECT COUNT(*), \
               COALESCE(SUM(CASE WHEN source LIKE 'imported%' AND migrated_at IS NOT NULL THEN 1 ELSE 0 END), 0), \
               COALESCE(SUM(CASE WHEN source LIKE 'imported%' AND migrated_at IS NULL THEN 1 ELSE 0 END), 0) \
             FROM devices",
            &[],
        )?;
        Ok(FleetCounts {
            open_commands,
            reconcile_backlog,
            push_outbox,
            devices: r.int(0)?,
            migrated: r.int(1)?,
            not_yet_migrated: r.int(2)?,
        })
    }
}
