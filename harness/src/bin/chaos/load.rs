//! The steady load: `plan.rate` records a second of known tickets, every 8th a hostile corpus
//! record, a poison record (a ticket over the stand-in's body limit) a minute; hostile and poison
//! records stamped hours to days old; and on the order topic an order event every
//! `ORDER_EVERY` ticks, each to become one payment request. Guarantees: only acknowledged records
//! count as produced; every order is known at the stand-in by its id (the prefix of its variant
//! keys), so payments are counted per order.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use elevate_standin::{Accepted, StandIn};
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
    /// Orders (order id) whose record was acknowledged on the order topic, with its partition:
    /// each must reach the stand-in as a payment.
    pub orders: HashMap<String, i32>,
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
    /// An order event (on the order topic) with this id, current timestamp: must reach the
    /// stand-in as one payment.
    Order(String),
}

/// An order event every this many ticks of the load (at the short plan's 50/s: 10 orders a
/// second).
pub const ORDER_EVERY: u64 = 5;

/// A valid order event `id` with random keys and consent and 1-3 lines whose variant keys are
/// `{id}-v{i}`, so the stand-in's payment says which order it is.
pub fn order_event(rng: &mut StdRng, id: &str) -> Vec<u8> {
    let ck = format!("cust-{}", hex(rng, 32));
    let sk = format!("sess-{}", hex(rng, 32));
    let ctx = ["PERSONALIZED", "UNPERSONALIZED", "ANONYMOUS", "SYNTHETIC", ""][rng.random_range(0..5)];
    let lines: Vec<_> = (0..rng.random_range(1..=3))
        .map(|i| {
            json!({"variantKey": format!("{id}-v{i}"), "quantity": rng.random_range(1..=4),
                   "sellingPrice": 39.5, "cost": 15.25})
        })
        .collect();
    let mut e = json!({"type": "order_placed", "orderId": id, "market": "SE", "customerKey": ck,
        "sessionKey": sk, "visitor": {"userAgent": "chaos/1.0", "ip": "203.0.113.9"}, "lines": lines});
    if !ctx.is_empty() {
        e["userContext"] = json!(ctx);
    }
    serde_json::to_vec(&e).unwrap()
}

/// The order a payment the stand-in accepted is for: its first line's variant key without the
/// `-v{i}` suffix.
pub fn order_of(a: &Accepted) -> Option<String> {
    let v = a.body.get("lines")?.get(0)?.get("variantKey")?.as_str()?;
    Some(v.rsplit_once("-v")?.0.to_string())
}

/// Payments accepted at the stand-in, by order id.
pub fn payments_by_order(standin: &StandIn) -> HashMap<String, usize> {
    let mut by: HashMap<String, usize> = HashMap::new();
    for a in standin.accepted_of(elevate_standin::Kind::Payment) {
        if let Some(id) = order_of(&a) {
            *by.entry(id).or_default() += 1;
        }
    }
    by
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
/// record once a minute; and an order on `orders_topic` every `ORDER_EVERY` ticks.
pub async fn produce_load(
    bs: String,
    topic: String,
    orders_topic: String,
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
        let mut records = vec![(topic.as_str(), key, value, kind)];
        if n % ORDER_EVERY == 1 {
            let id = format!("order-{n}");
            let value = order_event(&mut rng, &id);
            records.push((orders_topic.as_str(), id.clone(), Some(value), Kind::Order(id)));
        }
        for (topic, key, value, kind) in records {
            deliveries.extend(send_one(&producer, topic, key, value, kind, n, &produced));
        }
    }
    for d in deliveries {
        let _ = d.await;
    }
}

/// Enqueues one record (hostile and poison ones stamped old) and returns the task that counts it
/// as produced once acknowledged; None (counted as failed) when it could not be enqueued.
fn send_one(
    producer: &FutureProducer,
    topic: &str,
    key: String,
    value: Option<Vec<u8>>,
    kind: Kind,
    n: u64,
    produced: &Arc<Mutex<Produced>>,
) -> Option<tokio::task::JoinHandle<()>> {
    let headers = OwnedHeaders::new().insert(Header {
        key: "chaos-key",
        value: Some(key.as_bytes()),
    });
    let mut rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).key(key.as_str()).headers(headers);
    if let Some(v) = &value {
        rec = rec.payload(v.as_slice());
    }
    if matches!(kind, Kind::Hostile(_) | Kind::Poison) {
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
            return None;
        }
    };
    let produced = produced.clone();
    Some(tokio::spawn(async move {
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
            Kind::Order(id) => {
                p.orders.insert(id, landed.0);
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payment_is_counted_for_the_order_its_variant_keys_name() {
        let mut rng = StdRng::seed_from_u64(1);
        for n in [1u64, 6, 41] {
            let id = format!("order-{n}");
            let event: serde_json::Value = serde_json::from_slice(&order_event(&mut rng, &id)).unwrap();
            assert_eq!(event["type"], "order_placed");
            let a = Accepted {
                kind: elevate_standin::Kind::Payment,
                ticket: String::new(),
                body: json!({"lines": event["lines"]}),
                market: "SE".into(),
                customer_key: None,
                session_key: None,
                user_context: None,
                user_agent: None,
                forwarded_for: None,
                traceparent: None,
                tracestate: None,
                received_at_ms: 0,
            };
            assert_eq!(order_of(&a), Some(id));
        }
    }
}
