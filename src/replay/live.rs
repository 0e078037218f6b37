//! The live pass of a replay: records of the window go through the same [`Work`] as `run`'s, and
//! progress is committed to the checkpoint group with the window in the metadata. Guarantees: only
//! what the ledger says is done is committed; backpressure is `run`'s policy; an interrupted pass
//! drains in-flight work within the drain deadline and commits once more. Limits: what was in
//! flight when it was killed is sent again by a rerun (duplicates, never loss).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::Message;
use tokio::sync::watch;
use tokio::time::{interval, MissedTickBehavior};

use super::window::{self, Bound, PartitionWindow};
use super::{Ages, Pass, Reader};
use crate::backpressure::{Action, Backpressure};
use crate::commit::Metadata;
use crate::config::{Config, RateConfig};
use crate::consumer::{self, fatal_client, on_consume_error, pause_partitions, SinkContext};
use crate::kafka::SourceRecord;
use crate::ledger::Track;
use crate::send::Sender;
use crate::util::lock;
use crate::work::{Tp, Work};

/// The backpressure bounds (records, notifications): `[pipeline]`'s, but at most about two
/// seconds of the replay's quota. Requests wait for the limiter in no particular order, so
/// everything taken is "in flight" and a kill re-sends up to all of it; with the quota as the
/// bottleneck, taking more than that gains nothing and only inflates duplicates after a kill.
pub(super) fn in_flight_bounds(cfg: &Config, rate: &RateConfig) -> (usize, u64) {
    let window = ((rate.requests_per_second * 2.0).ceil() as usize)
        .max(rate.burst as usize)
        .max(8);
    (
        cfg.pipeline.max_in_flight_records.min(window),
        (cfg.pipeline.max_pending_notifications.min(window)) as u64,
    )
}

/// The live pass: reads and works the window until it is done or `shutdown`, then (when
/// interrupted) drains, commits the final checkpoint and fills in the summary's counts.
pub(super) async fn run(
    r: &Reader<'_>,
    pass: &mut Pass,
    sender: Arc<Sender>,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (cfg, plan) = (r.cfg, r.plan);
    let (records, parts) = in_flight_bounds(cfg, &plan.rate);
    let work = Arc::new(Work {
        bounds: crate::backpressure::Bounds { records, parts },
        max_age: plan.max_age,
        ages: Some(Mutex::new(Ages::new())),
        ..Work::from_config(
            cfg,
            r.secrets,
            sender,
            r.ledger.clone(),
            r.metrics.clone(),
            r.wake.clone(),
        )
        .context("dead-letter producer")?
    });
    let windows: BTreeMap<i32, PartitionWindow> = r.windows.iter().map(|w| (w.partition, *w)).collect();
    read(r, pass, &work, &windows, shutdown).await;
    if pass.summary.interrupted {
        // Stop taking work; let in-flight requests finish within the drain deadline.
        pause_partitions(r.consumer, &plan.topic, &pass.cursors.reading(), true);
        tracing::info!(deadline = ?cfg.shutdown.drain_deadline, "replay interrupted: draining in-flight work");
        crate::shutdown::drain(r.consumer, cfg.shutdown.drain_deadline).await;
    }
    if !commit_checkpoint(r.consumer, &windows, plan.to) {
        tracing::error!("final checkpoint commit failed: a rerun re-sends from the last successful commit");
    }
    pass.summary.count(r.metrics);
    if let Some(ages) = &work.ages {
        pass.summary.ages = std::mem::take(&mut *lock(ages));
    }
    let l = lock(r.ledger);
    for w in r.windows {
        let pos = l.committable(&(plan.topic.clone(), w.partition));
        pass.summary
            .reached
            .insert(w.partition, pos.unwrap_or(w.start).min(w.end));
    }
    Ok(())
}

/// The loop of the live pass: until every partition reached its end and nothing is in flight,
/// or the pass is interrupted (`shutdown`, a consume error that stops, a fatal client error).
async fn read(
    r: &Reader<'_>,
    pass: &mut Pass,
    work: &Arc<Work>,
    windows: &BTreeMap<i32, PartitionWindow>,
    shutdown: &mut watch::Receiver<bool>,
) {
    let consumer = r.consumer;
    let topic = r.plan.topic.as_str();
    let mut house_tick = interval(Duration::from_millis(250));
    house_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut commit_tick = interval(r.cfg.pipeline.commit_interval);
    commit_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // `run`'s policy without the delay before the pause: at the bound the reading partitions are
    // paused at once (so taking never stops) and resumed at half of it; partitions that reached
    // their end stay paused. The delay exists for the prefetched batch librdkafka drops on every
    // resume, which costs throughput only near the HTTP ceiling, far above a replay's own quota.
    let (max_records, max_parts) = in_flight_bounds(r.cfg, &r.plan.rate);
    let mut backpressure = Backpressure::new(max_records, max_parts, Duration::ZERO);
    loop {
        let in_flight = lock(r.ledger).records_in_flight();
        if pass.cursors.all_done() && in_flight == 0 {
            break;
        }
        tokio::select! {
            biased;
            Ok(()) = shutdown.changed() => { pass.interrupt(None); break }
            _ = commit_tick.tick() => {
                commit_checkpoint(consumer, windows, r.plan.to);
            }
            _ = house_tick.tick() => {}
            _ = r.wake.notified() => {}
            m = consumer.recv(), if backpressure.take() => match m {
                Ok(m) => on_message(r, pass, work, m),
                Err(KafkaError::PartitionEOF(p)) => {
                    if pass.cursors.on_eof(p) {
                        pause_partitions(consumer, topic, &[p], true);
                    }
                }
                Err(e) => if let Some(s) = on_consume_error(&e, r.metrics) {
                    pass.interrupt(Some(s));
                    break;
                },
            },
        }
        let (records, parts) = {
            let l = lock(r.ledger);
            (l.records_in_flight(), l.parts_in_flight())
        };
        r.metrics.in_flight_records.set(records as i64);
        r.metrics.in_flight_notifications.set(parts as i64);
        match backpressure.observe(records, parts, Instant::now()) {
            Action::Pause => pause_partitions(consumer, topic, &pass.cursors.reading(), true),
            Action::Resume => pause_partitions(consumer, topic, &pass.cursors.reading(), false),
            Action::Hold => {}
        }
        if pass.progress.due() {
            let done = r.done(&pass.cursors, false);
            pass.progress.update(done, records);
        }
        if let Some(s) = fatal_client(consumer, work) {
            pass.interrupt(Some(s));
            break;
        }
    }
}

/// One record read: taken into the work when inside the window (a record outside the time bounds
/// is done at once, like one that maps to nothing); a partition that reached its end is paused.
fn on_message(r: &Reader<'_>, pass: &mut Pass, work: &Arc<Work>, m: BorrowedMessage<'_>) {
    let (take, ended) = pass.cursors.on_message(m.partition(), m.offset());
    if ended {
        pause_partitions(r.consumer, &r.plan.topic, &[m.partition()], true);
    }
    if !take {
        return;
    }
    let src = SourceRecord::from_message(&m);
    drop(m);
    let taken = if window::in_time_window(r.plan.from, r.plan.to, src.timestamp_ms) {
        work.take(src)
    } else {
        let key: Tp = (src.topic.clone(), src.partition);
        match work.track(&key, src.offset, 0) {
            Track::Tracked(_) => {
                pass.outside_window += 1;
                true
            }
            Track::AlreadyDelivered => true,
            Track::NotOwned | Track::Redelivery => false,
        }
    };
    // A re-delivery (after a pause) is refused by the ledger: not counted.
    pass.summary.records += u64::from(taken);
}

/// Commits the ledger's commit points to the checkpoint group, each with its done map and the
/// window (and the `--to` it was resolved from) in metadata (synchronously, by the same rule and
/// code as `run`).
fn commit_checkpoint(
    consumer: &StreamConsumer<SinkContext>,
    windows: &BTreeMap<i32, PartitionWindow>,
    to: Bound,
) -> bool {
    let window = |(_, p): &Tp| windows.get(p).map(|w| window::checkpoint_window(w, to));
    consumer::commit_sync(
        consumer,
        &Metadata {
            budget: consumer.context().budget(),
            window: &window,
        },
    )
}
