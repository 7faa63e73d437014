//! The command queue as devices experience it: NotNow waits for the next Idle, results are
//! recorded, and APNs' answers (410, BadDeviceToken) act on the enrollment.

use mdmctl::apple::command::named;
use mdmctl::sim::apns::Script;
use mdmctl::sim::device::{Fleet, IdentityMode};
use mdmctl::store::{ActivityQuery, QueueStatus};

use crate::harness::{Options, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_now_is_retried_on_the_next_idle_not_in_the_same_session() {
    let s = Server::start(Options::default()).await;
    let mac = s.enroll(1, IdentityMode::Signature).await;
    let first = named::profile_list(false);
    let second = named::security_info();
    for c in [&first, &second] {
        mdmctl::mdm::send(&s.store, None, c, std::slice::from_ref(&mac.udid), "t")
            .await
            .unwrap();
    }
    mac.not_now_once("ProfileList");
    assert_eq!(mac.session().await.unwrap(), 200);
    let seen: Vec<(String, String)> = mac
        .handled()
        .iter()
        .map(|h| (h.request_type.clone(), h.status.clone()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("ProfileList".into(), "NotNow".into()),
            ("SecurityInfo".into(), "Acknowledged".into())
        ],
        "after NotNow the session moves on and does not offer ProfileList again"
    );
    let e = &mdmctl::mdm::status(s.store.as_ref(), &first.uuid).unwrap()[0];
    assert_eq!((e.status, e.not_now_count), (QueueStatus::NotNow, 1));
    // The next session (a new Idle) gets it again.
    mac.session().await.unwrap();
    assert_eq!(
        mac.handled().last().unwrap(),
        &mdmctl::sim::device::Handled {
            uuid: first.uuid.clone(),
            request_type: "ProfileList".into(),
            status: "Acknowledged".into(),
        }
    );
    assert_eq!(
        mdmctl::mdm::status(s.store.as_ref(), &first.uuid).unwrap()[0].status,
        QueueStatus::Acknowledged
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_recorded_with_apples_error_chain() {
    let s = Server::start(Options::default()).await;
    let mac = s.enroll(1, IdentityMode::Signature).await;
    let remove = named::remove_profile("com.example.not-installed");
    mdmctl::mdm::send(
        &s.store,
        None,
        &remove,
        std::slice::from_ref(&mac.udid),
        "t",
    )
    .await
    .unwrap();
    mac.session().await.unwrap();
    let e = &mdmctl::mdm::status(s.store.as_ref(), &remove.uuid).unwrap()[0];
    assert_eq!(e.status, QueueStatus::Error);
    let chain = e.error_chain.as_ref().unwrap();
    assert_eq!(chain[0]["ErrorDomain"], "MCProfileErrorDomain");
    let raw = s
        .store
        .read(|tx| tx.command_result(&mac.udid, &remove.uuid))
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&raw).contains("CommandUUID"),
        "the device's whole report is kept"
    );
    let log = s
        .store
        .read(|tx| {
            tx.activities(&ActivityQuery {
                kind: Some("command.error".into()),
                ..Default::default()
            })
        })
        .unwrap();
    assert!(
        log[0].summary.contains("RemoveProfile") && log[0].summary.contains("not installed"),
        "{}",
        log[0].summary
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_410_disables_the_channel_and_bad_tokens_are_recorded() {
    let s = Server::start(Options::default()).await;
    let gone = s.enroll(1, IdentityMode::Signature).await;
    let wrong = s.enroll(2, IdentityMode::Signature).await;
    let fine = s.enroll(3, IdentityMode::Signature).await;
    s.apns.script(&gone.token_hex(), Script::Unregistered);
    s.apns.script(&wrong.token_hex(), Script::BadDeviceToken);
    let fleet = Fleet::new([fine.clone()]);
    let waker = fleet.wake_on_push(s.apns.subscribe());
    let cmd = named::security_info();
    let ids = vec![gone.udid.clone(), wrong.udid.clone(), fine.udid.clone()];
    let sent = mdmctl::mdm::send(&s.store, Some(&s.pushes), &cmd, &ids, "t")
        .await
        .unwrap();
    let p = sent.push.unwrap();
    assert_eq!(
        (p.delivered, p.unregistered.clone(), p.bad_token.clone()),
        (1, vec![gone.udid.clone()], vec![wrong.udid.clone()])
    );
    assert!(
        !s.store
            .read(|tx| tx.enrollment(&gone.udid))
            .unwrap()
            .unwrap()
            .enabled,
        "410 disables"
    );
    assert!(
        s.store
            .read(|tx| tx.enrollment(&wrong.udid))
            .unwrap()
            .unwrap()
            .enabled,
        "a bad token is recorded, not disabled"
    );
    let log = s
        .store
        .read(|tx| {
            tx.activities(&ActivityQuery {
                kind: Some("push.unregistered".into()),
                ..Default::default()
            })
        })
        .unwrap();
    assert_eq!(log.len(), 1);
    // A disabled channel is not pushed again until the device sends a new TokenUpdate.
    let again = mdmctl::mdm::send(
        &s.store,
        Some(&s.pushes),
        &named::security_info(),
        std::slice::from_ref(&gone.udid),
        "t",
    )
    .await
    .unwrap();
    assert_eq!(again.push.unwrap().not_pushable, vec![gone.udid.clone()]);
    assert_eq!(gone.token_update().await.unwrap(), 200);
    assert!(
        s.store
            .read(|tx| tx.enrollment(&gone.udid))
            .unwrap()
            .unwrap()
            .enabled
    );
    waker.abort();
    s.stop().await;
}
