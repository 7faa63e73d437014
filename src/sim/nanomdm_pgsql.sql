-- NanoMDM's PostgreSQL schema (micromdm/nanomdm storage/pgsql/schema.sql), written from the
-- reference for tests.
CREATE OR REPLACE FUNCTION update_current_timestamp() RETURNS TRIGGER AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TABLE devices (
    id VARCHAR(255) PRIMARY KEY,
    identity_cert TEXT NULL CHECK (identity_cert IS NULL OR SUBSTRING(identity_cert FROM 1 FOR 27) = '-----BEGIN CERTIFICATE-----'),
    serial_number VARCHAR(127) NULL,
    unlock_token BYTEA NULL,
    unlock_token_at TIMESTAMP NULL,
    authenticate TEXT NOT NULL,
    authenticate_at TIMESTAMP NOT NULL,
    token_update TEXT NULL,
    token_update_at TIMESTAMP NULL,
    bootstrap_token_b64 TEXT NULL,
    bootstrap_token_at TIMESTAMP NULL,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX serial_number ON devices (serial_number);
CREATE TRIGGER update_devices BEFORE UPDATE ON devices FOR EACH ROW EXECUTE PROCEDURE update_current_timestamp();

CREATE TABLE users (
    id VARCHAR(255) NOT NULL,
    device_id VARCHAR(255) NOT NULL REFERENCES devices (id) ON DELETE CASCADE ON UPDATE CASCADE,
    user_short_name VARCHAR(255) NULL,
    user_long_name VARCHAR(255) NULL,
    token_update TEXT NULL,
    token_update_at TIMESTAMP NULL,
    user_authenticate TEXT NULL,
    user_authenticate_at TIMESTAMP NULL,
    user_authenticate_digest TEXT NULL,
    user_authenticate_digest_at TIMESTAMP NULL,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (id, device_id),
    UNIQUE (id)
);

CREATE TABLE enrollments (
    id VARCHAR(255) PRIMARY KEY,
    device_id VARCHAR(255) NOT NULL REFERENCES devices (id) ON DELETE CASCADE ON UPDATE CASCADE,
    user_id VARCHAR(255) NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE ON UPDATE CASCADE,
    type VARCHAR(31) NOT NULL,
    topic VARCHAR(255) NOT NULL,
    push_magic VARCHAR(127) NOT NULL,
    token_hex VARCHAR(255) NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    token_update_tally INTEGER NOT NULL DEFAULT 1,
    last_seen_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE commands (
    command_uuid VARCHAR(127) PRIMARY KEY,
    request_type VARCHAR(63) NOT NULL,
    command TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE enrollment_queue (
    id VARCHAR(255) NOT NULL REFERENCES enrollments (id) ON DELETE CASCADE ON UPDATE CASCADE,
    command_uuid VARCHAR(127) NOT NULL REFERENCES commands (command_uuid) ON DELETE CASCADE ON UPDATE CASCADE,
    active BOOLEAN NOT NULL DEFAULT TRUE,
    priority SMALLINT NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (id, command_uuid)
);

CREATE TABLE push_certs (
    topic VARCHAR(255) PRIMARY KEY,
    cert_pem TEXT NOT NULL,
    key_pem TEXT NOT NULL,
    stale_token INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE cert_auth_associations (
    id VARCHAR(255) NOT NULL,
    sha256 CHAR(64) NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (id, sha256)
);
