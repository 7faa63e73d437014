//! The cutover: Macs the old MDM enrolled keep their old identity and push token, and carry on.

use mdmctl::apple::command::named;
use mdmctl::sim::device::{Fleet, IdentityMode};
use mdmctl::store::{ActivityQuery, QueueStatus};

use crate::enrollment::wait_until;
use crate::harness::{Ca, Options, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrated_macs_check_in_with_their_old_identity_and_get_commands() {
    let s = Server::start(Options::default()).await;
    let old = Ca::new("MICROMDM SCEP CA");
    s.trust_old_ca(&old);
    let macs: Vec<_> = (0..5)
        .map(|i| s.migrated(i, &old, IdentityMode::Signature))
        .collect();
    let fleet = Fleet::new(macs.iter().cloned());
    let waker = fleet.wake_on_push(s.apns.subscribe());

    let before = s
        .store
        .read(|tx| tx.device(&macs[0].udid))
        .unwrap()
        .unwrap();
    assert!(before.migrated_at.is_none());

    let cmd = named::profile_list(true);
    let targets: Vec<String> = macs.iter().map(|m| m.udid.clone()).collect();
    let sent = mdmctl::mdm::send(&s.store, Some(&s.pushes), &cmd, &targets, "tester")
        .await
        .unwrap();
    assert_eq!(sent.push.unwrap().delivered, 5);
    wait_until(|| {
        mdmctl::mdm::status(s.store.as_ref(), &cmd.uuid)
            .unwrap()
            .iter()
            .all(|e| e.status == QueueStatus::Acknowledged)
    })
    .await;
    for m in &macs {
        let d = s.store.read(|tx| tx.device(&m.udid)).unwrap().unwrap();
        assert!(
            d.migrated_at.is_some(),
            "first contact after cutover is recorded"
        );
        assert_eq!(
            d.identity_sha256,
            m.identity_sha256(),
            "still the old identity: no re-enrollment"
        );
        assert!(
            m.handled()
                .iter()
                .any(|h| h.request_type == "ProfileList" && h.status == "Acknowledged")
        );
    }
    let migrated = s
        .store
        .read(|tx| {
            tx.activities(&ActivityQuery {
                kind: Some("device.migrated".into()),
                ..Default::default()
            })
        })
        .unwrap();
    assert_eq!(
        migrated.len(),
        5,
        "one first-contact entry per device, not one per request"
    );
    // A second session does not log it again.
    macs[0].session().await.unwrap();
    assert_eq!(
        s.store
            .read(|tx| tx.activities(&ActivityQuery {
                kind: Some("device.migrated".into()),
                ..Default::default()
            }))
            .unwrap()
            .len(),
        5
    );
    waker.abort();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retro_association_is_off_by_default_and_audited_when_on() {
    let old = Ca::new("Old CA");
    for allow in [false, true] {
        let s = Server::start(Options {
            allow_retro_association: allow,
            ..Default::default()
        })
        .await;
        s.trust_old_ca(&old);
        let mac = s.migrated(1, &old, IdentityMode::Signature);
        // The import had no identity hash for this device.
        s.store
            .write(|tx| {
                let mut d = tx.device(&mac.udid)?.unwrap();
                d.identity_sha256 = None;
                tx.put_device(&d)
            })
            .unwrap();
        let status = mac.session().await.unwrap();
        let d = s.store.read(|tx| tx.device(&mac.udid)).unwrap().unwrap();
        if allow {
            assert_eq!(status, 200);
            assert_eq!(
                d.identity_sha256,
                mac.identity_sha256(),
                "bound on first contact"
            );
            let log = s
                .store
                .read(|tx| {
                    tx.activities(&ActivityQuery {
                        kind: Some("device.retro_associated".into()),
                        ..Default::default()
                    })
                })
                .unwrap();
            assert_eq!(log.len(), 1);
        } else {
            assert_eq!(status, 403);
            assert!(
                d.identity_sha256.is_none() && d.migrated_at.is_none(),
                "nothing changes"
            );
        }
        s.stop().await;
    }
}
