//! Apple Business Manager's device enrollment API: OAuth 1.0a signing (`oauth`) and the client
//! that keeps a session and survives Apple's answers (`client`). Uses the server token
//! `assets::abm` decrypts; nothing here touches the store.

pub mod client;
pub mod oauth;
pub mod sync;

pub use client::{Account, DepClient, DepError, Retry};
