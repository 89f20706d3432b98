//! A small map whose entries expire, used to keep hot credential checks off
//! the database. Entries live at most `ttl` (one second for grants), so a
//! change made on another node is seen within that time; changes made on this
//! node remove the entry at once.

use redwall_policy::Micros;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

pub struct TtlCache<K, V> {
    ttl: Micros,
    capacity: usize,
    entries: Mutex<HashMap<K, (Micros, V)>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Micros, capacity: usize) -> Self {
        TtlCache {
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Takes the key borrowed (a `&str` for a `String` key), so a lookup on
    /// a hot path copies nothing.
    pub fn get<Q>(&self, key: &Q, now: Micros) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let map = self.entries.lock().ok()?;
        match map.get(key) {
            Some((stored_at, v))
                if now.saturating_sub(*stored_at) < self.ttl && now >= *stored_at =>
            {
                Some(v.clone())
            }
            _ => None,
        }
    }

    pub fn insert(&self, key: K, value: V, now: Micros) {
        if let Ok(mut map) = self.entries.lock() {
            if map.len() >= self.capacity {
                // Expired entries go first; if the map is still full, start over
                // rather than grow without bound under a flood of distinct keys.
                map.retain(|_, (at, _)| now.saturating_sub(*at) < self.ttl);
                if map.len() >= self.capacity {
                    map.clear();
                }
            }
            map.insert(key, (now, value));
        }
    }

    pub fn remove(&self, key: &K) {
        if let Ok(mut map) = self.entries.lock() {
            map.remove(key);
        }
    }

    pub fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        if let Ok(mut map) = self.entries.lock() {
            map.retain(|k, (_, v)| keep(k, v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_can_be_removed() {
        let c = TtlCache::new(1_000_000, 10);
        c.insert("a", 1, 0);
        assert_eq!(c.get(&"a", 999_999), Some(1));
        assert_eq!(c.get(&"a", 1_000_000), None);
        c.insert("b", 2, 0);
        c.remove(&"b");
        assert_eq!(c.get(&"b", 1), None);
    }

    #[test]
    fn a_flood_of_keys_does_not_grow_the_map() {
        let c = TtlCache::new(1_000_000, 100);
        for i in 0..10_000 {
            c.insert(i, i, 0);
        }
        assert!(c.entries.lock().map(|m| m.len()).unwrap_or(usize::MAX) <= 100);
    }
}
