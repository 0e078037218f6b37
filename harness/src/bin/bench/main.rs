//! The benchmark harness (issue 7): one command, one run, one preloaded topic, ratios.
//!
//! ```text
//! export KAFKA_BOOTSTRAP_SERVERS=$(scripts/kafka up)     # or a running scripts/kafka broker
//! cargo run --release -p harness --bin bench -- [--records N] [--smoke] [--out bench/results]
//! ```
//!
//! It builds the release binaries (`elevate-sink`, `elevate-standin`), preloads a topic with
//! realistic default-shape cart events (`testkit::events`; the produce time is the
//! Kafka record timestamp), starts the stand-in as its own process, and measures in order:
//!
//! 1. the consume ceiling: a bare `BaseConsumer` (settings from `kafka::consumer_config`, the
//!    service's own) reading the whole topic and discarding it;
//! 2. the HTTP ceiling: our load generator (the sink's own client, N keep-alive connections, the
//!    sink's exact requests from `request::wire_request`) against the stand-in, and once more
//!    right after phase 3's first run; the ratios use the mean of the two (`bracketed`); then the
//!    load generator paced at the sink's rate, for its CPU per request with the stand-in as idle
//!    as it is behind the sink (a row of its own, not a target);
//! 3. `elevate-sink run` end to end, unthrottled, as a child process: CPU per notification and
//!    peak RSS, on every workload shape (`typical`, `small`: many small records, `large`: few
//!    records of many lines; `testkit::events::Shape`) at two topic sizes each;
//! 4. `elevate-sink run` throttled at a set rate;
//! 5. produce-to-204 latency while records are produced at a steady rate below capacity;
//! 6. Elevate far away: the stand-in answers after 30 ms, the sink unthrottled with the default
//!    `elevate.max_in_flight_requests` and four times it, against `in_flight / latency`.
//!
//! `--sink-cpus` / `--others-cpus` place the sink and the load generator on some CPUs and the
//! stand-in and the broker on others (`place.rs`).
//!
//! Results: `OUT/latest.md` (table) and `OUT/latest.json`. Environment overrides of the service
//! config (`ELEVATE_SINK__…`) reach both the sink child and the consume ceiling's consumer, so a
//! tuning is benchmarked fairly; the effective tuning is written into the results.

mod ceilings;
mod load;
mod phases;
mod place;
mod procfs;
mod report;
mod sink;
mod standin;
mod workloads;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};

use elevate_sink::config::Config;
use elevate_sink::consumer_config;

use harness::round;

use crate::ceilings::{consume_ceiling, http_ceiling, stream_ceiling, LoadClient};
use crate::phases::{latency, remote, throttled};
use crate::place::Placement;
use crate::procfs::{loadavg, machine, CpuMeter};
use crate::report::{f, markdown};
use crate::sink::{sink_toml, Env};
use crate::standin::Standin;
use crate::workloads::{preload_all, rss_met, run_all, Workload};

/// Benchmark elevate-sink against the real broker and the stand-in; see the module docs.
#[derive(Parser, Debug, Clone)]
#[command(about)]
struct Args {
    /// Records preloaded into the main topic (default: 1000000, smoke: 3000).
    #[arg(long)]
    pub records: Option<u64>,
    /// Tiny topic and short phases (CI): checks the harness works; numbers mean nothing.
    #[arg(long)]
    pub smoke: bool,
    /// Directory for latest.md and latest.json.
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// Partitions of the bench topics.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Concurrent keep-alive connections of the HTTP load generator, one run each.
    #[arg(long, value_delimiter = ',', default_value = "32,128")]
    pub http_conns: Vec<usize>,
    /// Seconds each HTTP load run measures (default 8, smoke 1), after 1 s of warm-up.
    #[arg(long)]
    pub http_secs: Option<f64>,
    /// Rate quota of the throttled phase, requests per second (default 1000, smoke 200).
    #[arg(long)]
    pub throttle_rps: Option<f64>,
    /// Seconds the throttled phase measures (default 30, smoke 3).
    #[arg(long)]
    pub throttle_secs: Option<f64>,
    /// Records per second produced in the latency phase (default 500, smoke 200).
    #[arg(long)]
    pub latency_rps: Option<f64>,
    /// Seconds the latency phase produces for (default 10, smoke 2).
    #[arg(long)]
    pub latency_secs: Option<f64>,
    /// Skip `cargo build [--release] --bins` (use the binaries already in the target dir).
    #[arg(long)]
    pub no_build: bool,
    /// Extra TOML appended to the sink's config (tuning, e.g. `[pipeline]` keys).
    #[arg(long)]
    pub config_extra: Option<PathBuf>,
    /// Answer latency of the stand-in in phase 6, milliseconds.
    #[arg(long, default_value_t = 30)]
    pub remote_latency_ms: u64,
    /// Seconds phase 6 measures each in-flight setting (default 20, smoke 3).
    #[arg(long)]
    pub remote_secs: Option<f64>,
    /// Profile every sink child with `perf record` into this directory (numbers then mean less).
    #[arg(long)]
    pub perf: Option<PathBuf>,
    /// Run every sink child under valgrind's cachegrind (`--cache-sim=no`), its output in this
    /// directory, and report its user-space instructions per notification: a count this VM's
    /// spells do not move, for comparing builds (with `--quick`; every timing figure of the
    /// run is then meaningless).
    #[arg(long)]
    pub instructions: Option<PathBuf>,
    /// The tuning loop: the HTTP ceiling at the first `--http-conns` and phase 3 on the typical
    /// and large full topics only; prints the figures and writes no report.
    #[arg(long)]
    pub quick: bool,
    /// CPUs (`taskset -c` list, e.g. `0-1`) of the sink and of the load generator (this
    /// process); with `--others-cpus`, to measure where the sink has cores of its own.
    #[arg(long, requires = "others_cpus")]
    pub sink_cpus: Option<String>,
    /// CPUs of the stand-in and the broker (a `scripts/kafka` broker, pinned for the run).
    #[arg(long, requires = "sink_cpus")]
    pub others_cpus: Option<String>,
}

impl Args {
    fn placement(&self) -> Placement {
        Placement {
            sink: self.sink_cpus.clone(),
            others: self.others_cpus.clone(),
        }
    }
}

/// Phase lengths and sizes after applying the smoke defaults.
#[derive(Debug, Clone)]
struct Plan {
    /// Records in the main topic.
    pub records: u64,
    /// Seconds phase 6 measures each in-flight setting.
    pub remote_secs: f64,
    /// Seconds per HTTP load run.
    pub http_secs: f64,
    /// Throttled quota.
    pub throttle_rps: f64,
    /// Throttled measuring window.
    pub throttle_secs: f64,
    /// Latency phase produce rate.
    pub latency_rps: f64,
    /// Latency phase produce time.
    pub latency_secs: f64,
    /// Longest wait for one sink phase to finish.
    pub phase_timeout: Duration,
}

impl Plan {
    fn from(a: &Args) -> Plan {
        let s = a.smoke;
        let records = a.records.unwrap_or(if s { 3_000 } else { 1_000_000 });
        Plan {
            records,
            remote_secs: a.remote_secs.unwrap_or(if s { 3.0 } else { 20.0 }),
            http_secs: a.http_secs.unwrap_or(if s { 1.0 } else { 8.0 }),
            throttle_rps: a.throttle_rps.unwrap_or(if s { 200.0 } else { 1000.0 }),
            throttle_secs: a.throttle_secs.unwrap_or(if s { 3.0 } else { 30.0 }),
            latency_rps: a.latency_rps.unwrap_or(if s { 200.0 } else { 500.0 }),
            latency_secs: a.latency_secs.unwrap_or(if s { 2.0 } else { 10.0 }),
            phase_timeout: Duration::from_secs(if s { 60 } else { 1800 }),
        }
    }
}

fn say(msg: impl AsRef<str>) {
    eprintln!("bench: {}", msg.as_ref());
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

/// The binaries of the profile this harness was built with (CI's smoke run uses debug): the
/// service and the stand-in, built in `target/<profile>` beside the harness itself.
fn build_binaries(repo: &Path) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = vec!["build", "-p", "elevate-sink", "-p", "elevate-standin", "--bins"];
    if !cfg!(debug_assertions) {
        build.push("--release");
    }
    say(format!("building the binaries (cargo {})", build.join(" ")));
    let st = Command::new(cargo).args(&build).current_dir(repo).status()?;
    if !st.success() {
        bail!("cargo {} failed", build.join(" "));
    }
    Ok(())
}

/// The report's header fields: schema, time, commit, mode, the command line.
fn report_header(repo: &Path, smoke: bool) -> serde_json::Map<String, Value> {
    let mut report = serde_json::Map::new();
    report.insert("schema".into(), json!(1));
    report.insert(
        "when".into(),
        json!(humantime::format_rfc3339_seconds(SystemTime::now()).to_string()),
    );
    report.insert("commit".into(), json!(git_rev(repo)));
    report.insert("mode".into(), json!(if smoke { "smoke" } else { "full" }));
    report.insert(
        "command".into(),
        json!(format!(
            "cargo run --release -p harness --bin bench -- {}",
            std::env::args().skip(1).collect::<Vec<_>>().join(" ")
        )),
    );
    report
}

/// The effective sink config (bench TOML + `ELEVATE_SINK__` env), as the sink will load it, and
/// its description for the report.
fn effective_config(env: &Env, topic: &str) -> Result<(Config, Value)> {
    let probe = sink_toml(env, topic, "probe", "http://127.0.0.1:1", 1.0, 1, 1);
    let cfg = Config::from_toml_with_env(&probe, " (bench config)", std::env::vars())?;
    let described = json!({
        "kafka_properties": cfg.kafka.properties,
        "consumer_config": consumer_config(&cfg, &[], "g").config_map().iter()
            .filter(|(k, _)| !k.starts_with("bootstrap") && !k.starts_with("group"))
            .map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        "max_in_flight_requests": cfg.elevate.max_in_flight_requests,
        "pipeline": cfg.pipeline,
        "summary": format!(
            "elevate.max_in_flight_requests={}, pipeline.max_in_flight_records={}, \
             pipeline.max_pending_notifications={}, pipeline.worker_threads={}, kafka.properties={:?}",
            cfg.elevate.max_in_flight_requests,
            cfg.pipeline.max_in_flight_records,
            cfg.pipeline.max_pending_notifications,
            cfg.pipeline.worker_threads,
            cfg.kafka.properties
        ),
    });
    Ok((cfg, described))
}

/// Phase 2 over every connection count of `--http-conns`: the runs, and the best one.
async fn http_ceilings(standin: &Standin, args: &Args, plan: &Plan) -> Result<(Vec<Value>, Value)> {
    let mut runs = Vec::new();
    for &c in &args.http_conns {
        runs.push(one_ceiling(standin, LoadClient::Sink, c, plan).await?);
    }
    let best = runs
        .iter()
        .max_by(|a, b| f(&a["requests_per_s"]).total_cmp(&f(&b["requests_per_s"])))
        .cloned()
        .unwrap_or(Value::Null);
    Ok((runs, best))
}

/// One load-generator run through `client` at `conns` connections, with the cores each process
/// used.
async fn one_ceiling(standin: &Standin, client: LoadClient, conns: usize, plan: &Plan) -> Result<Value> {
    one_load(standin, client, conns, plan, None).await
}

/// One load-generator run, flat out or `paced` at that many requests per second.
async fn one_load(
    standin: &Standin,
    client: LoadClient,
    conns: usize,
    plan: &Plan,
    paced: Option<f64>,
) -> Result<Value> {
    let cpu = CpuMeter::start(&[
        ("standin", Some(standin.pid())),
        ("bench", Some(std::process::id())),
    ]);
    let mut r = http_ceiling(&standin.base, client, conns, plan.http_secs, paced).await?;
    r["cores_used"] = cpu.stop();
    say(format!("   {r}"));
    standin.reset().await?;
    Ok(r)
}

/// Phase 3's main workload between two HTTP ceilings: the best run of phase 2 before it and one
/// at the same connection count right after it. This shared VM drifts by ±20 % within minutes
/// (docs/performance.md), so both ratios use the mean of the two, and the report shows both.
/// Returns the e2e run and the ceiling summary (`requests_per_s`, `cpu_us_per_request`).
async fn bracketed(
    env: &Env,
    standin: &Standin,
    workload: &Workload,
    before: &Value,
    plan: &Plan,
) -> Result<(Value, Value)> {
    let mut e2e = run_all(env, standin, std::slice::from_ref(workload), plan.phase_timeout).await?;
    say("   the HTTP ceiling again, right after it");
    let conns = before["connections"].as_u64().unwrap_or(32) as usize;
    let after = one_ceiling(standin, LoadClient::Sink, conns, plan).await?;
    say("   the load generator again, paced at the sink's rate");
    let rate = f(&e2e[0]["notifications_per_s"]);
    let paced = one_load(standin, LoadClient::Sink, conns, plan, Some(rate)).await?;
    let mean = |k: &str| (f(&before[k]) + f(&after[k])) / 2.0;
    let ceiling = json!({
        "before": before,
        "after": after,
        "paced": paced,
        "requests_per_s": round(mean("requests_per_s"), 0),
        "cpu_us_per_request": round(mean("cpu_us_per_request"), 1),
        "kernel_us_per_request": round(mean("kernel_us_per_request"), 1),
    });
    Ok((e2e.remove(0), ceiling))
}

/// The targets: the end-to-end ratio to the lower ceiling, the sink's CPU per notification
/// against the load generator's per request, the throttle error, peak RSS (every workload, flat
/// in topic size), and the remote phase against `in_flight / latency`.
fn targets(cc: &Value, http: &Value, runs: &[Value], t: &Value, remote: &[Value]) -> (Value, Value) {
    let best_http = f(&http["bracket"]["requests_per_s"]);
    let (lower, which) = if f(&cc["notifications_equiv_per_s"]) < best_http {
        (f(&cc["notifications_equiv_per_s"]), "consume")
    } else {
        (best_http, "HTTP")
    };
    let e = &runs[0];
    let ratio = f(&e["notifications_per_s"]) / lower;
    let cpu_ratio = f(&e["cpu_us_per_notification"]) / f(&http["bracket"]["cpu_us_per_request"]);
    let rss: Vec<f64> = runs.iter().map(|r| f(&r["peak_rss_mib"])).collect();
    let remote_min = remote
        .iter()
        .map(|r| f(&r["ratio"]))
        .fold(f64::INFINITY, f64::min);
    let targets = json!({
        "e2e_ratio": {"value": round(ratio, 3), "target": ">= 0.8", "met": ratio >= 0.8},
        "cpu_ratio": {"value": round(cpu_ratio, 2), "target": "<= 1.5", "met": cpu_ratio <= 1.5},
        "throttled_error": {"value": t["error_pct"], "target": "within ±1 %",
                            "met": f(&t["error_pct"]).abs() <= 1.0},
        "peak_rss": {"value_mib": rss, "target": "< 64 MiB on every workload, flat (±20 %) in topic size",
                     "met": rss_met(runs, 64.0)},
        "remote_ratio": {"value": round(remote_min, 3), "target": ">= 0.9", "met": remote_min >= 0.9},
    });
    (json!({"per_s": lower, "which": which}), targets)
}

/// Phases 2 to 6 after the ceilings: the figures, by report key.
async fn sink_phases(
    env: &Env,
    args: &Args,
    plan: &Plan,
    cfg: &Config,
    workloads: &[Workload],
) -> Result<Vec<(&'static str, Value)>> {
    say("2. HTTP ceiling");
    let standin = Standin::start(&env.bin_dir.join("elevate-standin"), &env.placement)?;
    let (runs, best) = http_ceilings(&standin, args, plan).await?;
    say("   for reference, an ordinary reqwest client at the same connection count");
    let conns = best["connections"].as_u64().unwrap_or(32) as usize;
    let reqwest = one_ceiling(&standin, LoadClient::Reqwest, conns, plan).await?;

    say("3. end to end, unthrottled, every workload");
    let (first, bracket) = bracketed(env, &standin, &workloads[0], &best, plan).await?;
    let mut e2e_runs = vec![first];
    e2e_runs.extend(run_all(env, &standin, &workloads[1..], plan.phase_timeout).await?);
    let http = json!({
        "runs": runs,
        "best_requests_per_s": best["requests_per_s"],
        "best_cpu_us_per_request": best["cpu_us_per_request"],
        "bracket": bracket,
        "reqwest": reqwest,
    });

    say(format!("4. throttled at {}/s", plan.throttle_rps));
    let t = throttled(env, &standin, &workloads[0].topic, plan).await?;
    say(format!("   {t}"));

    say(format!("5. latency at {} records/s", plan.latency_rps));
    let l = latency(env, &standin, args.partitions, plan).await?;
    say(format!("   {l}"));

    say(format!(
        "6. Elevate answering after {} ms",
        args.remote_latency_ms
    ));
    let default_in_flight = cfg.elevate.max_in_flight_requests;
    let mut rem = Vec::new();
    for in_flight in [default_in_flight, default_in_flight * 4] {
        let r = remote(
            env,
            &standin,
            &workloads[0].topic,
            in_flight,
            args.remote_latency_ms,
            plan.remote_secs,
        )
        .await?;
        say(format!("   {r}"));
        rem.push(r);
    }
    drop(standin);
    Ok(vec![
        ("http_ceiling", http),
        ("e2e", e2e_runs[0].clone()),
        ("e2e_small", e2e_runs[1].clone()),
        ("workloads", json!(e2e_runs)),
        ("throttled", t),
        ("latency", l),
        ("remote", json!(rem)),
    ])
}

/// `--quick`: the HTTP ceiling at one connection count, phase 3 on the typical full topic and
/// the ceiling again (the mean is the ceiling of every row, as in the full run), then phase 3
/// on the other preloaded workloads; each end-to-end rate and CPU per notification set against
/// that ceiling.
async fn quick(env: &Env, args: &Args, plan: &Plan, workloads: &[Workload]) -> Result<Value> {
    let standin = Standin::start(&env.bin_dir.join("elevate-standin"), &env.placement)?;
    let conns = args.http_conns.first().copied().unwrap_or(32);
    let before = one_ceiling(&standin, LoadClient::Sink, conns, plan).await?;
    let (first, ceiling) = bracketed(env, &standin, &workloads[0], &before, plan).await?;
    let mut e2e = vec![first];
    e2e.extend(run_all(env, &standin, &workloads[1..], plan.phase_timeout).await?);
    let (rate, loadgen_cpu) = (f(&ceiling["requests_per_s"]), f(&ceiling["cpu_us_per_request"]));
    say(format!(
        "quick: ceiling {rate:.0}/s ({:.0} before, {:.0} after), load generator {loadgen_cpu:.1} µs (kernel {:.1}); paced at the sink's {:.0}/s: {:.1} µs (kernel {:.1})",
        f(&before["requests_per_s"]),
        f(&ceiling["after"]["requests_per_s"]),
        f(&ceiling["kernel_us_per_request"]),
        f(&ceiling["paced"]["requests_per_s"]),
        f(&ceiling["paced"]["cpu_us_per_request"]),
        f(&ceiling["paced"]["kernel_us_per_request"]),
    ));
    let mut rows = Vec::new();
    for r in &e2e {
        let row = json!({
            "workload": r["workload"]["shape"],
            "ratio": round(f(&r["notifications_per_s"]) / rate, 3),
            "cpu_ratio": round(f(&r["cpu_us_per_notification"]) / loadgen_cpu, 2),
            "cpu_ratio_paced": round(
                f(&r["cpu_us_per_notification"]) / f(&ceiling["paced"]["cpu_us_per_request"]),
                2
            ),
            "notifications_per_s": r["notifications_per_s"],
            "ratio_middle_80": round(f(&r["notifications_per_s_middle_80"]) / rate, 3),
            "cpu_us_per_notification": r["cpu_us_per_notification"],
            "kernel_us_per_notification": r["kernel_us_per_notification"],
            "instructions_per_notification": r["instructions_per_notification"],
            "peak_rss_mib": r["peak_rss_mib"],
        });
        say(format!("quick: {row}"));
        rows.push(row);
    }
    Ok(json!({"quick": true, "http": ceiling, "rows": rows}))
}

/// One whole run: build, preload, the six phases, the report's figures.
async fn run(args: Args) -> Result<Value> {
    let plan = Plan::from(&args);
    let repo = testkit::repo_root();
    let bin_dir = harness::bin_dir()?;
    if !args.no_build {
        build_binaries(&repo)?;
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
        perf_dir: args.perf.clone(),
        instructions_dir: args.instructions.clone(),
        placement: args.placement(),
    };
    let _broker = env.placement.pin_broker(env.broker_pid)?;
    let mut report = report_header(&repo, args.smoke);
    let mut mach = machine();
    mach["placement"] = env.placement.describe();
    say(format!("machine: {mach}; scratch {}", scratch.display()));

    let workloads = preload_all(&bs, args.partitions, &plan, args.quick).await?;
    if args.quick {
        return quick(&env, &args, &plan, &workloads).await;
    }
    let (topic, produced) = (&workloads[0].topic, &workloads[0].produced);
    let mut desc = workloads[0].describe();
    desc["partitions"] = json!(args.partitions);
    desc["small_records"] = json!(workloads[1].produced.ts.len());
    report.insert("topic".into(), desc);
    let (cfg, described) = effective_config(&env, topic)?;
    report.insert("config".into(), described);

    say("1. consume ceiling");
    let n = produced.ts.len() as u64;
    let (cfg1, t1) = (cfg.clone(), topic.clone());
    let mut cc = tokio::task::spawn_blocking(move || consume_ceiling(&cfg1, &t1, n)).await??;
    let per_record = produced.notifications as f64 / n as f64;
    cc["notifications_equiv_per_s"] = json!(round(f(&cc["records_per_s"]) * per_record, 0));
    say(format!("   {cc}"));
    say("1b. consume + map ceiling (StreamConsumer in a group, no HTTP; diagnostic)");
    let sc = stream_ceiling(&cfg, topic, n).await?;
    say(format!("   {sc}"));
    report.insert("consume_ceiling".into(), cc);
    report.insert("consume_map_ceiling".into(), sc);

    for (k, v) in sink_phases(&env, &args, &plan, &cfg, &workloads).await? {
        report.insert(k.into(), v);
    }
    let runs = report["workloads"].as_array().cloned().unwrap_or_default();
    let remote = report["remote"].as_array().cloned().unwrap_or_default();
    let (lower, targets) = targets(
        &report["consume_ceiling"],
        &report["http_ceiling"],
        &runs,
        &report["throttled"],
        &remote,
    );
    mach["loadavg_at_end"] = json!(loadavg());
    report.insert("machine".into(), mach);
    report.insert("lower_ceiling".into(), lower);
    report.insert("targets".into(), targets);
    say(format!(
        "configs, logs and sink metrics kept in {}",
        scratch.display()
    ));
    Ok(Value::Object(report))
}

fn main() -> Result<()> {
    let args = Args::parse();
    args.placement().pin_self()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let out = args.out.clone();
    let quick = args.quick;
    let report = rt.block_on(run(args))?;
    if quick {
        println!("{report}");
        rt.shutdown_timeout(Duration::from_secs(1));
        return Ok(());
    }
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
