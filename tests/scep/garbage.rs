//! Hostile input: garbage, truncations and byte flips give errors, never
//! panics, on every entry point that reads untrusted bytes.

use crate::support::*;

use mdmctl::pki::scep::client::{self, build_csr, parse_cert_rep, pkcs_req, self_signed_signer};
use mdmctl::pki::scep::{
    ContentCipher, DigestAlgorithm, RequestKind, ScepRequest, cert_rep_success, decode_get_message,
    issue_certificate,
};

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn random_bytes_are_rejected() {
    for seed in 1..400u64 {
        let len = (seed as usize * 37) % 3000;
        let mut bytes = noise(seed, len);
        assert!(ScepRequest::parse(&bytes).is_err());
        // The same with a plausible SEQUENCE header in front.
        if bytes.len() > 4 {
            bytes[0] = 0x30;
            bytes[1] = 0x80;
            assert!(ScepRequest::parse(&bytes).is_err());
        }
        let _ = client::parse_ca_cert_response("application/x-x509-ca-ra-cert", &bytes);
        let _ = client::parse_ca_cert_response("application/x-x509-ca-cert", &bytes);
        let text = String::from_utf8_lossy(&bytes);
        let _ = decode_get_message(&text);
    }
    // Pathological nesting.
    let deep: Vec<u8> = std::iter::repeat_n([0x30u8, 0x80], 50_000)
        .flatten()
        .collect();
    assert!(ScepRequest::parse(&deep).is_err());
    let deep: Vec<u8> = std::iter::repeat_n([0x30u8, 0x84, 0xff, 0xff, 0xff, 0xff], 1000)
        .flatten()
        .collect();
    assert!(ScepRequest::parse(&deep).is_err());
}

#[test]
fn truncated_and_flipped_messages_never_panic() {
    let ca = make_ca("Garbage CA", 3650);
    let key = shared_key();
    let csr = build_csr(&key, &name("garbage"), Some("pw")).expect("csr");
    let signer = self_signed_signer(&csr, &key).expect("signer");
    let r = pkcs_req(
        &csr,
        &key,
        &signer,
        &ca.cert,
        RequestKind::PkcsReq,
        ContentCipher::Aes128Cbc,
        DigestAlgorithm::Sha256,
    )
    .expect("request");

    for cut in 0..r.der.len() {
        assert!(ScepRequest::parse(&r.der[..cut]).is_err(), "prefix {cut}");
    }
    let mut accepted = 0;
    for pos in 0..r.der.len() {
        let mut bad = r.der.clone();
        bad[pos] ^= 0xff;
        if let Ok(req) = ScepRequest::parse(&bad) {
            // Only bytes outside what is signed can change and still
            // verify (e.g. inside the embedded certificate's own
            // signature); the request must then still be handled safely.
            accepted += 1;
            let _ = req.decrypt(&ca.cert, &ca.key);
        }
    }
    eprintln!(
        "{accepted} of {} single-byte flips still parsed",
        r.der.len()
    );

    // The client side reading a flipped CertRep.
    let req = ScepRequest::parse(&r.der).expect("parse");
    let csr_req = req.decrypt(&ca.cert, &ca.key).expect("decrypt");
    let cert = issue_certificate(&csr_req.csr, &ca.cert, &ca.key, 365).expect("issue");
    let reply = cert_rep_success(&req, &cert, &ca.cert, &ca.key).expect("certrep");
    for pos in (0..reply.len()).step_by(3) {
        let mut bad = reply.clone();
        bad[pos] ^= 0x55;
        let _ = parse_cert_rep(
            &bad,
            &key,
            &signer,
            &r.transaction_id,
            &r.sender_nonce,
            &ca.cert,
        );
    }
    for cut in (0..reply.len()).step_by(7) {
        assert!(
            parse_cert_rep(
                &reply[..cut],
                &key,
                &signer,
                &r.transaction_id,
                &r.sender_nonce,
                &ca.cert
            )
            .is_err()
        );
    }
}
