//! `writer_model`: the structure-aware target. The input decodes (with `arbitrary`) into a
//! [`Scenario`]: segment options and a sequence of operations on one writer process, run
//! with the real writer ([`Registry`]) in a fresh directory and checked against a model.
//!
//! Operations: register a counter, gauge (any mode), histogram or summary (names, help,
//! labels and buckets drawn from pools with valid, reserved, clashing and invalid
//! entries); create, increment, decrement, add to, set or observe a series (label values
//! with characters that need escaping, and invalid ones); the process exits; truncate a
//! segment file; corrupt bytes of a segment at an offset; check.
//!
//! The model predicts each registration (accepted, the same family again, a conflict, or
//! invalid) and each child lookup (label values accepted or not), and tracks every value
//! with the documented slot semantics (`crates/shmetrics-layout/src/slots.rs`). Which
//! segment a new series lands in, or whether it is dropped for lack of space, is read from
//! the writer (`segment_paths`, `dropped_series`); everything else is predicted.
//!
//! Checks, at every `check` operation and at the end (the end also with a fresh reader):
//!
//! - every segment, through `inspect`: its header is valid unless the scenario changed it;
//!   its records are exactly the model's, at the offsets the encoding gives, up to the
//!   first byte the scenario changed; values of series whose slots were not touched are
//!   exact; a truncated segment is rejected with the right reason;
//! - the scrape: never a panic, a well-formed snapshot that renders and reads back exactly
//!   (see [`crate::exposition`]); while no header or metadata byte of an intact-size segment
//!   was changed, the snapshot is exactly the model (families, help, buckets, label pairs,
//!   pids, values, bitwise), truncated segments are reported with their reason, the report
//!   counts live, dead and bad segments and dropped series exactly, and a fresh reader
//!   agrees with the long-lived one (which parsed incrementally);
//! - after header or metadata corruption: no panic, a well-formed snapshot, untouched
//!   segments never reported, truncated ones always reported.
//!
//! Truncation makes the process exit first and replaces the long-lived reader: truncating a
//! file that a process has mapped raises SIGBUS in it, a documented limit
//! (docs/layout.md, "Trust"), not something a check can observe.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use arbitrary::{Arbitrary, Unstructured};
use shmetrics_layout::limits::{MAX_BUCKETS, MAX_LABEL_SET_LEN, MAX_LABEL_VALUE_LEN};
use shmetrics_layout::names::exposed_names;
use shmetrics_layout::record::{FamilyRecord, SeriesRecord, check_family};
use shmetrics_layout::slots::slot_words;
use shmetrics_layout::{HEADER_SIZE, META_LEN_WORD, SLOT_FLOOR_WORD};
use shmetrics_reader::inspect::{RecordEntry, SlotValue, inspect};
use shmetrics_reader::snapshot::Value;
use shmetrics_reader::{ProblemReason, Reader, Scrape, self_metrics};
use shmetrics_writer::{
    CounterFamily, DEFAULT_BUCKETS, Error, GaugeFamily, GaugeMode, HistogramFamily, MetricKind,
    Options, Registry, SummaryFamily,
};

use crate::exposition::{check_render, check_snapshot};
use crate::scratch_dir;
use crate::segment::{
    SeriesKey, assert_same_snapshot, check_consumers, same_f64, same_value, series_key,
};

/// The pid the simulated writer process presents.
pub const PID: u32 = 4243;
/// Operations run per scenario at most (more are ignored).
pub const MAX_OPS: usize = 256;

/// One fuzz input: segment options and the operations.
#[derive(Arbitrary, Clone, Debug)]
pub struct Scenario {
    /// First segment: `4096 × (1 + n % 4)` bytes.
    pub initial_pages: u8,
    /// Continuation segments double up to `initial × (1 + n % 4)` bytes.
    pub growth: u8,
    /// Segments per process: `1 + n % 4`.
    pub max_segments: u8,
    /// What happens.
    pub ops: Vec<Op>,
}

/// One operation; indices pick from pools or registered families modulo their length.
#[derive(Arbitrary, Clone, Debug)]
pub enum Op {
    /// Registers a family.
    Register {
        /// Type and gauge mode.
        kind: Kind,
        /// Index into the name pool.
        name: u8,
        /// Index into the help pool.
        help: u8,
        /// Indices into the label-name pool (at most 4 are used).
        labels: Vec<u8>,
        /// Buckets, for histograms.
        bounds: Bounds,
    },
    /// Creates (or looks up) a series of a registered family and writes to it.
    Write {
        /// Index of the registered family.
        family: u8,
        /// Picks the label values (see [`label_values`]).
        values: u8,
        /// What to do with it.
        write: Write,
    },
    /// The process exits: registry, families and handles are dropped.
    Exit,
    /// Truncates (or extends) a segment file; the process exits first.
    Truncate {
        /// Index of the segment.
        segment: u8,
        /// The new length.
        len: Cut,
    },
    /// Changes bytes of a segment file in place.
    Corrupt {
        /// Index of the segment.
        segment: u8,
        /// Where.
        at: Place,
        /// The bytes (at most 16; `[0xff]` when empty).
        bytes: Vec<u8>,
        /// Overwrite with `bytes` (else XOR them in).
        overwrite: bool,
    },
    /// Compares reader and inspection with the model.
    Check,
}

/// A family's type.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Kind {
    /// A counter.
    Counter,
    /// A gauge in mode `GaugeMode::ALL[n % 10]`.
    Gauge(u8),
    /// A histogram.
    Histogram,
    /// A summary.
    Summary,
}

/// Histogram buckets as given to the registry.
#[derive(Arbitrary, Clone, Debug)]
pub enum Bounds {
    /// `&[]`: the default buckets.
    Default,
    /// An entry of the bounds pool.
    Listed(u8),
    /// Arbitrary values (at most 8).
    Custom(Vec<f64>),
}

/// A write to a series; its meaning depends on the family's type.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Write {
    /// Only create (or look up) the series.
    Touch,
    /// `inc()`; histograms and summaries observe 1.
    Inc,
    /// `dec()` for gauges; nothing else for the others.
    Dec,
    /// `inc_by`, `add` or `observe`.
    Add(Num),
    /// `set` for gauges, as `Add` for the others.
    Set(Num),
}

/// A number, biased towards exact ones.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Num {
    /// A small integer.
    Int(i8),
    /// Eighths: exact fractions.
    Eighths(i16),
    /// Any `f64`, NaN and infinities included.
    Raw(f64),
}

/// A new length for a segment file.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Cut {
    /// 0 bytes.
    Empty,
    /// Inside the header: `n % 128`.
    InHeader(u8),
    /// Shorter than the segment: `size - 1 - n % size`.
    Shorter(u16),
    /// The same size (the file is unchanged).
    Same,
    /// Longer: `size + 1 + n`.
    Longer(u16),
}

/// Where a corruption starts.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Place {
    /// In the header: `n % 128`.
    Header(u8),
    /// Early in the metadata: `128 + n % 2048`.
    Metadata(u16),
    /// Near the end, where the slots are: `len - 1 - n % len`.
    Slots(u16),
    /// Anywhere: `n % len`.
    Anywhere(u32),
}

/// `writer_model`: decodes a [`Scenario`] and runs it.
pub fn scenario(data: &[u8]) {
    scenario_stats(data);
}

/// As [`scenario`], returning what the scenario did (`None` when the input decodes to no
/// scenario).
pub fn scenario_stats(data: &[u8]) -> Option<Stats> {
    let s = Scenario::arbitrary_take_rest(Unstructured::new(data)).ok()?;
    Some(run(&s))
}

/// What a scenario did: how much of the writer and reader it reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Families registered.
    pub families: usize,
    /// Series created (dropped ones included).
    pub series: usize,
    /// Series the writer dropped for lack of segment space.
    pub dropped: u64,
    /// Segments the process created.
    pub segments: usize,
    /// Truncations.
    pub truncations: usize,
    /// Corruptions that changed at least one byte.
    pub corruptions: usize,
    /// Checks that compared the snapshot with the model exactly (the final one included).
    pub exact_checks: usize,
    /// Checks after header or metadata corruption.
    pub lenient_checks: usize,
}

// ---------------------------------------------------------------------------------------
// Pools.

fn name(i: u8) -> String {
    const NAMES: [&str; 14] = [
        "a", "a_total", "b", "b_bucket", "b_count", "b_sum", "c", "vllm:d", "_e", ":f", "g_total",
        "1bad", "a-b", "",
    ];
    match NAMES.get(i as usize % (NAMES.len() + 1)) {
        Some(n) => (*n).to_owned(),
        None => "n".repeat(shmetrics_layout::names::MAX_NAME_LEN + 1),
    }
}

fn help(i: u8) -> String {
    const HELP: [&str; 4] = ["", "Help.", "Back\\slash \"q\"\nnew line\r", "ünïcödé ☃"];
    match HELP.get(i as usize % (HELP.len() + 1)) {
        Some(h) => (*h).to_owned(),
        None => "h".repeat(shmetrics_layout::names::MAX_HELP_LEN + 1),
    }
}

fn label_name(i: u8) -> &'static str {
    const LABELS: [&str; 9] = [
        "k",
        "model_name",
        "engine",
        "le",
        "quantile",
        "pid",
        "__r",
        "no space",
        "z",
    ];
    LABELS[i as usize % LABELS.len()]
}

fn listed_bounds(i: u8) -> Vec<f64> {
    match i % 10 {
        0 => vec![0.1, 1.0, 10.0],
        1 => vec![1.0, f64::INFINITY],
        2 => vec![f64::INFINITY],
        3 => vec![-1.0, 0.0, 1.0],
        4 => vec![2.0, 1.0],
        5 => vec![f64::NAN],
        6 => vec![1.0, 1.0],
        7 => DEFAULT_BUCKETS.to_vec(),
        8 => (0..MAX_BUCKETS).map(|i| i as f64).collect(),
        _ => (0..=MAX_BUCKETS).map(|i| i as f64).collect(),
    }
}

const VALUES: [&str; 6] = ["", "a", "b", "x\\y\"z\n", "é ünï", "sp ace,comma={}"];

/// The label values `choice` picks for a family of `count` labels: digits of `choice` in
/// base 6 index a pool of six values (one empty, some to escape); 255 gives one value too
/// many, 254 values that are too long.
pub fn label_values(choice: u8, count: usize) -> Vec<String> {
    match choice {
        u8::MAX => vec!["a".to_owned(); count + 1],
        254 => vec!["v".repeat(MAX_LABEL_VALUE_LEN + 1); count],
        _ => (0..count)
            .map(|i| {
                let digit = choice as usize / VALUES.len().pow(i as u32) % VALUES.len();
                VALUES[digit].to_owned()
            })
            .collect(),
    }
}

impl Write {
    /// What a histogram or summary observes for this write, if anything.
    fn observation(self) -> Option<f64> {
        match self {
            Write::Touch | Write::Dec => None,
            Write::Inc => Some(1.0),
            Write::Add(n) | Write::Set(n) => Some(n.value()),
        }
    }
}

impl Num {
    fn value(self) -> f64 {
        match self {
            Num::Int(n) => f64::from(n),
            Num::Eighths(n) => f64::from(n) / 8.0,
            Num::Raw(v) => v,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The model.

/// A family definition as the registry stores it.
#[derive(Clone, Debug, PartialEq)]
struct Def {
    kind: MetricKind,
    mode: Option<GaugeMode>,
    name: String,
    help: String,
    labels: Vec<String>,
    bounds: Vec<f64>,
}

impl Def {
    fn from_op(kind: Kind, name_i: u8, help_i: u8, labels: &[u8], bounds: &Bounds) -> Def {
        let (kind, mode) = match kind {
            Kind::Counter => (MetricKind::Counter, None),
            Kind::Gauge(m) => (
                MetricKind::Gauge,
                Some(GaugeMode::ALL[m as usize % GaugeMode::ALL.len()]),
            ),
            Kind::Histogram => (MetricKind::Histogram, None),
            Kind::Summary => (MetricKind::Summary, None),
        };
        let given = match bounds {
            Bounds::Default => vec![],
            Bounds::Listed(i) => listed_bounds(*i),
            Bounds::Custom(v) => v.iter().copied().take(8).collect(),
        };
        let mut name = name(name_i);
        // Documented registry rules: a counter's `_total` is stripped; empty buckets mean the
        // defaults; a trailing +Inf is implied.
        if kind == MetricKind::Counter
            && let Some(base) = name.strip_suffix("_total")
        {
            name = base.to_owned();
        }
        let bounds = if kind != MetricKind::Histogram {
            vec![]
        } else if given.is_empty() {
            DEFAULT_BUCKETS.to_vec()
        } else if given.last() == Some(&f64::INFINITY) {
            given[..given.len() - 1].to_vec()
        } else {
            given
        };
        Def {
            kind,
            mode,
            name,
            help: help(help_i),
            labels: labels
                .iter()
                .take(4)
                .map(|&l| label_name(l).to_owned())
                .collect(),
            bounds,
        }
    }

    fn record(&self, id: u32) -> FamilyRecord {
        FamilyRecord {
            id,
            kind: self.kind,
            mode: self.mode,
            name: self.name.clone(),
            help: self.help.clone(),
            label_names: self.labels.clone(),
            bounds: self.bounds.clone(),
            states: Vec::new(),
        }
    }
}

/// A series' value, with the slot semantics of `slots.rs`.
#[derive(Clone, Debug)]
enum Val {
    /// Integral increments (up to 2^53) add to `int`, others to `frac`.
    Counter { int: u64, frac: f64 },
    /// `written`: set or changed at least once.
    Gauge { value: f64, written: bool },
    /// Per-bucket counts (the last `+Inf`) and the sum; a summary has one bucket.
    Histogram { buckets: Vec<u64>, sum: f64 },
}

impl Val {
    fn new(def: &Def) -> Val {
        match def.kind {
            MetricKind::Counter => Val::Counter { int: 0, frac: 0.0 },
            MetricKind::Gauge => Val::Gauge {
                value: 0.0,
                written: false,
            },
            MetricKind::Histogram | MetricKind::Summary => Val::Histogram {
                buckets: vec![0; def.bounds.len() + 1],
                sum: 0.0,
            },
            MetricKind::Info | MetricKind::StateSet => {
                unreachable!("the model registers prometheus_client's multiprocess kinds only")
            }
        }
    }

    fn apply(&mut self, write: Write, bounds: &[f64]) {
        match (self, write) {
            (_, Write::Touch) => {}
            (Val::Counter { int, .. }, Write::Inc) => *int = int.wrapping_add(1),
            (Val::Counter { .. }, Write::Dec) => {}
            (Val::Counter { int, frac }, Write::Add(n) | Write::Set(n)) => {
                let v = n.value();
                if v > 0.0 && v <= 9_007_199_254_740_992.0 && v.fract() == 0.0 {
                    *int = int.wrapping_add(v as u64);
                } else if v > 0.0 {
                    *frac += v;
                }
            }
            (Val::Gauge { value, written }, w) => {
                *value = match w {
                    Write::Inc => *value + 1.0,
                    Write::Dec => *value + -1.0,
                    Write::Add(n) => *value + n.value(),
                    Write::Set(n) => n.value(),
                    Write::Touch => unreachable!(),
                };
                *written = true;
            }
            (Val::Histogram { buckets, sum }, write) => {
                let Some(v) = write.observation() else { return };
                let bucket = bounds.iter().position(|&b| v <= b).unwrap_or(bounds.len());
                buckets[bucket] = buckets[bucket].wrapping_add(1);
                *sum += v;
            }
        }
    }

    /// The merged value a scrape shows for this one series, `None` when it shows nothing.
    fn shown(&self, def: &Def, alive: bool) -> Option<Value> {
        Some(match self {
            Val::Counter { int, frac } => Value::Counter(counter_value(*int, *frac)),
            Val::Gauge { value, written } => {
                let mode = def.mode.expect("gauges have a mode");
                if (mode.live_only() && !alive) || (mode.needs_timestamp() && !written) {
                    return None;
                }
                Value::Gauge(*value)
            }
            Val::Histogram { buckets, sum } if def.kind == MetricKind::Summary => Value::Summary {
                count: buckets.iter().fold(0, |a: u64, b| a.saturating_add(*b)),
                sum: *sum,
            },
            Val::Histogram { buckets, sum } => Value::Histogram {
                buckets: buckets.clone(),
                sum: *sum,
            },
        })
    }

    /// Whether `inspect`'s reading of the slots is this value.
    fn matches_slots(&self, def: &Def, slots: &SlotValue) -> bool {
        match (self, slots) {
            (Val::Counter { int, frac }, SlotValue::Counter(v)) => {
                same_f64(*v, counter_value(*int, *frac))
            }
            (Val::Gauge { value, written }, SlotValue::Gauge(g)) => {
                let timestamped = def.mode.is_some_and(GaugeMode::needs_timestamp) && *written;
                same_f64(g.value, *value) && (g.timestamp > 0) == timestamped
            }
            (Val::Histogram { buckets, sum }, SlotValue::Histogram(h)) => {
                h.buckets == *buckets && same_f64(h.sum, *sum) && h.consistent
            }
            (
                Val::Histogram { buckets, sum },
                SlotValue::Summary {
                    count,
                    sum: s,
                    consistent,
                },
            ) => {
                *count == buckets.iter().fold(0, |a: u64, b| a.saturating_add(*b))
                    && same_f64(*s, *sum)
                    && *consistent
            }
            _ => false,
        }
    }
}

#[derive(Debug)]
struct ModelSeries {
    /// Index of the segment holding its slots; `None` when the writer dropped it.
    home: Option<usize>,
    value: Val,
}

#[derive(Debug)]
struct ModelFamily {
    def: Def,
    series: BTreeMap<Vec<String>, ModelSeries>,
}

/// A record the writer appended to a segment: a family (by index) or a series.
#[derive(Clone, Debug)]
enum ModelRecord {
    Family(usize),
    Series(usize, Vec<String>),
}

/// One segment file of the process and what the scenario did to it.
#[derive(Debug)]
struct SegmentState {
    path: PathBuf,
    /// Size at creation.
    size: u64,
    /// Current length of the file.
    len: u64,
    /// Bytes (below `size`) that may differ from what the writer wrote; empty when none.
    changed: Vec<bool>,
    /// Records in the order the writer appended them.
    records: Vec<ModelRecord>,
    /// Whether the file grew again after a truncation: the bytes in between are a hole,
    /// which a reader on tmpfs rejects (`sparse_file`) and elsewhere reads as zeros.
    holes: bool,
}

impl SegmentState {
    fn changed_in(&self, range: std::ops::Range<u64>) -> Option<u64> {
        let end = range.end.min(self.changed.len() as u64);
        (range.start..end).find(|&p| self.changed[p as usize])
    }

    fn mark(&mut self, pos: u64) {
        if pos < self.size {
            if self.changed.is_empty() {
                self.changed = vec![false; self.size as usize];
            }
            self.changed[pos as usize] = true;
        }
    }

    fn header_changed(&self) -> bool {
        self.changed_in(0..HEADER_SIZE as u64).is_some()
    }

    /// The reason a reader must give for this resized segment, when it is known: a file
    /// shorter than a header, or an intact header whose size no longer matches.
    fn truncation_reason(&self) -> Option<&'static str> {
        if self.len < HEADER_SIZE as u64 {
            Some("truncated_header")
        } else if self.header_changed() {
            None
        } else {
            Some("file_size_mismatch")
        }
    }

    /// Reads header word `word` from the file.
    fn header_word(&self, word: usize) -> u64 {
        let file = std::fs::File::open(&self.path).expect("open segment");
        let mut buf = [0u8; 8];
        file.read_exact_at(&mut buf, (word * 8) as u64)
            .expect("read header word");
        u64::from_ne_bytes(buf)
    }
}

#[derive(Debug, Default)]
struct Model {
    alive: bool,
    families: Vec<ModelFamily>,
    segments: Vec<SegmentState>,
    dropped: u64,
}

/// What the model expects of a registration.
#[derive(Debug)]
enum Expect {
    Invalid,
    Conflict,
    Existing,
    New,
}

impl Model {
    fn expect_registration(&self, def: &Def) -> Expect {
        if check_family(&def.record(0)).is_err() {
            return Expect::Invalid;
        }
        if let Some(f) = self.families.iter().find(|f| f.def.name == def.name) {
            return if f.def == *def {
                Expect::Existing
            } else {
                Expect::Conflict
            };
        }
        let exposed = exposed_names(def.kind, &def.name);
        if self.families.iter().any(|f| {
            exposed_names(f.def.kind, &f.def.name)
                .iter()
                .any(|n| exposed.contains(n))
        }) {
            return Expect::Conflict;
        }
        Expect::New
    }
}

// ---------------------------------------------------------------------------------------
// The real process.

#[derive(Debug)]
enum RealFamily {
    Counter(CounterFamily),
    Gauge(GaugeFamily),
    Histogram(HistogramFamily),
    Summary(SummaryFamily),
}

impl RealFamily {
    fn register(
        registry: &Registry,
        def: &Def,
        given_name: &str,
        given: &Bounds,
    ) -> Result<Self, Error> {
        let labels: Vec<&str> = def.labels.iter().map(String::as_str).collect();
        Ok(match def.kind {
            MetricKind::Counter => {
                RealFamily::Counter(registry.counter(given_name, &def.help, &labels)?)
            }
            MetricKind::Gauge => RealFamily::Gauge(registry.gauge(
                given_name,
                &def.help,
                &labels,
                def.mode.expect("gauge mode"),
            )?),
            MetricKind::Histogram => {
                let bounds = match given {
                    Bounds::Default => vec![],
                    Bounds::Listed(i) => listed_bounds(*i),
                    Bounds::Custom(v) => v.iter().copied().take(8).collect(),
                };
                RealFamily::Histogram(registry.histogram(given_name, &def.help, &labels, &bounds)?)
            }
            MetricKind::Summary => {
                RealFamily::Summary(registry.summary(given_name, &def.help, &labels)?)
            }
            MetricKind::Info | MetricKind::StateSet => {
                unreachable!("the model registers prometheus_client's multiprocess kinds only")
            }
        })
    }

    fn write(&self, values: &[String], write: Write) -> Result<(), Error> {
        match self {
            RealFamily::Counter(f) => {
                let c = f.labels(values)?;
                match write {
                    Write::Touch | Write::Dec => {}
                    Write::Inc => c.inc(),
                    Write::Add(n) | Write::Set(n) => c.inc_by(n.value()),
                }
            }
            RealFamily::Gauge(f) => {
                let g = f.labels(values)?;
                match write {
                    Write::Touch => {}
                    Write::Inc => g.inc(),
                    Write::Dec => g.dec(),
                    Write::Add(n) => g.add(n.value()),
                    Write::Set(n) => g.set(n.value()),
                }
            }
            RealFamily::Histogram(f) => {
                let h = f.labels(values)?;
                if let Some(v) = write.observation() {
                    h.observe(v);
                }
            }
            RealFamily::Summary(f) => {
                let s = f.labels(values)?;
                if let Some(v) = write.observation() {
                    s.observe(v);
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Real {
    registry: Registry,
    families: Vec<RealFamily>,
}

// ---------------------------------------------------------------------------------------
// Running a scenario.

struct Harness {
    stats: Stats,
    dir: tempfile::TempDir,
    real: Option<Real>,
    model: Model,
    reader: Reader,
}

/// Runs `s` and checks it (see the module documentation).
///
/// # Panics
/// When the writer, the reader or `inspect` disagree with the model, or panic themselves.
pub fn run(s: &Scenario) -> Stats {
    let dir = scratch_dir();
    let initial = 4096 * (1 + s.initial_pages as usize % 4);
    let options = Options {
        initial_segment_size: initial,
        max_segment_size: initial * (1 + s.growth as usize % 4),
        max_segments: 1 + s.max_segments as usize % 4,
        ..Options::default()
    };
    let registry =
        Registry::open_simulating_pid(dir.path(), options, PID).expect("open the registry");
    let reader = Reader::open(dir.path()).expect("open a reader");
    let mut h = Harness {
        stats: Stats::default(),
        dir,
        real: Some(Real {
            registry,
            families: Vec::new(),
        }),
        model: Model {
            alive: true,
            ..Model::default()
        },
        reader,
    };
    h.sync_segments();
    for op in s.ops.iter().take(MAX_OPS) {
        h.apply(op);
    }
    h.check(true);
    h.stats.families = h.model.families.len();
    h.stats.series = h.model.families.iter().map(|f| f.series.len()).sum();
    h.stats.dropped = h.model.dropped;
    h.stats.segments = h.model.segments.len();
    h.stats
}

impl Harness {
    /// Adds the writer's new segments to the model.
    fn sync_segments(&mut self) {
        let Some(real) = &self.real else { return };
        for path in real
            .registry
            .segment_paths()
            .into_iter()
            .skip(self.model.segments.len())
        {
            let size = std::fs::metadata(&path).expect("stat new segment").len();
            self.model.segments.push(SegmentState {
                path,
                size,
                len: size,
                changed: Vec::new(),
                records: Vec::new(),
                holes: false,
            });
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Register {
                kind,
                name: name_i,
                help,
                labels,
                bounds,
            } => self.register(*kind, *name_i, *help, labels, bounds),
            Op::Write {
                family,
                values,
                write,
            } => self.write(*family, *values, *write),
            Op::Exit => self.exit(),
            Op::Truncate { segment, len } => self.truncate(*segment, *len),
            Op::Corrupt {
                segment,
                at,
                bytes,
                overwrite,
            } => self.corrupt(*segment, *at, bytes, *overwrite),
            Op::Check => self.check(false),
        }
    }

    fn register(&mut self, kind: Kind, name_i: u8, help: u8, labels: &[u8], bounds: &Bounds) {
        let Some(real) = &mut self.real else { return };
        let def = Def::from_op(kind, name_i, help, labels, bounds);
        let expect = self.model.expect_registration(&def);
        let result = RealFamily::register(&real.registry, &def, &name(name_i), bounds);
        match (expect, result) {
            (Expect::New, Ok(family)) => {
                real.families.push(family);
                self.model.families.push(ModelFamily {
                    def,
                    series: BTreeMap::new(),
                });
            }
            (Expect::Existing, Ok(_))
            | (Expect::Invalid, Err(Error::InvalidFamily(_)))
            | (Expect::Conflict, Err(Error::Conflict { .. })) => {}
            (expect, result) => {
                panic!(
                    "registering {def:?}: the model expects {expect:?}, the writer gave {result:?}"
                )
            }
        }
    }

    fn write(&mut self, family: u8, choice: u8, write: Write) {
        let Some(real) = &self.real else { return };
        if self.model.families.is_empty() {
            return;
        }
        let f = family as usize % self.model.families.len();
        let def = self.model.families[f].def.clone();
        let values = label_values(choice, def.labels.len());
        let set_len: usize = def.labels.iter().chain(&values).map(String::len).sum();
        let valid = values.len() == def.labels.len()
            && values.iter().all(|v| v.len() <= MAX_LABEL_VALUE_LEN)
            && set_len <= MAX_LABEL_SET_LEN;
        let existed = self.model.families[f].series.contains_key(&values);
        let dropped_before = real.registry.dropped_series();
        match (valid, real.families[f].write(&values, write)) {
            (true, Ok(())) => {}
            (false, Err(Error::InvalidLabels { .. })) => return,
            (valid, result) => {
                panic!(
                    "{} {values:?}: valid labels {valid}, the writer gave {result:?}",
                    def.name
                )
            }
        }
        if !existed {
            let dropped = real.registry.dropped_series() > dropped_before;
            self.sync_segments();
            let home = if dropped {
                self.model.dropped += 1;
                None
            } else {
                let h = self.model.segments.len() - 1;
                let records = &mut self.model.segments[h].records;
                if !records
                    .iter()
                    .any(|r| matches!(r, ModelRecord::Family(g) if *g == f))
                {
                    records.push(ModelRecord::Family(f));
                }
                records.push(ModelRecord::Series(f, values.clone()));
                Some(h)
            };
            let real = self.real.as_ref().expect("alive");
            assert_eq!(real.registry.dropped_series(), self.model.dropped);
            self.model.families[f].series.insert(
                values.clone(),
                ModelSeries {
                    home,
                    value: Val::new(&def),
                },
            );
        }
        let series = self.model.families[f]
            .series
            .get_mut(&values)
            .expect("series exists");
        series.value.apply(write, &def.bounds);
    }

    fn exit(&mut self) {
        if let Some(real) = self.real.take() {
            assert_eq!(real.registry.dropped_series(), self.model.dropped);
            drop(real);
            self.model.alive = false;
        }
    }

    fn truncate(&mut self, segment: u8, cut: Cut) {
        self.exit();
        let index = segment as usize % self.model.segments.len();
        let seg = &mut self.model.segments[index];
        let new_len = match cut {
            Cut::Empty => 0,
            Cut::InHeader(n) => u64::from(n) % HEADER_SIZE as u64,
            Cut::Shorter(n) => seg.size - 1 - u64::from(n) % seg.size,
            Cut::Same => seg.size,
            Cut::Longer(n) => seg.size + 1 + u64::from(n),
        };
        let old = std::fs::read(&seg.path).expect("read segment");
        // Bytes cut off come back as zeros if the file grows again.
        for (pos, &b) in old.iter().enumerate().skip(new_len as usize) {
            if b != 0 {
                seg.mark(pos as u64);
            }
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&seg.path)
            .expect("open segment for truncation");
        file.set_len(new_len).expect("truncate segment");
        seg.holes |= new_len > seg.len && seg.len < seg.size;
        seg.len = new_len;
        self.stats.truncations += 1;
        // A reader that mapped the old length would take SIGBUS past the new end.
        self.reader = Reader::open(self.dir.path()).expect("reopen the reader");
    }

    fn corrupt(&mut self, segment: u8, at: Place, bytes: &[u8], overwrite: bool) {
        let index = segment as usize % self.model.segments.len();
        let seg = &mut self.model.segments[index];
        if seg.len == 0 {
            return;
        }
        let len = seg.len;
        let start = match at {
            Place::Header(n) => u64::from(n) % HEADER_SIZE as u64,
            Place::Metadata(n) => HEADER_SIZE as u64 + u64::from(n) % 2048,
            Place::Slots(n) => len - 1 - u64::from(n) % len,
            Place::Anywhere(n) => u64::from(n) % len,
        };
        if start >= len {
            return;
        }
        let bytes = if bytes.is_empty() { &[0xff][..] } else { bytes };
        let count = bytes.len().min(16).min((len - start) as usize);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&seg.path)
            .expect("open segment for corruption");
        let mut old = vec![0u8; count];
        file.read_exact_at(&mut old, start).expect("read segment");
        let new: Vec<u8> = old
            .iter()
            .zip(bytes)
            .map(|(o, b)| if overwrite { *b } else { o ^ b })
            .collect();
        file.write_all_at(&new, start).expect("corrupt segment");
        for (i, (o, n)) in old.iter().zip(&new).enumerate() {
            if o != n {
                seg.mark(start + i as u64);
            }
        }
        if old != new {
            self.stats.corruptions += 1;
        }
    }

    // -----------------------------------------------------------------------------------
    // Checks.

    fn check(&mut self, last: bool) {
        let tainted = self.check_segments();
        let exact = self.model.segments.iter().all(|s| {
            s.len != s.size
                || (!s.holes
                    && !s.header_changed()
                    && s.changed_in(
                        HEADER_SIZE as u64..HEADER_SIZE as u64 + s.header_word(META_LEN_WORD),
                    )
                    .is_none())
        });
        if exact {
            self.stats.exact_checks += 1;
        } else {
            self.stats.lenient_checks += 1;
        }
        let scrape = self.reader.snapshot();
        self.check_scrape(&scrape, exact, &tainted);
        if last {
            let fresh = Reader::open(self.dir.path())
                .expect("open a fresh reader")
                .snapshot();
            self.check_scrape(&fresh, exact, &tainted);
            if self.model.segments.iter().all(|s| s.changed.is_empty()) {
                assert_same_snapshot(&fresh.snapshot, &scrape.snapshot);
                assert_eq!(fresh.report, scrape.report);
            }
            check_consumers(&mut self.reader, self.dir.path());
        }
    }

    /// Inspects every segment; returns the series whose slots the scenario changed.
    fn check_segments(&self) -> BTreeSet<(usize, Vec<String>)> {
        let mut tainted = BTreeSet::new();
        for seg in &self.model.segments {
            self.check_segment(seg, &mut tainted);
        }
        tainted
    }

    fn check_segment(&self, seg: &SegmentState, tainted: &mut BTreeSet<(usize, Vec<String>)>) {
        let dump = inspect(&seg.path).expect("inspect a segment");
        let _ = dump.to_string();
        let header_changed = seg.header_changed();
        if seg.len != seg.size {
            let e = dump
                .header
                .as_ref()
                .expect_err("a resized segment is rejected");
            if let Some(reason) = seg.truncation_reason() {
                assert_eq!(ProblemReason::from(e).as_str(), reason, "{e}");
            }
            return;
        }
        let info = match &dump.header {
            Ok(info) => info,
            Err(e) if seg.holes && ProblemReason::from(e) == ProblemReason::SparseFile => return,
            Err(e) => {
                assert!(header_changed, "intact header rejected: {e}");
                return;
            }
        };
        assert_eq!(dump.live, Some(self.model.alive));
        // The model's records, with the offsets their encoding gives.
        let mut family_ids: BTreeMap<usize, u32> = BTreeMap::new();
        let mut offset = 0usize;
        let mut expected = Vec::new();
        for r in &seg.records {
            let bytes = match r {
                ModelRecord::Family(f) => {
                    let id = family_ids.len() as u32;
                    family_ids.insert(*f, id);
                    self.model.families[*f].def.record(id).encode()
                }
                ModelRecord::Series(f, values) => SeriesRecord {
                    family_id: family_ids[f],
                    slot_offset: 0,
                    label_values: values.clone(),
                    // The writer stamps each series with its creation time: only the
                    // record's length matters here.
                    created_unix_nanos: Some(0),
                    process: None,
                    exact_parts: Vec::new(),
                }
                .encode(),
            };
            expected.push((offset, r));
            offset += bytes.len();
        }
        let meta_end = offset;
        let first_change = seg
            .changed_in(HEADER_SIZE as u64..(HEADER_SIZE + meta_end) as u64)
            .map(|p| p as usize - HEADER_SIZE);
        let mut ends = expected.iter().map(|(o, _)| *o).skip(1).chain([meta_end]);
        for (i, (offset, r)) in expected.iter().enumerate() {
            let end = ends.next().expect("an end per record");
            if first_change.is_some_and(|c| c < end) {
                break;
            }
            let Some(got) = dump.records.get(i) else {
                assert!(
                    header_changed,
                    "record {i} at {offset} missing: {:?}",
                    dump.record_error
                );
                break;
            };
            assert_eq!(got.offset, *offset, "record {i}");
            match (r, &got.entry) {
                (ModelRecord::Family(f), RecordEntry::Family(fr)) => {
                    assert_eq!(*fr, self.model.families[*f].def.record(family_ids[f]));
                }
                (
                    ModelRecord::Series(f, values),
                    RecordEntry::Series {
                        record,
                        family,
                        value,
                    },
                ) => {
                    let def = &self.model.families[*f].def;
                    assert_eq!(record.family_id, family_ids[f]);
                    assert_eq!(&record.label_values, values);
                    assert_eq!(family.name, def.name);
                    let width = slot_words(def.kind, def.bounds.len()) as u64 * 8;
                    if seg
                        .changed_in(record.slot_offset..record.slot_offset + width)
                        .is_some()
                    {
                        tainted.insert((*f, values.clone()));
                    } else {
                        let model = &self.model.families[*f].series[values].value;
                        assert!(
                            model.matches_slots(def, value),
                            "{} {values:?}: slots hold {value:?}, the model {model:?}",
                            def.name
                        );
                    }
                }
                (r, got) => panic!("record {i}: the model has {r:?}, the segment {got:?}"),
            }
        }
        if first_change.is_none() && !header_changed {
            assert_eq!(dump.record_error, None);
            assert_eq!(dump.records.len(), expected.len());
            assert_eq!(info.meta_len, meta_end as u64);
            assert!(info.slot_floor <= seg.size);
            assert_eq!(seg.header_word(SLOT_FLOOR_WORD), info.slot_floor);
        }
    }

    fn check_scrape(&self, scrape: &Scrape, exact: bool, tainted: &BTreeSet<(usize, Vec<String>)>) {
        let report = &scrape.report;
        check_snapshot(&scrape.snapshot);
        check_render(&scrape.snapshot, &self_metrics(report));
        assert_eq!(report.dir_error, None);
        assert!(report.skipped.is_empty(), "{report:?}");
        assert_eq!(report.series, scrape.snapshot.series_count());
        for seg in &self.model.segments {
            let reasons: Vec<&str> = report
                .problems
                .iter()
                .filter(|p| p.path == seg.path)
                .map(|p| p.reason.as_str())
                .collect();
            if seg.len != seg.size {
                if let Some(reason) = seg.truncation_reason() {
                    assert_eq!(reasons, [reason], "{}", seg.path.display());
                }
            } else if seg.holes {
                // On tmpfs a file with holes is rejected whole; elsewhere read as zeros.
                assert!(
                    reasons.is_empty() || reasons == ["sparse_file"] || !seg.changed.is_empty(),
                    "{reasons:?}"
                );
            } else if seg.changed.is_empty() {
                assert!(reasons.is_empty(), "intact segment reported: {reasons:?}");
            }
        }
        if !exact {
            return;
        }
        let bad = self
            .model
            .segments
            .iter()
            .filter(|s| s.len != s.size)
            .count();
        let good = self.model.segments.len() - bad;
        assert_eq!(report.bad_segments, bad);
        assert_eq!(report.problems.len(), bad, "{:?}", report.problems);
        assert_eq!(
            (report.live_segments, report.dead_segments),
            if self.model.alive {
                (good, 0)
            } else {
                (0, good)
            }
        );
        assert!(report.conflicts.is_empty(), "{:?}", report.conflicts);
        let first_good = self.model.segments.first().is_some_and(|s| s.len == s.size);
        assert_eq!(
            report.dropped_series,
            if first_good { self.model.dropped } else { 0 }
        );
        self.check_values(scrape, tainted);
    }

    /// The snapshot is exactly the model, except values of series whose slots were changed
    /// (and the presence of `mostrecent` ones, whose timestamp may have been zeroed).
    fn check_values(&self, scrape: &Scrape, tainted: &BTreeSet<(usize, Vec<String>)>) {
        let mut expected: BTreeMap<SeriesKey, (usize, Option<Value>, bool)> = BTreeMap::new();
        for (f, family) in self.model.families.iter().enumerate() {
            let def = &family.def;
            let pid = def
                .mode
                .is_some_and(|m| matches!(m, GaugeMode::All | GaugeMode::LiveAll))
                .then_some(PID);
            for (values, series) in &family.series {
                let Some(home) = series.home else { continue };
                let seg = &self.model.segments[home];
                if seg.len != seg.size {
                    continue;
                }
                let mut pairs: Vec<(String, String)> = def
                    .labels
                    .iter()
                    .cloned()
                    .zip(values.iter().cloned())
                    .collect();
                pairs.sort();
                let key = (def.name.clone(), pairs, pid);
                if tainted.contains(&(f, values.clone())) {
                    let optional = def.mode.is_some_and(GaugeMode::needs_timestamp);
                    let shown = self.model.alive || !def.mode.is_some_and(GaugeMode::live_only);
                    if shown {
                        expected.insert(key, (f, None, optional));
                    }
                } else if let Some(v) = series.value.shown(def, self.model.alive) {
                    expected.insert(key, (f, Some(v), false));
                }
            }
        }
        let mut seen = BTreeSet::new();
        for family in &scrape.snapshot.families {
            for s in &family.series {
                let key = series_key(family, s);
                let Some((f, value, _)) = expected.get(&key) else {
                    panic!("unexpected series {key:?}: {s:?}")
                };
                let def = &self.model.families[*f].def;
                assert_eq!(
                    (family.kind, &*family.help, &*family.bounds),
                    (def.kind, def.help.as_str(), def.bounds.as_slice())
                );
                if let Some(v) = value {
                    assert!(
                        same_value(&s.value, v),
                        "{key:?}: scraped {:?}, model {v:?}",
                        s.value
                    );
                }
                seen.insert(key);
            }
        }
        for (key, (_, _, optional)) in &expected {
            assert!(*optional || seen.contains(key), "series {key:?} missing");
        }
    }
}

/// A counter's value from its two words: their exact sum, rounded once, as the reader
/// merges them.
fn counter_value(int: u64, frac: f64) -> f64 {
    let mut exact = shmetrics_reader::exact::ExactSum::default();
    exact.add_int(int);
    exact.add(frac);
    exact.value()
}
