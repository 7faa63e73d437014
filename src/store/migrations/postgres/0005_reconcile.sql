-- mdmctl schema 5 (PostgreSQL): profile delivery. One row per device and profile identifier: what
-- the reconciler sent (the desired SHA-256 and PayloadUUID), where it is (pending → verifying →
-- verified, failed with Apple's error chain, removing), retries, and whether mdmctl installed
-- it (it removes only its own). Profiles another MDM installed are rows with `unmanaged` status
-- and `ours` false, learned from ProfileList. `reconcile_dirty`: devices whose desired profiles
-- changed (apply, team transfer, enrollment, first contact), for `serve` to reconcile.

CREATE TABLE profile_status (
    device_id       TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    identifier      TEXT NOT NULL,
    name            TEXT,
    sha256          TEXT,
    payload_uuid    TEXT,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'verifying', 'verified', 'failed', 'removing', 'unmanaged')),
    ours            BOOLEAN NOT NULL DEFAULT FALSE,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    command_uuid    TEXT,
    error_chain     TEXT,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (device_id, identifier)
);
CREATE INDEX profile_status_command ON profile_status (command_uuid);
CREATE INDEX profile_status_retry ON profile_status (next_attempt_at) WHERE status = 'pending';

CREATE TABLE reconcile_dirty (
    device_id TEXT PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    marked_at BIGINT NOT NULL
);
