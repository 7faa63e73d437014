//! A new Mac installs the enrollment profile from `/enroll`: SCEP, Authenticate, TokenUpdate.

use mdmctl::apple::command::named;
use mdmctl::sim::device::{Fleet, IdentityMode};
use mdmctl::store::{ActivityQuery, QueueStatus};

use crate::harness::{Options, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_mac_enrolls_from_the_profile_and_gets_a_pushed_command() {
    let s = Server::start(Options::default()).await;
    let mac = s.enroll(1, IdentityMode::Signature).await;

    let d = s
        .store
        .read(|tx| tx.device(&mac.udid))
        .unwrap()
        .expect("device recorded");
    assert_eq!(d.source, "enrolled");
    assert_eq!(d.serial.as_deref(), Some(mac.serial.as_str()));
    assert_eq!(
        d.identity_sha256,
        mac.identity_sha256(),
        "Authenticate bound the SCEP identity"
    );
    let e = s
        .store
        .read(|tx| tx.enrollment(&mac.udid))
        .unwrap()
        .expect("device channel");
    assert!(e.enabled);
    assert_eq!(e.topic, s.topic);
    assert_eq!(
        e.token.as_deref().map(|t| t.to_vec()),
        Some(mac.token.clone())
    );
    let kinds: Vec<String> = s
        .store
        .read(|tx| tx.activities(&ActivityQuery::default()))
        .unwrap()
        .into_iter()
        .map(|a| a.kind)
        .collect();
    for k in ["scep.issued", "device.enrolled", "enrollment.added"] {
        assert!(kinds.contains(&k.to_string()), "{k} in {kinds:?}");
    }

    // A command, pushed through the APNs stand-in, wakes the Mac, which answers it.
    let fleet = Fleet::new([mac.clone()]);
    let waker = fleet.wake_on_push(s.apns.subscribe());
    let cmd = named::device_information(named::DEFAULT_QUERIES);
    let sent = mdmctl::mdm::send(
        &s.store,
        Some(&s.pushes),
        &cmd,
        std::slice::from_ref(&mac.serial),
        "tester",
    )
    .await
    .unwrap();
    assert_eq!(
        sent.queued,
        vec![mac.udid.clone()],
        "a serial number names the device"
    );
    assert_eq!(sent.push.as_ref().unwrap().delivered, 1);
    let push = &s.apns.pushes_for(&mac.token_hex())[0];
    assert_eq!(push.push_magic, mac.push_magic);
    assert_eq!(push.topic, s.topic);
    wait_until(|| {
        mdmctl::mdm::status(s.store.as_ref(), &cmd.uuid).unwrap()[0].status
            == QueueStatus::Acknowledged
    })
    .await;
    assert_eq!(
        mac.handled().last().unwrap().request_type,
        "DeviceInformation"
    );
    waker.abort();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_needs_a_valid_challenge() {
    let s = Server::start(Options {
        scep_challenge: None,
        ..Default::default()
    })
    .await;
    // Without a static challenge, each downloaded profile carries a one-time challenge.
    let first = s.enroll(1, IdentityMode::Signature).await;
    assert!(first.identity().is_some());
    let profile = s
        .http()
        .get(s.enroll_url())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let a = mdmctl::sim::device::SimDevice::new(2, "15.0", IdentityMode::Signature, s.http(), &[])
        .unwrap();
    a.enroll(&profile).await.unwrap();
    // The same profile (same challenge) does not enroll a second device.
    let b = mdmctl::sim::device::SimDevice::new(3, "15.0", IdentityMode::Signature, s.http(), &[])
        .unwrap();
    let err = b.enroll(&profile).await.unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn landing_page_health_and_scep_caps() {
    let s = Server::start(Options::default()).await;
    let http = s.http();
    let page = http
        .get(format!("{}/", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("/enroll") && page.contains("Test Org"));
    assert_eq!(
        http.get(format!("{}/healthz", s.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let caps = http
        .get(format!("{}/scep?operation=GetCACaps", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(caps.contains("POSTPKIOperation") && caps.contains("SHA-256") && caps.contains("AES"));
    let ca = http
        .get(format!("{}/mdm/apple/scep?operation=GetCACert", s.url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        openssl::x509::X509::from_der(&ca)
            .unwrap()
            .to_der()
            .unwrap(),
        s.ca.cert.to_der().unwrap()
    );
    let r = http.get(s.enroll_url()).send().await.unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "application/x-apple-aspen-config"
    );
    s.stop().await;
}

pub async fn wait_until(mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("condition not reached within 5 s");
}
