//! The chaos run (issue 8): the real service binary under a steady produce load of known tickets
//! mixed with the hostile records of `tests/data/`, while it is SIGKILLed and restarted, the
//! broker is stopped and restarted, the Elevate stand-in answers 500s, then 429s with
//! Retry-After, then is down for longer than `max.poll.interval.ms`, and the group is scaled
//! 1 → 3 → 1. Then it counts: expected tickets missing at the stand-in, hostile records missing
//! from the dead-letter topic, duplicates, rebalances, secrets in the logs, and prints a table.
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
//! Exit status: 0 when nothing is missing and the logs are clean, 1 otherwise, 2 on a setup error.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
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

use elevate_sink::standin::{Faults, StandIn};

/// Partitions of the source topic (enough for three instances to get two each).
const PARTITIONS: i32 = 6;
/// Largest record either topic or producer accepts (the corpus has 1 MiB records).
const BIG: &str = "4194304";
/// The dummy SASL password: it must never appear in a log line.
const PASSWORD_ENV: &str = "CHAOS_SASL_PASSWORD";

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

async fn create_topic(bs: &str, name: &str, partitions: i32) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = client(bs).create().map_err(|e| e.to_string())?;
    let t = NewTopic::new(name, partitions, TopicReplication::Fixed(1)).set("max.message.bytes", BIG);
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
    /// Known tickets whose record was acknowledged.
    tickets: HashSet<String>,
    /// (partition, offset) of acknowledged invalid hostile records, with the corpus name.
    invalid: HashMap<(i32, i64), String>,
    /// Tickets of acknowledged hostile records that map.
    hostile_tickets: HashSet<String>,
    /// Hostile records acknowledged.
    hostile: usize,
    /// Records whose delivery failed (not counted as expected).
    failed: usize,
}

/// Produces `plan.rate` records a second until `stop`; every 8th a hostile record.
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
        let (key, value, kind) = if n % 8 == 0 {
            let h = if n % 160 == 0 {
                heavy
                    .next()
                    .unwrap_or_else(|| light[rng.random_range(0..light.len())].clone())
            } else {
                light[rng.random_range(0..light.len())].clone()
            };
            (format!("hostile-{n}"), h.value.clone(), Some(h))
        } else {
            let ticket = format!("chaos-{n}");
            let ck = format!("cust-{}", hex(&mut rng, 32));
            let sk = format!("sess-{}", hex(&mut rng, 32));
            let ctx =
                ["PERSONALIZED", "UNPERSONALIZED", "ANONYMOUS", "SYNTHETIC", ""][rng.random_range(0..5)];
            let mut lines = vec![json!({"source": "elevate", "ticket": ticket, "productKey": "p"})];
            if rng.random_bool(0.3) {
                lines.push(json!({"source": "shop", "ticket": "not-ours", "productKey": "q"}));
            }
            let mut e = json!({"type": "add_to_cart", "market": "SE", "customerKey": ck, "sessionKey": sk,
                "visitor": {"userAgent": "chaos/1.0", "ip": "203.0.113.9"}, "lines": lines});
            if !ctx.is_empty() {
                e["userContext"] = json!(ctx);
            }
            (ticket, Some(serde_json::to_vec(&e).unwrap()), None)
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
                None => {
                    p.tickets.insert(key);
                }
                Some(h) => {
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
    admin: u16,
    config: PathBuf,
    logs_dir: PathBuf,
    child: Option<tokio::process::Child>,
    starts: u32,
    /// Log files of every incarnation.
    logs: Vec<PathBuf>,
}

impl Instance {
    fn new(name: &'static str, dir: &Path, toml: &str) -> Instance {
        let admin = free_port();
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            toml.replace("ADMIN_LISTEN", &format!("127.0.0.1:{admin}")),
        )
        .expect("write config");
        Instance {
            name,
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

    async fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = c.id() {
                signal(pid, SIGKILL);
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
            signal(pid, SIGTERM);
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
// the end: reading back

/// Every dead-letter record's source coordinates (source topic must be `topic`).
async fn dead_lettered(bs: &str, dlq: &str, topic: &str) -> Vec<(i32, i64)> {
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
                        out.push((p, o));
                    }
                }
            }
        }
        out
    })
    .await
    .expect("reader task")
}

/// Whether the group's committed offsets equal the high watermarks of every partition.
async fn committed_at_end(bs: &str, group: &str, topic: &str) -> (bool, i64) {
    let (bs, group, topic) = (bs.to_string(), group.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = client(&bs).set("group.id", &group).create().expect("client");
        let mut tpl = TopicPartitionList::new();
        let mut ends = HashMap::new();
        for p in 0..PARTITIONS {
            let Ok((_, high)) = c.fetch_watermarks(&topic, p, Duration::from_secs(10)) else {
                return (false, -1);
            };
            ends.insert(p, high);
            tpl.add_partition(&topic, p);
        }
        let Ok(got) = c.committed_offsets(tpl, Duration::from_secs(10)) else {
            return (false, -1);
        };
        let mut behind = 0;
        for e in got.elements() {
            let c = match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            };
            behind += ends[&e.partition()] - c;
        }
        (behind == 0, behind)
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
[kafka.secret_properties]
"sasl.password" = {{ env = "{PASSWORD_ENV}" }}
[elevate]
base_url = "{base_url}"
connect_timeout = "1s"
request_timeout = "3s"
max_in_flight_requests = 32
[rate]
requests_per_second = 400
burst = 50
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

async fn run(plan: Plan) -> Result<bool, String> {
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
    create_topic(&bs, &topic, PARTITIONS).await?;
    create_topic(&bs, &dlq, 2).await?;
    let (b, t, d) = (&broker, topic.as_str(), dlq.as_str());
    await_cond(Duration::from_secs(30), "topics to have leaders", || async move {
        b.answers(t) && b.answers(d)
    })
    .await;
    let password = format!("chaos-sasl-{}", hex(&mut rng, 24));
    let standin = StandIn::start().await.map_err(|e| e.to_string())?;
    let toml = config_toml(&bs, &group, &topic, &dlq, &standin.base_url());
    let http = reqwest::Client::new();
    let mut insts = vec![
        Instance::new("A", &log_dir, &toml),
        Instance::new("B", &log_dir, &toml),
        Instance::new("C", &log_dir, &toml),
    ];

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
    let mut clean_exits = 0;
    let mut unclean_exits = 0;
    let mut outage_rebalances = 0usize;
    let calm = |d: Duration| tokio::time::sleep(d);

    insts[0].start(&bin, &password);
    await_balanced(&insts, &http, Duration::from_secs(60)).await;
    await_progress(&standin, 100, Duration::from_secs(60), "the first 100 deliveries").await;

    for round in 1..=plan.rounds {
        say(format!("=== round {round} of {}", plan.rounds));

        // 1. SIGKILL and restart the service.
        calm(plan.calm).await;
        insts[0].sigkill().await;
        insts[0].start(&bin, &password);
        await_progress(
            &standin,
            50,
            Duration::from_secs(60),
            "deliveries after the restart",
        )
        .await;

        // 2. Elevate answers 500 to half the requests.
        say(format!(
            "fault: 50% of requests answered 500 for {:?}",
            plan.fault
        ));
        standin.set_faults(Faults {
            failure_ratio: 0.5,
            seed: u64::from(round),
            ..Faults::default()
        });
        tokio::time::sleep(plan.fault).await;
        standin.clear_faults();
        await_progress(&standin, 50, Duration::from_secs(60), "deliveries after the 500s").await;

        // 3. Scale out 1 -> 3, and SIGKILL one of the three mid-stream.
        calm(plan.calm).await;
        say("scaling 1 -> 3");
        insts[1].start(&bin, &password);
        insts[2].start(&bin, &password);
        await_balanced(&insts, &http, Duration::from_secs(60)).await;
        calm(plan.calm).await;
        insts[1].sigkill().await;
        insts[1].start(&bin, &password);
        await_balanced(&insts, &http, Duration::from_secs(60)).await;

        // 4. Elevate throttles: 429 with Retry-After: 1 on 60% of requests.
        say(format!(
            "fault: 60% of requests answered 429 (Retry-After: 1) for {:?}",
            plan.fault
        ));
        standin.set_faults(Faults {
            throttle_ratio: 0.6,
            retry_after_secs: 1,
            seed: u64::from(round),
            ..Faults::default()
        });
        tokio::time::sleep(plan.fault).await;
        standin.clear_faults();
        await_progress(&standin, 50, Duration::from_secs(60), "deliveries after the 429s").await;

        // 5. The broker goes away (gracefully, or SIGKILLed in the second round) and comes back.
        calm(plan.calm).await;
        if round == 2 {
            say("broker: SIGKILL");
            broker.kill();
        } else {
            say("broker: stop");
            broker.stop();
        }
        tokio::time::sleep(plan.broker_down).await;
        say("broker: start again (same port, same data)");
        broker.restart()?;
        await_cond(
            Duration::from_secs(120),
            "the broker to answer again",
            || async move { b.answers(t) },
        )
        .await;
        await_progress(
            &standin,
            50,
            Duration::from_secs(120),
            "deliveries after the broker came back",
        )
        .await;

        // 6. Scale in 3 -> 1 (graceful).
        calm(plan.calm).await;
        say("scaling 3 -> 1");
        for i in [1, 2] {
            if insts[i].sigterm().await {
                clean_exits += 1;
            } else {
                unclean_exits += 1;
            }
        }
        await_balanced(&insts, &http, Duration::from_secs(60)).await;

        // 7. Elevate down for longer than max.poll.interval.ms.
        calm(plan.calm).await;
        let before = insts[0].rebalance_lines();
        say(format!(
            "fault: Elevate down for {:?} (max.poll.interval.ms = {MAX_POLL_MS})",
            plan.outage
        ));
        standin.outage_start().await;
        tokio::time::sleep(plan.outage).await;
        standin.outage_end().await.map_err(|e| e.to_string())?;
        await_progress(
            &standin,
            50,
            Duration::from_secs(90),
            "deliveries after the outage",
        )
        .await;
        let after = insts[0].rebalance_lines();
        let during = after.0 - before.0 + after.1 - before.1;
        outage_rebalances += during;
        say(format!(
            "rebalance events of A across the outage: {during} (expected 0)"
        ));

        // 8. SIGKILL and restart once more.
        calm(plan.calm).await;
        insts[0].sigkill().await;
        insts[0].start(&bin, &password);
        await_balanced(&insts, &http, Duration::from_secs(60)).await;
    }

    say("load stops; waiting for everything to arrive");
    let _ = stop_tx.send(true);
    let _ = load.await;
    let produced = Arc::try_unwrap(produced)
        .map_err(|_| "producer still running")?
        .into_inner()
        .unwrap();
    let mut expected: HashSet<String> = produced.tickets.clone();
    expected.extend(produced.hostile_tickets.iter().cloned());
    let invalid: HashSet<(i32, i64)> = produced.invalid.keys().copied().collect();
    let drained = standin.wait_for_tickets(&expected, plan.drain).await.is_ok();
    let deadline = Instant::now() + plan.drain;
    let parked = loop {
        let parked = dead_lettered(&bs, &dlq, &topic).await;
        let got: HashSet<(i32, i64)> = parked.iter().copied().collect();
        if invalid.is_subset(&got) || Instant::now() >= deadline {
            break parked;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let (bsr, gr) = (bs.as_str(), group.as_str());
    let at_end = await_cond(
        Duration::from_secs(60),
        "commits to reach the end",
        || async move { committed_at_end(bsr, gr, t).await.0 },
    )
    .await;
    if insts[0].sigterm().await {
        clean_exits += 1;
    } else {
        unclean_exits += 1;
    }
    let (_, behind) = committed_at_end(&bs, &group, &topic).await;
    let elapsed = t0.elapsed();

    // --- counting
    let accepted = standin.accepted_tickets();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in &accepted {
        *counts.entry(t.as_str()).or_default() += 1;
    }
    let missing_tickets = expected
        .iter()
        .filter(|t| !counts.contains_key(t.as_str()))
        .count();
    let known = produced.tickets.len();
    let dups: usize = produced
        .tickets
        .iter()
        .map(|t| counts.get(t.as_str()).copied().unwrap_or(1).saturating_sub(1))
        .sum();
    let parked_set: HashSet<(i32, i64)> = parked.iter().copied().collect();
    let missing_hostile: Vec<&String> = produced
        .invalid
        .iter()
        .filter(|(k, _)| !parked_set.contains(k))
        .map(|(_, n)| n)
        .collect();
    let unexpected_parked = parked_set.difference(&invalid).count();
    let dlq_dups = parked.len() - parked_set.len();
    let (mut assigned, mut revoked) = (0, 0);
    let mut logs = Vec::new();
    for i in &insts {
        let (a, r) = i.rebalance_lines();
        assigned += a;
        revoked += r;
        logs.extend(i.logs.iter().cloned());
    }
    // --- the logs: no password, no personal key in clear (every planted key starts with
    // "cust-" or "sess-", the corpus's too)
    let (mut pw_hits, mut key_hits, mut lines) = (0, 0, 0);
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines() {
            lines += 1;
            if line.contains(&password) {
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
    let dump = log_dir.join("accepted.jsonl");
    let _ = standin.dump_jsonl(&dump).await;
    let status = standin.status_counts();

    let ok = missing_tickets == 0
        && missing_hostile.is_empty()
        && pw_hits == 0
        && key_hits == 0
        && drained
        && at_end
        && behind == 0
        && unclean_exits == 0;
    let pct = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 * 100.0 / b as f64 };
    let rows: Vec<(&str, String, &str)> = vec![
        (
            "records produced (known tickets + hostile)",
            format!("{} + {}", known, produced.hostile),
            "",
        ),
        ("produce failures (not expected)", produced.failed.to_string(), ""),
        (
            "expected tickets missing at the stand-in",
            format!("{missing_tickets} of {}", expected.len()),
            if missing_tickets == 0 {
                "ok (must be 0)"
            } else {
                "FAIL"
            },
        ),
        (
            "hostile records missing from the dead-letter topic",
            format!("{} of {}", missing_hostile.len(), invalid.len()),
            if missing_hostile.is_empty() {
                "ok (must be 0)"
            } else {
                "FAIL"
            },
        ),
        (
            "duplicates (known tickets sent twice+)",
            format!("{dups} ({:.2}%)", pct(dups, known)),
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
            outage_rebalances.to_string(),
            if outage_rebalances == 0 {
                "ok (expected 0)"
            } else {
                "note"
            },
        ),
        (
            "committed offsets behind the end at exit",
            behind.to_string(),
            if behind == 0 && at_end { "ok" } else { "FAIL" },
        ),
        (
            "SIGTERM exits: clean / not",
            format!("{clean_exits} / {unclean_exits}"),
            if unclean_exits == 0 { "ok" } else { "FAIL" },
        ),
        (
            "service starts (A/B/C)",
            format!("{}/{}/{}", insts[0].starts, insts[1].starts, insts[2].starts),
            "",
        ),
        ("stand-in answers by status", format!("{status:?}"), ""),
        (
            "log lines with the SASL password / customerKey|sessionKey",
            format!("{pw_hits} / {key_hits} (of {lines} lines)"),
            if pw_hits == 0 && key_hits == 0 {
                "ok (must be 0)"
            } else {
                "FAIL"
            },
        ),
        ("elapsed", format!("{:.0} s", elapsed.as_secs_f64()), ""),
    ];
    println!();
    println!("chaos run ({}), group {group}", plan.name);
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
    for (k, val, verdict) in &rows {
        println!("| {k:w$} | {val:v$} | {verdict:x$} |");
    }
    if !missing_hostile.is_empty() {
        println!(
            "missing hostile records: {:?}",
            &missing_hostile[..missing_hostile.len().min(20)]
        );
    }
    if missing_tickets > 0 {
        let few: Vec<&String> = expected
            .iter()
            .filter(|t| !counts.contains_key(t.as_str()))
            .take(20)
            .collect();
        println!("missing tickets (first 20): {few:?}");
    }
    println!(
        "\n{} — logs and configs in {}",
        if ok { "PASS" } else { "FAIL" },
        log_dir.display()
    );
    for i in &mut insts {
        i.sigkill().await;
    }
    standin.shutdown().await;
    drop(broker);
    Ok(ok)
}
