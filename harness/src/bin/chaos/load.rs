//! The steady load: `plan.rate` records a second of known tickets, every 8th a hostile corpus
//! record, a poison record (a ticket over the stand-in's body limit) a minute; hostile and poison
//! records stamped hours to days old. Guarantees: only acknowledged records count as produced.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use testkit::corpus::Entry as Hostile;
use testkit::kafka::producer_config;

use harness::now_ms;

use crate::signals::hex;
use crate::{say, Plan, OLD_STAMPS, POISON_TICKET_BYTES};

/// What the producer produced and where it landed.
#[derive(Default)]
pub struct Produced {
    /// Known tickets whose record was acknowledged, with its partition.
    pub tickets: HashMap<String, i32>,
    /// (partition, offset) of acknowledged invalid hostile records, with the corpus name (all
    /// carry an old source timestamp).
    pub invalid: HashMap<(i32, i64), String>,
    /// (partition, offset) of acknowledged poison records (a ticket over the body limit).
    pub poison: HashSet<(i32, i64)>,
    /// Tickets of acknowledged hostile records that map.
    pub hostile_tickets: HashSet<String>,
    /// Hostile records acknowledged.
    pub hostile: usize,
    /// Records whose delivery failed (not counted as expected).
    pub failed: usize,
}

/// What one produced record is.
pub enum Kind {
    /// A known ticket, current timestamp: must reach the stand-in.
    Known,
    /// A corpus record, old timestamp.
    Hostile(Hostile),
    /// A valid event whose ticket is over the stand-in's body limit, old timestamp: answered
    /// 413 on every attempt, must be parked with that status.
    Poison,
}

/// A valid add-to-cart event for `ticket` with random keys (`cust-…`/`sess-…`) and consent, and
/// sometimes a second line that is not Elevate's.
pub fn known_event(rng: &mut StdRng, ticket: &str) -> Vec<u8> {
    let ck = format!("cust-{}", hex(rng, 32));
    let sk = format!("sess-{}", hex(rng, 32));
    let ctx = ["PERSONALIZED", "UNPERSONALIZED", "ANONYMOUS", "SYNTHETIC", ""][rng.random_range(0..5)];
    let mut lines = vec![json!({"source": "elevate", "ticket": ticket, "productKey": "p"})];
    if rng.random_bool(0.3) {
        lines.push(json!({"source": "shop", "ticket": "not-ours", "productKey": "q"}));
    }
    let mut e = json!({"type": "add_to_cart", "market": "SE", "customerKey": ck, "sessionKey": sk,
        "visitor": {"userAgent": "chaos/1.0", "ip": "203.0.113.9"}, "lines": lines});
    if !ctx.is_empty() {
        e["userContext"] = json!(ctx);
    }
    serde_json::to_vec(&e).unwrap()
}

/// Produces `plan.rate` records a second until `stop`; every 8th a hostile record, and a poison
/// record once a minute.
pub async fn produce_load(
    bs: String,
    topic: String,
    plan: Plan,
    corpus: Vec<Hostile>,
    produced: Arc<Mutex<Produced>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let producer: FutureProducer = producer_config(&bs)
        // Survive the broker's downtime: keep retrying for 5 minutes.
        .set("message.timeout.ms", "300000")
        .create()
        .expect("producer");
    // Heavy records (big, or with many lines) go in once each, spread over the run; the rest
    // are drawn at random.
    let (heavy, light): (Vec<Hostile>, Vec<Hostile>) = corpus
        .into_iter()
        .partition(|h| h.value.as_ref().is_some_and(|v| v.len() > 16 * 1024) || h.tickets.len() > 10);
    let mut heavy = heavy.into_iter();
    let mut rng = StdRng::seed_from_u64(8);
    let mut tick = tokio::time::interval(Duration::from_secs(1) / plan.rate);
    let mut n: u64 = 0;
    let mut deliveries = Vec::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {}
        }
        n += 1;
        // One poison record 10 s in and then every minute; every 8th record a hostile one.
        let (key, value, kind) = if n % (u64::from(plan.rate) * 60) == u64::from(plan.rate) * 10 {
            let ticket = format!("poison-{n}-{}", "x".repeat(POISON_TICKET_BYTES));
            (
                format!("poison-{n}"),
                Some(known_event(&mut rng, &ticket)),
                Kind::Poison,
            )
        } else if n % 8 == 0 {
            let h = if n % 160 == 0 {
                heavy
                    .next()
                    .unwrap_or_else(|| light[rng.random_range(0..light.len())].clone())
            } else {
                light[rng.random_range(0..light.len())].clone()
            };
            (format!("hostile-{n}"), h.value.clone(), Kind::Hostile(h))
        } else {
            let ticket = format!("chaos-{n}");
            let value = known_event(&mut rng, &ticket);
            (ticket, Some(value), Kind::Known)
        };
        let headers = OwnedHeaders::new().insert(Header {
            key: "chaos-key",
            value: Some(key.as_bytes()),
        });
        let mut rec: FutureRecord<'_, str, [u8]> =
            FutureRecord::to(&topic).key(key.as_str()).headers(headers);
        if let Some(v) = &value {
            rec = rec.payload(v.as_slice());
        }
        if !matches!(kind, Kind::Known) {
            // Hostile and poison records are old (a replay, a long lag): parking must not make
            // them expire at once in the dead-letter topic.
            let age = OLD_STAMPS[(n / 8 % 2) as usize].as_millis() as u64;
            rec = rec.timestamp((now_ms() - age) as i64);
        }
        let fut = match producer.send_result(rec) {
            Ok(f) => f,
            Err((e, _)) => {
                say(format!("produce enqueue failed: {e}"));
                produced.lock().unwrap().failed += 1;
                continue;
            }
        };
        let produced = produced.clone();
        deliveries.push(tokio::spawn(async move {
            let landed = match fut.await {
                Ok(Ok(d)) => (d.partition, d.offset),
                _ => {
                    produced.lock().unwrap().failed += 1;
                    return;
                }
            };
            let mut p = produced.lock().unwrap();
            match kind {
                Kind::Known => {
                    p.tickets.insert(key, landed.0);
                }
                Kind::Poison => {
                    p.poison.insert(landed);
                }
                Kind::Hostile(h) => {
                    p.hostile += 1;
                    if h.invalid() {
                        p.invalid.insert(landed, h.name.clone());
                    }
                    p.hostile_tickets.extend(h.tickets.iter().cloned());
                }
            }
        }));
    }
    for d in deliveries {
        let _ = d.await;
    }
}
