//! Points in time as mdmctl stores and shows them: whole seconds since the Unix epoch in the
//! store (the same `BIGINT` on SQLite and PostgreSQL), RFC 3339 in UTC on screen and in JSON.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Seconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        Self(OffsetDateTime::now_utc().unix_timestamp())
    }

    pub fn unix(self) -> i64 {
        self.0
    }

    pub fn plus_days(self, days: i64) -> Self {
        Self(self.0 + days * 86_400)
    }

    /// Whole days from `self` until `later` (negative when `later` is in the past), rounded
    /// down, as an admin counts "days left".
    pub fn days_until(self, later: Timestamp) -> i64 {
        (later.0 - self.0).div_euclid(86_400)
    }

    pub fn to_datetime(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(self.0).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// `YYYY-MM-DD`, for tables where the time of day is noise.
    pub fn date(self) -> String {
        let d = self.to_datetime().date();
        format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
    }

    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        OffsetDateTime::parse(s, &Rfc3339)
            .ok()
            .map(|t| Self(t.unix_timestamp()))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_datetime().format(&Rfc3339) {
            Ok(s) => f.write_str(&s),
            Err(_) => write!(f, "@{}", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not an RFC 3339 time")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_rfc3339() {
        let t = Timestamp(1_700_000_000);
        assert_eq!(t.to_string(), "2023-11-14T22:13:20Z");
        assert_eq!(Timestamp::parse_rfc3339("2023-11-14T22:13:20Z"), Some(t));
        assert_eq!(t.date(), "2023-11-14");
    }

    #[test]
    fn days_until_rounds_down_and_goes_negative() {
        let t = Timestamp(0);
        assert_eq!(t.days_until(Timestamp(86_399)), 0);
        assert_eq!(t.days_until(Timestamp(86_400 * 3)), 3);
        assert_eq!(t.days_until(Timestamp(-1)), -1);
    }
}
