-- mdmctl schema 11 (SQLite): several `serve` instances on one store. Each background job is run
-- by one instance at a time, the holder of its lease (taken over when it lapses); instances
-- record that they are alive, and each job its last run (`mdmctl get servers`). Channels with
-- newly queued commands wait in an outbox until pushed, so a push lost to a crash between the
-- commit and the push is sent by whichever instance runs the `push` job.

CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    acquired_at INTEGER NOT NULL,
    renewed_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);

CREATE TABLE servers (
    id         TEXT PRIMARY KEY,
    hostname   TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    version    TEXT NOT NULL,
    url        TEXT NOT NULL,
    -- Its lease period: it beats every third of it, and is gone when not seen for longer.
    lease_seconds INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    seen_at    INTEGER NOT NULL
);

CREATE TABLE job_runs (
    name        TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    ok          INTEGER NOT NULL,
    summary     TEXT NOT NULL
);

-- A channel to push: written with the commands it got, cleared once pushed (or once the device
-- fetched them). Rows older than a few seconds were not pushed by their queuer: the `push` job
-- sends them.
CREATE TABLE push_outbox (
    enrollment_id TEXT PRIMARY KEY REFERENCES enrollments (id) ON DELETE CASCADE,
    queued_at     INTEGER NOT NULL
);
CREATE INDEX push_outbox_queued ON push_outbox (queued_at);
