//! Per-object exponential backoff for transient reconcile errors.

use std::{collections::HashMap, sync::Mutex, time::Duration};

/// Failure counts per object key; reset when the object reconciles cleanly.
///
/// kube-runtime's `error_policy` only says *when* to retry, so the attempt
/// count has to live somewhere: here, keyed by `kind/namespace/name`.
#[derive(Debug, Default)]
pub struct Backoffs {
    failures: Mutex<HashMap<String, u32>>,
}

/// First retry delay; doubles per consecutive failure.
const BASE: Duration = Duration::from_millis(500);
/// Upper bound so a recovered API server is noticed within minutes.
const MAX: Duration = Duration::from_secs(300);

impl Backoffs {
    /// Records one more failure for `key` and returns how long to wait.
    pub fn next_delay(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key.to_owned()).or_insert(0);
        let delay = BASE.saturating_mul(1u32 << (*n).min(16)).min(MAX);
        *n = n.saturating_add(1);
        delay
    }

    /// Forgets the failures of `key` (call after a successful reconcile).
    pub fn reset(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_per_failure_caps_and_resets_on_success() {
        let b = Backoffs::default();
        let first = b.next_delay("a");
        let second = b.next_delay("a");
        assert_eq!(
            second,
            first * 2,
            "second failure should wait twice as long"
        );
        assert_eq!(
            b.next_delay("other"),
            first,
            "objects back off independently"
        );
        for _ in 0..40 {
            b.next_delay("a");
        }
        assert_eq!(b.next_delay("a"), MAX, "delay must be capped");
        b.reset("a");
        assert_eq!(b.next_delay("a"), first, "success resets the backoff");
    }
}
