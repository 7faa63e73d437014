//! Staged cutover (`serve --upstream`): devices outside the cutover set reach the old server
//! through mdmctl, byte for byte; those inside are answered by mdmctl; an impostor is refused
//! before anything is forwarded; a rollback keeps mdmctl's queued commands; SCEP goes to the
//! old server. The old server here records what it receives and answers 200, as NanoMDM does
//! to an Idle with nothing queued.

use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use mdmctl::apple::command::named;
use mdmctl::cutover::stage::{self, Change};
use mdmctl::sim::device::{IdentityMode, SimDevice};
use mdmctl::store::CutoverSet;

use crate::harness::{Ca, Options, Server};

#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: Option<String>,
    content_type: Option<String>,
    signature: Option<String>,
    body: Vec<u8>,
}

#[derive(Clone, Default)]
struct OldServer {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl OldServer {
    async fn start() -> (Self, String) {
        let me = Self::default();
        let rec = me.clone();
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: HeaderMap,
                  body: axum::body::Bytes| {
                let rec = rec.clone();
                async move {
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                    };
                    rec.seen.lock().unwrap().push(Seen {
                        method: method.to_string(),
                        path: uri.path().to_string(),
                        query: uri.query().map(str::to_string),
                        content_type: h("content-type"),
                        signature: h("mdm-signature"),
                        body: body.to_vec(),
                    });
                    if uri.path() == "/scep" {
                        (
                            [("content-type", "text/plain")],
                            "POSTPKIOperation\nSHA-256\nAES\n",
                        )
                    } else {
                        ([("content-type", "text/plain")], "")
                    }
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (me, url)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn migrated_at(s: &Server, udid: &str) -> bool {
    s.store
        .read(|tx| tx.device(udid))
        .unwrap()
        .unwrap()
        .migrated_at
        .is_some()
}

/// The server reads the cutover set again after at most this long.
async fn set_reread() {
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_outside_the_set_reach_the_old_server_unchanged_and_move_over_by_percent() {
    let (old_server, old_url) = OldServer::start().await;
    let s = Server::start(Options {
        upstream: Some(old_url),
        ..Default::default()
    })
    .await;
    let old = Ca::new("OLD MDM SCEP CA");
    s.trust_old_ca(&old);
    let macs: Vec<Arc<SimDevice>> = (0..20)
        .map(|i| s.migrated(i, &old, IdentityMode::Signature))
        .collect();

    // 0 %: every request goes to the old server as the Mac sent it.
    for m in &macs {
        let body = m.idle_body();
        let headers = m.identity_headers(&body).unwrap();
        let (code, answer) = m
            .send_with(false, body.clone(), headers.clone())
            .await
            .unwrap();
        assert_eq!((code, answer.len()), (200, 0));
        let last = old_server.seen().pop().expect("forwarded");
        assert_eq!(last.method, "PUT");
        assert_eq!(last.path, "/mdm");
        assert_eq!(last.body, body, "the body goes on unchanged");
        let sig = headers
            .iter()
            .find(|(k, _)| k == "Mdm-Signature")
            .map(|(_, v)| v.clone());
        assert_eq!(last.signature, sig, "Mdm-Signature goes on unchanged");
        assert_eq!(
            last.content_type.as_deref(),
            Some("application/x-apple-aspen-mdm")
        );
    }
    assert_eq!(old_server.seen().len(), 20);
    assert!(
        macs.iter().all(|m| !migrated_at(&s, &m.udid)),
        "mdmctl answered nobody"
    );

    // 50 %: the devices the hash puts in are answered by mdmctl (their first contact), the
    // others still by the old server.
    let o = stage::apply(s.store.as_ref(), &Change::Percent(50), "tester", false).unwrap();
    let half = CutoverSet {
        percent: 50,
        all: false,
    };
    let inside: Vec<&Arc<SimDevice>> = macs
        .iter()
        .filter(|m| half.contains(&m.udid, None))
        .collect();
    let outside: Vec<&Arc<SimDevice>> = macs
        .iter()
        .filter(|m| !half.contains(&m.udid, None))
        .collect();
    assert!(
        !inside.is_empty() && !outside.is_empty(),
        "20 random UDIDs fall on both sides"
    );
    assert_eq!(o.moved_in.len(), inside.len());
    assert_eq!(
        s.activities("cutover.set").len(),
        1,
        "the change is in the activity log"
    );
    set_reread().await;
    for m in &macs {
        assert_eq!(m.send(false, m.idle_body()).await.unwrap().0, 200);
    }
    assert_eq!(old_server.seen().len(), 20 + outside.len());
    for m in &inside {
        assert!(migrated_at(&s, &m.udid), "{} is answered by mdmctl", m.udid);
    }
    for m in &outside {
        assert!(
            !migrated_at(&s, &m.udid),
            "{} stays on the old server",
            m.udid
        );
    }
    // Where it stands, through the API as `cutover status --server` reads it.
    let token = crate::api::token(&s, "ops").await;
    let unauthorized = s
        .http()
        .get(format!("{}/api/v1/cutover", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    let st: mdmctl::cutover::status::Status = s
        .http()
        .get(format!("{}/api/v1/cutover", s.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st.set.percent, 50);
    assert_eq!(st.fleet.imported, 20);
    assert_eq!(st.fleet.in_set as usize, inside.len());
    assert_eq!(st.fleet.migrated as usize, inside.len());
    assert_eq!(st.fleet.waiting, 0);
    assert_eq!(
        st.routed_last_hour, 20,
        "every device went to the old server at least once"
    );

    // An impostor with another certificate from the old CA, claiming a device outside the
    // set: refused here, never forwarded.
    let victim = outside[0];
    let (cert, key) = old.issue("impostor", -1, 300);
    let impostor = SimDevice::with_key(
        99,
        "14.6",
        IdentityMode::Signature,
        s.http(),
        &s.tls_roots,
        key.clone(),
    )
    .unwrap()
    .with_ids(
        &victim.udid,
        &victim.serial,
        victim.token.clone(),
        &victim.push_magic,
    )
    .with_identity(cert, key, s.endpoint())
    .unwrap();
    let before = old_server.seen().len();
    assert_eq!(
        impostor.send(false, impostor.idle_body()).await.unwrap().0,
        403
    );
    assert_eq!(
        old_server.seen().len(),
        before,
        "nothing forwarded for the impostor"
    );
    eventually(15, "the refusal counts in the cutover's status", || {
        s.store
            .read(mdmctl::cutover::status::read)
            .unwrap()
            .refused
            .iter()
            .any(|r| r.reason == "identity_mismatch" && r.count >= 1)
    })
    .await;

    // A device inside with a command queued, taken back: the command is kept (and counted),
    // the old server answers it meanwhile, and it gets the command when it moves in again.
    let back = inside[0];
    mdmctl::mdm::send(
        &s.store,
        None,
        &named::device_information(&[]),
        std::slice::from_ref(&back.udid),
        "tester",
    )
    .await
    .unwrap();
    let o = stage::apply(
        s.store.as_ref(),
        &Change::Back(vec![back.serial.clone()]),
        "tester",
        false,
    )
    .unwrap();
    assert_eq!(o.moved_out.len(), 1);
    assert_eq!(
        o.moved_out[0].queued_commands, 1,
        "its queued command is kept and reported"
    );
    let before = old_server.seen().len();
    let (code, answer) = back.send(false, back.idle_body()).await.unwrap();
    assert_eq!((code, answer.len()), (200, 0), "the old server answered");
    assert_eq!(old_server.seen().len(), before + 1);
    stage::apply(
        s.store.as_ref(),
        &Change::Devices(vec![back.udid.clone()]),
        "tester",
        false,
    )
    .unwrap();
    let (code, answer) = back.send(false, back.idle_body()).await.unwrap();
    assert_eq!(code, 200);
    assert!(
        String::from_utf8_lossy(&answer).contains("DeviceInformation"),
        "moved in again, it gets the command mdmctl kept"
    );

    // A full rollback: everyone on the old server again.
    let o = stage::apply(s.store.as_ref(), &Change::AllBack, "tester", false).unwrap();
    assert_eq!(o.in_set, 0);
    set_reread().await;
    let before = old_server.seen().len();
    for m in &macs {
        assert_eq!(m.send(false, m.idle_body()).await.unwrap().0, 200);
    }
    assert_eq!(old_server.seen().len(), before + 20);
    assert_eq!(s.activities("cutover.rollback").len(), 2);

    // SCEP goes to the old server, query and answer included.
    let r = s
        .http()
        .get(format!("{}/scep?operation=GetCACaps", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "POSTPKIOperation\nSHA-256\nAES\n");
    let last = old_server.seen().pop().unwrap();
    assert_eq!(
        (last.path.as_str(), last.query.as_deref()),
        ("/scep", Some("operation=GetCACaps"))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_server_that_does_not_answer_gets_the_device_a_502_not_a_crash() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let s = Server::start(Options {
        upstream: Some(url),
        ..Default::default()
    })
    .await;
    let old = Ca::new("OLD MDM SCEP CA");
    s.trust_old_ca(&old);
    let mac = s.migrated(0, &old, IdentityMode::Signature);
    assert_eq!(mac.send(false, mac.idle_body()).await.unwrap().0, 502);
    // Devices in the set are still served.
    stage::apply(s.store.as_ref(), &Change::All, "tester", false).unwrap();
    set_reread().await;
    assert_eq!(mac.send(false, mac.idle_body()).await.unwrap().0, 200);
    assert!(migrated_at(&s, &mac.udid));
    s.stop().await;
}

/// A NanoMDM stand-in (its CA, API key `nano-api-key`) and `serve --upstream` in front of it,
/// mirroring check-ins back to its `/migration`.
async fn behind_nanomdm() -> (
    Ca,
    mdmctl::sim::nanomdm_server::NanoMdmStandIn,
    String,
    Server,
) {
    let old = Ca::new("OLD NANOMDM CA");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let old_url = format!("http://{}", listener.local_addr().unwrap());
    let nano = mdmctl::sim::nanomdm_server::NanoMdmStandIn::start(
        listener,
        old.cert.clone(),
        "nano-api-key",
    )
    .await;
    let s = Server::start(Options {
        upstream: Some(old_url.clone()),
        mirror: Some((format!("{old_url}/migration"), "nano-api-key".into())),
        ..Default::default()
    })
    .await;
    s.trust_old_ca(&old);
    (old, nano, old_url, s)
}

/// The same Mac (UDID, identity) after it rotated its push token to `token`.
fn with_new_token(s: &Server, m: &SimDevice, token: Vec<u8>) -> SimDevice {
    SimDevice::with_key(
        0,
        "14.6",
        IdentityMode::Signature,
        s.http(),
        &s.tls_roots,
        m.key().clone(),
    )
    .unwrap()
    .with_ids(&m.udid, &m.serial, token, &m.push_magic)
    .with_identity(m.identity().unwrap(), m.key().clone(), s.endpoint())
    .unwrap()
}

/// Wait for `cond`, up to `secs` seconds.
async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(std::time::Instant::now() < until, "timed out: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_update_on_a_moved_device_reaches_the_old_server_so_a_rollback_finds_it() {
    use mdmctl::sim::nanomdm_server::Door;
    let (old, nano, _, s) = behind_nanomdm().await;
    let mac = s.migrated(0, &old, IdentityMode::Signature);
    // What the old server had for it before the cutover.
    nano.preload_device(&mac);

    // Not moved: NanoMDM answers it, after verifying the forwarded Mdm-Signature itself.
    assert_eq!(mac.send(false, mac.idle_body()).await.unwrap().0, 200);
    assert_eq!(nano.enrollment(&mac.udid).unwrap().reports, ["Idle"]);

    // Moved; then the Mac rotates its push token, which only mdmctl sees. The old server's
    // first /migration fails: the check-in waits in the outbox and goes on the retry.
    stage::apply(
        s.store.as_ref(),
        &Change::Devices(vec![mac.udid.clone()]),
        "tester",
        false,
    )
    .unwrap();
    nano.fail_migrations(1);
    let new_token = vec![0x42; 32];
    let rotated = with_new_token(&s, &mac, new_token.clone());
    assert_eq!(rotated.token_update().await.unwrap(), 200);
    assert!(migrated_at(&s, &mac.udid), "answered by mdmctl");
    eventually(5, "the failed attempt is recorded", || {
        s.store.read(|tx| tx.mirror_backlog()).unwrap().failing == 1
    })
    .await;
    let backlog = s.store.read(|tx| tx.mirror_backlog()).unwrap();
    assert!(
        backlog.last_error.as_deref().unwrap_or("").contains("500"),
        "{backlog:?}"
    );
    eventually(
        20,
        "the TokenUpdate reaches the old server on the retry",
        || nano.enrollment(&mac.udid).and_then(|e| e.token) == Some(new_token.clone()),
    )
    .await;
    let e = nano.enrollment(&mac.udid).unwrap();
    assert_eq!(
        e.log.last().map(|(m, d)| (m.as_str(), *d)),
        Some(("TokenUpdate", Door::Migration))
    );
    assert_eq!(s.store.read(|tx| tx.mirror_backlog()).unwrap().waiting, 0);

    // Rolled back: the old server answers it again, with the token it now has.
    stage::apply(s.store.as_ref(), &Change::AllBack, "tester", false).unwrap();
    assert_eq!(
        rotated.send(false, rotated.idle_body()).await.unwrap().0,
        200
    );
    assert_eq!(
        nano.enrollment(&mac.udid).unwrap().reports,
        ["Idle", "Idle"]
    );
    s.stop().await;
}

/// The whole staged cutover against a NanoMDM stand-in with 200 Macs enrolled to it: the check
/// says go; 0 %: every Mac served by the old server through mdmctl; 10 %: exactly those Macs
/// answered by mdmctl; a TokenUpdate on one of them reaches the old server; a rollback finds
/// every Mac on the old server with its current token; then 100 %. Every command acknowledged
/// is recorded once, on the server that sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_cutover_of_200_macs_from_nanomdm_and_back_and_forth_loses_nothing() {
    use mdmctl::store::QueueStatus;
    let (old, nano, old_url, s) = behind_nanomdm().await;
    let macs = s.migrated_fleet(200, &old, IdentityMode::Signature);
    for m in &macs {
        nano.preload_device(m);
    }

    // 1. Go / no-go, with this serve's configuration and the APNs stand-in.
    let apns_ca = s.apns.server_ca().to_owned();
    let report = tokio::task::spawn_blocking({
        let store = s.store.clone();
        let (url, old_url, apns) = (s.url.clone(), old_url.clone(), s.apns.base_url());
        move || {
            mdmctl::cutover::check::run(
                store.as_ref(),
                &mdmctl::cutover::Options {
                    url: Some(url),
                    mdm_paths: Vec::new(),
                    tls_chain: None,
                    fetch_tls: false,
                    profile: None,
                    upstream: Some(old_url.clone()),
                    mirror_url: Some(format!("{old_url}/migration")),
                    apns_url: apns,
                    apns_ca: Some(apns_ca),
                    allow_retro_association: false,
                    renew_before_days: 0,
                    expiry_days: 30,
                    stale_days: 30,
                    resolver: None,
                    offline: false,
                    timeout: std::time::Duration::from_secs(3),
                },
            )
            .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(report.go, "{report:#?}");
    let status = |name: &str| {
        report
            .checks
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.status)
            .unwrap()
    };
    use mdmctl::cutover::Status as Verdict;
    for name in [
        "push.certificate",
        "identity.recorded",
        "upstream.reachable",
        "apns.reachable",
        "rollback.losses",
    ] {
        assert_eq!(status(name), Verdict::Pass, "{name}: {report:#?}");
    }

    // 2. 0 %: NanoMDM answers everyone, and what it queued reaches its Macs.
    let plist = named::device_information(&[]).plist;
    for m in &macs {
        nano.enqueue(&m.udid, plist.clone());
    }
    for m in &macs {
        assert_eq!(m.session().await.unwrap(), 200);
    }
    for m in &macs {
        let e = nano.enrollment(&m.udid).unwrap();
        assert_eq!(e.reports, ["Idle", "Acknowledged"], "{}", m.udid);
        assert!(!migrated_at(&s, &m.udid));
    }

    // 3. 10 %: exactly the Macs the hash picks are answered by mdmctl, and get its command.
    stage::apply(s.store.as_ref(), &Change::Percent(10), "tester", false).unwrap();
    set_reread().await;
    let ten = CutoverSet {
        percent: 10,
        all: false,
    };
    let moved: Vec<_> = macs
        .iter()
        .filter(|m| ten.contains(&m.udid, None))
        .collect();
    assert!(
        (5..=40).contains(&moved.len()),
        "about 20 of 200: {}",
        moved.len()
    );
    let targets: Vec<String> = moved.iter().map(|m| m.udid.clone()).collect();
    let cmd = named::device_information(&[]);
    mdmctl::mdm::send(&s.store, None, &cmd, &targets, "tester")
        .await
        .unwrap();
    for m in &macs {
        assert_eq!(m.session().await.unwrap(), 200);
    }
    for m in &macs {
        let inside = ten.contains(&m.udid, None);
        assert_eq!(migrated_at(&s, &m.udid), inside, "{}", m.udid);
        let reports = nano.enrollment(&m.udid).unwrap().reports.len();
        assert_eq!(
            reports,
            if inside { 2 } else { 3 },
            "{}: the old server saw only its own",
            m.udid
        );
    }
    let entries = s.store.read(|tx| tx.command_entries(&cmd.uuid)).unwrap();
    assert_eq!(entries.len(), moved.len());
    assert!(
        entries
            .iter()
            .all(|e| e.status == QueueStatus::Acknowledged),
        "recorded by mdmctl, once each"
    );

    // 4. A moved Mac rotates its push token: the old server gets it (mirrored back).
    let rotated = with_new_token(&s, moved[0], vec![0x77; 32]);
    assert_eq!(rotated.token_update().await.unwrap(), 200);
    eventually(15, "the rotated token reaches the old server", || {
        nano.enrollment(&rotated.udid).and_then(|e| e.token) == Some(vec![0x77; 32])
    })
    .await;

    // 5. Rollback: the old server answers every Mac again, with their current tokens.
    stage::apply(s.store.as_ref(), &Change::AllBack, "tester", false).unwrap();
    set_reread().await;
    for m in &macs {
        assert_eq!(m.send(false, m.idle_body()).await.unwrap().0, 200);
    }
    for m in &macs {
        let e = nano.enrollment(&m.udid).unwrap();
        assert!(e.enabled);
        let current = if m.udid == rotated.udid {
            vec![0x77; 32]
        } else {
            m.token.clone()
        };
        assert_eq!(
            e.token.as_ref(),
            Some(&current),
            "{}: the old server can push it",
            m.udid
        );
        assert_eq!(e.reports.last().map(String::as_str), Some("Idle"));
    }

    // 6. 100 %: mdmctl answers everyone; the old server hears nothing more from the Macs.
    stage::apply(s.store.as_ref(), &Change::All, "tester", false).unwrap();
    set_reread().await;
    let before: usize = macs
        .iter()
        .map(|m| nano.enrollment(&m.udid).unwrap().reports.len())
        .sum();
    for m in &macs {
        assert_eq!(m.session().await.unwrap(), 200);
        assert!(migrated_at(&s, &m.udid));
    }
    let after: usize = macs
        .iter()
        .map(|m| nano.enrollment(&m.udid).unwrap().reports.len())
        .sum();
    assert_eq!(before, after);
    assert_eq!(s.store.read(|tx| tx.mirror_backlog()).unwrap().waiting, 0);
    s.stop().await;
}

/// During a staged cutover identities are not renewed: a certificate from mdmctl's CA would
/// not be accepted by the old server after a rollback. The job says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_wait_while_the_old_server_may_take_devices_back() {
    let s = Server::start(Options {
        upstream: Some("http://127.0.0.1:9".into()),
        renew: Some(crate::harness::Renew::OldProfile("com.example.old".into())),
        ..Default::default()
    })
    .await;
    let old = Ca::new("OLD MDM SCEP CA");
    s.trust_old_ca(&old);
    let mac = s.migrated_expiring(0, &old, IdentityMode::Signature, 10);
    stage::apply(s.store.as_ref(), &Change::All, "tester", false).unwrap();
    set_reread().await;
    assert_eq!(mac.send(false, mac.idle_body()).await.unwrap().0, 200);
    eventually(10, "the renewals job has run", || {
        s.store
            .read(|tx| mdmctl::mdm::instances(tx))
            .unwrap()
            .jobs
            .iter()
            .any(|j| {
                j.name == "renewals"
                    && j.last_run
                        .as_ref()
                        .is_some_and(|r| r.summary.contains("postponed during the staged cutover"))
            })
    })
    .await;
    assert!(
        s.store.read(|tx| tx.renewal(&mac.udid)).unwrap().is_none(),
        "no renewal started"
    );
    s.stop().await;
}

/// `cutover set` / `rollback` through the API: a maintainer's dry run changes nothing, an
/// observer may not, an unknown device changes nothing, and a change is recorded as its caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cutover_set_changes_through_the_api_for_maintainers_only() {
    let s = Server::start(Options::default()).await;
    let old = Ca::new("OLD MDM SCEP CA");
    s.trust_old_ca(&old);
    let macs: Vec<_> = (0..3)
        .map(|i| s.migrated(i, &old, IdentityMode::Signature))
        .collect();
    let maintainer = crate::api::token_as(&s, "wave-runner", "maintainer", None).await;
    let observer = crate::api::token_as(&s, "watcher", "observer", None).await;
    let post = |token: &str, body: serde_json::Value| {
        s.http()
            .post(format!("{}/api/v1/cutover", s.url))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let r = post(
        &maintainer,
        serde_json::json!({ "change": "all", "dry_run": true }),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let o: serde_json::Value = r.json().await.unwrap();
    assert_eq!(o["moved_in"].as_array().unwrap().len(), 3);
    assert_eq!(o["dry_run"], true);
    let in_set = || {
        s.store
            .read(mdmctl::cutover::status::read)
            .unwrap()
            .fleet
            .in_set
    };
    assert_eq!(in_set(), 0, "a dry run changes nothing");

    // Garbage and a nesting bomb: refused, nothing changed.
    for body in ["{not json".to_string(), "[".repeat(100_000)] {
        let r = s
            .http()
            .post(format!("{}/api/v1/cutover", s.url))
            .bearer_auth(&maintainer)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    assert_eq!(in_set(), 0);

    let r = post(&observer, serde_json::json!({ "change": "all" }))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = post(
        &maintainer,
        serde_json::json!({ "change": { "devices": [macs[0].udid, "NOPE"] } }),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("NOPE"));
    assert_eq!(in_set(), 0, "nothing changed");

    let r = post(
        &maintainer,
        serde_json::json!({ "change": { "percent": 100 } }),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(in_set(), 3);
    let changes = s.activities("cutover.set");
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].actor, "api:wave-runner");
    s.stop().await;
}
