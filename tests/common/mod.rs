//! Shared test support: a temporary working directory with a clean environment, the mdmctl
//! binary, the real `openssl` command line, and per-test PostgreSQL schemas.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

pub const PASSPHRASE: &str = "correct horse battery staple";

/// A temporary directory that tests run mdmctl and openssl in.
pub struct TestContext {
    pub dir: TempDir,
}

/// What a command printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn success(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// A user error: exit 1, exactly one `error:` line and one `hint:` line on stderr.
    #[track_caller]
    pub fn user_error(&self) -> &Self {
        assert_eq!(
            self.code, 1,
            "expected exit 1\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:") || l.starts_with("hint:"))
            .collect();
        assert_eq!(
            lines.len(),
            2,
            "expected one error line and one hint line:\n{}",
            self.stderr
        );
        assert!(
            lines[0].starts_with("error: ") && lines[1].starts_with("hint: "),
            "{}",
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}:\n{}",
            self.stdout
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

impl TestContext {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn db(&self) -> PathBuf {
        self.path("mdmctl.db")
    }

    /// `mdmctl` in the temp dir with a clean environment: the store is `mdmctl.db` there and
    /// the passphrase comes from `MDMCTL_PASSPHRASE`.
    pub fn mdmctl(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mdmctl"));
        c.current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("USER", "tester")
            .env("NO_COLOR", "1")
            .env("MDMCTL_DB", self.db())
            .env("MDMCTL_PASSPHRASE", PASSPHRASE);
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.mdmctl().args(args).output().expect("run mdmctl"))
    }

    pub fn run_with(&self, args: &[&str], f: impl FnOnce(&mut Command)) -> Run {
        let mut c = self.mdmctl();
        c.args(args);
        f(&mut c);
        Run::from(c.output().expect("run mdmctl"))
    }

    pub fn init(&self) {
        self.run(&["init"]).success();
    }

    /// Run the real `openssl` in the temp dir; panics with its stderr on failure.
    #[track_caller]
    pub fn openssl(&self, args: &[&str]) -> Run {
        let r = Run::from(
            Command::new("openssl")
                .current_dir(self.dir.path())
                .args(args)
                .output()
                .expect("run openssl"),
        );
        assert_eq!(r.code, 0, "openssl {args:?} failed:\n{}", r.stderr);
        r
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
    }

    pub fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create parent directories");
        }
        std::fs::write(&p, bytes).expect("write");
        p
    }

    pub fn exists(&self, name: &str) -> bool {
        self.path(name).exists()
    }

    /// A pretend Apple CA (made with the openssl CLI) that signs push CSRs and vendor CSRs.
    pub fn fake_apple(&self) {
        if !self.exists("apple-ca.crt") {
            self.openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "apple-ca.key",
                "-out",
                "apple-ca.crt",
                "-subj",
                "/CN=Test Apple Application Integration CA/O=Test/C=US",
                "-days",
                "30",
            ]);
        }
    }

    /// Sign `csr` as Apple's portal would, with the push topic in the subject's UID.
    pub fn apple_signs(&self, csr: &str, topic: &str, days: i64, out: &str) {
        self.fake_apple();
        let uuid = topic.rsplit('.').next().unwrap_or(topic);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            "apple-ca.crt",
            "-CAkey",
            "apple-ca.key",
            "-set_serial",
            &format!("{}", rand_serial()),
            "-days",
            &days.to_string(),
            "-subj",
            &format!("/UID={topic}/CN=APSP:{uuid}/C=US"),
            "-out",
            out,
        ]);
    }
}

pub fn rand_serial() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    (n as u64 ^ std::process::id() as u64) & 0x7fff_ffff_ffff
}

pub fn topic(n: u32) -> String {
    format!("com.apple.mgmt.External.00000000-0000-4000-8000-{n:012}")
}

/// Whether bytes contain a string.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A schema of its own in the test PostgreSQL, dropped when the test ends.
pub struct PgSchema {
    pub base_url: String,
    pub schema: String,
}

impl PgSchema {
    /// `None` (and a note on stderr) when `MDMCTL_TEST_POSTGRES_URL` is not set.
    pub fn create() -> Option<Self> {
        blocking(Self::create_here)
    }

    fn create_here() -> Option<Self> {
        let Ok(base_url) = std::env::var("MDMCTL_TEST_POSTGRES_URL") else {
            eprintln!("skipping the PostgreSQL run: MDMCTL_TEST_POSTGRES_URL is not set");
            return None;
        };
        let schema = format!("mdmctl_t_{}", uuid::Uuid::new_v4().simple());
        let mut c = postgres::Client::connect(&base_url, postgres::NoTls)
            .expect("connect to MDMCTL_TEST_POSTGRES_URL");
        c.batch_execute(&format!("CREATE SCHEMA {schema}"))
            .expect("create schema");
        Some(Self { base_url, schema })
    }

    /// A URL whose connections see only this schema.
    pub fn url(&self) -> String {
        let sep = if self.base_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{sep}options=-c%20search_path%3D{}",
            self.base_url, self.schema
        )
    }

    /// A client on this schema (on a multi-threaded runtime's worker, call it in
    /// `tokio::task::block_in_place`, as the synchronous client needs).
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url(), postgres::NoTls).expect("connect")
    }

    /// The schema's contents as the real `pg_dump` writes them.
    pub fn dump(&self) -> Vec<u8> {
        let out = Command::new("pg_dump")
            .args([
                "--data-only",
                "--schema",
                &self.schema,
                "-d",
                &self.base_url,
            ])
            .output()
            .expect("run pg_dump");
        assert!(
            out.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        blocking(|| self.drop_schema());
    }
}

impl PgSchema {
    fn drop_schema(&self) {
        if let Ok(mut c) = postgres::Client::connect(&self.base_url, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
        }
    }
}

/// Run synchronous PostgreSQL client code from a test, async (multi-threaded runtime) or not:
/// the client blocks on a runtime of its own, which must not nest in a worker's.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Every byte of a SQLite store, WAL included.
pub fn sqlite_bytes(db: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        if let Ok(b) = std::fs::read(PathBuf::from(p)) {
            all.extend(b);
        }
    }
    all
}

/// A Configuration profile with one payload, as an admin would export it.
pub fn profile(id: &str, name: &str, ptype: &str, body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>PayloadContent</key>
	<array>
		<dict>
			<key>PayloadIdentifier</key>
			<string>{id}.payload</string>
			<key>PayloadType</key>
			<string>{ptype}</string>
			<key>PayloadUUID</key>
			<string>{id}-payload-uuid</string>
			<key>PayloadVersion</key>
			<integer>1</integer>
			{body}
		</dict>
	</array>
	<key>PayloadDisplayName</key>
	<string>{name}</string>
	<key>PayloadIdentifier</key>
	<string>{id}</string>
	<key>PayloadType</key>
	<string>Configuration</string>
	<key>PayloadUUID</key>
	<string>{id}-uuid</string>
	<key>PayloadVersion</key>
	<integer>1</integer>
</dict>
</plist>
"#
    )
}

pub fn wifi(id: &str, name: &str, ssid: &str) -> String {
    profile(
        id,
        name,
        "com.apple.wifi.managed",
        &format!("<key>SSID_STR</key><string>{ssid}</string><key>AutoJoin</key><true/>"),
    )
}
pub mod real_scep;
