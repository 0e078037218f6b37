//! The Elevate stand-in as its own process (`elevate-standin`), and the bench's client of its
//! control API. Guarantees: the process is killed when this handle drops.

use std::path::Path;
use std::process::{Child, Stdio};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

use crate::place::Placement;

/// One accepted request, as `GET /_standin/accepted` lists it (fields we use).
#[derive(Deserialize)]
pub struct AcceptedLine {
    /// The ticket sent.
    pub ticket: String,
    /// When the stand-in accepted it.
    pub received_at_ms: i64,
}

/// The stand-in, running as its own process.
pub struct Standin {
    /// The child process.
    pub child: Child,
    /// Its base URL.
    pub base: String,
    /// Client for the control API.
    pub http: reqwest::Client,
}

impl Standin {
    /// Starts `bin` on the stand-in's CPUs of `placement`.
    pub fn start(bin: &Path, placement: &Placement) -> Result<Standin> {
        let mut child = placement
            .others_command(bin)
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn reset(&self) -> Result<()> {
        self.http
            .post(format!("{}/_standin/reset", self.base))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// Sets the stand-in's faults (`POST /_standin/faults`; [`Standin::reset`] clears them).
    pub async fn set_faults(&self, faults: &Value) -> Result<()> {
        self.http
            .post(format!("{}/_standin/faults", self.base))
            .json(faults)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    pub async fn stats(&self) -> Result<Value> {
        Ok(self
            .http
            .get(format!("{}/_standin/stats", self.base))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    pub async fn accepted_count(&self) -> Result<u64> {
        Ok(self.stats().await?["accepted"].as_u64().unwrap_or(0))
    }

    /// Streams `GET /_standin/accepted`, calling `f(ticket, received_at_ms)` per line.
    pub async fn accepted(&self, mut f: impl FnMut(&str, i64)) -> Result<()> {
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
