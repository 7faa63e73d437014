//! `mdmctl init`: create a store and the master key that protects its secrets.

use clap::{Args, ValueEnum};

use super::Ctx;
use super::output::{key_values, print_json, print_lines};
use crate::secrets::{KeySource, SecretsError, keyring_status};
use crate::store::{self, NewKey};

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where the master key's protection lives: the OS keyring, or your passphrase. `auto`
    /// uses a passphrase when one is given (`MDMCTL_PASSPHRASE`, `--passphrase-file`), else
    /// the OS keyring when there is one, else prompts for a passphrase.
    #[arg(long, value_enum, default_value_t = KeySourceArg::Auto)]
    pub key_source: KeySourceArg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KeySourceArg {
    Auto,
    Passphrase,
    Keyring,
}

pub fn run(ctx: &Ctx, args: InitArgs) -> anyhow::Result<()> {
    let key = match args.key_source {
        KeySourceArg::Passphrase => NewKey::Passphrase(ctx.new_passphrase()?),
        KeySourceArg::Keyring => {
            keyring_status().map_err(SecretsError::KeyringUnavailable)?;
            NewKey::Keyring
        }
        KeySourceArg::Auto if ctx.passphrase_given() => NewKey::Passphrase(ctx.new_passphrase()?),
        KeySourceArg::Auto if keyring_status().is_ok() => NewKey::Keyring,
        KeySourceArg::Auto => NewKey::Passphrase(ctx.new_passphrase()?),
    };
    let (_store, created) = store::create(&ctx.location, key)?;
    if ctx.json() {
        return print_json(&created);
    }
    let protection = match created.key_source {
        KeySource::Passphrase => {
            "your passphrase (scrypt); keep it safe: without it the store's keys cannot be read"
        }
        KeySource::Keyring => "a key in this user's OS keyring (service `mdmctl`)",
    };
    let mut lines = vec![format!(
        "Created an mdmctl store at `{}`.",
        created.location
    )];
    lines.extend(key_values(
        2,
        &[
            ("backend", format!("{:?}", created.backend).to_lowercase()),
            ("store id", created.store_id.clone()),
            ("schema", created.schema_version.to_string()),
            (
                "secrets",
                format!("encrypted with AES-256-GCM; master key protected by {protection}"),
            ),
        ],
    ));
    lines.push(String::new());
    lines.push("Next: mdmctl generate mdm-apple --email you@example.com --org \"Your Org\"".into());
    print_lines(&lines)
}
