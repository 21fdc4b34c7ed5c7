//! An insert-only concurrent map from `metrics` keys to handles, in safe code.
//!
//! Every `counter!`/`gauge!`/`histogram!` call asks the recorder for a handle by its key, so
//! the lookup of a key seen before is the facade's hot path. It takes no lock and writes no
//! shared memory: one acquire load of the current level, then a linear probe over
//! [`OnceLock`] slots (an acquire load each), comparing the key's precomputed hash and
//! then the key.
//!
//! The map is a ladder of open-addressing tables ("levels") of 16, 32, 64... slots, each
//! set once and never freed before the map. Inserts are rare (first sight of a key) and
//! serialised by a mutex; they fill the current level up to half its slots, then build the
//! next level with every entry so far (entries are `Arc`s shared by all levels) and
//! publish its index. A lookup that raced an insert and missed falls back to the slow path,
//! which looks again under the mutex, so an entry is never created twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use metrics::Key;

/// Slots of the first level.
const FIRST_LEVEL: usize = 16;
/// Levels: the last holds `16 << 47` slots, far more than memory allows.
const LEVELS: usize = 48;

struct Entry<V> {
    key: Key,
    value: V,
}

struct Level<V> {
    mask: usize,
    slots: Box<[OnceLock<Arc<Entry<V>>>]>,
}

impl<V> Level<V> {
    fn new(capacity: usize) -> Self {
        Self {
            mask: capacity - 1,
            slots: (0..capacity).map(|_| OnceLock::new()).collect(),
        }
    }

    fn get(&self, key: &Key) -> Option<&V> {
        let hash = key.get_hash();
        let mut i = hash as usize & self.mask;
        // The load factor stays at most 1/2, so the probe meets an empty slot.
        while let Some(entry) = self.slots[i].get() {
            if entry.key.get_hash() == hash && entry.key == *key {
                return Some(&entry.value);
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// Puts `entry` in the first empty slot of its probe sequence. Only the inserter
    /// (holding the mutex) sets slots, so the slot it finds empty is still empty.
    fn place(&self, entry: Arc<Entry<V>>) {
        let mut i = entry.key.get_hash() as usize & self.mask;
        while self.slots[i].get().is_some() {
            i = (i + 1) & self.mask;
        }
        let placed = self.slots[i].set(entry);
        debug_assert!(placed.is_ok(), "only the mutex holder fills slots");
    }
}

/// The map. `V` is the handle stored per key.
pub(crate) struct KeyTable<V> {
    levels: [OnceLock<Level<V>>; LEVELS],
    current: AtomicUsize,
    /// Every entry, in insertion order; the mutex serialises inserts.
    entries: Mutex<Vec<Arc<Entry<V>>>>,
}

impl<V> KeyTable<V> {
    pub(crate) fn new() -> Self {
        let levels = std::array::from_fn(|_| OnceLock::new());
        let first = levels[0].set(Level::new(FIRST_LEVEL));
        debug_assert!(first.is_ok());
        Self {
            levels,
            current: AtomicUsize::new(0),
            entries: Mutex::new(Vec::new()),
        }
    }

    fn level(&self) -> &Level<V> {
        // SYNC POINT key-level: acquire; pairs with the release that published the level
        // (its slots were filled before).
        let index = self.current.load(Ordering::Acquire);
        self.levels[index].get().expect("a published level is set")
    }

    /// The value stored for `key`, without a lock.
    #[inline]
    pub(crate) fn get(&self, key: &Key) -> Option<&V> {
        self.level().get(key)
    }

    /// The value stored for `key`, or the one `make` returns, stored. `make` runs under the
    /// insert mutex, at most once per key; a concurrent insert of the same key keeps the
    /// first value.
    pub(crate) fn get_or_insert_with(&self, key: &Key, make: impl FnOnce() -> V) -> &V {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = self.get(key) {
            return v;
        }
        let entry = Arc::new(Entry {
            key: key.clone(),
            value: make(),
        });
        entries.push(Arc::clone(&entry));
        // SYNC POINT key-level: relaxed; only the mutex holder changes the index.
        let index = self.current.load(Ordering::Relaxed);
        let level = self.levels[index].get().expect("the current level is set");
        if entries.len() * 2 > level.slots.len() {
            let next = index + 1;
            let bigger = Level::new(level.slots.len() * 2);
            for e in entries.iter() {
                bigger.place(Arc::clone(e));
            }
            if self.levels[next].set(bigger).is_err() {
                unreachable!("each level is built once, under the mutex");
            }
            // SYNC POINT key-level: release; publishes the new level and its slots.
            self.current.store(next, Ordering::Release);
        } else {
            level.place(Arc::clone(&entry));
        }
        // `entries` keeps the entry alive as long as the table; the reference borrows self.
        drop(entries);
        self.get_inserted(&entry)
    }

    /// The value of an entry just inserted: found in the current level.
    fn get_inserted(&self, entry: &Entry<V>) -> &V {
        self.get(&entry.key)
            .expect("an inserted key is in the current level")
    }

    /// Number of keys stored.
    pub(crate) fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::Label;

    fn key(i: usize) -> Key {
        Key::from_parts("requests", vec![Label::new("n", i.to_string())])
    }

    #[test]
    fn insert_and_find_across_levels() {
        let table = KeyTable::new();
        for i in 0..5000 {
            assert_eq!(*table.get_or_insert_with(&key(i), || i), i);
        }
        for i in 0..5000 {
            assert_eq!(table.get(&key(i)), Some(&i));
        }
        assert_eq!(table.get(&Key::from_name("requests")), None);
        assert_eq!(table.len(), 5000);
    }

    #[test]
    fn second_insert_keeps_first_value() {
        let table = KeyTable::new();
        table.get_or_insert_with(&key(1), || 1);
        assert_eq!(*table.get_or_insert_with(&key(1), || 2), 1);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn keys_differ_by_name_and_labels_not_by_label_order() {
        // `metrics` keys compare labels as a set, and hash them order-independently.
        let table = KeyTable::new();
        let ab = Key::from_parts("x", vec![Label::new("a", "1"), Label::new("b", "2")]);
        let ba = Key::from_parts("x", vec![Label::new("b", "2"), Label::new("a", "1")]);
        let ab3 = Key::from_parts("x", vec![Label::new("a", "1"), Label::new("b", "3")]);
        let y = Key::from_parts("y", vec![Label::new("a", "1"), Label::new("b", "2")]);
        table.get_or_insert_with(&ab, || "ab");
        assert_eq!(*table.get_or_insert_with(&ba, || "ba"), "ab");
        table.get_or_insert_with(&ab3, || "ab3");
        table.get_or_insert_with(&y, || "y");
        assert_eq!(table.get(&ba), Some(&"ab"));
        assert_eq!(table.get(&ab3), Some(&"ab3"));
        assert_eq!(table.get(&y), Some(&"y"));
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn concurrent_lookups_and_inserts_agree() {
        let table = Arc::new(KeyTable::new());
        let threads: Vec<_> = (0..3)
            .map(|t| {
                let table = Arc::clone(&table);
                std::thread::spawn(move || {
                    for round in 0..3 {
                        for i in 0..2000 {
                            let i = (i * 7 + t * 13 + round) % 2000;
                            let v = match table.get(&key(i)) {
                                Some(v) => *v,
                                None => *table.get_or_insert_with(&key(i), || i),
                            };
                            assert_eq!(v, i);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(table.len(), 2000);
    }
}
