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
use crate::store::{DeviceFacts, NewActivity, QueueStatus, Recorded, StoreError, Tx};

/// What [`quick_idle`] did: answered, or what it learned for the full path (which then
/// neither parses the report nor verifies the identity again).
pub(crate) enum Quick {
    Answered(Reply),
    Continue {
        report: Option<Box<Report>>,
        verified: Option<Verified>,
    },
}

/// The Idle fast path on the async worker (SQLite, see `AppState::inline_idle`): the report
/// parsed first (only an Idle goes on), the identity verified, one glance at the store.
/// Anything else goes down the full path on the blocking pool: anything but an Idle, a
/// last-seen write due, a command waiting, an identity or device to refuse (the full path logs
/// and counts it).
pub(crate) fn quick_idle(st: &AppState, req: &super::MdmRequest) -> Quick {
    let full = |report, verified| Quick::Continue { report, verified };
    let Ok(report) = command::parse_report(&req.body) else {
        return full(None, None);
    };
    if report.status != Status::Idle {
        return full(Some(Box::new(report)), None);
    }
    let Ok(channel) = report.sender.channel() else {
        return full(Some(Box::new(report)), None);
    };
    if st.touch_pending(&channel.id) {
        return full(Some(Box::new(report)), None);
    }
    let Ok(credential) = super::device::credential(st, req) else {
        return full(Some(Box::new(report)), None);
    };
    let Ok(v) = st.trust.check(st.store.as_ref(), credential) else {
        return full(Some(Box::new(report)), None);
    };
    let quick = st.store.glance(|tx| -> Result<bool, StoreError> {
        let Ok(authz) = authorize(st, tx, &channel, &v)? else {
            return Ok(false);
        };
        Ok(!authz.needs_write() && !tx.has_open_command(&channel.id, true)?)
    });
    if !matches!(quick, Ok(true)) {
        return full(Some(Box::new(report)), Some(v));
    }
    crate::metrics::request(true, report.status.as_str(), crate::metrics::Outcome::Ok);
    Quick::Answered(Reply::Empty)
}

pub(crate) fn handle(st: &AppState, v: &Verified, body: &[u8]) -> Reply {
    let report = match command::parse_report(body) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "refused a command report that does not parse");
            crate::metrics::request(true, "unparsed", crate::metrics::Outcome::Refused);
            return Reply::Refuse(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    handle_report(st, v, body, &report)
}

/// [`handle`] for a report already parsed.
pub(crate) fn handle_report(st: &AppState, v: &Verified, body: &[u8], report: &Report) -> Reply {
    let reply = respond(st, v, body, report);
    crate::metrics::request(true, report.status.as_str(), super::device::outcome(&reply));
    reply
}

fn respond(st: &AppState, v: &Verified, body: &[u8], report: &Report) -> Reply {
    let channel = match report.sender.channel() {
        Ok(c) => c,
        Err(e) => return Reply::Refuse(StatusCode::BAD_REQUEST, e.to_string()),
    };

    // `last_seen_at` is written at most once a minute per channel, on any request.
    let touch = st.touch_due(&channel.id);
    // The fast path: an Idle that needs no write.
    if report.status == Status::Idle {
        // Reads with no snapshot needed across them (a command queued meanwhile comes with
        // its push): on PostgreSQL no BEGIN/COMMIT round trips.
        let quick = st.store.glance(|tx| -> Result<Option<Reply>, StoreError> {
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

    // Single-row writes and conditional updates: READ COMMITTED on PostgreSQL (Mode::WriteRows),
    // so devices reporting at the same time do not abort each other.
    let result = st.store.write_rows(|tx| -> Result<(Reply, Option<String>), StoreError> {
        let authz = match authorize(st, tx, &channel, v)? {
            Ok(a) => a,
            Err(refusal) => return Ok((refusal, None)),
        };
        record(tx, &channel, v, &authz)?;
        if touch {
            tx.touch(&channel.id, &channel.device_id)?;
        }
        let (include_not_now, recorded) = match &report.status {
            Status::Idle => (true, None),
            _ => {
                let r = store_result(tx, &st.config.reconcile, &channel.id, &channel.device_id, report, body)?;
                (false, r)
            }
        };
        // NotNow'd commands wait for the device's next Idle: not offered again this session.
        Ok(match tx.next_command(&channel.id, include_not_now)? {
            Some(c) => {
                debug!(channel = %channel.id, command = %c.uuid, request = %c.request_type, "command sent");
                (Reply::Plist(c.plist.to_vec()), recorded)
            }
            None => (Reply::Empty, recorded),
        })
    });
    match result {
        Ok((reply, recorded)) => {
            // Logged once, after the commit (a transaction run again logs nothing twice).
            if let (Some(request), Some(uuid)) = (recorded, report.command_uuid.as_deref()) {
                info!(channel = %channel.id, command = uuid, %request, status = report.status.as_str(), "command result");
                crate::metrics::command_result(queue_status(&report.status).as_str());
            }
            reply
        }
        Err(e) => store_failure(e),
    }
}

/// How a report's status is kept (an unknown one as an error).
fn queue_status(status: &Status) -> QueueStatus {
    match status {
        Status::Acknowledged => QueueStatus::Acknowledged,
        Status::CommandFormatError => QueueStatus::FormatError,
        Status::NotNow => QueueStatus::NotNow,
        Status::Error | Status::Idle | Status::Other(_) => QueueStatus::Error,
    }
}

/// Record the report's result; the request type when it was new (not a re-sent report).
fn store_result(
    tx: &mut dyn Tx,
    policy: &crate::reconcile::Policy,
    channel: &str,
    device: &str,
    report: &Report,
    body: &[u8],
) -> Result<Option<String>, StoreError> {
    let Some(uuid) = report.command_uuid.as_deref() else {
        return Ok(None);
    };
    if report.status == Status::Idle {
        return Ok(None);
    }
    if let Status::Other(s) = &report.status {
        warn!(channel, status = %s, "unknown command status; recorded as an error");
    }
    let status = queue_status(&report.status);
    let chain = (!report.error_chain.is_empty())
        .then(|| serde_json::to_value(&report.error_chain).unwrap_or_default());
    let request_type = match tx.record_result(channel, uuid, status, body, chain.as_ref())? {
        Recorded::New(t) => t,
        Recorded::Already(t) => {
            // The device re-sent its report (it did not see our answer): it is answered as
            // before, and nothing it triggers runs again.
            debug!(channel, command = uuid, request = %t, "a report for a command already answered; nothing to do");
            return Ok(None);
        }
        Recorded::Unknown => {
            warn!(
                channel,
                command = uuid,
                "a report for a command not queued for this channel; ignored"
            );
            return Ok(None);
        }
    };
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
    Ok(Some(request_type))
}

/// Keep the device's OS version, name and model current from DeviceInformation answers.
fn update_device_facts(tx: &mut dyn Tx, device: &str, body: &[u8]) -> Result<(), StoreError> {
    let Ok(plist::Value::Dictionary(top)) = crate::apple::plist_in::from_bytes(body) else {
        return Ok(());
    };
    let Some(q) = top.get("QueryResponses").and_then(|q| q.as_dictionary()) else {
        return Ok(());
    };
    let s = |k: &str| q.get(k).and_then(|v| v.as_string()).map(str::to_string);
    let facts = DeviceFacts {
        os_version: s("OSVersion"),
        build_version: s("BuildVersion"),
        device_name: s("DeviceName"),
        model_name: s("ModelName"),
        model: s("Model"),
        product_name: s("ProductName"),
        serial: s("SerialNumber"),
    };
    // One UPDATE of these columns: a fleet-wide DeviceInformation does not reread and reseal
    // every device's secrets.
    if tx.set_device_facts(device, &facts)? == Some(true) {
        // What the device should get depends on its OS version (Nudge or the declaration).
        tx.mark_dirty(&[device.to_string()])?;
    }
    Ok(())
}
