//! The writer operations of `benches/writer.rs` that it times on one thread only, on two
//! threads at once: each group runs the same operation on the same handle (or family) from
//! two threads, beside the physical limit and the same operation in the tikv `prometheus`,
//! `prometheus-client` and `metrics` crates on two threads (`metrics` has no f64 counter).
//! Time per operation of one thread while the other does the same (`on_two_threads`).
//!
//! - `counter_inc_by_f64_2t`: `inc_by(0.5)`; limit: an f64 CAS loop on a mapped word;
//!   `shmetrics_striped`: the counter with 4 stripes.
//! - `gauge_set_2t`: `set` in a `mostrecent` mode (value and write time) and in the others
//!   (`livesum`: the value only); limit: a store to a mapped word.
//! - `histogram_observe_20_2t`: `observe` over the benches' cycle of values; limit: linear
//!   search + `fetch_add` + f64 CAS; `shmetrics_striped`: the histogram with 4 stripes.
//! - `child_create_2t`: two threads creating distinct children of one family (each thread
//!   its own half of the label sets), against the peers doing the same.
//!
//! `counter_inc_2t`, `labels_lookup_2_2t` and `labels_lookup_4_2t` are in `benches/writer.rs`.

#[allow(dead_code)]
mod peers;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use metrics_exporter_prometheus::PrometheusBuilder;
use peers::{FloatCounters, Gauges, Histograms, Labels2, drained, metrics_create, registry};
use prometheus_client::metrics::counter::Counter as PcCounter;
use prometheus_client::metrics::family::Family as PcFamily;
use shmetrics_benches::{
    BOUNDS_20, CYCLE_LEN, distinct_label_values, filtered, observation_cycle,
    observe_on_two_threads, on_two_threads, raw_f64_add, raw_histogram_observe, raw_store_f64,
    two_threads,
};

/// Children each thread creates per fresh family in `child_create_2t`.
const CREATE_BATCH: usize = 2048;

fn counter_inc_by_f64_2t(c: &mut Criterion) {
    let subjects = FloatCounters::new();
    let FloatCounters {
        shmetrics: counter,
        striped,
        tikv,
        pc,
        ..
    } = &subjects;
    let word = subjects.raw();
    let mut group = c.benchmark_group("counter_inc_by_f64_2t");
    group.throughput(Throughput::Elements(1));
    group.bench_function("shmetrics", |b| {
        b.iter_custom(|iters| on_two_threads(iters, || counter.inc_by(black_box(0.5))))
    });
    group.bench_function("shmetrics_striped", |b| {
        b.iter_custom(|iters| on_two_threads(iters, || striped.inc_by(black_box(0.5))))
    });
    group.bench_function("raw_f64_cas", |b| {
        b.iter_custom(|iters| on_two_threads(iters, || raw_f64_add(word, black_box(0.5))))
    });
    group.bench_function("tikv_counter_f64", |b| {
        b.iter_custom(|iters| on_two_threads(iters, || tikv.inc_by(black_box(0.5))))
    });
    group.bench_function("prometheus_client", |b| {
        b.iter_custom(|iters| {
            on_two_threads(iters, || {
                pc.inc_by(black_box(0.5));
            })
        })
    });
    group.finish();
    // Halves from two threads: a whole number of halves, none lost. (`metrics` has no f64
    // counter.)
    for v in [counter.get(), tikv.get(), pc.get()] {
        assert!((v * 2.0).fract() == 0.0, "{v}");
    }
}

fn gauge_set_2t(c: &mut Criterion) {
    let subjects = Gauges::new();
    let Gauges {
        mostrecent: timestamped,
        livesum: untimestamped,
        tikv,
        pc,
        metrics: metrics_gauge,
        ..
    } = &subjects;
    let word = subjects.raw();
    let mut group = c.benchmark_group("gauge_set_2t");
    group.throughput(Throughput::Elements(1));
    group.bench_function("shmetrics_mostrecent", |b| {
        b.iter_custom(|iters| on_two_threads(iters, || timestamped.set(black_box(42.5))))
    });
    group.bench_function("shmetrics_livesum", |b| {
        b.iter_custom(|iters| on_two_threads(iters, || untimestamped.set(black_box(42.5))))
    });
    group.bench_function("raw_store", |b| {
        b.iter_custom(|iters| on_two_threads(iters, || raw_store_f64(word, black_box(42.5))))
    });
    group.bench_function("tikv", |b| {
        b.iter_custom(|iters| on_two_threads(iters, || tikv.set(black_box(42.5))))
    });
    group.bench_function("prometheus_client", |b| {
        b.iter_custom(|iters| {
            on_two_threads(iters, || {
                pc.set(black_box(42.5));
            })
        })
    });
    group.bench_function("metrics", |b| {
        b.iter_custom(|iters| on_two_threads(iters, || metrics_gauge.set(black_box(42.5))))
    });
    group.finish();
    if !filtered() {
        for v in [timestamped.get(), untimestamped.get(), tikv.get(), pc.get()] {
            assert_eq!(v, 42.5);
        }
    }
}

fn histogram_observe_20_2t(c: &mut Criterion) {
    let subjects = Histograms::new();
    let Histograms {
        shmetrics: histogram,
        striped,
        tikv,
        pc,
        metrics: metrics_histogram,
        ..
    } = &subjects;
    let (sum, buckets) = subjects.raw();
    let values = observation_cycle(&BOUNDS_20, CYCLE_LEN);
    let bounds = BOUNDS_20.to_vec();
    // Each thread walks the cycle from its own half (`observe_on_two_threads`): no index
    // shared between the threads, whose contended increment would be timed with every
    // subject.
    let values = &values[..];
    let mut group = c.benchmark_group("histogram_observe_20_2t");
    group.throughput(Throughput::Elements(1));
    group.bench_function("shmetrics", |b| {
        b.iter_custom(|iters| observe_on_two_threads(iters, values, |v| histogram.observe(v)))
    });
    group.bench_function("shmetrics_striped", |b| {
        b.iter_custom(|iters| observe_on_two_threads(iters, values, |v| striped.observe(v)))
    });
    group.bench_function("raw_histogram", |b| {
        b.iter_custom(|iters| {
            observe_on_two_threads(iters, values, |v| {
                raw_histogram_observe(&bounds, buckets, sum, v)
            })
        })
    });
    group.bench_function("tikv", |b| {
        b.iter_custom(|iters| observe_on_two_threads(iters, values, |v| tikv.observe(v)))
    });
    group.bench_function("prometheus_client", |b| {
        b.iter_custom(|iters| observe_on_two_threads(iters, values, |v| pc.observe(v)))
    });
    group.bench_function("metrics", |b| {
        b.iter_custom(|iters| {
            drained(iters, |n| {
                observe_on_two_threads(n, values, |v| metrics_histogram.record(v))
            })
        })
    });
    group.finish();
    if !filtered() {
        assert!(histogram.get().buckets.iter().sum::<u64>() >= 2);
    }
}

/// Two threads creating `CREATE_BATCH` distinct children each in fresh families built by
/// `fresh` (outside the timing): the slower thread's time per child.
fn create_on_two_threads<V: Sync, F: Sync>(
    iters: u64,
    values: &[V],
    fresh: impl Fn() -> F,
    create: impl Fn(&F, &V) + Sync,
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters as usize;
    while left > 0 {
        let n = left.min(CREATE_BATCH);
        let family = fresh();
        total += two_threads(|half| {
            for v in &values[half * CREATE_BATCH..half * CREATE_BATCH + n] {
                create(&family, black_box(v));
            }
        });
        left -= n;
    }
    total
}

fn child_create_2t(c: &mut Criterion) {
    let values = distinct_label_values(2 * CREATE_BATCH);
    let mut group = c.benchmark_group("child_create_2t");
    group.throughput(Throughput::Elements(1));
    group.bench_function("shmetrics", |b| {
        b.iter_custom(|iters| {
            create_on_two_threads(
                iters,
                &values,
                || {
                    let (dir, registry) = registry();
                    let family = registry
                        .counter("bench_created_total", "Created.", &["model", "rank"])
                        .expect("register the family");
                    (dir, registry, family)
                },
                |(_, _, family), v| family.labels(v).expect("create a child").inc(),
            )
        })
    });
    group.bench_function("tikv", |b| {
        b.iter_custom(|iters| {
            create_on_two_threads(
                iters,
                &values,
                || {
                    prometheus::IntCounterVec::new(
                        prometheus::Opts::new("bench_created_total", "Created."),
                        &["model", "rank"],
                    )
                    .unwrap()
                },
                |vec, v| vec.with_label_values(v).inc(),
            )
        })
    });
    // The same label values as keys, built beforehand; the family clones the key it inserts.
    let pc_values: Vec<Labels2> = values.iter().map(Labels2::new).collect();
    group.bench_function("prometheus_client", |b| {
        b.iter_custom(|iters| {
            create_on_two_threads(
                iters,
                &pc_values,
                PcFamily::<Labels2, PcCounter>::default,
                |family, key| {
                    family.get_or_create(key).inc();
                },
            )
        })
    });
    // A fresh recorder per batch, used by both threads through the thread-local hook.
    group.bench_function("metrics", |b| {
        b.iter_custom(|iters| {
            create_on_two_threads(
                iters,
                &values,
                || PrometheusBuilder::new().build_recorder(),
                metrics_create,
            )
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = counter_inc_by_f64_2t, gauge_set_2t, histogram_observe_20_2t, child_create_2t
}
criterion_main!(benches);
