//! `mdmctl generate mdm-apple-bm`: the key pair Apple Business Manager encrypts its server
//! token to.

use std::path::PathBuf;

use serde::Serialize;

use crate::assets::generate;
use crate::cli::Ctx;
use crate::cli::files::{OutputFile, check_targets, write_all};
use crate::cli::output::{print_json, print_lines};
use crate::pki;

pub const BM_KEY: &str = "mdm-apple-bm.key";
pub const BM_CERT: &str = "mdm-apple-bm.crt";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write the files to.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Serialize)]
struct Report {
    key: String,
    certificate: String,
    store_asset: Option<i64>,
    next_steps: Vec<String>,
}

pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<()> {
    check_targets(&args.out, &[BM_KEY, BM_CERT], args.force)?;
    let store = ctx.open_store_if_any()?;
    let g = generate::generate_mdm_apple_bm()?;
    let store_asset = match &store {
        Some(s) => {
            s.unlock()?;
            let actor = ctx.actor();
            Some(s.write(|tx| generate::save_mdm_apple_bm(tx, &g, &actor))?)
        }
        None => None,
    };
    let files = [
        OutputFile::private(
            BM_KEY,
            pki::private_key_pem(&g.key)?,
            "Apple Business Manager key (private)",
        ),
        OutputFile::public(
            BM_CERT,
            pki::cert_pem(&g.cert)?.into_bytes(),
            "certificate to upload to Apple Business Manager",
        ),
    ];
    let written = write_all(&args.out, &files, args.force)?;
    let report = Report {
        key: written[0].display().to_string(),
        certificate: written[1].display().to_string(),
        store_asset,
        next_steps: vec![
            format!(
                "In Apple Business Manager (https://business.apple.com) › Preferences › Your MDM Servers, add a server and upload `{}`.",
                written[1].display()
            ),
            "Download the server token (a .p7m file) for that server.".into(),
            "Run `mdmctl set mdm-apple-bm --token FILE.p7m`.".into(),
        ],
    };
    if ctx.json() {
        return print_json(&report);
    }
    let mut lines = vec![
        "Success! Generated:".to_string(),
        format!("  {}  (private; mode 0600)", report.key),
        format!("  {}", report.certificate),
    ];
    if store.is_some() {
        lines.push(format!(
            "The key is also kept, encrypted, in the store `{}`.",
            ctx.location
        ));
    }
    lines.push(String::new());
    lines.push("Next:".into());
    for (i, s) in report.next_steps.iter().enumerate() {
        lines.push(format!("  {}. {s}", i + 1));
    }
    print_lines(&lines)
}
