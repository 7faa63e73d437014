//! `mdmctl generate mdm-apple`, `mdm-apple-bm` and `mdm-vendor-csr`, checked with `openssl`.

use std::os::unix::fs::PermissionsExt;

use base64::Engine;

use crate::common::{TestContext, contains, sqlite_bytes};

const APPLE_ROOT_SHA256: &str = "B0:B1:73:0E:CB:C7:FF:45:05:14:2C:49:F1:29:5E:6E:DA:6B:CA:ED:7E:2C:68:C5:BE:91:B5:A1:10:01:F0:24";
const WWDR_G3_SHA256: &str = "DC:F2:18:78:C7:7F:41:98:E4:B4:61:4F:03:D6:96:D8:9C:66:C6:60:08:D4:24:4E:1B:99:16:1A:AC:91:60:1F";

fn mode(t: &TestContext, name: &str) -> u32 {
    std::fs::metadata(t.path(name))
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn apns_csr_and_scep_ca_pass_openssl() {
    let t = TestContext::new();
    t.init();
    let r = t.run(&[
        "generate",
        "mdm-apple",
        "--email",
        "it@example.com",
        "--org",
        "Acme Corp",
    ]);
    r.success()
        .stdout_has("mdm-apple-apns.csr")
        .stdout_has("https://identity.apple.com")
        .stdout_has("mdmctl set mdm-apple --apns-cert")
        .stdout_has("vendor");
    // The CSR: signature verifies, SHA-256, RSA 2048, subject O and emailAddress.
    let csr = t.openssl(&[
        "req",
        "-in",
        "mdm-apple-apns.csr",
        "-noout",
        "-verify",
        "-text",
    ]);
    assert!(
        csr.stderr.contains("verify OK") || csr.stdout.contains("verify OK"),
        "{csr:?}"
    );
    assert!(
        csr.stdout.contains("O = Acme Corp") || csr.stdout.contains("O=Acme Corp"),
        "{}",
        csr.stdout
    );
    assert!(
        csr.stdout.contains("emailAddress = it@example.com")
            || csr.stdout.contains("emailAddress=it@example.com")
    );
    assert!(csr.stdout.contains("sha256WithRSAEncryption"));
    assert!(csr.stdout.contains("(2048 bit)"));
    // The key matches the CSR and is private.
    let key_mod = t
        .openssl(&["rsa", "-in", "mdm-apple-apns.key", "-noout", "-modulus"])
        .stdout;
    let csr_mod = t
        .openssl(&["req", "-in", "mdm-apple-apns.csr", "-noout", "-modulus"])
        .stdout;
    assert_eq!(key_mod.trim(), csr_mod.trim());
    assert_eq!(mode(&t, "mdm-apple-apns.key"), 0o600);
    assert_eq!(mode(&t, "mdm-apple-scep.key"), 0o600);
    assert_eq!(mode(&t, "mdm-apple-apns.csr"), 0o644);

    // The SCEP CA: extensions as specified.
    let ca = t
        .openssl(&["x509", "-in", "mdm-apple-scep.crt", "-noout", "-text"])
        .stdout;
    assert!(ca.contains("X509v3 Basic Constraints: critical"), "{ca}");
    assert!(ca.contains("CA:TRUE"));
    assert!(ca.contains("X509v3 Key Usage: critical"));
    // See: issue 10 §3: the key usage docs/operations.md describes.
    assert!(
        ca.contains("Digital Signature, Key Encipherment, Certificate Sign, CRL Sign"),
        "{ca}"
    );
    assert!(ca.contains("X509v3 Subject Key Identifier"));
    assert!(ca.contains("Public-Key: (2048 bit)"));
    let subject = t
        .openssl(&[
            "x509",
            "-in",
            "mdm-apple-scep.crt",
            "-noout",
            "-subject",
            "-nameopt",
            "RFC2253",
        ])
        .stdout;
    assert!(
        subject.contains("CN=Acme Corp MDM SCEP CA")
            && subject.contains("O=Acme Corp")
            && subject.contains("C=US"),
        "{subject}"
    );
    // Valid from ten minutes ago for ten years.
    let end_in_10y = t.openssl(&[
        "x509",
        "-in",
        "mdm-apple-scep.crt",
        "-noout",
        "-checkend",
        &(86400 * 3650 - 86400 * 2).to_string(),
    ]);
    assert!(end_in_10y.stdout.contains("will not expire"));
    t.openssl(&[
        "verify",
        "-CAfile",
        "mdm-apple-scep.crt",
        "mdm-apple-scep.crt",
    ]);

    // The keys are in the store too, but never in clear.
    let bytes = sqlite_bytes(&t.db());
    assert!(!contains(&bytes, "PRIVATE KEY"));
    let key_pem = String::from_utf8(t.read("mdm-apple-apns.key")).unwrap();
    let key_body: String = key_pem.lines().nth(1).unwrap().to_string();
    assert!(!contains(&bytes, &key_body));
}

#[test]
fn scep_ca_key_size_4096() {
    let t = TestContext::new();
    t.run(&[
        "generate",
        "mdm-apple",
        "--email",
        "it@example.com",
        "--org",
        "Acme",
        "--key-size",
        "4096",
    ])
    .success();
    let ca = t
        .openssl(&["x509", "-in", "mdm-apple-scep.crt", "-noout", "-text"])
        .stdout;
    assert!(ca.contains("Public-Key: (4096 bit)"));
    let apns = t
        .openssl(&["req", "-in", "mdm-apple-apns.csr", "-noout", "-text"])
        .stdout;
    assert!(apns.contains("(2048 bit)"), "the push key stays 2048 bits");
    t.run(&[
        "generate",
        "mdm-apple",
        "--email",
        "it@example.com",
        "--org",
        "Acme",
        "--key-size",
        "1024",
        "--force",
    ])
    .user_error();
}

/// A vendor certificate made with openssl, as an organisation's own "MDM CSR" cert would be.
fn make_vendor(t: &TestContext) {
    t.openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "vendor.key",
        "-out",
        "vendor.crt",
        "-subj",
        "/CN=MDM Vendor: Acme/O=Acme/C=US",
        "-days",
        "30",
    ]);
}

#[test]
fn vendor_signed_push_request_verifies_with_openssl() {
    let t = TestContext::new();
    make_vendor(&t);
    let r = t.run(&[
        "generate",
        "mdm-apple",
        "--email",
        "it@example.com",
        "--org",
        "Acme",
        "--vendor-cert",
        "vendor.crt",
        "--vendor-key",
        "vendor.key",
    ]);
    r.success().stdout_has("mdm-apple-push-request.b64");
    // A self-made vendor cert is not Apple's: the admin is told.
    r.stderr_has("not issued by Apple WWDR G3");

    let b64 = String::from_utf8(t.read("mdm-apple-push-request.b64")).unwrap();
    let xml = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .expect("the file is base64");
    let plist = plist::Value::from_reader_xml(&xml[..]).expect("an XML plist");
    let dict = plist.as_dictionary().unwrap();
    let csr_der = base64::engine::general_purpose::STANDARD
        .decode(dict["PushCertRequestCSR"].as_string().unwrap())
        .unwrap();
    let sig = base64::engine::general_purpose::STANDARD
        .decode(dict["PushCertSignature"].as_string().unwrap())
        .unwrap();
    let chain = dict["PushCertCertificateChain"].as_string().unwrap();

    // The CSR inside is the one written to disk.
    t.openssl(&[
        "req",
        "-in",
        "mdm-apple-apns.csr",
        "-outform",
        "DER",
        "-out",
        "csr.der",
    ]);
    assert_eq!(csr_der, t.read("csr.der"));
    // The signature is RSA PKCS#1 v1.5 SHA-256 by the vendor key over the CSR DER.
    t.write("sig.bin", &sig);
    t.openssl(&[
        "x509",
        "-in",
        "vendor.crt",
        "-pubkey",
        "-noout",
        "-out",
        "vendor.pub",
    ]);
    let v = t.openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        "vendor.pub",
        "-signature",
        "sig.bin",
        "csr.der",
    ]);
    assert!(v.stdout.contains("Verified OK"));

    // The chain: vendor certificate, Apple WWDR G3, Apple Root CA.
    let pems: Vec<String> = chain
        .split("-----END CERTIFICATE-----")
        .filter(|p| p.contains("BEGIN"))
        .map(|p| format!("{}-----END CERTIFICATE-----\n", p.trim_start()))
        .collect();
    assert_eq!(pems.len(), 3, "{chain}");
    let fp = |i: usize| {
        t.write(&format!("chain{i}.pem"), &pems[i]);
        t.openssl(&[
            "x509",
            "-in",
            &format!("chain{i}.pem"),
            "-noout",
            "-fingerprint",
            "-sha256",
        ])
        .stdout
    };
    let vendor_fp = t
        .openssl(&[
            "x509",
            "-in",
            "vendor.crt",
            "-noout",
            "-fingerprint",
            "-sha256",
        ])
        .stdout;
    assert_eq!(fp(0), vendor_fp);
    assert!(fp(1).contains(WWDR_G3_SHA256), "{}", fp(1));
    assert!(fp(2).contains(APPLE_ROOT_SHA256), "{}", fp(2));
    t.openssl(&["verify", "-CAfile", "chain2.pem", "chain1.pem"]);
}

#[test]
fn vendor_identity_from_a_p12() {
    let t = TestContext::new();
    make_vendor(&t);
    t.openssl(&[
        "pkcs12",
        "-export",
        "-in",
        "vendor.crt",
        "-inkey",
        "vendor.key",
        "-out",
        "vendor.p12",
        "-passout",
        "pass:p12pass",
    ]);
    t.run(&[
        "generate",
        "mdm-apple",
        "--email",
        "it@example.com",
        "--org",
        "Acme",
        "--vendor-cert",
        "vendor.p12",
        "--vendor-key-password",
        "p12pass",
    ])
    .success();
    assert!(t.exists("mdm-apple-push-request.b64"));
    t.run(&[
        "generate",
        "mdm-apple",
        "--email",
        "it@example.com",
        "--org",
        "Acme",
        "--vendor-cert",
        "vendor.p12",
        "--vendor-key-password",
        "wrong",
        "--force",
    ])
    .user_error()
    .stderr_has("vendor.p12");
}

#[test]
fn wrong_vendor_key_garbage_and_missing_files_write_nothing() {
    let t = TestContext::new();
    t.init();
    make_vendor(&t);
    t.openssl(&["genrsa", "-out", "other.key", "2048"]);
    t.write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    );
    let base = [
        "generate",
        "mdm-apple",
        "--email",
        "it@example.com",
        "--org",
        "Acme",
        "--out",
        "out",
    ];
    let with = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        t.run(&args)
    };
    with(&["--vendor-cert", "vendor.crt", "--vendor-key", "other.key"])
        .user_error()
        .stderr_has("does not match");
    with(&["--vendor-cert", "garbage.pem", "--vendor-key", "vendor.key"])
        .user_error()
        .stderr_has("garbage.pem")
        .stderr_has("not a certificate");
    with(&["--vendor-cert", "missing.crt", "--vendor-key", "vendor.key"])
        .user_error()
        .stderr_has("missing.crt")
        .stderr_has("--vendor-cert");
    with(&["--vendor-cert", "vendor.crt"])
        .user_error()
        .stderr_has("--vendor-key");
    assert!(!t.exists("out"), "nothing was written");
    let assets = t.run(&["--format", "json", "get", "mdm-apple"]);
    assert_eq!(
        assets.json()["scep_cas"].as_array().unwrap().len(),
        0,
        "nothing was stored"
    );
}

#[test]
fn expired_vendor_certificate_is_refused() {
    let t = TestContext::new();
    t.openssl(&["genrsa", "-out", "vendor.key", "2048"]);
    t.openssl(&[
        "req",
        "-new",
        "-key",
        "vendor.key",
        "-subj",
        "/CN=old vendor",
        "-out",
        "vendor.csr",
    ]);
    t.openssl(&[
        "x509",
        "-req",
        "-in",
        "vendor.csr",
        "-key",
        "vendor.key",
        "-days",
        "-1",
        "-out",
        "vendor.crt",
    ]);
    t.run(&[
        "generate",
        "mdm-apple",
        "--email",
        "it@example.com",
        "--org",
        "Acme",
        "--vendor-cert",
        "vendor.crt",
        "--vendor-key",
        "vendor.key",
    ])
    .user_error()
    .stderr_has("expired")
    .stderr_has("mdm-vendor-csr");
    assert!(!t.exists("mdm-apple-apns.key"));
}

#[test]
fn never_overwrites_without_force() {
    let t = TestContext::new();
    t.run(&[
        "generate",
        "mdm-apple",
        "--email",
        "it@example.com",
        "--org",
        "Acme",
    ])
    .success();
    let before = t.read("mdm-apple-apns.key");
    t.run(&[
        "generate",
        "mdm-apple",
        "--email",
        "it@example.com",
        "--org",
        "Acme",
    ])
    .user_error()
    .stderr_has("already exist")
    .stderr_has("--force");
    assert_eq!(before, t.read("mdm-apple-apns.key"));
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
    assert_ne!(before, t.read("mdm-apple-apns.key"));
}

#[test]
fn missing_or_malformed_email_and_org() {
    let t = TestContext::new();
    t.run(&["generate", "mdm-apple", "--org", "Acme"])
        .user_error()
        .stderr_has("missing `--email`");
    t.run(&["generate", "mdm-apple", "--email", "it@example.com"])
        .user_error()
        .stderr_has("missing `--org`");
    t.run(&[
        "generate",
        "mdm-apple",
        "--email",
        "not-an-email",
        "--org",
        "Acme",
    ])
    .user_error()
    .stderr_has("`not-an-email` is not an email address");
    assert!(!t.exists("mdm-apple-apns.key"));
}

#[test]
fn without_a_store_the_files_are_the_only_copy() {
    let t = TestContext::new();
    t.run(&[
        "generate",
        "mdm-apple",
        "--email",
        "it@example.com",
        "--org",
        "Acme",
    ])
    .success()
    .stdout_has("No store at")
    .stdout_has("--apns-key");
    assert!(!t.db().exists());
}

#[test]
fn json_output_lists_files_and_next_steps() {
    let t = TestContext::new();
    t.init();
    let j = t
        .run(&[
            "--format",
            "json",
            "generate",
            "mdm-apple",
            "--email",
            "it@example.com",
            "--org",
            "Acme",
            "--out",
            "certs",
        ])
        .success()
        .json();
    let files: Vec<&str> = j["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(files.len(), 4);
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("certs/mdm-apple-scep.crt"))
    );
    assert!(j["store"]["scep_ca_sha256"].as_str().unwrap().len() == 64);
    assert!(j["next_steps"].as_array().unwrap().len() >= 3);
}

#[test]
fn abm_key_pair_and_vendor_csr() {
    let t = TestContext::new();
    t.init();
    t.run(&["generate", "mdm-apple-bm"])
        .success()
        .stdout_has("business.apple.com");
    assert_eq!(mode(&t, "mdm-apple-bm.key"), 0o600);
    let cert = t
        .openssl(&["x509", "-in", "mdm-apple-bm.crt", "-noout", "-text"])
        .stdout;
    assert!(cert.contains("Public-Key: (2048 bit)"));
    t.openssl(&["verify", "-CAfile", "mdm-apple-bm.crt", "mdm-apple-bm.crt"]);
    let key_mod = t
        .openssl(&["rsa", "-in", "mdm-apple-bm.key", "-noout", "-modulus"])
        .stdout;
    let cert_mod = t
        .openssl(&["x509", "-in", "mdm-apple-bm.crt", "-noout", "-modulus"])
        .stdout;
    assert_eq!(key_mod, cert_mod);

    t.run(&[
        "generate",
        "mdm-vendor-csr",
        "--email",
        "dev@example.com",
        "--org",
        "Acme",
    ])
    .success()
    .stdout_has("MDM CSR");
    let csr = t.openssl(&[
        "req",
        "-in",
        "mdm-vendor.csr",
        "-noout",
        "-verify",
        "-subject",
    ]);
    assert!(
        csr.stdout.contains("emailAddress") && csr.stdout.contains("Acme"),
        "{csr:?}"
    );
    assert_eq!(mode(&t, "mdm-vendor.key"), 0o600);
}

// See: issue 10 §3: a second `generate mdm-apple` made and activated a new SCEP CA (the issuer
// changed behind the admin's back), and told a store with devices to "Create a Certificate".
#[test]
fn a_store_that_issues_keeps_its_ca_and_is_told_to_renew() {
    let t = TestContext::new();
    t.init();
    let generate = |extra: &[&str]| {
        let mut args = vec![
            "--format",
            "json",
            "generate",
            "mdm-apple",
            "--email",
            "it@example.com",
            "--org",
            "Acme",
            "--vendor-cert",
            "vendor.crt",
            "--vendor-key",
            "vendor.key",
            "--force",
        ];
        args.extend(extra);
        t.run(&args).success().json()
    };
    make_vendor(&t);
    // A new store: the push CSR and a SCEP CA, which becomes the issuing CA.
    let first = generate(&[]);
    let ca = first["store"]["scep_ca_sha256"]
        .as_str()
        .expect("a SCEP CA is made")
        .to_string();
    assert!(t.exists("mdm-apple-scep.crt"));
    let next = first["next_steps"][0].as_str().unwrap();
    assert!(next.contains("Create a Certificate"), "{next}");
    std::fs::remove_file(t.path("mdm-apple-scep.crt")).unwrap();

    // Again, on a store that issues: the push CSR only; the CA stays the issuer.
    let again = generate(&[]);
    assert!(again["store"]["scep_ca_id"].is_null(), "{again:#}");
    assert!(!t.exists("mdm-apple-scep.crt"), "no SCEP CA file written");
    let cas = t
        .run(&["--format", "json", "get", "mdm-apple"])
        // Exit 1: no push certificate yet; the JSON still lists the CAs.
        .json();
    let issuing: Vec<_> = cas["scep_cas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] == "active")
        .collect();
    assert_eq!(issuing.len(), 1, "{cas:#}");
    assert_eq!(issuing[0]["sha256"], ca.as_str(), "{cas:#}");

    // Asked for: a new CA becomes the issuer, the old one stays trusted.
    let asked = generate(&["--scep-ca"]);
    assert!(
        asked["store"]["scep_ca_sha256"]
            .as_str()
            .is_some_and(|s| s != ca),
        "{asked:#}"
    );

    // With a push certificate in the store, Apple's portal must renew it.
    t.fake_apple();
    t.apple_signs(
        "mdm-apple-apns.csr",
        &crate::common::topic(7),
        365,
        "push.pem",
    );
    t.run(&["set", "mdm-apple", "--apns-cert", "push.pem"])
        .success();
    let renew = generate(&[]);
    let next = renew["next_steps"][0].as_str().unwrap();
    assert!(
        next.contains("\"Renew\"") && next.contains("never \"Create a Certificate\""),
        "{next}"
    );
    let text = t
        .run(&[
            "generate",
            "mdm-apple",
            "--email",
            "it@example.com",
            "--org",
            "Acme",
            "--force",
        ])
        .success()
        .stdout
        .clone();
    assert!(
        text.contains("Renew") && !text.contains("choose \"Create a Certificate\""),
        "{text}"
    );
}
