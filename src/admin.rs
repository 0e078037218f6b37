//! Admin HTTP listener: `/healthz` (the process is alive), `/readyz` (the consumer joined its
//! group — with or without partitions —, the broker is reachable, and the loop is not wedged),
//! `/metrics` (Prometheus text). Guarantees: readiness facts are plain atomics written by the
//! pipeline; the listener never blocks the pipeline.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;

/// Facts `/readyz` decides on.
#[derive(Debug)]
pub struct Health {
    /// When the consume loop last turned (epoch ms).
    last_turn_ms: AtomicI64,
    /// The consumer got an assignment (possibly empty) from its group.
    pub joined: AtomicBool,
    /// No "all brokers down" since the last successful broker interaction.
    pub broker_ok: AtomicBool,
    /// How long without a loop turn counts as wedged.
    wedged_after: Duration,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Health {
    /// Not ready until the pipeline says so.
    pub fn new(wedged_after: Duration) -> Self {
        Health {
            last_turn_ms: AtomicI64::new(0),
            joined: AtomicBool::new(false),
            broker_ok: AtomicBool::new(true),
            wedged_after,
        }
    }

    /// The loop turned just now.
    pub fn touch(&self) {
        self.last_turn_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Ok, or what is missing.
    pub fn ready(&self) -> Result<(), &'static str> {
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
