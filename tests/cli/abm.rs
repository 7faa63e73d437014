//! `mdmctl abm sync`: Apple Business Manager's devices into the store, and each team's
//! enrollment profile assigned to them, against the ABM stand-in (`mdmctl::sim::abm`).

use crate::common::TestContext;
use crate::set::{abm_stand_in, token_file};

/// A store with an ABM server token for the stand-in.
fn with_token() -> TestContext {
    let t = TestContext::new();
    t.init();
    t.run(&["generate", "mdm-apple-bm"]).success();
    token_file(&t, "token.txt", "2027-12-01T10:00:00Z");
    t.openssl(&[
        "smime",
        "-encrypt",
        "-aes256",
        "-in",
        "token.txt",
        "-out",
        "token.p7m",
        "mdm-apple-bm.crt",
    ]);
    t.run(&["set", "mdm-apple-bm", "--token", "token.p7m"])
        .success();
    t
}

/// `mdmctl abm sync --no-assign` against the ABM stand-in: every device the first time (2,500, in pages of
/// 1,000), then only the changes; an expired cursor and `--reset-cursor` fetch everything again.
#[test]
fn abm_sync_fetches_every_device_then_the_changes() {
    let t = with_token();
    let (_rt, abm) = abm_stand_in();
    abm.add_devices(0, 2500);
    let run = |args: &[&str]| {
        t.run_with(args, |c| {
            c.env("MDMCTL_ABM_URL", abm.url());
        })
    };
    let s = run(&["--format", "json", "abm", "sync", "--no-assign"])
        .success()
        .json();
    assert_eq!(
        (
            s["sync"]["full_fetch"].as_bool(),
            s["sync"]["added"].as_u64()
        ),
        (Some(true), Some(2500)),
        "{s:#}"
    );
    assert!(
        s["sync"]["pages"].as_u64().unwrap() >= 3,
        "pages of at most 1,000: {s:#}"
    );
    let all = run(&["--format", "json", "get", "abm-devices"])
        .success()
        .json();
    assert_eq!(all.as_array().unwrap().len(), 2500);
    assert_eq!(all[0]["serial"], "ABM0000000");
    assert_eq!(all[0]["profile_status"], "empty");

    // Changes only: one reassigned here (modified), one removed, one new.
    abm.change("ABM0000001", "modified");
    abm.change("ABM0000002", "deleted");
    abm.add_devices(2500, 1);
    let s = run(&["--format", "json", "abm", "sync", "--no-assign"])
        .success()
        .json();
    assert_eq!(s["sync"]["full_fetch"], false, "{s:#}");
    assert_eq!(
        (
            s["sync"]["records"].as_u64(),
            s["sync"]["added"].as_u64(),
            s["sync"]["modified"].as_u64(),
            s["sync"]["deleted"].as_u64()
        ),
        (Some(3), Some(1), Some(1), Some(1)),
        "{s:#}"
    );
    let all = run(&["--format", "json", "get", "abm-devices"])
        .success()
        .json();
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 2501);
    let gone: Vec<_> = all.iter().filter(|d| d["deleted"] == true).collect();
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0]["serial"], "ABM0000002");
    run(&["get", "abm-devices", "--status", "empty"])
        .success()
        .stdout_has("ABM0002500")
        .stdout_has("deleted");

    // ABM migrates a device here by a deadline: `cutover status` and `get abm-devices` say so.
    abm.migrate_with_deadline("ABM0000010", "2026-12-20T17:00:00Z");
    run(&["abm", "sync", "--no-assign"]).success();
    run(&["cutover", "status"])
        .success()
        .stdout_has("1 device(s) migrating via Apple Business Manager")
        .stdout_has("ABM0000010  migrating via ABM, deadline 2026-12-20T17:00:00Z");
    run(&["get", "abm-devices", "--pending"])
        .success()
        .stdout_has("migrating via ABM, deadline 2026-12-20T17:00:00Z");

    // An expired cursor: every device again, once, without an error.
    abm.expire_cursors();
    let s = run(&["--format", "json", "abm", "sync", "--no-assign"])
        .success()
        .json();
    assert_eq!(
        (
            s["sync"]["full_fetch"].as_bool(),
            s["sync"]["records"].as_u64()
        ),
        (Some(true), Some(2500)),
        "{s:#}"
    );
    let s = run(&[
        "--format",
        "json",
        "abm",
        "sync",
        "--no-assign",
        "--reset-cursor",
    ])
    .success()
    .json();
    assert_eq!(s["sync"]["full_fetch"], true);
    let s = run(&["--format", "json", "abm", "sync", "--no-assign"])
        .success()
        .json();
    assert_eq!(
        (
            s["sync"]["full_fetch"].as_bool(),
            s["sync"]["records"].as_u64()
        ),
        (Some(false), Some(0))
    );

    let log = run(&[
        "--format",
        "json",
        "get",
        "activities",
        "--type",
        "abm.sync",
    ])
    .success()
    .json();
    assert_eq!(
        log.as_array().unwrap().len(),
        6,
        "every sync is in the activity log"
    );

    // New terms in ABM stop the sync with what to do.
    abm.set_terms_not_signed(true);
    run(&["abm", "sync", "--no-assign"])
        .user_error()
        .stderr_has("T_C_NOT_SIGNED")
        .stderr_has("accept the new terms");
}

/// GitOps with a default team (`Staff`, with its own setup-assistant JSON), a team without one
/// (`Lab`: the global JSON applies), and a global JSON.
fn gitops(t: &TestContext, staff_skip: &str) {
    t.write(
        "repo/default.yml",
        "apiVersion: v1\nkind: config\nspec:\n  mdm:\n    apple_bm_default_team: Staff\n    macos_setup:\n      macos_setup_assistant: setup/global.json\n---\napiVersion: v1\nkind: team\nspec:\n  team:\n    name: Staff\n    mdm:\n      macos_setup:\n        macos_setup_assistant: setup/staff.json\n---\napiVersion: v1\nkind: team\nspec:\n  team:\n    name: Lab\n",
    );
    t.write(
        "repo/setup/global.json",
        r#"{"profile_name": "Everyone", "is_supervised": true, "skip_setup_items": ["AppleID"]}"#,
    );
    t.write(
        "repo/setup/staff.json",
        format!(
            r#"{{"profile_name": "Staff Macs", "is_supervised": true, "is_mdm_removable": false, "language": "en", "skip_setup_items": [{staff_skip}]}}"#
        ),
    );
    t.run(&["apply", "-f", "repo"]).success();
}

fn serials(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|k| format!("ABM{k:07}")).collect()
}

/// 2,500 ABM devices, some failing in each of Apple's ways: every serial ends in a recorded
/// state; failed ones are retried at the next sync (the cursor has moved on by then), once
/// more, then left for 24 hours; throttled ones wait `retry_after_seconds`; assigned ones are
/// not sent again; a changed setup JSON is defined again and reassigned; a pending device
/// transferred to another team gets that team's profile.
#[test]
fn abm_sync_assigns_each_teams_profile_and_loses_no_device() {
    let t = with_token();
    gitops(&t, r#""AppleID", "Siri""#);
    let (_rt, abm) = abm_stand_in();
    abm.add_devices(0, 2500);
    let run = |args: &[&str]| {
        t.run_with(args, |c| {
            c.env("MDMCTL_ABM_URL", abm.url()).env_remove("MDMCTL_URL");
        })
    };

    // No server URL recorded and none in the JSON: the devices are synced, nothing assigned.
    run(&["abm", "sync"])
        .user_error()
        .stdout_has("2500")
        .stderr_has("no server URL is recorded")
        .stderr_has("serve --url");
    assert_eq!(abm.profiles_defined(), 0);

    abm.answer_for(&serials(0..25), "FAILED", usize::MAX);
    abm.answer_for(&serials(100..110), "THROTTLED", 1);
    abm.set_retry_after(Some(1));
    abm.answer_for(&serials(200..205), "", 1);
    abm.answer_for(&serials(300..305), "NOT_ACCESSIBLE", usize::MAX);
    let s = run(&[
        "--format",
        "json",
        "abm",
        "sync",
        "--url",
        "https://mdm.example.com",
    ])
    .success()
    .json();
    let a = &s["assign"];
    assert_eq!(
        (
            a["assigned"].as_u64(),
            a["failed"].as_u64(),
            a["unanswered"].as_u64(),
            a["throttled"].as_u64(),
            a["not_accessible"].as_u64()
        ),
        (Some(2455), Some(30), Some(5), Some(10), Some(5)),
        "{s:#}"
    );
    assert_eq!(
        a["defined"].as_array().unwrap().len(),
        1,
        "only Staff's: {a:#}"
    );
    assert!(
        abm.assign_batches().iter().all(|n| *n <= 1000),
        "{:?}",
        abm.assign_batches()
    );
    let (_, staff) = abm.assigned_profile("ABM0001000").expect("assigned");
    assert_eq!(staff["profile_name"], "Staff Macs");
    assert_eq!(staff["url"], "https://mdm.example.com/mdm/enroll");
    assert_eq!(staff["await_device_configured"], true);
    assert_eq!(
        staff["skip_setup_items"],
        serde_json::json!(["AppleID", "Siri"])
    );

    // Every serial is in a state; none is left without one.
    let all = run(&["--format", "json", "get", "abm-devices"])
        .success()
        .json();
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 2500);
    assert!(all.iter().all(|d| d["team"] == "Staff"), "the default team");
    // Not enrolled yet: pending in `get devices` too.
    let devices = run(&["--format", "json", "get", "devices", "--team", "Staff"])
        .success()
        .json();
    assert_eq!(devices.as_array().unwrap().len(), 2500);
    assert_eq!(devices[0]["pending"], true, "{:#}", devices[0]);
    let table = run(&["get", "devices"]);
    table
        .success()
        .stdout_has("(pending: not enrolled yet)")
        .stdout_has("MacBook Air");
    assert!(
        table.stdout.lines().all(|l| l.chars().count() <= 120),
        "the table fits 120 columns:\n{}",
        table.stdout
    );
    let state = |st: &str| all.iter().filter(|d| d["assign_state"] == st).count();
    assert_eq!(
        (
            state("assigned"),
            state("failed"),
            state("throttled"),
            state("not_accessible")
        ),
        (2455, 30, 10, 5)
    );

    // Next sync (the cursor has moved past these devices): the failed and the throttled ones
    // are tried again; the assigned ones (reported back as `modified`) are not.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let s = run(&["--format", "json", "abm", "sync"]).success().json();
    assert_eq!(s["sync"]["full_fetch"], false);
    let a = &s["assign"];
    assert_eq!(
        (
            a["assigned"].as_u64(),
            a["failed"].as_u64(),
            a["not_accessible"].as_u64()
        ),
        (Some(15), Some(25), Some(0)),
        "{s:#}"
    );
    assert_eq!(
        abm.assign_tries("ABM0001000"),
        1,
        "an assigned serial is not sent again"
    );
    assert_eq!(abm.assign_tries("ABM0000200"), 2);
    assert_eq!(abm.assign_tries("ABM0000000"), 2);

    // A serial that keeps failing now waits 24 hours.
    let s = run(&["--format", "json", "abm", "sync"]).success().json();
    assert_eq!(s["assign"]["calls"], 0, "{s:#}");
    assert_eq!(abm.assign_tries("ABM0000000"), 2);
    run(&["get", "abm-devices", "--team", "Staff"])
        .success()
        .stdout_has("failed (FAILED), retry 20")
        .stdout_has("pending");
    let log = run(&[
        "--format",
        "json",
        "get",
        "activities",
        "--type",
        "abm.assign",
    ])
    .success()
    .json();
    let first = log
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["details"]["summary"]["assigned"] == 2455)
        .expect("the first assignment's activity");
    assert!(
        first["details"]["not_assigned"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["serial"] == "ABM0000200" && x["detail"] == "no answer for this serial"),
        "{first:#}"
    );

    // A pending device moved to Lab gets Lab's profile (the global JSON: Lab has none).
    run(&["transfer", "--team", "Lab", "--serial", "ABM0001007"])
        .success()
        .stdout_has("Moved 1 device(s) to Lab");
    let s = run(&["--format", "json", "abm", "sync"]).success().json();
    assert_eq!(s["assign"]["assigned"], 1, "{s:#}");
    let (_, lab) = abm.assigned_profile("ABM0001007").unwrap();
    assert_eq!(lab["profile_name"], "Everyone");
    assert_eq!(lab["url"], "https://mdm.example.com/mdm/enroll");

    // Staff's JSON changes: a new profile (UUIDs are immutable) and every Staff serial again.
    gitops(&t, r#""AppleID""#);
    let s = run(&["--format", "json", "abm", "sync"]).success().json();
    assert_eq!(s["assign"]["defined"].as_array().unwrap().len(), 1, "{s:#}");
    assert_eq!(s["assign"]["assigned"], 2499 - 25 - 5, "{s:#}");
    let (_, staff) = abm.assigned_profile("ABM0001000").unwrap();
    assert_eq!(staff["skip_setup_items"], serde_json::json!(["AppleID"]));
    assert_eq!(abm.assign_tries("ABM0001000"), 2);
}

/// The setup JSON is checked before anything reaches Apple: unknown keys and skip items, wrong
/// types, named with the file, line and key.
#[test]
fn a_wrong_setup_assistant_json_is_refused_by_apply() {
    let t = TestContext::new();
    t.init();
    t.write(
        "repo/default.yml",
        "apiVersion: v1\nkind: config\nspec:\n  mdm:\n    macos_setup:\n      macos_setup_assistant: setup.json\n",
    );
    t.write(
        "repo/setup.json",
        "{\n  \"profile_name\": \"x\",\n  \"is_supervised\": \"yes\",\n  \"skip_setup_items\": [\"Sirri\"]\n}\n",
    );
    t.run(&["apply", "-f", "repo", "--dry-run"])
        .user_error()
        .stderr_has("setup.json:3:3")
        .stderr_has("`is_supervised`: found a string")
        .stderr_has("setup.json:4:24")
        .stderr_has("unknown skip item `Sirri`")
        .stderr_has("did you mean `Siri`?");
    t.write(
        "repo/setup.json",
        r#"{"profile_name": "x", "skip_setup_items": ["Siri"]}"#,
    );
    t.run(&["apply", "-f", "repo", "--dry-run"])
        .success()
        .stdout_has("mdm.macos_setup.macos_setup_assistant");
    t.run(&["apply", "-f", "repo"]).success();
    // `get config --format yaml` names the file, and applies back with no change.
    let yaml = t
        .run(&["get", "config", "--format", "yaml"])
        .success()
        .stdout
        .clone();
    assert!(yaml.contains("macos_setup_assistant:"), "{yaml}");
    t.write("back.yml", yaml);
    t.run(&[
        "apply",
        "-f",
        "back.yml",
        "--dry-run",
        "--allow-outside-repo",
    ])
    .success()
    .stdout_has("no changes");
}
