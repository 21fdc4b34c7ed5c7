//! The writer's hot paths against the physical limit (DESIGN.md §5).
//!
//! Each group runs a shmetrics operation (`shmetrics`) beside its baseline on a mapped
//! file, so one report shows both and `run-writer.sh` can print their ratio:
//! - `counter_inc`: `Counter::inc` on a resolved handle vs `raw_fetch_add`;
//! - `histogram_observe_20`: `Histogram::observe` with 20 bounds vs `raw_histogram` (the
//!   same bucket search, a bucket `fetch_add` and an f64 CAS-add on the sum);
//! - `labels_lookup_2`: `family.labels(&["model-a", "0"])` among 100 children, then `inc`,
//!   vs `raw_fetch_add`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shmetrics_benches::{
    BOUNDS_20, CYCLE_LEN, MappedWords, observation_cycle, raw_fetch_add, raw_histogram_observe,
};
use shmetrics_writer::Registry;

/// Bytes mapped for the baselines: a small segment's worth.
const MAP_LEN: usize = 64 * 1024;
/// Where the baselines' words sit: 8-aligned, away from the start of the file (as the
/// writer's value slots are).
const SLOT_OFFSET: usize = 32 * 1024;

/// A fresh registry in its own temporary directory (kept alive alongside it).
fn registry() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().expect("create a temporary metrics directory");
    let registry = Registry::open(dir.path()).expect("open a registry");
    (dir, registry)
}

fn mapped() -> MappedWords {
    MappedWords::new(MAP_LEN).expect("map a temporary file")
}

fn counter_inc(c: &mut Criterion) {
    let (_dir, registry) = registry();
    let counter = registry
        .counter("bench_requests_total", "Requests.", &[])
        .expect("register the counter")
        .labels::<&str>(&[])
        .expect("resolve the child")
        .clone();
    let map = mapped();
    let word = map.word_at(SLOT_OFFSET);

    let mut group = c.benchmark_group("counter_inc");
    group.throughput(Throughput::Elements(1));
    group.bench_function("shmetrics", |b| b.iter(|| black_box(&counter).inc()));
    group.bench_function("raw_fetch_add", |b| {
        b.iter(|| raw_fetch_add(black_box(word)))
    });
    group.finish();

    assert!(counter.get() >= 1.0, "the counter bench never incremented");
}

fn histogram_observe_20(c: &mut Criterion) {
    let (_dir, registry) = registry();
    let histogram = registry
        .histogram("bench_latency_seconds", "Latency.", &[], &BOUNDS_20)
        .expect("register the histogram")
        .labels::<&str>(&[])
        .expect("resolve the child")
        .clone();
    assert_eq!(histogram.bounds(), &BOUNDS_20[..]);
    let map = mapped();
    let words = map.words();
    let first = SLOT_OFFSET / 8;
    let sum = &words[first];
    let buckets = &words[first + 1..first + 1 + BOUNDS_20.len() + 1];
    let values = observation_cycle(&BOUNDS_20, CYCLE_LEN);
    // Runtime bounds, as the histogram's are (it keeps them behind an `Arc`).
    let bounds: Vec<f64> = BOUNDS_20.to_vec();

    let mut group = c.benchmark_group("histogram_observe_20");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    group.bench_function("shmetrics", |b| {
        b.iter(|| {
            let v = values[i & (CYCLE_LEN - 1)];
            i = i.wrapping_add(1);
            black_box(&histogram).observe(black_box(v));
        })
    });
    let mut i = 0usize;
    group.bench_function("raw_histogram", |b| {
        b.iter(|| {
            let v = values[i & (CYCLE_LEN - 1)];
            i = i.wrapping_add(1);
            raw_histogram_observe(black_box(&bounds), black_box(buckets), sum, black_box(v));
        })
    });
    group.finish();
}

fn labels_lookup_2(c: &mut Criterion) {
    let (_dir, registry) = registry();
    let family = registry
        .counter("bench_tokens_total", "Tokens.", &["model", "rank"])
        .expect("register the family");
    for model in 'a'..='j' {
        for rank in 0..10 {
            family
                .labels(&[format!("model-{model}"), rank.to_string()])
                .expect("create a child");
        }
    }
    assert_eq!(family.children().len(), 100);
    let lookup: [&str; 2] = ["model-a", "0"];
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
    group.finish();

    assert_eq!(family.children().len(), 100, "the lookup created a child");
    assert!(family.labels(&lookup).expect("the child exists").get() >= 1.0);
}

criterion_group! {
    name = benches;
    // Short enough for the whole file to finish in well under two minutes on two cores;
    // command-line options (`--measurement-time`, ...) still override these.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = counter_inc, histogram_observe_20, labels_lookup_2
}
criterion_main!(benches);
