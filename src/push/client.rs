//! The APNs HTTP/2 client: one long-lived connection per push certificate,
//! many pushes multiplexed over it, bounded retries, and the mapping of
//! APNs' answers to [`PushOutcome`]s.
//!
//! Apple asks providers to keep their connection open and reuse it for many
//! notifications rather than opening one per push, and to check its health
//! with HTTP/2 PING frames:
//! <https://developer.apple.com/documentation/usernotifications/sending-notification-requests-to-apns>.
//! reqwest (hyper underneath) does exactly that when told the server speaks
//! HTTP/2 (`http2_prior_knowledge`): ALPN offers only `h2`, every request is
//! a stream on the one pooled connection, and a lost or GOAWAY'd connection
//! is replaced on the next request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openssl::x509::X509;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::error::ClientError;
use super::identity::PushIdentity;
use super::{BoxFuture, PushOutcome, PushTarget, Pusher};

/// Apple's production APNs gateway.
pub const PRODUCTION_URL: &str = "https://api.push.apple.com";
/// The production gateway on port 2197, for networks that block 443 to it.
pub const PRODUCTION_ALT_PORT_URL: &str = "https://api.push.apple.com:2197";
/// Apple's development (sandbox) gateway.
pub const DEVELOPMENT_URL: &str = "https://api.development.push.apple.com";

/// How retryable failures (429, 5xx, connection errors) are retried.
///
/// The delay before attempt `n + 1` is `base_delay * 2^(n-1)`, capped at
/// `max_delay`, then jittered to a random point in its upper half so a
/// fan-out to thousands of devices does not come back in lock-step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Delay before the first retry, before jitter.
    pub base_delay: Duration,
    /// Upper bound of any single delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The jittered delay after failed attempt number `attempt` (1-based).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        let full = self
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        // "Equal jitter": half fixed, half random, so a retry never fires
        // immediately but retries still spread out.
        let half = full / 2;
        half + half.mul_f64(random_unit())
    }
}

/// Which certificate authorities the client trusts for the APNs server.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// The system's trust store (real APNs).
    SystemRoots,
    /// Only these roots (the local stand-in, or a pinned Apple root).
    Only(Vec<X509>),
}

/// Settings of an [`ApnsClient`].
#[derive(Debug, Clone)]
pub struct ApnsConfig {
    /// Scheme, host and optional port, e.g. [`PRODUCTION_URL`].
    pub base_url: String,
    /// Pushes in flight at once on the connection. APNs advertises its own
    /// stream limit (about 1,000); hyper waits for a free stream beyond it.
    pub max_in_flight: usize,
    /// Retries of 429, 5xx and connection failures.
    pub retry: RetryPolicy,
    /// TCP + TLS set-up limit.
    pub connect_timeout: Duration,
    /// Limit of one request/response exchange.
    pub request_timeout: Duration,
    /// HTTP/2 PING interval that keeps an idle connection alive and detects
    /// a dead one; `None` disables pings.
    pub keep_alive_interval: Option<Duration>,
    /// `apns-priority`: 10 sends at once (what a device wake needs), 5
    /// lets APNs batch for power, 1 is lowest.
    pub priority: u8,
    /// Roots trusted for the APNs server certificate.
    pub server_trust: ServerTrust,
    /// Refuse to build a client from an expired or not yet valid push
    /// certificate (APNs would refuse it anyway). Tests that exercise the
    /// server's refusal turn this off.
    pub refuse_invalid_certificate: bool,
    /// Negotiate at most TLS 1.2 (APNs supports 1.2 and later).
    ///
    /// Why: in TLS 1.2 the server checks the client certificate inside the
    /// handshake, so a refused push certificate (expired, revoked, not from
    /// Apple) fails the connect with the server's alert, which we report as
    /// [`PushOutcome::CertificateRefused`]. In TLS 1.3 the client considers
    /// the handshake done before the server has looked at the certificate;
    /// the alert then arrives after the HTTP/2 preface was sent and often
    /// surfaces only as "connection closed" or a reset, indistinguishable
    /// from a network fault, so pushes would be retried and end as `Failed`.
    pub tls12_only: bool,
}

impl Default for ApnsConfig {
    fn default() -> Self {
        Self {
            base_url: PRODUCTION_URL.to_string(),
            max_in_flight: 500,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            keep_alive_interval: Some(Duration::from_secs(60)),
            priority: 10,
            server_trust: ServerTrust::SystemRoots,
            refuse_invalid_certificate: true,
            tls12_only: true,
        }
    }
}

impl ApnsConfig {
    /// Production APNs ([`PRODUCTION_URL`]).
    pub fn production() -> Self {
        Self::default()
    }

    /// The development gateway ([`DEVELOPMENT_URL`]).
    pub fn development() -> Self {
        Self {
            base_url: DEVELOPMENT_URL.to_string(),
            ..Self::default()
        }
    }

    /// Another gateway (the local stand-in, port 2197) trusting only `roots`.
    pub fn local(base_url: impl Into<String>, roots: Vec<X509>) -> Self {
        Self {
            base_url: base_url.into(),
            server_trust: ServerTrust::Only(roots),
            ..Self::default()
        }
    }
}

/// The real [`Pusher`]: talks HTTP/2 to APNs with one push certificate.
///
/// Cheap to clone (the connection and limits are shared); build one per
/// push certificate at start-up and keep it for the life of the server.
#[derive(Clone)]
pub struct ApnsClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// `{base}/3/device/`.
    device_url: String,
    topic: String,
    topic_header: HeaderValue,
    priority_header: HeaderValue,
    in_flight: Semaphore,
    retry: RetryPolicy,
    /// The TLS alert of the last connection that APNs refused our
    /// certificate on, until a response proves a connection works again.
    ///
    /// Only the request that reads the server's alert sees it (the one whose
    /// connect failed, or with TLS 1.3 whichever first reads the
    /// "established" connection); the others waiting on that connection
    /// just see it go ("canceled", "connection closed"). The latch lets
    /// those be classified too.
    refusal: std::sync::Mutex<Option<String>>,
    /// Whether the last exchange got an HTTP answer (the connection is up).
    connected: AtomicBool,
}

/// The error body of an APNs response.
#[derive(Deserialize)]
struct ErrorBody {
    reason: Option<String>,
    /// Milliseconds since the epoch (410 only).
    timestamp: Option<u64>,
}

/// The result of one HTTP exchange.
enum Attempt {
    Done(PushOutcome),
    Retry(String),
}

impl ApnsClient {
    /// Builds the client. No connection is made until the first push.
    pub fn new(identity: &PushIdentity, config: ApnsConfig) -> Result<Self, ClientError> {
        if config.refuse_invalid_certificate {
            identity.check_validity(SystemTime::now())?;
        }
        let base = config.base_url.trim_end_matches('/');
        let bad_url = |why: &str| ClientError::BaseUrl {
            url: config.base_url.clone(),
            why: why.to_string(),
        };
        let parsed = reqwest::Url::parse(base).map_err(|e| bad_url(&e.to_string()))?;
        if parsed.scheme() != "https" {
            return Err(bad_url("apns is only reachable over https"));
        }
        if parsed.path() != "/" || parsed.query().is_some() {
            return Err(bad_url("give only scheme, host and port"));
        }
        let topic = identity.topic().to_string();
        let topic_header = HeaderValue::from_str(&topic).map_err(|_| ClientError::Topic {
            topic: topic.clone(),
        })?;
        if !matches!(config.priority, 1 | 5 | 10) {
            return Err(ClientError::Priority(config.priority));
        }
        let priority_header = HeaderValue::from(u16::from(config.priority));

        let mut builder = reqwest::Client::builder()
            // ALPN offers only h2 and the pool shares one connection among
            // all concurrent requests instead of racing several handshakes.
            .http2_prior_knowledge()
            .identity(identity.to_reqwest_identity()?)
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            // Keep the connection for the life of the client, as Apple asks.
            .pool_idle_timeout(None)
            .http2_keep_alive_interval(config.keep_alive_interval)
            .http2_keep_alive_while_idle(config.keep_alive_interval.is_some())
            .http2_keep_alive_timeout(Duration::from_secs(20));
        if config.tls12_only {
            builder = builder.tls_version_max(reqwest::tls::Version::TLS_1_2);
        }
        if let ServerTrust::Only(roots) = &config.server_trust {
            let mut certs = Vec::with_capacity(roots.len());
            for root in roots {
                let der = root.to_der().map_err(ClientError::RootCertificate)?;
                certs.push(reqwest::Certificate::from_der(&der).map_err(ClientError::Http)?);
            }
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().map_err(ClientError::Http)?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                device_url: format!("{base}/3/device/"),
                topic,
                topic_header,
                priority_header,
                in_flight: Semaphore::new(config.max_in_flight.max(1)),
                retry: RetryPolicy {
                    max_attempts: config.retry.max_attempts.max(1),
                    ..config.retry
                },
                refusal: std::sync::Mutex::new(None),
                connected: AtomicBool::new(false),
            }),
        })
    }

    /// The APNs topic every push is sent with.
    pub fn topic(&self) -> &str {
        &self.inner.topic
    }

    /// Pushes to one device, with retries.
    pub async fn push_one(&self, target: &PushTarget) -> PushOutcome {
        self.inner.push_with_retries(target).await
    }

    /// Pushes to every target concurrently (at most `max_in_flight` on the
    /// wire at once, shared with other calls on this client) and returns one
    /// outcome per target, in order. Must run inside a Tokio runtime; the
    /// pushes run as tasks, which are cancelled if this future is dropped.
    pub async fn push_many(&self, targets: &[PushTarget]) -> Vec<PushOutcome> {
        let mut outcomes: Vec<Option<PushOutcome>> = vec![None; targets.len()];
        let mut rest = 0;
        if let Some(first) = targets.first()
            && targets.len() > 1
            && !self.inner.connected.load(Ordering::Relaxed)
        {
            // No connection is known to be up: open it with one push before
            // the burst. Otherwise every concurrent request races to
            // connect, and hyper-util can end up with a second HTTP/2
            // connection (Apple asks for one), and a refused certificate
            // shows only on one of the racing requests.
            let outcome = self.inner.push_with_retries(first).await;
            let connected = self.inner.connected.load(Ordering::Relaxed);
            outcomes[0] = Some(outcome.clone());
            rest = 1;
            if !connected {
                // No HTTP answer at all: APNs is unreachable or refuses the
                // certificate. The others would fail the same way, each
                // after its own retries, so do not try them.
                let shared = match outcome {
                    PushOutcome::Failed { reason } => PushOutcome::Failed {
                        reason: format!(
                            "not attempted: the first push of the batch failed: {reason}"
                        ),
                    },
                    other => other,
                };
                for slot in outcomes.iter_mut().skip(1) {
                    *slot = Some(shared.clone());
                }
                rest = targets.len();
            }
        }
        let mut tasks = JoinSet::new();
        for (index, target) in targets.iter().enumerate().skip(rest) {
            let inner = Arc::clone(&self.inner);
            let target = target.clone();
            tasks.spawn(async move { (index, inner.push_with_retries(&target).await) });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((index, outcome)) => {
                    if let Some(slot) = outcomes.get_mut(index) {
                        *slot = Some(outcome);
                    }
                }
                Err(e) => tracing::error!(error = %e, "push task failed"),
            }
        }
        let outcomes: Vec<PushOutcome> = outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| PushOutcome::Failed {
                    reason: "push task did not complete".to_string(),
                })
            })
            .collect();
        log_summary(&self.inner.topic, &outcomes);
        outcomes
    }
}

impl Pusher for ApnsClient {
    fn push_many<'a>(&'a self, targets: &'a [PushTarget]) -> BoxFuture<'a, Vec<PushOutcome>> {
        Box::pin(ApnsClient::push_many(self, targets))
    }

    fn topic(&self) -> &str {
        ApnsClient::topic(self)
    }

    fn push_one<'a>(&'a self, target: &'a PushTarget) -> BoxFuture<'a, PushOutcome> {
        Box::pin(ApnsClient::push_one(self, target))
    }
}

impl Inner {
    async fn push_with_retries(&self, target: &PushTarget) -> PushOutcome {
        let url = format!("{}{}", self.device_url, target.token.to_hex());
        let body = target.body();
        let mut attempt = 1;
        loop {
            let result = {
                // The permit bounds requests on the wire; it is released
                // before any back-off sleep so waiting retries do not block
                // fresh pushes.
                let _permit = match self.in_flight.acquire().await {
                    Ok(p) => p,
                    Err(_) => {
                        return PushOutcome::Failed {
                            reason: "push client is shut down".to_string(),
                        };
                    }
                };
                self.send_once(target, &url, body.clone()).await
            };
            match result {
                Attempt::Done(outcome) => {
                    tracing::debug!(token = %target.token, attempt, ?outcome, "push answered");
                    return outcome;
                }
                Attempt::Retry(reason) if attempt >= self.retry.max_attempts => {
                    tracing::debug!(token = %target.token, attempt, %reason, "push retries exhausted");
                    return PushOutcome::Failed {
                        reason: format!("{reason} (after {attempt} attempts)"),
                    };
                }
                Attempt::Retry(reason) => {
                    let delay = self.retry.delay_after(attempt);
                    tracing::debug!(token = %target.token, attempt, %reason, ?delay, "push will be retried");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn send_once(&self, target: &PushTarget, url: &str, body: Vec<u8>) -> Attempt {
        // Headers as Apple documents them for an MDM push; apns-id is left
        // to APNs, which returns a fresh UUID.
        let mut request = self
            .http
            .post(url)
            .header("apns-topic", self.topic_header.clone())
            .header("apns-push-type", HeaderValue::from_static("mdm"))
            .header("apns-priority", self.priority_header.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body);
        if let Some(expiration) = target.expiration {
            request = request.header("apns-expiration", expiration);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                self.connected.store(false, Ordering::Relaxed);
                return self.classify_transport_error(e);
            }
        };
        self.connected.store(true, Ordering::Relaxed);
        self.set_refusal(None);
        let status = response.status().as_u16();
        let apns_id = response
            .headers()
            .get("apns-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if status == 200 {
            return Attempt::Done(PushOutcome::Delivered { apns_id });
        }
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return self.classify_transport_error(e),
        };
        let (reason, timestamp) = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(b) => (b.reason, b.timestamp),
            Err(_) => (None, None),
        };
        classify_status(status, reason, timestamp)
    }

    /// Maps a failure below HTTP (connect, TLS, HTTP/2 GOAWAY or reset,
    /// time-out) to a retry, or to a final outcome when retrying cannot help.
    fn classify_transport_error(&self, error: reqwest::Error) -> Attempt {
        // The URL holds the full device token: strip it before it can reach
        // a log line or an outcome.
        let error = error.without_url();
        let detail = error_chain(&error);
        let lower = detail.to_ascii_lowercase();
        if is_client_certificate_refusal(&lower) {
            self.set_refusal(Some(detail.clone()));
            return Attempt::Done(PushOutcome::CertificateRefused { reason: detail });
        }
        if !error.is_timeout()
            && let Some(alert) = self.refusal()
        {
            // A connection closed, reset or cancelled under us while the
            // last answer we had was a refusal: the same refusal. The latch
            // clears as soon as any response arrives.
            return Attempt::Done(PushOutcome::CertificateRefused { reason: alert });
        }
        if lower.contains("certificate verify failed") {
            // We do not trust the server: a configuration problem (or a
            // man-in-the-middle) that retrying will not fix.
            return Attempt::Done(PushOutcome::Failed {
                reason: format!("the apns server certificate is not trusted: {detail}"),
            });
        }
        Attempt::Retry(detail)
    }

    fn refusal(&self) -> Option<String> {
        self.refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_refusal(&self, refusal: Option<String>) {
        let mut latch = self.refusal.lock().unwrap_or_else(|p| p.into_inner());
        if latch.is_some() || refusal.is_some() {
            *latch = refusal;
        }
    }
}

/// Maps an APNs answer to an outcome, per Apple's table of status codes and
/// reasons (handling-notification-responses-from-apns).
fn classify_status(status: u16, reason: Option<String>, timestamp: Option<u64>) -> Attempt {
    let reason = reason.unwrap_or_else(|| format!("http {status} without a reason"));
    match status {
        // 410: the token is no longer active for the topic. (`ExpiredToken`
        // is the other 410 reason Apple lists; either way the token is dead.)
        410 => Attempt::Done(PushOutcome::Unregistered {
            timestamp: timestamp.map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
        }),
        400 if reason == "BadDeviceToken" || reason == "DeviceTokenNotForTopic" => {
            Attempt::Done(PushOutcome::BadToken { reason })
        }
        // Too many pushes to one device, or APNs itself is in trouble /
        // shutting down: worth another try after a pause.
        429 | 500 | 502 | 503 | 504 => Attempt::Retry(format!("http {status} {reason}")),
        _ => Attempt::Done(PushOutcome::Rejected { status, reason }),
    }
}

/// A TLS alert from the server about our certificate. In TLS 1.2 it
/// arrives during the handshake; in TLS 1.3 the client finishes its side
/// first and reads the alert with the first frame, so it can show up as an
/// HTTP/2 or I/O error. OpenSSL spells the alerts `sslv3 alert bad
/// certificate`, `tlsv13 alert certificate required`, `... unknown ca` etc.
fn is_client_certificate_refusal(lower: &str) -> bool {
    const ALERTS: [&str; 7] = [
        "alert bad certificate",
        "alert certificate expired",
        "alert certificate revoked",
        "alert certificate unknown",
        "alert unknown ca",
        "alert unsupported certificate",
        "alert certificate required",
    ];
    ALERTS.iter().any(|a| lower.contains(a))
}

/// The error and its sources, one line ("a: b: c").
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let msg = s.to_string();
        if !text.contains(&msg) {
            text.push_str(": ");
            text.push_str(&msg);
        }
        source = s.source();
    }
    text
}

fn log_summary(topic: &str, outcomes: &[PushOutcome]) {
    let mut counts = [0usize; 6];
    for o in outcomes {
        let i = match o {
            PushOutcome::Delivered { .. } => 0,
            PushOutcome::Unregistered { .. } => 1,
            PushOutcome::BadToken { .. } => 2,
            PushOutcome::Rejected { .. } => 3,
            PushOutcome::CertificateRefused { .. } => 4,
            PushOutcome::Failed { .. } => 5,
        };
        counts[i] += 1;
    }
    if let Some(server_side) = outcomes.iter().find(|o| o.affects_all_devices()) {
        tracing::warn!(%topic, outcome = ?server_side, "apns refused the push certificate or topic; every device is affected");
    }
    tracing::info!(
        %topic,
        delivered = counts[0],
        unregistered = counts[1],
        bad_token = counts[2],
        rejected = counts[3],
        certificate_refused = counts[4],
        failed = counts[5],
        "push batch done"
    );
}

/// A random number in [0, 1) for jitter; no jitter if the RNG fails.
fn random_unit() -> f64 {
    let mut buf = [0u8; 4];
    match openssl::rand::rand_bytes(&mut buf) {
        Ok(()) => f64::from(u32::from_le_bytes(buf)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        for _ in 0..50 {
            let d1 = p.delay_after(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = p.delay_after(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d9 = p.delay_after(9);
            assert!(d9 >= Duration::from_millis(500) && d9 <= Duration::from_millis(1000));
        }
        assert!(p.delay_after(u32::MAX) <= Duration::from_millis(1000));
    }

    #[test]
    fn statuses_are_classified_as_apple_documents() {
        let done =
            |s, r: &str| match classify_status(s, Some(r.to_string()), Some(1_700_000_000_000)) {
                Attempt::Done(o) => Some(o),
                Attempt::Retry(_) => None,
            };
        assert!(matches!(
            done(410, "Unregistered"),
            Some(PushOutcome::Unregistered { timestamp: Some(_) })
        ));
        assert!(matches!(
            done(400, "BadDeviceToken"),
            Some(PushOutcome::BadToken { .. })
        ));
        assert!(matches!(
            done(400, "DeviceTokenNotForTopic"),
            Some(PushOutcome::BadToken { .. })
        ));
        assert!(matches!(
            done(400, "TopicDisallowed"),
            Some(PushOutcome::Rejected { status: 400, .. })
        ));
        let forbidden = done(403, "BadCertificate");
        assert!(
            forbidden
                .as_ref()
                .is_some_and(PushOutcome::affects_all_devices)
        );
        for s in [413, 405, 404] {
            assert!(matches!(done(s, "x"), Some(PushOutcome::Rejected { .. })));
        }
        for s in [429, 500, 503] {
            assert!(done(s, "x").is_none(), "{s} must be retried");
        }
        match classify_status(500, None, None) {
            Attempt::Retry(r) => assert!(r.contains("500")),
            Attempt::Done(o) => panic!("unexpected {o:?}"),
        }
    }

    #[test]
    fn certificate_alerts_are_recognised() {
        assert!(is_client_certificate_refusal(
            "error:0a000415:ssl routines::sslv3 alert certificate expired"
        ));
        assert!(is_client_certificate_refusal(
            "tlsv13 alert certificate required"
        ));
        assert!(!is_client_certificate_refusal("connection refused"));
    }
}
