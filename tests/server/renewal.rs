//! Identity renewal for migrated devices: a Mac whose old-CA identity expires within 30 days is
//! sent an enrollment profile that keeps the old PayloadIdentifier, ServerURL and Topic, enrolls
//! through mdmctl's SCEP, and keeps working on the new identity (the old one is refused after).
//! A Mac that refuses the profile, or that cannot be renewed, is reported.

use mdmctl::apple::command::named;
use mdmctl::sim::device::{Fleet, IdentityMode, SimDevice};
use mdmctl::store::{QueueStatus, RenewalState};

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
    // macOS restarts check-in after the enrollment update either before or after it
    // acknowledges the InstallProfile: one Mac of each.
    let early = s.migrated_expiring(4, &old, IdentityMode::Signature, 25);
    early.set_enrollment_profile(OLD_PROFILE);
    early.renew_before_ack();
    let later = s.migrated_expiring(2, &old, IdentityMode::Signature, 200);
    later.set_enrollment_profile(OLD_PROFILE);
    // Enrolled by a profile with another identifier: macOS refuses a second MDM profile.
    let other = s.migrated_expiring(3, &old, IdentityMode::Signature, 10);
    other.set_enrollment_profile("com.someone-else.enrollment");
    let (old_cert, old_key) = (due.identity().unwrap(), due.key().clone());
    let old_sha = due.identity_sha256().unwrap();
    let waker = Fleet::new([due.clone(), early.clone(), later.clone(), other.clone()])
        .wake_on_push(s.apns.subscribe());

    // What a renewal must not wipe (see: issue 10 §4; fleetdm/fleet#41167): each renewing Mac
    // escrowed a bootstrap token, and has a command it put off (NotNow) in its queue.
    let info = named::device_information(&[]);
    let renewing = [due.clone(), early.clone()];
    for mac in &renewing {
        let mut m = plist::Dictionary::new();
        m.insert("MessageType".into(), "SetBootstrapToken".into());
        m.insert(
            "BootstrapToken".into(),
            plist::Value::Data(b"bootstrap".to_vec()),
        );
        assert_eq!(mac.checkin(m).await.unwrap().0, 200);
        mac.not_now_once("DeviceInformation");
    }
    let udids: Vec<String> = renewing.iter().map(|m| m.udid.clone()).collect();
    mdmctl::mdm::send(&s.store, None, &info, &udids, "tester")
        .await
        .unwrap();

    // Each Mac checks in after the cutover (a renewal queued before the push could reach it is
    // picked up then); the push wakes the rest. The due Macs install the profile, enroll with
    // mdmctl's SCEP and restart check-in (Authenticate, TokenUpdate) with the new identity.
    for mac in [&due, &early, &later, &other] {
        assert_eq!(mac.session().await.unwrap(), 200);
    }
    for mac in &renewing {
        wait_for(
            15,
            "the renewal completed by the restarted check-in",
            || renewal(&s, &mac.udid).is_some_and(|r| r.0 == RenewalState::Renewed),
        )
        .await;
        assert_ne!(mac.identity_sha256(), Some(old_sha.clone()));
        let stored = s.store.read(|tx| tx.device(&mac.udid)).unwrap().unwrap();
        assert_eq!(
            stored.identity_sha256,
            mac.identity_sha256(),
            "{}",
            mac.udid
        );
        assert_eq!(
            stored.bootstrap_token.as_deref().map(|t| t.to_vec()),
            Some(b"bootstrap".to_vec()),
            "the bootstrap token survives the renewal"
        );
        let e = s.store.read(|tx| tx.enrollments_of(&mac.udid)).unwrap();
        assert!(e[0].enabled, "the enrollment stays enabled");
        let queued = mdmctl::mdm::status(s.store.as_ref(), &info.uuid).unwrap();
        let mine = queued.iter().find(|q| q.enrollment_id == mac.udid).unwrap();
        assert_ne!(mine.status, QueueStatus::Acknowledged);
        // The renewal profile keeps what the installed enrollment has: its identifier,
        // ServerCapabilities, AccessRights, and the private anchor it installed.
        let update = &mac.enrollment_updates()[0];
        assert_eq!(update["PayloadIdentifier"].as_string(), Some(OLD_PROFILE));
        let payloads: Vec<&plist::Dictionary> = update["PayloadContent"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p.as_dictionary())
            .collect();
        let anchor = payloads
            .iter()
            .find(|p| p["PayloadType"].as_string() == Some("com.apple.security.root"))
            .expect("the old profile's anchor is still there");
        assert_eq!(
            anchor["PayloadContent"].as_data(),
            Some(s.old_anchor.as_ref().unwrap().to_der().unwrap().as_slice())
        );
        assert_eq!(
            anchor["PayloadUUID"].as_string(),
            Some("0B1D0000-0000-4000-8000-0000000000A1")
        );
        let mdm = payloads
            .iter()
            .find(|p| p["PayloadType"].as_string() == Some("com.apple.mdm"))
            .unwrap();
        assert_eq!(mdm["AccessRights"].as_unsigned_integer(), Some(4095));
        assert_eq!(
            mdm["ServerCapabilities"].as_array().unwrap(),
            &vec![plist::Value::from("com.apple.mdm.per-user-connections")]
        );
    }
    let new_cert = due.identity().unwrap();
    assert_eq!(
        new_cert.issuer_name().to_der().unwrap(),
        s.ca.cert.subject_name().to_der().unwrap(),
        "issued by mdmctl's CA"
    );
    // The command it put off is still delivered, on the new identity.
    for mac in &renewing {
        assert_eq!(mac.session().await.unwrap(), 200);
    }
    wait_for(
        15,
        "the queued command answered on the new identity",
        || {
            mdmctl::mdm::status(s.store.as_ref(), &info.uuid)
                .unwrap()
                .iter()
                .all(|q| q.status == QueueStatus::Acknowledged)
        },
    )
    .await;

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
    // Nor may it re-enroll as that Mac (see: issue 11 §2).
    assert_eq!(claimer.authenticate().await.unwrap(), 403);
    assert_eq!(renewal(&s, &due.udid).unwrap().0, RenewalState::Renewed);
    let stored = s.store.read(|tx| tx.device(&due.udid)).unwrap().unwrap();
    assert_eq!(
        stored.identity_sha256,
        due.identity_sha256(),
        "the binding stays"
    );

    // It keeps working on the new identity.
    let stored = s.store.read(|tx| tx.device(&due.udid)).unwrap().unwrap();
    let new_expiry = stored.identity_not_after.unwrap();
    assert!(new_expiry.0 > mdmctl::timestamp::Timestamp::now().0 + 300 * 86_400);
    assert_eq!(due.session().await.unwrap(), 200);

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
    assert_eq!(
        crate::api::activities(&s, "device.checkin_restarted")
            .await
            .len(),
        2,
        "one restarted check-in per renewed Mac"
    );
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
