//! Before a replay reads: the partitions of its topic, the window of each (from watermarks and
//! offsets for times) and its checkpoint (resumed, recorded fresh, or ignored when outside the
//! window). Blocking look-ups, run off the async threads. Guarantees: a live consumer group is
//! never used as a checkpoint; a partition's window is recorded before any work, so a restart keeps
//! its end. Limits: a time bound resolves by record timestamps (see the module docs of `replay`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{bail, Context};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use super::window::{self, Bound, CheckpointUse, PartitionWindow};
use super::{Plan, LOOKUP_TIMEOUT};
use crate::commit;
use crate::consumer::{tpl_of, SinkContext};
use crate::metrics::Metrics;
use crate::offsetmap::{self, DoneMap};
use crate::work::Tp;

/// The windows of a replay and, per partition resumed from its checkpoint, the done map committed
/// with it (to seed the partition's tracker).
pub(super) type Prepared = (Vec<PartitionWindow>, HashMap<i32, DoneMap>);

/// Resolves the per-partition windows (blocking look-ups) and applies the checkpoint.
pub(super) fn prepare(
    consumer: &StreamConsumer<SinkContext>,
    plan: &Plan,
    budget: usize,
    metrics: &Metrics,
) -> anyhow::Result<Prepared> {
    let topic = plan.topic.as_str();
    let partitions = partitions(consumer, plan)?;
    if !plan.dry_run {
        refuse_live_group(consumer, &plan.group)?;
    }
    let from_times = offsets_for_time(consumer, topic, &partitions, plan.from)?;
    let to_times = offsets_for_time(consumer, topic, &partitions, plan.to)?;
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
        return Ok((windows, HashMap::new()));
    }
    let seeds = apply_checkpoints(consumer, plan, budget, metrics, &partitions, &mut windows)?;
    Ok((windows, seeds))
}

/// The partitions to replay: the requested ones (each must exist), or all of the topic's.
fn partitions(consumer: &StreamConsumer<SinkContext>, plan: &Plan) -> anyhow::Result<Vec<i32>> {
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
    if plan.partitions.is_empty() {
        return Ok(existing.iter().copied().collect());
    }
    if let Some(p) = plan.partitions.iter().find(|p| !existing.contains(p)) {
        bail!(
            "--partitions: {topic} has no partition {p} (it has {})",
            existing.len()
        );
    }
    Ok(plan.partitions.clone())
}

/// A group with members is somebody's live group: committing to it would move their offsets (and
/// a manual-assignment commit might be fenced anyway). A failed look-up refuses nothing.
fn refuse_live_group(consumer: &StreamConsumer<SinkContext>, group: &str) -> anyhow::Result<()> {
    if let Ok(list) = consumer.fetch_group_list(Some(group), LOOKUP_TIMEOUT) {
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
    Ok(())
}

/// For a time bound, each partition's first offset at or after it (None past the end); empty for
/// other bounds.
fn offsets_for_time(
    consumer: &StreamConsumer<SinkContext>,
    topic: &str,
    partitions: &[i32],
    bound: Bound,
) -> anyhow::Result<BTreeMap<i32, Option<i64>>> {
    let Bound::Time(ts) = bound else {
        return Ok(BTreeMap::new());
    };
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
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
}

/// Applies the checkpoint group's committed offsets to `windows` (see
/// [`window::apply_checkpoint`]) and records the window of every partition not resumed, before
/// any work. Returns the done maps of the resumed partitions.
fn apply_checkpoints(
    consumer: &StreamConsumer<SinkContext>,
    plan: &Plan,
    budget: usize,
    metrics: &Metrics,
    partitions: &[i32],
    windows: &mut [PartitionWindow],
) -> anyhow::Result<HashMap<i32, DoneMap>> {
    let topic = plan.topic.as_str();
    let committed = consumer
        .committed_offsets(tpl_of(topic, partitions.iter().copied()), LOOKUP_TIMEOUT)
        .with_context(|| format!("committed offsets of checkpoint group {}", plan.group))?;
    let mut fresh = TopicPartitionList::new();
    let mut seeds = HashMap::new();
    for w in windows.iter_mut() {
        let key: Tp = (topic.to_string(), w.partition);
        let (c, decoded) = match committed.find_partition(topic, w.partition) {
            Some(e) => match e.offset() {
                Offset::Offset(o) => (Some(o), Some(commit::read_back(&key, o, e.metadata(), metrics))),
                _ => (None, None),
            },
            None => (None, None),
        };
        let recorded = decoded.as_ref().and_then(|d| d.window);
        let used = window::apply_checkpoint(w, c, recorded, plan.to);
        if used != CheckpointUse::Resumed {
            // Record the window before any work: a restart then keeps this end even for a
            // partition that had no progress to commit (no form of `--to` is re-resolved).
            let mut e = fresh.add_partition(topic, w.partition);
            e.set_offset(Offset::Offset(w.start))?;
            let window = Some(window::checkpoint_window(w, plan.to));
            if let Ok(m) = offsetmap::encode(&DoneMap::empty(w.start), window, budget) {
                e.set_metadata(m.text);
            }
        } else if let Some(Ok(done)) = decoded.map(|d| d.done) {
            seeds.insert(w.partition, done);
        }
        log_checkpoint_use(w, used, &plan.group);
    }
    if fresh.count() > 0 {
        consumer
            .commit(&fresh, CommitMode::Sync)
            .with_context(|| format!("initial checkpoint in group {}", plan.group))?;
    }
    Ok(seeds)
}

fn log_checkpoint_use(w: &PartitionWindow, used: CheckpointUse, group: &str) {
    match used {
        CheckpointUse::None => {}
        CheckpointUse::Resumed => tracing::info!(
            partition = w.partition,
            from = w.start,
            end = w.end,
            group = %group,
            "resuming from checkpoint"
        ),
        CheckpointUse::Ignored(c) => tracing::warn!(
            partition = w.partition,
            checkpoint = c,
            first = w.first,
            end = w.end,
            group = %group,
            "checkpoint outside the window ignored; starting the partition over"
        ),
    }
}
