//! `mdmctl set mdm-apple` and `set mdm-apple-bm`: the checks that keep a fleet reachable.

use mdmctl::secrets::FixedPassphrase;
use mdmctl::store::{self, Activity, ActivityQuery, DeviceRecord, EnrollmentRecord, Location};
use zeroize::Zeroizing;

use crate::common::{PASSPHRASE, TestContext, topic};

fn open(t: &TestContext) -> std::sync::Arc<dyn store::Store> {
    store::open(
        &Location::Sqlite(t.db()),
        Box::new(FixedPassphrase(Zeroizing::new(PASSPHRASE.into()))),
    )
    .unwrap()
}

fn activities(t: &TestContext) -> Vec<Activity> {
    open(t)
        .read(|tx| tx.activities(&ActivityQuery::default()))
        .unwrap()
}

/// What `get mdm-apple --format json` says, to compare before and after a refused change
/// (without `days_left`, which moves with the clock).
fn state(t: &TestContext) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("days_left");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut j = t.run(&["--format", "json", "get", "mdm-apple"]).json();
    strip(&mut j);
    j
}

/// A store with a generated push key and Apple's certificate for it installed.
fn installed(t: &TestContext, topic_n: u32) {
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
    t.apple_signs("mdm-apple-apns.csr", &topic(topic_n), 365, "push.pem");
    t.run(&["set", "mdm-apple", "--apns-cert", "push.pem"])
        .success()
        .stdout_has(&topic(topic_n));
}

#[test]
fn push_certificate_uses_the_key_kept_in_the_store() {
    let t = TestContext::new();
    installed(&t, 1);
    let s = state(&t);
    assert_eq!(s["apns"]["topic"], topic(1));
    assert_eq!(s["apns"]["expired"], false);
    assert_eq!(
        s["pending_csr_since"],
        serde_json::Value::Null,
        "the pending key was used"
    );
    let kinds: Vec<String> = activities(&t).into_iter().map(|a| a.kind).collect();
    assert!(kinds.contains(&"apns.set".to_string()), "{kinds:?}");
    // Setting it again changes nothing.
    t.run(&["set", "mdm-apple", "--apns-cert", "push.pem"])
        .success()
        .stdout_has("Already set");
}

#[test]
fn same_topic_renewal_is_accepted() {
    let t = TestContext::new();
    installed(&t, 1);
    let serial_before = state(&t)["apns"]["serial"].clone();
    // Renewal: a new CSR, and Apple's "Renew" keeps the topic.
    t.run(&[
        "generate",
        "mdm-apple",
        "--email",
        "it@example.com",
        "--org",
        "Acme",
        "--force",
    ])
    .success();
    t.apple_signs("mdm-apple-apns.csr", &topic(1), 365, "renewed.pem");
    t.run(&["set", "mdm-apple", "--apns-cert", "renewed.pem"])
        .success();
    let after = state(&t);
    assert_eq!(after["apns"]["topic"], topic(1));
    assert_ne!(after["apns"]["serial"], serial_before);
}

#[test]
fn a_different_topic_is_refused_without_force() {
    let t = TestContext::new();
    installed(&t, 1);
    t.apple_signs("mdm-apple-apns.csr", &topic(2), 365, "created.pem");
    let before = state(&t);
    let n_activities = activities(&t).len();
    t.run(&[
        "set",
        "mdm-apple",
        "--apns-cert",
        "created.pem",
        "--apns-key",
        "mdm-apple-apns.key",
    ])
    .user_error()
    .stderr_has(&topic(2))
    .stderr_has(&topic(1))
    .stderr_has("strands every enrolled device")
    .stderr_has("--force");
    assert_eq!(state(&t), before, "nothing changed");
    assert_eq!(activities(&t).len(), n_activities);

    // With --force it goes through, loudly, and the log says who did it.
    let r = t.run(&[
        "set",
        "mdm-apple",
        "--apns-cert",
        "created.pem",
        "--apns-key",
        "mdm-apple-apns.key",
        "--force",
    ]);
    r.success().stderr_has("warning:").stderr_has("re-enroll");
    assert_eq!(state(&t)["apns"]["topic"], topic(2));
    let log = activities(&t);
    let overridden = log
        .iter()
        .find(|a| a.kind == "apns.topic_override")
        .expect("override logged");
    assert!(overridden.actor.starts_with("tester@"));
    assert_eq!(overridden.details["new_topic"], topic(2));
}

#[test]
fn the_devices_topic_counts_even_before_a_certificate_is_stored() {
    let t = TestContext::new();
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
    // A device imported from the old MDM, on topic 7.
    open(&t)
        .write(|tx| {
            tx.put_device(&DeviceRecord {
                id: "UDID-1".into(),
                source: "imported:test".into(),
                ..Default::default()
            })?;
            tx.put_enrollment(&EnrollmentRecord {
                id: "UDID-1".into(),
                device_id: "UDID-1".into(),
                kind: "Device".into(),
                topic: topic(7),
                enabled: true,
                ..Default::default()
            })
        })
        .unwrap();
    t.apple_signs("mdm-apple-apns.csr", &topic(8), 365, "push.pem");
    t.run(&["set", "mdm-apple", "--apns-cert", "push.pem"])
        .user_error()
        .stderr_has("used by 1 enrollments");
    t.apple_signs("mdm-apple-apns.csr", &topic(7), 365, "right.pem");
    t.run(&["set", "mdm-apple", "--apns-cert", "right.pem"])
        .success();
}

#[test]
fn bad_push_certificates_are_refused_and_nothing_is_written() {
    let t = TestContext::new();
    installed(&t, 1);
    let before = state(&t);
    t.apple_signs("mdm-apple-apns.csr", &topic(1), -1, "expired.pem");
    t.write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    t.openssl(&["genrsa", "-out", "other.key", "2048"]);
    t.run(&["set", "mdm-apple", "--apns-cert", "expired.pem"])
        .user_error()
        .stderr_has("expired")
        .stderr_has("Renew");
    t.run(&["set", "mdm-apple", "--apns-cert", "garbage.pem"])
        .user_error()
        .stderr_has("garbage.pem")
        .stderr_has("not a certificate");
    t.run(&["set", "mdm-apple", "--apns-cert", "nope.pem"])
        .user_error()
        .stderr_has("nope.pem");
    t.run(&[
        "set",
        "mdm-apple",
        "--apns-cert",
        "push.pem",
        "--apns-key",
        "other.key",
        "--force",
    ])
    .user_error()
    .stderr_has("does not match");
    // The SCEP CA certificate is not a push certificate.
    t.run(&[
        "set",
        "mdm-apple",
        "--apns-cert",
        "mdm-apple-scep.crt",
        "--apns-key",
        "mdm-apple-scep.key",
    ])
    .user_error()
    .stderr_has("not an MDM push certificate");
    t.run_with(
        &["set", "mdm-apple", "--apns-cert", "push.pem", "--force"],
        |c| {
            c.env("MDMCTL_PASSPHRASE", "wrong passphrase!");
        },
    )
    .user_error()
    .stderr_has("wrong passphrase");
    t.run(&["set", "mdm-apple"])
        .user_error()
        .stderr_has("nothing to set");
    assert_eq!(state(&t), before);
}

#[test]
fn a_push_certificate_without_a_known_key_asks_for_it() {
    let t = TestContext::new();
    t.init();
    // The CSR was made elsewhere (no store): its key is only in a file.
    t.openssl(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "elsewhere.key",
        "-subj",
        "/O=Acme",
        "-out",
        "elsewhere.csr",
    ]);
    t.apple_signs("elsewhere.csr", &topic(3), 365, "push.pem");
    t.run(&["set", "mdm-apple", "--apns-cert", "push.pem"])
        .user_error()
        .stderr_has("--apns-key");
    t.run(&[
        "set",
        "mdm-apple",
        "--apns-cert",
        "push.pem",
        "--apns-key",
        "elsewhere.key",
    ])
    .success();
}

#[test]
fn old_scep_ca_is_added_next_to_the_generated_one() {
    let t = TestContext::new();
    installed(&t, 1);
    // The old MDM's CA, as micromdm/scep would have made it.
    t.openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "old-ca.key",
        "-out",
        "old-ca.crt",
        "-subj",
        "/CN=MICROMDM SCEP CA/O=MicroMDM/C=US",
        "-days",
        "1825",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    t.run(&[
        "set",
        "mdm-apple",
        "--scep-cert",
        "old-ca.crt",
        "--scep-key",
        "old-ca.key",
    ])
    .success()
    .stdout_has("MICROMDM SCEP CA");
    let cas = state(&t)["scep_cas"].as_array().unwrap().clone();
    assert_eq!(cas.len(), 2);
    assert_eq!(cas[0]["state"], "active");
    assert!(cas[0]["subject"].as_str().unwrap().contains("MICROMDM"));
    assert_eq!(
        cas[1]["state"], "trusted",
        "the earlier CA still vouches for its identities"
    );

    // A device certificate is not a CA; a key that does not match is refused.
    t.openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.crt",
        "-subj",
        "/CN=device",
        "-addext",
        "basicConstraints=CA:FALSE",
    ]);
    t.run(&[
        "set",
        "mdm-apple",
        "--scep-cert",
        "leaf.crt",
        "--scep-key",
        "leaf.key",
    ])
    .user_error()
    .stderr_has("not a CA");
    t.run(&[
        "set",
        "mdm-apple",
        "--scep-cert",
        "old-ca.crt",
        "--scep-key",
        "leaf.key",
    ])
    .user_error()
    .stderr_has("does not match");
    t.run(&["set", "mdm-apple", "--scep-cert", "old-ca.crt"])
        .user_error();
}

/// Apple's token: a MIME part with the JSON between BEGIN/END MESSAGE lines.
pub(crate) fn token_file(t: &TestContext, name: &str, expiry: &str) {
    let json = format!(
        r#"{{"consumer_key":"CK_3b8f","consumer_secret":"CS_secret","access_token":"AT_secret","access_secret":"AS_secret","access_token_expiry":"{expiry}"}}"#
    );
    t.write(
        name,
        format!("Content-Type: text/plain;charset=UTF-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n-----BEGIN MESSAGE-----\r\n{json}\r\n-----END MESSAGE-----\r\n"),
    );
}

/// The ABM stand-in for the token `token_file` writes (its runtime must outlive the test).
pub(crate) fn abm_stand_in() -> (tokio::runtime::Runtime, mdmctl::sim::abm::AbmStandIn) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let abm = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        mdmctl::sim::abm::AbmStandIn::start(
            l,
            mdmctl::assets::abm::ServerToken {
                consumer_key: "CK_3b8f".into(),
                consumer_secret: "CS_secret".into(),
                access_token: "AT_secret".into(),
                access_secret: "AS_secret".into(),
                access_token_expiry: "2027-12-01T10:00:00Z".into(),
            },
        )
        .await
        .unwrap()
    });
    (rt, abm)
}

#[test]
fn abm_token_encrypted_by_openssl_smime_is_accepted() {
    let t = TestContext::new();
    t.init();
    t.run(&["set", "mdm-apple-bm", "--token", "none.p7m"])
        .user_error()
        .stderr_has("none.p7m");
    t.write("x.p7m", "x");
    t.run(&["set", "mdm-apple-bm", "--token", "x.p7m"])
        .user_error()
        .stderr_has("generate mdm-apple-bm");
    t.run(&["generate", "mdm-apple-bm"]).success();
    token_file(&t, "token.txt", "2027-12-01T10:00:00Z");
    t.openssl(&[
        "smime",
        "-encrypt",
        "-aes256",
        "-in",
        "token.txt",
        "-out",
        "token.p7m",
        "mdm-apple-bm.crt",
    ]);
    t.run(&["set", "mdm-apple-bm", "--token", "token.p7m"])
        .success()
        .stdout_has("CK_3b8f");
    // The account as Apple's service shows it, from a stand-in that checks the OAuth signature
    // made with the token's secrets.
    let (_rt, abm) = abm_stand_in();
    let with_abm = |args: &[&str]| {
        t.run_with(args, |c| {
            c.env("MDMCTL_ABM_URL", abm.url());
        })
    };
    let j = with_abm(&["--format", "json", "get", "mdm-apple-bm"])
        .success()
        .json();
    assert_eq!(j["account"]["org_name"], "Example Inc (DEMO ABM)", "{j:#}");
    with_abm(&["get", "mdm-apple-bm"])
        .success()
        .stdout_has("Example Inc (DEMO ABM)")
        .stdout_has("accepted");
    abm.set_terms_not_signed(true);
    let r = with_abm(&["get", "mdm-apple-bm"]);
    r.success()
        .stderr_has("T_C_NOT_SIGNED")
        .stderr_has("accept the new terms");
    assert!(!r.stdout.contains("accepted"), "{}", r.stdout);
    assert_eq!(j["consumer_key"], "CK_3b8f");
    assert_eq!(j["access_token_expiry"], "2027-12-01T10:00:00Z");
    assert_eq!(j["state"], "active");
    let all = serde_json::to_string(&j).unwrap();
    assert!(!all.contains("AT_secret") && !all.contains("AS_secret") && !all.contains("CS_secret"));
    let bytes = crate::common::sqlite_bytes(&t.db());
    assert!(
        !crate::common::contains(&bytes, "AT_secret"),
        "the token is sealed at rest"
    );
}

#[test]
fn abm_token_for_another_key_or_malformed_is_refused() {
    let t = TestContext::new();
    t.init();
    t.run(&["generate", "mdm-apple-bm"]).success();
    t.openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "other.key",
        "-out",
        "other.crt",
        "-subj",
        "/CN=someone else",
    ]);
    token_file(&t, "token.txt", "2027-12-01T10:00:00Z");
    t.openssl(&[
        "smime",
        "-encrypt",
        "-aes256",
        "-in",
        "token.txt",
        "-out",
        "other.p7m",
        "other.crt",
    ]);
    t.run(&["set", "mdm-apple-bm", "--token", "other.p7m"])
        .user_error()
        .stderr_has("not encrypted to this store's Apple Business Manager certificate");
    t.write(
        "bad.txt",
        "-----BEGIN MESSAGE-----\n{\"consumer_key\":\"CK\"}\n-----END MESSAGE-----\n",
    );
    t.openssl(&[
        "smime",
        "-encrypt",
        "-aes256",
        "-in",
        "bad.txt",
        "-out",
        "bad.p7m",
        "mdm-apple-bm.crt",
    ]);
    t.run(&["set", "mdm-apple-bm", "--token", "bad.p7m"])
        .user_error()
        .stderr_has("not what Apple Business Manager issues");
    token_file(&t, "old.txt", "2020-01-01T00:00:00Z");
    t.openssl(&[
        "smime",
        "-encrypt",
        "-aes256",
        "-in",
        "old.txt",
        "-out",
        "old.p7m",
        "mdm-apple-bm.crt",
    ]);
    t.run(&["set", "mdm-apple-bm", "--token", "old.p7m"])
        .user_error()
        .stderr_has("expired");
    t.write("garbage.p7m", "this is not S/MIME");
    t.run(&["set", "mdm-apple-bm", "--token", "garbage.p7m"])
        .user_error()
        .stderr_has("garbage.p7m");
    t.run(&["get", "mdm-apple-bm"])
        .user_error()
        .stderr_has("no Apple Business Manager server token");
}
