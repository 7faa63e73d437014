//! Validation: every problem of a run reported at once, each naming its file, line and column,
//! document and key path, what is wrong and what is expected; nothing written.

use crate::common::TestContext;
use crate::{profile, sqlite_dump, wifi};

#[test]
fn every_problem_is_reported_at_once_and_nothing_is_written() {
    let ctx = TestContext::new();
    ctx.init();
    ctx.write(
        "repo/p/wifi.mobileconfig",
        wifi("com.example.wifi", "Wi-Fi", "Corp"),
    );
    ctx.write(
        "repo/p/wifi2.mobileconfig",
        wifi("com.example.wifi", "Wi-Fi", "Guest"),
    );
    ctx.write(
        "repo/p/fv.mobileconfig",
        profile(
            "com.example.fv",
            "FV",
            "com.apple.MCX.FileVault2",
            "<key>Enable</key><string>On</string>",
        ),
    );
    ctx.write(
        "repo/p/nudge.mobileconfig",
        profile(
            "com.example.nudge",
            "Nudge",
            "com.github.macadmins.Nudge",
            "",
        ),
    );
    ctx.write(
        "repo/p/reserved.mobileconfig",
        wifi("com.mdmctl.sneaky", "Sneaky", "X"),
    );
    ctx.write(
        "repo/p/pppc.mobileconfig",
        profile(
            "com.example.pppc",
            "PPPC",
            "com.apple.TCC.configuration-profile-policy",
            "",
        ),
    );
    ctx.write(
        "repo/p/scope.mobileconfig",
        wifi("com.example.scope", "Scope", "X").replace(
            "<key>PayloadType</key>\n\t<string>Configuration</string>",
            "<key>PayloadType</key>\n\t<string>Configuration</string>\n\t<key>PayloadScope</key>\n\t<string>Everyone</string>",
        ),
    );
    ctx.write("repo/p/garbage.mobileconfig", "this is not a plist");
    ctx.write(
        "repo/config.yml",
        r#"apiVersion: v1
kind: config
spec:
  mdm:
    macos_update:
      minimum_version: "15.1"
    macos_settings:
      enable_disk_encryption: yes please
      custom_settings:
        - p/wifi.mobileconfig
        - p/fv.mobileconfig
        - p/nudge.mobileconfig
        - p/reserved.mobileconfig
        - p/missing.mobileconfig
---
apiVersion: v1
kind: team
spec:
  team:
    name: Workstations
    mdm:
      macos_updates:
        minimum_version: "fifteen"
        deadline: "2026-13-01"
      macos_settings:
        custom_settings:
          - p/wifi2.mobileconfig
          - p/pppc.mobileconfig
          - p/scope.mobileconfig
          - p/garbage.mobileconfig
---
apiVersion: v1
kind: team
spec:
  team:
    name: Workstations
    mdm:
      macos_updates: {minimum_version: "15.2"}
---
apiVersion: v1
kind: teem
spec: {}
"#,
    );
    let before = sqlite_dump(&ctx.db());
    let r = ctx.run(&["apply", "-f", "repo/config.yml"]);
    r.user_error();
    let err = &r.stderr;
    let file = ctx.path("repo/config.yml");
    let f = file.display();
    for needle in [
        // Unknown key, with its line and column and a suggestion.
        format!("{f}:5:5: config › mdm.macos_update: unknown key `macos_update` (expected did you mean `macos_updates`?"),
        format!("{f}:8:31: config › mdm.macos_settings.enable_disk_encryption: found a string (expected `true` or `false`)"),
        "payload `com.apple.MCX.FileVault2` is one mdmctl manages itself (expected the `mdm.macos_settings.enable_disk_encryption` setting instead of a profile)".to_string(),
        "payload `com.github.macadmins.Nudge` is one mdmctl manages itself (expected the `mdm.macos_updates` setting instead of a profile)".to_string(),
        "`PayloadIdentifier` `com.mdmctl.sneaky` is reserved for mdmctl's own profiles".to_string(),
        format!("{f}:14:11: config › mdm.macos_settings.custom_settings[4]: cannot read"),
        format!("{f}:23:26: team Workstations › mdm.macos_updates.minimum_version: `fifteen` is not a macOS version (expected 1 to 3 dot-separated numbers"),
        format!("{f}:24:19: team Workstations › mdm.macos_updates.deadline: `2026-13-01` is not a date (expected `YYYY-MM-DD`"),
        format!("{f}:27:13: team Workstations › mdm.macos_settings.custom_settings[0]: `PayloadIdentifier` `com.example.wifi` names a different profile in config"),
        "payload `com.apple.TCC.configuration-profile-policy` lacks the required key `Services`".to_string(),
        "`PayloadScope` is `Everyone` (expected `System` or `User`)".to_string(),
        "profile `p/garbage.mobileconfig`: not a property list".to_string(),
        format!("{f}:38:22: team Workstations › mdm.macos_updates: `minimum_version` without `deadline` (expected both `minimum_version` and `deadline`, or neither)"),
        format!("{f}:36:11: team Workstations › team.name: team `Workstations` is defined more than once"),
        format!("{f}:41:7: document 4 › kind: unknown kind `teem` (expected did you mean `team`?)"),
    ] {
        r.stderr_has(&needle);
    }
    assert!(
        err.contains("error: 15 problems in the configuration; nothing was applied"),
        "{err}"
    );
    r.stderr_has("hint: fix the problems listed above");
    assert_eq!(
        sqlite_dump(&ctx.db()),
        before,
        "a refused apply wrote something"
    );
}

#[test]
fn yaml_syntax_errors_name_the_line_and_column() {
    let ctx = TestContext::new();
    ctx.init();
    ctx.write(
        "bad.yml",
        "apiVersion: v1\nkind: config\nspec:\n  mdm: [unclosed\n",
    );
    let r = ctx.run(&["apply", "-f", "bad.yml"]);
    r.user_error();
    let f = ctx.path("bad.yml");
    r.stderr_has(&format!("{}:", f.display()));
    r.stderr_has("invalid YAML");
    r.stderr_has("1 problem in the configuration");
}

#[test]
fn unset_variables_are_errors_and_set_ones_expand() {
    let ctx = TestContext::new();
    ctx.init();
    ctx.write(
        "env.yml",
        "apiVersion: v1\nkind: team\nspec:\n  team:\n    name: ${TEAM_NAME}\n    mdm:\n      macos_updates: {minimum_version: \"$MIN_OS\", deadline: \"2027-01-01\"}\n",
    );
    let r = ctx.run(&["apply", "-f", "env.yml"]);
    r.user_error();
    let f = ctx.path("env.yml");
    r.stderr_has(&format!(
        "{}:5:11: environment variable `TEAM_NAME` is not set",
        f.display()
    ));
    r.stderr_has(&format!(
        "{}:7:41: environment variable `MIN_OS` is not set",
        f.display()
    ));
    let r = ctx.run_with(&["apply", "-f", "env.yml"], |c| {
        c.env("TEAM_NAME", "Lab").env("MIN_OS", "15.3");
    });
    r.success();
    r.stdout_has("+ team Lab");
    let teams = ctx
        .run(&["get", "teams", "--format", "json"])
        .success()
        .json();
    assert_eq!(teams[0]["name"], "Lab");
    assert_eq!(teams[0]["minimum_version"], "15.3");
}

#[test]
fn unknown_keys_can_be_warnings() {
    let ctx = TestContext::new();
    ctx.init();
    ctx.write(
        "c.yml",
        "apiVersion: v1\nkind: config\nspec:\n  mdm:\n    macos_settings:\n      enable_disk_encryptoin: true\n",
    );
    let r = ctx.run(&["apply", "-f", "c.yml"]);
    r.user_error();
    r.stderr_has(
        "unknown key `enable_disk_encryptoin` (expected did you mean `enable_disk_encryption`?",
    );
    let r = ctx.run(&["apply", "-f", "c.yml", "--allow-unknown-keys"]);
    r.success();
    r.stderr_has("warning: ");
    r.stderr_has("unknown key `enable_disk_encryptoin`");
}

#[test]
fn default_team_must_exist_after_the_apply() {
    let ctx = TestContext::new();
    ctx.init();
    ctx.write(
        "c.yml",
        "apiVersion: v1\nkind: config\nspec:\n  mdm:\n    apple_bm_default_team: Workstation\n---\napiVersion: v1\nkind: team\nspec:\n  team:\n    name: Workstations\n",
    );
    let before = sqlite_dump(&ctx.db());
    let r = ctx.run(&["apply", "-f", "c.yml", "--dry-run"]);
    r.user_error();
    r.stderr_has(&format!(
        "{}:5:28: config › mdm.apple_bm_default_team: team `Workstation` does not exist (expected did you mean `Workstations`?",
        ctx.path("c.yml").display()
    ));
    assert_eq!(sqlite_dump(&ctx.db()), before);
    // A team that already exists in the store is fine without its document.
    ctx.write(
        "t.yml",
        "apiVersion: v1\nkind: team\nspec:\n  team:\n    name: Workstation\n",
    );
    ctx.run(&["apply", "-f", "t.yml"]).success();
    ctx.write(
        "c2.yml",
        "apiVersion: v1\nkind: config\nspec:\n  mdm:\n    apple_bm_default_team: Workstation\n",
    );
    ctx.run(&["apply", "-f", "c2.yml"]).success();

    // Reported together with problems in the files, in one run.
    ctx.write(
        "c3.yml",
        "apiVersion: v1\nkind: config\nspec:\n  mdm:\n    apple_bm_default_team: Nope\n    macos_updates: {minimum_version: \"x\", deadline: \"2027-01-01\"}\n",
    );
    let r = ctx.run(&["apply", "-f", "c3.yml"]);
    r.user_error();
    r.stderr_has("team `Nope` does not exist");
    r.stderr_has("`x` is not a macOS version");
    r.stderr_has("2 problems in the configuration");
}

#[test]
fn a_tampered_signed_profile_is_refused() {
    let ctx = TestContext::new();
    ctx.init();
    ctx.write("p.xml", wifi("com.example.signed", "Signed", "Corp"));
    ctx.openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "s.key",
        "-out",
        "s.crt",
        "-days",
        "30",
        "-subj",
        "/CN=Profile Signer",
    ]);
    ctx.openssl(&[
        "smime",
        "-sign",
        "-binary",
        "-nodetach",
        "-in",
        "p.xml",
        "-signer",
        "s.crt",
        "-inkey",
        "s.key",
        "-outform",
        "der",
        "-out",
        "signed.mobileconfig",
    ]);
    let mut bytes = ctx.read("signed.mobileconfig");
    let yaml = "apiVersion: v1\nkind: config\nspec:\n  mdm:\n    macos_settings:\n      custom_settings: [signed.mobileconfig]\n";
    ctx.write("c.yml", yaml);
    ctx.run(&["apply", "-f", "c.yml", "--dry-run"])
        .success()
        .stdout_has("+ profile com.example.signed (global)");
    // Change one byte of the signed content (the SSID).
    let at = bytes
        .windows(4)
        .position(|w| w == b"Corp")
        .expect("content is attached");
    bytes[at] = b'K';
    ctx.write("signed.mobileconfig", &bytes);
    let r = ctx.run(&["apply", "-f", "c.yml"]);
    r.user_error();
    r.stderr_has("the CMS signature does not verify");
}

#[test]
fn identifiers_and_display_names_are_unique() {
    let ctx = TestContext::new();
    ctx.init();
    ctx.write("a.mobileconfig", wifi("com.example.a", "Same name", "A"));
    ctx.write("a2.mobileconfig", wifi("com.example.a", "Other name", "A2"));
    ctx.write("b.mobileconfig", wifi("com.example.b", "Same name", "B"));
    ctx.write(
        "c.yml",
        "apiVersion: v1\nkind: config\nspec:\n  mdm:\n    macos_settings:\n      custom_settings: [a.mobileconfig, a2.mobileconfig, b.mobileconfig]\n",
    );
    let r = ctx.run(&["apply", "-f", "c.yml"]);
    r.user_error();
    let f = ctx.path("c.yml");
    r.stderr_has(&format!(
        "{}:6:41: config › mdm.macos_settings.custom_settings[1]: `PayloadIdentifier` `com.example.a` is also used by",
        f.display()
    ));
    r.stderr_has(&format!(
        "{}:6:58: config › mdm.macos_settings.custom_settings[2]: `PayloadDisplayName` `Same name` is also used by",
        f.display()
    ));
    r.stderr_has("2 problems in the configuration");
}

#[test]
fn duplicate_keys_are_refused() {
    let ctx = TestContext::new();
    ctx.init();
    ctx.write(
        "dup.yml",
        "apiVersion: v1\nkind: config\nspec:\n  mdm:\n    macos_settings: {}\n    macos_settings: {}\n",
    );
    let r = ctx.run(&["apply", "-f", "dup.yml"]);
    r.user_error();
    r.stderr_has(&format!(
        "{}:6:5: invalid YAML in `macos_settings: {{}}`: duplicate key: macos_settings (expected each key once per mapping)",
        ctx.path("dup.yml").display()
    ));
}

#[test]
fn binary_profiles_are_read_like_xml_ones() {
    let ctx = TestContext::new();
    ctx.init();
    let xml = wifi("com.example.binary", "Binary Wi-Fi", "Corp");
    let value = plist::Value::from_reader_xml(xml.as_bytes()).unwrap();
    let mut bin = Vec::new();
    value.to_writer_binary(&mut bin).unwrap();
    assert!(bin.starts_with(b"bplist00"));
    ctx.write("bin.mobileconfig", &bin);
    ctx.write(
        "c.yml",
        "apiVersion: v1\nkind: config\nspec:\n  mdm:\n    macos_settings:\n      custom_settings: [bin.mobileconfig]\n",
    );
    ctx.run(&["apply", "-f", "c.yml"])
        .success()
        .stdout_has("+ profile com.example.binary (global)");
    let p = ctx
        .run(&["get", "profiles", "--format", "json"])
        .success()
        .json();
    assert_eq!(p[0]["name"], "Binary Wi-Fi");
    // Stored as given: the bytes devices get are the file's.
    let sha = hex::encode(openssl::sha::sha256(&bin));
    assert_eq!(p[0]["sha256"], sha.as_str());
}

#[test]
fn unquoted_decimal_versions_are_refused() {
    let ctx = TestContext::new();
    ctx.init();
    ctx.write(
        "v.yml",
        "apiVersion: v1\nkind: team\nspec:\n  team:\n    name: X\n    mdm:\n      macos_updates:\n        minimum_version: 15.10\n        deadline: 2026-12-01\n",
    );
    let r = ctx.run(&["apply", "-f", "v.yml"]);
    r.user_error();
    r.stderr_has(&format!(
        "{}:8:26: team X › mdm.macos_updates.minimum_version: an unquoted number (YAML reads it as 15.1, and `15.10` as 15.1) (expected the version in quotes, e.g. `minimum_version: \"15.1\"`)",
        ctx.path("v.yml").display()
    ));
    // Whole numbers and unquoted dates are read as written.
    ctx.write(
        "w.yml",
        "apiVersion: v1\nkind: team\nspec:\n  team:\n    name: X\n    mdm:\n      macos_updates:\n        minimum_version: 15\n        deadline: 2026-12-01\n",
    );
    ctx.run(&["apply", "-f", "w.yml"])
        .success()
        .stdout_has("+ team X (macOS 15 by 2026-12-01, disk encryption off)");
}

#[test]
fn problems_as_json_for_pipelines() {
    let ctx = TestContext::new();
    ctx.init();
    ctx.write(
        "c.yml",
        "apiVersion: v1\nkind: config\nspec:\n  mdm:\n    macos_updates: {minimum_version: \"15.1\", deadline: \"tomorrow\"}\n",
    );
    let r = ctx.run(&["apply", "-f", "c.yml", "--format", "json"]);
    r.user_error();
    let j = r.json();
    let p = &j["problems"][0];
    assert_eq!(p["file"], ctx.path("c.yml").display().to_string());
    assert_eq!(p["line"], 5);
    assert_eq!(p["column"], 56);
    assert_eq!(p["context"], "config › mdm.macos_updates.deadline");
    assert_eq!(p["message"], "`tomorrow` is not a date");
    assert_eq!(p["expected"], "`YYYY-MM-DD`, e.g. `\"2026-12-01\"`");
}
