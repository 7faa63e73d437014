//! Configuration profiles (`.mobileconfig`): reading the admin's (XML, binary, or CMS-signed),
//! checking them against what Apple and mdmctl require, and building mdmctl's own (FileVault,
//! Nudge, the software-update enforcement declaration).
//!
//! Payload checks use a compact table generated from Apple's schemas (apple/device-management
//! `mdm/profiles/*.yaml`): the known payload types and the keys each requires.

use std::collections::HashMap;
use std::sync::OnceLock;

use plist::{Dictionary, Value};

/// Payload type → keys the schema marks required (generated from apple/device-management).
const PAYLOAD_TYPES: &str = include_str!("payload_types.tsv");

fn payload_table() -> &'static HashMap<&'static str, Vec<&'static str>> {
    static TABLE: OnceLock<HashMap<&'static str, Vec<&'static str>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        PAYLOAD_TYPES
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (t, keys) = l.split_once('\t').unwrap_or((l, ""));
                (t, keys.split(',').filter(|k| !k.is_empty()).collect())
            })
            .collect()
    })
}

/// Payload types mdmctl builds itself, and the setting to use instead.
pub const MANAGED_PAYLOADS: &[(&str, &str)] = &[
    (
        "com.apple.MCX.FileVault2",
        "mdm.macos_settings.enable_disk_encryption",
    ),
    (
        "com.apple.security.FDERecoveryKeyEscrow",
        "mdm.macos_settings.enable_disk_encryption",
    ),
    (
        "com.apple.security.FDERecoveryRedirect",
        "mdm.macos_settings.enable_disk_encryption",
    ),
    ("com.github.macadmins.Nudge", "mdm.macos_updates"),
];

/// A profile as read from a file.
#[derive(Clone, Debug)]
pub struct ParsedProfile {
    pub identifier: String,
    pub display_name: String,
    pub uuid: String,
    /// `System` (the default) or `User`.
    pub scope: String,
    pub payload_types: Vec<String>,
    /// The file was CMS SignedData (its signature verified, its content read).
    pub signed: bool,
}

/// A problem with a profile: what is wrong, and what is expected instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileProblem {
    pub message: String,
    pub expected: String,
}

fn problem(message: impl Into<String>, expected: impl Into<String>) -> ProfileProblem {
    ProfileProblem {
        message: message.into(),
        expected: expected.into(),
    }
}

/// The plist inside a CMS SignedData blob, if `bytes` is one (the signature must verify; the
/// signer's chain is not checked: devices do that).
pub(crate) fn unwrap_signed(bytes: &[u8]) -> Option<Result<Vec<u8>, ProfileProblem>> {
    // DER SEQUENCE; plists start with `<` (XML, maybe after a BOM/whitespace) or `bplist`.
    if bytes.first() != Some(&0x30) {
        return None;
    }
    let p7 = match openssl::pkcs7::Pkcs7::from_der(bytes) {
        Ok(p) => p,
        Err(_) => {
            return Some(Err(problem(
                "looks like DER but is not CMS SignedData",
                "an XML or binary plist, or a CMS-signed profile",
            )));
        }
    };
    let certs = match openssl::stack::Stack::new() {
        Ok(s) => s,
        Err(e) => return Some(Err(problem(e.to_string(), "a readable profile"))),
    };
    let store = match openssl::x509::store::X509StoreBuilder::new() {
        Ok(b) => b.build(),
        Err(e) => return Some(Err(problem(e.to_string(), "a readable profile"))),
    };
    let mut out = Vec::new();
    match p7.verify(
        &certs,
        &store,
        None,
        Some(&mut out),
        openssl::pkcs7::Pkcs7Flags::NOVERIFY,
    ) {
        Ok(()) => Some(Ok(out)),
        Err(_) => Some(Err(problem(
            "the CMS signature does not verify (the content was changed after signing, or the signature is damaged)",
            "a profile signed over its exact content; sign it again",
        ))),
    }
}

/// Read a `.mobileconfig` and check it. Returns the parsed facts, or every problem found.
pub fn check_profile(bytes: &[u8]) -> Result<ParsedProfile, Vec<ProfileProblem>> {
    let (plist_bytes, signed) = match unwrap_signed(bytes) {
        Some(Ok(inner)) => (inner, true),
        Some(Err(p)) => return Err(vec![p]),
        None => (bytes.to_vec(), false),
    };
    let value =
        super::plist_in::parse(&plist_bytes, super::plist_in::Limits::default()).map_err(|e| {
            vec![problem(
                format!("not a property list ({e})"),
                "an XML or binary plist of ordinary depth, or a CMS-signed profile",
            )]
        })?;
    let Some(top) = value.as_dictionary() else {
        return Err(vec![problem(
            "the top level is not a dictionary",
            "a dictionary with `PayloadType` `Configuration`",
        )]);
    };
    let mut problems = Vec::new();
    let text = |d: &Dictionary, k: &str| d.get(k).and_then(Value::as_string).map(str::to_string);

    match text(top, "PayloadType").as_deref() {
        Some("Configuration") => {}
        Some(other) => problems.push(problem(
            format!("top-level `PayloadType` is `{other}`"),
            "`Configuration`",
        )),
        None => problems.push(problem(
            "top-level `PayloadType` is missing",
            "`Configuration`",
        )),
    }
    let mut required = |k: &str, what: &str| match text(top, k) {
        Some(v) if !v.trim().is_empty() => v,
        _ => {
            problems.push(problem(format!("`{k}` is missing or empty"), what));
            String::new()
        }
    };
    let identifier = required("PayloadIdentifier", "a reverse-DNS identifier string");
    let display_name = required("PayloadDisplayName", "a name shown to users");
    let uuid = required("PayloadUUID", "a UUID string");
    let scope = match text(top, "PayloadScope") {
        None => "System".to_string(),
        Some(s) if s == "System" || s == "User" => s,
        Some(s) => {
            problems.push(problem(
                format!("`PayloadScope` is `{s}`"),
                "`System` or `User`",
            ));
            s
        }
    };
    if identifier.starts_with(crate::gitops::RESERVED_PREFIX) {
        problems.push(problem(
            format!("`PayloadIdentifier` `{identifier}` is reserved for mdmctl's own profiles"),
            format!(
                "an identifier outside `{}…`",
                crate::gitops::RESERVED_PREFIX
            ),
        ));
    }

    let mut payload_types = Vec::new();
    match top.get("PayloadContent") {
        None => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let Some(d) = item.as_dictionary() else {
                    problems.push(problem(
                        format!("`PayloadContent[{i}]` is not a dictionary"),
                        "a payload dictionary",
                    ));
                    continue;
                };
                check_payload(i, d, &mut problems);
                if let Some(t) = text(d, "PayloadType") {
                    payload_types.push(t);
                }
            }
        }
        Some(_) => problems.push(problem(
            "`PayloadContent` is not an array",
            "an array of payload dictionaries",
        )),
    }
    if problems.is_empty() {
        Ok(ParsedProfile {
            identifier,
            display_name,
            uuid,
            scope,
            payload_types,
            signed,
        })
    } else {
        Err(problems)
    }
}

fn check_payload(i: usize, d: &Dictionary, problems: &mut Vec<ProfileProblem>) {
    let at = |k: &str| format!("`PayloadContent[{i}].{k}`");
    let Some(ptype) = d.get("PayloadType").and_then(Value::as_string) else {
        problems.push(problem(
            format!("{} is missing", at("PayloadType")),
            "a payload type such as `com.apple.wifi.managed`",
        ));
        return;
    };
    for k in ["PayloadIdentifier", "PayloadUUID"] {
        if d.get(k)
            .and_then(Value::as_string)
            .is_none_or(str::is_empty)
        {
            problems.push(problem(format!("{} is missing", at(k)), "a string"));
        }
    }
    if let Some((_, setting)) = MANAGED_PAYLOADS.iter().find(|(t, _)| *t == ptype) {
        problems.push(problem(
            format!("payload `{ptype}` is one mdmctl manages itself"),
            format!("the `{setting}` setting instead of a profile"),
        ));
        return;
    }
    let table = payload_table();
    match table.get(ptype) {
        Some(required) => {
            for k in required {
                if !d.contains_key(k) {
                    problems.push(problem(
                        format!("payload `{ptype}` lacks the required key `{k}`"),
                        format!("`{k}` as Apple's schema for `{ptype}` describes"),
                    ));
                }
            }
        }
        // Custom preference domains (`com.microsoft.autoupdate2`, …) are legitimate payload
        // types; an unknown `com.apple.` type is a typo or something Apple does not support.
        None if ptype.starts_with("com.apple.") => {
            let names: Vec<&str> = table.keys().copied().collect();
            let hint = crate::diagnose::did_you_mean(ptype, &names)
                .map(|s| format!("did you mean `{s}`?"))
                .unwrap_or_else(|| "a payload type from Apple's schema".into());
            problems.push(problem(format!("unknown payload type `{ptype}`"), hint));
        }
        None => {}
    }
}

/// Identifiers of mdmctl's own profiles (all under [`crate::gitops::RESERVED_PREFIX`]).
pub const FILEVAULT_ID: &str = "com.mdmctl.filevault";
pub const NUDGE_ID: &str = "com.mdmctl.nudge";
pub const SOFTWARE_UPDATE_ID: &str = "com.mdmctl.softwareupdate";

/// A UUID that depends only on `seed`: rebuilding the same profile gives the same bytes, so an
/// unchanged setting never shows up as a change.
fn stable_uuid(seed: &str) -> String {
    let h = openssl::sha::sha256(seed.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    // RFC 4122 variant, version 8 (custom).
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(b)
        .hyphenated()
        .to_string()
        .to_uppercase()
}

fn payload(ptype: &str, id: &str, seed: &str, keys: Vec<(&str, Value)>) -> Value {
    let mut d = Dictionary::new();
    d.insert("PayloadType".into(), ptype.into());
    d.insert("PayloadIdentifier".into(), id.into());
    d.insert(
        "PayloadUUID".into(),
        stable_uuid(&format!("{seed}/{id}")).into(),
    );
    d.insert("PayloadVersion".into(), 1.into());
    for (k, v) in keys {
        d.insert(k.into(), v);
    }
    Value::Dictionary(d)
}

fn configuration(
    id: &str,
    name: &str,
    description: &str,
    seed: &str,
    content: Vec<Value>,
) -> Vec<u8> {
    let mut d = Dictionary::new();
    d.insert("PayloadType".into(), "Configuration".into());
    d.insert("PayloadIdentifier".into(), id.into());
    d.insert("PayloadDisplayName".into(), name.into());
    d.insert("PayloadDescription".into(), description.into());
    d.insert("PayloadOrganization".into(), "mdmctl".into());
    d.insert("PayloadScope".into(), "System".into());
    d.insert(
        "PayloadUUID".into(),
        stable_uuid(&format!("{seed}/{id}")).into(),
    );
    d.insert("PayloadVersion".into(), 1.into());
    d.insert("PayloadContent".into(), Value::Array(content));
    let mut out = Vec::new();
    // Writing a plist into memory cannot fail for these value types.
    let _ = Value::Dictionary(d).to_writer_xml(&mut out);
    out
}

/// The FileVault profile: enable FileVault at the next logout (deferred), escrow the personal
/// recovery key to mdmctl (encrypted to `escrow_cert_der`, carried in a `pkcs1` payload of the
/// same profile), never show the key to the user, and forbid turning FileVault off.
pub fn filevault_profile(escrow_cert_der: &[u8]) -> Vec<u8> {
    let seed = crate::gitops::sha256_hex(escrow_cert_der);
    let cert_id = format!("{FILEVAULT_ID}.escrow-certificate");
    let cert_uuid = stable_uuid(&format!("{seed}/{cert_id}"));
    let content = vec![
        payload(
            "com.apple.MCX.FileVault2",
            &format!("{FILEVAULT_ID}.enable"),
            &seed,
            vec![
                ("Enable", "On".into()),
                ("Defer", true.into()),
                ("DeferForceAtUserLoginMaxBypassAttempts", 1.into()),
                ("DeferDontAskAtUserLogout", false.into()),
                ("UseRecoveryKey", true.into()),
                ("ShowRecoveryKey", false.into()),
            ],
        ),
        payload(
            "com.apple.security.FDERecoveryKeyEscrow",
            &format!("{FILEVAULT_ID}.escrow"),
            &seed,
            vec![
                (
                    "Location",
                    "Your organization's MDM server (mdmctl) keeps the recovery key.".into(),
                ),
                ("EncryptCertPayloadUUID", cert_uuid.as_str().into()),
            ],
        ),
        {
            // The pkcs1 payload's UUID is the one EncryptCertPayloadUUID points at.
            let mut d = Dictionary::new();
            d.insert("PayloadType".into(), "com.apple.security.pkcs1".into());
            d.insert("PayloadIdentifier".into(), cert_id.as_str().into());
            d.insert("PayloadUUID".into(), cert_uuid.as_str().into());
            d.insert("PayloadVersion".into(), 1.into());
            d.insert(
                "PayloadDisplayName".into(),
                "FileVault escrow certificate".into(),
            );
            d.insert(
                "PayloadCertificateFileName".into(),
                "mdmctl-escrow.cer".into(),
            );
            d.insert(
                "PayloadContent".into(),
                Value::Data(escrow_cert_der.to_vec()),
            );
            Value::Dictionary(d)
        },
        payload(
            "com.apple.MCX",
            &format!("{FILEVAULT_ID}.keep-enabled"),
            &seed,
            vec![("dontAllowFDEDisable", true.into())],
        ),
    ];
    configuration(
        FILEVAULT_ID,
        "Disk encryption (FileVault)",
        "Turns FileVault on at the next logout and escrows the recovery key to mdmctl.",
        &seed,
        content,
    )
}

/// Noon UTC on the deadline day, as a plist date.
fn deadline_date(deadline: &str) -> Option<plist::Date> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let d = time::Date::parse(deadline, &format).ok()?;
    let t = d.with_hms(12, 0, 0).ok()?.assume_utc();
    Some(plist::Date::from(std::time::SystemTime::from(t)))
}

/// The Nudge profile (macOS before 14): a reminder once a day that the user may defer while
/// more than a day remains, every 2 hours in the last day, and after the deadline a window that
/// cannot be closed until macOS is updated. `None` if `deadline` is not `YYYY-MM-DD`.
pub fn nudge_profile(minimum_version: &str, deadline: &str) -> Option<Vec<u8>> {
    let date = deadline_date(deadline)?;
    let seed = format!("{minimum_version}/{deadline}");
    let dict = |pairs: Vec<(&str, Value)>| {
        let mut d = Dictionary::new();
        for (k, v) in pairs {
            d.insert(k.into(), v);
        }
        Value::Dictionary(d)
    };
    let requirement = dict(vec![
        ("requiredMinimumOSVersion", minimum_version.into()),
        ("requiredInstallationDate", Value::Date(date)),
        ("targetedOSVersionsRule", "default".into()),
        (
            "aboutUpdateURL",
            "https://support.apple.com/en-us/HT201541".into(),
        ),
    ]);
    let experience = dict(vec![
        // More than a day left: once a day, and the user may defer and close the window.
        ("initialRefreshCycle", 86_400.into()),
        ("approachingWindowTime", 24.into()),
        // The last day: every 2 hours, still deferrable.
        ("approachingRefreshCycle", 7_200.into()),
        ("imminentWindowTime", 24.into()),
        ("imminentRefreshCycle", 7_200.into()),
        // Past the deadline: back every 5 minutes, and (aggressive mode) no way to close it.
        ("elapsedRefreshCycle", 300.into()),
        ("allowUserQuitDeferrals", true.into()),
        ("allowLaterDeferralButton", true.into()),
        ("allowedDeferrals", 1_000_000.into()),
        ("allowedDeferralsUntilForcedSecondaryQuitButton", 14.into()),
        ("randomDelay", false.into()),
    ]);
    let features = dict(vec![
        ("aggressiveUserExperience", true.into()),
        ("aggressiveUserFullScreenExperience", true.into()),
        ("asynchronousSoftwareUpdate", true.into()),
        ("enforceMinorUpdates", true.into()),
    ]);
    let content = vec![payload(
        "com.github.macadmins.Nudge",
        &format!("{NUDGE_ID}.settings"),
        &seed,
        vec![
            ("osVersionRequirements", Value::Array(vec![requirement])),
            ("userExperience", experience),
            ("optionalFeatures", features),
        ],
    )];
    Some(configuration(
        NUDGE_ID,
        "macOS update reminders (Nudge)",
        &format!("Asks to update to macOS {minimum_version} or later by {deadline}."),
        &seed,
        content,
    ))
}

/// The declarative software-update enforcement (macOS 14 and later), as the declaration's JSON.
pub fn software_update_declaration(minimum_version: &str, deadline: &str) -> Vec<u8> {
    let payload = serde_json::json!({
        "TargetOSVersion": minimum_version,
        "TargetLocalDateTime": format!("{deadline}T12:00:00"),
    });
    let token = crate::gitops::sha256_hex(payload.to_string().as_bytes());
    let declaration = serde_json::json!({
        "Type": "com.apple.configuration.softwareupdate.enforcement.specific",
        "Identifier": SOFTWARE_UPDATE_ID,
        "ServerToken": &token[..16],
        "Payload": payload,
    });
    serde_json::to_vec_pretty(&declaration).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(payloads: &str, top_extra: &str) -> Vec<u8> {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict>
<key>PayloadType</key><string>Configuration</string>
<key>PayloadIdentifier</key><string>com.example.p</string>
<key>PayloadDisplayName</key><string>P</string>
<key>PayloadUUID</key><string>6B9B7D5B-3A52-4C3A-9D0A-0C2D7F1B9E11</string>
<key>PayloadVersion</key><integer>1</integer>
{top_extra}
<key>PayloadContent</key><array>{payloads}</array>
</dict></plist>"#
        )
        .into_bytes()
    }

    fn payload(t: &str, body: &str) -> String {
        format!(
            "<dict><key>PayloadType</key><string>{t}</string><key>PayloadIdentifier</key><string>x.{t}</string><key>PayloadUUID</key><string>U-{t}</string><key>PayloadVersion</key><integer>1</integer>{body}</dict>"
        )
    }

    #[test]
    fn good_profile_parses() {
        let p = check_profile(&profile(
            &payload(
                "com.apple.wifi.managed",
                "<key>SSID_STR</key><string>Corp</string>",
            ),
            "",
        ))
        .unwrap();
        assert_eq!(p.identifier, "com.example.p");
        assert_eq!(p.scope, "System");
        assert_eq!(p.payload_types, ["com.apple.wifi.managed"]);
    }

    #[test]
    fn problems_are_all_reported() {
        let errs = check_profile(&profile(
            &format!(
                "{}{}{}",
                payload("com.apple.MCX.FileVault2", ""),
                payload("com.apple.wifii.managed", ""),
                payload("com.apple.TCC.configuration-profile-policy", "")
            ),
            "<key>PayloadScope</key><string>Everyone</string>",
        ))
        .unwrap_err();
        let all: Vec<String> = errs.iter().map(|p| format!("{p:?}")).collect();
        assert_eq!(errs.len(), 4, "{all:#?}");
        assert!(errs[0].message.contains("PayloadScope"));
        assert!(errs[1].expected.contains("enable_disk_encryption"));
        assert!(
            errs[2].expected.contains("com.apple.wifi.managed"),
            "{all:#?}"
        );
        assert!(errs[3].message.contains("`Services`"));
    }

    #[test]
    fn own_profiles_carry_the_keys_apples_schemas_require() {
        let key =
            openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let cert = crate::pki::self_signed("escrow", &key, 30).unwrap();
        let der = cert.to_der().unwrap();
        let fv = filevault_profile(&der);
        let nudge = nudge_profile("15.1", "2026-12-01").unwrap();
        // Rebuilding gives the same bytes (no spurious changes in plans).
        assert_eq!(fv, filevault_profile(&der));
        assert_eq!(nudge, nudge_profile("15.1", "2026-12-01").unwrap());
        let table = payload_table();
        for bytes in [&fv, &nudge] {
            let top = Value::from_reader_xml(bytes.as_slice()).unwrap();
            let top = top.as_dictionary().unwrap();
            for k in ["PayloadIdentifier", "PayloadDisplayName", "PayloadUUID"] {
                assert!(top.contains_key(k));
            }
            for p in top["PayloadContent"].as_array().unwrap() {
                let d = p.as_dictionary().unwrap();
                let t = d["PayloadType"].as_string().unwrap();
                for k in table.get(t).map(Vec::as_slice).unwrap_or_default() {
                    assert!(d.contains_key(k), "{t} lacks {k}");
                }
            }
        }
        assert_eq!(
            table["com.apple.security.FDERecoveryKeyEscrow"],
            ["Location", "EncryptCertPayloadUUID"]
        );
        assert!(nudge_profile("15.1", "2026-02-30").is_none());
    }
}
