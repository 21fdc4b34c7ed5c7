//! Striped histograms (`Registry::histogram_striped`): each writing thread observes into a
//! copy of the series of its own, a series record with the same labels, and readers show
//! exactly what one unstriped series of the same observations shows (counts, sums,
//! `_created`, the newest exemplar), live, dead and compacted.

use std::path::Path;
use std::sync::Barrier;

use shmetrics_reader::inspect::inspect;
use shmetrics_reader::{Format, PrefixFilter, Reader};
use shmetrics_writer::{Difference, Error, HistogramFamily, MAX_STRIPES, Options, Registry};

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

/// Every thread observes its values into series `a`, all at once; the main thread alone
/// writes series `b`.
fn observe_on_threads(family: &HistogramFamily) {
    let start = Barrier::new(THREADS);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let start = &start;
            s.spawn(move || {
                start.wait();
                let child = family.labels(["a"]).unwrap();
                observations(t).for_each(|v| child.observe(v));
            });
        }
    });
    family.labels(["b"]).unwrap().observe(3.0);
}

fn registry(dir: &Path) -> Registry {
    Registry::open_simulating_pid(dir, Options::default(), 7000).unwrap()
}

#[test]
fn a_striped_series_shows_what_one_series_of_the_same_observations_does() {
    let (striped_dir, plain_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let striped_registry = registry(striped_dir.path());
    let striped = striped_registry
        .histogram_striped("latency", "Latency.", &["route"], &BOUNDS, 4)
        .unwrap();
    observe_on_threads(&striped);
    let plain_registry = registry(plain_dir.path());
    let plain = plain_registry
        .histogram("latency", "Latency.", &["route"], &BOUNDS)
        .unwrap();
    observe_on_threads(&plain);

    // The segment holds four series records for `a`, one each for `b`'s four stripes too.
    let paths = striped_registry.segment_paths();
    let records: usize = (paths.iter())
        .map(|p| inspect(p).unwrap().records.len())
        .sum();
    // One family record, four series records per label set.
    assert_eq!(records, 1 + 2 * 4);

    // What the process itself reads, and what every reader shows, are the same.
    let expected = plain.labels(["a"]).unwrap().get();
    assert_eq!(striped.labels(["a"]).unwrap().get(), expected);
    assert_eq!(expected.buckets.iter().sum::<u64>(), THREADS as u64 * 400);
    for format in [Format::Prometheus, Format::OpenMetrics] {
        let (s, p) = (
            scrape(striped_dir.path(), format),
            scrape(plain_dir.path(), format),
        );
        assert_eq!(without_created(&s), without_created(&p), "{format:?}");
    }
    // One `_created` sample per label set, as without stripes.
    let text = scrape(striped_dir.path(), Format::OpenMetrics);
    let created = text.lines().filter(|l| l.starts_with("latency_created{"));
    assert_eq!(created.count(), 2, "{text}");
    let text = scrape(striped_dir.path(), Format::Prometheus);
    assert!(text.contains("latency_count{route=\"a\"} 2400\n"), "{text}");

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

#[test]
fn the_newest_exemplar_of_any_stripe_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path());
    // As many stripes as there can be: two threads of this process always differ.
    let h = r
        .histogram_striped("latency", "Latency.", &[], &BOUNDS, MAX_STRIPES)
        .unwrap();
    for trace in ["older", "newer"] {
        std::thread::scope(|s| {
            s.spawn(|| {
                let child = h.unlabelled().unwrap();
                child
                    .observe_with_exemplar(0.5, &[("trace_id", trace)])
                    .unwrap();
            });
        });
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let text = scrape(dir.path(), Format::OpenMetrics);
    let bucket = (text.lines())
        .find(|l| l.starts_with("latency_bucket{le=\"1.0\"}"))
        .unwrap();
    assert!(
        bucket.starts_with("latency_bucket{le=\"1.0\"} 2 # {trace_id=\"newer\"} 0.5"),
        "{text}"
    );
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
}
