//! Server assets: APNs push certificates and keys, SCEP CAs, Apple Business Manager key pairs
//! and server tokens, FileVault escrow key pairs. Private keys and tokens are sealed.

use serde::Serialize;
use zeroize::Zeroizing;

use super::StoreError;
use super::sql::Row;
use super::tx::SqlTx;
use crate::timestamp::Timestamp;

const KEY_PURPOSE: &str = "asset-key";
const TOKEN_PURPOSE: &str = "asset-token";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AssetKind {
    /// The MDM push certificate (and, while waiting for Apple, just its key and CSR).
    Apns,
    /// A CA whose certificates identify devices: mdmctl's own, or an old MDM's.
    ScepCa,
    /// The Apple Business Manager key pair and, once uploaded, its server token.
    Abm,
    /// The key pair FileVault recovery keys are encrypted to.
    Escrow,
}

impl AssetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AssetKind::Apns => "apns",
            AssetKind::ScepCa => "scep_ca",
            AssetKind::Abm => "abm",
            AssetKind::Escrow => "escrow",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "apns" => AssetKind::Apns,
            "scep_ca" => AssetKind::ScepCa,
            "abm" => AssetKind::Abm,
            "escrow" => AssetKind::Escrow,
            other => return Err(StoreError::Decode(format!("unknown asset kind `{other}`"))),
        })
    }
}

/// Where an asset is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssetState {
    /// Generated and waiting for its certificate or token from Apple.
    Pending,
    /// In use: the push certificate, the issuing CA, the ABM token, the escrow key.
    Active,
    /// Not issuing, still accepted: an imported or earlier CA whose device identities remain valid.
    Trusted,
    /// Replaced; kept for the record (and to decrypt what was encrypted to it).
    Retired,
}

impl AssetState {
    pub fn as_str(self) -> &'static str {
        match self {
            AssetState::Pending => "pending",
            AssetState::Active => "active",
            AssetState::Trusted => "trusted",
            AssetState::Retired => "retired",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "pending" => AssetState::Pending,
            "active" => AssetState::Active,
            "trusted" => AssetState::Trusted,
            "retired" => AssetState::Retired,
            other => return Err(StoreError::Decode(format!("unknown asset state `{other}`"))),
        })
    }
}

/// An asset to store. `key_pem` and `token` are sealed on the way in.
#[derive(Clone, Debug)]
pub struct NewAsset {
    pub kind: AssetKind,
    pub state: AssetState,
    pub source: String,
    pub cert_pem: Option<String>,
    pub csr_pem: Option<String>,
    pub key_pem: Option<Zeroizing<Vec<u8>>>,
    pub token: Option<Zeroizing<Vec<u8>>>,
    pub topic: Option<String>,
    pub sha256: Option<String>,
    pub not_after: Option<Timestamp>,
}

impl NewAsset {
    pub fn new(kind: AssetKind, state: AssetState, source: impl Into<String>) -> Self {
        Self {
            kind,
            state,
            source: source.into(),
            cert_pem: None,
            csr_pem: None,
            key_pem: None,
            token: None,
            topic: None,
            sha256: None,
            not_after: None,
        }
    }
}

/// A stored asset's public parts; the key and token are read separately, on purpose.
#[derive(Clone, Debug, Serialize)]
pub struct Asset {
    pub id: i64,
    pub kind: AssetKind,
    pub state: AssetState,
    pub source: String,
    pub cert_pem: Option<String>,
    pub csr_pem: Option<String>,
    pub has_key: bool,
    pub has_token: bool,
    pub topic: Option<String>,
    pub sha256: Option<String>,
    pub not_after: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

pub trait Assets {
    fn insert_asset(&mut self, asset: &NewAsset) -> Result<i64, StoreError>;
    /// Assets of a kind, newest first.
    fn assets(&mut self, kind: AssetKind) -> Result<Vec<Asset>, StoreError>;
    fn asset(&mut self, id: i64) -> Result<Option<Asset>, StoreError>;
    /// The active asset of a kind, if any.
    fn active_asset(&mut self, kind: AssetKind) -> Result<Option<Asset>, StoreError>;
    fn asset_by_fingerprint(
        &mut self,
        kind: AssetKind,
        sha256: &str,
    ) -> Result<Option<Asset>, StoreError>;
    fn set_asset_state(&mut self, id: i64, state: AssetState) -> Result<(), StoreError>;
    /// Attach a certificate to a pending asset (Apple's signed push certificate).
    fn set_asset_cert(
        &mut self,
        id: i64,
        cert_pem: &str,
        sha256: &str,
        not_after: Timestamp,
        topic: Option<&str>,
    ) -> Result<(), StoreError>;
    fn set_asset_token(
        &mut self,
        id: i64,
        token: &[u8],
        not_after: Option<Timestamp>,
    ) -> Result<(), StoreError>;
    /// The asset's private key (PEM), decrypted.
    fn asset_key(&mut self, id: i64) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError>;
    /// The asset's token (ABM server token JSON), decrypted.
    fn asset_token(&mut self, id: i64) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError>;
}

const COLUMNS: &str = "id, kind, state, source, cert_pem, csr_pem, key_sealed IS NOT NULL, token_sealed IS NOT NULL, topic, sha256, not_after, created_at, updated_at";

fn from_row(r: &Row) -> Result<Asset, StoreError> {
    Ok(Asset {
        id: r.int(0)?,
        kind: AssetKind::parse(&r.text(1)?)?,
        state: AssetState::parse(&r.text(2)?)?,
        source: r.text(3)?,
        cert_pem: r.opt_text(4)?,
        csr_pem: r.opt_text(5)?,
        has_key: r.bool(6)?,
        has_token: r.bool(7)?,
        topic: r.opt_text(8)?,
        sha256: r.opt_text(9)?,
        not_after: r.opt_ts(10)?,
        created_at: r.ts(11)?,
        updated_at: r.ts(12)?,
    })
}

impl Assets for SqlTx<'_> {
    fn insert_asset(&mut self, a: &NewAsset) -> Result<i64, StoreError> {
        let key = self.seal_opt(KEY_PURPOSE, a.key_pem.as_deref().map(|k| &k[..]))?;
        let token = self.seal_opt(TOKEN_PURPOSE, a.token.as_deref().map(|t| &t[..]))?;
        let now = Timestamp::now();
        let row = self.conn.query_one(
            "INSERT INTO assets (kind, state, source, cert_pem, csr_pem, key_sealed, token_sealed, topic, sha256, not_after, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            &[
                a.kind.as_str().into(),
                a.state.as_str().into(),
                a.source.as_str().into(),
                a.cert_pem.as_deref().into(),
                a.csr_pem.as_deref().into(),
                key.as_ref().into(),
                token.as_ref().into(),
                a.topic.as_deref().into(),
                a.sha256.as_deref().into(),
                a.not_after.into(),
                now.into(),
                now.into(),
            ],
        )?;
        row.int(0)
    }

    fn assets(&mut self, kind: AssetKind) -> Result<Vec<Asset>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM assets WHERE kind = ? ORDER BY id DESC");
        self.conn
            .query(&sql, &[kind.as_str().into()])?
            .iter()
            .map(from_row)
            .collect()
    }

    fn asset(&mut self, id: i64) -> Result<Option<Asset>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM assets WHERE id = ?");
        self.conn
            .query_opt(&sql, &[id.into()])?
            .as_ref()
            .map(from_row)
            .transpose()
    }

    fn active_asset(&mut self, kind: AssetKind) -> Result<Option<Asset>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM assets WHERE kind = ? AND state = 'active'");
        self.conn
            .query_opt(&sql, &[kind.as_str().into()])?
            .as_ref()
            .map(from_row)
            .transpose()
    }

    fn asset_by_fingerprint(
        &mut self,
        kind: AssetKind,
        sha256: &str,
    ) -> Result<Option<Asset>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM assets WHERE kind = ? AND sha256 = ?");
        self.conn
            .query_opt(&sql, &[kind.as_str().into(), sha256.into()])?
            .as_ref()
            .map(from_row)
            .transpose()
    }

    fn set_asset_state(&mut self, id: i64, state: AssetState) -> Result<(), StoreError> {
        let n = self.conn.execute(
            "UPDATE assets SET state = ?, updated_at = ? WHERE id = ?",
            &[state.as_str().into(), Timestamp::now().into(), id.into()],
        )?;
        expect_one(n, id)
    }

    fn set_asset_cert(
        &mut self,
        id: i64,
        cert_pem: &str,
        sha256: &str,
        not_after: Timestamp,
        topic: Option<&str>,
    ) -> Result<(), StoreError> {
        let n = self.conn.execute(
            "UPDATE assets SET cert_pem = ?, sha256 = ?, not_after = ?, topic = ?, updated_at = ? WHERE id = ?",
            &[
                cert_pem.into(),
                sha256.into(),
                not_after.into(),
                topic.into(),
                Timestamp::now().into(),
                id.into(),
            ],
        )?;
        expect_one(n, id)
    }

    fn set_asset_token(
        &mut self,
        id: i64,
        token: &[u8],
        not_after: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let sealed = self.seal(TOKEN_PURPOSE, token)?;
        let n = self.conn.execute(
            "UPDATE assets SET token_sealed = ?, not_after = COALESCE(?, not_after), updated_at = ? WHERE id = ?",
            &[(&sealed).into(), not_after.into(), Timestamp::now().into(), id.into()],
        )?;
        expect_one(n, id)
    }

    fn asset_key(&mut self, id: i64) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let sealed = self
            .conn
            .query_opt("SELECT key_sealed FROM assets WHERE id = ?", &[id.into()])?
            .map(|r| r.opt_blob(0))
            .transpose()?
            .flatten();
        self.open_opt(KEY_PURPOSE, sealed)
    }

    fn asset_token(&mut self, id: i64) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let sealed = self
            .conn
            .query_opt("SELECT token_sealed FROM assets WHERE id = ?", &[id.into()])?
            .map(|r| r.opt_blob(0))
            .transpose()?
            .flatten();
        self.open_opt(TOKEN_PURPOSE, sealed)
    }
}

fn expect_one(n: u64, id: i64) -> Result<(), StoreError> {
    if n == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!("asset {id} does not exist")))
    }
}
