//! One `mdmctl` child process measured as a user would see it: wall time, peak RSS (VmHWM of
//! `/proc/PID/status`, polled every 10 ms until it exits) and its stdout. Shared by the
//! benchmarks that run the binary (`#[path]`-included: each bench is its own crate).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run `cmd` to its end; panics with its stderr when it fails (a benchmark that cannot run
/// has nothing to report).
pub fn run_measured(mut cmd: Command, what: &str) -> (Duration, u64, Vec<u8>) {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mdmctl");
    let status_path = format!("/proc/{}/status", child.id());
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = stdout;
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut s, &mut v).expect("read stdout");
        v
    });
    let mut hwm = 0u64;
    loop {
        if let Ok(s) = std::fs::read_to_string(&status_path)
            && let Some(line) = s.lines().find(|l| l.starts_with("VmHWM:"))
        {
            hwm = hwm.max(
                line.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            );
        }
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let wall = start.elapsed();
    let out = reader.join().expect("reader");
    let status = child.wait().expect("wait");
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        panic!("{what} failed: {err}");
    }
    (wall, hwm, out)
}
