//! `replay`: backfill a fixed window of one topic through the same [`Work`] as `run` (mapping,
//! rate limiter, retries, dead-letter). Guarantees: at-least-once over the window; the window's
//! end is fixed when the replay first starts; progress is committed to a checkpoint group (never
//! the live group: manual assignment, no group join) only up to offsets the ledger says are done,
//! so a replay killed and restarted with the same arguments re-sends at most what was in flight.
//! Limits: timestamp bounds use Kafka record timestamps (records outside them inside the resolved
//! offset range are skipped as `outside_window`, but a record with an older timestamp that sits
//! after the `--to` offset is not found); two replays must not share a checkpoint group at once.

mod ages;
mod dry;
mod report;
pub mod window;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::{watch, Notify};
use tokio::time::{interval, Instant, MissedTickBehavior};

use crate::admin::Health;
use crate::config::{Config, RateConfig};
use crate::kafka::{consumer_config, resolve_secrets, SourceRecord};
use crate::ledger::Ledger;
use crate::limit::Limiter;
use crate::metrics::Metrics;
use crate::pipeline::{commit_done_with, fatal_client, on_consume_error, wait_for_signal, SinkContext, Stop};
use crate::send::Sender;
use crate::util::lock;
use crate::work::{SharedLedger, Tp, Work};

pub use ages::{AgeStats, Ages};
pub use report::Summary;
pub use window::{Bound, PartitionWindow};

/// Timeout of each metadata, watermark, offsets-for-times and committed-offsets look-up.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Exit code of a replay stopped by SIGINT/SIGTERM before the end of its window.
pub const EXIT_INTERRUPTED: u8 = 130;

/// `elevate-sink replay`: the command line.
#[derive(clap::Args, Debug, Clone)]
pub struct ReplayArgs {
    /// Config file (TOML), the same as `run`'s; every key can also come from
    /// ELEVATE_SINK__SECTION__KEY.
    #[arg(long, short, env = "ELEVATE_SINK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Topic to replay [default: the single topic in kafka.topics].
    #[arg(long)]
    pub topic: Option<String>,
    /// Partitions to replay, comma separated [default: all].
    #[arg(long, value_delimiter = ',')]
    pub partitions: Vec<i32>,
    /// Start (inclusive): an offset, an RFC 3339 timestamp, `earliest` or `now`.
    #[arg(long, default_value = "earliest")]
    pub from: Bound,
    /// End (exclusive): an offset, an RFC 3339 timestamp, `earliest` or `now` (the high
    /// watermark when the replay first starts; later records are left to the live service).
    #[arg(long, default_value = "now")]
    pub to: Bound,
    /// Send nothing, commit nothing: print each notification that would be sent as a JSON line.
    #[arg(long)]
    pub dry_run: bool,
    /// This replay's own request quota (requests per second; burst = the same, capped at
    /// rate.burst), instead of rate.requests_per_second. Never shared by partitions.
    #[arg(long, value_name = "RPS")]
    pub rate: Option<f64>,
    /// Skip (and count as too_old) events older than this when they would be sent, e.g. `6h`.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub max_age: Option<Duration>,
    /// Consumer group that holds this replay's checkpoint [default:
    /// "{kafka.group_id}.replay.{hash of topic, partitions, from, to}"]. Never the live group.
    #[arg(long, value_name = "NAME")]
    pub checkpoint_group: Option<String>,
}

/// The replay resolved from arguments and config, before any broker look-up.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Topic to replay.
    pub topic: String,
    /// Requested partitions (empty: all).
    pub partitions: Vec<i32>,
    /// Start bound.
    pub from: Bound,
    /// End bound.
    pub to: Bound,
    /// Print instead of send; commit nothing.
    pub dry_run: bool,
    /// `--max-age`.
    pub max_age: Option<Duration>,
    /// The checkpoint group.
    pub group: String,
    /// The replay's own quota.
    pub rate: RateConfig,
}

impl Plan {
    /// Checks the arguments against the config; errors name the flag at fault.
    pub fn new(cfg: &Config, args: &ReplayArgs) -> anyhow::Result<Plan> {
        let topic = match &args.topic {
            Some(t) if !t.trim().is_empty() => t.trim().to_string(),
            Some(_) => bail!("--topic: must not be empty"),
            None => match cfg.kafka.topics.as_slice() {
                [one] => one.clone(),
                many => bail!(
                    "--topic: required, kafka.topics has {} topics ({})",
                    many.len(),
                    many.join(", ")
                ),
            },
        };
        window::check_bounds(args.from, args.to).map_err(|e| anyhow::anyhow!(e))?;
        if args.partitions.iter().any(|p| *p < 0) {
            bail!("--partitions: partition ids are >= 0");
        }
        let group = match &args.checkpoint_group {
            Some(g) if !g.trim().is_empty() => g.trim().to_string(),
            Some(_) => bail!("--checkpoint-group: must not be empty"),
            None => {
                window::checkpoint_group(&cfg.kafka.group_id, &topic, &args.partitions, args.from, args.to)
            }
        };
        if group == cfg.kafka.group_id {
            bail!(
                "--checkpoint-group: {group:?} is the live consumer group (kafka.group_id); a replay \
                 never commits to it. Choose another name or leave the flag out"
            );
        }
        let mut rate = cfg.rate.clone();
        rate.share_by_partitions = false;
        if let Some(r) = args.rate {
            if !(r > 0.0 && r.is_finite()) {
                bail!("--rate: must be a number of requests per second above 0, got {r}");
            }
            rate.requests_per_second = r;
            rate.burst = (r.ceil() as u32).clamp(1, cfg.rate.burst.max(1));
        }
        let mut partitions = args.partitions.clone();
        partitions.sort_unstable();
        partitions.dedup();
        Ok(Plan {
            topic,
            partitions,
            from: args.from,
            to: args.to,
            dry_run: args.dry_run,
            max_age: args.max_age,
            group,
            rate,
        })
    }
}

/// Entry point of `elevate-sink replay`: exit 0 when the window is done, 130 when interrupted.
pub async fn main(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(args.config.as_deref(), std::env::vars()).context("configuration")?;
    crate::logging::init(&cfg.log);
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = tx.send(true);
    });
    let summary = replay(&cfg, &args, rx).await?;
    let text = summary.render();
    if summary.dry_run {
        eprint!("{text}");
    } else {
        print!("{text}");
        let _ = std::io::stdout().flush();
    }
    if summary.late() {
        tracing::warn!(
            "median age of sent events exceeds Elevate's 1h session window: notifications are attributed late"
        );
    }
    Ok(if summary.interrupted {
        ExitCode::from(EXIT_INTERRUPTED)
    } else {
        ExitCode::SUCCESS
    })
}

/// Where reading stands in each partition of the window.
struct Cursors {
    /// Per partition: (end, next offset to read, reached the end).
    parts: BTreeMap<i32, (i64, i64, bool)>,
}

impl Cursors {
    fn new(windows: &[PartitionWindow]) -> Self {
        Cursors {
            parts: windows
                .iter()
                .map(|w| (w.partition, (w.end, w.start, w.is_empty())))
                .collect(),
        }
    }

    /// Whether a message at `offset` is inside the window; notes when the end is reached.
    /// Returns (take it, partition just reached its end).
    fn on_message(&mut self, partition: i32, offset: i64) -> (bool, bool) {
        let Some((end, next, done)) = self.parts.get_mut(&partition) else {
            return (false, false);
        };
        let was = *done;
        if offset >= *end {
            *done = true;
            return (false, !was);
        }
        *next = (*next).max(offset + 1);
        if *next >= *end {
            *done = true;
        }
        (true, *done && !was)
    }

    /// End of partition: everything up to the high watermark (≥ the window's end) was read.
    fn on_eof(&mut self, partition: i32) -> bool {
        match self.parts.get_mut(&partition) {
            Some((end, next, done)) if !*done => {
                *done = true;
                *next = (*next).max(*end);
                true
            }
            _ => false,
        }
    }

    fn all_done(&self) -> bool {
        self.parts.values().all(|(_, _, d)| *d)
    }

    fn reading(&self) -> Vec<i32> {
        self.parts
            .iter()
            .filter(|(_, (_, _, d))| !*d)
            .map(|(p, _)| *p)
            .collect()
    }

    fn next(&self, partition: i32) -> Option<i64> {
        self.parts.get(&partition).map(|(_, n, _)| *n)
    }
}

fn tpl_of(topic: &str, partitions: impl IntoIterator<Item = i32>) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, p);
    }
    tpl
}

fn pause(consumer: &StreamConsumer<SinkContext>, topic: &str, partitions: Vec<i32>, pause: bool) {
    if partitions.is_empty() {
        return;
    }
    crate::pipeline::pause_or_resume(consumer, &tpl_of(topic, partitions), pause);
}

/// Resolves the per-partition windows (blocking look-ups) and applies the checkpoint.
fn prepare(consumer: &StreamConsumer<SinkContext>, plan: &Plan) -> anyhow::Result<Vec<PartitionWindow>> {
    let topic = plan.topic.as_str();
    let md = consumer
        .fetch_metadata(Some(topic), LOOKUP_TIMEOUT)
        .with_context(|| format!("metadata of topic {topic}"))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .with_context(|| format!("--topic: {topic} is not in the cluster's metadata"))?;
    if let Some(e) = t.error() {
        bail!("--topic: {topic}: {}", rdkafka::types::RDKafkaErrorCode::from(e));
    }
    let existing: BTreeSet<i32> = t.partitions().iter().map(|p| p.id()).collect();
    if existing.is_empty() {
        bail!("--topic: {topic} does not exist (no partitions)");
    }
    let partitions: Vec<i32> = if plan.partitions.is_empty() {
        existing.iter().copied().collect()
    } else {
        if let Some(p) = plan.partitions.iter().find(|p| !existing.contains(p)) {
            bail!(
                "--partitions: {topic} has no partition {p} (it has {})",
                existing.len()
            );
        }
        plan.partitions.clone()
    };
    if !plan.dry_run {
        // A group with members is somebody's live group: committing to it would move their
        // offsets (and a manual-assignment commit might be fenced anyway).
        if let Ok(list) = consumer.fetch_group_list(Some(&plan.group), LOOKUP_TIMEOUT) {
            if let Some(g) = list.groups().iter().find(|g| !g.members().is_empty()) {
                bail!(
                    "--checkpoint-group: group {} has {} active members (state {}): it is a live \
                     consumer group, not a replay checkpoint",
                    g.name(),
                    g.members().len(),
                    g.state()
                );
            }
        }
    }
    let times = |bound: Bound| -> anyhow::Result<BTreeMap<i32, Option<i64>>> {
        let Bound::Time(ts) = bound else {
            return Ok(BTreeMap::new());
        };
        let mut tpl = TopicPartitionList::new();
        for &p in &partitions {
            tpl.add_partition_offset(topic, p, Offset::Offset(ts))?;
        }
        let got = consumer
            .offsets_for_times(tpl, LOOKUP_TIMEOUT)
            .with_context(|| format!("offsets for time {bound} on {topic}"))?;
        Ok(got
            .elements_for_topic(topic)
            .iter()
            .map(|e| {
                let o = match e.offset() {
                    Offset::Offset(o) if o >= 0 => Some(o),
                    _ => None,
                };
                (e.partition(), o)
            })
            .collect())
    };
    let from_times = times(plan.from)?;
    let to_times = times(plan.to)?;
    let mut windows = Vec::with_capacity(partitions.len());
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, LOOKUP_TIMEOUT)
            .with_context(|| format!("watermarks of {topic}/{p}"))?;
        let marks = window::Marks {
            low,
            high,
            from_time: from_times.get(&p).copied().flatten(),
            to_time: to_times.get(&p).copied().flatten(),
        };
        windows.push(window::resolve_window(p, plan.from, plan.to, &marks));
    }
    if plan.dry_run {
        return Ok(windows);
    }
    let committed = consumer
        .committed_offsets(tpl_of(topic, partitions.iter().copied()), LOOKUP_TIMEOUT)
        .with_context(|| format!("committed offsets of checkpoint group {}", plan.group))?;
    let mut fresh = TopicPartitionList::new();
    for w in &mut windows {
        let (c, meta) = match committed.find_partition(topic, w.partition) {
            Some(e) => match e.offset() {
                Offset::Offset(o) => (Some(o), e.metadata().to_string()),
                _ => (None, String::new()),
            },
            None => (None, String::new()),
        };
        let used = window::apply_checkpoint(w, c, &meta, plan.to);
        if used != window::CheckpointUse::Resumed {
            // Record the window before any work: a restart then keeps this end even for a
            // partition that had no progress to commit (no form of `--to` is re-resolved).
            let mut e = fresh.add_partition(topic, w.partition);
            e.set_offset(Offset::Offset(w.start))?;
            e.set_metadata(window::checkpoint_metadata(w, plan.to));
        }
        match used {
            window::CheckpointUse::None => {}
            window::CheckpointUse::Resumed => tracing::info!(
                partition = w.partition,
                from = w.start,
                end = w.end,
                group = %plan.group,
                "resuming from checkpoint"
            ),
            window::CheckpointUse::Ignored(c) => tracing::warn!(
                partition = w.partition,
                checkpoint = c,
                first = w.first,
                end = w.end,
                group = %plan.group,
                "checkpoint outside the window ignored; starting the partition over"
            ),
        }
    }
    if fresh.count() > 0 {
        consumer
            .commit(&fresh, CommitMode::Sync)
            .with_context(|| format!("initial checkpoint in group {}", plan.group))?;
    }
    Ok(windows)
}

/// The backpressure bounds (records, notifications): `[pipeline]`'s, but at most about two
/// seconds of the replay's quota. Requests wait for the limiter in no particular order, so
/// everything taken is "in flight" and a kill re-sends up to all of it; with the quota as the
/// bottleneck, taking more than that gains nothing and only inflates duplicates after a kill.
pub fn in_flight_bounds(cfg: &Config, rate: &RateConfig) -> (usize, u64) {
    let window = ((rate.requests_per_second * 2.0).ceil() as usize)
        .max(rate.burst as usize)
        .max(8);
    (
        cfg.pipeline.max_in_flight_records.min(window),
        (cfg.pipeline.max_pending_notifications.min(window)) as u64,
    )
}

/// Commits the ledger's done positions to the checkpoint group, with the window (and the `--to`
/// it was resolved from) in metadata (synchronously, by the same rule and code as `run`).
fn commit_checkpoint(
    consumer: &StreamConsumer<SinkContext>,
    ledger: &SharedLedger,
    windows: &BTreeMap<i32, PartitionWindow>,
    to: Bound,
    metrics: &Metrics,
) -> bool {
    commit_done_with(consumer, ledger, metrics, |(_, p)| {
        windows.get(p).map(|w| window::checkpoint_metadata(w, to))
    })
}

/// Runs a replay until its window is done or `shutdown` turns true; returns the summary (the
/// caller prints it).
pub async fn replay(
    cfg: &Config,
    args: &ReplayArgs,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let plan = Plan::new(cfg, args)?;
    let secrets = resolve_secrets(cfg)?;
    let metrics = Arc::new(Metrics::new());
    let ledger: SharedLedger = Arc::new(Mutex::new(Ledger::new()));
    let wake = Arc::new(Notify::new());
    let health = Arc::new(Health::new(cfg.admin.wedged_after));
    let ctx = SinkContext::new(ledger.clone(), metrics.clone(), health, wake.clone());
    let mut cc = consumer_config(cfg, &secrets, &plan.group);
    // EOF events tell us a partition was read up to its high watermark (≥ the window's end)
    // even when the window ends in a gap (compaction, transaction markers).
    cc.set("enable.partition.eof", "true");
    let consumer: Arc<StreamConsumer<SinkContext>> =
        Arc::new(cc.create_with_context(ctx).context("kafka consumer")?);
    let windows = {
        let (c, p) = (consumer.clone(), plan.clone());
        tokio::task::spawn_blocking(move || prepare(&c, &p))
            .await
            .context("window look-up task")??
    };
    let by_partition: BTreeMap<i32, PartitionWindow> = windows.iter().map(|w| (w.partition, *w)).collect();
    let total: u64 = windows.iter().map(PartitionWindow::len).sum();
    tracing::info!(
        topic = %plan.topic,
        checkpoint_group = %plan.group,
        dry_run = plan.dry_run,
        from = %plan.from,
        to = %plan.to,
        rate = plan.rate.requests_per_second,
        records = total,
        windows = ?windows.iter().map(|w| format!("{}:[{},{})", w.partition, w.start, w.end)).collect::<Vec<_>>(),
        "replay starting"
    );

    let mut cursors = Cursors::new(&windows);
    let mut assignment = TopicPartitionList::new();
    for w in windows.iter().filter(|w| !w.is_empty()) {
        assignment.add_partition_offset(&plan.topic, w.partition, Offset::Offset(w.start))?;
        lock(&ledger).assign((plan.topic.clone(), w.partition));
    }
    // Manual assignment: no group join, no rebalance, the live group is never involved.
    consumer.assign(&assignment).context("assign partitions")?;

    let limiter = Arc::new(Limiter::new(&plan.rate));
    let sender = Arc::new(Sender::new(&cfg.elevate, &cfg.retry, limiter, metrics.clone())?);
    let mut progress = report::Progress::new(total);
    let mut summary = Summary {
        topic: plan.topic.clone(),
        checkpoint_group: (!plan.dry_run).then(|| plan.group.clone()),
        dry_run: plan.dry_run,
        windows: windows.clone(),
        ..Summary::default()
    };
    let done_of = |cursors: &Cursors, ledger: &SharedLedger, dry: bool| -> u64 {
        let l = lock(ledger);
        windows
            .iter()
            .filter(|w| !w.is_empty())
            .map(|w| {
                let pos = if dry {
                    cursors.next(w.partition)
                } else {
                    l.committable(&(plan.topic.clone(), w.partition))
                };
                (pos.unwrap_or(w.start).min(w.end) - w.start).max(0) as u64
            })
            .sum()
    };

    let mut house_tick = interval(Duration::from_millis(250));
    house_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut commit_tick = interval(cfg.pipeline.commit_interval);
    commit_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut outside_window = 0u64;
    // Set when a consume error or a fatal client error ends the replay early (an error, after
    // the checkpoint of what is done was committed).
    let mut stop: Option<Stop> = None;

    if plan.dry_run {
        let mut out = String::new();
        let mut skipped: BTreeMap<String, u64> = BTreeMap::new();
        let mut dead: BTreeMap<String, u64> = BTreeMap::new();
        // Ok(false): the reader went away (`| head`): stop early, quietly.
        let flush = |out: &mut String| -> anyhow::Result<bool> {
            if !out.is_empty() {
                let mut so = std::io::stdout().lock();
                match so.write_all(out.as_bytes()).and_then(|()| so.flush()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(false),
                    Err(e) => return Err(e).context("writing to stdout"),
                }
                out.clear();
            }
            Ok(true)
        };
        while !cursors.all_done() {
            tokio::select! {
                biased;
                Ok(()) = shutdown.changed() => { summary.interrupted = true; break }
                _ = house_tick.tick() => if !flush(&mut out)? { summary.interrupted = true; break },
                m = consumer.recv() => match m {
                    Ok(m) => {
                        let (take, ended) = cursors.on_message(m.partition(), m.offset());
                        if ended {
                            pause(&consumer, &plan.topic, vec![m.partition()], true);
                        }
                        if !take {
                            continue;
                        }
                        let src = SourceRecord::from_message(&m);
                        drop(m);
                        summary.records += 1;
                        if !window::in_time_window(plan.from, plan.to, src.timestamp_ms) {
                            outside_window += 1;
                            continue;
                        }
                        match crate::work::plan(&cfg.mapping, &src, plan.max_age, window::now_ms()) {
                            Err(invalid) => {
                                *dead.entry(invalid.reason.as_str().to_string()).or_default() += 1;
                                out.push_str(&dry::dead_letter_line(&src, invalid.reason.as_str(), &invalid.detail));
                                out.push('\n');
                            }
                            Ok(mapped) => {
                                for r in &mapped.skipped {
                                    *skipped.entry(r.as_str().to_string()).or_default() += 1;
                                }
                                for n in &mapped.notifications {
                                    let req = sender.request_for(n);
                                    let t = n.event_time_ms.or(src.timestamp_ms);
                                    out.push_str(&dry::notification_line(&src, n.line, t, &req));
                                    out.push('\n');
                                    summary.sent += 1;
                                    if let Some(t) = t {
                                        summary.ages.record(window::now_ms() - t);
                                    }
                                }
                            }
                        }
                        if out.len() > 1 << 16 && !flush(&mut out)? {
                            summary.interrupted = true;
                            break;
                        }
                    }
                    Err(KafkaError::PartitionEOF(p)) => {
                        if cursors.on_eof(p) {
                            pause(&consumer, &plan.topic, vec![p], true);
                        }
                    }
                    Err(e) => if let Some(s) = on_consume_error(&e, &metrics) {
                        stop = Some(s);
                        summary.interrupted = true;
                        break;
                    },
                },
            }
            if progress.due() {
                progress.update(done_of(&cursors, &ledger, true), 0);
            }
        }
        if !summary.interrupted && !flush(&mut out)? {
            summary.interrupted = true;
        }
        summary.skipped = skipped;
        summary.dead_lettered = dead;
        for w in &windows {
            summary.reached.insert(
                w.partition,
                cursors.next(w.partition).unwrap_or(w.start).min(w.end),
            );
        }
    } else {
        let work = Arc::new(Work {
            max_age: plan.max_age,
            ages: Some(Mutex::new(Ages::new())),
            ..Work::from_config(
                cfg,
                &secrets,
                sender,
                ledger.clone(),
                metrics.clone(),
                wake.clone(),
            )
            .context("dead-letter producer")?
        });
        let (max_records, max_parts) = in_flight_bounds(cfg, &plan.rate);
        let mut paused = false;
        loop {
            let in_flight = lock(&ledger).records_in_flight();
            if cursors.all_done() && in_flight == 0 {
                break;
            }
            tokio::select! {
                biased;
                Ok(()) = shutdown.changed() => { summary.interrupted = true; break }
                _ = commit_tick.tick() => {
                    commit_checkpoint(&consumer, &ledger, &by_partition, plan.to, &metrics);
                }
                _ = house_tick.tick() => {}
                _ = wake.notified() => {}
                m = consumer.recv() => match m {
                    Ok(m) => {
                        let (take, ended) = cursors.on_message(m.partition(), m.offset());
                        if ended {
                            pause(&consumer, &plan.topic, vec![m.partition()], true);
                        }
                        if take {
                            let src = SourceRecord::from_message(&m);
                            drop(m);
                            let taken = if window::in_time_window(plan.from, plan.to, src.timestamp_ms) {
                                work.take(src)
                            } else {
                                // Done at once, like a record that maps to nothing.
                                let key: Tp = (src.topic.clone(), src.partition);
                                let tracked = lock(&ledger).track(&key, src.offset, 0).is_some();
                                outside_window += u64::from(tracked);
                                tracked
                            };
                            // A re-delivery (after a pause) is refused by the ledger: not counted.
                            summary.records += u64::from(taken);
                        }
                    }
                    Err(KafkaError::PartitionEOF(p)) => {
                        if cursors.on_eof(p) {
                            pause(&consumer, &plan.topic, vec![p], true);
                        }
                    }
                    Err(e) => if let Some(s) = on_consume_error(&e, &metrics) {
                        stop = Some(s);
                        summary.interrupted = true;
                        break;
                    },
                },
            }
            let (records, parts) = {
                let l = lock(&ledger);
                (l.records_in_flight(), l.parts_in_flight())
            };
            metrics.in_flight_records.set(records as i64);
            metrics.in_flight_notifications.set(parts as i64);
            // Backpressure like `run`: pause at the bound, resume at half of it; partitions
            // that reached their end stay paused.
            if !paused && (records >= max_records || parts >= max_parts) {
                pause(&consumer, &plan.topic, cursors.reading(), true);
                paused = true;
            } else if paused && records <= max_records / 2 && parts <= max_parts / 2 {
                pause(&consumer, &plan.topic, cursors.reading(), false);
                paused = false;
            }
            if progress.due() {
                progress.update(done_of(&cursors, &ledger, false), records);
            }
            if let Some(s) = fatal_client(&consumer, &work) {
                stop = Some(s);
                summary.interrupted = true;
                break;
            }
        }
        if summary.interrupted {
            // Stop taking work; let in-flight requests finish within the drain deadline.
            pause(&consumer, &plan.topic, cursors.reading(), true);
            tracing::info!(deadline = ?cfg.shutdown.drain_deadline, "replay interrupted: draining in-flight work");
            let deadline = Instant::now() + cfg.shutdown.drain_deadline;
            while lock(&ledger).records_in_flight() > 0 {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = wake.notified() => {}
                    _ = consumer.recv() => {}
                }
            }
        }
        let committed = commit_checkpoint(&consumer, &ledger, &by_partition, plan.to, &metrics);
        if !committed {
            tracing::error!(
                "final checkpoint commit failed: a rerun re-sends from the last successful commit"
            );
        }
        summary.count(&metrics);
        if let Some(ages) = &work.ages {
            summary.ages = std::mem::take(&mut *lock(ages));
        }
        let l = lock(&ledger);
        for w in &windows {
            let pos = l.committable(&(plan.topic.clone(), w.partition));
            summary
                .reached
                .insert(w.partition, pos.unwrap_or(w.start).min(w.end));
        }
    }
    if !summary.interrupted {
        // Every partition was read to its end: report the ends as reached even where the
        // window closed on a gap (compaction, transaction markers).
        for w in &windows {
            summary.reached.insert(w.partition, w.end);
        }
    }
    if outside_window > 0 {
        summary.skipped.insert("outside_window".into(), outside_window);
    }
    progress.finish();
    summary.duration = started.elapsed();
    if let Some(stop) = stop {
        // Nothing read after the error was taken, so the checkpoint is not past it.
        return Err(stop.into());
    }
    Ok(summary)
}
