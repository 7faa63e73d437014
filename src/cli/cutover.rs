//! `mdmctl cutover check`: the go / no-go before DNS moves (checks in `crate::cutover`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::Ctx;
use super::output::{print_json, print_lines, table};
use crate::cutover::stage::{self, Change, StageError};
use crate::cutover::{self, OldProfile, Status};
use crate::diagnose::UserError;
use crate::push::PRODUCTION_URL;

#[derive(Debug, Subcommand)]
pub enum CutoverCommand {
    /// Go / no-go before DNS moves: every check says pass, warn, fail or skipped, with a hint.
    /// Takes serve's flags (the same environment variables) so it checks the configuration
    /// that will run. Exits 1 when any check fails.
    Check(CheckArgs),
    /// Staged cutover (`serve --upstream`): choose the devices mdmctl answers; the others are
    /// forwarded to the old server. Recorded in the activity log. Works through `--server`
    /// (a maintainer or admin token).
    Set(SetArgs),
    /// Staged cutover: send devices back to the old server (all of them, or those listed).
    /// Their queued mdmctl commands are kept, and counted. Recorded in the activity log.
    /// Works through `--server`.
    Rollback(RollbackArgs),
    /// Where the cutover stands: devices imported, in the cutover set, migrated, still
    /// waiting; routed to the old server in the last hour; push failures; identities expiring
    /// within 30 days; renewals; what waits to be mirrored back; per team. Works through
    /// `--server` (`GET /api/v1/cutover`).
    Status,
}

#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("which")
        .required(true)
        .multiple(false)
        .args(["percent", "devices", "team", "all"])
))]
pub struct SetArgs {
    /// This percentage of all devices, chosen by a stable hash of the UDID (FNV-1a, as Fleet's
    /// mdmproxy): raising it only adds devices.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100), value_name = "N")]
    pub percent: Option<u8>,
    /// These devices: UDIDs or serial numbers, one per line (`#` comments).
    #[arg(long, value_name = "FILE")]
    pub devices: Option<PathBuf>,
    /// The devices of this team.
    #[arg(long, value_name = "NAME")]
    pub team: Option<String>,
    /// Every device.
    #[arg(long)]
    pub all: bool,
    /// Say which devices would move; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Only these devices: UDIDs or serial numbers, one per line (`#` comments).
    #[arg(long, value_name = "FILE")]
    pub devices: Option<PathBuf>,
    /// Say which devices would move; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The URL devices will reach the new server at: the old MDM's DNS name (`serve --url`).
    #[arg(long, env = "MDMCTL_URL", value_name = "URL")]
    pub url: Option<String>,
    /// serve's extra MDM paths (`serve --mdm-path`).
    #[arg(long = "mdm-path", value_name = "PATH")]
    pub mdm_paths: Vec<String>,
    /// The certificate chain serve will present (`serve --tls-cert`); without it, fetched from
    /// `--url`.
    #[arg(long, env = "MDMCTL_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The enrollment profile the old MDM installed (`.mobileconfig`, signed or not): the URLs
    /// devices use and the roots they trust.
    #[arg(
        long,
        alias = "migration-enrollment-profile",
        env = "MDMCTL_MIGRATION_ENROLLMENT_PROFILE",
        value_name = "FILE"
    )]
    pub enrollment_profile: Option<PathBuf>,
    /// The old server's address, for a staged cutover: checked to answer.
    #[arg(long, env = "MDMCTL_UPSTREAM", value_name = "URL")]
    pub upstream: Option<String>,
    /// The old server's migration endpoint serve mirrors check-ins to
    /// (`serve --upstream-migration-url`).
    #[arg(long, env = "MDMCTL_UPSTREAM_MIGRATION_URL", value_name = "URL")]
    pub upstream_migration_url: Option<String>,
    /// APNs base URL (Apple's production gateway unless testing).
    #[arg(long, env = "MDMCTL_APNS_URL", default_value = PRODUCTION_URL, value_name = "URL")]
    pub apns_url: String,
    /// Trust only this CA for the APNs server's certificate (a local APNs stand-in), besides
    /// the system's roots.
    #[arg(long, env = "MDMCTL_APNS_CA_FILE", value_name = "FILE")]
    pub apns_ca_file: Option<PathBuf>,
    /// serve will run with `--allow-retro-association`.
    #[arg(long)]
    pub allow_retro_association: bool,
    /// serve's `--renew-before-days` (0: renewal off).
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    pub renew_before_days: u32,
    /// Report identities and certificates expiring within this many days.
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    pub expiry_days: u32,
    /// Report devices still to migrate that the old server has not seen for this many days.
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    pub stale_days: u32,
    /// The DNS resolver to ask for the name's answer and TTL (default: the system's).
    #[arg(long, value_name = "IP[:PORT]")]
    pub resolver: Option<String>,
    /// Do not use the network: the TLS fetch, old server, APNs and DNS checks say `skipped`.
    #[arg(long)]
    pub offline: bool,
    /// Timeout of each network probe.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    pub timeout: u64,
}

pub fn run(ctx: &Ctx, cmd: CutoverCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CutoverCommand::Check(args) => check(ctx, args),
        CutoverCommand::Set(a) => {
            let (change, listed) = if let Some(p) = a.percent {
                (Change::Percent(p), None)
            } else if let Some(f) = &a.devices {
                let listed = device_list(f)?;
                (
                    Change::Devices(listed.iter().map(|(_, id)| id.clone()).collect()),
                    Some((f.clone(), listed)),
                )
            } else if let Some(t) = a.team {
                (Change::Team(t), None)
            } else {
                (Change::All, None)
            };
            stage(ctx, &change, listed, a.dry_run)
        }
        CutoverCommand::Status => status(ctx),
        CutoverCommand::Rollback(a) => {
            let (change, listed) = match &a.devices {
                None => (Change::AllBack, None),
                Some(f) => {
                    let listed = device_list(f)?;
                    (
                        Change::Back(listed.iter().map(|(_, id)| id.clone()).collect()),
                        Some((f.clone(), listed)),
                    )
                }
            };
            stage(ctx, &change, listed, a.dry_run)
        }
    }
}

fn status(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let s = match ctx.remote()? {
        Some(api) => api.cutover_status()?,
        None => {
            let store = ctx.open_store()?;
            store.read(crate::cutover::status::read)?
        }
    };
    if ctx.json() {
        print_json(&s)?;
        return Ok(ExitCode::SUCCESS);
    }
    let f = &s.fleet;
    let permille = s.migrated_permille();
    let mut pairs = vec![
        (
            "cutover set",
            if s.set.all {
                "every device".to_string()
            } else {
                format!(
                    "{} % of devices, and devices moved one by one",
                    s.set.percent
                )
            },
        ),
        (
            "devices",
            format!("{} ({} imported)", f.devices, f.imported),
        ),
        ("answered by mdmctl", f.in_set.to_string()),
        (
            "migrated",
            format!(
                "{} of {} imported ({}.{} %)",
                f.migrated,
                f.imported,
                permille / 10,
                permille % 10
            ),
        ),
        ("in the set, not seen yet", f.waiting.to_string()),
    ];
    if let Some(w) = &s.longest_waiting {
        pairs.push((
            "  longest waiting",
            format!(
                "{}{}, last seen by the old server {}",
                w.udid,
                w.serial
                    .as_deref()
                    .map(|x| format!(" ({x})"))
                    .unwrap_or_default(),
                w.last_seen_at
                    .map_or("never".to_string(), |t| t.to_string())
            ),
        ));
    }
    pairs.push((
        "routed to the old server, last hour",
        s.routed_last_hour.to_string(),
    ));
    pairs.push((
        "push failures",
        if s.push_failures.is_empty() {
            "none".to_string()
        } else {
            s.push_failures
                .iter()
                .map(|r| format!("{}: {}", r.reason, r.count))
                .collect::<Vec<_>>()
                .join(", ")
        },
    ));
    pairs.push((
        "identities expiring within 30 days",
        s.identities_expiring_30d.to_string(),
    ));
    pairs.push((
        "renewals",
        format!(
            "{} done, {} pending, {} failed",
            s.renewals.renewed, s.renewals.pending, s.renewals.failed
        ),
    ));
    pairs.push((
        "refused identities (running instances)",
        if s.refused.is_empty() {
            "none".to_string()
        } else {
            s.refused
                .iter()
                .map(|r| format!("{}: {}", r.reason, r.count))
                .collect::<Vec<_>>()
                .join(", ")
        },
    ));
    let m = &s.mirror_back;
    pairs.push((
        "waiting to be mirrored back",
        match (&m.oldest, &m.last_error) {
            (None, _) => "nothing".to_string(),
            (Some(t), None) => format!("{} check-in(s) since {t}", m.waiting),
            (Some(t), Some(e)) => format!(
                "{} check-in(s) since {t}, {} failing: {e}",
                m.waiting, m.failing
            ),
        },
    ));
    let mut lines = super::output::key_values(0, &pairs);
    if s.teams.len() > 1 || s.teams.first().is_some_and(|t| t.team.is_some()) {
        lines.push(String::new());
        let rows: Vec<Vec<String>> = s
            .teams
            .iter()
            .map(|t| {
                vec![
                    t.team.clone().unwrap_or_else(|| "(no team)".into()),
                    t.counts.devices.to_string(),
                    t.counts.in_set.to_string(),
                    t.counts.migrated.to_string(),
                    t.counts.waiting.to_string(),
                ]
            })
            .collect();
        lines.extend(table(
            &["TEAM", "DEVICES", "IN SET", "MIGRATED", "WAITING"],
            &rows,
        ));
    }
    if s.abm_migrating > 0 {
        lines.push(String::new());
        lines.push(format!(
            "{} device(s) migrating via Apple Business Manager (not enrolled here yet):",
            s.abm_migrating
        ));
        for m in &s.abm_migrations {
            lines.push(format!(
                "  {}  migrating via ABM, deadline {}{}",
                m.serial,
                m.deadline,
                m.team
                    .as_deref()
                    .map(|t| format!(", team {t}"))
                    .unwrap_or_default()
            ));
        }
        if s.abm_migrating > s.abm_migrations.len() as i64 {
            lines.push("  … (`mdmctl get abm-devices --pending` lists them all)".into());
        }
    }
    print_lines(&lines)?;
    Ok(ExitCode::SUCCESS)
}

/// A device list: (line number, UDID or serial) for every line that is not blank or a comment.
fn device_list(path: &std::path::Path) -> anyhow::Result<Vec<(usize, String)>> {
    let bytes = crate::input::read_limited(path, 64 << 20).map_err(|e| {
        UserError::new(format!("`{}`: {e}", path.display()))
            .with_hint("--devices takes a text file of UDIDs or serial numbers, one per line")
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        UserError::new(format!("`{}`: not UTF-8 text ({e})", path.display()))
            .with_hint("--devices takes a text file of UDIDs or serial numbers, one per line")
    })?;
    let list: Vec<(usize, String)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split('#').next().unwrap_or("").trim().to_string()))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    if list.is_empty() {
        return Err(
            UserError::new(format!("`{}` lists no device", path.display()))
                .with_hint("one UDID or serial number per line")
                .into(),
        );
    }
    Ok(list)
}

type Listed = Option<(PathBuf, Vec<(usize, String)>)>;

fn stage(ctx: &Ctx, change: &Change, listed: Listed, dry_run: bool) -> anyhow::Result<ExitCode> {
    let applied = match ctx.remote()? {
        Some(api) => Ok(api.cutover_change(&stage::ChangeRequest {
            change: change.clone(),
            dry_run,
        })?),
        None => {
            let store = ctx.open_store()?;
            stage::apply(store.as_ref(), change, &ctx.actor(), dry_run)
        }
    };
    let o = match applied {
        Ok(o) => o,
        Err(StageError::UnknownDevice(id)) if listed.is_some() => {
            let (file, lines) = listed.unwrap_or_default();
            let line = lines
                .iter()
                .find(|(_, l)| *l == id)
                .map(|(n, _)| *n)
                .unwrap_or(0);
            return Err(UserError::new(format!(
                "`{}` line {line}: no device `{id}` in the store; nothing changed",
                file.display()
            ))
            .with_hint("list UDIDs or serial numbers of imported devices (`mdmctl get devices`)")
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    if ctx.json() {
        print_json(&o)?;
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if dry_run { "would move" } else { "moved" };
    let list = |v: &[stage::Moved]| -> Vec<String> {
        let mut out: Vec<String> = v
            .iter()
            .take(20)
            .map(|m| {
                let serial = m
                    .serial
                    .as_deref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default();
                if m.queued_commands > 0 {
                    format!(
                        "  {}{serial}: {} queued mdmctl command(s) kept",
                        m.udid, m.queued_commands
                    )
                } else {
                    format!("  {}{serial}", m.udid)
                }
            })
            .collect();
        if v.len() > 20 {
            out.push(format!(
                "  … and {} more (all of them with --format json)",
                v.len() - 20
            ));
        }
        out
    };
    let mut lines = vec![format!("{verb} to mdmctl: {} device(s)", o.moved_in.len())];
    lines.extend(list(&o.moved_in));
    let kept: i64 = o.moved_out.iter().map(|m| m.queued_commands).sum();
    lines.push(format!(
        "{verb} back to the old server: {} device(s) ({kept} queued mdmctl command(s) kept, sent if they move in again)",
        o.moved_out.len()
    ));
    lines.extend(list(&o.moved_out));
    lines.push(format!(
        "{}: {} of {} devices answered by mdmctl ({} %{})",
        if dry_run { "after" } else { "now" },
        o.in_set,
        o.devices,
        o.after.percent,
        if o.after.all { ", all" } else { "" }
    ));
    if dry_run {
        lines.push("dry run: nothing changed".into());
    }
    print_lines(&lines)?;
    Ok(ExitCode::SUCCESS)
}

fn read(path: &std::path::Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        UserError::new(format!("cannot read `{}`: {e}", path.display()))
            .with_hint(format!("pass {what}"))
            .into()
    })
}

fn check(ctx: &Ctx, a: CheckArgs) -> anyhow::Result<ExitCode> {
    let profile = match &a.enrollment_profile {
        None => None,
        Some(p) => Some(
            OldProfile::parse(&read(p, "the old MDM's enrollment profile (.mobileconfig)")?)
                .map_err(|e| {
                    UserError::new(format!("`{}`: {e}", p.display())).with_hint(
                        "pass the enrollment profile the old MDM installed (it has a com.apple.mdm payload)",
                    )
                })?,
        ),
    };
    let tls_chain = match &a.tls_cert {
        None => None,
        Some(p) => Some(
            crate::pki::parse_certs(&read(p, "serve's certificate chain (PEM, leaf first)")?)
                .map_err(|e| {
                    UserError::new(format!("`{}`: {e}", p.display()))
                        .with_hint("--tls-cert takes a PEM chain, leaf first (serve's --tls-cert)")
                })?,
        ),
    };
    let apns_ca = match &a.apns_ca_file {
        None => None,
        Some(p) => Some(
            crate::pki::parse_cert(&read(p, "the APNs stand-in's CA certificate")?).map_err(
                |e| {
                    UserError::new(format!("`{}`: {e}", p.display()))
                        .with_hint("--apns-ca-file takes one CA certificate (PEM or DER)")
                },
            )?,
        ),
    };
    if let Some(u) = &a.url
        && reqwest::Url::parse(u).is_err()
    {
        return Err(UserError::new(format!("--url `{u}` is not a URL"))
            .with_hint("--url takes https://NAME (the old MDM's DNS name)")
            .into());
    }
    let resolver = match &a.resolver {
        None => None,
        Some(r) => Some(
            r.parse::<std::net::SocketAddr>()
                .or_else(|_| {
                    r.parse::<std::net::IpAddr>()
                        .map(|ip| std::net::SocketAddr::new(ip, 53))
                })
                .map_err(|_| {
                    UserError::new(format!("--resolver `{r}` is not an address"))
                        .with_hint("--resolver takes IP or IP:PORT (a DNS resolver)")
                })?,
        ),
    };
    let store = ctx.open_store()?;
    let options = cutover::Options {
        fetch_tls: a.tls_cert.is_none(),
        url: a.url,
        mdm_paths: a.mdm_paths,
        tls_chain,
        profile,
        upstream: a.upstream,
        mirror_url: a.upstream_migration_url,
        apns_url: a.apns_url,
        apns_ca,
        allow_retro_association: a.allow_retro_association,
        renew_before_days: a.renew_before_days,
        expiry_days: a.expiry_days,
        stale_days: a.stale_days,
        resolver,
        offline: a.offline,
        timeout: Duration::from_secs(a.timeout.max(1)),
    };
    let report = cutover::check::run(store.as_ref(), &options)?;
    if ctx.json() {
        print_json(&report)?;
    } else {
        let rows: Vec<Vec<String>> = report
            .checks
            .iter()
            .map(|c| {
                vec![
                    c.name.to_string(),
                    c.status.as_str().to_string(),
                    c.summary.clone(),
                ]
            })
            .collect();
        let mut lines = table(&["CHECK", "STATUS", "RESULT"], &rows);
        let detailed: Vec<_> = report
            .checks
            .iter()
            .filter(|c| c.hint.is_some() || !c.items.is_empty())
            .filter(|c| c.status != Status::Pass || !c.items.is_empty())
            .collect();
        for c in detailed {
            lines.push(String::new());
            lines.push(format!("{} ({}):", c.name, c.status.as_str()));
            lines.extend(c.items.iter().map(|i| format!("  {i}")));
            if let Some(h) = &c.hint {
                lines.push(format!("  hint: {h}"));
            }
        }
        let count = |s: Status| report.checks.iter().filter(|c| c.status == s).count();
        lines.push(String::new());
        lines.push(if report.go {
            format!(
                "GO: no check failed ({} warning(s), {} skipped)",
                count(Status::Warn),
                count(Status::Skipped)
            )
        } else {
            format!(
                "NO-GO: {} check(s) failed ({} warning(s), {} skipped)",
                count(Status::Fail),
                count(Status::Warn),
                count(Status::Skipped)
            )
        });
        print_lines(&lines)?;
    }
    Ok(if report.go {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
