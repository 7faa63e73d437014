//! `mdmctl apply -f PATH…`: validate GitOps YAML, print the plan, and (unless `--dry-run`)
//! apply it in one transaction. The work is in [`crate::gitops`].

use std::path::PathBuf;

use clap::Args;

use super::Ctx;
use super::output::{print_json, print_lines};
use crate::gitops::{self, GitopsError, Issue};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A YAML file or a directory of them (`*.yml`, `*.yaml`); repeat for more. Profile paths
    /// resolve relative to the YAML file naming them; `$VAR` and `${VAR}` come from the
    /// environment.
    #[arg(short = 'f', long = "file", value_name = "PATH", required = true)]
    pub files: Vec<PathBuf>,
    /// Print the plan and exit without writing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Report unknown keys as warnings instead of errors.
    #[arg(long)]
    pub allow_unknown_keys: bool,
}

#[derive(serde::Serialize)]
struct Output<'a> {
    dry_run: bool,
    applied: bool,
    #[serde(flatten)]
    plan: &'a gitops::Plan,
}

pub fn run(ctx: &Ctx, args: ApplyArgs) -> anyhow::Result<()> {
    ctx.local_only("apply")?;
    let env = |name: &str| std::env::var(name).ok();
    let gitops::Loaded {
        config,
        mut issues,
        warnings,
    } = gitops::load(&args.files, args.allow_unknown_keys, &env);
    for w in &warnings {
        ctx.warn(&w.to_string());
    }
    // The checks that need the store join the file checks, so one run reports everything; a
    // store problem only matters once the files are right.
    let store = match ctx.open_store() {
        Ok(s) => s,
        Err(_) if !issues.is_empty() => return Err(report(ctx, issues).into()),
        Err(e) => return Err(e),
    };
    let teams = store.read(|tx| tx.teams())?;
    issues.extend(gitops::check_against_store(
        &config,
        teams.iter().map(|t| t.name.as_str()),
    ));
    if !issues.is_empty() {
        return Err(report(ctx, issues).into());
    }
    let own = gitops::prepare_escrow(store.as_ref(), &config)?;
    let result = if args.dry_run {
        gitops::dry_run(store.as_ref(), &config, &own)
    } else {
        gitops::apply(store.as_ref(), &config, &own, &ctx.actor())
    };
    let plan = match result {
        Ok(p) => p,
        Err(GitopsError::Invalid(issues)) => return Err(report(ctx, issues).into()),
        Err(e) => return Err(e.into()),
    };
    if ctx.json() {
        print_json(&Output {
            dry_run: args.dry_run,
            applied: !args.dry_run && !plan.is_empty(),
            plan: &plan,
        })?;
    } else {
        print_lines(&plan.render())?;
    }
    if args.dry_run && !plan.is_empty() {
        eprintln!("dry run: nothing was written; run without `--dry-run` to apply");
    } else if !args.dry_run && !plan.is_empty() {
        eprintln!("applied: {}", plan.summary().trim_start_matches("plan: "));
    }
    Ok(())
}

/// Every problem on stderr, one per line, then one summary error; with `--format json` also
/// `{"problems": […]}` on stdout for pipelines.
fn report(ctx: &Ctx, issues: Vec<Issue>) -> GitopsError {
    for i in &issues {
        eprintln!("  {i}");
    }
    if ctx.json() {
        let _ = print_json(&serde_json::json!({ "problems": &issues }));
    }
    GitopsError::Invalid(issues)
}
