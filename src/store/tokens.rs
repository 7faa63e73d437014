//! Credentials the server checks, kept only as SHA-256 hashes: admin API bearer tokens (with
//! their role and team) and one-time SCEP challenges (with what each was minted for).

use serde::{Deserialize, Serialize};

use super::StoreError;
use super::sql::Row;
use super::tx::SqlTx;
use crate::timestamp::Timestamp;

/// What an API token may do (Fleet's roles, narrowed to mdmctl's API).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read devices, commands, profiles, activities; no secrets.
    Observer,
    /// `apply` (and its dry run) only: what a GitOps pipeline needs, nothing it could leak.
    Gitops,
    /// Observer, plus act on devices (commands, pushes, transfers), apply, and view FileVault
    /// keys and push credentials (audited).
    Maintainer,
    /// Everything: also one-time SCEP challenges (new identities).
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Maintainer, Role::Observer, Role::Gitops];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Maintainer => "maintainer",
            Role::Observer => "observer",
            Role::Gitops => "gitops",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ApiToken {
    pub id: i64,
    pub name: String,
    pub role: Role,
    /// The team the token is limited to (its devices only); `None`: every device.
    pub team_id: Option<i64>,
    pub team: Option<String>,
    pub created_at: Timestamp,
    pub created_by: String,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

/// What a one-time SCEP challenge was minted for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChallengePurpose {
    /// `/enroll` with an enrollment secret.
    Enroll,
    /// An identity renewal mdmctl sent one device.
    Renewal,
    /// Minted through the admin API.
    Api,
}

impl ChallengePurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengePurpose::Enroll => "enroll",
            ChallengePurpose::Renewal => "renewal",
            ChallengePurpose::Api => "api",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "enroll" => ChallengePurpose::Enroll,
            "renewal" => ChallengePurpose::Renewal,
            _ => ChallengePurpose::Api,
        }
    }
}

/// What a certificate issued under a one-time challenge may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChallengeScope {
    pub purpose: ChallengePurpose,
    /// The one device it is for (a renewal, or an enrollment secret scoped to a device).
    pub device_id: Option<String>,
    /// The team a new device enrolled with it joins.
    pub team_id: Option<i64>,
    pub enroll_secret_id: Option<i64>,
}

impl ChallengeScope {
    pub fn api() -> Self {
        Self {
            purpose: ChallengePurpose::Api,
            device_id: None,
            team_id: None,
            enroll_secret_id: None,
        }
    }
}

pub trait Tokens {
    /// Store a new API token's hash under a unique name, with its role and team.
    fn create_api_token(
        &mut self,
        name: &str,
        sha256: &str,
        created_by: &str,
        role: Role,
        team_id: Option<i64>,
    ) -> Result<i64, StoreError>;
    fn api_tokens(&mut self) -> Result<Vec<ApiToken>, StoreError>;
    /// The live (not revoked) token with this hash.
    fn api_token_by_hash(&mut self, sha256: &str) -> Result<Option<ApiToken>, StoreError>;
    /// Revoke by name; false when there is no live token of that name.
    fn revoke_api_token(&mut self, name: &str) -> Result<bool, StoreError>;
    fn touch_api_token(&mut self, id: i64) -> Result<(), StoreError>;
    /// Store a one-time SCEP challenge's hash and what it is for.
    fn add_scep_challenge(
        &mut self,
        sha256: &str,
        expires_at: Timestamp,
        created_by: &str,
        scope: &ChallengeScope,
    ) -> Result<(), StoreError>;
    /// Use a one-time challenge: its scope exactly once, and only before it expires.
    fn use_scep_challenge(&mut self, sha256: &str) -> Result<Option<ChallengeScope>, StoreError>;
    /// What a challenge (used or not) was minted for.
    fn challenge_scope(&mut self, sha256: &str) -> Result<Option<ChallengeScope>, StoreError>;
    /// Delete challenges that expired before `before` (used or not): what they issued is in
    /// `scep_issued`. Returns how many went.
    fn prune_scep_challenges(&mut self, before: Timestamp) -> Result<u64, StoreError>;
    /// Remember the certificate issued under a one-time challenge.
    fn set_challenge_issued(&mut self, sha256: &str, cert_sha256: &str) -> Result<(), StoreError>;
    /// The certificate issued under a one-time challenge, if any.
    fn challenge_issued(&mut self, sha256: &str) -> Result<Option<String>, StoreError>;
}

const COLUMNS: &str = "t.id, t.name, t.created_at, t.created_by, t.last_used_at, t.revoked_at, t.role, t.team_id, teams.name";
const FROM: &str = "api_tokens t LEFT JOIN teams ON teams.id = t.team_id";

fn token(r: &Row) -> Result<ApiToken, StoreError> {
    let role = r.text(6)?;
    Ok(ApiToken {
        id: r.int(0)?,
        name: r.text(1)?,
        created_at: r.ts(2)?,
        created_by: r.text(3)?,
        last_used_at: r.opt_ts(4)?,
        revoked_at: r.opt_ts(5)?,
        role: Role::parse(&role)
            .ok_or_else(|| StoreError::Decode(format!("unknown token role `{role}`")))?,
        team_id: r.opt_int(7)?,
        team: r.opt_text(8)?,
    })
}

const SCOPE: &str = "purpose, device_id, team_id, enroll_secret_id";

fn scope(r: &Row) -> Result<ChallengeScope, StoreError> {
    Ok(ChallengeScope {
        purpose: ChallengePurpose::parse(&r.text(0)?),
        device_id: r.opt_text(1)?,
        team_id: r.opt_int(2)?,
        enroll_secret_id: r.opt_int(3)?,
    })
}

impl Tokens for SqlTx<'_> {
    fn create_api_token(
        &mut self,
        name: &str,
        sha256: &str,
        created_by: &str,
        role: Role,
        team_id: Option<i64>,
    ) -> Result<i64, StoreError> {
        self.conn
            .query_one(
                "INSERT INTO api_tokens (name, sha256, created_at, created_by, role, team_id) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                &[
                    name.into(),
                    sha256.into(),
                    Timestamp::now().into(),
                    created_by.into(),
                    role.as_str().into(),
                    team_id.into(),
                ],
            )?
            .int(0)
    }

    fn api_tokens(&mut self) -> Result<Vec<ApiToken>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM {FROM} ORDER BY t.name");
        self.conn.query(&sql, &[])?.iter().map(token).collect()
    }

    fn api_token_by_hash(&mut self, sha256: &str) -> Result<Option<ApiToken>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM {FROM} WHERE t.sha256 = ? AND t.revoked_at IS NULL");
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
        scope: &ChallengeScope,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            &format!("INSERT INTO scep_challenges (sha256, created_at, expires_at, created_by, {SCOPE}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
            &[
                sha256.into(),
                Timestamp::now().into(),
                expires_at.into(),
                created_by.into(),
                scope.purpose.as_str().into(),
                scope.device_id.as_deref().into(),
                scope.team_id.into(),
                scope.enroll_secret_id.into(),
            ],
        )?;
        Ok(())
    }

    fn challenge_scope(&mut self, sha256: &str) -> Result<Option<ChallengeScope>, StoreError> {
        self.conn
            .query_opt(
                &format!("SELECT {SCOPE} FROM scep_challenges WHERE sha256 = ?"),
                &[sha256.into()],
            )?
            .as_ref()
            .map(scope)
            .transpose()
    }

    fn prune_scep_challenges(&mut self, before: Timestamp) -> Result<u64, StoreError> {
        // A renewal's challenge stays while its renewal needs it to recognize the new identity
        // (`identity_renewal.challenge_sha256`).
        let n = self.conn.execute(
            "DELETE FROM scep_challenges WHERE expires_at < ? \
             AND sha256 NOT IN (SELECT challenge_sha256 FROM identity_renewal WHERE challenge_sha256 IS NOT NULL)",
            &[before.into()],
        )?;
        Ok(n)
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

    fn use_scep_challenge(&mut self, sha256: &str) -> Result<Option<ChallengeScope>, StoreError> {
        let now = Timestamp::now();
        let n = self.conn.execute(
            "UPDATE scep_challenges SET used_at = ? WHERE sha256 = ? AND used_at IS NULL AND expires_at > ?",
            &[now.into(), sha256.into(), now.into()],
        )?;
        if n != 1 {
            return Ok(None);
        }
        self.challenge_scope(sha256)
    }
}
