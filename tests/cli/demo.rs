//! `mdmctl demo`: the newcomer's first command.

use crate::common::TestContext;

#[test]
fn demo_runs_the_flow_and_leaves_a_usable_store() {
    let t = TestContext::new();
    let r = t.run_with(&["demo", "--dir", "demo"], |c| {
        c.env_remove("MDMCTL_PASSPHRASE").env_remove("MDMCTL_DB");
    });
    r.success()
        .stdout_has("created a store")
        .stdout_has("refused a push certificate with a different topic")
        .stdout_has("Try next:");
    for f in [
        "mdmctl.db",
        "passphrase",
        "mdm-apple-apns.csr",
        "mdm-apple-push-request.b64",
        "abm-token.p7m",
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
    // A second run refuses to clobber the first.
    t.run(&["demo", "--dir", "demo"])
        .user_error()
        .stderr_has("not empty");
}
