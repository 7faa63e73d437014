//! Writing generated files: all or none, never over an existing file without `--force`,
//! private keys readable by the owner only (0600).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use zeroize::Zeroizing;

use crate::diagnose::UserError;

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

/// Read a file an admin named on the command line (a regular file of at most
/// [`crate::input::MAX_SMALL`] bytes), saying which flag it came from on failure.
pub fn read_input(path: &Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    crate::input::read_limited(path, crate::input::MAX_SMALL).map_err(|e| {
        let hint = match e {
            crate::input::InputError::Io { .. } => format!("check the path given to `{flag}`"),
            _ => format!(
                "`{flag}` takes a regular file (a certificate, key or token), not a stream or device"
            ),
        };
        UserError::new(format!("{e} (given to `{flag}`)"))
            .with_hint(hint)
            .into()
    })
}

/// The first line of a password file (`--scep-key-password-file` and the like), without its
/// line ending.
pub fn read_secret_file(path: &Path, flag: &str) -> anyhow::Result<Zeroizing<String>> {
    let bytes = Zeroizing::new(read_input(path, flag)?);
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        UserError::new(format!(
            "`{}` (given to `{flag}`) is not UTF-8 text",
            path.display()
        ))
        .with_hint(format!(
            "put the password alone on the first line of the file given to `{flag}`"
        ))
    })?;
    let first = text.lines().next().unwrap_or("");
    Ok(Zeroizing::new(first.to_string()))
}

/// Load a private key from a file an admin named with `flag`. With no password given, an
/// encrypted key is tried with the empty one (micromdm/scep's default); when that fails, or the
/// password is wrong, the hint says how to give it (`password_hint` names the real flag and
/// env var).
pub fn load_key(
    path: &Path,
    flag: &str,
    password: Option<&str>,
    password_hint: &str,
) -> anyhow::Result<openssl::pkey::PKey<openssl::pkey::Private>> {
    let bytes = Zeroizing::new(read_input(path, flag)?);
    crate::pki::load_private_key(&bytes, password).map_err(|e| {
        let shown = path.display();
        match e {
            crate::pki::PkiError::KeyNeedsPassword => UserError::new(format!(
                "reading `{shown}`: the key is encrypted and the empty password does not open it"
            ))
            .with_hint(password_hint.to_string())
            .into(),
            crate::pki::PkiError::WrongKeyPassword => UserError::new(format!(
                "reading `{shown}`: the password given does not decrypt this key"
            ))
            .with_hint(password_hint.to_string())
            .into(),
            other => anyhow::Error::new(other).context(format!("reading `{shown}`")),
        }
    })
}

/// The password of the SCEP CA key a command reads (`import-devices --scep-depot`,
/// `set mdm-apple --scep-key`). Without one the empty password is tried, as micromdm/scep
/// writes `ca.key` unless `-capass` was given.
#[derive(Debug, Default, clap::Args)]
pub struct ScepKeyPassword {
    /// Read the SCEP CA key's password from the first line of FILE (micromdm/scep's `-capass`,
    /// `SCEP_CA_PASS`). Without a password the empty one is tried.
    #[arg(long, value_name = "FILE", conflicts_with = "scep_key_password")]
    pub scep_key_password_file: Option<PathBuf>,
    /// The SCEP CA key's password (prefer the file or the env var: a flag shows in `ps`).
    #[arg(
        long,
        env = "MDMCTL_SCEP_KEY_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub scep_key_password: Option<String>,
}

/// The hint every SCEP CA key password error gives.
pub const SCEP_KEY_PASSWORD_HINT: &str = "give the key's password in a file with `--scep-key-password-file FILE` or in `MDMCTL_SCEP_KEY_PASSWORD` (micromdm/scep's `-capass`)";

impl ScepKeyPassword {
    pub fn get(&self) -> anyhow::Result<Option<Zeroizing<String>>> {
        if let Some(f) = &self.scep_key_password_file {
            return read_secret_file(f, "--scep-key-password-file").map(Some);
        }
        Ok(self.scep_key_password.clone().map(Zeroizing::new))
    }
}

/// A size as flags take it: bytes, or a number with `K`, `M` or `G` (binary: `64M` is 64 MiB).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size (write e.g. `64M`, `512K` or `1G`)"))?;
    let mult: usize = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return Err(format!("`{s}`: the unit must be K, M or G")),
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("`{s}` is not a usable size"))
}
