//! The admin API and the CLI's remote mode: tokens made with `mdmctl token create` on the
//! server's store, commands sent with `mdmctl --server … mdm …`, results read back.

use std::process::Command;

use mdmctl::sim::device::{Fleet, IdentityMode};
use mdmctl::store::ActivityQuery;

use crate::common::Run;
use crate::enrollment::wait_until;
use crate::harness::{Options, PASSPHRASE, Server};

/// Run the mdmctl binary on the server's store (SQLite allows a second process).
pub(crate) async fn mdmctl(s: &Server, token: Option<&str>, args: &[&str]) -> Run {
    let db = s.dir.path().join("mdmctl.db");
    let url = s.url.clone();
    let token = token.map(str::to_string);
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mdmctl"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("USER", "tester")
            .env("MDMCTL_DB", &db)
            .env("MDMCTL_PASSPHRASE", PASSPHRASE);
        if let Some(t) = &token {
            c.env("MDMCTL_API_TOKEN", t).env("MDMCTL_SERVER", &url);
        }
        let out = c.args(&args).output().expect("run mdmctl");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

/// `mdmctl token create --name NAME --role maintainer`: the new token.
pub(crate) async fn token(s: &Server, name: &str) -> String {
    token_as(s, name, "maintainer", None).await
}

/// `mdmctl token create --name NAME --role ROLE [--team TEAM]`: the new token.
pub(crate) async fn token_as(s: &Server, name: &str, role: &str, team: Option<&str>) -> String {
    let mut args = vec!["token", "create", "--name", name, "--role", role];
    if let Some(t) = team {
        args.extend(["--team", t]);
    }
    let created = mdmctl(s, None, &args).await;
    created.success();
    created.stdout.trim().to_string()
}

/// The activity log's entries of a type (or a family ending in `.`), read with `mdmctl get
/// activities --format json` on the store.
pub(crate) async fn activities(s: &Server, kind: &str) -> Vec<serde_json::Value> {
    let log = mdmctl(
        s,
        None,
        &["--format", "json", "get", "activities", "--type", kind],
    )
    .await;
    log.success();
    log.json().as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ci_pipeline_sends_commands_through_the_api() {
    let s = Server::start(Options::default()).await;
    let macs = [
        s.enroll(1, IdentityMode::Signature).await,
        s.enroll(2, IdentityMode::Signature).await,
    ];
    let fleet = Fleet::new(macs.iter().cloned());
    let waker = fleet.wake_on_push(s.apns.subscribe());

    let created = mdmctl(
        &s,
        None,
        &["token", "create", "--name", "ci", "--role", "maintainer"],
    )
    .await;
    created.success();
    let token = created.stdout.trim().to_string();
    assert!(token.starts_with("mdmctl_") && token.len() > 40);
    let listed = mdmctl(&s, None, &["token", "list"]).await;
    listed.success().stdout_has("ci");
    assert!(
        !listed.stdout.contains(&token),
        "tokens are never shown again"
    );

    let sent = mdmctl(
        &s,
        Some(&token),
        &[
            "--format",
            "json",
            "mdm",
            "device-information",
            "--udid",
            &macs[0].udid,
            "--serial",
            &macs[1].serial,
            "--udid",
            "NO-SUCH-DEVICE",
        ],
    )
    .await;
    sent.success().stderr_has("NO-SUCH-DEVICE");
    let j = sent.json();
    assert_eq!(j["queued"].as_array().unwrap().len(), 2);
    assert_eq!(j["push"]["delivered"], 2);
    let uuid = j["command_uuid"].as_str().unwrap().to_string();
    wait_until(|| {
        mdmctl::mdm::status(s.store.as_ref(), &uuid)
            .unwrap()
            .iter()
            .all(|e| e.status == mdmctl::store::QueueStatus::Acknowledged)
    })
    .await;
    let status = mdmctl(
        &s,
        Some(&token),
        &["--format", "json", "get", "commands", "--command", &uuid],
    )
    .await;
    let entries = status.success().json();
    assert!(
        entries
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["status"] == "acknowledged")
    );
    let per_device = mdmctl(
        &s,
        Some(&token),
        &["get", "commands", "--udid", &macs[0].serial],
    )
    .await;
    per_device
        .success()
        .stdout_has("DeviceInformation")
        .stdout_has("acknowledged");

    // The activity log says who sent it: the token's name.
    let sent_log = s
        .store
        .read(|tx| {
            tx.activities(&ActivityQuery {
                kind: Some("command.sent".into()),
                ..Default::default()
            })
        })
        .unwrap();
    assert_eq!(sent_log[0].actor, "api:ci");

    // A revoked token is refused, with a hint.
    mdmctl(&s, None, &["token", "revoke", "ci"]).await.success();
    mdmctl(
        &s,
        Some(&token),
        &["mdm", "security-info", "--udid", &macs[0].udid],
    )
    .await
    .user_error()
    .stderr_has("refused the API token")
    .stderr_has("MDMCTL_API_TOKEN");
    waker.abort();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_answers_json_errors_with_hints() {
    let s = Server::start(Options::default()).await;
    let mac = s.enroll(1, IdentityMode::Signature).await;
    let http = s.http();
    let api = format!("{}/api/v1", s.url);
    // No token: 401 (this is the admin API, not a device).
    let r = http.get(format!("{api}/devices")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["hint"]
            .as_str()
            .unwrap()
            .contains("mdmctl token create")
    );

    let created = mdmctl(
        &s,
        None,
        &[
            "--format", "json", "token", "create", "--name", "admin", "--role", "admin",
        ],
    )
    .await;
    let token = created.success().json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let auth = |rb: reqwest::RequestBuilder| rb.bearer_auth(&token);

    let list: serde_json::Value = auth(http.get(format!("{api}/devices?migrated=false")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let r = auth(http.get(format!("{api}/devices?seen_since=yesterday")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let r = auth(http.post(format!("{api}/commands")))
        .json(&serde_json::json!({ "devices": [mac.udid], "request_type": "Reboot" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().await.unwrap();
    assert!(
        e["error"].as_str().unwrap().contains("Reboot")
            && e["hint"].as_str().unwrap().contains("DeviceInformation")
    );
    let r = auth(http.post(format!("{api}/commands")))
        .json(&serde_json::json!({ "devices": ["nobody"], "request_type": "SecurityInfo" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = auth(http.get(format!("{api}/commands/no-such-uuid")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // A device's details: no push credentials unless asked, and asking is recorded.
    let d: serde_json::Value = auth(http.get(format!("{api}/devices/{}", mac.serial)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["id"], mac.udid.as_str());
    assert!(d["enrollments"][0].get("push_magic").is_none());
    let d: serde_json::Value = auth(http.get(format!("{api}/devices/{}?secrets=true", mac.udid)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["enrollments"][0]["push_magic"], mac.push_magic.as_str());
    let viewed = s
        .store
        .read(|tx| {
            tx.activities(&ActivityQuery {
                kind: Some("device.push_credentials_viewed".into()),
                ..Default::default()
            })
        })
        .unwrap();
    assert_eq!(viewed[0].actor, "api:admin");

    let c: serde_json::Value = auth(http.post(format!("{api}/scep/challenges")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(c["challenge"].as_str().unwrap().len(), 48);
    let p: serde_json::Value = auth(http.post(format!("{api}/push")))
        .json(&serde_json::json!({ "devices": [mac.udid] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(p["delivered"], 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_devices_and_device_work_locally_and_through_the_api() {
    let s = Server::start(Options::default()).await;
    let mac = s.enroll(1, IdentityMode::Signature).await;
    let created = mdmctl(
        &s,
        None,
        &["token", "create", "--name", "ops", "--role", "maintainer"],
    )
    .await;
    let token = created.success().stdout.trim().to_string();

    for remote in [None, Some(token.as_str())] {
        let listed = mdmctl(&s, remote, &["--format", "json", "get", "devices"]).await;
        let list = listed.success().json();
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), 1, "{remote:?}");
        assert_eq!(list[0]["id"], mac.udid.as_str());
        assert_eq!(list[0]["serial"], mac.serial.as_str());
        let table = mdmctl(&s, remote, &["get", "devices"]).await;
        table
            .success()
            .stdout_has("UDID")
            .stdout_has(&mac.udid)
            .stdout_has("MacBook Air")
            .stdout_has(&mac.os_version)
            .stdout_has("enrolled")
            .stderr_has("1 device(s)");
        assert!(
            table.stdout.lines().all(|l| l.chars().count() <= 120),
            "{}",
            table.stdout
        );
        let wide = mdmctl(&s, remote, &["-o", "wide", "get", "devices"]).await;
        wide.success()
            .stdout_has("IDENTITY EXPIRES")
            .stdout_has("TOPIC")
            .stdout_has(&mac.udid);
        let none = mdmctl(
            &s,
            remote,
            &["--format", "json", "get", "devices", "--migrated", "true"],
        )
        .await;
        assert_eq!(none.success().json().as_array().unwrap().len(), 0);

        // A plain read (text or JSON) shows no push credentials and records nothing; asking
        // for them shows them, and that is audited.
        let plain = mdmctl(
            &s,
            remote,
            &["--format", "json", "get", "device", &mac.udid],
        )
        .await
        .success()
        .json();
        assert!(
            plain["enrollments"][0].get("push_magic").is_none(),
            "{plain}"
        );
        let text = mdmctl(&s, remote, &["get", "device", &mac.serial]).await;
        text.success()
            .stdout_has(&mac.udid)
            .stdout_has("Push token")
            .stdout_has("Recent commands");
        assert!(!text.stdout.contains("Push magic"));
        let j = mdmctl(
            &s,
            remote,
            &[
                "--format",
                "json",
                "get",
                "device",
                &mac.udid,
                "--show-push-credentials",
            ],
        )
        .await
        .success()
        .json();
        assert_eq!(j["serial"], mac.serial.as_str());
        let channel = &j["enrollments"][0];
        assert!(
            channel["push_magic"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(channel["token_hex"].as_str().is_some_and(|t| t.len() >= 64));

        mdmctl(&s, remote, &["get", "device", "NO-SUCH"])
            .await
            .user_error()
            .stderr_has("no device")
            .stderr_has("hint:");
    }
    let viewed = s
        .store
        .read(|tx| {
            tx.activities(&ActivityQuery {
                kind: Some("device.push_credentials_viewed".into()),
                ..Default::default()
            })
        })
        .unwrap();
    let actors: Vec<&str> = viewed.iter().map(|a| a.actor.as_str()).collect();
    assert!(
        actors.iter().any(|a| a.starts_with("tester@")),
        "{actors:?}"
    );
    assert!(actors.contains(&"api:ops"), "{actors:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_works_through_the_api_validating_locally_first() {
    let s = Server::start(Options::default()).await;
    let token = mdmctl(
        &s,
        None,
        &["token", "create", "--name", "gitops", "--role", "gitops"],
    )
    .await
    .success()
    .stdout
    .trim()
    .to_string();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/gitops");
    let teams = |s: &Server| s.store.read(|tx| tx.teams()).unwrap().len();

    let plan = mdmctl(&s, Some(&token), &["apply", "-f", examples, "--dry-run"]).await;
    plan.success()
        .stdout_has("+ profile")
        .stderr_has("dry run: nothing was written");
    assert_eq!(teams(&s), 0, "a dry run writes nothing on the server");

    let applied = mdmctl(
        &s,
        Some(&token),
        &["--format", "json", "apply", "-f", examples],
    )
    .await;
    let j = applied.success().json();
    assert_eq!(j["applied"], true);
    assert!(j["add"].as_u64().unwrap() > 0);
    assert_eq!(teams(&s), 2);
    let log = s
        .store
        .read(|tx| {
            tx.activities(&ActivityQuery {
                kind: Some("gitops.apply".into()),
                ..Default::default()
            })
        })
        .unwrap();
    assert_eq!(log[0].actor, "api:gitops");
    mdmctl(&s, Some(&token), &["apply", "-f", examples])
        .await
        .success()
        .stdout_has("no changes");

    // The desired state reads back through the API as on the store: `get config` (its YAML
    // applies back with no change), `get teams`, `get profiles`; a team token sees its team.
    let local = mdmctl(&s, None, &["-o", "json", "get", "teams"]).await;
    let remote = mdmctl(&s, Some(&token), &["-o", "json", "get", "teams"]).await;
    assert_eq!(remote.success().json(), local.success().json());
    let yaml = mdmctl(&s, Some(&token), &["-o", "yaml", "get", "config"]).await;
    yaml.success();
    let back = s.dir.path().join("back.yml");
    std::fs::write(&back, &yaml.stdout).unwrap();
    mdmctl(
        &s,
        Some(&token),
        &[
            "apply",
            "-f",
            back.to_str().unwrap(),
            "--dry-run",
            "--allow-outside-repo",
        ],
    )
    .await
    .success()
    .stdout_has("no changes");
    mdmctl(
        &s,
        Some(&token),
        &["get", "profiles", "--team", "Workstations"],
    )
    .await
    .success()
    .stdout_has("com.mdmctl.filevault");
    let lab = token_as(&s, "lab-reader", "observer", Some("Lab")).await;
    let theirs = mdmctl(&s, Some(&lab), &["-o", "json", "get", "teams"]).await;
    let theirs = theirs.success().json();
    assert_eq!(theirs.as_array().unwrap().len(), 1, "{theirs}");
    assert_eq!(theirs[0]["name"], "Lab");

    // Problems in the files are found here, and nothing is sent.
    let dir = s.dir.path().join("bad");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bad.yml"),
        "apiVersion: v1\nkind: config\nspec:\n  mdm:\n    macos_updates: {minimum_version: \"15.1\", dedline: \"2027-01-01\"}\n",
    )
    .unwrap();
    let bad = dir.to_str().unwrap();
    mdmctl(&s, Some(&token), &["apply", "-f", bad])
        .await
        .user_error()
        .stderr_has("dedline")
        .stderr_has("deadline");
    // Problems only the server's store can show come back the same way.
    std::fs::write(
        dir.join("bad.yml"),
        "apiVersion: v1\nkind: config\nspec:\n  mdm:\n    apple_bm_default_team: Nowhere\n",
    )
    .unwrap();
    mdmctl(&s, Some(&token), &["apply", "-f", bad])
        .await
        .user_error()
        .stderr_has("Nowhere")
        .stderr_has("bad.yml");
    let after = s
        .store
        .read(|tx| {
            tx.activities(&ActivityQuery {
                kind: Some("gitops.apply".into()),
                ..Default::default()
            })
        })
        .unwrap();
    assert_eq!(after.len(), 1, "refused applies change nothing");
    s.stop().await;
}

/// `mdmctl version` through `--server` shows the server's build beside this one
/// (`GET /api/v1/version`, any role); the same build gives no warning. `get mdm-apple` reads the
/// server's certificates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_through_the_server_shows_both_builds() {
    let s = Server::start(Options::default()).await;
    let observer = token_as(&s, "viewer", "observer", None).await;
    let v = mdmctl(&s, Some(&observer), &["-o", "json", "version"]).await;
    v.success();
    let j = v.json();
    assert_eq!(j["server"], j["client"], "{j}");
    assert!(!v.stderr.contains("warning"), "{}", v.stderr);
    let text = mdmctl(&s, Some(&observer), &["version"]).await;
    text.success();
    assert!(text.stdout.contains("\nserver 0."), "{}", text.stdout);
    let none = mdmctl(&s, Some("not-a-token"), &["version"]).await;
    assert_ne!(none.code, 0, "the API needs a token");
    // `get mdm-apple` through the server: the same certificates as on the store, no key.
    let remote = mdmctl(&s, Some(&observer), &["-o", "json", "get", "mdm-apple"]).await;
    let remote = remote.success().json();
    assert_eq!(remote["apns"]["topic"], s.topic.as_str(), "{remote}");
    let local = mdmctl(&s, None, &["-o", "json", "get", "mdm-apple"]).await;
    assert_eq!(remote, local.success().json());
    assert!(!remote.to_string().contains("PRIVATE KEY"));
    s.stop().await;
}
