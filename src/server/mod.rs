//! `mdmctl serve`: the MDM server that answers at the old server's URLs after the DNS cutover.
//!
//! Owns: the HTTP surface ([`app`]: check-in and command channel on `/mdm` and the old servers'
//! paths, SCEP, enrollment (by enrollment secret, and automated from ABM), declarative management, the admin API, `/healthz`), device
//! authentication (which certificate, which CA, which enrollment, and which certificate may bind
//! to which device), who may enroll (enrollment secrets, per-client rate limits), request bounds
//! (sender and size checked before a body is read), and the listener ([`serve`]: plain HTTP or
//! TLS asking for a client certificate, graceful shutdown). docs/security.md is the threat model. Handlers run their
//! store and crypto work on blocking threads; devices only ever get a status, details go to
//! the log. Must not import the CLI.

mod api;
mod checkin;
mod commands;
mod ddm;
mod dep;
mod device;
mod enroll;
pub mod jobs;
mod limit;
mod listen;
mod page;
mod scep;
mod trust;
pub mod upstream;

pub use listen::{PeerCert, serve, tls_acceptor};
pub use trust::Trust;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use zeroize::Zeroizing;

use crate::push::PushService;
use crate::store::Store;

pub use crate::apple::paths::{DEFAULT_MDM_PATHS, DEP_ENROLL_PATHS, SCEP_PATHS};
/// Largest SCEP request body: a PKCSReq with a 4096-bit key is under 8 KB.
pub const SCEP_MAX_BODY: usize = 64 * 1024;

/// How the server runs, beyond the store.
#[derive(Clone)]
pub struct ServeConfig {
    /// The public base URL devices use (`https://mdm.example.com`), no trailing slash.
    pub url: String,
    /// Paths answered as MDM check-in / command endpoints.
    pub mdm_paths: Vec<String>,
    /// Header a TLS-terminating proxy puts the client certificate in.
    pub client_cert_header: Option<String>,
    /// Let an imported enrollment with no recorded identity bind its first valid certificate.
    pub allow_retro_association: bool,
    /// A fixed SCEP challenge; without one, `/enroll` mints one-time challenges.
    pub scep_challenge: Option<Zeroizing<String>>,
    /// `/enroll` without an enrollment secret, and new devices with any certificate a store CA
    /// vouches for (`--open-enrollment`).
    pub open_enrollment: bool,
    /// How long a one-time challenge minted for an enrollment stays usable.
    pub challenge_ttl: Duration,
    /// Requests to `/enroll` and `/scep` per client address per minute.
    pub enroll_rate_per_minute: u32,
    /// The header a proxy puts the client's address in (`X-Forwarded-For`: its last entry);
    /// without it the peer address is the client's.
    pub client_ip_header: Option<String>,
    pub scep_validity_days: u32,
    /// Certificates the enrollment profile asks devices to trust (a private server CA).
    pub enroll_anchors: Vec<X509>,
    /// Who signs the enrollment profile (the TLS certificate, typically); else the SCEP CA.
    pub profile_signer: Option<(X509, PKey<Private>)>,
    pub organization: String,
    /// Largest request body accepted on the MDM endpoints.
    pub max_body: usize,
    /// How long a client may take to send a request's body once its headers are in.
    pub body_timeout: Duration,
    /// Profile delivery: how often to reconcile, retry backoff.
    pub reconcile: crate::reconcile::Policy,
    /// When the TLS certificate `serve` presents expires (for `/metrics`).
    pub tls_not_after: Option<crate::timestamp::Timestamp>,
    /// How long a background job's lease lasts unrenewed: when an instance dies, another takes
    /// its jobs over within this time (`--lease-seconds`).
    pub lease: Duration,
    /// Staged cutover: the old server, which answers devices outside the cutover set
    /// (`--upstream`).
    pub upstream: Option<Arc<upstream::Upstream>>,
    /// During a staged cutover, answer SCEP, `/enroll` and devices the store does not know
    /// here rather than forwarding them (`--serve-enrollment`).
    pub serve_enrollment: bool,
    /// Staged cutover: where the check-ins of devices served here are sent back, so the old
    /// server can take them back (`--upstream-migration-url`).
    pub mirror: Option<Arc<upstream::Mirror>>,
    /// Apple Business Manager's service (`MDMCTL_ABM_URL`) and how often the `abm-sync` job
    /// runs (`--abm-sync-interval`).
    pub abm_url: String,
    pub abm_sync_interval: Duration,
    /// Who may issue the device certificates that sign MachineInfo at automated enrollment:
    /// Apple's iPhone Device CA (`--machine-info-ca` adds a stand-in's).
    pub machine_info_cas: Vec<X509>,
}

impl ServeConfig {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_string(),
            mdm_paths: DEFAULT_MDM_PATHS.iter().map(|p| p.to_string()).collect(),
            client_cert_header: None,
            allow_retro_association: false,
            scep_challenge: None,
            open_enrollment: false,
            challenge_ttl: Duration::from_secs(3600),
            enroll_rate_per_minute: 120,
            client_ip_header: None,
            scep_validity_days: 365,
            enroll_anchors: Vec::new(),
            profile_signer: None,
            organization: "mdmctl".into(),
            max_body: 8 * 1024 * 1024,
            body_timeout: Duration::from_secs(20),
            reconcile: crate::reconcile::Policy::default(),
            lease: jobs::DEFAULT_LEASE,
            tls_not_after: None,
            upstream: None,
            serve_enrollment: false,
            mirror: None,
            abm_url: crate::abm::client::DEFAULT_URL.to_string(),
            abm_sync_interval: Duration::from_secs(3600),
            machine_info_cas: X509::from_pem(crate::pki::APPLE_IPHONE_DEVICE_CA_PEM.as_bytes())
                .into_iter()
                .collect(),
        }
    }
}

/// Everything a handler needs.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: ServeConfig,
    pub trust: Trust,
    pub pushes: Arc<PushService>,
    /// This process among the instances sharing the store, and the job leases it holds.
    pub instance: jobs::Instance,
    /// Requests to `/enroll` and `/scep` per client address.
    enroll_limit: limit::RateLimit,
    /// When this process last wrote each channel's `last_seen_at` (Unix seconds): Idle
    /// check-ins write it at most once a minute, so a quiet device costs no write.
    seen: Mutex<HashMap<String, i64>>,
    /// Answer an Idle that needs no write on the async worker, without the hand-off to the
    /// blocking pool: on SQLite, whose reads take microseconds (a PostgreSQL read waits on the
    /// network, so it keeps the hand-off).
    inline_idle: bool,
}

const TOUCH_EVERY_SECS: i64 = 60;

impl AppState {
    pub fn new(store: Arc<dyn Store>, config: ServeConfig, pushes: Arc<PushService>) -> Arc<Self> {
        Arc::new(Self {
            instance: jobs::Instance::new(&config.url, config.lease),
            enroll_limit: limit::RateLimit::new(config.enroll_rate_per_minute),
            config,
            trust: Trust::new(),
            inline_idle: matches!(store.location(), crate::store::Location::Sqlite(_)),
            store,
            pushes,
            seen: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `last_seen_at` is due for this channel, without noting anything.
    fn touch_pending(&self, channel: &str) -> bool {
        let now = crate::timestamp::Timestamp::now().0;
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        !matches!(seen.get(channel), Some(t) if now - t < TOUCH_EVERY_SECS)
    }

    /// Whether `last_seen_at` is due for this channel (and note that it will be written).
    fn touch_due(&self, channel: &str) -> bool {
        let now = crate::timestamp::Timestamp::now().0;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() > 1_000_000 {
            seen.clear();
        }
        match seen.get(channel) {
            Some(t) if now - t < TOUCH_EVERY_SECS => false,
            _ => {
                seen.insert(channel.to_string(), now);
                true
            }
        }
    }

    /// The client's address: from the proxy's header when one is configured, else the peer.
    pub(crate) fn client_ip(
        &self,
        headers: &axum::http::HeaderMap,
        peer: Option<std::net::SocketAddr>,
    ) -> Option<std::net::IpAddr> {
        match &self.config.client_ip_header {
            Some(h) => headers
                .get(h.as_str())
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse().ok()),
            None => peer.map(|p| p.ip()),
        }
    }

    /// The 429 to answer when `client` may not call `/enroll` or `/scep` now.
    pub(crate) fn over_enroll_rate(&self, client: Option<std::net::IpAddr>) -> Option<Response> {
        self.enroll_limit.check(client).err().map(|wait| {
            tracing::warn!(client = ?client, "rate limit: too many enrollment or SCEP requests");
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, wait.to_string())],
                "too many requests; try again later\n",
            )
                .into_response()
        })
    }

    /// Forget the throttle for a channel (its next request writes last-seen).
    fn forget_touch(&self, channel: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(channel);
    }
}

/// What a handler answers a device with.
pub(crate) enum Reply {
    Empty,
    Plist(Vec<u8>),
    Json(Vec<u8>),
    /// A refusal: the status goes to the device, the reason only to the log.
    Refuse(StatusCode, String),
    /// The store cannot be reached or is overloaded: 503 with `Retry-After` (seconds), so the
    /// device comes back later; nothing about its enrollment changed.
    Unavailable {
        retry_after: u32,
        reason: String,
    },
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        match self {
            Reply::Empty => StatusCode::OK.into_response(),
            Reply::Plist(b) => ([(header::CONTENT_TYPE, "application/xml")], b).into_response(),
            Reply::Json(b) => ([(header::CONTENT_TYPE, "application/json")], b).into_response(),
            Reply::Refuse(status, reason) => {
                tracing::debug!(%status, %reason, "refused");
                // Never 401: it can make a device unenroll.
                let status = if status == StatusCode::UNAUTHORIZED {
                    StatusCode::FORBIDDEN
                } else {
                    status
                };
                (status, status.canonical_reason().unwrap_or("refused")).into_response()
            }
            Reply::Unavailable {
                retry_after,
                reason,
            } => {
                tracing::debug!(%reason, retry_after, "unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, retry_after.to_string())],
                    "Service Unavailable",
                )
                    .into_response()
            }
        }
    }
}

/// The HTTP application. Inside a Tokio runtime, it also starts the background jobs (the
/// reconciler among them, see [`jobs`]), which run as long as the application does.
pub fn app(state: Arc<AppState>) -> Router {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        jobs::start(&state, &runtime);
    }
    let mut router = Router::new();
    for path in &state.config.mdm_paths {
        router = router.route(path, any(mdm_endpoint));
    }
    let forwarded = state.config.upstream.is_some() && !state.config.serve_enrollment;
    for path in SCEP_PATHS {
        if forwarded {
            router = router.route(path, any(upstream::forward_endpoint));
            continue;
        }
        // Anyone may send SCEP requests (that is how a device gets an identity), so they get a
        // small body limit: a PKCSReq is a few kilobytes.
        router = router.route(
            path,
            get(scep::endpoint)
                .post(scep::endpoint)
                .layer(DefaultBodyLimit::max(SCEP_MAX_BODY)),
        );
    }
    router = if forwarded {
        router.route("/enroll", any(upstream::forward_endpoint))
    } else {
        router.route("/enroll", get(enroll::profile))
    };
    for path in DEP_ENROLL_PATHS {
        router = if forwarded {
            router.route(path, any(upstream::forward_endpoint))
        } else {
            router.route(
                path,
                get(dep::endpoint)
                    .post(dep::endpoint)
                    .layer(DefaultBodyLimit::max(crate::apple::machine_info::MAX_BYTES)),
            )
        };
    }
    router
        .route("/", get(enroll::landing))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/healthz", get(readyz))
        .route("/metrics", get(api::metrics))
        .route("/cutover", get(page::view))
        .route("/cutover/login", axum::routing::post(page::login))
        .route("/cutover/logout", axum::routing::post(page::logout))
        .nest("/api/v1", api::router())
        .layer(DefaultBodyLimit::max(state.config.max_body))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(60),
        ))
        // Requests are traced by method and path only: a query string can carry a secret
        // (`/enroll?token=`, a misplaced API token) and is never logged.
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |req: &axum::http::Request<axum::body::Body>| {
                    tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
                },
            ),
        )
        .with_state(state)
}

/// Read a request body into memory, at most `limit` bytes, within `timeout`: 413 past the
/// limit, 408 when the sender is too slow, 400 when the connection breaks.
pub(crate) async fn read_body(
    body: axum::body::Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, StatusCode> {
    use http_body_util::BodyExt as _;
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => {
            tracing::warn!("a request body arrived too slowly; dropped");
            Err(StatusCode::REQUEST_TIMEOUT)
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            tracing::warn!(limit, "refused a request body larger than the limit");
            Err(StatusCode::PAYLOAD_TOO_LARGE)
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "a request body could not be read");
            Err(StatusCode::BAD_REQUEST)
        }
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// `/livez`: the process answers (no store access: a database outage must not get every
/// instance restarted).
async fn livez() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

/// `/readyz` (and `/healthz`): the store answers a `SELECT 1`; 503 otherwise, so a load
/// balancer sends devices to an instance that can serve them.
async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    let store = st.store.clone();
    let ok = tokio::task::spawn_blocking(move || store.read(|tx| tx.ping()))
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
    if ok {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response()
    }
}

/// The Prometheus text exposition: this process's counters and the store's gauges (with
/// `mdmctl_store_up 0` and no gauges when the store does not answer).
pub(crate) async fn metrics_text(st: &Arc<AppState>) -> Response {
    let store = st.store.clone();
    let tls = st.config.tls_not_after;
    let snapshot =
        tokio::task::spawn_blocking(move || store.read(|tx| crate::metrics::snapshot(tx, tls)))
            .await;
    let snapshot = match snapshot {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: the store did not answer");
            crate::metrics::Snapshot::default()
        }
        Err(_) => crate::metrics::Snapshot::default(),
    };
    let text = crate::metrics::render(&snapshot, crate::timestamp::Timestamp::now());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// What `serve --metrics-listen ADDR` serves on its own address, without a token:
/// `/metrics`, `/livez`, `/readyz`. For a local or private address only.
pub fn metrics_app(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(st): State<Arc<AppState>>| async move { metrics_text(&st).await }),
        )
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// The request as the MDM handlers see it.
pub(crate) struct MdmRequest {
    pub checkin: bool,
    pub body: Bytes,
    pub signature: Option<String>,
    pub peer: Option<X509>,
    pub header_cert: Option<String>,
}

/// Route an MDM request: identify the caller, then hand it to the check-in or command handler.
/// (Routing lives here, above `device`, `checkin` and `commands`: those two use `device`'s
/// helpers, so `device` must not call them.)
/// `report` and `verified`: what the async fast path already parsed and verified (not done
/// again).
fn handle_device(
    st: &AppState,
    req: MdmRequest,
    report: Option<Box<crate::apple::command::Report>>,
    verified: Option<crate::pki::identity::Verified>,
) -> Reply {
    if let Some(v) = verified {
        return match &report {
            Some(r) if !req.checkin => commands::handle_report(st, &v, &req.body, r),
            _ => handle_verified(st, &v, &req),
        };
    }
    let credential = match device::credential(st, &req) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(reason = %e, "refused a request: no usable identity");
            crate::metrics::refused("no_identity");
            return Reply::Refuse(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let verified = match st.trust.check(st.store.as_ref(), credential) {
        Ok(v) => v,
        Err(e) => return device::refusal(e),
    };
    match &report {
        Some(r) if !req.checkin => commands::handle_report(st, &verified, &req.body, r),
        _ => handle_verified(st, &verified, &req),
    }
}

/// Hand a request whose identity is already verified to the check-in or command handler.
fn handle_verified(
    st: &AppState,
    verified: &crate::pki::identity::Verified,
    req: &MdmRequest,
) -> Reply {
    if req.checkin {
        checkin::handle(st, verified, &req.body)
    } else {
        commands::handle(st, verified, &req.body)
    }
}

/// A check-in or command report. Its size (`Content-Length`) and who sends it (the certificate
/// in `Mdm-Signature`, the TLS client certificate or the proxy's header, vouched for by a store
/// CA) are checked before a byte of the body is read; only then is the body read, into a
/// buffer bounded by `max_body`, within `body_timeout`.
async fn mdm_endpoint(
    State(st): State<Arc<AppState>>,
    peer: Option<axum::Extension<PeerCert>>,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let text = |v: Option<&HeaderValue>| v.and_then(|v| v.to_str().ok()).map(str::to_string);
    let content_type = text(headers.get(header::CONTENT_TYPE)).unwrap_or_default();
    let signature = text(headers.get("Mdm-Signature"));
    let peer = peer.map(|p| p.0.0);
    let header_cert = st
        .config
        .client_cert_header
        .as_deref()
        .and_then(|h| text(headers.get(h)));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > st.config.max_body as u64) {
        tracing::warn!(
            bytes = declared,
            "refused a request larger than the body limit"
        );
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    }
    let known = signature
        .as_deref()
        .is_some_and(|s| st.trust.knows_signer(s));
    if !known {
        let st2 = st.clone();
        let (sig, p, h) = (signature.clone(), peer.clone(), header_cert.clone());
        let vouched = tokio::task::spawn_blocking(move || {
            device::vouch(&st2, sig.as_deref(), p.as_ref(), h.as_deref())
        })
        .await;
        match vouched {
            Ok(Ok(())) => {}
            Ok(Err(refusal)) => return refusal.into_response(),
            Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    }
    let body = match read_body(body, st.config.max_body, st.config.body_timeout).await {
        Ok(b) => b,
        Err(status) => return status.into_response(),
    };
    let req = MdmRequest {
        // Check-ins and command reports may share a path (MicroMDM, NanoMDM): the
        // Content-Type tells them apart.
        checkin: content_type.starts_with("application/x-apple-aspen-mdm-checkin"),
        body,
        signature,
        peer,
        header_cert,
    };
    if let Some(up) = st.config.upstream.clone() {
        let (st2, up2) = (st.clone(), up.clone());
        let routed =
            tokio::task::spawn_blocking(move || (upstream::route(&st2, &up2, &req), req)).await;
        match routed {
            Ok((Ok(upstream::Route::Upstream), req)) => {
                return upstream::forward(&st, &up, &parts.method, &parts.uri, headers, req.body)
                    .await;
            }
            Ok((Ok(upstream::Route::Here(v)), r)) => {
                let st2 = st.clone();
                return match tokio::task::spawn_blocking(move || handle_verified(&st2, &v, &r))
                    .await
                {
                    Ok(reply) => reply.into_response(),
                    Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                };
            }
            Ok((Err(refused), _)) => return refused.into_response(),
            Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    }
    let (mut report, mut verified) = (None, None);
    if st.inline_idle && !req.checkin {
        match commands::quick_idle(&st, &req) {
            commands::Quick::Answered(reply) => return reply.into_response(),
            commands::Quick::Continue {
                report: r,
                verified: v,
            } => (report, verified) = (r, v),
        }
    }
    let st2 = st.clone();
    match tokio::task::spawn_blocking(move || handle_device(&st2, req, report, verified)).await {
        Ok(reply) => reply.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "check-in handler failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
