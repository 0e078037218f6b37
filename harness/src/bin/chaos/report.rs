//! The count at the end: what the run saw (`Outcome`) against what it must hold, as the table of
//! docs/chaos.md. Guarantees: every check of the table decides the verdict; nothing is sampled.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use crate::duplicates::{attribute_duplicates, Cause, Handoff, SignalKind, Timeline};
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

/// Counts, prints the table, and says whether every check held.
pub fn report(o: &Outcome, s: &Session, timeline: &Timeline, log_dir: &Path) -> bool {
    let pct = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 * 100.0 / b as f64 };
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (t, _) in &o.accepted {
        *counts.entry(t.as_str()).or_default() += 1;
    }
    let missing: Vec<&String> = o
        .expected
        .iter()
        .filter(|t| !counts.contains_key(t.as_str()))
        .collect();
    let known = o.produced.tickets.len();
    let dups: usize = o
        .produced
        .tickets
        .keys()
        .map(|t| counts.get(t.as_str()).copied().unwrap_or(1).saturating_sub(1))
        .sum();
    let by = attribute_duplicates(&o.accepted, &o.produced.tickets, &o.handoffs, timeline);
    let n = |c: Cause| by.by_cause.get(&c).copied().unwrap_or(0);
    let h = |c: Cause| by.handoffs_by_cause.get(&c).copied().unwrap_or(0);
    let worst = |k: SignalKind| {
        by.by_signal
            .iter()
            .filter(|(i, _)| timeline.signals[**i].kind == k)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0)
    };
    let mut lost: Vec<(&String, &usize)> = by.lost_by_phase.iter().collect();
    lost.sort_by(|a, b| b.1.cmp(a.1));
    let lost_phases = if lost.is_empty() {
        String::new()
    } else {
        let top: Vec<String> = lost
            .iter()
            .take(3)
            .map(|(p, n)| format!("{n} in \"{p}\""))
            .collect();
        format!(" ({})", top.join(", "))
    };
    let parked_set: HashSet<(i32, i64)> = o.parked.iter().map(|p| p.source).collect();
    let missing_hostile: Vec<&String> = o
        .produced
        .invalid
        .iter()
        .filter(|(k, _)| !parked_set.contains(k))
        .map(|(_, n)| n)
        .collect();
    let poison_413 = o
        .produced
        .poison
        .iter()
        .filter(|at| {
            o.parked
                .iter()
                .any(|p| p.source == **at && p.status.as_deref() == Some("413"))
        })
        .count();
    let poison_statuses: HashSet<String> = o
        .parked
        .iter()
        .filter(|p| o.produced.poison.contains(&p.source))
        .map(|p| p.status.clone().unwrap_or_else(|| "none".into()))
        .collect();
    let poison_parts: HashSet<i32> = o.produced.poison.iter().map(|p| p.0).collect();
    let poison_parts_done = poison_parts
        .iter()
        .filter(|p| o.behind.get(&(s.topic.clone(), **p)) == Some(&0))
        .count();
    let unexpected_parked = parked_set
        .iter()
        .filter(|k| !o.produced.invalid.contains_key(k) && !o.produced.poison.contains(k))
        .count();
    let dlq_dups = o.parked.len() - parked_set.len();
    let (mut assigned, mut revoked) = (0, 0);
    for i in &s.insts {
        let (a, r) = i.rebalance_lines();
        assigned += a;
        revoked += r;
    }
    let LogScan {
        pw_hits,
        api_key_hits,
        key_hits,
        lines,
    } = scan_logs(&s.insts, &s.password, &s.api_key);
    let (missing_payments, payment_dups) = payment_gaps(&o.produced.orders, &o.payments);
    let orders = o.produced.orders.len();
    let behind: i64 = o.behind.values().sum();
    // Stamped at the stand-in (this process, on cores shared with the sinks and the broker): a
    // request that left at t may be stamped up to DOOR_JITTER later while a later one is stamped
    // at once, so the densest second may hold what left in 1 + DOOR_JITTER seconds.
    let quota = BURST + (RATE as f64 * (1.0 + DOOR_JITTER)).floor() as usize;
    let retention_sound = o.dlq_read_after < o.plan.dlq_retention;

    let checks = [
        missing.is_empty(),
        missing_payments.is_empty(),
        api_key_hits == 0,
        missing_hostile.is_empty(),
        poison_413 == o.produced.poison.len(),
        poison_parts_done == poison_parts.len(),
        o.peak_1s.0 <= quota,
        pw_hits == 0 && key_hits == 0,
        o.drained,
        o.at_end && behind == 0,
        s.unclean_exits == 0,
        retention_sound,
    ];
    let ok = checks.iter().all(|c| *c);
    let rows: Vec<(&str, String, &str)> = vec![
        (
            "records produced (known tickets + hostile + poison; orders)",
            format!(
                "{known} + {} + {}; {orders}",
                o.produced.hostile,
                o.produced.poison.len()
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
            format!("{} of {}", missing.len(), o.expected.len()),
            verdict(missing.is_empty(), "ok (must be 0)"),
        ),
        (
            "expected payments missing at the stand-in (route payments: one per order, Api-Key checked)",
            format!("{} of {orders}", missing_payments.len()),
            verdict(missing_payments.is_empty(), "ok (must be 0)"),
        ),
        (
            "hostile records missing from the dead-letter topic (source timestamps 1 h / 3 d old)",
            format!("{} of {}", missing_hostile.len(), o.produced.invalid.len()),
            verdict(missing_hostile.is_empty(), "ok (must be 0)"),
        ),
        (
            "poison records (ticket over the 512 KiB body limit, stamped old) parked with status 413",
            format!(
                "{poison_413} of {} (statuses parked: {poison_statuses:?})",
                o.produced.poison.len()
            ),
            verdict(poison_413 == o.produced.poison.len(), "ok (must be all)"),
        ),
        (
            "  answers of 413 per poison record (1: parked at the first)",
            format!(
                "{:.1}",
                o.status.get(&413).copied().unwrap_or(0) as f64 / o.produced.poison.len().max(1) as f64
            ),
            "",
        ),
        (
            "partitions of poison records committed to the end",
            format!("{poison_parts_done} of {}", poison_parts.len()),
            verdict(poison_parts_done == poison_parts.len(), "ok (must be all)"),
        ),
        (
            "most requests at the stand-in in any 1 s",
            format!(
                "{} (burst {BURST} + quota {RATE} × (1 s + {DOOR_JITTER} s stamping jitter) = {quota}), at {:.0} s, in \"{}\"",
                o.peak_1s.0,
                (o.peak_1s.1 / 1000).saturating_sub(o.started_ms) as f64 / 1000.0,
                timeline.phase_at(o.peak_1s.1 / 1000)
            ),
            verdict(o.peak_1s.0 <= quota, "ok (at most burst + quota × 1.1 s)"),
        ),
        (
            "duplicates (known tickets accepted twice+)",
            format!("{dups} ({:.2}% of {known})", pct(dups, known)),
            "",
        ),
        (
            "payment duplicates (orders paid twice+)",
            format!("{payment_dups} ({:.2}% of {orders})", pct(payment_dups, orders)),
            "",
        ),
        (
            "  after clean hand-offs (SIGTERM / members joining)",
            format!(
                "{} ({:.2}%): {} / {}; most after one SIGTERM: {}",
                n(Cause::Term) + n(Cause::Join),
                pct(n(Cause::Term) + n(Cause::Join), known),
                n(Cause::Term),
                n(Cause::Join),
                worst(SignalKind::Term)
            ),
            "",
        ),
        (
            "  after crashes (SIGKILL)",
            format!(
                "{} ({:.2}%); most after one SIGKILL: {}",
                n(Cause::Kill),
                pct(n(Cause::Kill), known),
                worst(SignalKind::Kill)
            ),
            "",
        ),
        (
            "  other (broker restarts / no hand-off: lost answers)",
            format!(
                "{} ({:.2}%): {} / {}{}",
                n(Cause::Broker) + n(Cause::NoHandoff),
                pct(n(Cause::Broker) + n(Cause::NoHandoff), known),
                n(Cause::Broker),
                n(Cause::NoHandoff),
                lost_phases
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
            format!("{dlq_dups} / {unexpected_parked}"),
            "",
        ),
        (
            "consumer-group rebalances (assigned / revoked log events)",
            format!("{} ({assigned} / {revoked})", assigned + revoked),
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
            behind.to_string(),
            verdict(behind == 0 && o.at_end, "ok"),
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
            verdict(retention_sound, "ok (within retention)"),
        ),
        (
            "log lines with the SASL password / the payment Api-Key / customerKey|sessionKey",
            format!("{pw_hits} / {api_key_hits} / {key_hits} (of {lines} lines)"),
            verdict(
                pw_hits == 0 && api_key_hits == 0 && key_hits == 0,
                "ok (must be 0)",
            ),
        ),
        ("elapsed", format!("{:.0} s", o.elapsed.as_secs_f64()), ""),
    ];
    print_table(&format!("chaos run ({}), group {}", o.plan.name, o.group), &rows);
    if !missing_hostile.is_empty() {
        println!(
            "missing hostile records: {:?}",
            &missing_hostile[..missing_hostile.len().min(20)]
        );
    }
    if !missing.is_empty() {
        println!(
            "missing tickets (first 20): {:?}",
            &missing[..missing.len().min(20)]
        );
    }
    if !missing_payments.is_empty() {
        println!(
            "missing payments (first 20 orders): {:?}",
            &missing_payments[..missing_payments.len().min(20)]
        );
    }
    println!(
        "\n{} — logs and configs in {}",
        if ok { "PASS" } else { "FAIL" },
        log_dir.display()
    );
    ok
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
