//! Send: one notification through the layers, outermost first — rate limit, concurrency,
//! retry (classifying each answer), per-attempt timeout. Guarantees: returns `Delivered` only
//! on a 204; `Park` only for a 400 or a spent transient budget (never for configuration-class
//! answers, which are retried without limit and logged loudly, at most once per 30 s per status);
//! `Abandoned` only when the caller says the record is no longer ours.
//!
//! Every attempt, first or retry, takes a rate token and a concurrency slot, so the quota bounds
//! every request Elevate sees; backoff sleeps hold neither.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use url::Url;

use crate::classify::{body_excerpt, classify_status, classify_transport, Class, TransportError};
use crate::config::{ElevateConfig, RetryConfig};
use crate::limit::Limiter;
use crate::metrics::{label, Metrics};
use crate::request::{build, endpoint, HttpRequest};
use crate::retry::{self, Backoff, Next};
use crate::select::Notification;

/// Why a notification is parked in the dead-letter topic instead of delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkReason {
    /// Machine-readable reason (`rejected`, `retries_exhausted`, or a decode reason).
    pub reason: String,
    /// Human detail (the sanitised response excerpt, or the decode detail).
    pub detail: String,
    /// Last HTTP status, if an answer was received.
    pub status: Option<u16>,
    /// Attempts made.
    pub attempts: u32,
    /// Cart line the notification came from, if line-specific.
    pub line: Option<usize>,
}

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

/// The result of one HTTP attempt.
#[derive(Debug, Clone)]
struct Attempt {
    /// The class of the answer.
    class: Class,
    /// The status, if any.
    status: Option<u16>,
    /// Label for metrics: the status or the transport error kind.
    label: String,
    /// Sanitised body excerpt (only read for non-2xx answers).
    excerpt: String,
}

/// Sends notifications to Elevate. Share it in an `Arc`.
pub struct Sender {
    /// Pooled HTTP client (keep-alive, gzip, timeouts).
    client: reqwest::Client,
    /// The add-to-cart endpoint.
    endpoint: Url,
    /// Which visitor headers to forward (User-Agent; X-Forwarded-For per consent level).
    forward_visitor: crate::request::Forwarding,
    /// Rate quotas.
    limiter: Arc<Limiter>,
    /// Concurrency bound (max requests in flight).
    slots: Semaphore,
    /// Backoff and budget.
    retry: RetryConfig,
    /// Per-attempt timeout.
    timeout: Duration,
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
    /// reqwest refused the client settings.
    #[error("cannot build HTTP client: {0}")]
    Client(#[from] reqwest::Error),
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
        let client = reqwest::Client::builder()
            .connect_timeout(elevate.connect_timeout)
            .timeout(elevate.request_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(elevate.max_in_flight_requests)
            .tcp_nodelay(true)
            .gzip(true)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(elevate.user_agent.clone())
            .build()?;
        let delivered_204 = metrics
            .notifications
            .get_or_create(&vec![("outcome", "delivered".into()), ("status", "204".into())])
            .clone();
        Ok(Sender {
            client,
            endpoint: endpoint(&base),
            forward_visitor: crate::request::Forwarding::from_config(elevate),
            limiter,
            slots: Semaphore::new(elevate.max_in_flight_requests),
            retry: retry.clone(),
            timeout: elevate.request_timeout,
            delivered_204,
            metrics,
            loud: Mutex::new(HashMap::new()),
        })
    }

    /// The request `n` maps to (for dry runs and `check --sample`).
    pub fn request_for(&self, n: &Notification) -> HttpRequest {
        build(&self.endpoint, n, self.forward_visitor)
    }

    /// The limiter (replay and run adjust its share).
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }

    /// Sends `n` until it is delivered, must be parked, or `still_ours()` turns false.
    pub async fn send(&self, n: &Notification, still_ours: impl Fn() -> bool) -> Outcome {
        let req = self.request_for(n);
        let mut backoff = Backoff::new();
        loop {
            if !still_ours() {
                return Outcome::Abandoned;
            }
            let waited = self.limiter.acquire(&n.market).await;
            self.metrics.limiter_wait_seconds.inc_by(waited.as_secs_f64());
            // The wait may have been long: a revoked partition's record is left to its new owner.
            if !still_ours() {
                return Outcome::Abandoned;
            }
            let attempt = {
                let _slot = self.slots.acquire().await.expect("semaphore never closed");
                self.metrics.in_flight_requests.inc();
                let mut a = self.attempt(&req).await;
                a.excerpt = scrub(&a.excerpt, n);
                self.metrics.in_flight_requests.dec();
                a
            };
            backoff.attempts += 1;
            let (budgeted, retry_after) = match attempt.class {
                Class::Delivered => {
                    self.delivered_204.inc();
                    return Outcome::Delivered {
                        attempts: backoff.attempts,
                    };
                }
                Class::Rejected => {
                    self.count("dead_lettered", &attempt.label);
                    return Outcome::Park(ParkReason {
                        reason: "rejected".into(),
                        detail: attempt.excerpt,
                        status: attempt.status,
                        attempts: backoff.attempts,
                        line: Some(n.line),
                    });
                }
                Class::Transient { retry_after } => (true, retry_after),
                Class::Misconfigured => {
                    self.metrics
                        .config_errors
                        .get_or_create(&label("status", &attempt.label))
                        .inc();
                    self.shout(&attempt);
                    (false, None)
                }
            };
            let unit: f64 = rand::random();
            match retry::next(
                &self.retry,
                backoff.attempts,
                backoff.elapsed(),
                retry_after,
                budgeted,
                unit,
            ) {
                Next::RetryAfter(wait) => {
                    let class = if budgeted { "transient" } else { "misconfigured" };
                    self.metrics
                        .retries
                        .get_or_create(&vec![("class", class.into()), ("status", attempt.label.clone())])
                        .inc();
                    tracing::debug!(status = %attempt.label, attempts = backoff.attempts, wait_ms = wait.as_millis() as u64, "retrying notification");
                    tokio::time::sleep(wait).await;
                }
                Next::GiveUp => {
                    self.count("dead_lettered", &attempt.label);
                    return Outcome::Park(ParkReason {
                        reason: "retries_exhausted".into(),
                        detail: format!(
                            "gave up after {} attempts: last answer {}",
                            backoff.attempts, attempt.label
                        ),
                        status: attempt.status,
                        attempts: backoff.attempts,
                        line: Some(n.line),
                    });
                }
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
    fn shout(&self, a: &Attempt) {
        let mut loud = self.loud.lock().unwrap_or_else(|e| e.into_inner());
        let due = loud
            .get(&a.label)
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(30));
        if due {
            loud.insert(a.label.clone(), Instant::now());
            tracing::error!(
                status = %a.label,
                endpoint = %self.endpoint,
                body = %a.excerpt,
                "Elevate answered with a configuration-class status: check elevate.cluster_id / elevate.base_url. \
                 Notifications are retried (never dead-lettered) until this is fixed; the stream is stalled"
            );
        }
    }

    async fn attempt(&self, req: &HttpRequest) -> Attempt {
        let mut builder = self.client.post(&req.url).body(req.body.clone());
        for (k, v) in &req.headers {
            builder = builder.header(*k, v);
        }
        let start = Instant::now();
        let result = tokio::time::timeout(self.timeout, builder.send()).await;
        self.metrics
            .request_duration
            .observe(start.elapsed().as_secs_f64());
        let resp = match result {
            Err(_) => return transport(TransportError::Timeout),
            Ok(Err(e)) => {
                let kind = if e.is_timeout() {
                    TransportError::Timeout
                } else if e.is_connect() || e.is_request() {
                    TransportError::Connection
                } else {
                    TransportError::Other
                };
                return transport(kind);
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let class = classify_status(status, retry_after.as_deref());
        let excerpt = if status == 204 {
            String::new()
        } else {
            match tokio::time::timeout(self.timeout, resp.bytes()).await {
                Ok(Ok(b)) => body_excerpt(&b[..b.len().min(4096)]),
                _ => String::new(),
            }
        };
        Attempt {
            class,
            status: Some(status),
            label: status.to_string(),
            excerpt,
        }
    }
}

/// Replaces the notification's customerKey/sessionKey values (plain or percent-encoded) in an
/// answer excerpt: Elevate may echo query values back, and excerpts reach logs and headers.
fn scrub(text: &str, n: &Notification) -> String {
    let mut out = text.to_string();
    for (value, placeholder) in [
        (&n.customer_key, "<customerKey>"),
        (&n.session_key, "<sessionKey>"),
    ] {
        let Some(v) = value.as_deref().filter(|v| !v.is_empty()) else {
            continue;
        };
        let encoded: String = url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
        out = out.replace(v, placeholder).replace(&encoded, placeholder);
    }
    out
}

fn transport(kind: TransportError) -> Attempt {
    Attempt {
        class: classify_transport(kind),
        status: None,
        label: kind.as_str().to_string(),
        excerpt: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_never_carry_personal_keys() {
        let n = Notification {
            ticket: "t".into(),
            market: "SE".into(),
            customer_key: Some("cust 42".into()),
            session_key: Some("sess-9".into()),
            user_context: None,
            user_agent: None,
            visitor_ip: None,
            line: 0,
            event_time_ms: None,
        };
        let s = scrub("bad customerKey=cust+42 (cust 42), session sess-9", &n);
        assert_eq!(
            s,
            "bad customerKey=<customerKey> (<customerKey>), session <sessionKey>"
        );
    }
}
