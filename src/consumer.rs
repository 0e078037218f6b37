//! The consumer both `run` and `replay` read with: its context (rebalances, commit answers,
//! statistics, errors), the commit glue over [`crate::commit`], pause/resume, consume errors and
//! why a loop stops ([`Stop`]). Guarantees: revoked partitions get a synchronous commit of what is
//! done (tried again for up to 5 s while the coordinator moves) and their in-flight results are
//! never committed; a new assignment is seeded from the committed done-offset maps. Limits: a
//! failed seed read or revoke commit means duplicates, never loss; `replay` (manual assignment)
//! never sees a rebalance and has no readiness to report.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::Notify;

use crate::admin::{self, Health};
use crate::commit::{self, InFlight, Metadata, Point};
use crate::kafka::ConsumeError;
use crate::metrics::{label, Metrics};
use crate::offsetmap::DoneMap;
use crate::util::lock;
use crate::work::{SharedLedger, Tp, Work};

/// The consumer's callbacks: rebalances, commits, statistics, errors.
pub struct SinkContext {
    /// Offsets and ownership.
    ledger: SharedLedger,
    /// Series to update.
    metrics: Arc<Metrics>,
    /// Readiness facts (`run`'s; `replay` has no readiness to report).
    health: Option<Arc<Health>>,
    /// Whether partitions are paused for backpressure (new assignments start paused too).
    paused: AtomicBool,
    /// Wakes the loop after a rebalance (share recomputation).
    wake: Arc<Notify>,
    /// Asynchronous commits waiting for their answer.
    commits_in_flight: InFlight,
    /// Commit metadata budget in bytes (`pipeline.commit_metadata_max_bytes`).
    budget: usize,
    /// Assignments served so far (the final commit waits for one after a refused commit).
    assigns: AtomicU64,
    /// Commit points of revoked partitions whose revoke commit failed (a rebalance overlapped
    /// it): what they say is done is still true, so they seed the partition if it comes back and
    /// the final commit retries them where the broker's position has not moved past them.
    orphans: Mutex<HashMap<Tp, Point>>,
}

/// How long reading the committed offsets (and their maps) of newly assigned partitions may take.
pub(crate) const SEED_TIMEOUT: Duration = Duration::from_secs(10);

impl SinkContext {
    /// A context over `ledger`, writing commit metadata of at most `budget` bytes, reporting
    /// broker and group facts to `health` when there is one.
    pub fn new(
        ledger: SharedLedger,
        metrics: Arc<Metrics>,
        health: Option<Arc<Health>>,
        wake: Arc<Notify>,
        budget: usize,
    ) -> Self {
        SinkContext {
            ledger,
            metrics,
            health,
            paused: AtomicBool::new(false),
            wake,
            commits_in_flight: InFlight::new(),
            budget,
            assigns: AtomicU64::new(0),
            orphans: Mutex::new(HashMap::new()),
        }
    }

    /// The done maps to seed newly assigned partitions with: each partition's committed metadata
    /// read back (see [`commit::read_back`]), joined with what an orphaned commit point of ours
    /// says is done. A failed read seeds nothing (duplicates, never a wrong skip). librdkafka's
    /// `committed` already waits out a missing coordinator or a broken connection within
    /// [`SEED_TIMEOUT`], so a read fails only when the coordinator stays away longer, and the
    /// partitions cannot start before it returns anyway (librdkafka fetches the same committed
    /// offsets first). Retrying here would hold the rebalance callback, and with it the consume
    /// loop's thread, for longer; the README's "What can still be sent twice" says so.
    fn seeds(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) -> HashMap<Tp, DoneMap> {
        if tpl.count() == 0 {
            return HashMap::new();
        }
        let committed = match consumer.committed_offsets(tpl.clone(), SEED_TIMEOUT) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    partitions = tpl.count(),
                    "cannot read the committed done-offset maps; the partitions start without them"
                );
                return HashMap::new();
            }
        };
        let orphans = lock(&self.orphans);
        let mut seeds = HashMap::new();
        for e in committed.elements() {
            let key: Tp = (e.topic().to_string(), e.partition());
            let Offset::Offset(c) = e.offset() else {
                continue;
            };
            let mut map = commit::read_back(&key, c, e.metadata(), &self.metrics).done.ok();
            if let Some(o) = orphans.get(&key) {
                map = Some(with_orphan(c, map, o));
            }
            if let Some(map) = map.filter(|m| !m.is_empty()) {
                seeds.insert(key, map);
            }
        }
        seeds
    }

    fn set_health(&self, f: impl FnOnce(&Health)) {
        if let Some(h) = &self.health {
            f(h);
        }
    }

    /// The offsets and ownership this context keeps.
    pub(crate) fn ledger(&self) -> &SharedLedger {
        &self.ledger
    }

    /// What wakes the loop (rebalances, work done).
    pub(crate) fn wake(&self) -> &Notify {
        &self.wake
    }

    /// The commit metadata budget in bytes.
    pub(crate) fn budget(&self) -> usize {
        self.budget
    }

    /// Assignments served so far.
    pub(crate) fn assigns(&self) -> u64 {
        self.assigns.load(Ordering::Relaxed)
    }

    /// The orphaned commit points of partitions that have none among `points`.
    pub(crate) fn orphans_besides(&self, points: &[Point]) -> Vec<Point> {
        lock(&self.orphans)
            .values()
            .filter(|o| !points.iter().any(|p| p.key == o.key))
            .cloned()
            .collect()
    }

    /// Forgets the orphaned commit points of the partitions of `points` (just committed).
    pub(crate) fn forget_orphans(&self, points: &[Point]) {
        lock(&self.orphans).retain(|k, _| !points.iter().any(|p| &p.key == k));
    }
}

/// The done map relative to the committed offset `c`: `map` (read back) plus what orphaned commit
/// point `o` says is done — every offset between `c` and its position (its tracker read them all
/// from a position at or below `c`), and its own map. Offset `c` itself cannot be expressed (a
/// map's base is never done), so it is sent again.
fn with_orphan(c: i64, map: Option<DoneMap>, o: &Point) -> DoneMap {
    let mut extra = DoneMap::empty(c);
    extra.push(c.saturating_add(1)..o.position());
    map.unwrap_or_else(|| DoneMap::empty(c))
        .union(&extra)
        .union(&o.done)
}

impl ClientContext for SinkContext {
    fn stats(&self, statistics: Statistics) {
        // A broker we talk to again clears an earlier "all brokers down", even when idle.
        if statistics
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state == "UP")
        {
            self.set_health(|h| h.broker_ok.store(true, Ordering::Relaxed));
        }
        // Only partitions we own: statistics keep listing a partition for a while after it was
        // revoked, and a revoked partition's lag is its new owner's to report.
        let ledger = lock(&self.ledger);
        for (topic, t) in statistics.topics {
            for (p, part) in t.partitions {
                if p >= 0 && part.consumer_lag >= 0 && ledger.owns(&(topic.clone(), p)) {
                    self.metrics
                        .consumer_lag
                        .get_or_create(&vec![("topic", topic.clone()), ("partition", p.to_string())])
                        .set(part.consumer_lag);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.set_health(|h| h.broker_ok.store(false, Ordering::Relaxed));
        }
        tracing::error!(error = %error, reason, "kafka client error");
    }
}

impl ConsumerContext for SinkContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.metrics
                .rebalances
                .get_or_create(&label("kind", "revoke"))
                .inc();
            let mut points = Vec::new();
            {
                let mut ledger = lock(&self.ledger);
                for e in tpl.elements() {
                    let key: Tp = (e.topic().to_string(), e.partition());
                    self.commits_in_flight.forget(&key);
                    self.metrics
                        .consumer_lag
                        .remove(&vec![("topic", key.0.clone()), ("partition", key.1.to_string())]);
                    if let Some(point) = ledger.revoke_point(&key) {
                        points.push(point);
                    }
                }
                self.metrics.assigned_partitions.set(ledger.len() as i64);
            }
            let committed = commit::commit_revoked(
                consumer,
                &self.metrics,
                self.budget,
                &points,
                commit::REVOKE_COMMIT_PATIENCE,
            )
            .is_ok();
            {
                let mut orphans = lock(&self.orphans);
                for p in &points {
                    orphans.remove(&p.key);
                }
                if !committed {
                    orphans.extend(points.iter().map(|p| (p.key.clone(), p.clone())));
                }
            }
            tracing::info!(
                partitions = tpl.count(),
                committed = if committed { points.len() } else { 0 },
                "partitions revoked"
            );
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.metrics
                    .rebalances
                    .get_or_create(&label("kind", "assign"))
                    .inc();
                let seeds = self.seeds(consumer, tpl);
                let mut ledger = lock(&self.ledger);
                for e in tpl.elements() {
                    let key: Tp = (e.topic().to_string(), e.partition());
                    ledger.assign(key.clone());
                    if let Some(map) = seeds.get(&key) {
                        ledger.seed(&key, map);
                    }
                }
                self.metrics.assigned_partitions.set(ledger.len() as i64);
                drop(ledger);
                if self.paused.load(Ordering::Relaxed) && tpl.count() > 0 {
                    let _ = consumer.pause(tpl);
                }
                self.set_health(|h| h.joined.store(true, Ordering::Relaxed));
                self.assigns.fetch_add(1, Ordering::Relaxed);
                self.set_health(|h| h.broker_ok.store(true, Ordering::Relaxed));
                tracing::info!(
                    partitions = tpl.count(),
                    seeded = seeds.len(),
                    "partitions assigned"
                );
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::error!(error = %e, "rebalance error"),
        }
        self.wake.notify_one();
    }

    /// The answer to a periodic (asynchronous) commit, served on the polling thread.
    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, offsets: &TopicPartitionList) {
        commit::acknowledged(
            &self.ledger,
            &self.metrics,
            &self.commits_in_flight,
            &result,
            offsets,
        );
    }
}

/// Exit code of a process whose Kafka client can no longer work (fatal consumer error, e.g. a
/// fenced static member; fatal dead-letter producer error): restart it.
pub const EXIT_FATAL: u8 = 3;

/// Exit code of a process that met records it could not read (a corrupt batch, ...): `replay`
/// stops with it at once; `run` stalls (see `stall_on_unreadable`) and exits with it on SIGTERM.
/// A restart reads the records again from the last commit; if they stay unreadable the broker's
/// copy needs repair.
pub const EXIT_UNREADABLE: u8 = 4;

/// Why a run (or a replay) stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub enum Stop {
    /// The shutdown signal (SIGTERM/SIGINT): exit 0.
    #[default]
    #[error("stopped on request")]
    Requested,
    /// A Kafka client can no longer work: exit [`EXIT_FATAL`].
    #[error("a Kafka client failed fatally: {0}")]
    Fatal(String),
    /// Records of an assigned partition could not be read: exit [`EXIT_UNREADABLE`] (replay at
    /// once; run after stalling until SIGTERM).
    #[error("records could not be read: {0}")]
    Unreadable(String),
}

impl Stop {
    /// The process exit code for this stop.
    pub fn exit_code(&self) -> u8 {
        match self {
            Stop::Requested => 0,
            Stop::Fatal(_) => EXIT_FATAL,
            Stop::Unreadable(_) => EXIT_UNREADABLE,
        }
    }

    /// The `/readyz` reason while stopping this way (none for a requested stop).
    pub(crate) fn not_ready(&self) -> Option<&'static str> {
        match self {
            Stop::Requested => None,
            Stop::Fatal(_) => Some(admin::NOT_READY_FATAL),
            Stop::Unreadable(_) => Some(admin::NOT_READY_UNREADABLE),
        }
    }
}

/// Handles a consume error of `run` or `replay`: counts it in
/// `consume_errors_total{code,kind}`, logs it, and says whether the loop must stop. End of
/// partition is the caller's (replay's) business and is ignored here.
pub fn on_consume_error(e: &KafkaError, metrics: &Metrics) -> Option<Stop> {
    let kind = ConsumeError::of(e);
    let (name, stop) = match kind {
        ConsumeError::Eof(_) => return None,
        ConsumeError::Transient(_) => ("transient", None),
        ConsumeError::Unreadable(_) => ("unreadable", Some(Stop::Unreadable(e.to_string()))),
        ConsumeError::Fatal(_) => ("fatal", Some(Stop::Fatal(e.to_string()))),
    };
    let code = kind.code().map_or_else(String::new, |c| format!("{c:?}"));
    metrics
        .consume_errors
        .get_or_create(&vec![("code", code), ("kind", name.to_string())])
        .inc();
    match &stop {
        None => tracing::warn!(error = %e, "consume error; librdkafka retries"),
        Some(Stop::Unreadable(_)) => tracing::error!(
            error = %e,
            "records of an assigned partition could not be read: taking no more records and \
             committing what is done, never past them"
        ),
        Some(_) => tracing::error!(
            error = %e,
            "fatal consumer error: the consumer can no longer work; stopping with exit code 3 (restart)"
        ),
    }
    stop
}

/// A fatal error of the consumer's client (belt and braces: librdkafka also reports it through
/// `recv`), or of the dead-letter producer.
pub(crate) fn fatal_client(consumer: &StreamConsumer<SinkContext>, work: &Work) -> Option<Stop> {
    if let Some((code, reason)) = consumer.client().fatal_error() {
        tracing::error!(error = ?code, %reason, "fatal consumer error: stopping with exit code 3 (restart)");
        return Some(Stop::Fatal(format!("consumer: {code:?}: {reason}")));
    }
    work.dead_letter
        .fatal()
        .map(|why| Stop::Fatal(format!("dead-letter producer: {why}")))
}

/// Pauses (or resumes) `tpl`'s partitions; a failure is logged (the next turn tries again).
pub(crate) fn pause_or_resume(consumer: &StreamConsumer<SinkContext>, tpl: &TopicPartitionList, pause: bool) {
    let r = if pause {
        consumer.pause(tpl)
    } else {
        consumer.resume(tpl)
    };
    if let Err(e) = r {
        tracing::warn!(error = %e, pause, "pause/resume failed");
    }
}

/// Pauses (or resumes) every assigned partition, and partitions assigned from now on.
pub(crate) fn set_paused(consumer: &StreamConsumer<SinkContext>, pause: bool, metrics: &Metrics) {
    consumer.context().paused.store(pause, Ordering::Relaxed);
    match consumer.assignment() {
        Ok(tpl) => {
            pause_or_resume(consumer, &tpl, pause);
            metrics
                .paused_partitions
                .set(if pause { tpl.count() as i64 } else { 0 });
            tracing::debug!(pause, partitions = tpl.count(), "backpressure");
        }
        Err(e) => tracing::warn!(error = %e, "cannot read assignment"),
    }
}

/// Pauses (or resumes) `partitions` of `topic` (nothing when there are none).
pub(crate) fn pause_partitions(
    consumer: &StreamConsumer<SinkContext>,
    topic: &str,
    partitions: &[i32],
    pause: bool,
) {
    if partitions.is_empty() {
        return;
    }
    pause_or_resume(consumer, &tpl_of(topic, partitions.iter().copied()), pause);
}

/// The partitions `partitions` of `topic`, without offsets.
pub(crate) fn tpl_of(topic: &str, partitions: impl IntoIterator<Item = i32>) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, p);
    }
    tpl
}

/// `run`'s periodic commit of what the context's ledger says is done (see [`commit::commit_async`]):
/// asynchronous, its answer served by the context's `commit_callback`.
pub(crate) fn commit_async(consumer: &StreamConsumer<SinkContext>) {
    let ctx = consumer.context();
    commit::commit_async(
        consumer,
        &ctx.ledger,
        &ctx.metrics,
        ctx.budget,
        &ctx.commits_in_flight,
    );
}

/// A synchronous commit of every commit point of the context's ledger not yet acknowledged, with
/// `meta` (see [`commit::commit_sync`]); true when there was nothing to commit or it was acknowledged.
pub(crate) fn commit_sync(consumer: &StreamConsumer<SinkContext>, meta: &Metadata<'_>) -> bool {
    let ctx = consumer.context();
    commit::commit_sync(consumer, &ctx.ledger, &ctx.metrics, meta)
}
