//! What build this is: the crate version, the git commit and the build date (`build.rs`), for
//! `mdmctl version`, `--version`, `GET /api/v1/version` and the `--server` mismatch warning.
//! (The name `mdmctl` is also MicroMDM's command line, whose `version` prints MicroMDM's v1.x
//! release: this output tells them apart.)

use serde::{Deserialize, Serialize};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = env!("BUILD_GIT_COMMIT");
pub const BUILD_DATE: &str = env!("BUILD_DATE_UTC");
/// `--version`'s text.
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BUILD_GIT_COMMIT"),
    ", built ",
    env!("BUILD_DATE_UTC"),
    ")"
);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: String,
    pub commit: String,
    pub build_date: String,
}

impl VersionInfo {
    pub fn current() -> Self {
        Self {
            version: VERSION.into(),
            commit: COMMIT.into(),
            build_date: BUILD_DATE.into(),
        }
    }

    /// Same version and commit (the date alone may differ between two builds of one commit).
    pub fn same_build(&self, other: &Self) -> bool {
        self.version == other.version && self.commit == other.commit
    }
}

impl std::fmt::Display for VersionInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (commit {}, built {})",
            self.version, self.commit, self.build_date
        )
    }
}
