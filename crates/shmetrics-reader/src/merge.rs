//! Merging segments into one snapshot with `prometheus_client`'s multiprocess semantics.
//!
//! Families and series are interned once, when their records are first parsed; each
//! segment series keeps the id of its merged series, so a steady-state scrape only reads
//! slots and folds them into per-series accumulators. Rules (docs/semantics.md):
//! counters, histograms and summaries sum over every process, dead ones included; gauges
//! merge by mode, the `live*` modes over live processes only. A family's definition is the
//! one of the oldest segment declaring it; a segment that declares another type, gauge mode
//! or bucket layout is reported and its series of that family are left out, never mixed.
//!
//! [`Merger`] holds what is kept from one scrape to the next: the index of merged families
//! and series, the fold of the dead segments, and the resident budget.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rustc_hash::FxHashMap;
use shmetrics_layout::exemplar::{ExemplarRead, exemplar_index_load, exemplar_read};
use shmetrics_layout::names::exposed_names;
use shmetrics_layout::record::{FamilyRecord, ProcessOf};
use shmetrics_layout::slots::{
    self, bucket_total, counter_read_words, gauge_read, histogram_read_adding, histogram_read_into,
};
use shmetrics_layout::sync::AtomicU64;
use shmetrics_layout::view::prefetch;
use shmetrics_layout::{GaugeMode, MetricKind};

use crate::exact::ExactSum;
use crate::fold_pool::FoldPool;
use crate::render::{SeriesText, SnapshotText};
use crate::report::{Conflict, ConflictKind, ScrapeReport};
use crate::segment::{ExemplarBlock, LocalSeries, NOT_CREATED, SegmentFile, exemplar_slots_of};
use crate::shares::{self, Share};
use crate::snapshot::{Exemplar, Exemplars, Family, Series, SeriesLabels, Snapshot, Value};

struct MergedFamily {
    name: Arc<str>,
    /// Merged series ids of this family; sorted by labels when `sorted`.
    series: Vec<u32>,
    sorted: bool,
}

struct MergedSeries {
    family: u32,
    labels: Arc<SeriesLabels>,
    /// The labels' exposition text, with the renderer's cache of the series' lines.
    text: Arc<SeriesText>,
}

/// The interned families and series, kept across scrapes.
#[derive(Default)]
struct Index {
    families: Vec<MergedFamily>,
    family_ids: FxHashMap<Arc<str>, u32>,
    series: Vec<MergedSeries>,
    series_ids: FxHashMap<(u32, Arc<SeriesLabels>), u32>,
    /// Each series' text, by merged id, shared with the snapshots; rebuilt when a series
    /// comes or the ids are renumbered.
    texts: Option<Arc<[Arc<SeriesText>]>>,
}

/// Per-segment resolution of its series into merged ids.
#[derive(Default)]
pub(crate) struct SegmentLinks {
    /// Merged family id per local family.
    pub(crate) families: Vec<u32>,
    /// Merged series id per local series.
    pub(crate) series: Vec<u32>,
}

impl Index {
    /// Interns the families and series that `seg` declared since `links` was last updated.
    /// The segment's label values move into the index here (the segment keeps none: a
    /// series is identified by its merged id from then on).
    fn link(&mut self, seg: &mut SegmentFile, links: &mut SegmentLinks) {
        for f in &seg.families[links.families.len()..] {
            let id = self.family_id(&f.name);
            links.families.push(id);
        }
        let start = links.series.len();
        let unlinked = std::mem::take(&mut seg.unlinked_labels);
        debug_assert_eq!(start + unlinked.len(), seg.series.len());
        for (s, values) in seg.series[start..].iter().zip(unlinked) {
            let def = &seg.families[s.family as usize];
            let family = links.families[s.family as usize];
            let mut values = values.into_iter();
            let mut pairs: Vec<(Box<str>, Box<str>)> = def
                .label_names
                .iter()
                .zip(values.by_ref())
                .map(|(n, v)| (Box::from(n.as_str()), v.into_boxed_str()))
                .collect();
            // An info series' own labels follow, as name and value pairs.
            while let (Some(n), Some(v)) = (values.next(), values.next()) {
                pairs.push((n.into_boxed_str(), v.into_boxed_str()));
            }
            let labels = Arc::new(SeriesLabels::new(pairs));
            let next = self.series.len() as u32;
            let id = *self
                .series_ids
                .entry((family, Arc::clone(&labels)))
                .or_insert(next);
            if id == next {
                let text = Arc::new(SeriesText::new(&labels));
                self.series.push(MergedSeries {
                    family,
                    labels,
                    text,
                });
                self.texts = None;
                let fam = &mut self.families[family as usize];
                fam.series.push(id);
                fam.sorted = false;
            }
            links.series.push(id);
        }
    }

    /// Forgets the families and series that no segment links to any more (their segments
    /// were compacted away or vanished), renumbering the rest and rewriting every segment's
    /// links, so that the index holds the series that exist, not every series ever seen.
    /// Runs only when at least a quarter of the series (or 65,536) are garbage, so its cost,
    /// linear in the links, is amortised over the deaths that made the garbage. Returns
    /// whether it renumbered (then anything keyed on merged ids must be recomputed).
    fn collect_garbage(&mut self, links: &mut [&mut SegmentLinks]) -> bool {
        const ENOUGH_GARBAGE: usize = 65_536;
        let mut series_used = vec![false; self.series.len()];
        let mut families_used = vec![false; self.families.len()];
        for l in links.iter() {
            for &s in &l.series {
                series_used[s as usize] = true;
            }
            for &f in &l.families {
                families_used[f as usize] = true;
            }
        }
        let garbage = series_used.iter().filter(|&&u| !u).count();
        let family_garbage = families_used.iter().filter(|&&u| !u).count();
        let worth = |garbage: usize, total: usize| {
            garbage > 0 && (garbage * 4 >= total || garbage >= ENOUGH_GARBAGE)
        };
        if !worth(garbage, self.series.len()) && !worth(family_garbage, self.families.len()) {
            return false;
        }
        let renumber = |used: &[bool]| -> Vec<u32> {
            let mut next = 0;
            used.iter()
                .map(|&u| {
                    if u {
                        next += 1;
                        next - 1
                    } else {
                        u32::MAX
                    }
                })
                .collect()
        };
        let family_map = renumber(&families_used);
        let series_map = renumber(&series_used);
        let old_families = std::mem::take(&mut self.families);
        self.families = old_families
            .into_iter()
            .zip(&families_used)
            .filter(|(_, used)| **used)
            .map(|(mut f, _)| {
                f.series = f
                    .series
                    .iter()
                    .filter_map(|&s| Some(series_map[s as usize]).filter(|&n| n != u32::MAX))
                    .collect();
                f
            })
            .collect();
        self.family_ids = self
            .families
            .iter()
            .enumerate()
            .map(|(id, f)| (Arc::clone(&f.name), id as u32))
            .collect();
        self.texts = None;
        let old_series = std::mem::take(&mut self.series);
        self.series = old_series
            .into_iter()
            .zip(&series_used)
            .filter(|(_, used)| **used)
            .map(|(mut s, _)| {
                s.family = family_map[s.family as usize];
                s
            })
            .collect();
        self.series_ids = self
            .series
            .iter()
            .enumerate()
            .map(|(id, s)| ((s.family, Arc::clone(&s.labels)), id as u32))
            .collect();
        for l in links.iter_mut() {
            for f in &mut l.families {
                *f = family_map[*f as usize];
            }
            for s in &mut l.series {
                *s = series_map[*s as usize];
            }
        }
        true
    }

    /// Each series' text, by merged id.
    fn texts(&mut self) -> Arc<[Arc<SeriesText>]> {
        let series = &self.series;
        let texts = self
            .texts
            .get_or_insert_with(|| series.iter().map(|s| Arc::clone(&s.text)).collect());
        Arc::clone(texts)
    }

    fn family_id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.family_ids.get(name) {
            return id;
        }
        let id = self.families.len() as u32;
        let name: Arc<str> = Arc::from(name);
        self.families.push(MergedFamily {
            name: Arc::clone(&name),
            series: Vec::new(),
            sorted: true,
        });
        self.family_ids.insert(name, id);
        id
    }
}

/// A value folded over processes.
#[derive(Clone)]
enum Acc {
    Empty,
    /// Counters and `sum` gauges: summed exactly, rounded once when built (see `exact`).
    Sum(ExactSum),
    /// `min` gauges.
    Min(f64),
    /// `max` gauges.
    Max(f64),
    /// The newest write so far; `age` (the writer segment's age key) breaks equal times in
    /// favour of the older process, whatever order segments are folded in.
    Recent {
        value: f64,
        timestamp: u64,
        age: (u64, u64, u32),
    },
    /// Histograms and summaries: per-bucket counts and the exact sum.
    Histogram {
        buckets: Vec<u64>,
        sum: ExactSum,
        /// The saturating total of every count folded in: a bound on each bucket, so that
        /// adding counts whose total fits below `u64::MAX` beside it cannot overflow.
        total: u64,
    },
    PerProcess(Vec<(u32, u64, f64)>),
}

impl Acc {
    /// The exact sum in `self`, made one if it is empty.
    fn sum(&mut self) -> &mut ExactSum {
        if !matches!(self, Acc::Sum(_)) {
            *self = Acc::Sum(ExactSum::default());
        }
        match self {
            Acc::Sum(s) => s,
            _ => unreachable!("made a sum above"),
        }
    }

    /// A `min` gauge's fold: the first of the smallest values, NaN only when every one is.
    fn keep_min(&mut self, v: f64) {
        match self {
            Acc::Min(m) if *m <= v || v.is_nan() => {}
            _ => *self = Acc::Min(v),
        }
    }

    /// A `max` gauge's fold: the first of the largest values, NaN only when every one is.
    fn keep_max(&mut self, v: f64) {
        match self {
            Acc::Max(m) if *m >= v || v.is_nan() => {}
            _ => *self = Acc::Max(v),
        }
    }

    /// A `mostrecent` gauge's fold: the newest write; of equal times, the older process's.
    fn keep_recent(&mut self, value: f64, timestamp: u64, age: (u64, u64, u32)) {
        match self {
            Acc::Recent {
                timestamp: t,
                age: a,
                ..
            } if (*t, Reverse(*a)) >= (timestamp, Reverse(age)) => {}
            _ => {
                *self = Acc::Recent {
                    value,
                    timestamp,
                    age,
                }
            }
        }
    }

    /// Joins the fold of a later group of segments (in age order) into this one: the value
    /// is the one folding those segments after this one's would give (see [`fold_live`]).
    fn absorb(&mut self, later: Acc) {
        match (self, later) {
            (_, Acc::Empty) => {}
            (Acc::Sum(sum), Acc::Sum(more)) => sum.absorb(more),
            (slot @ Acc::Min(_), Acc::Min(v)) => slot.keep_min(v),
            (slot @ Acc::Max(_), Acc::Max(v)) => slot.keep_max(v),
            (
                slot @ Acc::Recent { .. },
                Acc::Recent {
                    value,
                    timestamp,
                    age,
                },
            ) => slot.keep_recent(value, timestamp, age),
            (
                Acc::Histogram {
                    buckets,
                    sum,
                    total,
                },
                Acc::Histogram {
                    buckets: counts,
                    sum: more,
                    total: counts_total,
                },
            ) if buckets.len() >= counts.len() => {
                add_counts(buckets, total, &counts, counts_total);
                sum.absorb(more);
            }
            (Acc::PerProcess(list), Acc::PerProcess(more)) => list.extend(more),
            // Nothing folded yet, or (never for one family's series) another kind: the later
            // fold wins, as a sequential fold replaces such a value.
            (slot, later) => *slot = later,
        }
    }
}

/// Adds `counts`, whose saturating total is `counts_total`, to a histogram's `buckets`,
/// whose saturating total is `total` (each bucket is at most its total): plain additions
/// when the totals add up without overflow (no bucket can then), saturating ones otherwise.
fn add_counts(buckets: &mut [u64], total: &mut u64, counts: &[u64], counts_total: u64) {
    match total.checked_add(counts_total) {
        Some(sum) => {
            *total = sum;
            buckets.iter_mut().zip(counts).for_each(|(b, c)| *b += c);
        }
        None => {
            *total = u64::MAX;
            (buckets.iter_mut().zip(counts)).for_each(|(b, c)| *b = b.saturating_add(*c));
        }
    }
}

/// The fold of every dead segment, kept between scrapes: dead segments never change, so a
/// steady-state scrape folds only live segments on top of it and its cost does not grow
/// with the number of processes that have come and gone.
#[derive(Default)]
struct DeadBaseline {
    /// What the baseline was computed from: dead segments, their parsed metadata, the
    /// merged series count and the resolved definitions.
    signature: u64,
    acc: Vec<Acc>,
    /// Per merged series, the oldest creation time folded (see [`NOT_CREATED`]).
    created: Vec<u64>,
    /// The newest exemplars folded, by merged series.
    exemplars: FxHashMap<u32, Exemplars>,
    /// What `resolution` was computed from: every segment in age order and its families.
    resolution_signature: u64,
    resolution: Resolution,
}

/// Family definitions in force, how each segment's families fold, and conflicts.
#[derive(Default)]
struct Resolution {
    resolved: Vec<Option<Resolved>>,
    /// Per source (in age order), per local family.
    ops: Vec<Vec<FamilyOp>>,
    conflicts: Vec<Conflict>,
}

/// How the fold reads the series of one family of one segment: decided once per family and
/// segment when definitions are resolved, so that folding a series needs neither the
/// segment's nor the merged family's definition (two pointers to chase per series).
#[derive(Clone, Copy, Debug, PartialEq)]
struct FamilyOp {
    rule: FoldRule,
    /// Slot words of each series.
    width: u32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum FoldRule {
    /// Not folded: the family has no definition in force, or this segment declares it
    /// with another type, gauge mode or bucket layout.
    Skip,
    Counter,
    /// A histogram's or a summary's slots, with `buckets` counts (`+Inf` included).
    Histogram {
        buckets: u32,
    },
    /// A gauge's, an info's or a stateset's slots, merged by the mode.
    Gauge(GaugeMode),
}

impl FamilyOp {
    const SKIP: Self = Self {
        rule: FoldRule::Skip,
        width: 0,
    };

    /// The op of a segment's `local` declaration of a family whose definition in force is
    /// `resolved`.
    fn new(local: &FamilyRecord, resolved: Option<&Resolved>) -> Self {
        let Some(def) = resolved
            .map(|r| &*r.def)
            .filter(|def| compatible(def, local))
        else {
            return Self::SKIP;
        };
        let rule = match def.kind {
            MetricKind::Counter => FoldRule::Counter,
            MetricKind::Histogram | MetricKind::Summary => FoldRule::Histogram {
                buckets: def.bounds.len() as u32 + 1,
            },
            MetricKind::Gauge | MetricKind::Info | MetricKind::StateSet => {
                FoldRule::Gauge(def.mode.unwrap_or(GaugeMode::All))
            }
        };
        Self {
            rule,
            width: slots::slot_words(def.kind, def.bounds.len()) as u32,
        }
    }

    /// Whether the segment's series of this family are folded.
    fn folds(self) -> bool {
        self.rule != FoldRule::Skip
    }
}

/// Identifies the inputs of a [`Resolution`]: segments in age order and their families.
fn sources_signature(index: &Index, sources: &[Source<'_>]) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = rustc_hash::FxBuildHasher.build_hasher();
    h.write_usize(index.families.len());
    for source in sources {
        let (created, instance, sequence) = source.seg.age_key();
        h.write_u64(created);
        h.write_u64(instance);
        h.write_u32(sequence);
        h.write_usize(source.seg.families.len());
    }
    h.finish()
}

/// One segment and its links, as the merge sees it.
pub(crate) struct Source<'a> {
    pub(crate) seg: &'a SegmentFile,
    pub(crate) links: &'a SegmentLinks,
}

/// The definition each merged family uses this scrape.
#[derive(Clone)]
struct Resolved {
    def: Arc<FamilyRecord>,
    /// The definition's help and bounds as snapshots share them: the same allocations
    /// every scrape (the renderer's per-series caches compare them by address).
    help: Arc<str>,
    bounds: Arc<[f64]>,
    /// A stateset's states, shared by its series' values.
    states: Arc<[String]>,
}

/// The merge's state kept across scrapes: the interned families and series, the fold of
/// the dead segments, and how many bytes of live segments stay mapped.
pub(crate) struct Merger {
    index: Index,
    dead_baseline: DeadBaseline,
    resident_budget: usize,
    /// How the live segments are folded on threads (see [`fold_live`]).
    plan: FoldPlan,
    /// The fold threads beside the calling thread.
    pool: FoldPool,
}

/// How the live segments are folded on threads ([`fold_live`]).
#[derive(Clone, Copy, Debug)]
struct FoldPlan {
    /// Threads the live segments may be folded on.
    threads: usize,
    /// Fewest bytes of slots a fold thread takes.
    min_bytes: usize,
    /// Whether the calling thread waits for every fold thread to take its share before it
    /// folds (tests: every thread folds a run whatever the system's timing).
    in_step: bool,
}

impl Merger {
    /// A merger keeping up to `resident_budget` bytes of live segments mapped after their
    /// read (oldest first).
    pub(crate) fn new(resident_budget: usize) -> Self {
        Self {
            index: Index::default(),
            dead_baseline: DeadBaseline::default(),
            resident_budget,
            plan: FoldPlan {
                threads: 1,
                min_bytes: MIN_FOLD_BYTES_PER_THREAD,
                in_step: false,
            },
            pool: FoldPool::default(),
        }
    }

    /// See `Reader::set_resident_budget`.
    pub(crate) fn set_resident_budget(&mut self, bytes: usize) {
        self.resident_budget = bytes;
    }

    /// See `Reader::set_fold_threads`.
    pub(crate) fn set_fold_threads(&mut self, threads: usize) {
        let threads = threads.max(1);
        if threads != self.plan.threads {
            // The pool grows to what snapshots ask; another count starts it anew.
            self.pool.clear();
        }
        self.plan.threads = threads;
    }

    /// See `Reader::set_fold_group_min_bytes`.
    pub(crate) fn set_fold_group_min_bytes(&mut self, bytes: usize) {
        self.plan.min_bytes = bytes;
    }

    /// See `Reader::set_fold_threads_in_step`.
    pub(crate) fn set_fold_threads_in_step(&mut self, in_step: bool) {
        self.plan.in_step = in_step;
    }

    /// Interns the families and series that `seg` declared since `links` was last updated
    /// (see `Index::link`).
    pub(crate) fn link(&mut self, seg: &mut SegmentFile, links: &mut SegmentLinks) {
        self.index.link(seg, links);
    }

    /// Lets the index forget series that none of `links` has any more (see
    /// `Index::collect_garbage`), and the dead fold with them when it renumbers.
    pub(crate) fn collect_garbage(&mut self, links: &mut [&mut SegmentLinks]) {
        if self.index.collect_garbage(links) {
            // Cached merge state is keyed on merged ids.
            self.forget_dead();
        }
    }

    /// Forgets the fold of the dead segments (one of them was not read correctly).
    pub(crate) fn forget_dead(&mut self) {
        self.dead_baseline = DeadBaseline::default();
    }

    /// Merges `sources` (any order) into a snapshot and the text of its series, reporting
    /// conflicts and the threads the live segments were folded on in `report`. Live
    /// segments up to the resident budget (oldest first) stay mapped after their read.
    pub(crate) fn merge(
        &mut self,
        sources: &mut [Source<'_>],
        report: &mut ScrapeReport,
    ) -> (Snapshot, SnapshotText) {
        let Self {
            index,
            dead_baseline: baseline,
            resident_budget,
            plan,
            pool,
        } = self;
        sources.sort_by_key(|s| s.seg.age_key());
        // Definitions, compatibility and conflicts only change when segments or families
        // come or go: reuse them otherwise.
        let signature = sources_signature(index, sources);
        if baseline.resolution_signature != signature {
            let mut found = Vec::new();
            let resolved = resolve(index, sources, &mut found);
            // How each segment's series of each family fold (skipped unless its declaration
            // matches the resolved definition): decided once per family and segment, not
            // once per series.
            let ops = sources
                .iter()
                .map(|source| family_ops(source, &resolved))
                .collect();
            baseline.resolution = Resolution {
                resolved,
                ops,
                conflicts: found,
            };
            baseline.resolution_signature = signature;
        }
        let resolution = std::mem::take(&mut baseline.resolution);
        (report.conflicts).extend(resolution.conflicts.iter().cloned());
        let (resolved, ops) = (&resolution.resolved, &resolution.ops);
        let mut scratch = Vec::new();
        let signature = dead_signature(index, sources, resolved);
        let others = by_identity(sources, ops);
        if baseline.signature != signature || baseline.acc.len() != index.series.len() {
            let mut fold = Fold::new(index.series.len());
            for (source, ops) in sources.iter().zip(ops) {
                if !source.seg.live {
                    // Read once into the baseline: no page of a dead segment stays mapped.
                    let job = Job {
                        source,
                        ops,
                        keep_mapped: false,
                    };
                    fold_segment(&mut fold, &job, &others, resolved, &mut scratch);
                }
            }
            baseline.signature = signature;
            baseline.exemplars = Fold::resolve_exemplars(fold.exemplars, index, resolved);
            baseline.acc = fold.acc;
            baseline.created = fold.created;
        }
        let mut fold = Fold::from_baseline(baseline);
        // Live segments keep their pages mapped while the budget lasts, oldest first.
        let mut budget = *resident_budget;
        let (live, sizes): (Vec<Job<'_, '_>>, Vec<usize>) = (sources.iter().zip(ops))
            .filter(|(source, _)| source.seg.live)
            .map(|(source, ops)| {
                let size = source.seg.slot_area_bytes();
                let keep_mapped = match budget.checked_sub(size) {
                    Some(left) => {
                        budget = left;
                        true
                    }
                    None => false,
                };
                let job = Job {
                    source,
                    ops,
                    keep_mapped,
                };
                (job, size)
            })
            .unzip();
        let threads = affordable_fold_threads(plan.threads, index.series.len());
        let plan = FoldPlan {
            threads: fold_thread_count(&sizes, threads, plan.min_bytes),
            ..*plan
        };
        report.fold_threads = plan.threads;
        let series = index.series.len();
        fold_live(
            &mut fold, &live, &sizes, plan, pool, &others, resolved, series,
        );
        let built = build(index, resolved, fold);
        baseline.resolution = resolution;
        built
    }

    /// Folds `sources` (all dead, any order) with the merge rules, keeping what an archive
    /// needs to be merged again later exactly as they would have been.
    pub(crate) fn fold_dead(&self, sources: &mut [Source<'_>]) -> Folded {
        fold_dead(&self.index, sources)
    }
}

/// Per merged series: the value folded so far, the oldest creation time of a counter's,
/// histogram's or summary's series among the processes folded (its `_created`), and the
/// newest exemplars of those that have any.
struct Fold<'a> {
    acc: Vec<Acc>,
    created: Vec<u64>,
    exemplars: FxHashMap<u32, Box<[Candidate<'a>]>>,
}

impl<'a> Fold<'a> {
    fn new(series: usize) -> Self {
        Self {
            acc: vec![Acc::Empty; series],
            created: vec![NOT_CREATED; series],
            exemplars: FxHashMap::default(),
        }
    }

    /// A fold starting from the dead baseline's values and exemplars.
    fn from_baseline(baseline: &DeadBaseline) -> Self {
        let exemplars = (baseline.exemplars.iter())
            .map(|(&merged, kept)| {
                let candidates = kept.iter().map(|e| Candidate {
                    read: e.clone(),
                    slot: None,
                });
                (merged, candidates.collect())
            })
            .collect();
        Self {
            acc: baseline.acc.clone(),
            created: baseline.created.clone(),
            exemplars,
        }
    }

    /// Joins the fold of a later group of segments (in age order): the values, creation
    /// times and exemplar candidates that folding those segments after this fold's would
    /// give.
    fn absorb(&mut self, later: Fold<'a>) {
        for (acc, more) in self.acc.iter_mut().zip(later.acc) {
            acc.absorb(more);
        }
        for (created, more) in self.created.iter_mut().zip(later.created) {
            *created = (*created).min(more);
        }
        for (merged, more) in later.exemplars {
            let kept = match self.exemplars.entry(merged) {
                Entry::Vacant(e) => {
                    e.insert(more);
                    continue;
                }
                Entry::Occupied(e) => e.into_mut(),
            };
            // As `fold_exemplar_slots`: a strictly newer slot replaces the candidate.
            for (candidate, more) in kept.iter_mut().zip(more) {
                if let Some((time, _)) = more.slot
                    && candidate.time().is_none_or(|t| time > t)
                {
                    candidate.slot = more.slot;
                }
            }
        }
    }

    /// The exemplars folded, each newest candidate read whole now.
    fn resolve_exemplars(
        exemplars: FxHashMap<u32, Box<[Candidate<'a>]>>,
        index: &Index,
        resolved: &[Option<Resolved>],
    ) -> FxHashMap<u32, Exemplars> {
        (exemplars.into_iter())
            .map(|(merged, candidates)| {
                let family = index.series.get(merged as usize).map(|s| s.family as usize);
                let def = family
                    .and_then(|f| resolved.get(f)?.as_ref())
                    .map(|r| &r.def);
                let kept = (candidates.into_vec().into_iter().enumerate())
                    .map(|(bucket, c)| c.resolve(def.map(|d| &**d), bucket))
                    .collect();
                (merged, kept)
            })
            .collect()
    }
}

/// The newest exemplar seen so far for one sample: one already read (a dead baseline's),
/// and a newer slot not read yet (read once, when the fold is done: of the slots of every
/// process only the newest is read whole).
#[derive(Clone, Default)]
struct Candidate<'a> {
    read: Option<Exemplar>,
    /// The slot and the time it showed.
    slot: Option<(u64, &'a [AtomicU64])>,
}

impl Candidate<'_> {
    /// The time of the newest exemplar this candidate has.
    fn time(&self) -> Option<u64> {
        match (&self.slot, &self.read) {
            (Some((time, _)), _) => Some(*time),
            (None, Some(e)) => Some(e.unix_nanos),
            (None, None) => None,
        }
    }

    /// Reads the slot whole: its exemplar when it is whole, lies in its bucket (`bucket` of
    /// a histogram of `def`) and is newer than the one read before; else that one.
    fn resolve(self, def: Option<&FamilyRecord>, bucket: usize) -> Option<Exemplar> {
        let Some((_, slot)) = self.slot else {
            return self.read;
        };
        let ExemplarRead::Exemplar(exemplar) = exemplar_read(slot) else {
            return self.read;
        };
        let in_bucket = def.is_some_and(|def| {
            def.kind != MetricKind::Histogram
                || slots::bucket_index(&def.bounds, exemplar.value) == bucket
        });
        let newer = (self.read.as_ref()).is_none_or(|r| exemplar.unix_nanos > r.unix_nanos);
        if in_bucket && newer {
            Some(exemplar)
        } else {
            self.read
        }
    }
}

/// The segments of a merge by (instance id, sequence), with their families' ops: where
/// exemplar slots placed in a later segment of a process find their series.
type ByIdentity<'s, 'a> = FxHashMap<(u64, u32), (&'s Source<'a>, &'s [FamilyOp])>;

fn by_identity<'s, 'a>(sources: &'s [Source<'a>], ops: &'s [Vec<FamilyOp>]) -> ByIdentity<'s, 'a> {
    (sources.iter().zip(ops))
        .map(|(s, c)| {
            (
                (s.seg.header.instance_id, s.seg.header.sequence),
                (s, &c[..]),
            )
        })
        .collect()
}

/// Folds the exemplar block of merged series `merged` into `fold_into`: per sample, the
/// slot whose index word gives the newest time so far becomes its candidate (segments fold
/// oldest first: on equal times the older process's stays). Only the index is read here.
fn fold_exemplar_slots<'a>(fold_into: &mut Fold<'a>, merged: u32, block: ExemplarBlock<'a>) {
    let count = block.index.len();
    let kept = (fold_into.exemplars.entry(merged))
        .or_insert_with(|| vec![Candidate::default(); count].into_boxed_slice());
    let slots = block.slots.chunks(block.width);
    for ((candidate, word), slot) in kept.iter_mut().zip(block.index).zip(slots) {
        let Some(time) = exemplar_index_load(word) else {
            continue;
        };
        if candidate.time().is_none_or(|t| time > t) {
            candidate.slot = Some((time, slot));
        }
    }
}

/// A segment to fold, with its families' ops and whether its pages stay mapped after the
/// read (else they are released: `SegmentFile::release_pages`).
struct Job<'s, 'a> {
    source: &'s Source<'a>,
    ops: &'s [FamilyOp],
    keep_mapped: bool,
}

/// Below this many bytes of slots per thread, another thread costs more than it saves:
/// starting one and joining its fold take tens of microseconds, and a directory of 2.3 MiB
/// (32 processes × 1,000 series) was folded no faster on two threads than on one.
const MIN_FOLD_BYTES_PER_THREAD: usize = 2 << 20;

/// The most memory the accumulators of the fold threads beyond the first may take.
const MAX_EXTRA_FOLD_BYTES: usize = 32 << 20;

/// Of `threads`, how many may fold `series` merged series: each further thread holds an
/// accumulator and a creation time for every merged series (72 bytes, beside a
/// histogram's counts), so further threads are started only while those stay under
/// [`MAX_EXTRA_FOLD_BYTES`] in all: a directory of more than about 466,000 merged series
/// folds on one thread.
fn affordable_fold_threads(threads: usize, series: usize) -> usize {
    let per_fold = series.saturating_mul(std::mem::size_of::<Acc>() + std::mem::size_of::<u64>());
    threads.min(1 + MAX_EXTRA_FOLD_BYTES / per_fold.max(1))
}

/// Folds the live segments `jobs` (in age order, `sizes` bytes of slots each) into
/// `fold_into`, on `plan.threads` threads (the calling thread and the workers of `pool`):
/// the calling thread starts with every segment, and each worker, when it starts, takes
/// the back half of what the busiest thread has left (at least `plan.min_bytes`) into a
/// [`Fold`] of its own (`series` merged series; see [`shares`](crate::shares)). Each thread
/// folds a contiguous run of segments in order, and the runs are joined in age order with
/// [`Fold::absorb`], so the values are exactly those of one thread folding every segment in
/// turn, however late the others start (or if they cannot be started at all).
#[allow(
    clippy::too_many_arguments,
    reason = "the merge's parts, borrowed apart from one another"
)]
fn fold_live<'a>(
    fold_into: &mut Fold<'a>,
    jobs: &[Job<'_, 'a>],
    sizes: &[usize],
    plan: FoldPlan,
    pool: &mut FoldPool,
    others: &ByIdentity<'_, 'a>,
    resolved: &[Option<Resolved>],
    series: usize,
) {
    let fold_share = |fold: &mut Fold<'a>, share: &Share| {
        let mut scratch = Vec::new();
        while let Some(i) = share.claim() {
            fold_segment(fold, &jobs[i], others, resolved, &mut scratch);
        }
    };
    // One thread (or four billion segments, never: a share counts them in 32 bits) folds
    // every segment in turn; so does the calling thread where no worker can be started.
    let shared = (u32::try_from(jobs.len()).ok())
        .filter(|_| plan.threads > 1)
        .and_then(|count| Some((count, pool.get(plan.threads - 1)?)));
    let Some((count, crew)) = shared else {
        let mut scratch = Vec::new();
        for job in jobs {
            fold_segment(fold_into, job, others, resolved, &mut scratch);
        }
        return;
    };
    let shares: Vec<Share> = std::iter::once(Share::new(0..count))
        .chain((0..crew.len()).map(|_| Share::empty()))
        .collect();
    let starts = shares::starts(sizes);
    let (shares, starts) = (&shares[..], &starts[..]);
    // Workers that took their share (or found none worth taking).
    let took = &AtomicUsize::new(0);
    let runs: &Mutex<Vec<(usize, Fold<'a>)>> = &Mutex::new(Vec::new());
    let job = |worker: usize| {
        let mine = &shares[1 + worker];
        let run = shares::take_share(mine, shares, starts, plan.min_bytes);
        // SYNC POINT fold-share: relaxed; a count to wait for, publishing nothing (each
        // share is an atomic word of its own).
        took.fetch_add(1, Ordering::Relaxed);
        if let Some(run) = run {
            let mut fold = Fold::new(series);
            fold_share(&mut fold, mine);
            let mut runs = runs.lock().unwrap_or_else(PoisonError::into_inner);
            runs.push((run.start, fold));
        }
    };
    crew.run(&job, || {
        if plan.in_step {
            // SYNC POINT fold-share: relaxed, as above.
            while took.load(Ordering::Relaxed) < crew.len() {
                std::thread::yield_now();
            }
        }
        fold_share(fold_into, &shares[0]);
    });
    // The calling thread's run starts at the first segment; the others follow in order.
    let mut runs = std::mem::take(&mut *runs.lock().unwrap_or_else(PoisonError::into_inner));
    runs.sort_unstable_by_key(|(start, _)| *start);
    for (_, fold) in runs {
        fold_into.absorb(fold);
    }
}

/// Of `threads`, how many fold segments of `sizes` bytes: one per `min_bytes` of them at
/// most (one when they are small), and no more than there are segments.
fn fold_thread_count(sizes: &[usize], threads: usize, min_bytes: usize) -> usize {
    let total: usize = sizes.iter().sum();
    (threads.min(total / min_bytes.max(1)))
        .min(sizes.len())
        .max(1)
}

/// Folds every series of one segment into `fold`. `scratch` is a buffer for histogram
/// reads, kept across segments.
fn fold_segment<'a>(
    fold_into: &mut Fold<'a>,
    job: &Job<'_, 'a>,
    others: &ByIdentity<'_, 'a>,
    resolved: &[Option<Resolved>],
    scratch: &mut Vec<u64>,
) {
    let Job {
        source,
        ops,
        keep_mapped,
    } = *job;
    let seg = source.seg;
    // Only an archive keeps processes and exact partials beside its slots.
    let plain = seg.processes.is_empty() && seg.exact.is_empty();
    let count = seg.series.len().min(source.links.series.len());
    let (series, links) = (&seg.series[..count], &source.links.series[..count]);
    // Runs of series of one family (a writer creates a family's series together): one
    // dispatch on the family's op per run, not per series.
    let mut start = 0;
    while start < count {
        let family = series[start].family;
        let len = (series[start..].iter())
            .position(|s| s.family != family)
            .unwrap_or(count - start);
        let run = Run {
            series,
            merged: links,
            range: start..start + len,
        };
        let op = ops[family as usize];
        if plain {
            fold_run(fold_into, op, seg, run, scratch, |_| Archived::default());
        } else {
            fold_run(fold_into, op, seg, run, scratch, |i| Archived {
                process: seg.processes.get(&(i as u32)),
                exact: seg.exact.get(&(i as u32)).map(|p| &p[..]),
            });
        }
        start += len;
    }
    for &i in seg.exemplars.keys() {
        let s = seg.series[i as usize];
        let family = source.links.families[s.family as usize] as usize;
        let (true, Some(_), Some(slots)) = (
            ops[s.family as usize].folds(),
            &resolved[family],
            seg.exemplar_slots(i),
        ) else {
            continue;
        };
        let merged = source.links.series[i as usize];
        fold_exemplar_slots(fold_into, merged, slots);
    }
    // Slots placed here for series of an earlier, full segment of the process.
    for f in &seg.foreign_exemplars {
        let Some(&(owner, owner_ops)) = others.get(&(seg.header.instance_id, f.sequence)) else {
            continue;
        };
        let Some(i) = owner.seg.series_by_slot_word(f.slot_word) else {
            continue;
        };
        let s = owner.seg.series[i as usize];
        let def = &owner.seg.families[s.family as usize];
        let family = owner.links.families[s.family as usize] as usize;
        let (true, Some(_), Some(slots), Some(&merged)) = (
            owner_ops[s.family as usize].folds() && exemplar_slots_of(def) == f.count,
            &resolved[family],
            seg.exemplar_block(f.block_word, f.count, f.slot_words),
            owner.links.series.get(i as usize),
        ) else {
            continue;
        };
        fold_exemplar_slots(fold_into, merged, slots);
    }
    // Everything this scrape needs from the segment is in `acc` now. Its pages stay mapped
    // while the budget lasts (small directories never pay for faulting them in again).
    if !keep_mapped {
        seg.release_pages();
    }
}

/// Identifies what a dead baseline depends on; any change forces a recomputation.
fn dead_signature(index: &Index, sources: &[Source<'_>], resolved: &[Option<Resolved>]) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = rustc_hash::FxBuildHasher.build_hasher();
    h.write_usize(index.series.len());
    for source in sources.iter().filter(|s| !s.seg.live) {
        let (created, instance, sequence) = source.seg.age_key();
        h.write_u64(created);
        h.write_u64(instance);
        h.write_u32(sequence);
        h.write_usize(source.seg.series.len());
    }
    for res in resolved {
        h.write_usize(res.as_ref().map_or(0, |r| Arc::as_ptr(&r.def) as usize));
    }
    h.finish()
}

/// How each family of `source` folds: skipped unless declared as the resolved definition
/// of its name.
fn family_ops(source: &Source<'_>, resolved: &[Option<Resolved>]) -> Vec<FamilyOp> {
    source
        .seg
        .families
        .iter()
        .zip(&source.links.families)
        .map(|(local, &merged)| FamilyOp::new(local, resolved[merged as usize].as_ref()))
        .collect()
}

fn compatible(a: &FamilyRecord, b: &FamilyRecord) -> bool {
    a.kind == b.kind && a.mode == b.mode && a.bounds == b.bounds
}

/// Picks each family's definition (the oldest segment's) and reports disagreements.
fn resolve(
    index: &Index,
    sources: &[Source<'_>],
    conflicts: &mut Vec<Conflict>,
) -> Vec<Option<Resolved>> {
    let mut resolved: Vec<Option<Resolved>> = (0..index.families.len()).map(|_| None).collect();
    // Exposed names (family and sample names) already taken, by merged family id; a family
    // that would reuse one is left out (the older family keeps the name).
    let mut claimed: FxHashMap<String, u32> = FxHashMap::default();
    let mut blocked = vec![false; index.families.len()];
    for source in sources {
        for (local, &merged) in source.seg.families.iter().zip(&source.links.families) {
            if blocked[merged as usize] {
                continue;
            }
            match &resolved[merged as usize] {
                None => {
                    let names = exposed_names(local.kind, &local.name);
                    if let Some((name, &other)) =
                        names.iter().find_map(|n| claimed.get_key_value(n.as_str()))
                    {
                        blocked[merged as usize] = true;
                        conflicts.push(Conflict {
                            family: local.name.clone(),
                            kind: ConflictKind::Name,
                            detail: format!(
                                "{}: {} {} would be exposed as {name}, which {} already is; left out",
                                source.seg.path.display(),
                                local.kind,
                                local.name,
                                index.families[other as usize].name
                            ),
                        });
                        continue;
                    }
                    for n in names {
                        claimed.insert(n, merged);
                    }
                    resolved[merged as usize] = Some(Resolved {
                        def: Arc::clone(local),
                        help: Arc::from(local.help.as_str()),
                        bounds: Arc::from(local.bounds.as_slice()),
                        states: Arc::from(local.states.as_slice()),
                    });
                }
                Some(res) => {
                    if let Some(c) = conflict(&res.def, local, source.seg) {
                        conflicts.push(c);
                    }
                }
            }
        }
    }
    resolved
}

fn conflict(def: &FamilyRecord, other: &FamilyRecord, seg: &SegmentFile) -> Option<Conflict> {
    let (kind, detail) = if def.kind != other.kind {
        (
            ConflictKind::Type,
            format!("{} here, {} first", other.kind, def.kind),
        )
    } else if def.mode != other.mode {
        let mode = |m: Option<GaugeMode>| m.map_or_else(|| "none".to_owned(), |m| m.to_string());
        (
            ConflictKind::GaugeMode,
            format!("{} here, {} first", mode(other.mode), mode(def.mode)),
        )
    } else if def.bounds != other.bounds {
        let bounds = |b: &[f64]| {
            let b: Vec<String> = b.iter().map(f64::to_string).collect();
            format!("({})", b.join(", "))
        };
        (
            ConflictKind::Buckets,
            format!(
                "{} here, {} first",
                bounds(&other.bounds),
                bounds(&def.bounds)
            ),
        )
    } else if def.help != other.help {
        (
            ConflictKind::Help,
            format!("{:?} here, {:?} first", other.help, def.help),
        )
    } else {
        return None;
    };
    let excluded = if kind == ConflictKind::Help {
        "kept, with the first help text"
    } else {
        "its series are left out"
    };
    Some(Conflict {
        family: def.name.clone(),
        kind,
        detail: format!("{}: {detail}; {excluded}", seg.path.display()),
    })
}

/// What an archive keeps beside a series' slots.
#[derive(Clone, Copy, Default)]
struct Archived<'a> {
    /// The dead process an `all`-mode gauge value came from.
    process: Option<&'a ProcessOf>,
    /// The exact float part of a summed value, which replaces the rounded one in the slot.
    exact: Option<&'a [f64]>,
}

/// Adds a float part of a summed value: the slot's, or the archive's exact partials.
#[inline(always)]
fn add_float(sum: &mut ExactSum, slot_value: f64, exact: Option<&[f64]>) {
    match exact {
        Some(parts) => parts.iter().for_each(|&p| sum.add(p)),
        None => sum.add(slot_value),
    }
}

/// Consecutive series of one segment, of one family: `range` of the segment's `series`,
/// whose merged ids are `merged`.
struct Run<'r> {
    series: &'r [LocalSeries],
    merged: &'r [u32],
    range: Range<usize>,
}

/// How many series ahead of the one folded the fold prefetches slots: far enough for the
/// memory to arrive in time (a histogram's fold takes a few hundred instructions), near
/// enough that the lines are still cached when their series comes.
const PREFETCH_AHEAD: usize = 8;

/// Slot words per 64-byte cache line.
const WORDS_PER_LINE: usize = 8;

/// The slots of a run's series, `width` words each, in a segment's `words`.
struct SeriesSlots<'r> {
    run: &'r Run<'r>,
    words: &'r [AtomicU64],
    width: usize,
    /// Whether to prefetch the slots of the series ahead (wider than a cache line).
    hint: bool,
}

impl SeriesSlots<'_> {
    /// Calls `f` with each series' index, creation time, merged id and slots, in order;
    /// a series whose slots lie beyond the segment's words is left out. A plain loop
    /// rather than an iterator chain, which the compiler does not always inline.
    #[inline(always)]
    fn each(&self, mut f: impl FnMut(usize, u64, usize, &[AtomicU64])) {
        let Run {
            series,
            merged,
            range,
        } = self.run;
        let slots_of = |s: &LocalSeries| {
            let first = s.slot_word as usize;
            self.words.get(first..first + self.width)
        };
        for i in range.clone() {
            // The series ahead is most often of the same family (and width); where it is
            // not, the hint covers a little more or less of it, which costs nothing in
            // correctness.
            if self.hint
                && let Some(ahead) = series.get(i + PREFETCH_AHEAD).and_then(slots_of)
            {
                prefetch(ahead);
            }
            let s = &series[i];
            if let Some(slots) = slots_of(s) {
                f(i, s.created_unix_nanos, merged[i] as usize, slots);
            }
        }
    }
}

/// Folds a run of series with their family's `op`; `archived` gives what an archive keeps
/// beside the slots of its series `i` (nothing, for a writer's segment). Not inlined: a run
/// is tens of series, and the segment's loop over runs stays small.
#[inline(never)]
fn fold_run<'s>(
    fold_into: &mut Fold<'_>,
    op: FamilyOp,
    seg: &'s SegmentFile,
    run: Run<'_>,
    scratch: &mut Vec<u64>,
    archived: impl Fn(usize) -> Archived<'s>,
) {
    let words = seg.words();
    let width = op.width as usize;
    // Series of a cache line or less (counters, gauges) lie side by side, which the
    // hardware prefetcher follows; wider ones (histograms) are prefetched.
    let hint = width > WORDS_PER_LINE;
    let slots = SeriesSlots {
        run: &run,
        words,
        width,
        hint,
    };
    let Fold { acc, created, .. } = fold_into;
    match op.rule {
        FoldRule::Skip => {}
        FoldRule::Counter => {
            slots.each(|i, created_at, m, slot_words| {
                created[m] = created[m].min(created_at);
                let (int, fraction) = counter_read_words(slot_words);
                let sum = acc[m].sum();
                sum.add_int(int);
                add_float(sum, fraction, archived(i).exact);
            });
        }
        FoldRule::Histogram { buckets } => {
            let n = buckets as usize;
            if scratch.len() < n {
                scratch.resize(n, 0);
            }
            let counts = &mut scratch[..n];
            slots.each(|i, created_at, m, slot_words| {
                created[m] = created[m].min(created_at);
                fold_histogram(&mut acc[m], slot_words, counts, archived(i).exact);
            });
        }
        // An info's and a stateset's values are a gauge's of their mode (`mostrecent` or
        // `livemostrecent`): the newest write wins.
        FoldRule::Gauge(mode) => {
            if mode.live_only() && !seg.live {
                return;
            }
            // The mode is the run's: one dispatch per run, not per series.
            match mode {
                GaugeMode::Sum | GaugeMode::LiveSum => {
                    slots.each(|i, _, m, slot_words| {
                        let g = gauge_read(slot_words);
                        add_float(acc[m].sum(), g.value, archived(i).exact);
                    });
                }
                GaugeMode::Min | GaugeMode::LiveMin => {
                    slots.each(|_, _, m, slot_words| {
                        acc[m].keep_min(gauge_read(slot_words).value);
                    });
                }
                GaugeMode::Max | GaugeMode::LiveMax => {
                    slots.each(|_, _, m, slot_words| {
                        acc[m].keep_max(gauge_read(slot_words).value);
                    });
                }
                GaugeMode::MostRecent | GaugeMode::LiveMostRecent => {
                    let age = seg.age_key();
                    slots.each(|_, _, m, slot_words| {
                        let g = gauge_read(slot_words);
                        // As prometheus_client: a gauge never written with a time has no
                        // value.
                        if g.timestamp != 0 {
                            acc[m].keep_recent(g.value, g.timestamp, age);
                        }
                    });
                }
                GaugeMode::All | GaugeMode::LiveAll => {
                    slots.each(|i, _, m, slot_words| {
                        let value = gauge_read(slot_words).value;
                        let entry = match archived(i).process {
                            Some(p) => (p.pid, p.created_unix_nanos, value),
                            None => (seg.header.pid, seg.header.created_unix_nanos, value),
                        };
                        match &mut acc[m] {
                            Acc::PerProcess(list) => list.push(entry),
                            slot => *slot = Acc::PerProcess(vec![entry]),
                        }
                    });
                }
            }
        }
    }
}

/// Below this bound on each count, the counts of a histogram (at most 257) add up without
/// wrapping.
const EXACT_TOTAL_BOUND: u64 = 1 << 55;

/// Folds one histogram's (or summary's) slots into `slot`, reading its counts into `counts`.
#[inline(always)]
fn fold_histogram(
    slot: &mut Acc,
    slot_words: &[AtomicU64],
    counts: &mut [u64],
    exact: Option<&[f64]>,
) {
    let Acc::Histogram {
        buckets,
        sum,
        total,
    } = slot
    else {
        return first_histogram(slot, slot_words, counts, exact);
    };
    if buckets.len() < counts.len() {
        return first_histogram(slot, slot_words, counts, exact);
    }
    let read = histogram_read_adding(slot_words, counts, buckets);
    // Every bucket was at most the old `total`: when the counts read are below
    // `EXACT_TOTAL_BOUND` (so `read.total` is their exact total) and the new total fits, no
    // wrapping addition above overflowed. Otherwise take them back and saturate, so that a
    // corrupt segment's counts cannot overflow.
    match (total.checked_add(read.total)).filter(|_| read.high < EXACT_TOTAL_BOUND) {
        Some(new_total) => *total = new_total,
        None => saturate_counts(buckets, total, counts),
    }
    add_float(sum, read.sum, exact);
}

/// [`fold_histogram`] into a slot that holds no histogram yet: the counts read become it.
#[cold]
#[inline(never)]
fn first_histogram(
    slot: &mut Acc,
    slot_words: &[AtomicU64],
    counts: &mut [u64],
    exact: Option<&[f64]>,
) {
    let read = histogram_read_into(slot_words, counts);
    let mut sum = ExactSum::default();
    add_float(&mut sum, read.sum, exact);
    *slot = Acc::Histogram {
        buckets: counts.to_vec(),
        sum,
        total: bucket_total(counts),
    };
}

/// Takes back `counts`, added to `buckets` with wrapping, and adds them saturating, with
/// their total to `total`.
#[cold]
#[inline(never)]
fn saturate_counts(buckets: &mut [u64], total: &mut u64, counts: &[u64]) {
    *total = total.saturating_add(bucket_total(counts));
    for (t, c) in buckets.iter_mut().zip(counts.iter()) {
        *t = t.wrapping_sub(*c).saturating_add(*c);
    }
}

/// A stateset slot's value as the index of one of `states` states, if it is one.
fn state_index(value: f64, states: usize) -> Option<usize> {
    (value >= 0.0 && value.fract() == 0.0 && value < states as f64).then_some(value as usize)
}

/// Of an info family's series with the same family labels (the info's own aside), keeps
/// the newest: the info last set, by any process the mode counts.
fn keep_newest_infos(index: &Index, fid: u32, def: &FamilyRecord, acc: &mut [Acc]) {
    /// A series, its write time and its process's age key (older wins a tie).
    type Candidate = (u32, u64, Reverse<(u64, u64, u32)>);
    let mut newest: FxHashMap<Vec<&str>, Candidate> = FxHashMap::default();
    for &sid in &index.families[fid as usize].series {
        let Acc::Recent { timestamp, age, .. } = acc[sid as usize] else {
            continue;
        };
        let labels = &index.series[sid as usize].labels;
        let key: Vec<&str> = (def.label_names.iter())
            .map(|n| labels.get(n).unwrap_or_default())
            .collect();
        let candidate = (sid, timestamp, Reverse(age));
        match newest.entry(key) {
            Entry::Vacant(e) => {
                e.insert(candidate);
            }
            Entry::Occupied(mut e) => {
                let best = e.get_mut();
                let (loser, winner) = if (candidate.1, candidate.2) > (best.1, best.2) {
                    (best.0, candidate)
                } else {
                    (sid, *best)
                };
                acc[loser as usize] = Acc::Empty;
                *best = winner;
            }
        }
    }
}

fn build(
    index: &mut Index,
    resolved: &[Option<Resolved>],
    fold: Fold<'_>,
) -> (Snapshot, SnapshotText) {
    let Fold {
        mut acc,
        created,
        exemplars,
    } = fold;
    let mut exemplars = Fold::resolve_exemplars(exemplars, index, resolved);
    let mut order: Vec<u32> = (0..index.families.len() as u32).collect();
    order.sort_by(|&a, &b| {
        index.families[a as usize]
            .name
            .cmp(&index.families[b as usize].name)
    });
    let mut families = Vec::new();
    let mut text = SnapshotText::with_table(index.texts(), index.series.len());
    for fid in order {
        let Some(res) = &resolved[fid as usize] else {
            continue;
        };
        sort_series(index, fid);
        if res.def.kind == MetricKind::Info {
            keep_newest_infos(index, fid, &res.def, &mut acc);
        }
        let mut series = Vec::with_capacity(index.families[fid as usize].series.len());
        text.start_family();
        for &sid in &index.families[fid as usize].series {
            let labels = &index.series[sid as usize].labels;
            let created = Some(created[sid as usize]).filter(|&c| c != NOT_CREATED);
            let before = series.len();
            match std::mem::replace(&mut acc[sid as usize], Acc::Empty) {
                Acc::Empty => {}
                Acc::Sum(sum) => series.push(Series {
                    labels: Arc::clone(labels),
                    pid: None,
                    created_unix_nanos: created,
                    exemplars: shown(exemplars.remove(&sid)),
                    value: match res.def.kind {
                        MetricKind::Counter => Value::Counter(sum.value()),
                        _ => Value::Gauge(sum.value()),
                    },
                }),
                Acc::Min(v) | Acc::Max(v) => series.push(Series {
                    labels: Arc::clone(labels),
                    pid: None,
                    created_unix_nanos: None,
                    exemplars: None,
                    value: Value::Gauge(v),
                }),
                Acc::Recent { value, .. } => {
                    let value = match res.def.kind {
                        MetricKind::Info => Some(Value::Info),
                        MetricKind::StateSet => {
                            state_index(value, res.states.len()).map(|index| Value::State {
                                states: Arc::clone(&res.states),
                                index,
                            })
                        }
                        _ => Some(Value::Gauge(value)),
                    };
                    // A stateset's value that names no state (a corrupt slot) shows nothing.
                    if let Some(value) = value {
                        series.push(Series {
                            labels: Arc::clone(labels),
                            pid: None,
                            created_unix_nanos: None,
                            exemplars: None,
                            value,
                        });
                    }
                }
                Acc::Histogram { buckets, sum, .. } => series.push(Series {
                    labels: Arc::clone(labels),
                    pid: None,
                    created_unix_nanos: created,
                    exemplars: shown(exemplars.remove(&sid)),
                    value: match res.def.kind {
                        MetricKind::Summary => Value::Summary {
                            count: bucket_total(&buckets),
                            sum: sum.value(),
                        },
                        _ => Value::Histogram {
                            buckets,
                            sum: sum.value(),
                        },
                    },
                }),
                Acc::PerProcess(mut list) => {
                    // Newest incarnation first per pid, so a reused pid shows its new owner.
                    list.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
                    list.dedup_by_key(|e| e.0);
                    for (pid, _, v) in list {
                        series.push(Series {
                            labels: Arc::clone(labels),
                            pid: Some(pid),
                            created_unix_nanos: None,
                            exemplars: None,
                            value: Value::Gauge(v),
                        });
                    }
                }
            }
            text.push(sid, series.len() - before);
        }
        if series.is_empty() {
            text.cancel_family();
            continue;
        }
        families.push(Family {
            name: Arc::clone(&index.families[fid as usize].name),
            kind: res.def.kind,
            help: Arc::clone(&res.help),
            bounds: Arc::clone(&res.bounds),
            series,
        });
    }
    (Snapshot { families }, text)
}

/// Exemplars to show: `None` when no slot holds one.
fn shown(exemplars: Option<Exemplars>) -> Option<Exemplars> {
    exemplars.filter(|e| e.iter().any(Option::is_some))
}

/// The fold of dead segments, as a compactor archives it (`compact.rs`): per family, its
/// definition and every series' label values (in the definition's label order) and value.
pub(crate) struct Folded {
    pub(crate) families: Vec<FoldedFamily>,
    /// Series left out because their segment declares the family differently from the
    /// definition in force (they were never scraped either).
    pub(crate) conflicting_series: usize,
}

pub(crate) struct FoldedFamily {
    pub(crate) def: Arc<FamilyRecord>,
    pub(crate) series: Vec<FoldedSeries>,
}

/// One folded series of a [`FoldedFamily`].
pub(crate) struct FoldedSeries {
    /// Its label values, in the definition's label order.
    pub(crate) label_values: Vec<String>,
    pub(crate) value: FoldedValue,
    /// A counter's, histogram's or summary's oldest creation time among the folded
    /// processes; `None` for gauges.
    pub(crate) created_unix_nanos: Option<u64>,
    /// A counter's or histogram's newest exemplars among the folded processes.
    pub(crate) exemplars: Option<Exemplars>,
}

/// A folded value with what later merges need: a `mostrecent` gauge's time, the process of
/// each `all` gauge value.
pub(crate) enum FoldedValue {
    /// A counter or a `sum` gauge, exactly.
    Sum(ExactSum),
    /// A `min`, `max` or `mostrecent` gauge (`timestamp` 0 for the first two).
    Gauge { value: f64, timestamp: u64 },
    /// Per-bucket counts and the exact sum.
    Histogram { buckets: Vec<u64>, sum: ExactSum },
    /// `(pid, creation time of its segment, value)`, the newest incarnation per pid.
    PerProcess(Vec<(u32, u64, f64)>),
}

/// See [`Merger::fold_dead`].
fn fold_dead(index: &Index, sources: &mut [Source<'_>]) -> Folded {
    sources.sort_by_key(|s| s.seg.age_key());
    let mut conflicts = Vec::new();
    let resolved = resolve(index, sources, &mut conflicts);
    let mut scratch = Vec::new();
    let mut fold = Fold::new(index.series.len());
    let mut conflicting_series = 0;
    let all_ops: Vec<Vec<FamilyOp>> = (sources.iter())
        .map(|source| family_ops(source, &resolved))
        .collect();
    let others = by_identity(sources, &all_ops);
    for (source, ops) in sources.iter().zip(&all_ops) {
        conflicting_series += source
            .seg
            .series
            .iter()
            .filter(|s| !ops[s.family as usize].folds())
            .count();
        let job = Job {
            source,
            ops,
            keep_mapped: false,
        };
        fold_segment(&mut fold, &job, &others, &resolved, &mut scratch);
    }
    let Fold {
        mut acc,
        created,
        exemplars,
    } = fold;
    let mut exemplars = Fold::resolve_exemplars(exemplars, index, &resolved);
    let mut families = Vec::new();
    for (fid, res) in resolved.iter().enumerate() {
        let Some(res) = res else { continue };
        let mut series = Vec::new();
        for &sid in &index.families[fid].series {
            let value = match std::mem::replace(&mut acc[sid as usize], Acc::Empty) {
                Acc::Empty => continue,
                Acc::Sum(sum) => FoldedValue::Sum(sum),
                Acc::Min(value) | Acc::Max(value) => FoldedValue::Gauge {
                    value,
                    timestamp: 0,
                },
                Acc::Recent {
                    value, timestamp, ..
                } => FoldedValue::Gauge { value, timestamp },
                Acc::Histogram { buckets, sum, .. } => FoldedValue::Histogram { buckets, sum },
                Acc::PerProcess(mut list) => {
                    list.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
                    list.dedup_by_key(|e| e.0);
                    FoldedValue::PerProcess(list)
                }
            };
            let labels = &index.series[sid as usize].labels;
            let mut values: Vec<String> = (res.def.label_names.iter())
                .map(|name| labels.get(name).unwrap_or_default().to_owned())
                .collect();
            if res.def.kind == MetricKind::Info {
                // The info's own labels, name and value pairs, after the family's.
                for (name, value) in &labels.pairs {
                    if !res.def.label_names.iter().any(|n| **n == **name) {
                        values.extend([name.to_string(), value.to_string()]);
                    }
                }
            }
            series.push(FoldedSeries {
                label_values: values,
                value,
                created_unix_nanos: Some(created[sid as usize]).filter(|&c| c != NOT_CREATED),
                exemplars: shown(exemplars.remove(&sid)),
            });
        }
        if !series.is_empty() {
            families.push(FoldedFamily {
                def: Arc::clone(&res.def),
                series,
            });
        }
    }
    Folded {
        families,
        conflicting_series,
    }
}

fn sort_series(index: &mut Index, fid: u32) {
    let Index {
        families, series, ..
    } = index;
    let fam = &mut families[fid as usize];
    if !fam.sorted {
        fam.series
            .sort_by(|&a, &b| series[a as usize].labels.cmp(&series[b as usize].labels));
        fam.sorted = true;
    }
    debug_assert!(fam.series.iter().all(|&s| series[s as usize].family == fid));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A histogram's slots: count, sum, then the bucket counts.
    fn slots(counts: &[u64], sum: f64) -> Vec<AtomicU64> {
        let count = counts.iter().fold(0u64, |a, &c| a.wrapping_add(c));
        [count, sum.to_bits()]
            .into_iter()
            .chain(counts.iter().copied())
            .map(AtomicU64::new)
            .collect()
    }

    /// The fold of histograms of 3 buckets (counts and sum per process).
    fn fold_all(processes: &[(&[u64], f64)]) -> Acc {
        let mut acc = Acc::Empty;
        let mut counts = vec![0; 3];
        for &(c, sum) in processes {
            fold_histogram(&mut acc, &slots(c, sum), &mut counts, None);
        }
        acc
    }

    /// A histogram fold's buckets, sum and total.
    fn parts(acc: Acc) -> (Vec<u64>, f64, u64) {
        match acc {
            Acc::Histogram {
                buckets,
                sum,
                total,
            } => (buckets, sum.value(), total),
            _ => panic!("not a histogram"),
        }
    }

    fn folded(processes: &[(&[u64], f64)]) -> (Vec<u64>, f64, u64) {
        parts(fold_all(processes))
    }

    #[test]
    fn histogram_counts_add_exactly() {
        let (buckets, sum, total) =
            folded(&[(&[1, 2, 3], 1.5), (&[4, 0, 6], 2.25), (&[0, 0, 1], 0.25)]);
        assert_eq!(buckets, [5, 2, 10]);
        assert_eq!(sum, 4.0);
        assert_eq!(total, 17);
    }

    #[test]
    fn corrupt_histogram_counts_saturate_instead_of_wrapping() {
        // Counts past the bound of plain additions, from a corrupt (or adversarial)
        // segment: the sums stop at u64::MAX, the small buckets stay exact.
        let huge = u64::MAX - 1;
        let (buckets, _, total) = folded(&[(&[huge, 1, 0], 0.0), (&[5, 2, 3], 0.0)]);
        assert_eq!(buckets, [u64::MAX, 3, 3]);
        assert_eq!(total, u64::MAX);
        // Counts each below the bound whose total would overflow the accumulator's.
        let big = 1 << 54;
        let three = [big, big, big];
        let many: Vec<(&[u64], f64)> = vec![(&three, 0.0); 400];
        let (buckets, _, total) = folded(&many);
        assert_eq!(total, u64::MAX);
        assert_eq!(buckets, [400 * big, 400 * big, 400 * big]);
        let many: Vec<(&[u64], f64)> = vec![(&three, 0.0); 1100];
        let (buckets, _, _) = folded(&many);
        assert_eq!(buckets, [u64::MAX; 3]);
    }

    /// Histograms folded in two groups and joined with `absorb`, at every split point:
    /// the buckets, total and sum of one fold, saturation included.
    #[test]
    fn absorbed_histograms_equal_one_fold() {
        let huge = u64::MAX - 1;
        let big = 1 << 62;
        let cases: [&[(&[u64], f64)]; 3] = [
            &[(&[1, 2, 3], 1.5), (&[4, 0, 6], 2.25), (&[0, 0, 1], 0.1)],
            &[(&[huge, 1, 0], 0.0), (&[5, 2, 3], 0.5), (&[1, 1, 1], 0.25)],
            &[
                (&[big, big, 0], 1.0),
                (&[big, 0, big], 2.0),
                (&[big, big, big], 3.0),
            ],
        ];
        for processes in cases {
            let whole = folded(processes);
            for split in 0..=processes.len() {
                let mut first = fold_all(&processes[..split]);
                first.absorb(fold_all(&processes[split..]));
                assert_eq!(parts(first), whole, "{processes:?} split at {split}");
            }
        }
    }

    /// `min`, `max` and `mostrecent` joins keep what one fold keeps: the first of equal
    /// extremes, NaN only when every value is, the newest write with the older process
    /// winning a tie.
    #[test]
    fn absorbed_gauges_equal_one_fold() {
        let values = [3.0, f64::NAN, -0.0, 0.0, 3.0, -7.5, f64::NAN, 12.0];
        let show = |acc: &Acc| match acc {
            Acc::Min(v) | Acc::Max(v) => format!("{v:?} {}", v.is_sign_negative()),
            Acc::Recent {
                value,
                timestamp,
                age,
            } => format!("{value:?} {timestamp} {age:?}"),
            Acc::Empty => "empty".to_owned(),
            _ => panic!("not a gauge"),
        };
        type Step = fn(&mut Acc, usize, f64);
        let steps: [Step; 3] = [
            |acc, _, v| acc.keep_min(v),
            |acc, _, v| acc.keep_max(v),
            // Times repeat, so ties between processes (older age first) are exercised.
            |acc, i, v| acc.keep_recent(v, (i / 3) as u64 + 1, (i as u64 % 2, 0, i as u32)),
        ];
        for step in steps {
            for len in 0..=values.len() {
                let fold = |range: Range<usize>| {
                    let mut acc = Acc::Empty;
                    for i in range {
                        step(&mut acc, i, values[i]);
                    }
                    acc
                };
                let whole = show(&fold(0..len));
                for split in 0..=len {
                    let mut first = fold(0..split);
                    first.absorb(fold(split..len));
                    assert_eq!(show(&first), whole, "{len} values split at {split}");
                }
            }
        }
    }

    #[test]
    fn further_fold_threads_are_bounded_by_their_memory() {
        assert_eq!(std::mem::size_of::<Acc>() + std::mem::size_of::<u64>(), 72);
        assert_eq!(affordable_fold_threads(4, 0), 4);
        assert_eq!(affordable_fold_threads(4, 10_000), 4);
        // 14.4 MB per further fold: two fit in 32 MiB.
        assert_eq!(affordable_fold_threads(4, 200_000), 3);
        assert_eq!(affordable_fold_threads(4, 466_000), 2);
        assert_eq!(affordable_fold_threads(4, 470_000), 1);
        assert_eq!(affordable_fold_threads(4, 1_280_000), 1);
        assert_eq!(affordable_fold_threads(1, 10), 1);
    }

    #[test]
    fn one_thread_per_min_bytes_of_segments_at_most() {
        let mib = 1 << 20;
        // Each thread takes at least the minimum: a small directory is one thread's.
        assert_eq!(fold_thread_count(&[mib / 2; 3], 4, mib), 1);
        assert_eq!(fold_thread_count(&[mib; 3], 4, mib), 3);
        assert_eq!(fold_thread_count(&[mib; 8], 4, mib), 4);
        assert_eq!(fold_thread_count(&[mib; 8], 1, 0), 1);
        assert_eq!(fold_thread_count(&[], 4, 0), 1);
        assert_eq!(fold_thread_count(&[5], 4, 0), 1);
        assert_eq!(fold_thread_count(&[5, 5], 4, 0), 2);
    }
}
