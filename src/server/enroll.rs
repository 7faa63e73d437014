//! Enrollment for new devices and standard (re-enrolling) migrations: `/enroll` serves a signed
//! enrollment profile, `/` a plain page telling a user how to install it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use tracing::{info, warn};

use super::AppState;
use crate::apple::enroll::{EnrollmentProfile, ScepPayload};
use crate::pki;
use crate::timestamp::Timestamp;

/// How long a challenge minted for a downloaded profile stays usable.
const CHALLENGE_DAYS: i64 = 7;

pub(crate) async fn profile(State(st): State<Arc<AppState>>) -> Response {
    let st2 = st.clone();
    tokio::task::spawn_blocking(move || build(&st2))
        .await
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn build(st: &AppState) -> Response {
    let loaded = match st.trust.current(st.store.as_ref()) {
        Ok(l) => l,
        Err(e) => return super::device::store_failure(e).into_response(),
    };
    let (Some(topic), Some((ca, ca_key))) = (&loaded.topic, &loaded.issuing) else {
        warn!("/enroll: the store needs an APNs push certificate and an issuing SCEP CA");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "enrollment is not configured yet: the server has no push certificate or no SCEP CA\n",
        )
            .into_response();
    };
    let challenge = match &st.config.scep_challenge {
        Some(c) => c.to_string(),
        None => match mint_challenge(st) {
            Ok(c) => c,
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
            info!("/enroll: served an enrollment profile");
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
            warn!(error = %e, "/enroll: cannot sign the profile");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// A one-time SCEP challenge: 32 random bytes, only its hash is stored.
pub(crate) fn mint_challenge(st: &AppState) -> Result<String, crate::store::StoreError> {
    let mut raw = [0u8; 24];
    openssl::rand::rand_bytes(&mut raw)
        .map_err(|e| crate::store::StoreError::Decode(e.to_string()))?;
    let challenge = hex::encode(raw);
    let hash = hex::encode(openssl::sha::sha256(challenge.as_bytes()));
    st.store.write(|tx| {
        tx.add_scep_challenge(&hash, Timestamp::now().plus_days(CHALLENGE_DAYS), "serve")
    })?;
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

pub(crate) async fn landing(State(st): State<Arc<AppState>>) -> Html<String> {
    let org = html_escape(&st.config.organization);
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
<li><a class="button" href="/enroll">Download the enrollment profile</a></li>
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
