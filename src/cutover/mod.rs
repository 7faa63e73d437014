//! The cutover from the old MDM: what must hold before DNS moves (`check`, the go / no-go of
//! `mdmctl cutover check`), and the network probes it needs (`probe`: TLS chains, answers from
//! the old server and APNs, the DNS name's current answer and TTL).
//!
//! Depends on the store, `pki`, `apple` and `server`'s path constants; nothing here is used by
//! `serve`.

pub mod check;
pub mod dns;
pub mod probe;
pub mod stage;

pub use check::{Check, OldProfile, Options, Report, Status};
