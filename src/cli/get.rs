//! `mdmctl get …`: show what the store holds.

use clap::Subcommand;

use super::Ctx;
#[path = "get_desired.rs"]
mod desired;
use super::output::{key_values, print_json, print_lines, table};
use crate::assets::abm::{abm_status, expiry_warning};
use crate::assets::apns::mdm_apple_status;
use crate::assets::{AssetError, WARN_DAYS};
use crate::error::UserError;

#[derive(Debug, Subcommand)]
pub enum GetCommand {
    /// The APNs push certificate (topic, expiry) and the SCEP CAs.
    MdmApple,
    /// The Apple Business Manager key pair and server token.
    MdmAppleBm,
    /// Commands sent to a device, or one command's status on every device.
    Commands {
        /// A device (UDID or serial number).
        #[arg(long, value_name = "UDID|SERIAL", required_unless_present = "command")]
        udid: Option<String>,
        /// A command UUID.
        #[arg(long, value_name = "UUID", conflicts_with = "udid")]
        command: Option<String>,
        /// How many of a device's most recent commands.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Desired state from `mdmctl apply`: global settings and teams (`--format yaml` gives
    /// YAML that `apply -f` accepts back).
    Config,
    /// Teams, their settings and how many devices and profiles each has.
    Teams,
    /// Desired profiles (the admin's and mdmctl's own), global and per team.
    Profiles {
        /// Only this team's profiles.
        #[arg(long, value_name = "NAME")]
        team: Option<String>,
    },
}

pub fn run(ctx: &Ctx, cmd: GetCommand) -> anyhow::Result<()> {
    match cmd {
        GetCommand::MdmApple => mdm_apple(ctx),
        GetCommand::MdmAppleBm => mdm_apple_bm(ctx),
        GetCommand::Commands {
            udid,
            command,
            limit,
        } => commands(ctx, udid, command, limit),
        GetCommand::Config => desired::config(ctx),
        GetCommand::Teams => desired::teams(ctx),
        GetCommand::Profiles { team } => desired::profiles(ctx, team),
    }
}

const RENEW_HINT: &str = "renew at https://identity.apple.com with the same Apple ID: choose Renew (not Create) so the topic stays the same, then `mdmctl set mdm-apple --apns-cert FILE`";

fn mdm_apple(ctx: &Ctx) -> anyhow::Result<()> {
    let store = ctx.open_store()?;
    let status = store.read(|tx| mdm_apple_status(tx))?;
    if ctx.json() {
        print_json(&status)?;
    } else {
        let mut lines = Vec::new();
        match &status.apns {
            Some(a) => {
                lines.push("APNs push certificate".to_string());
                lines.extend(key_values(
                    2,
                    &[
                        ("topic", a.cert.topic.clone().unwrap_or_default()),
                        ("serial", a.cert.serial.clone()),
                        ("issuer", a.cert.issuer.clone()),
                        ("renew by", a.renew_by.to_string()),
                        ("days left", a.days_left.to_string()),
                    ],
                ));
            }
            None => lines.push("APNs push certificate: none".to_string()),
        }
        if let Some(t) = status.pending_csr_since {
            lines.push(format!(
                "  (a push CSR generated on {} is waiting for Apple's certificate)",
                t.date()
            ));
        }
        lines.push(String::new());
        lines.push("SCEP CAs".to_string());
        if status.scep_cas.is_empty() {
            lines.push("  none".into());
        } else {
            let rows: Vec<Vec<String>> = status
                .scep_cas
                .iter()
                .map(|c| {
                    vec![
                        c.state.as_str().to_string(),
                        c.cert.subject.clone(),
                        c.cert.not_after.date(),
                        c.source.clone(),
                        c.cert.sha256[..16].to_string(),
                    ]
                })
                .collect();
            lines.extend(
                table(
                    &["STATE", "SUBJECT", "NOT AFTER", "SOURCE", "SHA-256"],
                    &rows,
                )
                .into_iter()
                .map(|l| format!("  {l}")),
            );
        }
        if !status.device_topics.is_empty() {
            lines.push(String::new());
            lines.push("Device topics".to_string());
            for t in &status.device_topics {
                lines.push(format!("  {}  {} enrollments", t.topic, t.enrollments));
            }
        }
        print_lines(&lines)?;
    }
    let Some(apns) = &status.apns else {
        return Err(UserError::new("no APNs push certificate in the store")
            .with_hint("generate a CSR with `mdmctl generate mdm-apple`, get it signed at https://identity.apple.com, then `mdmctl set mdm-apple --apns-cert FILE`")
            .into());
    };
    if apns.expired {
        return Err(UserError::new(format!(
            "the APNs push certificate expired on {}: devices cannot be woken",
            apns.renew_by.date()
        ))
        .with_hint(RENEW_HINT)
        .into());
    }
    if apns.days_left < WARN_DAYS {
        ctx.warn(&format!(
            "the APNs push certificate expires in {} days ({}); {RENEW_HINT}",
            apns.days_left,
            apns.renew_by.date()
        ));
    }
    for ca in &status.scep_cas {
        if ca.days_left < WARN_DAYS {
            ctx.warn(&format!(
                "the SCEP CA `{}` expires in {} days",
                ca.cert.subject, ca.days_left
            ));
        }
    }
    if let Some(wrong) = status
        .device_topics
        .iter()
        .find(|t| Some(&t.topic) != apns.cert.topic.as_ref())
    {
        ctx.warn(&format!(
            "{} enrollments use the topic `{}`, not the push certificate's: they cannot be woken",
            wrong.enrollments, wrong.topic
        ));
    }
    Ok(())
}

fn mdm_apple_bm(ctx: &Ctx) -> anyhow::Result<()> {
    let store = ctx.open_store()?;
    let status = store.read(|tx| abm_status(tx))?;
    let Some(status) = status else {
        return Err(AssetError::NoAbmKey.into());
    };
    if ctx.json() {
        print_json(&status)?;
    } else {
        let mut pairs = vec![
            ("state", status.state.as_str().to_string()),
            ("certificate", status.certificate.subject.clone()),
            ("cert sha256", status.certificate.sha256.clone()),
        ];
        if let Some(k) = &status.consumer_key {
            pairs.push(("consumer key", k.clone()));
        }
        if let (Some(e), Some(d)) = (status.access_token_expiry, status.days_left) {
            pairs.push(("expires", e.to_string()));
            pairs.push(("days left", d.to_string()));
        }
        let mut lines = vec!["Apple Business Manager".to_string()];
        lines.extend(key_values(2, &pairs));
        print_lines(&lines)?;
    }
    if status.consumer_key.is_none() {
        return Err(UserError::new("no Apple Business Manager server token in the store yet")
            .with_hint("upload `mdm-apple-bm.crt` to Apple Business Manager, download the server token, then `mdmctl set mdm-apple-bm --token FILE.p7m`")
            .into());
    }
    if status.expired {
        return Err(UserError::new("the Apple Business Manager server token has expired")
            .with_hint("in Apple Business Manager › Preferences › your MDM server, download a new token, then `mdmctl set mdm-apple-bm --token FILE.p7m`")
            .into());
    }
    if let Some(w) = expiry_warning(&status) {
        ctx.warn(&w);
    }
    Ok(())
}

fn commands(
    ctx: &Ctx,
    udid: Option<String>,
    command: Option<String>,
    limit: u32,
) -> anyhow::Result<()> {
    let entries = match (ctx.remote()?, &udid, &command) {
        (Some(api), Some(d), _) => api.device_commands(d, limit)?,
        (Some(api), None, Some(c)) => api.command(c)?,
        (None, Some(d), _) => {
            let store = ctx.open_store()?;
            let found = store.read(|tx| {
                let Some(dev) = tx.device(d)? else {
                    return Ok::<_, crate::store::StoreError>(None);
                };
                tx.device_commands(&dev.id, limit).map(Some)
            })?;
            found.ok_or_else(|| {
                UserError::new(format!("no device `{d}`"))
                    .with_hint("check with `mdmctl get devices`")
            })?
        }
        (None, None, Some(c)) => {
            let store = ctx.open_store()?;
            crate::mdm::status(store.as_ref(), c)?
        }
        _ => {
            crate::bail_user!("name a device or a command", hint: "pass `--udid UDID` or `--command UUID`")
        }
    };
    if let (Some(c), true) = (&command, entries.is_empty()) {
        crate::bail_user!(format!("no command `{c}`"), hint: "the UUID is printed by `mdmctl mdm …`");
    }
    if ctx.json() {
        return print_json(&entries);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.created_at.to_string(),
                e.enrollment_id.clone(),
                e.request_type.clone(),
                e.status.as_str().to_string(),
                e.command_uuid.clone(),
                e.error_chain
                    .as_ref()
                    .and_then(|c| c.get(0))
                    .and_then(|c| c.get("LocalizedDescription"))
                    .and_then(|d| d.as_str())
                    .unwrap_or("")
                    .to_string(),
            ]
        })
        .collect();
    print_lines(&table(
        &["QUEUED", "CHANNEL", "REQUEST", "STATUS", "UUID", "ERROR"],
        &rows,
    ))
}
