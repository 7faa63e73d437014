//! `mdmctl transfer`: move devices into a team (or out of any), on a local store or through
//! `--server`. `serve` then installs the new team's profiles and removes the old team's.

use clap::Args;

use super::Ctx;
use super::output::{print_json, print_lines};
use crate::diagnose::UserError;
use crate::mdm::Transferred;
use crate::mdm::api::TransferRequest;

#[derive(Debug, Args)]
pub struct TransferArgs {
    /// The team to move the devices into (it must exist: teams come from `mdmctl apply`).
    #[arg(long, value_name = "NAME", required_unless_present = "no_team")]
    pub team: Option<String>,
    /// Move the devices out of any team (the global settings apply to them).
    #[arg(long, conflicts_with = "team")]
    pub no_team: bool,
    /// Device UDID (repeat, or separate with commas).
    #[arg(long = "udid", value_delimiter = ',', value_name = "UDID")]
    pub udids: Vec<String>,
    /// Device serial number (repeat, or separate with commas).
    #[arg(long = "serial", value_delimiter = ',', value_name = "SERIAL")]
    pub serials: Vec<String>,
}

const NO_TEAM_HINT: &str =
    "teams come from `mdmctl apply`: add a `kind: team` document, apply it, then transfer";

pub fn run(ctx: &Ctx, args: TransferArgs) -> anyhow::Result<()> {
    let targets: Vec<String> = args
        .udids
        .iter()
        .chain(&args.serials)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if targets.is_empty() {
        crate::bail_user!("no devices named", hint: "pass `--udid UDID` or `--serial SERIAL` (repeatable)");
    }
    let team = if args.no_team { None } else { args.team };
    let done: Transferred = match ctx.remote()? {
        Some(api) => api.transfer(&TransferRequest {
            team: team.clone(),
            devices: targets,
        })?,
        None => {
            let store = ctx.open_store()?;
            let actor = ctx.actor();
            match store.write(|tx| crate::mdm::transfer(tx, team.as_deref(), &targets, &actor))? {
                Ok(t) => t,
                Err(name) => {
                    return Err(UserError::new(format!("no team `{name}`"))
                        .with_hint(NO_TEAM_HINT)
                        .into());
                }
            }
        }
    };
    if ctx.json() {
        print_json(&done)?;
    } else {
        let to = done.team.as_deref().unwrap_or("no team");
        let mut lines = vec![format!("Moved {} device(s) to {to}.", done.moved.len())];
        if !done.unchanged.is_empty() {
            lines.push(format!("Already there: {}", done.unchanged.join(", ")));
        }
        if !done.moved.is_empty() {
            lines.push(
                "A running `serve` installs their new profiles and removes the old ones; follow with `mdmctl get profiles --udid X`.".into(),
            );
        }
        print_lines(&lines)?;
    }
    if !done.unknown.is_empty() {
        let msg = format!("no such devices: {}", done.unknown.join(", "));
        if done.moved.is_empty() && done.unchanged.is_empty() {
            crate::bail_user!(msg, hint: "check the UDIDs and serial numbers with `mdmctl get devices`");
        }
        ctx.warn(&msg);
    }
    Ok(())
}
