//! A simulated Mac that speaks the real MDM protocol over real HTTP: it enrolls from an
//! enrollment profile (SCEP for its identity, then Authenticate and TokenUpdate), proves its
//! identity with `Mdm-Signature`, a TLS client certificate or a proxy header, wakes when the APNs
//! stand-in receives a push for its token, and answers commands with Apple-shaped responses
//! (DeviceInformation, ProfileList, InstallProfile, RemoveProfile, SecurityInfo, …).
//!
//! Used by the server tests, `mdmctl demo` and the load benchmarks. A device can also be built
//! from an identity an "old" CA issued, to play a Mac migrated from another MDM.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use base64::Engine;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::X509;
use openssl::x509::store::X509StoreBuilder;
use plist::{Dictionary, Value};

use crate::pki::identity::sign_mdm_body;
use crate::pki::scep::client::{self as scep_client, CertRepOutcome};
use crate::pki::scep::{ContentCipher, DigestAlgorithm, RequestKind};
use crate::pki::{self, fingerprint_sha256};

/// How a device proves its identity on each request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityMode {
    /// `Mdm-Signature`: a CMS signature over every body (enrollment profile `SignMessage`).
    Signature,
    /// The certificate in a header, as a TLS-terminating proxy forwards it (RFC 9440).
    Header(String),
    /// The TLS client certificate.
    Tls,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("http: {0}")]
    Http(String),
    #[error("the server answered {status} to {what}")]
    Status { what: String, status: u16 },
    #[error("enrollment profile: {0}")]
    Profile(String),
    #[error("scep: {0}")]
    Scep(String),
    #[error("the device has no identity yet")]
    NoIdentity,
    #[error("crypto: {0}")]
    Crypto(String),
}

fn crypto<E: std::fmt::Display>(e: E) -> SimError {
    SimError::Crypto(e.to_string())
}

/// A profile the simulated device has installed.
#[derive(Clone, Debug)]
pub struct InstalledProfile {
    pub identifier: String,
    pub uuid: String,
    pub display_name: String,
    /// SHA-256 of the profile as received (signed or not).
    pub sha256: String,
    pub payload_types: Vec<String>,
    pub managed: bool,
}

/// What one command did to the device, for tests to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handled {
    pub uuid: String,
    pub request_type: String,
    pub status: String,
}

#[derive(Default)]
struct State {
    profiles: BTreeMap<String, InstalledProfile>,
    /// Request types to answer NotNow once each.
    not_now_once: HashSet<String>,
    /// Request types to answer with an error once each.
    error_once: HashSet<String>,
    /// Profile identifiers whose installation fails (with Apple's error chain).
    fail_installs: HashSet<String>,
    handled: Vec<Handled>,
    /// FileVault is on.
    fde_enabled: bool,
    /// The personal recovery key, when the simulator made it (RotateFileVaultKey checks it).
    fde_recovery_key: Option<String>,
    /// The escrowed recovery key SecurityInfo hands out (CMS to the escrow certificate).
    fde_recovery_key_cms: Option<Vec<u8>>,
    /// The certificate an installed FDERecoveryKeyEscrow payload escrows to (DER).
    escrow_cert: Option<Vec<u8>>,
    /// A DeclarativeManagement command arrived: sync declarations after the session.
    ddm_sync_pending: bool,
    /// The declarations the device holds, by identifier.
    declarations: BTreeMap<String, SimDeclaration>,
    /// The installed MDM enrollment profile's PayloadIdentifier.
    enrollment_profile: Option<String>,
    /// An updated enrollment profile was installed: its SCEP URL and challenge, for a new
    /// identity after the session.
    pending_renewal: Option<(String, Option<String>)>,
    /// Restart check-in after an enrollment update before acknowledging its InstallProfile
    /// (macOS does either, depending on timing).
    renew_before_ack: bool,
    /// The enrollment profiles installed as updates of the enrollment, as received.
    enrollment_updates: Vec<Dictionary>,
    /// In Setup Assistant, waiting for DeviceConfigured (sent in TokenUpdate).
    awaiting_configuration: bool,
    /// The profiles installed when DeviceConfigured arrived.
    released_with: Option<Vec<String>>,
}

/// A declaration the simulated device fetched, and what it made of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimDeclaration {
    /// `activation` or `configuration`.
    pub kind: String,
    pub identifier: String,
    pub declaration_type: String,
    pub server_token: String,
    pub payload: serde_json::Value,
    pub valid: bool,
    pub active: bool,
}

/// Where the server is.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub server_url: String,
    pub check_in_url: String,
    pub topic: String,
}

pub struct SimDevice {
    pub udid: String,
    pub serial: String,
    pub os_version: String,
    pub model: String,
    pub model_name: String,
    pub device_name: String,
    pub token: Vec<u8>,
    pub push_magic: String,
    key: PKey<Private>,
    identity: Mutex<Option<X509>>,
    endpoint: Mutex<Option<Endpoint>>,
    mode: IdentityMode,
    http: Mutex<reqwest::Client>,
    /// CAs the device trusts for the server's TLS certificate (besides the system's).
    server_roots: Vec<X509>,
    state: Mutex<State>,
    /// One session at a time, like mdmclient.
    session: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    let _ = openssl::rand::rand_bytes(&mut b);
    hex::encode_upper(b)
}

/// An HTTP client for simulated devices, trusting `server_roots` (the server's private TLS CA)
/// besides the system's.
pub fn http_client(server_roots: &[X509]) -> Result<reqwest::Client, SimError> {
    let mut b = reqwest::Client::builder().pool_max_idle_per_host(256);
    for r in server_roots {
        let pem = r.to_pem().map_err(crypto)?;
        b = b.add_root_certificate(
            reqwest::Certificate::from_pem(&pem).map_err(|e| SimError::Http(e.to_string()))?,
        );
    }
    b.build().map_err(|e| SimError::Http(e.to_string()))
}

impl SimDevice {
    /// A new Mac with a fresh key, no identity yet. `n` makes the serial and name unique.
    /// `http` is a client from [`http_client`] shared by many devices (for TLS client
    /// certificates each device builds its own once it has an identity).
    pub fn new(
        n: usize,
        os_version: &str,
        mode: IdentityMode,
        http: reqwest::Client,
        server_roots: &[X509],
    ) -> Result<Self, SimError> {
        let key = pki::generate_rsa(2048).map_err(crypto)?;
        Self::with_key(n, os_version, mode, http, server_roots, key)
    }

    /// Like [`SimDevice::new`] with a given key: load tests give thousands of devices one key
    /// (their certificates, and so their identities, still differ).
    pub fn with_key(
        n: usize,
        os_version: &str,
        mode: IdentityMode,
        http: reqwest::Client,
        server_roots: &[X509],
        key: PKey<Private>,
    ) -> Result<Self, SimError> {
        let mut token = vec![0u8; 32];
        openssl::rand::rand_bytes(&mut token).map_err(crypto)?;
        Ok(Self {
            udid: format!(
                "{}-{}-{}-{}-{}",
                random_hex(4),
                random_hex(2),
                random_hex(2),
                random_hex(2),
                random_hex(6)
            ),
            serial: format!("C02SIM{n:06}"),
            os_version: os_version.to_string(),
            model: "Mac14,2".into(),
            model_name: "MacBook Air".into(),
            device_name: format!("Simulated Mac {n}"),
            token,
            push_magic: uuid::Uuid::new_v4().to_string().to_uppercase(),
            key,
            identity: Mutex::new(None),
            endpoint: Mutex::new(None),
            mode,
            http: Mutex::new(http),
            server_roots: server_roots.to_vec(),
            state: Mutex::new(State::default()),
            session: tokio::sync::Mutex::new(()),
        })
    }

    /// Give the device an identity issued elsewhere (an old MDM's CA) and the server it talks to.
    pub fn with_identity(
        mut self,
        cert: X509,
        key: PKey<Private>,
        endpoint: Endpoint,
    ) -> Result<Self, SimError> {
        self.key = key;
        *lock(&self.endpoint) = Some(endpoint);
        self.set_identity(cert)?;
        Ok(self)
    }

    fn client(&self) -> reqwest::Client {
        lock(&self.http).clone()
    }

    /// Keep these UDID, serial, token and push magic (a device recorded by an old MDM).
    pub fn with_ids(mut self, udid: &str, serial: &str, token: Vec<u8>, push_magic: &str) -> Self {
        self.udid = udid.to_string();
        self.serial = serial.to_string();
        self.token = token;
        self.push_magic = push_magic.to_string();
        self
    }

    /// Replace the identity (after SCEP enrollment or a renewal); a TLS-mode device presents it
    /// from its next connection on.
    pub fn set_identity(&self, cert: X509) -> Result<(), SimError> {
        *lock(&self.identity) = Some(cert.clone());
        if self.mode != IdentityMode::Tls {
            return Ok(());
        }
        let id = reqwest::Identity::from_pkcs8_pem(
            &cert.to_pem().map_err(crypto)?,
            &self.key.private_key_to_pem_pkcs8().map_err(crypto)?,
        )
        .map_err(|e| SimError::Http(e.to_string()))?;
        let mut b = reqwest::Client::builder().identity(id);
        for r in &self.server_roots {
            let pem = r.to_pem().map_err(crypto)?;
            b = b.add_root_certificate(
                reqwest::Certificate::from_pem(&pem).map_err(|e| SimError::Http(e.to_string()))?,
            );
        }
        *lock(&self.http) = b.build().map_err(|e| SimError::Http(e.to_string()))?;
        Ok(())
    }

    pub fn identity(&self) -> Option<X509> {
        lock(&self.identity).clone()
    }

    pub fn identity_sha256(&self) -> Option<String> {
        self.identity().and_then(|c| fingerprint_sha256(&c).ok())
    }

    pub fn key(&self) -> &PKey<Private> {
        &self.key
    }

    pub fn topic(&self) -> Option<String> {
        lock(&self.endpoint).as_ref().map(|e| e.topic.clone())
    }

    pub fn token_hex(&self) -> String {
        hex::encode(&self.token)
    }

    /// Answer the next `request_type` command with NotNow (once).
    pub fn not_now_once(&self, request_type: &str) {
        lock(&self.state)
            .not_now_once
            .insert(request_type.to_string());
    }

    /// Answer the next `request_type` command with an Error (once).
    pub fn error_once(&self, request_type: &str) {
        lock(&self.state)
            .error_once
            .insert(request_type.to_string());
    }

    /// Make installing this profile identifier fail.
    pub fn fail_install(&self, identifier: &str) {
        lock(&self.state)
            .fail_installs
            .insert(identifier.to_string());
    }

    /// Let installing this profile identifier succeed again.
    pub fn allow_install(&self, identifier: &str) {
        lock(&self.state).fail_installs.remove(identifier);
    }

    /// FileVault is on and this is the escrowed recovery key SecurityInfo hands out (CMS made
    /// elsewhere, e.g. by `openssl cms -encrypt`).
    pub fn set_fde_recovery_key_cms(&self, cms: Vec<u8>) {
        let mut st = lock(&self.state);
        st.fde_enabled = true;
        st.fde_recovery_key_cms = Some(cms);
    }

    /// The certificate the installed FileVault profile escrows recovery keys to (DER).
    pub fn escrow_certificate(&self) -> Option<Vec<u8>> {
        lock(&self.state).escrow_cert.clone()
    }

    /// The user logs out: FileVault turns on with `recovery_key`, which macOS escrows (encrypted
    /// to the profile's escrow certificate) when a FileVault profile with escrow is installed.
    pub fn turn_on_filevault(&self, recovery_key: &str) -> Result<(), SimError> {
        let mut st = lock(&self.state);
        st.fde_enabled = true;
        st.fde_recovery_key = Some(recovery_key.to_string());
        st.fde_recovery_key_cms = match &st.escrow_cert {
            Some(der) => Some(encrypt_to(der, recovery_key)?),
            None => None,
        };
        Ok(())
    }

    /// The recovery key the Mac has now (what the user would type at the FileVault prompt).
    pub fn fde_recovery_key(&self) -> Option<String> {
        lock(&self.state).fde_recovery_key.clone()
    }

    pub fn profiles(&self) -> Vec<InstalledProfile> {
        lock(&self.state).profiles.values().cloned().collect()
    }

    pub fn handled(&self) -> Vec<Handled> {
        lock(&self.state).handled.clone()
    }

    /// The MDM enrollment profile installed on this device (for a device an old MDM enrolled).
    pub fn set_enrollment_profile(&self, identifier: &str) {
        lock(&self.state).enrollment_profile = Some(identifier.to_string());
    }

    /// A Mac in Setup Assistant: its TokenUpdate says `AwaitingConfiguration` until the server
    /// sends DeviceConfigured.
    pub fn set_awaiting_configuration(&self, on: bool) {
        lock(&self.state).awaiting_configuration = on;
    }

    /// Still held in Setup Assistant.
    pub fn awaiting_configuration(&self) -> bool {
        lock(&self.state).awaiting_configuration
    }

    /// The identifiers of the profiles installed when DeviceConfigured released the device.
    pub fn released_with(&self) -> Option<Vec<String>> {
        lock(&self.state).released_with.clone()
    }

    /// Automated enrollment's first step: send the MachineInfo (`machine_info`, DER CMS) to the
    /// profile's `url`, by POST as a Mac does without `configuration_web_url`, or by GET in the
    /// `x-apple-aspen-deviceinfo` header as the web view does. The status and body.
    pub async fn fetch_dep_profile(
        &self,
        url: &str,
        machine_info: &[u8],
        post: bool,
    ) -> Result<(u16, Vec<u8>), SimError> {
        use base64::Engine;
        let http = lock(&self.http).clone();
        let req = if post {
            http.post(url)
                .header("Content-Type", "application/pkcs7-signature")
                .body(machine_info.to_vec())
        } else {
            http.get(url).header(
                "x-apple-aspen-deviceinfo",
                base64::engine::general_purpose::STANDARD.encode(machine_info),
            )
        };
        let resp = req
            .send()
            .await
            .map_err(|e| SimError::Http(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|e| SimError::Http(e.to_string()))?;
        Ok((status, body.to_vec()))
    }

    /// Install an enrollment profile: SCEP for the identity, then Authenticate and TokenUpdate.
    pub async fn enroll(&self, profile: &[u8]) -> Result<(), SimError> {
        let xml = profile_content(profile)?;
        let v: Value = plist::from_bytes(&xml).map_err(|e| SimError::Profile(e.to_string()))?;
        let content = v
            .as_dictionary()
            .and_then(|d| d.get("PayloadContent"))
            .and_then(|c| c.as_array())
            .ok_or_else(|| SimError::Profile("no PayloadContent".into()))?;
        let find = |t: &str| {
            content
                .iter()
                .filter_map(|p| p.as_dictionary())
                .find(|p| p.get("PayloadType").and_then(|v| v.as_string()) == Some(t))
                .cloned()
        };
        let scep = find("com.apple.security.scep")
            .ok_or_else(|| SimError::Profile("no SCEP payload".into()))?;
        let mdm =
            find("com.apple.mdm").ok_or_else(|| SimError::Profile("no MDM payload".into()))?;
        let sc = scep
            .get("PayloadContent")
            .and_then(|c| c.as_dictionary())
            .ok_or_else(|| SimError::Profile("empty SCEP payload".into()))?;
        let s = |d: &Dictionary, k: &str| d.get(k).and_then(|v| v.as_string()).map(str::to_string);
        let url = s(sc, "URL").ok_or_else(|| SimError::Profile("SCEP URL missing".into()))?;
        let challenge = s(sc, "Challenge");
        let mut subject = openssl::x509::X509NameBuilder::new().map_err(crypto)?;
        subject
            .append_entry_by_text("CN", &format!("{} {}", self.device_name, self.udid))
            .map_err(crypto)?;
        let subject = subject.build();
        let identity = self
            .scep_enroll(&url, &subject, challenge.as_deref(), None)
            .await?;
        self.set_identity(identity)?;
        let server_url =
            s(&mdm, "ServerURL").ok_or_else(|| SimError::Profile("ServerURL missing".into()))?;
        *lock(&self.endpoint) = Some(Endpoint {
            check_in_url: s(&mdm, "CheckInURL").unwrap_or_else(|| server_url.clone()),
            server_url,
            topic: s(&mdm, "Topic").ok_or_else(|| SimError::Profile("Topic missing".into()))?,
        });
        lock(&self.state).enrollment_profile = v
            .as_dictionary()
            .and_then(|d| d.get("PayloadIdentifier"))
            .and_then(Value::as_string)
            .map(str::to_string);
        self.expect_ok("Authenticate", self.authenticate().await?)?;
        self.expect_ok("TokenUpdate", self.token_update().await?)?;
        Ok(())
    }

    /// SCEP: fetch the CA, send a PKCSReq (or a RenewalReq signed by `renew_with`), return the
    /// issued certificate.
    pub async fn scep_enroll(
        &self,
        url: &str,
        subject: &openssl::x509::X509NameRef,
        challenge: Option<&str>,
        renew_with: Option<(&X509, &PKey<Private>)>,
    ) -> Result<X509, SimError> {
        let r = self
            .client()
            .get(format!("{url}?operation=GetCACert&message=mdmctl"))
            .send()
            .await
            .map_err(|e| SimError::Http(e.to_string()))?;
        let ct = r
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = r.bytes().await.map_err(|e| SimError::Http(e.to_string()))?;
        let cas = scep_client::parse_ca_cert_response(&ct, &body)
            .map_err(|e| SimError::Scep(e.to_string()))?;
        let ca = cas
            .first()
            .ok_or_else(|| SimError::Scep("no CA certificate".into()))?
            .clone();
        let csr = scep_client::build_csr(&self.key, subject, challenge)
            .map_err(|e| SimError::Scep(e.to_string()))?;
        let (signer, signer_key, kind) = match renew_with {
            Some((c, k)) => (c.clone(), k.clone(), RequestKind::RenewalReq),
            None => (
                scep_client::self_signed_signer(&csr, &self.key)
                    .map_err(|e| SimError::Scep(e.to_string()))?,
                self.key.clone(),
                RequestKind::PkcsReq,
            ),
        };
        let req = scep_client::pkcs_req(
            &csr,
            &signer_key,
            &signer,
            &ca,
            kind,
            ContentCipher::Aes128Cbc,
            DigestAlgorithm::Sha256,
        )
        .map_err(|e| SimError::Scep(e.to_string()))?;
        let r = self
            .client()
            .post(format!("{url}?operation=PKIOperation"))
            .header(reqwest::header::CONTENT_TYPE, "application/x-pki-message")
            .body(req.der.clone())
            .send()
            .await
            .map_err(|e| SimError::Http(e.to_string()))?;
        let status = r.status().as_u16();
        let body = r.bytes().await.map_err(|e| SimError::Http(e.to_string()))?;
        if status != 200 {
            return Err(SimError::Status {
                what: "SCEP PKIOperation".into(),
                status,
            });
        }
        match scep_client::parse_cert_rep(
            &body,
            &signer_key,
            &signer,
            &req.transaction_id,
            &req.sender_nonce,
            &ca,
        )
        .map_err(|e| SimError::Scep(e.to_string()))?
        {
            CertRepOutcome::Issued(cert) => Ok(cert),
            CertRepOutcome::Failed(f) => Err(SimError::Scep(format!("the server refused: {f:?}"))),
            CertRepOutcome::Pending => Err(SimError::Scep("pending".into())),
        }
    }

    fn expect_ok(&self, what: &str, status: u16) -> Result<(), SimError> {
        if status == 200 {
            Ok(())
        } else {
            Err(SimError::Status {
                what: what.into(),
                status,
            })
        }
    }

    fn base(&self) -> Dictionary {
        let mut d = Dictionary::new();
        d.insert("UDID".into(), self.udid.as_str().into());
        d
    }

    fn xml(d: Dictionary) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = Value::Dictionary(d).to_writer_xml(&mut out);
        out
    }

    pub fn authenticate_body(&self) -> Vec<u8> {
        let mut d = self.base();
        d.insert("MessageType".into(), "Authenticate".into());
        d.insert("Topic".into(), self.topic().unwrap_or_default().into());
        d.insert("SerialNumber".into(), self.serial.as_str().into());
        d.insert("OSVersion".into(), self.os_version.as_str().into());
        d.insert("BuildVersion".into(), "23G93".into());
        d.insert("ProductName".into(), self.model.as_str().into());
        d.insert("Model".into(), self.model.as_str().into());
        d.insert("ModelName".into(), self.model_name.as_str().into());
        d.insert("DeviceName".into(), self.device_name.as_str().into());
        Self::xml(d)
    }

    pub fn token_update_body(&self) -> Vec<u8> {
        let mut d = self.base();
        d.insert("MessageType".into(), "TokenUpdate".into());
        d.insert("Topic".into(), self.topic().unwrap_or_default().into());
        d.insert("Token".into(), Value::Data(self.token.clone()));
        d.insert("PushMagic".into(), self.push_magic.as_str().into());
        d.insert("UnlockToken".into(), Value::Data(vec![0x42; 64]));
        let awaiting = lock(&self.state).awaiting_configuration;
        d.insert("AwaitingConfiguration".into(), awaiting.into());
        Self::xml(d)
    }

    pub fn idle_body(&self) -> Vec<u8> {
        let mut d = self.base();
        d.insert("Status".into(), "Idle".into());
        Self::xml(d)
    }

    pub async fn authenticate(&self) -> Result<u16, SimError> {
        Ok(self.send(true, self.authenticate_body()).await?.0)
    }

    pub async fn token_update(&self) -> Result<u16, SimError> {
        Ok(self.send(true, self.token_update_body()).await?.0)
    }

    pub async fn checkin(&self, message: Dictionary) -> Result<(u16, Vec<u8>), SimError> {
        let mut d = self.base();
        d.extend(message);
        self.send(true, Self::xml(d)).await
    }

    /// The headers proving this device's identity for `body`.
    pub fn identity_headers(&self, body: &[u8]) -> Result<Vec<(String, String)>, SimError> {
        let cert = self.identity().ok_or(SimError::NoIdentity)?;
        Ok(match &self.mode {
            IdentityMode::Signature => vec![(
                "Mdm-Signature".into(),
                sign_mdm_body(body, &cert, &self.key).map_err(crypto)?,
            )],
            IdentityMode::Header(name) => vec![(
                name.clone(),
                format!(
                    ":{}:",
                    base64::engine::general_purpose::STANDARD
                        .encode(cert.to_der().map_err(crypto)?)
                ),
            )],
            IdentityMode::Tls => Vec::new(),
        })
    }

    /// PUT a body to the CheckInURL (`checkin`) or ServerURL, with this device's identity.
    pub async fn send(&self, checkin: bool, body: Vec<u8>) -> Result<(u16, Vec<u8>), SimError> {
        let headers = self.identity_headers(&body)?;
        self.send_with(checkin, body, headers).await
    }

    /// PUT with the given identity headers (pre-signed bodies, forged signatures).
    pub async fn send_with(
        &self,
        checkin: bool,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> Result<(u16, Vec<u8>), SimError> {
        let ep = lock(&self.endpoint)
            .clone()
            .ok_or_else(|| SimError::Profile("not enrolled".into()))?;
        let (url, ct) = if checkin {
            (ep.check_in_url, "application/x-apple-aspen-mdm-checkin")
        } else {
            (ep.server_url, "application/x-apple-aspen-mdm")
        };
        let mut req = self
            .client()
            .put(url)
            .header(reqwest::header::CONTENT_TYPE, ct)
            .body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let r = req
            .send()
            .await
            .map_err(|e| SimError::Http(e.to_string()))?;
        let status = r.status().as_u16();
        let bytes = r.bytes().await.map_err(|e| SimError::Http(e.to_string()))?;
        Ok((status, bytes.to_vec()))
    }

    /// One command session: Idle, then answer every command the server sends until it has
    /// none. Returns the status of the first request (200 when the server accepted the device).
    pub async fn session(&self) -> Result<u16, SimError> {
        let _one_at_a_time = self.session.lock().await;
        let (status, mut reply) = self.send(false, self.idle_body()).await?;
        if status != 200 {
            return Ok(status);
        }
        let mut rounds = 0;
        while !reply.is_empty() {
            rounds += 1;
            if rounds > 10_000 {
                return Err(SimError::Http(
                    "the server never stopped sending commands".into(),
                ));
            }
            let report = self.answer(&reply)?;
            if lock(&self.state).renew_before_ack {
                self.finish_enrollment_update().await?;
            }
            let (s, next) = self.send(false, report).await?;
            if s != 200 {
                return Err(SimError::Status {
                    what: "command report".into(),
                    status: s,
                });
            }
            reply = next;
        }
        let sync = std::mem::take(&mut lock(&self.state).ddm_sync_pending);
        if sync {
            self.ddm_sync().await?;
        }
        self.finish_enrollment_update().await?;
        Ok(status)
    }

    /// After an updated enrollment profile was installed: a new identity from its SCEP payload,
    /// then, as macOS does when a profile with the installed enrollment's PayloadIdentifier
    /// arrives ("restarts the check-in process"), Authenticate and TokenUpdate with it.
    async fn finish_enrollment_update(&self) -> Result<(), SimError> {
        let renewal = lock(&self.state).pending_renewal.take();
        let Some((url, challenge)) = renewal else {
            return Ok(());
        };
        let mut subject = openssl::x509::X509NameBuilder::new().map_err(crypto)?;
        subject
            .append_entry_by_text("CN", &format!("{} {}", self.device_name, self.udid))
            .map_err(crypto)?;
        let identity = self
            .scep_enroll(&url, &subject.build(), challenge.as_deref(), None)
            .await?;
        self.set_identity(identity)?;
        self.expect_ok("Authenticate", self.authenticate().await?)?;
        self.expect_ok("TokenUpdate", self.token_update().await?)
    }

    /// The enrollment profiles this device installed as updates of its enrollment.
    pub fn enrollment_updates(&self) -> Vec<Dictionary> {
        lock(&self.state).enrollment_updates.clone()
    }

    /// Restart check-in after an enrollment update before acknowledging its InstallProfile
    /// (the default is after the command session).
    pub fn renew_before_ack(&self) {
        lock(&self.state).renew_before_ack = true;
    }

    /// The declarations the device holds.
    pub fn declarations(&self) -> Vec<SimDeclaration> {
        lock(&self.state).declarations.values().cloned().collect()
    }

    /// One DeclarativeManagement check-in; the body of the server's 200.
    async fn ddm(&self, endpoint: &str, data: Option<Vec<u8>>) -> Result<Vec<u8>, SimError> {
        let mut d = Dictionary::new();
        d.insert("MessageType".into(), "DeclarativeManagement".into());
        d.insert("Endpoint".into(), endpoint.into());
        if let Some(data) = data {
            d.insert("Data".into(), Value::Data(data));
        }
        let (status, body) = self.checkin(d).await?;
        if status != 200 {
            return Err(SimError::Status {
                what: format!("declarative management `{endpoint}`"),
                status,
            });
        }
        Ok(body)
    }

    /// A declarative sync as macOS does it: tokens, the declaration list, each declaration it
    /// does not hold at that ServerToken, then a status report of every declaration.
    pub async fn ddm_sync(&self) -> Result<(), SimError> {
        let json = |b: &[u8], what: &str| -> Result<serde_json::Value, SimError> {
            serde_json::from_slice(b)
                .map_err(|e| SimError::Http(format!("{what} is not JSON: {e}")))
        };
        let _tokens = json(&self.ddm("tokens", None).await?, "tokens")?;
        let items = json(
            &self.ddm("declaration-items", None).await?,
            "declaration-items",
        )?;
        let mut listed = BTreeMap::new();
        for (group, kind) in [
            ("Activations", "activation"),
            ("Configurations", "configuration"),
        ] {
            for item in items["Declarations"][group]
                .as_array()
                .into_iter()
                .flatten()
            {
                let (Some(id), Some(token)) =
                    (item["Identifier"].as_str(), item["ServerToken"].as_str())
                else {
                    continue;
                };
                listed.insert(id.to_string(), (kind, token.to_string()));
            }
        }
        let mut held = lock(&self.state).declarations.clone();
        held.retain(|id, _| listed.contains_key(id));
        for (id, (kind, token)) in &listed {
            if held.get(id).is_some_and(|d| &d.server_token == token) {
                continue;
            }
            let body = json(
                &self.ddm(&format!("declaration/{kind}/{id}"), None).await?,
                "a declaration",
            )?;
            held.insert(
                id.clone(),
                SimDeclaration {
                    kind: kind.to_string(),
                    identifier: id.clone(),
                    declaration_type: body["Type"].as_str().unwrap_or("").to_string(),
                    server_token: body["ServerToken"].as_str().unwrap_or("").to_string(),
                    payload: body["Payload"].clone(),
                    valid: false,
                    active: false,
                },
            );
        }
        // Validity and activation as macOS decides them.
        let major: u32 = self
            .os_version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        let mut activated = std::collections::BTreeSet::new();
        for d in held.values_mut() {
            d.valid = match d.declaration_type.as_str() {
                "com.apple.activation.simple" => d.payload["StandardConfigurations"].is_array(),
                "com.apple.configuration.softwareupdate.enforcement.specific" => {
                    major >= 14 && d.payload["TargetOSVersion"].is_string()
                }
                _ => false,
            };
            if d.kind == "activation" && d.valid {
                d.active = true;
                for c in d.payload["StandardConfigurations"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    if let Some(c) = c.as_str() {
                        activated.insert(c.to_string());
                    }
                }
            }
        }
        for d in held.values_mut().filter(|d| d.kind == "configuration") {
            d.active = d.valid && activated.contains(&d.identifier);
        }
        let report_of = |kind: &str| -> Vec<serde_json::Value> {
            held.values()
                .filter(|d| d.kind == kind)
                .map(|d| {
                    let mut v = serde_json::json!({
                        "identifier": d.identifier,
                        "active": d.active,
                        "valid": if d.valid { "valid" } else { "invalid" },
                        "server-token": d.server_token,
                    });
                    if !d.valid {
                        v["reasons"] = serde_json::json!([{
                            "code": "Error.ConfigurationCannotBeApplied",
                            "description": format!("{} is not supported on macOS {}", d.declaration_type, self.os_version),
                        }]);
                    }
                    v
                })
                .collect()
        };
        let report = serde_json::json!({
            "StatusItems": { "management": { "declarations": {
                "activations": report_of("activation"),
                "configurations": report_of("configuration"),
                "assets": [],
                "management": [],
            }}},
            "Errors": [],
        });
        lock(&self.state).declarations = held;
        self.ddm("status", Some(report.to_string().into_bytes()))
            .await?;
        Ok(())
    }

    /// The device's report for a command plist.
    pub fn answer(&self, command_plist: &[u8]) -> Result<Vec<u8>, SimError> {
        let v: Value = plist::from_bytes(command_plist)
            .map_err(|e| SimError::Http(format!("command is not a plist: {e}")))?;
        let top = v
            .as_dictionary()
            .ok_or_else(|| SimError::Http("command is not a dictionary".into()))?;
        let uuid = top
            .get("CommandUUID")
            .and_then(|u| u.as_string())
            .unwrap_or("")
            .to_string();
        let cmd = top
            .get("Command")
            .and_then(|c| c.as_dictionary())
            .cloned()
            .unwrap_or_default();
        let request_type = cmd
            .get("RequestType")
            .and_then(|r| r.as_string())
            .unwrap_or("")
            .to_string();
        let mut report = self.base();
        report.insert("CommandUUID".into(), uuid.as_str().into());
        let status = {
            let mut st = lock(&self.state);
            if st.not_now_once.remove(&request_type) {
                "NotNow".to_string()
            } else if st.error_once.remove(&request_type) {
                report.insert(
                    "ErrorChain".into(),
                    error_chain(-1, "MDMErrorDomain", "The command could not be completed."),
                );
                "Error".to_string()
            } else {
                drop(st);
                self.execute(&request_type, &cmd, &mut report)
            }
        };
        report.insert("Status".into(), status.as_str().into());
        lock(&self.state).handled.push(Handled {
            uuid,
            request_type,
            status,
        });
        Ok(Self::xml(report))
    }

    fn execute(&self, request_type: &str, cmd: &Dictionary, report: &mut Dictionary) -> String {
        match request_type {
            "DeviceInformation" => {
                let mut q = Dictionary::new();
                q.insert("UDID".into(), self.udid.as_str().into());
                q.insert("SerialNumber".into(), self.serial.as_str().into());
                q.insert("OSVersion".into(), self.os_version.as_str().into());
                q.insert("BuildVersion".into(), "23G93".into());
                q.insert("ModelName".into(), self.model_name.as_str().into());
                q.insert("Model".into(), self.model.as_str().into());
                q.insert("ProductName".into(), self.model.as_str().into());
                q.insert("DeviceName".into(), self.device_name.as_str().into());
                q.insert("IsSupervised".into(), false.into());
                report.insert("QueryResponses".into(), Value::Dictionary(q));
                "Acknowledged".into()
            }
            "ProfileList" => {
                let list: Vec<Value> = lock(&self.state)
                    .profiles
                    .values()
                    .map(|p| {
                        let mut d = Dictionary::new();
                        d.insert("PayloadIdentifier".into(), p.identifier.as_str().into());
                        d.insert("PayloadUUID".into(), p.uuid.as_str().into());
                        d.insert("PayloadDisplayName".into(), p.display_name.as_str().into());
                        d.insert("PayloadVersion".into(), 1u64.into());
                        d.insert("IsManaged".into(), p.managed.into());
                        d.insert("IsEncrypted".into(), false.into());
                        d.insert("HasRemovalPasscode".into(), false.into());
                        d.insert(
                            "PayloadContent".into(),
                            Value::Array(
                                p.payload_types
                                    .iter()
                                    .map(|t| {
                                        let mut pc = Dictionary::new();
                                        pc.insert("PayloadType".into(), t.as_str().into());
                                        Value::Dictionary(pc)
                                    })
                                    .collect(),
                            ),
                        );
                        Value::Dictionary(d)
                    })
                    .collect();
                report.insert("ProfileList".into(), Value::Array(list));
                "Acknowledged".into()
            }
            "InstallProfile" => {
                let Some(payload) = cmd.get("Payload").and_then(|p| p.as_data()) else {
                    return "CommandFormatError".into();
                };
                match self.install(payload) {
                    Ok(()) => "Acknowledged".into(),
                    Err(chain) => {
                        report.insert("ErrorChain".into(), chain);
                        "Error".into()
                    }
                }
            }
            "RemoveProfile" => {
                let id = cmd
                    .get("Identifier")
                    .and_then(|i| i.as_string())
                    .unwrap_or("");
                if lock(&self.state).profiles.remove(id).is_some() {
                    "Acknowledged".into()
                } else {
                    report.insert(
                        "ErrorChain".into(),
                        error_chain(
                            1004,
                            "MCProfileErrorDomain",
                            "The profile is not installed.",
                        ),
                    );
                    "Error".into()
                }
            }
            "SecurityInfo" => {
                let mut si = Dictionary::new();
                let (enabled, key) = {
                    let st = lock(&self.state);
                    (st.fde_enabled, st.fde_recovery_key_cms.clone())
                };
                si.insert("FDE_Enabled".into(), enabled.into());
                si.insert("FDE_HasPersonalRecoveryKey".into(), enabled.into());
                si.insert("FDE_HasInstitutionalRecoveryKey".into(), false.into());
                if let Some(k) = key {
                    si.insert("FDE_PersonalRecoveryKeyCMS".into(), Value::Data(k));
                    si.insert(
                        "FDE_PersonalRecoveryKeyDeviceKey".into(),
                        self.serial.as_str().into(),
                    );
                }
                si.insert("SystemIntegrityProtectionEnabled".into(), true.into());
                report.insert("SecurityInfo".into(), Value::Dictionary(si));
                "Acknowledged".into()
            }
            "RotateFileVaultKey" => self.rotate_filevault_key(cmd, report),
            "DeclarativeManagement" => {
                lock(&self.state).ddm_sync_pending = true;
                "Acknowledged".into()
            }
            "AvailableOSUpdates" => {
                // The next minor release of the device's major version.
                let mut parts = self.os_version.split('.');
                let major = parts.next().unwrap_or("15").to_string();
                let minor: u32 = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
                let version = format!("{major}.{}", minor + 1);
                let mut u = Dictionary::new();
                u.insert(
                    "ProductKey".into(),
                    format!("MSU_UPDATE_{version}_patch").into(),
                );
                u.insert(
                    "HumanReadableName".into(),
                    format!("macOS {version}").into(),
                );
                u.insert("Version".into(), version.as_str().into());
                u.insert("Build".into(), "24C101".into());
                u.insert("IsCritical".into(), false.into());
                u.insert("IsMajorOSUpdate".into(), false.into());
                u.insert("RestartRequired".into(), true.into());
                report.insert(
                    "AvailableOSUpdates".into(),
                    Value::Array(vec![Value::Dictionary(u)]),
                );
                "Acknowledged".into()
            }
            "DeviceConfigured" => {
                let mut st = lock(&self.state);
                if st.awaiting_configuration {
                    st.awaiting_configuration = false;
                    st.released_with = Some(st.profiles.keys().cloned().collect());
                }
                "Acknowledged".into()
            }
            "" => "CommandFormatError".into(),
            _ => "Acknowledged".into(),
        }
    }

    /// RotateFileVaultKey: unlock with the current recovery key (or a user's password, which
    /// the simulator has none of), make a new key, return it encrypted to
    /// `ReplyEncryptionCertificate` and escrow it again to the profile's certificate.
    fn rotate_filevault_key(&self, cmd: &Dictionary, report: &mut Dictionary) -> String {
        let password = cmd
            .get("FileVaultUnlock")
            .and_then(Value::as_dictionary)
            .and_then(|u| u.get("Password"))
            .and_then(Value::as_string);
        let reply = cmd
            .get("ReplyEncryptionCertificate")
            .and_then(Value::as_data);
        let mut st = lock(&self.state);
        let unlocked =
            st.fde_enabled && password.is_some() && password == st.fde_recovery_key.as_deref();
        let (true, Some(reply)) = (unlocked, reply) else {
            report.insert(
                "ErrorChain".into(),
                error_chain(
                    12,
                    "MDMErrorDomain",
                    "The FileVault unlock credential is not valid.",
                ),
            );
            return "Error".into();
        };
        let key = recovery_key_like();
        let (Ok(for_reply), escrowed) = (
            encrypt_to(reply, &key),
            st.escrow_cert.as_deref().map(|c| encrypt_to(c, &key)),
        ) else {
            return "CommandFormatError".into();
        };
        st.fde_recovery_key = Some(key);
        if let Some(Ok(cms)) = escrowed {
            st.fde_recovery_key_cms = Some(cms);
        }
        let mut r = Dictionary::new();
        r.insert("EncryptedNewRecoveryKey".into(), Value::Data(for_reply));
        report.insert("RotateResult".into(), Value::Dictionary(r));
        "Acknowledged".into()
    }

    /// Install a profile payload (XML, binary, or CMS-signed) the way macOS records it.
    fn install(&self, payload: &[u8]) -> Result<(), Value> {
        let xml = profile_content(payload)
            .map_err(|e| error_chain(1000, "MCProfileErrorDomain", &e.to_string()))?;
        let v: Value = plist::from_bytes(&xml)
            .map_err(|e| error_chain(1000, "MCProfileErrorDomain", &e.to_string()))?;
        let d = v
            .as_dictionary()
            .ok_or_else(|| error_chain(1000, "MCProfileErrorDomain", "not a dictionary"))?;
        let s = |k: &str| {
            d.get(k)
                .and_then(|v| v.as_string())
                .unwrap_or("")
                .to_string()
        };
        let identifier = s("PayloadIdentifier");
        if lock(&self.state).fail_installs.contains(&identifier) {
            return Err(error_chain(
                4001,
                "MCInstallationErrorDomain",
                &format!("The profile “{identifier}” could not be installed."),
            ));
        }
        let payload_types = d
            .get("PayloadContent")
            .and_then(|c| c.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|p| {
                        p.as_dictionary()?
                            .get("PayloadType")?
                            .as_string()
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let Some(renewal) = self.mdm_profile_update(d, &identifier)? {
            let mut st = lock(&self.state);
            st.pending_renewal = Some(renewal);
            st.enrollment_updates.push(d.clone());
            return Ok(());
        }
        if let Some(cert) = escrow_certificate_of(d) {
            lock(&self.state).escrow_cert = Some(cert);
        }
        let profile = InstalledProfile {
            identifier: identifier.clone(),
            uuid: s("PayloadUUID"),
            display_name: s("PayloadDisplayName"),
            sha256: hex::encode(openssl::sha::sha256(payload)),
            payload_types,
            managed: true,
        };
        lock(&self.state).profiles.insert(identifier, profile);
        Ok(())
    }

    /// An MDM enrollment profile sent by InstallProfile: as macOS, accept it only as an update of
    /// the installed enrollment (same PayloadIdentifier, ServerURL and Topic); then the SCEP
    /// payload to enroll with. `None` for profiles without an MDM payload.
    fn mdm_profile_update(
        &self,
        profile: &Dictionary,
        identifier: &str,
    ) -> Result<Option<(String, Option<String>)>, Value> {
        let payloads: Vec<&Dictionary> = profile
            .get("PayloadContent")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_dictionary)
            .collect();
        let of_type = |t: &str| {
            payloads
                .iter()
                .find(|p| p.get("PayloadType").and_then(Value::as_string) == Some(t))
                .copied()
        };
        let Some(mdm) = of_type("com.apple.mdm") else {
            return Ok(None);
        };
        let refuse = |why: &str| error_chain(4001, "MCInstallationErrorDomain", why);
        let text =
            |d: &Dictionary, k: &str| d.get(k).and_then(Value::as_string).map(str::to_string);
        if lock(&self.state).enrollment_profile.as_deref() != Some(identifier) {
            return Err(refuse(
                "An MDM profile is already installed; this profile would add a second one.",
            ));
        }
        let ep = lock(&self.endpoint).clone();
        if ep.as_ref().map(|e| e.server_url.clone()) != text(mdm, "ServerURL")
            || ep.as_ref().map(|e| e.topic.clone()) != text(mdm, "Topic")
        {
            return Err(refuse(
                "The new MDM payload does not match the old payload.",
            ));
        }
        let scep = of_type("com.apple.security.scep")
            .and_then(|p| p.get("PayloadContent"))
            .and_then(Value::as_dictionary)
            .ok_or_else(|| refuse("The MDM payload's identity is missing."))?;
        let url = text(scep, "URL").ok_or_else(|| refuse("The SCEP payload has no URL."))?;
        Ok(Some((url, text(scep, "Challenge"))))
    }

    /// A profile installed before mdmctl (by the old MDM): listed, but not ours to remove.
    pub fn preinstall(&self, identifier: &str, display_name: &str) {
        lock(&self.state).profiles.insert(
            identifier.to_string(),
            InstalledProfile {
                identifier: identifier.to_string(),
                uuid: uuid::Uuid::new_v4().to_string().to_uppercase(),
                display_name: display_name.to_string(),
                sha256: String::new(),
                payload_types: vec!["com.apple.wifi.managed".into()],
                managed: true,
            },
        );
    }
}

/// The certificate a profile's FDERecoveryKeyEscrow payload points at (`EncryptCertPayloadUUID`
/// naming one of its certificate payloads).
fn escrow_certificate_of(profile: &Dictionary) -> Option<Vec<u8>> {
    let payloads = profile.get("PayloadContent")?.as_array()?;
    let field = |p: &Value, k: &str| {
        p.as_dictionary()
            .and_then(|d| d.get(k))
            .and_then(Value::as_string)
            .map(str::to_string)
    };
    let escrow = payloads.iter().find(|p| {
        field(p, "PayloadType").as_deref() == Some("com.apple.security.FDERecoveryKeyEscrow")
    })?;
    let uuid = field(escrow, "EncryptCertPayloadUUID")?;
    payloads
        .iter()
        .find(|p| field(p, "PayloadUUID").as_deref() == Some(uuid.as_str()))?
        .as_dictionary()?
        .get("PayloadContent")?
        .as_data()
        .map(<[u8]>::to_vec)
}

/// A recovery key in macOS's shape: six groups of four.
fn recovery_key_like() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut b = [0u8; 24];
    let _ = openssl::rand::rand_bytes(&mut b);
    b.chunks(4)
        .map(|g| {
            g.iter()
                .map(|x| ALPHABET[usize::from(*x) % ALPHABET.len()] as char)
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// `key` as CMS EnvelopedData (DER, AES-256-CBC) to the certificate `cert_der`, as macOS
/// escrows it.
fn encrypt_to(cert_der: &[u8], key: &str) -> Result<Vec<u8>, SimError> {
    use openssl::cms::{CMSOptions, CmsContentInfo};
    let cert = X509::from_der(cert_der).map_err(crypto)?;
    let mut certs = openssl::stack::Stack::new().map_err(crypto)?;
    certs.push(cert).map_err(crypto)?;
    CmsContentInfo::encrypt(
        &certs,
        key.as_bytes(),
        openssl::symm::Cipher::aes_256_cbc(),
        CMSOptions::BINARY,
    )
    .and_then(|c| c.to_der())
    .map_err(crypto)
}

fn error_chain(code: i64, domain: &str, text: &str) -> Value {
    let mut e = Dictionary::new();
    e.insert("ErrorCode".into(), code.into());
    e.insert("ErrorDomain".into(), domain.into());
    e.insert("LocalizedDescription".into(), text.into());
    e.insert("USEnglishDescription".into(), text.into());
    Value::Array(vec![Value::Dictionary(e)])
}

/// The plist inside a profile that may be CMS-signed.
pub fn profile_content(bytes: &[u8]) -> Result<Vec<u8>, SimError> {
    let trimmed = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map_or(bytes, |i| &bytes[i..]);
    if trimmed.starts_with(b"<?xml")
        || trimmed.starts_with(b"<plist")
        || trimmed.starts_with(b"bplist")
    {
        return Ok(bytes.to_vec());
    }
    let p7 = Pkcs7::from_der(bytes)
        .map_err(|e| SimError::Profile(format!("neither a plist nor CMS: {e}")))?;
    let certs = Stack::new().map_err(crypto)?;
    let store = X509StoreBuilder::new().map_err(crypto)?.build();
    let mut out = Vec::new();
    p7.verify(
        &certs,
        &store,
        None,
        Some(&mut out),
        Pkcs7Flags::NOVERIFY | Pkcs7Flags::BINARY,
    )
    .map_err(|e| SimError::Profile(format!("signature does not verify: {e}")))?;
    Ok(out)
}

/// Devices by push token, woken whenever the APNs stand-in accepts a push for them.
pub struct Fleet {
    pub devices: HashMap<String, Arc<SimDevice>>,
}

impl Fleet {
    pub fn new(devices: impl IntoIterator<Item = Arc<SimDevice>>) -> Arc<Self> {
        Arc::new(Self {
            devices: devices.into_iter().map(|d| (d.token_hex(), d)).collect(),
        })
    }

    /// Run a session on every device the stand-in pushes to, until `pushes` closes; a session
    /// that cannot reach the server is tried again after 1, 2 and 4 s, as mdmclient retries.
    pub fn wake_on_push(
        self: &Arc<Self>,
        mut pushes: tokio::sync::broadcast::Receiver<String>,
    ) -> tokio::task::JoinHandle<()> {
        let fleet = self.clone();
        tokio::spawn(async move {
            loop {
                match pushes.recv().await {
                    Ok(token) => {
                        if let Some(d) = fleet.devices.get(&token).cloned() {
                            tokio::spawn(async move {
                                // As mdmclient does, a check-in that could not reach the
                                // server is tried again a little later (1, 2, 4 s).
                                for attempt in 0..4u32 {
                                    match d.session().await {
                                        Ok(_) => return,
                                        Err(e) if attempt < 3 => {
                                            tracing::warn!(device = %d.udid, error = %e, "simulated device session failed; trying again");
                                            tokio::time::sleep(std::time::Duration::from_secs(
                                                1 << attempt,
                                            ))
                                            .await;
                                        }
                                        Err(e) => {
                                            tracing::warn!(device = %d.udid, error = %e, "simulated device session failed")
                                        }
                                    }
                                }
                            });
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "simulated fleet missed pushes");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        })
    }
}
