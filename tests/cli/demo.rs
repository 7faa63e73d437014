//! `mdmctl demo`: the newcomer's first command.

use crate::common::TestContext;

#[test]
fn demo_runs_the_flow_and_leaves_a_usable_store() {
    let t = TestContext::new();
    let r = t.run_with(&["demo", "--dir", "demo", "--devices", "25"], |c| {
        c.env_remove("MDMCTL_PASSPHRASE").env_remove("MDMCTL_DB");
    });
    r.success()
        .stdout_has("created a store")
        .stdout_has("imported 25 devices and 25 enrollments")
        .stdout_has("refused a push certificate with a different topic")
        .stdout_has("applied `gitops/`")
        .stdout_has("at 0 % the old server answered 25/25 Macs through mdmctl")
        .stdout_has("after `cutover rollback` the old server answered 25/25 again")
        .stdout_has("25/25 Macs checked in with their old identity")
        .stdout_has("25 recorded as migrated")
        .stdout_has("25/25 acknowledged")
        .stdout_has(
            "installed and verified by ProfileList, 0 failed, 25 from the old MDM left alone",
        )
        .stdout_has("(HTTP 403)")
        .stdout_has("synced 3 new Macs into the default team")
        .stdout_has("(3 assigned)")
        .stdout_has("/mdm/enroll) into the Workstations team and got DeviceConfigured")
        .stdout_has("Try next:");
    for f in [
        "mdmctl.db",
        "passphrase",
        "mdm-apple-apns.csr",
        "mdm-apple-push-request.b64",
        "abm-token.p7m",
        "old-mdm/nanomdm.sql",
        "old-mdm/scep-depot/ca.pem",
        "gitops/default.yml",
    ] {
        assert!(t.exists(&format!("demo/{f}")), "{f}");
    }
    // The commands it suggests work.
    let g = t.run_with(
        &[
            "--db",
            "demo/mdmctl.db",
            "--passphrase-file",
            "demo/passphrase",
            "--format",
            "json",
            "get",
            "mdm-apple",
        ],
        |c| {
            c.env_remove("MDMCTL_PASSPHRASE").env_remove("MDMCTL_DB");
        },
    );
    assert!(
        g.success().json()["apns"]["topic"]
            .as_str()
            .unwrap()
            .starts_with("com.apple.mgmt.External.")
    );
    let demo = |args: &[&str]| {
        let mut all = vec![
            "--db",
            "demo/mdmctl.db",
            "--passphrase-file",
            "demo/passphrase",
        ];
        all.extend_from_slice(args);
        t.run_with(&all, |c| {
            c.env_remove("MDMCTL_PASSPHRASE").env_remove("MDMCTL_DB");
        })
    };
    let migrated = demo(&["--format", "json", "get", "devices", "--migrated", "true"]);
    assert_eq!(migrated.success().json().as_array().unwrap().len(), 25);
    demo(&["get", "device", "C02SIM000001"])
        .success()
        .stdout_has("DeviceInformation")
        .stdout_has("acknowledged");
    let status = demo(&["--format", "json", "get", "profile-status"]);
    let status = status.success().json();
    assert!(status.to_string().contains("verified"), "{status}");
    demo(&["get", "profiles", "--udid", "C02SIM000001"])
        .success()
        .stdout_has("verified")
        .stdout_has("com.example.oldmdm.wifi");
    let cutover = demo(&["--format", "json", "cutover", "status"])
        .success()
        .json();
    assert_eq!(
        cutover["set"]["all"], true,
        "the staged cutover ended with every Mac"
    );
    assert_eq!(cutover["fleet"]["migrated"], 25);
    let changes = demo(&[
        "--format",
        "json",
        "get",
        "activities",
        "--type",
        "cutover.",
    ]);
    assert_eq!(
        changes.success().json().as_array().unwrap().len(),
        3,
        "10 %, rollback, all"
    );
    let abm = demo(&["--format", "json", "get", "abm-devices"])
        .success()
        .json();
    let abm = abm.as_array().unwrap();
    assert_eq!(abm.len(), 3);
    assert!(
        abm.iter().all(|d| d["assign_state"] == "assigned"),
        "{abm:?}"
    );
    assert!(
        abm[0]["enrolled_udid"].is_string(),
        "the first enrolled: {:?}",
        abm[0]
    );
    demo(&["apply", "-f", "demo/gitops", "--dry-run"])
        .success()
        .stdout_has("no changes");
    let again = demo(&[
        "--format",
        "json",
        "import-devices",
        "demo/old-mdm/nanomdm.sql",
        "--dry-run",
    ]);
    let j = again.success().json();
    assert_eq!(j["devices"]["imported"], 0, "{j}");
    assert_eq!(
        j["devices"]["kept_newer"], 25,
        "every Mac checked in since: {j}"
    );
    // A second run refuses to clobber the first.
    t.run(&["demo", "--dir", "demo"])
        .user_error()
        .stderr_has("not empty");
}
