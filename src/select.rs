//! Select + map: a [`CartEvent`] into 0..N [`Notification`]s, one per cart line that is an
//! Elevate product with a non-empty ticket in an add-to-cart event. Pure, no I/O. Guarantees:
//! every line is either mapped or counted under a [`SkipReason`]; consent rules (`userContext`)
//! are applied here, so a key that must not be sent never leaves this function, and a missing
//! required key makes the whole record [`Invalid`] (dead-lettered), naming the key.

use crate::config::MappingConfig;
use crate::decode::{decode, CartEvent, Invalid, InvalidReason, KeyRule, UserContext};
use crate::route::RouteTag;

/// What a notification's request carries in its body, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// `{"ticket": ..}` (add-to-cart, click): opaque, non-empty.
    Ticket(String),
    /// `{"productKey": ..}` (favourites).
    ProductKey(String),
    /// `{"variantKey": ..}` (favourites).
    VariantKey(String),
    /// No body (end).
    Empty,
    /// `{"lines": [..]}` (payment): every order line.
    Payment(Vec<PaymentLine>),
}

/// One order line of a payment notification, checked: quantity a positive integer, prices
/// finite and non-negative, each as the float it denotes (`199` and `199.0` are both `199.0`,
/// so a JSON order and its Avro or Protobuf twin send the same body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentLine {
    /// The variant key.
    pub variant_key: String,
    /// Units bought (at least 1).
    pub quantity: u64,
    /// Selling price.
    pub selling_price: serde_json::Number,
    /// Cost.
    pub cost: serde_json::Number,
}

/// One notification to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The route it belongs to (name and kind).
    pub route: RouteTag,
    /// The body, by kind.
    pub body: Body,
    /// The Elevate market id.
    pub market: String,
    /// customerKey, present only when the consent level allows it.
    pub customer_key: Option<String>,
    /// sessionKey, present only when the consent level allows it.
    pub session_key: Option<String>,
    /// userContext to send, when the event carried one.
    pub user_context: Option<UserContext>,
    /// Visitor User-Agent to forward.
    pub user_agent: Option<String>,
    /// Visitor IP to forward as X-Forwarded-For.
    pub visitor_ip: Option<String>,
    /// Index of the cart line this came from.
    pub line: usize,
    /// When the event happened (epoch ms), if known.
    pub event_time_ms: Option<i64>,
    /// W3C trace context headers (`traceparent`, `tracestate`) from the Kafka record, forwarded.
    pub trace: Vec<(&'static str, String)>,
}

impl Notification {
    /// The ticket, for the kinds that carry one.
    pub fn ticket(&self) -> Option<&str> {
        match &self.body {
            Body::Ticket(t) => Some(t),
            _ => None,
        }
    }
}

/// Why a record or a line produced no notification. Counted, never an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// The event is not an add-to-cart event (whole record).
    NotAddToCart,
    /// An add-to-cart event with no cart lines (whole record).
    NoLines,
    /// The line is not an Elevate product.
    NotFromElevate,
    /// An Elevate line without a ticket (missing, null or empty).
    NoTicket,
    /// Older than the replay's `--max-age` (set by replay only).
    TooOld,
    /// The visitor's User-Agent is a known bot (`elevate.skip_bots`).
    Bot,
    /// The record's event type feeds none of its topic's routes (when they are not all
    /// add-to-cart routes; those say `not_add_to_cart`, as before routes existed).
    NoRoute,
}

impl SkipReason {
    /// Every reason, in declaration order.
    pub const ALL: [SkipReason; 7] = [
        SkipReason::NotAddToCart,
        SkipReason::NoLines,
        SkipReason::NotFromElevate,
        SkipReason::NoTicket,
        SkipReason::TooOld,
        SkipReason::Bot,
        SkipReason::NoRoute,
    ];

    /// Its place in [`SkipReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Stable label for metrics and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotAddToCart => "not_add_to_cart",
            SkipReason::NoLines => "no_lines",
            SkipReason::NotFromElevate => "not_from_elevate",
            SkipReason::NoTicket => "no_ticket",
            SkipReason::TooOld => "too_old",
            SkipReason::Bot => "bot",
            SkipReason::NoRoute => "no_route",
        }
    }
}

impl crate::metrics::LabelValue for SkipReason {
    const ALL: &'static [Self] = &SkipReason::ALL;

    fn as_str(self) -> &'static str {
        SkipReason::as_str(self)
    }
}

/// What one record maps to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mapped {
    /// Notifications to send; the record is done when all of them are.
    pub notifications: Vec<Notification>,
    /// Skip reasons, one per skipped line (or one for a skipped record).
    pub skipped: Vec<SkipReason>,
    /// When the event happened (epoch ms), from the event when mapped, else unknown.
    pub event_time_ms: Option<i64>,
    /// The same skips labelled by the route that made them (filled by `route`).
    pub route_skips: Vec<(RouteTag, SkipReason)>,
}

/// Decodes and maps a record value: the whole pure front half of the pipeline.
pub fn map_record(mapping: &MappingConfig, value: Option<&[u8]>) -> Result<Mapped, Invalid> {
    select(decode(mapping, value)?)
}

/// Selects the lines worth a notification and builds them under the consent rules (as the
/// default `add-to-cart` route; `route` re-tags them for its own). The event's fields
/// move into the notifications: the last one takes them, the others get copies.
pub fn select(mut event: CartEvent) -> Result<Mapped, Invalid> {
    let mut out = Mapped {
        event_time_ms: event.event_time_ms,
        ..Mapped::default()
    };
    if !event.is_add_to_cart {
        out.skipped.push(SkipReason::NotAddToCart);
        return Ok(out);
    }
    if event.lines.is_empty() {
        out.skipped.push(SkipReason::NoLines);
        return Ok(out);
    }
    let mut selected = Vec::new();
    for (i, line) in std::mem::take(&mut event.lines).into_iter().enumerate() {
        match (line.ticket, line.from_elevate) {
            (_, false) => out.skipped.push(SkipReason::NotFromElevate),
            (Some(t), true) if !t.is_empty() => selected.push((i, t)),
            (_, true) => out.skipped.push(SkipReason::NoTicket),
        }
    }
    let Some(last) = selected.pop() else {
        return Ok(out);
    };
    // Only records that will produce a request are held to the request contract.
    let template = template(event)?;
    let one = |(line, ticket): (usize, String), n: Notification| Notification {
        body: Body::Ticket(ticket),
        line,
        ..n
    };
    out.notifications = selected.into_iter().map(|s| one(s, template.clone())).collect();
    out.notifications.push(one(last, template));
    Ok(out)
}

/// What every notification of `event` shares: the market, which every request needs; the
/// customerKey/sessionKey its consent level sends (Elevate's table, [`UserContext::customer_key`]
/// and [`UserContext::session_key`]: forbidden keys dropped, a missing required key an error
/// naming it); the visitor and the event time. Its body is empty and its line 0.
pub(crate) fn template(event: CartEvent) -> Result<Notification, Invalid> {
    let ctx = event.user_context.unwrap_or_default();
    let market = event.market.ok_or_else(|| {
        Invalid::new(
            InvalidReason::MissingField,
            "market is missing; Elevate requires it",
        )
    })?;
    let key = |rule: KeyRule, key: Option<String>, name: &str| match rule {
        KeyRule::Dropped => Ok(None),
        KeyRule::IfPresent => Ok(key),
        KeyRule::Required => key.map(Some).ok_or_else(|| {
            Invalid::new(
                InvalidReason::MissingField,
                format!("{name} is missing; userContext {} requires it", ctx.as_str()),
            )
        }),
    };
    Ok(Notification {
        route: RouteTag::default(),
        body: Body::Empty,
        market,
        customer_key: key(ctx.customer_key(), event.customer_key, "customerKey")?,
        session_key: key(ctx.session_key(), event.session_key, "sessionKey")?,
        user_context: event.user_context,
        user_agent: event.user_agent,
        visitor_ip: event.visitor_ip,
        line: 0,
        event_time_ms: event.event_time_ms,
        trace: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::CartLine;
    use proptest::prelude::*;

    fn event(ctx: Option<UserContext>, ck: Option<&str>, sk: Option<&str>) -> CartEvent {
        CartEvent {
            event_type: "add_to_cart".into(),
            is_add_to_cart: true,
            market: Some("SE".into()),
            customer_key: ck.map(Into::into),
            session_key: sk.map(Into::into),
            user_context: ctx,
            user_agent: None,
            visitor_ip: None,
            event_time_ms: None,
            lines: vec![
                CartLine {
                    from_elevate: true,
                    ticket: Some("T0".into()),
                },
                CartLine {
                    from_elevate: false,
                    ticket: Some("T1".into()),
                },
                CartLine {
                    from_elevate: true,
                    ticket: None,
                },
                CartLine {
                    from_elevate: true,
                    ticket: Some("T3".into()),
                },
            ],
        }
    }

    #[test]
    fn each_skip_reason_indexes_its_place_in_all() {
        for (i, r) in SkipReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
    }

    #[test]
    fn one_notification_per_elevate_line_with_ticket() {
        let m = select(event(None, Some("c"), Some("s"))).unwrap();
        let tickets: Vec<_> = m
            .notifications
            .iter()
            .map(|n| (n.line, n.ticket().unwrap()))
            .collect();
        assert_eq!(tickets, vec![(0, "T0"), (3, "T3")]);
        assert_eq!(m.skipped, vec![SkipReason::NotFromElevate, SkipReason::NoTicket]);
    }

    #[test]
    fn consent_table() {
        use UserContext::*;
        let keys = |ctx, ck, sk| {
            select(event(ctx, ck, sk)).map(|m| {
                let n = &m.notifications[0];
                (n.customer_key.clone(), n.session_key.clone())
            })
        };
        let s = |x: &str| Some(x.to_string());
        assert_eq!(keys(None, Some("c"), Some("s")).unwrap(), (s("c"), s("s")));
        assert_eq!(
            keys(Some(Personalized), Some("c"), Some("s")).unwrap(),
            (s("c"), s("s"))
        );
        assert_eq!(
            keys(Some(Unpersonalized), Some("c"), Some("s")).unwrap(),
            (None, s("s"))
        );
        assert_eq!(keys(Some(Anonymous), Some("c"), Some("s")).unwrap(), (None, None));
        assert_eq!(keys(Some(Synthetic), None, Some("s")).unwrap(), (None, s("s")));
        let err = keys(None, None, Some("s")).unwrap_err();
        assert!(
            err.detail.contains("customerKey") && err.detail.contains("PERSONALIZED"),
            "{err}"
        );
        let err = keys(Some(Unpersonalized), Some("c"), None).unwrap_err();
        assert!(err.detail.contains("sessionKey"), "{err}");
    }

    #[test]
    fn irrelevant_records_are_skipped_not_validated() {
        let mut e = event(None, None, None);
        e.is_add_to_cart = false;
        assert_eq!(select(e.clone()).unwrap().skipped, vec![SkipReason::NotAddToCart]);
        let mut e = event(None, None, None);
        e.lines.retain(|l| !l.from_elevate);
        e.market = None;
        assert_eq!(
            select(e.clone()).unwrap().skipped,
            vec![SkipReason::NotFromElevate]
        );
        let mut e = event(None, None, None);
        e.lines.clear();
        assert_eq!(select(e.clone()).unwrap().skipped, vec![SkipReason::NoLines]);
    }

    /// Issue 11 item 12: a record that would produce no request is not held to the request
    /// contract (README, event mapping); only what a request needs is validated, after the
    /// event-type check, and only for the lines that would be sent.
    #[test]
    fn only_what_a_request_needs_is_validated() {
        use SkipReason::*;
        let m = MappingConfig::default();
        let map = |v: &str| map_record(&m, Some(v.as_bytes()));
        let skipped: &[(&str, &[SkipReason])] = &[
            (
                r#"{"type":"page_view","userContext":"personal"}"#,
                &[NotAddToCart],
            ),
            (
                r#"{"type":"page_view","market":7,"customerKey":true,"sessionKey":{},"userContext":1,
                   "visitor":{"ip":5,"userAgent":[]},"occurredAt":"yesterday","lines":{}}"#,
                &[NotAddToCart],
            ),
            (
                r#"{"type":"add_to_cart","userContext":"personal","market":7,"lines":[{"source":"shop","ticket":5}]}"#,
                &[NotFromElevate],
            ),
            (
                r#"{"type":"add_to_cart","userContext":1,"occurredAt":false,"lines":[{"source":"elevate","ticket":null}]}"#,
                &[NoTicket],
            ),
            (
                r#"{"type":"add_to_cart","market":["SE"],"customerKey":5,"lines":[]}"#,
                &[NoLines],
            ),
        ];
        for (v, want) in skipped {
            let got = map(v).unwrap_or_else(|e| panic!("{v}: {e}"));
            assert!(got.notifications.is_empty(), "{v}");
            assert_eq!(&got.skipped, want, "{v}");
        }
        // Keys that the consent level drops are not part of the request: not read at all.
        for v in [
            r#"{"type":"add_to_cart","market":"SE","userContext":"ANONYMOUS","customerKey":true,
                "sessionKey":{"id":1},"lines":[{"source":"elevate","ticket":"T"}]}"#,
            r#"{"type":"add_to_cart","market":"SE","userContext":"UNPERSONALIZED","customerKey":7,
                "sessionKey":"s","lines":[{"source":"elevate","ticket":"T"},{"source":"shop","ticket":9}]}"#,
        ] {
            let got = map(v).unwrap_or_else(|e| panic!("{v}: {e}"));
            assert_eq!(got.notifications.len(), 1, "{v}");
        }
        // What a request needs is still checked; so is a line whose kind cannot be told.
        let line = r#""lines":[{"source":"elevate","ticket":"T"}]"#;
        let invalid = [
            (format!(r#"{{"type":"add_to_cart","market":7,{line}}}"#), "market"),
            (
                format!(r#"{{"type":"add_to_cart","market":"SE","userContext":"personal",{line}}}"#),
                "user_context",
            ),
            (
                format!(
                    r#"{{"type":"add_to_cart","market":"SE","customerKey":true,"sessionKey":"s",{line}}}"#
                ),
                "customer_key",
            ),
            (
                format!(
                    r#"{{"type":"add_to_cart","market":"SE","customerKey":"c","sessionKey":"s","visitor":{{"ip":5}},{line}}}"#
                ),
                "visitor_ip",
            ),
            (
                format!(
                    r#"{{"type":"add_to_cart","market":"SE","customerKey":"c","sessionKey":"s","occurredAt":"x",{line}}}"#
                ),
                "event_time",
            ),
            (
                r#"{"type":"add_to_cart","market":"SE","lines":[{"source":"elevate","ticket":5}]}"#
                    .to_string(),
                "lines[0] ticket",
            ),
            (
                r#"{"type":"add_to_cart","lines":[{"source":1}]}"#.to_string(),
                "line_source",
            ),
            (r#"{"type":"add_to_cart","lines":["T"]}"#.to_string(), "lines[0]"),
            (r#"{"type":"add_to_cart","lines":{}}"#.to_string(), "lines"),
            (r#"{"type":5}"#.to_string(), "event_type"),
        ];
        for (v, needle) in &invalid {
            let err = map(v).expect_err(v);
            assert!(err.detail.contains(needle), "{v}: {err}");
        }
    }

    #[test]
    fn an_empty_ticket_is_no_ticket() {
        let mut e = event(Some(UserContext::Anonymous), None, None);
        e.lines = vec![CartLine {
            from_elevate: true,
            ticket: Some(String::new()),
        }];
        let m = select(e.clone()).unwrap();
        assert!(m.notifications.is_empty());
        assert_eq!(m.skipped, vec![SkipReason::NoTicket]);
    }

    #[test]
    fn missing_market_is_invalid() {
        let mut e = event(None, Some("c"), Some("s"));
        e.market = None;
        assert!(select(e.clone()).unwrap_err().detail.contains("market"));
    }

    proptest! {
        /// Any bytes: no panic, and either mapped or invalid with a reason; every line accounted for.
        #[test]
        fn any_bytes_are_mapped_or_invalid(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = map_record(&MappingConfig::default(), Some(&bytes));
        }

        #[test]
        fn every_line_is_mapped_or_skipped(lines in proptest::collection::vec((any::<bool>(), proptest::option::of("[a-z]{0,3}")), 1..20)) {
            let mut e = event(Some(UserContext::Anonymous), None, None);
            e.lines = lines.iter().map(|(f, t)| CartLine { from_elevate: *f, ticket: t.clone().filter(|t| !t.is_empty()) }).collect();
            let m = select(e.clone()).unwrap();
            prop_assert_eq!(m.notifications.len() + m.skipped.len(), e.lines.len());
            for n in &m.notifications {
                prop_assert!(!n.ticket().unwrap().is_empty());
                prop_assert!(e.lines[n.line].from_elevate);
                prop_assert!(n.customer_key.is_none() && n.session_key.is_none());
            }
        }
    }
}
