//! `mdmctl token create|list|revoke`: bearer tokens for the admin API. Only a token's SHA-256 is
//! stored; the token itself is printed once, at creation.

use clap::Subcommand;

use super::Ctx;
use super::output::{print_json, print_lines, table};
use crate::error::UserError;
use crate::store::NewActivity;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token (printed once: keep it in your CI's secret store).
    Create {
        /// A unique name saying who uses it (`ci`, `jamie-laptop`).
        #[arg(long)]
        name: String,
    },
    /// List tokens (names and dates, never the tokens).
    List,
    /// Revoke a token by name; requests with it are refused from then on.
    Revoke { name: String },
}

pub fn run(ctx: &Ctx, cmd: TokenCommand) -> anyhow::Result<()> {
    ctx.local_only("mdmctl token")?;
    let store = ctx.open_store()?;
    let actor = ctx.actor();
    match cmd {
        TokenCommand::Create { name } => {
            let name = name.trim().to_string();
            if name.is_empty() || name.len() > 64 || name.contains(char::is_control) {
                crate::bail_user!("a token name must be 1 to 64 printable characters", hint: "pass e.g. `--name ci`");
            }
            let mut raw = [0u8; 32];
            openssl::rand::rand_bytes(&mut raw)?;
            let token = format!("mdmctl_{}", hex::encode(raw));
            let hash = hex::encode(openssl::sha::sha256(token.as_bytes()));
            let created = store.write(|tx| {
                if tx
                    .api_tokens()?
                    .iter()
                    .any(|t| t.name == name && t.revoked_at.is_none())
                {
                    return Ok(None);
                }
                tx.create_api_token(&name, &hash, &actor)?;
                tx.record_activity(&NewActivity {
                    actor: actor.clone(),
                    kind: "api_token.created".into(),
                    device_id: None,
                    summary: format!("created API token `{name}`"),
                    details: serde_json::json!({ "name": name }),
                })?;
                Ok::<_, crate::store::StoreError>(Some(()))
            })?;
            if created.is_none() {
                return Err(
                    UserError::new(format!("a token named `{name}` already exists"))
                        .with_hint(format!(
                            "revoke it first (`mdmctl token revoke {name}`) or pick another name"
                        ))
                        .into(),
                );
            }
            if ctx.json() {
                print_json(&serde_json::json!({ "name": name, "token": token }))
            } else {
                eprintln!(
                    "Created API token `{name}`. It is shown once: store it now (e.g. as MDMCTL_API_TOKEN in your CI secrets)."
                );
                print_lines(&[token])
            }
        }
        TokenCommand::List => {
            let tokens = store.read(|tx| tx.api_tokens())?;
            if ctx.json() {
                return print_json(&tokens);
            }
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        t.created_at.date(),
                        t.created_by.clone(),
                        t.last_used_at
                            .map(|l| l.to_string())
                            .unwrap_or_else(|| "never".into()),
                        t.revoked_at.map(|r| r.date()).unwrap_or_default(),
                    ]
                })
                .collect();
            print_lines(&table(
                &["NAME", "CREATED", "BY", "LAST USED", "REVOKED"],
                &rows,
            ))
        }
        TokenCommand::Revoke { name } => {
            let done = store.write(|tx| {
                let ok = tx.revoke_api_token(&name)?;
                if ok {
                    tx.record_activity(&NewActivity {
                        actor: actor.clone(),
                        kind: "api_token.revoked".into(),
                        device_id: None,
                        summary: format!("revoked API token `{name}`"),
                        details: serde_json::json!({ "name": name }),
                    })?;
                }
                Ok::<_, crate::store::StoreError>(ok)
            })?;
            if !done {
                return Err(UserError::new(format!("no live token named `{name}`"))
                    .with_hint("see `mdmctl token list`")
                    .into());
            }
            if ctx.json() {
                print_json(&serde_json::json!({ "revoked": name }))
            } else {
                print_lines(&[format!("Revoked `{name}`.")])
            }
        }
    }
}
