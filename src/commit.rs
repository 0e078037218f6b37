//! Commit: the one place where positions go from the ledger to the broker — `run`'s periodic
//! asynchronous commit, the synchronous ones on revoke and at shutdown, and `replay`'s checkpoint.
//! Guarantees: only positions the ledger calls done are committed; a position counts as committed
//! (and is not sent again) only once the broker acknowledged it, and only for the ownership
//! generation it was sent under; `commits_total` counts acknowledged commits,
//! `commit_failures_total` every commit that failed, synchronous or not. Limits: an asynchronous
//! commit still waiting for its answer at the next interval is sent again (the same position).
//!
//! Why asynchronous results need [`commit_async`]: `rd_kafka_commit(.., async)` posts its result
//! nowhere unless an `offset_commit_cb` is set in the librdkafka configuration, which rust-rdkafka
//! never sets (it enables the offset-commit *event*, which librdkafka only uses for automatic
//! commits). So `ConsumerContext::commit_callback` never ran for a `CommitMode::Async` commit.
//! `rd_kafka_commit_queue` with the consumer's own queue posts the result there as an
//! offset-commit event, which the consumer's poll (the `StreamConsumer`'s `recv`) turns into a
//! `commit_callback` on the polling thread, ordered with the rebalance callbacks.

use std::collections::HashMap;
use std::sync::Mutex;

use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};

use crate::metrics::Metrics;
use crate::util::lock;
use crate::work::{SharedLedger, Tp};

/// One position to commit: the partition, the position, the ownership generation it is done under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The partition.
    pub key: Tp,
    /// The committed position (the next offset to read).
    pub pos: i64,
    /// The ledger generation the position belongs to.
    pub generation: u64,
}

/// Asynchronous commits sent and not yet answered: (partition, position) → generation.
#[derive(Debug, Default)]
pub struct InFlight {
    sent: Mutex<HashMap<(Tp, i64), u64>>,
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

    /// Commits in flight.
    pub fn len(&self) -> usize {
        lock(&self.sent).len()
    }

    /// True when no commit is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The positions worth committing now, with their generations (empty: nothing to commit).
pub fn due(ledger: &SharedLedger) -> Vec<Position> {
    let l = lock(ledger);
    l.to_commit()
        .into_iter()
        .filter_map(|(key, pos)| {
            let generation = l.generation(&key)?;
            Some(Position { key, pos, generation })
        })
        .collect()
}

/// The commit request for `(partition, position)` pairs, with commit metadata per partition
/// where `metadata` has some (replay keeps its window there). Every commit is built here.
pub fn request<'a>(
    positions: impl IntoIterator<Item = (&'a Tp, i64)>,
    metadata: impl Fn(&Tp) -> Option<String>,
) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (key, pos) in positions {
        let mut e = tpl.add_partition(&key.0, key.1);
        let _ = e.set_offset(Offset::Offset(pos));
        if let Some(m) = metadata(key) {
            e.set_metadata(m);
        }
    }
    tpl
}

fn pairs(positions: &[Position]) -> impl Iterator<Item = (&Tp, i64)> {
    positions.iter().map(|p| (&p.key, p.pos))
}

/// Marks `positions` committed in the ledger, each only if its partition is still owned under
/// the generation it was sent with.
fn mark(ledger: &SharedLedger, positions: impl IntoIterator<Item = Position>) {
    let mut l = lock(ledger);
    for p in positions {
        if l.is_current(&p.key, p.generation) {
            l.committed(&p.key, p.pos);
        }
    }
}

/// Commits, synchronously, every done position not yet acknowledged, with `metadata`; true when
/// there was nothing to commit or the broker acknowledged it. Used on revoke, at shutdown and by
/// replay, on the polling thread, so it is ordered after every earlier commit of ours.
pub fn commit_sync<C: ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    ledger: &SharedLedger,
    metrics: &Metrics,
    metadata: impl Fn(&Tp) -> Option<String>,
) -> bool {
    let positions = due(ledger);
    if positions.is_empty() {
        return true;
    }
    match consumer.commit(&request(pairs(&positions), metadata), CommitMode::Sync) {
        Ok(()) => {
            mark(ledger, positions);
            metrics.commits.inc();
            true
        }
        Err(e) => {
            metrics.commit_failures.inc();
            tracing::warn!(error = %e, "offset commit failed; retried on the next tick");
            false
        }
    }
}

/// The synchronous commit of a revoke: the positions [`crate::ledger::Ledger::revoke`] returned
/// for the partitions given up (no longer in the ledger, so not marked). A failure is logged: the
/// new owner re-sends from the last commit.
pub fn commit_revoked<C: ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    metrics: &Metrics,
    positions: &[(Tp, i64)],
) -> bool {
    if positions.is_empty() {
        return true;
    }
    let tpl = request(positions.iter().map(|(k, p)| (k, *p)), |_| None);
    match consumer.commit(&tpl, CommitMode::Sync) {
        Ok(()) => {
            metrics.commits.inc();
            true
        }
        Err(e) => {
            metrics.commit_failures.inc();
            tracing::warn!(error = %e, "commit on revoke failed; the new owner re-sends from the last commit");
            false
        }
    }
}

/// The periodic commit: every done position not yet acknowledged, asynchronously, from the
/// polling thread, its result coming back to [`acknowledged`] through the consumer's queue.
///
/// Asynchronous so the loop never waits for the broker; from the polling thread so it is ordered
/// before a revoke's synchronous commit. (A commit from another thread could land after the
/// partition's new owner committed further and move its position backwards.)
pub fn commit_async<C: ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    ledger: &SharedLedger,
    metrics: &Metrics,
    in_flight: &InFlight,
) {
    let positions = due(ledger);
    if positions.is_empty() {
        return;
    }
    let tpl = request(pairs(&positions), |_| None);
    match commit_to_consumer_queue(consumer, &tpl) {
        Ok(()) => {
            let mut sent = lock(&in_flight.sent);
            for p in positions {
                sent.insert((p.key, p.pos), p.generation);
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
/// otherwise — and marks each acknowledged position committed if its partition is still owned
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
            let key: Tp = (e.topic().to_string(), e.partition());
            let generation = sent.remove(&(key.clone(), pos));
            let ok = result.is_ok() && e.error().is_ok();
            failed |= !ok;
            if let (true, Some(generation)) = (ok, generation) {
                acked.push(Position { key, pos, generation });
            }
        }
    }
    mark(ledger, acked);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Claim, Ledger};
    use std::sync::Arc;

    fn ledger_with_done(offsets: i64) -> SharedLedger {
        let mut l = Ledger::new();
        let key: Tp = ("t".into(), 0);
        l.assign(key.clone());
        for o in 0..offsets {
            let generation = l.track(&key, o, 1).unwrap();
            l.complete(&Claim {
                key: key.clone(),
                generation,
                offset: o,
            });
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

    fn in_flight_with(pos: i64, generation: u64) -> InFlight {
        let f = InFlight::new();
        lock(&f.sent).insert((("t".into(), 0), pos), generation);
        f
    }

    #[test]
    fn an_acknowledged_commit_is_counted_and_not_due_again() {
        let ledger = ledger_with_done(3);
        let m = Metrics::new();
        let due_now = due(&ledger);
        assert_eq!(due_now.len(), 1);
        assert_eq!(due_now[0].pos, 3);
        let f = in_flight_with(3, due_now[0].generation);
        acknowledged(&ledger, &m, &f, &Ok(()), &answer(3, None));
        assert!(due(&ledger).is_empty(), "acknowledged: nothing to send again");
        assert!(f.is_empty());
        assert_eq!((m.commits.get(), m.commit_failures.get()), (1, 0));
    }

    #[test]
    fn a_failed_commit_is_counted_and_stays_due() {
        let ledger = ledger_with_done(3);
        let m = Metrics::new();
        let generation = due(&ledger)[0].generation;
        let f = in_flight_with(3, generation);
        let err = Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::RequestTimedOut));
        acknowledged(&ledger, &m, &f, &err, &answer(3, None));
        assert_eq!(due(&ledger).len(), 1, "failed: sent again");
        let f = in_flight_with(3, generation);
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
        let old = due(&ledger)[0].generation;
        {
            // Revoked and assigned again, three records done again under the new generation.
            let mut l = lock(&ledger);
            let key: Tp = ("t".into(), 0);
            l.revoke(&key);
            l.assign(key.clone());
            for o in 0..3 {
                let generation = l.track(&key, o, 1).unwrap();
                l.complete(&Claim {
                    key: key.clone(),
                    generation,
                    offset: o,
                });
            }
        }
        let f = in_flight_with(3, old);
        acknowledged(&ledger, &m, &f, &Ok(()), &answer(3, None));
        assert_eq!(due(&ledger).len(), 1, "the new owner's position is still due");
        let f = in_flight_with(3, old);
        f.forget(&("t".into(), 0));
        assert!(f.is_empty());
    }
}
