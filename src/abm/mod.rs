//! Apple Business Manager's device enrollment API: OAuth 1.0a signing (`oauth`), the client
//! that keeps a session and survives Apple's answers (`client`), the enrollment profile checked
//! and completed (`profile`), the device sync (`sync`) and the profile assignment after it
//! (`assign`), both of which record what they did in the store. Uses the server token
//! `assets::abm` decrypts.

pub mod assign;
pub mod client;
pub mod oauth;
pub mod profile;
pub mod sync;

pub use client::{Account, DepClient, DepError, Retry};

use std::sync::Arc;

use crate::store::Store;

/// What `mdmctl abm sync` (and `POST /api/v1/abm/sync`) did: the sync, and the assignment
/// after it (`None` when not asked for, or when it failed: `assign_error` says why).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Pass {
    pub sync: sync::SyncSummary,
    pub assign: Option<assign::AssignSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assign_error: Option<String>,
}

/// The client for the server token in the store, or `None` when none is installed.
pub fn client_for(store: &dyn Store, base_url: &str) -> Result<Option<DepClient>, sync::SyncError> {
    let Some(token) = store.read(crate::assets::abm::server_token)? else {
        return Ok(None);
    };
    Ok(Some(DepClient::new(base_url, &token, Retry::default())?))
}

/// One on-demand pass: sync (`reset` forgets the cursor first), then assign unless `assign` is
/// false. The sync is kept even when the assignment fails; that error comes back apart.
pub async fn sync_now(
    client: &DepClient,
    store: &Arc<dyn Store>,
    reset: bool,
    assign: bool,
    server_url: Option<&str>,
) -> Result<(Pass, Option<assign::AssignError>), sync::SyncError> {
    let synced = sync::sync(client, store, reset).await?;
    if !assign {
        return Ok((
            Pass {
                sync: synced,
                assign: None,
                assign_error: None,
            },
            None,
        ));
    }
    Ok(match assign::assign(client, store, server_url).await {
        Ok(a) => (
            Pass {
                sync: synced,
                assign: Some(a),
                assign_error: None,
            },
            None,
        ),
        Err(e) => (
            Pass {
                sync: synced,
                assign: None,
                assign_error: Some(e.to_string()),
            },
            Some(e),
        ),
    })
}
