//! Shared helpers for the integration tests.
//!
//! Not every test uses every helper, hence the `dead_code` allowance (clippy runs with
//! `-D warnings` over all targets).
#![allow(dead_code)]

pub mod kafka;
pub mod mock;
pub mod registry;
pub mod sink;

/// With `RUST_LOG` set, sends the logs of in-process pipelines to the test's output (once per
/// test binary); without it, nothing is installed.
pub fn init_test_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .with_ansi(false)
                .try_init();
        }
    });
}
