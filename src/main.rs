//! The `elevate-sink` binary: parses the command line and hands over to the library.
//!
//! Exit codes: 0 — stopped on SIGTERM/SIGINT (run) or window done (replay); 1 — `check` found a
//! problem; 2 — an error at start (bad configuration names the key) or an unexpected error;
//! 3 — a Kafka client can no longer work (fatal consumer error such as a fenced static member,
//! fatal dead-letter producer error): restart; 4 — records could not be read (a corrupt batch):
//! nothing was committed past them, a restart reads them again; 130 — replay interrupted.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use elevate_sink::{admin, config::Config, logging, metrics::Metrics, pipeline, shutdown};

/// Kafka cart events in, Voyado Elevate add-to-cart notifications out, at least once.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: consume in a group, send, commit.
    Run {
        /// Config file (TOML); every key can also come from ELEVATE_SINK__SECTION__KEY.
        #[arg(long, short, env = "ELEVATE_SINK_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate a config file, optionally mapping sample events; non-zero exit names the problem.
    Check(elevate_sink::check::CheckArgs),
    /// Backfill: replay a window of a topic through the same mapping, limiter and retries.
    Replay(elevate_sink::replay::ReplayArgs),
    /// The whole pipeline on an in-process Kafka and Elevate stand-in; zero setup.
    #[cfg(feature = "demo")]
    Demo,
}

/// The allocator: jemalloc. glibc's malloc and free were 16 % of the sink's CPU under the churn of
/// notifications (small allocations freed on other paths, fastbin consolidation); with jemalloc
/// three alternating bench pairs used 15 % (typical records) and 18 % (large) less CPU per
/// notification, for 1–2 MiB more peak RSS (docs/performance.md). It also serves librdkafka's
/// `malloc` and `free` (`unprefixed_malloc_on_supported_platforms`): glibc's, freeing on the
/// worker what librdkafka's threads allocated, was 1.3 % of the sink's CPU; seven alternating
/// quick runs each: median 18.5 → 18.1 µs per notification (typical), +1.3 MiB peak RSS. The
/// binary's choice only: the library and its tests keep the system allocator for Rust's own
/// allocations.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read by jemalloc at its first allocation (its `malloc_conf` global;
/// `MALLOC_CONF` in the environment is read after it and wins, key by key). Both cut work in
/// jemalloc's slow paths, not in its fast path:
///
/// * `slab_sizes:1-16384:16`: every small size class gets slabs of 16 pages (64 KiB) instead of
///   the smallest that fits its regions (1 page for most). Under the sink's churn of
///   short-lived allocations a slab emptied and a new one was made about 0.6 times per
///   notification, at about 830 instructions for each new slab before the empty one's return.
/// * `tcache_gc_incr_bytes:1048576`: the thread cache is trimmed every MiB allocated instead of
///   every 64 KiB.
///
/// Counted with `bench --quick --instructions` on the release build: 53,893 → 52,650
/// instructions per typical notification (−2.3 %, most of it the slabs'), 42,519 → 41,091 per
/// large one (−3.4 %); peak RSS unchanged in quick runs (45 MiB typical, 42 MiB large). 32-page
/// slabs saved 0.4 % more for 3–6 MiB more RSS (docs/performance.md, "The seventeenth round").
#[cfg(target_os = "linux")] // unprefixed there (`unprefixed_malloc_on_supported_platforms`)
#[allow(non_upper_case_globals)]
#[export_name = "malloc_conf"]
static malloc_conf: &[u8; 51] = b"slab_sizes:1-16384:16,tcache_gc_incr_bytes:1048576\0";

fn main() -> ExitCode {
    // `run` and `replay` load their configuration once, before the runtime exists: its
    // `pipeline.worker_threads` shapes the runtime, and the command gets the same tree (or the
    // reason it did not load).
    let result = match Cli::parse().command {
        Command::Run { config } => {
            let cfg = load(config.as_deref());
            block_on(workers(&cfg), async move { run(cfg?).await })
        }
        Command::Replay(args) => {
            let cfg = load(args.config.as_deref());
            block_on(workers(&cfg), async move {
                elevate_sink::replay::main(args, cfg?).await
            })
        }
        Command::Check(args) => block_on(None, elevate_sink::check::main(args)),
        #[cfg(feature = "demo")]
        Command::Demo => block_on(None, elevate_sink::demo::main()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            // A replay that stopped for a fatal client error or unreadable records exits with
            // the same codes as `run` (3, 4); any other error is 2.
            let code = e
                .downcast_ref::<pipeline::Stop>()
                .map_or(2, pipeline::Stop::exit_code);
            ExitCode::from(code)
        }
    }
}

/// The runtime for `workers` (`pipeline.worker_threads`): one worker (the default) is tokio's
/// current-thread scheduler on this thread, more are its multi-thread scheduler; commands without
/// the setting get the multi-thread default. One worker of the multi-thread scheduler pays for
/// being shareable (the run queue's atomics, the inject queue, a worker to hand the `block_on`
/// thread's work to): in nine alternating quick runs each, the current-thread one used about 4 %
/// less CPU per notification on typical records (docs/performance.md, the ninth round).
fn runtime(workers: Option<usize>) -> tokio::runtime::Builder {
    match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            rt.worker_threads(n);
            rt
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    }
}

/// The configuration of `run` and `replay`: the file (if any) with the `ELEVATE_SINK__*`
/// overrides; an error names the key.
fn load(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    Config::load(path, std::env::vars()).context("configuration")
}

/// `pipeline.worker_threads` of a loaded configuration; one that did not load gets the default
/// runtime, and its command then reports why.
fn workers(cfg: &anyhow::Result<Config>) -> Option<usize> {
    cfg.as_ref().ok().map(|c| c.pipeline.worker_threads)
}

/// Runs `command` to its end on the runtime for `workers` ([`runtime`]).
fn block_on(
    workers: Option<usize>,
    command: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> anyhow::Result<ExitCode> {
    runtime(workers)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(command)
}

async fn run(cfg: Config) -> anyhow::Result<ExitCode> {
    logging::init(&cfg.log);
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(admin::Health::new(cfg.admin.wedged_after));
    if !cfg.admin.listen.is_empty() {
        let (addr, _) = admin::serve(&cfg.admin.listen, metrics.clone(), health.clone())
            .await
            .with_context(|| format!("admin.listen: cannot bind {}", cfg.admin.listen))?;
        tracing::info!(%addr, "admin listener up (/healthz, /readyz, /metrics)");
    }
    // The loop runs as a task: with more than one worker it runs on the workers, not on this
    // thread inside `block_on`, so completions wake it there without a thread hand-off (three
    // busy threads on two cores spent a sixth of the sink's CPU in the scheduler;
    // docs/performance.md); with one (current-thread) everything runs on this thread anyway.
    let stop = shutdown::on_signal();
    let summary = tokio::spawn(async move { pipeline::run(&cfg, metrics, health, stop).await })
        .await
        .context("the pipeline task panicked")??;
    let code = summary.stop.exit_code();
    if code == 0 {
        tracing::info!(?summary, "stopped");
    } else {
        tracing::error!(?summary, exit_code = code, "stopped: {}", summary.stop);
    }
    Ok(ExitCode::from(code))
}

#[cfg(test)]
mod tests {
    use super::runtime;
    use tokio::runtime::RuntimeFlavor;

    #[test]
    fn one_worker_is_the_current_thread_scheduler_and_more_are_the_multi_thread_one() {
        let flavor = |workers| {
            let rt = runtime(workers).enable_all().build().expect("runtime");
            let handle = rt.handle().clone();
            (handle.runtime_flavor(), handle.metrics().num_workers())
        };
        assert_eq!(flavor(Some(1)), (RuntimeFlavor::CurrentThread, 1));
        assert_eq!(flavor(Some(3)), (RuntimeFlavor::MultiThread, 3));
        assert_eq!(flavor(None).0, RuntimeFlavor::MultiThread);
    }
}
