//! The `run` loop: consume in a group → [`Work`] → commit. Guarantees: at-least-once — an
//! offset is committed only when the ledger says every record below it is done; revoked
//! partitions get a synchronous commit of what is done and their in-flight results are never
//! committed; backpressure pauses partitions while the consumer keeps polling, so a long Elevate
//! outage does not get us thrown out of the group; a fatal client error or records that cannot
//! be read stop the run ([`Stop`]) with readiness failed and nothing committed past what was
//! read; every commit carries the partition's done-offset map and a new owner seeds its tracker
//! from it, so a hand-off re-sends nothing that was done; the final commit is retried when a
//! rebalance overlaps it. Limits: a crash re-sends what completed since the last commit and what
//! was in flight (duplicates, never loss).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{watch, Notify};
use tokio::time::{interval, Instant, MissedTickBehavior};

use crate::admin::{self, Health};
use crate::commit::{self, InFlight, Metadata, Point};
use crate::config::Config;
use crate::kafka::{consumer_config, resolve_secrets, ConsumeError, SourceRecord};
use crate::ledger::Ledger;
use crate::limit::{share, Limiter};
use crate::metrics::{label, Metrics};
use crate::offsetmap::DoneMap;
use crate::send::Sender;
use crate::util::lock;
use crate::work::{SharedLedger, Tp, Work};

/// Why the pipeline could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Bad configuration (named key).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Sender(#[from] crate::send::SenderError),
    /// librdkafka refused to create a client or subscribe.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// The consumer's callbacks: rebalances, commits, statistics, errors.
pub struct SinkContext {
    /// Offsets and ownership.
    ledger: SharedLedger,
    /// Series to update.
    metrics: Arc<Metrics>,
    /// Readiness facts.
    health: Arc<Health>,
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
const SEED_TIMEOUT: Duration = Duration::from_secs(10);

impl SinkContext {
    /// A context over `ledger`, writing commit metadata of at most `budget` bytes.
    pub fn new(
        ledger: SharedLedger,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
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
    /// says is done. A failed read seeds nothing (duplicates, never a wrong skip).
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
            self.health.broker_ok.store(true, Ordering::Relaxed);
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
            self.health.broker_ok.store(false, Ordering::Relaxed);
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
            let committed = commit::commit_revoked(consumer, &self.metrics, self.budget, &points).is_ok();
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
                self.health.joined.store(true, Ordering::Relaxed);
                self.assigns.fetch_add(1, Ordering::Relaxed);
                self.health.broker_ok.store(true, Ordering::Relaxed);
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

/// Commits, synchronously, every commit point the ledger has not had acknowledged, with its map;
/// true when there was nothing to commit or the broker acknowledged it (see [`commit::commit_sync`]).
pub fn commit_done<C: ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    ledger: &SharedLedger,
    metrics: &Metrics,
    budget: usize,
) -> bool {
    commit::commit_sync(consumer, ledger, metrics, &Metadata::run(budget))
}

/// The final commit at shutdown, before the group is left: every commit point not acknowledged
/// yet, and orphaned ones (see [`SinkContext`]) the broker has not moved past. When a rebalance
/// overlaps it (`IllegalGeneration`, `UnknownMemberId`, ...), the consumer is polled so the
/// rebalance completes, and the commit is retried under the new generation until `within` has
/// passed. Acknowledged, the committed offsets of the owned partitions are read back, and any
/// below our position (moved back by a late commit) are committed again, within `within` too.
/// True when the broker acknowledged it (or there was nothing to commit) and no owned partition
/// read back behind.
async fn final_commit(consumer: &StreamConsumer<SinkContext>, metrics: &Metrics, within: Duration) -> bool {
    let ctx = consumer.context();
    let meta = Metadata::run(ctx.budget);
    let deadline = Instant::now() + within;
    let mut attempt = 0u32;
    let mut behind: Vec<Point> = Vec::new();
    loop {
        let mut points = final_points(consumer);
        behind.retain(|b| !points.iter().any(|p| p.key == b.key));
        points.append(&mut behind);
        match commit::commit_points(consumer, &ctx.ledger, metrics, &meta, &points) {
            Ok(()) => {
                lock(&ctx.orphans).retain(|k, _| !points.iter().any(|p| &p.key == k));
                behind = left_behind(consumer);
                if behind.is_empty() {
                    return true;
                }
                attempt += 1;
                tracing::warn!(
                    partitions = behind.len(),
                    attempt,
                    "committed offsets read back below our positions (a late commit moved them \
                     back); committing them again"
                );
                if Instant::now() >= deadline {
                    return false;
                }
            }
            Err(e) if commit::is_retriable(&e) && Instant::now() < deadline => {
                attempt += 1;
                tracing::warn!(
                    error = %e,
                    attempt,
                    "final commit refused while the group rebalances; retrying under the new generation"
                );
                settle(consumer, deadline).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "final commit failed: the next owner re-sends from the last commit");
                return false;
            }
        }
    }
}

/// Polls the consumer (serving the rebalance callbacks; records that arrive now are never
/// tracked) for 2 s (or until `deadline`), or less if a rebalance assigns partitions first. The
/// rejoin after a refused commit needs those callbacks; a commit sent meanwhile would block
/// until the group rebalanced, or be refused again.
async fn settle(consumer: &StreamConsumer<SinkContext>, deadline: Instant) {
    let assigned = || consumer.context().assigns.load(Ordering::Relaxed);
    let before = assigned();
    let until = deadline.min(Instant::now() + Duration::from_secs(2));
    while assigned() == before && Instant::now() < until {
        let _ = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
    }
}

/// The commit points of owned partitions whose committed offset, read back, is below their
/// position (see [`Ledger::points_behind`]); none when the read fails (the commit itself was
/// acknowledged).
fn left_behind(consumer: &StreamConsumer<SinkContext>) -> Vec<Point> {
    let ctx = consumer.context();
    let owned = match consumer.assignment() {
        Ok(tpl) if tpl.count() > 0 => tpl,
        _ => return Vec::new(),
    };
    let committed = match consumer.committed_offsets(owned, SEED_TIMEOUT) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read back the final commit");
            return Vec::new();
        }
    };
    let committed: HashMap<Tp, i64> = committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(c) => Some(((e.topic().to_string(), e.partition()), c)),
            _ => None,
        })
        .collect();
    lock(&ctx.ledger).points_behind(&committed)
}

/// What the final commit sends: the ledger's commit points, and the orphaned points of
/// partitions without one whose committed position the broker has not moved past (a partition
/// handed on and committed further by its new owner must not be moved back).
fn final_points(consumer: &StreamConsumer<SinkContext>) -> Vec<Point> {
    let ctx = consumer.context();
    let mut points = commit::due(&ctx.ledger);
    let orphans: Vec<Point> = lock(&ctx.orphans)
        .values()
        .filter(|o| !points.iter().any(|p| p.key == o.key))
        .cloned()
        .collect();
    if orphans.is_empty() {
        return points;
    }
    let mut tpl = TopicPartitionList::new();
    for o in &orphans {
        tpl.add_partition(&o.key.0, o.key.1);
    }
    let Ok(committed) = consumer.committed_offsets(tpl, SEED_TIMEOUT) else {
        return points;
    };
    for o in orphans {
        let behind = committed
            .find_partition(&o.key.0, o.key.1)
            .is_some_and(|e| match e.offset() {
                Offset::Offset(c) => c < o.position(),
                _ => true,
            });
        tracing::debug!(
            partition = o.key.1,
            orphan = o.position(),
            behind,
            "orphaned commit point in the final commit"
        );
        if behind {
            points.push(o);
        }
    }
    points
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
    fn not_ready(&self) -> Option<&'static str> {
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

/// Stalls `run` on unreadable records, visibly: every assigned partition is paused (rust-rdkafka
/// does not say which partition the error came from), nothing more is taken, what is in flight
/// still completes and is committed (never past the unreadable records: nothing after them is
/// tracked), `/readyz` fails with the reason, and the consumer keeps polling so the group stays
/// stable. The process does not exit: an exit would hand the partition to the next replica,
/// which would stall or exit in turn, until one bad batch had stopped the whole fleet. SIGTERM
/// then ends the run with exit code [`EXIT_UNREADABLE`].
fn stall_on_unreadable(consumer: &StreamConsumer<SinkContext>, health: &Health, metrics: &Metrics) {
    health.stopping(admin::NOT_READY_UNREADABLE);
    set_paused(consumer, true, metrics);
    tracing::error!(
        "stalled on unreadable records: every partition of this replica is paused, nothing is \
         committed past them; repair the partition (docs/operations.md, unreadable records), \
         then restart this replica"
    );
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

/// How a run ended.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Whether in-flight work finished within the drain deadline.
    pub drained: bool,
    /// Records still in flight at exit (re-sent after restart).
    pub abandoned_records: usize,
    /// Whether the final synchronous commit succeeded.
    pub final_commit: bool,
    /// Why it stopped; [`Stop::exit_code`] is the process's exit code.
    pub stop: Stop,
}

/// Runs the service until `shutdown` turns true — or until a fatal client error or unreadable
/// records end it ([`Stop`], in the summary) —, then drains, commits and leaves the group. After
/// a fatal error there is no drain, and readiness fails from the moment the run decides to stop.
pub async fn run(
    cfg: &Config,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<RunSummary, PipelineError> {
    let secrets = resolve_secrets(cfg)?;
    let ledger: SharedLedger = Arc::new(std::sync::Mutex::new(Ledger::new()));
    let wake = Arc::new(Notify::new());
    let budget = cfg.pipeline.commit_metadata_max_bytes;
    let ctx = SinkContext::new(
        ledger.clone(),
        metrics.clone(),
        health.clone(),
        wake.clone(),
        budget,
    );
    let consumer: Arc<StreamConsumer<SinkContext>> =
        Arc::new(consumer_config(cfg, &secrets, &cfg.kafka.group_id).create_with_context(ctx)?);
    let topics: Vec<&str> = cfg.kafka.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let limiter = Arc::new(Limiter::new(&cfg.rate));
    let sender = Arc::new(Sender::new(
        &cfg.elevate,
        &cfg.retry,
        limiter.clone(),
        metrics.clone(),
    )?);
    let work = Arc::new(Work::from_config(
        cfg,
        &secrets,
        sender,
        ledger.clone(),
        metrics.clone(),
        wake.clone(),
    )?);
    let total_partitions = Arc::new(AtomicUsize::new(0));
    let metadata_task = tokio::spawn(refresh_partition_count(
        consumer.clone(),
        cfg.kafka.topics.clone(),
        total_partitions.clone(),
        wake.clone(),
    ));
    tracing::info!(topics = ?cfg.kafka.topics, group = %cfg.kafka.group_id, "consuming");

    let mut commit_tick = interval(cfg.pipeline.commit_interval);
    commit_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut house_tick = interval(Duration::from_millis(250));
    house_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let max_records = cfg.pipeline.max_in_flight_records;
    let max_parts = cfg.pipeline.max_pending_notifications as u64;
    let pause_after = pause_after(cfg);
    let mut paused = false;
    // Backpressure has two steps. At the in-flight bound we stop taking records (librdkafka's
    // bounded prefetch queue waits for us); only when that lasts `pause_after` do we pause the
    // partitions and go back to polling, so the group never sees us as stuck. Pausing at once
    // made librdkafka drop and re-fetch its prefetched batch on every resume: 2,300
    // notifications/s instead of the HTTP ceiling in the benchmark.
    let mut full_since: Option<Instant> = None;
    // Set once records could not be read: the run stalls (see `stall_on_unreadable`).
    let mut unreadable: Option<String> = None;
    let stop = loop {
        health.touch();
        // Stalled or paused, the loop still polls (max.poll.interval.ms), taking nothing.
        let take = full_since.is_none() || paused || unreadable.is_some();
        tokio::select! {
            biased;
            _ = shutdown.changed() => break Stop::Requested,
            _ = commit_tick.tick() => {
                commit::commit_async(consumer.as_ref(), &ledger, &metrics, budget, &consumer.context().commits_in_flight);
            }
            _ = house_tick.tick() => {
                if let Some(stop) = fatal_client(&consumer, &work) {
                    break stop;
                }
            }
            _ = wake.notified() => {}
            m = consumer.recv(), if take => match m {
                Ok(m) if unreadable.is_some() => drop(m), // never tracked, never committed
                Ok(m) => {
                    let src = SourceRecord::from_message(&m);
                    drop(m);
                    work.take(src);
                }
                Err(e) => match on_consume_error(&e, &metrics) {
                    Some(Stop::Unreadable(why)) if unreadable.is_none() => {
                        stall_on_unreadable(&consumer, &health, &metrics);
                        unreadable = Some(why);
                    }
                    Some(Stop::Unreadable(_)) => {}
                    Some(stop) => break stop,
                    None => {}
                },
            },
        }
        health.dead_letter_failing_since(work.dead_letter.failing_since_ms());
        let (records, parts, owned) = {
            let l = lock(&ledger);
            (l.records_in_flight(), l.parts_in_flight(), l.len())
        };
        metrics.in_flight_records.set(records as i64);
        metrics.in_flight_notifications.set(parts as i64);
        if cfg.rate.share_by_partitions {
            limiter.set_share(share(owned, total_partitions.load(Ordering::Relaxed)));
        }
        metrics.quota_rps.set(limiter.effective_rps());
        if unreadable.is_some() {
            continue; // stalled: partitions stay paused, no backpressure decisions
        }
        let full = records >= max_records || parts >= max_parts;
        if full {
            let since = *full_since.get_or_insert_with(Instant::now);
            if !paused && since.elapsed() >= pause_after {
                paused = set_paused(&consumer, true, &metrics);
            }
        } else if !paused {
            full_since = None;
        } else if records <= max_records / 2 && parts <= max_parts / 2 {
            // Resume with hysteresis: at half the bound.
            paused = set_paused(&consumer, false, &metrics);
            full_since = None;
        }
    };

    // A stop requested while stalled on unreadable records still says so in the exit code.
    let stop = match (stop, unreadable) {
        (Stop::Requested, Some(why)) => Stop::Unreadable(why),
        (stop, _) => stop,
    };
    // Shutdown: stop taking work, let in-flight work finish within the deadline, commit, leave.
    // After a fatal client error there is no drain: the process restarts as soon as it can.
    if let Some(why) = stop.not_ready() {
        health.stopping(why);
    }
    let drain = match stop {
        Stop::Fatal(_) => Duration::ZERO,
        _ => cfg.shutdown.drain_deadline,
    };
    tracing::info!(deadline = ?drain, ?stop, "shutting down: draining in-flight work");
    set_paused(&consumer, true, &metrics);
    let deadline = Instant::now() + drain;
    let mut drained = false;
    loop {
        if lock(&ledger).records_in_flight() == 0 {
            drained = true;
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = wake.notified() => {}
            // Keep polling so the group does not evict us mid-drain; records that still
            // arrive are not tracked, so no commit passes them.
            _ = consumer.recv() => {}
        }
    }
    let abandoned_records = lock(&ledger).records_in_flight();
    let final_commit = final_commit(&consumer, &metrics, final_commit_within(cfg)).await;
    metadata_task.abort();
    let _ = metadata_task.await; // it holds a consumer handle: the drop below must be the last
    tracing::info!(
        drained,
        abandoned_records,
        final_commit,
        "final commit done; leaving the group"
    );
    // Dropping the last handle closes the consumer: it leaves the group (revoke callback commits).
    drop(work);
    drop(consumer);
    Ok(RunSummary {
        drained,
        abandoned_records,
        final_commit,
        stop,
    })
}

/// How long the final commit may be retried while a rebalance overlaps it: the time between the
/// drain deadline and the platform's kill deadline less 2 s (to leave the group), at most 10 s
/// (8 s with the defaults).
fn final_commit_within(cfg: &Config) -> Duration {
    let margin = cfg
        .shutdown
        .grace_period
        .saturating_sub(cfg.shutdown.drain_deadline);
    margin
        .saturating_sub(Duration::from_secs(2))
        .min(Duration::from_secs(10))
}

/// How long the in-flight bound may stay full before partitions are paused: a quarter of
/// `max.poll.interval.ms` (librdkafka's default 300 s), at most 5 s. Until then the loop just
/// stops taking records, which costs nothing when Elevate is merely busy.
fn pause_after(cfg: &Config) -> Duration {
    let max_poll_ms: u64 = cfg
        .kafka
        .properties
        .get("max.poll.interval.ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    Duration::from_millis(max_poll_ms / 4).min(Duration::from_secs(5))
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

/// Pauses (or resumes) every assigned partition; returns the new state.
fn set_paused(consumer: &StreamConsumer<SinkContext>, pause: bool, metrics: &Metrics) -> bool {
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
    pause
}

/// Keeps the total partition count of the topics fresh (for the quota share).
async fn refresh_partition_count(
    consumer: Arc<StreamConsumer<SinkContext>>,
    topics: Vec<String>,
    total: Arc<AtomicUsize>,
    wake: Arc<Notify>,
) {
    let mut tick = interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        let c = consumer.clone();
        let t = topics.clone();
        let n = tokio::task::spawn_blocking(move || {
            t.iter()
                .map(|topic| {
                    c.fetch_metadata(Some(topic), Duration::from_secs(10))
                        .map(|md| md.topics().iter().map(|t| t.partitions().len()).sum::<usize>())
                        .unwrap_or(0)
                })
                .sum::<usize>()
        })
        .await
        .unwrap_or(0);
        if n > 0 {
            total.store(n, Ordering::Relaxed);
            wake.notify_one();
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
