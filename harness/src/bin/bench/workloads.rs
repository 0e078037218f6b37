//! The workloads of phase 3: every shape of `testkit::events::Shape` (`typical`, `small`: many
//! small records, `large`: few records of many lines) at two topic sizes, a full one and a
//! quarter of it, each its own preloaded topic. Guarantees: the typical full topic comes first
//! (the ceilings and the end-to-end ratio use it), its quarter second.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};
use testkit::events::Shape;
use testkit::kafka::{create_topic, unique};

use harness::round;

use crate::load::{preload, Produced};
use crate::phases::e2e;
use crate::sink::Env;
use crate::standin::Standin;
use crate::{say, Plan};

/// Records of the others per record of a `large` topic: its records hold ~155 notifications
/// each (typical: ~1.2), so every full topic carries about as many notifications.
const LARGE_DIVISOR: u64 = 130;

/// One preloaded topic.
pub struct Workload {
    /// What its records look like.
    pub shape: Shape,
    /// `full` or `quarter`.
    pub size: &'static str,
    /// The topic.
    pub topic: String,
    /// What was produced to it.
    pub produced: Produced,
}

impl Workload {
    /// The phase name (configs, logs, profiles): `e2e-SHAPE-SIZE`.
    pub fn name(&self) -> String {
        format!("e2e-{}-{}", self.shape.name(), self.size)
    }

    /// What the topic holds, for the report.
    pub fn describe(&self) -> Value {
        let records = self.produced.ts.len().max(1) as f64;
        json!({
            "shape": self.shape.name(),
            "size": self.size,
            "records": self.produced.ts.len(),
            "notifications": self.produced.notifications,
            "notifications_per_record": round(self.produced.notifications as f64 / records, 2),
            "mean_value_bytes": round(self.produced.bytes as f64 / records, 0),
            "value_mib": round(self.produced.bytes as f64 / 1048576.0, 1),
        })
    }
}

/// Records of `shape` in its full topic when the typical one holds `records`.
fn full_records(shape: Shape, records: u64) -> u64 {
    match shape {
        Shape::Typical | Shape::Small => records,
        Shape::Large => (records / LARGE_DIVISOR).max(8),
    }
}

/// Creates and preloads every workload's topic (and its dead-letter topic); `quick` (the dev
/// loop) only the full topics of the typical and large shapes.
pub async fn preload_all(bs: &str, partitions: i32, plan: &Plan, quick: bool) -> Result<Vec<Workload>> {
    let mut out = Vec::new();
    for (i, shape) in Shape::ALL.into_iter().enumerate() {
        if quick && shape == Shape::Small {
            continue;
        }
        let full = full_records(shape, plan.records);
        let sizes = [("full", full), ("quarter", (full / 4).max(2))];
        for (size, n) in sizes.into_iter().take(if quick { 1 } else { 2 }) {
            let topic = unique(&format!("bench-{}-{size}", shape.name()));
            create_topic(bs, &topic, partitions, &[]).await?;
            create_topic(bs, &format!("{topic}-dlq"), 1, &[]).await?;
            let t0 = Instant::now();
            let produced = preload(
                bs,
                &topic,
                shape,
                n,
                1 + i as u64 * 2 + u64::from(size == "quarter"),
            )
            .await?;
            say(format!(
                "preloaded {n} {} records into {topic} in {:.1} s ({} notifications expected)",
                shape.name(),
                t0.elapsed().as_secs_f64(),
                produced.notifications
            ));
            out.push(Workload {
                shape,
                size,
                topic,
                produced,
            });
        }
    }
    Ok(out)
}

/// Phase 3 on every workload: each run's figures with the workload's description.
pub async fn run_all(
    env: &Env,
    standin: &Standin,
    workloads: &[Workload],
    timeout: Duration,
) -> Result<Vec<Value>> {
    let mut runs = Vec::new();
    for w in workloads {
        let mut r = e2e(env, standin, &w.name(), &w.topic, &w.produced, timeout).await?;
        r["workload"] = w.describe();
        say(format!("   {}: {r}", w.name()));
        runs.push(r);
    }
    Ok(runs)
}

/// Peak RSS of every run under `limit_mib`, and flat in topic size: within ±20 % between a
/// shape's two sizes.
pub fn rss_met(runs: &[Value], limit_mib: f64) -> bool {
    let rss = |r: &Value| r["peak_rss_mib"].as_f64().unwrap_or(f64::INFINITY);
    let under = runs.iter().all(|r| rss(r) < limit_mib);
    let flat = runs.chunks(2).all(|pair| match pair {
        [a, b] => (rss(a) - rss(b)).abs() <= 0.2 * rss(a).max(rss(b)),
        _ => true,
    });
    under && flat
}
