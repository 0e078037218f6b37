//! The ages of the events a replay sent, in bounded memory: an HDR histogram (`hdrhistogram`,
//! three significant digits, 1 ms to about two years) plus the exact min and max. Guarantee: the
//! same ~200 KiB whether the window holds a thousand records or a billion. Limits: quantiles are
//! within 0.1 % (and older than two years count as two years); a negative age (an event stamped
//! in the future) counts as 0 in the quantiles, while min shows it exactly.

use hdrhistogram::Histogram;

/// Largest age the quantiles tell apart, in ms (about two years); older events saturate.
const MAX_TRACKED_MS: u64 = 2 * 366 * 24 * 3_600_000;

/// Significant decimal digits kept per value (0.1 % resolution).
const SIGNIFICANT_DIGITS: u8 = 3;

/// Ages (ms) of sent notifications' events at send time.
#[derive(Debug, Clone)]
pub struct Ages {
    /// Non-negative ages, for the quantiles.
    hist: Histogram<u64>,
    /// Exact extremes (may be negative).
    min: i64,
    max: i64,
}

/// What the summary reports about the ages, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgeStats {
    /// How many ages were recorded.
    pub count: u64,
    /// Youngest (exact).
    pub min: i64,
    /// Median.
    pub p50: i64,
    /// 90th percentile.
    pub p90: i64,
    /// 99th percentile.
    pub p99: i64,
    /// Oldest (exact).
    pub max: i64,
}

impl Default for Ages {
    fn default() -> Self {
        Ages::new()
    }
}

impl Ages {
    /// An empty collection.
    pub fn new() -> Self {
        Ages {
            hist: Histogram::new_with_max(MAX_TRACKED_MS, SIGNIFICANT_DIGITS)
                .expect("constant histogram bounds are valid"),
            min: i64::MAX,
            max: i64::MIN,
        }
    }

    /// Records one age in milliseconds.
    pub fn record(&mut self, age_ms: i64) {
        self.hist.saturating_record(age_ms.max(0) as u64);
        self.min = self.min.min(age_ms);
        self.max = self.max.max(age_ms);
    }

    /// How many ages were recorded.
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// Min, p50, p90, p99 and max; None when empty. Quantiles are clamped into [min, max].
    pub fn stats(&self) -> Option<AgeStats> {
        if self.is_empty() {
            return None;
        }
        let q = |q: f64| (self.hist.value_at_quantile(q) as i64).clamp(self.min, self.max);
        Some(AgeStats {
            count: self.len(),
            min: self.min,
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            max: self.max,
        })
    }

    /// Bytes held on the heap (the histogram's counters): constant, whatever was recorded.
    pub fn heap_bytes(&self) -> usize {
        self.hist.distinct_values() * std::mem::size_of::<u64>()
    }
}

impl FromIterator<i64> for Ages {
    fn from_iter<I: IntoIterator<Item = i64>>(iter: I) -> Self {
        let mut a = Ages::new();
        for age in iter {
            a.record(age);
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Issue 11 item 8: a replay keeps one age per delivered notification; the memory for
    /// them must not grow with the window.
    #[test]
    fn memory_does_not_grow_with_the_window() {
        let small: Ages = (0..1_000).collect();
        let big: Ages = (0..2_000_000i64).map(|i| i * 7 % 86_400_000).collect();
        assert_eq!(big.len(), 2_000_000);
        assert_eq!(
            big.heap_bytes(),
            small.heap_bytes(),
            "2,000,000 ages take more memory than 1,000"
        );
        assert!(big.heap_bytes() <= 256 * 1024, "{} bytes", big.heap_bytes());
    }

    #[test]
    fn stats_of_few_values_are_exact_at_the_ends() {
        assert_eq!(Ages::new().stats(), None);
        let s = [5, 1, 9].into_iter().collect::<Ages>().stats().unwrap();
        assert_eq!((s.count, s.min, s.p50, s.max), (3, 1, 5, 9));
        let s = [-3_000, 60_000].into_iter().collect::<Ages>().stats().unwrap();
        assert_eq!(
            (s.min, s.max),
            (-3_000, 60_000),
            "a future-stamped event shows as a negative min"
        );
        let s = std::iter::repeat_n(60_000, 10).collect::<Ages>().stats().unwrap();
        assert_eq!((s.min, s.p50, s.p99, s.max), (60_000, 60_000, 60_000, 60_000));
        let old = 100 * 365 * 24 * 3_600_000i64;
        let s = [old].into_iter().collect::<Ages>().stats().unwrap();
        assert_eq!(
            (s.min, s.p50, s.max),
            (old, old, old),
            "past the tracked range: clamped to the exact max"
        );
    }

    proptest! {
        /// Quantiles are within 0.1 % (plus 1 ms) of the exact nearest-rank value.
        #[test]
        fn quantiles_are_close_to_exact(mut v in proptest::collection::vec(0i64..40 * 24 * 3_600_000, 1..500)) {
            let s = v.iter().copied().collect::<Ages>().stats().unwrap();
            v.sort_unstable();
            let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
            for (q, got) in [(0.5, s.p50), (0.9, s.p90), (0.99, s.p99)] {
                let want = rank(q);
                prop_assert!((got - want).abs() <= want / 1000 + 1, "q{q}: {got} vs exact {want}");
            }
            prop_assert_eq!((s.min, s.max), (v[0], v[v.len() - 1]));
        }
    }
}
