//! Decode straight into slots: the pruned parse of `prune.rs` without its `Value` tree. Each value
//! a mapping pointer names is parsed whole into a slot of its own, the lines array into one list of
//! line slots per line; no object around them is built, so no key is copied and no map is filled,
//! walked or dropped. Pure. Guarantees: for every pointer of the mappings the plan was made for, a
//! [`SlotDoc`] answers what the whole value answers, with the same JSON types for the record, its
//! lines and each line (property-tested below); a text is refused exactly when `prune.rs` refuses
//! it (the same reading, serde_json's, with the same checks on dropped parts). Limits: a keep-list
//! with an array indexed by number, or a lines array inside a value kept whole, has no plan (it is
//! parsed by `prune.rs`).
//!
//! Building and dropping the kept `Value` (its keys, its maps) was most of the parse's cost on the
//! benchmark's typical records (docs/performance.md, "The seventh round"). A kept string without
//! escapes, most of what a record keeps, is borrowed from the record's text rather than copied
//! (docs/performance.md, "The eighteenth round").

use std::fmt;
use std::ops::Range;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::fields::{Doc, Fields, Found, JsonKind};
use super::pointer::{tokens, walk};
use super::prune::{KeyWith, Node, Skip};
use crate::config::{MappingConfig, Place};

/// How to parse a record straight into slots: one scope for the event, one per lines array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlotPlan {
    event: Scope,
    /// Each lines pointer and the id of its array (an index into `lines`).
    lines_at: Vec<(String, usize)>,
    /// The scope of each lines array's elements, by id.
    lines: Vec<Scope>,
}

/// The slots of one place (the event, or a line) and where each pointer finds its value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scope {
    node: PNode,
    slots: usize,
    /// Pointer text, its slot, and the tokens left to walk inside the slot's value.
    table: Vec<(String, usize, Vec<String>)>,
}

/// One place of the keep-list, planned: kept whole in a slot, or its named children.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct PNode {
    slot: Option<usize>,
    children: Vec<(String, PNode)>,
    /// The id of the lines array this place holds.
    items: Option<usize>,
    /// The slots and lines arrays below this place: emptied when its key repeats (the last of a
    /// repeated key wins, as in serde_json).
    below: Range<usize>,
    lines_below: Range<usize>,
}

impl PNode {
    fn child(&self, key: &str) -> Option<&PNode> {
        self.children.iter().find(|(k, _)| k == key).map(|(_, n)| n)
    }
}

impl SlotPlan {
    /// The plan for `root` (a keep-list) and the `mappings` it was built from; None when the
    /// keep-list indexes an array or keeps a lines array inside a value kept whole.
    pub(super) fn of(root: &Node, mappings: &[&MappingConfig]) -> Option<SlotPlan> {
        let mut line_nodes = Vec::new();
        let mut event = Scope::of(root, Some(&mut line_nodes))?;
        let mut lines = line_nodes
            .into_iter()
            .map(|line| Scope::of(line, None))
            .collect::<Option<Vec<_>>>()?;
        let mut lines_at = Vec::new();
        for mapping in mappings {
            let at = |place: Place| mapping.pointers_at(place);
            for p in at(Place::Event) {
                event.add(p)?;
            }
            let line_scope = match at(Place::Lines).next() {
                None => &mut event,
                Some(p) => {
                    let id = event.node_at(p)?.items?;
                    if !lines_at.iter().any(|(q, _)| q == p) {
                        lines_at.push((p.to_string(), id));
                    }
                    &mut lines[id]
                }
            };
            for p in at(Place::Line) {
                line_scope.add(p)?;
            }
        }
        Some(SlotPlan {
            event,
            lines_at,
            lines,
        })
    }

    /// Parses `text` into slots, or serde_json's error when it is not JSON.
    pub(crate) fn parse<'p, 't>(&'p self, text: &'t str) -> serde_json::Result<SlotDoc<'p, 't>> {
        let mut de = serde_json::Deserializer::from_str(text);
        let mut slots = Vec::new();
        let mut lines = Vec::new();
        lines.resize_with(self.lines.len(), Lines::default);
        let kind = Fill {
            plan: self,
            node: &self.event.node,
            size: self.event.slots,
            slots: &mut slots,
            lines: Some(&mut lines),
        }
        .deserialize(&mut de)?;
        de.end()?;
        Ok(SlotDoc {
            plan: self,
            kind,
            slots,
            lines,
        })
    }
}

/// Plans `node` and its subtree, numbering its slots from `next`; collects the lines arrays'
/// element nodes into `lines` (None inside a line: a line holds no lines).
fn plan<'k>(node: &'k Node, next: &mut usize, mut lines: Option<&mut Vec<&'k Node>>) -> Option<PNode> {
    if node.indexed() {
        return None;
    }
    let first = *next;
    if node.all {
        if has_items(node) {
            return None;
        }
        *next += 1;
        return Some(PNode {
            slot: Some(first),
            below: first..*next,
            ..PNode::default()
        });
    }
    let first_lines = lines.as_ref().map_or(0, |l| l.len());
    let items = match (&node.items, lines.as_deref_mut()) {
        (None, _) => None,
        (Some(_), None) => return None,
        (Some(items), Some(lines)) => {
            lines.push(items);
            Some(lines.len() - 1)
        }
    };
    let mut children = Vec::with_capacity(node.children.len());
    for (key, child) in &node.children {
        children.push((key.clone(), plan(child, next, lines.as_deref_mut())?));
    }
    Some(PNode {
        slot: None,
        children,
        items,
        below: first..*next,
        lines_below: first_lines..lines.map_or(0, |l| l.len()),
    })
}

fn has_items(node: &Node) -> bool {
    node.items.is_some() || node.children.iter().any(|(_, c)| has_items(c))
}

impl Scope {
    /// `node` planned as a scope of its own (slots numbered from 0), its table still empty;
    /// collects the lines arrays' element nodes into `lines` (None inside a line).
    fn of<'k>(node: &'k Node, lines: Option<&mut Vec<&'k Node>>) -> Option<Scope> {
        let mut next = 0;
        let node = plan(node, &mut next, lines)?;
        Some(Scope {
            node,
            slots: next,
            table: Vec::new(),
        })
    }

    /// The planned node `pointer` names (None: not planned, or not a pointer).
    fn node_at(&self, pointer: &str) -> Option<&PNode> {
        tokens(pointer)?
            .iter()
            .try_fold(&self.node, |node, token| node.child(token))
    }

    /// Adds `pointer` to the table: the first slot on its path, and the tokens left below it.
    /// None when its path has no slot (the plan would answer it wrongly).
    fn add(&mut self, pointer: &str) -> Option<()> {
        if self.table.iter().any(|(p, ..)| p == pointer) {
            return Some(());
        }
        let Some(path) = tokens(pointer) else {
            return Some(()); // not a pointer: it finds nothing, as in a whole value
        };
        let mut node = &self.node;
        for (depth, token) in path.iter().enumerate() {
            if let Some(slot) = node.slot {
                self.table
                    .push((pointer.to_string(), slot, path[depth..].to_vec()));
                return Some(());
            }
            node = node.child(token)?;
        }
        self.table.push((pointer.to_string(), node.slot?, Vec::new()));
        Some(())
    }

    /// The value `pointer` names, from `slots` filled under this scope.
    fn find<'v>(&self, pointer: &str, slots: &'v [Option<Slot<'_>>]) -> Option<Found<'v>> {
        let found = self.table.iter().find(|(p, ..)| p == pointer);
        debug_assert!(
            found.is_some() || tokens(pointer).is_none(),
            "{pointer} was not planned for"
        );
        let (_, slot, rest) = found?;
        match slots.get(*slot)?.as_ref()? {
            // Below a string there is nothing, as in a whole value.
            Slot::Str(s) => rest.is_empty().then_some(Found::Str(s)),
            Slot::Value(v) => walk(v, rest).map(Found::of),
        }
    }
}

/// A record parsed into slots: what its mapping pointers name, and nothing else. Its strings
/// borrow from the record's text `'t`.
#[derive(Debug)]
pub(crate) struct SlotDoc<'p, 't> {
    plan: &'p SlotPlan,
    kind: JsonKind,
    slots: Vec<Option<Slot<'t>>>,
    lines: Vec<Lines<'t>>,
}

/// A kept value: a string without escapes, borrowed from the record's text; anything else
/// (a string with escapes included) as serde_json builds it.
#[derive(Debug, Clone, PartialEq)]
enum Slot<'t> {
    Str(&'t str),
    Value(Value),
}

/// A lines array as found.
#[derive(Debug, Default)]
enum Lines<'t> {
    #[default]
    Absent,
    Null,
    /// Not an array: its JSON type.
    Other(JsonKind),
    Items(Vec<Line<'t>>),
}

/// One element of a lines array: its JSON type, and its slots when it is an object.
#[derive(Debug)]
struct Line<'t> {
    kind: JsonKind,
    slots: Vec<Option<Slot<'t>>>,
}

/// A place of a [`SlotDoc`] (the event, or one line) and the scope it was filled under.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotRef<'a, 't> {
    scope: &'a Scope,
    kind: JsonKind,
    slots: &'a [Option<Slot<'t>>],
}

impl Fields for SlotRef<'_, '_> {
    fn at(&self, pointer: &str) -> Option<Found<'_>> {
        self.scope.find(pointer, self.slots)
    }

    fn kind(&self) -> JsonKind {
        self.kind
    }
}

impl Fields for SlotDoc<'_, '_> {
    fn at(&self, pointer: &str) -> Option<Found<'_>> {
        self.plan.event.find(pointer, &self.slots)
    }

    fn kind(&self) -> JsonKind {
        self.kind
    }
}

impl<'t> Doc for SlotDoc<'_, 't> {
    type Line<'a>
        = SlotRef<'a, 't>
    where
        Self: 'a;

    fn as_line(&self) -> SlotRef<'_, 't> {
        SlotRef {
            scope: &self.plan.event,
            kind: self.kind,
            slots: &self.slots,
        }
    }

    fn lines(&self, pointer: &str) -> Result<Vec<SlotRef<'_, 't>>, JsonKind> {
        let id = self
            .plan
            .lines_at
            .iter()
            .find(|(p, _)| p == pointer)
            .map(|(_, id)| *id);
        debug_assert!(id.is_some(), "lines at {pointer} were not planned for");
        match id.and_then(|id| Some((id, self.lines.get(id)?))) {
            None | Some((_, Lines::Absent | Lines::Null)) => Ok(Vec::new()),
            Some((_, Lines::Other(kind))) => Err(*kind),
            Some((id, Lines::Items(items))) => Ok(items
                .iter()
                .map(|line| SlotRef {
                    scope: &self.plan.lines[id],
                    kind: line.kind,
                    slots: &line.slots,
                })
                .collect()),
        }
    }
}

/// Fills the slots of one planned place from its value (of the text `'t`); yields the value's
/// JSON type.
struct Fill<'a, 'p, 't> {
    plan: &'p SlotPlan,
    node: &'p PNode,
    /// The scope's slot count: `slots` is sized to it at the first object.
    size: usize,
    slots: &'a mut Vec<Option<Slot<'t>>>,
    /// The event's lines arrays (None inside a line).
    lines: Option<&'a mut Vec<Lines<'t>>>,
}

impl<'t> Fill<'_, '_, 't> {
    /// The same place, one level down at `node`.
    fn at<'b>(&'b mut self, node: &'b PNode) -> Fill<'b, 'b, 't> {
        Fill {
            plan: self.plan,
            node,
            size: self.size,
            slots: self.slots,
            lines: self.lines.as_deref_mut(),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Fill<'_, '_, 'de> {
    type Value = JsonKind;

    /// The value's type; a lines array that is not an array is noted as found.
    fn deserialize<D: Deserializer<'de>>(mut self, d: D) -> Result<JsonKind, D::Error> {
        let node = self.node;
        let kind = d.deserialize_any(self.at(node))?;
        if let (Some(id), Some(lines)) = (node.items, self.lines) {
            match kind {
                JsonKind::Array => {}
                JsonKind::Null => lines[id] = Lines::Null,
                other => lines[id] = Lines::Other(other),
            }
        }
        Ok(kind)
    }
}

impl<'de> Visitor<'de> for Fill<'_, '_, 'de> {
    type Value = JsonKind;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<JsonKind, E> {
        Ok(JsonKind::Boolean)
    }

    fn visit_i64<E>(self, _: i64) -> Result<JsonKind, E> {
        Ok(JsonKind::Number)
    }

    fn visit_u64<E>(self, _: u64) -> Result<JsonKind, E> {
        Ok(JsonKind::Number)
    }

    fn visit_f64<E>(self, _: f64) -> Result<JsonKind, E> {
        Ok(JsonKind::Number)
    }

    fn visit_str<E>(self, _: &str) -> Result<JsonKind, E> {
        Ok(JsonKind::String)
    }

    fn visit_unit<E>(self) -> Result<JsonKind, E> {
        Ok(JsonKind::Null)
    }

    /// An array: this place's lines when it holds a lines array, else only its type.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonKind, A::Error> {
        match (self.node.items, self.lines) {
            (Some(id), Some(lines)) => {
                let scope = &self.plan.lines[id];
                let mut items = Vec::new();
                while let Some(line) = seq.next_element_seed(LineSeed(self.plan, scope))? {
                    items.push(line);
                }
                lines[id] = Lines::Items(items);
            }
            _ => while seq.next_element::<Skip>()?.is_some() {},
        }
        Ok(JsonKind::Array)
    }

    /// An object: each planned key's value into its slot (or its place below), the rest scanned
    /// and dropped.
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<JsonKind, A::Error> {
        if self.slots.len() < self.size {
            self.slots.resize(self.size, None);
        }
        // The places below met so far in this object (the first 64; past them, every time): a
        // place met again is emptied before it is filled anew.
        let mut met = 0u64;
        let node = self.node;
        let place = |k: &str| node.children.iter().enumerate().find(|(_, (c, _))| c == k);
        while let Some(found) = map.next_key_seed(KeyWith(place))? {
            let Some((i, (_, child))) = found else {
                map.next_value::<Skip>()?;
                continue;
            };
            match child.slot {
                Some(slot) => self.slots[slot] = Some(map.next_value_seed(SlotSeed)?),
                None => {
                    let bit = 1u64.checked_shl(i as u32).unwrap_or(0);
                    if met & bit != 0 || bit == 0 {
                        self.slots[child.below.clone()].fill(None);
                        if let Some(lines) = self.lines.as_deref_mut() {
                            lines[child.lines_below.clone()].fill_with(Lines::default);
                        }
                    }
                    met |= bit;
                    map.next_value_seed(self.at(child))?;
                }
            }
        }
        Ok(JsonKind::Object)
    }
}

/// A kept value: a string without escapes borrowed, anything else built as serde_json builds a
/// `Value` (its own visitor, through serde's adapters for arrays and objects), so a slot holds
/// what the whole parse holds at that place.
struct SlotSeed;

impl<'de> DeserializeSeed<'de> for SlotSeed {
    type Value = Slot<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Slot<'de>, D::Error> {
        d.deserialize_any(SlotSeed)
    }
}

impl<'de> Visitor<'de> for SlotSeed {
    type Value = Slot<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Slot<'de>, E> {
        Ok(Slot::Str(s))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Slot<'de>, E> {
        Value::deserialize(s.into_deserializer()).map(Slot::Value)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Slot<'de>, E> {
        Value::deserialize(b.into_deserializer()).map(Slot::Value)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Slot<'de>, E> {
        Value::deserialize(n.into_deserializer()).map(Slot::Value)
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Slot<'de>, E> {
        Value::deserialize(n.into_deserializer()).map(Slot::Value)
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Slot<'de>, E> {
        Value::deserialize(n.into_deserializer()).map(Slot::Value)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Slot<'de>, E> {
        Value::deserialize(().into_deserializer()).map(Slot::Value)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Slot<'de>, A::Error> {
        Value::deserialize(SeqAccessDeserializer::new(seq)).map(Slot::Value)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Slot<'de>, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(Slot::Value)
    }
}

/// One element of a lines array, filled under its scope.
struct LineSeed<'p>(&'p SlotPlan, &'p Scope);

impl<'de> DeserializeSeed<'de> for LineSeed<'_> {
    type Value = Line<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Line<'de>, D::Error> {
        let mut slots = Vec::new();
        let kind = Fill {
            plan: self.0,
            node: &self.1.node,
            size: self.1.slots,
            slots: &mut slots,
            lines: None,
        }
        .deserialize(d)?;
        Ok(Line { kind, slots })
    }
}

#[cfg(test)]
mod tests {
    use super::super::prune::tests::{mapping, mappings, pointers, refused, sample_event, values};
    use super::super::prune::Keep;
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Whatever a pointer of `m` reads in `doc` it reads in `whole`, and the record, its lines
    /// and each line have the same JSON types.
    fn assert_same_reads(m: &MappingConfig, whole: &Value, doc: &SlotDoc<'_, '_>) {
        assert_eq!(doc.kind(), JsonKind::of(whole));
        for (key, p, _, place) in m.pointers() {
            if place == Place::Event && !p.is_empty() {
                assert_eq!(doc.at(p), whole.at(p), "{key} at {p}");
            }
        }
        let (w, d) = if m.lines.is_empty() {
            (Ok(vec![whole]), Ok(vec![doc.as_line()]))
        } else {
            (whole.lines(&m.lines), doc.lines(&m.lines))
        };
        assert_eq!(w.as_ref().err(), d.as_ref().err(), "lines at {}", m.lines);
        let (w, d) = (w.unwrap_or_default(), d.unwrap_or_default());
        assert_eq!(w.len(), d.len(), "line count");
        for (wl, dl) in w.iter().zip(&d) {
            assert_eq!(dl.kind(), wl.kind());
            for (key, p, _, place) in m.pointers() {
                if place == Place::Line && !p.is_empty() {
                    assert_eq!(dl.at(p), wl.at(p), "{key} at {p} in a line");
                }
            }
        }
    }

    fn plan(m: &[&MappingConfig]) -> Keep {
        Keep::of(m.iter().copied())
    }

    #[test]
    fn reads_what_the_default_mapping_reads() {
        let m = MappingConfig::default();
        let text = sample_event();
        let whole: Value = serde_json::from_str(&text).unwrap();
        let keep = plan(&[&m]);
        let doc = keep
            .slots()
            .expect("the default mapping has a plan")
            .parse(&text)
            .unwrap();
        assert_same_reads(&m, &whole, &doc);
        assert_eq!(doc.at("/visitor/ip"), Some(Found::Str("203.0.113.9")));
        let lines = doc.lines("/lines").unwrap();
        assert_eq!(
            lines.iter().map(Fields::kind).collect::<Vec<_>>(),
            [JsonKind::Object, JsonKind::String, JsonKind::Object]
        );
        assert_eq!(lines[0].at("/ticket"), Some(Found::Str("t1")));
    }

    /// A kept string without escapes is the record's own text, not a copy; one with escapes, a
    /// number or an object is built as serde_json builds it, and reads the same.
    #[test]
    fn a_kept_string_without_escapes_is_borrowed_from_the_text() {
        let m = MappingConfig::default();
        let keep = plan(&[&m]);
        let text = r#"{"type": "add_to_cart", "market": "S\u0045", "visitor": {"ip": "1.2.3.4", "userAgent": {"a": [1, 2.5, null, true]}}, "occurredAt": 1700000000000}"#;
        let doc = keep.slots().unwrap().parse(text).unwrap();
        let slot = |p: &str| {
            let (_, slot, _) = doc.plan.event.table.iter().find(|(q, ..)| q == p).unwrap();
            doc.slots[*slot].clone().unwrap()
        };
        let Slot::Str(ip) = slot("/visitor/ip") else {
            panic!("the ip was copied: {:?}", slot("/visitor/ip"));
        };
        assert!(
            text.as_bytes().as_ptr_range().contains(&ip.as_ptr()),
            "the ip is not the text's own"
        );
        assert_eq!(slot("/market"), Slot::Value(json!("SE")));
        assert_eq!(
            slot("/visitor/userAgent"),
            Slot::Value(json!({"a": [1, 2.5, null, true]}))
        );
        assert_eq!(slot("/occurredAt"), Slot::Value(json!(1700000000000u64)));
        assert_same_reads(&m, &serde_json::from_str(text).unwrap(), &doc);
    }

    /// The last of a repeated key wins, as in serde_json, also when the first filled slots below
    /// it or a lines array and the last is not an object or an array.
    #[test]
    fn a_repeated_key_replaces_what_the_first_filled() {
        let m = MappingConfig::default();
        let keep = plan(&[&m]);
        for text in [
            r#"{"visitor": {"ip": "1.2.3.4", "userAgent": "UA"}, "visitor": "gone"}"#,
            r#"{"visitor": {"ip": "1.2.3.4"}, "visitor": {"userAgent": "UA"}}"#,
            r#"{"lines": [{"source": "elevate", "ticket": "t"}], "lines": 7}"#,
            r#"{"lines": [{"ticket": "a"}], "lines": null, "market": "SE", "market": "NO"}"#,
            r#"{"lines": [{"ticket": "a", "ticket": "b"}, {"ticket": "c", "ticket": {}}]}"#,
        ] {
            let whole: Value = serde_json::from_str(text).unwrap();
            let doc = keep.slots().unwrap().parse(text).unwrap();
            assert_same_reads(&m, &whole, &doc);
        }
    }

    #[test]
    fn a_record_that_is_not_an_object_reads_nothing() {
        let m = MappingConfig::default();
        let keep = plan(&[&m]);
        for text in ["[1, {\"type\": \"t\"}]", "\"x\"", "null", "3.5"] {
            let whole: Value = serde_json::from_str(text).unwrap();
            assert_same_reads(&m, &whole, &keep.slots().unwrap().parse(text).unwrap());
        }
    }

    /// An indexed array, or a lines array inside a value kept whole, has no plan: `prune.rs`
    /// parses those.
    #[test]
    fn what_has_no_plan() {
        let indexed = MappingConfig {
            market: "/markets/1".into(),
            ..MappingConfig::default()
        };
        assert!(plan(&[&indexed]).slots().is_none());
        let whole_lines = MappingConfig {
            product_key: "/order".into(),
            ..mapping("/order/lines")
        };
        assert!(plan(&[&whole_lines]).slots().is_none());
        assert!(plan(&[&MappingConfig::default(), &mapping("")]).slots().is_some());
    }

    /// Not JSON is refused exactly as by `prune.rs` (serde_json's message), dropped parts
    /// included.
    #[test]
    fn refuses_what_the_kept_parse_refuses() {
        let keep = plan(&[&MappingConfig::default()]);
        let plan = keep.slots().unwrap();
        for extra in refused() {
            for text in [
                format!(r#"{{"type": "t", "x": {extra}}}"#),
                format!(r#"{{"lines": [{{"ticket": {extra}}}]}}"#),
                format!("[{extra}]"),
            ] {
                let kept = keep.parse(&text).unwrap_err().to_string();
                assert_eq!(plan.parse(&text).unwrap_err().to_string(), kept, "{text:.60}");
            }
        }
        for bad in ["", "{", "{\"type\": 1,}", "{} x"] {
            assert!(plan.parse(bad).is_err(), "{bad:?}");
        }
    }

    fn same_reads_for(v: &Value, m: &MappingConfig) -> Result<bool, TestCaseError> {
        let text = v.to_string();
        let whole: Value = serde_json::from_str(&text).unwrap();
        let keep = plan(&[m, &MappingConfig::default()]);
        let Some(slots) = keep.slots() else {
            return Ok(false);
        };
        let doc = slots.parse(&text).unwrap();
        assert_same_reads(m, &whole, &doc);
        assert_same_reads(&MappingConfig::default(), &whole, &doc);
        Ok(true)
    }

    /// Whether a value kept whole (an event pointer, or a line pointer of a mapping without a
    /// lines pointer) holds a lines array of `mappings`.
    fn lines_kept_whole(mappings: &[&MappingConfig]) -> bool {
        let whole = mappings.iter().flat_map(|m| {
            m.pointers().into_iter().filter(|(_, p, _, place)| {
                !p.is_empty() && (*place == Place::Event || (*place == Place::Line && m.lines.is_empty()))
            })
        });
        let lines: Vec<&str> = mappings
            .iter()
            .map(|m| m.lines.as_str())
            .filter(|l| !l.is_empty())
            .collect();
        whole
            .map(|(_, p, ..)| p)
            .any(|p| lines.iter().any(|l| *l == p || l.starts_with(&format!("{p}/"))))
    }

    proptest! {
        /// For random values and random mappings (pointers that overlap, index arrays, name the
        /// lines array or no array at all), every pointer reads the same in the slots as in the
        /// whole value, whenever there is a plan.
        #[test]
        fn every_pointer_reads_the_same(
            v in values(),
            m in mappings(pointers(), prop_oneof![Just(String::new()), pointers()]),
        ) {
            same_reads_for(&v, &m)?;
        }

        /// The same without array indexes in the pointers: a plan exists unless a lines array
        /// lies inside a value kept whole, so the slots are what is tested.
        #[test]
        fn every_pointer_reads_the_same_with_a_plan(
            v in values(),
            m in mappings(
                pointers().prop_filter("no index", |p| !p.contains("/0") && !p.contains("/1")),
                prop_oneof![Just(String::new()), Just("/lines".to_string()), Just("/visitor/lines".to_string())],
            ),
        ) {
            let planned = same_reads_for(&v, &m)?;
            prop_assert!(planned || lines_kept_whole(&[&m, &MappingConfig::default()]), "no plan for {:?}", m.pointers());
        }
    }
}
