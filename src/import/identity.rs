//! Facts about stored device identities and times, read without OpenSSL: the SHA-256 of a
//! certificate's DER and its notAfter (OpenSSL 3.0 spends ~180 µs decoding one certificate,
//! too slow for 100,000 devices), and the timestamp formats SQL dumps write.

use base64::Engine as _;
use time::{Date, Month, PrimitiveDateTime, Time};

use crate::pki::der::Tlv;
use crate::timestamp::Timestamp;

/// Lowercase hex SHA-256 of the DER certificate and its notAfter.
pub fn identity_of(cert: &[u8]) -> Result<(String, Timestamp), String> {
    let der = cert_der(cert)?;
    let sha = hex::encode(openssl::sha::sha256(&der));
    let not_after = not_after(&der)?;
    Ok((sha, not_after))
}

/// The DER of a PEM (or DER) certificate.
pub fn cert_der(cert: &[u8]) -> Result<Vec<u8>, String> {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    const END: &[u8] = b"-----END CERTIFICATE-----";
    let trimmed = cert.trim_ascii();
    if trimmed.starts_with(BEGIN) {
        let body = &trimmed[BEGIN.len()..];
        let end = body
            .windows(END.len())
            .position(|w| w == END)
            .ok_or("the PEM certificate has no `-----END CERTIFICATE-----` line")?;
        let b64: Vec<u8> = body[..end]
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(&b64)
            .map_err(|_| "the PEM certificate's base64 is damaged".to_string())
    } else if trimmed.first() == Some(&0x30) {
        Ok(cert.to_vec())
    } else {
        Err("not a certificate (expected PEM `-----BEGIN CERTIFICATE-----`)".into())
    }
}

fn not_after(der: &[u8]) -> Result<Timestamp, String> {
    let bad = |what: &str| format!("not an X.509 certificate ({what})");
    let cert = Tlv::parse(der).map_err(|e| bad(e.0))?;
    let tbs = cert.child(0, "tbsCertificate").map_err(|e| bad(e.0))?;
    let fields = tbs.children().map_err(|e| bad(e.0))?;
    let first = usize::from(fields.first().map(|f| f.tag) == Some(0xa0));
    let validity = fields.get(first + 3).ok_or_else(|| bad("no validity"))?;
    let times = validity.children().map_err(|e| bad(e.0))?;
    let na = times.get(1).ok_or_else(|| bad("no notAfter"))?;
    let text = std::str::from_utf8(na.content).map_err(|_| bad("notAfter"))?;
    let full = match na.tag {
        0x17 if text.len() == 13 => {
            let yy: i32 = text
                .get(..2)
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| bad("notAfter"))?;
            let century = if yy >= 50 { "19" } else { "20" };
            format!("{century}{text}")
        }
        0x18 if text.len() == 15 => text.to_string(),
        _ => return Err(bad("notAfter")),
    };
    parse_compact(&full).ok_or_else(|| bad("notAfter"))
}

/// `YYYYMMDDHHMMSSZ`.
fn parse_compact(s: &str) -> Option<Timestamp> {
    if !s.ends_with('Z') || s.len() != 15 {
        return None;
    }
    let n = |a: usize, b: usize| s.get(a..b)?.parse::<u32>().ok();
    at(
        n(0, 4)? as i32,
        n(4, 6)?,
        n(6, 8)?,
        n(8, 10)?,
        n(10, 12)?,
        n(12, 14)?,
    )
}

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<Timestamp> {
    let date = Date::from_calendar_date(y, Month::try_from(mo as u8).ok()?, d as u8).ok()?;
    let time = Time::from_hms(h as u8, mi as u8, s.min(59) as u8).ok()?;
    Some(Timestamp(
        PrimitiveDateTime::new(date, time)
            .assume_utc()
            .unix_timestamp(),
    ))
}

/// A SQL timestamp as dumps write it: `2024-05-01 10:00:00[.123][+00[:00]|Z]`, or RFC 3339, or
/// Unix seconds. Without an offset it is UTC (mysqldump writes UTC by default).
pub fn parse_sql_time(v: &[u8]) -> Option<Timestamp> {
    let s = std::str::from_utf8(v).ok()?.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok().map(Timestamp);
    }
    if s.len() < 19 {
        return None;
    }
    let n = |a: usize, b: usize| s.get(a..b)?.parse::<u32>().ok();
    let base = at(
        n(0, 4)? as i32,
        n(5, 7)?,
        n(8, 10)?,
        n(11, 13)?,
        n(14, 16)?,
        n(17, 19)?,
    )?;
    let mut rest = s.get(19..)?;
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let rest = rest.trim();
    let offset = if rest.is_empty() || rest == "Z" || rest == "UTC" {
        0
    } else {
        let sign = match rest.as_bytes()[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let digits: String = rest[1..].chars().filter(|c| c.is_ascii_digit()).collect();
        let h: i64 = digits.get(..2)?.parse().ok()?;
        let m: i64 = digits.get(2..4).and_then(|m| m.parse().ok()).unwrap_or(0);
        sign * (h * 3600 + m * 60)
    };
    Some(Timestamp(base.0 - offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_times() {
        assert_eq!(
            parse_sql_time(b"2024-05-01 10:00:00"),
            Some(Timestamp(1714557600))
        );
        assert_eq!(
            parse_sql_time(b"2024-05-01 12:00:00.5+02"),
            Some(Timestamp(1714557600))
        );
        assert_eq!(
            parse_sql_time(b"2024-05-01T10:00:00Z"),
            Some(Timestamp(1714557600))
        );
        assert_eq!(parse_sql_time(b"nonsense"), None);
        assert_eq!(parse_sql_time("2024-05-01 10:00:0é0".as_bytes()), None);
    }

    #[test]
    fn matches_openssl() {
        let key = crate::pki::generate_rsa(2048).unwrap();
        let cert = crate::pki::self_signed("x", &key, 30).unwrap();
        let info = crate::pki::CertInfo::of(&cert).unwrap();
        let (sha, na) = identity_of(&cert.to_pem().unwrap()).unwrap();
        assert_eq!(sha, info.sha256);
        assert_eq!(na, info.not_after);
        assert!(
            identity_of(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----").is_err()
        );
    }
}
