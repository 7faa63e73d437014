//! `mdmctl abm sync`: Apple Business Manager's devices into the store (`crate::abm::sync`).

use clap::{Args, Subcommand};

use super::Ctx;
use super::output::{key_values, print_json, print_lines};
use crate::error::UserError;

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

#[derive(serde::Serialize)]
struct SyncOutput {
    sync: crate::abm::sync::SyncSummary,
    assign: Option<crate::abm::assign::AssignSummary>,
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
    if let Some(url) = &a.url {
        let url = url.trim_end_matches('/');
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            crate::bail_user!(format!("`{url}` is not an http(s) URL"), hint: "pass the URL devices enroll to, e.g. `--url https://mdm.example.com`");
        }
        store.write(|tx| tx.meta_set(crate::abm::assign::SERVER_URL_KEY, url))?;
    }
    let summary = runtime.block_on(crate::abm::sync::sync(&client, &store, a.reset_cursor))?;
    // The sync is kept (and shown) even when the assignment then fails.
    let (assigned, failure) = if a.no_assign {
        (None, None)
    } else {
        match runtime.block_on(crate::abm::assign::assign(&client, &store, None)) {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e)),
        }
    };
    if ctx.json() {
        print_json(&SyncOutput {
            sync: summary,
            assign: assigned,
        })?;
        return failure.map_or(Ok(()), |e| Err(e.into()));
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
    if let Some(a) = assigned {
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
    failure.map_or(Ok(()), |e| Err(e.into()))
}
