//! mdmctl moves a fleet of Apple devices from one MDM server to another without
//! re-enrollment, and manages it after.
//!
//! # Layout
//! - [`cli`]: one file per subcommand, thin adapters over the modules below.
//! - [`assets`]: the server assets (APNs push certificate, SCEP CAs, Apple Business Manager
//!   keys and token): generating, checking and storing them.
//! - [`gitops`]: `apply -f`: YAML desired state (teams, settings, profiles), validated and planned.
//! - [`import`]: `import-devices`: old MDMs' devices, push certificates and CAs into the store.
//! - [`store`]: everything mdmctl knows, on SQLite or PostgreSQL, behind role traits.
//! - [`secrets`]: the master key and encryption of secrets at rest.
//! - [`pki`]: keys, certificates, CSRs and CMS, on OpenSSL.
//! - [`reconcile`]: profile delivery: desired profiles to InstallProfile/RemoveProfile, verified.
//! - [`server`]: `serve`: the MDM endpoints, SCEP, the admin API, and the background jobs
//!   (one instance runs each when several share a store).
//! - [`metrics`]: the Prometheus figures `serve` exposes on `/metrics`.
//! - [`error`]: how failures reach the user (message, hint, exit code).
//!
//! Arrows point down: `cli` uses everything, `assets` uses `store` and `pki`, `store` uses
//! `secrets`, and `pki` uses nothing of ours.

pub mod abm;
pub mod apple;
pub mod assets;
pub mod cli;
pub mod cutover;
pub mod diagnose;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod gitops;
pub mod import;
pub mod input;
pub mod mdm;
pub mod metrics;
pub mod pki;
pub mod push;
pub mod reconcile;
pub mod secrets;
pub mod server;
pub mod sim;
pub mod store;
pub mod timestamp;
pub mod version;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

/// Run mdmctl with these arguments (the first is the program name).
pub fn run(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<ExitCode> {
    cli::run(args)
}

/// Print an error the way mdmctl promises (one line, then a hint) and pick the exit code.
pub fn report_error(err: &anyhow::Error) -> ExitCode {
    if is_broken_pipe(err) {
        return ExitCode::SUCCESS;
    }
    let d = error::diagnose(err);
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "error: {}", d.message);
    if let Some(hint) = d.hint {
        let _ = writeln!(stderr, "hint: {hint}");
    }
    ExitCode::from(d.exit_code)
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == BrokenPipe)
            // serde_json's error does not chain to the io::Error it wraps (`--format json`).
            || c.downcast_ref::<serde_json::Error>()
                .is_some_and(|e| e.io_error_kind() == Some(BrokenPipe))
    })
}

/// A panic is a bug: say so plainly and exit 2, not Rust's 101.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "error: mdmctl hit a bug: {info}");
        let _ = writeln!(
            stderr,
            "hint: please report it with the command you ran (secrets removed); nothing was half-written: every change runs in a transaction"
        );
        std::process::exit(2);
    }));
}

/// Property tests over the parsers of network and file input (issue 11): random and mutated
/// inputs never panic and bounded parsers stay bounded; valid inputs round-trip.
#[cfg(test)]
pub(crate) mod fuzz {
    /// Cases per property: `MDMCTL_FUZZ_CASES` (10,000 or more for a long run), 256 by default
    /// so `cargo test` stays quick. The long run: `MDMCTL_FUZZ_CASES=10000 cargo test --lib fuzz`.
    pub fn config() -> proptest::test_runner::Config {
        let cases = std::env::var("MDMCTL_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256);
        proptest::test_runner::Config {
            cases,
            // Failures are reported with the shrunk input; nothing is written into the tree.
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        }
    }

    /// `base` with a few bytes flipped, inserted or removed at positions from `edits`.
    pub fn mutate(base: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
        let mut out = base.to_vec();
        for &(at, kind, byte) in edits {
            if out.is_empty() {
                out.push(byte);
                continue;
            }
            let i = at % out.len();
            match kind % 3 {
                0 => out[i] ^= byte | 1,
                1 => out.insert(i, byte),
                _ => {
                    out.remove(i);
                }
            }
        }
        out
    }
}
