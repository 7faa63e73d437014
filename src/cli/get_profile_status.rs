//! `mdmctl get profiles --udid X` and `mdmctl get profile-status`: where profile delivery
//! stands, per device and summed up.

use crate::cli::Ctx;
use crate::cli::output::{key_values, print_json, print_lines, table};
use crate::diagnose::UserError;
use crate::store::{DeviceProfile, ProfileState, StoreError};

/// The text of a profile's status column: failures name Apple's first error.
pub(super) fn describe(p: &DeviceProfile) -> String {
    match p.status {
        ProfileState::Failed => {
            let first = p
                .error_chain
                .as_ref()
                .and_then(|c| c.as_array())
                .and_then(|a| a.first())
                .and_then(|e| e.get("LocalizedDescription"))
                .and_then(|d| d.as_str())
                .unwrap_or("no error reported");
            format!("failed after {} attempts: {first}", p.attempts)
        }
        ProfileState::Pending if p.attempts > 0 => {
            format!("pending (retry {} of the failed install)", p.attempts)
        }
        s => s.as_str().to_string(),
    }
}

pub fn device_profiles(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let found = match ctx.remote()? {
        Some(api) => Some(api.device_profiles(id)?),
        None => {
            let store = ctx.open_store()?;
            store.read(|tx| -> Result<_, StoreError> {
                let Some(d) = tx.device(id)? else {
                    return Ok(None);
                };
                Ok(Some(tx.device_profiles(&d.id)?))
            })?
        }
    };
    let Some(profiles) = found else {
        return Err(UserError::new(format!("no device `{id}`"))
            .with_hint("list them with `mdmctl get devices`")
            .into());
    };
    if ctx.json() {
        return print_json(&profiles);
    }
    if profiles.is_empty() {
        eprintln!("no profiles recorded for `{id}` yet");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = profiles
        .iter()
        .map(|p| {
            vec![
                p.identifier.clone(),
                p.name.clone().unwrap_or_else(|| "-".into()),
                if p.ours { "mdmctl" } else { "unmanaged" }.to_string(),
                describe(p),
                p.updated_at.to_string(),
            ]
        })
        .collect();
    print_lines(&table(
        &["IDENTIFIER", "NAME", "INSTALLED BY", "STATUS", "UPDATED"],
        &rows,
    ))
}

pub fn summary(ctx: &Ctx, team: Option<String>) -> anyhow::Result<()> {
    let found = match ctx.remote()? {
        Some(api) => Some(api.profile_status(team.as_deref())?),
        None => {
            let store = ctx.open_store()?;
            store.read(|tx| crate::mdm::compliance(tx, team.as_deref()))?
        }
    };
    let Some(c) = found else {
        let t = team.unwrap_or_default();
        return Err(UserError::new(format!("no team `{t}`"))
            .with_hint("list teams with `mdmctl get teams`")
            .into());
    };
    if ctx.json() {
        return print_json(&c);
    }
    let p = &c.profiles;
    let mut lines = key_values(
        0,
        &[
            ("Scope", team.unwrap_or_else(|| "all devices".into())),
            ("Verified", p.verified.to_string()),
            ("Verifying", p.verifying.to_string()),
            ("Pending", p.pending.to_string()),
            ("Failed", p.failed.to_string()),
            ("Removing", p.removing.to_string()),
            ("Unmanaged", p.unmanaged.to_string()),
        ],
    );
    if !c.disk_encryption.is_empty() {
        let parts: Vec<String> = c
            .disk_encryption
            .iter()
            .map(|(state, n)| format!("{n} {}", state.replace('_', " ")))
            .collect();
        lines.push(format!("FileVault: {}", parts.join(", ")));
    }
    print_lines(&lines)
}
