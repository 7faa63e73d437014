//! Cross-checks with the `openssl` command-line tool (an independent
//! reader of the same structures): CertRep signatures, the envelope, the
//! issued certificate's profile and chain.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::*;

use mdmctl::pki::scep::client::{build_csr, pkcs_req, self_signed_signer};
use mdmctl::pki::scep::{
    ContentCipher, DigestAlgorithm, FailInfo, RequestKind, ScepRequest, ca_cert_response,
    cert_rep_failure, cert_rep_success, issue_certificate,
};

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl")
}

fn ok(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openssl failed: {text}");
    text
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn openssl_cli_accepts_our_messages() {
    if find_tool(&["/usr/bin/openssl"], "openssl").is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ca = make_ca("CLI CA", 3650);
    let key = shared_key();
    let csr = build_csr(&key, &name("cli-device"), Some("pw")).expect("csr");
    let signer = self_signed_signer(&csr, &key).expect("signer");
    let r = pkcs_req(
        &csr,
        &key,
        &signer,
        &ca.cert,
        RequestKind::PkcsReq,
        ContentCipher::Aes256Cbc,
        DigestAlgorithm::Sha256,
    )
    .expect("request");
    std::fs::write(d.join("ca.pem"), ca.cert.to_pem().unwrap()).unwrap();
    std::fs::write(d.join("ca.key"), ca.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    std::fs::write(d.join("dev.pem"), signer.to_pem().unwrap()).unwrap();
    std::fs::write(d.join("dev.key"), key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    std::fs::write(d.join("req.der"), &r.der).unwrap();

    // Our client's request: signature (with the embedded self-signed
    // certificate), then the envelope opened with the CA key, giving a
    // CSR openssl can read and verify, with our challengePassword.
    ok(&openssl(&[
        "cms",
        "-verify",
        "-noverify",
        "-inform",
        "DER",
        "-in",
        p(&d.join("req.der")),
        "-out",
        p(&d.join("req-envelope.der")),
    ]));
    ok(&openssl(&[
        "cms",
        "-decrypt",
        "-inform",
        "DER",
        "-in",
        p(&d.join("req-envelope.der")),
        "-recip",
        p(&d.join("ca.pem")),
        "-inkey",
        p(&d.join("ca.key")),
        "-binary",
        "-out",
        p(&d.join("req-csr.der")),
    ]));
    let text = ok(&openssl(&[
        "req",
        "-inform",
        "DER",
        "-in",
        p(&d.join("req-csr.der")),
        "-verify",
        "-noout",
        "-text",
    ]));
    assert!(text.contains("challengePassword"), "{text}");
    assert!(
        text.contains("verify OK") || text.contains("Certificate request self-signature verify OK"),
        "{text}"
    );

    // The server's CertRep.
    let req = ScepRequest::parse(&r.der).expect("parse");
    let csr_req = req.decrypt(&ca.cert, &ca.key).expect("decrypt");
    let cert = issue_certificate(&csr_req.csr, &ca.cert, &ca.key, 365).expect("issue");
    let reply = cert_rep_success(&req, &cert, &ca.cert, &ca.key).expect("certrep");
    std::fs::write(d.join("rep.der"), &reply).unwrap();
    ok(&openssl(&[
        "cms",
        "-verify",
        "-noverify",
        "-inform",
        "DER",
        "-in",
        p(&d.join("rep.der")),
        "-out",
        p(&d.join("rep-envelope.der")),
    ]));
    // Chain-verified against the CA as trust anchor, as certmonger does.
    ok(&openssl(&[
        "smime",
        "-verify",
        "-inform",
        "DER",
        "-in",
        p(&d.join("rep.der")),
        "-CAfile",
        p(&d.join("ca.pem")),
        "-out",
        "/dev/null",
    ]));
    // The attributes as openssl prints them.
    let printed = ok(&openssl(&[
        "cms",
        "-cmsout",
        "-print",
        "-inform",
        "DER",
        "-in",
        p(&d.join("rep.der")),
        "-noout",
    ]));
    for needle in [
        "2.16.840.1.113733.1.9.2",
        "2.16.840.1.113733.1.9.3",
        "2.16.840.1.113733.1.9.5",
        "2.16.840.1.113733.1.9.6",
        "2.16.840.1.113733.1.9.7",
        "rsaEncryption",
        "sha256",
    ] {
        assert!(printed.contains(needle), "{needle} not in:\n{printed}");
    }
    assert!(printed.contains(&r.transaction_id), "{printed}");
    // The envelope opens with the device key; inside is the degenerate
    // certs-only PKCS#7 with the issued certificate first.
    ok(&openssl(&[
        "cms",
        "-decrypt",
        "-inform",
        "DER",
        "-in",
        p(&d.join("rep-envelope.der")),
        "-recip",
        p(&d.join("dev.pem")),
        "-inkey",
        p(&d.join("dev.key")),
        "-binary",
        "-out",
        p(&d.join("degenerate.der")),
    ]));
    let certs = ok(&openssl(&[
        "pkcs7",
        "-inform",
        "DER",
        "-in",
        p(&d.join("degenerate.der")),
        "-print_certs",
    ]));
    let first_subject = certs
        .lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or_default()
        .to_owned();
    assert!(first_subject.contains("cli-device"), "{certs}");

    // The issued certificate's profile and chain.
    std::fs::write(d.join("issued.pem"), cert.to_pem().unwrap()).unwrap();
    let text = ok(&openssl(&[
        "x509",
        "-in",
        p(&d.join("issued.pem")),
        "-noout",
        "-text",
    ]));
    for needle in [
        "TLS Web Client Authentication",
        "Digital Signature, Key Encipherment",
        "CA:FALSE",
        "X509v3 Subject Key Identifier",
        "X509v3 Authority Key Identifier",
        "sha256WithRSAEncryption",
        "CN = cli-device",
    ] {
        assert!(text.contains(needle), "{needle} not in:\n{text}");
    }
    let text = ok(&openssl(&[
        "verify",
        "-CAfile",
        p(&d.join("ca.pem")),
        "-purpose",
        "sslclient",
        p(&d.join("issued.pem")),
    ]));
    assert!(text.contains(": OK"), "{text}");

    // A failure reply verifies too, and carries pkiStatus 2, failInfo 2.
    let fail = cert_rep_failure(&req, FailInfo::BadRequest, &ca.cert, &ca.key).expect("failure");
    std::fs::write(d.join("fail.der"), &fail).unwrap();
    ok(&openssl(&[
        "smime",
        "-verify",
        "-inform",
        "DER",
        "-in",
        p(&d.join("fail.der")),
        "-CAfile",
        p(&d.join("ca.pem")),
        "-out",
        "/dev/null",
    ]));
    let printed = ok(&openssl(&[
        "cms",
        "-cmsout",
        "-print",
        "-inform",
        "DER",
        "-in",
        p(&d.join("fail.der")),
        "-noout",
    ]));
    assert!(printed.contains("2.16.840.1.113733.1.9.4"), "{printed}");

    // pk7out view of the degenerate GetCACert body with two certificates.
    let ra = make_ca("CLI RA", 3650);
    let (_, body) = ca_cert_response(&[ra.cert.clone(), ca.cert.clone()]).expect("cacert");
    std::fs::write(d.join("cacerts.p7"), &body).unwrap();
    let certs = ok(&openssl(&[
        "pkcs7",
        "-inform",
        "DER",
        "-in",
        p(&d.join("cacerts.p7")),
        "-print_certs",
    ]));
    let subjects: Vec<_> = certs
        .lines()
        .filter(|l| l.starts_with("subject="))
        .collect();
    assert_eq!(subjects.len(), 2, "{certs}");
    assert!(
        subjects[0].contains("CLI RA") && subjects[1].contains("CLI CA"),
        "{certs}"
    );
}
