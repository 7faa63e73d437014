-- mdmctl schema 8 (PostgreSQL): identity renewal. One row per device whose identity certificate
-- mdmctl set out to renew: the InstallProfile of the enrollment profile in flight, the identity
-- it replaces, and the outcome (`sent` until the device presents a new identity from mdmctl's CA,
-- `renewed`, or `failed` with the reason: the device refused, or it cannot be renewed).

CREATE TABLE identity_renewal (
    device_id    TEXT PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    status       TEXT NOT NULL CHECK (status IN ('sent', 'renewed', 'failed')),
    old_sha256   TEXT NOT NULL,
    command_uuid TEXT,
    reason       TEXT,
    updated_at   BIGINT NOT NULL
);
