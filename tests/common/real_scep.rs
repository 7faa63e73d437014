//! The old SCEP CA as it is in the field: made by the real micromdm/scep (Debian's `scep`
//! package). `scepserver ca -init` writes the depot (`ca.pem`, and `ca.key` 3DES-encrypted under
//! the empty password unless `-key-password` is given), `scepserver` serves it, and `scepclient`
//! enrolls device keys against it, so the identities the tests' devices carry were issued by
//! the real program from that real depot.
//!
//! Without the tools a test prints `SKIP` on stderr and returns; CI sets
//! `SCEP_INTEROP_REQUIRED=1` (and `.ci/run` installs `scep`), which turns a missing tool into a
//! failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

pub const SCEPSERVER: &str = "/usr/bin/scepserver";
pub const SCEPCLIENT: &str = "/usr/bin/scepclient";

/// Whether micromdm/scep is installed; prints why not (or panics when CI requires it).
pub fn available() -> bool {
    if Path::new(SCEPSERVER).is_file() && Path::new(SCEPCLIENT).is_file() {
        return true;
    }
    let msg =
        "SKIP: micromdm/scep is not installed (Debian package `scep`: apt-get install -y scep)";
    if std::env::var("SCEP_INTEROP_REQUIRED").is_ok_and(|v| v == "1") {
        panic!("{msg} and SCEP_INTEROP_REQUIRED=1");
    }
    eprintln!("{msg}");
    false
}

/// A depot made by `scepserver ca -init`.
pub struct Depot {
    pub dir: PathBuf,
    pub key_password: Option<String>,
}

impl Depot {
    /// `scepserver ca -init -keySize 2048 -depot DIR [-key-password PW]`; `None` when the tool
    /// is missing (see [`available`]).
    pub fn init(dir: &Path, key_password: Option<&str>) -> Option<Self> {
        if !available() {
            return None;
        }
        let mut c = Command::new(SCEPSERVER);
        c.args(["ca", "-init", "-keySize", "2048", "-depot"])
            .arg(dir)
            .args(["-organization", "Example Inc (old MDM)"]);
        if let Some(p) = key_password {
            c.args(["-key-password", p]);
        }
        let out = c.output().expect("run scepserver ca -init");
        assert!(
            out.status.success(),
            "scepserver ca -init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Self {
            dir: dir.to_path_buf(),
            key_password: key_password.map(str::to_string),
        })
    }

    pub fn ca_cert(&self) -> X509 {
        X509::from_pem(&std::fs::read(self.dir.join("ca.pem")).unwrap()).unwrap()
    }

    /// The CA key, decrypted as the depot's password opens it.
    pub fn ca_key(&self) -> PKey<Private> {
        let pem = std::fs::read(self.dir.join("ca.key")).unwrap();
        PKey::private_key_from_pem_passphrase(
            &pem,
            self.key_password.as_deref().unwrap_or("").as_bytes(),
        )
        .unwrap()
    }

    /// `scepserver -depot DIR -port PORT -challenge CHALLENGE [-capass PW]`, until dropped.
    pub fn serve(&self, challenge: &str) -> Running {
        let port = free_port();
        let mut c = Command::new(SCEPSERVER);
        c.args([
            "-port",
            &port.to_string(),
            "-challenge",
            challenge,
            "-depot",
        ])
        .arg(&self.dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if let Some(p) = &self.key_password {
            c.args(["-capass", p]);
        }
        let child = c.spawn().expect("spawn scepserver");
        let running = Running {
            child,
            url: format!("http://127.0.0.1:{port}/scep"),
            challenge: challenge.to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "scepserver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        running
    }
}

/// A `scepserver` process, killed when dropped.
pub struct Running {
    child: Child,
    pub url: String,
    pub challenge: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Enroll one device with `scepclient` (it makes the device's key): the identity the old
    /// server issued, and its key.
    pub fn enroll(&self, work: &Path, cn: &str) -> (X509, PKey<Private>) {
        // Its own directory: scepclient keeps `self.pem`/`csr.pem` in its working directory.
        let dir = work.join(cn);
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("device.key");
        let cert = dir.join("device.pem");
        let out = Command::new(SCEPCLIENT)
            .current_dir(&dir)
            .args(["-server-url", &self.url, "-challenge", &self.challenge])
            .args([
                "-cn",
                cn,
                "-organization",
                "Example Inc",
                "-keySize",
                "2048",
            ])
            .arg("-private-key")
            .arg(&key)
            .arg("-certificate")
            .arg(&cert)
            .output()
            .expect("run scepclient");
        assert!(
            out.status.success(),
            "scepclient for {cn}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let key = PKey::private_key_from_pem(&std::fs::read(&key).unwrap()).unwrap();
        let cert = X509::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
        (cert, key)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
