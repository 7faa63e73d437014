-- Apple Business Manager: the automated-enrollment profile of each scope
-- (`mdm.macos_setup.macos_setup_assistant`, canonical JSON), what was defined with Apple, and
-- each ABM device's team and assignment state.
ALTER TABLE global_settings ADD COLUMN setup_assistant TEXT;
ALTER TABLE global_settings ADD COLUMN setup_assistant_source TEXT;
ALTER TABLE teams ADD COLUMN setup_assistant TEXT;
ALTER TABLE teams ADD COLUMN setup_assistant_source TEXT;

-- The profile defined with Apple for a scope ('' = devices in no team): the SHA-256 of the
-- JSON sent, and the UUID Apple gave it. A changed JSON is defined again and reassigned.
CREATE TABLE abm_profiles (
    scope        TEXT PRIMARY KEY,
    sha256       TEXT NOT NULL,
    profile_uuid TEXT NOT NULL,
    defined_at   INTEGER NOT NULL
);

-- team: the team a device joins when it enrolls (the default team when first synced, then
-- `mdmctl transfer`). assign_state: NULL (to assign), assigned, failed, throttled,
-- not_accessible; assign_retry_at: not before then; assign_failures: in a row.
ALTER TABLE abm_devices ADD COLUMN team TEXT;
ALTER TABLE abm_devices ADD COLUMN assign_state TEXT;
ALTER TABLE abm_devices ADD COLUMN assigned_profile TEXT;
ALTER TABLE abm_devices ADD COLUMN assign_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE abm_devices ADD COLUMN assign_retry_at INTEGER;
ALTER TABLE abm_devices ADD COLUMN assign_at INTEGER;
ALTER TABLE abm_devices ADD COLUMN assign_detail TEXT;
ALTER TABLE abm_devices ADD COLUMN enrolled_udid TEXT;
CREATE INDEX abm_devices_assign ON abm_devices (assign_state, assign_retry_at);

-- A device held in Setup Assistant (TokenUpdate with AwaitingConfiguration) since then, until
-- mdmctl sends DeviceConfigured (its profiles verified, or the wait ran out).
ALTER TABLE devices ADD COLUMN awaiting_configuration_since BIGINT;
CREATE INDEX devices_awaiting_configuration ON devices (awaiting_configuration_since)
    WHERE awaiting_configuration_since IS NOT NULL;
