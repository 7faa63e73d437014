//! `mdmctl device rebind`: the admin's say-so for a known device to bind a new identity. `serve`
//! refuses an Authenticate that would move a known device to a certificate not issued for it
//! (that is how a device is taken over); when a Mac really re-enrolled some other way (wiped and
//! enrolled by hand with a secret not scoped to it, say), this lets its next Authenticate from a
//! certificate mdmctl's SCEP issued bind, once, within a time window. Recorded in the activity
//! log.

use clap::Subcommand;

use super::Ctx;
use super::output::{print_json, print_lines};
use crate::diagnose::UserError;
use crate::store::{NewActivity, StoreError};
use crate::timestamp::Timestamp;

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Let a known device bind a new identity at its next Authenticate (once, within
    /// `--within` hours): for a Mac that really re-enrolled.
    Rebind {
        /// The device: UDID or serial number.
        device: String,
        /// How long the permission lasts.
        #[arg(long, default_value_t = 24, value_name = "HOURS")]
        within: u32,
    },
}

pub fn run(ctx: &Ctx, cmd: DeviceCommand) -> anyhow::Result<()> {
    ctx.local_only("mdmctl device rebind")?;
    let DeviceCommand::Rebind { device, within } = cmd;
    if within == 0 || within > 24 * 30 {
        crate::bail_user!(
            format!("`--within {within}` is out of range"),
            hint: "give 1 to 720 hours"
        );
    }
    let store = ctx.open_store()?;
    let actor = ctx.actor();
    let expires = Timestamp(Timestamp::now().0 + i64::from(within) * 3600);
    let granted = store.write(|tx| -> Result<Option<String>, StoreError> {
        let Some(d) = tx.device(&device)? else {
            return Ok(None);
        };
        tx.grant_rebind(&d.id, &actor, expires)?;
        tx.record_activity(&NewActivity {
            actor: actor.clone(),
            kind: "device.rebind_allowed".into(),
            device_id: Some(d.id.clone()),
            summary: format!(
                "allowed {} to bind a new identity at its next Authenticate (until {expires})",
                d.id
            ),
            details: serde_json::json!({ "expires_at": expires, "old_sha256": d.identity_sha256 }),
        })?;
        Ok(Some(d.id))
    })?;
    let Some(id) = granted else {
        return Err(UserError::new(format!("no device `{device}`"))
            .with_hint("name it by UDID or serial number (`mdmctl get devices`)")
            .into());
    };
    if ctx.json() {
        return print_json(&serde_json::json!({ "device": id, "expires_at": expires }));
    }
    print_lines(&[format!(
        "{id} may bind a new identity (one from mdmctl's SCEP) at its next Authenticate, until {expires}."
    )])
}
