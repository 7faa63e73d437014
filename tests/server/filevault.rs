//! FileVault with key escrow: the profile goes out, SecurityInfo brings the recovery key
//! (encrypted by `openssl cms -encrypt` to the escrow certificate the profile carries), and
//! `get disk-encryption-key` shows it, locally and through the API, each viewing recorded.

use std::process::Command;

use mdmctl::apple::profile::FILEVAULT_ID;
use mdmctl::sim::device::SimDevice;
use mdmctl::store::{FdeState, ProfileState, Store};

use crate::harness::{Ca, Options, Server};
use crate::reconcile::{apply, fleet, status, wait_for};

const FILEVAULT_ON: &str = "apiVersion: v1\nkind: config\nspec:\n  mdm:\n    macos_settings:\n      enable_disk_encryption: true\n";

fn fde(store: &dyn Store, udid: &str) -> Option<(FdeState, Option<String>)> {
    store
        .read(|tx| tx.disk_encryption(udid))
        .unwrap()
        .map(|r| (r.status, r.reason))
}

/// `openssl cms -encrypt` of `key` to the certificate `cert_der`, DER out, as macOS escrows it.
fn openssl_encrypt(dir: &std::path::Path, cert_der: &[u8], key: &str) -> Vec<u8> {
    let cert = dir.join("escrow.der");
    let input = dir.join("key.txt");
    let out = dir.join("key.cms");
    std::fs::write(&cert, cert_der).unwrap();
    std::fs::write(&input, key).unwrap();
    let pem = dir.join("escrow.pem");
    let conv = Command::new("openssl")
        .args(["x509", "-inform", "DER", "-in"])
        .arg(&cert)
        .arg("-out")
        .arg(&pem)
        .status()
        .unwrap();
    assert!(conv.success());
    let run = Command::new("openssl")
        .args([
            "cms", "-encrypt", "-binary", "-aes256", "-outform", "DER", "-in",
        ])
        .arg(&input)
        .arg("-out")
        .arg(&out)
        .arg(&pem)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::read(&out).unwrap()
}

async fn mdmctl(s: &Server, token: Option<&str>, args: &[&str]) -> crate::common::Run {
    crate::api::mdmctl(s, token, args).await
}

async fn wait_state(s: &Server, mac: &SimDevice, want: FdeState) {
    wait_for(15, &format!("FileVault {want:?}"), || {
        fde(s.store.as_ref(), &mac.udid).map(|f| f.0) == Some(want)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recovery_key_is_escrowed_and_every_viewing_is_recorded() {
    let s = Server::start(Options::default()).await;
    let (macs, waker) = fleet(&s, 1).await;
    let mac = &macs[0];
    apply(s.store.as_ref(), s.dir.path(), FILEVAULT_ON, &[]);

    // The profile is installed and verified; FileVault waits for the user to log out.
    wait_for(15, "FileVault profile verified", || {
        status(s.store.as_ref(), &mac.udid, FILEVAULT_ID) == Some(ProfileState::Verified)
    })
    .await;
    wait_state(&s, mac, FdeState::ActionRequired).await;
    let (_, reason) = fde(s.store.as_ref(), &mac.udid).unwrap();
    assert!(reason.unwrap().contains("logs out"));
    let early = mdmctl(
        &s,
        None,
        &["get", "disk-encryption-key", "--udid", &mac.udid],
    )
    .await;
    assert_ne!(early.code, 0);
    assert!(early.stderr.contains("action required"), "{}", early.stderr);
    assert!(early.stdout.is_empty());

    // The user logs out: FileVault turns on and macOS escrows the key to the profile's
    // certificate (made here by the openssl command line).
    let key = "K7QD-2P4M-X9WT-8HJR-3NBV-6CZF";
    let cert = mac
        .escrow_certificate()
        .expect("the FileVault profile carries the escrow certificate");
    mac.set_fde_recovery_key_cms(openssl_encrypt(s.dir.path(), &cert, key));
    wait_state(&s, mac, FdeState::Verified).await;

    let shown = mdmctl(
        &s,
        None,
        &["get", "disk-encryption-key", "--udid", &mac.udid],
    )
    .await;
    shown.success();
    assert_eq!(shown.stdout.trim(), key);
    assert!(shown.stderr.contains("recorded"));
    let by_serial = mdmctl(
        &s,
        None,
        &[
            "--format",
            "json",
            "get",
            "disk-encryption-key",
            "--serial",
            &mac.serial,
        ],
    )
    .await;
    by_serial.success();
    assert_eq!(by_serial.json()["key"], key);
    assert_eq!(by_serial.json()["device_id"], mac.udid.as_str());

    let summary = mdmctl(&s, None, &["get", "profile-status"]).await;
    summary.success().stdout_has("FileVault: 1 verified");

    let device = mdmctl(&s, None, &["get", "device", &mac.udid]).await;
    device
        .success()
        .stdout_has("Disk encryption: verified (key escrowed)");
    assert!(!device.stdout.contains(key));

    // Through the API, as the token's name.
    let token = crate::api::token(&s, "helpdesk").await;
    let remote = mdmctl(
        &s,
        Some(&token),
        &["get", "disk-encryption-key", "--udid", &mac.udid],
    )
    .await;
    remote.success();
    assert_eq!(remote.stdout.trim(), key);
    let counts = mdmctl(
        &s,
        Some(&token),
        &["--format", "json", "get", "profile-status"],
    )
    .await;
    counts.success();
    assert_eq!(counts.json()["disk_encryption"]["verified"], 1);
    assert_eq!(counts.json()["verified"], 1, "the FileVault profile itself");
    let unknown = mdmctl(
        &s,
        Some(&token),
        &["get", "disk-encryption-key", "--udid", "NOPE"],
    )
    .await;
    assert_ne!(unknown.code, 0);
    assert!(
        unknown.stderr.contains("no device `NOPE`"),
        "{}",
        unknown.stderr
    );

    // Who viewed which device's key, and when: three viewings, none printing the key.
    let entries = crate::api::activities(&s, "filevault.key_viewed").await;
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert!(entries.iter().all(|e| e["device_id"] == mac.udid.as_str()));
    assert!(entries.iter().any(|e| e["actor"] == "api:helpdesk"));
    assert!(
        entries
            .iter()
            .any(|e| e["actor"].as_str().unwrap().starts_with("tester"))
    );
    assert!(!serde_json::to_string(&entries).unwrap().contains(key));

    // The key is sealed at rest.
    let db = std::fs::read(s.dir.path().join("mdmctl.db")).unwrap();
    assert!(!db.windows(key.len()).any(|w| w == key.as_bytes()));
    waker.abort();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_escrowed_to_the_old_mdm_decrypt_with_its_imported_ca_and_unreadable_ones_are_rotated()
{
    let s = Server::start(Options::default()).await;
    let old = Ca::new("Old MDM SCEP CA");
    s.trust_old_ca(&old);
    let (macs, waker) = fleet(&s, 3).await;
    let (migrated, rotated, early) = (&macs[0], &macs[1], &macs[2]);

    // Under the old MDM (which escrowed to its CA, as Fleet does) FileVault is already on.
    let old_key = "OLDK-EYAA-BBBB-CCCC-DDDD-EEEE";
    migrated.set_fde_recovery_key_cms(openssl_encrypt(
        s.dir.path(),
        &old.cert.to_der().unwrap(),
        old_key,
    ));
    // FileVault turned on with no escrow at all: nothing mdmctl can read.
    early
        .turn_on_filevault("NOES-CROW-EVER-MADE-AAAA-BBBB")
        .unwrap();

    apply(s.store.as_ref(), s.dir.path(), FILEVAULT_ON, &[]);
    wait_state(&s, migrated, FdeState::Verified).await;
    let shown = mdmctl(
        &s,
        None,
        &["get", "disk-encryption-key", "--udid", &migrated.udid],
    )
    .await;
    shown.success();
    assert_eq!(shown.stdout.trim(), old_key);

    wait_state(&s, early, FdeState::ActionRequired).await;
    let reason = fde(s.store.as_ref(), &early.udid).unwrap().1.unwrap();
    assert!(reason.contains("fdesetup changerecovery"), "{reason}");

    // A Mac whose key mdmctl escrowed ...
    wait_state(&s, rotated, FdeState::ActionRequired).await;
    rotated
        .turn_on_filevault("FRST-KEYA-AAAA-BBBB-CCCC-DDDD")
        .unwrap();
    wait_state(&s, rotated, FdeState::Verified).await;
    // ... later escrows to a certificate nobody here holds: mdmctl rotates the key, unlocking
    // with the one it holds, and the new key comes back readable.
    let stranger = Ca::new("Someone else");
    rotated.set_fde_recovery_key_cms(openssl_encrypt(
        s.dir.path(),
        &stranger.cert.to_der().unwrap(),
        "FRST-KEYA-AAAA-BBBB-CCCC-DDDD",
    ));
    // An admin asks (through the running server, which pushes).
    let token = crate::api::token(&s, "ops").await;
    mdmctl(
        &s,
        Some(&token),
        &["mdm", "security-info", "--udid", &rotated.udid],
    )
    .await
    .success();
    wait_for(15, "the rotated key escrowed", || {
        rotated.fde_recovery_key().as_deref() != Some("FRST-KEYA-AAAA-BBBB-CCCC-DDDD")
            && fde(s.store.as_ref(), &rotated.udid).map(|f| f.0) == Some(FdeState::Verified)
    })
    .await;
    assert!(
        rotated
            .handled()
            .iter()
            .any(|h| h.request_type == "RotateFileVaultKey" && h.status == "Acknowledged")
    );
    let now = mdmctl(
        &s,
        None,
        &["get", "disk-encryption-key", "--udid", &rotated.udid],
    )
    .await;
    now.success();
    assert_eq!(
        Some(now.stdout.trim().to_string()),
        rotated.fde_recovery_key()
    );
    waker.abort();
    s.stop().await;
}
