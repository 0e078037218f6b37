//! CPU and memory accounting from `/proc`: per-process CPU seconds, peak RSS sampled every 50 ms,
//! the machine's busy share, and a description of the machine. Guarantees: readings, never
//! assertions; a process that is gone reads as no use. Limits: Linux only.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use harness::round;

/// CPU time of a process in seconds: (user, system). System time is the kernel working for the
/// process: its syscalls and, on loopback, the TCP receive path its writes run for the peer
/// (waking the peer included).
pub fn cpu_split(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the command: state is #3 overall, utime #14, stime #15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime / 100.0, stime / 100.0))
}

/// A `/proc/PID/status` field in KiB (e.g. `VmHWM`).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// (busy, total) jiffies of the whole machine.
pub fn machine_jiffies() -> (u64, u64) {
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

/// The machine's online CPUs (the `cpuN` lines of `/proc/stat`), whatever this process's own
/// affinity (`--sink-cpus` narrows it).
pub fn online_cpus() -> usize {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let n = s
        .lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    n.max(1)
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// CPU use of the processes that matter over one phase.
pub struct CpuMeter {
    /// Processes measured: name, pid, CPU seconds (user, system) at start.
    pub procs: Vec<(String, u32, (f64, f64))>,
    /// Machine (busy, total) jiffies at start.
    pub machine: (u64, u64),
    /// Wall clock at start.
    pub start: Instant,
}

impl CpuMeter {
    pub fn start(procs: &[(&str, Option<u32>)]) -> CpuMeter {
        CpuMeter {
            procs: procs
                .iter()
                .filter_map(|(n, p)| p.map(|p| (n.to_string(), p, cpu_split(p).unwrap_or_default())))
                .collect(),
            machine: machine_jiffies(),
            start: Instant::now(),
        }
    }

    /// CPU seconds (user + system) `name` used since the start, if it is measured.
    pub fn secs(&self, name: &str) -> Option<f64> {
        self.split(name).map(|(user, system)| user + system)
    }

    /// CPU seconds (user, system) `name` used since the start, if it is measured.
    pub fn split(&self, name: &str) -> Option<(f64, f64)> {
        let (_, pid, (user, system)) = self.procs.iter().find(|(n, _, _)| n == name)?;
        cpu_split(*pid).map(|(u, s)| (u - user, s - system))
    }

    /// Cores used by each process, and by the whole machine (all processes, ours and others').
    pub fn stop(&self) -> Value {
        let wall = self.start.elapsed().as_secs_f64().max(1e-3);
        let mut out = serde_json::Map::new();
        let mut ours = 0.0;
        for (name, ..) in &self.procs {
            let used = self.secs(name).unwrap_or(0.0);
            ours += used / wall;
            out.insert(name.clone(), json!(round(used / wall, 2)));
        }
        let (busy, total) = machine_jiffies();
        let cores = online_cpus() as f64;
        let m = (busy - self.machine.0) as f64 / ((total - self.machine.1) as f64).max(1.0) * cores;
        out.insert("machine".into(), json!(round(m, 2)));
        out.insert("others".into(), json!(round((m - ours).max(0.0), 2)));
        Value::Object(out)
    }
}

/// Samples peak and current RSS of a process every 50 ms until stopped.
pub struct RssSampler {
    /// Set to stop the thread.
    pub stop: Arc<AtomicBool>,
    /// Highest VmHWM seen, KiB.
    pub hwm: Arc<AtomicU64>,
    /// Highest VmRSS seen, KiB.
    pub rss: Arc<AtomicU64>,
    /// The sampling thread.
    pub thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
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
    pub fn peak_mib(&mut self) -> f64 {
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

pub fn machine() -> Value {
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
        "cpus": online_cpus(),
        "cpu_model": model,
        "memory_gib": mem_gib,
        "kernel": kernel.trim(),
        "loadavg_at_start": loadavg(),
    })
}
