//! The whole migration as an admin runs it, following the README's quickstart: an old NanoMDM
//! whose SCEP CA and device identities were made by the real micromdm/scep, its database in the
//! local MariaDB dumped with the real `mysqldump`, imported with `mdmctl import-devices
//! --scep-depot`, then the `mdmctl serve` binary answering at the same URL over TLS. Every Mac
//! checks in with the identity the old CA issued and the push token the old server recorded,
//! gets a pushed command and acknowledges it, without re-enrolling; impostors are refused and
//! change nothing.

use std::io::Write;
use std::process::{Command, Stdio};

use mdmctl::sim::apns::{ApnsStandIn, StandInConfig};
use mdmctl::sim::apple::FakeApple;
use mdmctl::sim::device::{Endpoint, Fleet, IdentityMode, SimDevice, http_client};
use mdmctl::sim::nanomdm::OldNanoMdm;

use crate::binary::Serve;
use crate::common::TestContext;
use crate::enrollment::wait_until;
use crate::harness::Ca;

/// A MariaDB database that is dropped when the test ends, pass or fail.
struct MariaDb {
    name: String,
}

fn mysql(args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    let mut c = Command::new("mysql");
    c.args(["-h", "127.0.0.1", "-P", "3306", "-u", "root"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .expect("run mysql (apt-get install mariadb-client)");
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mysql {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl MariaDb {
    fn create() -> Self {
        let name = format!(
            "mdmctl_migration_{}_{}",
            std::process::id(),
            crate::common::rand_serial()
        );
        mysql(&["-e", &format!("CREATE DATABASE `{name}`")], None);
        Self { name }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = Command::new("mysql")
            .args(["-h", "127.0.0.1", "-u", "root", "-e"])
            .arg(format!("DROP DATABASE IF EXISTS `{}`", self.name))
            .output();
    }
}

/// `examples/gitops`, the README's `apply -f` argument.
fn examples() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/examples/gitops").to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TLS certificate for `127.0.0.1` from a private CA (made with the openssl CLI), as the
/// README's `serve --tls-cert mdm.pem --tls-key mdm.key` takes: `(ca.pem, mdm.pem, mdm.key)`.
fn server_tls(t: &TestContext) -> openssl::x509::X509 {
    t.openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "tls-ca.key",
        "-out",
        "tls-ca.pem",
        "-subj",
        "/CN=Example Inc private root",
        "-days",
        "30",
    ]);
    t.openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "mdm.key",
        "-out",
        "mdm.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    t.write("san.ext", "subjectAltName=IP:127.0.0.1\n");
    t.openssl(&[
        "x509",
        "-req",
        "-in",
        "mdm.csr",
        "-CA",
        "tls-ca.pem",
        "-CAkey",
        "tls-ca.key",
        "-CAcreateserial",
        "-days",
        "30",
        "-extfile",
        "san.ext",
        "-out",
        "mdm.pem",
    ]);
    openssl::x509::X509::from_pem(&t.read("tls-ca.pem")).unwrap()
}

// See: issue 10 §5: the README's cutover, step by step as written, on the inputs a real NanoMDM
// deployment has: a depot made by micromdm/scep's `scepserver ca -init` (its `ca.key`
// 3DES-encrypted under the empty password), device identities issued by that `scepserver` to
// `scepclient`, the database in MariaDB dumped by the real `mysqldump` and gzipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_cutover_moves_a_real_nanomdm_fleet_without_re_enrolling() {
    if std::env::var("MDMCTL_TEST_MYSQL_URL").is_err() {
        eprintln!("SKIP: set MDMCTL_TEST_MYSQL_URL to run against the local MariaDB");
        return;
    }
    const MACS: usize = 8;
    let t = TestContext::new();
    // The old SCEP server, as NanoMDM's docs set it up, and the Macs it enrolled.
    let Some(depot) = crate::common::real_scep::Depot::init(&t.path("depot"), None) else {
        return;
    };
    let identities: Vec<_> = {
        let scep = depot.serve("nanomdm-challenge");
        (1..=MACS)
            .map(|n| scep.enroll(&t.path("old-macs"), &format!("C02SIM{n:06}")))
            .collect()
    };
    // The DNS name the Macs were enrolled to: after the cutover, mdmctl answers there.
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let tls_root = server_tls(&t);
    let roots = [tls_root];
    let apple = FakeApple::new().unwrap();
    let old = OldNanoMdm::with_old_ca(
        &apple,
        &url,
        depot.ca_cert(),
        depot.ca_key(),
        identities,
        http_client(&roots).unwrap(),
        &roots,
    )
    .unwrap();

    // The old server's database, in MariaDB, dumped by the real mysqldump and gzipped.
    let db = MariaDb::create();
    let mut generated = Vec::new();
    old.write_mysqldump(&mut generated).unwrap();
    mysql(&[&db.name], Some(&generated));
    let dump = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "mysqldump -h 127.0.0.1 -u root --single-transaction {} | gzip > nanomdm.sql.gz",
            db.name
        ))
        .current_dir(t.path(""))
        .status()
        .expect("run mysqldump");
    assert!(dump.success());

    // README, Quickstart: `mdmctl init`.
    t.init();
    // The push certificate: a CSR, renewed at Apple's portal for the old certificate's topic.
    let next = t
        .run(&[
            "generate",
            "mdm-apple",
            "--email",
            "it@example.com",
            "--org",
            "Example Inc",
        ])
        .success()
        .stdout
        .clone();
    assert!(next.contains("identity.apple.com"), "{next}");
    let csr = openssl::x509::X509Req::from_pem(&t.read("mdm-apple-apns.csr")).unwrap();
    let renewed = apple.issue_push_cert(&csr, &old.topic, 365).unwrap();
    t.write("MDM_Example_Certificate.pem", renewed.to_pem().unwrap());
    t.run(&[
        "set",
        "mdm-apple",
        "--apns-cert",
        "MDM_Example_Certificate.pem",
    ])
    .success();
    // The old MDM's devices, push tokens and identity hashes (and its SCEP CA).
    let dry = t
        .run(&[
            "--format",
            "json",
            "import-devices",
            "nanomdm.sql.gz",
            "--scep-depot",
            "depot",
            "--dry-run",
        ])
        .success()
        .json();
    assert_eq!(dry["devices"]["imported"], MACS, "{dry}");
    let summary = t
        .run(&[
            "--format",
            "json",
            "import-devices",
            "nanomdm.sql.gz",
            "--scep-depot",
            "depot",
        ])
        .success()
        .json();
    assert_eq!(summary["devices"]["imported"], MACS, "{summary}");
    assert_eq!(summary["enrollments"]["imported"], MACS, "{summary}");
    let outcomes: Vec<String> = summary["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{} {}", a["kind"], a["outcome"]))
        .collect();
    assert!(
        outcomes
            .iter()
            .any(|o| o.contains("scep_ca") && o.contains("imported")),
        "the real depot's CA is imported: {outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .any(|o| o.contains("apns") && o.contains("kept newer")),
        "the renewed push certificate stays: {outcomes:?}"
    );
    t.run(&["get", "devices"])
        .success()
        .stdout_has("C02SIM000001");
    t.run(&["get", "mdm-apple"])
        .success()
        .stdout_has(&old.topic);
    t.run(&["apply", "-f", &examples(), "--dry-run"]).success();
    t.run(&["apply", "-f", &examples()]).success();

    // Cutover: serve at the same URL with TLS, pushing through the APNs stand-in.
    let apns = ApnsStandIn::start(apple.ca_cert.clone(), StandInConfig::default())
        .await
        .unwrap();
    t.write("apns-ca.pem", apns.server_ca_pem().unwrap());
    let apns_url = apns.base_url();
    let apns_ca = t.path("apns-ca.pem");
    let listen = format!("127.0.0.1:{port}");
    let serve = Serve::spawn(
        &t,
        &[
            "--url",
            &url,
            "--tls-cert",
            "mdm.pem",
            "--tls-key",
            "mdm.key",
            "--listen",
            &listen,
        ],
        &[
            ("MDMCTL_APNS_URL", &apns_url),
            ("MDMCTL_APNS_CA_FILE", apns_ca.to_str().unwrap()),
        ],
    );
    let fleet = Fleet::new(old.devices.iter().cloned());
    let waker = fleet.wake_on_push(apns.subscribe());

    // Every Mac's first Idle, signed with the identity the real scepserver issued, is accepted.
    for mac in &old.devices {
        assert_eq!(mac.session().await.unwrap(), 200, "{}", mac.udid);
    }
    let migrated = t
        .run(&["--format", "json", "get", "devices", "--migrated", "true"])
        .success()
        .json();
    assert_eq!(migrated.as_array().unwrap().len(), MACS);

    // `mdmctl token create --name ci --role maintainer`, then a command through the server, by serial number.
    let token = t
        .run(&["token", "create", "--name", "ci", "--role", "maintainer"])
        .success()
        .stdout
        .trim()
        .to_string();
    let mut args = vec!["--format", "json", "mdm", "device-information"];
    let serials: Vec<String> = old.devices.iter().map(|d| d.serial.clone()).collect();
    for s in &serials {
        args.extend(["--serial", s.as_str()]);
    }
    let sent = t
        .run_with(&args, |c| {
            c.env("MDMCTL_SERVER", &url)
                .env("MDMCTL_API_TOKEN", &token)
                // The server's private TLS root, as OpenSSL reads it.
                .env("SSL_CERT_FILE", t.path("tls-ca.pem"));
        })
        .success()
        .json();
    assert_eq!(sent["push"]["delivered"], MACS, "{sent}");
    let uuid = sent["command_uuid"].as_str().unwrap().to_string();
    wait_until(|| {
        let st = t.run(&["--format", "json", "get", "commands", "--command", &uuid]);
        st.code == 0
            && st
                .json()
                .as_array()
                .is_some_and(|a| a.len() == MACS && a.iter().all(|e| e["status"] == "acknowledged"))
    })
    .await;
    for mac in &old.devices {
        assert!(
            mac.handled()
                .iter()
                .any(|h| h.request_type == "DeviceInformation" && h.status == "Acknowledged"),
            "{} answered through its old push token",
            mac.udid
        );
    }

    // Impostors: an identity from an unknown CA, an expired one from the old CA, another Mac's
    // certificate for a new UDID, and a body that does not match its signature. Refused with 403/400, never 401.
    let stranger_ca = Ca::new("Stranger CA");
    let (cert, key) = stranger_ca.issue("stranger", -1, 30);
    let endpoint = Endpoint {
        server_url: format!("{url}/mdm"),
        check_in_url: format!("{url}/mdm"),
        topic: old.topic.clone(),
    };
    let stranger = SimDevice::new(
        900,
        "15.1",
        IdentityMode::Signature,
        http_client(&roots).unwrap(),
        &roots,
    )
    .unwrap()
    .with_identity(cert, key, endpoint.clone())
    .unwrap();
    assert_eq!(stranger.session().await.unwrap(), 403);
    // An expired certificate from the old CA itself.
    let old_ca = Ca {
        cert: old.ca_cert.clone(),
        key: old.ca_key.clone(),
    };
    let (cert, key) = old_ca.issue("expired", -400, -35);
    let expired = SimDevice::new(
        902,
        "15.1",
        IdentityMode::Signature,
        http_client(&roots).unwrap(),
        &roots,
    )
    .unwrap()
    .with_identity(cert, key, endpoint.clone())
    .unwrap();
    assert_eq!(expired.session().await.unwrap(), 403);
    let victim = &old.devices[0];
    let copycat = SimDevice::new(
        901,
        "15.1",
        IdentityMode::Signature,
        http_client(&roots).unwrap(),
        &roots,
    )
    .unwrap()
    .with_identity(victim.identity().unwrap(), victim.key().clone(), endpoint)
    .unwrap();
    assert_eq!(copycat.session().await.unwrap(), 403);
    let signed_for = victim.idle_body();
    let headers = victim.identity_headers(&signed_for).unwrap();
    let mut tampered = victim.idle_body();
    tampered.extend_from_slice(b"<!-- tampered -->");
    let (status, _) = victim.send_with(false, tampered, headers).await.unwrap();
    assert!(
        status == 400 || status == 403,
        "tampered body answered {status}"
    );
    let after = t
        .run(&["--format", "json", "get", "device", &victim.udid])
        .success()
        .json();
    assert_eq!(
        after["identity_sha256"],
        victim.identity_sha256().unwrap().as_str()
    );
    t.run(&["get", "device", "C02SIM000900"]).user_error();

    waker.abort();
    let (code, log) = serve.term();
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains(&victim.push_magic), "push magic never logged");
    apns.shutdown().await;
}
