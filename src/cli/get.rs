//! `mdmctl get …`: show what the store holds.

use clap::Subcommand;

use super::Ctx;
#[path = "get_desired.rs"]
mod desired;
#[path = "get_profile_status.rs"]
mod profile_status;
use super::output::{key_values, print_json, print_lines, table};
use crate::assets::abm::{abm_status, expiry_warning};
use crate::assets::apns::mdm_apple_status;
use crate::assets::{AssetError, WARN_DAYS};
use crate::diagnose::UserError;
use crate::mdm::DeviceDetail;
use crate::mdm::api::{ActivityFilter, DeviceFilter};
use crate::timestamp::Timestamp;

#[derive(Debug, Subcommand)]
pub enum GetCommand {
    /// The APNs push certificate (topic, expiry) and the SCEP CAs.
    MdmApple,
    /// The Apple Business Manager key pair and server token.
    MdmAppleBm,
    /// Apple Business Manager's devices as the last `mdmctl abm sync` left them.
    AbmDevices {
        /// Only devices with this ABM profile status (`empty`, `assigned`, `pushed`, `removed`).
        #[arg(long)]
        status: Option<String>,
        /// Only devices of this team (`--team ""`: in no team).
        #[arg(long, value_name = "NAME")]
        team: Option<String>,
        /// Only devices that have not enrolled yet.
        #[arg(long)]
        pending: bool,
    },
    /// The devices the store holds: imported, enrolled, migrated.
    Devices {
        /// Only devices that have (`true`) or have not (`false`) checked in since the cutover.
        #[arg(long, value_name = "BOOL")]
        migrated: Option<bool>,
        /// Only devices last seen at or after this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        seen_since: Option<String>,
        /// Only devices not seen since this time (RFC 3339), or never seen.
        #[arg(long, value_name = "TIME")]
        not_seen_since: Option<String>,
        /// Only devices in this team.
        #[arg(long, value_name = "NAME")]
        team: Option<String>,
    },
    /// One device with its enrollments and recent commands. Its push token and push magic only
    /// with `--show-push-credentials` (text or JSON), and that viewing is recorded in the
    /// activity log: a plain read has no side effect.
    Device {
        /// UDID, enrollment ID or serial number.
        #[arg(value_name = "UDID|SERIAL")]
        id: String,
        /// Show the push token and push magic (recorded in the activity log).
        #[arg(long)]
        show_push_credentials: bool,
    },
    /// The activity log: imports, applies, enrollments, first contacts after the cutover,
    /// commands and their results, secrets viewed. Oldest first.
    Activities {
        /// Only this device's entries (UDID or serial number).
        #[arg(long, value_name = "UDID|SERIAL")]
        udid: Option<String>,
        /// Only this type (`device.migrated`), or a family ending in `.` (`command.`).
        #[arg(long = "type", value_name = "TYPE")]
        kind: Option<String>,
        /// Only entries at or after this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// The most recent N entries.
        #[arg(long, default_value_t = 100, value_name = "N")]
        limit: u32,
    },
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
    /// Desired profiles (the admin's and mdmctl's own), global and per team; with `--udid`,
    /// one device's profiles and their delivery status (plus the unmanaged ones another MDM
    /// installed).
    Profiles {
        /// Only this team's profiles.
        #[arg(long, value_name = "NAME", conflicts_with = "udid")]
        team: Option<String>,
        /// One device (UDID or serial number): its profiles' status.
        #[arg(long, value_name = "UDID|SERIAL")]
        udid: Option<String>,
    },
    /// A device's escrowed FileVault personal recovery key, on stdout. Every viewing is
    /// recorded in the activity log (who, which device, when).
    DiskEncryptionKey {
        /// The device's UDID.
        #[arg(long, value_name = "UDID", required_unless_present = "serial")]
        udid: Option<String>,
        /// The device's serial number.
        #[arg(long, value_name = "SERIAL", conflicts_with = "udid")]
        serial: Option<String>,
    },
    /// The `serve` instances sharing the store (version, last heartbeat, the background jobs
    /// each runs) and every job's holder and last run.
    #[command(alias = "status")]
    Servers,
    /// Profile delivery summed up: how many device profiles are verified, pending, failed.
    ProfileStatus {
        /// Only this team's devices.
        #[arg(long, value_name = "NAME")]
        team: Option<String>,
    },
}

pub fn run(ctx: &Ctx, cmd: GetCommand) -> anyhow::Result<()> {
    match cmd {
        GetCommand::MdmApple => mdm_apple(ctx),
        GetCommand::MdmAppleBm => mdm_apple_bm(ctx),
        GetCommand::AbmDevices {
            status,
            team,
            pending,
        } => abm_devices(
            ctx,
            &crate::mdm::api::AbmDeviceQuery {
                status,
                team,
                pending,
            },
        ),
        GetCommand::Devices {
            migrated,
            seen_since,
            not_seen_since,
            team,
        } => devices(
            ctx,
            DeviceFilter {
                migrated,
                seen_since,
                not_seen_since,
                team,
            },
        ),
        GetCommand::Device {
            id,
            show_push_credentials,
        } => device(ctx, &id, show_push_credentials),
        GetCommand::Commands {
            udid,
            command,
            limit,
        } => commands(ctx, udid, command, limit),
        GetCommand::Activities {
            udid,
            kind,
            since,
            limit,
        } => activities(
            ctx,
            ActivityFilter {
                device: udid,
                kind,
                since,
                limit: Some(limit),
            },
        ),
        GetCommand::Config => desired::config(ctx),
        GetCommand::Teams => desired::teams(ctx),
        GetCommand::Profiles {
            udid: Some(udid), ..
        } => profile_status::device_profiles(ctx, &udid),
        GetCommand::Profiles { team, udid: None } => desired::profiles(ctx, team),
        GetCommand::ProfileStatus { team } => profile_status::summary(ctx, team),
        GetCommand::Servers => servers(ctx),
        GetCommand::DiskEncryptionKey { udid, serial } => {
            disk_encryption_key(ctx, udid.or(serial).unwrap_or_default())
        }
    }
}

const RENEW_HINT: &str = "renew at https://identity.apple.com with the same Apple ID: choose Renew (not Create) so the topic stays the same, then `mdmctl set mdm-apple --apns-cert FILE`";

fn mdm_apple(ctx: &Ctx) -> anyhow::Result<()> {
    let status = match ctx.remote()? {
        Some(api) => api.mdm_apple()?,
        None => {
            let store = ctx.open_store()?;
            store.read(|tx| mdm_apple_status(tx))?
        }
    };
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

fn abm_devices(ctx: &Ctx, q: &crate::mdm::api::AbmDeviceQuery) -> anyhow::Result<()> {
    let devices = match ctx.remote()? {
        Some(api) => api.abm_devices(q)?,
        None => {
            let store = ctx.open_store()?;
            store.read(|tx| tx.abm_devices(&q.filter()))?
        }
    };
    if ctx.json() {
        return print_json(&devices);
    }
    if devices.is_empty() {
        eprintln!("No Apple Business Manager device matches (run `mdmctl abm sync`).");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = devices
        .iter()
        .map(|d| {
            let o = |v: &Option<String>| v.clone().unwrap_or_default();
            let assignment = match d.assign_state.as_deref() {
                None => "to assign".to_string(),
                Some("assigned") => "assigned".to_string(),
                Some(s) => match d.assign_retry_at {
                    Some(t) => format!("{s} ({}), retry {}", o(&d.assign_detail), t),
                    None => format!("{s} ({})", o(&d.assign_detail)),
                },
            };
            let state = if d.deleted {
                "deleted".to_string()
            } else if let Some(u) = &d.enrolled_udid {
                format!("enrolled ({u})")
            } else if let Some(deadline) = &d.migration_deadline {
                format!("migrating via ABM, deadline {deadline}")
            } else {
                "pending".to_string()
            };
            vec![
                d.serial.clone(),
                o(&d.model),
                d.team.clone().unwrap_or_else(|| "-".into()),
                o(&d.profile_status),
                assignment,
                state,
            ]
        })
        .collect();
    print_lines(&table(
        &[
            "SERIAL",
            "MODEL",
            "TEAM",
            "ABM PROFILE",
            "ASSIGNMENT",
            "STATE",
        ],
        &rows,
    ))
}

/// The ABM account behind the server token (`GET /account`), or why it cannot be read.
fn abm_account(
    store: &std::sync::Arc<dyn crate::store::Store>,
) -> Option<Result<crate::abm::Account, String>> {
    let token = match store.read(crate::assets::abm::server_token) {
        Ok(Some(t)) => t,
        Ok(None) => return None,
        Err(e) => return Some(Err(e.to_string())),
    };
    let url = std::env::var("MDMCTL_ABM_URL")
        .unwrap_or_else(|_| crate::abm::client::DEFAULT_URL.to_string());
    let retry = crate::abm::Retry {
        attempts: 2,
        ..Default::default()
    };
    let run = || -> Result<crate::abm::Account, String> {
        let client = crate::abm::DepClient::new(&url, &token, retry).map_err(|e| e.to_string())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(client.account())
            .map_err(|e| match crate::diagnose::Diagnose::hint(&e) {
                Some(h) => format!("{e} (hint: {h})"),
                None => e.to_string(),
            })
    };
    Some(run())
}

fn mdm_apple_bm(ctx: &Ctx) -> anyhow::Result<()> {
    let store = ctx.open_store()?;
    let status = store.read(|tx| abm_status(tx))?;
    let Some(status) = status else {
        return Err(AssetError::NoAbmKey.into());
    };
    // The account as Apple sees it, when a live token is there.
    let account = if status.consumer_key.is_some() && !status.expired {
        abm_account(&store)
    } else {
        None
    };
    if ctx.json() {
        let mut v = serde_json::to_value(&status)?;
        match &account {
            Some(Ok(a)) => v["account"] = serde_json::to_value(a)?,
            Some(Err(e)) => v["account_error"] = e.clone().into(),
            None => {}
        }
        print_json(&v)?;
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
        if let Some(Ok(a)) = &account {
            pairs.push(("organization", a.org_name.clone()));
            pairs.push(("MDM server", a.server_name.clone()));
            pairs.push(("terms", "accepted".into()));
        }
        let mut lines = vec!["Apple Business Manager".to_string()];
        lines.extend(key_values(2, &pairs));
        print_lines(&lines)?;
    }
    if let Some(Err(e)) = &account {
        ctx.warn(&format!(
            "cannot read the account from Apple Business Manager: {e}"
        ));
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

fn servers(ctx: &Ctx) -> anyhow::Result<()> {
    let view = match ctx.remote()? {
        Some(api) => api.servers()?,
        None => {
            let store = ctx.open_store()?;
            store.read(|tx| crate::mdm::instances(tx))?
        }
    };
    if ctx.json() {
        return print_json(&view);
    }
    if view.servers.is_empty() {
        eprintln!("No `mdmctl serve` instance has run on this store (or none is running).");
    }
    let short = |id: &str| id.chars().take(8).collect::<String>();
    let mut lines = Vec::new();
    if !view.servers.is_empty() {
        let rows: Vec<Vec<String>> = view
            .servers
            .iter()
            .map(|s| {
                vec![
                    short(&s.instance.id),
                    format!("{}:{}", s.instance.hostname, s.instance.pid),
                    s.instance.version.clone(),
                    if s.alive {
                        "up".into()
                    } else {
                        "not seen".into()
                    },
                    s.instance.seen_at.to_string(),
                    s.instance.started_at.to_string(),
                    if s.jobs.is_empty() {
                        "-".into()
                    } else {
                        s.jobs.join(",")
                    },
                ]
            })
            .collect();
        lines.extend(table(
            &[
                "INSTANCE", "HOST:PID", "VERSION", "STATE", "SEEN", "STARTED", "JOBS",
            ],
            &rows,
        ));
    }
    if !view.jobs.is_empty() {
        if !lines.is_empty() {
            lines.push(String::new());
        }
        let rows: Vec<Vec<String>> = view
            .jobs
            .iter()
            .map(|j| {
                let run = j.last_run.as_ref();
                vec![
                    j.name.clone(),
                    j.holder.as_deref().map(short).unwrap_or_else(|| "-".into()),
                    j.lease_expires_at
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "-".into()),
                    run.map(|r| r.finished_at.to_string())
                        .unwrap_or_else(|| "never".into()),
                    run.map(|r| format!("{}{}", if r.ok { "" } else { "FAILED: " }, r.summary))
                        .unwrap_or_default(),
                ]
            })
            .collect();
        lines.extend(table(
            &["JOB", "HOLDER", "LEASE UNTIL", "LAST RUN", "OUTCOME"],
            &rows,
        ));
    }
    print_lines(&lines)
}

fn devices(ctx: &Ctx, filter: DeviceFilter) -> anyhow::Result<()> {
    for (flag, t) in [
        ("--seen-since", &filter.seen_since),
        ("--not-seen-since", &filter.not_seen_since),
    ] {
        if let Some(t) = t
            && Timestamp::parse_rfc3339(t).is_none()
        {
            crate::bail_user!(format!("{flag} `{t}` is not an RFC 3339 time"), hint: "write times like `2026-11-23T09:00:00Z`");
        }
    }
    let list = match ctx.remote()? {
        Some(api) => api.devices(&filter)?,
        None => {
            let store = ctx.open_store()?;
            store.read(|tx| crate::mdm::devices(tx, &filter))?
        }
    };
    if ctx.json() {
        return print_json(&list);
    }
    if list.is_empty() {
        let mut filters = Vec::new();
        if let Some(t) = &filter.team {
            filters.push(format!("in team {t}"));
        }
        if let Some(m) = filter.migrated {
            filters.push(if m { "migrated" } else { "not migrated" }.to_string());
        }
        if let Some(t) = &filter.seen_since {
            filters.push(format!("seen since {t}"));
        }
        if let Some(t) = &filter.not_seen_since {
            filters.push(format!("not seen since {t}"));
        }
        if filters.is_empty() {
            eprintln!(
                "No devices. Import them with `mdmctl import-devices`, or enroll new ones through `mdmctl serve`."
            );
        } else {
            eprintln!("No devices {}.", filters.join(", "));
        }
        return Ok(());
    }
    if ctx.format == super::Format::Wide {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|d| {
                vec![
                    d.id.clone(),
                    opt(&d.serial),
                    opt(&d.name),
                    opt(&d.model),
                    opt(&d.os_version),
                    opt(&d.team),
                    opt(&d.topic),
                    d.source.clone(),
                    time(d.imported_at),
                    time(d.migrated_at),
                    time(d.last_seen_at),
                    time(d.identity_not_after),
                ]
            })
            .collect();
        print_lines(&table(
            &[
                "UDID",
                "SERIAL",
                "NAME",
                "MODEL",
                "OS",
                "TEAM",
                "TOPIC",
                "SOURCE",
                "IMPORTED",
                "MIGRATED",
                "LAST SEEN",
                "IDENTITY EXPIRES",
            ],
            &rows,
        ))?;
        eprintln!("{} device(s).", list.len());
        return Ok(());
    }
    // Fits 120 columns: what an admin scans for (the UDID in full, it is how devices are
    // named); team (`--team` filters on it), topic, import and identity are in `--format json`
    // and `get device`.
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|d| {
            let short = |v: &Option<String>, n: usize| {
                let v = opt(v);
                if v.chars().count() > n {
                    format!("{}…", v.chars().take(n - 1).collect::<String>())
                } else {
                    v
                }
            };
            vec![
                if d.pending {
                    "(pending: not enrolled yet)".into()
                } else {
                    d.id.clone()
                },
                opt(&d.serial),
                short(&d.name, 15),
                short(&d.model, 14),
                short(&d.os_version, 7),
                if d.pending {
                    "abm".into()
                } else if d.migrated_at.is_some() {
                    "migrated".into()
                } else if d.source.starts_with("imported") {
                    "imported".into()
                } else {
                    "enrolled".into()
                },
                // Until a device checks in here, this is the old server's last-seen (UTC).
                d.last_seen_at.map_or_else(
                    || "-".to_string(),
                    |t| t.to_string().replace('T', " ").chars().take(16).collect(),
                ),
            ]
        })
        .collect();
    print_lines(&table(
        &[
            "UDID",
            "SERIAL",
            "NAME",
            "MODEL",
            "OS",
            "STATE",
            "LAST SEEN",
        ],
        &rows,
    ))?;
    eprintln!("{} device(s).", list.len());
    Ok(())
}

fn device(ctx: &Ctx, id: &str, show_push_credentials: bool) -> anyhow::Result<()> {
    let secrets = show_push_credentials;
    let found: Option<DeviceDetail> = match ctx.remote()? {
        Some(api) => Some(api.device_with(id, secrets)?),
        None => {
            let store = ctx.open_store()?;
            if secrets {
                let actor = ctx.actor();
                store.write(|tx| crate::mdm::device_detail(tx, id, Some(&actor)))?
            } else {
                store.read(|tx| crate::mdm::device_detail(tx, id, None))?
            }
        }
    };
    let Some(d) = found else {
        crate::bail_user!(format!("no device `{id}`"), hint: "list them with `mdmctl get devices`");
    };
    if ctx.json() {
        return print_json(&d);
    }
    let mut lines = key_values(
        0,
        &[
            ("UDID", d.id.clone()),
            ("Serial", opt(&d.serial)),
            ("Name", opt(&d.device_name)),
            ("Model", opt(&d.model_name.clone().or(d.model.clone()))),
            ("OS", opt(&d.os_version)),
            ("Source", d.source.clone()),
            ("Imported", time(d.imported_at)),
            ("Enrolled", time(d.enrolled_at)),
            ("Migrated", time(d.migrated_at)),
            ("Last seen", time(d.last_seen_at)),
            ("Identity SHA-256", opt(&d.identity_sha256)),
            ("Identity expires", time(d.identity_not_after)),
        ],
    );
    if let Some(r) = &d.identity_renewal {
        let why = r
            .reason
            .as_deref()
            .map(|w| format!(" ({w})"))
            .unwrap_or_default();
        lines.push(format!(
            "Identity renewal: {}{why}, {}",
            r.status.as_str(),
            r.updated_at
        ));
    }
    lines.push("Enrollments:".into());
    for e in &d.enrollments {
        let who = match &e.user_short_name {
            Some(u) => format!("{} ({u})", e.kind),
            None => e.kind.clone(),
        };
        let mut pairs = vec![
            ("Channel", e.id.clone()),
            ("Type", who),
            ("Topic", e.topic.clone()),
            ("Enabled", e.enabled.to_string()),
            (
                "Push token",
                if e.has_push_token { "yes" } else { "no" }.to_string(),
            ),
            ("Last seen", time(e.last_seen_at)),
        ];
        if let Some(t) = &e.token_hex {
            pairs.push(("Token (hex)", t.clone()));
        }
        if let Some(m) = &e.push_magic {
            pairs.push(("Push magic", m.clone()));
        }
        lines.extend(key_values(2, &pairs));
    }
    lines.push("Profiles:".into());
    if d.profiles.is_empty() {
        lines.push("  none".into());
    }
    for p in &d.profiles {
        let by = if p.ours { "" } else { " (unmanaged)" };
        lines.push(format!(
            "  {}{by}  {}",
            p.identifier,
            profile_status::describe(p)
        ));
    }
    if let Some(fde) = &d.disk_encryption {
        let mut state = fde.status.label().to_string();
        if let Some(r) = &fde.reason {
            state.push_str(&format!(" ({r})"));
        }
        lines.push(format!("Disk encryption: {state}"));
    }
    if !d.declarations.is_empty() {
        lines.push("Declarations:".into());
        for x in &d.declarations {
            let state = match (x.valid.as_deref(), x.active) {
                (Some("invalid"), _) => "invalid",
                (_, Some(true)) => "active",
                (_, Some(false)) => "inactive",
                _ => "unknown",
            };
            let why = x
                .reasons
                .as_ref()
                .filter(|_| state != "active")
                .map(|r| format!("  {r}"))
                .unwrap_or_default();
            lines.push(format!("  {}  {state}{why}", x.identifier));
        }
    }
    if let Some(u) = &d.available_os_updates {
        lines.push(format!("Available OS updates (as of {}):", time(u.at)));
        if u.updates.is_empty() {
            lines.push("  none".into());
        }
        for up in &u.updates {
            let mut flags = Vec::new();
            if up.is_critical {
                flags.push("critical");
            }
            if up.is_major_os_update {
                flags.push("major");
            }
            if up.restart_required {
                flags.push("restart");
            }
            lines.push(format!(
                "  {}  {}  {}  {}",
                opt(&up.human_readable_name),
                opt(&up.version),
                opt(&up.product_key),
                flags.join(",")
            ));
        }
    }
    lines.push("Recent commands:".into());
    if d.commands.is_empty() {
        lines.push("  none".into());
    }
    for c in &d.commands {
        lines.push(format!(
            "  {}  {}  {}  {}",
            c.created_at,
            c.request_type,
            c.status.as_str(),
            c.command_uuid
        ));
    }
    print_lines(&lines)
}

fn disk_encryption_key(ctx: &Ctx, id: String) -> anyhow::Result<()> {
    let key = match ctx.remote()? {
        Some(api) => api.disk_encryption_key(&id)?,
        None => {
            let store = ctx.open_store()?;
            let actor = ctx.actor();
            match store.write(|tx| crate::mdm::disk_encryption_key(tx, &id, &actor))? {
                Ok(k) => k,
                Err(no) => {
                    let (msg, hint) = no.explain(&id);
                    return Err(UserError::new(msg).with_hint(hint).into());
                }
            }
        }
    };
    if ctx.json() {
        return print_json(&key);
    }
    eprintln!(
        "note: this viewing of {}'s recovery key is recorded in the activity log",
        key.serial.as_deref().unwrap_or(&key.device_id)
    );
    print_lines(&[key.key])
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".into())
}

fn time(t: Option<Timestamp>) -> String {
    t.map(|t| t.to_string()).unwrap_or_else(|| "-".into())
}

fn activities(ctx: &Ctx, filter: ActivityFilter) -> anyhow::Result<()> {
    if let Some(t) = &filter.since
        && Timestamp::parse_rfc3339(t).is_none()
    {
        crate::bail_user!(format!("--since `{t}` is not an RFC 3339 time"), hint: "write times like `2026-11-23T09:00:00Z`");
    }
    let list = match ctx.remote()? {
        Some(api) => api.activities(&filter)?,
        None => {
            let store = ctx.open_store()?;
            match store.read(|tx| crate::mdm::activities(tx, &filter))? {
                Some(l) => l,
                None => crate::bail_user!(
                    format!("no device `{}`", filter.device.as_deref().unwrap_or_default()),
                    hint: "list them with `mdmctl get devices`"
                ),
            }
        }
    };
    if ctx.json() {
        return print_json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|a| {
            vec![
                a.at.to_string(),
                a.actor.clone(),
                a.kind.clone(),
                a.device_id.clone().unwrap_or_else(|| "-".into()),
                a.summary.clone(),
            ]
        })
        .collect();
    print_lines(&table(&["AT", "ACTOR", "TYPE", "DEVICE", "SUMMARY"], &rows))
}
