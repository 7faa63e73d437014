//! Apple Business Manager: the server token Apple encrypts to our certificate, and its state.
//!
//! The `.p7m` a admin downloads is S/MIME enveloped data whose content is a MIME part holding
//! `-----BEGIN MESSAGE-----`, a JSON object, `-----END MESSAGE-----`.

use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{AssetError, WARN_DAYS};
use crate::pki::{self, CertInfo};
use crate::store::{AssetKind, AssetState, NewActivity, Tx};
use crate::timestamp::Timestamp;

/// The OAuth 1.0a credentials for Apple's device enrollment API.
#[derive(Clone, Deserialize, Serialize)]
pub struct ServerToken {
    pub consumer_key: String,
    pub consumer_secret: String,
    pub access_token: String,
    pub access_secret: String,
    pub access_token_expiry: String,
}

impl std::fmt::Debug for ServerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerToken")
            .field("consumer_key", &self.consumer_key)
            .field("access_token_expiry", &self.access_token_expiry)
            .finish_non_exhaustive()
    }
}

impl ServerToken {
    pub fn expiry(&self) -> Option<Timestamp> {
        Timestamp::parse_rfc3339(&self.access_token_expiry)
    }
}

/// Pull the JSON out of the decrypted MIME part and check every field Apple sends.
pub fn parse_server_token(content: &[u8]) -> Result<ServerToken, AssetError> {
    let text = String::from_utf8_lossy(content);
    let text = text.replace("\r\n", "\n");
    // MIME headers end at the first blank line; a bare message has none.
    let (headers, body) = match text.split_once("\n\n") {
        Some((h, b))
            if h.lines().all(|l| l.contains(':'))
                && h.to_ascii_lowercase().contains("content-") =>
        {
            (h, b)
        }
        _ => ("", text.as_str()),
    };
    let body = if headers
        .to_ascii_lowercase()
        .contains("content-transfer-encoding: base64")
    {
        let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|e| AssetError::BadToken {
                reason: format!("bad base64 body: {e}"),
            })?;
        String::from_utf8_lossy(&decoded).into_owned()
    } else {
        body.to_string()
    };
    let json = match (
        body.find("-----BEGIN MESSAGE-----"),
        body.find("-----END MESSAGE-----"),
    ) {
        (Some(b), Some(e)) if e > b => body[b + "-----BEGIN MESSAGE-----".len()..e]
            .trim()
            .to_string(),
        _ => body.trim().to_string(),
    };
    let token: ServerToken = serde_json::from_str(&json).map_err(|e| AssetError::BadToken {
        reason: format!("not the expected JSON ({e})"),
    })?;
    for (name, value) in [
        ("consumer_key", &token.consumer_key),
        ("consumer_secret", &token.consumer_secret),
        ("access_token", &token.access_token),
        ("access_secret", &token.access_secret),
    ] {
        if value.trim().is_empty() {
            return Err(AssetError::BadToken {
                reason: format!("`{name}` is empty"),
            });
        }
    }
    if token.expiry().is_none() {
        return Err(AssetError::BadToken {
            reason: format!(
                "`access_token_expiry` `{}` is not a date",
                token.access_token_expiry
            ),
        });
    }
    Ok(token)
}

/// What `get mdm-apple-bm` shows.
#[derive(Clone, Debug, Serialize)]
pub struct AbmStatus {
    pub state: AssetState,
    pub certificate: CertInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token_expiry: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days_left: Option<i64>,
    pub expired: bool,
}

/// Decrypt `p7m` with the store's ABM key(s), check it, and store it encrypted.
pub fn set_abm_token(tx: &mut dyn Tx, p7m: &[u8], actor: &str) -> Result<AbmStatus, AssetError> {
    let candidates = tx.assets(AssetKind::Abm)?;
    if candidates.iter().all(|a| !a.has_key) {
        return Err(AssetError::NoAbmKey);
    }
    let mut found = None;
    for a in candidates
        .iter()
        .filter(|a| a.has_key && a.state != AssetState::Retired)
    {
        let (Some(cert_pem), Some(key_pem)) = (&a.cert_pem, tx.asset_key(a.id)?) else {
            continue;
        };
        let cert = pki::parse_cert(cert_pem.as_bytes())?;
        let key = pki::load_private_key(&key_pem, None)?;
        match pki::decrypt_smime(p7m, &key, &cert) {
            Ok(content) => {
                found = Some((a.clone(), content));
                break;
            }
            Err(pki::PkiError::CannotDecrypt) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let (asset, content) = found.ok_or(AssetError::TokenNotForUs)?;
    let token = parse_server_token(&content)?;
    if let Some(expiry) = token.expiry().filter(|e| *e < Timestamp::now()) {
        return Err(AssetError::Expired {
            what: "Apple Business Manager server token",
            not_after: expiry,
        });
    }
    let json = Zeroizing::new(
        serde_json::to_vec(&token).map_err(|e| AssetError::BadToken {
            reason: e.to_string(),
        })?,
    );
    let expiry = token.expiry();
    if let Some(active) = tx.active_asset(AssetKind::Abm)?
        && active.id != asset.id
    {
        tx.set_asset_state(active.id, AssetState::Retired)?;
    }
    tx.set_asset_token(asset.id, &json, expiry)?;
    tx.set_asset_state(asset.id, AssetState::Active)?;
    tx.record_activity(&NewActivity {
        actor: actor.to_string(),
        kind: "abm.token_set".into(),
        device_id: None,
        summary: format!(
            "set the Apple Business Manager token {}",
            token.consumer_key
        ),
        details: serde_json::json!({
            "asset": asset.id,
            "consumer_key": token.consumer_key,
            "access_token_expiry": expiry,
        }),
    })?;
    status_of(tx, asset.id, Some(&token))?.ok_or(AssetError::NoAbmKey)
}

/// The ABM key pair and token, newest active (or pending) first.
pub fn abm_status(tx: &mut dyn Tx) -> Result<Option<AbmStatus>, AssetError> {
    let Some((id, token)) = current(tx)? else {
        return Ok(None);
    };
    status_of(tx, id, token.as_ref())
}

/// The server token in use (decrypted: it holds the OAuth secrets), if one was installed.
pub fn server_token(tx: &mut dyn Tx) -> Result<Option<ServerToken>, AssetError> {
    Ok(current(tx)?.and_then(|(_, t)| t))
}

/// The ABM asset in use and its token.
fn current(tx: &mut dyn Tx) -> Result<Option<(i64, Option<ServerToken>)>, AssetError> {
    let assets = tx.assets(AssetKind::Abm)?;
    let pick = assets
        .iter()
        .find(|a| a.state == AssetState::Active)
        .or_else(|| assets.iter().find(|a| a.state == AssetState::Pending));
    let Some(a) = pick else { return Ok(None) };
    let token = if a.has_token {
        let raw = tx.asset_token(a.id)?;
        raw.map(|r| {
            serde_json::from_slice::<ServerToken>(&r).map_err(|e| AssetError::BadToken {
                reason: e.to_string(),
            })
        })
        .transpose()?
    } else {
        None
    };
    Ok(Some((a.id, token)))
}

fn status_of(
    tx: &mut dyn Tx,
    id: i64,
    token: Option<&ServerToken>,
) -> Result<Option<AbmStatus>, AssetError> {
    let Some(a) = tx.asset(id)? else {
        return Ok(None);
    };
    let Some(pem) = &a.cert_pem else {
        return Ok(None);
    };
    let certificate = CertInfo::of(&pki::parse_cert(pem.as_bytes())?)?;
    let now = Timestamp::now();
    let expiry = token.and_then(ServerToken::expiry);
    Ok(Some(AbmStatus {
        state: a.state,
        certificate,
        consumer_key: token.map(|t| t.consumer_key.clone()),
        access_token_expiry: expiry,
        days_left: expiry.map(|e| now.days_until(e)),
        expired: expiry.is_some_and(|e| e < now),
    }))
}

/// A warning for tokens close to expiry.
pub fn expiry_warning(status: &AbmStatus) -> Option<String> {
    match status.days_left {
        Some(d) if (0..WARN_DAYS).contains(&d) => Some(format!(
            "the Apple Business Manager token expires in {d} days; download a new one from Apple Business Manager and run `mdmctl set mdm-apple-bm --token FILE`"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &str = r#"{"consumer_key":"CK_1","consumer_secret":"CS_1","access_token":"AT_1","access_secret":"AS_1","access_token_expiry":"2027-10-03T14:17:38Z"}"#;

    #[test]
    fn parses_apples_mime_wrapped_token() {
        let mime = format!(
            "Content-Type: text/plain;charset=UTF-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n-----BEGIN MESSAGE-----\r\n{JSON}\r\n-----END MESSAGE-----\r\n"
        );
        let t = parse_server_token(mime.as_bytes()).unwrap();
        assert_eq!(t.consumer_key, "CK_1");
        assert_eq!(t.expiry(), Timestamp::parse_rfc3339("2027-10-03T14:17:38Z"));
        // Debug never shows the secrets.
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("CS_1") && !dbg.contains("AT_1") && !dbg.contains("AS_1"));
    }

    #[test]
    fn refuses_missing_fields_and_bad_dates() {
        assert!(parse_server_token(br#"{"consumer_key":"x"}"#).is_err());
        let bad = JSON.replace("2027-10-03T14:17:38Z", "someday");
        assert!(matches!(
            parse_server_token(bad.as_bytes()),
            Err(AssetError::BadToken { .. })
        ));
    }
}
