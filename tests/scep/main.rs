//! SCEP (RFC 8894): our server functions against our client, the `openssl` command line, and
//! independent SCEP implementations from Debian (micromdm's `scepclient`/`scepserver`, certmonger's
//! `scep-submit`) when they are installed.

mod support;

mod garbage;
mod interop_certmonger;
mod interop_scepclient;
mod interop_scepserver;
mod openssl_cli;
mod roundtrip;
