//! `mdmctl abm sync`: Apple Business Manager's devices into the store (`crate::abm::sync`).

use clap::{Args, Subcommand};

use super::Ctx;
use super::output::{key_values, print_json, print_lines};
use crate::error::UserError;

#[derive(Debug, Subcommand)]
pub enum AbmCommand {
    /// Fetch Apple Business Manager's devices into the store: every one the first time (or
    /// when the cursor is older than 7 days or no longer valid), then the changes since the
    /// last sync. `MDMCTL_ABM_URL` points at another service (a stand-in).
    Sync(SyncArgs),
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Forget the sync cursor first: fetch every device again.
    #[arg(long)]
    pub reset_cursor: bool,
}

pub fn run(ctx: &Ctx, cmd: AbmCommand) -> anyhow::Result<()> {
    match cmd {
        AbmCommand::Sync(a) => sync(ctx, a),
    }
}

fn sync(ctx: &Ctx, a: SyncArgs) -> anyhow::Result<()> {
    ctx.local_only("abm sync")?;
    let store = ctx.open_store()?;
    let Some(token) = store.read(crate::assets::abm::server_token)? else {
        return Err(
            UserError::new("no Apple Business Manager server token in the store")
                .with_hint("install one with `mdmctl set mdm-apple-bm --token FILE.p7m`")
                .into(),
        );
    };
    let url = std::env::var("MDMCTL_ABM_URL")
        .unwrap_or_else(|_| crate::abm::client::DEFAULT_URL.to_string());
    let client = crate::abm::DepClient::new(&url, &token, crate::abm::Retry::default())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let summary = runtime.block_on(crate::abm::sync::sync(&client, &store, a.reset_cursor))?;
    if ctx.json() {
        return print_json(&summary);
    }
    let mut lines = vec![format!(
        "synced Apple Business Manager{}",
        if summary.full_fetch {
            " (every device)"
        } else {
            " (changes since the last sync)"
        }
    )];
    lines.extend(key_values(
        2,
        &[
            ("records", summary.records.to_string()),
            ("pages", summary.pages.to_string()),
            ("added", summary.added.to_string()),
            ("modified", summary.modified.to_string()),
            ("deleted", summary.deleted.to_string()),
        ],
    ));
    print_lines(&lines)
}
