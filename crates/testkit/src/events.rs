//! Realistic cart events in the default `[mapping]` shape, shared by `benches/map.rs` and the
//! harness's `bench` (preload, HTTP ceiling, latency). Deterministic for a seed.
//!
//! Shape: `type`, `market`, `customerKey`, `sessionKey`, optional `userContext`,
//! `visitor.{userAgent,ip}`, `occurredAt` (RFC 3339) and 1–3 `lines`, most of them Elevate
//! products with a ticket. A ticket is unique per line and encodes nothing but an id:
//! `t{record}.{line}` (see [`parse_ticket`]), padded to a fixed length in the other
//! [`Shape`]s (`t{record}.{line}.xxxx…`, as long as a real Elevate ticket).
//!
//! Three workload shapes ([`Shape`]): `typical` (the above, ~550 bytes), `small` (many small
//! records: the fewest fields the default mapping needs, 1–3 lines, 64-byte tickets, ~300 bytes)
//! and `large` (few large records: 100–300 lines each, 64-byte tickets, ~40 KiB).

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
    /// What the events look like.
    shape: Shape,
}

/// The workload shapes the harness measures (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// ~550 bytes, 1–3 lines with short tickets, the full visitor fields.
    Typical,
    /// Many small records: ~300 bytes, 1–3 lines with 64-byte tickets, no visitor fields.
    Small,
    /// Few large records: 100–300 lines with 64-byte tickets each, ~40 KiB.
    Large,
}

impl Shape {
    /// Every shape, in report order.
    pub const ALL: [Shape; 3] = [Shape::Typical, Shape::Small, Shape::Large];

    /// Its name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Typical => "typical",
            Shape::Small => "small",
            Shape::Large => "large",
        }
    }

    /// The shape called `name`.
    pub fn from_name(name: &str) -> Option<Shape> {
        Shape::ALL.into_iter().find(|s| s.name() == name)
    }

    /// How many lines the next record has.
    fn lines(self, rng: &mut StdRng) -> usize {
        match self {
            Shape::Large => rng.random_range(100..=300),
            Shape::Typical | Shape::Small => match rng.random_range(0..10) {
                0..=5 => 1,
                6..=8 => 2,
                _ => 3,
            },
        }
    }

    /// The length tickets are padded to (0: not padded).
    fn ticket_len(self) -> usize {
        match self {
            Shape::Typical => 0,
            Shape::Small | Shape::Large => 64,
        }
    }
}

const MARKETS: [&str; 4] = ["SE", "NO", "DK", "FI"];
const USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
                          Chrome/131.0.0.0 Safari/537.36";

/// The ticket of line `line` of record `record`.
pub fn ticket(record: u64, line: usize) -> String {
    format!("t{record}.{line}")
}

/// [`ticket`] padded to `len` bytes (`t{record}.{line}.xxxx…`; never shorter than the id).
pub fn padded_ticket(record: u64, line: usize, len: usize) -> String {
    let mut t = ticket(record, line);
    if t.len() + 1 < len {
        t.push('.');
        while t.len() < len {
            t.push('x');
        }
    }
    t
}

/// The record id a ticket made by [`ticket`] encodes.
pub fn parse_ticket(t: &str) -> Option<u64> {
    t.strip_prefix('t')?.split('.').next()?.parse().ok()
}

impl Events {
    /// A generator of `Typical` events seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Events::of(Shape::Typical, seed)
    }

    /// A generator of `shape` events seeded with `seed`.
    pub fn of(shape: Shape, seed: u64) -> Self {
        Events {
            rng: StdRng::seed_from_u64(seed),
            shape,
        }
    }

    /// The event of record `id`, which happened at `occurred_at` (RFC 3339).
    pub fn event(&mut self, id: u64, occurred_at: &str) -> Generated {
        let shape = self.shape;
        let r = &mut self.rng;
        // 92 % add-to-cart, the rest other cart events the sink skips.
        let kind = if r.random_bool(0.92) {
            "add_to_cart"
        } else if r.random_bool(0.5) {
            "remove_from_cart"
        } else {
            "cart_viewed"
        };
        let nlines = shape.lines(r);
        let mut notifications = 0;
        let mut lines = Vec::with_capacity(nlines);
        for j in 0..nlines {
            let (line, sent) = line(r, shape, id, j);
            if sent && kind == "add_to_cart" {
                notifications += 1;
            }
            lines.push(line);
        }
        let mut e: Value = json!({
            "type": kind,
            "market": MARKETS[r.random_range(0..MARKETS.len())],
            "customerKey": format!("cust-{:08x}", r.random::<u32>()),
            "sessionKey": format!("sess-{:016x}", r.random::<u64>()),
            "occurredAt": occurred_at,
            "lines": lines,
        });
        if shape != Shape::Small {
            e["eventId"] = json!(format!("evt-{id:012}"));
            e["visitor"] =
                json!({"userAgent": USER_AGENT, "ip": format!("203.0.113.{}", r.random_range(1..255))});
        }
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

/// Line `j` of record `id`, and whether it is an Elevate product with a ticket.
fn line(r: &mut StdRng, shape: Shape, id: u64, j: usize) -> (Value, bool) {
    let product = r.random_range(10_000..99_999);
    let mut line = if shape == Shape::Small {
        json!({"productKey": format!("p{product}")})
    } else {
        json!({
            "productKey": format!("p{product}"),
            "variantKey": format!("p{product}-{}", r.random_range(1..6)),
            "quantity": r.random_range(1..3),
            "price": {"amount": r.random_range(49..2_000) as f64 - 0.05, "currency": "SEK"},
        })
    };
    let sent = match r.random_range(0..20) {
        // 85 %: an Elevate product with its ticket.
        0..=16 => {
            line["source"] = json!("elevate");
            line["ticket"] = json!(padded_ticket(id, j, shape.ticket_len()));
            true
        }
        // 10 %: found outside Elevate (shop search, direct link).
        17 | 18 => {
            line["source"] = json!("shop");
            false
        }
        // 5 %: an Elevate product whose ticket was lost.
        _ => {
            line["source"] = json!("elevate");
            false
        }
    };
    (line, sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_tickets_keep_their_id() {
        let t = padded_ticket(1234, 2, 64);
        assert_eq!(t.len(), 64);
        assert_eq!(parse_ticket(&t), Some(1234));
        assert_eq!(padded_ticket(7, 0, 0), "t7.0");
    }

    #[test]
    fn every_shape_counts_its_notifications() {
        for shape in Shape::ALL {
            let mut g = Events::of(shape, 3);
            let e = g.event(5, "2026-11-20T10:15:30.123Z");
            let v: Value = serde_json::from_slice(&e.value).expect("JSON");
            let sent = v["lines"]
                .as_array()
                .expect("lines")
                .iter()
                .filter(|l| l["source"] == "elevate" && l["ticket"].is_string())
                .count();
            let want = if v["type"] == "add_to_cart" { sent } else { 0 };
            assert_eq!(e.notifications as usize, want, "{shape:?}");
        }
    }
}
