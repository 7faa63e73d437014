//! The mdmctl binary, driven as an admin would drive it, with its output cross-checked by the
//! real `openssl` command line. One module per subcommand.

#[path = "../common/mod.rs"]
mod common;

mod abm;
mod conventions;
mod cutover;
mod demo;
mod generate;
mod get;
mod init;
mod set;
