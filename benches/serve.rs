//! `serve` under load: the real `mdmctl serve` binary in its own process (its CPU time and peak
//! RSS read from /proc), simulated Macs and the APNs stand-in in this one.
//!
//! - a device's first contact after the cutover (1,000 migrated devices, 16 at a time), and
//!   Idle check-ins per second and p50/p99 latency at 16 and 256 concurrent devices, each
//!   request carrying an RSA-2048 `Mdm-Signature` (verified by the server every time), and the
//!   server's CPU time per check-in (and, on PostgreSQL, the database backends' CPU time). Two
//!   client styles: `keep-alive` (connections reused, each device's Idle signed once) and
//!   `independent` (as real Macs and other simulators send: a new TCP connection per request
//!   and a fresh `Mdm-Signature`, CMS with the certificate, on every request);
//! - a command sent to 1,000 and 10,000 devices: from the API call until every device has
//!   acknowledged it (push through the stand-in, each device's Idle, command, acknowledgement);
//! - the server's peak RSS, with 100,000 enrolled devices in the store.
//!
//! `cargo bench --bench serve` (PostgreSQL too when `MDMCTL_TEST_POSTGRES_URL` is set);
//! `MDMCTL_BENCH_DEVICES` changes the 100,000, `MDMCTL_BENCH_BACKEND=sqlite|postgres` runs
//! one backend, `MDMCTL_BENCH_ONLY=idle|fanout` one part (`idle`: first contact and Idle). A simulated device's
//! failed session is logged on stderr. Results: docs/benchmarks.md.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mdmctl::apple::command::named;
use mdmctl::assets::apns::{SetMdmApple, set_mdm_apple, set_scep_ca};
use mdmctl::pki::{self, CaSpec};
use mdmctl::sim::apns::{ApnsStandIn, PushCertOptions, StandInConfig, TestPushCa};
use mdmctl::sim::device::{Endpoint, Fleet, IdentityMode, SimDevice, http_client};
use mdmctl::store::{self, DeviceRecord, EnrollmentRecord, Location, NewKey, QueueStatus, Store};
use mdmctl::timestamp::Timestamp;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use zeroize::Zeroizing;

const PASSPHRASE: &str = "benchmark passphrase";
const HEADER: &str = "X-Client-Cert";

fn main() {
    let devices: usize = std::env::var("MDMCTL_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    // A simulated device whose session failed says so (it is not retried).
    tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_writer(std::io::stderr)
        .init();
    let backend = std::env::var("MDMCTL_BENCH_BACKEND").unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "machine: {} CPUs; server and load generator share them",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    if backend.is_empty() || backend == "sqlite" {
        rt.block_on(run(
            "sqlite",
            Location::Sqlite(dir.path().join("bench.db")),
            devices,
            None,
        ));
    }
    if let Ok(base) = std::env::var("MDMCTL_TEST_POSTGRES_URL")
        && (backend.is_empty() || backend == "postgres")
    {
        let schema = format!("mdmctl_bench_{}", std::process::id());
        let mut admin = postgres::Client::connect(&base, postgres::NoTls).expect("connect");
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .expect("schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        rt.block_on(run(
            "postgres",
            Location::parse(&url),
            devices,
            Some(url.clone()),
        ));
        admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .expect("drop");
    }
}

struct Ca {
    cert: X509,
    key: PKey<Private>,
}

fn issue(ca: &Ca, key: &PKey<Private>, cn: &str) -> X509 {
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::x509::extension::ExtendedKeyUsage;
    let mut n = openssl::x509::X509NameBuilder::new().unwrap();
    n.append_entry_by_text("CN", cn).unwrap();
    let n = n.build();
    let mut b = openssl::x509::X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(pki::random_serial().unwrap().as_ref())
        .unwrap();
    b.set_subject_name(&n).unwrap();
    b.set_issuer_name(ca.cert.subject_name()).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(Asn1Time::days_from_now(0).unwrap().as_ref())
        .unwrap();
    b.set_not_after(Asn1Time::days_from_now(365).unwrap().as_ref())
        .unwrap();
    b.append_extension(ExtendedKeyUsage::new().client_auth().build().unwrap())
        .unwrap();
    b.sign(&ca.key, MessageDigest::sha256()).unwrap();
    b.build()
}

/// The simulated devices and their store rows. The first `signed` get their own RSA-2048 key
/// (they sign every Idle); the rest share one key (header mode, for the fan-out).
fn make_devices(
    store: &Arc<dyn Store>,
    ca: &Ca,
    topic: &str,
    total: usize,
    signed: usize,
    fanout: usize,
    http: &reqwest::Client,
) -> (Vec<Arc<SimDevice>>, Vec<Arc<SimDevice>>) {
    let endpoint = |url: &str| Endpoint {
        server_url: url.to_string(),
        check_in_url: url.to_string(),
        topic: topic.to_string(),
    };
    let shared = pki::generate_rsa(2048).unwrap();
    let placeholder = "http://127.0.0.1:1/mdm";
    let mut sig = Vec::new();
    // One key for all (the server's work per request is the same: each certificate differs).
    let key = pki::generate_rsa(2048).unwrap();
    for i in 0..signed {
        let cert = issue(ca, &key, &format!("signed-{i}"));
        sig.push(Arc::new(
            SimDevice::with_key(
                i,
                "15.1",
                IdentityMode::Signature,
                http.clone(),
                &[],
                key.clone(),
            )
            .unwrap()
            .with_identity(cert, key.clone(), endpoint(placeholder))
            .unwrap(),
        ));
    }
    let mut fan = Vec::new();
    for i in 0..fanout {
        let cert = issue(ca, &shared, &format!("fanout-{i}"));
        fan.push(Arc::new(
            SimDevice::with_key(
                signed + i,
                "15.1",
                IdentityMode::Header(HEADER.into()),
                http.clone(),
                &[],
                shared.clone(),
            )
            .unwrap()
            .with_identity(cert, shared.clone(), endpoint(placeholder))
            .unwrap(),
        ));
    }
    let started = Instant::now();
    let simulated: Vec<&Arc<SimDevice>> = sig.iter().chain(&fan).collect();
    store
        .write(|tx| {
            for i in 0..total {
                let (id, serial, hash, token, magic) = match simulated.get(i) {
                    Some(d) => (
                        d.udid.clone(),
                        d.serial.clone(),
                        d.identity_sha256().unwrap(),
                        d.token.clone(),
                        d.push_magic.clone(),
                    ),
                    None => (
                        format!("{i:08X}-BENCH-4000-8000-{i:012X}"),
                        format!("C02B{i:08}"),
                        format!("{i:064x}"),
                        vec![(i % 251) as u8; 32],
                        format!("MAGIC-{i}"),
                    ),
                };
                tx.put_device(&DeviceRecord {
                    id: id.clone(),
                    serial: Some(serial),
                    source: "imported:bench".into(),
                    imported_at: Some(Timestamp::now()),
                    authenticate_raw: Some(vec![b'a'; 800]),
                    identity_sha256: Some(hash),
                    identity_not_after: Some(Timestamp::now().plus_days(365)),
                    ..Default::default()
                })?;
                tx.put_enrollment(&EnrollmentRecord {
                    id: id.clone(),
                    device_id: id,
                    kind: "Device".into(),
                    topic: topic.to_string(),
                    push_magic: Some(Zeroizing::new(magic)),
                    token: Some(Zeroizing::new(token)),
                    enabled: true,
                    ..Default::default()
                })?;
            }
            Ok::<_, store::StoreError>(())
        })
        .unwrap();
    println!(
        "  stored {total} enrolled devices in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    (sig, fan)
}

struct Server {
    child: Child,
    pid: u32,
    url: String,
}

impl Server {
    fn start(db: &str, apns_url: &str, apns_ca: &std::path::Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mdmctl"))
            .env("MDMCTL_PASSPHRASE", PASSPHRASE)
            .env("MDMCTL_LOG", "warn")
            .args([
                "--db",
                db,
                "serve",
                "--url",
                "http://127.0.0.1",
                "--listen",
                "127.0.0.1:0",
                "--client-cert-header",
                HEADER,
                "--apns-url",
                apns_url,
            ])
            .arg("--apns-ca-file")
            .arg(apns_ca)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start mdmctl serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .expect(&line)
            .to_string();
        let pid = child.id();
        Server { child, pid, url }
    }

    /// utime + stime of the server process, in seconds.
    fn cpu(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
        ticks / 100.0
    }

    fn peak_rss_mb(&self) -> f64 {
        self.status_mb("VmHWM")
    }

    fn rss_mb(&self) -> f64 {
        self.status_mb("VmRSS")
    }

    fn status_mb(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        kb / 1024.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let _ = self.child.wait();
    }
}

async fn run(name: &str, location: Location, total: usize, pg_url: Option<String>) {
    // The store client is blocking (PostgreSQL's runs its own runtime): set-up runs off the
    // async workers.
    tokio::task::block_in_place(|| setup_and_run(name, location, total, pg_url))
}

fn setup_and_run(name: &str, location: Location, total: usize, pg_url: Option<String>) {
    println!("== {name}");
    let only = std::env::var("MDMCTL_BENCH_ONLY").unwrap_or_default();
    let (store, _) = store::create(
        &location,
        NewKey::Passphrase(Zeroizing::new(PASSPHRASE.into())),
    )
    .unwrap();
    let (ca_cert, ca_key) = pki::new_ca(&CaSpec {
        common_name: "Bench CA".into(),
        organization: "Bench".into(),
        country: "US".into(),
        key_bits: 2048,
        years: 2,
    })
    .unwrap();
    let ca = Ca {
        cert: ca_cert,
        key: ca_key,
    };
    let push_ca = TestPushCa::generate().unwrap();
    let minted = push_ca
        .issue_push_certificate(&PushCertOptions::default())
        .unwrap();
    let token = format!("mdmctl_{}", hex::encode([7u8; 32]));
    store
        .write(|tx| -> Result<(), mdmctl::assets::AssetError> {
            set_scep_ca(
                tx,
                &ca.cert,
                &ca.key,
                "generated",
                "bench",
                Timestamp::now(),
            )?;
            set_mdm_apple(
                tx,
                &SetMdmApple {
                    apns_cert: Some(minted.certificate.clone()),
                    apns_key: Some(minted.private_key.clone()),
                    scep: None,
                    force: false,
                    actor: "bench".into(),
                },
            )?;
            tx.create_api_token(
                "bench",
                &hex::encode(openssl::sha::sha256(token.as_bytes())),
                "bench",
                mdmctl::store::Role::Maintainer,
                None,
            )?;
            Ok(())
        })
        .unwrap();
    let handle = tokio::runtime::Handle::current();
    let apns = handle
        .block_on(ApnsStandIn::start(
            push_ca.certificate().clone(),
            StandInConfig::default(),
        ))
        .unwrap();
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), apns.server_ca_pem().unwrap()).unwrap();

    let http = http_client(&[]).unwrap();
    let (signed, fanout) = make_devices(&store, &ca, &minted.topic, total, 1_000, 10_000, &http);
    let db = match &pg_url {
        Some(u) => u.clone(),
        None => match &location {
            Location::Sqlite(p) => p.display().to_string(),
            Location::Postgres(u) => u.clone(),
        },
    };
    let server = Server::start(&db, &apns.base_url(), ca_file.path());
    println!("  server pid {}", server.pid);
    let database = pg_url.as_ref().map(|u| Database {
        url: u.clone(),
        server_pid: server.pid,
    });
    let mdm_url = format!("{}/mdm", server.url);
    let rebind = |d: &Arc<SimDevice>| {
        Arc::new(
            SimDevice::with_key(
                0,
                "15.1",
                IdentityMode::Signature,
                http.clone(),
                &[],
                d.key().clone(),
            )
            .unwrap()
            .with_identity(
                d.identity().unwrap(),
                d.key().clone(),
                Endpoint {
                    server_url: mdm_url.clone(),
                    check_in_url: mdm_url.clone(),
                    topic: minted.topic.clone(),
                },
            )
            .unwrap()
            .with_ids(&d.udid, &d.serial, d.token.clone(), &d.push_magic),
        )
    };
    let signed: Vec<Arc<SimDevice>> = signed.iter().map(rebind).collect();

    if only.is_empty() || only == "idle" {
        let stranger = stranger_client();
        handle.block_on(first_contact(
            &server,
            database.as_ref(),
            &signed,
            &stranger,
        ));
        for concurrency in [16usize, 256] {
            for style in [Style::KeepAlive, Style::Independent] {
                handle.block_on(idle(
                    &server,
                    database.as_ref(),
                    &signed[..concurrency],
                    style,
                    &stranger,
                    Duration::from_secs(8),
                ));
            }
        }
        println!(
            "  server RSS after the Idle runs: {:.0} MB (peak {:.0} MB) with {total} enrolled devices",
            server.rss_mb(),
            server.peak_rss_mb()
        );
    }

    let fanout: Vec<Arc<SimDevice>> = fanout
        .iter()
        .map(|d| {
            Arc::new(
                SimDevice::with_key(
                    0,
                    "15.1",
                    IdentityMode::Header(HEADER.into()),
                    http.clone(),
                    &[],
                    d.key().clone(),
                )
                .unwrap()
                .with_identity(
                    d.identity().unwrap(),
                    d.key().clone(),
                    Endpoint {
                        server_url: mdm_url.clone(),
                        check_in_url: mdm_url.clone(),
                        topic: minted.topic.clone(),
                    },
                )
                .unwrap()
                .with_ids(&d.udid, &d.serial, d.token.clone(), &d.push_magic),
            )
        })
        .collect();
    if only.is_empty() || only == "fanout" {
        let _guard = handle.enter();
        let fleet = Fleet::new(fanout.iter().cloned());
        let waker = fleet.wake_on_push(apns.subscribe());
        for n in [1_000usize, 10_000] {
            handle.block_on(fan_out(
                &server,
                database.as_ref(),
                &store,
                &token,
                &fanout[..n],
                &http,
            ));
        }
        waker.abort();
    }
    println!(
        "  server peak RSS: {:.0} MB with {total} enrolled devices",
        server.peak_rss_mb()
    );
    drop(server);
    handle.block_on(apns.shutdown());
}

/// How the load generator talks to the server.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    /// Connections reused; each device's Idle signed once and sent again.
    KeepAlive,
    /// As real Macs and other simulators: a new TCP connection for every request and a fresh
    /// `Mdm-Signature` (CMS with the certificate) on every request.
    Independent,
}

impl Style {
    fn name(self) -> &'static str {
        match self {
            Style::KeepAlive => "keep-alive",
            Style::Independent => "independent",
        }
    }
}

/// A client that opens a new connection for every request.
fn stranger_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// The PostgreSQL backends serving the server, for their CPU time.
struct Database {
    url: String,
    server_pid: u32,
}

impl Database {
    /// utime + stime of the backends whose client is the server process (its connections, by
    /// the client port in `pg_stat_activity` matched to the server's sockets), in seconds.
    fn cpu(&self) -> f64 {
        let mut c = postgres::Client::connect(&self.url, postgres::NoTls).unwrap();
        let ports = server_ports(self.server_pid);
        let rows = c
            .query(
                "SELECT pid, client_port FROM pg_stat_activity WHERE application_name = 'mdmctl'",
                &[],
            )
            .unwrap();
        rows.iter()
            .filter(|r| ports.contains(&r.get::<_, Option<i32>>(1).unwrap_or(-1)))
            .map(|r| proc_cpu(r.get::<_, i32>(0) as u32))
            .sum()
    }
}

/// The local TCP ports of a process's sockets (from /proc/net/tcp and its fds).
fn server_ports(pid: u32) -> Vec<i32> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().to_string();
                    l.strip_prefix("socket:[")
                        .and_then(|r| r.strip_suffix(']'))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9
                && inodes.contains(f[9])
                && let Some(port) = f[1].rsplit(':').next()
            {
                ports.push(i32::from_str_radix(port, 16).unwrap_or(-1));
            }
        }
    }
    ports
}

/// utime + stime of a process, in seconds.
fn proc_cpu(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

/// One Idle as `style` sends it.
/// An Idle body and the identity headers that sign it.
type Signed = (Vec<u8>, Vec<(String, String)>);

async fn send_idle(
    d: &SimDevice,
    style: Style,
    stranger: &reqwest::Client,
    url: &str,
    presigned: &Signed,
) -> u16 {
    match style {
        Style::KeepAlive => {
            let (body, h) = presigned;
            d.send_with(false, body.clone(), h.clone()).await.unwrap().0
        }
        Style::Independent => {
            let body = d.idle_body();
            let mut req = stranger
                .put(url)
                .header("Content-Type", "application/x-apple-aspen-mdm")
                .body(body.clone());
            for (k, v) in d.identity_headers(&body).unwrap() {
                req = req.header(k, v);
            }
            req.send().await.unwrap().status().as_u16()
        }
    }
}

/// Every migrated device's first contact (16 at a time, independent-style): marks it migrated,
/// logs it, and hands it to the reconciler.
async fn first_contact(
    server: &Server,
    db: Option<&Database>,
    devices: &[Arc<SimDevice>],
    stranger: &reqwest::Client,
) {
    let url = format!("{}/mdm", server.url);
    let cpu0 = server.cpu();
    let db0 = db.map(|d| tokio::task::block_in_place(|| d.cpu()));
    let start = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = Vec::new();
    for d in devices {
        let (d, gate, stranger, url) = (d.clone(), gate.clone(), stranger.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = gate.acquire_owned().await.unwrap();
            let none = (Vec::new(), Vec::new());
            send_idle(&d, Style::Independent, &stranger, &url, &none).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let elapsed = start.elapsed().as_secs_f64();
    // What the first contacts set off (the reconciler's pass over the new devices) is part
    // of their cost: wait for it to settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = server.cpu() - cpu0;
    let db_cpu = db.map(|d| tokio::task::block_in_place(|| d.cpu()) - db0.unwrap_or(0.0));
    println!(
        "  first contact, {} devices (independent, 16 at a time): {:.2} s, server CPU {:.0} µs per device{}",
        devices.len(),
        elapsed,
        cpu * 1e6 / devices.len() as f64,
        db_cpu
            .map(|c| format!(
                ", database CPU {:.0} µs per device",
                c * 1e6 / devices.len() as f64
            ))
            .unwrap_or_default()
    );
}

async fn idle(
    server: &Server,
    db: Option<&Database>,
    devices: &[Arc<SimDevice>],
    style: Style,
    stranger: &reqwest::Client,
    duration: Duration,
) {
    let url = format!("{}/mdm", server.url);
    // Keep-alive devices sign their Idle once; the server verifies the signature every time.
    let prepared: Vec<(Arc<SimDevice>, Signed)> = devices
        .iter()
        .map(|d| {
            let body = d.idle_body();
            let headers = d.identity_headers(&body).unwrap();
            (d.clone(), (body, headers))
        })
        .collect();
    // Warm up: every device has been seen (its first contact is measured apart).
    for (d, p) in &prepared {
        assert_eq!(send_idle(d, Style::KeepAlive, stranger, &url, p).await, 200);
    }
    let cpu0 = server.cpu();
    let db0 = db.map(|d| tokio::task::block_in_place(|| d.cpu()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (d, p) in prepared {
        let (stranger, url) = (stranger.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while start.elapsed() < duration {
                let t = Instant::now();
                assert_eq!(send_idle(&d, style, &stranger, &url, &p).await, 200);
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = server.cpu() - cpu0;
    let db_cpu = db.map(|d| tokio::task::block_in_place(|| d.cpu()) - db0.unwrap_or(0.0));
    all.sort();
    let pct =
        |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "  Idle, {:>3} concurrent, {:<11}: {:>6.0} check-ins/s, p50 {:.2} ms, p99 {:.2} ms, server CPU {:.0} µs per check-in{} ({} check-ins, server RSS {:.0} MB)",
        devices.len(),
        style.name(),
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        cpu * 1e6 / all.len() as f64,
        db_cpu
            .map(|c| format!(", database CPU {:.0} µs", c * 1e6 / all.len() as f64))
            .unwrap_or_default(),
        all.len(),
        server.rss_mb()
    );
}

async fn fan_out(
    server: &Server,
    db: Option<&Database>,
    store: &Arc<dyn Store>,
    token: &str,
    devices: &[Arc<SimDevice>],
    http: &reqwest::Client,
) {
    let ids: Vec<String> = devices.iter().map(|d| d.udid.clone()).collect();
    let cpu0 = server.cpu();
    let db0 = db.map(|d| tokio::task::block_in_place(|| d.cpu()));
    let start = Instant::now();
    let r = http
        .post(format!("{}/api/v1/commands", server.url))
        .bearer_auth(token)
        .json(&serde_json::json!({ "devices": ids, "request_type": "DeviceInformation" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let sent: serde_json::Value = r.json().await.unwrap();
    let queued_pushed = start.elapsed();
    let uuid = sent["command_uuid"].as_str().unwrap().to_string();
    assert_eq!(sent["push"]["delivered"], devices.len());
    loop {
        let entries =
            tokio::task::block_in_place(|| mdmctl::mdm::status(store.as_ref(), &uuid)).unwrap();
        let done = entries
            .iter()
            .filter(|e| e.status == QueueStatus::Acknowledged)
            .count();
        if done == devices.len() {
            break;
        }
        if start.elapsed() > Duration::from_secs(300) {
            panic!("only {done} of {} acknowledged after 300 s", devices.len());
        }
        // Not more often: on PostgreSQL each look at 10,000 rows costs the database CPU the
        // server would use.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let total = start.elapsed();
    let db_cpu = match (db, db0) {
        (Some(d), Some(c0)) => format!(
            ", database CPU {:.2} s",
            tokio::task::block_in_place(|| d.cpu()) - c0
        ),
        _ => String::new(),
    };
    println!(
        "  {} to {:>6} devices: queued and pushed in {:.2} s, all acknowledged in {:.2} s (server CPU {:.2} s{db_cpu})",
        named::device_information(&[]).request_type,
        devices.len(),
        queued_pushed.as_secs_f64(),
        total.as_secs_f64(),
        server.cpu() - cpu0
    );
}
