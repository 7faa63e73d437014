-- mdmctl schema 8 (PostgreSQL): identity renewal. One row per device whose identity certificate
-- mdmctl set out to renew: the InstallProfile of the enrollment profile in flight, the identity
-- it replaces, the one-time SCEP challenge it carries, and the outcome (`sent` until the device
-- presents the identity issued under that challenge, `renewed`, or `failed` with the reason: the
-- device refused, or it cannot be renewed). A one-time challenge remembers the certificate
-- issued under it (`issued_sha256`), so a renewal is recognized by that certificate alone.

CREATE TABLE identity_renewal (
    device_id    TEXT PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    status       TEXT NOT NULL CHECK (status IN ('sent', 'renewed', 'failed')),
    old_sha256   TEXT NOT NULL,
    command_uuid TEXT,
    challenge_sha256 TEXT,
    reason       TEXT,
    updated_at   BIGINT NOT NULL
);

ALTER TABLE scep_challenges ADD COLUMN issued_sha256 TEXT;
