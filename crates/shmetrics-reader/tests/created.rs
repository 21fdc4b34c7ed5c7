//! OpenMetrics `_created`: each counter, histogram and summary series shows when it was
//! created in the oldest process that has it, and that time holds across scrapes, process
//! deaths and compactions.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shmetrics_reader::render::{Cursor, Exposition};
use shmetrics_reader::{Escaping, Format, PrefixFilter, Reader};
use shmetrics_writer::{GaugeMode, Options, Registry};

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A simulated process writing one series of each type under `route`; returns the
/// registry (the process lives while it is held) and the times around the series' creation.
fn process(dir: &Path, pid: u32, route: &str) -> (Registry, (f64, f64)) {
    let r = Registry::open_simulating_pid(dir, Options::default(), pid).unwrap();
    let before = now();
    r.counter("req", "Requests.", &["route"])
        .unwrap()
        .labels(&[route])
        .unwrap()
        .inc();
    r.histogram("lat", "Latency.", &["route"], &[1.0])
        .unwrap()
        .labels(&[route])
        .unwrap()
        .observe(0.5);
    r.summary("size", "Sizes.", &["route"])
        .unwrap()
        .labels(&[route])
        .unwrap()
        .observe(3.0);
    r.gauge("temp", "A gauge.", &["route"], GaugeMode::Sum)
        .unwrap()
        .labels(&[route])
        .unwrap()
        .set(1.0);
    let after = now();
    // Processes created one after the other have distinct times.
    std::thread::sleep(Duration::from_millis(20));
    (r, (before, after))
}

fn scrape(reader: &mut Reader, format: Format) -> String {
    let mut out = Vec::new();
    reader
        .scrape(format, &PrefixFilter::default(), false, &mut out)
        .unwrap();
    String::from_utf8(out).unwrap()
}

/// Every `_created` sample: `name{labels}` to its value.
fn created(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(name, _)| name.split('{').next().unwrap().ends_with("_created"))
        .map(|(name, v)| (name.to_owned(), v.parse().unwrap()))
        .collect()
}

fn within(v: f64, (before, after): (f64, f64)) -> bool {
    // A microsecond of rounding either way (seconds since the epoch in an f64).
    before - 1e-6 <= v && v <= after + 1e-6
}

#[test]
fn created_is_the_oldest_process_creation_through_deaths_and_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let (first, first_time) = process(dir.path(), 1, "/a");
    let (second, _) = process(dir.path(), 2, "/a");
    let (_third, b_time) = process(dir.path(), 3, "/b");
    let mut reader = Reader::open(dir.path()).unwrap();

    let text = scrape(&mut reader, Format::OpenMetrics);
    let samples = created(&text);
    let names: Vec<&str> = samples.keys().map(String::as_str).collect();
    // A counter's, histogram's and summary's series have one each, after their samples;
    // gauges none.
    assert_eq!(
        names,
        [
            r#"lat_created{route="/a"}"#,
            r#"lat_created{route="/b"}"#,
            r#"req_created{route="/a"}"#,
            r#"req_created{route="/b"}"#,
            r#"size_created{route="/a"}"#,
            r#"size_created{route="/b"}"#,
        ],
        "{text}"
    );
    for family in ["lat", "req", "size"] {
        let a = samples[&format!(r#"{family}_created{{route="/a"}}"#)];
        let b = samples[&format!(r#"{family}_created{{route="/b"}}"#)];
        assert!(within(a, first_time), "{family} /a: {a} {first_time:?}");
        assert!(within(b, b_time), "{family} /b: {b} {b_time:?}");
    }
    assert!(text.contains("req_total{route=\"/a\"} 2.0\nreq_created{route=\"/a\"} "));
    assert!(text.contains("size_sum{route=\"/a\"} 6.0\nsize_created{route=\"/a\"} "));
    assert!(text.contains("lat_sum{route=\"/a\"} 1.0\nlat_created{route=\"/a\"} "));
    // The text format has none, as prometheus_client's multiprocess mode.
    let plain = scrape(&mut reader, Format::Prometheus);
    assert!(created(&plain).is_empty(), "{plain}");
    assert!(!plain.contains("_created"), "{plain}");

    // Stable: across scrapes, the death of the oldest process, a compaction that folds it,
    // and a process born afterwards.
    assert_eq!(created(&scrape(&mut reader, Format::OpenMetrics)), samples);
    drop(first);
    assert_eq!(created(&scrape(&mut reader, Format::OpenMetrics)), samples);
    let report = reader.compact().unwrap();
    assert_eq!(report.folded_segments, 1);
    assert_eq!(created(&scrape(&mut reader, Format::OpenMetrics)), samples);
    drop(second);
    let report = reader.compact().unwrap();
    assert_eq!(report.folded_segments, 1);
    let (_late, _) = process(dir.path(), 4, "/a");
    let fresh = scrape(&mut Reader::open(dir.path()).unwrap(), Format::OpenMetrics);
    assert_eq!(created(&fresh), samples, "{fresh}");
    assert_eq!(created(&scrape(&mut reader, Format::OpenMetrics)), samples);

    // Off on request (PROMETHEUS_DISABLE_CREATED_SERIES' switch).
    reader.set_created_series(false);
    let off = scrape(&mut reader, Format::OpenMetrics);
    assert!(!off.contains("_created"), "{off}");
    assert!(off.contains("req_total{route=\"/a\"} 3.0\n"), "{off}");
}

#[test]
fn the_snapshot_carries_creation_times_of_counters_histograms_and_summaries_only() {
    let dir = tempfile::tempdir().unwrap();
    let (_p, time) = process(dir.path(), 7, "/x");
    let snapshot = Reader::open(dir.path()).unwrap().snapshot().snapshot;
    for family in &snapshot.families {
        for series in &family.series {
            match &*family.name {
                "temp" => assert_eq!(series.created_seconds(), None),
                _ => {
                    let c = series.created_seconds().expect("a creation time");
                    assert!(within(c, time), "{}: {c} {time:?}", family.name);
                }
            }
        }
    }
}

#[test]
fn escaped_names_have_their_created_sample_too() {
    let dir = tempfile::tempdir().unwrap();
    let r = Registry::open(dir.path()).unwrap();
    r.counter("my.req", "Requests.", &["the.route"])
        .unwrap()
        .labels(&["/a"])
        .unwrap()
        .inc();
    let scrape = Reader::open(dir.path()).unwrap().snapshot();
    let filter = PrefixFilter::default();
    let render = |escaping, created| {
        let mut out = Vec::new();
        Exposition {
            snapshot: &scrape.snapshot,
            text: Some(&scrape.text),
            extra: &[],
            format: Format::OpenMetrics,
            filter: &filter,
            escaping,
            created,
        }
        .render_some(&mut Cursor::default(), &mut out, usize::MAX);
        String::from_utf8(out).unwrap()
    };
    let seconds = scrape.snapshot.families[0].series[0]
        .created_seconds()
        .unwrap();
    let mut value = Vec::new();
    shmetrics_reader::render::write_f64(seconds, &mut value);
    let value = String::from_utf8(value).unwrap();
    let text = render(Escaping::Underscores, true);
    assert!(
        text.contains(&format!(
            "my_req_total{{the_route=\"/a\"}} 1.0\nmy_req_created{{the_route=\"/a\"}} {value}\n"
        )),
        "{text}"
    );
    let text = render(Escaping::AllowUtf8, true);
    assert!(
        text.contains(&format!(
            "{{\"my.req_created\",\"the.route\"=\"/a\"}} {value}\n"
        )),
        "{text}"
    );
    assert!(!render(Escaping::AllowUtf8, false).contains("_created"));
}
