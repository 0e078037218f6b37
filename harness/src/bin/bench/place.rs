//! Placement (`--sink-cpus`, `--others-cpus`): the CPUs the sink and the load generator run on,
//! and the CPUs of the stand-in and the broker, so that end to end can be judged where the sink
//! has cores of its own, as it has beside a remote Elevate. Guarantees: when set, each process
//! starts with its CPUs (children under `taskset -c`, this process before its runtime's threads
//! exist, the running broker's threads with `taskset -a -p`), and the broker gets every CPU back
//! when the run ends; a list `taskset` refuses stops the run before anything is measured.
//!
//! The load generator is this process, so it shares the sink's CPUs: the HTTP ceiling and the
//! sink then have the same cores, and the stand-in (Elevate) and the broker others.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::procfs::online_cpus;

/// Which CPUs (lists as `taskset -c` reads them, e.g. `0-1`) each side runs on; None: any.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// The sink and the load generator (this process).
    pub sink: Option<String>,
    /// The stand-in and the broker.
    pub others: Option<String>,
}

impl Placement {
    /// `bin` to be started on the sink's CPUs.
    pub fn sink_command(&self, bin: &Path) -> Command {
        command(self.sink.as_deref(), bin)
    }

    /// `bin` to be started on the stand-in's and broker's CPUs.
    pub fn others_command(&self, bin: &Path) -> Command {
        command(self.others.as_deref(), bin)
    }

    /// Moves this process, before it starts threads, to the sink's CPUs.
    pub fn pin_self(&self) -> Result<()> {
        match &self.sink {
            Some(cpus) => taskset(&["-a", "-cp", cpus, &std::process::id().to_string()])
                .with_context(|| format!("--sink-cpus {cpus}")),
            None => Ok(()),
        }
    }

    /// Moves the running broker's threads to the others' CPUs until the guard drops.
    pub fn pin_broker(&self, pid: Option<u32>) -> Result<BrokerPin> {
        let (Some(cpus), Some(pid)) = (&self.others, pid) else {
            if self.others.is_some() {
                bail!("--others-cpus: the broker's pid is unknown (is it a scripts/kafka broker?)");
            }
            return Ok(BrokerPin(None));
        };
        taskset(&["-a", "-cp", cpus, &pid.to_string()])
            .with_context(|| format!("--others-cpus {cpus} (the broker, pid {pid})"))?;
        Ok(BrokerPin(Some(pid)))
    }

    /// The placement as the report shows it (null when nothing is placed).
    pub fn describe(&self) -> Value {
        if self.sink.is_none() && self.others.is_none() {
            return Value::Null;
        }
        json!({"sink_and_load_generator": self.sink, "standin_and_broker": self.others})
    }
}

/// The broker pinned by [`Placement::pin_broker`]; dropping it gives the broker every CPU back.
pub struct BrokerPin(Option<u32>);

impl Drop for BrokerPin {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let all = std::fs::read_to_string("/sys/devices/system/cpu/online")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| format!("0-{}", online_cpus() - 1));
            let _ = taskset(&["-a", "-cp", &all, &pid.to_string()]);
        }
    }
}

fn command(cpus: Option<&str>, bin: &Path) -> Command {
    match cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus]).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

fn taskset(args: &[&str]) -> Result<()> {
    let out = Command::new("taskset")
        .args(args)
        .stdout(Stdio::null())
        .output()
        .context("running taskset (util-linux)")?;
    if !out.status.success() {
        bail!(
            "taskset {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
