//! Retry policy: exponential backoff with full jitter, `Retry-After` honoured, and a budget.
//! Pure (the random source is passed in). Guarantees: the n-th wait is in
//! [0, min(max_backoff, initial * 2^n)] unless the server asked for longer (capped at
//! `max_retry_after`); with the default budget (unlimited) nothing is ever given up.

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

/// Backoff state for one notification.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// Attempts made so far.
    pub attempts: u32,
    /// When the first attempt started.
    started: std::time::Instant,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    /// A fresh state; call before the first attempt.
    pub fn new() -> Self {
        Backoff {
            attempts: 0,
            started: std::time::Instant::now(),
        }
    }

    /// Time since the first attempt.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// The ceiling of the n-th (0-based) backoff: min(max, initial * 2^n).
pub fn ceiling(cfg: &RetryConfig, retry: u32) -> Duration {
    let factor = 2u32.saturating_pow(retry.min(31));
    cfg.initial_backoff.saturating_mul(factor).min(cfg.max_backoff)
}

/// Decides after attempt number `attempts` (1-based) failed transiently, `elapsed` after the
/// first attempt. `unit` is a uniform random number in [0, 1) for full jitter.
/// `budgeted` is false for configuration-class errors, which are never given up.
pub fn next(
    cfg: &RetryConfig,
    attempts: u32,
    elapsed: Duration,
    retry_after: Option<Duration>,
    budgeted: bool,
    unit: f64,
) -> Next {
    if budgeted {
        let out_of_attempts = cfg.max_attempts > 0 && attempts >= cfg.max_attempts;
        let out_of_time = !cfg.max_elapsed.is_zero() && elapsed >= cfg.max_elapsed;
        if out_of_attempts || out_of_time {
            return Next::GiveUp;
        }
    }
    let jittered = ceiling(cfg, attempts.saturating_sub(1)).mul_f64(unit.clamp(0.0, 1.0));
    let wait = match retry_after {
        Some(ra) => ra.min(cfg.max_retry_after).max(jittered),
        None => jittered,
    };
    Next::RetryAfter(wait)
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

    proptest! {
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
