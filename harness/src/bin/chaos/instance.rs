//! Service instances: the real binary as child processes (`run`), each with its config, admin
//! port, logs of every incarnation and the signals it was sent. Guarantees: every signal is in the
//! timeline before it is sent; a child is killed when its handle drops.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use elevate_standin::StandIn;

use harness::{free_port, now_ms};

use crate::duplicates::{lock, Sent, SignalKind, Timeline};
use crate::signals::{await_cond, signal, SIGKILL, SIGTERM};
use crate::{say, API_KEY_ENV, ORDER_PARTITIONS, PARTITIONS, PASSWORD_ENV};

pub struct Instance {
    pub name: &'static str,
    /// Its Kafka `client.id` (`chaos-A`…), which the group's member list shows.
    pub client_id: String,
    /// Where its signals are written down.
    pub timeline: Arc<Mutex<Timeline>>,
    pub admin: u16,
    pub config: PathBuf,
    pub logs_dir: PathBuf,
    pub child: Option<tokio::process::Child>,
    pub starts: u32,
    /// Log files of every incarnation.
    pub logs: Vec<PathBuf>,
}

impl Instance {
    pub fn new(name: &'static str, dir: &Path, toml: &str, timeline: Arc<Mutex<Timeline>>) -> Instance {
        let admin = free_port().expect("a free port");
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

    pub fn start(&mut self, bin: &Path, password: &str, api_key: &str) {
        self.starts += 1;
        let log = self.logs_dir.join(format!("{}-{}.log", self.name, self.starts));
        let file = std::fs::File::create(&log).expect("log file");
        let child = tokio::process::Command::new(bin)
            .args(["run", "--config"])
            .arg(&self.config)
            .env(PASSWORD_ENV, password)
            .env(API_KEY_ENV, api_key)
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
    pub fn send_signal(&self, pid: u32, kind: SignalKind) {
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

    pub async fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = c.id() {
                self.send_signal(pid, SignalKind::Kill);
            }
            let _ = c.wait().await;
            say(format!("SIGKILLed {}", self.name));
        }
    }

    /// SIGTERM and wait (bounded); returns whether it exited 0.
    pub async fn sigterm(&mut self) -> bool {
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

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Partitions it currently owns (from /metrics); None when it does not answer.
    pub async fn assigned(&self, http: &reqwest::Client) -> Option<i64> {
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
    pub fn rebalance_lines(&self) -> (usize, usize) {
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

/// Waits until the running instances own every partition of both source topics, each at least
/// one.
pub async fn await_balanced(insts: &[Instance], http: &reqwest::Client, timeout: Duration) -> bool {
    let running: Vec<&Instance> = insts.iter().filter(|i| i.running()).collect();
    let names: Vec<&str> = running.iter().map(|i| i.name).collect();
    let running = &running;
    await_cond(
        timeout,
        &format!(
            "{names:?} to share all {} partitions",
            PARTITIONS + ORDER_PARTITIONS
        ),
        || async move {
            let mut total = 0;
            for i in running {
                match i.assigned(http).await {
                    Some(n) if n > 0 => total += n,
                    _ => return false,
                }
            }
            total == i64::from(PARTITIONS + ORDER_PARTITIONS)
        },
    )
    .await
}

/// Waits until the stand-in accepted `n` more requests than now.
pub async fn await_progress(standin: &StandIn, n: usize, timeout: Duration, what: &str) -> bool {
    let target = standin.accepted_count() + n;
    await_cond(
        timeout,
        what,
        || async move { standin.accepted_count() >= target },
    )
    .await
}
