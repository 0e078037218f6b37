//! Dead-letter: parks a record in the dead-letter topic with headers that say why.
//! Guarantees: the original key, value and headers are kept; the parked record is stamped when it
//! is parked (the source timestamp travels in a header), so the topic's retention counts from
//! parking and no broker refuses it for its age; `park` returns only once the broker acknowledged
//! the write (idempotent producer, acks=all), retrying with backoff for as long as it takes, so a
//! source offset counts as done only after its record is safely parked. Limits: after a fatal
//! producer error `park` never returns; [`DeadLetter::fatal`] says so and the loop ends the process.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::BaseRecord;

use crate::decode::InvalidReason;
use crate::kafka::SourceRecord;
use crate::metrics::{label, LabelValue, Metrics};
use crate::wire::WireReason;

pub mod produce;

pub use produce::{DeadLetterProducer, StartError};

/// Why a record (or one of its lines) is parked: the closed set behind the reason header and
/// the `reason` label of `elevate_sink_dead_lettered_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ParkCause {
    /// Elevate answered with a data-class status (400, 409, 413, 414, 422, 431).
    Rejected,
    /// The configured transient budget ran out.
    RetriesExhausted,
    /// The record could not be decoded or breaks the request contract.
    Invalid(InvalidReason),
    /// The record's wire-format value (Avro, Protobuf) could not be decoded, for good.
    Wire(WireReason),
}

impl ParkCause {
    /// Every cause, in declaration order.
    pub const ALL: [ParkCause; 15] = [
        ParkCause::Rejected,
        ParkCause::RetriesExhausted,
        ParkCause::Invalid(InvalidReason::ALL[0]),
        ParkCause::Invalid(InvalidReason::ALL[1]),
        ParkCause::Invalid(InvalidReason::ALL[2]),
        ParkCause::Invalid(InvalidReason::ALL[3]),
        ParkCause::Invalid(InvalidReason::ALL[4]),
        ParkCause::Invalid(InvalidReason::ALL[5]),
        ParkCause::Wire(WireReason::ALL[0]),
        ParkCause::Wire(WireReason::ALL[1]),
        ParkCause::Wire(WireReason::ALL[2]),
        ParkCause::Wire(WireReason::ALL[3]),
        ParkCause::Wire(WireReason::ALL[4]),
        ParkCause::Wire(WireReason::ALL[5]),
        ParkCause::Wire(WireReason::ALL[6]),
    ];

    /// The stable value of the reason header and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ParkCause::Rejected => "rejected",
            ParkCause::RetriesExhausted => "retries_exhausted",
            ParkCause::Invalid(r) => r.as_str(),
            ParkCause::Wire(r) => r.as_str(),
        }
    }
}

impl LabelValue for ParkCause {
    const ALL: &'static [Self] = &ParkCause::ALL;

    fn as_str(self) -> &'static str {
        ParkCause::as_str(self)
    }
}

impl std::fmt::Display for ParkCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a notification (or a whole record) is parked in the dead-letter topic instead of
/// delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkReason {
    /// The cause: a rejection, a spent retry budget, or a decode reason.
    pub reason: ParkCause,
    /// Human detail (the sanitised response excerpt, or the decode detail).
    pub detail: String,
    /// Last HTTP status, if an answer was received.
    pub status: Option<u16>,
    /// Attempts made.
    pub attempts: u32,
    /// Cart line the notification came from, if line-specific.
    pub line: Option<usize>,
    /// The route whose notification (or contract) this is, when known.
    pub route: Option<String>,
}

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
    /// The route (`[[routes]]` name) whose notification or contract it is, when known.
    pub const ROUTE: &str = "elevate-sink-route";
    /// Present when the value was too large to park: the original value's size in bytes.
    pub const VALUE_OMITTED: &str = "elevate-sink-value-omitted";
    /// The source record's timestamp: decimal milliseconds since the Unix epoch, as Kafka gave it
    /// (CreateTime or LogAppendTime, whichever the source topic keeps); absent when it had none.
    /// The parked record's own timestamp is the time of parking.
    pub const SOURCE_TIMESTAMP: &str = "elevate-sink-source-timestamp";
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
    producer: DeadLetterProducer,
    /// The dead-letter topic.
    topic: String,
    /// Series to update.
    metrics: Arc<Metrics>,
    /// When the current run of failed produce attempts began (epoch ms); 0 while the last
    /// attempt succeeded (or none failed yet).
    failing_since_ms: AtomicI64,
    /// The producer's fatal error, once it reported one: it can no longer produce.
    fatal: OnceLock<String>,
}

impl DeadLetter {
    /// Wraps a producer made from [`crate::kafka::producer_config`].
    pub fn new(producer: DeadLetterProducer, topic: String, metrics: Arc<Metrics>) -> Self {
        DeadLetter {
            producer,
            topic,
            metrics,
            failing_since_ms: AtomicI64::new(0),
            fatal: OnceLock::new(),
        }
    }

    /// The producer's fatal error (code and reason), if it had one. A fatal producer never
    /// produces again (e.g. an idempotent producer whose sequence state broke): the process must
    /// restart, and the parks waiting on it never return.
    pub fn fatal(&self) -> Option<&str> {
        self.fatal.get().map(String::as_str)
    }

    /// Since when (epoch ms) parking has been failing without a single success in between, if it
    /// is.
    pub fn failing_since_ms(&self) -> Option<i64> {
        let since = self.failing_since_ms.load(Ordering::Relaxed);
        (since > 0).then_some(since)
    }

    /// Notes a failed produce attempt; true when the producer is now fatally broken.
    fn failed(&self) -> bool {
        self.metrics.dead_letter_failures.inc();
        let _ = self.failing_since_ms.compare_exchange(
            0,
            crate::util::now_ms().max(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        let Some((code, reason)) = self.producer.client().fatal_error() else {
            return false;
        };
        if self.fatal.set(format!("{code:?}: {reason}")).is_ok() {
            tracing::error!(
                error = ?code, reason = %reason, dead_letter_topic = %self.topic,
                "the dead-letter producer failed fatally and cannot produce again: the process stops (exit code 3) so it restarts with a new producer"
            );
        }
        true
    }

    /// The headers a parked record carries: the originals, then ours.
    pub fn headers_for(src: &SourceRecord, why: &ParkReason) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = src
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
            .collect();
        let mut add = |k: &str, v: String| out.push((k.to_string(), v.into_bytes()));
        add(headers::REASON, why.reason.as_str().to_string());
        add(headers::DETAIL, why.detail.clone());
        if let Some(s) = why.status {
            add(headers::HTTP_STATUS, s.to_string());
        }
        add(headers::SOURCE_TOPIC, src.topic.clone());
        add(headers::SOURCE_PARTITION, src.partition.to_string());
        add(headers::SOURCE_OFFSET, src.offset.to_string());
        add(headers::ATTEMPTS, why.attempts.to_string());
        if let Some(ts) = src.timestamp_ms {
            add(headers::SOURCE_TIMESTAMP, ts.to_string());
        }
        add(
            headers::TIME,
            humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        );
        if let Some(line) = why.line {
            add(headers::LINE, line.to_string());
        }
        if let Some(route) = &why.route {
            add(headers::ROUTE, route.clone());
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
    ///
    /// After a fatal producer error (see [`DeadLetter::fatal`]) it never returns: the record
    /// stays unfinished and the process ends.
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
            let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic).headers(owned);
            if let Some(k) = &src.key {
                rec = rec.key(k.as_slice());
            }
            if let Some(v) = value {
                rec = rec.payload(v);
            }
            // No timestamp: the producer stamps the time of parking. The source's time would
            // let retention delete a parked replay of old events at once, and a time far in the
            // future would be refused (`message.timestamp.after.max.ms`) and retried forever.
            match self.producer.send(rec, Duration::from_secs(30)).await {
                Ok(_) => {
                    self.failing_since_ms.store(0, Ordering::Relaxed);
                    self.metrics
                        .dead_lettered
                        .get_or_create(&label("reason", why.reason.as_str()))
                        .inc();
                    tracing::warn!(
                        reason = %why.reason, detail = %why.detail, status = ?why.status,
                        topic = %src.topic, partition = src.partition, offset = src.offset,
                        value_omitted = value.is_none() && src.value.is_some(),
                        "record parked in the dead-letter topic"
                    );
                    return;
                }
                Err(e) if is_too_large(&e) && value.is_some() => {
                    self.failed();
                    let size = src.value.as_ref().map_or(0, Vec::len);
                    tracing::error!(
                        error = %e, size, topic = %src.topic, partition = src.partition, offset = src.offset,
                        "record too large for the dead-letter topic: parking it without its value"
                    );
                    hs.push((headers::VALUE_OMITTED.to_string(), size.to_string().into_bytes()));
                    value = None;
                }
                Err(e) => {
                    if self.failed() {
                        // The record stays unfinished, so its offset is never committed; the
                        // loop sees `fatal()` and ends the process.
                        std::future::pending::<()>().await;
                    }
                    tracing::error!(error = %e, dead_letter_topic = %self.topic, "dead-letter produce failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parked_headers_carry_the_source_timestamp() {
        let src = SourceRecord {
            topic: "t".into(),
            partition: 2,
            offset: 7,
            key: None,
            value: Some(b"{}".to_vec()),
            headers: vec![("h".into(), Some(b"v".to_vec()))],
            timestamp_ms: Some(1_764_662_400_000),
        };
        let why = ParkReason {
            reason: ParkCause::Rejected,
            detail: "d".into(),
            status: Some(400),
            attempts: 1,
            line: None,
            route: Some("payments".into()),
        };
        let hs = DeadLetter::headers_for(&src, &why);
        let get = |k: &str| {
            hs.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(get("h").as_deref(), Some("v"), "original headers first");
        assert_eq!(get(headers::ROUTE).as_deref(), Some("payments"));
        assert_eq!(get(headers::SOURCE_TIMESTAMP).as_deref(), Some("1764662400000"));
        let none = SourceRecord {
            timestamp_ms: None,
            ..src
        };
        let hs = DeadLetter::headers_for(&none, &why);
        assert!(!hs.iter().any(|(n, _)| n == headers::SOURCE_TIMESTAMP));
        assert_eq!(get(headers::REASON).as_deref(), Some("rejected"));
    }

    #[test]
    fn every_cause_has_its_own_stable_label() {
        let labels: Vec<&str> = ParkCause::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            labels,
            [
                "rejected",
                "retries_exhausted",
                "invalid_utf8",
                "malformed_json",
                "not_an_object",
                "wrong_type",
                "missing_field",
                "bad_value",
                "wire_too_short",
                "wire_unknown_magic",
                "wire_bad_message_indexes",
                "unknown_schema_id",
                "bad_schema",
                "wrong_schema_format",
                "schema_mismatch"
            ]
        );
        for r in InvalidReason::ALL {
            assert!(ParkCause::ALL.contains(&ParkCause::Invalid(r)), "{r}");
        }
        for r in WireReason::ALL {
            assert!(ParkCause::ALL.contains(&ParkCause::Wire(r)), "{r:?}");
        }
    }
}
