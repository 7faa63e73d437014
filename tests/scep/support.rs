//! Shared test fixtures: a throwaway CA, client keys and CSRs, and a tiny
//! HTTP/1.1 SCEP server on 127.0.0.1 built on the library's functions.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::stack::Stack;
use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectKeyIdentifier};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509, X509Builder, X509Name, X509StoreContext};

use mdmctl::pki::scep::{
    FailInfo, RequestKind, ScepRequest, ca_caps, ca_cert_response, cert_rep_failure,
    cert_rep_success, decode_get_message, issue_certificate,
};

/// A CA certificate and its key.
#[derive(Clone)]
pub struct Ca {
    pub cert: X509,
    pub key: PKey<Private>,
}

pub fn rsa_key(bits: u32) -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(bits).expect("rsa keygen")).expect("pkey")
}

/// A 2048-bit key shared by tests that do not care which key they use
/// (keygen is the slowest thing here on 2 cores).
pub fn shared_key() -> PKey<Private> {
    static KEY: OnceLock<PKey<Private>> = OnceLock::new();
    KEY.get_or_init(|| rsa_key(2048)).clone()
}

pub fn name(cn: &str) -> X509Name {
    let mut b = X509Name::builder().expect("name builder");
    b.append_entry_by_text("O", "mdmctl tests").expect("O");
    b.append_entry_by_text("CN", cn).expect("CN");
    b.build()
}

/// A self-signed root CA valid for `days`.
pub fn make_ca(cn: &str, days: u32) -> Ca {
    let key = rsa_key(2048);
    let mut b = X509Builder::new().expect("builder");
    b.set_version(2).expect("version");
    let serial = BigNum::from_u32(1)
        .and_then(|b| b.to_asn1_integer())
        .expect("serial");
    b.set_serial_number(&serial).expect("serial");
    let n = name(cn);
    b.set_subject_name(&n).expect("subject");
    b.set_issuer_name(&n).expect("issuer");
    b.set_pubkey(&key).expect("pubkey");
    // Backdated an hour: tools that verify the chain right away (certmonger)
    // must not see a certificate that is not yet valid.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let nb = Asn1Time::from_unix(now - 3600).expect("time");
    let na = Asn1Time::days_from_now(days).expect("time");
    b.set_not_before(&nb).expect("nb");
    b.set_not_after(&na).expect("na");
    b.append_extension(BasicConstraints::new().critical().ca().build().expect("bc"))
        .expect("bc");
    // digitalSignature + keyEncipherment as well: with no separate RA,
    // the CA certificate signs CertReps and receives encrypted requests.
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .digital_signature()
            .key_encipherment()
            .build()
            .expect("ku"),
    )
    .expect("ku");
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(None, None))
        .expect("ski");
    b.append_extension(ski).expect("ski");
    b.sign(&key, MessageDigest::sha256()).expect("sign");
    Ca {
        cert: b.build(),
        key,
    }
}

/// Whether `cert` verifies against `roots` (and is within its validity).
pub fn chains_to(cert: &X509, roots: &[X509]) -> bool {
    let mut store = X509StoreBuilder::new().expect("store");
    for r in roots {
        store.add_cert(r.clone()).expect("add");
    }
    let store = store.build();
    let chain = Stack::new().expect("stack");
    let mut ctx = X509StoreContext::new().expect("ctx");
    ctx.init(&store, cert, &chain, |c| c.verify_cert())
        .unwrap_or(false)
}

/// Finds an external tool; `None` (with a printed reason) means skip.
/// Set SCEP_INTEROP_REQUIRED=1 to turn a missing tool into a failure.
pub fn find_tool(candidates: &[&str], package: &str) -> Option<PathBuf> {
    for c in candidates {
        let p = PathBuf::from(c);
        if p.is_file() {
            return Some(p);
        }
    }
    let msg = format!(
        "SKIP: none of {candidates:?} is installed (Debian package `{package}`: apt-get install -y {package})"
    );
    if std::env::var("SCEP_INTEROP_REQUIRED").is_ok_and(|v| v == "1") {
        panic!("{msg} and SCEP_INTEROP_REQUIRED=1");
    }
    eprintln!("{msg}");
    None
}

/// Server-side policy of the test server, standing in for mdmctl serve.
pub struct ServerConfig {
    /// Decrypts requests and signs replies (and issues).
    pub ca: Ca,
    /// Required challenge for PKCSReq, if any.
    pub challenge: Option<String>,
    /// GetCACaps body.
    pub caps: String,
    /// CAs whose identities may renew (ours and the "old MDM" one).
    pub renewal_roots: Vec<X509>,
}

impl ServerConfig {
    pub fn new(ca: Ca) -> Self {
        let renewal_roots = vec![ca.cert.clone()];
        ServerConfig {
            ca,
            challenge: None,
            caps: ca_caps().to_owned(),
            renewal_roots,
        }
    }
}

/// What the server saw, for assertions.
#[derive(Clone, Debug)]
pub struct LogEntry {
    pub method: String,
    pub operation: String,
    pub status: u16,
    pub outcome: String,
    /// The raw query string.
    pub query: String,
    /// The PKIOperation message as received (after base64 for GET).
    pub message: Vec<u8>,
    /// The response body.
    pub response: Vec<u8>,
}

pub struct TestServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    pub log: Arc<Mutex<Vec<LogEntry>>>,
    pub issued: Arc<Mutex<Vec<X509>>>,
}

impl TestServer {
    pub fn start(config: ServerConfig) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let issued = Arc::new(Mutex::new(Vec::new()));
        let (stop2, log2, issued2) = (stop.clone(), log.clone(), issued.clone());
        let handle = std::thread::spawn(move || {
            // Bounded: the server stops by itself after two minutes.
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = handle_connection(stream, &config, &log2, &issued2);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => break,
                }
            }
        });
        TestServer {
            addr,
            stop,
            handle: Some(handle),
            log,
            issued,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/scep", self.addr)
    }

    pub fn log(&self) -> Vec<LogEntry> {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        // '+' stays '+': base64 has no spaces, and some clients do not
        // escape it (RFC 8894 §4.1 asks them to).
        out.push(b[i]);
        i += 1;
    }
    out
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query_param_raw(query, key).map(|v| String::from_utf8_lossy(&percent_decode(v)).into_owned())
}

fn query_param_raw<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
}

fn handle_connection(
    stream: TcpStream,
    config: &ServerConfig,
    log: &Mutex<Vec<LogEntry>>,
    issued: &Mutex<Vec<X509>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            content_length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; content_length.min(1 << 20)];
    reader.read_exact(&mut body)?;

    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let operation = query_param(query, "operation").unwrap_or_default();
    let mut message = Vec::new();
    let (status, content_type, payload, outcome) = match operation.as_str() {
        "GetCACaps" => (
            200,
            "text/plain",
            config.caps.clone().into_bytes(),
            "caps".into(),
        ),
        "GetCACert" => match ca_cert_response(std::slice::from_ref(&config.ca.cert)) {
            Ok((ct, b)) => (200, ct, b, "cacert".into()),
            Err(e) => (
                500,
                "text/plain",
                e.to_string().into_bytes(),
                "error".into(),
            ),
        },
        "PKIOperation" => {
            let der = if method == "POST" {
                Ok(body)
            } else {
                // The library helper copes with the clients' base64 quirks.
                decode_get_message(query_param_raw(query, "message").unwrap_or_default())
            };
            match der {
                Ok(der) => {
                    message = der.clone();
                    pki_operation(config, &der, issued)
                }
                Err(_) => (
                    400,
                    "text/plain",
                    b"bad base64".to_vec(),
                    "bad base64".into(),
                ),
            }
        }
        _ => (
            404,
            "text/plain",
            b"unknown operation".to_vec(),
            "404".into(),
        ),
    };
    log.lock().expect("log").push(LogEntry {
        method,
        operation,
        status,
        outcome,
        query: query.to_owned(),
        message,
        response: payload.clone(),
    });
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    )?;
    out.write_all(&payload)?;
    out.flush()
}

/// The PKIOperation policy a real server would apply (the parts that are
/// the caller's, not the library's): challenge for PKCSReq, chain check
/// for RenewalReq.
fn pki_operation(
    config: &ServerConfig,
    der: &[u8],
    issued: &Mutex<Vec<X509>>,
) -> (u16, &'static str, Vec<u8>, String) {
    let ca = &config.ca;
    let req = match ScepRequest::parse(der) {
        Ok(r) => r,
        Err(e) => {
            return (
                400,
                "text/plain",
                e.to_string().into_bytes(),
                format!("parse: {e}"),
            );
        }
    };
    let fail = |fi: FailInfo, why: String| match cert_rep_failure(&req, fi, &ca.cert, &ca.key) {
        Ok(b) => (
            200,
            "application/x-pki-message",
            b,
            format!("failure {fi}: {why}"),
        ),
        Err(e) => (
            500,
            "text/plain",
            e.to_string().into_bytes(),
            format!("{e}"),
        ),
    };
    let csr = match req.decrypt(&ca.cert, &ca.key) {
        Ok(c) => c,
        Err(e) => return fail(e.fail_info(), e.to_string()),
    };
    match csr.kind {
        RequestKind::PkcsReq => {
            if let Some(want) = &config.challenge
                && csr.challenge_password.as_deref() != Some(want.as_str())
            {
                return fail(FailInfo::BadRequest, "wrong challenge".into());
            }
        }
        RequestKind::RenewalReq => {
            let Some(identity) = csr.renewal_identity() else {
                return fail(FailInfo::BadRequest, "no identity".into());
            };
            if !chains_to(identity, &config.renewal_roots) {
                return fail(FailInfo::BadRequest, "untrusted identity".into());
            }
        }
    }
    let cert = match issue_certificate(&csr.csr, &ca.cert, &ca.key, 365) {
        Ok(c) => c,
        Err(e) => return fail(e.fail_info(), e.to_string()),
    };
    issued.lock().expect("issued").push(cert.clone());
    match cert_rep_success(&req, &cert, &ca.cert, &ca.key) {
        Ok(b) => (
            200,
            "application/x-pki-message",
            b,
            format!(
                "issued {:?} digest {:?} cipher {:?}",
                csr.kind,
                req.digest(),
                req.content_cipher()
            ),
        ),
        Err(e) => (
            500,
            "text/plain",
            e.to_string().into_bytes(),
            format!("{e}"),
        ),
    }
}

/// Minimal HTTP client for the tests that drive our own client.
pub fn http_post(url_base: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let rest = url_base.strip_prefix("http://").expect("http url");
    let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = TcpStream::connect(hostport).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "POST /{path}?operation=PKIOperation HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/x-pki-message\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("write");
    s.write_all(body).expect("body");
    read_response(s)
}

pub fn http_get(url: &str) -> (u16, String, Vec<u8>) {
    let rest = url.strip_prefix("http://").expect("http url");
    let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = TcpStream::connect(hostport).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let (status, headers, body) = split_response(&raw);
    let ct = headers
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    (status, ct, body)
}

fn read_response(mut s: TcpStream) -> (u16, Vec<u8>) {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let (status, _, body) = split_response(&raw);
    (status, body)
}

fn split_response(raw: &[u8]) -> (u16, String, Vec<u8>) {
    let pos = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..pos]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let body = &raw[pos + 4..];
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    (status, head, body)
}

/// Decodes a chunked HTTP/1.1 body (Go's net/http uses it).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("chunk size");
        raw = &raw[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// A free TCP port on 127.0.0.1 (for servers that take a port number).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
