//! `mdmctl serve`: run the MDM server on the store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use zeroize::Zeroizing;

use super::Ctx;
use super::files::{load_key, read_input};
use crate::diagnose::UserError;
use crate::pki;
use crate::push::{ApnsConfig, PRODUCTION_URL, PushService};
use crate::server::{self, AppState, ServeConfig};
use crate::store::{AssetKind, AssetState, NewActivity};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The public URL devices reach this server at: the old MDM's DNS name after the cutover.
    #[arg(long, env = "MDMCTL_URL", value_name = "URL")]
    pub url: String,
    /// Address to listen on.
    #[arg(
        long,
        env = "MDMCTL_LISTEN",
        default_value = "0.0.0.0:8443",
        value_name = "ADDR"
    )]
    pub listen: String,
    /// TLS certificate (PEM chain, leaf first) for the server's DNS name; without it, plain HTTP
    /// behind a TLS-terminating proxy.
    #[arg(
        long,
        env = "MDMCTL_TLS_CERT",
        requires = "tls_key",
        value_name = "FILE"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key.
    #[arg(
        long,
        env = "MDMCTL_TLS_KEY",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    pub tls_key: Option<PathBuf>,
    /// Header in which a TLS-terminating proxy forwards the client certificate (RFC 9440
    /// `:base64:` form, or URL-escaped PEM as nginx's `$ssl_client_escaped_cert`).
    #[arg(long, env = "MDMCTL_CLIENT_CERT_HEADER", value_name = "NAME")]
    pub client_cert_header: Option<String>,
    /// More paths to answer MDM check-ins and commands on (besides /mdm, /mdm/checkin,
    /// /mdm/connect, /checkin, /mdm/apple/mdm).
    #[arg(long = "mdm-path", value_name = "PATH")]
    pub mdm_paths: Vec<String>,
    /// Let an imported enrollment with no recorded identity hash bind the first valid
    /// certificate it presents. Off by default: it lets anyone holding any certificate from a
    /// trusted CA claim such a device. Recorded in the activity log.
    #[arg(long)]
    pub allow_retro_association: bool,
    /// A fixed SCEP challenge; without it, every `/enroll` download carries a one-time challenge.
    #[arg(long, env = "MDMCTL_SCEP_CHALLENGE", hide_env_values = true)]
    pub scep_challenge: Option<String>,
    /// Let anyone download the enrollment profile (no enrollment secret), and let a new device
    /// enroll with any certificate a store CA vouches for. Off by default: `/enroll` asks for a
    /// secret from `mdmctl enroll-secret create`. Warned about at start.
    #[arg(long)]
    pub open_enrollment: bool,
    /// How long a one-time SCEP challenge minted for an enrollment stays usable.
    #[arg(long, default_value_t = 60, value_name = "MINUTES")]
    pub challenge_ttl_minutes: u32,
    /// Requests to `/enroll` and `/scep` allowed per client address per minute (0: no limit).
    #[arg(long, default_value_t = 120, value_name = "N")]
    pub enroll_rate_limit: u32,
    /// Behind a proxy or load balancer: the header it puts the client's address in
    /// (`X-Forwarded-For`, whose last entry is used, or `X-Real-IP`), for the rate limits.
    #[arg(long, env = "MDMCTL_CLIENT_IP_HEADER", value_name = "NAME")]
    pub client_ip_header: Option<String>,
    /// Accept SCEP requests encrypted with single DES (OpenSSL's legacy provider). Only for old
    /// SCEP clients such as micromdm's `scepclient`; Apple devices use AES.
    #[arg(long)]
    pub scep_legacy_des: bool,
    /// Validity of identity certificates the SCEP CA issues.
    #[arg(long, default_value_t = 365, value_name = "DAYS")]
    pub scep_validity_days: u32,
    /// APNs base URL (Apple's production gateway unless testing).
    #[arg(long, env = "MDMCTL_APNS_URL", default_value = PRODUCTION_URL, value_name = "URL")]
    pub apns_url: String,
    /// Trust only this CA for the APNs server's certificate (a local APNs stand-in).
    #[arg(long, env = "MDMCTL_APNS_CA_FILE", value_name = "FILE")]
    pub apns_ca_file: Option<PathBuf>,
    /// A CA certificate the enrollment profile tells devices to trust (a private TLS CA).
    #[arg(long, value_name = "FILE")]
    pub enroll_anchor: Vec<PathBuf>,
    /// Connections served at once; past it, devices wait in the accept queue. Bounds memory
    /// when a push wakes a whole fleet (about 26 KB per live connection).
    #[arg(
        long,
        env = "MDMCTL_MAX_CONNECTIONS",
        default_value_t = 1024,
        value_name = "N"
    )]
    pub max_connections: usize,
    /// Organization name shown in the enrollment profile and on `/`.
    #[arg(long, env = "MDMCTL_ORG", default_value = "mdmctl")]
    pub org: String,
    /// The old MDM's enrollment profile (`.mobileconfig`, signed or not). Migrated devices whose
    /// identity nears expiry get a profile keeping its PayloadIdentifier, ServerURL, CheckInURL
    /// and Topic, with a SCEP payload pointing at this server, so they renew silently.
    #[arg(long, env = "MDMCTL_MIGRATION_ENROLLMENT_PROFILE", value_name = "FILE")]
    pub migration_enrollment_profile: Option<PathBuf>,
    /// Renew migrated devices' identities this many days before they expire (0: never).
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    pub renew_before_days: u32,
    /// How long a background job's lease lasts unrenewed (renewed every third of it). With
    /// several instances on one store, one runs each job; when it dies, another takes the
    /// job over within this time.
    #[arg(
        long,
        env = "MDMCTL_LEASE_SECONDS",
        default_value_t = 30,
        value_name = "SECONDS"
    )]
    pub lease_seconds: u32,
    /// How often Apple Business Manager's devices are synced (one instance runs it), when a
    /// server token is installed; 0: never. The service is `MDMCTL_ABM_URL` when set.
    #[arg(
        long,
        env = "MDMCTL_ABM_SYNC_INTERVAL",
        default_value_t = 60,
        value_name = "MINUTES"
    )]
    pub abm_sync_interval: u32,
    /// How long a Mac enrolling from Setup Assistant (ABM profile with
    /// `await_device_configured`) waits for its profiles to be verified before it is released
    /// anyway (and reported).
    #[arg(
        long,
        env = "MDMCTL_RELEASE_AFTER",
        default_value_t = 15,
        value_name = "MINUTES"
    )]
    pub release_after: u32,
    /// Also trust this CA (PEM) as the issuer of the device certificates that sign MachineInfo
    /// at automated enrollment, besides Apple's iPhone Device CA: for a device stand-in in
    /// tests and demos, never in production (repeatable).
    #[arg(long, value_name = "FILE")]
    pub machine_info_ca: Vec<PathBuf>,
    /// Also serve `/metrics`, `/livez` and `/readyz` on this address, plain HTTP and without
    /// a token (for a local Prometheus or a private network). Without it, `/metrics` on the
    /// main address needs an API token.
    #[arg(long, env = "MDMCTL_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Staged cutover: the old server's address. Devices outside the cutover set (`mdmctl
    /// cutover set`) are forwarded to it unchanged, after their identity is checked here; so
    /// are SCEP and `/enroll` requests and devices the store does not know.
    #[arg(long, env = "MDMCTL_UPSTREAM", value_name = "URL")]
    pub upstream: Option<String>,
    /// Trust this CA (PEM) for the old server's TLS certificate, besides the system's roots.
    #[arg(
        long,
        env = "MDMCTL_UPSTREAM_CA_FILE",
        value_name = "FILE",
        requires = "upstream"
    )]
    pub upstream_ca_file: Option<PathBuf>,
    /// During a staged cutover, answer SCEP, `/enroll` and devices the store does not know
    /// here instead of forwarding them to `--upstream`.
    #[arg(long, requires = "upstream")]
    pub serve_enrollment: bool,
    /// Staged cutover: the old server's migration endpoint (NanoMDM: `PUT /migration`, run
    /// with `-migration`). The Authenticate, TokenUpdate, SetBootstrapToken and CheckOut of
    /// devices served here are sent to it, in order, retried until it takes them, so a
    /// rollback finds their current push tokens. Its API key: `MDMCTL_UPSTREAM_API_KEY` or
    /// `--upstream-api-key-file`.
    #[arg(
        long,
        env = "MDMCTL_UPSTREAM_MIGRATION_URL",
        value_name = "URL",
        requires = "upstream"
    )]
    pub upstream_migration_url: Option<String>,
    /// Read the old server's API key from the first line of FILE (else `MDMCTL_UPSTREAM_API_KEY`).
    #[arg(long, value_name = "FILE", requires = "upstream_migration_url")]
    pub upstream_api_key_file: Option<PathBuf>,
}

/// Threads for store and crypto work (twice the PostgreSQL pool).
const MAX_BLOCKING_THREADS: usize = 32;

pub fn run(ctx: &Ctx, args: ServeArgs) -> anyhow::Result<()> {
    let url = args.url.trim_end_matches('/').to_string();
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        crate::bail_user!(
            format!("`{url}` is not an http(s) URL"),
            hint: "pass the URL devices enrolled to, e.g. `--url https://mdm.example.com`"
        );
    }
    let listen: SocketAddr = args.listen.parse().map_err(|e| {
        UserError::new(format!(
            "`{}` is not an address to listen on: {e}",
            args.listen
        ))
        .with_hint("pass `--listen 0.0.0.0:8443` (IP and port)")
    })?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => {
            let certs = pki::parse_certs(&read_input(c, "--tls-cert")?)
                .with_context(|| format!("reading `{}`", c.display()))?;
            let key = load_key(
                k,
                "--tls-key",
                None,
                "decrypt the TLS key first: `openssl pkey -in KEY -out KEY.decrypted`",
            )?;
            if !pki::key_matches_cert(&key, &certs[0])? {
                crate::bail_user!(
                    format!("the key `{}` does not match the certificate `{}`", k.display(), c.display()),
                    hint: "pass the key the TLS certificate was issued for"
                );
            }
            Some((certs, key))
        }
        _ => None,
    };
    let apns_roots = match &args.apns_ca_file {
        Some(p) => pki::parse_certs(&read_input(p, "--apns-ca-file")?)
            .with_context(|| format!("reading `{}`", p.display()))?,
        None => Vec::new(),
    };
    let mut anchors = Vec::new();
    for p in &args.enroll_anchor {
        anchors.extend(
            pki::parse_certs(&read_input(p, "--enroll-anchor")?)
                .with_context(|| format!("reading `{}`", p.display()))?,
        );
    }

    let mut machine_info_cas = Vec::new();
    for p in &args.machine_info_ca {
        machine_info_cas.extend(
            pki::parse_certs(&read_input(p, "--machine-info-ca")?)
                .with_context(|| format!("reading `{}`", p.display()))?,
        );
    }

    if args.scep_legacy_des {
        crate::pki::scep::enable_legacy_des().map_err(|e| {
            UserError::new(format!("cannot enable single DES: {e}"))
                .with_hint("this OpenSSL has no legacy provider; drop `--scep-legacy-des`")
        })?;
        tracing::warn!("SCEP accepts single-DES requests (--scep-legacy-des)");
    }
    let store = ctx.open_store()?;
    store.unlock()?;
    let (has_ca, has_issuing, has_apns) =
        store.read(|tx| -> Result<_, crate::store::StoreError> {
            let cas = tx.assets(AssetKind::ScepCa)?;
            Ok((
                cas.iter().any(|a| a.state != AssetState::Retired),
                cas.iter()
                    .any(|a| a.state == AssetState::Active && a.has_key),
                tx.active_asset(AssetKind::Apns)?.is_some(),
            ))
        })?;
    if !has_ca {
        crate::bail_user!(
            "the store has no SCEP CA: device identities cannot be checked and no device can enroll",
            hint: "import the old MDM's CA (`mdmctl set mdm-apple --scep-cert F --scep-key F` or `mdmctl import-devices`), or generate one with `mdmctl generate mdm-apple`"
        );
    }
    if !has_issuing {
        ctx.warn("the store has no issuing SCEP CA: migrated devices are served, but no device can enroll and identities cannot be renewed; make one with `mdmctl generate mdm-apple --scep-ca` (or choose the old CA with `mdmctl set mdm-apple --scep-cert F --scep-key F`)");
    }
    if !has_apns {
        ctx.warn("the store has no APNs push certificate: devices will only get commands when they check in on their own; `mdmctl set mdm-apple --apns-cert FILE`");
    }
    // Recorded so `mdmctl abm sync` run elsewhere builds the same enrollment profile URL.
    store.write(|tx| {
        if tx.meta_get(crate::abm::assign::SERVER_URL_KEY)?.as_deref() != Some(url.as_str()) {
            tx.meta_set(crate::abm::assign::SERVER_URL_KEY, &url)?;
        }
        Ok::<_, crate::store::StoreError>(())
    })?;
    if args.open_enrollment {
        ctx.warn("--open-enrollment: anyone who can reach this server can download the enrollment profile and enroll a device, and receive its team's profiles; create enrollment secrets instead (`mdmctl enroll-secret create`)");
        let actor = ctx.actor();
        store.write(|tx| {
            tx.record_activity(&NewActivity {
                actor: actor.clone(),
                kind: "serve.open_enrollment".into(),
                device_id: None,
                summary: "started serve with --open-enrollment".into(),
                details: serde_json::json!({ "url": url }),
            })
        })?;
    }
    if args.allow_retro_association {
        let actor = ctx.actor();
        store.write(|tx| {
            tx.record_activity(&NewActivity {
                actor: actor.clone(),
                kind: "serve.retro_association".into(),
                device_id: None,
                summary: "started serve with --allow-retro-association".into(),
                details: serde_json::json!({ "url": url }),
            })
        })?;
    }

    let migration = match &args.migration_enrollment_profile {
        None => None,
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| {
                UserError::new(format!("cannot read `{}`: {e}", path.display()))
                    .with_hint("pass the old MDM's enrollment profile (.mobileconfig)")
            })?;
            Some(crate::reconcile::renewal::parse_migration_profile(&bytes).map_err(|e| {
                UserError::new(format!("`{}`: {e}", path.display())).with_hint(
                    "pass the enrollment profile the old MDM installed (it has a com.apple.mdm payload)",
                )
            })?)
        }
    };

    let mut config = ServeConfig::new(&url);
    if args.renew_before_days > 0 {
        config.reconcile.renewal = Some(crate::reconcile::renewal::RenewalPolicy {
            window: std::time::Duration::from_secs(u64::from(args.renew_before_days) * 86_400),
            scep_url: format!("{url}/scep"),
            organization: args.org.clone(),
            migration,
        });
    }
    config.mdm_paths.extend(args.mdm_paths.iter().cloned());
    config.client_cert_header = args.client_cert_header.clone();
    config.allow_retro_association = args.allow_retro_association;
    config.scep_challenge = args.scep_challenge.clone().map(Zeroizing::new);
    config.open_enrollment = args.open_enrollment;
    config.challenge_ttl =
        std::time::Duration::from_secs(u64::from(args.challenge_ttl_minutes.max(1)) * 60);
    config.enroll_rate_per_minute = args.enroll_rate_limit;
    config.client_ip_header = args.client_ip_header.clone();
    config.scep_validity_days = args.scep_validity_days;
    config.enroll_anchors = anchors;
    config.organization = args.org.clone();
    config.lease = std::time::Duration::from_secs(u64::from(args.lease_seconds.max(3)));
    config.abm_sync_interval =
        std::time::Duration::from_secs(u64::from(args.abm_sync_interval) * 60);
    config.reconcile.release_after =
        std::time::Duration::from_secs(u64::from(args.release_after) * 60);
    if !machine_info_cas.is_empty() {
        ctx.warn("--machine-info-ca: automated enrollment also accepts devices whose MachineInfo is signed under this CA; use it with device stand-ins only");
        config.machine_info_cas.extend(machine_info_cas);
    }
    if let Ok(url) = std::env::var("MDMCTL_ABM_URL") {
        config.abm_url = url;
    }
    if let Some(url) = &args.upstream {
        let roots = match &args.upstream_ca_file {
            None => Vec::new(),
            Some(p) => {
                let bytes = std::fs::read(p).map_err(|e| {
                    UserError::new(format!("cannot read `{}`: {e}", p.display()))
                        .with_hint("--upstream-ca-file takes the CA certificate (PEM) of the old server's TLS certificate")
                })?;
                crate::pki::parse_certs(&bytes).map_err(|e| {
                    UserError::new(format!("`{}`: {e}", p.display()))
                        .with_hint("--upstream-ca-file takes the CA certificate (PEM) of the old server's TLS certificate")
                })?
            }
        };
        let up =
            crate::server::upstream::Upstream::new(url, &roots, std::time::Duration::from_secs(30))
                .map_err(|e| {
                    UserError::new(format!("--upstream: {e}")).with_hint(
                        "--upstream takes the old server's URL, such as https://old-mdm.internal",
                    )
                })?;
        ctx.warn(&format!(
            "staged cutover: devices outside the cutover set are forwarded to {} (`mdmctl cutover set` moves them here){}",
            up.url(),
            if args.serve_enrollment { "" } else { "; so are SCEP, /enroll and devices this store does not know" }
        ));
        config.upstream = Some(std::sync::Arc::new(up));
        config.serve_enrollment = args.serve_enrollment;
        if let Some(mirror_url) = &args.upstream_migration_url {
            let key = match &args.upstream_api_key_file {
                Some(p) => std::fs::read_to_string(p)
                    .map_err(|e| {
                        UserError::new(format!("cannot read `{}`: {e}", p.display()))
                            .with_hint("--upstream-api-key-file takes a file whose first line is the old server's API key")
                    })?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
                None => std::env::var("MDMCTL_UPSTREAM_API_KEY").unwrap_or_default(),
            };
            if key.is_empty() {
                return Err(UserError::new("--upstream-migration-url needs the old server's API key")
                    .with_hint("set MDMCTL_UPSTREAM_API_KEY or pass --upstream-api-key-file F (NanoMDM's -api key)")
                    .into());
            }
            let mirror = crate::server::upstream::Mirror::new(
                mirror_url,
                Zeroizing::new(key),
                &roots,
                std::time::Duration::from_secs(30),
            )
            .map_err(|e| {
                UserError::new(format!("--upstream-migration-url: {e}"))
                    .with_hint("pass the old server's migration endpoint, such as https://old-mdm.internal/migration")
            })?;
            ctx.warn(&format!(
                "staged cutover: check-ins of devices served here are mirrored to {}",
                mirror.url()
            ));
            config.mirror = Some(std::sync::Arc::new(mirror));
        }
    }
    if let Some((certs, key)) = &tls {
        config.profile_signer = Some((certs[0].clone(), key.clone()));
        config.tls_not_after = crate::pki::CertInfo::of(&certs[0])
            .ok()
            .map(|i| i.not_after);
    }
    let mut apns = if apns_roots.is_empty() {
        ApnsConfig::production()
    } else {
        ApnsConfig::local(args.apns_url.clone(), apns_roots)
    };
    apns.base_url = args.apns_url.trim_end_matches('/').to_string();

    // Store and crypto work runs on blocking threads; more of them than the database has
    // connections only adds memory (each thread its stack and malloc arena).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()?;
    // The store outlives the runtime: PostgreSQL's blocking client shuts its connections down
    // with a runtime of its own, which must not happen on one of this runtime's threads.
    let keep = store.clone();
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
            UserError::new(format!("cannot listen on `{listen}`: {e}"))
                .with_hint("pick a free port with `--listen`")
        })?;
        let bound = listener.local_addr()?;
        let acceptor = match &tls {
            Some((certs, key)) => Some(server::tls_acceptor(certs, key)?),
            None => None,
        };
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        // The first line on stdout says where we listen (scripts and tests read it).
        println!("listening on {scheme}://{bound}");
        tracing::info!(%bound, url = %url, tls = acceptor.is_some(), "serving");
        let pushes = Arc::new(PushService::new(store.clone(), apns));
        let state = AppState::new(store, config, pushes);
        if let Some(addr) = &args.metrics_listen {
            let metrics = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                UserError::new(format!("cannot listen on `{addr}` for metrics: {e}"))
                    .with_hint("pick a free address with `--metrics-listen`")
            })?;
            tracing::info!(addr = %metrics.local_addr()?, "serving /metrics, /livez and /readyz");
            let app = server::metrics_app(state.clone());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(metrics, app).await {
                    tracing::error!(error = %e, "the metrics listener stopped");
                }
            });
        }
        let served = server::serve(
            listener,
            acceptor,
            server::app(state.clone()),
            args.max_connections,
            shutdown_signal(),
        )
        .await;
        // Another instance takes this one's jobs at once, rather than after the lease lapses.
        server::jobs::stop(&state).await;
        served?;
        Ok::<_, anyhow::Error>(())
    });
    drop(runtime);
    drop(keep);
    served
}

/// SIGTERM (service managers) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}
