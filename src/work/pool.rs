//! The served queue: notifications that wait for nothing but a concurrency slot and the global
//! quota are queued here and served in order by at most `limit` workers, each taking the next one
//! when it is done, instead of a task each (spawned, polled on its slot, woken again). Guarantees:
//! a queued job is served exactly once, in push order; never more than `limit` workers are
//! counted live; a job is never left in the queue with no live worker. Limits: it only counts
//! workers; starting and stopping them is the caller's (`Work::queue`).

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::util::lock;

/// A FIFO of jobs and the count of workers serving it. Pure: no runtime in it.
pub(crate) struct Pool<J> {
    /// The queue and the live workers, changed together under one lock.
    state: Mutex<State<J>>,
    /// At most this many workers live at once.
    limit: usize,
}

struct State<J> {
    queue: VecDeque<J>,
    live: usize,
}

impl<J> Pool<J> {
    /// An empty pool served by at most `limit` workers (at least one).
    pub(crate) fn new(limit: usize) -> Self {
        Pool {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                live: 0,
            }),
            limit: limit.max(1),
        }
    }

    /// Queues `job`. True when the caller must start a worker for it (counted live from now):
    /// fewer than `limit` were live.
    #[must_use]
    pub(crate) fn push(&self, job: J) -> bool {
        let mut s = lock(&self.state);
        s.queue.push_back(job);
        if s.live < self.limit {
            s.live += 1;
            true
        } else {
            false
        }
    }

    /// The next job for a live worker; None when the queue is empty, and the worker is counted
    /// out in the same step (it must stop), so a job pushed after that starts a worker of its own.
    pub(crate) fn next(&self) -> Option<J> {
        let mut s = lock(&self.state);
        let job = s.queue.pop_front();
        if job.is_none() {
            s.live -= 1;
        }
        job
    }

    /// Jobs waiting and workers live.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let s = lock(&self.state);
        (s.queue.len(), s.live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a step of the model does: queue a job, or let a live worker ask for its next one.
    #[derive(Debug, Clone)]
    enum Op {
        Push,
        Next,
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(prop_oneof![Just(Op::Push), Just(Op::Next)], 0..200)
    }

    proptest! {
        /// Workers started as `push` says and stopped as `next` says: never more than the limit,
        /// never a job left with no worker, every job served once and in push order.
        #[test]
        fn served_once_in_order_by_at_most_limit(limit in 1usize..5, ops in ops()) {
            let pool = Pool::new(limit);
            let (mut pushed, mut served, mut workers) = (0u32, Vec::new(), 0usize);
            for op in ops {
                match op {
                    Op::Push => {
                        if pool.push(pushed) {
                            workers += 1;
                        }
                        pushed += 1;
                    }
                    Op::Next if workers == 0 => {}
                    Op::Next => match pool.next() {
                        Some(job) => served.push(job),
                        None => workers -= 1,
                    },
                }
                let (waiting, live) = pool.counts();
                prop_assert_eq!(live, workers);
                prop_assert!(live <= limit);
                prop_assert!(waiting == 0 || live > 0, "{} jobs and no worker", waiting);
            }
            // The live workers drain the rest and stop.
            while workers > 0 {
                match pool.next() {
                    Some(job) => served.push(job),
                    None => workers -= 1,
                }
            }
            prop_assert_eq!(served, (0..pushed).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_worker_counted_out_lets_the_next_push_start_one() {
        let pool = Pool::new(1);
        assert!(pool.push(1));
        assert!(!pool.push(2), "the one live worker serves both");
        assert_eq!((pool.next(), pool.next(), pool.next()), (Some(1), Some(2), None));
        assert_eq!(pool.counts(), (0, 0));
        assert!(pool.push(3), "no worker is live: the push starts one");
    }
}
