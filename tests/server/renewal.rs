//! Identity renewal for migrated devices: a Mac whose old-CA identity expires within 30 days is
//! sent an enrollment profile that keeps the old PayloadIdentifier, ServerURL and Topic, enrolls
//! through mdmctl's SCEP, and keeps working on the new identity (the old one is refused after).
//! A Mac that refuses the profile, or that cannot be renewed, is reported.

use mdmctl::sim::device::{Fleet, IdentityMode, SimDevice};
use mdmctl::store::RenewalState;

use crate::harness::{Ca, Options, Renew, Server};
use crate::reconcile::{handled, wait_for};

const OLD_PROFILE: &str = "com.oldmdm.enrollment";

fn renewal(s: &Server, udid: &str) -> Option<(RenewalState, Option<String>)> {
    s.store
        .read(|tx| tx.renewal(udid))
        .unwrap()
        .map(|r| (r.status, r.reason))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_mac_near_expiry_renews_through_scep_and_keeps_working() {
    let s = Server::start(Options {
        renew: Some(Renew::OldProfile(OLD_PROFILE.into())),
        ..Options::default()
    })
    .await;
    let old = Ca::new("Old MDM SCEP CA");
    s.trust_old_ca(&old);
    let due = s.migrated_expiring(1, &old, IdentityMode::Signature, 20);
    due.set_enrollment_profile(OLD_PROFILE);
    let later = s.migrated_expiring(2, &old, IdentityMode::Signature, 200);
    later.set_enrollment_profile(OLD_PROFILE);
    // Enrolled by a profile with another identifier: macOS refuses a second MDM profile.
    let other = s.migrated_expiring(3, &old, IdentityMode::Signature, 10);
    other.set_enrollment_profile("com.someone-else.enrollment");
    let (old_cert, old_key) = (due.identity().unwrap(), due.key().clone());
    let old_sha = due.identity_sha256().unwrap();
    let waker =
        Fleet::new([due.clone(), later.clone(), other.clone()]).wake_on_push(s.apns.subscribe());

    // Each Mac checks in after the cutover (a renewal queued before the push could reach it is
    // picked up then); the push wakes the rest. The due Mac installs the profile and enrolls
    // with mdmctl's SCEP.
    for mac in [&due, &later, &other] {
        assert_eq!(mac.session().await.unwrap(), 200);
    }
    wait_for(15, "a new identity from mdmctl's SCEP", || {
        due.identity_sha256().is_some_and(|h| h != old_sha)
    })
    .await;
    let new_cert = due.identity().unwrap();
    assert_eq!(
        new_cert.issuer_name().to_der().unwrap(),
        s.ca.cert.subject_name().to_der().unwrap(),
        "issued by mdmctl's CA"
    );
    assert_eq!(renewal(&s, &due.udid).unwrap().0, RenewalState::Sent);

    // Meanwhile someone with the enrollment's static SCEP challenge gets a certificate from
    // mdmctl's CA and claims the Mac's UDID: not the certificate its renewal issued, refused.
    let claimer =
        SimDevice::new(7, "15.1", IdentityMode::Signature, s.http(), &s.tls_roots).unwrap();
    let mut subject = openssl::x509::X509NameBuilder::new().unwrap();
    subject.append_entry_by_text("CN", "claimer").unwrap();
    let claimed = claimer
        .scep_enroll(
            &format!("{}/scep", s.url),
            &subject.build(),
            Some("static-challenge"),
            None,
        )
        .await
        .unwrap();
    let key = claimer.key().clone();
    let claimer = claimer
        .with_identity(claimed, key, s.endpoint())
        .unwrap()
        .with_ids(&due.udid, &due.serial, due.token.clone(), &due.push_magic);
    assert_eq!(claimer.session().await.unwrap(), 403);
    assert_eq!(renewal(&s, &due.udid).unwrap().0, RenewalState::Sent);

    // Its next request moves the association; it keeps working on the new identity.
    assert_eq!(due.session().await.unwrap(), 200);
    assert_eq!(renewal(&s, &due.udid).unwrap().0, RenewalState::Renewed);
    let stored = s.store.read(|tx| tx.device(&due.udid)).unwrap().unwrap();
    assert_eq!(stored.identity_sha256, due.identity_sha256());
    let new_expiry = stored.identity_not_after.unwrap();
    assert!(new_expiry.0 > mdmctl::timestamp::Timestamp::now().0 + 300 * 86_400);
    let token = crate::api::token(&s, "ops").await;
    crate::api::mdmctl(
        &s,
        Some(&token),
        &["mdm", "device-information", "--udid", &due.udid],
    )
    .await
    .success();
    wait_for(15, "DeviceInformation answered on the new identity", || {
        due.handled()
            .iter()
            .any(|h| h.request_type == "DeviceInformation" && h.status == "Acknowledged")
    })
    .await;

    // The old identity no longer gets in.
    let impostor = SimDevice::new(1, "14.6", IdentityMode::Signature, s.http(), &s.tls_roots)
        .unwrap()
        .with_identity(old_cert, old_key, s.endpoint())
        .unwrap()
        .with_ids(&due.udid, &due.serial, due.token.clone(), &due.push_magic);
    assert_eq!(impostor.session().await.unwrap(), 403);

    // Not due yet: nothing sent. Refused by the Mac: reported with its reason.
    wait_for(15, "the refusal recorded", || {
        renewal(&s, &other.udid).is_some_and(|r| r.0 == RenewalState::Failed)
    })
    .await;
    let (_, reason) = renewal(&s, &other.udid).unwrap();
    assert!(reason.unwrap().contains("second one"));
    assert_eq!(renewal(&s, &later.udid), None);
    assert_eq!(handled(&later, "InstallProfile"), 0);

    let shown = crate::api::mdmctl(&s, None, &["get", "device", &due.udid]).await;
    shown.success().stdout_has("Identity renewal: renewed");
    let kinds: Vec<String> = crate::api::activities(&s, "identity.")
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    for k in [
        "identity.renewal_sent",
        "identity.renewed",
        "identity.renewal_failed",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
    }
    waker.abort();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_old_enrollment_profile_expiring_macs_are_reported() {
    let s = Server::start(Options {
        renew: Some(Renew::Blocked),
        ..Options::default()
    })
    .await;
    let old = Ca::new("Old MDM SCEP CA");
    s.trust_old_ca(&old);
    let mac = s.migrated_expiring(1, &old, IdentityMode::Signature, 12);
    wait_for(15, "the device reported", || {
        renewal(&s, &mac.udid).is_some_and(|r| r.0 == RenewalState::Failed)
    })
    .await;
    let (_, reason) = renewal(&s, &mac.udid).unwrap();
    assert!(reason.unwrap().contains("--migration-enrollment-profile"));
    let shown = crate::api::mdmctl(&s, None, &["get", "device", &mac.udid]).await;
    shown
        .success()
        .stdout_has("Identity renewal: failed (cannot renew");
    assert_eq!(handled(&mac, "InstallProfile"), 0);
    // It still works on its old identity meanwhile.
    assert_eq!(mac.session().await.unwrap(), 200);
    s.stop().await;
}
