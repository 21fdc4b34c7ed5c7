//! Property tests: random workloads over 1 to 5 simulated processes, checked against a naive
//! in-memory model of `prometheus_client`'s multiprocess merge (docs/semantics.md):
//!
//! - counters, histograms and summaries sum over every process, dead ones included;
//! - gauges merge by mode: `all`/`liveall` one series per process (a `pid`), `min`, `max`,
//!   `sum`, `mostrecent` (the value of the newest write; a series never written is left
//!   out), the `live*` modes over live processes only;
//! - a series exists once a process created it, even if it never wrote to it.
//!
//! At every checkpoint the reader's snapshot must equal the model (families, label pairs,
//! pids, values; histogram buckets and counts exactly, float sums within a relative
//! epsilon because the order of additions differs), and no counter, bucket or summary
//! count may be lower than at the previous checkpoint, deaths included.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::SystemTime;

use proptest::prelude::*;
use shmetrics_reader::Reader;
use shmetrics_reader::snapshot::{Snapshot, Value};
use shmetrics_writer::{
    Counter, CounterFamily, DEFAULT_BUCKETS, Gauge, GaugeFamily, GaugeMode, Histogram,
    HistogramFamily, MetricKind, Options, Registry, Summary, SummaryFamily,
};

/// The pids of the simulated processes.
const PIDS: [u32; 5] = [501, 502, 503, 504, 505];
/// Label values per case.
const POOL: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Counter,
    Gauge(GaugeMode),
    Histogram,
    Summary,
}

/// A family of the workload.
#[derive(Clone, Debug)]
struct Spec {
    /// Name given to the registry.
    register_as: String,
    /// Name in the snapshot.
    name: String,
    help: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    bounds: &'static [f64],
    /// Copies of each series (`Registry::histogram_striped`); 1 unstriped.
    stripes: usize,
}

const COUNTERS: std::ops::Range<usize> = 0..2;
const GAUGES: std::ops::Range<usize> = 2..12;
const OBSERVED: std::ops::Range<usize> = 12..15;
const FAMILIES: usize = 15;

fn specs() -> Vec<Spec> {
    let mut specs = vec![
        Spec {
            register_as: "m_requests_total".into(),
            name: "m_requests".into(),
            help: "Requests \\ \"served\"\nby code.",
            kind: Kind::Counter,
            labels: &["zeta", "alpha"],
            bounds: &[],
            stripes: 1,
        },
        Spec {
            register_as: "vllm:m_tokens".into(),
            name: "vllm:m_tokens".into(),
            help: "Tokens.",
            kind: Kind::Counter,
            labels: &[],
            bounds: &[],
            // Added to from threads (`IncBy`): each thread's own copy.
            stripes: 2,
        },
    ];
    for mode in GaugeMode::ALL {
        specs.push(Spec {
            register_as: format!("m_gauge_{mode}"),
            name: format!("m_gauge_{mode}"),
            help: "A gauge.",
            kind: Kind::Gauge(mode),
            labels: &["k"],
            bounds: &[],
            stripes: 1,
        });
    }
    specs.extend([
        Spec {
            register_as: "m_latency_seconds".into(),
            name: "m_latency_seconds".into(),
            help: "Latency.",
            kind: Kind::Histogram,
            labels: &["k"],
            bounds: &[0.1, 1.0, 10.0],
            // Observed from several threads (`observe`): each thread's own copy.
            stripes: 4,
        },
        Spec {
            register_as: "m_default_seconds".into(),
            name: "m_default_seconds".into(),
            help: "Default buckets.",
            kind: Kind::Histogram,
            labels: &[],
            bounds: &[],
            stripes: 1,
        },
        Spec {
            register_as: "m_size".into(),
            name: "m_size".into(),
            help: "Sizes.",
            kind: Kind::Summary,
            labels: &["k"],
            bounds: &[],
            stripes: 1,
        },
    ]);
    assert_eq!(specs.len(), FAMILIES);
    assert!(specs[COUNTERS].iter().all(|s| s.kind == Kind::Counter));
    assert!(
        specs[GAUGES]
            .iter()
            .all(|s| matches!(s.kind, Kind::Gauge(_)))
    );
    specs
}

impl Spec {
    fn bounds(&self) -> &[f64] {
        if self.kind == Kind::Histogram && self.bounds.is_empty() {
            &DEFAULT_BUCKETS
        } else {
            self.bounds
        }
    }

    /// Label values of pool entry `l`: consecutive pool values, one per label name.
    fn values(&self, pool: &[String], l: usize) -> Vec<String> {
        (0..self.labels.len())
            .map(|i| pool[(l + i) % POOL].clone())
            .collect()
    }

    /// The label pairs as the snapshot holds them: sorted by name.
    fn pairs(&self, values: &[String]) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = self
            .labels
            .iter()
            .map(|n| (*n).to_owned())
            .zip(values.iter().cloned())
            .collect();
        pairs.sort();
        pairs
    }
}

#[derive(Clone, Debug)]
enum Op {
    Inc {
        p: usize,
        f: usize,
        l: usize,
    },
    IncBy {
        p: usize,
        f: usize,
        l: usize,
        v: f64,
    },
    Set {
        p: usize,
        f: usize,
        l: usize,
        v: f64,
    },
    Add {
        p: usize,
        f: usize,
        l: usize,
        v: f64,
    },
    /// Creates the child (any family) without writing to it.
    Touch {
        p: usize,
        f: usize,
        l: usize,
    },
    Observe {
        p: usize,
        f: usize,
        l: usize,
        v: f64,
    },
    /// The process exits: its registry and every handle are dropped.
    Kill {
        p: usize,
    },
    /// Compare the reader with the model.
    Check,
}

impl Op {
    /// The same op with its process index folded into `0..processes`.
    fn for_processes(&self, processes: usize) -> Op {
        let mut op = self.clone();
        match &mut op {
            Op::Inc { p, .. }
            | Op::IncBy { p, .. }
            | Op::Set { p, .. }
            | Op::Add { p, .. }
            | Op::Touch { p, .. }
            | Op::Observe { p, .. }
            | Op::Kill { p } => *p %= processes,
            Op::Check => {}
        }
        op
    }

    fn process(&self) -> Option<usize> {
        match *self {
            Op::Inc { p, .. }
            | Op::IncBy { p, .. }
            | Op::Set { p, .. }
            | Op::Add { p, .. }
            | Op::Touch { p, .. }
            | Op::Observe { p, .. }
            | Op::Kill { p } => Some(p),
            Op::Check => None,
        }
    }
}

fn inc_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        (0u32..100).prop_map(f64::from),
        (1u32..64).prop_map(|n| f64::from(n) / 8.0),
        -1e3..1e3f64,
        Just(-1.0),
        Just(0.0),
    ]
}

fn gauge_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        (-100i32..100).prop_map(f64::from),
        -1e6..1e6f64,
        (1u32..64).prop_map(|n| f64::from(n) / 16.0),
        Just(0.0),
    ]
}

fn observation() -> impl Strategy<Value = f64> {
    prop_oneof![
        prop::sample::select(vec![0.1, 1.0, 10.0, 0.005, 0.25, 5.0, 7.5]),
        -1.0..20.0f64,
        0.0..1e3f64,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0..PIDS.len();
    let l = 0..POOL;
    prop_oneof![
        3 => (p.clone(), COUNTERS, l.clone()).prop_map(|(p, f, l)| Op::Inc { p, f, l }),
        3 => (p.clone(), COUNTERS, l.clone(), inc_value())
            .prop_map(|(p, f, l, v)| Op::IncBy { p, f, l, v }),
        5 => (p.clone(), GAUGES, l.clone(), gauge_value())
            .prop_map(|(p, f, l, v)| Op::Set { p, f, l, v }),
        3 => (p.clone(), GAUGES, l.clone(), gauge_value())
            .prop_map(|(p, f, l, v)| Op::Add { p, f, l, v }),
        1 => (p.clone(), 0..FAMILIES, l.clone()).prop_map(|(p, f, l)| Op::Touch { p, f, l }),
        4 => (p.clone(), OBSERVED, l, observation())
            .prop_map(|(p, f, l, v)| Op::Observe { p, f, l, v }),
        1 => p.prop_map(|p| Op::Kill { p }),
        1 => Just(Op::Check),
    ]
}

fn label_value() -> impl Strategy<Value = String> {
    let chars = vec!['a', 'b', 'z', '\\', '"', '\n', 'é', ' ', '=', ',', '{', '}'];
    prop::collection::vec(prop::sample::select(chars), 0..5).prop_map(|c| c.into_iter().collect())
}

// ---------------------------------------------------------------------------------------
// The model.

#[derive(Clone, Debug)]
enum ModelSeries {
    Counter(f64),
    /// `written` is the op number of the last write, 0 if never written.
    Gauge {
        value: f64,
        written: u64,
    },
    Histogram {
        buckets: Vec<u64>,
        sum: f64,
        abs_sum: f64,
    },
}

#[derive(Debug, Default)]
struct ModelProcess {
    alive: bool,
    series: BTreeMap<(usize, Vec<String>), ModelSeries>,
}

/// An expected merged value; float sums carry the scale of their error.
#[derive(Clone, Debug, PartialEq)]
enum Expected {
    Exact(f64),
    Summed {
        value: f64,
        scale: f64,
    },
    Histogram {
        buckets: Vec<u64>,
        sum: f64,
        scale: f64,
    },
    Summary {
        count: u64,
        sum: f64,
        scale: f64,
    },
}

type Key = (String, Vec<(String, String)>, Option<u32>);

struct Model {
    specs: Vec<Spec>,
    procs: Vec<ModelProcess>,
    clock: u64,
}

impl Model {
    fn series(&mut self, p: usize, f: usize, values: Vec<String>) -> &mut ModelSeries {
        let spec = &self.specs[f];
        let fresh = match spec.kind {
            Kind::Counter => ModelSeries::Counter(0.0),
            Kind::Gauge(_) => ModelSeries::Gauge {
                value: 0.0,
                written: 0,
            },
            Kind::Histogram | Kind::Summary => ModelSeries::Histogram {
                buckets: vec![0; spec.bounds().len() + 1],
                sum: 0.0,
                abs_sum: 0.0,
            },
        };
        self.procs[p].series.entry((f, values)).or_insert(fresh)
    }

    fn apply(&mut self, op: &Op, pool: &[String]) {
        self.clock += 1;
        let clock = self.clock;
        match *op {
            Op::Inc { p, f, l } => {
                let values = self.specs[f].values(pool, l);
                if let ModelSeries::Counter(c) = self.series(p, f, values) {
                    *c += 1.0;
                }
            }
            Op::IncBy { p, f, l, v } => {
                let values = self.specs[f].values(pool, l);
                if let ModelSeries::Counter(c) = self.series(p, f, values) {
                    // A counter never goes down: negative and zero increments are ignored.
                    if v > 0.0 {
                        *c += v;
                    }
                }
            }
            Op::Set { p, f, l, v } | Op::Add { p, f, l, v } => {
                let set = matches!(op, Op::Set { .. });
                let values = self.specs[f].values(pool, l);
                if let ModelSeries::Gauge { value, written } = self.series(p, f, values) {
                    *value = if set { v } else { *value + v };
                    *written = clock;
                }
            }
            Op::Touch { p, f, l } => {
                let values = self.specs[f].values(pool, l);
                self.series(p, f, values);
            }
            Op::Observe { p, f, l, v } => {
                let spec = &self.specs[f];
                let values = spec.values(pool, l);
                let bucket = spec
                    .bounds()
                    .iter()
                    .position(|&b| v <= b)
                    .unwrap_or(spec.bounds().len());
                if let ModelSeries::Histogram {
                    buckets,
                    sum,
                    abs_sum,
                } = self.series(p, f, values)
                {
                    buckets[bucket] += 1;
                    *sum += v;
                    *abs_sum += v.abs();
                }
            }
            Op::Kill { p } => self.procs[p].alive = false,
            Op::Check => {}
        }
    }

    /// The merged snapshot the documented rules give.
    fn expected(&self) -> BTreeMap<Key, Expected> {
        // Per merged series: every process's contribution, with its pid and liveness.
        type Contribution<'a> = (u32, bool, &'a ModelSeries);
        let mut by_series: BTreeMap<(usize, &Vec<String>), Vec<Contribution<'_>>> = BTreeMap::new();
        for (i, proc) in self.procs.iter().enumerate() {
            for ((f, values), s) in &proc.series {
                by_series
                    .entry((*f, values))
                    .or_default()
                    .push((PIDS[i], proc.alive, s));
            }
        }
        let mut out = BTreeMap::new();
        for ((f, values), contributions) in by_series {
            let spec = &self.specs[f];
            let key = |pid| (spec.name.clone(), spec.pairs(values), pid);
            match spec.kind {
                Kind::Counter => {
                    let total: f64 = contributions
                        .iter()
                        .map(|(_, _, s)| match s {
                            ModelSeries::Counter(c) => *c,
                            _ => unreachable!(),
                        })
                        .sum();
                    out.insert(
                        key(None),
                        Expected::Summed {
                            value: total,
                            scale: total,
                        },
                    );
                }
                Kind::Histogram | Kind::Summary => {
                    let mut buckets = vec![0; spec.bounds().len() + 1];
                    let (mut sum, mut scale) = (0.0, 0.0);
                    for (_, _, s) in &contributions {
                        let ModelSeries::Histogram {
                            buckets: b,
                            sum: s,
                            abs_sum,
                        } = s
                        else {
                            unreachable!()
                        };
                        for (t, b) in buckets.iter_mut().zip(b) {
                            *t += b;
                        }
                        sum += s;
                        scale += abs_sum;
                    }
                    let value = if spec.kind == Kind::Summary {
                        Expected::Summary {
                            count: buckets.iter().sum(),
                            sum,
                            scale,
                        }
                    } else {
                        Expected::Histogram {
                            buckets,
                            sum,
                            scale,
                        }
                    };
                    out.insert(key(None), value);
                }
                Kind::Gauge(mode) => {
                    let held: Vec<(u32, f64, u64)> = contributions
                        .iter()
                        .filter(|(_, alive, _)| *alive || !mode.live_only())
                        .map(|(pid, _, s)| match s {
                            ModelSeries::Gauge { value, written } => (*pid, *value, *written),
                            _ => unreachable!(),
                        })
                        .collect();
                    let values = held.iter().map(|h| h.1);
                    match mode {
                        GaugeMode::All | GaugeMode::LiveAll => {
                            for &(pid, v, _) in &held {
                                out.insert(key(Some(pid)), Expected::Exact(v));
                            }
                        }
                        _ if held.is_empty() => {}
                        GaugeMode::Min | GaugeMode::LiveMin => {
                            out.insert(key(None), Expected::Exact(values.fold(f64::MAX, f64::min)));
                        }
                        GaugeMode::Max | GaugeMode::LiveMax => {
                            out.insert(key(None), Expected::Exact(values.fold(f64::MIN, f64::max)));
                        }
                        GaugeMode::Sum | GaugeMode::LiveSum => {
                            out.insert(
                                key(None),
                                Expected::Summed {
                                    value: values.clone().sum(),
                                    scale: values.map(f64::abs).sum(),
                                },
                            );
                        }
                        GaugeMode::MostRecent | GaugeMode::LiveMostRecent => {
                            if let Some(&(_, v, _)) =
                                held.iter().filter(|h| h.2 > 0).max_by_key(|h| h.2)
                            {
                                out.insert(key(None), Expected::Exact(v));
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// The real processes.

/// One simulated process: its registry, its families and the handles it keeps.
struct RealProcess {
    registry: Registry,
    counters: HashMap<usize, CounterFamily>,
    gauges: HashMap<usize, GaugeFamily>,
    histograms: HashMap<usize, HistogramFamily>,
    summaries: HashMap<usize, SummaryFamily>,
    counter_handles: HashMap<(usize, Vec<String>), Counter>,
    gauge_handles: HashMap<(usize, Vec<String>), Gauge>,
    histogram_handles: HashMap<(usize, Vec<String>), Histogram>,
    summary_handles: HashMap<(usize, Vec<String>), Summary>,
    /// Observations made so far (every other one of a striped family is made on a thread
    /// of its own).
    observations: usize,
}

impl RealProcess {
    fn open(dir: &Path, pid: u32, options: &Options, specs: &[Spec]) -> Self {
        let registry = Registry::open_simulating_pid(dir, options.clone(), pid).unwrap();
        let mut p = Self {
            registry,
            counters: HashMap::new(),
            gauges: HashMap::new(),
            histograms: HashMap::new(),
            summaries: HashMap::new(),
            counter_handles: HashMap::new(),
            gauge_handles: HashMap::new(),
            histogram_handles: HashMap::new(),
            summary_handles: HashMap::new(),
            observations: 0,
        };
        for (f, s) in specs.iter().enumerate() {
            let r = &p.registry;
            match s.kind {
                Kind::Counter => {
                    let family = match s.stripes {
                        1 => r.counter(&s.register_as, s.help, s.labels),
                        n => r.counter_striped(&s.register_as, s.help, s.labels, n),
                    };
                    p.counters.insert(f, family.unwrap());
                }
                Kind::Gauge(mode) => {
                    p.gauges
                        .insert(f, r.gauge(&s.register_as, s.help, s.labels, mode).unwrap());
                }
                Kind::Histogram => {
                    let family = match s.stripes {
                        1 => r.histogram(&s.register_as, s.help, s.labels, s.bounds),
                        n => r.histogram_striped(&s.register_as, s.help, s.labels, s.bounds, n),
                    };
                    p.histograms.insert(f, family.unwrap());
                }
                Kind::Summary => {
                    p.summaries
                        .insert(f, r.summary(&s.register_as, s.help, s.labels).unwrap());
                }
            }
        }
        p
    }

    fn counter(&mut self, f: usize, values: Vec<String>) -> &Counter {
        let family = &self.counters[&f];
        self.counter_handles
            .entry((f, values))
            .or_insert_with_key(|(_, v)| family.labels(v).unwrap().clone())
    }

    fn gauge(&mut self, f: usize, values: Vec<String>) -> &Gauge {
        let family = &self.gauges[&f];
        self.gauge_handles
            .entry((f, values))
            .or_insert_with_key(|(_, v)| family.labels(v).unwrap().clone())
    }

    fn observe(&mut self, f: usize, values: Vec<String>, v: Option<f64>) {
        if let Some(family) = self.histograms.get(&f) {
            let h = self
                .histogram_handles
                .entry((f, values))
                .or_insert_with_key(|(_, v)| family.labels(v).unwrap().clone());
            self.observations += 1;
            match v {
                // Every other observation of a striped family comes from a thread of its
                // own (each takes a new thread number, so another copy).
                Some(v) if family.def().stripes > 1 && self.observations.is_multiple_of(2) => {
                    std::thread::scope(|s| {
                        s.spawn(|| h.observe(v));
                    });
                }
                Some(v) => h.observe(v),
                None => {}
            }
        } else {
            let family = &self.summaries[&f];
            let s = self
                .summary_handles
                .entry((f, values))
                .or_insert_with_key(|(_, v)| family.labels(v).unwrap().clone());
            if let Some(v) = v {
                s.observe(v);
            }
        }
    }

    fn touch(&mut self, f: usize, kind: Kind, values: Vec<String>) {
        match kind {
            Kind::Counter => {
                self.counter(f, values);
            }
            Kind::Gauge(_) => {
                self.gauge(f, values);
            }
            Kind::Histogram | Kind::Summary => self.observe(f, values, None),
        }
    }
}

/// Makes every `mostrecent` write carry a strictly newer timestamp than the one before, so
/// that "the newest write" is the last one in op order, as in the model.
#[derive(Default)]
struct Clock {
    last: Option<SystemTime>,
}

impl Clock {
    fn before_write(&self) {
        let Some(last) = self.last else { return };
        for _ in 0..1_000_000 {
            if SystemTime::now() > last {
                return;
            }
            std::hint::spin_loop();
        }
        for _ in 0..1000 {
            if SystemTime::now() > last {
                return;
            }
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        panic!("the wall clock did not advance");
    }

    fn after_write(&mut self) {
        self.last = Some(SystemTime::now());
    }
}

// ---------------------------------------------------------------------------------------
// Comparison.

fn close(actual: f64, expected: f64, scale: f64) -> bool {
    actual == expected || (actual - expected).abs() <= 1e-12 * scale.max(1.0)
}

/// The snapshot as a map, after checking its structure: families sorted by name and
/// non-empty, series sorted by labels then pid, label pairs sorted by name, and family
/// definitions as registered.
fn flatten(snapshot: &Snapshot, specs: &[Spec]) -> BTreeMap<Key, Value> {
    let mut out = BTreeMap::new();
    for w in snapshot.families.windows(2) {
        assert!(w[0].name < w[1].name, "families out of order");
    }
    for family in &snapshot.families {
        assert!(!family.series.is_empty(), "{} has no series", family.name);
        let spec = specs
            .iter()
            .find(|s| *s.name == *family.name)
            .unwrap_or_else(|| panic!("unexpected family {}", family.name));
        let kind = match spec.kind {
            Kind::Counter => MetricKind::Counter,
            Kind::Gauge(_) => MetricKind::Gauge,
            Kind::Histogram => MetricKind::Histogram,
            Kind::Summary => MetricKind::Summary,
        };
        assert_eq!(family.kind, kind, "{}", family.name);
        assert_eq!(&*family.help, spec.help, "{}", family.name);
        assert_eq!(&*family.bounds, spec.bounds(), "{}", family.name);
        let mut previous = None;
        for s in &family.series {
            let pairs = &s.labels.pairs[..];
            assert!(pairs.windows(2).all(|w| w[0].0 < w[1].0), "{pairs:?}");
            if let Some(prev) = previous {
                assert!(
                    prev < (pairs, s.pid),
                    "series of {} out of order",
                    family.name
                );
            }
            previous = Some((pairs, s.pid));
            let key = (
                family.name.to_string(),
                pairs
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
                s.pid,
            );
            assert!(out.insert(key, s.value.clone()).is_none());
        }
    }
    out
}

fn compare(actual: &BTreeMap<Key, Value>, expected: &BTreeMap<Key, Expected>, when: &str) {
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !actual.contains_key(*k))
        .collect();
    let extra: Vec<_> = actual
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{when}: series missing from the reader {missing:?}, unexpected {extra:?}"
    );
    for (key, want) in expected {
        let got = &actual[key];
        let ok = match (got, want) {
            (Value::Counter(v), Expected::Summed { value, scale }) => close(*v, *value, *scale),
            (Value::Gauge(v), Expected::Summed { value, scale }) => close(*v, *value, *scale),
            (Value::Gauge(v), Expected::Exact(e)) => v == e,
            (
                Value::Histogram { buckets, sum },
                Expected::Histogram {
                    buckets: b,
                    sum: s,
                    scale,
                },
            ) => buckets == b && close(*sum, *s, *scale),
            (
                Value::Summary { count, sum },
                Expected::Summary {
                    count: c,
                    sum: s,
                    scale,
                },
            ) => count == c && close(*sum, *s, *scale),
            _ => false,
        };
        assert!(ok, "{when}: {key:?}: reader has {got:?}, model {want:?}");
    }
}

/// No counter, bucket or summary count is lower than in the previous snapshot, and none of
/// those series has disappeared.
fn assert_monotonic(before: &BTreeMap<Key, Value>, after: &BTreeMap<Key, Value>) {
    for (key, old) in before {
        let new = after.get(key);
        match (old, new) {
            (Value::Counter(a), Some(Value::Counter(b))) => {
                assert!(b >= a, "{key:?} went down from {a} to {b}");
            }
            (Value::Histogram { buckets: a, .. }, Some(Value::Histogram { buckets: b, .. })) => {
                assert!(
                    a.iter().zip(b).all(|(a, b)| b >= a),
                    "{key:?} buckets went down from {a:?} to {b:?}"
                );
            }
            (Value::Summary { count: a, .. }, Some(Value::Summary { count: b, .. })) => {
                assert!(b >= a, "{key:?} count went down from {a} to {b}");
            }
            (Value::Gauge(_), _) => {}
            (_, new) => panic!("{key:?} was {old:?}, now {new:?}"),
        }
    }
}

fn alive(real: &mut [Option<RealProcess>], p: usize) -> &mut RealProcess {
    real[p].as_mut().expect("a live process")
}

fn run_workload(processes: usize, small_segments: bool, pool: &[String], ops: &[Op]) {
    let specs = specs();
    let dir = tempfile::tempdir().unwrap();
    let options = if small_segments {
        Options {
            initial_segment_size: 4096,
            ..Options::default()
        }
    } else {
        Options::default()
    };
    let mut real: Vec<Option<RealProcess>> = PIDS[..processes]
        .iter()
        .map(|&pid| Some(RealProcess::open(dir.path(), pid, &options, &specs)))
        .collect();
    let mut model = Model {
        specs: specs.clone(),
        procs: (0..processes)
            .map(|_| ModelProcess {
                alive: true,
                series: BTreeMap::new(),
            })
            .collect(),
        clock: 0,
    };
    let mut dead_segments = 0;
    let mut clock = Clock::default();
    let mut reader = Reader::open(dir.path()).unwrap();
    // A reader folding each live segment on a thread of its own (up to 3) sees exactly the
    // same snapshot.
    let mut threaded = Reader::open(dir.path()).unwrap();
    threaded.set_fold_threads(3);
    threaded.set_fold_group_min_bytes(0);
    threaded.set_fold_threads_in_step(true);
    let mut previous: Option<BTreeMap<Key, Value>> = None;
    let mut checkpoint = |real: &[Option<RealProcess>],
                          model: &Model,
                          reader: &mut Reader,
                          dead_segments: usize,
                          when: &str| {
        let scrape = reader.snapshot();
        let r = &scrape.report;
        let parallel = threaded.snapshot();
        assert_eq!(
            parallel.snapshot, scrape.snapshot,
            "{when}: folded on threads"
        );
        assert_eq!(r.fold_threads, 1, "{when}");
        assert!((1..=3).contains(&parallel.report.fold_threads), "{when}");
        let live: usize = real
            .iter()
            .flatten()
            .map(|p| p.registry.segment_paths().len())
            .sum();
        assert_eq!(
            (r.live_segments, r.dead_segments, r.bad_segments),
            (live, dead_segments, 0),
            "{when}: {r:?}"
        );
        assert!(r.problems.is_empty() && r.conflicts.is_empty(), "{r:?}");
        let actual = flatten(&scrape.snapshot, &specs);
        assert_eq!(r.series, actual.len());
        compare(&actual, &model.expected(), when);
        if let Some(before) = &previous {
            assert_monotonic(before, &actual);
        }
        previous = Some(actual);
        scrape.snapshot
    };

    for (i, op) in ops.iter().enumerate() {
        let op = op.for_processes(processes);
        // Ops of a process that has exited do not happen.
        if op.process().is_some_and(|p| real[p].is_none()) {
            continue;
        }
        match op {
            Op::Inc { p, f, l } => {
                alive(&mut real, p)
                    .counter(f, specs[f].values(pool, l))
                    .inc();
            }
            Op::IncBy { p, f, l, v } => {
                let c = alive(&mut real, p).counter(f, specs[f].values(pool, l));
                if specs[f].stripes > 1 {
                    // A striped family's float increments come from a thread of their own
                    // (a new thread number, so another copy than `Inc`'s).
                    std::thread::scope(|s| {
                        s.spawn(|| c.inc_by(v));
                    });
                } else {
                    c.inc_by(v);
                }
            }
            Op::Set { p, f, l, v } | Op::Add { p, f, l, v } => {
                let timed = matches!(specs[f].kind, Kind::Gauge(m) if m.needs_timestamp());
                if timed {
                    clock.before_write();
                }
                let g = alive(&mut real, p).gauge(f, specs[f].values(pool, l));
                if matches!(op, Op::Set { .. }) {
                    g.set(v);
                } else {
                    g.add(v);
                }
                if timed {
                    clock.after_write();
                }
            }
            Op::Touch { p, f, l } => {
                alive(&mut real, p).touch(f, specs[f].kind, specs[f].values(pool, l));
            }
            Op::Observe { p, f, l, v } => {
                alive(&mut real, p).observe(f, specs[f].values(pool, l), Some(v));
            }
            Op::Kill { p } => {
                let gone = real[p].take().expect("alive");
                dead_segments += gone.registry.segment_paths().len();
                drop(gone);
            }
            Op::Check => {}
        }
        model.apply(&op, pool);
        if matches!(op, Op::Check | Op::Kill { .. }) {
            checkpoint(
                &real,
                &model,
                &mut reader,
                dead_segments,
                &format!("op {i} {op:?}"),
            );
        }
    }
    let last = checkpoint(&real, &model, &mut reader, dead_segments, "end");
    // A reader that starts now sees exactly what the long-running one sees.
    let fresh = Reader::open(dir.path()).unwrap().snapshot().snapshot;
    assert_eq!(fresh, last, "a fresh reader disagrees with the cached one");
    drop(real);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn reader_matches_model(
        processes in 1..=PIDS.len(),
        small_segments in any::<bool>(),
        pool in prop::collection::vec(label_value(), POOL),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        run_workload(processes, small_segments, &pool, &ops);
    }
}

/// A fixed example of what a death does: counters and histograms keep the dead process's
/// counts, the `live*` gauges drop its contribution at once, `all` keeps its series.
#[test]
fn death_keeps_counters_and_drops_live_gauges() {
    let dir = tempfile::tempdir().unwrap();
    let open = |pid| Registry::open_simulating_pid(dir.path(), Options::default(), pid).unwrap();
    let (a, b) = (open(601), open(602));
    for (reg, n) in [(&a, 1.0), (&b, 2.0)] {
        reg.counter("c_total", "C.", &[])
            .unwrap()
            .unlabelled()
            .unwrap()
            .inc_by(n * 10.0);
        for mode in [GaugeMode::LiveSum, GaugeMode::LiveAll, GaugeMode::All] {
            reg.gauge(&format!("g_{mode}"), "G.", &[], mode)
                .unwrap()
                .unlabelled()
                .unwrap()
                .set(n);
        }
        reg.histogram("h", "H.", &[], &[1.5])
            .unwrap()
            .unlabelled()
            .unwrap()
            .observe(n);
    }
    let mut reader = Reader::open(dir.path()).unwrap();
    let values = |reader: &mut Reader| -> Vec<(String, Option<u32>, Value)> {
        let scrape = reader.snapshot();
        scrape
            .snapshot
            .families
            .iter()
            .flat_map(|f| {
                f.series
                    .iter()
                    .map(|s| (f.name.to_string(), s.pid, s.value.clone()))
            })
            .collect()
    };
    let histogram = Value::Histogram {
        buckets: vec![1, 1],
        sum: 3.0,
    };
    assert_eq!(
        values(&mut reader),
        [
            ("c".into(), None, Value::Counter(30.0)),
            ("g_all".into(), Some(601), Value::Gauge(1.0)),
            ("g_all".into(), Some(602), Value::Gauge(2.0)),
            ("g_liveall".into(), Some(601), Value::Gauge(1.0)),
            ("g_liveall".into(), Some(602), Value::Gauge(2.0)),
            ("g_livesum".into(), None, Value::Gauge(3.0)),
            ("h".into(), None, histogram.clone()),
        ]
    );
    drop(b);
    assert_eq!(
        values(&mut reader),
        [
            ("c".into(), None, Value::Counter(30.0)),
            ("g_all".into(), Some(601), Value::Gauge(1.0)),
            ("g_all".into(), Some(602), Value::Gauge(2.0)),
            ("g_liveall".into(), Some(601), Value::Gauge(1.0)),
            ("g_livesum".into(), None, Value::Gauge(1.0)),
            ("h".into(), None, histogram.clone()),
        ]
    );
    drop(a);
    // Nobody is alive: the live gauges have no series and their families are left out.
    assert_eq!(
        values(&mut reader),
        [
            ("c".into(), None, Value::Counter(30.0)),
            ("g_all".into(), Some(601), Value::Gauge(1.0)),
            ("g_all".into(), Some(602), Value::Gauge(2.0)),
            ("h".into(), None, histogram),
        ]
    );
}
