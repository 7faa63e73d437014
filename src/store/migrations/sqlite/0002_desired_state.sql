-- mdmctl schema 2 (SQLite): desired state written by `mdmctl apply -f`. Teams with their
-- settings, the global settings (devices in no team), and the profiles each scope should have:
-- the admin's own (`managed` false) and those mdmctl builds from settings (`managed` true:
-- FileVault, Nudge, the software-update declaration). The reconciler delivers them.

CREATE TABLE teams (
    id                     INTEGER PRIMARY KEY,
    name                   TEXT NOT NULL UNIQUE,
    minimum_version        TEXT,
    deadline               TEXT,
    enable_disk_encryption INTEGER NOT NULL DEFAULT 0,
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL
);

-- One row (id = 1): the settings of devices in no team.
CREATE TABLE global_settings (
    id                     INTEGER PRIMARY KEY CHECK (id = 1),
    minimum_version        TEXT,
    deadline               TEXT,
    enable_disk_encryption INTEGER NOT NULL DEFAULT 0,
    apple_bm_default_team  TEXT,
    updated_at             INTEGER NOT NULL
);

-- `team_id` NULL: a global profile. `kind`: `profile` (a .mobileconfig from the admin),
-- `filevault`, `nudge` (Configuration profiles mdmctl builds) or `ddm` (a declaration, JSON).
CREATE TABLE desired_profiles (
    id           INTEGER PRIMARY KEY,
    team_id      INTEGER REFERENCES teams (id) ON DELETE CASCADE,
    identifier   TEXT NOT NULL,
    name         TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('profile', 'filevault', 'nudge', 'ddm')),
    managed      INTEGER NOT NULL DEFAULT 0,
    content      BLOB NOT NULL,
    sha256       TEXT NOT NULL,
    source       TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE UNIQUE INDEX desired_profiles_scope ON desired_profiles (COALESCE(team_id, 0), identifier);

ALTER TABLE devices ADD COLUMN team_id INTEGER REFERENCES teams (id) ON DELETE SET NULL;
CREATE INDEX devices_team ON devices (team_id);
