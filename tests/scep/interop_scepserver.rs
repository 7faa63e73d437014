//! Interop, the other direction: our client against micromdm's
//! `scepserver` (Debian package `scep`, Go). Proves that what our client
//! sends is acceptable to an independent server and that we can read its
//! CertReps.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use mdmctl::pki::scep::client::{
    CertRepOutcome, build_csr, parse_ca_cert_response, parse_cert_rep, pkcs_req, self_signed_signer,
};
use mdmctl::pki::scep::{ContentCipher, DigestAlgorithm, FailInfo, RequestKind, enable_legacy_des};

const CANDIDATES: &[&str] = &["/usr/bin/scepserver"];

/// Kills the server when the test ends, however it ends.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(bin: &Path, depot: &Path, port: u16) -> ServerProcess {
    let status = Command::new(bin)
        .args(["ca", "-init", "-keySize", "2048", "-depot"])
        .arg(depot)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("scepserver ca -init");
    assert!(status.success(), "scepserver ca -init failed");
    // scepserver binds ":port" (all interfaces); we only ever connect to
    // 127.0.0.1.
    let child = Command::new(bin)
        .args([
            "-port",
            &port.to_string(),
            "-challenge",
            "srv-secret",
            "-allowrenew",
            "0",
            "-depot",
        ])
        .arg(depot)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn scepserver");
    let proc = ServerProcess(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "scepserver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    proc
}

/// One enrollment attempt by our client.
struct Attempt<'a> {
    csr_key: &'a PKey<Private>,
    signer_key: &'a PKey<Private>,
    signer: &'a X509,
    kind: RequestKind,
    challenge: Option<&'a str>,
    cipher: ContentCipher,
    digest: DigestAlgorithm,
}

fn enroll(url: &str, ca: &X509, a: &Attempt<'_>) -> CertRepOutcome {
    let csr = build_csr(a.csr_key, &name("our-client"), a.challenge).expect("csr");
    let r =
        pkcs_req(&csr, a.signer_key, a.signer, ca, a.kind, a.cipher, a.digest).expect("request");
    let (status, body) = http_post(url, &r.der);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    parse_cert_rep(
        &body,
        a.signer_key,
        a.signer,
        &r.transaction_id,
        &r.sender_nonce,
        ca,
    )
    .expect("parse certrep from scepserver")
}

#[test]
fn our_client_against_micromdm_scepserver() {
    let Some(bin) = find_tool(CANDIDATES, "scep") else {
        return;
    };
    // scepserver 2.1.0 encrypts its replies with single DES.
    enable_legacy_des().expect("legacy provider");
    let dir = tempfile::tempdir().expect("tempdir");
    let depot = dir.path().join("depot");
    let port = free_port();
    let _server = start(&bin, &depot, port);
    let url = format!("http://127.0.0.1:{port}/scep");

    let (status, _, caps) = http_get(&format!("{url}?operation=GetCACaps"));
    assert_eq!(status, 200);
    eprintln!("scepserver caps: {:?}", String::from_utf8_lossy(&caps));
    let (status, ct, body) = http_get(&format!("{url}?operation=GetCACert"));
    assert_eq!(status, 200);
    let ca = parse_ca_cert_response(&ct, &body).expect("ca cert")[0].clone();
    let depot_ca =
        X509::from_pem(&std::fs::read(depot.join("ca.pem")).expect("ca.pem")).expect("depot ca");
    assert_eq!(ca.to_der().unwrap(), depot_ca.to_der().unwrap());

    let key = shared_key();
    let csr = build_csr(&key, &name("our-client"), None).expect("csr");
    let self_signed = self_signed_signer(&csr, &key).expect("signer");

    // PKCSReq in each cipher/digest we offer.
    let mut identity = None;
    for (cipher, digest) in [
        (ContentCipher::Aes128Cbc, DigestAlgorithm::Sha256),
        (ContentCipher::Aes256Cbc, DigestAlgorithm::Sha1),
        (ContentCipher::DesEde3Cbc, DigestAlgorithm::Sha256),
    ] {
        match enroll(
            &url,
            &ca,
            &Attempt {
                csr_key: &key,
                signer_key: &key,
                signer: &self_signed,
                kind: RequestKind::PkcsReq,
                challenge: Some("srv-secret"),
                cipher,
                digest,
            },
        ) {
            CertRepOutcome::Issued(cert) => {
                assert!(
                    chains_to(&cert, std::slice::from_ref(&ca)),
                    "{cipher:?}/{digest:?}"
                );
                assert!(cert.public_key().unwrap().public_eq(&key));
                identity = Some(cert);
            }
            other => panic!("{cipher:?}/{digest:?}: {other:?}"),
        }
    }

    // Wrong challenge: scepserver answers with a FAILURE CertRep.
    match enroll(
        &url,
        &ca,
        &Attempt {
            csr_key: &key,
            signer_key: &key,
            signer: &self_signed,
            kind: RequestKind::PkcsReq,
            challenge: Some("wrong"),
            cipher: ContentCipher::Aes128Cbc,
            digest: DigestAlgorithm::Sha256,
        },
    ) {
        CertRepOutcome::Failed(fi) => assert_eq!(fi, FailInfo::BadRequest),
        other => panic!("wrong challenge accepted: {other:?}"),
    }

    // RenewalReq signed with the identity it issued, for a new key.
    // scepserver 2.1.0 checks the challenge on renewals too (its policy,
    // not the RFC's), so the CSR carries it.
    let identity = identity.expect("identity");
    let new_key = rsa_key(2048);
    match enroll(
        &url,
        &ca,
        &Attempt {
            csr_key: &new_key,
            signer_key: &key,
            signer: &identity,
            kind: RequestKind::RenewalReq,
            challenge: Some("srv-secret"),
            cipher: ContentCipher::Aes128Cbc,
            digest: DigestAlgorithm::Sha256,
        },
    ) {
        CertRepOutcome::Issued(cert) => {
            assert!(chains_to(&cert, std::slice::from_ref(&ca)));
            assert!(cert.public_key().unwrap().public_eq(&new_key));
        }
        other => panic!("renewal: {other:?}"),
    }
}
