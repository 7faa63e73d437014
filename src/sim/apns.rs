//! A local stand-in for APNs (Apple Push Notification service), faithful
//! to Apple's documented provider API for MDM pushes, for tests, benchmarks
//! and `mdmctl demo` on machines that cannot reach Apple.
//!
//! It owns: a TLS (OpenSSL) listener on 127.0.0.1 speaking HTTP/2 only
//! (ALPN `h2`), client-certificate authentication against a given "Apple"
//! CA, validation of each `POST /3/device/<token>` the way Apple documents
//! it, a record of every accepted push, per-token scripted failures, and the
//! minting of test MDM push certificates ([`TestPushCa`]).
//!
//! Apple's references:
//! - requests: <https://developer.apple.com/documentation/usernotifications/sending-notification-requests-to-apns>
//! - answers: <https://developer.apple.com/documentation/usernotifications/handling-notification-responses-from-apns>
//! - certificate connections: <https://developer.apple.com/documentation/usernotifications/establishing-a-certificate-based-connection-to-apns>
//!
//! Where Apple leaves behaviour undocumented the stand-in picks something
//! plausible and says so: a body that is not a JSON object with a string
//! `mdm` key gets 400 `BadPayload` (Apple documents only `PayloadEmpty`),
//! and a missing or non-`mdm` `apns-push-type` gets 400 `InvalidPushType`
//! (this stand-in serves MDM pushes only).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, PKeyRef, Private};
use openssl::rsa::Rsa;
use openssl::ssl::{
    AlpnError, Ssl, SslAcceptor, SslContext, SslMethod, SslRef, SslVerifyMode, select_next_proto,
};
use openssl::stack::Stack;
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName, SubjectKeyIdentifier,
};
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::{X509, X509Name, X509NameBuilder, X509Ref, X509StoreContext};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_openssl::SslStream;

use crate::push::{IdentityError, PushIdentity, topic_of};

/// Apple's payload limit for a regular notification, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 4096;
/// Most body bytes read before giving up on a request (413 either way;
/// reading a little past the limit lets the client see the answer).
const MAX_READ_BYTES: usize = 64 * 1024;
/// Fewest hex digits the stand-in accepts as a device token (32 bytes, the
/// classic APNs token; Apple says tokens may grow, so longer ones pass).
pub const MIN_TOKEN_HEX_DIGITS: usize = 64;
/// Most hex digits accepted (100 bytes), a generous bound on growth.
pub const MAX_TOKEN_HEX_DIGITS: usize = 200;

/// Errors starting the stand-in or minting certificates.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("openssl failed while {doing}")]
    Openssl {
        doing: &'static str,
        #[source]
        source: ErrorStack,
    },
    #[error("i/o failed while {doing}")]
    Io {
        doing: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("a minted certificate does not make a push identity")]
    Identity(#[from] IdentityError),
    #[error("timed out waiting for {wanted} pushes ({got} arrived)")]
    WaitTimedOut { wanted: usize, got: usize },
}

fn ossl(doing: &'static str) -> impl FnOnce(ErrorStack) -> SimError {
    move |source| SimError::Openssl { doing, source }
}

/// How a client certificate that does not chain to the CA, is outside its
/// validity, or is missing, is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CertificateCheck {
    /// In the TLS handshake, with an alert (`unknown ca`, `certificate
    /// expired`, `certificate required`), as APNs does for certificates it
    /// cannot trust.
    #[default]
    Handshake,
    /// The handshake completes and every request is answered 403
    /// `BadCertificate` (or 403 `MissingProviderToken` without a
    /// certificate), the documented HTTP form of the same refusal.
    Http403,
}

/// Settings of an [`ApnsStandIn`].
#[derive(Debug, Clone)]
pub struct StandInConfig {
    /// How bad client certificates are refused.
    pub certificate_check: CertificateCheck,
    /// Delay before answering each request (simulates the trip to Apple).
    pub latency: Option<Duration>,
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` per connection (APNs uses about
    /// 1,000 for certificate connections).
    pub max_concurrent_streams: u32,
    /// After this many requests on one connection, send GOAWAY (graceful
    /// shutdown: requests in flight finish, the client must reconnect), as
    /// APNs does when it rotates connections.
    pub goaway_after: Option<u64>,
}

impl Default for StandInConfig {
    fn default() -> Self {
        Self {
            certificate_check: CertificateCheck::Handshake,
            latency: None,
            max_concurrent_streams: 1000,
            goaway_after: None,
        }
    }
}

/// A per-token behaviour, set with [`ApnsStandIn::script`]. Scripts apply
/// only to requests that are otherwise valid, as with the real service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Script {
    /// Always 410 `Unregistered`, with the time of scripting as `timestamp`.
    Unregistered,
    /// Always 400 `BadDeviceToken`.
    BadDeviceToken,
    /// 429 `TooManyRequests` this many times, then normal handling.
    TooManyRequests { times: u32 },
    /// 500 `InternalServerError` this many times, then normal handling.
    InternalServerError { times: u32 },
    /// 503 `ServiceUnavailable` this many times, then normal handling.
    ServiceUnavailable { times: u32 },
}

/// A push the stand-in accepted (answered 200).
///
/// `Debug` shortens the token and hides the push magic, so a demo that
/// logs pushes does not teach bad habits.
#[derive(Clone)]
pub struct RecordedPush {
    /// The token from the path, lowercased.
    pub token_hex: String,
    /// The topic the push was accepted for (the certificate's UID).
    pub topic: String,
    /// The `mdm` value of the body.
    pub push_magic: String,
    /// The `apns-id` answered.
    pub apns_id: String,
    /// When the push arrived.
    pub received_at: SystemTime,
    /// The request method (always POST for an accepted push).
    pub method: Method,
    /// The request path.
    pub path: String,
    /// Every request header (HTTP/2 pseudo-headers excluded).
    pub headers: HeaderMap,
    /// The exact body bytes.
    pub body: Bytes,
    /// Which TLS connection carried it (1 for the first accepted).
    pub connection: u64,
}

impl std::fmt::Debug for RecordedPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordedPush")
            .field("token", &self.token_hex.get(..8).unwrap_or_default())
            .field("topic", &self.topic)
            .field("push_magic", &"<redacted>")
            .field("apns_id", &self.apns_id)
            .field("received_at", &self.received_at)
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

/// Any answered request, accepted or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The token from the path, if the path had one.
    pub token_hex: Option<String>,
    /// The HTTP status sent.
    pub status: u16,
    /// The `reason` sent, for errors.
    pub reason: Option<String>,
    /// Which TLS connection carried it.
    pub connection: u64,
}

struct ScriptState {
    script: Script,
    remaining: u32,
    scripted_at_ms: u64,
}

struct Shared {
    config: StandInConfig,
    latency_ms: AtomicU64,
    ca_store: X509Store,
    scripts: Mutex<HashMap<String, ScriptState>>,
    pushes: Mutex<Vec<RecordedPush>>,
    answers: Mutex<Vec<Answer>>,
    /// Each accepted push's token, for listeners standing in for devices.
    delivered: tokio::sync::broadcast::Sender<String>,
    accepted: watch::Sender<usize>,
    connections: AtomicU64,
    handshake_failures: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
}

/// What the TLS layer established about the client.
enum Peer {
    /// A trusted certificate with this topic.
    Trusted { topic: String },
    /// Refused (Http403 mode): answer every request 403 with this reason.
    Refused { reason: &'static str },
}

struct Connection {
    id: u64,
    peer: Peer,
    requests: AtomicU64,
    goaway: Notify,
}

/// A running stand-in. Dropping it stops the listener; prefer
/// [`ApnsStandIn::shutdown`], which also drains connections.
pub struct ApnsStandIn {
    addr: SocketAddr,
    server_ca: X509,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    accept_task: Option<tokio::task::JoinHandle<()>>,
}

impl ApnsStandIn {
    /// Starts the stand-in on `127.0.0.1:0`, trusting client certificates
    /// issued by `ca_cert` (the test "Apple" CA that signs push
    /// certificates). Its own server certificate comes from a CA generated
    /// here; clients trust it through [`Self::server_ca`].
    pub async fn start(ca_cert: X509, config: StandInConfig) -> Result<Self, SimError> {
        let (server_ca, server_cert, server_key) = server_pki()?;
        let ctx = tls_context(&ca_cert, &server_ca, &server_cert, &server_key, &config)?;
        let mut store = X509StoreBuilder::new().map_err(ossl("creating the ca store"))?;
        store
            .add_cert(ca_cert)
            .map_err(ossl("adding the ca to the store"))?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|source| SimError::Io {
                doing: "binding 127.0.0.1:0",
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Io {
            doing: "reading the bound address",
            source,
        })?;
        let shared = Arc::new(Shared {
            latency_ms: AtomicU64::new(latency_ms(config.latency)),
            config,
            ca_store: store.build(),
            scripts: Mutex::new(HashMap::new()),
            pushes: Mutex::new(Vec::new()),
            answers: Mutex::new(Vec::new()),
            delivered: tokio::sync::broadcast::channel(65_536).0,
            accepted: watch::Sender::new(0),
            connections: AtomicU64::new(0),
            handshake_failures: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            peak_in_flight: AtomicU64::new(0),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let accept_task =
            tokio::spawn(accept_loop(listener, ctx, Arc::clone(&shared), shutdown_rx));
        tracing::debug!(%addr, "apns stand-in listening");
        Ok(Self {
            addr,
            server_ca,
            shared,
            shutdown,
            accept_task: Some(accept_task),
        })
    }

    /// `https://127.0.0.1:<port>`, to use as the client's base URL.
    pub fn base_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA of the stand-in's server certificate (valid for 127.0.0.1 and
    /// localhost): what a client must trust.
    pub fn server_ca(&self) -> &X509Ref {
        &self.server_ca
    }

    /// [`Self::server_ca`] as PEM (for `curl --cacert`).
    pub fn server_ca_pem(&self) -> Result<Vec<u8>, SimError> {
        self.server_ca
            .to_pem()
            .map_err(ossl("encoding the server ca"))
    }

    /// Scripts the answers for one token (hex, any case), replacing any
    /// earlier script for it.
    pub fn script(&self, token_hex: &str, script: Script) {
        let remaining = match script {
            Script::TooManyRequests { times }
            | Script::InternalServerError { times }
            | Script::ServiceUnavailable { times } => times,
            Script::Unregistered | Script::BadDeviceToken => 0,
        };
        lock(&self.shared.scripts).insert(
            token_hex.to_ascii_lowercase(),
            ScriptState {
                script,
                remaining,
                scripted_at_ms: now_ms(),
            },
        );
    }

    /// Removes a token's script.
    pub fn clear_script(&self, token_hex: &str) {
        lock(&self.shared.scripts).remove(&token_hex.to_ascii_lowercase());
    }

    /// Changes the artificial latency of later requests.
    pub fn set_latency(&self, latency: Option<Duration>) {
        self.shared
            .latency_ms
            .store(latency_ms(latency), Ordering::Relaxed);
    }

    /// Every accepted push so far, in order of acceptance.
    /// The token of every push accepted from now on, as APNs would deliver it to the device
    /// (the device simulator wakes on these).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.shared.delivered.subscribe()
    }

    pub fn pushes(&self) -> Vec<RecordedPush> {
        lock(&self.shared.pushes).clone()
    }

    /// How many pushes were accepted so far.
    pub fn push_count(&self) -> usize {
        *self.shared.accepted.borrow()
    }

    /// Accepted pushes for one token (hex, any case).
    pub fn pushes_for(&self, token_hex: &str) -> Vec<RecordedPush> {
        let token = token_hex.to_ascii_lowercase();
        lock(&self.shared.pushes)
            .iter()
            .filter(|p| p.token_hex == token)
            .cloned()
            .collect()
    }

    /// Forgets the recorded pushes and answers (a long demo otherwise keeps
    /// them all) and resets the in-flight peak. Scripts and connection
    /// counts stay.
    pub fn clear_records(&self) {
        lock(&self.shared.pushes).clear();
        lock(&self.shared.answers).clear();
        self.shared.accepted.send_modify(|count| *count = 0);
        self.shared.peak_in_flight.store(0, Ordering::Relaxed);
    }

    /// Every answered request so far, in order.
    pub fn answers(&self) -> Vec<Answer> {
        lock(&self.shared.answers).clone()
    }

    /// Answers given for one token, in order: shows retries.
    pub fn answers_for(&self, token_hex: &str) -> Vec<Answer> {
        let token = token_hex.to_ascii_lowercase();
        lock(&self.shared.answers)
            .iter()
            .filter(|a| a.token_hex.as_deref() == Some(token.as_str()))
            .cloned()
            .collect()
    }

    /// Waits until at least `n` pushes were accepted, then returns them all.
    pub async fn wait_for_pushes(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<RecordedPush>, SimError> {
        let mut rx = self.shared.accepted.subscribe();
        let reached = async move {
            loop {
                if *rx.borrow_and_update() >= n {
                    return true;
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        };
        match tokio::time::timeout(timeout, reached).await {
            Ok(true) => Ok(self.pushes()),
            _ => Err(SimError::WaitTimedOut {
                wanted: n,
                got: self.push_count(),
            }),
        }
    }

    /// TLS connections that completed the handshake.
    pub fn connections_accepted(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// TLS handshakes that failed (refused certificates among them).
    pub fn handshake_failures(&self) -> u64 {
        self.shared.handshake_failures.load(Ordering::Relaxed)
    }

    /// The most requests the stand-in was handling at one moment: shows
    /// that a client multiplexes pushes rather than sending them in turn.
    pub fn peak_in_flight(&self) -> u64 {
        self.shared.peak_in_flight.load(Ordering::Relaxed)
    }

    /// Stops accepting, sends GOAWAY on every connection, lets requests in
    /// flight finish (for up to two seconds) and returns.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.accept_task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ApnsStandIn {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    ctx: SslContext,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let for_connections = shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    let _ = tcp.set_nodelay(true);
                    connections.spawn(serve_connection(
                        tcp,
                        ctx.clone(),
                        Arc::clone(&shared),
                        for_connections.clone(),
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "apns stand-in accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Reap finished connection tasks so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(Duration::from_secs(2), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
}

async fn serve_connection(
    tcp: TcpStream,
    ctx: SslContext,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let tls = match handshake(tcp, &ctx).await {
        Ok(tls) => tls,
        Err(HandshakeFailed::Other(why)) => {
            shared.handshake_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%why, "apns stand-in dropped a tls handshake");
            return;
        }
        Err(HandshakeFailed::Refused(why, mut tls)) => {
            shared.handshake_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%why, "apns stand-in refused a tls handshake");
            linger(tls.get_mut()).await;
            return;
        }
    };
    let peer = evaluate_peer(tls.ssl(), &shared);
    let id = shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
    let conn = Arc::new(Connection {
        id,
        peer,
        requests: AtomicU64::new(0),
        goaway: Notify::new(),
    });
    let service = {
        let shared = Arc::clone(&shared);
        let conn = Arc::clone(&conn);
        service_fn(move |req| {
            let shared = Arc::clone(&shared);
            let conn = Arc::clone(&conn);
            async move { Ok::<_, Infallible>(handle(&shared, &conn, req).await) }
        })
    };
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder.max_concurrent_streams(shared.config.max_concurrent_streams);
    let served = builder.serve_connection(TokioIo::new(tls), service);
    let mut served = std::pin::pin!(served);
    let mut draining = false;
    loop {
        tokio::select! {
            result = served.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(connection = id, error = %e, "apns stand-in connection ended");
                }
                break;
            }
            _ = conn.goaway.notified(), if !draining => {
                tracing::debug!(connection = id, "apns stand-in sends goaway");
                served.as_mut().graceful_shutdown();
                draining = true;
            }
            _ = stopped(&mut shutdown), if !draining => {
                served.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

/// After refusing a handshake, lets the client read the TLS alert: closing
/// a socket with unread input makes the kernel send a TCP reset, which can
/// overtake the alert, and with TLS 1.3 the client has already sent its
/// first HTTP/2 frames by then. So: stop writing, drain input until the
/// client closes (it does once it reads the alert), for at most a second.
async fn linger(tcp: &mut TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Ok(n) = tcp.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Resolves once shutdown is signalled (or the handle is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // `wait_for` would hand back a lock guard, which is not Send.
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

enum HandshakeFailed {
    /// Failed before or without a TLS alert.
    Other(String),
    /// OpenSSL refused the handshake and sent an alert.
    Refused(String, SslStream<TcpStream>),
}

async fn handshake(
    tcp: TcpStream,
    ctx: &SslContext,
) -> Result<SslStream<TcpStream>, HandshakeFailed> {
    let other = |e: ErrorStack| HandshakeFailed::Other(e.to_string());
    let ssl = Ssl::new(ctx).map_err(other)?;
    let mut tls = SslStream::new(ssl, tcp).map_err(other)?;
    match tokio::time::timeout(Duration::from_secs(10), Pin::new(&mut tls).accept()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(HandshakeFailed::Refused(e.to_string(), tls)),
        Err(_) => return Err(HandshakeFailed::Other("handshake timed out".to_string())),
    }
    // APNs speaks HTTP/2 only. A client offering other protocols was
    // already refused by the ALPN callback; one offering none is refused
    // here.
    if tls.ssl().selected_alpn_protocol() != Some(b"h2".as_slice()) {
        return Err(HandshakeFailed::Other(
            "client did not negotiate h2 via alpn".to_string(),
        ));
    }
    Ok(tls)
}

fn evaluate_peer(ssl: &SslRef, shared: &Shared) -> Peer {
    let Some(cert) = ssl.peer_certificate() else {
        return Peer::Refused {
            reason: "MissingProviderToken",
        };
    };
    if shared.config.certificate_check == CertificateCheck::Http403 {
        // The handshake let anything through; verify now, the same way
        // OpenSSL would have (chain to the CA, validity period).
        let trusted = verify_chain(&shared.ca_store, &cert, ssl).unwrap_or(false);
        if !trusted {
            return Peer::Refused {
                reason: "BadCertificate",
            };
        }
    }
    match topic_of(&cert) {
        Some(topic) => Peer::Trusted { topic },
        None => Peer::Refused {
            reason: "BadCertificate",
        },
    }
}

fn verify_chain(store: &X509Store, cert: &X509Ref, ssl: &SslRef) -> Result<bool, ErrorStack> {
    let mut chain = Stack::new()?;
    if let Some(sent) = ssl.peer_cert_chain() {
        for c in sent {
            chain.push(c.to_owned())?;
        }
    }
    let mut ctx = X509StoreContext::new()?;
    ctx.init(store, cert, &chain, |c| c.verify_cert())
}

/// A refused request: status, Apple's reason string, and for 410 the
/// timestamp (milliseconds since the epoch).
struct Refusal {
    status: StatusCode,
    reason: &'static str,
    timestamp_ms: Option<u64>,
}

fn refuse(status: StatusCode, reason: &'static str) -> Refusal {
    Refusal {
        status,
        reason,
        timestamp_ms: None,
    }
}

enum BodyRead {
    Complete(Bytes),
    /// Longer than [`MAX_READ_BYTES`].
    TooLarge,
    /// The stream broke off.
    Broken,
}

struct Valid {
    token_hex: String,
    topic: String,
    push_magic: String,
    apns_id: Option<String>,
}

const APNS_HEADERS: [&str; 6] = [
    "apns-topic",
    "apns-push-type",
    "apns-priority",
    "apns-expiration",
    "apns-id",
    "apns-collapse-id",
];

async fn handle(
    shared: &Shared,
    conn: &Connection,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    // Decrements on drop, so a stream the client resets mid-request (which
    // drops this future) is not counted forever.
    struct InFlight<'a>(&'a AtomicU64);
    impl Drop for InFlight<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let now_in_flight = shared.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    let _in_flight = InFlight(&shared.in_flight);
    shared
        .peak_in_flight
        .fetch_max(now_in_flight, Ordering::Relaxed);
    answer(shared, conn, req).await
}

async fn answer(
    shared: &Shared,
    conn: &Connection,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let n = conn.requests.fetch_add(1, Ordering::Relaxed) + 1;
    if shared.config.goaway_after.is_some_and(|limit| n >= limit) {
        conn.goaway.notify_one();
    }
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let token_hex = path
        .strip_prefix("/3/device/")
        .filter(|t| !t.is_empty())
        .map(str::to_ascii_lowercase);
    let request_apns_id = parts
        .headers
        .get("apns-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_uuid(v))
        .map(str::to_ascii_lowercase);

    // Read the whole body before answering, even for requests refused on
    // their headers: answering first makes hyper reset the stream, which
    // clients such as curl report as an HTTP/2 stream error instead of
    // showing the answer.
    let body = match Limited::new(body, MAX_READ_BYTES).collect().await {
        Ok(collected) => BodyRead::Complete(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => BodyRead::TooLarge,
        Err(_) => BodyRead::Broken,
    };
    let result = validate(shared, conn, &parts.method, &path, &parts.headers, body);
    let latency = shared.latency_ms.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let apns_id = request_apns_id.unwrap_or_else(new_uuid);
    let (status, reason, body_json) = match result {
        Ok((valid, body)) => {
            let push = RecordedPush {
                token_hex: valid.token_hex,
                topic: valid.topic,
                push_magic: valid.push_magic,
                apns_id: valid.apns_id.unwrap_or_else(|| apns_id.clone()),
                received_at: SystemTime::now(),
                method: parts.method.clone(),
                path: path.clone(),
                headers: parts.headers.clone(),
                body,
                connection: conn.id,
            };
            let token = push.token_hex.clone();
            lock(&shared.pushes).push(push);
            shared.accepted.send_modify(|count| *count += 1);
            let _ = shared.delivered.send(token);
            (StatusCode::OK, None, None)
        }
        Err(refusal) => {
            let mut json = serde_json::json!({ "reason": refusal.reason });
            if let Some(ts) = refusal.timestamp_ms {
                json["timestamp"] = serde_json::Value::from(ts);
            }
            (refusal.status, Some(refusal.reason), Some(json.to_string()))
        }
    };
    lock(&shared.answers).push(Answer {
        token_hex,
        status: status.as_u16(),
        reason: reason.map(str::to_string),
        connection: conn.id,
    });
    let mut response = Response::new(Full::new(body_json.map(Bytes::from).unwrap_or_default()));
    *response.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&apns_id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("apns-id"), v);
    }
    if reason.is_some() {
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    response
}

/// Checks one request the way APNs documents, in this order: certificate,
/// method, path and token, duplicate headers, topic, push type, priority,
/// expiration, apns-id, collapse id, body; then the token's script.
fn validate(
    shared: &Shared,
    conn: &Connection,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: BodyRead,
) -> Result<(Valid, Bytes), Refusal> {
    let cert_topic = match &conn.peer {
        Peer::Trusted { topic } => topic.as_str(),
        Peer::Refused { reason } => return Err(refuse(StatusCode::FORBIDDEN, reason)),
    };
    if method != Method::POST {
        return Err(refuse(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"));
    }
    let Some(token) = path.strip_prefix("/3/device/") else {
        return Err(refuse(StatusCode::NOT_FOUND, "BadPath"));
    };
    if token.is_empty() {
        return Err(refuse(StatusCode::BAD_REQUEST, "MissingDeviceToken"));
    }
    if token.contains('/') {
        return Err(refuse(StatusCode::NOT_FOUND, "BadPath"));
    }
    let token_ok = token.len().is_multiple_of(2)
        && (MIN_TOKEN_HEX_DIGITS..=MAX_TOKEN_HEX_DIGITS).contains(&token.len())
        && token.bytes().all(|b| b.is_ascii_hexdigit());
    if !token_ok {
        return Err(refuse(StatusCode::BAD_REQUEST, "BadDeviceToken"));
    }
    if APNS_HEADERS
        .iter()
        .any(|h| headers.get_all(*h).iter().count() > 1)
    {
        return Err(refuse(StatusCode::BAD_REQUEST, "DuplicateHeaders"));
    }
    // Apple: with a single-topic certificate apns-topic may be omitted and
    // the certificate's topic is used; if present it must be that topic.
    let topic = match headers.get("apns-topic") {
        None => cert_topic,
        Some(v) => match v.to_str() {
            Ok(t) if !t.is_empty() => t,
            _ => return Err(refuse(StatusCode::BAD_REQUEST, "BadTopic")),
        },
    };
    if topic != cert_topic {
        return Err(refuse(StatusCode::BAD_REQUEST, "TopicDisallowed"));
    }
    if headers.get("apns-push-type").map(HeaderValue::as_bytes) != Some(b"mdm".as_slice()) {
        return Err(refuse(StatusCode::BAD_REQUEST, "InvalidPushType"));
    }
    if let Some(p) = headers.get("apns-priority")
        && !matches!(p.as_bytes(), b"10" | b"5" | b"1")
    {
        return Err(refuse(StatusCode::BAD_REQUEST, "BadPriority"));
    }
    if let Some(e) = headers.get("apns-expiration")
        && e.to_str()
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .is_none()
    {
        return Err(refuse(StatusCode::BAD_REQUEST, "BadExpirationDate"));
    }
    let apns_id = match headers.get("apns-id") {
        None => None,
        Some(v) => match v.to_str() {
            Ok(id) if is_uuid(id) => Some(id.to_ascii_lowercase()),
            _ => return Err(refuse(StatusCode::BAD_REQUEST, "BadMessageId")),
        },
    };
    if headers
        .get("apns-collapse-id")
        .is_some_and(|c| c.len() > 64)
    {
        return Err(refuse(StatusCode::BAD_REQUEST, "BadCollapseId"));
    }
    let body = match body {
        BodyRead::Complete(b) if b.len() <= MAX_PAYLOAD_BYTES => b,
        BodyRead::Complete(_) | BodyRead::TooLarge => {
            return Err(refuse(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge"));
        }
        BodyRead::Broken => return Err(refuse(StatusCode::BAD_REQUEST, "BadPayload")),
    };
    if body.is_empty() {
        return Err(refuse(StatusCode::BAD_REQUEST, "PayloadEmpty"));
    }
    let push_magic = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(map)) => match map.get("mdm") {
            Some(serde_json::Value::String(m)) => m.clone(),
            _ => return Err(refuse(StatusCode::BAD_REQUEST, "BadPayload")),
        },
        _ => return Err(refuse(StatusCode::BAD_REQUEST, "BadPayload")),
    };
    let token_hex = token.to_ascii_lowercase();
    apply_script(shared, &token_hex)?;
    Ok((
        Valid {
            token_hex,
            topic: topic.to_string(),
            push_magic,
            apns_id,
        },
        body,
    ))
}

fn apply_script(shared: &Shared, token_hex: &str) -> Result<(), Refusal> {
    let mut scripts = lock(&shared.scripts);
    let Some(state) = scripts.get_mut(token_hex) else {
        return Ok(());
    };
    match state.script {
        Script::Unregistered => Err(Refusal {
            status: StatusCode::GONE,
            reason: "Unregistered",
            timestamp_ms: Some(state.scripted_at_ms),
        }),
        Script::BadDeviceToken => Err(refuse(StatusCode::BAD_REQUEST, "BadDeviceToken")),
        _ if state.remaining == 0 => Ok(()),
        Script::TooManyRequests { .. } => {
            state.remaining -= 1;
            Err(refuse(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests"))
        }
        Script::InternalServerError { .. } => {
            state.remaining -= 1;
            Err(refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
            ))
        }
        Script::ServiceUnavailable { .. } => {
            state.remaining -= 1;
            Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
            ))
        }
    }
}

fn tls_context(
    client_ca: &X509,
    server_ca: &X509,
    server_cert: &X509,
    server_key: &PKey<Private>,
    config: &StandInConfig,
) -> Result<SslContext, SimError> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .map_err(ossl("creating the tls acceptor"))?;
    b.set_certificate(server_cert)
        .map_err(ossl("setting the server certificate"))?;
    b.add_extra_chain_cert(server_ca.clone())
        .map_err(ossl("adding the server ca to the chain"))?;
    b.set_private_key(server_key)
        .map_err(ossl("setting the server key"))?;
    b.check_private_key()
        .map_err(ossl("checking the server key"))?;
    // HTTP/2 only: a client that does not offer h2 gets a fatal
    // no_application_protocol alert.
    b.set_alpn_select_callback(|_, client_protos| {
        select_next_proto(b"\x02h2", client_protos).ok_or(AlpnError::ALERT_FATAL)
    });
    b.cert_store_mut()
        .add_cert(client_ca.clone())
        .map_err(ossl("trusting the client ca"))?;
    b.add_client_ca(client_ca)
        .map_err(ossl("advertising the client ca"))?;
    match config.certificate_check {
        CertificateCheck::Handshake => {
            b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        }
        CertificateCheck::Http403 => {
            b.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
        }
    }
    Ok(b.build().into_context())
}

/// A CA and a server certificate for 127.0.0.1 / localhost (EC P-256: fast
/// to generate, and the server's key type does not matter to clients).
fn server_pki() -> Result<(X509, X509, PKey<Private>), SimError> {
    let ca_key = ec_key()?;
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let ca_name = name(&[(Nid::COMMONNAME, "mdmctl APNs stand-in server CA")])?;
    let ca = issue(CertSpec {
        subject: &ca_name,
        public_key: &ca_key,
        issuer: None,
        signer: &ca_key,
        not_before: now - day,
        not_after: now + 30 * day,
        kind: CertKind::Ca,
    })?;
    let key = ec_key()?;
    let subject = name(&[(Nid::COMMONNAME, "api.push.apple.com (stand-in)")])?;
    let cert = issue(CertSpec {
        subject: &subject,
        public_key: &key,
        issuer: Some(&ca),
        signer: &ca_key,
        not_before: now - day,
        not_after: now + 30 * day,
        kind: CertKind::Server,
    })?;
    Ok((ca, cert, key))
}

fn ec_key() -> Result<PKey<Private>, SimError> {
    let group =
        EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(ossl("creating the ec group"))?;
    let ec = EcKey::generate(&group).map_err(ossl("generating an ec key"))?;
    PKey::from_ec_key(ec).map_err(ossl("wrapping an ec key"))
}

/// A stand-in for Apple's push-certificate CA, able to mint MDM push
/// certificates shaped like Apple's (`UID=com.apple.mgmt.External.<uuid>`,
/// `CN=APSP:<uuid>`, `C=US`, RSA 2048, TLS client authentication).
pub struct TestPushCa {
    certificate: X509,
    key: PKey<Private>,
}

/// Options for [`TestPushCa::issue_push_certificate`].
#[derive(Debug, Clone)]
pub struct PushCertOptions {
    /// The UUID of the topic; `None` picks a random one.
    pub uuid: Option<String>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity (Apple issues push certificates for a year).
    pub not_after: SystemTime,
}

impl Default for PushCertOptions {
    fn default() -> Self {
        let now = SystemTime::now();
        Self {
            uuid: None,
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(365 * 86_400),
        }
    }
}

impl PushCertOptions {
    /// A certificate that expired a day ago.
    pub fn expired() -> Self {
        let now = SystemTime::now();
        Self {
            uuid: None,
            not_before: now - Duration::from_secs(366 * 86_400),
            not_after: now - Duration::from_secs(86_400),
        }
    }
}

/// A minted push certificate with its key.
#[derive(Clone)]
pub struct MintedPushCert {
    /// The certificate.
    pub certificate: X509,
    /// Its RSA private key.
    pub private_key: PKey<Private>,
    /// `com.apple.mgmt.External.<uuid>`.
    pub topic: String,
    /// The UUID in the topic and CN.
    pub uuid: String,
}

impl MintedPushCert {
    /// The certificate as PEM.
    pub fn cert_pem(&self) -> Result<Vec<u8>, SimError> {
        self.certificate
            .to_pem()
            .map_err(ossl("encoding the push certificate"))
    }

    /// The key as PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`), the form
    /// `openssl pkcs12 -nodes` and older tools write.
    pub fn key_pem_pkcs1(&self) -> Result<Vec<u8>, SimError> {
        let rsa = self
            .private_key
            .rsa()
            .map_err(ossl("reading the rsa key"))?;
        rsa.private_key_to_pem()
            .map_err(ossl("encoding the key as pkcs#1"))
    }

    /// The key as PKCS#8 PEM (`BEGIN PRIVATE KEY`).
    pub fn key_pem_pkcs8(&self) -> Result<Vec<u8>, SimError> {
        self.private_key
            .private_key_to_pem_pkcs8()
            .map_err(ossl("encoding the key as pkcs#8"))
    }

    /// The push identity for [`crate::push::ApnsClient`].
    pub fn identity(&self) -> Result<PushIdentity, SimError> {
        Ok(PushIdentity::from_parts(
            self.certificate.clone(),
            Vec::new(),
            self.private_key.clone(),
        )?)
    }
}

impl TestPushCa {
    /// Generates a CA named like Apple's push CA (RSA 2048, ten years).
    pub fn generate() -> Result<Self, SimError> {
        Self::generate_named("Test Apple Application Integration 2 Certification Authority")
    }

    /// Generates a CA with the given common name (e.g. a "foreign" CA whose
    /// certificates the stand-in must refuse).
    pub fn generate_named(common_name: &str) -> Result<Self, SimError> {
        let key = rsa_key()?;
        let now = SystemTime::now();
        let subject = name(&[
            (Nid::COMMONNAME, common_name),
            (Nid::ORGANIZATIONALUNITNAME, "Apple Certification Authority"),
            (Nid::ORGANIZATIONNAME, "Apple Inc. (test)"),
            (Nid::COUNTRYNAME, "US"),
        ])?;
        let certificate = issue(CertSpec {
            subject: &subject,
            public_key: &key,
            issuer: None,
            signer: &key,
            not_before: now - Duration::from_secs(86_400),
            not_after: now + Duration::from_secs(3650 * 86_400),
            kind: CertKind::Ca,
        })?;
        Ok(Self { certificate, key })
    }

    /// The CA certificate (what [`ApnsStandIn::start`] takes).
    pub fn certificate(&self) -> &X509 {
        &self.certificate
    }

    /// Mints an MDM push certificate.
    pub fn issue_push_certificate(
        &self,
        options: &PushCertOptions,
    ) -> Result<MintedPushCert, SimError> {
        let uuid = options
            .uuid
            .clone()
            .unwrap_or_else(|| new_uuid().to_uppercase());
        let topic = format!("com.apple.mgmt.External.{uuid}");
        let cn = format!("APSP:{uuid}");
        let key = rsa_key()?;
        let subject = name(&[
            (Nid::USERID, topic.as_str()),
            (Nid::COMMONNAME, cn.as_str()),
            (Nid::COUNTRYNAME, "US"),
        ])?;
        let certificate = issue(CertSpec {
            subject: &subject,
            public_key: &key,
            issuer: Some(&self.certificate),
            signer: &self.key,
            not_before: options.not_before,
            not_after: options.not_after,
            kind: CertKind::Client,
        })?;
        Ok(MintedPushCert {
            certificate,
            private_key: key,
            topic,
            uuid,
        })
    }
}

fn rsa_key() -> Result<PKey<Private>, SimError> {
    let rsa = Rsa::generate(2048).map_err(ossl("generating an rsa key"))?;
    PKey::from_rsa(rsa).map_err(ossl("wrapping an rsa key"))
}

fn name(entries: &[(Nid, &str)]) -> Result<X509Name, SimError> {
    let mut b = X509NameBuilder::new().map_err(ossl("creating a name"))?;
    for (nid, value) in entries {
        b.append_entry_by_nid(*nid, value)
            .map_err(ossl("building a name"))?;
    }
    Ok(b.build())
}

enum CertKind {
    Ca,
    Server,
    Client,
}

struct CertSpec<'a> {
    subject: &'a X509Name,
    public_key: &'a PKeyRef<Private>,
    /// `None`: self-signed.
    issuer: Option<&'a X509>,
    signer: &'a PKeyRef<Private>,
    not_before: SystemTime,
    not_after: SystemTime,
    kind: CertKind,
}

fn issue(spec: CertSpec<'_>) -> Result<X509, SimError> {
    let e = ossl("issuing a certificate");
    let mut b = X509::builder().map_err(ossl("creating a certificate"))?;
    let build = || -> Result<X509, ErrorStack> {
        b.set_version(2)?;
        let mut serial = BigNum::new()?;
        serial.rand(63, MsbOption::MAYBE_ZERO, false)?;
        let serial = serial.to_asn1_integer()?;
        b.set_serial_number(&serial)?;
        b.set_subject_name(spec.subject)?;
        b.set_issuer_name(match spec.issuer {
            Some(i) => i.subject_name(),
            None => spec.subject,
        })?;
        b.set_pubkey(spec.public_key)?;
        let not_before = asn1_time(spec.not_before)?;
        let not_after = asn1_time(spec.not_after)?;
        b.set_not_before(&not_before)?;
        b.set_not_after(&not_after)?;
        let ski = {
            let ctx = b.x509v3_context(spec.issuer.map(|i| i.as_ref()), None);
            SubjectKeyIdentifier::new().build(&ctx)?
        };
        b.append_extension(ski)?;
        match spec.kind {
            CertKind::Ca => {
                b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
                b.append_extension(
                    KeyUsage::new()
                        .critical()
                        .key_cert_sign()
                        .crl_sign()
                        .build()?,
                )?;
            }
            CertKind::Server => {
                b.append_extension(BasicConstraints::new().critical().build()?)?;
                b.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
                b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
                let san = {
                    let ctx = b.x509v3_context(spec.issuer.map(|i| i.as_ref()), None);
                    SubjectAlternativeName::new()
                        .ip("127.0.0.1")
                        .dns("localhost")
                        .build(&ctx)?
                };
                b.append_extension(san)?;
            }
            CertKind::Client => {
                b.append_extension(BasicConstraints::new().critical().build()?)?;
                b.append_extension(
                    KeyUsage::new()
                        .critical()
                        .digital_signature()
                        .key_encipherment()
                        .build()?,
                )?;
                b.append_extension(ExtendedKeyUsage::new().client_auth().build()?)?;
            }
        }
        b.sign(spec.signer, MessageDigest::sha256())?;
        Ok(b.build())
    };
    build().map_err(e)
}

fn asn1_time(t: SystemTime) -> Result<Asn1Time, ErrorStack> {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    };
    Asn1Time::from_unix(secs)
}

/// A random (version 4) UUID, lowercase, as APNs answers in `apns-id`.
pub fn new_uuid() -> String {
    let mut b = [0u8; 16];
    if openssl::rand::rand_bytes(&mut b).is_err() {
        // The RNG failing is not worth failing a simulated push over: fall
        // back to a counter-based id that is still unique in this process.
        static NEXT: AtomicU64 = AtomicU64::new(1);
        b[8..].copy_from_slice(&NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        b[..8].copy_from_slice(&now_ms().to_be_bytes());
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn latency_ms(latency: Option<Duration>) -> u64 {
    latency.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Locks a mutex, recovering from poisoning: a panicked test thread must
/// not take the stand-in's records down with it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_v4_and_recognised() {
        let u = new_uuid();
        assert!(is_uuid(&u), "{u}");
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, new_uuid());
        assert!(!is_uuid("not-a-uuid"));
    }

    #[test]
    fn minted_push_certificate_looks_like_apples() {
        let ca = TestPushCa::generate().expect("ca");
        let minted = ca
            .issue_push_certificate(&PushCertOptions {
                uuid: Some("6B2C1A1E-0000-4000-8000-000000000001".to_string()),
                ..PushCertOptions::default()
            })
            .expect("push cert");
        assert_eq!(
            topic_of(&minted.certificate).as_deref(),
            Some("com.apple.mgmt.External.6B2C1A1E-0000-4000-8000-000000000001")
        );
        let cn = minted
            .certificate
            .subject_name()
            .entries_by_nid(Nid::COMMONNAME)
            .next()
            .and_then(|e| e.data().to_string().ok());
        assert_eq!(
            cn.as_deref(),
            Some("APSP:6B2C1A1E-0000-4000-8000-000000000001")
        );
        let ca_key = ca.certificate().public_key().expect("ca key");
        assert!(minted.certificate.verify(&ca_key).expect("verify"));
        let id = minted.identity().expect("identity");
        assert_eq!(id.topic(), minted.topic);
    }
}
