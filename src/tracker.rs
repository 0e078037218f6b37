//! Offset tracker: which offsets of one partition are done, and the position that may be
//! committed. A plain data structure with no Kafka and no I/O, property-tested. Guarantee: the
//! committable position is one past the highest offset below which every tracked record is
//! done — never beyond an unfinished record, whatever order completions arrive in. A tracker
//! seeded with a previous owner's done map ([`OffsetTracker::seed`]) also counts those offsets
//! as done: it reports each as already delivered once, and moves past them, but past nothing else.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;

use crate::offsetmap::DoneMap;

/// Tracks records of one partition from the first offset it sees.
#[derive(Debug, Clone, Default)]
pub struct OffsetTracker {
    /// Unfinished records: offset → parts still outstanding (> 0).
    pending: BTreeMap<i64, u32>,
    /// One past the highest offset tracked so far; None before the first record.
    next: Option<i64>,
    /// Offsets a previous owner committed as done and not yet read here: increasing, disjoint,
    /// non-adjacent ranges, all at or above `next` (tracking an offset drops what lies below it).
    seeded: VecDeque<Range<i64>>,
    /// Bumped whenever the committable position or the done map may have changed.
    revision: u64,
}

/// What [`OffsetTracker::track`] made of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracked {
    /// Tracked: done once its parts complete (at once for 0 parts).
    Fresh,
    /// In the seeded done map: a previous owner delivered it. Counted done; nothing to send.
    AlreadyDelivered,
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
    /// A seed for a tracker that has tracked records already.
    #[error("seeded after tracking started (seed a freshly assigned partition only)")]
    SeedNotFresh,
}

impl OffsetTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Seeds a fresh tracker with the done map committed by the partition's previous owner (as
    /// decoded for the committed offset the partition is read from): tracking one of its offsets
    /// then says [`Tracked::AlreadyDelivered`], and the committable position moves past them.
    /// Only before the first record is tracked; a second seed replaces the first.
    pub fn seed(&mut self, done: &DoneMap) -> Result<(), TrackerError> {
        if self.next.is_some() {
            return Err(TrackerError::SeedNotFresh);
        }
        self.seeded = done.ranges().iter().cloned().collect();
        self.revision += 1;
        Ok(())
    }

    /// Starts tracking `offset`, which is done once `parts` completions arrive (0 = done now),
    /// unless it is in the seeded done map (then it is done already, whatever `parts` says).
    /// Offsets must increase; gaps (compaction, transaction markers) are fine.
    pub fn track(&mut self, offset: i64, parts: u32) -> Result<Tracked, TrackerError> {
        let changes = match self.next {
            Some(next) if offset < next => {
                return Err(TrackerError::OutOfOrder {
                    offset,
                    next_expected_at_least: next,
                })
            }
            // A gap joins the done map (or moves the position); the first record sets it.
            Some(next) => offset > next,
            None => true,
        };
        self.next = Some(offset + 1);
        let tracked = if self.take_seeded(offset) {
            Tracked::AlreadyDelivered
        } else {
            if parts > 0 {
                self.pending.insert(offset, parts);
            }
            Tracked::Fresh
        };
        if changes || (tracked == Tracked::Fresh && parts == 0) {
            self.revision += 1;
        }
        Ok(tracked)
    }

    /// Drops the seeded offsets at or below `offset`; true when `offset` was one of them.
    fn take_seeded(&mut self, offset: i64) -> bool {
        while let Some(front) = self.seeded.front_mut() {
            if front.start > offset {
                return false;
            }
            if front.end > offset {
                front.start = offset + 1;
                if front.is_empty() {
                    self.seeded.pop_front();
                }
                return true;
            }
            self.seeded.pop_front();
        }
        false
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
            self.revision += 1;
            return Ok(true);
        }
        Ok(false)
    }

    /// Adds `extra` parts to the pending record at `offset` (a record whose parts are known only
    /// later, as a wire-format record's lines once it is decoded): it is done once those complete
    /// too. The committable position does not move.
    pub fn add_parts(&mut self, offset: i64, extra: u32) -> Result<(), TrackerError> {
        let parts = self
            .pending
            .get_mut(&offset)
            .ok_or(TrackerError::NotPending(offset))?;
        *parts += extra;
        Ok(())
    }

    /// The position that may be committed (the next offset to read after a restart): the lowest
    /// unfinished offset, or one past the highest tracked offset when all are done (and past the
    /// seeded offsets that follow it).
    pub fn committable(&self) -> Option<i64> {
        match self.pending.keys().next() {
            Some(&lowest) => Some(lowest),
            None => self.next.map(|next| match self.seeded.front() {
                Some(r) if r.start == next => r.end,
                _ => next,
            }),
        }
    }

    /// The done offsets above the committable position, relative to it (what
    /// [`crate::offsetmap::encode`] takes): tracked records that are done, offsets skipped
    /// between them (they do not exist, like the gaps the position itself moves over), and the
    /// seeded offsets not yet read. O(pending records + seeded ranges). None before any record.
    pub fn done_map(&self) -> Option<DoneMap> {
        let base = self.committable()?;
        let next = self.next?;
        let mut map = DoneMap::empty(base);
        let mut from = base;
        for &p in self.pending.keys() {
            map.push(from..p);
            from = p + 1;
        }
        map.push(from..next);
        for r in &self.seeded {
            map.push(r.clone());
        }
        Some(map)
    }

    /// A number that changes whenever the committable position or the done map may have
    /// changed (to commit only what changed).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Records tracked but not done.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Parts (notifications) outstanding over all pending records.
    pub fn pending_parts(&self) -> u64 {
        self.pending.values().map(|&p| u64::from(p)).sum()
    }

    /// True when nothing is pending (what the property tests check).
    #[cfg(test)]
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offsetmap::{decode, encode, MAX_METADATA_BYTES};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

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

    #[test]
    fn seeded_offsets_are_skipped_once_and_committed_past() {
        let mut t = OffsetTracker::new();
        // The previous owner committed 10 with 11-12 and 14 done (13 was in retry).
        t.seed(&DoneMap::from_offsets(10, [11, 12, 14])).unwrap();
        assert_eq!(t.committable(), None);
        assert_eq!(t.track(10, 1), Ok(Tracked::Fresh));
        assert_eq!(t.track(11, 1), Ok(Tracked::AlreadyDelivered));
        assert_eq!(t.done_map().unwrap(), DoneMap::from_offsets(10, [11, 12, 14]));
        assert!(t.complete(10).unwrap());
        assert_eq!(
            t.committable(),
            Some(13),
            "past 11 (read) and 12 (seeded, not read yet)"
        );
        assert_eq!(t.done_map().unwrap(), DoneMap::from_offsets(13, [14]));
        assert_eq!(t.track(12, 2), Ok(Tracked::AlreadyDelivered));
        assert_eq!(t.track(13, 1), Ok(Tracked::Fresh));
        assert_eq!(t.committable(), Some(13));
        assert_eq!(t.track(14, 1), Ok(Tracked::AlreadyDelivered));
        assert!(matches!(t.track(14, 1), Err(TrackerError::OutOfOrder { .. })));
        assert!(t.complete(13).unwrap());
        assert_eq!(t.committable(), Some(15));
        assert_eq!(t.seed(&DoneMap::empty(15)), Err(TrackerError::SeedNotFresh));
    }

    #[test]
    fn revision_moves_only_when_position_or_map_can_change() {
        let mut t = OffsetTracker::new();
        let r0 = t.revision();
        t.track(0, 2).unwrap();
        let r1 = t.revision();
        assert_ne!(r0, r1, "first record: a position now exists");
        t.track(1, 1).unwrap();
        assert_eq!(t.revision(), r1, "a pending record right after: nothing changed");
        assert!(!t.complete(0).unwrap());
        assert_eq!(t.revision(), r1, "one part of two: nothing changed");
        assert!(t.complete(1).unwrap());
        assert_ne!(t.revision(), r1, "a record done: the map changed");
    }

    /// A tracker of `records` (gap to the previous offset, parts) from offset 0: the tracker,
    /// one entry per outstanding part, the last offset.
    fn tracked(records: &[(i64, u32)]) -> (OffsetTracker, Vec<i64>, i64) {
        let mut t = OffsetTracker::new();
        let mut offset = 0i64;
        let mut outstanding = Vec::new();
        for &(gap, parts) in records {
            offset += gap;
            t.track(offset, parts).unwrap();
            outstanding.extend(std::iter::repeat_n(offset, parts as usize));
        }
        (t, outstanding, offset)
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
            let (mut t, mut outstanding, last) = tracked(&records);
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

        /// Parts added to pending records (a wire record's lines, known once it is decoded) hold
        /// each record until they complete too: after every step the outstanding parts are what
        /// the tracker counts and the position is <= every unfinished offset; it reaches one past
        /// the last offset once every part, first or added, is done; adding to a record that is
        /// done is refused.
        #[test]
        fn added_parts_hold_the_record_until_they_complete(
            records in proptest::collection::vec((1i64..4, 1u32..3), 1..40),
            steps in proptest::collection::vec((any::<u32>(), 0u32..3), 0..300),
        ) {
            let (mut t, mut outstanding, last) = tracked(&records);
            let mut steps = steps.into_iter();
            let mut adds_left = 40;
            while !outstanding.is_empty() {
                let (pick, add) = steps.next().unwrap_or((0, 0));
                let i = pick as usize % outstanding.len();
                let o = outstanding[i];
                if add > 0 && adds_left > 0 {
                    adds_left -= 1;
                    t.add_parts(o, add).unwrap();
                    for _ in 0..add { outstanding.push(o); }
                } else {
                    outstanding.swap_remove(i);
                    if t.complete(o).unwrap() {
                        prop_assert!(!outstanding.contains(&o), "{} done with parts left", o);
                        prop_assert_eq!(t.add_parts(o, 1), Err(TrackerError::NotPending(o)));
                    }
                }
                prop_assert_eq!(t.pending_parts(), outstanding.len() as u64);
                if let Some(min) = outstanding.iter().min() {
                    let c = t.committable().unwrap();
                    prop_assert!(c <= *min, "committable {} passes unfinished {}", c, min);
                }
            }
            prop_assert_eq!(t.committable(), Some(last + 1));
            prop_assert!(t.is_idle());
        }

        /// A tracker seeded with a done map, fed a log in order with completions interleaved at
        /// random: the committable position never passes an unfinished offset nor an offset of
        /// the log still to be read that is not seeded; it never moves backwards; exactly the
        /// seeded offsets of the log are reported already delivered, each once (a re-delivery is
        /// refused); the done map claims no offset that is pending or still to be read unseeded.
        #[test]
        fn seeded_never_commits_past_an_unfinished_or_unseen_offset(
            start in 0i64..5,
            records in proptest::collection::vec((1i64..4, 0u32..3), 1..50),
            seeded in proptest::collection::vec(any::<bool>(), 0..200),
            steps in proptest::collection::vec(any::<u32>(), 0..400),
        ) {
            let base = start;
            let mut log = Vec::new();
            let mut offset = base - 1;
            for (gap, parts) in &records {
                offset += gap;
                log.push((offset, *parts));
            }
            let seed_set: BTreeSet<i64> = seeded.iter().enumerate()
                .filter(|(_, s)| **s).map(|(i, _)| base + 1 + i as i64).collect();
            let mut t = OffsetTracker::new();
            t.seed(&DoneMap::from_offsets(base, [base + 1])).unwrap();
            t.seed(&DoneMap::from_offsets(base, seed_set.iter().copied())).unwrap();
            let mut outstanding: Vec<i64> = Vec::new();
            let mut next_record = 0usize;
            let mut already = Vec::new();
            let mut prev = None;
            let mut steps = steps.into_iter().chain(std::iter::repeat(0));
            while next_record < log.len() || !outstanding.is_empty() {
                let step = steps.next().unwrap_or(0);
                if next_record < log.len() && (outstanding.is_empty() || step % 3 == 0) {
                    let (o, parts) = log[next_record];
                    next_record += 1;
                    match t.track(o, parts).unwrap() {
                        Tracked::AlreadyDelivered => already.push(o),
                        Tracked::Fresh => outstanding.extend(std::iter::repeat_n(o, parts as usize)),
                    }
                    prop_assert!(t.track(o, 1).is_err(), "re-delivery of {} accepted", o);
                } else if !outstanding.is_empty() {
                    let o = outstanding.swap_remove(step as usize % outstanding.len());
                    t.complete(o).unwrap();
                }
                let Some(c) = t.committable() else { continue };
                prop_assert!(prev <= Some(c), "moved backwards {:?} -> {}", prev, c);
                prev = Some(c);
                let unseen = log[next_record..].iter().map(|r| r.0).filter(|o| !seed_set.contains(o));
                if let Some(min) = outstanding.iter().copied().chain(unseen).min() {
                    prop_assert!(c <= min, "committable {} passes unfinished or unseen {}", c, min);
                }
                let map = t.done_map().unwrap();
                prop_assert_eq!(map.base(), c);
                for &o in &outstanding {
                    prop_assert!(!map.contains(o), "pending {} in the done map", o);
                }
                for &(o, _) in &log[next_record..] {
                    prop_assert!(seed_set.contains(&o) || !map.contains(o), "unseen {} in the done map", o);
                }
            }
            let expected: Vec<i64> = log.iter().map(|r| r.0).filter(|o| seed_set.contains(o)).collect();
            prop_assert_eq!(already, expected);
            // All done: the position is past the log and the seeded run right after it.
            let mut end = log.last().unwrap().0 + 1;
            while seed_set.contains(&end) { end += 1; }
            prop_assert_eq!(t.committable(), Some(end));
            prop_assert!(t.is_idle());
        }

        /// A hand-off through commit metadata: what one tracker exports, encoded within the
        /// broker's limit and decoded for the committed position, seeds the next owner, which
        /// then skips exactly the records the first one finished above that position.
        #[test]
        fn handoff_skips_only_what_was_done(
            records in proptest::collection::vec((1i64..3, 1u32..3), 1..200),
            done in proptest::collection::vec(any::<bool>(), 200),
        ) {
            let mut first = OffsetTracker::new();
            let mut offset = 0i64;
            let mut log = Vec::new();
            for (i, (gap, parts)) in records.iter().enumerate() {
                offset += gap;
                log.push((offset, *parts));
                first.track(offset, *parts).unwrap();
                if done[i] {
                    for _ in 0..*parts { first.complete(offset).unwrap(); }
                }
            }
            let committed = first.committable().unwrap();
            let map = first.done_map().unwrap();
            let text = encode(&map, None, MAX_METADATA_BYTES).unwrap().text;
            let mut second = OffsetTracker::new();
            second.seed(&decode(&text, committed).done.unwrap()).unwrap();
            for (i, &(o, parts)) in log.iter().enumerate().filter(|(_, r)| r.0 >= committed) {
                let skipped = second.track(o, parts).unwrap() == Tracked::AlreadyDelivered;
                prop_assert_eq!(skipped, done[i], "offset {}", o);
            }
        }
    }
}
