//! The Apple Business Manager client against a stand-in that checks the OAuth signature and the
//! session header: one session reused, a new one when Apple expires it, a rotated one adopted,
//! 429 waited out, 503 retried then given up, new terms stopping at once, a wrong secret refused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mdmctl::abm::{DepClient, DepError, Retry};
use mdmctl::assets::abm::ServerToken;
use mdmctl::sim::abm::AbmStandIn;

fn token() -> ServerToken {
    ServerToken {
        consumer_key: "CK_stand_in".into(),
        consumer_secret: "CS_secret/with+chars".into(),
        access_token: "AT_stand_in".into(),
        access_secret: "AS_secret=".into(),
        access_token_expiry: "2030-01-01T00:00:00Z".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_abm_client_keeps_its_session_and_survives_apples_answers() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let abm = AbmStandIn::start(listener, token()).await.unwrap();
    let retry = Retry {
        attempts: 4,
        base_delay: Duration::from_millis(20),
        max_wait: Duration::from_secs(5),
    };
    let c = DepClient::new(abm.url(), &token(), retry.clone()).unwrap();

    let a = c.account().await.unwrap();
    assert_eq!(a.org_name, "Example Inc (DEMO ABM)");
    assert_eq!(abm.counts(), (1, 1), "one signed /session, then the call");
    c.account().await.unwrap();
    assert_eq!(abm.counts(), (1, 2), "the session is reused");

    abm.expire_sessions();
    c.account().await.unwrap();
    assert_eq!(
        abm.counts(),
        (2, 4),
        "403 FORBIDDEN: one new session, the call replayed"
    );

    abm.rotate_next();
    c.account().await.unwrap();
    c.account().await.unwrap();
    assert_eq!(
        abm.counts().0,
        2,
        "the rotated session is adopted, no new /session"
    );

    abm.throttle(1);
    let t = Instant::now();
    c.account().await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "429 Retry-After: 1 is waited out"
    );

    abm.unavailable(2);
    c.account().await.unwrap();
    abm.unavailable(10);
    match c.account().await {
        Err(DepError::Http { status: 503, .. }) => {}
        other => panic!("503 past the retries is an error: {other:?}"),
    }
    abm.unavailable(0);

    abm.set_terms_not_signed(true);
    let before = abm.counts();
    match c.account().await {
        Err(e @ DepError::TermsNotSigned) => {
            let hint = mdmctl::error::Diagnose::hint(&e).unwrap();
            assert!(hint.contains("accept the new terms"), "{hint}");
        }
        other => panic!("new terms stop the call: {other:?}"),
    }
    assert_eq!(
        abm.counts(),
        (before.0, before.1 + 1),
        "no retry, no new session"
    );
    abm.set_terms_not_signed(false);

    let mut wrong = token();
    wrong.access_secret = "not the secret".into();
    let bad = DepClient::new(abm.url(), &wrong, retry).unwrap();
    match bad.account().await {
        Err(DepError::TokenRejected(body)) => assert!(body.contains("signature_invalid"), "{body}"),
        other => panic!("a wrong secret fails the signature: {other:?}"),
    }
}

/// `serve` syncs ABM's devices in the background (the `abm-sync` job) once a server token is
/// installed, and says what it did in `get servers`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_syncs_abm_devices_in_the_background() {
    use mdmctl::store::{AssetKind, AssetState, NewAsset};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let abm = AbmStandIn::start(listener, token()).await.unwrap();
    abm.add_devices(0, 30);
    let s = crate::harness::Server::start(crate::harness::Options {
        abm: Some(abm.url().to_string()),
        ..Default::default()
    })
    .await;
    s.store
        .write(|tx| {
            let mut a = NewAsset::new(AssetKind::Abm, AssetState::Active, "test");
            a.token = Some(zeroize::Zeroizing::new(
                serde_json::to_vec(&token()).unwrap(),
            ));
            tx.insert_asset(&a)
        })
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while s
        .store
        .read(|tx| tx.abm_devices(&Default::default()))
        .unwrap()
        .len()
        < 30
    {
        assert!(
            Instant::now() < until,
            "the abm-sync job did not sync the 30 devices"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!s.activities("abm.sync").is_empty());
    let jobs = s.store.read(|tx| mdmctl::mdm::instances(tx)).unwrap().jobs;
    let job = jobs
        .iter()
        .find(|j| j.name == "abm-sync")
        .expect("the abm-sync job");
    assert!(job.holder.is_some());

    // Through the API: an observer lists, only a maintainer syncs, a team token sees its team.
    let observer = crate::api::token_as(&s, "viewer", "observer", None).await;
    let listed = crate::api::mdmctl(
        &s,
        Some(&observer),
        &["--format", "json", "get", "abm-devices"],
    )
    .await;
    listed.success();
    assert_eq!(listed.json().as_array().unwrap().len(), 30);
    let refused = crate::api::mdmctl(&s, Some(&observer), &["abm", "sync"]).await;
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("403") || refused.stderr.contains("may not"),
        "{}",
        refused.stderr
    );
    abm.add_devices(30, 5);
    let maintainer = crate::api::token(&s, "ops").await;
    let synced =
        crate::api::mdmctl(&s, Some(&maintainer), &["--format", "json", "abm", "sync"]).await;
    synced.success();
    let pass = synced.json();
    assert!(pass["sync"]["records"].as_u64().is_some(), "{pass:#}");
    assert!(pass["assign"].is_object(), "{pass:#}");
    s.store
        .write(|tx| tx.put_team("Lab", &Default::default()))
        .unwrap();
    let lab = crate::api::token_as(&s, "lab", "maintainer", Some("Lab")).await;
    let theirs =
        crate::api::mdmctl(&s, Some(&lab), &["--format", "json", "get", "abm-devices"]).await;
    theirs.success();
    assert_eq!(
        theirs.json().as_array().unwrap().len(),
        0,
        "no device of Lab's"
    );
    s.stop().await;
}

/// A service answering without end (20 MiB) or with garbage: an error, never unbounded memory
/// or a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_garbage_answers_are_errors() {
    use std::io::{Read, Write};
    for huge in [true, false] {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        std::thread::spawn(move || {
            if let Some(Ok(mut s)) = l.incoming().next() {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                if huge {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 20971520\r\n\r\n");
                    let chunk = vec![b'{'; 1 << 20];
                    for _ in 0..20 {
                        if s.write_all(&chunk).is_err() {
                            break;
                        }
                    }
                } else {
                    let _ = s.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n\xff\x00{[\"x\"]}",
                    );
                }
            }
        });
        let c = DepClient::new(&url, &token(), Retry::default()).unwrap();
        match c.account().await {
            Err(DepError::Decode { reason, .. }) if huge => {
                assert!(reason.contains("larger than"), "{reason}")
            }
            Err(DepError::Decode { path, .. }) => assert_eq!(path, "/session"),
            other => panic!("huge={huge}: {other:?}"),
        }
    }
}

/// ABM devices as a sync leaves them: `serials` in `team`.
fn abm_devices(s: &crate::harness::Server, serials: &[&str], team: &str, deadline: Option<&str>) {
    let devices: Vec<mdmctl::store::AbmDevice> = serials
        .iter()
        .map(|serial| mdmctl::store::AbmDevice {
            serial: serial.to_string(),
            model: Some("MacBook Air".into()),
            op_type: Some("added".into()),
            migration_deadline: deadline.map(str::to_string),
            ..Default::default()
        })
        .collect();
    s.store
        .write(|tx| tx.put_abm_devices(&devices, Some(team)))
        .unwrap();
}

/// A new Mac from Apple Business Manager: its MachineInfo (POST, or GET with the header) gets
/// the enrollment profile; it enrolls into the team ABM assigned it (the default team, or
/// another after `transfer`), waits in Setup Assistant while that team's profiles are
/// installed and verified, and only then gets DeviceConfigured. An unknown serial, a
/// MachineInfo signed by anyone but the device CA, garbage and a huge body are refused, and
/// nothing is enrolled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mac_from_abm_enrolls_into_its_team_and_is_released_once_its_profiles_are_verified() {
    use mdmctl::sim::apple::FakeApple;
    use mdmctl::sim::device::{Fleet, IdentityMode, SimDevice};
    let apple = FakeApple::new().unwrap();
    let s = crate::harness::Server::start(crate::harness::Options {
        machine_info_ca: Some(apple.device_ca_cert.clone()),
        // One-time challenges carry the team and the device.
        scep_challenge: None,
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    crate::reconcile::apply(
        s.store.as_ref(),
        dir.path(),
        "apiVersion: v1\nkind: config\nspec:\n  mdm:\n    apple_bm_default_team: Staff\n---\napiVersion: v1\nkind: team\nspec:\n  team:\n    name: Staff\n    mdm:\n      macos_settings:\n        custom_settings:\n          - profiles/com.example.wifi.mobileconfig\n          - profiles/com.example.vpn.mobileconfig\n---\napiVersion: v1\nkind: team\nspec:\n  team:\n    name: Lab\n    mdm:\n      macos_settings:\n        custom_settings:\n          - profiles/com.example.lab.mobileconfig\n",
        &["com.example.wifi", "com.example.vpn", "com.example.lab"],
    );
    let staff =
        Arc::new(SimDevice::new(1, "15.1", IdentityMode::Signature, s.http(), &[]).unwrap());
    let lab = Arc::new(SimDevice::new(2, "15.1", IdentityMode::Signature, s.http(), &[]).unwrap());
    abm_devices(&s, &[&staff.serial, &lab.serial], "Staff", None);
    let moved = s
        .store
        .write(|tx| {
            mdmctl::mdm::transfer(tx, Some("Lab"), std::slice::from_ref(&lab.serial), "test")
        })
        .unwrap()
        .unwrap();
    assert_eq!(
        moved.moved,
        vec![lab.serial.clone()],
        "a pending ABM device moves team"
    );
    let waker = Fleet::new([staff.clone(), lab.clone()]).wake_on_push(s.apns.subscribe());

    let url = format!("{}/mdm/enroll", s.url);
    for (mac, post) in [(&staff, true), (&lab, false)] {
        mac.set_awaiting_configuration(true);
        let info = apple
            .machine_info(&mac.udid, &mac.serial, "Mac14,2", "15.1")
            .unwrap();
        let (status, profile) = mac.fetch_dep_profile(&url, &info, post).await.unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&profile));
        mac.enroll(&profile).await.unwrap();
    }
    let team_of = |udid: &str| s.store.read(|tx| tx.device_team(udid)).unwrap();
    assert_eq!(team_of(&staff.udid).as_deref(), Some("Staff"));
    assert_eq!(team_of(&lab.udid).as_deref(), Some("Lab"));
    for mac in [&staff, &lab] {
        crate::reconcile::wait_for(30, "DeviceConfigured", || !mac.awaiting_configuration()).await;
    }
    let mut got = staff.released_with().unwrap();
    got.retain(|p| p.starts_with("com.example."));
    got.sort();
    assert_eq!(
        got,
        vec!["com.example.vpn", "com.example.wifi"],
        "released only once its team's profiles were installed"
    );
    assert_eq!(
        lab.released_with()
            .unwrap()
            .iter()
            .filter(|p| p.starts_with("com.example."))
            .count(),
        1
    );
    let released = s.activities("device.released");
    assert_eq!(released.len(), 2, "{released:?}");
    assert!(
        released.iter().all(|a| a.summary.contains("verified")),
        "{released:?}"
    );
    let pending = s
        .store
        .read(|tx| {
            tx.abm_devices(&mdmctl::store::AbmFilter {
                pending_only: true,
                ..Default::default()
            })
        })
        .unwrap();
    assert!(pending.is_empty(), "both enrolled: {pending:?}");
    assert_eq!(s.activities("abm.enroll").len(), 2);

    // Erased and set up again: the same Mac enrolls over its old channel from Setup Assistant
    // and is held, then released, again.
    staff.set_awaiting_configuration(true);
    let info = apple
        .machine_info(&staff.udid, &staff.serial, "Mac14,2", "15.1")
        .unwrap();
    let (status, profile) = staff.fetch_dep_profile(&url, &info, true).await.unwrap();
    assert_eq!(status, 200);
    staff.enroll(&profile).await.unwrap();
    crate::reconcile::wait_for(30, "DeviceConfigured after the erase", || {
        !staff.awaiting_configuration()
    })
    .await;
    assert_eq!(s.activities("device.released").len(), 3);

    // Refused: a serial ABM did not assign here; a MachineInfo signed under another CA;
    // garbage; a huge body.
    let stranger = SimDevice::new(3, "15.1", IdentityMode::Signature, s.http(), &[]).unwrap();
    let info = apple
        .machine_info(&stranger.udid, &stranger.serial, "Mac14,2", "15.1")
        .unwrap();
    let (status, _) = stranger.fetch_dep_profile(&url, &info, true).await.unwrap();
    assert_eq!(status, 403);
    let refused = s.activities("abm.enroll_refused");
    assert_eq!(refused.len(), 1);
    assert!(refused[0].summary.contains(&stranger.serial));
    let other = FakeApple::new().unwrap();
    abm_devices(&s, &[&stranger.serial], "Staff", None);
    let forged = other
        .machine_info(&stranger.udid, &stranger.serial, "Mac14,2", "15.1")
        .unwrap();
    let (status, body) = stranger
        .fetch_dep_profile(&url, &forged, true)
        .await
        .unwrap();
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    let (status, _) = stranger
        .fetch_dep_profile(&url, b"not a signature", true)
        .await
        .unwrap();
    assert_eq!(status, 400);
    let (status, _) = stranger
        .fetch_dep_profile(&url, &vec![0x30; 200_000], true)
        .await
        .unwrap();
    assert_eq!(status, 413);
    assert!(
        s.store
            .read(|tx| tx.device(&stranger.udid))
            .unwrap()
            .is_none(),
        "nothing enrolled"
    );
    waker.abort();
    s.stop().await;
}

/// A Mac whose profiles never verify is released when the wait runs out, and reported; an ABM
/// migration (the record carries a deadline and the Mac is not in Setup Assistant) is recorded
/// as one, while a Mac in Setup Assistant with a deadline is set up as a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mac_is_released_when_the_wait_runs_out_and_abm_migrations_are_told_apart() {
    use mdmctl::sim::apple::FakeApple;
    use mdmctl::sim::device::{Fleet, IdentityMode, SimDevice};
    let apple = FakeApple::new().unwrap();
    let s = crate::harness::Server::start(crate::harness::Options {
        machine_info_ca: Some(apple.device_ca_cert.clone()),
        scep_challenge: None,
        release_after: Some(Duration::from_secs(2)),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    crate::reconcile::apply(
        s.store.as_ref(),
        dir.path(),
        &crate::reconcile::global(&["com.example.broken"]),
        &["com.example.broken"],
    );
    let stuck =
        Arc::new(SimDevice::new(1, "15.1", IdentityMode::Signature, s.http(), &[]).unwrap());
    stuck.fail_install("com.example.broken");
    let migrating =
        Arc::new(SimDevice::new(2, "26.1", IdentityMode::Signature, s.http(), &[]).unwrap());
    let fresh =
        Arc::new(SimDevice::new(3, "26.1", IdentityMode::Signature, s.http(), &[]).unwrap());
    s.store
        .write(|tx| {
            let d = |serial: &str, deadline: Option<&str>| mdmctl::store::AbmDevice {
                serial: serial.into(),
                migration_deadline: deadline.map(str::to_string),
                ..Default::default()
            };
            tx.put_abm_devices(
                &[
                    d(&stuck.serial, None),
                    d(&migrating.serial, Some("2026-12-20T00:00:00Z")),
                    d(&fresh.serial, Some("2026-12-20T00:00:00Z")),
                ],
                None,
            )
        })
        .unwrap();
    let waker = Fleet::new([stuck.clone(), migrating.clone(), fresh.clone()])
        .wake_on_push(s.apns.subscribe());
    let url = format!("{}/api/mdm/apple/enroll", s.url);
    for (mac, awaiting) in [(&stuck, true), (&migrating, false), (&fresh, true)] {
        mac.set_awaiting_configuration(awaiting);
        let info = apple
            .machine_info(&mac.udid, &mac.serial, "Mac15,3", &mac.os_version)
            .unwrap();
        let (status, profile) = mac.fetch_dep_profile(&url, &info, false).await.unwrap();
        assert_eq!(status, 200);
        mac.enroll(&profile).await.unwrap();
    }
    crate::reconcile::wait_for(30, "the stuck Mac released", || {
        !stuck.awaiting_configuration()
    })
    .await;
    let incomplete = s.activities("device.released_incomplete");
    assert_eq!(incomplete.len(), 1, "{incomplete:?}");
    assert!(
        incomplete[0].summary.contains("com.example.broken"),
        "{incomplete:?}"
    );
    let migrated = s.activities("abm.migrated");
    assert_eq!(migrated.len(), 1, "{migrated:?}");
    assert_eq!(
        migrated[0].device_id.as_deref(),
        Some(migrating.udid.as_str())
    );
    let setup = s.activities("abm.setup");
    assert_eq!(setup.len(), 1, "{setup:?}");
    assert_eq!(setup[0].device_id.as_deref(), Some(fresh.udid.as_str()));
    crate::reconcile::wait_for(30, "the new Mac released", || {
        !fresh.awaiting_configuration()
    })
    .await;
    waker.abort();
    s.stop().await;
}
