//! Profile delivery: `apply` → InstallProfile on simulated Macs → verified by ProfileList;
//! removal, profiles the old MDM installed left alone, team transfers, failed installs retried.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mdmctl::gitops;
use mdmctl::sim::device::{Fleet, IdentityMode, SimDevice};
use mdmctl::store::{DeviceProfile, ProfileState, Store};

use crate::harness::{Options, Server};

/// Write `yaml` (and the profiles it names, `profiles/<id>.mobileconfig`) and apply it as
/// `mdmctl apply -f` does.
pub(crate) fn apply(store: &dyn Store, dir: &Path, yaml: &str, profiles: &[&str]) {
    std::fs::create_dir_all(dir.join("profiles")).unwrap();
    for id in profiles {
        std::fs::write(
            dir.join(format!("profiles/{id}.mobileconfig")),
            crate::common::wifi(id, &format!("Profile {id}"), id),
        )
        .unwrap();
    }
    let file = dir.join("fleet.yml");
    std::fs::write(&file, yaml).unwrap();
    let loaded = gitops::load(std::slice::from_ref(&file), &Default::default(), &|_| None);
    assert!(loaded.issues.is_empty(), "{:?}", loaded.issues);
    gitops::run(store, loaded, false, "test").unwrap();
}

pub(crate) fn global(ids: &[&str]) -> String {
    let list: Vec<String> = ids
        .iter()
        .map(|id| format!("        - path: profiles/{id}.mobileconfig\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: config\nspec:\n  mdm:\n    macos_settings:\n      custom_settings:\n{}",
        list.concat()
    )
}

fn rows(store: &dyn Store, udid: &str) -> Vec<DeviceProfile> {
    store.read(|tx| tx.device_profiles(udid)).unwrap()
}

pub(crate) fn status(store: &dyn Store, udid: &str, id: &str) -> Option<ProfileState> {
    rows(store, udid)
        .into_iter()
        .find(|r| r.identifier == id)
        .map(|r| r.status)
}

/// `mdmctl ARGS` on the server's store (or through its API, with a token), as an admin runs it.
async fn mdmctl(s: &Server, token: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let run = crate::api::mdmctl(s, token, args).await;
    (run.code == 0, run.stdout, run.stderr)
}

/// How many commands of a type the Mac has answered.
pub(crate) fn handled(mac: &SimDevice, request: &str) -> usize {
    mac.handled()
        .iter()
        .filter(|h| h.request_type == request)
        .count()
}

fn installed(mac: &SimDevice) -> Vec<String> {
    mac.profiles().into_iter().map(|p| p.identifier).collect()
}

pub(crate) async fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < until {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not reached within {secs} s");
}

pub(crate) async fn fleet(
    s: &Server,
    n: usize,
) -> (Vec<Arc<SimDevice>>, tokio::task::JoinHandle<()>) {
    let mut macs = Vec::new();
    for i in 0..n {
        macs.push(s.enroll(i + 1, IdentityMode::Signature).await);
    }
    let waker = Fleet::new(macs.clone()).wake_on_push(s.apns.subscribe());
    (macs, waker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_profiles_are_installed_verified_and_removed_but_the_old_mdms_are_left_alone() {
    let s = Server::start(Options::default()).await;
    let (macs, waker) = fleet(&s, 2).await;
    macs[0].preinstall("com.oldmdm.wifi", "Old MDM Wi-Fi");

    apply(
        s.store.as_ref(),
        s.dir.path(),
        &global(&["com.example.wifi", "com.example.vpn"]),
        &["com.example.wifi", "com.example.vpn"],
    );
    for mac in &macs {
        wait_for(10, "both profiles verified", || {
            ["com.example.wifi", "com.example.vpn"]
                .iter()
                .all(|id| status(s.store.as_ref(), &mac.udid, id) == Some(ProfileState::Verified))
        })
        .await;
        let on_mac = installed(mac);
        assert!(on_mac.contains(&"com.example.wifi".to_string()));
        assert!(on_mac.contains(&"com.example.vpn".to_string()));
    }
    // The device reports the profile with the UUID mdmctl sent.
    let wifi = rows(s.store.as_ref(), &macs[0].udid)
        .into_iter()
        .find(|r| r.identifier == "com.example.wifi")
        .unwrap();
    assert_eq!(wifi.payload_uuid.as_deref(), Some("com.example.wifi-uuid"));
    assert!(wifi.ours);
    // The old MDM's profile is listed as unmanaged, not ours.
    let old = rows(s.store.as_ref(), &macs[0].udid)
        .into_iter()
        .find(|r| r.identifier == "com.oldmdm.wifi")
        .expect("the old MDM's profile is listed");
    assert_eq!(old.status, ProfileState::Unmanaged);
    assert!(!old.ours);
    assert_eq!(old.name.as_deref(), Some("Old MDM Wi-Fi"));

    // What the admin sees: per device, in the device view, and summed up.
    let (ok, out, err) = mdmctl(&s, None, &["get", "profiles", "--udid", &macs[0].udid]).await;
    assert!(ok, "{err}");
    let line = |id: &str| {
        out.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} missing in:\n{out}"))
            .to_string()
    };
    assert!(line("com.example.wifi").contains("verified"));
    assert!(line("com.example.wifi").contains("mdmctl"));
    assert!(line("com.oldmdm.wifi").contains("unmanaged"));
    let (ok, out, err) = mdmctl(
        &s,
        None,
        &[
            "--format",
            "json",
            "get",
            "profiles",
            "--udid",
            &macs[1].serial,
        ],
    )
    .await;
    assert!(ok, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let statuses: Vec<(&str, &str)> = j
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["identifier"].as_str().unwrap(),
                p["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("com.example.vpn", "verified"),
            ("com.example.wifi", "verified")
        ]
    );
    let (ok, out, err) = mdmctl(&s, None, &["get", "device", &macs[0].udid]).await;
    assert!(ok, "{err}");
    assert!(out.contains("Profiles:"), "{out}");
    assert!(out.contains("com.oldmdm.wifi (unmanaged)"), "{out}");
    let (ok, out, err) = mdmctl(&s, None, &["--format", "json", "get", "profile-status"]).await;
    assert!(ok, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (j["verified"].as_i64(), j["unmanaged"].as_i64()),
        (Some(4), Some(1))
    );
    assert_eq!(j["failed"], 0);
    let (ok, _, err) = mdmctl(&s, None, &["get", "profile-status", "--team", "Nope"]).await;
    assert!(!ok);
    assert!(
        err.contains("no team `Nope`") && err.contains("hint:"),
        "{err}"
    );

    // The same through the admin API.
    let (ok, token, err) = mdmctl(
        &s,
        None,
        &["token", "create", "--name", "ops", "--role", "observer"],
    )
    .await;
    assert!(ok, "{err}");
    let token = token.trim().to_string();
    let (ok, out, err) = mdmctl(
        &s,
        Some(&token),
        &[
            "--format",
            "json",
            "get",
            "profiles",
            "--udid",
            &macs[0].udid,
        ],
    )
    .await;
    assert!(ok, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j.as_array().unwrap().len(), 3);
    let (ok, out, err) = mdmctl(
        &s,
        Some(&token),
        &["--format", "json", "get", "profile-status"],
    )
    .await;
    assert!(ok, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["verified"], 4);
    let (ok, _, err) = mdmctl(
        &s,
        Some(&token),
        &["get", "profile-status", "--team", "Nope"],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("no team `Nope`"), "{err}");
    let (ok, _, err) = mdmctl(&s, Some(&token), &["get", "profiles", "--udid", "nobody"]).await;
    assert!(!ok);
    assert!(err.contains("no device `nobody`"), "{err}");

    // The VPN profile leaves the YAML: it leaves the Macs; the rest stays.
    apply(
        s.store.as_ref(),
        s.dir.path(),
        &global(&["com.example.wifi"]),
        &["com.example.wifi"],
    );
    for mac in &macs {
        wait_for(10, "the VPN profile removed", || {
            !installed(mac).contains(&"com.example.vpn".to_string())
                && status(s.store.as_ref(), &mac.udid, "com.example.vpn").is_none()
        })
        .await;
        assert!(installed(mac).contains(&"com.example.wifi".to_string()));
    }
    assert!(installed(&macs[0]).contains(&"com.oldmdm.wifi".to_string()));
    let removes = macs[0]
        .handled()
        .into_iter()
        .filter(|h| h.request_type == "RemoveProfile")
        .count();
    assert_eq!(removes, 1, "only the VPN profile is removed");

    waker.abort();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_transfer_swaps_the_teams_profiles() {
    let s = Server::start(Options::default()).await;
    let (macs, waker) = fleet(&s, 1).await;
    let mac = &macs[0];
    let yaml = "apiVersion: v1\nkind: team\nspec:\n  team:\n    name: Design\n    mdm:\n      macos_settings:\n        custom_settings: [profiles/com.example.design.mobileconfig]\n\
---\napiVersion: v1\nkind: team\nspec:\n  team:\n    name: Sales\n    mdm:\n      macos_settings:\n        custom_settings: [profiles/com.example.sales.mobileconfig]\n";
    apply(
        s.store.as_ref(),
        s.dir.path(),
        yaml,
        &["com.example.design", "com.example.sales"],
    );

    // An admin moves the Mac on the store (a second process beside `serve`)...
    let (ok, out, err) = mdmctl(
        &s,
        None,
        &["transfer", "--team", "Design", "--serial", &mac.serial],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("Moved 1 device(s) to Design."), "{out}");
    let (ok, _, err) = mdmctl(
        &s,
        None,
        &["transfer", "--team", "Nope", "--udid", &mac.udid],
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("no team `Nope`") && err.contains("hint:"),
        "{err}"
    );
    wait_for(10, "the Design profile verified", || {
        status(s.store.as_ref(), &mac.udid, "com.example.design") == Some(ProfileState::Verified)
    })
    .await;
    assert_eq!(installed(mac), vec!["com.example.design".to_string()]);

    // ... and then through the API.
    let token = crate::api::token(&s, "it").await;
    let (ok, out, err) = mdmctl(
        &s,
        Some(token.trim()),
        &[
            "--format", "json", "transfer", "--team", "Sales", "--udid", &mac.udid, "--udid",
            "GHOST",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["moved"][0], mac.udid.as_str());
    assert_eq!(j["unknown"][0], "GHOST");
    assert!(err.contains("no such devices: GHOST"), "{err}");
    wait_for(10, "the Sales profile verified, Design's removed", || {
        status(s.store.as_ref(), &mac.udid, "com.example.sales") == Some(ProfileState::Verified)
            && status(s.store.as_ref(), &mac.udid, "com.example.design").is_none()
    })
    .await;
    assert_eq!(installed(mac), vec!["com.example.sales".to_string()]);
    let log = crate::api::activities(&s, "device.team_transfer").await;
    let actors: Vec<&str> = log.iter().map(|e| e["actor"].as_str().unwrap()).collect();
    assert_eq!(actors.len(), 2, "{actors:?}");
    assert!(
        actors[0].starts_with("tester") && actors[1] == "api:it",
        "{actors:?}"
    );

    waker.abort();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_install_is_retried_then_marked_failed_with_apples_error() {
    let s = Server::start(Options::default()).await;
    let (macs, waker) = fleet(&s, 1).await;
    let mac = &macs[0];
    mac.fail_install("com.example.broken");

    apply(
        s.store.as_ref(),
        s.dir.path(),
        &global(&["com.example.broken", "com.example.wifi"]),
        &["com.example.broken", "com.example.wifi"],
    );
    wait_for(20, "the broken profile failed", || {
        status(s.store.as_ref(), &mac.udid, "com.example.broken") == Some(ProfileState::Failed)
    })
    .await;
    let row = rows(s.store.as_ref(), &mac.udid)
        .into_iter()
        .find(|r| r.identifier == "com.example.broken")
        .unwrap();
    // The first try and three retries (the harness's backoff has three steps).
    assert_eq!(row.attempts, 4);
    let chain = row
        .error_chain
        .expect("Apple's error chain kept")
        .to_string();
    assert!(chain.contains("MCInstallationErrorDomain"), "{chain}");
    let errors = mac
        .handled()
        .into_iter()
        .filter(|h| h.request_type == "InstallProfile" && h.status == "Error")
        .count();
    assert_eq!(errors, 4);
    // The other profile is unaffected.
    assert_eq!(
        status(s.store.as_ref(), &mac.udid, "com.example.wifi"),
        Some(ProfileState::Verified)
    );
    assert!(!installed(mac).contains(&"com.example.broken".to_string()));

    waker.abort();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_enrollment_and_a_migrated_macs_first_contact_get_the_profiles() {
    let s = Server::start(Options::default()).await;
    apply(
        s.store.as_ref(),
        s.dir.path(),
        &global(&["com.example.wifi"]),
        &["com.example.wifi"],
    );
    // Imported from the old MDM, with the old MDM's profile on it; not yet cut over.
    let old = crate::harness::Ca::new("Old CA");
    s.trust_old_ca(&old);
    let migrated = s.migrated(7, &old, IdentityMode::Signature);
    migrated.preinstall("com.oldmdm.restrictions", "Old MDM Restrictions");
    let fresh = s.enroll(1, IdentityMode::Signature).await;
    let waker = Fleet::new([migrated.clone(), fresh.clone()]).wake_on_push(s.apns.subscribe());

    // The new Mac gets the profile once it has enrolled.
    wait_for(10, "the new Mac's profile verified", || {
        status(s.store.as_ref(), &fresh.udid, "com.example.wifi") == Some(ProfileState::Verified)
    })
    .await;
    // The migrated Mac is left alone until it first contacts mdmctl.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(rows(s.store.as_ref(), &migrated.udid).is_empty());
    assert!(migrated.handled().is_empty());

    assert_eq!(migrated.session().await.unwrap(), 200);
    wait_for(10, "the migrated Mac's profile verified", || {
        status(s.store.as_ref(), &migrated.udid, "com.example.wifi") == Some(ProfileState::Verified)
    })
    .await;
    assert_eq!(
        status(s.store.as_ref(), &migrated.udid, "com.oldmdm.restrictions"),
        Some(ProfileState::Unmanaged)
    );
    assert_eq!(
        installed(&migrated),
        vec![
            "com.example.wifi".to_string(),
            "com.oldmdm.restrictions".to_string()
        ]
    );

    waker.abort();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_whose_profile_list_failed_is_verified_by_another_one_later() {
    let s = Server::start(Options::default()).await;
    let (macs, waker) = fleet(&s, 1).await;
    let mac = &macs[0];
    mac.error_once("ProfileList");
    apply(
        s.store.as_ref(),
        s.dir.path(),
        &global(&["com.example.wifi"]),
        &["com.example.wifi"],
    );
    wait_for(10, "installed, the ProfileList failed", || {
        installed(mac).contains(&"com.example.wifi".to_string())
            && mac
                .handled()
                .iter()
                .any(|h| h.request_type == "ProfileList" && h.status == "Error")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        status(s.store.as_ref(), &mac.udid, "com.example.wifi"),
        Some(ProfileState::Verifying),
        "nothing confirms it yet"
    );

    // Ten minutes later (the row's clock set back instead of waiting).
    let mut row = rows(s.store.as_ref(), &mac.udid).pop().unwrap();
    row.updated_at =
        mdmctl::timestamp::Timestamp(row.updated_at.0 - mdmctl::reconcile::VERIFY_AGAIN_AFTER - 1);
    s.store.write(|tx| tx.put_device_profile(&row)).unwrap();
    wait_for(10, "verified by a second ProfileList", || {
        status(s.store.as_ref(), &mac.udid, "com.example.wifi") == Some(ProfileState::Verified)
    })
    .await;
    let lists = mac
        .handled()
        .iter()
        .filter(|h| h.request_type == "ProfileList")
        .count();
    assert_eq!(lists, 2);
    assert_eq!(
        mac.handled()
            .iter()
            .filter(|h| h.request_type == "InstallProfile")
            .count(),
        1,
        "not installed again"
    );
    waker.abort();
    s.stop().await;
}
