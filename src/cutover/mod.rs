//! The cutover from the old MDM: what must hold before DNS moves (`check`, the go / no-go of
//! `mdmctl cutover check`), and the network probes it needs (`probe`: TLS chains, answers from
//! the old server and APNs, the DNS name's current answer and TTL).
//!
//! Also moving devices between the old server and mdmctl (`stage`: `cutover set`, `cutover
//! rollback`) and where the cutover stands (`status`, which `serve`'s API answers with).
//! Depends on the store, `pki` and `apple`, never on `server` (which uses `status`).

pub mod check;
pub mod dns;
pub mod probe;
pub mod stage;
pub mod status;

pub use check::{Check, OldProfile, Options, Report, Status};
