//! `demo`: the whole pipeline on an in-process Kafka and an in-process Elevate stand-in.
