//! The helpers every layer needs, kept once: the wall clock in epoch milliseconds, a mutex lock
//! that rides over poisoning, and the hash map of the hot path. Guarantees: none panics; a
//! poisoned lock hands out the data as the panicking task left it. Limits: `now_ms` follows the
//! system clock, jumps too.

use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time in epoch milliseconds (0 if the clock reads before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A hash map on the hot path: foldhash, seeded per process, instead of the default SipHash (a
/// lookup per record or per delivery hashes its key). Only for keys the process made or took from
/// its configuration, or for a map bounded in size: no crafted set of keys then makes a lookup long.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Locks a mutex, riding over poisoning (a panicked task must not wedge the pipeline).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_still_hands_out_its_data() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
        assert!(now_ms() > 1_700_000_000_000);
    }
}
