//! Who may enroll and who may move a device's identity (issue 11): `/enroll` needs an
//! enrollment secret; a certificate obtained through enrollment cannot take over a known device;
//! the admin's `mdmctl device rebind` and a secret scoped to one device can; rate limits and
//! challenge expiry; and API tokens with roles and teams.

use std::sync::Arc;

use mdmctl::sim::device::{Fleet, IdentityMode, SimDevice};

use crate::api::{mdmctl, token_as};
use crate::harness::{Ca, Options, Server};
use crate::reconcile::wait_for;

/// Rows in `scep_challenges`, read from the SQLite file as an auditor would.
fn challenge_rows(s: &Server) -> i64 {
    let conn = rusqlite::Connection::open(s.dir.path().join("mdmctl.db")).unwrap();
    conn.query_row("SELECT COUNT(*) FROM scep_challenges", [], |r| r.get(0))
        .unwrap()
}

/// A device that downloads a profile with `secret` and enrolls claiming to be `claims`.
async fn enroll_as(
    s: &Server,
    n: usize,
    secret: &str,
    claims: Option<&SimDevice>,
) -> (Arc<SimDevice>, Result<(), String>) {
    let mut d = SimDevice::new(n, "15.1", IdentityMode::Signature, s.http(), &s.tls_roots).unwrap();
    if let Some(victim) = claims {
        d = d.with_ids(
            &victim.udid,
            &victim.serial,
            victim.token.clone(),
            &victim.push_magic,
        );
    }
    let profile = s
        .http()
        .get(format!("{}/enroll?token={secret}", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(profile.status(), 200);
    let bytes = profile.bytes().await.unwrap();
    let r = d.enroll(&bytes).await.map_err(|e| e.to_string());
    (Arc::new(d), r)
}

// See: issue 11 §2 and §4: `GET /enroll` handed a one-time challenge to anyone (and wrote a row
// each time); its certificate then took over a known device by Authenticate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_needs_a_secret_and_cannot_take_over_a_known_device() {
    let s = Server::start(Options {
        scep_challenge: None,
        ..Options::default()
    })
    .await;
    let old = Ca::new("Old CA");
    s.trust_old_ca(&old);
    let real = s.migrated(1, &old, IdentityMode::Signature);
    assert_eq!(real.session().await.unwrap(), 200);
    let http = s.http();

    // No secret, a wrong one: 401 asking for basic auth, and no challenge written.
    let before = challenge_rows(&s);
    let r = http.get(format!("{}/enroll", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    let r = http
        .get(format!("{}/enroll?token=mdmctl_enroll_guess", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        challenge_rows(&s),
        before,
        "nothing written for a refused request"
    );
    // Basic auth with the secret as the password works (a browser's prompt).
    let r = http
        .get(format!("{}/enroll", s.url))
        .basic_auth("anyone", Some(&s.enroll_secret))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(challenge_rows(&s), before + 1);

    // Someone with a real enrollment secret enrolls and claims the known Mac's UDID: the SCEP
    // certificate is real, but not issued for that device. Refused, recorded, nothing moved.
    let (attacker, result) = enroll_as(&s, 9, &s.enroll_secret, Some(&real)).await;
    let err = result.unwrap_err();
    assert!(err.contains("Authenticate") && err.contains("403"), "{err}");
    assert_eq!(attacker.session().await.unwrap(), 403);
    let d = s.store.read(|tx| tx.device(&real.udid)).unwrap().unwrap();
    assert_eq!(
        d.identity_sha256,
        real.identity_sha256(),
        "the binding stays"
    );
    let refused = s.activities("device.bind_refused");
    assert_eq!(refused.len(), 1);
    assert!(
        refused[0].summary.contains("mdmctl device rebind"),
        "{}",
        refused[0].summary
    );
    // The real Mac is still served.
    assert_eq!(real.session().await.unwrap(), 200);

    // The same secret enrolls a new Mac.
    let (fresh, result) = enroll_as(&s, 10, &s.enroll_secret, None).await;
    result.unwrap();
    assert_eq!(fresh.session().await.unwrap(), 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_enrolled_mac_binds_with_the_admins_say_so_or_a_secret_for_it() {
    let s = Server::start(Options {
        scep_challenge: None,
        ..Options::default()
    })
    .await;
    let old = Ca::new("Old CA");
    s.trust_old_ca(&old);
    let wiped = s.migrated(1, &old, IdentityMode::Signature);
    let other = s.migrated(2, &old, IdentityMode::Signature);

    // `mdmctl device rebind`: the Mac's next Authenticate with an identity from mdmctl's SCEP
    // binds, once.
    mdmctl(
        &s,
        None,
        &["device", "rebind", &wiped.serial, "--within", "1"],
    )
    .await
    .success()
    .stdout_has(&wiped.udid);
    let (again, result) = enroll_as(&s, 11, &s.enroll_secret, Some(&wiped)).await;
    result.unwrap();
    assert_eq!(again.session().await.unwrap(), 200);
    let d = s.store.read(|tx| tx.device(&wiped.udid)).unwrap().unwrap();
    assert_eq!(d.identity_sha256, again.identity_sha256());
    assert_eq!(s.activities("device.rebind_allowed").len(), 1);
    // Once only: a second claim is refused.
    let (_, result) = enroll_as(&s, 12, &s.enroll_secret, Some(&wiped)).await;
    assert!(result.unwrap_err().contains("403"));

    // An enrollment secret made for one device lets that device (and no other) re-enroll.
    let made = mdmctl(
        &s,
        None,
        &[
            "--format",
            "json",
            "enroll-secret",
            "create",
            "--name",
            "for-2",
            "--device",
            &other.serial,
        ],
    )
    .await;
    let secret = made.success().json()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, result) = enroll_as(&s, 13, &secret, Some(&wiped)).await;
    assert!(result.unwrap_err().contains("403"), "not for this device");
    let (mine, result) = enroll_as(&s, 14, &secret, Some(&other)).await;
    result.unwrap();
    assert_eq!(mine.session().await.unwrap(), 200);
    let listed = mdmctl(&s, None, &["enroll-secret", "list"]).await;
    listed.success().stdout_has("for-2").stdout_has(&other.udid);
    assert!(!listed.stdout.contains(&secret), "never shown again");
    mdmctl(&s, None, &["enroll-secret", "revoke", "for-2"])
        .await
        .success();
    let r = s
        .http()
        .get(format!("{}/enroll?token={secret}", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a revoked secret is refused");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_secret_puts_new_macs_in_its_team_and_challenges_expire() {
    let s = Server::start(Options {
        scep_challenge: None,
        ..Options::default()
    })
    .await;
    s.store
        .write(|tx| tx.put_team("Lab", &Default::default()))
        .unwrap();
    let lab = mdmctl(
        &s,
        None,
        &[
            "--format",
            "json",
            "enroll-secret",
            "create",
            "--name",
            "lab",
            "--team",
            "Lab",
        ],
    )
    .await;
    let secret = lab.success().json()["secret"].as_str().unwrap().to_string();
    let (mac, result) = enroll_as(&s, 1, &secret, None).await;
    result.unwrap();
    let team = s.store.read(|tx| tx.device_team(&mac.udid)).unwrap();
    assert_eq!(team.as_deref(), Some("Lab"));
    s.stop().await;

    // A challenge not used within its time is refused by SCEP, and pruned.
    let s = Server::start(Options {
        scep_challenge: None,
        ..Options::default()
    })
    .await;
    let profile = s
        .http()
        .get(s.enroll_url())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(challenge_rows(&s) >= 1);
    // Expire it (as an hour passing would), then let housekeeping run.
    let conn = rusqlite::Connection::open(s.dir.path().join("mdmctl.db")).unwrap();
    conn.execute("UPDATE scep_challenges SET expires_at = 1", [])
        .unwrap();
    let late = SimDevice::new(3, "15.1", IdentityMode::Signature, s.http(), &[]).unwrap();
    let err = late.enroll(&profile).await.unwrap_err().to_string();
    assert!(err.contains("refused"), "{err}");
    wait_for(10, "expired challenges pruned", || challenge_rows(&s) == 0).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_and_scep_are_rate_limited_per_client() {
    let s = Server::start(Options::default()).await;
    let http = s.http();
    let mut statuses = Vec::new();
    for _ in 0..130 {
        let r = http
            .get(format!("{}/scep?operation=GetCACaps", s.url))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            assert!(r.headers().get("retry-after").is_some());
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert!(statuses.iter().filter(|s| **s == 200).count() >= 100);
    // The MDM endpoint is not limited: devices keep checking in.
    let old = Ca::new("Old CA");
    s.trust_old_ca(&old);
    let mac = s.migrated(1, &old, IdentityMode::Signature);
    assert_eq!(mac.session().await.unwrap(), 200);
    s.stop().await;

    // Behind a proxy, each client has its own budget (the proxy's header names it).
    let s = Server::start(Options {
        client_ip_header: Some("X-Forwarded-For".into()),
        ..Options::default()
    })
    .await;
    let caps = |ip: &'static str| {
        s.http()
            .get(format!("{}/scep?operation=GetCACaps", s.url))
            .header("X-Forwarded-For", format!("203.0.113.9, {ip}"))
            .send()
    };
    let mut last = 0;
    for _ in 0..400 {
        last = caps("198.51.100.1").await.unwrap().status().as_u16();
        if last == 429 {
            break;
        }
    }
    assert_eq!(last, 429);
    assert_eq!(caps("198.51.100.2").await.unwrap().status(), 200);
    s.stop().await;
}

// See: issue 11 §6: every token could read FileVault keys, erase devices and apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_roles_and_teams_limit_what_the_api_does() {
    let s = Server::start(Options::default()).await;
    s.store
        .write(|tx| tx.put_team("Lab", &Default::default()))
        .unwrap();
    let staff = s.enroll(1, IdentityMode::Signature).await;
    let lab = s.enroll(2, IdentityMode::Signature).await;
    s.store
        .write(|tx| tx.set_device_team(&lab.udid, Some("Lab")))
        .unwrap();
    let waker = Fleet::new([staff.clone(), lab.clone()]).wake_on_push(s.apns.subscribe());
    let api = format!("{}/api/v1", s.url);
    let http = s.http();
    let observer = token_as(&s, "watch", "observer", None).await;
    let gitops = token_as(&s, "ci", "gitops", None).await;
    let lab_ops = token_as(&s, "lab-ops", "maintainer", Some("Lab")).await;
    let admin = token_as(&s, "root", "admin", None).await;

    // An observer reads, and may not act or see secrets: 403 naming the role that would.
    let r = http
        .get(format!("{api}/devices"))
        .bearer_auth(&observer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(format!("{api}/commands"))
        .bearer_auth(&observer)
        .json(&serde_json::json!({ "devices": [staff.udid], "request_type": "DeviceInformation" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let e: serde_json::Value = r.json().await.unwrap();
    assert!(
        e["hint"].as_str().unwrap().contains("--role maintainer"),
        "{e}"
    );
    for path in [
        format!("{api}/devices/{}/disk-encryption-key", staff.udid),
        format!("{api}/devices/{}?secrets=true", staff.udid),
    ] {
        let r = http.get(&path).bearer_auth(&observer).send().await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }
    // The scheme's case does not matter (RFC 9110).
    let r = http
        .get(format!("{api}/devices"))
        .header("Authorization", format!("bearer {observer}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // gitops may apply (and dry-run) and nothing else.
    let r = http
        .get(format!("{api}/devices"))
        .bearer_auth(&gitops)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/gitops");
    mdmctl(&s, Some(&gitops), &["apply", "-f", examples, "--dry-run"])
        .await
        .success();
    let refused = mdmctl(
        &s,
        Some(&gitops),
        &["mdm", "device-information", "--udid", &staff.udid],
    )
    .await;
    refused.user_error().stderr_has("--role");

    // A team token sees and acts on its team only; other devices are as if unknown.
    let listed: serde_json::Value = http
        .get(format!("{api}/devices"))
        .bearer_auth(&lab_ops)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [lab.udid.as_str()]);
    let r = http
        .get(format!("{api}/devices/{}", staff.udid))
        .bearer_auth(&lab_ops)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let sent: serde_json::Value = http
        .post(format!("{api}/commands"))
        .bearer_auth(&lab_ops)
        .json(&serde_json::json!({ "devices": [lab.udid, staff.udid], "request_type": "DeviceInformation" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sent["queued"].as_array().unwrap().len(), 1, "{sent}");
    assert_eq!(sent["unknown"][0], staff.udid.as_str());
    let r = http
        .post(format!("{api}/transfer"))
        .bearer_auth(&lab_ops)
        .json(&serde_json::json!({ "devices": [lab.udid], "team": null }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Only an admin mints SCEP challenges (new identities).
    let r = http
        .post(format!("{api}/scep/challenges"))
        .bearer_auth(&lab_ops)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .post(format!("{api}/scep/challenges"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let listed = mdmctl(&s, None, &["token", "list"]).await;
    listed.success().stdout_has("observer").stdout_has("Lab");
    waker.abort();
    s.stop().await;
}
