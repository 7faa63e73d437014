//! An Apple Business Manager (device enrollment API) stand-in: there is no public simulator.
//! Modelled from Apple's documentation and micromdm/nanodep's client and `depsim` quirks:
//! - `GET /session` checks the OAuth 1.0a HMAC-SHA1 signature over `GET <base>/session` with the
//!   token's four keys (401 `signature_invalid` otherwise) and requires `Content-Type:
//!   application/json;charset=UTF8`, as depsim does; it answers `{"auth_session_token"}`.
//! - every other call needs a live `X-ADM-Auth-Session` (403 `FORBIDDEN` otherwise, as Apple
//!   answers a stale session); sessions can be expired or rotated on demand (a rotated one comes
//!   back in the answer's `X-ADM-Auth-Session`).
//! - on demand: 403 `T_C_NOT_SIGNED` (new terms), 429 with `Retry-After`, 503.
//! - `GET /account`.
//! - `POST /server/devices` (every device, paged by `limit`, `more_to_follow`; the last page's
//!   cursor is a sync cursor) and `POST /devices/sync` (the changes since a cursor: `added`,
//!   `modified`, `deleted` with `op_date`); cursors can be expired on demand (400
//!   `"EXPIRED_CURSOR"`, quoted as depsim sends it); an unknown one is `"INVALID_CURSOR"`.
//! - `POST /profile` (defines a profile: `profile_name` and `url` required, a new UUID each
//!   time, as Apple's are immutable), `GET /profile?profile_uuid=`, and `PUT` (depsim) or `POST`
//!   (Apple's documentation) `/profile/devices`: at most 1,000 serials (400 otherwise), an
//!   answer per serial (`SUCCESS`; `NOT_ACCESSIBLE` for a serial not assigned to this server;
//!   on demand `FAILED`, `THROTTLED` with `retry_after_seconds`, or no answer at all for some
//!   serials, for a number of calls), and a successful assignment shows in the next sync as a
//!   `modified` record with the new `profile_uuid` and `profile_status: assigned`, as ABM does.
//! - on demand, a device reassigned here with `mdm_migration_deadline` (protocol 8 and later).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::abm::oauth::{self, Credentials};
use crate::assets::abm::ServerToken;

#[derive(Default)]
struct Inner {
    sessions: HashSet<String>,
    next: u64,
    terms_not_signed: bool,
    throttle: usize,
    unavailable: usize,
    rotate_next: bool,
    session_calls: usize,
    calls: usize,
    /// Every device, in the order ABM added them.
    devices: Vec<serde_json::Value>,
    /// Where each serial is in `devices`.
    index: HashMap<String, usize>,
    /// Every change, in order: what `/devices/sync` pages through.
    changes: Vec<serde_json::Value>,
    /// Cursors carry the generation they were issued in; expiring bumps it.
    generation: usize,
    /// Defined profiles by UUID.
    profiles: BTreeMap<String, serde_json::Value>,
    /// The profile each serial is assigned.
    assigned: HashMap<String, String>,
    /// How many times each serial was sent for assignment.
    assign_tries: HashMap<String, usize>,
    /// The size of each assignment call.
    assign_batches: Vec<usize>,
    /// Serials answered otherwise than `SUCCESS`: (answer, or `""` for none; calls left).
    outcomes: HashMap<String, (&'static str, usize)>,
    /// `retry_after_seconds` in answers with `THROTTLED`.
    retry_after: Option<i64>,
}

/// The stand-in and its state.
#[derive(Clone)]
pub struct AbmStandIn {
    token: Arc<ServerToken>,
    base: String,
    inner: Arc<Mutex<Inner>>,
}

impl AbmStandIn {
    /// Serve on `listener` for this server token.
    pub async fn start(
        listener: tokio::net::TcpListener,
        token: ServerToken,
    ) -> std::io::Result<Self> {
        let base = format!("http://{}", listener.local_addr()?);
        let me = Self {
            token: Arc::new(token),
            base,
            inner: Arc::new(Mutex::new(Inner::default())),
        };
        let app = axum::Router::new()
            .route("/session", axum::routing::get(session))
            .route("/account", axum::routing::get(account))
            .route("/server/devices", axum::routing::post(fetch))
            .route("/devices/sync", axum::routing::post(sync))
            .route(
                "/profile",
                axum::routing::post(define_profile).get(get_profile),
            )
            .route(
                "/profile/devices",
                axum::routing::put(assign_profile).post(assign_profile),
            )
            .with_state(me.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(me)
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forget every session (Apple expired them).
    pub fn expire_sessions(&self) {
        self.lock().sessions.clear();
    }

    /// Answer with 403 `T_C_NOT_SIGNED` until told otherwise.
    pub fn set_terms_not_signed(&self, on: bool) {
        self.lock().terms_not_signed = on;
    }

    /// Answer the next `n` calls with 429 and `Retry-After: 1`.
    pub fn throttle(&self, n: usize) {
        self.lock().throttle = n;
    }

    /// Answer the next `n` calls with 503 (no `Retry-After`).
    pub fn unavailable(&self, n: usize) {
        self.lock().unavailable = n;
    }

    /// Rotate the session on the next call.
    pub fn rotate_next(&self) {
        self.lock().rotate_next = true;
    }

    /// `/session` calls, and other calls, answered so far.
    pub fn counts(&self) -> (usize, usize) {
        let i = self.lock();
        (i.session_calls, i.calls)
    }

    /// Add `n` Macs (serials `ABM<first + i>`), as an admin assigning them to this server.
    pub fn add_devices(&self, first: usize, n: usize) {
        let mut i = self.lock();
        for k in first..first + n {
            let d = serde_json::json!({
                "serial_number": format!("ABM{k:07}"),
                "model": "MacBook Air",
                "description": "MBA 13\" M3",
                "color": "MIDNIGHT",
                "os": "OSX",
                "device_family": "Mac",
                "profile_status": "empty",
                "device_assigned_by": "admin@example.com",
                "device_assigned_date": "2026-12-01T10:00:00Z",
            });
            let at = i.devices.len();
            i.index.insert(format!("ABM{k:07}"), at);
            i.devices.push(d.clone());
            let mut c = d;
            c["op_type"] = "added".into();
            c["op_date"] = format!("2026-12-03T{:02}:{:02}:00Z", (k / 60) % 24, k % 60).into();
            i.changes.push(c);
        }
    }

    /// A change to one device (`modified`, `deleted`), dated after everything before it.
    pub fn change(&self, serial: &str, op: &str) {
        let mut i = self.lock();
        let Some(d) = i
            .devices
            .iter()
            .find(|d| d["serial_number"] == serial)
            .cloned()
        else {
            return;
        };
        let mut c = d;
        c["op_type"] = op.into();
        c["op_date"] = format!("2026-12-04T00:00:{:02}Z", i.changes.len() % 60).into();
        if op == "deleted" {
            i.devices.retain(|d| d["serial_number"] != serial);
            i.index = i
                .devices
                .iter()
                .enumerate()
                .filter_map(|(n, d)| Some((d["serial_number"].as_str()?.to_string(), n)))
                .collect();
        }
        i.changes.push(c);
    }

    /// Answer `answer` (`FAILED`, `THROTTLED`, `NOT_ACCESSIBLE`, or `""`: leave it out) for
    /// these serials in the next `calls` assignment calls naming them (`usize::MAX`: always).
    pub fn answer_for(&self, serials: &[String], answer: &'static str, calls: usize) {
        let mut i = self.lock();
        for s in serials {
            i.outcomes.insert(s.clone(), (answer, calls));
        }
    }

    /// `retry_after_seconds` sent with `THROTTLED` answers.
    pub fn set_retry_after(&self, seconds: Option<i64>) {
        self.lock().retry_after = seconds;
    }

    /// The profile a serial is assigned, and that profile's JSON.
    pub fn assigned_profile(&self, serial: &str) -> Option<(String, serde_json::Value)> {
        let i = self.lock();
        let uuid = i.assigned.get(serial)?.clone();
        let json = i.profiles.get(&uuid).cloned().unwrap_or_default();
        Some((uuid, json))
    }

    /// Profiles defined so far.
    pub fn profiles_defined(&self) -> usize {
        self.lock().profiles.len()
    }

    /// How many times a serial was sent for assignment.
    pub fn assign_tries(&self, serial: &str) -> usize {
        self.lock().assign_tries.get(serial).copied().unwrap_or(0)
    }

    /// The size of every assignment call so far.
    pub fn assign_batches(&self) -> Vec<usize> {
        self.lock().assign_batches.clone()
    }

    /// An admin reassigns an enrolled device to this server with a migration deadline (ABM's
    /// managed device migration, macOS 26): a `modified` record carrying
    /// `mdm_migration_deadline`.
    pub fn migrate_with_deadline(&self, serial: &str, deadline: &str) {
        let mut i = self.lock();
        let n = i.changes.len();
        let Some(d) = i
            .index
            .get(serial)
            .copied()
            .and_then(|n| i.devices.get_mut(n))
        else {
            return;
        };
        d["mdm_migration_deadline"] = deadline.into();
        let mut c = d.clone();
        c["op_type"] = "modified".into();
        c["op_date"] = format!("2026-12-06T00:{:02}:{:02}Z", (n / 60) % 60, n % 60).into();
        i.changes.push(c);
    }

    /// Expire every cursor issued so far.
    pub fn expire_cursors(&self) {
        self.lock().generation += 1;
    }

    fn new_session(inner: &mut Inner) -> String {
        inner.next += 1;
        let s = format!("session-{}", inner.next);
        inner.sessions.insert(s.clone());
        s
    }
}

fn signature_valid(s: &AbmStandIn, headers: &HeaderMap) -> bool {
    let Some(params) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(oauth::parse_header)
    else {
        return false;
    };
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let (Some(key), Some(token), Some(nonce), Some(ts), Some(sig)) = (
        get("oauth_consumer_key"),
        get("oauth_token"),
        get("oauth_nonce"),
        get("oauth_timestamp").and_then(|t| t.parse::<u64>().ok()),
        get("oauth_signature"),
    ) else {
        return false;
    };
    if key != s.token.consumer_key
        || token != s.token.access_token
        || get("oauth_signature_method") != Some("HMAC-SHA1")
    {
        return false;
    }
    let c = Credentials {
        consumer_key: &s.token.consumer_key,
        consumer_secret: &s.token.consumer_secret,
        token: &s.token.access_token,
        token_secret: &s.token.access_secret,
    };
    let Ok(expected) = oauth::authorization(
        "GET",
        &format!("{}/session", s.base),
        &[],
        &c,
        nonce,
        ts,
        get("oauth_version"),
    ) else {
        return false;
    };
    oauth::parse_header(&expected)
        .and_then(|p| p.into_iter().find(|(k, _)| k == "oauth_signature"))
        .is_some_and(|(_, v)| v == sig)
}

async fn session(State(s): State<AbmStandIn>, headers: HeaderMap) -> Response {
    if headers.get("content-type").and_then(|v| v.to_str().ok())
        != Some("application/json;charset=UTF8")
    {
        return (StatusCode::BAD_REQUEST, "content type").into_response();
    }
    if !signature_valid(&s, &headers) {
        return (StatusCode::UNAUTHORIZED, "signature_invalid").into_response();
    }
    let mut i = s.lock();
    i.session_calls += 1;
    let token = AbmStandIn::new_session(&mut i);
    axum::Json(serde_json::json!({ "auth_session_token": token })).into_response()
}

/// The checks every call but `/session` goes through; the session to answer with.
fn gate(s: &AbmStandIn, headers: &HeaderMap) -> Result<Option<String>, Box<Response>> {
    let mut i = s.lock();
    i.calls += 1;
    let presented = headers
        .get("x-adm-auth-session")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if !i.sessions.contains(&presented) {
        return Err(Box::new(
            (StatusCode::FORBIDDEN, "FORBIDDEN").into_response(),
        ));
    }
    if i.terms_not_signed {
        return Err(Box::new(
            (StatusCode::FORBIDDEN, "T_C_NOT_SIGNED").into_response(),
        ));
    }
    if i.throttle > 0 {
        i.throttle -= 1;
        return Err(Box::new(
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "").into_response(),
        ));
    }
    if i.unavailable > 0 {
        i.unavailable -= 1;
        return Err(Box::new(
            (StatusCode::SERVICE_UNAVAILABLE, "").into_response(),
        ));
    }
    if i.rotate_next {
        i.rotate_next = false;
        i.sessions.remove(&presented);
        return Ok(Some(AbmStandIn::new_session(&mut i)));
    }
    Ok(None)
}

async fn account(State(s): State<AbmStandIn>, headers: HeaderMap, _uri: Uri) -> Response {
    let rotated = match gate(&s, &headers) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    with_rotation(
        serde_json::json!({
        "server_name": "mdmctl stand-in server",
        "server_uuid": "7A1B2C3D-0000-4000-8000-ABCDEF012345",
        "org_name": "Example Inc (DEMO ABM)",
        "org_email": "it@example.com",
        "org_id": "1234567",
        "admin_id": "admin@example.com",
        "facilitator_id": "admin@example.com",
        "org_type": "org",
        "org_version": "v2",
        "urls": [],
        }),
        rotated,
    )
}

/// `f3.200` → (3, 200) for kind `f`.
fn parse_cursor(c: &str, kind: char) -> Option<(usize, usize)> {
    let (g, n) = c.strip_prefix(kind)?.split_once('.')?;
    Some((g.parse().ok()?, n.parse().ok()?))
}

fn page_limit(body: &serde_json::Value) -> usize {
    body["limit"]
        .as_u64()
        .map_or(100, |l| l.clamp(1, 1000) as usize)
}

fn with_rotation(json: serde_json::Value, rotated: Option<String>) -> Response {
    let mut resp = axum::Json(json).into_response();
    if let Some(r) = rotated
        && let Ok(v) = r.parse()
    {
        resp.headers_mut().insert("x-adm-auth-session", v);
    }
    resp
}

/// `POST /server/devices`: every device, `limit` at a time. Fetch cursors are `f<offset>`; the
/// last page's cursor is `s<changes so far>`, a sync cursor.
async fn fetch(
    State(s): State<AbmStandIn>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let rotated = match gate(&s, &headers) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let i = s.lock();
    let generation = i.generation;
    let offset = match body["cursor"].as_str() {
        None => 0,
        Some(c) => match parse_cursor(c, 'f') {
            Some((g, _)) if g != generation => {
                return (StatusCode::BAD_REQUEST, "\"EXPIRED_CURSOR\"").into_response();
            }
            Some((_, n)) => n,
            None if parse_cursor(c, 's').is_some() => {
                return (StatusCode::BAD_REQUEST, "\"EXHAUSTED_CURSOR\"").into_response();
            }
            None => return (StatusCode::BAD_REQUEST, "\"INVALID_CURSOR\"").into_response(),
        },
    };
    let end = (offset + page_limit(&body)).min(i.devices.len());
    let devices: Vec<serde_json::Value> = i.devices[offset.min(end)..end].to_vec();
    let more = end < i.devices.len();
    let cursor = if more {
        format!("f{generation}.{end}")
    } else {
        format!("s{generation}.{}", i.changes.len())
    };
    drop(i);
    with_rotation(
        serde_json::json!({ "devices": devices, "cursor": cursor, "more_to_follow": more, "fetched_until": "2026-12-04T00:00:00Z" }),
        rotated,
    )
}

/// `POST /devices/sync`: the changes since a sync cursor `s<index>`.
async fn sync(
    State(s): State<AbmStandIn>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let rotated = match gate(&s, &headers) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let i = s.lock();
    let Some((generation, from)) = body["cursor"]
        .as_str()
        .and_then(|c| parse_cursor(c, 's'))
        .filter(|(_, n)| *n <= i.changes.len())
    else {
        return (StatusCode::BAD_REQUEST, "\"INVALID_CURSOR\"").into_response();
    };
    if generation != i.generation {
        return (StatusCode::BAD_REQUEST, "\"EXPIRED_CURSOR\"").into_response();
    }
    let end = (from + page_limit(&body)).min(i.changes.len());
    let devices: Vec<serde_json::Value> = i.changes[from..end].to_vec();
    let more = end < i.changes.len();
    drop(i);
    with_rotation(
        serde_json::json!({ "devices": devices, "cursor": format!("s{generation}.{end}"), "more_to_follow": more }),
        rotated,
    )
}

/// `POST /profile`: a new profile (and UUID) every time.
async fn define_profile(
    State(s): State<AbmStandIn>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let rotated = match gate(&s, &headers) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let Ok(profile) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "MALFORMED_REQUEST_BODY").into_response();
    };
    for required in ["profile_name", "url"] {
        if !profile[required].is_string() {
            return (
                StatusCode::BAD_REQUEST,
                format!("{}_REQUIRED", required.to_uppercase()),
            )
                .into_response();
        }
    }
    let mut i = s.lock();
    let uuid = format!("{:032X}", i.profiles.len() + 1);
    i.profiles.insert(uuid.clone(), profile);
    drop(i);
    with_rotation(
        serde_json::json!({ "profile_uuid": uuid, "devices": {} }),
        rotated,
    )
}

/// `GET /profile?profile_uuid=U`.
async fn get_profile(State(s): State<AbmStandIn>, headers: HeaderMap, uri: Uri) -> Response {
    let rotated = match gate(&s, &headers) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let uuid = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("profile_uuid="))
        .unwrap_or_default()
        .to_string();
    let found = s.lock().profiles.get(&uuid).cloned();
    match found {
        Some(p) => with_rotation(p, rotated),
        None => (StatusCode::BAD_REQUEST, "PROFILE_NOT_FOUND").into_response(),
    }
}

/// `PUT`/`POST /profile/devices`: an answer per serial.
async fn assign_profile(
    State(s): State<AbmStandIn>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let rotated = match gate(&s, &headers) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let uuid = body["profile_uuid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let serials: Vec<String> = body["devices"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if serials.is_empty() {
        return (StatusCode::BAD_REQUEST, "DEVICE_ID_REQUIRED").into_response();
    }
    if serials.len() > 1000 {
        return (StatusCode::BAD_REQUEST, "TOO_MANY_DEVICES").into_response();
    }
    let mut i = s.lock();
    if !i.profiles.contains_key(&uuid) {
        return (StatusCode::BAD_REQUEST, "PROFILE_NOT_FOUND").into_response();
    }
    i.assign_batches.push(serials.len());
    let mut answers = serde_json::Map::new();
    let mut throttled = false;
    for serial in serials {
        *i.assign_tries.entry(serial.clone()).or_default() += 1;
        let at = i.index.get(&serial).copied();
        let ours = at.is_some();
        let forced = match i.outcomes.get_mut(&serial) {
            Some((answer, left)) if *left > 0 => {
                *left = left.saturating_sub(1);
                Some(*answer)
            }
            _ => None,
        };
        let answer = match forced {
            Some("") => continue,
            Some(a) => a,
            None if !ours => "NOT_ACCESSIBLE",
            None => "SUCCESS",
        };
        throttled |= answer == "THROTTLED";
        if answer == "SUCCESS" {
            i.assigned.insert(serial.clone(), uuid.clone());
            let n = i.changes.len();
            if let Some(d) = at.and_then(|n| i.devices.get_mut(n)) {
                d["profile_uuid"] = uuid.clone().into();
                d["profile_status"] = "assigned".into();
                let mut c = d.clone();
                c["op_type"] = "modified".into();
                c["op_date"] = format!("2026-12-05T00:{:02}:{:02}Z", (n / 60) % 60, n % 60).into();
                i.changes.push(c);
            }
        }
        answers.insert(serial, answer.into());
    }
    let mut answer = serde_json::json!({ "profile_uuid": uuid, "devices": answers });
    if throttled && let Some(r) = i.retry_after {
        answer["retry_after_seconds"] = r.into();
    }
    drop(i);
    with_rotation(answer, rotated)
}
