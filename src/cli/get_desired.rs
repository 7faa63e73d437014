//! `mdmctl get config|teams|profiles`: desired state as `mdmctl apply` left it.

use crate::cli::Ctx;
use crate::cli::output::{Format, key_values, print_json, print_lines, table};
use crate::diagnose::UserError;
use crate::gitops;
use crate::store::{ProfileKind, Settings};

fn updates(s: &Settings) -> String {
    match (&s.minimum_version, &s.deadline) {
        (Some(v), Some(d)) => format!("macOS {v} by {d}"),
        _ => "-".into(),
    }
}

/// The desired state, from the local store or through `--server`.
fn snapshot(ctx: &Ctx) -> anyhow::Result<gitops::Snapshot> {
    Ok(match ctx.remote()? {
        Some(api) => api.config()?,
        None => {
            let store = ctx.open_store()?;
            store.read(|tx| gitops::snapshot(tx))?
        }
    })
}

pub fn config(ctx: &Ctx) -> anyhow::Result<()> {
    let snap = snapshot(ctx)?;
    match ctx.format {
        Format::Json => return print_json(&snap),
        Format::Yaml => {
            print!("{}", gitops::to_yaml(&snap));
            return Ok(());
        }
        Format::Table | Format::Wide => {}
    }
    let mut lines = vec!["Global (devices in no team)".to_string()];
    match &snap.global {
        Some(g) => lines.extend(key_values(
            2,
            &[
                ("macOS updates", updates(&g.settings)),
                (
                    "disk encryption",
                    g.settings.enable_disk_encryption.to_string(),
                ),
                (
                    "ABM default team",
                    g.apple_bm_default_team
                        .clone()
                        .unwrap_or_else(|| "-".into()),
                ),
                (
                    "profiles",
                    snap.profiles
                        .iter()
                        .filter(|p| p.team.is_none())
                        .count()
                        .to_string(),
                ),
            ],
        )),
        None => lines.push("  not configured (no `kind: config` applied yet)".into()),
    }
    for t in &snap.teams {
        lines.push(String::new());
        lines.push(format!("Team {}", t.name));
        lines.extend(key_values(
            2,
            &[
                ("macOS updates", updates(&t.settings)),
                (
                    "disk encryption",
                    t.settings.enable_disk_encryption.to_string(),
                ),
                (
                    "profiles",
                    snap.profiles
                        .iter()
                        .filter(|p| p.team.as_deref() == Some(t.name.as_str()))
                        .count()
                        .to_string(),
                ),
            ],
        ));
    }
    print_lines(&lines)
}

#[derive(serde::Serialize)]
struct TeamRow {
    name: String,
    #[serde(flatten)]
    settings: Settings,
    devices: i64,
    profiles: usize,
}

pub fn teams(ctx: &Ctx) -> anyhow::Result<()> {
    let snap = snapshot(ctx)?;
    let (teams, counts, profiles) = (snap.teams, snap.device_counts, snap.profiles);
    let rows: Vec<TeamRow> = teams
        .into_iter()
        .map(|t| TeamRow {
            devices: counts
                .iter()
                .find(|(n, _)| n.as_deref() == Some(t.name.as_str()))
                .map_or(0, |(_, c)| *c),
            profiles: profiles
                .iter()
                .filter(|p| p.team.as_deref() == Some(t.name.as_str()))
                .count(),
            name: t.name,
            settings: t.settings,
        })
        .collect();
    if ctx.json() {
        return print_json(&rows);
    }
    if rows.is_empty() {
        eprintln!("no teams yet: add `kind: team` documents and run `mdmctl apply -f`");
        return Ok(());
    }
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.devices.to_string(),
                r.profiles.to_string(),
                updates(&r.settings),
                r.settings.enable_disk_encryption.to_string(),
            ]
        })
        .collect();
    print_lines(&table(
        &[
            "NAME",
            "DEVICES",
            "PROFILES",
            "MACOS UPDATES",
            "DISK ENCRYPTION",
        ],
        &table_rows,
    ))
}

pub fn profiles(ctx: &Ctx, team: Option<String>) -> anyhow::Result<()> {
    let snap = snapshot(ctx)?;
    let known = match &team {
        Some(t) => snap.teams.iter().any(|x| &x.name == t),
        None => true,
    };
    let profiles: Vec<_> = snap
        .profiles
        .into_iter()
        .filter(|p| team.is_none() || p.team == team)
        .collect();
    if !known {
        let t = team.unwrap_or_default();
        return Err(UserError::new(format!("no team `{t}`"))
            .with_hint("list teams with `mdmctl get teams`")
            .into());
    }
    if ctx.json() {
        return print_json(&profiles);
    }
    let rows: Vec<Vec<String>> = profiles
        .iter()
        .map(|p| {
            vec![
                p.team.clone().unwrap_or_else(|| "(global)".into()),
                p.identifier.clone(),
                p.name.clone(),
                match p.kind {
                    ProfileKind::Profile => "file".to_string(),
                    k => format!("mdmctl:{}", k.as_str()),
                },
                p.sha256[..12].to_string(),
            ]
        })
        .collect();
    if rows.is_empty() {
        eprintln!("no desired profiles");
        return Ok(());
    }
    print_lines(&table(
        &["TEAM", "IDENTIFIER", "NAME", "SOURCE", "SHA-256"],
        &rows,
    ))
}
