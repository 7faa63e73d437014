//! Profile delivery at fleet scale: a new profile applied to a team of 10,000 enrolled devices,
//! then one reconciler pass (`mdmctl::reconcile::tick`, as `serve` runs it): every
//! InstallProfile + ProfileList queued (200 devices per transaction) and every device pushed
//! through the APNs stand-in (in this process, over HTTP/2). Also the reconciler's time per
//! device without the push, and a second pass with nothing to do.
//!
//! `cargo bench --bench reconcile` (PostgreSQL too when `MDMCTL_TEST_POSTGRES_URL` is set).
//! Results: docs/benchmarks.md.

use std::time::Instant;

use mdmctl::assets::apns::{SetMdmApple, set_mdm_apple};
use mdmctl::push::{ApnsConfig, PushService};
use mdmctl::reconcile::{self, Policy};
use mdmctl::sim::apns::{ApnsStandIn, PushCertOptions, StandInConfig, TestPushCa};
use mdmctl::store::{
    self, DesiredProfile, DeviceRecord, EnrollmentRecord, Location, NewKey, ProfileKind, Settings,
    Store,
};
use zeroize::Zeroizing;

const DEVICES: usize = 10_000;

fn profile(id: &str) -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict>
<key>PayloadContent</key><array><dict>
<key>PayloadIdentifier</key><string>{id}.wifi</string>
<key>PayloadType</key><string>com.apple.wifi.managed</string>
<key>PayloadUUID</key><string>{id}-p</string><key>PayloadVersion</key><integer>1</integer>
<key>SSID_STR</key><string>Office</string></dict></array>
<key>PayloadDisplayName</key><string>Office Wi-Fi</string>
<key>PayloadIdentifier</key><string>{id}</string>
<key>PayloadType</key><string>Configuration</string>
<key>PayloadUUID</key><string>{id}-uuid</string>
<key>PayloadVersion</key><integer>1</integer>
</dict></plist>
"#
    )
    .into_bytes()
}

fn desired(id: &str) -> DesiredProfile {
    let content = profile(id);
    DesiredProfile {
        team: Some("Fleet".into()),
        identifier: id.into(),
        name: "Office Wi-Fi".into(),
        kind: ProfileKind::Profile,
        managed: false,
        sha256: hex::encode(openssl::sha::sha256(&content)),
        content,
        source: None,
    }
}

/// This process's CPU time (user + system), in seconds.
fn cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    run(
        &runtime,
        "sqlite",
        Location::Sqlite(dir.path().join("bench.db")),
    );
    if let Ok(base) = std::env::var("MDMCTL_TEST_POSTGRES_URL") {
        let schema = format!("mdmctl_bench_rec_{}", std::process::id());
        let mut admin = postgres::Client::connect(&base, postgres::NoTls).expect("connect");
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .expect("schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        let pg = Location::parse(&format!("{base}{sep}options=-c%20search_path%3D{schema}"));
        run(&runtime, "postgres", pg);
        admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .expect("drop");
    } else {
        eprintln!("postgres: skipped (MDMCTL_TEST_POSTGRES_URL not set)");
    }
}

fn run(runtime: &tokio::runtime::Runtime, name: &str, location: Location) {
    let (store, _) = store::create(
        &location,
        NewKey::Passphrase(Zeroizing::new("bench passphrase".into())),
    )
    .unwrap();
    let push_ca = TestPushCa::generate().unwrap();
    let minted = push_ca
        .issue_push_certificate(&PushCertOptions::default())
        .unwrap();
    store
        .write(|tx| -> Result<(), mdmctl::assets::AssetError> {
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
            tx.put_team("Fleet", &Settings::default())?;
            for i in 0..DEVICES {
                let id = format!("BENCH-{i:06}");
                tx.put_device(&DeviceRecord {
                    id: id.clone(),
                    serial: Some(format!("S{i:06}")),
                    source: "enrolled".into(),
                    os_version: Some("15.1".into()),
                    ..Default::default()
                })?;
                let mut token = [0u8; 32];
                token[..8].copy_from_slice(&(i as u64).to_be_bytes());
                tx.put_enrollment(&EnrollmentRecord {
                    id: id.clone(),
                    device_id: id.clone(),
                    kind: "Device".into(),
                    topic: minted.topic.clone(),
                    push_magic: Some(Zeroizing::new(format!("MAGIC-{i}"))),
                    token: Some(Zeroizing::new(token.to_vec())),
                    enabled: true,
                    ..Default::default()
                })?;
                tx.set_device_team(&id, Some("Fleet"))?;
            }
            Ok(())
        })
        .unwrap();
    let apns = runtime
        .block_on(ApnsStandIn::start(
            push_ca.certificate().clone(),
            StandInConfig::default(),
        ))
        .unwrap();
    let pushes = PushService::new(
        store.clone(),
        ApnsConfig::local(apns.base_url(), vec![apns.server_ca().to_owned()]),
    );
    let policy = Policy::default();
    // Team membership marked every device; the first pass finds no profile to send.
    runtime
        .block_on(reconcile::tick(store.clone(), &pushes, &policy))
        .unwrap();

    // 1. The reconciler alone: a profile applied, every device's commands queued.
    apply(store.as_ref(), "com.example.first");
    let ids: Vec<String> = store.read(|tx| tx.dirty_devices(DEVICES as u32)).unwrap();
    let (t0, c0) = (Instant::now(), cpu());
    let (summary, _) = reconcile::reconcile_devices(store.as_ref(), &ids).unwrap();
    let (wall, cpu_used) = (t0.elapsed(), cpu() - c0);
    assert_eq!(summary.installs, DEVICES);
    println!(
        "{name}: reconcile {DEVICES} devices (InstallProfile + ProfileList each): {:.2} s, CPU {:.0} µs/device",
        wall.as_secs_f64(),
        cpu_used * 1e6 / DEVICES as f64
    );

    // 2. As `serve` does it: apply, then one pass: queue and push every device.
    apply(store.as_ref(), "com.example.second");
    let (t0, c0) = (Instant::now(), cpu());
    let s = runtime
        .block_on(reconcile::tick(store.clone(), &pushes, &policy))
        .unwrap();
    let (wall, cpu_used) = (t0.elapsed(), cpu() - c0);
    assert_eq!((s.installs, s.pushed), (DEVICES, DEVICES));
    println!(
        "{name}: new profile for a {DEVICES}-device team, all queued and pushed: {:.2} s (target 5 s), process CPU {:.2} s (stand-in included)",
        wall.as_secs_f64(),
        cpu_used
    );

    // 3. A pass with nothing marked.
    let t0 = Instant::now();
    let s = runtime
        .block_on(reconcile::tick(store.clone(), &pushes, &policy))
        .unwrap();
    assert_eq!(s.devices, 0);
    println!(
        "{name}: idle pass: {:.2} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    drop(apns);
}

fn apply(store: &dyn Store, id: &str) {
    store
        .write(|tx| {
            tx.put_desired_profile(&desired(id))?;
            tx.mark_scope_dirty(Some("Fleet")).map(|_| ())
        })
        .unwrap();
}
