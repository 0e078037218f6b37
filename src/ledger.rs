//! Ledger: the offset trackers of every partition this process owns, with ownership
//! generations. Pure (no Kafka, no I/O), generic over the partition key. Guarantees: a
//! completion counts only if it carries the generation its record was tracked under, so results
//! of requests for a partition that was revoked (even if assigned again since) are never
//! committed; commit positions come only from [`OffsetTracker::committable`].

use std::collections::HashMap;
use std::hash::Hash;

use crate::tracker::OffsetTracker;

/// One owned partition.
#[derive(Debug, Clone)]
struct Owned {
    /// Ownership generation, unique per assignment.
    generation: u64,
    /// Which offsets are done.
    tracker: OffsetTracker,
    /// Last position known committed (acknowledged by the broker).
    committed: Option<i64>,
}

/// All owned partitions and the in-flight counts that drive backpressure.
#[derive(Debug, Clone)]
pub struct Ledger<K> {
    /// Owned partitions.
    owned: HashMap<K, Owned>,
    /// Next generation number to hand out.
    next_generation: u64,
    /// Records tracked and not done, over all partitions.
    records: usize,
    /// Parts (notifications) tracked and not done, over all partitions.
    parts: u64,
}

impl<K> Default for Ledger<K> {
    fn default() -> Self {
        Ledger {
            owned: HashMap::new(),
            next_generation: 1,
            records: 0,
            parts: 0,
        }
    }
}

/// A ticket to complete one part of a tracked record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim<K> {
    /// The partition.
    pub key: K,
    /// The generation it was tracked under.
    pub generation: u64,
    /// The record's offset.
    pub offset: i64,
}

impl<K: Clone + Eq + Hash> Ledger<K> {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes ownership of `key` (a fresh generation; an existing entry is replaced).
    pub fn assign(&mut self, key: K) {
        self.revoke(&key);
        let generation = self.next_generation;
        self.next_generation += 1;
        self.owned.insert(
            key,
            Owned {
                generation,
                tracker: OffsetTracker::new(),
                committed: None,
            },
        );
    }

    /// Gives up `key`; returns the position worth committing for it (if beyond the last commit).
    /// Its pending parts stop counting; their completions will be ignored.
    pub fn revoke(&mut self, key: &K) -> Option<i64> {
        let owned = self.owned.remove(key)?;
        self.records -= owned.tracker.pending();
        self.parts -= owned.tracker.pending_parts();
        let pos = owned.tracker.committable()?;
        (Some(pos) > owned.committed).then_some(pos)
    }

    /// Whether `key` is owned.
    pub fn owns(&self, key: &K) -> bool {
        self.owned.contains_key(key)
    }

    /// Whether `claim` still refers to the current ownership of its partition.
    pub fn is_current(&self, key: &K, generation: u64) -> bool {
        self.owned.get(key).is_some_and(|o| o.generation == generation)
    }

    /// The current ownership generation of `key`, if owned.
    pub fn generation(&self, key: &K) -> Option<u64> {
        self.owned.get(key).map(|o| o.generation)
    }

    /// Owned partitions.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.owned.keys()
    }

    /// Number of owned partitions.
    pub fn len(&self) -> usize {
        self.owned.len()
    }

    /// True when no partition is owned.
    pub fn is_empty(&self) -> bool {
        self.owned.is_empty()
    }

    /// Tracks a record with `parts` parts; returns its generation, or None if `key` is not
    /// owned (the record must then be ignored: its new owner will read it).
    /// An offset at or below one already tracked (a re-delivery) is also refused: it is tracked
    /// already, under the record that saw it first.
    pub fn track(&mut self, key: &K, offset: i64, parts: u32) -> Option<u64> {
        let owned = self.owned.get_mut(key)?;
        owned.tracker.track(offset, parts).ok()?;
        if parts > 0 {
            self.records += 1;
            self.parts += u64::from(parts);
        }
        Some(owned.generation)
    }

    /// Completes one part; false when the claim is stale (partition revoked since) or unknown.
    pub fn complete(&mut self, claim: &Claim<K>) -> bool {
        let Some(owned) = self.owned.get_mut(&claim.key) else {
            return false;
        };
        if owned.generation != claim.generation {
            return false;
        }
        match owned.tracker.complete(claim.offset) {
            Ok(record_done) => {
                self.parts -= 1;
                if record_done {
                    self.records -= 1;
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Positions worth committing: (key, position) for every partition whose committable
    /// position is beyond its last acknowledged commit.
    pub fn to_commit(&self) -> Vec<(K, i64)> {
        self.owned
            .iter()
            .filter_map(|(k, o)| {
                let pos = o.tracker.committable()?;
                (Some(pos) > o.committed).then(|| (k.clone(), pos))
            })
            .collect()
    }

    /// Records that the broker acknowledged a commit of `pos` for `key`.
    pub fn committed(&mut self, key: &K, pos: i64) {
        if let Some(o) = self.owned.get_mut(key) {
            if Some(pos) > o.committed {
                o.committed = Some(pos);
            }
        }
    }

    /// The committable position of `key`, if any record was tracked.
    pub fn committable(&self, key: &K) -> Option<i64> {
        self.owned.get(key)?.tracker.committable()
    }

    /// Records in flight over all partitions.
    pub fn records_in_flight(&self) -> usize {
        self.records
    }

    /// Parts (notifications) in flight over all partitions.
    pub fn parts_in_flight(&self) -> u64 {
        self.parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_completions_are_ignored_after_revoke_and_reassign() {
        let mut l: Ledger<i32> = Ledger::new();
        l.assign(0);
        let g1 = l.track(&0, 5, 1).unwrap();
        assert_eq!(l.records_in_flight(), 1);
        assert_eq!(l.revoke(&0), Some(5));
        assert_eq!(l.records_in_flight(), 0);
        l.assign(0);
        let g2 = l.track(&0, 5, 1).unwrap();
        assert_ne!(g1, g2);
        assert!(!l.complete(&Claim {
            key: 0,
            generation: g1,
            offset: 5
        }));
        assert_eq!(l.to_commit(), vec![(0, 5)]);
        assert!(l.complete(&Claim {
            key: 0,
            generation: g2,
            offset: 5
        }));
        assert_eq!(l.to_commit(), vec![(0, 6)]);
        l.committed(&0, 6);
        assert!(l.to_commit().is_empty());
        assert_eq!(l.track(&1, 0, 1), None, "unowned partition");
    }
}
