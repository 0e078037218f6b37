//! Shared helpers for the integration tests.
//!
//! Not every test uses every helper, hence the `dead_code` allowance (clippy runs with
//! `-D warnings` over all targets).
#![allow(dead_code)]

pub mod kafka;
pub mod mock;
pub mod registry;
