//! Client: one HTTP exchange with Elevate, the innermost layer of [`crate::send`] — hyper's
//! HTTP/1.1, or HTTP/2 when TLS negotiates it, over keep-alive connections to Elevate's one
//! origin ([`pool`]), over rustls with the webpki roots. Guarantees: an exchange ends within
//! `elevate.request_timeout` (one timer: a connection if one is needed, the answer's head and,
//! for anything but a 204, the first 4 KiB of its body, the rest is dropped); redirects are never
//! followed and answers are never decompressed (nothing asks for an encoding).
//!
//! Proxies: when the proxy environment (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, less
//! `NO_PROXY`, read as curl does) names a proxy for Elevate's base URL, requests go through
//! reqwest, which speaks to proxies, with the same settings and guarantees; that is how the sink
//! sent every request before it had this client.
//!
//! Why not reqwest here: for our one request shape reqwest adds work we do not need on every
//! request — its redirect layer parses the URL again even with `Policy::none()`, the URL is
//! turned into a URI again, and the answer is wrapped with a copy of the URL. On this machine the
//! same requests cost 21–25 µs of CPU each through reqwest and 11–13 µs through hyper-util's
//! client (docs/performance.md, "The HTTP client"), which this client then replaced with a pool
//! of its own for the one origin ([`pool`], "The twentieth round"). reqwest stays for the schema
//! registry, where it is one request per schema.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, RETRY_AFTER, USER_AGENT};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::proxy::matcher::{Intercept, Matcher};

use crate::classify::TransportError;
use crate::config::ElevateConfig;

mod pool;
use pool::{Connector, NoOrigin, Pool};

/// The body of every request we send: bytes in one piece.
pub type WireBody = Full<Bytes>;

/// A request as the client sends it ([`crate::request::wire_request`] builds it).
pub type WireRequest = http::Request<WireBody>;

/// How much of an answer's body other than a 204 is read (for the log and the dead letter).
pub const ANSWER_BODY_LIMIT: usize = 4096;

/// What Elevate answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// Up to `ANSWER_BODY_LIMIT` bytes of the body; empty for a 204.
    pub body: Bytes,
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// rustls refused the TLS settings.
    #[error("cannot set up TLS for Elevate: {0}")]
    Tls(#[from] rustls::Error),
    /// `elevate.user_agent` is not a valid header value.
    #[error("elevate.user_agent: not a valid header value")]
    UserAgent,
    /// reqwest refused the settings of the proxied transport.
    #[error("cannot set up the HTTP client for the proxy: {0}")]
    Proxied(#[from] reqwest::Error),
    /// `elevate`'s base URL is missing or invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// `elevate`'s base URL names no origin to keep connections to.
    #[error(transparent)]
    Origin(#[from] NoOrigin),
}

/// How requests leave. (One per process: the size of the larger variant costs nothing, a box
/// would cost an indirection per request.)
#[derive(Clone)]
#[allow(clippy::large_enum_variant)]
enum Transport {
    /// Our pool for Elevate's origin, straight to Elevate.
    Direct(Pool),
    /// reqwest, through the proxy the environment names for Elevate's host.
    Proxied(reqwest::Client),
}

/// Sends requests to Elevate over pooled connections. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct Client {
    http: Transport,
    /// Sent when the request carries no (forwarded) User-Agent of its own.
    user_agent: HeaderValue,
    /// The one timer of an exchange.
    timeout: Duration,
}

impl Client {
    /// The client `elevate` describes: connect and request timeouts, up to
    /// `max_in_flight_requests` idle connections kept for 60 s, `TCP_NODELAY`; through a proxy
    /// when the environment names one for `elevate`'s base URL. Fails when the base URL names no
    /// http(s) origin.
    pub fn new(elevate: &ElevateConfig) -> Result<Self, ClientError> {
        Self::with_proxies(elevate, &Matcher::from_env())
    }

    /// [`Client::new`] with the proxy rules given instead of read from the environment.
    pub fn with_proxies(elevate: &ElevateConfig, proxies: &Matcher) -> Result<Self, ClientError> {
        let base = elevate
            .base_url()?
            .as_str()
            .parse::<http::Uri>()
            .map_err(|_| NoOrigin)?;
        let http = match proxies.intercept(&base) {
            Some(proxy) => {
                // Host and port only: the proxy's address may carry credentials.
                let at = proxy.uri().authority().map(|a| (a.host(), a.port_u16()));
                tracing::info!(proxy = ?at, "Elevate requests go through the proxy the environment names");
                Transport::Proxied(proxied_client(elevate, &proxy)?)
            }
            None => Transport::Direct(Pool::new(
                &base,
                connector(elevate)?,
                elevate.max_in_flight_requests,
                Duration::from_secs(60),
            )?),
        };
        Ok(Client {
            http,
            user_agent: HeaderValue::from_str(&elevate.user_agent).map_err(|_| ClientError::UserAgent)?,
            timeout: elevate.request_timeout,
        })
    }

    /// Whether requests go through a proxy (reqwest).
    pub fn proxied(&self) -> bool {
        matches!(self.http, Transport::Proxied(_))
    }

    /// One exchange: sends `req` and reads the answer, within the request timeout.
    ///
    /// The request is handed to the transport before the returned future is first polled, so
    /// the future holds the transport's own (boxed) future and a timer, never the request: it is
    /// built without copying a request through each layer, and boxing it (as `send` does while
    /// it runs) copies about 400 bytes (docs/performance.md, "The eighteenth round"). Nothing is
    /// sent until the future is polled.
    pub fn exchange(
        &self,
        mut req: WireRequest,
    ) -> impl Future<Output = Result<Answer, TransportError>> + Send + 'static {
        req.headers_mut()
            .entry(USER_AGENT)
            .or_insert_with(|| self.user_agent.clone());
        let sent = match &self.http {
            Transport::Direct(pool) => Sent::Direct(pool.send(req)),
            Transport::Proxied(http) => Sent::Proxied(proxied(http, req)),
        };
        let timeout = self.timeout;
        async move {
            match tokio::time::timeout(timeout, sent.answer()).await {
                Ok(answer) => answer,
                Err(_) => Err(TransportError::Timeout),
            }
        }
    }
}

/// A request handed to its transport, not yet polled.
enum Sent {
    /// The pool's (boxed) future.
    Direct(Pin<Box<dyn Future<Output = Result<pool::Answered, TransportError>> + Send>>),
    /// reqwest's, boxed: the proxied path is the rare one.
    Proxied(Pin<Box<dyn Future<Output = Result<Answer, TransportError>> + Send>>),
}

impl Sent {
    /// The answer, once the transport brings it.
    async fn answer(self) -> Result<Answer, TransportError> {
        match self {
            Sent::Direct(sent) => {
                let (resp, lease) = sent.await?;
                let answer = answer_of(resp).await;
                lease.give_back();
                Ok(answer)
            }
            Sent::Proxied(answer) => answer.await,
        }
    }
}

/// TCP (`TCP_NODELAY`, the connect timeout) and, for `https`, rustls with the webpki roots,
/// offering HTTP/2 and HTTP/1.1 in ALPN (Elevate recommends HTTP/2).
fn connector(elevate: &ElevateConfig) -> Result<Connector, ClientError> {
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    connector_trusting(elevate, roots)
}

/// [`connector`] trusting `roots` (the tests' own CA).
fn connector_trusting(
    elevate: &ElevateConfig,
    roots: rustls::RootCertStore,
) -> Result<Connector, ClientError> {
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(elevate.connect_timeout));
    tcp.enforce_http(false);
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp))
}

/// reqwest with the same settings through `proxy` (with its credentials), no decompression, no
/// redirects (the exchange's own timer bounds it).
fn proxied_client(elevate: &ElevateConfig, proxy: &Intercept) -> Result<reqwest::Client, ClientError> {
    let mut via = reqwest::Proxy::all(proxy.uri().to_string())?;
    if let Some((user, password)) = proxy.raw_auth() {
        via = via.basic_auth(user, password);
    }
    Ok(reqwest::Client::builder()
        .no_proxy()
        .proxy(via)
        .connect_timeout(elevate.connect_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(elevate.max_in_flight_requests)
        .tcp_nodelay(true)
        .gzip(false)
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

fn connect_or_other(connect: bool) -> TransportError {
    if connect {
        TransportError::Connection
    } else {
        TransportError::Other
    }
}

/// `req` through reqwest: converted now, sent when polled.
fn proxied(
    http: &reqwest::Client,
    req: WireRequest,
) -> Pin<Box<dyn Future<Output = Result<Answer, TransportError>> + Send>> {
    let req = req.map(|b| b.into_inner().unwrap_or_default());
    let sent = reqwest::Request::try_from(req).map(|req| http.execute(req));
    Box::pin(async move {
        let resp = sent
            .map_err(|_| TransportError::Other)?
            .await
            .map_err(|e| connect_or_other(e.is_connect()))?;
        Ok(answer_of(http::Response::from(resp)).await)
    })
}

/// The answer in `resp`, whichever transport brought it: status, `Retry-After`, and the head of
/// the body unless it is a 204. The head is read at once, so the future holds only the body it
/// still has to read (it is part of every exchange's future).
fn answer_of<B>(resp: http::Response<B>) -> impl Future<Output = Answer> + Send
where
    B: hyper::body::Body<Data = Bytes> + Unpin + Send,
{
    let status = resp.status().as_u16();
    let retry_after = retry_after(resp.headers());
    let body = (status != 204).then(|| resp.into_body());
    async move {
        let body = match body {
            Some(body) => head_of(body).await,
            None => Bytes::new(),
        };
        Answer {
            status,
            retry_after,
            body,
        }
    }
}

fn retry_after(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Up to [`ANSWER_BODY_LIMIT`] bytes of `body` (what arrived before an error, if one comes).
async fn head_of<B: hyper::body::Body<Data = Bytes> + Unpin>(mut body: B) -> Bytes {
    let mut buf = Vec::new();
    while buf.len() < ANSWER_BODY_LIMIT {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            _ => break,
        }
    }
    buf.truncate(ANSWER_BODY_LIMIT);
    Bytes::from(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot HTTP server: answers the first request with `answer` and hands back the
    /// request's head as it arrived.
    async fn serve_once(answer: Vec<u8>) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = sock.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ended before its head");
                head.extend_from_slice(&buf[..n]);
            }
            sock.write_all(&answer).await.unwrap();
            String::from_utf8_lossy(&head).to_lowercase()
        });
        (base, task)
    }

    fn client(base: &str, timeout: Duration) -> Client {
        Client::new(&ElevateConfig {
            base_url: Some(base.to_string()),
            request_timeout: timeout,
            user_agent: "sink-test/1".into(),
            ..ElevateConfig::default()
        })
        .unwrap()
    }

    fn post(base: &str, user_agent: Option<&'static str>) -> WireRequest {
        let mut req = http::Request::new(WireBody::new(Bytes::from_static(b"{}")));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = format!("{base}/x?market=SE").parse().unwrap();
        if let Some(ua) = user_agent {
            req.headers_mut().insert(USER_AGENT, HeaderValue::from_static(ua));
        }
        req
    }

    #[tokio::test]
    async fn an_answer_keeps_its_status_retry_after_and_the_first_4_kib_of_its_body() {
        let body = "x".repeat(10_000);
        let answer = format!(
            "HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let (base, server) = serve_once(answer.into_bytes()).await;
        let a = client(&base, Duration::from_secs(5))
            .exchange(post(&base, None))
            .await
            .unwrap();
        assert_eq!(a.status, 429);
        assert_eq!(a.retry_after.as_deref(), Some("7"));
        assert_eq!(a.body.len(), ANSWER_BODY_LIMIT);
        let head = server.await.unwrap();
        assert!(head.contains("user-agent: sink-test/1"), "{head}");
        assert!(
            !head.contains("accept-encoding"),
            "nothing asks for a compressed answer: {head}"
        );
    }

    #[tokio::test]
    async fn a_forwarded_user_agent_is_kept() {
        let (base, server) = serve_once(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()).await;
        let a = client(&base, Duration::from_secs(5))
            .exchange(post(&base, Some("Mozilla/5.0 (visitor)")))
            .await
            .unwrap();
        assert_eq!((a.status, a.body.len()), (204, 0));
        let head = server.await.unwrap();
        assert!(head.contains("user-agent: mozilla/5.0 (visitor)"), "{head}");
        assert!(!head.contains("sink-test"), "{head}");
    }

    /// With a proxy named for Elevate's host, the request reaches the proxy in absolute form
    /// (reqwest's forwarding); `NO_PROXY` for the host sends it directly.
    #[tokio::test]
    async fn a_proxy_named_for_elevate_carries_the_request_and_no_proxy_skips_it() {
        let (proxy, server) = serve_once(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()).await;
        let elevate = ElevateConfig {
            base_url: Some("http://elevate.invalid".into()),
            ..ElevateConfig::default()
        };
        let rules = |no: &str| Matcher::builder().http(proxy.clone()).no(no.to_string()).build();
        assert!(!Client::with_proxies(&elevate, &rules("elevate.invalid"))
            .unwrap()
            .proxied());
        let c = Client::with_proxies(&elevate, &rules("")).unwrap();
        assert!(c.proxied());
        let a = c.exchange(post("http://elevate.invalid", None)).await.unwrap();
        assert_eq!(a.status, 204);
        let head = server.await.unwrap();
        assert!(
            head.starts_with("post http://elevate.invalid/x?market=se "),
            "{head}"
        );
        assert!(head.contains("user-agent: elevate-sink/"), "{head}");
    }

    #[tokio::test]
    async fn an_answer_slower_than_the_timeout_is_a_timeout_and_a_refused_connect_a_connection_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let c = client(&base, Duration::from_millis(200));
        // Accepted (by the backlog) but never answered.
        assert_eq!(c.exchange(post(&base, None)).await, Err(TransportError::Timeout));
        drop(listener);
        assert_eq!(
            c.exchange(post(&base, None)).await,
            Err(TransportError::Connection)
        );
    }
}
