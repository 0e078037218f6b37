//! The benchmark harness (issue 7): one command, one run, one preloaded topic, ratios.
//!
//! ```text
//! export KAFKA_BOOTSTRAP_SERVERS=$(scripts/kafka up)     # or a running scripts/kafka broker
//! cargo run --release --example bench -- [--records N] [--smoke] [--out bench/results]
//! ```
//!
//! It builds the release binaries (`elevate-sink`, `elevate-standin`), preloads a topic with
//! realistic default-shape cart events (`testkit::events`; the produce time is the
//! Kafka record timestamp), starts the stand-in as its own process, and measures in order:
//!
//! 1. the consume ceiling: a bare `BaseConsumer` (settings from `kafka::consumer_config`, the
//!    service's own) reading the whole topic and discarding it;
//! 2. the HTTP ceiling: our load generator (reqwest, N keep-alive connections, the sink's exact
//!    request shape from `request::build`) against the stand-in;
//! 3. `elevate-sink run` end to end, unthrottled, as a child process (and again on a topic a
//!    quarter the size, for peak RSS);
//! 4. `elevate-sink run` throttled at a set rate;
//! 5. produce-to-204 latency while records are produced at a steady rate below capacity.
//!
//! Results: `OUT/latest.md` (table) and `OUT/latest.json`. Environment overrides of the service
//! config (`ELEVATE_SINK__…`) reach both the sink child and the consume ceiling's consumer, so a
//! tuning is benchmarked fairly; the effective tuning is written into the results.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Parser;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::Deserialize;
use serde_json::{json, Value};

use elevate_sink::config::{Config, MappingConfig};
use elevate_sink::kafka::{consumer_config, SourceRecord};
use elevate_sink::request::{build, endpoint, HttpRequest};
use elevate_sink::select::map_record;

use testkit::events;

/// Benchmark elevate-sink against the real broker and the stand-in; see the module docs.
#[derive(Parser, Debug, Clone)]
#[command(about)]
struct Args {
    /// Records preloaded into the main topic (default: 1000000, smoke: 3000).
    #[arg(long)]
    records: Option<u64>,
    /// Tiny topic and short phases (CI): checks the harness works; numbers mean nothing.
    #[arg(long)]
    smoke: bool,
    /// Directory for latest.md and latest.json.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Partitions of the bench topics.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Concurrent keep-alive connections of the HTTP load generator, one run each.
    #[arg(long, value_delimiter = ',', default_value = "32,128")]
    http_conns: Vec<usize>,
    /// Seconds each HTTP load run measures (default 8, smoke 1), after 1 s of warm-up.
    #[arg(long)]
    http_secs: Option<f64>,
    /// Rate quota of the throttled phase, requests per second (default 1000, smoke 200).
    #[arg(long)]
    throttle_rps: Option<f64>,
    /// Seconds the throttled phase measures (default 30, smoke 3).
    #[arg(long)]
    throttle_secs: Option<f64>,
    /// Records per second produced in the latency phase (default 500, smoke 200).
    #[arg(long)]
    latency_rps: Option<f64>,
    /// Seconds the latency phase produces for (default 10, smoke 2).
    #[arg(long)]
    latency_secs: Option<f64>,
    /// Skip `cargo build [--release] --bins` (use the binaries already in the target dir).
    #[arg(long)]
    no_build: bool,
    /// Extra TOML appended to the sink's config (tuning, e.g. `[pipeline]` keys).
    #[arg(long)]
    config_extra: Option<PathBuf>,
}

/// Phase lengths and sizes after applying the smoke defaults.
#[derive(Debug, Clone)]
struct Plan {
    /// Records in the main topic.
    records: u64,
    /// Records in the small topic (RSS flatness).
    small_records: u64,
    /// Seconds per HTTP load run.
    http_secs: f64,
    /// Throttled quota.
    throttle_rps: f64,
    /// Throttled measuring window.
    throttle_secs: f64,
    /// Latency phase produce rate.
    latency_rps: f64,
    /// Latency phase produce time.
    latency_secs: f64,
    /// Longest wait for one sink phase to finish.
    phase_timeout: Duration,
}

impl Plan {
    fn from(a: &Args) -> Plan {
        let s = a.smoke;
        let records = a.records.unwrap_or(if s { 3_000 } else { 1_000_000 });
        Plan {
            records,
            small_records: (records / 4).max(100),
            http_secs: a.http_secs.unwrap_or(if s { 1.0 } else { 8.0 }),
            throttle_rps: a.throttle_rps.unwrap_or(if s { 200.0 } else { 1000.0 }),
            throttle_secs: a.throttle_secs.unwrap_or(if s { 3.0 } else { 30.0 }),
            latency_rps: a.latency_rps.unwrap_or(if s { 200.0 } else { 500.0 }),
            latency_secs: a.latency_secs.unwrap_or(if s { 2.0 } else { 10.0 }),
            phase_timeout: Duration::from_secs(if s { 60 } else { 1800 }),
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn say(msg: impl AsRef<str>) {
    eprintln!("bench: {}", msg.as_ref());
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

// ---------------------------------------------------------------------------------------------
// process and machine accounting from /proc

/// CPU time (user + system) of a process, in seconds.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the command: state is #3 overall, utime #14, stime #15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// A `/proc/PID/status` field in KiB (e.g. `VmHWM`).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// (busy, total) jiffies of the whole machine.
fn machine_jiffies() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// CPU use of the processes that matter over one phase.
struct CpuMeter {
    /// Processes measured: name, pid, CPU seconds at start.
    procs: Vec<(String, u32, f64)>,
    /// Machine (busy, total) jiffies at start.
    machine: (u64, u64),
    /// Wall clock at start.
    start: Instant,
}

impl CpuMeter {
    fn start(procs: &[(&str, Option<u32>)]) -> CpuMeter {
        CpuMeter {
            procs: procs
                .iter()
                .filter_map(|(n, p)| p.map(|p| (n.to_string(), p, cpu_secs(p).unwrap_or(0.0))))
                .collect(),
            machine: machine_jiffies(),
            start: Instant::now(),
        }
    }

    /// Cores used by each process, and by the whole machine (all processes, ours and others').
    fn stop(&self) -> Value {
        let wall = self.start.elapsed().as_secs_f64().max(1e-3);
        let mut out = serde_json::Map::new();
        let mut ours = 0.0;
        for (name, pid, start) in &self.procs {
            let used = cpu_secs(*pid).map(|c| c - start).unwrap_or(0.0);
            ours += used / wall;
            out.insert(name.clone(), json!(round(used / wall, 2)));
        }
        let (busy, total) = machine_jiffies();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let m = (busy - self.machine.0) as f64 / ((total - self.machine.1) as f64).max(1.0) * cores;
        out.insert("machine".into(), json!(round(m, 2)));
        out.insert("others".into(), json!(round((m - ours).max(0.0), 2)));
        Value::Object(out)
    }
}

/// Samples peak and current RSS of a process every 50 ms until stopped.
struct RssSampler {
    /// Set to stop the thread.
    stop: Arc<AtomicBool>,
    /// Highest VmHWM seen, KiB.
    hwm: Arc<AtomicU64>,
    /// Highest VmRSS seen, KiB.
    rss: Arc<AtomicU64>,
    /// The sampling thread.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let hwm = Arc::new(AtomicU64::new(0));
        let rss = Arc::new(AtomicU64::new(0));
        let (s, h, r) = (stop.clone(), hwm.clone(), rss.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(v) = status_kib(pid, "VmHWM") {
                    h.fetch_max(v, Ordering::Relaxed);
                }
                if let Some(v) = status_kib(pid, "VmRSS") {
                    r.fetch_max(v, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssSampler {
            stop,
            hwm,
            rss,
            thread: Some(thread),
        }
    }

    /// Peak RSS in MiB (VmHWM, or the highest VmRSS sample if that is higher).
    fn peak_mib(&mut self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let kib = self
            .hwm
            .load(Ordering::Relaxed)
            .max(self.rss.load(Ordering::Relaxed));
        kib as f64 / 1024.0
    }
}

// ---------------------------------------------------------------------------------------------
// Kafka

fn client(bs: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bs);
    c
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), now_ms())
}

async fn create_topic(bs: &str, name: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client(bs).create()?;
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(15)));
    for r in admin.create_topics([&topic], &opts).await? {
        if let Err((t, code)) = r {
            bail!("create topic {t}: {code}");
        }
    }
    // Wait until every partition has a leader.
    let (bs, name) = (bs.to_owned(), name.to_owned());
    tokio::task::spawn_blocking(move || -> Result<()> {
        let c: BaseConsumer = client(&bs).create()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(md) = c.fetch_metadata(Some(&name), Duration::from_secs(5)) {
                if let Some(t) = md.topics().iter().find(|t| t.name() == name) {
                    if t.error().is_none()
                        && t.partitions().len() == partitions as usize
                        && t.partitions().iter().all(|p| p.leader() >= 0)
                    {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("topic {name} has no leaders after 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await?
}

fn producer(bs: &str) -> Result<FutureProducer> {
    Ok(client(bs)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "60000")
        .create()?)
}

/// What was produced to one topic.
#[derive(Debug, Default)]
struct Produced {
    /// Kafka record timestamp (ms) of each record, by record id.
    ts: Vec<i64>,
    /// Notifications the records must produce.
    notifications: u64,
    /// Bytes of record values.
    bytes: u64,
}

/// Produces record `id` with the producer's current time as its timestamp.
async fn send_one(
    p: &FutureProducer,
    topic: &str,
    gen: &mut events::Events,
    id: u64,
    out: &mut Produced,
) -> Result<rdkafka::producer::DeliveryFuture> {
    let ts = now_ms();
    let at = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ts as u64)).to_string();
    let g = gen.event(id, &at);
    out.notifications += u64::from(g.notifications);
    out.bytes += g.value.len() as u64;
    out.ts.push(ts);
    let key = format!("sess-{}", id % 100_000);
    let mut rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic)
        .key(key.as_str())
        .payload(g.value.as_slice())
        .timestamp(ts);
    loop {
        match p.send_result(rec) {
            Ok(f) => return Ok(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                rec = back;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err((e, _)) => bail!("produce to {topic}: {e}"),
        }
    }
}

async fn await_deliveries(pending: Vec<rdkafka::producer::DeliveryFuture>) -> Result<()> {
    for r in futures::future::join_all(pending).await {
        match r {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => bail!("record not delivered: {e}"),
            Err(_) => bail!("producer dropped a delivery"),
        }
    }
    Ok(())
}

/// Preloads `n` records as fast as the broker takes them.
async fn preload(bs: &str, topic: &str, n: u64, seed: u64) -> Result<Produced> {
    let p = producer(bs)?;
    let mut gen = events::Events::new(seed);
    let mut out = Produced {
        ts: Vec::with_capacity(n as usize),
        ..Produced::default()
    };
    let mut pending = Vec::with_capacity(n as usize);
    for id in 0..n {
        pending.push(send_one(&p, topic, &mut gen, id, &mut out).await?);
    }
    await_deliveries(pending).await?;
    Ok(out)
}

/// Produces at a steady `rate` records/s for `secs`, each stamped with its produce time.
async fn produce_steady(bs: &str, topic: &str, rate: f64, secs: f64, seed: u64) -> Result<Produced> {
    let p = producer(bs)?;
    let mut gen = events::Events::new(seed);
    let mut out = Produced::default();
    let mut pending = Vec::new();
    let start = Instant::now();
    let total = (rate * secs).round() as u64;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut id = 0u64;
    while id < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate) as u64).min(total);
        while id < due {
            pending.push(send_one(&p, topic, &mut gen, id, &mut out).await?);
            id += 1;
        }
    }
    await_deliveries(pending).await?;
    Ok(out)
}

fn partition_list(c: &BaseConsumer, topic: &str) -> Result<Vec<i32>> {
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .context("topic not in metadata")?;
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

/// True when `group` has committed the high watermark of every partition of `topic`.
fn committed_at_end(c: &BaseConsumer, topic: &str) -> Result<bool> {
    let mut tpl = TopicPartitionList::new();
    let mut high = BTreeMap::new();
    for p in partition_list(c, topic)? {
        let (_, h) = c.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        high.insert(p, h);
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(got
        .elements_for_topic(topic)
        .iter()
        .all(|e| matches!(e.offset(), Offset::Offset(o) if Some(&o) == high.get(&e.partition()))))
}

/// Phase 1: a bare consumer with the service's settings reads the whole topic and discards it.
fn consume_ceiling(cfg: &Config, topic: &str, expected: u64) -> Result<Value> {
    let c: BaseConsumer = consumer_config(cfg, &[], &unique("bench-ceiling")).create()?;
    let mut tpl = TopicPartitionList::new();
    for p in partition_list(&c, topic)? {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let start = Instant::now();
    let mut first = None;
    let mut last = start;
    let mut n = 0u64;
    let mut bytes = 0u64;
    while n < expected {
        if start.elapsed() > Duration::from_secs(600) {
            bail!("consume ceiling: only {n} of {expected} records after 600 s");
        }
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                bytes += m.payload().map_or(0, |p| p.len() as u64);
                n += 1;
                last = Instant::now();
                first.get_or_insert(last);
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => bail!("consume ceiling: {e}"),
        }
    }
    let first = first.unwrap_or(start);
    let secs = (last - first).as_secs_f64().max(1e-3);
    Ok(json!({
        "records": n,
        "seconds": round(secs, 3),
        "records_per_s": round(n as f64 / secs, 0),
        "mib_per_s": round(bytes as f64 / secs / 1048576.0, 1),
        "startup_s": round((first - start).as_secs_f64(), 3),
    }))
}

/// Phase 1b (diagnostic): the service's consume path without HTTP — a `StreamConsumer` in the
/// group (subscribe), each record copied into a `SourceRecord` and mapped, nothing sent.
async fn stream_ceiling(cfg: &Config, topic: &str, expected: u64) -> Result<Value> {
    let c: StreamConsumer = consumer_config(cfg, &[], &unique("bench-stream")).create()?;
    c.subscribe(&[topic])?;
    let mapping = MappingConfig::default();
    let start = Instant::now();
    let mut first = None;
    let mut last = start;
    let mut n = 0u64;
    let mut notes = 0u64;
    while n < expected {
        if start.elapsed() > Duration::from_secs(600) {
            bail!("stream ceiling: only {n} of {expected} records after 600 s");
        }
        let m = match tokio::time::timeout(Duration::from_secs(1), c.recv()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => bail!("stream ceiling: {e}"),
            Err(_) => continue,
        };
        let src = SourceRecord::from_message(&m);
        drop(m);
        if let Ok(mapped) = map_record(&mapping, src.value.as_deref()) {
            notes += mapped.notifications.len() as u64;
        }
        n += 1;
        last = Instant::now();
        first.get_or_insert(last);
    }
    let first = first.unwrap_or(start);
    let secs = (last - first).as_secs_f64().max(1e-3);
    Ok(json!({
        "records": n,
        "notifications": notes,
        "seconds": round(secs, 3),
        "records_per_s": round(n as f64 / secs, 0),
        "startup_s": round((first - start).as_secs_f64(), 3),
    }))
}

// ---------------------------------------------------------------------------------------------
// the stand-in process

/// One accepted request, as `GET /_standin/accepted` lists it (fields we use).
#[derive(Deserialize)]
struct AcceptedLine {
    /// The ticket sent.
    ticket: String,
    /// When the stand-in accepted it.
    received_at_ms: i64,
}

/// The stand-in, running as its own process.
struct Standin {
    /// The child process.
    child: Child,
    /// Its base URL.
    base: String,
    /// Client for the control API.
    http: reqwest::Client,
}

impl Standin {
    fn start(bin: &Path) -> Result<Standin> {
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("stand-in stdout")?;
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        let base = line.trim().trim_end_matches('/').to_string();
        if !base.starts_with("http") {
            bail!("stand-in printed {line:?} instead of its base URL");
        }
        Ok(Standin {
            child,
            base,
            http: reqwest::Client::new(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn reset(&self) -> Result<()> {
        self.http
            .post(format!("{}/_standin/reset", self.base))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    async fn stats(&self) -> Result<Value> {
        Ok(self
            .http
            .get(format!("{}/_standin/stats", self.base))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    async fn accepted_count(&self) -> Result<u64> {
        Ok(self.stats().await?["accepted"].as_u64().unwrap_or(0))
    }

    /// Streams `GET /_standin/accepted`, calling `f(ticket, received_at_ms)` per line.
    async fn accepted(&self, mut f: impl FnMut(&str, i64)) -> Result<()> {
        let mut resp = self
            .http
            .get(format!("{}/_standin/accepted", self.base))
            .send()
            .await?
            .error_for_status()?;
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            buf.extend_from_slice(&chunk);
            let mut start = 0;
            while let Some(i) = buf[start..].iter().position(|&b| b == b'\n') {
                let line = &buf[start..start + i];
                if !line.is_empty() {
                    let a: AcceptedLine = serde_json::from_slice(line)?;
                    f(&a.ticket, a.received_at_ms);
                }
                start += i + 1;
            }
            buf.drain(..start);
        }
        if !buf.is_empty() {
            let a: AcceptedLine = serde_json::from_slice(&buf)?;
            f(&a.ticket, a.received_at_ms);
        }
        Ok(())
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Phase 2: N keep-alive connections post the sink's exact requests as fast as answered.
async fn http_ceiling(base: &str, conns: usize, secs: f64) -> Result<Value> {
    let mapping = MappingConfig::default();
    let ep = endpoint(&base.parse()?);
    let mut gen = events::Events::new(99);
    let mut reqs: Vec<HttpRequest> = Vec::new();
    for id in 0..4000 {
        let g = gen.event(1_000_000_000 + id, "2026-11-20T10:15:30.123Z");
        if let Ok(m) = map_record(&mapping, Some(&g.value)) {
            reqs.extend(m.notifications.iter().map(|n| build(&ep, n, true)));
        }
    }
    let reqs = Arc::new(reqs);
    // The same client settings as `send::Sender`.
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(conns)
        .tcp_nodelay(true)
        .gzip(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("elevate-sink-bench")
        .build()?;
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (http, reqs, ok, bad, stop) = (http.clone(), reqs.clone(), ok.clone(), bad.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = c * 997;
            while !stop.load(Ordering::Relaxed) {
                let r = &reqs[i % reqs.len()];
                i += 1;
                let mut b = http.post(&r.url).body(r.body.clone());
                for (k, v) in &r.headers {
                    b = b.header(*k, v);
                }
                match b.send().await {
                    Ok(resp) if resp.status().as_u16() == 204 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => bad.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (ok0, bad0, t0) = (
        ok.load(Ordering::Relaxed),
        bad.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let (ok1, bad1, t1) = (
        ok.load(Ordering::Relaxed),
        bad.load(Ordering::Relaxed),
        Instant::now(),
    );
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let s = (t1 - t0).as_secs_f64();
    Ok(json!({
        "connections": conns,
        "seconds": round(s, 2),
        "requests_per_s": round((ok1 - ok0) as f64 / s, 0),
        "non_204": bad1 - bad0,
    }))
}

// ---------------------------------------------------------------------------------------------
// the sink process

/// Paths and addresses every phase needs.
struct Env {
    /// Kafka bootstrap servers.
    bs: String,
    /// `target/release`.
    bin_dir: PathBuf,
    /// Scratch directory for configs and logs.
    scratch: PathBuf,
    /// Extra TOML for the sink config.
    extra: String,
    /// The broker's pid, if known (CPU accounting).
    broker_pid: Option<u32>,
}

/// `elevate-sink run` as a child process.
struct Sink {
    /// The child.
    child: Child,
    /// Samples its RSS.
    rss: RssSampler,
    /// Its admin listener port.
    admin_port: u16,
    /// Its log file.
    log: PathBuf,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The sink config of a phase (also what the consume ceiling's consumer is built from).
fn sink_toml(
    env: &Env,
    topic: &str,
    group: &str,
    base_url: &str,
    rps: f64,
    burst: u32,
    admin: u16,
) -> String {
    format!(
        r#"[kafka]
bootstrap_servers = "{bs}"
group_id = "{group}"
topics = ["{topic}"]
[elevate]
base_url = "{base_url}"
[rate]
requests_per_second = {rps:?}
burst = {burst}
[dead_letter]
topic = "{topic}-dlq"
[admin]
listen = "127.0.0.1:{admin}"
[log]
level = "warn"
format = "json"
{extra}
"#,
        bs = env.bs,
        extra = env.extra,
    )
}

impl Sink {
    fn start(env: &Env, name: &str, toml: &str, admin_port: u16) -> Result<Sink> {
        let cfg_path = env.scratch.join(format!("{name}.toml"));
        std::fs::write(&cfg_path, toml)?;
        let log = env.scratch.join(format!("{name}.log"));
        let child = Command::new(env.bin_dir.join("elevate-sink"))
            .args(["run", "--config"])
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting elevate-sink")?;
        let rss = RssSampler::start(child.id());
        Ok(Sink {
            child,
            rss,
            admin_port,
            log,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(st) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            bail!(
                "elevate-sink exited early ({st}); log tail:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let url = format!("http://127.0.0.1:{}/readyz", self.admin_port);
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.check_alive()?;
            if let Ok(r) = http.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("elevate-sink not ready after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The admin `/metrics` text.
    async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.admin_port);
        match reqwest::get(&url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// SIGTERM, wait (at most 30 s), and the peak RSS in MiB.
    fn stop(mut self) -> Result<f64> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(self.rss.peak_mib())
    }
}

/// Sum of samples of a metric family in Prometheus text (`needle` = name plus label prefix).
fn metric(text: &str, needle: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What the stand-in accepted in a phase, against what was produced.
#[derive(Debug, Default)]
struct Delivered {
    /// Accepted requests.
    accepted: u64,
    /// Distinct tickets among them.
    distinct: u64,
    /// Earliest accept (epoch ms).
    first_ms: i64,
    /// Latest accept (epoch ms).
    last_ms: i64,
    /// Accept times, sorted (epoch ms).
    times: Vec<i64>,
    /// Produce-to-204 latencies (ms), sorted.
    latencies: Vec<i64>,
}

async fn delivered(standin: &Standin, produced: &Produced) -> Result<Delivered> {
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

fn pct(sorted: &[i64], p: f64) -> Value {
    if sorted.is_empty() {
        return Value::Null;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    json!(sorted[i])
}

/// Phase 3: the sink end to end on a preloaded topic, unthrottled; returns figures.
async fn e2e(
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
    let started = now_ms();
    let mut sink = Sink::start(env, name, &toml, port)?;
    let cpu = CpuMeter {
        procs: {
            let mut p = cpu.procs;
            p.push(("sink".into(), sink.pid(), 0.0));
            p
        },
        ..cpu
    };
    let offsets: BaseConsumer = client(&env.bs)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()?;
    let deadline = Instant::now() + timeout;
    let mut all_accepted_ms = None;
    let committed_ms;
    loop {
        sink.check_alive()?;
        if all_accepted_ms.is_none() && standin.accepted_count().await? >= produced.notifications {
            all_accepted_ms = Some(now_ms());
        }
        if all_accepted_ms.is_some() && committed_at_end(&offsets, topic)? {
            committed_ms = now_ms();
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
    let cpu = cpu.stop();
    let metrics_text = sink.metrics().await;
    std::fs::write(env.scratch.join(format!("{name}.metrics")), &metrics_text)?;
    let peak = sink.stop()?;
    let d = delivered(standin, produced).await?;
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
        "records_per_s_to_committed_end": round(records / to_commit, 0),
        "peak_rss_mib": round(peak, 1),
        "cores_used": cpu,
        "queueing_latency_ms": {"p50": pct(&d.latencies, 0.5), "p99": pct(&d.latencies, 0.99)},
        "sink_counters": {
            "commits": metric(&metrics_text, "elevate_sink_commits_total"),
            "limiter_wait_seconds": metric(&metrics_text, "elevate_sink_limiter_wait_seconds"),
            "retries": metric(&metrics_text, "elevate_sink_retries_total"),
            "request_seconds_sum": metric(&metrics_text, "elevate_sink_request_duration_seconds_sum"),
            "requests": metric(&metrics_text, "elevate_sink_request_duration_seconds_count"),
        },
    }))
}

/// Phase 4: the sink throttled at `rps`; observed rate over a window of `secs`.
async fn throttled(env: &Env, standin: &Standin, topic: &str, plan: &Plan) -> Result<Value> {
    standin.reset().await?;
    let group = unique("bench-throttled");
    let port = free_port()?;
    let toml = sink_toml(env, topic, &group, &standin.base, plan.throttle_rps, 50, port);
    let mut sink = Sink::start(env, "throttled", &toml, port)?;
    // Wait for the first 204, then for 1 s of warm-up (the burst) plus the window, plus margin.
    let deadline = Instant::now() + Duration::from_secs(60);
    while standin.accepted_count().await? == 0 {
        sink.check_alive()?;
        if Instant::now() > deadline {
            bail!("throttled: nothing accepted after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs_f64(1.0 + plan.throttle_secs + 0.5)).await;
    sink.check_alive()?;
    let peak = sink.stop()?;
    let d = delivered(standin, &Produced::default()).await?;
    let count_in = |from: i64, to: i64| d.times.iter().filter(|&&t| t >= from && t < to).count() as f64;
    let w = (plan.throttle_secs * 1000.0) as i64;
    let steady_from = d.first_ms + 1000;
    let steady = count_in(steady_from, steady_from + w) / plan.throttle_secs;
    let from_first = count_in(d.first_ms, d.first_ms + w) / plan.throttle_secs;
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
async fn latency(env: &Env, standin: &Standin, partitions: i32, plan: &Plan) -> Result<Value> {
    standin.reset().await?;
    let topic = unique("bench-latency");
    create_topic(&env.bs, &topic, partitions).await?;
    create_topic(&env.bs, &format!("{topic}-dlq"), 1).await?;
    let group = unique("bench-latency");
    let port = free_port()?;
    let toml = sink_toml(env, &topic, &group, &standin.base, 1_000_000.0, 10_000, port);
    let mut sink = Sink::start(env, "latency", &toml, port)?;
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

// ---------------------------------------------------------------------------------------------
// machine, build, report

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kib| round(kib / 1048576.0, 1));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "cpu_model": model,
        "memory_gib": mem_gib,
        "kernel": kernel.trim(),
        "loadavg_at_start": loadavg(),
    })
}

fn git_rev(repo: &Path) -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(repo)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn bootstrap(repo: &Path) -> Result<String> {
    if let Ok(b) = std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
        if !b.trim().is_empty() {
            return Ok(b.trim().to_string());
        }
    }
    let dir = std::env::var("ELEVATE_SINK_KAFKA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo.join(".cache/kafka"));
    match std::fs::read_to_string(dir.join("bootstrap")) {
        Ok(b) if !b.trim().is_empty() => Ok(b.trim().to_string()),
        _ => bail!(
            "no broker: set KAFKA_BOOTSTRAP_SERVERS, e.g. `export KAFKA_BOOTSTRAP_SERVERS=$(scripts/kafka up)`"
        ),
    }
}

fn broker_pid(repo: &Path) -> Option<u32> {
    let dir = std::env::var("ELEVATE_SINK_KAFKA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo.join(".cache/kafka"));
    std::fs::read_to_string(dir.join("kafka.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn markdown(r: &Value) -> String {
    let m = &r["machine"];
    let cc = &r["consume_ceiling"];
    let hc = &r["http_ceiling"];
    let e = &r["e2e"];
    let es = &r["e2e_small"];
    let t = &r["throttled"];
    let l = &r["latency"];
    let tg = &r["targets"];
    let ok = |b: &Value| {
        if b.as_bool() == Some(true) {
            "met"
        } else {
            "**missed**"
        }
    };
    let mut s = String::new();
    s += &format!(
        "Run {} at commit `{}` ({} mode): {} CPUs ({}), {} GiB, load average at start {} / at end {}.\n\
         Topic: {} records in {} partitions, {} notifications expected, {:.0} MiB of values.\n\n",
        r["when"].as_str().unwrap_or(""),
        r["commit"].as_str().unwrap_or(""),
        r["mode"].as_str().unwrap_or(""),
        m["cpus"],
        m["cpu_model"].as_str().unwrap_or(""),
        m["memory_gib"],
        m["loadavg_at_start"].as_str().unwrap_or(""),
        m["loadavg_at_end"].as_str().unwrap_or(""),
        r["topic"]["records"],
        r["topic"]["partitions"],
        r["topic"]["notifications"],
        f(&r["topic"]["value_mib"]),
    );
    s += "| measure | result | target | status |\n|---|---|---|---|\n";
    s += &format!(
        "| 1. consume ceiling (bare BaseConsumer, service settings) | {:.0} records/s = {:.0} notifications/s equivalent | | |\n",
        f(&cc["records_per_s"]),
        f(&cc["notifications_equiv_per_s"])
    );
    s += &format!(
        "| 2. HTTP ceiling (stand-in, our load generator, best of {}) | {:.0} requests/s | | |\n",
        hc["runs"]
            .as_array()
            .map(|a| a
                .iter()
                .map(|x| format!("{} conns: {:.0}/s", x["connections"], f(&x["requests_per_s"])))
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default(),
        f(&hc["best_requests_per_s"])
    );
    s += &format!(
        "| 3. end to end, unthrottled ({} records) | {:.0} records/s, {:.0} notifications/s ({:.0} records/s to committed end) | | |\n",
        e["records"],
        f(&e["records_per_s"]),
        f(&e["notifications_per_s"]),
        f(&e["records_per_s_to_committed_end"])
    );
    s += &format!(
        "| 3. … ÷ lower ceiling ({:.0}/s, {}) | {:.2} | ≥ 0.80 | {} |\n",
        f(&r["lower_ceiling"]["per_s"]),
        r["lower_ceiling"]["which"].as_str().unwrap_or(""),
        f(&tg["e2e_ratio"]["value"]),
        ok(&tg["e2e_ratio"]["met"])
    );
    s += &format!(
        "| 4. throttled at {:.0}/s over {:.0} s | {:.1}/s, error {:+.2} % ({:+.2} % incl. the first-second burst) | ±1 % | {} |\n",
        f(&t["set_rps"]),
        f(&t["window_s"]),
        f(&t["observed_rps"]),
        f(&t["error_pct"]),
        f(&t["error_pct_incl_burst"]),
        ok(&tg["throttled_error"]["met"])
    );
    s += &format!(
        "| 5. peak RSS (VmHWM), {} / {} records | {:.1} / {:.1} MiB | < 64 MiB, flat | {} |\n",
        es["records"],
        e["records"],
        f(&es["peak_rss_mib"]),
        f(&e["peak_rss_mib"]),
        ok(&tg["peak_rss"]["met"])
    );
    s += &format!(
        "| 5. produce-to-204 latency at {:.0} records/s (steady) | p50 {} ms, p99 {} ms (max {} ms) | | |\n",
        f(&l["records_per_s"]),
        l["p50_ms"],
        l["p99_ms"],
        l["max_ms"]
    );
    s += &format!(
        "| 5. … on the preloaded topic (queueing, not latency) | p50 {} ms, p99 {} ms | | |\n",
        e["queueing_latency_ms"]["p50"], e["queueing_latency_ms"]["p99"]
    );
    s += &format!(
        "\nCores used during the unthrottled run (of {}): {}.\n",
        m["cpus"],
        e["cores_used"]
            .as_object()
            .map(|o| o
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default()
    );
    s += &format!(
        "Sink tuning: {}.\n",
        r["config"]["summary"].as_str().unwrap_or("")
    );
    s
}

async fn run(args: Args) -> Result<Value> {
    let plan = Plan::from(&args);
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let exe = std::env::current_exe()?;
    // target/<profile>/examples/bench → target/<profile>
    let bin_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("cannot locate the target directory")?
        .to_path_buf();
    if !args.no_build {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // The binaries of the profile this harness was built with (CI's smoke run uses debug).
        let mut build = vec!["build", "--bins"];
        if !cfg!(debug_assertions) {
            build.push("--release");
        }
        say(format!("building the binaries (cargo {})", build.join(" ")));
        let st = Command::new(cargo).args(&build).current_dir(&repo).status()?;
        if !st.success() {
            bail!("cargo {} failed", build.join(" "));
        }
    }
    let bs = bootstrap(&repo)?;
    let scratch = std::env::temp_dir().join(format!("elevate-sink-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let extra = match &args.config_extra {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        None => String::new(),
    };
    let env = Env {
        bs: bs.clone(),
        bin_dir: bin_dir.clone(),
        scratch: scratch.clone(),
        extra,
        broker_pid: broker_pid(&repo),
    };
    let mut report = serde_json::Map::new();
    report.insert("schema".into(), json!(1));
    report.insert(
        "when".into(),
        json!(humantime::format_rfc3339_seconds(SystemTime::now()).to_string()),
    );
    report.insert("commit".into(), json!(git_rev(&repo)));
    report.insert("mode".into(), json!(if args.smoke { "smoke" } else { "full" }));
    report.insert(
        "command".into(),
        json!(format!(
            "cargo run --release --example bench -- {}",
            std::env::args().skip(1).collect::<Vec<_>>().join(" ")
        )),
    );
    let mut mach = machine();
    say(format!("machine: {mach}; scratch {}", scratch.display()));

    // The preloaded topics.
    let topic = unique("bench-main");
    let small = unique("bench-small");
    for (t, p) in [(&topic, args.partitions), (&small, args.partitions)] {
        create_topic(&bs, t, p).await?;
        create_topic(&bs, &format!("{t}-dlq"), 1).await?;
    }
    say(format!("preloading {} records into {topic}", plan.records));
    let t0 = Instant::now();
    let produced = preload(&bs, &topic, plan.records, 1).await?;
    say(format!(
        "preloaded in {:.1} s ({} notifications expected)",
        t0.elapsed().as_secs_f64(),
        produced.notifications
    ));
    let produced_small = preload(&bs, &small, plan.small_records, 2).await?;
    report.insert(
        "topic".into(),
        json!({
            "records": plan.records,
            "partitions": args.partitions,
            "notifications": produced.notifications,
            "notifications_per_record": round(produced.notifications as f64 / plan.records as f64, 3),
            "value_mib": round(produced.bytes as f64 / 1048576.0, 1),
            "mean_value_bytes": round(produced.bytes as f64 / plan.records as f64, 0),
            "small_records": plan.small_records,
        }),
    );

    // The effective sink config (bench TOML + ELEVATE_SINK__ env), as the sink will load it.
    let probe = sink_toml(&env, &topic, "probe", "http://127.0.0.1:1", 1.0, 1, 1);
    let cfg = Config::from_toml_with_env(&probe, " (bench config)", std::env::vars())?;
    report.insert(
        "config".into(),
        json!({
            "kafka_properties": cfg.kafka.properties,
            "consumer_config": consumer_config(&cfg, &[], "g").config_map().iter()
                .filter(|(k, _)| !k.starts_with("bootstrap") && !k.starts_with("group"))
                .map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
            "max_in_flight_requests": cfg.elevate.max_in_flight_requests,
            "pipeline": cfg.pipeline,
            "summary": format!(
                "elevate.max_in_flight_requests={}, pipeline.max_in_flight_records={}, \
                 pipeline.max_pending_notifications={}, kafka.properties={:?}",
                cfg.elevate.max_in_flight_requests,
                cfg.pipeline.max_in_flight_records,
                cfg.pipeline.max_pending_notifications,
                cfg.kafka.properties
            ),
        }),
    );

    // 1. consume ceiling.
    say("1. consume ceiling");
    let n = plan.records;
    let cfg1 = cfg.clone();
    let t1 = topic.clone();
    let mut cc = tokio::task::spawn_blocking(move || consume_ceiling(&cfg1, &t1, n)).await??;
    let per_record = produced.notifications as f64 / plan.records as f64;
    cc["notifications_equiv_per_s"] = json!(round(f(&cc["records_per_s"]) * per_record, 0));
    say(format!("   {cc}"));
    say("1b. consume + map ceiling (StreamConsumer in a group, no HTTP; diagnostic)");
    let sc = stream_ceiling(&cfg, &topic, plan.records).await?;
    say(format!("   {sc}"));

    // 2. HTTP ceiling.
    say("2. HTTP ceiling");
    let standin = Standin::start(&bin_dir.join("elevate-standin"))?;
    let mut runs = Vec::new();
    for &c in &args.http_conns {
        let cpu = CpuMeter::start(&[
            ("standin", Some(standin.pid())),
            ("bench", Some(std::process::id())),
        ]);
        let mut r = http_ceiling(&standin.base, c, plan.http_secs).await?;
        r["cores_used"] = cpu.stop();
        say(format!("   {r}"));
        runs.push(r);
        standin.reset().await?;
    }
    let best = runs.iter().map(|r| f(&r["requests_per_s"])).fold(0.0, f64::max);

    // 3. end to end, unthrottled, two sizes.
    say("3. end to end, unthrottled");
    let e = e2e(&env, &standin, "e2e", &topic, &produced, plan.phase_timeout).await?;
    say(format!("   {e}"));
    let es = e2e(
        &env,
        &standin,
        "e2e-small",
        &small,
        &produced_small,
        plan.phase_timeout,
    )
    .await?;
    say(format!("   {es}"));

    // 4. throttled.
    say(format!("4. throttled at {}/s", plan.throttle_rps));
    let t = throttled(&env, &standin, &topic, &plan).await?;
    say(format!("   {t}"));

    // 5. latency at a steady rate.
    say(format!("5. latency at {} records/s", plan.latency_rps));
    let l = latency(&env, &standin, args.partitions, &plan).await?;
    say(format!("   {l}"));

    let (lower, which) = if f(&cc["notifications_equiv_per_s"]) < best {
        (f(&cc["notifications_equiv_per_s"]), "consume")
    } else {
        (best, "HTTP")
    };
    let ratio = f(&e["notifications_per_s"]) / lower;
    let (rss_big, rss_small) = (f(&e["peak_rss_mib"]), f(&es["peak_rss_mib"]));
    let flat = (rss_big - rss_small).abs() <= 0.2 * rss_small.max(rss_big);
    mach["loadavg_at_end"] = json!(loadavg());
    report.insert("machine".into(), mach);
    report.insert("consume_ceiling".into(), cc);
    report.insert("consume_map_ceiling".into(), sc);
    report.insert(
        "http_ceiling".into(),
        json!({"runs": runs, "best_requests_per_s": best}),
    );
    report.insert("lower_ceiling".into(), json!({"per_s": lower, "which": which}));
    report.insert("e2e".into(), e);
    report.insert("e2e_small".into(), es);
    report.insert("throttled".into(), t.clone());
    report.insert("latency".into(), l);
    report.insert(
        "targets".into(),
        json!({
            "e2e_ratio": {"value": round(ratio, 3), "target": ">= 0.8", "met": ratio >= 0.8},
            "throttled_error": {"value": t["error_pct"], "target": "within ±1 %",
                                "met": f(&t["error_pct"]).abs() <= 1.0},
            "peak_rss": {"value_mib": [rss_small, rss_big], "target": "< 64 MiB and flat (±20 %)",
                         "met": rss_big < 64.0 && rss_small < 64.0 && flat},
        }),
    );
    drop(standin);
    say(format!(
        "configs, logs and sink metrics kept in {}",
        scratch.display()
    ));
    Ok(Value::Object(report))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let out = args.out.clone();
    let report = rt.block_on(run(args))?;
    std::fs::create_dir_all(&out)?;
    let md = markdown(&report);
    std::fs::write(
        out.join("latest.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    std::fs::write(out.join("latest.md"), &md)?;
    let mut so = std::io::stdout().lock();
    writeln!(so, "{md}")?;
    say(format!(
        "wrote {} and latest.json",
        out.join("latest.md").display()
    ));
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
