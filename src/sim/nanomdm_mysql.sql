-- NanoMDM's MySQL schema (the tables a migration reads), written from its documentation:
-- devices, users, enrollments, the command queue, push certificates and certificate
-- associations. Used to build "old MDM" databases for the demo and the tests.
CREATE TABLE devices (
    id VARCHAR(255) NOT NULL,
    identity_cert TEXT NULL,
    serial_number VARCHAR(127) NULL,
    unlock_token MEDIUMBLOB NULL,
    unlock_token_at TIMESTAMP NULL,
    authenticate TEXT NOT NULL,
    authenticate_at TIMESTAMP NOT NULL,
    token_update TEXT NULL,
    token_update_at TIMESTAMP NULL,
    bootstrap_token_b64 TEXT NULL,
    bootstrap_token_at TIMESTAMP NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    INDEX (serial_number)
);
CREATE TABLE users (
    id VARCHAR(255) NOT NULL,
    device_id VARCHAR(255) NOT NULL,
    user_short_name VARCHAR(255) NULL,
    user_long_name VARCHAR(255) NULL,
    token_update TEXT NULL,
    token_update_at TIMESTAMP NULL,
    user_authenticate TEXT NULL,
    user_authenticate_at TIMESTAMP NULL,
    user_authenticate_digest TEXT NULL,
    user_authenticate_digest_at TIMESTAMP NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    PRIMARY KEY (id, device_id),
    UNIQUE (id),
    FOREIGN KEY (device_id) REFERENCES devices (id) ON DELETE CASCADE ON UPDATE CASCADE
);
CREATE TABLE enrollments (
    id VARCHAR(255) NOT NULL,
    device_id VARCHAR(255) NOT NULL,
    user_id VARCHAR(255) NULL,
    type VARCHAR(31) NOT NULL,
    topic VARCHAR(255) NOT NULL,
    push_magic VARCHAR(127) NOT NULL,
    token_hex VARCHAR(255) NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT 1,
    token_update_tally INTEGER NOT NULL DEFAULT 1,
    last_seen_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    UNIQUE (user_id),
    INDEX (type),
    FOREIGN KEY (device_id) REFERENCES devices (id) ON DELETE CASCADE ON UPDATE CASCADE,
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE ON UPDATE CASCADE
);
CREATE TABLE commands (
    command_uuid VARCHAR(127) NOT NULL,
    request_type VARCHAR(63) NOT NULL,
    command MEDIUMTEXT NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    PRIMARY KEY (command_uuid)
);
CREATE TABLE enrollment_queue (
    id VARCHAR(255) NOT NULL,
    command_uuid VARCHAR(127) NOT NULL,
    active BOOLEAN NOT NULL DEFAULT 1,
    priority TINYINT NOT NULL DEFAULT 0,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    PRIMARY KEY (id, command_uuid),
    FOREIGN KEY (id) REFERENCES enrollments (id) ON DELETE CASCADE ON UPDATE CASCADE,
    FOREIGN KEY (command_uuid) REFERENCES commands (command_uuid) ON DELETE CASCADE ON UPDATE CASCADE
);
CREATE TABLE push_certs (
    topic VARCHAR(255) NOT NULL,
    cert_pem TEXT NOT NULL,
    key_pem TEXT NOT NULL,
    stale_token INTEGER NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    PRIMARY KEY (topic)
);
CREATE TABLE cert_auth_associations (
    id VARCHAR(255) NOT NULL,
    sha256 CHAR(64) NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    PRIMARY KEY (id, sha256),
    INDEX (sha256)
);
