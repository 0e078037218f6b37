//! Metrics: every Prometheus series the service exposes, in one struct, registered in one place.
//! Guarantees: names are stable (`elevate_sink_*`), labels carry no personal data (markets,
//! reasons, statuses, topics, partitions, route names and kinds only), and the text exposition is what `/metrics`
//! serves.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::select::SkipReason;
use crate::util::FastMap;

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
    /// Partitions whose committed offset read back below what the broker had acknowledged.
    pub commit_regressions: Counter,
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
    /// Notifications delivered, by route and kind.
    pub route_delivered: Family<Labels, Counter>,
    /// Notifications (or records) skipped, by route, kind and reason.
    pub route_skipped: Family<Labels, Counter>,
    /// Notifications (or records) parked, by route, kind and reason.
    pub route_dead_lettered: Family<Labels, Counter>,
    /// Waits of a record whose schema the registry could not give (unreachable, 5xx, timeout).
    pub registry_waits: Counter,
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
            commit_regressions: Counter::default(),
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
            route_delivered: Family::default(),
            route_skipped: Family::default(),
            route_dead_lettered: Family::default(),
            registry_waits: Counter::default(),
        };
        m.register_flow();
        m.register_operations();
        m
    }

    /// Registers the series of records and notifications flowing through.
    fn register_flow(&mut self) {
        let r = &mut self.registry;
        r.register(
            "records_consumed",
            "Records taken from Kafka",
            self.records_consumed.clone(),
        );
        r.register(
            "notifications",
            "Notifications finished, by outcome and HTTP status",
            self.notifications.clone(),
        );
        r.register(
            "retries",
            "Retries scheduled, by class and status",
            self.retries.clone(),
        );
        r.register(
            "dead_lettered",
            "Records parked in the dead-letter topic, by reason",
            self.dead_lettered.clone(),
        );
        r.register(
            "skipped",
            "Records or cart lines skipped, by reason",
            self.skipped.clone(),
        );
        r.register(
            "config_errors",
            "Configuration-class answers from Elevate, by status",
            self.config_errors.clone(),
        );
        r.register(
            "in_flight_notifications",
            "Notifications taken but not finished",
            self.in_flight_notifications.clone(),
        );
        r.register(
            "in_flight_records",
            "Records taken but not finished",
            self.in_flight_records.clone(),
        );
        r.register(
            "in_flight_requests",
            "HTTP requests being sent",
            self.in_flight_requests.clone(),
        );
        r.register(
            "limiter_wait_seconds",
            "Seconds spent waiting for the rate limiter",
            self.limiter_wait_seconds.clone(),
        );
        r.register(
            "route_delivered",
            "Notifications delivered, by route and kind",
            self.route_delivered.clone(),
        );
        r.register(
            "route_skipped",
            "Notifications or records skipped, by route, kind and reason",
            self.route_skipped.clone(),
        );
        r.register(
            "route_dead_lettered",
            "Notifications or records parked, by route, kind and reason",
            self.route_dead_lettered.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Per-attempt request latency",
            self.request_duration.clone(),
        );
    }

    /// Registers the series of commits, partitions, the dead-letter producer and the quota.
    fn register_operations(&mut self) {
        let r = &mut self.registry;
        r.register(
            "commit_failures",
            "Offset commits that failed (synchronous or asynchronous)",
            self.commit_failures.clone(),
        );
        r.register(
            "commit_regressions",
            "Partitions whose committed offset read back below the position the broker had acknowledged (moved back by a late commit); committed again",
            self.commit_regressions.clone(),
        );
        r.register(
            "commits",
            "Offset commits the broker acknowledged",
            self.commits.clone(),
        );
        r.register(
            "consumer_lag",
            "Consumer lag per partition (messages)",
            self.consumer_lag.clone(),
        );
        r.register(
            "paused_partitions",
            "Partitions paused for backpressure",
            self.paused_partitions.clone(),
        );
        r.register(
            "assigned_partitions",
            "Partitions assigned to this replica",
            self.assigned_partitions.clone(),
        );
        r.register("rebalances", "Rebalance events, by kind", self.rebalances.clone());
        r.register(
            "dead_letter_failures",
            "Dead-letter produce attempts that failed and were retried",
            self.dead_letter_failures.clone(),
        );
        r.register(
            "quota_rps",
            "This replica's share of the request quota",
            self.quota_rps.clone(),
        );
        r.register(
            "consume_errors",
            "Consume errors, by librdkafka error code and kind",
            self.consume_errors.clone(),
        );
        r.register(
            "offset_map_truncated",
            "Partition commits whose done-offset map was cut or left out to fit the metadata budget",
            self.offset_map_truncated.clone(),
        );
        r.register(
            "offset_map_ignored",
            "Committed metadata read back on assignment that gave no usable done map, by reason",
            self.offset_map_ignored.clone(),
        );
        r.register(
            "registry_waits",
            "Waits of a record whose schema the registry could not give (unreachable, 5xx, timeout)",
            self.registry_waits.clone(),
        );
    }

    /// Notifications Elevate accepted (204).
    pub fn delivered(&self) -> u64 {
        count(
            &self.notifications,
            &vec![("outcome", "delivered".into()), ("status", "204".into())],
        )
    }

    /// Records taken from `topic`.
    pub fn consumed(&self, topic: &str) -> u64 {
        count(&self.records_consumed, &label("topic", topic))
    }

    /// Records or lines skipped, by reason (reasons never counted are left out).
    pub fn skipped_by<R: LabelValue>(&self) -> BTreeMap<R, u64> {
        by_value(&self.skipped, "reason")
    }

    /// Records or lines parked, by reason (reasons never counted are left out).
    pub fn dead_lettered_by<R: LabelValue>(&self) -> BTreeMap<R, u64> {
        by_value(&self.dead_lettered, "reason")
    }

    /// The Prometheus text exposition of every series.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// A closed set of label values (a reason enum), so a family can be read back value by value:
/// the registry cannot list a family's label sets.
pub trait LabelValue: Copy + Ord + 'static {
    /// Every value.
    const ALL: &'static [Self];
    /// The label value as exposed.
    fn as_str(self) -> &'static str;
}

/// The value of one counter of `family`, 0 when it was never created.
fn count(family: &Family<Labels, Counter>, labels: &Labels) -> u64 {
    family.get(labels).map_or(0, |c| c.get())
}

/// The counters of the one-label `family` for every value of `R` that has one.
fn by_value<R: LabelValue>(family: &Family<Labels, Counter>, key: &'static str) -> BTreeMap<R, u64> {
    R::ALL
        .iter()
        .filter_map(|&v| Some((v, family.get(&label(key, v.as_str()))?.get())))
        .collect()
}

/// The labels of a per-route series: route, kind and (for skips and parks) the reason.
pub fn route_labels(route: &crate::route::RouteTag, reason: Option<&str>) -> Labels {
    let mut l = vec![
        ("route", route.name.to_string()),
        ("kind", route.kind.as_str().to_string()),
    ];
    if let Some(r) = reason {
        l.push(("reason", r.to_string()));
    }
    l
}

/// The hot path's counters resolved once: `records_consumed` per topic, `route_delivered` per
/// route (names are unique, and a route has one kind), and `skipped` / `route_skipped` per reason,
/// looked up by a borrowed key or the reason's index (a `Family` lookup costs a label allocation,
/// a hash of it and a lock on every record; a route skip's labels are four allocations). A topic
/// or route not known at start falls back to the family. A skip series is created at its first
/// skip, as through the family: a reason that never happens has no series. The maps hash with
/// foldhash, as the ledger's does: a lookup per record and per delivery, on keys from the
/// configuration (SipHash's share of the sink's CPU was about 0.4 %, docs/performance.md).
#[derive(Default)]
pub struct HotCounters {
    /// `records_consumed_total{topic}`, by topic.
    consumed: FastMap<String, Counter>,
    /// `route_delivered_total{route,kind}`, by route name.
    delivered: FastMap<std::sync::Arc<str>, Counter>,
    /// `skipped_total{reason}`, by [`SkipReason::index`].
    skipped: BySkip,
    /// `route_skipped_total{route,kind,reason}`, by route name, then reason.
    route_skipped: FastMap<std::sync::Arc<str>, BySkip>,
}

/// One counter per skip reason, each made at its first use.
type BySkip = [std::sync::OnceLock<Counter>; SkipReason::ALL.len()];

impl HotCounters {
    /// The series of `topics` and `routes`, created now in `m`.
    pub fn new<'a>(
        m: &Metrics,
        topics: impl IntoIterator<Item = &'a str>,
        routes: impl IntoIterator<Item = &'a crate::route::RouteTag>,
    ) -> Self {
        let delivered: FastMap<_, _> = routes
            .into_iter()
            .map(|r| {
                (
                    r.name.clone(),
                    m.route_delivered.get_or_create(&route_labels(r, None)).clone(),
                )
            })
            .collect();
        HotCounters {
            consumed: topics
                .into_iter()
                .map(|t| {
                    (
                        t.to_string(),
                        m.records_consumed.get_or_create(&label("topic", t)).clone(),
                    )
                })
                .collect(),
            route_skipped: delivered
                .keys()
                .map(|name| (name.clone(), BySkip::default()))
                .collect(),
            delivered,
            skipped: BySkip::default(),
        }
    }

    /// One more record consumed from `topic`.
    pub fn consumed(&self, m: &Metrics, topic: &str) {
        match self.consumed.get(topic) {
            Some(c) => c.inc(),
            None => m.records_consumed.get_or_create(&label("topic", topic)).inc(),
        };
    }

    /// One more notification of `route` delivered.
    pub fn delivered(&self, m: &Metrics, route: &crate::route::RouteTag) {
        match self.delivered.get(&route.name) {
            Some(c) => c.inc(),
            None => m.route_delivered.get_or_create(&route_labels(route, None)).inc(),
        };
    }

    /// One more record or line skipped for `reason`.
    pub fn skipped(&self, m: &Metrics, reason: SkipReason) {
        let make = || m.skipped.get_or_create(&label("reason", reason.as_str())).clone();
        match self.skipped.get(reason.index()) {
            Some(slot) => slot.get_or_init(make).inc(),
            None => make().inc(), // a reason missing from `SkipReason::ALL`: counted all the same
        };
    }

    /// One more record or line skipped by `route` for `reason`.
    pub fn route_skipped(&self, m: &Metrics, route: &crate::route::RouteTag, reason: SkipReason) {
        let make = || {
            m.route_skipped
                .get_or_create(&route_labels(route, Some(reason.as_str())))
                .clone()
        };
        match self
            .route_skipped
            .get(&route.name)
            .and_then(|by| by.get(reason.index()))
        {
            Some(slot) => slot.get_or_init(make).inc(),
            None => make().inc(),
        };
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

    #[test]
    fn hot_skips_count_into_the_family_series_made_at_the_first_skip() {
        use crate::route::{Kind, RouteTag};
        let m = Metrics::new();
        let known = RouteTag::default();
        let late = RouteTag {
            name: "late".into(),
            kind: Kind::Click,
        };
        let hot = HotCounters::new(&m, ["t"], [&known]);
        assert!(
            !m.encode().contains("skipped_total{"),
            "no skip series before a skip"
        );
        hot.skipped(&m, SkipReason::NoTicket);
        hot.skipped(&m, SkipReason::NoTicket);
        hot.route_skipped(&m, &known, SkipReason::Bot);
        hot.route_skipped(&m, &late, SkipReason::Bot);
        hot.route_skipped(&m, &late, SkipReason::Bot);
        let text = m.encode();
        assert!(
            text.contains("elevate_sink_skipped_total{reason=\"no_ticket\"} 2"),
            "{text}"
        );
        assert!(!text.contains("reason=\"not_from_elevate\""), "{text}");
        for (route, kind, n) in [(&*known.name, known.kind.as_str(), 1), ("late", "click", 2)] {
            let series = format!(
                "elevate_sink_route_skipped_total{{route=\"{route}\",kind=\"{kind}\",reason=\"bot\"}} {n}"
            );
            assert!(text.contains(&series), "{series} in {text}");
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Why {
        A,
        B,
    }

    impl LabelValue for Why {
        const ALL: &'static [Self] = &[Why::A, Why::B];
        fn as_str(self) -> &'static str {
            match self {
                Why::A => "a",
                Why::B => "b",
            }
        }
    }

    #[test]
    fn typed_counts_read_the_registered_counters() {
        let m = Metrics::new();
        assert_eq!((m.delivered(), m.consumed("t")), (0, 0));
        assert!(m.skipped_by::<Why>().is_empty());
        m.skipped.get_or_create(&label("reason", "b")).inc_by(3);
        m.skipped.get_or_create(&label("reason", "other")).inc();
        m.dead_lettered.get_or_create(&label("reason", "a")).inc();
        m.records_consumed.get_or_create(&label("topic", "t")).inc_by(2);
        m.notifications
            .get_or_create(&vec![("outcome", "delivered".into()), ("status", "204".into())])
            .inc();
        assert_eq!(
            m.skipped_by::<Why>().into_iter().collect::<Vec<_>>(),
            [(Why::B, 3)]
        );
        assert_eq!(
            m.dead_lettered_by::<Why>().into_iter().collect::<Vec<_>>(),
            [(Why::A, 1)]
        );
        assert_eq!((m.delivered(), m.consumed("t"), m.consumed("u")), (1, 2, 0));
    }
}
