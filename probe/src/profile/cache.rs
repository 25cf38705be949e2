//! A bounded map with least-recently-used eviction, for the symbol caches:
//! the probe's memory must not grow with the number of distinct PCs, code
//! objects or binaries it has seen.

use std::collections::HashMap;
use std::hash::Hash;

/// At most `capacity` entries; inserting into a full cache evicts the
/// least recently used quarter at once (one sort per `capacity / 4`
/// inserts instead of bookkeeping on every hit).
#[derive(Debug)]
pub struct BoundedCache<K, V> {
    entries: HashMap<K, (V, u64)>,
    capacity: usize,
    clock: u64,
    evicted: u64,
}

impl<K: Eq + Hash + Clone, V> BoundedCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(4),
            clock: 0,
            evicted: 0,
        }
    }

    pub fn get(&mut self, key: &K) -> Option<&V> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(key).map(|(value, used)| {
            *used = clock;
            &*value
        })
    }

    pub fn insert(&mut self, key: K, value: V) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            let mut ages: Vec<(u64, K)> = self
                .entries
                .iter()
                .map(|(k, (_, used))| (*used, k.clone()))
                .collect();
            ages.sort_unstable_by_key(|(used, _)| *used);
            for (_, k) in ages.into_iter().take(self.capacity / 4) {
                self.entries.remove(&k);
                self.evicted += 1;
            }
        }
        self.clock += 1;
        self.entries.insert(key, (value, self.clock));
    }

    pub fn remove_if(&mut self, mut drop: impl FnMut(&K) -> bool) {
        self.entries.retain(|k, _| !drop(k));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries evicted for room so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_cache_evicts_the_least_recently_used_and_stays_bounded() {
        let mut cache = BoundedCache::new(8);
        for i in 0..8 {
            cache.insert(i, i);
        }
        // Touch the first four: the other four are now the oldest.
        for i in 0..4 {
            assert_eq!(cache.get(&i), Some(&i));
        }
        cache.insert(100, 100);
        assert_eq!(cache.len(), 7, "a quarter evicted, one inserted");
        for i in 0..4 {
            assert!(cache.get(&i).is_some(), "recently used {i} survives");
        }
        assert!(cache.get(&4).is_none(), "the oldest entries go first");
        for i in 1000..2000 {
            cache.insert(i, i);
        }
        assert!(cache.len() <= 8, "never above capacity: {}", cache.len());
        assert!(cache.evicted() > 900);
    }
}
