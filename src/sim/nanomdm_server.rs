//! A running NanoMDM stand-in, for the staged-cutover tests: what mdmctl forwards to the old
//! server and mirrors back to it must land as it would on a real NanoMDM (v0.9, read from
//! micromdm/nanomdm: `cmd/nanomdm/main.go`, `service/nanomdm`, `docs/operations-guide.md`).
//!
//! Modelled:
//! - `/mdm` (ServerURL, and check-ins too) and `/checkin`, `PUT`: the device identity comes from
//!   `Mdm-Signature` (the CMS must verify over the body) and must chain to the `-ca` certificate;
//!   `certauth`: an Authenticate associates the certificate with the enrollment, any other
//!   message must present the associated one (else 400, as NanoMDM's certauth refuses).
//!   Check-ins: Authenticate (stored, the enrollment not yet enabled), TokenUpdate (token, push
//!   magic, unlock token; enabled), SetBootstrapToken, CheckOut (disabled). Command channel:
//!   Idle and every report answered with the next queued command, or an empty 200.
//! - `PUT /migration` (`-migration`), API basic auth `nanomdm:<-api key>`: the bare check-in
//!   service, "no cert extraction, CA check or certauth"; 401 without the key.
//! - `PUT /v1/enqueue/<id>`: a raw command plist queued for the enrollment.
//!
//! Not modelled: the push API, the user channel's separate table, DDM, storage backends.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use openssl::x509::X509;

use crate::apple::checkin::{self, CheckinMessage};
use crate::pki::identity;

/// What the old server holds for one enrollment.
#[derive(Clone, Debug, Default)]
pub struct OldEnrollment {
    pub authenticated: bool,
    pub enabled: bool,
    pub token: Option<Vec<u8>>,
    pub push_magic: Option<String>,
    pub unlock_token: Option<Vec<u8>>,
    pub bootstrap_token: Option<Vec<u8>>,
    /// SHA-256 of the associated identity certificate (certauth).
    pub cert_sha256: Option<String>,
    /// Check-in message types received, in order, and through which door.
    pub log: Vec<(String, Door)>,
    /// Command reports received (status).
    pub reports: Vec<String>,
}

/// How a check-in reached the old server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    /// The MDM endpoint, from a device (through mdmctl's forwarding).
    Mdm,
    /// `PUT /migration` (mdmctl mirroring back).
    Migration,
}

#[derive(Default)]
struct Inner {
    enrollments: HashMap<String, OldEnrollment>,
    queues: HashMap<String, VecDeque<Vec<u8>>>,
    /// Fail `/migration` with 500 this many more times.
    fail_migration: usize,
}

/// The stand-in's state, shared with the test.
#[derive(Clone)]
pub struct NanoMdmStandIn {
    ca: X509,
    api_key: String,
    inner: Arc<Mutex<Inner>>,
}

impl NanoMdmStandIn {
    /// Serve on `listener`: `-ca` is `ca`, `-api` is `api_key`, `-migration` on.
    pub async fn start(listener: tokio::net::TcpListener, ca: X509, api_key: &str) -> Self {
        let me = Self {
            ca,
            api_key: api_key.to_string(),
            inner: Arc::new(Mutex::new(Inner::default())),
        };
        let app = axum::Router::new()
            .route("/mdm", axum::routing::put(mdm))
            .route("/checkin", axum::routing::put(mdm))
            .route("/migration", axum::routing::put(migration))
            .route("/v1/enqueue/{id}", axum::routing::put(enqueue))
            .with_state(me.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        me
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What it holds for an enrollment.
    pub fn enrollment(&self, id: &str) -> Option<OldEnrollment> {
        self.lock().enrollments.get(id).cloned()
    }

    /// Record an enrollment as its own database has it (the devices it enrolled before).
    pub fn preload(&self, id: &str, e: OldEnrollment) {
        self.lock().enrollments.insert(id.to_string(), e);
    }

    /// What the old server had for a Mac it enrolled, before the cutover: authenticated,
    /// enabled, its push token and magic, its identity associated.
    pub fn preload_device(&self, d: &super::device::SimDevice) {
        self.preload(
            &d.udid,
            OldEnrollment {
                authenticated: true,
                enabled: true,
                token: Some(d.token.clone()),
                push_magic: Some(d.push_magic.clone()),
                cert_sha256: d.identity_sha256(),
                ..Default::default()
            },
        );
    }

    /// Answer the next `n` `/migration` requests with 500.
    pub fn fail_migrations(&self, n: usize) {
        self.lock().fail_migration = n;
    }

    /// Queue a raw command plist (as `PUT /v1/enqueue/<id>` does).
    pub fn enqueue(&self, id: &str, plist: Vec<u8>) {
        self.lock()
            .queues
            .entry(id.to_string())
            .or_default()
            .push_back(plist);
    }

    fn checkin(
        &self,
        body: &[u8],
        door: Door,
        cert: Option<&str>,
    ) -> Result<(), (StatusCode, String)> {
        let msg = checkin::parse(body).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        let channel = msg
            .sender
            .channel()
            .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        let mut inner = self.lock();
        let e = inner.enrollments.entry(channel.id.clone()).or_default();
        if door == Door::Mdm {
            let presented = cert.unwrap_or_default();
            match (&msg.message, &e.cert_sha256) {
                (CheckinMessage::Authenticate(_), _) | (_, None) => {
                    e.cert_sha256 = Some(presented.to_string());
                }
                (_, Some(h)) if h == presented => {}
                _ => {
                    return Err((
                        StatusCode::BAD_REQUEST,
                        "certauth: cert not associated".into(),
                    ));
                }
            }
        }
        e.log.push((msg.message.name().to_string(), door));
        match msg.message {
            CheckinMessage::Authenticate(_) => {
                e.authenticated = true;
                e.enabled = false;
            }
            CheckinMessage::TokenUpdate(t) => {
                e.token = Some(t.token);
                e.push_magic = Some(t.push_magic);
                if t.unlock_token.is_some() {
                    e.unlock_token = t.unlock_token;
                }
                e.enabled = true;
            }
            CheckinMessage::SetBootstrapToken(b) => e.bootstrap_token = b.bootstrap_token,
            CheckinMessage::CheckOut => e.enabled = false,
            _ => {}
        }
        Ok(())
    }

    /// The identity a device request presents: its `Mdm-Signature`, verified over the body and
    /// chained to `-ca`.
    fn identity(&self, headers: &HeaderMap, body: &[u8]) -> Result<String, (StatusCode, String)> {
        let sig = headers
            .get("mdm-signature")
            .and_then(|v| v.to_str().ok())
            .ok_or((StatusCode::BAD_REQUEST, "no Mdm-Signature".to_string()))?;
        let presented = identity::verify_mdm_signature(sig, body)
            .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        let anchors = identity::TrustAnchors::new(&[(self.ca.clone(), false)])
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let v = anchors
            .verify(&presented)
            .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        Ok(v.sha256)
    }
}

async fn mdm(State(s): State<NanoMdmStandIn>, headers: HeaderMap, body: Bytes) -> Response {
    let cert = match s.identity(&headers, &body) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let is_checkin = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-apple-aspen-mdm-checkin"));
    if is_checkin {
        return match s.checkin(&body, Door::Mdm, Some(&cert)) {
            Ok(()) => StatusCode::OK.into_response(),
            Err(e) => e.into_response(),
        };
    }
    let report = match crate::apple::command::parse_report(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let Ok(channel) = report.sender.channel() else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut inner = s.lock();
    let Some(e) = inner.enrollments.get_mut(&channel.id) else {
        return (StatusCode::BAD_REQUEST, "unknown enrollment").into_response();
    };
    if e.cert_sha256.as_deref() != Some(cert.as_str()) {
        return (StatusCode::BAD_REQUEST, "certauth: cert not associated").into_response();
    }
    e.reports.push(report.status.as_str().to_string());
    match inner
        .queues
        .get_mut(&channel.id)
        .and_then(VecDeque::pop_front)
    {
        Some(plist) => ([("content-type", "application/xml")], plist).into_response(),
        None => StatusCode::OK.into_response(),
    }
}

fn authorized(s: &NanoMdmStandIn, headers: &HeaderMap) -> bool {
    use base64::Engine;
    let want = base64::engine::general_purpose::STANDARD.encode(format!("nanomdm:{}", s.api_key));
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .is_some_and(|v| v == want)
}

async fn migration(State(s): State<NanoMdmStandIn>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&s, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    {
        let mut inner = s.lock();
        if inner.fail_migration > 0 {
            inner.fail_migration -= 1;
            return (StatusCode::INTERNAL_SERVER_ERROR, "storage error").into_response();
        }
    }
    match s.checkin(&body, Door::Migration, None) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn enqueue(
    State(s): State<NanoMdmStandIn>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    if !authorized(&s, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let id = uri.path().trim_start_matches("/v1/enqueue/").to_string();
    s.enqueue(&id, body.to_vec());
    StatusCode::OK.into_response()
}
