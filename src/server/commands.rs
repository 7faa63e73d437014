//! The command channel: a device reports (`Idle`, or its answer to the last command) and gets
//! the next queued command, or an empty 200 when there is none.
//!
//! An Idle from a device with nothing queued is answered from a read transaction: the common
//! case writes nothing (last-seen is written at most once a minute per channel).

use axum::http::StatusCode;
use tracing::{debug, info, warn};

use super::device::{authorize, record, store_failure};
use super::{AppState, Reply};
use crate::apple::command::{self, Report, Status};
use crate::pki::identity::Verified;
use crate::store::{NewActivity, QueueStatus, StoreError, Tx};

pub(crate) fn handle(st: &AppState, v: &Verified, body: &[u8]) -> Reply {
    let report = match command::parse_report(body) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "refused a command report that does not parse");
            return Reply::Refuse(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let channel = match report.sender.channel() {
        Ok(c) => c,
        Err(e) => return Reply::Refuse(StatusCode::BAD_REQUEST, e.to_string()),
    };

    // The fast path: an Idle that needs no write.
    if report.status == Status::Idle {
        let touch = st.touch_due(&channel.id);
        let quick = st.store.read(|tx| -> Result<Option<Reply>, StoreError> {
            let authz = match authorize(st, tx, &channel, v)? {
                Ok(a) => a,
                Err(refusal) => return Ok(Some(refusal)),
            };
            if authz.needs_write() || touch || tx.has_open_command(&channel.id, true)? {
                return Ok(None);
            }
            Ok(Some(Reply::Empty))
        });
        match quick {
            Ok(Some(reply)) => return reply,
            Ok(None) => {}
            Err(e) => return store_failure(e),
        }
    }

    let result = st.store.write(|tx| -> Result<Reply, StoreError> {
        let authz = match authorize(st, tx, &channel, v)? {
            Ok(a) => a,
            Err(refusal) => return Ok(refusal),
        };
        record(tx, &channel, v, &authz)?;
        tx.touch(&channel.id, &channel.device_id)?;
        let include_not_now = match &report.status {
            Status::Idle => true,
            _ => {
                store_result(tx, &st.config.reconcile, &channel.id, &channel.device_id, &report, body)?;
                false
            }
        };
        // NotNow'd commands wait for the device's next Idle: not offered again this session.
        Ok(match tx.next_command(&channel.id, include_not_now)? {
            Some(c) => {
                debug!(channel = %channel.id, command = %c.uuid, request = %c.request_type, "command sent");
                Reply::Plist(c.plist.to_vec())
            }
            None => Reply::Empty,
        })
    });
    match result {
        Ok(reply) => reply,
        Err(e) => store_failure(e),
    }
}

fn store_result(
    tx: &mut dyn Tx,
    policy: &crate::reconcile::Policy,
    channel: &str,
    device: &str,
    report: &Report,
    body: &[u8],
) -> Result<(), StoreError> {
    let Some(uuid) = report.command_uuid.as_deref() else {
        return Ok(());
    };
    let status = match &report.status {
        Status::Acknowledged => QueueStatus::Acknowledged,
        Status::Error => QueueStatus::Error,
        Status::CommandFormatError => QueueStatus::FormatError,
        Status::NotNow => QueueStatus::NotNow,
        Status::Idle => return Ok(()),
        Status::Other(s) => {
            warn!(channel, status = %s, "unknown command status; recorded as an error");
            QueueStatus::Error
        }
    };
    let chain = (!report.error_chain.is_empty())
        .then(|| serde_json::to_value(&report.error_chain).unwrap_or_default());
    let Some(request_type) = tx.record_result(channel, uuid, status, body, chain.as_ref())? else {
        warn!(
            channel,
            command = uuid,
            "a report for a command not queued for this channel; ignored"
        );
        return Ok(());
    };
    info!(channel, command = uuid, request = %request_type, status = status.as_str(), "command result");
    crate::reconcile::on_result(
        tx,
        policy,
        device,
        &crate::reconcile::Answer {
            command_uuid: uuid,
            request_type: &request_type,
            status,
            body,
            error_chain: chain.as_ref(),
        },
    )?;
    if status == QueueStatus::Acknowledged && request_type == "DeviceInformation" {
        update_device_facts(tx, device, body)?;
    }
    if status != QueueStatus::NotNow {
        let first_error = report.error_chain.first();
        tx.record_activity(&NewActivity {
            actor: "serve".into(),
            kind: format!("command.{}", status.as_str()),
            device_id: Some(device.to_string()),
            summary: match first_error {
                Some(e) => format!(
                    "{request_type} on {channel}: {} ({} {})",
                    e.localized_description, e.domain, e.code
                ),
                None => format!("{request_type} on {channel}: {}", report.status.as_str()),
            },
            details: serde_json::json!({
                "command_uuid": uuid, "request_type": request_type, "channel": channel,
                "error_chain": chain,
            }),
        })?;
    }
    Ok(())
}

/// Keep the device's OS version, name and model current from DeviceInformation answers.
fn update_device_facts(tx: &mut dyn Tx, device: &str, body: &[u8]) -> Result<(), StoreError> {
    let Ok(plist::Value::Dictionary(top)) = crate::apple::plist_in::from_bytes(body) else {
        return Ok(());
    };
    let Some(q) = top.get("QueryResponses").and_then(|q| q.as_dictionary()) else {
        return Ok(());
    };
    let Some(mut d) = tx.device(device)? else {
        return Ok(());
    };
    let s = |k: &str| q.get(k).and_then(|v| v.as_string()).map(str::to_string);
    let os = s("OSVersion");
    if os.is_some() && os != d.os_version {
        // What the device should get depends on its OS version (Nudge or the declaration).
        tx.mark_dirty(std::slice::from_ref(&d.id))?;
    }
    d.os_version = os.or(d.os_version);
    d.build_version = s("BuildVersion").or(d.build_version);
    d.device_name = s("DeviceName").or(d.device_name);
    d.model_name = s("ModelName").or(d.model_name);
    d.model = s("Model").or(d.model);
    d.product_name = s("ProductName").or(d.product_name);
    d.serial = s("SerialNumber").or(d.serial);
    tx.put_device(&d)
}
