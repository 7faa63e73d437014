-- mdmctl schema 3 (SQLite): what `import-devices` last wrote for each imported record, so a
-- re-import of the same source changes nothing ("unchanged").
CREATE TABLE import_rows (
    kind        TEXT NOT NULL,
    id          TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    source      TEXT NOT NULL,
    imported_at INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
);
