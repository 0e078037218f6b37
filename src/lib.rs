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
//! * `kafka` — librdkafka client settings and the owned [`SourceRecord`].
//! * `decode` — bytes → [`CartEvent`] via JSON Pointers; bad input → a named reason. `run` parses
//!   only what the mapping reads, straight into slots (`decode/slots`; `decode/prune` when a
//!   mapping indexes arrays).
//! * [`wire`] — Avro / Protobuf in the Confluent wire format (schema registry) → the JSON decode reads.
//! * `select` (+ `route`) — an event → 0..N [`Notification`]s per route, consent rules, skip reasons.
//! * `request` — notification → the exact HTTP request of Elevate's contract.
//! * `limit` — governor quotas, global and per market, shared across replicas by partitions.
//! * `send` — the HTTP layers: concurrency slot → rate tokens → retry (`classify`, `retry`) →
//!   `client` (one exchange within the request timeout; `client/pool`: keep-alive connections to
//!   Elevate's one origin, HTTP/1.1 or HTTP/2, over rustls).
//! * `deadletter` — parks records with reason headers; done only once acked (`deadletter/produce`:
//!   its producer, with a polling thread that does not spin).
//! * `tracker`, `ledger` — pure offset tracking and ownership generations.
//! * [`offsetmap`] — the done-offset map (and replay's window) in the commit metadata.
//! * `commit` — the one place positions go from the ledger to the broker.
//! * `work` — one record's journey, shared by `run` and `replay` (`work/pool`: the queue its
//!   notifications wait in, served by at most `elevate.max_in_flight_requests` workers).
//! * `ages` — the bounded histogram of event ages at send time (`work` records, `replay` reports).
//! * `consumer` — the consumer context, commit glue, pause/resume and consume errors, shared by
//!   `run` and `replay`; `backpressure` — their one take / pause / resume policy (pure);
//!   [`shutdown`] — signals, the drain and `run`'s final commit.
//! * [`pipeline`] — the `run` loop: group membership, backpressure, commits.
//! * [`replay`] — backfills over a fixed window with manual assignment (`prepare`, then the `live`
//!   or the `dry` pass, `report`).
//! * [`check`], [`demo`] — the operator's other two commands (`demo` with the default `demo`
//!   feature, against the Elevate stand-in of `crates/standin`).
//! * [`admin`], [`metrics`], [`logging`] — the operating surface.
//! * `util` — the wall clock and the poison-tolerant lock, once for everyone.
//!
//! The pure parts (decode, select, request, classify, retry, tracker, ledger, offsetmap,
//! backpressure, limit's arithmetic) do no I/O and are unit- and property-tested.
//!
//! # Surface
//!
//! The commands and the operating surface are public modules ([`config`], [`pipeline`],
//! [`replay`], [`check`], [`admin`], ...), and so are the two codecs ([`offsetmap`], [`wire`]).
//! The stages of the flow are private; what the tests, benchmarks, harness and fuzz targets
//! exercise of them is re-exported at the root ([`map_record`], [`Sender`], [`Ledger`], ...).

// The operator's surface: the commands, their configuration and the operating endpoints. Public
// as whole modules: each is an API (the binary is a thin layer over them).
pub mod admin;
pub mod check;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod replay;
pub mod shutdown;
// Self-contained codecs with an API of their own: the commit metadata's done-offset map, and the
// Confluent wire format with its registry client. Public as whole modules for the tests and the
// benchmarks that exercise their codecs.
pub mod offsetmap;
pub mod wire;

// The stages of a record's flow, private; what the tests, the benchmarks, the harness and the
// fuzz targets exercise of them is re-exported below, by stage.
mod ages;
mod backpressure;
mod classify;
mod client;
mod commit;
mod consumer;
mod deadletter;
mod decode;
mod kafka;
mod ledger;
mod limit;
mod request;
mod retry;
mod route;
mod select;
mod send;
mod tracker;
mod util;
mod work;

pub use client::{Answer, Client, WireRequest};
pub use deadletter::produce::{DeadLetterProducer, Delivered, ReportContext, StartError};
pub use decode::{
    decode, decode_kept, decode_value, parse_kept, CartEvent, Invalid, InvalidReason, Keep, UserContext,
};
pub use kafka::{consumer_config, SourceRecord};
pub use ledger::{Claim, Ledger};
pub use limit::Limiter;
pub use request::{build, endpoint, wire_request, Endpoint, Forwarding, HttpRequest};
pub use route::Routes;
pub use select::{map_record, select, Body, Mapped, Notification, SkipReason};
pub use send::{Outcome, Sender};
pub use tracker::{OffsetTracker, Tracked};
