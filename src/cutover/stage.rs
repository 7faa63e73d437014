//! Moving devices between the old server and mdmctl during a staged cutover (`mdmctl cutover
//! set`, `cutover rollback`): which devices move is worked out before anything is written,
//! shown alone with `--dry-run`, and otherwise written with an activity entry in the same
//! transaction. A device taken back keeps its queued mdmctl commands (counted in the result);
//! they go out if it moves in again.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::store::{CutoverSet, NewActivity, Store, StoreError, Tx};

/// What an admin asked for (in JSON, as `POST /api/v1/cutover` takes it: `{"percent": 10}`,
/// `{"devices": [...]}`, `{"team": "T"}`, `"all"`, `{"back": [...]}`, `"all_back"`).
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// `cutover set --percent N`.
    Percent(u8),
    /// `cutover set --devices FILE`: UDIDs or serial numbers, resolved.
    Devices(Vec<String>),
    /// `cutover set --team NAME`: the team's devices now.
    Team(String),
    /// `cutover set --all`.
    All,
    /// `cutover rollback --devices FILE`.
    Back(Vec<String>),
    /// `cutover rollback`: every device back on the old server.
    AllBack,
}

/// A change and whether it is a dry run (`POST /api/v1/cutover`).
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ChangeRequest {
    pub change: Change,
    #[serde(default)]
    pub dry_run: bool,
}

/// A device that moves.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Moved {
    pub udid: String,
    pub serial: Option<String>,
    /// Its open mdmctl commands (kept when it goes back).
    pub queued_commands: i64,
}

/// What a change does.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Outcome {
    pub before: CutoverSet,
    pub after: CutoverSet,
    /// Devices now answered by mdmctl that were not.
    pub moved_in: Vec<Moved>,
    /// Devices now forwarded to the old server that were answered by mdmctl.
    pub moved_out: Vec<Moved>,
    /// Devices in the set after the change, of all devices.
    pub in_set: usize,
    pub devices: usize,
    pub dry_run: bool,
    /// The devices the change names (resolved), moved in or taken back whatever the percentage.
    #[serde(skip)]
    named: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("no device `{0}` in the store")]
    UnknownDevice(String),
    #[error("no team `{0}`")]
    UnknownTeam(String),
    #[error("team `{0}` has no devices")]
    EmptyTeam(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl crate::diagnose::Diagnose for StageError {
    fn hint(&self) -> Option<String> {
        match self {
            StageError::UnknownDevice(_) => Some(
                "list UDIDs or serial numbers of imported devices, one per line (`mdmctl get devices`)".into(),
            ),
            StageError::UnknownTeam(_) | StageError::EmptyTeam(_) => {
                Some("see the teams and their devices with `mdmctl get teams` and `mdmctl get devices --team NAME`".into())
            }
            StageError::Store(e) => e.hint(),
        }
    }

    fn unexpected(&self) -> bool {
        matches!(self, StageError::Store(e) if e.unexpected())
    }
}

/// Work out the change and, unless `dry_run`, write it with its activity entry.
pub fn apply(
    store: &dyn Store,
    change: &Change,
    actor: &str,
    dry_run: bool,
) -> Result<Outcome, StageError> {
    let run = |tx: &mut dyn Tx| -> Result<Outcome, StageError> {
        let outcome = plan(tx, change, dry_run)?;
        if !dry_run {
            write(tx, change, &outcome, actor)?;
        }
        Ok(outcome)
    };
    if dry_run {
        store.read(run)
    } else {
        store.write(run)
    }
}

fn plan(tx: &mut dyn Tx, change: &Change, dry_run: bool) -> Result<Outcome, StageError> {
    let before = tx.cutover_set()?;
    let moves: HashMap<String, bool> = tx.cutover_moves()?.into_iter().collect();
    let devices = tx.device_summaries()?;
    let queued: HashMap<String, i64> = tx.open_commands_per_device()?.into_iter().collect();
    let resolve = |tx: &mut dyn Tx, ids: &[String]| -> Result<Vec<String>, StageError> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for id in ids {
            match tx.device(id)? {
                Some(d) => {
                    if seen.insert(d.id.clone()) {
                        out.push(d.id);
                    }
                }
                None => return Err(StageError::UnknownDevice(id.clone())),
            }
        }
        Ok(out)
    };
    let mut after = before;
    let mut after_moves = moves.clone();
    let mut named = Vec::new();
    match change {
        Change::Percent(p) => after.percent = (*p).min(100),
        Change::All => after.all = true,
        Change::Devices(ids) => {
            named = resolve(tx, ids)?;
            for d in &named {
                after_moves.insert(d.clone(), true);
            }
        }
        Change::Team(name) => {
            if !tx.teams()?.iter().any(|t| &t.name == name) {
                return Err(StageError::UnknownTeam(name.clone()));
            }
            let members: Vec<&str> = devices
                .iter()
                .filter(|d| d.team.as_deref() == Some(name.as_str()))
                .map(|d| d.id.as_str())
                .collect();
            if members.is_empty() {
                return Err(StageError::EmptyTeam(name.clone()));
            }
            for d in members {
                after_moves.insert(d.to_string(), true);
                named.push(d.to_string());
            }
        }
        Change::Back(ids) => {
            named = resolve(tx, ids)?;
            for d in &named {
                after_moves.insert(d.clone(), false);
            }
        }
        Change::AllBack => {
            after = CutoverSet::default();
            after_moves.clear();
        }
    }
    let moved = |d: &crate::store::DeviceSummary| Moved {
        udid: d.id.clone(),
        serial: d.serial.clone(),
        queued_commands: queued.get(&d.id).copied().unwrap_or(0),
    };
    let mut moved_in = Vec::new();
    let mut moved_out = Vec::new();
    let mut in_set = 0;
    for d in &devices {
        let was = before.contains(&d.id, moves.get(&d.id).copied());
        let is = after.contains(&d.id, after_moves.get(&d.id).copied());
        in_set += usize::from(is);
        match (was, is) {
            (false, true) => moved_in.push(moved(d)),
            (true, false) => moved_out.push(moved(d)),
            _ => {}
        }
    }
    Ok(Outcome {
        before,
        after,
        moved_in,
        moved_out,
        in_set,
        devices: devices.len(),
        dry_run,
        named,
    })
}

fn write(tx: &mut dyn Tx, change: &Change, o: &Outcome, actor: &str) -> Result<(), StageError> {
    let ids = |v: &[Moved]| v.iter().map(|m| m.udid.clone()).collect::<Vec<_>>();
    let (kind, what) = match change {
        Change::Percent(p) => {
            tx.set_cutover_set(&o.after)?;
            ("cutover.set", format!("{p} % of devices"))
        }
        Change::All => {
            tx.set_cutover_set(&o.after)?;
            ("cutover.set", "every device".to_string())
        }
        Change::Devices(_) | Change::Team(_) => {
            tx.set_cutover_moves(&o.named, true)?;
            (
                "cutover.set",
                match change {
                    Change::Team(name) => format!("team `{name}` ({} devices)", o.named.len()),
                    _ => format!("{} listed device(s)", o.named.len()),
                },
            )
        }
        Change::Back(_) => {
            tx.set_cutover_moves(&o.named, false)?;
            (
                "cutover.rollback",
                format!("{} listed device(s)", o.named.len()),
            )
        }
        Change::AllBack => {
            tx.set_cutover_set(&o.after)?;
            tx.clear_cutover_moves()?;
            ("cutover.rollback", "every device".to_string())
        }
    };
    let kept: i64 = o.moved_out.iter().map(|m| m.queued_commands).sum();
    tx.record_activity(&NewActivity {
        actor: actor.to_string(),
        kind: kind.into(),
        device_id: None,
        summary: format!(
            "{}: {what}; {} moved to mdmctl, {} back to the old server ({kept} queued mdmctl command(s) kept); {} of {} devices answered by mdmctl",
            if kind == "cutover.set" { "cutover set" } else { "cutover rollback" },
            o.moved_in.len(),
            o.moved_out.len(),
            o.in_set,
            o.devices
        ),
        details: serde_json::json!({
            "before": o.before, "after": o.after,
            "moved_in": ids(&o.moved_in), "moved_out": ids(&o.moved_out),
            "queued_commands_kept": kept,
        }),
    })?;
    Ok(())
}
