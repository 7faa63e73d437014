-- mdmctl schema 9 (PostgreSQL): when `serve` last asked a device for DeviceInformation on its own
-- (devices under macOS update enforcement are asked daily: their OS version decides between
-- Nudge and the declaration, and whether they still need either).

ALTER TABLE devices ADD COLUMN facts_requested_at BIGINT;
