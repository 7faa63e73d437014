//! Check-in messages: enrollment (Authenticate, TokenUpdate), CheckOut, bootstrap tokens,
//! UserAuthenticate (declined with 410), DeclarativeManagement, GetToken (declined).
//! Each runs in one write transaction.

use axum::http::StatusCode;
use tracing::{info, warn};
use zeroize::Zeroizing;

use super::device::{authorize, record, store_failure};
use super::{AppState, Reply};
use crate::apple::checkin::{self, Authenticate, Checkin, CheckinMessage, TokenUpdate};
use crate::pki::identity::Verified;
use crate::reconcile::renewal;
use crate::store::{
    ChallengePurpose, DeviceRecord, EnrollmentRecord, IssuedHow, NewActivity, StoreError, Tx,
};
use crate::timestamp::Timestamp;

pub(crate) fn handle(st: &AppState, v: &Verified, body: &[u8]) -> Reply {
    let msg = match checkin::parse(body) {
        Ok(m) => m,
        Err(e) => {
            warn!(error = %e, "refused a check-in that does not parse");
            crate::metrics::request(false, "unparsed", crate::metrics::Outcome::Refused);
            return Reply::Refuse(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let channel = match msg.sender.channel() {
        Ok(c) => c,
        Err(e) => return Reply::Refuse(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let name = msg.message.name().to_string();
    // Authenticate decides which identity a device is bound to, an invariant over several rows
    // (one device per certificate, rebind grants, challenges): SERIALIZABLE (Mode::Write). The
    // other messages are single-row upserts and conditional updates of the device's own rows,
    // correct at READ COMMITTED (Mode::WriteRows), where concurrent devices do not abort each other.
    if let CheckinMessage::Authenticate(a) = &msg.message {
        let result = st.store.write(|tx| -> Result<Reply, StoreError> {
            let reply = authenticate(st, tx, &channel, v, a, body)?;
            mirror(st, tx, &channel, &name, body, &reply)?;
            Ok(reply)
        });
        return finish(st, &channel, &msg, &name, result);
    }
    let result = st.store.write_rows(|tx| -> Result<Reply, StoreError> {
        let authz = match authorize(st, tx, &channel, v)? {
            Ok(a) => a,
            Err(refusal) => return Ok(refusal),
        };
        record(tx, &channel, v, &authz)?;
        tx.touch(&channel.id, &channel.device_id)?;
        let reply = dispatch(st, tx, &channel, &msg, body)?;
        mirror(st, tx, &channel, &name, body, &reply)?;
        Ok(reply)
    });
    finish(st, &channel, &msg, &name, result)
}

/// The check-ins the old server needs to take a device back (`--upstream-migration-url`).
const MIRRORED: &[&str] = &[
    "Authenticate",
    "TokenUpdate",
    "SetBootstrapToken",
    "CheckOut",
];

/// During a staged cutover with mirroring, keep an accepted check-in for the old server, in the
/// transaction that records it (so it is sent if and only if it was recorded).
fn mirror(
    st: &AppState,
    tx: &mut dyn Tx,
    channel: &checkin::ChannelId,
    name: &str,
    body: &[u8],
    reply: &Reply,
) -> Result<(), StoreError> {
    if st.config.mirror.is_some()
        && MIRRORED.contains(&name)
        && !matches!(reply, Reply::Refuse(..) | Reply::Unavailable { .. })
    {
        tx.mirror_enqueue(&channel.device_id, name, body)?;
    }
    Ok(())
}

fn finish(
    st: &AppState,
    channel: &checkin::ChannelId,
    msg: &Checkin,
    name: &str,
    result: Result<Reply, StoreError>,
) -> Reply {
    let reply = finish_reply(st, channel, msg, name, result);
    crate::metrics::request(false, name, super::device::outcome(&reply));
    reply
}

fn finish_reply(
    st: &AppState,
    channel: &checkin::ChannelId,
    msg: &Checkin,
    name: &str,
    result: Result<Reply, StoreError>,
) -> Reply {
    match result {
        Ok(reply) => {
            if matches!(reply, Reply::Refuse(..)) {
                return reply;
            }
            info!(message = %name, channel = %channel.id, "check-in");
            if matches!(
                msg.message,
                CheckinMessage::TokenUpdate(_) | CheckinMessage::Authenticate(_)
            ) {
                st.forget_touch(&channel.id);
            }
            reply
        }
        Err(e) => store_failure(e),
    }
}

fn dispatch(
    st: &AppState,
    tx: &mut dyn Tx,
    channel: &checkin::ChannelId,
    msg: &Checkin,
    body: &[u8],
) -> Result<Reply, StoreError> {
    Ok(match &msg.message {
        // Handled before authorization (it is what binds the identity).
        CheckinMessage::Authenticate(_) => Reply::Empty,
        CheckinMessage::TokenUpdate(t) => token_update(st, tx, channel, msg, t, body)?,
        CheckinMessage::CheckOut => {
            let n = tx.disable_device(&channel.device_id)?;
            tx.record_activity(&NewActivity {
                actor: "serve".into(),
                kind: "device.checked_out".into(),
                device_id: Some(channel.device_id.clone()),
                summary: format!(
                    "{} removed its MDM profile ({n} channels disabled)",
                    channel.device_id
                ),
                details: serde_json::json!({ "channels": n }),
            })?;
            Reply::Empty
        }
        CheckinMessage::SetBootstrapToken(s) => {
            tx.set_bootstrap_token(&channel.device_id, s.bootstrap_token.as_deref())?;
            Reply::Empty
        }
        CheckinMessage::GetBootstrapToken => {
            let token = tx
                .device(&channel.device_id)?
                .and_then(|d| d.bootstrap_token);
            let mut dict = plist::Dictionary::new();
            if let Some(t) = &token {
                dict.insert("BootstrapToken".into(), plist::Value::Data(t.to_vec()));
                tx.record_activity(&NewActivity {
                    actor: "serve".into(),
                    kind: "device.bootstrap_token_served".into(),
                    device_id: Some(channel.device_id.clone()),
                    summary: format!("served the bootstrap token to {}", channel.device_id),
                    details: serde_json::json!({}),
                })?;
            }
            Reply::Plist(plist_xml(dict))
        }
        // Declined as NanoMDM does: 410 tells the device not to ask again for this user.
        CheckinMessage::UserAuthenticate => {
            Reply::Refuse(StatusCode::GONE, "UserAuthenticate declined".into())
        }
        CheckinMessage::DeclarativeManagement(d) => super::ddm::handle(tx, channel, d)?,
        CheckinMessage::GetToken { service_type } => {
            warn!(service = %service_type, channel = %channel.id, "declined GetToken: no token service is configured");
            Reply::Refuse(StatusCode::BAD_REQUEST, "GetToken declined".into())
        }
        CheckinMessage::Unknown(t) => {
            warn!(message = %t, channel = %channel.id, "unknown check-in message type");
            Reply::Refuse(StatusCode::BAD_REQUEST, format!("unknown message type {t}"))
        }
    })
}

pub(crate) fn plist_xml(dict: plist::Dictionary) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = plist::Value::Dictionary(dict).to_writer_xml(&mut out);
    out
}

/// Whether an Authenticate's certificate may bind to the device it names, and how.
enum Binding {
    /// The identity already recorded: the same enrollment authenticating again.
    Same,
    /// The identity an identity renewal mdmctl sent this device issued: the same enrollment,
    /// restarting check-in.
    Renewal,
    /// A new identity for a known device (a real re-enrollment), and what allows it.
    Rebind(String),
    /// A device mdmctl does not know yet, joining this team.
    New { team_id: Option<i64> },
    /// Refused, and why (logged, recorded, never sent to the device).
    Refused(String),
}

/// The rules (docs/security.md): a known device's identity moves only to a certificate
/// mdmctl's SCEP issued for that device (its renewal, an enrollment secret scoped to it, a
/// SCEP renewal signed by its current identity), or with the admin's `mdmctl device rebind`;
/// a new device needs a certificate issued under an enrollment secret (or `--open-enrollment`).
fn binding(
    st: &AppState,
    tx: &mut dyn Tx,
    id: &str,
    existing: Option<&DeviceRecord>,
    v: &Verified,
) -> Result<Binding, StoreError> {
    let issued = tx.issued(&v.sha256)?;
    let scope = match issued.as_ref().and_then(|i| i.challenge_sha256.as_deref()) {
        Some(c) => tx.challenge_scope(c)?,
        None => None,
    };
    let Some(d) = existing else {
        if st.config.open_enrollment {
            return Ok(Binding::New {
                team_id: scope.and_then(|s| s.team_id),
            });
        }
        return Ok(match (&issued, scope) {
            (Some(i), Some(s)) if i.how == IssuedHow::OneTime => match s.purpose {
                ChallengePurpose::Renewal => {
                    Binding::Refused("a certificate a renewal issued for another device".into())
                }
                _ if s.device_id.as_deref().is_some_and(|d| d != id) => Binding::Refused(
                    "its enrollment secret is for another device".into(),
                ),
                _ => Binding::New { team_id: s.team_id },
            },
            // The fixed challenge is a secret the admin handed out.
            (Some(i), _) if i.how == IssuedHow::Static => Binding::New { team_id: None },
            _ => Binding::Refused(
                "a new device needs an identity from mdmctl's SCEP, obtained with an enrollment secret".into(),
            ),
        });
    };
    let recorded = d.identity_sha256.as_deref();
    if recorded == Some(v.sha256.as_str()) {
        return Ok(if renewal::renewed_to(tx, id, &v.sha256)? {
            Binding::Renewal
        } else {
            Binding::Same
        });
    }
    if renewal::is_renewal(tx, id, v.by_issuing_ca, &v.sha256)? {
        return Ok(Binding::Renewal);
    }
    if let Some(s) = &scope
        && s.purpose == ChallengePurpose::Enroll
        && s.device_id.as_deref() == Some(id)
    {
        return Ok(Binding::Rebind(
            "re-enrolled with an enrollment secret for this device".into(),
        ));
    }
    if let Some(i) = &issued
        && i.how == IssuedHow::Renewal
        && i.device_id.as_deref() == Some(id)
    {
        return Ok(Binding::Rebind(
            "a SCEP renewal signed by its current identity".into(),
        ));
    }
    if issued.is_some()
        && let Some(by) = tx.take_rebind(id)?
    {
        return Ok(Binding::Rebind(format!(
            "allowed by {by} (`mdmctl device rebind`)"
        )));
    }
    if recorded.is_none() && d.source.starts_with("imported") && st.config.allow_retro_association {
        return Ok(Binding::Rebind(
            "its first identity (--allow-retro-association)".into(),
        ));
    }
    Ok(Binding::Refused(match (&issued, recorded) {
        (None, _) => {
            "a new identity for a known device must come from mdmctl's SCEP, issued for that device"
                .into()
        }
        _ => "a certificate mdmctl's SCEP issued, but not for this device".into(),
    }))
}

/// Authenticate: the device is enrolling (or re-enrolling) and binds its new identity. Its
/// channels stay disabled until its TokenUpdate, and what was queued for the old enrollment
/// is dropped. An Authenticate that only restarts check-in (after an identity renewal) keeps
/// the enrollment as it is.
fn authenticate(
    st: &AppState,
    tx: &mut dyn Tx,
    channel: &checkin::ChannelId,
    v: &Verified,
    a: &Authenticate,
    body: &[u8],
) -> Result<Reply, StoreError> {
    if !channel.is_device_channel() {
        return Ok(Reply::Refuse(
            StatusCode::BAD_REQUEST,
            "Authenticate on a user channel".into(),
        ));
    }
    let id = &channel.device_id;
    if let Some(other) = tx.device_by_identity(&v.sha256)?
        && &other != id
    {
        warn!(device = %id, other = %other, "refused Authenticate: the certificate is bound to another device");
        return Ok(Reply::Refuse(
            StatusCode::FORBIDDEN,
            "certificate bound to another device".into(),
        ));
    }
    let existing = tx.device(id)?;
    let how = binding(st, tx, id, existing.as_ref(), v)?;
    let (rebind_reason, team_id) = match how {
        Binding::Renewal => {
            if existing.as_ref().and_then(|d| d.identity_sha256.as_deref()) != Some(&v.sha256) {
                renewal::complete(tx, id, &v.sha256, v.not_after)?;
            }
            return restart_checkin(tx, id, v, a, body);
        }
        Binding::Refused(why) => {
            warn!(device = %id, reason = %why, "refused Authenticate: the identity may not bind to this device");
            tx.record_activity(&NewActivity {
                actor: "serve".into(),
                kind: "device.bind_refused".into(),
                device_id: existing.as_ref().map(|d| d.id.clone()),
                summary: format!(
                    "refused an Authenticate for {id}: {why}{}",
                    if existing.is_some() {
                        " (if this device really re-enrolled, allow it with `mdmctl device rebind`)"
                    } else {
                        ""
                    }
                ),
                details: serde_json::json!({
                    "udid": id, "presented_sha256": v.sha256, "reason": why,
                    "known_device": existing.is_some(),
                }),
            })?;
            return Ok(Reply::Refuse(StatusCode::FORBIDDEN, why));
        }
        Binding::Same => (None, None),
        Binding::Rebind(why) => (Some(why), None),
        Binding::New { team_id } => (None, team_id),
    };
    let now = Timestamp::now();
    let mut d = existing.clone().unwrap_or_else(|| DeviceRecord {
        id: id.clone(),
        source: "enrolled".into(),
        ..Default::default()
    });
    update_facts(&mut d, a);
    d.authenticate_raw = Some(body.to_vec());
    d.enrolled_at = Some(now);
    d.last_seen_at = Some(now);
    d.identity_sha256 = Some(v.sha256.clone());
    d.identity_not_after = Some(v.not_after);
    // A new enrollment starts without a bootstrap token (the device sends a new one).
    d.bootstrap_token = None;
    let first_contact = d.source.starts_with("imported") && d.migrated_at.is_none();
    if first_contact {
        d.migrated_at = Some(now);
    }
    tx.put_device(&d)?;
    // A new device joins the team of the enrollment secret it enrolled with.
    if existing.is_none()
        && let Some(team) = team_id
        && let Some(t) = tx.teams()?.into_iter().find(|t| t.id == team)
    {
        tx.set_device_team(id, Some(&t.name))?;
    }
    // An Apple Business Manager device: no longer pending.
    if let Some(serial) = d.serial.as_deref() {
        tx.set_abm_enrolled(serial, id)?;
    }
    tx.disable_device(id)?;
    let dropped = tx.clear_queue(id)?;
    let (kind, verb) = if existing.is_some() {
        ("device.reenrolled", "re-enrolled")
    } else {
        ("device.enrolled", "enrolled")
    };
    tx.record_activity(&NewActivity {
        actor: "serve".into(),
        kind: kind.into(),
        device_id: Some(id.clone()),
        summary: format!(
            "{id} {verb} ({} {})",
            d.model_name.as_deref().unwrap_or("device"),
            d.serial.as_deref().unwrap_or("")
        ),
        details: serde_json::json!({
            "serial": d.serial, "model": d.model, "os_version": d.os_version,
            "identity_sha256": v.sha256, "identity_not_after": v.not_after,
            "by_issuing_ca": v.by_issuing_ca, "queue_dropped": dropped,
            "new_identity_because": rebind_reason,
        }),
    })?;
    if first_contact {
        tx.record_activity(&NewActivity {
            actor: "serve".into(),
            kind: "device.migrated".into(),
            device_id: Some(id.clone()),
            summary: format!("first contact after cutover from {id} (re-enrolled)"),
            details: serde_json::json!({ "sha256": v.sha256 }),
        })?;
    }
    Ok(Reply::Empty)
}

/// An Authenticate that restarts check-in for an enrollment that stays (after an identity
/// renewal): the device's facts and raw message are updated; its channels stay enabled, and
/// its queue and bootstrap token are kept (clearing them is what cost Fleet its devices'
/// bootstrap tokens: fleetdm/fleet#41167).
fn restart_checkin(
    tx: &mut dyn Tx,
    id: &str,
    v: &Verified,
    a: &Authenticate,
    body: &[u8],
) -> Result<Reply, StoreError> {
    let Some(mut d) = tx.device(id)? else {
        return Ok(Reply::Refuse(
            StatusCode::FORBIDDEN,
            "unknown device".into(),
        ));
    };
    // A renewal is sent on a check-in, so its device has been seen (and counted as migrated).
    update_facts(&mut d, a);
    d.authenticate_raw = Some(body.to_vec());
    d.last_seen_at = Some(Timestamp::now());
    tx.put_device(&d)?;
    tx.record_activity(&NewActivity {
        actor: "serve".into(),
        kind: "device.checkin_restarted".into(),
        device_id: Some(id.to_string()),
        summary: format!(
            "{id} restarted check-in with its renewed identity; enrollment, queue and bootstrap token kept"
        ),
        details: serde_json::json!({ "identity_sha256": v.sha256, "identity_not_after": v.not_after }),
    })?;
    Ok(Reply::Empty)
}

/// What an Authenticate says about the device, over what was known.
fn update_facts(d: &mut DeviceRecord, a: &Authenticate) {
    let keep = |new: &Option<String>, old: &Option<String>| new.clone().or_else(|| old.clone());
    d.serial = keep(&a.serial_number, &d.serial);
    d.model = keep(&a.model, &d.model);
    d.model_name = keep(&a.model_name, &d.model_name);
    d.product_name = keep(&a.product_name, &d.product_name);
    d.os_version = keep(&a.os_version, &d.os_version);
    d.build_version = keep(&a.build_version, &d.build_version);
    d.device_name = keep(&a.device_name, &d.device_name);
}

/// TokenUpdate: the channel's push credentials (and, on the device channel, its unlock token).
fn token_update(
    st: &AppState,
    tx: &mut dyn Tx,
    channel: &checkin::ChannelId,
    msg: &Checkin,
    t: &TokenUpdate,
    body: &[u8],
) -> Result<Reply, StoreError> {
    let now = Timestamp::now();
    let existing = tx.enrollment(&channel.id)?;
    if let Ok(loaded) = st.trust.current(st.store.as_ref())
        && let Some(topic) = &loaded.topic
        && topic != &t.topic
    {
        warn!(
            channel = %channel.id, device_topic = %t.topic, push_topic = %topic,
            "the device's topic differs from the push certificate's: it cannot be woken"
        );
    }
    let e = EnrollmentRecord {
        id: channel.id.clone(),
        device_id: channel.device_id.clone(),
        kind: channel.kind.to_string(),
        user_id: msg
            .sender
            .user_id
            .clone()
            .or_else(|| msg.sender.enrollment_user_id.clone()),
        user_short_name: msg.sender.user_short_name.clone(),
        user_long_name: msg.sender.user_long_name.clone(),
        topic: t.topic.clone(),
        push_magic: Some(Zeroizing::new(t.push_magic.clone())),
        token: Some(Zeroizing::new(t.token.clone())),
        token_update_raw: Some(Zeroizing::new(body.to_vec())),
        enabled: true,
        last_seen_at: Some(now),
    };
    tx.put_enrollment(&e)?;
    tx.record_push_error(&channel.id, None)?;
    if channel.is_device_channel()
        && let Some(mut d) = tx.device(&channel.device_id)?
    {
        d.token_update_raw = Some(Zeroizing::new(body.to_vec()));
        if let Some(u) = &t.unlock_token {
            d.unlock_token = Some(Zeroizing::new(u.clone()));
        }
        d.last_seen_at = Some(now);
        tx.put_device(&d)?;
    }
    if existing.is_none() {
        if channel.is_device_channel() {
            // A new enrollment: its profiles go out once it can be pushed.
            tx.mark_dirty(std::slice::from_ref(&channel.device_id))?;
        }
        tx.record_activity(&NewActivity {
            actor: "serve".into(),
            kind: "enrollment.added".into(),
            device_id: Some(channel.device_id.clone()),
            summary: format!("{} channel {} can now be pushed", channel.kind, channel.id),
            details: serde_json::json!({ "channel": channel.id, "kind": channel.kind, "topic": t.topic }),
        })?;
    }
    // A new channel, or a Mac back in Setup Assistant (erased, and enrolling again over its old
    // channel): held until its profiles are verified.
    if channel.is_device_channel() && (existing.is_none() || t.awaiting_configuration) {
        setup_assistant(tx, &channel.device_id, t.awaiting_configuration, now)?;
    }
    Ok(Reply::Empty)
}

/// A new device channel: a Mac waiting in Setup Assistant (`AwaitingConfiguration`) is held
/// until its profiles are verified (the reconciler's `release` step sends DeviceConfigured).
/// An ABM device whose record carries `mdm_migration_deadline` and that is *not* in Setup
/// Assistant is migrating from another MDM with its data (ABM-driven migration); one in Setup
/// Assistant is a new or erased Mac, set up like any other, deadline or not (Fleet's
/// fleetdm/fleet#50725 took those for migrations and never released them).
fn setup_assistant(
    tx: &mut dyn Tx,
    device_id: &str,
    awaiting: bool,
    now: Timestamp,
) -> Result<(), StoreError> {
    // Held once: a repeated TokenUpdate neither restarts the wait nor repeats the activity.
    if awaiting && !tx.set_awaiting_configuration(device_id, Some(now))? {
        return Ok(());
    }
    let Some(serial) = tx.device(device_id)?.and_then(|d| d.serial) else {
        return Ok(());
    };
    let Some(deadline) = tx
        .abm_device(&serial)?
        .and_then(|a| a.migration_deadline)
        .filter(|d| !d.is_empty())
    else {
        return Ok(());
    };
    let (kind, summary) = if awaiting {
        (
            "abm.setup",
            format!(
                "{device_id} ({serial}) enrolled from Setup Assistant: a new or erased Mac, set up as one (its ABM record carries a migration deadline, {deadline})"
            ),
        )
    } else {
        (
            "abm.migrated",
            format!(
                "{device_id} ({serial}) migrated to this server through Apple Business Manager (deadline {deadline}), keeping its data; its profiles from the old MDM are replaced by this server's"
            ),
        )
    };
    tx.record_activity(&NewActivity {
        actor: "serve".into(),
        kind: kind.into(),
        device_id: Some(device_id.to_string()),
        summary,
        details: serde_json::json!({ "serial": serial, "mdm_migration_deadline": deadline, "setup_assistant": awaiting }),
    })?;
    Ok(())
}
