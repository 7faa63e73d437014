//! Shared set-up for the integration tests: a test "Apple" CA, a push
//! certificate it issued, a running stand-in trusting that CA, and clients.
#![allow(dead_code)] // each test binary uses a different subset

use std::time::Duration;

use mdmctl::push::{ApnsClient, ApnsConfig, DeviceToken, PushTarget, RetryPolicy};
use mdmctl::sim::apns::{ApnsStandIn, MintedPushCert, PushCertOptions, StandInConfig, TestPushCa};

pub struct Env {
    pub ca: TestPushCa,
    pub cert: MintedPushCert,
    pub stand_in: ApnsStandIn,
}

pub async fn start(config: StandInConfig) -> Env {
    let ca = TestPushCa::generate().expect("test ca");
    let cert = ca
        .issue_push_certificate(&PushCertOptions::default())
        .expect("push cert");
    let stand_in = ApnsStandIn::start(ca.certificate().clone(), config)
        .await
        .expect("stand-in starts");
    Env { ca, cert, stand_in }
}

/// Client settings for the stand-in, with short back-off so retry tests
/// stay quick.
pub fn config(env: &Env) -> ApnsConfig {
    ApnsConfig {
        retry: RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(40),
            max_delay: Duration::from_millis(400),
        },
        ..ApnsConfig::local(
            env.stand_in.base_url(),
            vec![env.stand_in.server_ca().to_owned()],
        )
    }
}

pub fn client(env: &Env) -> ApnsClient {
    client_with(env, &env.cert, config(env))
}

pub fn client_with(env: &Env, cert: &MintedPushCert, config: ApnsConfig) -> ApnsClient {
    let _ = env;
    ApnsClient::new(&cert.identity().expect("identity"), config).expect("client builds")
}

/// A distinct, deterministic 32-byte token.
pub fn token(i: u32) -> DeviceToken {
    let mut bytes = vec![0xa5u8; 32];
    bytes[..4].copy_from_slice(&i.to_be_bytes());
    DeviceToken::from_bytes(bytes).expect("token")
}

pub fn target(i: u32) -> PushTarget {
    PushTarget::new(token(i), format!("magic-{i}"))
}

/// Polls `check` for up to two seconds.
pub async fn eventually(check: impl Fn() -> bool) -> bool {
    for _ in 0..200 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}
