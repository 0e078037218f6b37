//! Source formats: which topics carry Confluent wire-format values (`[kafka] value_format`,
//! `value_format_per_topic`) and one [`Decoder`] for them on one registry client (`[registry]`).
//! Guarantee: [`Sources::decode`] never turns a transient failure into an error: it waits with
//! `[retry]`'s backoff (no budget: never given up) until the value decodes, fails for good, or the
//! caller no longer wants it; while any value waits, [`Sources::waiting`] is above 0. Limits: one
//! registry for every topic; the wait is per record (records of the same schema wait side by side).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use super::{Credentials, Decoder, Registry, RegistryConfig, SchemaFormat, WireError};
use crate::config::{Config, ConfigError, RetryConfig, SchemaRegistryConfig, ValueFormat};
use crate::metrics::Metrics;

/// The wire-format topics and their decoders. Share it in an `Arc`.
#[derive(Debug, Default)]
pub struct Sources {
    /// Decoders of the topics that are not JSON.
    by_topic: HashMap<String, Decoder>,
    /// Backoff of registry waits.
    retry: RetryConfig,
    /// Values waiting for the registry right now.
    waiting: AtomicUsize,
}

/// The registry client `[registry]` describes: secrets resolved, CA file read. The error names
/// the key at fault.
pub fn registry_config(r: &SchemaRegistryConfig) -> Result<RegistryConfig, ConfigError> {
    let url = r
        .url
        .clone()
        .ok_or_else(|| invalid("registry.url", "is not set"))?;
    let credentials = match (&r.username, &r.password, &r.token) {
        (Some(username), Some(password), _) => Credentials::Basic {
            username: username.clone(),
            password: password.resolve("registry.password")?,
        },
        (_, _, Some(token)) => Credentials::Bearer {
            token: token.resolve("registry.token")?,
        },
        _ => Credentials::None,
    };
    let ca_pem = match &r.ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| invalid("registry.ca_file", format!("cannot read {}: {e}", path.display())))?,
        ),
        None => None,
    };
    Ok(RegistryConfig {
        url,
        credentials,
        connect_timeout: r.connect_timeout,
        request_timeout: r.request_timeout,
        ca_pem,
    })
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

impl Sources {
    /// The formats of `cfg`'s topics; a registry client only when a topic needs one.
    pub fn from_config(cfg: &Config) -> Result<Self, ConfigError> {
        let framed: Vec<(&String, SchemaFormat)> = cfg
            .kafka
            .topics
            .iter()
            .filter_map(|t| match cfg.kafka.value_format_of(t) {
                ValueFormat::Json => None,
                ValueFormat::Avro => Some((t, SchemaFormat::Avro)),
                ValueFormat::Protobuf => Some((t, SchemaFormat::Protobuf)),
            })
            .collect();
        let mut sources = Sources {
            retry: cfg.retry.clone(),
            ..Sources::default()
        };
        if framed.is_empty() {
            return Ok(sources);
        }
        let registry = Registry::new(&registry_config(&cfg.registry)?)
            .map_err(|e| invalid("registry", e.to_string()))?;
        for (topic, format) in framed {
            sources
                .by_topic
                .insert(topic.clone(), Decoder::new(registry.clone(), format));
        }
        Ok(sources)
    }

    /// The decoder of `topic`'s values; None for a JSON topic.
    pub fn decoder(&self, topic: &str) -> Option<&Decoder> {
        self.by_topic.get(topic)
    }

    /// How many values are waiting for the registry right now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Decodes `value` with `decoder`, waiting out transient failures (each wait counted in
    /// `registry_waits_total`, the first one logged) for as long as `wanted()` holds. `None`:
    /// no longer wanted; `Some(Err)`: a permanent failure, to park.
    pub async fn decode(
        &self,
        decoder: &Decoder,
        value: Option<&[u8]>,
        metrics: &Metrics,
        wanted: impl Fn() -> bool,
    ) -> Option<Result<Value, WireError>> {
        let value = value.unwrap_or_default();
        let mut waits = 0u32;
        let outcome = loop {
            match decoder.decode(value).await {
                Err(e) if e.is_transient() => {
                    if waits == 0 {
                        self.waiting.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "schema registry unavailable: the record waits");
                    }
                    metrics.registry_waits.inc();
                    let unit: f64 = rand::random();
                    tokio::time::sleep(crate::retry::wait(&self.retry, waits, None, unit)).await;
                    waits = waits.saturating_add(1);
                    if !wanted() {
                        break None;
                    }
                }
                decoded => break Some(decoded),
            }
        };
        if waits > 0 {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!("[elevate]\nbase_url = \"http://127.0.0.1:1\"\n{extra}");
        Config::from_toml_with_env(&text, "", Vec::new()).unwrap()
    }

    #[test]
    fn only_wire_format_topics_get_a_decoder() {
        let all_json = Sources::from_config(&config("")).unwrap();
        assert!(all_json.decoder("cart-events").is_none());
        let cfg = config(
            "[kafka]\ntopics = [\"a\", \"b\"]\nvalue_format = \"avro\"\nvalue_format_per_topic = { b = \"json\" }\n\
             [registry]\nurl = \"http://127.0.0.1:1\"\n",
        );
        let sources = Sources::from_config(&cfg).unwrap();
        assert!(sources.decoder("a").is_some());
        assert!(sources.decoder("b").is_none());
    }

    #[test]
    fn secrets_and_the_ca_file_fail_naming_their_key() {
        let var = "ELEVATE_SINK_TEST_REGISTRY_TOKEN_NOT_SET";
        let cfg = config(&format!(
            "[kafka]\nvalue_format = \"protobuf\"\n[registry]\nurl = \"http://r\"\ntoken = {{ env = \"{var}\" }}\n"
        ));
        let err = Sources::from_config(&cfg).unwrap_err().to_string();
        assert!(err.starts_with("registry.token: environment variable"), "{err}");
        let cfg = config("[kafka]\nvalue_format = \"avro\"\n[registry]\nurl = \"http://r\"\nca_file = \"/nonexistent/ca.pem\"\n");
        let err = Sources::from_config(&cfg).unwrap_err().to_string();
        assert!(
            err.starts_with("registry.ca_file: cannot read /nonexistent/ca.pem"),
            "{err}"
        );
    }
}
