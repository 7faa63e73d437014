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
    /// Shell completions on stdout (`mdmctl generate completions zsh > _mdmctl`).
    Completions { shell: clap_complete::Shell },
    /// The man page (roff) on stdout; with `--dir D`, one page per command and subcommand
    /// (`mdmctl.1`, `mdmctl-get-devices.1`, …) written into D.
    Man {
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
}

pub fn run(ctx: &Ctx, cmd: GenerateCommand) -> anyhow::Result<()> {
    match cmd {
        GenerateCommand::MdmApple(args) => mdm_apple::run(ctx, args),
        GenerateCommand::MdmAppleBm(args) => mdm_apple_bm::run(ctx, args),
        GenerateCommand::MdmVendorCsr(args) => mdm_vendor_csr::run(ctx, args),
        GenerateCommand::Completions { shell } => {
            // Written in one piece, so a reader that stops early (`| head`) is a closed pipe
            // (exit 0), not a panic inside the generator.
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut super::command(), "mdmctl", &mut buf);
            std::io::Write::write_all(&mut std::io::stdout().lock(), &buf)?;
            Ok(())
        }
        GenerateCommand::Man { dir: None } => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(super::command()).render(&mut buf)?;
            std::io::Write::write_all(&mut std::io::stdout().lock(), &buf)?;
            Ok(())
        }
        GenerateCommand::Man { dir: Some(dir) } => {
            std::fs::create_dir_all(&dir)?;
            let mut written = 0;
            let mut cmd = super::command();
            cmd.build();
            man_pages(&cmd, "mdmctl", &dir, &mut written)?;
            eprintln!("wrote {written} man pages into `{}`", dir.display());
            Ok(())
        }
    }
}

/// One page for `cmd` (named `name`) and one for each of its subcommands, recursively.
fn man_pages(
    cmd: &clap::Command,
    name: &str,
    dir: &std::path::Path,
    written: &mut usize,
) -> anyhow::Result<()> {
    // clap names take `&'static str` without its `string` feature: a few dozen short names,
    // once, in a process that exits next.
    let page = cmd.clone().name(name.to_string().leak() as &str);
    let mut buf = Vec::new();
    clap_mangen::Man::new(page).render(&mut buf)?;
    std::fs::write(dir.join(format!("{name}.1")), buf)?;
    *written += 1;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        man_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
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
    Err(crate::diagnose::UserError::new(format!("missing `{flag}`"))
        .with_hint(format!(
            "pass `{flag} {example}` (prompts only happen on a terminal)"
        ))
        .into())
}
