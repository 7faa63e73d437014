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
