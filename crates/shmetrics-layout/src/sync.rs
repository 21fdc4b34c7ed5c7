//! The atomics every shared word goes through: std's, or loom's when the crate is built with
//! `RUSTFLAGS="--cfg loom"` so that `tests/loom.rs` can explore every interleaving (and every
//! value a relaxed load may return) of the publish protocols in [`crate::slots`] and
//! [`crate::view`].
//!
//! Under loom, memory cannot be viewed as atomics, so [`crate::view::words_from_raw`] and
//! [`crate::view::SlotBlock`] do not exist; models build their words with
//! `AtomicU64::new`. Everything else in the crate compiles the same way under both.

#[cfg(loom)]
pub use loom::hint::spin_loop;
#[cfg(loom)]
pub use loom::sync::atomic::{AtomicU64, Ordering, fence};

#[cfg(not(loom))]
pub use std::hint::spin_loop;
#[cfg(not(loom))]
pub use std::sync::atomic::{AtomicU64, Ordering, fence};

/// Loads an `f64` stored as its bits.
#[inline(always)]
pub fn load_f64(word: &AtomicU64, order: Ordering) -> f64 {
    f64::from_bits(word.load(order))
}

/// Stores an `f64` as its bits.
#[inline(always)]
pub fn store_f64(word: &AtomicU64, v: f64, order: Ordering) {
    word.store(v.to_bits(), order);
}

/// Adds `v` to the `f64` stored as the bits of `word`: a compare-and-swap loop, `order` on
/// the successful exchange (its read and its write), relaxed on a failed one (which
/// publishes nothing and is retried).
///
/// Returns whether another write to `word` came between this one's read and its exchange
/// (the exchange found another value): the sign that another thread writes the same word
/// at the same time, which writers use to spread a series over copies. Free when `false`:
/// the loop's own exit.
#[inline(always)]
pub fn fetch_add_f64(word: &AtomicU64, v: f64, order: Ordering) -> bool {
    // Relaxed: only a starting guess; the exchange below checks it.
    let mut current = word.load(Ordering::Relaxed);
    let mut contended = false;
    loop {
        let next = (f64::from_bits(current) + v).to_bits();
        match word.compare_exchange_weak(current, next, order, Ordering::Relaxed) {
            Ok(_) => return contended,
            // A weak exchange may also fail spuriously (on LL/SC machines) with the value
            // unchanged: that is no other writer.
            Err(actual) => {
                contended |= actual != current;
                current = actual;
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn f64_words_hold_the_bits() {
        let word = AtomicU64::new(0);
        store_f64(&word, -2.5, Ordering::Relaxed);
        assert_eq!(word.load(Ordering::Relaxed), (-2.5f64).to_bits());
        // Alone on the word: no other write came between the read and the exchange.
        assert!(!fetch_add_f64(&word, 4.0, Ordering::Release));
        assert_eq!(load_f64(&word, Ordering::Acquire), 1.5);
        fetch_add_f64(&word, f64::INFINITY, Ordering::Relaxed);
        assert_eq!(load_f64(&word, Ordering::Relaxed), f64::INFINITY);
    }

    #[test]
    fn concurrent_f64_adds_are_all_kept() {
        let word = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..2_000 {
                        fetch_add_f64(&word, 0.5, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(load_f64(&word, Ordering::Relaxed), 4_000.0);
    }
}
