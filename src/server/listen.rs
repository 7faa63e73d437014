//! Accepting connections: plain HTTP (behind a TLS-terminating proxy), or TLS with the
//! customer's certificate for the old DNS name that asks for (but does not require) a client
//! certificate, whose peer certificate reaches handlers as a [`PeerCert`] extension. HTTP/1.1
//! only, with every connection time-bounded (TLS handshake, then each request's headers and the
//! idle time between requests) and their number capped. On shutdown, new connections stop and
//! in-flight requests finish.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use openssl::ssl::{Ssl, SslAcceptor, SslMethod, SslVerifyMode};
use openssl::x509::X509;
use tokio::net::TcpListener;
use tokio_openssl::SslStream;
use tracing::{debug, info, warn};

/// The client certificate a device presented in the TLS handshake.
#[derive(Clone)]
pub struct PeerCert(pub X509);

/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(30);
/// How long a connection may wait for a request's headers, idle keep-alive included.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS acceptor for `cert_chain` (leaf first) and `key` that asks devices for a client
/// certificate but lets the handshake finish without one: trust is decided per request.
pub fn tls_acceptor(
    cert_chain: &[X509],
    key: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
) -> Result<SslAcceptor, openssl::error::ErrorStack> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    let (leaf, rest) = cert_chain
        .split_first()
        .ok_or_else(openssl::error::ErrorStack::get)?;
    b.set_certificate(leaf)?;
    for c in rest {
        b.add_extra_chain_cert(c.clone())?;
    }
    b.set_private_key(key)?;
    b.check_private_key()?;
    b.set_alpn_select_callback(|_, client| {
        // HTTP/1.1 only: an idle HTTP/1 connection is closed after HEADER_TIMEOUT, so a
        // connection slot (`--max-connections`) is never held by a quiet peer for long.
        openssl::ssl::select_next_proto(b"\x08http/1.1", client)
            .ok_or(openssl::ssl::AlpnError::NOACK)
    });
    // PEER without FAIL_IF_NO_PEER_CERT: request a certificate, accept any (the handler checks
    // it against the store's CAs, which change at runtime).
    b.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
    Ok(b.build())
}

/// Serve `app` on `listener` until `shutdown` resolves, then drain.
///
/// At most `max_connections` connections are served at once: each live connection holds
/// buffers and a request's state (about 26 KB under load), so a push to a whole fleet must not
/// turn into as many simultaneous connections. Past the cap the server stops accepting;
/// devices wait in the kernel's accept queue (their TCP stack retries), and are served as
/// connections close.
pub async fn serve(
    listener: TcpListener,
    tls: Option<SslAcceptor>,
    app: Router,
    max_connections: usize,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    // HTTP/1.1 only (Apple's MDM client needs nothing more), so every connection is bounded:
    // HANDSHAKE_TIMEOUT for TLS, then HEADER_TIMEOUT for each request and between requests.
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    let mut shutdown: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(s) => s,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                Some(acceptor) => {
                    let Ok(ssl) = Ssl::new(acceptor.context()) else {
                        return;
                    };
                    let Ok(mut stream) = SslStream::new(ssl, tcp) else {
                        return;
                    };
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, Pin::new(&mut stream).accept())
                        .await
                    {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            debug!(%addr, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            debug!(%addr, "TLS handshake timed out");
                            return;
                        }
                    }
                    let peer = stream.ssl().peer_certificate().map(PeerCert);
                    let svc = with_peer(app, peer, addr);
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        debug!(%addr, error = %e, "connection ended with an error");
                    }
                }
                None => {
                    let svc = with_peer(app, None, addr);
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), svc);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        debug!(%addr, error = %e, "connection ended with an error");
                    }
                }
            }
        });
    }
    drop(listener);
    info!("shutting down: waiting for in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => info!("all connections closed"),
        _ = tokio::time::sleep(DRAIN) => warn!("some connections did not finish within {DRAIN:?}"),
    }
    Ok(())
}

/// The router, with the connection's peer certificate and address added to each request.
#[derive(Clone)]
struct WithPeer {
    app: Router,
    peer: Option<PeerCert>,
    addr: SocketAddr,
}

impl tower::Service<hyper::Request<Incoming>> for WithPeer {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = <Router as tower::Service<hyper::Request<Incoming>>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::<hyper::Request<Incoming>>::poll_ready(&mut self.app, cx)
    }

    fn call(&mut self, mut req: hyper::Request<Incoming>) -> Self::Future {
        if let Some(p) = &self.peer {
            req.extensions_mut().insert(p.clone());
        }
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(self.addr));
        self.app.call(req)
    }
}

fn with_peer(
    app: Router,
    peer: Option<PeerCert>,
    addr: SocketAddr,
) -> TowerToHyperService<WithPeer> {
    TowerToHyperService::new(WithPeer { app, peer, addr })
}
