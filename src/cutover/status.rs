//! Where a staged cutover stands (`mdmctl cutover status`, `GET /api/v1/cutover`): devices
//! imported, in the cutover set, migrated, in the set but not seen yet; routed to the old
//! server in the last hour; push failures by reason; identities expiring within 30 days;
//! renewals by state; what waits to be mirrored back; requests refused for their identity by
//! reason; per team; devices Apple Business Manager migrates here by a deadline. Read from the store, so every
//! instance and the CLI see the same figures.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::store::{CutoverSet, MirrorBacklog, StoreError, Tx};
use crate::timestamp::Timestamp;

/// Device counts, for the fleet or a team.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub devices: i64,
    pub imported: i64,
    /// Answered by mdmctl (the cutover set).
    pub in_set: i64,
    /// Seen by mdmctl since the cutover (first authenticated request).
    pub migrated: i64,
    /// Imported, in the set, not seen yet.
    pub waiting: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamCounts {
    /// `None`: devices in no team.
    pub team: Option<String>,
    #[serde(flatten)]
    pub counts: Counts,
}

/// The device in the set that has waited longest: the one the old server saw longest ago.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    pub udid: String,
    pub serial: Option<String>,
    pub last_seen_at: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub reason: String,
    pub count: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renewals {
    /// Renewal profile sent, the new identity not seen yet.
    pub pending: i64,
    pub renewed: i64,
    pub failed: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub at: Timestamp,
    pub set: CutoverSet,
    pub fleet: Counts,
    pub teams: Vec<TeamCounts>,
    pub longest_waiting: Option<Waiting>,
    /// Devices whose requests went to the old server in the last hour.
    pub routed_last_hour: i64,
    pub push_failures: Vec<Reason>,
    pub identities_expiring_30d: i64,
    pub renewals: Renewals,
    pub mirror_back: MirrorBacklog,
    /// Requests refused for their identity, by reason, since each running `serve` started.
    pub refused: Vec<Reason>,
    /// Devices Apple Business Manager is moving to this server (macOS 26 managed device
    /// migration): how many, and the first of them by deadline.
    #[serde(default)]
    pub abm_migrating: i64,
    #[serde(default)]
    pub abm_migrations: Vec<AbmMigration>,
}

/// A device ABM migrates to this server by its deadline (not enrolled here yet).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbmMigration {
    pub serial: String,
    pub deadline: String,
    pub team: Option<String>,
}

/// ABM migrations listed in the status at most.
const ABM_LISTED: usize = 50;

impl Status {
    /// Migrated devices per thousand of the imported ones (the page's progress bar).
    pub fn migrated_permille(&self) -> i64 {
        if self.fleet.imported == 0 {
            return 0;
        }
        self.fleet.migrated * 1000 / self.fleet.imported
    }
}

pub fn read(tx: &mut dyn Tx) -> Result<Status, StoreError> {
    let now = Timestamp::now();
    let set = tx.cutover_set()?;
    let moves: HashMap<String, bool> = tx.cutover_moves()?.into_iter().collect();
    let devices = tx.device_summaries()?;
    let mut fleet = Counts::default();
    let mut teams: BTreeMap<Option<String>, Counts> = BTreeMap::new();
    let mut longest: Option<&crate::store::DeviceSummary> = None;
    let mut expiring = 0;
    for d in &devices {
        let imported = d.source.starts_with("imported");
        let inside = set.contains(&d.id, moves.get(&d.id).copied());
        let migrated = d.migrated_at.is_some();
        let waiting = imported && inside && !migrated;
        for c in [&mut fleet, teams.entry(d.team.clone()).or_default()] {
            c.devices += 1;
            c.imported += i64::from(imported);
            c.in_set += i64::from(inside);
            c.migrated += i64::from(migrated);
            c.waiting += i64::from(waiting);
        }
        // Never seen counts as seen longest ago.
        let seen = |x: &crate::store::DeviceSummary| x.last_seen_at.map_or(i64::MIN, |t| t.0);
        if waiting && longest.is_none_or(|l| seen(d) < seen(l)) {
            longest = Some(d);
        }
        if d.identity_not_after
            .is_some_and(|t| t.0 <= now.0 + 30 * 86_400)
        {
            expiring += 1;
        }
    }
    let mut abm: Vec<AbmMigration> = tx
        .abm_devices(&crate::store::AbmFilter {
            pending_only: true,
            ..Default::default()
        })?
        .into_iter()
        .filter_map(|a| {
            Some(AbmMigration {
                deadline: a.migration_deadline.filter(|d| !d.is_empty())?,
                serial: a.serial,
                team: a.team,
            })
        })
        .collect();
    abm.sort_by(|a, b| a.deadline.cmp(&b.deadline).then(a.serial.cmp(&b.serial)));
    let abm_migrating = abm.len() as i64;
    abm.truncate(ABM_LISTED);
    let mut renewals = Renewals::default();
    for (state, n) in tx.renewal_states()? {
        match state.as_str() {
            "sent" => renewals.pending += n,
            "renewed" => renewals.renewed += n,
            _ => renewals.failed += n,
        }
    }
    Ok(Status {
        at: now,
        set,
        fleet,
        teams: teams
            .into_iter()
            .map(|(team, counts)| TeamCounts { team, counts })
            .collect(),
        longest_waiting: longest.map(|d| Waiting {
            udid: d.id.clone(),
            serial: d.serial.clone(),
            last_seen_at: d.last_seen_at,
        }),
        routed_last_hour: tx.routed_since(Timestamp(now.0 - 3600))?,
        push_failures: tx
            .push_failures()?
            .into_iter()
            .map(|(reason, count)| Reason { reason, count })
            .collect(),
        identities_expiring_30d: expiring,
        renewals,
        mirror_back: tx.mirror_backlog()?,
        // Instances that beat within the last ten minutes.
        refused: tx
            .refusals_since(Timestamp(now.0 - 600))?
            .into_iter()
            .map(|(reason, count)| Reason { reason, count })
            .collect(),
        abm_migrating,
        abm_migrations: abm,
    })
}
