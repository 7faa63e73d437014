-- mdmctl schema 6 (PostgreSQL): FileVault per device. Where enforcement is (`enforcing`: the
-- FileVault profile is on its way; `verifying`: it is installed and SecurityInfo is asked for the
-- escrowed key; `verified`: the key is escrowed; `action_required`: the user or the admin must act,
-- `reason` says what), the personal recovery key (sealed with the store's master key; never in
-- clear), the escrow certificate that decrypted it, the SecurityInfo or RotateFileVaultKey in
-- flight and when to ask again.

CREATE TABLE disk_encryption (
    device_id       TEXT PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    status          TEXT NOT NULL CHECK (status IN ('enforcing', 'verifying', 'verified', 'action_required')),
    reason          TEXT,
    key_sealed      BYTEA,
    escrow_sha256   TEXT,
    key_escrowed_at BIGINT,
    command_uuid    TEXT,
    next_check_at   BIGINT,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX disk_encryption_due ON disk_encryption (next_check_at);
