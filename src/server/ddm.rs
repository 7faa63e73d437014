//! Declarative device management, answered in-process: the sync tokens, the declaration list,
//! each declaration, and status reports. Until desired state defines declarations the set is
//! empty; the tokens are stable so devices do not re-sync for nothing.

use axum::http::StatusCode;
use tracing::info;

use super::Reply;
use crate::apple::checkin::{ChannelId, DeclarativeManagement};
use crate::store::{StoreError, Tx};

/// The token of an empty declaration set (any stable string works; devices compare it).
const EMPTY_TOKEN: &str = "mdmctl-empty-0";

pub(crate) fn handle(
    _tx: &mut dyn Tx,
    channel: &ChannelId,
    d: &DeclarativeManagement,
) -> Result<Reply, StoreError> {
    let endpoint = d.endpoint.trim_start_matches('/');
    Ok(match endpoint {
        "tokens" => Reply::Json(
            serde_json::json!({
                "SyncTokens": { "DeclarationsToken": EMPTY_TOKEN, "Timestamp": "2024-01-01T00:00:00Z" }
            })
            .to_string()
            .into_bytes(),
        ),
        "declaration-items" => Reply::Json(
            serde_json::json!({
                "Declarations": { "Activations": [], "Configurations": [], "Assets": [], "Management": [] },
                "DeclarationsToken": EMPTY_TOKEN,
            })
            .to_string()
            .into_bytes(),
        ),
        "status" => {
            info!(channel = %channel.id, bytes = d.data.as_ref().map_or(0, Vec::len), "declarative status report");
            Reply::Empty
        }
        e if e.starts_with("declaration/") => Reply::Refuse(StatusCode::NOT_FOUND, format!("no declaration {e}")),
        e => Reply::Refuse(StatusCode::NOT_FOUND, format!("unknown declarative endpoint {e}")),
    })
}
