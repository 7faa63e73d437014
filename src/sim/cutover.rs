//! The DNS cutover, run in-process for `mdmctl demo`: `serve` answers at the old server's URL
//! on the store the old MDM was imported into, the APNs stand-in plays Apple's gateway. First
//! staged, in front of a running stand-in of the old NanoMDM (`serve --upstream`, check-ins
//! mirrored back): 0 % (the old server answers every Mac through mdmctl), 10 %, a rollback,
//! then every Mac. The old MDM's Macs check in with the identities its CA issued, then one
//! command goes to all of them
//! (queued, pushed to their old tokens, fetched and acknowledged), the profiles `apply` put in
//! desired state are delivered and verified, FileVault keys are escrowed once users log out,
//! the update declaration reaches the Macs it is for, and an impostor is refused. Last, with
//! [`AbmDemo`], Apple Business Manager: a sync with the ABM stand-in assigns the new Macs the
//! default team's enrollment profile, and one of them enrolls from Setup Assistant through the
//! profile's URL and is released once its team's profiles are verified.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openssl::x509::X509;
use tokio::net::TcpListener;

use super::apns::{ApnsStandIn, StandInConfig};
use super::device::{Endpoint, Fleet, IdentityMode, SimDevice, http_client};
use super::nanomdm_server::NanoMdmStandIn;
use crate::apple::command::named;
use crate::cutover::stage::{self, Change};
use crate::push::{ApnsConfig, PushService};
use crate::server::upstream::{Mirror, Upstream};
use crate::server::{self, AppState, ServeConfig};
use crate::store::{QueueStatus, Store};

/// What happened.
#[derive(Clone, Debug, Default)]
pub struct CutoverReport {
    pub devices: usize,
    /// Macs whose first request after the cutover, signed with the old identity, got 200.
    pub accepted: usize,
    /// Devices the store now records as migrated (first contact after the cutover).
    pub migrated: usize,
    pub pushes_delivered: usize,
    /// Macs that acknowledged the command sent to all of them.
    pub acknowledged: usize,
    /// Profiles from desired state, per state over all devices, once delivery settled.
    pub profiles_verified: i64,
    pub profiles_failed: i64,
    /// Profiles the old MDM installed, left alone.
    pub profiles_unmanaged: i64,
    /// Macs whose users logged out, turning FileVault on, and whose recovery key mdmctl
    /// escrowed (of those that got the FileVault profile).
    pub filevault_escrowed: usize,
    pub filevault_profiles: usize,
    /// Macs on macOS 14 or later below their minimum version reporting the software-update
    /// declaration active.
    pub declarations_active: usize,
    /// What the server answered a Mac presenting a certificate from an unknown CA.
    pub impostor_status: u16,
    /// The staged phase, when an old server ran.
    pub staged: Option<StagedReport>,
    /// The Apple Business Manager step, when asked for.
    pub abm: Option<AbmReport>,
    pub elapsed: Duration,
}

/// Apple Business Manager in the demo: the stand-in's token (as installed in the store), the
/// pretend Apple whose device CA signs MachineInfo, and how many new Macs ABM lists.
pub struct AbmDemo<'a> {
    pub token: crate::assets::abm::ServerToken,
    pub apple: &'a super::apple::FakeApple,
    pub new_macs: usize,
}

/// What the Apple Business Manager step did.
#[derive(Clone, Debug, Default)]
pub struct AbmReport {
    pub synced: usize,
    pub assigned: usize,
    /// The profile's URL the Mac contacted, the team it joined, and the profiles it had when
    /// DeviceConfigured released it.
    pub enroll_url: String,
    pub team: Option<String>,
    pub released_with: usize,
    pub released_after: Duration,
}

/// The staged phase in front of the old server: Macs answered by each side at each step.
#[derive(Clone, Debug, Default)]
pub struct StagedReport {
    /// At 0 %: Macs whose session the old server answered (through mdmctl).
    pub zero_old: usize,
    /// At 10 %: Macs answered by mdmctl, and by the old server.
    pub ten_moved: usize,
    pub ten_old: usize,
    /// After `cutover rollback`: Macs the old server answered again.
    pub rolled_back_old: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum CutoverError {
    #[error("simulated device: {0}")]
    Sim(#[from] super::device::SimError),
    #[error("APNs stand-in: {0}")]
    Apns(#[from] super::apns::SimError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("staged cutover: {0}")]
    Staged(String),
    #[error("the devices did not acknowledge the command and settle their profiles within {0:?}")]
    Timeout(Duration),
}

/// What the cutover runs with.
pub struct Scenario<'a> {
    /// The old server's URL, which `serve` answers at.
    pub url: &'a str,
    /// The pretend Apple's CA (it issued the push certificate).
    pub apple_ca: X509,
    /// The old MDM's Macs.
    pub devices: &'a [Arc<SimDevice>],
    pub organization: &'a str,
    /// The old server's SCEP CA: with it, a stand-in of the old NanoMDM runs and the cutover
    /// is staged first.
    pub old_ca: Option<X509>,
    pub abm: Option<AbmDemo<'a>>,
}

/// Serve on `listener` (bound to the host and port in `url`) until every device has been
/// through the cutover; everything started here is stopped before returning.
pub async fn run(
    store: Arc<dyn Store>,
    listener: TcpListener,
    scenario: Scenario<'_>,
) -> Result<CutoverReport, CutoverError> {
    let Scenario {
        url,
        apple_ca,
        devices,
        organization,
        old_ca,
        abm,
    } = scenario;
    let start = Instant::now();
    let apns = ApnsStandIn::start(apple_ca, StandInConfig::default()).await?;
    let pushes = Arc::new(PushService::new(
        store.clone(),
        ApnsConfig::local(apns.base_url(), vec![apns.server_ca().to_owned()]),
    ));
    let mut config = ServeConfig::new(url);
    config.organization = organization.to_string();
    // Deliver profiles promptly and ask for FileVault keys again soon: the demo waits for them.
    config.reconcile.interval = Duration::from_millis(250);
    config.reconcile.filevault_recheck = Duration::from_millis(500);
    // The demo's ABM token is for a pretend Apple: no background sync; the ABM step syncs once
    // with the stand-in, as `mdmctl abm sync` does.
    config.abm_sync_interval = Duration::ZERO;
    let abm_stand_in = match &abm {
        None => None,
        Some(a) => {
            let l = TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| CutoverError::Staged(e.to_string()))?;
            let s = super::abm::AbmStandIn::start(l, a.token.clone())
                .await
                .map_err(|e| CutoverError::Staged(e.to_string()))?;
            s.add_devices(0, a.new_macs);
            config.abm_url = s.url().to_string();
            config.machine_info_cas.push(a.apple.device_ca_cert.clone());
            // Automated enrollment is answered here even in front of the old server.
            config.serve_enrollment = true;
            Some(s)
        }
    };
    // The old NanoMDM, running: what mdmctl forwards and mirrors back lands there.
    let old = match old_ca {
        None => None,
        Some(ca) => {
            let l = TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| CutoverError::Staged(e.to_string()))?;
            let old_url = format!(
                "http://{}",
                l.local_addr()
                    .map_err(|e| CutoverError::Staged(e.to_string()))?
            );
            let nano = NanoMdmStandIn::start(l, ca, OLD_API_KEY).await;
            for d in devices {
                nano.preload_device(d);
            }
            let timeout = Duration::from_secs(10);
            config.upstream = Some(Arc::new(
                Upstream::new(&old_url, &[], timeout).map_err(CutoverError::Staged)?,
            ));
            config.mirror = Some(Arc::new(
                Mirror::new(
                    &format!("{old_url}/migration"),
                    zeroize::Zeroizing::new(OLD_API_KEY.to_string()),
                    &[],
                    timeout,
                )
                .map_err(CutoverError::Staged)?,
            ));
            Some(nano)
        }
    };
    let config_url = config.url.clone();
    let state = AppState::new(store.clone(), config, pushes.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(
        listener,
        None,
        server::app(state),
        // As `serve`'s default: the simulated Macs keep their connections open between sessions.
        1024,
        async {
            let _ = stopped.await;
        },
    ));
    let result = async {
        let staged = match &old {
            Some(nano) => Some(staged(&store, nano, devices).await?),
            None => None,
        };
        let mut report = drive(&store, &pushes, &apns, url, devices).await?;
        report.staged = staged;
        if let (Some(a), Some(s)) = (&abm, &abm_stand_in) {
            report.abm = Some(abm_step(&store, &apns, &config_url, a, s).await?);
        }
        Ok::<_, CutoverError>(report)
    }
    .await;
    let _ = stop.send(());
    let _ = server.await;
    apns.shutdown().await;
    let mut report = result?;
    report.elapsed = start.elapsed();
    Ok(report)
}

const OLD_API_KEY: &str = "demo-nanomdm-api-key";

/// ABM: sync and assign (as `mdmctl abm sync`), then the first new Mac enrolls from Setup
/// Assistant at the URL ABM's profile gives it, and waits for DeviceConfigured.
async fn abm_step(
    store: &Arc<dyn Store>,
    apns: &ApnsStandIn,
    url: &str,
    a: &AbmDemo<'_>,
    stand_in: &super::abm::AbmStandIn,
) -> Result<AbmReport, CutoverError> {
    let failed = |e: String| CutoverError::Staged(format!("ABM: {e}"));
    let token = a.token.clone();
    let client = crate::abm::DepClient::new(stand_in.url(), &token, crate::abm::Retry::default())
        .map_err(|e| failed(e.to_string()))?;
    let (pass, assign_error) = crate::abm::sync_now(&client, store, false, true, Some(url))
        .await
        .map_err(|e| failed(e.to_string()))?;
    if let Some(e) = assign_error {
        return Err(failed(e.to_string()));
    }
    let assigned = pass.assign.map_or(0, |x| x.assigned);
    let serial = "ABM0000000";
    let (_, profile) = stand_in
        .assigned_profile(serial)
        .ok_or_else(|| failed(format!("{serial} got no profile")))?;
    let enroll_url = profile["url"].as_str().unwrap_or_default().to_string();
    let mut token = vec![0u8; 32];
    let _ = openssl::rand::rand_bytes(&mut token);
    let udid = uuid::Uuid::new_v4().to_string().to_uppercase();
    let mac = Arc::new(
        SimDevice::new(
            90_000,
            "15.2",
            IdentityMode::Signature,
            http_client(&[])?,
            &[],
        )?
        .with_ids(&udid, serial, token, &uuid::Uuid::new_v4().to_string()),
    );
    mac.set_awaiting_configuration(true);
    let info = a
        .apple
        .machine_info(&mac.udid, serial, "Mac15,12", "15.2")
        .map_err(|e| failed(e.to_string()))?;
    let (status, enrollment) = mac.fetch_dep_profile(&enroll_url, &info, true).await?;
    if status != 200 {
        return Err(failed(format!("{enroll_url} answered {status}")));
    }
    let start = Instant::now();
    mac.enroll(&enrollment).await?;
    let waker = Fleet::new([mac.clone()]).wake_on_push(apns.subscribe());
    let limit = Duration::from_secs(120);
    while mac.awaiting_configuration() {
        if start.elapsed() > limit {
            waker.abort();
            return Err(CutoverError::Timeout(limit));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    waker.abort();
    let s = store.clone();
    let id = mac.udid.clone();
    let team = tokio::task::spawn_blocking(move || s.read(|tx| tx.device_team(&id)))
        .await
        .map_err(|e| failed(e.to_string()))??;
    Ok(AbmReport {
        synced: pass.sync.records,
        assigned,
        enroll_url,
        team,
        released_with: mac.released_with().map_or(0, |p| p.len()),
        released_after: start.elapsed(),
    })
}

/// One session per Mac, 32 at a time; how many the old server answered (its count of reports
/// grew).
async fn sessions(devices: &[Arc<SimDevice>], nano: &NanoMdmStandIn) -> usize {
    let before: Vec<usize> = devices
        .iter()
        .map(|d| nano.enrollment(&d.udid).map_or(0, |e| e.reports.len()))
        .collect();
    let slots = Arc::new(tokio::sync::Semaphore::new(32));
    let mut set = tokio::task::JoinSet::new();
    for d in devices {
        let (d, slots) = (d.clone(), slots.clone());
        set.spawn(async move {
            let _slot = slots.acquire_owned().await;
            d.session().await
        });
    }
    while set.join_next().await.is_some() {}
    devices
        .iter()
        .zip(before)
        .filter(|(d, b)| nano.enrollment(&d.udid).map_or(0, |e| e.reports.len()) > *b)
        .count()
}

/// The staged cutover: 0 %, 10 %, a rollback, then every Mac (`cutover set --all`).
async fn staged(
    store: &Arc<dyn Store>,
    nano: &NanoMdmStandIn,
    devices: &[Arc<SimDevice>],
) -> Result<StagedReport, CutoverError> {
    let change = |c: Change| {
        let store = store.clone();
        async move {
            tokio::task::spawn_blocking(move || stage::apply(store.as_ref(), &c, "demo", false))
                .await
                .map_err(|e| CutoverError::Staged(e.to_string()))?
                .map_err(|e| CutoverError::Staged(e.to_string()))?;
            // Every instance reads the set again within 2 s.
            tokio::time::sleep(Duration::from_millis(2100)).await;
            Ok::<_, CutoverError>(())
        }
    };
    let mut r = StagedReport {
        zero_old: sessions(devices, nano).await,
        ..Default::default()
    };
    change(Change::Percent(10)).await?;
    r.ten_old = sessions(devices, nano).await;
    r.ten_moved = devices.len() - r.ten_old;
    change(Change::AllBack).await?;
    r.rolled_back_old = sessions(devices, nano).await;
    change(Change::All).await?;
    Ok(r)
}

async fn drive(
    store: &Arc<dyn Store>,
    pushes: &Arc<PushService>,
    apns: &ApnsStandIn,
    url: &str,
    devices: &[Arc<SimDevice>],
) -> Result<CutoverReport, CutoverError> {
    let mut report = CutoverReport {
        devices: devices.len(),
        ..Default::default()
    };
    // 1. Every Mac's next check-in, as after the DNS change: an Idle signed with its old identity.
    let slots = Arc::new(tokio::sync::Semaphore::new(32));
    let mut sessions = tokio::task::JoinSet::new();
    for d in devices {
        let (d, slots) = (d.clone(), slots.clone());
        sessions.spawn(async move {
            let _slot = slots.acquire_owned().await;
            d.session().await
        });
    }
    while let Some(done) = sessions.join_next().await {
        if matches!(done, Ok(Ok(200))) {
            report.accepted += 1;
        }
    }
    let ids: Vec<String> = devices.iter().map(|d| d.udid.clone()).collect();
    let s = store.clone();
    let lookup = ids.clone();
    report.migrated = tokio::task::spawn_blocking(move || {
        s.read(|tx| {
            let mut n = 0;
            for id in &lookup {
                if tx.device(id)?.is_some_and(|d| d.migrated_at.is_some()) {
                    n += 1;
                }
            }
            Ok::<_, crate::store::StoreError>(n)
        })
    })
    .await
    .map_err(|e| crate::store::StoreError::Decode(e.to_string()))??;

    // 2. One command to the whole fleet: queued, pushed through the old push certificate.
    let fleet = Fleet::new(devices.iter().cloned());
    let waker = fleet.wake_on_push(apns.subscribe());
    let command = named::device_information(named::DEFAULT_QUERIES);
    let sent = crate::mdm::send(store, Some(pushes), &command, &ids, "demo").await?;
    report.pushes_delivered = sent.push.map(|p| p.delivered).unwrap_or(0);
    let limit = Duration::from_secs(60);
    let deadline = Instant::now() + limit;
    loop {
        let s = store.clone();
        let uuid = command.uuid.clone();
        let entries = tokio::task::spawn_blocking(move || crate::mdm::status(s.as_ref(), &uuid))
            .await
            .map_err(|e| crate::store::StoreError::Decode(e.to_string()))??;
        report.acknowledged = entries
            .iter()
            .filter(|e| e.status == QueueStatus::Acknowledged)
            .count();
        if report.acknowledged == devices.len() {
            break;
        }
        if Instant::now() > deadline {
            waker.abort();
            return Err(CutoverError::Timeout(limit));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 3. Desired profiles: first contact marked each device; the reconciler installs its
    //    profiles and verifies them with ProfileList.
    loop {
        let s = store.clone();
        let counts =
            tokio::task::spawn_blocking(move || s.read(|tx| tx.profile_status_counts(None)))
                .await
                .map_err(|e| crate::store::StoreError::Decode(e.to_string()))??;
        report.profiles_verified = counts.verified;
        report.profiles_failed = counts.failed;
        report.profiles_unmanaged = counts.unmanaged;
        let settled = counts.pending + counts.verifying + counts.removing == 0;
        if settled && counts.verified + counts.failed > 0 {
            break;
        }
        if Instant::now() > deadline {
            waker.abort();
            return Err(CutoverError::Timeout(limit));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 4. FileVault: the users of the Macs that got the FileVault profile log out; FileVault
    //    turns on and macOS escrows the recovery key, which `serve` fetches with SecurityInfo.
    let with_filevault: Vec<&Arc<SimDevice>> = devices
        .iter()
        .filter(|d| d.escrow_certificate().is_some())
        .collect();
    report.filevault_profiles = with_filevault.len();
    for (i, d) in with_filevault.iter().enumerate() {
        d.turn_on_filevault(&format!("DEMO-{:04}-KEYA-BBBB-CCCC-DDDD", i))?;
    }
    loop {
        let s = store.clone();
        let counts =
            tokio::task::spawn_blocking(move || s.read(|tx| tx.disk_encryption_counts(None)))
                .await
                .map_err(|e| crate::store::StoreError::Decode(e.to_string()))??;
        report.filevault_escrowed = counts
            .iter()
            .find(|(state, _)| *state == crate::store::FdeState::Verified)
            .map_or(0, |(_, n)| usize::try_from(*n).unwrap_or(0));
        if report.filevault_escrowed >= with_filevault.len() {
            break;
        }
        if Instant::now() > deadline {
            waker.abort();
            return Err(CutoverError::Timeout(limit));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 5. Update enforcement: the Macs the software-update declaration is for sync it by DDM and
    //    report it active.
    let ids: Vec<String> = devices.iter().map(|d| d.udid.clone()).collect();
    loop {
        let s = store.clone();
        let ids = ids.clone();
        let (wanted, active) = tokio::task::spawn_blocking(move || {
            s.read(|tx| {
                let (mut wanted, mut active) = (0, 0);
                for id in &ids {
                    let decls = crate::reconcile::declarations::device_declarations(tx, id)?;
                    wanted += usize::from(!decls.is_empty());
                    active += usize::from(tx.declaration_statuses(id)?.iter().any(|d| {
                        d.identifier == crate::apple::profile::SOFTWARE_UPDATE_ID
                            && d.active == Some(true)
                    }));
                }
                Ok::<_, crate::store::StoreError>((wanted, active))
            })
        })
        .await
        .map_err(|e| crate::store::StoreError::Decode(e.to_string()))??;
        report.declarations_active = active;
        if active >= wanted {
            break;
        }
        if Instant::now() > deadline {
            waker.abort();
            return Err(CutoverError::Timeout(limit));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    waker.abort();

    // 6. A Mac whose certificate no trusted CA issued.
    let (stranger_cert, stranger_key) = stranger()?;
    let topic = devices.first().and_then(|d| d.topic()).unwrap_or_default();
    let impostor = SimDevice::with_key(
        99_999,
        "15.1",
        IdentityMode::Signature,
        http_client(&[])?,
        &[],
        stranger_key.clone(),
    )?
    .with_identity(
        stranger_cert,
        stranger_key,
        Endpoint {
            server_url: format!("{url}/mdm"),
            check_in_url: format!("{url}/mdm"),
            topic,
        },
    )?;
    report.impostor_status = impostor.session().await?;
    Ok(report)
}

/// A certificate from a CA nobody trusts.
fn stranger() -> Result<(X509, openssl::pkey::PKey<openssl::pkey::Private>), CutoverError> {
    let crypto = |e: crate::pki::PkiError| super::device::SimError::Crypto(e.to_string());
    let (ca, ca_key) = crate::pki::new_ca(&crate::pki::CaSpec {
        common_name: "DEMO stranger CA".into(),
        organization: "Nobody".into(),
        country: "US".into(),
        key_bits: 2048,
        years: 1,
    })
    .map_err(crypto)?;
    let key = crate::pki::generate_rsa(2048).map_err(crypto)?;
    let csr = crate::pki::build_csr(
        &key,
        &crate::pki::Subject {
            common_name: "impostor".into(),
            organization: String::new(),
            country: String::new(),
            email: String::new(),
        },
    )
    .map_err(crypto)?;
    let cert = crate::pki::scep::issue_certificate(&csr, &ca, &ca_key, 30)
        .map_err(|e| super::device::SimError::Crypto(e.to_string()))?;
    Ok((cert, key))
}
