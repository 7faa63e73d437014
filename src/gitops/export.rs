//! Desired state back out as YAML that `mdmctl apply -f` accepts unchanged: one `config`
//! document and one `team` document per team, profiles (and setup-assistant JSON files) named
//! by the absolute path they were applied from.

use std::fmt::Write;

use crate::store::{DesiredProfile, GlobalSettings, Settings, StoreError, Team, Tx};

/// Everything `get config`, `get teams` and `get profiles` show (also `GET /api/v1/config`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub global: Option<GlobalSettings>,
    pub teams: Vec<Team>,
    pub profiles: Vec<DesiredProfile>,
    /// Devices per team (`None`: in no team).
    #[serde(default)]
    pub device_counts: Vec<(Option<String>, i64)>,
}

pub fn snapshot(tx: &mut dyn Tx) -> Result<Snapshot, StoreError> {
    Ok(Snapshot {
        global: tx.global_settings()?,
        teams: tx.teams()?,
        profiles: tx.desired_profiles(None)?,
        device_counts: tx.device_counts_by_team()?,
    })
}

impl Snapshot {
    /// What a token scoped to `team` may see: that team and its profiles, no global settings.
    pub fn only_team(mut self, team: &str) -> Self {
        self.global = None;
        self.teams.retain(|t| t.name == team);
        self.profiles.retain(|p| p.team.as_deref() == Some(team));
        self.device_counts
            .retain(|(t, _)| t.as_deref() == Some(team));
        self
    }
}

/// A YAML scalar: always double-quoted, so versions and dates stay strings.
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

fn mdm(out: &mut String, indent: &str, s: &Settings, profiles: &[&DesiredProfile]) {
    if let (Some(v), Some(d)) = (&s.minimum_version, &s.deadline) {
        let _ = writeln!(out, "{indent}macos_updates:");
        let _ = writeln!(out, "{indent}  minimum_version: {}", q(v));
        let _ = writeln!(out, "{indent}  deadline: {}", q(d));
    }
    if let Some(f) = &s.setup_assistant_source {
        let _ = writeln!(out, "{indent}macos_setup:");
        let _ = writeln!(out, "{indent}  macos_setup_assistant: {}", q(f));
    }
    let _ = writeln!(out, "{indent}macos_settings:");
    let _ = writeln!(
        out,
        "{indent}  enable_disk_encryption: {}",
        s.enable_disk_encryption
    );
    let files: Vec<&str> = profiles
        .iter()
        .filter(|p| !p.managed)
        .filter_map(|p| p.source.as_deref())
        .collect();
    if files.is_empty() {
        let _ = writeln!(out, "{indent}  custom_settings: []");
    } else {
        let _ = writeln!(out, "{indent}  custom_settings:");
        for f in files {
            let _ = writeln!(out, "{indent}    - path: {}", q(f));
        }
    }
}

/// The YAML documents.
pub fn to_yaml(s: &Snapshot) -> String {
    let mut out = String::new();
    let scope = |team: Option<&str>| -> Vec<&DesiredProfile> {
        s.profiles
            .iter()
            .filter(|p| p.team.as_deref() == team)
            .collect()
    };
    if let Some(g) = &s.global {
        out.push_str("apiVersion: v1\nkind: config\nspec:\n  mdm:\n");
        if let Some(t) = &g.apple_bm_default_team {
            let _ = writeln!(out, "    apple_bm_default_team: {}", q(t));
        }
        mdm(&mut out, "    ", &g.settings, &scope(None));
    }
    for t in &s.teams {
        if !out.is_empty() {
            out.push_str("---\n");
        }
        let _ = writeln!(
            out,
            "apiVersion: v1\nkind: team\nspec:\n  team:\n    name: {}\n    mdm:",
            q(&t.name)
        );
        mdm(&mut out, "      ", &t.settings, &scope(Some(&t.name)));
    }
    out
}
