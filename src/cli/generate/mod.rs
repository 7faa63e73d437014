//! `mdmctl generate …`: keys, CSRs and CAs, written to files and (when a store exists) kept
//! in the store, encrypted.

mod mdm_apple;
mod mdm_apple_bm;
mod mdm_vendor_csr;

use clap::Subcommand;

use super::Ctx;

#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// APNs push key and CSR (signed for Apple's portal when given an MDM vendor certificate) and a SCEP CA.
    MdmApple(mdm_apple::Args),
    /// The key pair to register with Apple Business Manager.
    MdmAppleBm(mdm_apple_bm::Args),
    /// Key and CSR for Apple's "MDM CSR" vendor certificate, to sign your own push requests.
    MdmVendorCsr(mdm_vendor_csr::Args),
    /// Shell completions on stdout.
    #[command(hide = true)]
    Completions { shell: clap_complete::Shell },
    /// The man page (roff) on stdout.
    #[command(hide = true)]
    Man,
}

pub fn run(ctx: &Ctx, cmd: GenerateCommand) -> anyhow::Result<()> {
    match cmd {
        GenerateCommand::MdmApple(args) => mdm_apple::run(ctx, args),
        GenerateCommand::MdmAppleBm(args) => mdm_apple_bm::run(ctx, args),
        GenerateCommand::MdmVendorCsr(args) => mdm_vendor_csr::run(ctx, args),
        GenerateCommand::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut super::command(),
                "mdmctl",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        GenerateCommand::Man => {
            clap_mangen::Man::new(super::command()).render(&mut std::io::stdout())?;
            Ok(())
        }
    }
}

/// A required value: the flag, else a prompt on a terminal, else an error naming the flag.
pub(super) fn required(
    ctx: &Ctx,
    value: Option<String>,
    flag: &str,
    prompt: &str,
    example: &str,
) -> anyhow::Result<String> {
    if let Some(v) = value {
        return Ok(v);
    }
    if let Some(v) = ctx.ask(prompt)? {
        return Ok(v);
    }
    Err(crate::error::UserError::new(format!("missing `{flag}`"))
        .with_hint(format!(
            "pass `{flag} {example}` (prompts only happen on a terminal)"
        ))
        .into())
}
