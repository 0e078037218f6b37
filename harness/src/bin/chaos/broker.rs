//! The run's own broker (`scripts/kafka` in its own state directory and port): up, graceful stop,
//! SIGKILL, restart on the same port with the same data, and whether it answers. Guarantees: the
//! broker and its data go with the handle (dropped: killed, then tidied by the script).

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use testkit::kafka::client_config;

use crate::signals::{signal, SIGKILL};

pub struct Broker {
    pub dir: PathBuf,
    pub port: u16,
    pub bootstrap: String,
}

impl Broker {
    pub fn script(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(testkit::repo_root().join("scripts/kafka"))
            .args(args)
            .env("ELEVATE_SINK_KAFKA_DIR", &self.dir)
            .env("ELEVATE_SINK_KAFKA_PORT", self.port.to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/kafka")
    }

    /// Starts it (or reuses the one already running in `dir`).
    pub fn up(dir: PathBuf, port: u16) -> Result<Broker, String> {
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
    pub fn stop(&self) {
        let _ = self.script(&["down"]);
    }

    /// SIGKILL, no shutdown at all.
    pub fn kill(&self) {
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
    pub fn restart(&self) -> Result<(), String> {
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
        // At nice 10: on a 2-core machine a JVM starting at full priority starves the stand-in,
        // whose arrival times then clump (docs/chaos.md, "quota at the stand-in").
        let child = std::process::Command::new("nice")
            .args(["-n", "10"])
            .arg(java)
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
        // scripts/kafka finds (and stops) it through the PID file (`nice` execs java: same PID).
        std::fs::write(self.dir.join("kafka.pid"), format!("{}\n", child.id())).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Whether the broker answers a metadata request for `topic` with leaders everywhere.
    pub fn answers(&self, topic: &str) -> bool {
        let Ok(c) = client_config(&self.bootstrap).create::<BaseConsumer>() else {
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
