//! The reader: scrape cost by processes × series, render against the Rust peers and the
//! physical limit, and vLLM's metric set (targets in docs/performance.md, "Targets").
//!
//! Every directory is written by simulated processes that stay alive (live, locked
//! segments) for the duration of their benches (`shmetrics_benches::fixtures`), and every
//! bench scrapes in the steady state: a first scrape parsed the metadata before timing.
//! Output is Prometheus text format into a reused `Vec<u8>`, with no filter.
//!
//! - `scrape/{P}x{S}`: `Reader::scrape` (snapshot + render) of `P` processes × `S` series
//!   of the `shmetrics generate` mix, P ∈ {1, 8, 32, 128}, S ∈ {100, 1,000, 10,000};
//!   throughput in series read (`P × S`).
//! - `scrape_2_threads/{P}x{S}`, `snapshot_only/{P}x{S}`, `render_only/{P}x{S}` and
//!   `limit/{P}x{S}` for 32×1,000, 128×1,000 and 128×10,000: the scrape with the live
//!   segments folded on two threads (`Reader::set_fold_threads(2)`; one thread above),
//!   `Reader::snapshot()` alone (throughput `P × S`), the render
//!   alone of one fixed snapshot (throughput `S`, the merged series), and the physical
//!   limit of a scrape: one relaxed load of every slot word of the directory's segments
//!   (`SlotAreas::read_all`) and the render of that fixed snapshot (throughput `P × S`).
//! - `render_10k/*`: 10,000 merged series (1 process × 10,000) rendered by shmetrics (text
//!   and OpenMetrics), by the `prometheus-client` crate (its OpenMetrics `text::encode` and
//!   its `prometheus_text::encode`) over a registry holding the same families, labels and
//!   values, by the tikv `prometheus` crate's `TextEncoder` over the same families as
//!   `proto::MetricFamily` values, and by `raw_formatting`: the same bytes as shmetrics'
//!   text output written with only `memcpy` of the pieces (name, suffix, label set, `le`)
//!   and `itoa`/`ryu` (`RawExposition::write`); `raw_cached_prefixes` copies each line's
//!   prefix whole from a table made in advance (the limit of a renderer that caches line
//!   prefixes across scrapes). Every output is checked to hold exactly the same samples
//!   before timing.
//! - `vllm/{N}`: a scrape of N ∈ {4, 16, 64} vLLM engines.
//! - `dead_processes/*`: a scrape of 4 live processes × 1,500 series alone (`none`), after
//!   500 processes of 30 series each wrote and died in the same directory (`500_dead`), and
//!   after those were compacted into the archive (`500_dead_compacted`).
//!
//! Directories of 100,000 series read or more are measured with criterion's minimum of 10
//! samples in flat sampling mode (a 128 × 10,000 scrape reads 1.28 M series); smaller ones
//! with 30 samples. `run-reader.sh` prints the table.

use shmetrics_layout::sync::AtomicU64;
use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{
    Bencher, BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use prometheus::Encoder;
use prometheus_client::metrics::counter::Counter as PcCounter;
use prometheus_client::metrics::family::Family as PcFamily;
use prometheus_client::metrics::gauge::Gauge as PcGauge;
use prometheus_client::metrics::histogram::Histogram as PcHistogram;
use shmetrics::prometheus_collector::DirCollector;
use shmetrics_benches::fixtures::{
    GenFixture, RawExposition, SlotAreas, VllmFixture, count_segments, gen_observations,
    gen_segment_size, samples,
};
use shmetrics_layout::MetricKind;
use shmetrics_reader::snapshot::{Series, Snapshot, Value};
use shmetrics_reader::{Escaping, Format, PrefixFilter, Reader, Scrape, render};
use shmetrics_workload::GenWorkload;
use shmetrics_writer::{Options, Registry};

const PROCESSES: [usize; 4] = [1, 8, 32, 128];
const SERIES: [usize; 3] = [100, 1_000, 10_000];
/// `(P, S)` that also get `snapshot_only` and `render_only`.
const SPLIT: [(usize, usize); 3] = [(32, 1_000), (128, 1_000), (128, 10_000)];
const ENGINES: [usize; 3] = [4, 16, 64];

/// Series read per iteration from which a bench gets criterion's minimum of 10 samples.
const BIG: usize = 100_000;

fn tune(group: &mut BenchmarkGroup<'_, WallTime>, series_read: usize) {
    group.warm_up_time(Duration::from_millis(500));
    if series_read >= BIG {
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .measurement_time(Duration::from_secs(3));
    } else {
        group
            .sample_size(30)
            .measurement_time(Duration::from_secs(2));
    }
}

/// Opens a reader and takes the first scrape (which parses every segment's metadata),
/// checking that it saw `live` live segments and `series` merged series, and nothing odd.
fn steady_reader(dir: &std::path::Path, live: usize, series: Option<usize>) -> (Reader, Vec<u8>) {
    steady_reader_with_dead(dir, live, 0, series)
}

/// [`steady_reader`] of a directory that also holds `dead` dead segments.
fn steady_reader_with_dead(
    dir: &std::path::Path,
    live: usize,
    dead: usize,
    series: Option<usize>,
) -> (Reader, Vec<u8>) {
    let mut reader = Reader::open(dir).expect("open a reader");
    let mut out = Vec::new();
    let report = reader
        .scrape(
            Format::Prometheus,
            &PrefixFilter::default(),
            false,
            &mut out,
        )
        .expect("scrape into a Vec");
    assert_eq!(report.live_segments, live, "{report:?}");
    assert_eq!(report.dead_segments, dead, "{report:?}");
    assert_eq!(report.dropped_series, 0, "{report:?}");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.conflicts.is_empty(), "{:?}", report.conflicts);
    if let Some(series) = series {
        assert_eq!(report.series, series, "{report:?}");
    }
    (reader, out)
}

/// Times whole scrapes of `reader` as Prometheus text into `out`, cleared each time.
fn scrapes(b: &mut Bencher<'_>, reader: &mut Reader, filter: &PrefixFilter, out: &mut Vec<u8>) {
    b.iter(|| {
        out.clear();
        shmetrics_benches::scrape_text(reader, filter, out);
        black_box(out.len())
    })
}

fn scrape_grid(c: &mut Criterion) {
    let filter = PrefixFilter::default();
    for s in SERIES {
        for p in PROCESSES {
            let fixture = GenFixture::build(p, s).expect("build the gen fixture");
            let (mut reader, mut out) = steady_reader(fixture.dir(), p, Some(s));
            let id = format!("{p}x{s}");
            let read = fixture.series_total();

            let mut group = c.benchmark_group("scrape");
            tune(&mut group, read);
            group.throughput(Throughput::Elements(read as u64));
            group.bench_function(&id, |b| scrapes(b, &mut reader, &filter, &mut out));
            group.finish();

            if !SPLIT.contains(&(p, s)) {
                continue;
            }
            let mut group = c.benchmark_group("snapshot_only");
            tune(&mut group, read);
            group.throughput(Throughput::Elements(read as u64));
            group.bench_function(&id, |b| b.iter(|| black_box(reader.snapshot())));
            group.finish();

            // The same scrape with the live segments folded on two threads.
            let (mut threaded, mut threaded_out) = steady_reader(fixture.dir(), p, Some(s));
            threaded.set_fold_threads(2);
            let mut group = c.benchmark_group("scrape_2_threads");
            tune(&mut group, read);
            group.throughput(Throughput::Elements(read as u64));
            group.bench_function(&id, |b| {
                scrapes(b, &mut threaded, &filter, &mut threaded_out)
            });
            group.finish();

            let scrape = reader.snapshot();
            // The limit of a scrape: read every slot of the directory, render the result.
            let areas = SlotAreas::open(fixture.dir()).expect("map the segments");
            let mut group = c.benchmark_group("limit");
            tune(&mut group, read);
            group.throughput(Throughput::Elements(read as u64));
            group.bench_function(&id, |b| {
                b.iter(|| {
                    black_box(areas.read_all());
                    out.clear();
                    render_into(&scrape, Format::Prometheus, &filter, &mut out);
                    black_box(out.len())
                })
            });
            group.finish();

            let mut group = c.benchmark_group("render_only");
            tune(&mut group, s);
            group.throughput(Throughput::Elements(s as u64));
            group.bench_function(&id, |b| {
                b.iter(|| {
                    out.clear();
                    render_into(&scrape, Format::Prometheus, &filter, &mut out);
                    black_box(out.len())
                })
            });
            group.finish();
        }
    }
}

type PcLabels = Vec<(String, String)>;

fn pc_labels(series: &Series) -> PcLabels {
    let mut labels: PcLabels = series
        .labels
        .pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    if let Some(pid) = series.pid {
        labels.push(("pid".to_owned(), pid.to_string()));
    }
    labels
}

/// A `prometheus-client` registry holding `snapshot`'s families, labels and values (of a
/// one-process `gen` fixture: histograms are rebuilt by replaying that process's
/// observations, so that their sums are the same `f64`s).
fn prometheus_client_registry(snapshot: &Snapshot) -> prometheus_client::registry::Registry {
    let mut registry = prometheus_client::registry::Registry::default();
    for f in &snapshot.families {
        match f.kind {
            MetricKind::Counter => {
                let family = PcFamily::<PcLabels, PcCounter<f64, AtomicU64>>::default();
                for s in &f.series {
                    let Value::Counter(v) = s.value else {
                        panic!("{}: counter without a counter value", f.name)
                    };
                    family.get_or_create(&pc_labels(s)).inc_by(v);
                }
                registry.register(f.name.to_string(), f.help.to_string(), family);
            }
            MetricKind::Gauge => {
                let family = PcFamily::<PcLabels, PcGauge<f64, AtomicU64>>::default();
                for s in &f.series {
                    let Value::Gauge(v) = s.value else {
                        panic!("{}: gauge without a gauge value", f.name)
                    };
                    family.get_or_create(&pc_labels(s)).set(v);
                }
                registry.register(f.name.to_string(), f.help.to_string(), family);
            }
            MetricKind::Histogram => {
                let bounds = f.bounds.clone();
                let family =
                    PcFamily::<PcLabels, PcHistogram, _>::new_with_constructor(move || {
                        PcHistogram::new(bounds.iter().copied())
                    });
                for s in &f.series {
                    let index: usize = s
                        .labels
                        .get("series")
                        .and_then(|v| v.parse().ok())
                        .expect("a gen series label");
                    let histogram = family.get_or_create(&pc_labels(s));
                    for v in gen_observations(index) {
                        histogram.observe(v);
                    }
                }
                registry.register(f.name.to_string(), f.help.to_string(), family);
            }
            MetricKind::Summary | MetricKind::Info | MetricKind::StateSet => {
                panic!("{}: the gen workload has no {}", f.name, f.kind)
            }
        }
    }
    registry
}

fn sample_lines(text: &[u8]) -> usize {
    text.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && l[0] != b'#')
        .count()
}

/// Renders a reader's snapshot whole into `out`, with the label texts the reader keeps;
/// OpenMetrics without `_created` samples (the peers have none; `render_openmetrics_created`
/// adds them).
fn render_into(scrape: &Scrape, format: Format, filter: &PrefixFilter, out: &mut Vec<u8>) {
    render_created(scrape, format, filter, false, out);
}

/// As [`render_into`], OpenMetrics with `_created` samples when `created`.
fn render_created(
    scrape: &Scrape,
    format: Format,
    filter: &PrefixFilter,
    created: bool,
    out: &mut Vec<u8>,
) {
    render::Exposition {
        snapshot: &scrape.snapshot,
        text: Some(&scrape.text),
        extra: &[],
        format,
        filter,
        escaping: Escaping::default(),
        created,
    }
    .render_some(&mut render::Cursor::default(), out, usize::MAX);
}

fn render_10k(c: &mut Criterion) {
    const SERIES: usize = 10_000;
    let fixture = GenFixture::build(1, SERIES).expect("build the gen fixture");
    let (mut reader, ours) = steady_reader(fixture.dir(), 1, Some(SERIES));
    let scrape = reader.snapshot();
    let snapshot = &scrape.snapshot;
    let filter = PrefixFilter::default();

    // The peers' inputs, built once.
    let pc_registry = prometheus_client_registry(snapshot);
    let tikv_families = DirCollector::open(fixture.dir(), PrefixFilter::default())
        .expect("open a collector")
        .collect_with_report()
        .0;
    let tikv = prometheus::TextEncoder::new();
    let raw = RawExposition::new(snapshot);

    // Every encoder prints the same samples.
    let mut text = String::new();
    let ours_text = std::str::from_utf8(&ours).expect("UTF-8");
    let expected = samples(ours_text).expect("parse our output");
    assert_eq!(expected.len(), sample_lines(&ours));
    // 3,335 counters, 3,335 gauges, 3,330 histograms of 23 samples.
    assert_eq!(
        expected.len(),
        6_670 + 3_330 * 23,
        "sample lines of 10,000 series"
    );
    let check = |encoder: &str, output: &str| {
        assert_eq!(sample_lines(output.as_bytes()), expected.len(), "{encoder}");
        let got = samples(output).unwrap_or_else(|e| panic!("{encoder}: {e}"));
        assert!(
            got == expected,
            "{encoder} prints other samples than shmetrics"
        );
    };
    prometheus_client::encoding::text::encode(&mut text, &pc_registry).expect("encode");
    check("prometheus_client text::encode", &text);
    text.clear();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &pc_registry).expect("encode");
    check("prometheus_client prometheus_text::encode", &text);
    let mut bytes = Vec::new();
    tikv.encode(&tikv_families, &mut bytes).expect("encode");
    check(
        "tikv TextEncoder",
        std::str::from_utf8(&bytes).expect("UTF-8"),
    );
    bytes.clear();
    raw.write(&mut bytes);
    assert!(
        bytes == ours,
        "raw formatting differs from the shmetrics output"
    );
    bytes.clear();
    raw.write_cached_prefixes(&mut bytes);
    assert!(
        bytes == ours,
        "raw formatting (cached prefixes) differs from shmetrics"
    );
    bytes.clear();
    render_into(&scrape, Format::OpenMetrics, &filter, &mut bytes);
    check(
        "shmetrics OpenMetrics",
        std::str::from_utf8(&bytes).expect("UTF-8"),
    );

    let mut group = c.benchmark_group("render_10k");
    tune(&mut group, SERIES);
    group.throughput(Throughput::Elements(SERIES as u64));
    let mut out = Vec::with_capacity(ours.len() * 2);
    group.bench_function("shmetrics", |b| {
        b.iter(|| {
            out.clear();
            render_into(&scrape, Format::Prometheus, &filter, &mut out);
            black_box(out.len())
        })
    });
    group.bench_function("shmetrics_openmetrics", |b| {
        b.iter(|| {
            out.clear();
            render_into(&scrape, Format::OpenMetrics, &filter, &mut out);
            black_box(out.len())
        })
    });
    // With a `_created` sample per counter and histogram series (6,665 more lines).
    bytes.clear();
    render_created(&scrape, Format::OpenMetrics, &filter, true, &mut bytes);
    let created = sample_lines(&bytes) - expected.len();
    assert_eq!(
        created,
        3_335 + 3_330,
        "one _created line per counter and histogram"
    );
    group.bench_function("shmetrics_openmetrics_created", |b| {
        b.iter(|| {
            out.clear();
            render_created(&scrape, Format::OpenMetrics, &filter, true, &mut out);
            black_box(out.len())
        })
    });
    group.bench_function("raw_formatting", |b| {
        b.iter(|| {
            out.clear();
            raw.write(&mut out);
            black_box(out.len())
        })
    });
    group.bench_function("raw_cached_prefixes", |b| {
        b.iter(|| {
            out.clear();
            raw.write_cached_prefixes(&mut out);
            black_box(out.len())
        })
    });
    let mut text = String::with_capacity(ours.len() * 2);
    group.bench_function("prometheus_client_text", |b| {
        b.iter(|| {
            text.clear();
            prometheus_client::encoding::text::encode(&mut text, &pc_registry).expect("encode");
            black_box(text.len())
        })
    });
    group.bench_function("prometheus_client_prometheus_text", |b| {
        b.iter(|| {
            text.clear();
            prometheus_client::encoding::prometheus_text::encode(&mut text, &pc_registry)
                .expect("encode");
            black_box(text.len())
        })
    });
    group.bench_function("tikv_text_encoder", |b| {
        b.iter(|| {
            out.clear();
            tikv.encode(&tikv_families, &mut out).expect("encode");
            black_box(out.len())
        })
    });
    group.finish();
}

fn vllm(c: &mut Criterion) {
    let filter = PrefixFilter::default();
    for n in ENGINES {
        let fixture = VllmFixture::build(n).expect("build the vLLM fixture");
        let (mut reader, mut out) = steady_reader(fixture.dir(), n, None);
        let mut group = c.benchmark_group("vllm");
        tune(&mut group, fixture.series_total());
        group.throughput(Throughput::Elements(fixture.series_total() as u64));
        group.bench_function(n.to_string(), |b| {
            scrapes(b, &mut reader, &filter, &mut out)
        });
        group.finish();
    }
}

/// Live processes of the `dead_processes` group, and their series each.
const DEAD_LIVE: (usize, usize) = (4, 1_500);
/// Dead process histories of the `dead_processes` group, and their series each.
const DEAD_COUNT: (usize, usize) = (500, 30);

/// Scrapes of 4 live processes: alone, after 500 processes wrote and died beside them, and
/// after those were compacted (target in docs/performance.md: ≤ 1.1× the scrape with none).
fn dead_processes(c: &mut Criterion) {
    let filter = PrefixFilter::default();
    let dir = tempfile::Builder::new()
        .prefix("shmetrics-bench-dead-")
        .tempdir()
        .expect("temporary directory");
    let (live_n, live_series) = DEAD_LIVE;
    let options = Options {
        initial_segment_size: gen_segment_size(live_series),
        ..Options::default()
    };
    let live: Vec<(GenWorkload, Registry)> = (0..live_n)
        .map(|i| {
            let r = Registry::open_simulating_pid(dir.path(), options.clone(), 1 + i as u32)
                .expect("open a live process");
            let w = GenWorkload::register(&r, live_series).expect("register");
            w.round(0);
            (w, r)
        })
        .collect();
    let mut group = c.benchmark_group("dead_processes");
    let bench = |group: &mut BenchmarkGroup<'_, WallTime>, id: &str, dead: usize| {
        let (mut reader, mut out) = steady_reader_with_dead(dir.path(), live_n, dead, None);
        group.bench_function(id, |b| scrapes(b, &mut reader, &filter, &mut out));
    };
    bench(&mut group, "none", 0);
    let (dead_n, dead_series) = DEAD_COUNT;
    for i in 0..dead_n {
        let r = Registry::open_simulating_pid(dir.path(), Options::default(), 10_000 + i as u32)
            .expect("open a process");
        GenWorkload::register(&r, dead_series)
            .expect("register")
            .round(0);
    }
    bench(&mut group, "500_dead", dead_n);
    let report = Reader::open(dir.path())
        .expect("reader")
        .compact()
        .expect("compact");
    assert_eq!(report.folded_segments, dead_n);
    assert_eq!(count_segments(dir.path()).expect("list"), live_n + 1);
    bench(&mut group, "500_dead_compacted", 1);
    group.finish();
    drop(live);
}

criterion_group!(benches, scrape_grid, render_10k, vllm, dead_processes);
criterion_main!(benches);
