//! Accept loop, per-connection HTTP/1.1 serving, request handling and the `/_standin/` control API.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch};

use super::{
    check, check_status, now_ms, Accepted, Faults, Inner, Kind, Limits, Listening, Parts, Rejection, StandIn,
    State, Valid,
};

/// Largest request body read when no body limit is set; larger ones get 400.
const MAX_BODY: usize = 1 << 20;
/// With a body limit set, bodies are read (and thrown away) up to this size, or the limit if
/// larger, before the 413: closing on unread data would reset the connection and the client would
/// see an error instead of the answer (servers "linger" for the same reason).
const DRAIN_CAP: usize = 16 << 20;
/// Prefix of the control API.
const CONTROL_PREFIX: &str = "/_standin/";
/// How long in-flight requests get to finish when connections are closed.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

type Resp = Response<Full<Bytes>>;

/// Binds a listening socket with `SO_REUSEADDR`, so an outage can end on the same port.
pub(super) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Spawns the accept loop; it ends (dropping the socket) when `Listening::stop` fires.
pub(super) fn spawn_accept_loop(inner: Arc<Inner>, listener: TcpListener) -> Listening {
    let (stop, mut stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                _ = &mut stop_rx => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => {
                        let close = inner.close_connections.subscribe();
                        tokio::spawn(serve_connection(inner.clone(), stream, close));
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::debug!(error = %e, "stand-in accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
            }
        }
    });
    Listening { stop, task }
}

async fn serve_connection(inner: Arc<Inner>, stream: TcpStream, mut close: watch::Receiver<u64>) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| handle(inner.clone(), req));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = close.changed() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
}

/// Returned by the service to make hyper close the connection without answering.
#[derive(Debug)]
struct CloseWithoutAnswer;

impl fmt::Display for CloseWithoutAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stand-in closed the connection without answering")
    }
}

impl std::error::Error for CloseWithoutAnswer {}

/// What to do with one request.
enum Outcome {
    /// Answer with this response.
    Answer(Resp),
    /// Injected fault: close without answering.
    Drop,
    /// The client went away while sending the body.
    ClientGone,
}

async fn handle(inner: Arc<Inner>, req: Request<Incoming>) -> Result<Resp, CloseWithoutAnswer> {
    if req.uri().path().starts_with(CONTROL_PREFIX) {
        return Ok(control(StandIn { inner }, req).await);
    }
    let state = &inner.state;
    state.requests_total.fetch_add(1, Ordering::Relaxed);
    super::lock(&state.arrivals).push(super::now_us());
    match answer(state, req).await {
        Outcome::Answer(resp) => {
            state.count_status(resp.status().as_u16());
            Ok(resp)
        }
        Outcome::Drop => {
            state.dropped_total.fetch_add(1, Ordering::Relaxed);
            Err(CloseWithoutAnswer)
        }
        Outcome::ClientGone => Err(CloseWithoutAnswer),
    }
}

/// The stand-in's answer to one request, in the order Elevate's front would give it: the size
/// limits, the active faults (latency, drop, fixed status), a script for the ticket, throttling,
/// the contract check, the failure ratio; then the request is recorded and answered 204.
async fn answer(state: &State, req: Request<Incoming>) -> Outcome {
    let (parts, body) = req.into_parts();
    let body = match read_within_limits(state, &parts, body).await {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let faults = state.active_faults();
    if let Some(f) = &faults {
        if f.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(f.latency_ms)).await;
        }
        if state.should_drop(f) {
            return Outcome::Drop;
        }
        if let Some(status) = f.fixed_status {
            return Outcome::Answer(fault(status, f.retry_after_secs));
        }
    }
    let path = parts.uri.path();
    let mut scripted_204 = false;
    if Kind::from_path(path).is_some() && state.scripts_active.load(Ordering::Acquire) {
        if let Some(ticket) = peek_ticket(&body) {
            match state.next_scripted(&ticket) {
                None => {}
                Some(0) => return Outcome::Drop,
                Some(204) => scripted_204 = true,
                Some(status) => return Outcome::Answer(fault(status, state.faults().retry_after_secs)),
            }
        }
    }
    let unscripted = faults.as_ref().filter(|_| !scripted_204);
    if let Some(f) = unscripted {
        if state.should_throttle(f) {
            return Outcome::Answer(fault(429, f.retry_after_secs));
        }
    }
    let valid = match valid(state, &parts, &body) {
        Ok(v) => v,
        Err(rejection) => return Outcome::Answer(rejected(rejection)),
    };
    if let Some(f) = unscripted {
        if state.roll(f.failure_ratio) {
            return Outcome::Answer(fault(500, f.retry_after_secs));
        }
    }
    state.record(accepted(valid, &parts.headers));
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Outcome::Answer(resp)
}

/// The body, read whole, when the request is within the size limits; else the answer to it
/// (413 over a set body limit, 400 over 1 MiB, the limits' own answers), or the client gone.
async fn read_within_limits(
    state: &State,
    parts: &hyper::http::request::Parts,
    body: Incoming,
) -> Result<Bytes, Outcome> {
    let limits = state.limits();
    let cap = limits.max_body_bytes.map_or(MAX_BODY, |l| l.max(DRAIN_CAP));
    let body = match Limited::new(body, cap).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            return Err(Outcome::Answer(match limits.max_body_bytes {
                Some(l) => message(413, &format!("request body larger than {l} bytes")),
                None => message(400, "request body larger than 1 MiB"),
            }))
        }
        Err(_) => return Err(Outcome::ClientGone),
    };
    match limits.check(
        parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len()),
        header_bytes(&parts.headers),
        body.len(),
    ) {
        Some((status, text)) => Err(Outcome::Answer(message(status, &text))),
        None => Ok(body),
    }
}

/// The request checked against the contract (`check`), or why it is refused.
fn valid(state: &State, parts: &hyper::http::request::Parts, body: &Bytes) -> Result<Valid, Rejection> {
    let text = |name: &str| {
        parts
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("(not visible ASCII)"))
    };
    let request = Parts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        content_type: text(CONTENT_TYPE.as_str()),
        query: parts.uri.query(),
        api_key: text("api-key"),
        body,
    };
    check(&request, state.api_key().as_deref())
}

/// The answer to a request the contract check refused: its status and message (and `Allow` on
/// a 405).
fn rejected(rejection: Rejection) -> Response<Full<Bytes>> {
    let mut resp = message(rejection.status, &rejection.message);
    if rejection.status == 405 {
        resp.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
    }
    resp
}

/// What the stand-in records of an accepted request.
fn accepted(valid: Valid, headers: &HeaderMap) -> Accepted {
    Accepted {
        kind: valid.kind,
        ticket: valid.ticket,
        body: valid.body,
        market: valid.market,
        customer_key: valid.customer_key,
        session_key: valid.session_key,
        user_context: valid.user_context,
        user_agent: header_text(headers, &USER_AGENT),
        forwarded_for: header_text(headers, &HeaderName::from_static("x-forwarded-for")),
        traceparent: header_text(headers, &HeaderName::from_static("traceparent")),
        tracestate: header_text(headers, &HeaderName::from_static("tracestate")),
        received_at_ms: now_ms(),
    }
}

/// Size of the header section as a server counts it: name, `: `, value, CRLF per header.
fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// A header's values as text, repeated headers joined with ", ".
fn header_text(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
    let first = values.next()?;
    let mut out = first.to_owned();
    for v in values {
        out.push_str(", ");
        out.push_str(v);
    }
    Some(out)
}

/// The ticket of a body, for script lookup (lenient: anything unusable is `None`).
fn peek_ticket(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Peek {
        /// The body's ticket, when it is a string.
        ticket: Option<String>,
    }
    serde_json::from_slice::<Peek>(body).ok()?.ticket
}

/// An injected answer; 429 carries `Retry-After`.
fn fault(status: u16, retry_after_secs: u64) -> Resp {
    let mut resp = message(status, &format!("injected fault: status {status}"));
    if status == 429 {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
    }
    resp
}

/// `{"message": ..}` with `status`.
fn message(status: u16, text: &str) -> Resp {
    #[derive(Serialize)]
    struct Message<'a> {
        /// What was wrong.
        message: &'a str,
    }
    json(status, &Message { message: text })
}

fn json<T: Serialize>(status: u16, value: &T) -> Resp {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `GET /_standin/stats`.
#[derive(Serialize)]
struct Stats {
    /// Requests on the Elevate side, answered or dropped.
    requests_total: u64,
    /// Requests accepted (204 and recorded).
    accepted: usize,
    /// Connections closed without answering (injected).
    dropped: u64,
    /// The most requests that arrived within any one second.
    max_requests_in_1s: usize,
    /// Answers by status code.
    by_status: std::collections::BTreeMap<u16, u64>,
}

/// `POST /_standin/script`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptRequest {
    /// Ticket the script applies to.
    ticket: String,
    /// Statuses to answer in order (204: per contract, 0: drop the connection).
    statuses: Vec<u16>,
}

/// `POST /_standin/outage`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutageRequest {
    /// How long to refuse connections.
    seconds: f64,
}

/// `POST /_standin/dump` (body optional).
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct DumpRequest {
    /// Where to write; defaults to the configured dump path.
    path: Option<PathBuf>,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))
}

/// `POST /_standin/script`: the statuses to answer for one ticket, each checked first.
fn script(state: &State, body: &[u8]) -> Resp {
    let s = match parse::<ScriptRequest>(body) {
        Ok(s) => s,
        Err(m) => return message(400, &m),
    };
    if let Some(e) = s
        .statuses
        .iter()
        .filter(|&&st| st != 0)
        .find_map(|&st| check_status(st).err())
    {
        return message(400, &e);
    }
    let n = s.statuses.len();
    state.script(s.ticket, s.statuses);
    message(200, &format!("scripted {n} statuses"))
}

/// `POST /_standin/dump`: the accepted requests as JSON lines, to the path asked for or the
/// configured one.
async fn dump(standin: &StandIn, body: &[u8]) -> Resp {
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        DumpRequest::default()
    } else {
        match parse::<DumpRequest>(body) {
            Ok(r) => r,
            Err(m) => return message(400, &m),
        }
    };
    let path = request.path.or_else(|| standin.inner.dump_path.clone());
    let Some(path) = path else {
        return message(400, "no dump path configured; send {\"path\": ..}");
    };
    match standin.dump_jsonl(&path).await {
        Ok(n) => message(200, &format!("wrote {n} lines to {}", path.display())),
        Err(e) => message(500, &format!("could not write {}: {e}", path.display())),
    }
}

async fn control(standin: StandIn, req: Request<Incoming>) -> Resp {
    let method = req.method().clone();
    let endpoint = req.uri().path()[CONTROL_PREFIX.len()..].to_owned();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return message(400, &format!("could not read body: {e}")),
    };
    let state = &standin.inner.state;
    match (method.as_str(), endpoint.as_str()) {
        ("GET", "stats") => json(
            200,
            &Stats {
                requests_total: standin.requests_total(),
                accepted: standin.accepted_count(),
                dropped: standin.dropped_total(),
                max_requests_in_1s: standin.max_arrivals_in(Duration::from_secs(1)),
                by_status: standin.status_counts(),
            },
        ),
        ("GET", "accepted") => {
            let (bytes, _) = state.accepted_jsonl();
            let mut resp = Response::new(Full::new(Bytes::from(bytes)));
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
            resp
        }
        ("GET", "faults") => json(200, &standin.faults()),
        ("GET", "limits") => json(200, &standin.limits()),
        ("POST", "limits") => match parse::<Limits>(&body) {
            Err(m) => message(400, &m),
            Ok(l) => {
                standin.set_limits(l);
                json(200, &l)
            }
        },
        ("POST", "faults") => match parse::<Faults>(&body) {
            Err(m) => message(400, &m),
            Ok(f) => match f.check() {
                Err(m) => message(400, &m),
                Ok(()) => {
                    state.set_faults(f);
                    json(200, &f)
                }
            },
        },
        ("DELETE", "faults") => {
            standin.clear_faults();
            json(200, &standin.faults())
        }
        ("POST", "script") => script(state, &body),
        ("POST", "outage") => match parse::<OutageRequest>(&body) {
            Err(m) => message(400, &m),
            Ok(o) if !(o.seconds.is_finite() && (0.0..=86_400.0).contains(&o.seconds)) => {
                message(400, "`seconds` must be within 0..=86400")
            }
            Ok(o) => {
                // This connection is closed right after this answer, like every other.
                standin.outage_for(Duration::from_secs_f64(o.seconds)).await;
                message(202, &format!("refusing connections for {} s", o.seconds))
            }
        },
        ("POST", "reset") => {
            standin.reset();
            message(200, "reset")
        }
        ("POST", "dump") => dump(&standin, &body).await,
        _ => message(
            404,
            &format!(
                "unknown control endpoint {method} {CONTROL_PREFIX}{endpoint}; try GET \
                 stats|accepted|faults|limits, POST faults|limits|script|outage|reset|dump, DELETE faults"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_ticket_is_lenient() {
        assert_eq!(peek_ticket(br#"{"ticket":"a","x":1}"#).as_deref(), Some("a"));
        assert_eq!(peek_ticket(br#"{"ticket":5}"#), None);
        assert_eq!(peek_ticket(b"nope"), None);
    }

    #[test]
    fn fault_429_has_retry_after() {
        let r = fault(429, 7);
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[RETRY_AFTER], "7");
        assert!(fault(500, 7).headers().get(RETRY_AFTER).is_none());
    }

    #[test]
    fn header_text_joins_repeats() {
        let mut h = HeaderMap::new();
        let xff = HeaderName::from_static("x-forwarded-for");
        assert_eq!(header_text(&h, &xff), None);
        h.append(&xff, HeaderValue::from_static("1.2.3.4"));
        h.append(&xff, HeaderValue::from_static("5.6.7.8"));
        assert_eq!(header_text(&h, &xff).as_deref(), Some("1.2.3.4, 5.6.7.8"));
    }

    #[test]
    fn faults_round_trip_and_check() {
        let f: Faults = serde_json::from_str(r#"{"failure_ratio":0.5,"fixed_status":401}"#).unwrap();
        assert_eq!(f.retry_after_secs, 1);
        assert_eq!(f.fixed_status, Some(401));
        f.check().unwrap();
        assert!(serde_json::from_str::<Faults>(r#"{"nope":1}"#).is_err());
        let bad = Faults {
            drop_ratio: 1.5,
            ..Faults::default()
        };
        assert!(bad.check().unwrap_err().contains("drop_ratio"));
        let bad = Faults {
            fixed_status: Some(1000),
            ..Faults::default()
        };
        assert!(bad.check().is_err());
    }
}
