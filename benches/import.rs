//! `import-devices` on a NanoMDM MySQL dump of 100,000 devices with realistic rows (raw
//! Authenticate and TokenUpdate plists with unlock tokens, PEM identity certificates, a
//! cert-auth association each, user channels on a tenth), into a fresh SQLite store: wall time
//! and peak RSS of the `mdmctl import-devices` child process (VmHWM). In the same run, the
//! same dump loaded by MariaDB's own client (`mysql db < dump.sql`), and (with
//! `MDMCTL_TEST_POSTGRES_URL`) the import into a PostgreSQL store and its ratio to MariaDB's
//! loader.
//!
//! `MDMCTL_TEST_MYSQL_URL=mysql://root@127.0.0.1:3306/test MDMCTL_TEST_POSTGRES_URL=postgres://root@127.0.0.1:5432/test cargo bench --bench import`
//!
//! The dump is generated in mysqldump's exact shape (header, `LOCK TABLES`, `/*!40000 …*/`,
//! ~1 MB extended INSERTs, `_binary` blobs, mysqldump's escapes) and cached under
//! `target/bench-import/`. Results: docs/benchmarks.md.

#[path = "common/measure.rs"]
mod measure;

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::{X509Builder, X509NameBuilder};

const DEVICES: usize = 100_000;
const PASSPHRASE: &str = "benchmark passphrase";
const TOPIC: &str = "com.apple.mgmt.External.5f0e6bd1-7a3c-4a1e-9a8e-2b7d1c9e4f60";
const NET_BUFFER: usize = 1_046_528;
/// The template certificate's serial; each device's copy gets its index in the last bytes.
const SERIAL: [u8; 16] = [
    0x5a, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

const HEADER: &str = "/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)\n--\n-- Host: 127.0.0.1    Database: nanomdm\n-- ------------------------------------------------------\n-- Server version\t10.11.19-MariaDB-0+deb12u1\n\n/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n/*!40101 SET @OLD_CHARACTER_SET_RESULTS=@@CHARACTER_SET_RESULTS */;\n/*!40101 SET @OLD_COLLATION_CONNECTION=@@COLLATION_CONNECTION */;\n/*!40101 SET NAMES utf8mb4 */;\n/*!40103 SET @OLD_TIME_ZONE=@@TIME_ZONE */;\n/*!40103 SET TIME_ZONE='+00:00' */;\n/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;\n/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;\n/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;\n/*!40111 SET @OLD_SQL_NOTES=@@SQL_NOTES, SQL_NOTES=0 */;\n";

const FOOTER: &str = "/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n\n/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;\n/*!40014 SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS */;\n/*!40014 SET UNIQUE_CHECKS=@OLD_UNIQUE_CHECKS */;\n/*!40101 SET CHARACTER_SET_CLIENT=@OLD_CHARACTER_SET_CLIENT */;\n/*!40101 SET CHARACTER_SET_RESULTS=@OLD_CHARACTER_SET_RESULTS */;\n/*!40101 SET COLLATION_CONNECTION=@OLD_COLLATION_CONNECTION */;\n/*!40111 SET SQL_NOTES=@OLD_SQL_NOTES */;\n\n-- Dump completed on 2026-11-23 12:00:00\n";

const DDL: &[(&str, &str)] = &[
    (
        "cert_auth_associations",
        "CREATE TABLE `cert_auth_associations` (\n  `id` varchar(255) NOT NULL,\n  `sha256` char(64) NOT NULL,\n  `created_at` timestamp NULL DEFAULT current_timestamp(),\n  `updated_at` timestamp NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),\n  PRIMARY KEY (`id`,`sha256`),\n  KEY `sha256` (`sha256`)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;\n",
    ),
    (
        "devices",
        "CREATE TABLE `devices` (\n  `id` varchar(255) NOT NULL,\n  `identity_cert` text DEFAULT NULL,\n  `serial_number` varchar(127) DEFAULT NULL,\n  `unlock_token` mediumblob DEFAULT NULL,\n  `unlock_token_at` timestamp NULL DEFAULT NULL,\n  `authenticate` text NOT NULL,\n  `authenticate_at` timestamp NOT NULL,\n  `token_update` text DEFAULT NULL,\n  `token_update_at` timestamp NULL DEFAULT NULL,\n  `bootstrap_token_b64` text DEFAULT NULL,\n  `bootstrap_token_at` timestamp NULL DEFAULT NULL,\n  `created_at` timestamp NULL DEFAULT current_timestamp(),\n  `updated_at` timestamp NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),\n  PRIMARY KEY (`id`),\n  KEY `serial_number` (`serial_number`),\n  CONSTRAINT `CONSTRAINT_1` CHECK (`identity_cert` is null or substr(`identity_cert`,1,27) = '-----BEGIN CERTIFICATE-----')\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;\n",
    ),
    (
        "enrollments",
        "CREATE TABLE `enrollments` (\n  `id` varchar(255) NOT NULL,\n  `device_id` varchar(255) NOT NULL,\n  `user_id` varchar(255) DEFAULT NULL,\n  `type` varchar(31) NOT NULL,\n  `topic` varchar(255) NOT NULL,\n  `push_magic` varchar(127) NOT NULL,\n  `token_hex` varchar(255) NOT NULL,\n  `enabled` tinyint(1) NOT NULL DEFAULT 1,\n  `token_update_tally` int(11) NOT NULL DEFAULT 1,\n  `last_seen_at` timestamp NOT NULL DEFAULT current_timestamp(),\n  `created_at` timestamp NULL DEFAULT current_timestamp(),\n  `updated_at` timestamp NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),\n  PRIMARY KEY (`id`),\n  UNIQUE KEY `user_id` (`user_id`),\n  KEY `device_id` (`device_id`),\n  KEY `type` (`type`),\n  CONSTRAINT `enrollments_ibfk_1` FOREIGN KEY (`device_id`) REFERENCES `devices` (`id`) ON DELETE CASCADE ON UPDATE CASCADE,\n  CONSTRAINT `enrollments_ibfk_2` FOREIGN KEY (`user_id`) REFERENCES `users` (`id`) ON DELETE CASCADE ON UPDATE CASCADE\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;\n",
    ),
    (
        "users",
        "CREATE TABLE `users` (\n  `id` varchar(255) NOT NULL,\n  `device_id` varchar(255) NOT NULL,\n  `user_short_name` varchar(255) DEFAULT NULL,\n  `user_long_name` varchar(255) DEFAULT NULL,\n  `token_update` text DEFAULT NULL,\n  `token_update_at` timestamp NULL DEFAULT NULL,\n  `user_authenticate` text DEFAULT NULL,\n  `user_authenticate_at` timestamp NULL DEFAULT NULL,\n  `user_authenticate_digest` text DEFAULT NULL,\n  `user_authenticate_digest_at` timestamp NULL DEFAULT NULL,\n  `created_at` timestamp NULL DEFAULT current_timestamp(),\n  `updated_at` timestamp NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),\n  PRIMARY KEY (`id`,`device_id`),\n  UNIQUE KEY `id` (`id`),\n  KEY `device_id` (`device_id`),\n  CONSTRAINT `users_ibfk_1` FOREIGN KEY (`device_id`) REFERENCES `devices` (`id`) ON DELETE CASCADE ON UPDATE CASCADE\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;\n",
    ),
];

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-import");
    std::fs::create_dir_all(&dir).expect("target dir");
    let dump = dir.join(format!("nanomdm-{DEVICES}.sql"));
    if !dump.exists() {
        let start = Instant::now();
        generate(&dump);
        println!(
            "generated {} in {:.1} s",
            dump.display(),
            start.elapsed().as_secs_f64()
        );
    }
    let size = std::fs::metadata(&dump).expect("dump").len();
    println!(
        "dump: {DEVICES} devices, {} enrollments, {:.0} MiB",
        DEVICES + DEVICES / 10,
        size as f64 / 1048576.0
    );

    let store = dir.join("bench-store.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", store.display()));
    }
    let db = store.display().to_string();
    run_mdmctl(&db, &["init"]);
    let (wall, hwm, out) = import(&db, &dump);
    let summary: serde_json::Value = serde_json::from_slice(&out).expect("summary JSON");
    assert_eq!(
        summary["devices"]["imported"], DEVICES as u64,
        "{summary:#}"
    );
    println!(
        "sqlite store: import-devices {:.2} s wall ({:.0} devices/s, {:.0} MiB/s), peak RSS {:.1} MiB (targets: 10 s, 200 MiB)",
        wall.as_secs_f64(),
        DEVICES as f64 / wall.as_secs_f64(),
        size as f64 / 1048576.0 / wall.as_secs_f64(),
        hwm as f64 / 1024.0
    );
    let (wall2, _, out2) = import(&db, &dump);
    let again: serde_json::Value = serde_json::from_slice(&out2).expect("summary JSON");
    assert_eq!(again["devices"]["unchanged"], DEVICES as u64);
    println!(
        "sqlite store: re-import (all unchanged) {:.2} s",
        wall2.as_secs_f64()
    );

    let mut mariadb = None;
    if let Ok(url) = std::env::var("MDMCTL_TEST_MYSQL_URL") {
        let t = mysql_load(&url, &dump);
        mariadb = Some(t);
        println!(
            "mariadb: `mysql db < dump.sql` {:.2} s; import-devices is {:.1}x faster",
            t.as_secs_f64(),
            t.as_secs_f64() / wall.as_secs_f64()
        );
    } else {
        eprintln!("mariadb: skipped (MDMCTL_TEST_MYSQL_URL not set)");
    }

    if let Ok(base) = std::env::var("MDMCTL_TEST_POSTGRES_URL") {
        let schema = format!("mdmctl_bench_import_{}", std::process::id());
        let mut admin = postgres::Client::connect(&base, postgres::NoTls).expect("connect");
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .expect("schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        let pg = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        run_mdmctl(&pg, &["init"]);
        let (wall, hwm, _) = import(&pg, &dump);
        println!(
            "postgres store: import-devices {:.2} s wall ({:.0} devices/s), peak RSS {:.1} MiB",
            wall.as_secs_f64(),
            DEVICES as f64 / wall.as_secs_f64(),
            hwm as f64 / 1024.0
        );
        if let Some(m) = mariadb {
            println!(
                "postgres store: {:.2}x the time of MariaDB's own loader (target: at most 1.5x)",
                wall.as_secs_f64() / m.as_secs_f64()
            );
        }
        admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .expect("drop");
    } else {
        eprintln!("postgres: skipped (MDMCTL_TEST_POSTGRES_URL not set)");
    }
}

fn mdmctl(db: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mdmctl"));
    c.env("MDMCTL_DB", db)
        .env("MDMCTL_PASSPHRASE", PASSPHRASE)
        .env("MDMCTL_NO_INPUT", "true");
    c
}

fn run_mdmctl(db: &str, args: &[&str]) {
    let out = mdmctl(db).args(args).output().expect("run mdmctl");
    assert!(
        out.status.success(),
        "mdmctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Wall time, peak RSS (KiB) and stdout of one import.
fn import(db: &str, dump: &Path) -> (Duration, u64, Vec<u8>) {
    let mut cmd = mdmctl(db);
    cmd.args([
        "import-devices",
        &dump.display().to_string(),
        "--format",
        "json",
    ]);
    measure::run_measured(cmd, "import-devices")
}

fn mysql_load(url: &str, dump: &Path) -> Duration {
    let rest = url.split_once("://").map(|r| r.1).unwrap_or(url);
    let hostpart = rest.split('/').next().unwrap_or("");
    let (user, hp) = hostpart.rsplit_once('@').unwrap_or(("root", hostpart));
    let (host, port) = hp.split_once(':').unwrap_or((hp, "3306"));
    let name = format!("mdmctl_bench_{}", std::process::id());
    let base = |c: &mut Command| {
        c.arg(format!("--host={host}"))
            .arg(format!("--port={port}"))
            .arg(format!("--user={user}"));
    };
    let mut create = Command::new("mysql");
    base(&mut create);
    let ok = create
        .arg("-e")
        .arg(format!("CREATE DATABASE {name}"))
        .status()
        .expect("mysql");
    assert!(ok.success());
    let start = Instant::now();
    let mut load = Command::new("mysql");
    base(&mut load);
    let ok = load
        .arg(&name)
        .stdin(std::fs::File::open(dump).expect("dump"))
        .status()
        .expect("mysql");
    let t = start.elapsed();
    assert!(ok.success(), "mysql load failed");
    let mut drop = Command::new("mysql");
    base(&mut drop);
    let _ = drop.arg("-e").arg(format!("DROP DATABASE {name}")).status();
    t
}

/// mysqldump's string escapes.
fn esc(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'\'');
    for &b in bytes {
        match b {
            0 => out.extend_from_slice(b"\\0"),
            b'\'' => out.extend_from_slice(b"\\'"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            26 => out.extend_from_slice(b"\\Z"),
            _ => out.push(b),
        }
    }
    out.push(b'\'');
}

struct Table<'w, W: Write> {
    w: &'w mut W,
    name: &'static str,
    buf: Vec<u8>,
    rows: usize,
}

impl<'w, W: Write> Table<'w, W> {
    fn start(w: &'w mut W, name: &'static str, ddl: &str) -> Self {
        write!(
            w,
            "\n--\n-- Table structure for table `{name}`\n--\n\nDROP TABLE IF EXISTS `{name}`;\n/*!40101 SET @saved_cs_client     = @@character_set_client */;\n/*!40101 SET character_set_client = utf8mb4 */;\n{ddl}/*!40101 SET character_set_client = @saved_cs_client */;\n\n--\n-- Dumping data for table `{name}`\n--\n\nLOCK TABLES `{name}` WRITE;\n/*!40000 ALTER TABLE `{name}` DISABLE KEYS */;\n"
        )
        .expect("write");
        Table {
            w,
            name,
            buf: Vec::with_capacity(NET_BUFFER + 65536),
            rows: 0,
        }
    }

    fn row(&mut self, values: &[u8]) {
        if self.rows > 0 && self.buf.len() + values.len() + 3 > NET_BUFFER {
            self.flush();
        }
        if self.rows == 0 {
            self.buf
                .extend_from_slice(format!("INSERT INTO `{}` VALUES ", self.name).as_bytes());
        } else {
            self.buf.push(b',');
        }
        self.buf.push(b'(');
        self.buf.extend_from_slice(values);
        self.buf.push(b')');
        self.rows += 1;
    }

    fn flush(&mut self) {
        if self.rows > 0 {
            self.buf.extend_from_slice(b";\n");
            self.w.write_all(&self.buf).expect("write");
            self.buf.clear();
            self.rows = 0;
        }
    }

    fn end(mut self) {
        self.flush();
        write!(
            self.w,
            "/*!40000 ALTER TABLE `{0}` ENABLE KEYS */;\nUNLOCK TABLES;\n",
            self.name
        )
        .expect("write");
    }
}

struct Gen {
    cert_der: Vec<u8>,
    serial_at: usize,
}

fn udid(i: usize) -> String {
    format!(
        "{:08X}-{:04X}-4{:03X}-8{:03X}-{:012X}",
        0x1A2B0000 + i,
        i % 0xffff,
        i % 0xfff,
        (i * 7) % 0xfff,
        i * 2654435761 % 0xffff_ffff_ffff
    )
}

fn rand_bytes(seed: usize, n: usize) -> Vec<u8> {
    let mut x = seed as u64 ^ 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

impl Gen {
    fn new() -> Self {
        let ca_key = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("key");
        let dev_key = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("key");
        let mut name = X509NameBuilder::new().expect("name");
        name.append_entry_by_text("O", "MicroMDM").expect("O");
        name.append_entry_by_text("CN", "MicroMDM Identity (Jane's MacBook Pro)")
            .expect("CN");
        let name = name.build();
        let mut issuer = X509NameBuilder::new().expect("name");
        issuer.append_entry_by_text("C", "US").expect("C");
        issuer.append_entry_by_text("O", "MicroMDM").expect("O");
        issuer
            .append_entry_by_text("CN", "MicroMDM SCEP CA")
            .expect("CN");
        let issuer = issuer.build();
        let mut b = X509Builder::new().expect("builder");
        b.set_version(2).expect("version");
        b.set_serial_number(
            &BigNum::from_slice(&SERIAL)
                .expect("bn")
                .to_asn1_integer()
                .expect("int"),
        )
        .expect("serial");
        b.set_subject_name(&name).expect("subject");
        b.set_issuer_name(&issuer).expect("issuer");
        b.set_pubkey(&dev_key).expect("pubkey");
        b.set_not_before(&Asn1Time::days_from_now(0).expect("t"))
            .expect("nb");
        b.set_not_after(&Asn1Time::days_from_now(365).expect("t"))
            .expect("na");
        b.sign(&ca_key, MessageDigest::sha256()).expect("sign");
        let cert_der = b.build().to_der().expect("der");
        let serial_at = cert_der
            .windows(SERIAL.len())
            .position(|w| w == SERIAL)
            .expect("serial in DER");
        Gen {
            cert_der,
            serial_at,
        }
    }

    fn cert(&self, i: usize) -> (String, String) {
        let mut der = self.cert_der.clone();
        der[self.serial_at + 8..self.serial_at + 16].copy_from_slice(&(i as u64).to_be_bytes());
        let sha = hex::encode(openssl::sha::sha256(&der));
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(chunk).expect("ascii"));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        (pem, sha)
    }
}

fn authenticate(id: &str, serial: &str, i: usize) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist version=\"1.0\">\n<dict>\n\t<key>BuildVersion</key>\n\t<string>24B83</string>\n\t<key>DeviceName</key>\n\t<string>Jane's MacBook Pro {i}</string>\n\t<key>IMEI</key>\n\t<string></string>\n\t<key>MEID</key>\n\t<string></string>\n\t<key>MessageType</key>\n\t<string>Authenticate</string>\n\t<key>Model</key>\n\t<string>MacBookPro18,3</string>\n\t<key>ModelName</key>\n\t<string>MacBook Pro</string>\n\t<key>OSVersion</key>\n\t<string>15.1</string>\n\t<key>ProductName</key>\n\t<string>MacBookPro18,3</string>\n\t<key>SerialNumber</key>\n\t<string>{serial}</string>\n\t<key>Topic</key>\n\t<string>{TOPIC}</string>\n\t<key>UDID</key>\n\t<string>{id}</string>\n</dict>\n</plist>\n"
    )
}

fn token_update(
    id: &str,
    magic: &str,
    token: &[u8],
    unlock: Option<&[u8]>,
    user: Option<&str>,
) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let unlock = unlock
        .map(|u| {
            format!(
                "\t<key>UnlockToken</key>\n\t<data>\n\t{}\n\t</data>\n",
                b64(u)
            )
        })
        .unwrap_or_default();
    let user = user
        .map(|u| format!("\t<key>UserID</key>\n\t<string>{u}</string>\n\t<key>UserLongName</key>\n\t<string>Jane Appleseed</string>\n\t<key>UserShortName</key>\n\t<string>jane</string>\n"))
        .unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist version=\"1.0\">\n<dict>\n\t<key>AwaitingConfiguration</key>\n\t<false/>\n\t<key>MessageType</key>\n\t<string>TokenUpdate</string>\n\t<key>PushMagic</key>\n\t<string>{magic}</string>\n\t<key>Token</key>\n\t<data>\n\t{}\n\t</data>\n\t<key>Topic</key>\n\t<string>{TOPIC}</string>\n\t<key>UDID</key>\n\t<string>{id}</string>\n{unlock}{user}</dict>\n</plist>\n",
        b64(token)
    )
}

const TS: &[u8] = b"'2026-11-20 09:30:00'";

fn generate(path: &Path) {
    let g = Gen::new();
    let tmp = path.with_extension("tmp");
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp).expect("create"));
    w.write_all(HEADER.as_bytes()).expect("write");
    let mut v = Vec::with_capacity(16384);
    // cert_auth_associations
    let mut t = Table::start(&mut w, "cert_auth_associations", DDL[0].1);
    for i in 0..DEVICES {
        v.clear();
        esc(&mut v, udid(i).as_bytes());
        v.push(b',');
        esc(&mut v, g.cert(i).1.as_bytes());
        v.push(b',');
        v.extend_from_slice(TS);
        v.push(b',');
        v.extend_from_slice(TS);
        t.row(&v);
    }
    t.end();
    // devices
    let mut t = Table::start(&mut w, "devices", DDL[1].1);
    for i in 0..DEVICES {
        let id = udid(i);
        let serial = format!("C02{:07}Q6L", i);
        let unlock = rand_bytes(i, 1024);
        let magic = format!("{:08X}-5E6F-4A8B-9C0D-{:012X}", i, i * 31);
        let token = rand_bytes(i + 7, 32);
        v.clear();
        esc(&mut v, id.as_bytes());
        v.push(b',');
        esc(&mut v, g.cert(i).0.as_bytes());
        v.push(b',');
        esc(&mut v, serial.as_bytes());
        v.extend_from_slice(b",_binary ");
        esc(&mut v, &unlock);
        v.push(b',');
        v.extend_from_slice(TS);
        v.push(b',');
        esc(&mut v, authenticate(&id, &serial, i).as_bytes());
        v.push(b',');
        v.extend_from_slice(TS);
        v.push(b',');
        esc(
            &mut v,
            token_update(&id, &magic, &token, Some(&unlock), None).as_bytes(),
        );
        v.push(b',');
        v.extend_from_slice(TS);
        v.extend_from_slice(b",NULL,NULL,");
        v.extend_from_slice(TS);
        v.push(b',');
        v.extend_from_slice(TS);
        t.row(&v);
    }
    t.end();
    // enrollments
    let mut t = Table::start(&mut w, "enrollments", DDL[2].1);
    for i in 0..DEVICES {
        let id = udid(i);
        let magic = format!("{:08X}-5E6F-4A8B-9C0D-{:012X}", i, i * 31);
        let token = rand_bytes(i + 7, 32);
        v.clear();
        esc(&mut v, id.as_bytes());
        v.push(b',');
        esc(&mut v, id.as_bytes());
        v.extend_from_slice(b",NULL,'Device',");
        esc(&mut v, TOPIC.as_bytes());
        v.push(b',');
        esc(&mut v, magic.as_bytes());
        v.push(b',');
        esc(&mut v, hex::encode(&token).as_bytes());
        v.extend_from_slice(b",1,3,");
        v.extend_from_slice(TS);
        v.push(b',');
        v.extend_from_slice(TS);
        v.push(b',');
        v.extend_from_slice(TS);
        t.row(&v);
        if i % 10 == 0 {
            let uid = format!("{:08X}-AAAA-4BBB-8CCC-{:012X}", i, i);
            let umagic = format!("{:08X}-USER-4A8B-9C0D-{:012X}", i, i);
            let utoken = rand_bytes(i + 11, 32);
            v.clear();
            esc(&mut v, format!("{id}:{uid}").as_bytes());
            v.push(b',');
            esc(&mut v, id.as_bytes());
            v.push(b',');
            esc(&mut v, uid.as_bytes());
            v.extend_from_slice(b",'User',");
            esc(&mut v, TOPIC.as_bytes());
            v.push(b',');
            esc(&mut v, umagic.as_bytes());
            v.push(b',');
            esc(&mut v, hex::encode(&utoken).as_bytes());
            v.extend_from_slice(b",1,2,");
            v.extend_from_slice(TS);
            v.push(b',');
            v.extend_from_slice(TS);
            v.push(b',');
            v.extend_from_slice(TS);
            t.row(&v);
        }
    }
    t.end();
    // users
    let mut t = Table::start(&mut w, "users", DDL[3].1);
    for i in (0..DEVICES).step_by(10) {
        let id = udid(i);
        let uid = format!("{:08X}-AAAA-4BBB-8CCC-{:012X}", i, i);
        let umagic = format!("{:08X}-USER-4A8B-9C0D-{:012X}", i, i);
        let utoken = rand_bytes(i + 11, 32);
        v.clear();
        esc(&mut v, uid.as_bytes());
        v.push(b',');
        esc(&mut v, id.as_bytes());
        v.extend_from_slice(b",'jane','Jane Appleseed',");
        esc(
            &mut v,
            token_update(&id, &umagic, &utoken, None, Some(&uid)).as_bytes(),
        );
        v.push(b',');
        v.extend_from_slice(TS);
        v.extend_from_slice(b",NULL,NULL,NULL,NULL,");
        v.extend_from_slice(TS);
        v.push(b',');
        v.extend_from_slice(TS);
        t.row(&v);
    }
    t.end();
    w.write_all(FOOTER.as_bytes()).expect("write");
    w.flush().expect("flush");
    drop(w);
    std::fs::rename(&tmp, path).expect("rename");
}
