//! Applying a plan: the same [`plan`](super::plan()) the dry run prints, computed again inside
//! one write transaction and written there, so what is shown is what is written, all or nothing.

use zeroize::Zeroizing;

use super::plan::{Current, Plan, plan};
use super::validate::Config;
use super::{GitopsError, sha256_hex};
use crate::store::{AssetKind, AssetState, NewActivity, NewAsset, Store, StoreError, Tx};
use crate::timestamp::Timestamp;

/// What mdmctl's own profiles are built from, beyond the config.
#[derive(Clone, Default)]
pub struct OwnInputs {
    /// The FileVault escrow certificate (DER), when disk encryption is on somewhere.
    pub escrow_cert_der: Option<Vec<u8>>,
    /// A key pair made for a store that has none yet; stored (key sealed) by the apply.
    pub new_escrow: Option<NewEscrow>,
}

#[derive(Clone)]
pub struct NewEscrow {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key_pem: Zeroizing<Vec<u8>>,
    pub not_after: Timestamp,
}

/// Whether any scope in the files turns disk encryption on.
pub fn needs_escrow(config: &Config) -> bool {
    config
        .global
        .iter()
        .chain(&config.teams)
        .any(|s| s.settings.enable_disk_encryption)
}

/// The active escrow certificate (DER), if the store has one.
pub fn stored_escrow(tx: &mut dyn Tx) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(asset) = tx.active_asset(AssetKind::Escrow)? else {
        return Ok(None);
    };
    let Some(pem) = asset.cert_pem else {
        return Ok(None);
    };
    let cert = openssl::x509::X509::from_pem(pem.as_bytes())
        .and_then(|c| c.to_der())
        .map_err(|e| StoreError::Decode(format!("escrow certificate: {e}")))?;
    Ok(Some(cert))
}

/// Get mdmctl's own-profile inputs ready: the stored escrow certificate, or (when disk
/// encryption is wanted and the store has none) a new escrow key pair, made here, outside any
/// transaction, and stored by [`apply`].
pub fn prepare_escrow(store: &dyn Store, config: &Config) -> Result<OwnInputs, GitopsError> {
    if !needs_escrow(config) {
        return Ok(OwnInputs::default());
    }
    if let Some(der) = store.read(stored_escrow)? {
        return Ok(OwnInputs {
            escrow_cert_der: Some(der),
            new_escrow: None,
        });
    }
    let build = || -> Result<NewEscrow, crate::pki::PkiError> {
        let key = crate::pki::generate_rsa(2048)?;
        let cert = crate::pki::self_signed("mdmctl FileVault escrow", &key, 3650)?;
        Ok(NewEscrow {
            cert_pem: crate::pki::cert_pem(&cert)?,
            cert_der: cert.to_der()?,
            key_pem: crate::pki::private_key_pem(&key)?,
            not_after: crate::pki::CertInfo::of(&cert)?.not_after,
        })
    };
    let escrow = build().map_err(|e| GitopsError::Build(format!("FileVault escrow key: {e}")))?;
    Ok(OwnInputs {
        escrow_cert_der: Some(escrow.cert_der.clone()),
        new_escrow: Some(escrow),
    })
}

/// The plan against the store, without writing (`--dry-run`).
pub fn dry_run(store: &dyn Store, config: &Config, own: &OwnInputs) -> Result<Plan, GitopsError> {
    store.read(|tx| {
        let current = Current::read(tx)?;
        plan(config, own, &current)
    })
}

/// Plan and write in one transaction; returns the plan that was applied. `actor` goes to the
/// activity log.
pub fn apply(
    store: &dyn Store,
    config: &Config,
    own: &OwnInputs,
    actor: &str,
) -> Result<Plan, GitopsError> {
    store.write(|tx| apply_in(tx, config, own, actor))
}

/// [`apply`] inside the caller's transaction (for the server's remote apply).
pub fn apply_in(
    tx: &mut dyn Tx,
    config: &Config,
    own: &OwnInputs,
    actor: &str,
) -> Result<Plan, GitopsError> {
    let mut own = own.clone();
    if needs_escrow(config) {
        match stored_escrow(tx)? {
            // Another apply stored one first: build with that one.
            Some(der) => own.escrow_cert_der = Some(der),
            None => {
                let e = own.new_escrow.as_ref().ok_or_else(|| {
                    GitopsError::Build("no FileVault escrow key was prepared".into())
                })?;
                let mut asset = NewAsset::new(AssetKind::Escrow, AssetState::Active, "generated");
                asset.cert_pem = Some(e.cert_pem.clone());
                asset.key_pem = Some(e.key_pem.clone());
                asset.sha256 = Some(sha256_hex(&e.cert_der));
                asset.not_after = Some(e.not_after);
                tx.insert_asset(&asset)?;
                own.escrow_cert_der = Some(e.cert_der.clone());
            }
        }
    }
    let current = Current::read(tx)?;
    let plan = plan(config, &own, &current)?;
    if let Some(g) = &plan.global {
        tx.set_global_settings(g)?;
    }
    for (name, settings) in &plan.teams {
        tx.put_team(name, settings)?;
    }
    for (team, id) in &plan.delete {
        tx.delete_desired_profile(team.as_deref(), id)?;
    }
    for p in &plan.put {
        tx.put_desired_profile(p)?;
    }
    // The devices of every scope whose profiles changed get reconciled by `serve`.
    let mut scopes: Vec<Option<&str>> = plan
        .delete
        .iter()
        .map(|(team, _)| team.as_deref())
        .chain(plan.put.iter().map(|p| p.team.as_deref()))
        .collect();
    scopes.sort();
    scopes.dedup();
    for scope in scopes {
        tx.mark_scope_dirty(scope)?;
    }
    if !plan.is_empty() {
        tx.record_activity(&NewActivity {
            actor: actor.to_string(),
            kind: "gitops.apply".into(),
            device_id: None,
            summary: plan.summary(),
            details: serde_json::to_value(&plan).unwrap_or_default(),
        })?;
    }
    Ok(plan)
}

/// What one `apply` did: the plan, and whether it was written.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Applied {
    pub dry_run: bool,
    pub applied: bool,
    #[serde(flatten)]
    pub plan: Plan,
}

/// The whole `apply` after loading, for the CLI on a local store and for the server's API: the
/// checks against the store join the file problems (all reported at once), then the plan, then
/// (unless `dry_run`) the write in one transaction.
pub fn run(
    store: &dyn Store,
    loaded: super::Loaded,
    dry_run: bool,
    actor: &str,
) -> Result<Applied, GitopsError> {
    let super::Loaded {
        config, mut issues, ..
    } = loaded;
    let teams = store.read(|tx| tx.teams())?;
    issues.extend(super::check_against_store(
        &config,
        teams.iter().map(|t| t.name.as_str()),
    ));
    if !issues.is_empty() {
        return Err(GitopsError::Invalid(issues));
    }
    let own = prepare_escrow(store, &config)?;
    let plan = if dry_run {
        self::dry_run(store, &config, &own)?
    } else {
        apply(store, &config, &own, actor)?
    };
    Ok(Applied {
        dry_run,
        applied: !dry_run && !plan.is_empty(),
        plan,
    })
}
