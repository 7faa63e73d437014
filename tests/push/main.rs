//! APNs: the push client against the local stand-in over real HTTP/2 and TLS, the stand-in
//! against `curl`, and loading push identities.

mod support;

mod identity;
mod push_client;
mod server_usage;
mod stand_in;
