//! How a device's identity arrives: built-in TLS with a client certificate, or a
//! TLS-terminating proxy's header.

use mdmctl::sim::device::IdentityMode;

use crate::harness::{Ca, Options, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_in_tls_with_client_certificates() {
    let s = Server::start(Options {
        tls: true,
        ..Default::default()
    })
    .await;
    assert!(s.url.starts_with("https://"));
    let old = Ca::new("Old CA");
    s.trust_old_ca(&old);
    let mac = s.enroll(1, IdentityMode::Tls).await;
    assert_eq!(mac.session().await.unwrap(), 200);
    let migrated = s.migrated(2, &old, IdentityMode::Tls);
    assert_eq!(migrated.session().await.unwrap(), 200);
    // The handshake does not require a certificate: SCEP and /enroll work without one, and
    // a check-in without one is refused by the handler (400), not by TLS.
    let anonymous = s.http();
    assert_eq!(
        anonymous
            .get(format!("{}/healthz", s.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = anonymous
        .put(format!("{}/mdm", s.url))
        .header("Content-Type", "application/x-apple-aspen-mdm")
        .body(migrated.idle_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_that_forwards_the_client_certificate() {
    let header = "X-Client-Cert";
    let s = Server::start(Options {
        client_cert_header: Some(header.into()),
        ..Default::default()
    })
    .await;
    let mac = s.enroll(1, IdentityMode::Header(header.into())).await;
    assert_eq!(mac.session().await.unwrap(), 200);
    // nginx's $ssl_client_escaped_cert form.
    let pem = String::from_utf8(mac.identity().unwrap().to_pem().unwrap()).unwrap();
    let escaped: String = pem
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, _) = mac
        .send_with(false, mac.idle_body(), vec![(header.into(), escaped)])
        .await
        .unwrap();
    assert_eq!(status, 200);
    // A header the server was not told about is ignored.
    let (status, _) = mac
        .send_with(
            false,
            mac.idle_body(),
            vec![("X-Other-Cert".into(), "x".into())],
        )
        .await
        .unwrap();
    assert_eq!(status, 400);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_old_server_path_answers() {
    let s = Server::start(Options::default()).await;
    let mac = s.enroll(1, IdentityMode::Signature).await;
    for path in [
        "/mdm",
        "/mdm/connect",
        "/mdm/checkin",
        "/checkin",
        "/mdm/apple/mdm",
    ] {
        let url = format!("{}{path}", s.url);
        let body = mac.idle_body();
        let mut req = s
            .http()
            .put(&url)
            .header("Content-Type", "application/x-apple-aspen-mdm")
            .body(body.clone());
        for (k, v) in mac.identity_headers(&body).unwrap() {
            req = req.header(k, v);
        }
        assert_eq!(req.send().await.unwrap().status(), 200, "{path}");
    }
    s.stop().await;
}
