//! Automated enrollment: the URL of the enrollment profile Apple Business Manager hands a new
//! Mac (`abm::profile::ENROLL_PATH`, and Fleet's path). The Mac sends its MachineInfo, signed by
//! its Apple device certificate: in the `x-apple-aspen-deviceinfo` header of a GET (or
//! `?deviceinfo=`), or as the body of a POST (`application/pkcs7-signature`). The signature and
//! its issuer are checked (`apple::machine_info`); the serial must be an ABM device assigned to
//! this server and not deleted; the answer is the signed enrollment profile with a one-time SCEP
//! challenge scoped to that device (its UDID) and the team ABM assigned it, so the Mac joins
//! that team at Authenticate. Anything else is refused (403, with an activity for an unknown
//! serial) and nothing is minted.
//!
//! The body is read within 64 KiB and `serve`'s body timeout. A GET without device information
//! is the profile download of `/enroll` (MicroMDM answered both on
//! `/mdm/enroll`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tracing::{info, warn};

use super::AppState;
use crate::apple::machine_info::{self, MachineInfo};
use crate::store::{ChallengePurpose, ChallengeScope, NewActivity};

pub(crate) const DEVICEINFO_HEADER: &str = "x-apple-aspen-deviceinfo";

pub(crate) async fn endpoint(
    State(st): State<Arc<AppState>>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    method: Method,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > machine_info::MAX_BYTES as u64) {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the device information is too large",
        );
    }
    let der = if method == Method::POST {
        // Bounded in size and in time: a Mac sends a few kilobytes at once.
        match super::read_body(body, machine_info::MAX_BYTES, st.config.body_timeout).await {
            Ok(b) => Ok(b.to_vec()),
            Err(status) => return status.into_response(),
        }
    } else {
        let value = headers
            .get(DEVICEINFO_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| q.get("deviceinfo").cloned());
        match value {
            Some(v) => machine_info::decode_header(&v),
            None => {
                // No device information: the plain profile download.
                let token = q.get("token").cloned();
                let query = super::enroll::EnrollQuery { token };
                return super::enroll::profile(State(st), client, Query(query), headers).await;
            }
        }
    };
    if let Some(r) = st.over_enroll_rate(st.client_ip(&headers, client.map(|c| c.0.0))) {
        return r;
    }
    let st2 = st.clone();
    tokio::task::spawn_blocking(move || match der {
        Ok(der) => answer(&st2, &der),
        Err(e) => refuse(StatusCode::BAD_REQUEST, &e.to_string()),
    })
    .await
    .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn refuse(status: StatusCode, why: &str) -> Response {
    warn!(reason = why, "automated enrollment refused");
    (status, format!("{why}\n")).into_response()
}

fn answer(st: &AppState, der: &[u8]) -> Response {
    let info: MachineInfo = match machine_info::verify(der, &st.config.machine_info_cas) {
        Ok(i) => i,
        Err(e @ machine_info::MachineInfoError::NotApple(_)) => {
            return refuse(StatusCode::FORBIDDEN, &e.to_string());
        }
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let found = st.store.read(|tx| {
        let abm = tx.abm_device(&info.serial)?;
        let team_id = match abm.as_ref().and_then(|d| d.team.clone()) {
            Some(name) => tx
                .teams()?
                .into_iter()
                .find(|t| t.name == name)
                .map(|t| t.id),
            None => None,
        };
        Ok::<_, crate::store::StoreError>((abm, team_id))
    });
    let (abm, team_id) = match found {
        Ok(f) => f,
        Err(e) => return super::device::store_failure(e).into_response(),
    };
    let Some(abm) = abm.filter(|d| !d.deleted) else {
        let recorded = st.store.write(|tx| {
            tx.record_activity(&NewActivity {
                actor: "serve".into(),
                kind: "abm.enroll_refused".into(),
                device_id: None,
                summary: format!(
                    "refused the automated enrollment of {} ({}): not an Apple Business Manager device assigned to this server",
                    info.serial,
                    info.product.as_deref().unwrap_or("device")
                ),
                details: serde_json::json!({
                    "serial": info.serial, "udid": info.udid, "product": info.product,
                    "os_version": info.os_version,
                }),
            })
        });
        if let Err(e) = recorded {
            warn!(error = %e, "cannot record the refused enrollment");
        }
        return refuse(
            StatusCode::FORBIDDEN,
            "this device is not assigned to this MDM server in Apple Business Manager",
        );
    };
    let scope = ChallengeScope {
        purpose: ChallengePurpose::Enroll,
        device_id: Some(info.udid.clone()),
        team_id,
        enroll_secret_id: None,
    };
    let response = super::enroll::signed_profile(st, &scope, "serve automated enrollment");
    if response.status().is_success() {
        let migration = abm.migration_deadline.clone();
        info!(serial = %info.serial, udid = %info.udid, "served an automated enrollment profile");
        let recorded = st.store.write(|tx| {
            tx.record_activity(&NewActivity {
                actor: "serve".into(),
                kind: "abm.enroll".into(),
                device_id: Some(info.udid.clone()),
                summary: format!(
                    "{} ({}, {}) started automated enrollment into {}{}",
                    info.serial,
                    info.product.as_deref().unwrap_or("device"),
                    info.os_version.as_deref().unwrap_or("unknown OS"),
                    abm.team
                        .as_deref()
                        .map_or_else(|| "no team".to_string(), |t| format!("team {t}")),
                    migration
                        .as_deref()
                        .map(|d| format!(" (ABM migration deadline {d})"))
                        .unwrap_or_default()
                ),
                details: serde_json::json!({
                    "serial": info.serial, "udid": info.udid, "product": info.product,
                    "os_version": info.os_version, "team": abm.team,
                    "mdm_migration_deadline": migration,
                }),
            })
        });
        if let Err(e) = recorded {
            warn!(error = %e, "cannot record the automated enrollment");
        }
    }
    response
}
