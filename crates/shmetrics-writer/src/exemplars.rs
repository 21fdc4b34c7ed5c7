//! Exemplars of counter and histogram series: their slots are placed in the series' own
//! segment when the series gets its first exemplar (one slot for a counter, one per bucket
//! for a histogram), so a series that never has one costs nothing.

use std::sync::{Arc, OnceLock};

use std::sync::atomic::{AtomicBool, Ordering};

use shmetrics_layout::exemplar::{
    encode_exemplar_labels, exemplar_index_store, exemplar_label_room, exemplar_slot_width,
    exemplar_store,
};
use shmetrics_layout::view::SlotBlock;

use crate::error::{Error, Result};
use crate::identity::now_nanos;
use crate::placement::{CopySource, SeriesAt, Shared};

/// Where a new child's slots were placed, and what it needs to place its exemplar slots
/// later. Handed to [`Child::from_slots`](crate::Child).
#[doc(hidden)]
#[derive(Debug)]
pub struct Placed {
    pub(crate) slots: SlotBlock,
    /// For counters and histograms, the kinds with exemplars.
    pub(crate) exemplars: Option<ExemplarSlots>,
    /// A striped family's further copies of the series (`FamilyDef::stripes` − 1), each
    /// placed as a series of its own; empty otherwise.
    pub(crate) further: Vec<Placed>,
    /// For an unstriped counter, histogram or summary series that may be spread over
    /// copies once found contended (`Options::contention_stripes` above 1): what placing
    /// them takes.
    pub(crate) copy_source: Option<CopySource>,
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
    /// Set once, under the registry's state lock (so a `fork()` never finds it half-set),
    /// with the width of each slot (chosen by the first exemplar's labels); `None` when no
    /// segment had room.
    block: OnceLock<Option<(SlotBlock, usize)>>,
}

/// Whether an exemplar too wide for its series' slots was dropped yet (logged once).
static DROPPED_WIDE: AtomicBool = AtomicBool::new(false);

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
    /// (a histogram's bucket), timed now. A series whose process cannot open a segment for
    /// its slots stores none (see `State::place_exemplars`).
    /// A slot another thread of this process is writing at this instant keeps that
    /// thread's exemplar, as recent as this one.
    pub(crate) fn store(&self, index: usize, value: f64, encoded: &[u8]) {
        debug_assert!(index < self.inner.count);
        let Some((block, width)) = self.block(encoded.len()) else {
            return;
        };
        if encoded.len() > exemplar_label_room(*width) {
            // SYNC POINT log-once: relaxed; a flag that only rations a log line.
            if !DROPPED_WIDE.swap(true, Ordering::Relaxed) {
                log::warn!(
                    "shmetrics: an exemplar of {} bytes of labels dropped: its series' slots hold {} (sized by its first exemplar); further drops are not logged",
                    encoded.len(),
                    exemplar_label_room(*width)
                );
            }
            return;
        }
        // The block's index (a word per slot), then the slots.
        let words = block.words();
        let count = self.inner.count;
        let slot = &words[count + index * width..][..*width];
        let now = now_nanos();
        if exemplar_store(slot, value, now, encoded) {
            exemplar_index_store(&words[index], now);
        }
    }

    /// The slots and their width, placed on first use (sized for labels of `label_bytes`).
    fn block(&self, label_bytes: usize) -> Option<&(SlotBlock, usize)> {
        if let Some(block) = self.inner.block.get() {
            return block.as_ref();
        }
        self.place(exemplar_slot_width(label_bytes))
    }

    #[cold]
    fn place(&self, width: usize) -> Option<&(SlotBlock, usize)> {
        let inner = &*self.inner;
        let mut state = inner.shared.lock_state();
        (inner.block)
            .get_or_init(|| {
                let block = state.place_exemplars(&inner.shared, inner.at, inner.count, width);
                block.map(|b| (b, width))
            })
            .as_ref()
    }
}
