//! Commit: the one place where positions go from the ledger to the broker — `run`'s periodic
//! asynchronous commit, the synchronous ones on revoke and at shutdown, and `replay`'s checkpoint
//! — each partition's commit carrying its done-offset map ([`crate::offsetmap`], cut to the
//! metadata budget, with replay's window). Guarantees: only positions and maps the ledger calls
//! done are committed, and only for partitions whose position or map changed; a commit point counts
//! as committed only once the broker acknowledged it, for the ownership generation it was sent
//! under; `commits_total` counts acknowledged commits, `commit_failures_total` failed ones,
//! `offset_map_truncated_total` partition commits whose map was cut. Limits: an asynchronous
//! commit still waiting for its answer at the next interval is sent again (the same point).
//!
//! Why asynchronous results need [`commit_async`]: `rd_kafka_commit(.., async)` posts its result
//! nowhere unless an `offset_commit_cb` is set in the librdkafka configuration, which rust-rdkafka
//! never sets (it enables the offset-commit *event*, which librdkafka only uses for automatic
//! commits). So `ConsumerContext::commit_callback` never ran for a `CommitMode::Async` commit.
//! `rd_kafka_commit_queue` with the consumer's own queue posts the result there as an
//! offset-commit event, which the consumer's poll (the `StreamConsumer`'s `recv`) turns into a
//! `commit_callback` on the polling thread, ordered with the rebalance callbacks.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};

use crate::ledger::CommitPoint;
use crate::metrics::Metrics;
use crate::offsetmap::{self, ReplayWindow};
use crate::util::lock;
use crate::work::{SharedLedger, Tp};

/// Unanswered asynchronous commits kept per (partition, position); older ones are dropped (an
/// answer that does arrive for a dropped one then acknowledges a later point of the same
/// position: a map that may be a little older on the broker, never a wrong one).
const MAX_UNANSWERED: usize = 4;

/// A commit point of one partition (position, done map, generation, revision).
pub type Point = CommitPoint<Tp>;

/// How commit metadata is written: the byte budget (`pipeline.commit_metadata_max_bytes`) and,
/// for replay, the window of each partition.
pub struct Metadata<'a> {
    /// Largest metadata in bytes (at most the broker's `offset.metadata.max.bytes`).
    pub budget: usize,
    /// Replay's window of a partition (None for `run`).
    pub window: &'a (dyn Fn(&Tp) -> Option<ReplayWindow> + Sync),
}

impl<'a> Metadata<'a> {
    /// `run`'s metadata: the map only.
    pub fn run(budget: usize) -> Metadata<'static> {
        Metadata {
            budget,
            window: &|_| None,
        }
    }
}

/// Asynchronous commits sent and not yet answered: (partition, position) → the points sent, in
/// order (librdkafka answers a partition's commits in the order they were sent).
#[derive(Debug, Default)]
pub struct InFlight {
    sent: Mutex<HashMap<(Tp, i64), VecDeque<Point>>>,
}

impl InFlight {
    /// Nothing in flight.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the commits in flight for `key` (revoked: their answers must not mark anything).
    pub fn forget(&self, key: &Tp) {
        lock(&self.sent).retain(|(k, _), _| k != key);
    }

    /// Commits in flight (what the tests look at).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        lock(&self.sent).values().map(VecDeque::len).sum()
    }

    /// True when no commit is in flight.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The commit points worth committing now (empty: nothing to commit).
pub fn due(ledger: &SharedLedger) -> Vec<Point> {
    lock(ledger).commit_points()
}

/// The commit request for `points`, each partition's metadata its done map (cut to the budget,
/// counted in `offset_map_truncated_total` when cut or left out) and its replay window. Every
/// commit is built here.
pub fn request(points: &[Point], meta: &Metadata<'_>, metrics: &Metrics) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for p in points {
        let mut e = tpl.add_partition(&p.key.0, p.key.1);
        let _ = e.set_offset(Offset::Offset(p.position()));
        match offsetmap::encode(&p.done, (meta.window)(&p.key), meta.budget) {
            Ok(enc) => {
                if enc.truncated() {
                    metrics.offset_map_truncated.inc();
                    tracing::debug!(
                        partition = p.key.1,
                        dropped = enc.dropped_offsets,
                        "done-offset map cut to fit the commit metadata budget"
                    );
                }
                e.set_metadata(enc.text);
            }
            Err(err) => {
                metrics.offset_map_truncated.inc();
                tracing::warn!(error = %err, "committing without a done-offset map");
            }
        }
    }
    tpl
}

/// `points` for a debug log line: `topic/partition@position+done` each.
fn describe(points: &[Point]) -> String {
    points
        .iter()
        .map(|p| format!("{}/{}@{}+{}", p.key.0, p.key.1, p.position(), p.done.offsets()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Marks `points` acknowledged in the ledger (each only if its partition is still owned under
/// the generation it was sent with).
fn mark(ledger: &SharedLedger, points: &[Point]) {
    let mut l = lock(ledger);
    for p in points {
        l.acknowledge(p);
    }
}

/// Commits `points` synchronously; on success marks them acknowledged and counts the commit.
/// A failure is counted and returned (not logged: the caller knows what it means).
pub fn commit_points<C: ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    ledger: &SharedLedger,
    metrics: &Metrics,
    meta: &Metadata<'_>,
    points: &[Point],
) -> KafkaResult<()> {
    if points.is_empty() {
        return Ok(());
    }
    let result = consumer.commit(&request(points, meta, metrics), CommitMode::Sync);
    tracing::debug!(points = %describe(points), ?result, "synchronous commit");
    match result {
        Ok(()) => {
            mark(ledger, points);
            metrics.commits.inc();
            Ok(())
        }
        Err(e) => {
            metrics.commit_failures.inc();
            Err(e)
        }
    }
}

/// Commits, synchronously, every commit point not yet acknowledged; true when there was nothing
/// to commit or the broker acknowledged it. Used by replay and at shutdown, on the polling
/// thread, so it is ordered after every earlier commit of ours.
pub fn commit_sync<C: ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    ledger: &SharedLedger,
    metrics: &Metrics,
    meta: &Metadata<'_>,
) -> bool {
    match commit_points(consumer, ledger, metrics, meta, &due(ledger)) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "offset commit failed; retried on the next tick");
            false
        }
    }
}

/// Whether a failed commit may succeed once the group settles: the coordinator is moving or the
/// group is between two steps of a rebalance ([`coordinator_moving`]), or the generation moved on
/// (a rebalance overlapped the commit) or the member was dropped and rejoins. A retry after
/// polling (which serves the rebalance) commits under the new generation.
pub fn is_retriable(e: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    coordinator_moving(e)
        || matches!(
            e.rdkafka_error_code(),
            Some(IllegalGeneration | UnknownMemberId | State | OperationTimedOut | Fenced | AssignmentLost)
        )
}

/// How long a revoke's commit is tried again while the group coordinator is moving.
pub const REVOKE_COMMIT_PATIENCE: Duration = Duration::from_secs(5);

/// The synchronous commit of a revoke: the points [`crate::ledger::Ledger::revoke_point`]
/// returned for the partitions given up (no longer in the ledger, so not marked), with their
/// maps, so the new owner skips what is done. Refusals that pass once the coordinator is found
/// again or the rebalance step ends ([`coordinator_moving`]) are tried again every 100 ms for up
/// to `patience`. (Not a cure for a broker outage longer than `session.timeout.ms`: the revoke
/// then comes while no coordinator runs at all; see docs/chaos.md.) This blocks the polling thread, and with it
/// the rebalance, at most that long: the new owner must not start before the commit lands. Any
/// other failure is logged: the new owner re-sends from the last commit.
pub fn commit_revoked<C: ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    metrics: &Metrics,
    budget: usize,
    points: &[Point],
    patience: Duration,
) -> KafkaResult<()> {
    if points.is_empty() {
        return Ok(());
    }
    let tpl = request(points, &Metadata::run(budget), metrics);
    let deadline = std::time::Instant::now() + patience;
    let mut tries = 0u32;
    loop {
        tries += 1;
        let result = consumer.commit(&tpl, CommitMode::Sync);
        tracing::debug!(points = %describe(points), ?result, tries, "revoke commit");
        match result {
            Ok(()) => {
                metrics.commits.inc();
                return Ok(());
            }
            Err(e) if coordinator_moving(&e) && std::time::Instant::now() < deadline => {
                tracing::info!(error = %e, tries, "commit on revoke refused while the coordinator moves or the group rebalances; trying again");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                metrics.commit_failures.inc();
                tracing::warn!(error = %e, tries, "commit on revoke failed; the new owner re-sends from the last commit");
                return Err(e);
            }
        }
    }
}

/// Whether a refused commit may pass within seconds without this member rejoining: the
/// coordinator is being looked up, moving or loading, or the group is between two steps of a
/// rebalance. (A commit refused for the generation, `IllegalGeneration` or `UnknownMemberId`, can
/// only pass after this member rejoins: [`is_retriable`], for the final commit.)
pub fn coordinator_moving(e: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        e.rdkafka_error_code(),
        Some(
            WaitingForCoordinator
                | NotCoordinator
                | CoordinatorNotAvailable
                | CoordinatorLoadInProgress
                | RebalanceInProgress
                | RequestTimedOut
        )
    )
}

/// The periodic commit: every commit point not yet acknowledged, asynchronously, from the polling
/// thread, its result coming back to [`acknowledged`] through the consumer's queue. A point still
/// unanswered is sent again: some answers never name their partitions (librdkafka's local
/// errors), and waiting for them would stop the partition's commits for good.
///
/// Asynchronous so the loop never waits for the broker; from the polling thread so it is ordered
/// before a revoke's synchronous commit. (A commit from another thread could land after the
/// partition's new owner committed further and move its position backwards.)
pub fn commit_async<C: ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    ledger: &SharedLedger,
    metrics: &Metrics,
    budget: usize,
    in_flight: &InFlight,
) {
    let points = due(ledger);
    if points.is_empty() {
        return;
    }
    let tpl = request(&points, &Metadata::run(budget), metrics);
    tracing::debug!(points = %describe(&points), "asynchronous commit");
    match commit_to_consumer_queue(consumer, &tpl) {
        Ok(()) => {
            let mut sent = lock(&in_flight.sent);
            for p in points {
                let queue = sent.entry((p.key.clone(), p.position())).or_default();
                queue.push_back(p);
                // Answers that never came must not pile up: keep the latest few.
                while queue.len() > MAX_UNANSWERED {
                    queue.pop_front();
                }
            }
        }
        Err(e) => {
            metrics.commit_failures.inc();
            tracing::warn!(error = %e, "offset commit failed; retried on the next tick");
        }
    }
}

/// `rd_kafka_commit_queue` onto the consumer's own queue (see the module docs).
fn commit_to_consumer_queue<C: ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    tpl: &TopicPartitionList,
) -> KafkaResult<()> {
    let rk = consumer.client().native_ptr();
    // SAFETY: `rk` is the live consumer's handle (borrowed from `consumer` for this call).
    // `rd_kafka_queue_get_consumer` returns a new reference to its consumer queue, released below
    // (the commit keeps its own reference for the reply); `rd_kafka_commit_queue` copies the list
    // before returning, and with no callback the result is posted to the queue as an event.
    let err = unsafe {
        let queue = rdkafka::bindings::rd_kafka_queue_get_consumer(rk);
        if queue.is_null() {
            return Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::UnknownGroup));
        }
        let err = rdkafka::bindings::rd_kafka_commit_queue(rk, tpl.ptr(), queue, None, std::ptr::null_mut());
        rdkafka::bindings::rd_kafka_queue_destroy(queue);
        err
    };
    if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
        Ok(())
    } else {
        Err(KafkaError::ConsumerCommit(err.into()))
    }
}

/// The answer to an asynchronous commit (from `ConsumerContext::commit_callback`): counts it —
/// in `commits_total` when every partition was acknowledged, in `commit_failures_total`
/// otherwise — and marks each acknowledged point in the ledger if its partition is still owned
/// under the generation the commit was sent with.
pub fn acknowledged(
    ledger: &SharedLedger,
    metrics: &Metrics,
    in_flight: &InFlight,
    result: &KafkaResult<()>,
    offsets: &TopicPartitionList,
) {
    let mut acked = Vec::new();
    let mut failed = result.is_err();
    {
        let mut sent = lock(&in_flight.sent);
        for e in offsets.elements() {
            let Offset::Offset(pos) = e.offset() else {
                continue;
            };
            let slot = (e.topic().to_string(), e.partition());
            let slot = (slot, pos);
            let point = sent.get_mut(&slot).and_then(VecDeque::pop_front);
            if sent.get(&slot).is_some_and(VecDeque::is_empty) {
                sent.remove(&slot);
            }
            let ok = result.is_ok() && e.error().is_ok();
            failed |= !ok;
            if let (true, Some(point)) = (ok, point) {
                acked.push(point);
            }
        }
    }
    tracing::debug!(acknowledged = %describe(&acked), answered = offsets.count(), ?result, "asynchronous commit answered");
    mark(ledger, &acked);
    if failed {
        metrics.commit_failures.inc();
        let error = match result {
            Err(e) => e.to_string(),
            Ok(()) => offsets
                .elements()
                .iter()
                .find_map(|e| e.error().err())
                .map_or_else(String::new, |e| e.to_string()),
        };
        tracing::warn!(%error, "asynchronous offset commit failed; retried on the next tick");
    } else {
        metrics.commits.inc();
    }
}

/// How often `run` reads its partitions' committed offsets back (see [`reconcile`]): every ten
/// commit intervals, at least every 60 s and at most every 2 s.
pub fn reconcile_every(commit_interval: std::time::Duration) -> std::time::Duration {
    use std::time::Duration;
    (commit_interval * 10).clamp(Duration::from_secs(2), Duration::from_secs(60))
}

/// The read-back check: reads the committed offsets of the assigned partitions and makes every
/// one below its committable position due again ([`crate::ledger::Ledger::reconcile`]), so a
/// late commit that moved a partition back (another member's, a retried one of ours) is mended
/// at the next tick instead of leaving the partition's lag, and its re-sends, until it changes.
/// Moved-back partitions are counted in `commit_regressions_total` and logged. Blocking (one
/// request to the coordinator); a failed read changes nothing. Returns how many moved back.
pub fn reconcile<C: ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    ledger: &SharedLedger,
    metrics: &Metrics,
    timeout: std::time::Duration,
) -> usize {
    let owned = match consumer.assignment() {
        Ok(tpl) if tpl.count() > 0 => tpl,
        _ => return 0,
    };
    let committed = match consumer.committed_offsets(owned, timeout) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the committed offsets back");
            return 0;
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
    let moved_back = lock(ledger).reconcile(&committed);
    for (key, read, acked) in &moved_back {
        metrics.commit_regressions.inc();
        tracing::warn!(
            topic = %key.0,
            partition = key.1,
            read_back = ?read,
            acknowledged = acked,
            "committed offset read back below the position the broker acknowledged (a late commit \
             moved it back); committing it again"
        );
    }
    moved_back.len()
}

/// What the committed metadata of one partition, read back on assignment, says: the done map to
/// seed its tracker with (relative to the committed offset) and replay's window. Metadata that
/// gives no usable map (foreign, older version, malformed, damaged, for another position) is
/// counted in `offset_map_ignored_total{reason}` and logged once: the partition then starts
/// without a map (duplicates, never a wrong skip). No metadata at all is normal and silent.
pub fn read_back(key: &Tp, committed: i64, metadata: &str, metrics: &Metrics) -> offsetmap::Decoded {
    let decoded = offsetmap::decode(metadata, committed);
    if let Err(why) = &decoded.done {
        if *why != offsetmap::NoMap::Missing {
            metrics
                .offset_map_ignored
                .get_or_create(&crate::metrics::label("reason", why.as_str()))
                .inc();
            tracing::warn!(
                topic = %key.0,
                partition = key.1,
                committed,
                reason = %why,
                "committed metadata has no usable done-offset map; the partition starts without one \
                 (records done above the committed offset are sent again)"
            );
        }
    }
    decoded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Claim, Ledger};
    use crate::offsetmap::{decode, DoneMap};
    use std::sync::Arc;

    fn key() -> Tp {
        ("t".into(), 0)
    }

    fn complete(l: &mut Ledger<Tp>, offsets: impl IntoIterator<Item = i64>, generation: u64) {
        for offset in offsets {
            assert!(l.complete(&Claim::by_hand(key(), generation, offset)));
        }
    }

    fn ledger_with_done(offsets: i64) -> SharedLedger {
        let mut l = Ledger::new();
        l.assign(key());
        for o in 0..offsets {
            let generation = l.track(&key(), o, 1).unwrap();
            complete(&mut l, [o], generation);
        }
        Arc::new(Mutex::new(l))
    }

    fn answer(pos: i64, err: Option<RDKafkaRespErr>) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        let mut e = tpl.add_partition("t", 0);
        e.set_offset(Offset::Offset(pos)).unwrap();
        if let Some(code) = err {
            // The per-partition error of an answer, as librdkafka sets it.
            // SAFETY: `tpl` owns the list; the element exists (just added).
            unsafe { (*tpl.ptr()).elems.as_mut().unwrap().err = code }
        }
        tpl
    }

    fn in_flight_with(points: &[Point]) -> InFlight {
        let f = InFlight::new();
        for p in points {
            lock(&f.sent)
                .entry((p.key.clone(), p.position()))
                .or_default()
                .push_back(p.clone());
        }
        f
    }

    /// The revoke's commit waits out refusals that pass: the mock cluster refuses two commits
    /// with REBALANCE_IN_PROGRESS (what a revoke met while the coordinator moved, in the long
    /// chaos run) in a stable group; with patience the third try lands at the point, with none
    /// the refusal is the answer. (librdkafka retries the coordinator errors themselves inside
    /// `commit`; this is the refusal that reaches us. A group whose rebalance waits on this very
    /// member refuses until it rejoins, which no patience cures: the new owner then re-sends
    /// from the last commit.)
    #[test]
    fn a_revoke_commit_waits_out_refusals_that_pass() {
        use rdkafka::consumer::BaseConsumer;
        use rdkafka::mocking::MockCluster;
        use rdkafka::ClientConfig;
        use RDKafkaRespErr::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS as REFUSED;
        let mock = MockCluster::new(1).expect("mock cluster");
        mock.create_topic("t", 1, 1).expect("topic");
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", mock.bootstrap_servers())
            .set("group.id", "revoke-patience")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        consumer.subscribe(&["t"]).expect("subscribe");
        let start = std::time::Instant::now();
        while consumer.assignment().map_or(0, |a| a.count()) == 0 {
            assert!(start.elapsed() < Duration::from_secs(30), "never assigned");
            let _ = consumer.poll(Duration::from_millis(100));
        }
        let points = due(&ledger_with_done(3));
        let m = Metrics::new();

        mock.request_errors(rdkafka::types::RDKafkaApiKey::OffsetCommit, &[REFUSED, REFUSED]);
        commit_revoked(&consumer, &m, 4096, &points, Duration::from_secs(5))
            .expect("landed on the third try");
        let committed = consumer
            .committed(Duration::from_secs(10))
            .expect("committed offsets");
        let at = committed.find_partition("t", 0).map(|e| e.offset());
        assert_eq!(at, Some(Offset::Offset(3)));
        assert_eq!((m.commits.get(), m.commit_failures.get()), (1, 0));

        mock.request_errors(rdkafka::types::RDKafkaApiKey::OffsetCommit, &[REFUSED]);
        let refused = commit_revoked(&consumer, &m, 4096, &points, Duration::ZERO);
        assert!(refused.is_err(), "no patience: the refusal is the answer");
        assert_eq!(m.commit_failures.get(), 1);
    }

    #[test]
    fn an_acknowledged_commit_is_counted_and_not_due_again() {
        let ledger = ledger_with_done(3);
        let m = Metrics::new();
        let due_now = due(&ledger);
        assert_eq!(due_now.len(), 1);
        assert_eq!(due_now[0].position(), 3);
        let f = in_flight_with(&due_now);
        acknowledged(&ledger, &m, &f, &Ok(()), &answer(3, None));
        assert!(due(&ledger).is_empty(), "acknowledged: nothing to send again");
        assert!(f.is_empty());
        assert_eq!((m.commits.get(), m.commit_failures.get()), (1, 0));
    }

    #[test]
    fn a_failed_commit_is_counted_and_stays_due() {
        let ledger = ledger_with_done(3);
        let m = Metrics::new();
        let points = due(&ledger);
        let f = in_flight_with(&points);
        let err = Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::RequestTimedOut));
        acknowledged(&ledger, &m, &f, &err, &answer(3, None));
        assert_eq!(due(&ledger).len(), 1, "failed: sent again");
        let f = in_flight_with(&points);
        acknowledged(
            &ledger,
            &m,
            &f,
            &Ok(()),
            &answer(
                3,
                Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE),
            ),
        );
        assert_eq!(due(&ledger).len(), 1, "a partition error is a failure too");
        assert_eq!((m.commits.get(), m.commit_failures.get()), (0, 2));
    }

    #[test]
    fn an_answer_for_an_earlier_ownership_marks_nothing() {
        let ledger = ledger_with_done(3);
        let m = Metrics::new();
        let old = due(&ledger);
        {
            // Revoked and assigned again, three records done again under the new generation.
            let mut l = lock(&ledger);
            l.revoke(&key());
            l.assign(key());
            for o in 0..3 {
                let generation = l.track(&key(), o, 1).unwrap();
                complete(&mut l, [o], generation);
            }
        }
        let f = in_flight_with(&old);
        acknowledged(&ledger, &m, &f, &Ok(()), &answer(3, None));
        assert_eq!(due(&ledger).len(), 1, "the new owner's position is still due");
        let f = in_flight_with(&old);
        f.forget(&key());
        assert!(f.is_empty());
    }

    /// The map travels with the position: records done above one in retry are in the metadata,
    /// a change of the map alone makes the partition due again, and two answers for the same
    /// position acknowledge the points in the order they were sent.
    #[test]
    fn the_map_is_committed_and_a_changed_map_is_due_again() {
        let mut l = Ledger::new();
        l.assign(key());
        let g = l.track(&key(), 0, 1).unwrap();
        for o in 1..4 {
            l.track(&key(), o, 1).unwrap();
        }
        complete(&mut l, [1, 2], g);
        let ledger = Arc::new(Mutex::new(l));
        let m = Metrics::new();
        let first = due(&ledger);
        let tpl = request(&first, &Metadata::run(4096), &m);
        let meta = tpl.elements()[0].metadata().to_string();
        assert_eq!(tpl.elements()[0].offset(), Offset::Offset(0));
        assert_eq!(decode(&meta, 0).done, Ok(DoneMap::from_offsets(0, [1, 2])));
        complete(&mut lock(&ledger), [3], g);
        let second = due(&ledger);
        assert_eq!(second[0].position(), 0, "position unchanged, map changed: due");
        let f = in_flight_with(&[first[0].clone(), second[0].clone()]);
        acknowledged(&ledger, &m, &f, &Ok(()), &answer(0, None));
        assert_eq!(
            due(&ledger),
            second,
            "the first answer acknowledges the first point"
        );
        acknowledged(&ledger, &m, &f, &Ok(()), &answer(0, None));
        assert!(due(&ledger).is_empty());
        assert_eq!(m.offset_map_truncated.get(), 0);
    }

    /// Over the budget the map is cut (counted); under the header it is left out (counted).
    #[test]
    fn a_map_over_the_budget_is_cut_and_counted() {
        let mut l = Ledger::new();
        l.assign(key());
        let g = l.track(&key(), 0, 1).unwrap();
        for o in 1..2000 {
            l.track(&key(), o, 1).unwrap();
        }
        complete(&mut l, (1..2000).filter(|o| o % 2 == 0), g);
        let m = Metrics::new();
        let points = l.commit_points();
        let tpl = request(&points, &Metadata::run(200), &m);
        let meta = tpl.elements()[0].metadata().to_string();
        assert!(meta.len() <= 200, "{}", meta.len());
        let kept = decode(&meta, 0).done.unwrap();
        assert!(!kept.is_empty() && kept.is_subset_of(&points[0].done));
        assert_eq!(m.offset_map_truncated.get(), 1);
        let tpl = request(&points, &Metadata::run(10), &m);
        assert_eq!(tpl.elements()[0].metadata(), "", "no room even for the header");
        assert_eq!(m.offset_map_truncated.get(), 2);
    }

    #[test]
    fn rebalance_errors_are_retriable_and_others_are_not() {
        let e = |c| KafkaError::ConsumerCommit(c);
        assert!(is_retriable(&e(RDKafkaErrorCode::IllegalGeneration)));
        assert!(is_retriable(&e(RDKafkaErrorCode::UnknownMemberId)));
        assert!(is_retriable(&e(RDKafkaErrorCode::RebalanceInProgress)));
        assert!(!is_retriable(&e(RDKafkaErrorCode::OffsetMetadataTooLarge)));
        assert!(!is_retriable(&e(RDKafkaErrorCode::GroupAuthorizationFailed)));
    }
}
