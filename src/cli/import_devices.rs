//! `mdmctl import-devices`: read an old MDM's devices, push certificate and SCEP CA into the
//! store in one transaction, and print what happened.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Ctx;
use super::files::{SCEP_KEY_PASSWORD_HINT, ScepKeyPassword, load_key, read_input};
use super::output::{print_json, print_lines, table};
use crate::import::source::{self, From};
use crate::import::{self, ImportError, ImportOptions, Summary};

#[derive(Debug, clap::Args)]
pub struct ImportDevicesArgs {
    /// What to read: a mysqldump or pg_dump file (plain or .gz), a `mysql://` or
    /// `postgres://` URL (read-only, one snapshot), MicroMDM's `micromdm.db`, or a CSV.
    /// Several may be given.
    #[arg(value_name = "SOURCE", required_unless_present = "csv_template")]
    pub sources: Vec<String>,
    /// What the sources are, when detection from their content is not wanted.
    #[arg(long, value_enum)]
    pub from: Option<From>,
    /// A micromdm/scep file depot (`ca.pem`, `ca.key`): the old SCEP CA, stored as a trusted CA.
    /// Its key is encrypted; the empty password (scepserver's default) is tried unless one is
    /// given.
    #[arg(long, value_name = "DIR")]
    pub scep_depot: Option<PathBuf>,
    #[command(flatten)]
    pub scep_key_password: ScepKeyPassword,
    /// Fleet's `server.private_key` (a file holding it), to decrypt the push certificate and
    /// SCEP CA Fleet keeps in `mdm_config_assets`.
    #[arg(long, value_name = "FILE")]
    pub fleet_private_key: Option<PathBuf>,
    /// Run every check and print the same summary, writing nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Fail (and write nothing) if any record would be skipped.
    #[arg(long)]
    pub strict: bool,
    /// Write every skipped record and its reason to FILE as CSV.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// The largest row of a dump (or record of a CSV) read into memory: `64M` by default;
    /// a source with a larger one is refused, naming it. Units: K, M, G.
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = super::files::parse_size)]
    pub max_row_size: usize,
    /// Print the CSV header and an example row, and exit.
    #[arg(long, conflicts_with_all = ["sources", "dry_run", "strict", "report"])]
    pub csv_template: bool,
}

/// How often a progress line is printed off a terminal: every 5 seconds, or
/// `MDMCTL_PROGRESS_SECONDS`.
fn progress_every() -> std::time::Duration {
    std::time::Duration::from_secs(
        std::env::var("MDMCTL_PROGRESS_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5),
    )
}

pub fn run(ctx: &Ctx, args: ImportDevicesArgs) -> anyhow::Result<()> {
    if args.csv_template {
        print!("{}", import::csv::template());
        return Ok(());
    }
    ctx.local_only("import-devices")?;
    // Read and check every input before touching the store.
    let mut sources = Vec::new();
    for spec in &args.sources {
        let s = source::open(spec, args.from)?;
        eprintln!("{}: detected {}", s.label, s.detected);
        sources.push(s);
    }
    let mut scep = Vec::new();
    if let Some(dir) = &args.scep_depot {
        let cert = read_input(&dir.join("ca.pem"), "--scep-depot")?;
        crate::pki::parse_cert(&cert)
            .with_context(|| format!("reading `{}`", dir.join("ca.pem").display()))?;
        let password = args.scep_key_password.get()?;
        let key = load_key(
            &dir.join("ca.key"),
            "--scep-depot",
            password.as_deref().map(String::as_str),
            SCEP_KEY_PASSWORD_HINT,
        )?;
        // The store keeps its own sealed copy; the importer gets the key decrypted.
        let key = crate::pki::private_key_pem(&key)?;
        scep.push((dir.display().to_string(), cert, key.to_vec()));
    }
    let fleet_key = match &args.fleet_private_key {
        Some(p) => {
            let mut k = read_input(p, "--fleet-private-key")?;
            while k.last().is_some_and(|b| b.is_ascii_whitespace()) {
                k.pop();
            }
            if k.len() < 32 {
                crate::bail_user!(
                    format!("`{}` is shorter than 32 bytes: not Fleet's `server.private_key`", p.display()),
                    hint: "give the file holding Fleet's `server.private_key` (`FLEET_SERVER_PRIVATE_KEY`)"
                );
            }
            Some(zeroize::Zeroizing::new(k))
        }
        None => None,
    };
    let store = ctx.open_store()?;
    store.unlock()?;
    let opts = ImportOptions {
        dry_run: args.dry_run,
        strict: args.strict,
        actor: ctx.actor(),
        fleet_key,
        max_row_size: args.max_row_size,
    };
    let total: u64 = sources.iter().filter_map(|s| s.size()).sum();
    let tty = std::io::stderr().is_terminal();
    let bar = ProgressBar::with_draw_target(
        Some(total.max(1)),
        if tty {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} importing {bytes}/{total_bytes} [{bar:30}] {binary_bytes_per_sec}, ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    // The report's path is checked before anything is written: a typo there must not turn a
    // committed import into a failed command.
    if let Some(path) = &args.report {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| {
                crate::diagnose::UserError::new(format!(
                    "cannot write the report `{}`: {e}",
                    path.display()
                ))
                .with_hint("pass `--report` a path in a directory that exists and you can write to")
            })?;
    }
    let result = store.write(|tx| {
        bar.set_position(0);
        // Off a terminal (CI logs): a plain line every few seconds instead of the bar.
        let mut last = std::time::Instant::now();
        let every = progress_every();
        let mut progress = |b: u64| {
            bar.set_position(b);
            if !tty && last.elapsed() >= every {
                last = std::time::Instant::now();
                if total > 0 {
                    eprintln!(
                        "importing: {} of {} MiB read ({}%)",
                        b >> 20,
                        total >> 20,
                        b.saturating_mul(100) / total.max(1)
                    );
                } else {
                    eprintln!("importing: {} MiB read", b >> 20);
                }
            }
        };
        import::import_into(tx, &sources, &opts, &scep, &mut progress)
    });
    bar.finish_and_clear();
    let summary = match result {
        Ok(s) => s,
        Err(ImportError::DryRun(s)) => *s,
        Err(ImportError::Strict {
            count,
            first,
            summary,
        }) => {
            // Nothing was written; the report still says what would have been skipped.
            if let Some(path) = &args.report {
                write_report(path, &summary)?;
            }
            return Err(ImportError::Strict {
                count,
                first,
                summary,
            }
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(path) = &args.report {
        write_report(path, &summary)?;
    }
    // What reading found that the first bytes did not show (a Fleet database, say).
    for (s, read) in sources.iter().zip(&summary.sources) {
        if read.detected != s.detected {
            eprintln!("{}: read as {}", s.label, read.detected);
        }
    }
    if ctx.json() {
        return print_json(&summary);
    }
    print_lines(&render(&summary))
}

fn write_report(path: &PathBuf, s: &Summary) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_path(path)
        .with_context(|| format!("writing the report `{}`", path.display()))?;
    w.write_record(["kind", "id", "source", "reason"])?;
    for k in &s.skipped {
        w.write_record([&k.kind, &k.id, &k.source, &k.reason])?;
    }
    w.flush()
        .with_context(|| format!("writing the report `{}`", path.display()))?;
    Ok(())
}

fn render(s: &Summary) -> Vec<String> {
    let mut lines = Vec::new();
    lines.push(if s.dry_run {
        "Dry run: nothing was written. This is what an import would do:".to_string()
    } else {
        "Imported.".to_string()
    });
    let row = |name: &str, c: &import::Counts| {
        vec![
            name.to_string(),
            c.found.to_string(),
            c.imported.to_string(),
            c.updated.to_string(),
            c.unchanged.to_string(),
            c.kept_newer.to_string(),
            c.skipped.to_string(),
        ]
    };
    lines.extend(table(
        &[
            "",
            "FOUND",
            "IMPORTED",
            "UPDATED",
            "UNCHANGED",
            "KEPT NEWER",
            "SKIPPED",
        ],
        &[
            row("devices", &s.devices),
            row("enrollments", &s.enrollments),
        ],
    ));
    if !s.topics.is_empty() {
        lines.push(String::new());
        let t: Vec<Vec<String>> = s
            .topics
            .iter()
            .map(|(t, n)| vec![t.clone(), n.to_string()])
            .collect();
        lines.extend(table(&["TOPIC", "ENROLLMENTS"], &t));
    }
    if !s.assets.is_empty() {
        lines.push(String::new());
        let a: Vec<Vec<String>> = s
            .assets
            .iter()
            .map(|a| vec![a.kind.clone(), a.detail.clone(), a.outcome.clone()])
            .collect();
        lines.extend(table(&["ASSET", "WHAT", "OUTCOME"], &a));
    } else {
        lines.push(String::new());
        lines.push("Assets found: none (no push certificate or SCEP CA in the sources).".into());
    }
    let w = &s.warnings;
    let notes = [
        (
            w.topic_mismatch,
            "enrollments with another topic than the push certificate's",
        ),
        (
            w.no_push_token,
            "devices without a push token (cannot be woken until they check in)",
        ),
        (
            w.identity_expiring_30d,
            "identity certificates expiring within 30 days",
        ),
        (w.identity_expired, "identity certificates already expired"),
        (
            w.no_identity,
            "devices without a known identity certificate",
        ),
        (w.duplicate_udids, "duplicate UDIDs across sources"),
        (
            s.queued_left_behind,
            "queued commands left behind (not imported)",
        ),
    ];
    let notes: Vec<_> = notes.iter().filter(|(n, _)| *n > 0).collect();
    if !notes.is_empty() || s.topics.len() > 1 {
        lines.push(String::new());
        lines.push("Check:".into());
        if s.topics.len() > 1 {
            lines.push(format!(
                "  {} push topics in the sources; only the push certificate's topic can be reached",
                s.topics.len()
            ));
        }
        for (n, what) in notes {
            lines.push(format!("  {n} {what}"));
        }
    }
    if !s.skipped.is_empty() {
        lines.push(String::new());
        let n = s.skipped.len();
        lines.push(format!(
            "Skipped {n} record{}:",
            if n == 1 { "" } else { "s" }
        ));
        for (reason, n) in s.skip_reasons() {
            lines.push(format!("  {n}  {reason}"));
        }
        lines.push("  (`--report FILE` lists each one)".into());
    }
    lines
}
