//! Metrics: every Prometheus series the service exposes, in one struct, registered in one place.
//! Guarantees: names are stable (`elevate_sink_*`), labels carry no personal data (markets,
//! reasons, statuses, topics and partitions only), and the text exposition is what `/metrics`
//! serves.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A label set: static names, owned values.
pub type Labels = Vec<(&'static str, String)>;

/// All series; clone-free, share it in an `Arc`.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    registry: Registry,
    /// Records taken from Kafka, by topic.
    pub records_consumed: Family<Labels, Counter>,
    /// Notifications finished, by outcome (delivered, dead_lettered) and last HTTP status.
    pub notifications: Family<Labels, Counter>,
    /// Retries scheduled, by class (transient, misconfigured) and status or error.
    pub retries: Family<Labels, Counter>,
    /// Records or lines parked in the dead-letter topic, by reason.
    pub dead_lettered: Family<Labels, Counter>,
    /// Records or lines skipped, by reason.
    pub skipped: Family<Labels, Counter>,
    /// Configuration-class answers (401/403/404/...), by status.
    pub config_errors: Family<Labels, Counter>,
    /// Notifications taken but not finished.
    pub in_flight_notifications: Gauge,
    /// Records taken but not finished.
    pub in_flight_records: Gauge,
    /// HTTP requests being sent right now.
    pub in_flight_requests: Gauge,
    /// Total seconds spent waiting for the rate limiter.
    pub limiter_wait_seconds: Counter<f64, AtomicU64>,
    /// Per-attempt request latency in seconds.
    pub request_duration: Histogram,
    /// Offset commits that failed (synchronous, or asynchronous as answered).
    pub commit_failures: Counter,
    /// Offset commits the broker acknowledged.
    pub commits: Counter,
    /// Consumer lag per partition (from librdkafka statistics).
    pub consumer_lag: Family<Labels, Gauge>,
    /// Partitions currently paused for backpressure.
    pub paused_partitions: Gauge,
    /// Partitions currently assigned.
    pub assigned_partitions: Gauge,
    /// Rebalance events seen, by kind (assign, revoke).
    pub rebalances: Family<Labels, Counter>,
    /// Dead-letter produce attempts that failed (retried).
    pub dead_letter_failures: Counter,
    /// This replica's requests-per-second quota after sharing.
    pub quota_rps: Gauge<f64, AtomicU64>,
    /// Consume errors, by librdkafka error code and kind (transient, unreadable, fatal).
    pub consume_errors: Family<Labels, Counter>,
    /// Partition commits whose done-offset map was cut or left out to fit the metadata budget.
    pub offset_map_truncated: Counter,
    /// Committed metadata read back on assignment that gave no usable done map, by reason.
    pub offset_map_ignored: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every series.
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("elevate_sink"),
            records_consumed: Family::default(),
            notifications: Family::default(),
            retries: Family::default(),
            dead_lettered: Family::default(),
            skipped: Family::default(),
            config_errors: Family::default(),
            in_flight_notifications: Gauge::default(),
            in_flight_records: Gauge::default(),
            in_flight_requests: Gauge::default(),
            limiter_wait_seconds: Counter::default(),
            request_duration: Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            commit_failures: Counter::default(),
            commits: Counter::default(),
            consumer_lag: Family::default(),
            paused_partitions: Gauge::default(),
            assigned_partitions: Gauge::default(),
            rebalances: Family::default(),
            dead_letter_failures: Counter::default(),
            quota_rps: Gauge::default(),
            consume_errors: Family::default(),
            offset_map_truncated: Counter::default(),
            offset_map_ignored: Family::default(),
        };
        let r = &mut m.registry;
        r.register(
            "records_consumed",
            "Records taken from Kafka",
            m.records_consumed.clone(),
        );
        r.register(
            "notifications",
            "Notifications finished, by outcome and HTTP status",
            m.notifications.clone(),
        );
        r.register(
            "retries",
            "Retries scheduled, by class and status",
            m.retries.clone(),
        );
        r.register(
            "dead_lettered",
            "Records parked in the dead-letter topic, by reason",
            m.dead_lettered.clone(),
        );
        r.register(
            "skipped",
            "Records or cart lines skipped, by reason",
            m.skipped.clone(),
        );
        r.register(
            "config_errors",
            "Configuration-class answers from Elevate, by status",
            m.config_errors.clone(),
        );
        r.register(
            "in_flight_notifications",
            "Notifications taken but not finished",
            m.in_flight_notifications.clone(),
        );
        r.register(
            "in_flight_records",
            "Records taken but not finished",
            m.in_flight_records.clone(),
        );
        r.register(
            "in_flight_requests",
            "HTTP requests being sent",
            m.in_flight_requests.clone(),
        );
        r.register(
            "limiter_wait_seconds",
            "Seconds spent waiting for the rate limiter",
            m.limiter_wait_seconds.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Per-attempt request latency",
            m.request_duration.clone(),
        );
        r.register(
            "commit_failures",
            "Offset commits that failed (synchronous or asynchronous)",
            m.commit_failures.clone(),
        );
        r.register(
            "commits",
            "Offset commits the broker acknowledged",
            m.commits.clone(),
        );
        r.register(
            "consumer_lag",
            "Consumer lag per partition (messages)",
            m.consumer_lag.clone(),
        );
        r.register(
            "paused_partitions",
            "Partitions paused for backpressure",
            m.paused_partitions.clone(),
        );
        r.register(
            "assigned_partitions",
            "Partitions assigned to this replica",
            m.assigned_partitions.clone(),
        );
        r.register("rebalances", "Rebalance events, by kind", m.rebalances.clone());
        r.register(
            "dead_letter_failures",
            "Dead-letter produce attempts that failed and were retried",
            m.dead_letter_failures.clone(),
        );
        r.register(
            "quota_rps",
            "This replica's share of the request quota",
            m.quota_rps.clone(),
        );
        r.register(
            "consume_errors",
            "Consume errors, by librdkafka error code and kind",
            m.consume_errors.clone(),
        );
        r.register(
            "offset_map_truncated",
            "Partition commits whose done-offset map was cut or left out to fit the metadata budget",
            m.offset_map_truncated.clone(),
        );
        r.register(
            "offset_map_ignored",
            "Committed metadata read back on assignment that gave no usable done map, by reason",
            m.offset_map_ignored.clone(),
        );
        m
    }

    /// The Prometheus text exposition of every series.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Shorthand for a one-label set.
pub fn label(k: &'static str, v: impl Into<String>) -> Labels {
    vec![(k, v.into())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_exposed_with_prefix() {
        let m = Metrics::new();
        m.skipped.get_or_create(&label("reason", "no_ticket")).inc();
        m.request_duration.observe(0.02);
        let text = m.encode();
        assert!(
            text.contains("elevate_sink_skipped_total{reason=\"no_ticket\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("elevate_sink_request_duration_seconds_bucket"),
            "{text}"
        );
    }
}
