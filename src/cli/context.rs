//! What every command needs: where the store is, how to get its passphrase, whether it may
//! prompt, who is acting (for the activity log), and how to print.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use zeroize::Zeroizing;

use super::GlobalArgs;
use super::output::Format;
use crate::secrets::{KeyProvider, MIN_PASSPHRASE_LEN, SecretsError};
use crate::store::{self, Location, Store, StoreError};

pub struct Ctx {
    pub location: Location,
    pub format: Format,
    pub server: Option<String>,
    passphrase_file: Option<PathBuf>,
    no_input: bool,
    /// The server's version was compared with ours (once a run).
    version_checked: std::cell::Cell<bool>,
}

impl Ctx {
    pub fn new(global: &GlobalArgs) -> Self {
        Self {
            location: Location::parse(&global.db),
            format: global.format,
            server: global.server.clone(),
            passphrase_file: global.passphrase_file.clone(),
            no_input: global.no_input,
            version_checked: std::cell::Cell::new(false),
        }
    }

    /// Prompts are allowed only on a terminal, and never with `--no-input`.
    pub fn interactive(&self) -> bool {
        !self.no_input && std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
    }

    pub fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// Open the store (it must exist).
    pub fn open_store(&self) -> anyhow::Result<Arc<dyn Store>> {
        store::open(&self.location, Box::new(self.key_provider())).context("opening the store")
    }

    /// Open the store if there is one; `None` when `--db` points at nothing yet.
    pub fn open_store_if_any(&self) -> anyhow::Result<Option<Arc<dyn Store>>> {
        match store::open(&self.location, Box::new(self.key_provider())) {
            Ok(s) => Ok(Some(s)),
            Err(StoreError::NotInitialized { .. }) => Ok(None),
            Err(e) => Err(anyhow::Error::new(e).context("opening the store")),
        }
    }

    pub fn key_provider(&self) -> CliKeys {
        CliKeys {
            file: self.passphrase_file.clone(),
            interactive: self.interactive(),
            location: self.location.to_string(),
        }
    }

    /// Whether the user supplied a passphrase without being asked.
    pub fn passphrase_given(&self) -> bool {
        self.passphrase_file.is_some() || std::env::var_os("MDMCTL_PASSPHRASE").is_some()
    }

    /// The passphrase for a new store: file, env, or a prompt typed twice.
    pub fn new_passphrase(&self) -> Result<Zeroizing<String>, SecretsError> {
        let keys = self.key_provider();
        if let Some(p) = keys.given()? {
            return Ok(p);
        }
        if !keys.interactive {
            return Err(SecretsError::NoPassphrase);
        }
        let p = dialoguer::Password::new()
            .with_prompt(format!(
                "New passphrase for the store `{}` (at least {MIN_PASSPHRASE_LEN} characters)",
                self.location
            ))
            .with_confirmation("Repeat it", "the passphrases do not match")
            .interact()
            .map_err(|_| SecretsError::NoPassphrase)?;
        Ok(Zeroizing::new(p))
    }

    /// Who is acting, for the activity log: `user@host`.
    pub fn actor(&self) -> String {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        format!("{user}@{host}")
    }

    /// The admin API client when `--server` / `MDMCTL_SERVER` is set.
    /// The admin API client with `--server`; the first time in a run, the server's version is
    /// compared with this build's and a difference is a warning.
    pub fn remote(&self) -> anyhow::Result<Option<crate::mdm::api::ApiClient>> {
        let api = self.remote_unchecked()?;
        if let Some(api) = &api
            && !self.version_checked.replace(true)
            && let Ok(theirs) = api.version()
        {
            let ours = crate::version::VersionInfo::current();
            if !theirs.same_build(&ours) {
                self.warn(&format!(
                    "the server runs mdmctl {theirs}, this is {ours}; `mdmctl version --server …` compares them"
                ));
            }
        }
        Ok(api)
    }

    /// [`Self::remote`] without the version comparison.
    pub fn remote_unchecked(&self) -> anyhow::Result<Option<crate::mdm::api::ApiClient>> {
        let Some(url) = &self.server else {
            return Ok(None);
        };
        let token = std::env::var("MDMCTL_API_TOKEN").map_err(|_| {
            crate::diagnose::UserError::new(format!("`--server {url}` needs an API token"))
                .with_hint("set `MDMCTL_API_TOKEN` to a token from `mdmctl token create --name NAME --role maintainer` (run on the server's store)")
        })?;
        Ok(Some(crate::mdm::api::ApiClient::new(
            url,
            Zeroizing::new(token),
        )?))
    }

    /// Refuse `--server` for commands that only work on a local store.
    pub fn local_only(&self, what: &str) -> anyhow::Result<()> {
        if self.server.is_some() {
            crate::bail_user!(
                format!("`{what}` works on a local store, not through `--server`"),
                hint: "run it where the store is (`--db`), without `--server` / `MDMCTL_SERVER`"
            );
        }
        Ok(())
    }

    /// The push service for commands run on a local store (APNs settings from
    /// `MDMCTL_APNS_URL` and `MDMCTL_APNS_CA_FILE`, as for `serve`).
    pub fn local_pushes(&self, store: Arc<dyn Store>) -> anyhow::Result<crate::push::PushService> {
        use crate::push::ApnsConfig;
        let url = std::env::var("MDMCTL_APNS_URL").ok();
        let mut config = match std::env::var_os("MDMCTL_APNS_CA_FILE") {
            Some(f) => {
                let bytes = std::fs::read(&f).with_context(|| {
                    format!("reading `MDMCTL_APNS_CA_FILE` ({})", f.to_string_lossy())
                })?;
                ApnsConfig::local(
                    url.clone().unwrap_or_default(),
                    crate::pki::parse_certs(&bytes)?,
                )
            }
            None => ApnsConfig::production(),
        };
        if let Some(u) = url {
            config.base_url = u.trim_end_matches('/').to_string();
        }
        Ok(crate::push::PushService::new(store, config))
    }

    /// A warning on stderr.
    pub fn warn(&self, message: &str) {
        eprintln!("warning: {message}");
    }

    /// Ask for a value on a terminal; `None` when prompts are not allowed.
    pub fn ask(&self, prompt: &str) -> anyhow::Result<Option<String>> {
        if !self.interactive() {
            return Ok(None);
        }
        let v: String = dialoguer::Input::new()
            .with_prompt(prompt)
            .interact_text()?;
        Ok(Some(v))
    }
}

/// The passphrase, from `--passphrase-file`, `MDMCTL_PASSPHRASE`, or a prompt.
pub struct CliKeys {
    file: Option<PathBuf>,
    interactive: bool,
    location: String,
}

impl CliKeys {
    fn given(&self) -> Result<Option<Zeroizing<String>>, SecretsError> {
        if let Some(path) = &self.file {
            let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                SecretsError::PassphraseFile {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                }
            })?);
            let line = text.lines().next().unwrap_or("");
            return Ok(Some(Zeroizing::new(line.to_string())));
        }
        if let Ok(p) = std::env::var("MDMCTL_PASSPHRASE") {
            return Ok(Some(Zeroizing::new(p)));
        }
        Ok(None)
    }
}

impl KeyProvider for CliKeys {
    fn passphrase(&self) -> Result<Zeroizing<String>, SecretsError> {
        if let Some(p) = self.given()? {
            return Ok(p);
        }
        if !self.interactive {
            return Err(SecretsError::NoPassphrase);
        }
        dialoguer::Password::new()
            .with_prompt(format!("Passphrase for the store `{}`", self.location))
            .interact()
            .map(Zeroizing::new)
            .map_err(|_| SecretsError::NoPassphrase)
    }
}
