//! The admin API under `/api/v1`: devices, commands (named or raw plist) to many devices,
//! their status and results, pushes, one-time SCEP challenges. Bearer tokens are checked
//! against the SHA-256 hashes in the store; a missing or wrong token is 401 (this is for
//! admins and CI, not devices). Each token has a role and may be limited to a team:
//!
//! | endpoint | observer | gitops | maintainer | admin |
//! |---|---|---|---|---|
//! | read devices, commands, profiles, status, activities, server instances, `/metrics` | yes | | yes | yes |
//! | push credentials (`?secrets=true`), FileVault keys (audited) | | | yes | yes |
//! | commands, pushes, transfers | | | yes | yes |
//! | apply (and its dry run) | | yes | yes | yes |
//! | one-time SCEP challenges (new identities) | | | | yes |
//!
//! A team token sees and acts on its team's devices only (others are 404, as if unknown), and
//! cannot apply, transfer or mint challenges (they reach beyond its team). A refusal is 403
//! with a hint naming the role that would do.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::AppState;
use crate::apple::command::{Command, named};
use crate::mdm::api::{ApiErrorBody, Challenge, CommandRequest, DeviceFilter, PushRequest};
use crate::store::{Role, StoreError, Tx};
use crate::timestamp::Timestamp;

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/devices", get(devices))
        .route("/devices/{id}", get(device))
        .route("/devices/{id}/commands", get(device_commands))
        .route("/devices/{id}/profiles", get(device_profiles))
        .route(
            "/devices/{id}/disk-encryption-key",
            get(disk_encryption_key),
        )
        .route("/profile-status", get(profile_status))
        .route("/commands", post(send_command))
        .route("/commands/{uuid}", get(command))
        .route("/push", post(push))
        .route("/transfer", post(transfer))
        .route("/scep/challenges", post(challenge))
        .route("/apply", post(apply))
        .route("/activities", get(activities))
        .route("/servers", get(servers))
        .route("/cutover", get(cutover).post(cutover_change))
        .route("/version", get(version))
        .route("/config", get(config))
        .route("/mdm-apple", get(mdm_apple))
        .route("/abm/devices", get(abm_devices))
        .route("/abm/sync", post(abm_sync))
}

/// An API error: status, message, hint.
pub(crate) struct ApiError(StatusCode, String, Option<String>);

impl ApiError {
    fn bad(msg: impl Into<String>, hint: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, msg.into(), Some(hint.into()))
    }
    fn not_found(msg: impl Into<String>, hint: &str) -> Self {
        Self(StatusCode::NOT_FOUND, msg.into(), Some(hint.to_string()))
    }
}

/// Where to find the devices the server holds.
const DEVICES_HINT: &str = "name devices by UDID, enrollment ID or serial number; list them with `GET /api/v1/devices` (`mdmctl get devices`)";

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store error in the admin API");
        Self(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store is unavailable".into(),
            None,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(ApiErrorBody {
                error: self.1,
                hint: self.2,
                problems: Vec::new(),
            }),
        )
            .into_response()
    }
}

/// The caller, once its bearer token checked out.
pub(crate) struct Caller {
    /// `api:<token name>` in the activity log.
    who: String,
    role: Role,
    /// The team the token is limited to.
    team: Option<String>,
}

impl Caller {
    /// Refuse unless the token's role is one of `roles`.
    fn may(&self, roles: &[Role], what: &str) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            return Ok(());
        }
        let names: Vec<String> = roles.iter().map(|r| format!("`{}`", r.as_str())).collect();
        Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "a token with the role `{}` may not {what}",
                self.role.as_str()
            ),
            Some(format!(
                "use a token with the role {} (`mdmctl token create --name NAME --role {}`)",
                names.join(" or "),
                roles.first().map_or("admin", |r| r.as_str())
            )),
        ))
    }

    /// Refuse a team token for what reaches beyond one team.
    fn whole_fleet(&self, what: &str) -> Result<(), ApiError> {
        match &self.team {
            None => Ok(()),
            Some(t) => Err(ApiError(
                StatusCode::FORBIDDEN,
                format!("a token limited to team `{t}` may not {what}"),
                Some("use a token without `--team` (`mdmctl token create --name NAME --role maintainer`)".into()),
            )),
        }
    }

    /// Whether a device is within the token's reach.
    fn reaches(&self, tx: &mut dyn Tx, device_id: &str) -> Result<bool, StoreError> {
        Ok(match &self.team {
            None => true,
            Some(t) => tx.device_team(device_id)?.as_deref() == Some(t.as_str()),
        })
    }
}

/// Who may read devices and results: everyone but the write-only `gitops` role.
const READERS: &[Role] = &[Role::Observer, Role::Maintainer, Role::Admin];
/// Who may act on devices and see their secrets.
const ACTORS: &[Role] = &[Role::Maintainer, Role::Admin];

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        st: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = || {
            ApiError(
                StatusCode::UNAUTHORIZED,
                "missing or unknown API token".into(),
                Some(
                    "send `Authorization: Bearer <token>` with a token from `mdmctl token create`"
                        .into(),
                ),
            )
        };
        // The scheme is case-insensitive (RFC 9110 §11.1): `bearer` works too.
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or_else(unauthorized)?;
        let hash = crate::secrets::credential_hash(token);
        let store = st.store.clone();
        let st2 = st.clone();
        let found = blocking(move || {
            let t = store.read(|tx| tx.api_token_by_hash(&hash))?;
            if let Some(t) = &t
                && st2.touch_due(&format!("api:{}", t.id))
            {
                let id = t.id;
                store.write(|tx| tx.touch_api_token(id))?;
            }
            Ok::<_, StoreError>(t)
        })
        .await?;
        match found {
            Some(t) => Ok(Caller {
                who: format!("api:{}", t.name),
                role: t.role,
                team: t.team,
            }),
            None => Err(unauthorized()),
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))?
        .map_err(ApiError::from)
}

async fn devices(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Query(mut f): Query<DeviceFilter>,
) -> Result<Response, ApiError> {
    caller.may(READERS, "list devices")?;
    if let Some(t) = &caller.team {
        // Another team's devices are as if they did not exist.
        if f.team.as_ref().is_some_and(|asked| asked != t) {
            return Ok(Json(Vec::<crate::store::DeviceSummary>::new()).into_response());
        }
        f.team = Some(t.clone());
    }
    for t in [&f.seen_since, &f.not_seen_since].into_iter().flatten() {
        if Timestamp::parse_rfc3339(t).is_none() {
            return Err(ApiError::bad(
                format!("`{t}` is not an RFC 3339 time"),
                "write times like `2026-11-23T09:00:00Z`",
            ));
        }
    }
    let store = st.store.clone();
    let list = blocking(move || store.read(|tx| crate::mdm::devices(tx, &f))).await?;
    Ok(Json(list).into_response())
}

#[derive(Deserialize)]
struct DeviceQuery {
    #[serde(default)]
    secrets: bool,
}

async fn device(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<DeviceQuery>,
) -> Result<Response, ApiError> {
    caller.may(READERS, "read devices")?;
    if q.secrets {
        caller.may(ACTORS, "read push credentials")?;
    }
    let store = st.store.clone();
    let id2 = id.clone();
    let d = blocking(move || {
        let reach = store.read(|tx| match tx.device(&id2)? {
            Some(d) => caller.reaches(tx, &d.id),
            None => Ok(false),
        })?;
        if !reach {
            return Ok(None);
        }
        if q.secrets {
            store.write(|tx| crate::mdm::device_detail(tx, &id2, Some(&caller.who)))
        } else {
            store.read(|tx| crate::mdm::device_detail(tx, &id2, None))
        }
    })
    .await?;
    d.map(|d| Json(d).into_response())
        .ok_or_else(|| ApiError::not_found(format!("no device `{id}`"), DEVICES_HINT))
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<u32>,
}

async fn device_commands(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(l): Query<Limit>,
) -> Result<Response, ApiError> {
    caller.may(READERS, "read commands")?;
    let limit = l.limit.unwrap_or(50).min(1000);
    of_device(&st, caller, id, move |tx, device| {
        tx.device_commands(device, limit)
    })
    .await
}

async fn device_profiles(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.may(READERS, "read profiles")?;
    of_device(&st, caller, id, |tx, device| tx.device_profiles(device)).await
}

/// The escrowed FileVault key; the viewing is recorded with the caller's token name.
async fn disk_encryption_key(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.may(ACTORS, "view FileVault recovery keys")?;
    let store = st.store.clone();
    let id2 = id.clone();
    let out = blocking(move || {
        store.write(|tx| {
            let reach = match tx.device(&id2)? {
                Some(d) => caller.reaches(tx, &d.id)?,
                None => false,
            };
            if !reach {
                return Ok(Err(crate::mdm::NoKey::NoDevice));
            }
            crate::mdm::disk_encryption_key(tx, &id2, &caller.who)
        })
    })
    .await?;
    match out {
        Ok(k) => Ok(Json(k).into_response()),
        Err(no) => {
            let (msg, hint) = no.explain(&id);
            Err(ApiError::not_found(msg, &hint))
        }
    }
}

/// Read something of one device (named by UDID, enrollment ID or serial) in a read
/// transaction; 404 with a hint when the store has no such device.
async fn of_device<T, F>(
    st: &AppState,
    caller: Caller,
    id: String,
    read: F,
) -> Result<Response, ApiError>
where
    T: Serialize + Send + 'static,
    F: Fn(&mut dyn Tx, &str) -> Result<T, StoreError> + Send + 'static,
{
    let store = st.store.clone();
    let id2 = id.clone();
    let out = blocking(move || {
        store.read(|tx| match tx.device(&id2)? {
            Some(d) if caller.reaches(tx, &d.id)? => read(tx, &d.id).map(Some),
            _ => Ok(None),
        })
    })
    .await?;
    out.map(|v| Json(v).into_response())
        .ok_or_else(|| ApiError::not_found(format!("no device `{id}`"), DEVICES_HINT))
}

#[derive(Deserialize)]
struct TeamQuery {
    team: Option<String>,
}

async fn profile_status(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Query(mut q): Query<TeamQuery>,
) -> Result<Response, ApiError> {
    caller.may(READERS, "read profile status")?;
    if let Some(t) = &caller.team {
        if q.team.as_ref().is_some_and(|asked| asked != t) {
            return Err(ApiError::not_found(
                format!("no team `{}`", q.team.unwrap_or_default()),
                "this token sees its own team only",
            ));
        }
        q.team = Some(t.clone());
    }
    let store = st.store.clone();
    let team = q.team.clone();
    let out =
        blocking(move || store.read(|tx| crate::mdm::compliance(tx, team.as_deref()))).await?;
    out.map(|c| Json(c).into_response()).ok_or_else(|| {
        ApiError::not_found(
            format!("no team `{}`", q.team.unwrap_or_default()),
            "list teams with `mdmctl get teams`",
        )
    })
}

/// `/metrics` (mounted at the root, beside the API): any reader's token for the whole fleet.
pub(crate) async fn metrics(
    State(st): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.may(READERS, "read metrics")?;
    caller.whole_fleet("read metrics")?;
    Ok(super::metrics_text(&st).await)
}

/// The instances sharing the store and their jobs (`mdmctl get servers --server`).
async fn servers(State(st): State<Arc<AppState>>, caller: Caller) -> Result<Response, ApiError> {
    caller.may(READERS, "read the server instances")?;
    let store = st.store.clone();
    let out = blocking(move || store.read(|tx| crate::mdm::instances(tx))).await?;
    Ok(Json(out).into_response())
}

/// Where the staged cutover stands (`mdmctl cutover status --server`).
async fn cutover(State(st): State<Arc<AppState>>, caller: Caller) -> Result<Response, ApiError> {
    caller.may(READERS, "read the cutover's status")?;
    let store = st.store.clone();
    let out = blocking(move || store.read(crate::cutover::status::read)).await?;
    Ok(Json(out).into_response())
}

/// The server's build (`mdmctl version --server`, and every `--server` run's comparison): any
/// valid token.
async fn version(caller: Caller) -> Result<Response, ApiError> {
    caller.may(READERS, "read the server's version")?;
    Ok(Json(crate::version::VersionInfo::current()).into_response())
}

/// Desired state (`mdmctl get config|teams|profiles --server`); a team token sees its team.
async fn config(State(st): State<Arc<AppState>>, caller: Caller) -> Result<Response, ApiError> {
    // A GitOps pipeline may read back what it applies.
    caller.may(
        &[Role::Observer, Role::Gitops, Role::Maintainer, Role::Admin],
        "read the desired state",
    )?;
    let store = st.store.clone();
    let mut snap = blocking(move || store.read(crate::gitops::snapshot)).await?;
    if let Some(t) = &caller.team {
        snap = snap.only_team(t);
    }
    Ok(Json(snap).into_response())
}

/// The push certificate, SCEP CAs and the topics devices use (`mdmctl get mdm-apple --server`):
/// certificates only, never a key.
async fn mdm_apple(State(st): State<Arc<AppState>>, caller: Caller) -> Result<Response, ApiError> {
    caller.may(READERS, "read the push certificate and SCEP CAs")?;
    caller.whole_fleet("read the push certificate and SCEP CAs")?;
    let store = st.store.clone();
    let out = blocking(move || {
        store
            .read(crate::assets::apns::mdm_apple_status)
            .map_err(|e| StoreError::Decode(e.to_string()))
    })
    .await?;
    Ok(Json(out).into_response())
}

/// Apple Business Manager's devices (`mdmctl get abm-devices --server`); a team token sees its
/// team's only.
async fn abm_devices(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<crate::mdm::api::AbmDeviceQuery>,
) -> Result<Response, ApiError> {
    caller.may(READERS, "list Apple Business Manager devices")?;
    let mut filter = q.filter();
    if let Some(t) = &caller.team {
        if filter
            .team
            .as_ref()
            .is_some_and(|asked| asked.as_ref() != Some(t))
        {
            return Ok(Json(Vec::<crate::store::AbmDevice>::new()).into_response());
        }
        filter.team = Some(Some(t.clone()));
    }
    let store = st.store.clone();
    let out = blocking(move || store.read(|tx| tx.abm_devices(&filter))).await?;
    Ok(Json(out).into_response())
}

/// `mdmctl abm sync --server`: sync with Apple Business Manager now (and assign), with the
/// server's ABM service and URL.
async fn abm_sync(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(req): Json<crate::mdm::api::AbmSyncRequest>,
) -> Result<Response, ApiError> {
    caller.may(ACTORS, "sync with Apple Business Manager")?;
    caller.whole_fleet("sync with Apple Business Manager")?;
    let store = st.store.clone();
    let base = st.config.abm_url.clone();
    let client = blocking(move || {
        crate::abm::client_for(store.as_ref(), &base).map_err(|e| StoreError::Decode(e.to_string()))
    })
    .await?;
    let Some(client) = client else {
        return Err(ApiError::not_found(
            "no Apple Business Manager server token in the store",
            "install one with `mdmctl set mdm-apple-bm --token FILE.p7m`",
        ));
    };
    match crate::abm::sync_now(
        &client,
        &st.store,
        req.reset_cursor,
        !req.no_assign,
        Some(&st.config.url),
    )
    .await
    {
        Ok((pass, _)) => Ok(Json(pass).into_response()),
        Err(e) => Err(ApiError(
            StatusCode::BAD_GATEWAY,
            e.to_string(),
            crate::diagnose::Diagnose::hint(&e),
        )),
    }
}

/// `cutover set` / `cutover rollback` through `--server`: who is answered here and who goes to
/// the old server. Recorded as the caller.
async fn cutover_change(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(req): Json<crate::cutover::stage::ChangeRequest>,
) -> Result<Response, ApiError> {
    use crate::cutover::stage::{self, StageError};
    caller.may(ACTORS, "move devices in or out of the cutover set")?;
    caller.whole_fleet("change the cutover set")?;
    let who = caller.who;
    let store = st.store.clone();
    let out = blocking(move || {
        Ok::<_, StoreError>(stage::apply(store.as_ref(), &req.change, &who, req.dry_run))
    })
    .await?;
    match out {
        Ok(o) => Ok(Json(o).into_response()),
        Err(StageError::Store(e)) => Err(e.into()),
        Err(e) => Err(ApiError::not_found(
            format!("{e}; nothing changed"),
            "list UDIDs or serial numbers of imported devices, or a team with devices (`mdmctl get devices`, `mdmctl get teams`)",
        )),
    }
}

/// Build the command a request describes (named, or a raw plist).
pub(crate) fn command_of(req: &CommandRequest) -> Result<Command, ApiError> {
    match (&req.request_type, &req.plist) {
        (Some(name), None) => named::by_name(name, &req.params).map_err(|e| {
            ApiError::bad(
                e.to_string(),
                format!("name one of {}, or send `plist`", named::NAMES.join(", ")),
            )
        }),
        (None, Some(b64)) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| {
                    ApiError::bad(
                        format!("`plist` is not base64: {e}"),
                        "base64-encode the command plist",
                    )
                })?;
            Command::from_plist(&bytes).map_err(|e| {
                ApiError::bad(
                    e.to_string(),
                    "send `{Command: {RequestType: …}}` as a plist",
                )
            })
        }
        _ => Err(ApiError::bad(
            "give exactly one of `request_type` and `plist`",
            "e.g. {\"devices\": [\"UDID\"], \"request_type\": \"DeviceInformation\"}",
        )),
    }
}

async fn send_command(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(req): Json<CommandRequest>,
) -> Result<Response, ApiError> {
    caller.may(ACTORS, "send commands")?;
    if req.devices.is_empty() {
        return Err(ApiError::bad(
            "no devices",
            "list UDIDs or serial numbers in `devices`",
        ));
    }
    let command = command_of(&req)?;
    let (targets, outside) = within_reach(&st, &caller, req.devices.clone()).await?;
    let pushes = req.push.then_some(st.pushes.as_ref());
    let mut sent = crate::mdm::send(&st.store, pushes, &command, &targets, &caller.who).await?;
    sent.unknown.extend(outside);
    let status = if sent.queued.is_empty() {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(sent)).into_response())
}

async fn command(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(uuid): Path<String>,
) -> Result<Response, ApiError> {
    caller.may(READERS, "read command results")?;
    let store = st.store.clone();
    let u = uuid.clone();
    let entries = blocking(move || {
        let all = crate::mdm::status(store.as_ref(), &u)?;
        store.read(|tx| {
            let mut mine = Vec::with_capacity(all.len());
            for e in &all {
                let device = e
                    .enrollment_id
                    .split(':')
                    .next()
                    .unwrap_or(&e.enrollment_id);
                if caller.reaches(tx, device)? {
                    mine.push(e.clone());
                }
            }
            Ok(mine)
        })
    })
    .await?;
    if entries.is_empty() {
        return Err(ApiError::not_found(
            format!("no command `{uuid}`"),
            "the UUID is printed when the command is sent; list a device's with `GET /api/v1/devices/ID/commands`",
        ));
    }
    Ok(Json(entries).into_response())
}

async fn transfer(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(req): Json<crate::mdm::api::TransferRequest>,
) -> Result<Response, ApiError> {
    caller.may(ACTORS, "transfer devices")?;
    caller.whole_fleet("move devices between teams")?;
    let who = caller.who;
    let store = st.store.clone();
    let out = blocking(move || {
        store.write(|tx| crate::mdm::transfer(tx, req.team.as_deref(), &req.devices, &who))
    })
    .await?;
    match out {
        Ok(t) if t.moved.is_empty() && t.unchanged.is_empty() => Err(ApiError::not_found(
            format!("no such devices: {}", t.unknown.join(", ")),
            DEVICES_HINT,
        )),
        Ok(t) => Ok(Json(t).into_response()),
        Err(team) => Err(ApiError::not_found(
            format!("no team `{team}`"),
            "teams come from `mdmctl apply`: add a `kind: team` document, apply it, then transfer",
        )),
    }
}

async fn push(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(req): Json<PushRequest>,
) -> Result<Response, ApiError> {
    caller.may(ACTORS, "push devices")?;
    let (targets, outside) = within_reach(&st, &caller, req.devices.clone()).await?;
    let who = caller.who.clone();
    let store = st.store.clone();
    let (ids, mut unknown) =
        blocking(move || store.read(|tx| crate::mdm::resolve_devices(tx, &targets))).await?;
    unknown.extend(outside);
    if ids.is_empty() {
        return Err(ApiError::not_found(
            format!("no such devices: {}", unknown.join(", ")),
            DEVICES_HINT,
        ));
    }
    tracing::info!(by = %who, devices = ids.len(), "push requested");
    let summary = st.pushes.push(&ids).await.map_err(|e| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            e.to_string(),
            crate::diagnose::Diagnose::hint(&e),
        )
    })?;
    Ok(Json(summary).into_response())
}

async fn challenge(State(st): State<Arc<AppState>>, caller: Caller) -> Result<Response, ApiError> {
    caller.may(
        &[Role::Admin],
        "mint SCEP challenges (new device identities)",
    )?;
    caller.whole_fleet("mint SCEP challenges")?;
    let st2 = st.clone();
    let ttl = st.config.challenge_ttl;
    let who = caller.who.clone();
    let challenge = blocking(move || {
        super::enroll::mint_challenge(&st2, &crate::store::ChallengeScope::api(), ttl, &who)
    })
    .await?;
    tracing::info!(by = %caller.who, "minted a one-time SCEP challenge");
    let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 4);
    Ok((
        StatusCode::CREATED,
        Json(Challenge {
            challenge: challenge.to_string(),
            expires_at: Timestamp(Timestamp::now().0 + secs),
        }),
    )
        .into_response())
}

/// Split targets into those the caller's token reaches and those it does not (reported as
/// unknown: a team token learns nothing of other teams' devices).
async fn within_reach(
    st: &AppState,
    caller: &Caller,
    targets: Vec<String>,
) -> Result<(Vec<String>, Vec<String>), ApiError> {
    let Some(team) = caller.team.clone() else {
        return Ok((targets, Vec::new()));
    };
    let store = st.store.clone();
    blocking(move || {
        store.read(|tx| {
            let (mut inside, mut outside) = (Vec::new(), Vec::new());
            for t in &targets {
                let id = match tx.device_auth(t, None)? {
                    Some(a) => Some(a.device_id),
                    None => tx.device(t)?.map(|d| d.id),
                };
                match id {
                    Some(id) if tx.device_team(&id)?.as_deref() == Some(team.as_str()) => {
                        inside.push(t.clone())
                    }
                    _ => outside.push(t.clone()),
                }
            }
            Ok((inside, outside))
        })
    })
    .await
}

/// `apply` from a remote CLI: the files it validated, validated again here with the same code
/// and the store's teams, then planned and (unless a dry run) written in one transaction.
async fn apply(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(req): Json<crate::mdm::api::ApplyRequest>,
) -> Result<Response, ApiError> {
    caller.may(
        &[Role::Gitops, Role::Maintainer, Role::Admin],
        "apply configuration",
    )?;
    caller.whole_fleet("apply configuration (it sets every team's)")?;
    let who = caller.who;
    let store = st.store.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let loaded = req.bundle.load();
        crate::gitops::run(store.as_ref(), loaded, req.dry_run, &who)
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))?;
    match outcome {
        Ok(applied) => {
            let result = serde_json::to_value(&applied)
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))?;
            Ok(Json(crate::mdm::api::ApplyResponse {
                result,
                rendered: applied.plan.render(),
                summary: applied.plan.summary(),
            })
            .into_response())
        }
        Err(crate::gitops::GitopsError::Invalid(issues)) => {
            let e = crate::gitops::GitopsError::Invalid(issues.clone());
            Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(ApiErrorBody {
                    error: e.to_string(),
                    hint: crate::diagnose::Diagnose::hint(&e),
                    problems: issues.iter().map(ToString::to_string).collect(),
                }),
            )
                .into_response())
        }
        Err(crate::gitops::GitopsError::Store(e)) => Err(e.into()),
        Err(e) => {
            tracing::error!(error = %e, "apply failed");
            Err(ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                e.to_string(),
                None,
            ))
        }
    }
}

async fn activities(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Query(f): Query<crate::mdm::api::ActivityFilter>,
) -> Result<Response, ApiError> {
    caller.may(READERS, "read the activity log")?;
    if let Some(t) = &f.since
        && Timestamp::parse_rfc3339(t).is_none()
    {
        return Err(ApiError::bad(
            format!("`{t}` is not an RFC 3339 time"),
            "write times like `2026-11-23T09:00:00Z`",
        ));
    }
    let store = st.store.clone();
    let device = f.device.clone();
    let list = blocking(move || {
        store.read(|tx| {
            let Some(all) = crate::mdm::activities(tx, &f)? else {
                return Ok(None);
            };
            if caller.team.is_none() {
                return Ok(Some(all));
            }
            // A team token sees what happened to its team's devices, nothing fleet-wide.
            let mut mine = Vec::with_capacity(all.len());
            for a in all {
                if let Some(d) = &a.device_id
                    && caller.reaches(tx, d)?
                {
                    mine.push(a);
                }
            }
            Ok(Some(mine))
        })
    })
    .await?;
    list.map(|l| Json(l).into_response()).ok_or_else(|| {
        ApiError::not_found(
            format!("no device `{}`", device.unwrap_or_default()),
            DEVICES_HINT,
        )
    })
}
