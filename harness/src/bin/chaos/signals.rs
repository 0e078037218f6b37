//! Small process tools of the run: signals to the processes it started, waiting for a condition
//! (bounded, warning on timeout), random hex. Guarantees: only pids this run started are signalled.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;

use crate::say;

/// `n` random hex digits.
pub fn hex(rng: &mut StdRng, n: usize) -> String {
    (0..n)
        .map(|_| format!("{:x}", rng.random_range(0..16u8)))
        .collect()
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

pub const SIGKILL: i32 = 9;

pub const SIGTERM: i32 = 15;

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: signalling a process this run started.
    unsafe {
        kill(pid as i32, sig);
    }
}

/// Polls `cond` every 200 ms until true or `timeout`; says so and returns false on timeout.
pub async fn await_cond<F, Fut>(timeout: Duration, what: &str, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            say(format!("WARNING: timed out after {timeout:?} waiting for {what}"));
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
