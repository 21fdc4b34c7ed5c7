//! A child's copies of its series: one, or several, each a series record of its own with
//! the same labels, which readers add up. Each thread writes the copy its number picks, so
//! threads writing one series at once need not fight over its cache lines.
//!
//! A striped family's series (`Registry::histogram_striped`, `counter_striped`) have their
//! copies from the start. Any other counter, histogram or summary series starts with one
//! and is spread over `Options::contention_stripes` copies the first time threads are
//! found writing it at once: [`CONTENDED_WRITES`] of its float exchanges (a histogram's or
//! summary's sum, a counter's fractional part) met another thread's write within
//! [`CONTENDED_WINDOW_NS`].
//! A thread whose copy another thread writes at the same time moves to another copy (of
//! every spread series: a thread has one number).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use shmetrics_layout::exemplar::exemplar_count;
use shmetrics_layout::sync::AtomicU64;
use shmetrics_layout::view::SlotBlock;

use crate::exemplars::{ExemplarSlots, Placed};
use crate::identity::now_nanos;
use crate::placement::{CopySource, Lines};

/// How many contended writes within [`CONTENDED_WINDOW_NS`] spread a series over copies.
/// Two threads that write one series without pause meet this many times in well under a
/// millisecond; two that write it a thousand times a second each meet about once a second.
pub(crate) const CONTENDED_WRITES: u32 = 64;

/// The window [`CONTENDED_WRITES`] must fall in: 1 ms.
pub(crate) const CONTENDED_WINDOW_NS: u64 = 1_000_000;

/// Whether a series spread over fewer copies than asked for was logged yet (once).
static FEWER_COPIES_LOGGED: AtomicBool = AtomicBool::new(false);

/// A copy's slots, and its exemplar slots (counters and histograms have them).
type Copy = (SlotBlock, Option<ExemplarSlots>);

/// A counter's, histogram's or summary's slots and exemplar slots, once or per copy.
#[derive(Clone, Debug)]
pub(crate) struct Copies {
    /// The first copy: the only one until the series is spread.
    first: Copy,
    /// Shared by the handle's clones.
    spread: Arc<Spread>,
}

#[derive(Debug)]
struct Spread {
    /// Every copy, the first above first, a power of two of them: set at creation for a
    /// striped family's series, else (under the registry's state lock, so a `fork()` never
    /// finds it half-set) when the series is found contended; unset while it has one copy.
    all: OnceLock<Box<[Copy]>>,
    /// How to place more copies: `None` for a striped family's series and where spreading
    /// is off.
    source: Option<CopySource>,
    /// Contended writes in the current window, and when the window began (ns since the
    /// epoch).
    contended: AtomicU32,
    window_start: AtomicU64,
}

impl Copies {
    /// The copies a child was placed with (`Placed::further`: all but the first).
    pub(crate) fn new(placed: Placed) -> Self {
        let first = (placed.slots, placed.exemplars);
        let all = OnceLock::new();
        if !placed.further.is_empty() {
            let further = (placed.further.into_iter()).map(|p| (p.slots, p.exemplars));
            let _ = all.set(std::iter::once(first.clone()).chain(further).collect());
        }
        Self {
            first,
            spread: Arc::new(Spread {
                all,
                source: placed.copy_source,
                contended: AtomicU32::new(0),
                window_start: AtomicU64::new(0),
            }),
        }
    }

    /// The copy this thread writes: the only one, or the one its number picks.
    #[inline(always)]
    fn pick(&self) -> &Copy {
        match self.spread.all.get() {
            None => &self.first,
            // A power of two: the mask picks one.
            Some(all) => &all[thread_number() & (all.len() - 1)],
        }
    }

    /// The slots this thread writes.
    #[inline(always)]
    pub(crate) fn mine(&self) -> &SlotBlock {
        &self.pick().0
    }

    /// The slots and exemplar slots this thread writes (of a counter or histogram).
    pub(crate) fn mine_with_exemplars(&self) -> (&SlotBlock, &ExemplarSlots) {
        let (slots, exemplars) = self.pick();
        let exemplars = exemplars.as_ref();
        (
            slots,
            exemplars.expect("a counter or histogram has exemplar slots"),
        )
    }

    /// Called after a write whose float exchange met another thread's write (the copy from
    /// [`Copies::mine`] is written by two threads at once): moves this thread to another
    /// copy of a spread series, or counts towards spreading this one.
    #[cold]
    #[inline(never)]
    pub(crate) fn contended(&self) {
        let spread = &*self.spread;
        if spread.all.get().is_some() {
            move_to_another_copy();
            return;
        }
        let Some(source) = &spread.source else {
            return;
        };
        let now = now_nanos();
        // SYNC POINT contention-count: relaxed; the window and the count only decide when
        // to spread (a race between two threads restarting the window loses a few counts),
        // they publish nothing: the copies are published by the `OnceLock`.
        let start = spread.window_start.load(Ordering::Relaxed);
        if now.saturating_sub(start) > CONTENDED_WINDOW_NS {
            // SYNC POINT contention-count: relaxed, as above.
            spread.window_start.store(now, Ordering::Relaxed);
            // SYNC POINT contention-count: relaxed, as above.
            spread.contended.store(1, Ordering::Relaxed);
            return;
        }
        // SYNC POINT contention-count: relaxed, as above. Only the write that reaches the
        // count spreads the series.
        if spread.contended.fetch_add(1, Ordering::Relaxed) + 1 == CONTENDED_WRITES {
            self.spread_over_copies(source);
        }
    }

    /// Spreads the series now, as when it is found contended: for tests, whose threads may
    /// never run at once on a loaded machine. A striped family's series has its copies
    /// already; where spreading is off (`contention_stripes: 1`) nothing happens.
    pub(crate) fn spread_now(&self) {
        if let Some(source) = &self.spread.source {
            self.spread_over_copies(source);
        }
    }

    /// Places the series' further copies and publishes them with the first: as many as
    /// `Options::contention_stripes` asks, or the largest power of two of copies that
    /// could be placed when segments ran out (then the few placed beyond it stay zero,
    /// which readers add as nothing).
    #[cold]
    fn spread_over_copies(&self, source: &CopySource) {
        let CopySource {
            shared,
            def,
            values,
        } = source;
        let mut state = shared.lock_state();
        self.spread.all.get_or_init(|| {
            let wanted = shared.options.contention_stripes;
            let exemplar_slots = exemplar_count(def.kind, def.bounds.len());
            let mut all = Vec::with_capacity(wanted);
            all.push(self.first.clone());
            while all.len() < wanted {
                match state.try_place_series(shared, def, values, Lines::Own) {
                    Ok((slots, at)) => {
                        let exemplars = exemplar_slots
                            .map(|n| ExemplarSlots::new(Arc::clone(shared), Some(at), n));
                        all.push((slots, exemplars));
                    }
                    Err(e) => {
                        // SYNC POINT log-once: relaxed; a flag that only rations a log line.
                        if !FEWER_COPIES_LOGGED.swap(true, Ordering::Relaxed) {
                            log::warn!(
                                "shmetrics: a series of {} spread over {} copies instead of {wanted} ({e}); further such series are not logged",
                                def.name,
                                prev_power_of_two(all.len())
                            );
                        }
                        break;
                    }
                }
            }
            all.truncate(prev_power_of_two(all.len()));
            all.into_boxed_slice()
        });
    }

    /// Every copy's slots, for reading the child whole (or resetting it).
    pub(crate) fn each(&self) -> impl Iterator<Item = &SlotBlock> {
        let all = self.spread.all.get();
        let one = all.is_none().then_some(&self.first.0);
        let spread = all
            .into_iter()
            .flat_map(|all| all.iter().map(|(slots, _)| slots));
        one.into_iter().chain(spread)
    }

    /// Whether the series was spread, or tried to be (with one copy when no other could be
    /// placed).
    #[cfg(test)]
    pub(crate) fn spread_tried(&self) -> bool {
        self.spread.all.get().is_some()
    }

    /// Whether a write of this series was reported contended ([`Copies::contended`]) since
    /// it was created.
    #[cfg(test)]
    pub(crate) fn reported_contended(&self) -> bool {
        // SYNC POINT contention-count: relaxed; tests poll it while writing (the store is
        // seen sooner or later) and read it after joining the writers (the join orders it).
        self.spread.window_start.load(Ordering::Relaxed) != 0
    }

    /// How many copies there are.
    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.spread.all.get().map_or(1, |all| all.len())
    }
}

/// The largest power of two not above `n` (`n` ≥ 1).
fn prev_power_of_two(n: usize) -> usize {
    1 << n.ilog2()
}

thread_local! {
    /// This thread's number for picking a copy; `u64::MAX` until its first pick.
    static NUMBER: Cell<u64> = const { Cell::new(u64::MAX) };
}

/// This thread's number for picking a copy (by its low bits): threads are numbered in the
/// order of their first pick, so the first `n` threads that write a series of `n` copies
/// each get a copy of their own, until a thread moves ([`move_to_another_copy`]).
#[inline]
fn thread_number() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NUMBER.with(|number| match number.get() {
        u64::MAX => {
            // SYNC POINT thread-stripe: relaxed; a number only needs to differ from other
            // threads', it publishes nothing.
            let n = NEXT.fetch_add(1, Ordering::Relaxed) as u64;
            number.set(n);
            n as usize
        }
        n => n as usize,
    })
}

/// Gives this thread number `n`: for tests that need threads on copies they choose.
#[cfg(test)]
pub(crate) fn use_thread_number(n: u64) {
    NUMBER.with(|number| number.set(n));
}

/// Gives this thread another number: a bijective mix of the one it had (so two threads'
/// numbers stay distinct, and two threads that meet on one copy and both move meet again
/// only by chance, one time in the number of copies), whose low bits differ from the old
/// ones (so the thread leaves the copy it met another on).
fn move_to_another_copy() {
    let old = thread_number() as u64;
    let mut z = old.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let mask = crate::MAX_STRIPES as u64 - 1;
    if (z ^ old) & mask == 0 {
        z ^= 1;
    }
    if z == u64::MAX {
        z = 0;
    }
    NUMBER.with(|number| number.set(z));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_moves_picks_another_copy_of_many() {
        std::thread::spawn(|| {
            let first = thread_number();
            assert_eq!(thread_number(), first, "a number is kept");
            let mut seen = vec![first];
            for _ in 0..8 {
                move_to_another_copy();
                seen.push(thread_number());
            }
            // Each move leaves the copy it met another thread on, of any count.
            let low = |n: usize| n & (crate::MAX_STRIPES - 1);
            assert!(seen.windows(2).all(|w| low(w[0]) != low(w[1])), "{seen:?}");
            // And spreads over the copies rather than cycling between two.
            let mut copies: Vec<usize> = seen.iter().map(|&n| low(n)).collect();
            copies.sort_unstable();
            copies.dedup();
            assert!(copies.len() >= 5, "{seen:?}");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_largest_power_of_two_not_above() {
        let got: Vec<usize> = (1..=9).map(prev_power_of_two).collect();
        assert_eq!(got, [1, 2, 2, 4, 4, 4, 4, 8, 8]);
    }
}
