//! The APNs push certificate and the SCEP CAs: installing them with the checks that keep a
//! migrated fleet reachable, and reporting their state.
//!
//! The one rule that matters most: the push topic never changes by accident. Every enrolled
//! device only listens on the topic it enrolled with; a certificate with a new topic (made with
//! "Create" instead of "Renew" at identity.apple.com) silently strands all of them.

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use serde::Serialize;

use super::{AssetError, WARN_DAYS, check_validity};
use crate::pki::{self, CertInfo};
use crate::store::{AssetKind, AssetState, NewActivity, NewAsset, TopicCount, Tx};
use crate::timestamp::Timestamp;

/// What `set mdm-apple` was given (already parsed from files).
pub struct SetMdmApple {
    pub apns_cert: Option<X509>,
    pub apns_key: Option<PKey<Private>>,
    pub scep: Option<(X509, PKey<Private>)>,
    pub force: bool,
    pub actor: String,
}

/// What `set mdm-apple` did.
#[derive(Clone, Debug, Serialize)]
pub struct SetOutcome {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apns: Option<CertInfo>,
    /// True when the certificate was already the active one.
    pub apns_unchanged: bool,
    /// Set when `--force` overrode a topic change: the topics it replaced.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub topic_overridden: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scep_ca: Option<CertInfo>,
    pub warnings: Vec<String>,
}

/// Install a push certificate and/or a SCEP CA, all in the caller's transaction.
pub fn set_mdm_apple(tx: &mut dyn Tx, input: &SetMdmApple) -> Result<SetOutcome, AssetError> {
    if input.apns_cert.is_none() && input.scep.is_none() {
        return Err(AssetError::NothingToSet);
    }
    let now = Timestamp::now();
    let mut out = SetOutcome {
        apns: None,
        apns_unchanged: false,
        topic_overridden: Vec::new(),
        scep_ca: None,
        warnings: Vec::new(),
    };
    if let Some(cert) = &input.apns_cert {
        set_apns(
            tx,
            cert,
            input.apns_key.as_ref(),
            input.force,
            &input.actor,
            now,
            &mut out,
        )?;
    }
    if let Some((cert, key)) = &input.scep {
        out.scep_ca = Some(set_scep_ca(tx, cert, key, "set", &input.actor, now)?);
    }
    Ok(out)
}

fn set_apns(
    tx: &mut dyn Tx,
    cert: &X509,
    key: Option<&PKey<Private>>,
    force: bool,
    actor: &str,
    now: Timestamp,
    out: &mut SetOutcome,
) -> Result<(), AssetError> {
    let info = CertInfo::of(cert)?;
    let topic = info.topic.clone().ok_or_else(|| AssetError::NoTopic {
        subject: info.subject.clone(),
    })?;
    check_validity(&info, "push certificate", now)?;

    if let Some(k) = key
        && !pki::key_matches_cert(k, cert)?
    {
        return Err(pki::PkiError::KeyMismatch {
            subject: info.subject,
        }
        .into());
    }
    let active = tx.active_asset(AssetKind::Apns)?;
    if let Some(a) = &active
        && a.sha256.as_deref() == Some(info.sha256.as_str())
    {
        out.apns = Some(info);
        out.apns_unchanged = true;
        return Ok(());
    }

    // Which asset holds the key: the one given, or a pending key generated into this store.
    let pending_with_key = match key {
        Some(_) => None,
        None => Some(find_pending_key(tx, cert)?.ok_or(AssetError::MissingApnsKey)?),
    };

    // The topic rule: compare with the certificate in use and with every enrolled device.
    let mut other_topics: Vec<TopicCount> = tx
        .enrollment_topics()?
        .into_iter()
        .filter(|t| t.topic != topic)
        .collect();
    if let Some(old) = active.as_ref().and_then(|a| a.topic.clone())
        && old != topic
        && !other_topics.iter().any(|t| t.topic == old)
    {
        other_topics.push(TopicCount {
            topic: old,
            enrollments: 0,
        });
    }
    if !other_topics.is_empty() {
        let existing = describe_topics(&other_topics);
        if !force {
            return Err(AssetError::TopicChanged {
                new: topic,
                existing,
            });
        }
        out.warnings.push(format!(
            "--force: replacing {existing} with `{topic}`; devices enrolled with the old topic can no longer be reached and must re-enroll"
        ));
        out.topic_overridden = other_topics.iter().map(|t| t.topic.clone()).collect();
        tx.record_activity(&NewActivity {
            actor: actor.to_string(),
            kind: "apns.topic_override".into(),
            device_id: None,
            summary: format!("forced a push certificate with topic {topic}, replacing {existing}"),
            details: serde_json::json!({
                "new_topic": topic,
                "replaced": other_topics,
                "sha256": info.sha256,
            }),
        })?;
    }

    if let Some(a) = &active {
        tx.set_asset_state(a.id, AssetState::Retired)?;
    }
    let cert_pem = pki::cert_pem(cert)?;
    let id = match (pending_with_key, key) {
        (Some(pending_id), _) => {
            tx.set_asset_cert(
                pending_id,
                &cert_pem,
                &info.sha256,
                info.not_after,
                Some(&topic),
            )?;
            tx.set_asset_state(pending_id, AssetState::Active)?;
            pending_id
        }
        (None, Some(k)) => {
            if let Some(old) = tx.asset_by_fingerprint(AssetKind::Apns, &info.sha256)? {
                // Re-activating a certificate this store had before.
                tx.set_asset_state(old.id, AssetState::Active)?;
                old.id
            } else {
                let mut a = NewAsset::new(AssetKind::Apns, AssetState::Active, "set");
                a.cert_pem = Some(cert_pem);
                a.key_pem = Some(pki::private_key_pem(k)?);
                a.topic = Some(topic.clone());
                a.sha256 = Some(info.sha256.clone());
                a.not_after = Some(info.not_after);
                tx.insert_asset(&a)?
            }
        }
        (None, None) => return Err(AssetError::MissingApnsKey),
    };
    let days = now.days_until(info.not_after);
    if days < WARN_DAYS {
        out.warnings.push(format!(
            "the push certificate expires in {days} days ({}); renew it soon",
            info.not_after.date()
        ));
    }
    tx.record_activity(&NewActivity {
        actor: actor.to_string(),
        kind: "apns.set".into(),
        device_id: None,
        summary: format!(
            "set the push certificate for topic {topic}, valid until {}",
            info.not_after.date()
        ),
        details: serde_json::json!({
            "asset": id,
            "topic": topic,
            "serial": info.serial,
            "sha256": info.sha256,
            "not_after": info.not_after,
            "forced": !out.topic_overridden.is_empty(),
        }),
    })?;
    out.apns = Some(info);
    Ok(())
}

fn describe_topics(topics: &[TopicCount]) -> String {
    topics
        .iter()
        .map(|t| {
            if t.enrollments > 0 {
                format!("`{}` (used by {} enrollments)", t.topic, t.enrollments)
            } else {
                format!("`{}` (the stored certificate's topic)", t.topic)
            }
        })
        .collect::<Vec<_>>()
        .join(" and ")
}

/// The pending APNs asset whose generated key matches `cert`.
fn find_pending_key(tx: &mut dyn Tx, cert: &X509) -> Result<Option<i64>, AssetError> {
    for a in tx.assets(AssetKind::Apns)? {
        if a.state != AssetState::Pending || !a.has_key {
            continue;
        }
        if let Some(pem) = tx.asset_key(a.id)? {
            let key = pki::load_private_key(&pem, None)?;
            if pki::key_matches_cert(&key, cert)? {
                return Ok(Some(a.id));
            }
        }
    }
    Ok(None)
}

/// Add a SCEP CA and make it the issuing one; earlier CAs stay trusted, so identities they
/// issued keep working. `source` says where it came from (`set`, `imported:nanomdm`, …).
pub fn set_scep_ca(
    tx: &mut dyn Tx,
    cert: &X509,
    key: &PKey<Private>,
    source: &str,
    actor: &str,
    now: Timestamp,
) -> Result<CertInfo, AssetError> {
    let info = CertInfo::of(cert)?;
    if !pki::is_ca(cert) {
        return Err(AssetError::NotACa {
            subject: info.subject,
        });
    }
    if !pki::key_matches_cert(key, cert)? {
        return Err(pki::PkiError::KeyMismatch {
            subject: info.subject,
        }
        .into());
    }
    check_validity(&info, "SCEP CA certificate", now)?;
    let active = tx.active_asset(AssetKind::ScepCa)?;
    if active.as_ref().and_then(|a| a.sha256.as_deref()) == Some(info.sha256.as_str()) {
        return Ok(info);
    }
    if let Some(a) = &active {
        tx.set_asset_state(a.id, AssetState::Trusted)?;
    }
    let id = match tx.asset_by_fingerprint(AssetKind::ScepCa, &info.sha256)? {
        Some(existing) => {
            tx.set_asset_state(existing.id, AssetState::Active)?;
            existing.id
        }
        None => {
            let mut a = NewAsset::new(AssetKind::ScepCa, AssetState::Active, source);
            a.cert_pem = Some(pki::cert_pem(cert)?);
            a.key_pem = Some(pki::private_key_pem(key)?);
            a.sha256 = Some(info.sha256.clone());
            a.not_after = Some(info.not_after);
            tx.insert_asset(&a)?
        }
    };
    tx.record_activity(&NewActivity {
        actor: actor.to_string(),
        kind: "scep_ca.set".into(),
        device_id: None,
        summary: format!("made `{}` the issuing SCEP CA", info.subject),
        details: serde_json::json!({ "asset": id, "sha256": info.sha256, "subject": info.subject, "source": source }),
    })?;
    Ok(info)
}

/// The push certificate as `get mdm-apple` shows it.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ApnsStatus {
    #[serde(flatten)]
    pub cert: CertInfo,
    pub renew_by: Timestamp,
    pub days_left: i64,
    pub expired: bool,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ScepCaStatus {
    #[serde(flatten)]
    pub cert: CertInfo,
    pub state: AssetState,
    pub source: String,
    pub days_left: i64,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct MdmAppleStatus {
    pub apns: Option<ApnsStatus>,
    /// When a push CSR was generated and is still waiting for Apple's certificate.
    pub pending_csr_since: Option<Timestamp>,
    pub scep_cas: Vec<ScepCaStatus>,
    /// The topics enrolled devices use (they should all equal the certificate's).
    pub device_topics: Vec<TopicCount>,
}

pub fn mdm_apple_status(tx: &mut dyn Tx) -> Result<MdmAppleStatus, AssetError> {
    let now = Timestamp::now();
    let mut apns = None;
    let mut pending_csr_since = None;
    for a in tx.assets(AssetKind::Apns)? {
        match (a.state, &a.cert_pem) {
            (AssetState::Active, Some(pem)) => {
                let cert = CertInfo::of(&pki::parse_cert(pem.as_bytes())?)?;
                apns = Some(ApnsStatus {
                    renew_by: cert.not_after,
                    days_left: now.days_until(cert.not_after),
                    expired: cert.expired_at(now),
                    cert,
                });
            }
            (AssetState::Pending, _) if pending_csr_since.is_none() => {
                pending_csr_since = Some(a.created_at)
            }
            _ => {}
        }
    }
    let mut scep_cas = Vec::new();
    for a in tx.assets(AssetKind::ScepCa)? {
        if a.state == AssetState::Retired {
            continue;
        }
        let Some(pem) = &a.cert_pem else { continue };
        let cert = CertInfo::of(&pki::parse_cert(pem.as_bytes())?)?;
        scep_cas.push(ScepCaStatus {
            days_left: now.days_until(cert.not_after),
            cert,
            state: a.state,
            source: a.source,
        });
    }
    // The issuing CA first.
    scep_cas.sort_by_key(|c| c.state != AssetState::Active);
    Ok(MdmAppleStatus {
        apns,
        pending_csr_since,
        scep_cas,
        device_topics: tx.enrollment_topics()?,
    })
}
