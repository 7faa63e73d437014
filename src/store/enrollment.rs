//! Who may enroll, and what vouches for an identity: enrollment secrets (kept as SHA-256
//! hashes), the record of every certificate mdmctl's SCEP issued and under what, and the
//! admin's permission for a known device to bind a new identity (`mdmctl device rebind`).
//! The server reads these to decide whether an Authenticate may move a device's identity.

use serde::Serialize;

use super::StoreError;
use super::sql::Row;
use super::tx::SqlTx;
use crate::timestamp::Timestamp;

/// An enrollment secret, without the secret.
#[derive(Clone, Debug, Serialize)]
pub struct EnrollSecret {
    pub id: i64,
    pub name: String,
    pub team_id: Option<i64>,
    pub team: Option<String>,
    /// The one device (UDID) it may enroll: its re-enrollment may move that device's identity.
    pub device_id: Option<String>,
    pub created_at: Timestamp,
    pub created_by: String,
    pub expires_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

/// How mdmctl's SCEP issued a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IssuedHow {
    /// Under a one-time challenge (see its scope).
    OneTime,
    /// Under `serve --scep-challenge`, the fixed challenge.
    Static,
    /// A RenewalReq signed by an identity a store CA vouched for.
    Renewal,
}

impl IssuedHow {
    pub fn as_str(self) -> &'static str {
        match self {
            IssuedHow::OneTime => "one-time",
            IssuedHow::Static => "static",
            IssuedHow::Renewal => "renewal",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "one-time" => IssuedHow::OneTime,
            "renewal" => IssuedHow::Renewal,
            _ => IssuedHow::Static,
        }
    }
}

/// A certificate mdmctl's SCEP issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    pub sha256: String,
    pub how: IssuedHow,
    pub challenge_sha256: Option<String>,
    /// For a renewal: the device the signing identity identified.
    pub device_id: Option<String>,
    pub issued_at: Timestamp,
    pub not_after: Timestamp,
}

pub trait EnrollmentTrust {
    fn create_enroll_secret(
        &mut self,
        name: &str,
        sha256: &str,
        team_id: Option<i64>,
        device_id: Option<&str>,
        expires_at: Option<Timestamp>,
        created_by: &str,
    ) -> Result<i64, StoreError>;
    fn enroll_secrets(&mut self) -> Result<Vec<EnrollSecret>, StoreError>;
    /// The live (not revoked, not expired) secret with this hash.
    fn enroll_secret_by_hash(&mut self, sha256: &str) -> Result<Option<EnrollSecret>, StoreError>;
    /// Revoke by name; false when there is no live secret of that name.
    fn revoke_enroll_secret(&mut self, name: &str) -> Result<bool, StoreError>;
    fn touch_enroll_secret(&mut self, id: i64) -> Result<(), StoreError>;

    fn record_issued(&mut self, issued: &Issued) -> Result<(), StoreError>;
    fn issued(&mut self, sha256: &str) -> Result<Option<Issued>, StoreError>;

    /// Let `device_id` bind a new identity at its next Authenticate, until `expires_at`.
    fn grant_rebind(
        &mut self,
        device_id: &str,
        granted_by: &str,
        expires_at: Timestamp,
    ) -> Result<(), StoreError>;
    /// Use the device's live grant (once): who gave it.
    fn take_rebind(&mut self, device_id: &str) -> Result<Option<String>, StoreError>;
}

const SECRET: &str = "s.id, s.name, s.team_id, teams.name, s.device_id, s.created_at, s.created_by, s.expires_at, s.last_used_at, s.revoked_at";
const SECRET_FROM: &str = "enroll_secrets s LEFT JOIN teams ON teams.id = s.team_id";

fn secret(r: &Row) -> Result<EnrollSecret, StoreError> {
    Ok(EnrollSecret {
        id: r.int(0)?,
        name: r.text(1)?,
        team_id: r.opt_int(2)?,
        team: r.opt_text(3)?,
        device_id: r.opt_text(4)?,
        created_at: r.ts(5)?,
        created_by: r.text(6)?,
        expires_at: r.opt_ts(7)?,
        last_used_at: r.opt_ts(8)?,
        revoked_at: r.opt_ts(9)?,
    })
}

impl EnrollmentTrust for SqlTx<'_> {
    fn create_enroll_secret(
        &mut self,
        name: &str,
        sha256: &str,
        team_id: Option<i64>,
        device_id: Option<&str>,
        expires_at: Option<Timestamp>,
        created_by: &str,
    ) -> Result<i64, StoreError> {
        self.conn
            .query_one(
                "INSERT INTO enroll_secrets (name, sha256, team_id, device_id, created_at, created_by, expires_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                &[
                    name.into(),
                    sha256.into(),
                    team_id.into(),
                    device_id.into(),
                    Timestamp::now().into(),
                    created_by.into(),
                    expires_at.into(),
                ],
            )?
            .int(0)
    }

    fn enroll_secrets(&mut self) -> Result<Vec<EnrollSecret>, StoreError> {
        self.conn
            .query(
                &format!(
                    "SELECT {SECRET} FROM {SECRET_FROM} ORDER BY s.revoked_at IS NOT NULL, s.name"
                ),
                &[],
            )?
            .iter()
            .map(secret)
            .collect()
    }

    fn enroll_secret_by_hash(&mut self, sha256: &str) -> Result<Option<EnrollSecret>, StoreError> {
        self.conn
            .query_opt(
                &format!(
                    "SELECT {SECRET} FROM {SECRET_FROM} WHERE s.sha256 = ? AND s.revoked_at IS NULL \
                     AND (s.expires_at IS NULL OR s.expires_at > ?)"
                ),
                &[sha256.into(), Timestamp::now().into()],
            )?
            .as_ref()
            .map(secret)
            .transpose()
    }

    fn revoke_enroll_secret(&mut self, name: &str) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE enroll_secrets SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
            &[Timestamp::now().into(), name.into()],
        )?;
        Ok(n == 1)
    }

    fn touch_enroll_secret(&mut self, id: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE enroll_secrets SET last_used_at = ? WHERE id = ?",
            &[Timestamp::now().into(), id.into()],
        )?;
        Ok(())
    }

    fn record_issued(&mut self, i: &Issued) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO scep_issued (sha256, how, challenge_sha256, device_id, issued_at, not_after) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
            &[
                i.sha256.as_str().into(),
                i.how.as_str().into(),
                i.challenge_sha256.as_deref().into(),
                i.device_id.as_deref().into(),
                i.issued_at.into(),
                i.not_after.into(),
            ],
        )?;
        Ok(())
    }

    fn issued(&mut self, sha256: &str) -> Result<Option<Issued>, StoreError> {
        self.conn
            .query_opt(
                "SELECT sha256, how, challenge_sha256, device_id, issued_at, not_after FROM scep_issued WHERE sha256 = ?",
                &[sha256.into()],
            )?
            .map(|r| {
                Ok(Issued {
                    sha256: r.text(0)?,
                    how: IssuedHow::parse(&r.text(1)?),
                    challenge_sha256: r.opt_text(2)?,
                    device_id: r.opt_text(3)?,
                    issued_at: r.ts(4)?,
                    not_after: r.ts(5)?,
                })
            })
            .transpose()
    }

    fn grant_rebind(
        &mut self,
        device_id: &str,
        granted_by: &str,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO rebind_grants (device_id, granted_by, granted_at, expires_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (device_id) DO UPDATE SET granted_by = excluded.granted_by, \
             granted_at = excluded.granted_at, expires_at = excluded.expires_at",
            &[
                device_id.into(),
                granted_by.into(),
                Timestamp::now().into(),
                expires_at.into(),
            ],
        )?;
        Ok(())
    }

    fn take_rebind(&mut self, device_id: &str) -> Result<Option<String>, StoreError> {
        let by = self
            .conn
            .query_opt(
                "SELECT granted_by FROM rebind_grants WHERE device_id = ? AND expires_at > ?",
                &[device_id.into(), Timestamp::now().into()],
            )?
            .map(|r| r.text(0))
            .transpose()?;
        self.conn.execute(
            "DELETE FROM rebind_grants WHERE device_id = ?",
            &[device_id.into()],
        )?;
        Ok(by)
    }
}
