//! `demo`: the real `run` pipeline with zero setup — an in-process Kafka (librdkafka's mock
//! cluster), the in-process Elevate stand-in that enforces the API contract, and the sample
//! events of `schemas/examples/` (embedded, so it works from any directory). Guarantees: it
//! waits for conditions (committed offsets at the end of every partition), never for fixed
//! times; it exits 0 only when every record was committed; clients are dropped before the cluster.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::admin::Health;
use crate::config::{Config, LogConfig, LogFormat};
use crate::deadletter::{headers, ParkCause};
use crate::metrics::Metrics;
use crate::select::SkipReason;
use elevate_standin::StandIn;

/// The example cart events of `schemas/examples/`, embedded: (file name, JSON text).
pub const SAMPLE_EVENTS: &[(&str, &str)] = &[
    (
        "add-to-cart-single.json",
        include_str!("../schemas/examples/add-to-cart-single.json"),
    ),
    (
        "add-to-cart-multi-line.json",
        include_str!("../schemas/examples/add-to-cart-multi-line.json"),
    ),
    (
        "add-to-cart-unpersonalized.json",
        include_str!("../schemas/examples/add-to-cart-unpersonalized.json"),
    ),
    (
        "add-to-cart-anonymous.json",
        include_str!("../schemas/examples/add-to-cart-anonymous.json"),
    ),
    (
        "add-to-cart-synthetic.json",
        include_str!("../schemas/examples/add-to-cart-synthetic.json"),
    ),
    (
        "add-to-cart-not-from-elevate.json",
        include_str!("../schemas/examples/add-to-cart-not-from-elevate.json"),
    ),
    (
        "page-view.json",
        include_str!("../schemas/examples/page-view.json"),
    ),
    (
        "remove-from-cart.json",
        include_str!("../schemas/examples/remove-from-cart.json"),
    ),
    (
        "invalid-missing-customer-key.json",
        include_str!("../schemas/examples/invalid-missing-customer-key.json"),
    ),
    (
        "invalid-ticket-number.json",
        include_str!("../schemas/examples/invalid-ticket-number.json"),
    ),
];

/// The demo's source topic.
const TOPIC: &str = "cart-events";
/// Its partitions.
const PARTITIONS: i32 = 3;
/// The demo's dead-letter topic.
const DEAD_LETTER_TOPIC: &str = "cart-events.elevate-sink.dlq";
/// The demo's consumer group.
const GROUP: &str = "elevate-sink-demo";
/// Each example is produced this many times, with distinct tickets per round.
const ROUNDS: usize = 2;
/// Upper bound for the whole pipeline run (it normally takes about a second).
const FINISH_TIMEOUT: Duration = Duration::from_secs(30);

/// One produced record and what it came from.
#[derive(Debug, Clone)]
struct Produced {
    /// Example file name.
    file: &'static str,
    /// Partition it landed in.
    partition: i32,
    /// Its offset.
    offset: i64,
}

/// Runs the demo and prints its report; exit 0 when every record was committed.
pub async fn main() -> anyhow::Result<ExitCode> {
    crate::logging::init(&LogConfig {
        format: LogFormat::Text,
        // Dead-letters are expected here and reported below; real problems still show.
        level: "warn,elevate_sink::deadletter=error".into(),
    });
    let t0 = Instant::now();
    println!("elevate-sink demo: the real `run` pipeline, an in-process Kafka (librdkafka mock cluster)");
    println!(
        "and an in-process Elevate stand-in that answers 204 only to requests that follow the contract.\n"
    );

    // The host client owns the mock cluster; it is dropped last.
    let host: FutureProducer = ClientConfig::new()
        .set("test.mock.num.brokers", "1")
        .set("linger.ms", "0")
        .set("log_level", "3")
        .create()
        .context("starting the librdkafka mock cluster")?;
    let result = demo(&host, t0).await;
    host.flush(Duration::from_secs(1)).ok();
    drop(host);
    result
}

async fn demo(host: &FutureProducer, t0: Instant) -> anyhow::Result<ExitCode> {
    let bootstrap = mock_topics(host)?;
    let standin = StandIn::start().await.context("starting the Elevate stand-in")?;
    println!("  kafka     mock cluster at {bootstrap}: topic {TOPIC} ({PARTITIONS} partitions), dead-letter topic {DEAD_LETTER_TOPIC}");
    println!("  elevate   stand-in at {}", standin.base_url());
    let sample = produce(host).await?;
    let (metrics, committed) = run_until_committed(&bootstrap, standin.base_url(), &sample.ends).await?;
    let accounted = report(&bootstrap, &standin, &sample, &metrics, &committed).await?;
    standin.shutdown().await;
    println!("\nfinished in {:.1} s", t0.elapsed().as_secs_f64());
    if !accounted {
        bail!("the demo did not account for every record");
    }
    println!("Next: `elevate-sink check --config FILE --sample events.jsonl`, then `elevate-sink run`.");
    Ok(ExitCode::SUCCESS)
}

/// The demo's topics on the mock cluster; returns its bootstrap servers.
fn mock_topics(host: &FutureProducer) -> anyhow::Result<String> {
    let mock = host
        .client()
        .mock_cluster()
        .context("the client has no mock cluster")?;
    // SAFETY: the handle is the live client that owns the mock cluster; the call only sets a
    // number on it. Without it the first group join waits a fixed ~3 s.
    unsafe {
        rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(
            rdkafka::bindings::rd_kafka_handle_mock_cluster(host.client().native_ptr()),
            50,
        );
    }
    mock.create_topic(TOPIC, PARTITIONS, 1)?;
    mock.create_topic(DEAD_LETTER_TOPIC, 1, 1)?;
    Ok(mock.bootstrap_servers())
}

/// What was produced: each record's origin, which example each ticket came from, and each
/// partition's end offset.
struct Sample {
    /// Every produced record.
    produced: Vec<Produced>,
    /// Ticket → example file name.
    ticket_file: BTreeMap<String, &'static str>,
    /// Partition → one past its last produced offset.
    ends: BTreeMap<i32, i64>,
}

/// Produces every example `ROUNDS` times; later rounds get distinct tickets.
async fn produce(host: &FutureProducer) -> anyhow::Result<Sample> {
    let mut produced: Vec<Produced> = Vec::new();
    let mut ticket_file: BTreeMap<String, &'static str> = BTreeMap::new();
    for round in 0..ROUNDS {
        for (file, text) in SAMPLE_EVENTS {
            let value = retick(text, round, |t| {
                ticket_file.insert(t.to_string(), file);
            });
            let key = format!("{file}#{round}");
            let rec: FutureRecord<'_, str, str> = FutureRecord::to(TOPIC)
                .key(key.as_str())
                .payload(value.as_str())
                .headers(OwnedHeaders::new().insert(Header {
                    key: "example",
                    value: Some(file.as_bytes()),
                }));
            let delivered = host
                .send(rec, Duration::from_secs(5))
                .await
                .map_err(|(e, _)| e)
                .with_context(|| format!("producing {file}"))?;
            produced.push(Produced {
                file,
                partition: delivered.partition,
                offset: delivered.offset,
            });
        }
    }
    let mut ends: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, 0)).collect();
    for p in &produced {
        let end = ends.entry(p.partition).or_default();
        *end = (*end).max(p.offset + 1);
    }
    println!(
        "  produced  {} events: the {} files of schemas/examples/, {ROUNDS} rounds with distinct tickets",
        produced.len(),
        SAMPLE_EVENTS.len()
    );
    Ok(Sample {
        produced,
        ticket_file,
        ends,
    })
}

/// Runs the real `pipeline::run` until the group's committed offsets reach every partition's
/// end, then stops it; returns its metrics and the committed offsets.
async fn run_until_committed(
    bootstrap: &str,
    elevate: String,
    ends: &BTreeMap<i32, i64>,
) -> anyhow::Result<(Arc<Metrics>, BTreeMap<i32, Option<i64>>)> {
    let mut cfg = Config::default();
    cfg.kafka.bootstrap_servers = bootstrap.to_string();
    cfg.kafka.group_id = GROUP.into();
    cfg.kafka.topics = vec![TOPIC.into()];
    cfg.elevate.base_url = Some(elevate);
    cfg.dead_letter.topic = DEAD_LETTER_TOPIC.into();
    cfg.pipeline.commit_interval = Duration::from_millis(100);
    cfg.admin.listen = String::new();
    cfg.validate().context("demo configuration")?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(cfg.admin.wedged_after));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let run = {
        let (cfg, metrics, health) = (cfg.clone(), metrics.clone(), health.clone());
        tokio::spawn(async move { crate::pipeline::run(&cfg, metrics, health, stop_rx).await })
    };
    println!(
        "\nrunning pipeline::run until the group's committed offsets reach the end of every partition ..."
    );
    let started = Instant::now();
    let committed = wait_for_commits(bootstrap, ends).await;
    let _ = stop.send(true);
    let summary = run.await.context("pipeline task")??;
    let committed = committed?;
    println!(
        "done after {:.1} s; shut down: drained = {}, final commit ok = {}",
        started.elapsed().as_secs_f64(),
        summary.drained,
        summary.final_commit
    );
    Ok((metrics, committed))
}

/// Prints what happened, from the counters, the stand-in and the dead-letter topic; true when
/// every record was committed and every park was read back.
async fn report(
    bootstrap: &str,
    standin: &StandIn,
    sample: &Sample,
    metrics: &Metrics,
    committed: &BTreeMap<i32, Option<i64>>,
) -> anyhow::Result<bool> {
    let consumed = metrics.consumed(TOPIC);
    println!("\nconsumed       {consumed} records");

    let mut accepted = standin.accepted();
    let file_order = |t: &str| {
        let file = sample.ticket_file.get(t).copied().unwrap_or("");
        SAMPLE_EVENTS.iter().position(|(f, _)| *f == file)
    };
    accepted.sort_by(|a, b| (file_order(&a.ticket), &a.ticket).cmp(&(file_order(&b.ticket), &b.ticket)));
    println!(
        "sent           {} notifications, accepted (204) by the stand-in; its answers by status: {:?}",
        accepted.len(),
        standin.status_counts()
    );
    for a in &accepted {
        let keys = match (&a.customer_key, &a.session_key) {
            (Some(_), Some(_)) => "customerKey+sessionKey",
            (None, Some(_)) => "sessionKey only",
            (Some(_), None) => "customerKey only",
            (None, None) => "no keys",
        };
        let ctx = a
            .user_context
            .map(|c| c.as_str().to_string())
            .unwrap_or_else(|| "(PERSONALIZED)".into());
        println!(
            "  {:<3} {:<16} {:<22} ticket {:<28} {}",
            a.market,
            ctx,
            keys,
            short(&a.ticket, 26),
            sample.ticket_file.get(&a.ticket).copied().unwrap_or("?")
        );
    }

    let skipped = metrics.skipped_by::<SkipReason>();
    let skipped_total: u64 = skipped.values().sum();
    println!("skipped        {skipped_total} (records or cart lines), by reason:");
    for (reason, v) in &skipped {
        println!("  {:<18} {v}", reason.as_str());
    }

    let dead_total: u64 = metrics.dead_lettered_by::<ParkCause>().values().sum();
    let parked = read_dead_letters(bootstrap, dead_total as usize).await?;
    println!(
        "dead-lettered  {dead_total}; read back from {DEAD_LETTER_TOPIC} ({} records) with their reason headers:",
        parked.len()
    );
    for p in &parked {
        let source = sample
            .produced
            .iter()
            .find(|r| Some(r.partition) == p.source_partition && Some(r.offset) == p.source_offset)
            .map(|r| r.file)
            .unwrap_or("?");
        println!(
            "  {TOPIC}/{}@{}  {}: {}  ({source})",
            p.source_partition.map_or("?".into(), |v| v.to_string()),
            p.source_offset.map_or("?".into(), |v| v.to_string()),
            p.reason,
            p.detail
        );
    }

    println!("committed      (group {GROUP}; position = next offset to read)");
    let mut all_done = true;
    for (p, end) in &sample.ends {
        let c = committed.get(p).copied().flatten();
        let done = c.unwrap_or(0) >= *end;
        all_done &= done;
        println!(
            "  {TOPIC}/{p}  committed {:<4} end {:<4} {}",
            c.map_or("-".into(), |v| v.to_string()),
            end,
            if done { "all done" } else { "NOT DONE" }
        );
    }
    Ok(all_done && parked.len() == dead_total as usize)
}

/// The example's JSON with every string ticket suffixed for rounds after the first; calls
/// `seen` with each resulting ticket.
fn retick(text: &str, round: usize, mut seen: impl FnMut(&str)) -> String {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(text) else {
        return text.to_string();
    };
    if let Some(lines) = v.get_mut("lines").and_then(|l| l.as_array_mut()) {
        for line in lines {
            if let Some(serde_json::Value::String(t)) = line.get_mut("ticket") {
                if !t.is_empty() {
                    if round > 0 {
                        t.push_str(&format!("-r{}", round + 1));
                    }
                    seen(t);
                }
            }
        }
    }
    v.to_string()
}

/// Polls the group's committed offsets until every partition reaches its end.
async fn wait_for_commits(
    bootstrap: &str,
    ends: &BTreeMap<i32, i64>,
) -> anyhow::Result<BTreeMap<i32, Option<i64>>> {
    let checker: Arc<BaseConsumer> = Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", GROUP)
            .set("enable.auto.commit", "false")
            .set("log_level", "3")
            .create()?,
    );
    let deadline = Instant::now() + FINISH_TIMEOUT;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let c = checker.clone();
        let mut tpl = TopicPartitionList::new();
        for p in ends.keys() {
            tpl.add_partition(TOPIC, *p);
        }
        let got =
            tokio::task::spawn_blocking(move || c.committed_offsets(tpl, Duration::from_secs(2))).await?;
        let committed: BTreeMap<i32, Option<i64>> = match got {
            Ok(tpl) => tpl
                .elements_for_topic(TOPIC)
                .iter()
                .map(|e| {
                    let o = match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    };
                    (e.partition(), o)
                })
                .collect(),
            Err(_) => BTreeMap::new(),
        };
        let done = ends
            .iter()
            .all(|(p, end)| *end == 0 || committed.get(p).copied().flatten().unwrap_or(0) >= *end);
        if done {
            return Ok(committed);
        }
        if Instant::now() > deadline {
            bail!("records were not all committed within {FINISH_TIMEOUT:?}: committed {committed:?}, ends {ends:?}");
        }
    }
}

/// A record read back from the dead-letter topic.
struct Parked {
    /// `elevate-sink-reason`.
    reason: String,
    /// `elevate-sink-detail`.
    detail: String,
    /// `elevate-sink-source-partition`.
    source_partition: Option<i32>,
    /// `elevate-sink-source-offset`.
    source_offset: Option<i64>,
}

async fn read_dead_letters(bootstrap: &str, expected: usize) -> anyhow::Result<Vec<Parked>> {
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "elevate-sink-demo-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50")
        .set("log_level", "3")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(DEAD_LETTER_TOPIC, 0, Offset::Beginning)?;
    reader.assign(&tpl)?;
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        while out.len() < expected && Instant::now() < deadline {
            match reader.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let mut h: BTreeMap<String, String> = BTreeMap::new();
                    if let Some(hs) = m.headers() {
                        for x in hs.iter() {
                            h.insert(
                                x.key.to_string(),
                                String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                            );
                        }
                    }
                    out.push(Parked {
                        reason: h.get(headers::REASON).cloned().unwrap_or_default(),
                        detail: h.get(headers::DETAIL).cloned().unwrap_or_default(),
                        source_partition: h.get(headers::SOURCE_PARTITION).and_then(|v| v.parse().ok()),
                        source_offset: h.get(headers::SOURCE_OFFSET).and_then(|v| v.parse().ok()),
                    });
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                Some(Err(e)) => return Err(anyhow::Error::from(e).context("reading the dead-letter topic")),
            }
        }
        Ok(out)
    })
    .await?
}

/// `s` if at most `n` characters, else its head and tail around an ellipsis.
fn short(s: &str, n: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= n {
        return s.to_string();
    }
    let tail = n / 2;
    let head = n - tail - 1;
    format!(
        "{}…{}",
        chars[..head].iter().collect::<String>(),
        chars[chars.len() - tail..].iter().collect::<String>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_rounds_get_distinct_tickets() {
        let mut seen = Vec::new();
        let v = retick(SAMPLE_EVENTS[1].1, 1, |t| seen.push(t.to_string()));
        assert!(v.contains("T2xpbmUtMS1lbGV2YXRlLXNlYXJjaA-r2"), "{v}");
        assert!(seen.iter().all(|t| t.ends_with("-r2")), "{seen:?}");
    }
}
