//! Interop: certmonger's `scep-submit` helper (Debian package
//! `certmonger`, C + OpenSSL, an independent SCEP client) against our
//! server. scep-submit does GetCACaps and GetCACert itself; for
//! PKIOperation it transmits a pkiMessage built elsewhere (normally by the
//! certmonger daemon; here by our client), then verifies the CertRep's
//! signature, transactionID and nonces itself and prints the
//! pkcsPKIEnvelope, which we open with the requester's key.
//!
//! Quirks of certmonger 0.79.17 (Debian bookworm): PKIOperation always
//! goes out as GET even when POSTPKIOperation is advertised; the CertRep
//! signer is chain-verified (PKCS7_verify without NOVERIFY) against the
//! `-N` signing-CA certificate, so `-N` is required as well as `-r`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::*;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use mdmctl::pki::scep::client::{self, ClientRequest, build_csr, pkcs_req, self_signed_signer};
use mdmctl::pki::scep::{ContentCipher, DigestAlgorithm, RequestKind};

const CANDIDATES: &[&str] = &[
    "/usr/lib/certmonger/scep-submit",
    "/usr/libexec/certmonger/scep-submit",
];

fn scep_submit(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .output()
        .expect("run scep-submit")
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write_pem(dir: &Path, name: &str, pem: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, pem).expect("write");
    p
}

fn message_pem(r: &ClientRequest) -> Vec<u8> {
    Pkcs7::from_der(&r.der)
        .and_then(|p| p.to_pem())
        .expect("pem")
}

struct Device {
    key: PKey<Private>,
    signer: X509,
}

fn request(
    ca: &Ca,
    challenge: Option<&str>,
    cipher: ContentCipher,
    digest: DigestAlgorithm,
) -> (Device, ClientRequest) {
    let key = shared_key();
    let csr = build_csr(&key, &name("certmonger-device"), challenge).expect("csr");
    let signer = self_signed_signer(&csr, &key).expect("signer");
    let r = pkcs_req(
        &csr,
        &key,
        &signer,
        &ca.cert,
        RequestKind::PkcsReq,
        cipher,
        digest,
    )
    .expect("request");
    (Device { key, signer }, r)
}

/// Opens the pkcsPKIEnvelope that scep-submit printed.
fn issued_from_envelope(stdout: &[u8], device: &Device) -> X509 {
    let envelope = Pkcs7::from_pem(stdout).expect("envelope pem");
    let degenerate = envelope
        .decrypt(&device.key, &device.signer, Pkcs7Flags::empty())
        .expect("decrypt envelope");
    client::certs_from_pkcs7(&degenerate)
        .expect("certs")
        .into_iter()
        .next()
        .expect("a certificate")
}

#[test]
fn scep_submit_caps_cacert_and_pki_operation() {
    let Some(bin) = find_tool(CANDIDATES, "certmonger") else {
        return;
    };
    let ca = make_ca("Certmonger Interop CA", 3650);
    let mut cfg = ServerConfig::new(ca.clone());
    cfg.challenge = Some("cm-secret".into());
    let server = TestServer::start(cfg);
    let url = server.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_pem = write_pem(dir.path(), "ca.pem", &ca.cert.to_pem().unwrap());
    let ca_pem = ca_pem.to_str().expect("utf-8 path");

    // GetCACaps.
    let out = scep_submit(&bin, &["-u", &url, "-c"]);
    eprintln!("scep-submit -c: {}", describe(&out));
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("SCEPStandard"));

    // GetCACert (it also walks GetCACert message=1.. and GetCAChain).
    let out = scep_submit(&bin, &["-u", &url, "-C"]);
    eprintln!("scep-submit -C: {}", describe(&out));
    assert!(out.status.success(), "{}", describe(&out));
    let first = X509::stack_from_pem(&out.stdout).expect("pem certs");
    assert_eq!(first[0].to_der().unwrap(), ca.cert.to_der().unwrap());

    // PKIOperation, in the ciphers and digests it can carry.
    for (cipher, digest) in [
        (ContentCipher::Aes256Cbc, DigestAlgorithm::Sha256),
        (ContentCipher::Aes128Cbc, DigestAlgorithm::Sha1),
        (ContentCipher::DesEde3Cbc, DigestAlgorithm::Sha1),
    ] {
        let (device, r) = request(&ca, Some("cm-secret"), cipher, digest);
        let msg = write_pem(dir.path(), "req.pem", &message_pem(&r));
        let out = scep_submit(
            &bin,
            &[
                "-u",
                &url,
                "-r",
                ca_pem,
                "-N",
                ca_pem,
                "-p",
                msg.to_str().unwrap(),
            ],
        );
        eprintln!("scep-submit -p {cipher:?}/{digest:?}: {}", describe(&out));
        assert!(out.status.success(), "{}", describe(&out));
        let cert = issued_from_envelope(&out.stdout, &device);
        assert!(chains_to(&cert, std::slice::from_ref(&ca.cert)));
        assert!(cert.public_key().unwrap().public_eq(&device.key));
    }

    // Wrong challenge: certmonger's "rejected" exit status (2).
    let (_, r) = request(
        &ca,
        Some("nope"),
        ContentCipher::Aes128Cbc,
        DigestAlgorithm::Sha256,
    );
    let msg = write_pem(dir.path(), "bad.pem", &message_pem(&r));
    let out = scep_submit(
        &bin,
        &[
            "-u",
            &url,
            "-r",
            ca_pem,
            "-N",
            ca_pem,
            "-p",
            msg.to_str().unwrap(),
        ],
    );
    eprintln!("scep-submit -p wrong challenge: {}", describe(&out));
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not permitted"),
        "{}",
        describe(&out)
    );

    let log = server.log();
    for l in &log {
        eprintln!(
            "server: {} {} {} {}",
            l.method, l.operation, l.status, l.outcome
        );
    }
    assert!(
        log.iter()
            .filter(|l| l.operation == "PKIOperation")
            .all(|l| l.status == 200 && l.method == "GET"),
        "{log:?}"
    );
}

#[test]
fn scep_submit_renewal_over_get() {
    let Some(bin) = find_tool(CANDIDATES, "certmonger") else {
        return;
    };
    let ca = make_ca("Certmonger Renewal CA", 3650);
    let mut cfg = ServerConfig::new(ca.clone());
    // Without POSTPKIOperation advertised (certmonger uses GET either way).
    cfg.caps = "Renewal\nSHA-256\nAES\nDES3".into();
    let server = TestServer::start(cfg);
    let url = server.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_pem = write_pem(dir.path(), "ca.pem", &ca.cert.to_pem().unwrap());
    let ca_pem = ca_pem.to_str().expect("utf-8 path");

    // Enroll once to get an identity.
    let (device, r) = request(&ca, None, ContentCipher::Aes128Cbc, DigestAlgorithm::Sha256);
    let msg = write_pem(dir.path(), "req.pem", &message_pem(&r));
    let out = scep_submit(
        &bin,
        &[
            "-u",
            &url,
            "-r",
            ca_pem,
            "-N",
            ca_pem,
            "-p",
            msg.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let identity = issued_from_envelope(&out.stdout, &device);

    // RenewalReq signed by that identity, for a new key.
    let new_key = rsa_key(2048);
    let csr = build_csr(&new_key, &name("certmonger-device"), None).expect("csr");
    let r = pkcs_req(
        &csr,
        &device.key,
        &identity,
        &ca.cert,
        RequestKind::RenewalReq,
        ContentCipher::Aes256Cbc,
        DigestAlgorithm::Sha256,
    )
    .expect("renewal");
    let msg = write_pem(dir.path(), "renew.pem", &message_pem(&r));
    let out = scep_submit(
        &bin,
        &[
            "-u",
            &url,
            "-r",
            ca_pem,
            "-N",
            ca_pem,
            "-p",
            msg.to_str().unwrap(),
        ],
    );
    eprintln!("scep-submit renewal: {}", describe(&out));
    assert!(out.status.success(), "{}", describe(&out));
    let renewed = issued_from_envelope(
        &out.stdout,
        &Device {
            key: device.key.clone(),
            signer: identity.clone(),
        },
    );
    assert!(renewed.public_key().unwrap().public_eq(&new_key));
    assert!(chains_to(&renewed, std::slice::from_ref(&ca.cert)));

    let log = server.log();
    for l in &log {
        eprintln!(
            "server: {} {} {} {}",
            l.method, l.operation, l.status, l.outcome
        );
    }
    let pki: Vec<_> = log
        .iter()
        .filter(|l| l.operation == "PKIOperation")
        .collect();
    assert_eq!(pki.len(), 2, "{log:?}");
    assert!(pki.iter().all(|l| l.method == "GET"), "{log:?}");
    assert!(pki[1].outcome.starts_with("issued RenewalReq"), "{log:?}");
}
