//! Send: one notification through the layers, outermost first — concurrency slot, rate limit,
//! retry (classifying each answer), the client's exchange within the per-attempt timeout
//! ([`crate::client`]). Guarantees: returns `Delivered` only on a 204; `Park` only for an answer
//! about the record itself (400, 409, 413, 414, 422, 431), a request that cannot be built (its
//! URL is not a valid URI), or a spent transient budget (never for configuration-class answers,
//! which are retried without limit and logged loudly, at most once per 30 s per status);
//! `Abandoned` only when the caller says the record is no longer ours.
//!
//! Every attempt, first or retry, takes a concurrency slot and then its rate tokens, and leaves at
//! once, so the quota bounds every request Elevate sees at its door ([`crate::limit`]); backoff
//! sleeps hold neither. Answer excerpts are scrubbed of the request's personal keys before they
//! are cut to length, logged or parked.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use tokio::sync::Semaphore;

use crate::classify::{answer_text, classify_status, classify_transport, excerpt, Class, TransportError};
use crate::client::{Answer, Client, ClientError, WireRequest};
use crate::config::Secret;
use crate::config::{ElevateConfig, RetryConfig};
use crate::deadletter::{ParkCause, ParkReason};
use crate::limit::Limiter;
use crate::metrics::{label, Metrics};
use crate::request::{build, endpoint_for, wire_request, Endpoint, HttpRequest};
use crate::retry::{Backoff, Charge, Next};
use crate::route::Kind;
use crate::select::Notification;
use crate::util::lock;

/// How sending one notification ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Elevate answered 204.
    Delivered {
        /// Attempts it took.
        attempts: u32,
    },
    /// Must go to the dead-letter topic.
    Park(ParkReason),
    /// The record stopped being ours (partition revoked, or shutdown): nothing to complete.
    Abandoned,
}

/// What one attempt ([`Sender::step`]) left to do.
#[derive(Debug)]
pub enum Step {
    /// Sending is over.
    Done(Outcome),
    /// Step again after this wait (backoff, or the answer's `Retry-After`).
    RetryAfter(Duration),
}

/// The result of one HTTP attempt.
#[derive(Debug, Clone)]
struct Attempt {
    /// The class of the answer.
    class: Class,
    /// The status, if any.
    status: Option<u16>,
    /// Label for metrics: the status or the transport error kind (no allocation for a 204 or
    /// a transport error: one attempt per notification builds it).
    label: Cow<'static, str>,
    /// What the answer said (a JSON `message` or the body; only read for answers other than
    /// 204): raw until [`Sender::send`] scrubs and cuts it.
    excerpt: String,
}

/// Sends notifications to Elevate. Share it in an `Arc`.
pub struct Sender {
    /// The innermost layer: one exchange, within the request timeout ([`crate::client`]).
    client: Client,
    /// The endpoint of each kind, in [`Kind::ALL`] order.
    endpoints: Vec<Endpoint>,
    /// The payment kind's `Api-Key` (`elevate.payment_api_key`), if configured: a header value
    /// marked sensitive, so it never prints.
    api_key: Option<HeaderValue>,
    /// Which visitor headers to forward (User-Agent; X-Forwarded-For per consent level).
    forward_visitor: crate::request::Forwarding,
    /// Rate quotas.
    limiter: Arc<Limiter>,
    /// Concurrency bound (max requests in flight).
    slots: Semaphore,
    /// Backoff and budget.
    retry: RetryConfig,
    /// Series to update.
    metrics: Arc<Metrics>,
    /// `notifications_total{outcome="delivered",status="204"}`, the hot series, resolved once.
    delivered_204: prometheus_client::metrics::counter::Counter,
    /// Last loud log line per configuration-class status.
    loud: Mutex<HashMap<String, Instant>>,
}

/// Why the sender could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    /// The config's base URL is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The HTTP client could not be set up.
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl Sender {
    /// Builds the client and layers from config.
    pub fn new(
        elevate: &ElevateConfig,
        retry: &RetryConfig,
        limiter: Arc<Limiter>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SenderError> {
        let base = elevate.base_url()?;
        let client = Client::new(elevate)?;
        let delivered_204 = metrics
            .notifications
            .get_or_create(&vec![("outcome", "delivered".into()), ("status", "204".into())])
            .clone();
        let api_key = match &elevate.payment_api_key {
            Some(src) => Some(api_key_header(&src.resolve("elevate.payment_api_key")?)?),
            None => None,
        };
        Ok(Sender {
            client,
            endpoints: Kind::ALL
                .iter()
                .map(|k| Endpoint::new(endpoint_for(&base, *k)))
                .collect(),
            api_key,
            forward_visitor: crate::request::Forwarding::from_config(elevate),
            limiter,
            slots: Semaphore::new(elevate.max_in_flight_requests),
            retry: retry.clone(),
            delivered_204,
            metrics,
            loud: Mutex::new(HashMap::new()),
        })
    }

    /// Whether a request to `market` waits for a quota of its own before its slot
    /// ([`Limiter::paces_market`]).
    pub(crate) fn paces_market(&self, market: &str) -> bool {
        self.limiter.paces_market(market)
    }

    /// The request `n` maps to (for dry runs and `check --sample`).
    pub fn request_for(&self, n: &Notification) -> HttpRequest {
        build(self.endpoint(n.route.kind).url(), n, self.forward_visitor)
    }

    /// The request of one attempt at `n` ([`wire_request`]).
    fn wire(&self, n: &Notification) -> Result<WireRequest, http::Error> {
        wire_request(
            self.endpoint(n.route.kind),
            n,
            self.forward_visitor,
            self.api_key.as_ref(),
        )
    }

    /// The endpoint of `kind`.
    fn endpoint(&self, kind: Kind) -> &Endpoint {
        let i = Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        &self.endpoints[i]
    }

    /// Sends `n` until it is delivered, must be parked, or `still_ours()` turns false.
    ///
    /// Memory: thousands of these may wait for a slot at once (`pipeline.max_pending_notifications`;
    /// those of a route or market with a quota of its own, and of Avro or Protobuf records), so the
    /// waiting state is kept small. Each attempt builds its request once it is admitted
    /// and moves it into the client (a retry builds it again: rarer and cheaper than cloning a
    /// kept request for every first attempt), and the client's exchange (which holds no request)
    /// is boxed only while it runs (docs/performance.md, "Memory").
    pub async fn send(&self, n: &Notification, still_ours: impl Fn() -> bool) -> Outcome {
        self.send_on(n, Backoff::new(), still_ours).await
    }

    /// [`Sender::send`] from the state `backoff` left it in: after a [`Step::RetryAfter`] of
    /// [`Sender::step`], once its wait is over.
    pub(crate) async fn send_on(
        &self,
        n: &Notification,
        mut backoff: Backoff,
        still_ours: impl Fn() -> bool,
    ) -> Outcome {
        loop {
            let wait = match self.step(n, &mut backoff, &still_ours).await {
                Step::Done(outcome) => return outcome,
                Step::RetryAfter(wait) => wait,
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt of [`Sender::send`] (admission, request, answer): its outcome, or how long
    /// to wait before the next attempt (the caller waits, holding nothing, then steps again with
    /// the same `backoff`).
    pub(crate) async fn step(
        &self,
        n: &Notification,
        backoff: &mut Backoff,
        still_ours: &impl Fn() -> bool,
    ) -> Step {
        if !still_ours() {
            return Step::Done(Outcome::Abandoned);
        }
        let (attempt, took) = {
            // A record whose partition is revoked while it waits leaves the queue without
            // a token: it is its new owner's to send.
            let Some(admitted) = self.limiter.admit(&n.market, &self.slots, still_ours).await else {
                return Step::Done(Outcome::Abandoned);
            };
            self.metrics
                .limiter_wait_seconds
                .inc_by(admitted.waited.as_secs_f64());
            let req = match self.wire(n) {
                Ok(req) => req,
                Err(e) => return Step::Done(unbuildable(n, &e, backoff.attempts)),
            };
            self.metrics.in_flight_requests.inc();
            let (mut a, took) = self.attempt(req).await;
            self.metrics.in_flight_requests.dec();
            drop(admitted);
            if !a.excerpt.is_empty() {
                a.excerpt = excerpt(&scrub(&a.excerpt, n));
            }
            (a, took)
        };
        backoff.attempts += 1;
        let (charge, retry_after) = match attempt.class {
            Class::Delivered => {
                self.delivered_204.inc();
                return Step::Done(Outcome::Delivered {
                    attempts: backoff.attempts,
                });
            }
            Class::Rejected => {
                self.count("dead_lettered", &attempt.label);
                return Step::Done(Outcome::Park(ParkReason {
                    reason: ParkCause::Rejected,
                    detail: attempt.excerpt,
                    status: attempt.status,
                    attempts: backoff.attempts,
                    line: Some(n.line),
                    route: Some(n.route.name.to_string()),
                }));
            }
            Class::Transient { retry_after } => (Charge::Transient, retry_after),
            Class::Misconfigured => {
                self.metrics
                    .config_errors
                    .get_or_create(&label("status", &*attempt.label))
                    .inc();
                self.shout(&attempt, n.route.kind);
                (Charge::Free, None)
            }
        };
        let unit: f64 = rand::random();
        match backoff.after_failure(&self.retry, charge, took, retry_after, unit) {
            Next::RetryAfter(wait) => {
                let class = match charge {
                    Charge::Transient => "transient",
                    Charge::Free => "misconfigured",
                };
                self.metrics
                    .retries
                    .get_or_create(&vec![
                        ("class", class.into()),
                        ("status", attempt.label.to_string()),
                    ])
                    .inc();
                tracing::debug!(status = %attempt.label, attempts = backoff.attempts, wait_ms = wait.as_millis() as u64, "retrying notification");
                Step::RetryAfter(wait)
            }
            Next::GiveUp => {
                self.count("dead_lettered", &attempt.label);
                Step::Done(Outcome::Park(ParkReason {
                    reason: ParkCause::RetriesExhausted,
                    detail: format!(
                        "gave up after {} attempts ({} transient, {} ms of transient failure): last answer {}",
                        backoff.attempts,
                        backoff.transient_attempts,
                        backoff.charged().as_millis(),
                        attempt.label
                    ),
                    status: attempt.status,
                    attempts: backoff.attempts,
                    line: Some(n.line),
                    route: Some(n.route.name.to_string()),
                }))
            }
        }
    }

    fn count(&self, outcome: &str, status: &str) {
        self.metrics
            .notifications
            .get_or_create(&vec![("outcome", outcome.into()), ("status", status.into())])
            .inc();
    }

    /// One loud line per status per 30 s: configuration errors stall the stream by design.
    fn shout(&self, a: &Attempt, kind: Kind) {
        let mut loud = lock(&self.loud);
        let due = loud
            .get(&*a.label)
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(30));
        if due {
            loud.insert(a.label.to_string(), Instant::now());
            tracing::error!(
                status = %a.label,
                endpoint = %self.endpoint(kind).url(),
                body = %a.excerpt,
                "Elevate answered with a configuration-class status: check elevate.cluster_id / elevate.base_url. \
                 Notifications are retried (never dead-lettered) until this is fixed; the stream is stalled"
            );
        }
    }

    /// One exchange, classified, and how long it took. The exchange takes `req` at once and is
    /// boxed while it runs, so a waiting send stays small (`a_waiting_send_is_small`) and the box
    /// is a copy of about 400 bytes: the exchange holds no request.
    fn attempt(&self, req: WireRequest) -> impl Future<Output = (Attempt, Duration)> + '_ {
        let exchange = Box::pin(self.client.exchange(req));
        async move {
            let start = Instant::now();
            let result = exchange.await;
            let took = start.elapsed();
            (self.judge(result, took), took)
        }
    }

    /// One exchange's result, classified; `took` is observed as `request_duration`.
    fn judge(&self, result: Result<Answer, TransportError>, took: Duration) -> Attempt {
        self.metrics.request_duration.observe(took.as_secs_f64());
        let answer = match result {
            Err(kind) => return transport(kind),
            Ok(a) => a,
        };
        let status = answer.status;
        let excerpt = if answer.body.is_empty() {
            String::new()
        } else {
            answer_text(&answer.body)
        };
        Attempt {
            class: classify_status(status, answer.retry_after.as_deref()),
            status: Some(status),
            label: match status {
                204 => Cow::Borrowed("204"),
                _ => Cow::Owned(status.to_string()),
            },
            excerpt,
        }
    }
}

/// The `Api-Key` header value, marked sensitive; the error never shows the key.
fn api_key_header(key: &Secret) -> Result<HeaderValue, SenderError> {
    let mut v = HeaderValue::from_str(key.expose()).map_err(|_| {
        crate::config::ConfigError::invalid(
            "elevate.payment_api_key",
            "is not a valid header value (visible ASCII only)",
        )
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// Replaces the notification's customerKey/sessionKey values in an answer's text: Elevate may
/// echo query values back, and excerpts reach logs and headers. Whole tokens only, in every
/// encoding (see [`scrub_key`]).
fn scrub(text: &str, n: &Notification) -> String {
    let mut out = text.to_string();
    for (value, placeholder) in [
        (&n.customer_key, "<customerKey>"),
        (&n.session_key, "<sessionKey>"),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            out = scrub_key(&out, v, placeholder);
        }
    }
    out
}

/// Every whole-token occurrence of `key` in `text` replaced by `placeholder`. An occurrence may be
/// literal, percent-encoded (either hex case, any mix of encoded and plain bytes) or
/// form-encoded (`+` for a space). It is whole when it is not glued to a word character
/// (alphanumeric or `_`) on a side where the key itself ends in one: a key `4` leaves `HTTP 400`
/// alone but not `customerKey=4&`. Errs on the side of privacy: a key that is also a word of the
/// answer (`a`, `bad`) is replaced there too.
fn scrub_key(text: &str, key: &str, placeholder: &str) -> String {
    let (t, k) = (text.as_bytes(), key.as_bytes());
    let glue_left = key.chars().next().is_some_and(is_word_char);
    let glue_right = key.chars().next_back().is_some_and(is_word_char);
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut i) = (0, 0);
    while i < t.len() {
        let whole_start = text.is_char_boundary(i) && !(glue_left && word_before(text, i));
        let end = if whole_start {
            match_ends(t, i, k)
                .into_iter()
                .rev()
                .find(|&e| text.is_char_boundary(e) && !(glue_right && word_at(text, e)))
        } else {
            None
        };
        match end {
            Some(e) => {
                out.push_str(&text[copied..i]);
                out.push_str(placeholder);
                (copied, i) = (e, e);
            }
            None => i += 1,
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// Where a match of `key` starting at `start` can end (ascending), each key byte matched as
/// itself, as `%XX`, or (a space) as `+`.
fn match_ends(t: &[u8], start: usize, key: &[u8]) -> Vec<usize> {
    let mut ends = vec![start];
    for &b in key {
        let mut next = Vec::with_capacity(ends.len());
        for &j in &ends {
            if t.get(j) == Some(&b) || (b == b' ' && t.get(j) == Some(&b'+')) {
                next.push(j + 1);
            }
            if percent_at(t, j) == Some(b) {
                next.push(j + 3);
            }
        }
        if next.is_empty() {
            return next;
        }
        next.sort_unstable();
        next.dedup();
        ends = next;
    }
    ends
}

/// The byte `%XX` at `j` encodes, if it is one.
fn percent_at(t: &[u8], j: usize) -> Option<u8> {
    match t.get(j..j + 3)? {
        [b'%', hi, lo] => {
            let hex = |c: u8| (c as char).to_digit(16);
            Some((hex(*hi)? * 16 + hex(*lo)?) as u8)
        }
        _ => None,
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// A decoded byte is a word character: ASCII alphanumeric or `_`, or part of a non-ASCII character.
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// Whether the (decoded) character just before byte `i` is a word character.
fn word_before(text: &str, i: usize) -> bool {
    if let Some(b) = i.checked_sub(3).and_then(|j| percent_at(text.as_bytes(), j)) {
        return is_word_byte(b);
    }
    text[..i].chars().next_back().is_some_and(is_word_char)
}

/// Whether the (decoded) character at byte `i` is a word character.
fn word_at(text: &str, i: usize) -> bool {
    if let Some(b) = percent_at(text.as_bytes(), i) {
        return is_word_byte(b);
    }
    text[i..].chars().next().is_some_and(is_word_char)
}

/// A notification whose request cannot be built (its URL is not a valid URI: longer than `http`
/// takes; a base URL no request can be sent to stops start-up) breaks the request contract:
/// parked, never retried.
fn unbuildable(n: &Notification, e: &http::Error, attempts: u32) -> Outcome {
    Outcome::Park(ParkReason {
        reason: ParkCause::Invalid(crate::decode::InvalidReason::BadValue),
        detail: format!("the request could not be built: {e}"),
        status: None,
        attempts,
        line: Some(n.line),
        route: Some(n.route.name.to_string()),
    })
}

fn transport(kind: TransportError) -> Attempt {
    Attempt {
        class: classify_transport(kind),
        status: None,
        label: Cow::Borrowed(kind.as_str()),
        excerpt: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keyed(customer: &str, session: &str) -> Notification {
        Notification {
            route: Default::default(),
            body: crate::select::Body::Ticket("t".into()),
            market: "SE".into(),
            customer_key: Some(customer.into()),
            session_key: Some(session.into()),
            user_context: None,
            user_agent: None,
            visitor_ip: None,
            line: 0,
            event_time_ms: None,
            trace: Vec::new(),
        }
    }

    /// Thousands of notifications may wait for a slot at once. Those of a route or market with a
    /// quota of its own wait as a `send` future (the others wait in `work`'s pool as plain data).
    /// Built with the request and the HTTP client's attempt future inline it was 1,280 bytes; the
    /// request is now built once admitted and the attempt boxed while it runs.
    #[tokio::test]
    async fn a_waiting_send_is_small() {
        let c = crate::config::Config::from_toml_with_env(
            "[kafka]\ntopics = [\"a\"]\n[elevate]\nbase_url = \"http://h\"\n",
            " (test)",
            std::iter::empty::<(String, String)>(),
        )
        .unwrap();
        let sender = Sender::new(
            &c.elevate,
            &c.retry,
            Arc::new(Limiter::new(&c.rate)),
            Arc::new(Metrics::new()),
        )
        .unwrap();
        let n = keyed("4", "s-1");
        let waiting = sender.send(&n, || true);
        let size = std::mem::size_of_val(&waiting);
        assert!(size <= 640, "a waiting send is {size} bytes");
    }

    #[test]
    fn scrub_replaces_whole_tokens_only() {
        let n = keyed("4", "s-1");
        assert_eq!(
            scrub("HTTP 400: customerKey=4&market=SE, 14 or 4a", &n),
            "HTTP 400: customerKey=<customerKey>&market=SE, 14 or 4a"
        );
    }

    #[test]
    fn scrub_catches_every_encoding_of_a_key() {
        let n = keyed("cust 42/ä", "sess-9");
        for echoed in [
            "cust 42/ä",
            "cust+42%2F%C3%A4",
            "cust%2042%2F%C3%A4",
            "cust%2042%2f%c3%a4",
            "cust%2042/ä",
        ] {
            assert_eq!(
                scrub(&format!("bad customerKey={echoed}&market=SE"), &n),
                "bad customerKey=<customerKey>&market=SE",
                "{echoed}"
            );
        }
    }

    /// Every encoding a server might echo a key in.
    fn encodings(key: &str) -> Vec<String> {
        let form: String = url::form_urlencoded::byte_serialize(key.as_bytes()).collect();
        let pct = form.replace('+', "%20");
        let mut lower = String::new();
        let mut hex_left = 0u8;
        for c in pct.chars() {
            lower.push(if hex_left > 0 { c.to_ascii_lowercase() } else { c });
            hex_left = if c == '%' { 2 } else { hex_left.saturating_sub(1) };
        }
        vec![key.to_string(), form, pct, lower]
    }

    proptest! {
        /// An echoed key, in any encoding, between separators, never survives.
        #[test]
        fn scrub_never_leaks_an_echoed_key(
            key in "[A-Za-z0-9]([A-Za-z0-9 ._~+%/ä-]{0,10}[A-Za-z0-9])?",
            pre in "[A-Za-z0-9]{0,6}",
            post in "[A-Za-z0-9]{0,6}",
            seps in ("[ =&:,\"'()]", "[ =&:,\"'()]"),
            which in 0usize..4,
        ) {
            let enc = encodings(&key)[which].clone();
            let middle = format!("{}{enc}{}", seps.0, seps.1);
            let text = format!("{pre}{middle}{post}");
            let out = scrub(&text, &keyed(&key, "unrelated-session"));
            prop_assert!(out.contains("<customerKey>"), "{text:?} -> {out:?}");
            prop_assert!(!out.contains(&middle), "{text:?} -> {out:?}");
            prop_assert_eq!(scrub(&out, &keyed(&key, "unrelated-session")), out.clone(), "idempotent");
        }

        /// A key glued to other word characters is another token: the text is left alone.
        #[test]
        fn scrub_never_corrupts_a_longer_token(
            key in "[A-Za-z0-9]{1,6}",
            before in "[A-Za-z0-9_]{0,3}",
            after in "[A-Za-z0-9_]{0,3}",
        ) {
            prop_assume!(!before.is_empty() || !after.is_empty());
            prop_assume!(key != "HTTP" && key != "x");
            let text = format!("HTTP {before}{key}{after} x");
            prop_assert_eq!(scrub(&text, &keyed(&key, &key)), text);
        }
    }

    #[test]
    fn excerpts_never_carry_personal_keys() {
        let n = Notification {
            route: Default::default(),
            body: crate::select::Body::Ticket("t".into()),
            market: "SE".into(),
            customer_key: Some("cust 42".into()),
            session_key: Some("sess-9".into()),
            user_context: None,
            user_agent: None,
            visitor_ip: None,
            line: 0,
            event_time_ms: None,
            trace: Vec::new(),
        };
        let s = scrub("bad customerKey=cust+42 (cust 42), session sess-9", &n);
        assert_eq!(
            s,
            "bad customerKey=<customerKey> (<customerKey>), session <sessionKey>"
        );
    }
}
