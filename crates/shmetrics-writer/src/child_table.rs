//! An insert-only concurrent hash map, for finding a label child's handle: the families of
//! this crate map label values to their children with it, and `shmetrics-metrics`' recorder
//! maps `metrics` keys to handles. Public for that recorder; not part of the metrics API.
//!
//! Lookups take no lock and write nothing shared: hash the key (the caller does, once),
//! load the table pointer, probe, compare the stored hash and then the key. So threads
//! resolving the same key never contend on a cache line. Inserts are rare (first sight of a
//! key) and serialised by a mutex. Entries and tables are never freed before the map itself
//! is dropped, which is what makes handing out `&V` from a lock-free lookup sound: a grown
//! table copies the entry pointers, and old tables stay allocated (their total size is less
//! than the current one's).

use std::hash::{BuildHasher, Hash, Hasher};
use std::ptr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, Ordering};

/// Hashes label values, length-delimited, with a fixed fast hasher.
#[inline(always)]
pub(crate) fn hash_values<S: AsRef<str>>(values: impl IntoIterator<Item = S>) -> u64 {
    let mut h = rustc_hash::FxBuildHasher.build_hasher();
    for v in values {
        v.as_ref().hash(&mut h);
    }
    h.finish()
}

/// Whether `stored` holds exactly `values`, with [`short_eq`] on each value: the key
/// comparison of the families' tables.
#[inline(always)]
pub(crate) fn values_eq<S: AsRef<str>>(
    stored: &[Box<str>],
    values: impl IntoIterator<Item = S>,
) -> bool {
    let mut values = values.into_iter();
    for a in stored {
        match values.next() {
            Some(b) if short_eq(a.as_bytes(), b.as_ref().as_bytes()) => {}
            _ => return false,
        }
    }
    values.next().is_none()
}

/// Byte equality without a `memcmp` call for the short strings label values usually are
/// (up to 16 bytes: two overlapping word compares); `==` beyond that.
#[inline(always)]
fn short_eq(a: &[u8], b: &[u8]) -> bool {
    fn word(bytes: &[u8], at: usize) -> u64 {
        u64::from_ne_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
    }
    fn half(bytes: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0 => true,
        1..4 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..8 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

struct Entry<K, V> {
    hash: u64,
    key: K,
    value: V,
}

struct Table<K, V> {
    mask: usize,
    slots: Box<[AtomicPtr<Entry<K, V>>]>,
}

impl<K, V> Table<K, V> {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            mask: capacity - 1,
            slots: (0..capacity)
                .map(|_| AtomicPtr::new(ptr::null_mut()))
                .collect(),
        }
    }

    /// Puts `entry` in the first empty slot of its probe sequence. Only the inserter
    /// (holding the mutex) writes slots.
    fn place(&self, entry: *mut Entry<K, V>, hash: u64) {
        let mut i = hash as usize & self.mask;
        // SYNC POINT child-slot: relaxed load by the only writer of the slots.
        while !self.slots[i].load(Ordering::Relaxed).is_null() {
            i = (i + 1) & self.mask;
        }
        // SYNC POINT child-slot: release; publishes the entry's contents to lookups.
        self.slots[i].store(entry, Ordering::Release);
    }
}

struct Owned<K, V> {
    entries: Vec<*mut Entry<K, V>>,
    tables: Vec<*mut Table<K, V>>,
}

/// The map from keys `K` to values `V` (handles), insert-only.
///
/// The caller hashes keys (the same function for every call on one map) and passes an
/// equality test, so a lookup can take a borrowed form of the key (label values as `&str`s
/// where the map stores owned ones).
///
/// Fork safety: [`ChildTable::get`] takes no lock, so it works in a child forked while
/// another thread was inside any method. The other methods take the insert mutex (std's,
/// which a forked child can take if no thread held it at the fork); the writer calls them
/// only under its registry's state lock, which its fork handler holds across `fork()`, so
/// a forked child never inherits that mutex held (see the `fork` module).
pub struct ChildTable<K, V> {
    current: AtomicPtr<Table<K, V>>,
    owned: Mutex<Owned<K, V>>,
}

// SAFETY: the map lends `&K` (to equality tests) and `&V` to any thread, moves `K`s and `V`s
// in from the inserting thread and drops them on the dropping one, so it is Send and Sync
// when both are; the raw pointers are owned by the map.
unsafe impl<K: Send + Sync, V: Send + Sync> Send for ChildTable<K, V> {}
// SAFETY: as above.
unsafe impl<K: Send + Sync, V: Send + Sync> Sync for ChildTable<K, V> {}

const INITIAL_CAPACITY: usize = 8;

impl<K, V> Default for ChildTable<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> std::fmt::Debug for ChildTable<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No lock: a `Debug` call must not wait for an insert.
        f.debug_struct("ChildTable").finish_non_exhaustive()
    }
}

impl<K, V> ChildTable<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        let table = Box::into_raw(Box::new(Table::with_capacity(INITIAL_CAPACITY)));
        Self {
            current: AtomicPtr::new(table),
            owned: Mutex::new(Owned {
                entries: Vec::new(),
                tables: vec![table],
            }),
        }
    }

    /// The value stored for the key with this `hash` for which `eq` holds, without a lock.
    #[inline]
    pub fn get(&self, hash: u64, eq: impl Fn(&K) -> bool) -> Option<&V> {
        // SYNC POINT child-table: acquire; pairs with the release that published the table.
        let table_ptr = self.current.load(Ordering::Acquire);
        // SAFETY: tables are freed only in Drop, which needs `&mut self`.
        let table = unsafe { &*table_ptr };
        let mut i = hash as usize & table.mask;
        loop {
            // SYNC POINT child-slot: acquire; pairs with the release in `Table::place`.
            let entry_ptr = table.slots[i].load(Ordering::Acquire);
            if entry_ptr.is_null() {
                return None;
            }
            // SAFETY: entries are freed only in Drop; the acquire above makes the entry's
            // contents visible.
            let entry = unsafe { &*entry_ptr };
            if entry.hash == hash && eq(&entry.key) {
                return Some(&entry.value);
            }
            i = (i + 1) & table.mask;
        }
    }

    /// The value stored for the key (as in [`ChildTable::get`]), or else the key and value
    /// `make` returns, stored. Takes the insert mutex: call [`ChildTable::get`] first.
    /// `make` runs under the mutex, at most once per key; of concurrent inserts of one key
    /// the first is kept.
    pub fn get_or_insert_with(
        &self,
        hash: u64,
        eq: impl Fn(&K) -> bool,
        make: impl FnOnce() -> (K, V),
    ) -> &V {
        let mut owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = self.get(hash, eq) {
            return v;
        }
        let (key, value) = make();
        let entry = Box::into_raw(Box::new(Entry { hash, key, value }));
        owned.entries.push(entry);
        // SYNC POINT child-table: relaxed; only the mutex holder replaces the table.
        let table_ptr = self.current.load(Ordering::Relaxed);
        // SAFETY: tables are freed only in Drop.
        let table = unsafe { &*table_ptr };
        if owned.entries.len() * 2 > table.slots.len() {
            let bigger = Table::with_capacity(table.slots.len() * 2);
            for &e in &owned.entries {
                // SAFETY: every owned entry is live until Drop.
                let h = unsafe { (*e).hash };
                bigger.place(e, h);
            }
            let bigger = Box::into_raw(Box::new(bigger));
            owned.tables.push(bigger);
            // SYNC POINT child-table: release; publishes the new table and its slots.
            self.current.store(bigger, Ordering::Release);
        } else {
            table.place(entry, hash);
        }
        // SAFETY: just inserted; lives until Drop.
        unsafe { &(*entry).value }
    }

    /// Every stored value, in insertion order. Takes the insert mutex.
    pub fn values(&self) -> Vec<&V> {
        let owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
        owned
            .entries
            .iter()
            // SAFETY: entries live until Drop, which needs `&mut self`.
            .map(|&e| unsafe { &(*e).value })
            .collect()
    }

    /// How many keys are stored. Takes the insert mutex.
    pub fn len(&self) -> usize {
        self.owned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .len()
    }

    /// Whether no key is stored. Takes the insert mutex.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K, V> Drop for ChildTable<K, V> {
    fn drop(&mut self) {
        let owned = self.owned.get_mut().unwrap_or_else(|p| p.into_inner());
        for &e in &owned.entries {
            // SAFETY: created by Box::into_raw in get_or_insert_with and freed only here, once.
            drop(unsafe { Box::from_raw(e) });
        }
        for &t in &owned.tables {
            // SAFETY: created by Box::into_raw and freed only here, once.
            drop(unsafe { Box::from_raw(t) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    type Key = Box<[Box<str>]>;

    fn key<S: AsRef<str>>(values: &[S]) -> Key {
        values.iter().map(|s| Box::from(s.as_ref())).collect()
    }

    fn get<'t, V, S: AsRef<str>>(table: &'t ChildTable<Key, V>, values: &[S]) -> Option<&'t V> {
        table.get(hash_values(values), |k| values_eq(k, values))
    }

    fn insert<'t, V, S: AsRef<str>>(table: &'t ChildTable<Key, V>, values: &[S], v: V) -> &'t V {
        let eq = |k: &Key| values_eq(k, values);
        table.get_or_insert_with(hash_values(values), eq, || (key(values), v))
    }

    #[test]
    fn insert_and_find_across_growth() {
        let table = ChildTable::new();
        for i in 0..1000u32 {
            let key = [format!("k{i}"), "x".to_string()];
            assert_eq!(*insert(&table, &key, i), i);
        }
        for i in 0..1000u32 {
            let key = [format!("k{i}"), "x".to_string()];
            assert_eq!(get(&table, &key), Some(&i));
        }
        assert_eq!(get(&table, &["k1"]), None);
        assert_eq!(table.values().len(), 1000);
        assert_eq!(table.len(), 1000);
        let values: Vec<u32> = table.values().into_iter().copied().collect();
        assert!(values.iter().copied().eq(0..1000), "insertion order");
    }

    #[test]
    fn short_eq_is_byte_equality() {
        let strings: Vec<String> = (0..=20usize)
            .flat_map(|n| {
                let base: String = (0..n).map(|i| char::from(b'a' + (i % 7) as u8)).collect();
                // The same length differing at the first, middle or last byte.
                let mut variants = vec![base.clone()];
                for at in [0, n / 2, n.saturating_sub(1)] {
                    if n > 0 {
                        let mut bytes = base.clone().into_bytes();
                        bytes[at] = b'z';
                        variants.push(String::from_utf8(bytes).unwrap());
                    }
                }
                variants
            })
            .collect();
        for a in &strings {
            for b in &strings {
                assert_eq!(short_eq(a.as_bytes(), b.as_bytes()), a == b, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn second_insert_keeps_first_value() {
        let table = ChildTable::new();
        insert(&table, &["a"], 1);
        assert_eq!(*insert(&table, &["a"], 2), 1);
        assert_eq!(table.len(), 1);
        assert!(!table.is_empty());
    }

    #[test]
    fn equal_hashes_are_told_apart_by_the_key() {
        // Every key with one hash: lookups must compare keys, not trust the hash.
        let table = ChildTable::new();
        for i in 0..100u32 {
            let values = [i.to_string()];
            let eq = |k: &Key| values_eq(k, &values);
            table.get_or_insert_with(7, eq, || (key(&values), i));
        }
        for i in 0..100u32 {
            let values = [i.to_string()];
            assert_eq!(table.get(7, |k| values_eq(k, &values)), Some(&i));
        }
        assert_eq!(table.get(7, |k| values_eq(k, ["x"])), None);
    }

    #[test]
    fn concurrent_lookups_during_inserts() {
        let table = Arc::new(ChildTable::new());
        let writer = {
            let table = Arc::clone(&table);
            std::thread::spawn(move || {
                for i in 0..2000u32 {
                    insert(&table, &[i.to_string()], i);
                }
            })
        };
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let table = Arc::clone(&table);
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        for i in 0..2000u32 {
                            if let Some(v) = get(&table, &[i.to_string()]) {
                                assert_eq!(*v, i);
                            }
                        }
                    }
                })
            })
            .collect();
        writer.join().unwrap();
        for r in readers {
            r.join().unwrap();
        }
    }

    #[test]
    fn concurrent_lookups_and_inserts_agree() {
        // Several threads insert the same keys in different orders: each key is stored
        // once, and every thread gets the stored value.
        let table = Arc::new(ChildTable::new());
        let threads: Vec<_> = (0..3)
            .map(|t| {
                let table = Arc::clone(&table);
                std::thread::spawn(move || {
                    for round in 0..3 {
                        for i in 0..2000 {
                            let i = (i * 7 + t * 13 + round) % 2000;
                            let values = [i.to_string()];
                            let v = match get(&table, &values) {
                                Some(v) => *v,
                                None => *insert(&table, &values, i),
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
