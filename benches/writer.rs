//! The writer's hot paths against the physical limit and the Rust peers (targets in docs/performance.md).
//!
//! Each criterion group runs one operation in shmetrics (`shmetrics*`), its physical limit
//! on a mapped file (`raw_*`) and the same operation in the tikv `prometheus` crate
//! (`tikv*`), the official `prometheus-client` crate (`prometheus_client`) and the
//! `metrics` facade (`metrics`), so every ratio `run-writer.sh` prints comes from one run:
//! - `counter_inc`: `Counter::inc` on a resolved handle;
//! - `counter_inc_by_f64`: `Counter::inc_by(0.5)`, the float path (`metrics` has no float
//!   counters);
//! - `gauge_set`: `Gauge::set` in a timestamped and an untimestamped mode;
//! - `histogram_observe_20` and `histogram_observe_20_fixed`: `Histogram::observe` with 20
//!   bounds, over a pseudo-random cycle of values and with one fixed value;
//! - `labels_lookup_2` and `labels_lookup_4`: a child lookup by 2 or 4 label values among
//!   100 children, then `inc` (`metrics` looks the series up on every macro call);
//! - `child_create`: first-time creation of a child by 2 new label values, then `inc`;
//! - `counter_inc_2t`, `labels_lookup_2_2t` and `labels_lookup_4_2t`: `counter_inc` and
//!   the lookups with two threads hammering the same handle or label values at once (time
//!   per operation of one thread).
//!
//! The `metrics` facade runs on `metrics-exporter-prometheus`'s recorder, installed
//! globally, the recorder a user exposing Prometheus through `metrics` runs.

mod peers;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Bencher, Criterion, Throughput, criterion_group, criterion_main};
use metrics_exporter_prometheus::PrometheusBuilder;
use peers::{
    FloatCounters, GAUGE, Gauges, Histograms, Labels2, Labels4, METRICS_HISTOGRAM, SLOT_OFFSET,
    drained, mapped, metrics_create, metrics_handle, metrics_sample, registry,
};
use prometheus::core::Collector;
use prometheus_client::metrics::counter::Counter as PcCounter;
use prometheus_client::metrics::family::Family as PcFamily;
use shmetrics_benches::{
    BOUNDS_20, CYCLE_LEN, FIXED_OBSERVATION, distinct_label_values, filtered, label_sets_2,
    label_sets_4, observation_cycle, on_two_threads, raw_f64_add, raw_fetch_add,
    raw_histogram_observe, raw_store_f64,
};

/// Children created per fresh registry (or peer family) in `child_create`: bounds the
/// memory and segment space one registry takes.
const CREATE_BATCH: usize = 4096;

fn counter_inc(c: &mut Criterion) {
    let (_dir, registry) = registry();
    let counter = registry
        .counter("bench_requests_total", "Requests.", &[])
        .expect("register the counter")
        .unlabelled()
        .expect("resolve the child")
        .clone();
    let map = mapped();
    let word = map.word_at(SLOT_OFFSET);
    let tikv_int = prometheus::IntCounter::new("bench_requests_total", "Requests.").unwrap();
    let tikv_f64 = prometheus::Counter::new("bench_requests_total", "Requests.").unwrap();
    let pc = PcCounter::<u64>::default();
    metrics_handle();
    let metrics_counter = metrics::counter!("bench_requests_total");

    let mut group = c.benchmark_group("counter_inc");
    group.throughput(Throughput::Elements(1));
    group.bench_function("shmetrics", |b| b.iter(|| black_box(&counter).inc()));
    group.bench_function("raw_fetch_add", |b| {
        b.iter(|| raw_fetch_add(black_box(word)))
    });
    group.bench_function("tikv_int_counter", |b| {
        b.iter(|| black_box(&tikv_int).inc())
    });
    group.bench_function("tikv_counter_f64", |b| {
        b.iter(|| black_box(&tikv_f64).inc())
    });
    group.bench_function("prometheus_client", |b| b.iter(|| black_box(&pc).inc()));
    group.bench_function("metrics", |b| {
        b.iter(|| black_box(&metrics_counter).increment(1))
    });
    group.finish();

    if !filtered() {
        assert!(counter.get() >= 1.0, "the counter bench never incremented");
        assert!(tikv_int.get() >= 1 && tikv_f64.get() >= 1.0 && pc.get() >= 1);
        assert!(metrics_sample("bench_requests_total", "").is_some_and(|v| v >= 1.0));
    }
}

fn counter_inc_by_f64(c: &mut Criterion) {
    let subjects = FloatCounters::new();
    let FloatCounters {
        shmetrics: counter,
        striped,
        tikv,
        pc,
        ..
    } = &subjects;
    let word = subjects.raw();

    let mut group = c.benchmark_group("counter_inc_by_f64");
    group.throughput(Throughput::Elements(1));
    group.bench_function("shmetrics", |b| {
        b.iter(|| black_box(&counter).inc_by(black_box(0.5)))
    });
    group.bench_function("shmetrics_striped", |b| {
        b.iter(|| black_box(&striped).inc_by(black_box(0.5)))
    });
    group.bench_function("raw_f64_cas", |b| {
        b.iter(|| raw_f64_add(black_box(word), black_box(0.5)))
    });
    group.bench_function("tikv_counter_f64", |b| {
        b.iter(|| black_box(&tikv).inc_by(black_box(0.5)))
    });
    group.bench_function("prometheus_client", |b| {
        b.iter(|| black_box(&pc).inc_by(black_box(0.5)))
    });
    group.finish();

    if !filtered() {
        // Sums of halves are exact in f64 at these magnitudes: each count is a whole number of
        // halves, and at least one.
        for v in [counter.get(), tikv.get(), pc.get()] {
            assert!(v >= 0.5 && (v * 2.0).fract() == 0.0, "{v}");
        }
    }
}

fn gauge_set(c: &mut Criterion) {
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

    let mut group = c.benchmark_group("gauge_set");
    group.throughput(Throughput::Elements(1));
    group.bench_function("shmetrics_mostrecent", |b| {
        b.iter(|| black_box(&timestamped).set(black_box(42.5)))
    });
    group.bench_function("shmetrics_livesum", |b| {
        b.iter(|| black_box(&untimestamped).set(black_box(42.5)))
    });
    group.bench_function("raw_store", |b| {
        b.iter(|| raw_store_f64(black_box(word), black_box(42.5)))
    });
    group.bench_function("tikv", |b| b.iter(|| black_box(&tikv).set(black_box(42.5))));
    group.bench_function("prometheus_client", |b| {
        b.iter(|| black_box(&pc).set(black_box(42.5)))
    });
    group.bench_function("metrics", |b| {
        b.iter(|| black_box(&metrics_gauge).set(black_box(42.5)))
    });
    group.finish();

    if !filtered() {
        assert_eq!(timestamped.get(), 42.5);
        assert_eq!(untimestamped.get(), 42.5);
        assert_eq!(tikv.get(), 42.5);
        assert_eq!(pc.get(), 42.5);
        assert_eq!(metrics_sample(GAUGE, ""), Some(42.5));
    }
}

/// Runs one histogram group on `h`: every peer observes `value(i)` for i = 0, 1, 2, ...
fn bench_histograms(
    h: &Histograms,
    c: &mut Criterion,
    group_name: &str,
    value: impl Fn(usize) -> f64 + Copy,
) {
    let (sum, buckets) = h.raw();
    // Runtime bounds, as the histogram's are (it keeps them behind an `Arc`).
    let bounds: Vec<f64> = BOUNDS_20.to_vec();
    let mut group = c.benchmark_group(group_name);
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    let mut next = move || {
        let v = value(i);
        i = i.wrapping_add(1);
        black_box(v)
    };
    group.bench_function("shmetrics", |b| {
        b.iter(|| black_box(&h.shmetrics).observe(next()))
    });
    group.bench_function("shmetrics_striped", |b| {
        b.iter(|| black_box(&h.striped).observe(next()))
    });
    group.bench_function("raw_histogram", |b| {
        b.iter(|| raw_histogram_observe(black_box(&bounds), black_box(buckets), sum, next()))
    });
    group.bench_function("tikv", |b| b.iter(|| black_box(&h.tikv).observe(next())));
    group.bench_function("prometheus_client", |b| {
        b.iter(|| black_box(&h.pc).observe(next()))
    });
    // Drained between timed rounds (see `drained`).
    group.bench_function("metrics", |b| {
        b.iter_custom(|iters| {
            drained(iters, |n| {
                let start = Instant::now();
                for _ in 0..n {
                    black_box(&h.metrics).record(next());
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

fn histogram_observe_20(c: &mut Criterion) {
    let histograms = Histograms::new();
    let values = observation_cycle(&BOUNDS_20, CYCLE_LEN);
    bench_histograms(&histograms, c, "histogram_observe_20", |i| {
        values[i & (CYCLE_LEN - 1)]
    });
    bench_histograms(&histograms, c, "histogram_observe_20_fixed", |_| {
        FIXED_OBSERVATION
    });

    if !filtered() {
        let tikv_count = histograms.tikv.get_sample_count();
        assert!(tikv_count >= 2 && histograms.pc.count() >= 2);
        let raw_count = {
            let (_, buckets) = histograms.raw();
            buckets
                .iter()
                .map(|w| w.load(std::sync::atomic::Ordering::Relaxed))
                .sum::<u64>()
        };
        assert!(raw_count >= 2, "the raw histogram bench never observed");
        let count = metrics_sample(&format!("{METRICS_HISTOGRAM}_count"), "");
        assert!(count.is_some_and(|n| n >= 2.0), "{count:?}");
    }
}

/// A write with an exemplar beside the same write without one, on the same series: a
/// counter's `inc_by` and a 20-bucket histogram's `observe` (a W3C trace id as the label,
/// as tracing integrations attach them).
fn exemplar_write(c: &mut Criterion) {
    const TRACE: [(&str, &str); 1] = [("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736")];
    let (_dir, registry) = registry();
    let counter = (registry.counter("bench_exemplar_total", "Requests.", &[]))
        .expect("register the counter")
        .unlabelled()
        .expect("resolve the child")
        .clone();
    let histogram = (registry.histogram("bench_exemplar_seconds", "Latency.", &[], &BOUNDS_20))
        .expect("register the histogram")
        .unlabelled()
        .expect("resolve the child")
        .clone();
    let mut group = c.benchmark_group("exemplar_write");
    group.throughput(Throughput::Elements(1));
    group.bench_function("counter_inc_by", |b| {
        b.iter(|| black_box(&counter).inc_by(black_box(0.5)))
    });
    group.bench_function("counter_inc_by_with_exemplar", |b| {
        b.iter(|| black_box(&counter).inc_by_with_exemplar(black_box(0.5), black_box(&TRACE)))
    });
    group.bench_function("histogram_observe", |b| {
        b.iter(|| black_box(&histogram).observe(black_box(FIXED_OBSERVATION)))
    });
    group.bench_function("histogram_observe_with_exemplar", |b| {
        b.iter(|| black_box(&histogram).observe_with_exemplar(black_box(FIXED_OBSERVATION), &TRACE))
    });
    group.finish();
    if !filtered() {
        assert!(counter.get() >= 1.0 && histogram.get().buckets.iter().sum::<u64>() >= 2);
    }
}

/// Lookups among 100 children, pre-populated in every library, then the same lookups on
/// two threads.
fn labels_lookup_2(c: &mut Criterion) {
    let sets = label_sets_2();
    let (_dir, registry) = registry();
    let family = registry
        .counter("bench_tokens_total", "Tokens.", &["model", "rank"])
        .expect("register the family");
    let tikv = prometheus::IntCounterVec::new(
        prometheus::Opts::new("bench_tokens_total", "Tokens."),
        &["model", "rank"],
    )
    .unwrap();
    let pc = PcFamily::<Labels2, PcCounter>::default();
    metrics_handle();
    // `metrics` label values are `&'static str` here, its cheapest case (no allocation per
    // value); real code with runtime values clones a `String` per label per call.
    let leaked: Vec<[&'static str; 2]> = sets
        .iter()
        .map(|s| s.clone().map(|v| &*Box::leak(v.into_boxed_str())))
        .collect();
    for (set, [model, rank]) in sets.iter().zip(&leaked) {
        family.labels(set).expect("create a child");
        tikv.with_label_values(set);
        drop(pc.get_or_create(&Labels2::new(set)));
        metrics::counter!("bench_lookup2_total", "model" => *model, "rank" => *rank).increment(0);
    }
    assert_eq!(family.children().len(), 100);
    assert_eq!(pc.len(), 100);
    let lookup: [&str; 2] = ["model-a", "0"];
    let pc_lookup = Labels2::new(&sets[0]);
    let [model, rank] = leaked[0];
    let map = mapped();
    let word = map.word_at(SLOT_OFFSET);

    let mut group = c.benchmark_group("labels_lookup_2");
    group.throughput(Throughput::Elements(1));
    group.bench_function("shmetrics", |b| {
        b.iter(|| {
            family
                .labels(black_box(&lookup))
                .expect("the child exists")
                .inc();
        })
    });
    group.bench_function("raw_fetch_add", |b| {
        b.iter(|| raw_fetch_add(black_box(word)))
    });
    group.bench_function("tikv", |b| {
        b.iter(|| tikv.with_label_values(black_box(&lookup)).inc())
    });
    group.bench_function("prometheus_client", |b| {
        b.iter(|| pc.get_or_create(black_box(&pc_lookup)).inc())
    });
    group.bench_function("metrics", |b| {
        b.iter(|| {
            metrics::counter!("bench_lookup2_total", "model" => black_box(model), "rank" => black_box(rank))
                .increment(1);
        })
    });
    group.finish();

    if !filtered() {
        assert_eq!(family.children().len(), 100, "the lookup created a child");
        assert!(family.labels(&lookup).expect("the child exists").get() >= 1.0);
        assert!(tikv.with_label_values(&lookup).get() >= 1);
        assert!(pc.get_or_create(&pc_lookup).get() >= 1);
        let sample = metrics_sample("bench_lookup2_total", "{model=\"model-a\",rank=\"0\"}");
        assert!(sample.is_some_and(|v| v >= 1.0), "{sample:?}");
    }

    let peers: [Peer<'_>; 3] = [
        ("tikv", &|| tikv.with_label_values(black_box(&lookup)).inc()),
        ("prometheus_client", &|| {
            pc.get_or_create(black_box(&pc_lookup)).inc();
        }),
        ("metrics", &|| {
            metrics::counter!("bench_lookup2_total", "model" => black_box(model),
                "rank" => black_box(rank))
            .increment(1);
        }),
    ];
    labels_lookup_two_threads(c, "labels_lookup_2_2t", &family, &lookup, word, &peers);
}

/// A peer's operation for a two-thread group: its name and what one thread runs.
type Peer<'a> = (&'a str, &'a (dyn Fn() + Sync));

/// A labelled lookup (`lookup` among `family`'s children, then `inc`) with two threads
/// looking up the same label values at once, in the group `name`, beside the limit and
/// the `peers` doing the same.
fn labels_lookup_two_threads(
    c: &mut Criterion,
    name: &str,
    family: &shmetrics_writer::CounterFamily,
    lookup: &[&str],
    word: &shmetrics_layout::sync::AtomicU64,
    peers: &[Peer<'_>],
) {
    let before = family.labels(lookup).unwrap().get();
    let children = family.children().len();
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    group.bench_function("shmetrics", |b| {
        b.iter_custom(|iters| {
            on_two_threads(iters, || {
                family
                    .labels(black_box(lookup))
                    .expect("the child exists")
                    .inc();
            })
        })
    });
    group.bench_function("raw_fetch_add", |b| {
        b.iter_custom(|iters| on_two_threads(iters, || raw_fetch_add(black_box(word))))
    });
    for (peer, op) in peers {
        group.bench_function(*peer, |b| b.iter_custom(|iters| on_two_threads(iters, op)));
    }
    group.finish();
    if !filtered() {
        assert!(family.labels(lookup).unwrap().get() >= before + 2.0);
        assert_eq!(
            family.children().len(),
            children,
            "the lookup created a child"
        );
    }
}

fn labels_lookup_4(c: &mut Criterion) {
    let sets = label_sets_4();
    let names = ["model", "rank", "phase", "reason"];
    let (_dir, registry) = registry();
    let family = registry
        .counter("bench_requests_total", "Requests.", &names)
        .expect("register the family");
    let tikv = prometheus::IntCounterVec::new(
        prometheus::Opts::new("bench_requests_total", "Requests."),
        &names,
    )
    .unwrap();
    let pc_labels = |[model, rank, phase, reason]: &[String; 4]| Labels4 {
        model: model.clone(),
        rank: rank.clone(),
        phase: phase.clone(),
        reason: reason.clone(),
    };
    let pc = PcFamily::<Labels4, PcCounter>::default();
    metrics_handle();
    // As in `labels_lookup_2`: `&'static str` values, `metrics`' cheapest case.
    let leaked: Vec<[&'static str; 4]> = sets
        .iter()
        .map(|s| s.clone().map(|v| &*Box::leak(v.into_boxed_str())))
        .collect();
    for (set, [model, rank, phase, reason]) in sets.iter().zip(&leaked) {
        family.labels(set).expect("create a child");
        tikv.with_label_values(set);
        drop(pc.get_or_create(&pc_labels(set)));
        metrics::counter!("bench_lookup4_total", "model" => *model, "rank" => *rank,
            "phase" => *phase, "reason" => *reason)
        .increment(0);
    }
    assert_eq!(family.children().len(), 100);
    assert_eq!(pc.len(), 100);
    let lookup: [&str; 4] = ["model-a", "0", "prefill", "stop"];
    let pc_lookup = pc_labels(&sets[0]);
    let [model, rank, phase, reason] = leaked[0];
    let map = mapped();
    let word = map.word_at(SLOT_OFFSET);

    let mut group = c.benchmark_group("labels_lookup_4");
    group.throughput(Throughput::Elements(1));
    group.bench_function("shmetrics", |b| {
        b.iter(|| {
            family
                .labels(black_box(&lookup))
                .expect("the child exists")
                .inc();
        })
    });
    group.bench_function("raw_fetch_add", |b| {
        b.iter(|| raw_fetch_add(black_box(word)))
    });
    group.bench_function("tikv", |b| {
        b.iter(|| tikv.with_label_values(black_box(&lookup)).inc())
    });
    group.bench_function("prometheus_client", |b| {
        b.iter(|| pc.get_or_create(black_box(&pc_lookup)).inc())
    });
    group.bench_function("metrics", |b| {
        b.iter(|| {
            metrics::counter!("bench_lookup4_total", "model" => black_box(model),
                "rank" => black_box(rank), "phase" => black_box(phase),
                "reason" => black_box(reason))
            .increment(1);
        })
    });
    group.finish();

    if !filtered() {
        assert_eq!(family.children().len(), 100, "the lookup created a child");
        assert!(family.labels(&lookup).expect("the child exists").get() >= 1.0);
        assert!(tikv.with_label_values(&lookup).get() >= 1);
        assert!(pc.get_or_create(&pc_lookup).get() >= 1);
        let sample = metrics_sample(
            "bench_lookup4_total",
            "{model=\"model-a\",rank=\"0\",phase=\"prefill\",reason=\"stop\"}",
        );
        assert!(sample.is_some_and(|v| v >= 1.0), "{sample:?}");
    }

    let peers: [Peer<'_>; 3] = [
        ("tikv", &|| tikv.with_label_values(black_box(&lookup)).inc()),
        ("prometheus_client", &|| {
            pc.get_or_create(black_box(&pc_lookup)).inc();
        }),
        ("metrics", &|| {
            metrics::counter!("bench_lookup4_total", "model" => black_box(model),
                "rank" => black_box(rank), "phase" => black_box(phase),
                "reason" => black_box(reason))
            .increment(1);
        }),
    ];
    labels_lookup_two_threads(c, "labels_lookup_4_2t", &family, &lookup, word, &peers);
}

/// Times `create(values)` for `iters` new children, in batches of at most [`CREATE_BATCH`]
/// children made into a fresh family built by `fresh` (outside the timing, as is dropping
/// it), so that every child is new and memory stays bounded.
fn bench_creation<V, F>(
    b: &mut Bencher<'_>,
    values: &[V],
    fresh: impl Fn() -> F,
    create: impl Fn(&F, &V),
    check: impl Fn(&F, usize),
) {
    b.iter_custom(|iters| {
        let mut total = Duration::ZERO;
        let mut left = iters as usize;
        while left > 0 {
            let n = left.min(values.len());
            let family = fresh();
            let start = Instant::now();
            for v in &values[..n] {
                create(&family, black_box(v));
            }
            total += start.elapsed();
            check(&family, n);
            drop(family);
            left -= n;
        }
        total
    });
}

fn child_create(c: &mut Criterion) {
    let values = distinct_label_values(CREATE_BATCH);
    let pc_values: Vec<Labels2> = values.iter().map(Labels2::new).collect();
    let mut group = c.benchmark_group("child_create");
    group.throughput(Throughput::Elements(1));
    group.bench_function("shmetrics", |b| {
        bench_creation(
            b,
            &values,
            || {
                let (dir, registry) = registry();
                let family = registry
                    .counter("bench_created_total", "Created.", &["model", "rank"])
                    .expect("register the family");
                (dir, registry, family)
            },
            |(_, _, family), v| family.labels(v).expect("create a child").inc(),
            |(_, registry, family), n| {
                assert_eq!(family.children().len(), n);
                assert_eq!(registry.dropped_series(), 0);
            },
        )
    });
    group.bench_function("tikv", |b| {
        bench_creation(
            b,
            &values,
            || {
                prometheus::IntCounterVec::new(
                    prometheus::Opts::new("bench_created_total", "Created."),
                    &["model", "rank"],
                )
                .unwrap()
            },
            |vec, v| vec.with_label_values(v).inc(),
            |vec, n| assert_eq!(vec.collect()[0].get_metric().len(), n),
        )
    });
    // The same label values as keys; the family clones the key it inserts.
    group.bench_function("prometheus_client", |b| {
        bench_creation(
            b,
            &pc_values,
            PcFamily::<Labels2, PcCounter>::default,
            |family, key| {
                family.get_or_create(key).inc();
            },
            |family, n| assert_eq!(family.len(), n),
        )
    });
    // A fresh recorder per batch, used through the thread-local hook; runtime label values
    // are cloned into the key (the `metrics` API takes owned or `'static` strings).
    group.bench_function("metrics", |b| {
        bench_creation(
            b,
            &values,
            || PrometheusBuilder::new().build_recorder(),
            metrics_create,
            |recorder, n| {
                let text = recorder.handle().render();
                let series = text
                    .lines()
                    .filter(|l| l.starts_with("bench_created_total{"))
                    .count();
                assert_eq!(series, n);
            },
        )
    });
    group.finish();
}

/// `counter_inc` with two threads incrementing the same handle at once.
fn counter_inc_two_threads(c: &mut Criterion) {
    let (_dir, registry) = registry();
    let counter = registry
        .counter("bench_requests_total", "Requests.", &[])
        .expect("register the counter")
        .unlabelled()
        .expect("resolve the child")
        .clone();
    let map = mapped();
    let word = map.word_at(SLOT_OFFSET);
    let tikv = prometheus::IntCounter::new("bench_requests_total", "Requests.").unwrap();
    let pc = PcCounter::<u64>::default();
    metrics_handle();
    let metrics_counter = metrics::counter!("bench_requests_2t_total");

    let mut group = c.benchmark_group("counter_inc_2t");
    group.throughput(Throughput::Elements(1));
    group.bench_function("shmetrics", |b| {
        b.iter_custom(|iters| on_two_threads(iters, || black_box(&counter).inc()))
    });
    group.bench_function("raw_fetch_add", |b| {
        b.iter_custom(|iters| on_two_threads(iters, || raw_fetch_add(black_box(word))))
    });
    group.bench_function("tikv_int_counter", |b| {
        b.iter_custom(|iters| on_two_threads(iters, || black_box(&tikv).inc()))
    });
    group.bench_function("prometheus_client", |b| {
        b.iter_custom(|iters| {
            on_two_threads(iters, || {
                black_box(&pc).inc();
            })
        })
    });
    group.bench_function("metrics", |b| {
        b.iter_custom(|iters| on_two_threads(iters, || black_box(&metrics_counter).increment(1)))
    });
    group.finish();

    if !filtered() {
        // Each run adds 2 × iters: the totals are even and at least 2.
        let shmetrics = counter.get() as u64;
        let raw = word.load(std::sync::atomic::Ordering::Relaxed);
        let metrics = metrics_sample("bench_requests_2t_total", "").expect("a sample") as u64;
        for n in [shmetrics, raw, tikv.get(), pc.get(), metrics] {
            assert!(n >= 2 && n % 2 == 0, "{n}");
        }
    }
}

criterion_group! {
    name = benches;
    // Short enough for the whole file (49 benchmarks) to finish in about four minutes on
    // two cores; command-line options (`--measurement-time`, ...) override these, as
    // `run-writer.sh --quick` does.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = counter_inc, counter_inc_by_f64, gauge_set, histogram_observe_20,
        labels_lookup_2, labels_lookup_4, child_create, counter_inc_two_threads, exemplar_write
}
criterion_main!(benches);
