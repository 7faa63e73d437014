-- mdmctl schema 12 (SQLite): the staged cutover's set. Devices moved to mdmctl or taken back
-- one by one (`mdmctl cutover set --devices/--team`, `cutover rollback --devices`); the
-- percentage and `--all` are kept in `meta` (`cutover.set`).

CREATE TABLE cutover_devices (
    device_id  TEXT PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    -- 1: answered by mdmctl; 0: forwarded to the old server, whatever the percentage.
    inside     INTEGER NOT NULL,
    changed_at INTEGER NOT NULL
);
