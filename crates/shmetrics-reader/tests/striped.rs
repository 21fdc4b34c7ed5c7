//! Striped histograms and counters (`Registry::histogram_striped`, `counter_striped`): each
//! writing thread writes into a copy of the series of its own, a series record with the
//! same labels, and readers show exactly what one unstriped series of the same writes
//! shows (counts, sums, `_created`, the newest exemplar), live, dead and compacted.

use std::path::Path;
use std::sync::Barrier;

use shmetrics_reader::inspect::{RecordEntry, inspect};
use shmetrics_reader::{Format, PrefixFilter, Reader};
use shmetrics_writer::{
    CounterFamily, Difference, Error, HistogramFamily, MAX_STRIPES, Options, Registry,
    SummaryFamily,
};

const BOUNDS: [f64; 3] = [1.0, 2.5, 5.0];
const THREADS: usize = 6;

/// Thread `t`'s observations: quarters, so every sum is exact in any order and a striped
/// series' sum must equal the unstriped one bit for bit.
fn observations(t: usize) -> impl Iterator<Item = f64> {
    (0..400).map(move |i| ((i * 7 + t * 13) % 29) as f64 * 0.25)
}

fn scrape(dir: &Path, format: Format) -> String {
    let mut reader = Reader::open(dir).unwrap();
    let mut out = Vec::new();
    (reader.scrape(format, &PrefixFilter::default(), false, &mut out)).unwrap();
    String::from_utf8(out).unwrap()
}

/// The exposition without `_created` samples (creation times differ between directories).
fn without_created(text: &str) -> String {
    let lines = text.lines().filter(|l| !l.contains("_created"));
    lines.collect::<Vec<_>>().join("\n")
}

/// A histogram and a counter, striped or not.
struct Families {
    latency: HistogramFamily,
    requests: CounterFamily,
}

impl Families {
    fn register(r: &Registry, stripes: Option<usize>) -> Self {
        let (name, help, labels) = ("latency", "Latency.", &["route"]);
        let latency = match stripes {
            Some(n) => r.histogram_striped(name, help, labels, &BOUNDS, n),
            None => r.histogram(name, help, labels, &BOUNDS),
        };
        let (name, help) = ("requests_total", "Requests.");
        let requests = match stripes {
            Some(n) => r.counter_striped(name, help, labels, n),
            None => r.counter(name, help, labels),
        };
        Self {
            latency: latency.unwrap(),
            requests: requests.unwrap(),
        }
    }

    /// Every thread writes its values into series `a`, all at once; the main thread alone
    /// writes series `b`.
    fn write_on_threads(&self) {
        let start = Barrier::new(THREADS);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    let latency = self.latency.labels(["a"]).unwrap();
                    let requests = self.requests.labels(["a"]).unwrap();
                    for v in observations(t) {
                        latency.observe(v);
                        requests.inc();
                        requests.inc_by(v);
                    }
                });
            }
        });
        self.latency.labels(["b"]).unwrap().observe(3.0);
        self.requests.labels(["b"]).unwrap().inc_by(0.75);
    }
}

fn registry(dir: &Path) -> Registry {
    Registry::open_simulating_pid(dir, Options::default(), 7000).unwrap()
}

#[test]
fn striped_series_show_what_one_series_of_the_same_writes_does() {
    let (striped_dir, plain_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let striped_registry = registry(striped_dir.path());
    let striped = Families::register(&striped_registry, Some(4));
    striped.write_on_threads();
    let plain_registry = registry(plain_dir.path());
    let plain = Families::register(&plain_registry, None);
    plain.write_on_threads();

    // Two family records, four series records per family and label set.
    let paths = striped_registry.segment_paths();
    let records: usize = (paths.iter())
        .map(|p| inspect(p).unwrap().records.len())
        .sum();
    assert_eq!(records, 2 + 2 * 2 * 4);

    // What the process itself reads, and what every reader shows, are the same.
    let expected = plain.latency.labels(["a"]).unwrap().get();
    assert_eq!(striped.latency.labels(["a"]).unwrap().get(), expected);
    assert_eq!(expected.buckets.iter().sum::<u64>(), THREADS as u64 * 400);
    let counted = plain.requests.labels(["a"]).unwrap().get();
    assert_eq!(striped.requests.labels(["a"]).unwrap().get(), counted);
    assert_eq!(counted, THREADS as f64 * 400.0 + expected.sum);
    for format in [Format::Prometheus, Format::OpenMetrics] {
        let (s, p) = (
            scrape(striped_dir.path(), format),
            scrape(plain_dir.path(), format),
        );
        assert_eq!(without_created(&s), without_created(&p), "{format:?}");
    }
    // One `_created` sample per label set, as without stripes.
    let text = scrape(striped_dir.path(), Format::OpenMetrics);
    for family in ["latency", "requests"] {
        let created = (text.lines()).filter(|l| l.starts_with(&format!("{family}_created{{")));
        assert_eq!(created.count(), 2, "{text}");
    }
    let text = scrape(striped_dir.path(), Format::Prometheus);
    assert!(text.contains("latency_count{route=\"a\"} 2400\n"), "{text}");
    assert!(
        text.contains("requests_total{route=\"b\"} 0.75\n"),
        "{text}"
    );

    // Dead, then compacted into an archive: still the same.
    striped_registry.end_liveness();
    plain_registry.end_liveness();
    for dir in [striped_dir.path(), plain_dir.path()] {
        Reader::open(dir).unwrap().compact().unwrap();
    }
    let (s, p) = (
        scrape(striped_dir.path(), Format::OpenMetrics),
        scrape(plain_dir.path(), Format::OpenMetrics),
    );
    assert_eq!(without_created(&s), without_created(&p));
    assert!(s.contains("latency_count{route=\"a\"} 2400\n"), "{s}");
}

/// The creation times of `family`'s series records for label value `a` in `registry`'s
/// segments, in record order.
fn created_of(registry: &Registry, family: &str) -> Vec<u64> {
    let mut created = Vec::new();
    for path in registry.segment_paths() {
        for info in inspect(&path).unwrap().records {
            if let RecordEntry::Series {
                record, family: f, ..
            } = info.entry
                && f.name == family
                && record.label_values == ["a"]
            {
                created.push(record.created_unix_nanos.unwrap());
            }
        }
    }
    created
}

/// A registry of process 7000 in `dir` that spreads contended series over
/// `contention_stripes` copies (1: never), with `Families` and a summary family `sizes`.
fn open_spreading(dir: &Path, contention_stripes: usize) -> (Registry, Families, SummaryFamily) {
    let options = Options {
        contention_stripes,
        ..Options::default()
    };
    let registry = Registry::open_simulating_pid(dir, options, 7000).unwrap();
    let families = Families::register(&registry, None);
    let sizes = (registry.summary("sizes", "Sizes.", &["route"])).unwrap();
    (registry, families, sizes)
}

#[test]
fn a_series_spread_when_contended_shows_what_one_series_of_the_same_writes_does() {
    let (spread_dir, plain_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (spread_registry, spread, spread_sizes) = open_spreading(spread_dir.path(), 4);
    let (latency, requests, sizes) = (
        spread.latency.labels(["a"]).unwrap(),
        spread.requests.labels(["a"]).unwrap(),
        spread_sizes.labels(["a"]).unwrap(),
    );
    // Two threads write series `a`, 20 rounds each; after the first ten of both, the
    // series are spread as when found contended (`spread_now`: whether two threads meet
    // often enough to be found so depends on the machine; the writer's tests cover that).
    let rounds = 20;
    let halfway = Barrier::new(2);
    std::thread::scope(|s| {
        for t in 0..2 {
            let halfway = &halfway;
            s.spawn(move || {
                for round in 0..rounds {
                    if round == rounds / 2 {
                        halfway.wait();
                        if t == 0 {
                            latency.spread_now();
                            requests.spread_now();
                            sizes.spread_now();
                        }
                        halfway.wait();
                    }
                    for v in observations(t) {
                        latency.observe(v);
                        requests.inc_by(v + 0.25);
                        sizes.observe(v);
                    }
                }
            });
        }
    });
    // Spread over four copies each: the first record and three placed later.
    let (latency_created, requests_created, sizes_created) = (
        created_of(&spread_registry, "latency"),
        created_of(&spread_registry, "requests"),
        created_of(&spread_registry, "sizes"),
    );
    assert_eq!(latency_created.len(), 4);
    assert_eq!(requests_created.len(), 4);
    assert_eq!(sizes_created.len(), 4);
    assert!(latency_created[1..].iter().all(|&c| c > latency_created[0]));

    // The same writes, one thread after the other, into a registry that never spreads.
    let (plain_registry, plain, plain_sizes) = open_spreading(plain_dir.path(), 1);
    for t in 0..2 {
        for v in (0..rounds).flat_map(|_| observations(t)) {
            plain.latency.labels(["a"]).unwrap().observe(v);
            plain.requests.labels(["a"]).unwrap().inc_by(v + 0.25);
            plain_sizes.labels(["a"]).unwrap().observe(v);
        }
    }
    assert_eq!(created_of(&plain_registry, "latency").len(), 1);

    let expected = plain.latency.labels(["a"]).unwrap().get();
    assert_eq!(latency.get(), expected);
    assert_eq!(expected.buckets.iter().sum::<u64>(), 2 * rounds * 400);
    assert_eq!(requests.get(), plain.requests.labels(["a"]).unwrap().get());
    assert_eq!(sizes.get(), plain_sizes.labels(["a"]).unwrap().get());
    let created_line = |text: &str, family: &str| {
        let prefix = format!("{family}_created{{route=\"a\"}} ");
        let line = text.lines().find(|l| l.starts_with(&prefix)).unwrap();
        line[prefix.len()..].parse::<f64>().unwrap()
    };
    for round in ["live", "compacted"] {
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let (s, p) = (
                scrape(spread_dir.path(), format),
                scrape(plain_dir.path(), format),
            );
            assert_eq!(
                without_created(&s),
                without_created(&p),
                "{round} {format:?}"
            );
        }
        // The series' `_created` is its first record's (when the child was made), not a
        // later copy's.
        let text = scrape(spread_dir.path(), Format::OpenMetrics);
        for (family, created) in [
            ("latency", &latency_created),
            ("requests", &requests_created),
            ("sizes", &sizes_created),
        ] {
            let shown = created_line(&text, family);
            assert!(
                (shown - created[0] as f64 / 1e9).abs() < 1e-6,
                "{round}: {text}"
            );
        }
        spread_registry.end_liveness();
        plain_registry.end_liveness();
        for dir in [spread_dir.path(), plain_dir.path()] {
            Reader::open(dir).unwrap().compact().unwrap();
        }
    }
}

#[test]
fn the_newest_exemplar_of_any_stripe_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path());
    // As many stripes as there can be: two threads of this process always differ.
    let h = r
        .histogram_striped("latency", "Latency.", &[], &BOUNDS, MAX_STRIPES)
        .unwrap();
    let c = r
        .counter_striped("requests", "Requests.", &[], MAX_STRIPES)
        .unwrap();
    for trace in ["older", "newer"] {
        std::thread::scope(|s| {
            s.spawn(|| {
                let exemplar = [("trace_id", trace)];
                let child = h.unlabelled().unwrap();
                child.observe_with_exemplar(0.5, &exemplar).unwrap();
                let child = c.unlabelled().unwrap();
                child.inc_by_with_exemplar(1.0, &exemplar).unwrap();
            });
        });
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let text = scrape(dir.path(), Format::OpenMetrics);
    for (sample, shown) in [
        (
            "latency_bucket{le=\"1.0\"}",
            "latency_bucket{le=\"1.0\"} 2 # {trace_id=\"newer\"} 0.5",
        ),
        (
            "requests_total",
            "requests_total 2.0 # {trace_id=\"newer\"} 1.0",
        ),
    ] {
        let line = text.lines().find(|l| l.starts_with(sample)).unwrap();
        assert!(line.starts_with(shown), "{text}");
    }
}

#[test]
fn stripes_are_a_power_of_two_and_part_of_the_definition() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path());
    for stripes in [0, 3, 6, MAX_STRIPES * 2] {
        let err = r
            .histogram_striped("latency", "Latency.", &[], &BOUNDS, stripes)
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidStripes { stripes: s, .. } if s == stripes),
            "{err}"
        );
    }
    r.histogram_striped("latency", "Latency.", &[], &BOUNDS, 2)
        .unwrap();
    // The same stripes: the same family; other stripes, or none: a conflict.
    r.histogram_striped("latency", "Latency.", &[], &BOUNDS, 2)
        .unwrap();
    for (stripes, now) in [(Some(4), 4), (None, 1)] {
        let again = match stripes {
            Some(n) => r.histogram_striped("latency", "Latency.", &[], &BOUNDS, n),
            None => r.histogram("latency", "Latency.", &[], &BOUNDS),
        };
        let err = again.unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Conflict { difference: Difference::Stripes { before: 2, now: n }, .. } if *n == now
            ),
            "{err}"
        );
    }
    let err = r
        .histogram_striped("latency", "Latency.", &[], &BOUNDS, 4)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "metric latency is already registered with a different definition: 2 stripes before, 4 now"
    );
    // Counters: the same rules, the name without `_total`.
    let err = r
        .counter_striped("requests_total", "R.", &[], 5)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "stripes of requests: 5 is not a power of two from 1 to 64"
    );
    r.counter_striped("requests_total", "R.", &[], 8).unwrap();
    let err = r.counter("requests", "R.", &[]).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Conflict {
                difference: Difference::Stripes { before: 8, now: 1 },
                ..
            }
        ),
        "{err}"
    );
}
