//! The service's configuration: one typed tree, read from one TOML file, every key overridable by
//! an environment variable. Guarantees: unknown keys are errors that name the key; every default
//! lives in this file (the `Default` impls); secrets are only ever held as [`Secret`], which
//! never prints its value.
//!
//! The environment rule is [`reference::ENV_RULE`]; [`reference`](mod@reference) documents every key, and its
//! tests fail when it and these types or defaults disagree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::decode::UserContext;

pub mod reference;

/// Prefix of environment variables that override config keys.
pub const ENV_PREFIX: &str = "ELEVATE_SINK__";

/// Why a configuration could not be loaded; every variant names the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax error, wrong type or unknown key (toml's message names the key and line).
    #[error("invalid config{origin}: {message}")]
    Parse {
        /// " in FILE" or " (after environment overrides)".
        origin: String,
        /// The parser's message.
        message: String,
    },
    /// An environment override could not be applied.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable's name.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// A key has a value of the right type that is not allowed.
    #[error("{key}: {message}")]
    Invalid {
        /// Dotted key path, e.g. `elevate.base_url`.
        key: String,
        /// What is wrong and what is expected.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where cart events come from.
    pub kafka: KafkaConfig,
    /// The schema registry of Avro and Protobuf values.
    pub registry: SchemaRegistryConfig,
    /// Where notifications go.
    pub elevate: ElevateConfig,
    /// Where each field lives in a cart event.
    pub mapping: MappingConfig,
    /// The routes (`[[routes]]`): which topics and event types feed which notification. None
    /// given: one `add-to-cart` route fed by every topic under `[mapping]` (today's behaviour).
    pub routes: Vec<crate::route::RouteConfig>,
    /// Request-rate quotas.
    pub rate: RateConfig,
    /// Retry policy for transient and configuration-class answers.
    pub retry: RetryConfig,
    /// The dead-letter topic.
    pub dead_letter: DeadLetterConfig,
    /// Memory bounds and commit cadence.
    pub pipeline: PipelineConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// The HTTP listener for health and metrics.
    pub admin: AdminConfig,
    /// Logging.
    pub log: LogConfig,
}

/// `[kafka]`: the source topics and the consumer group.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`, comma separated host:port list.
    pub bootstrap_servers: String,
    /// Consumer group id; all replicas share it.
    pub group_id: String,
    /// Topics to consume.
    pub topics: Vec<String>,
    /// librdkafka properties passed through as is (security, client.rack, tuning, ...).
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties whose values are secrets, read from a file or an env var.
    pub secret_properties: BTreeMap<String, SecretSource>,
    /// How record values are encoded, on every topic not in `value_format_per_topic`.
    pub value_format: ValueFormat,
    /// Per-topic overrides of `value_format`: topic name (one of `topics`) → format.
    pub value_format_per_topic: BTreeMap<String, ValueFormat>,
}

impl KafkaConfig {
    /// The value format of records of `topic`.
    pub fn value_format_of(&self, topic: &str) -> ValueFormat {
        self.value_format_per_topic
            .get(topic)
            .copied()
            .unwrap_or(self.value_format)
    }
}

/// How a topic's record values are encoded.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ValueFormat {
    /// UTF-8 JSON (no registry).
    #[default]
    Json,
    /// Avro in the Confluent wire format, schema from `[registry]`.
    Avro,
    /// Protobuf in the Confluent wire format, schema from `[registry]`.
    Protobuf,
}

impl ValueFormat {
    /// The format's config name.
    pub fn as_str(self) -> &'static str {
        match self {
            ValueFormat::Json => "json",
            ValueFormat::Avro => "avro",
            ValueFormat::Protobuf => "protobuf",
        }
    }
}

/// `[registry]`: the Confluent-compatible schema registry Avro and Protobuf values name by id.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaRegistryConfig {
    /// Base URL of the Confluent Schema Registry API (Apicurio: `…/apis/ccompat/v7`); required
    /// when a topic is `avro` or `protobuf`. No credentials in it.
    pub url: Option<String>,
    /// Basic auth user (Confluent Cloud: the API key); needs `password`.
    pub username: Option<String>,
    /// Basic auth password (Confluent Cloud: the API secret).
    pub password: Option<SecretSource>,
    /// Bearer token; exclusive with `username`.
    pub token: Option<SecretSource>,
    /// Extra root certificates (PEM file) for a registry behind a private CA.
    pub ca_file: Option<PathBuf>,
    /// TCP (+TLS) connect timeout.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Timeout of one whole registry request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for SchemaRegistryConfig {
    fn default() -> Self {
        SchemaRegistryConfig {
            url: None,
            username: None,
            password: None,
            token: None,
            ca_file: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: "127.0.0.1:9092".into(),
            group_id: "elevate-sink".into(),
            topics: vec!["cart-events".into()],
            properties: BTreeMap::new(),
            secret_properties: BTreeMap::new(),
            value_format: ValueFormat::Json,
            value_format_per_topic: BTreeMap::new(),
        }
    }
}

/// Where a secret value comes from. Never the value itself.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SecretSource {
    /// Read (and trim) the file at this path, e.g. a mounted Kubernetes Secret.
    File(PathBuf),
    /// Read this environment variable.
    Env(String),
}

/// A secret value: `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The clear value, for handing to librdkafka only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl SecretSource {
    /// Where it comes from, for messages: `file /path` or `env NAME` (never the value).
    pub fn describe(&self) -> String {
        match self {
            SecretSource::File(p) => format!("file {}", p.display()),
            SecretSource::Env(v) => format!("env {v}"),
        }
    }

    /// Reads the secret; the error names the property, never the value.
    pub fn resolve(&self, key: &str) -> Result<Secret, ConfigError> {
        match self {
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|s| Secret(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| {
                    ConfigError::invalid(key, format!("cannot read secret file {}: {e}", path.display()))
                }),
            SecretSource::Env(var) => std::env::var(var)
                .map(Secret)
                .map_err(|_| ConfigError::invalid(key, format!("environment variable {var} is not set"))),
        }
    }
}

/// Which documented Elevate API host a `cluster_id` is combined with.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ElevateHost {
    /// `https://{cluster_id}.elevate-api.cloud` (Voyado's newer documentation).
    #[default]
    ElevateApi,
    /// `https://{cluster_id}.api.esales.apptus.cloud` (the original documentation).
    Apptus,
}

/// Default of `elevate.forward_ip_for`: every consent level but ANONYMOUS.
pub const DEFAULT_FORWARD_IP_FOR: [UserContext; 3] = [
    UserContext::Personalized,
    UserContext::Unpersonalized,
    UserContext::Synthetic,
];

/// `[elevate]`: the Elevate cluster and the HTTP client.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElevateConfig {
    /// Full base URL (scheme + host [+ port]); exclusive with `cluster_id`. Tests use this.
    pub base_url: Option<String>,
    /// Elevate cluster id, combined with `host`; exclusive with `base_url`.
    pub cluster_id: Option<String>,
    /// Which documented host a `cluster_id` lives under.
    pub host: ElevateHost,
    /// TCP+TLS connect timeout.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Timeout for one whole attempt (connect, send, answer).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Most requests in flight at once (bounded concurrency); sizing in docs/performance.md.
    pub max_in_flight_requests: usize,
    /// Forward the visitor's User-Agent and X-Forwarded-For where the event carries them (the IP
    /// only for the levels in `forward_ip_for`).
    pub forward_visitor_headers: bool,
    /// The userContext levels whose visitor IP is forwarded as X-Forwarded-For: any of
    /// PERSONALIZED, UNPERSONALIZED, ANONYMOUS, SYNTHETIC (an event without userContext counts
    /// as PERSONALIZED). ANONYMOUS is left out by default: an IP is personal data, and an
    /// anonymous visitor sends no identifier. The User-Agent is forwarded for every level.
    pub forward_ip_for: Vec<UserContext>,
    /// User-Agent of our own requests when the event carries none.
    pub user_agent: String,
    /// Skip events whose visitor User-Agent is a known bot (the `isbot` list plus `bot_patterns`),
    /// counted as `skipped{reason="bot"}`: Elevate cannot tell bots on server-side calls.
    pub skip_bots: bool,
    /// Extra bot patterns (regular expressions, matched case-insensitively against the User-Agent).
    pub bot_patterns: Vec<String>,
    /// The Admin API key the `payment` kind sends as `Api-Key` (required when a payment route
    /// exists); never logged, never printed.
    pub payment_api_key: Option<SecretSource>,
}

impl Default for ElevateConfig {
    fn default() -> Self {
        ElevateConfig {
            base_url: None,
            cluster_id: None,
            host: ElevateHost::default(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            max_in_flight_requests: 32,
            forward_visitor_headers: true,
            forward_ip_for: DEFAULT_FORWARD_IP_FOR.to_vec(),
            user_agent: concat!("elevate-sink/", env!("CARGO_PKG_VERSION")).into(),
            skip_bots: true,
            bot_patterns: Vec::new(),
            payment_api_key: None,
        }
    }
}

/// `[mapping]`: where each field lives in a cart event, as JSON Pointers (RFC 6901).
/// An empty pointer means "this event shape has no such field".
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MappingConfig {
    /// The event type (string).
    pub event_type: String,
    /// Event type values that mean "added to cart".
    pub add_to_cart_types: Vec<String>,
    /// The Elevate market id (string, required for add-to-cart events).
    pub market: String,
    /// The customer key (string).
    pub customer_key: String,
    /// The session key (string).
    pub session_key: String,
    /// The consent level (string: PERSONALIZED, UNPERSONALIZED, ANONYMOUS, SYNTHETIC); empty: never.
    pub user_context: String,
    /// The visitor's User-Agent (string); forwarded as `User-Agent`.
    pub user_agent: String,
    /// The visitor's IP (string); forwarded as `X-Forwarded-For`.
    pub visitor_ip: String,
    /// When the event happened (RFC 3339 string or epoch milliseconds); empty: the Kafka timestamp.
    pub event_time: String,
    /// The array of cart lines; empty: the event itself is one line.
    pub lines: String,
    /// Inside a line: where it came from (string matched against `elevate_sources`, or a boolean).
    pub line_source: String,
    /// `line_source` values that mean "an Elevate product".
    pub elevate_sources: Vec<String>,
    /// Inside a line: the Elevate ticket (string).
    pub line_ticket: String,
    /// Favourite events: the product key (string); exactly one of it and `variant_key`.
    pub product_key: String,
    /// Favourite events: the variant key (string); exactly one of it and `product_key`.
    pub variant_key: String,
    /// Inside an order line (payment): the variant key (string).
    pub line_variant_key: String,
    /// Inside an order line (payment): the quantity (positive integer).
    pub line_quantity: String,
    /// Inside an order line (payment): the selling price (non-negative number).
    pub line_selling_price: String,
    /// Inside an order line (payment): the cost (non-negative number).
    pub line_cost: String,
}

impl Default for MappingConfig {
    fn default() -> Self {
        MappingConfig {
            event_type: "/type".into(),
            add_to_cart_types: vec!["add_to_cart".into()],
            market: "/market".into(),
            customer_key: "/customerKey".into(),
            session_key: "/sessionKey".into(),
            user_context: "/userContext".into(),
            user_agent: "/visitor/userAgent".into(),
            visitor_ip: "/visitor/ip".into(),
            event_time: "/occurredAt".into(),
            lines: "/lines".into(),
            line_source: "/source".into(),
            elevate_sources: vec!["elevate".into()],
            line_ticket: "/ticket".into(),
            product_key: "/productKey".into(),
            variant_key: "/variantKey".into(),
            line_variant_key: "/variantKey".into(),
            line_quantity: "/quantity".into(),
            line_selling_price: "/sellingPrice".into(),
            line_cost: "/cost".into(),
        }
    }
}

/// `[rate]`: request quotas, enforced with `governor`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateConfig {
    /// Requests per second to Elevate for the whole fleet (every attempt counts, retries too).
    pub requests_per_second: f64,
    /// Requests allowed at once above the steady rate.
    pub burst: u32,
    /// Take a share of the quota proportional to the assigned partitions (recomputed on rebalance),
    /// so N replicas together stay under the quota with no shared store.
    pub share_by_partitions: bool,
    /// Optional per-market quotas (requests per second), shared the same way.
    pub markets: BTreeMap<String, f64>,
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            requests_per_second: 50.0,
            burst: 50,
            share_by_partitions: true,
            markets: BTreeMap::new(),
        }
    }
}

/// `[retry]`: backoff for transient answers (408, 429, 5xx, timeouts, connection errors).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// First backoff ceiling; the n-th retry waits a random time in [0, min(max, initial * 2^n)].
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Largest backoff ceiling.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Attempts before a transient failure is dead-lettered; 0 = unlimited (never give up).
    pub max_attempts: u32,
    /// Time before a transient failure is dead-lettered; 0s = unlimited (never give up).
    #[serde(with = "humantime_serde")]
    pub max_elapsed: Duration,
    /// Longest `Retry-After` honoured; longer ones are capped to this.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            max_attempts: 0,
            max_elapsed: Duration::ZERO,
            max_retry_after: Duration::from_secs(300),
        }
    }
}

/// `[dead_letter]`: where records that cannot be delivered are parked.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetterConfig {
    /// Topic name (must exist; the service does not create it).
    pub topic: String,
    /// Extra librdkafka producer properties (on top of `kafka.properties`, minus consumer keys).
    pub properties: BTreeMap<String, String>,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        DeadLetterConfig {
            topic: "cart-events.elevate-sink.dlq".into(),
            properties: BTreeMap::new(),
        }
    }
}

/// The smallest `pipeline.commit_metadata_max_bytes`: room for the longest header with replay's
/// window (`elevate-sink/1 base=… first=… end=… to=… crc=…`: 117 bytes with 20-character offsets).
pub const MIN_COMMIT_METADATA_BYTES: usize = 128;

/// `[pipeline]`: memory bounds and commit cadence.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Records taken but not yet done; at this bound partitions are paused.
    pub max_in_flight_records: usize,
    /// Notifications taken but not yet done; at this bound partitions are paused.
    pub max_pending_notifications: usize,
    /// How often done offsets are committed (asynchronously), each commit carrying the
    /// partition's done-offset map; only partitions whose position or map changed are committed.
    /// A crash re-sends what completed since the last commit: at most this long of throughput
    /// (measured in docs/performance.md: 1 s costs one commit per second per replica).
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Largest commit metadata (the done-offset map) in bytes; at most the broker's
    /// `offset.metadata.max.bytes`. A map that does not fit is cut to a prefix and counted.
    pub commit_metadata_max_bytes: usize,
    /// Runtime worker threads of `run` and `replay` (librdkafka's own threads come on top).
    /// One is the default, and runs tokio's current-thread scheduler: about 4 % less CPU per
    /// notification than one worker of the multi-thread scheduler (docs/performance.md, the
    /// ninth round). One carries 50,000–70,000 notifications/s on the benchmark machine, far
    /// above any Elevate quota; two (the multi-thread scheduler) used 24–54 % more CPU per
    /// notification there and carried less, in two of three alternating pairs.
    pub worker_threads: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            max_in_flight_records: 1000,
            max_pending_notifications: 4000,
            commit_interval: Duration::from_secs(1),
            commit_metadata_max_bytes: crate::offsetmap::MAX_METADATA_BYTES,
            worker_threads: 1,
        }
    }
}

/// The most runtime worker threads `pipeline.worker_threads` may ask for.
pub const MAX_WORKER_THREADS: usize = 64;

/// `[shutdown]`: what SIGTERM does.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long in-flight requests may take to finish after SIGTERM before the final commit.
    #[serde(with = "humantime_serde")]
    pub drain_deadline: Duration,
    /// The platform's kill deadline (Kubernetes terminationGracePeriodSeconds); must exceed
    /// `drain_deadline`.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_deadline: Duration::from_secs(20),
            grace_period: Duration::from_secs(30),
        }
    }
}

/// `[admin]`: the HTTP listener for `/healthz`, `/readyz`, `/metrics`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Listen address; empty disables the listener.
    pub listen: String,
    /// `/readyz` fails when the consume loop has not turned for this long (wedged).
    #[serde(with = "humantime_serde")]
    pub wedged_after: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "0.0.0.0:9090".into(),
            wedged_after: Duration::from_secs(30),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON unless stderr is a terminal.
    #[default]
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Text,
}

/// `[log]`: logging.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// `tracing` filter, e.g. `info` or `elevate_sink=debug,rdkafka=warn`; `RUST_LOG` wins if set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Auto,
            level: "info".into(),
        }
    }
}

impl Config {
    /// Reads `path` (if given), applies `ELEVATE_SINK__*` variables from `env`, validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (text, origin) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?,
                format!(" in {}", p.display()),
            ),
            None => (String::new(), String::new()),
        };
        Self::from_toml_with_env(&text, &origin, env)
    }

    /// Parses TOML text, applies env overrides, validates. `origin` is used in messages.
    pub fn from_toml_with_env(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.message().to_string() + &line_hint(text, e.span()),
        })?;
        let mut overridden = false;
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.to_ascii_uppercase().starts_with(ENV_PREFIX))
            .collect();
        vars.sort();
        for (var, value) in vars {
            apply_env(&mut table, &var, &value)?;
            overridden = true;
        }
        let origin = if overridden {
            format!("{origin} (after environment overrides)")
        } else {
            origin.to_string()
        };
        // Deserialize from text so errors carry a position we can turn into a key path: the
        // user's own text when nothing was overridden, else the merged tree re-serialized.
        let merged = if overridden {
            toml::to_string(&table).map_err(|e| ConfigError::Parse {
                origin: origin.clone(),
                message: e.to_string(),
            })?
        } else {
            text.to_string()
        };
        let config: Config = toml::from_str(&merged).map_err(|e: toml::de::Error| ConfigError::Parse {
            message: describe(&merged, &e, !overridden),
            origin,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The `[kafka]` checks: where records come from, and librdkafka properties (of `[kafka]` and
    /// `[dead_letter]`) that must not be set by hand.
    fn validate_kafka(&self) -> Result<(), ConfigError> {
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(ConfigError::invalid(
                "kafka.bootstrap_servers",
                "must not be empty",
            ));
        }
        if self.kafka.group_id.trim().is_empty() {
            return Err(ConfigError::invalid("kafka.group_id", "must not be empty"));
        }
        if self.kafka.topics.is_empty() || self.kafka.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(ConfigError::invalid(
                "kafka.topics",
                "needs at least one non-empty topic name",
            ));
        }
        for (key, _) in self
            .kafka
            .properties
            .iter()
            .chain(self.dead_letter.properties.iter())
        {
            if is_secret_property(key) {
                return Err(ConfigError::invalid(
                    &format!("kafka.properties.\"{key}\""),
                    "looks like a secret: give it under kafka.secret_properties as { file = \"...\" } or { env = \"VAR\" }",
                ));
            }
        }
        for key in self.kafka.properties.keys() {
            if OWNED_PROPERTIES.contains(&key.as_str()) {
                return Err(ConfigError::invalid(
                    &format!("kafka.properties.\"{key}\""),
                    "is set by elevate-sink itself (at-least-once depends on it) and cannot be overridden",
                ));
            }
        }
        Ok(())
    }

    /// The value formats and `[registry]`: a registry URL wherever a topic needs one,
    /// credentials of one kind, complete.
    fn validate_registry(&self) -> Result<(), ConfigError> {
        for topic in self.kafka.value_format_per_topic.keys() {
            if !self.kafka.topics.contains(topic) {
                return Err(ConfigError::invalid(
                    &format!("kafka.value_format_per_topic.\"{topic}\""),
                    "is not one of kafka.topics",
                ));
            }
        }
        let r = &self.registry;
        let needs = self.kafka.topics.iter().find_map(|t| {
            let f = self.kafka.value_format_of(t);
            (f != ValueFormat::Json).then_some((t, f))
        });
        match (&r.url, needs) {
            (None, Some((topic, format))) => {
                return Err(ConfigError::invalid(
                    "registry.url",
                    format!(
                        "is required: topic {topic} is {} (kafka.value_format)",
                        format.as_str()
                    ),
                ))
            }
            (Some(url), _) => check_registry_url(url)?,
            (None, None) => {}
        }
        if r.username.is_some() != r.password.is_some() {
            return Err(ConfigError::invalid(
                if r.username.is_some() {
                    "registry.password"
                } else {
                    "registry.username"
                },
                "basic auth needs both registry.username and registry.password",
            ));
        }
        if r.username.is_some() && r.token.is_some() {
            return Err(ConfigError::invalid(
                "registry.token",
                "give either registry.token or registry.username + password, not both",
            ));
        }
        for (key, d) in [
            ("registry.connect_timeout", r.connect_timeout),
            ("registry.request_timeout", r.request_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::invalid(key, "must be longer than 0s"));
            }
        }
        Ok(())
    }

    /// The checks of what sending needs: `[elevate]`, `[mapping]`, `[rate]` and `[retry]`.
    fn validate_sending(&self) -> Result<(), ConfigError> {
        self.elevate.base_url()?;
        if self.elevate.max_in_flight_requests == 0 {
            return Err(ConfigError::invalid(
                "elevate.max_in_flight_requests",
                "must be at least 1",
            ));
        }
        if self.elevate.request_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "elevate.request_timeout",
                "must be longer than 0s",
            ));
        }
        self.mapping.validate()?;
        crate::route::Routes::from_config(self)?;
        if !(self.rate.requests_per_second > 0.0 && self.rate.requests_per_second.is_finite()) {
            return Err(ConfigError::invalid(
                "rate.requests_per_second",
                "must be a number above 0",
            ));
        }
        if self.rate.burst == 0 {
            return Err(ConfigError::invalid("rate.burst", "must be at least 1"));
        }
        for (market, rps) in &self.rate.markets {
            if !(*rps > 0.0 && rps.is_finite()) {
                return Err(ConfigError::invalid(
                    &format!("rate.markets.{market}"),
                    "must be a number above 0",
                ));
            }
        }
        if self.retry.initial_backoff.is_zero() || self.retry.initial_backoff > self.retry.max_backoff {
            return Err(ConfigError::invalid(
                "retry.initial_backoff",
                "must be above 0s and not above retry.max_backoff",
            ));
        }
        Ok(())
    }

    /// Checks combinations and values that types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_kafka()?;
        self.validate_registry()?;
        self.validate_sending()?;
        if self.dead_letter.topic.trim().is_empty() {
            return Err(ConfigError::invalid("dead_letter.topic", "must not be empty"));
        }
        if self.kafka.topics.contains(&self.dead_letter.topic) {
            return Err(ConfigError::invalid(
                "dead_letter.topic",
                "must not be one of kafka.topics",
            ));
        }
        if self.pipeline.max_in_flight_records == 0 {
            return Err(ConfigError::invalid(
                "pipeline.max_in_flight_records",
                "must be at least 1",
            ));
        }
        if self.pipeline.max_pending_notifications == 0 {
            return Err(ConfigError::invalid(
                "pipeline.max_pending_notifications",
                "must be at least 1",
            ));
        }
        if !(1..=MAX_WORKER_THREADS).contains(&self.pipeline.worker_threads) {
            return Err(ConfigError::invalid(
                "pipeline.worker_threads",
                format!("must be from 1 to {MAX_WORKER_THREADS}"),
            ));
        }
        if self.pipeline.commit_interval.is_zero() {
            return Err(ConfigError::invalid(
                "pipeline.commit_interval",
                "must be longer than 0s",
            ));
        }
        if self.pipeline.commit_metadata_max_bytes < MIN_COMMIT_METADATA_BYTES {
            return Err(ConfigError::invalid(
                "pipeline.commit_metadata_max_bytes",
                format!(
                    "must be at least {MIN_COMMIT_METADATA_BYTES} (replay's window and the map's header), \
                     and at most the broker's offset.metadata.max.bytes (4096 by default)"
                ),
            ));
        }
        if self.shutdown.drain_deadline >= self.shutdown.grace_period {
            return Err(ConfigError::invalid(
                "shutdown.drain_deadline",
                format!(
                    "({}) must be shorter than shutdown.grace_period ({}), the platform's kill deadline, \
                     or the final commit may never happen",
                    humantime::format_duration(self.shutdown.drain_deadline),
                    humantime::format_duration(self.shutdown.grace_period)
                ),
            ));
        }
        if !self.admin.listen.is_empty() && self.admin.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::invalid(
                "admin.listen",
                "must be an address like 0.0.0.0:9090, or empty",
            ));
        }
        Ok(())
    }

    /// Resolves every secret property; call once at startup.
    pub fn resolve_secrets(&self) -> Result<Vec<(String, Secret)>, ConfigError> {
        self.kafka
            .secret_properties
            .iter()
            .map(|(k, src)| {
                Ok((
                    k.clone(),
                    src.resolve(&format!("kafka.secret_properties.\"{k}\""))?,
                ))
            })
            .collect()
    }

    /// Every secret source the configuration names, with its dotted key, in the order `check`
    /// reads them: `kafka.secret_properties`, `registry.password`, `registry.token`,
    /// `elevate.payment_api_key`.
    pub fn secret_sources(&self) -> Vec<(String, &SecretSource)> {
        let kafka = self
            .kafka
            .secret_properties
            .iter()
            .map(|(k, src)| (format!("kafka.secret_properties.\"{k}\""), src));
        let named = [
            ("registry.password", self.registry.password.as_ref()),
            ("registry.token", self.registry.token.as_ref()),
            ("elevate.payment_api_key", self.elevate.payment_api_key.as_ref()),
        ];
        kafka
            .chain(
                named
                    .into_iter()
                    .filter_map(|(k, src)| Some((k.to_string(), src?))),
            )
            .collect()
    }

    /// Reads every secret source (and `registry.ca_file`) the way `run` will, without keeping a
    /// value: the first that cannot be read is the error, naming its key and where it comes from,
    /// never a value. The payment Api-Key must also be usable as a header value (non-empty,
    /// visible ASCII), as the sender requires.
    pub fn resolve_every_secret(&self) -> Result<(), ConfigError> {
        for (key, src) in self.secret_sources() {
            let secret = src.resolve(&key)?;
            if key == "elevate.payment_api_key" {
                let v = secret.expose();
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic() || b == b' ' || b == b'\t') {
                    return Err(ConfigError::invalid(
                        &key,
                        format!(
                            "{}: must be a non-empty header value (visible ASCII only)",
                            src.describe()
                        ),
                    ));
                }
            }
        }
        if let Some(path) = &self.registry.ca_file {
            std::fs::read(path).map_err(|e| {
                ConfigError::invalid("registry.ca_file", format!("cannot read {}: {e}", path.display()))
            })?;
        }
        Ok(())
    }
}

/// `registry.url`: http or https, and no credentials in it.
fn check_registry_url(url: &str) -> Result<(), ConfigError> {
    let parsed = url::Url::parse(url.trim())
        .map_err(|e| ConfigError::invalid("registry.url", format!("does not parse: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConfigError::invalid(
            "registry.url",
            "must be http:// or https://",
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ConfigError::invalid(
            "registry.url",
            "must not carry credentials: give registry.username + registry.password, or registry.token",
        ));
    }
    Ok(())
}

/// librdkafka properties elevate-sink sets itself and refuses from config.
pub const OWNED_PROPERTIES: &[&str] = &[
    "enable.auto.commit",
    "enable.auto.offset.store",
    "group.id",
    "bootstrap.servers",
];

/// True for librdkafka property names whose values are credentials.
pub fn is_secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password")
        || k.contains("secret")
        || k.ends_with(".key.pem")
        || k == "sasl.oauthbearer.config"
}

impl ElevateConfig {
    /// The base URL all requests are built on, from `base_url` or `cluster_id` + `host`.
    pub fn base_url(&self) -> Result<url::Url, ConfigError> {
        let raw = match (&self.base_url, &self.cluster_id) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "elevate.base_url",
                    "give either elevate.base_url or elevate.cluster_id, not both",
                ))
            }
            (None, None) => {
                return Err(ConfigError::invalid(
                    "elevate.cluster_id",
                    "missing: set elevate.cluster_id (with elevate.host) or elevate.base_url",
                ))
            }
            (Some(url), None) => url.clone(),
            (None, Some(id)) => {
                if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    return Err(ConfigError::invalid(
                        "elevate.cluster_id",
                        "must be a non-empty host label (letters, digits, '-')",
                    ));
                }
                match self.host {
                    ElevateHost::ElevateApi => format!("https://{id}.elevate-api.cloud"),
                    ElevateHost::Apptus => format!("https://{id}.api.esales.apptus.cloud"),
                }
            }
        };
        let url = url::Url::parse(&raw)
            .map_err(|e| ConfigError::invalid("elevate.base_url", format!("not a URL ({e})")))?;
        if url.scheme() != "https" && url.scheme() != "http" {
            return Err(ConfigError::invalid(
                "elevate.base_url",
                format!(
                    "scheme {:?} cannot reach Elevate: use https:// (or http:// for a local stand-in)",
                    url.scheme()
                ),
            ));
        }
        if url.host_str().is_none() || url.query().is_some() || url.fragment().is_some() {
            return Err(ConfigError::invalid(
                "elevate.base_url",
                "must be scheme://host[:port][/prefix] with no query or fragment",
            ));
        }
        // `url` takes some hosts `http` refuses (`http://a{b`); no request could be built to
        // them, so each record would be parked as unbuildable: refused here, at start-up.
        if let Err(e) = http::Uri::try_from(url.as_str()) {
            return Err(ConfigError::invalid(
                "elevate.base_url",
                format!("no HTTP request can be sent to it ({e})"),
            ));
        }
        Ok(url)
    }
}

/// What a mapping pointer is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// The event (the record's value).
    Event,
    /// The event: the array of lines (empty: the event is its own one line).
    Lines,
    /// Each line.
    Line,
}

impl MappingConfig {
    /// The set pointers (not empty) read from `place`, in [`MappingConfig::pointers`] order (the
    /// parser's keep-list and its slot plan read them, `decode/prune.rs`, `decode/slots.rs`).
    pub(crate) fn pointers_at(&self, place: Place) -> impl Iterator<Item = &str> {
        self.pointers()
            .into_iter()
            .filter(move |(_, p, _, at)| *at == place && !p.is_empty())
            .map(|(_, p, ..)| p)
    }

    /// Every pointer of the mapping, once: its key, its text, whether it is required, and what
    /// it is read from (`validate` and the parser's keep-list, `decode/prune.rs`, both use it).
    pub(crate) fn pointers(&self) -> [(&'static str, &str, bool, Place); 17] {
        use Place::{Event, Line, Lines};
        [
            ("mapping.event_type", &self.event_type, true, Event),
            ("mapping.market", &self.market, true, Event),
            ("mapping.customer_key", &self.customer_key, false, Event),
            ("mapping.session_key", &self.session_key, false, Event),
            ("mapping.user_context", &self.user_context, false, Event),
            ("mapping.user_agent", &self.user_agent, false, Event),
            ("mapping.visitor_ip", &self.visitor_ip, false, Event),
            ("mapping.event_time", &self.event_time, false, Event),
            ("mapping.lines", &self.lines, false, Lines),
            ("mapping.line_source", &self.line_source, false, Line),
            ("mapping.line_ticket", &self.line_ticket, true, Line),
            ("mapping.product_key", &self.product_key, false, Event),
            ("mapping.variant_key", &self.variant_key, false, Event),
            ("mapping.line_variant_key", &self.line_variant_key, true, Line),
            ("mapping.line_quantity", &self.line_quantity, true, Line),
            ("mapping.line_selling_price", &self.line_selling_price, true, Line),
            ("mapping.line_cost", &self.line_cost, true, Line),
        ]
    }

    /// Every pointer must be empty or start with `/`; required ones must be set.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, ptr, required, _) in self.pointers() {
            if required && ptr.is_empty() {
                return Err(ConfigError::invalid(
                    key,
                    "is required (a JSON Pointer such as \"/market\")",
                ));
            }
            if !ptr.is_empty() && !ptr.starts_with('/') {
                return Err(ConfigError::invalid(
                    key,
                    format!("{ptr:?} is not a JSON Pointer: it must start with '/' (RFC 6901)"),
                ));
            }
        }
        if self.add_to_cart_types.is_empty() {
            return Err(ConfigError::invalid(
                "mapping.add_to_cart_types",
                "needs at least one value",
            ));
        }
        Ok(())
    }
}

/// The parser's message prefixed with the dotted key it is about (and the line, for the user's
/// own file), e.g. `pipeline.max_in_flight_records: invalid type: string "many", expected usize`.
fn describe(text: &str, e: &toml::de::Error, with_line: bool) -> String {
    let Some(span) = e.span() else {
        return e.message().to_string();
    };
    let start = span.start.min(text.len());
    let mut section = String::new();
    let mut key = String::new();
    for (i, line) in text[..start]
        .split('\n')
        .enumerate()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        let t = line.trim();
        if i == text[..start].matches('\n').count() {
            // The line holding the error: its key, if it has one.
            let full_line = text[start - line.len()..].lines().next().unwrap_or("");
            if let Some((k, _)) = full_line.split_once('=') {
                key = k.trim().trim_matches('"').to_string();
            }
            continue;
        }
        if t.starts_with('[') {
            section = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            break;
        }
    }
    let path = match (section.is_empty(), key.is_empty()) {
        (_, true) => section,
        (true, false) => key,
        (false, false) => format!("{section}.{key}"),
    };
    let hint = if with_line {
        line_hint(text, Some(span))
    } else {
        String::new()
    };
    if path.is_empty() {
        format!("{}{hint}", e.message())
    } else {
        format!("{path}: {}{hint}", e.message())
    }
}

fn line_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(s) if s.start <= text.len() => {
            let line = text[..s.start].matches('\n').count() + 1;
            format!(" (line {line})")
        }
        _ => String::new(),
    }
}

/// Maps keys whose children are librdkafka property names (dots, not underscores).
const PROPERTY_MAPS: &[[&str; 2]] = &[
    ["kafka", "properties"],
    ["kafka", "secret_properties"],
    ["dead_letter", "properties"],
];

/// Maps whose keys are data and keep the variable's case (market ids are case-sensitive).
const CASED_MAPS: &[[&str; 2]] = &[["rate", "markets"]];

fn apply_env(table: &mut toml::Table, var: &str, value: &str) -> Result<(), ConfigError> {
    let rest = &var[ENV_PREFIX.len()..];
    let raw: Vec<&str> = rest.split("__").collect();
    let segments: Vec<String> = raw.iter().map(|s| s.to_ascii_lowercase()).collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(ConfigError::Env {
            var: var.to_string(),
            message: format!("expected {ENV_PREFIX}<SECTION>__<KEY>"),
        });
    }
    let mut path = segments.clone();
    let in_map =
        |maps: &[[&str; 2]]| path.len() == 3 && maps.iter().any(|m| m[0] == path[0] && m[1] == path[1]);
    if in_map(PROPERTY_MAPS) {
        path[2] = path[2].replace('_', ".");
    } else if in_map(CASED_MAPS) {
        path[2] = raw[2].to_string();
    }
    let parsed = parse_env_value(value);
    let mut node = table;
    for (i, seg) in path.iter().enumerate() {
        if i + 1 == path.len() {
            node.insert(seg.clone(), parsed);
            return Ok(());
        }
        let entry = node
            .entry(seg.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(ConfigError::Env {
                    var: var.to_string(),
                    message: format!("{} is not a section", path[..=i].join(".")),
                })
            }
        };
    }
    Ok(())
}

fn parse_env_value(value: &str) -> toml::Value {
    let doc = format!("v = {value}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(value.to_string())),
        Err(_) => toml::Value::String(value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> String {
        "[elevate]\nbase_url = \"http://127.0.0.1:1\"\n".to_string()
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_plus_base_url_are_valid() {
        let c = Config::from_toml_with_env(&base(), "", env(&[])).unwrap();
        assert_eq!(c.rate.burst, 50);
        assert_eq!(c.elevate.base_url().unwrap().as_str(), "http://127.0.0.1:1/");
    }

    #[test]
    fn env_overrides_file_key() {
        let text = base() + "[rate]\nrequests_per_second = 10\n";
        let c = Config::from_toml_with_env(
            &text,
            "",
            env(&[
                ("ELEVATE_SINK__RATE__REQUESTS_PER_SECOND", "200"),
                ("ELEVATE_SINK__KAFKA__TOPICS", "[\"a\", \"b\"]"),
                ("ELEVATE_SINK__KAFKA__PROPERTIES__CLIENT_RACK", "eu-1a"),
                ("ELEVATE_SINK__SHUTDOWN__DRAIN_DEADLINE", "5s"),
                ("ELEVATE_SINK__RATE__MARKETS__SE", "10"),
                (
                    "ELEVATE_SINK__KAFKA__SECRET_PROPERTIES__SASL_PASSWORD",
                    "{ env = \"PW\" }",
                ),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.rate.requests_per_second, 200.0);
        assert_eq!(c.kafka.topics, vec!["a", "b"]);
        assert_eq!(c.kafka.properties.get("client.rack").unwrap(), "eu-1a");
        assert_eq!(c.shutdown.drain_deadline, Duration::from_secs(5));
        assert_eq!(
            c.rate.markets.get("SE"),
            Some(&10.0),
            "market ids keep their case"
        );
        assert_eq!(
            c.kafka.secret_properties.get("sasl.password"),
            Some(&SecretSource::Env("PW".into()))
        );
    }

    #[test]
    fn value_formats_and_the_registry_are_checked_naming_the_key() {
        let load = |extra: &str| Config::from_toml_with_env(&(base() + extra), "", env(&[]));
        let err = |extra: &str| load(extra).unwrap_err().to_string();
        let c = load("").unwrap();
        assert_eq!(c.kafka.value_format_of("cart-events"), ValueFormat::Json);
        assert!(err("[kafka]\nvalue_format = \"avro\"\n")
            .starts_with("registry.url: is required: topic cart-events is avro"));
        let per_topic = "[kafka]\ntopics = [\"a\", \"b\"]\nvalue_format_per_topic = { b = \"protobuf\" }\n";
        assert!(
            err(per_topic).contains("topic b is protobuf"),
            "{}",
            err(per_topic)
        );
        let c = load(&format!("{per_topic}[registry]\nurl = \"http://r:8081\"\n")).unwrap();
        assert_eq!(c.kafka.value_format_of("a"), ValueFormat::Json);
        assert_eq!(c.kafka.value_format_of("b"), ValueFormat::Protobuf);
        let stray = "[kafka]\nvalue_format_per_topic = { other = \"avro\" }\n";
        assert!(err(stray).starts_with("kafka.value_format_per_topic.\"other\": is not one of kafka.topics"));
        let url = |u: &str| err(&format!("[registry]\nurl = \"{u}\"\n"));
        assert!(url("ftp://r").starts_with("registry.url: must be http"));
        let with_creds = url("https://key:hunter2@r");
        assert!(
            with_creds.starts_with("registry.url: must not carry credentials"),
            "{with_creds}"
        );
        assert!(!with_creds.contains("hunter2"), "{with_creds}");
        assert!(err("[registry]\nusername = \"k\"\n").starts_with("registry.password:"));
        assert!(err("[registry]\npassword = { env = \"P\" }\n").starts_with("registry.username:"));
        let both = "[registry]\nusername = \"k\"\npassword = { env = \"P\" }\ntoken = { env = \"T\" }\n";
        assert!(err(both).starts_with("registry.token:"));
        assert!(err("[registry]\nrequest_timeout = \"0s\"\n").starts_with("registry.request_timeout:"));
        assert!(err("[kafka]\nvalue_format = \"json-schema\"\n").contains("value_format"));
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name() {
        let err = Config::from_toml_with_env(
            &(base() + "[rate]\nrequests_per_sec = 1\n"),
            " in x.toml",
            env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("requests_per_sec"), "{err}");
        let err = Config::from_toml_with_env(&base(), "", env(&[("ELEVATE_SINK__ELEVATE__BASEURL", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("baseurl"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err = Config::from_toml_with_env(
            &(base() + "[pipeline]\nmax_in_flight_records = \"many\"\n"),
            "",
            env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("max_in_flight_records"), "{err}");
    }

    #[test]
    fn drain_deadline_must_be_below_grace_period() {
        let err = Config::from_toml_with_env(
            &(base() + "[shutdown]\ndrain_deadline = \"40s\"\ngrace_period = \"30s\"\n"),
            "",
            env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("shutdown.drain_deadline"), "{err}");
    }

    #[test]
    fn base_url_scheme_and_cluster_id() {
        let err = Config::from_toml_with_env("[elevate]\nbase_url = \"ftp://x\"\n", "", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("elevate.base_url") && err.contains("ftp"), "{err}");
        let c = Config::from_toml_with_env(
            "[elevate]\ncluster_id = \"w1234\"\nhost = \"apptus\"\n",
            "",
            env(&[]),
        )
        .unwrap();
        assert_eq!(
            c.elevate.base_url().unwrap().as_str(),
            "https://w1234.api.esales.apptus.cloud/"
        );
        let c = Config::from_toml_with_env("[elevate]\ncluster_id = \"w1234\"\n", "", env(&[])).unwrap();
        assert_eq!(
            c.elevate.base_url().unwrap().as_str(),
            "https://w1234.elevate-api.cloud/"
        );
        assert!(Config::from_toml_with_env("", "", env(&[])).is_err());
    }

    /// A base URL that `url` parses but `http` cannot carry stops start-up, naming the key.
    /// Before, it passed and every record's request "could not be built" and was parked.
    #[test]
    fn a_base_url_no_request_can_carry_is_refused() {
        let err = Config::from_toml_with_env("[elevate]\nbase_url = \"http://a{b\"\n", "", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("elevate.base_url") && err.contains("no HTTP request"),
            "{err}"
        );
    }

    #[test]
    fn secrets_in_plain_properties_are_refused_and_never_debug_printed() {
        let err = Config::from_toml_with_env(
            &(base() + "[kafka.properties]\n\"sasl.password\" = \"hunter2\"\n"),
            "",
            env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("sasl.password") && !err.contains("hunter2"), "{err}");
        std::env::set_var("ELEVATE_SINK_TEST_SECRET_X", "hunter2");
        let c = Config::from_toml_with_env(
            &(base() + "[kafka.secret_properties]\n\"sasl.password\" = { env = \"ELEVATE_SINK_TEST_SECRET_X\" }\n"),
            "",
            env(&[]),
        )
        .unwrap();
        let secrets = c.resolve_secrets().unwrap();
        assert_eq!(secrets[0].1.expose(), "hunter2");
        assert!(!format!("{secrets:?} {c:?}").contains("hunter2"));
    }

    #[test]
    fn bad_pointer_is_named() {
        let err = Config::from_toml_with_env(&(base() + "[mapping]\nmarket = \"market\"\n"), "", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("mapping.market"), "{err}");
    }
}
