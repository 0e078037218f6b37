//! Decode: a Kafka record value (bytes) into a [`CartEvent`], reading each field where the
//! `[mapping]` JSON Pointers say it lives. Pure, no I/O. Guarantees: never panics on any input;
//! a record that cannot be decoded yields an [`Invalid`] whose reason names the field at fault,
//! so the record is dead-lettered rather than lost or skipped silently. Only what a request
//! needs is read (README, "Event mapping"): the event type first; the lines of an add-to-cart
//! event; the request fields only when a line would be sent, and only the keys its consent
//! level sends. Anything else in the record may be malformed without consequence.

use serde_json::Value;

use crate::config::MappingConfig;

mod fields;
pub(crate) mod pointer;
mod prune;
mod slots;

pub(crate) use fields::{Doc, Fields, Found, JsonKind};
pub(crate) use slots::{SlotDoc, SlotPlan};

pub use prune::Keep;

/// Why a record is not a usable cart event. It goes to the dead-letter topic with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Invalid {
    /// Short machine-readable reason (a metric label and a header value).
    pub reason: InvalidReason,
    /// Human-readable detail naming the field (never a customer/session key value).
    pub detail: String,
}

/// The closed set of reasons a record is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InvalidReason {
    /// The value is not UTF-8.
    InvalidUtf8,
    /// The value is not JSON (or has no value at all).
    MalformedJson,
    /// The JSON is not an object.
    NotAnObject,
    /// A field has the wrong JSON type.
    WrongType,
    /// A field the contract requires is missing or empty.
    MissingField,
    /// A field has a value outside its allowed set.
    BadValue,
}

impl InvalidReason {
    /// Every reason, in declaration order.
    pub const ALL: [InvalidReason; 6] = [
        InvalidReason::InvalidUtf8,
        InvalidReason::MalformedJson,
        InvalidReason::NotAnObject,
        InvalidReason::WrongType,
        InvalidReason::MissingField,
        InvalidReason::BadValue,
    ];

    /// Stable label, used in headers and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidReason::InvalidUtf8 => "invalid_utf8",
            InvalidReason::MalformedJson => "malformed_json",
            InvalidReason::NotAnObject => "not_an_object",
            InvalidReason::WrongType => "wrong_type",
            InvalidReason::MissingField => "missing_field",
            InvalidReason::BadValue => "bad_value",
        }
    }
}

impl std::fmt::Display for InvalidReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Invalid {
    pub(crate) fn new(reason: InvalidReason, detail: impl Into<String>) -> Self {
        Invalid {
            reason,
            detail: detail.into(),
        }
    }
}

/// The consent level of a visitor (`userContext`), see the Elevate contract. Serialized (in
/// config) with Elevate's upper-case names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UserContext {
    /// Default: customerKey and sessionKey required.
    #[default]
    Personalized,
    /// customerKey must not be sent; sessionKey required.
    Unpersonalized,
    /// Neither key may be sent.
    Anonymous,
    /// Both keys optional.
    Synthetic,
}

impl UserContext {
    /// The query-parameter value.
    pub fn as_str(self) -> &'static str {
        match self {
            UserContext::Personalized => "PERSONALIZED",
            UserContext::Unpersonalized => "UNPERSONALIZED",
            UserContext::Anonymous => "ANONYMOUS",
            UserContext::Synthetic => "SYNTHETIC",
        }
    }

    /// Elevate's table for `customerKey` at this level.
    pub fn customer_key(self) -> KeyRule {
        match self {
            UserContext::Personalized => KeyRule::Required,
            UserContext::Unpersonalized | UserContext::Anonymous => KeyRule::Dropped,
            UserContext::Synthetic => KeyRule::IfPresent,
        }
    }

    /// Elevate's table for `sessionKey` at this level.
    pub fn session_key(self) -> KeyRule {
        match self {
            UserContext::Personalized | UserContext::Unpersonalized => KeyRule::Required,
            UserContext::Anonymous => KeyRule::Dropped,
            UserContext::Synthetic => KeyRule::IfPresent,
        }
    }

    /// Parses the exact upper-case names Elevate documents.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "PERSONALIZED" => Some(UserContext::Personalized),
            "UNPERSONALIZED" => Some(UserContext::Unpersonalized),
            "ANONYMOUS" => Some(UserContext::Anonymous),
            "SYNTHETIC" => Some(UserContext::Synthetic),
            _ => None,
        }
    }
}

/// What Elevate's consent table says about one key at one consent level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRule {
    /// Must be sent: a missing key makes the record invalid.
    Required,
    /// Must not be sent: never read, never forwarded.
    Dropped,
    /// Sent if the event has it.
    IfPresent,
}

/// One cart line as found in the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartLine {
    /// Whether the line says it is an Elevate product.
    pub from_elevate: bool,
    /// The ticket, if any (an empty string counts as none); read only on Elevate lines.
    pub ticket: Option<String>,
}

impl CartLine {
    /// Whether this line becomes a notification (an Elevate product with a ticket).
    pub fn would_send(&self) -> bool {
        self.from_elevate && self.ticket.is_some()
    }
}

/// A decoded cart event: only the fields the mapping reads. Fields past `is_add_to_cart` are
/// read only when needed: `lines` for an add-to-cart event, the rest only when a line would be
/// sent (else they stay `None`), the keys only where the consent level sends them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CartEvent {
    /// The event type.
    pub event_type: String,
    /// Whether `event_type` is one of the add-to-cart types.
    pub is_add_to_cart: bool,
    /// The market id, if present.
    pub market: Option<String>,
    /// The customer key, if present and non-empty.
    pub customer_key: Option<String>,
    /// The session key, if present and non-empty.
    pub session_key: Option<String>,
    /// The consent level, if the event carries one.
    pub user_context: Option<UserContext>,
    /// The visitor's User-Agent, if present.
    pub user_agent: Option<String>,
    /// The visitor's IP, if present.
    pub visitor_ip: Option<String>,
    /// When the event happened, epoch milliseconds, if the event says.
    pub event_time_ms: Option<i64>,
    /// The cart lines, in order.
    pub lines: Vec<CartLine>,
}

/// Decodes a record value under `mapping`.
pub fn decode(mapping: &MappingConfig, value: Option<&[u8]>) -> Result<CartEvent, Invalid> {
    decode_value(mapping, &parse(value)?)
}

/// A record value as JSON: UTF-8 (a BOM tolerated), then JSON; nothing about its shape.
pub fn parse(value: Option<&[u8]>) -> Result<Value, Invalid> {
    parse_kept(value, &Keep::all())
}

/// As `parse`, keeping only what `keep` names (`decode/prune.rs`).
pub fn parse_kept(value: Option<&[u8]>, keep: &Keep) -> Result<Value, Invalid> {
    keep.parse(text(value)?).map_err(not_json)
}

/// Decodes as `run` does: only what `keep` names is parsed, straight into slots when `keep` has
/// a plan for them (`decode/slots.rs`), else into a pruned value (`decode/prune.rs`). The same
/// event or the same [`Invalid`] as [`decode`] for every value, when `keep` is built from
/// `mapping` (the fuzz checks compare the two).
pub fn decode_kept(mapping: &MappingConfig, value: Option<&[u8]>, keep: &Keep) -> Result<CartEvent, Invalid> {
    match keep.slots() {
        Some(plan) => decode_doc(mapping, &parse_slots(value, plan)?),
        None => decode_doc(mapping, &parse_kept(value, keep)?),
    }
}

/// As [`parse_kept`], straight into the slots of `plan` (`decode/slots.rs`).
pub(crate) fn parse_slots<'p, 't>(
    value: Option<&'t [u8]>,
    plan: &'p SlotPlan,
) -> Result<SlotDoc<'p, 't>, Invalid> {
    plan.parse(text(value)?).map_err(not_json)
}

/// A record value as text: UTF-8, a BOM tolerated.
fn text(value: Option<&[u8]>) -> Result<&str, Invalid> {
    let bytes =
        value.ok_or_else(|| Invalid::new(InvalidReason::MalformedJson, "record has no value (tombstone)"))?;
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Invalid::new(
            InvalidReason::InvalidUtf8,
            format!("value is not UTF-8 (first bad byte at {})", e.valid_up_to()),
        )
    })?;
    Ok(text.strip_prefix('\u{feff}').unwrap_or(text))
}

fn not_json(e: serde_json::Error) -> Invalid {
    Invalid::new(InvalidReason::MalformedJson, format!("value is not JSON: {e}"))
}

/// The value is an object, else an [`Invalid`] naming what it is.
pub(crate) fn require_object(root: &impl Fields) -> Result<(), Invalid> {
    match root.kind() {
        JsonKind::Object => Ok(()),
        kind => Err(Invalid::new(
            InvalidReason::NotAnObject,
            format!("value is a JSON {kind}, expected an object"),
        )),
    }
}

/// The event type at `mapping.event_type`, required.
pub(crate) fn event_type(mapping: &MappingConfig, root: &impl Fields) -> Result<String, Invalid> {
    opt_string(root, &mapping.event_type, "event_type")?.ok_or_else(|| {
        Invalid::new(
            InvalidReason::MissingField,
            format!("event_type missing at {}", mapping.event_type),
        )
    })
}

/// Decodes an already-parsed JSON value under `mapping`: the event type, then (add-to-cart
/// only) the lines, then (only when a line would be sent) what the request needs.
pub fn decode_value(mapping: &MappingConfig, root: &Value) -> Result<CartEvent, Invalid> {
    decode_doc(mapping, root)
}

/// [`decode_value`] of a whole value or of slots.
fn decode_doc(mapping: &MappingConfig, root: &impl Doc) -> Result<CartEvent, Invalid> {
    require_object(root)?;
    decode_typed(mapping, root, event_type(mapping, root)?)
}

/// [`decode_value`] of an object whose event type was already read (the routes read it first,
/// to choose the routes it feeds).
pub(crate) fn decode_typed(
    mapping: &MappingConfig,
    root: &impl Doc,
    event_type: String,
) -> Result<CartEvent, Invalid> {
    let mut event = CartEvent {
        is_add_to_cart: mapping.add_to_cart_types.contains(&event_type),
        event_type,
        ..CartEvent::default()
    };
    if !event.is_add_to_cart {
        return Ok(event);
    }
    event.lines = decode_lines(mapping, root)?;
    if event.lines.iter().any(CartLine::would_send) {
        decode_request_fields(mapping, root, &mut event)?;
    }
    Ok(event)
}

/// The fields a request is built from: consent level, market, the keys that level sends, the
/// visitor headers and the event time (which `--max-age` and the replay summary use).
pub(crate) fn decode_request_fields(
    mapping: &MappingConfig,
    root: &impl Fields,
    event: &mut CartEvent,
) -> Result<(), Invalid> {
    event.user_context = match opt_str(root, &mapping.user_context, "user_context")? {
        None => None,
        Some(s) => Some(UserContext::parse(s).ok_or_else(|| {
            Invalid::new(
                InvalidReason::BadValue,
                format!(
                    "user_context at {} is {}; expected PERSONALIZED, UNPERSONALIZED, ANONYMOUS or SYNTHETIC",
                    mapping.user_context,
                    quote_if(s, |c| c.is_ascii_alphabetic() || c == '_')
                ),
            )
        })?),
    };
    let ctx = event.user_context.unwrap_or_default();
    event.market = opt_string(root, &mapping.market, "market")?;
    if ctx.customer_key() != KeyRule::Dropped {
        event.customer_key = opt_string(root, &mapping.customer_key, "customer_key")?;
    }
    if ctx.session_key() != KeyRule::Dropped {
        event.session_key = opt_string(root, &mapping.session_key, "session_key")?;
    }
    event.user_agent = opt_string(root, &mapping.user_agent, "user_agent")?;
    event.visitor_ip = opt_string(root, &mapping.visitor_ip, "visitor_ip")?;
    event.event_time_ms = event_time(root, &mapping.event_time)?;
    Ok(())
}

/// The line items `mapping.lines` points at: the array's elements (none when it is absent or
/// null), or the event itself when no lines pointer is configured (one line per event). Shared
/// by cart lines and order lines.
pub(crate) fn line_items<'v, D: Doc>(
    mapping: &MappingConfig,
    root: &'v D,
) -> Result<Vec<D::Line<'v>>, Invalid> {
    if mapping.lines.is_empty() {
        return Ok(vec![root.as_line()]);
    }
    root.lines(&mapping.lines).map_err(|kind| {
        Invalid::new(
            InvalidReason::WrongType,
            format!("lines at {} is a {kind}, expected an array", mapping.lines),
        )
    })
}

/// A line is an object, else an [`Invalid`] naming line `i` and what it is.
pub(crate) fn require_line_object(i: usize, line: &impl Fields) -> Result<(), Invalid> {
    match line.kind() {
        JsonKind::Object => Ok(()),
        kind => Err(Invalid::new(
            InvalidReason::WrongType,
            format!("lines[{i}] is a {kind}, expected an object"),
        )),
    }
}

fn decode_lines(mapping: &MappingConfig, root: &impl Doc) -> Result<Vec<CartLine>, Invalid> {
    line_items(mapping, root)?
        .into_iter()
        .enumerate()
        .map(|(i, line)| {
            require_line_object(i, &line)?;
            let from_elevate = if mapping.line_source.is_empty() {
                true
            } else {
                match line.at(&mapping.line_source) {
                    None | Some(Found::Null) => false,
                    Some(Found::Bool(b)) => b,
                    Some(Found::Str(s)) => mapping.elevate_sources.iter().any(|e| e == s),
                    Some(other) => {
                        return Err(Invalid::new(
                            InvalidReason::WrongType,
                            format!(
                                "lines[{i}] line_source at {} is a {}, expected a string or boolean",
                                mapping.line_source,
                                other.kind()
                            ),
                        ))
                    }
                }
            };
            // A line that is not an Elevate product is never sent: its ticket is not read.
            let ticket = if from_elevate {
                opt_string(&line, &mapping.line_ticket, LineField(i, "ticket"))?
            } else {
                None
            };
            Ok(CartLine { from_elevate, ticket })
        })
        .collect()
}

/// A line's field as errors name it, `lines[3] ticket`: formatted only when an error is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LineField<'a>(pub usize, pub &'a str);

impl std::fmt::Display for LineField<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lines[{}] {}", self.0, self.1)
    }
}

/// A string field: absent, null or "" → None; another type → WrongType naming `field`.
pub(crate) fn opt_string(
    root: &impl Fields,
    pointer: &str,
    field: impl std::fmt::Display,
) -> Result<Option<String>, Invalid> {
    Ok(opt_str(root, pointer, field)?.map(str::to_string))
}

/// [`opt_string`] borrowed from the record, for a field read but not kept.
fn opt_str<'a>(
    root: &'a impl Fields,
    pointer: &str,
    field: impl std::fmt::Display,
) -> Result<Option<&'a str>, Invalid> {
    if pointer.is_empty() {
        return Ok(None);
    }
    match root.at(pointer) {
        None | Some(Found::Null | Found::Str("")) => Ok(None),
        Some(Found::Str(s)) => Ok(Some(s)),
        Some(other) => Err(Invalid::new(
            InvalidReason::WrongType,
            format!("{field} at {pointer} is a {}, expected a string", other.kind()),
        )),
    }
}

fn event_time(root: &impl Fields, pointer: &str) -> Result<Option<i64>, Invalid> {
    if pointer.is_empty() {
        return Ok(None);
    }
    match root.at(pointer) {
        None | Some(Found::Null) => Ok(None),
        Some(Found::Number(n)) => n.as_i64().map(Some).ok_or_else(|| {
            Invalid::new(
                InvalidReason::BadValue,
                format!("event_time at {pointer} is not an integer number of epoch milliseconds"),
            )
        }),
        Some(Found::Str(s)) => parse_rfc3339_ms(s).map(Some).ok_or_else(|| {
            Invalid::new(
                InvalidReason::BadValue,
                format!(
                    "event_time at {pointer} is {}, expected RFC 3339",
                    quote_if(s, |c| c.is_ascii_digit() || "-:.+TZtz ".contains(c))
                ),
            )
        }),
        Some(other) => Err(Invalid::new(
            InvalidReason::WrongType,
            format!(
                "event_time at {pointer} is a {}, expected a string or number",
                other.kind()
            ),
        )),
    }
}

/// RFC 3339 with `Z` or a numeric offset (`+01:00`), as epoch milliseconds.
fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let (local, offset_secs) = match s
        .len()
        .checked_sub(6)
        .filter(|&i| s.is_char_boundary(i))
        .map(|i| s.split_at(i))
    {
        Some((head, tail))
            if (tail.starts_with('+') || tail.starts_with('-')) && tail.as_bytes()[3] == b':' =>
        {
            let h: i64 = tail[1..3].parse().ok()?;
            let m: i64 = tail[4..6].parse().ok()?;
            let sign = if tail.starts_with('-') { -1 } else { 1 };
            (head, sign * (h * 3600 + m * 60))
        }
        _ => (
            s.strip_suffix('Z').or_else(|| s.strip_suffix('z')).unwrap_or(s),
            0,
        ),
    };
    let t = humantime::parse_rfc3339_weak(local).ok()?;
    let ms = match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    };
    Some(ms - offset_secs * 1000)
}

/// `s` quoted when every character passes `allowed` (a consent word, a date), else only its
/// length: a mapping pointed at the wrong field must not copy a personal key into a detail.
fn quote_if(s: &str, allowed: impl Fn(char) -> bool) -> String {
    if s.chars().count() <= 40 && s.chars().all(allowed) {
        format!("{s:?}")
    } else {
        format!("a string of {} characters", s.chars().count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> MappingConfig {
        MappingConfig::default()
    }

    #[test]
    fn decodes_default_shape() {
        let v = br#"{"type":"add_to_cart","market":"SE","customerKey":"c1","sessionKey":"s1",
            "userContext":"UNPERSONALIZED","visitor":{"userAgent":"UA","ip":"1.2.3.4"},
            "occurredAt":"2026-11-30T10:00:00Z",
            "lines":[{"source":"elevate","ticket":"T1"},{"source":"shop"},{"source":true,"ticket":""}]}"#;
        let e = decode(&m(), Some(v)).unwrap();
        assert!(e.is_add_to_cart);
        assert_eq!(e.market.as_deref(), Some("SE"));
        assert_eq!(e.user_context, Some(UserContext::Unpersonalized));
        assert_eq!(e.user_agent.as_deref(), Some("UA"));
        assert_eq!(e.event_time_ms, Some(1_796_032_800_000));
        assert_eq!(
            e.lines,
            vec![
                CartLine {
                    from_elevate: true,
                    ticket: Some("T1".into())
                },
                CartLine {
                    from_elevate: false,
                    ticket: None
                },
                CartLine {
                    from_elevate: true,
                    ticket: None
                },
            ]
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let cases: &[(&[u8], InvalidReason, &str)] = &[
            (b"\xff\xfe", InvalidReason::InvalidUtf8, "UTF-8"),
            (b"{\"type\":", InvalidReason::MalformedJson, "JSON"),
            (b"[1]", InvalidReason::NotAnObject, "array"),
            (b"{\"market\":\"SE\"}", InvalidReason::MissingField, "event_type"),
            (
                b"{\"type\":\"add_to_cart\",\"market\":7,\"lines\":[{\"source\":\"elevate\",\"ticket\":\"T\"}]}",
                InvalidReason::WrongType,
                "market",
            ),
            (
                b"{\"type\":\"add_to_cart\",\"lines\":{}}",
                InvalidReason::WrongType,
                "lines",
            ),
            (
                b"{\"type\":\"add_to_cart\",\"lines\":[{\"source\":\"elevate\",\"ticket\":5}]}",
                InvalidReason::WrongType,
                "lines[0] ticket",
            ),
            (
                b"{\"type\":\"add_to_cart\",\"userContext\":\"personal\",\"lines\":[{\"source\":\"elevate\",\"ticket\":\"T\"}]}",
                InvalidReason::BadValue,
                "user_context",
            ),
        ];
        for (input, reason, needle) in cases {
            let err = decode(&m(), Some(input)).unwrap_err();
            assert_eq!(err.reason, *reason, "{input:?}: {err}");
            assert!(err.detail.contains(needle), "{input:?}: {err}");
        }
        assert_eq!(
            decode(&m(), None).unwrap_err().reason,
            InvalidReason::MalformedJson
        );
    }

    #[test]
    fn rfc3339_offsets() {
        assert_eq!(parse_rfc3339_ms("2026-11-30T10:00:00Z"), Some(1_796_032_800_000));
        assert_eq!(
            parse_rfc3339_ms("2026-11-30T11:00:00+01:00"),
            Some(1_796_032_800_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-30T09:30:00-00:30"),
            Some(1_796_032_800_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-30T10:00:00.250Z"),
            Some(1_796_032_800_250)
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
        assert_eq!(parse_rfc3339_ms("ééé+01:00"), None);
    }

    #[test]
    fn bom_is_tolerated_and_epoch_millis_accepted() {
        let v = "\u{feff}{\"type\":\"add_to_cart\",\"market\":\"SE\",\"userContext\":\"ANONYMOUS\",\
                 \"occurredAt\":1700000000000,\"lines\":[{\"source\":\"elevate\",\"ticket\":\"T\"}]}";
        assert_eq!(
            decode(&m(), Some(v.as_bytes())).unwrap().event_time_ms,
            Some(1_700_000_000_000)
        );
    }

    #[test]
    fn custom_pointers_and_single_line_events() {
        let mapping = MappingConfig {
            event_type: "/event/name".into(),
            add_to_cart_types: vec!["cart.add".into()],
            market: "/ctx/market".into(),
            lines: String::new(),
            line_source: "/attrs/fromElevate".into(),
            line_ticket: "/attrs/ticket".into(),
            ..MappingConfig::default()
        };
        let v = br#"{"event":{"name":"cart.add"},"ctx":{"market":"NO"},"attrs":{"fromElevate":true,"ticket":"T"}}"#;
        let e = decode(&mapping, Some(v)).unwrap();
        assert!(e.is_add_to_cart);
        assert_eq!(
            e.lines,
            vec![CartLine {
                from_elevate: true,
                ticket: Some("T".into())
            }]
        );
    }
}
