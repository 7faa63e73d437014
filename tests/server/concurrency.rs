//! Devices at the same time, on both backends: a report sent twice at once is recorded once,
//! waves of devices (first contact after cutover, a command fanned out) get no server error,
//! and `serve` on PostgreSQL rides out terminated sessions and a database outage.

use std::sync::Arc;
use std::time::Duration;

use mdmctl::apple::command::named;
use mdmctl::sim::device::{IdentityMode, SimDevice};
use mdmctl::store::QueueStatus;

use crate::common::PgSchema;
use crate::harness::{Ca, Options, Server};

/// The store for a test that runs on both backends: SQLite, then PostgreSQL when
/// `MDMCTL_TEST_POSTGRES_URL` is set (said on stderr when it is not).
fn backends() -> Vec<Option<PgSchema>> {
    let mut all = vec![None];
    match PgSchema::create() {
        Some(s) => all.push(Some(s)),
        None => eprintln!("SKIP (PostgreSQL half): set MDMCTL_TEST_POSTGRES_URL"),
    }
    all
}

fn name(pg: &Option<PgSchema>) -> &'static str {
    if pg.is_some() { "postgres" } else { "sqlite" }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_report_sent_twice_at_once_is_recorded_once() {
    for pg in backends() {
        let backend = name(&pg);
        let s = Server::start(Options {
            postgres: pg,
            ..Default::default()
        })
        .await;
        let mac = s.enroll(1, IdentityMode::Signature).await;
        let cmd = named::security_info();
        mdmctl::mdm::queue(s.store.as_ref(), &cmd, std::slice::from_ref(&mac.udid), "t").unwrap();
        let (status, command) = mac.send(false, mac.idle_body()).await.unwrap();
        assert_eq!(status, 200, "{backend}");
        assert!(!command.is_empty(), "{backend}: the Idle gets the command");
        let report = mac.answer(&command).unwrap();

        // The device did not see our answer and sends its report again, while the first is
        // still being recorded (two connections at once).
        let (a, b) = tokio::join!(
            mac.send(false, report.clone()),
            mac.send(false, report.clone())
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!((a.0, b.0), (200, 200), "{backend}: both answered OK");
        assert!(
            a.1.is_empty() && b.1.is_empty(),
            "{backend}: neither is handed the answered command again"
        );
        // And a third time, later.
        assert_eq!(mac.send(false, report).await.unwrap(), (200, Vec::new()));

        let entries = mdmctl::mdm::status(s.store.as_ref(), &cmd.uuid).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].status, QueueStatus::Acknowledged, "{backend}");
        assert_eq!(
            s.activities("command.acknowledged").len(),
            1,
            "{backend}: what the result sets off runs once"
        );
        // The next Idle has nothing: the command is not offered again.
        assert_eq!(
            mac.send(false, mac.idle_body()).await.unwrap(),
            (200, Vec::new())
        );
        s.stop().await;
    }
}

/// Run `f` for every device, `width` at a time; the statuses of any request that was not
/// answered 200.
async fn wave<F, Fut>(devices: &[Arc<SimDevice>], width: usize, f: F) -> Vec<String>
where
    F: Fn(Arc<SimDevice>) -> Fut,
    Fut: std::future::Future<Output = Result<u16, mdmctl::sim::device::SimError>> + Send + 'static,
{
    let gate = Arc::new(tokio::sync::Semaphore::new(width));
    let mut tasks = Vec::new();
    for d in devices {
        let gate = gate.clone();
        let job = f(d.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = gate.acquire_owned().await.unwrap();
            job.await
        }));
    }
    let mut bad = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(200) => {}
            Ok(other) => bad.push(other.to_string()),
            Err(e) => bad.push(e.to_string()),
        }
    }
    bad
}

/// Waves as a fleet makes them after the DNS switch: every migrated Mac's first contact, then
/// a command to all of them answered at once, at 16 and 256 concurrent devices. No device may
/// see a server error: on PostgreSQL the check-in path runs at READ COMMITTED and conflicts are
/// absorbed by the store, never answered with a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waves_of_devices_get_no_server_error() {
    let n: usize = std::env::var("MDMCTL_TEST_WAVE_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    for pg in backends() {
        let backend = name(&pg);
        let s = Server::start(Options {
            postgres: pg,
            ..Default::default()
        })
        .await;
        let old = Ca::new("Old MDM CA");
        s.trust_old_ca(&old);
        let fleet = s.migrated_fleet(n, &old, IdentityMode::Signature);
        for width in [16, 256] {
            let t0 = std::time::Instant::now();
            // First contact (for the first width) or a plain Idle, everyone at once.
            let bad = wave(&fleet, width, |d| async move { d.session().await }).await;
            assert!(bad.is_empty(), "{backend}, {width} at once, Idle: {bad:?}");
            let cmd = named::device_information(named::DEFAULT_QUERIES);
            let ids: Vec<String> = fleet.iter().map(|d| d.udid.clone()).collect();
            mdmctl::mdm::queue(s.store.as_ref(), &cmd, &ids, "t").unwrap();
            let t1 = std::time::Instant::now();
            let bad = wave(&fleet, width, |d| async move { d.session().await }).await;
            assert!(
                bad.is_empty(),
                "{backend}, {width} at once, fan-out: {bad:?}"
            );
            eprintln!(
                "{backend}: {n} devices, {width} at once: Idle wave {:?}, fan-out {:?}",
                t1 - t0,
                t1.elapsed()
            );
            let entries = mdmctl::mdm::status(s.store.as_ref(), &cmd.uuid).unwrap();
            assert_eq!(entries.len(), n);
            assert!(
                entries
                    .iter()
                    .all(|e| e.status == QueueStatus::Acknowledged),
                "{backend}: every device answered once"
            );
        }
        assert_eq!(s.activities("device.migrated").len(), n, "{backend}");
        assert_eq!(
            s.activities("command.acknowledged").len(),
            2 * n,
            "{backend}: each answer recorded once"
        );
        s.stop().await;
    }
}

/// A TCP relay between `serve` and PostgreSQL that the test can cut: while cut, it closes every
/// connection it relays and refuses (closes at once) new ones, as a database restarting does.
struct Relay {
    port: u16,
    cut: Arc<std::sync::atomic::AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Relay {
    async fn start(upstream: String) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(generation);
        let (c, g) = (cut.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if c.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                let mut cut_signal = g.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_signal.changed() => {}
                    }
                });
            }
        });
        Self {
            port,
            cut,
            generation,
        }
    }

    /// Drop every relayed connection and refuse new ones.
    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `host:port` of a `postgres://user@host:port/db` URL, and the URL with another port.
fn via(url: &str, port: u16) -> (String, String) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap();
    let hostport = authority.rsplit('@').next().unwrap();
    let upstream = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:5432")
    };
    let host = upstream.rsplit_once(':').unwrap().0;
    (
        upstream.clone(),
        url.replacen(hostport, &format!("{host}:{port}"), 1),
    )
}

/// `serve` on PostgreSQL when its sessions are terminated (`pg_terminate_backend`, as an
/// operator or a failover does) and when the database is gone for a while: no panic, no hang,
/// a device is told to come back (503 with `Retry-After`) only while the database is really
/// unreachable, and everything works again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_rides_out_terminated_sessions_and_a_database_outage() {
    let Some(schema) = PgSchema::create() else {
        eprintln!("SKIP: set MDMCTL_TEST_POSTGRES_URL to run against PostgreSQL");
        return;
    };
    let (upstream, _) = via(&schema.base_url, 0);
    let relay = Relay::start(upstream).await;
    let app = format!("mdmctl_t_{}", &schema.schema[9..21]);
    let mut routed = PgSchema {
        base_url: via(&schema.base_url, relay.port).1,
        schema: schema.schema.clone(),
    };
    // Its sessions carry a name of their own, so the test terminates only them.
    routed.base_url = format!(
        "{}{}application_name={app}",
        routed.base_url,
        if routed.base_url.contains('?') {
            '&'
        } else {
            '?'
        }
    );
    let s = Server::start(Options {
        postgres: Some(routed),
        ..Default::default()
    })
    .await;
    let mac = s.enroll(1, IdentityMode::Signature).await;
    assert_eq!(mac.session().await.unwrap(), 200);

    // 1. Every session of this server terminated: the next request still succeeds, on a
    //    fresh connection, and so do the ones after it.
    let killed: i64 = crate::common::blocking(|| {
        let mut admin = postgres::Client::connect(&schema.base_url, postgres::NoTls).unwrap();
        admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .unwrap()
            .get(0)
    });
    assert!(killed >= 1, "serve's sessions are named {app}");
    for _ in 0..3 {
        assert_eq!(
            mac.session().await.unwrap(),
            200,
            "after pg_terminate_backend"
        );
    }

    // 2. The database is gone: 503 with Retry-After, quickly (no hang).
    relay.cut();
    let started = std::time::Instant::now();
    let body = mac.idle_body();
    let mut req = s.http().put(format!("{}/mdm", s.url)).body(body.clone());
    for (k, v) in mac.identity_headers(&body).unwrap() {
        req = req.header(k, v);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 503, "the database is unreachable");
    assert_eq!(
        r.headers().get("retry-after").map(|v| v.to_str().unwrap()),
        Some("30")
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "answered in {:?}",
        started.elapsed()
    );
    // The probes: alive, not ready (a load balancer stops sending devices here).
    let probe = |path: &str| s.http().get(format!("{}{path}", s.url)).send();
    assert_eq!(probe("/livez").await.unwrap().status(), 200);
    assert_eq!(probe("/readyz").await.unwrap().status(), 503);

    // 3. Back: the device's next session works, without restarting serve.
    relay.restore();
    assert_eq!(mac.session().await.unwrap(), 200, "after the outage");
    assert_eq!(probe("/readyz").await.unwrap().status(), 200);
    s.stop().await;
    drop(schema);
}
