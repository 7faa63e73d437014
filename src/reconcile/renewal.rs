//! Identity renewal for migrated devices: before the identity certificate an old MDM's CA
//! issued expires, send the device an enrollment profile that keeps the old profile's top-level
//! `PayloadIdentifier`, `ServerURL`, `CheckInURL`, `Topic`, `SignMessage`, `AccessRights` and
//! `ServerCapabilities` and its certificate payloads (so macOS updates the enrollment in place
//! and keeps trusting the server) with a SCEP payload pointing at mdmctl's SCEP server and a
//! one-time challenge. macOS then restarts check-in (Authenticate, TokenUpdate) with the new
//! identity; that keeps the enrollment, its queue and its bootstrap token. The device enrolls for a new identity from mdmctl's CA; the
//! server moves the association to it only when that is verifiable (see
//! [`crate::server`]'s device authorization: same UDID, a certificate from mdmctl's issuing CA,
//! this renewal outstanding). Devices that cannot be renewed are reported (log and activity)
//! every day until they expire.

use std::time::Duration;

use plist::{Dictionary, Value};
use tracing::{info, warn};

use super::{ACTOR, Answer};
use crate::apple::command::named;
use crate::apple::enroll::{EnrollmentProfile, ScepPayload};
use crate::store::{
    ChallengePurpose, ChallengeScope, NewActivity, QueueStatus, Renewal, RenewalState, StoreError,
    Tx,
};
use crate::timestamp::Timestamp;

/// What the old MDM's enrollment profile says, as a renewal must keep it: what macOS refuses to
/// see changed in an installed enrollment (`PayloadIdentifier`, `ServerURL`, `CheckInURL`,
/// `Topic`, no added `AccessRights` bits) and what the device relies on (`ServerCapabilities`,
/// the certificates it installed to trust the server).
#[derive(Clone, Debug, PartialEq)]
pub struct MigrationProfile {
    pub identifier: String,
    pub server_url: String,
    pub check_in_url: Option<String>,
    pub topic: String,
    pub sign_message: bool,
    pub access_rights: u64,
    pub check_out_when_removed: bool,
    /// `ServerCapabilities` as the old profile had it (`None`: it had none).
    pub server_capabilities: Option<Vec<String>>,
    /// The old profile's certificate payloads (anchors, intermediates), verbatim.
    pub certificates: Vec<Dictionary>,
}

/// How `serve` renews identities.
#[derive(Clone, Debug)]
pub struct RenewalPolicy {
    /// Renew identities that expire within this long.
    pub window: Duration,
    /// mdmctl's SCEP URL (`<url>/scep`).
    pub scep_url: String,
    pub organization: String,
    /// The old enrollment profile; without it migrated devices cannot be renewed (and are
    /// reported).
    pub migration: Option<MigrationProfile>,
}

/// Read an old MDM's enrollment profile (XML, binary or CMS-signed `.mobileconfig`).
pub fn parse_migration_profile(bytes: &[u8]) -> Result<MigrationProfile, String> {
    let content = match crate::apple::profile::unwrap_signed(bytes) {
        Some(Ok(inner)) => inner,
        Some(Err(p)) => return Err(p.message),
        None => bytes.to_vec(),
    };
    let v: Value = crate::apple::plist_in::from_bytes(&content)
        .map_err(|e| format!("not a property list: {e}"))?;
    let top = v
        .as_dictionary()
        .ok_or("the top level is not a dictionary")?;
    let text = |d: &Dictionary, k: &str| d.get(k).and_then(Value::as_string).map(str::to_string);
    let identifier = text(top, "PayloadIdentifier").ok_or("no top-level PayloadIdentifier")?;
    let mdm = top
        .get("PayloadContent")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_dictionary)
        .find(|p| p.get("PayloadType").and_then(Value::as_string) == Some("com.apple.mdm"))
        .ok_or("no com.apple.mdm payload: this is not an MDM enrollment profile")?;
    Ok(MigrationProfile {
        identifier,
        server_url: text(mdm, "ServerURL").ok_or("the MDM payload has no ServerURL")?,
        check_in_url: text(mdm, "CheckInURL"),
        topic: text(mdm, "Topic").ok_or("the MDM payload has no Topic")?,
        sign_message: mdm
            .get("SignMessage")
            .and_then(Value::as_boolean)
            .unwrap_or(false),
        // Required by Apple; a renewal must not add bits, so it is never guessed.
        access_rights: mdm
            .get("AccessRights")
            .and_then(Value::as_unsigned_integer)
            .ok_or("the MDM payload has no AccessRights")?,
        check_out_when_removed: mdm
            .get("CheckOutWhenRemoved")
            .and_then(Value::as_boolean)
            .unwrap_or(false),
        server_capabilities: match mdm.get("ServerCapabilities") {
            None => None,
            Some(v) => Some(
                v.as_array()
                    .ok_or("ServerCapabilities is not an array")?
                    .iter()
                    .map(|c| c.as_string().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or("ServerCapabilities holds something other than strings")?,
            ),
        },
        certificates: top
            .get("PayloadContent")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_dictionary)
            .filter(|p| {
                p.get("PayloadType")
                    .and_then(Value::as_string)
                    .is_some_and(|t| crate::apple::enroll::CERTIFICATE_PAYLOAD_TYPES.contains(&t))
            })
            .cloned()
            .collect(),
    })
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

/// Start the renewals that are due; returns the channels to push.
pub fn queue_due(tx: &mut dyn Tx, policy: &RenewalPolicy) -> Result<Vec<String>, StoreError> {
    let now = Timestamp::now();
    let due = tx.renewals_due(
        Timestamp(now.0 + secs(policy.window)),
        Timestamp(now.0 - 24 * 3600),
        200,
    )?;
    let mut push = Vec::new();
    for device_id in due {
        let Some(device) = tx.device(&device_id)? else {
            continue;
        };
        let (Some(old_sha256), Some(not_after)) =
            (device.identity_sha256, device.identity_not_after)
        else {
            continue;
        };
        let Some(channel) = super::device_channel(tx, &device_id)? else {
            continue;
        };
        let Some(m) = &policy.migration else {
            let reason = format!(
                "cannot renew the identity that expires {}: the old MDM's enrollment profile is not known; \
                 start `serve` with `--migration-enrollment-profile FILE`",
                not_after
            );
            warn!(device = %device_id, expires = %not_after, "identity cannot be renewed");
            tx.put_renewal(&Renewal {
                device_id: device_id.clone(),
                status: RenewalState::Failed,
                old_sha256,
                command_uuid: None,
                challenge_sha256: None,
                reason: Some(reason.clone()),
                updated_at: now,
            })?;
            tx.record_activity(&NewActivity {
                actor: ACTOR.into(),
                kind: "identity.renewal_blocked".into(),
                device_id: Some(device_id.clone()),
                summary: format!("{device_id}: {reason}"),
                details: serde_json::json!({ "expires": not_after }),
            })?;
            continue;
        };
        let (challenge, challenge_sha256) = mint_challenge(tx, &device_id, now)?;
        let profile = EnrollmentProfile {
            identifier: m.identifier.clone(),
            display_name: format!("{} device management", policy.organization),
            organization: policy.organization.clone(),
            server_url: m.server_url.clone(),
            check_in_url: m.check_in_url.clone(),
            topic: m.topic.clone(),
            scep: ScepPayload {
                url: policy.scep_url.clone(),
                name: "mdmctl".into(),
                challenge: Some(challenge),
                subject: vec![
                    ("O".into(), policy.organization.clone()),
                    ("CN".into(), "mdmctl device identity".into()),
                ],
                key_size: 2048,
                ca_fingerprint: None,
            },
            anchors: Vec::new(),
            kept_payloads: m.certificates.clone(),
            server_capabilities: m.server_capabilities.clone(),
            sign_message: m.sign_message,
            check_out_when_removed: m.check_out_when_removed,
            access_rights: m.access_rights,
        };
        let c = named::install_profile(profile.to_xml());
        super::enqueue_one(tx, &c, std::slice::from_ref(&channel))?;
        tx.put_renewal(&Renewal {
            device_id: device_id.clone(),
            status: RenewalState::Sent,
            old_sha256,
            command_uuid: Some(c.uuid.clone()),
            challenge_sha256: Some(challenge_sha256),
            reason: None,
            updated_at: now,
        })?;
        tx.record_activity(&NewActivity {
            actor: ACTOR.into(),
            kind: "identity.renewal_sent".into(),
            device_id: Some(device_id.clone()),
            summary: format!(
                "sent {device_id} an enrollment profile to renew its identity (expires {not_after})"
            ),
            details: serde_json::json!({ "command_uuid": c.uuid, "expires": not_after }),
        })?;
        info!(device = %device_id, expires = %not_after, "identity renewal sent");
        push.push(channel);
    }
    Ok(push)
}

/// A one-time SCEP challenge for this device's renewal (valid 30 days) and its SHA-256.
fn mint_challenge(
    tx: &mut dyn Tx,
    device_id: &str,
    now: Timestamp,
) -> Result<(String, String), StoreError> {
    let (challenge, hash) =
        crate::secrets::new_credential("").map_err(|e| StoreError::Decode(e.to_string()))?;
    let scope = ChallengeScope {
        purpose: ChallengePurpose::Renewal,
        device_id: Some(device_id.to_string()),
        team_id: None,
        enroll_secret_id: None,
    };
    tx.add_scep_challenge(&hash, now.plus_days(30), ACTOR, &scope)?;
    Ok((challenge.to_string(), hash))
}

/// The device's answer to a renewal's InstallProfile: a refusal fails the renewal with Apple's
/// reason; an acknowledgement waits for the new identity.
pub fn on_result(
    tx: &mut dyn Tx,
    device_id: &str,
    answer: &Answer<'_>,
) -> Result<bool, StoreError> {
    let Some(mut r) = tx.renewal(device_id)? else {
        return Ok(false);
    };
    if r.status != RenewalState::Sent || r.command_uuid.as_deref() != Some(answer.command_uuid) {
        return Ok(false);
    }
    if answer.status == QueueStatus::NotNow {
        return Ok(true);
    }
    let now = Timestamp::now();
    if answer.status == QueueStatus::Acknowledged {
        r.reason = Some("enrollment profile installed; waiting for the new identity".into());
        r.updated_at = now;
        tx.put_renewal(&r)?;
        return Ok(true);
    }
    let why = answer
        .error_chain
        .and_then(|c| c.get(0))
        .and_then(|e| e.get("LocalizedDescription"))
        .and_then(|d| d.as_str())
        .unwrap_or(answer.status.as_str())
        .to_string();
    r.status = RenewalState::Failed;
    r.reason = Some(format!("the device refused the renewal profile: {why}"));
    r.command_uuid = None;
    r.updated_at = now;
    tx.put_renewal(&r)?;
    warn!(device = device_id, reason = %why, "identity renewal refused");
    tx.record_activity(&NewActivity {
        actor: ACTOR.into(),
        kind: "identity.renewal_failed".into(),
        device_id: Some(device_id.to_string()),
        summary: format!("{device_id} refused the identity renewal: {why}"),
        details: serde_json::json!({ "error_chain": answer.error_chain }),
    })?;
    Ok(true)
}

/// The device presented an identity that is not the recorded one: is it this device's
/// verifiable renewal? A renewal outstanding for this UDID, a certificate from mdmctl's issuing
/// CA, issued by SCEP under the one-time challenge only this device's renewal profile carried,
/// and bound to no other device.
pub fn is_renewal(
    tx: &mut dyn Tx,
    device_id: &str,
    by_issuing_ca: bool,
    sha256: &str,
) -> Result<bool, StoreError> {
    if !by_issuing_ca {
        return Ok(false);
    }
    let Some(r) = tx.renewal(device_id)? else {
        return Ok(false);
    };
    let Some(challenge) = r
        .challenge_sha256
        .as_deref()
        .filter(|_| r.status == RenewalState::Sent)
    else {
        return Ok(false);
    };
    if tx.challenge_issued(challenge)?.as_deref() != Some(sha256) {
        warn!(
            device = device_id,
            "a certificate from mdmctl's CA that this device's renewal did not issue; not accepted"
        );
        return Ok(false);
    }
    Ok(tx.device_by_identity(sha256)?.is_none())
}

/// Whether `sha256` is the identity this device's completed renewal moved it to (an
/// Authenticate with it restarts check-in after the renewal; it is not a new enrollment).
pub fn renewed_to(tx: &mut dyn Tx, device_id: &str, sha256: &str) -> Result<bool, StoreError> {
    let Some(r) = tx.renewal(device_id)? else {
        return Ok(false);
    };
    let Some(challenge) = r
        .challenge_sha256
        .as_deref()
        .filter(|_| r.status == RenewalState::Renewed)
    else {
        return Ok(false);
    };
    Ok(tx.challenge_issued(challenge)?.as_deref() == Some(sha256))
}

/// Move the device's association to its renewed identity.
pub fn complete(
    tx: &mut dyn Tx,
    device_id: &str,
    sha256: &str,
    not_after: Timestamp,
) -> Result<(), StoreError> {
    let Some(mut r) = tx.renewal(device_id)? else {
        return Ok(());
    };
    tx.bind_identity(device_id, sha256, Some(not_after))?;
    r.status = RenewalState::Renewed;
    r.command_uuid = None;
    r.reason = None;
    r.updated_at = Timestamp::now();
    tx.put_renewal(&r)?;
    info!(device = device_id, "identity renewed");
    tx.record_activity(&NewActivity {
        actor: "serve".into(),
        kind: "identity.renewed".into(),
        device_id: Some(device_id.to_string()),
        summary: format!(
            "{device_id} renewed its identity through mdmctl's SCEP (new certificate valid until {not_after})"
        ),
        details: serde_json::json!({ "old_sha256": r.old_sha256, "sha256": sha256, "not_after": not_after }),
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_profile_gives_what_a_renewal_keeps() {
        let xml = br#"<?xml version="1.0"?><plist version="1.0"><dict>
<key>PayloadIdentifier</key><string>com.oldmdm.enrollment</string>
<key>PayloadType</key><string>Configuration</string>
<key>PayloadContent</key><array>
<dict><key>PayloadType</key><string>com.apple.security.root</string>
<key>PayloadIdentifier</key><string>com.oldmdm.anchor</string>
<key>PayloadUUID</key><string>5E0F3F2A-0000-4000-8000-000000000001</string>
<key>PayloadContent</key><data>MAA=</data></dict>
<dict><key>PayloadType</key><string>com.apple.security.pkcs12</string>
<key>PayloadIdentifier</key><string>com.oldmdm.identity</string></dict>
<dict><key>PayloadType</key><string>com.apple.mdm</string>
<key>ServerURL</key><string>https://mdm.example.com/mdm</string>
<key>CheckInURL</key><string>https://mdm.example.com/checkin</string>
<key>Topic</key><string>com.apple.mgmt.External.1234</string>
<key>ServerCapabilities</key><array><string>com.apple.mdm.per-user-connections</string></array>
<key>SignMessage</key><true/><key>AccessRights</key><integer>4095</integer></dict>
</array></dict></plist>"#;
        let m = parse_migration_profile(xml).unwrap();
        assert_eq!(m.identifier, "com.oldmdm.enrollment");
        assert_eq!(m.server_url, "https://mdm.example.com/mdm");
        assert_eq!(
            m.check_in_url.as_deref(),
            Some("https://mdm.example.com/checkin")
        );
        assert_eq!(m.topic, "com.apple.mgmt.External.1234");
        assert!(m.sign_message);
        assert_eq!(m.access_rights, 4095);
        assert_eq!(
            m.server_capabilities,
            Some(vec!["com.apple.mdm.per-user-connections".to_string()])
        );
        // The anchor is kept verbatim; the old identity (a .p12) is not.
        assert_eq!(m.certificates.len(), 1);
        assert_eq!(
            m.certificates[0]["PayloadUUID"].as_string(),
            Some("5E0F3F2A-0000-4000-8000-000000000001")
        );
        let no_rights = String::from_utf8_lossy(xml)
            .replace("<key>AccessRights</key><integer>4095</integer>", "");
        assert!(
            parse_migration_profile(no_rights.as_bytes())
                .unwrap_err()
                .contains("AccessRights")
        );
        let wifi = br#"<?xml version="1.0"?><plist version="1.0"><dict><key>PayloadIdentifier</key><string>x</string><key>PayloadContent</key><array/></dict></plist>"#;
        assert!(
            parse_migration_profile(wifi)
                .unwrap_err()
                .contains("com.apple.mdm")
        );
        assert!(parse_migration_profile(b"nonsense").is_err());
    }
}
