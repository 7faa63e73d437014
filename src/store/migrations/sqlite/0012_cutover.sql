-- mdmctl schema 12 (SQLite): the staged cutover's set. Devices moved to mdmctl or taken back
-- one by one (`mdmctl cutover set --devices/--team`, `cutover rollback --devices`); the
-- percentage and `--all` are kept in `meta` (`cutover.set`).

CREATE TABLE cutover_devices (
    device_id  TEXT PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    -- 1: answered by mdmctl; 0: forwarded to the old server, whatever the percentage.
    inside     INTEGER NOT NULL,
    changed_at INTEGER NOT NULL
);

-- What devices served by mdmctl send that the old server needs to take them back (their
-- Authenticate, TokenUpdate, SetBootstrapToken and CheckOut, raw and sealed), in order per
-- device, until the old server has it (`serve --upstream-migration-url`).
CREATE TABLE mirror_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id       TEXT NOT NULL,
    message         TEXT NOT NULL,
    body_sealed     BLOB NOT NULL,
    queued_at       INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT
);
CREATE INDEX mirror_outbox_device ON mirror_outbox (device_id, id);

-- Devices whose requests went to the old server, and when last (written at most once a minute
-- per device and instance), for `mdmctl cutover status`.
CREATE TABLE cutover_routed (
    device_id TEXT PRIMARY KEY,
    at        INTEGER NOT NULL
);

-- Requests refused for their identity, by reason, per running instance (its totals since it
-- started, written with its heartbeat), for `mdmctl cutover status`.
CREATE TABLE refusals (
    instance_id TEXT NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    reason      TEXT NOT NULL,
    count       INTEGER NOT NULL,
    PRIMARY KEY (instance_id, reason)
);

-- Apple Business Manager's devices as the last sync left them (`mdmctl abm sync`), one row
-- per serial number; the sync cursor is in `meta` (`abm.cursor`).
CREATE TABLE abm_devices (
    serial           TEXT PRIMARY KEY,
    model            TEXT,
    description      TEXT,
    color            TEXT,
    os               TEXT,
    device_family    TEXT,
    profile_status   TEXT,
    profile_uuid     TEXT,
    assigned_by      TEXT,
    assigned_date    TEXT,
    op_type          TEXT,
    op_date          TEXT,
    migration_deadline TEXT,
    deleted          INTEGER NOT NULL DEFAULT 0,
    updated_at       INTEGER NOT NULL
);
