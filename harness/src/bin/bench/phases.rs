//! The sink's three phases: end to end unthrottled on a preloaded topic, throttled at a set rate,
//! and produce-to-204 latency at a steady rate; each counted from what the stand-in accepted.
//! Guarantees: a phase waits for conditions (all accepted, committed to the end), bounded.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use testkit::kafka::{client_config, create_topic, partitions_of, unique};
use testkit::{events, metrics};

use harness::{free_port, now_ms, round};

use crate::load::{produce_steady, Produced};
use crate::procfs::CpuMeter;
use crate::sink::{sink_toml, Env, Sink};
use crate::standin::Standin;
use crate::Plan;

/// True when `group` has committed the high watermark of every non-empty partition of `topic`.
pub fn committed_at_end(c: &BaseConsumer, topic: &str) -> Result<bool> {
    let mut tpl = TopicPartitionList::new();
    let mut high = BTreeMap::new();
    for p in partitions_of(c, topic)? {
        let (low, h) = c.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        // An empty partition (a small topic's keys may miss one) has nothing to commit.
        if h > low {
            high.insert(p, h);
            tpl.add_partition(topic, p);
        }
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(got
        .elements_for_topic(topic)
        .iter()
        .all(|e| matches!(e.offset(), Offset::Offset(o) if Some(&o) == high.get(&e.partition()))))
}

/// What the stand-in accepted in a phase, against what was produced.
#[derive(Debug, Default)]
pub struct Delivered {
    /// Accepted requests.
    pub accepted: u64,
    /// Distinct tickets among them.
    pub distinct: u64,
    /// Earliest accept (epoch ms).
    pub first_ms: i64,
    /// Latest accept (epoch ms).
    pub last_ms: i64,
    /// Accept times, sorted (epoch ms).
    pub times: Vec<i64>,
    /// Produce-to-204 latencies (ms), sorted.
    pub latencies: Vec<i64>,
}

impl Delivered {
    /// Accepts in `[from, to)` (epoch ms).
    pub fn count_in(&self, from: i64, to: i64) -> f64 {
        self.times.iter().filter(|&&t| t >= from && t < to).count() as f64
    }

    /// The rate between the accepts at the `lo` and `hi` quantiles (per second): the pace away
    /// from the run's start (assignment, first fetches) and its end (the last partition
    /// draining), to tell a slow edge from a slow middle. None for fewer than 100 accepts.
    pub fn rate_between(&self, lo: f64, hi: f64) -> Option<f64> {
        let n = self.times.len();
        if n < 100 {
            return None;
        }
        let (a, b) = (rank(n, lo), rank(n, hi));
        let ms = (self.times[b] - self.times[a]).max(1) as f64;
        Some((b - a) as f64 * 1000.0 / ms)
    }
}

pub async fn delivered(standin: &Standin, produced: &Produced) -> Result<Delivered> {
    let mut d = Delivered {
        first_ms: i64::MAX,
        ..Delivered::default()
    };
    let mut seen = HashSet::new();
    standin
        .accepted(|ticket, at| {
            d.accepted += 1;
            if seen.insert(ticket.to_string()) {
                d.distinct += 1;
            }
            d.first_ms = d.first_ms.min(at);
            d.last_ms = d.last_ms.max(at);
            d.times.push(at);
            if let Some(ts) = events::parse_ticket(ticket).and_then(|id| produced.ts.get(id as usize)) {
                d.latencies.push(at - ts);
            }
        })
        .await?;
    d.times.sort_unstable();
    d.latencies.sort_unstable();
    Ok(d)
}

pub fn pct(sorted: &[i64], p: f64) -> Value {
    if sorted.is_empty() {
        return Value::Null;
    }
    json!(sorted[rank(sorted.len(), p)])
}

/// The index of quantile `p` among `n` sorted values (nearest rank; `n` > 0).
fn rank(n: usize, p: f64) -> usize {
    ((n - 1) as f64 * p).round() as usize
}

/// Phase 3: the sink end to end on a preloaded topic, unthrottled; returns figures.
pub async fn e2e(
    env: &Env,
    standin: &Standin,
    name: &str,
    topic: &str,
    produced: &Produced,
    timeout: Duration,
) -> Result<Value> {
    standin.reset().await?;
    let group = unique(&format!("bench-{name}"));
    let port = free_port()?;
    let toml = sink_toml(env, topic, &group, &standin.base, 1_000_000.0, 10_000, port);
    let cpu = CpuMeter::start(&[("broker", env.broker_pid), ("standin", Some(standin.pid()))]);
    let started = now_ms() as i64;
    let mut sink = Sink::start(env, name, &toml, port, &[])?;
    let cpu = CpuMeter {
        procs: {
            let mut p = cpu.procs;
            p.push(("sink".into(), sink.pid(), (0.0, 0.0)));
            p
        },
        ..cpu
    };
    let offsets: BaseConsumer = client_config(&env.bs)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()?;
    let deadline = Instant::now() + timeout;
    let mut all_accepted_ms = None;
    let committed_ms;
    loop {
        sink.check_alive()?;
        if all_accepted_ms.is_none() && standin.accepted_count().await? >= produced.notifications {
            all_accepted_ms = Some(now_ms() as i64);
        }
        if all_accepted_ms.is_some() && committed_at_end(&offsets, topic)? {
            committed_ms = now_ms() as i64;
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{name}: not done after {timeout:?} (accepted {} of {})",
                standin.accepted_count().await?,
                produced.notifications
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (sink_user_s, sink_system_s) = cpu.split("sink").unwrap_or((f64::NAN, f64::NAN));
    let sink_cpu_s = sink_user_s + sink_system_s;
    let cpu = cpu.stop();
    let metrics_text = sink.metrics().await;
    std::fs::write(env.scratch.join(format!("{name}.metrics")), &metrics_text)?;
    let peak = sink.stop()?;
    let d = delivered(standin, produced).await?;
    let instructions =
        crate::sink::instructions(env, name).map(|i| (i as f64 / d.accepted.max(1) as f64).round());
    let secs = ((d.last_ms - d.first_ms) as f64 / 1000.0).max(1e-3);
    let to_commit = ((committed_ms - d.first_ms) as f64 / 1000.0).max(1e-3);
    let records = produced.ts.len() as f64;
    Ok(json!({
        "records": produced.ts.len(),
        "notifications_expected": produced.notifications,
        "accepted": d.accepted,
        "distinct_tickets": d.distinct,
        "startup_s": round((d.first_ms - started) as f64 / 1000.0, 2),
        "seconds_first_to_last_204": round(secs, 2),
        "seconds_first_204_to_committed_end": round(to_commit, 2),
        "records_per_s": round(records / secs, 0),
        "notifications_per_s": round(d.accepted as f64 / secs, 0),
        "notifications_per_s_middle_80": d.rate_between(0.1, 0.9).map(|r| round(r, 0)),
        "records_per_s_to_committed_end": round(records / to_commit, 0),
        "peak_rss_mib": round(peak, 1),
        "cores_used": cpu,
        "sink_cpu_s": round(sink_cpu_s, 2),
        "cpu_us_per_notification": round(sink_cpu_s * 1e6 / d.accepted.max(1) as f64, 1),
        "kernel_us_per_notification": round(sink_system_s * 1e6 / d.accepted.max(1) as f64, 1),
        "instructions_per_notification": instructions,
        "queueing_latency_ms": {"p50": pct(&d.latencies, 0.5), "p99": pct(&d.latencies, 0.99)},
        "sink_counters": {
            "commits": metrics::sum(&metrics_text, "elevate_sink_commits_total"),
            "limiter_wait_seconds": metrics::sum(&metrics_text, "elevate_sink_limiter_wait_seconds"),
            "retries": metrics::sum(&metrics_text, "elevate_sink_retries_total"),
            "request_seconds_sum": metrics::sum(&metrics_text, "elevate_sink_request_duration_seconds_sum"),
            "requests": metrics::sum(&metrics_text, "elevate_sink_request_duration_seconds_count"),
        },
    }))
}

/// Waits (at most 60 s) for the stand-in's first 204 while `sink` stays alive.
async fn first_204(standin: &Standin, sink: &mut Sink, name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while standin.accepted_count().await? == 0 {
        sink.check_alive()?;
        if Instant::now() > deadline {
            bail!("{name}: nothing accepted after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Phase 4: the sink throttled at `rps`; observed rate over a window of `secs`.
pub async fn throttled(env: &Env, standin: &Standin, topic: &str, plan: &Plan) -> Result<Value> {
    standin.reset().await?;
    let group = unique("bench-throttled");
    let port = free_port()?;
    let toml = sink_toml(env, topic, &group, &standin.base, plan.throttle_rps, 50, port);
    let mut sink = Sink::start(env, "throttled", &toml, port, &[])?;
    // Wait for the first 204, then for 1 s of warm-up (the burst) plus the window, plus margin.
    first_204(standin, &mut sink, "throttled").await?;
    tokio::time::sleep(Duration::from_secs_f64(1.0 + plan.throttle_secs + 0.5)).await;
    sink.check_alive()?;
    let peak = sink.stop()?;
    let d = delivered(standin, &Produced::default()).await?;
    let w = (plan.throttle_secs * 1000.0) as i64;
    let steady_from = d.first_ms + 1000;
    let steady = d.count_in(steady_from, steady_from + w) / plan.throttle_secs;
    let from_first = d.count_in(d.first_ms, d.first_ms + w) / plan.throttle_secs;
    Ok(json!({
        "set_rps": plan.throttle_rps,
        "burst": 50,
        "window_s": plan.throttle_secs,
        "observed_rps": round(steady, 2),
        "error_pct": round((steady - plan.throttle_rps) / plan.throttle_rps * 100.0, 3),
        "observed_rps_from_first_204_incl_burst": round(from_first, 2),
        "error_pct_incl_burst": round((from_first - plan.throttle_rps) / plan.throttle_rps * 100.0, 3),
        "peak_rss_mib": round(peak, 1),
    }))
}

/// Phase 5: the sink running, records produced at a steady rate: produce-to-204 latency.
pub async fn latency(env: &Env, standin: &Standin, partitions: i32, plan: &Plan) -> Result<Value> {
    standin.reset().await?;
    let topic = unique("bench-latency");
    create_topic(&env.bs, &topic, partitions, &[]).await?;
    create_topic(&env.bs, &format!("{topic}-dlq"), 1, &[]).await?;
    let group = unique("bench-latency");
    let port = free_port()?;
    let toml = sink_toml(env, &topic, &group, &standin.base, 1_000_000.0, 10_000, port);
    let mut sink = Sink::start(env, "latency", &toml, port, &[])?;
    sink.wait_ready().await?;
    // The group is joined; give the first fetch a moment to be in place.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let produced = produce_steady(&env.bs, &topic, plan.latency_rps, plan.latency_secs, 5).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while standin.accepted_count().await? < produced.notifications {
        sink.check_alive()?;
        if Instant::now() > deadline {
            bail!("latency: not all notifications accepted after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peak = sink.stop()?;
    let d = delivered(standin, &produced).await?;
    Ok(json!({
        "records_per_s": plan.latency_rps,
        "seconds": plan.latency_secs,
        "records": produced.ts.len(),
        "notifications": d.accepted,
        "p50_ms": pct(&d.latencies, 0.5),
        "p90_ms": pct(&d.latencies, 0.9),
        "p99_ms": pct(&d.latencies, 0.99),
        "max_ms": d.latencies.last().copied(),
        "peak_rss_mib": round(peak, 1),
    }))
}

/// Phase 6: Elevate far away — the stand-in answers every request after `latency_ms` — and the
/// sink unthrottled on a preloaded topic with `in_flight` requests in flight: the rate over
/// `secs` from 2 s after the first 204 (cut at the last 204 if the topic runs out), against
/// `in_flight / latency` (Little's law).
pub async fn remote(
    env: &Env,
    standin: &Standin,
    topic: &str,
    in_flight: usize,
    latency_ms: u64,
    secs: f64,
) -> Result<Value> {
    standin.reset().await?;
    standin.set_faults(&json!({"latency_ms": latency_ms})).await?;
    let group = unique("bench-remote");
    let port = free_port()?;
    let toml = sink_toml(env, topic, &group, &standin.base, 1_000_000.0, 10_000, port);
    let name = format!("remote-{in_flight}");
    let vars = [(
        "ELEVATE_SINK__ELEVATE__MAX_IN_FLIGHT_REQUESTS",
        in_flight.to_string(),
    )];
    let mut sink = Sink::start(env, &name, &toml, port, &vars)?;
    first_204(standin, &mut sink, &name).await?;
    let cpu = CpuMeter::start(&[("sink", Some(sink.pid()))]);
    let cpu_from = now_ms() as i64;
    tokio::time::sleep(Duration::from_secs_f64(2.0 + secs + 0.5)).await;
    sink.check_alive()?;
    let sink_cpu_s = cpu.secs("sink").unwrap_or(f64::NAN);
    let cpu_to = now_ms() as i64;
    let peak = sink.stop()?;
    let d = delivered(standin, &Produced::default()).await?;
    // The window: `secs` from 2 s after the first 204 (0.2 s on a smoke topic, which a fast
    // setting drains in about a second), cut at the last 204 if the topic ran out first.
    let warm_ms = if secs < 10.0 { 200 } else { 2000 };
    let from = d.first_ms + warm_ms;
    let to = (from + (secs * 1000.0) as i64).min(d.last_ms + 1);
    let window_s = ((to - from) as f64 / 1000.0).max(0.001);
    let rate = d.count_in(from, to) / window_s;
    let little = in_flight as f64 / (latency_ms as f64 / 1000.0);
    Ok(json!({
        "latency_ms": latency_ms,
        "max_in_flight_requests": in_flight,
        "window_s": round(window_s, 2),
        "notifications_per_s": round(rate, 1),
        "in_flight_over_latency": round(little, 1),
        "ratio": round(rate / little, 3),
        "cpu_us_per_notification": round(sink_cpu_s * 1e6 / d.count_in(cpu_from, cpu_to).max(1.0), 1),
        "peak_rss_mib": round(peak, 1),
    }))
}
