//! Client: one HTTP exchange with Elevate, the innermost layer of [`crate::send`] — hyper-util's
//! pooled client (keep-alive, HTTP/1.1, HTTP/2 when TLS offers it) over rustls with the webpki
//! roots. Guarantees: an exchange ends within `elevate.request_timeout` (one timer: the answer's
//! head and, for anything but a 204, the first 4 KiB of its body, the rest is dropped); redirects
//! are never followed and answers are never decompressed (nothing asks for an encoding).
//!
//! Why not reqwest here: for our one request shape reqwest adds work we do not need on every
//! request — its redirect layer parses the URL again even with `Policy::none()`, the URL is
//! turned into a URI again, and the answer is wrapped with a copy of the URL. On this machine the
//! same requests cost 21–25 µs of CPU each through reqwest and 11–13 µs through this client
//! (docs/performance.md, "The HTTP client"). reqwest stays for the schema registry, where it is
//! one request per schema.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, RETRY_AFTER, USER_AGENT};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::classify::TransportError;
use crate::config::ElevateConfig;

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
    /// Up to [`ANSWER_BODY_LIMIT`] bytes of the body; empty for a 204.
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
}

/// Sends requests to Elevate over pooled connections. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct Client {
    http: hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, WireBody>,
    /// Sent when the request carries no (forwarded) User-Agent of its own.
    user_agent: HeaderValue,
    /// The one timer of an exchange.
    timeout: Duration,
}

impl Client {
    /// The client `elevate` describes: connect and request timeouts, up to
    /// `max_in_flight_requests` idle connections kept for 60 s, `TCP_NODELAY`.
    pub fn new(elevate: &ElevateConfig) -> Result<Self, ClientError> {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(elevate.connect_timeout));
        tcp.enforce_http(false);
        let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(elevate.max_in_flight_requests)
            .build(https);
        Ok(Client {
            http,
            user_agent: HeaderValue::from_str(&elevate.user_agent).map_err(|_| ClientError::UserAgent)?,
            timeout: elevate.request_timeout,
        })
    }

    /// One exchange: sends `req` and reads the answer, within the request timeout.
    pub async fn exchange(&self, mut req: WireRequest) -> Result<Answer, TransportError> {
        req.headers_mut()
            .entry(USER_AGENT)
            .or_insert_with(|| self.user_agent.clone());
        match tokio::time::timeout(self.timeout, self.answer(req)).await {
            Ok(answer) => answer,
            Err(_) => Err(TransportError::Timeout),
        }
    }

    async fn answer(&self, req: WireRequest) -> Result<Answer, TransportError> {
        let resp = self.http.request(req).await.map_err(|e| {
            if e.is_connect() {
                TransportError::Connection
            } else {
                TransportError::Other
            }
        })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = if status == 204 {
            Bytes::new()
        } else {
            head_of(resp.into_body()).await
        };
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }
}

/// Up to [`ANSWER_BODY_LIMIT`] bytes of `body` (what arrived before an error, if one comes).
async fn head_of(mut body: hyper::body::Incoming) -> Bytes {
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

    fn client(timeout: Duration) -> Client {
        Client::new(&ElevateConfig {
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
        let a = client(Duration::from_secs(5))
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
        let a = client(Duration::from_secs(5))
            .exchange(post(&base, Some("Mozilla/5.0 (visitor)")))
            .await
            .unwrap();
        assert_eq!((a.status, a.body.len()), (204, 0));
        let head = server.await.unwrap();
        assert!(head.contains("user-agent: mozilla/5.0 (visitor)"), "{head}");
        assert!(!head.contains("sink-test"), "{head}");
    }

    #[tokio::test]
    async fn an_answer_slower_than_the_timeout_is_a_timeout_and_a_refused_connect_a_connection_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let c = client(Duration::from_millis(200));
        // Accepted (by the backlog) but never answered.
        assert_eq!(c.exchange(post(&base, None)).await, Err(TransportError::Timeout));
        drop(listener);
        assert_eq!(
            c.exchange(post(&base, None)).await,
            Err(TransportError::Connection)
        );
    }
}
