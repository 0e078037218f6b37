//! Offset tracker: which offsets of one partition are done, and the position that may be
//! committed. A plain data structure with no Kafka and no I/O, property-tested. Guarantee: the
//! committable position is one past the highest offset below which every tracked record is
//! done — never beyond an unfinished record, whatever order completions arrive in.

use std::collections::BTreeMap;

/// Tracks records of one partition from the first offset it sees.
#[derive(Debug, Clone, Default)]
pub struct OffsetTracker {
    /// Unfinished records: offset → parts still outstanding (> 0).
    pending: BTreeMap<i64, u32>,
    /// One past the highest offset tracked so far; None before the first record.
    next: Option<i64>,
}

/// Misuse of the tracker (a bug in the caller, reported rather than panicking).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackerError {
    /// Offsets must be tracked in increasing order.
    #[error("offset {offset} tracked after {next_expected_at_least} (offsets must increase)")]
    OutOfOrder {
        /// The offending offset.
        offset: i64,
        /// The lowest offset that would have been accepted.
        next_expected_at_least: i64,
    },
    /// A completion for an offset that is not pending.
    #[error("offset {0} completed but not pending")]
    NotPending(i64),
}

impl OffsetTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts tracking `offset`, which is done once `parts` completions arrive (0 = done now).
    /// Offsets must increase; gaps (compaction, transaction markers) are fine.
    pub fn track(&mut self, offset: i64, parts: u32) -> Result<(), TrackerError> {
        if let Some(next) = self.next {
            if offset < next {
                return Err(TrackerError::OutOfOrder {
                    offset,
                    next_expected_at_least: next,
                });
            }
        }
        self.next = Some(offset + 1);
        if parts > 0 {
            self.pending.insert(offset, parts);
        }
        Ok(())
    }

    /// Records that one part of `offset` is done; returns true when the record is now done.
    pub fn complete(&mut self, offset: i64) -> Result<bool, TrackerError> {
        let parts = self
            .pending
            .get_mut(&offset)
            .ok_or(TrackerError::NotPending(offset))?;
        *parts -= 1;
        if *parts == 0 {
            self.pending.remove(&offset);
            return Ok(true);
        }
        Ok(false)
    }

    /// The position that may be committed (the next offset to read after a restart): the lowest
    /// unfinished offset, or one past the highest tracked offset when all are done.
    pub fn committable(&self) -> Option<i64> {
        match self.pending.keys().next() {
            Some(&lowest) => Some(lowest),
            None => self.next,
        }
    }

    /// Records tracked but not done.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Parts (notifications) outstanding over all pending records.
    pub fn pending_parts(&self) -> u64 {
        self.pending.values().map(|&p| u64::from(p)).sum()
    }

    /// True when nothing is pending.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commits_only_below_the_lowest_unfinished() {
        let mut t = OffsetTracker::new();
        assert_eq!(t.committable(), None);
        t.track(10, 1).unwrap();
        t.track(11, 0).unwrap();
        t.track(12, 2).unwrap();
        t.track(15, 1).unwrap(); // gap 13-14
        assert_eq!(t.committable(), Some(10));
        assert!(t.complete(12).is_ok());
        assert_eq!(t.committable(), Some(10));
        assert!(t.complete(10).unwrap());
        assert_eq!(t.committable(), Some(12));
        assert!(t.complete(12).unwrap());
        assert_eq!(t.committable(), Some(15));
        assert!(t.complete(15).unwrap());
        assert_eq!(t.committable(), Some(16));
        assert_eq!(t.complete(15), Err(TrackerError::NotPending(15)));
        assert!(matches!(t.track(3, 1), Err(TrackerError::OutOfOrder { .. })));
    }

    proptest! {
        /// Records with random part counts and gaps, completed in a random order: after every
        /// step the committable position is <= every unfinished offset, never moves backwards,
        /// and reaches one past the last offset when all are done.
        #[test]
        fn never_commits_past_an_unfinished_record(
            records in proptest::collection::vec((1i64..4, 0u32..4), 1..60),
            order_seed in proptest::collection::vec(any::<u32>(), 0..300),
        ) {
            let mut t = OffsetTracker::new();
            let mut offset = 0i64;
            let mut outstanding: Vec<i64> = Vec::new();
            for (gap, parts) in &records {
                offset += gap;
                t.track(offset, *parts).unwrap();
                for _ in 0..*parts { outstanding.push(offset); }
            }
            let last = offset;
            let mut prev = t.committable().unwrap();
            let mut seeds = order_seed.into_iter().cycle();
            while !outstanding.is_empty() {
                let i = (seeds.next().unwrap_or(0) as usize) % outstanding.len();
                let o = outstanding.swap_remove(i);
                t.complete(o).unwrap();
                let c = t.committable().unwrap();
                prop_assert!(c >= prev, "moved backwards {} -> {}", prev, c);
                if let Some(min) = outstanding.iter().min() {
                    prop_assert!(c <= *min, "committable {} passes unfinished {}", c, min);
                }
                prev = c;
            }
            prop_assert_eq!(t.committable(), Some(last + 1));
            prop_assert!(t.is_idle());
        }
    }
}
