//! The configuration reference as data: every key of [`Config`](super::Config) with its type,
//! default and meaning, the single source of `docs/config-reference.md` and `check
//! --print-reference`. A unit test fails when this table and `Config`'s fields or defaults disagree.

use std::fmt::Write as _;

use super::ENV_PREFIX;

/// How the environment overrides keys (the rule `Config::from_toml_with_env` implements).
pub const ENV_RULE: &str = "`ELEVATE_SINK__<SECTION>__<KEY>` sets `[section] key`, one `__` per level, \
     names upper- or lower-case (`ELEVATE_SINK__ELEVATE__BASE_URL`). Inside the librdkafka maps \
     (`kafka.properties`, `dead_letter.properties`) a `_` in the last segment becomes a `.` \
     (`ELEVATE_SINK__KAFKA__PROPERTIES__CLIENT_RACK` sets `\"client.rack\"`). A value that parses as \
     a TOML value (`42`, `true`, `[\"a\",\"b\"]`) is taken as one, anything else as a string.";

/// The type of a key as the reference shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// A string.
    String,
    /// `true` or `false`.
    Boolean,
    /// An integer.
    Integer,
    /// A number (float).
    Number,
    /// A humantime duration string.
    Duration,
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// Where a secret is read from: `{ file = … }` or `{ env = … }`.
    Secret,
    /// May be left out.
    Optional(&'static Ty),
    /// An array of these.
    ArrayOf(&'static Ty),
    /// A table of names to these.
    TableOf(&'static Ty),
}

impl Ty {
    /// The reference's text for the type (Markdown, pipes escaped for a table cell).
    pub fn text(&self) -> String {
        match self {
            Ty::String => "string".into(),
            Ty::Boolean => "boolean".into(),
            Ty::Integer => "integer".into(),
            Ty::Number => "number".into(),
            Ty::Duration => "duration (`\"500ms\"`, `\"2s\"`, `\"5m\"`)".into(),
            Ty::OneOf(values) => values
                .iter()
                .map(|v| format!("\"{v}\""))
                .collect::<Vec<_>>()
                .join(" \\| "),
            Ty::Secret => "{ file = … } \\| { env = … }".into(),
            Ty::Optional(t) => format!("{} (optional)", t.text()),
            Ty::ArrayOf(t) => format!("array of {}", t.text()),
            Ty::TableOf(t) => format!("table: name → {}", t.text()),
        }
    }
}

/// One key of a section.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The key within its section (`bootstrap_servers`).
    pub name: &'static str,
    /// Its type.
    pub ty: Ty,
    /// Its default as inline TOML; None when it has none.
    pub default: Option<&'static str>,
    /// What it means.
    pub doc: &'static str,
}

/// One `[section]` of the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Section {
    /// The section's name (`kafka`).
    pub name: &'static str,
    /// What it configures.
    pub doc: &'static str,
    /// Its keys, in `Config`'s field order.
    pub keys: &'static [Key],
}

/// Every section and key, in `Config`'s field order.
pub const SECTIONS: &[Section] = &[
    Section {
        name: "kafka",
        doc: "The source topics and the consumer group.",
        keys: &[
            Key {
                name: "bootstrap_servers",
                ty: Ty::String,
                default: Some("\"127.0.0.1:9092\""),
                doc: "`bootstrap.servers`, comma separated host:port list.",
            },
            Key {
                name: "group_id",
                ty: Ty::String,
                default: Some("\"elevate-sink\""),
                doc: "Consumer group id; all replicas share it.",
            },
            Key {
                name: "topics",
                ty: Ty::ArrayOf(&Ty::String),
                default: Some("[\"cart-events\"]"),
                doc: "Topics to consume.",
            },
            Key {
                name: "properties",
                ty: Ty::TableOf(&Ty::String),
                default: Some("{}"),
                doc: "librdkafka properties passed through as is (security, client.rack, tuning, ...).",
            },
            Key {
                name: "secret_properties",
                ty: Ty::TableOf(&Ty::Secret),
                default: Some("{}"),
                doc: "librdkafka properties whose values are secrets, read from a file or an env var.",
            },
            Key {
                name: "value_format",
                ty: Ty::OneOf(&["json", "avro", "protobuf"]),
                default: Some("\"json\""),
                doc: "How record values are encoded, on every topic not in `value_format_per_topic`: `json` (UTF-8 JSON), or `avro` / `protobuf` in the Confluent wire format (magic byte, schema id, payload) with the schema from `[registry]`. The decoded record is read by the same `[mapping]` pointers (README, \"Avro and Protobuf\").",
            },
            Key {
                name: "value_format_per_topic",
                ty: Ty::TableOf(&Ty::OneOf(&["json", "avro", "protobuf"])),
                default: Some("{}"),
                doc: "Per-topic overrides of `value_format`: topic name (one of `topics`) → format.",
            },
        ],
    },
    Section {
        name: "registry",
        doc: "The Confluent-compatible schema registry Avro and Protobuf values name by id. Schemas are cached by id for the life of the process; a record whose schema cannot be fetched (registry unreachable, 5xx, 401/403, timeout) waits with `[retry]`'s backoff, never parked, and `/readyz` says so; an unknown id parks the record.",
        keys: &[
            Key {
                name: "url",
                ty: Ty::Optional(&Ty::String),
                default: None,
                doc: "Base URL of the Confluent Schema Registry API (Apicurio: `…/apis/ccompat/v7`); required when a topic is `avro` or `protobuf`. No credentials in it.",
            },
            Key {
                name: "username",
                ty: Ty::Optional(&Ty::String),
                default: None,
                doc: "Basic auth user (Confluent Cloud: the API key); needs `password`.",
            },
            Key {
                name: "password",
                ty: Ty::Optional(&Ty::Secret),
                default: None,
                doc: "Basic auth password (Confluent Cloud: the API secret).",
            },
            Key {
                name: "token",
                ty: Ty::Optional(&Ty::Secret),
                default: None,
                doc: "Bearer token; exclusive with `username`.",
            },
            Key {
                name: "ca_file",
                ty: Ty::Optional(&Ty::String),
                default: None,
                doc: "Extra root certificates (PEM file) for a registry behind a private CA.",
            },
            Key {
                name: "connect_timeout",
                ty: Ty::Duration,
                default: Some("\"5s\""),
                doc: "TCP (+TLS) connect timeout.",
            },
            Key {
                name: "request_timeout",
                ty: Ty::Duration,
                default: Some("\"10s\""),
                doc: "Timeout of one whole registry request.",
            },
        ],
    },
    Section {
        name: "elevate",
        doc: "The Elevate cluster and the HTTP client.",
        keys: &[
            Key {
                name: "base_url",
                ty: Ty::Optional(&Ty::String),
                default: None,
                doc: "Full base URL (scheme + host [+ port] [+ /prefix]); exclusive with `cluster_id`. Start-up refuses one no HTTP request can be sent to. Tests use this.",
            },
            Key {
                name: "cluster_id",
                ty: Ty::Optional(&Ty::String),
                default: None,
                doc: "Elevate cluster id, combined with `host`; exclusive with `base_url`.",
            },
            Key {
                name: "host",
                ty: Ty::OneOf(&["elevate-api", "apptus"]),
                default: Some("\"elevate-api\""),
                doc: "Which documented host a `cluster_id` lives under.",
            },
            Key {
                name: "connect_timeout",
                ty: Ty::Duration,
                default: Some("\"2s\""),
                doc: "TCP+TLS connect timeout.",
            },
            Key {
                name: "request_timeout",
                ty: Ty::Duration,
                default: Some("\"10s\""),
                doc: "Timeout for one whole attempt (connect, send, answer).",
            },
            Key {
                name: "max_in_flight_requests",
                ty: Ty::Integer,
                default: Some("32"),
                doc: "Most requests in flight at once (bounded concurrency). Throughput is at most this ÷ Elevate's answer time; size it as this replica's quota share × p99 answer time × 2, at least the default (docs/performance.md).",
            },
            Key {
                name: "forward_visitor_headers",
                ty: Ty::Boolean,
                default: Some("true"),
                doc: "Forward the visitor's User-Agent and X-Forwarded-For where the event carries them (the IP only for the levels in `forward_ip_for`).",
            },
            Key {
                name: "forward_ip_for",
                ty: Ty::ArrayOf(&Ty::OneOf(&["PERSONALIZED", "UNPERSONALIZED", "ANONYMOUS", "SYNTHETIC"])),
                default: Some("[\"PERSONALIZED\", \"UNPERSONALIZED\", \"SYNTHETIC\"]"),
                doc: "The userContext levels whose visitor IP is forwarded as X-Forwarded-For: any of PERSONALIZED, UNPERSONALIZED, ANONYMOUS, SYNTHETIC (an event without userContext counts as PERSONALIZED). ANONYMOUS is left out by default: an IP is personal data, and an anonymous visitor sends no identifier. The User-Agent is forwarded for every level.",
            },
            Key {
                name: "user_agent",
                ty: Ty::String,
                default: Some(concat!("\"elevate-sink/", env!("CARGO_PKG_VERSION"), "\"")),
                doc: "User-Agent of our own requests when the event carries none.",
            },
            Key {
                name: "skip_bots",
                ty: Ty::Boolean,
                default: Some("true"),
                doc: "Skip events whose visitor User-Agent is a known bot (the maintained `isbot` list plus `bot_patterns`), counted as `skipped{reason=\"bot\"}`: Elevate cannot tell bots from people on server-side calls.",
            },
            Key {
                name: "bot_patterns",
                ty: Ty::ArrayOf(&Ty::String),
                default: Some("[]"),
                doc: "Extra bot patterns: regular expressions matched case-insensitively against the visitor's User-Agent.",
            },
            Key {
                name: "payment_api_key",
                ty: Ty::Optional(&Ty::Secret),
                default: None,
                doc: "The Admin API key the `payment` kind sends as `Api-Key`, read from a file or an env var; required when a payment route exists. Never logged, never printed by `check`, never in dead-letter headers.",
            },
        ],
    },
    Section {
        name: "mapping",
        doc: "Where each field lives in a cart event, as JSON Pointers (RFC 6901). An empty pointer means \"this event shape has no such field\".",
        keys: &[
            Key {
                name: "event_type",
                ty: Ty::String,
                default: Some("\"/type\""),
                doc: "The event type (string).",
            },
            Key {
                name: "add_to_cart_types",
                ty: Ty::ArrayOf(&Ty::String),
                default: Some("[\"add_to_cart\"]"),
                doc: "Event type values that mean \"added to cart\".",
            },
            Key {
                name: "market",
                ty: Ty::String,
                default: Some("\"/market\""),
                doc: "The Elevate market id (string, required for add-to-cart events).",
            },
            Key {
                name: "customer_key",
                ty: Ty::String,
                default: Some("\"/customerKey\""),
                doc: "The customer key (string).",
            },
            Key {
                name: "session_key",
                ty: Ty::String,
                default: Some("\"/sessionKey\""),
                doc: "The session key (string).",
            },
            Key {
                name: "user_context",
                ty: Ty::String,
                default: Some("\"/userContext\""),
                doc: "The consent level (string: PERSONALIZED, UNPERSONALIZED, ANONYMOUS, SYNTHETIC); empty: never.",
            },
            Key {
                name: "user_agent",
                ty: Ty::String,
                default: Some("\"/visitor/userAgent\""),
                doc: "The visitor's User-Agent (string); forwarded as `User-Agent`.",
            },
            Key {
                name: "visitor_ip",
                ty: Ty::String,
                default: Some("\"/visitor/ip\""),
                doc: "The visitor's IP (string); forwarded as `X-Forwarded-For`.",
            },
            Key {
                name: "event_time",
                ty: Ty::String,
                default: Some("\"/occurredAt\""),
                doc: "When the event happened (RFC 3339 string or epoch milliseconds); empty: the Kafka timestamp.",
            },
            Key {
                name: "lines",
                ty: Ty::String,
                default: Some("\"/lines\""),
                doc: "The array of cart lines; empty: the event itself is one line.",
            },
            Key {
                name: "line_source",
                ty: Ty::String,
                default: Some("\"/source\""),
                doc: "Inside a line: where it came from (string matched against `elevate_sources`, or a boolean).",
            },
            Key {
                name: "elevate_sources",
                ty: Ty::ArrayOf(&Ty::String),
                default: Some("[\"elevate\"]"),
                doc: "`line_source` values that mean \"an Elevate product\".",
            },
            Key {
                name: "line_ticket",
                ty: Ty::String,
                default: Some("\"/ticket\""),
                doc: "Inside a line: the Elevate ticket (string).",
            },
            Key {
                name: "product_key",
                ty: Ty::String,
                default: Some("\"/productKey\""),
                doc: "Favourite events: the product key (string); exactly one of it and `variant_key`.",
            },
            Key {
                name: "variant_key",
                ty: Ty::String,
                default: Some("\"/variantKey\""),
                doc: "Favourite events: the variant key (string); exactly one of it and `product_key`.",
            },
            Key {
                name: "line_variant_key",
                ty: Ty::String,
                default: Some("\"/variantKey\""),
                doc: "Inside an order line (payment): the variant key (string).",
            },
            Key {
                name: "line_quantity",
                ty: Ty::String,
                default: Some("\"/quantity\""),
                doc: "Inside an order line (payment): the quantity (positive integer).",
            },
            Key {
                name: "line_selling_price",
                ty: Ty::String,
                default: Some("\"/sellingPrice\""),
                doc: "Inside an order line (payment): the selling price (finite, non-negative number).",
            },
            Key {
                name: "line_cost",
                ty: Ty::String,
                default: Some("\"/cost\""),
                doc: "Inside an order line (payment): the cost (finite, non-negative number).",
            },
        ],
    },
    Section {
        name: "routes",
        doc: "`[[routes]]`, an array of tables: which topics and event types feed which Elevate notification. None given: one route named `add-to-cart`, kind `add-to-cart`, fed by every topic under `[mapping]` (the behaviour before routes existed). Each route's mapping is `[mapping]`, then its kind's defaults (a `click` event is itself the one line: `lines` and `line_source` empty), then its own `mapping` keys. Environment variables cannot set routes: give them in the file.",
        keys: &[
            Key {
                name: "name",
                ty: Ty::String,
                default: None,
                doc: "Required, unique: the `elevate-sink-route` dead-letter header and the `route` metric label.",
            },
            Key {
                name: "kind",
                ty: Ty::OneOf(&["add-to-cart", "click", "add-favorite", "remove-favorite", "end", "payment"]),
                default: None,
                doc: "Required: the notification it sends.",
            },
            Key {
                name: "topics",
                ty: Ty::ArrayOf(&Ty::String),
                default: Some("[]"),
                doc: "Topics that feed it, each one of `kafka.topics`; empty: every topic.",
            },
            Key {
                name: "event_types",
                ty: Ty::ArrayOf(&Ty::String),
                default: Some("[]"),
                doc: "Event types (at the mapping's `event_type`) that feed it; empty: the kind's defaults (add-to-cart: `mapping.add_to_cart_types`; click: `click`; add-favorite: `add_favorite`; remove-favorite: `remove_favorite`; end: `session_end`, `logout`; payment: `order_placed`).",
            },
            Key {
                name: "mapping",
                ty: Ty::TableOf(&Ty::String),
                default: Some("{}"),
                doc: "`[mapping]` keys overridden for this route (JSON Pointers), e.g. `{ lines = \"/items\" }`.",
            },
            Key {
                name: "requests_per_second",
                ty: Ty::Optional(&Ty::Number),
                default: None,
                doc: "This route's own quota on this replica (notifications per second, retries not counted), on top of `[rate]`; not shared by partitions.",
            },
        ],
    },
    Section {
        name: "rate",
        doc: "Request quotas, enforced with `governor`.",
        keys: &[
            Key {
                name: "requests_per_second",
                ty: Ty::Number,
                default: Some("50.0"),
                doc: "Requests per second to Elevate for the whole fleet (every attempt counts, retries too).",
            },
            Key {
                name: "burst",
                ty: Ty::Integer,
                default: Some("50"),
                doc: "Requests allowed at once above the steady rate.",
            },
            Key {
                name: "share_by_partitions",
                ty: Ty::Boolean,
                default: Some("true"),
                doc: "Take a share of the quota proportional to the assigned partitions (recomputed on rebalance), so N replicas together stay under the quota with no shared store.",
            },
            Key {
                name: "markets",
                ty: Ty::TableOf(&Ty::Number),
                default: Some("{}"),
                doc: "Optional per-market quotas (requests per second), shared the same way.",
            },
        ],
    },
    Section {
        name: "retry",
        doc: "Backoff for transient answers (408, 429, 5xx, timeouts, connection errors).",
        keys: &[
            Key {
                name: "initial_backoff",
                ty: Ty::Duration,
                default: Some("\"200ms\""),
                doc: "First backoff ceiling; the n-th retry waits a random time in [0, min(max, initial * 2^n)].",
            },
            Key {
                name: "max_backoff",
                ty: Ty::Duration,
                default: Some("\"30s\""),
                doc: "Largest backoff ceiling.",
            },
            Key {
                name: "max_attempts",
                ty: Ty::Integer,
                default: Some("0"),
                doc: "Attempts before a transient failure is dead-lettered; 0 = unlimited (never give up).",
            },
            Key {
                name: "max_elapsed",
                ty: Ty::Duration,
                default: Some("\"0s\""),
                doc: "Time before a transient failure is dead-lettered; 0s = unlimited (never give up).",
            },
            Key {
                name: "max_retry_after",
                ty: Ty::Duration,
                default: Some("\"5m\""),
                doc: "Longest `Retry-After` honoured; longer ones are capped to this.",
            },
        ],
    },
    Section {
        name: "dead_letter",
        doc: "Where records that cannot be delivered are parked.",
        keys: &[
            Key {
                name: "topic",
                ty: Ty::String,
                default: Some("\"cart-events.elevate-sink.dlq\""),
                doc: "Topic name (must exist; the service does not create it).",
            },
            Key {
                name: "properties",
                ty: Ty::TableOf(&Ty::String),
                default: Some("{}"),
                doc: "Extra librdkafka producer properties (on top of `kafka.properties`, minus consumer keys).",
            },
        ],
    },
    Section {
        name: "pipeline",
        doc: "Memory bounds and commit cadence.",
        keys: &[
            Key {
                name: "max_in_flight_records",
                ty: Ty::Integer,
                default: Some("1000"),
                doc: "Records taken but not yet done; at this bound partitions are paused.",
            },
            Key {
                name: "max_pending_notifications",
                ty: Ty::Integer,
                default: Some("4000"),
                doc: "Notifications taken but not yet done; at this bound partitions are paused.",
            },
            Key {
                name: "commit_interval",
                ty: Ty::Duration,
                default: Some("\"1s\""),
                doc: "How often done offsets are committed (asynchronously), each commit carrying the partition's done-offset map; only partitions whose position or map changed are committed. A crash re-sends what completed since the last commit: at most this long of throughput (measured in docs/performance.md: 1 s costs one commit per second per replica).",
            },
            Key {
                name: "commit_metadata_max_bytes",
                ty: Ty::Integer,
                default: Some("4096"),
                doc: "Largest commit metadata (the done-offset map) in bytes, at least 128; at most the broker's `offset.metadata.max.bytes`. A map that does not fit is cut to a prefix and counted.",
            },
            Key {
                name: "worker_threads",
                ty: Ty::Integer,
                default: Some("1"),
                doc: "Runtime worker threads of `run` and `replay`, 1 to 64 (librdkafka's own threads come on top). One (the default) runs tokio's current-thread scheduler, about 4 % cheaper per notification than one worker of the multi-thread scheduler. One carries 50,000-70,000 notifications/s on this project's 2-core benchmark machine, far above any Elevate quota; two (the multi-thread scheduler) used 24-54 % more CPU per notification there and carried less, in two of three alternating pairs (docs/performance.md). Raise it only when one core is measured to be the limit and more cores are free.",
            },
        ],
    },
    Section {
        name: "shutdown",
        doc: "What SIGTERM does.",
        keys: &[
            Key {
                name: "drain_deadline",
                ty: Ty::Duration,
                default: Some("\"20s\""),
                doc: "How long in-flight requests may take to finish after SIGTERM before the final commit.",
            },
            Key {
                name: "grace_period",
                ty: Ty::Duration,
                default: Some("\"30s\""),
                doc: "The platform's kill deadline (Kubernetes terminationGracePeriodSeconds); must exceed `drain_deadline`.",
            },
        ],
    },
    Section {
        name: "admin",
        doc: "The HTTP listener for `/healthz`, `/readyz`, `/metrics`.",
        keys: &[
            Key {
                name: "listen",
                ty: Ty::String,
                default: Some("\"0.0.0.0:9090\""),
                doc: "Listen address; empty disables the listener.",
            },
            Key {
                name: "wedged_after",
                ty: Ty::Duration,
                default: Some("\"30s\""),
                doc: "`/readyz` fails when the consume loop has not turned for this long (wedged).",
            },
        ],
    },
    Section {
        name: "log",
        doc: "Logging.",
        keys: &[
            Key {
                name: "format",
                ty: Ty::OneOf(&["auto", "json", "text"]),
                default: Some("\"auto\""),
                doc: "Line format.",
            },
            Key {
                name: "level",
                ty: Ty::String,
                default: Some("\"info\""),
                doc: "`tracing` filter, e.g. `info` or `elevate_sink=debug,rdkafka=warn`; `RUST_LOG` wins if set.",
            },
        ],
    },
];

/// A table cell: pipes escaped.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The Markdown reference (`docs/config-reference.md`): how to give the file, the environment
/// rule, the secrets rule, then one table per section.
pub fn markdown() -> String {
    let mut s = String::new();
    s.push_str("# Configuration reference\n\n");
    s.push_str(
        "<!-- Generated from src/config/reference.rs by `elevate-sink check --print-reference`; a unit test \
         keeps it in sync (`UPDATE_DOCS=1 cargo test --lib config::reference` rewrites it). Do not edit by \
         hand. -->\n\n",
    );
    s.push_str(
        "One TOML file, given with `--config FILE` (or `ELEVATE_SINK_CONFIG=FILE`); every key is optional \
         except where Elevate is (`elevate.cluster_id` or `elevate.base_url`). Unknown keys are errors. \
         `elevate-sink check --print-defaults` prints every default as TOML.\n\n",
    );
    let _ = writeln!(s, "**Environment rule:** {}\n", cell(ENV_RULE));
    s.push_str(
        "**Secrets** (SASL passwords, key passwords, OAuth secrets) are never given as plain \
         `kafka.properties`: `check` refuses those. Give them as \
         `[kafka.secret_properties]` entries, e.g. `\"sasl.password\" = { file = \"/var/run/secrets/kafka/password\" }` \
         or `{ env = \"KAFKA_PASSWORD\" }`.\n",
    );
    for section in SECTIONS {
        let env_section = section.name.to_ascii_uppercase();
        let array = section.name == "routes";
        let heading = if array {
            format!("[[{}]]", section.name)
        } else {
            format!("[{}]", section.name)
        };
        let _ = writeln!(s, "\n## `{heading}`\n\n{}\n", cell(section.doc));
        s.push_str("| key | type | default | environment variable | meaning |\n");
        s.push_str("|---|---|---|---|---|\n");
        for k in section.keys {
            let env = if array {
                "(file only)".to_string()
            } else {
                format!(
                    "`{ENV_PREFIX}{env_section}__{}{}`",
                    k.name.to_ascii_uppercase(),
                    if matches!(k.ty, Ty::TableOf(_)) {
                        "__<NAME>"
                    } else {
                        ""
                    }
                )
            };
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | {env} | {} |",
                k.name,
                k.ty.text(),
                k.default.map_or("(none)".into(), |d| format!("`{}`", cell(d))),
                cell(k.doc)
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use serde::de::{self, Deserialize, Deserializer, Visitor};

    use super::*;
    use crate::config::{
        AdminConfig, Config, DeadLetterConfig, ElevateConfig, KafkaConfig, LogConfig, MappingConfig,
        PipelineConfig, RateConfig, RetryConfig, SchemaRegistryConfig, ShutdownConfig,
    };

    /// A deserializer that only records the field names a `Deserialize` struct asks for.
    struct FieldNames(&'static [&'static str]);

    impl<'de> Deserializer<'de> for &mut FieldNames {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = fields;
            Err(de::Error::custom("names recorded"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }

    /// The serialized field names of `T`, in declaration order.
    fn fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
        let mut names = FieldNames(&[]);
        let _ = T::deserialize(&mut names);
        names.0
    }

    /// Inline TOML, as the reference writes defaults.
    fn inline(v: &toml::Value) -> String {
        match v {
            toml::Value::String(s) => serde_json::to_string(s).expect("a string serializes"),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.1}"),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Datetime(d) => d.to_string(),
            toml::Value::Array(a) => format!("[{}]", a.iter().map(inline).collect::<Vec<_>>().join(", ")),
            toml::Value::Table(t) if t.is_empty() => "{}".into(),
            toml::Value::Table(t) => format!(
                "{{ {} }}",
                t.iter()
                    .map(|(k, v)| format!("{k} = {}", inline(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Whether `v` is a value of type `ty`.
    fn is_a(ty: &Ty, v: &toml::Value) -> bool {
        use toml::Value as V;
        match (ty, v) {
            (Ty::String, V::String(_)) | (Ty::Boolean, V::Boolean(_)) | (Ty::Integer, V::Integer(_)) => true,
            (Ty::Number, V::Float(_)) => true,
            (Ty::Duration, V::String(s)) => humantime::parse_duration(s).is_ok(),
            (Ty::OneOf(values), V::String(s)) => values.contains(&s.as_str()),
            (Ty::Secret, V::Table(t)) => t.len() == 1 && (t.contains_key("file") || t.contains_key("env")),
            (Ty::Optional(t), v) => is_a(t, v),
            (Ty::ArrayOf(t), V::Array(a)) => a.iter().all(|v| is_a(t, v)),
            (Ty::TableOf(t), V::Table(m)) => m.values().all(|v| is_a(t, v)),
            _ => false,
        }
    }

    /// Every section's struct, by name: the one place a new section must be added besides the table.
    fn section_fields() -> Vec<(&'static str, &'static [&'static str])> {
        vec![
            ("kafka", fields::<KafkaConfig>()),
            ("registry", fields::<SchemaRegistryConfig>()),
            ("elevate", fields::<ElevateConfig>()),
            ("mapping", fields::<MappingConfig>()),
            ("routes", fields::<crate::route::RouteConfig>()),
            ("rate", fields::<RateConfig>()),
            ("retry", fields::<RetryConfig>()),
            ("dead_letter", fields::<DeadLetterConfig>()),
            ("pipeline", fields::<PipelineConfig>()),
            ("shutdown", fields::<ShutdownConfig>()),
            ("admin", fields::<AdminConfig>()),
            ("log", fields::<LogConfig>()),
        ]
    }

    #[test]
    fn the_table_names_every_field_of_config_in_order() {
        let sections: Vec<&str> = SECTIONS.iter().map(|s| s.name).collect();
        assert_eq!(
            sections,
            fields::<Config>(),
            "the table's sections are Config's fields"
        );
        let structs = section_fields();
        assert_eq!(structs.iter().map(|(n, _)| *n).collect::<Vec<_>>(), sections);
        for (section, (_, want)) in SECTIONS.iter().zip(structs) {
            let keys: Vec<&str> = section.keys.iter().map(|k| k.name).collect();
            assert_eq!(
                keys, want,
                "[{}]: the table's keys are the struct's fields",
                section.name
            );
            assert!(!section.doc.is_empty(), "[{}] has no doc", section.name);
            for k in section.keys {
                assert!(!k.doc.is_empty(), "{}.{} has no doc", section.name, k.name);
            }
        }
    }

    #[test]
    fn the_table_states_every_default_and_its_type() {
        let defaults = toml::Table::try_from(Config::default()).expect("the default config serializes");
        let route = toml::Table::try_from(crate::route::RouteConfig::default()).expect("a route serializes");
        for section in SECTIONS {
            let values = match section.name {
                "routes" => Some(&route),
                name => defaults.get(name).and_then(|v| v.as_table()),
            };
            for k in section.keys {
                if section.name == "routes" && matches!(k.name, "name" | "kind") {
                    continue; // required: the serialized default is a placeholder
                }
                let path = format!("{}.{}", section.name, k.name);
                let actual = values.and_then(|t| t.get(k.name));
                assert_eq!(
                    k.default.map(str::to_string),
                    actual.map(inline),
                    "{path}: default"
                );
                if let Some(v) = actual {
                    assert!(is_a(&k.ty, v), "{path}: the default {v} is not a {}", k.ty.text());
                }
                assert!(
                    actual.is_some() || matches!(k.ty, Ty::Optional(_)),
                    "{path}: only an optional key may have no default"
                );
            }
        }
    }

    #[test]
    fn listed_values_are_exactly_what_config_accepts() {
        for section in SECTIONS {
            for k in section.keys {
                let (values, array) = match k.ty {
                    Ty::OneOf(v) => (v, false),
                    Ty::ArrayOf(Ty::OneOf(v)) => (*v, true),
                    _ => continue,
                };
                let parse = |v: &str| {
                    let v = if array {
                        format!("[\"{v}\"]")
                    } else {
                        format!("\"{v}\"")
                    };
                    let head = if section.name == "routes" {
                        "[[routes]]\nname = \"r\"".to_string()
                    } else {
                        format!("[{}]", section.name)
                    };
                    toml::from_str::<Config>(&format!("{head}\n{} = {v}\n", k.name))
                };
                for v in values {
                    assert!(parse(v).is_ok(), "{}.{} = {v:?} is refused", section.name, k.name);
                }
                let refused = parse("no-such-value").unwrap_err().message().to_string();
                let listed = refused.split('`').skip(3).step_by(2).count();
                assert_eq!(
                    listed,
                    values.len(),
                    "{}.{}: Config accepts more: {refused}",
                    section.name,
                    k.name
                );
                for v in values {
                    assert!(refused.contains(&format!("`{v}`")), "{refused}");
                }
            }
        }
    }

    #[test]
    fn reference_shows_types_and_environment_variables() {
        let md = markdown();
        assert!(md.contains("| `host` | \"elevate-api\" \\| \"apptus\" |"), "{md}");
        assert!(md.contains("{ file = … } \\| { env = … }"), "{md}");
        assert!(md.contains("`ELEVATE_SINK__KAFKA__BOOTSTRAP_SERVERS`"), "{md}");
        assert!(md.contains("`ELEVATE_SINK__KAFKA__PROPERTIES__<NAME>`"), "{md}");
    }

    #[test]
    fn config_reference_doc_is_up_to_date() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/config-reference.md");
        let want = markdown();
        if std::env::var("UPDATE_DOCS").as_deref() == Ok("1") {
            std::fs::write(path, &want).unwrap();
            return;
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "docs/config-reference.md is out of date with src/config/reference.rs: run \
             `UPDATE_DOCS=1 cargo test --lib config::reference` (or `elevate-sink check --print-reference > \
             docs/config-reference.md`)"
        );
    }
}
