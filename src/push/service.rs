//! Pushing to enrollments by ID: load their push credentials and the active push certificate
//! from the store, push over one long-lived client per certificate, and act on what APNs says
//! (410 Unregistered disables the channel; BadDeviceToken / DeviceTokenNotForTopic is recorded
//! on it; certificate problems are reported once, not per device).

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::{ApnsClient, ApnsConfig, DeviceToken, PushIdentity, PushOutcome, PushTarget, Pusher};
use crate::pki;
use crate::store::{AssetKind, NewActivity, PushCreds, Store, StoreError};
use crate::timestamp::Timestamp;

/// What a push round did, per outcome.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct PushSummary {
    pub requested: usize,
    pub delivered: usize,
    /// Channels with no push token yet (or disabled): nothing to send.
    pub not_pushable: Vec<String>,
    /// Channels on another topic than the push certificate's.
    pub wrong_topic: Vec<String>,
    /// 410: disabled.
    pub unregistered: Vec<String>,
    /// 400 BadDeviceToken / DeviceTokenNotForTopic.
    pub bad_token: Vec<String>,
    /// Everything else that failed, with the reason.
    pub failed: Vec<(String, String)>,
    /// A problem with the push certificate itself (every device fails the same way).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_problem: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("no APNs push certificate in the store")]
    NoCertificate,
    #[error("the push certificate cannot be used: {0}")]
    Identity(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl crate::diagnose::Diagnose for PushError {
    fn hint(&self) -> Option<String> {
        match self {
            PushError::NoCertificate => {
                Some("install it with `mdmctl set mdm-apple --apns-cert FILE`".into())
            }
            PushError::Identity(_) => {
                Some("check `mdmctl get mdm-apple`; renew the certificate if it expired".into())
            }
            PushError::Store(e) => crate::diagnose::Diagnose::hint(e),
        }
    }
}

/// One per server (or CLI invocation): keeps the APNs client for the active certificate.
pub struct PushService {
    store: Arc<dyn Store>,
    config: ApnsConfig,
    client: Mutex<Option<(String, Arc<dyn Pusher>)>>,
}

impl PushService {
    pub fn new(store: Arc<dyn Store>, config: ApnsConfig) -> Self {
        Self {
            store,
            config,
            client: Mutex::new(None),
        }
    }

    /// A service whose pushes go through `pusher` (tests and benchmarks).
    pub fn with_pusher(store: Arc<dyn Store>, pusher: Arc<dyn Pusher>) -> Self {
        Self {
            store,
            config: ApnsConfig::default(),
            client: Mutex::new(Some(("fixed".into(), pusher))),
        }
    }

    /// The client for the store's active push certificate, built on first use and rebuilt
    /// when the certificate changes.
    async fn pusher(&self) -> Result<Arc<dyn Pusher>, PushError> {
        let store = self.store.clone();
        let active = tokio::task::spawn_blocking(move || {
            store.read(|tx| -> Result<_, StoreError> {
                let Some(a) = tx.active_asset(AssetKind::Apns)? else {
                    return Ok(None);
                };
                Ok(Some(a))
            })
        })
        .await
        .map_err(|e| PushError::Identity(e.to_string()))??;
        let mut guard = self.client.lock().await;
        if let Some((fp, p)) = guard.as_ref()
            && (fp == "fixed"
                || active.as_ref().and_then(|a| a.sha256.as_deref()) == Some(fp.as_str()))
        {
            return Ok(p.clone());
        }
        let asset = active.ok_or(PushError::NoCertificate)?;
        let store = self.store.clone();
        let id = asset.id;
        let key = tokio::task::spawn_blocking(move || store.read(|tx| tx.asset_key(id)))
            .await
            .map_err(|e| PushError::Identity(e.to_string()))??
            .ok_or(PushError::NoCertificate)?;
        let cert_pem = asset.cert_pem.clone().ok_or(PushError::NoCertificate)?;
        let certs = pki::parse_certs(cert_pem.as_bytes())
            .map_err(|e| PushError::Identity(e.to_string()))?;
        let key =
            pki::load_private_key(&key, None).map_err(|e| PushError::Identity(e.to_string()))?;
        let mut it = certs.into_iter();
        let leaf = it.next().ok_or(PushError::NoCertificate)?;
        let identity = PushIdentity::from_parts(leaf, it.collect(), key)
            .map_err(|e| PushError::Identity(e.to_string()))?;
        let client: Arc<dyn Pusher> = Arc::new(
            ApnsClient::new(&identity, self.config.clone())
                .map_err(|e| PushError::Identity(e.to_string()))?,
        );
        info!(topic = %client.topic(), "APNs client ready");
        *guard = Some((asset.sha256.unwrap_or_default(), client.clone()));
        Ok(client)
    }

    /// Push to these channels, record what APNs answered, and take them out of the push
    /// outbox (those whose push failed for a reason that may pass stay in it, for the `push`
    /// job to try again later).
    pub async fn push(&self, enrollment_ids: &[String]) -> Result<PushSummary, PushError> {
        let started = Timestamp::now();
        // Claimed first (their outbox time moved to now): the `push` job leaves them alone
        // while this push is under way, however long a large one takes.
        let store = self.store.clone();
        let ids = enrollment_ids.to_vec();
        let claimed = tokio::task::spawn_blocking(move || {
            store.write_rows(|tx| tx.retry_push_outbox(&ids, started))
        })
        .await;
        if let Ok(Err(e)) = claimed {
            tracing::debug!(error = %e, "cannot claim the push outbox rows");
        }
        let result = self.push_now(enrollment_ids).await;
        let retry: Vec<String> = match &result {
            Ok(s) => s.failed.iter().map(|(id, _)| id.clone()).collect(),
            Err(_) => enrollment_ids.to_vec(),
        };
        let again: std::collections::HashSet<&str> = retry.iter().map(String::as_str).collect();
        let done: Vec<String> = enrollment_ids
            .iter()
            .filter(|id| !again.contains(id.as_str()))
            .cloned()
            .collect();
        let store = self.store.clone();
        let outbox = tokio::task::spawn_blocking(move || {
            store.write_rows(|tx| -> Result<(), StoreError> {
                tx.clear_push_outbox(&done, started)?;
                tx.retry_push_outbox(&retry, Timestamp::now())
            })
        })
        .await;
        if let Ok(Err(e)) = outbox {
            // The worst that follows is a second push of the same channels by the `push` job.
            tracing::debug!(error = %e, "cannot update the push outbox");
        }
        result
    }

    async fn push_now(&self, enrollment_ids: &[String]) -> Result<PushSummary, PushError> {
        let mut summary = PushSummary {
            requested: enrollment_ids.len(),
            ..Default::default()
        };
        if enrollment_ids.is_empty() {
            return Ok(summary);
        }
        let store = self.store.clone();
        let ids = enrollment_ids.to_vec();
        let creds: Vec<PushCreds> =
            tokio::task::spawn_blocking(move || store.read(|tx| tx.push_targets(&ids)))
                .await
                .map_err(|e| PushError::Identity(e.to_string()))??;
        let pushable: std::collections::HashSet<&str> =
            creds.iter().map(|c| c.enrollment_id.as_str()).collect();
        summary.not_pushable = enrollment_ids
            .iter()
            .filter(|id| !pushable.contains(id.as_str()))
            .cloned()
            .collect();
        crate::metrics::push("not_pushable", summary.not_pushable.len() as u64);
        if creds.is_empty() {
            return Ok(summary);
        }
        let pusher = self.pusher().await?;
        let mut targets = Vec::with_capacity(creds.len());
        let mut sent: Vec<&PushCreds> = Vec::with_capacity(creds.len());
        for c in &creds {
            if c.topic != pusher.topic() {
                summary.wrong_topic.push(c.enrollment_id.clone());
                continue;
            }
            match DeviceToken::from_bytes(c.token.to_vec()) {
                Ok(token) => {
                    targets.push(PushTarget::new(token, c.push_magic.as_str()));
                    sent.push(c);
                }
                Err(e) => summary
                    .failed
                    .push((c.enrollment_id.clone(), e.to_string())),
            }
        }
        crate::metrics::push("wrong_topic", summary.wrong_topic.len() as u64);
        if !summary.wrong_topic.is_empty() {
            warn!(count = summary.wrong_topic.len(), topic = %pusher.topic(), "channels on another topic than the push certificate's were not pushed");
        }
        let outcomes = pusher.push_many(&targets).await;
        let mut unregistered = Vec::new();
        let mut bad = Vec::new();
        for (c, outcome) in sent.iter().zip(outcomes) {
            crate::metrics::push(metric_label(&outcome), 1);
            match outcome {
                PushOutcome::Delivered { .. } => summary.delivered += 1,
                PushOutcome::Unregistered { .. } => unregistered.push(c.enrollment_id.clone()),
                PushOutcome::BadToken { reason } => bad.push((c.enrollment_id.clone(), reason)),
                o if o.affects_all_devices() => {
                    summary
                        .certificate_problem
                        .get_or_insert_with(|| format!("{o:?}"));
                    summary
                        .failed
                        .push((c.enrollment_id.clone(), format!("{o:?}")));
                }
                PushOutcome::Rejected { status, reason } => summary
                    .failed
                    .push((c.enrollment_id.clone(), format!("{status} {reason}"))),
                PushOutcome::CertificateRefused { reason } | PushOutcome::Failed { reason } => {
                    summary.failed.push((c.enrollment_id.clone(), reason))
                }
            }
        }
        if let Some(p) = &summary.certificate_problem {
            warn!(problem = %p, "APNs refused the push certificate: no device can be woken");
        }
        if !unregistered.is_empty() || !bad.is_empty() {
            let store = self.store.clone();
            let (u, b) = (unregistered.clone(), bad.clone());
            tokio::task::spawn_blocking(move || {
                store.write(|tx| -> Result<(), StoreError> {
                    for id in &u {
                        tx.set_enrollment_enabled(id, false)?;
                        tx.record_push_error(id, Some("Unregistered"))?;
                        tx.record_activity(&NewActivity {
                            actor: "serve".into(),
                            kind: "push.unregistered".into(),
                            device_id: Some(id.split(':').next().unwrap_or(id).to_string()),
                            summary: format!(
                                "APNs says {id} is no longer registered (410): channel disabled"
                            ),
                            details: serde_json::json!({ "channel": id }),
                        })?;
                    }
                    for (id, reason) in &b {
                        tx.record_push_error(id, Some(reason))?;
                    }
                    Ok(())
                })
            })
            .await
            .map_err(|e| PushError::Identity(e.to_string()))??;
        }
        summary.unregistered = unregistered;
        summary.bad_token = bad.into_iter().map(|(id, _)| id).collect();
        Ok(summary)
    }
}

/// How a push's outcome is counted in `/metrics`: `delivered`, or APNs's reason.
fn metric_label(o: &PushOutcome) -> &str {
    match o {
        PushOutcome::Delivered { .. } => "delivered",
        PushOutcome::Unregistered { .. } => "Unregistered",
        PushOutcome::BadToken { reason } | PushOutcome::Rejected { reason, .. } => reason,
        PushOutcome::CertificateRefused { .. } => "certificate_refused",
        PushOutcome::Failed { .. } => "network",
    }
}
