-- mdmctl schema 7 (PostgreSQL): declarative management per device. `ddm_sync`: the
-- DeclarationsToken mdmctl last asked the device to sync to (a DeclarativeManagement command
-- goes out when the device's declaration set has another token). `declaration_status`: what the
-- device's status reports say of each declaration (active, valid, the ServerToken it applied,
-- Apple's reasons when invalid).

CREATE TABLE ddm_sync (
    device_id  TEXT PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    token_sent TEXT NOT NULL,
    sent_at    BIGINT NOT NULL
);

CREATE TABLE declaration_status (
    device_id    TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    identifier   TEXT NOT NULL,
    server_token TEXT,
    active       BOOLEAN,
    valid        TEXT,
    reasons      TEXT,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (device_id, identifier)
);
