//! Admin HTTP listener: `/healthz` (the process is alive), `/readyz` (the consumer joined its
//! group — with or without partitions —, the broker is reachable, the loop is not wedged, parking
//! works, no record waits for the schema registry, and the process is not stopping for good), `/metrics` (Prometheus text). Guarantees:
//! readiness facts are plain atomics written by the pipeline; the listener never blocks the
//! pipeline.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;
use crate::util::now_ms;

/// Facts `/readyz` decides on.
#[derive(Debug)]
pub struct Health {
    /// When the consume loop last turned (epoch ms).
    last_turn_ms: AtomicI64,
    /// The consumer got an assignment (possibly empty) from its group.
    pub joined: AtomicBool,
    /// No "all brokers down" since the last successful broker interaction.
    pub broker_ok: AtomicBool,
    /// How long without a loop turn counts as wedged (and how long parking may keep failing).
    wedged_after: Duration,
    /// Since when (epoch ms) parking in the dead-letter topic has failed without a success; 0
    /// while it works.
    dead_letter_failing_since_ms: AtomicI64,
    /// Records waiting for the schema registry right now.
    registry_waiting: AtomicUsize,
    /// Why the process is stopping for good (a fatal client error, unreadable records), once it is.
    stopping: OnceLock<&'static str>,
}

/// `/readyz` reason: a Kafka client failed fatally and the process is exiting.
pub const NOT_READY_FATAL: &str = "a Kafka client failed fatally; the process is exiting (exit code 3)";
/// `/readyz` reason: records could not be read and the process is exiting.
pub const NOT_READY_UNREADABLE: &str =
    "records could not be read: stalled, nothing is committed past them (see docs/operations.md)";
/// `/readyz` reason: records wait for the schema registry (unreachable, 5xx, timeout).
pub const NOT_READY_REGISTRY: &str =
    "records are waiting for the schema registry (unreachable or failing; see elevate_sink_registry_waits_total)";
/// `/readyz` reason: parking keeps failing.
pub const NOT_READY_DEAD_LETTER: &str =
    "writing to the dead-letter topic has failed for longer than admin.wedged_after";

impl Health {
    /// Not ready until the pipeline says so.
    pub fn new(wedged_after: Duration) -> Self {
        Health {
            last_turn_ms: AtomicI64::new(0),
            joined: AtomicBool::new(false),
            broker_ok: AtomicBool::new(true),
            wedged_after,
            dead_letter_failing_since_ms: AtomicI64::new(0),
            registry_waiting: AtomicUsize::new(0),
            stopping: OnceLock::new(),
        }
    }

    /// The process is stopping for good, for `why` (one of the `NOT_READY_*` reasons): never
    /// ready again.
    pub fn stopping(&self, why: &'static str) {
        let _ = self.stopping.set(why);
    }

    /// Since when parking has been failing without a success (`None`: it works).
    pub fn dead_letter_failing_since(&self, since_ms: Option<i64>) {
        self.dead_letter_failing_since_ms
            .store(since_ms.unwrap_or(0), Ordering::Relaxed);
    }

    /// How many records wait for the schema registry ([`crate::wire::Sources::waiting`]).
    pub fn registry_waiting(&self, records: usize) {
        self.registry_waiting.store(records, Ordering::Relaxed);
    }

    /// The loop turned just now.
    pub fn touch(&self) {
        self.last_turn_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Ok, or what is missing.
    pub fn ready(&self) -> Result<(), &'static str> {
        if let Some(why) = self.stopping.get() {
            return Err(why);
        }
        if !self.joined.load(Ordering::Relaxed) {
            return Err("not yet a member of the consumer group");
        }
        if !self.broker_ok.load(Ordering::Relaxed) {
            return Err("all brokers down");
        }
        let idle = now_ms() - self.last_turn_ms.load(Ordering::Relaxed);
        if idle > self.wedged_after.as_millis() as i64 {
            return Err("consume loop wedged");
        }
        let failing_since = self.dead_letter_failing_since_ms.load(Ordering::Relaxed);
        if failing_since > 0 && now_ms() - failing_since > self.wedged_after.as_millis() as i64 {
            return Err(NOT_READY_DEAD_LETTER);
        }
        if self.registry_waiting.load(Ordering::Relaxed) > 0 {
            return Err(NOT_READY_REGISTRY);
        }
        Ok(())
    }
}

/// Shared state of the listener.
#[derive(Clone)]
struct AdminState {
    /// Series to expose.
    metrics: Arc<Metrics>,
    /// Readiness facts.
    health: Arc<Health>,
}

/// The admin routes.
pub fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { metrics, health })
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    match s.health.ready() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}

async fn metrics_text(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

/// Binds `addr` and serves the admin routes in the background; returns the bound address.
pub async fn serve(
    addr: &str,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(metrics, health);
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin listener stopped");
        }
    });
    Ok((local, handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready_health() -> Health {
        let h = Health::new(Duration::from_secs(30));
        h.joined.store(true, Ordering::Relaxed);
        h.touch();
        h
    }

    #[test]
    fn parking_failing_longer_than_the_limit_makes_it_unready() {
        let h = ready_health();
        assert_eq!(h.ready(), Ok(()));
        h.dead_letter_failing_since(Some(now_ms() - 1_000));
        assert_eq!(h.ready(), Ok(()), "a short failure is tolerated");
        h.dead_letter_failing_since(Some(now_ms() - 31_000));
        assert_eq!(h.ready(), Err(NOT_READY_DEAD_LETTER));
        h.dead_letter_failing_since(None);
        assert_eq!(h.ready(), Ok(()));
    }

    #[test]
    fn records_waiting_for_the_registry_make_it_unready() {
        let h = ready_health();
        h.registry_waiting(2);
        assert_eq!(h.ready(), Err(NOT_READY_REGISTRY));
        h.registry_waiting(0);
        assert_eq!(h.ready(), Ok(()));
    }

    #[test]
    fn stopping_for_good_is_never_ready_again() {
        let h = ready_health();
        h.stopping(NOT_READY_FATAL);
        h.stopping(NOT_READY_UNREADABLE);
        h.touch();
        assert_eq!(h.ready(), Err(NOT_READY_FATAL), "the first reason stays");
    }
}
