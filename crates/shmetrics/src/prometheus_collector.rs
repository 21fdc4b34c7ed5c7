//! Embedding the engine metrics in a Rust worker that exposes its own metrics with the tikv
//! [`prometheus`] crate (as NVIDIA Dynamo's runtime does).
//!
//! A [`DirCollector`] reads a metrics directory (the engines' `PROMETHEUS_MULTIPROC_DIR`),
//! keeps the families a [`PrefixFilter`] selects and turns them into
//! [`prometheus::proto::MetricFamily`] values. Two ways to use it:
//!
//! - **[`gather_with_host`] (recommended).** The host keeps its own [`prometheus::Registry`]
//!   and, on each scrape, gathers it together with the collector. A family that both sides
//!   have is emitted once, the host's, and the clash is reported: in [`Gathered::clashes`],
//!   as a `log::warn!` once per name, and in the `shmetrics_collector_clashes` gauge appended
//!   to the output. [`render_with_host`] does the same and encodes the result with the tikv
//!   [`TextEncoder`].
//! - **Registering the collector** in the host's registry
//!   (`registry.register(Box::new(collector))`): then `registry.gather()` includes the
//!   engine families. The host must then make sure no name clashes, for example with
//!   [`DirCollector::exclude`] naming the host's own families.
//!
//! # Why duplicates are removed in [`gather_with_host`] and not inside `collect()`
//!
//! 1. `Registry::gather` merges families of the same name coming from different collectors
//!    by appending their samples to the first one, with no check of type or help text
//!    (tikv's code has a `TODO: check type`). A host gauge `vllm:num_requests_running` and
//!    the engines' gauge of that name would come out as one family with two unlabelled
//!    samples, which Prometheus rejects or, worse, ingests as a flapping value. Whatever the
//!    collector returns, the registry merges it afterwards; only code that sees both sides
//!    after they were gathered can drop one side.
//! 2. A collector cannot ask its own registry what the host has: `collect()` runs while
//!    `Registry::gather` holds the registry's read lock, and that lock is a fair
//!    `parking_lot::RwLock`. A second `registry.gather()` from inside `collect()` takes the
//!    read lock again, and if a `register` call is waiting for the write lock in between,
//!    the recursive read waits behind the writer, which waits for the first read: a
//!    deadlock that only shows up under load.
//!
//! So `collect()` emits every kept family (minus [`DirCollector::exclude`]d names) and the
//! comparison with the host happens in [`gather_with_host`], which gathers the host first
//! and the directory second, outside any registry lock. A prefix or common labels the host
//! gave its registry (`Registry::new_custom`) apply to the host's families only there;
//! registered directly, the collector's families get them too.
//!
//! # Registration identity
//!
//! [`Collector::desc`] returns one descriptor, `shmetrics_directory{dir="<canonical
//! path>"}`, emitted by nobody. tikv derives a collector's identity from its descriptors;
//! an empty list would give every such collector the id 0, so a second one (or any other
//! collector without descriptors) could not be registered. With the directory in the
//! descriptor, collectors of different directories register side by side, and registering
//! the same directory twice fails with [`prometheus::Error::AlreadyReg`] instead of
//! silently doubling every engine series.
//!
//! # Format notes
//!
//! Counters are named `<name>_total` (the tikv encoder prints family names as they are).
//! Histograms carry their finite bounds; the encoder adds the single `+Inf` bucket from the
//! sample count. Summaries have count and sum, no quantiles (as `prometheus_client` in
//! multiprocess mode). Gauges in the `all` and `liveall` modes carry a `pid` label after
//! their own labels. The tikv encoder prints numbers with Rust's `Display`, so a bucket
//! bound `1.0` appears as `le="1"` where `shmetrics serve` (like Python) prints `le="1.0"`;
//! Prometheus 3 normalises both. For byte-compatible output into any writer, without the
//! tikv crate, use [`crate::Reader::scrape`].
//!
//! # Example
//!
//! ```no_run
//! use prometheus::{IntCounter, Registry};
//! use shmetrics::PrefixFilter;
//! use shmetrics::prometheus_collector::{DirCollector, render_with_host};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let host = Registry::new();
//! let requests = IntCounter::new("dynamo_component_requests_total", "Requests served.")?;
//! host.register(Box::new(requests.clone()))?;
//!
//! let engines = DirCollector::open(
//!     std::env::var("PROMETHEUS_MULTIPROC_DIR")?,
//!     PrefixFilter::new(["vllm:", "lmcache:"]),
//! )?;
//!
//! // On each scrape of /metrics:
//! let mut body = Vec::new();
//! let gathered = render_with_host(&host, &engines, &mut body)?;
//! for name in &gathered.clashes {
//!     eprintln!("{name} is served by the host; the engines' family was dropped");
//! }
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{Encoder, Registry, TextEncoder};
use shmetrics_layout::names::{Escaping, escaped_name};
use shmetrics_layout::{MetricKind, suffix};
use shmetrics_reader::snapshot::{Family, Series, Value};
use shmetrics_reader::{PrefixFilter, Reader, ScrapeReport};

use crate::dir_source::{DirSource, dir_collector_builders};

/// Name of the gauge [`gather_with_host`] appends: directory families dropped because the
/// host has a family of the same name (or with a clashing sample name).
pub const CLASHES_FAMILY: &str = "shmetrics_collector_clashes";

/// Help text of [`CLASHES_FAMILY`].
pub(crate) const CLASHES_HELP: &str = "Families of the metrics directory dropped from the last \
     gather because the host registry has a family of the same name.";

/// Name of the descriptor a [`DirCollector`] registers under (never emitted).
pub const DESC_NAME: &str = "shmetrics_directory";

/// A tikv `prometheus` [`Collector`] over a metrics directory: each `collect()` takes a
/// fresh snapshot and returns the families kept by its filter.
pub struct DirCollector {
    source: DirSource,
    desc: Desc,
}

impl std::fmt::Debug for DirCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirCollector")
            .field("desc", &self.desc.const_label_pairs)
            .field("filter", &self.source.filter)
            .field("excluded", &self.source.excluded)
            .field("self_metrics", &self.source.self_metrics)
            .finish_non_exhaustive()
    }
}

impl DirCollector {
    /// A collector over `reader`'s directory keeping the families `filter` selects.
    pub fn new(reader: Reader, filter: PrefixFilter) -> Self {
        let dir = reader.dir();
        let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
        let labels = HashMap::from([("dir".to_owned(), canonical.to_string_lossy().into_owned())]);
        // The name, help text and label name are constants that satisfy every check of
        // `Desc::new`; the label value may be any string.
        let desc = Desc::new(
            DESC_NAME.to_owned(),
            "A metrics directory merged by a shmetrics DirCollector.".to_owned(),
            Vec::new(),
            labels,
        )
        .expect("constant descriptor is valid");
        Self {
            source: DirSource::new(reader, filter),
            desc,
        }
    }

    dir_collector_builders!();

    /// Takes a snapshot and returns the kept families, sorted by exposition name, with the
    /// reader's report of the scrape (segment counts, problems, conflicts).
    pub fn collect_with_report(&self) -> (Vec<MetricFamily>, ScrapeReport) {
        let (families, report) = self.source.families();
        let mut families: Vec<MetricFamily> = families.iter().map(to_proto).collect();
        // A counter's `_total` may reorder names (`a_total` sorts after `a_b`). The reader
        // never yields two families with a common exposition name (it reports a `name`
        // conflict instead), so sorting is all that is left to do.
        families.sort_by(|a, b| a.name().cmp(b.name()));
        (families, report)
    }
}

impl Collector for DirCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.collect_with_report().0
    }
}

/// The result of [`gather_with_host`].
#[derive(Clone, Debug, Default)]
pub struct Gathered {
    /// The host's families and the kept directory families, each name once, sorted by
    /// name, with the [`CLASHES_FAMILY`] gauge.
    pub families: Vec<MetricFamily>,
    /// Exposition names of the directory families dropped because the host has a family
    /// of that name or one that writes a sample of the same name (a host gauge `x_count`
    /// against a directory histogram `x`), sorted.
    pub clashes: Vec<String>,
    /// What the directory scrape found (segment counts, problems, conflicts).
    pub report: ScrapeReport,
}

/// Gathers `host`, then `dir`, and merges them: each family name appears once; on a clash
/// the host's family is kept and the directory's dropped and reported (see [`Gathered`]).
/// `dir` must not also be registered in `host`.
pub fn gather_with_host(host: &Registry, dir: &DirCollector) -> Gathered {
    merge_with_host(host.gather(), dir)
}

/// As [`gather_with_host`], for hosts whose families come from elsewhere (several
/// registries, `prometheus::gather()` of the default registry).
pub fn merge_with_host(host_families: Vec<MetricFamily>, dir: &DirCollector) -> Gathered {
    let (dir_families, report) = dir.collect_with_report();
    let mut families: Vec<MetricFamily> = host_families
        .into_iter()
        .filter(|f| !f.get_metric().is_empty())
        .collect();
    let host_names: HashSet<String> = families.iter().map(|f| f.name().to_owned()).collect();
    let host_samples: HashSet<String> = families.iter().flat_map(sample_names).collect();
    let mut clashes = Vec::new();
    for family in dir_families {
        let clash = host_names.contains(family.name())
            || sample_names(&family).any(|s| host_samples.contains(&s));
        if clash {
            dir.source.warn_once(
                family.name(),
                "the host registry has a family with this name (or a clashing sample \
                 name); the host's is emitted and the metrics directory's dropped",
            );
            clashes.push(family.name().to_owned());
        } else {
            families.push(family);
        }
    }
    clashes.sort();
    if !host_names.contains(CLASHES_FAMILY) {
        families.push(clashes_family(clashes.len()));
    }
    families.sort_by(|a, b| a.name().cmp(b.name()));
    Gathered {
        families,
        clashes,
        report,
    }
}

/// [`gather_with_host`], encoded into `out` with the tikv [`TextEncoder`] (Prometheus text
/// format 0.0.4, content type [`prometheus::TEXT_FORMAT`]).
///
/// # Errors
/// Errors of `out`, or of the encoder.
pub fn render_with_host(
    host: &Registry,
    dir: &DirCollector,
    out: &mut impl Write,
) -> io::Result<Gathered> {
    let gathered = gather_with_host(host, dir);
    TextEncoder::new()
        .encode(&gathered.families, out)
        .map_err(|e| match e {
            prometheus::Error::Io(e) => e,
            other => io::Error::other(other),
        })?;
    Ok(gathered)
}

/// The sample names a family writes in the text format.
fn sample_names(family: &MetricFamily) -> impl Iterator<Item = String> + '_ {
    let name = family.name();
    // The tikv crate's counters carry `_total` in their family name; a summary's quantile
    // samples are named as the family.
    let suffixes: &[&str] = match family.get_field_type() {
        MetricType::HISTOGRAM => MetricKind::Histogram.sample_suffixes(),
        MetricType::SUMMARY => MetricKind::Summary.sample_suffixes(),
        MetricType::COUNTER | MetricType::GAUGE | MetricType::UNTYPED => &[],
    };
    let bare = family.get_field_type() != MetricType::HISTOGRAM;
    bare.then_some("")
        .into_iter()
        .chain(suffixes.iter().copied())
        .map(move |s| format!("{name}{s}"))
}

fn clashes_family(count: usize) -> MetricFamily {
    let mut gauge = proto::Gauge::default();
    gauge.set_value(count as f64);
    let mut mf = MetricFamily::default();
    mf.set_name(CLASHES_FAMILY.to_owned());
    mf.set_help(CLASHES_HELP.to_owned());
    mf.set_field_type(MetricType::GAUGE);
    mf.set_metric(vec![proto::Metric::from_gauge(gauge)]);
    mf
}

/// A label pair, its name as the classic formats expose it (the tikv encoder prints names
/// as they are; `lbl.x` becomes `lbl_x`).
fn label_pair(name: &str, value: &str) -> proto::LabelPair {
    let mut pair = proto::LabelPair::default();
    pair.set_name(escaped_name(name, false, Escaping::Underscores));
    pair.set_value(value.to_owned());
    pair
}

/// The series' label pairs (sorted by name) and, for per-process gauges, `pid` last (a
/// label such gauges may not declare themselves).
fn labels(series: &Series) -> Vec<proto::LabelPair> {
    let mut pairs: Vec<proto::LabelPair> = series
        .labels
        .pairs
        .iter()
        .map(|(n, v)| label_pair(n, v))
        .collect();
    if let Some(pid) = series.pid {
        pairs.push(label_pair("pid", &pid.to_string()));
    }
    pairs
}

fn to_proto(family: &Family) -> MetricFamily {
    let (name, field_type) = match family.kind {
        MetricKind::Counter => (
            format!("{}{}", family.name, suffix::TOTAL),
            MetricType::COUNTER,
        ),
        MetricKind::Gauge => (family.name.to_string(), MetricType::GAUGE),
        MetricKind::Histogram => (family.name.to_string(), MetricType::HISTOGRAM),
        MetricKind::Summary => (family.name.to_string(), MetricType::SUMMARY),
        // As prometheus_client's text format: an info is the gauge `name_info`, a stateset
        // a gauge with a sample per state.
        MetricKind::Info => (
            format!("{}{}", family.name, suffix::INFO),
            MetricType::GAUGE,
        ),
        MetricKind::StateSet => (family.name.to_string(), MetricType::GAUGE),
    };
    // As the classic formats expose names outside their character set.
    let name = escaped_name(&name, true, Escaping::Underscores);
    let metrics = family
        .series
        .iter()
        .flat_map(|series| {
            let mut m = proto::Metric::from_label(labels(series));
            match &series.value {
                Value::Counter(v) => {
                    let mut c = proto::Counter::default();
                    c.set_value(*v);
                    m.set_counter(c);
                }
                Value::Gauge(v) => {
                    let mut g = proto::Gauge::default();
                    g.set_value(*v);
                    m.set_gauge(g);
                }
                Value::Histogram { buckets, sum } => {
                    // Finite bounds only: the encoder writes the one `+Inf` bucket from
                    // the sample count, which is the total of every bucket.
                    let mut cumulative = 0u64;
                    let mut finite = Vec::with_capacity(family.bounds.len());
                    for (i, count) in buckets.iter().enumerate() {
                        // Saturating, as the text renderer: corrupt counts cannot overflow.
                        cumulative = cumulative.saturating_add(*count);
                        if let Some(&bound) = family.bounds.get(i) {
                            let mut b = proto::Bucket::default();
                            b.set_upper_bound(bound);
                            b.set_cumulative_count(cumulative);
                            finite.push(b);
                        }
                    }
                    let mut h = proto::Histogram::default();
                    h.set_bucket(finite);
                    h.set_sample_count(cumulative);
                    h.set_sample_sum(*sum);
                    m.set_histogram(h);
                }
                Value::Summary { count, sum } => {
                    let mut s = proto::Summary::default();
                    s.set_sample_count(*count);
                    s.set_sample_sum(*sum);
                    m.set_summary(s);
                }
                Value::Info => {
                    let mut g = proto::Gauge::default();
                    g.set_value(1.0);
                    m.set_gauge(g);
                }
                Value::State { states, index } => {
                    return states
                        .iter()
                        .enumerate()
                        .map(|(i, state)| {
                            let mut pairs = labels(series);
                            pairs.push(label_pair(&family.name, state));
                            let mut m = proto::Metric::from_label(pairs);
                            let mut g = proto::Gauge::default();
                            g.set_value(if i == *index { 1.0 } else { 0.0 });
                            m.set_gauge(g);
                            m
                        })
                        .collect::<Vec<_>>();
                }
            }
            vec![m]
        })
        .collect();
    let mut mf = MetricFamily::default();
    mf.set_name(name);
    mf.set_help(family.help.to_string());
    mf.set_field_type(field_type);
    mf.set_metric(metrics);
    mf
}
