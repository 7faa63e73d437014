#![no_main]
//! `cargo fuzz run sql_dump`: see fuzz/README.md.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mdmctl::fuzzing::sql_dump(data));
