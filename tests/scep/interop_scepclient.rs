//! Interop: micromdm's `scepclient` (Debian package `scep`, Go, an
//! independent SCEP implementation) enrolls against our server functions
//! behind the test HTTP server.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::*;
use openssl::x509::X509;

const CANDIDATES: &[&str] = &["/usr/bin/scepclient"];

fn run_scepclient(bin: &Path, url: &str, dir: &Path, challenge: &str) -> Output {
    Command::new(bin)
        .arg("-server-url")
        .arg(url)
        .arg("-private-key")
        .arg(dir.join("key.pem"))
        .arg("-certificate")
        .arg(dir.join("client.pem"))
        .arg("-challenge")
        .arg(challenge)
        .arg("-cn")
        .arg("interop-device")
        .arg("-keySize")
        .arg("2048")
        .arg("-debug")
        .output()
        .expect("run scepclient")
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn saved_cert(dir: &Path) -> X509 {
    let pem = std::fs::read(dir.join("client.pem")).expect("client.pem");
    X509::from_pem(&pem).expect("pem")
}

/// PKCSReq with challenge over POST, then a RenewalReq signed with the
/// certificate it got (scepclient renews when the certificate file
/// exists), then a wrong challenge.
#[test]
fn scepclient_enroll_renew_and_wrong_challenge_over_post() {
    let Some(bin) = find_tool(CANDIDATES, "scep") else {
        return;
    };
    // scepclient 2.1.0 always encrypts with single DES.
    mdmctl::pki::scep::enable_legacy_des().expect("legacy provider");
    let ca = make_ca("Interop CA", 3650);
    let mut cfg = ServerConfig::new(ca.clone());
    cfg.challenge = Some("interop-secret".into());
    let server = TestServer::start(cfg);
    let dir = tempfile::tempdir().expect("tempdir");

    let out = run_scepclient(&bin, &server.url(), dir.path(), "interop-secret");
    eprintln!("scepclient enroll: {}", describe(&out));
    for l in server.log() {
        eprintln!(
            "server: {} {} {} {} query={}",
            l.method, l.operation, l.status, l.outcome, l.query
        );
    }
    assert!(out.status.success(), "{}", describe(&out));
    let first = saved_cert(dir.path());
    assert!(chains_to(&first, std::slice::from_ref(&ca.cert)));
    let key = std::fs::read(dir.path().join("key.pem")).expect("key");
    let key = openssl::pkey::PKey::private_key_from_pem(&key).expect("key");
    assert!(first.public_key().unwrap().public_eq(&key));
    let log = server.log();
    let pki: Vec<_> = log
        .iter()
        .filter(|l| l.operation == "PKIOperation")
        .collect();
    assert_eq!(pki.len(), 1, "{log:?}");
    assert_eq!(pki[0].method, "POST");
    assert!(pki[0].outcome.starts_with("issued PkcsReq"), "{log:?}");

    // Renewal: the certificate file now exists.
    let out = run_scepclient(&bin, &server.url(), dir.path(), "interop-secret");
    eprintln!("scepclient renew: {}", describe(&out));
    assert!(out.status.success(), "{}", describe(&out));
    let second = saved_cert(dir.path());
    assert_ne!(second.to_der().unwrap(), first.to_der().unwrap());
    assert!(chains_to(&second, std::slice::from_ref(&ca.cert)));
    let log = server.log();
    assert!(
        log.iter()
            .any(|l| l.outcome.starts_with("issued RenewalReq")),
        "{log:?}"
    );

    // Wrong challenge in a fresh directory: a FAILURE CertRep that
    // scepclient verifies and reports with its failInfo.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_scepclient(&bin, &server.url(), dir.path(), "wrong");
    eprintln!("scepclient wrong challenge: {}", describe(&out));
    assert!(!out.status.success());
    let text = describe(&out);
    assert!(text.contains("failInfo"), "{text}");
    assert!(!dir.path().join("client.pem").exists());
    let log = server.log();
    assert!(
        log.iter()
            .any(|l| l.outcome.contains("failure badRequest: wrong challenge")),
        "{log:?}"
    );
}

/// Without POSTPKIOperation in GetCACaps, scepclient falls back to GET
/// with a base64, URL-encoded `message=`.
#[test]
fn scepclient_enroll_over_get() {
    let Some(bin) = find_tool(CANDIDATES, "scep") else {
        return;
    };
    mdmctl::pki::scep::enable_legacy_des().expect("legacy provider");
    let ca = make_ca("Interop CA GET", 3650);
    let mut cfg = ServerConfig::new(ca.clone());
    cfg.caps = "SHA-256\nAES\nDES3\nRenewal".into();
    let server = TestServer::start(cfg);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_scepclient(&bin, &server.url(), dir.path(), "");
    eprintln!("scepclient GET: {}", describe(&out));
    for l in server.log() {
        eprintln!(
            "server: {} {} {} {} query={}",
            l.method, l.operation, l.status, l.outcome, l.query
        );
    }
    assert!(out.status.success(), "{}", describe(&out));
    assert!(chains_to(
        &saved_cert(dir.path()),
        std::slice::from_ref(&ca.cert)
    ));
    let log = server.log();
    let pki: Vec<_> = log
        .iter()
        .filter(|l| l.operation == "PKIOperation")
        .collect();
    assert_eq!(pki.len(), 1, "{log:?}");
    assert_eq!(pki[0].method, "GET");
}
