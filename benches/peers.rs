//! Setup shared by the writer bench files (`writer.rs`, `writer_threads.rs`): the mapped
//! words of the physical limits, fresh registries, the `metrics` recorder and the
//! `prometheus-client` label sets.

use shmetrics_layout::sync::AtomicU64;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter as PcCounter;
use prometheus_client::metrics::gauge::Gauge as PcGauge;
use prometheus_client::metrics::histogram::Histogram as PcHistogram;
use shmetrics_benches::{BOUNDS_20, MappedWords};
use shmetrics_writer::{GaugeMode, Registry};

/// Bytes mapped for the baselines: a small segment's worth.
pub(crate) const MAP_LEN: usize = 64 * 1024;
/// Where the baselines' words sit: 8-aligned, away from the start of the file (as the
/// writer's value slots are).
pub(crate) const SLOT_OFFSET: usize = 32 * 1024;
/// Name of the `metrics` histogram, which the recorder gives the benches' 20 bounds.
pub(crate) const METRICS_HISTOGRAM: &str = "bench_latency_seconds";
/// Observations recorded between two drains of the `metrics` histogram, whose recorder
/// keeps every observation (16 bytes) until a scrape or upkeep turns them into buckets.
pub(crate) const METRICS_DRAIN_EVERY: u64 = 1 << 20;

/// A fresh registry in its own temporary directory (kept alive alongside it), with
/// `options`.
fn registry_with(options: shmetrics_writer::Options) -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().expect("create a temporary metrics directory");
    let registry = Registry::open_with(dir.path(), options).expect("open a registry");
    (dir, registry)
}

/// A fresh registry in its own temporary directory, with the options `Registry::open`
/// takes.
pub(crate) fn registry() -> (tempfile::TempDir, Registry) {
    registry_with(shmetrics_writer::Options::from_env())
}

/// A fresh registry, as [`registry`], that never spreads a series over copies
/// (`Options::contention_stripes` 1): a contended series stays one series, as before
/// spreading existed.
pub(crate) fn one_copy_registry() -> (tempfile::TempDir, Registry) {
    registry_with(shmetrics_writer::Options {
        contention_stripes: 1,
        ..shmetrics_writer::Options::from_env()
    })
}

/// A fresh mapped file holding the physical limits' words.
pub(crate) fn mapped() -> MappedWords {
    MappedWords::new(MAP_LEN).expect("map a temporary file")
}

/// The global `metrics` recorder (installed on first use), with the benches' 20 bounds for
/// [`METRICS_HISTOGRAM`].
pub(crate) fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(METRICS_HISTOGRAM.to_owned()), &BOUNDS_20)
            .expect("valid buckets")
            .install_recorder()
            .expect("install the metrics recorder")
    })
}

/// The `metrics` exposition line of `name` with this label text, or `None`.
pub(crate) fn metrics_sample(name: &str, labels: &str) -> Option<f64> {
    let text = metrics_handle().render();
    let prefix = format!("{name}{labels} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|v| v.parse().expect("a sample value"))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Labels2 {
    pub(crate) model: String,
    pub(crate) rank: String,
}

impl Labels2 {
    pub(crate) fn new([model, rank]: &[String; 2]) -> Self {
        Self {
            model: model.clone(),
            rank: rank.clone(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Labels4 {
    pub(crate) model: String,
    pub(crate) rank: String,
    pub(crate) phase: String,
    pub(crate) reason: String,
}

/// Creates (on first use) the `bench_created_total` series with these label values in
/// `recorder`, through the thread-local hook, and increments it. Runtime label values are
/// cloned into the key: the `metrics` API takes owned or `'static` strings.
pub(crate) fn metrics_create(recorder: &PrometheusRecorder, [model, rank]: &[String; 2]) {
    metrics::with_local_recorder(recorder, || {
        metrics::counter!("bench_created_total", "model" => model.clone(), "rank" => rank.clone())
            .increment(1);
    })
}

/// Runs `iters` `metrics` histogram observations as rounds of at most
/// [`METRICS_DRAIN_EVERY`], timed by `timed(n)`, and drains the recorder between rounds
/// (untimed): it keeps every observation until upkeep folds them into buckets, as a scrape
/// does, so memory stays bounded. Returns the total timed.
pub(crate) fn drained(
    iters: u64,
    mut timed: impl FnMut(u64) -> std::time::Duration,
) -> std::time::Duration {
    let mut total = std::time::Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = (iters - done).min(METRICS_DRAIN_EVERY);
        total += timed(n);
        metrics_handle().run_upkeep();
        done += n;
    }
    total
}

/// The subjects of the `inc_by(0.5)` groups (one and two threads): a shmetrics counter, the
/// limit's word, tikv's and `prometheus-client`'s f64 counters (`metrics` has none).
pub(crate) struct FloatCounters {
    _dir: tempfile::TempDir,
    _registry: Registry,
    map: MappedWords,
    pub(crate) shmetrics: shmetrics_writer::Counter,
    /// The same counter registered with [`STRIPES`] stripes (`Registry::counter_striped`).
    pub(crate) striped: shmetrics_writer::Counter,
    /// The same counter in a registry that never spreads a series ([`one_copy_registry`]).
    #[allow(dead_code, reason = "only the two-thread benches write it")]
    pub(crate) one_copy: shmetrics_writer::Counter,
    _one_copy: (tempfile::TempDir, Registry),
    pub(crate) tikv: prometheus::Counter,
    pub(crate) pc: PcCounter<f64, AtomicU64>,
}

impl FloatCounters {
    pub(crate) fn new() -> Self {
        // The one unlabelled counter of `registry`.
        let counter = |registry: &Registry| {
            registry
                .counter("bench_tokens_total", "Tokens.", &[])
                .expect("register the counter")
                .unlabelled()
                .expect("resolve the child")
                .clone()
        };
        let (dir, registry) = registry();
        let shmetrics = counter(&registry);
        let striped = registry
            .counter_striped("bench_striped_tokens_total", "Tokens.", &[], STRIPES)
            .expect("register the striped counter")
            .unlabelled()
            .expect("resolve the child")
            .clone();
        let (one_copy_dir, one_copy_registry) = one_copy_registry();
        let one_copy = counter(&one_copy_registry);
        Self {
            _dir: dir,
            _registry: registry,
            map: mapped(),
            shmetrics,
            striped,
            one_copy,
            _one_copy: (one_copy_dir, one_copy_registry),
            tikv: prometheus::Counter::new("bench_tokens_total", "Tokens.").unwrap(),
            pc: PcCounter::default(),
        }
    }

    /// The limit's word.
    pub(crate) fn raw(&self) -> &AtomicU64 {
        self.map.word_at(SLOT_OFFSET)
    }
}

/// The subjects of the gauge `set` groups. Two shmetrics modes cover every gauge write
/// path: `mostrecent` and `livemostrecent` also record the write time
/// (`GaugeMode::needs_timestamp`), every other mode (`all`, `liveall`, `min`, `max`, `sum`
/// and their `live` variants) only stores the value, as `livesum`.
pub(crate) struct Gauges {
    _dir: tempfile::TempDir,
    _registry: Registry,
    map: MappedWords,
    pub(crate) mostrecent: shmetrics_writer::Gauge,
    pub(crate) livesum: shmetrics_writer::Gauge,
    pub(crate) tikv: prometheus::Gauge,
    pub(crate) pc: PcGauge<f64, AtomicU64>,
    pub(crate) metrics: metrics::Gauge,
}

/// Name of the value-only gauge in every library (the `metrics` one is read back by name).
pub(crate) const GAUGE: &str = "bench_in_flight";

impl Gauges {
    pub(crate) fn new() -> Self {
        let (dir, registry) = registry();
        let gauge = |name: &str, mode| {
            registry
                .gauge(name, "A gauge.", &[], mode)
                .expect("register the gauge")
                .unlabelled()
                .expect("resolve the child")
                .clone()
        };
        let mostrecent = gauge("bench_kv_usage", GaugeMode::MostRecent);
        let livesum = gauge(GAUGE, GaugeMode::LiveSum);
        metrics_handle();
        Self {
            _dir: dir,
            _registry: registry,
            map: mapped(),
            mostrecent,
            livesum,
            tikv: prometheus::Gauge::new(GAUGE, "In flight.").unwrap(),
            pc: PcGauge::default(),
            metrics: metrics::gauge!(GAUGE),
        }
    }

    /// The limit's word.
    pub(crate) fn raw(&self) -> &AtomicU64 {
        self.map.word_at(SLOT_OFFSET)
    }
}

/// The subjects of the histogram groups, 20 bounds each.
/// Stripes of the striped counter and histogram subjects: one per thread of a small pool.
pub(crate) const STRIPES: usize = 4;

pub(crate) struct Histograms {
    _dir: tempfile::TempDir,
    _registry: Registry,
    map: MappedWords,
    pub(crate) shmetrics: shmetrics_writer::Histogram,
    /// The same histogram registered with [`STRIPES`] stripes (`Registry::histogram_striped`).
    pub(crate) striped: shmetrics_writer::Histogram,
    /// The same histogram in a registry that never spreads a series ([`one_copy_registry`]).
    #[allow(dead_code, reason = "only the two-thread benches write it")]
    pub(crate) one_copy: shmetrics_writer::Histogram,
    _one_copy: (tempfile::TempDir, Registry),
    pub(crate) tikv: prometheus::Histogram,
    pub(crate) pc: PcHistogram,
    pub(crate) metrics: metrics::Histogram,
}

impl Histograms {
    pub(crate) fn new() -> Self {
        let (dir, registry) = registry();
        let shmetrics = registry
            .histogram(METRICS_HISTOGRAM, "Latency.", &[], &BOUNDS_20)
            .expect("register the histogram")
            .unlabelled()
            .expect("resolve the child")
            .clone();
        assert_eq!(shmetrics.bounds(), &BOUNDS_20[..]);
        let striped = registry
            .histogram_striped("striped_seconds", "Latency.", &[], &BOUNDS_20, STRIPES)
            .expect("register the striped histogram")
            .unlabelled()
            .expect("resolve the child")
            .clone();
        let (one_copy_dir, one_copy_registry) = one_copy_registry();
        let one_copy = one_copy_registry
            .histogram(METRICS_HISTOGRAM, "Latency.", &[], &BOUNDS_20)
            .expect("register the histogram")
            .unlabelled()
            .expect("resolve the child")
            .clone();
        let tikv = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(METRICS_HISTOGRAM, "Latency.")
                .buckets(BOUNDS_20.to_vec()),
        )
        .unwrap();
        metrics_handle();
        Self {
            _dir: dir,
            _registry: registry,
            map: mapped(),
            shmetrics,
            striped,
            one_copy,
            _one_copy: (one_copy_dir, one_copy_registry),
            tikv,
            pc: PcHistogram::new(BOUNDS_20),
            metrics: metrics::histogram!(METRICS_HISTOGRAM),
        }
    }

    /// The limit's sum word and 21 bucket words.
    pub(crate) fn raw(&self) -> (&AtomicU64, &[AtomicU64]) {
        let words = self.map.words();
        let first = SLOT_OFFSET / 8;
        (
            &words[first],
            &words[first + 1..first + 1 + BOUNDS_20.len() + 1],
        )
    }
}
