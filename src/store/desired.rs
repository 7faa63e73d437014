//! Desired state, as `mdmctl apply -f` leaves it: teams and their settings, the global settings
//! (devices in no team), the profiles each scope should have, and which team a device is in.
//!
//! A scope is `None` (global) or `Some(team name)`. Profiles keep their exact bytes and SHA-256
//! so the reconciler can install them and verify them against a device's ProfileList.

use serde::{Deserialize, Serialize};

use super::StoreError;
use super::sql::{Row, Val, marks};
use super::tx::SqlTx;
use crate::timestamp::Timestamp;

/// Settings a scope (the global config, or one team) carries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Lowest macOS version allowed (`15.1`); with `deadline`.
    pub minimum_version: Option<String>,
    /// `YYYY-MM-DD`: the date by which devices must run `minimum_version`.
    pub deadline: Option<String>,
    pub enable_disk_encryption: bool,
    /// The Apple Business Manager enrollment profile the scope's new devices get
    /// (`mdm.macos_setup.macos_setup_assistant`), as canonical JSON (`abm::profile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_assistant: Option<String>,
    /// The file it was applied from (for `get config --format yaml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_assistant_source: Option<String>,
}

/// The global settings: the settings of devices in no team, and where ABM devices land.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalSettings {
    #[serde(flatten)]
    pub settings: Settings,
    pub apple_bm_default_team: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Team {
    pub id: i64,
    pub name: String,
    #[serde(flatten)]
    pub settings: Settings,
}

/// What a desired profile is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileKind {
    /// A `.mobileconfig` from the admin's repository.
    Profile,
    /// mdmctl's FileVault profile (`enable_disk_encryption`).
    FileVault,
    /// mdmctl's Nudge profile (`macos_updates`, macOS before 14).
    Nudge,
    /// mdmctl's software-update enforcement declaration (`macos_updates`, macOS 14 and later);
    /// the content is the declaration's JSON.
    Ddm,
}

impl ProfileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileKind::Profile => "profile",
            ProfileKind::FileVault => "filevault",
            ProfileKind::Nudge => "nudge",
            ProfileKind::Ddm => "ddm",
        }
    }

    pub fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "profile" => ProfileKind::Profile,
            "filevault" => ProfileKind::FileVault,
            "nudge" => ProfileKind::Nudge,
            "ddm" => ProfileKind::Ddm,
            other => {
                return Err(StoreError::Decode(format!(
                    "unknown profile kind `{other}`"
                )));
            }
        })
    }
}

/// A profile a scope should have.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredProfile {
    /// `None`: global (devices in no team).
    pub team: Option<String>,
    /// `PayloadIdentifier` (or the declaration's `Identifier`).
    pub identifier: String,
    /// `PayloadDisplayName`.
    pub name: String,
    pub kind: ProfileKind,
    /// Built by mdmctl from settings (not from a file).
    pub managed: bool,
    #[serde(skip)]
    pub content: Vec<u8>,
    /// Lowercase hex SHA-256 of `content`.
    pub sha256: String,
    /// The file it came from (absolute), for admin profiles.
    pub source: Option<String>,
}

pub trait DesiredState {
    /// The global settings, or `None` before the first apply of a `config` document.
    fn global_settings(&mut self) -> Result<Option<GlobalSettings>, StoreError>;
    fn set_global_settings(&mut self, settings: &GlobalSettings) -> Result<(), StoreError>;
    /// All teams, by name.
    fn teams(&mut self) -> Result<Vec<Team>, StoreError>;
    /// Create a team or replace its settings; returns its ID.
    fn put_team(&mut self, name: &str, settings: &Settings) -> Result<i64, StoreError>;
    /// Desired profiles (with content), global first then by team name, then identifier.
    /// `scope`: `None` for all, `Some(None)` for the global ones, `Some(Some(team))` for a team's.
    fn desired_profiles(
        &mut self,
        scope: Option<Option<&str>>,
    ) -> Result<Vec<DesiredProfile>, StoreError>;
    /// Insert or replace the profile with this scope and identifier. The team must exist.
    fn put_desired_profile(&mut self, profile: &DesiredProfile) -> Result<(), StoreError>;
    /// Remove a profile from desired state; true if it was there.
    fn delete_desired_profile(
        &mut self,
        team: Option<&str>,
        identifier: &str,
    ) -> Result<bool, StoreError>;
    /// How many devices each scope holds: `(None, n)` is devices in no team. Scopes without
    /// devices are left out.
    fn device_counts_by_team(&mut self) -> Result<Vec<(Option<String>, i64)>, StoreError>;
    /// Move a device into a team (`None`: no team), marking it for reconciliation. False if
    /// there is no such device; a missing team is a [`StoreError::Conflict`].
    fn set_device_team(&mut self, device_id: &str, team: Option<&str>) -> Result<bool, StoreError>;
    /// The team a device is in.
    fn device_team(&mut self, device_id: &str) -> Result<Option<String>, StoreError>;
    /// The profiles a device should have: its team's, or the global ones when it is in no
    /// team (what the reconciler compares with the device's ProfileList). Empty for an unknown
    /// device.
    fn device_desired_profiles(
        &mut self,
        device_id: &str,
    ) -> Result<Vec<DesiredProfile>, StoreError>;
    /// [`DesiredState::device_desired_profiles`] for many devices, reading each scope's
    /// profiles once: `(device, its profiles)` for the devices that exist.
    fn devices_desired_profiles(
        &mut self,
        device_ids: &[String],
    ) -> Result<Vec<(String, Vec<DesiredProfile>)>, StoreError>;
}

const PROFILE_COLUMNS: &str =
    "t.name, p.identifier, p.name, p.kind, p.managed, p.content, p.sha256, p.source";

fn profile_from_row(r: &Row) -> Result<DesiredProfile, StoreError> {
    Ok(DesiredProfile {
        team: r.opt_text(0)?,
        identifier: r.text(1)?,
        name: r.text(2)?,
        kind: ProfileKind::parse(&r.text(3)?)?,
        managed: r.bool(4)?,
        content: r.opt_blob(5)?.unwrap_or_default(),
        sha256: r.text(6)?,
        source: r.opt_text(7)?,
    })
}

fn settings_from_row(r: &Row, at: usize) -> Result<Settings, StoreError> {
    Ok(Settings {
        minimum_version: r.opt_text(at)?,
        deadline: r.opt_text(at + 1)?,
        enable_disk_encryption: r.bool(at + 2)?,
        setup_assistant: r.opt_text(at + 3)?,
        setup_assistant_source: r.opt_text(at + 4)?,
    })
}

impl SqlTx<'_> {
    fn team_id(&mut self, name: &str) -> Result<i64, StoreError> {
        match self
            .conn
            .query_opt("SELECT id FROM teams WHERE name = ?", &[name.into()])?
        {
            Some(r) => r.int(0),
            None => Err(StoreError::Conflict(format!("no team `{name}`"))),
        }
    }
}

impl DesiredState for SqlTx<'_> {
    fn global_settings(&mut self) -> Result<Option<GlobalSettings>, StoreError> {
        let row = self.conn.query_opt(
            "SELECT minimum_version, deadline, enable_disk_encryption, setup_assistant, setup_assistant_source, apple_bm_default_team FROM global_settings WHERE id = 1",
            &[],
        )?;
        row.map(|r| {
            Ok(GlobalSettings {
                settings: settings_from_row(&r, 0)?,
                apple_bm_default_team: r.opt_text(5)?,
            })
        })
        .transpose()
    }

    fn set_global_settings(&mut self, g: &GlobalSettings) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO global_settings (id, minimum_version, deadline, enable_disk_encryption, setup_assistant, setup_assistant_source, apple_bm_default_team, updated_at) \
             VALUES (1, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET minimum_version = excluded.minimum_version, \
             deadline = excluded.deadline, enable_disk_encryption = excluded.enable_disk_encryption, \
             setup_assistant = excluded.setup_assistant, setup_assistant_source = excluded.setup_assistant_source, \
             apple_bm_default_team = excluded.apple_bm_default_team, updated_at = excluded.updated_at",
            &[
                g.settings.minimum_version.as_deref().into(),
                g.settings.deadline.as_deref().into(),
                g.settings.enable_disk_encryption.into(),
                g.settings.setup_assistant.as_deref().into(),
                g.settings.setup_assistant_source.as_deref().into(),
                g.apple_bm_default_team.as_deref().into(),
                Timestamp::now().into(),
            ],
        )?;
        Ok(())
    }

    fn teams(&mut self) -> Result<Vec<Team>, StoreError> {
        self.conn
            .query(
                "SELECT id, name, minimum_version, deadline, enable_disk_encryption, setup_assistant, setup_assistant_source FROM teams ORDER BY name",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(Team {
                    id: r.int(0)?,
                    name: r.text(1)?,
                    settings: settings_from_row(r, 2)?,
                })
            })
            .collect()
    }

    fn put_team(&mut self, name: &str, s: &Settings) -> Result<i64, StoreError> {
        let now = Timestamp::now();
        self.conn
            .query_one(
                "INSERT INTO teams (name, minimum_version, deadline, enable_disk_encryption, setup_assistant, setup_assistant_source, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET minimum_version = excluded.minimum_version, \
                 deadline = excluded.deadline, enable_disk_encryption = excluded.enable_disk_encryption, \
                 setup_assistant = excluded.setup_assistant, setup_assistant_source = excluded.setup_assistant_source, \
                 updated_at = excluded.updated_at RETURNING id",
                &[
                    name.into(),
                    s.minimum_version.as_deref().into(),
                    s.deadline.as_deref().into(),
                    s.enable_disk_encryption.into(),
                    s.setup_assistant.as_deref().into(),
                    s.setup_assistant_source.as_deref().into(),
                    now.into(),
                    now.into(),
                ],
            )?
            .int(0)
    }

    fn desired_profiles(
        &mut self,
        scope: Option<Option<&str>>,
    ) -> Result<Vec<DesiredProfile>, StoreError> {
        let mut sql = format!(
            "SELECT {PROFILE_COLUMNS} FROM desired_profiles p LEFT JOIN teams t ON t.id = p.team_id"
        );
        let mut params: Vec<Val<'_>> = Vec::new();
        match scope {
            None => {}
            Some(None) => sql.push_str(" WHERE p.team_id IS NULL"),
            Some(Some(team)) => {
                sql.push_str(" WHERE t.name = ?");
                params.push(team.into());
            }
        }
        // Global (no team) first: `t.name IS NOT NULL` is false (0) for them.
        sql.push_str(" ORDER BY (t.name IS NOT NULL), t.name, p.identifier");
        self.conn
            .query(&sql, &params)?
            .iter()
            .map(profile_from_row)
            .collect()
    }

    fn put_desired_profile(&mut self, p: &DesiredProfile) -> Result<(), StoreError> {
        let team_id = p.team.as_deref().map(|t| self.team_id(t)).transpose()?;
        let now = Timestamp::now();
        let changed = self.conn.execute(
            "UPDATE desired_profiles SET name = ?, kind = ?, managed = ?, content = ?, sha256 = ?, source = ?, updated_at = ? \
             WHERE COALESCE(team_id, 0) = ? AND identifier = ?",
            &[
                p.name.as_str().into(),
                p.kind.as_str().into(),
                p.managed.into(),
                p.content.as_slice().into(),
                p.sha256.as_str().into(),
                p.source.as_deref().into(),
                now.into(),
                team_id.unwrap_or(0).into(),
                p.identifier.as_str().into(),
            ],
        )?;
        if changed == 0 {
            self.conn.execute(
                "INSERT INTO desired_profiles (team_id, identifier, name, kind, managed, content, sha256, source, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                &[
                    team_id.into(),
                    p.identifier.as_str().into(),
                    p.name.as_str().into(),
                    p.kind.as_str().into(),
                    p.managed.into(),
                    p.content.as_slice().into(),
                    p.sha256.as_str().into(),
                    p.source.as_deref().into(),
                    now.into(),
                    now.into(),
                ],
            )?;
        }
        Ok(())
    }

    fn delete_desired_profile(
        &mut self,
        team: Option<&str>,
        identifier: &str,
    ) -> Result<bool, StoreError> {
        let team_id = match team {
            Some(t) => match self
                .conn
                .query_opt("SELECT id FROM teams WHERE name = ?", &[t.into()])?
            {
                Some(r) => r.int(0)?,
                None => return Ok(false),
            },
            None => 0,
        };
        Ok(self.conn.execute(
            "DELETE FROM desired_profiles WHERE COALESCE(team_id, 0) = ? AND identifier = ?",
            &[team_id.into(), identifier.into()],
        )? > 0)
    }

    fn device_counts_by_team(&mut self) -> Result<Vec<(Option<String>, i64)>, StoreError> {
        // Count per team ID first (the `devices_team` index), then name the teams.
        self.conn
            .query(
                "SELECT t.name, c.n FROM (SELECT team_id, COUNT(*) AS n FROM devices GROUP BY team_id) c \
                 LEFT JOIN teams t ON t.id = c.team_id ORDER BY (t.name IS NOT NULL), t.name",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.opt_text(0)?, r.int(1)?)))
            .collect()
    }

    fn set_device_team(&mut self, device_id: &str, team: Option<&str>) -> Result<bool, StoreError> {
        let team_id = team.map(|t| self.team_id(t)).transpose()?;
        let moved = self.conn.execute(
            "UPDATE devices SET team_id = ?, updated_at = ? WHERE id = ?",
            &[team_id.into(), Timestamp::now().into(), device_id.into()],
        )? > 0;
        if moved {
            // Its desired profiles changed: the reconciler installs the new scope's and
            // removes the old one's.
            super::ProfileStatus::mark_dirty(self, &[device_id.to_string()])?;
        }
        Ok(moved)
    }

    fn device_team(&mut self, device_id: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_opt(
                "SELECT t.name FROM devices d JOIN teams t ON t.id = d.team_id WHERE d.id = ?",
                &[device_id.into()],
            )?
            .map(|r| r.text(0))
            .transpose()
    }

    fn device_desired_profiles(
        &mut self,
        device_id: &str,
    ) -> Result<Vec<DesiredProfile>, StoreError> {
        Ok(self
            .devices_desired_profiles(std::slice::from_ref(&device_id.to_string()))?
            .pop()
            .map(|(_, p)| p)
            .unwrap_or_default())
    }

    fn devices_desired_profiles(
        &mut self,
        device_ids: &[String],
    ) -> Result<Vec<(String, Vec<DesiredProfile>)>, StoreError> {
        let mut scopes: Vec<(String, i64)> = Vec::with_capacity(device_ids.len());
        for chunk in device_ids.chunks(500) {
            let marks = marks(chunk.len());
            let params: Vec<Val<'_>> = chunk.iter().map(|id| Val::Text(id)).collect();
            for r in self.conn.query(
                &format!("SELECT id, team_id FROM devices WHERE id IN ({marks})"),
                &params,
            )? {
                scopes.push((r.text(0)?, r.opt_int(1)?.unwrap_or(0)));
            }
        }
        let mut by_scope: std::collections::BTreeMap<i64, Vec<DesiredProfile>> =
            std::collections::BTreeMap::new();
        for (_, team_id) in &scopes {
            if by_scope.contains_key(team_id) {
                continue;
            }
            let profiles = self
                .conn
                .query(
                    &format!(
                        "SELECT {PROFILE_COLUMNS} FROM desired_profiles p LEFT JOIN teams t ON t.id = p.team_id \
                         WHERE COALESCE(p.team_id, 0) = ? ORDER BY p.identifier"
                    ),
                    &[(*team_id).into()],
                )?
                .iter()
                .map(profile_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            by_scope.insert(*team_id, profiles);
        }
        Ok(scopes
            .into_iter()
            .map(|(id, team_id)| {
                let p = by_scope.get(&team_id).cloned().unwrap_or_default();
                (id, p)
            })
            .collect())
    }
}
