//! Requests that must be refused, and leave the real device untouched: a certificate from an
//! unknown CA, another device's certificate, an expired one, a body that does not match its
//! signature, no identity at all. Always 400 or 403, never 401.

use mdmctl::sim::device::{IdentityMode, SimDevice};

use crate::harness::{Ca, Options, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impostors_are_refused_and_the_real_device_is_untouched() {
    let s = Server::start(Options::default()).await;
    let old = Ca::new("Old CA");
    s.trust_old_ca(&old);
    let real = s.migrated(1, &old, IdentityMode::Signature);
    let other = s.migrated(2, &old, IdentityMode::Signature);
    let snapshot = |udid: &str| {
        let d = s.store.read(|tx| tx.device(udid)).unwrap().unwrap();
        (d.identity_sha256, d.migrated_at, d.last_seen_at)
    };
    let before = snapshot(&real.udid);

    let impostor = |cert: openssl::x509::X509, key: openssl::pkey::PKey<openssl::pkey::Private>| {
        SimDevice::new(9, "15.0", IdentityMode::Signature, s.http(), &[])
            .unwrap()
            .with_identity(cert, key, s.endpoint())
            .unwrap()
            .with_ids(
                &real.udid,
                &real.serial,
                real.token.clone(),
                &real.push_magic,
            )
    };
    // 1. A certificate from a CA the store does not know.
    let stranger = Ca::new("Stranger CA").issue("x", -1, 30);
    assert_eq!(
        impostor(stranger.0, stranger.1).session().await.unwrap(),
        403
    );
    // 2. Another device's certificate (valid, trusted, but bound to device 2).
    let theirs = impostor(other.identity().unwrap(), other.key().clone());
    assert_eq!(theirs.session().await.unwrap(), 403);
    // 3. An expired certificate from the trusted old CA.
    let expired = old.issue("expired", -400, -35);
    assert_eq!(impostor(expired.0, expired.1).session().await.unwrap(), 403);
    // 4. The real certificate, but a body that is not what was signed.
    let signed_for = real.idle_body();
    let headers = real.identity_headers(&signed_for).unwrap();
    let mut tampered = String::from_utf8(signed_for).unwrap();
    tampered = tampered.replace("Idle", "Idle ");
    let (status, _) = real
        .send_with(false, tampered.into_bytes(), headers)
        .await
        .unwrap();
    assert_eq!(status, 400);
    // 5. No identity at all.
    let (status, _) = real
        .send_with(false, real.idle_body(), Vec::new())
        .await
        .unwrap();
    assert_eq!(status, 400);
    // 6. Authenticate claiming the real device with another device's bound certificate.
    assert_eq!(theirs.authenticate().await.unwrap(), 403);

    assert_eq!(
        snapshot(&real.udid),
        before,
        "nothing about the real device changed"
    );
    // The real device still works.
    assert_eq!(real.session().await.unwrap(), 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_ca_identity_cannot_rebind_a_known_device() {
    let s = Server::start(Options::default()).await;
    let old = Ca::new("Old CA");
    s.trust_old_ca(&old);
    let real = s.migrated(1, &old, IdentityMode::Signature);
    // An unbound certificate from the old CA tries to re-enroll as the real device.
    let (cert, key) = old.issue("leftover", -10, 300);
    let thief = SimDevice::new(5, "15.0", IdentityMode::Signature, s.http(), &[])
        .unwrap()
        .with_identity(cert, key, s.endpoint())
        .unwrap()
        .with_ids(
            &real.udid,
            &real.serial,
            real.token.clone(),
            &real.push_magic,
        );
    assert_eq!(thief.authenticate().await.unwrap(), 403);
    let d = s.store.read(|tx| tx.device(&real.udid)).unwrap().unwrap();
    assert_eq!(d.identity_sha256, real.identity_sha256());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_devices_and_garbage_get_403_and_400() {
    let s = Server::start(Options::default()).await;
    // Trusted CA, valid certificate, but no such device: not enrolled here, not imported.
    let (cert, key) = s.ca.issue("nobody", -1, 30);
    let ghost = SimDevice::new(7, "15.0", IdentityMode::Signature, s.http(), &[])
        .unwrap()
        .with_identity(cert, key, s.endpoint())
        .unwrap();
    assert_eq!(ghost.session().await.unwrap(), 403);
    let (status, _) = ghost.send(true, b"not a plist".to_vec()).await.unwrap();
    assert_eq!(status, 400);
    let (status, _) = ghost
        .send(
            false,
            b"<plist><dict><key>Status</key><string>Idle</string></dict></plist>".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(status, 400, "no UDID");
    s.stop().await;
}
