//! Kafka plumbing shared by `run` and `replay`: client configs built from `[kafka]` (secrets
//! applied, never logged) and the owned copy of a source record that in-flight work keeps.
//! Guarantees: auto-commit and auto offset store are always off (offsets are committed only
//! from the ledger); the dead-letter producer is idempotent with `acks=all`.

use rdkafka::config::ClientConfig;
use rdkafka::message::{BorrowedMessage, Headers, Message};

use crate::config::{Config, ConfigError, Secret};

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

/// Fails early (with the key named) if secret files or variables are unreadable.
pub fn resolve_secrets(cfg: &Config) -> Result<Vec<(String, Secret)>, ConfigError> {
    cfg.resolve_secrets()
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
}
