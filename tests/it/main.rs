//! Integration tests: one binary (one link of librdkafka), one module per concern.
//!
//! They run against a real Kafka broker (`KAFKA_BOOTSTRAP_SERVERS`, see `scripts/kafka`) and the
//! Elevate stand-in (`elevate_standin`, crates/standin). Every test uses its own topics and group.

mod support;

mod broker;
mod deadletter_producer;
mod handoff;
mod hostile;
mod kafka_edges;
mod mapping_edges;
mod ops;
mod pipeline;
mod registry;
mod replay;
mod routes;
mod send_edges;
mod standin;
mod wire;
mod wire_pipeline;
