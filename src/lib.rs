//! elevate-sink: a shop's Kafka cart events in, Voyado Elevate add-to-cart notifications out,
//! at least once.
//!
//! # Layout
//!
//! The modules read like the flow of a record:
//!
//! ```text
//! consume (pipeline, consumer, kafka) → decode → select (+ map) → request → limit → send → classify/retry
//!                                                                       │
//!            commit (ledger ← tracker) ←──── done: 204, or parked (deadletter) ───┘
//! ```
//!
//! * [`config`] — the one typed configuration tree (TOML + `ELEVATE_SINK__*` env overrides).
//! * [`kafka`] — librdkafka client settings and the owned [`kafka::SourceRecord`].
//! * [`decode`] — bytes → [`decode::CartEvent`] via JSON Pointers; bad input → a named reason.
//! * [`wire`] — Avro / Protobuf in the Confluent wire format (schema registry) → the JSON decode reads.
//! * [`select`] — cart event → 0..N [`select::Notification`]s, consent rules, skip reasons.
//! * [`request`] — notification → the exact HTTP request of Elevate's contract.
//! * [`limit`] — governor quotas, global and per market, shared across replicas by partitions.
//! * [`send`] — the HTTP layers: limit → concurrency → retry (`classify`, `retry`) → timeout.
//! * `deadletter` — parks records with reason headers; done only once acked.
//! * [`tracker`], [`ledger`] — pure offset tracking and ownership generations.
//! * [`offsetmap`] — the done-offset map (and replay's window) in the commit metadata.
//! * `commit` — the one place positions go from the ledger to the broker.
//! * `work` — one record's journey, shared by `run` and `replay`.
//! * `ages` — the bounded histogram of event ages at send time (`work` records, `replay` reports).
//! * `consumer` — the consumer context, commit glue, pause/resume and consume errors, shared by
//!   `run` and `replay`; `backpressure` — their one take / pause / resume policy (pure);
//!   [`shutdown`] — signals, the drain and `run`'s final commit.
//! * [`pipeline`] — the `run` loop: group membership, backpressure, commits.
//! * [`replay`] — backfills over a fixed window with manual assignment (`prepare`, then the `live`
//!   or the `dry` pass, `report`).
//! * [`check`], `demo` — the operator's other two commands (`demo` with the default `demo`
//!   feature, against the Elevate stand-in of `crates/standin`).
//! * [`admin`], [`metrics`], [`logging`] — the operating surface.
//! * `util` — the wall clock and the poison-tolerant lock, once for everyone.
//!
//! The pure parts (decode, select, request, classify, retry, tracker, ledger, offsetmap,
//! backpressure, limit's arithmetic) do no I/O and are unit- and property-tested.

pub mod admin;
mod ages;
mod backpressure;
pub mod check;
mod classify;
mod commit;
pub mod config;
mod consumer;
mod deadletter;
pub mod decode;
#[cfg(feature = "demo")]
pub mod demo;
pub mod kafka;
pub mod ledger;
pub mod limit;
pub mod logging;
pub mod metrics;
pub mod offsetmap;
pub mod pipeline;
pub mod replay;
pub mod request;
mod retry;
pub mod route;
pub mod select;
pub mod send;
pub mod shutdown;
pub mod tracker;
mod util;
pub mod wire;
mod work;
