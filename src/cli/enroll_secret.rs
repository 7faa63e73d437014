//! `mdmctl enroll-secret create|list|revoke`: the secrets `/enroll` asks for. A secret is printed
//! once, at creation (with the link to give users); only its SHA-256 is stored. A secret may put
//! the devices it enrolls in a team, expire, and be limited to one device (whose re-enrollment
//! may then move its identity).

use clap::Subcommand;

use super::Ctx;
use super::output::{print_json, print_lines, table};
use crate::diagnose::UserError;
use crate::store::{NewActivity, StoreError};
use crate::timestamp::Timestamp;

#[derive(Debug, Subcommand)]
pub enum EnrollSecretCommand {
    /// Create a secret (printed once, with the enrollment link).
    Create {
        /// A unique name saying what it is for (`office-2026`, `lab`).
        #[arg(long)]
        name: String,
        /// Devices enrolled with it join this team (a team from `mdmctl apply`).
        #[arg(long, value_name = "NAME")]
        team: Option<String>,
        /// Only this device (UDID or serial of a device the store knows) may use it; its
        /// re-enrollment with it moves the device to its new identity.
        #[arg(long, value_name = "UDID|SERIAL")]
        device: Option<String>,
        /// Stop accepting it after this many days.
        #[arg(long, value_name = "DAYS")]
        expires_in_days: Option<u32>,
        /// The server's URL (`serve --url`), to print the whole enrollment link.
        #[arg(long, env = "MDMCTL_URL", value_name = "URL")]
        url: Option<String>,
    },
    /// List secrets (names, teams, dates; never the secrets).
    List,
    /// Revoke a secret by name: `/enroll` refuses it from then on.
    Revoke { name: String },
}

pub fn run(ctx: &Ctx, cmd: EnrollSecretCommand) -> anyhow::Result<()> {
    ctx.local_only("mdmctl enroll-secret")?;
    let store = ctx.open_store()?;
    let actor = ctx.actor();
    match cmd {
        EnrollSecretCommand::Create {
            name,
            team,
            device,
            expires_in_days,
            url,
        } => {
            let name = name.trim().to_string();
            if name.is_empty() || name.len() > 64 || name.contains(char::is_control) {
                crate::bail_user!("a secret's name must be 1 to 64 printable characters", hint: "pass e.g. `--name office`");
            }
            let (secret, hash) = crate::secrets::new_credential("mdmctl_enroll_")?;
            let expires = expires_in_days.map(|d| Timestamp::now().plus_days(i64::from(d)));
            let created = store.write(|tx| -> Result<Result<Option<String>, UserError>, StoreError> {
                if tx
                    .enroll_secrets()?
                    .iter()
                    .any(|s| s.name == name && s.revoked_at.is_none())
                {
                    return Ok(Err(UserError::new(format!(
                        "an enrollment secret named `{name}` already exists"
                    ))
                    .with_hint(format!(
                        "revoke it first (`mdmctl enroll-secret revoke {name}`) or pick another name"
                    ))));
                }
                let team_id = match &team {
                    None => None,
                    Some(t) => match tx.teams()?.into_iter().find(|x| &x.name == t) {
                        Some(x) => Some(x.id),
                        None => {
                            return Ok(Err(UserError::new(format!("no team `{t}`")).with_hint(
                                "teams come from `mdmctl apply`; list them with `mdmctl get teams`",
                            )));
                        }
                    },
                };
                let device_id = match &device {
                    None => None,
                    Some(d) => match tx.device(d)? {
                        Some(found) => Some(found.id),
                        None => {
                            return Ok(Err(UserError::new(format!("no device `{d}`"))
                                .with_hint("name a device the store knows by UDID or serial (`mdmctl get devices`)")));
                        }
                    },
                };
                tx.create_enroll_secret(
                    &name,
                    &hash,
                    team_id,
                    device_id.as_deref(),
                    expires,
                    &actor,
                )?;
                tx.record_activity(&NewActivity {
                    actor: actor.clone(),
                    kind: "enroll_secret.created".into(),
                    device_id: device_id.clone(),
                    summary: format!(
                        "created enrollment secret `{name}`{}{}",
                        team.as_deref().map(|t| format!(" for team {t}")).unwrap_or_default(),
                        device_id
                            .as_deref()
                            .map(|d| format!(" for device {d}"))
                            .unwrap_or_default()
                    ),
                    details: serde_json::json!({
                        "name": name, "team": team, "device": device_id, "expires_at": expires,
                    }),
                })?;
                Ok(Ok(device_id))
            })??;
            let link = url.as_deref().map(|u| {
                format!(
                    "{}/enroll?token={}",
                    u.trim_end_matches('/'),
                    secret.as_str()
                )
            });
            if ctx.json() {
                return print_json(&serde_json::json!({
                    "name": name, "team": team, "device": created, "expires_at": expires,
                    "secret": secret.as_str(), "link": link,
                }));
            }
            eprintln!(
                "Created enrollment secret `{name}`. It is shown once: give users the link {}, or the secret as the password when `/enroll` asks (any user name).",
                link.as_deref().unwrap_or(
                    "`https://YOUR-SERVER/enroll?token=SECRET` (`--url` prints it whole)"
                )
            );
            print_lines(&[secret.to_string()])
        }
        EnrollSecretCommand::List => {
            let secrets = store.read(|tx| tx.enroll_secrets())?;
            if ctx.json() {
                return print_json(&secrets);
            }
            let rows: Vec<Vec<String>> = secrets
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.team.clone().unwrap_or_else(|| "(none)".into()),
                        s.device_id.clone().unwrap_or_default(),
                        s.created_at.date(),
                        s.expires_at
                            .map(|e| e.date())
                            .unwrap_or_else(|| "never".into()),
                        s.last_used_at
                            .map(|l| l.to_string())
                            .unwrap_or_else(|| "never".into()),
                        s.revoked_at.map(|r| r.date()).unwrap_or_default(),
                    ]
                })
                .collect();
            print_lines(&table(
                &[
                    "NAME",
                    "TEAM",
                    "DEVICE",
                    "CREATED",
                    "EXPIRES",
                    "LAST USED",
                    "REVOKED",
                ],
                &rows,
            ))
        }
        EnrollSecretCommand::Revoke { name } => {
            let done = store.write(|tx| {
                let ok = tx.revoke_enroll_secret(&name)?;
                if ok {
                    tx.record_activity(&NewActivity {
                        actor: actor.clone(),
                        kind: "enroll_secret.revoked".into(),
                        device_id: None,
                        summary: format!("revoked enrollment secret `{name}`"),
                        details: serde_json::json!({ "name": name }),
                    })?;
                }
                Ok::<_, StoreError>(ok)
            })?;
            if !done {
                return Err(
                    UserError::new(format!("no live enrollment secret named `{name}`"))
                        .with_hint("see `mdmctl enroll-secret list`")
                        .into(),
                );
            }
            if ctx.json() {
                print_json(&serde_json::json!({ "revoked": name }))
            } else {
                print_lines(&[format!("Revoked `{name}`.")])
            }
        }
    }
}
