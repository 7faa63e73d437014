//! Hostile requests to the MDM endpoint, from a caller with a valid identity and from one
//! without: deeply nested property lists (XML and binary), garbage, bodies over the limit and
//! bodies that never finish. Each gets a 4xx; the server stays up and the real device is still
//! served.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use mdmctl::sim::device::IdentityMode;

use crate::harness::{Ca, Options, Server};

/// An Authenticate-shaped check-in whose `X` value nests `depth` arrays.
fn deep_xml(udid: &str, depth: usize) -> Vec<u8> {
    let mut s = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict><key>MessageType</key><string>Authenticate</string><key>UDID</key><string>{udid}</string><key>X</key>"#
    );
    s.push_str(&"<array>".repeat(depth));
    s.push_str(&"</array>".repeat(depth));
    s.push_str("</dict></plist>");
    s.into_bytes()
}

/// A binary plist of `depth` nested one-element arrays, written by hand (the plist crate's
/// writer recurses too).
fn deep_binary(depth: usize) -> Vec<u8> {
    let n = depth + 1;
    let mut out = b"bplist00".to_vec();
    let mut offsets = Vec::with_capacity(n);
    for i in 0..n {
        offsets.push(out.len());
        if i + 1 < n {
            out.push(0xA1);
            out.extend_from_slice(&((i + 1) as u16).to_be_bytes());
        } else {
            out.push(0xA0);
        }
    }
    let table = out.len();
    for o in &offsets {
        out.extend_from_slice(&(*o as u32).to_be_bytes());
    }
    let mut trailer = [0u8; 32];
    trailer[6] = 4;
    trailer[7] = 2;
    trailer[8..16].copy_from_slice(&(n as u64).to_be_bytes());
    trailer[24..32].copy_from_slice(&(table as u64).to_be_bytes());
    out.extend_from_slice(&trailer);
    out
}

// See: issue 11 §1: a check-in nesting ~10,000 deep overflowed the stack and aborted `serve`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_garbage_and_oversized_bodies_are_refused_and_serve_stays_up() {
    let s = Server::start(Options::default()).await;
    let old = Ca::new("Old CA");
    s.trust_old_ca(&old);
    let mac = s.migrated(1, &old, IdentityMode::Signature);
    assert_eq!(mac.session().await.unwrap(), 200);

    // 20,000 deep, signed by a valid identity, as a check-in and as a command report.
    for checkin in [true, false] {
        let body = deep_xml(&mac.udid, 20_000);
        let headers = mac.identity_headers(&body).unwrap();
        let (status, _) = mac.send_with(checkin, body, headers).await.unwrap();
        assert_eq!(status, 400, "20,000-deep XML (checkin: {checkin})");
    }
    let body = deep_binary(20_000);
    let headers = mac.identity_headers(&body).unwrap();
    let (status, _) = mac.send_with(true, body, headers).await.unwrap();
    assert_eq!(status, 400, "20,000-deep binary plist");
    // Garbage, signed.
    let body = b"\x00\x01\x02 not a plist at all".to_vec();
    let headers = mac.identity_headers(&body).unwrap();
    assert_eq!(mac.send_with(false, body, headers).await.unwrap().0, 400);
    // An XML plist cut off before `</plist>`.
    let mut cut = mac.idle_body();
    cut.truncate(cut.len() - 12);
    let headers = mac.identity_headers(&cut).unwrap();
    assert_eq!(mac.send_with(false, cut, headers).await.unwrap().0, 400);

    // Still up, and the device is still served.
    assert_eq!(mac.session().await.unwrap(), 200);
    let d = s.store.read(|tx| tx.device(&mac.udid)).unwrap().unwrap();
    assert_eq!(d.identity_sha256, mac.identity_sha256());
    s.stop().await;
}

/// Write a request by hand: headers, then `body` in `chunks` with `pause` between them.
/// Returns the status line's code (0 when the server closed without answering).
fn raw_request(addr: &str, headers: &str, body: &[u8], chunk: usize, pause: Duration) -> u16 {
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    if tcp.write_all(headers.as_bytes()).is_err() {
        return 0;
    }
    for part in body.chunks(chunk.max(1)) {
        if tcp.write_all(part).is_err() {
            break;
        }
        std::thread::sleep(pause);
    }
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_huge_and_slow_bodies_are_refused_without_being_read() {
    let s = Server::start(Options::default()).await;
    let old = Ca::new("Old CA");
    s.trust_old_ca(&old);
    let mac = s.migrated(1, &old, IdentityMode::Signature);
    let addr = s.url.trim_start_matches("http://").to_string();

    // No identity: refused at once, whatever the body; the server does not wait for it.
    let started = Instant::now();
    let a = addr.clone();
    let status = tokio::task::spawn_blocking(move || {
        raw_request(
            &a,
            "PUT /mdm HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-apple-aspen-mdm\r\nContent-Length: 8000000\r\n\r\n",
            &[b'x'; 64],
            64,
            Duration::ZERO,
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 400);
    assert!(started.elapsed() < Duration::from_secs(5));

    // Declared larger than the limit: 413 before anything else.
    let a = addr.clone();
    let status = tokio::task::spawn_blocking(move || {
        raw_request(
            &a,
            "PUT /mdm HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n",
            b"",
            1,
            Duration::ZERO,
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 413);

    // A valid identity whose body trickles in: cut off after the body timeout (2 s here).
    let body = mac.idle_body();
    let sig = mac.identity_headers(&body).unwrap();
    let mut head = format!(
        "PUT /mdm HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-apple-aspen-mdm\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in &sig {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let a = addr.clone();
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        raw_request(&a, &head, &body, 8, Duration::from_millis(400))
    })
    .await
    .unwrap();
    assert_eq!(status, 408);
    assert!(started.elapsed() < Duration::from_secs(12));

    // A valid identity with a body over the limit sent without a length (chunked): 413.
    let big = vec![b'<'; 9 * 1024 * 1024];
    let sig = mac.identity_headers(&big).unwrap();
    let mut head = "PUT /mdm HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-apple-aspen-mdm\r\nTransfer-Encoding: chunked\r\n".to_string();
    for (k, v) in &sig {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut chunked = Vec::new();
    for part in big.chunks(1 << 20) {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let a = addr.clone();
    let status = tokio::task::spawn_blocking(move || {
        raw_request(&a, &head, &chunked, 1 << 16, Duration::ZERO)
    })
    .await
    .unwrap();
    assert_eq!(status, 413);

    // The device is still served.
    assert_eq!(mac.session().await.unwrap(), 200);
    s.stop().await;
}

/// The automated-enrollment endpoint (anyone may reach it): garbage is a 400, a body past
/// 64 KiB a 413 (declared or chunked), a trickling body a 408, a GET with garbage device
/// information a 400; nothing is enrolled and the server stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_automated_enrollment_endpoint_refuses_garbage_huge_and_slow_bodies() {
    let s = Server::start(Options::default()).await;
    let addr = s.url.trim_start_matches("http://").to_string();
    let send = |head: String, body: Vec<u8>, chunk: usize, pause: Duration| {
        let a = addr.clone();
        tokio::task::spawn_blocking(move || raw_request(&a, &head, &body, chunk, pause))
    };
    let post = |len: usize| {
        format!(
            "POST /mdm/enroll HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/pkcs7-signature\r\nContent-Length: {len}\r\n\r\n"
        )
    };
    assert_eq!(
        send(post(9), b"not a cms".to_vec(), 9, Duration::ZERO)
            .await
            .unwrap(),
        400
    );
    assert_eq!(
        send(post(10_000_000), Vec::new(), 1, Duration::ZERO)
            .await
            .unwrap(),
        413
    );
    let mut chunked = Vec::new();
    for part in vec![0x30u8; 200_000].chunks(1 << 14) {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = "POST /api/mdm/apple/enroll HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
        .to_string();
    assert_eq!(
        send(head, chunked, 1 << 14, Duration::ZERO).await.unwrap(),
        413
    );
    let started = Instant::now();
    assert_eq!(
        send(post(4000), vec![0x30; 4000], 16, Duration::from_millis(400))
            .await
            .unwrap(),
        408
    );
    assert!(started.elapsed() < Duration::from_secs(12));
    let head = "GET /mdm/enroll HTTP/1.1\r\nHost: x\r\nConnection: close\r\nx-apple-aspen-deviceinfo: %%%not-base64%%%\r\n\r\n"
        .to_string();
    assert_eq!(
        send(head, Vec::new(), 1, Duration::ZERO).await.unwrap(),
        400
    );
    assert!(
        s.store.read(|tx| tx.device_summaries()).unwrap().is_empty(),
        "nothing enrolled"
    );
    assert_eq!(
        reqwest::get(format!("{}/readyz", s.url))
            .await
            .unwrap()
            .status(),
        200
    );
    s.stop().await;
}
