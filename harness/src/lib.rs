//! The harness: the programs that measure and shake the real service binary against the real
//! broker and the Elevate stand-in — `bench` (the benchmark table) and `chaos` (faults, then
//! counts). This library holds the little both need; the broker helpers are `testkit`'s.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the Unix epoch (the stand-in stamps accepts the same way).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `x` rounded to `digits` decimal places.
pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// The directory of the binaries of the profile this program was built with (`target/<profile>`,
/// where it sits itself): the service and the stand-in are built there too.
pub fn bin_dir() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.parent()
        .map(PathBuf::from)
        .ok_or_else(|| std::io::Error::other("the harness binary has no directory"))
}
