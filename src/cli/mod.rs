//! The command line. One file per subcommand: clap arguments and a short `run` that reads
//! files, calls a library module, and prints. Nothing imports `cli`.

mod abm;
mod apply;
mod context;
mod cutover;
mod demo;
mod device;
mod enroll_secret;
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
mod version;

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
    version = crate::version::LONG,
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
    /// How to print data on stdout (`-o json`); `yaml` is for `get config`.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Never prompt, even on a terminal (`MDMCTL_NO_INPUT=1`, `true`, `yes` or `on`).
    #[arg(long, global = true, env = "MDMCTL_NO_INPUT", value_parser = clap::builder::BoolishValueParser::new())]
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
    #[command(
        after_help = "Examples:\n  mdmctl apply -f gitops/ --dry-run                        # the plan; nothing written\n  mdmctl apply -f gitops/ --dry-run --detailed-exitcode    # CI: exit 2 when changes are pending\n  envsubst < fleet.yml | mdmctl apply -f -                 # one YAML stream from stdin"
    )]
    Apply(apply::ApplyArgs),
    /// Import devices, push certificate and SCEP CA from an old MDM (NanoMDM, Fleet, MicroMDM, CSV).
    #[command(
        after_help = "Examples:\n  mdmctl import-devices nanomdm.sql.gz --scep-depot /var/lib/scep/depot --dry-run\n  mdmctl import-devices mysql://nanomdm@db.internal/nanomdm --scep-depot depot/\n  mdmctl import-devices micromdm.db --report import-report.json"
    )]
    ImportDevices(import_devices::ImportDevicesArgs),
    /// Run the MDM server: check-ins, commands, SCEP, push, enrollment, admin API.
    #[command(
        after_help = "Examples:\n  mdmctl serve --url https://mdm.example.com --listen 0.0.0.0:443 --tls-cert mdm.pem --tls-key mdm.key\n  mdmctl serve --url https://mdm.example.com --listen 127.0.0.1:8080 --client-cert-header X-Client-Cert\n  mdmctl serve --url https://mdm.example.com --upstream https://old-mdm.internal   # staged cutover"
    )]
    Serve(Box<serve::ServeArgs>),
    /// Send MDM commands to devices (queued, then pushed).
    #[command(subcommand)]
    Mdm(mdm::MdmCommand),
    /// Wake devices now (an APNs push), so they check in.
    Push(push::PushArgs),
    /// Move devices into a team (or out of any): their profiles follow.
    #[command(
        after_help = "Examples:\n  mdmctl transfer --team Workstations --serial C02XK1ABJG5H\n  mdmctl transfer --no-team --udid 0000FE00-1234-5678-9ABC-DEF012345678"
    )]
    Transfer(transfer::TransferArgs),
    /// Admin API tokens for `--server` and CI, each with a role.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Enrollment secrets: what `/enroll` asks for before it hands out a profile.
    #[command(subcommand)]
    EnrollSecret(enroll_secret::EnrollSecretCommand),
    /// Act on one device's record (`rebind`: let a re-enrolled Mac bind its new identity).
    #[command(subcommand)]
    Device(device::DeviceCommand),
    /// Apple Business Manager: `sync` its devices into the store and assign their enrollment
    /// profiles.
    #[command(
        subcommand,
        after_help = "Examples:\n  mdmctl abm sync --url https://mdm.example.com   # devices, then each team's setup profile\n  mdmctl get abm-devices --pending"
    )]
    Abm(abm::AbmCommand),
    /// Before DNS moves: `check` says go or no-go.
    #[command(
        subcommand,
        after_help = "Examples:\n  mdmctl cutover check --url https://mdm.example.com --enrollment-profile old.mobileconfig\n  mdmctl cutover set --percent 10\n  mdmctl cutover status"
    )]
    Cutover(cutover::CutoverCommand),
    /// Run the whole flow on a throwaway store in a new directory, and show what happened.
    Demo(demo::DemoArgs),
    /// This build's version, git commit and build date (and the server's, with `--server`).
    Version,
}

pub fn run(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<ExitCode> {
    let args: Vec<OsString> = args.into_iter().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // Help and version.
            e.print()?;
            return Ok(ExitCode::SUCCESS);
        }
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                    | clap::error::ErrorKind::MissingSubcommand
            ) =>
        {
            // `mdmctl get` without a noun: that command's help, as a list, on stderr.
            let mut cmd = command();
            for a in args.iter().skip(1).filter_map(|a| a.to_str()) {
                if let Some(sub) = cmd.find_subcommand(a) {
                    cmd = sub.clone();
                }
            }
            eprint!("{}", cmd.render_help());
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(usage_error(&e).into()),
    };
    let server = matches!(cli.command, Command::Serve(_));
    init_logging(cli.global.verbose, cli.global.log_format, server);
    // YAML is what `get config` prints for `apply` to read back; elsewhere it would be a table
    // silently, so it is refused.
    if cli.global.format == Format::Yaml
        && !matches!(cli.command, Command::Get(get::GetCommand::Config))
    {
        crate::bail_user!(
            "`--format yaml` is only for `get config` (documents `apply -f` reads back)",
            hint: "use `--format json` (`-o json`) for machine output, or the default table"
        );
    }
    let ctx = Ctx::new(&cli.global);
    match cli.command {
        Command::Init(args) => init::run(&ctx, args),
        Command::Generate(cmd) => generate::run(&ctx, cmd),
        Command::Set(cmd) => set::run(&ctx, cmd),
        Command::Get(cmd) => get::run(&ctx, cmd),
        // `--detailed-exitcode` answers with its exit code, terraform's: 0 no changes, 2 changes
        // pending, 1 any error (a bug included, which is 2 elsewhere).
        Command::Apply(args) => {
            let detailed = args.detailed_exitcode;
            return match apply::run(&ctx, args) {
                Err(e) if detailed => {
                    crate::report_error(&e);
                    Ok(ExitCode::from(1))
                }
                other => other,
            };
        }
        Command::ImportDevices(args) => import_devices::run(&ctx, args),
        Command::Serve(args) => serve::run(&ctx, *args),
        Command::Mdm(cmd) => mdm::run(&ctx, cmd),
        Command::Push(args) => push::run(&ctx, args),
        Command::Transfer(args) => transfer::run(&ctx, args),
        Command::Token(cmd) => token::run(&ctx, cmd),
        Command::EnrollSecret(cmd) => enroll_secret::run(&ctx, cmd),
        Command::Device(cmd) => device::run(&ctx, cmd),
        Command::Abm(cmd) => abm::run(&ctx, cmd),
        // A go / no-go answers with its exit code.
        Command::Cutover(cmd) => return cutover::run(&ctx, cmd),
        Command::Demo(args) => demo::run(&ctx, args),
        Command::Version => version::run(&ctx),
    }?;
    Ok(ExitCode::SUCCESS)
}

/// A wrong flag is the user's to fix (exit 1), reported like every other error: one line, and a
/// hint with the usage.
fn usage_error(e: &clap::Error) -> crate::diagnose::UserError {
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
    crate::diagnose::UserError::new(message.join(" ")).with_hint(hint)
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;

    /// Every long flag and env var the command tree accepts, at any depth.
    fn accepted(cmd: &clap::Command, flags: &mut BTreeSet<String>, envs: &mut BTreeSet<String>) {
        for a in cmd.get_arguments() {
            if let Some(l) = a.get_long() {
                flags.insert(format!("--{l}"));
            }
            if let Some(e) = a.get_env() {
                envs.insert(e.to_string_lossy().into_owned());
            }
        }
        for s in cmd.get_subcommands() {
            accepted(s, flags, envs);
        }
    }

    fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                sources(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push((
                    p.display().to_string(),
                    std::fs::read_to_string(&p).unwrap(),
                ));
            }
        }
    }

    /// Other programs whose flags our messages quote (`mysqldump --single-transaction`).
    const FOREIGN: &[&str] = &[
        "mysqldump",
        "mysql",
        "pg_dump",
        "pg_restore",
        "psql",
        "openssl",
        "curl",
        "scepserver",
        "scepclient",
        "fleetctl",
        "nanomdm",
        "micromdm",
        "systemd-analyze",
        "cargo",
    ];

    // See: issue 10 §1: hints printed the placeholders `--…-password` / `MDMCTL_…_PASSWORD`.
    #[test]
    fn every_flag_and_env_var_a_message_names_exists() {
        let (mut flags, mut envs) = (BTreeSet::new(), BTreeSet::new());
        accepted(&Cli::command(), &mut flags, &mut envs);
        flags.extend(["--help".to_string(), "--version".to_string()]);
        let mut files = Vec::new();
        sources(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        // Env vars the code reads itself (not through clap).
        for (_, text) in &files {
            let reads = text
                .match_indices("env::var")
                .chain(text.match_indices("from_env("));
            for (i, _) in reads {
                let rest = &text[i..];
                if let Some(start) = rest.find("\"MDMCTL_").filter(|s| *s < 24) {
                    let name: String = rest[start + 1..]
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    envs.insert(name);
                }
            }
        }
        let mut problems = Vec::new();
        for (file, text) in &files {
            // This test's own text quotes the placeholders it looks for.
            let text =
                match text.find("#[cfg(test)]\nmod tests {\n    use std::collections::BTreeSet;") {
                    Some(end) => &text[..end],
                    None => text,
                };
            for (n, line) in text.lines().enumerate() {
                let at = format!("{file}:{}", n + 1);
                if line.contains("--…") || line.contains("MDMCTL_…") || line.contains("_…_") {
                    problems.push(format!(
                        "{at}: a placeholder instead of a real flag: {}",
                        line.trim()
                    ));
                }
                // Backticked spans: `--flag …` or `mdmctl cmd --flag …`.
                for (k, span) in line.split('`').enumerate() {
                    if k % 2 == 0 {
                        continue;
                    }
                    // The command, past any `VAR=value` before it.
                    let first = span
                        .split_whitespace()
                        .find(|w| !w.contains('='))
                        .unwrap_or("");
                    if FOREIGN.contains(&first) {
                        continue;
                    }
                    for word in span.split(|c: char| c.is_whitespace() || c == '=' || c == ',') {
                        if let Some(flag) = word.strip_prefix("--") {
                            let flag: String = flag
                                .chars()
                                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                                .collect();
                            let named = flag.starts_with(|c: char| c.is_ascii_lowercase());
                            if named && !flags.contains(&format!("--{flag}")) {
                                problems.push(format!("{at}: `--{flag}` is not a flag of mdmctl"));
                            }
                        }
                    }
                }
                let mut rest = line;
                while let Some(i) = rest.find("MDMCTL_") {
                    let name: String = rest[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    if !name.ends_with('_') && !envs.contains(&name) {
                        problems.push(format!("{at}: `{name}` is not an env var mdmctl reads"));
                    }
                    rest = &rest[i + 7..];
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
