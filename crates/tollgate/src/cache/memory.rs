//! The in-process store: a moka cache bounded by the bytes it holds (each
//! entry weighs its answer plus a fixed overhead) and by age (`ttl_s`).

use std::time::Duration;

use super::{Entry, Key};

/// What an entry costs beside its body: the key, the cost and moka's own
/// bookkeeping, roughly. Counted so that a flood of tiny answers is bounded
/// too.
const ENTRY_OVERHEAD: u64 = 128;

pub(super) struct MemoryStore {
    cache: moka::sync::Cache<Key, Entry>,
}

impl MemoryStore {
    pub fn new(max_bytes: u64, ttl: Duration) -> MemoryStore {
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &Key, entry: &Entry| u32::try_from(weight(entry)).unwrap_or(u32::MAX))
            .time_to_live(ttl)
            .build();
        MemoryStore { cache }
    }

    pub fn get(&self, key: &Key) -> Option<Entry> {
        self.cache.get(key)
    }

    pub fn put(&self, key: Key, entry: Entry) {
        self.cache.insert(key, entry);
    }

    /// Bytes held, by the weigher (moka applies evictions in batches: call
    /// [`MemoryStore::sync`] first for the exact figure).
    pub fn size(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// Applies moka's pending evictions.
    pub fn sync(&self) {
        self.cache.run_pending_tasks();
    }
}

pub(super) fn weight(entry: &Entry) -> u64 {
    entry.body.len() as u64 + ENTRY_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::NanoUsd;
    use bytes::Bytes;

    #[test]
    fn the_weighted_size_never_exceeds_the_bound_under_distinct_entries() {
        let max = 256 * 1024;
        let store = MemoryStore::new(max, Duration::from_secs(300));
        for i in 0..5_000u32 {
            let body = Bytes::from(vec![b'x'; 500 + (i as usize % 1500)]);
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            store.put(
                Key(k),
                Entry {
                    body,
                    cost: NanoUsd(1),
                },
            );
            if i % 250 == 0 {
                store.sync();
                assert!(store.size() <= max, "{} > {max}", store.size());
            }
        }
        store.sync();
        assert!(store.size() <= max, "{} > {max}", store.size());
        assert!(
            store.size() > max / 2,
            "the cache holds something: {}",
            store.size()
        );
    }
}
