//! Declarative device management, answered from the store: the sync tokens, the declaration
//! list, each declaration by identifier, and status reports (recorded per device and
//! declaration). The declaration set is [`crate::reconcile::declarations`]'s.

use axum::http::StatusCode;
use tracing::{info, warn};

use super::Reply;
use crate::apple::checkin::{ChannelId, DeclarativeManagement};
use crate::reconcile::declarations::{self, Declaration};
use crate::store::{StoreError, Tx};
use crate::timestamp::Timestamp;

fn json(v: serde_json::Value) -> Reply {
    Reply::Json(v.to_string().into_bytes())
}

fn items(decls: &[Declaration], kind: &str) -> Vec<serde_json::Value> {
    decls
        .iter()
        .filter(|d| d.kind == kind)
        .map(|d| serde_json::json!({ "Identifier": d.identifier, "ServerToken": d.server_token }))
        .collect()
}

pub(crate) fn handle(
    tx: &mut dyn Tx,
    channel: &ChannelId,
    d: &DeclarativeManagement,
) -> Result<Reply, StoreError> {
    let endpoint = d.endpoint.trim_start_matches('/');
    let device = channel.device_id.as_str();
    Ok(match endpoint {
        "tokens" => {
            let decls = declarations::device_declarations(tx, device)?;
            json(serde_json::json!({
                "SyncTokens": {
                    "DeclarationsToken": declarations::token(&decls),
                    "Timestamp": Timestamp::now().to_string(),
                }
            }))
        }
        "declaration-items" => {
            let decls = declarations::device_declarations(tx, device)?;
            json(serde_json::json!({
                "Declarations": {
                    "Activations": items(&decls, "activation"),
                    "Configurations": items(&decls, "configuration"),
                    "Assets": [],
                    "Management": [],
                },
                "DeclarationsToken": declarations::token(&decls),
            }))
        }
        "status" => {
            let Some(data) = &d.data else {
                return Ok(Reply::Refuse(
                    StatusCode::BAD_REQUEST,
                    "a status report without Data".into(),
                ));
            };
            let rows = declarations::parse_status_report(device, data, Timestamp::now());
            if rows.is_empty() {
                info!(channel = %channel.id, bytes = data.len(), "declarative status report without declaration items");
            } else {
                for r in rows
                    .iter()
                    .filter(|r| r.valid.as_deref() == Some("invalid"))
                {
                    warn!(device, declaration = %r.identifier, reasons = %r.reasons.clone().unwrap_or_default(), "the device reports a declaration invalid");
                }
                tx.put_declaration_statuses(&rows)?;
            }
            Reply::Empty
        }
        e => match e
            .strip_prefix("declaration/")
            .and_then(|r| r.split_once('/'))
        {
            Some((kind, id)) => {
                let decls = declarations::device_declarations(tx, device)?;
                match decls
                    .into_iter()
                    .find(|d| d.kind == kind && d.identifier == id)
                {
                    Some(d) => Reply::Json(d.body),
                    None => Reply::Refuse(StatusCode::NOT_FOUND, format!("no declaration {e}")),
                }
            }
            None => Reply::Refuse(
                StatusCode::NOT_FOUND,
                format!("unknown declarative endpoint {e}"),
            ),
        },
    })
}
