//! What `apply` will read (issue 11 §5): regular files only for what a repository names (a
//! device never ends, a FIFO never answers), profiles no larger than `--max-profile-size`, and
//! only from inside the repository
//! (no `..`, absolute paths or symlinks out of it) unless `--allow-outside-repo`. A repository
//! driven by pull requests must not make the runner read its own files or run out of memory.
//! What the admin names with `-f` may be a stream (issue 15: `-`, a FIFO, `<(…)`), read once
//! and bounded by the YAML limit.

use std::time::{Duration, Instant};

use crate::common::{Run, TestContext};
use crate::wifi;

fn repo_naming(ctx: &TestContext, path: &str) {
    ctx.write(
        "repo/default.yml",
        format!(
            "apiVersion: v1\nkind: config\nspec:\n  mdm:\n    macos_settings:\n      custom_settings:\n        - {path}\n"
        ),
    );
}

/// `apply -f repo --dry-run` (plus `extra`), which must end within a few seconds.
fn apply(ctx: &TestContext, extra: &[&str]) -> Run {
    let started = Instant::now();
    let mut args = vec!["apply", "-f", "repo", "--dry-run"];
    args.extend(extra);
    let r = ctx.run(&args);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    r
}

#[test]
fn devices_fifos_and_huge_profiles_are_refused_before_they_are_read() {
    let ctx = TestContext::new();
    ctx.init();
    repo_naming(&ctx, "/dev/zero");
    let r = apply(&ctx, &["--allow-outside-repo"]);
    r.user_error()
        .stderr_has("character device, not a regular file");

    std::fs::create_dir_all(ctx.path("repo/profiles")).unwrap();
    let fifo = ctx.path("repo/profiles/pipe.mobileconfig");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    repo_naming(&ctx, "profiles/pipe.mobileconfig");
    apply(&ctx, &[]).user_error().stderr_has("FIFO");
    std::fs::remove_file(&fifo).unwrap();

    // 150 MB (sparse: no disk used): refused by size, with the flag that raises it.
    let big = std::fs::File::create(ctx.path("repo/profiles/big.mobileconfig")).unwrap();
    big.set_len(150 * 1024 * 1024).unwrap();
    repo_naming(&ctx, "profiles/big.mobileconfig");
    apply(&ctx, &[])
        .user_error()
        .stderr_has("157286400 bytes")
        .stderr_has("--max-profile-size");
    // Raised, it is read and then refused for what it is (not a property list).
    apply(&ctx, &["--max-profile-size", "200M"])
        .user_error()
        .stderr_has("not a property list");

    // A YAML `-f` named on purpose may be a stream (a FIFO, `<(…)`): it is read once, bounded.
    let yaml_fifo = ctx.path("pipe.yml");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&yaml_fifo)
            .status()
            .unwrap()
            .success()
    );
    let writer = {
        let path = yaml_fifo.clone();
        std::thread::spawn(move || {
            std::fs::write(
                path,
                "apiVersion: v1\nkind: team\nspec:\n  team:\n    name: FromPipe\n",
            )
        })
    };
    let started = Instant::now();
    ctx.run(&["apply", "-f", "pipe.yml", "--dry-run"])
        .success()
        .stdout_has("+ team FromPipe");
    writer.join().unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    // A stream that never ends is cut at the YAML limit, not read forever.
    ctx.run(&["apply", "-f", "/dev/zero", "--dry-run"])
        .user_error()
        .stderr_has("/dev/zero");
}

#[test]
fn profiles_outside_the_repository_are_refused_unless_allowed() {
    let ctx = TestContext::new();
    ctx.init();
    ctx.write(
        "secret.mobileconfig",
        wifi("com.example.out", "Outside", "Out"),
    );
    ctx.write(
        "repo/profiles/ok.mobileconfig",
        wifi("com.example.in", "Inside", "In"),
    );
    let outside = ctx.path("secret.mobileconfig").display().to_string();
    std::os::unix::fs::symlink(&outside, ctx.path("repo/profiles/link.mobileconfig")).unwrap();
    for path in [
        "../secret.mobileconfig".to_string(),
        outside.clone(),
        "profiles/link.mobileconfig".to_string(),
    ] {
        repo_naming(&ctx, &path);
        apply(&ctx, &[])
            .user_error()
            .stderr_has("leads outside the repository")
            .stderr_has("--allow-outside-repo");
        apply(&ctx, &["--allow-outside-repo"]).success();
    }
    // Inside the repository (a symlink that stays inside included) is fine.
    std::os::unix::fs::symlink(
        ctx.path("repo/profiles/ok.mobileconfig"),
        ctx.path("repo/profiles/alias.mobileconfig"),
    )
    .unwrap();
    repo_naming(&ctx, "profiles/alias.mobileconfig");
    apply(&ctx, &[]).success();
    // In a git repository the repository is the whole work tree: a team file may name
    // `../profiles/…` even when `-f` names only its directory.
    std::fs::create_dir_all(ctx.path("repo/.git")).unwrap();
    ctx.write(
        "repo/teams/lab.yml",
        "apiVersion: v1\nkind: team\nspec:\n  team:\n    name: Lab\n    mdm:\n      macos_settings:\n        custom_settings: [../profiles/ok.mobileconfig]\n",
    );
    ctx.run(&["apply", "-f", "repo/teams", "--dry-run"])
        .success();
}
