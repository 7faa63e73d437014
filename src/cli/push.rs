//! `mdmctl push`: wake devices now, so they check in and fetch what is queued.

use clap::Args;

use super::Ctx;
use super::output::{print_json, print_lines};

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Device UDID (repeat, or separate with commas).
    #[arg(long = "udid", value_delimiter = ',', value_name = "UDID")]
    pub udids: Vec<String>,
    /// Device serial number.
    #[arg(long = "serial", value_delimiter = ',', value_name = "SERIAL")]
    pub serials: Vec<String>,
}

pub fn run(ctx: &Ctx, args: PushArgs) -> anyhow::Result<()> {
    let targets: Vec<String> = args.udids.iter().chain(&args.serials).cloned().collect();
    if targets.is_empty() {
        crate::bail_user!("no devices named", hint: "pass `--udid UDID` or `--serial SERIAL`");
    }
    let summary = match ctx.remote()? {
        Some(api) => api.push(&targets)?,
        None => {
            let store = ctx.open_store()?;
            store.unlock()?;
            let (ids, unknown) = store.read(|tx| crate::mdm::resolve_devices(tx, &targets))?;
            if ids.is_empty() {
                crate::bail_user!(format!("no such devices: {}", unknown.join(", ")), hint: "check with `mdmctl get devices`");
            }
            let pushes = ctx.local_pushes(store.clone())?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(pushes.push(&ids))?
        }
    };
    if ctx.json() {
        return print_json(&summary);
    }
    let mut lines = vec![format!(
        "Pushed {} of {} device channel(s).",
        summary.delivered, summary.requested
    )];
    for (what, ids) in [
        ("no push token", &summary.not_pushable),
        ("unregistered (disabled)", &summary.unregistered),
        ("bad token", &summary.bad_token),
    ] {
        if !ids.is_empty() {
            lines.push(format!("  {what}: {}", ids.join(", ")));
        }
    }
    for (id, why) in &summary.failed {
        lines.push(format!("  failed {id}: {why}"));
    }
    print_lines(&lines)
}
