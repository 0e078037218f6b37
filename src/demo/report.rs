//! The demo's report: per route, what arrived at the stand-in (204), what was skipped and what was
//! parked (read back from the dead-letter topic with its headers, grouped by `elevate-sink-route`),
//! then what belongs to no route, then the committed offsets. Guarantees: every number comes from
//! the pipeline's metrics, the stand-in or the broker, not from what the demo expects; customer
//! and session keys are shown as "which keys were sent", never their values, and the Api-Key never;
//! `report` is true only when everything is accounted for.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

use super::{Sample, Tp, DEAD_LETTER_TOPIC, GROUP, ORDER_EVENTS, SAMPLE_EVENTS, TOPICS};
use crate::config::Config;
use crate::deadletter::{headers, ParkCause};
use crate::metrics::{route_labels, Metrics};
use crate::route::{Kind, Route, RouteTag, Routes};
use crate::select::SkipReason;
use elevate_standin::Accepted;

/// A record read back from the dead-letter topic.
pub(super) struct Parked {
    /// `elevate-sink-reason`.
    reason: String,
    /// `elevate-sink-detail`.
    detail: String,
    /// `elevate-sink-route`, when the record got as far as a route.
    route: Option<String>,
    /// `elevate-sink-source-topic`.
    source_topic: String,
    /// `elevate-sink-source-partition`.
    source_partition: Option<i32>,
    /// `elevate-sink-source-offset`.
    source_offset: Option<i64>,
}

/// Prints what happened; true when every record was committed, every park was read back and
/// every route got at least one 204.
pub(super) async fn report(
    cfg: &Config,
    standin: &elevate_standin::StandIn,
    sample: &Sample,
    metrics: &Metrics,
    committed: &BTreeMap<Tp, Option<i64>>,
) -> anyhow::Result<bool> {
    let routes = Routes::from_config(cfg).context("demo routes")?;
    let by_topic: Vec<String> = TOPICS
        .iter()
        .map(|(t, _)| format!("{t} {}", metrics.consumed(t)))
        .collect();
    let consumed: u64 = TOPICS.iter().map(|(t, _)| metrics.consumed(t)).sum();
    println!("\nconsumed       {consumed} records: {}", by_topic.join(", "));
    let accepted = standin.accepted();
    println!(
        "sent           {} notifications, accepted (204) by the stand-in; its answers by status: {:?}",
        accepted.len(),
        standin.status_counts()
    );
    let dead_total: u64 = metrics.dead_lettered_by::<ParkCause>().values().sum();
    let parked = read_dead_letters(&cfg.kafka.bootstrap_servers, dead_total as usize).await?;
    println!(
        "dead-lettered  {dead_total}; read back from {DEAD_LETTER_TOPIC}: {} records, each with its reason and route headers",
        parked.len()
    );
    let mut every_route_delivered = true;
    for route in &routes.routes {
        every_route_delivered &= route_report(route, &accepted, sample, metrics, &parked);
    }
    no_route_report(&routes, metrics, &parked, sample);
    let all_done = committed_report(sample, committed);
    if !every_route_delivered {
        println!("a route got no 204 at all: the demo is not showing what it should");
    }
    Ok(all_done && parked.len() == dead_total as usize && every_route_delivered)
}

/// One route's part of the report; true when at least one of its requests was accepted.
fn route_report(
    route: &Route,
    accepted: &[Accepted],
    sample: &Sample,
    metrics: &Metrics,
    parked: &[Parked],
) -> bool {
    let tag = &route.tag;
    let mut mine: Vec<&Accepted> = accepted
        .iter()
        .filter(|a| a.kind.path().trim_start_matches('/') == tag.kind.path())
        .collect();
    mine.sort_by_key(|a| (example_order(sample, &identity(a)), identity(a)));
    let api_key = if tag.kind == Kind::Payment {
        ", with the Api-Key (checked by the stand-in)"
    } else {
        ""
    };
    println!(
        "\nroute {} ({}) from {}{api_key}",
        tag.name,
        tag.kind.as_str(),
        route.topics.join(", ")
    );
    println!("  arrived (204)  {}", mine.len());
    for a in &mine {
        let what = match tag.kind {
            Kind::Payment => format!("lines {}", payment_lines(&a.body)),
            _ => format!("ticket {}", short(&a.ticket, 26)),
        };
        println!(
            "    {:<3} {:<16} {:<23} {:<42} {}",
            a.market,
            a.user_context
                .map(|c| c.as_str().to_string())
                .unwrap_or_else(|| "(PERSONALIZED)".into()),
            keys_sent(a),
            what,
            sample.origin.get(&identity(a)).copied().unwrap_or("?")
        );
    }
    println!("  skipped        {}", reasons(&route_skips(metrics, tag)));
    let parks: Vec<&Parked> = parked
        .iter()
        .filter(|p| p.route.as_deref() == Some(tag.name.as_ref()))
        .collect();
    parked_lines(&parks, sample);
    !mine.is_empty()
}

/// Skips and parks that belong to no route (a record whose event type feeds none of its topic's
/// routes; a record that is not even JSON on a topic of several routes).
fn no_route_report(routes: &Routes, metrics: &Metrics, parked: &[Parked], sample: &Sample) {
    let mut unrouted = metrics.skipped_by::<SkipReason>();
    for route in &routes.routes {
        for (reason, n) in route_skips(metrics, &route.tag) {
            if let Some(left) = unrouted.get_mut(&reason) {
                *left = left.saturating_sub(n);
            }
        }
    }
    unrouted.retain(|_, n| *n > 0);
    println!("\nno route (records whose event type feeds none of their topic's routes)");
    println!("  skipped        {}", reasons(&unrouted));
    let parks: Vec<&Parked> = parked.iter().filter(|p| p.route.is_none()).collect();
    parked_lines(&parks, sample);
}

/// The committed offsets against the ends; true when every partition is done.
fn committed_report(sample: &Sample, committed: &BTreeMap<Tp, Option<i64>>) -> bool {
    println!("\ncommitted      (group {GROUP}; position = next offset to read)");
    let mut all_done = true;
    for ((topic, p), end) in &sample.ends {
        let c = committed.get(&(*topic, *p)).copied().flatten();
        let done = c.unwrap_or(0) >= *end;
        all_done &= done;
        println!(
            "  {:<15} committed {:<4} end {:<4} {}",
            format!("{topic}/{p}"),
            c.map_or("-".into(), |v| v.to_string()),
            end,
            if done { "all done" } else { "NOT DONE" }
        );
    }
    all_done
}

/// `route`'s skips by reason (reasons never counted are left out).
fn route_skips(metrics: &Metrics, route: &RouteTag) -> BTreeMap<SkipReason, u64> {
    SkipReason::ALL
        .iter()
        .filter_map(|r| {
            let n = metrics
                .route_skipped
                .get(&route_labels(route, Some(r.as_str())))?
                .get();
            Some((*r, n))
        })
        .collect()
}

fn reasons(by: &BTreeMap<SkipReason, u64>) -> String {
    if by.is_empty() {
        return "none".into();
    }
    let parts: Vec<String> = by.iter().map(|(r, n)| format!("{} {n}", r.as_str())).collect();
    parts.join(", ")
}

fn parked_lines(parks: &[&Parked], sample: &Sample) {
    if parks.is_empty() {
        println!("  parked         none");
        return;
    }
    println!("  parked         {}", parks.len());
    for p in parks {
        let source = sample
            .produced
            .iter()
            .find(|r| {
                r.topic == p.source_topic
                    && Some(r.partition) == p.source_partition
                    && Some(r.offset) == p.source_offset
            })
            .map(|r| r.file)
            .unwrap_or("?");
        println!(
            "    {}/{}@{}  {}: {}  ({source})",
            p.source_topic,
            p.source_partition.map_or("?".into(), |v| v.to_string()),
            p.source_offset.map_or("?".into(), |v| v.to_string()),
            p.reason,
            p.detail
        );
    }
}

/// Which keys a request carried (never their values).
fn keys_sent(a: &Accepted) -> &'static str {
    match (&a.customer_key, &a.session_key) {
        (Some(_), Some(_)) => "customerKey+sessionKey",
        (None, Some(_)) => "sessionKey only",
        (Some(_), None) => "customerKey only",
        (None, None) => "no keys",
    }
}

/// What identifies an accepted request: its ticket, or for a payment its variant keys.
pub(super) fn identity(a: &Accepted) -> String {
    if !a.ticket.is_empty() {
        return a.ticket.clone();
    }
    a.body
        .get("lines")
        .and_then(Value::as_array)
        .map(|l| variant_keys(l))
        .unwrap_or_default()
}

/// The variant keys of order lines, joined by `+`.
pub(super) fn variant_keys(lines: &[Value]) -> String {
    let keys: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.get("variantKey").and_then(Value::as_str))
        .collect();
    keys.join("+")
}

/// A payment body's lines, short: `v-shirt-blue-m ×2, v-socks-black ×1`.
fn payment_lines(body: &Value) -> String {
    let lines = body
        .get("lines")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let parts: Vec<String> = lines
        .iter()
        .map(|l| {
            format!(
                "{} ×{}",
                l.get("variantKey").and_then(Value::as_str).unwrap_or("?"),
                l.get("quantity").map_or("?".into(), |q| q.to_string())
            )
        })
        .collect();
    parts.join(", ")
}

/// Where the example a request came from is in the embedded lists (cart examples, then orders).
fn example_order(sample: &Sample, identity: &str) -> Option<usize> {
    let file = sample.origin.get(identity).copied()?;
    SAMPLE_EVENTS
        .iter()
        .chain(ORDER_EVENTS)
        .position(|(f, _)| *f == file)
}

/// Reads the dead-letter topic from the beginning until `expected` records (or 10 s).
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
                        route: h.get(headers::ROUTE).cloned(),
                        source_topic: h.get(headers::SOURCE_TOPIC).cloned().unwrap_or_default(),
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
