//! The automated-enrollment profile Apple Business Manager hands a new device ("cloud
//! configuration", Apple's `Profile` object): checked locally against Apple's field list before
//! anything is sent (unknown keys, wrong types, unknown `skip_setup_items`, contradictions Apple
//! would refuse with a bare 400), and completed into what `POST /profile` gets: mdmctl's own
//! enrollment URL unless the admin's JSON names one, and the defaults a managed Mac needs.
//!
//! The admin's JSON comes from GitOps (`mdm.macos_setup.macos_setup_assistant: file.json`);
//! this module neither reads files nor touches the store.

use serde_json::{Map, Value};

/// The largest setup-assistant JSON read (real ones are well under 4 KiB).
pub const MAX_JSON: u64 = 256 * 1024;

/// Where mdmctl answers a device's automated enrollment (the profile's `url`): MicroMDM's path,
/// so a Mac still assigned to MicroMDM's profile in ABM finds this server after the cutover;
/// Fleet's is answered too (`apple::paths::DEP_ENROLL_PATHS`).
pub const ENROLL_PATH: &str = "/mdm/enroll";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Bool,
    Strings,
}

/// Apple's `Profile` keys a definition may carry (developer.apple.com/documentation/
/// devicemanagement/profile; micromdm/nanodep godep `ProfileJson`).
const FIELDS: &[(&str, Kind)] = &[
    ("profile_name", Kind::Str),
    ("url", Kind::Str),
    ("configuration_web_url", Kind::Str),
    ("allow_pairing", Kind::Bool),
    ("is_supervised", Kind::Bool),
    ("is_multi_user", Kind::Bool),
    ("is_mandatory", Kind::Bool),
    ("await_device_configured", Kind::Bool),
    ("is_mdm_removable", Kind::Bool),
    ("auto_advance_setup", Kind::Bool),
    ("is_return_to_service", Kind::Bool),
    ("do_not_use_profile_from_backup", Kind::Bool),
    ("support_phone_number", Kind::Str),
    ("support_email_address", Kind::Str),
    ("org_magic", Kind::Str),
    ("department", Kind::Str),
    ("language", Kind::Str),
    ("region", Kind::Str),
    ("anchor_certs", Kind::Strings),
    ("supervising_host_certs", Kind::Strings),
    ("skip_setup_items", Kind::Strings),
];

/// Keys mdmctl sets itself: naming them in the file would fight the assigner.
const OWN_KEYS: &[(&str, &str)] = &[
    (
        "devices",
        "mdmctl assigns the profile to the team's serial numbers itself",
    ),
    (
        "profile_uuid",
        "Apple gives the UUID when mdmctl defines the profile",
    ),
];

/// Apple's skip keys (apple/device-management `other/skipkeys.yaml`), every platform's.
pub const SKIP_ITEMS: &[&str] = &[
    "Accessibility",
    "ActionButton",
    "AdditionalPrivacySettings",
    "Android",
    "Appearance",
    "AppleID",
    "AppStore",
    "Biometric",
    "CameraButton",
    "DeviceToDeviceMigration",
    "Diagnostics",
    "DisplayTone",
    "EnableLockdownMode",
    "FileVault",
    "HomeButtonSensitivity",
    "iCloudDiagnostics",
    "iCloudStorage",
    "iMessageAndFaceTime",
    "Intelligence",
    "Keyboard",
    "Location",
    "MessagingActivationUsingPhoneNumber",
    "Multitasking",
    "OnBoarding",
    "OSShowcase",
    "Passcode",
    "Payment",
    "Privacy",
    "Restore",
    "RestoreCompleted",
    "ScreenSaver",
    "Safety",
    "SafetyAndHandling",
    "ScreenTime",
    "SIMSetup",
    "Siri",
    "SoftwareUpdate",
    "SpokenLanguage",
    "TapToSetup",
    "TermsOfAddress",
    "Tips",
    "TOS",
    "TVHomeScreenSync",
    "TVProviderSignIn",
    "TVRoom",
    "UnlockWithWatch",
    "UpdateCompleted",
    "Wallpaper",
    "WatchMigration",
    "WebContentFiltering",
    "Welcome",
    "Zoom",
];

/// One problem in a setup-assistant JSON: the key (`skip_setup_items[2]`), where its text
/// starts (1-based line and column; 0 when unknown), what is wrong and what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub expected: String,
}

/// Where `needle` first appears in `text` (1-based), or (0, 0).
fn locate(text: &str, needle: &str) -> (usize, usize) {
    let Some(at) = text.find(needle) else {
        return (0, 0);
    };
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(at, |n| at - n - 1) + 1;
    (line, column)
}

/// Check an admin's setup-assistant JSON; `Ok` is the object as written (canonical JSON is
/// what the store keeps: [`canonical`]).
pub fn validate(text: &str) -> Result<Map<String, Value>, Vec<Problem>> {
    let problem = |key: &str, message: String, expected: &str| {
        let (line, column) = locate(text, &format!("\"{key}\""));
        Problem {
            key: key.to_string(),
            line,
            column,
            message,
            expected: expected.to_string(),
        }
    };
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Err(vec![Problem {
                key: String::new(),
                line: e.line(),
                column: e.column(),
                message: format!("not JSON: {e}"),
                expected: "a JSON object of Apple's profile keys".into(),
            }]);
        }
    };
    let Value::Object(map) = value else {
        return Err(vec![Problem {
            key: String::new(),
            line: 1,
            column: 1,
            message: "not a JSON object".into(),
            expected: "`{\"profile_name\": …, \"skip_setup_items\": […]}`".into(),
        }]);
    };
    let mut problems = Vec::new();
    for (k, v) in &map {
        if let Some((_, why)) = OWN_KEYS.iter().find(|(o, _)| o == k) {
            problems.push(problem(
                k,
                format!("`{k}` is set by mdmctl: {why}"),
                "the key removed",
            ));
            continue;
        }
        let Some((_, kind)) = FIELDS.iter().find(|(f, _)| f == k) else {
            let names: Vec<&str> = FIELDS.iter().map(|(f, _)| *f).collect();
            let hint = crate::diagnose::did_you_mean(k, &names)
                .map(|s| format!("did you mean `{s}`?"))
                .unwrap_or_else(|| "one of Apple's profile keys".into());
            problems.push(problem(k, format!("unknown key `{k}`"), &hint));
            continue;
        };
        let ok = match (kind, v) {
            (Kind::Str, Value::String(_)) | (Kind::Bool, Value::Bool(_)) => true,
            (Kind::Strings, Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) if k == "skip_setup_items" => {
                            if !SKIP_ITEMS.contains(&s.as_str()) {
                                let hint = crate::diagnose::did_you_mean(s, SKIP_ITEMS)
                                    .map(|x| format!("did you mean `{x}`?"))
                                    .unwrap_or_else(|| "one of Apple's skip keys".into());
                                let mut p = problem(k, format!("unknown skip item `{s}`"), &hint);
                                (p.line, p.column) = locate(text, &format!("\"{s}\""));
                                p.key = format!("{k}[{i}]");
                                problems.push(p);
                            }
                        }
                        Value::String(_) => {}
                        other => {
                            let mut p =
                                problem(k, format!("item {i} is {}", json_kind(other)), "strings");
                            p.key = format!("{k}[{i}]");
                            problems.push(p);
                        }
                    }
                }
                true
            }
            _ => false,
        };
        if !ok {
            let want = match kind {
                Kind::Str => "a string",
                Kind::Bool => "true or false",
                Kind::Strings => "a list of strings",
            };
            problems.push(problem(k, format!("found {}", json_kind(v)), want));
        }
    }
    for url_key in ["url", "configuration_web_url"] {
        if let Some(Value::String(u)) = map.get(url_key)
            && !u.starts_with("https://")
            && !u.starts_with("http://")
        {
            problems.push(problem(
                url_key,
                format!("`{u}` is not an http(s) URL"),
                "an https:// URL (or leave `url` out: mdmctl fills its own)",
            ));
        }
    }
    if map.get("is_mdm_removable") == Some(&Value::Bool(false))
        && map.get("is_supervised") == Some(&Value::Bool(false))
    {
        problems.push(problem(
            "is_mdm_removable",
            "`is_mdm_removable: false` needs a supervised device, and `is_supervised` is false"
                .into(),
            "`is_supervised: true`, or `is_mdm_removable: true`",
        ));
    }
    if problems.is_empty() {
        Ok(map)
    } else {
        Err(problems)
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The stored form of a validated JSON: keys sorted, no whitespace.
pub fn canonical(map: &Map<String, Value>) -> String {
    let sorted: std::collections::BTreeMap<&String, &Value> = map.iter().collect();
    serde_json::to_string(&sorted).unwrap_or_default()
}

/// The profile `POST /profile` gets for a scope (`team` `None`: devices in no team): the
/// admin's JSON (already validated) or nothing, completed with mdmctl's enrollment URL under
/// `server_url` unless it names one, a name, and a managed Mac's defaults where the admin said
/// nothing (supervised, not removable, held in Setup Assistant until mdmctl releases it).
pub fn build(
    admin: Option<&str>,
    server_url: Option<&str>,
    team: Option<&str>,
) -> Result<Value, String> {
    let mut map = match admin {
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            _ => return Err("the stored setup-assistant JSON is not an object".into()),
        },
        None => Map::new(),
    };
    if !map.contains_key("url") {
        let Some(base) = server_url else {
            return Err(
                "no server URL is recorded and the setup-assistant JSON names no `url`".into(),
            );
        };
        map.insert(
            "url".into(),
            format!("{}{ENROLL_PATH}", base.trim_end_matches('/')).into(),
        );
    }
    map.entry("profile_name").or_insert_with(|| {
        format!(
            "mdmctl enrollment ({})",
            team.map_or_else(|| "no team".to_string(), |t| format!("team {t}"))
        )
        .into()
    });
    map.entry("is_supervised").or_insert(true.into());
    let supervised = map.get("is_supervised") == Some(&Value::Bool(true));
    map.entry("is_mdm_removable")
        .or_insert((!supervised).into());
    map.entry("await_device_configured").or_insert(true.into());
    Ok(Value::Object(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_profile_passes_and_is_completed() -> Result<(), Box<dyn std::error::Error>> {
        let text = r#"{
  "profile_name": "Staff Macs",
  "is_supervised": true,
  "skip_setup_items": ["AppleID", "Siri", "TOS"],
  "language": "en", "region": "US", "org_magic": "1"
}"#;
        let map = validate(text).map_err(|p| format!("{p:?}"))?;
        let built = build(
            Some(&canonical(&map)),
            Some("https://mdm.example.com/"),
            Some("Staff"),
        )?;
        assert_eq!(built["url"], "https://mdm.example.com/mdm/enroll");
        assert_eq!(built["profile_name"], "Staff Macs");
        assert_eq!(built["is_mdm_removable"], false);
        assert_eq!(built["await_device_configured"], true);
        Ok(())
    }

    #[test]
    fn the_admins_url_is_kept_and_no_url_at_all_is_refused()
    -> Result<(), Box<dyn std::error::Error>> {
        let built = build(Some(r#"{"url":"https://other.example.com/x"}"#), None, None)?;
        assert_eq!(built["url"], "https://other.example.com/x");
        assert!(
            build(None, None, None)
                .unwrap_err()
                .contains("no server URL")
        );
        Ok(())
    }

    #[test]
    fn problems_name_the_key_and_its_line() -> Result<(), Box<dyn std::error::Error>> {
        let text = "{\n  \"profile_name\": \"x\",\n  \"is_supervised\": \"yes\",\n  \"skip_setup_items\": [\"AppleID\", \"Sirri\"],\n  \"devcies\": []\n}";
        let p = validate(text).unwrap_err();
        let keys: Vec<(&str, usize)> = p.iter().map(|p| (p.key.as_str(), p.line)).collect();
        assert!(keys.contains(&("is_supervised", 3)), "{p:?}");
        assert!(keys.contains(&("skip_setup_items[1]", 4)), "{p:?}");
        assert!(keys.contains(&("devcies", 5)), "{p:?}");
        let sirri = p
            .iter()
            .find(|p| p.key == "skip_setup_items[1]")
            .ok_or("no problem for `Sirri`")?;
        assert!(sirri.expected.contains("`Siri`"), "{sirri:?}");
        let devices = validate(r#"{"devices": ["C02"]}"#).unwrap_err();
        assert!(devices[0].message.contains("set by mdmctl"));
        assert_eq!(validate("[1]").unwrap_err()[0].message, "not a JSON object");
        assert_eq!(validate("{\n\"a\": ").unwrap_err()[0].line, 2);
        let contradiction =
            validate(r#"{"is_supervised": false, "is_mdm_removable": false}"#).unwrap_err();
        assert_eq!(contradiction[0].key, "is_mdm_removable");
        Ok(())
    }

    #[test]
    fn a_nesting_bomb_is_a_problem_not_a_crash() {
        let bomb = format!("{{\"skip_setup_items\": {}", "[".repeat(200_000));
        assert!(
            validate(&bomb).unwrap_err()[0]
                .message
                .starts_with("not JSON")
        );
    }

    proptest::proptest! {
        #[test]
        fn any_text_ends_in_a_map_or_problems(text in "\\PC{0,300}") {
            match validate(&text) {
                Ok(map) => proptest::prop_assert!(build(Some(&canonical(&map)), Some("https://x"), None).is_ok()),
                Err(p) => proptest::prop_assert!(!p.is_empty()),
            }
        }

        #[test]
        fn json_objects_of_known_keys_with_any_values_never_panic(
            pairs in proptest::collection::vec((0usize..21, proptest::arbitrary::any::<u8>()), 0..8)
        ) {
            let mut m = serde_json::Map::new();
            for (k, v) in pairs {
                let value = match v % 4 { 0 => Value::Bool(v % 8 == 0), 1 => Value::from(v), 2 => Value::from("Siri"), _ => serde_json::json!(["AppleID", v]) };
                m.insert(FIELDS[k].0.to_string(), value);
            }
            let _ = validate(&Value::Object(m).to_string());
        }
    }
}
