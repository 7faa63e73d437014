//! Three `mdmctl serve` processes on one PostgreSQL store, simulated Macs spread over them by
//! a round-robin balancer (as a load balancer in front of several instances does): every
//! background job runs on one instance, so each Mac is renewed once, reconciled once and
//! pushed once per queued command; killing the instance that runs the reconciler hands the
//! job to another within one lease period, and nothing is done twice or lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mdmctl::pki;
use mdmctl::sim::apns::{ApnsStandIn, PushCertOptions, StandInConfig, TestPushCa};
use mdmctl::sim::device::{Endpoint, IdentityMode, SimDevice, http_client};
use mdmctl::store::{self, AssetKind, AssetState, Location, NewAsset, NewKey, RenewalState, Store};
use zeroize::Zeroizing;

use crate::binary::Serve;
use crate::common::{PASSPHRASE, PgSchema, TestContext};
use crate::harness::{Ca, old_enrollment_profile};
use crate::reconcile::{apply, global, wait_for};

const MACS: usize = 24;
const LEASE_SECONDS: u64 = 3;
const OLD_PROFILE: &str = "com.oldmdm.enrollment";

/// A TCP balancer: each new connection goes to the next live backend, in turn.
struct Balancer {
    port: u16,
    backends: Arc<Mutex<Vec<u16>>>,
}

impl Balancer {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let backends: Arc<Mutex<Vec<u16>>> = Arc::default();
        let b = backends.clone();
        tokio::spawn(async move {
            let mut turn = 0usize;
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let ports = b.lock().unwrap().clone();
                turn += 1;
                let first = turn;
                tokio::spawn(async move {
                    // The next backend that accepts (a dead one is skipped, as a health-checking
                    // balancer does).
                    for i in 0..ports.len() {
                        let port = ports[(first + i) % ports.len()];
                        if let Ok(mut out) =
                            tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                        {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                            return;
                        }
                    }
                });
            }
        });
        Self { port, backends }
    }
}

/// What the test reads from the shared store.
fn open(url: &str) -> Arc<dyn Store> {
    store::open(
        &Location::parse(url),
        Box::new(mdmctl::secrets::FixedPassphrase(Zeroizing::new(
            PASSPHRASE.into(),
        ))),
    )
    .expect("open the shared store")
}

/// A Mac's session, tried again when the connection broke (an instance was killed under it).
async fn session(mac: &SimDevice) -> u16 {
    let mut last = String::new();
    for _ in 0..5 {
        match mac.session().await {
            Ok(200) => return 200,
            Ok(s) => last = format!("status {s}"),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{}: session failed: {last}", mac.udid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_run_each_job_once_and_hand_it_over_when_one_dies() {
    let Some(schema) = PgSchema::create() else {
        eprintln!("SKIP: set MDMCTL_TEST_POSTGRES_URL to run several instances on PostgreSQL");
        return;
    };
    let db = schema.url();
    let t = TestContext::new();
    let balancer = Balancer::start().await;
    let url = format!("http://127.0.0.1:{}", balancer.port);

    // The store, as `init`, `generate`/`set mdm-apple` and an import leave it.
    let (store, _) = store::create(
        &Location::parse(&db),
        NewKey::Passphrase(Zeroizing::new(PASSPHRASE.into())),
    )
    .unwrap();
    let ca = Ca::new("mdmctl SCEP CA");
    let push_ca = TestPushCa::generate().unwrap();
    let minted = push_ca
        .issue_push_certificate(&PushCertOptions::default())
        .unwrap();
    let topic = minted.topic.clone();
    let old = Ca::new("Old MDM CA");
    store
        .write(|tx| -> Result<(), mdmctl::assets::AssetError> {
            crate::harness::set_assets(tx, &ca, &minted)?;
            let mut a = NewAsset::new(AssetKind::ScepCa, AssetState::Trusted, "imported:test");
            a.cert_pem = Some(pki::cert_pem(&old.cert).unwrap());
            a.sha256 = Some(pki::fingerprint_sha256(&old.cert).unwrap());
            tx.insert_asset(&a)?;
            Ok(())
        })
        .unwrap();
    let key = pki::generate_rsa(2048).unwrap();
    let http = http_client(&[]).unwrap();
    let endpoint = Endpoint {
        server_url: format!("{url}/mdm"),
        check_in_url: format!("{url}/mdm"),
        topic: topic.clone(),
    };
    let macs: Vec<Arc<SimDevice>> = (0..MACS)
        .map(|i| {
            // Old-CA identities expiring in 10 days: every Mac is due for renewal.
            let cert = old.issue_for(&key, &format!("old device {i}"), -300, 10);
            let mac = SimDevice::with_key(
                i,
                "14.6",
                IdentityMode::Signature,
                http.clone(),
                &[],
                key.clone(),
            )
            .unwrap()
            .with_identity(cert, key.clone(), endpoint.clone())
            .unwrap();
            mac.set_enrollment_profile(OLD_PROFILE);
            store
                .write(|tx| crate::harness::record_imported(tx, &mac, &topic))
                .unwrap();
            Arc::new(mac)
        })
        .collect();
    let by_token: HashMap<String, Arc<SimDevice>> =
        macs.iter().map(|m| (m.token_hex(), m.clone())).collect();
    let anchor = Ca::new("Old MDM TLS root").cert;
    let old_profile = t.write(
        "old.mobileconfig",
        old_enrollment_profile(OLD_PROFILE, &url, &topic, &anchor),
    );

    // APNs, and the Macs waking on every push (through the balancer: any instance answers).
    let apns = ApnsStandIn::start(push_ca.certificate().clone(), StandInConfig::default())
        .await
        .unwrap();
    let apns_ca = t.write("apns-ca.pem", apns.server_ca_pem().unwrap());
    let mut pushes = apns.subscribe();
    let waker = tokio::spawn(async move {
        while let Ok(token) = pushes.recv().await {
            if let Some(mac) = by_token.get(&token).cloned() {
                tokio::spawn(async move {
                    session(&mac).await;
                });
            }
        }
    });

    let lease = LEASE_SECONDS.to_string();
    let apns_url = apns.base_url();
    let start = || {
        Serve::spawn(
            &t,
            &[
                "--url",
                &url,
                "--listen",
                "127.0.0.1:0",
                "--lease-seconds",
                &lease,
                "--renew-before-days",
                "30",
                "--migration-enrollment-profile",
                old_profile.to_str().unwrap(),
            ],
            &[
                ("MDMCTL_DB", &db),
                ("MDMCTL_APNS_URL", &apns_url),
                ("MDMCTL_APNS_CA_FILE", apns_ca.to_str().unwrap()),
                ("MDMCTL_LOG", "mdmctl=debug"),
            ],
        )
    };
    let mut servers: Vec<Option<Serve>> = (0..3).map(|_| Some(start())).collect();
    *balancer.backends.lock().unwrap() =
        servers.iter().map(|s| s.as_ref().unwrap().port()).collect();
    let view = || store.read(|tx| mdmctl::mdm::instances(tx)).unwrap();
    wait_for(10, "three instances, every job held", || {
        let v = view();
        v.servers.iter().filter(|s| s.alive).count() == 3
            && v.jobs.len() == mdmctl::server::jobs::Job::ALL.len()
            && v.jobs.iter().all(|j| j.holder.is_some())
    })
    .await;

    // 1. The cutover: every Mac's first contact, spread over the three instances. The
    //    renewals job (one instance) renews each Mac once, through whichever instance the
    //    balancer picks for its SCEP request and restarted check-in.
    for mac in &macs {
        assert_eq!(session(mac).await, 200);
    }
    let shared = open(&db);
    wait_for(60, "every Mac renewed", || {
        macs.iter().all(|m| {
            shared
                .read(|tx| tx.renewal(&m.udid))
                .unwrap()
                .is_some_and(|r| r.status == RenewalState::Renewed)
        })
    })
    .await;
    quiet(&apns).await;
    for mac in &macs {
        assert_eq!(
            mac.enrollment_updates().len(),
            1,
            "{}: renewed exactly once",
            mac.udid
        );
    }
    let renewals_sent = shared
        .read(|tx| {
            tx.activities(&mdmctl::store::ActivityQuery {
                kind: Some("identity.renewal_sent".into()),
                ..Default::default()
            })
        })
        .unwrap();
    assert_eq!(renewals_sent.len(), MACS, "one renewal per Mac");

    // 2. A profile for everyone: the reconciler (one instance) queues it once per Mac and
    //    pushes each Mac once.
    apns.clear_records();
    apply(
        shared.as_ref(),
        &t.path("repo1"),
        &global(&["com.example.one"]),
        &["com.example.one"],
    );
    wait_for(30, "every Mac has the first profile", || {
        macs.iter().all(|m| {
            m.profiles()
                .iter()
                .any(|p| p.identifier == "com.example.one")
        })
    })
    .await;
    quiet(&apns).await;
    for mac in &macs {
        assert_eq!(
            apns.pushes_for(&mac.token_hex()).len(),
            1,
            "{}: one push for one queued profile",
            mac.udid
        );
        let installs = mac
            .handled()
            .iter()
            .filter(|h| h.request_type == "InstallProfile")
            .count();
        assert_eq!(
            installs, 2,
            "{}: the renewal, then the profile, once each",
            mac.udid
        );
    }

    // 3. The instance running the reconciler dies (SIGKILL right after the apply marked every
    //    Mac: before its pass, or during it, or between its commit and its pushes): another takes the job over within one lease period; every Mac
    //    gets the second profile, pushed once, installed once.
    apns.clear_records();
    let v = view();
    let leader_id = v
        .jobs
        .iter()
        .find(|j| j.name == "reconcile")
        .and_then(|j| j.holder.clone())
        .unwrap();
    let leader_pid = v
        .servers
        .iter()
        .find(|s| s.instance.id == leader_id)
        .unwrap()
        .instance
        .pid;
    let idx = servers
        .iter()
        .position(|s| s.as_ref().is_some_and(|s| i64::from(s.pid()) == leader_pid))
        .unwrap();
    apply(
        shared.as_ref(),
        &t.path("repo2"),
        &global(&["com.example.one", "com.example.two"]),
        &["com.example.one", "com.example.two"],
    );
    let killed_at = Instant::now();
    let (_, killed_log) = servers[idx].take().unwrap().kill();
    let took_over = loop {
        let holder = view()
            .jobs
            .iter()
            .find(|j| j.name == "reconcile")
            .and_then(|j| j.holder.clone());
        if holder.is_some_and(|h| h != leader_id) {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(30),
            "nobody took the reconciler over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("reconcile job taken over {took_over:?} after the kill (lease {LEASE_SECONDS} s)");
    let taker_pid = {
        let v = view();
        let id = v
            .jobs
            .iter()
            .find(|j| j.name == "reconcile")
            .and_then(|j| j.holder.clone());
        v.servers
            .iter()
            .find(|s| Some(&s.instance.id) == id.as_ref())
            .unwrap()
            .instance
            .pid
    };
    assert!(
        took_over <= Duration::from_secs(LEASE_SECONDS) + Duration::from_millis(1500),
        "taken over after {took_over:?}; lease {LEASE_SECONDS} s"
    );
    wait_for(30, "every Mac has the second profile", || {
        macs.iter().all(|m| {
            m.profiles()
                .iter()
                .any(|p| p.identifier == "com.example.two")
        })
    })
    .await;
    quiet(&apns).await;
    for mac in &macs {
        let installs = mac
            .handled()
            .iter()
            .filter(|h| h.request_type == "InstallProfile")
            .count();
        assert_eq!(
            installs, 3,
            "{}: the second profile installed once",
            mac.udid
        );
        assert_eq!(
            apns.pushes_for(&mac.token_hex()).len(),
            1,
            "{}: pushed once for the second profile, by one instance or the other",
            mac.udid
        );
    }
    assert!(!killed_log.contains("panicked"), "{killed_log}");

    // 4. Commands whose queuer died between its commit and its pushes (queued here without a
    //    push): the `push` job, on one instance, pushes each Mac once after the grace period.
    apns.clear_records();
    let info = mdmctl::apple::command::named::device_information(&[]);
    let udids: Vec<String> = macs.iter().map(|m| m.udid.clone()).collect();
    mdmctl::mdm::queue(shared.as_ref(), &info, &udids, "test").unwrap();
    wait_for(40, "every Mac answered the unpushed command", || {
        macs.iter().all(|m| {
            m.handled()
                .iter()
                .any(|h| h.request_type == "DeviceInformation")
        })
    })
    .await;
    quiet(&apns).await;
    for mac in &macs {
        assert_eq!(
            apns.pushes_for(&mac.token_hex()).len(),
            1,
            "{}: the push left behind is sent once",
            mac.udid
        );
    }

    // `mdmctl get servers`: the two live instances, the jobs split between them, last runs.
    let out = t
        .run_with(&["get", "servers"], |c| {
            c.env("MDMCTL_DB", &db);
        })
        .success()
        .stdout
        .clone();
    assert!(
        out.contains("reconcile") && out.contains("renewals"),
        "{out}"
    );
    let json = t
        .run_with(&["--format", "json", "get", "servers"], |c| {
            c.env("MDMCTL_DB", &db);
        })
        .success()
        .json();
    let up = json["servers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["alive"] == true)
        .count();
    assert_eq!(up, 2, "{json}");
    assert!(
        json["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["last_run"]["finished_at"].is_string()),
        "every job has run: {json}"
    );

    waker.abort();
    // The reconciler ran on its lease holders only: the killed leader and the instance that took
    // over, never on the third.
    let ran = |log: &str| {
        log.lines()
            .any(|l| l.contains("background job ran") && l.contains(r#""job":"reconcile""#))
    };
    assert!(
        ran(&killed_log),
        "the leader ran the reconciler: {}",
        killed_log
            .lines()
            .filter(|l| l.contains("job"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    for s in servers.into_iter().flatten() {
        let pid = i64::from(s.pid());
        let (code, log) = s.term();
        assert_eq!(code, 0, "{log}");
        assert_eq!(
            ran(&log),
            pid == taker_pid,
            "only the instance that took over ran the reconciler (pid {pid}, taker {taker_pid})"
        );
    }
    // Stopped cleanly: their leases are released and they left the list; the killed one is
    // listed until housekeeping forgets it.
    assert!(shared.read(|tx| tx.leases()).unwrap().is_empty());
    let left = shared.read(|tx| tx.servers()).unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].id, leader_id);
    drop(shared);
    drop(store);
    drop(schema);
}

/// Wait until the stand-in has had no push for two seconds (every Mac's session is over).
async fn quiet(apns: &ApnsStandIn) {
    let mut count = apns.push_count();
    let mut since = Instant::now();
    let until = Instant::now() + Duration::from_secs(30);
    while since.elapsed() < Duration::from_secs(2) {
        assert!(Instant::now() < until, "pushes never settle");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = apns.push_count();
        if now != count {
            count = now;
            since = Instant::now();
        }
    }
}
