//! A run in progress: the broker, the stand-in, the instances and the fault sequence of one round
//! (module doc of `main`, docs/chaos.md). Guarantees: each fault is cleared before the next, and
//! progress is awaited after each (bounded, with a warning on timeout).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use elevate_standin::{Faults, StandIn};
use testkit::kafka::create_topic;

use harness::now_ms;

use crate::broker::Broker;
use crate::duplicates::{lock, Timeline};
use crate::instance::{await_balanced, await_progress, Instance};
use crate::signals::await_cond;
use crate::{say, Plan, BIG, DLQ_SEGMENT_MS, MAX_POLL_MS, ORDER_PARTITIONS, PARTITIONS, SLOW_LATENCY_MS};

/// A run in progress: the parts, the instances, and what the faults phase counts.
pub struct Session {
    pub plan: Plan,
    pub bin: PathBuf,
    pub password: String,
    /// The payment route's Api-Key (given to every instance; must never be logged).
    pub api_key: String,
    pub broker: Broker,
    pub topic: String,
    /// The order topic (the payment route).
    pub orders: String,
    pub standin: StandIn,
    pub http: reqwest::Client,
    pub insts: Vec<Instance>,
    pub timeline: Arc<Mutex<Timeline>>,
    pub clean_exits: usize,
    pub unclean_exits: usize,
    pub outage_rebalances: usize,
}

impl Session {
    /// Marks the start of a phase in the timeline (the table names phases by these) and says
    /// `what` it does.
    pub fn phase(&self, name: &str, what: impl AsRef<str>) {
        say(what);
        lock(&self.timeline).phases.push((now_ms(), name.to_string()));
    }

    pub async fn calm(&self) {
        tokio::time::sleep(self.plan.calm).await;
    }

    pub async fn balanced(&self) -> bool {
        await_balanced(&self.insts, &self.http, Duration::from_secs(60)).await
    }

    pub async fn progress(&self, what: &str) -> bool {
        await_progress(&self.standin, 50, Duration::from_secs(90), what).await
    }

    pub fn start(&mut self, i: usize) {
        self.insts[i].start(&self.bin, &self.password, &self.api_key);
    }

    pub async fn sigterm(&mut self, i: usize) {
        if self.insts[i].sigterm().await {
            self.clean_exits += 1;
        } else {
            self.unclean_exits += 1;
        }
    }

    /// Runs `faults` on the stand-in for `plan.fault` (phase `what`), then clears them and
    /// waits for progress.
    pub async fn elevate_fault(&self, what: &str, faults: Faults) {
        self.phase(what, format!("fault: {what} for {:?}", self.plan.fault));
        self.standin.set_faults(faults);
        tokio::time::sleep(self.plan.fault).await;
        self.standin.clear_faults();
        self.progress(&format!("deliveries after {what}")).await;
    }

    /// The broker goes away (gracefully, or SIGKILLed in the second round) and comes back.
    pub async fn broker_bounce(&mut self, round: u32) -> Result<(), String> {
        let down_at = now_ms();
        if round == 2 {
            self.phase("broker SIGKILL", "broker: SIGKILL");
            self.broker.kill();
        } else {
            self.phase("broker stop", "broker: stop");
            self.broker.stop();
        }
        tokio::time::sleep(self.plan.broker_down).await;
        say("broker: start again (same port, same data)");
        self.broker.restart()?;
        let (b, t, o) = (&self.broker, self.topic.as_str(), self.orders.as_str());
        await_cond(
            Duration::from_secs(120),
            "the broker to answer again",
            || async move { b.answers(t) && b.answers(o) },
        )
        .await;
        lock(&self.timeline).broker_down.push((down_at, now_ms()));
        await_progress(
            &self.standin,
            50,
            Duration::from_secs(120),
            "deliveries after the broker came back",
        )
        .await;
        Ok(())
    }

    /// Elevate down (connections refused) for longer than `max.poll.interval.ms`; counts A's
    /// rebalance events across it (expected 0).
    pub async fn outage(&mut self) -> Result<(), String> {
        let before = self.insts[0].rebalance_lines();
        self.phase(
            "Elevate down",
            format!(
                "fault: Elevate down for {:?} (max.poll.interval.ms = {MAX_POLL_MS})",
                self.plan.outage
            ),
        );
        self.standin.outage_start().await;
        tokio::time::sleep(self.plan.outage).await;
        self.standin.outage_end().await.map_err(|e| e.to_string())?;
        self.progress("deliveries after the outage").await;
        let after = self.insts[0].rebalance_lines();
        let during = after.0 - before.0 + after.1 - before.1;
        self.outage_rebalances += during;
        say(format!(
            "rebalance events of A across the outage: {during} (expected 0)"
        ));
        Ok(())
    }

    /// One round of the fault sequence (module doc, docs/chaos.md).
    pub async fn round(&mut self, round: u32) -> Result<(), String> {
        say(format!("=== round {round} of {}", self.plan.rounds));
        let seed = u64::from(round);
        // 1. SIGKILL and restart the service.
        self.calm().await;
        self.phase("SIGKILL A", "SIGKILL A and restart it");
        self.insts[0].sigkill().await;
        self.start(0);
        self.progress("deliveries after the restart").await;
        // 2. Elevate answers 500 to half the requests.
        let half_500 = Faults {
            failure_ratio: 0.5,
            seed,
            ..Faults::default()
        };
        self.elevate_fault("50% answered 500", half_500).await;
        // 3. Scale out 1 -> 3, and SIGKILL one of the three mid-stream.
        self.calm().await;
        self.phase("scale 1 -> 3", "scaling 1 -> 3");
        self.start(1);
        self.start(2);
        self.balanced().await;
        self.calm().await;
        self.phase("SIGKILL B", "SIGKILL B and restart it");
        self.insts[1].sigkill().await;
        self.start(1);
        self.balanced().await;
        // 4. Elevate throttles: 429 with Retry-After: 1 on 60% of requests.
        let throttle = Faults {
            throttle_ratio: 0.6,
            retry_after_secs: 1,
            seed,
            ..Faults::default()
        };
        self.elevate_fault("60% answered 429", throttle).await;
        // 5. The broker goes away and comes back.
        self.calm().await;
        self.broker_bounce(round).await?;
        // 6. Scale in 3 -> 1 (graceful).
        self.calm().await;
        self.phase("scale 3 -> 1", "scaling 3 -> 1 (SIGTERM)");
        self.sigterm(1).await;
        self.sigterm(2).await;
        self.balanced().await;
        // 7. Elevate slow, then fast again: requests pile up behind the concurrency limit and
        //    must still leave at the quota when answers speed up.
        self.calm().await;
        let slow = Faults {
            latency_ms: SLOW_LATENCY_MS,
            ..Faults::default()
        };
        self.elevate_fault("Elevate slow", slow).await;
        // 8. Elevate down for longer than max.poll.interval.ms.
        self.calm().await;
        self.outage().await?;
        // 9. SIGKILL and restart once more.
        self.calm().await;
        self.phase("SIGKILL A", "SIGKILL A and restart it");
        self.insts[0].sigkill().await;
        self.start(0);
        self.balanced().await;
        Ok(())
    }
}

/// Creates the source topics (cart and order; no retention: the cart topic holds records three
/// days old) and the dead-letter topic (short retention, small segments), and waits for their
/// leaders.
pub async fn create_topics(
    broker: &Broker,
    plan: &Plan,
    (topic, orders): (&str, &str),
    dlq: &str,
) -> Result<(), String> {
    let bs = broker.bootstrap.as_str();
    for (t, partitions) in [(topic, PARTITIONS), (orders, ORDER_PARTITIONS)] {
        create_topic(
            bs,
            t,
            partitions,
            &[("retention.ms", "-1"), ("max.message.bytes", BIG)],
        )
        .await
        .map_err(|e| e.to_string())?;
    }
    let retention = plan.dlq_retention.as_millis().to_string();
    let dlq_configs = [
        ("retention.ms", retention.as_str()),
        ("segment.ms", DLQ_SEGMENT_MS),
        ("max.message.bytes", BIG),
    ];
    create_topic(bs, dlq, 2, &dlq_configs)
        .await
        .map_err(|e| e.to_string())?;
    await_cond(Duration::from_secs(30), "topics to have leaders", || async move {
        broker.answers(topic) && broker.answers(orders) && broker.answers(dlq)
    })
    .await;
    Ok(())
}
