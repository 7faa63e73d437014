//! The admin API's wire types (JSON under `/api/v1`), and [`ApiClient`], which the CLI uses
//! with `--server URL` / `MDMCTL_SERVER` and `MDMCTL_API_TOKEN` to run commands against a
//! remote `serve` instead of a local store.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{DeviceDetail, Sent};
use crate::push::PushSummary;
use crate::store::{DeviceSummary, QueueEntry};

/// `POST /api/v1/commands`: a named command with parameters, or a raw plist (base64).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CommandRequest {
    /// UDIDs, EnrollmentIDs or serial numbers.
    pub devices: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_type: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub params: serde_json::Value,
    /// A whole command plist, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plist: Option<String>,
    /// Push after queueing (default true).
    #[serde(default = "yes")]
    pub push: bool,
}

fn yes() -> bool {
    true
}

/// `POST /api/v1/push`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PushRequest {
    pub devices: Vec<String>,
}

/// `POST /api/v1/transfer`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TransferRequest {
    /// `None`: out of any team.
    pub team: Option<String>,
    pub devices: Vec<String>,
}

/// `GET /api/v1/devices` filters.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DeviceFilter {
    /// Only devices that have (`true`) or have not (`false`) contacted mdmctl since the cutover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrated: Option<bool>,
    /// Only devices last seen at or after this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_since: Option<String>,
    /// Only devices not seen since this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_seen_since: Option<String>,
    /// Only devices in this team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
}

/// Which Apple Business Manager devices (`GET /api/v1/abm/devices`, `mdmctl get abm-devices`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AbmDeviceQuery {
    /// ABM's profile status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// A team; empty: devices in no team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Only devices not enrolled yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

impl AbmDeviceQuery {
    pub fn filter(&self) -> crate::store::AbmFilter {
        crate::store::AbmFilter {
            status: self.status.clone(),
            team: self.team.clone().map(|t| Some(t).filter(|t| !t.is_empty())),
            pending_only: self.pending,
        }
    }
}

/// `POST /api/v1/abm/sync` (`mdmctl abm sync --server`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AbmSyncRequest {
    #[serde(default)]
    pub reset_cursor: bool,
    #[serde(default)]
    pub no_assign: bool,
}

/// Which activity-log entries (`GET /api/v1/activities`, `mdmctl get activities`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ActivityFilter {
    /// A device by UDID, enrollment ID or serial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// A type, or a family ending in `.`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The most recent N (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// A one-time SCEP challenge.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Challenge {
    pub challenge: String,
    pub expires_at: crate::timestamp::Timestamp,
}

/// Every error the API returns: what went wrong, and how to fix it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Each problem of a refused `apply`, one line each (file:line:column: key: message).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// `POST /api/v1/apply`: what the client read and validated, sent for the server to validate
/// again against its store and apply.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApplyRequest {
    pub bundle: crate::gitops::Bundle,
    #[serde(default)]
    pub dry_run: bool,
}

/// The answer to an apply: the same JSON `mdmctl apply --format json` prints, and the plan as
/// text.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApplyResponse {
    pub result: serde_json::Value,
    pub rendered: Vec<String>,
    pub summary: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiClientError {
    #[error("cannot reach `{url}`: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the server refused the API token")]
    Unauthorized,
    #[error("the server answered {status}: {error}")]
    Api {
        status: u16,
        error: String,
        hint: Option<String>,
        problems: Vec<String>,
    },
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
    #[error("`--server {0}` is not an http(s) URL")]
    BadUrl(String),
}

impl crate::diagnose::Diagnose for ApiClientError {
    fn hint(&self) -> Option<String> {
        match self {
            ApiClientError::Unreachable { .. } => {
                Some("check `--server` / `MDMCTL_SERVER` and that `mdmctl serve` is running there".into())
            }
            ApiClientError::Unauthorized => Some(
                "set `MDMCTL_API_TOKEN` to a token made with `mdmctl token create --name NAME --role maintainer` on the server's store".into(),
            ),
            ApiClientError::Api { hint, .. } => hint.clone(),
            ApiClientError::Decode(_) => Some("check the server runs the same mdmctl version (`mdmctl version --server URL`)".into()),
            ApiClientError::BadUrl(u) => Some(format!(
                "give the scheme too, e.g. `--server https://{}`",
                u.trim_start_matches('/')
            )),
        }
    }
}

/// A blocking client for the admin API.
pub struct ApiClient {
    base: String,
    token: Zeroizing<String>,
    http: reqwest::blocking::Client,
}

impl ApiClient {
    pub fn new(base: &str, token: Zeroizing<String>) -> Result<Self, ApiClientError> {
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(ApiClientError::BadUrl(base.to_string()));
        }
        let http = reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .map_err(|e| ApiClientError::Unreachable {
                url: base.into(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            base: format!("{}/api/v1", base.trim_end_matches('/')),
            token,
            http,
        })
    }

    fn call<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::blocking::RequestBuilder,
    ) -> Result<T, ApiClientError> {
        let url = self.base.clone();
        let r = req.bearer_auth(self.token.as_str()).send().map_err(|e| {
            ApiClientError::Unreachable {
                url,
                reason: e.to_string(),
            }
        })?;
        let status = r.status();
        let body = r
            .bytes()
            .map_err(|e| ApiClientError::Decode(e.to_string()))?;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(ApiClientError::Unauthorized);
        }
        if !status.is_success() {
            let e: ApiErrorBody = serde_json::from_slice(&body).unwrap_or(ApiErrorBody {
                error: String::from_utf8_lossy(&body).trim().to_string(),
                hint: None,
                problems: Vec::new(),
            });
            return Err(ApiClientError::Api {
                status: status.as_u16(),
                error: e.error,
                hint: e.hint,
                problems: e.problems,
            });
        }
        serde_json::from_slice(&body).map_err(|e| ApiClientError::Decode(e.to_string()))
    }

    pub fn devices(&self, filter: &DeviceFilter) -> Result<Vec<DeviceSummary>, ApiClientError> {
        self.call(
            self.http
                .get(format!("{}/devices", self.base))
                .query(filter),
        )
    }

    pub fn activities(
        &self,
        filter: &ActivityFilter,
    ) -> Result<Vec<crate::store::Activity>, ApiClientError> {
        self.call(
            self.http
                .get(format!("{}/activities", self.base))
                .query(filter),
        )
    }

    /// Validate and (unless `dry_run`) apply a GitOps bundle on the server's store.
    pub fn apply(&self, req: &ApplyRequest) -> Result<ApplyResponse, ApiClientError> {
        self.call(self.http.post(format!("{}/apply", self.base)).json(req))
    }

    pub fn device(&self, id: &str) -> Result<DeviceDetail, ApiClientError> {
        self.device_with(id, false)
    }

    /// One device; with `secrets`, its push credentials (the server records the viewing).
    pub fn device_with(&self, id: &str, secrets: bool) -> Result<DeviceDetail, ApiClientError> {
        self.call(
            self.http
                .get(format!("{}/devices/{}", self.base, encode(id)))
                .query(&[("secrets", secrets)]),
        )
    }

    pub fn device_commands(&self, id: &str, limit: u32) -> Result<Vec<QueueEntry>, ApiClientError> {
        self.call(
            self.http
                .get(format!("{}/devices/{}/commands", self.base, encode(id)))
                .query(&[("limit", limit)]),
        )
    }

    /// Move devices into a team (`None`: out of any team).
    pub fn transfer(&self, req: &TransferRequest) -> Result<super::Transferred, ApiClientError> {
        self.call(self.http.post(format!("{}/transfer", self.base)).json(req))
    }

    /// A device's escrowed FileVault recovery key (the server records the viewing).
    pub fn disk_encryption_key(
        &self,
        id: &str,
    ) -> Result<super::DiskEncryptionKey, ApiClientError> {
        self.call(self.http.get(format!(
            "{}/devices/{}/disk-encryption-key",
            self.base,
            encode(id)
        )))
    }

    /// A device's profiles and their delivery status.
    pub fn device_profiles(
        &self,
        id: &str,
    ) -> Result<Vec<crate::store::DeviceProfile>, ApiClientError> {
        self.call(
            self.http
                .get(format!("{}/devices/{}/profiles", self.base, encode(id))),
        )
    }

    /// Profile delivery and FileVault counts, over all devices or one team's.
    pub fn profile_status(&self, team: Option<&str>) -> Result<super::Compliance, ApiClientError> {
        let mut req = self.http.get(format!("{}/profile-status", self.base));
        if let Some(t) = team {
            req = req.query(&[("team", t)]);
        }
        self.call(req)
    }

    /// The server's push certificate and SCEP CAs (`GET /api/v1/mdm-apple`).
    pub fn mdm_apple(&self) -> Result<crate::assets::apns::MdmAppleStatus, ApiClientError> {
        self.call(self.http.get(format!("{}/mdm-apple", self.base)))
    }

    /// The server's desired state (`GET /api/v1/config`).
    pub fn config(&self) -> Result<crate::gitops::Snapshot, ApiClientError> {
        self.call(self.http.get(format!("{}/config", self.base)))
    }

    /// The server's build (`GET /api/v1/version`).
    pub fn version(&self) -> Result<crate::version::VersionInfo, ApiClientError> {
        self.call(self.http.get(format!("{}/version", self.base)))
    }

    /// The `serve` instances sharing the store and their jobs.
    pub fn servers(&self) -> Result<super::Instances, ApiClientError> {
        self.call(self.http.get(format!("{}/servers", self.base)))
    }

    /// `cutover set` / `cutover rollback` on the server's store.
    pub fn cutover_change(
        &self,
        req: &crate::cutover::stage::ChangeRequest,
    ) -> Result<crate::cutover::stage::Outcome, ApiClientError> {
        self.call(self.http.post(format!("{}/cutover", self.base)).json(req))
    }

    /// Apple Business Manager's devices on the server's store.
    pub fn abm_devices(
        &self,
        q: &AbmDeviceQuery,
    ) -> Result<Vec<crate::store::AbmDevice>, ApiClientError> {
        self.call(self.http.get(format!("{}/abm/devices", self.base)).query(q))
    }

    /// Sync with Apple Business Manager on the server, now.
    pub fn abm_sync(&self, req: &AbmSyncRequest) -> Result<crate::abm::Pass, ApiClientError> {
        self.call(self.http.post(format!("{}/abm/sync", self.base)).json(req))
    }

    /// Where the staged cutover stands.
    pub fn cutover_status(&self) -> Result<crate::cutover::status::Status, ApiClientError> {
        self.call(self.http.get(format!("{}/cutover", self.base)))
    }

    pub fn send_command(&self, req: &CommandRequest) -> Result<Sent, ApiClientError> {
        self.call(self.http.post(format!("{}/commands", self.base)).json(req))
    }

    pub fn command(&self, uuid: &str) -> Result<Vec<QueueEntry>, ApiClientError> {
        self.call(
            self.http
                .get(format!("{}/commands/{}", self.base, encode(uuid))),
        )
    }

    pub fn push(&self, devices: &[String]) -> Result<PushSummary, ApiClientError> {
        self.call(
            self.http
                .post(format!("{}/push", self.base))
                .json(&PushRequest {
                    devices: devices.to_vec(),
                }),
        )
    }

    pub fn scep_challenge(&self) -> Result<Challenge, ApiClientError> {
        self.call(self.http.post(format!("{}/scep/challenges", self.base)))
    }
}

/// Percent-encode a path segment.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
