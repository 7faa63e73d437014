//! Credentials the server checks, kept only as SHA-256 hashes: admin API bearer tokens and
//! one-time SCEP challenges.

use serde::Serialize;

use super::StoreError;
use super::sql::Row;
use super::tx::SqlTx;
use crate::timestamp::Timestamp;

#[derive(Clone, Debug, Serialize)]
pub struct ApiToken {
    pub id: i64,
    pub name: String,
    pub created_at: Timestamp,
    pub created_by: String,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

pub trait Tokens {
    /// Store a new API token's hash under a unique name.
    fn create_api_token(
        &mut self,
        name: &str,
        sha256: &str,
        created_by: &str,
    ) -> Result<i64, StoreError>;
    fn api_tokens(&mut self) -> Result<Vec<ApiToken>, StoreError>;
    /// The live (not revoked) token with this hash.
    fn api_token_by_hash(&mut self, sha256: &str) -> Result<Option<ApiToken>, StoreError>;
    /// Revoke by name; false when there is no live token of that name.
    fn revoke_api_token(&mut self, name: &str) -> Result<bool, StoreError>;
    fn touch_api_token(&mut self, id: i64) -> Result<(), StoreError>;
    /// Store a one-time SCEP challenge's hash.
    fn add_scep_challenge(
        &mut self,
        sha256: &str,
        expires_at: Timestamp,
        created_by: &str,
    ) -> Result<(), StoreError>;
    /// Use a one-time challenge: true exactly once, and only before it expires.
    fn use_scep_challenge(&mut self, sha256: &str) -> Result<bool, StoreError>;
    /// Remember the certificate issued under a one-time challenge.
    fn set_challenge_issued(&mut self, sha256: &str, cert_sha256: &str) -> Result<(), StoreError>;
    /// The certificate issued under a one-time challenge, if any.
    fn challenge_issued(&mut self, sha256: &str) -> Result<Option<String>, StoreError>;
}

const COLUMNS: &str = "id, name, created_at, created_by, last_used_at, revoked_at";

fn token(r: &Row) -> Result<ApiToken, StoreError> {
    Ok(ApiToken {
        id: r.int(0)?,
        name: r.text(1)?,
        created_at: r.ts(2)?,
        created_by: r.text(3)?,
        last_used_at: r.opt_ts(4)?,
        revoked_at: r.opt_ts(5)?,
    })
}

impl Tokens for SqlTx<'_> {
    fn create_api_token(
        &mut self,
        name: &str,
        sha256: &str,
        created_by: &str,
    ) -> Result<i64, StoreError> {
        self.conn
            .query_one(
                "INSERT INTO api_tokens (name, sha256, created_at, created_by) VALUES (?, ?, ?, ?) RETURNING id",
                &[name.into(), sha256.into(), Timestamp::now().into(), created_by.into()],
            )?
            .int(0)
    }

    fn api_tokens(&mut self) -> Result<Vec<ApiToken>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM api_tokens ORDER BY name");
        self.conn.query(&sql, &[])?.iter().map(token).collect()
    }

    fn api_token_by_hash(&mut self, sha256: &str) -> Result<Option<ApiToken>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM api_tokens WHERE sha256 = ? AND revoked_at IS NULL");
        self.conn
            .query_opt(&sql, &[sha256.into()])?
            .as_ref()
            .map(token)
            .transpose()
    }

    fn revoke_api_token(&mut self, name: &str) -> Result<bool, StoreError> {
        // A revoked token keeps its row (and its hash) for the record; its name is freed by
        // renaming it, so a new token may take the name.
        let renamed = format!("{name} (revoked {})", Timestamp::now());
        let n = self.conn.execute(
            "UPDATE api_tokens SET revoked_at = ?, name = ? WHERE name = ? AND revoked_at IS NULL",
            &[
                Timestamp::now().into(),
                renamed.as_str().into(),
                name.into(),
            ],
        )?;
        Ok(n == 1)
    }

    fn touch_api_token(&mut self, id: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE api_tokens SET last_used_at = ? WHERE id = ?",
            &[Timestamp::now().into(), id.into()],
        )?;
        Ok(())
    }

    fn add_scep_challenge(
        &mut self,
        sha256: &str,
        expires_at: Timestamp,
        created_by: &str,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO scep_challenges (sha256, created_at, expires_at, created_by) VALUES (?, ?, ?, ?)",
            &[sha256.into(), Timestamp::now().into(), expires_at.into(), created_by.into()],
        )?;
        Ok(())
    }

    fn set_challenge_issued(&mut self, sha256: &str, cert_sha256: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE scep_challenges SET issued_sha256 = ? WHERE sha256 = ?",
            &[cert_sha256.into(), sha256.into()],
        )?;
        Ok(())
    }

    fn challenge_issued(&mut self, sha256: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_opt(
                "SELECT issued_sha256 FROM scep_challenges WHERE sha256 = ?",
                &[sha256.into()],
            )?
            .map(|r| r.opt_text(0))
            .transpose()
            .map(Option::flatten)
    }

    fn use_scep_challenge(&mut self, sha256: &str) -> Result<bool, StoreError> {
        let now = Timestamp::now();
        let n = self.conn.execute(
            "UPDATE scep_challenges SET used_at = ? WHERE sha256 = ? AND used_at IS NULL AND expires_at > ?",
            &[now.into(), sha256.into(), now.into()],
        )?;
        Ok(n == 1)
    }
}
