//! Test tooling shared by the integration tests, the criterion benches and the harness (bench,
//! chaos): one copy of each helper. Guarantees: deterministic generators for a seed, broker
//! helpers that wait for conditions (never fixed sleeps); limits: no broker of its own.
//!
//! * [`kafka`] — one client config, topic creation (waits for leaders), produce, offsets, reading back.
//! * [`metrics`] — the one reader of the service's Prometheus text.
//! * [`events`] — realistic default-shape cart events, deterministic for a seed.
//! * [`corpus`] — the hostile records of `tests/data/` and what must become of each.
//!
//! It does not depend on the product crate, so the product's tests can use it.

pub mod corpus;
pub mod events;
pub mod kafka;
pub mod metrics;

use std::path::PathBuf;

/// The repository's root directory (where `scripts/`, `tests/data/` and the workspace manifest are).
pub fn repo_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .expect("crates/testkit sits two levels below the repository root")
}
