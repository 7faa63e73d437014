//! FileVault with key escrow: from "the FileVault profile is verified" to "the recovery key is
//! escrowed", per device.
//!
//! Owns: the device's [`DiskEncryption`] state (`enforcing` while the profile is on its way,
//! `verifying` once it is installed, `verified` with the key escrowed, `action_required` with
//! the reason), asking SecurityInfo until `FDE_PersonalRecoveryKeyCMS` arrives, decrypting it
//! with every escrow key the store holds (mdmctl's own, earlier ones, and imported CAs: an old
//! MDM that escrowed to its SCEP CA, as Fleet does, is read with that CA's key), sealing it in
//! the store, and RotateFileVaultKey when the Mac's key cannot be decrypted but mdmctl holds an
//! earlier one. Reading the key back is [`recovery_key`], which records who viewed it.

use std::time::Duration;

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use plist::Value;
use tracing::{info, warn};
use zeroize::Zeroizing;

use super::{ACTOR, Answer, Policy, enqueue_one};
use crate::apple::command::named;
use crate::store::{AssetKind, DiskEncryption, FdeState, NewActivity, QueueStatus, StoreError, Tx};
use crate::timestamp::Timestamp;

/// Reason shown once the key is escrowed.
pub const ESCROWED: &str = "key escrowed";

fn later(now: Timestamp, wait: Duration) -> Timestamp {
    Timestamp(now.0 + i64::try_from(wait.as_secs()).unwrap_or(i64::MAX / 4))
}

/// The device's ProfileList shows the FileVault profile: ask SecurityInfo for the key now,
/// unless it is escrowed already.
pub fn profile_verified(
    tx: &mut dyn Tx,
    device_id: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    let mut row = tx
        .disk_encryption(device_id)?
        .unwrap_or_else(|| DiskEncryption::new(device_id, FdeState::Enforcing, now));
    if row.status == FdeState::Verified && row.has_key {
        return Ok(());
    }
    if row.status == FdeState::Enforcing {
        row.status = FdeState::Verifying;
        row.reason = None;
    }
    row.next_check_at = Some(now);
    row.updated_at = now;
    tx.put_disk_encryption(&row)
}

/// Queue the due checks (SecurityInfo, one stored command for all of them) for these devices;
/// returns the channels to push.
pub fn queue_checks(tx: &mut dyn Tx, device_ids: &[String]) -> Result<Vec<String>, StoreError> {
    let now = Timestamp::now();
    let mut channels = Vec::new();
    let mut rows = Vec::new();
    for id in device_ids {
        let Some(row) = tx.disk_encryption(id)? else {
            continue;
        };
        if row.command_uuid.is_some() || row.next_check_at.is_none_or(|t| t > now) {
            continue;
        }
        let Some(channel) = super::device_channel(tx, id)? else {
            continue;
        };
        channels.push(channel);
        rows.push(row);
    }
    if channels.is_empty() {
        return Ok(channels);
    }
    let c = named::security_info();
    enqueue_one(tx, &c, &channels)?;
    for mut row in rows {
        row.command_uuid = Some(c.uuid.clone());
        row.updated_at = now;
        tx.put_disk_encryption(&row)?;
    }
    Ok(channels)
}

/// What a SecurityInfo answer says about FileVault.
struct Fde {
    enabled: bool,
    cms: Option<Vec<u8>>,
}

fn parse_security_info(body: &[u8]) -> Option<Fde> {
    let top: Value = crate::apple::plist_in::from_bytes(body).ok()?;
    let si = top.as_dictionary()?.get("SecurityInfo")?.as_dictionary()?;
    Some(Fde {
        enabled: si
            .get("FDE_Enabled")
            .and_then(Value::as_boolean)
            .unwrap_or(false),
        cms: si
            .get("FDE_PersonalRecoveryKeyCMS")
            .and_then(Value::as_data)
            .map(<[u8]>::to_vec),
    })
}

/// The new key's CMS from a RotateFileVaultKey answer.
fn parse_rotate_result(body: &[u8]) -> Option<Vec<u8>> {
    let top: Value = crate::apple::plist_in::from_bytes(body).ok()?;
    top.as_dictionary()?
        .get("RotateResult")?
        .as_dictionary()?
        .get("EncryptedNewRecoveryKey")?
        .as_data()
        .map(<[u8]>::to_vec)
}

/// The recovery key inside a decrypted envelope: the key text, or a plist carrying it as
/// `RecoveryKey` (the form `/var/db/FileVaultPRK.dat` takes).
fn recovery_key_text(content: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if let Ok(Value::Dictionary(d)) = crate::apple::plist_in::from_bytes::<Value>(content) {
        return d
            .get("RecoveryKey")
            .and_then(Value::as_string)
            .map(|k| Zeroizing::new(k.trim().as_bytes().to_vec()));
    }
    let text = std::str::from_utf8(content).ok()?.trim();
    (!text.is_empty()).then(|| Zeroizing::new(text.as_bytes().to_vec()))
}

/// A certificate and key recovery keys may be encrypted to.
struct EscrowKey {
    cert: X509,
    key: PKey<Private>,
    sha256: Option<String>,
}

/// Every key the store holds that a Mac may have escrowed to: mdmctl's escrow key pairs (active
/// and retired) and the CAs (an old MDM's imported CA among them).
fn escrow_keys(tx: &mut dyn Tx) -> Result<Vec<EscrowKey>, StoreError> {
    let mut out = Vec::new();
    for kind in [AssetKind::Escrow, AssetKind::ScepCa] {
        for asset in tx.assets(kind)? {
            let (Some(pem), true) = (&asset.cert_pem, asset.has_key) else {
                continue;
            };
            let Some(key_pem) = tx.asset_key(asset.id)? else {
                continue;
            };
            let (Ok(cert), Ok(key)) = (
                X509::from_pem(pem.as_bytes()),
                PKey::private_key_from_pem(&key_pem),
            ) else {
                warn!(
                    asset = asset.id,
                    "an escrow candidate's certificate or key does not parse; skipped"
                );
                continue;
            };
            out.push(EscrowKey {
                cert,
                key,
                sha256: asset.sha256.clone(),
            });
        }
    }
    Ok(out)
}

/// A decrypted recovery key and the SHA-256 of the certificate it was escrowed to.
type Opened = (Zeroizing<Vec<u8>>, Option<String>);

/// Decrypt a recovery-key envelope with the first key that opens it.
fn decrypt(tx: &mut dyn Tx, cms: &[u8]) -> Result<Option<Opened>, StoreError> {
    for k in escrow_keys(tx)? {
        if let Ok(content) = crate::pki::decrypt_smime(cms, &k.key, &k.cert)
            && let Some(key) = recovery_key_text(&content)
        {
            return Ok(Some((key, k.sha256)));
        }
    }
    Ok(None)
}

/// Store a decrypted key; the device reads `verified`. Records an activity when the key is new.
fn escrowed(
    tx: &mut dyn Tx,
    policy: &Policy,
    mut row: DiskEncryption,
    key: &[u8],
    escrow: Option<&str>,
    now: Timestamp,
) -> Result<(), StoreError> {
    let same = tx
        .recovery_key(&row.device_id)?
        .is_some_and(|k| k.as_slice() == key);
    row.status = FdeState::Verified;
    row.reason = Some(ESCROWED.into());
    row.next_check_at = Some(later(now, policy.filevault_reverify));
    row.updated_at = now;
    tx.put_disk_encryption(&row)?;
    if !same {
        tx.set_recovery_key(&row.device_id, key, escrow, now)?;
        info!(device = %row.device_id, "FileVault recovery key escrowed");
        tx.record_activity(&NewActivity {
            actor: ACTOR.into(),
            kind: "filevault.escrowed".into(),
            device_id: Some(row.device_id.clone()),
            summary: format!("FileVault recovery key of {} escrowed", row.device_id),
            details: serde_json::json!({ "escrow_certificate_sha256": escrow }),
        })?;
    }
    Ok(())
}

/// Someone must act; ask again after `policy.filevault_recheck`.
fn action_required(
    tx: &mut dyn Tx,
    policy: &Policy,
    mut row: DiskEncryption,
    reason: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    if row.status != FdeState::ActionRequired || row.reason.as_deref() != Some(reason) {
        tx.record_activity(&NewActivity {
            actor: ACTOR.into(),
            kind: "filevault.action_required".into(),
            device_id: Some(row.device_id.clone()),
            summary: format!("FileVault on {}: {reason}", row.device_id),
            details: serde_json::json!({ "reason": reason }),
        })?;
    }
    row.status = FdeState::ActionRequired;
    row.reason = Some(reason.to_string());
    row.next_check_at = Some(later(now, policy.filevault_recheck));
    row.updated_at = now;
    tx.put_disk_encryption(&row)
}

/// Replace a key mdmctl cannot read, unlocking with the key it escrowed before; the new key
/// comes back encrypted to the active escrow certificate.
fn rotate(
    tx: &mut dyn Tx,
    mut row: DiskEncryption,
    old_key: &[u8],
    now: Timestamp,
) -> Result<bool, StoreError> {
    let Some(cert) = crate::gitops::apply::stored_escrow(tx)? else {
        return Ok(false);
    };
    let Some(channel) = super::device_channel(tx, &row.device_id)? else {
        return Ok(false);
    };
    let Ok(password) = std::str::from_utf8(old_key) else {
        return Ok(false);
    };
    let c = named::rotate_filevault_key(password, &cert);
    enqueue_one(tx, &c, &[channel])?;
    row.status = FdeState::Verifying;
    row.reason =
        Some("rotating the recovery key: the one the Mac escrowed cannot be decrypted".into());
    row.command_uuid = Some(c.uuid.clone());
    row.next_check_at = None;
    row.updated_at = now;
    tx.put_disk_encryption(&row)?;
    info!(device = %row.device_id, "FileVault key cannot be decrypted; RotateFileVaultKey queued");
    Ok(true)
}

/// The device's answer to SecurityInfo or RotateFileVaultKey (any SecurityInfo counts, also one
/// an admin sent), for a device whose FileVault mdmctl tracks.
pub fn on_result(
    tx: &mut dyn Tx,
    policy: &Policy,
    device_id: &str,
    answer: &Answer<'_>,
) -> Result<(), StoreError> {
    let (request_type, status, body) = (answer.request_type, answer.status, answer.body);
    if status == QueueStatus::NotNow {
        return Ok(());
    }
    let Some(mut row) = tx.disk_encryption(device_id)? else {
        return Ok(());
    };
    let ours = row.command_uuid.as_deref() == Some(answer.command_uuid);
    if !ours && request_type == "RotateFileVaultKey" {
        return Ok(());
    }
    if ours {
        row.command_uuid = None;
    }
    let now = Timestamp::now();
    if status != QueueStatus::Acknowledged {
        let what = answer
            .error_chain
            .and_then(|c| c.get(0))
            .and_then(|e| e.get("LocalizedDescription"))
            .and_then(|d| d.as_str())
            .unwrap_or(status.as_str())
            .to_string();
        return action_required(
            tx,
            policy,
            row,
            &format!("the Mac answered {request_type} with an error: {what}"),
            now,
        );
    }
    if request_type == "RotateFileVaultKey" {
        return match parse_rotate_result(body) {
            Some(cms) => match decrypt(tx, &cms)? {
                Some((key, escrow)) => escrowed(tx, policy, row, &key, escrow.as_deref(), now),
                None => action_required(
                    tx,
                    policy,
                    row,
                    "the rotated recovery key cannot be decrypted with mdmctl's escrow key",
                    now,
                ),
            },
            None => action_required(
                tx,
                policy,
                row,
                "the Mac rotated the recovery key but returned no EncryptedNewRecoveryKey",
                now,
            ),
        };
    }
    let Some(fde) = parse_security_info(body) else {
        warn!(
            device = device_id,
            "a SecurityInfo answer without SecurityInfo; asked again later"
        );
        row.next_check_at = Some(later(now, policy.filevault_recheck));
        return tx.put_disk_encryption(&row);
    };
    match (fde.enabled, fde.cms) {
        (_, Some(cms)) => match decrypt(tx, &cms)? {
            Some((key, escrow)) => escrowed(tx, policy, row, &key, escrow.as_deref(), now),
            None => match tx.recovery_key(device_id)? {
                Some(old) if rotate(tx, row.clone(), &old, now)? => Ok(()),
                _ => action_required(
                    tx,
                    policy,
                    row,
                    "the recovery key the Mac escrowed is encrypted to a certificate mdmctl does not \
                     hold; import the old MDM's CA with its key, or have the user run \
                     `sudo fdesetup changerecovery -personal` so the Mac escrows a new key",
                    now,
                ),
            },
        },
        (true, None) => match tx.recovery_key(device_id)? {
            Some(old) if rotate(tx, row.clone(), &old, now)? => Ok(()),
            _ => action_required(
                tx,
                policy,
                row,
                "FileVault was turned on before the escrow profile, so its recovery key was never \
                 escrowed; have the user run `sudo fdesetup changerecovery -personal` (the Mac \
                 escrows the new key)",
                now,
            ),
        },
        (false, None) => action_required(
            tx,
            policy,
            row,
            "FileVault is not on yet: it turns on when the user logs out (or at the next login)",
            now,
        ),
    }
}

/// Record the key being viewed by `actor`, then return it. `None`: no key escrowed (or FileVault
/// is not tracked for the device).
pub fn recovery_key(
    tx: &mut dyn Tx,
    device_id: &str,
    actor: &str,
) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
    let Some(key) = tx.recovery_key(device_id)? else {
        return Ok(None);
    };
    tx.record_activity(&NewActivity {
        actor: actor.to_string(),
        kind: "filevault.key_viewed".into(),
        device_id: Some(device_id.to_string()),
        summary: format!("{actor} viewed the FileVault recovery key of {device_id}"),
        details: serde_json::json!({}),
    })?;
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_key_text_reads_plain_text_and_plists() {
        assert_eq!(
            recovery_key_text(b"ABCD-EFGH-IJKL-MNOP-QRST-UVWX\n")
                .as_deref()
                .map(Vec::as_slice),
            Some(&b"ABCD-EFGH-IJKL-MNOP-QRST-UVWX"[..])
        );
        let plist = br#"<?xml version="1.0"?><plist version="1.0"><dict><key>RecoveryKey</key><string>AAAA-BBBB-CCCC-DDDD-EEEE-FFFF</string><key>SerialNumber</key><string>C02X</string></dict></plist>"#;
        assert_eq!(
            recovery_key_text(plist).as_deref().map(Vec::as_slice),
            Some(&b"AAAA-BBBB-CCCC-DDDD-EEEE-FFFF"[..])
        );
        assert!(recovery_key_text(b"  \n").is_none());
    }
}
