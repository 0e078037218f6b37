//! Duplicates by cause: who owned which partition when (the group's member list), what the run
//! did to the owner (the timeline), and to which hand-off each repeat accept goes. Guarantees: the
//! attribution is pure and unit-tested; the watcher only reads the group.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use testkit::kafka::client_config;

use harness::now_ms;

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A signal the run sent to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    Kill,
    Term,
}

/// One signal, when and to whom.
#[derive(Debug, Clone)]
pub struct Sent {
    pub at_ms: u64,
    pub client_id: String,
    pub kind: SignalKind,
}

/// What the run did, as it did it: signals, the broker's downtimes (stop → answers again), and
/// the phases of the fault sequence (each lasts until the next begins).
#[derive(Debug, Default)]
pub struct Timeline {
    pub signals: Vec<Sent>,
    pub broker_down: Vec<(u64, u64)>,
    pub phases: Vec<(u64, String)>,
}

impl Timeline {
    /// The phase running at `ms` ("start" before the first).
    pub fn phase_at(&self, ms: u64) -> &str {
        self.phases
            .iter()
            .rev()
            .find(|(at, _)| *at <= ms)
            .map_or("start", |(_, name)| name.as_str())
    }

    /// Whether `ms` falls in a broker downtime or within `BROKER_SETTLE_MS` after it.
    pub fn broker_disturbed(&self, ms: u64) -> bool {
        self.broker_down
            .iter()
            .any(|&(from, to)| (from..=to + BROKER_SETTLE_MS).contains(&ms))
    }
}

/// A partition changing owner, as seen in the group's member list.
#[derive(Debug, Clone)]
pub struct Handoff {
    /// When the new owner was first seen.
    pub at_ms: u64,
    pub partition: i32,
    /// The previous owner's client id and when its member id was first seen.
    pub from_client: String,
    pub from_first_seen_ms: u64,
}

/// Why a partition changed owner (and, for a duplicate, why it was sent again). The table groups
/// them: clean hand-off (`Term`, `Join`), crash (`Kill`), other (`Broker`, `NoHandoff`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    /// The previous owner was SIGTERMed (scale down, the end): a clean hand-off.
    Term,
    /// The previous owner lived on (a member joined: scale up, a restart): a clean hand-off.
    Join,
    /// The previous owner was SIGKILLed: a crash.
    Kill,
    /// Within a broker restart (or 30 s after it): sessions lost, commits refused; for a
    /// duplicate, also one without a hand-off whose previous accept fell in that time.
    Broker,
    /// No hand-off of its partition since the previous accept, away from broker restarts: a
    /// retry whose answer was lost (a timeout, a closed connection).
    NoHandoff,
}

/// After the broker answers again, hand-offs within this long are still the broker's doing.
pub const BROKER_SETTLE_MS: u64 = 30_000;

/// Why `h` happened: a signal to the previous owner during its membership, else the broker's
/// downtime, else a member joining. Returns the signal's index for per-event counts.
pub fn handoff_cause(h: &Handoff, t: &Timeline) -> (Cause, Option<usize>) {
    let signalled =
        t.signals.iter().enumerate().rev().find(|(_, s)| {
            s.client_id == h.from_client && (h.from_first_seen_ms..=h.at_ms).contains(&s.at_ms)
        });
    if let Some((i, s)) = signalled {
        let cause = match s.kind {
            SignalKind::Kill => Cause::Kill,
            SignalKind::Term => Cause::Term,
        };
        return (cause, Some(i));
    }
    let cause = if t.broker_disturbed(h.at_ms) {
        Cause::Broker
    } else {
        Cause::Join
    };
    (cause, None)
}

/// Duplicates (known tickets accepted more than once) by cause.
#[derive(Debug, Default)]
pub struct DupReport {
    pub by_cause: HashMap<Cause, usize>,
    /// Duplicates that followed each signal (index into `Timeline::signals`).
    pub by_signal: HashMap<usize, usize>,
    /// `NoHandoff` duplicates by the phase of their previous accept (when the answer was lost).
    pub lost_by_phase: HashMap<String, usize>,
    pub handoffs_by_cause: HashMap<Cause, usize>,
}

/// Attributes every repeat accept of a known ticket to the earliest hand-off of the ticket's
/// partition between the previous accept and this one: that is where the knowledge that it was
/// done was lost (an owner that knew would have committed past it). None in between: the broker's
/// doing if the previous accept fell in a broker restart, else the answer to an earlier attempt
/// was lost and the request retried. Pure.
pub fn attribute_duplicates(
    accepted: &[(String, u64)],
    partition_of: &HashMap<String, i32>,
    handoffs: &[Handoff],
    timeline: &Timeline,
) -> DupReport {
    let mut report = DupReport::default();
    let causes: Vec<(Cause, Option<usize>)> = handoffs.iter().map(|h| handoff_cause(h, timeline)).collect();
    for (c, _) in &causes {
        *report.handoffs_by_cause.entry(*c).or_default() += 1;
    }
    let mut last: HashMap<&str, u64> = HashMap::new();
    for (ticket, at) in accepted {
        let Some(&p) = partition_of.get(ticket) else {
            continue;
        };
        let Some(prev) = last.insert(ticket.as_str(), *at) else {
            continue;
        };
        let first = handoffs
            .iter()
            .zip(&causes)
            .filter(|(h, _)| h.partition == p && h.at_ms > prev && h.at_ms <= *at)
            .min_by_key(|(h, _)| h.at_ms)
            .map(|(_, c)| *c);
        let (cause, signal) = match first {
            Some(c) => c,
            None if timeline.broker_disturbed(prev) => (Cause::Broker, None),
            None => {
                let phase = timeline.phase_at(prev).to_string();
                *report.lost_by_phase.entry(phase).or_default() += 1;
                (Cause::NoHandoff, None)
            }
        };
        *report.by_cause.entry(cause).or_default() += 1;
        if let Some(i) = signal {
            *report.by_signal.entry(i).or_default() += 1;
        }
    }
    report
}

/// The partitions of `topic` in a consumer-protocol assignment (version, `[topic, [partition]]`,
/// user data), as DescribeGroups returns it; `None` when it does not parse.
pub fn assigned_partitions(mut b: &[u8], topic: &str) -> Option<Vec<i32>> {
    pub fn take<const N: usize>(b: &mut &[u8]) -> Option<[u8; N]> {
        let (head, tail) = b.split_first_chunk::<N>()?;
        *b = tail;
        Some(*head)
    }
    let _version = i16::from_be_bytes(take(&mut b)?);
    let topics = i32::from_be_bytes(take(&mut b)?);
    let mut out = Vec::new();
    for _ in 0..topics.max(0) {
        let len = usize::try_from(i16::from_be_bytes(take(&mut b)?)).ok()?;
        let name = b.get(..len)?;
        b = &b[len..];
        for _ in 0..i32::from_be_bytes(take(&mut b)?).max(0) {
            let p = i32::from_be_bytes(take(&mut b)?);
            if name == topic.as_bytes() {
                out.push(p);
            }
        }
    }
    Some(out)
}

/// Watches the group's member list (DescribeGroups, every 250 ms, stable states only) until
/// `stop`, and returns every change of a partition's owner (member id).
pub fn watch_owners(bs: String, group: String, topic: String, stop: Arc<AtomicBool>) -> Vec<Handoff> {
    let c: BaseConsumer = client_config(&bs).create().expect("group watcher");
    // partition -> (member id, client id); member id -> first seen
    let mut owner: HashMap<i32, (String, String)> = HashMap::new();
    let mut first_seen: HashMap<String, u64> = HashMap::new();
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if let Ok(list) = c.fetch_group_list(Some(&group), Duration::from_secs(2)) {
            let now = now_ms();
            for g in list.groups().iter().filter(|g| g.state() == "Stable") {
                for m in g.members() {
                    first_seen.entry(m.id().to_string()).or_insert(now);
                    let parts = m.assignment().and_then(|a| assigned_partitions(a, &topic));
                    for p in parts.unwrap_or_default() {
                        let new = (m.id().to_string(), m.client_id().to_string());
                        match owner.insert(p, new) {
                            Some((member, client)) if member != m.id() => out.push(Handoff {
                                at_ms: now,
                                partition: p,
                                from_first_seen_ms: first_seen.get(&member).copied().unwrap_or(0),
                                from_client: client,
                            }),
                            _ => {}
                        }
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut b = 1i16.to_be_bytes().to_vec();
        b.extend((topics.len() as i32).to_be_bytes());
        for (t, ps) in topics {
            b.extend((t.len() as i16).to_be_bytes());
            b.extend(t.as_bytes());
            b.extend((ps.len() as i32).to_be_bytes());
            for p in *ps {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend(3i32.to_be_bytes());
        b.extend(b"abc");
        b
    }

    #[test]
    fn assignment_bytes_parse_per_topic() {
        let b = assignment(&[("in", &[0, 3]), ("other", &[1])]);
        assert_eq!(assigned_partitions(&b, "in"), Some(vec![0, 3]));
        assert_eq!(assigned_partitions(&b, "other"), Some(vec![1]));
        assert_eq!(assigned_partitions(&b, "none"), Some(vec![]));
        assert_eq!(assigned_partitions(&b[..9], "in"), None, "truncated");
    }

    fn handoff(at_ms: u64, partition: i32, from: &str, first_seen: u64) -> Handoff {
        Handoff {
            at_ms,
            partition,
            from_client: from.into(),
            from_first_seen_ms: first_seen,
        }
    }

    #[test]
    fn duplicates_go_to_the_first_handoff_of_their_partition_after_the_previous_accept() {
        let timeline = Timeline {
            signals: vec![
                Sent {
                    at_ms: 100,
                    client_id: "chaos-A".into(),
                    kind: SignalKind::Kill,
                },
                Sent {
                    at_ms: 300,
                    client_id: "chaos-B".into(),
                    kind: SignalKind::Term,
                },
            ],
            broker_down: vec![(500, 600)],
            phases: vec![(0, "calm".into()), (40_000, "slow".into())],
        };
        let handoffs = [
            handoff(110, 0, "chaos-A", 10), // A killed at 100: crash
            handoff(200, 0, "chaos-C", 20), // C alive: a join
            handoff(310, 1, "chaos-B", 20), // B SIGTERMed at 300: clean
            handoff(620, 1, "chaos-C", 20), // within the broker's settle time
        ];
        let partition_of = HashMap::from([
            ("a".to_string(), 0),
            ("b".to_string(), 1),
            ("c".to_string(), 1),
            ("d".to_string(), 2),
            ("e".to_string(), 3),
            ("f".to_string(), 3),
        ]);
        let at = |t: &str, ms: u64| (t.to_string(), ms);
        let accepted = [
            at("a", 50),
            at("a", 250), // two hand-offs of 0 in between: the first (the crash) counts
            at("a", 260), // none in between
            at("b", 305),
            at("b", 320), // the SIGTERM hand-off of 1
            at("c", 315),
            at("c", 700), // the broker hand-off of 1
            at("d", 1),
            at("d", 900), // partition 2 never moved
            at("e", 550),
            at("e", 560), // no hand-off, but within the broker's downtime
            at("f", 40_100),
            at("f", 40_200), // no hand-off, in the slow phase
            at("unknown", 1),
            at("unknown", 2), // not a known ticket: not counted
        ];
        let r = attribute_duplicates(&accepted, &partition_of, &handoffs, &timeline);
        assert_eq!(
            r.by_cause,
            HashMap::from([
                (Cause::Kill, 1),
                (Cause::NoHandoff, 3),
                (Cause::Term, 1),
                (Cause::Broker, 2),
            ])
        );
        assert_eq!(
            r.lost_by_phase,
            HashMap::from([("calm".to_string(), 2), ("slow".to_string(), 1)])
        );
        assert_eq!(r.by_signal, HashMap::from([(0, 1), (1, 1)]));
        assert_eq!(
            r.handoffs_by_cause,
            HashMap::from([
                (Cause::Kill, 1),
                (Cause::Join, 1),
                (Cause::Term, 1),
                (Cause::Broker, 1)
            ])
        );
    }
}
