//! `replay`: backfill a fixed window of one topic through the same `Work` as `run` (mapping,
//! rate limiter, retries, dead-letter). Guarantees: at-least-once over the window; the window's
//! end is fixed when the replay first starts; progress is committed to a checkpoint group (never
//! the live group: manual assignment, no group join) only up to offsets the ledger says are done,
//! with the done-offset map in the same metadata as the window (one format, [`crate::offsetmap`]),
//! so a replay killed and restarted with the same arguments re-sends at most what completed
//! since its last checkpoint and what was in flight.
//! Limits: timestamp bounds use Kafka record timestamps (records outside them inside the resolved
//! offset range are skipped as `outside_window`, but a record with an older timestamp that sits
//! after the `--to` offset is not found); two replays must not share a checkpoint group at once.

mod dry;
mod live;
mod prepare;
mod report;
pub mod window;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::config::{Config, RateConfig, Secret};
use crate::consumer::{SinkContext, Stop};
use crate::kafka::consumer_config;
use crate::ledger::Ledger;
use crate::limit::Limiter;
use crate::metrics::Metrics;
use crate::offsetmap::DoneMap;
use crate::send::Sender;
use crate::util::lock;
use crate::work::{SharedLedger, Tp};

pub use crate::ages::{AgeStats, Ages};
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

/// Entry point of `elevate-sink replay`, with the configuration `args.config` names (the binary
/// loads it once, before the runtime): exit 0 when the window is done, 130 when interrupted.
pub async fn main(args: ReplayArgs, cfg: Config) -> anyhow::Result<ExitCode> {
    crate::logging::init(&cfg.log);
    let summary = replay(&cfg, &args, crate::shutdown::on_signal()).await?;
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

/// What the dry and the live loop read with.
struct Reader<'a> {
    cfg: &'a Config,
    /// The routes records map to (the dry pass maps with them; the live pass's `Work` has its own).
    routes: &'a crate::route::Routes,
    plan: &'a Plan,
    secrets: &'a [(String, Secret)],
    consumer: &'a StreamConsumer<SinkContext>,
    windows: &'a [PartitionWindow],
    ledger: &'a SharedLedger,
    metrics: &'a Arc<Metrics>,
    wake: &'a Arc<Notify>,
}

impl Reader<'_> {
    /// Records of the window done so far: read (a dry run) or committable.
    fn done(&self, cursors: &Cursors, dry: bool) -> u64 {
        let l = lock(self.ledger);
        self.windows
            .iter()
            .filter(|w| !w.is_empty())
            .map(|w| {
                let pos = if dry {
                    cursors.next(w.partition)
                } else {
                    l.committable(&(self.plan.topic.clone(), w.partition))
                };
                (pos.unwrap_or(w.start).min(w.end) - w.start).max(0) as u64
            })
            .sum()
    }
}

/// Where a pass over the window stands: reading, reporting, counting.
struct Pass {
    cursors: Cursors,
    progress: report::Progress,
    summary: Summary,
    /// Records inside the offset range but outside the time bounds.
    outside_window: u64,
    /// Set when a consume error or a fatal client error ends the replay early (an error, after
    /// the checkpoint of what is done was committed).
    stop: Option<Stop>,
}

impl Pass {
    /// The pass ends early, interrupted (by `stop` when there is one).
    fn interrupt(&mut self, stop: Option<Stop>) {
        self.summary.interrupted = true;
        if stop.is_some() {
            self.stop = stop;
        }
    }
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
    let secrets = cfg.resolve_secrets()?;
    let metrics = Arc::new(Metrics::new());
    let ledger: SharedLedger = Arc::new(Mutex::new(Ledger::new()));
    let wake = Arc::new(Notify::new());
    let budget = cfg.pipeline.commit_metadata_max_bytes;
    let ctx = SinkContext::new(ledger.clone(), metrics.clone(), None, wake.clone(), budget);
    let mut cc = consumer_config(cfg, &secrets, &plan.group);
    // EOF events tell us a partition was read up to its high watermark (≥ the window's end)
    // even when the window ends in a gap (compaction, transaction markers).
    cc.set("enable.partition.eof", "true");
    let consumer: Arc<StreamConsumer<SinkContext>> =
        Arc::new(cc.create_with_context(ctx).context("kafka consumer")?);
    let (windows, seeds) = {
        let (c, p, m) = (consumer.clone(), plan.clone(), metrics.clone());
        tokio::task::spawn_blocking(move || prepare::prepare(&c, &p, budget, &m))
            .await
            .context("window look-up task")??
    };
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
    assign(&consumer, &ledger, &plan.topic, &windows, &seeds)?;

    let limiter = Arc::new(Limiter::new(&plan.rate));
    let sender = Arc::new(Sender::new(&cfg.elevate, &cfg.retry, limiter, metrics.clone())?);
    let mut pass = Pass {
        cursors: Cursors::new(&windows),
        progress: report::Progress::new(total),
        summary: Summary {
            topic: plan.topic.clone(),
            checkpoint_group: (!plan.dry_run).then(|| plan.group.clone()),
            dry_run: plan.dry_run,
            windows: windows.clone(),
            ..Summary::default()
        },
        outside_window: 0,
        stop: None,
    };
    let routes = crate::route::Routes::from_config(cfg)?;
    let reader = Reader {
        cfg,
        routes: &routes,
        plan: &plan,
        secrets: &secrets,
        consumer: &consumer,
        windows: &windows,
        ledger: &ledger,
        metrics: &metrics,
        wake: &wake,
    };
    if plan.dry_run {
        dry::run(&reader, &mut pass, &sender, &mut shutdown).await?;
    } else {
        live::run(&reader, &mut pass, sender, &mut shutdown).await?;
    }
    finish(pass, &windows, started)
}

/// Assigns the windows' partitions at their starts (manual assignment: no group join, no
/// rebalance, the live group is never involved), each owned in the ledger and seeded with its
/// checkpoint's done map.
fn assign(
    consumer: &StreamConsumer<SinkContext>,
    ledger: &SharedLedger,
    topic: &str,
    windows: &[PartitionWindow],
    seeds: &std::collections::HashMap<i32, DoneMap>,
) -> anyhow::Result<()> {
    let mut assignment = TopicPartitionList::new();
    for w in windows.iter().filter(|w| !w.is_empty()) {
        assignment.add_partition_offset(topic, w.partition, Offset::Offset(w.start))?;
        let key: Tp = (topic.to_string(), w.partition);
        let mut l = lock(ledger);
        l.assign(key.clone());
        if let Some(done) = seeds.get(&w.partition) {
            l.seed(&key, done);
        }
    }
    consumer.assign(&assignment).context("assign partitions")?;
    Ok(())
}

/// The summary of a pass that ran to its end or was interrupted; an error when a consume error
/// or a fatal client error stopped it (nothing read after the error was taken, so the checkpoint
/// is not past it).
fn finish(mut pass: Pass, windows: &[PartitionWindow], started: Instant) -> anyhow::Result<Summary> {
    let summary = &mut pass.summary;
    if !summary.interrupted {
        // Every partition was read to its end: report the ends as reached even where the
        // window closed on a gap (compaction, transaction markers).
        for w in windows {
            summary.reached.insert(w.partition, w.end);
        }
    }
    if pass.outside_window > 0 {
        summary
            .skipped
            .insert("outside_window".into(), pass.outside_window);
    }
    pass.progress.finish();
    summary.duration = started.elapsed();
    if let Some(stop) = pass.stop {
        return Err(stop.into());
    }
    Ok(pass.summary)
}
