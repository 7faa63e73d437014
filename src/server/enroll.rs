//! Enrollment for new devices and standard (re-enrolling) migrations: `/enroll` serves a signed
//! enrollment profile to whoever presents an enrollment secret (`/enroll?token=SECRET`, or basic
//! auth with the secret as password), `/` a plain page telling a user how to install it.
//!
//! Without a secret `/enroll` is refused (401, asking for basic auth) and nothing is written,
//! unless `serve --open-enrollment`. The one-time SCEP challenge in the profile carries the
//! secret's scope (its team, and its device when the secret is for one device), which decides
//! what the identity SCEP issues under it may do at Authenticate.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use tracing::{info, warn};
use zeroize::Zeroizing;

use super::AppState;
use crate::apple::enroll::{EnrollmentProfile, ScepPayload};
use crate::pki;
use crate::store::{ChallengePurpose, ChallengeScope, EnrollSecret, StoreError};
use crate::timestamp::Timestamp;

#[derive(serde::Deserialize)]
pub(crate) struct EnrollQuery {
    pub(crate) token: Option<String>,
}

/// The enrollment secret a request presents: `?token=` or basic auth's password.
fn presented_secret(q: &EnrollQuery, headers: &HeaderMap) -> Option<Zeroizing<String>> {
    if let Some(t) = q.token.as_deref().filter(|t| !t.is_empty()) {
        return Some(Zeroizing::new(t.to_string()));
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = auth.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?,
    );
    let text = std::str::from_utf8(&decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(Zeroizing::new(password.to_string())).filter(|p| !p.is_empty())
}

fn needs_secret(what: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"device enrollment\", charset=\"UTF-8\"",
        )],
        format!("{what}: ask your IT team for the enrollment link\n"),
    )
        .into_response()
}

pub(crate) async fn profile(
    State(st): State<Arc<AppState>>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    Query(q): Query<EnrollQuery>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = st.over_enroll_rate(st.client_ip(&headers, client.map(|c| c.0.0))) {
        return r;
    }
    let secret = presented_secret(&q, &headers);
    if secret.is_none() && !st.config.open_enrollment {
        warn!("/enroll: refused a request without an enrollment secret");
        return needs_secret("enrollment needs an enrollment secret");
    }
    let st2 = st.clone();
    tokio::task::spawn_blocking(move || build(&st2, secret.as_deref().map(String::as_str)))
        .await
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn build(st: &AppState, secret: Option<&str>) -> Response {
    // The secret first: a wrong one learns nothing about the server's configuration.
    let found: Option<EnrollSecret> = match secret {
        None => None,
        Some(s) => {
            let hash = crate::secrets::credential_hash(s);
            match st.store.read(|tx| tx.enroll_secret_by_hash(&hash)) {
                Ok(Some(found)) => Some(found),
                Ok(None) => {
                    warn!("/enroll: refused an unknown, revoked or expired enrollment secret");
                    return needs_secret("this enrollment secret is not valid");
                }
                Err(e) => return super::device::store_failure(e).into_response(),
            }
        }
    };
    let scope = ChallengeScope {
        purpose: ChallengePurpose::Enroll,
        device_id: found.as_ref().and_then(|s| s.device_id.clone()),
        team_id: found.as_ref().and_then(|s| s.team_id),
        enroll_secret_id: found.as_ref().map(|s| s.id),
    };
    let response = signed_profile(st, &scope, "serve /enroll");
    if response.status().is_success()
        && let Some(s) = &found
    {
        let id = s.id;
        if let Err(e) = st.store.write(|tx| tx.touch_enroll_secret(id)) {
            warn!(error = %e, "/enroll: cannot record the secret's use");
        }
    }
    response
}

/// The signed enrollment profile, with a one-time SCEP challenge carrying `scope` (what the
/// identity issued under it may do at Authenticate); `what` names the endpoint in the store
/// and the log.
pub(crate) fn signed_profile(st: &AppState, scope: &ChallengeScope, what: &str) -> Response {
    let loaded = match st.trust.current(st.store.as_ref()) {
        Ok(l) => l,
        Err(e) => return super::device::store_failure(e).into_response(),
    };
    let (Some(topic), Some((ca, ca_key))) = (&loaded.topic, &loaded.issuing) else {
        warn!(
            endpoint = what,
            "the store needs an APNs push certificate and an issuing SCEP CA"
        );
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "enrollment is not configured yet: the server has no push certificate or no SCEP CA\n",
        )
            .into_response();
    };
    let challenge = match &st.config.scep_challenge {
        Some(c) => c.to_string(),
        None => match mint_challenge(st, scope, st.config.challenge_ttl, what) {
            Ok(c) => c.to_string(),
            Err(e) => return super::device::store_failure(e).into_response(),
        },
    };
    let url = &st.config.url;
    let profile = EnrollmentProfile {
        identifier: format!("{}.mdm.enrollment", reverse_dns(url)),
        display_name: format!("{} device management", st.config.organization),
        organization: st.config.organization.clone(),
        server_url: format!("{url}/mdm"),
        check_in_url: Some(format!("{url}/mdm")),
        topic: topic.clone(),
        scep: ScepPayload {
            url: format!("{url}/scep"),
            name: "mdmctl".into(),
            challenge: Some(challenge),
            subject: vec![
                ("O".into(), st.config.organization.clone()),
                ("CN".into(), "mdmctl device identity".into()),
            ],
            key_size: 2048,
            ca_fingerprint: ca
                .digest(openssl::hash::MessageDigest::sha256())
                .ok()
                .map(|d| d.to_vec()),
        },
        anchors: st
            .config
            .enroll_anchors
            .iter()
            .filter_map(|c| c.to_der().ok())
            .collect(),
        kept_payloads: Vec::new(),
        server_capabilities: Some(
            crate::apple::enroll::SERVER_CAPABILITIES
                .iter()
                .map(|c| c.to_string())
                .collect(),
        ),
        sign_message: true,
        check_out_when_removed: true,
        access_rights: crate::apple::enroll::ACCESS_RIGHTS_ALL,
    };
    let xml = profile.to_xml();
    let signed = match &st.config.profile_signer {
        Some((cert, key)) => pki::sign_attached(&xml, cert, key, &[]),
        None => pki::sign_attached(&xml, ca, ca_key, &[]),
    };
    match signed {
        Ok(der) => {
            info!(endpoint = what, "served an enrollment profile");
            (
                [
                    (header::CONTENT_TYPE, "application/x-apple-aspen-config"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"enroll.mobileconfig\"",
                    ),
                ],
                der,
            )
                .into_response()
        }
        Err(e) => {
            warn!(error = %e, endpoint = what, "cannot sign the enrollment profile");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// A one-time SCEP challenge valid for `ttl`: only its hash is stored, with its scope.
pub(crate) fn mint_challenge(
    st: &AppState,
    scope: &ChallengeScope,
    ttl: std::time::Duration,
    created_by: &str,
) -> Result<Zeroizing<String>, StoreError> {
    let (challenge, hash) =
        crate::secrets::new_credential("").map_err(|e| StoreError::Decode(e.to_string()))?;
    let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 4);
    let expires = Timestamp(Timestamp::now().0 + ttl);
    st.store
        .write(|tx| tx.add_scep_challenge(&hash, expires, created_by, scope))?;
    Ok(challenge)
}

/// `https://mdm.example.com:8443` → `com.example.mdm`.
fn reverse_dns(url: &str) -> String {
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split(['/', ':'])
        .next()
        .unwrap_or("mdmctl");
    let mut parts: Vec<&str> = host.split('.').filter(|p| !p.is_empty()).collect();
    parts.reverse();
    if parts.is_empty() {
        "mdmctl".into()
    } else {
        parts.join(".")
    }
}

pub(crate) async fn landing(
    State(st): State<Arc<AppState>>,
    Query(q): Query<EnrollQuery>,
) -> Html<String> {
    let org = html_escape(&st.config.organization);
    // The enrollment link a user was given (`/?token=…`) carries its secret to the download.
    let href = match q.token.as_deref().filter(|t| !t.is_empty()) {
        Some(t) => {
            let encoded: String = t
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            format!("/enroll?token={encoded}")
        }
        None => "/enroll".to_string(),
    };
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{org} device management</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:16px/1.5 -apple-system,system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em;color:#222}}a.button{{display:inline-block;padding:.6em 1.2em;background:#0a66d8;color:#fff;border-radius:6px;text-decoration:none}}</style>
</head><body>
<h1>Turn on device management</h1>
<p>{org} manages this Mac to keep it secure and up to date, so you don't have to: it can
install Wi-Fi and security settings, remind you about macOS updates, and keep your disk
encrypted. It cannot see your personal files, email or browsing.</p>
<h2>How to turn on MDM</h2>
<ol>
<li><a class="button" href="{href}">Download the enrollment profile</a></li>
<li>Open <b>System Settings</b> › <b>General</b> › <b>Device Management</b> (on macOS 12:
<b>System Preferences</b> › <b>Profiles</b>) and double-click the downloaded profile.</li>
<li>Select <b>Install</b> and enter your Mac's password when asked.</li>
</ol>
<p>If you don't see the profile or the install fails, contact your IT team.</p>
</body></html>
"#
    ))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    #[test]
    fn reverse_dns_of_the_server_url() {
        assert_eq!(
            super::reverse_dns("https://mdm.example.com:8443/"),
            "com.example.mdm"
        );
        assert_eq!(super::reverse_dns("http://127.0.0.1:8080"), "1.0.0.127");
    }
}
