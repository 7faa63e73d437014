//! An old NanoMDM's state built with the real databases: devices with identity certificates
//! from a test CA, user channels, a push certificate, queued commands; loaded into a uniquely
//! named MariaDB or PostgreSQL database, dumped with the real `mysqldump` / `pg_dump`.

use std::path::Path;
use std::process::{Command, Stdio};

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::BasicConstraints;
use openssl::x509::{X509, X509Builder, X509NameBuilder};

pub const MYSQL_DDL: &str = mdmctl::sim::nanomdm::MYSQL_SCHEMA;
pub const PG_DDL: &str = mdmctl::sim::nanomdm::PGSQL_SCHEMA;
pub const LAST_SEEN: &str = "2026-01-02 03:04:05";
pub const LAST_SEEN_UNIX: i64 = 1767323045;

pub fn key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
}

/// A certificate for `key`, signed by `issuer` (or self-signed), valid `days`.
pub fn cert(
    cn: &str,
    uid: Option<&str>,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    days: u32,
    ca: bool,
) -> X509 {
    let mut name = X509NameBuilder::new().unwrap();
    if let Some(u) = uid {
        name.append_entry_by_text("UID", u).unwrap();
    }
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let serial = BigNum::from_u32(rand_u32())
        .unwrap()
        .to_asn1_integer()
        .unwrap();
    b.set_serial_number(&serial).unwrap();
    b.set_subject_name(&name).unwrap();
    match issuer {
        Some((c, _)) => b.set_issuer_name(c.subject_name()).unwrap(),
        None => b.set_issuer_name(&name).unwrap(),
    }
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(days).unwrap())
        .unwrap();
    if ca {
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
    }
    let signer = issuer.map(|(_, k)| k).unwrap_or(key);
    b.sign(signer, MessageDigest::sha256()).unwrap();
    b.build()
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    openssl::rand::rand_bytes(&mut b).unwrap();
    u32::from_le_bytes(b) & 0x7fff_ffff
}

pub fn topic(n: u32) -> String {
    format!("com.apple.mgmt.External.00000000-0000-4000-8000-{n:012}")
}

pub struct Device {
    pub udid: String,
    pub serial: String,
    pub cert_pem: String,
    pub sha256: String,
    pub not_after: i64,
    pub unlock_token: Vec<u8>,
    pub authenticate: String,
    pub token_update: String,
    pub bootstrap: Option<Vec<u8>>,
    pub push_magic: String,
    pub token: Vec<u8>,
    pub enabled: bool,
    /// A user channel: (user id, short name, long name, raw TokenUpdate, push magic, token).
    pub user: Option<(String, String, String, String, String, Vec<u8>)>,
}

pub struct Fleet {
    pub topic: String,
    pub ca: X509,
    pub ca_key: PKey<Private>,
    pub push_cert: X509,
    pub push_key: PKey<Private>,
    pub devices: Vec<Device>,
    pub commands: usize,
}

fn cert_info(c: &X509) -> (String, i64) {
    let sha = hex::encode(c.digest(MessageDigest::sha256()).unwrap());
    let epoch = Asn1Time::from_unix(0).unwrap();
    let d = epoch.diff(c.not_after()).unwrap();
    (sha, i64::from(d.days) * 86400 + i64::from(d.secs))
}

impl Fleet {
    /// `n` devices; the first has a user channel; the second is disabled; identities valid
    /// `days` (the last device's for 10 days, to trip the expiry warning).
    pub fn new(n: usize, topic_n: u32) -> Self {
        let topic = topic(topic_n);
        let ca_key = key();
        let ca = cert("MicroMDM SCEP CA", None, &ca_key, None, 3650, true);
        let push_key = key();
        let push_cert = cert("APSP:test", Some(&topic), &push_key, None, 365, false);
        let dev_key = key();
        let mut devices = Vec::new();
        for i in 0..n {
            let udid = format!("{:08X}-{:04X}-4000-8000-{:012X}", rand_u32(), i, rand_u32());
            let serial = format!("C02TEST{i:05}");
            let days = if i + 1 == n && n > 2 { 10 } else { 365 };
            let c = cert(
                &format!("MicroMDM Identity ({udid})"),
                None,
                &dev_key,
                Some((&ca, &ca_key)),
                days,
                false,
            );
            let (sha256, not_after) = cert_info(&c);
            let cert_pem = String::from_utf8(c.to_pem().unwrap()).unwrap();
            // Every byte value an escaper can trip on.
            let mut unlock_token = vec![
                0u8, b'\'', b'\\', b'\n', b'\r', b'"', 0x1a, b'\t', 0xff, 0x80,
            ];
            unlock_token.extend((0..=255u8).map(|b| b.wrapping_add(i as u8)));
            let authenticate = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist version=\"1.0\">\n<dict>\n\t<key>BuildVersion</key>\n\t<string>24B83</string>\n\t<key>DeviceName</key>\n\t<string>Zoë's \"Mac\" \\ {i}</string>\n\t<key>MessageType</key>\n\t<string>Authenticate</string>\n\t<key>Model</key>\n\t<string>MacBookPro18,3</string>\n\t<key>ModelName</key>\n\t<string>MacBook Pro</string>\n\t<key>OSVersion</key>\n\t<string>15.1</string>\n\t<key>ProductName</key>\n\t<string>MacBookPro18,3</string>\n\t<key>SerialNumber</key>\n\t<string>{serial}</string>\n\t<key>Topic</key>\n\t<string>{topic}</string>\n\t<key>UDID</key>\n\t<string>{udid}</string>\n</dict>\n</plist>\n"
            );
            let push_magic = format!("{:08X}-0000-4000-8000-{:012X}", rand_u32(), i);
            let token: Vec<u8> = (0..32u8)
                .map(|b| b.wrapping_mul(7).wrapping_add(i as u8))
                .collect();
            let token_update = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\">\n<dict>\n\t<key>MessageType</key>\n\t<string>TokenUpdate</string>\n\t<key>PushMagic</key>\n\t<string>{push_magic}</string>\n\t<key>Token</key>\n\t<data>{}</data>\n\t<key>Topic</key>\n\t<string>{topic}</string>\n\t<key>UDID</key>\n\t<string>{udid}</string>\n</dict>\n</plist>\n",
                base64_encode(&token)
            );
            let user = (i == 0).then(|| {
                let uid = format!("{:08X}-AAAA-4000-8000-000000000501", rand_u32());
                let magic = format!("{:08X}-USER-MAGIC", rand_u32());
                let utoken: Vec<u8> = (0..32u8).map(|b| b ^ 0x5a).collect();
                let raw = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\">\n<dict>\n\t<key>MessageType</key>\n\t<string>TokenUpdate</string>\n\t<key>UserID</key>\n\t<string>{uid}</string>\n\t<key>UserShortName</key>\n\t<string>zoe</string>\n\t<key>UDID</key>\n\t<string>{udid}</string>\n</dict>\n</plist>\n"
                );
                (uid, "zoe".to_string(), "Zoë O'Neil".to_string(), raw, magic, utoken)
            });
            devices.push(Device {
                udid,
                serial,
                cert_pem,
                sha256,
                not_after,
                unlock_token,
                authenticate,
                token_update,
                bootstrap: (i % 2 == 0).then(|| vec![0xde, 0xad, 0xbe, 0xef, i as u8]),
                push_magic,
                token,
                enabled: i != 1,
                user,
            });
        }
        Fleet {
            topic,
            ca,
            ca_key,
            push_cert,
            push_key,
            devices,
            commands: 3,
        }
    }

    /// INSERT statements in either dialect (hex everywhere, so no escaping can go wrong here).
    pub fn inserts(&self, pg: bool) -> String {
        let text = |s: &str| {
            if pg {
                format!("convert_from(decode('{}', 'hex'), 'UTF8')", hex::encode(s))
            } else {
                format!("X'{}'", hex::encode(s))
            }
        };
        let blob = |b: &[u8]| {
            if pg {
                format!("decode('{}', 'hex')", hex::encode(b))
            } else {
                format!("X'{}'", hex::encode(b))
            }
        };
        let (t, f) = if pg { ("TRUE", "FALSE") } else { ("1", "0") };
        let mut sql = String::new();
        for d in &self.devices {
            let bs = match &d.bootstrap {
                Some(b) => text(&base64_encode(b)),
                None => "NULL".into(),
            };
            sql += &format!(
                "INSERT INTO devices (id, identity_cert, serial_number, unlock_token, authenticate, authenticate_at, token_update, bootstrap_token_b64) VALUES ({}, {}, {}, {}, {}, '{LAST_SEEN}', {}, {bs});\n",
                text(&d.udid),
                text(&d.cert_pem),
                text(&d.serial),
                blob(&d.unlock_token),
                text(&d.authenticate),
                text(&d.token_update),
            );
            sql += &format!(
                "INSERT INTO cert_auth_associations (id, sha256) VALUES ({}, '{}');\n",
                text(&d.udid),
                d.sha256
            );
            sql += &format!(
                "INSERT INTO enrollments (id, device_id, type, topic, push_magic, token_hex, enabled, last_seen_at) VALUES ({0}, {0}, 'Device', '{1}', {2}, '{3}', {4}, '{LAST_SEEN}');\n",
                text(&d.udid),
                self.topic,
                text(&d.push_magic),
                hex::encode(&d.token),
                if d.enabled { t } else { f },
            );
            if let Some((uid, short, long, raw, magic, tok)) = &d.user {
                sql += &format!(
                    "INSERT INTO users (id, device_id, user_short_name, user_long_name, token_update) VALUES ({}, {}, {}, {}, {});\n",
                    text(uid),
                    text(&d.udid),
                    text(short),
                    text(long),
                    text(raw)
                );
                sql += &format!(
                    "INSERT INTO enrollments (id, device_id, user_id, type, topic, push_magic, token_hex, enabled, last_seen_at) VALUES ({}, {}, {}, 'User', '{}', {}, '{}', {t}, '{LAST_SEEN}');\n",
                    text(&format!("{}:{uid}", d.udid)),
                    text(&d.udid),
                    text(uid),
                    self.topic,
                    text(magic),
                    hex::encode(tok),
                );
            }
        }
        for c in 0..self.commands {
            let uuid = format!("cmd-{c}-{}", rand_u32());
            sql += &format!(
                "INSERT INTO commands (command_uuid, request_type, command) VALUES ('{uuid}', 'DeviceInformation', '<?xml version=\"1.0\"?><plist/>');\n"
            );
            sql += &format!(
                "INSERT INTO enrollment_queue (id, command_uuid) VALUES ({}, '{uuid}');\n",
                text(&self.devices[0].udid)
            );
        }
        sql += &format!(
            "INSERT INTO push_certs (topic, cert_pem, key_pem, stale_token) VALUES ('{}', {}, {}, 1);\n",
            self.topic,
            text(&String::from_utf8(self.push_cert.to_pem().unwrap()).unwrap()),
            text(&String::from_utf8(self.push_key.private_key_to_pem_pkcs8().unwrap()).unwrap()),
        );
        sql
    }

    pub fn enrollment_count(&self) -> u64 {
        self.devices.len() as u64 + self.devices.iter().filter(|d| d.user.is_some()).count() as u64
    }
}

pub fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub fn run_stdin(cmd: &mut Command, input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A MariaDB database of its own, dropped when the test ends.
pub struct MyDb {
    pub name: String,
    pub host: String,
    pub port: String,
    pub user: String,
}

impl MyDb {
    pub fn create() -> Option<Self> {
        let Ok(url) = std::env::var("MDMCTL_TEST_MYSQL_URL") else {
            eprintln!("skipping the MariaDB run: MDMCTL_TEST_MYSQL_URL is not set");
            return None;
        };
        let rest = url.split_once("://").map(|r| r.1).unwrap_or(&url);
        let hostpart = rest.split('/').next().unwrap_or("");
        let (user, hp) = hostpart.rsplit_once('@').unwrap_or(("root", hostpart));
        let (host, port) = hp.split_once(':').unwrap_or((hp, "3306"));
        let db = MyDb {
            name: format!("nano_t_{}", uuid_simple()),
            host: host.into(),
            port: port.into(),
            user: user.split(':').next().unwrap_or("root").into(),
        };
        db.mysql(&format!("CREATE DATABASE {}", db.name), false);
        Some(db)
    }

    fn base(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.arg(format!("--host={}", self.host))
            .arg(format!("--port={}", self.port))
            .arg(format!("--user={}", self.user));
        c
    }

    pub fn mysql(&self, sql: &str, in_db: bool) {
        let mut c = self.base("mysql");
        if in_db {
            c.arg(&self.name);
        }
        run_stdin(&mut c, sql);
    }

    pub fn load(&self, fleet: &Fleet) {
        self.mysql(MYSQL_DDL, true);
        self.mysql(&fleet.inserts(false), true);
    }

    pub fn dump(&self, opts: &[&str], out: &Path) {
        let o = self
            .base("mysqldump")
            .args(opts)
            .arg(&self.name)
            .output()
            .expect("run mysqldump");
        assert!(
            o.status.success(),
            "mysqldump: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::write(out, o.stdout).unwrap();
    }

    pub fn url(&self) -> String {
        format!(
            "mysql://{}@{}:{}/{}",
            self.user, self.host, self.port, self.name
        )
    }
}

impl Drop for MyDb {
    fn drop(&mut self) {
        let _ = self
            .base("mysql")
            .arg("-e")
            .arg(format!("DROP DATABASE IF EXISTS {}", self.name))
            .output();
    }
}

/// A PostgreSQL database of its own, dropped when the test ends.
pub struct PgDb {
    pub base_url: String,
    pub name: String,
}

impl PgDb {
    pub fn create() -> Option<Self> {
        let Ok(base_url) = std::env::var("MDMCTL_TEST_POSTGRES_URL") else {
            eprintln!("skipping the PostgreSQL run: MDMCTL_TEST_POSTGRES_URL is not set");
            return None;
        };
        let name = format!("nano_t_{}", uuid_simple());
        let mut c = postgres::Client::connect(&base_url, postgres::NoTls).unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        Some(Self { base_url, name })
    }

    pub fn url(&self) -> String {
        let (head, _) = self.base_url.rsplit_once('/').unwrap();
        format!("{head}/{}", self.name)
    }

    pub fn load(&self, fleet: &Fleet) {
        let mut c = postgres::Client::connect(&self.url(), postgres::NoTls).unwrap();
        c.batch_execute(PG_DDL).unwrap();
        c.batch_execute(&fleet.inserts(true)).unwrap();
    }

    pub fn dump(&self, opts: &[&str], out: &Path) {
        let o = Command::new("pg_dump")
            .args(opts)
            .arg("-d")
            .arg(self.url())
            .output()
            .expect("run pg_dump");
        assert!(
            o.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::write(out, o.stdout).unwrap();
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.base_url, postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

fn uuid_simple() -> String {
    let mut b = [0u8; 8];
    openssl::rand::rand_bytes(&mut b).unwrap();
    hex::encode(b)
}
