//! A real `serve` in the test process: a SQLite store in a temp dir with a SCEP CA and a push
//! certificate, the APNs stand-in, and the server listening on 127.0.0.1 (plain HTTP, or TLS
//! with a test server certificate). Simulated devices talk to it over real sockets.

#![allow(dead_code)]

use std::sync::Arc;

use mdmctl::assets::apns::{SetMdmApple, set_mdm_apple, set_scep_ca};
use mdmctl::pki::{self, CaSpec};
use mdmctl::push::{ApnsConfig, PushService};
use mdmctl::reconcile::renewal::{RenewalPolicy, parse_migration_profile};
use mdmctl::server::{self, AppState, ServeConfig};
use mdmctl::sim::apns::{ApnsStandIn, PushCertOptions, StandInConfig, TestPushCa};
use mdmctl::sim::device::{Endpoint, IdentityMode, SimDevice, http_client};
use mdmctl::store::{
    self, AssetKind, AssetState, DeviceRecord, EnrollmentRecord, Location, NewAsset, NewKey, Store,
};
use mdmctl::timestamp::Timestamp;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use zeroize::Zeroizing;

pub struct Ca {
    pub cert: X509,
    pub key: PKey<Private>,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let (cert, key) = pki::new_ca(&CaSpec {
            common_name: name.into(),
            organization: "Test".into(),
            country: "US".into(),
            key_bits: 2048,
            years: 5,
        })
        .expect("ca");
        Self { cert, key }
    }

    /// A device identity this CA issued, valid `from..to` days from now.
    pub fn issue(&self, cn: &str, from_days: i64, to_days: i64) -> (X509, PKey<Private>) {
        let key = pki::generate_rsa(2048).expect("key");
        (self.issue_for(&key, cn, from_days, to_days), key)
    }

    /// [`Ca::issue`] for a given key (many devices can share one: their certificates differ).
    pub fn issue_for(&self, key: &PKey<Private>, cn: &str, from_days: i64, to_days: i64) -> X509 {
        use openssl::asn1::Asn1Time;
        use openssl::hash::MessageDigest;
        use openssl::x509::extension::{ExtendedKeyUsage, KeyUsage};
        let mut n = openssl::x509::X509NameBuilder::new().unwrap();
        n.append_entry_by_text("CN", cn).unwrap();
        let n = n.build();
        let now = Timestamp::now().0;
        let mut b = openssl::x509::X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(pki::random_serial().unwrap().as_ref())
            .unwrap();
        b.set_subject_name(&n).unwrap();
        b.set_issuer_name(self.cert.subject_name()).unwrap();
        b.set_pubkey(key).unwrap();
        b.set_not_before(
            Asn1Time::from_unix(now + from_days * 86_400)
                .unwrap()
                .as_ref(),
        )
        .unwrap();
        b.set_not_after(
            Asn1Time::from_unix(now + to_days * 86_400)
                .unwrap()
                .as_ref(),
        )
        .unwrap();
        b.append_extension(
            KeyUsage::new()
                .digital_signature()
                .key_encipherment()
                .build()
                .unwrap(),
        )
        .unwrap();
        b.append_extension(ExtendedKeyUsage::new().client_auth().build().unwrap())
            .unwrap();
        b.sign(&self.key, MessageDigest::sha256()).unwrap();
        b.build()
    }
}

pub struct Options {
    pub tls: bool,
    pub client_cert_header: Option<String>,
    pub allow_retro_association: bool,
    pub scep_challenge: Option<String>,
    /// Identity renewal for migrated devices: `None` off (as with `--renew-before-days 0`).
    pub renew: Option<Renew>,
    /// `serve --open-enrollment`.
    pub open_enrollment: bool,
    /// `serve --client-ip-header`.
    pub client_ip_header: Option<String>,
    /// A PostgreSQL store in this schema instead of a SQLite file.
    pub postgres: Option<crate::common::PgSchema>,
    /// `serve --upstream`: a staged cutover in front of this old server.
    pub upstream: Option<String>,
    /// `serve --upstream-migration-url` and the old server's API key.
    pub mirror: Option<(String, String)>,
    /// `MDMCTL_ABM_URL`, with the `abm-sync` job every second.
    pub abm: Option<String>,
    /// `serve --machine-info-ca`: the device stand-in's CA for automated enrollment.
    pub machine_info_ca: Option<X509>,
    /// `serve --release-after` (the default: 15 minutes).
    pub release_after: Option<std::time::Duration>,
}

/// How the server renews migrated identities (30 days before expiry).
#[derive(Clone, Debug)]
pub enum Renew {
    /// No old enrollment profile given: devices are reported, not renewed.
    Blocked,
    /// The old enrollment profile had this PayloadIdentifier and the server's URL and topic.
    OldProfile(String),
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tls: false,
            client_cert_header: None,
            allow_retro_association: false,
            scep_challenge: Some("static-challenge".into()),
            renew: None,
            open_enrollment: false,
            client_ip_header: None,
            postgres: None,
            upstream: None,
            mirror: None,
            abm: None,
            machine_info_ca: None,
            release_after: None,
        }
    }
}

pub struct Server {
    pub dir: tempfile::TempDir,
    pub store: Arc<dyn Store>,
    pub url: String,
    pub apns: ApnsStandIn,
    pub topic: String,
    pub ca: Ca,
    /// The TLS server's CA (devices must trust it), when TLS is on.
    pub tls_roots: Vec<X509>,
    /// The private anchor the old MDM's enrollment profile installed (with
    /// [`Renew::OldProfile`]).
    pub old_anchor: Option<X509>,
    /// An enrollment secret (`mdmctl enroll-secret create`), for `/enroll?token=`.
    pub enroll_secret: String,
    pub pushes: Arc<PushService>,
    /// The PostgreSQL schema holding the store, dropped after it.
    pub postgres: Option<crate::common::PgSchema>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

pub const PASSPHRASE: &str = "server test passphrase";

/// A device as an import leaves it: its identity's hash and its push channel on `topic`.
pub fn record_imported(
    tx: &mut dyn mdmctl::store::Tx,
    d: &SimDevice,
    topic: &str,
) -> Result<(), mdmctl::store::StoreError> {
    let info = pki::CertInfo::of(&d.identity().unwrap()).unwrap();
    tx.put_device(&DeviceRecord {
        id: d.udid.clone(),
        serial: Some(d.serial.clone()),
        source: "imported:test".into(),
        imported_at: Some(Timestamp::now()),
        identity_sha256: Some(info.sha256.clone()),
        identity_not_after: Some(info.not_after),
        ..Default::default()
    })?;
    tx.put_enrollment(&EnrollmentRecord {
        id: d.udid.clone(),
        device_id: d.udid.clone(),
        kind: "Device".into(),
        topic: topic.to_string(),
        push_magic: Some(Zeroizing::new(d.push_magic.clone())),
        token: Some(Zeroizing::new(d.token.clone())),
        enabled: true,
        ..Default::default()
    })
}

/// The store's SCEP CA and push certificate, as `generate` and `set mdm-apple` leave them.
pub fn set_assets(
    tx: &mut dyn mdmctl::store::Tx,
    ca: &Ca,
    push: &mdmctl::sim::apns::MintedPushCert,
) -> Result<(), mdmctl::assets::AssetError> {
    set_scep_ca(tx, &ca.cert, &ca.key, "generated", "test", Timestamp::now())?;
    set_mdm_apple(
        tx,
        &SetMdmApple {
            apns_cert: Some(push.certificate.clone()),
            apns_key: Some(push.private_key.clone()),
            scep: None,
            force: false,
            actor: "test".into(),
        },
    )?;
    Ok(())
}

impl Server {
    /// The activity entries of one kind (`device.migrated`, or a family such as `command.`).
    pub fn activities(&self, kind: &str) -> Vec<mdmctl::store::Activity> {
        self.store
            .read(|tx| {
                tx.activities(&mdmctl::store::ActivityQuery {
                    kind: Some(kind.into()),
                    ..Default::default()
                })
            })
            .unwrap()
    }
}

impl Server {
    pub async fn start(mut opts: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let postgres = opts.postgres.take();
        let location = match &postgres {
            Some(schema) => Location::parse(&schema.url()),
            None => Location::Sqlite(dir.path().join("mdmctl.db")),
        };
        let (store, _) = store::create(
            &location,
            NewKey::Passphrase(Zeroizing::new(PASSPHRASE.into())),
        )
        .unwrap();

        let ca = Ca::new("mdmctl Test SCEP CA");
        let push_ca = TestPushCa::generate().unwrap();
        let minted = push_ca
            .issue_push_certificate(&PushCertOptions::default())
            .unwrap();
        let topic = minted.topic.clone();
        store.write(|tx| set_assets(tx, &ca, &minted)).unwrap();

        let (secret, hash) = mdmctl::secrets::new_credential("mdmctl_enroll_").unwrap();
        store
            .write(|tx| tx.create_enroll_secret("test", &hash, None, None, None, "test"))
            .unwrap();
        let apns = ApnsStandIn::start(push_ca.certificate().clone(), StandInConfig::default())
            .await
            .unwrap();
        let mut apns_config = ApnsConfig::local(apns.base_url(), vec![apns.server_ca().to_owned()]);
        apns_config.retry.base_delay = std::time::Duration::from_millis(20);
        let pushes = Arc::new(PushService::new(store.clone(), apns_config));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (acceptor, tls_roots, scheme) = if opts.tls {
            let server_ca = Ca::new("Test TLS CA");
            let (cert, key) = server_tls_cert(&server_ca);
            (
                Some(server::tls_acceptor(&[cert], &key).unwrap()),
                vec![server_ca.cert.clone()],
                "https",
            )
        } else {
            (None, Vec::new(), "http")
        };
        let url = format!("{scheme}://127.0.0.1:{}", addr.port());
        let old_anchor = matches!(opts.renew, Some(Renew::OldProfile(_)))
            .then(|| Ca::new("Old MDM private TLS root").cert);
        let mut config = ServeConfig::new(&url);
        config.client_cert_header = opts.client_cert_header;
        config.allow_retro_association = opts.allow_retro_association;
        config.scep_challenge = opts.scep_challenge.map(Zeroizing::new);
        config.open_enrollment = opts.open_enrollment;
        config.client_ip_header = opts.client_ip_header;
        config.organization = "Test Org".into();
        config.upstream = opts.upstream.as_deref().map(|u| {
            Arc::new(
                server::upstream::Upstream::new(u, &[], std::time::Duration::from_secs(5))
                    .expect("the old server's URL"),
            )
        });
        if let Some(url) = &opts.abm {
            config.abm_url = url.clone();
            config.abm_sync_interval = std::time::Duration::from_secs(1);
        }
        config.mirror = opts.mirror.as_ref().map(|(u, key)| {
            Arc::new(
                server::upstream::Mirror::new(
                    u,
                    Zeroizing::new(key.clone()),
                    &[],
                    std::time::Duration::from_secs(5),
                )
                .expect("the old server's migration URL"),
            )
        });
        // A slow body is cut off quickly (tests/server/hostile.rs sends one).
        config.body_timeout = std::time::Duration::from_secs(2);
        // Profiles go out quickly, and failed installs retry after a second.
        config.reconcile.interval = std::time::Duration::from_millis(100);
        config.reconcile.backoff = vec![std::time::Duration::from_secs(1); 3];
        config.reconcile.filevault_recheck = std::time::Duration::from_secs(1);
        config.reconcile.facts_interval = std::time::Duration::from_secs(1);
        config.reconcile.housekeeping = std::time::Duration::ZERO;
        config.reconcile.renewal = opts.renew.map(|r| RenewalPolicy {
            window: std::time::Duration::from_secs(30 * 86_400),
            scep_url: format!("{url}/scep"),
            organization: "Test Org".into(),
            migration: match r {
                Renew::Blocked => None,
                Renew::OldProfile(identifier) => Some(
                    parse_migration_profile(&old_enrollment_profile(
                        &identifier,
                        &url,
                        &topic,
                        old_anchor.as_ref().expect("made for OldProfile"),
                    ))
                    .expect("the old enrollment profile parses"),
                ),
            },
        });
        config.machine_info_cas.extend(opts.machine_info_ca.take());
        if let Some(after) = opts.release_after {
            config.reconcile.release_after = after;
        }
        let state = AppState::new(store.clone(), config, pushes.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(
            listener,
            acceptor,
            server::app(state),
            256,
            async {
                let _ = rx.await;
            },
        ));
        Self {
            dir,
            store,
            url,
            apns,
            topic,
            ca,
            tls_roots,
            old_anchor,
            enroll_secret: secret.to_string(),
            pushes,
            postgres,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn http(&self) -> reqwest::Client {
        http_client(&self.tls_roots).unwrap()
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            server_url: format!("{}/mdm", self.url),
            check_in_url: format!("{}/mdm", self.url),
            topic: self.topic.clone(),
        }
    }

    /// A new device, enrolled from `/enroll` like a Mac installing the profile.
    pub async fn enroll(&self, n: usize, mode: IdentityMode) -> Arc<SimDevice> {
        self.enroll_os(n, "15.1", mode).await
    }

    /// `/enroll` with the server's enrollment secret, as the link a user is given.
    pub fn enroll_url(&self) -> String {
        format!("{}/enroll?token={}", self.url, self.enroll_secret)
    }

    /// [`Server::enroll`] for a Mac on macOS `os`.
    pub async fn enroll_os(&self, n: usize, os: &str, mode: IdentityMode) -> Arc<SimDevice> {
        let d = SimDevice::new(n, os, mode, self.http(), &self.tls_roots).unwrap();
        let profile = self.http().get(self.enroll_url()).send().await.unwrap();
        assert_eq!(profile.status(), 200);
        d.enroll(&profile.bytes().await.unwrap())
            .await
            .expect("enrollment");
        Arc::new(d)
    }

    /// A device the old MDM enrolled: its identity from `old_ca`, and the records an import
    /// leaves in the store (identity hash, push token, push magic, topic).
    pub fn migrated(&self, n: usize, old_ca: &Ca, mode: IdentityMode) -> Arc<SimDevice> {
        self.migrated_expiring(n, old_ca, mode, 335)
    }

    /// [`Server::migrated`] with an identity that expires in `days_left` days.
    pub fn migrated_expiring(
        &self,
        n: usize,
        old_ca: &Ca,
        mode: IdentityMode,
        days_left: i64,
    ) -> Arc<SimDevice> {
        let (cert, key) = old_ca.issue(&format!("old device {n}"), -30, days_left);
        self.import(n, cert, key, mode, self.http())
    }

    /// Many migrated devices sharing one key (a load test's fleet, made quickly).
    pub fn migrated_fleet(&self, n: usize, old_ca: &Ca, mode: IdentityMode) -> Vec<Arc<SimDevice>> {
        let key = pki::generate_rsa(2048).expect("key");
        let http = self.http();
        (0..n)
            .map(|i| {
                let cert = old_ca.issue_for(&key, &format!("old device {i}"), -30, 335);
                self.import(i, cert, key.clone(), mode.clone(), http.clone())
            })
            .collect()
    }

    /// A device the old MDM enrolled with this identity, recorded as an import leaves it.
    fn import(
        &self,
        n: usize,
        cert: X509,
        key: PKey<Private>,
        mode: IdentityMode,
        http: reqwest::Client,
    ) -> Arc<SimDevice> {
        let d = SimDevice::with_key(n, "14.6", mode, http, &self.tls_roots, key.clone())
            .unwrap()
            .with_identity(cert, key, self.endpoint())
            .unwrap();
        self.store
            .write(|tx| record_imported(tx, &d, &self.topic))
            .unwrap();
        Arc::new(d)
    }

    /// Trust an old MDM's CA (as import does): next to the issuing one, not over it.
    pub fn trust_old_ca(&self, old: &Ca) {
        let mut a = NewAsset::new(AssetKind::ScepCa, AssetState::Trusted, "imported:test");
        a.cert_pem = Some(pki::cert_pem(&old.cert).unwrap());
        a.key_pem = Some(pki::private_key_pem(&old.key).unwrap());
        a.sha256 = Some(pki::fingerprint_sha256(&old.cert).unwrap());
        self.store.write(|tx| tx.insert_asset(&a)).unwrap();
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// The old MDM's enrollment profile as a Mac has it installed: a private anchor for the
/// server's TLS, the SCEP identity, and the MDM payload (ServerCapabilities for user channels
/// only, AccessRights without every bit).
pub fn old_enrollment_profile(identifier: &str, url: &str, topic: &str, anchor: &X509) -> Vec<u8> {
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD.encode(anchor.to_der().unwrap());
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
<key>PayloadIdentifier</key><string>{identifier}</string>
<key>PayloadType</key><string>Configuration</string>
<key>PayloadUUID</key><string>0B1D0000-0000-4000-8000-000000000000</string>
<key>PayloadVersion</key><integer>1</integer>
<key>PayloadContent</key><array>
<dict><key>PayloadType</key><string>com.apple.security.root</string>
<key>PayloadIdentifier</key><string>{identifier}.anchor</string>
<key>PayloadUUID</key><string>0B1D0000-0000-4000-8000-0000000000A1</string>
<key>PayloadVersion</key><integer>1</integer>
<key>PayloadContent</key><data>{der}</data></dict>
<dict><key>PayloadType</key><string>com.apple.security.scep</string>
<key>PayloadIdentifier</key><string>{identifier}.scep</string>
<key>PayloadUUID</key><string>0B1D0000-0000-4000-8000-0000000000B2</string>
<key>PayloadVersion</key><integer>1</integer>
<key>PayloadContent</key><dict><key>URL</key><string>{url}/old-scep</string></dict></dict>
<dict><key>PayloadType</key><string>com.apple.mdm</string>
<key>PayloadIdentifier</key><string>{identifier}.mdm</string>
<key>PayloadUUID</key><string>0B1D0000-0000-4000-8000-0000000000C3</string>
<key>PayloadVersion</key><integer>1</integer>
<key>ServerURL</key><string>{url}/mdm</string>
<key>CheckInURL</key><string>{url}/mdm</string>
<key>Topic</key><string>{topic}</string>
<key>IdentityCertificateUUID</key><string>0B1D0000-0000-4000-8000-0000000000B2</string>
<key>ServerCapabilities</key><array><string>com.apple.mdm.per-user-connections</string></array>
<key>SignMessage</key><true/>
<key>AccessRights</key><integer>4095</integer></dict>
</array></dict></plist>
"#
    )
    .into_bytes()
}

fn server_tls_cert(ca: &Ca) -> (X509, PKey<Private>) {
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::x509::extension::SubjectAlternativeName;
    let key = pki::generate_rsa(2048).unwrap();
    let mut n = openssl::x509::X509NameBuilder::new().unwrap();
    n.append_entry_by_text("CN", "127.0.0.1").unwrap();
    let n = n.build();
    let mut b = openssl::x509::X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(pki::random_serial().unwrap().as_ref())
        .unwrap();
    b.set_subject_name(&n).unwrap();
    b.set_issuer_name(ca.cert.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(Asn1Time::days_from_now(0).unwrap().as_ref())
        .unwrap();
    b.set_not_after(Asn1Time::days_from_now(30).unwrap().as_ref())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .ip("127.0.0.1")
        .build(&b.x509v3_context(Some(&ca.cert), None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(&ca.key, MessageDigest::sha256()).unwrap();
    (b.build(), key)
}
