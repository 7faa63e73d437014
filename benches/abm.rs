//! `mdmctl abm sync` of 100,000 Apple Business Manager devices against the ABM stand-in
//! (`mdmctl::sim::abm`, in this process, over real HTTP), 1 % of them answered `FAILED`: the
//! first sync fetches every device (pages of 1,000), defines the enrollment profile and assigns
//! it in batches of 1,000; the second sync reads the changes (one `modified` record per
//! assigned device, as ABM reports them) and retries the failed serials. Wall time and peak RSS
//! (VmHWM) of each `mdmctl` child process, into a fresh SQLite store (and a PostgreSQL one with
//! `MDMCTL_TEST_POSTGRES_URL`). Target: at most 60 s and 200 MB for the first.
//!
//! `cargo bench --bench abm` (`MDMCTL_BENCH_ABM_DEVICES` to change the count). Results:
//! docs/benchmarks.md.

#[path = "common/measure.rs"]
mod measure;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

const PASSPHRASE: &str = "benchmark passphrase";

fn main() {
    let devices: usize = std::env::var("MDMCTL_BENCH_ABM_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let token = mdmctl::assets::abm::ServerToken {
        consumer_key: "CK_bench".into(),
        consumer_secret: "CS_bench".into(),
        access_token: "AT_bench".into(),
        access_secret: "AS_bench".into(),
        access_token_expiry: "2030-01-01T00:00:00Z".into(),
    };
    let mut stores = vec![("sqlite", None)];
    if let Ok(url) = std::env::var("MDMCTL_TEST_POSTGRES_URL") {
        stores.push(("postgres", Some(url)));
    } else {
        eprintln!("postgres: skipped (MDMCTL_TEST_POSTGRES_URL not set)");
    }
    println!(
        "machine: {} cores; {devices} ABM devices, {} answered FAILED",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        devices / 100
    );
    for (backend, pg) in stores {
        let abm = rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            mdmctl::sim::abm::AbmStandIn::start(l, token.clone())
                .await
                .expect("stand-in")
        });
        abm.add_devices(0, devices);
        let failing: Vec<String> = (0..devices)
            .step_by(100)
            .map(|k| format!("ABM{k:07}"))
            .collect();
        abm.answer_for(&failing, "FAILED", usize::MAX);

        let dir = tempfile::tempdir().expect("tempdir");
        let (db, schema) = match &pg {
            None => (dir.path().join("mdmctl.db").display().to_string(), None),
            Some(url) => {
                let schema = format!("mdmctl_bench_abm_{}", std::process::id());
                let sep = if url.contains('?') { '&' } else { '?' };
                (
                    format!("{url}{sep}options=-c%20search_path%3D{schema}"),
                    Some((url.clone(), schema)),
                )
            }
        };
        if let Some((url, schema)) = &schema {
            psql(url, &format!("CREATE SCHEMA {schema}"));
        }
        prepare(&db, dir.path(), &token);
        let url = abm.url().to_string();
        let (first, hwm1, out1) = sync(&db, dir.path(), &url);
        let (second, hwm2, out2) = sync(&db, dir.path(), &url);
        let a1: serde_json::Value = serde_json::from_slice(&out1).expect("json");
        let a2: serde_json::Value = serde_json::from_slice(&out2).expect("json");
        println!(
            "{backend}: first sync (fetch {} + define + assign): {:.2} s wall, peak RSS {:.1} MiB; {} assigned, {} failed in {} call(s) (target: at most 60 s, 200 MB)",
            a1["sync"]["records"],
            first.as_secs_f64(),
            hwm1 as f64 / 1024.0,
            a1["assign"]["assigned"],
            a1["assign"]["failed"],
            a1["assign"]["calls"]
        );
        println!(
            "{backend}: second sync ({} change(s), failed ones retried): {:.2} s wall, peak RSS {:.1} MiB; {} assigned, {} failed",
            a2["sync"]["records"],
            second.as_secs_f64(),
            hwm2 as f64 / 1024.0,
            a2["assign"]["assigned"],
            a2["assign"]["failed"]
        );
        assert_eq!(
            a1["assign"]["assigned"].as_u64(),
            Some((devices - failing.len()) as u64)
        );
        if let Some((url, schema)) = &schema {
            psql(url, &format!("DROP SCHEMA {schema} CASCADE"));
        }
    }
}

fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mdmctl(db: &str, dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mdmctl"));
    c.env("MDMCTL_DB", db)
        .env("MDMCTL_PASSPHRASE", PASSPHRASE)
        .env("MDMCTL_NO_INPUT", "true")
        .current_dir(dir);
    c
}

/// A store with the ABM key pair and a server token for the stand-in (encrypted with the
/// `openssl` command, as Apple's portal does).
fn prepare(db: &str, dir: &Path, token: &mdmctl::assets::abm::ServerToken) {
    for args in [&["init"][..], &["generate", "mdm-apple-bm"][..]] {
        let out = mdmctl(db, dir).args(args).output().expect("mdmctl");
        assert!(
            out.status.success(),
            "mdmctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let json = serde_json::to_string(token).expect("json");
    std::fs::write(
        dir.join("token.txt"),
        format!("Content-Type: text/plain;charset=UTF-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n-----BEGIN MESSAGE-----\r\n{json}\r\n-----END MESSAGE-----\r\n"),
    )
    .expect("write");
    let out = Command::new("openssl")
        .args([
            "smime",
            "-encrypt",
            "-aes256",
            "-in",
            "token.txt",
            "-out",
            "token.p7m",
            "mdm-apple-bm.crt",
        ])
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = mdmctl(db, dir)
        .args(["set", "mdm-apple-bm", "--token", "token.p7m"])
        .output()
        .expect("mdmctl");
    assert!(
        out.status.success(),
        "set mdm-apple-bm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Wall time, peak RSS (KiB) and stdout of one `abm sync`.
fn sync(db: &str, dir: &Path, abm_url: &str) -> (Duration, u64, Vec<u8>) {
    let mut cmd = mdmctl(db, dir);
    cmd.env("MDMCTL_ABM_URL", abm_url).args([
        "--format",
        "json",
        "abm",
        "sync",
        "--url",
        "https://mdm.example.com",
    ]);
    measure::run_measured(cmd, "abm sync")
}
