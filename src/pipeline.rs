//! The `run` loop: consume in a group → `Work` → commit. Guarantees: at-least-once — an
//! offset is committed only when the ledger says every record below it is done; revoked
//! partitions get a synchronous commit of what is done and their in-flight results are never
//! committed; backpressure pauses partitions while the consumer keeps polling, so a long Elevate
//! outage does not get us thrown out of the group; a fatal client error or records that cannot
//! be read stop the run ([`Stop`]) with readiness failed and nothing committed past what was
//! read; every commit carries the partition's done-offset map and a new owner seeds its tracker
//! from it, so a hand-off re-sends nothing that was done; the final commit is retried when a
//! rebalance overlaps it. Limits: a crash re-sends what completed since the last commit and what
//! was in flight (duplicates, never loss).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::{interval, MissedTickBehavior};

use crate::admin::{self, Health};
use crate::backpressure::{Action, Backpressure};
use crate::commit;
use crate::config::Config;
use crate::consumer::{self, fatal_client, on_consume_error, set_paused, SinkContext};
use crate::kafka::{consumer_config, SourceRecord};
use crate::ledger::Ledger;
use crate::limit::{share, Limiter};
use crate::metrics::Metrics;
use crate::send::Sender;
use crate::util::lock;
use crate::work::{SharedLedger, Work};

pub use crate::consumer::{Stop, EXIT_FATAL, EXIT_UNREADABLE};
pub use crate::shutdown::RunSummary;

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
    /// The dead-letter producer (or its polling thread) could not start.
    #[error(transparent)]
    DeadLetter(#[from] crate::deadletter::StartError),
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

/// What a started run works with.
struct Running {
    consumer: Arc<StreamConsumer<SinkContext>>,
    work: Arc<Work>,
    ledger: SharedLedger,
    wake: Arc<Notify>,
    limiter: Arc<Limiter>,
    /// The topics' partition count, kept fresh by `background` (for the quota share).
    total_partitions: Arc<AtomicUsize>,
    background: JoinHandle<()>,
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
    let r = start(cfg, &metrics, &health)?;
    // The quota share needs the partition count before the first record is taken: until then
    // the limiter has the whole fleet's quota (share 1), which a replica joining a running
    // fleet must never send at.
    let total = partition_count(r.consumer.clone(), cfg.kafka.topics.clone())
        .await
        .unwrap_or(0);
    r.total_partitions.store(total, Ordering::Relaxed);
    tracing::info!(topics = ?cfg.kafka.topics, group = %cfg.kafka.group_id, partitions = total, "consuming");
    let (stop, unreadable) = consume(cfg, &r, &metrics, &health, &mut shutdown).await;
    // A stop requested while stalled on unreadable records still says so in the exit code.
    let stop = match (stop, unreadable) {
        (Stop::Requested, Some(why)) => Stop::Unreadable(why),
        (stop, _) => stop,
    };
    let Running {
        consumer,
        work,
        background,
        ..
    } = r;
    Ok(crate::shutdown::leave(cfg, &metrics, &health, stop, consumer, work, background).await)
}

/// Creates the consumer (subscribed), the sender and the work, and starts the partition count.
fn start(cfg: &Config, metrics: &Arc<Metrics>, health: &Arc<Health>) -> Result<Running, PipelineError> {
    let secrets = cfg.resolve_secrets()?;
    let ledger: SharedLedger = Arc::new(Mutex::new(Ledger::new()));
    let wake = Arc::new(Notify::new());
    let budget = cfg.pipeline.commit_metadata_max_bytes;
    let ctx = SinkContext::new(
        ledger.clone(),
        metrics.clone(),
        Some(health.clone()),
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
    let background = tokio::spawn({
        let refresh = refresh_partition_count(
            consumer.clone(),
            cfg.kafka.topics.clone(),
            total_partitions.clone(),
            wake.clone(),
        );
        let check = reconcile_commits(
            consumer.clone(),
            metrics.clone(),
            commit::reconcile_every(cfg.pipeline.commit_interval),
        );
        async move {
            tokio::join!(refresh, check);
        }
    });
    Ok(Running {
        consumer,
        work,
        ledger,
        wake,
        limiter,
        total_partitions,
        background,
    })
}

/// The loop: takes records into the work while backpressure allows, commits periodically,
/// watches for fatal client errors; until `shutdown` or a [`Stop`]. Returns why it stopped and,
/// when it stalled on unreadable records, what the error said.
async fn consume(
    cfg: &Config,
    r: &Running,
    metrics: &Metrics,
    health: &Health,
    shutdown: &mut watch::Receiver<bool>,
) -> (Stop, Option<String>) {
    let mut commit_tick = interval(cfg.pipeline.commit_interval);
    commit_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut house_tick = interval(Duration::from_millis(250));
    house_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut backpressure = Backpressure::new(
        cfg.pipeline.max_in_flight_records,
        cfg.pipeline.max_pending_notifications as u64,
        pause_after(cfg),
    );
    // Set once records could not be read: the run stalls (see `stall_on_unreadable`).
    let mut unreadable: Option<String> = None;
    // One stream for the whole run: `recv` makes (and registers a waker slot for) a new one per
    // record. Its `next` is cancellation safe, as `recv` is.
    let mut records = r.consumer.stream();
    let stop = 'turns: loop {
        health.touch();
        // Stalled or paused, the loop still polls (max.poll.interval.ms), taking nothing.
        let take = backpressure.take() || unreadable.is_some();
        tokio::select! {
            biased;
            _ = shutdown.changed() => break Stop::Requested,
            _ = commit_tick.tick() => consumer::commit_async(&r.consumer),
            _ = house_tick.tick() => {
                if let Some(stop) = fatal_client(&r.consumer, &r.work) {
                    break stop;
                }
            }
            _ = r.wake.notified() => {}
            Some(m) = records.next(), if take => {
                if let Some(stop) = on_message(m, r, metrics, health, &mut unreadable) {
                    break stop;
                }
                // What librdkafka already holds is taken in the same turn, up to a batch and
                // while the in-flight bounds allow: one turn of the loop per batch, not per record.
                for _ in 1..BATCH {
                    if unreadable.is_some() || bounds_full(r) {
                        break;
                    }
                    let Some(Some(m)) = records.next().now_or_never() else {
                        break;
                    };
                    if let Some(stop) = on_message(m, r, metrics, health, &mut unreadable) {
                        break 'turns stop;
                    }
                }
            }
        }
        let (records, parts) = after_turn(cfg, r, metrics, health);
        if unreadable.is_some() {
            continue; // stalled: partitions stay paused, no backpressure decisions
        }
        match backpressure.observe(records, parts, Instant::now()) {
            Action::Pause => set_paused(&r.consumer, true, metrics),
            Action::Resume => set_paused(&r.consumer, false, metrics),
            Action::Hold => {}
        }
    };
    (stop, unreadable)
}

/// Records taken per turn of the loop at most (see [`consume`]).
const BATCH: usize = 64;

/// One result of `recv`: a record goes to the work (or is dropped unread once the run stalls);
/// an error is counted, may stall the run (`unreadable`) or stop it.
fn on_message(
    m: rdkafka::error::KafkaResult<rdkafka::message::BorrowedMessage<'_>>,
    r: &Running,
    metrics: &Metrics,
    health: &Health,
    unreadable: &mut Option<String>,
) -> Option<Stop> {
    match m {
        Ok(m) if unreadable.is_some() => drop(m), // never tracked, never committed
        Ok(m) => {
            let src = SourceRecord::from_message(&m);
            drop(m);
            r.work.take(src);
        }
        Err(e) => match on_consume_error(&e, metrics) {
            Some(Stop::Unreadable(why)) if unreadable.is_none() => {
                stall_on_unreadable(&r.consumer, health, metrics);
                *unreadable = Some(why);
            }
            Some(Stop::Unreadable(_)) | None => {}
            Some(stop) => return Some(stop),
        },
    }
    None
}

/// Whether the in-flight bounds (`pipeline.max_in_flight_records`,
/// `pipeline.max_pending_notifications`, held by the work) are reached.
fn bounds_full(r: &Running) -> bool {
    let l = lock(&r.ledger);
    r.work.bounds.full(l.records_in_flight(), l.parts_in_flight())
}

/// After each turn of the loop: readiness and in-flight gauges, the quota share. Returns the
/// records and notifications in flight.
fn after_turn(cfg: &Config, r: &Running, metrics: &Metrics, health: &Health) -> (usize, u64) {
    health.dead_letter_failing_since(r.work.dead_letter.failing_since_ms());
    health.registry_waiting(r.work.sources.waiting());
    let (records, parts, owned) = {
        let l = lock(&r.ledger);
        (l.records_in_flight(), l.parts_in_flight(), l.len())
    };
    metrics.in_flight_records.set(records as i64);
    metrics.in_flight_notifications.set(parts as i64);
    if cfg.rate.share_by_partitions {
        r.limiter
            .set_share(share(owned, r.total_partitions.load(Ordering::Relaxed)));
    }
    metrics.quota_rps.set(r.limiter.effective_rps());
    (records, parts)
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

/// Reads the committed offsets back every `every` (see [`commit::reconcile`]); a partition due
/// again is committed by the loop's next commit tick, from the polling thread.
async fn reconcile_commits(
    consumer: Arc<StreamConsumer<SinkContext>>,
    metrics: Arc<Metrics>,
    every: Duration,
) {
    let mut tick = interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate: nothing committed yet
    loop {
        tick.tick().await;
        let (c, m) = (consumer.clone(), metrics.clone());
        let _ = tokio::task::spawn_blocking(move || {
            commit::reconcile(&*c, c.context().ledger(), &m, consumer::SEED_TIMEOUT)
        })
        .await;
    }
}

/// Keeps the total partition count of the topics fresh (for the quota share).
async fn refresh_partition_count(
    consumer: Arc<StreamConsumer<SinkContext>>,
    topics: Vec<String>,
    total: Arc<AtomicUsize>,
    wake: Arc<Notify>,
) {
    loop {
        // `run` has just read the count; read it again every minute, or soon while it is unknown.
        let known = total.load(Ordering::Relaxed) > 0;
        tokio::time::sleep(Duration::from_secs(if known { 60 } else { 5 })).await;
        if let Some(n) = partition_count(consumer.clone(), topics.clone()).await {
            total.store(n, Ordering::Relaxed);
            wake.notify_one();
        }
    }
}

/// The partition count of `topics` from the broker's metadata; None when the metadata of any
/// topic cannot be read (a partial sum would make the replicas' shares add up to more than the
/// quota). Until a count is known the share is the whole quota (see [`share`]).
async fn partition_count(consumer: Arc<StreamConsumer<SinkContext>>, topics: Vec<String>) -> Option<usize> {
    tokio::task::spawn_blocking(move || {
        let mut total = 0;
        for topic in &topics {
            // A topic that does not exist has no partitions to share; an unanswered read is unknown.
            let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10));
            let n = md
                .ok()
                .map(|md| md.topics().iter().map(|t| t.partitions().len()).sum::<usize>());
            match n {
                Some(n) => total += n,
                None => {
                    tracing::warn!(
                        topic,
                        "cannot read the topic's partition count; the quota share keeps its last value"
                    );
                    return None;
                }
            }
        }
        Some(total)
    })
    .await
    .ok()
    .flatten()
}
