//! Pool: keep-alive connections to Elevate's one origin (the base URL's scheme, host and port),
//! for [`super::Client`]. Guarantees: HTTP/1.1 connections are lent one request at a time, at
//! most `max_idle` of them wait idle, the most recently used is taken first, and none is taken
//! after waiting `idle_timeout`; when TLS negotiates HTTP/2 (ALPN offers `h2` and `http/1.1`), the
//! requests share that connection while it stays open. A request is sent again only when hyper
//! hands it back unwritten (the reused connection it was given had closed first); every other
//! failure is the caller's to classify and retry. Limits: requests for any other origin are not
//! its business (every request the sink builds goes under the base URL, `request::Endpoint`); idle
//! connections past `idle_timeout` are closed when the pool is next used, or by Elevate.
//!
//! Why not hyper-util's client: it serves any number of origins, so each request hashes its
//! origin (scheme and authority, with SipHash, byte by byte and lower-cased) to check a connection
//! out and again to put it back, formats the `Host` header anew, and goes through combinators
//! built for racing connects: about 10,600 of the 50,600 instructions of a typical notification
//! (docs/performance.md, "The twentieth round"). Here the origin, the `Host` value and the
//! connector are fixed when the pool is built. What it no longer does: dedupe the connects of a
//! burst that finds the pool empty; when they all negotiate HTTP/2, the last one is kept and the
//! others close after their one request.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{HeaderValue, HOST};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::TokioExecutor;
use tower_service::Service;

use super::{WireBody, WireRequest};
use crate::classify::TransportError;
use crate::util::lock;

/// The connector the pool dials with: TCP, then TLS for `https`.
pub type Connector = HttpsConnector<HttpConnector>;

/// A connection's sending half, lent to one exchange.
enum Conn {
    /// HTTP/1.1: this exchange's alone until it is given back.
    H1(http1::SendRequest<WireBody>),
    /// HTTP/2: a clone of the shared connection's handle.
    H2(http2::SendRequest<WireBody>),
}

/// Keep-alive connections to one origin. Cheap to clone (shared).
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Connector,
    /// `scheme://authority/`, what the connector dials.
    origin: http::Uri,
    /// The `Host` header of every HTTP/1.1 request: the host, and the port unless it is the
    /// scheme's own.
    host: HeaderValue,
    conns: Mutex<Conns>,
    max_idle: usize,
    idle_timeout: Duration,
}

/// The connections not lent out.
struct Conns {
    /// Idle HTTP/1.1 connections, the most recently used at the back.
    idle: VecDeque<Idle>,
    /// The HTTP/2 connection, when the origin negotiated one.
    h2: Option<http2::SendRequest<WireBody>>,
}

struct Idle {
    conn: http1::SendRequest<WireBody>,
    since: Instant,
}

/// The answer's head, and the connection it came on, to [`Lease::give_back`] once its body is
/// read.
pub type Answered = (http::Response<Incoming>, Lease);

/// A connection lent to one exchange.
pub struct Lease {
    conn: Conn,
    pool: Pool,
}

/// Why a pool could not be built. It names the key, not the URL, which may carry credentials.
#[derive(Debug, thiserror::Error)]
#[error("elevate.base_url: needs an http or https URL with a host (the URL is not shown: it may carry credentials)")]
pub struct NoOrigin;

impl Pool {
    /// A pool for the origin of `base`, dialling with `connector`.
    pub fn new(
        base: &http::Uri,
        connector: Connector,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Result<Pool, NoOrigin> {
        let (scheme, authority) = match (base.scheme(), base.authority()) {
            (Some(s), Some(a)) if matches!(s.as_str(), "http" | "https") => (s.clone(), a.clone()),
            _ => return Err(NoOrigin),
        };
        let default_port = if scheme == http::uri::Scheme::HTTPS {
            443
        } else {
            80
        };
        let host = match authority.port_u16() {
            Some(port) if port != default_port => format!("{}:{port}", authority.host()),
            _ => authority.host().to_string(),
        };
        let origin = http::Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query("/")
            .build()
            .map_err(|_| NoOrigin)?;
        let conns = Conns {
            idle: VecDeque::with_capacity(max_idle),
            h2: None,
        };
        Ok(Pool {
            inner: Arc::new(Inner {
                connector,
                origin,
                host: HeaderValue::from_str(&host).map_err(|_| NoOrigin)?,
                conns: Mutex::new(conns),
                max_idle,
                idle_timeout,
            }),
        })
    }

    /// Sends `req` (absolute URI, under the pool's origin) on a connection it has or a new one,
    /// and waits for the answer's head. Over HTTP/1.1 the request goes in origin form with the
    /// pool's `Host`; over HTTP/2 as it is (`:scheme`, `:authority`). Boxed: the exchange holds
    /// this future while it waits, so it costs one pointer there.
    pub fn send(
        &self,
        req: WireRequest,
    ) -> Pin<Box<dyn Future<Output = Result<Answered, TransportError>> + Send>> {
        debug_assert_eq!(req.uri().authority(), self.inner.origin.authority());
        let pool = self.clone();
        Box::pin(async move {
            let mut req = req;
            loop {
                let (mut conn, reused) = match pool.take() {
                    Some(conn) => (conn, true),
                    // Boxed: connecting holds the TLS state (kilobytes) by value, and
                    // this future's size is what every request's box copies.
                    None => (Box::pin(pool.connect()).await?, false),
                };
                let sent = match &mut conn {
                    Conn::H1(c) => c.try_send_request(pool.for_h1(req)).await,
                    // Boxed: hyper's HTTP/2 future is large, and this future's size is what
                    // every request's box copies (the HTTP/1.1 path is the one measured).
                    Conn::H2(c) => Box::pin(c.try_send_request(pool.for_h2(req))).await,
                };
                match sent {
                    Ok(resp) => return Ok((resp, Lease { conn, pool })),
                    Err(mut err) => match err.take_message() {
                        // Unwritten: the connection had closed. Another one, or a new one.
                        Some(unsent) if reused => req = unsent,
                        _ => return Err(TransportError::Other),
                    },
                }
            }
        })
    }

    /// `req` as HTTP/1.1 sends it: origin form, with the pool's `Host`.
    fn for_h1(&self, mut req: WireRequest) -> WireRequest {
        origin_form(req.uri_mut());
        req.headers_mut().insert(HOST, self.inner.host.clone());
        req
    }

    /// `req` as HTTP/2 sends it: its absolute URI (`:scheme`, `:authority`), no `Host`; made
    /// absolute again when an HTTP/1.1 connection handed it back unwritten.
    fn for_h2(&self, mut req: WireRequest) -> WireRequest {
        if req.uri().scheme().is_none() {
            req.headers_mut().remove(HOST);
            let mut parts = self.inner.origin.clone().into_parts();
            parts.path_and_query = std::mem::take(req.uri_mut()).into_parts().path_and_query;
            *req.uri_mut() = http::Uri::from_parts(parts).unwrap_or_default();
        }
        req
    }

    /// The HTTP/2 connection while it is open; else the most recently used idle HTTP/1.1
    /// connection that is open and ready, if any (the ones passed over, closed or idle too long,
    /// are dropped).
    fn take(&self) -> Option<Conn> {
        let mut conns = lock(&self.inner.conns);
        if let Some(h2) = &conns.h2 {
            if !h2.is_closed() {
                return Some(Conn::H2(h2.clone()));
            }
            conns.h2 = None;
        }
        while let Some(c) = conns.idle.pop_back() {
            if c.conn.is_ready() && c.since.elapsed() < self.inner.idle_timeout {
                return Some(Conn::H1(c.conn));
            }
        }
        None
    }

    /// Back among the idle: dropped instead when `max_idle` already wait; the ones idle longer
    /// than `idle_timeout` go on the way.
    fn put_idle(&self, conn: http1::SendRequest<WireBody>) {
        let now = Instant::now();
        let mut conns = lock(&self.inner.conns);
        let idle = &mut conns.idle;
        while idle
            .front()
            .is_some_and(|c| now.duration_since(c.since) >= self.inner.idle_timeout)
        {
            idle.pop_front();
        }
        if idle.len() < self.inner.max_idle {
            idle.push_back(Idle { conn, since: now });
        }
    }

    /// A new connection, ready for a request: TCP (and TLS), then HTTP/2 when TLS negotiated it
    /// (kept for every request after) or HTTP/1.1, its task spawned. Every failure on the way is
    /// a connection error.
    async fn connect(&self) -> Result<Conn, TransportError> {
        let failed = |_| TransportError::Connection;
        let mut connector = self.inner.connector.clone();
        poll_fn(|cx| connector.poll_ready(cx)).await.map_err(failed)?;
        let io = connector.call(self.inner.origin.clone()).await.map_err(failed)?;
        if io.connected().is_negotiated_h2() {
            let (mut conn, task) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|_| TransportError::Connection)?;
            tokio::spawn(ended(task));
            conn.ready().await.map_err(|_| TransportError::Connection)?;
            lock(&self.inner.conns).h2 = Some(conn.clone());
            return Ok(Conn::H2(conn));
        }
        let (mut conn, task) = http1::handshake(io)
            .await
            .map_err(|_| TransportError::Connection)?;
        tokio::spawn(ended(task));
        conn.ready().await.map_err(|_| TransportError::Connection)?;
        Ok(Conn::H1(conn))
    }
}

/// A connection's task, its error (if any) logged when it ends.
async fn ended<E: std::fmt::Display>(task: impl Future<Output = Result<(), E>>) {
    if let Err(e) = task.await {
        tracing::debug!(error = %e, "a connection to Elevate ended with an error");
    }
}

impl Lease {
    /// Returns the connection to the pool: an HTTP/1.1 one once it can take the next request,
    /// at once when it can (an answer whose body has been read to its end), else when it gets
    /// there (its task has not run since). One that will not get there (its answer's body was
    /// left unread, or it closed) is dropped. An HTTP/2 handle is just dropped: the pool keeps
    /// its own.
    pub fn give_back(self) {
        let Lease { conn, pool } = self;
        let Conn::H1(mut conn) = conn else { return };
        if conn.is_ready() {
            pool.put_idle(conn);
        } else if !conn.is_closed() {
            tokio::spawn(async move {
                if conn.ready().await.is_ok() {
                    pool.put_idle(conn);
                }
            });
        }
    }
}

/// `uri` as its path and query only, as HTTP/1.1 sends it to an origin server.
fn origin_form(uri: &mut http::Uri) {
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = std::mem::take(uri).into_parts().path_and_query;
    if let Ok(path) = http::Uri::from_parts(parts) {
        *uri = path;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;

    /// A keep-alive HTTP/1.1 server on a thread per connection: answers every request with a
    /// 204 once `gate` lets it (all connections wait for each other there), sends each request's
    /// head (lower-cased) to `heads`, and with [`Then::CloseWhenTold`] closes a connection after
    /// its first answer when told, and says so on `closed`.
    struct Server {
        base: String,
        accepted: mpsc::Receiver<()>,
        heads: mpsc::Receiver<String>,
        closed: mpsc::Receiver<()>,
    }

    /// How the server's connections behave.
    #[derive(Clone, Copy)]
    enum Then {
        /// Keep the connection open.
        KeepOpen,
        /// Close it after the first answer, once the test says so.
        CloseWhenTold,
    }

    fn serve(then: Then, gate: Option<Arc<std::sync::Barrier>>) -> (Server, mpsc::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (acc_tx, accepted) = mpsc::channel();
        let (head_tx, heads) = mpsc::channel();
        let (close_tx, close_rx) = mpsc::channel::<()>();
        let (closed_tx, closed) = mpsc::channel();
        let close_rx = Arc::new(Mutex::new(close_rx));
        std::thread::spawn(move || {
            for sock in listener.incoming() {
                let Ok(sock) = sock else { return };
                if acc_tx.send(()).is_err() {
                    return;
                }
                let (head_tx, gate, close_rx) = (head_tx.clone(), gate.clone(), Arc::clone(&close_rx));
                let closed_tx = closed_tx.clone();
                std::thread::spawn(move || {
                    answer_all(sock, &head_tx, gate, then, &close_rx);
                    let _ = closed_tx.send(());
                });
            }
        });
        let server = Server {
            base,
            accepted,
            heads,
            closed,
        };
        (server, close_tx)
    }

    fn answer_all(
        sock: TcpStream,
        heads: &mpsc::Sender<String>,
        gate: Option<Arc<std::sync::Barrier>>,
        then: Then,
        close: &Mutex<mpsc::Receiver<()>>,
    ) {
        let mut w = sock.try_clone().unwrap();
        let mut r = BufReader::new(sock);
        loop {
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                head.push_str(&line.to_lowercase());
                if line == "\r\n" {
                    break;
                }
            }
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |n| n.trim().parse().unwrap());
            r.read_exact(&mut vec![0; len]).unwrap();
            heads.send(head).unwrap();
            if let Some(gate) = &gate {
                gate.wait();
            }
            w.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
            if let Then::CloseWhenTold = then {
                let _ = lock(close).recv();
                return; // both halves dropped: the socket closes
            }
        }
    }

    /// A pool on the product's connector ([`super::super::connector_trusting`]), trusting
    /// `roots`.
    fn pool_trusting(
        base: &str,
        roots: rustls::RootCertStore,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Pool {
        let connector = super::super::connector_trusting(&Default::default(), roots).unwrap();
        Pool::new(&base.parse().unwrap(), connector, max_idle, idle_timeout).unwrap()
    }

    fn pool(base: &str, max_idle: usize, idle_timeout: Duration) -> Pool {
        pool_trusting(base, rustls::RootCertStore::empty(), max_idle, idle_timeout)
    }

    fn post(base: &str) -> WireRequest {
        let mut req = http::Request::new(WireBody::new(Bytes::from_static(b"{\"ticket\":\"t\"}")));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = format!("{base}/x?market=SE").parse().unwrap();
        req
    }

    /// One exchange, its connection given back as the client does.
    async fn exchange(p: &Pool, base: &str) -> Result<u16, TransportError> {
        let (resp, lease) = p.send(post(base)).await?;
        let status = resp.status().as_u16();
        drop(resp);
        lease.give_back();
        Ok(status)
    }

    fn count(rx: &mpsc::Receiver<()>) -> usize {
        rx.try_iter().count()
    }

    #[tokio::test]
    async fn one_connection_carries_requests_in_turn_in_origin_form_with_the_host() {
        let (s, _close) = serve(Then::KeepOpen, None);
        let p = pool(&s.base, 4, Duration::from_secs(60));
        for _ in 0..3 {
            assert_eq!(exchange(&p, &s.base).await, Ok(204));
        }
        assert_eq!(count(&s.accepted), 1);
        let host = s.base.trim_start_matches("http://");
        for head in s.heads.try_iter() {
            assert!(head.starts_with("post /x?market=se http/1.1\r\n"), "{head}");
            assert!(head.contains(&format!("\r\nhost: {host}\r\n")), "{head}");
        }
    }

    /// The server closed the idle connection, and the connection's task has seen it: the next
    /// request passes it over for a new one.
    #[tokio::test]
    async fn a_connection_seen_closed_while_idle_is_passed_over() {
        let (s, close) = serve(Then::CloseWhenTold, None);
        let p = pool(&s.base, 4, Duration::from_secs(60));
        assert_eq!(exchange(&p, &s.base).await, Ok(204));
        close.send(()).unwrap();
        let seen = async {
            while !lock(&p.inner.conns)
                .idle
                .back()
                .is_some_and(|c| c.conn.is_closed())
            {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), seen).await.unwrap();
        assert_eq!(exchange(&p, &s.base).await, Ok(204));
        assert_eq!(count(&s.accepted), 2);
    }

    /// The limit: the server closed the idle connection and its task has not run since (the
    /// test's one thread blocks until the server has closed, and the runtime looks at the
    /// sockets only when it has nothing to run), so the connection still looks ready and the
    /// request is written into it. That is a transport error (`Other`) for the send layer to
    /// retry, as with any pool; the connection is not taken again.
    #[test]
    fn a_request_written_into_a_connection_closed_unseen_is_a_transport_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .event_interval(u32::MAX)
            .build()
            .unwrap();
        rt.block_on(async {
            let (s, close) = serve(Then::CloseWhenTold, None);
            let p = pool(&s.base, 4, Duration::from_secs(60));
            assert_eq!(exchange(&p, &s.base).await, Ok(204));
            close.send(()).unwrap();
            s.closed.recv().unwrap();
            assert!(lock(&p.inner.conns)
                .idle
                .back()
                .is_some_and(|c| c.conn.is_ready()));
            assert_eq!(exchange(&p, &s.base).await, Err(TransportError::Other));
            assert_eq!(exchange(&p, &s.base).await, Ok(204));
            assert_eq!(count(&s.accepted), 2);
        });
    }

    /// Two exchanges at once take two connections; with room for one idle, the next two reuse
    /// one and dial one.
    #[tokio::test]
    async fn no_more_than_max_idle_connections_wait() {
        let (s, _close) = serve(Then::KeepOpen, Some(Arc::new(std::sync::Barrier::new(2))));
        let p = pool(&s.base, 1, Duration::from_secs(60));
        for _ in 0..2 {
            let (a, b) = tokio::join!(exchange(&p, &s.base), exchange(&p, &s.base));
            assert_eq!((a, b), (Ok(204), Ok(204)));
        }
        assert_eq!(count(&s.accepted), 3);
    }

    #[tokio::test]
    async fn a_connection_idle_past_the_timeout_is_not_taken() {
        let (s, _close) = serve(Then::KeepOpen, None);
        let p = pool(&s.base, 4, Duration::ZERO);
        for _ in 0..2 {
            assert_eq!(exchange(&p, &s.base).await, Ok(204));
        }
        assert_eq!(count(&s.accepted), 2);
    }

    #[test]
    fn the_host_carries_the_port_only_when_it_is_not_the_schemes_own() {
        let host = |base: &str| pool(base, 1, Duration::ZERO).inner.host.clone();
        assert_eq!(host("http://h:8080/p"), "h:8080");
        assert_eq!(host("http://h:80"), "h");
        assert_eq!(host("https://h:443/"), "h");
        assert_eq!(host("https://[::1]:8443"), "[::1]:8443");
        let connector = pool("http://h", 1, Duration::ZERO).inner.connector.clone();
        let refused = |base: &str| {
            Pool::new(&base.parse().unwrap(), connector.clone(), 1, Duration::ZERO)
                .err()
                .map(|e| e.to_string())
        };
        assert!(refused("/only/a/path").is_some());
        // The error names the key, never the URL: it may carry credentials.
        let err = refused("ftp://user:s3cret@h/x").unwrap();
        assert!(
            err.contains("elevate.base_url") && !err.contains("s3cret"),
            "{err}"
        );
    }

    /// An HTTPS server with the test certificate (tests/data/tls) offering `alpn`, serving each
    /// connection with hyper in the protocol TLS negotiated: counts connections, and keeps each
    /// request's version, URI and `Host` header. With `goaway`, each HTTP/2 connection is shut
    /// down gracefully (GOAWAY) once it has answered its first request.
    struct Tls {
        base: String,
        accepted: Arc<std::sync::atomic::AtomicUsize>,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    /// A request as the server saw it: version, URI, `Host`.
    type Seen = (http::Version, String, Option<String>);

    async fn serve_tls(alpn: &[&[u8]], goaway: bool) -> Tls {
        use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
        use std::sync::atomic::Ordering;
        let cert = CertificateDer::from_pem_slice(include_bytes!("../../tests/data/tls/server.pem")).unwrap();
        let key = PrivateKeyDer::from_pem_slice(include_bytes!("../../tests/data/tls/server.key")).unwrap();
        let mut tls =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .unwrap();
        tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("https://localhost:{}", listener.local_addr().unwrap().port());
        let server = Tls {
            base,
            accepted: Arc::default(),
            seen: Arc::default(),
        };
        let (accepted, seen) = (Arc::clone(&server.accepted), Arc::clone(&server.seen));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let (acceptor, seen) = (acceptor.clone(), Arc::clone(&seen));
                tokio::spawn(async move {
                    let tls = acceptor.accept(tcp).await.unwrap();
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                    let io = hyper_util::rt::TokioIo::new(tls);
                    let served = Arc::new(tokio::sync::Notify::new());
                    let served_one = Arc::clone(&served);
                    let answer = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                        let host = req.headers().get(HOST).map(|h| h.to_str().unwrap().to_string());
                        lock(&seen).push((req.version(), req.uri().to_string(), host));
                        served_one.notify_one();
                        let resp = http::Response::builder()
                            .status(204)
                            .body(http_body_util::Empty::<Bytes>::new());
                        std::future::ready(resp)
                    });
                    let _ = if h2 {
                        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, answer);
                        tokio::pin!(conn);
                        tokio::select! {
                            done = conn.as_mut() => done,
                            _ = served.notified(), if goaway => {
                                conn.as_mut().graceful_shutdown();
                                conn.await
                            }
                        }
                    } else {
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, answer)
                            .await
                    };
                });
            }
        });
        server
    }

    /// The product's connector (ALPN `h2`, `http/1.1`), trusting the test CA.
    fn tls_pool(base: &str) -> Pool {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(include_bytes!("../../tests/data/tls/ca.pem")).unwrap())
            .unwrap();
        pool_trusting(base, roots, 4, Duration::from_secs(60))
    }

    /// Over TLS with HTTP/2 negotiated, every request after the first shares its connection,
    /// concurrent ones too, with `:authority` and no `Host`.
    #[tokio::test]
    async fn an_origin_negotiating_http2_gets_every_request_on_one_connection() {
        let s = serve_tls(&[b"h2"], false).await;
        let p = tls_pool(&s.base);
        assert_eq!(exchange(&p, &s.base).await, Ok(204));
        let burst = futures::future::join_all((0..4).map(|_| exchange(&p, &s.base))).await;
        assert_eq!(burst, vec![Ok(204); 4]);
        assert_eq!(exchange(&p, &s.base).await, Ok(204));
        assert_eq!(s.accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        let seen = lock(&s.seen).clone();
        assert_eq!(seen.len(), 6);
        for (version, uri, host) in seen {
            assert_eq!(version, http::Version::HTTP_2);
            assert_eq!(uri, format!("{}/x?market=SE", s.base));
            assert_eq!(host, None);
        }
    }

    /// Over TLS with only HTTP/1.1 offered back, requests go in turn on one keep-alive
    /// connection, in origin form with the `Host`.
    #[tokio::test]
    async fn an_origin_negotiating_http1_over_tls_gets_keep_alive_http1() {
        let s = serve_tls(&[b"http/1.1"], false).await;
        let p = tls_pool(&s.base);
        for _ in 0..3 {
            assert_eq!(exchange(&p, &s.base).await, Ok(204));
        }
        assert_eq!(s.accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        let host = s.base.trim_start_matches("https://").to_string();
        for (version, uri, got) in lock(&s.seen).clone() {
            assert_eq!(version, http::Version::HTTP_11);
            assert_eq!(uri, "/x?market=SE");
            assert_eq!(got.as_deref(), Some(host.as_str()));
        }
    }

    /// Elevate shutting an HTTP/2 connection down (GOAWAY) after a request: the requests after
    /// it go on a new connection, none fails.
    #[tokio::test]
    async fn an_http2_connection_going_away_is_replaced() {
        let s = serve_tls(&[b"h2"], true).await;
        let p = tls_pool(&s.base);
        for _ in 0..3 {
            assert_eq!(exchange(&p, &s.base).await, Ok(204));
        }
        assert_eq!(lock(&s.seen).len(), 3);
        assert_eq!(s.accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
