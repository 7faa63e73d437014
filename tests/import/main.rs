//! `import-devices` against the real tools: NanoMDM's schema in the local MariaDB and
//! PostgreSQL, dumped with the real `mysqldump` and `pg_dump` in several option sets (and read
//! live), imported into a real store, every field compared. Bad inputs, idempotency, dry runs,
//! "kept newer", and what `serve` sees.

#[path = "../common/mod.rs"]
mod common;
mod fixture;

use std::sync::Arc;

use common::{PASSPHRASE, TestContext};
use fixture::{Fleet, LAST_SEEN_UNIX, MyDb, PgDb};
use mdmctl::store::{AssetKind, AssetState, Location, Store};
use zeroize::Zeroizing;

fn open_store(ctx: &TestContext) -> Arc<dyn Store> {
    mdmctl::store::open(
        &Location::parse(&ctx.db().display().to_string()),
        Box::new(mdmctl::secrets::FixedPassphrase(Zeroizing::new(
            PASSPHRASE.to_string(),
        ))),
    )
    .unwrap()
}

/// Import `source` into a fresh store; returns the context and the JSON summary.
fn import_fresh(source: &str, extra: &[&str]) -> (TestContext, serde_json::Value) {
    let ctx = TestContext::new();
    ctx.init();
    let mut args = vec!["import-devices", source, "--format", "json"];
    args.extend(extra);
    let run = ctx.run(&args);
    run.success();
    let json = run.json();
    (ctx, json)
}

/// Every field a device and its channels need after cutover, compared with the old MDM's.
fn assert_fleet_imported(ctx: &TestContext, fleet: &Fleet, summary: &serde_json::Value) {
    let n = fleet.devices.len() as u64;
    assert_eq!(summary["devices"]["found"], n, "{summary:#}");
    assert_eq!(summary["devices"]["imported"], n, "{summary:#}");
    assert_eq!(summary["devices"]["skipped"], 0, "{summary:#}");
    assert_eq!(
        summary["enrollments"]["imported"],
        fleet.enrollment_count(),
        "{summary:#}"
    );
    assert_eq!(summary["queued_left_behind"], fleet.commands as u64);
    assert_eq!(summary["warnings"]["identity_expiring_30d"], 1);
    assert_eq!(summary["assets"][0]["kind"], "apns");
    assert_eq!(summary["assets"][0]["outcome"], "imported");
    let store = open_store(ctx);
    store
        .read(|tx| -> Result<(), mdmctl::store::StoreError> {
            for d in &fleet.devices {
                let rec = tx
                    .device(&d.udid)?
                    .unwrap_or_else(|| panic!("{} missing", d.udid));
                assert_eq!(rec.serial.as_deref(), Some(d.serial.as_str()));
                assert_eq!(rec.identity_sha256.as_deref(), Some(d.sha256.as_str()));
                assert_eq!(rec.identity_not_after.map(|t| t.0), Some(d.not_after));
                assert_eq!(
                    rec.authenticate_raw.as_deref(),
                    Some(d.authenticate.as_bytes())
                );
                assert_eq!(
                    rec.token_update_raw.as_deref().map(|v| v.as_slice()),
                    Some(d.token_update.as_bytes())
                );
                assert_eq!(
                    rec.unlock_token.as_deref().map(|v| v.as_slice()),
                    Some(d.unlock_token.as_slice())
                );
                assert_eq!(
                    rec.bootstrap_token.as_deref().map(|v| v.to_vec()),
                    d.bootstrap.clone()
                );
                assert!(rec.source.starts_with("imported:"), "{}", rec.source);
                assert_eq!(rec.model.as_deref(), Some("MacBookPro18,3"));
                assert_eq!(rec.os_version.as_deref(), Some("15.1"));
                assert!(
                    rec.device_name
                        .as_deref()
                        .unwrap_or("")
                        .starts_with("Zoë's \"Mac\" \\")
                );
                assert_eq!(rec.enrolled_at.map(|t| t.0), Some(LAST_SEEN_UNIX));

                // What `serve` checks on every request.
                let auth = tx.device_auth(&d.udid, Some(&d.udid))?.unwrap();
                assert!(auth.imported());
                assert_eq!(auth.identity_sha256.as_deref(), Some(d.sha256.as_str()));
                assert_eq!(auth.channel_enabled, Some(d.enabled));

                let chans = tx.enrollments_of(&d.udid)?;
                assert_eq!(chans.len(), 1 + usize::from(d.user.is_some()));
                let dev = &chans[0];
                assert_eq!(dev.id, d.udid);
                assert_eq!(dev.kind, "Device");
                assert_eq!(dev.topic, fleet.topic);
                assert_eq!(
                    dev.push_magic.as_deref().map(|s| s.as_str()),
                    Some(d.push_magic.as_str())
                );
                assert_eq!(
                    dev.token.as_deref().map(|v| v.as_slice()),
                    Some(d.token.as_slice())
                );
                assert_eq!(dev.enabled, d.enabled);
                assert!(
                    dev.token_update_raw.is_none(),
                    "the device channel's TokenUpdate is kept once, on the device record"
                );
                assert_eq!(dev.last_seen_at.map(|t| t.0), Some(LAST_SEEN_UNIX));
                if let Some((uid, short, long, raw, magic, tok)) = &d.user {
                    let u = &chans[1];
                    assert_eq!(u.id, format!("{}:{uid}", d.udid));
                    assert_eq!(u.kind, "User");
                    assert_eq!(u.user_id.as_deref(), Some(uid.as_str()));
                    assert_eq!(u.user_short_name.as_deref(), Some(short.as_str()));
                    assert_eq!(u.user_long_name.as_deref(), Some(long.as_str()));
                    assert_eq!(
                        u.token_update_raw.as_deref().map(|v| v.as_slice()),
                        Some(raw.as_bytes())
                    );
                    assert_eq!(
                        u.push_magic.as_deref().map(|s| s.as_str()),
                        Some(magic.as_str())
                    );
                    assert_eq!(
                        u.token.as_deref().map(|v| v.as_slice()),
                        Some(tok.as_slice())
                    );
                }
            }
            let apns = tx
                .active_asset(AssetKind::Apns)?
                .expect("push certificate imported");
            assert_eq!(apns.topic.as_deref(), Some(fleet.topic.as_str()));
            Ok(())
        })
        .unwrap();
}

#[test]
fn mysqldump_option_sets_import_every_field() {
    let Some(db) = MyDb::create() else { return };
    let fleet = Fleet::new(4, 1);
    db.load(&fleet);
    let scratch = TestContext::new();
    for (name, opts) in [
        ("default", &[][..]),
        ("skip-extended", &["--skip-extended-insert"][..]),
        ("hex-blob", &["--hex-blob"][..]),
        ("complete-insert", &["--complete-insert"][..]),
        (
            "no-create-info-complete",
            &["--no-create-info", "--complete-insert"][..],
        ),
    ] {
        let path = scratch.path(&format!("{name}.sql"));
        db.dump(opts, &path);
        let (ctx, summary) = import_fresh(&path.display().to_string(), &[]);
        assert_fleet_imported(&ctx, &fleet, &summary);
    }
    // gzip-compressed
    let path = scratch.path("default.sql");
    let gz = scratch.path("dump.sql.gz");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -c {} > {}", path.display(), gz.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let (ctx, summary) = import_fresh(&gz.display().to_string(), &[]);
    assert_fleet_imported(&ctx, &fleet, &summary);
    assert!(
        summary["sources"][0]["detected"]
            .as_str()
            .unwrap()
            .contains("gzip")
    );
    // The real gzip dump through stdin (`zcat dump.sql.gz | mdmctl import-devices -`): the same
    // devices, every field.
    let ctx = TestContext::new();
    ctx.init();
    let out = ctx
        .mdmctl()
        .args(["import-devices", "-", "--format", "json"])
        .stdin(std::fs::File::open(&gz).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_fleet_imported(&ctx, &fleet, &summary);
}

#[test]
fn pg_dump_option_sets_import_every_field() {
    let Some(db) = PgDb::create() else { return };
    let fleet = Fleet::new(4, 2);
    db.load(&fleet);
    let scratch = TestContext::new();
    for (name, opts) in [
        ("default", &[][..]),
        ("inserts", &["--inserts"][..]),
        ("column-inserts", &["--column-inserts"][..]),
    ] {
        let path = scratch.path(&format!("{name}.sql"));
        db.dump(opts, &path);
        let (ctx, summary) = import_fresh(&path.display().to_string(), &[]);
        assert_fleet_imported(&ctx, &fleet, &summary);
        assert!(
            summary["sources"][0]["detected"]
                .as_str()
                .unwrap()
                .contains("PostgreSQL"),
            "{summary:#}"
        );
    }
    // A custom-format archive is answered with the command that converts it.
    let path = scratch.path("custom.dump");
    db.dump(&["-Fc"], &path);
    let ctx = TestContext::new();
    ctx.init();
    ctx.run(&["import-devices", &path.display().to_string()])
        .user_error()
        .stderr_has("custom-format")
        .stderr_has(&format!("pg_restore -f out.sql {}", path.display()));
}

#[test]
fn live_databases_import_every_field() {
    if let Some(db) = MyDb::create() {
        let fleet = Fleet::new(3, 3);
        db.load(&fleet);
        let (ctx, summary) = import_fresh(&db.url(), &[]);
        assert_fleet_imported(&ctx, &fleet, &summary);
        assert!(
            summary["sources"][0]["detected"]
                .as_str()
                .unwrap()
                .contains("live")
        );
    }
    if let Some(db) = PgDb::create() {
        let fleet = Fleet::new(3, 4);
        db.load(&fleet);
        let (ctx, summary) = import_fresh(&db.url(), &[]);
        assert_fleet_imported(&ctx, &fleet, &summary);
        let detected = summary["sources"][0]["detected"].as_str().unwrap();
        assert!(
            detected.contains("live database") && detected.contains("read-only"),
            "{detected}"
        );
    }
}

#[test]
fn reimport_dry_run_and_kept_newer() {
    let Some(db) = MyDb::create() else { return };
    let fleet = Fleet::new(3, 5);
    db.load(&fleet);
    let scratch = TestContext::new();
    let path = scratch.path("dump.sql");
    db.dump(&[], &path);
    let src = path.display().to_string();

    let ctx = TestContext::new();
    ctx.init();
    // A dry run checks everything and writes nothing.
    let before = common::sqlite_bytes(&ctx.db());
    let dry = ctx.run(&["import-devices", &src, "--dry-run", "--format", "json"]);
    dry.success();
    assert_eq!(dry.json()["dry_run"], true);
    assert_eq!(dry.json()["devices"]["imported"], 3);
    let store = open_store(&ctx);
    assert_eq!(store.read(|tx| tx.count_devices()).unwrap(), 0);
    drop(store);
    let _ = before;

    ctx.run(&["import-devices", &src])
        .success()
        .stdout_has("Imported.");
    // The same source again changes nothing.
    let again = ctx.run(&["import-devices", &src, "--format", "json"]);
    again.success();
    let j = again.json();
    assert_eq!(j["devices"]["unchanged"], 3, "{j:#}");
    assert_eq!(j["devices"]["imported"], 0);
    assert_eq!(j["devices"]["updated"], 0);
    assert_eq!(j["enrollments"]["unchanged"], fleet.enrollment_count());

    // A device that checked in to mdmctl after the import is never overwritten.
    let first = &fleet.devices[0].udid;
    let store = open_store(&ctx);
    store.write(|tx| tx.mark_migrated(first)).unwrap();
    drop(store);
    db.mysql(
        &format!("UPDATE devices SET serial_number = 'CHANGED' WHERE id <> '{first}'"),
        true,
    );
    db.mysql(
        &format!("UPDATE devices SET serial_number = 'OLD' WHERE id = '{first}'"),
        true,
    );
    db.dump(&[], &path);
    let third = ctx.run(&["import-devices", &src, "--format", "json"]);
    third.success();
    let j = third.json();
    assert_eq!(j["devices"]["kept_newer"], 1, "{j:#}");
    assert_eq!(j["devices"]["updated"], 2, "{j:#}");
    let store = open_store(&ctx);
    store
        .read(|tx| -> Result<(), mdmctl::store::StoreError> {
            assert_eq!(
                tx.device(first)?.unwrap().serial.as_deref(),
                Some(fleet.devices[0].serial.as_str())
            );
            assert_eq!(
                tx.device(&fleet.devices[1].udid)?
                    .unwrap()
                    .serial
                    .as_deref(),
                Some("CHANGED")
            );
            let log = tx.activities(&mdmctl::store::ActivityQuery {
                kind: Some("devices.import".into()),
                ..Default::default()
            })?;
            assert_eq!(log.len(), 3, "one entry per import (not the dry run)");
            assert!(log[0].summary.contains("3 new"), "{}", log[0].summary);
            assert_eq!(log[0].actor.split('@').next(), Some("tester"));
            Ok(())
        })
        .unwrap();
    drop(store);

    // The push certificate was renewed (same topic, later expiry) after the import: importing
    // the old database again keeps the renewed one (see: issue 10 §3: it put the old one
    // back, which breaks pushes on the renewal day).
    let renewed = fixture::cert(
        "APSP:test",
        Some(&fleet.topic),
        &fleet.push_key,
        None,
        700,
        false,
    );
    ctx.write("renewed.pem", renewed.to_pem().unwrap());
    ctx.write(
        "push.key",
        fleet.push_key.private_key_to_pem_pkcs8().unwrap(),
    );
    ctx.run(&[
        "set",
        "mdm-apple",
        "--apns-cert",
        "renewed.pem",
        "--apns-key",
        "push.key",
    ])
    .success();
    let j = ctx
        .run(&["import-devices", &src, "--format", "json"])
        .success()
        .json();
    let apns = j["assets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "apns")
        .unwrap_or_else(|| panic!("{j:#}"));
    assert!(
        apns["outcome"].as_str().unwrap().starts_with("kept newer"),
        "{apns}"
    );
    let store = open_store(&ctx);
    let active = store
        .read(|tx| tx.active_asset(AssetKind::Apns))
        .unwrap()
        .unwrap();
    assert_eq!(
        active.sha256.as_deref(),
        Some(mdmctl::pki::fingerprint_sha256(&renewed).unwrap().as_str()),
        "the renewed certificate stays active"
    );
}

#[test]
fn bad_inputs_are_clear_errors_and_write_nothing() {
    let Some(db) = MyDb::create() else { return };
    let fleet = Fleet::new(3, 6);
    db.load(&fleet);
    let ctx = TestContext::new();
    ctx.init();
    let path = ctx.path("dump.sql");
    db.dump(&[], &path);
    let full = std::fs::read(&path).unwrap();

    // Truncated in the middle of a row: line, byte offset, table named; nothing written.
    let cut = full.windows(11).position(|w| w == b"INSERT INTO").unwrap() + 400;
    ctx.write("truncated.sql", &full[..cut]);
    ctx.run(&["import-devices", "truncated.sql"])
        .user_error()
        .stderr_has("truncated.sql")
        .stderr_has("line ")
        .stderr_has("byte ")
        .stderr_has("table `");
    // Truncated at a statement boundary: the completion line is missing.
    let stmt_end = full
        .windows(15)
        .position(|w| w == b"UNLOCK TABLES;\n")
        .unwrap()
        + 15;
    ctx.write("cut.sql", &full[..stmt_end]);
    ctx.run(&["import-devices", "cut.sql"])
        .user_error()
        .stderr_has("truncated");
    // Binary garbage.
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761u32) >> 13) as u8)
        .collect();
    ctx.write("garbage.bin", &garbage);
    ctx.run(&["import-devices", "garbage.bin"])
        .user_error()
        .stderr_has("garbage.bin");
    // A table that is not NanoMDM's layout.
    ctx.write(
        "layout.sql",
        "-- MySQL dump 10.13\nCREATE TABLE `devices` (`udid` varchar(10));\nINSERT INTO `devices` VALUES ('x');\n-- Dump completed on 2026-01-01\n",
    );
    ctx.run(&["import-devices", "layout.sql"])
        .user_error()
        .stderr_has("no `id` column");
    let store = open_store(&ctx);
    assert_eq!(store.read(|tx| tx.count_devices()).unwrap(), 0);
    drop(store);

    // Duplicate UDIDs across sources: skipped and counted; `--strict` makes it a failure.
    let r = ctx.run(&[
        "import-devices",
        "dump.sql",
        "dump.sql",
        "--format",
        "json",
        "--report",
        "skips.csv",
        "--dry-run",
    ]);
    r.success();
    let j = r.json();
    assert_eq!(j["warnings"]["duplicate_udids"], 3, "{j:#}");
    assert_eq!(j["devices"]["skipped"], 3);
    // Their channels stay with the first source too.
    assert_eq!(
        j["enrollments"]["imported"],
        fleet.enrollment_count(),
        "{j:#}"
    );
    assert_eq!(
        j["enrollments"]["skipped"],
        fleet.enrollment_count(),
        "{j:#}"
    );
    let report = String::from_utf8(ctx.read("skips.csv")).unwrap();
    assert!(report.starts_with("kind,id,source,reason\n"), "{report}");
    assert_eq!(
        report.matches("duplicate UDID").count() as u64,
        3 + fleet.enrollment_count(),
        "{report}"
    );
    std::fs::remove_file(ctx.path("skips.csv")).unwrap();
    ctx.run(&[
        "import-devices",
        "dump.sql",
        "dump.sql",
        "--strict",
        "--report",
        "skips.csv",
    ])
    .user_error()
    .stderr_has("--strict");
    let report = String::from_utf8(ctx.read("skips.csv")).unwrap();
    assert!(report.matches("duplicate UDID").count() >= 3, "{report}");
    let store = open_store(&ctx);
    assert_eq!(store.read(|tx| tx.count_devices()).unwrap(), 0);
    drop(store);

    // An invalid identity certificate: that device is skipped with the reason.
    let bad = &fleet.devices[1];
    db.mysql(
        &format!(
            "UPDATE devices SET identity_cert = '-----BEGIN CERTIFICATE-----\\nTUlJQmFk\\n-----END CERTIFICATE-----\\n' WHERE id = '{}'",
            bad.udid
        ),
        true,
    );
    db.dump(&[], &path);
    let r = ctx.run(&["import-devices", "dump.sql", "--format", "json"]);
    r.success();
    let j = r.json();
    assert_eq!(j["devices"]["imported"], 2, "{j:#}");
    assert_eq!(j["skipped"][0]["id"], bad.udid.as_str());
    assert!(
        j["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("invalid identity certificate")
    );

    // One identity certificate on two devices: the second is skipped, the first keeps it.
    let (a, b) = (&fleet.devices[0], &fleet.devices[2]);
    db.mysql(
        &format!(
            "UPDATE devices SET identity_cert = (SELECT identity_cert FROM (SELECT identity_cert FROM devices WHERE id = '{}') x) WHERE id = '{}'",
            a.udid, b.udid
        ),
        true,
    );
    db.dump(&[], &path);
    let fresh = TestContext::new();
    fresh.init();
    let r = fresh.run(&[
        "import-devices",
        &path.display().to_string(),
        "--format",
        "json",
    ]);
    r.success();
    let j = r.json();
    let reasons: Vec<String> = j["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{} {}", s["id"], s["reason"]))
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains(&b.udid) && r.contains("identity certificate in use")),
        "{reasons:?}"
    );

    // Fleet keeps the same tables with a `nano_` prefix.
    let mut fleet_dump = fleet_tables(&full);
    // And an admin `users` table of its own, after the `nano_` ones as mysqldump orders them.
    fleet_dump.extend_from_slice(
        b"\nDROP TABLE IF EXISTS `users`;\nCREATE TABLE `users` (\n  `id` int unsigned NOT NULL AUTO_INCREMENT,\n  `password` varbinary(255) NOT NULL,\n  `salt` varchar(255) NOT NULL,\n  `name` varchar(255) NOT NULL,\n  `email` varchar(255) NOT NULL,\n  PRIMARY KEY (`id`)\n);\nLOCK TABLES `users` WRITE;\nINSERT INTO `users` VALUES (1,_binary 'x','salt','Admin','admin@example.com');\nUNLOCK TABLES;\n",
    );
    fresh.write("fleet.sql", fleet_dump);
    let fresh2 = TestContext::new();
    fresh2.init();
    let fp = fresh.path("fleet.sql").display().to_string();
    let r = fresh2.run(&["import-devices", &fp, "--format", "json"]);
    r.success().stderr_has("detected Fleet");
    let j = r.json();
    assert_eq!(j["devices"]["imported"], 3, "{j:#}");
    assert_eq!(j["queued_left_behind"], 3);
    let store = open_store(&fresh2);
    let d = store
        .read(|tx| tx.device(&fleet.devices[0].udid))
        .unwrap()
        .unwrap();
    assert_eq!(d.source, "imported:fleet");
    drop(store);

    // A real Fleet dump holds ~150 tables of Fleet's own before its `nano_` ones: the first
    // bytes do not say Fleet, the tables do (see: issue 10 §2: labelled `imported:nanomdm`).
    let mut padded = b"--\n-- Table structure for table `cve_meta`\n--\n\nDROP TABLE IF EXISTS `cve_meta`;\nCREATE TABLE `cve_meta` (\n  `cve` varchar(20) NOT NULL,\n  `summary` text,\n  PRIMARY KEY (`cve`)\n);\nLOCK TABLES `cve_meta` WRITE;\n".to_vec();
    for i in 0..400 {
        padded.extend_from_slice(
            format!(
                "INSERT INTO `cve_meta` VALUES ('CVE-2026-{i:05}','{}');\n",
                "x".repeat(60)
            )
            .as_bytes(),
        );
    }
    padded.extend_from_slice(b"UNLOCK TABLES;\n");
    padded.extend_from_slice(&fresh.read("fleet.sql"));
    fresh.write("fleet-full.sql", &padded);
    let fresh3 = TestContext::new();
    fresh3.init();
    let fp = fresh.path("fleet-full.sql").display().to_string();
    let r = fresh3.run(&["import-devices", &fp, "--format", "json"]);
    r.success().stderr_has("read as Fleet");
    assert!(
        r.json()["sources"][0]["detected"]
            .as_str()
            .unwrap()
            .starts_with("Fleet")
    );
    let store = open_store(&fresh3);
    let d = store
        .read(|tx| tx.device(&fleet.devices[0].udid))
        .unwrap()
        .unwrap();
    assert_eq!(d.source, "imported:fleet");
    drop(store);

    // A source whose push certificate has another topic than the store's is refused.
    let other = Fleet::new(1, 7);
    let db2 = MyDb::create().unwrap();
    db2.load(&other);
    let p2 = ctx.path("other.sql");
    db2.dump(&[], &p2);
    ctx.run(&["import-devices", "other.sql"])
        .user_error()
        .stderr_has("topic");
    let store = open_store(&ctx);
    let n = store.read(|tx| tx.count_devices()).unwrap();
    assert_eq!(n, 2, "the refused import wrote nothing");
}

#[test]
fn scep_depot_ca_is_trusted_next_to_the_existing_one() {
    let Some(db) = MyDb::create() else { return };
    let fleet = Fleet::new(2, 8);
    db.load(&fleet);
    let ctx = TestContext::new();
    ctx.init();
    let path = ctx.path("dump.sql");
    db.dump(&[], &path);
    std::fs::create_dir(ctx.path("depot")).unwrap();
    ctx.write("depot/ca.pem", fleet.ca.to_pem().unwrap());
    ctx.write(
        "depot/ca.key",
        fleet.ca_key.private_key_to_pem_pkcs8().unwrap(),
    );
    let r = ctx.run(&[
        "import-devices",
        "dump.sql",
        "--scep-depot",
        "depot",
        "--format",
        "json",
    ]);
    r.success();
    let j = r.json();
    assert!(
        j["assets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "scep_ca"),
        "{j:#}"
    );
    let store = open_store(&ctx);
    store
        .read(|tx| -> Result<(), mdmctl::store::StoreError> {
            let cas = tx.assets(AssetKind::ScepCa)?;
            let fp = hex::encode(
                fleet
                    .ca
                    .digest(openssl::hash::MessageDigest::sha256())
                    .unwrap(),
            );
            let ca = cas
                .iter()
                .find(|a| a.sha256.as_deref() == Some(fp.as_str()))
                .expect("old CA stored");
            assert!(matches!(ca.state, AssetState::Active | AssetState::Trusted));
            assert!(ca.has_key);
            Ok(())
        })
        .unwrap();
}

#[test]
fn csv_template_round_trips() {
    let ctx = TestContext::new();
    ctx.init();
    let t = ctx.run(&["import-devices", "--csv-template"]);
    t.success();
    let template = t.stdout.clone();
    assert!(
        template.starts_with("udid,serial,topic,push_magic,token_hex"),
        "{template}"
    );
    ctx.write("devices.csv", &template);
    // A report path that cannot be written is refused before anything is imported.
    ctx.run(&[
        "import-devices",
        "devices.csv",
        "--report",
        "no/such/dir/skips.csv",
    ])
    .user_error()
    .stderr_has("cannot write the report");
    assert_eq!(open_store(&ctx).read(|tx| tx.count_devices()).unwrap(), 0);
    let r = ctx.run(&["import-devices", "devices.csv", "--format", "json"]);
    r.success().stderr_has("detected CSV");
    let j = r.json();
    assert_eq!(j["devices"]["imported"], 1, "{j:#}");
    let store = open_store(&ctx);
    store
        .read(|tx| -> Result<(), mdmctl::store::StoreError> {
            let d = tx.device("C02XK1ABJG5H")?.expect("by serial");
            assert_eq!(d.source, "imported:csv");
            let auth = d.authenticate_raw.expect("synthesized Authenticate");
            let v: plist::Dictionary = plist::from_bytes(&auth).unwrap();
            assert_eq!(
                v.get("MessageType").and_then(|m| m.as_string()),
                Some("Authenticate")
            );
            assert_eq!(
                v.get("UDID").and_then(|m| m.as_string()),
                Some(d.id.as_str())
            );
            let e = &tx.enrollments_of(&d.id)?[0];
            let tu: plist::Dictionary =
                plist::from_bytes(e.token_update_raw.as_deref().unwrap()).unwrap();
            assert_eq!(
                tu.get("MessageType").and_then(|m| m.as_string()),
                Some("TokenUpdate")
            );
            assert_eq!(
                tu.get("Token").and_then(|m| m.as_data()),
                e.token.as_deref().map(|t| t.as_slice())
            );
            Ok(())
        })
        .unwrap();
    // A bad row names the file, line and field.
    ctx.write(
        "bad.csv",
        "udid,topic,token_hex\nAAAA,com.apple.mgmt.External.x,zz\n",
    );
    ctx.run(&["import-devices", "bad.csv"])
        .user_error()
        .stderr_has("bad.csv")
        .stderr_has("line 2")
        .stderr_has("token_hex");
}

/// A NanoMDM mysqldump as Fleet's: the same tables with a `nano_` prefix.
fn fleet_tables(dump: &[u8]) -> Vec<u8> {
    let mut out = dump.to_vec();
    for t in [
        "devices",
        "enrollments",
        "users",
        "cert_auth_associations",
        "push_certs",
        "enrollment_queue",
    ] {
        out = replace_bytes(
            &out,
            format!("`{t}`").as_bytes(),
            format!("`nano_{t}`").as_bytes(),
        );
    }
    out
}

fn replace_bytes(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

fn pb_key(out: &mut Vec<u8>, num: u64, wire: u64) {
    pb_varint_raw(out, num << 3 | wire);
}

fn pb_varint_raw(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn pb_bytes(out: &mut Vec<u8>, num: u64, b: &[u8]) {
    pb_key(out, num, 2);
    pb_varint_raw(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn pb_int(out: &mut Vec<u8>, num: u64, v: u64) {
    pb_key(out, num, 0);
    pb_varint_raw(out, v);
}

#[test]
fn micromdm_boltdb_imports_devices_hashes_and_assets() {
    let fleet = Fleet::new(5, 9);
    let ctx = TestContext::new();
    ctx.init();
    let mut devices = Vec::new();
    let mut certauth = Vec::new();
    for (i, d) in fleet.devices.iter().enumerate() {
        let mut v = Vec::new();
        let uuid = format!("{:08x}-0000-4000-8000-{i:012x}", 0xabc);
        pb_bytes(&mut v, 1, uuid.as_bytes());
        pb_bytes(&mut v, 2, d.udid.as_bytes());
        pb_bytes(&mut v, 3, d.serial.as_bytes());
        pb_bytes(&mut v, 4, b"15.1");
        pb_bytes(&mut v, 9, hex::encode(&d.token).as_bytes());
        pb_bytes(&mut v, 10, d.push_magic.as_bytes());
        pb_bytes(&mut v, 11, fleet.topic.as_bytes());
        pb_bytes(&mut v, 12, hex::encode(&d.unlock_token).as_bytes());
        // The last one was removed from MicroMDM: not enrolled.
        pb_int(&mut v, 13, u64::from(i + 1 < fleet.devices.len()));
        pb_bytes(&mut v, 15, format!("Mac {i}").as_bytes());
        pb_bytes(&mut v, 16, b"MacBookPro18,3");
        pb_int(&mut v, 28, LAST_SEEN_UNIX as u64);
        if let Some(b) = &d.bootstrap {
            pb_bytes(&mut v, 30, fixture::base64_encode(b).as_bytes());
        }
        devices.push(vec![hex::encode(&uuid), hex::encode(&v)]);
        certauth.push(vec![
            hex::encode(&d.udid),
            d.sha256.clone(), // the raw 32 bytes, hex-encoded for the spec
        ]);
    }
    // A user channel on the first device.
    let (uid, short, long, _, umagic, utok) = fleet.devices[0].user.clone().unwrap();
    let mut user = Vec::new();
    pb_bytes(&mut user, 1, b"user-uuid-1");
    pb_bytes(&mut user, 2, fleet.devices[0].udid.as_bytes());
    pb_bytes(&mut user, 3, uid.as_bytes());
    pb_bytes(&mut user, 4, short.as_bytes());
    pb_bytes(&mut user, 5, long.as_bytes());
    let mut push = Vec::new();
    pb_bytes(&mut push, 1, fleet.devices[0].udid.as_bytes());
    pb_bytes(&mut push, 2, hex::encode(&utok).as_bytes());
    pb_bytes(&mut push, 3, umagic.as_bytes());
    pb_bytes(&mut push, 4, fleet.topic.as_bytes());
    let mut config = Vec::new();
    pb_bytes(&mut config, 1, &fleet.push_cert.to_pem().unwrap());
    pb_bytes(
        &mut config,
        2,
        &fleet.push_key.rsa().unwrap().private_key_to_pem().unwrap(),
    );
    let spec = serde_json::json!({
        "page_size": 1024,
        "buckets": {
            "mdm.Devices": { "items": devices, "leaf_items": 2 },
            "mdm.UDIDCertAuth": { "items": certauth },
            "mdm.Users": { "items": [[hex::encode("user-uuid-1"), hex::encode(&user)]] },
            "mdm.PushInfo": { "items": [[hex::encode(&uid), hex::encode(&push)]] },
            "mdm.ServerConfig": { "inline": true, "items": [[hex::encode("config"), hex::encode(&config)]] },
            "scep_certificates": { "items": [
                [hex::encode("ca_certificate"), hex::encode(fleet.ca.to_der().unwrap())],
                [hex::encode("ca_key"), hex::encode(fleet.ca_key.rsa().unwrap().private_key_to_der().unwrap())],
            ]},
        }
    });
    ctx.write("spec.json", spec.to_string());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/import/bolt_fixture.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(ctx.path("spec.json"))
        .arg(ctx.path("micromdm.db"))
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let r = ctx.run(&["import-devices", "micromdm.db", "--format", "json"]);
    r.success().stderr_has("detected MicroMDM");
    let j = r.json();
    let n = fleet.devices.len() as u64;
    assert_eq!(j["devices"]["found"], n, "{j:#}");
    assert_eq!(j["devices"]["imported"], n - 1, "{j:#}");
    assert!(
        j["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("not enrolled")
    );
    let kinds: Vec<&str> = j["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["apns", "scep_ca"], "{j:#}");

    let store = open_store(&ctx);
    store
        .read(|tx| -> Result<(), mdmctl::store::StoreError> {
            for d in &fleet.devices[..fleet.devices.len() - 1] {
                let rec = tx.device(&d.udid)?.expect("imported");
                assert_eq!(rec.source, "imported:micromdm");
                assert_eq!(rec.serial.as_deref(), Some(d.serial.as_str()));
                assert_eq!(rec.identity_sha256.as_deref(), Some(d.sha256.as_str()));
                assert_eq!(rec.os_version.as_deref(), Some("15.1"));
                assert_eq!(rec.last_seen_at.map(|t| t.0), Some(LAST_SEEN_UNIX));
                assert_eq!(
                    rec.unlock_token.as_deref().map(|v| v.to_vec()),
                    Some(d.unlock_token.clone())
                );
                assert_eq!(
                    rec.bootstrap_token.as_deref().map(|v| v.to_vec()),
                    d.bootstrap.clone()
                );
                let auth: plist::Dictionary =
                    plist::from_bytes(rec.authenticate_raw.as_deref().unwrap()).unwrap();
                assert_eq!(
                    auth.get("MessageType").and_then(|v| v.as_string()),
                    Some("Authenticate")
                );
                assert_eq!(
                    auth.get("Topic").and_then(|v| v.as_string()),
                    Some(fleet.topic.as_str())
                );
                let e = &tx.enrollments_of(&d.udid)?[0];
                assert_eq!(e.topic, fleet.topic);
                assert_eq!(
                    e.push_magic.as_deref().map(|s| s.as_str()),
                    Some(d.push_magic.as_str())
                );
                assert_eq!(
                    e.token.as_deref().map(|v| v.to_vec()),
                    Some(d.token.clone())
                );
                let tu: plist::Dictionary =
                    plist::from_bytes(e.token_update_raw.as_deref().unwrap()).unwrap();
                assert_eq!(
                    tu.get("UnlockToken").and_then(|v| v.as_data()),
                    Some(d.unlock_token.as_slice())
                );
                let auth = tx.device_auth(&d.udid, None)?.unwrap();
                assert!(auth.imported());
                assert_eq!(auth.identity_sha256.as_deref(), Some(d.sha256.as_str()));
            }
            assert!(
                tx.device(&fleet.devices[fleet.devices.len() - 1].udid)?
                    .is_none()
            );
            Ok(())
        })
        .unwrap();

    // A damaged file is an error, not a panic.
    let mut bytes = ctx.read("micromdm.db");
    bytes.truncate(3000);
    ctx.write("short.db", &bytes);
    ctx.run(&["import-devices", "short.db"])
        .user_error()
        .stderr_has("short.db");

    // Another program's BoltDB (micromdm/scep's bolt depot, say) says what it is not, and
    // its hint is about MicroMDM's database, not SQL (see: issue 10 §2).
    let spec = serde_json::json!({
        "page_size": 1024,
        "buckets": { "scep_certificates": { "items": [[hex::encode("serial"), hex::encode("2")]] } }
    });
    ctx.write("other.json", spec.to_string());
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(ctx.path("other.json"))
        .arg(ctx.path("depot.db"))
        .output()
        .expect("python3");
    assert!(out.status.success());
    let r = ctx.run(&["import-devices", "depot.db"]);
    r.user_error()
        .stderr_has("not MicroMDM's")
        .stderr_has("`scep_certificates`")
        .stderr_has("micromdm.db");
    assert!(!r.stderr.contains("dump"), "{}", r.stderr);
}

fn put(path: std::path::PathBuf, bytes: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Both NanoMDM file storages: `filekv` (diskv files `<id>.<field>`, sharded by the first
/// four characters of the key) and the legacy `file` layout.
#[test]
fn nanomdm_file_storages_import() {
    let fleet = Fleet::new(3, 10);
    let ctx = TestContext::new();
    ctx.init();
    let kv = ctx.path("dbkv");
    let shard = |bucket: &str, key: &str| kv.join(bucket).join(&key[..4]).join(key);
    for d in &fleet.devices {
        let der = openssl::x509::X509::from_pem(d.cert_pem.as_bytes())
            .unwrap()
            .to_der()
            .unwrap();
        put(
            shard("devices", &format!("{}.auth", d.udid)),
            &d.authenticate,
        );
        put(shard("devices", &format!("{}.cert", d.udid)), der);
        put(shard("devices", &format!("{}.serial", d.udid)), &d.serial);
        put(
            shard("devices", &format!("{}.tok_upd", d.udid)),
            &d.token_update,
        );
        put(
            shard("cert_auth", &format!("{}.cert_hash", d.udid)),
            &d.sha256,
        );
        put(
            shard("enrollments", &format!("{}.topic", d.udid)),
            &fleet.topic,
        );
        put(
            shard("enrollments", &format!("{}.push_magic", d.udid)),
            &d.push_magic,
        );
        put(shard("enrollments", &format!("{}.token", d.udid)), &d.token);
        put(shard("enrollments", &format!("{}.type", d.udid)), "Device");
        put(
            shard("enrollments", &format!("{}.last_seen_at", d.udid)),
            "2026-01-02T03:04:05Z",
        );
        if !d.enabled {
            put(shard("enrollments", &format!("{}.disabled", d.udid)), "1");
        }
    }
    put(
        shard("push_cert", &format!("{}.pem", fleet.topic)),
        fleet.push_cert.to_pem().unwrap(),
    );
    put(
        shard("push_cert", &format!("{}.key", fleet.topic)),
        fleet.push_key.private_key_to_pem_pkcs8().unwrap(),
    );
    let r = ctx.run(&["import-devices", "dbkv", "--format", "json"]);
    r.success().stderr_has("`filekv` storage");
    let j = r.json();
    assert_eq!(j["devices"]["imported"], 3, "{j:#}");
    assert_eq!(j["enrollments"]["imported"], 3, "{j:#}");
    assert_eq!(j["assets"][0]["outcome"], "imported", "{j:#}");
    let store = open_store(&ctx);
    store
        .read(|tx| -> Result<(), mdmctl::store::StoreError> {
            for d in &fleet.devices {
                let rec = tx.device(&d.udid)?.expect("imported");
                assert_eq!(rec.identity_sha256.as_deref(), Some(d.sha256.as_str()));
                assert_eq!(rec.identity_not_after.map(|t| t.0), Some(d.not_after));
                assert_eq!(rec.serial.as_deref(), Some(d.serial.as_str()));
                let e = &tx.enrollments_of(&d.udid)?[0];
                assert_eq!(
                    e.token.as_deref().map(|v| v.to_vec()),
                    Some(d.token.clone())
                );
                assert_eq!(
                    e.push_magic.as_deref().map(|s| s.as_str()),
                    Some(d.push_magic.as_str())
                );
                assert_eq!(e.enabled, d.enabled);
                assert_eq!(e.last_seen_at.map(|t| t.0), Some(LAST_SEEN_UNIX));
            }
            Ok(())
        })
        .unwrap();
    drop(store);

    // The legacy `file` storage, with a user channel, the push certificate at the top of the
    // store (`<topic>.pem`, `<topic>.key`) and one device known only by its association in
    // `CertAuth.txt` (see: issue 10 §2: "Assets found: none").
    let ctx = TestContext::new();
    ctx.init();
    let db = ctx.path("db");
    put(
        db.join(format!("{}.pem", fleet.topic)),
        fleet.push_cert.to_pem().unwrap(),
    );
    put(
        db.join(format!("{}.key", fleet.topic)),
        fleet.push_key.private_key_to_pem_pkcs8().unwrap(),
    );
    let last = fleet.devices.last().unwrap();
    put(
        db.join("CertAuth.txt"),
        format!(
            "{},{}\n{},{}\n",
            last.udid,
            "0".repeat(64),
            last.udid,
            last.sha256
        ),
    );
    for d in &fleet.devices {
        let dir = db.join(&d.udid);
        put(dir.join("Authenticate.plist"), &d.authenticate);
        put(dir.join("TokenUpdate.plist"), &d.token_update);
        put(dir.join("UnlockToken.dat"), &d.unlock_token);
        put(dir.join("SerialNumber.txt"), &d.serial);
        if d.udid != last.udid {
            put(dir.join("Identity.pem"), &d.cert_pem);
        }
        if !d.enabled {
            put(dir.join("Disabled"), "");
        }
        if let Some((uid, _, _, _, magic, tok)) = &d.user {
            let tu = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict><key>MessageType</key><string>TokenUpdate</string><key>UserID</key><string>{uid}</string><key>UserShortName</key><string>zoe</string><key>PushMagic</key><string>{magic}</string><key>Token</key><data>{}</data><key>Topic</key><string>{}</string><key>UDID</key><string>{}</string></dict></plist>\n",
                fixture::base64_encode(tok),
                fleet.topic,
                d.udid
            );
            put(
                dir.join("SubEnrollments")
                    .join(uid)
                    .join("TokenUpdate.plist"),
                tu,
            );
        }
    }
    let r = ctx.run(&["import-devices", "db", "--format", "json"]);
    r.success().stderr_has("`file` storage");
    let j = r.json();
    assert_eq!(j["devices"]["imported"], 3, "{j:#}");
    assert_eq!(j["enrollments"]["imported"], 4, "{j:#}");
    let apns = j["assets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "apns")
        .unwrap_or_else(|| panic!("the push certificate is found: {j:#}"));
    assert_eq!(apns["outcome"], "imported", "{j:#}");
    let store = open_store(&ctx);
    store
        .read(|tx| -> Result<(), mdmctl::store::StoreError> {
            for d in &fleet.devices {
                let rec = tx.device(&d.udid)?.expect("imported");
                assert_eq!(
                    rec.identity_sha256.as_deref(),
                    Some(d.sha256.as_str()),
                    "{}",
                    d.udid
                );
            }
            let d = &fleet.devices[0];
            let rec = tx.device(&d.udid)?.expect("imported");
            assert_eq!(rec.identity_sha256.as_deref(), Some(d.sha256.as_str()));
            assert_eq!(
                rec.unlock_token.as_deref().map(|v| v.to_vec()),
                Some(d.unlock_token.clone())
            );
            let chans = tx.enrollments_of(&d.udid)?;
            assert_eq!(chans.len(), 2);
            let (uid, _, _, _, magic, tok) = d.user.as_ref().unwrap();
            assert_eq!(chans[1].user_id.as_deref(), Some(uid.as_str()));
            assert_eq!(chans[1].user_short_name.as_deref(), Some("zoe"));
            assert_eq!(
                chans[1].push_magic.as_deref().map(|s| s.as_str()),
                Some(magic.as_str())
            );
            assert_eq!(
                chans[1].token.as_deref().map(|v| v.to_vec()),
                Some(tok.clone())
            );
            assert!(!tx.enrollments_of(&fleet.devices[1].udid)?[0].enabled);
            Ok(())
        })
        .unwrap();
}

/// Fleet: `nano_*` tables plus the push certificate and SCEP CA in `mdm_config_assets`,
/// AES-256-GCM-encrypted under the first 32 bytes of `server.private_key`.
#[test]
fn fleet_assets_decrypt_with_the_server_key() {
    let Some(db) = MyDb::create() else { return };
    let fleet = Fleet::new(2, 11);
    db.load(&fleet);
    db.mysql("DELETE FROM push_certs", true);
    db.mysql(
        "CREATE TABLE mdm_config_assets (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(255) NOT NULL, value LONGBLOB NOT NULL, deleted_at TIMESTAMP NULL)",
        true,
    );
    let server_key = "0123456789abcdef0123456789abcdef-and-more-key-material";
    let seal = |plain: &[u8]| {
        let mut nonce = [0u8; 12];
        openssl::rand::rand_bytes(&mut nonce).unwrap();
        let mut tag = [0u8; 16];
        let ct = openssl::symm::encrypt_aead(
            openssl::symm::Cipher::aes_256_gcm(),
            &server_key.as_bytes()[..32],
            Some(&nonce),
            &[],
            plain,
            &mut tag,
        )
        .unwrap();
        [&nonce[..], &ct, &tag].concat()
    };
    let assets = [
        ("apns_cert", fleet.push_cert.to_pem().unwrap()),
        (
            "apns_key",
            fleet.push_key.rsa().unwrap().private_key_to_pem().unwrap(),
        ),
        ("ca_cert", fleet.ca.to_pem().unwrap()),
        (
            "ca_key",
            fleet.ca_key.rsa().unwrap().private_key_to_pem().unwrap(),
        ),
    ];
    for (name, plain) in &assets {
        db.mysql(
            &format!(
                "INSERT INTO mdm_config_assets (name, value) VALUES ('{name}', X'{}')",
                hex::encode(seal(plain))
            ),
            true,
        );
    }
    // A deleted (rotated) asset is ignored.
    db.mysql(
        "INSERT INTO mdm_config_assets (name, value, deleted_at) VALUES ('apns_cert', X'00', NOW())",
        true,
    );
    let ctx = TestContext::new();
    ctx.init();
    let path = ctx.path("nano.sql");
    db.dump(&[], &path);
    let dump = fleet_tables(&std::fs::read(&path).unwrap());
    ctx.write("fleet.sql", &dump);
    ctx.write("server.key", format!("{server_key}\n"));

    // Without the key: devices come across, the assets are reported as not imported.
    let r = ctx.run(&[
        "import-devices",
        "fleet.sql",
        "--dry-run",
        "--format",
        "json",
    ]);
    r.success();
    let j = r.json();
    assert_eq!(j["devices"]["imported"], 2, "{j:#}");
    assert!(
        j["assets"][0]["outcome"]
            .as_str()
            .unwrap()
            .contains("--fleet-private-key"),
        "{j:#}"
    );

    // A wrong key is an error naming the flag; nothing written.
    ctx.write("wrong.key", "ffffffffffffffffffffffffffffffffffffffff");
    ctx.run(&[
        "import-devices",
        "fleet.sql",
        "--fleet-private-key",
        "wrong.key",
    ])
    .user_error()
    .stderr_has("--fleet-private-key");

    let r = ctx.run(&[
        "import-devices",
        "fleet.sql",
        "--fleet-private-key",
        "server.key",
        "--format",
        "json",
    ]);
    r.success().stderr_has("detected Fleet");
    let j = r.json();
    let outcomes: Vec<String> = j["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{} {}", a["kind"], a["outcome"]))
        .collect();
    assert!(
        outcomes
            .iter()
            .any(|o| o.contains("apns") && o.contains("\"imported")),
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .any(|o| o.contains("scep_ca") && o.contains("\"imported")),
        "{outcomes:?}"
    );
    let store = open_store(&ctx);
    store
        .read(|tx| -> Result<(), mdmctl::store::StoreError> {
            let apns = tx.active_asset(AssetKind::Apns)?.expect("push certificate");
            assert_eq!(apns.topic.as_deref(), Some(fleet.topic.as_str()));
            let fp = hex::encode(
                fleet
                    .ca
                    .digest(openssl::hash::MessageDigest::sha256())
                    .unwrap(),
            );
            assert!(tx.asset_by_fingerprint(AssetKind::ScepCa, &fp)?.is_some());
            assert_eq!(
                tx.device(&fleet.devices[0].udid)?.unwrap().source,
                "imported:fleet"
            );
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_second_topic_on_a_fresh_store_is_reported_not_fatal() {
    let apple = mdmctl::sim::apple::FakeApple::new().unwrap();
    let old = mdmctl::sim::nanomdm::OldNanoMdm::new(
        &apple,
        "http://127.0.0.1:9",
        3,
        100,
        mdmctl::sim::device::http_client(&[]).unwrap(),
        &[],
    )
    .unwrap();
    let mut dump = Vec::new();
    old.write_mysqldump(&mut dump).unwrap();
    // One channel left on another topic (an older push certificate's).
    let main = format!("'Device','{}'", old.topic);
    let dump = String::from_utf8(dump).unwrap().replacen(
        &main,
        "'Device','com.apple.mgmt.External.00000000-0000-4000-8000-00000000dead'",
        1,
    );
    let ctx = TestContext::new();
    ctx.init();
    ctx.write("nanomdm.sql", dump);
    let r = ctx.run(&["import-devices", "nanomdm.sql", "--format", "json"]);
    let j = r.success().json();
    assert_eq!(j["warnings"]["topic_mismatch"], 1, "{j:#}");
    assert_eq!(j["devices"]["imported"], 3, "{j:#}");
    assert_eq!(j["assets"][0]["outcome"], "imported", "{j:#}");
    let status = ctx
        .run(&["--format", "json", "get", "mdm-apple"])
        .success()
        .json();
    assert_eq!(
        status["apns"]["topic"],
        old.topic.as_str(),
        "the topic most channels use"
    );
}

#[test]
fn a_re_enrolled_device_keeps_its_newest_identity_association() {
    // No identity certificate on the device row: the hash comes from cert_auth_associations,
    // where a re-enrolled device has one row per identity (listed in key order, not by age).
    let newest = "a".repeat(64);
    let oldest = "f".repeat(64);
    let auth = "<?xml version=\"1.0\"?><plist version=\"1.0\"><dict><key>MessageType</key><string>Authenticate</string><key>UDID</key><string>D1</string><key>SerialNumber</key><string>C02REENROL1</string><key>Topic</key><string>com.apple.mgmt.External.1</string></dict></plist>";
    let dump = format!(
        "-- MySQL dump 10.19\n{schema}\nLOCK TABLES `cert_auth_associations` WRITE;\nINSERT INTO `cert_auth_associations` VALUES ('D1','{newest}','2026-06-01 00:00:00','2026-06-01 00:00:00'),('D1','{oldest}','2025-01-01 00:00:00','2025-01-01 00:00:00');\nUNLOCK TABLES;\nLOCK TABLES `devices` WRITE;\nINSERT INTO `devices` VALUES ('D1',NULL,'C02REENROL1',NULL,NULL,'{auth}','2026-06-01 00:00:00',NULL,NULL,NULL,NULL,'2025-01-01 00:00:00','2026-06-01 00:00:00');\nUNLOCK TABLES;\nLOCK TABLES `enrollments` WRITE;\nINSERT INTO `enrollments` VALUES ('D1','D1',NULL,'Device','com.apple.mgmt.External.1','MAGIC-1','{token}',1,1,'2026-06-01 00:00:00','2025-01-01 00:00:00','2026-06-01 00:00:00');\nUNLOCK TABLES;\n-- Dump completed on 2026-11-23 12:00:00\n",
        schema = mdmctl::sim::nanomdm::MYSQL_SCHEMA,
        token = "0a".repeat(32),
    );
    let ctx = TestContext::new();
    ctx.init();
    ctx.write("nanomdm.sql", dump);
    ctx.run(&["import-devices", "nanomdm.sql"]).success();
    let d = ctx
        .run(&["--format", "json", "get", "device", "D1"])
        .success()
        .json();
    assert_eq!(d["identity_sha256"], newest.as_str(), "{d:#}");
}

/// A CSV with one device, so an import has something besides the depot to read.
fn one_device_csv(ctx: &TestContext) {
    let template = ctx
        .run(&["import-devices", "--csv-template"])
        .success()
        .stdout
        .clone();
    ctx.write("devices.csv", template);
}

// See: issue 10 §1: the README's `import-devices … --scep-depot DIR` stopped at a real
// micromdm/scep depot, whose `ca.key` is 3DES-encrypted under the empty password.
#[test]
fn a_real_micromdm_scep_depot_imports_with_its_encrypted_key() {
    let ctx = TestContext::new();
    ctx.init();
    one_device_csv(&ctx);
    let Some(depot) = common::real_scep::Depot::init(&ctx.path("depot"), None) else {
        return;
    };
    let key = std::fs::read_to_string(ctx.path("depot/ca.key")).unwrap();
    assert!(
        key.contains("Proc-Type: 4,ENCRYPTED"),
        "scepserver encrypts ca.key: {key}"
    );
    let j = ctx
        .run(&[
            "import-devices",
            "devices.csv",
            "--scep-depot",
            "depot",
            "--format",
            "json",
        ])
        .success()
        .json();
    let ca = j["assets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "scep_ca")
        .unwrap_or_else(|| panic!("the depot's CA is imported: {j:#}"));
    assert!(
        ca["outcome"].as_str().unwrap().starts_with("imported"),
        "{ca}"
    );
    // The key went in decrypted (and sealed): the store can issue and verify with it.
    let store = open_store(&ctx);
    let fp = mdmctl::pki::fingerprint_sha256(&depot.ca_cert()).unwrap();
    let stored = store
        .read(|tx| tx.assets(AssetKind::ScepCa))
        .unwrap()
        .into_iter()
        .find(|a| a.sha256.as_deref() == Some(fp.as_str()))
        .expect("the old CA is stored");
    let key = store.read(|tx| tx.asset_key(stored.id)).unwrap().unwrap();
    let key = mdmctl::pki::load_private_key(&key, None).unwrap();
    assert!(key.public_eq(&depot.ca_key()));
}

// See: issue 10 §1: `scepserver ca -init -key-password`, served with `-capass`.
#[test]
fn a_depot_with_a_real_password_takes_it_from_a_file_or_the_environment() {
    let ctx = TestContext::new();
    ctx.init();
    one_device_csv(&ctx);
    let Some(_depot) = common::real_scep::Depot::init(&ctx.path("depot"), Some("s3cret pass"))
    else {
        return;
    };
    let base = [
        "import-devices",
        "devices.csv",
        "--scep-depot",
        "depot",
        "--dry-run",
    ];
    // No password: the empty one does not open it; the hint names the real flag and env var.
    let r = ctx.run(&base);
    r.user_error()
        .stderr_has("ca.key")
        .stderr_has("--scep-key-password-file")
        .stderr_has("MDMCTL_SCEP_KEY_PASSWORD");
    assert!(!r.stderr.contains('…'), "{}", r.stderr);
    // A wrong one says so.
    ctx.write("wrong.txt", "not it\n");
    let mut args = base.to_vec();
    args.extend(["--scep-key-password-file", "wrong.txt"]);
    ctx.run(&args)
        .user_error()
        .stderr_has("does not decrypt")
        .stderr_has("--scep-key-password-file");
    // The right one, from a file (first line, newline dropped) or the environment.
    ctx.write("pass.txt", "s3cret pass\n");
    let mut args = base.to_vec();
    args.extend(["--scep-key-password-file", "pass.txt"]);
    ctx.run(&args).success();
    ctx.run_with(&base, |c| {
        c.env("MDMCTL_SCEP_KEY_PASSWORD", "s3cret pass");
    })
    .success();
}

// See: issue 10 §2: a missing database or a refused connection printed `db error`.
#[test]
fn an_unreachable_postgres_source_names_the_url_and_the_servers_message() {
    let ctx = TestContext::new();
    ctx.init();
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://old:hunter2secret@127.0.0.1:{port}/nanomdm");
    let r = ctx.run(&["import-devices", &url]);
    r.user_error()
        .stderr_has(&format!("postgres://old:***@127.0.0.1:{port}/nanomdm"))
        .stderr_has("Connection refused");
    assert!(!r.stderr.contains("hunter2secret"), "{}", r.stderr);

    let Ok(base) = std::env::var("MDMCTL_TEST_POSTGRES_URL") else {
        eprintln!(
            "SKIP (missing database): set MDMCTL_TEST_POSTGRES_URL to run against the local PostgreSQL"
        );
        return;
    };
    let missing = format!(
        "{}/mdmctl_no_such_db_{}",
        base.rsplit_once('/').unwrap().0,
        std::process::id()
    );
    let r = ctx.run(&["import-devices", &missing]);
    r.user_error().stderr_has(&format!(
        "database \"mdmctl_no_such_db_{}\" does not exist",
        std::process::id()
    ));
    assert!(!r.stderr.contains("db error"), "{}", r.stderr);
}

// See: issue 11 §7: random bytes inside a stored Authenticate plist were imported as an
// "updated" device with its name lost, exit 0; text that is not UTF-8 was silently replaced.
#[test]
fn damaged_stored_messages_and_text_are_reported_per_row_never_changed() {
    let Some(db) = MyDb::create() else { return };
    let fleet = Fleet::new(3, 5);
    db.load(&fleet);
    let (bad_auth, bad_serial) = (&fleet.devices[0], &fleet.devices[1]);
    db.mysql(
        &format!(
            "UPDATE devices SET authenticate = REPLACE(authenticate, '<dict>', '<dict>\\u{{1}}<garbage') WHERE id = '{}'",
            bad_auth.udid
        ),
        true,
    );
    let ctx = TestContext::new();
    ctx.init();
    db.dump(&[], &ctx.path("dump.sql"));
    // A serial number that is not UTF-8 (a damaged copy: MariaDB itself would refuse it).
    let dump = ctx.read("dump.sql");
    let quoted = format!("'{}'", bad_serial.serial);
    let mut bad = quoted.clone().into_bytes();
    bad.splice(3..4, [0xC3, 0x28]);
    let dump = replace_bytes(&dump, quoted.as_bytes(), &bad);
    ctx.write("dump.sql", &dump);

    let r = ctx.run(&[
        "import-devices",
        "dump.sql",
        "--format",
        "json",
        "--report",
        "skips.csv",
    ]);
    r.success();
    let j = r.json();
    assert_eq!(j["devices"]["imported"], 1, "{j:#}");
    let reasons: Vec<String> = j["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{} {}", s["id"], s["reason"]))
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains(&bad_auth.udid) && r.contains("damaged Authenticate")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("serial_number") && r.contains("not UTF-8")),
        "{reasons:?}"
    );
    let report = String::from_utf8(ctx.read("skips.csv")).unwrap();
    assert!(report.contains("damaged Authenticate"), "{report}");
    let store = open_store(&ctx);
    assert!(
        store
            .read(|tx| tx.device(&bad_auth.udid))
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .read(|tx| tx.device(&bad_serial.udid))
            .unwrap()
            .is_none()
    );
    drop(store);
    // `--strict` makes any of it fatal, and then nothing is written.
    let strict = TestContext::new();
    strict.init();
    strict.write("dump.sql", &dump);
    strict
        .run(&["import-devices", "dump.sql", "--strict"])
        .user_error();
    assert_eq!(
        open_store(&strict).read(|tx| tx.count_devices()).unwrap(),
        0
    );
}

/// Run `mdmctl ARGS` in `ctx` through Python, which reports the child's peak resident memory
/// (`getrusage`): (exit code, stderr, peak RSS in KiB).
fn run_measured(ctx: &TestContext, args: &[&str]) -> (i32, String, u64) {
    let script = r#"
import json, resource, subprocess, sys
p = subprocess.run(sys.argv[1:], capture_output=True)
print(json.dumps({"code": p.returncode, "stderr": p.stderr.decode(errors="replace"),
                  "rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"#;
    let mut c = std::process::Command::new("python3");
    c.arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_mdmctl"))
        .args(args);
    let probe = ctx.mdmctl();
    c.current_dir(ctx.path(""))
        .env_clear()
        .envs(probe.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))));
    let out = c.output().expect("python3");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (
        j["code"].as_i64().unwrap() as i32,
        j["stderr"].as_str().unwrap().to_string(),
        j["rss"].as_u64().unwrap(),
    )
}

// See: issue 11 §5: `/dev/zero --from csv` grew to 5.9 GB, a FIFO hung (now read: issue 15), a 4.7 MB gzip dump
// holding a 1 GiB quoted value took 1 GB of memory.
#[test]
fn endless_or_huge_inputs_are_refused_with_bounded_memory() {
    let ctx = TestContext::new();
    ctx.init();
    let (code, err, _) = run_measured(&ctx, &["import-devices", "/dev/zero", "--from", "csv"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("character device, not a regular file"),
        "{err}"
    );
    let fifo = ctx.path("pipe.sql");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // A FIFO named on purpose (issue 15: `<(zcat dump.gz)`) is read, once: here its writer
    // sends a CSV with no devices' worth of columns, refused for what it says, not hung on.
    let writer = {
        let path = fifo.clone();
        std::thread::spawn(move || std::fs::write(path, "udid,serial\nA,B\n"))
    };
    let (code, err, _) = run_measured(&ctx, &["import-devices", "pipe.sql"]);
    writer.join().unwrap().unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no `topic` column"), "{err}");

    // A CSV whose one record never ends within the limit.
    let mut csv = b"udid,topic\nA,".to_vec();
    csv.extend(std::iter::repeat_n(b'x', 3 * 1024 * 1024));
    ctx.write("long.csv", &csv);
    let (code, err, _) = run_measured(
        &ctx,
        &["import-devices", "long.csv", "--max-row-size", "1M"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--max-row-size"), "{err}");

    // A gzip dump of a few MB holding a 1 GiB quoted value: refused at the 64 MiB default.
    {
        use std::io::Write as _;
        let f = std::fs::File::create(ctx.path("bomb.sql.gz")).unwrap();
        let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        gz.write_all(b"-- MySQL dump 10.19\nCREATE TABLE `devices` (\n  `id` varchar(255) NOT NULL,\n  `serial_number` varchar(127)\n);\nLOCK TABLES `devices` WRITE;\nINSERT INTO `devices` VALUES ('x','")
            .unwrap();
        let block = vec![b'a'; 1 << 20];
        for _ in 0..1024 {
            gz.write_all(&block).unwrap();
        }
        gz.write_all(b"');\n").unwrap();
        gz.finish().unwrap();
    }
    let size = std::fs::metadata(ctx.path("bomb.sql.gz")).unwrap().len();
    assert!(size < 8 * 1024 * 1024, "{size}");
    let (code, err, rss) = run_measured(&ctx, &["import-devices", "bomb.sql.gz"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("larger than 64 MiB") && err.contains("--max-row-size"),
        "{err}"
    );
    eprintln!("import of the gzip bomb: peak RSS {rss} KiB");
    assert!(rss < 300 * 1024, "peak RSS {rss} KiB");
    assert_eq!(open_store(&ctx).read(|tx| tx.count_devices()).unwrap(), 0);
}
