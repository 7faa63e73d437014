//! What scripts and people rely on across commands: `version`, `-o`, `--format yaml` only where
//! it means something, terraform's `--detailed-exitcode`, a closed pipe, a command without its
//! noun, man pages, and a `--server` without a scheme.

use std::io::Read;
use std::process::Stdio;

use crate::common::TestContext;

#[test]
fn version_names_the_build_and_tells_mdmctl_from_micromdms() {
    let t = TestContext::new();
    let v = t.run(&["version"]).success().stdout.clone();
    assert!(v.starts_with("mdmctl 0."), "{v}");
    assert!(v.contains("commit ") && v.contains("built 20"), "{v}");
    let long = t.run(&["--version"]).success().stdout.clone();
    assert!(long.contains("commit "), "{long}");
    let j = t.run(&["-o", "json", "version"]).success().json();
    assert_eq!(j["client"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        j["client"]["commit"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
    assert!(j.get("server").is_none());
}

#[test]
fn yaml_is_refused_where_it_would_be_a_table() {
    let t = TestContext::new();
    t.init();
    t.run(&["-o", "yaml", "get", "teams"])
        .user_error()
        .stderr_has("only for `get config`");
    t.run(&["-o", "yaml", "get", "config"]).success();
    let teams = t.run(&["-o", "json", "get", "teams"]).success().json();
    assert!(teams.is_array());
}

#[test]
fn apply_dry_run_detailed_exitcode_is_terraforms() {
    let t = TestContext::new();
    t.init();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/gitops");
    let plan = t.run(&["apply", "-f", examples, "--dry-run", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "changes pending: {}", plan.stderr);
    assert!(
        !plan.stderr.contains("warning"),
        "the example repository's deadlines are in the future (move them when this fails): {}",
        plan.stderr
    );
    assert!(plan.stdout.contains("plan:"), "{}", plan.stdout);
    t.run(&["apply", "-f", examples]).success();
    let none = t.run(&["apply", "-f", examples, "--dry-run", "--detailed-exitcode"]);
    assert_eq!(none.code, 0, "{}", none.stderr);
    let broken = t.run(&[
        "apply",
        "-f",
        "missing.yml",
        "--dry-run",
        "--detailed-exitcode",
    ]);
    assert_eq!(broken.code, 1, "{}", broken.stderr);
    t.run(&["apply", "-f", examples, "--detailed-exitcode"])
        .user_error()
        .stderr_has("--dry-run");
}

#[test]
fn completions_survive_a_closed_pipe_and_man_pages_cover_every_command() {
    let t = TestContext::new();
    let mut child = t
        .mdmctl()
        .args(["generate", "completions", "zsh"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 8];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The reader is gone: the rest hits a closed pipe.
    let out = child.wait_with_output().unwrap();
    assert_eq!(&first, b"#compdef");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    t.run(&["generate", "man", "--dir", "man"]).success();
    for page in [
        "mdmctl.1",
        "mdmctl-apply.1",
        "mdmctl-get-devices.1",
        "mdmctl-abm-sync.1",
    ] {
        let text = String::from_utf8(t.read(&format!("man/{page}"))).unwrap();
        assert!(text.contains(".TH"), "{page}");
    }
    assert!(t.run(&["--help"]).success().stdout.contains("generate"));
}

#[test]
fn a_command_without_its_noun_prints_its_help() {
    let t = TestContext::new();
    let r = t.run(&["get"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("Commands:\n"),
        "a list, not one line: {}",
        r.stderr
    );
    assert!(r.stderr.contains("  devices"), "{}", r.stderr);
}

#[test]
fn a_server_without_a_scheme_is_named() {
    let t = TestContext::new();
    t.run_with(&["get", "devices"], |c| {
        c.env("MDMCTL_SERVER", "mdm.example.com")
            .env("MDMCTL_API_TOKEN", "x");
    })
    .user_error()
    .stderr_has("`--server mdm.example.com` is not an http(s) URL")
    .stderr_has("--server https://mdm.example.com");
}

/// A deadline already past is applied (it may be on purpose) but said out loud.
#[test]
fn a_past_deadline_is_a_warning_in_the_plan() {
    let t = TestContext::new();
    t.init();
    t.write(
        "old.yml",
        "apiVersion: v1\nkind: config\nspec:\n  mdm:\n    macos_updates: {minimum_version: \"15.1\", deadline: \"2020-01-31\"}\n",
    );
    let r = t.run(&["apply", "-f", "old.yml", "--dry-run"]);
    r.success();
    assert!(
        r.stderr.contains("old.yml:5:")
            && r.stderr
                .contains("the deadline `2020-01-31` is today or past"),
        "{}",
        r.stderr
    );
}

/// `apply -f -` reads one YAML stream from stdin; profile paths in it resolve from the current
/// directory; the same works through `/dev/stdin`.
#[test]
fn apply_reads_yaml_from_stdin() {
    use std::io::Write;
    let t = TestContext::new();
    t.init();
    t.write(
        "profiles/wifi.mobileconfig",
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/gitops/profiles/wifi.mobileconfig"
        ))
        .unwrap(),
    );
    let yaml = "apiVersion: v1\nkind: team\nspec:\n  team:\n    name: Piped\n    mdm:\n      macos_settings:\n        custom_settings:\n          - profiles/wifi.mobileconfig\n";
    for arg in ["-", "/dev/stdin"] {
        let mut child = t
            .mdmctl()
            .current_dir(t.dir.path())
            .args(["apply", "-f", arg, "--dry-run"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{arg}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("+ team Piped"), "{arg}: {stdout}");
        assert!(
            stdout.contains("com.example.wifi") || stdout.contains("profile"),
            "{arg}: {stdout}"
        );
    }
}

/// `import-devices -` and `/dev/stdin` read the stream once (format detection included), and a
/// gzip-compressed CSV is read as CSV.
#[test]
fn import_devices_reads_stdin_and_gzip_csv() {
    use std::io::Write;
    let t = TestContext::new();
    t.init();
    let template = t
        .run(&["import-devices", "--csv-template"])
        .success()
        .stdout
        .clone();
    for arg in ["-", "/dev/stdin"] {
        let mut child = t
            .mdmctl()
            .args(["-o", "json", "import-devices", arg, "--dry-run"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(template.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{arg}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(j["devices"]["imported"], 1, "{arg}: {j}");
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(template.as_bytes()).unwrap();
    t.write("devices.csv.gz", gz.finish().unwrap());
    let j = t
        .run(&[
            "-o",
            "json",
            "import-devices",
            "devices.csv.gz",
            "--dry-run",
        ])
        .success()
        .json();
    assert_eq!(j["devices"]["imported"], 1, "{j}");
}

#[test]
fn main_commands_end_their_help_with_examples_and_empty_lists_name_their_filters() {
    let t = TestContext::new();
    for cmd in [
        "apply",
        "import-devices",
        "serve",
        "transfer",
        "abm",
        "cutover",
    ] {
        let help = t.run(&[cmd, "--help"]).success().stdout.clone();
        let tail = help.trim_end().rsplit("Examples:").next().unwrap_or("");
        assert!(
            help.contains("Examples:\n  mdmctl ") || help.contains("Examples:\n  envsubst"),
            "{cmd}: {help}"
        );
        assert!(
            tail.lines().filter(|l| l.contains("mdmctl ")).count() >= 2,
            "{cmd}: {tail}"
        );
    }
    t.init();
    t.run(&["get", "devices", "--team", "Lab"])
        .success()
        .stderr_has("No devices in team Lab.");
}

/// Off a terminal (a CI log), a long import prints a plain progress line every few seconds
/// (`MDMCTL_PROGRESS_SECONDS`, here 0: at every report) instead of drawing a bar.
#[test]
fn an_import_off_a_terminal_prints_progress_lines() {
    let t = TestContext::new();
    t.init();
    // A mysqldump-shaped file of 12 MB: comments the reader passes over, no device table.
    let mut dump = String::from("-- MySQL dump 10.19  Distrib 10.11.19-MariaDB\n");
    let line = format!("-- {}\n", "x".repeat(1021));
    for _ in 0..12 * 1024 {
        dump.push_str(&line);
    }
    t.write("big.sql", dump);
    let r = t.run_with(
        &[
            "import-devices",
            "big.sql",
            "--from",
            "nanomdm",
            "--dry-run",
        ],
        |c| {
            c.env("MDMCTL_PROGRESS_SECONDS", "0");
        },
    );
    assert!(r.stderr.contains("importing: "), "{}", r.stderr);
    assert!(r.stderr.contains("MiB read"), "{}", r.stderr);
    assert!(
        !r.stderr.contains('\r'),
        "no bar drawn off a terminal: {:?}",
        r.stderr
    );
}

/// A repository in Fleet's newer layout (fleetdm/fleet-gitops) gets one problem that names the
/// layout and how its keys map, not an unknown-key error per line.
#[test]
fn fleets_newer_gitops_layout_is_named() {
    let t = TestContext::new();
    t.init();
    t.write(
        "fleet/default.yml",
        "org_settings:\n  server_settings:\n    server_url: https://fleet.example.com\ncontrols:\n  macos_updates:\n    minimum_version: \"15.1\"\n    deadline: \"2031-01-01\"\npolicies:\nagent_options:\n",
    );
    let r = t.run(&["apply", "-f", "fleet", "--dry-run"]);
    r.user_error()
        .stderr_has("Fleet's newer GitOps layout")
        .stderr_has("controls.macos_updates");
    assert_eq!(
        r.stderr
            .lines()
            .filter(|l| l.contains("default.yml"))
            .count(),
        1,
        "one problem: {}",
        r.stderr
    );
}
