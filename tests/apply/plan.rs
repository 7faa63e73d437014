//! The plan and the real run: dry runs write nothing, the same files twice give "no changes",
//! removed profiles leave desired state, device counts per change, JSON for pipelines, the YAML
//! round trip, and the examples.

use mdmctl::store::{DeviceRecord, Store};

use crate::common::{PgSchema, TestContext};
use crate::{open_store, small_repo, sqlite_dump, wifi};

fn add_devices(store: &dyn Store, n: usize, team: Option<&str>, prefix: &str) {
    store
        .write(|tx| {
            for i in 0..n {
                let id = format!("{prefix}-{i}");
                tx.put_device(&DeviceRecord {
                    id: id.clone(),
                    source: "enrolled".into(),
                    ..Default::default()
                })?;
                tx.set_device_team(&id, team)?;
            }
            Ok::<_, mdmctl::store::StoreError>(())
        })
        .expect("add devices");
}

/// The whole flow on one store (`db`: a path or URL).
fn flow(ctx: &TestContext, db: &str, dump: &dyn Fn() -> Vec<u8>) {
    let run = |args: &[&str]| {
        ctx.run_with(args, |c| {
            c.env("MDMCTL_DB", db);
        })
    };
    run(&["init"]).success();
    small_repo(ctx);

    // Dry run: the plan, exit 0, nothing written.
    let before = dump();
    let r = run(&["apply", "-f", "repo", "--dry-run"]);
    r.success();
    for line in [
        "~ setting mdm.macos_updates.minimum_version (global): unset → \"15.1\"  [0 devices]",
        "~ setting mdm.apple_bm_default_team (global): unset → \"Workstations\"",
        "+ team Workstations (macOS 15.2 by 2027-01-15, disk encryption on)",
        "+ profile com.example.wifi (global)  [0 devices]",
        "+ profile com.mdmctl.nudge (global)",
        "+ profile com.mdmctl.softwareupdate (global)",
        "+ profile com.example.wifi (team Workstations)",
        "+ profile com.example.restrictions (team Workstations)",
        "+ profile com.mdmctl.filevault (team Workstations)",
        "plan: 9 to add, 3 to change, 0 to remove",
    ] {
        r.stdout_has(line);
    }
    assert!(
        !r.stdout.contains("com.mdmctl.filevault (global)"),
        "{}",
        r.stdout
    );
    r.stderr_has("dry run: nothing was written");
    assert!(
        dump() == before,
        "--dry-run wrote to the store:\n{}",
        String::from_utf8_lossy(&dump())
    );

    // The real run prints the same plan, then the same files give no changes.
    let applied = run(&["apply", "-f", "repo"]);
    applied.success();
    assert_eq!(
        applied.stdout, r.stdout,
        "the real run diverged from the dry run"
    );
    let again = run(&["apply", "-f", "repo"]);
    again.success();
    assert_eq!(
        again.stdout.trim(),
        "no changes: desired state already matches the files"
    );
    let json = run(&["apply", "-f", "repo", "--dry-run", "--format", "json"])
        .success()
        .json();
    assert_eq!(json["changes"].as_array().map(Vec::len), Some(0));

    // Devices: the plan says how many each change reaches.
    let store = open_store(db);
    add_devices(store.as_ref(), 7, Some("Workstations"), "WS");
    add_devices(store.as_ref(), 3, None, "NT");
    drop(store);

    // Change one profile's content, drop another, change a setting.
    ctx.write(
        "repo/profiles/wifi.mobileconfig",
        wifi("com.example.wifi", "Wi-Fi", "Corp-5G"),
    );
    let yml = String::from_utf8(ctx.read("repo/default.yml")).unwrap();
    ctx.write(
        "repo/default.yml",
        yml.replace(", profiles/restrictions.mobileconfig]", "]")
            .replace("\"15.2\"", "\"15.3\""),
    );
    let json = run(&["apply", "-f", "repo", "--dry-run", "--format", "json"])
        .success()
        .json();
    let changes = json["changes"].as_array().expect("changes").clone();
    let find = |action: &str, name: &str, team: Option<&str>| {
        changes
            .iter()
            .find(|c| c["action"] == action && c["name"] == name && c["team"].as_str() == team)
            .unwrap_or_else(|| panic!("no {action} {name} {team:?} in {changes:#?}"))
            .clone()
    };
    let c = find("change", "com.example.wifi", None);
    assert_eq!(c["detail"], "content changed");
    assert_eq!(c["devices"], 3);
    // Structured values beside the prose: the profile's name and digest before and after.
    assert_eq!(c["before"]["name"], c["after"]["name"]);
    assert_ne!(c["before"]["sha256"], c["after"]["sha256"]);
    assert_eq!(c["after"]["sha256"].as_str().map(str::len), Some(64));
    let removed = find("remove", "com.example.restrictions", Some("Workstations"));
    assert!(
        removed["before"]["sha256"].is_string() && removed["after"].is_null(),
        "{removed}"
    );
    assert_eq!(
        find("change", "com.example.wifi", Some("Workstations"))["devices"],
        7
    );
    assert_eq!(
        find("remove", "com.example.restrictions", Some("Workstations"))["devices"],
        7
    );
    let s = find(
        "change",
        "mdm.macos_updates.minimum_version",
        Some("Workstations"),
    );
    assert_eq!(s["detail"], "\"15.2\" → \"15.3\"");
    assert_eq!(
        (s["before"].as_str(), s["after"].as_str()),
        (Some("15.2"), Some("15.3"))
    );
    // The update profiles follow the setting.
    find("change", "com.mdmctl.nudge", Some("Workstations"));
    find("change", "com.mdmctl.softwareupdate", Some("Workstations"));
    assert_eq!(json["dry_run"], true);
    assert_eq!(json["applied"], false);
    assert_eq!(json["remove"], 1);

    let r = run(&["apply", "-f", "repo"]);
    r.success();
    r.stdout_has("~ profile com.example.wifi (global) (content changed)  [3 devices]");
    r.stdout_has("- profile com.example.restrictions (team Workstations)  [7 devices]");
    let profiles = run(&[
        "get",
        "profiles",
        "--team",
        "Workstations",
        "--format",
        "json",
    ])
    .success()
    .json();
    let ids: Vec<&str> = profiles
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["identifier"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "com.example.wifi",
            "com.mdmctl.filevault",
            "com.mdmctl.nudge",
            "com.mdmctl.softwareupdate"
        ]
    );
    let teams = run(&["get", "teams", "--format", "json"]).success().json();
    assert_eq!(teams[0]["devices"], 7);
    assert_eq!(teams[0]["profiles"], 4);

    // Round trip: what `get config --format yaml` prints applies back with no changes.
    let yaml = run(&["get", "config", "--format", "yaml"])
        .success()
        .stdout
        .clone();
    ctx.write("exported.yml", &yaml);
    let r = run(&["apply", "-f", "exported.yml"]);
    r.success();
    assert_eq!(
        r.stdout.trim(),
        "no changes: desired state already matches the files",
        "exported YAML:\n{yaml}"
    );

    // The activity log has the applies.
    let store = open_store(db);
    let acts = store
        .read(|tx| {
            tx.activities(&mdmctl::store::ActivityQuery {
                kind: Some("gitops.apply".into()),
                ..Default::default()
            })
        })
        .unwrap();
    assert_eq!(acts.len(), 2);
    assert_eq!(acts[0].summary, "plan: 9 to add, 3 to change, 0 to remove");
}

#[test]
fn plan_dry_run_apply_and_round_trip_on_sqlite() {
    let ctx = TestContext::new();
    let db = ctx.db();
    flow(&ctx, &db.display().to_string(), &|| {
        sqlite_dump(&db).into_bytes()
    });
}

#[test]
fn plan_dry_run_apply_and_round_trip_on_postgres() {
    let Some(schema) = PgSchema::create() else {
        return;
    };
    let ctx = TestContext::new();
    // pg_dump adds a random `\\restrict` token to every dump; the data is the rest.
    flow(&ctx, &schema.url(), &|| {
        String::from_utf8_lossy(&schema.dump())
            .lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes()
    });
}

#[test]
fn every_example_applies() {
    let ctx = TestContext::new();
    ctx.init();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/gitops");
    let r = ctx.run(&["apply", "-f", examples]);
    r.success();
    for line in [
        "+ team Lab",
        "+ team Workstations",
        "+ profile com.example.wifi.corp (global)",
        "+ profile com.example.firewall (team Workstations)",
        "+ profile com.example.pppc.zoom (team Workstations)",
        "+ profile com.example.loginwindow (team Lab)",
        "+ profile com.mdmctl.filevault (team Workstations)",
    ] {
        r.stdout_has(line);
    }
    // Files one by one, as the README's quickstart does, give the same state.
    let again = ctx.run(&[
        "apply",
        "-f",
        &format!("{examples}/default.yml"),
        "-f",
        &format!("{examples}/teams"),
    ]);
    again.success();
    assert_eq!(
        again.stdout.trim(),
        "no changes: desired state already matches the files"
    );
    let profiles = ctx
        .run(&["get", "profiles", "--format", "json"])
        .success()
        .json();
    let signed = profiles
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["identifier"] == "com.example.firewall")
        .expect("the signed example is stored");
    assert!(
        signed["source"]
            .as_str()
            .unwrap()
            .ends_with("firewall-signed.mobileconfig")
    );
    let table = ctx.run(&["get", "config"]).success().stdout.clone();
    assert!(table.contains("Team Workstations"), "{table}");
}
