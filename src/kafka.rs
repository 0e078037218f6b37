//! Kafka plumbing shared by `run` and `replay`: client configs built from `[kafka]` (secrets
//! applied, never logged), the owned copy of a source record that in-flight work keeps, and what
//! a consume error means. Guarantees: auto-commit and auto offset store are always off (offsets
//! are committed only from the ledger); the dead-letter producer is idempotent with `acks=all`;
//! every consume error is one of four kinds ([`ConsumeError`]), so none is passed over unnamed.

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::{Config, Secret};

/// A consumed record, detached from librdkafka so in-flight work can hold it.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Record key.
    pub key: Option<Vec<u8>>,
    /// Record value.
    pub value: Option<Vec<u8>>,
    /// Record headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Record timestamp (epoch ms), if any.
    pub timestamp_ms: Option<i64>,
}

impl SourceRecord {
    /// Copies what we need out of a borrowed message.
    pub fn from_message(m: &BorrowedMessage<'_>) -> Self {
        SourceRecord {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
            timestamp_ms: m.timestamp().to_millis(),
        }
    }
}

/// The librdkafka settings common to every client: bootstrap, pass-through, secrets.
pub fn base_client_config(cfg: &Config, secrets: &[(String, Secret)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.bootstrap_servers);
    for (k, v) in &cfg.kafka.properties {
        c.set(k, v);
    }
    for (k, s) in secrets {
        c.set(k, s.expose());
    }
    c
}

/// Consumer-only property names that must not reach a producer (librdkafka warns on them).
fn is_consumer_property(k: &str) -> bool {
    k.starts_with("fetch.")
        || k.starts_with("queued.")
        || k.starts_with("session.")
        || k.starts_with("heartbeat.")
        || k.starts_with("group.")
        || k.starts_with("max.poll.")
        || k.starts_with("auto.offset.")
        || k.starts_with("partition.assignment.")
        || k.starts_with("enable.auto.")
        || k.starts_with("statistics.")
        || k == "isolation.level"
        || k == "check.crcs"
}

/// Consumer settings for `group_id`: explicit commits only, cooperative-sticky by default.
pub fn consumer_config(cfg: &Config, secrets: &[(String, Secret)], group_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    // Defaults first, so pass-through properties can override the tunables.
    c.set("partition.assignment.strategy", "cooperative-sticky");
    c.set("auto.offset.reset", "earliest");
    c.set("fetch.queue.backoff.ms", "20");
    // Bounded prefetch: librdkafka's local queue plus one fetch response in flight is most of the
    // service's memory (defaults are 64 MiB and 50 MiB). 8 MiB each still holds ~15,000 typical
    // records, far more than a local fetch round trip drains at the HTTP ceiling.
    c.set("queued.max.messages.kbytes", "8192");
    c.set("fetch.max.bytes", "8388608");
    c.set("statistics.interval.ms", "5000");
    for (k, v) in base_client_config(cfg, secrets).config_map() {
        c.set(k, v);
    }
    c.set("group.id", group_id);
    c.set("enable.auto.commit", "false");
    c.set("enable.auto.offset.store", "false");
    c
}

/// Producer settings for the dead-letter topic: idempotent, acks=all.
pub fn producer_config(cfg: &Config, secrets: &[(String, Secret)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("linger.ms", "5");
    c.set("message.timeout.ms", "30000");
    for (k, v) in base_client_config(cfg, secrets).config_map() {
        if !is_consumer_property(k) {
            c.set(k, v);
        }
    }
    for (k, v) in &cfg.dead_letter.properties {
        c.set(k, v);
    }
    c.set("enable.idempotence", "true");
    c.set("acks", "all");
    c
}

/// What a consume error means for the consume loop of `run` and `replay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeError {
    /// End of a partition (only with `enable.partition.eof`, which replay sets).
    Eof(i32),
    /// librdkafka recovers by itself (it retries the fetch, reconnects, rejoins): counted and
    /// logged; nothing was skipped.
    Transient(RDKafkaErrorCode),
    /// Records of an assigned partition could not be read: a corrupt batch (CRC mismatch with
    /// `check.crcs`), one that does not decompress or parse, one larger than the consumer may
    /// fetch, a lost position (`auto.offset.reset=error`), or a log truncated under us (unclean
    /// leader election). rust-rdkafka reports such an error
    /// without its partition, so the loop cannot stop just that partition: it stops taking
    /// records at once (nothing read after the error is ever tracked, so no commit passes the
    /// unreadable records): `run` stalls, `replay` ends (exit code 4).
    Unreadable(RDKafkaErrorCode),
    /// The consumer can no longer work (e.g. a static member fenced by another with the same
    /// `group.instance.id`): the process ends (exit code 3).
    Fatal(RDKafkaErrorCode),
}

impl ConsumeError {
    /// The kind of a consume error (what `recv` returned instead of a message).
    pub fn of(e: &KafkaError) -> Self {
        use RDKafkaErrorCode::*;
        match e {
            KafkaError::PartitionEOF(p) => ConsumeError::Eof(*p),
            KafkaError::MessageConsumptionFatal(code) => ConsumeError::Fatal(*code),
            KafkaError::MessageConsumption(
                code @ (BadMessage | BadCompression | NotImplemented | MessageSizeTooLarge | AutoOffsetReset
                | LogTruncation),
            ) => ConsumeError::Unreadable(*code),
            KafkaError::MessageConsumption(code) => ConsumeError::Transient(*code),
            other => ConsumeError::Transient(other.rdkafka_error_code().unwrap_or(Fail)),
        }
    }

    /// The librdkafka error code, if the error has one (all but end of partition).
    pub fn code(&self) -> Option<RDKafkaErrorCode> {
        match self {
            ConsumeError::Eof(_) => None,
            ConsumeError::Transient(c) | ConsumeError::Unreadable(c) | ConsumeError::Fatal(c) => Some(*c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_settings_cannot_be_overridden_and_producer_is_safe() {
        let mut cfg = Config::default();
        cfg.kafka
            .properties
            .insert("fetch.wait.max.ms".into(), "10".into());
        cfg.kafka.properties.insert("client.rack".into(), "r1".into());
        let c = consumer_config(&cfg, &[], "g");
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("group.id"), Some("g"));
        let p = producer_config(&cfg, &[]);
        assert_eq!(p.get("acks"), Some("all"));
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert_eq!(p.get("client.rack"), Some("r1"));
        assert_eq!(p.get("fetch.wait.max.ms"), None);
    }

    #[test]
    fn consume_errors_have_a_kind() {
        use RDKafkaErrorCode::*;
        let kind = |e: KafkaError| ConsumeError::of(&e);
        assert_eq!(kind(KafkaError::PartitionEOF(3)), ConsumeError::Eof(3));
        assert_eq!(
            kind(KafkaError::MessageConsumptionFatal(FencedInstanceId)),
            ConsumeError::Fatal(FencedInstanceId)
        );
        for code in [
            BadMessage,
            BadCompression,
            NotImplemented,
            MessageSizeTooLarge,
            AutoOffsetReset,
            LogTruncation,
        ] {
            assert_eq!(
                kind(KafkaError::MessageConsumption(code)),
                ConsumeError::Unreadable(code)
            );
        }
        for code in [
            BrokerTransportFailure,
            AllBrokersDown,
            UnknownTopicOrPartition,
            AssignmentLost,
        ] {
            assert_eq!(
                kind(KafkaError::MessageConsumption(code)),
                ConsumeError::Transient(code)
            );
        }
        assert_eq!(kind(KafkaError::Canceled), ConsumeError::Transient(Fail));
    }
}
