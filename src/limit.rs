//! Limit: the request-rate quotas (governor GCRA), global and optionally per market, with each
//! replica taking a share proportional to the partitions it owns. Guarantees: every attempt to
//! Elevate waits for a token from the global limiter and from its market's limiter; waiting is
//! backpressure, never an error; the fleet stays under the quota without a shared store as long
//! as partitions are spread over replicas (share = assigned / total partitions).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::RateConfig;

/// A limiter behind a FIFO gate: one waiter at a time asks governor, the rest queue in arrival
/// order. Without the gate every waiter wakes at each replenishment (a thundering herd that
/// cost the CPU ~14 % of a 200/s quota in a test) and tokens go out in random order, which
/// holds back commits.
struct Gated {
    /// FIFO queue of waiters (tokio's mutex is fair).
    gate: tokio::sync::Mutex<()>,
    /// The GCRA limiter.
    limiter: DefaultDirectRateLimiter,
}

impl Gated {
    fn new(q: Quota) -> Self {
        Gated {
            gate: tokio::sync::Mutex::new(()),
            limiter: RateLimiter::direct(q),
        }
    }

    async fn until_ready(&self) {
        let _turn = self.gate.lock().await;
        self.limiter.until_ready().await;
    }
}

/// The limiters for one share of the quota.
struct Limits {
    /// Share of the fleet quota these limiters were built for.
    share: f64,
    /// The global quota.
    global: Gated,
    /// Per-market quotas.
    markets: HashMap<String, Gated>,
}

/// The rate limiter the sender waits on. Cheap to share (`Arc`).
pub struct Limiter {
    /// The configured fleet quotas.
    cfg: RateConfig,
    /// The current limiters; replaced when the share changes.
    current: RwLock<Arc<Limits>>,
}

/// The GCRA quota for `rps` requests per second with `burst`, scaled by `share` (0, 1].
/// The burst scales too (at least 1), so N replicas' bursts add up to the fleet burst.
pub fn quota(rps: f64, burst: u32, share: f64) -> Quota {
    let rate = (rps * share).max(0.001);
    let period = Duration::from_secs_f64(1.0 / rate).max(Duration::from_nanos(1));
    let burst = ((f64::from(burst) * share).round() as u32).max(1);
    Quota::with_period(period)
        .expect("period is positive")
        .allow_burst(NonZeroU32::new(burst).expect("burst >= 1"))
}

/// The share of the fleet quota for a replica owning `assigned` of `total` partitions.
/// A replica with no partitions keeps the smallest share (1/total); with no metadata, all of it.
pub fn share(assigned: usize, total: usize) -> f64 {
    if total == 0 {
        return 1.0;
    }
    (assigned.max(1).min(total)) as f64 / total as f64
}

impl Limiter {
    /// Limiters at full share (one replica owns everything) until told otherwise.
    pub fn new(cfg: &RateConfig) -> Self {
        Limiter {
            cfg: cfg.clone(),
            current: RwLock::new(Arc::new(Self::build(cfg, 1.0))),
        }
    }

    fn build(cfg: &RateConfig, share: f64) -> Limits {
        Limits {
            share,
            global: Gated::new(quota(cfg.requests_per_second, cfg.burst, share)),
            markets: cfg
                .markets
                .iter()
                .map(|(m, rps)| {
                    let burst = rps.ceil().max(1.0) as u32;
                    (m.clone(), Gated::new(quota(*rps, burst, share)))
                })
                .collect(),
        }
    }

    /// Sets this replica's share; a no-op unless it changed (or sharing is off).
    pub fn set_share(&self, share: f64) {
        if !self.cfg.share_by_partitions {
            return;
        }
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        if (cur.share - share).abs() > f64::EPSILON {
            *cur = Arc::new(Self::build(&self.cfg, share));
        }
    }

    /// The current share.
    pub fn share(&self) -> f64 {
        self.current.read().unwrap_or_else(|e| e.into_inner()).share
    }

    /// Requests per second this replica may send now (global quota times share).
    pub fn effective_rps(&self) -> f64 {
        self.cfg.requests_per_second * self.share()
    }

    /// Waits until one request to `market` may be sent; returns how long it waited.
    pub async fn acquire(&self, market: &str) -> Duration {
        let limits = self.current.read().unwrap_or_else(|e| e.into_inner()).clone();
        let start = Instant::now();
        if let Some(m) = limits.markets.get(market) {
            m.until_ready().await;
        }
        limits.global.until_ready().await;
        start.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn share_by_partitions() {
        assert_eq!(share(3, 12), 0.25);
        assert_eq!(share(0, 12), 1.0 / 12.0);
        assert_eq!(share(5, 0), 1.0);
        assert_eq!(share(20, 12), 1.0);
    }

    proptest! {
        /// N replicas splitting P partitions never exceed the fleet rate (up to one replica's floor).
        #[test]
        fn fleet_stays_under_quota(p in 1usize..64, n in 1usize..16, rps in 1.0f64..1000.0) {
            let n = n.min(p);
            let sizes: Vec<usize> = (0..n).map(|i| p / n + usize::from(i < p % n)).collect();
            let total: f64 = sizes.iter().map(|&a| rps * share(a, p)).sum();
            prop_assert!((total - rps).abs() < 1e-6 * rps);
        }
    }

    #[tokio::test]
    async fn waits_rather_than_errors() {
        let cfg = RateConfig {
            requests_per_second: 100.0,
            burst: 1,
            ..RateConfig::default()
        };
        let l = Limiter::new(&cfg);
        let start = Instant::now();
        for _ in 0..11 {
            l.acquire("SE").await;
        }
        // 1 free + 10 at 10 ms each: at least 90 ms (timing lower bound only).
        assert!(
            start.elapsed() >= Duration::from_millis(90),
            "{:?}",
            start.elapsed()
        );
    }
}
