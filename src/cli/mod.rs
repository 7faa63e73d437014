//! The command line. One file per subcommand: clap arguments and a short `run` that reads
//! files, calls a library module, and prints. Nothing imports `cli`.

mod apply;
mod context;
mod demo;
mod files;
mod generate;
mod get;
mod import_devices;
mod init;
mod mdm;
mod output;
mod push;
mod serve;
mod set;
mod token;
mod transfer;

pub use context::Ctx;
pub use output::Format;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand};

/// Move a fleet of Apple devices from one MDM server to another without re-enrollment,
/// and manage it after.
#[derive(Debug, Parser)]
#[command(
    name = "mdmctl",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The store: a SQLite file path, or a `postgres://user@host/db` URL.
    #[arg(
        long,
        global = true,
        env = "MDMCTL_DB",
        hide_env_values = true,
        default_value = "mdmctl.db",
        value_name = "PATH|URL"
    )]
    pub db: String,
    /// Read the store's passphrase from the first line of FILE (else `MDMCTL_PASSPHRASE`, else a prompt on a terminal).
    #[arg(
        long,
        global = true,
        env = "MDMCTL_PASSPHRASE_FILE",
        value_name = "FILE"
    )]
    pub passphrase_file: Option<PathBuf>,
    /// How to print data on stdout.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Never prompt, even on a terminal.
    #[arg(long, global = true, env = "MDMCTL_NO_INPUT")]
    pub no_input: bool,
    /// More diagnostics on stderr (`-v`, `-vv`); `MDMCTL_LOG` takes a tracing filter.
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
    /// Work against a running `mdmctl serve` through its admin API instead of a local store
    /// (with `MDMCTL_API_TOKEN`).
    #[arg(long, global = true, env = "MDMCTL_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// Log format on stderr: `text`, or `json` (one object per line, for log collectors).
    #[arg(long, global = true, env = "MDMCTL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a store and its master key.
    Init(init::InitArgs),
    /// Generate keys, CSRs and CAs (APNs, SCEP, Apple Business Manager).
    #[command(subcommand)]
    Generate(generate::GenerateCommand),
    /// Install certificates and tokens into the store.
    #[command(subcommand)]
    Set(set::SetCommand),
    /// Show what the store holds.
    #[command(subcommand)]
    Get(get::GetCommand),
    /// Apply GitOps YAML (global config, teams, profiles) to desired state, after a plan.
    Apply(apply::ApplyArgs),
    /// Import devices, push certificate and SCEP CA from an old MDM (NanoMDM, Fleet, MicroMDM, CSV).
    ImportDevices(import_devices::ImportDevicesArgs),
    /// Run the MDM server: check-ins, commands, SCEP, push, enrollment, admin API.
    Serve(serve::ServeArgs),
    /// Send MDM commands to devices (queued, then pushed).
    #[command(subcommand)]
    Mdm(mdm::MdmCommand),
    /// Wake devices now (an APNs push), so they check in.
    Push(push::PushArgs),
    /// Move devices into a team (or out of any): their profiles follow.
    Transfer(transfer::TransferArgs),
    /// Admin API tokens for `--server` and CI.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Run the whole flow on a throwaway store in a new directory, and show what happened.
    Demo(demo::DemoArgs),
}

pub fn run(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<ExitCode> {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // Help and version.
            e.print()?;
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(usage_error(&e).into()),
    };
    let server = matches!(cli.command, Command::Serve(_));
    init_logging(cli.global.verbose, cli.global.log_format, server);
    let ctx = Ctx::new(&cli.global);
    match cli.command {
        Command::Init(args) => init::run(&ctx, args),
        Command::Generate(cmd) => generate::run(&ctx, cmd),
        Command::Set(cmd) => set::run(&ctx, cmd),
        Command::Get(cmd) => get::run(&ctx, cmd),
        Command::Apply(args) => apply::run(&ctx, args),
        Command::ImportDevices(args) => import_devices::run(&ctx, args),
        Command::Serve(args) => serve::run(&ctx, args),
        Command::Mdm(cmd) => mdm::run(&ctx, cmd),
        Command::Push(args) => push::run(&ctx, args),
        Command::Transfer(args) => transfer::run(&ctx, args),
        Command::Token(cmd) => token::run(&ctx, cmd),
        Command::Demo(args) => demo::run(&ctx, args),
    }?;
    Ok(ExitCode::SUCCESS)
}

/// A wrong flag is the user's to fix (exit 1), reported like every other error: one line, and a
/// hint with the usage.
fn usage_error(e: &clap::Error) -> crate::error::UserError {
    let rendered = e.render().to_string();
    let mut message = Vec::new();
    let mut usage = None;
    for line in rendered.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(u) = line.strip_prefix("Usage: ") {
            usage = Some(u.to_string());
        } else if line.starts_with("For more information") || line.starts_with("tip:") {
            continue;
        } else {
            message.push(line.trim_start_matches("error: ").to_string());
        }
    }
    let hint = match usage {
        Some(u) => format!("usage: {u} (see `--help`)"),
        None => "see `mdmctl --help`".into(),
    };
    crate::error::UserError::new(message.join(" ")).with_hint(hint)
}

/// The clap command tree (for completions and the man page).
pub fn command() -> clap::Command {
    Cli::command()
}

/// Logs go to stderr. The server logs what it does (info); other commands only problems.
fn init_logging(verbose: u8, format: LogFormat, server: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (verbose, server) {
        (0, false) => "warn",
        (0, true) | (1, _) => "warn,mdmctl=info",
        _ => "warn,mdmctl=debug,tower_http=debug",
    };
    let filter = EnvFilter::try_from_env("MDMCTL_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder
            .with_ansi(
                std::env::var_os("NO_COLOR").is_none()
                    && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            )
            .try_init(),
    };
}
