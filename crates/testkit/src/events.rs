//! Realistic cart events in the default `[mapping]` shape, shared by `benches/map.rs` and the
//! harness's `bench` (preload, HTTP ceiling, latency). Deterministic for a seed.
//!
//! Shape: `type`, `market`, `customerKey`, `sessionKey`, optional `userContext`,
//! `visitor.{userAgent,ip}`, `occurredAt` (RFC 3339) and 1–3 `lines`, most of them Elevate
//! products with a ticket. A ticket is unique per line and encodes nothing but an id:
//! `t{record}.{line}` (see [`parse_ticket`]).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// A generated event: its JSON bytes and how many notifications it must produce.
pub struct Generated {
    /// The record value.
    pub value: Vec<u8>,
    /// Notifications the default mapping selects from it.
    pub notifications: u32,
}

/// Deterministic generator of events.
pub struct Events {
    /// Source of every random choice.
    rng: StdRng,
}

const MARKETS: [&str; 4] = ["SE", "NO", "DK", "FI"];
const USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
                          Chrome/131.0.0.0 Safari/537.36";

/// The ticket of line `line` of record `record`.
pub fn ticket(record: u64, line: usize) -> String {
    format!("t{record}.{line}")
}

/// The record id a ticket made by [`ticket`] encodes.
pub fn parse_ticket(t: &str) -> Option<u64> {
    t.strip_prefix('t')?.split('.').next()?.parse().ok()
}

impl Events {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Events {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The event of record `id`, which happened at `occurred_at` (RFC 3339).
    pub fn event(&mut self, id: u64, occurred_at: &str) -> Generated {
        let r = &mut self.rng;
        // 92 % add-to-cart, the rest other cart events the sink skips.
        let kind = if r.random_bool(0.92) {
            "add_to_cart"
        } else if r.random_bool(0.5) {
            "remove_from_cart"
        } else {
            "cart_viewed"
        };
        let nlines = match r.random_range(0..10) {
            0..=5 => 1,
            6..=8 => 2,
            _ => 3,
        };
        let mut notifications = 0;
        let mut lines = Vec::with_capacity(nlines);
        for j in 0..nlines {
            let product = r.random_range(10_000..99_999);
            let mut line = json!({
                "productKey": format!("p{product}"),
                "variantKey": format!("p{product}-{}", r.random_range(1..6)),
                "quantity": r.random_range(1..3),
                "price": {"amount": r.random_range(49..2_000) as f64 - 0.05, "currency": "SEK"},
            });
            match r.random_range(0..20) {
                // 85 %: an Elevate product with its ticket.
                0..=16 => {
                    line["source"] = json!("elevate");
                    line["ticket"] = json!(ticket(id, j));
                    if kind == "add_to_cart" {
                        notifications += 1;
                    }
                }
                // 10 %: found outside Elevate (shop search, direct link).
                17 | 18 => line["source"] = json!("shop"),
                // 5 %: an Elevate product whose ticket was lost.
                _ => line["source"] = json!("elevate"),
            }
            lines.push(line);
        }
        let mut e: Value = json!({
            "type": kind,
            "eventId": format!("evt-{id:012}"),
            "market": MARKETS[r.random_range(0..MARKETS.len())],
            "customerKey": format!("cust-{:08x}", r.random::<u32>()),
            "sessionKey": format!("sess-{:016x}", r.random::<u64>()),
            "visitor": {"userAgent": USER_AGENT, "ip": format!("203.0.113.{}", r.random_range(1..255))},
            "occurredAt": occurred_at,
            "lines": lines,
        });
        // Most events carry no userContext (PERSONALIZED); some are consent-limited.
        match r.random_range(0..10) {
            0 => e["userContext"] = json!("ANONYMOUS"),
            1 => e["userContext"] = json!("UNPERSONALIZED"),
            2 => e["userContext"] = json!("PERSONALIZED"),
            _ => {}
        }
        Generated {
            value: serde_json::to_vec(&e).expect("JSON serializes"),
            notifications,
        }
    }
}
