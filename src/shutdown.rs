//! The end of `run` and `replay`: the signals that ask for it, the drain (in-flight work may
//! finish within a deadline while the consumer keeps polling, taking nothing) and `run`'s final
//! commit, retried under the new generation while a rebalance overlaps it. Limits: what is still
//! in flight at the deadline is not committed and is re-sent after a restart (duplicates, never loss).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::admin::Health;
use crate::commit::{self, Metadata, Point};
use crate::config::Config;
use crate::consumer::{set_paused, SinkContext, Stop, SEED_TIMEOUT};
use crate::metrics::Metrics;
use crate::util::lock;
use crate::work::{SharedLedger, Work};

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

/// `run`'s shutdown after `stop`: readiness fails (unless the stop was requested), partitions are
/// paused, in-flight work may finish within the drain deadline (none after a fatal client error:
/// the process restarts as soon as it can), the final commit, then the group is left (dropping the
/// last consumer handle; its revoke callback commits).
pub(crate) async fn leave(
    cfg: &Config,
    metrics: &Metrics,
    health: &Health,
    stop: Stop,
    consumer: Arc<StreamConsumer<SinkContext>>,
    work: Arc<Work>,
    background: JoinHandle<()>,
) -> RunSummary {
    if let Some(why) = stop.not_ready() {
        health.stopping(why);
    }
    let drain_deadline = match stop {
        Stop::Fatal(_) => Duration::ZERO,
        _ => cfg.shutdown.drain_deadline,
    };
    tracing::info!(deadline = ?drain_deadline, ?stop, "shutting down: draining in-flight work");
    set_paused(&consumer, true, metrics);
    let drained = drain(&consumer, drain_deadline).await;
    let abandoned_records = lock(consumer.context().ledger()).records_in_flight();
    let final_commit = final_commit(&consumer, metrics, final_commit_within(cfg)).await;
    background.abort();
    let _ = background.await; // it holds a consumer handle: the drop below must be the last
    tracing::info!(
        drained,
        abandoned_records,
        final_commit,
        "final commit done; leaving the group"
    );
    drop(work);
    drop(consumer);
    RunSummary {
        drained,
        abandoned_records,
        final_commit,
        stop,
    }
}

/// The final commit at shutdown, before the group is left: every commit point not acknowledged
/// yet, and orphaned ones (see [`SinkContext`]) the broker has not moved past. When a rebalance
/// overlaps it (`IllegalGeneration`, `UnknownMemberId`, ...), the consumer is polled so the
/// rebalance completes, and the commit is retried under the new generation until `within` has
/// passed. Acknowledged, the committed offsets are read back ([`commit::reconcile`]) and any
/// partition read back below its position is committed again, within `within` too. True when
/// the broker acknowledged it (or there was nothing to commit) and nothing read back behind.
async fn final_commit(consumer: &StreamConsumer<SinkContext>, metrics: &Metrics, within: Duration) -> bool {
    let ctx = consumer.context();
    let meta = Metadata::run(ctx.budget());
    let deadline = Instant::now() + within;
    let mut attempt = 0u32;
    loop {
        let points = final_points(consumer);
        match commit::commit_points(consumer, ctx.ledger(), metrics, &meta, &points) {
            Ok(()) => {
                ctx.forget_orphans(&points);
                commit::reconcile(consumer, ctx.ledger(), metrics, SEED_TIMEOUT);
                if commit::due(ctx.ledger()).is_empty() {
                    return true;
                }
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
    let assigned = || consumer.context().assigns();
    let before = assigned();
    let until = deadline.min(Instant::now() + Duration::from_secs(2));
    while assigned() == before && Instant::now() < until {
        let _ = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
    }
}

/// What the final commit sends: the ledger's commit points, and the orphaned points of
/// partitions without one whose committed position the broker has not moved past (a partition
/// handed on and committed further by its new owner must not be moved back).
fn final_points(consumer: &StreamConsumer<SinkContext>) -> Vec<Point> {
    let ctx = consumer.context();
    let mut points = commit::due(ctx.ledger());
    let orphans = ctx.orphans_besides(&points);
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
        if behind {
            points.push(o);
        }
    }
    points
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

/// Lets in-flight work finish until the ledger has none or `within` has passed, polling the
/// consumer meanwhile so the group does not evict us mid-drain (records that still arrive are
/// not tracked, so no commit passes them). The caller has paused the partitions. True when
/// nothing was left in flight.
pub(crate) async fn drain(consumer: &StreamConsumer<SinkContext>, within: Duration) -> bool {
    let ledger: &SharedLedger = consumer.context().ledger();
    let wake = consumer.context().wake();
    let deadline = Instant::now() + within;
    loop {
        if lock(ledger).records_in_flight() == 0 {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return false,
            _ = wake.notified() => {}
            _ = consumer.recv() => {}
        }
    }
}

/// A channel that turns true on the first SIGTERM or SIGINT (the `shutdown` of `run` and `replay`).
pub fn on_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = tx.send(true);
    });
    rx
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
