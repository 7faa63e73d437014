//! Waking managed devices through APNs (Apple Push Notification service).
//!
//! This module owns everything between "the server wants these devices to
//! check in" and APNs' answer for each device: the push identity (the
//! customer's MDM push certificate and key, [`PushIdentity`]), the
//! [`Pusher`] abstraction the server holds as `Arc<dyn Pusher>`, and the real
//! client [`ApnsClient`], one long-lived HTTP/2 connection per push
//! certificate with many pushes in flight, bounded retries and a
//! classification of every answer ([`PushOutcome`]).
//!
//! An MDM push is `POST /3/device/<token>` with `apns-push-type: mdm`,
//! `apns-topic: <certificate UID>` and the body `{"mdm":"<PushMagic>"}`;
//! nothing else (no `aps` dictionary). See
//! <https://developer.apple.com/documentation/usernotifications/sending-notification-requests-to-apns>
//! and
//! <https://developer.apple.com/documentation/usernotifications/handling-notification-responses-from-apns>.
//!
//! Device tokens and push magics are secrets of a sort (together they let
//! anyone holding the certificate wake the device): nothing here logs a push
//! magic, and tokens appear in logs and `Debug` output only as a short prefix.

mod client;
mod error;
mod identity;
mod service;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

pub use client::{
    ApnsClient, ApnsConfig, DEVELOPMENT_URL, PRODUCTION_ALT_PORT_URL, PRODUCTION_URL, RetryPolicy,
    ServerTrust,
};
pub use error::{ClientError, IdentityError, TokenError};
pub use identity::{MDM_TOPIC_PREFIX, PushIdentity, topic_of};
pub use service::{PushError, PushService, PushSummary};

/// A boxed, sendable future: what makes [`Pusher`] usable as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Something that can wake devices. The server holds an `Arc<dyn Pusher>`,
/// so tests can hand it a fake and `mdmctl serve` the real [`ApnsClient`].
///
/// The methods return [`BoxFuture`] rather than being `async fn`: an
/// `async fn` in a trait is not dyn-compatible (its future type is
/// anonymous and differs per implementation), so we box the future
/// ourselves instead of pulling in the `async-trait` macro for one trait.
/// One allocation per batch is nothing next to a network round trip.
pub trait Pusher: Send + Sync {
    /// Pushes to every target, at most the implementation's concurrency
    /// bound at a time, retrying what is retryable. The result has one
    /// outcome per target, in the order of `targets`.
    fn push_many<'a>(&'a self, targets: &'a [PushTarget]) -> BoxFuture<'a, Vec<PushOutcome>>;

    /// The APNs topic this pusher sends with (the certificate's UID).
    fn topic(&self) -> &str;

    /// Pushes to one device.
    fn push_one<'a>(&'a self, target: &'a PushTarget) -> BoxFuture<'a, PushOutcome> {
        Box::pin(async move {
            let mut outcomes = self.push_many(std::slice::from_ref(target)).await;
            outcomes.pop().unwrap_or_else(|| PushOutcome::Failed {
                reason: "the pusher returned no outcome".to_string(),
            })
        })
    }
}

/// An APNs device token: the `Token` a device sent in its MDM `TokenUpdate`
/// check-in (raw bytes, usually 32 of them), sent to APNs as lowercase hex.
///
/// `Debug` and `Display` show only the first 8 hex digits.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DeviceToken(Vec<u8>);

impl DeviceToken {
    /// From the raw token bytes (the decoded `Token` of a `TokenUpdate`).
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Result<Self, TokenError> {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Err(TokenError::Empty);
        }
        Ok(Self(bytes))
    }

    /// From hex, either case, as stored by other MDM servers.
    pub fn from_hex(hex: &str) -> Result<Self, TokenError> {
        let hex = hex.trim();
        if hex.is_empty() {
            return Err(TokenError::Empty);
        }
        if !hex.len().is_multiple_of(2) {
            return Err(TokenError::NotHex);
        }
        let digits = hex.as_bytes();
        let mut bytes = Vec::with_capacity(digits.len() / 2);
        for pair in digits.chunks_exact(2) {
            let hi = hex_value(pair[0]).ok_or(TokenError::NotHex)?;
            let lo = hex_value(pair[1]).ok_or(TokenError::NotHex)?;
            bytes.push(hi << 4 | lo);
        }
        Ok(Self(bytes))
    }

    /// The raw token bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The full lowercase hex form, as it goes into the request path. Do
    /// not log it; use `Display` (a short prefix) instead.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(self.0.len() * 2);
        for b in &self.0 {
            s.push(HEX[usize::from(b >> 4)] as char);
            s.push(HEX[usize::from(b & 0x0f)] as char);
        }
        s
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for DeviceToken {
    /// A short, log-safe prefix of the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.iter().take(4) {
            write!(f, "{b:02x}")?;
        }
        if self.0.len() > 4 {
            f.write_str("…")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceToken({self})")
    }
}

/// One device to wake.
#[derive(Clone)]
pub struct PushTarget {
    /// The device's APNs token.
    pub token: DeviceToken,
    /// The `PushMagic` the device sent in its `TokenUpdate`; the device only
    /// acts on a push carrying it.
    pub push_magic: String,
    /// `apns-expiration`: UNIX seconds until which APNs keeps retrying
    /// delivery to an offline device; `Some(0)` means "now or never"; `None`
    /// leaves the header out (APNs then stores the push once, for some
    /// time).
    pub expiration: Option<u64>,
}

impl PushTarget {
    /// A target with no `apns-expiration`.
    pub fn new(token: DeviceToken, push_magic: impl Into<String>) -> Self {
        Self {
            token,
            push_magic: push_magic.into(),
            expiration: None,
        }
    }

    /// The exact MDM push body, `{"mdm":"<PushMagic>"}`, with the magic
    /// JSON-escaped.
    pub fn body(&self) -> Vec<u8> {
        // serde_json escapes quotes, backslashes and control characters;
        // serialising a `String` cannot fail.
        let magic = serde_json::Value::String(self.push_magic.clone()).to_string();
        let mut body = Vec::with_capacity(magic.len() + 8);
        body.extend_from_slice(b"{\"mdm\":");
        body.extend_from_slice(magic.as_bytes());
        body.push(b'}');
        body
    }
}

impl fmt::Debug for PushTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushTarget")
            .field("token", &self.token)
            .field("push_magic", &"<redacted>")
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// What became of one push, after any retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// 200: APNs accepted the push (delivery to the device is up to APNs).
    Delivered {
        /// The `apns-id` APNs assigned (empty if APNs sent none).
        apns_id: String,
    },
    /// 410: the token is no longer valid for this topic (the device was
    /// wiped or unenrolled). The caller should disable the enrollment.
    Unregistered {
        /// When APNs found the token invalid (the 410 body's `timestamp`).
        timestamp: Option<SystemTime>,
    },
    /// 400 `BadDeviceToken` or `DeviceTokenNotForTopic`: this token will
    /// never work with this certificate (wrong environment, or another
    /// topic). Do not retry.
    BadToken {
        /// APNs' `reason`.
        reason: String,
    },
    /// Any other answer that retrying will not fix: other 400s, 403 (the
    /// certificate or topic: affects every device, see
    /// [`PushOutcome::affects_all_devices`]), 404, 405, 413, …
    Rejected {
        /// The HTTP status.
        status: u16,
        /// APNs' `reason`, or a description if the body had none.
        reason: String,
    },
    /// APNs refused the push certificate during the TLS handshake (it is
    /// expired, revoked or not issued by Apple). Affects every device; not
    /// retried.
    CertificateRefused {
        /// What the TLS stack reported.
        reason: String,
    },
    /// Retryable failures (429, 5xx, connection errors, GOAWAY, time-outs)
    /// persisted through every attempt. Try again later.
    Failed {
        /// The last failure, and how many attempts were made.
        reason: String,
    },
}

impl PushOutcome {
    /// True for [`PushOutcome::Delivered`].
    pub fn is_delivered(&self) -> bool {
        matches!(self, Self::Delivered { .. })
    }

    /// True when the cause is on the server's side (the push certificate or
    /// topic), so every other device will fail the same way: alert the
    /// operator rather than touching the device's enrollment.
    pub fn affects_all_devices(&self) -> bool {
        match self {
            Self::Rejected { status, .. } => *status == 403,
            Self::CertificateRefused { .. } => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hex_round_trip_and_redaction() {
        let hex = "AB".repeat(32);
        let t = DeviceToken::from_hex(&hex).expect("valid hex");
        assert_eq!(t.as_bytes().len(), 32);
        assert_eq!(t.to_hex(), "ab".repeat(32));
        assert_eq!(t.to_string(), "abababab…");
        assert_eq!(format!("{t:?}"), "DeviceToken(abababab…)");
        assert_eq!(DeviceToken::from_hex("abc"), Err(TokenError::NotHex));
        assert_eq!(DeviceToken::from_hex("zz"), Err(TokenError::NotHex));
        assert_eq!(DeviceToken::from_hex(" "), Err(TokenError::Empty));
        assert_eq!(DeviceToken::from_bytes(Vec::new()), Err(TokenError::Empty));
    }

    #[test]
    fn body_is_exact_and_escaped() {
        let token = DeviceToken::from_bytes(vec![1; 32]).expect("token");
        let t = PushTarget::new(token.clone(), "ABC-123");
        assert_eq!(t.body(), br#"{"mdm":"ABC-123"}"#);
        let t = PushTarget::new(token, "a\"b\\c\n\u{1}é");
        assert_eq!(
            String::from_utf8(t.body()).expect("utf8"),
            r#"{"mdm":"a\"b\\c\n\u0001é"}"#
        );
        let v: serde_json::Value = serde_json::from_slice(&t.body()).expect("json");
        assert_eq!(v["mdm"], "a\"b\\c\n\u{1}é");
        assert!(!format!("{t:?}").contains("a\\\"b"));
    }
}
