//! `mdmctl generate mdm-vendor-csr`: key and CSR for Apple's "MDM CSR" vendor certificate.

use std::path::PathBuf;

use serde::Serialize;

use super::required;
use crate::assets::generate;
use crate::cli::Ctx;
use crate::cli::files::{OutputFile, write_all};
use crate::cli::output::{print_json, print_lines};
use crate::pki;

pub const VENDOR_KEY: &str = "mdm-vendor.key";
pub const VENDOR_CSR: &str = "mdm-vendor.csr";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Contact email for the request.
    #[arg(long)]
    pub email: Option<String>,
    /// Your organization's name.
    #[arg(long)]
    pub org: Option<String>,
    /// Country code for the subject.
    #[arg(long, default_value = "US")]
    pub country: String,
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
    csr: String,
    next_steps: Vec<String>,
}

pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<()> {
    let email = required(
        ctx,
        args.email.clone(),
        "--email",
        "Contact email",
        "it@example.com",
    )?;
    crate::assets::validate_email(&email)?;
    let org = required(
        ctx,
        args.org.clone(),
        "--org",
        "Organization",
        "\"Example Inc\"",
    )?;
    let (key, csr) = generate::generate_vendor_csr(&email, &org, &args.country)?;
    let files = [
        OutputFile::private(
            VENDOR_KEY,
            pki::private_key_pem(&key)?,
            "vendor key (private)",
        ),
        OutputFile::public(
            VENDOR_CSR,
            csr.to_pem().map_err(pki::PkiError::from)?,
            "vendor CSR",
        ),
    ];
    let written = write_all(&args.out, &files, args.force)?;
    let report = Report {
        key: written[0].display().to_string(),
        csr: written[1].display().to_string(),
        next_steps: vec![
            format!(
                "At https://developer.apple.com/account/resources/certificates/add choose \"MDM CSR\" (needs the Apple Developer Enterprise Program) and upload `{}`.",
                written[1].display()
            ),
            "Download the certificate (mdm.cer).".into(),
            format!(
                "Run `mdmctl generate mdm-apple --vendor-cert mdm.cer --vendor-key {} --email … --org …`.",
                written[0].display()
            ),
        ],
    };
    if ctx.json() {
        return print_json(&report);
    }
    let mut lines = vec![
        "Success! Generated:".to_string(),
        format!("  {}  (private; mode 0600)", report.key),
        format!("  {}", report.csr),
        String::new(),
        "Next:".into(),
    ];
    for (i, s) in report.next_steps.iter().enumerate() {
        lines.push(format!("  {}. {s}", i + 1));
    }
    print_lines(&lines)
}
