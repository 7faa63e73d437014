//! macOS update enforcement: a Mac on macOS 13 below the minimum gets the Nudge profile, a
//! macOS 15 Mac below it gets the software-update declaration over DDM and reports its status,
//! an up-to-date Mac gets neither; ScheduleOSUpdate and AvailableOSUpdates through the API.

use mdmctl::apple::profile::{NUDGE_ID, SOFTWARE_UPDATE_ID};
use mdmctl::reconcile::declarations::ACTIVATION_ID;
use mdmctl::sim::device::{Fleet, IdentityMode, SimDevice};
use mdmctl::store::{ProfileState, Store};

use crate::harness::{Options, Server};
use crate::reconcile::{apply, handled, status, wait_for};

fn updates(minimum: &str) -> String {
    format!(
        "apiVersion: v1\nkind: config\nspec:\n  mdm:\n    macos_updates:\n      minimum_version: \"{minimum}\"\n      deadline: \"2026-12-31\"\n"
    )
}

/// The status the server recorded for a declaration: (active, valid, server token).
fn reported(
    store: &dyn Store,
    udid: &str,
    id: &str,
) -> Option<(Option<bool>, Option<String>, Option<String>)> {
    store
        .read(|tx| tx.declaration_statuses(udid))
        .unwrap()
        .into_iter()
        .find(|d| d.identifier == id)
        .map(|d| (d.active, d.valid, d.server_token))
}

fn held_token(mac: &SimDevice, id: &str) -> Option<String> {
    mac.declarations()
        .into_iter()
        .find(|d| d.identifier == id)
        .map(|d| d.server_token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_macs_get_nudge_new_ones_the_declaration_and_current_ones_nothing() {
    let s = Server::start(Options::default()).await;
    let old = s.enroll_os(1, "13.6.1", IdentityMode::Signature).await;
    let new = s.enroll_os(2, "15.1", IdentityMode::Signature).await;
    let current = s.enroll_os(3, "15.2", IdentityMode::Signature).await;
    let waker =
        Fleet::new([old.clone(), new.clone(), current.clone()]).wake_on_push(s.apns.subscribe());

    apply(s.store.as_ref(), s.dir.path(), &updates("15.2"), &[]);
    wait_for(15, "Nudge verified on the macOS 13 Mac", || {
        status(s.store.as_ref(), &old.udid, NUDGE_ID) == Some(ProfileState::Verified)
    })
    .await;
    wait_for(15, "the declaration active on the macOS 15 Mac", || {
        reported(s.store.as_ref(), &new.udid, SOFTWARE_UPDATE_ID)
            .is_some_and(|r| r.0 == Some(true) && r.1.as_deref() == Some("valid"))
    })
    .await;
    let first_token = held_token(&new, SOFTWARE_UPDATE_ID).unwrap();
    assert_eq!(
        reported(s.store.as_ref(), &new.udid, SOFTWARE_UPDATE_ID)
            .unwrap()
            .2,
        Some(first_token.clone())
    );
    assert!(
        reported(s.store.as_ref(), &new.udid, ACTIVATION_ID).is_some_and(|r| r.0 == Some(true))
    );
    let decl = new
        .declarations()
        .into_iter()
        .find(|d| d.identifier == SOFTWARE_UPDATE_ID)
        .unwrap();
    assert_eq!(
        decl.declaration_type,
        "com.apple.configuration.softwareupdate.enforcement.specific"
    );
    assert_eq!(decl.payload["TargetOSVersion"], "15.2");

    // Each Mac got only its tool; the up-to-date one got nothing to enforce.
    assert!(!new.profiles().iter().any(|p| p.identifier == NUDGE_ID));
    assert!(old.declarations().is_empty());
    assert_eq!(handled(&old, "DeclarativeManagement"), 0);
    assert!(!current.profiles().iter().any(|p| p.identifier == NUDGE_ID));
    assert_eq!(handled(&current, "DeclarativeManagement"), 0);
    assert!(current.declarations().is_empty());

    // A new minimum: the macOS 15 Mac syncs the changed declaration (new ServerToken) and
    // reports it; Nudge on the old Mac is replaced in place.
    apply(s.store.as_ref(), s.dir.path(), &updates("15.3"), &[]);
    wait_for(15, "the new declaration reported", || {
        held_token(&new, SOFTWARE_UPDATE_ID).is_some_and(|t| t != first_token)
            && reported(s.store.as_ref(), &new.udid, SOFTWARE_UPDATE_ID)
                .unwrap()
                .2
                == held_token(&new, SOFTWARE_UPDATE_ID)
    })
    .await;
    assert_eq!(handled(&new, "DeclarativeManagement"), 2);
    wait_for(15, "the 15.2 Mac now gets the declaration too", || {
        reported(s.store.as_ref(), &current.udid, SOFTWARE_UPDATE_ID)
            .is_some_and(|r| r.0 == Some(true))
    })
    .await;

    // What an admin sees.
    let shown = crate::api::mdmctl(&s, None, &["get", "device", &new.udid]).await;
    shown
        .success()
        .stdout_has(&format!("{SOFTWARE_UPDATE_ID}  active"));
    waker.abort();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_os_update_and_available_updates_through_the_api() {
    let s = Server::start(Options::default()).await;
    let mac = s.enroll_os(1, "15.1", IdentityMode::Signature).await;
    let waker = Fleet::new([mac.clone()]).wake_on_push(s.apns.subscribe());
    let token = crate::api::token(&s, "ops").await;

    crate::api::mdmctl(
        &s,
        Some(&token),
        &["mdm", "available-os-updates", "--udid", &mac.udid],
    )
    .await
    .success();
    crate::api::mdmctl(
        &s,
        Some(&token),
        &[
            "mdm",
            "schedule-os-update",
            "--udid",
            &mac.udid,
            "--version",
            "15.2",
            "--action",
            "InstallASAP",
        ],
    )
    .await
    .success();
    wait_for(15, "both commands answered", || {
        handled(&mac, "AvailableOSUpdates") == 1 && handled(&mac, "ScheduleOSUpdate") == 1
    })
    .await;
    let shown = crate::api::mdmctl(
        &s,
        Some(&token),
        &["--format", "json", "get", "device", &mac.udid],
    )
    .await;
    shown.success();
    let j = shown.json();
    let ups = j["available_os_updates"]["updates"].as_array().unwrap();
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0]["version"], "15.2");
    assert_eq!(ups[0]["restart_required"], true);
    let text = crate::api::mdmctl(&s, Some(&token), &["get", "device", &mac.udid]).await;
    text.success()
        .stdout_has("macOS 15.2  15.2  MSU_UPDATE_15.2_patch  restart");
    waker.abort();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_os_version_is_corrected_by_the_daily_device_information() {
    let s = Server::start(Options::default()).await;
    let mac = s.enroll_os(1, "15.1", IdentityMode::Signature).await;
    // The record says macOS 13 (as an old MDM's import might): the Mac gets Nudge at first.
    let mut d = s.store.read(|tx| tx.device(&mac.udid)).unwrap().unwrap();
    d.os_version = Some("13.6.1".into());
    s.store.write(|tx| tx.put_device(&d)).unwrap();
    let waker = Fleet::new([mac.clone()]).wake_on_push(s.apns.subscribe());

    apply(s.store.as_ref(), s.dir.path(), &updates("15.2"), &[]);
    // The periodic DeviceInformation (every second here, daily by default) reports 15.1: Nudge
    // goes, the declaration comes.
    wait_for(15, "the declaration active and Nudge gone", || {
        reported(s.store.as_ref(), &mac.udid, SOFTWARE_UPDATE_ID).is_some_and(|r| r.0 == Some(true))
            && !mac.profiles().iter().any(|p| p.identifier == NUDGE_ID)
    })
    .await;
    let d = s.store.read(|tx| tx.device(&mac.udid)).unwrap().unwrap();
    assert_eq!(d.os_version.as_deref(), Some("15.1"));
    assert!(handled(&mac, "DeviceInformation") >= 1);
    assert!(
        mac.handled()
            .iter()
            .any(|h| h.request_type == "RemoveProfile"),
        "Nudge was removed"
    );
    waker.abort();
    s.stop().await;
}
