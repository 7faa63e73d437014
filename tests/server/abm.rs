//! The Apple Business Manager client against a stand-in that checks the OAuth signature and the
//! session header: one session reused, a new one when Apple expires it, a rotated one adopted,
//! 429 waited out, 503 retried then given up, new terms stopping at once, a wrong secret refused.

use std::time::{Duration, Instant};

use mdmctl::abm::{DepClient, DepError, Retry};
use mdmctl::assets::abm::ServerToken;
use mdmctl::sim::abm::AbmStandIn;

fn token() -> ServerToken {
    ServerToken {
        consumer_key: "CK_stand_in".into(),
        consumer_secret: "CS_secret/with+chars".into(),
        access_token: "AT_stand_in".into(),
        access_secret: "AS_secret=".into(),
        access_token_expiry: "2030-01-01T00:00:00Z".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_abm_client_keeps_its_session_and_survives_apples_answers() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let abm = AbmStandIn::start(listener, token()).await.unwrap();
    let retry = Retry {
        attempts: 4,
        base_delay: Duration::from_millis(20),
        max_wait: Duration::from_secs(5),
    };
    let c = DepClient::new(abm.url(), &token(), retry.clone()).unwrap();

    let a = c.account().await.unwrap();
    assert_eq!(a.org_name, "Example Inc (DEMO ABM)");
    assert_eq!(abm.counts(), (1, 1), "one signed /session, then the call");
    c.account().await.unwrap();
    assert_eq!(abm.counts(), (1, 2), "the session is reused");

    abm.expire_sessions();
    c.account().await.unwrap();
    assert_eq!(
        abm.counts(),
        (2, 4),
        "403 FORBIDDEN: one new session, the call replayed"
    );

    abm.rotate_next();
    c.account().await.unwrap();
    c.account().await.unwrap();
    assert_eq!(
        abm.counts().0,
        2,
        "the rotated session is adopted, no new /session"
    );

    abm.throttle(1);
    let t = Instant::now();
    c.account().await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "429 Retry-After: 1 is waited out"
    );

    abm.unavailable(2);
    c.account().await.unwrap();
    abm.unavailable(10);
    match c.account().await {
        Err(DepError::Http { status: 503, .. }) => {}
        other => panic!("503 past the retries is an error: {other:?}"),
    }
    abm.unavailable(0);

    abm.set_terms_not_signed(true);
    let before = abm.counts();
    match c.account().await {
        Err(e @ DepError::TermsNotSigned) => {
            let hint = mdmctl::error::Diagnose::hint(&e).unwrap();
            assert!(hint.contains("accept the new terms"), "{hint}");
        }
        other => panic!("new terms stop the call: {other:?}"),
    }
    assert_eq!(
        abm.counts(),
        (before.0, before.1 + 1),
        "no retry, no new session"
    );
    abm.set_terms_not_signed(false);

    let mut wrong = token();
    wrong.access_secret = "not the secret".into();
    let bad = DepClient::new(abm.url(), &wrong, retry).unwrap();
    match bad.account().await {
        Err(DepError::TokenRejected(body)) => assert!(body.contains("signature_invalid"), "{body}"),
        other => panic!("a wrong secret fails the signature: {other:?}"),
    }
}

/// `serve` syncs ABM's devices in the background (the `abm-sync` job) once a server token is
/// installed, and says what it did in `get servers`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_syncs_abm_devices_in_the_background() {
    use mdmctl::store::{AssetKind, AssetState, NewAsset};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let abm = AbmStandIn::start(listener, token()).await.unwrap();
    abm.add_devices(0, 30);
    let s = crate::harness::Server::start(crate::harness::Options {
        abm: Some(abm.url().to_string()),
        ..Default::default()
    })
    .await;
    s.store
        .write(|tx| {
            let mut a = NewAsset::new(AssetKind::Abm, AssetState::Active, "test");
            a.token = Some(zeroize::Zeroizing::new(
                serde_json::to_vec(&token()).unwrap(),
            ));
            tx.insert_asset(&a)
        })
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while s
        .store
        .read(|tx| tx.abm_devices(&Default::default()))
        .unwrap()
        .len()
        < 30
    {
        assert!(
            Instant::now() < until,
            "the abm-sync job did not sync the 30 devices"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!s.activities("abm.sync").is_empty());
    let jobs = s.store.read(|tx| mdmctl::mdm::instances(tx)).unwrap().jobs;
    let job = jobs
        .iter()
        .find(|j| j.name == "abm-sync")
        .expect("the abm-sync job");
    assert!(job.holder.is_some());
    s.stop().await;
}

/// A service answering without end (20 MiB) or with garbage: an error, never unbounded memory
/// or a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_garbage_answers_are_errors() {
    use std::io::{Read, Write};
    for huge in [true, false] {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        std::thread::spawn(move || {
            if let Some(Ok(mut s)) = l.incoming().next() {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                if huge {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 20971520\r\n\r\n");
                    let chunk = vec![b'{'; 1 << 20];
                    for _ in 0..20 {
                        if s.write_all(&chunk).is_err() {
                            break;
                        }
                    }
                } else {
                    let _ = s.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n\xff\x00{[\"x\"]}",
                    );
                }
            }
        });
        let c = DepClient::new(&url, &token(), Retry::default()).unwrap();
        match c.account().await {
            Err(DepError::Decode { reason, .. }) if huge => {
                assert!(reason.contains("larger than"), "{reason}")
            }
            Err(DepError::Decode { path, .. }) => assert_eq!(path, "/session"),
            other => panic!("huge={huge}: {other:?}"),
        }
    }
}
