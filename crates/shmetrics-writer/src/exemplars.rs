//! Exemplars of counter and histogram series: their slots are placed in the series' own
//! segment when the series gets its first exemplar (one slot for a counter, one per bucket
//! for a histogram), so a series that never has one costs nothing.

use std::sync::{Arc, OnceLock};

use shmetrics_layout::exemplar::{EXEMPLAR_WORDS, encode_exemplar_labels, exemplar_store};
use shmetrics_layout::view::SlotBlock;

use crate::error::{Error, Result};
use crate::identity::now_nanos;
use crate::placement::{SeriesAt, Shared};

/// Where a new child's slots were placed, and what it needs to place its exemplar slots
/// later. Handed to [`Child::from_slots`](crate::Child).
#[doc(hidden)]
#[derive(Debug)]
pub struct Placed {
    pub(crate) slots: SlotBlock,
    pub(crate) exemplars: ExemplarSlots,
}

/// A child's exemplar slots, placed on first use; shared by the handle's clones.
#[derive(Clone)]
pub(crate) struct ExemplarSlots {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// The series' segment and slots; `None` for a series that could not be placed (its
    /// exemplars are not exported either).
    at: Option<SeriesAt>,
    /// Slots of the block: 1 for a counter, the buckets for a histogram.
    count: usize,
    /// Set once, under the registry's state lock (so a `fork()` never finds it half-set);
    /// `None` when the segment had no room.
    block: OnceLock<Option<SlotBlock>>,
}

impl std::fmt::Debug for ExemplarSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExemplarSlots")
            .field("count", &self.inner.count)
            .field("placed", &self.inner.block.get().map(Option::is_some))
            .finish()
    }
}

impl ExemplarSlots {
    pub(crate) fn new(shared: Arc<Shared>, at: Option<SeriesAt>, count: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                shared,
                at,
                count,
                block: OnceLock::new(),
            }),
        }
    }

    /// Exemplar labels checked and encoded as a slot stores them.
    ///
    /// # Errors
    /// [`Error::InvalidExemplar`] for labels OpenMetrics does not allow.
    pub(crate) fn check<K: AsRef<str>, V: AsRef<str>>(labels: &[(K, V)]) -> Result<Vec<u8>> {
        encode_exemplar_labels(labels).map_err(Error::InvalidExemplar)
    }

    /// Stores `encoded` labels (from [`ExemplarSlots::check`]) with `value` in slot `index`
    /// (a histogram's bucket), timed now. A series whose segment has no room for its slots
    /// stores none (see `State::place_exemplars`).
    /// A slot another thread of this process is writing at this instant keeps that
    /// thread's exemplar, as recent as this one.
    pub(crate) fn store(&self, index: usize, value: f64, encoded: &[u8]) {
        debug_assert!(index < self.inner.count);
        if let Some(block) = self.block() {
            let words = &block.words()[index * EXEMPLAR_WORDS..][..EXEMPLAR_WORDS];
            exemplar_store(words, value, now_nanos(), encoded);
        }
    }

    /// The slots, placed on first use.
    fn block(&self) -> Option<&SlotBlock> {
        if let Some(block) = self.inner.block.get() {
            return block.as_ref();
        }
        self.place()
    }

    #[cold]
    fn place(&self) -> Option<&SlotBlock> {
        let inner = &*self.inner;
        let mut state = inner.shared.lock_state();
        inner
            .block
            .get_or_init(|| state.place_exemplars(inner.at, inner.count))
            .as_ref()
    }
}
