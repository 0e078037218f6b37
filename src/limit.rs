//! Limit: the request-rate quotas (governor GCRA), global and optionally per market, with each
//! replica taking a share proportional to the partitions it owns. Guarantee, per replica and for
//! each quota: in any window of T seconds at most `burst_share + rate_share × T` requests leave
//! for Elevate (with the largest share the window saw), whatever Elevate's latency does and
//! however often the share changes. Limits: the fleet stays under the quota without a shared store
//! only while partitions are spread over replicas (share = assigned / total partitions).
//!
//! How the promise is kept. A token is taken only by a request that already holds its
//! concurrency slot and leaves at once ([`Limiter::admit`]), so no task can sit on a token while
//! Elevate is slow and fire it later together with the others. governor's quota is fixed per
//! limiter, so a share change builds new limiters for the new share and drains them at once: the
//! first new token is due one new period after the change and tokens accrue at the new rate, so a
//! rebalance never hands out a fresh burst. The swap and every grant happen under one lock and
//! waiters re-check the current limiter when woken, so the old and new limiters never both grant.
//! The price: tokens the old limiter had earned are lost (at most one burst of throughput per
//! rebalance), a conservative choice.
//!
//! Market quotas. A request to a market with its own quota first waits, in that market's FIFO
//! queue and holding nothing, until the market's token is due; only then does it take a slot and,
//! in the global queue, the global token and the market token together (microseconds apart, right
//! before it leaves). So a market throttled by its own quota holds at most one slot that is not on
//! the wire and cannot starve the other markets of slots. governor cannot say a token is due
//! without taking it, so "due" is a hint that is never early: after a grant that left no burst,
//! one period later (governor's `StateInformationMiddleware` tells the remaining burst), after a
//! share change one new period later. A market whose hint has not come at the door gives its slot
//! back before taking the global token; should governor refuse the market token after the global
//! one was taken (not expected), that global token is spent for nothing, counted
//! ([`Limiter::wasted_global_tokens`]) and logged at debug.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::{Notify, Semaphore, SemaphorePermit};

use crate::config::RateConfig;
use crate::util::lock;

/// Longest single sleep of a waiter before it looks again (a safety net; share changes wake it).
const MAX_NAP: Duration = Duration::from_secs(60);

/// A governor GCRA limiter on clock `C` that reports its state (the remaining burst) on a grant.
type Gcra<C> = RateLimiter<NotKeyed, InMemoryState, C, StateInformationMiddleware>;

/// Rate and burst of `rps` requests per second with `burst`, scaled by `share` (0, 1]. The burst
/// scales too, rounded down and at least 1, so N replicas' bursts add up to at most the fleet
/// burst.
pub fn shape(rps: f64, burst: u32, share: f64) -> (f64, u32) {
    let burst = (f64::from(burst) * share).floor().max(1.0) as u32;
    ((rps * share).max(0.001), burst)
}

/// The share of the fleet quota for a replica owning `assigned` of `total` partitions.
/// A replica with no partitions keeps the smallest share (1/total); with no metadata, all of it.
pub fn share(assigned: usize, total: usize) -> f64 {
    if total == 0 {
        return 1.0;
    }
    (assigned.max(1).min(total)) as f64 / total as f64
}

/// A market quota's burst: one second of its rate (at least 1).
fn market_burst(rps: f64) -> u32 {
    rps.ceil().clamp(1.0, f64::from(u32::MAX)) as u32
}

/// The GCRA quota for `rate` per second and `burst`; the period is rounded up to the next
/// nanosecond, so the limiter never runs faster than `rate`.
fn quota(rate: f64, burst: u32) -> Quota {
    let period = Duration::from_nanos((1e9 / rate).ceil().clamp(1.0, 1e15) as u64);
    Quota::with_period(period)
        .expect("the period is positive")
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

/// A limiter for `rate` and `burst` on `clock`: full, or drained (its first token due one period
/// from now, as after a share change).
fn limiter<C: Clock + Clone>(rate: f64, burst: u32, clock: &C, drained: bool) -> Gcra<C> {
    let q = quota(rate, burst);
    let gcra =
        RateLimiter::direct_with_clock(q, clock.clone()).with_middleware::<StateInformationMiddleware>();
    if drained {
        let took = gcra.check_n(q.burst_size()).is_ok_and(|r| r.is_ok());
        debug_assert!(took, "a new limiter holds its whole burst");
    }
    gcra
}

/// One market's quota and the hint of when its next token is due.
struct Market<C: Clock> {
    /// The GCRA limiter for the current share.
    gcra: Gcra<C>,
    /// One token's period at the current share.
    period: Nanos,
    /// The next token is not due before this (a hint: never earlier than governor's truth).
    due: C::Instant,
}

impl<C: Clock + Clone> Market<C> {
    fn new(rps: f64, share: f64, clock: &C, drained: bool) -> Self {
        let (rate, burst) = shape(rps, market_burst(rps), share);
        let gcra = limiter(rate, burst, clock, drained);
        let period = Nanos::from(quota(rate, burst).replenish_interval());
        let now = clock.now();
        Market {
            gcra,
            period,
            due: if drained { now + period } else { now },
        }
    }
}

/// What the door said to a request that has its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Door {
    /// Both tokens taken: leave now.
    Open,
    /// The market's token is not due (a share change moved it): nothing was taken.
    MarketNotDue,
    /// governor refused the market token after the global one was taken: that one is lost.
    Wasted,
}

/// The limiters for the current share. Pure apart from reading `clock`.
struct Quotas<C: Clock> {
    /// The time source of every limiter (governor's default clock, or a fake one in tests).
    clock: C,
    /// Share of the fleet quota these limiters are shaped for.
    share: f64,
    /// The global quota.
    global: Gcra<C>,
    /// Per-market quotas.
    markets: HashMap<String, Market<C>>,
}

impl<C: Clock + Clone> Quotas<C> {
    /// Full limiters at full share (one replica owns everything).
    fn new(cfg: &RateConfig, clock: C) -> Self {
        let (rate, burst) = shape(cfg.requests_per_second, cfg.burst, 1.0);
        Quotas {
            share: 1.0,
            global: limiter(rate, burst, &clock, false),
            markets: cfg
                .markets
                .iter()
                .map(|(m, rps)| (m.clone(), Market::new(*rps, 1.0, &clock, false)))
                .collect(),
            clock,
        }
    }

    /// New drained limiters for `share`; false (and nothing changed) if the share is the same.
    fn reshape(&mut self, cfg: &RateConfig, share: f64) -> bool {
        if (self.share - share).abs() <= f64::EPSILON {
            return false;
        }
        let (rate, burst) = shape(cfg.requests_per_second, cfg.burst, share);
        self.share = share;
        self.global = limiter(rate, burst, &self.clock, true);
        for (m, rps) in &cfg.markets {
            self.markets
                .insert(m.clone(), Market::new(*rps, share, &self.clock, true));
        }
        true
    }

    /// `Ok` once `market`'s token is due (by its hint), else how long until then.
    fn market_due(&self, market: &str) -> Result<(), Duration> {
        let Some(m) = self.markets.get(market) else {
            return Ok(());
        };
        let wait: Duration = m.due.duration_since(self.clock.now()).into();
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait)
        }
    }

    /// For a request holding its slot: the global token, then the market's (if it has a quota),
    /// both taken now; `Err` is how long until the global token is due (nothing taken).
    fn at_the_door(&mut self, market: Option<&str>) -> Result<Door, Duration> {
        let market = market.and_then(|m| self.markets.get_mut(m));
        if let Some(m) = &market {
            if m.due > self.clock.now() {
                return Ok(Door::MarketNotDue);
            }
        }
        if let Err(not_until) = self.global.check() {
            return Err(not_until.wait_time_from(self.clock.now()));
        }
        let Some(m) = market else {
            return Ok(Door::Open);
        };
        match m.gcra.check() {
            Ok(state) => {
                let now = self.clock.now();
                // No burst left: the next token is due within one period.
                m.due = if state.remaining_burst_capacity() == 0 {
                    now + m.period
                } else {
                    now
                };
                Ok(Door::Open)
            }
            Err(not_until) => {
                m.due = not_until.earliest_possible();
                Ok(Door::Wasted)
            }
        }
    }
}

/// The rate limiter the sender waits on. Cheap to share (`Arc`).
pub struct Limiter {
    /// The configured fleet quotas.
    cfg: RateConfig,
    /// The limiters (short critical sections only, never held across an await).
    quotas: Mutex<Quotas<DefaultClock>>,
    /// Woken on a share change, so sleepers look at the new limiters at once.
    reshaped: Notify,
    /// FIFO queue of slot holders waiting for a global token (tokio's mutex is fair). Without it
    /// every waiter would wake at each token (a thundering herd) and tokens would go out in random
    /// order, which holds back commits.
    global_turn: tokio::sync::Mutex<()>,
    /// FIFO queue per market with its own quota.
    market_turns: HashMap<String, tokio::sync::Mutex<()>>,
    /// Global tokens taken for a request whose market token governor then refused.
    wasted: AtomicU64,
}

/// Admission for one request: hold it while the request is on the wire.
pub struct Admitted<'s> {
    /// The concurrency slot.
    pub slot: SemaphorePermit<'s>,
    /// Time spent waiting for rate tokens (market and global), not for the slot.
    pub waited: Duration,
}

impl Limiter {
    /// Full limiters at full share (one replica owns everything) until told otherwise.
    pub fn new(cfg: &RateConfig) -> Self {
        Limiter {
            cfg: cfg.clone(),
            quotas: Mutex::new(Quotas::new(cfg, DefaultClock::default())),
            reshaped: Notify::new(),
            global_turn: tokio::sync::Mutex::new(()),
            market_turns: cfg
                .markets
                .keys()
                .map(|m| (m.clone(), tokio::sync::Mutex::new(())))
                .collect(),
            wasted: AtomicU64::new(0),
        }
    }

    /// Sets this replica's share; a no-op unless it changed (or sharing is off). Builds drained
    /// limiters for the new share (never a fresh burst) and wakes every waiter to use them.
    pub fn set_share(&self, share: f64) {
        if !self.cfg.share_by_partitions {
            return;
        }
        if lock(&self.quotas).reshape(&self.cfg, share) {
            self.reshaped.notify_waiters();
        }
    }

    /// The current share.
    pub fn share(&self) -> f64 {
        lock(&self.quotas).share
    }

    /// Requests per second this replica may send now (global quota times share).
    pub fn effective_rps(&self) -> f64 {
        self.cfg.requests_per_second * self.share()
    }

    /// Whether `market` has a quota of its own (a request to it queues for the market's turn
    /// before it asks for a slot).
    pub fn paces_market(&self, market: &str) -> bool {
        self.market_turns.contains_key(market)
    }

    /// Global tokens spent for nothing so far (see the module doc; expected to stay 0).
    pub fn wasted_global_tokens(&self) -> u64 {
        self.wasted.load(Ordering::Relaxed)
    }

    /// Admits one request to `market`: a slot from `slots` first, then the rate tokens, so the
    /// request can leave the moment it holds them (see the module doc for the market order).
    /// None, with no token taken, once `still_ours()` turns false while it waits (its partition
    /// was revoked): a revoked backlog queued ahead of the rest must not spend the quota.
    pub async fn admit<'s>(
        &self,
        market: &str,
        slots: &'s Semaphore,
        still_ours: impl Fn() -> bool,
    ) -> Option<Admitted<'s>> {
        let own = self.market_turns.get_key_value(market);
        if own.is_none() {
            if let Some(admitted) = self.admit_now(slots, &still_ours) {
                return admitted;
            }
        }
        let start = Instant::now();
        let mut for_slots = Duration::ZERO;
        // In the market's queue until the request has its tokens (dropped on return).
        let _market_turn = match own {
            Some((_, turn)) => Some(turn.lock().await),
            None => None,
        };
        let market = own.map(|(m, _)| m.as_str());
        loop {
            if let Some(m) = market {
                // Holding nothing but the market's turn.
                self.wait_for(&still_ours, |q| q.market_due(m)).await?;
            }
            let asked = Instant::now();
            let slot = slots
                .acquire()
                .await
                .expect("the slots semaphore is never closed");
            for_slots += asked.elapsed();
            let door = {
                let _turn = self.global_turn.lock().await;
                self.wait_for(&still_ours, |q| q.at_the_door(market)).await?
            };
            match door {
                Door::Open => {
                    return Some(Admitted {
                        slot,
                        waited: start.elapsed().saturating_sub(for_slots),
                    })
                }
                Door::MarketNotDue => {}
                Door::Wasted => {
                    self.wasted.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        market = market.unwrap_or_default(),
                        "a global token was spent for nothing: the market's token was not due"
                    );
                }
            }
            // The slot goes back; the market's line is kept.
            drop(slot);
        }
    }

    /// [`Limiter::admit`] for a market without a quota of its own when nothing has to wait: a
    /// free slot, the global turn free and the global token due. None when any of them would
    /// wait (nothing taken: `admit` then queues as usual). tokio's semaphore and mutex hand a
    /// freed permit to the first waiter, so a `try_` here never passes one who waits. Reads no
    /// clock of ours and reports no wait: the common case at a rate under the quota
    /// (docs/performance.md, "The fifteenth round").
    fn admit_now<'s>(
        &self,
        slots: &'s Semaphore,
        still_ours: &impl Fn() -> bool,
    ) -> Option<Option<Admitted<'s>>> {
        let slot = slots.try_acquire().ok()?;
        let _turn = self.global_turn.try_lock().ok()?;
        if !still_ours() {
            return Some(None);
        }
        match lock(&self.quotas).at_the_door(None) {
            Ok(Door::Open) => Some(Some(Admitted {
                slot,
                waited: Duration::ZERO,
            })),
            Ok(Door::MarketNotDue | Door::Wasted) | Err(_) => None,
        }
    }

    /// Waits for one request to `market` without a concurrency bound of its own (the tokens are
    /// taken when it returns); returns how long it waited.
    pub async fn acquire(&self, market: &str) -> Duration {
        let one = Semaphore::new(1);
        let admitted = self.admit(market, &one, || true).await;
        admitted.map_or(Duration::ZERO, |a| a.waited)
    }

    /// Retries `try_now` (which may take tokens) until it gives `Ok`, sleeping as long as its
    /// `Err` says in between; a share change wakes the sleeper early. None, without calling
    /// `try_now` again, once `still_ours()` is false (checked before every try, outside the lock).
    async fn wait_for<T>(
        &self,
        still_ours: &impl Fn() -> bool,
        mut try_now: impl FnMut(&mut Quotas<DefaultClock>) -> Result<T, Duration>,
    ) -> Option<T> {
        loop {
            if !still_ours() {
                return None;
            }
            let reshaped = self.reshaped.notified();
            let tried = try_now(&mut lock(&self.quotas));
            match tried {
                Ok(t) => return Some(t),
                Err(wait) => tokio::select! {
                    _ = tokio::time::sleep(wait.min(MAX_NAP)) => {}
                    _ = reshaped => {}
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;

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

    const MS: Duration = Duration::from_millis(1);

    /// A fleet quota of 20/s with burst 8, and market SE at 3/s (burst 3).
    fn cfg() -> RateConfig {
        RateConfig {
            requests_per_second: 20.0,
            burst: 8,
            markets: BTreeMap::from([("SE".to_string(), 3.0)]),
            ..RateConfig::default()
        }
    }

    fn at(clock: &FakeRelativeClock) -> Duration {
        clock.now().into()
    }

    /// Whether every closed window `[t, t + window]` of `grants` (sorted) keeps `count <= max
    /// burst + max rate × window` over the shapes `(since, rate, burst)` in force during it.
    fn check_windows(
        grants: &[Duration],
        shapes: &[(Duration, f64, u32)],
        window: Duration,
    ) -> Result<(), String> {
        for (i, &t) in grants.iter().enumerate() {
            let count = grants[i..].iter().take_while(|&&g| g <= t + window).count();
            // The shape in force just before t and every shape set from t to the window's end.
            let in_force = shapes.iter().rposition(|s| s.0 < t).unwrap_or(0);
            let during = shapes[in_force..].iter().take_while(|s| s.0 <= t + window);
            let (rate, cap) = during.fold((0.0f64, 0u32), |(r, c), s| (r.max(s.1), c.max(s.2)));
            let bound = f64::from(cap) + rate * window.as_secs_f64();
            if count as f64 > bound + 1e-9 {
                return Err(format!(
                    "{count} grants in [{t:?}, +{window:?}] > {cap} + {rate} × {window:?} = {bound}"
                ));
            }
        }
        Ok(())
    }

    /// One request at the door as [`Limiter::admit`] makes it, without the waiting: `Some(door)`
    /// if it got to the door (its market's token was due by the hint), `None` if it would wait.
    fn knock(q: &mut Quotas<FakeRelativeClock>, market: Option<&str>) -> Option<Door> {
        if let Some(m) = market {
            q.market_due(m).ok()?;
        }
        q.at_the_door(market).ok()
    }

    proptest! {
        /// Whatever the schedule of requests (to a market with its own quota or not) and share
        /// changes, every window holds `burst_share + rate_share × T` for the global quota and the
        /// market's, with the largest share in force during it; right after a share change nothing
        /// is granted; and no global token is ever spent for nothing.
        #[test]
        fn the_door_keeps_its_promise_through_any_share_changes(
            steps in proptest::collection::vec(
                (
                    0u32..300,
                    proptest::option::of(0.05f64..=1.0),
                    proptest::collection::vec(any::<bool>(), 0..6),
                ),
                1..150,
            ),
            first_share in 0.05f64..=1.0,
        ) {
            let cfg = cfg();
            let clock = FakeRelativeClock::default();
            let mut q = Quotas::new(&cfg, clock.clone());
            let mut shapes = vec![(Duration::ZERO, 20.0, 8)];
            let mut se_shapes = vec![(Duration::ZERO, 3.0, 3)];
            let reshape = |q: &mut Quotas<_>, s: f64, shapes: &mut Vec<_>, se: &mut Vec<_>| {
                if q.reshape(&cfg, s) {
                    let (r, b) = shape(20.0, 8, s);
                    shapes.push((at(&clock), r, b));
                    let (r, b) = shape(3.0, 3, s);
                    se.push((at(&clock), r, b));
                    true
                } else {
                    false
                }
            };
            reshape(&mut q, first_share, &mut shapes, &mut se_shapes);
            let (mut global, mut se) = (Vec::new(), Vec::new());
            for (dt, new_share, requests) in steps {
                clock.advance(dt * MS);
                if let Some(s) = new_share {
                    if reshape(&mut q, s, &mut shapes, &mut se_shapes) {
                        prop_assert!(knock(&mut q, None).is_none(), "a share change handed out a token");
                        prop_assert!(knock(&mut q, Some("SE")).is_none(), "... a market token");
                    }
                }
                for to_se in requests {
                    let market = to_se.then_some("SE");
                    match knock(&mut q, market) {
                        Some(Door::Open) => {
                            global.push(at(&clock));
                            if to_se {
                                se.push(at(&clock));
                            }
                        }
                        Some(Door::Wasted) => prop_assert!(false, "a global token was wasted"),
                        Some(Door::MarketNotDue) | None => {}
                    }
                }
            }
            for window in [Duration::ZERO, 100 * MS, 1000 * MS, 5000 * MS] {
                if let Err(e) = check_windows(&global, &shapes, window) {
                    prop_assert!(false, "global: {}", e);
                }
                if let Err(e) = check_windows(&se, &se_shapes, window) {
                    prop_assert!(false, "SE: {}", e);
                }
            }
        }
    }

    #[test]
    fn a_limiter_grants_its_burst_and_then_its_rate() {
        let cfg = RateConfig {
            requests_per_second: 10.0,
            burst: 5,
            ..RateConfig::default()
        };
        let clock = FakeRelativeClock::default();
        let mut q = Quotas::new(&cfg, clock.clone());
        let mut grants = 0;
        for step in 0..=1000 {
            if step > 0 {
                clock.advance(10 * MS);
            }
            while q.at_the_door(None) == Ok(Door::Open) {
                grants += 1;
            }
        }
        // 5 at once, then one every 100 ms for 10 s.
        assert_eq!(grants, 105);
        assert_eq!(
            q.at_the_door(None),
            Err(100 * MS),
            "empty: the next one is a period away"
        );
    }

    #[test]
    fn a_share_change_drains_the_new_limiters_and_earned_tokens_are_lost() {
        let clock = FakeRelativeClock::default();
        let mut q = Quotas::new(&cfg(), clock.clone());
        clock.advance(Duration::from_secs(10)); // idle: the full burst of 8 is there
        assert!(q.reshape(&cfg(), 0.5)); // 10/s, burst 4
        assert_eq!(q.at_the_door(None), Err(100 * MS), "the earned tokens are gone");
        clock.advance(100 * MS - Duration::from_nanos(1));
        assert!(q.at_the_door(None).is_err());
        clock.advance(Duration::from_nanos(1));
        assert_eq!(
            q.at_the_door(None),
            Ok(Door::Open),
            "one token a new period later"
        );
        assert!(q.at_the_door(None).is_err());
        assert!(!q.reshape(&cfg(), 0.5), "the same share changes nothing");
        assert!(q.reshape(&cfg(), 1.0));
        assert_eq!(
            q.at_the_door(None),
            Err(50 * MS),
            "back to 20/s, and no fresh burst"
        );
    }

    #[test]
    fn the_market_hint_is_due_exactly_when_governor_grants() {
        let clock = FakeRelativeClock::default();
        let mut q = Quotas::new(&cfg(), clock.clone());
        for _ in 0..3 {
            assert_eq!(q.market_due("SE"), Ok(()));
            assert_eq!(q.at_the_door(Some("SE")), Ok(Door::Open));
        }
        // The burst of 3 is spent: the next SE token is one period (1/3 s) away.
        let period = Duration::from_nanos(333_333_334);
        assert_eq!(q.market_due("SE"), Err(period));
        assert_eq!(q.at_the_door(Some("SE")), Ok(Door::MarketNotDue));
        assert_eq!(q.at_the_door(Some("DK")), Ok(Door::Open), "other markets go on");
        clock.advance(period);
        assert_eq!(q.market_due("SE"), Ok(()));
        assert_eq!(q.at_the_door(Some("SE")), Ok(Door::Open));
        // A share change moves the hint to one new period (2/3 s at share 1/2) later.
        assert!(q.reshape(&cfg(), 0.5));
        assert_eq!(q.market_due("SE"), Err(2 * period - Duration::from_nanos(1)));
    }

    /// A request whose record stopped being ours (its partition was revoked) leaves the queue
    /// without a token, so the next one is admitted at once (before the fix it spent the token and
    /// a rebalanced replica's revoked backlog held its quota for minutes).
    #[tokio::test]
    async fn a_revoked_request_takes_no_token() {
        let cfg = RateConfig {
            requests_per_second: 0.001, // one burst token, no refill within the test
            burst: 1,
            markets: BTreeMap::from([("SE".to_string(), 0.001)]),
            ..RateConfig::default()
        };
        let (l, slots) = (Limiter::new(&cfg), Semaphore::new(4));
        for market in ["SE", "DK"] {
            assert!(l.admit(market, &slots, || false).await.is_none(), "{market}");
        }
        let live = tokio::time::timeout(Duration::from_secs(5), l.admit("SE", &slots, || true)).await;
        assert!(matches!(live, Ok(Some(_))), "the burst token was still there");
        assert_eq!(l.wasted_global_tokens(), 0);
    }

    /// A market request that passed its market's line and waits for a slot while the share
    /// changes goes back to its line instead of spending a global token at the door.
    #[tokio::test]
    async fn a_share_change_while_a_market_request_waits_for_a_slot_wastes_no_global_token() {
        let cfg = RateConfig {
            markets: BTreeMap::from([("SE".to_string(), 2.0)]),
            ..RateConfig::default()
        };
        let l = Arc::new(Limiter::new(&cfg));
        let slots = Arc::new(Semaphore::new(1));
        l.acquire("SE").await; // the burst of 2, at once
        l.acquire("SE").await;
        let held = slots.clone().acquire_owned().await.unwrap();
        let waiter = {
            let (l, slots) = (l.clone(), slots.clone());
            tokio::spawn(async move {
                let _ = l.admit("SE", &slots, || true).await;
                Instant::now()
            })
        };
        // Past SE's hint (0.5 s) the request waits for the slot; the share halves meanwhile.
        tokio::time::sleep(Duration::from_millis(600)).await;
        l.set_share(0.5);
        let changed = Instant::now();
        drop(held);
        let left = waiter.await.unwrap();
        assert_eq!(l.wasted_global_tokens(), 0);
        // SE at 1/s from the change on (timing lower bound only).
        assert!(
            left.duration_since(changed) >= Duration::from_millis(990),
            "left {:?} after the share change",
            left.duration_since(changed)
        );
    }

    #[tokio::test]
    async fn a_share_change_hands_out_no_fresh_burst() {
        let cfg = RateConfig {
            requests_per_second: 10.0,
            burst: 10,
            ..RateConfig::default()
        };
        let l = Limiter::new(&cfg);
        let start = Instant::now();
        for _ in 0..10 {
            l.acquire("SE").await; // the whole burst, at once
        }
        l.set_share(0.5);
        l.set_share(1.0);
        l.acquire("SE").await;
        // The 11th request waits for a token earned at 10/s: ~100 ms (timing lower bound only).
        assert!(
            start.elapsed() >= Duration::from_millis(80),
            "a share change handed out a fresh burst: 11 requests in {:?}",
            start.elapsed()
        );
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
