//! Writing generated files: all or none, never over an existing file without `--force`,
//! private keys readable by the owner only (0600).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use zeroize::Zeroizing;

use crate::error::UserError;

pub struct OutputFile {
    pub name: String,
    pub bytes: Zeroizing<Vec<u8>>,
    /// Private keys: mode 0600.
    pub private: bool,
    /// What it is, for the summary.
    pub what: &'static str,
}

impl OutputFile {
    pub fn public(name: &str, bytes: Vec<u8>, what: &'static str) -> Self {
        Self {
            name: name.into(),
            bytes: Zeroizing::new(bytes),
            private: false,
            what,
        }
    }

    pub fn private(name: &str, bytes: Zeroizing<Vec<u8>>, what: &'static str) -> Self {
        Self {
            name: name.into(),
            bytes,
            private: true,
            what,
        }
    }
}

/// Refuse early when any target exists and `force` is off (before any other work is saved).
pub fn check_targets(dir: &Path, names: &[&str], force: bool) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    let existing: Vec<String> = names
        .iter()
        .map(|n| dir.join(n))
        .filter(|p| p.exists())
        .map(|p| format!("`{}`", p.display()))
        .collect();
    if !existing.is_empty() {
        return Err(
            UserError::new(format!("{} already exist(s)", existing.join(", ")))
                .with_hint("pass `--force` to overwrite, or `--out DIR` to write elsewhere")
                .into(),
        );
    }
    Ok(())
}

/// Write every file, or none: each goes to a temporary name first, then all are renamed.
pub fn write_all(dir: &Path, files: &[OutputFile], force: bool) -> anyhow::Result<Vec<PathBuf>> {
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    check_targets(dir, &names, force)?;
    fs::create_dir_all(dir).with_context(|| format!("creating `{}`", dir.display()))?;
    let mut staged = Vec::new();
    let result = (|| {
        for f in files {
            let tmp = dir.join(format!(".{}.{}.tmp", f.name, std::process::id()));
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(if f.private { 0o600 } else { 0o644 })
                .open(&tmp)
                .with_context(|| format!("writing `{}`", tmp.display()))?;
            staged.push(tmp.clone());
            file.write_all(&f.bytes)
                .and_then(|_| file.sync_all())
                .with_context(|| format!("writing `{}`", tmp.display()))?;
        }
        Ok::<_, anyhow::Error>(())
    })();
    if let Err(e) = result {
        for t in &staged {
            let _ = fs::remove_file(t);
        }
        return Err(e);
    }
    let mut written = Vec::new();
    for (tmp, f) in staged.iter().zip(files) {
        let target = dir.join(&f.name);
        fs::rename(tmp, &target).with_context(|| format!("writing `{}`", target.display()))?;
        written.push(target);
    }
    Ok(written)
}

/// Read a file an admin named on the command line, saying which flag it came from on failure.
pub fn read_input(path: &Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    fs::read(path).map_err(|e| {
        UserError::new(format!(
            "cannot read `{}` (given to `{flag}`): {e}",
            path.display()
        ))
        .with_hint(format!("check the path given to `{flag}`"))
        .into()
    })
}
