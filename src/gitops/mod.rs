//! GitOps: `mdmctl apply -f` turns YAML documents (a global `config`, `team`s) and the
//! `.mobileconfig` files they name into desired state in the store.
//!
//! Owns: reading and validating the YAML ([`load`], [`validate`]), the plan (a pure diff of the
//! validated config against the store's desired state, [`plan`]), applying that same plan in one
//! transaction ([`apply`]), and writing desired state back out as YAML ([`export`]). The profile
//! checks and mdmctl's own profiles live in [`crate::apple::profile`]. Delivering desired state
//! to devices is the reconciler's job, not this module's. Must not import the CLI or the server.

pub mod apply;
pub mod export;
pub mod load;
pub mod plan;
pub mod validate;

use std::fmt;
use std::path::Path;

pub use apply::{Applied, OwnInputs, apply, dry_run, prepare_escrow, run};
pub use export::{Snapshot, snapshot, to_yaml};
pub use load::Loc;
pub use plan::{Change, Plan, plan};
pub use validate::{
    Bundle, Config, Disk, Files, LoadOptions, Loaded, ScopeConfig, check_against_store, load,
    load_config, load_with,
};

/// Prefix of the identifiers of mdmctl's own profiles; refused in the admin's profiles.
pub const RESERVED_PREFIX: &str = "com.mdmctl.";

/// One problem in the configuration: where, in which document and key, what is wrong and what
/// is expected.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Issue {
    #[serde(flatten)]
    pub loc: Option<Loc>,
    /// Document and key path: `team Workstations › mdm.macos_updates.deadline`.
    pub context: String,
    pub message: String,
    pub expected: String,
}

impl Issue {
    pub fn at(loc: Loc, context: &str, message: &str, expected: &str) -> Self {
        Self {
            loc: Some(loc),
            context: context.to_string(),
            message: message.to_string(),
            expected: expected.to_string(),
        }
    }

    pub fn at_file(file: &Path, message: &str, expected: &str) -> Self {
        Self::at(
            Loc {
                file: file.to_path_buf(),
                line: 0,
                column: 0,
            },
            "",
            message,
            expected,
        )
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = &self.loc {
            write!(f, "{l}: ")?;
        }
        if !self.context.is_empty() {
            write!(f, "{}: ", self.context)?;
        }
        write!(f, "{}", self.message)?;
        if !self.expected.is_empty() {
            write!(f, " (expected {})", self.expected)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GitopsError {
    /// Every problem found; the CLI prints them all, one per line, before this summary.
    #[error("{} in the configuration; nothing was applied", count(.0.len()))]
    Invalid(Vec<Issue>),
    #[error("building mdmctl's profiles: {0}")]
    Build(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

fn count(n: usize) -> String {
    if n == 1 {
        "1 problem".into()
    } else {
        format!("{n} problems")
    }
}

impl crate::diagnose::Diagnose for GitopsError {
    fn hint(&self) -> Option<String> {
        match self {
            GitopsError::Invalid(_) => Some(
                "fix the problems listed above (each names its file, line and key) and run `mdmctl apply -f` again; `--dry-run` checks without writing".into(),
            ),
            GitopsError::Store(e) => crate::diagnose::Diagnose::hint(e),
            GitopsError::Build(_) => None,
        }
    }

    fn unexpected(&self) -> bool {
        match self {
            GitopsError::Build(_) => true,
            GitopsError::Store(e) => crate::diagnose::Diagnose::unexpected(e),
            GitopsError::Invalid(_) => false,
        }
    }
}

pub use crate::diagnose::did_you_mean;

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(openssl::sha::sha256(bytes))
}
