//! `apply -f` at fleet scale: 200 profiles across 20 teams (plus mdmctl's own FileVault, Nudge
//! and declaration per team) against a store holding 100,000 devices. Times loading and
//! validating the files, the plan (`--dry-run`), the first apply, a no-change re-plan and an
//! apply that changes a tenth of the profiles, on SQLite and PostgreSQL.
//!
//! `cargo bench --bench apply` (PostgreSQL too with `MDMCTL_BENCH_POSTGRES_URL` or
//! `MDMCTL_TEST_POSTGRES_URL`). Targets: plan ≤ 1 s, apply ≤ 2 s on SQLite. Results:
//! docs/benchmarks.md.

use std::path::Path;
use std::time::{Duration, Instant};

use mdmctl::gitops::{self, Config};
use mdmctl::store::{self, Location, NewKey, Store};
use zeroize::Zeroizing;

const DEVICES: usize = 100_000;
const TEAMS: usize = 20;
const PROFILES_PER_TEAM: usize = 10;

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_repo(dir.path(), "A");
    let sqlite = Location::Sqlite(dir.path().join("bench.db"));
    run("sqlite", &sqlite, dir.path(), &|sql| {
        let c = rusqlite::Connection::open(dir.path().join("bench.db")).expect("open");
        c.execute_batch(sql).expect("seed devices");
    });
    let pg_url = std::env::var("MDMCTL_BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("MDMCTL_TEST_POSTGRES_URL"));
    match pg_url {
        Ok(base) => {
            let schema = format!("mdmctl_bench_apply_{}", std::process::id());
            let mut admin = postgres::Client::connect(&base, postgres::NoTls).expect("connect");
            admin
                .batch_execute(&format!("CREATE SCHEMA {schema}"))
                .expect("schema");
            let sep = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
            write_repo(dir.path(), "A");
            run("postgres", &Location::parse(&url), dir.path(), &|sql| {
                let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
                c.batch_execute(sql).expect("seed devices");
            });
            admin
                .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
                .expect("drop");
        }
        Err(_) => eprintln!("postgres: skipped (MDMCTL_BENCH_POSTGRES_URL not set)"),
    }
}

/// 20 team files with 10 profiles each (payloads shaped like real restrictions profiles);
/// `variant` changes every tenth profile's content.
fn write_repo(root: &Path, variant: &str) {
    let repo = root.join("repo");
    std::fs::create_dir_all(repo.join("profiles")).expect("mkdir");
    let mut config = String::from(
        "apiVersion: v1\nkind: config\nspec:\n  mdm:\n    apple_bm_default_team: Team 00\n",
    );
    config.push_str("    macos_updates: {minimum_version: \"15.1\", deadline: \"2026-12-01\"}\n");
    std::fs::write(repo.join("default.yml"), config).expect("write");
    for t in 0..TEAMS {
        let mut yml = format!(
            "apiVersion: v1\nkind: team\nspec:\n  team:\n    name: Team {t:02}\n    mdm:\n      macos_updates: {{minimum_version: \"15.{}\", deadline: \"2027-01-15\"}}\n      macos_settings:\n        enable_disk_encryption: {}\n        custom_settings:\n",
            t % 3,
            t % 2 == 0
        );
        for p in 0..PROFILES_PER_TEAM {
            let id = format!("com.example.t{t:02}.p{p:02}");
            let v = if p == 0 { variant } else { "A" };
            let mut keys = String::new();
            for k in 0..40 {
                keys.push_str(&format!(
                    "\t\t\t<key>setting{k:02}</key>\n\t\t\t<string>value {k} {v}</string>\n"
                ));
            }
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist version=\"1.0\">\n<dict>\n\t<key>PayloadContent</key>\n\t<array>\n\t\t<dict>\n\t\t\t<key>PayloadIdentifier</key>\n\t\t\t<string>{id}.payload</string>\n\t\t\t<key>PayloadType</key>\n\t\t\t<string>com.example.settings</string>\n\t\t\t<key>PayloadUUID</key>\n\t\t\t<string>{id}-p</string>\n\t\t\t<key>PayloadVersion</key>\n\t\t\t<integer>1</integer>\n{keys}\t\t</dict>\n\t</array>\n\t<key>PayloadDisplayName</key>\n\t<string>Team {t} profile {p}</string>\n\t<key>PayloadIdentifier</key>\n\t<string>{id}</string>\n\t<key>PayloadType</key>\n\t<string>Configuration</string>\n\t<key>PayloadUUID</key>\n\t<string>{id}-u</string>\n\t<key>PayloadVersion</key>\n\t<integer>1</integer>\n</dict>\n</plist>\n"
            );
            let file = format!("t{t:02}-p{p:02}.mobileconfig");
            std::fs::write(repo.join("profiles").join(&file), xml).expect("write");
            yml.push_str(&format!("          - path: profiles/{file}\n"));
        }
        std::fs::write(repo.join(format!("team-{t:02}.yml")), yml).expect("write");
    }
}

fn load(root: &Path) -> (Config, Duration) {
    let start = Instant::now();
    let (config, _) = gitops::load_config(&[root.join("repo")], &Default::default(), &|_| None)
        .unwrap_or_else(|issues| panic!("{issues:#?}"));
    (config, start.elapsed())
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn run(name: &str, location: &Location, root: &Path, seed: &dyn Fn(&str)) {
    let (store, _) = store::create(
        location,
        NewKey::Passphrase(Zeroizing::new("benchmark passphrase".into())),
    )
    .expect("create");
    let store: &dyn Store = store.as_ref();
    // The teams first (an apply of team documents without profiles), then 100,000 devices
    // spread over them and the global scope, inserted with one SQL statement.
    let (config, _) = load(root);
    let teams_only = Config {
        global: None,
        teams: config
            .teams
            .iter()
            .map(|t| gitops::ScopeConfig {
                team: t.team.clone(),
                ..Default::default()
            })
            .collect(),
    };
    gitops::apply(store, &teams_only, &Default::default(), "bench").expect("teams");
    let start = Instant::now();
    seed(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last}) \
         INSERT INTO devices (id, serial, source, created_at, updated_at, team_id) \
         SELECT 'DEV-' || i, 'C02' || i, 'imported:bench', 0, 0, \
                CASE WHEN i % {slots} = {teams} THEN NULL ELSE (SELECT MIN(id) FROM teams) + i % {slots} END FROM n",
        last = DEVICES - 1,
        slots = TEAMS + 1,
        teams = TEAMS,
    ));
    let seeded = start.elapsed();

    let (config, load_time) = load(root);
    let start = Instant::now();
    let own = gitops::prepare_escrow(store, &config).expect("escrow");
    let escrow_time = start.elapsed();
    let start = Instant::now();
    let plan = gitops::dry_run(store, &config, &own).expect("plan");
    let plan_time = start.elapsed();
    let start = Instant::now();
    let applied = gitops::apply(store, &config, &own, "bench").expect("apply");
    let apply_time = start.elapsed();
    assert_eq!(plan.changes, applied.changes, "dry run and apply disagree");
    let start = Instant::now();
    let again = gitops::dry_run(store, &config, &own).expect("re-plan");
    let replan_time = start.elapsed();
    assert!(again.is_empty(), "second plan not empty");

    write_repo(root, "B");
    let (changed, _) = load(root);
    let start = Instant::now();
    let p2 = gitops::apply(store, &changed, &own, "bench").expect("apply changes");
    let change_time = start.elapsed();
    write_repo(root, "A");

    let counts = store.read(|tx| tx.device_counts_by_team()).expect("counts");
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    println!(
        "{name}: {total} devices in {} scopes (seeded in {})",
        counts.len(),
        ms(seeded)
    );
    println!(
        "{name}: load + validate {} files, {} profiles: {}",
        TEAMS + 1,
        TEAMS * PROFILES_PER_TEAM,
        ms(load_time)
    );
    println!("{name}: escrow key pair (first need): {}", ms(escrow_time));
    println!(
        "{name}: plan ({} changes, {} to add): {} (target ≤ 1 s)",
        plan.changes.len(),
        plan.add,
        ms(plan_time)
    );
    println!(
        "{name}: apply, one transaction: {} (target ≤ 2 s)",
        ms(apply_time)
    );
    println!("{name}: re-plan, no changes: {}", ms(replan_time));
    println!(
        "{name}: apply changing {} profiles: {}",
        p2.change,
        ms(change_time)
    );
}
