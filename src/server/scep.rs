//! SCEP (RFC 8894) over HTTP: `GetCACaps`, `GetCACert`, and `PKIOperation` (PKCSReq with a
//! challenge, RenewalReq signed by an identity any trusted CA issued) by GET or POST.
//! Certificates are issued by the store's issuing CA; failures are CertRep messages with
//! pkiStatus FAILURE and a failInfo, so clients learn why.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use openssl::memcmp;
use tracing::{info, warn};

use super::AppState;
use crate::pki::CertInfo;
use crate::pki::identity::Presented;
use crate::pki::scep::{self, FailInfo, RequestKind, ScepRequest};
use crate::store::{Issued, IssuedHow, NewActivity};
use crate::timestamp::Timestamp;

pub(crate) async fn endpoint(
    State(st): State<Arc<AppState>>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: axum::http::HeaderMap,
    method: Method,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Some(r) = st.over_enroll_rate(st.client_ip(&headers, client.map(|c| c.0.0))) {
        return r;
    }
    let op = q.get("operation").map(String::as_str).unwrap_or("");
    match op {
        "GetCACaps" => ([(header::CONTENT_TYPE, "text/plain")], scep::ca_caps()).into_response(),
        "GetCACert" | "PKIOperation" => {
            let st2 = st.clone();
            let op = op.to_string();
            let message = q.get("message").cloned();
            let r = tokio::task::spawn_blocking(move || {
                if op == "GetCACert" {
                    ca_cert(&st2)
                } else {
                    let der = if method == Method::POST {
                        Ok(body.to_vec())
                    } else {
                        message
                            .as_deref()
                            .ok_or_else(|| "PKIOperation by GET needs `message`".to_string())
                            .and_then(|m| scep::decode_get_message(m).map_err(|e| e.to_string()))
                    };
                    match der {
                        Ok(der) => pki_operation(&st2, &der),
                        Err(e) => {
                            warn!(error = %e, "SCEP: unreadable PKIOperation");
                            (StatusCode::BAD_REQUEST, "bad message").into_response()
                        }
                    }
                }
            })
            .await;
            r.unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        other => {
            warn!(operation = %other, "SCEP: unknown operation");
            (StatusCode::BAD_REQUEST, "unknown operation").into_response()
        }
    }
}

fn ca_cert(st: &AppState) -> Response {
    let loaded = match st.trust.current(st.store.as_ref()) {
        Ok(l) => l,
        Err(e) => return super::device::store_failure(e).into_response(),
    };
    let Some((ca, _)) = &loaded.issuing else {
        warn!("SCEP: no issuing CA in the store");
        return (StatusCode::SERVICE_UNAVAILABLE, "no CA").into_response();
    };
    // One certificate, not a chain: what Apple devices handle best.
    match scep::ca_cert_response(std::slice::from_ref(ca)) {
        Ok((ct, body)) => ([(header::CONTENT_TYPE, ct)], body).into_response(),
        Err(e) => {
            warn!(error = %e, "SCEP: cannot encode the CA");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn pki_message(der: Vec<u8>) -> Response {
    (
        [(header::CONTENT_TYPE, scep::CONTENT_TYPE_PKI_MESSAGE)],
        der,
    )
        .into_response()
}

fn pki_operation(st: &AppState, der: &[u8]) -> Response {
    let req = match ScepRequest::parse(der) {
        Ok(r) => r,
        Err(e) => {
            // An unverifiable message cannot be answered with a signed CertRep.
            warn!(error = %e, "SCEP: refused a PKIOperation that does not verify");
            return (StatusCode::BAD_REQUEST, "bad message").into_response();
        }
    };
    let loaded = match st.trust.current(st.store.as_ref()) {
        Ok(l) => l,
        Err(e) => return super::device::store_failure(e).into_response(),
    };
    let Some((ca, key)) = &loaded.issuing else {
        warn!("SCEP: no issuing CA in the store");
        return (StatusCode::SERVICE_UNAVAILABLE, "no CA").into_response();
    };
    let fail = |info: FailInfo, why: &str| {
        warn!(transaction = %req.transaction_id(), reason = why, fail_info = ?info, "SCEP: request refused");
        match scep::cert_rep_failure(&req, info, ca, key) {
            Ok(der) => pki_message(der),
            Err(e) => {
                warn!(error = %e, "SCEP: cannot build the failure reply");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    };
    let csr = match req.decrypt(ca, key) {
        Ok(c) => c,
        Err(e) => return fail(e.fail_info(), &e.to_string()),
    };
    // The one-time challenge used, to remember what was issued under it; for a renewal, the
    // device its signing identity identified.
    let mut one_time = None;
    let mut renewed_device = None;
    let how = match csr.kind {
        RequestKind::PkcsReq => match check_challenge(st, csr.challenge_password.as_deref()) {
            Ok(Some(hash)) => {
                one_time = Some(hash);
                IssuedHow::OneTime
            }
            Ok(None) => IssuedHow::Static,
            Err(why) => return fail(FailInfo::BadRequest, &why),
        },
        RequestKind::RenewalReq => {
            // The request is signed by the identity being renewed: it must be one we trust.
            let Some(old) = csr.renewal_identity() else {
                return fail(FailInfo::BadRequest, "renewal without an identity");
            };
            let presented = Presented {
                cert: old.clone(),
                chain: Vec::new(),
                via: "SCEP RenewalReq",
            };
            match loaded.anchors.verify(&presented) {
                Ok(v) => match st.store.read(|tx| tx.device_by_identity(&v.sha256)) {
                    Ok(d) => renewed_device = d,
                    Err(e) => return super::device::store_failure(e).into_response(),
                },
                Err(e) => return fail(FailInfo::BadCertId, &e.to_string()),
            }
            IssuedHow::Renewal
        }
    };
    let issued = match scep::issue_certificate(&csr.csr, ca, key, st.config.scep_validity_days) {
        Ok(c) => c,
        Err(e) => return fail(FailInfo::BadRequest, &e.to_string()),
    };
    let info = CertInfo::of(&issued);
    let reply = match scep::cert_rep_success(&req, &issued, ca, key) {
        Ok(der) => der,
        Err(e) => return fail(FailInfo::BadRequest, &e.to_string()),
    };
    // What the certificate was issued under is what lets it bind to a device at Authenticate:
    // without the record the device could not use it, so it is refused and asks again later.
    let i = match info {
        Ok(i) => i,
        Err(e) => return fail(FailInfo::BadRequest, &e.to_string()),
    };
    let how_text = how.as_str();
    info!(subject = %i.subject, serial = %i.serial, how = how_text, "SCEP: issued an identity");
    let recorded = st.store.write(|tx| {
        if let Some(hash) = &one_time {
            tx.set_challenge_issued(hash, &i.sha256)?;
        }
        tx.record_issued(&Issued {
            sha256: i.sha256.clone(),
            how,
            challenge_sha256: one_time.clone(),
            device_id: renewed_device.clone(),
            issued_at: Timestamp::now(),
            not_after: i.not_after,
        })?;
        tx.record_activity(&NewActivity {
            actor: "serve".into(),
            kind: "scep.issued".into(),
            device_id: renewed_device.clone(),
            summary: format!("issued an identity certificate to {} ({how_text})", i.subject),
            details: serde_json::json!({ "subject": i.subject, "serial": i.serial, "sha256": i.sha256, "not_after": i.not_after, "how": how_text }),
        })
    });
    if let Err(e) = recorded {
        warn!(error = %e, "SCEP: cannot record the issued identity");
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    pki_message(reply)
}

/// A PKCSReq must carry the static challenge (compared in constant time) or an unused
/// one-time challenge minted by `/enroll`, the API or a renewal; `Some(its SHA-256)` for a
/// one-time challenge.
fn check_challenge(st: &AppState, presented: Option<&str>) -> Result<Option<String>, String> {
    let Some(p) = presented.filter(|p| !p.is_empty()) else {
        return Err("no challenge password".into());
    };
    if let Some(fixed) = &st.config.scep_challenge
        && fixed.len() == p.len()
        && memcmp::eq(fixed.as_bytes(), p.as_bytes())
    {
        return Ok(None);
    }
    let hash = crate::secrets::credential_hash(p);
    match st.store.write(|tx| tx.use_scep_challenge(&hash)) {
        Ok(Some(_)) => Ok(Some(hash)),
        Ok(None) => Err("wrong, used or expired challenge".into()),
        Err(e) => Err(format!("store: {e}")),
    }
}
