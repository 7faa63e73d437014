//! Who is calling: the identity certificate a request presents, whether a store CA vouches for
//! it, and whether it is the certificate recorded for the device it claims to be.
//!
//! Refusals are 400 (no or malformed identity, a body that does not match its signature) or
//! 403 (an identity that is untrusted, expired, another device's, or not the one recorded),
//! never 401, which can make a device unenroll. The reason is logged, not sent.

use axum::http::StatusCode;
use tracing::warn;

use super::trust::{Credential, VerifyError};
use super::{AppState, MdmRequest, Reply};
use crate::apple::checkin::ChannelId;
use crate::pki::identity::{self, IdentityError, Verified};
use crate::store::{DeviceAuth, NewActivity, StoreError, Tx};

/// Before the body is read: refuse a request that presents no identity, or one no store CA
/// vouches for (for `Mdm-Signature`, the certificate it carries; the signature over the body is
/// checked by [`handle`]). A request refused here is never read, whatever its size.
pub(crate) fn vouch(
    st: &AppState,
    signature: Option<&str>,
    peer: Option<&openssl::x509::X509>,
    header_cert: Option<&str>,
) -> Result<(), Reply> {
    let store = st.store.as_ref();
    let checked = if let Some(sig) = signature {
        st.trust.vouch_for_signer(store, sig)
    } else if let Some(cert) = peer {
        st.trust
            .check(store, Credential::Peer(cert.clone()))
            .map(|_| ())
    } else if let Some(h) = header_cert.filter(|_| st.config.client_cert_header.is_some()) {
        identity::cert_header_der(h)
            .map_err(VerifyError::Identity)
            .and_then(|der| st.trust.check(store, Credential::Der(der)))
            .map(|_| ())
    } else {
        Err(VerifyError::Identity(IdentityError::Missing))
    };
    checked.map_err(refusal)
}

/// The reply to an identity that is not accepted.
pub(crate) fn refusal(e: VerifyError) -> Reply {
    match e {
        VerifyError::Store(e) => store_failure(e),
        VerifyError::Identity(e) => {
            // A body that does not match its signature, or a malformed one, is a bad request;
            // a certificate we do not accept is forbidden.
            let (status, reason) = match e {
                IdentityError::SignatureMismatch => (StatusCode::BAD_REQUEST, "signature_mismatch"),
                IdentityError::BadSignatureEncoding(_) => {
                    (StatusCode::BAD_REQUEST, "bad_signature_encoding")
                }
                IdentityError::BadHeader(_) => (StatusCode::BAD_REQUEST, "bad_certificate_header"),
                IdentityError::Missing => (StatusCode::BAD_REQUEST, "no_identity"),
                IdentityError::Untrusted { .. } => (StatusCode::FORBIDDEN, "untrusted"),
                IdentityError::OpenSsl(_) => (StatusCode::FORBIDDEN, "crypto_error"),
            };
            crate::metrics::refused(reason);
            warn!(reason = %e, %status, "refused a request: identity not accepted");
            Reply::Refuse(status, e.to_string())
        }
    }
}

/// What the request proves its identity with: `Mdm-Signature` first (it also proves the body),
/// then the TLS client certificate, then the proxy's header.
pub(crate) fn credential<'a>(
    st: &AppState,
    req: &'a MdmRequest,
) -> Result<Credential<'a>, IdentityError> {
    if let Some(sig) = &req.signature {
        return Ok(Credential::Signature {
            header: sig,
            body: &req.body,
        });
    }
    if let Some(cert) = &req.peer {
        return Ok(Credential::Peer(cert.clone()));
    }
    if st.config.client_cert_header.is_some()
        && let Some(h) = &req.header_cert
    {
        return identity::cert_header_der(h).map(Credential::Der);
    }
    Err(IdentityError::Missing)
}

/// A device's request that the store could not serve. When the store is unreachable, busy or
/// overloaded, 503 with `Retry-After`: the device comes back later and nothing about its
/// enrollment changed. Anything else is a fault of ours: 500, logged as an error.
pub(crate) fn store_failure(e: StoreError) -> Reply {
    match e {
        StoreError::Unreachable(_)
        | StoreError::Open { .. }
        | StoreError::PoolExhausted { .. }
        | StoreError::Busy
        | StoreError::Contention { .. } => {
            tracing::warn!(error = %e, "the store cannot serve a device now; asked it to retry");
            Reply::Unavailable {
                retry_after: RETRY_AFTER_SECONDS,
                reason: e.to_string(),
            }
        }
        e => {
            tracing::error!(error = %e, "store error while serving a device");
            Reply::Refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

/// How a reply counts in `/metrics`.
pub(crate) fn outcome(reply: &Reply) -> crate::metrics::Outcome {
    use crate::metrics::Outcome;
    match reply {
        Reply::Empty | Reply::Plist(_) | Reply::Json(_) => Outcome::Ok,
        Reply::Unavailable { .. } => Outcome::Unavailable,
        Reply::Refuse(s, _) if s.is_server_error() => Outcome::Error,
        Reply::Refuse(..) => Outcome::Refused,
    }
}

/// What a 503 asks a device to wait, in seconds.
pub(crate) const RETRY_AFTER_SECONDS: u32 = 30;

/// What authorizing a request found out, beyond "yes".
#[derive(Default)]
pub(crate) struct Authorized {
    pub auth: Option<DeviceAuth>,
    /// The identity still has to be written (retro-association).
    pub bind: bool,
    /// This is an imported device's first authenticated request since the cutover.
    pub first_contact: bool,
    /// The device presents the identity its outstanding renewal gave it.
    pub renewed: bool,
}

impl Authorized {
    /// Whether authorizing needs a write.
    pub fn needs_write(&self) -> bool {
        self.bind || self.first_contact || self.renewed
    }
}

/// Check the verified certificate is the one recorded for this device (every message but
/// Authenticate). Read-only: [`record`] writes what it found.
pub(crate) fn authorize(
    st: &AppState,
    tx: &mut dyn Tx,
    channel: &ChannelId,
    v: &Verified,
) -> Result<Result<Authorized, Reply>, StoreError> {
    let Some(auth) = tx.device_auth(&channel.device_id, Some(&channel.id))? else {
        warn!(device = %channel.device_id, "refused: unknown device (neither enrolled here nor imported)");
        crate::metrics::refused("unknown_device");
        return Ok(Err(Reply::Refuse(
            StatusCode::FORBIDDEN,
            "unknown device".into(),
        )));
    };
    let mut out = Authorized::default();
    match auth.identity_sha256.as_deref() {
        Some(h) if h == v.sha256 => {}
        Some(_)
            if crate::reconcile::renewal::is_renewal(
                tx,
                &channel.device_id,
                v.by_issuing_ca,
                &v.sha256,
            )? =>
        {
            out.renewed = true;
        }
        Some(h) => {
            warn!(
                device = %channel.device_id,
                presented = %&v.sha256[..16],
                recorded = %&h[..h.len().min(16)],
                "refused: the identity certificate is not the one recorded for this device"
            );
            crate::metrics::refused("identity_mismatch");
            return Ok(Err(Reply::Refuse(
                StatusCode::FORBIDDEN,
                "identity mismatch".into(),
            )));
        }
        None => {
            if !(auth.imported() && st.config.allow_retro_association) {
                warn!(
                    device = %channel.device_id,
                    "refused: no identity recorded for this device (import its certificate hash, or run with --allow-retro-association)"
                );
                crate::metrics::refused("no_recorded_identity");
                return Ok(Err(Reply::Refuse(
                    StatusCode::FORBIDDEN,
                    "no recorded identity".into(),
                )));
            }
            if let Some(other) = tx.device_by_identity(&v.sha256)? {
                warn!(device = %channel.device_id, other = %other, "refused: the certificate is bound to another device");
                crate::metrics::refused("bound_to_another_device");
                return Ok(Err(Reply::Refuse(
                    StatusCode::FORBIDDEN,
                    "certificate bound to another device".into(),
                )));
            }
            out.bind = true;
        }
    }
    out.first_contact = auth.imported() && auth.migrated_at.is_none();
    out.auth = Some(auth);
    Ok(Ok(out))
}

/// Write what [`authorize`] decided: a retro-association, the first contact after cutover.
pub(crate) fn record(
    tx: &mut dyn Tx,
    channel: &ChannelId,
    v: &Verified,
    a: &Authorized,
) -> Result<(), StoreError> {
    if a.bind {
        tx.bind_identity(&channel.device_id, &v.sha256, Some(v.not_after))?;
        tx.record_activity(&NewActivity {
            actor: "serve".into(),
            kind: "device.retro_associated".into(),
            device_id: Some(channel.device_id.clone()),
            summary: format!(
                "bound the first valid identity certificate presented by imported device {} (--allow-retro-association)",
                channel.device_id
            ),
            details: serde_json::json!({ "sha256": v.sha256, "not_after": v.not_after }),
        })?;
    }
    if a.renewed {
        crate::reconcile::renewal::complete(tx, &channel.device_id, &v.sha256, v.not_after)?;
    }
    if a.first_contact && tx.mark_migrated(&channel.device_id)? {
        tx.record_activity(&NewActivity {
            actor: "serve".into(),
            kind: "device.migrated".into(),
            device_id: Some(channel.device_id.clone()),
            summary: format!("first contact after cutover from {}", channel.device_id),
            details: serde_json::json!({ "sha256": v.sha256 }),
        })?;
        // Its profiles are delivered (and the old MDM's listed) from now on.
        tx.mark_dirty(std::slice::from_ref(&channel.device_id))?;
    }
    Ok(())
}
