//! Per-route quotas (`[[routes]] requests_per_second`): a governor limiter per route that a
//! notification waits on, holding nothing, before it enters the sender. Guarantee: a route's
//! notifications start at most at its rate on this replica. Limits: the quota counts
//! notifications, not attempts (retries pass only the global and market quotas), and it is per
//! replica, not shared by partitions as `[rate]` is.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::Routes;

/// The limiters of the routes that have a quota.
#[derive(Default)]
pub struct RouteQuotas(HashMap<Arc<str>, DefaultDirectRateLimiter>);

impl RouteQuotas {
    /// One limiter per route with `requests_per_second` (burst 1).
    pub fn new(routes: &Routes) -> Self {
        let map = routes
            .routes
            .iter()
            .filter_map(|r| {
                let rps = r.requests_per_second?;
                let quota = Quota::with_period(Duration::from_secs_f64(1.0 / rps))?;
                Some((r.tag.name.clone(), RateLimiter::direct(quota)))
            })
            .collect();
        RouteQuotas(map)
    }

    /// Whether `route` has a quota (its notifications wait for it before the sender).
    pub fn paces(&self, route: &str) -> bool {
        self.0.contains_key(route)
    }

    /// Waits until `route` may start one more notification (at once for a route without quota).
    pub async fn wait(&self, route: &str) {
        if let Some(l) = self.0.get(route) {
            l.until_ready().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn a_route_quota_paces_its_notifications_only() {
        let toml = r#"
[kafka]
topics = ["carts"]
[elevate]
base_url = "http://h"
[[routes]]
name = "slow"
kind = "add-to-cart"
requests_per_second = 20.0
[[routes]]
name = "free"
kind = "click"
"#;
        let cfg = crate::config::Config::from_toml_with_env(toml, "", Vec::new()).unwrap();
        let q = RouteQuotas::new(&Routes::from_config(&cfg).unwrap());
        let start = Instant::now();
        for _ in 0..100 {
            q.wait("free").await;
        }
        assert!(start.elapsed() < Duration::from_millis(50));
        let start = Instant::now();
        for _ in 0..5 {
            q.wait("slow").await;
        }
        // 1 at once, then 4 more at 50 ms each.
        assert!(
            start.elapsed() >= Duration::from_millis(190),
            "{:?}",
            start.elapsed()
        );
    }
}
