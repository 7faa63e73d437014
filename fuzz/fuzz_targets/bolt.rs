#![no_main]
//! `cargo fuzz run bolt`: see fuzz/README.md.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mdmctl::fuzzing::bolt(data));
