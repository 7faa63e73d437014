//! `mdmctl mdm …`: send MDM commands to devices, on a local store or through `--server`.
//! Commands are queued for every device named, then pushed (unless `--no-push`).

use std::path::PathBuf;

use anyhow::Context as _;
use base64::Engine;
use clap::{Args, Subcommand};

use super::Ctx;
use super::files::read_input;
use super::output::{print_json, print_lines};
use crate::apple::command::{Command, named};
use crate::mdm::Sent;
use crate::mdm::api::CommandRequest;

/// Which devices a command goes to.
#[derive(Debug, Args)]
pub struct Targets {
    /// Device UDID (repeat, or separate with commas).
    #[arg(long = "udid", value_delimiter = ',', value_name = "UDID")]
    pub udids: Vec<String>,
    /// Device serial number (repeat, or separate with commas).
    #[arg(long = "serial", value_delimiter = ',', value_name = "SERIAL")]
    pub serials: Vec<String>,
    /// Queue only; the devices get it at their next check-in.
    #[arg(long)]
    pub no_push: bool,
}

impl Targets {
    fn all(&self) -> anyhow::Result<Vec<String>> {
        let all: Vec<String> = self
            .udids
            .iter()
            .chain(&self.serials)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if all.is_empty() {
            crate::bail_user!("no devices named", hint: "pass `--udid UDID` or `--serial SERIAL` (repeatable)");
        }
        Ok(all)
    }
}

#[derive(Debug, Subcommand)]
pub enum MdmCommand {
    /// Send a command written as a plist (`{Command: {RequestType: …}}`), or a named one.
    RunCommand {
        #[command(flatten)]
        targets: Targets,
        /// The command plist (XML or binary).
        #[arg(long, value_name = "FILE.plist", conflicts_with = "request_type")]
        payload: Option<PathBuf>,
        /// A command by name: DeviceInformation, ProfileList, SecurityInfo, …
        #[arg(long)]
        request_type: Option<String>,
    },
    /// Ask for device facts (OS version, model, name, …).
    DeviceInformation {
        #[command(flatten)]
        targets: Targets,
    },
    /// List installed configuration profiles.
    ProfileList {
        #[command(flatten)]
        targets: Targets,
        /// Only profiles installed by MDM.
        #[arg(long)]
        managed_only: bool,
    },
    /// Ask for security state (FileVault, SIP, …).
    SecurityInfo {
        #[command(flatten)]
        targets: Targets,
    },
    /// Install a configuration profile (.mobileconfig, signed or not).
    InstallProfile {
        #[command(flatten)]
        targets: Targets,
        #[arg(long, value_name = "FILE.mobileconfig")]
        file: PathBuf,
    },
    /// Remove a configuration profile by its PayloadIdentifier.
    RemoveProfile {
        #[command(flatten)]
        targets: Targets,
        #[arg(long)]
        identifier: String,
    },
    /// Schedule a macOS update (the built-in macOS update prompts).
    #[command(disable_version_flag = true)]
    ScheduleOsUpdate {
        #[command(flatten)]
        targets: Targets,
        /// The version to install; without it, the latest available.
        #[arg(long)]
        version: Option<String>,
        #[arg(long, default_value = "Default", value_parser = ["Default", "DownloadOnly", "InstallASAP", "NotifyOnly", "InstallLater", "InstallForceRestart"])]
        action: String,
    },
    /// Ask which OS updates devices can install (shown by `mdmctl get device`).
    AvailableOsUpdates {
        #[command(flatten)]
        targets: Targets,
    },
    /// Lock devices (a 6-digit PIN on macOS).
    Lock {
        #[command(flatten)]
        targets: Targets,
        #[arg(long, env = "MDMCTL_LOCK_PIN", hide_env_values = true)]
        pin: Option<String>,
        /// Shown on the lock screen.
        #[arg(long)]
        message: Option<String>,
    },
    /// Erase devices. Destroys their data: needs `--yes`.
    Erase {
        #[command(flatten)]
        targets: Targets,
        #[arg(long, env = "MDMCTL_ERASE_PIN", hide_env_values = true)]
        pin: Option<String>,
        /// Confirm you mean to erase every device named.
        #[arg(long)]
        yes: bool,
    },
}

pub fn run(ctx: &Ctx, cmd: MdmCommand) -> anyhow::Result<()> {
    let (targets, command) = match cmd {
        MdmCommand::RunCommand {
            targets,
            payload,
            request_type,
        } => {
            let c = match (payload, request_type) {
                (Some(p), None) => {
                    let bytes = read_input(&p, "--payload")?;
                    Command::from_plist(&bytes)
                        .with_context(|| format!("reading `{}`", p.display()))?
                }
                (None, Some(t)) => named::by_name(&t, &serde_json::Value::Null)?,
                _ => {
                    crate::bail_user!("give `--payload FILE.plist` or `--request-type NAME`", hint: format!("named commands: {}", named::NAMES.join(", ")))
                }
            };
            (targets, c)
        }
        MdmCommand::DeviceInformation { targets } => {
            (targets, named::device_information(named::DEFAULT_QUERIES))
        }
        MdmCommand::ProfileList {
            targets,
            managed_only,
        } => (targets, named::profile_list(managed_only)),
        MdmCommand::SecurityInfo { targets } => (targets, named::security_info()),
        MdmCommand::InstallProfile { targets, file } => (
            targets,
            named::install_profile(read_input(&file, "--file")?),
        ),
        MdmCommand::RemoveProfile {
            targets,
            identifier,
        } => (targets, named::remove_profile(&identifier)),
        MdmCommand::ScheduleOsUpdate {
            targets,
            version,
            action,
        } => (
            targets,
            named::schedule_os_update(version.as_deref(), None, &action),
        ),
        MdmCommand::AvailableOsUpdates { targets } => (targets, named::available_os_updates()),
        MdmCommand::Lock {
            targets,
            pin,
            message,
        } => {
            if let Some(p) = &pin
                && (p.len() != 6 || !p.chars().all(|c| c.is_ascii_digit()))
            {
                crate::bail_user!("`--pin` must be 6 digits on macOS", hint: "pass e.g. `--pin 123456`");
            }
            (
                targets,
                named::device_lock(message.as_deref(), None, pin.as_deref()),
            )
        }
        MdmCommand::Erase { targets, pin, yes } => {
            if !yes {
                crate::bail_user!("erasing destroys every named device's data", hint: "add `--yes` if you mean it");
            }
            (targets, named::erase_device(pin.as_deref()))
        }
    };
    let no_push = targets.no_push;
    let devices = targets.all()?;
    let sent = send(ctx, &command, &devices, !no_push)?;
    report(ctx, &sent)
}

/// Queue (and push) on a local store, or through the API.
fn send(ctx: &Ctx, command: &Command, devices: &[String], push: bool) -> anyhow::Result<Sent> {
    if let Some(api) = ctx.remote()? {
        return Ok(api.send_command(&CommandRequest {
            devices: devices.to_vec(),
            request_type: None,
            params: serde_json::Value::Null,
            plist: Some(base64::engine::general_purpose::STANDARD.encode(&command.plist)),
            push,
        })?);
    }
    let store = ctx.open_store()?;
    store.unlock()?;
    let actor = ctx.actor();
    let pushes = if push {
        Some(ctx.local_pushes(store.clone())?)
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(crate::mdm::send(
        &store,
        pushes.as_ref(),
        command,
        devices,
        &actor,
    ))?)
}

fn report(ctx: &Ctx, sent: &Sent) -> anyhow::Result<()> {
    if ctx.json() {
        print_json(sent)?;
    } else {
        let mut lines = vec![format!(
            "Queued {} `{}` for {} device(s).",
            sent.request_type,
            sent.command_uuid,
            sent.queued.len()
        )];
        if let Some(p) = &sent.push {
            lines.push(format!("Pushed: {} delivered to APNs", p.delivered));
            for (what, ids) in [
                ("no push token", &p.not_pushable),
                ("APNs: unregistered (disabled)", &p.unregistered),
                ("APNs: bad token", &p.bad_token),
                ("on another topic", &p.wrong_topic),
            ] {
                if !ids.is_empty() {
                    lines.push(format!("  {what}: {}", ids.join(", ")));
                }
            }
            for (id, why) in &p.failed {
                lines.push(format!("  failed {id}: {why}"));
            }
        }
        lines.push(format!(
            "Follow it with `mdmctl get commands --command {}`.",
            sent.command_uuid
        ));
        print_lines(&lines)?;
    }
    if !sent.unknown.is_empty() {
        let msg = format!("no such devices: {}", sent.unknown.join(", "));
        if sent.queued.is_empty() {
            crate::bail_user!(msg, hint: "check the UDIDs and serial numbers with `mdmctl get devices`");
        }
        ctx.warn(&msg);
    }
    if let Some(p) = sent
        .push
        .as_ref()
        .and_then(|p| p.certificate_problem.clone())
    {
        ctx.warn(&format!("push failed for every device: {p}"));
    }
    Ok(())
}
