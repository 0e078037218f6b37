//! `elevate-sink run` as a child process for one phase: its config, its readiness, its `/metrics`,
//! its peak RSS. Guarantees: a sink that exits early fails the phase with its log's tail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::place::Placement;
use crate::procfs::RssSampler;

/// Paths and addresses every phase needs.
pub struct Env {
    /// Kafka bootstrap servers.
    pub bs: String,
    /// `target/release`.
    pub bin_dir: PathBuf,
    /// Scratch directory for configs and logs.
    pub scratch: PathBuf,
    /// Extra TOML for the sink config.
    pub extra: String,
    /// The broker's pid, if known (CPU accounting).
    pub broker_pid: Option<u32>,
    /// Where `perf record` writes a profile of each sink (`--perf`), if profiling.
    pub perf_dir: Option<PathBuf>,
    /// Where cachegrind writes the instruction count of each sink (`--instructions`), if counting.
    pub instructions_dir: Option<PathBuf>,
    /// Which CPUs the sink, the stand-in and the broker run on.
    pub placement: Placement,
}

/// `elevate-sink run` as a child process.
pub struct Sink {
    /// The child.
    pub child: Child,
    /// Samples its RSS.
    pub rss: RssSampler,
    /// Its admin listener port.
    pub admin_port: u16,
    /// Its log file.
    pub log: PathBuf,
    /// `perf record` attached to it (`--perf`).
    pub perf: Option<Child>,
    /// Whether it runs under cachegrind (`--instructions`).
    pub counted: bool,
}

/// The sink config of a phase (also what the consume ceiling's consumer is built from).
pub fn sink_toml(
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
    /// Starts `elevate-sink run` with `toml` (and the `vars` on top of the bench's environment).
    pub fn start(
        env: &Env,
        name: &str,
        toml: &str,
        admin_port: u16,
        vars: &[(&str, String)],
    ) -> Result<Sink> {
        let cfg_path = env.scratch.join(format!("{name}.toml"));
        std::fs::write(&cfg_path, toml)?;
        let log = env.scratch.join(format!("{name}.log"));
        let bin = env.bin_dir.join("elevate-sink");
        let mut command = match &env.instructions_dir {
            None => env.placement.sink_command(&bin),
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                let mut c = env.placement.sink_command(Path::new("valgrind"));
                c.args(["--tool=cachegrind", "--cache-sim=no"])
                    .arg(format!(
                        "--cachegrind-out-file={}",
                        cachegrind_out(dir, name).display()
                    ))
                    .arg(&bin);
                c
            }
        };
        let child = command
            .args(["run", "--config"])
            .arg(&cfg_path)
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .envs(
                std::env::var("BENCH_SINK_WORKERS")
                    .ok()
                    .map(|w| ("TOKIO_WORKER_THREADS", w)),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting elevate-sink")?;
        let rss = RssSampler::start(child.id());
        let perf = match &env.perf_dir {
            Some(dir) => Some(perf_record(dir, name, child.id())?),
            None => None,
        };
        Ok(Sink {
            child,
            rss,
            admin_port,
            log,
            perf,
            counted: env.instructions_dir.is_some(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn check_alive(&mut self) -> Result<()> {
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

    pub async fn wait_ready(&mut self) -> Result<()> {
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
    pub async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.admin_port);
        match reqwest::get(&url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// SIGTERM, wait (at most 30 s, or 300 s under cachegrind, which writes its counts at the
    /// exit), and the peak RSS in MiB.
    pub fn stop(mut self) -> Result<f64> {
        if let Some(mut perf) = self.perf.take() {
            signal(perf.id(), "-INT");
            let _ = perf.wait();
        }
        signal(self.pid(), "-TERM");
        let patience = if self.counted { 300 } else { 30 };
        let deadline = Instant::now() + Duration::from_secs(patience);
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

/// Where cachegrind writes the counts of the sink named `name` (`--instructions`).
fn cachegrind_out(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.cachegrind.out"))
}

/// The instructions cachegrind counted in the sink named `name`, all its threads, start-up and
/// shutdown included (its `summary:` line); None when not counting or not found.
pub fn instructions(env: &Env, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(cachegrind_out(env.instructions_dir.as_deref()?, name)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("summary:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Sends `sig` (e.g. `-INT`) to `pid`.
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

/// `perf record` of process `pid` into `dir/NAME.perf.data` (call graphs from DWARF unwind
/// info, which release builds keep in `.eh_frame`); stopped with SIGINT by [`Sink::stop`].
fn perf_record(dir: &std::path::Path, name: &str, pid: u32) -> Result<Child> {
    std::fs::create_dir_all(dir)?;
    let out = dir.join(format!("{name}.perf.data"));
    Command::new("perf")
        .args(["record", "-F", "499", "--call-graph", "dwarf,16384", "-p"])
        .arg(pid.to_string())
        .arg("-o")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting perf record (Debian: linux-perf)")
}
