//! `mdmctl token create|list|revoke`: bearer tokens for the admin API, each with a role
//! (`admin`, `maintainer`, `observer`, `gitops`) and optionally limited to one team. Only a
//! token's SHA-256 is stored; the token itself is printed once, at creation.

use clap::Subcommand;

use super::Ctx;
use super::output::{print_json, print_lines, table};
use crate::diagnose::UserError;
use crate::store::{NewActivity, Role};

/// The roles as the command line names them.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum RoleArg {
    /// Everything, including one-time SCEP challenges (new identities).
    Admin,
    /// Read, act on devices (commands, pushes, transfers), apply, view FileVault keys and
    /// push credentials (audited).
    Maintainer,
    /// Read devices, commands, profiles and activities; no secrets, no changes.
    Observer,
    /// Apply (and dry-run) configuration only: for CI pipelines.
    Gitops,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Admin => Role::Admin,
            RoleArg::Maintainer => Role::Maintainer,
            RoleArg::Observer => Role::Observer,
            RoleArg::Gitops => Role::Gitops,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token (printed once: keep it in your CI's secret store).
    Create {
        /// A unique name saying who uses it (`ci`, `jamie-laptop`).
        #[arg(long)]
        name: String,
        /// What the token may do: give each user and pipeline the narrowest that works.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Limit the token to one team's devices (a team from `mdmctl apply`).
        #[arg(long, value_name = "NAME")]
        team: Option<String>,
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
        TokenCommand::Create { name, role, team } => {
            let role = Role::from(role);
            let name = name.trim().to_string();
            if name.is_empty() || name.len() > 64 || name.contains(char::is_control) {
                crate::bail_user!("a token name must be 1 to 64 printable characters", hint: "pass e.g. `--name ci`");
            }
            let (token, hash) = crate::secrets::new_credential("mdmctl_")?;
            let created = store.write(|tx| {
                if tx
                    .api_tokens()?
                    .iter()
                    .any(|t| t.name == name && t.revoked_at.is_none())
                {
                    return Ok(Err("name"));
                }
                let team_id = match &team {
                    None => None,
                    Some(t) => match tx.teams()?.into_iter().find(|x| &x.name == t) {
                        Some(x) => Some(x.id),
                        None => return Ok(Err("team")),
                    },
                };
                tx.create_api_token(&name, &hash, &actor, role, team_id)?;
                tx.record_activity(&NewActivity {
                    actor: actor.clone(),
                    kind: "api_token.created".into(),
                    device_id: None,
                    summary: format!(
                        "created API token `{name}` ({}{})",
                        role.as_str(),
                        team.as_deref()
                            .map(|t| format!(", team {t}"))
                            .unwrap_or_default()
                    ),
                    details: serde_json::json!({ "name": name, "role": role, "team": team }),
                })?;
                Ok::<_, crate::store::StoreError>(Ok(()))
            })?;
            if created == Err("team") {
                return Err(
                    UserError::new(format!("no team `{}`", team.unwrap_or_default()))
                        .with_hint(
                            "teams come from `mdmctl apply`; list them with `mdmctl get teams`",
                        )
                        .into(),
                );
            }
            if created.is_err() {
                return Err(
                    UserError::new(format!("a token named `{name}` already exists"))
                        .with_hint(format!(
                            "revoke it first (`mdmctl token revoke {name}`) or pick another name"
                        ))
                        .into(),
                );
            }
            if ctx.json() {
                print_json(&serde_json::json!({
                    "name": name, "role": role, "team": team, "token": token.as_str()
                }))
            } else {
                eprintln!(
                    "Created API token `{name}` (role `{}`{}). It is shown once: store it now (e.g. as MDMCTL_API_TOKEN in your CI secrets).",
                    role.as_str(),
                    team.as_deref()
                        .map(|t| format!(", team `{t}`"))
                        .unwrap_or_default()
                );
                print_lines(&[token.to_string()])
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
                        t.role.as_str().to_string(),
                        t.team.clone().unwrap_or_else(|| "(all)".into()),
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
                &[
                    "NAME",
                    "ROLE",
                    "TEAM",
                    "CREATED",
                    "BY",
                    "LAST USED",
                    "REVOKED",
                ],
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
