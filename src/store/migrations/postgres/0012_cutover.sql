-- mdmctl schema 12 (PostgreSQL): the staged cutover's set. Devices moved to mdmctl or taken
-- back one by one (`mdmctl cutover set --devices/--team`, `cutover rollback --devices`); the
-- percentage and `--all` are kept in `meta` (`cutover.set`).

CREATE TABLE cutover_devices (
    device_id  TEXT PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    -- TRUE: answered by mdmctl; FALSE: forwarded to the old server, whatever the percentage.
    inside     BOOLEAN NOT NULL,
    changed_at BIGINT NOT NULL
);
