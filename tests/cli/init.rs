//! `mdmctl init` and how a store's master key is handled.

use crate::common::{PASSPHRASE, TestContext, contains, sqlite_bytes};

#[test]
fn init_creates_a_store_and_refuses_a_second_time() {
    let t = TestContext::new();
    let r = t.run(&["init"]);
    r.success()
        .stdout_has("Created an mdmctl store")
        .stdout_has("passphrase");
    assert!(t.db().exists());
    let bytes = sqlite_bytes(&t.db());
    assert!(
        !contains(&bytes, PASSPHRASE),
        "the passphrase must not be stored"
    );

    t.run(&["init"])
        .user_error()
        .stderr_has("already holds an mdmctl store");
}

#[test]
fn init_json_reports_the_store() {
    let t = TestContext::new();
    let j = t.run(&["--format", "json", "init"]).success().json();
    assert_eq!(j["backend"], "sqlite");
    assert_eq!(j["key_source"], "passphrase");
    assert_eq!(j["schema_version"], mdmctl::store::LATEST_SCHEMA_VERSION);
}

#[test]
fn init_without_a_passphrase_off_a_terminal_is_an_error_naming_the_env_var() {
    let t = TestContext::new();
    let r = t.run_with(&["init", "--key-source", "passphrase"], |c| {
        c.env_remove("MDMCTL_PASSPHRASE");
    });
    r.user_error().stderr_has("MDMCTL_PASSPHRASE");
    assert!(!t.db().exists(), "nothing is written");
}

#[test]
fn short_passphrases_are_refused_and_nothing_is_left_behind() {
    let t = TestContext::new();
    let r = t.run_with(&["init"], |c| {
        c.env("MDMCTL_PASSPHRASE", "short");
    });
    r.user_error().stderr_has("too short");
    assert!(!t.db().exists());
}

#[test]
fn passphrase_file_is_read_and_wrong_passphrase_is_refused() {
    let t = TestContext::new();
    t.write("pass.txt", "from a file 12345\n");
    t.run_with(&["--passphrase-file", "pass.txt", "init"], |c| {
        c.env_remove("MDMCTL_PASSPHRASE");
    })
    .success();
    // Generating keys into the store needs the passphrase.
    let r = t.run_with(
        &[
            "generate",
            "mdm-apple",
            "--email",
            "it@example.com",
            "--org",
            "Acme",
            "--out",
            "out",
        ],
        |c| {
            c.env("MDMCTL_PASSPHRASE", "not the passphrase");
        },
    );
    r.user_error()
        .stderr_has("wrong passphrase")
        .stderr_has("nothing was changed");
    assert!(
        !t.exists("out/mdm-apple-apns.key"),
        "no file is written when the store refuses"
    );
    t.run_with(
        &[
            "--passphrase-file",
            "pass.txt",
            "generate",
            "mdm-apple",
            "--email",
            "it@example.com",
            "--org",
            "Acme",
        ],
        |c| {
            c.env_remove("MDMCTL_PASSPHRASE");
        },
    )
    .success();
}

#[test]
fn a_missing_passphrase_file_is_named() {
    let t = TestContext::new();
    t.run_with(&["--passphrase-file", "nope.txt", "init"], |c| {
        c.env_remove("MDMCTL_PASSPHRASE");
    })
    .user_error()
    .stderr_has("nope.txt")
    .stderr_has("--passphrase-file");
}

#[test]
fn commands_on_a_missing_store_say_how_to_create_one() {
    let t = TestContext::new();
    t.run(&["get", "mdm-apple"])
        .user_error()
        .stderr_has("mdmctl init");
    assert!(!t.db().exists(), "reading must not create a store");
}

#[test]
fn postgres_passwords_are_never_printed() {
    let t = TestContext::new();
    // Nothing listens on port 1: the error must still hide the password.
    let r = t.run_with(&["get", "mdm-apple"], |c| {
        c.env(
            "MDMCTL_DB",
            "postgres://admin:hunter2secret@127.0.0.1:1/mdm?connect_timeout=2",
        );
    });
    r.user_error()
        .stderr_has("postgres://admin:***@127.0.0.1:1/mdm");
    assert!(!r.stderr.contains("hunter2secret") && !r.stdout.contains("hunter2secret"));
    let help = t.run_with(&["--help"], |c| {
        c.env("MDMCTL_DB", "postgres://admin:hunter2secret@db/mdm");
    });
    help.success();
    assert!(
        !help.stdout.contains("hunter2secret"),
        "--help must not show MDMCTL_DB's value"
    );
}

#[test]
fn usage_errors_exit_1_and_help_exits_0() {
    let t = TestContext::new();
    assert_eq!(t.run(&["frobnicate"]).code, 1);
    t.run(&["--help"]).success().stdout_has("generate");
    t.run(&["--version"])
        .success()
        .stdout_has(env!("CARGO_PKG_VERSION"));
}

#[test]
fn completions_and_man_page() {
    let t = TestContext::new();
    t.run(&["generate", "completions", "bash"])
        .success()
        .stdout_has("mdm-apple-bm");
    t.run(&["generate", "man"])
        .success()
        .stdout_has(".TH mdmctl");
}

/// The same flow against PostgreSQL, when the test database is configured.
#[test]
fn init_and_generate_on_postgres() {
    let Some(schema) = crate::common::PgSchema::create() else {
        return;
    };
    let t = TestContext::new();
    let pg = |c: &mut std::process::Command| {
        c.env("MDMCTL_DB", schema.url());
    };
    t.run_with(&["init"], pg).success().stdout_has("postgres");
    t.run_with(&["init"], pg)
        .user_error()
        .stderr_has("already holds");
    t.run_with(
        &[
            "generate",
            "mdm-apple",
            "--email",
            "it@example.com",
            "--org",
            "Acme",
        ],
        pg,
    )
    .success()
    .stdout_has("kept, encrypted, in the store");
    let dump = schema.dump();
    assert!(contains(&dump, "scep_ca"), "pg_dump sees the store");
    assert!(
        !contains(&dump, "PRIVATE KEY"),
        "no private key in clear in PostgreSQL"
    );
    assert!(!contains(&dump, PASSPHRASE));
}

// See: issue 11 §8: `MDMCTL_NO_INPUT=1` was rejected (clap wanted `true`).
#[test]
fn no_input_takes_the_usual_truthy_values() {
    let t = TestContext::new();
    for v in ["1", "true", "yes", "on"] {
        let r = t.run_with(&["init"], |c| {
            c.env_remove("MDMCTL_PASSPHRASE").env("MDMCTL_NO_INPUT", v);
        });
        r.user_error().stderr_has("MDMCTL_PASSPHRASE");
        assert!(!r.stderr.contains("invalid value"), "{v}: {}", r.stderr);
    }
}

// See: issue 11 ("Files"): the store file and its WAL are created readable by the owner only.
#[test]
fn the_store_and_its_wal_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestContext::new();
    t.init();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&t.db()), 0o600);
    // With the store open (and written), its WAL and shared-memory files exist.
    let store = mdmctl::store::open(
        &mdmctl::store::Location::parse(&t.db().display().to_string()),
        Box::new(mdmctl::secrets::FixedPassphrase(zeroize::Zeroizing::new(
            crate::common::PASSPHRASE.to_string(),
        ))),
    )
    .unwrap();
    store
        .write(|tx| tx.put_team("Lab", &Default::default()))
        .unwrap();
    for suffix in ["-wal", "-shm"] {
        let p = std::path::PathBuf::from(format!("{}{suffix}", t.db().display()));
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}
