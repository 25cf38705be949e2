//! `/readyz` state: ready once every registered controller's watches synced.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

/// Tracks which controllers have synced their caches.
///
/// Controllers are registered by the runtime *before* any of them starts, so
/// a fast controller cannot make the operator look ready while a slow one is
/// still listing.
#[derive(Debug, Default)]
pub struct Readiness {
    synced: Mutex<BTreeMap<String, bool>>,
    /// A replica waiting for the leader Lease watches nothing; it reports
    /// ready so a rolling update of a multi-replica operator can proceed.
    standby: AtomicBool,
}

impl Readiness {
    pub fn register(&self, name: &str) {
        self.lock().entry(name.to_owned()).or_insert(false);
    }

    /// Marks `name` as synced (its watches produced their first event).
    pub fn mark_synced(&self, name: &str) {
        self.lock().insert(name.to_owned(), true);
    }

    pub fn set_standby(&self, standby: bool) {
        self.standby.store(standby, Ordering::SeqCst);
    }

    /// Ready when standing by, or when every registered controller synced.
    pub fn is_ready(&self) -> bool {
        self.standby.load(Ordering::SeqCst) || self.lock().values().all(|synced| *synced)
    }

    /// Names still waiting for their first sync (for the `/readyz` body).
    pub fn pending(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, s)| !**s)
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, bool>> {
        self.synced.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_after_every_registered_controller_synced() {
        let r = Readiness::default();
        r.register("collector");
        r.register("instrumentation");
        assert!(!r.is_ready(), "nothing synced yet");
        r.mark_synced("collector");
        assert!(!r.is_ready(), "instrumentation still pending");
        assert_eq!(r.pending(), vec!["instrumentation".to_owned()]);
        r.mark_synced("instrumentation");
        assert!(r.is_ready(), "all synced");
    }

    #[test]
    fn standby_replica_reports_ready() {
        let r = Readiness::default();
        r.register("collector");
        r.set_standby(true);
        assert!(
            r.is_ready(),
            "a standby replica watches nothing and must not block rollouts"
        );
    }
}
