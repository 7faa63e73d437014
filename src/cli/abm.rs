//! `mdmctl abm sync`: Apple Business Manager's devices into the store (`crate::abm::sync`) and
//! their enrollment profiles assigned (`crate::abm::assign`), locally or through `--server`.

use clap::{Args, Subcommand};

use super::Ctx;
use super::output::{key_values, print_json, print_lines};
use crate::diagnose::UserError;

#[derive(Debug, Subcommand)]
pub enum AbmCommand {
    /// Fetch Apple Business Manager's devices into the store: every one the first time (or
    /// when the cursor is older than 7 days or no longer valid), then the changes since the
    /// last sync; then assign each team's enrollment profile (`mdm.macos_setup`) to its new
    /// devices and retry failed ones whose wait is over. `MDMCTL_ABM_URL` points at another
    /// service (a stand-in).
    Sync(SyncArgs),
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Forget the sync cursor first: fetch every device again.
    #[arg(long)]
    pub reset_cursor: bool,
    /// Only sync the devices; assign no profile.
    #[arg(long)]
    pub no_assign: bool,
    /// The server's public URL (what `serve --url` records), for the enrollment profile's
    /// `url` when no server has recorded one; it is recorded too.
    #[arg(long, value_name = "URL", env = "MDMCTL_URL")]
    pub url: Option<String>,
}

pub fn run(ctx: &Ctx, cmd: AbmCommand) -> anyhow::Result<()> {
    match cmd {
        AbmCommand::Sync(a) => sync(ctx, a),
    }
}

fn sync(ctx: &Ctx, a: SyncArgs) -> anyhow::Result<()> {
    // Through `--server`: the server syncs with its own ABM service and URL.
    let (pass, failure): (crate::abm::Pass, Option<anyhow::Error>) = match ctx.remote()? {
        Some(api) => {
            if a.url.is_some() {
                crate::bail_user!("--url records the URL in a local store", hint: "through `--server`, the server's own `serve --url` is used: drop `--url`");
            }
            let pass = api.abm_sync(&crate::mdm::api::AbmSyncRequest {
                reset_cursor: a.reset_cursor,
                no_assign: a.no_assign,
            })?;
            let failure = pass.assign_error.clone().map(|e| {
                anyhow::Error::from(
                    UserError::new(format!("the server could not assign profiles: {e}")).with_hint(
                        "`mdmctl get activities --type abm.` on the server shows what happened",
                    ),
                )
            });
            (pass, failure)
        }
        None => {
            let store = ctx.open_store()?;
            let base = std::env::var("MDMCTL_ABM_URL")
                .unwrap_or_else(|_| crate::abm::client::DEFAULT_URL.to_string());
            let Some(client) = crate::abm::client_for(store.as_ref(), &base)? else {
                return Err(
                    UserError::new("no Apple Business Manager server token in the store")
                        .with_hint("install one with `mdmctl set mdm-apple-bm --token FILE.p7m`")
                        .into(),
                );
            };
            if let Some(url) = &a.url {
                let url = url.trim_end_matches('/');
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    crate::bail_user!(format!("`{url}` is not an http(s) URL"), hint: "pass the URL devices enroll to, e.g. `--url https://mdm.example.com`");
                }
                store.write(|tx| tx.meta_set(crate::abm::assign::SERVER_URL_KEY, url))?;
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            // The sync is kept (and shown) even when the assignment then fails.
            let (pass, failure) = runtime.block_on(crate::abm::sync_now(
                &client,
                &store,
                a.reset_cursor,
                !a.no_assign,
                None,
            ))?;
            (pass, failure.map(anyhow::Error::from))
        }
    };
    if ctx.json() {
        print_json(&pass)?;
        return failure.map_or(Ok(()), Err);
    }
    let summary = &pass.sync;
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
    if let Some(a) = &pass.assign {
        lines.push("assigned enrollment profiles".into());
        for (team, uuid) in &a.defined {
            lines.push(format!(
                "  defined the profile of {} ({uuid})",
                team.as_deref()
                    .map_or_else(|| "devices in no team".to_string(), |t| format!("team {t}"))
            ));
        }
        lines.extend(key_values(
            2,
            &[
                ("assigned", a.assigned.to_string()),
                ("failed", a.failed.to_string()),
                ("throttled", a.throttled.to_string()),
                ("not accessible", a.not_accessible.to_string()),
            ],
        ));
        if a.failed + a.throttled + a.not_accessible > 0 {
            lines.push("  (not assigned ones are retried: `mdmctl get abm-devices` shows each one's state)".into());
        }
    }
    print_lines(&lines)?;
    failure.map_or(Ok(()), Err)
}
