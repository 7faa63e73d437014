//! What one Idle check-in costs the server, step by step, in one thread and without the
//! network: verifying the `Mdm-Signature`, checking the certificate against the CAs (cached),
//! decoding the report, the store's read transaction, and the whole request through the
//! router. `cargo bench --bench checkin`. Results: docs/benchmarks.md.

use std::sync::Arc;
use std::time::Instant;

use mdmctl::apple::command::parse_report;
use mdmctl::pki::identity::{ParsedSignature, TrustAnchors, sign_mdm_body, verify_mdm_signature};
use mdmctl::pki::{self, CaSpec};
use mdmctl::store::{self, DeviceRecord, EnrollmentRecord, Location, NewKey};
use mdmctl::timestamp::Timestamp;
use zeroize::Zeroizing;

fn time(name: &str, n: u32, mut f: impl FnMut()) {
    for _ in 0..n / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    println!(
        "{name:<48} {:>8.1} µs",
        start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    );
}

fn main() {
    let (ca, ca_key) = pki::new_ca(&CaSpec {
        common_name: "CA".into(),
        organization: "T".into(),
        country: "US".into(),
        key_bits: 2048,
        years: 1,
    })
    .unwrap();
    let key = pki::generate_rsa(2048).unwrap();
    let csr = pki::build_csr(
        &key,
        &pki::Subject {
            common_name: "device".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let cert = pki::scep::issue_certificate(&csr, &ca, &ca_key, 365).unwrap();
    let udid = "00008103-000A1B2C3D4E001E";
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist version=\"1.0\"><dict><key>Status</key><string>Idle</string><key>UDID</key><string>{udid}</string></dict></plist>\n"
    )
    .into_bytes();
    let sig = sign_mdm_body(&body, &cert, &key).unwrap();
    let anchors = TrustAnchors::new(&[(ca.clone(), true)]).unwrap();

    time("sign (the device's side, for scale)", 200, || {
        sign_mdm_body(&body, &cert, &key).unwrap();
    });
    time("verify Mdm-Signature (OpenSSL, first sight)", 5_000, || {
        verify_mdm_signature(&sig, &body).unwrap();
    });
    let presented = verify_mdm_signature(&sig, &body).unwrap();
    let pubkey = cert.public_key().unwrap();
    time(
        "verify Mdm-Signature, known certificate (DER walk + RSA)",
        5_000,
        || {
            let p = ParsedSignature::parse(&sig).unwrap().unwrap();
            openssl::sha::sha256(&p.cert_der);
            p.check(&body, &pubkey).unwrap();
        },
    );
    time("chain check (uncached)", 5_000, || {
        anchors.verify(&presented).unwrap();
    });
    time("certificate to DER (the cache key)", 20_000, || {
        presented.cert.to_der().unwrap();
    });
    time("decode the Idle report", 20_000, || {
        parse_report(&body).unwrap();
    });

    // The RSA check alone, two ways.
    let pubkey = cert.public_key().unwrap();
    let data = b"signed attributes stand-in, about this long, as Apple's are: contentType, signingTime, messageDigest";
    let mut signer =
        openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
    signer.update(data).unwrap();
    let rsa_sig = signer.sign_to_vec().unwrap();
    time("RSA-2048 verify (EVP Verifier)", 5_000, || {
        let mut v =
            openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &pubkey).unwrap();
        v.update(data).unwrap();
        assert!(v.verify(&rsa_sig).unwrap());
    });
    let rsa = pubkey.rsa().unwrap();
    time("RSA-2048 public decrypt (low level)", 5_000, || {
        let mut out = vec![0u8; 256];
        rsa.public_decrypt(&rsa_sig, &mut out, openssl::rsa::Padding::PKCS1)
            .unwrap();
    });
    time("X509 from DER", 5_000, || {
        openssl::x509::X509::from_der(&cert.to_der().unwrap()).unwrap();
    });
    time("sha256 of a body (low level)", 50_000, || {
        openssl::sha::sha256(&body);
    });

    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store::create(
        &Location::Sqlite(dir.path().join("b.db")),
        NewKey::Passphrase(Zeroizing::new("benchmark passphrase".into())),
    )
    .unwrap();
    let sha = pki::fingerprint_sha256(&cert).unwrap();
    store
        .write(|tx| {
            tx.put_device(&DeviceRecord {
                id: udid.into(),
                source: "imported:bench".into(),
                identity_sha256: Some(sha.clone()),
                migrated_at: Some(Timestamp::now()),
                ..Default::default()
            })?;
            tx.put_enrollment(&EnrollmentRecord {
                id: udid.into(),
                device_id: udid.into(),
                kind: "Device".into(),
                topic: "t".into(),
                enabled: true,
                ..Default::default()
            })
        })
        .unwrap();
    let store: Arc<dyn store::Store> = store;
    time(
        "store: read transaction (auth + queue peek)",
        20_000,
        || {
            store
                .read(|tx| {
                    tx.device_auth(udid, Some(udid))?;
                    tx.has_open_command(udid, true)
                })
                .unwrap();
        },
    );
}
