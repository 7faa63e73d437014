//! `serve` under load: the real `mdmctl serve` binary in its own process (its CPU time and peak
//! RSS read from /proc), simulated Macs and the APNs stand-in in this one.
//!
//! - Idle check-ins per second and p50/p99 latency at 16 and 256 concurrent devices, each
//!   request carrying an RSA-2048 `Mdm-Signature` (verified by the server every time), and the
//!   server's CPU time per check-in;
//! - a command sent to 1,000 and 10,000 devices: from the API call until every device has
//!   acknowledged it (push through the stand-in, each device's Idle, command, acknowledgement);
//! - the server's peak RSS, with 100,000 enrolled devices in the store.
//!
//! `cargo bench --bench serve` (PostgreSQL too when `MDMCTL_TEST_POSTGRES_URL` is set);
//! `MDMCTL_BENCH_DEVICES` changes the 100,000. Results: docs/benchmarks.md.

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
    rt.block_on(run(
        "sqlite",
        Location::Sqlite(dir.path().join("bench.db")),
        devices,
        None,
    ));
    if let Ok(base) = std::env::var("MDMCTL_TEST_POSTGRES_URL") {
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
    for i in 0..signed {
        let key = pki::generate_rsa(2048).unwrap();
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
            .with_identity(cert, key, endpoint(placeholder))
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
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM"))
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
    let (signed, fanout) = make_devices(&store, &ca, &minted.topic, total, 256, 10_000, &http);
    let db = match &pg_url {
        Some(u) => u.clone(),
        None => match &location {
            Location::Sqlite(p) => p.display().to_string(),
            Location::Postgres(u) => u.clone(),
        },
    };
    let server = Server::start(&db, &apns.base_url(), ca_file.path());
    println!("  server pid {}", server.pid);
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
        for concurrency in [16usize, 256] {
            handle.block_on(idle(
                &server,
                &signed[..concurrency],
                Duration::from_secs(8),
            ));
        }
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
            handle.block_on(fan_out(&server, &store, &token, &fanout[..n], &http));
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

/// A device, its Idle body and the identity headers signing it.
type SignedIdle = (Arc<SimDevice>, Vec<u8>, Vec<(String, String)>);

async fn idle(server: &Server, devices: &[Arc<SimDevice>], duration: Duration) {
    // Each device signs its Idle once; the server verifies the signature on every request.
    let prepared: Vec<SignedIdle> = devices
        .iter()
        .map(|d| {
            let body = d.idle_body();
            let headers = d.identity_headers(&body).unwrap();
            (d.clone(), body, headers)
        })
        .collect();
    // Warm up (first contact marks each device migrated: a write).
    for (d, body, h) in &prepared {
        let (s, _) = d.send_with(false, body.clone(), h.clone()).await.unwrap();
        assert_eq!(s, 200);
    }
    let cpu0 = server.cpu();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (d, body, h) in prepared {
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while start.elapsed() < duration {
                let t = Instant::now();
                let (s, _) = d.send_with(false, body.clone(), h.clone()).await.unwrap();
                assert_eq!(s, 200);
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
    all.sort();
    let pct =
        |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "  Idle, {:>3} concurrent devices: {:>6.0} check-ins/s, p50 {:.2} ms, p99 {:.2} ms, server CPU {:.0} µs per check-in ({} check-ins)",
        devices.len(),
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        cpu * 1e6 / all.len() as f64,
        all.len()
    );
}

async fn fan_out(
    server: &Server,
    store: &Arc<dyn Store>,
    token: &str,
    devices: &[Arc<SimDevice>],
    http: &reqwest::Client,
) {
    let ids: Vec<String> = devices.iter().map(|d| d.udid.clone()).collect();
    let cpu0 = server.cpu();
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = start.elapsed();
    println!(
        "  {} to {:>6} devices: queued and pushed in {:.2} s, all acknowledged in {:.2} s (server CPU {:.2} s)",
        named::device_information(&[]).request_type,
        devices.len(),
        queued_pushed.as_secs_f64(),
        total.as_secs_f64(),
        server.cpu() - cpu0
    );
}
