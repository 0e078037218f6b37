//! The chaos run (issues 8, 11, 12, 14): the real service binary, with two routes at once
//! (add-to-cart from a cart topic, payment from an order topic, the payment `Api-Key` given to
//! the service as a secret), under a steady produce load of known tickets mixed with the hostile
//! records of `tests/data/` and a poison record a minute (a ticket over the stand-in's body
//! limit: 413 on every attempt), hostile and poison records stamped hours to days old, plus an
//! order event every few records. Meanwhile it is SIGKILLed and restarted, the broker is stopped
//! and restarted, the Elevate stand-in answers 500s, then 429s with Retry-After, then slowly, then
//! is down for longer than `max.poll.interval.ms`, and the group is scaled 1 → 3 → 1. Then it
//! counts: expected tickets and expected payments (per order) missing at the stand-in, hostile
//! and poison records missing from the dead-letter topic (short retention), the densest second
//! at Elevate's door against the quota, duplicates by cause (clean hand-off, crash, other),
//! rebalances, secrets (the SASL password, the Api-Key) and personal keys in the logs.
//!
//! ```text
//! cargo build --release -p elevate-sink -p harness --bins
//! cargo run --release -p harness --bin chaos -- --short    # ~3 minutes, one of each fault (CI: .ci/chaos-short)
//! cargo run --release -p harness --bin chaos -- --long     # ~15 minutes, three rounds, longer faults
//! ```
//!
//! It runs its own broker with `scripts/kafka` in `ELEVATE_SINK_KAFKA_DIR` (default: a fresh
//! temporary directory) on `ELEVATE_SINK_KAFKA_PORT` (default: a free port), and stops it at
//! the end. The service binary is `CHAOS_SINK_BIN` (default: `elevate-sink` beside this
//! program, i.e. `target/release/elevate-sink`). Logs, configs and the stand-in's
//! accepted requests stay in `CHAOS_LOG_DIR` (default: a temporary directory, printed).
//! Exit status: 0 when every check of the table holds, 1 otherwise, 2 on a setup error.

mod broker;
mod duplicates;
mod instance;
mod load;
mod readback;
mod report;
mod session;
mod signals;

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use elevate_standin::{densest_window, Limits, StandIn};
use rand::rngs::StdRng;
use rand::SeedableRng;
use testkit::kafka::BIG_RECORD_BYTES;

use harness::{free_port, now_ms};

use crate::broker::Broker;
use crate::duplicates::{lock, watch_owners, Handoff, Timeline};
use crate::instance::{await_progress, Instance};
use crate::load::{payments_by_order, produce_load, Produced};
use crate::readback::{committed_at_end, dead_lettered, Parked, Tp};
use crate::report::{report, Outcome};
use crate::session::{create_topics, Session};
use crate::signals::{await_cond, hex};

/// Partitions of the cart topic (enough for three instances to get two each).
const PARTITIONS: i32 = 6;

/// Partitions of the order topic.
const ORDER_PARTITIONS: i32 = 3;

/// Largest record either topic or producer accepts (the corpus has 1 MiB records).
const BIG: &str = BIG_RECORD_BYTES;

/// The dummy SASL password: it must never appear in a log line.
const PASSWORD_ENV: &str = "CHAOS_SASL_PASSWORD";

/// The payment route's Admin API key (`elevate.payment_api_key = { env = .. }`), random per run;
/// the stand-in takes payments only with it, and it must never appear in a log line.
const API_KEY_ENV: &str = "CHAOS_PAYMENT_API_KEY";

/// The fleet quota of the run's config (`rate.requests_per_second`, `rate.burst`): at the
/// stand-in, no one-second window may hold more than their sum.
/// Low enough that requests piling up behind a slow Elevate (up to
/// `pipeline.max_in_flight_records`) outnumber it, high enough to catch up after each fault.
const RATE: usize = 150;
/// Seconds a request may be stamped late at the stand-in (see the quota check in `report`): the
/// fault the check exists for sent 586 in one second against 170.
const DOOR_JITTER: f64 = 0.1;

const BURST: usize = 20;

/// The stand-in's body limit, like a real server's (the corpus's largest ticket is 256 KiB).
const BODY_LIMIT: usize = 512 * 1024;

/// A poison record's ticket: over the body limit, so Elevate answers 413 on every attempt.
const POISON_TICKET_BYTES: usize = 600 * 1024;

/// Source timestamps of hostile and poison records: an hour and three days old, both older
/// than the dead-letter topic's retention (so parking that kept them would lose the records).
const OLD_STAMPS: [Duration; 2] = [Duration::from_secs(3600), Duration::from_secs(3 * 86_400)];

/// The dead-letter topic's `segment.ms`: small, so retention can act within the run.
const DLQ_SEGMENT_MS: &str = "10000";

/// Latency of the slow-Elevate phase (below the config's 3 s `request_timeout`).
const SLOW_LATENCY_MS: u64 = 2000;

/// How hard and how long.
#[derive(Debug, Clone, Copy)]
struct Plan {
    name: &'static str,
    /// Records produced per second.
    rate: u32,
    /// Rounds of the whole fault sequence.
    rounds: u32,
    /// How long each of the 500 / 429 phases lasts.
    fault: Duration,
    /// How long the broker stays down.
    broker_down: Duration,
    /// How long Elevate stays down (must exceed max.poll.interval.ms).
    outage: Duration,
    /// Steady time between faults.
    calm: Duration,
    /// How long to wait for everything to arrive after the load stops.
    drain: Duration,
    /// The dead-letter topic's `retention.ms`: far below the old timestamps' age, above the
    /// run's length (the run fails as unsound if it outlasts it).
    dlq_retention: Duration,
}

const SHORT: Plan = Plan {
    name: "short",
    rate: 50,
    rounds: 1,
    fault: Duration::from_secs(8),
    broker_down: Duration::from_secs(6),
    outage: Duration::from_secs(15),
    calm: Duration::from_secs(3),
    drain: Duration::from_secs(120),
    dlq_retention: Duration::from_secs(300),
};

const LONG: Plan = Plan {
    name: "long",
    rate: 80,
    rounds: 3,
    fault: Duration::from_secs(30),
    broker_down: Duration::from_secs(20),
    outage: Duration::from_secs(45),
    calm: Duration::from_secs(15),
    drain: Duration::from_secs(300),
    dlq_retention: Duration::from_secs(1800),
};

/// `max.poll.interval.ms` of the run's config (the outage must outlast it).
const MAX_POLL_MS: u64 = 10_000;

fn say(msg: impl AsRef<str>) {
    let t = START.get().map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0);
    println!("[chaos {t:7.1}s] {}", msg.as_ref());
    let _ = std::io::stdout().flush();
}

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

struct Args {
    plan: Plan,
}

fn parse_args() -> Result<Args, String> {
    let mut plan = None;
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--short" => plan = Some(SHORT),
            "--long" => plan = Some(LONG),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        plan: plan.ok_or("say --short or --long")?,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\nusage: cargo run --release -p harness --bin chaos -- --short|--long");
            return ExitCode::from(2);
        }
    };
    START.get_or_init(Instant::now);
    let result = tokio::select! {
        r = run(args.plan) => r,
        _ = tokio::signal::ctrl_c() => Err("interrupted".to_string()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("chaos: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn config_toml(bs: &str, group: &str, (topic, orders): (&str, &str), dlq: &str, base_url: &str) -> String {
    format!(
        r#"# generated by the harness (chaos)
[kafka]
bootstrap_servers = "{bs}"
group_id = "{group}"
topics = ["{topic}", "{orders}"]
[kafka.properties]
"max.poll.interval.ms" = "{MAX_POLL_MS}"
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
"fetch.wait.max.ms" = "50"
"reconnect.backoff.max.ms" = "2000"
"security.protocol" = "plaintext"
"client.id" = "CLIENT_ID"
[kafka.secret_properties]
"sasl.password" = {{ env = "{PASSWORD_ENV}" }}
[elevate]
base_url = "{base_url}"
payment_api_key = {{ env = "{API_KEY_ENV}" }}
connect_timeout = "1s"
request_timeout = "3s"
max_in_flight_requests = 32
[rate]
requests_per_second = {RATE}
burst = {BURST}
[retry]
initial_backoff = "100ms"
max_backoff = "2s"
max_retry_after = "5s"
[dead_letter]
topic = "{dlq}"
[dead_letter.properties]
"message.max.bytes" = "{BIG}"
[pipeline]
max_in_flight_records = 300
max_pending_notifications = 600
commit_interval = "500ms"
[shutdown]
drain_deadline = "8s"
grace_period = "15s"
[admin]
listen = "ADMIN_LISTEN"
[log]
level = "info"
format = "json"

[[routes]]
name = "cart"
kind = "add-to-cart"
topics = ["{topic}"]

[[routes]]
name = "payments"
kind = "payment"
topics = ["{orders}"]
"#
    )
}

/// The service binary: `CHAOS_SINK_BIN`, or `elevate-sink` beside this program.
fn service_bin() -> Result<PathBuf, String> {
    let bin = match std::env::var_os("CHAOS_SINK_BIN") {
        Some(b) => PathBuf::from(b),
        None => harness::bin_dir()
            .map_err(|e| e.to_string())?
            .join("elevate-sink"),
    };
    if !bin.exists() {
        return Err(format!(
            "service binary {} not found: cargo build --release --bin elevate-sink (or set CHAOS_SINK_BIN)",
            bin.display()
        ));
    }
    Ok(bin)
}

/// Waits (bounded by `drain` in all) until every expected ticket and every produced order's
/// payment arrived at the stand-in; whether both did.
async fn drain(standin: &StandIn, expected: &HashSet<String>, produced: &Produced, drain: Duration) -> bool {
    let started = Instant::now();
    let tickets = standin.wait_for_tickets(expected, drain).await.is_ok();
    let orders: HashSet<&String> = produced.orders.keys().collect();
    let payments = await_cond(
        drain
            .saturating_sub(started.elapsed())
            .max(Duration::from_secs(10)),
        "every order's payment",
        || {
            let paid = payments_by_order(standin);
            let all = orders.iter().all(|o| paid.contains_key(*o));
            async move { all }
        },
    )
    .await;
    tickets && payments
}

/// Where a run keeps its logs (`CHAOS_LOG_DIR`, else a fresh temporary directory) and its
/// broker's state (`ELEVATE_SINK_KAFKA_DIR`, else under the logs), and the broker's port
/// (`ELEVATE_SINK_KAFKA_PORT`, else a free one).
fn places() -> Result<(PathBuf, PathBuf, u16), String> {
    let log_dir = match std::env::var_os("CHAOS_LOG_DIR") {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join(format!("elevate-sink-chaos-{}", std::process::id())),
    };
    std::fs::create_dir_all(&log_dir).map_err(|e| e.to_string())?;
    let kafka_dir = std::env::var_os("ELEVATE_SINK_KAFKA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| log_dir.join("kafka"));
    let port = std::env::var("ELEVATE_SINK_KAFKA_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| free_port().expect("a free port"));
    Ok((log_dir, kafka_dir, port))
}

/// After the load stopped: the tickets that must arrive, whether they and every payment did
/// (within `plan.drain`), and the dead-letter topic's records once every record that must be
/// parked is there (or a minute after the drain: what is not parked by then is stuck or lost).
async fn arrived_and_parked(
    standin: &StandIn,
    (bs, dlq, topic): (&str, &str, &str),
    produced: &Produced,
    plan: Plan,
) -> (HashSet<String>, bool, Vec<Parked>) {
    let mut expected: HashSet<String> = produced.tickets.keys().cloned().collect();
    expected.extend(produced.hostile_tickets.iter().cloned());
    let mut must_park: HashSet<(i32, i64)> = produced.invalid.keys().copied().collect();
    must_park.extend(produced.poison.iter().copied());
    let drained = drain(standin, &expected, produced, plan.drain).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let parked = loop {
        let parked = dead_lettered(bs, dlq, topic).await;
        let got: HashSet<(i32, i64)> = parked.iter().map(|p| p.source).collect();
        if must_park.is_subset(&got) || Instant::now() >= deadline {
            break parked;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    (expected, drained, parked)
}

/// Waits (at most a minute) for the group's commits to reach the end of both source topics,
/// stops the last instance, and reads how far behind each partition is left.
async fn commits_at_end(s: &mut Session, bs: &str, group: &str) -> (bool, HashMap<Tp, i64>) {
    let (topic, orders) = (s.topic.clone(), s.orders.clone());
    let sources = [(topic.as_str(), PARTITIONS), (orders.as_str(), ORDER_PARTITIONS)];
    let srcs = &sources;
    let at_end = await_cond(
        Duration::from_secs(60),
        "commits to reach the end",
        || async move { committed_at_end(bs, group, srcs).await.0 },
    )
    .await;
    s.sigterm(0).await;
    let (_, behind) = committed_at_end(bs, group, &sources).await;
    (at_end, behind)
}

/// Watches who owns the partitions of `topic` in `group`, on a thread of its own until the flag
/// is set; the thread ends with the hand-offs it saw.
fn spawn_watcher(
    bs: &str,
    group: &str,
    topic: &str,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<Vec<Handoff>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (bs, group, topic, flag) = (bs.to_string(), group.to_string(), topic.to_string(), stop.clone());
    (
        stop,
        std::thread::spawn(move || watch_owners(bs, group, topic, flag)),
    )
}

/// The stand-in of a run: checks the payment Api-Key `api_key`, refuses bodies over the limit.
async fn standin_for(api_key: &str) -> Result<StandIn, String> {
    let standin = StandIn::start_with_api_key(api_key.to_string())
        .await
        .map_err(|e| e.to_string())?;
    standin.set_limits(Limits {
        max_body_bytes: Some(BODY_LIMIT),
        ..Limits::default()
    });
    Ok(standin)
}

/// The run's rounds: instance A first, the first 100 deliveries, then `plan.rounds` rounds of
/// faults.
async fn play(s: &mut Session) -> Result<(), String> {
    s.start(0);
    s.balanced().await;
    await_progress(
        &s.standin,
        100,
        Duration::from_secs(60),
        "the first 100 deliveries",
    )
    .await;
    for round in 1..=s.plan.rounds {
        s.round(round).await?;
    }
    Ok(())
}

/// Every add-to-cart ticket the stand-in accepted, with when (ms since the epoch), in order.
fn accepted_tickets(standin: &StandIn) -> Vec<(String, u64)> {
    standin
        .accepted_of(elevate_standin::Kind::AddToCart)
        .into_iter()
        .map(|a| (a.ticket, a.received_at_ms))
        .collect()
}

async fn run(plan: Plan) -> Result<bool, String> {
    let bin = service_bin()?;
    let (log_dir, kafka_dir, port) = places()?;
    say(format!(
        "{} run: service {}, logs in {}, broker state in {}",
        plan.name,
        bin.display(),
        log_dir.display(),
        kafka_dir.display()
    ));
    let corpus = testkit::corpus::load().map_err(|e| e.to_string())?;
    let broker = Broker::up(kafka_dir, port)?;
    let bs = broker.bootstrap.clone();
    say(format!("broker at {bs}"));

    let mut rng = StdRng::seed_from_u64(std::process::id().into());
    let run_id = hex(&mut rng, 8);
    let [topic, orders, dlq, group] =
        ["-in", "-orders", "-dlq", ""].map(|suffix| format!("chaos-{run_id}{suffix}"));
    create_topics(&broker, &plan, (&topic, &orders), &dlq).await?;
    let dlq_created = Instant::now();
    let password = format!("chaos-sasl-{}", hex(&mut rng, 24));
    let api_key = format!("chaos-adm-{}", hex(&mut rng, 24));
    let standin = standin_for(&api_key).await?;
    let toml = config_toml(&bs, &group, (&topic, &orders), &dlq, &standin.base_url());
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let insts = ["A", "B", "C"]
        .map(|n| Instance::new(n, &log_dir, &toml, timeline.clone()))
        .into();

    let (watch_stop, watcher) = spawn_watcher(&bs, &group, &topic);
    let produced = Arc::new(Mutex::new(Produced::default()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(produce_load(
        bs.clone(),
        topic.clone(),
        orders.clone(),
        plan,
        corpus,
        produced.clone(),
        stop_rx,
    ));
    let t0 = Instant::now();
    let started_ms = now_ms();
    let mut s = Session {
        plan,
        bin,
        password,
        api_key,
        broker,
        topic: topic.clone(),
        orders: orders.clone(),
        standin,
        http: reqwest::Client::new(),
        insts,
        timeline: timeline.clone(),
        clean_exits: 0,
        unclean_exits: 0,
        outage_rebalances: 0,
    };
    play(&mut s).await?;

    s.phase("drain", "load stops; waiting for everything to arrive");
    let _ = stop_tx.send(true);
    let _ = load.await;
    let produced = Arc::into_inner(produced).ok_or("producer still running")?;
    let produced = produced.into_inner().map_err(|_| "producer panicked")?;
    let (expected, drained, parked) =
        arrived_and_parked(&s.standin, (&bs, &dlq, &topic), &produced, plan).await;
    let dlq_read_after = dlq_created.elapsed();
    let (at_end, behind) = commits_at_end(&mut s, &bs, &group).await;
    let elapsed = t0.elapsed();
    watch_stop.store(true, Ordering::Relaxed);
    let handoffs = watcher.join().map_err(|_| "group watcher panicked")?;

    let _ = s.standin.dump_jsonl(&log_dir.join("accepted.jsonl")).await;
    let outcome = Outcome {
        plan,
        group,
        produced,
        expected,
        parked,
        drained,
        at_end,
        behind,
        accepted: accepted_tickets(&s.standin),
        payments: payments_by_order(&s.standin),
        peak_1s: densest_window(&s.standin.arrivals_us(), Duration::from_secs(1)),
        status: s.standin.status_counts(),
        handoffs,
        dlq_read_after,
        started_ms,
        elapsed,
    };
    let ok = report(&outcome, &s, &lock(&timeline), &log_dir);
    tear_down(s).await;
    Ok(ok)
}

/// Kills what is left of the instances and stops the stand-in.
async fn tear_down(mut s: Session) {
    for i in &mut s.insts {
        i.sigkill().await;
    }
    s.standin.shutdown().await;
}
