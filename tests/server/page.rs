//! `/cutover` in a real browser: Debian's `chromium`, headless, driven over the DevTools
//! protocol (a minimal WebSocket client below). An admin logs in with the form, sees the
//! counts, and sees them change as simulated Macs migrate (the page reloads itself); a
//! non-admin token is refused; the cookie is invisible to scripts. A screenshot goes to
//! `target/tmp/cutover-page.png`.
//!
//! Without `chromium` the test says so on stderr and passes, unless `MDMCTL_BROWSER_REQUIRED`
//! is set (CI sets it and installs the package).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mdmctl::cutover::stage::{self, Change};
use mdmctl::sim::device::IdentityMode;

use crate::harness::{Ca, Options, Server};

/// A headless chromium and one DevTools connection to its page.
struct Browser {
    child: Child,
    ws: TcpStream,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").unwrap();
    // Chromium keeps the connection open: read the headers, then Content-Length bytes.
    let mut r = BufReader::new(s);
    let mut len = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}

impl Browser {
    fn start() -> Option<Self> {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1100,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut port = None;
        let mut line = String::new();
        while port.is_none() && err.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(rest) = line
                .trim()
                .strip_prefix("DevTools listening on ws://127.0.0.1:")
            {
                port = rest.split('/').next().and_then(|p| p.parse::<u16>().ok());
            }
            line.clear();
        }
        // Keep draining chromium's stderr so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in err.lines() {});
        let port = port.expect("chromium printed its DevTools address");
        let list: serde_json::Value = serde_json::from_str(&http_get(port, "/json/list")).unwrap();
        let page = list
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page target");
        let path = page["webSocketDebuggerUrl"]
            .as_str()
            .unwrap()
            .split_once(&format!("127.0.0.1:{port}"))
            .unwrap()
            .1
            .to_string();
        let mut ws = TcpStream::connect(("127.0.0.1", port)).unwrap();
        ws.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            ws,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            ws.read_exact(&mut b).unwrap();
            head.push(b[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        Some(Self {
            child,
            ws,
            next_id: 0,
            _profile: profile,
        })
    }

    fn send_frame(&mut self, text: &str) {
        let data = text.as_bytes();
        let mut f = vec![0x81u8];
        match data.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        f.extend_from_slice(&mask);
        f.extend(data.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.ws.write_all(&f).unwrap();
    }

    fn read_message(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            let mut h = [0u8; 2];
            self.ws.read_exact(&mut h).unwrap();
            let fin = h[0] & 0x80 != 0;
            let len = match h[1] & 0x7f {
                126 => {
                    let mut e = [0u8; 2];
                    self.ws.read_exact(&mut e).unwrap();
                    u64::from(u16::from_be_bytes(e))
                }
                127 => {
                    let mut e = [0u8; 8];
                    self.ws.read_exact(&mut e).unwrap();
                    u64::from_be_bytes(e)
                }
                n => u64::from(n),
            };
            let mut payload = vec![0u8; len as usize];
            self.ws.read_exact(&mut payload).unwrap();
            message.extend_from_slice(&payload);
            if fin {
                return String::from_utf8(message).unwrap();
            }
        }
    }

    /// A DevTools command and its result.
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send_frame(
            &serde_json::json!({ "id": id, "method": method, "params": params }).to_string(),
        );
        loop {
            let m: serde_json::Value = serde_json::from_str(&self.read_message()).unwrap();
            if m["id"] == id {
                assert!(m["error"].is_null(), "{method}: {m}");
                return m["result"].clone();
            }
        }
    }

    fn eval(&mut self, js: &str) -> serde_json::Value {
        self.call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": js, "returnByValue": true }),
        )["result"]["value"]
            .clone()
    }

    /// Wait until `js` evaluates to `want` in the page.
    fn wait_for(&mut self, js: &str, want: &serde_json::Value, secs: u64) {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.eval(js);
            if &got == want {
                return;
            }
            assert!(Instant::now() < until, "`{js}` is {got}, not {want}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Run a browser step off the async workers (it blocks on the socket).
async fn step<T: Send + 'static>(
    b: Browser,
    f: impl FnOnce(&mut Browser) -> T + Send + 'static,
) -> (Browser, T) {
    tokio::task::spawn_blocking(move || {
        let mut b = b;
        let t = f(&mut b);
        (b, t)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_logs_in_and_watches_macs_migrate() {
    let Some(browser) = tokio::task::spawn_blocking(Browser::start).await.unwrap() else {
        assert!(
            std::env::var_os("MDMCTL_BROWSER_REQUIRED").is_none(),
            "MDMCTL_BROWSER_REQUIRED is set but `chromium` cannot be started"
        );
        eprintln!("skipped: the /cutover browser test needs `chromium` (apt-get install chromium)");
        return;
    };
    let s = Server::start(Options::default()).await;
    let old = Ca::new("OLD MDM SCEP CA");
    s.trust_old_ca(&old);
    let macs: Vec<_> = (0..10)
        .map(|i| s.migrated(i, &old, IdentityMode::Signature))
        .collect();
    stage::apply(s.store.as_ref(), &Change::All, "tester", false).unwrap();
    let admin = crate::api::token_as(&s, "page-admin", "admin", None).await;
    let observer = crate::api::token_as(&s, "page-observer", "observer", None).await;
    let url = format!("{}/cutover", s.url);

    // A token that is not an admin's is refused, with the reason on the page.
    let (u2, obs) = (url.clone(), observer.clone());
    let (browser, error) = step(browser, move |b| {
        b.call("Page.enable", serde_json::json!({}));
        b.call("Page.navigate", serde_json::json!({ "url": u2 }));
        b.wait_for("!!document.getElementById('token')", &true.into(), 15);
        b.eval(&format!(
            "document.getElementById('token').value = '{obs}'; document.getElementById('login').click(); true"
        ));
        b.wait_for("!!document.getElementById('error')", &true.into(), 15);
        b.eval("document.getElementById('error').textContent")
    })
    .await;
    assert!(
        error.as_str().unwrap().contains("not an admin token"),
        "{error}"
    );

    // The admin logs in and sees no Mac migrated yet.
    let adm = admin.clone();
    let (browser, cookie) = step(browser, move |b| {
        b.eval(&format!(
            "document.getElementById('token').value = '{adm}'; document.getElementById('login').click(); true"
        ));
        b.wait_for(
            "document.getElementById('migrated') && document.getElementById('migrated').textContent",
            &"0".into(),
            15,
        );
        b.eval("document.cookie")
    })
    .await;
    assert_eq!(
        cookie, "",
        "the session cookie is HttpOnly: scripts cannot read it"
    );

    // The Macs check in; the page, reloading itself, shows them migrated.
    for m in &macs {
        assert_eq!(m.send(false, m.idle_body()).await.unwrap().0, 200);
    }
    let (browser, shot) = step(browser, |b| {
        b.wait_for(
            "document.getElementById('migrated') && document.getElementById('migrated').textContent",
            &"10".into(),
            20,
        );
        b.wait_for(
            "document.getElementById('migrated-fraction').textContent",
            &"100.0 %".into(),
            5,
        );
        b.call("Page.captureScreenshot", serde_json::json!({ "format": "png" }))["data"]
            .as_str()
            .unwrap()
            .to_string()
    })
    .await;
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot)
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cutover-page.png");
    std::fs::write(&path, &png).unwrap();
    eprintln!("screenshot: {}", path.display());

    // Logging out drops the cookie: the form is back.
    let (browser, ()) = step(browser, |b| {
        b.eval("document.querySelector('form[action=\"/cutover/logout\"] button').click(); true");
        b.wait_for("!!document.getElementById('token')", &true.into(), 15);
    })
    .await;
    drop(browser);
    s.stop().await;
}

/// Fetch with a raw request: the status and the whole answer.
fn raw(addr: &str, request: String, body: &[u8], chunk: usize, pause: Duration) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = tcp.write_all(request.as_bytes());
    for part in body.chunks(chunk.max(1)) {
        if tcp.write_all(part).is_err() {
            break;
        }
        std::thread::sleep(pause);
    }
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

fn login_request(len: usize) -> String {
    format!(
        "POST /cutover/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )
}

/// The login form without a browser: garbage, a huge and a slow body, a wrong token, the
/// cookie's attributes, and the page behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_form_refuses_garbage_huge_slow_and_non_admin_input() {
    let s = Server::start(Options::default()).await;
    let admin = crate::api::token_as(&s, "form-admin", "admin", None).await;
    let observer = crate::api::token_as(&s, "form-observer", "observer", None).await;
    let addr = s.url.trim_start_matches("http://").to_string();
    let run = |request: String, body: Vec<u8>, chunk: usize, pause: Duration| {
        let a = addr.clone();
        tokio::task::spawn_blocking(move || raw(&a, request, &body, chunk, pause))
    };

    let garbage = b"\xff\xfe%%%token".to_vec();
    let (code, page) = run(login_request(garbage.len()), garbage, 4096, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(code, 400);
    assert!(page.contains("enter an admin API token"), "{page}");

    let huge = vec![b'a'; 100 * 1024];
    let (code, _) = run(login_request(huge.len()), huge, 64 * 1024, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(code, 413);

    let slow = format!("token={admin}").into_bytes();
    let started = Instant::now();
    let (code, _) = run(
        login_request(slow.len()),
        slow,
        4,
        Duration::from_millis(500),
    )
    .await
    .unwrap();
    assert_eq!(
        code, 408,
        "a trickling form is cut off after the body timeout"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    let form = format!("token={observer}").into_bytes();
    let (code, page) = run(login_request(form.len()), form, 4096, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(code, 401);
    assert!(page.contains("not an admin token"), "{page}");
    assert!(
        !page.to_ascii_lowercase().contains("set-cookie"),
        "no cookie for a refused token"
    );

    let form = format!("token={admin}").into_bytes();
    let (code, answer) = run(login_request(form.len()), form, 4096, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(code, 303);
    let cookie = answer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("a session cookie")
        .to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/cutover"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let value = cookie
        .split_once(':')
        .unwrap()
        .1
        .split(';')
        .next()
        .unwrap()
        .trim()
        .to_string();
    let (code, page) = run(
        format!("GET /cutover HTTP/1.1\r\nHost: x\r\nCookie: {value}\r\nConnection: close\r\n\r\n"),
        Vec::new(),
        1,
        Duration::ZERO,
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    assert!(
        page.contains("id=\"migrated\"") && page.contains("default-src 'none'"),
        "{page}"
    );
    s.stop().await;
}
