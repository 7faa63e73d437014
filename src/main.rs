//! The `mdmctl` binary: parse arguments, run, map the outcome to an exit code.
//!
//! Everything else lives in the library (`mdmctl::run`), so tests and other tools can drive
//! the same code. Exit codes: 0 success, 1 an error the user can fix, 2 an unexpected error
//! (a bug), and 0 when stdout is closed early (`mdmctl get devices | head`).

use std::process::ExitCode;

fn main() -> ExitCode {
    mdmctl::install_panic_hook();
    match mdmctl::run(std::env::args_os()) {
        Ok(code) => code,
        Err(err) => mdmctl::report_error(&err),
    }
}
