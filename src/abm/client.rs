//! The client for Apple's device enrollment service (Apple Business Manager's API, "DEP"):
//! an OAuth 1.0a `GET /session`, the session header on every call, a new session on 401 and on
//! a 403 whose body is `FORBIDDEN` (a stale session; any other 403 is not), a rotated session
//! header adopted, `X-Server-Protocol-Version` sent; 429 and 503 waited out (`Retry-After`),
//! other 5xx retried with exponential backoff and jitter; a 403 `T_C_NOT_SIGNED` stops with
//! what the admin must do, never a retry loop.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use super::oauth::{self, Credentials};
use crate::assets::abm::ServerToken;

/// Apple's service (`MDMCTL_ABM_URL` overrides it: a stand-in, a proxy).
pub const DEFAULT_URL: &str = "https://mdmenrollment.apple.com";
/// 9: assignment answers may say `THROTTLED` (Fleet moved to it for that).
pub const PROTOCOL_VERSION: &str = "9";
const SESSION_HEADER: &str = "X-ADM-Auth-Session";
const USER_AGENT: &str = concat!("mdmctl/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
pub enum DepError {
    #[error(
        "Apple Business Manager's terms and conditions changed and are not accepted yet (403 T_C_NOT_SIGNED)"
    )]
    TermsNotSigned,
    #[error("Apple refused the server token: {0}")]
    TokenRejected(String),
    #[error("the server token has no access to this (403 {0})")]
    AccessDenied(String),
    #[error("Apple answered HTTP {status}: {body}")]
    Http { status: u16, body: String },
    #[error("cannot reach Apple Business Manager at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("Apple's answer to {path} does not parse: {reason}")]
    Decode { path: String, reason: String },
}

impl crate::diagnose::Diagnose for DepError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            DepError::TermsNotSigned => "an administrator must sign in to business.apple.com and accept the new terms; nothing is retried until then".into(),
            DepError::TokenRejected(_) => "download a new server token in Apple Business Manager › Preferences › your MDM server, then `mdmctl set mdm-apple-bm --token FILE.p7m`".into(),
            DepError::AccessDenied(_) => "check the MDM server's role and device access in Apple Business Manager".into(),
            DepError::Http { .. } => "try again later; `MDMCTL_ABM_URL` points at another service when set".into(),
            DepError::Unreachable { .. } => "mdmctl must reach mdmenrollment.apple.com on TCP 443 (or `MDMCTL_ABM_URL`)".into(),
            DepError::Decode { .. } => return None,
        })
    }
}

/// How calls are retried.
#[derive(Clone, Debug)]
pub struct Retry {
    /// Tries of one call, the first included.
    pub attempts: u32,
    /// First backoff for 5xx and network errors (doubling, with jitter).
    pub base_delay: Duration,
    /// The longest `Retry-After` waited out; beyond it the call fails.
    pub max_wait: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 4,
            base_delay: Duration::from_secs(1),
            max_wait: Duration::from_secs(120),
        }
    }
}

/// `GET /account`: the MDM server and its organization (the fields mdmctl shows; the rest
/// are ignored).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Account {
    pub server_name: String,
    pub server_uuid: String,
    pub org_name: String,
    pub org_email: String,
    pub org_id: String,
    pub admin_id: String,
}

pub struct DepClient {
    base: String,
    http: reqwest::Client,
    token: Zeroizing<String>,
    consumer_key: String,
    consumer_secret: Zeroizing<String>,
    access_secret: Zeroizing<String>,
    session: Mutex<Option<Zeroizing<String>>>,
    retry: Retry,
}

impl std::fmt::Debug for DepClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DepClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The largest answer read from Apple: a page of 1,000 devices is well under a megabyte.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// An answer's body, at most `MAX_ANSWER` bytes (past it the call fails, nothing is kept).
async fn body_of(mut resp: reqwest::Response, url: &str) -> Result<String, DepError> {
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if out.len() + c.len() > MAX_ANSWER {
                    return Err(DepError::Decode {
                        path: url.to_string(),
                        reason: format!("the answer is larger than {MAX_ANSWER} bytes"),
                    });
                }
                out.extend_from_slice(&c);
            }
            Ok(None) => return Ok(String::from_utf8_lossy(&out).into_owned()),
            Err(e) => {
                return Err(DepError::Unreachable {
                    url: url.to_string(),
                    reason: e.to_string(),
                });
            }
        }
    }
}

fn nonce() -> String {
    let mut b = [0u8; 16];
    // A failing RNG leaves zeros: the timestamp still varies, and Apple refuses a reused nonce.
    let _ = openssl::rand::rand_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 1];
    let _ = openssl::rand::rand_bytes(&mut b);
    d + d.mul_f64(f64::from(b[0]) / 512.0)
}

impl DepClient {
    pub fn new(base: &str, token: &ServerToken, retry: Retry) -> Result<Self, DepError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| DepError::Unreachable {
                url: base.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            http,
            token: Zeroizing::new(token.access_token.clone()),
            consumer_key: token.consumer_key.clone(),
            consumer_secret: Zeroizing::new(token.consumer_secret.clone()),
            access_secret: Zeroizing::new(token.access_secret.clone()),
            session: Mutex::new(None),
            retry,
        })
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> DepError {
        DepError::Unreachable {
            url: self.base.clone(),
            reason: e.to_string(),
        }
    }

    /// A new session (`GET /session`, OAuth-signed).
    async fn new_session(&self) -> Result<Zeroizing<String>, DepError> {
        let url = format!("{}/session", self.base);
        let creds = Credentials {
            consumer_key: &self.consumer_key,
            consumer_secret: &self.consumer_secret,
            token: &self.token,
            token_secret: &self.access_secret,
        };
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let auth = oauth::authorization("GET", &url, &[], &creds, &nonce(), ts, Some("1.0"))
            .map_err(|e| self.unreachable(e))?;
        let resp = self
            .http
            .get(&url)
            .header("Authorization", auth)
            .header("X-Server-Protocol-Version", PROTOCOL_VERSION)
            .header("Content-Type", "application/json;charset=UTF8")
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        let body = body_of(resp, &url).await?;
        if status.is_success() {
            #[derive(Deserialize)]
            struct Session {
                auth_session_token: String,
            }
            let s: Session = serde_json::from_str(&body).map_err(|e| DepError::Decode {
                path: "/session".into(),
                reason: e.to_string(),
            })?;
            return Ok(Zeroizing::new(s.auth_session_token));
        }
        Err(classify(status, &body))
    }

    /// One call with the session; JSON in and out.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, DepError> {
        let url = format!("{}{path}", self.base);
        let mut renewed = false;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let session = {
                let mut cached = self.session.lock().await;
                match cached.as_ref() {
                    Some(s) => s.clone(),
                    None => {
                        let s = self.new_session().await?;
                        renewed = true;
                        *cached = Some(s.clone());
                        s
                    }
                }
            };
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header(SESSION_HEADER, session.as_str())
                .header("X-Server-Protocol-Version", PROTOCOL_VERSION);
            if let Some(b) = body {
                req = req
                    .header("Content-Type", "application/json;charset=UTF8")
                    .body(b.to_string());
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if attempt < self.retry.attempts => {
                    tracing::debug!(error = %e, attempt, path, "ABM call failed; trying again");
                    tokio::time::sleep(jitter(self.retry.base_delay * 2u32.pow(attempt - 1))).await;
                    continue;
                }
                Err(e) => return Err(self.unreachable(e)),
            };
            let status = resp.status();
            let rotated = resp
                .headers()
                .get(SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .filter(|v| *v != session.as_str())
                .map(|v| Zeroizing::new(v.to_string()));
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let text = body_of(resp, &url).await?;
            if let Some(r) = rotated {
                tracing::debug!("ABM rotated the session; adopted");
                *self.session.lock().await = Some(r);
            }
            let stale = status == StatusCode::UNAUTHORIZED
                || (status == StatusCode::FORBIDDEN && text.contains("FORBIDDEN"));
            if stale {
                *self.session.lock().await = None;
                if renewed {
                    return Err(classify(status, &text));
                }
                renewed = true;
                attempt -= 1;
                continue;
            }
            if status.is_success() {
                return serde_json::from_str(&text).map_err(|e| DepError::Decode {
                    path: path.to_string(),
                    reason: e.to_string(),
                });
            }
            let waitable = status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::SERVICE_UNAVAILABLE;
            if (waitable || status.is_server_error()) && attempt < self.retry.attempts {
                let wait = match retry_after {
                    Some(w) if waitable => w,
                    _ => jitter(self.retry.base_delay * 2u32.pow(attempt - 1)),
                };
                if wait > self.retry.max_wait {
                    return Err(classify(status, &text));
                }
                tracing::info!(
                    status = status.as_u16(),
                    wait_secs = wait.as_secs_f64(),
                    path,
                    "ABM asked to wait; trying again"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            return Err(classify(status, &text));
        }
    }

    /// `GET /account`.
    pub async fn account(&self) -> Result<Account, DepError> {
        self.call(Method::GET, "/account", None).await
    }
}

/// What an error answer means.
fn classify(status: StatusCode, body: &str) -> DepError {
    let body = body.trim().chars().take(300).collect::<String>();
    match status {
        StatusCode::FORBIDDEN if body.contains("T_C_NOT_SIGNED") => DepError::TermsNotSigned,
        StatusCode::FORBIDDEN if body.contains("FORBIDDEN") => DepError::TokenRejected(body),
        StatusCode::FORBIDDEN => DepError::AccessDenied(body),
        StatusCode::UNAUTHORIZED => DepError::TokenRejected(body),
        s => DepError::Http {
            status: s.as_u16(),
            body,
        },
    }
}
