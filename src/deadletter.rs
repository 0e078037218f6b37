//! Dead-letter: parks a record in the dead-letter topic with headers that say why.
//! Guarantees: the original key, value and headers are kept; `park` returns only once the
//! broker acknowledged the write (idempotent producer, acks=all), retrying with backoff for as
//! long as it takes, so a source offset counts as done only after its record is safely parked.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use crate::kafka::SourceRecord;
use crate::metrics::{label, Metrics};
use crate::send::ParkReason;

/// Header names added to a parked record (all prefixed `elevate-sink-`).
pub mod headers {
    /// Machine-readable reason, e.g. `rejected`, `malformed_json`, `retries_exhausted`.
    pub const REASON: &str = "elevate-sink-reason";
    /// Human detail naming the problem.
    pub const DETAIL: &str = "elevate-sink-detail";
    /// Last HTTP status from Elevate, if any.
    pub const HTTP_STATUS: &str = "elevate-sink-http-status";
    /// Source topic.
    pub const SOURCE_TOPIC: &str = "elevate-sink-source-topic";
    /// Source partition.
    pub const SOURCE_PARTITION: &str = "elevate-sink-source-partition";
    /// Source offset.
    pub const SOURCE_OFFSET: &str = "elevate-sink-source-offset";
    /// Attempts made (0 for records that were never sendable).
    pub const ATTEMPTS: &str = "elevate-sink-attempts";
    /// When it was parked, RFC 3339 UTC.
    pub const TIME: &str = "elevate-sink-time";
    /// Cart line index, when one line of a record was rejected.
    pub const LINE: &str = "elevate-sink-line";
    /// Present when the value was too large to park: the original value's size in bytes.
    pub const VALUE_OMITTED: &str = "elevate-sink-value-omitted";
}

/// Whether a produce error means "this record is too large", which no retry can fix.
fn is_too_large(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode::{MessageBatchTooLarge, MessageSizeTooLarge};
    matches!(
        e.rdkafka_error_code(),
        Some(MessageSizeTooLarge | MessageBatchTooLarge)
    )
}

/// Writes parked records. Share it in an `Arc`.
pub struct DeadLetter {
    /// The idempotent producer.
    producer: FutureProducer,
    /// The dead-letter topic.
    topic: String,
    /// Series to update.
    metrics: Arc<Metrics>,
}

impl DeadLetter {
    /// Wraps a producer made from [`crate::kafka::producer_config`].
    pub fn new(producer: FutureProducer, topic: String, metrics: Arc<Metrics>) -> Self {
        DeadLetter {
            producer,
            topic,
            metrics,
        }
    }

    /// The headers a parked record carries: the originals, then ours.
    pub fn headers_for(src: &SourceRecord, why: &ParkReason) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = src
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
            .collect();
        let mut add = |k: &str, v: String| out.push((k.to_string(), v.into_bytes()));
        add(headers::REASON, why.reason.clone());
        add(headers::DETAIL, why.detail.clone());
        if let Some(s) = why.status {
            add(headers::HTTP_STATUS, s.to_string());
        }
        add(headers::SOURCE_TOPIC, src.topic.clone());
        add(headers::SOURCE_PARTITION, src.partition.to_string());
        add(headers::SOURCE_OFFSET, src.offset.to_string());
        add(headers::ATTEMPTS, why.attempts.to_string());
        add(
            headers::TIME,
            humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        );
        if let Some(line) = why.line {
            add(headers::LINE, line.to_string());
        }
        out
    }

    /// Parks `src`; returns once acknowledged (retrying failed produces with backoff).
    ///
    /// One failure is permanent for a given record: it is larger than the dead-letter topic (or
    /// the producer) accepts. Retrying would wedge its partition's commits for good, so it is
    /// parked once more without its value, with [`headers::VALUE_OMITTED`] saying how large the
    /// value was; the original stays readable in the source topic at the coordinates in the
    /// headers (for as long as that topic retains it).
    pub async fn park(&self, src: &SourceRecord, why: &ParkReason) {
        let mut hs = Self::headers_for(src, why);
        let mut value = src.value.as_deref();
        let mut wait = Duration::from_millis(100);
        loop {
            let mut owned = OwnedHeaders::new_with_capacity(hs.len());
            for (k, v) in &hs {
                owned = owned.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
            let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(owned);
            if let Some(k) = &src.key {
                rec = rec.key(k.as_slice());
            }
            if let Some(v) = value {
                rec = rec.payload(v);
            }
            if let Some(ts) = src.timestamp_ms {
                rec = rec.timestamp(ts);
            }
            match self
                .producer
                .send(rec, Timeout::After(Duration::from_secs(30)))
                .await
            {
                Ok(_) => {
                    self.metrics
                        .dead_lettered
                        .get_or_create(&label("reason", &why.reason))
                        .inc();
                    tracing::warn!(
                        reason = %why.reason, detail = %why.detail, status = ?why.status,
                        topic = %src.topic, partition = src.partition, offset = src.offset,
                        value_omitted = value.is_none() && src.value.is_some(),
                        "record parked in the dead-letter topic"
                    );
                    return;
                }
                Err((e, _)) if is_too_large(&e) && value.is_some() => {
                    self.metrics.dead_letter_failures.inc();
                    let size = src.value.as_ref().map_or(0, Vec::len);
                    tracing::error!(
                        error = %e, size, topic = %src.topic, partition = src.partition, offset = src.offset,
                        "record too large for the dead-letter topic: parking it without its value"
                    );
                    hs.push((headers::VALUE_OMITTED.to_string(), size.to_string().into_bytes()));
                    value = None;
                }
                Err((e, _)) => {
                    self.metrics.dead_letter_failures.inc();
                    tracing::error!(error = %e, dead_letter_topic = %self.topic, "dead-letter produce failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}
