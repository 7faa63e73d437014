//! macOS update enforcement and declarative management: which devices get the Nudge profile
//! (macOS before 14) or the software-update declaration (14 and later), only while they run a
//! version below their scope's `minimum_version`; the declaration set a device is served
//! (configurations from desired state plus one activation naming them), its DeclarationsToken,
//! and reading the device's status reports.
//!
//! The server's DDM endpoints ([`crate::server`]) answer from [`device_declarations`]; the
//! reconciler sends a DeclarativeManagement command when a device's token differs from the one
//! it was last asked to sync to.

use serde_json::Value;

use crate::store::{DeclarationStatus, DesiredProfile, ProfileKind, StoreError, Tx};
use crate::timestamp::Timestamp;

/// The activation that turns on every configuration mdmctl serves.
pub const ACTIVATION_ID: &str = "com.mdmctl.activation";

/// The DeclarationsToken of an empty set.
pub const EMPTY_TOKEN: &str = "mdmctl-empty-0";

/// `a` is an older version than `b` (numeric, part by part: `13.6.1` < `14` < `14.0.1`).
pub fn older(a: &str, b: &str) -> bool {
    let parts = |v: &str| -> Vec<u64> {
        v.split('.')
            .map(|p| p.trim().parse::<u64>().unwrap_or(0))
            .collect()
    };
    let (mut x, mut y) = (parts(a), parts(b));
    let n = x.len().max(y.len());
    x.resize(n, 0);
    y.resize(n, 0);
    x < y
}

fn major(v: &str) -> Option<u64> {
    v.split('.').next()?.trim().parse().ok()
}

/// The version an enforcement profile or declaration asks for.
fn target_version(p: &DesiredProfile) -> Option<String> {
    match p.kind {
        ProfileKind::Ddm => {
            let v: Value = serde_json::from_slice(&p.content).ok()?;
            v.pointer("/Payload/TargetOSVersion")?
                .as_str()
                .map(str::to_string)
        }
        ProfileKind::Nudge => {
            let v: plist::Value = crate::apple::plist_in::from_bytes(&p.content).ok()?;
            let settings = v
                .as_dictionary()?
                .get("PayloadContent")?
                .as_array()?
                .first()?
                .as_dictionary()?;
            settings
                .get("osVersionRequirements")?
                .as_array()?
                .first()?
                .as_dictionary()?
                .get("requiredMinimumOSVersion")?
                .as_string()
                .map(str::to_string)
        }
        _ => None,
    }
}

/// Whether a desired profile or declaration applies to a device on `os_version`: admin
/// profiles and FileVault always; Nudge on macOS before 14 and the declaration on 14 and
/// later, both only while the device is below the target version. A device whose version is
/// unknown gets neither until it reports one.
pub fn applies(p: &DesiredProfile, os_version: Option<&str>) -> bool {
    match p.kind {
        ProfileKind::Profile | ProfileKind::FileVault => true,
        ProfileKind::Nudge | ProfileKind::Ddm => {
            let Some(os) = os_version else {
                return false;
            };
            let Some(m) = major(os) else {
                return false;
            };
            let right_tool = if p.kind == ProfileKind::Nudge {
                m < 14
            } else {
                m >= 14
            };
            right_tool && target_version(p).is_none_or(|t| older(os, &t))
        }
    }
}

/// One declaration as served to a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Declaration {
    /// `configuration` or `activation` (the path segment of `declaration/<kind>/<id>`).
    pub kind: &'static str,
    pub identifier: String,
    pub server_token: String,
    /// The declaration's JSON.
    pub body: Vec<u8>,
}

/// The declarations for a device from its desired profiles: each applicable `ddm` entry as a
/// configuration, and one activation naming them all (none when there is nothing to serve).
pub fn declarations_from(desired: &[DesiredProfile], os_version: Option<&str>) -> Vec<Declaration> {
    let mut out: Vec<Declaration> = desired
        .iter()
        .filter(|p| p.kind == ProfileKind::Ddm && applies(p, os_version))
        .filter_map(|p| {
            let v: Value = serde_json::from_slice(&p.content).ok()?;
            Some(Declaration {
                kind: "configuration",
                identifier: v.get("Identifier")?.as_str()?.to_string(),
                server_token: v.get("ServerToken")?.as_str()?.to_string(),
                body: p.content.clone(),
            })
        })
        .collect();
    if out.is_empty() {
        return out;
    }
    let ids: Vec<&str> = out.iter().map(|d| d.identifier.as_str()).collect();
    let token = crate::gitops::sha256_hex(ids.join("\n").as_bytes());
    let activation = serde_json::json!({
        "Type": "com.apple.activation.simple",
        "Identifier": ACTIVATION_ID,
        "ServerToken": &token[..16],
        "Payload": { "StandardConfigurations": ids },
    });
    out.push(Declaration {
        kind: "activation",
        identifier: ACTIVATION_ID.into(),
        server_token: token[..16].to_string(),
        body: serde_json::to_vec(&activation).unwrap_or_default(),
    });
    out
}

/// A device's declarations, from the store.
pub fn device_declarations(
    tx: &mut dyn Tx,
    device_id: &str,
) -> Result<Vec<Declaration>, StoreError> {
    let Some(device) = tx.device(device_id)? else {
        return Ok(Vec::new());
    };
    let desired = tx.device_desired_profiles(device_id)?;
    Ok(declarations_from(&desired, device.os_version.as_deref()))
}

/// The DeclarationsToken of a set: changes whenever any declaration (or its ServerToken) does.
pub fn token(decls: &[Declaration]) -> String {
    if decls.is_empty() {
        return EMPTY_TOKEN.into();
    }
    let mut parts: Vec<String> = decls
        .iter()
        .map(|d| format!("{}/{}/{}", d.kind, d.identifier, d.server_token))
        .collect();
    parts.sort();
    crate::gitops::sha256_hex(parts.join("\n").as_bytes())[..32].to_string()
}

/// The declarations a status report describes (`StatusItems.management.declarations`). Reports
/// carry only what changed, so callers upsert.
pub fn parse_status_report(device_id: &str, json: &[u8], now: Timestamp) -> Vec<DeclarationStatus> {
    let Ok(v) = serde_json::from_slice::<Value>(json) else {
        return Vec::new();
    };
    let Some(groups) = v
        .pointer("/StatusItems/management/declarations")
        .and_then(Value::as_object)
    else {
        return Vec::new();
    };
    groups
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|d| {
            Some(DeclarationStatus {
                device_id: device_id.to_string(),
                identifier: d.get("identifier")?.as_str()?.to_string(),
                server_token: d
                    .get("server-token")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                active: d.get("active").and_then(Value::as_bool),
                valid: d.get("valid").and_then(Value::as_str).map(str::to_string),
                reasons: d.get("reasons").cloned(),
                updated_at: now,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_part_by_part() {
        assert!(older("13.6.1", "14"));
        assert!(older("14", "14.0.1"));
        assert!(older("14.9", "14.10"));
        assert!(!older("15.1", "15.1"));
        assert!(!older("15.1.1", "15.1"));
    }

    fn ddm(min: &str) -> DesiredProfile {
        let content = crate::apple::profile::software_update_declaration(min, "2026-12-01");
        DesiredProfile {
            team: None,
            identifier: crate::apple::profile::SOFTWARE_UPDATE_ID.into(),
            name: "u".into(),
            kind: ProfileKind::Ddm,
            managed: true,
            sha256: crate::gitops::sha256_hex(&content),
            content,
            source: None,
        }
    }

    fn nudge(min: &str) -> DesiredProfile {
        let content = crate::apple::profile::nudge_profile(min, "2026-12-01").unwrap();
        DesiredProfile {
            kind: ProfileKind::Nudge,
            identifier: crate::apple::profile::NUDGE_ID.into(),
            sha256: crate::gitops::sha256_hex(&content),
            content,
            ..ddm(min)
        }
    }

    #[test]
    fn old_macs_get_nudge_new_ones_the_declaration_and_up_to_date_ones_neither() {
        assert!(applies(&nudge("15.2"), Some("13.6.1")));
        assert!(!applies(&ddm("15.2"), Some("13.6.1")));
        assert!(applies(&ddm("15.2"), Some("15.1")));
        assert!(!applies(&nudge("15.2"), Some("15.1")));
        assert!(!applies(&ddm("15.2"), Some("15.2")));
        assert!(!applies(&nudge("13.7"), Some("13.7.1")));
        assert!(!applies(&ddm("15.2"), None));
    }

    #[test]
    fn the_set_has_an_activation_and_a_token_that_follows_its_content() {
        let a = declarations_from(&[ddm("15.2")], Some("15.1"));
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].kind, "activation");
        let act: Value = serde_json::from_slice(&a[1].body).unwrap();
        assert_eq!(
            act["Payload"]["StandardConfigurations"][0],
            crate::apple::profile::SOFTWARE_UPDATE_ID
        );
        let b = declarations_from(&[ddm("15.3")], Some("15.1"));
        assert_ne!(token(&a), token(&b));
        assert_eq!(
            token(&a),
            token(&declarations_from(&[ddm("15.2")], Some("15.0")))
        );
        assert_eq!(token(&[]), EMPTY_TOKEN);
        assert!(declarations_from(&[ddm("15.2")], Some("15.2")).is_empty());
    }

    #[test]
    fn status_reports_are_read_per_declaration() {
        let report = br#"{"StatusItems":{"management":{"declarations":{"activations":[{"active":true,"identifier":"com.mdmctl.activation","valid":"valid","server-token":"a1"}],"configurations":[{"active":false,"identifier":"com.mdmctl.softwareupdate","valid":"invalid","server-token":"c1","reasons":[{"code":"Error.ConfigurationCannotBeApplied"}]}]}}},"Errors":[]}"#;
        let rows = parse_status_report("D1", report, Timestamp(5));
        assert_eq!(rows.len(), 2);
        let c = rows
            .iter()
            .find(|r| r.identifier == "com.mdmctl.softwareupdate")
            .unwrap();
        assert_eq!(c.valid.as_deref(), Some("invalid"));
        assert_eq!(c.active, Some(false));
        assert!(c.reasons.is_some());
        assert!(parse_status_report("D1", b"not json", Timestamp(5)).is_empty());
    }
}
