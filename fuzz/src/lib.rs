//! What the fuzz targets check, as plain functions: the libFuzzer targets in `fuzz_targets/`
//! call them on nightly (`cargo +nightly fuzz run decode|map`), and `tests/it/hostile.rs` includes
//! this file (`#[path]`) to run the very same checks on stable Rust over a generated corpus.
//!
//! The properties:
//! * no input panics `decode::decode`, `select::map_record` or `select::select`;
//! * every input is either decoded/mapped or gets an `Invalid` whose reason is one of the closed
//!   set and whose detail is non-empty, bounded (it becomes a dead-letter header) and never
//!   carries a customerKey/sessionKey value;
//! * a mapped record accounts for every cart line: one notification per Elevate line with a
//!   non-empty ticket, one skip reason per other line, or one skip reason for the record;
//! * notifications obey the consent table (keys that must not be sent are absent, required
//!   ones present) and carry a non-empty market;
//! * only records that would produce a request are validated: a JSON object whose event type
//!   is not an add-to-cart type is never invalid, whatever else it holds (README, event mapping);
//! * decoding bytes agrees with decoding the parsed JSON value, a UTF-8 BOM changes nothing,
//!   and JSON nested deeper than serde_json's limit (128) is `malformed_json`, not a crash.

use arbitrary::{Result, Unstructured};
use elevate_sink::config::MappingConfig;
use elevate_sink::{
    decode, decode_kept, decode_value, parse_kept, CartEvent, Invalid, InvalidReason, Keep, UserContext,
};
use elevate_sink::{map_record, select, Mapped, SkipReason};
use serde_json::{Map, Number, Value};

/// customerKey value planted in generated events; must never show up in an `Invalid` detail.
pub const SECRET_CUSTOMER: &str = "cust-fuzz-5ecret-c0ffee";
/// sessionKey value planted in generated events; must never show up in an `Invalid` detail.
pub const SECRET_SESSION: &str = "sess-fuzz-5ecret-c0ffee";

/// Longest `Invalid` detail accepted (it travels as a Kafka header and a log field).
pub const MAX_DETAIL: usize = 1024;

/// serde_json's default recursion limit: deeper input must be rejected, not recursed into.
pub const JSON_DEPTH_LIMIT: usize = 128;

const BOM: &[u8] = b"\xef\xbb\xbf";

// ---------------------------------------------------------------------------------------------
// decode

/// The `decode` target: arbitrary bytes through `decode::decode` (default mapping).
pub fn check_decode(data: &[u8]) {
    let mapping = MappingConfig::default();
    let got = decode(&mapping, Some(data));
    match &got {
        Ok(event) => check_event(event),
        Err(invalid) => check_invalid(invalid, data, &personal_keys_in(&mapping, data)),
    }
    // Deterministic.
    assert_eq!(decode(&mapping, Some(data)), got, "decode is not deterministic");
    // A leading UTF-8 BOM is transparent (details may differ: they carry byte positions).
    if !data.starts_with(BOM) {
        let with_bom = [BOM, data].concat();
        let again = decode(&mapping, Some(&with_bom));
        assert_eq!(
            again.as_ref().map_err(|e| e.reason),
            got.as_ref().map_err(|e| e.reason),
            "a BOM changed the outcome"
        );
    }
    // Bytes that parse as JSON decode exactly like the parsed value.
    if let Ok(text) = std::str::from_utf8(data) {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if let Ok(value) = serde_json::from_str::<Value>(text) {
            assert_eq!(decode_value(&mapping, &value), got, "bytes and value disagree");
        }
    }
}

/// What a decoded event promises.
fn check_event(event: &CartEvent) {
    assert!(!event.event_type.is_empty(), "empty event type decoded");
    for key in [&event.customer_key, &event.session_key, &event.market] {
        assert!(
            key.as_ref().is_none_or(|k| !k.is_empty()),
            "empty string decoded as a value"
        );
    }
    for line in &event.lines {
        assert!(
            line.ticket.as_ref().is_none_or(|t| !t.is_empty()),
            "empty ticket decoded"
        );
    }
}

/// The customerKey/sessionKey values of `data` (where `mapping` says they live), if it is JSON.
pub fn personal_keys_in(mapping: &MappingConfig, data: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(data);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    serde_json::from_str::<Value>(text)
        .map(|v| personal_keys(mapping, &v))
        .unwrap_or_default()
}

/// A planted key: `cust-…`/`sess-…` and long enough that no detail's fixed text contains it by
/// chance (a key "PERSONALIZED" would be "found" in every userContext detail).
fn distinctive(k: &str) -> bool {
    k.len() >= 10 && (k.starts_with("cust-") || k.starts_with("sess-"))
}

/// The distinctive customerKey/sessionKey values of `value` under `mapping`, except those that
/// also sit in a field whose bad value a detail quotes by design (`userContext`, `occurredAt`:
/// up to 40 characters; see the issue 8 report).
pub fn personal_keys(mapping: &MappingConfig, value: &Value) -> Vec<String> {
    let at = |ptr: &str| -> Option<String> {
        if ptr.is_empty() {
            return None;
        }
        value.pointer(ptr)?.as_str().map(String::from)
    };
    let quoted: Vec<String> = [&mapping.user_context, &mapping.event_time]
        .into_iter()
        .filter_map(|p| at(p))
        .collect();
    [&mapping.customer_key, &mapping.session_key]
        .into_iter()
        .filter_map(|p| at(p))
        .filter(|k| {
            distinctive(k)
                && !quoted
                    .iter()
                    .any(|q| q.contains(k.as_str()) || k.contains(q.as_str()))
        })
        .collect()
}

/// What an `Invalid` promises. `input` is what produced it (for messages only); `keys` are the
/// personal keys it carried, which the detail must not contain.
fn check_invalid(invalid: &Invalid, input: &[u8], keys: &[String]) {
    let known = [
        InvalidReason::InvalidUtf8,
        InvalidReason::MalformedJson,
        InvalidReason::NotAnObject,
        InvalidReason::WrongType,
        InvalidReason::MissingField,
        InvalidReason::BadValue,
    ];
    assert!(known.contains(&invalid.reason));
    assert!(!invalid.reason.as_str().is_empty());
    assert!(
        !invalid.detail.is_empty(),
        "empty detail for {:?}",
        invalid.reason
    );
    assert!(
        invalid.detail.len() <= MAX_DETAIL,
        "detail of {} bytes for a {}-byte input: {:.200}",
        invalid.detail.len(),
        input.len(),
        invalid.detail
    );
    for secret in keys {
        assert!(
            !invalid.detail.contains(secret.as_str()),
            "a personal key leaked into the detail: {}",
            invalid.detail
        );
    }
}

// ---------------------------------------------------------------------------------------------
// map

/// The `map` target: the bytes themselves through `map_record`, then a JSON event (and a
/// mapping) built from the same bytes with `arbitrary` through `map_record` and `select`.
pub fn check_map(data: &[u8]) {
    let _ = check_map_bytes(&MappingConfig::default(), data);
    let mut u = Unstructured::new(data);
    if let Ok(case) = MapCase::build(&mut u) {
        check_map_case(&case);
    }
}

/// `map_record` on raw bytes under `mapping`: mapped (lines accounted for) or invalid.
pub fn check_map_bytes(mapping: &MappingConfig, data: &[u8]) -> Result<Mapped, Invalid> {
    let got = map_record(mapping, Some(data));
    if let Err(invalid) = &got {
        check_not_add_to_cart_is_not_validated(mapping, data, invalid);
    }
    match (&got, decode(mapping, Some(data))) {
        (Ok(mapped), Ok(event)) => check_mapped(&event, mapped),
        (Err(invalid), Ok(event)) => {
            check_invalid(invalid, data, &personal_keys_in(mapping, data));
            check_select_invalid(&event, invalid);
        }
        (Err(invalid), Err(decode_err)) => {
            check_invalid(invalid, data, &personal_keys_in(mapping, data));
            assert_eq!(*invalid, decode_err, "map_record must report the decode error");
        }
        (Ok(_), Err(e)) => panic!("mapped although decode failed: {e}"),
    }
    got
}

/// One generated case: a mapping, a JSON event, and how its bytes are dressed.
#[derive(Debug, Clone)]
pub struct MapCase {
    /// Where fields live (the default, or pointers drawn from a list of odd ones).
    pub mapping: MappingConfig,
    /// The event.
    pub value: Value,
    /// Prefix the serialized bytes with a UTF-8 BOM.
    pub bom: bool,
    /// Whitespace around the serialized bytes.
    pub padding: bool,
}

impl MapCase {
    /// Builds a case from unstructured bytes.
    pub fn build(u: &mut Unstructured<'_>) -> Result<MapCase> {
        let mapping = if u.ratio(1, 4)? {
            arb_mapping(u)?
        } else {
            MappingConfig::default()
        };
        let mut value = arb_event(u)?;
        if u.ratio(1, 16)? {
            // Deep nesting somewhere in the event, around serde_json's limit.
            let depth = u.int_in_range(100..=200)?;
            let mut deep = Value::Null;
            for _ in 0..depth {
                deep = Value::Array(vec![deep]);
            }
            if let Value::Object(m) = &mut value {
                m.insert("deep".into(), deep);
            } else {
                value = deep;
            }
        }
        Ok(MapCase {
            mapping,
            value,
            bom: u.ratio(1, 8)?,
            padding: u.ratio(1, 8)?,
        })
    }

    /// The record value the case stands for.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.bom {
            out.extend_from_slice(BOM);
        }
        if self.padding {
            out.extend_from_slice(b" \n\t");
        }
        out.extend(serde_json::to_vec(&self.value).expect("a Value serializes"));
        if self.padding {
            out.extend_from_slice(b"\r\n ");
        }
        out
    }
}

/// Checks one generated case end to end.
pub fn check_map_case(case: &MapCase) {
    let bytes = case.bytes();
    let from_bytes = check_map_bytes(&case.mapping, &bytes);
    if depth(&case.value) >= JSON_DEPTH_LIMIT {
        let e = from_bytes.expect_err("JSON deeper than the limit must not map");
        assert_eq!(e.reason, InvalidReason::MalformedJson, "{e}");
        return;
    }
    // Serializing a value and reading it back changes nothing.
    let from_value = decode_value(&case.mapping, &case.value).and_then(|event| {
        let mapped = select(event.clone());
        if let Ok(m) = &mapped {
            check_mapped(&event, m);
        }
        mapped
    });
    assert_eq!(from_bytes, from_value, "bytes and value map differently");
    // Parsing only what the mapping reads (decode/prune.rs, as `run` does) changes nothing either.
    let keep = Keep::of([&case.mapping]);
    let from_kept = parse_kept(Some(&bytes), &keep)
        .and_then(|v| decode_value(&case.mapping, &v))
        .and_then(select);
    assert_eq!(from_bytes, from_kept, "the kept parse maps differently");
    // Nor does parsing it straight into slots (decode/slots.rs, as `run` does when it can).
    let from_slots = decode_kept(&case.mapping, Some(&bytes), &keep).and_then(select);
    assert_eq!(from_bytes, from_slots, "the slot parse maps differently");
}

/// Every line accounted for, consent obeyed, market present.
fn check_mapped(event: &CartEvent, mapped: &Mapped) {
    assert_eq!(mapped.event_time_ms, event.event_time_ms);
    if !event.is_add_to_cart {
        assert!(mapped.notifications.is_empty());
        assert_eq!(mapped.skipped, vec![SkipReason::NotAddToCart]);
        return;
    }
    if event.lines.is_empty() {
        assert!(mapped.notifications.is_empty());
        assert_eq!(mapped.skipped, vec![SkipReason::NoLines]);
        return;
    }
    assert_eq!(
        mapped.notifications.len() + mapped.skipped.len(),
        event.lines.len(),
        "a line was neither mapped nor skipped"
    );
    let mut expected_skips = Vec::new();
    let mut expected_lines = Vec::new();
    for (i, line) in event.lines.iter().enumerate() {
        match (&line.ticket, line.from_elevate) {
            (_, false) => expected_skips.push(SkipReason::NotFromElevate),
            (None, true) => expected_skips.push(SkipReason::NoTicket),
            (Some(_), true) => expected_lines.push(i),
        }
    }
    assert_eq!(mapped.skipped, expected_skips);
    let lines: Vec<usize> = mapped.notifications.iter().map(|n| n.line).collect();
    assert_eq!(lines, expected_lines);
    let ctx = event.user_context.unwrap_or(UserContext::Personalized);
    for n in &mapped.notifications {
        assert!(!n.ticket().unwrap_or_default().is_empty(), "empty ticket mapped");
        assert_eq!(
            n.ticket().map(str::to_string).as_ref(),
            event.lines[n.line].ticket.as_ref()
        );
        assert!(!n.market.is_empty());
        assert_eq!(Some(&n.market), event.market.as_ref());
        assert_eq!(n.user_context, event.user_context);
        let (ck, sk) = (&n.customer_key, &n.session_key);
        match ctx {
            UserContext::Personalized => {
                assert!(ck.is_some() && sk.is_some(), "PERSONALIZED needs both keys");
            }
            UserContext::Unpersonalized => {
                assert!(ck.is_none(), "UNPERSONALIZED must not send customerKey");
                assert!(sk.is_some(), "UNPERSONALIZED needs sessionKey");
            }
            UserContext::Anonymous => assert!(ck.is_none() && sk.is_none(), "ANONYMOUS sends no key"),
            UserContext::Synthetic => {}
        }
        if ck.is_some() {
            assert_eq!(ck, &event.customer_key);
        }
        if sk.is_some() {
            assert_eq!(sk, &event.session_key);
        }
    }
}

/// The README's rule: a readable event whose type is not an add-to-cart type would produce no
/// request, so nothing else in it is checked and it cannot be invalid.
fn check_not_add_to_cart_is_not_validated(mapping: &MappingConfig, data: &[u8], invalid: &Invalid) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return;
    };
    if mapping.event_type.is_empty() || !value.is_object() {
        return;
    }
    if let Some(Value::String(t)) = value.pointer(&mapping.event_type) {
        assert!(
            t.is_empty() || mapping.add_to_cart_types.contains(t),
            "a {t:?} event (not an add-to-cart type) was validated: {invalid}"
        );
    }
}

/// A decodable event that `select` refused: only for a missing market or required key.
fn check_select_invalid(event: &CartEvent, invalid: &Invalid) {
    assert_eq!(invalid.reason, InvalidReason::MissingField, "{invalid}");
    assert!(
        event.is_add_to_cart,
        "a non-add-to-cart event was held to the contract"
    );
    let names = ["market", "customerKey", "sessionKey"];
    assert!(
        names.iter().any(|n| invalid.detail.contains(n)),
        "detail names no field: {invalid}"
    );
}

/// Nesting depth of a value (a scalar is 0, `[]` is 1).
pub fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

// ---------------------------------------------------------------------------------------------
// generators

/// Strings worth trying anywhere a string goes. The planted personal keys are not among them:
/// they go only where customerKey/sessionKey live. (A detail quotes up to 40 characters of a
/// bad `userContext` or `occurredAt`, so a key put *there* would show; see the report of
/// issue 8.)
const WORDS: &[&str] = &[
    "",
    " ",
    "add_to_cart",
    "page_view",
    "elevate",
    "shop",
    "SE",
    "NO",
    "PERSONALIZED",
    "UNPERSONALIZED",
    "ANONYMOUS",
    "SYNTHETIC",
    "personalized",
    "2026-11-30T10:00:00Z",
    "2026-11-30 10:00:00",
    "9999-12-31T23:59:59Z",
    "0000-00-00T00:00:00Z",
    "yesterday",
    "\u{feff}",
    "\u{0}",
    "\u{2028}",
    "😀",
    "%00&market=XX",
    "NaN",
    "T1",
];

fn arb_string(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(match u.int_in_range(0..=3)? {
        0 | 1 => (*u.choose(WORDS)?).to_string(),
        2 => u.arbitrary::<String>()?,
        _ => {
            let n = u.int_in_range(0..=2000)?;
            (*u.choose(&["x", "é", "\u{0}", "\\"])?).repeat(n)
        }
    })
}

fn arb_number(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(match u.int_in_range(0..=3)? {
        0 => Value::from(u.arbitrary::<i64>()?),
        1 => Value::from(u.arbitrary::<u64>()?),
        2 => Number::from_f64(u.arbitrary::<f64>()?).map_or(Value::Null, Value::Number),
        _ => Value::from(*u.choose(&[0i64, -1, 1_700_000_000_000, i64::MAX, i64::MIN])?),
    })
}

/// Any JSON value, at most `budget` levels deep.
pub fn arb_value(u: &mut Unstructured<'_>, budget: u32) -> Result<Value> {
    let top = if budget == 0 { 4 } else { 6 };
    Ok(match u.int_in_range(0..=top)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => arb_number(u)?,
        3 | 4 => Value::String(arb_string(u)?),
        5 => {
            let n = u.int_in_range(0..=4)?;
            let mut a = Vec::with_capacity(n);
            for _ in 0..n {
                a.push(arb_value(u, budget - 1)?);
            }
            Value::Array(a)
        }
        _ => {
            let n = u.int_in_range(0..=4)?;
            let mut m = Map::new();
            for _ in 0..n {
                let k = if u.ratio(1, 2)? {
                    (*u.choose(&["type", "market", "lines", "ticket", "source", "x", ""])?).to_string()
                } else {
                    arb_string(u)?
                };
                m.insert(k, arb_value(u, budget - 1)?);
            }
            Value::Object(m)
        }
    })
}

/// With probability 3/4 `good`, else any value (wrong types, nulls, ...).
fn mostly(u: &mut Unstructured<'_>, good: Value) -> Result<Value> {
    if u.ratio(3, 4)? {
        Ok(good)
    } else {
        arb_value(u, 2)
    }
}

/// A value shaped like a cart event (default mapping), with every field sometimes missing,
/// null, empty, of the wrong type or odd.
pub fn arb_event(u: &mut Unstructured<'_>) -> Result<Value> {
    if u.ratio(1, 16)? {
        return arb_value(u, 4);
    }
    let mut m = Map::new();
    let kind = *u.choose(&["add_to_cart", "add_to_cart", "add_to_cart", "page_view"])?;
    field(u, &mut m, "type", Value::from(kind))?;
    let market = *u.choose(&["SE", "NO", "DE-de", "SE&x=1"])?;
    field(u, &mut m, "market", Value::from(market))?;
    field(u, &mut m, "customerKey", Value::from(SECRET_CUSTOMER))?;
    field(u, &mut m, "sessionKey", Value::from(SECRET_SESSION))?;
    if u.ratio(1, 2)? {
        let ctx = *u.choose(&["PERSONALIZED", "UNPERSONALIZED", "ANONYMOUS", "SYNTHETIC"])?;
        field(u, &mut m, "userContext", Value::from(ctx))?;
    }
    if u.ratio(1, 2)? {
        let ua = arb_string(u)?;
        let ip = arb_string(u)?;
        field(
            u,
            &mut m,
            "visitor",
            serde_json::json!({"userAgent": ua, "ip": ip}),
        )?;
    }
    if u.ratio(1, 2)? {
        let t = if u.ratio(1, 2)? {
            arb_number(u)?
        } else {
            Value::from(arb_string(u)?)
        };
        field(u, &mut m, "occurredAt", t)?;
    }
    let n = u.int_in_range(0..=6)?;
    let mut lines = Vec::with_capacity(n);
    for _ in 0..n {
        lines.push(arb_line(u)?);
    }
    field(u, &mut m, "lines", Value::Array(lines))?;
    if u.ratio(1, 4)? {
        let k = arb_string(u)?;
        let v = arb_value(u, 3)?;
        m.insert(k, v);
    }
    Ok(Value::Object(m))
}

/// Sets `m[k]` (with probability 7/8) to mostly `good`.
fn field(u: &mut Unstructured<'_>, m: &mut Map<String, Value>, k: &str, good: Value) -> Result<()> {
    if u.ratio(7, 8)? {
        let v = mostly(u, good)?;
        m.insert(k.to_string(), v);
    }
    Ok(())
}

fn arb_line(u: &mut Unstructured<'_>) -> Result<Value> {
    if u.ratio(1, 16)? {
        return arb_value(u, 2);
    }
    let mut m = Map::new();
    let source = match u.int_in_range(0..=5)? {
        0..=2 => Some(Value::from("elevate")),
        3 => Some(Value::from("shop")),
        4 => Some(Value::Bool(u.arbitrary()?)),
        _ => None,
    };
    if let Some(s) = source {
        let s = mostly(u, s)?;
        m.insert("source".into(), s);
    }
    let ticket = match u.int_in_range(0..=7)? {
        0..=4 => Some(Value::from(format!("T{}", u.arbitrary::<u16>()?))),
        5 => Some(Value::from(arb_string(u)?)),
        6 => Some(Value::Null),
        _ => None,
    };
    if let Some(t) = ticket {
        let t = mostly(u, t)?;
        m.insert("ticket".into(), t);
    }
    Ok(Value::Object(m))
}

/// Pointers that are legal (start with '/') but odd: escapes, indexes, the root's children.
const POINTERS: &[&str] = &[
    "/type",
    "/market",
    "/lines",
    "/lines/0",
    "/lines/-",
    "/lines/18446744073709551616",
    "/ticket",
    "/source",
    "/",
    "/~0",
    "/~1",
    "/a~2b",
    "/x/0/~",
    "/visitor/ip",
    "/deep/0/0/0",
];

/// A mapping with pointers drawn from [`POINTERS`] (or empty where allowed); always valid.
pub fn arb_mapping(u: &mut Unstructured<'_>) -> Result<MappingConfig> {
    let mut m = MappingConfig::default();
    let ptr = |u: &mut Unstructured<'_>, required: bool| -> Result<String> {
        if !required && u.ratio(1, 6)? {
            return Ok(String::new());
        }
        Ok((*u.choose(POINTERS)?).to_string())
    };
    if u.ratio(1, 2)? {
        m.event_type = ptr(u, true)?;
    }
    if u.ratio(1, 2)? {
        m.market = ptr(u, true)?;
    }
    if u.ratio(1, 3)? {
        m.customer_key = ptr(u, false)?;
        m.session_key = ptr(u, false)?;
        m.user_context = ptr(u, false)?;
    }
    if u.ratio(1, 3)? {
        m.event_time = ptr(u, false)?;
    }
    if u.ratio(1, 2)? {
        m.lines = ptr(u, false)?;
        m.line_source = ptr(u, false)?;
        m.line_ticket = ptr(u, true)?;
    }
    if u.ratio(1, 4)? {
        m.elevate_sources = vec![arb_string(u)?];
        m.add_to_cart_types = vec![arb_string(u)?];
    }
    m.validate().expect("generated mapping is valid");
    Ok(m)
}
