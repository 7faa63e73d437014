//! `mdmctl apply -f PATH…`: validate GitOps YAML, print the plan, and (unless `--dry-run`)
//! apply it in one transaction. The work is in [`crate::gitops`].

use std::path::PathBuf;
use std::process::ExitCode;

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
    /// With `--dry-run`, say by the exit code whether anything would change, as terraform
    /// does: 0 no changes, 2 changes pending, 1 an error.
    #[arg(long, requires = "dry_run")]
    pub detailed_exitcode: bool,
    /// Report unknown keys as warnings instead of errors.
    #[arg(long)]
    pub allow_unknown_keys: bool,
    /// The largest profile read (units K, M, G); a larger one is a problem naming it.
    #[arg(long, value_name = "SIZE", default_value = "8M", value_parser = super::files::parse_size)]
    pub max_profile_size: usize,
    /// Read profiles outside the repository (paths with `..`, absolute paths, symlinks leading
    /// out of it). Off by default: a pull request must not make `apply` read the runner's files.
    #[arg(long)]
    pub allow_outside_repo: bool,
}

impl ApplyArgs {
    fn options(&self) -> gitops::LoadOptions {
        gitops::LoadOptions {
            allow_unknown_keys: self.allow_unknown_keys,
            max_profile_size: self.max_profile_size as u64,
            allow_outside_repo: self.allow_outside_repo,
        }
    }
}

pub fn run(ctx: &Ctx, args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let env = |name: &str| std::env::var(name).ok();
    if let Some(api) = ctx.remote()? {
        return remote(ctx, &api, &args, &env);
    }
    let loaded = gitops::load(&args.files, &args.options(), &env);
    for w in &loaded.warnings {
        ctx.warn(&w.to_string());
    }
    // The checks that need the store join the file checks, so one run reports everything; a
    // store problem only matters once the files are right.
    let store = match ctx.open_store() {
        Ok(s) => s,
        Err(_) if !loaded.issues.is_empty() => return Err(report(ctx, loaded.issues).into()),
        Err(e) => return Err(e),
    };
    let done = match gitops::run(store.as_ref(), loaded, args.dry_run, &ctx.actor()) {
        Ok(d) => d,
        Err(GitopsError::Invalid(issues)) => return Err(report(ctx, issues).into()),
        Err(e) => return Err(e.into()),
    };
    if ctx.json() {
        print_json(&done)?;
    } else {
        print_lines(&done.plan.render())?;
    }
    Ok(finish(&args, !done.plan.is_empty(), &done.plan.summary()))
}

/// Validate here (nothing is sent when the files have problems), then let the server validate
/// the same bytes against its store, plan and apply.
fn remote(
    ctx: &Ctx,
    api: &crate::mdm::api::ApiClient,
    args: &ApplyArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<ExitCode> {
    let (loaded, bundle) = gitops::Bundle::record(&args.files, &args.options(), env);
    for w in &loaded.warnings {
        ctx.warn(&w.to_string());
    }
    if !loaded.issues.is_empty() {
        return Err(report(ctx, loaded.issues).into());
    }
    let req = crate::mdm::api::ApplyRequest {
        bundle,
        dry_run: args.dry_run,
    };
    let answer = match api.apply(&req) {
        Ok(a) => a,
        Err(crate::mdm::api::ApiClientError::Api {
            status: 422,
            problems,
            error,
            hint,
        }) => {
            for p in &problems {
                eprintln!("  {p}");
            }
            if ctx.json() {
                let _ = print_json(&serde_json::json!({ "problems": problems }));
            }
            let mut e = crate::diagnose::UserError::new(error);
            if let Some(h) = hint {
                e = e.with_hint(h);
            }
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    if ctx.json() {
        print_json(&answer.result)?;
    } else {
        print_lines(&answer.rendered)?;
    }
    let changed = answer.result["changes"]
        .as_array()
        .is_some_and(|c| !c.is_empty());
    Ok(finish(args, changed, &answer.summary))
}

/// Say what happened; the exit code (2 for pending changes with `--detailed-exitcode`).
fn finish(args: &ApplyArgs, changed: bool, summary: &str) -> ExitCode {
    if args.dry_run && changed {
        eprintln!("dry run: nothing was written; run without `--dry-run` to apply");
    } else if !args.dry_run && changed {
        eprintln!("applied: {}", summary.trim_start_matches("plan: "));
    }
    if args.detailed_exitcode && changed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
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
