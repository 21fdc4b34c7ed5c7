//! The `metrics` facade path: what a counter increment and a histogram record cost through
//! `shmetrics-metrics`' recorder, beside the `metrics` crate's own recorders, in one run.
//!
//! Each group runs the same operation through:
//! - `shmetrics_facade`: a `ShmetricsRecorder` (segment in a temporary directory);
//! - `shmetrics_direct`: the resolved `shmetrics_writer` handle behind it (the reference:
//!   what the facade adds is the `metrics` handle's dynamic dispatch);
//! - `metrics_exporter_prometheus`: `metrics-exporter-prometheus`'s recorder, the one a
//!   user exposing Prometheus through `metrics` runs (built, not installed: no listener);
//! - `metrics_noop`: `metrics::NoopRecorder`, the facade's floor (a no-op handle).
//!
//! Groups: `facade_counter_increment` and `facade_histogram_record` on handles kept by the
//! caller (`let c = counter!(..)` once, then `c.increment(1)`); `facade_counter_macro` and
//! `facade_histogram_macro` call the macro with two labels every time (the recorder's key
//! lookup included), as inline instrumentation does. Histograms have the 20 bounds of the
//! writer benches and observe the same pseudo-random cycle of values.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use metrics::{NoopRecorder, Recorder, counter, histogram, with_local_recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};
use shmetrics_benches::{BOUNDS_20, CYCLE_LEN, filtered, observation_cycle};
use shmetrics_metrics::ShmetricsRecorder;

const COUNTER: &str = "bench_facade_requests_total";
const HISTOGRAM: &str = "bench_facade_latency_seconds";
/// Observations recorded between two upkeeps of the exporter's recorder, which keeps every
/// observation until a scrape or upkeep folds it into buckets.
const DRAIN_EVERY: u64 = 1 << 20;

struct Recorders {
    _dir: tempfile::TempDir,
    shmetrics: ShmetricsRecorder,
    exporter: PrometheusRecorder,
    noop: NoopRecorder,
}

impl Recorders {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("create a temporary metrics directory");
        let shmetrics = ShmetricsRecorder::builder()
            .buckets_for_metric(HISTOGRAM, &BOUNDS_20)
            .open(dir.path())
            .expect("open the shmetrics recorder");
        let exporter = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(HISTOGRAM.to_owned()), &BOUNDS_20)
            .expect("valid buckets")
            .build_recorder();
        Self {
            _dir: dir,
            shmetrics,
            exporter,
            noop: NoopRecorder,
        }
    }

    /// The recorders under their bench names (the exporter's needs upkeep).
    fn facades(&self) -> [(&'static str, &dyn Recorder, bool); 3] {
        [
            ("shmetrics_facade", &self.shmetrics, false),
            ("metrics_exporter_prometheus", &self.exporter, true),
            ("metrics_noop", &self.noop, false),
        ]
    }

    /// The shmetrics writer's own handles behind the facade's series.
    fn direct_counter(&self) -> shmetrics_writer::Counter {
        self.shmetrics
            .registry()
            .counter(
                COUNTER,
                COUNTER.strip_suffix("_total").unwrap(),
                &["model", "rank"],
            )
            .expect("the facade registered this family")
            .labels(&["llama", "0"])
            .expect("resolve the child")
            .clone()
    }

    fn direct_histogram(&self) -> shmetrics_writer::Histogram {
        self.shmetrics
            .registry()
            .histogram(HISTOGRAM, HISTOGRAM, &["model", "rank"], &BOUNDS_20)
            .expect("the facade registered this family")
            .labels(&["llama", "0"])
            .expect("resolve the child")
            .clone()
    }

    /// The exporter's value of a sample line (after upkeep).
    fn exporter_sample(&self, line_prefix: &str) -> Option<f64> {
        let handle = self.exporter.handle();
        handle.run_upkeep();
        handle
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(line_prefix))
            .map(|v| v.trim().parse().expect("a sample value"))
    }
}

/// Times `iters` runs of `op`, with `upkeep` between batches of [`DRAIN_EVERY`] (outside
/// the timing).
fn timed(iters: u64, mut op: impl FnMut(), upkeep: impl Fn()) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = (iters - done).min(DRAIN_EVERY);
        let start = Instant::now();
        for _ in 0..n {
            op();
        }
        total += start.elapsed();
        upkeep();
        done += n;
    }
    total
}

fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    group
}

fn counters(c: &mut Criterion) {
    let recorders = Recorders::new();
    let mut held = group(c, "facade_counter_increment");
    for (name, recorder, _) in recorders.facades() {
        let handle = with_local_recorder(
            recorder,
            || counter!(COUNTER, "model" => "llama", "rank" => "0"),
        );
        held.bench_function(name, |b| b.iter(|| black_box(&handle).increment(1)));
    }
    let direct = recorders.direct_counter();
    held.bench_function("shmetrics_direct", |b| b.iter(|| black_box(&direct).inc()));
    held.finish();

    let mut inline = group(c, "facade_counter_macro");
    for (name, recorder, _) in recorders.facades() {
        inline.bench_function(name, |b| {
            with_local_recorder(recorder, || {
                b.iter(|| counter!(COUNTER, "model" => "llama", "rank" => "0").increment(1))
            })
        });
    }
    inline.finish();

    if !filtered() {
        // At least one run each of the held, direct and macro benches (test mode runs one).
        assert!(
            direct.get() >= 3.0,
            "the shmetrics benches did not all count"
        );
        let exported =
            recorders.exporter_sample(&format!("{COUNTER}{{model=\"llama\",rank=\"0\"}} "));
        assert!(exported.is_some_and(|v| v >= 2.0), "{exported:?}");
    }
}

fn histograms(c: &mut Criterion) {
    let recorders = Recorders::new();
    let values = observation_cycle(&BOUNDS_20, CYCLE_LEN);
    let mut i = 0usize;
    let mut next = move || {
        i = i.wrapping_add(1);
        black_box(values[i & (CYCLE_LEN - 1)])
    };
    let upkeep = || recorders.exporter.handle().run_upkeep();
    let none = || {};

    let mut held = group(c, "facade_histogram_record");
    for (name, recorder, needs_upkeep) in recorders.facades() {
        let handle = with_local_recorder(
            recorder,
            || histogram!(HISTOGRAM, "model" => "llama", "rank" => "0"),
        );
        held.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let op = || black_box(&handle).record(next());
                if needs_upkeep {
                    timed(iters, op, upkeep)
                } else {
                    timed(iters, op, none)
                }
            })
        });
    }
    let direct = recorders.direct_histogram();
    held.bench_function("shmetrics_direct", |b| {
        b.iter(|| black_box(&direct).observe(next()))
    });
    held.finish();

    let mut inline = group(c, "facade_histogram_macro");
    for (name, recorder, needs_upkeep) in recorders.facades() {
        inline.bench_function(name, |b| {
            with_local_recorder(recorder, || {
                b.iter_custom(|iters| {
                    let op =
                        || histogram!(HISTOGRAM, "model" => "llama", "rank" => "0").record(next());
                    if needs_upkeep {
                        timed(iters, op, upkeep)
                    } else {
                        timed(iters, op, none)
                    }
                })
            })
        });
    }
    inline.finish();

    if !filtered() {
        let buckets = direct.get().buckets;
        assert!(
            buckets.iter().sum::<u64>() >= 3,
            "the shmetrics benches did not all observe"
        );
        let exported =
            recorders.exporter_sample(&format!("{HISTOGRAM}_count{{model=\"llama\",rank=\"0\"}} "));
        assert!(exported.is_some_and(|v| v >= 2.0), "{exported:?}");
    }
}

criterion_group!(benches, counters, histograms);
criterion_main!(benches);
