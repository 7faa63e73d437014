-- mdmctl schema 10 (SQLite): enrollment secrets, what each SCEP certificate was issued under,
-- admin-approved identity re-binding, and roles for API tokens.

-- A secret a device (or the person enrolling it) must present to get an enrollment profile:
-- `/enroll?token=` or basic auth. Only its SHA-256 is kept. Scoped to a team (new devices land
-- there) and optionally to one device (its re-enrollment may move that device's identity).
CREATE TABLE enroll_secrets (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL,
    sha256       TEXT NOT NULL UNIQUE,
    team_id      INTEGER REFERENCES teams(id) ON DELETE SET NULL,
    device_id    TEXT,
    created_at   INTEGER NOT NULL,
    created_by   TEXT NOT NULL,
    expires_at   INTEGER,
    last_used_at INTEGER,
    revoked_at   INTEGER
);
CREATE UNIQUE INDEX enroll_secrets_live_name ON enroll_secrets (name) WHERE revoked_at IS NULL;

-- What a one-time challenge was minted for: an enrollment (`enroll`, with its secret, team and
-- device scope), a renewal (`renewal`, for one device), or the admin API (`api`).
ALTER TABLE scep_challenges ADD COLUMN purpose TEXT NOT NULL DEFAULT 'api';
ALTER TABLE scep_challenges ADD COLUMN device_id TEXT;
ALTER TABLE scep_challenges ADD COLUMN team_id INTEGER;
ALTER TABLE scep_challenges ADD COLUMN enroll_secret_id INTEGER;
CREATE INDEX scep_challenges_expiry ON scep_challenges (expires_at);

-- Every certificate mdmctl's SCEP issued, and under what: a one-time challenge, the static
-- challenge, or a renewal signed by an identity (then `device_id` is the device it identified).
CREATE TABLE scep_issued (
    sha256           TEXT PRIMARY KEY,
    how              TEXT NOT NULL,
    challenge_sha256 TEXT,
    device_id        TEXT,
    issued_at        INTEGER NOT NULL,
    not_after        INTEGER NOT NULL
);

-- An admin's permission for a known device to bind a new identity at its next Authenticate
-- (`mdmctl device rebind`).
CREATE TABLE rebind_grants (
    device_id  TEXT PRIMARY KEY,
    granted_by TEXT NOT NULL,
    granted_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

-- Tokens made before roles existed keep every right they had: `admin`.
ALTER TABLE api_tokens ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE api_tokens ADD COLUMN team_id INTEGER REFERENCES teams(id) ON DELETE CASCADE;
