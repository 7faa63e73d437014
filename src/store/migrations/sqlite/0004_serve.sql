-- mdmctl schema 4 (SQLite): what `serve` needs. The command queue (one command row, one queue
-- row per enrollment it was sent to), admin API tokens (hashed), one-time SCEP challenges
-- (hashed), and what APNs last said about each enrollment.

ALTER TABLE enrollments ADD COLUMN push_error TEXT;
ALTER TABLE enrollments ADD COLUMN push_error_at INTEGER;

CREATE TABLE commands (
    uuid           TEXT PRIMARY KEY,
    request_type   TEXT NOT NULL,
    payload_sealed BLOB NOT NULL,
    created_at     INTEGER NOT NULL,
    created_by     TEXT NOT NULL
);

CREATE TABLE command_queue (
    id            INTEGER PRIMARY KEY,
    enrollment_id TEXT NOT NULL REFERENCES enrollments (id) ON DELETE CASCADE,
    command_uuid  TEXT NOT NULL REFERENCES commands (uuid) ON DELETE CASCADE,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'acknowledged', 'error', 'format_error', 'notnow')),
    priority      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    sent_at       INTEGER,
    result_at     INTEGER,
    not_now_count INTEGER NOT NULL DEFAULT 0,
    result_sealed BLOB,
    error_chain   TEXT,
    UNIQUE (enrollment_id, command_uuid)
);
-- The next command for a device: only open entries are indexed.
CREATE INDEX command_queue_open ON command_queue (enrollment_id, priority DESC, id)
    WHERE status IN ('pending', 'sent', 'notnow');
CREATE INDEX command_queue_command ON command_queue (command_uuid);

CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    sha256       TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    created_by   TEXT NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);

CREATE TABLE scep_challenges (
    sha256     TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    created_by TEXT NOT NULL
);
