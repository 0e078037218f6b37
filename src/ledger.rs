//! Ledger: the offset trackers of every partition this process owns, with ownership
//! generations. Pure (no Kafka, no I/O), generic over the partition key. Guarantees: a
//! completion counts only if it carries the generation its record was tracked under, so results
//! of requests for a partition that was revoked (even if assigned again since) are never
//! committed; commit positions come only from [`OffsetTracker::committable`], and done maps
//! only from [`OffsetTracker::done_map`] (seeded offsets included, so a map survives hand-offs).
//! A claim's [`Ownership`] answers "still ours?" without the ledger's lock; it is a hint for
//! abandoning work early, never what a completion is judged by.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::offsetmap::DoneMap;
use crate::tracker::{OffsetTracker, Tracked};
use crate::util::FastMap;

/// Whether one assignment of a partition still holds, read without the ledger's lock: true from
/// [`Ledger::assign`] until the partition is revoked or assigned anew. Each record's claim
/// carries its assignment's, so the send path asks "still ours?" (twice per notification) with
/// one atomic load instead of the ledger's lock and a hash of the topic name
/// (docs/performance.md, "The fifteenth round"). It can read true an instant after the
/// revocation, as the lock could just before it: the completion is then refused by generation.
/// (So [`Ledger`] is not `Clone`: a copy would share its flags with the original.)
#[derive(Debug, Clone)]
pub struct Ownership(Arc<AtomicBool>);

impl Ownership {
    fn new() -> Self {
        Ownership(Arc::new(AtomicBool::new(true)))
    }

    /// True until the assignment ends.
    pub fn is_current(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn end(&self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Two handles are equal when they are the same assignment's.
impl PartialEq for Ownership {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Ownership {}

/// One owned partition.
#[derive(Debug)]
struct Owned {
    /// Ownership generation, unique per assignment.
    generation: u64,
    /// This assignment's flag, ended when it ends.
    ownership: Ownership,
    /// Which offsets are done.
    tracker: OffsetTracker,
    /// Last position known committed (acknowledged by the broker).
    committed: Option<i64>,
    /// Tracker revision of the last commit point acknowledged by the broker.
    acked_revision: Option<u64>,
}

impl Owned {
    /// The commit point of this partition if its position or map changed since the last
    /// acknowledged [`CommitPoint`].
    fn point<K: Clone>(&self, key: &K) -> Option<CommitPoint<K>> {
        let revision = self.tracker.revision();
        if self.acked_revision.is_some_and(|a| a >= revision) {
            return None;
        }
        Some(CommitPoint {
            key: key.clone(),
            done: self.tracker.done_map()?,
            generation: self.generation,
            revision,
        })
    }
}

/// What [`Ledger::track_record`] made of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// Tracked under this generation: send its parts, complete them with a [`Claim`].
    Tracked(u64),
    /// In the partition's seeded done map: delivered by a previous owner. Done; send nothing.
    AlreadyDelivered,
    /// The partition is not owned: ignore the record (its new owner will read it).
    NotOwned,
    /// At or below an offset already tracked (a re-delivery): tracked already, ignore it.
    Redelivery,
}

/// A position worth committing for one partition, with its done map (whose base is the
/// position). Hand it back to [`Ledger::acknowledge`] once the broker acknowledged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPoint<K> {
    /// The partition.
    pub key: K,
    /// The done offsets above the position; `done.base()` is the position to commit.
    pub done: DoneMap,
    generation: u64,
    revision: u64,
}

impl<K> CommitPoint<K> {
    /// The position to commit (the next offset to read).
    pub fn position(&self) -> i64 {
        self.done.base()
    }
}

/// All owned partitions and the in-flight counts that drive backpressure.
#[derive(Debug)]
pub struct Ledger<K> {
    /// Owned partitions (foldhash: a lookup per record and per completion, on keys we made).
    owned: FastMap<K, Owned>,
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
            owned: FastMap::default(),
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
    /// The assignment it was tracked under, readable without the lock.
    pub ownership: Ownership,
}

impl<K> Claim<K> {
    /// Whether the assignment this claim was tracked under still holds (no lock taken).
    pub fn is_current(&self) -> bool {
        self.ownership.is_current()
    }

    /// A claim for `generation` whose ownership flag no ledger ends (tests build stale and
    /// fresh claims by hand; only the generation decides a completion).
    #[cfg(test)]
    pub(crate) fn by_hand(key: K, generation: u64, offset: i64) -> Self {
        Claim {
            key,
            generation,
            offset,
            ownership: Ownership::new(),
        }
    }
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
                ownership: Ownership::new(),
                tracker: OffsetTracker::new(),
                committed: None,
                acked_revision: None,
            },
        );
    }

    /// Seeds the freshly assigned `key` with the done map read back with its committed offset
    /// (see [`crate::offsetmap::decode`]); false (and nothing seeded) when `key` is not owned or
    /// has tracked a record already.
    pub fn seed(&mut self, key: &K, done: &DoneMap) -> bool {
        self.owned
            .get_mut(key)
            .is_some_and(|o| o.tracker.seed(done).is_ok())
    }

    /// Gives up `key`; returns the position worth committing for it (if beyond the last commit).
    /// Its pending parts stop counting; their completions will be ignored.
    pub fn revoke(&mut self, key: &K) -> Option<i64> {
        let owned = self.remove(key)?;
        let pos = owned.tracker.committable()?;
        (Some(pos) > owned.committed).then_some(pos)
    }

    /// [`Ledger::revoke`] with the done map: the commit point worth committing for `key` (if its
    /// position or map changed since the last acknowledged commit point).
    pub fn revoke_point(&mut self, key: &K) -> Option<CommitPoint<K>> {
        self.remove(key)?.point(key)
    }

    fn remove(&mut self, key: &K) -> Option<Owned> {
        let owned = self.owned.remove(key)?;
        owned.ownership.end();
        self.records -= owned.tracker.pending();
        self.parts -= owned.tracker.pending_parts();
        Some(owned)
    }

    /// Whether `key` is owned.
    pub fn owns(&self, key: &K) -> bool {
        self.owned.contains_key(key)
    }

    /// The current ownership generation of `key`, if owned.
    pub fn generation(&self, key: &K) -> Option<u64> {
        self.owned.get(key).map(|o| o.generation)
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
    /// already, under the record that saw it first. So is an offset in the seeded done map
    /// (delivered already); [`Ledger::track_record`] tells these cases apart.
    pub fn track(&mut self, key: &K, offset: i64, parts: u32) -> Option<u64> {
        match self.track_record(key, offset, parts) {
            Track::Tracked(generation) => Some(generation),
            Track::AlreadyDelivered | Track::NotOwned | Track::Redelivery => None,
        }
    }

    /// Tracks a record with `parts` parts, saying what to do with it (see `Track`).
    pub fn track_record(&mut self, key: &K, offset: i64, parts: u32) -> Track {
        match self.track_owned(key, offset, parts) {
            Ok(owned) => Track::Tracked(owned.generation),
            Err(other) => other,
        }
    }

    /// [`Ledger::track_record`] with the claim to complete its parts by, or what the record was
    /// made of when it is not tracked.
    pub fn claim(&mut self, key: &K, offset: i64, parts: u32) -> Result<Claim<K>, Track> {
        let owned = self.track_owned(key, offset, parts)?;
        Ok(Claim {
            key: key.clone(),
            generation: owned.generation,
            offset,
            ownership: owned.ownership.clone(),
        })
    }

    /// Tracks a record in its partition (one lookup), which it returns; or why not.
    fn track_owned(&mut self, key: &K, offset: i64, parts: u32) -> Result<&Owned, Track> {
        let owned = self.owned.get_mut(key).ok_or(Track::NotOwned)?;
        match owned.tracker.track(offset, parts) {
            Err(_) => Err(Track::Redelivery),
            Ok(Tracked::AlreadyDelivered) => Err(Track::AlreadyDelivered),
            Ok(Tracked::Fresh) => {
                if parts > 0 {
                    self.records += 1;
                    self.parts += u64::from(parts);
                }
                Ok(owned)
            }
        }
    }

    /// Adds `extra` parts to a claimed record still in flight (its notifications, known only
    /// once it is decoded); false when the claim is stale (partition revoked since) or unknown.
    pub fn add_parts(&mut self, claim: &Claim<K>, extra: u32) -> bool {
        let Some(owned) = self.owned.get_mut(&claim.key) else {
            return false;
        };
        if owned.generation != claim.generation || owned.tracker.add_parts(claim.offset, extra).is_err() {
            return false;
        }
        self.parts += u64::from(extra);
        true
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
    /// position is beyond its last acknowledged commit (the tests' and `benches/tracker.rs`' view
    /// of [`Ledger::commit_points`]).
    pub fn to_commit(&self) -> Vec<(K, i64)> {
        self.owned
            .iter()
            .filter_map(|(k, o)| {
                let pos = o.tracker.committable()?;
                (Some(pos) > o.committed).then(|| (k.clone(), pos))
            })
            .collect()
    }

    /// Commit points: one for every partition whose position or done map changed since its
    /// last acknowledged commit point (and that has tracked a record).
    pub fn commit_points(&self) -> Vec<CommitPoint<K>> {
        self.owned.iter().filter_map(|(k, o)| o.point(k)).collect()
    }

    /// The read-back check: every owned partition whose committed offset read back from the
    /// broker (`committed`; absent: none) is below its committable position becomes due again at
    /// the next commit, whatever the ledger saw acknowledged. Returns the partitions the broker
    /// had acknowledged further than it now says (moved back by a late commit: another member's,
    /// or a retried one of ours), with (read back, acknowledged).
    pub fn reconcile(&mut self, committed: &HashMap<K, i64>) -> Vec<(K, Option<i64>, i64)> {
        let mut moved_back = Vec::new();
        for (k, o) in &mut self.owned {
            let Some(pos) = o.tracker.committable() else {
                continue;
            };
            let broker = committed.get(k).copied();
            if broker >= Some(pos) {
                continue;
            }
            o.acked_revision = None;
            if let Some(acked) = o.committed.filter(|&a| Some(a) > broker) {
                moved_back.push((k.clone(), broker, acked));
                o.committed = broker;
            }
        }
        moved_back
    }

    /// Records that the broker acknowledged `point` (ignored if its partition was revoked since).
    pub fn acknowledge(&mut self, point: &CommitPoint<K>) {
        if let Some(o) = self.owned.get_mut(&point.key) {
            if o.generation == point.generation {
                o.acked_revision = o.acked_revision.max(Some(point.revision));
                if Some(point.position()) > o.committed {
                    o.committed = Some(point.position());
                }
            }
        }
    }

    /// Records that the broker acknowledged a commit of `pos` for `key` (the tests' shortcut for
    /// [`Ledger::acknowledge`]).
    #[cfg(test)]
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
    use crate::offsetmap::DoneMap;

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
        assert!(!l.complete(&Claim::by_hand(0, g1, 5)));
        assert_eq!(l.to_commit(), vec![(0, 5)]);
        assert!(l.complete(&Claim::by_hand(0, g2, 5)));
        assert_eq!(l.to_commit(), vec![(0, 6)]);
        l.committed(&0, 6);
        assert!(l.to_commit().is_empty());
        assert_eq!(l.track(&1, 0, 1), None, "unowned partition");
    }

    #[test]
    fn a_claims_ownership_holds_until_its_partition_is_revoked_or_assigned_anew() {
        let mut l: Ledger<i32> = Ledger::new();
        assert_eq!(l.claim(&0, 1, 1), Err(Track::NotOwned));
        l.assign(0);
        l.assign(1);
        let first = l.claim(&0, 1, 1).unwrap();
        let other = l.claim(&1, 1, 1).unwrap();
        let second = l.claim(&0, 2, 1).unwrap();
        assert_eq!(first.ownership, second.ownership, "one assignment, one flag");
        assert_eq!(l.claim(&0, 2, 1), Err(Track::Redelivery));
        assert!(first.is_current() && second.is_current());
        assert!(l.complete(&first), "completing a part ends nothing");
        assert!(second.is_current());
        l.revoke(&0);
        assert!(!first.is_current() && !second.is_current());
        assert!(other.is_current(), "another partition's assignment holds");
        l.assign(0);
        let third = l.claim(&0, 3, 1).unwrap();
        assert!(third.is_current() && !second.is_current());
        l.assign(0);
        assert!(
            !third.is_current(),
            "assigned anew: the old assignment's claims are not current"
        );
        assert!(
            !l.complete(&third),
            "and their completions are refused by generation"
        );
    }

    #[test]
    fn added_parts_count_in_flight_hold_the_record_and_are_refused_once_stale() {
        let mut l: Ledger<i32> = Ledger::new();
        l.assign(0);
        let g1 = l.track(&0, 5, 1).unwrap();
        let claim = Claim::by_hand(0, g1, 5);
        assert!(l.add_parts(&claim, 2), "the record's one part becomes three");
        assert_eq!((l.records_in_flight(), l.parts_in_flight()), (1, 3));
        assert!(l.complete(&claim) && l.complete(&claim));
        assert_eq!(l.to_commit(), vec![(0, 5)], "one part still holds the record");
        assert!(l.complete(&claim));
        assert_eq!((l.records_in_flight(), l.parts_in_flight()), (0, 0));
        assert_eq!(l.to_commit(), vec![(0, 6)]);
        assert!(!l.add_parts(&claim, 1), "done: nothing to add to");

        let g2 = l.track(&0, 6, 1).unwrap();
        let stale = Claim::by_hand(0, g2, 6);
        assert_eq!(l.revoke(&0), Some(6));
        l.assign(0);
        assert!(!l.add_parts(&stale, 4), "revoked since");
        assert_eq!(l.parts_in_flight(), 0);
    }

    #[test]
    fn seeded_offsets_are_already_delivered_and_commit_points_carry_the_map() {
        let mut l: Ledger<i32> = Ledger::new();
        l.assign(0);
        assert!(l.seed(&0, &DoneMap::from_offsets(10, [11, 13])));
        assert!(!l.seed(&1, &DoneMap::empty(0)), "unowned partition");
        assert!(
            l.commit_points().is_empty(),
            "nothing read yet: the broker keeps its map"
        );
        let g = match l.track_record(&0, 10, 1) {
            Track::Tracked(g) => g,
            other => panic!("{other:?}"),
        };
        assert_eq!(l.track_record(&0, 11, 2), Track::AlreadyDelivered);
        assert_eq!(
            l.records_in_flight(),
            1,
            "an already delivered record is not in flight"
        );
        assert_eq!(l.track_record(&0, 11, 1), Track::Redelivery);
        assert_eq!(l.track_record(&1, 11, 1), Track::NotOwned);
        assert!(!l.seed(&0, &DoneMap::empty(10)), "tracking started");
        let points = l.commit_points();
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].position(), 10);
        assert_eq!(points[0].done, DoneMap::from_offsets(10, [11, 13]));
        l.acknowledge(&points[0]);
        assert!(
            l.commit_points().is_empty(),
            "nothing changed since the acknowledged commit"
        );
        assert_eq!(l.track_record(&0, 12, 1), Track::Tracked(g));
        assert!(
            l.commit_points().is_empty(),
            "a pending record right after changes nothing"
        );
        assert!(l.complete(&Claim::by_hand(0, g, 12)));
        let points = l.commit_points();
        assert_eq!(points[0].position(), 10, "position unchanged, map changed");
        assert_eq!(points[0].done, DoneMap::from_offsets(10, [11, 12, 13]));
        assert!(l.complete(&Claim::by_hand(0, g, 10)));
        let point = l
            .revoke_point(&0)
            .expect("changed since the last acknowledgement");
        assert_eq!((point.position(), point.done.is_empty()), (14, true));
        assert_eq!(l.track(&0, 14, 1), None);
    }

    /// A partition acknowledged at 3 that reads back lower (moved back by a late commit) is due
    /// again, although nothing changed since the acknowledgement; at its position it is not.
    #[test]
    fn a_partition_moved_back_after_its_acknowledgement_is_due_again() {
        let mut l: Ledger<i32> = Ledger::new();
        l.assign(0);
        l.assign(1);
        for o in 0..3 {
            let g = l.track(&0, o, 1).unwrap();
            assert!(l.complete(&Claim::by_hand(0, g, o)));
        }
        for point in l.commit_points() {
            l.acknowledge(&point);
        }
        assert!(l.commit_points().is_empty(), "acknowledged: nothing due");
        assert!(l.reconcile(&HashMap::from([(0, 3)])).is_empty());
        assert!(l.commit_points().is_empty(), "at its position: still nothing due");
        assert_eq!(l.reconcile(&HashMap::from([(0, 1)])), vec![(0, Some(1), 3)]);
        let due = l.commit_points();
        assert_eq!(due.len(), 1, "moved back: due again");
        assert_eq!((due[0].key, due[0].position()), (0, 3));
        l.acknowledge(&due[0]);
        assert!(l.commit_points().is_empty());
        assert_eq!(
            l.reconcile(&HashMap::new()),
            vec![(0, None, 3)],
            "nothing committed at all"
        );
        assert_eq!(l.commit_points().len(), 1);
    }

    #[test]
    fn old_track_skips_seeded_offsets_and_stale_acknowledgements_are_ignored() {
        let mut l: Ledger<i32> = Ledger::new();
        l.assign(0);
        assert!(l.seed(&0, &DoneMap::from_offsets(0, [1])));
        assert!(l.track(&0, 0, 1).is_some());
        assert_eq!(l.track(&0, 1, 1), None, "already delivered: nothing to send");
        let stale = l.commit_points().remove(0);
        l.assign(0);
        l.track(&0, 0, 0).unwrap();
        l.acknowledge(&stale);
        assert_eq!(
            l.commit_points().len(),
            1,
            "an acknowledgement from an earlier ownership"
        );
        assert_eq!(l.to_commit(), vec![(0, 1)]);
    }
}
