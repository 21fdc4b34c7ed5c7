//! A child's copies of its series: one, or a striped family's (`Registry::histogram_striped`,
//! `Registry::counter_striped`), each a series record of its own with the same labels, which
//! readers add up. Each thread writes the copy its number picks, so up to `stripes` threads
//! writing one series never fight over a cache line.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use shmetrics_layout::view::SlotBlock;

use crate::exemplars::{ExemplarSlots, Placed};

/// A counter's or histogram's slots and exemplar slots, once or per stripe.
#[derive(Clone, Debug)]
pub(crate) struct Copies {
    slots: SlotBlock,
    exemplars: ExemplarSlots,
    /// Every copy, the one above first; `None` unstriped (the write path then reads no
    /// thread-local).
    striped: Option<Arc<[(SlotBlock, ExemplarSlots)]>>,
}

/// A counter or histogram's exemplar slots, which every child of those kinds has.
fn exemplars_of(placed: Option<ExemplarSlots>) -> ExemplarSlots {
    placed.expect("a counter or histogram has exemplar slots")
}

impl Copies {
    /// The copies a child was placed with (`Placed::further`: all but the first).
    pub(crate) fn new(placed: Placed) -> Self {
        let exemplars = exemplars_of(placed.exemplars);
        let striped = (!placed.further.is_empty()).then(|| {
            let first = (placed.slots.clone(), exemplars.clone());
            let further =
                (placed.further.into_iter()).map(|p| (p.slots, exemplars_of(p.exemplars)));
            std::iter::once(first).chain(further).collect()
        });
        Self {
            slots: placed.slots,
            exemplars,
            striped,
        }
    }

    /// The slots and exemplar slots this thread writes: the only ones, or the copy its
    /// number picks.
    #[inline(always)]
    pub(crate) fn mine(&self) -> (&SlotBlock, &ExemplarSlots) {
        match &self.striped {
            None => (&self.slots, &self.exemplars),
            Some(all) => {
                // A power of two: the mask picks one.
                let (slots, exemplars) = &all[thread_number() & (all.len() - 1)];
                (slots, exemplars)
            }
        }
    }

    /// Every copy's slots, for reading the child whole (or resetting it).
    pub(crate) fn each(&self) -> impl Iterator<Item = &SlotBlock> {
        let unstriped = self.striped.is_none().then_some(&self.slots);
        let striped = (self.striped.iter()).flat_map(|all| all.iter().map(|(slots, _)| slots));
        unstriped.into_iter().chain(striped)
    }

    /// How many copies there are.
    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.striped.as_ref().map_or(1, |all| all.len())
    }
}

/// This thread's number for picking a copy: threads are numbered in the order of their
/// first striped write, so the first `stripes` threads that write a striped series each
/// get a copy of their own.
fn thread_number() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static NUMBER: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    NUMBER.with(|number| match number.get() {
        usize::MAX => {
            // SYNC POINT thread-stripe: relaxed; a number only needs to differ from other
            // threads', it publishes nothing.
            let n = NEXT.fetch_add(1, Ordering::Relaxed) % crate::MAX_STRIPES;
            number.set(n);
            n
        }
        n => n,
    })
}
