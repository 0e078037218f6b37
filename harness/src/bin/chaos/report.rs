//! The count at the end: what the run saw (`Outcome`) against what it must hold, as the table of
//! docs/chaos.md. Guarantees: every check of the table decides the verdict; nothing is sampled.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use crate::duplicates::{attribute_duplicates, Cause, DupReport, Handoff, SignalKind, Timeline};
use crate::instance::Instance;
use crate::load::Produced;
use crate::readback::{Parked, Tp};
use crate::session::Session;
use crate::{say, Plan, BURST, DLQ_SEGMENT_MS, DOOR_JITTER, RATE};

/// What the run saw, for counting.
pub struct Outcome {
    pub plan: Plan,
    pub group: String,
    pub produced: Produced,
    /// Tickets that must reach the stand-in.
    pub expected: HashSet<String>,
    pub parked: Vec<Parked>,
    pub drained: bool,
    pub at_end: bool,
    /// How far each (topic, partition) of both source topics is behind its end at exit.
    pub behind: HashMap<Tp, i64>,
    /// Every add-to-cart accept at the stand-in: (ticket, ms since the epoch), in arrival order.
    pub accepted: Vec<(String, u64)>,
    /// Payments accepted at the stand-in, by order id.
    pub payments: HashMap<String, usize>,
    /// The most arrivals in one second at the stand-in, and when that second began (µs).
    pub peak_1s: (usize, u64),
    pub status: std::collections::BTreeMap<u16, u64>,
    pub handoffs: Vec<Handoff>,
    pub dlq_read_after: Duration,
    /// When the load began (ms since the epoch) and how long it all took.
    pub started_ms: u64,
    pub elapsed: Duration,
}

/// What the logs of every incarnation hold that they must not: lines with the SASL password, with
/// the payment Api-Key, with a planted key (`cust-…`/`sess-…`, the corpus's too); and all lines.
pub struct LogScan {
    pub pw_hits: usize,
    pub api_key_hits: usize,
    pub key_hits: usize,
    pub lines: usize,
}

pub fn scan_logs(insts: &[Instance], password: &str, api_key: &str) -> LogScan {
    let (mut pw_hits, mut api_key_hits, mut key_hits, mut lines) = (0, 0, 0, 0);
    for log in insts.iter().flat_map(|i| i.logs.iter()) {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines() {
            lines += 1;
            if line.contains(password) {
                pw_hits += 1;
            }
            if line.contains(api_key) {
                api_key_hits += 1;
            }
            if line.contains("cust-") || line.contains("sess-") {
                if key_hits == 0 {
                    say(format!("personal key in {}: {:.300}", log.display(), line));
                }
                key_hits += 1;
            }
        }
    }
    LogScan {
        pw_hits,
        api_key_hits,
        key_hits,
        lines,
    }
}

/// Orders (of `orders`, id → partition) whose payment never reached the stand-in (`paid`, id →
/// accepts), sorted, and how many payments were accepted more than once. Pure.
pub fn payment_gaps<'a>(
    orders: &'a HashMap<String, i32>,
    paid: &HashMap<String, usize>,
) -> (Vec<&'a String>, usize) {
    let mut missing: Vec<&String> = orders.keys().filter(|id| !paid.contains_key(*id)).collect();
    missing.sort();
    let dups = orders
        .keys()
        .map(|id| paid.get(id).copied().unwrap_or(1).saturating_sub(1))
        .sum();
    (missing, dups)
}

pub fn verdict(ok: bool, good: &'static str) -> &'static str {
    if ok {
        good
    } else {
        "FAIL"
    }
}

/// One row of the table: what, the figure, the verdict ("" when it is not a check).
type Row = (&'static str, String, &'static str);

/// Every figure of the table, counted once from what the run saw.
struct Counts<'a> {
    /// Known tickets (of the records produced), and those accepted twice or more.
    known: usize,
    dups: usize,
    /// Expected tickets the stand-in never accepted.
    missing: Vec<&'a String>,
    by: DupReport,
    /// The phases that lost the most answers, as text (empty when none).
    lost_phases: String,
    missing_hostile: Vec<&'a String>,
    poison: Poison,
    unexpected_parked: usize,
    dlq_dups: usize,
    assigned: usize,
    revoked: usize,
    logs: LogScan,
    missing_payments: Vec<&'a String>,
    payment_dups: usize,
    orders: usize,
    behind: i64,
    /// The most requests any 1 s at the stand-in may hold.
    quota: usize,
    retention_sound: bool,
}

/// What became of the poison records.
struct Poison {
    /// Parked with status 413, of `total`.
    parked_413: usize,
    total: usize,
    /// The statuses they were parked with.
    statuses: HashSet<String>,
    /// Their partitions, and how many of them are committed to the end.
    partitions: usize,
    partitions_done: usize,
}

impl Counts<'_> {
    fn n(&self, c: Cause) -> usize {
        self.by.by_cause.get(&c).copied().unwrap_or(0)
    }

    fn handoffs(&self, c: Cause) -> usize {
        self.by.handoffs_by_cause.get(&c).copied().unwrap_or(0)
    }

    /// The most duplicates that followed one signal of `kind`.
    fn worst(&self, timeline: &Timeline, kind: SignalKind) -> usize {
        self.by
            .by_signal
            .iter()
            .filter(|(i, _)| timeline.signals[**i].kind == kind)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0)
    }

    /// Whether every check of the table held.
    fn ok(&self, o: &Outcome, s: &Session) -> bool {
        [
            self.missing.is_empty(),
            self.missing_payments.is_empty(),
            self.logs.api_key_hits == 0,
            self.missing_hostile.is_empty(),
            self.poison.parked_413 == self.poison.total,
            self.poison.partitions_done == self.poison.partitions,
            o.peak_1s.0 <= self.quota,
            self.logs.pw_hits == 0 && self.logs.key_hits == 0,
            o.drained,
            o.at_end && self.behind == 0,
            s.unclean_exits == 0,
            self.retention_sound,
        ]
        .iter()
        .all(|c| *c)
    }
}

fn pct(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 * 100.0 / b as f64
    }
}

/// Counts what the run saw.
fn count<'a>(o: &'a Outcome, s: &Session, timeline: &Timeline) -> Counts<'a> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (t, _) in &o.accepted {
        *counts.entry(t.as_str()).or_default() += 1;
    }
    let missing = o
        .expected
        .iter()
        .filter(|t| !counts.contains_key(t.as_str()))
        .collect();
    let dups = o
        .produced
        .tickets
        .keys()
        .map(|t| counts.get(t.as_str()).copied().unwrap_or(1).saturating_sub(1))
        .sum();
    let by = attribute_duplicates(&o.accepted, &o.produced.tickets, &o.handoffs, timeline);
    let lost_phases = lost_phases(&by);
    let parked_set: HashSet<(i32, i64)> = o.parked.iter().map(|p| p.source).collect();
    let missing_hostile = o
        .produced
        .invalid
        .iter()
        .filter(|(k, _)| !parked_set.contains(k))
        .map(|(_, n)| n)
        .collect();
    let unexpected_parked = parked_set
        .iter()
        .filter(|k| !o.produced.invalid.contains_key(k) && !o.produced.poison.contains(k))
        .count();
    let (mut assigned, mut revoked) = (0, 0);
    for i in &s.insts {
        let (a, r) = i.rebalance_lines();
        assigned += a;
        revoked += r;
    }
    let (missing_payments, payment_dups) = payment_gaps(&o.produced.orders, &o.payments);
    Counts {
        known: o.produced.tickets.len(),
        dups,
        missing,
        by,
        lost_phases,
        missing_hostile,
        poison: poison(o, s),
        unexpected_parked,
        dlq_dups: o.parked.len() - parked_set.len(),
        assigned,
        revoked,
        logs: scan_logs(&s.insts, &s.password, &s.api_key),
        missing_payments,
        payment_dups,
        orders: o.produced.orders.len(),
        behind: o.behind.values().sum(),
        // Stamped at the stand-in (this process, on cores shared with the sinks and the broker):
        // a request that left at t may be stamped up to DOOR_JITTER later while a later one is
        // stamped at once, so the densest second may hold what left in 1 + DOOR_JITTER seconds.
        quota: BURST + (RATE as f64 * (1.0 + DOOR_JITTER)).floor() as usize,
        retention_sound: o.dlq_read_after < o.plan.dlq_retention,
    }
}

/// The three phases that lost the most answers, as " (n in "phase", ...)"; empty when none.
fn lost_phases(by: &DupReport) -> String {
    let mut lost: Vec<(&String, &usize)> = by.lost_by_phase.iter().collect();
    if lost.is_empty() {
        return String::new();
    }
    lost.sort_by(|a, b| b.1.cmp(a.1));
    let top: Vec<String> = lost
        .iter()
        .take(3)
        .map(|(p, n)| format!("{n} in \"{p}\""))
        .collect();
    format!(" ({})", top.join(", "))
}

fn poison(o: &Outcome, s: &Session) -> Poison {
    let poison = &o.produced.poison;
    let parked_413 = poison
        .iter()
        .filter(|at| {
            o.parked
                .iter()
                .any(|p| p.source == **at && p.status.as_deref() == Some("413"))
        })
        .count();
    let statuses = o
        .parked
        .iter()
        .filter(|p| poison.contains(&p.source))
        .map(|p| p.status.clone().unwrap_or_else(|| "none".into()))
        .collect();
    let parts: HashSet<i32> = poison.iter().map(|p| p.0).collect();
    let partitions_done = parts
        .iter()
        .filter(|p| o.behind.get(&(s.topic.clone(), **p)) == Some(&0))
        .count();
    Poison {
        parked_413,
        total: poison.len(),
        statuses,
        partitions: parts.len(),
        partitions_done,
    }
}

/// Counts, prints the table, and says whether every check held.
pub fn report(o: &Outcome, s: &Session, timeline: &Timeline, log_dir: &Path) -> bool {
    let c = count(o, s, timeline);
    let ok = c.ok(o, s);
    let mut rows = delivery_rows(&c, o, timeline);
    rows.extend(duplicate_rows(&c, timeline));
    rows.extend(operation_rows(&c, o, s));
    print_table(&format!("chaos run ({}), group {}", o.plan.name, o.group), &rows);
    let first_20 = |what: &str, list: &[&String]| {
        if !list.is_empty() {
            println!("{what}: {:?}", &list[..list.len().min(20)]);
        }
    };
    first_20("missing hostile records", &c.missing_hostile);
    first_20("missing tickets (first 20)", &c.missing);
    first_20("missing payments (first 20 orders)", &c.missing_payments);
    println!(
        "\n{} — logs and configs in {}",
        if ok { "PASS" } else { "FAIL" },
        log_dir.display()
    );
    ok
}

/// The rows of what arrived: tickets, payments, parked records, the quota.
fn delivery_rows(c: &Counts, o: &Outcome, timeline: &Timeline) -> Vec<Row> {
    let p = &c.poison;
    vec![
        (
            "records produced (known tickets + hostile + poison; orders)",
            format!(
                "{} + {} + {}; {}",
                c.known, o.produced.hostile, p.total, c.orders
            ),
            "",
        ),
        (
            "produce failures (not expected)",
            o.produced.failed.to_string(),
            "",
        ),
        (
            "expected tickets missing at the stand-in",
            format!("{} of {}", c.missing.len(), o.expected.len()),
            verdict(c.missing.is_empty(), "ok (must be 0)"),
        ),
        (
            "expected payments missing at the stand-in (route payments: one per order, Api-Key checked)",
            format!("{} of {}", c.missing_payments.len(), c.orders),
            verdict(c.missing_payments.is_empty(), "ok (must be 0)"),
        ),
        (
            "hostile records missing from the dead-letter topic (source timestamps 1 h / 3 d old)",
            format!("{} of {}", c.missing_hostile.len(), o.produced.invalid.len()),
            verdict(c.missing_hostile.is_empty(), "ok (must be 0)"),
        ),
        (
            "poison records (ticket over the 512 KiB body limit, stamped old) parked with status 413",
            format!(
                "{} of {} (statuses parked: {:?})",
                p.parked_413, p.total, p.statuses
            ),
            verdict(p.parked_413 == p.total, "ok (must be all)"),
        ),
        (
            "  answers of 413 per poison record (1: parked at the first)",
            format!(
                "{:.1}",
                o.status.get(&413).copied().unwrap_or(0) as f64 / p.total.max(1) as f64
            ),
            "",
        ),
        (
            "partitions of poison records committed to the end",
            format!("{} of {}", p.partitions_done, p.partitions),
            verdict(p.partitions_done == p.partitions, "ok (must be all)"),
        ),
        (
            "most requests at the stand-in in any 1 s",
            format!(
                "{} (burst {BURST} + quota {RATE} × (1 s + {DOOR_JITTER} s stamping jitter) = {}), at {:.0} s, in \"{}\"",
                o.peak_1s.0,
                c.quota,
                (o.peak_1s.1 / 1000).saturating_sub(o.started_ms) as f64 / 1000.0,
                timeline.phase_at(o.peak_1s.1 / 1000)
            ),
            verdict(o.peak_1s.0 <= c.quota, "ok (at most burst + quota × 1.1 s)"),
        ),
    ]
}

/// The rows of what arrived more than once, by cause.
fn duplicate_rows(c: &Counts, timeline: &Timeline) -> Vec<Row> {
    let (n, h) = (|k| c.n(k), |k| c.handoffs(k));
    vec![
        (
            "duplicates (known tickets accepted twice+)",
            format!("{} ({:.2}% of {})", c.dups, pct(c.dups, c.known), c.known),
            "",
        ),
        (
            "payment duplicates (orders paid twice+)",
            format!(
                "{} ({:.2}% of {})",
                c.payment_dups,
                pct(c.payment_dups, c.orders),
                c.orders
            ),
            "",
        ),
        (
            "  after clean hand-offs (SIGTERM / members joining)",
            format!(
                "{} ({:.2}%): {} / {}; most after one SIGTERM: {}",
                n(Cause::Term) + n(Cause::Join),
                pct(n(Cause::Term) + n(Cause::Join), c.known),
                n(Cause::Term),
                n(Cause::Join),
                c.worst(timeline, SignalKind::Term)
            ),
            "",
        ),
        (
            "  after crashes (SIGKILL)",
            format!(
                "{} ({:.2}%); most after one SIGKILL: {}",
                n(Cause::Kill),
                pct(n(Cause::Kill), c.known),
                c.worst(timeline, SignalKind::Kill)
            ),
            "",
        ),
        (
            "  other (broker restarts / no hand-off: lost answers)",
            format!(
                "{} ({:.2}%): {} / {}{}",
                n(Cause::Broker) + n(Cause::NoHandoff),
                pct(n(Cause::Broker) + n(Cause::NoHandoff), c.known),
                n(Cause::Broker),
                n(Cause::NoHandoff),
                c.lost_phases
            ),
            "",
        ),
        (
            "partition hand-offs seen (SIGTERM / join / SIGKILL / broker)",
            format!(
                "{} / {} / {} / {}",
                h(Cause::Term),
                h(Cause::Join),
                h(Cause::Kill),
                h(Cause::Broker)
            ),
            "",
        ),
        (
            "dead-letter duplicates / unexpected",
            format!("{} / {}", c.dlq_dups, c.unexpected_parked),
            "",
        ),
    ]
}

/// The rows of how the service ran: rebalances, commits, exits, retention, logs.
fn operation_rows(c: &Counts, o: &Outcome, s: &Session) -> Vec<Row> {
    let l = &c.logs;
    vec![
        (
            "consumer-group rebalances (assigned / revoked log events)",
            format!("{} ({} / {})", c.assigned + c.revoked, c.assigned, c.revoked),
            "",
        ),
        (
            "rebalance events during Elevate outages",
            s.outage_rebalances.to_string(),
            if s.outage_rebalances == 0 {
                "ok (expected 0)"
            } else {
                "note"
            },
        ),
        (
            "committed offsets behind the end at exit",
            c.behind.to_string(),
            verdict(c.behind == 0 && o.at_end, "ok"),
        ),
        (
            "SIGTERM exits: clean / not",
            format!("{} / {}", s.clean_exits, s.unclean_exits),
            verdict(s.unclean_exits == 0, "ok"),
        ),
        (
            "service starts (A/B/C)",
            format!(
                "{}/{}/{}",
                s.insts[0].starts, s.insts[1].starts, s.insts[2].starts
            ),
            "",
        ),
        ("stand-in answers by status", format!("{:?}", o.status), ""),
        (
            "dead-letter retention.ms / segment.ms; read back after",
            format!(
                "{} s / {} s; {:.0} s",
                o.plan.dlq_retention.as_secs(),
                DLQ_SEGMENT_MS.parse::<u64>().unwrap_or(0) / 1000,
                o.dlq_read_after.as_secs_f64()
            ),
            verdict(c.retention_sound, "ok (within retention)"),
        ),
        (
            "log lines with the SASL password / the payment Api-Key / customerKey|sessionKey",
            format!(
                "{} / {} / {} (of {} lines)",
                l.pw_hits, l.api_key_hits, l.key_hits, l.lines
            ),
            verdict(
                l.pw_hits == 0 && l.api_key_hits == 0 && l.key_hits == 0,
                "ok (must be 0)",
            ),
        ),
        ("elapsed", format!("{:.0} s", o.elapsed.as_secs_f64()), ""),
    ]
}

pub fn print_table(title: &str, rows: &[(&str, String, &str)]) {
    println!();
    println!("{title}");
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let v = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).min(60);
    let x = rows.iter().map(|r| r.2.len()).max().unwrap_or(0).max(7);
    println!("| {:w$} | {:v$} | {:x$} |", "check", "value", "verdict");
    println!(
        "|{}|{}|{}|",
        "-".repeat(w + 2),
        "-".repeat(v + 2),
        "-".repeat(x + 2)
    );
    for (k, val, verdict) in rows {
        println!("| {k:w$} | {val:v$} | {verdict:x$} |");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_payment_is_found_and_repeats_are_counted() {
        let orders: HashMap<String, i32> = [("order-1", 0), ("order-6", 1), ("order-11", 2)]
            .map(|(id, p)| (id.to_string(), p))
            .into();
        let paid: HashMap<String, usize> = [("order-1", 1), ("order-11", 3), ("order-99", 1)]
            .map(|(id, n)| (id.to_string(), n))
            .into();
        let (missing, dups) = payment_gaps(&orders, &paid);
        assert_eq!(missing, vec!["order-6"]);
        assert_eq!(dups, 2);
        let all: HashMap<String, usize> = orders.keys().map(|id| (id.clone(), 1)).collect();
        assert_eq!(payment_gaps(&orders, &all), (vec![], 0));
    }
}
