//! Store throughput: sealing secrets, and writing device records (each with four sealed
//! fields and an enrollment with three) in one transaction, on SQLite and PostgreSQL.
//!
//! `cargo bench --bench store` (PostgreSQL too when `MDMCTL_TEST_POSTGRES_URL` is set).
//! Results and the machine they were measured on: docs/benchmarks.md.

use std::time::{Duration, Instant};

use mdmctl::secrets::MasterKey;
use mdmctl::store::{self, DeviceRecord, EnrollmentRecord, Location, NewKey};
use mdmctl::timestamp::Timestamp;
use zeroize::Zeroizing;

const DEVICES: usize = 20_000;

fn main() {
    seal_open();
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = Location::Sqlite(dir.path().join("bench.db"));
    devices("sqlite", &sqlite);
    if let Ok(base) = std::env::var("MDMCTL_TEST_POSTGRES_URL") {
        let schema = format!("mdmctl_bench_{}", std::process::id());
        let mut admin = postgres::Client::connect(&base, postgres::NoTls).expect("connect");
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .expect("schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        let pg = Location::parse(&format!("{base}{sep}options=-c%20search_path%3D{schema}"));
        devices("postgres", &pg);
        admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .expect("drop");
    } else {
        eprintln!("postgres: skipped (MDMCTL_TEST_POSTGRES_URL not set)");
    }
}

fn seal_open() {
    let key = MasterKey::generate().expect("key");
    let magic = b"1A2B3C4D-5E6F-7A8B-9C0D-1E2F3A4B5C6D";
    let n = 200_000;
    let start = Instant::now();
    let mut last = Vec::new();
    for _ in 0..n {
        last = key.seal("push-magic", magic).expect("seal");
    }
    let seal = start.elapsed();
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(key.open("push-magic", &last).expect("open"));
    }
    let open = start.elapsed();
    println!(
        "seal (AES-256-GCM, 36 B):  {:.2} µs/op\nopen (AES-256-GCM, 36 B):  {:.2} µs/op",
        per_op_us(seal, n),
        per_op_us(open, n)
    );
}

fn per_op_us(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

fn devices(name: &str, location: &Location) {
    let (store, _) = store::create(
        location,
        NewKey::Passphrase(Zeroizing::new("benchmark passphrase".into())),
    )
    .expect("create");
    let auth = vec![b'a'; 1_200];
    let tu = Zeroizing::new(vec![b't'; 1_500]);
    let start = Instant::now();
    store
        .write(|tx| {
            for i in 0..DEVICES {
                let id = format!("{i:08X}-0000-4000-8000-{i:012X}");
                tx.put_device(&DeviceRecord {
                    id: id.clone(),
                    serial: Some(format!("C02{i:07}")),
                    source: "imported:bench".into(),
                    imported_at: Some(Timestamp::now()),
                    authenticate_raw: Some(auth.clone()),
                    token_update_raw: Some(tu.clone()),
                    unlock_token: Some(Zeroizing::new(vec![7; 2_000])),
                    bootstrap_token: Some(Zeroizing::new(vec![9; 64])),
                    identity_sha256: Some(format!("{i:064x}")),
                    ..Default::default()
                })?;
                tx.put_enrollment(&EnrollmentRecord {
                    id: id.clone(),
                    device_id: id,
                    kind: "Device".into(),
                    topic: "com.apple.mgmt.External.bench".into(),
                    push_magic: Some(Zeroizing::new(format!("MAGIC-{i}"))),
                    token: Some(Zeroizing::new(vec![0xab; 32])),
                    token_update_raw: Some(tu.clone()),
                    enabled: true,
                    ..Default::default()
                })?;
            }
            Ok::<_, store::StoreError>(())
        })
        .expect("write");
    let write = start.elapsed();
    let start = Instant::now();
    let n = store.read(|tx| tx.device_summaries()).expect("read").len();
    let list = start.elapsed();
    assert_eq!(n, DEVICES);
    println!(
        "{name}: {DEVICES} devices + enrollments in one transaction: {:.2} s ({:.0} devices/s); listing them: {:.0} ms",
        write.as_secs_f64(),
        DEVICES as f64 / write.as_secs_f64(),
        list.as_secs_f64() * 1e3
    );
}
