//! An insert-only concurrent hash table from label values to child handles.
//!
//! Lookups take no lock and write nothing shared: hash the values, load the table pointer,
//! probe. So threads resolving the same label values never contend on a cache line.
//! Inserts are rare (first sight of a label set) and serialised by a mutex. Entries and
//! tables are never freed before the table itself is dropped, which is what makes handing
//! out `&V` from a lock-free lookup sound: a grown table copies the entry pointers, and
//! old tables stay allocated (their total size is less than the current one's).

use std::hash::{BuildHasher, Hash, Hasher};
use std::ptr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, Ordering};

/// Hashes label values, length-delimited, with a fixed fast hasher.
pub(crate) fn hash_values<S: AsRef<str>>(values: &[S]) -> u64 {
    let mut h = rustc_hash::FxBuildHasher.build_hasher();
    for v in values {
        v.as_ref().hash(&mut h);
    }
    h.finish()
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

struct Entry<V> {
    hash: u64,
    key: Box<[Box<str>]>,
    value: V,
}

struct Table<V> {
    mask: usize,
    slots: Box<[AtomicPtr<Entry<V>>]>,
}

impl<V> Table<V> {
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
    fn place(&self, entry: *mut Entry<V>, hash: u64) {
        let mut i = hash as usize & self.mask;
        // SYNC POINT child-slot: relaxed load by the only writer of the slots.
        while !self.slots[i].load(Ordering::Relaxed).is_null() {
            i = (i + 1) & self.mask;
        }
        // SYNC POINT child-slot: release; publishes the entry's contents to lookups.
        self.slots[i].store(entry, Ordering::Release);
    }
}

struct Owned<V> {
    entries: Vec<*mut Entry<V>>,
    tables: Vec<*mut Table<V>>,
}

/// The table. `V` is a child handle.
pub(crate) struct ChildTable<V> {
    current: AtomicPtr<Table<V>>,
    owned: Mutex<Owned<V>>,
}

// SAFETY: the table hands out `&V` to any thread and moves `V`s in from the inserting
// thread, so it is Send/Sync exactly when V is; the raw pointers are owned by the table.
unsafe impl<V: Send + Sync> Send for ChildTable<V> {}
// SAFETY: as above.
unsafe impl<V: Send + Sync> Sync for ChildTable<V> {}

const INITIAL_CAPACITY: usize = 8;

impl<V> ChildTable<V> {
    pub(crate) fn new() -> Self {
        let table = Box::into_raw(Box::new(Table::with_capacity(INITIAL_CAPACITY)));
        Self {
            current: AtomicPtr::new(table),
            owned: Mutex::new(Owned {
                entries: Vec::new(),
                tables: vec![table],
            }),
        }
    }

    /// Finds the value stored for `key` (with `hash` from [`hash_values`]).
    #[inline]
    pub(crate) fn get<S: AsRef<str>>(&self, hash: u64, key: &[S]) -> Option<&V> {
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
            if entry.hash == hash
                && entry.key.len() == key.len()
                && entry
                    .key
                    .iter()
                    .zip(key)
                    .all(|(a, b)| short_eq(a.as_bytes(), b.as_ref().as_bytes()))
            {
                return Some(&entry.value);
            }
            i = (i + 1) & table.mask;
        }
    }

    /// Inserts `value` for `key` unless present, and returns the stored value. The caller
    /// normally checked [`ChildTable::get`] first; a concurrent insert of the same key is
    /// resolved here, under the mutex, keeping the first value.
    pub(crate) fn insert_with<S: AsRef<str>>(
        &self,
        hash: u64,
        key: &[S],
        make: impl FnOnce() -> V,
    ) -> &V {
        let mut owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = self.get(hash, key) {
            return v;
        }
        let entry = Box::into_raw(Box::new(Entry {
            hash,
            key: key.iter().map(|s| Box::from(s.as_ref())).collect(),
            value: make(),
        }));
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

    /// Every stored value, in insertion order.
    pub(crate) fn values(&self) -> Vec<&V> {
        let owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
        owned
            .entries
            .iter()
            // SAFETY: entries live until Drop, which needs `&mut self`.
            .map(|&e| unsafe { &(*e).value })
            .collect()
    }
}

impl<V> Drop for ChildTable<V> {
    fn drop(&mut self) {
        let owned = self.owned.get_mut().unwrap_or_else(|p| p.into_inner());
        for &e in &owned.entries {
            // SAFETY: created by Box::into_raw in insert_with and freed only here, once.
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

    #[test]
    fn insert_and_find_across_growth() {
        let table = ChildTable::new();
        for i in 0..1000u32 {
            let key = [format!("k{i}"), "x".to_string()];
            let v = table.insert_with(hash_values(&key), &key, || i);
            assert_eq!(*v, i);
        }
        for i in 0..1000u32 {
            let key = [format!("k{i}"), "x".to_string()];
            assert_eq!(table.get(hash_values(&key), &key), Some(&i));
        }
        let missing = ["k1".to_string()];
        assert_eq!(table.get(hash_values(&missing), &missing), None);
        assert_eq!(table.values().len(), 1000);
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
        let key = ["a"];
        table.insert_with(hash_values(&key), &key, || 1);
        assert_eq!(*table.insert_with(hash_values(&key), &key, || 2), 1);
    }

    #[test]
    fn concurrent_lookups_during_inserts() {
        let table = Arc::new(ChildTable::new());
        let writer = {
            let table = Arc::clone(&table);
            std::thread::spawn(move || {
                for i in 0..2000u32 {
                    let key = [i.to_string()];
                    table.insert_with(hash_values(&key), &key, || i);
                }
            })
        };
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let table = Arc::clone(&table);
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        for i in 0..2000u32 {
                            let key = [i.to_string()];
                            if let Some(v) = table.get(hash_values(&key), &key) {
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
}
