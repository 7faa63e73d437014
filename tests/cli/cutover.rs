//! `mdmctl cutover check`: a store with gaps says no-go, each gap with its hint; the same store
//! with serve's configuration fixed says go. The network checks run against real servers on
//! this machine: a TLS server (certificates made by the `openssl` CLI) standing in for APNs and
//! for the new server's name, a plain HTTP old server, and a UDP DNS resolver stand-in.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::sync::Arc;

use mdmctl::cutover::dns;
use mdmctl::timestamp::Timestamp;
use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};

use crate::common::{TestContext, topic};

/// A private root, and a certificate for `localhost` it issued (`tls.crt`, chain in
/// `chain.pem`); a self-signed `localhost` certificate no device trusts (`stray.crt`).
fn certificates(t: &TestContext) {
    t.openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "root.key",
        "-out",
        "root.crt",
        "-subj",
        "/CN=Old MDM Private Root",
        "-days",
        "3650",
    ]);
    t.openssl(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "tls.key",
        "-out",
        "tls.csr",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost",
    ]);
    t.openssl(&[
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "root.crt",
        "-CAkey",
        "root.key",
        "-set_serial",
        "7",
        "-days",
        "200",
        "-copy_extensions",
        "copy",
        "-out",
        "tls.crt",
    ]);
    let chain = [t.read("tls.crt"), t.read("root.crt")].concat();
    t.write("chain.pem", chain);
    t.openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "stray.key",
        "-out",
        "stray.crt",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost",
        "-days",
        "200",
    ]);
}

/// A TLS server presenting `tls.crt`: each connection gets a handshake, then is closed.
fn tls_server(t: &TestContext) -> u16 {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    b.set_private_key_file(t.path("tls.key"), SslFiletype::PEM)
        .unwrap();
    b.set_certificate_chain_file(t.path("chain.pem")).unwrap();
    let acceptor = Arc::new(b.build());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let _ = acceptor.accept(s);
        }
    });
    port
}

/// An old server: answers every HTTP request with 404.
fn http_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    port
}

/// A resolver that answers every query with 192.0.2.10 (TTL 300 s).
fn dns_server() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let reply = dns::build_reply(
                &buf[..n],
                &[dns::Record {
                    address: "192.0.2.10".parse().unwrap(),
                    ttl: 300,
                }],
            );
            let _ = socket.send_to(&reply, from);
        }
    });
    port
}

/// The old enrollment profile: MDM payload at `localhost:port`, its SCEP payload, and the
/// private root it told devices to trust.
fn old_profile(t: &TestContext, port: u16) {
    use base64::Engine;
    let root = base64::engine::general_purpose::STANDARD.encode(t.read("root.crt"));
    let topic = topic(1);
    t.write(
        "old.mobileconfig",
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict>
<key>PayloadIdentifier</key><string>com.example.old.enroll</string>
<key>PayloadType</key><string>Configuration</string>
<key>PayloadUUID</key><string>6F0B3A1E-0000-4000-8000-000000000001</string>
<key>PayloadVersion</key><integer>1</integer>
<key>PayloadContent</key><array>
 <dict><key>PayloadType</key><string>com.apple.security.root</string>
  <key>PayloadIdentifier</key><string>com.example.old.root</string>
  <key>PayloadUUID</key><string>6F0B3A1E-0000-4000-8000-000000000002</string>
  <key>PayloadVersion</key><integer>1</integer>
  <key>PayloadContent</key><data>{root}</data></dict>
 <dict><key>PayloadType</key><string>com.apple.security.scep</string>
  <key>PayloadIdentifier</key><string>com.example.old.scep</string>
  <key>PayloadUUID</key><string>6F0B3A1E-0000-4000-8000-000000000003</string>
  <key>PayloadVersion</key><integer>1</integer>
  <key>PayloadContent</key><dict><key>URL</key><string>https://localhost:{port}/scep</string></dict></dict>
 <dict><key>PayloadType</key><string>com.apple.mdm</string>
  <key>PayloadIdentifier</key><string>com.example.old.mdm</string>
  <key>PayloadUUID</key><string>6F0B3A1E-0000-4000-8000-000000000004</string>
  <key>PayloadVersion</key><integer>1</integer>
  <key>ServerURL</key><string>https://localhost:{port}/mdm</string>
  <key>CheckInURL</key><string>https://localhost:{port}/old/checkin</string>
  <key>Topic</key><string>{topic}</string>
  <key>AccessRights</key><integer>8191</integer>
  <key>SignMessage</key><true/></dict>
</array></dict></plist>"#
        ),
    );
}

/// Four Macs: one ready, one with no identity hash, one whose identity expires in 10 days and
/// the old server has not seen for 60 days, one on a topic the push certificate cannot push.
fn import(t: &TestContext) {
    let now = Timestamp::now().0;
    let at = |days: i64| Timestamp(now + days * 86_400).to_string();
    let hash = |n: u8| format!("{n:02x}").repeat(32);
    let header = mdmctl::import::csv::COLUMNS
        .iter()
        .map(|(c, _)| *c)
        .collect::<Vec<_>>()
        .join(",");
    let row = |udid: &str, topic: &str, sha: &str, not_after: &str, last_seen: &str| {
        mdmctl::import::csv::COLUMNS
            .iter()
            .map(|(c, _)| match *c {
                "udid" => udid.to_string(),
                "serial" => format!("SER{}", &udid[..4]),
                "topic" => topic.to_string(),
                "push_magic" => "8B6E1E2C-0000-4000-8000-5D2B3C4D5E6F".into(),
                "token_hex" => "ab".repeat(32),
                "identity_cert_sha256" => sha.to_string(),
                "identity_not_after" => not_after.to_string(),
                "last_seen" => last_seen.to_string(),
                _ => String::new(),
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let csv = [
        header,
        row(
            "AAAA0000-0000-4000-8000-000000000001",
            &topic(1),
            &hash(1),
            &at(300),
            &at(-1),
        ),
        row(
            "BBBB0000-0000-4000-8000-000000000002",
            &topic(1),
            "",
            "",
            &at(-1),
        ),
        row(
            "CCCC0000-0000-4000-8000-000000000003",
            &topic(1),
            &hash(3),
            &at(10),
            &at(-60),
        ),
        row(
            "DDDD0000-0000-4000-8000-000000000004",
            &topic(2),
            &hash(4),
            &at(300),
            &at(-1),
        ),
    ]
    .join("\n");
    t.write("devices.csv", csv + "\n");
    t.run(&["import-devices", "devices.csv"]).success();
}

fn setup() -> TestContext {
    let t = TestContext::new();
    t.init();
    t.run(&[
        "generate",
        "mdm-apple",
        "--email",
        "it@example.com",
        "--org",
        "Acme",
    ])
    .success();
    t.apple_signs("mdm-apple-apns.csr", &topic(1), 200, "push.pem");
    t.run(&["set", "mdm-apple", "--apns-cert", "push.pem"])
        .success();
    import(&t);
    certificates(&t);
    t
}

fn status<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check `{name}` in {report:#}"))
}

#[test]
fn gaps_say_no_go_with_hints_and_a_fixed_configuration_says_go() {
    let t = setup();
    let tls = tls_server(&t);
    let old = http_server();
    let resolver = dns_server();
    old_profile(&t, tls);
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("https://localhost:{tls}");
    let upstream = format!("http://127.0.0.1:{old}");
    let resolver = format!("127.0.0.1:{resolver}");
    let common = [
        "--url",
        &url,
        "--enrollment-profile",
        "old.mobileconfig",
        "--upstream",
        &upstream,
        "--resolver",
        &resolver,
        "--apns-ca-file",
        "root.crt",
        "--timeout",
        "3",
    ];

    // As first configured: a stray TLS certificate, an old path not served, no way in for
    // the Mac without a recorded identity, APNs unreachable.
    let apns_closed = format!("https://localhost:{closed}");
    let mut args = vec![
        "--format",
        "json",
        "cutover",
        "check",
        "--tls-cert",
        "stray.crt",
        "--apns-url",
        &apns_closed,
    ];
    args.extend(common);
    let run = t.run(&args);
    assert_eq!(run.code, 1, "a failed check exits 1: {}", run.stderr);
    let r: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(r["go"], false);
    let expect = |name: &str, want: &str, needle: &str| {
        let c = status(&r, name);
        assert_eq!(c["status"], want, "{name}: {c:#}");
        let text = c.to_string();
        assert!(
            text.contains(needle),
            "{name} should mention `{needle}`: {c:#}"
        );
    };
    expect("push.certificate", "pass", &topic(1));
    expect("push.topics", "pass", "all 3 channels");
    expect(
        "identity.recorded",
        "fail",
        "BBBB0000-0000-4000-8000-000000000002",
    );
    expect("identity.recorded", "fail", "--allow-retro-association");
    expect(
        "identity.expiry",
        "warn",
        "CCCC0000-0000-4000-8000-000000000003",
    );
    expect("urls.served", "fail", "/old/checkin");
    expect("urls.served", "fail", "--mdm-path");
    expect("tls.certificate", "fail", "would be refused");
    expect("upstream.reachable", "pass", "HTTP 404");
    expect("apns.reachable", "fail", "--apns-url");
    expect(
        "devices.stale",
        "warn",
        "CCCC0000-0000-4000-8000-000000000003",
    );
    expect("channels.push-token", "pass", "3");
    expect("import.skipped", "warn", "topic mismatch");
    expect("dns.answer", "pass", "192.0.2.10 (TTL 300 s)");
    for c in r["checks"].as_array().unwrap() {
        if c["status"] == "fail" || c["status"] == "warn" {
            assert!(
                c["hint"].is_string() || c["name"] == "identity.expiry",
                "every problem has a hint: {c:#}"
            );
        }
    }

    // Fixed: serve's chain from the private root the old profile installed, the old path
    // served, retro-association allowed, the APNs stand-in reachable. Fetched from the server
    // this time (no --tls-cert).
    let run = t.run(
        &[
            &[
                "cutover",
                "check",
                "--mdm-path",
                "/old/checkin",
                "--allow-retro-association",
                "--apns-url",
                &url,
            ][..],
            &common[..],
        ]
        .concat(),
    );
    assert_eq!(run.code, 0, "go:\n{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("GO: no check failed"), "{}", run.stdout);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("tls.certificate") && l.contains("pass")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("hint: import the hashes"),
        "the warning keeps its hint: {}",
        run.stdout
    );
}

#[test]
fn offline_network_checks_say_skipped_never_pass() {
    let t = setup();
    let run = t.run(&[
        "--format",
        "json",
        "cutover",
        "check",
        "--offline",
        "--url",
        "https://localhost:1",
        "--upstream",
        "http://127.0.0.1:1",
        "--allow-retro-association",
    ]);
    let r: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    for name in [
        "tls.certificate",
        "upstream.reachable",
        "apns.reachable",
        "dns.answer",
        "urls.served",
    ] {
        assert_eq!(status(&r, name)["status"], "skipped", "{name}: {r:#}");
    }
    // Without the old profile, renewal cannot be configured: an identity expiring in 10 days
    // is then a no-go.
    assert_eq!(status(&r, "identity.expiry")["status"], "fail", "{r:#}");
    assert_eq!(run.code, 1);
}

#[test]
fn bad_inputs_are_named_with_a_hint() {
    let t = TestContext::new();
    t.init();
    t.write("junk.mobileconfig", "not a plist");
    t.run(&[
        "cutover",
        "check",
        "--enrollment-profile",
        "junk.mobileconfig",
    ])
    .user_error()
    .stderr_has("junk.mobileconfig")
    .stderr_has("hint:");
    t.run(&["cutover", "check", "--url", "mdm.example.com"])
        .user_error()
        .stderr_has("--url")
        .stderr_has("hint:");
    t.run(&["cutover", "check", "--resolver", "nameserver"])
        .user_error()
        .stderr_has("--resolver");
}

#[test]
fn cutover_set_and_rollback_say_what_moves_and_are_audited() {
    let t = setup();
    // Dry run: which devices would move, and nothing changes.
    let j = t
        .run(&["--format", "json", "cutover", "set", "--all", "--dry-run"])
        .success()
        .json();
    assert_eq!(j["dry_run"], true);
    // Four devices: the one whose channel the import skipped (another topic) is one too.
    assert_eq!(j["moved_in"].as_array().unwrap().len(), 4, "{j:#}");
    let j = t
        .run(&[
            "--format",
            "json",
            "cutover",
            "set",
            "--percent",
            "0",
            "--dry-run",
        ])
        .success()
        .json();
    assert_eq!(j["in_set"], 0, "nothing was written by the dry run: {j:#}");

    // Listed devices, by UDID or serial; a device the store does not have is named with its
    // line, and nothing changes.
    t.write(
        "wave1.txt",
        "# first wave\nAAAA0000-0000-4000-8000-000000000001\n\nSERBBBB  # by serial\n",
    );
    t.write("typo.txt", "AAAA0000-0000-4000-8000-000000000001\nNOPE\n");
    t.run(&["cutover", "set", "--devices", "typo.txt"])
        .user_error()
        .stderr_has("typo.txt")
        .stderr_has("line 2")
        .stderr_has("NOPE")
        .stderr_has("hint:");
    let out = t
        .run(&["cutover", "set", "--devices", "wave1.txt"])
        .success()
        .stdout
        .clone();
    assert!(out.contains("moved to mdmctl: 2 device(s)"), "{out}");
    assert!(
        out.contains("now: 2 of 4 devices answered by mdmctl"),
        "{out}"
    );

    let st = t
        .run(&["--format", "json", "cutover", "status"])
        .success()
        .json();
    let fleet = &st["fleet"];
    assert_eq!(
        [
            &fleet["imported"],
            &fleet["in_set"],
            &fleet["migrated"],
            &fleet["waiting"]
        ],
        [4, 2, 0, 2],
        "{st:#}"
    );
    assert_eq!(
        st["identities_expiring_30d"], 1,
        "the Mac whose identity expires in 10 days: {st:#}"
    );
    assert_eq!(st["mirror_back"]["waiting"], 0);
    let table = t.run(&["cutover", "status"]).success().stdout.clone();
    assert!(table.contains("0 of 4 imported (0.0 %)"), "{table}");
    assert!(table.contains("in the set, not seen yet"), "{table}");

    // A team that does not exist.
    t.run(&["cutover", "set", "--team", "Nobody"])
        .user_error()
        .stderr_has("Nobody")
        .stderr_has("get teams");
    // Exactly one way to choose.
    assert_ne!(
        t.run(&["cutover", "set", "--all", "--percent", "5"]).code,
        0
    );
    assert_ne!(t.run(&["cutover", "set", "--percent", "101"]).code, 0);

    // Rollback of one, then of all.
    t.write("back.txt", "SERAAAA\n");
    let j = t
        .run(&[
            "--format",
            "json",
            "cutover",
            "rollback",
            "--devices",
            "back.txt",
        ])
        .success()
        .json();
    assert_eq!(
        j["moved_out"][0]["udid"],
        "AAAA0000-0000-4000-8000-000000000001"
    );
    let out = t.run(&["cutover", "rollback"]).success().stdout.clone();
    assert!(out.contains("back to the old server: 1 device(s)"), "{out}");
    assert!(out.contains("now: 0 of 4"), "{out}");

    let log = t
        .run(&[
            "--format",
            "json",
            "get",
            "activities",
            "--type",
            "cutover.",
        ])
        .success()
        .json();
    let kinds: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["cutover.set", "cutover.rollback", "cutover.rollback"],
        "{log:#}"
    );
}
