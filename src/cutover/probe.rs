//! Network probes for `cutover check`: the certificate chain a TLS server presents, whether a
//! TLS server proves itself to a trust store, whether an HTTP server answers, and whether a
//! chain is valid for a DNS name under given roots. Every probe has a timeout.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyParam;
use openssl::x509::{X509, X509StoreContext};

fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .collect();
    let mut last = format!("`{host}` has no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                s.set_read_timeout(Some(timeout))
                    .map_err(|e| e.to_string())?;
                s.set_write_timeout(Some(timeout))
                    .map_err(|e| e.to_string())?;
                return Ok(s);
            }
            Err(e) => last = format!("cannot connect to {a}: {e}"),
        }
    }
    Err(last)
}

/// The chain `host:port` presents (leaf first), whoever issued it.
pub fn fetch_chain(host: &str, port: u16, timeout: Duration) -> Result<Vec<X509>, String> {
    let stream = connect(host, port, timeout)?;
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    // Looked at, not trusted: the chain is verified separately, against the devices' roots.
    b.set_verify(SslVerifyMode::NONE);
    let ssl = b
        .build()
        .configure()
        .map_err(|e| e.to_string())?
        .verify_hostname(false)
        .connect(host, stream)
        .map_err(|e| format!("TLS handshake with {host}:{port} failed: {e}"))?;
    let chain = ssl
        .ssl()
        .peer_cert_chain()
        .map(|c| c.iter().map(|x| x.to_owned()).collect::<Vec<_>>())
        .unwrap_or_default();
    if chain.is_empty() {
        return Err(format!("{host}:{port} presented no certificate"));
    }
    Ok(chain)
}

/// A TLS handshake with `host:port` that verifies its certificate for `host` against the
/// system's roots and `extra_root`.
pub fn handshake(
    host: &str,
    port: u16,
    extra_root: Option<&X509>,
    timeout: Duration,
) -> Result<(), String> {
    let stream = connect(host, port, timeout)?;
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    if let Some(root) = extra_root {
        b.cert_store_mut()
            .add_cert(root.clone())
            .map_err(|e| e.to_string())?;
    }
    b.build()
        .connect(host, stream)
        .map(|_| ())
        .map_err(|e| format!("TLS handshake with {host}:{port} failed: {e}"))
}

/// The HTTP status `url` answers a GET with (redirects not followed).
pub fn http_status(url: &str, timeout: Duration) -> Result<u16, String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client.get(url).send().map_err(|e| {
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg = format!("{msg}: {s}");
            source = s.source();
        }
        msg
    })?;
    Ok(resp.status().as_u16())
}

/// Whether `chain` (leaf first) is valid now for `host` and chains to the system's roots or
/// one of `anchors`; the reason when not.
pub fn verify_chain(chain: &[X509], anchors: &[X509], host: &str) -> Result<(), String> {
    let (leaf, rest) = chain.split_first().ok_or("no certificate")?;
    let mut store = X509StoreBuilder::new().map_err(|e| e.to_string())?;
    store.set_default_paths().map_err(|e| e.to_string())?;
    for a in anchors {
        // A duplicate of a system root is not an error worth failing on.
        let _ = store.add_cert(a.clone());
    }
    let mut param = X509VerifyParam::new().map_err(|e| e.to_string())?;
    param.set_host(host).map_err(|e| e.to_string())?;
    store.set_param(&param).map_err(|e| e.to_string())?;
    let store = store.build();
    let mut untrusted = Stack::new().map_err(|e| e.to_string())?;
    for c in rest {
        untrusted.push(c.clone()).map_err(|e| e.to_string())?;
    }
    let mut ctx = X509StoreContext::new().map_err(|e| e.to_string())?;
    let (ok, why) = ctx
        .init(&store, leaf, &untrusted, |c| {
            let ok = c.verify_cert()?;
            Ok((ok, c.error().error_string().to_string()))
        })
        .map_err(|e| e.to_string())?;
    if ok { Ok(()) } else { Err(why) }
}
