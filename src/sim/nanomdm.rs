//! An old NanoMDM server's state, for the demo and the cutover tests: its own SCEP CA, a push
//! certificate from the pretend Apple, simulated Macs enrolled with identities that CA issued,
//! and the whole MySQL database written the way `mysqldump` writes it (or loaded into a real
//! MariaDB with its schema, [`MYSQL_SCHEMA`]).

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use super::apple::FakeApple;
use super::device::{Endpoint, IdentityMode, SimDevice, SimError};
use crate::pki::{self, CaSpec, Subject};
use crate::timestamp::Timestamp;

/// NanoMDM's MySQL schema: the tables a migration reads, and those it leaves behind.
pub const MYSQL_SCHEMA: &str = include_str!("nanomdm_mysql.sql");
/// The same on PostgreSQL (NanoMDM's `storage/pgsql/schema.sql`).
pub const PGSQL_SCHEMA: &str = include_str!("nanomdm_pgsql.sql");

/// The old server, its devices and its secrets.
pub struct OldNanoMdm {
    pub ca_cert: X509,
    pub ca_key: PKey<Private>,
    pub push_cert: X509,
    pub push_key: PKey<Private>,
    pub topic: String,
    pub devices: Vec<Arc<SimDevice>>,
    /// When the old server last heard from its devices.
    pub last_seen: Timestamp,
}

fn sim(e: impl std::fmt::Display) -> SimError {
    SimError::Crypto(e.to_string())
}

impl OldNanoMdm {
    /// An old server at `server_url` (the DNS name the devices were enrolled to) with `devices`
    /// Macs, each with an identity from the old CA valid for another `identity_days`. The Macs
    /// share one RSA key (their certificates, and so their identities, still differ): making
    /// hundreds of keys would take longer than the rest of the demo.
    pub fn new(
        apple: &FakeApple,
        server_url: &str,
        devices: usize,
        identity_days: u32,
        http: reqwest::Client,
        server_roots: &[X509],
    ) -> Result<Self, SimError> {
        let (ca_cert, ca_key) = pki::new_ca(&CaSpec {
            common_name: "DEMO old MDM SCEP CA".into(),
            organization: "Example Inc (old MDM)".into(),
            country: "US".into(),
            key_bits: 2048,
            years: 5,
        })
        .map_err(sim)?;
        let device_key = pki::generate_rsa(2048).map_err(sim)?;
        let mut identities = Vec::with_capacity(devices);
        for n in 1..=devices {
            // The identity the old MDM's SCEP server issued at enrollment.
            let csr = pki::build_csr(
                &device_key,
                &Subject {
                    common_name: format!("C02SIM{n:06}"),
                    organization: "Example Inc".into(),
                    country: "US".into(),
                    email: String::new(),
                },
            )
            .map_err(sim)?;
            let cert = pki::scep::issue_certificate(&csr, &ca_cert, &ca_key, identity_days)
                .map_err(sim)?;
            identities.push((cert, device_key.clone()));
        }
        Self::with_old_ca(
            apple,
            server_url,
            ca_cert,
            ca_key,
            identities,
            http,
            server_roots,
        )
    }

    /// An old server whose SCEP CA and device identities were made elsewhere: by the real
    /// micromdm/scep (`scepserver ca -init`, then `scepclient` enrolling each device), as the
    /// tests that take old-server inputs from the real program do. Device `n` (from 1) gets
    /// `identities[n - 1]`.
    pub fn with_old_ca(
        apple: &FakeApple,
        server_url: &str,
        ca_cert: X509,
        ca_key: PKey<Private>,
        identities: Vec<(X509, PKey<Private>)>,
        http: reqwest::Client,
        server_roots: &[X509],
    ) -> Result<Self, SimError> {
        let push_key = pki::generate_rsa(2048).map_err(sim)?;
        let csr = pki::build_csr(
            &push_key,
            &Subject {
                common_name: "old MDM push".into(),
                organization: "Example Inc".into(),
                country: "US".into(),
                email: "it@example.com".into(),
            },
        )
        .map_err(sim)?;
        let topic = FakeApple::new_topic();
        let push_cert = apple.issue_push_cert(&csr, &topic, 300).map_err(sim)?;
        let endpoint = Endpoint {
            server_url: format!("{server_url}/mdm"),
            check_in_url: format!("{server_url}/mdm"),
            topic: topic.clone(),
        };
        let mut list = Vec::with_capacity(identities.len());
        for (i, (cert, key)) in identities.into_iter().enumerate() {
            let n = i + 1;
            let d = SimDevice::with_key(
                n,
                if n % 4 == 0 { "13.6.9" } else { "15.1" },
                IdentityMode::Signature,
                http.clone(),
                server_roots,
                key.clone(),
            )?;
            // What the old MDM installed: mdmctl must list it and leave it alone.
            d.preinstall("com.example.oldmdm.wifi", "Corporate Wi-Fi (old MDM)");
            list.push(Arc::new(d.with_identity(cert, key, endpoint.clone())?));
        }
        Ok(Self {
            ca_cert,
            ca_key,
            push_cert,
            push_key,
            topic,
            devices: list,
            last_seen: Timestamp::now().plus_days(-1),
        })
    }

    /// The old SCEP server's file depot as micromdm/scep's `scepserver ca -init` writes it
    /// (depot/file/depot.go): `ca.pem`, and `ca.key` as PKCS#1 in legacy PEM encryption
    /// (`Proc-Type: 4,ENCRYPTED`, DES-EDE3-CBC) under the empty password, its default.
    pub fn write_scep_depot(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("ca.pem"),
            self.ca_cert.to_pem().map_err(io::Error::other)?,
        )?;
        let key = self
            .ca_key
            .rsa()
            .and_then(|r| {
                r.private_key_to_pem_passphrase(openssl::symm::Cipher::des_ede3_cbc(), b"")
            })
            .map_err(io::Error::other)?;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join("ca.key"))?
            .write_all(&key)
    }

    /// The database as `mysqldump nanomdm` writes it: header, `CREATE TABLE`s, then per table
    /// `LOCK TABLES`, extended `INSERT`s with MySQL string escapes, `UNLOCK TABLES`.
    pub fn write_mysqldump(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(
            w,
            "-- MySQL dump 10.19  Distrib 10.11.6-MariaDB, for debian-linux-gnu (x86_64)"
        )?;
        writeln!(
            w,
            "--\n-- Host: localhost    Database: nanomdm\n-- ------------------------------------------------------"
        )?;
        writeln!(
            w,
            "/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;"
        )?;
        writeln!(w, "/*!40101 SET NAMES utf8mb4 */;")?;
        writeln!(
            w,
            "/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;"
        )?;
        for stmt in MYSQL_SCHEMA
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let body: String = stmt
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n");
            if let Some(name) = body
                .strip_prefix("CREATE TABLE ")
                .and_then(|r| r.split_whitespace().next())
            {
                writeln!(w, "\n--\n-- Table structure for table `{name}`\n--\n")?;
                writeln!(w, "DROP TABLE IF EXISTS `{name}`;")?;
            }
            writeln!(w, "{body};")?;
        }
        let at = |t: Timestamp| Some(Sql::Str(mysql_time(t)));
        let now = Timestamp::now();
        let mut devices = Vec::new();
        let mut enrollments = Vec::new();
        let mut certauth = Vec::new();
        for d in &self.devices {
            let cert = d
                .identity()
                .ok_or_else(|| io::Error::other("a device without identity"))?;
            let pem = pki::cert_pem(&cert).map_err(io::Error::other)?;
            devices.push(vec![
                Some(Sql::Str(d.udid.clone())),
                Some(Sql::Str(pem)),
                Some(Sql::Str(d.serial.clone())),
                Some(Sql::Bin(vec![0x42; 64])),
                at(self.last_seen),
                Some(Sql::Str(
                    String::from_utf8_lossy(&d.authenticate_body()).into_owned(),
                )),
                at(self.last_seen),
                Some(Sql::Str(
                    String::from_utf8_lossy(&d.token_update_body()).into_owned(),
                )),
                at(self.last_seen),
                None,
                None,
                at(now),
                at(now),
            ]);
            enrollments.push(vec![
                Some(Sql::Str(d.udid.clone())),
                Some(Sql::Str(d.udid.clone())),
                None,
                Some(Sql::Str("Device".into())),
                Some(Sql::Str(self.topic.clone())),
                Some(Sql::Str(d.push_magic.clone())),
                Some(Sql::Str(d.token_hex())),
                Some(Sql::Int(1)),
                Some(Sql::Int(1)),
                at(self.last_seen),
                at(now),
                at(now),
            ]);
            certauth.push(vec![
                Some(Sql::Str(d.udid.clone())),
                d.identity_sha256().map(Sql::Str),
                at(now),
                at(now),
            ]);
        }
        let push = vec![vec![
            Some(Sql::Str(self.topic.clone())),
            Some(Sql::Str(
                pki::cert_pem(&self.push_cert).map_err(io::Error::other)?,
            )),
            Some(Sql::Str(
                String::from_utf8_lossy(
                    &pki::private_key_pem(&self.push_key).map_err(io::Error::other)?,
                )
                .into_owned(),
            )),
            Some(Sql::Int(0)),
            at(now),
            at(now),
        ]];
        for (table, rows) in [
            ("devices", devices),
            ("users", Vec::new()),
            ("enrollments", enrollments),
            ("commands", Vec::new()),
            ("enrollment_queue", Vec::new()),
            ("push_certs", push),
            ("cert_auth_associations", certauth),
        ] {
            write_table(w, table, &rows)?;
        }
        writeln!(
            w,
            "/*!40014 SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS */;"
        )?;
        writeln!(
            w,
            "/*!40101 SET CHARACTER_SET_CLIENT=@OLD_CHARACTER_SET_CLIENT */;"
        )?;
        writeln!(w, "\n-- Dump completed on {}", mysql_time(now))
    }
}

/// A value in an INSERT.
enum Sql {
    Str(String),
    Bin(Vec<u8>),
    Int(i64),
}

/// mysqldump's extended inserts: many rows per statement, a new statement past ~1 MB.
fn write_table(w: &mut dyn Write, table: &str, rows: &[Vec<Option<Sql>>]) -> io::Result<()> {
    writeln!(w, "\n--\n-- Dumping data for table `{table}`\n--\n")?;
    writeln!(w, "LOCK TABLES `{table}` WRITE;")?;
    writeln!(w, "/*!40000 ALTER TABLE `{table}` DISABLE KEYS */;")?;
    let mut open = 0usize;
    for row in rows {
        let mut s = b"(".to_vec();
        for (i, v) in row.iter().enumerate() {
            if i > 0 {
                s.push(b',');
            }
            match v {
                None => s.extend_from_slice(b"NULL"),
                Some(Sql::Int(n)) => s.extend_from_slice(n.to_string().as_bytes()),
                Some(Sql::Str(t)) => escape_into(&mut s, t.as_bytes(), ""),
                Some(Sql::Bin(b)) => escape_into(&mut s, b, "_binary "),
            }
        }
        s.push(b')');
        if open == 0 {
            write!(w, "INSERT INTO `{table}` VALUES ")?;
        } else {
            w.write_all(b",")?;
        }
        w.write_all(&s)?;
        open += s.len();
        if open > 1_000_000 {
            writeln!(w, ";")?;
            open = 0;
        }
    }
    if open > 0 {
        writeln!(w, ";")?;
    }
    writeln!(w, "/*!40000 ALTER TABLE `{table}` ENABLE KEYS */;")?;
    writeln!(w, "UNLOCK TABLES;")
}

/// A quoted literal with mysql_real_escape_string's escapes.
fn escape_into(raw: &mut Vec<u8>, bytes: &[u8], introducer: &str) {
    raw.extend_from_slice(introducer.as_bytes());
    raw.push(b'\'');
    for &b in bytes {
        match b {
            0 => raw.extend_from_slice(b"\\0"),
            b'\n' => raw.extend_from_slice(b"\\n"),
            b'\r' => raw.extend_from_slice(b"\\r"),
            b'\\' => raw.extend_from_slice(b"\\\\"),
            b'\'' => raw.extend_from_slice(b"\\'"),
            b'"' => raw.extend_from_slice(b"\\\""),
            0x1a => raw.extend_from_slice(b"\\Z"),
            _ => raw.push(b),
        }
    }
    raw.push(b'\'');
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, MySQL's TIMESTAMP literal.
fn mysql_time(t: Timestamp) -> String {
    let d = t.to_datetime();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        d.year(),
        u8::from(d.month()),
        d.day(),
        d.hour(),
        d.minute(),
        d.second()
    )
}
