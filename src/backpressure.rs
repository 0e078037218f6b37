//! The backpressure policy of `run` and `replay`, pure: when to stop taking records, when to
//! pause the partitions and when to resume them. Guarantees: at the in-flight bound nothing more
//! is taken; partitions are paused only once the bound stayed full for `pause_after`, and resumed
//! at half the bound (hysteresis). Limits: it decides, the caller pauses (and keeps polling).
//!
//! Two steps, because pausing at once made librdkafka drop and re-fetch its prefetched batch on
//! every resume (far below the HTTP ceiling in the benchmark); stopping to take costs nothing while
//! librdkafka's bounded prefetch queue waits, and the pause keeps the consumer polling so the group
//! never sees it as stuck (`max.poll.interval.ms`).

use std::time::{Duration, Instant};

/// What the caller does to the partitions after a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing changes.
    Hold,
    /// Pause the partitions.
    Pause,
    /// Resume the partitions.
    Resume,
}

/// The policy's state over the in-flight bounds (records, notifications).
#[derive(Debug, Clone)]
pub struct Backpressure {
    max_records: usize,
    max_parts: u64,
    pause_after: Duration,
    /// Since when the bound has been full (reset once it is not, or on resume).
    full_since: Option<Instant>,
    /// Whether the partitions are paused.
    paused: bool,
}

impl Backpressure {
    /// At most `max_records` records and `max_parts` notifications in flight; partitions paused
    /// once the bound stayed full for `pause_after` (zero: at once).
    pub fn new(max_records: usize, max_parts: u64, pause_after: Duration) -> Self {
        Backpressure {
            max_records,
            max_parts,
            pause_after,
            full_since: None,
            paused: false,
        }
    }

    /// Whether the loop takes records now: not while the bound is full and the partitions are not
    /// paused yet (once paused, what librdkafka still hands over is taken; the bound is soft).
    pub fn take(&self) -> bool {
        self.full_since.is_none() || self.paused
    }

    /// Whether the partitions are paused (the tests' view: callers act on [`Action`]s).
    #[cfg(test)]
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// After a turn with `records` records and `parts` notifications in flight, at `now`: what to
    /// do with the partitions.
    pub fn observe(&mut self, records: usize, parts: u64, now: Instant) -> Action {
        let full = Bounds {
            records: self.max_records,
            parts: self.max_parts,
        }
        .full(records, parts);
        if full {
            let since = *self.full_since.get_or_insert(now);
            if !self.paused && now.saturating_duration_since(since) >= self.pause_after {
                self.paused = true;
                return Action::Pause;
            }
        } else if !self.paused {
            self.full_since = None;
        } else if records <= self.max_records / 2 && parts <= self.max_parts / 2 {
            self.paused = false;
            self.full_since = None;
            return Action::Resume;
        }
        Action::Hold
    }
}

/// The in-flight bounds as completions see them: which completion is worth waking the loop for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// At most this many records in flight.
    pub records: usize,
    /// At most this many notifications in flight.
    pub parts: u64,
}

impl Bounds {
    /// Whether `records` records and `parts` notifications in flight reach a bound.
    pub fn full(&self, records: usize, parts: u64) -> bool {
        records >= self.records || parts >= self.parts
    }

    /// Whether a completion that left `records` records and `parts` notifications in flight (one
    /// notification fewer than before, and one record fewer when `record_done`) can change what
    /// [`Backpressure`] decides or ends a drain: it crossed below a bound, reached half of one
    /// (the resume point) or left nothing in flight. Every other completion leaves the decision
    /// as it was, so the loop is not woken for it (one wake per completion cost a thread hand-off
    /// per notification). Crossings are exact because each completion takes one notification
    /// and at most one record; a revocation, which drops many at once, wakes the loop itself.
    pub fn worth_waking(&self, records: usize, parts: u64, record_done: bool) -> bool {
        let record_edge =
            record_done && (records == 0 || records + 1 == self.records || records == self.records / 2);
        let part_edge = parts == 0 || parts + 1 == self.parts || parts == self.parts / 2;
        record_edge || part_edge
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_secs(5);

    #[test]
    fn below_the_bound_it_takes_and_holds() {
        let t = Instant::now();
        let mut bp = Backpressure::new(10, 100, AFTER);
        assert!(bp.take());
        assert_eq!(bp.observe(9, 99, t), Action::Hold);
        assert!(bp.take());
        assert!(!bp.paused());
    }

    #[test]
    fn at_the_bound_it_stops_taking_then_pauses_after_the_delay() {
        let t = Instant::now();
        let mut bp = Backpressure::new(10, 100, AFTER);
        assert_eq!(bp.observe(10, 0, t), Action::Hold);
        assert!(!bp.take(), "full: stop taking, not paused yet");
        assert_eq!(
            bp.observe(10, 0, t + AFTER - Duration::from_millis(1)),
            Action::Hold
        );
        assert!(!bp.take());
        assert_eq!(bp.observe(10, 0, t + AFTER), Action::Pause);
        assert!(bp.paused());
        assert!(bp.take(), "paused: the loop polls and takes what still arrives");
        assert_eq!(bp.observe(11, 0, t + AFTER * 2), Action::Hold, "paused once");
    }

    #[test]
    fn the_notification_bound_counts_too() {
        let t = Instant::now();
        let mut bp = Backpressure::new(10, 100, AFTER);
        assert_eq!(bp.observe(1, 100, t), Action::Hold);
        assert!(!bp.take());
    }

    #[test]
    fn leaving_the_bound_before_the_delay_takes_again_and_restarts_the_clock() {
        let t = Instant::now();
        let mut bp = Backpressure::new(10, 100, AFTER);
        bp.observe(10, 0, t);
        assert_eq!(bp.observe(9, 0, t + Duration::from_secs(4)), Action::Hold);
        assert!(bp.take());
        assert_eq!(
            bp.observe(10, 0, t + Duration::from_secs(6)),
            Action::Hold,
            "a new full spell"
        );
        assert_eq!(bp.observe(10, 0, t + Duration::from_secs(11)), Action::Pause);
    }

    #[test]
    fn a_completion_that_changes_a_decision_is_worth_waking_for() {
        fn full(b: Bounds, r: usize, p: u64) -> bool {
            r >= b.records || p >= b.parts
        }
        fn resumable(b: Bounds, r: usize, p: u64) -> bool {
            r <= b.records / 2 && p <= b.parts / 2
        }
        // Every state around small bounds, exhaustively (a sampled search missed edges).
        for (max_r, max_p) in (1usize..12).flat_map(|r| (1u64..16).map(move |p| (r, p))) {
            let b = Bounds {
                records: max_r,
                parts: max_p,
            };
            for (r, p, done) in (1usize..26).flat_map(|r| {
                // every record has at least one notification in flight
                (r as u64..40).flat_map(move |p| [(r, p, true), (r, p, false)])
            }) {
                let (r2, p2) = (if done { r - 1 } else { r }, p - 1);
                let changes = full(b, r, p) != full(b, r2, p2)
                    || resumable(b, r, p) != resumable(b, r2, p2)
                    || (r2 == 0 && done)
                    || p2 == 0;
                assert!(
                    !changes || b.worth_waking(r2, p2, done),
                    "{b:?}: ({r}, {p}) -> ({r2}, {p2})"
                );
            }
        }
        // And most completions are not: far from every bound, nothing changes.
        let b = Bounds {
            records: 1000,
            parts: 4000,
        };
        assert!(!b.worth_waking(800, 3000, true));
        assert!(!b.worth_waking(800, 3000, false));
        assert!(b.worth_waking(999, 3000, true));
        assert!(b.worth_waking(800, 3999, false));
    }

    #[test]
    fn resumes_only_at_half_of_both_bounds() {
        let t = Instant::now();
        let mut bp = Backpressure::new(10, 100, Duration::ZERO);
        assert_eq!(bp.observe(10, 0, t), Action::Pause);
        assert_eq!(bp.observe(6, 0, t), Action::Hold, "below the bound, above half");
        assert_eq!(
            bp.observe(5, 51, t),
            Action::Hold,
            "records at half, notifications above"
        );
        assert!(bp.paused());
        assert_eq!(bp.observe(5, 50, t), Action::Resume);
        assert!(!bp.paused());
        assert!(bp.take());
        assert_eq!(bp.observe(9, 0, t), Action::Hold);
    }

    #[test]
    fn with_no_delay_it_pauses_at_the_bound_and_never_stops_taking() {
        let t = Instant::now();
        let mut bp = Backpressure::new(10, 100, Duration::ZERO);
        for (records, want) in [
            (3, Action::Hold),
            (10, Action::Pause),
            (12, Action::Hold),
            (7, Action::Hold),
        ] {
            assert_eq!(bp.observe(records, 0, t), want, "{records} in flight");
            assert!(bp.take(), "{records} in flight");
        }
        assert_eq!(bp.observe(5, 0, t), Action::Resume);
    }
}
