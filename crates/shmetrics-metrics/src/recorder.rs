//! The recorder: `metrics` keys to shmetrics families and children.

use shmetrics_layout::sync::AtomicU64;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};
use shmetrics_layout::DefinitionError;
use shmetrics_layout::names::MAX_HELP_LEN;
use shmetrics_writer::child_table::ChildTable;
use shmetrics_writer::{
    CounterFamily, DEFAULT_BUCKETS, GaugeFamily, GaugeMode, HistogramFamily, Options, Registry,
};

use crate::handles::{CounterHandle, GaugeHandle, HistogramHandle};
use crate::names;
use crate::rules::Rules;

/// The gauge mode of gauges no rule names: see the crate documentation for why.
pub const DEFAULT_GAUGE_MODE: GaugeMode = GaugeMode::LiveSum;

/// Why a recorder could not be built or installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening the registry (the process's segment) failed.
    #[error("shmetrics registry: {0}")]
    Writer(#[from] shmetrics_writer::Error),
    /// A bucket rule is invalid.
    #[error("histogram buckets: {rule}: {reason}")]
    Buckets {
        /// The rule.
        rule: BucketRule,
        /// Why its bounds are refused.
        reason: BucketError,
    },
    /// A stripe rule asks for a count of copies a series cannot have.
    #[error(
        "stripes: {rule}: {stripes} is not a power of two from 1 to {}",
        shmetrics_writer::MAX_STRIPES
    )]
    Stripes {
        /// The rule.
        rule: StripeRule,
        /// The count it asked for.
        stripes: usize,
    },
    /// A global `metrics` recorder is already installed in this process.
    #[error("a global metrics recorder is already installed")]
    AlreadyInstalled,
}

/// A bucket rule of a [`RecorderBuilder`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BucketRule {
    /// [`RecorderBuilder::buckets`].
    Default,
    /// [`RecorderBuilder::buckets_for_metric`], with the metric name.
    Metric(String),
    /// [`RecorderBuilder::buckets_for_prefix`], with the prefix.
    Prefix(String),
}

impl std::fmt::Display for BucketRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Default => f.write_str("default buckets"),
            Self::Metric(name) => write!(f, "buckets of {name}"),
            Self::Prefix(prefix) => write!(f, "buckets of prefix {prefix}"),
        }
    }
}

/// A stripe rule of a [`RecorderBuilder`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StripeRule {
    /// [`RecorderBuilder::stripes`].
    Default,
    /// [`RecorderBuilder::stripes_for_metric`], with the metric name.
    Metric(String),
    /// [`RecorderBuilder::stripes_for_prefix`], with the prefix.
    Prefix(String),
}

impl std::fmt::Display for StripeRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Default => f.write_str("default stripes"),
            Self::Metric(name) => write!(f, "stripes of {name}"),
            Self::Prefix(prefix) => write!(f, "stripes of prefix {prefix}"),
        }
    }
}

/// Why a bucket rule's bounds are refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BucketError {
    /// No bound but `+Inf`.
    #[error("no finite bucket bound")]
    NoFiniteBound,
    /// Bounds a histogram cannot have (unsorted, repeated, NaN, too many).
    #[error(transparent)]
    Invalid(#[from] DefinitionError),
}

/// Settings of a [`ShmetricsRecorder`]: histogram buckets, gauge modes and stripes by
/// metric name or prefix, unit suffixes, segment options. Names in rules are the names
/// given to the macros (`histogram!("http.latency")` is matched as `http.latency`).
#[derive(Clone, Debug)]
pub struct RecorderBuilder {
    buckets: Rules<Arc<[f64]>>,
    gauge_modes: Rules<GaugeMode>,
    stripes: Rules<usize>,
    unit_suffix: bool,
    options: Options,
    /// The first invalid bucket rule, reported by `build`.
    bucket_error: Option<(BucketRule, BucketError)>,
    /// The first invalid stripe rule, reported by `build`.
    stripe_error: Option<(StripeRule, usize)>,
}

impl Default for RecorderBuilder {
    fn default() -> Self {
        Self {
            buckets: Rules::new(DEFAULT_BUCKETS.into()),
            gauge_modes: Rules::new(DEFAULT_GAUGE_MODE),
            stripes: Rules::new(1),
            unit_suffix: false,
            options: Options::default(),
            bucket_error: None,
            stripe_error: None,
        }
    }
}

/// Bounds as the writer takes them: a trailing `+Inf` dropped; checked.
fn checked_bounds(bounds: &[f64]) -> Result<Arc<[f64]>, BucketError> {
    let finite = match bounds {
        [finite @ .., last] if *last == f64::INFINITY => finite,
        all => all,
    };
    if finite.is_empty() {
        return Err(BucketError::NoFiniteBound);
    }
    shmetrics_layout::record::check_family(&shmetrics_layout::record::FamilyRecord {
        id: 0,
        kind: shmetrics_layout::MetricKind::Histogram,
        mode: None,
        name: "buckets".into(),
        help: String::new(),
        label_names: Vec::new(),
        bounds: finite.to_vec(),
        states: Vec::new(),
    })?;
    Ok(finite.into())
}

impl RecorderBuilder {
    /// Default settings: [`DEFAULT_BUCKETS`] for every histogram, [`DEFAULT_GAUGE_MODE`]
    /// for every gauge, no unit suffixes, default segment [`Options`].
    pub fn new() -> Self {
        Self::default()
    }

    fn set_buckets(
        mut self,
        rule: BucketRule,
        bounds: &[f64],
        set: impl FnOnce(&mut Self, Arc<[f64]>),
    ) -> Self {
        match checked_bounds(bounds) {
            Ok(bounds) => set(&mut self, bounds),
            Err(reason) => {
                self.bucket_error.get_or_insert((rule, reason));
            }
        }
        self
    }

    /// Bucket bounds of histograms no other rule names (finite, strictly increasing; a
    /// trailing `+Inf` may be given and is implied otherwise).
    #[must_use]
    pub fn buckets(self, bounds: &[f64]) -> Self {
        self.set_buckets(BucketRule::Default, bounds, |b, v| b.buckets.set_default(v))
    }

    /// Bucket bounds of the histogram called `name`; wins over every prefix rule.
    #[must_use]
    pub fn buckets_for_metric(self, name: impl Into<String>, bounds: &[f64]) -> Self {
        let name = name.into();
        self.set_buckets(BucketRule::Metric(name.clone()), bounds, |b, v| {
            b.buckets.set_exact(name, v);
        })
    }

    /// Bucket bounds of histograms whose name starts with `prefix`; the longest matching
    /// prefix wins.
    #[must_use]
    pub fn buckets_for_prefix(self, prefix: impl Into<String>, bounds: &[f64]) -> Self {
        let prefix = prefix.into();
        self.set_buckets(BucketRule::Prefix(prefix.clone()), bounds, |b, v| {
            b.buckets.set_prefix(prefix, v);
        })
    }

    /// The mode of gauges no other rule names (default [`DEFAULT_GAUGE_MODE`]).
    #[must_use]
    pub fn gauge_mode(mut self, mode: GaugeMode) -> Self {
        self.gauge_modes.set_default(mode);
        self
    }

    /// The mode of the gauge called `name`.
    #[must_use]
    pub fn gauge_mode_for_metric(mut self, name: impl Into<String>, mode: GaugeMode) -> Self {
        self.gauge_modes.set_exact(name.into(), mode);
        self
    }

    /// The mode of gauges whose name starts with `prefix`; the longest matching prefix wins.
    #[must_use]
    pub fn gauge_mode_for_prefix(mut self, prefix: impl Into<String>, mode: GaugeMode) -> Self {
        self.gauge_modes.set_prefix(prefix.into(), mode);
        self
    }

    fn set_stripes(
        mut self,
        rule: StripeRule,
        stripes: usize,
        set: impl FnOnce(&mut Self, usize),
    ) -> Self {
        if shmetrics_writer::valid_stripes(stripes) {
            set(&mut self, stripes);
        } else {
            self.stripe_error.get_or_insert((rule, stripes));
        }
        self
    }

    /// Copies of each series of counters and histograms no other stripe rule names, for
    /// series that several threads write at once: each thread writes the copy its number
    /// picks, so up to `stripes` threads never contend for a cache line, and readers add
    /// the copies up (`Registry::histogram_striped`). A power of two up to
    /// [`MAX_STRIPES`](shmetrics_writer::MAX_STRIPES); 1 (the default): one copy, until
    /// threads are found writing a histogram series at once (then it is spread over
    /// `Options::contention_stripes` copies). A series takes `stripes` times the slots.
    /// Gauges are never striped.
    #[must_use]
    pub fn stripes(self, stripes: usize) -> Self {
        self.set_stripes(StripeRule::Default, stripes, |b, n| {
            b.stripes.set_default(n)
        })
    }

    /// Copies of each series of the counter or histogram called `name` (see
    /// [`RecorderBuilder::stripes`]); wins over every prefix rule.
    #[must_use]
    pub fn stripes_for_metric(self, name: impl Into<String>, stripes: usize) -> Self {
        let name = name.into();
        self.set_stripes(StripeRule::Metric(name.clone()), stripes, |b, n| {
            b.stripes.set_exact(name, n);
        })
    }

    /// Copies of each series of counters and histograms whose name starts with `prefix`
    /// (see [`RecorderBuilder::stripes`]); the longest matching prefix wins.
    #[must_use]
    pub fn stripes_for_prefix(self, prefix: impl Into<String>, stripes: usize) -> Self {
        let prefix = prefix.into();
        self.set_stripes(StripeRule::Prefix(prefix.clone()), stripes, |b, n| {
            b.stripes.set_prefix(prefix, n);
        })
    }

    /// Whether a unit given by `describe_*!` before a metric's first use is appended to its
    /// name (`latency` in `Unit::Seconds` → `latency_seconds`), as Prometheus naming
    /// practice asks. Off by default, as in `metrics-exporter-prometheus`.
    #[must_use]
    pub fn unit_suffix(mut self, on: bool) -> Self {
        self.unit_suffix = on;
        self
    }

    /// Segment options of the registry [`RecorderBuilder::open`] creates.
    #[must_use]
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// Builds a recorder writing into `registry` (which the process may also use
    /// directly).
    ///
    /// # Errors
    /// [`Error::Buckets`] for an invalid bucket rule, [`Error::Stripes`] for an invalid
    /// stripe rule.
    pub fn build(self, registry: Registry) -> Result<ShmetricsRecorder, Error> {
        self.check()?;
        Ok(self.assemble(registry))
    }

    /// The recorder on `registry`, the rules checked.
    fn assemble(self, registry: Registry) -> ShmetricsRecorder {
        debug_assert!(self.buckets.values().all(|b| !b.is_empty()));
        ShmetricsRecorder {
            inner: Arc::new(Inner {
                registry,
                buckets: self.buckets,
                gauge_modes: self.gauge_modes,
                stripes: self.stripes,
                unit_suffix: self.unit_suffix,
                counters: ChildTable::new(),
                gauges: ChildTable::new(),
                histograms: ChildTable::new(),
                state: Mutex::new(State::default()),
                absolute: Arc::new(Mutex::new(())),
                rejected_keys: AtomicU64::new(0),
                late_descriptions: AtomicU64::new(0),
            }),
        }
    }

    /// Opens a registry in `dir` (this process's segment) and builds a recorder on it.
    ///
    /// # Errors
    /// [`Error::Writer`] when the segment cannot be created, [`Error::Buckets`],
    /// [`Error::Stripes`].
    pub fn open(self, dir: impl AsRef<Path>) -> Result<ShmetricsRecorder, Error> {
        // Checked first, so that a refused configuration creates no segment.
        self.check()?;
        let registry = Registry::open_with(dir, self.options.clone())?;
        Ok(self.assemble(registry))
    }

    /// The first invalid rule, as an error.
    fn check(&self) -> Result<(), Error> {
        if let Some((rule, reason)) = &self.bucket_error {
            return Err(Error::Buckets {
                rule: rule.clone(),
                reason: reason.clone(),
            });
        }
        if let Some((rule, stripes)) = &self.stripe_error {
            return Err(Error::Stripes {
                rule: rule.clone(),
                stripes: *stripes,
            });
        }
        Ok(())
    }

    /// Opens a registry in the directory named by `PROMETHEUS_MULTIPROC_DIR` and builds a
    /// recorder on it.
    ///
    /// # Errors
    /// As [`RecorderBuilder::open`], and [`shmetrics_writer::Error::DirUnset`].
    pub fn from_env(self) -> Result<ShmetricsRecorder, Error> {
        match std::env::var_os(shmetrics_writer::DIR_ENV) {
            Some(dir) if !dir.is_empty() => self.open(dir),
            _ => Err(Error::Writer(shmetrics_writer::Error::DirUnset)),
        }
    }
}

/// What the recorder did that a user may need to know about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Families registered in the shmetrics registry.
    pub families: usize,
    /// Distinct keys (name and labels, per metric type) seen, including rejected ones.
    pub keys: usize,
    /// Distinct keys that got a no-op handle: an invalid or clashing family, label names
    /// that differ from the family's, an invalid label value. Each is logged once per
    /// metric name.
    pub rejected_keys: u64,
    /// `describe_*` calls that came after the family was registered with another help text
    /// or unit: the family keeps what it was registered with.
    pub late_descriptions: u64,
}

/// A `metrics` [`Recorder`](metrics::Recorder) writing into a shmetrics segment. Cheap to
/// clone; clones share everything.
#[derive(Clone)]
pub struct ShmetricsRecorder {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ShmetricsRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmetricsRecorder")
            .field("registry", &self.inner.registry)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl ShmetricsRecorder {
    /// A builder with the default settings.
    pub fn builder() -> RecorderBuilder {
        RecorderBuilder::new()
    }

    /// A recorder with the default settings, writing into a new segment in `dir`.
    ///
    /// # Errors
    /// See [`RecorderBuilder::open`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, Error> {
        RecorderBuilder::new().open(dir)
    }

    /// A recorder with the default settings in `PROMETHEUS_MULTIPROC_DIR`.
    ///
    /// # Errors
    /// See [`RecorderBuilder::from_env`].
    pub fn from_env() -> Result<Self, Error> {
        RecorderBuilder::new().from_env()
    }

    /// Installs a clone of this recorder as the process's global `metrics` recorder; keep
    /// `self` to read [`ShmetricsRecorder::stats`].
    ///
    /// # Errors
    /// [`Error::AlreadyInstalled`] when a global recorder is already set.
    pub fn install(&self) -> Result<(), Error> {
        metrics::set_global_recorder(self.clone()).map_err(|_| Error::AlreadyInstalled)
    }

    /// The shmetrics registry the recorder writes into.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Counts of what was registered and rejected.
    pub fn stats(&self) -> Stats {
        let inner = &self.inner;
        let families = inner
            .lock_state()
            .families
            .values()
            .filter(|f| matches!(f, FamilyState::Ready(_)))
            .count();
        Stats {
            families,
            keys: inner.counters.len() + inner.gauges.len() + inner.histograms.len(),
            // SYNC POINT facade-stats: relaxed; statistics, publish nothing.
            rejected_keys: inner.rejected_keys.load(Ordering::Relaxed),
            // SYNC POINT facade-stats: relaxed, as above.
            late_descriptions: inner.late_descriptions.load(Ordering::Relaxed),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

#[derive(Clone, Debug)]
struct Description {
    help: String,
    unit: Option<Unit>,
}

enum AnyFamily {
    Counter(CounterFamily),
    Gauge(GaugeFamily),
    Histogram(HistogramFamily),
}

struct Registered {
    family: AnyFamily,
    /// Label names (sanitized), in the family's order.
    label_names: Vec<String>,
    /// What the family was registered with.
    help: String,
    unit: Option<Unit>,
}

enum FamilyState {
    Ready(Registered),
    Rejected,
}

#[derive(Default)]
struct State {
    /// By [`family_id`].
    families: HashMap<(Kind, String), FamilyState>,
    /// By [`family_id`].
    descriptions: HashMap<(Kind, String), Description>,
    /// Metric names a problem was logged for.
    warned: HashSet<(Kind, String)>,
}

struct Inner {
    registry: Registry,
    buckets: Rules<Arc<[f64]>>,
    gauge_modes: Rules<GaugeMode>,
    stripes: Rules<usize>,
    unit_suffix: bool,
    /// Handles by key, per metric type: the macros' lock-free lookup.
    counters: ChildTable<Key, Counter>,
    gauges: ChildTable<Key, Gauge>,
    histograms: ChildTable<Key, Histogram>,
    state: Mutex<State>,
    absolute: Arc<Mutex<()>>,
    rejected_keys: AtomicU64,
    late_descriptions: AtomicU64,
}

/// A resolved child of any type.
enum Child {
    Counter(shmetrics_writer::Counter),
    Gauge(shmetrics_writer::Gauge),
    Histogram(shmetrics_writer::Histogram),
}

/// Help text as the layout takes it: at most `MAX_HELP_LEN` bytes, cut at a character
/// boundary.
fn bounded_help(help: &str) -> &str {
    if help.len() <= MAX_HELP_LEN {
        return help;
    }
    let mut end = MAX_HELP_LEN;
    while !help.is_char_boundary(end) {
        end -= 1;
    }
    &help[..end]
}

impl State {
    fn warn_once(&mut self, kind: Kind, name: &str, what: std::fmt::Arguments<'_>) {
        if self.warned.insert((kind, name.to_owned())) {
            log::warn!(
                "shmetrics metrics recorder: {} {name}: {what}",
                kind.as_str()
            );
        }
    }
}

/// What identifies a family: its type and its Prometheus name (sanitized; a counter's
/// without `_total`, as the writer registers it), so `counter!("http.requests")` and
/// `counter!("http_requests_total")` are one family.
fn family_id(kind: Kind, name: &str) -> (Kind, String) {
    let name = names::metric_name(name);
    let name = match kind {
        Kind::Counter => name.strip_suffix("_total").unwrap_or(&name),
        Kind::Gauge | Kind::Histogram => &name,
    };
    (kind, name.to_owned())
}

impl Inner {
    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers the family for `key` with what is known of it now: the description so
    /// far (else the metric's name as help), the bucket or mode rule of its name.
    fn register(&self, state: &State, kind: Kind, key: &Key) -> Result<Registered, String> {
        let (_, mut name) = family_id(kind, key.name());
        let description = state.descriptions.get(&(kind, name.clone()));
        let help = match description {
            Some(d) if !d.help.is_empty() => bounded_help(&d.help).to_owned(),
            _ => name.clone(),
        };
        let unit = description.and_then(|d| d.unit);
        if self.unit_suffix
            && let Some(suffix) = unit.and_then(names::unit_suffix)
        {
            name = names::with_unit_suffix(&name, suffix, kind == Kind::Counter);
        }
        let label_names: Vec<String> = key
            .labels()
            .map(|l| names::label_name(l.key()).into_owned())
            .collect();
        let labels: Vec<&str> = label_names.iter().map(String::as_str).collect();
        let registry = &self.registry;
        let stripes = *self.stripes.get(key.name());
        let family = match kind {
            Kind::Counter => registry
                .counter_striped(&name, &help, &labels, stripes)
                .map(AnyFamily::Counter),
            Kind::Gauge => {
                let mode = *self.gauge_modes.get(key.name());
                registry
                    .gauge(&name, &help, &labels, mode)
                    .map(AnyFamily::Gauge)
            }
            Kind::Histogram => {
                let bounds = self.buckets.get(key.name());
                registry
                    .histogram_striped(&name, &help, &labels, bounds, stripes)
                    .map(AnyFamily::Histogram)
            }
        }
        .map_err(|e| e.to_string())?;
        Ok(Registered {
            family,
            label_names,
            help,
            unit,
        })
    }

    /// The child for `key`, registering its family on first use; `Err` says why the key
    /// gets a no-op handle.
    fn resolve(&self, kind: Kind, key: &Key) -> Result<Child, String> {
        let mut state = self.lock_state();
        let id = family_id(kind, key.name());
        if !state.families.contains_key(&id) {
            let registered = self.register(&state, kind, key);
            let entry = match registered {
                Ok(r) => FamilyState::Ready(r),
                Err(e) => {
                    state.warn_once(kind, key.name(), format_args!("not registered: {e}"));
                    FamilyState::Rejected
                }
            };
            state.families.insert(id.clone(), entry);
        }
        let FamilyState::Ready(family) = &state.families[&id] else {
            return Err("its family was rejected".into());
        };
        let values = match label_values(key, &family.label_names) {
            Ok(values) => values,
            Err(given) => {
                let first = family.label_names.clone();
                state.warn_once(
                    kind,
                    key.name(),
                    format_args!(
                        "label names {given:?} differ from {first:?} of its first use; \
                         such keys are not recorded"
                    ),
                );
                return Err("label names differ".into());
            }
        };
        let child = match &family.family {
            AnyFamily::Counter(f) => f.labels(&values).map(|c| Child::Counter(c.clone())),
            AnyFamily::Gauge(f) => f.labels(&values).map(|c| Child::Gauge(c.clone())),
            AnyFamily::Histogram(f) => f.labels(&values).map(|c| Child::Histogram(c.clone())),
        };
        child.map_err(|e| {
            let e = e.to_string();
            state.warn_once(kind, key.name(), format_args!("series not recorded: {e}"));
            e
        })
    }

    fn rejected(&self) {
        // SYNC POINT facade-stats: relaxed; a statistic.
        self.rejected_keys.fetch_add(1, Ordering::Relaxed);
    }

    fn counter(&self, key: &Key) -> Counter {
        match self.resolve(Kind::Counter, key) {
            Ok(Child::Counter(counter)) => Counter::from_arc(Arc::new(CounterHandle {
                counter,
                absolute: Arc::clone(&self.absolute),
            })),
            _ => {
                self.rejected();
                Counter::noop()
            }
        }
    }

    fn gauge(&self, key: &Key) -> Gauge {
        match self.resolve(Kind::Gauge, key) {
            Ok(Child::Gauge(gauge)) => Gauge::from_arc(Arc::new(GaugeHandle(gauge))),
            _ => {
                self.rejected();
                Gauge::noop()
            }
        }
    }

    fn histogram(&self, key: &Key) -> Histogram {
        match self.resolve(Kind::Histogram, key) {
            Ok(Child::Histogram(h)) => Histogram::from_arc(Arc::new(HistogramHandle(h))),
            _ => {
                self.rejected();
                Histogram::noop()
            }
        }
    }

    fn describe(&self, kind: Kind, name: &str, unit: Option<Unit>, help: &str) {
        let mut state = self.lock_state();
        let id = family_id(kind, name);
        let late = match state.families.get(&id) {
            Some(FamilyState::Ready(r)) => {
                let help_differs = !help.is_empty() && r.help != bounded_help(help);
                let unit_differs = self.unit_suffix && r.unit != unit;
                help_differs || unit_differs
            }
            _ => false,
        };
        state.descriptions.insert(
            id,
            Description {
                help: help.to_owned(),
                unit,
            },
        );
        if late {
            // SYNC POINT facade-stats: relaxed; a statistic.
            self.late_descriptions.fetch_add(1, Ordering::Relaxed);
            state.warn_once(
                kind,
                name,
                format_args!(
                    "described after its first use: the family keeps the help text and \
                     unit it was registered with; describe metrics before using them"
                ),
            );
        }
    }
}

/// The key's label values in the order of `names`, or the key's (sanitized) label names
/// when they are not the same set.
fn label_values<'k>(key: &'k Key, names: &[String]) -> Result<Vec<&'k str>, Vec<String>> {
    let given: Vec<(std::borrow::Cow<'_, str>, &str)> = key
        .labels()
        .map(|l| (names::label_name(l.key()), l.value()))
        .collect();
    let mut values = Vec::with_capacity(names.len());
    if given.len() == names.len() {
        for name in names {
            match given.iter().find(|(n, _)| n == name) {
                Some((_, v)) => values.push(*v),
                None => break,
            }
        }
    }
    let distinct: HashSet<&str> = given.iter().map(|(n, _)| &**n).collect();
    if values.len() == names.len() && distinct.len() == given.len() {
        Ok(values)
    } else {
        Err(given.into_iter().map(|(n, _)| n.into_owned()).collect())
    }
}

impl metrics::Recorder for ShmetricsRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner
            .describe(Kind::Counter, key.as_str(), unit, &description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner
            .describe(Kind::Gauge, key.as_str(), unit, &description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner
            .describe(Kind::Histogram, key.as_str(), unit, &description);
    }

    #[inline]
    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        let inner = &*self.inner;
        handle(&inner.counters, key, || inner.counter(key))
    }

    #[inline]
    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        let inner = &*self.inner;
        handle(&inner.gauges, key, || inner.gauge(key))
    }

    #[inline]
    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        let inner = &*self.inner;
        handle(&inner.histograms, key, || inner.histogram(key))
    }
}

/// The handle stored for `key`: found without a lock (the key's precomputed hash, a probe,
/// a key comparison), else made by `make` and stored, under the table's insert mutex.
#[inline]
fn handle<H: Clone>(table: &ChildTable<Key, H>, key: &Key, make: impl FnOnce() -> H) -> H {
    let hash = key.get_hash();
    // `metrics` compares keys' labels as sets, sorting 3 to 7 of them; keys from one call
    // site list their labels in one order, so compare in that order first.
    let eq = |stored: &Key| {
        (stored.name() == key.name() && stored.labels().as_slice() == key.labels().as_slice())
            || stored == key
    };
    match table.get(hash, eq) {
        Some(handle) => handle.clone(),
        None => table
            .get_or_insert_with(hash, eq, || (key.clone(), make()))
            .clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::Label;

    #[test]
    fn keys_differ_by_name_and_labels_not_by_label_order() {
        // `metrics` keys compare labels as a set, and hash them order-independently.
        let table = ChildTable::new();
        let ab = Key::from_parts("x", vec![Label::new("a", "1"), Label::new("b", "2")]);
        let ba = Key::from_parts("x", vec![Label::new("b", "2"), Label::new("a", "1")]);
        let ab3 = Key::from_parts("x", vec![Label::new("a", "1"), Label::new("b", "3")]);
        let y = Key::from_parts("y", vec![Label::new("a", "1"), Label::new("b", "2")]);
        assert_eq!(handle(&table, &ab, || "ab"), "ab");
        assert_eq!(handle(&table, &ba, || "ba"), "ab");
        assert_eq!(handle(&table, &ab3, || "ab3"), "ab3");
        assert_eq!(handle(&table, &y, || "y"), "y");
        assert_eq!(handle(&table, &ba, || "new"), "ab");
        assert_eq!(table.len(), 3);
        // Three labels (which `metrics` compares by sorting them), in and out of order.
        let labels = |order: [usize; 3]| order.map(|i| Label::new(["a", "b", "c"][i], "v"));
        let abc = Key::from_parts("z", labels([0, 1, 2]).to_vec());
        let cab = Key::from_parts("z", labels([2, 0, 1]).to_vec());
        let other = Key::from_parts("z", vec![Label::new("a", "v"), Label::new("b", "v")]);
        assert_eq!(handle(&table, &abc, || "abc"), "abc");
        assert_eq!(handle(&table, &abc, || "new"), "abc");
        assert_eq!(handle(&table, &cab, || "cab"), "abc");
        assert_eq!(handle(&table, &other, || "other"), "other");
        assert_eq!(table.len(), 5);
    }
}
