//! Families and their child handles: the API an instrumented process calls.

use std::sync::Arc;

use shmetrics_layout::slots;
use shmetrics_layout::view::SlotBlock;
use shmetrics_layout::{GaugeMode, MetricKind};

use crate::child_table::{ChildTable, hash_values, values_eq};
use crate::def::FamilyDef;
use crate::error::{Error, Result};
use crate::exemplars::{ExemplarSlots, Placed};
use crate::identity::now_nanos;
use crate::placement::{CopySource, Lines, Shared};
use crate::stripes::Copies;
use shmetrics_layout::exemplar::exemplar_count;

/// A child handle type: what a family hands out per label set.
pub trait Child: Send + Sync + Sized + 'static {
    /// The metric type of families of this child.
    const KIND: MetricKind;
    #[doc(hidden)]
    fn from_slots(placed: Placed, def: &FamilyDef) -> Self;
    /// Checks a new child's label values.
    #[doc(hidden)]
    fn check_values(
        label_names: &[String],
        values: &[String],
    ) -> std::result::Result<(), shmetrics_layout::DefinitionError> {
        shmetrics_layout::record::check_label_values(label_names, values)
    }
}

/// A child's label values, as its family's table stores them.
type LabelValues = Box<[Box<str>]>;

pub(crate) struct FamilyCore<C> {
    pub(crate) def: Arc<FamilyDef>,
    pub(crate) shared: Arc<Shared>,
    children: ChildTable<LabelValues, C>,
}

/// A registered family; resolve a child with [`Family::labels`]. Cheap to clone.
pub struct Family<C: Child> {
    core: Arc<FamilyCore<C>>,
}

impl<C: Child> Clone for Family<C> {
    fn clone(&self) -> Self {
        Self {
            core: Arc::clone(&self.core),
        }
    }
}

impl<C: Child> std::fmt::Debug for Family<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Family")
            .field("def", &self.core.def)
            .finish()
    }
}

impl<C: Child> Family<C> {
    pub(crate) fn new(def: FamilyDef, shared: Arc<Shared>) -> Self {
        Self {
            core: Arc::new(FamilyCore {
                def: Arc::new(def),
                shared,
                children: ChildTable::new(),
            }),
        }
    }

    /// The family's definition.
    pub fn def(&self) -> &FamilyDef {
        &self.core.def
    }

    /// The child for these label values (in the order of the label names: a slice, an
    /// array, a `Vec` or any iterator that can be gone through twice), created on first use.
    /// Repeated lookups take no lock; keep the returned handle (or a clone of it) to skip
    /// even the lookup.
    ///
    /// # Errors
    /// [`Error::InvalidLabels`] when the number of values differs from the number of label
    /// names or the values are over the [`limits`](shmetrics_layout::limits).
    #[inline]
    pub fn labels<I>(&self, values: I) -> Result<&C>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
        I::IntoIter: Clone,
    {
        let values = values.into_iter();
        let hash = hash_values(values.clone());
        match self
            .core
            .children
            .get(hash, |key| values_eq(key, values.clone()))
        {
            Some(child) => Ok(child),
            None => self.create_child(hash, values),
        }
    }

    #[cold]
    fn create_child<S: AsRef<str>>(
        &self,
        hash: u64,
        values: impl Iterator<Item = S>,
    ) -> Result<&C> {
        // Collected once, into the owned values the series record takes.
        let owned: Vec<String> = values.map(|v| v.as_ref().to_owned()).collect();
        let values = &owned[..];
        let def = &self.core.def;
        C::check_values(&def.label_names, values).map_err(|source| Error::InvalidLabels {
            name: def.name.clone(),
            source,
        })?;
        // The registry lock serialises placement, and the table places a child only when
        // it finds none under its insert lock, so two threads creating the same child place
        // it once. Inserting under the registry lock keeps the table's lock fork-safe.
        let mut state = self.core.shared.lock_state();
        let child = self.core.children.get_or_insert_with(
            hash,
            |key| values_eq(key, values),
            || {
                let shared = &self.core.shared;
                // A striped family's copies are written by different threads: each on
                // lines of its own.
                let lines = if def.stripes > 1 {
                    Lines::Own
                } else {
                    Lines::Packed
                };
                // An unstriped counter, histogram or summary series may be spread over
                // copies later, once found contended (`stripes.rs`); a series that could
                // not be placed never is.
                let spreads = matches!(
                    C::KIND,
                    MetricKind::Counter | MetricKind::Histogram | MetricKind::Summary
                ) && def.stripes == 1
                    && shared.options.contention_stripes > 1;
                let mut place = || {
                    let (slots, at) = state.place_series(shared, def, values, lines);
                    // Counters and histograms only: the kinds with exemplars.
                    let exemplars = exemplar_count(C::KIND, def.bounds.len())
                        .map(|n| ExemplarSlots::new(Arc::clone(shared), at, n));
                    let copy_source = (spreads && at.is_some()).then(|| CopySource {
                        shared: Arc::clone(shared),
                        def: Arc::clone(def),
                        values: values.into(),
                    });
                    Placed {
                        slots,
                        exemplars,
                        further: Vec::new(),
                        copy_source,
                    }
                };
                let mut placed = place();
                placed.further = (1..def.stripes).map(|_| place()).collect();
                let key = values.iter().map(|v| Box::from(v.as_ref())).collect();
                (key, C::from_slots(placed, def))
            },
        );
        drop(state);
        Ok(child)
    }

    /// The one child of a family without labels: `labels` with no values.
    ///
    /// # Errors
    /// [`Error::InvalidLabels`] when the family has label names.
    #[inline]
    pub fn unlabelled(&self) -> Result<&C> {
        self.labels(std::iter::empty::<&str>())
    }

    /// Every child created so far, in creation order.
    pub fn children(&self) -> Vec<&C> {
        // Under the registry lock, which fork's prepare handler holds: a forked child must
        // not inherit the child table's own lock held by a thread that listed it.
        let _state = self.core.shared.lock_state();
        self.core.children.values()
    }
}

/// A counter child: only goes up.
#[derive(Clone, Debug)]
pub struct Counter {
    copies: Copies,
}

impl Child for Counter {
    const KIND: MetricKind = MetricKind::Counter;
    fn from_slots(placed: Placed, _def: &FamilyDef) -> Self {
        Self {
            copies: Copies::new(placed),
        }
    }
}

impl Counter {
    /// Adds 1: one relaxed `fetch_add` on the process's own segment (on this thread's
    /// copy of a striped counter's series).
    #[inline(always)]
    pub fn inc(&self) {
        slots::counter_inc_word(self.copies.mine().first(), 1);
    }

    /// Adds `v`. Integral values take the integer path; a negative or NaN `v` is ignored,
    /// as a counter never goes down. A series whose fractional part threads of this
    /// process add to at once is spread over copies (`Options::contention_stripes`).
    #[inline]
    pub fn inc_by(&self, v: f64) {
        if slots::counter_add(self.copies.mine().words(), v) {
            self.copies.contended();
        }
    }

    /// Adds `v` (as [`Counter::inc_by`]) and makes `labels` with value `v`, timed now, the
    /// series' exemplar (OpenMetrics shows the newest of any process on `_total`), as
    /// `prometheus_client`'s `inc(v, exemplar=labels)`. An ignored `v` (negative, NaN)
    /// stores no exemplar.
    ///
    /// # Errors
    /// [`Error::InvalidExemplar`] for labels OpenMetrics does not allow: invalid or repeated
    /// names, more than 128 characters in all. Nothing is added then.
    pub fn inc_by_with_exemplar<K: AsRef<str>, V: AsRef<str>>(
        &self,
        v: f64,
        labels: &[(K, V)],
    ) -> Result<()> {
        let encoded = ExemplarSlots::check(labels)?;
        if v >= 0.0 {
            let (slots, exemplars) = self.copies.mine_with_exemplars();
            if slots::counter_add(slots.words(), v) {
                self.copies.contended();
            }
            exemplars.store(0, v, &encoded);
        }
        Ok(())
    }

    /// Makes `labels` with value `v`, timed now, the series' exemplar without adding
    /// anything: `prometheus_client`'s `set_exemplar`, which its `inc` calls after adding.
    /// Prefer [`Counter::inc_by_with_exemplar`].
    ///
    /// # Errors
    /// As [`Counter::inc_by_with_exemplar`]; nothing is stored then.
    pub fn set_exemplar<K: AsRef<str>, V: AsRef<str>>(
        &self,
        v: f64,
        labels: &[(K, V)],
    ) -> Result<()> {
        let encoded = ExemplarSlots::check(labels)?;
        self.copies.mine_with_exemplars().1.store(0, v, &encoded);
        Ok(())
    }

    /// The value this process has counted (its copies' integer and fractional parts added
    /// up apart, then together, as a reader adds them).
    pub fn get(&self) -> f64 {
        let (mut int, mut fraction) = (0u64, 0.0);
        for slots in self.copies.each() {
            let (i, f) = slots::counter_read_words(slots.words());
            int = int.saturating_add(i);
            fraction += f;
        }
        int as f64 + fraction
    }

    /// Sets what this process has counted back to zero, as `prometheus_client`'s
    /// `Counter.reset()` does for a logical restart: the merged counter drops by this
    /// process's count, which Prometheus's `rate()` reads as a counter reset. The only way a
    /// counter goes down; increments racing with it may land before or after it.
    pub fn reset(&self) {
        for slots in self.copies.each() {
            slots::counter_reset(slots.words());
        }
    }
}

/// A gauge child.
#[derive(Clone, Debug)]
pub struct Gauge {
    slots: SlotBlock,
    timestamped: bool,
}

impl Child for Gauge {
    const KIND: MetricKind = MetricKind::Gauge;
    fn from_slots(placed: Placed, def: &FamilyDef) -> Self {
        let slots = placed.slots;
        Self {
            slots,
            timestamped: def.mode.is_some_and(GaugeMode::needs_timestamp),
        }
    }
}

impl Gauge {
    #[inline(always)]
    fn now(&self) -> Option<u64> {
        self.timestamped.then(now_nanos)
    }

    /// Sets the value. In the `mostrecent` modes this also records the write time.
    #[inline]
    pub fn set(&self, v: f64) {
        slots::gauge_set(self.slots.words(), v, self.now());
    }

    /// Adds 1.
    #[inline]
    pub fn inc(&self) {
        self.add(1.0);
    }

    /// Subtracts 1.
    #[inline]
    pub fn dec(&self) {
        self.add(-1.0);
    }

    /// Adds `delta` (negative to decrease).
    #[inline]
    pub fn add(&self, delta: f64) {
        slots::gauge_add(self.slots.words(), delta, self.now());
    }

    /// Subtracts `delta`.
    #[inline]
    pub fn sub(&self, delta: f64) {
        self.add(-delta);
    }

    /// The value this process last wrote.
    pub fn get(&self) -> f64 {
        slots::gauge_read(self.slots.words()).value
    }
}

/// A histogram child.
#[derive(Clone, Debug)]
pub struct Histogram {
    copies: Copies,
    bounds: Arc<[f64]>,
}

impl Child for Histogram {
    const KIND: MetricKind = MetricKind::Histogram;
    fn from_slots(placed: Placed, def: &FamilyDef) -> Self {
        Self {
            copies: Copies::new(placed),
            bounds: Arc::clone(&def.bounds),
        }
    }
}

impl Histogram {
    /// Records one observation: a linear search over the bounds, then three relaxed or
    /// release read-modify-writes (bucket, sum, count) on this thread's copy. A series that
    /// threads of this process observe at once is spread over copies
    /// (`Options::contention_stripes`).
    #[inline]
    pub fn observe(&self, v: f64) {
        let bucket = slots::bucket_index(&self.bounds, v);
        if slots::histogram_observe(self.copies.mine().words(), bucket, v) {
            self.copies.contended();
        }
    }

    /// Records `v` (as [`Histogram::observe`]) and makes `labels` with value `v`, timed
    /// now, the exemplar of the bucket `v` falls in (OpenMetrics shows the newest of any
    /// process on that `_bucket` line), as `prometheus_client`'s
    /// `observe(v, exemplar=labels)`.
    ///
    /// # Errors
    /// [`Error::InvalidExemplar`], as [`Counter::inc_by_with_exemplar`]; nothing is
    /// recorded then.
    pub fn observe_with_exemplar<K: AsRef<str>, V: AsRef<str>>(
        &self,
        v: f64,
        labels: &[(K, V)],
    ) -> Result<()> {
        let encoded = ExemplarSlots::check(labels)?;
        let bucket = slots::bucket_index(&self.bounds, v);
        let (slots, exemplars) = self.copies.mine_with_exemplars();
        if slots::histogram_observe(slots.words(), bucket, v) {
            self.copies.contended();
        }
        exemplars.store(bucket, v, &encoded);
        Ok(())
    }

    /// The finite bucket bounds.
    pub fn bounds(&self) -> &[f64] {
        &self.bounds
    }

    /// What this process has observed, read consistently (each stripe of a striped series
    /// on its own, then added up).
    pub fn get(&self) -> HistogramTotals {
        let mut value = slots::HistogramValue::default();
        let mut totals = HistogramTotals {
            buckets: vec![0; self.bounds.len() + 1],
            sum: 0.0,
        };
        for slots in self.copies.each() {
            slots::histogram_read(slots.words(), self.bounds.len(), &mut value);
            for (total, n) in totals.buckets.iter_mut().zip(&value.buckets) {
                *total = total.saturating_add(*n);
            }
            totals.sum += value.sum;
        }
        totals
    }
}

/// A summary child: observation count and sum.
#[derive(Clone, Debug)]
pub struct Summary {
    copies: Copies,
}

impl Child for Summary {
    const KIND: MetricKind = MetricKind::Summary;
    fn from_slots(placed: Placed, _def: &FamilyDef) -> Self {
        Self {
            copies: Copies::new(placed),
        }
    }
}

impl Summary {
    /// Records one observation: two release read-modify-writes (sum, count) on this
    /// thread's copy. A series that threads of this process observe at once is spread
    /// over copies (`Options::contention_stripes`).
    #[inline]
    pub fn observe(&self, v: f64) {
        if slots::histogram_observe(self.copies.mine().words(), 0, v) {
            self.copies.contended();
        }
    }

    /// What this process has observed, read consistently (each copy of a spread series on
    /// its own, then added up).
    pub fn get(&self) -> SummaryTotals {
        let mut value = slots::HistogramValue::default();
        let mut totals = SummaryTotals::default();
        for slots in self.copies.each() {
            slots::histogram_read(slots.words(), 0, &mut value);
            totals.count = totals.count.saturating_add(value.count());
            totals.sum += value.sum;
        }
        totals
    }
}

/// `spread_now` on the kinds that spread when found contended.
macro_rules! spread_now {
    ($($kind:ty),*) => {$(
        impl $kind {
            /// Spreads the series over `Options::contention_stripes` copies now, as when
            /// threads are found writing it at once: for tests, which cannot count on two
            /// threads running at once. Nothing changes for a striped family's series, or
            /// where spreading is off.
            #[doc(hidden)]
            pub fn spread_now(&self) {
                self.copies.spread_now();
            }
        }
    )*};
}
spread_now!(Counter, Histogram, Summary);

/// What one process's histogram child has observed ([`Histogram::get`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramTotals {
    /// Per-bucket counts, not cumulative; the last is `+Inf`.
    pub buckets: Vec<u64>,
    /// The sum of the observations.
    pub sum: f64,
}

/// What one process's summary child has observed ([`Summary::get`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SummaryTotals {
    /// Observations.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
}

/// A stateset child (`prometheus_client`'s `Enum`): which of its family's states it is in.
#[derive(Clone, Debug)]
pub struct StateSet {
    slots: SlotBlock,
    states: Arc<[String]>,
}

impl Child for StateSet {
    const KIND: MetricKind = MetricKind::StateSet;
    fn from_slots(placed: Placed, def: &FamilyDef) -> Self {
        let slots = placed.slots;
        // In the first state, as `prometheus_client`'s `Enum`, written at the earliest
        // time there is: any process's `state()` is newer.
        slots::gauge_set(slots.words(), 0.0, Some(1));
        Self {
            slots,
            states: Arc::clone(&def.states),
        }
    }
}

impl StateSet {
    /// Enters `state`, one of the family's states.
    ///
    /// # Errors
    /// [`Error::UnknownState`] when `state` is not one of them.
    pub fn state(&self, state: &str) -> Result<()> {
        match self.states.iter().position(|s| s == state) {
            Some(i) => {
                self.set_index(i);
                Ok(())
            }
            None => Err(Error::UnknownState {
                state: state.to_owned(),
                states: self.states.to_vec(),
            }),
        }
    }

    /// Enters the state at `index` in the family's list (the last one past its end).
    pub fn set_index(&self, index: usize) {
        let index = index.min(self.states.len() - 1);
        // The index in the value word, with the write time that orders processes' writes.
        slots::gauge_set(self.slots.words(), index as f64, Some(now_nanos()));
    }

    /// The state this process last entered: the first until one is set.
    pub fn get(&self) -> &str {
        let index = slots::gauge_read(self.slots.words()).value as usize;
        &self.states[index.min(self.states.len() - 1)]
    }
}

/// One info label set of an [`InfoFamily`], as stored: the family's label values, then the
/// info's names and values.
#[doc(hidden)]
#[derive(Clone, Debug)]
pub struct InfoSeries {
    slots: SlotBlock,
}

impl Child for InfoSeries {
    const KIND: MetricKind = MetricKind::Info;
    fn from_slots(placed: Placed, _def: &FamilyDef) -> Self {
        let slots = placed.slots;
        Self { slots }
    }
    fn check_values(
        label_names: &[String],
        values: &[String],
    ) -> std::result::Result<(), shmetrics_layout::DefinitionError> {
        shmetrics_layout::record::check_info_labels(label_names, values)?;
        shmetrics_layout::limits::check_info_set(label_names, values)
    }
}

/// An info family (`prometheus_client`'s `Info`): per label set, the info last set. Each
/// distinct info is a series of its own, stamped with the time it was last set; readers
/// show the newest per label set. Cheap to clone.
#[derive(Clone, Debug)]
pub struct InfoFamily {
    family: Family<InfoSeries>,
}

impl InfoFamily {
    pub(crate) fn new(family: Family<InfoSeries>) -> Self {
        Self { family }
    }

    /// The family's definition.
    pub fn def(&self) -> &FamilyDef {
        self.family.def()
    }

    /// Sets the info of the series with `values` (one per label name) to `info`, name and
    /// value pairs in any order.
    ///
    /// # Errors
    /// [`Error::InvalidLabels`] for a wrong number of values, an info name that is not a
    /// valid label name or repeats a label, or labels over the
    /// [`limits`](shmetrics_layout::limits).
    pub fn set<V, K, W>(&self, values: &[V], info: &[(K, W)]) -> Result<()>
    where
        V: AsRef<str>,
        K: AsRef<str>,
        W: AsRef<str>,
    {
        let def = self.family.def();
        if values.len() != def.label_names.len() {
            return Err(Error::InvalidLabels {
                name: def.name.clone(),
                source: shmetrics_layout::DefinitionError::LabelCount {
                    values: values.len(),
                    names: def.label_names.len(),
                },
            });
        }
        let mut pairs: Vec<(&str, &str)> =
            info.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect();
        // One series per info whatever the order it was given in.
        pairs.sort_unstable();
        let flat = values
            .iter()
            .map(AsRef::as_ref)
            .chain(pairs.iter().flat_map(|&(k, v)| [k, v]));
        let series = self.family.labels(flat)?;
        slots::gauge_set(series.slots.words(), 1.0, Some(now_nanos()));
        Ok(())
    }

    /// As [`InfoFamily::set`] for a family without labels.
    ///
    /// # Errors
    /// As [`InfoFamily::set`].
    pub fn set_unlabelled<K: AsRef<str>, W: AsRef<str>>(&self, info: &[(K, W)]) -> Result<()> {
        self.set::<&str, K, W>(&[], info)
    }
}

/// A counter family.
pub type CounterFamily = Family<Counter>;
/// A gauge family.
pub type GaugeFamily = Family<Gauge>;
/// A histogram family.
pub type HistogramFamily = Family<Histogram>;
/// A summary family.
pub type SummaryFamily = Family<Summary>;
/// A stateset family.
pub type StateSetFamily = Family<StateSet>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stripes::{CONTENDED_WINDOW_NS, CONTENDED_WRITES};
    use crate::{MAX_STRIPES, Options, Registry};

    fn registry(dir: &tempfile::TempDir) -> Registry {
        Registry::open_with(dir.path(), Options::default()).unwrap()
    }

    /// Runs `write` on three threads one after another, 1, 2 and 3 times: numbered 1, 2
    /// and 3, on three copies of their own.
    fn on_three_threads(write: impl Fn() + Sync) {
        for n in 1..=3 {
            std::thread::scope(|s| {
                s.spawn(|| {
                    crate::stripes::use_thread_number(n);
                    (0..n).for_each(|_| write());
                });
            });
        }
    }

    /// What each copy holds, `read` reading one as a reader reads each series record.
    fn used(copies: &Copies, read: impl Fn(&SlotBlock) -> f64) -> Vec<f64> {
        let mut used: Vec<f64> = copies.each().map(read).filter(|&v| v > 0.0).collect();
        used.sort_by(f64::total_cmp);
        used
    }

    /// The copies' counts (of a histogram with `bounds` bounds, or a summary: 0), as `used`
    /// gives them.
    fn copy_counts(copies: &Copies, bounds: usize) -> Vec<f64> {
        used(copies, |block| {
            let mut value = slots::HistogramValue::default();
            slots::histogram_read(block.words(), bounds, &mut value);
            value.count() as f64
        })
    }

    /// Asserts that copies `from..` start on a 128-byte boundary and that no 128-byte span
    /// holds words of two copies.
    fn assert_on_own_lines(copies: &Copies, from: usize) {
        let span = |block: &SlotBlock| {
            let words = block.words();
            let start = words.as_ptr() as usize;
            (start / 128, (start + words.len() * 8).div_ceil(128))
        };
        let spans: Vec<(usize, usize)> = copies.each().map(span).collect();
        for (i, block) in copies.each().enumerate().skip(from) {
            assert_eq!(block.words().as_ptr() as usize % 128, 0, "copy {i}");
            for (j, other) in spans.iter().enumerate().filter(|&(j, _)| j != i) {
                let (a, b) = (spans[i], other);
                assert!(a.1 <= b.0 || b.1 <= a.0, "copies {i} and {j} share a line");
            }
        }
    }

    #[test]
    fn striped_copies_are_on_lines_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(&dir);
        // A series between, so that packed copies would share lines.
        let counters = r.counter_striped("requests", "Requests.", &[], 4).unwrap();
        let histograms =
            (r.histogram_striped("latency", "Latency.", &["a"], &[1.0, 2.0], 8)).unwrap();
        for value in ["x", "y"] {
            r.counter("other", "Other.", &[])
                .unwrap()
                .unlabelled()
                .unwrap()
                .inc();
            assert_on_own_lines(&histograms.labels([value]).unwrap().copies, 0);
        }
        assert_on_own_lines(&counters.unlabelled().unwrap().copies, 0);
    }

    #[test]
    fn threads_observe_into_copies_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(&dir);
        let family = r
            .histogram_striped("latency", "Latency.", &[], &[1.0], MAX_STRIPES)
            .unwrap();
        let h = family.unlabelled().unwrap();
        assert_eq!(h.copies.count(), MAX_STRIPES);
        on_three_threads(|| h.observe(0.5));
        assert_eq!(copy_counts(&h.copies, 1), [1.0, 2.0, 3.0]);
        assert_eq!(h.get().buckets, [6, 0]);
        assert_eq!(h.get().sum, 3.0);
    }

    #[test]
    fn threads_count_into_copies_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(&dir);
        let family = (r.counter_striped("requests", "Requests.", &[], MAX_STRIPES)).unwrap();
        let c = family.unlabelled().unwrap();
        on_three_threads(|| {
            c.inc();
            c.inc_by(0.5);
        });
        let value = |block: &SlotBlock| slots::counter_read(block.words());
        assert_eq!(used(&c.copies, value), [1.5, 3.0, 4.5]);
        assert_eq!(c.get(), 9.0);
        c.reset();
        assert_eq!(c.get(), 0.0);
        assert!(used(&c.copies, value).is_empty());
    }

    /// Runs `write` on two threads at once until `done()` or for at most 60 s; returns how
    /// many writes the two made in all.
    fn two_threads_until(done: impl Fn() -> bool + Sync, write: impl Fn() + Sync) -> u64 {
        let start = std::sync::Barrier::new(2);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let counts: Vec<u64> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        let mut n = 0u64;
                        while !done() && std::time::Instant::now() < deadline {
                            for _ in 0..1_000 {
                                write();
                            }
                            n += 1_000;
                        }
                        n
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        counts.iter().sum()
    }

    fn spreading_registry(dir: &tempfile::TempDir, stripes: usize) -> Registry {
        let options = Options {
            contention_stripes: stripes,
            ..Options::default()
        };
        Registry::open_with(dir.path(), options).unwrap()
    }

    /// Reports `CONTENDED_WRITES` contended writes of `copies` in a row, as write paths do
    /// when their float exchange met another thread's write; again (up to 1,000 times)
    /// while a pause of this thread let the window pass first. Returns whether it spread.
    fn found_contended(copies: &Copies) -> bool {
        for _ in 0..1_000 {
            for _ in 0..CONTENDED_WRITES {
                copies.contended();
            }
            if copies.spread_tried() {
                return true;
            }
        }
        false
    }

    /// Two threads, numbered 0 and 1 (copies of their own), write `per_thread` times each.
    fn two_threads_write(per_thread: u64, write: impl Fn() + Sync) {
        std::thread::scope(|s| {
            for t in 0..2 {
                let write = &write;
                s.spawn(move || {
                    crate::stripes::use_thread_number(t);
                    (0..per_thread).for_each(|_| write());
                });
            }
        });
    }

    /// The float exchanges of every counter, histogram and summary write path report a
    /// write of another thread that came between their read and their exchange. Two threads
    /// meet so whether they run at once or take turns on one core (a thread stopped between
    /// the two is found out when it resumes), so a report comes within seconds anywhere.
    #[test]
    fn a_float_write_that_meets_another_threads_reports_it() {
        let dir = tempfile::tempdir().unwrap();
        let r = spreading_registry(&dir, 2);
        let (c, h) = (
            r.counter("tokens", "Tokens.", &["path"]).unwrap(),
            r.histogram("latency", "Latency.", &["path"], &[1.0])
                .unwrap(),
        );
        let s = r.summary("sizes", "Sizes.", &[]).unwrap();
        let (c1, c2) = (c.labels(["plain"]).unwrap(), c.labels(["ex"]).unwrap());
        let (h1, h2) = (h.labels(["plain"]).unwrap(), h.labels(["ex"]).unwrap());
        let s = s.unlabelled().unwrap();
        let ex = [("trace_id", "abc")];
        // What it is, its copies, one write (of 0.5), and the sum of all writes.
        type Path<'a> = (
            &'a str,
            &'a Copies,
            Box<dyn Fn() + Sync + 'a>,
            Box<dyn Fn() -> f64 + 'a>,
        );
        let paths: [Path<'_>; 5] = [
            (
                "inc_by",
                &c1.copies,
                Box::new(|| c1.inc_by(0.5)),
                Box::new(|| c1.get()),
            ),
            (
                "inc_by_with_exemplar",
                &c2.copies,
                Box::new(|| c2.inc_by_with_exemplar(0.5, &ex).unwrap()),
                Box::new(|| c2.get()),
            ),
            (
                "histogram observe",
                &h1.copies,
                Box::new(|| h1.observe(0.5)),
                Box::new(|| h1.get().sum),
            ),
            (
                "observe_with_exemplar",
                &h2.copies,
                Box::new(|| h2.observe_with_exemplar(0.5, &ex).unwrap()),
                Box::new(|| h2.get().sum),
            ),
            (
                "summary observe",
                &s.copies,
                Box::new(|| s.observe(0.5)),
                Box::new(|| s.get().sum),
            ),
        ];
        for (what, copies, write, _) in &paths {
            write();
            assert!(
                !copies.reported_contended(),
                "{what}: one thread alone never"
            );
        }
        for (what, copies, write, sum) in &paths {
            let n = two_threads_until(|| copies.reported_contended(), write);
            assert!(copies.reported_contended(), "{what}");
            // Nothing lost: the sum of every write, exact (halves).
            assert_eq!(sum(), (n + 1) as f64 * 0.5, "{what}");
        }
        assert_eq!(h1.get().buckets, [(h1.get().sum * 2.0) as u64, 0]);
        assert_eq!(s.get().count as f64 * 0.5, s.get().sum);
    }

    #[test]
    fn a_histogram_found_contended_is_spread_over_copies() {
        let dir = tempfile::tempdir().unwrap();
        let r = spreading_registry(&dir, 4);
        let family = r.histogram("latency", "Latency.", &[], &[1.0]).unwrap();
        let h = family.unlabelled().unwrap();
        h.observe(2.0);
        assert_eq!(h.copies.count(), 1, "one copy until contended");
        assert!(found_contended(&h.copies));
        assert_eq!(h.copies.count(), 4);
        // The copies placed when it spread are on lines of their own.
        assert_on_own_lines(&h.copies, 1);
        // Each thread writes its own copy; every observation is kept, the one before too.
        two_threads_write(1_000, || h.observe(0.25));
        assert_eq!(copy_counts(&h.copies, 1), [1_000.0, 1_001.0]);
        assert_eq!(h.get().buckets, [2_000, 1]);
        assert_eq!(h.get().sum, 2.0 + 500.0);
        // The handle's clones and a second lookup write the same copies.
        assert_eq!(h.clone().copies.count(), 4);
        assert_eq!(family.unlabelled().unwrap().copies.count(), 4);
    }

    #[test]
    fn a_counter_found_contended_is_spread_over_copies() {
        let dir = tempfile::tempdir().unwrap();
        let r = spreading_registry(&dir, 2);
        let family = r.counter("tokens", "Tokens.", &["model"]).unwrap();
        let c = family.labels(["m"]).unwrap();
        assert!(found_contended(&c.copies));
        assert_eq!(c.copies.count(), 2);
        assert_on_own_lines(&c.copies, 1);
        two_threads_write(1_000, || c.inc_by(0.5));
        let value = |block: &SlotBlock| slots::counter_read(block.words());
        assert_eq!(used(&c.copies, value), [500.0, 500.0]);
        assert_eq!(c.get(), 1_000.0);
        assert_eq!(family.labels(["m"]).unwrap().copies.count(), 2);
        c.reset();
        assert_eq!(c.get(), 0.0);
    }

    #[test]
    fn a_summary_found_contended_is_spread_over_copies() {
        let dir = tempfile::tempdir().unwrap();
        let r = spreading_registry(&dir, 8);
        let family = r.summary("sizes", "Sizes.", &[]).unwrap();
        let s = family.unlabelled().unwrap();
        assert!(found_contended(&s.copies));
        assert_eq!(s.copies.count(), 8);
        assert_on_own_lines(&s.copies, 1);
        two_threads_write(1_000, || s.observe(0.75));
        assert_eq!(copy_counts(&s.copies, 0), [1_000.0, 1_000.0]);
        assert_eq!(s.get().count, 2_000);
        assert_eq!(s.get().sum, 1_500.0);
    }

    #[test]
    fn fewer_contended_writes_than_the_threshold_within_the_window_do_not_spread() {
        let dir = tempfile::tempdir().unwrap();
        let r = spreading_registry(&dir, 2);
        let family = r.histogram("latency", "Latency.", &["n"], &[1.0]).unwrap();
        // One short of the threshold: never; the threshold within the window: spread (a
        // try that a pause of this thread stretched past the window is made again on a
        // new series).
        let mut spread = false;
        for attempt in 0..100 {
            let h = family.labels([attempt.to_string()]).unwrap();
            let start = crate::identity::now_nanos();
            for _ in 1..CONTENDED_WRITES {
                h.copies.contended();
            }
            assert_eq!(h.copies.count(), 1);
            h.copies.contended();
            if crate::identity::now_nanos() - start < CONTENDED_WINDOW_NS {
                assert_eq!(h.copies.count(), 2, "attempt {attempt}");
                spread = true;
                break;
            }
        }
        assert!(spread, "no 64 reports within 1 ms in 100 tries");
        // More than the threshold, each after the window of the one before: never.
        let h = family.labels(["sparse"]).unwrap();
        for _ in 0..CONTENDED_WRITES + 8 {
            h.copies.contended();
            std::thread::sleep(std::time::Duration::from_nanos(
                CONTENDED_WINDOW_NS + 100_000,
            ));
        }
        assert!(h.copies.reported_contended());
        assert!(!h.copies.spread_tried());
    }

    #[test]
    fn two_threads_writing_while_the_series_spreads_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let r = spreading_registry(&dir, 4);
        let h = r.histogram("latency", "Latency.", &[], &[1.0]).unwrap();
        let h = h.unlabelled().unwrap();
        let c = r.counter("tokens", "Tokens.", &[]).unwrap();
        let c = c.unlabelled().unwrap();
        // Both threads have written before the spread and write on after it.
        let (written, per_thread) = (std::sync::Barrier::new(3), 200_000u64);
        std::thread::scope(|s| {
            for _ in 0..2 {
                let written = &written;
                s.spawn(move || {
                    for i in 0..per_thread {
                        h.observe(0.25);
                        c.inc_by(0.5);
                        if i == 1_000 {
                            written.wait();
                        }
                    }
                });
            }
            written.wait();
            h.spread_now();
            c.spread_now();
        });
        assert_eq!(h.copies.count(), 4);
        assert_eq!(c.copies.count(), 4);
        assert_eq!(h.get().buckets, [2 * per_thread, 0]);
        assert_eq!(h.get().sum, (2 * per_thread) as f64 * 0.25);
        assert_eq!(c.get(), (2 * per_thread) as f64 * 0.5);
    }

    #[test]
    fn a_series_that_finds_no_room_for_copies_keeps_one_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            contention_stripes: 4,
            initial_segment_size: shmetrics_layout::MIN_SEGMENT_SIZE as usize,
            max_segments: 1,
            ..Options::default()
        };
        let r = Registry::open_with(dir.path(), options).unwrap();
        let family = r.histogram("latency", "Latency.", &["a"], &[1.0]).unwrap();
        let h = family.labels(["contended"]).unwrap();
        // Fill the one segment: the last child is dropped.
        let mut n = 0;
        while r.dropped_series() == 0 {
            family.labels([format!("filler {n}")]).unwrap();
            n += 1;
        }
        assert!(found_contended(&h.copies));
        assert_eq!(h.copies.count(), 1);
        two_threads_write(1_000, || h.observe(0.25));
        assert_eq!(h.get().buckets, [2_000, 0]);
        // Not a dropped series: it kept its place, only no copies were added.
        assert_eq!(r.dropped_series(), 1);
    }

    #[test]
    fn no_series_is_spread_with_contention_stripes_1() {
        let dir = tempfile::tempdir().unwrap();
        let r = spreading_registry(&dir, 1);
        let family = r.histogram("latency", "Latency.", &[], &[1.0]).unwrap();
        let h = family.unlabelled().unwrap();
        assert!(!found_contended(&h.copies));
        h.spread_now();
        assert_eq!(h.copies.count(), 1);
        two_threads_write(1_000, || h.observe(2.0));
        assert_eq!(h.get().buckets, [0, 2_000]);
    }

    #[test]
    fn unstriped_children_have_one_copy() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(&dir);
        let h = r.histogram("latency", "Latency.", &[], &[1.0]).unwrap();
        let h = h.unlabelled().unwrap();
        assert_eq!(h.copies.count(), 1);
        h.observe(2.0);
        assert_eq!(h.get().buckets, [0, 1]);
        let c = r.counter("requests", "Requests.", &[]).unwrap();
        let c = c.unlabelled().unwrap();
        assert_eq!(c.copies.count(), 1);
        c.inc_by(2.5);
        assert_eq!(c.get(), 2.5);
    }
}
