//! The conformance cases. Each takes a fresh [`TestStore`] and must hold on every backend.

use std::sync::Arc;

use mdmctl::store::{
    ActivityQuery, AssetKind, AssetState, ChallengePurpose, ChallengeScope, DeclarationStatus,
    DesiredProfile, DeviceFacts, DeviceProfile, DeviceRecord, DiskEncryption, EnrollmentRecord,
    FdeState, GlobalSettings, ImportRow, Issued, IssuedHow, LATEST_SCHEMA_VERSION, NewActivity,
    NewAsset, NewKey, ProfileKind, ProfileState, Recorded, Renewal, RenewalState, Role, Settings,
    StoreError, Tx,
};
use mdmctl::timestamp::Timestamp;
use zeroize::Zeroizing;

use crate::TestStore;
use crate::common::{PASSPHRASE, contains};

fn w<T>(s: &TestStore, f: impl FnMut(&mut dyn Tx) -> Result<T, StoreError>) -> T {
    s.store.write(f).expect("write transaction")
}

fn r<T>(s: &TestStore, f: impl FnMut(&mut dyn Tx) -> Result<T, StoreError>) -> T {
    s.store.read(f).expect("read transaction")
}

fn z(s: &str) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(s.as_bytes().to_vec())
}

fn apns_asset(state: AssetState, sha: &str) -> NewAsset {
    let mut a = NewAsset::new(AssetKind::Apns, state, "generated");
    a.cert_pem = Some(format!(
        "-----BEGIN CERTIFICATE-----\n{sha}\n-----END CERTIFICATE-----\n"
    ));
    a.key_pem = Some(z(
        "-----BEGIN PRIVATE KEY-----\nAPNSKEYMATERIAL\n-----END PRIVATE KEY-----\n",
    ));
    a.topic = Some("com.apple.mgmt.External.t1".into());
    a.sha256 = Some(sha.into());
    a.not_after = Some(Timestamp(2_000_000_000));
    a
}

fn device(id: &str, serial: &str) -> DeviceRecord {
    DeviceRecord {
        id: id.into(),
        serial: Some(serial.into()),
        model: Some("Mac14,2".into()),
        model_name: Some("MacBook Air".into()),
        product_name: Some("Mac14,2".into()),
        os_version: Some("14.6.1".into()),
        build_version: Some("23G93".into()),
        device_name: Some("Ada's MacBook Air".into()),
        source: "imported:nanomdm".into(),
        imported_at: Some(Timestamp(1_700_000_000)),
        enrolled_at: Some(Timestamp(1_690_000_000)),
        migrated_at: None,
        last_seen_at: Some(Timestamp(1_699_999_000)),
        authenticate_raw: Some(b"<plist>Authenticate</plist>".to_vec()),
        token_update_raw: Some(z("<plist>TokenUpdate PUSHMAGIC-SECRET</plist>")),
        unlock_token: Some(z("UNLOCKTOKEN-SECRET")),
        bootstrap_token: Some(z("BOOTSTRAP-SECRET")),
        identity_sha256: Some(format!("{:0>64}", hex::encode(id))),
        identity_not_after: Some(Timestamp(1_800_000_000)),
    }
}

fn enrollment(id: &str, device_id: &str, topic: &str) -> EnrollmentRecord {
    EnrollmentRecord {
        id: id.into(),
        device_id: device_id.into(),
        kind: if id == device_id {
            "Device".into()
        } else {
            "User".into()
        },
        user_id: (id != device_id).then(|| "501".into()),
        user_short_name: (id != device_id).then(|| "ada".into()),
        user_long_name: (id != device_id).then(|| "Ada Lovelace".into()),
        topic: topic.into(),
        push_magic: Some(Zeroizing::new("PUSHMAGIC-SECRET".into())),
        token: Some(Zeroizing::new(vec![0xde, 0xad, 0xbe, 0xef, 0x42])),
        token_update_raw: Some(z("<plist>TokenUpdate PUSHMAGIC-SECRET</plist>")),
        enabled: true,
        last_seen_at: Some(Timestamp(1_699_999_500)),
    }
}

pub fn fresh_store_is_at_the_latest_schema(s: &TestStore) {
    let info = r(s, |tx| tx.store_info());
    assert_eq!(info.schema_version, LATEST_SCHEMA_VERSION);
    assert!(!info.store_id.is_empty());
    assert!(info.created_by.unwrap().starts_with("mdmctl "));
    // Reopening finds it initialized and at the same version.
    let again = s.reopen(PASSPHRASE).expect("reopen");
    let info2 = again.read(|tx| tx.store_info()).unwrap();
    assert_eq!(info2.store_id, info.store_id);
}

pub fn create_refuses_an_existing_store(s: &TestStore) {
    let err = mdmctl::store::create(
        &s.location,
        NewKey::Passphrase(Zeroizing::new("another passphrase".into())),
    )
    .err()
    .expect("second create must fail");
    assert!(
        matches!(err, StoreError::AlreadyInitialized { .. }),
        "{err:?}"
    );
    // The original store and its passphrase still work.
    s.reopen(PASSPHRASE)
        .unwrap()
        .unlock()
        .expect("original passphrase still unlocks");
}

pub fn newer_schema_is_refused(s: &TestStore) {
    s.raw_execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)",
    )
    .unwrap();
    let err = s
        .reopen(PASSPHRASE)
        .err()
        .expect("a newer schema must be refused");
    match err {
        StoreError::TooNew {
            found, supported, ..
        } => {
            assert_eq!((found, supported), (999, LATEST_SCHEMA_VERSION));
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
}

pub fn meta_get_set_and_store_info(s: &TestStore) {
    assert_eq!(r(s, |tx| tx.meta_get("nothing")), None);
    w(s, |tx| tx.meta_set("k", "v1"));
    w(s, |tx| tx.meta_set("k", "v2"));
    assert_eq!(r(s, |tx| tx.meta_get("k")).as_deref(), Some("v2"));
    let info = r(s, |tx| tx.store_info());
    assert_eq!(info.key_source, mdmctl::secrets::KeySource::Passphrase);
    // The envelope in meta holds no passphrase.
    let env = r(s, |tx| tx.meta_get("key_envelope")).unwrap();
    assert!(!env.contains(PASSPHRASE));
    w(s, |tx| tx.unlock_secrets());
}

pub fn secrets_need_the_right_passphrase(s: &TestStore) {
    let id = w(s, |tx| {
        tx.insert_asset(&apns_asset(AssetState::Active, "aa"))
    });
    // Public parts read without the passphrase.
    let other = s.reopen("not the passphrase").unwrap();
    let asset = other.read(|tx| tx.asset(id)).unwrap().unwrap();
    assert!(asset.has_key);
    // The key does not.
    let err = other
        .read(|tx| tx.asset_key(id))
        .expect_err("wrong passphrase");
    assert!(
        matches!(
            err,
            StoreError::Secrets(mdmctl::secrets::SecretsError::WrongPassphrase)
        ),
        "{err:?}"
    );
    let good = s.reopen(PASSPHRASE).unwrap();
    let key = good.read(|tx| tx.asset_key(id)).unwrap().unwrap();
    assert!(contains(&key, "APNSKEYMATERIAL"));
}

pub fn wrong_passphrase_changes_nothing(s: &TestStore) {
    let other = s.reopen("not the passphrase").unwrap();
    let result = other.write(|tx| {
        tx.meta_set("written", "yes")?;
        tx.insert_asset(&apns_asset(AssetState::Pending, "bb"))
    });
    assert!(result.is_err());
    assert_eq!(r(s, |tx| tx.meta_get("written")), None);
    assert!(r(s, |tx| tx.assets(AssetKind::Apns)).is_empty());
}

pub fn assets_round_trip_with_sealed_keys(s: &TestStore) {
    let a = apns_asset(AssetState::Pending, "01");
    let id1 = w(s, |tx| tx.insert_asset(&a));
    let mut b = NewAsset::new(AssetKind::ScepCa, AssetState::Active, "imported:nanomdm");
    b.cert_pem = Some("CA PEM".into());
    b.key_pem = Some(z("CA KEY"));
    b.sha256 = Some("02".into());
    let id2 = w(s, |tx| tx.insert_asset(&b));
    let mut c = NewAsset::new(AssetKind::Apns, AssetState::Active, "set");
    c.sha256 = Some("03".into());
    let id3 = w(s, |tx| tx.insert_asset(&c));

    let apns = r(s, |tx| tx.assets(AssetKind::Apns));
    assert_eq!(
        apns.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![id3, id1],
        "newest first, one kind only"
    );
    let got = r(s, |tx| tx.asset(id1)).unwrap();
    assert_eq!(got.kind, AssetKind::Apns);
    assert_eq!(got.state, AssetState::Pending);
    assert_eq!(got.source, "generated");
    assert_eq!(got.cert_pem, a.cert_pem);
    assert_eq!(got.topic, a.topic);
    assert_eq!(got.not_after, a.not_after);
    assert!(got.has_key && !got.has_token);
    assert!(r(s, |tx| tx.asset(99_999)).is_none());

    assert_eq!(
        r(s, |tx| tx.active_asset(AssetKind::ScepCa)).unwrap().id,
        id2
    );
    assert!(r(s, |tx| tx.active_asset(AssetKind::Abm)).is_none());
    assert_eq!(
        r(s, |tx| tx.asset_by_fingerprint(AssetKind::ScepCa, "02"))
            .unwrap()
            .id,
        id2
    );
    assert!(r(s, |tx| tx.asset_by_fingerprint(AssetKind::Apns, "02")).is_none());

    assert_eq!(&r(s, |tx| tx.asset_key(id2)).unwrap()[..], b"CA KEY");
    assert!(r(s, |tx| tx.asset_key(id3)).is_none());
    assert!(r(s, |tx| tx.asset_token(id2)).is_none());
}

pub fn one_active_asset_per_kind(s: &TestStore) {
    w(s, |tx| {
        tx.insert_asset(&apns_asset(AssetState::Active, "a1"))
    });
    let err = s
        .store
        .write(|tx| tx.insert_asset(&apns_asset(AssetState::Active, "a2")))
        .expect_err("two active push certificates");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    // The same fingerprint twice is refused too.
    let err = s
        .store
        .write(|tx| tx.insert_asset(&apns_asset(AssetState::Retired, "a1")))
        .expect_err("duplicate fingerprint");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
}

pub fn asset_state_cert_and_token_updates(s: &TestStore) {
    let mut pending = NewAsset::new(AssetKind::Abm, AssetState::Pending, "generated");
    pending.key_pem = Some(z("ABM KEY"));
    let id = w(s, |tx| tx.insert_asset(&pending));
    w(s, |tx| {
        tx.set_asset_cert(id, "CERT", "ff", Timestamp(1_900_000_000), Some("topic.x"))
    });
    w(s, |tx| {
        tx.set_asset_token(
            id,
            br#"{"access_secret":"AS-SECRET"}"#,
            Some(Timestamp(1_950_000_000)),
        )
    });
    w(s, |tx| tx.set_asset_state(id, AssetState::Active));
    let a = r(s, |tx| tx.asset(id)).unwrap();
    assert_eq!(a.state, AssetState::Active);
    assert_eq!(a.cert_pem.as_deref(), Some("CERT"));
    assert_eq!(a.sha256.as_deref(), Some("ff"));
    assert_eq!(a.topic.as_deref(), Some("topic.x"));
    assert_eq!(
        a.not_after,
        Some(Timestamp(1_950_000_000)),
        "the token's expiry wins"
    );
    assert!(a.has_token);
    assert!(a.updated_at >= a.created_at);
    assert!(contains(
        &r(s, |tx| tx.asset_token(id)).unwrap(),
        "AS-SECRET"
    ));
    // A token without an expiry keeps the last one.
    w(s, |tx| tx.set_asset_token(id, b"{}", None));
    assert_eq!(
        r(s, |tx| tx.asset(id)).unwrap().not_after,
        Some(Timestamp(1_950_000_000))
    );
    let err = s
        .store
        .write(|tx| tx.set_asset_state(424_242, AssetState::Retired))
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::Conflict(_)));
}

pub fn devices_and_enrollments_round_trip(s: &TestStore) {
    let d = device("UDID-1", "C02AAA");
    w(s, |tx| {
        tx.put_device(&d)?;
        tx.put_enrollment(&enrollment(
            "UDID-1",
            "UDID-1",
            "com.apple.mgmt.External.t1",
        ))?;
        tx.put_enrollment(&enrollment(
            "UDID-1:501",
            "UDID-1",
            "com.apple.mgmt.External.t1",
        ))
    });
    let got = r(s, |tx| tx.device("UDID-1")).unwrap();
    assert_eq!(got.serial.as_deref(), Some("C02AAA"));
    assert_eq!(got.model_name.as_deref(), Some("MacBook Air"));
    assert_eq!(got.device_name, d.device_name);
    assert_eq!(got.source, "imported:nanomdm");
    assert_eq!(got.imported_at, d.imported_at);
    assert_eq!(got.enrolled_at, d.enrolled_at);
    assert_eq!(got.last_seen_at, d.last_seen_at);
    assert_eq!(got.authenticate_raw, d.authenticate_raw);
    assert_eq!(
        got.token_update_raw.as_deref(),
        d.token_update_raw.as_deref()
    );
    assert_eq!(got.unlock_token.as_deref(), d.unlock_token.as_deref());
    assert_eq!(got.bootstrap_token.as_deref(), d.bootstrap_token.as_deref());
    assert_eq!(got.identity_sha256, d.identity_sha256);
    assert_eq!(got.identity_not_after, d.identity_not_after);

    let ens = r(s, |tx| tx.enrollments_of("UDID-1"));
    assert_eq!(
        ens.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        vec!["UDID-1", "UDID-1:501"],
        "device channel first"
    );
    assert_eq!(ens[0].kind, "Device");
    assert_eq!(ens[1].user_short_name.as_deref(), Some("ada"));
    assert_eq!(
        ens[1].push_magic.as_deref().map(String::as_str),
        Some("PUSHMAGIC-SECRET")
    );
    assert_eq!(
        ens[1].token.as_deref().map(|t| t.to_vec()),
        Some(vec![0xde, 0xad, 0xbe, 0xef, 0x42])
    );
    assert!(ens[1].enabled);

    // Upserts replace.
    let mut d2 = d.clone();
    d2.os_version = Some("15.1".into());
    d2.unlock_token = None;
    let mut e2 = enrollment("UDID-1", "UDID-1", "com.apple.mgmt.External.t1");
    e2.enabled = false;
    e2.push_magic = None;
    w(s, |tx| {
        tx.put_device(&d2)?;
        tx.put_enrollment(&e2)
    });
    let got = r(s, |tx| tx.device("UDID-1")).unwrap();
    assert_eq!(got.os_version.as_deref(), Some("15.1"));
    assert!(got.unlock_token.is_none());
    let e = r(s, |tx| tx.enrollments_of("UDID-1")).remove(0);
    assert!(!e.enabled && e.push_magic.is_none());
    assert_eq!(r(s, |tx| tx.count_devices()), 1);
    assert!(r(s, |tx| tx.enrollments_of("nobody")).is_empty());
}

pub fn device_lookup_by_serial_and_summaries(s: &TestStore) {
    w(s, |tx| {
        for (id, serial) in [("B-UDID", "SER-B"), ("A-UDID", "SER-A")] {
            tx.put_device(&device(id, serial))?;
        }
        tx.put_enrollment(&enrollment("A-UDID", "A-UDID", "topic.a"))
    });
    assert_eq!(r(s, |tx| tx.device("SER-B")).unwrap().id, "B-UDID");
    assert!(r(s, |tx| tx.device("SER-Z")).is_none());
    let list = r(s, |tx| tx.device_summaries());
    assert_eq!(
        list.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        vec!["A-UDID", "B-UDID"]
    );
    assert_eq!(list[0].topic.as_deref(), Some("topic.a"));
    assert_eq!(list[1].topic, None, "no enrollment yet");
    assert_eq!(list[0].identity_not_after, Some(Timestamp(1_800_000_000)));
    assert_eq!(list[0].team, None);
    // The summary names the device's team.
    w(s, |tx| {
        tx.put_team("Lab", &Settings::default())?;
        tx.set_device_team("B-UDID", Some("Lab")).map(|_| ())
    });
    let list = r(s, |tx| tx.device_summaries());
    assert_eq!(list[1].team.as_deref(), Some("Lab"));
    assert_eq!(list[0].team, None);
}

pub fn identity_certificate_belongs_to_one_device(s: &TestStore) {
    let mut a = device("ID-A", "S1");
    a.identity_sha256 = Some("c".repeat(64));
    let mut b = device("ID-B", "S2");
    b.identity_sha256 = Some("c".repeat(64));
    w(s, |tx| tx.put_device(&a));
    let err = s
        .store
        .write(|tx| tx.put_device(&b))
        .expect_err("shared identity");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    // Devices without a recorded identity do not collide.
    a.identity_sha256 = None;
    b.identity_sha256 = None;
    w(s, |tx| {
        tx.put_device(&a)?;
        tx.put_device(&b)
    });
}

pub fn enrollment_needs_its_device(s: &TestStore) {
    let err = s
        .store
        .write(|tx| tx.put_enrollment(&enrollment("ORPHAN", "ORPHAN", "t")))
        .expect_err("foreign key");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
}

pub fn enrollment_topics_are_counted(s: &TestStore) {
    assert!(r(s, |tx| tx.enrollment_topics()).is_empty());
    w(s, |tx| {
        for i in 0..3 {
            let id = format!("U{i}");
            tx.put_device(&DeviceRecord {
                identity_sha256: None,
                ..device(&id, &format!("S{i}"))
            })?;
            tx.put_enrollment(&enrollment(
                &id,
                &id,
                if i < 2 { "topic.main" } else { "topic.other" },
            ))?;
        }
        Ok(())
    });
    let topics = r(s, |tx| tx.enrollment_topics());
    assert_eq!(
        topics
            .iter()
            .map(|t| (t.topic.as_str(), t.enrollments))
            .collect::<Vec<_>>(),
        vec![("topic.main", 2), ("topic.other", 1)]
    );
}

pub fn activities_are_appended_and_filtered(s: &TestStore) {
    let entry = |kind: &str, device: Option<&str>| NewActivity {
        actor: "tester@host".into(),
        kind: kind.into(),
        device_id: device.map(Into::into),
        summary: format!("did {kind}"),
        details: serde_json::json!({ "n": 1, "kind": kind }),
    };
    let before = Timestamp::now();
    let ids = w(s, |tx| {
        Ok(vec![
            tx.record_activity(&entry("apns.set", None))?,
            tx.record_activity(&entry("apns.topic_override", None))?,
            tx.record_activity(&entry("device.migrated", Some("UDID-9")))?,
            tx.record_activity(&entry("apns_other", None))?,
        ])
    });
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let all = r(s, |tx| tx.activities(&ActivityQuery::default()));
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].summary, "did apns.set");
    assert_eq!(all[0].details["kind"], "apns.set");
    assert_eq!(all[0].actor, "tester@host");
    assert!(all[0].at >= before);
    let q = |q: ActivityQuery| {
        r(s, |tx| tx.activities(&q))
            .into_iter()
            .map(|a| a.kind)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        q(ActivityQuery {
            kind: Some("apns.".into()),
            ..Default::default()
        }),
        vec!["apns.set", "apns.topic_override"],
        "prefix, and `_` is literal"
    );
    assert_eq!(
        q(ActivityQuery {
            kind: Some("apns.set".into()),
            ..Default::default()
        }),
        vec!["apns.set"]
    );
    assert_eq!(
        q(ActivityQuery {
            device_id: Some("UDID-9".into()),
            ..Default::default()
        }),
        vec!["device.migrated"]
    );
    assert_eq!(
        q(ActivityQuery {
            limit: Some(2),
            ..Default::default()
        }),
        vec!["apns.set", "apns.topic_override"],
        "the first two"
    );
    assert_eq!(
        q(ActivityQuery {
            limit: Some(2),
            latest: true,
            ..Default::default()
        }),
        vec!["device.migrated", "apns_other"],
        "the last two, oldest first"
    );
    assert!(
        q(ActivityQuery {
            since: Some(Timestamp::now().plus_days(1)),
            ..Default::default()
        })
        .is_empty()
    );
}

pub fn activities_cannot_be_changed(s: &TestStore) {
    w(s, |tx| {
        tx.record_activity(&NewActivity {
            actor: "a".into(),
            kind: "k".into(),
            device_id: None,
            summary: "s".into(),
            details: serde_json::json!({}),
        })
    });
    let upd = s.raw_execute("UPDATE activities SET summary = 'rewritten'");
    assert!(upd.unwrap_err().contains("append-only"));
    let del = s.raw_execute("DELETE FROM activities");
    assert!(del.unwrap_err().contains("append-only"));
    assert_eq!(
        r(s, |tx| tx.activities(&ActivityQuery::default()))[0].summary,
        "s"
    );
}

pub fn failed_transaction_writes_nothing(s: &TestStore) {
    let result: Result<(), StoreError> = s.store.write(|tx| {
        tx.put_device(&device("T-1", "S-T1"))?;
        tx.meta_set("half", "written")?;
        Err(StoreError::Conflict("the caller gave up".into()))
    });
    assert!(result.is_err());
    assert!(r(s, |tx| tx.device("T-1")).is_none());
    assert_eq!(r(s, |tx| tx.meta_get("half")), None);
    // A failed statement mid-way rolls back the earlier ones too.
    let result = s.store.write(|tx| {
        tx.put_device(&device("T-2", "S-T2"))?;
        tx.put_enrollment(&enrollment("ORPHAN", "ORPHAN", "t"))
    });
    assert!(result.is_err());
    assert!(r(s, |tx| tx.device("T-2")).is_none());
}

pub fn concurrent_writers_do_not_lose_updates(s: &TestStore) {
    let threads = 4;
    let per_thread = 25;
    std::thread::scope(|scope| {
        for t in 0..threads {
            let store = Arc::clone(&s.store);
            scope.spawn(move || {
                for i in 0..per_thread {
                    store
                        .write(|tx| {
                            let n: i64 = tx
                                .meta_get("counter")?
                                .map(|v| v.parse().unwrap_or(0))
                                .unwrap_or(0);
                            tx.meta_set("counter", &(n + 1).to_string())?;
                            tx.put_device(&DeviceRecord {
                                identity_sha256: None,
                                ..device(&format!("C-{t}-{i}"), "S")
                            })
                        })
                        .expect("concurrent write");
                }
            });
        }
    });
    assert_eq!(r(s, |tx| tx.meta_get("counter")).as_deref(), Some("100"));
    assert_eq!(r(s, |tx| tx.count_devices()), 100);
}

pub fn secrets_are_not_stored_in_clear(s: &TestStore) {
    let mut abm = NewAsset::new(AssetKind::Abm, AssetState::Active, "generated");
    abm.key_pem = Some(z(
        "-----BEGIN PRIVATE KEY-----\nABMKEYMATERIAL\n-----END PRIVATE KEY-----",
    ));
    abm.token = Some(z(
        r#"{"access_token":"AT-CLEARTEXT-CANARY","access_secret":"AS-CLEARTEXT-CANARY"}"#,
    ));
    w(s, |tx| {
        tx.insert_asset(&apns_asset(AssetState::Active, "s1"))?;
        tx.insert_asset(&abm)?;
        tx.put_device(&device("SEC-1", "S"))?;
        tx.put_enrollment(&enrollment("SEC-1", "SEC-1", "t"))?;
        tx.put_disk_encryption(&DiskEncryption::new(
            "SEC-1",
            FdeState::Verified,
            Timestamp::now(),
        ))?;
        tx.set_recovery_key(
            "SEC-1",
            b"RKEY-CLEA-RTEX-TCAN-ARYA-AAAA",
            None,
            Timestamp::now(),
        )
    });
    if !s.is_postgres() {
        // Checkpoint the WAL so everything is in the main file too, and look at both.
        s.raw_execute("PRAGMA wal_checkpoint(FULL)").unwrap();
    }
    let bytes = s.raw_bytes();
    assert!(
        contains(&bytes, "com.apple.mgmt.External.t1"),
        "the check must see the store's contents"
    );
    for secret in [
        "PRIVATE KEY",
        "APNSKEYMATERIAL",
        "ABMKEYMATERIAL",
        "AT-CLEARTEXT-CANARY",
        "AS-CLEARTEXT-CANARY",
        "PUSHMAGIC-SECRET",
        "UNLOCKTOKEN-SECRET",
        "BOOTSTRAP-SECRET",
        "RKEY-CLEA-RTEX-TCAN-ARYA-AAAA",
        PASSPHRASE,
    ] {
        assert!(!contains(&bytes, secret), "`{secret}` is stored in clear");
    }
}

pub fn tampered_secret_is_reported(s: &TestStore) {
    let id = w(s, |tx| {
        tx.insert_asset(&apns_asset(AssetState::Active, "t1"))
    });
    // Byte 20 becomes 0x00, or 0x01 if it was 0x00 already: always a change.
    let flip = match s.is_postgres() {
        true => {
            "UPDATE assets SET key_sealed = overlay(key_sealed placing \
             CASE WHEN get_byte(key_sealed, 19) = 0 THEN '\\x01'::bytea ELSE '\\x00'::bytea END from 20 for 1)"
        }
        false => {
            "UPDATE assets SET key_sealed = CAST(substr(key_sealed, 1, 19) || \
             CASE WHEN substr(key_sealed, 20, 1) = x'00' THEN x'01' ELSE x'00' END || substr(key_sealed, 21) AS BLOB)"
        }
    };
    s.raw_execute(flip).unwrap();
    let err = s
        .store
        .read(|tx| tx.asset_key(id))
        .expect_err("tampered ciphertext");
    assert!(
        matches!(
            err,
            StoreError::Secrets(mdmctl::secrets::SecretsError::Damaged { .. })
        ),
        "{err:?}"
    );
}

fn with_device_and_channels(s: &TestStore, id: &str) {
    w(s, |tx| {
        tx.put_device(&DeviceRecord {
            identity_sha256: None,
            ..device(id, &format!("S-{id}"))
        })?;
        tx.put_enrollment(&enrollment(id, id, "topic.q"))?;
        tx.put_enrollment(&enrollment(&format!("{id}:501"), id, "topic.q"))
    });
}

pub fn commands_queue_per_enrollment_in_order(s: &TestStore) {
    use mdmctl::store::{NewCommand, QueueStatus};
    with_device_and_channels(s, "Q1");
    let ids = vec![
        "Q1".to_string(),
        "Q1:501".to_string(),
        "UNKNOWN".to_string(),
    ];
    let queued = w(s, |tx| {
        tx.enqueue(
            &NewCommand {
                uuid: "C-1",
                request_type: "ProfileList",
                plist: b"<plist>one</plist>",
                created_by: "t",
            },
            &ids,
        )
    });
    assert_eq!(
        queued,
        vec!["Q1".to_string(), "Q1:501".to_string()],
        "unknown enrollments are left out"
    );
    w(s, |tx| {
        tx.enqueue(
            &NewCommand {
                uuid: "C-2",
                request_type: "SecurityInfo",
                plist: b"<plist>two</plist>",
                created_by: "t",
            },
            &ids[..1],
        )
    });

    assert!(r(s, |tx| tx.has_open_command("Q1", false)));
    assert!(!r(s, |tx| tx.has_open_command("nobody", true)));
    // First in, first out; handing a command out marks it sent.
    let first = w(s, |tx| tx.next_command("Q1", true)).unwrap();
    assert_eq!(
        (first.uuid.as_str(), first.request_type.as_str()),
        ("C-1", "ProfileList")
    );
    assert_eq!(&first.plist[..], b"<plist>one</plist>");
    assert_eq!(
        r(s, |tx| tx.command_entries("C-1"))
            .iter()
            .find(|e| e.enrollment_id == "Q1")
            .unwrap()
            .status,
        QueueStatus::Sent
    );
    // Sent but unanswered: offered again.
    assert_eq!(w(s, |tx| tx.next_command("Q1", false)).unwrap().uuid, "C-1");

    // NotNow: kept, not offered again in the same session, offered on the next Idle.
    assert_eq!(
        w(s, |tx| tx.record_result(
            "Q1",
            "C-1",
            QueueStatus::NotNow,
            b"<notnow/>",
            None
        )),
        Recorded::New("ProfileList".into())
    );
    // The same NotNow again (the device did not see our answer) changes nothing.
    assert_eq!(
        w(s, |tx| tx.record_result(
            "Q1",
            "C-1",
            QueueStatus::NotNow,
            b"<notnow/>",
            None
        )),
        Recorded::Already("ProfileList".into())
    );
    assert_eq!(w(s, |tx| tx.next_command("Q1", false)).unwrap().uuid, "C-2");
    let chain = serde_json::json!([{"ErrorCode": 12021, "ErrorDomain": "MCMDMErrorDomain"}]);
    w(s, |tx| {
        tx.record_result("Q1", "C-2", QueueStatus::Error, b"<error/>", Some(&chain))
    });
    assert!(
        w(s, |tx| tx.next_command("Q1", false)).is_none(),
        "only the NotNow'd one is left"
    );
    assert_eq!(w(s, |tx| tx.next_command("Q1", true)).unwrap().uuid, "C-1");
    assert_eq!(
        w(s, |tx| {
            tx.record_result(
                "Q1",
                "C-1",
                QueueStatus::Acknowledged,
                b"<ack>result</ack>",
                None,
            )
        }),
        Recorded::New("ProfileList".into())
    );
    assert!(w(s, |tx| tx.next_command("Q1", true)).is_none());
    // A re-sent report, or an Error after the Acknowledged: recorded once, the first kept.
    for status in [QueueStatus::Acknowledged, QueueStatus::Error] {
        assert_eq!(
            w(s, |tx| tx.record_result(
                "Q1",
                "C-1",
                status,
                b"<again/>",
                None
            )),
            Recorded::Already("ProfileList".into())
        );
    }

    let entries = r(s, |tx| tx.command_entries("C-1"));
    let q1 = entries.iter().find(|e| e.enrollment_id == "Q1").unwrap();
    assert_eq!(q1.status, QueueStatus::Acknowledged);
    assert_eq!(q1.not_now_count, 1);
    assert!(q1.sent_at.is_some() && q1.result_at.is_some());
    assert_eq!(
        entries
            .iter()
            .find(|e| e.enrollment_id == "Q1:501")
            .unwrap()
            .status,
        QueueStatus::Pending
    );
    assert_eq!(
        &r(s, |tx| tx.command_result("Q1", "C-1")).unwrap()[..],
        b"<ack>result</ack>"
    );
    let mine = r(s, |tx| tx.device_commands("Q1", 10));
    assert_eq!(mine.len(), 3, "both channels' entries");
    let err = mine.iter().find(|e| e.command_uuid == "C-2").unwrap();
    assert_eq!(err.error_chain.as_ref().unwrap()[0]["ErrorCode"], 12021);
    assert_eq!(r(s, |tx| tx.device_commands("Q1", 1)).len(), 1);

    // A report for a command that is not queued for this enrollment is refused.
    assert_eq!(
        w(s, |tx| tx.record_result(
            "Q1:501",
            "C-2",
            QueueStatus::Acknowledged,
            b"x",
            None
        )),
        Recorded::Unknown
    );
    // Re-enrollment drops open entries only.
    assert_eq!(w(s, |tx| tx.clear_queue("Q1:501")), 1);
    assert_eq!(w(s, |tx| tx.clear_queue("Q1")), 0);
    assert!(w(s, |tx| tx.next_command("Q1:501", true)).is_none());
}

/// The push outbox: a queued channel waits in it until pushed; one whose device fetched every
/// command meanwhile (its queuer died, the device came anyway) is dropped, not pushed.
pub fn push_outbox_holds_channels_until_fetched_or_pushed(s: &TestStore) {
    use mdmctl::store::NewCommand;
    use mdmctl::timestamp::Timestamp;
    with_device_and_channels(s, "PO");
    let ids = vec!["PO".to_string(), "PO:501".to_string()];
    w(s, |tx| {
        tx.enqueue(
            &NewCommand {
                uuid: "PO-1",
                request_type: "ProfileList",
                plist: b"<plist/>",
                created_by: "t",
            },
            &ids,
        )
    });
    let later = Timestamp(Timestamp::now().0 + 10);
    let mut due = w(s, |tx| tx.push_outbox_due(later, 100));
    due.sort();
    assert_eq!(due, ids, "both queued channels wait for a push");
    assert!(
        w(s, |tx| tx.push_outbox_due(Timestamp(0), 100)).is_empty(),
        "nothing is due before it was queued"
    );
    // The device channel fetches its command without a push: it needs none any more.
    assert_eq!(w(s, |tx| tx.next_command("PO", true)).unwrap().uuid, "PO-1");
    assert_eq!(
        w(s, |tx| tx.push_outbox_due(later, 100)),
        vec!["PO:501".to_string()]
    );
    // Pushed: out of the outbox.
    w(s, |tx| tx.clear_push_outbox(&ids[1..], later));
    assert!(w(s, |tx| tx.push_outbox_due(later, 100)).is_empty());
}

/// The staged cutover's set: a percentage and `--all` kept in meta, devices moved one by one,
/// open commands counted per device (what a rollback keeps).
pub fn cutover_set_and_moves_round_trip(s: &TestStore) {
    use mdmctl::store::{CutoverSet, NewCommand};
    with_device_and_channels(s, "CUT");
    assert_eq!(r(s, |tx| tx.cutover_set()), CutoverSet::default());
    let set = CutoverSet {
        percent: 25,
        all: false,
    };
    w(s, |tx| tx.set_cutover_set(&set));
    assert_eq!(r(s, |tx| tx.cutover_set()), set);
    assert_eq!(r(s, |tx| tx.cutover_move("CUT")), None);
    w(s, |tx| tx.set_cutover_moves(&["CUT".to_string()], true));
    assert_eq!(r(s, |tx| tx.cutover_move("CUT")), Some(true));
    w(s, |tx| tx.set_cutover_moves(&["CUT".to_string()], false));
    assert_eq!(
        r(s, |tx| tx.cutover_moves()),
        vec![("CUT".to_string(), false)]
    );
    assert_eq!(w(s, |tx| tx.clear_cutover_moves()), 1);
    assert_eq!(r(s, |tx| tx.cutover_move("CUT")), None);
    w(s, |tx| {
        tx.enqueue(
            &NewCommand {
                uuid: "CUT-1",
                request_type: "ProfileList",
                plist: b"<plist/>",
                created_by: "t",
            },
            &["CUT".to_string(), "CUT:501".to_string()],
        )
    });
    assert_eq!(
        r(s, |tx| tx.open_commands_per_device()),
        vec![("CUT".to_string(), 2)],
        "both channels' entries count for the device"
    );
}

/// Apple Business Manager's device records and the sync cursor, on both backends.
pub fn abm_devices_and_cursor_round_trip(s: &TestStore) {
    use mdmctl::store::{AbmCursor, AbmDevice};
    let devices: Vec<AbmDevice> = (0..250)
        .map(|i| AbmDevice {
            serial: format!("ABM{i:04}"),
            model: Some("MacBook Air".into()),
            profile_status: Some(if i % 2 == 0 { "empty" } else { "assigned" }.into()),
            op_type: Some("added".into()),
            ..Default::default()
        })
        .collect();
    w(s, |tx| tx.put_abm_devices(&devices, None));
    assert_eq!(r(s, |tx| tx.abm_devices(&Default::default())).len(), 250);
    assert_eq!(
        r(s, |tx| tx.abm_devices(&mdmctl::store::AbmFilter {
            status: Some("assigned".into()),
            ..Default::default()
        }))
        .len(),
        125
    );
    let mut gone = devices[3].clone();
    gone.deleted = true;
    gone.op_type = Some("deleted".into());
    w(s, |tx| {
        tx.put_abm_devices(std::slice::from_ref(&gone), None)
    });
    let back = r(s, |tx| tx.abm_devices(&Default::default()));
    assert_eq!(back.len(), 250, "replaced, not added");
    assert_eq!(back[3], gone);
    assert_eq!(r(s, |tx| tx.abm_cursor()), None);
    let c = AbmCursor {
        value: "MTczNDU2".into(),
        at: mdmctl::timestamp::Timestamp(1_700_000_000),
    };
    w(s, |tx| tx.set_abm_cursor(Some(&c)));
    assert_eq!(r(s, |tx| tx.abm_cursor()), Some(c));
    w(s, |tx| tx.set_abm_cursor(None));
    assert_eq!(
        r(s, |tx| tx.abm_cursor()),
        None,
        "forgotten (`abm sync --reset-cursor`)"
    );
}

/// ABM assignment state on both backends: new devices join the default team; outcomes are
/// recorded per serial (a first failure is retried at once, a repeated one after the cool-down);
/// a device deleted then listed again, or a scope's profile defined anew, is assigned again; a
/// pending device moves team.
pub fn abm_assignment_state(s: &TestStore) {
    use mdmctl::store::{AbmDevice, AbmProfile, AssignOutcome};
    use mdmctl::timestamp::Timestamp;
    let devices: Vec<AbmDevice> = (0..1200)
        .map(|i| AbmDevice {
            serial: format!("S{i:05}"),
            op_type: Some("added".into()),
            ..Default::default()
        })
        .collect();
    w(s, |tx| tx.put_abm_devices(&devices, Some("Staff")));
    let now = Timestamp::now();
    let due = r(s, |tx| tx.abm_due(now, 10_000));
    assert_eq!(due.len(), 1200);
    assert!(due.iter().all(|d| d.team.as_deref() == Some("Staff")));
    let serials: Vec<String> = due.iter().map(|d| d.serial.clone()).collect();
    let (ok, bad) = serials.split_at(1100);
    let outcome = |state: &'static str, retry: i64, cool: i64| AssignOutcome {
        state,
        profile_uuid: "P1".into(),
        detail: state.to_uppercase(),
        retry_at: Some(Timestamp(now.0 + retry)),
        cooldown_until: Some(Timestamp(now.0 + cool)),
    };
    w(s, |tx| {
        tx.record_abm_assignments(ok, &outcome("assigned", 0, 0))?;
        tx.record_abm_assignments(bad, &outcome("failed", 0, 86_400))
    });
    let due = r(s, |tx| tx.abm_due(now, 10_000));
    assert_eq!(due.len(), 100, "the first failure is tried again at once");
    w(s, |tx| {
        tx.record_abm_assignments(bad, &outcome("failed", 0, 86_400))
    });
    assert!(
        r(s, |tx| tx.abm_due(now, 10_000)).is_empty(),
        "a repeated failure waits"
    );
    assert_eq!(
        r(s, |tx| tx.abm_due(Timestamp(now.0 + 86_401), 10_000)).len(),
        100
    );
    let one = r(s, |tx| tx.abm_device("S00000")).unwrap();
    assert_eq!(
        (
            one.assign_state.as_deref(),
            one.profile_uuid.as_deref(),
            one.team.as_deref()
        ),
        (Some("assigned"), Some("P1"), Some("Staff"))
    );
    let failed = r(s, |tx| tx.abm_device("S01150")).unwrap();
    assert_eq!(
        (failed.assign_failures, failed.assign_detail.as_deref()),
        (2, Some("FAILED"))
    );

    // Synced again (unchanged): the state stays; deleted then back: assigned again.
    w(s, |tx| tx.put_abm_devices(&devices[..2], Some("Other")));
    assert_eq!(
        r(s, |tx| tx.abm_device("S00000"))
            .unwrap()
            .assign_state
            .as_deref(),
        Some("assigned")
    );
    assert_eq!(
        r(s, |tx| tx.abm_device("S00000")).unwrap().team.as_deref(),
        Some("Staff"),
        "the team is kept"
    );
    let mut gone = devices[0].clone();
    gone.deleted = true;
    w(s, |tx| {
        tx.put_abm_devices(std::slice::from_ref(&gone), None)
    });
    assert!(
        r(s, |tx| tx.abm_due(now, 10)).is_empty(),
        "a deleted device is not assigned"
    );
    w(s, |tx| tx.put_abm_devices(&devices[..1], None));
    assert_eq!(
        r(s, |tx| tx.abm_due(now, 10)).len(),
        1,
        "back: assigned again"
    );

    // A new profile for the scope: every device of it is due.
    w(s, |tx| {
        tx.put_abm_profile(&AbmProfile {
            team: Some("Staff".into()),
            sha256: "abc".into(),
            profile_uuid: "P2".into(),
            defined_at: now,
        })
    });
    assert_eq!(r(s, |tx| tx.abm_due(now, 10_000)).len(), 1200);
    assert_eq!(r(s, |tx| tx.abm_profiles())[0].profile_uuid, "P2");
    assert!(w(s, |tx| tx.set_abm_device_team("S00001", Some("Lab"))));
    assert!(!w(s, |tx| tx.set_abm_device_team("NOPE", Some("Lab"))));
    let lab = mdmctl::store::AbmFilter {
        team: Some(Some("Lab".into())),
        ..Default::default()
    };
    assert_eq!(r(s, |tx| tx.abm_devices(&lab)).len(), 1);
    w(s, |tx| tx.set_abm_enrolled("S00001", "UDID-1"));
    let pending = mdmctl::store::AbmFilter {
        pending_only: true,
        ..Default::default()
    };
    assert_eq!(r(s, |tx| tx.abm_devices(&pending)).len(), 1199);
}

pub fn queueing_to_thousands_of_enrollments(s: &TestStore) {
    use mdmctl::store::NewCommand;
    let ids: Vec<String> = (0..1_200).map(|i| format!("M-{i:05}")).collect();
    w(s, |tx| {
        for id in &ids {
            tx.put_device(&DeviceRecord {
                id: id.clone(),
                source: "enrolled".into(),
                ..Default::default()
            })?;
            tx.put_enrollment(&EnrollmentRecord {
                id: id.clone(),
                device_id: id.clone(),
                kind: "Device".into(),
                topic: "t".into(),
                enabled: true,
                ..Default::default()
            })?;
        }
        Ok(())
    });
    let queued = w(s, |tx| {
        tx.enqueue(
            &NewCommand {
                uuid: "FAN",
                request_type: "DeviceInformation",
                plist: b"p",
                created_by: "t",
            },
            &ids,
        )
    });
    assert_eq!(queued.len(), 1_200);
    assert_eq!(r(s, |tx| tx.command_entries("FAN")).len(), 1_200);
    // Queueing the same command again changes nothing.
    let err = s.store.write(|tx| {
        tx.enqueue(
            &NewCommand {
                uuid: "FAN",
                request_type: "DeviceInformation",
                plist: b"p",
                created_by: "t",
            },
            &ids,
        )
    });
    assert!(
        matches!(err, Err(StoreError::Conflict(_))),
        "a command UUID is used once"
    );
}

pub fn api_tokens_and_scep_challenges(s: &TestStore) {
    let id = w(s, |tx| {
        tx.create_api_token("ci", &"a".repeat(64), "tester", Role::Gitops, None)
    });
    assert!(
        s.store
            .write(|tx| tx.create_api_token("ci", &"b".repeat(64), "tester", Role::Admin, None))
            .is_err(),
        "names are unique"
    );
    let t = r(s, |tx| tx.api_token_by_hash(&"a".repeat(64))).unwrap();
    assert_eq!(
        (
            t.id,
            t.name.as_str(),
            t.created_by.as_str(),
            t.role,
            t.team_id
        ),
        (id, "ci", "tester", Role::Gitops, None)
    );
    assert!(t.last_used_at.is_none());
    w(s, |tx| tx.touch_api_token(id));
    assert!(r(s, |tx| tx.api_tokens())[0].last_used_at.is_some());
    assert!(w(s, |tx| tx.revoke_api_token("ci")));
    assert!(!w(s, |tx| tx.revoke_api_token("ci")), "already revoked");
    assert!(r(s, |tx| tx.api_token_by_hash(&"a".repeat(64))).is_none());
    assert!(
        r(s, |tx| tx.api_tokens())[0].revoked_at.is_some(),
        "kept for the record"
    );
    // A team token carries its team's name.
    let team = w(s, |tx| tx.put_team("Lab", &Default::default()));
    w(s, |tx| {
        tx.create_api_token("ci", &"c".repeat(64), "tester", Role::Observer, Some(team))
    });
    let t = r(s, |tx| tx.api_token_by_hash(&"c".repeat(64))).unwrap();
    assert_eq!((t.role, t.team.as_deref()), (Role::Observer, Some("Lab")));

    let enroll = ChallengeScope {
        purpose: ChallengePurpose::Enroll,
        device_id: Some("DEV-1".into()),
        team_id: Some(team),
        enroll_secret_id: Some(7),
    };
    w(s, |tx| {
        tx.add_scep_challenge(&"1".repeat(64), Timestamp::now().plus_days(1), "t", &enroll)
    });
    w(s, |tx| {
        tx.add_scep_challenge(&"2".repeat(64), Timestamp(1), "t", &ChallengeScope::api())
    });
    assert_eq!(
        w(s, |tx| tx.use_scep_challenge(&"1".repeat(64))),
        Some(enroll.clone()),
        "a challenge's scope comes back when it is used"
    );
    assert!(
        w(s, |tx| tx.use_scep_challenge(&"1".repeat(64))).is_none(),
        "one time only"
    );
    assert!(
        w(s, |tx| tx.use_scep_challenge(&"2".repeat(64))).is_none(),
        "expired"
    );
    assert!(
        w(s, |tx| tx.use_scep_challenge(&"3".repeat(64))).is_none(),
        "unknown"
    );
    assert_eq!(r(s, |tx| tx.challenge_scope(&"1".repeat(64))), Some(enroll));
    // What a one-time challenge issued is remembered (renewals are recognized by it).
    assert_eq!(r(s, |tx| tx.challenge_issued(&"1".repeat(64))), None);
    w(s, |tx| tx.set_challenge_issued(&"1".repeat(64), "certsha"));
    assert_eq!(
        r(s, |tx| tx.challenge_issued(&"1".repeat(64))),
        Some("certsha".to_string())
    );
    assert_eq!(r(s, |tx| tx.challenge_issued(&"3".repeat(64))), None);
    // Expired challenges are pruned; live ones stay.
    assert_eq!(w(s, |tx| tx.prune_scep_challenges(Timestamp::now())), 1);
    assert!(r(s, |tx| tx.challenge_scope(&"2".repeat(64))).is_none());
    assert!(r(s, |tx| tx.challenge_scope(&"1".repeat(64))).is_some());
}

pub fn enrollment_secrets_issued_certificates_and_rebind_grants(s: &TestStore) {
    let team = w(s, |tx| tx.put_team("Staff", &Default::default()));
    let id = w(s, |tx| {
        tx.create_enroll_secret("office", &"e".repeat(64), Some(team), None, None, "tester")
    });
    w(s, |tx| {
        tx.create_enroll_secret(
            "old",
            &"f".repeat(64),
            None,
            Some("DEV-9"),
            Some(Timestamp(5)),
            "t",
        )
    });
    assert!(
        s.store
            .write(|tx| tx.create_enroll_secret("office", &"0".repeat(64), None, None, None, "t"))
            .is_err(),
        "live names are unique"
    );
    let found = r(s, |tx| tx.enroll_secret_by_hash(&"e".repeat(64))).unwrap();
    assert_eq!((found.id, found.team.as_deref()), (id, Some("Staff")));
    assert!(
        r(s, |tx| tx.enroll_secret_by_hash(&"f".repeat(64))).is_none(),
        "expired"
    );
    w(s, |tx| tx.touch_enroll_secret(id));
    assert!(w(s, |tx| tx.revoke_enroll_secret("office")));
    assert!(r(s, |tx| tx.enroll_secret_by_hash(&"e".repeat(64))).is_none());
    let all = r(s, |tx| tx.enroll_secrets());
    assert_eq!(all.len(), 2);
    assert!(
        all.iter()
            .any(|x| x.name == "office" && x.revoked_at.is_some() && x.last_used_at.is_some())
    );
    // The name is free again once revoked.
    w(s, |tx| {
        tx.create_enroll_secret("office", &"0".repeat(64), None, None, None, "t")
    });

    let issued = Issued {
        sha256: "a1".repeat(32),
        how: IssuedHow::Renewal,
        challenge_sha256: None,
        device_id: Some("DEV-1".into()),
        issued_at: Timestamp(100),
        not_after: Timestamp(200),
    };
    w(s, |tx| tx.record_issued(&issued));
    w(s, |tx| tx.record_issued(&issued));
    assert_eq!(r(s, |tx| tx.issued(&"a1".repeat(32))), Some(issued));
    assert_eq!(r(s, |tx| tx.issued("nope")), None);

    assert_eq!(w(s, |tx| tx.take_rebind("DEV-1")), None);
    w(s, |tx| {
        tx.grant_rebind("DEV-1", "admin@host", Timestamp::now().plus_days(1))
    });
    assert_eq!(
        w(s, |tx| tx.take_rebind("DEV-1")),
        Some("admin@host".into())
    );
    assert_eq!(w(s, |tx| tx.take_rebind("DEV-1")), None, "once");
    w(s, |tx| tx.grant_rebind("DEV-2", "admin@host", Timestamp(1)));
    assert_eq!(w(s, |tx| tx.take_rebind("DEV-2")), None, "expired");
}

pub fn checkin_primitives(s: &TestStore) {
    with_device_and_channels(s, "K1");
    let a = r(s, |tx| tx.device_auth("K1", Some("K1:501"))).unwrap();
    assert_eq!(a.channel_enabled, Some(true));
    assert_eq!(a.source, "imported:nanomdm");
    assert!(a.imported() && a.migrated_at.is_none() && a.identity_sha256.is_none());
    assert_eq!(
        r(s, |tx| tx.device_auth("K1", Some("K1:999")))
            .unwrap()
            .channel_enabled,
        None
    );
    assert_eq!(
        r(s, |tx| tx.device_auth("K1", None))
            .unwrap()
            .channel_enabled,
        None
    );
    assert!(r(s, |tx| tx.device_auth("nobody", None)).is_none());

    w(s, |tx| {
        tx.bind_identity("K1", &"e".repeat(64), Some(Timestamp(1_900_000_000)))
    });
    assert_eq!(
        r(s, |tx| tx.device_by_identity(&"e".repeat(64))).as_deref(),
        Some("K1")
    );
    assert!(r(s, |tx| tx.device_by_identity(&"f".repeat(64))).is_none());
    assert_eq!(
        r(s, |tx| tx.device_auth("K1", None))
            .unwrap()
            .identity_not_after,
        Some(Timestamp(1_900_000_000))
    );

    assert!(w(s, |tx| tx.mark_migrated("K1")));
    assert!(
        !w(s, |tx| tx.mark_migrated("K1")),
        "only the first contact counts"
    );
    w(s, |tx| tx.touch("K1:501", "K1"));
    let d = r(s, |tx| tx.device("K1")).unwrap();
    assert!(d.migrated_at.is_some() && d.last_seen_at.unwrap() >= Timestamp::now().plus_days(-1));
    assert!(
        r(s, |tx| tx.enrollment("K1:501"))
            .unwrap()
            .last_seen_at
            .unwrap()
            >= Timestamp::now().plus_days(-1)
    );

    assert_eq!(
        r(s, |tx| tx.push_targets(&[
            "K1".into(),
            "K1:501".into(),
            "none".into()
        ]))
        .len(),
        2
    );
    let t = &r(s, |tx| tx.push_targets(&["K1".into()]))[0];
    assert_eq!(
        (t.topic.as_str(), t.push_magic.as_str()),
        ("topic.q", "PUSHMAGIC-SECRET")
    );
    assert_eq!(&t.token[..], &[0xde, 0xad, 0xbe, 0xef, 0x42]);
    assert_eq!(w(s, |tx| tx.set_enrollment_enabled("K1:501", false)), 1);
    assert_eq!(
        r(s, |tx| tx.push_targets(&["K1".into(), "K1:501".into()])).len(),
        1,
        "disabled channels are not pushed"
    );
    assert_eq!(w(s, |tx| tx.disable_device("K1")), 2);
    assert!(r(s, |tx| tx.push_targets(&["K1".into()])).is_empty());

    w(s, |tx| tx.set_bootstrap_token("K1", Some(b"BOOTSTRAP-2")));
    assert_eq!(
        r(s, |tx| tx.device("K1"))
            .unwrap()
            .bootstrap_token
            .as_deref()
            .map(|b| b.to_vec()),
        Some(b"BOOTSTRAP-2".to_vec())
    );
    w(s, |tx| tx.set_bootstrap_token("K1", None));
    assert!(
        r(s, |tx| tx.device("K1"))
            .unwrap()
            .bootstrap_token
            .is_none()
    );
    w(s, |tx| tx.record_push_error("K1", Some("BadDeviceToken")));
    w(s, |tx| tx.record_push_error("K1", None));
    assert!(r(s, |tx| tx.enrollment("none")).is_none());
    assert_eq!(r(s, |tx| tx.enrollment("K1")).unwrap().kind, "Device");
}

fn desired(team: Option<&str>, identifier: &str, content: &str) -> DesiredProfile {
    DesiredProfile {
        team: team.map(str::to_string),
        identifier: identifier.into(),
        name: format!("{identifier} name"),
        kind: ProfileKind::Profile,
        managed: false,
        content: content.as_bytes().to_vec(),
        sha256: format!("sha-{content}"),
        source: Some(format!("/repo/{identifier}.mobileconfig")),
    }
}

pub fn desired_settings_and_teams_round_trip(s: &TestStore) {
    assert_eq!(r(s, |tx| tx.global_settings()), None);
    let g = GlobalSettings {
        settings: Settings {
            minimum_version: Some("15.1".into()),
            deadline: Some("2026-12-01".into()),
            enable_disk_encryption: true,
            setup_assistant: None,
            setup_assistant_source: None,
        },
        apple_bm_default_team: Some("Workstations".into()),
    };
    w(s, |tx| tx.set_global_settings(&g));
    assert_eq!(r(s, |tx| tx.global_settings()), Some(g.clone()));
    let g2 = GlobalSettings::default();
    w(s, |tx| tx.set_global_settings(&g2));
    assert_eq!(r(s, |tx| tx.global_settings()), Some(g2.clone()));

    let ws = Settings {
        minimum_version: Some("15.2".into()),
        deadline: Some("2027-01-15".into()),
        enable_disk_encryption: false,
        setup_assistant: None,
        setup_assistant_source: None,
    };
    let id = w(s, |tx| tx.put_team("Workstations", &ws));
    let id_b = w(s, |tx| tx.put_team("Build Farm", &Settings::default()));
    assert_ne!(id, id_b);
    // Replacing a team's settings keeps its ID.
    let ws2 = Settings {
        enable_disk_encryption: true,
        ..ws.clone()
    };
    assert_eq!(w(s, |tx| tx.put_team("Workstations", &ws2)), id);
    let teams = r(s, |tx| tx.teams());
    let names: Vec<&str> = teams.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["Build Farm", "Workstations"]);
    assert_eq!(teams[1].settings, ws2);
    assert_eq!(teams[1].id, id);
}

pub fn desired_profiles_per_scope(s: &TestStore) {
    w(s, |tx| tx.put_team("Workstations", &Settings::default()));
    // The same identifier may exist globally and in a team: they are different scopes.
    w(s, |tx| {
        tx.put_desired_profile(&desired(None, "com.example.wifi", "a"))
    });
    w(s, |tx| {
        tx.put_desired_profile(&desired(Some("Workstations"), "com.example.wifi", "b"))
    });
    w(s, |tx| {
        tx.put_desired_profile(&desired(Some("Workstations"), "com.example.alpha", "c"))
    });
    let all = r(s, |tx| tx.desired_profiles(None));
    let keys: Vec<(Option<&str>, &str)> = all
        .iter()
        .map(|p| (p.team.as_deref(), p.identifier.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            (None, "com.example.wifi"),
            (Some("Workstations"), "com.example.alpha"),
            (Some("Workstations"), "com.example.wifi"),
        ]
    );
    assert_eq!(all[0], desired(None, "com.example.wifi", "a"));
    assert_eq!(all[0].content, b"a");

    // Replacing keeps one row per scope and identifier.
    let mut fv = desired(Some("Workstations"), "com.example.wifi", "b2");
    fv.kind = ProfileKind::FileVault;
    fv.managed = true;
    fv.source = None;
    w(s, |tx| tx.put_desired_profile(&fv));
    let team = r(s, |tx| tx.desired_profiles(Some(Some("Workstations"))));
    assert_eq!(team.len(), 2);
    assert_eq!(team[1], fv);
    assert_eq!(r(s, |tx| tx.desired_profiles(Some(None))).len(), 1);

    assert!(w(s, |tx| tx.delete_desired_profile(
        Some("Workstations"),
        "com.example.wifi"
    )));
    assert!(!w(s, |tx| tx.delete_desired_profile(
        Some("Workstations"),
        "com.example.wifi"
    )));
    assert!(!w(s, |tx| tx
        .delete_desired_profile(Some("Nope"), "com.example.wifi")));
    assert_eq!(r(s, |tx| tx.desired_profiles(None)).len(), 2);
    assert!(w(s, |tx| tx.delete_desired_profile(None, "com.example.wifi")));

    // A profile for a team that does not exist is refused, and the database enforces one
    // row per scope and identifier.
    let err = s
        .store
        .write(|tx| tx.put_desired_profile(&desired(Some("Nope"), "x", "x")))
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    let dup = s.raw_execute(
        "INSERT INTO desired_profiles (team_id, identifier, name, kind, managed, content, sha256, created_at, updated_at) \
         SELECT team_id, identifier, name, kind, managed, content, sha256, created_at, updated_at FROM desired_profiles",
    );
    assert!(dup.is_err(), "duplicate scope+identifier accepted");
}

pub fn devices_belong_to_teams(s: &TestStore) {
    w(s, |tx| {
        for i in 0..5 {
            tx.put_device(&device(&format!("UDID-{i}"), &format!("SER{i}")))?;
        }
        Ok(())
    });
    w(s, |tx| tx.put_team("Workstations", &Settings::default()));
    w(s, |tx| tx.put_team("Lab", &Settings::default()));
    assert_eq!(r(s, |tx| tx.device_counts_by_team()), [(None, 5)]);
    assert!(w(s, |tx| tx.set_device_team("UDID-0", Some("Workstations"))));
    assert!(w(s, |tx| tx.set_device_team("UDID-1", Some("Workstations"))));
    assert!(w(s, |tx| tx.set_device_team("UDID-2", Some("Lab"))));
    assert!(!w(s, |tx| tx.set_device_team("UDID-404", Some("Lab"))));
    assert_eq!(
        r(s, |tx| tx.device_counts_by_team()),
        [
            (None, 2),
            (Some("Lab".to_string()), 1),
            (Some("Workstations".to_string()), 2)
        ]
    );
    assert_eq!(
        r(s, |tx| tx.device_team("UDID-0")).as_deref(),
        Some("Workstations")
    );
    // What each device should have: its team's profiles, or the global ones.
    w(s, |tx| {
        tx.put_desired_profile(&desired(None, "com.example.global", "g"))
    });
    w(s, |tx| {
        tx.put_desired_profile(&desired(Some("Workstations"), "com.example.ws", "w"))
    });
    let ids = |dev: &str| -> Vec<String> {
        r(s, |tx| tx.device_desired_profiles(dev))
            .into_iter()
            .map(|p| p.identifier)
            .collect()
    };
    assert_eq!(ids("UDID-0"), ["com.example.ws"]);
    assert_eq!(ids("UDID-4"), ["com.example.global"]);
    assert!(ids("UDID-2").is_empty());
    assert!(ids("UDID-404").is_empty());
    assert!(w(s, |tx| tx.set_device_team("UDID-0", None)));
    assert_eq!(r(s, |tx| tx.device_team("UDID-0")), None);
    assert_eq!(ids("UDID-0"), ["com.example.global"]);
    let err = s
        .store
        .write(|tx| tx.set_device_team("UDID-3", Some("Nope")))
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
}

/// A store made before schema 2 existed (main had 1 and 4) gets it when next opened.
pub fn desired_state_migration_applies_to_an_older_store(s: &TestStore) {
    w(s, |tx| tx.put_device(&device("UDID-OLD", "SEROLD")));
    s.raw_execute(UNDO_SCHEMA_13).expect("take schema 13 away");
    s.raw_execute(UNDO_SCHEMA_10).expect("take schema 10 away");
    s.raw_execute(
        "DROP TABLE desired_profiles; DROP TABLE global_settings; DROP INDEX devices_team; \
         ALTER TABLE devices DROP COLUMN team_id; DROP TABLE teams; \
         DELETE FROM schema_migrations WHERE version = 2",
    )
    .expect("take schema 2 away");
    let store = s.reopen(PASSPHRASE).expect("reopen upgrades");
    store
        .write(|tx| {
            tx.put_team("Lab", &Settings::default())?;
            tx.set_device_team("UDID-OLD", Some("Lab"))
        })
        .expect("schema 2 is back");
    let counts = store.read(|tx| tx.device_counts_by_team()).unwrap();
    assert_eq!(counts, [(Some("Lab".to_string()), 1)]);
}

/// Schema 13 taken away again (it adds columns to `teams`, so schema 2 can only go after it).
const UNDO_SCHEMA_13: &str = "DROP INDEX devices_awaiting_configuration; \
     ALTER TABLE devices DROP COLUMN awaiting_configuration_since; DROP INDEX abm_devices_assign; \
     ALTER TABLE abm_devices DROP COLUMN team; ALTER TABLE abm_devices DROP COLUMN assign_state; \
     ALTER TABLE abm_devices DROP COLUMN assigned_profile; ALTER TABLE abm_devices DROP COLUMN assign_failures; \
     ALTER TABLE abm_devices DROP COLUMN assign_retry_at; ALTER TABLE abm_devices DROP COLUMN assign_at; \
     ALTER TABLE abm_devices DROP COLUMN assign_detail; ALTER TABLE abm_devices DROP COLUMN enrolled_udid; \
     DROP TABLE abm_profiles; DELETE FROM schema_migrations WHERE version = 13";

/// Schema 10 taken away again (its tables refer to `teams`, so schema 2 can only go after it).
const UNDO_SCHEMA_10: &str = "DROP TABLE enroll_secrets; DROP TABLE scep_issued; DROP TABLE rebind_grants; \
     DROP INDEX scep_challenges_expiry; \
     ALTER TABLE scep_challenges DROP COLUMN purpose; ALTER TABLE scep_challenges DROP COLUMN device_id; \
     ALTER TABLE scep_challenges DROP COLUMN team_id; ALTER TABLE scep_challenges DROP COLUMN enroll_secret_id; \
     ALTER TABLE api_tokens DROP COLUMN team_id; ALTER TABLE api_tokens DROP COLUMN role; \
     DELETE FROM schema_migrations WHERE version = 10";

// See: issue 11 §6: tokens made before roles existed become `admin`, and the upgrade says so.
pub fn tokens_become_admin_on_upgrade_and_it_is_recorded(s: &TestStore) {
    w(s, |tx| {
        tx.create_api_token("old-ci", &"d".repeat(64), "t", Role::Observer, None)
    });
    s.raw_execute(UNDO_SCHEMA_10).expect("take schema 10 away");
    let store = s.reopen(PASSPHRASE).expect("reopen upgrades");
    let t = store
        .read(|tx| tx.api_token_by_hash(&"d".repeat(64)))
        .unwrap()
        .unwrap();
    assert_eq!(
        t.role,
        Role::Admin,
        "an existing token keeps every right it had"
    );
    let log = store
        .read(|tx| {
            tx.activities(&ActivityQuery {
                kind: Some("store.upgraded".into()),
                ..Default::default()
            })
        })
        .unwrap();
    assert_eq!(log.len(), 1);
    assert!(
        log[0].summary.contains("became `admin`"),
        "{}",
        log[0].summary
    );
}

/// The bulk forms an import uses: more rows than one statement takes, rows already there
/// updated in place, secrets sealed as the single-row writes seal them.
pub fn bulk_writes_span_statements_and_update_in_place(s: &TestStore) {
    let topic = "com.apple.mgmt.External.bulk";
    let ids: Vec<String> = (0..1_201).map(|i| format!("BULK-{i:05}")).collect();
    // One already there, with other facts: the bulk write replaces them.
    let mut old = device(&ids[7], "C02OLD");
    old.os_version = Some("13.0".into());
    w(s, |tx| tx.put_device(&old));
    let devices: Vec<DeviceRecord> = ids
        .iter()
        .map(|id| device(id, &format!("C02{id}")))
        .collect();
    let enrollments: Vec<EnrollmentRecord> =
        ids.iter().map(|id| enrollment(id, id, topic)).collect();
    let rows: Vec<ImportRow> = ids
        .iter()
        .map(|id| ImportRow {
            kind: "device",
            id: id.clone(),
            sha256: format!("sha-{id}"),
            source: "dump.sql".into(),
        })
        .collect();
    w(s, |tx| {
        tx.put_devices(&devices)?;
        tx.put_enrollments(&enrollments)?;
        tx.set_import_fingerprints(&rows)
    });
    let (count, seventh, last, channel, fp) = r(s, |tx| {
        Ok((
            tx.count_devices()?,
            tx.device(&ids[7])?,
            tx.device(&ids[1_200])?,
            tx.enrollment(&ids[1_200])?,
            tx.import_fingerprint("device", &ids[1_200])?,
        ))
    });
    assert_eq!(count, 1_201);
    let seventh = seventh.expect("the device written before");
    assert_eq!(
        seventh.serial.as_deref(),
        Some(format!("C02{}", ids[7]).as_str())
    );
    assert_eq!(seventh.os_version.as_deref(), Some("14.6.1"));
    let last = last.expect("the last device");
    let want = &devices[1_200];
    assert_eq!(last.serial, want.serial);
    assert_eq!(last.identity_sha256, want.identity_sha256);
    assert_eq!(last.authenticate_raw, want.authenticate_raw);
    assert_eq!(last.unlock_token, want.unlock_token);
    assert_eq!(last.bootstrap_token, want.bootstrap_token);
    assert_eq!(last.token_update_raw, want.token_update_raw);
    let channel = channel.expect("the last channel");
    assert_eq!(
        channel.token.as_deref(),
        enrollments[1_200].token.as_deref()
    );
    assert_eq!(channel.push_magic, enrollments[1_200].push_magic);
    assert_eq!(fp.as_deref(), Some(format!("sha-{}", ids[1_200]).as_str()));
}

/// A DeviceInformation answer's facts: only what it reports changes, secrets stay readable,
/// and the caller learns whether the OS version moved.
pub fn device_facts_change_only_what_is_reported(s: &TestStore) {
    let dev = "FACTS-UDID-1";
    w(s, |tx| tx.put_device(&device(dev, "C02FACTS1")));
    let same = DeviceFacts {
        os_version: Some("14.6.1".into()),
        ..DeviceFacts::default()
    };
    let newer = DeviceFacts {
        os_version: Some("15.2".into()),
        build_version: Some("24C101".into()),
        device_name: Some("Renamed".into()),
        ..DeviceFacts::default()
    };
    let (unchanged, changed, unknown) = w(s, |tx| {
        Ok((
            tx.set_device_facts(dev, &same)?,
            tx.set_device_facts(dev, &newer)?,
            tx.set_device_facts("NO-SUCH-DEVICE", &newer)?,
        ))
    });
    assert_eq!(unchanged, Some(false));
    assert_eq!(changed, Some(true));
    assert_eq!(unknown, None);
    let d = r(s, |tx| tx.device(dev)).expect("the device");
    assert_eq!(d.os_version.as_deref(), Some("15.2"));
    assert_eq!(d.build_version.as_deref(), Some("24C101"));
    assert_eq!(d.device_name.as_deref(), Some("Renamed"));
    assert_eq!(d.serial.as_deref(), Some("C02FACTS1"), "not reported: kept");
    assert_eq!(d.model.as_deref(), Some("Mac14,2"));
    assert_eq!(d.unlock_token, Some(z("UNLOCKTOKEN-SECRET")));
}

pub fn import_fingerprints_state_and_user_channels(s: &TestStore) {
    let dev = "IMPORT-UDID-1";
    w(s, |tx| {
        tx.put_device(&device(dev, "C02IMPORT1"))?;
        let mut user = enrollment(&format!("{dev}:U1"), dev, "com.apple.mgmt.External.t1");
        user.user_id = Some("U1".into());
        user.user_short_name = None;
        user.token_update_raw = None;
        tx.put_enrollment(&user)?;
        tx.set_import_fingerprint("device", dev, "aaaa", "dump.sql")?;
        // Upsert: the second write wins.
        tx.set_import_fingerprint("device", dev, "bbbb", "dump.sql")?;
        Ok(())
    });
    let (state, fp, none) = r(s, |tx| {
        Ok((
            tx.import_state(dev)?,
            tx.import_fingerprint("device", dev)?,
            tx.import_fingerprint("enrollment", dev)?,
        ))
    });
    let state = state.expect("device known");
    assert_eq!(state.source, "imported:nanomdm");
    assert_eq!(state.fingerprint.as_deref(), Some("bbbb"));
    assert_eq!(state.migrated_at, None);
    assert_eq!(fp.as_deref(), Some("bbbb"));
    assert_eq!(none, None);
    assert_eq!(r(s, |tx| tx.import_state("NO-SUCH-DEVICE")), None);

    // A user channel's names and TokenUpdate filled in later; NULLs keep what is there.
    let chan = format!("{dev}:U1");
    let n = w(s, |tx| {
        tx.set_enrollment_user(
            &chan,
            Some("ada"),
            Some("Ada L"),
            Some(b"<plist>user TU</plist>"),
        )
    });
    assert_eq!(n, 1);
    w(s, |tx| tx.set_enrollment_user(&chan, None, None, None));
    let e = r(s, |tx| tx.enrollment(&chan)).expect("channel");
    assert_eq!(e.user_short_name.as_deref(), Some("ada"));
    assert_eq!(e.user_long_name.as_deref(), Some("Ada L"));
    assert_eq!(
        e.token_update_raw.as_deref().map(|v| v.as_slice()),
        Some(&b"<plist>user TU</plist>"[..])
    );
    // Sealed at rest like every TokenUpdate.
    assert!(!contains(&s.raw_bytes(), "user TU"));
}

fn device_profile(device: &str, id: &str, status: ProfileState) -> DeviceProfile {
    DeviceProfile {
        device_id: device.into(),
        identifier: id.into(),
        name: Some(format!("Profile {id}")),
        sha256: Some("ab".repeat(32)),
        payload_uuid: Some(format!("{id}-uuid")),
        status,
        ours: status != ProfileState::Unmanaged,
        attempts: 0,
        next_attempt_at: None,
        command_uuid: None,
        error_chain: None,
        updated_at: Timestamp(1_700_000_000),
    }
}

pub fn profile_status_rows_dirty_marks_and_counts(s: &TestStore) {
    w(s, |tx| {
        for i in 0..3 {
            tx.put_device(&device(&format!("UDID-{i}"), &format!("SER{i}")))?;
        }
        tx.put_team("Lab", &Settings::default())?;
        Ok(())
    });
    // Rows round-trip, with the error chain as JSON, and are replaced per identifier.
    let mut failing = device_profile("UDID-0", "com.example.a", ProfileState::Pending);
    failing.command_uuid = Some("CMD-1".into());
    w(s, |tx| {
        tx.put_device_profile(&failing)?;
        tx.put_device_profile(&device_profile(
            "UDID-0",
            "com.old.b",
            ProfileState::Unmanaged,
        ))?;
        tx.put_device_profile(&device_profile(
            "UDID-1",
            "com.example.a",
            ProfileState::Verified,
        ))
    });
    assert_eq!(
        r(s, |tx| tx.device_profile_by_command("UDID-0", "CMD-1")),
        Some(failing.clone())
    );
    assert_eq!(
        r(s, |tx| tx.device_profile_by_command("UDID-1", "CMD-1")),
        None
    );
    failing.command_uuid = None;
    failing.attempts = 2;
    failing.next_attempt_at = Some(Timestamp(1_700_000_060));
    failing.error_chain =
        Some(serde_json::json!([{"ErrorCode": 4001, "ErrorDomain": "MCInstallationErrorDomain"}]));
    w(s, |tx| tx.put_device_profile(&failing));
    let rows = r(s, |tx| tx.device_profiles("UDID-0"));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0], failing);
    assert_eq!(rows[1].status, ProfileState::Unmanaged);
    assert!(!rows[1].ours);

    // A retry is due only once its time has come, and not while a command is in flight.
    assert!(
        r(s, |tx| tx.due_retries(
            Timestamp(1_700_000_059),
            Timestamp(0),
            10
        ))
        .is_empty()
    );
    assert_eq!(
        r(s, |tx| tx.due_retries(
            Timestamp(1_700_000_060),
            Timestamp(0),
            10
        )),
        vec!["UDID-0".to_string()]
    );
    // A profile verifying for too long is due for another ProfileList.
    let mut waiting = device_profile("UDID-2", "com.example.a", ProfileState::Verifying);
    waiting.updated_at = Timestamp(1_700_000_100);
    w(s, |tx| tx.put_device_profile(&waiting));
    assert!(
        !r(s, |tx| tx.due_retries(
            Timestamp(0),
            Timestamp(1_700_000_099),
            10
        ))
        .contains(&"UDID-2".to_string())
    );
    assert_eq!(
        r(s, |tx| tx.due_retries(
            Timestamp(0),
            Timestamp(1_700_000_100),
            10
        )),
        vec!["UDID-2".to_string()]
    );
    w(s, |tx| {
        tx.delete_device_profile("UDID-2", "com.example.a")
            .map(|_| ())
    });

    // Counts over everything and per scope.
    let all = r(s, |tx| tx.profile_status_counts(None));
    assert_eq!(
        (all.pending, all.verified, all.unmanaged, all.failed),
        (1, 1, 1, 0)
    );
    w(s, |tx| {
        tx.set_device_team("UDID-1", Some("Lab")).map(|_| ())
    });
    let lab = r(s, |tx| tx.profile_status_counts(Some(Some("Lab"))));
    assert_eq!((lab.verified, lab.pending), (1, 0));
    let global = r(s, |tx| tx.profile_status_counts(Some(None)));
    assert_eq!((global.verified, global.pending), (0, 1));

    // A team transfer marked its device dirty; a scope marks all its devices; unknown IDs are
    // ignored; clearing is per device.
    assert_eq!(r(s, |tx| tx.dirty_devices(10)), vec!["UDID-1".to_string()]);
    assert_eq!(w(s, |tx| tx.mark_scope_dirty(None)), 2);
    w(s, |tx| {
        tx.mark_dirty(&["UDID-2".to_string(), "nobody".to_string()])
    });
    let mut dirty = r(s, |tx| tx.dirty_devices(10));
    dirty.sort();
    assert_eq!(dirty, vec!["UDID-0", "UDID-1", "UDID-2"]);
    assert_eq!(w(s, |tx| tx.clear_dirty(&["UDID-0".to_string()])), 1);
    assert_eq!(w(s, |tx| tx.clear_dirty(&["UDID-0".to_string()])), 0);
    assert_eq!(r(s, |tx| tx.dirty_devices(10)).len(), 2);
    // Many rows at once, replacing per device and identifier.
    let mut many: Vec<DeviceProfile> = (0..450)
        .map(|i| {
            device_profile(
                "UDID-2",
                &format!("com.example.p{i:03}"),
                ProfileState::Pending,
            )
        })
        .collect();
    w(s, |tx| tx.put_device_profiles(&many));
    many[7].status = ProfileState::Verified;
    w(s, |tx| tx.put_device_profiles(&many[..10]));
    let got = r(s, |tx| tx.device_profiles("UDID-2"));
    assert_eq!(got.len(), 450);
    assert_eq!(got[7], many[7]);

    assert!(w(s, |tx| tx.delete_device_profile("UDID-0", "com.old.b")));
    assert!(!w(s, |tx| tx.delete_device_profile("UDID-0", "com.old.b")));
    assert_eq!(r(s, |tx| tx.device_profiles("UDID-0")).len(), 1);
}

pub fn disk_encryption_state_and_sealed_keys(s: &TestStore) {
    w(s, |tx| {
        for i in 0..3 {
            tx.put_device(&device(&format!("FDE-{i}"), &format!("SER{i}")))?;
        }
        tx.put_team("Lab", &Settings::default())?;
        tx.set_device_team("FDE-2", Some("Lab"))?;
        Ok(())
    });
    assert_eq!(r(s, |tx| tx.disk_encryption("FDE-0")), None);
    // A key needs its state row.
    assert!(matches!(
        s.store
            .write(|tx| tx.set_recovery_key("FDE-0", b"K", None, Timestamp(1))),
        Err(StoreError::Conflict(_))
    ));

    // Tracking starts a device at `enforcing`.
    w(s, |tx| {
        tx.track_disk_encryption(&["FDE-0".into()], Timestamp(7))
    });
    assert_eq!(
        r(s, |tx| tx.disk_encryption("FDE-0")),
        Some(DiskEncryption::new(
            "FDE-0",
            FdeState::Enforcing,
            Timestamp(7)
        ))
    );
    let mut row = DiskEncryption::new("FDE-0", FdeState::Verifying, Timestamp(1_700_000_000));
    row.next_check_at = Some(Timestamp(1_700_000_010));
    let mut other =
        DiskEncryption::new("FDE-1", FdeState::ActionRequired, Timestamp(1_700_000_000));
    other.reason = Some("the user must log out".into());
    other.next_check_at = Some(Timestamp(1_700_000_005));
    let third = DiskEncryption::new("FDE-2", FdeState::Enforcing, Timestamp(1_700_000_000));
    w(s, |tx| {
        tx.put_disk_encryption(&row)?;
        tx.put_disk_encryption(&other)?;
        tx.put_disk_encryption(&third)
    });
    assert_eq!(r(s, |tx| tx.disk_encryption("FDE-1")), Some(other.clone()));
    // Tracking devices that are tracked already changes nothing.
    w(s, |tx| {
        tx.track_disk_encryption(&["FDE-1".into(), "FDE-2".into()], Timestamp(5))
    });
    assert_eq!(r(s, |tx| tx.disk_encryption("FDE-1")), Some(other.clone()));
    assert_eq!(r(s, |tx| tx.disk_encryption("FDE-2")), Some(third.clone()));

    // Due checks: by time, soonest first; not while a command is in flight; never unscheduled.
    assert_eq!(
        r(s, |tx| tx
            .due_disk_encryption_checks(Timestamp(1_700_000_010), 10)),
        vec!["FDE-1".to_string(), "FDE-0".to_string()]
    );
    assert_eq!(
        r(s, |tx| tx
            .due_disk_encryption_checks(Timestamp(1_700_000_009), 10)),
        vec!["FDE-1".to_string()]
    );
    other.command_uuid = Some("SEC-INFO-1".into());
    w(s, |tx| tx.put_disk_encryption(&other));
    assert_eq!(
        r(s, |tx| tx
            .due_disk_encryption_checks(Timestamp(1_700_000_010), 10)),
        vec!["FDE-0".to_string()]
    );

    // The key: sealed in, opened out, and kept when the state row changes.
    w(s, |tx| {
        tx.set_recovery_key(
            "FDE-0",
            b"ABCD-EFGH-JKLM-NPQR-STUV-WXYZ",
            Some("escrowsha"),
            Timestamp(1_700_000_020),
        )
    });
    row.status = FdeState::Verified;
    row.reason = Some("key escrowed".into());
    row.next_check_at = None;
    w(s, |tx| tx.put_disk_encryption(&row));
    let stored = r(s, |tx| tx.disk_encryption("FDE-0")).unwrap();
    assert!(stored.has_key);
    assert_eq!(stored.status, FdeState::Verified);
    assert_eq!(stored.escrow_sha256.as_deref(), Some("escrowsha"));
    assert_eq!(stored.key_escrowed_at, Some(Timestamp(1_700_000_020)));
    assert_eq!(
        r(s, |tx| tx.recovery_key("FDE-0"))
            .as_deref()
            .map(|k| k.as_slice()),
        Some(&b"ABCD-EFGH-JKLM-NPQR-STUV-WXYZ"[..])
    );
    assert_eq!(r(s, |tx| tx.recovery_key("FDE-1")), None);

    // Counts, over all devices and per scope.
    assert_eq!(
        r(s, |tx| tx.disk_encryption_counts(None)),
        vec![
            (FdeState::Enforcing, 1),
            (FdeState::Verified, 1),
            (FdeState::ActionRequired, 1)
        ]
    );
    assert_eq!(
        r(s, |tx| tx.disk_encryption_counts(Some(Some("Lab")))),
        vec![(FdeState::Enforcing, 1)]
    );
    assert_eq!(
        r(s, |tx| tx.disk_encryption_counts(Some(None))),
        vec![(FdeState::Verified, 1), (FdeState::ActionRequired, 1)]
    );
}

pub fn declaration_tokens_and_status_reports(s: &TestStore) {
    w(s, |tx| tx.put_device(&device("DDM-1", "SER-D")));
    assert_eq!(r(s, |tx| tx.declarations_token_sent("DDM-1")), None);
    w(s, |tx| {
        tx.set_declarations_token_sent("DDM-1", "tok-1", Timestamp(10))
    });
    w(s, |tx| {
        tx.set_declarations_token_sent("DDM-1", "tok-2", Timestamp(20))
    });
    assert_eq!(
        r(s, |tx| tx.declarations_token_sent("DDM-1")),
        Some("tok-2".to_string())
    );
    assert_eq!(
        r(s, |tx| tx.declarations_tokens_sent(&[
            "DDM-1".into(),
            "NOBODY".into()
        ])),
        vec![("DDM-1".to_string(), "tok-2".to_string())]
    );

    let row = |id: &str, active: Option<bool>, valid: &str, at: i64| DeclarationStatus {
        device_id: "DDM-1".into(),
        identifier: id.into(),
        server_token: Some(format!("{id}-token")),
        active,
        valid: Some(valid.into()),
        reasons: (valid == "invalid")
            .then(|| serde_json::json!([{"code": "Error.ConfigurationCannotBeApplied"}])),
        updated_at: Timestamp(at),
    };
    w(s, |tx| {
        tx.put_declaration_statuses(&[
            row("com.b.config", Some(false), "invalid", 1),
            row("com.a.activation", Some(true), "valid", 1),
        ])
    });
    // Reports carry what changed: one row replaced, the other kept.
    w(s, |tx| {
        tx.put_declaration_statuses(&[row("com.b.config", Some(true), "valid", 2)])
    });
    let got = r(s, |tx| tx.declaration_statuses("DDM-1"));
    assert_eq!(
        got,
        vec![
            row("com.a.activation", Some(true), "valid", 1),
            row("com.b.config", Some(true), "valid", 2)
        ]
    );
    assert!(r(s, |tx| tx.declaration_statuses("NOBODY")).is_empty());
}

pub fn reconcile_reads_many_devices_at_once(s: &TestStore) {
    w(s, |tx| {
        for id in ["R-1", "R-2", "R-3", "R-4"] {
            tx.put_device(&device(id, &format!("S{id}")))?;
        }
        // R-1: a device channel with a token (and a user channel); R-2: disabled; R-3: no
        // token; R-4: no channel at all.
        tx.put_enrollment(&enrollment("R-1", "R-1", "t"))?;
        tx.put_enrollment(&enrollment("R-1-user", "R-1", "t"))?;
        let mut off = enrollment("R-2", "R-2", "t");
        off.enabled = false;
        tx.put_enrollment(&off)?;
        let mut bare = enrollment("R-3", "R-3", "t");
        bare.token = None;
        tx.put_enrollment(&bare)?;
        tx.put_team("Lab", &Settings::default())?;
        tx.set_device_team("R-2", Some("Lab"))?;
        tx.put_desired_profile(&desired(None, "com.example.global", "g"))?;
        tx.put_desired_profile(&desired(Some("Lab"), "com.example.lab", "l"))?;
        tx.put_device_profile(&device_profile(
            "R-1",
            "com.example.global",
            ProfileState::Verified,
        ))?;
        tx.put_device_profile(&device_profile("R-3", "com.old.x", ProfileState::Unmanaged))
    });
    let ids: Vec<String> = ["R-1", "R-2", "R-3", "R-4", "NOBODY"]
        .map(String::from)
        .to_vec();
    let mut targets = r(s, |tx| tx.reconcile_targets(&ids));
    targets.sort_by(|a, b| a.device_id.cmp(&b.device_id));
    let channels: Vec<(&str, Option<&str>)> = targets
        .iter()
        .map(|t| (t.device_id.as_str(), t.channel.as_deref()))
        .collect();
    assert_eq!(
        channels,
        [
            ("R-1", Some("R-1")),
            ("R-2", None),
            ("R-3", None),
            ("R-4", None)
        ]
    );
    assert!(
        targets
            .iter()
            .all(|t| t.os_version.as_deref() == Some("14.6.1"))
    );

    // Desired profiles per device: each scope's, read once; unknown devices left out.
    let mut desired_of = r(s, |tx| tx.devices_desired_profiles(&ids));
    desired_of.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<(String, Vec<String>)> = desired_of
        .into_iter()
        .map(|(d, p)| (d, p.into_iter().map(|p| p.identifier).collect()))
        .collect();
    assert_eq!(
        names,
        [
            ("R-1".to_string(), vec!["com.example.global".to_string()]),
            ("R-2".to_string(), vec!["com.example.lab".to_string()]),
            ("R-3".to_string(), vec!["com.example.global".to_string()]),
            ("R-4".to_string(), vec!["com.example.global".to_string()]),
        ]
    );
    assert_eq!(
        r(s, |tx| tx.device_desired_profiles("R-2"))[0].identifier,
        "com.example.lab"
    );

    let rows = r(s, |tx| tx.devices_profiles(&ids));
    let keys: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.device_id.as_str(), r.identifier.as_str()))
        .collect();
    assert_eq!(keys, [("R-1", "com.example.global"), ("R-3", "com.old.x")]);
}

pub fn identity_renewals_come_due_once_per_identity(s: &TestStore) {
    let with_identity = |id: &str, sha: &str, not_after: i64, source: &str| {
        let mut d = device(id, &format!("S{id}"));
        d.identity_sha256 = Some(sha.into());
        d.identity_not_after = Some(Timestamp(not_after));
        d.source = source.into();
        d
    };
    w(s, |tx| {
        tx.put_device(&with_identity("N-1", "sha-1", 1_000, "imported:nanomdm"))?;
        tx.put_device(&with_identity("N-2", "sha-2", 500, "imported:nanomdm"))?;
        tx.put_device(&with_identity("N-3", "sha-3", 5_000, "imported:nanomdm"))?;
        tx.put_device(&with_identity("N-4", "sha-4", 100, "enrolled"))?;
        tx.put_device(&with_identity("N-5", "sha-5", 100, "imported:nanomdm"))?;
        for id in ["N-1", "N-2", "N-3", "N-4"] {
            tx.put_enrollment(&enrollment(id, id, "t"))?;
        }
        Ok(())
    });
    // Imported, with a channel, expiring by then; soonest first. N-4 was enrolled here, N-5
    // has no channel to send to.
    let due = |s: &TestStore| r(s, |tx| tx.renewals_due(Timestamp(2_000), Timestamp(0), 10));
    assert_eq!(due(s), ["N-2", "N-1"]);

    let sent = |id: &str, old: &str| Renewal {
        device_id: id.into(),
        status: RenewalState::Sent,
        old_sha256: old.into(),
        command_uuid: Some(format!("CMD-{id}")),
        challenge_sha256: Some(format!("challenge-{id}")),
        reason: None,
        updated_at: Timestamp(10),
    };
    w(s, |tx| tx.put_renewal(&sent("N-2", "sha-2")));
    assert_eq!(r(s, |tx| tx.renewal("N-2")), Some(sent("N-2", "sha-2")));
    assert_eq!(due(s), ["N-1"]);

    // Renewed: the device has a new identity, which is not due until it nears expiry itself.
    w(s, |tx| {
        tx.bind_identity("N-2", "sha-2-new", Some(Timestamp(90_000)))?;
        let mut done = sent("N-2", "sha-2");
        done.status = RenewalState::Renewed;
        tx.put_renewal(&done)
    });
    assert_eq!(due(s), ["N-1"]);
    assert_eq!(
        r(s, |tx| tx.renewals_due(
            Timestamp(100_000),
            Timestamp(0),
            10
        )),
        ["N-1", "N-3", "N-2"]
    );

    // A failed one is tried again once `retry_before` has passed its last attempt.
    w(s, |tx| {
        let mut failed = sent("N-1", "sha-1");
        failed.status = RenewalState::Failed;
        failed.reason = Some("refused".into());
        tx.put_renewal(&failed)
    });
    assert!(due(s).is_empty());
    assert_eq!(
        r(s, |tx| tx.renewals_due(Timestamp(2_000), Timestamp(10), 10)),
        ["N-1"]
    );
}

pub fn devices_under_update_enforcement_are_asked_for_facts_daily(s: &TestStore) {
    w(s, |tx| {
        for id in ["F-1", "F-2", "F-3", "F-4"] {
            tx.put_device(&device(id, &format!("S{id}")))?;
            if id != "F-4" {
                tx.put_enrollment(&enrollment(id, id, "t"))?;
            }
        }
        tx.put_team(
            "Enforced",
            &Settings {
                minimum_version: Some("15.2".into()),
                deadline: Some("2026-12-31".into()),
                enable_disk_encryption: false,
                setup_assistant: None,
                setup_assistant_source: None,
            },
        )?;
        tx.put_team("Free", &Settings::default())?;
        tx.set_device_team("F-1", Some("Enforced"))?;
        tx.set_device_team("F-2", Some("Free"))?;
        Ok(())
    });
    let due =
        |s: &TestStore, before: i64| r(s, |tx| tx.devices_due_for_facts(Timestamp(before), 10));
    // Only the enforced team's device (the global settings enforce nothing yet).
    assert_eq!(due(s, 100), [("F-1".to_string(), "F-1".to_string())]);
    // Global enforcement brings in the devices in no team that have a channel.
    w(s, |tx| {
        tx.set_global_settings(&GlobalSettings {
            settings: Settings {
                minimum_version: Some("14.7".into()),
                deadline: Some("2026-12-31".into()),
                enable_disk_encryption: false,
                setup_assistant: None,
                setup_assistant_source: None,
            },
            apple_bm_default_team: None,
        })
    });
    let ids: Vec<String> = due(s, 100).into_iter().map(|(d, _)| d).collect();
    assert_eq!(ids, ["F-1", "F-3"]);
    // Asked at 50: not due again until the interval has passed, and kept by a device upsert.
    w(s, |tx| tx.mark_facts_requested(&ids, Timestamp(50)));
    w(s, |tx| tx.put_device(&device("F-3", "SF-3")));
    assert!(due(s, 49).is_empty());
    assert_eq!(due(s, 50).len(), 2);
}

// See: issue 12 §2: one instance at a time holds a job's lease; it lapses and is taken over.
pub fn job_leases_have_one_holder_and_lapse(s: &TestStore) {
    use mdmctl::store::{JobRun, ServerInstance};
    // Free: taken. Held: renewed by its holder, refused to anyone else.
    assert!(w(s, |tx| tx.take_lease("reconcile", "A", 30)));
    assert!(w(s, |tx| tx.take_lease("reconcile", "A", 30)));
    assert!(!w(s, |tx| tx.take_lease("reconcile", "B", 30)));
    assert!(
        w(s, |tx| tx.take_lease("renewals", "B", 30)),
        "leases are per job"
    );
    let leases = r(s, |tx| tx.leases());
    assert_eq!(
        leases
            .iter()
            .map(|l| (l.name.as_str(), l.owner.as_str()))
            .collect::<Vec<_>>(),
        [("reconcile", "A"), ("renewals", "B")]
    );
    // Lapsed (its holder stopped renewing): the next instance takes it.
    s.raw_execute("UPDATE leases SET expires_at = expires_at - 3600 WHERE name = 'reconcile'")
        .unwrap();
    assert!(w(s, |tx| tx.take_lease("reconcile", "B", 30)));
    assert!(!w(s, |tx| tx.take_lease("reconcile", "A", 30)), "A lost it");
    let l = r(s, |tx| tx.leases()).remove(0);
    assert_eq!(l.owner, "B");
    assert!(l.acquired_at == l.renewed_at && l.expires_at.0 >= l.renewed_at.0 + 30);
    // Released on shutdown: free for anyone at once; releasing another's lease does nothing.
    w(s, |tx| tx.release_lease("reconcile", "A"));
    assert!(!w(s, |tx| tx.take_lease("reconcile", "C", 30)));
    w(s, |tx| tx.release_lease("reconcile", "B"));
    assert!(w(s, |tx| tx.take_lease("reconcile", "C", 30)));

    // Many instances racing for one free lease, each on its own connection: one wins.
    let winners = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for i in 0..8 {
            let store = Arc::clone(&s.store);
            let winners = &winners;
            scope.spawn(move || {
                let mine = store
                    .write_rows(|tx| tx.take_lease("race", &format!("I-{i}"), 30))
                    .expect("take_lease");
                if mine {
                    winners.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(winners.into_inner(), 1);

    // Heartbeats and job runs.
    let me = ServerInstance {
        id: "A".into(),
        hostname: "host-a".into(),
        pid: 42,
        version: "0.1.0".into(),
        url: "https://mdm.example.com".into(),
        lease_seconds: 30,
        started_at: Timestamp(1_000),
        seen_at: Timestamp(1_000),
    };
    w(s, |tx| tx.heartbeat(&me));
    w(s, |tx| tx.heartbeat(&me));
    let servers = r(s, |tx| tx.servers());
    assert_eq!(servers.len(), 1);
    assert!(servers[0].seen_at.0 >= Timestamp::now().0 - 5, "seen now");
    let run = JobRun {
        name: "reconcile".into(),
        owner: "A".into(),
        started_at: Timestamp(2_000),
        finished_at: Timestamp(2_001),
        ok: false,
        summary: "the database cannot be reached".into(),
    };
    w(s, |tx| tx.record_job_run(&run));
    let again = JobRun {
        ok: true,
        summary: "3 device(s)".into(),
        ..run
    };
    w(s, |tx| tx.record_job_run(&again));
    assert_eq!(r(s, |tx| tx.job_runs()), [again]);
    let view = r(s, |tx| mdmctl::mdm::instances(tx));
    assert_eq!(view.servers.len(), 1);
    assert!(view.servers[0].alive);
    assert!(
        view.jobs
            .iter()
            .any(|j| j.name == "reconcile" && j.holder.as_deref() == Some("C"))
    );
    // Gone for good: forgotten by housekeeping; on shutdown by its own id.
    assert_eq!(w(s, |tx| tx.forget_servers(None, Timestamp(0))), 0);
    assert_eq!(w(s, |tx| tx.forget_servers(Some("A"), Timestamp(0))), 1);
    assert!(r(s, |tx| tx.servers()).is_empty());
}
