//! Parse only what the mapping reads: a record value into a `serde_json::Value` that holds the
//! subtrees the `[mapping]` pointers of its topic's routes name, and nothing else. Guarantees:
//! every mapping pointer finds in the kept value exactly what it finds in the whole value (the
//! same value, or the same type where a check reads only the type), so mapping either gives the
//! same notifications and the same invalid reasons (property-tested below); a text is refused
//! exactly when serde_json refuses to build a `Value` from it (the dropped parts are checked as
//! it checks them: escapes, number range, the nesting limit of 128), so the same records are
//! dead-lettered as with a whole parse. Limits: an array that a pointer indexes by number is kept
//! whole.
//!
//! Parsing every record into a whole `Value` (its keys, prices, product ids) and dropping it
//! again was 7.8 % of the sink's CPU on the benchmark's typical records (docs/performance.md).
//! `run` now parses into slots (`slots.rs`) whenever the keep-list has a plan for them; this
//! parse serves the keep-lists that have none (a mapping that indexes an array), and [`Keep`]
//! is the keep-list both read.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Number, Value};

use super::pointer::{index, tokens};
use super::slots::SlotPlan;
use crate::config::{MappingConfig, Place};

/// What to keep of a record value; build it once per topic with [`Keep::of`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keep {
    root: Node,
    /// How to parse straight into slots instead (`slots.rs`), when the keep-list allows it.
    slots: Option<SlotPlan>,
}

/// One place in the value: keep all of it, or only its named children (object keys or array
/// indexes) and, when it is an array of lines, what each line needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Node {
    pub(super) all: bool,
    pub(super) children: Vec<(String, Node)>,
    pub(super) items: Option<Box<Node>>,
}

impl Node {
    /// The node at `path` below this one, created on the way.
    fn at(&mut self, path: &[String]) -> &mut Node {
        let Some((first, rest)) = path.split_first() else {
            return self;
        };
        let i = match self.children.iter().position(|(k, _)| k == first) {
            Some(i) => i,
            None => {
                self.children.push((first.clone(), Node::default()));
                self.children.len() - 1
            }
        };
        self.children[i].1.at(rest)
    }

    pub(super) fn child(&self, key: &str) -> Option<&Node> {
        self.children.iter().find(|(k, _)| k == key).map(|(_, n)| n)
    }

    /// Whether a pointer indexes this node as an array.
    pub(super) fn indexed(&self) -> bool {
        self.children.iter().any(|(k, _)| index(k).is_some())
    }
}

impl Keep {
    /// Everything any of `mappings` reads: each event pointer's whole value; the lines array,
    /// and in each of its elements each line pointer's whole value (the event itself when no
    /// lines pointer is set).
    pub fn of<'m>(mappings: impl IntoIterator<Item = &'m MappingConfig>) -> Keep {
        let mappings: Vec<&MappingConfig> = mappings.into_iter().collect();
        let mut root = Node::default();
        for &mapping in &mappings {
            let at = |place: Place| mapping.pointers_at(place);
            for p in at(Place::Event) {
                mark_all(&mut root, p);
            }
            let line_node = match at(Place::Lines).next() {
                None => &mut root,
                Some(lines) => match tokens(lines) {
                    Some(path) => root.at(&path).items.get_or_insert_with(Box::default),
                    None => continue,
                },
            };
            for p in at(Place::Line) {
                mark_all(line_node, p);
            }
        }
        let slots = SlotPlan::of(&root, &mappings);
        Keep { root, slots }
    }

    /// Keeps everything (a whole parse).
    pub fn all() -> Keep {
        Keep {
            root: Node {
                all: true,
                ..Node::default()
            },
            slots: None,
        }
    }

    /// The plan to parse straight into slots, when the keep-list allows one.
    pub(crate) fn slots(&self) -> Option<&SlotPlan> {
        self.slots.as_ref()
    }

    /// The kept part of `text`, or serde_json's error when `text` is not JSON.
    pub fn parse(&self, text: &str) -> serde_json::Result<Value> {
        let mut de = serde_json::Deserializer::from_str(text);
        let value = Seed(&self.root).deserialize(&mut de)?;
        de.end()?;
        Ok(value)
    }
}

/// Marks the value `pointer` names as kept whole (a pointer that is not one keeps nothing: it
/// finds nothing in any value).
fn mark_all(root: &mut Node, pointer: &str) {
    if let Some(path) = tokens(pointer) {
        root.at(&path).all = true;
    }
}

/// Deserializes one value under its node.
#[derive(Clone, Copy)]
struct Seed<'k>(&'k Node);

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.0.all {
            Value::deserialize(d)
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    /// An array: whole when a pointer indexes it, each line pruned when it holds lines, else
    /// only its type (no pointer looks inside).
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        if self.0.indexed() {
            while let Some(v) = seq.next_element::<Value>()? {
                out.push(v);
            }
        } else if let Some(line) = &self.0.items {
            while let Some(v) = seq.next_element_seed(Seed(line))? {
                out.push(v);
            }
        } else {
            while seq.next_element::<Skip>()?.is_some() {}
        }
        Ok(Value::Array(out))
    }

    /// An object: the named keys (the last of a repeated key wins, as in serde_json), the rest
    /// scanned and dropped.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        let node = self.0;
        let key = |k: &str| node.child(k).map(|n| (k.to_owned(), n));
        while let Some(found) = map.next_key_seed(KeyWith(key))? {
            match found {
                Some((key, child)) => {
                    let v = map.next_value_seed(Seed(child))?;
                    out.insert(key, v);
                }
                None => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// A dropped value: read as serde_json reads a value it builds (so it refuses the same texts:
/// a lone surrogate escape, a number out of range, nesting past its limit) and never copied
/// (serde's `IgnoredAny` would accept all three).
pub(super) struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_none<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Skip, D::Error> {
        Skip::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

/// An object key, read as serde_json reads one (escapes decoded), handed to the closure: here the
/// key and its node when kept (the only keys copied), in `slots.rs` the planned place.
pub(super) struct KeyWith<F>(pub(super) F);

impl<'de, T, F: FnOnce(&str) -> T> DeserializeSeed<'de> for KeyWith<F> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, T, F: FnOnce(&str) -> T> Visitor<'de> for KeyWith<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, v: &str) -> Result<T, E> {
        Ok((self.0)(v))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::decode::pointer::at;
    use crate::decode::JsonKind;
    use proptest::prelude::*;
    use serde_json::json;

    pub(in crate::decode) fn mapping(lines: &str) -> MappingConfig {
        MappingConfig {
            lines: lines.into(),
            ..MappingConfig::default()
        }
    }

    /// Whatever a pointer of `m` finds: the same value, or for the lines and each line, the
    /// same type (decode reads no more of them).
    fn assert_same_reads(m: &MappingConfig, whole: &Value, kept: &Value) {
        for (key, p, _, place) in m.pointers() {
            match place {
                Place::Event if !p.is_empty() => assert_eq!(at(kept, p), at(whole, p), "{key} at {p}"),
                Place::Event => {}
                Place::Lines | Place::Line => {}
            }
        }
        let lines = |v: &'_ Value| -> Option<Vec<Value>> {
            if m.lines.is_empty() {
                return Some(vec![v.clone()]);
            }
            at(v, &m.lines).and_then(Value::as_array).cloned()
        };
        if !m.lines.is_empty() {
            assert_eq!(
                at(kept, &m.lines).map(JsonKind::of),
                at(whole, &m.lines).map(JsonKind::of)
            );
        }
        let (w, k) = (lines(whole), lines(kept));
        assert_eq!(w.as_ref().map(Vec::len), k.as_ref().map(Vec::len), "line count");
        for (wl, kl) in w.unwrap_or_default().iter().zip(k.unwrap_or_default().iter()) {
            assert_eq!(JsonKind::of(wl), JsonKind::of(kl));
            for (key, p, _, place) in m.pointers() {
                if place == Place::Line && !p.is_empty() {
                    assert_eq!(at(kl, p), at(wl, p), "{key} at {p} in a line");
                }
            }
        }
    }

    /// A default-shape event with fields no pointer reads, a nested object and three lines (one
    /// not an object).
    pub(in crate::decode) fn sample_event() -> String {
        json!({
            "type": "add_to_cart", "market": "SE", "customerKey": "c", "sessionKey": "s",
            "eventId": "evt-1", "visitor": {"userAgent": "UA", "ip": "203.0.113.9", "geo": {"x": 1}},
            "lines": [
                {"productKey": "p1", "price": {"amount": 10.5}, "source": "elevate", "ticket": "t1"},
                "not a line",
                {"productKey": "p2", "source": "shop"}
            ]
        })
        .to_string()
    }

    #[test]
    fn keeps_what_the_default_mapping_reads_and_drops_the_rest() {
        let m = MappingConfig::default();
        let text = sample_event();
        let whole: Value = serde_json::from_str(&text).unwrap();
        let kept = Keep::of([&m]).parse(&text).unwrap();
        assert_same_reads(&m, &whole, &kept);
        assert_eq!(kept.get("eventId"), None);
        assert_eq!(kept["visitor"], json!({"userAgent": "UA", "ip": "203.0.113.9"}));
        assert_eq!(kept["lines"][0], json!({"source": "elevate", "ticket": "t1"}));
        assert_eq!(kept["lines"][1], json!("not a line"));
    }

    #[test]
    fn not_json_is_still_an_error_and_numbers_and_indexes_keep_their_meaning() {
        let keep = Keep::of([&MappingConfig::default()]);
        for bad in ["", "{", "{\"type\": 1,}", "{} x", "{\"eventId\": [1, }"] {
            assert!(keep.parse(bad).is_err(), "{bad:?}");
        }
        let indexed = MappingConfig {
            market: "/markets/1".into(),
            ..MappingConfig::default()
        };
        let text = r#"{"markets": ["SE", "NO", {"deep": [1.5e3, -2, 18446744073709551615]}]}"#;
        let whole: Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            Keep::of([&indexed]).parse(text).unwrap()["markets"],
            whole["markets"]
        );
        assert_eq!(Keep::all().parse(text).unwrap(), whole);
    }

    /// Values serde_json refuses to build: nesting past 128, a lone surrogate, a number out of
    /// range, a broken array.
    pub(in crate::decode) fn refused() -> [String; 4] {
        let nest = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        [
            nest(300),
            r#""\ud800""#.into(),
            "1e400".into(),
            "{\"a\": [1, }".into(),
        ]
    }

    /// What serde_json refuses to build (nesting past 128, a lone surrogate, a number out of
    /// range) is refused in a dropped key too, with serde_json's own message; what it builds
    /// (nesting to 128, a 30-digit integer, a surrogate pair) passes.
    #[test]
    fn dropped_keys_are_checked_as_serde_json_checks_them() {
        let keep = Keep::of([&MappingConfig::default()]);
        let nest = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        for extra in refused() {
            for text in [format!(r#"{{"type": "t", "x": {extra}}}"#), format!("[{extra}]")] {
                let whole = serde_json::from_str::<Value>(&text).unwrap_err().to_string();
                let kept = keep.parse(&text).unwrap_err().to_string();
                assert_eq!(kept, whole, "{text:.60}");
            }
        }
        for extra in [
            nest(120),
            "123456789012345678901234567890".into(),
            r#""\ud83d\ude00""#.into(),
        ] {
            let text = format!(r#"{{"type": "t", "x": {extra}}}"#);
            serde_json::from_str::<Value>(&text).unwrap();
            assert_eq!(keep.parse(&text).unwrap(), json!({"type": "t"}));
        }
    }

    /// The keep-list is built from `MappingConfig::pointers`: a string field added to the mapping
    /// and not listed there would be dropped by the parser, so this names it.
    #[test]
    fn every_mapping_field_that_is_a_pointer_is_listed() {
        let m = MappingConfig::default();
        let listed: Vec<&str> = m.pointers().iter().map(|(k, ..)| *k).collect();
        let Value::Object(fields) = serde_json::to_value(&m).unwrap() else {
            panic!("the mapping serializes as a table")
        };
        for (name, value) in fields {
            if value.is_string() {
                let key = format!("mapping.{name}");
                assert!(
                    listed.contains(&key.as_str()),
                    "{key} is not in MappingConfig::pointers"
                );
            }
        }
    }

    pub(in crate::decode) fn values() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("type".to_string()),
            Just("market".to_string()),
            Just("lines".to_string()),
            Just("source".to_string()),
            Just("ticket".to_string()),
            Just("visitor".to_string()),
            Just("userAgent".to_string()),
            Just("a/b".to_string()),
            Just("0".to_string()),
            Just("other".to_string()),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[a-z\"\\\\/]{0,4}".prop_map(Value::from)
        ];
        leaf.prop_recursive(5, 64, 5, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    pub(in crate::decode) fn pointers() -> impl Strategy<Value = String> + Clone {
        prop::collection::vec(
            prop_oneof![
                Just("type"),
                Just("market"),
                Just("lines"),
                Just("source"),
                Just("ticket"),
                Just("visitor"),
                Just("userAgent"),
                Just("a~1b"),
                Just("0"),
                Just("1"),
            ],
            1..4,
        )
        .prop_map(|t| t.iter().map(|t| format!("/{t}")).collect())
    }

    /// Mappings of random pointers: event type, market and user agent, the lines (from `lines`),
    /// a line's source and ticket; the rest left at their defaults.
    pub(in crate::decode) fn mappings(
        pointer: impl Strategy<Value = String> + Clone,
        lines: impl Strategy<Value = String>,
    ) -> impl Strategy<Value = MappingConfig> {
        let (event, line) = (
            prop::collection::vec(pointer.clone(), 1..4),
            prop::collection::vec(pointer, 1..3),
        );
        (event, lines, line).prop_map(|(event, lines, line)| random_mapping(&event, lines, &line))
    }

    fn random_mapping(event: &[String], lines: String, line: &[String]) -> MappingConfig {
        let mut m = mapping(&lines);
        m.event_type = event[0].clone();
        m.market = event.get(1).cloned().unwrap_or_default();
        m.user_agent = event.get(2).cloned().unwrap_or_default();
        m.line_source = line[0].clone();
        m.line_ticket = line.get(1).cloned().unwrap_or_default();
        m
    }

    proptest! {
        /// For random values and random mappings (pointers that overlap, index arrays, name the
        /// lines array or no array at all), every pointer reads the same in the kept value.
        #[test]
        fn every_pointer_reads_the_same(
            v in values(),
            m in mappings(pointers(), prop_oneof![Just(String::new()), pointers()]),
        ) {
            let text = v.to_string();
            let whole: Value = serde_json::from_str(&text).unwrap();
            let kept = Keep::of([&m, &MappingConfig::default()]).parse(&text).unwrap();
            assert_same_reads(&m, &whole, &kept);
            assert_same_reads(&MappingConfig::default(), &whole, &kept);
        }
    }
}
