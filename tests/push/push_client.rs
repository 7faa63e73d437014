//! The push client against the stand-in: real HTTP/2 over real TLS on
//! loopback.

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use mdmctl::push::{
    ApnsClient, ClientError, IdentityError, PushOutcome, PushTarget, Pusher, RetryPolicy,
};
use mdmctl::sim::apns::{CertificateCheck, PushCertOptions, Script, StandInConfig, TestPushCa};

fn header<'a>(push: &'a mdmctl::sim::apns::RecordedPush, name: &str) -> Option<&'a str> {
    push.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_push_is_exactly_what_apple_documents() {
    let env = crate::support::start(StandInConfig::default()).await;
    let client = crate::support::client(&env);
    let magic = "8A1E4C7B-\"quoted\"-\\back\\-é";
    let mut target = PushTarget::new(crate::support::token(7), magic);

    let outcome = client.push_one(&target).await;
    let PushOutcome::Delivered { apns_id } = outcome else {
        panic!("expected delivery, got {outcome:?}");
    };
    let pushes = env.stand_in.pushes();
    assert_eq!(pushes.len(), 1);
    let p = &pushes[0];
    assert_eq!(
        p.apns_id, apns_id,
        "the client reports the server's apns-id"
    );
    assert_eq!(p.method, hyper::Method::POST);
    assert_eq!(
        p.path,
        format!("/3/device/{}", crate::support::token(7).to_hex())
    );
    assert_eq!(p.token_hex, crate::support::token(7).to_hex());
    assert_eq!(header(p, "apns-topic"), Some(env.cert.topic.as_str()));
    assert!(env.cert.topic.starts_with("com.apple.mgmt.External."));
    assert_eq!(header(p, "apns-push-type"), Some("mdm"));
    assert_eq!(header(p, "apns-priority"), Some("10"));
    assert_eq!(header(p, "content-type"), Some("application/json"));
    assert_eq!(header(p, "apns-expiration"), None);
    assert_eq!(header(p, "apns-collapse-id"), None);
    let expected_body = r#"{"mdm":"8A1E4C7B-\"quoted\"-\\back\\-é"}"#.as_bytes();
    assert_eq!(p.body.as_ref(), expected_body);
    assert_eq!(p.push_magic, magic);
    assert_eq!(p.topic, env.cert.topic);

    target.expiration = Some(1_900_000_000);
    assert!(client.push_one(&target).await.is_delivered());
    let pushes = env.stand_in.pushes();
    assert_eq!(header(&pushes[1], "apns-expiration"), Some("1900000000"));
    env.stand_in.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_token_gives_410_with_timestamp() {
    let env = crate::support::start(StandInConfig::default()).await;
    let client = crate::support::client(&env);
    env.stand_in
        .script(&crate::support::token(1).to_hex(), Script::Unregistered);
    let before = std::time::SystemTime::now() - Duration::from_secs(5);

    let outcome = client.push_one(&crate::support::target(1)).await;
    let PushOutcome::Unregistered {
        timestamp: Some(ts),
    } = outcome
    else {
        panic!("expected Unregistered with a timestamp, got {outcome:?}");
    };
    assert!(ts > before && ts > UNIX_EPOCH);
    assert!(!outcome.affects_all_devices());
    let answers = env.stand_in.answers_for(&crate::support::token(1).to_hex());
    assert_eq!(answers.len(), 1, "410 is final, never retried");
    assert_eq!(answers[0].status, 410);
    assert_eq!(env.stand_in.push_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_device_token_is_final() {
    let env = crate::support::start(StandInConfig::default()).await;
    let client = crate::support::client(&env);
    env.stand_in
        .script(&crate::support::token(2).to_hex(), Script::BadDeviceToken);
    let outcome = client.push_one(&crate::support::target(2)).await;
    assert_eq!(
        outcome,
        PushOutcome::BadToken {
            reason: "BadDeviceToken".into()
        }
    );
    assert_eq!(
        env.stand_in
            .answers_for(&crate::support::token(2).to_hex())
            .len(),
        1
    );

    // A token too short to be an APNs token, refused by validation itself.
    let short = mdmctl::push::DeviceToken::from_hex("abcdef01").expect("hex");
    let outcome = client.push_one(&PushTarget::new(short, "m")).await;
    assert_eq!(
        outcome,
        PushOutcome::BadToken {
            reason: "BadDeviceToken".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_is_retried_with_backoff_then_delivered() {
    let env = crate::support::start(StandInConfig::default()).await;
    let client = crate::support::client(&env); // base delay 40 ms, 4 attempts
    let hex = crate::support::token(3).to_hex();
    env.stand_in
        .script(&hex, Script::TooManyRequests { times: 2 });

    let started = Instant::now();
    let outcome = client.push_one(&crate::support::target(3)).await;
    let elapsed = started.elapsed();
    assert!(outcome.is_delivered(), "{outcome:?}");
    let statuses: Vec<u16> = env
        .stand_in
        .answers_for(&hex)
        .iter()
        .map(|a| a.status)
        .collect();
    assert_eq!(statuses, [429, 429, 200]);
    // Back-off happened: at least half of 40 ms, then half of 80 ms.
    assert!(
        elapsed >= Duration::from_millis(60),
        "retries were not spaced: {elapsed:?}"
    );
    assert_eq!(env.stand_in.pushes_for(&hex).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_unavailable_then_ok_is_delivered() {
    let env = crate::support::start(StandInConfig::default()).await;
    let client = crate::support::client(&env);
    let hex = crate::support::token(4).to_hex();
    env.stand_in
        .script(&hex, Script::ServiceUnavailable { times: 1 });
    assert!(
        client
            .push_one(&crate::support::target(4))
            .await
            .is_delivered()
    );
    let statuses: Vec<u16> = env
        .stand_in
        .answers_for(&hex)
        .iter()
        .map(|a| a.status)
        .collect();
    assert_eq!(statuses, [503, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_server_error_until_retries_are_exhausted() {
    let env = crate::support::start(StandInConfig::default()).await;
    let mut config = crate::support::config(&env);
    config.retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    };
    let client = crate::support::client_with(&env, &env.cert, config);
    let hex = crate::support::token(5).to_hex();
    env.stand_in
        .script(&hex, Script::InternalServerError { times: 1000 });

    let outcome = client.push_one(&crate::support::target(5)).await;
    let PushOutcome::Failed { reason } = &outcome else {
        panic!("expected Failed, got {outcome:?}");
    };
    assert!(reason.contains("500") && reason.contains("InternalServerError"));
    assert!(reason.contains("3 attempts"), "{reason}");
    assert_eq!(env.stand_in.answers_for(&hex).len(), 3);
    assert_eq!(env.stand_in.push_count(), 0);
}

/// The client always sends its certificate's topic, so a wrong topic can
/// only come from another client: send one directly over the client's own
/// TLS identity and check the stand-in's answer and the client's reading of
/// a 400 that is not about the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_topic_is_refused() {
    let env = crate::support::start(StandInConfig::default()).await;
    let raw = common_raw::client(&env, &env.cert);
    let url = format!(
        "{}/3/device/{}",
        env.stand_in.base_url(),
        crate::support::token(6).to_hex()
    );
    let resp = raw
        .post(&url)
        .header("apns-topic", "com.apple.mgmt.External.someone-else")
        .header("apns-push-type", "mdm")
        .body(r#"{"mdm":"x"}"#)
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["reason"], "TopicDisallowed");
    assert_eq!(env.stand_in.push_count(), 0);

    // A second certificate from the same CA has its own topic: pushes with
    // it succeed, and are recorded under that topic.
    let second = env
        .ca
        .issue_push_certificate(&PushCertOptions::default())
        .expect("cert");
    let client = crate::support::client_with(&env, &second, crate::support::config(&env));
    assert!(
        client
            .push_one(&crate::support::target(6))
            .await
            .is_delivered()
    );
    assert_eq!(env.stand_in.pushes()[0].topic, second.topic);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_another_ca_is_refused_in_the_handshake() {
    let env = crate::support::start(StandInConfig::default()).await;
    let foreign_ca = TestPushCa::generate_named("Not Apple").expect("ca");
    let foreign = foreign_ca
        .issue_push_certificate(&PushCertOptions::default())
        .expect("cert");
    let client = crate::support::client_with(&env, &foreign, crate::support::config(&env));

    let outcomes = client
        .push_many(&(0..50).map(crate::support::target).collect::<Vec<_>>())
        .await;
    for outcome in &outcomes {
        let PushOutcome::CertificateRefused { reason } = outcome else {
            panic!("expected CertificateRefused, got {outcome:?}");
        };
        assert!(reason.contains("unknown ca"), "{reason}");
        assert!(outcome.affects_all_devices());
    }
    // The server task counts the refusal after writing the alert, so the
    // client may have read it first: give the count a moment.
    let stand_in = &env.stand_in;
    assert!(crate::support::eventually(|| stand_in.handshake_failures() >= 1).await);
    assert_eq!(env.stand_in.connections_accepted(), 0);
    assert!(env.stand_in.answers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_another_ca_gets_403_in_http_mode() {
    let env = crate::support::start(StandInConfig {
        certificate_check: CertificateCheck::Http403,
        ..StandInConfig::default()
    })
    .await;
    let foreign_ca = TestPushCa::generate_named("Not Apple").expect("ca");
    let foreign = foreign_ca
        .issue_push_certificate(&PushCertOptions::default())
        .expect("cert");
    let client = crate::support::client_with(&env, &foreign, crate::support::config(&env));
    let outcome = client.push_one(&crate::support::target(1)).await;
    assert_eq!(
        outcome,
        PushOutcome::Rejected {
            status: 403,
            reason: "BadCertificate".into()
        }
    );
    assert!(outcome.affects_all_devices());
    assert_eq!(env.stand_in.answers().len(), 1, "403 is not retried");

    // The right certificate still works on the same stand-in.
    assert!(
        crate::support::client(&env)
            .push_one(&crate::support::target(2))
            .await
            .is_delivered()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_push_certificate() {
    let env = crate::support::start(StandInConfig::default()).await;
    let expired = env
        .ca
        .issue_push_certificate(&PushCertOptions::expired())
        .expect("cert");

    // The client refuses to start with it, naming the problem…
    let err = ApnsClient::new(
        &expired.identity().expect("identity"),
        crate::support::config(&env),
    )
    .err()
    .expect("expired certificate refused");
    assert!(
        matches!(err, ClientError::Identity(IdentityError::Expired { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("expired"), "{err}");

    // …and APNs (the stand-in) refuses it in the handshake if used anyway,
    // e.g. when it expires while the server runs.
    let mut config = crate::support::config(&env);
    config.refuse_invalid_certificate = false;
    let client = crate::support::client_with(&env, &expired, config);
    let outcome = client.push_one(&crate::support::target(1)).await;
    let PushOutcome::CertificateRefused { reason } = &outcome else {
        panic!("expected CertificateRefused, got {outcome:?}");
    };
    assert!(reason.contains("certificate expired"), "{reason}");
    assert_eq!(env.stand_in.push_count(), 0);

    // In 403 mode the same certificate gets BadCertificate.
    let env403 = crate::support::start(StandInConfig {
        certificate_check: CertificateCheck::Http403,
        ..StandInConfig::default()
    })
    .await;
    let expired = env403
        .ca
        .issue_push_certificate(&PushCertOptions::expired())
        .expect("cert");
    let mut config = crate::support::config(&env403);
    config.refuse_invalid_certificate = false;
    let client = crate::support::client_with(&env403, &expired, config);
    assert_eq!(
        client.push_one(&crate::support::target(1)).await,
        PushOutcome::Rejected {
            status: 403,
            reason: "BadCertificate".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_pushes_share_one_connection() {
    // Latency keeps every request open long enough to overlap.
    let env = crate::support::start(StandInConfig {
        latency: Some(Duration::from_millis(100)),
        ..StandInConfig::default()
    })
    .await;
    let mut config = crate::support::config(&env);
    config.max_in_flight = 1000;
    let client = crate::support::client_with(&env, &env.cert, config);
    let targets: Vec<PushTarget> = (0..1000).map(crate::support::target).collect();

    let outcomes = client.push_many(&targets).await;
    assert_eq!(outcomes.len(), 1000);
    assert!(outcomes.iter().all(PushOutcome::is_delivered));
    let pushes = env
        .stand_in
        .wait_for_pushes(1000, Duration::from_secs(5))
        .await
        .expect("all");
    assert_eq!(pushes.len(), 1000);
    assert_eq!(env.stand_in.connections_accepted(), 1, "one TLS connection");
    assert!(pushes.iter().all(|p| p.connection == 1));
    let peak = env.stand_in.peak_in_flight();
    assert!(peak >= 500, "pushes were not multiplexed: peak {peak}");
    // Outcomes are in target order.
    for (i, (outcome, target)) in outcomes.iter().zip(&targets).enumerate() {
        let PushOutcome::Delivered { apns_id } = outcome else {
            unreachable!()
        };
        let recorded = env.stand_in.pushes_for(&target.token.to_hex());
        assert_eq!(&recorded[0].apns_id, apns_id, "outcome {i} out of order");
    }
    println!("peak in flight on one connection: {peak}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_makes_the_client_reconnect_without_losing_pushes() {
    let env = crate::support::start(StandInConfig {
        goaway_after: Some(150),
        ..StandInConfig::default()
    })
    .await;
    let mut config = crate::support::config(&env);
    config.max_in_flight = 50;
    let client = crate::support::client_with(&env, &env.cert, config);
    let targets: Vec<PushTarget> = (0..600).map(crate::support::target).collect();
    let outcomes = client.push_many(&targets).await;
    let not_delivered: Vec<_> = outcomes.iter().filter(|o| !o.is_delivered()).collect();
    assert!(not_delivered.is_empty(), "{not_delivered:?}");
    assert!(
        env.stand_in.connections_accepted() >= 2,
        "goaway should have forced a new connection"
    );
    let mut tokens: Vec<String> = env
        .stand_in
        .pushes()
        .into_iter()
        .map(|p| p.token_hex)
        .collect();
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_batch_is_classified_per_device() {
    let env = crate::support::start(StandInConfig::default()).await;
    let client: Arc<dyn Pusher> = Arc::new(crate::support::client(&env));
    assert_eq!(client.topic(), env.cert.topic);
    env.stand_in
        .script(&crate::support::token(1).to_hex(), Script::Unregistered);
    env.stand_in
        .script(&crate::support::token(2).to_hex(), Script::BadDeviceToken);
    env.stand_in.script(
        &crate::support::token(3).to_hex(),
        Script::TooManyRequests { times: 1 },
    );
    let targets: Vec<PushTarget> = (0..5).map(crate::support::target).collect();
    let outcomes = client.push_many(&targets).await;
    assert!(outcomes[0].is_delivered());
    assert!(matches!(outcomes[1], PushOutcome::Unregistered { .. }));
    assert!(matches!(outcomes[2], PushOutcome::BadToken { .. }));
    assert!(outcomes[3].is_delivered());
    assert!(outcomes[4].is_delivered());
    assert!(
        client
            .push_one(&crate::support::target(9))
            .await
            .is_delivered()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_fails_after_retries_without_leaking_the_token() {
    let env = crate::support::start(StandInConfig::default()).await;
    // A port nobody listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = free.local_addr().expect("addr").port();
    drop(free);
    let mut config = crate::support::config(&env);
    config.base_url = format!("https://127.0.0.1:{port}");
    config.retry.max_attempts = 2;
    let client = crate::support::client_with(&env, &env.cert, config);
    let target = crate::support::target(1);
    let outcome = client.push_one(&target).await;
    let PushOutcome::Failed { reason } = &outcome else {
        panic!("expected Failed, got {outcome:?}");
    };
    assert!(reason.contains("2 attempts"), "{reason}");
    assert!(
        !reason.contains(&target.token.to_hex()),
        "token leaked: {reason}"
    );
    assert!(!format!("{target:?}").contains("magic-1"), "magic leaked");

    // A batch finds out once and does not retry every device in turn.
    let targets: Vec<PushTarget> = (0..200).map(crate::support::target).collect();
    let started = Instant::now();
    let outcomes = client.push_many(&targets).await;
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        matches!(&outcomes[0], PushOutcome::Failed { reason } if reason.contains("2 attempts"))
    );
    for o in &outcomes[1..] {
        let PushOutcome::Failed { reason } = o else {
            panic!("expected Failed, got {o:?}");
        };
        assert!(reason.starts_with("not attempted"), "{reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_first_device_is_gone_still_pushes_the_rest() {
    let env = crate::support::start(StandInConfig::default()).await;
    let client = crate::support::client(&env);
    env.stand_in
        .script(&crate::support::token(0).to_hex(), Script::Unregistered);
    let targets: Vec<PushTarget> = (0..300).map(crate::support::target).collect();
    let outcomes = client.push_many(&targets).await;
    assert!(matches!(outcomes[0], PushOutcome::Unregistered { .. }));
    assert!(outcomes[1..].iter().all(PushOutcome::is_delivered));
    assert_eq!(env.stand_in.connections_accepted(), 1);
}

/// A plain reqwest client with the push identity, for requests the push
/// client would never send.
mod common_raw {
    use mdmctl::sim::apns::MintedPushCert;

    pub fn client(env: &crate::support::Env, cert: &MintedPushCert) -> reqwest::Client {
        let identity = reqwest::Identity::from_pkcs8_pem(
            &cert.cert_pem().expect("pem"),
            &cert.key_pem_pkcs8().expect("pem"),
        )
        .expect("identity");
        let ca = reqwest::Certificate::from_pem(&env.stand_in.server_ca_pem().expect("pem"))
            .expect("ca");
        reqwest::Client::builder()
            .http2_prior_knowledge()
            .identity(identity)
            .tls_certs_only([ca])
            .build()
            .expect("client")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls13_also_delivers() {
    let env = crate::support::start(StandInConfig::default()).await;
    let mut config = crate::support::config(&env);
    config.tls12_only = false;
    let client = crate::support::client_with(&env, &env.cert, config);
    let outcomes = client
        .push_many(&(0..10).map(crate::support::target).collect::<Vec<_>>())
        .await;
    assert!(outcomes.iter().all(PushOutcome::is_delivered));
}
