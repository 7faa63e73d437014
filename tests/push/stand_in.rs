//! The stand-in on its own, checked with two independent clients: curl
//! (libcurl + nghttp2 + OpenSSL, a separate HTTP/2 implementation) and a
//! plain reqwest client, which must get the same answers for the same
//! requests.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use mdmctl::sim::apns::{
    CertificateCheck, MintedPushCert, PushCertOptions, Script, StandInConfig, TestPushCa,
};

/// What one HTTP exchange produced, in a client-neutral form.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Exchange {
    status: u16,
    reason: Option<String>,
    has_timestamp: bool,
    apns_id: Option<String>,
}

struct Request {
    name: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
}

/// Files curl needs, in a private temporary directory removed on drop.
struct CurlFiles {
    dir: PathBuf,
}

impl CurlFiles {
    fn new(env: &crate::support::Env, cert: &MintedPushCert) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "apns-curl-{}-{}",
            std::process::id(),
            mdmctl::sim::apns::new_uuid()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("cert.pem"), cert.cert_pem().expect("pem")).expect("write");
        // PKCS#1, as `openssl pkcs12 -nodes` of old wrote it.
        std::fs::write(dir.join("key.pem"), cert.key_pem_pkcs1().expect("pem")).expect("write");
        std::fs::write(
            dir.join("ca.pem"),
            env.stand_in.server_ca_pem().expect("pem"),
        )
        .expect("write");
        Self { dir }
    }
}

impl Drop for CurlFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs curl; `Err(exit code)` when no HTTP answer came back.
async fn curl(
    env: &crate::support::Env,
    files: &CurlFiles,
    req: &Request,
    extra: &[&str],
) -> Result<(Exchange, String), i32> {
    let tag = mdmctl::sim::apns::new_uuid();
    let body_out = files.dir.join(format!("{tag}.body"));
    let head_out = files.dir.join(format!("{tag}.head"));
    let mut cmd = tokio::process::Command::new("curl");
    cmd.arg("-sS")
        .arg("--http2")
        .arg("--cert")
        .arg(files.dir.join("cert.pem"))
        .arg("--key")
        .arg(files.dir.join("key.pem"))
        .arg("--cacert")
        .arg(files.dir.join("ca.pem"))
        .arg("-X")
        .arg(req.method)
        .arg("-D")
        .arg(&head_out)
        .arg("-o")
        .arg(&body_out)
        .arg("-w")
        .arg("%{http_code} %{http_version}")
        .args(extra);
    for (name, value) in &req.headers {
        cmd.arg("-H").arg(format!("{name}: {value}"));
    }
    if let Some(body) = &req.body {
        let body_in = files.dir.join(format!("{tag}.in"));
        std::fs::write(&body_in, body).expect("write body");
        cmd.arg("--data-binary")
            .arg(format!("@{}", body_in.display()));
    }
    cmd.arg(format!("{}{}", env.stand_in.base_url(), req.path));
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("curl runs");
    if !out.status.success() {
        return Err(out.status.code().unwrap_or(-1));
    }
    let written = String::from_utf8_lossy(&out.stdout).to_string();
    let mut parts = written.split_whitespace();
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).expect("status");
    let version = parts.next().unwrap_or_default().to_string();
    let body = std::fs::read(&body_out).unwrap_or_default();
    let head = std::fs::read_to_string(&head_out).unwrap_or_default();
    let apns_id = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("apns-id:")
            .map(|v| v.trim().to_string())
    });
    Ok((exchange(status, &body, apns_id), version))
}

fn exchange(status: u16, body: &[u8], apns_id: Option<String>) -> Exchange {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    Exchange {
        status,
        reason: json
            .as_ref()
            .and_then(|j| j["reason"].as_str())
            .map(str::to_string),
        has_timestamp: json.as_ref().is_some_and(|j| j["timestamp"].is_u64()),
        apns_id,
    }
}

fn raw_client(env: &crate::support::Env, cert: &MintedPushCert) -> reqwest::Client {
    let identity = reqwest::Identity::from_pkcs8_pem(
        &cert.cert_pem().expect("pem"),
        &cert.key_pem_pkcs8().expect("pem"),
    )
    .expect("identity");
    let ca =
        reqwest::Certificate::from_pem(&env.stand_in.server_ca_pem().expect("pem")).expect("ca");
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .identity(identity)
        .tls_certs_only([ca])
        .build()
        .expect("client")
}

async fn reqwest_exchange(
    env: &crate::support::Env,
    client: &reqwest::Client,
    req: &Request,
) -> Exchange {
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).expect("method");
    let mut builder = client.request(method, format!("{}{}", env.stand_in.base_url(), req.path));
    for (name, value) in &req.headers {
        builder = builder.header(*name, value);
    }
    if let Some(body) = &req.body {
        builder = builder.body(body.clone());
    }
    let resp = builder.send().await.expect("answer");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let status = resp.status().as_u16();
    let apns_id = resp
        .headers()
        .get("apns-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.bytes().await.expect("body");
    exchange(status, &body, apns_id)
}

fn device(token_hex: &str) -> String {
    format!("/3/device/{token_hex}")
}

fn mdm_headers(topic: &str) -> Vec<(&'static str, String)> {
    vec![
        ("apns-topic", topic.to_string()),
        ("apns-push-type", "mdm".to_string()),
        ("apns-priority", "10".to_string()),
        ("content-type", "application/json".to_string()),
    ]
}

fn requests(topic: &str) -> Vec<(Request, u16, Option<&'static str>)> {
    let ok_token = crate::support::token(100).to_hex();
    let gone = crate::support::token(101).to_hex();
    let bad = crate::support::token(102).to_hex();
    let body = || Some(br#"{"mdm":"magic-xyz"}"#.to_vec());
    let with = |extra: (&'static str, &str)| {
        let mut h = mdm_headers(topic);
        h.retain(|(n, _)| *n != extra.0);
        h.push((extra.0, extra.1.to_string()));
        h
    };
    let without = |name: &str| {
        let mut h = mdm_headers(topic);
        h.retain(|(n, _)| *n != name);
        h
    };
    let req = |name, method, path: String, headers, body| Request {
        name,
        method,
        path,
        headers,
        body,
    };
    vec![
        (
            req(
                "delivered",
                "POST",
                device(&ok_token),
                mdm_headers(topic),
                body(),
            ),
            200,
            None,
        ),
        (
            req(
                "topic omitted: the certificate's topic applies",
                "POST",
                device(&ok_token),
                without("apns-topic"),
                body(),
            ),
            200,
            None,
        ),
        (
            req(
                "expiration and apns-id",
                "POST",
                device(&ok_token),
                {
                    let mut h = with(("apns-expiration", "0"));
                    h.push((
                        "apns-id",
                        "123e4567-e89b-42d3-a456-426614174000".to_string(),
                    ));
                    h
                },
                body(),
            ),
            200,
            None,
        ),
        (
            req(
                "unregistered",
                "POST",
                device(&gone),
                mdm_headers(topic),
                body(),
            ),
            410,
            Some("Unregistered"),
        ),
        (
            req(
                "scripted bad token",
                "POST",
                device(&bad),
                mdm_headers(topic),
                body(),
            ),
            400,
            Some("BadDeviceToken"),
        ),
        (
            req(
                "short token",
                "POST",
                device("abcd1234"),
                mdm_headers(topic),
                body(),
            ),
            400,
            Some("BadDeviceToken"),
        ),
        (
            req(
                "non-hex token",
                "POST",
                device(&"zz".repeat(32)),
                mdm_headers(topic),
                body(),
            ),
            400,
            Some("BadDeviceToken"),
        ),
        (
            req(
                "no token",
                "POST",
                "/3/device/".to_string(),
                mdm_headers(topic),
                body(),
            ),
            400,
            Some("MissingDeviceToken"),
        ),
        (
            req(
                "bad path",
                "POST",
                "/3/other/x".to_string(),
                mdm_headers(topic),
                body(),
            ),
            404,
            Some("BadPath"),
        ),
        (
            req("get", "GET", device(&ok_token), mdm_headers(topic), None),
            405,
            Some("MethodNotAllowed"),
        ),
        (
            req(
                "wrong topic",
                "POST",
                device(&ok_token),
                with(("apns-topic", "com.apple.mgmt.External.other")),
                body(),
            ),
            400,
            Some("TopicDisallowed"),
        ),
        (
            req(
                "push type missing",
                "POST",
                device(&ok_token),
                without("apns-push-type"),
                body(),
            ),
            400,
            Some("InvalidPushType"),
        ),
        (
            req(
                "push type alert",
                "POST",
                device(&ok_token),
                with(("apns-push-type", "alert")),
                body(),
            ),
            400,
            Some("InvalidPushType"),
        ),
        (
            req(
                "bad priority",
                "POST",
                device(&ok_token),
                with(("apns-priority", "7")),
                body(),
            ),
            400,
            Some("BadPriority"),
        ),
        (
            req(
                "bad expiration",
                "POST",
                device(&ok_token),
                with(("apns-expiration", "tomorrow")),
                body(),
            ),
            400,
            Some("BadExpirationDate"),
        ),
        (
            req(
                "bad apns-id",
                "POST",
                device(&ok_token),
                with(("apns-id", "not-a-uuid")),
                body(),
            ),
            400,
            Some("BadMessageId"),
        ),
        (
            req(
                "duplicate apns-topic",
                "POST",
                device(&ok_token),
                {
                    let mut h = mdm_headers(topic);
                    h.push(("apns-topic", topic.to_string()));
                    h
                },
                body(),
            ),
            400,
            Some("DuplicateHeaders"),
        ),
        (
            req(
                "empty body",
                "POST",
                device(&ok_token),
                mdm_headers(topic),
                Some(Vec::new()),
            ),
            400,
            Some("PayloadEmpty"),
        ),
        (
            req(
                "alert payload, no mdm key",
                "POST",
                device(&ok_token),
                mdm_headers(topic),
                Some(br#"{"aps":{"alert":"hi"}}"#.to_vec()),
            ),
            400,
            Some("BadPayload"),
        ),
        (
            req(
                "mdm not a string",
                "POST",
                device(&ok_token),
                mdm_headers(topic),
                Some(br#"{"mdm":42}"#.to_vec()),
            ),
            400,
            Some("BadPayload"),
        ),
        (
            req(
                "not json",
                "POST",
                device(&ok_token),
                mdm_headers(topic),
                Some(b"mdm=1".to_vec()),
            ),
            400,
            Some("BadPayload"),
        ),
        (
            req(
                "payload over 4 KiB",
                "POST",
                device(&ok_token),
                mdm_headers(topic),
                Some(format!(r#"{{"mdm":"{}"}}"#, "m".repeat(5000)).into_bytes()),
            ),
            413,
            Some("PayloadTooLarge"),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_reqwest_get_the_same_documented_answers() {
    let out = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .expect("curl is installed");
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(version.contains("HTTP2"), "curl lacks HTTP/2: {version}");

    let env = crate::support::start(StandInConfig::default()).await;
    env.stand_in
        .script(&crate::support::token(101).to_hex(), Script::Unregistered);
    env.stand_in
        .script(&crate::support::token(102).to_hex(), Script::BadDeviceToken);
    let files = CurlFiles::new(&env, &env.cert);
    let raw = raw_client(&env, &env.cert);

    for (req, status, reason) in requests(&env.cert.topic) {
        let (by_curl, http_version) = curl(&env, &files, &req, &[])
            .await
            .unwrap_or_else(|code| panic!("{}: curl exited {code}", req.name));
        let by_reqwest = reqwest_exchange(&env, &raw, &req).await;
        assert_eq!(http_version, "2", "{}: curl did not use HTTP/2", req.name);
        assert_eq!(by_curl.status, status, "{}: {by_curl:?}", req.name);
        assert_eq!(by_curl.reason.as_deref(), reason, "{}", req.name);
        assert_eq!(by_curl.has_timestamp, status == 410, "{}", req.name);
        assert_eq!(
            (by_curl.status, &by_curl.reason, by_curl.has_timestamp),
            (
                by_reqwest.status,
                &by_reqwest.reason,
                by_reqwest.has_timestamp
            ),
            "{}: curl and reqwest disagree",
            req.name
        );
        for ex in [&by_curl, &by_reqwest] {
            let id = ex.apns_id.as_deref().unwrap_or_default();
            assert_eq!(id.len(), 36, "{}: apns-id {id:?}", req.name);
        }
        if let Some((_, sent)) = req.headers.iter().find(|(n, _)| *n == "apns-id")
            && status == 200
        {
            assert_eq!(by_curl.apns_id.as_deref(), Some(sent.as_str()));
            assert_eq!(by_reqwest.apns_id.as_deref(), Some(sent.as_str()));
        }
    }
    // Three accepted requests, each sent by both clients.
    assert_eq!(env.stand_in.push_count(), 6);
    let pushes = env
        .stand_in
        .pushes_for(&crate::support::token(100).to_hex());
    assert!(pushes.iter().all(|p| p.push_magic == "magic-xyz"));
    assert!(pushes.iter().all(|p| p.topic == env.cert.topic));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_sees_scripted_retries_the_same_way() {
    let env = crate::support::start(StandInConfig::default()).await;
    let files = CurlFiles::new(&env, &env.cert);
    let hex = crate::support::token(7).to_hex();
    let req = Request {
        name: "push",
        method: "POST",
        path: device(&hex),
        headers: mdm_headers(&env.cert.topic),
        body: Some(br#"{"mdm":"m"}"#.to_vec()),
    };
    env.stand_in
        .script(&hex, Script::TooManyRequests { times: 1 });
    let (first, _) = curl(&env, &files, &req, &[]).await.expect("answer");
    let (second, _) = curl(&env, &files, &req, &[]).await.expect("answer");
    assert_eq!(
        (first.status, first.reason.as_deref()),
        (429, Some("TooManyRequests"))
    );
    assert_eq!(second.status, 200);
    env.stand_in
        .script(&hex, Script::ServiceUnavailable { times: 1 });
    let (third, _) = curl(&env, &files, &req, &[]).await.expect("answer");
    assert_eq!(
        (third.status, third.reason.as_deref()),
        (503, Some("ServiceUnavailable"))
    );
    env.stand_in
        .script(&hex, Script::InternalServerError { times: 1 });
    let (fourth, _) = curl(&env, &files, &req, &[]).await.expect("answer");
    assert_eq!(
        (fourth.status, fourth.reason.as_deref()),
        (500, Some("InternalServerError"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_is_refused_without_http2_or_with_a_foreign_or_expired_certificate() {
    let env = crate::support::start(StandInConfig::default()).await;
    let req = Request {
        name: "push",
        method: "POST",
        path: device(&crate::support::token(1).to_hex()),
        headers: mdm_headers(&env.cert.topic),
        body: Some(br#"{"mdm":"m"}"#.to_vec()),
    };

    // HTTP/1.1 only: ALPN finds no common protocol.
    let files = CurlFiles::new(&env, &env.cert);
    let refused = curl(&env, &files, &req, &["--http1.1"]).await;
    assert!(refused.is_err(), "http/1.1 must be refused: {refused:?}");

    // A push certificate from another CA.
    let foreign = TestPushCa::generate_named("Not Apple")
        .expect("ca")
        .issue_push_certificate(&PushCertOptions::default())
        .expect("cert");
    let files = CurlFiles::new(&env, &foreign);
    let refused = curl(&env, &files, &req, &[]).await;
    assert!(
        refused.is_err(),
        "foreign certificate accepted: {refused:?}"
    );

    // An expired one from the right CA.
    let expired = env
        .ca
        .issue_push_certificate(&PushCertOptions::expired())
        .expect("cert");
    let files = CurlFiles::new(&env, &expired);
    let refused = curl(&env, &files, &req, &[]).await;
    assert!(
        refused.is_err(),
        "expired certificate accepted: {refused:?}"
    );

    // No client certificate at all.
    let files = CurlFiles::new(&env, &env.cert);
    let mut cmd = tokio::process::Command::new("curl");
    let status = cmd
        .args(["-sS", "--http2", "-o", "/dev/null", "--cacert"])
        .arg(files.dir.join("ca.pem"))
        .arg(format!(
            "{}/3/device/{}",
            env.stand_in.base_url(),
            crate::support::token(1).to_hex()
        ))
        .stderr(Stdio::null())
        .status()
        .await
        .expect("curl runs");
    assert!(!status.success());

    assert_eq!(env.stand_in.push_count(), 0);
    let stand_in = &env.stand_in;
    assert!(crate::support::eventually(|| stand_in.handshake_failures() >= 4).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http403_mode_answers_bad_certificate_and_missing_provider_token() {
    let env = crate::support::start(StandInConfig {
        certificate_check: CertificateCheck::Http403,
        ..StandInConfig::default()
    })
    .await;
    let req = Request {
        name: "push",
        method: "POST",
        path: device(&crate::support::token(1).to_hex()),
        headers: mdm_headers(&env.cert.topic),
        body: Some(br#"{"mdm":"m"}"#.to_vec()),
    };
    let foreign = TestPushCa::generate_named("Not Apple")
        .expect("ca")
        .issue_push_certificate(&PushCertOptions::default())
        .expect("cert");
    let files = CurlFiles::new(&env, &foreign);
    let (answer, _) = curl(&env, &files, &req, &[]).await.expect("an http answer");
    assert_eq!(
        (answer.status, answer.reason.as_deref()),
        (403, Some("BadCertificate"))
    );
    let (answer, _) = {
        let files = CurlFiles::new(&env, &env.cert);
        curl(&env, &files, &req, &[]).await.expect("an http answer")
    };
    assert_eq!(answer.status, 200);

    // No client certificate: the documented 403 MissingProviderToken.
    let ca =
        reqwest::Certificate::from_pem(&env.stand_in.server_ca_pem().expect("pem")).expect("ca");
    let anonymous = reqwest::Client::builder()
        .http2_prior_knowledge()
        .tls_certs_only([ca])
        .build()
        .expect("client");
    let ex = reqwest_exchange(&env, &anonymous, &req).await;
    assert_eq!(
        (ex.status, ex.reason.as_deref()),
        (403, Some("MissingProviderToken"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_pushes_and_latency_and_shutdown() {
    let env = crate::support::start(StandInConfig {
        latency: Some(Duration::from_millis(50)),
        ..StandInConfig::default()
    })
    .await;
    let client = crate::support::client(&env);
    let targets: Vec<_> = (0..20).map(crate::support::target).collect();
    let push = tokio::spawn({
        let client = client.clone();
        async move { client.push_many(&targets).await }
    });
    let pushes = env
        .stand_in
        .wait_for_pushes(20, Duration::from_secs(10))
        .await
        .expect("20 pushes");
    assert_eq!(pushes.len(), 20);
    assert!(push.await.expect("joined").iter().all(|o| o.is_delivered()));
    let too_many = env
        .stand_in
        .wait_for_pushes(21, Duration::from_millis(100))
        .await;
    assert!(too_many.is_err());

    env.stand_in.set_latency(None);
    let base = env.stand_in.base_url();
    env.stand_in.shutdown().await;
    // Nothing listens any more.
    let port = base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .expect("port");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
