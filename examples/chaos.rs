//! The chaos run (issues 8, 11, 12): the real service binary under a steady produce load of known
//! tickets mixed with the hostile records of `tests/data/` and a poison record a minute (a ticket
//! over the stand-in's body limit: 413 on every attempt), hostile and poison records stamped
//! hours to days old. Meanwhile it is SIGKILLed and restarted, the broker is stopped and
//! restarted, the Elevate stand-in answers 500s, then 429s with Retry-After, then slowly, then is
//! down for longer than `max.poll.interval.ms`, and the group is scaled 1 → 3 → 1. Then it
//! counts: expected tickets missing at the stand-in, hostile and poison records missing from the
//! dead-letter topic (short retention), the densest second at Elevate's door against the quota,
//! duplicates by cause (clean hand-off, crash, other), rebalances, secrets in the logs.
//!
//! ```text
//! cargo build --release --bin elevate-sink --example chaos
//! cargo run --release --example chaos -- --short    # ~3 minutes, one of each fault (CI: .ci/chaos-short)
//! cargo run --release --example chaos -- --long     # ~15 minutes, three rounds, longer faults
//! ```
//!
//! It runs its own broker with `scripts/kafka` in `ELEVATE_SINK_KAFKA_DIR` (default: a fresh
//! temporary directory) on `ELEVATE_SINK_KAFKA_PORT` (default: a free port), and stops it at
//! the end. The service binary is `CHAOS_SINK_BIN` (default: `elevate-sink` next to this
//! example's directory, i.e. `target/release/elevate-sink`). Logs, configs and the stand-in's
//! accepted requests stay in `CHAOS_LOG_DIR` (default: a temporary directory, printed).
//! Exit status: 0 when every check of the table holds, 1 otherwise, 2 on a setup error.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};

use elevate_standin::{densest_window, Faults, Limits, StandIn};

/// Partitions of the source topic (enough for three instances to get two each).
const PARTITIONS: i32 = 6;
/// Largest record either topic or producer accepts (the corpus has 1 MiB records).
const BIG: &str = "4194304";
/// The dummy SASL password: it must never appear in a log line.
const PASSWORD_ENV: &str = "CHAOS_SASL_PASSWORD";
/// The fleet quota of the run's config (`rate.requests_per_second`, `rate.burst`): at the
/// stand-in, no one-second window may hold more than their sum.
/// Low enough that requests piling up behind a slow Elevate (up to
/// `pipeline.max_in_flight_records`) outnumber it, high enough to catch up after each fault.
const RATE: usize = 150;
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

// ---------------------------------------------------------------------------------------------
// small utilities

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn hex(rng: &mut StdRng, n: usize) -> String {
    (0..n)
        .map(|_| format!("{:x}", rng.random_range(0..16u8)))
        .collect()
}

/// Wall-clock milliseconds since the Unix epoch (the stand-in stamps accepts the same way).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}
const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

fn signal(pid: u32, sig: i32) {
    // SAFETY: signalling a process this run started.
    unsafe {
        kill(pid as i32, sig);
    }
}

/// Polls `cond` every 200 ms until true or `timeout`; says so and returns false on timeout.
async fn await_cond<F, Fut>(timeout: Duration, what: &str, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            say(format!("WARNING: timed out after {timeout:?} waiting for {what}"));
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// the broker (scripts/kafka, in its own state directory)

struct Broker {
    dir: PathBuf,
    port: u16,
    bootstrap: String,
}

impl Broker {
    fn script(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(repo().join("scripts/kafka"))
            .args(args)
            .env("ELEVATE_SINK_KAFKA_DIR", &self.dir)
            .env("ELEVATE_SINK_KAFKA_PORT", self.port.to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/kafka")
    }

    /// Starts it (or reuses the one already running in `dir`).
    fn up(dir: PathBuf, port: u16) -> Result<Broker, String> {
        let mut b = Broker {
            dir,
            port,
            bootstrap: String::new(),
        };
        let out = b.script(&["up"]);
        if !out.status.success() {
            return Err(format!("scripts/kafka up failed ({})", out.status));
        }
        b.bootstrap = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Ok(b)
    }

    /// Graceful stop (SIGTERM, waits), as `scripts/kafka down`.
    fn stop(&self) {
        let _ = self.script(&["down"]);
    }

    /// SIGKILL, no shutdown at all.
    fn kill(&self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("kafka.pid")) {
            if let Ok(pid) = pid.trim().parse::<u32>() {
                signal(pid, SIGKILL);
                let proc = PathBuf::from(format!("/proc/{pid}"));
                let deadline = Instant::now() + Duration::from_secs(10);
                while proc.exists() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Starts the broker again on the same port with the same data. (`scripts/kafka up`
    /// always starts from an empty data directory, so this runs the same command it runs.)
    fn restart(&self) -> Result<(), String> {
        let libs = std::fs::read_to_string(self.dir.join("libs")).map_err(|e| format!("libs: {e}"))?;
        let java = std::env::var("JAVA_HOME")
            .map(|h| PathBuf::from(h).join("bin/java"))
            .ok()
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("java"));
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir.join("broker.log"))
            .map_err(|e| e.to_string())?;
        let child = std::process::Command::new(java)
            .args(["-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"])
            .args(["-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true"])
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.dir.join("log4j2.properties").display()
            ))
            .arg(format!("-Dkafka.logs.dir={}", self.dir.display()))
            .arg("-cp")
            .arg(format!("{}/*", libs.trim()))
            .arg("kafka.Kafka")
            .arg(self.dir.join("server.properties"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("start java: {e}"))?;
        // scripts/kafka finds (and stops) it through the PID file.
        std::fs::write(self.dir.join("kafka.pid"), format!("{}\n", child.id())).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Whether the broker answers a metadata request for `topic` with leaders everywhere.
    fn answers(&self, topic: &str) -> bool {
        let Ok(c) = client(&self.bootstrap).create::<BaseConsumer>() else {
            return false;
        };
        c.fetch_metadata(Some(topic), Duration::from_secs(2))
            .map(|md| {
                md.topics().iter().any(|t| {
                    t.error().is_none()
                        && !t.partitions().is_empty()
                        && t.partitions().iter().all(|p| p.leader() >= 0)
                })
            })
            .unwrap_or(false)
    }
}

impl Drop for Broker {
    /// Its data is thrown away with the run: SIGKILL (a graceful stop can take 30 s), then let
    /// the script tidy its PID file.
    fn drop(&mut self) {
        self.kill();
        self.stop();
    }
}

fn client(bs: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bs);
    c
}

async fn create_topic(bs: &str, name: &str, partitions: i32, configs: &[(&str, &str)]) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = client(bs).create().map_err(|e| e.to_string())?;
    let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(1)).set("max.message.bytes", BIG);
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    for r in admin
        .create_topics([&t], &opts)
        .await
        .map_err(|e| e.to_string())?
    {
        r.map_err(|(t, e)| format!("create {t}: {e}"))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// the hostile corpus

/// A corpus record and what must become of it.
#[derive(Clone)]
struct Hostile {
    name: String,
    value: Option<Vec<u8>>,
    /// Must land in the dead-letter topic.
    invalid: bool,
    /// Tickets it maps to (must reach the stand-in).
    tickets: Vec<String>,
}

fn load_corpus() -> Result<Vec<Hostile>, String> {
    let dir = repo().join("tests/data");
    let text =
        std::fs::read_to_string(dir.join("expected.json")).map_err(|e| format!("expected.json: {e}"))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for r in doc["records"].as_array().ok_or("no records")? {
        let name = r["name"].as_str().ok_or("name")?.to_string();
        let value = if r["tombstone"].as_bool() == Some(true) {
            None
        } else {
            Some(std::fs::read(dir.join("corpus").join(&name)).map_err(|e| format!("{name}: {e}"))?)
        };
        let tickets = r["tickets"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| match t {
                        Value::String(s) => s.clone(),
                        o => format!(
                            "{}{}",
                            o["prefix"].as_str().unwrap_or(""),
                            o["repeat"]
                                .as_str()
                                .unwrap_or("")
                                .repeat(o["times"].as_u64().unwrap_or(0) as usize)
                        ),
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Hostile {
            invalid: r["outcome"] == "invalid",
            name,
            value,
            tickets,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// the load

/// What the producer produced and where it landed.
#[derive(Default)]
struct Produced {
    /// Known tickets whose record was acknowledged, with its partition.
    tickets: HashMap<String, i32>,
    /// (partition, offset) of acknowledged invalid hostile records, with the corpus name (all
    /// carry an old source timestamp).
    invalid: HashMap<(i32, i64), String>,
    /// (partition, offset) of acknowledged poison records (a ticket over the body limit).
    poison: HashSet<(i32, i64)>,
    /// Tickets of acknowledged hostile records that map.
    hostile_tickets: HashSet<String>,
    /// Hostile records acknowledged.
    hostile: usize,
    /// Records whose delivery failed (not counted as expected).
    failed: usize,
}

/// What one produced record is.
enum Kind {
    /// A known ticket, current timestamp: must reach the stand-in.
    Known,
    /// A corpus record, old timestamp.
    Hostile(Hostile),
    /// A valid event whose ticket is over the stand-in's body limit, old timestamp: answered
    /// 413 on every attempt, must be parked with that status.
    Poison,
}

/// A valid add-to-cart event for `ticket` with random keys (`cust-…`/`sess-…`) and consent, and
/// sometimes a second line that is not Elevate's.
fn known_event(rng: &mut StdRng, ticket: &str) -> Vec<u8> {
    let ck = format!("cust-{}", hex(rng, 32));
    let sk = format!("sess-{}", hex(rng, 32));
    let ctx = ["PERSONALIZED", "UNPERSONALIZED", "ANONYMOUS", "SYNTHETIC", ""][rng.random_range(0..5)];
    let mut lines = vec![json!({"source": "elevate", "ticket": ticket, "productKey": "p"})];
    if rng.random_bool(0.3) {
        lines.push(json!({"source": "shop", "ticket": "not-ours", "productKey": "q"}));
    }
    let mut e = json!({"type": "add_to_cart", "market": "SE", "customerKey": ck, "sessionKey": sk,
        "visitor": {"userAgent": "chaos/1.0", "ip": "203.0.113.9"}, "lines": lines});
    if !ctx.is_empty() {
        e["userContext"] = json!(ctx);
    }
    serde_json::to_vec(&e).unwrap()
}

/// Produces `plan.rate` records a second until `stop`; every 8th a hostile record, and a poison
/// record once a minute.
async fn produce_load(
    bs: String,
    topic: String,
    plan: Plan,
    corpus: Vec<Hostile>,
    produced: Arc<Mutex<Produced>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let producer: FutureProducer = client(&bs)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.max.bytes", BIG)
        // Survive the broker's downtime: keep retrying for 5 minutes.
        .set("message.timeout.ms", "300000")
        .create()
        .expect("producer");
    // Heavy records (big, or with many lines) go in once each, spread over the run; the rest
    // are drawn at random.
    let (heavy, light): (Vec<Hostile>, Vec<Hostile>) = corpus
        .into_iter()
        .partition(|h| h.value.as_ref().is_some_and(|v| v.len() > 16 * 1024) || h.tickets.len() > 10);
    let mut heavy = heavy.into_iter();
    let mut rng = StdRng::seed_from_u64(8);
    let mut tick = tokio::time::interval(Duration::from_secs(1) / plan.rate);
    let mut n: u64 = 0;
    let mut deliveries = Vec::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {}
        }
        n += 1;
        // One poison record 10 s in and then every minute; every 8th record a hostile one.
        let (key, value, kind) = if n % (u64::from(plan.rate) * 60) == u64::from(plan.rate) * 10 {
            let ticket = format!("poison-{n}-{}", "x".repeat(POISON_TICKET_BYTES));
            (
                format!("poison-{n}"),
                Some(known_event(&mut rng, &ticket)),
                Kind::Poison,
            )
        } else if n % 8 == 0 {
            let h = if n % 160 == 0 {
                heavy
                    .next()
                    .unwrap_or_else(|| light[rng.random_range(0..light.len())].clone())
            } else {
                light[rng.random_range(0..light.len())].clone()
            };
            (format!("hostile-{n}"), h.value.clone(), Kind::Hostile(h))
        } else {
            let ticket = format!("chaos-{n}");
            let value = known_event(&mut rng, &ticket);
            (ticket, Some(value), Kind::Known)
        };
        let headers = OwnedHeaders::new().insert(Header {
            key: "chaos-key",
            value: Some(key.as_bytes()),
        });
        let mut rec: FutureRecord<'_, str, [u8]> =
            FutureRecord::to(&topic).key(key.as_str()).headers(headers);
        if let Some(v) = &value {
            rec = rec.payload(v.as_slice());
        }
        if !matches!(kind, Kind::Known) {
            // Hostile and poison records are old (a replay, a long lag): parking must not make
            // them expire at once in the dead-letter topic.
            let age = OLD_STAMPS[(n / 8 % 2) as usize].as_millis() as u64;
            rec = rec.timestamp((now_ms() - age) as i64);
        }
        let fut = match producer.send_result(rec) {
            Ok(f) => f,
            Err((e, _)) => {
                say(format!("produce enqueue failed: {e}"));
                produced.lock().unwrap().failed += 1;
                continue;
            }
        };
        let produced = produced.clone();
        deliveries.push(tokio::spawn(async move {
            let landed = match fut.await {
                Ok(Ok(d)) => (d.partition, d.offset),
                _ => {
                    produced.lock().unwrap().failed += 1;
                    return;
                }
            };
            let mut p = produced.lock().unwrap();
            match kind {
                Kind::Known => {
                    p.tickets.insert(key, landed.0);
                }
                Kind::Poison => {
                    p.poison.insert(landed);
                }
                Kind::Hostile(h) => {
                    p.hostile += 1;
                    if h.invalid {
                        p.invalid.insert(landed, h.name.clone());
                    }
                    p.hostile_tickets.extend(h.tickets.iter().cloned());
                }
            }
        }));
    }
    for d in deliveries {
        let _ = d.await;
    }
}

// ---------------------------------------------------------------------------------------------
// service instances (the release binary as child processes)

struct Instance {
    name: &'static str,
    /// Its Kafka `client.id` (`chaos-A`…), which the group's member list shows.
    client_id: String,
    /// Where its signals are written down.
    timeline: Arc<Mutex<Timeline>>,
    admin: u16,
    config: PathBuf,
    logs_dir: PathBuf,
    child: Option<tokio::process::Child>,
    starts: u32,
    /// Log files of every incarnation.
    logs: Vec<PathBuf>,
}

impl Instance {
    fn new(name: &'static str, dir: &Path, toml: &str, timeline: Arc<Mutex<Timeline>>) -> Instance {
        let admin = free_port();
        let config = dir.join(format!("{name}.toml"));
        let client_id = format!("chaos-{name}");
        std::fs::write(
            &config,
            toml.replace("ADMIN_LISTEN", &format!("127.0.0.1:{admin}"))
                .replace("CLIENT_ID", &client_id),
        )
        .expect("write config");
        Instance {
            name,
            client_id,
            timeline,
            admin,
            config,
            logs_dir: dir.to_path_buf(),
            child: None,
            starts: 0,
            logs: Vec::new(),
        }
    }

    fn start(&mut self, bin: &Path, password: &str) {
        self.starts += 1;
        let log = self.logs_dir.join(format!("{}-{}.log", self.name, self.starts));
        let file = std::fs::File::create(&log).expect("log file");
        let child = tokio::process::Command::new(bin)
            .args(["run", "--config"])
            .arg(&self.config)
            .env(PASSWORD_ENV, password)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn elevate-sink");
        say(format!(
            "started {} #{} (pid {}, admin :{})",
            self.name,
            self.starts,
            child.id().unwrap_or(0),
            self.admin
        ));
        self.logs.push(log);
        self.child = Some(child);
    }

    /// Notes the signal in the timeline and sends it.
    fn send_signal(&self, pid: u32, kind: SignalKind) {
        lock(&self.timeline).signals.push(Sent {
            at_ms: now_ms(),
            client_id: self.client_id.clone(),
            kind,
        });
        signal(
            pid,
            match kind {
                SignalKind::Kill => SIGKILL,
                SignalKind::Term => SIGTERM,
            },
        );
    }

    async fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = c.id() {
                self.send_signal(pid, SignalKind::Kill);
            }
            let _ = c.wait().await;
            say(format!("SIGKILLed {}", self.name));
        }
    }

    /// SIGTERM and wait (bounded); returns whether it exited 0.
    async fn sigterm(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        if let Some(pid) = c.id() {
            self.send_signal(pid, SignalKind::Term);
        }
        match tokio::time::timeout(Duration::from_secs(30), c.wait()).await {
            Ok(Ok(s)) => {
                say(format!("{} exited after SIGTERM: {s}", self.name));
                s.success()
            }
            _ => {
                say(format!(
                    "{} did not exit within 30 s of SIGTERM: killing",
                    self.name
                ));
                let _ = c.kill().await;
                false
            }
        }
    }

    fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Partitions it currently owns (from /metrics); None when it does not answer.
    async fn assigned(&self, http: &reqwest::Client) -> Option<i64> {
        let text = http
            .get(format!("http://127.0.0.1:{}/metrics", self.admin))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|l| l.starts_with("elevate_sink_assigned_partitions "))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as i64)
    }

    /// Rebalance log lines so far (assigned, revoked) over every incarnation.
    fn rebalance_lines(&self) -> (usize, usize) {
        let mut a = 0;
        let mut r = 0;
        for log in &self.logs {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            a += text.matches("partitions assigned").count();
            r += text.matches("partitions revoked").count();
        }
        (a, r)
    }
}

/// Waits until the running instances own every partition, each at least one.
async fn await_balanced(insts: &[Instance], http: &reqwest::Client, timeout: Duration) -> bool {
    let running: Vec<&Instance> = insts.iter().filter(|i| i.running()).collect();
    let names: Vec<&str> = running.iter().map(|i| i.name).collect();
    let running = &running;
    await_cond(
        timeout,
        &format!("{names:?} to share all {PARTITIONS} partitions"),
        || async move {
            let mut total = 0;
            for i in running {
                match i.assigned(http).await {
                    Some(n) if n > 0 => total += n,
                    _ => return false,
                }
            }
            total == i64::from(PARTITIONS)
        },
    )
    .await
}

/// Waits until the stand-in accepted `n` more requests than now.
async fn await_progress(standin: &StandIn, n: usize, timeout: Duration, what: &str) -> bool {
    let target = standin.accepted_count() + n;
    await_cond(
        timeout,
        what,
        || async move { standin.accepted_count() >= target },
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// duplicates by cause: who owned which partition when, and what the run did to the owner

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A signal the run sent to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SignalKind {
    Kill,
    Term,
}

/// One signal, when and to whom.
#[derive(Debug, Clone)]
struct Sent {
    at_ms: u64,
    client_id: String,
    kind: SignalKind,
}

/// What the run did, as it did it: signals, the broker's downtimes (stop → answers again), and
/// the phases of the fault sequence (each lasts until the next begins).
#[derive(Debug, Default)]
struct Timeline {
    signals: Vec<Sent>,
    broker_down: Vec<(u64, u64)>,
    phases: Vec<(u64, String)>,
}

impl Timeline {
    /// The phase running at `ms` ("start" before the first).
    fn phase_at(&self, ms: u64) -> &str {
        self.phases
            .iter()
            .rev()
            .find(|(at, _)| *at <= ms)
            .map_or("start", |(_, name)| name.as_str())
    }

    /// Whether `ms` falls in a broker downtime or within `BROKER_SETTLE_MS` after it.
    fn broker_disturbed(&self, ms: u64) -> bool {
        self.broker_down
            .iter()
            .any(|&(from, to)| (from..=to + BROKER_SETTLE_MS).contains(&ms))
    }
}

/// A partition changing owner, as seen in the group's member list.
#[derive(Debug, Clone)]
struct Handoff {
    /// When the new owner was first seen.
    at_ms: u64,
    partition: i32,
    /// The previous owner's client id and when its member id was first seen.
    from_client: String,
    from_first_seen_ms: u64,
}

/// Why a partition changed owner (and, for a duplicate, why it was sent again). The table groups
/// them: clean hand-off (`Term`, `Join`), crash (`Kill`), other (`Broker`, `NoHandoff`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Cause {
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
const BROKER_SETTLE_MS: u64 = 30_000;

/// Why `h` happened: a signal to the previous owner during its membership, else the broker's
/// downtime, else a member joining. Returns the signal's index for per-event counts.
fn handoff_cause(h: &Handoff, t: &Timeline) -> (Cause, Option<usize>) {
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
struct DupReport {
    by_cause: HashMap<Cause, usize>,
    /// Duplicates that followed each signal (index into `Timeline::signals`).
    by_signal: HashMap<usize, usize>,
    /// `NoHandoff` duplicates by the phase of their previous accept (when the answer was lost).
    lost_by_phase: HashMap<String, usize>,
    handoffs_by_cause: HashMap<Cause, usize>,
}

/// Attributes every repeat accept of a known ticket to the earliest hand-off of the ticket's
/// partition between the previous accept and this one: that is where the knowledge that it was
/// done was lost (an owner that knew would have committed past it). None in between: the broker's
/// doing if the previous accept fell in a broker restart, else the answer to an earlier attempt
/// was lost and the request retried. Pure.
fn attribute_duplicates(
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

/// The partitions of `topic` in a consumer-protocol assignment (version, [topic, [partition]],
/// user data), as DescribeGroups returns it; `None` when it does not parse.
fn assigned_partitions(mut b: &[u8], topic: &str) -> Option<Vec<i32>> {
    fn take<const N: usize>(b: &mut &[u8]) -> Option<[u8; N]> {
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
fn watch_owners(bs: String, group: String, topic: String, stop: Arc<AtomicBool>) -> Vec<Handoff> {
    let c: BaseConsumer = client(&bs).create().expect("group watcher");
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

// ---------------------------------------------------------------------------------------------
// the end: reading back

/// A dead-letter record of the run's source topic.
struct Parked {
    /// Source (partition, offset).
    source: (i32, i64),
    /// `elevate-sink-http-status`, if any.
    status: Option<String>,
}

/// Every dead-letter record whose source topic is `topic`.
async fn dead_lettered(bs: &str, dlq: &str, topic: &str) -> Vec<Parked> {
    let (bs, dlq, topic) = (bs.to_string(), dlq.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = client(&bs)
            .set("group.id", "chaos-reader")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "100")
            .create()
            .expect("reader");
        let md = c
            .fetch_metadata(Some(&dlq), Duration::from_secs(10))
            .expect("metadata");
        let mut tpl = TopicPartitionList::new();
        let mut ends = HashMap::new();
        for p in md.topics()[0].partitions() {
            let (_, high) = c
                .fetch_watermarks(&dlq, p.id(), Duration::from_secs(10))
                .expect("watermarks");
            ends.insert(p.id(), high);
            tpl.add_partition_offset(&dlq, p.id(), Offset::Beginning).unwrap();
        }
        c.assign(&tpl).unwrap();
        let mut pos: HashMap<i32, i64> = ends.keys().map(|p| (*p, 0)).collect();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while pos.iter().any(|(p, o)| *o < ends[p]) && Instant::now() < deadline {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
                pos.insert(m.partition(), m.offset() + 1);
                let h = |name: &str| {
                    m.headers().and_then(|hs| {
                        hs.iter()
                            .find(|h| h.key == name)
                            .and_then(|h| h.value)
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                    })
                };
                if h("elevate-sink-source-topic").as_deref() == Some(topic.as_str()) {
                    if let (Some(p), Some(o)) = (
                        h("elevate-sink-source-partition").and_then(|s| s.parse().ok()),
                        h("elevate-sink-source-offset").and_then(|s| s.parse().ok()),
                    ) {
                        out.push(Parked {
                            source: (p, o),
                            status: h("elevate-sink-http-status"),
                        });
                    }
                }
            }
        }
        out
    })
    .await
    .expect("reader task")
}

/// Whether the group's committed offsets equal the high watermarks of every partition, and how
/// far behind each partition is (-1: could not be read).
async fn committed_at_end(bs: &str, group: &str, topic: &str) -> (bool, HashMap<i32, i64>) {
    let (bs, group, topic) = (bs.to_string(), group.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = client(&bs).set("group.id", &group).create().expect("client");
        let mut tpl = TopicPartitionList::new();
        let mut ends = HashMap::new();
        for p in 0..PARTITIONS {
            let Ok((_, high)) = c.fetch_watermarks(&topic, p, Duration::from_secs(10)) else {
                return (false, HashMap::from([(p, -1)]));
            };
            ends.insert(p, high);
            tpl.add_partition(&topic, p);
        }
        let Ok(got) = c.committed_offsets(tpl, Duration::from_secs(10)) else {
            return (false, HashMap::from([(0, -1)]));
        };
        let mut behind = HashMap::new();
        for e in got.elements() {
            let c = match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            };
            behind.insert(e.partition(), ends[&e.partition()] - c);
        }
        (behind.values().all(|&b| b == 0), behind)
    })
    .await
    .expect("offsets task")
}

// ---------------------------------------------------------------------------------------------
// the run

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
            eprintln!("{e}\nusage: cargo run --release --example chaos -- --short|--long");
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

fn config_toml(bs: &str, group: &str, topic: &str, dlq: &str, base_url: &str) -> String {
    format!(
        r#"# generated by examples/chaos.rs
[kafka]
bootstrap_servers = "{bs}"
group_id = "{group}"
topics = ["{topic}"]
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
"#
    )
}

/// The service binary: `CHAOS_SINK_BIN`, or `elevate-sink` next to this example's directory.
fn service_bin() -> Result<PathBuf, String> {
    let bin = std::env::var_os("CHAOS_SINK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("current exe");
            exe.parent()
                .and_then(Path::parent)
                .expect("target dir")
                .join("elevate-sink")
        });
    if !bin.exists() {
        return Err(format!(
            "service binary {} not found: cargo build --release --bin elevate-sink (or set CHAOS_SINK_BIN)",
            bin.display()
        ));
    }
    Ok(bin)
}

/// A run in progress: the parts, the instances, and what the faults phase counts.
struct Session {
    plan: Plan,
    bin: PathBuf,
    password: String,
    broker: Broker,
    topic: String,
    standin: StandIn,
    http: reqwest::Client,
    insts: Vec<Instance>,
    timeline: Arc<Mutex<Timeline>>,
    clean_exits: usize,
    unclean_exits: usize,
    outage_rebalances: usize,
}

impl Session {
    /// Marks the start of a phase in the timeline (the table names phases by these) and says
    /// `what` it does.
    fn phase(&self, name: &str, what: impl AsRef<str>) {
        say(what);
        lock(&self.timeline).phases.push((now_ms(), name.to_string()));
    }

    async fn calm(&self) {
        tokio::time::sleep(self.plan.calm).await;
    }

    async fn balanced(&self) -> bool {
        await_balanced(&self.insts, &self.http, Duration::from_secs(60)).await
    }

    async fn progress(&self, what: &str) -> bool {
        await_progress(&self.standin, 50, Duration::from_secs(90), what).await
    }

    fn start(&mut self, i: usize) {
        self.insts[i].start(&self.bin, &self.password);
    }

    async fn sigterm(&mut self, i: usize) {
        if self.insts[i].sigterm().await {
            self.clean_exits += 1;
        } else {
            self.unclean_exits += 1;
        }
    }

    /// Runs `faults` on the stand-in for `plan.fault` (phase `what`), then clears them and
    /// waits for progress.
    async fn elevate_fault(&self, what: &str, faults: Faults) {
        self.phase(what, format!("fault: {what} for {:?}", self.plan.fault));
        self.standin.set_faults(faults);
        tokio::time::sleep(self.plan.fault).await;
        self.standin.clear_faults();
        self.progress(&format!("deliveries after {what}")).await;
    }

    /// The broker goes away (gracefully, or SIGKILLed in the second round) and comes back.
    async fn broker_bounce(&mut self, round: u32) -> Result<(), String> {
        let down_at = now_ms();
        if round == 2 {
            self.phase("broker SIGKILL", "broker: SIGKILL");
            self.broker.kill();
        } else {
            self.phase("broker stop", "broker: stop");
            self.broker.stop();
        }
        tokio::time::sleep(self.plan.broker_down).await;
        say("broker: start again (same port, same data)");
        self.broker.restart()?;
        let (b, t) = (&self.broker, self.topic.as_str());
        await_cond(
            Duration::from_secs(120),
            "the broker to answer again",
            || async move { b.answers(t) },
        )
        .await;
        lock(&self.timeline).broker_down.push((down_at, now_ms()));
        await_progress(
            &self.standin,
            50,
            Duration::from_secs(120),
            "deliveries after the broker came back",
        )
        .await;
        Ok(())
    }

    /// Elevate down (connections refused) for longer than `max.poll.interval.ms`; counts A's
    /// rebalance events across it (expected 0).
    async fn outage(&mut self) -> Result<(), String> {
        let before = self.insts[0].rebalance_lines();
        self.phase(
            "Elevate down",
            format!(
                "fault: Elevate down for {:?} (max.poll.interval.ms = {MAX_POLL_MS})",
                self.plan.outage
            ),
        );
        self.standin.outage_start().await;
        tokio::time::sleep(self.plan.outage).await;
        self.standin.outage_end().await.map_err(|e| e.to_string())?;
        self.progress("deliveries after the outage").await;
        let after = self.insts[0].rebalance_lines();
        let during = after.0 - before.0 + after.1 - before.1;
        self.outage_rebalances += during;
        say(format!(
            "rebalance events of A across the outage: {during} (expected 0)"
        ));
        Ok(())
    }

    /// One round of the fault sequence (module doc, docs/chaos.md).
    async fn round(&mut self, round: u32) -> Result<(), String> {
        say(format!("=== round {round} of {}", self.plan.rounds));
        let seed = u64::from(round);
        // 1. SIGKILL and restart the service.
        self.calm().await;
        self.phase("SIGKILL A", "SIGKILL A and restart it");
        self.insts[0].sigkill().await;
        self.start(0);
        self.progress("deliveries after the restart").await;
        // 2. Elevate answers 500 to half the requests.
        let half_500 = Faults {
            failure_ratio: 0.5,
            seed,
            ..Faults::default()
        };
        self.elevate_fault("50% answered 500", half_500).await;
        // 3. Scale out 1 -> 3, and SIGKILL one of the three mid-stream.
        self.calm().await;
        self.phase("scale 1 -> 3", "scaling 1 -> 3");
        self.start(1);
        self.start(2);
        self.balanced().await;
        self.calm().await;
        self.phase("SIGKILL B", "SIGKILL B and restart it");
        self.insts[1].sigkill().await;
        self.start(1);
        self.balanced().await;
        // 4. Elevate throttles: 429 with Retry-After: 1 on 60% of requests.
        let throttle = Faults {
            throttle_ratio: 0.6,
            retry_after_secs: 1,
            seed,
            ..Faults::default()
        };
        self.elevate_fault("60% answered 429", throttle).await;
        // 5. The broker goes away and comes back.
        self.calm().await;
        self.broker_bounce(round).await?;
        // 6. Scale in 3 -> 1 (graceful).
        self.calm().await;
        self.phase("scale 3 -> 1", "scaling 3 -> 1 (SIGTERM)");
        self.sigterm(1).await;
        self.sigterm(2).await;
        self.balanced().await;
        // 7. Elevate slow, then fast again: requests pile up behind the concurrency limit and
        //    must still leave at the quota when answers speed up.
        self.calm().await;
        let slow = Faults {
            latency_ms: SLOW_LATENCY_MS,
            ..Faults::default()
        };
        self.elevate_fault("Elevate slow", slow).await;
        // 8. Elevate down for longer than max.poll.interval.ms.
        self.calm().await;
        self.outage().await?;
        // 9. SIGKILL and restart once more.
        self.calm().await;
        self.phase("SIGKILL A", "SIGKILL A and restart it");
        self.insts[0].sigkill().await;
        self.start(0);
        self.balanced().await;
        Ok(())
    }
}

/// Creates the source topic (no retention: it holds records three days old) and the dead-letter
/// topic (short retention, small segments), and waits for their leaders.
async fn create_topics(broker: &Broker, plan: &Plan, topic: &str, dlq: &str) -> Result<(), String> {
    let bs = broker.bootstrap.as_str();
    create_topic(bs, topic, PARTITIONS, &[("retention.ms", "-1")]).await?;
    let retention = plan.dlq_retention.as_millis().to_string();
    let dlq_configs = [
        ("retention.ms", retention.as_str()),
        ("segment.ms", DLQ_SEGMENT_MS),
    ];
    create_topic(bs, dlq, 2, &dlq_configs).await?;
    await_cond(Duration::from_secs(30), "topics to have leaders", || async move {
        broker.answers(topic) && broker.answers(dlq)
    })
    .await;
    Ok(())
}

async fn run(plan: Plan) -> Result<bool, String> {
    let bin = service_bin()?;
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
        .unwrap_or_else(free_port);
    say(format!(
        "{} run: service {}, logs in {}, broker state in {}",
        plan.name,
        bin.display(),
        log_dir.display(),
        kafka_dir.display()
    ));
    let corpus = load_corpus()?;
    let broker = Broker::up(kafka_dir, port)?;
    let bs = broker.bootstrap.clone();
    say(format!("broker at {bs}"));

    let mut rng = StdRng::seed_from_u64(std::process::id().into());
    let run_id = hex(&mut rng, 8);
    let (topic, dlq, group) = (
        format!("chaos-{run_id}-in"),
        format!("chaos-{run_id}-dlq"),
        format!("chaos-{run_id}"),
    );
    create_topics(&broker, &plan, &topic, &dlq).await?;
    let dlq_created = Instant::now();
    let password = format!("chaos-sasl-{}", hex(&mut rng, 24));
    let standin = StandIn::start().await.map_err(|e| e.to_string())?;
    standin.set_limits(Limits {
        max_body_bytes: Some(BODY_LIMIT),
        ..Limits::default()
    });
    let toml = config_toml(&bs, &group, &topic, &dlq, &standin.base_url());
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let insts = ["A", "B", "C"]
        .map(|n| Instance::new(n, &log_dir, &toml, timeline.clone()))
        .into();

    let watch_stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (bs, group, topic, stop) = (bs.clone(), group.clone(), topic.clone(), watch_stop.clone());
        std::thread::spawn(move || watch_owners(bs, group, topic, stop))
    };
    let produced = Arc::new(Mutex::new(Produced::default()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(produce_load(
        bs.clone(),
        topic.clone(),
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
        broker,
        topic: topic.clone(),
        standin,
        http: reqwest::Client::new(),
        insts,
        timeline: timeline.clone(),
        clean_exits: 0,
        unclean_exits: 0,
        outage_rebalances: 0,
    };
    s.start(0);
    s.balanced().await;
    await_progress(
        &s.standin,
        100,
        Duration::from_secs(60),
        "the first 100 deliveries",
    )
    .await;
    for round in 1..=plan.rounds {
        s.round(round).await?;
    }

    s.phase("drain", "load stops; waiting for everything to arrive");
    let _ = stop_tx.send(true);
    let _ = load.await;
    let produced = Arc::try_unwrap(produced)
        .map_err(|_| "producer still running")?
        .into_inner()
        .unwrap();
    let mut expected: HashSet<String> = produced.tickets.keys().cloned().collect();
    expected.extend(produced.hostile_tickets.iter().cloned());
    let mut must_park: HashSet<(i32, i64)> = produced.invalid.keys().copied().collect();
    must_park.extend(produced.poison.iter().copied());
    let drained = s.standin.wait_for_tickets(&expected, plan.drain).await.is_ok();
    // Once every ticket arrived, parking has long had its chance: what is not parked a minute
    // later is stuck or lost.
    let deadline = Instant::now() + Duration::from_secs(60);
    let parked = loop {
        let parked = dead_lettered(&bs, &dlq, &topic).await;
        let got: HashSet<(i32, i64)> = parked.iter().map(|p| p.source).collect();
        if must_park.is_subset(&got) || Instant::now() >= deadline {
            break parked;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let dlq_read_after = dlq_created.elapsed();
    let (bsr, gr, t) = (bs.as_str(), group.as_str(), topic.as_str());
    let at_end = await_cond(
        Duration::from_secs(60),
        "commits to reach the end",
        || async move { committed_at_end(bsr, gr, t).await.0 },
    )
    .await;
    s.sigterm(0).await;
    let (_, behind) = committed_at_end(&bs, &group, &topic).await;
    let elapsed = t0.elapsed();
    watch_stop.store(true, Ordering::Relaxed);
    let handoffs = watcher.join().map_err(|_| "group watcher panicked")?;

    let dump = log_dir.join("accepted.jsonl");
    let _ = s.standin.dump_jsonl(&dump).await;
    let outcome = Outcome {
        plan,
        group,
        produced,
        expected,
        parked,
        drained,
        at_end,
        behind,
        accepted: s
            .standin
            .accepted()
            .into_iter()
            .map(|a| (a.ticket, a.received_at_ms))
            .collect(),
        peak_1s: densest_window(&s.standin.arrivals_us(), Duration::from_secs(1)),
        status: s.standin.status_counts(),
        handoffs,
        dlq_read_after,
        started_ms,
        elapsed,
    };
    let ok = report(&outcome, &s, &lock(&timeline), &log_dir);
    for i in &mut s.insts {
        i.sigkill().await;
    }
    s.standin.shutdown().await;
    drop(s);
    Ok(ok)
}

/// What the run saw, for counting.
struct Outcome {
    plan: Plan,
    group: String,
    produced: Produced,
    /// Tickets that must reach the stand-in.
    expected: HashSet<String>,
    parked: Vec<Parked>,
    drained: bool,
    at_end: bool,
    behind: HashMap<i32, i64>,
    /// Every accept at the stand-in: (ticket, ms since the epoch), in arrival order.
    accepted: Vec<(String, u64)>,
    /// The most arrivals in one second at the stand-in, and when that second began (µs).
    peak_1s: (usize, u64),
    status: std::collections::BTreeMap<u16, u64>,
    handoffs: Vec<Handoff>,
    dlq_read_after: Duration,
    /// When the load began (ms since the epoch) and how long it all took.
    started_ms: u64,
    elapsed: Duration,
}

/// Log lines carrying the password, and carrying a planted key (`cust-…`/`sess-…`, the corpus's
/// too), and all lines, over every incarnation's log.
fn scan_logs(insts: &[Instance], password: &str) -> (usize, usize, usize) {
    let (mut pw_hits, mut key_hits, mut lines) = (0, 0, 0);
    for log in insts.iter().flat_map(|i| i.logs.iter()) {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines() {
            lines += 1;
            if line.contains(password) {
                pw_hits += 1;
            }
            if line.contains("cust-") || line.contains("sess-") {
                if key_hits == 0 {
                    say(format!("personal key in {}: {:.300}", log.display(), line));
                }
                key_hits += 1;
            }
        }
    }
    (pw_hits, key_hits, lines)
}

fn verdict(ok: bool, good: &'static str) -> &'static str {
    if ok {
        good
    } else {
        "FAIL"
    }
}

/// Counts, prints the table, and says whether every check held.
fn report(o: &Outcome, s: &Session, timeline: &Timeline, log_dir: &Path) -> bool {
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
        .filter(|p| o.behind.get(p) == Some(&0))
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
    let (pw_hits, key_hits, lines) = scan_logs(&s.insts, &s.password);
    let behind: i64 = o.behind.values().sum();
    let quota = RATE + BURST;
    let retention_sound = o.dlq_read_after < o.plan.dlq_retention;

    let checks = [
        missing.is_empty(),
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
            "records produced (known tickets + hostile + poison)",
            format!("{known} + {} + {}", o.produced.hostile, o.produced.poison.len()),
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
                "{} (quota {RATE} + burst {BURST} = {quota}), at {:.0} s, in \"{}\"",
                o.peak_1s.0,
                (o.peak_1s.1 / 1000).saturating_sub(o.started_ms) as f64 / 1000.0,
                timeline.phase_at(o.peak_1s.1 / 1000)
            ),
            verdict(o.peak_1s.0 <= quota, "ok (at most quota + burst)"),
        ),
        (
            "duplicates (known tickets accepted twice+)",
            format!("{dups} ({:.2}% of {known})", pct(dups, known)),
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
            "log lines with the SASL password / customerKey|sessionKey",
            format!("{pw_hits} / {key_hits} (of {lines} lines)"),
            verdict(pw_hits == 0 && key_hits == 0, "ok (must be 0)"),
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
    println!(
        "\n{} — logs and configs in {}",
        if ok { "PASS" } else { "FAIL" },
        log_dir.display()
    );
    ok
}

fn print_table(title: &str, rows: &[(&str, String, &str)]) {
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
