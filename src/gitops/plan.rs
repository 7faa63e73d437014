//! The plan: what applying a validated [`Config`] would change in desired state, like a
//! terraform plan. A pure function of the config, mdmctl's own-profile inputs and the store's
//! current desired state ([`Current`]), so `--dry-run` and the real run cannot disagree.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::validate::{Config, ScopeConfig};
use serde_json::{Value, json};

use super::{GitopsError, OwnInputs, sha256_hex};
use crate::apple::profile;
use crate::store::{DesiredProfile, GlobalSettings, ProfileKind, Settings, StoreError, Tx};

/// The store's desired state, as the plan needs it.
#[derive(Clone, Debug, Default)]
pub struct Current {
    pub global: Option<GlobalSettings>,
    pub teams: BTreeMap<String, Settings>,
    pub profiles: BTreeMap<(Option<String>, String), DesiredProfile>,
    /// Devices per scope (`None`: no team).
    pub devices: HashMap<Option<String>, i64>,
}

impl Current {
    pub fn read(tx: &mut dyn Tx) -> Result<Self, StoreError> {
        Ok(Self {
            global: tx.global_settings()?,
            teams: tx
                .teams()?
                .into_iter()
                .map(|t| (t.name, t.settings))
                .collect(),
            profiles: tx
                .desired_profiles(None)?
                .into_iter()
                .map(|p| ((p.team.clone(), p.identifier.clone()), p))
                .collect(),
            devices: tx.device_counts_by_team()?.into_iter().collect(),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Add,
    Change,
    Remove,
}

impl Action {
    fn sign(self) -> char {
        match self {
            Action::Add => '+',
            Action::Change => '~',
            Action::Remove => '-',
        }
    }
}

/// One line of the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub action: Action,
    /// `team`, `setting` or `profile`.
    pub object: &'static str,
    /// The team name, the setting's key path, or the profile identifier.
    pub name: String,
    /// `None`: the global scope (devices in no team).
    pub team: Option<String>,
    /// What changes: `content changed`, `"15.1" → "15.2"`, …
    pub detail: Option<String>,
    /// The value before and after, as data (`null`: unset or absent): a setting's value, a
    /// team's settings, a profile's `{name, sha256}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<serde_json::Value>,
    /// Devices the change reaches.
    pub devices: i64,
}

impl Change {
    pub fn render(&self) -> String {
        let scope = match &self.team {
            Some(t) => format!("team {t}"),
            None => "global".into(),
        };
        let mut s = match self.object {
            "team" => format!("{} team {}", self.action.sign(), self.name),
            _ => format!(
                "{} {} {} ({scope})",
                self.action.sign(),
                self.object,
                self.name
            ),
        };
        match (self.object, &self.detail) {
            ("setting", Some(d)) => s.push_str(&format!(": {d}")),
            (_, Some(d)) => s.push_str(&format!(" ({d})")),
            _ => {}
        }
        if self.object != "team" {
            let n = self.devices;
            s.push_str(&format!("  [{n} device{}]", if n == 1 { "" } else { "s" }));
        }
        s
    }
}

/// The whole plan, and what to write.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub add: usize,
    pub change: usize,
    pub remove: usize,
    #[serde(skip)]
    pub(crate) global: Option<GlobalSettings>,
    #[serde(skip)]
    pub(crate) teams: Vec<(String, Settings)>,
    #[serde(skip)]
    pub(crate) put: Vec<DesiredProfile>,
    #[serde(skip)]
    pub(crate) delete: Vec<(Option<String>, String)>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The plan for people: one line per change, then a summary.
    pub fn render(&self) -> Vec<String> {
        if self.is_empty() {
            return vec!["no changes: desired state already matches the files".into()];
        }
        let mut lines: Vec<String> = self.changes.iter().map(Change::render).collect();
        lines.push(String::new());
        lines.push(self.summary());
        lines
    }

    pub fn summary(&self) -> String {
        format!(
            "plan: {} to add, {} to change, {} to remove",
            self.add, self.change, self.remove
        )
    }
}

/// Every desired profile of one scope: the admin's files and mdmctl's own, by identifier.
fn desired_profiles(
    scope: &ScopeConfig,
    own: &OwnInputs,
) -> Result<BTreeMap<String, DesiredProfile>, GitopsError> {
    let team = scope.team.clone();
    let mut out = BTreeMap::new();
    for p in &scope.profiles {
        out.insert(
            p.parsed.identifier.clone(),
            DesiredProfile {
                team: team.clone(),
                identifier: p.parsed.identifier.clone(),
                name: p.parsed.display_name.clone(),
                kind: ProfileKind::Profile,
                managed: false,
                sha256: sha256_hex(&p.content),
                content: p.content.clone(),
                source: Some(p.path.display().to_string()),
            },
        );
    }
    let mut own_profile = |id: &str, name: &str, kind: ProfileKind, content: Vec<u8>| {
        out.insert(
            id.to_string(),
            DesiredProfile {
                team: team.clone(),
                identifier: id.to_string(),
                name: name.to_string(),
                kind,
                managed: true,
                sha256: sha256_hex(&content),
                content,
                source: None,
            },
        );
    };
    if scope.settings.enable_disk_encryption {
        let cert = own.escrow_cert_der.as_deref().ok_or_else(|| {
            GitopsError::Build("no FileVault escrow certificate was prepared".into())
        })?;
        own_profile(
            profile::FILEVAULT_ID,
            "Disk encryption (FileVault)",
            ProfileKind::FileVault,
            profile::filevault_profile(cert),
        );
    }
    if let (Some(v), Some(d)) = (&scope.settings.minimum_version, &scope.settings.deadline) {
        let nudge = profile::nudge_profile(v, d)
            .ok_or_else(|| GitopsError::Build(format!("deadline `{d}` is not a date")))?;
        own_profile(
            profile::NUDGE_ID,
            "macOS update reminders (Nudge)",
            ProfileKind::Nudge,
            nudge,
        );
        own_profile(
            profile::SOFTWARE_UPDATE_ID,
            "macOS update enforcement (declarative)",
            ProfileKind::Ddm,
            profile::software_update_declaration(v, d),
        );
    }
    Ok(out)
}

fn quoted(v: &Option<String>) -> String {
    v.as_ref()
        .map_or_else(|| "unset".to_string(), |s| format!("\"{s}\""))
}

fn setting_changes(
    team: &Option<String>,
    old: &Settings,
    new: &Settings,
    devices: i64,
    out: &mut Vec<Change>,
) {
    let mut push = |name: &str, from: String, to: String, before: Value, after: Value| {
        if from != to {
            out.push(Change {
                action: Action::Change,
                object: "setting",
                name: name.into(),
                team: team.clone(),
                detail: Some(format!("{from} → {to}")),
                before: Some(before),
                after: Some(after),
                devices,
            });
        }
    };
    push(
        "mdm.macos_updates.minimum_version",
        quoted(&old.minimum_version),
        quoted(&new.minimum_version),
        json!(old.minimum_version),
        json!(new.minimum_version),
    );
    push(
        "mdm.macos_updates.deadline",
        quoted(&old.deadline),
        quoted(&new.deadline),
        json!(old.deadline),
        json!(new.deadline),
    );
    push(
        "mdm.macos_settings.enable_disk_encryption",
        old.enable_disk_encryption.to_string(),
        new.enable_disk_encryption.to_string(),
        json!(old.enable_disk_encryption),
        json!(new.enable_disk_encryption),
    );
    let setup = |v: &Option<String>| match v {
        None => "unset".to_string(),
        Some(json) => format!("sha256 {}", &sha256_hex(json.as_bytes())[..12]),
    };
    let setup_json = |v: &Option<String>| match v {
        None => Value::Null,
        Some(json) => serde_json::from_str(json).unwrap_or(Value::Null),
    };
    push(
        "mdm.macos_setup.macos_setup_assistant",
        setup(&old.setup_assistant),
        setup(&new.setup_assistant),
        setup_json(&old.setup_assistant),
        setup_json(&new.setup_assistant),
    );
}

/// Diff `config` against `current`. Problems that need the store (a default team that will not
/// exist) are reported like validation problems.
pub fn plan(config: &Config, own: &OwnInputs, current: &Current) -> Result<Plan, GitopsError> {
    let mut plan = Plan::default();
    let devices = |team: &Option<String>| current.devices.get(team).copied().unwrap_or(0);

    let issues =
        super::validate::check_against_store(config, current.teams.keys().map(String::as_str));
    if !issues.is_empty() {
        return Err(GitopsError::Invalid(issues));
    }

    // Settings.
    if let Some(g) = &config.global {
        let new = GlobalSettings {
            settings: g.settings.clone(),
            apple_bm_default_team: g.apple_bm_default_team.clone(),
        };
        let old = current.global.clone().unwrap_or_default();
        setting_changes(
            &None,
            &old.settings,
            &new.settings,
            devices(&None),
            &mut plan.changes,
        );
        if old.apple_bm_default_team != new.apple_bm_default_team {
            plan.changes.push(Change {
                action: Action::Change,
                object: "setting",
                name: "mdm.apple_bm_default_team".into(),
                team: None,
                detail: Some(format!(
                    "{} → {}",
                    quoted(&old.apple_bm_default_team),
                    quoted(&new.apple_bm_default_team)
                )),
                before: Some(json!(old.apple_bm_default_team)),
                after: Some(json!(new.apple_bm_default_team)),
                devices: 0,
            });
        }
        if current.global.as_ref() != Some(&new) {
            plan.global = Some(new);
        }
    }
    for t in &config.teams {
        let name = t.team.clone().unwrap_or_default();
        let team = Some(name.clone());
        match current.teams.get(&name) {
            None => {
                let updates = match (&t.settings.minimum_version, &t.settings.deadline) {
                    (Some(v), Some(d)) => format!("macOS {v} by {d}"),
                    _ => "no macOS update deadline".into(),
                };
                let fv = if t.settings.enable_disk_encryption {
                    "disk encryption on"
                } else {
                    "disk encryption off"
                };
                plan.changes.push(Change {
                    action: Action::Add,
                    object: "team",
                    name: name.clone(),
                    team: team.clone(),
                    detail: Some(format!("{updates}, {fv}")),
                    before: Some(Value::Null),
                    after: Some(json!(t.settings)),
                    devices: 0,
                });
                plan.teams.push((name, t.settings.clone()));
            }
            Some(old) => {
                setting_changes(&team, old, &t.settings, devices(&team), &mut plan.changes);
                if *old != t.settings {
                    plan.teams.push((name, t.settings.clone()));
                }
            }
        }
    }

    // Profiles, scope by scope: a scope in the files is replaced whole.
    for scope in config.global.iter().chain(&config.teams) {
        let team = scope.team.clone();
        let n = devices(&team);
        let want = desired_profiles(scope, own)?;
        for (id, p) in &want {
            match current.profiles.get(&(team.clone(), id.clone())) {
                None => {
                    plan.changes.push(Change {
                        action: Action::Add,
                        object: "profile",
                        name: id.clone(),
                        team: team.clone(),
                        detail: None,
                        before: Some(Value::Null),
                        after: Some(json!({ "name": p.name, "sha256": p.sha256 })),
                        devices: n,
                    });
                    plan.put.push(p.clone());
                }
                Some(old) if old.sha256 != p.sha256 || old.name != p.name => {
                    let detail = if old.sha256 != p.sha256 {
                        "content changed".to_string()
                    } else {
                        format!("renamed `{}` → `{}`", old.name, p.name)
                    };
                    plan.changes.push(Change {
                        action: Action::Change,
                        object: "profile",
                        name: id.clone(),
                        team: team.clone(),
                        detail: Some(detail),
                        before: Some(json!({ "name": old.name, "sha256": old.sha256 })),
                        after: Some(json!({ "name": p.name, "sha256": p.sha256 })),
                        devices: n,
                    });
                    plan.put.push(p.clone());
                }
                // Same bytes; only where it was read from may differ (kept up to date quietly).
                Some(old) if old.source != p.source || old.kind != p.kind => {
                    plan.put.push(p.clone())
                }
                Some(_) => {}
            }
        }
        for ((t, id), _) in current.profiles.range((team.clone(), String::new())..) {
            if *t != team {
                break;
            }
            if !want.contains_key(id) {
                let old = current.profiles.get(&(team.clone(), id.clone()));
                plan.changes.push(Change {
                    action: Action::Remove,
                    object: "profile",
                    name: id.clone(),
                    team: team.clone(),
                    detail: None,
                    before: old.map(|o| json!({ "name": o.name, "sha256": o.sha256 })),
                    after: Some(Value::Null),
                    devices: n,
                });
                plan.delete.push((team.clone(), id.clone()));
            }
        }
    }
    for c in &plan.changes {
        match c.action {
            Action::Add => plan.add += 1,
            Action::Change => plan.change += 1,
            Action::Remove => plan.remove += 1,
        }
    }
    Ok(plan)
}
