//! The service under test: its config for a test, the pipeline in this process ([`InProcess`]) or
//! as the real binary ([`Proc`]), the default-shape events the tests send, and the committed
//! offsets against the ends of the topic.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::message::{Headers, Message};
use serde_json::json;
use tokio::sync::watch;
use tracing::Instrument;

use elevate_sink::admin::Health;
use elevate_sink::config::Config;
use elevate_sink::metrics::Metrics;
use elevate_sink::pipeline::{self, RunSummary};
use testkit::metrics;

use super::kafka::{committed_offsets, high_watermarks, Names, Rec};

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A config TOML for a test; `extra` is appended (more sections or keys of new sections).
pub fn config_toml(bs: &str, n: &Names, base_url: &str, extra: &str) -> String {
    config_toml_with(bs, n, base_url, "", extra)
}

/// [`config_toml`] with more `[kafka.properties]` lines (`kafka_props`).
pub fn config_toml_with(bs: &str, n: &Names, base_url: &str, kafka_props: &str, extra: &str) -> String {
    format!(
        r#"
[kafka]
bootstrap_servers = "{bs}"
group_id = "{group}"
topics = ["{topic}"]
[kafka.properties]
"fetch.wait.max.ms" = "50"
{kafka_props}
[elevate]
base_url = "{base_url}"
request_timeout = "5s"
max_in_flight_requests = 32
[dead_letter]
topic = "{dlq}"
[admin]
listen = ""
[log]
level = "warn"
{extra}
"#,
        group = n.group,
        topic = n.topic,
        dlq = n.dlq,
    )
}

/// The config a test TOML describes (no environment overrides); panics on an invalid one.
pub fn parse(toml: &str) -> Config {
    Config::from_toml_with_env(toml, "", Vec::new()).expect("test config is valid")
}

/// A pipeline running in this process.
pub struct InProcess {
    /// Its series.
    pub metrics: Arc<Metrics>,
    /// Its readiness.
    pub health: Arc<Health>,
    /// Turn true to shut it down.
    stop: watch::Sender<bool>,
    /// The running pipeline.
    task: tokio::task::JoinHandle<RunSummary>,
}

impl InProcess {
    pub fn start(cfg: Config) -> Self {
        super::init_test_log();
        static MEMBERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let member = MEMBERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let span = tracing::error_span!("member", id = member);
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::new(cfg.admin.wedged_after));
        let (stop, rx) = watch::channel(false);
        let (m, h) = (metrics.clone(), health.clone());
        let task = tokio::spawn(
            async move { pipeline::run(&cfg, m, h, rx).await.expect("pipeline runs") }.instrument(span),
        );
        InProcess {
            metrics,
            health,
            stop,
            task,
        }
    }

    /// The run's summary if it ended by itself within `timeout`; None if it is still running.
    pub async fn ended_within(&mut self, timeout: Duration) -> Option<RunSummary> {
        match tokio::time::timeout(timeout, &mut self.task).await {
            Ok(r) => Some(r.expect("pipeline task")),
            Err(_) => None,
        }
    }

    pub async fn stop(self) -> RunSummary {
        let _ = self.stop.send(true);
        self.task.await.expect("pipeline task")
    }

    /// Whether the run has ended (by itself, or stopped).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// The sum of its series matching `needle` (see [`metrics::sum`]).
    pub fn series(&self, needle: &str) -> f64 {
        metrics::sum(&self.metrics.encode(), needle)
    }
}

pub fn event(ticket_lines: &[(&str, Option<&str>)], ctx: Option<&str>) -> serde_json::Value {
    let lines: Vec<_> = ticket_lines
        .iter()
        .map(|(source, ticket)| json!({"source": source, "ticket": ticket, "productKey": "p"}))
        .collect();
    let mut e = json!({
        "type": "add_to_cart", "market": "SE", "customerKey": "cust-secret-1", "sessionKey": "sess-secret-1",
        "lines": lines,
    });
    if let Some(c) = ctx {
        e["userContext"] = json!(c);
    }
    e
}

pub fn simple(ticket: &str) -> Rec {
    Rec::json(&event(&[("elevate", Some(ticket))], None))
}

/// One record per ticket, dealt round-robin over `partitions`: the producer's sticky partitioner
/// can put a whole unkeyed batch on one partition, and these scenarios need every partition fed.
pub fn spread(tickets: &[String], partitions: i32) -> Vec<Rec> {
    tickets
        .iter()
        .zip((0..partitions).cycle())
        .map(|(t, p)| simple(t).partition(p))
        .collect()
}

pub fn multiset(tickets: Vec<String>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for t in tickets {
        *m.entry(t).or_default() += 1;
    }
    m
}

/// Committed offset vs high watermark per partition (`p: committed/high`), for failure messages.
pub async fn committed_vs_end(bs: &str, n: &Names) -> String {
    let high = high_watermarks(bs, &n.topic).await;
    let committed = committed_offsets(bs, &n.group, &n.topic, high.keys().copied()).await;
    high.iter()
        .map(|(p, h)| format!("{p}: {:?}/{h}", committed.get(p).copied().flatten()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits until every partition's committed offset reaches its high watermark; the error names
/// the partitions' committed offsets and ends.
pub async fn wait_commit_reaches_end(bs: &str, n: &Names, within: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + within;
    while !committed_reach_end(bs, n).await {
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "the committed offsets never reached the end within {within:?} (committed/high: {})",
                committed_vs_end(bs, n).await
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Whether every partition's committed offset is its high watermark. A partition that never held
/// a record (high watermark 0) has nothing to commit and counts as at its end with no commit.
pub async fn committed_reach_end(bs: &str, n: &Names) -> bool {
    let high = high_watermarks(bs, &n.topic).await;
    let committed = committed_offsets(bs, &n.group, &n.topic, high.keys().copied()).await;
    high.iter()
        .all(|(p, h)| match committed.get(p).copied().flatten() {
            Some(c) => c == *h,
            None => *h == 0,
        })
}

pub fn header(m: &rdkafka::message::OwnedMessage, name: &str) -> Option<String> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// A sink process (the real binary) with its config file and captured stderr.
pub struct Proc {
    /// The child.
    pub child: tokio::process::Child,
    /// Keeps the config file and log alive.
    _dir: tempfile::TempDir,
    /// Where stderr goes.
    log: PathBuf,
}

impl Proc {
    pub fn spawn(toml: &str) -> Proc {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.toml");
        std::fs::write(&cfg, toml).unwrap();
        let log = dir.path().join("stderr.log");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_elevate-sink"))
            .args(["run", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn elevate-sink");
        Proc {
            child,
            _dir: dir,
            log,
        }
    }

    pub fn signal(&self, sig: i32) {
        let pid = self.child.id().expect("running") as i32;
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc_kill(pid, sig) }, 0);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
pub const SIGKILL: i32 = 9;
pub const SIGTERM: i32 = 15;
