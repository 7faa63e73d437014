//! The whole migration as an admin runs it: an old NanoMDM's database in the local MariaDB,
//! dumped with the real `mysqldump`, imported with `mdmctl import-devices`, then the
//! `mdmctl serve` binary answering at the same URL. Every Mac checks in with the identity the
//! old CA issued and the push token the old server recorded, gets a pushed command and
//! acknowledges it, without re-enrolling; impostors are refused and change nothing.

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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nanomdm_fleet_moves_from_a_mysqldump_without_re_enrolling() {
    if std::env::var("MDMCTL_TEST_MYSQL_URL").is_err() {
        eprintln!("SKIP: set MDMCTL_TEST_MYSQL_URL to run against the local MariaDB");
        return;
    }
    const MACS: usize = 12;
    let t = TestContext::new();
    t.init();
    // The DNS name the Macs were enrolled to: after the cutover, mdmctl answers there.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let apple = FakeApple::new().unwrap();
    let old = OldNanoMdm::new(&apple, &url, MACS, 200, http_client(&[]).unwrap(), &[]).unwrap();

    // The old server's database, in MariaDB, dumped by the real mysqldump.
    let db = MariaDb::create();
    let mut generated = Vec::new();
    old.write_mysqldump(&mut generated).unwrap();
    mysql(&[&db.name], Some(&generated));
    let dump = Command::new("mysqldump")
        .args([
            "-h",
            "127.0.0.1",
            "-u",
            "root",
            "--single-transaction",
            &db.name,
        ])
        .output()
        .expect("run mysqldump");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    t.write("nanomdm.sql", &dump.stdout);
    old.write_scep_depot(&t.path("old-scep-depot")).unwrap();

    let summary = t
        .run(&[
            "--format",
            "json",
            "import-devices",
            "nanomdm.sql",
            "--scep-depot",
            "old-scep-depot",
        ])
        .success()
        .json();
    assert_eq!(summary["devices"]["imported"], MACS, "{summary}");
    assert_eq!(summary["enrollments"]["imported"], MACS, "{summary}");
    t.run(&["get", "mdm-apple"])
        .success()
        .stdout_has(&old.topic);

    // Cutover: serve at the same URL, pushing through the APNs stand-in with the old certificate.
    let apns = ApnsStandIn::start(apple.ca_cert.clone(), StandInConfig::default())
        .await
        .unwrap();
    t.write("apns-ca.pem", apns.server_ca_pem().unwrap());
    let apns_url = apns.base_url();
    let apns_ca = t.path("apns-ca.pem");
    let listen = format!("127.0.0.1:{port}");
    let serve = Serve::spawn(
        &t,
        &["--url", &url, "--listen", &listen],
        &[
            ("MDMCTL_APNS_URL", &apns_url),
            ("MDMCTL_APNS_CA_FILE", apns_ca.to_str().unwrap()),
        ],
    );
    let fleet = Fleet::new(old.devices.iter().cloned());
    let waker = fleet.wake_on_push(apns.subscribe());

    // Every Mac's first Idle, signed with its old identity, is accepted.
    for mac in &old.devices {
        assert_eq!(mac.session().await.unwrap(), 200, "{}", mac.udid);
    }
    let migrated = t
        .run(&["--format", "json", "get", "devices", "--migrated", "true"])
        .success()
        .json();
    assert_eq!(migrated.as_array().unwrap().len(), MACS);

    // A command to the whole fleet: queued, pushed to the old tokens, acknowledged.
    let udids: Vec<String> = old.devices.iter().map(|d| d.udid.clone()).collect();
    let mut args = vec!["--format", "json", "mdm", "device-information"];
    for u in &udids {
        args.extend(["--udid", u.as_str()]);
    }
    let token = t
        .run(&["token", "create", "--name", "cutover"])
        .success()
        .stdout
        .trim()
        .to_string();
    let sent = t
        .run_with(&args, |c| {
            c.env("MDMCTL_SERVER", &url).env("MDMCTL_API_TOKEN", &token);
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
        http_client(&[]).unwrap(),
        &[],
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
        http_client(&[]).unwrap(),
        &[],
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
        http_client(&[]).unwrap(),
        &[],
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
