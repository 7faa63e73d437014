-- mdmctl schema 1 (SQLite). Times are Unix seconds (INTEGER); secret columns end in
-- `_sealed` and hold AES-256-GCM ciphertext made with the store's master key.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Server assets: APNs push certificates (and pending push keys), SCEP CAs (generated and
-- imported), Apple Business Manager key pairs and tokens, FileVault escrow key pairs.
CREATE TABLE assets (
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('apns', 'scep_ca', 'abm', 'escrow')),
    state        TEXT NOT NULL CHECK (state IN ('pending', 'active', 'trusted', 'retired')),
    source       TEXT NOT NULL,
    cert_pem     TEXT,
    csr_pem      TEXT,
    key_sealed   BLOB,
    token_sealed BLOB,
    topic        TEXT,
    sha256       TEXT,
    not_after    INTEGER,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX assets_kind ON assets (kind, state);
CREATE UNIQUE INDEX assets_fingerprint ON assets (kind, sha256) WHERE sha256 IS NOT NULL;
-- At most one active asset of each kind (the push certificate in use, the issuing CA, …).
CREATE UNIQUE INDEX assets_one_active ON assets (kind) WHERE state = 'active';

-- One row per device channel enrollment ID (UDID, or EnrollmentID for user enrollment).
CREATE TABLE devices (
    id                      TEXT PRIMARY KEY,
    serial                  TEXT,
    model                   TEXT,
    model_name              TEXT,
    product_name            TEXT,
    os_version              TEXT,
    build_version           TEXT,
    device_name             TEXT,
    source                  TEXT NOT NULL,
    imported_at             INTEGER,
    enrolled_at             INTEGER,
    migrated_at             INTEGER,
    last_seen_at            INTEGER,
    authenticate_raw        BLOB,
    token_update_raw_sealed BLOB,
    unlock_token_sealed     BLOB,
    bootstrap_token_sealed  BLOB,
    identity_sha256         TEXT,
    identity_not_after      INTEGER,
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL
);
CREATE INDEX devices_serial ON devices (serial);
-- An identity certificate belongs to one device only.
CREATE UNIQUE INDEX devices_identity ON devices (identity_sha256) WHERE identity_sha256 IS NOT NULL;

-- Device and user channels: what APNs needs to wake each one.
CREATE TABLE enrollments (
    id                      TEXT PRIMARY KEY,
    device_id               TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    type                    TEXT NOT NULL,
    user_id                 TEXT,
    user_short_name         TEXT,
    user_long_name          TEXT,
    topic                   TEXT NOT NULL,
    push_magic_sealed       BLOB,
    token_sealed            BLOB,
    token_update_raw_sealed BLOB,
    enabled                 INTEGER NOT NULL DEFAULT 1,
    last_seen_at            INTEGER,
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL
);
CREATE INDEX enrollments_device ON enrollments (device_id);
CREATE INDEX enrollments_topic ON enrollments (topic);

-- The audit log: append-only.
CREATE TABLE activities (
    id        INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    kind      TEXT NOT NULL,
    device_id TEXT,
    summary   TEXT NOT NULL,
    details   TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX activities_at ON activities (at);
CREATE INDEX activities_device ON activities (device_id, at);
CREATE INDEX activities_kind ON activities (kind, at);
CREATE TRIGGER activities_no_update BEFORE UPDATE ON activities
BEGIN
    SELECT RAISE(ABORT, 'activities are append-only');
END;
CREATE TRIGGER activities_no_delete BEFORE DELETE ON activities
BEGIN
    SELECT RAISE(ABORT, 'activities are append-only');
END;
