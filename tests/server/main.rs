//! `serve` end to end: simulated Macs enroll, check in, get pushed commands and answer them
//! over real HTTP (and TLS), against a real SQLite store and the APNs stand-in.

#[path = "../common/mod.rs"]
mod common;
mod harness;
mod hostile;

mod abm;
mod api;
mod binary;
mod checkins;
mod concurrency;
mod cutover;
mod enrollment;
mod filevault;
mod instances;
mod migration;
mod operations;
mod page;
mod queue;
mod reconcile;
mod refusals;
mod renewal;
mod security;
mod staged;
mod transport;
mod updates;
