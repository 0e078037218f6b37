//! `elevate-standin`: the Elevate stand-in as a process, for benchmarks and chaos runs.
//!
//! Prints its base URL on stdout once listening; control API under `/_standin/` (see
//! the `elevate_standin` library). SIGTERM/SIGINT: stop, dump accepted requests (`--dump`), exit 0.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use elevate_standin::{Faults, Options, StandIn};
use tokio::signal::unix::{signal, SignalKind};

/// Elevate notification stand-in (add-to-cart, click, favourites, end, payment) with fault injection.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, env = "STANDIN_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// File to write accepted requests to as JSON lines, on exit and on `POST /_standin/dump`.
    #[arg(long, env = "STANDIN_DUMP")]
    dump: Option<PathBuf>,
    /// Initial faults as JSON, same form as `POST /_standin/faults`.
    #[arg(long, env = "STANDIN_FAULTS")]
    faults: Option<String>,
    /// The `Api-Key` payment notifications must carry; without it every payment gets 401.
    #[arg(long, env = "STANDIN_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let faults: Option<Faults> = args
        .faults
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .context("--faults is not valid Faults JSON")?;
    if let Some(f) = &faults {
        f.check().map_err(anyhow::Error::msg).context("--faults")?;
    }

    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;

    let standin = StandIn::start_with(Options {
        listen: args.listen,
        dump_path: args.dump.clone(),
        api_key: args.api_key.clone(),
    })
    .await
    .with_context(|| format!("listening on {}", args.listen))?;
    if let Some(f) = faults {
        standin.set_faults(f);
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", standin.base_url())?;
    stdout.flush()?;
    drop(stdout);

    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    standin.shutdown().await;
    if let Some(n) = standin.dump().await.context("writing --dump")? {
        eprintln!(
            "elevate-standin: wrote {n} accepted requests to {}",
            args.dump.as_deref().unwrap_or_else(|| "".as_ref()).display()
        );
    }
    Ok(())
}
