//! Staged cutover (`serve --upstream URL`): `serve` takes every MDM request at the old URLs and
//! answers those of devices in the cutover set (`mdmctl cutover set`); the others go to the old
//! server unchanged (method, path, query, body, `Mdm-Signature`, `Content-Type`, the proxy's
//! client-certificate header) and its answer comes back as it was. So do SCEP and enrollment
//! requests, unless `--serve-enrollment`.
//!
//! Identity checks run before anything is forwarded: a body that does not match its signature,
//! a certificate no store CA vouches for, or another identity than the one recorded for the
//! device it claims to be is refused here, and the old server never sees it. Devices the store
//! does not know go to the old server (it enrolled them), unless `--serve-enrollment`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tracing::{debug, warn};

use super::device::{credential, refusal};
use super::{AppState, MdmRequest, Reply};
use crate::store::{CutoverSet, StoreError};

/// The largest answer taken from the old server.
const MAX_ANSWER: usize = 32 * 1024 * 1024;

/// How long the cutover set is kept before it is read again: a change by `cutover set`
/// reaches every instance within this.
const SET_TTL: Duration = Duration::from_secs(2);

/// The headers a forwarded request keeps (besides the proxy's client-certificate header).
const KEPT: &[HeaderName] = &[header::CONTENT_TYPE, header::USER_AGENT, header::ACCEPT];

/// The old server, and how to reach it.
pub struct Upstream {
    base: reqwest::Url,
    client: reqwest::Client,
    set: Mutex<Option<(Instant, CutoverSet)>>,
    /// When this instance last noted each device as routed to the old server (Unix seconds).
    routed: Mutex<std::collections::HashMap<String, i64>>,
}

/// A device routed to the old server is noted in the store at most this often.
const NOTE_ROUTED_EVERY: i64 = 60;

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("base", &self.base.as_str())
            .finish()
    }
}

impl Upstream {
    /// The old server at `url` (`https://old-mdm.internal`); `roots` are trusted for its TLS
    /// certificate besides the system's.
    pub fn new(
        url: &str,
        roots: &[openssl::x509::X509],
        timeout: Duration,
    ) -> Result<Self, String> {
        let base = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(format!("`{url}` is not an http(s) URL"));
        }
        let mut b = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none());
        for r in roots {
            let der = r.to_der().map_err(|e| e.to_string())?;
            b = b.add_root_certificate(
                reqwest::Certificate::from_der(&der).map_err(|e| e.to_string())?,
            );
        }
        Ok(Self {
            base,
            client: b.build().map_err(|e| e.to_string())?,
            set: Mutex::new(None),
            routed: Mutex::new(std::collections::HashMap::new()),
        })
    }

    pub fn url(&self) -> &str {
        self.base.as_str()
    }

    /// Note (at most once a minute per device) that a device went to the old server, for
    /// `cutover status`. A store that cannot take the note costs the device nothing.
    fn note_routed(&self, st: &AppState, device: &str) {
        let now = crate::timestamp::Timestamp::now();
        {
            let mut seen = self.routed.lock().unwrap_or_else(|e| e.into_inner());
            if seen.len() > 1_000_000 {
                seen.clear();
            }
            if seen
                .get(device)
                .is_some_and(|t| now.0 - t < NOTE_ROUTED_EVERY)
            {
                return;
            }
            seen.insert(device.to_string(), now.0);
        }
        if let Err(e) = st.store.write_rows(|tx| tx.note_routed(device, now)) {
            debug!(error = %e, "cannot note a device routed to the old server");
        }
    }

    fn cutover_set(&self, tx: &mut dyn crate::store::Tx) -> Result<CutoverSet, StoreError> {
        let mut cached = self.set.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, set)) = *cached
            && at.elapsed() < SET_TTL
        {
            return Ok(set);
        }
        let set = tx.cutover_set()?;
        *cached = Some((Instant::now(), set));
        Ok(set)
    }
}

/// Where a request goes; one answered here carries the identity already verified, so it is
/// not checked twice.
pub(crate) enum Route {
    Here(crate::pki::identity::Verified),
    Upstream,
}

/// Decide where an MDM request goes (store reads: call from a blocking task). A request
/// refused here gets its reply.
pub(crate) fn route(st: &AppState, up: &Upstream, req: &MdmRequest) -> Result<Route, Reply> {
    let credential = credential(st, req).map_err(|e| {
        crate::metrics::refused("no_identity");
        Reply::Refuse(StatusCode::BAD_REQUEST, e.to_string())
    })?;
    let v = st
        .trust
        .check(st.store.as_ref(), credential)
        .map_err(refusal)?;
    // A body that names no device is answered here (with its 400).
    let channel = if req.checkin {
        crate::apple::checkin::parse(&req.body)
            .ok()
            .and_then(|m| m.sender.channel().ok())
    } else {
        crate::apple::command::parse_report(&req.body)
            .ok()
            .and_then(|r| r.sender.channel().ok())
    };
    let Some(channel) = channel else {
        return Ok(Route::Here(v));
    };
    let device = channel.device_id.clone();
    let looked = st.store.glance(|tx| -> Result<_, StoreError> {
        let auth = tx.device_auth(&device, None)?;
        if auth.is_none() {
            return Ok((None, false));
        }
        let set = up.cutover_set(tx)?;
        let moved = tx.cutover_move(&device)?;
        Ok((auth, set.contains(&device, moved)))
    });
    let (auth, inside) = match looked {
        Ok(l) => l,
        Err(e) => return Err(super::device::store_failure(e)),
    };
    let Some(auth) = auth else {
        if st.config.serve_enrollment {
            return Ok(Route::Here(v));
        }
        up.note_routed(st, &device);
        return Ok(Route::Upstream);
    };
    if inside {
        return Ok(Route::Here(v));
    }
    if let Some(h) = auth.identity_sha256.as_deref()
        && h != v.sha256
    {
        warn!(
            device = %device,
            presented = %&v.sha256[..16],
            "refused (not forwarded): the identity certificate is not the one recorded for this device"
        );
        crate::metrics::refused("identity_mismatch");
        return Err(Reply::Refuse(
            StatusCode::FORBIDDEN,
            "identity mismatch".into(),
        ));
    }
    debug!(device = %device, "forwarded to the old server");
    up.note_routed(st, &device);
    Ok(Route::Upstream)
}

/// Send a request on to the old server and return its answer as it was (status, content type,
/// body). An old server that does not answer gets the device a 502; it comes back later.
pub(crate) async fn forward(
    st: &AppState,
    up: &Upstream,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let mut url = up.base.clone();
    let path = format!("{}{}", up.base.path().trim_end_matches('/'), uri.path());
    url.set_path(&path);
    url.set_query(uri.query());
    let mut rb = up.client.request(method.clone(), url).body(body);
    let cert_header = st
        .config
        .client_cert_header
        .as_deref()
        .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok());
    for name in KEPT
        .iter()
        .cloned()
        .chain(std::iter::once(HeaderName::from_static("mdm-signature")))
        .chain(cert_header)
    {
        for v in headers.get_all(&name) {
            rb = rb.header(name.clone(), v.clone());
        }
    }
    let resp = match rb.send().await {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, path = %uri.path(), "the old server did not answer a forwarded request");
            return StatusCode::BAD_GATEWAY.into_response();
        }
    };
    let status = resp.status();
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let retry_after = resp.headers().get(header::RETRY_AFTER).cloned();
    let mut resp = resp;
    let mut answer = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if answer.len() + c.len() > MAX_ANSWER {
                    warn!(path = %uri.path(), "the old server's answer is larger than {MAX_ANSWER} bytes; not passed on");
                    return StatusCode::BAD_GATEWAY.into_response();
                }
                answer.extend_from_slice(&c);
            }
            Ok(None) => break,
            Err(e) => {
                warn!(error = %e, path = %uri.path(), "the old server's answer broke off");
                return StatusCode::BAD_GATEWAY.into_response();
            }
        }
    }
    let mut out = (status, answer).into_response();
    if let Some(ct) = content_type {
        out.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    if let Some(ra) = retry_after {
        out.headers_mut().insert(header::RETRY_AFTER, ra);
    }
    out
}

/// SCEP and `/enroll` during a staged cutover: to the old server.
pub(crate) async fn forward_endpoint(
    axum::extract::State(st): axum::extract::State<std::sync::Arc<AppState>>,
    request: axum::extract::Request,
) -> Response {
    let Some(up) = st.config.upstream.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (parts, body) = request.into_parts();
    let body = match super::read_body(body, super::SCEP_MAX_BODY, st.config.body_timeout).await {
        Ok(b) => b,
        Err(status) => return status.into_response(),
    };
    forward(&st, &up, &parts.method, &parts.uri, &parts.headers, body).await
}

/// The old server's migration endpoint (NanoMDM's `PUT /migration`, API basic auth
/// `nanomdm:KEY`), which takes raw check-ins without a device certificate: how the old server
/// keeps the push tokens, bootstrap tokens and enrollments of devices served here current, so
/// that a rollback finds them as they are.
pub struct Mirror {
    url: reqwest::Url,
    client: reqwest::Client,
    api_key: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is never shown.
        f.debug_struct("Mirror")
            .field("url", &self.url.as_str())
            .finish()
    }
}

/// Items sent per pass of the `mirror-back` job.
const MIRROR_BATCH: u32 = 500;

impl Mirror {
    pub fn new(
        url: &str,
        api_key: zeroize::Zeroizing<String>,
        roots: &[openssl::x509::X509],
        timeout: Duration,
    ) -> Result<Self, String> {
        let up = Upstream::new(url, roots, timeout)?;
        Ok(Self {
            url: up.base,
            client: up.client,
            api_key,
        })
    }

    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    async fn send(&self, body: &[u8]) -> Result<(), String> {
        let resp = self
            .client
            .put(self.url.clone())
            .basic_auth("nanomdm", Some(self.api_key.as_str()))
            .header(
                header::CONTENT_TYPE,
                "application/x-apple-aspen-mdm-checkin",
            )
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| format!("no answer: {e}"))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        // The reason, not the whole answer: its first chunk.
        let mut resp = resp;
        let text = match resp.chunk().await {
            Ok(Some(c)) => String::from_utf8_lossy(&c[..c.len().min(1024)]).into_owned(),
            _ => String::new(),
        };
        Err(format!(
            "HTTP {}: {}",
            status.as_u16(),
            text.chars().take(200).collect::<String>().trim()
        ))
    }
}

/// Wait before trying an item again: 5 s, doubling, at most an hour.
fn mirror_backoff(attempts: i64) -> i64 {
    let shift = u32::try_from(attempts.clamp(0, 10)).unwrap_or(10);
    (5i64 << shift).min(3600)
}

/// One pass of the `mirror-back` job: send what waits, oldest first, each device's check-ins in
/// order (a device whose item fails waits for its retry before its later ones go).
pub(crate) async fn mirror_pass(st: &AppState, mirror: &Mirror) -> Result<String, StoreError> {
    let store = st.store.clone();
    let waiting =
        tokio::task::spawn_blocking(move || store.read(|tx| tx.mirror_waiting(MIRROR_BATCH)))
            .await
            .map_err(|e| StoreError::Decode(format!("mirror task failed: {e}")))??;
    let now = crate::timestamp::Timestamp::now();
    let mut held: std::collections::HashSet<String> = std::collections::HashSet::new();
    let (mut sent, mut failed) = (0usize, 0usize);
    for item in waiting {
        if held.contains(&item.device_id) {
            continue;
        }
        if item.next_attempt_at.0 > now.0 {
            held.insert(item.device_id.clone());
            continue;
        }
        let outcome = mirror.send(&item.body).await;
        let store = st.store.clone();
        let (id, attempts) = (item.id, item.attempts);
        let err = outcome.as_ref().err().cloned();
        if let Some(e) = &err {
            warn!(device = %item.device_id, message = %item.message, attempt = attempts + 1, error = %e, "the old server did not take a mirrored check-in; it is tried again");
            held.insert(item.device_id.clone());
            failed += 1;
        } else {
            debug!(device = %item.device_id, message = %item.message, "check-in mirrored to the old server");
            sent += 1;
        }
        tokio::task::spawn_blocking(move || {
            store.write_rows(|tx| match &err {
                None => tx.mirror_done(id),
                Some(e) => tx.mirror_failed(
                    id,
                    e,
                    crate::timestamp::Timestamp(
                        crate::timestamp::Timestamp::now().0 + mirror_backoff(attempts),
                    ),
                ),
            })
        })
        .await
        .map_err(|e| StoreError::Decode(format!("mirror task failed: {e}")))??;
    }
    Ok(format!("{sent} check-in(s) mirrored, {failed} failed"))
}
