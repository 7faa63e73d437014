//! `mdmctl set mdm-apple` and `mdmctl set mdm-apple-bm`: install Apple's push certificate,
//! a SCEP CA, or the Apple Business Manager server token into the store.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;

use super::Ctx;
use super::files::{SCEP_KEY_PASSWORD_HINT, ScepKeyPassword, load_key, read_input};
use super::output::{key_values, print_json, print_lines};
use crate::assets::abm::{self, set_abm_token};
use crate::assets::apns::{SetMdmApple, set_mdm_apple};
use crate::pki;
use crate::timestamp::Timestamp;

#[derive(Debug, Subcommand)]
pub enum SetCommand {
    /// Install the APNs push certificate (and its key) and/or a SCEP CA.
    MdmApple(MdmAppleArgs),
    /// Install the Apple Business Manager server token.
    MdmAppleBm(MdmAppleBmArgs),
}

#[derive(Debug, clap::Args)]
pub struct MdmAppleArgs {
    /// The push certificate Apple issued (PEM or DER).
    #[arg(long, value_name = "FILE")]
    pub apns_cert: Option<PathBuf>,
    /// Its private key; not needed when the CSR was generated into this store.
    #[arg(long, value_name = "FILE")]
    pub apns_key: Option<PathBuf>,
    /// Password of the push key (or of a .p12 given as `--apns-key`).
    #[arg(long, env = "MDMCTL_APNS_KEY_PASSWORD", hide_env_values = true)]
    pub apns_key_password: Option<String>,
    /// A SCEP CA certificate (PEM or DER): the old MDM's, to keep its device identities valid.
    #[arg(long, value_name = "FILE", requires = "scep_key")]
    pub scep_cert: Option<PathBuf>,
    /// The SCEP CA's private key.
    #[arg(long, value_name = "FILE", requires = "scep_cert")]
    pub scep_key: Option<PathBuf>,
    #[command(flatten)]
    pub scep_key_password: ScepKeyPassword,
    /// Accept a push certificate whose topic differs from the stored one or the devices'.
    /// Every device enrolled with the old topic becomes unreachable. Recorded in the activity log.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
pub struct MdmAppleBmArgs {
    /// The server token downloaded from Apple Business Manager (`.p7m`).
    #[arg(long, value_name = "FILE.p7m")]
    pub token: PathBuf,
}

pub fn run(ctx: &Ctx, cmd: SetCommand) -> anyhow::Result<()> {
    match cmd {
        SetCommand::MdmApple(args) => mdm_apple(ctx, args),
        SetCommand::MdmAppleBm(args) => mdm_apple_bm(ctx, args),
    }
}

fn cert_from(path: &Path, flag: &str) -> anyhow::Result<openssl::x509::X509> {
    let bytes = read_input(path, flag)?;
    pki::parse_cert(&bytes).with_context(|| format!("reading `{}`", path.display()))
}

fn mdm_apple(ctx: &Ctx, args: MdmAppleArgs) -> anyhow::Result<()> {
    if args.apns_cert.is_none() && args.scep_cert.is_none() {
        crate::bail_user!(
            "nothing to set",
            hint: "pass `--apns-cert FILE` (Apple's push certificate) and/or `--scep-cert FILE --scep-key FILE`"
        );
    }
    if args.apns_key.is_some() && args.apns_cert.is_none() {
        crate::bail_user!("`--apns-key` needs `--apns-cert`", hint: "pass the push certificate with `--apns-cert FILE`");
    }
    // Read and parse every file before touching the store.
    let apns_cert = args
        .apns_cert
        .as_deref()
        .map(|p| cert_from(p, "--apns-cert"))
        .transpose()?;
    let apns_key = args
        .apns_key
        .as_deref()
        .map(|p| {
            load_key(
                p,
                "--apns-key",
                args.apns_key_password.as_deref(),
                "give the key's password with `--apns-key-password` or `MDMCTL_APNS_KEY_PASSWORD`",
            )
        })
        .transpose()?;
    let scep = match (&args.scep_cert, &args.scep_key) {
        (Some(c), Some(k)) => Some((
            cert_from(c, "--scep-cert")?,
            load_key(
                k,
                "--scep-key",
                args.scep_key_password.get()?.as_deref().map(String::as_str),
                SCEP_KEY_PASSWORD_HINT,
            )?,
        )),
        _ => None,
    };
    let store = ctx.open_store()?;
    store.unlock()?;
    let input = SetMdmApple {
        apns_cert,
        apns_key,
        scep,
        force: args.force,
        actor: ctx.actor(),
    };
    let outcome = store.write(|tx| set_mdm_apple(tx, &input))?;
    for w in &outcome.warnings {
        ctx.warn(w);
    }
    if ctx.json() {
        return print_json(&outcome);
    }
    let mut lines = Vec::new();
    if let Some(c) = &outcome.apns {
        let verb = if outcome.apns_unchanged {
            "Already set"
        } else {
            "Set"
        };
        lines.push(format!("{verb}: the APNs push certificate."));
        lines.extend(key_values(
            2,
            &[
                ("topic", c.topic.clone().unwrap_or_default()),
                ("serial", c.serial.clone()),
                (
                    "renew by",
                    format!(
                        "{} ({} days left)",
                        c.not_after.date(),
                        Timestamp::now().days_until(c.not_after)
                    ),
                ),
            ],
        ));
    }
    if let Some(c) = &outcome.scep_ca {
        lines.push("Set: the issuing SCEP CA (earlier CAs stay trusted).".into());
        lines.extend(key_values(
            2,
            &[
                ("subject", c.subject.clone()),
                ("sha256", c.sha256.clone()),
                ("not after", c.not_after.date()),
            ],
        ));
    }
    print_lines(&lines)
}

fn mdm_apple_bm(ctx: &Ctx, args: MdmAppleBmArgs) -> anyhow::Result<()> {
    let p7m = read_input(&args.token, "--token")?;
    let store = ctx.open_store()?;
    store.unlock()?;
    let actor = ctx.actor();
    let status = store
        .write(|tx| set_abm_token(tx, &p7m, &actor))
        .with_context(|| format!("reading `{}`", args.token.display()))?;
    if let Some(w) = abm::expiry_warning(&status) {
        ctx.warn(&w);
    }
    if ctx.json() {
        return print_json(&status);
    }
    let mut lines = vec!["Set: the Apple Business Manager server token.".to_string()];
    lines.extend(key_values(
        2,
        &[
            (
                "consumer key",
                status.consumer_key.clone().unwrap_or_default(),
            ),
            (
                "expires",
                status
                    .access_token_expiry
                    .map(|e| format!("{} ({} days left)", e.date(), status.days_left.unwrap_or(0)))
                    .unwrap_or_default(),
            ),
        ],
    ));
    print_lines(&lines)
}
