//! `mdmctl get mdm-apple` and `get mdm-apple-bm`: what admins check before and after cutover.

use mdmctl::secrets::FixedPassphrase;
use mdmctl::store::{self, AssetKind, AssetState, Location, NewAsset};
use zeroize::Zeroizing;

use crate::common::{PASSPHRASE, TestContext, topic};

fn setup(t: &TestContext, days: i64) {
    t.init();
    t.run(&[
        "generate",
        "mdm-apple",
        "--email",
        "it@example.com",
        "--org",
        "Acme",
    ])
    .success();
    t.apple_signs("mdm-apple-apns.csr", &topic(1), days, "push.pem");
}

#[test]
fn shows_topic_serial_issuer_expiry_and_cas() {
    let t = TestContext::new();
    setup(&t, 200);
    t.run(&["set", "mdm-apple", "--apns-cert", "push.pem"])
        .success();
    let table = t.run(&["get", "mdm-apple"]);
    table
        .success()
        .stdout_has(&topic(1))
        .stdout_has("renew by")
        .stdout_has("days left")
        .stdout_has("Test Apple Application Integration CA")
        .stdout_has("Acme MDM SCEP CA")
        .stdout_has("active");
    assert!(
        table.stderr.is_empty(),
        "no warning for a certificate with 200 days left: {}",
        table.stderr
    );
    let serial = t
        .openssl(&["x509", "-in", "push.pem", "-noout", "-serial"])
        .stdout;
    let j = t
        .run(&["--format", "json", "get", "mdm-apple"])
        .success()
        .json();
    assert_eq!(
        j["apns"]["serial"].as_str().unwrap().to_ascii_uppercase(),
        serial
            .trim()
            .trim_start_matches("serial=")
            .trim_start_matches('0')
    );
    assert!((199..=200).contains(&j["apns"]["days_left"].as_i64().unwrap()));
    assert_eq!(j["apns"]["expired"], false);
    assert_eq!(j["scep_cas"][0]["state"], "active");
}

#[test]
fn warns_under_thirty_days() {
    let t = TestContext::new();
    setup(&t, 12);
    t.run(&["set", "mdm-apple", "--apns-cert", "push.pem"])
        .success()
        .stderr_has("expires in");
    t.run(&["get", "mdm-apple"])
        .success()
        .stderr_has("warning:")
        .stderr_has("Renew (not Create)");
}

#[test]
fn an_expired_certificate_is_an_error_that_says_how_to_renew() {
    let t = TestContext::new();
    setup(&t, 365);
    // The certificate expired while in use: put an expired one in place underneath mdmctl.
    t.apple_signs("mdm-apple-apns.csr", &topic(1), -1, "expired.pem");
    let pem = String::from_utf8(t.read("expired.pem")).unwrap();
    let s = store::open(
        &Location::Sqlite(t.db()),
        Box::new(FixedPassphrase(Zeroizing::new(PASSPHRASE.into()))),
    )
    .unwrap();
    s.write(|tx| {
        let mut a = NewAsset::new(AssetKind::Apns, AssetState::Active, "set");
        a.cert_pem = Some(pem.clone());
        a.topic = Some(topic(1));
        a.sha256 = Some("ee".repeat(32));
        tx.insert_asset(&a)
    })
    .unwrap();
    let r = t.run(&["get", "mdm-apple"]);
    r.user_error()
        .stderr_has("expired on")
        .stderr_has("same Apple ID")
        .stderr_has("Renew (not Create)");
    r.stdout_has(&topic(1));
    let j = t.run(&["--format", "json", "get", "mdm-apple"]);
    assert_eq!(j.code, 1);
    assert_eq!(j.json()["apns"]["expired"], true);
}

#[test]
fn no_push_certificate_yet() {
    let t = TestContext::new();
    setup(&t, 365);
    t.run(&["get", "mdm-apple"])
        .user_error()
        .stdout_has("waiting for Apple's certificate")
        .stderr_has("no APNs push certificate");
}

#[test]
fn abm_pending_then_active() {
    let t = TestContext::new();
    t.init();
    t.run(&["get", "mdm-apple-bm"])
        .user_error()
        .stderr_has("generate mdm-apple-bm");
    t.run(&["generate", "mdm-apple-bm"]).success();
    t.run(&["get", "mdm-apple-bm"])
        .user_error()
        .stdout_has("pending")
        .stderr_has("set mdm-apple-bm --token");
}

/// `mdmctl … --format json | head -c 10`: a reader that stops early is not an error (exit 0,
/// nothing on stderr), for JSON as for tables.
#[test]
fn output_cut_short_by_its_reader_is_not_an_error() {
    use std::process::Stdio;
    let t = TestContext::new();
    setup(&t, 200);
    for args in [
        &["--format", "json", "get", "mdm-apple"][..],
        &["get", "mdm-apple"][..],
    ] {
        let mut child = t
            .mdmctl()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mdmctl runs");
        // The reader goes away before reading anything.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("mdmctl ends");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
        assert!(!stderr.contains("error"), "{args:?}: {stderr}");
    }
}
