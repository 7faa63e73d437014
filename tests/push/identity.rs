//! Loading the push identity from PEM: key forms, mismatches, missing
//! topics, and errors that name what is wrong.

use mdmctl::push::{IdentityError, PushIdentity};
use mdmctl::sim::apns::{PushCertOptions, TestPushCa};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::symm::Cipher;
use openssl::x509::{X509, X509NameBuilder};

fn minted() -> (TestPushCa, mdmctl::sim::apns::MintedPushCert) {
    let ca = TestPushCa::generate().expect("ca");
    let cert = ca
        .issue_push_certificate(&PushCertOptions::default())
        .expect("cert");
    (ca, cert)
}

#[test]
fn loads_pkcs1_and_pkcs8_keys_and_extracts_the_topic() {
    let (_, cert) = minted();
    let pem = cert.cert_pem().expect("pem");
    let pkcs1 = cert.key_pem_pkcs1().expect("pem");
    let pkcs8 = cert.key_pem_pkcs8().expect("pem");
    assert!(String::from_utf8_lossy(&pkcs1).contains("BEGIN RSA PRIVATE KEY"));
    assert!(String::from_utf8_lossy(&pkcs8).contains("BEGIN PRIVATE KEY"));
    for key in [&pkcs1, &pkcs8] {
        let id = PushIdentity::from_pem(&pem, key).expect("identity");
        assert_eq!(id.topic(), cert.topic);
        assert!(id.topic().starts_with("com.apple.mgmt.External."));
        assert!(id.check_validity(std::time::SystemTime::now()).is_ok());
        let debug = format!("{id:?}");
        assert!(debug.contains(&cert.topic) && !debug.contains("PRIVATE"));
    }
}

#[test]
fn chain_after_the_leaf_is_accepted() {
    let (ca, cert) = minted();
    let mut pem = cert.cert_pem().expect("pem");
    pem.extend(ca.certificate().to_pem().expect("pem"));
    let id = PushIdentity::from_pem(&pem, &cert.key_pem_pkcs8().expect("pem")).expect("identity");
    assert_eq!(id.topic(), cert.topic);
}

#[test]
fn a_key_that_does_not_match_is_named() {
    let (ca, cert) = minted();
    let other = ca
        .issue_push_certificate(&PushCertOptions::default())
        .expect("cert");
    let err = PushIdentity::from_pem(
        &cert.cert_pem().expect("pem"),
        &other.key_pem_pkcs1().expect("pem"),
    )
    .expect_err("mismatch");
    assert!(matches!(err, IdentityError::KeyMismatch), "{err:?}");
    assert_eq!(
        err.to_string(),
        "the private key does not match the push certificate"
    );
}

#[test]
fn a_certificate_without_uid_has_no_topic() {
    let key = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("pkey");
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_nid(Nid::COMMONNAME, "not a push cert")
        .expect("cn");
    let name = name.build();
    let mut b = X509::builder().expect("builder");
    b.set_version(2).expect("v3");
    b.set_subject_name(&name).expect("subject");
    b.set_issuer_name(&name).expect("issuer");
    b.set_pubkey(&key).expect("key");
    b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).expect("t"))
        .expect("nb");
    b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(30).expect("t"))
        .expect("na");
    b.sign(&key, openssl::hash::MessageDigest::sha256())
        .expect("sign");
    let cert = b.build();
    let err = PushIdentity::from_pem(
        &cert.to_pem().expect("pem"),
        &key.private_key_to_pem_pkcs8().expect("pem"),
    )
    .expect_err("no topic");
    assert!(matches!(err, IdentityError::MissingTopic), "{err:?}");
    assert!(err.to_string().contains("uid"));
}

#[test]
fn garbage_and_empty_inputs_are_named() {
    let (_, cert) = minted();
    let key = cert.key_pem_pkcs8().expect("pem");
    let err = PushIdentity::from_pem(b"not a pem", &key).expect_err("garbage cert");
    assert!(
        matches!(
            err,
            IdentityError::CertificatePem(_) | IdentityError::NoCertificate
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("certificate"));
    let err =
        PushIdentity::from_pem(&cert.cert_pem().expect("pem"), b"nope").expect_err("garbage key");
    assert!(matches!(err, IdentityError::KeyPem(_)), "{err:?}");
    assert!(err.to_string().contains("private key"));
}

#[test]
fn encrypted_keys_need_their_passphrase() {
    let (_, cert) = minted();
    let encrypted = cert
        .private_key
        .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), b"s3cret")
        .expect("encrypt");
    let pem = cert.cert_pem().expect("pem");
    let err = PushIdentity::from_pem(&pem, &encrypted).expect_err("encrypted");
    assert!(matches!(err, IdentityError::EncryptedKey), "{err:?}");
    let id = PushIdentity::from_pem_with_passphrase(&pem, &encrypted, b"s3cret").expect("decrypts");
    assert_eq!(id.topic(), cert.topic);
    assert!(PushIdentity::from_pem_with_passphrase(&pem, &encrypted, b"wrong").is_err());
}

#[test]
fn files_are_named_in_errors() {
    let missing = std::path::Path::new("/nonexistent/push.pem");
    let err = PushIdentity::from_pem_files(missing, missing).expect_err("missing");
    assert!(err.to_string().contains("/nonexistent/push.pem"), "{err}");
    assert!(err.to_string().contains("push certificate"), "{err}");
}

#[test]
fn validity_is_reported() {
    let (ca, _) = minted();
    let expired = ca
        .issue_push_certificate(&PushCertOptions::expired())
        .expect("cert");
    let id = expired.identity().expect("identity loads");
    let err = id
        .check_validity(std::time::SystemTime::now())
        .expect_err("expired");
    assert!(matches!(err, IdentityError::Expired { .. }));
    assert!(id.not_after() < std::time::SystemTime::now());
    let future = ca
        .issue_push_certificate(&PushCertOptions {
            not_before: std::time::SystemTime::now() + std::time::Duration::from_secs(86_400),
            ..PushCertOptions::default()
        })
        .expect("cert");
    let err = future
        .identity()
        .expect("identity")
        .check_validity(std::time::SystemTime::now())
        .expect_err("not yet valid");
    assert!(matches!(err, IdentityError::NotYetValid { .. }));
}
