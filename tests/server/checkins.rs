//! The other check-in messages: bootstrap tokens, CheckOut, UserAuthenticate, GetToken,
//! declarative management, unknown types.

use mdmctl::sim::device::IdentityMode;
use plist::{Dictionary, Value};

use crate::harness::{Options, Server};

fn msg(kind: &str, extra: &[(&str, Value)]) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("MessageType".into(), kind.into());
    for (k, v) in extra {
        d.insert((*k).into(), v.clone());
    }
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_token_round_trip_and_user_channels() {
    let s = Server::start(Options::default()).await;
    let mac = s.enroll(1, IdentityMode::Signature).await;
    let (st, _) = mac
        .checkin(msg(
            "SetBootstrapToken",
            &[("BootstrapToken", Value::Data(b"BOOTSTRAP-BYTES".to_vec()))],
        ))
        .await
        .unwrap();
    assert_eq!(st, 200);
    let (st, body) = mac.checkin(msg("GetBootstrapToken", &[])).await.unwrap();
    assert_eq!(st, 200);
    let v: Value = plist::from_bytes(&body).unwrap();
    assert_eq!(
        v.as_dictionary().unwrap()["BootstrapToken"].as_data(),
        Some(&b"BOOTSTRAP-BYTES"[..])
    );

    // A user channel: its own enrollment, same device identity.
    let (st, _) = mac
        .checkin(msg(
            "TokenUpdate",
            &[
                ("UserID", "501-UUID".into()),
                ("UserShortName", "ada".into()),
                ("UserLongName", "Ada Lovelace".into()),
                ("Topic", s.topic.clone().into()),
                ("Token", Value::Data(vec![7; 32])),
                ("PushMagic", "USER-MAGIC".into()),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(st, 200);
    let ch = s
        .store
        .read(|tx| tx.enrollment(&format!("{}:501-UUID", mac.udid)))
        .unwrap()
        .unwrap();
    assert_eq!(
        (ch.kind.as_str(), ch.user_short_name.as_deref()),
        ("User", Some("ada"))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_and_unknown_messages() {
    let s = Server::start(Options::default()).await;
    let mac = s.enroll(1, IdentityMode::Signature).await;
    let (st, _) = mac
        .checkin(msg(
            "UserAuthenticate",
            &[("UserID", "501".into()), ("DigestResponse", "".into())],
        ))
        .await
        .unwrap();
    assert_eq!(st, 410);
    let (st, _) = mac
        .checkin(msg(
            "GetToken",
            &[("TokenServiceType", "com.apple.maid".into())],
        ))
        .await
        .unwrap();
    assert_eq!(st, 400);
    let (st, _) = mac.checkin(msg("SomethingNew", &[])).await.unwrap();
    assert_eq!(st, 400);
    let (st, body) = mac
        .checkin(msg(
            "DeclarativeManagement",
            &[("Endpoint", "tokens".into())],
        ))
        .await
        .unwrap();
    assert_eq!(st, 200);
    let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(j["SyncTokens"]["DeclarationsToken"].is_string());
    let (st, body) = mac
        .checkin(msg(
            "DeclarativeManagement",
            &[("Endpoint", "declaration-items".into())],
        ))
        .await
        .unwrap();
    assert_eq!(st, 200);
    assert!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["Declarations"]["Configurations"].is_array());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_out_disables_every_channel() {
    let s = Server::start(Options::default()).await;
    let mac = s.enroll(1, IdentityMode::Signature).await;
    let (st, _) = mac
        .checkin(msg("CheckOut", &[("Topic", s.topic.clone().into())]))
        .await
        .unwrap();
    assert_eq!(st, 200);
    assert!(
        !s.store
            .read(|tx| tx.enrollment(&mac.udid))
            .unwrap()
            .unwrap()
            .enabled
    );
    let log = s
        .store
        .read(|tx| {
            tx.activities(&mdmctl::store::ActivityQuery {
                kind: Some("device.checked_out".into()),
                ..Default::default()
            })
        })
        .unwrap();
    assert_eq!(log.len(), 1);
    s.stop().await;
}
