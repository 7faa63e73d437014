//! Stand-ins for what cannot run here: Apple's certificate portals and servers. Used by
//! `mdmctl demo`, the tests and the benchmarks, never by the real flow.
//!
//! Everything here behaves as Apple documents, and everything it issues says `DEMO` in its
//! name so it cannot be mistaken for the real thing.

pub mod abm;
pub mod apns;
pub mod apple;
pub mod cutover;
pub mod device;
pub mod nanomdm;
pub mod nanomdm_server;
