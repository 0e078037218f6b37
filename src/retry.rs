//! Retry policy: exponential backoff with full jitter, `Retry-After` honoured, and a budget that
//! is charged for transient failures only. Pure (the random source and the durations are passed
//! in). Guarantees: the n-th wait is in [0, min(max_backoff, initial * 2^n)] unless the server
//! asked for longer (capped at `max_retry_after`); `max_attempts` counts transient attempts and
//! `max_elapsed` the time charged to them (see [`Backoff`]), so configuration-class answers and
//! waits for the limiter never spend the budget; with the default budget (unlimited) nothing is
//! ever given up.

use std::time::Duration;

use crate::config::RetryConfig;

/// Decision after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait this long, then try again.
    RetryAfter(Duration),
    /// The transient budget is spent: dead-letter.
    GiveUp,
}

/// What a failed attempt costs the transient budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// A transient failure (408, 429, 5xx, timeout, connection): counted and timed.
    Transient,
    /// A configuration-class answer: retried without limit, costs nothing.
    Free,
}

/// Backoff and budget state for one notification.
///
/// The budget's clock runs only while a transient failure is being dealt with: from the send of
/// a transient attempt to its answer, plus the backoff after it. It is not charged for the wait
/// before the first send, for waits for the rate limiter or a concurrency slot (backpressure, not
/// failure), nor for configuration-class answers and the backoff after them.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    /// Requests sent so far, of any class (the backoff ceiling grows with these).
    pub attempts: u32,
    /// Transient attempts so far (what `max_attempts` counts).
    pub transient_attempts: u32,
    /// Time charged to the transient budget so far (what `max_elapsed` counts).
    charged: Duration,
}

impl Backoff {
    /// A fresh state; call before the first attempt.
    pub fn new() -> Self {
        Self::default()
    }

    /// Time charged to the transient budget so far.
    pub fn charged(&self) -> Duration {
        self.charged
    }

    /// Decides after a failed attempt (already counted in `attempts`) that took `took` from send
    /// to answer. `unit` is a uniform random number in [0, 1) for full jitter.
    pub fn after_failure(
        &mut self,
        cfg: &RetryConfig,
        charge: Charge,
        took: Duration,
        retry_after: Option<Duration>,
        unit: f64,
    ) -> Next {
        if charge == Charge::Transient {
            self.transient_attempts += 1;
            self.charged = self.charged.saturating_add(took);
            if spent(cfg, self.transient_attempts, self.charged) {
                return Next::GiveUp;
            }
        }
        let wait = wait(cfg, self.attempts.saturating_sub(1), retry_after, unit);
        if charge == Charge::Transient {
            self.charged = self.charged.saturating_add(wait);
        }
        Next::RetryAfter(wait)
    }
}

/// The ceiling of the n-th (0-based) backoff: min(max, initial * 2^n).
pub fn ceiling(cfg: &RetryConfig, retry: u32) -> Duration {
    let factor = 2u32.saturating_pow(retry.min(31));
    cfg.initial_backoff.saturating_mul(factor).min(cfg.max_backoff)
}

/// Whether `transient` attempts and `charged` time exhaust the configured budget (0 = unlimited).
pub fn spent(cfg: &RetryConfig, transient: u32, charged: Duration) -> bool {
    let out_of_attempts = cfg.max_attempts > 0 && transient >= cfg.max_attempts;
    let out_of_time = !cfg.max_elapsed.is_zero() && charged >= cfg.max_elapsed;
    out_of_attempts || out_of_time
}

/// The wait before the retry after the n-th (0-based) failure: full jitter under the ceiling, or
/// the server's `Retry-After` (capped at `max_retry_after`) when that is longer.
pub fn wait(cfg: &RetryConfig, retry: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
    let jittered = ceiling(cfg, retry).mul_f64(unit.clamp(0.0, 1.0));
    match retry_after {
        Some(ra) => ra.min(cfg.max_retry_after).max(jittered),
        None => jittered,
    }
}

/// Decides after attempt number `attempts` (1-based) failed, with `elapsed` charged to the
/// budget; `budgeted` is false for configuration-class errors, which are never given up.
/// (The stateless form of [`Backoff::after_failure`], over the same `spent` and `wait`: what
/// the tests check the policy with.)
#[cfg(test)]
pub fn next(
    cfg: &RetryConfig,
    attempts: u32,
    elapsed: Duration,
    retry_after: Option<Duration>,
    budgeted: bool,
    unit: f64,
) -> Next {
    if budgeted && spent(cfg, attempts, elapsed) {
        return Next::GiveUp;
    }
    Next::RetryAfter(wait(cfg, attempts.saturating_sub(1), retry_after, unit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg() -> RetryConfig {
        RetryConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            max_attempts: 0,
            max_elapsed: Duration::ZERO,
            max_retry_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn ceilings_double_then_cap() {
        let c = cfg();
        assert_eq!(ceiling(&c, 0), Duration::from_millis(100));
        assert_eq!(ceiling(&c, 3), Duration::from_millis(800));
        assert_eq!(ceiling(&c, 40), Duration::from_secs(10));
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let c = cfg();
        assert_eq!(
            next(&c, 1, Duration::ZERO, Some(Duration::from_secs(5)), true, 0.5),
            Next::RetryAfter(Duration::from_secs(5))
        );
        assert_eq!(
            next(&c, 1, Duration::ZERO, Some(Duration::from_secs(500)), true, 0.5),
            Next::RetryAfter(Duration::from_secs(60))
        );
    }

    #[test]
    fn budgets() {
        let mut c = cfg();
        assert!(matches!(
            next(&c, 1_000_000, Duration::from_secs(1_000_000), None, true, 0.1),
            Next::RetryAfter(_)
        ));
        c.max_attempts = 3;
        assert!(matches!(
            next(&c, 2, Duration::ZERO, None, true, 0.1),
            Next::RetryAfter(_)
        ));
        assert_eq!(next(&c, 3, Duration::ZERO, None, true, 0.1), Next::GiveUp);
        assert!(matches!(
            next(&c, 3, Duration::ZERO, None, false, 0.1),
            Next::RetryAfter(_)
        ));
        c.max_attempts = 0;
        c.max_elapsed = Duration::from_secs(5);
        assert_eq!(next(&c, 1, Duration::from_secs(6), None, true, 0.1), Next::GiveUp);
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn configuration_answers_cost_the_budget_nothing() {
        let mut c = cfg();
        c.max_attempts = 2;
        c.max_elapsed = Duration::from_secs(1);
        let mut b = Backoff::new();
        // An hour of 401s, then one 500: one transient attempt, 10 ms charged.
        for _ in 0..100 {
            b.attempts += 1;
            let n = b.after_failure(&c, Charge::Free, Duration::from_secs(36), None, 0.5);
            assert!(matches!(n, Next::RetryAfter(_)));
        }
        b.attempts += 1;
        assert!(matches!(
            b.after_failure(&c, Charge::Transient, 10 * MS, None, 0.0),
            Next::RetryAfter(_)
        ));
        assert_eq!((b.transient_attempts, b.charged()), (1, 10 * MS));
        // The second transient attempt spends max_attempts = 2.
        b.attempts += 1;
        assert_eq!(
            b.after_failure(&c, Charge::Transient, 10 * MS, None, 0.0),
            Next::GiveUp
        );
    }

    #[test]
    fn max_elapsed_counts_transient_answers_and_their_backoff() {
        let mut c = cfg();
        c.max_elapsed = Duration::from_millis(500);
        let mut b = Backoff::new();
        b.attempts = 1;
        // 100 ms to answer, then a Retry-After of 300 ms: 400 ms charged, not yet spent.
        assert_eq!(
            b.after_failure(&c, Charge::Transient, 100 * MS, Some(300 * MS), 0.0),
            Next::RetryAfter(300 * MS)
        );
        assert_eq!(b.charged(), 400 * MS);
        b.attempts = 2;
        assert_eq!(
            b.after_failure(&c, Charge::Transient, 100 * MS, None, 0.0),
            Next::GiveUp
        );
        assert_eq!(b.charged(), 500 * MS);
    }

    proptest! {
        /// Whatever mix of answers, the budget gives up only on a transient failure, and only
        /// when the transient count or the transient time reached its limit.
        #[test]
        fn only_transient_failures_spend_the_budget(
            answers in proptest::collection::vec((any::<bool>(), 0u32..200, 0.0f64..1.0), 1..60),
        ) {
            let mut c = cfg();
            c.max_attempts = 5;
            c.max_elapsed = Duration::from_secs(2);
            let mut b = Backoff::new();
            for (transient, took_ms, unit) in answers {
                b.attempts += 1;
                let charge = if transient { Charge::Transient } else { Charge::Free };
                let before = b.clone();
                match b.after_failure(&c, charge, took_ms * MS, None, unit) {
                    Next::GiveUp => {
                        prop_assert!(transient);
                        prop_assert!(b.transient_attempts >= 5 || b.charged() >= c.max_elapsed);
                        break;
                    }
                    Next::RetryAfter(_) if !transient => {
                        prop_assert_eq!(b.transient_attempts, before.transient_attempts);
                        prop_assert_eq!(b.charged(), before.charged());
                    }
                    Next::RetryAfter(_) => prop_assert!(b.transient_attempts < 5),
                }
            }
        }

        #[test]
        fn full_jitter_stays_under_the_ceiling(attempts in 1u32..100, unit in 0.0f64..1.0) {
            let c = cfg();
            match next(&c, attempts, Duration::ZERO, None, true, unit) {
                Next::RetryAfter(d) => prop_assert!(d <= ceiling(&c, attempts - 1)),
                Next::GiveUp => prop_assert!(false, "unlimited budget gave up"),
            }
        }
    }
}
