//! mdmctl's own profiles, built from settings: valid plists for the plist crate and for
//! Python's `plistlib`, with the keys Apple's schemas require, and the escrow key pair created
//! once, sealed, in the store.

use std::process::Command;

use mdmctl::store::{AssetKind, DesiredProfile, ProfileKind};
use plist::Value;

use crate::common::TestContext;
use crate::open_store;

fn own(ctx: &TestContext) -> Vec<DesiredProfile> {
    let store = open_store(&ctx.db().display().to_string());
    store
        .read(|tx| tx.desired_profiles(Some(None)))
        .unwrap()
        .into_iter()
        .filter(|p| p.managed)
        .collect()
}

fn apply_settings(ctx: &TestContext) {
    ctx.write(
        "c.yml",
        "apiVersion: v1\nkind: config\nspec:\n  mdm:\n    macos_updates: {minimum_version: \"15.1\", deadline: \"2026-12-01\"}\n    macos_settings: {enable_disk_encryption: true}\n",
    );
    ctx.run(&["apply", "-f", "c.yml"]).success();
}

fn dict(v: &Value) -> &plist::Dictionary {
    v.as_dictionary().expect("a dictionary")
}

fn payloads(top: &Value) -> Vec<plist::Dictionary> {
    dict(top)["PayloadContent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| dict(p).clone())
        .collect()
}

#[test]
fn filevault_profile_escrows_to_the_stored_certificate() {
    let ctx = TestContext::new();
    ctx.init();
    apply_settings(&ctx);
    let profiles = own(&ctx);
    let fv = profiles
        .iter()
        .find(|p| p.kind == ProfileKind::FileVault)
        .expect("FileVault profile");
    assert_eq!(fv.identifier, "com.mdmctl.filevault");
    let top = Value::from_reader_xml(fv.content.as_slice()).expect("plist crate reads it");
    assert_eq!(dict(&top)["PayloadType"].as_string(), Some("Configuration"));
    for k in ["PayloadIdentifier", "PayloadDisplayName", "PayloadUUID"] {
        assert!(dict(&top).contains_key(k), "{k}");
    }
    let p = payloads(&top);
    let by_type = |t: &str| {
        p.iter()
            .find(|d| d["PayloadType"].as_string() == Some(t))
            .unwrap_or_else(|| panic!("no {t} payload"))
    };
    let fv2 = by_type("com.apple.MCX.FileVault2");
    assert_eq!(fv2["Enable"].as_string(), Some("On"));
    assert_eq!(fv2["Defer"].as_boolean(), Some(true));
    assert_eq!(fv2["ShowRecoveryKey"].as_boolean(), Some(false));
    assert!(fv2.contains_key("DeferForceAtUserLoginMaxBypassAttempts"));
    let escrow = by_type("com.apple.security.FDERecoveryKeyEscrow");
    assert!(escrow["Location"].as_string().is_some());
    let pkcs1 = by_type("com.apple.security.pkcs1");
    assert_eq!(
        escrow["EncryptCertPayloadUUID"].as_string(),
        pkcs1["PayloadUUID"].as_string(),
        "EncryptCertPayloadUUID must point at the pkcs1 payload"
    );
    assert_eq!(
        by_type("com.apple.MCX")["dontAllowFDEDisable"].as_boolean(),
        Some(true)
    );

    // The certificate in the profile is the store's active escrow certificate, whose key is
    // sealed; openssl reads it.
    let cert_der = pkcs1["PayloadContent"]
        .as_data()
        .expect("certificate data")
        .to_vec();
    let store = open_store(&ctx.db().display().to_string());
    let asset = store
        .read(|tx| tx.active_asset(AssetKind::Escrow))
        .unwrap()
        .expect("an escrow asset");
    assert!(asset.has_key);
    let stored = openssl::x509::X509::from_pem(asset.cert_pem.unwrap().as_bytes()).unwrap();
    assert_eq!(stored.to_der().unwrap(), cert_der);
    ctx.write("escrow.der", &cert_der);
    ctx.openssl(&[
        "x509",
        "-inform",
        "der",
        "-in",
        "escrow.der",
        "-noout",
        "-subject",
    ])
    .stdout_has("mdmctl FileVault escrow");
    let raw = crate::common::sqlite_bytes(&ctx.db());
    assert!(
        !crate::common::contains(&raw, "PRIVATE KEY"),
        "escrow key stored in clear"
    );

    // Once: a second scope with disk encryption reuses the key pair.
    ctx.write(
        "t.yml",
        "apiVersion: v1\nkind: team\nspec:\n  team:\n    name: Lab\n    mdm:\n      macos_settings: {enable_disk_encryption: true}\n",
    );
    ctx.run(&["apply", "-f", "t.yml"]).success();
    let n = store.read(|tx| tx.assets(AssetKind::Escrow)).unwrap().len();
    assert_eq!(n, 1);
}

#[test]
fn nudge_and_declaration_follow_the_update_settings() {
    let ctx = TestContext::new();
    ctx.init();
    apply_settings(&ctx);
    let profiles = own(&ctx);
    let nudge = profiles
        .iter()
        .find(|p| p.kind == ProfileKind::Nudge)
        .expect("Nudge profile");
    let top = Value::from_reader_xml(nudge.content.as_slice()).unwrap();
    let p = payloads(&top);
    assert_eq!(
        p[0]["PayloadType"].as_string(),
        Some("com.github.macadmins.Nudge")
    );
    let req = dict(&p[0]["osVersionRequirements"].as_array().unwrap()[0]).clone();
    assert_eq!(req["requiredMinimumOSVersion"].as_string(), Some("15.1"));
    let date = req["requiredInstallationDate"]
        .as_date()
        .expect("a plist <date>");
    assert_eq!(date.to_xml_format(), "2026-12-01T12:00:00Z");
    let ux = dict(&p[0]["userExperience"]).clone();
    // Daily while more than a day remains, every 2 hours in the last day.
    assert_eq!(ux["initialRefreshCycle"].as_signed_integer(), Some(86_400));
    assert_eq!(ux["approachingWindowTime"].as_signed_integer(), Some(24));
    assert_eq!(
        ux["approachingRefreshCycle"].as_signed_integer(),
        Some(7_200)
    );
    assert_eq!(ux["imminentRefreshCycle"].as_signed_integer(), Some(7_200));
    // After the deadline the window cannot be dismissed.
    let features = dict(&p[0]["optionalFeatures"]).clone();
    assert_eq!(
        features["aggressiveUserExperience"].as_boolean(),
        Some(true)
    );

    let ddm = profiles
        .iter()
        .find(|p| p.kind == ProfileKind::Ddm)
        .expect("declaration");
    let d: serde_json::Value = serde_json::from_slice(&ddm.content).unwrap();
    assert_eq!(
        d["Type"],
        "com.apple.configuration.softwareupdate.enforcement.specific"
    );
    assert_eq!(d["Payload"]["TargetOSVersion"], "15.1");
    assert_eq!(d["Payload"]["TargetLocalDateTime"], "2026-12-01T12:00:00");
    assert!(d["Identifier"].is_string() && d["ServerToken"].is_string());

    // Python's plistlib reads both profiles, with the date as a datetime.
    ctx.write(
        "fv.mobileconfig",
        &profiles
            .iter()
            .find(|p| p.kind == ProfileKind::FileVault)
            .unwrap()
            .content,
    );
    ctx.write("nudge.mobileconfig", &nudge.content);
    let script = r#"
import plistlib, sys, datetime
fv = plistlib.load(open(sys.argv[1], 'rb'))
types = sorted(p['PayloadType'] for p in fv['PayloadContent'])
assert types == ['com.apple.MCX', 'com.apple.MCX.FileVault2', 'com.apple.security.FDERecoveryKeyEscrow', 'com.apple.security.pkcs1'], types
assert isinstance([p for p in fv['PayloadContent'] if p['PayloadType'] == 'com.apple.security.pkcs1'][0]['PayloadContent'], bytes)
n = plistlib.load(open(sys.argv[2], 'rb'))
d = n['PayloadContent'][0]['osVersionRequirements'][0]['requiredInstallationDate']
assert isinstance(d, datetime.datetime), type(d)
print(n['PayloadIdentifier'], d.strftime('%Y-%m-%d'))
"#;
    let out = Command::new("python3")
        .current_dir(ctx.dir.path())
        .args(["-c", script, "fv.mobileconfig", "nudge.mobileconfig"])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "com.mdmctl.nudge 2026-12-01"
    );

    // Turning the settings off removes mdmctl's profiles.
    ctx.write("c.yml", "apiVersion: v1\nkind: config\nspec:\n  mdm: {}\n");
    let r = ctx.run(&["apply", "-f", "c.yml"]);
    r.success();
    r.stdout_has("- profile com.mdmctl.filevault (global)");
    r.stdout_has("- profile com.mdmctl.nudge (global)");
    r.stdout_has("- profile com.mdmctl.softwareupdate (global)");
    assert!(own(&ctx).is_empty());
}
