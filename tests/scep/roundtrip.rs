//! Our client against our server functions, directly and over HTTP.

use crate::support::*;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::X509;
use openssl::x509::store::X509StoreBuilder;

use mdmctl::pki::scep::client::{
    self, CertRepOutcome, ClientRequest, build_csr, parse_cert_rep, pkcs_req, self_signed_signer,
};
use mdmctl::pki::scep::{
    CONTENT_TYPE_CA_CERT, CONTENT_TYPE_CA_RA_CERT, ContentCipher, DigestAlgorithm, FailInfo,
    MessageType, RequestKind, ScepError, ScepRequest, ca_cert_response, cert_rep_failure,
    cert_rep_success, issue_certificate,
};

struct Enrollee {
    key: PKey<Private>,
    signer: X509,
    csr: openssl::x509::X509Req,
}

fn enrollee(cn: &str, challenge: Option<&str>, key: PKey<Private>) -> Enrollee {
    let csr = build_csr(&key, &name(cn), challenge).expect("csr");
    let signer = self_signed_signer(&csr, &key).expect("signer");
    Enrollee { key, signer, csr }
}

/// The server half, as `mdmctl serve` would run it, minus HTTP.
fn serve(ca: &Ca, der: &[u8]) -> Vec<u8> {
    let req = ScepRequest::parse(der).expect("parse");
    match req.decrypt(&ca.cert, &ca.key) {
        Ok(csr) => {
            let cert = issue_certificate(&csr.csr, &ca.cert, &ca.key, 365).expect("issue");
            cert_rep_success(&req, &cert, &ca.cert, &ca.key).expect("certrep")
        }
        Err(e) => cert_rep_failure(&req, e.fail_info(), &ca.cert, &ca.key).expect("failure"),
    }
}

fn issued(outcome: CertRepOutcome) -> X509 {
    match outcome {
        CertRepOutcome::Issued(c) => c,
        other => panic!("expected a certificate, got {other:?}"),
    }
}

/// The verified eContent of a pkiMessage, read with OpenSSL alone.
fn econtent(der: &[u8]) -> Vec<u8> {
    let p7 = Pkcs7::from_der(der).expect("p7");
    let certs = Stack::new().expect("stack");
    let store = X509StoreBuilder::new().expect("store").build();
    let mut out = Vec::new();
    p7.verify(&certs, &store, None, Some(&mut out), Pkcs7Flags::NOVERIFY)
        .expect("verify");
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

const OID_SHA1: &[u8] = &[0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a];
const OID_SHA256: &[u8] = &[
    0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
];

fn cipher_oid(c: ContentCipher) -> &'static [u8] {
    match c {
        ContentCipher::Aes128Cbc => &[
            0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02,
        ],
        ContentCipher::Aes192Cbc => &[
            0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x16,
        ],
        ContentCipher::Aes256Cbc => &[
            0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a,
        ],
        ContentCipher::DesEde3Cbc => &[0x06, 0x08, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x03, 0x07],
        ContentCipher::DesCbc => &[0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x07],
    }
}

#[test]
fn pkcs_req_all_ciphers_and_digests() {
    let ca = make_ca("SCEP CA", 3650);
    let e = enrollee("device-1", Some("s3cret"), shared_key());
    for cipher in [
        ContentCipher::Aes128Cbc,
        ContentCipher::Aes256Cbc,
        ContentCipher::DesEde3Cbc,
    ] {
        for digest in [DigestAlgorithm::Sha256, DigestAlgorithm::Sha1] {
            let ctx = format!("{cipher:?}/{digest:?}");
            let r = pkcs_req(
                &e.csr,
                &e.key,
                &e.signer,
                &ca.cert,
                RequestKind::PkcsReq,
                cipher,
                digest,
            )
            .expect("request");

            // What the server sees.
            let req = ScepRequest::parse(&r.der).expect("parse");
            assert_eq!(req.message_type(), MessageType::PkcsReq, "{ctx}");
            assert_eq!(req.transaction_id(), r.transaction_id, "{ctx}");
            assert_eq!(req.sender_nonce(), r.sender_nonce.as_slice(), "{ctx}");
            assert_eq!(req.digest(), digest, "{ctx}");
            assert_eq!(req.content_cipher(), Some(cipher), "{ctx}");
            assert_eq!(
                req.signer_cert().to_der().unwrap(),
                e.signer.to_der().unwrap()
            );
            let csr = req.decrypt(&ca.cert, &ca.key).expect("decrypt");
            assert_eq!(csr.challenge_password.as_deref(), Some("s3cret"), "{ctx}");
            assert_eq!(csr.kind, RequestKind::PkcsReq);
            assert!(csr.renewal_identity().is_none());
            assert!(csr.signer_is_self_signed(), "{ctx}");
            assert!(csr.signer_key_matches_csr(), "{ctx}");

            let cert = issue_certificate(&csr.csr, &ca.cert, &ca.key, 365).expect("issue");
            let reply = cert_rep_success(&req, &cert, &ca.cert, &ca.key).expect("certrep");

            // The reply mirrors the request's digest and cipher.
            let digest_oid = match digest {
                DigestAlgorithm::Sha1 => OID_SHA1,
                _ => OID_SHA256,
            };
            assert!(contains(&reply, digest_oid), "{ctx}: reply digest");
            assert!(
                contains(&econtent(&reply), cipher_oid(cipher)),
                "{ctx}: reply cipher"
            );

            let got = issued(
                parse_cert_rep(
                    &reply,
                    &e.key,
                    &e.signer,
                    &r.transaction_id,
                    &r.sender_nonce,
                    &ca.cert,
                )
                .expect("parse certrep"),
            );
            assert_eq!(got.to_der().unwrap(), cert.to_der().unwrap(), "{ctx}");
            assert!(chains_to(&got, std::slice::from_ref(&ca.cert)), "{ctx}");
            assert!(got.public_key().unwrap().public_eq(&e.key), "{ctx}");
        }
    }
}

#[test]
fn challenge_password_is_exposed_as_sent() {
    let ca = make_ca("SCEP CA", 3650);
    for challenge in [Some("right"), Some("wrong ü"), None] {
        let e = enrollee("device-2", challenge, shared_key());
        let r = pkcs_req(
            &e.csr,
            &e.key,
            &e.signer,
            &ca.cert,
            RequestKind::PkcsReq,
            ContentCipher::Aes128Cbc,
            DigestAlgorithm::Sha256,
        )
        .expect("request");
        let req = ScepRequest::parse(&r.der).expect("parse");
        let csr = req.decrypt(&ca.cert, &ca.key).expect("decrypt");
        assert_eq!(csr.challenge_password.as_deref(), challenge);
    }
}

#[test]
fn wrong_challenge_over_http_gets_bad_request() {
    let ca = make_ca("SCEP CA", 3650);
    let mut cfg = ServerConfig::new(ca.clone());
    cfg.challenge = Some("right".into());
    let server = TestServer::start(cfg);
    for (challenge, want_ok) in [("wrong", false), ("right", true)] {
        let e = enrollee("device-3", Some(challenge), shared_key());
        let r = pkcs_req(
            &e.csr,
            &e.key,
            &e.signer,
            &ca.cert,
            RequestKind::PkcsReq,
            ContentCipher::Aes256Cbc,
            DigestAlgorithm::Sha256,
        )
        .expect("request");
        let (status, body) = http_post(&server.url(), &r.der);
        assert_eq!(status, 200);
        let out = parse_cert_rep(
            &body,
            &e.key,
            &e.signer,
            &r.transaction_id,
            &r.sender_nonce,
            &ca.cert,
        )
        .expect("certrep");
        match (want_ok, out) {
            (true, CertRepOutcome::Issued(c)) => {
                assert!(chains_to(&c, std::slice::from_ref(&ca.cert)))
            }
            (false, CertRepOutcome::Failed(fi)) => assert_eq!(fi, FailInfo::BadRequest),
            (_, other) => panic!("challenge {challenge}: unexpected {other:?}"),
        }
    }
}

fn enroll(ca: &Ca, e: &Enrollee) -> X509 {
    let r = pkcs_req(
        &e.csr,
        &e.key,
        &e.signer,
        &ca.cert,
        RequestKind::PkcsReq,
        ContentCipher::Aes128Cbc,
        DigestAlgorithm::Sha256,
    )
    .expect("request");
    issued(
        parse_cert_rep(
            &serve(ca, &r.der),
            &e.key,
            &e.signer,
            &r.transaction_id,
            &r.sender_nonce,
            &ca.cert,
        )
        .expect("certrep"),
    )
}

fn renew(
    server: &TestServer,
    ca: &Ca,
    identity: &X509,
    identity_key: &PKey<Private>,
    new_key: &PKey<Private>,
) -> CertRepOutcome {
    let csr = build_csr(new_key, &name("device-renew"), None).expect("csr");
    let r: ClientRequest = pkcs_req(
        &csr,
        identity_key,
        identity,
        &ca.cert,
        RequestKind::RenewalReq,
        ContentCipher::Aes128Cbc,
        DigestAlgorithm::Sha256,
    )
    .expect("renewal request");
    let (status, body) = http_post(&server.url(), &r.der);
    assert_eq!(status, 200);
    // The reply is encrypted to the identity that signed the request.
    parse_cert_rep(
        &body,
        identity_key,
        identity,
        &r.transaction_id,
        &r.sender_nonce,
        &ca.cert,
    )
    .expect("certrep")
}

#[test]
fn renewal_with_our_identity_and_the_old_mdm_identity() {
    let ca = make_ca("New MDM CA", 3650);
    let old_ca = make_ca("Old MDM CA", 3650);
    let stranger_ca = make_ca("Someone else", 3650);
    let mut cfg = ServerConfig::new(ca.clone());
    cfg.renewal_roots = vec![ca.cert.clone(), old_ca.cert.clone()];
    let server = TestServer::start(cfg);

    let old_key = shared_key();
    let new_key = rsa_key(2048);

    // 1. An identity we issued ourselves.
    let first = enroll(&ca, &enrollee("device-renew", None, old_key.clone()));
    let renewed = issued(renew(&server, &ca, &first, &old_key, &new_key));
    assert!(renewed.public_key().unwrap().public_eq(&new_key));
    assert!(chains_to(&renewed, std::slice::from_ref(&ca.cert)));

    // 2. An identity the old MDM's CA issued (the migration case).
    let legacy = enroll(&old_ca, &enrollee("device-renew", None, old_key.clone()));
    let renewed = issued(renew(&server, &ca, &legacy, &old_key, &new_key));
    assert!(chains_to(&renewed, std::slice::from_ref(&ca.cert)));

    // 3. An identity from a CA the server does not trust: refused.
    let foreign = enroll(
        &stranger_ca,
        &enrollee("device-renew", None, old_key.clone()),
    );
    match renew(&server, &ca, &foreign, &old_key, &new_key) {
        CertRepOutcome::Failed(fi) => assert_eq!(fi, FailInfo::BadRequest),
        other => panic!("untrusted renewal: {other:?}"),
    }

    let log = server.log();
    assert!(
        log.iter().any(|l| l.outcome.contains("issued RenewalReq")),
        "{log:?}"
    );
}

#[test]
fn renewal_request_exposes_the_identity() {
    let ca = make_ca("SCEP CA", 3650);
    let key = shared_key();
    let identity = enroll(&ca, &enrollee("device-4", None, key.clone()));
    let csr = build_csr(&key, &name("device-4"), None).expect("csr");
    let r = pkcs_req(
        &csr,
        &key,
        &identity,
        &ca.cert,
        RequestKind::RenewalReq,
        ContentCipher::DesEde3Cbc,
        DigestAlgorithm::Sha1,
    )
    .expect("request");
    let req = ScepRequest::parse(&r.der).expect("parse");
    assert_eq!(req.message_type(), MessageType::RenewalReq);
    let csr = req.decrypt(&ca.cert, &ca.key).expect("decrypt");
    assert_eq!(csr.kind, RequestKind::RenewalReq);
    let who = csr.renewal_identity().expect("identity");
    assert_eq!(who.to_der().unwrap(), identity.to_der().unwrap());
    assert!(!csr.signer_is_self_signed());
    assert!(csr.signer_key_matches_csr());
}

/// Flips one byte at `pos` and expects the signature check to fail.
fn assert_tamper_detected(der: &[u8], pos: usize, what: &str) {
    let mut bad = der.to_vec();
    bad[pos] ^= 0x01;
    match ScepRequest::parse(&bad) {
        Err(ScepError::BadSignature) => {}
        other => panic!("{what}: expected BadSignature, got {other:?}"),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle")
}

#[test]
fn tampering_is_detected() {
    let ca = make_ca("SCEP CA", 3650);
    let e = enrollee("device-5", Some("pw"), shared_key());
    let r = pkcs_req(
        &e.csr,
        &e.key,
        &e.signer,
        &ca.cert,
        RequestKind::PkcsReq,
        ContentCipher::Aes128Cbc,
        DigestAlgorithm::Sha256,
    )
    .expect("request");
    assert!(ScepRequest::parse(&r.der).is_ok());

    // Inside the signed content (the envelope).
    let content = econtent(&r.der);
    let at = find(&r.der, &content) + content.len() / 2;
    assert_tamper_detected(&r.der, at, "content");
    // The last bytes are the RSA signature itself (SignerInfo is last and
    // has no unsigned attributes).
    assert_tamper_detected(&r.der, r.der.len() - 10, "signature");
    // A signed attribute: the transactionID ('A'..'F' and '0'..'9' flip to
    // other printable characters).
    let at = find(&r.der, r.transaction_id.as_bytes());
    assert_tamper_detected(&r.der, at, "transactionID");
}

#[test]
fn request_for_another_ca_gets_bad_message_check() {
    let ca = make_ca("SCEP CA", 3650);
    let other = make_ca("Other CA", 3650);
    let e = enrollee("device-6", Some("pw"), shared_key());
    let r = pkcs_req(
        &e.csr,
        &e.key,
        &e.signer,
        &other.cert,
        RequestKind::PkcsReq,
        ContentCipher::Aes128Cbc,
        DigestAlgorithm::Sha256,
    )
    .expect("request");
    let req = ScepRequest::parse(&r.der).expect("signature is fine");
    let err = req
        .decrypt(&ca.cert, &ca.key)
        .expect_err("must not decrypt");
    assert!(matches!(err, ScepError::Decrypt), "{err:?}");
    assert_eq!(err.fail_info(), FailInfo::BadMessageCheck);

    let reply = serve(&ca, &r.der);
    match parse_cert_rep(
        &reply,
        &e.key,
        &e.signer,
        &r.transaction_id,
        &r.sender_nonce,
        &ca.cert,
    )
    .expect("certrep")
    {
        CertRepOutcome::Failed(fi) => assert_eq!(fi, FailInfo::BadMessageCheck),
        other => panic!("{other:?}"),
    }
}

#[test]
fn client_rejects_mismatched_or_foreign_replies() {
    let ca = make_ca("SCEP CA", 3650);
    let imposter = make_ca("SCEP CA", 3650);
    let e = enrollee("device-7", None, shared_key());
    let r = pkcs_req(
        &e.csr,
        &e.key,
        &e.signer,
        &ca.cert,
        RequestKind::PkcsReq,
        ContentCipher::Aes128Cbc,
        DigestAlgorithm::Sha256,
    )
    .expect("request");
    let reply = serve(&ca, &r.der);
    let p = |tid: &str, nonce: &[u8], ca_cert: &X509| {
        parse_cert_rep(&reply, &e.key, &e.signer, tid, nonce, ca_cert)
    };
    assert!(matches!(
        p("nope", &r.sender_nonce, &ca.cert),
        Err(ScepError::ReplyRejected(_))
    ));
    assert!(matches!(
        p(&r.transaction_id, &[0u8; 16], &ca.cert),
        Err(ScepError::ReplyRejected(_))
    ));
    // Same subject name, different key: the reply is not from this CA.
    assert!(p(&r.transaction_id, &r.sender_nonce, &imposter.cert).is_err());
    assert!(p(&r.transaction_id, &r.sender_nonce, &ca.cert).is_ok());

    // Replies signed by another CA that embeds its own certificate: with
    // the same name and serial as ours OpenSSL picks our certificate and
    // the signature fails; with another name the signer is not trusted.
    let req = ScepRequest::parse(&r.der).expect("parse");
    let stranger = make_ca("Stranger CA", 3650);
    for (forger, want_rejected) in [(&imposter, false), (&stranger, true)] {
        let forged = cert_rep_failure(&req, FailInfo::BadRequest, &forger.cert, &forger.key)
            .expect("forged");
        let got = parse_cert_rep(
            &forged,
            &e.key,
            &e.signer,
            &r.transaction_id,
            &r.sender_nonce,
            &ca.cert,
        );
        match got {
            Err(ScepError::ReplyRejected(_)) if want_rejected => {}
            Err(ScepError::BadSignature) if !want_rejected => {}
            other => panic!("forged reply accepted or wrong error: {other:?}"),
        }
    }
}

#[test]
fn failure_reply_carries_status_and_fail_info() {
    let ca = make_ca("SCEP CA", 3650);
    let e = enrollee("device-8", None, shared_key());
    let r = pkcs_req(
        &e.csr,
        &e.key,
        &e.signer,
        &ca.cert,
        RequestKind::PkcsReq,
        ContentCipher::Aes128Cbc,
        DigestAlgorithm::Sha1,
    )
    .expect("request");
    let req = ScepRequest::parse(&r.der).expect("parse");
    for fi in [
        FailInfo::BadAlg,
        FailInfo::BadMessageCheck,
        FailInfo::BadRequest,
        FailInfo::BadTime,
        FailInfo::BadCertId,
    ] {
        let reply = cert_rep_failure(&req, fi, &ca.cert, &ca.key).expect("failure");
        assert!(econtent(&reply).is_empty(), "no envelope in a failure");
        assert!(contains(&reply, OID_SHA1));
        match parse_cert_rep(
            &reply,
            &e.key,
            &e.signer,
            &r.transaction_id,
            &r.sender_nonce,
            &ca.cert,
        )
        .expect("certrep")
        {
            CertRepOutcome::Failed(got) => assert_eq!(got, fi),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn issued_certificate_profile() {
    let ca = make_ca("SCEP CA", 3650);
    let e = enrollee("device-9", None, shared_key());
    let cert = issue_certificate(&e.csr, &ca.cert, &ca.key, 365).expect("issue");
    assert_eq!(
        cert.subject_name().to_der().unwrap(),
        e.csr.subject_name().to_der().unwrap()
    );
    let serial = cert.serial_number().to_bn().unwrap();
    assert!(!serial.is_negative());
    assert_eq!(serial.num_bytes(), 16);
    assert!(cert.subject_key_id().is_some());
    assert_eq!(
        cert.authority_key_id().map(|k| k.as_slice().to_vec()),
        ca.cert.subject_key_id().map(|k| k.as_slice().to_vec())
    );
    // NotBefore is backdated ~10 minutes.
    let now = openssl::asn1::Asn1Time::days_from_now(0).unwrap();
    let diff = cert.not_before().diff(&now).unwrap();
    assert!(
        (590..=700).contains(&diff.secs) && diff.days == 0,
        "{diff:?}"
    );
    let diff = now.diff(cert.not_after()).unwrap();
    assert!(diff.days == 364 || diff.days == 365, "{diff:?}");

    // Validity is clamped to the CA's NotAfter.
    let short_ca = make_ca("Short CA", 30);
    let cert = issue_certificate(&e.csr, &short_ca.cert, &short_ca.key, 365).expect("issue");
    assert_eq!(
        cert.not_after().compare(short_ca.cert.not_after()).unwrap(),
        std::cmp::Ordering::Equal
    );
    assert!(issue_certificate(&e.csr, &ca.cert, &ca.key, 0).is_err());
}

#[test]
fn get_ca_cert_bodies() {
    let ca = make_ca("SCEP CA", 3650);
    let ra = make_ca("SCEP RA", 3650);
    let (ct, body) = ca_cert_response(std::slice::from_ref(&ca.cert)).expect("one");
    assert_eq!(ct, CONTENT_TYPE_CA_CERT);
    assert_eq!(body, ca.cert.to_der().unwrap());
    let (ct, body) = ca_cert_response(&[ra.cert.clone(), ca.cert.clone()]).expect("two");
    assert_eq!(ct, CONTENT_TYPE_CA_RA_CERT);
    let certs = client::parse_ca_cert_response(ct, &body).expect("p7");
    let ders: Vec<_> = certs.iter().map(|c| c.to_der().unwrap()).collect();
    assert_eq!(
        ders,
        vec![ra.cert.to_der().unwrap(), ca.cert.to_der().unwrap()],
        "order preserved"
    );
    assert!(ca_cert_response(&[]).is_err());

    // Over HTTP.
    let server = TestServer::start(ServerConfig::new(ca.clone()));
    let (status, ct, body) = http_get(&format!("{}?operation=GetCACert", server.url()));
    assert_eq!(status, 200);
    let certs = client::parse_ca_cert_response(&ct, &body).expect("cacert");
    assert_eq!(certs[0].to_der().unwrap(), ca.cert.to_der().unwrap());
    let (status, _, body) = http_get(&format!("{}?operation=GetCACaps", server.url()));
    assert_eq!(status, 200);
    let caps = String::from_utf8(body).unwrap();
    for cap in [
        "POSTPKIOperation",
        "SHA-256",
        "AES",
        "SCEPStandard",
        "Renewal",
    ] {
        assert!(caps.lines().any(|l| l == cap), "{cap}");
    }
}

#[test]
fn cert_rep_success_puts_the_issued_certificate_first() {
    let ca = make_ca("SCEP CA", 3650);
    let e = enrollee("device-10", None, shared_key());
    let r = pkcs_req(
        &e.csr,
        &e.key,
        &e.signer,
        &ca.cert,
        RequestKind::PkcsReq,
        ContentCipher::Aes128Cbc,
        DigestAlgorithm::Sha256,
    )
    .expect("request");
    let req = ScepRequest::parse(&r.der).expect("parse");
    let cert = issue_certificate(&e.csr, &ca.cert, &ca.key, 365).expect("issue");
    let reply = cert_rep_success(&req, &cert, &ca.cert, &ca.key).expect("certrep");
    let envelope = Pkcs7::from_der(&econtent(&reply)).expect("envelope");
    let degenerate = envelope
        .decrypt(&e.key, &e.signer, Pkcs7Flags::empty())
        .expect("decrypt");
    let certs = client::certs_from_pkcs7(&degenerate).expect("certs");
    assert_eq!(certs.len(), 2);
    assert_eq!(certs[0].to_der().unwrap(), cert.to_der().unwrap());
    assert_eq!(certs[1].to_der().unwrap(), ca.cert.to_der().unwrap());
}

#[test]
fn ber_encoded_request_like_apple_sends() {
    let ca = make_ca("SCEP CA", 3650);
    let e = enrollee("device-ber", Some("pw"), shared_key());
    let r = pkcs_req(
        &e.csr,
        &e.key,
        &e.signer,
        &ca.cert,
        RequestKind::PkcsReq,
        ContentCipher::Aes256Cbc,
        DigestAlgorithm::Sha256,
    )
    .expect("request");
    let ber = to_ber(&r.der);
    assert_ne!(ber, r.der);
    assert!(ber.len() > r.der.len());
    let req = ScepRequest::parse(&ber).expect("parse ber");
    assert_eq!(req.transaction_id(), r.transaction_id);
    let csr = req.decrypt(&ca.cert, &ca.key).expect("decrypt");
    assert_eq!(csr.challenge_password.as_deref(), Some("pw"));
}

/// Re-encodes a DER pkiMessage the way NSS-derived encoders do:
/// indefinite lengths on the ContentInfo, SignedData and
/// EncapsulatedContentInfo, and the eContent as a constructed OCTET
/// STRING of 100-byte segments. The certificates and SignerInfos are kept
/// as they were.
fn to_ber(der: &[u8]) -> Vec<u8> {
    fn tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = input[0];
        let (len, hdr) = match input[1] {
            l if l < 0x80 => (usize::from(l), 2),
            0x81 => (usize::from(input[2]), 3),
            0x82 => (usize::from(input[2]) << 8 | usize::from(input[3]), 4),
            0x83 => (
                usize::from(input[2]) << 16 | usize::from(input[3]) << 8 | usize::from(input[4]),
                5,
            ),
            _ => panic!("unexpected length"),
        };
        (tag, &input[hdr..hdr + len], &input[..hdr + len])
    }
    fn children(content: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut rest = content;
        while !rest.is_empty() {
            let (_, _, raw) = tlv(rest);
            out.push(raw);
            rest = &rest[raw.len()..];
        }
        out
    }
    fn indefinite(tag: u8, parts: &[Vec<u8>]) -> Vec<u8> {
        let mut out = vec![tag, 0x80];
        for p in parts {
            out.extend_from_slice(p);
        }
        out.extend_from_slice(&[0, 0]);
        out
    }
    let (_, ci, _) = tlv(der);
    let ci = children(ci);
    let (_, explicit, _) = tlv(ci[1]);
    let (_, sd, _) = tlv(explicit);
    let sd = children(sd);
    let (_, encap, _) = tlv(sd[2]);
    let encap = children(encap);
    let (_, octets_wrapper, _) = tlv(encap[1]);
    let (_, octets, _) = tlv(octets_wrapper);
    let mut segments = Vec::new();
    for chunk in octets.chunks(100) {
        let mut seg = vec![0x04];
        if chunk.len() < 0x80 {
            seg.push(chunk.len() as u8);
        } else {
            seg.extend_from_slice(&[0x81, chunk.len() as u8]);
        }
        seg.extend_from_slice(chunk);
        segments.push(seg);
    }
    let econtent = indefinite(0xa0, &[indefinite(0x24, &segments)]);
    let encap = indefinite(0x30, &[encap[0].to_vec(), econtent]);
    let mut sd_parts: Vec<Vec<u8>> = sd.iter().map(|p| p.to_vec()).collect();
    sd_parts[2] = encap;
    let sd = indefinite(0x30, &sd_parts);
    indefinite(0x30, &[ci[0].to_vec(), indefinite(0xa0, &[sd])])
}
