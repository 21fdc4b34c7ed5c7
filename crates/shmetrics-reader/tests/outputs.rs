//! The reader's two ways out write the same bytes: `Reader::scrape_escaped` (streamed in
//! pieces through a kept buffer) and `Reader::scrape_into` (appended whole to a `Vec`), for
//! an exposition many pieces long, in both formats, every escaping, with and without
//! self-metrics.

use shmetrics_reader::render::CHUNK;
use shmetrics_reader::{Escaping, Format, PrefixFilter, Reader};
use shmetrics_writer::{Options, Registry};

/// Two processes, each with 2,000 histogram series and a counter with UTF-8 names.
fn directory(dir: &std::path::Path) -> Vec<Registry> {
    [601, 602]
        .into_iter()
        .map(|pid| {
            let r = Registry::open_simulating_pid(dir, Options::default(), pid).unwrap();
            let latency = r
                .histogram("request_seconds", "Latency.", &["route"], &[])
                .unwrap();
            for i in 0..2_000 {
                latency
                    .labels(&[format!("/route/{i}")])
                    .unwrap()
                    .observe(f64::from(i) / 1_000.0);
            }
            r.counter("my.dotted", "UTF-8 names.", &["lbl.x"])
                .unwrap()
                .labels(&["v"])
                .unwrap()
                .inc_by(f64::from(pid));
            r
        })
        .collect()
}

#[test]
fn streamed_and_appended_scrapes_are_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let _writers = directory(dir.path());
    let mut reader = Reader::open(dir.path()).unwrap();
    let filters = [
        PrefixFilter::default(),
        PrefixFilter::new(["my".to_string()]),
    ];
    for format in [Format::Prometheus, Format::OpenMetrics] {
        for escaping in [
            Escaping::AllowUtf8,
            Escaping::Underscores,
            Escaping::Dots,
            Escaping::Values,
        ] {
            for filter in &filters {
                for self_metrics in [false, true] {
                    let what = format!("{format:?} {escaping:?} {filter:?} {self_metrics}");
                    let mut streamed = Vec::new();
                    let report = reader
                        .scrape_escaped(format, escaping, filter, self_metrics, &mut streamed)
                        .unwrap();
                    assert!(report.problems.is_empty(), "{what}: {:?}", report.problems);
                    // Appended after what `out` already holds.
                    let mut appended = b"kept".to_vec();
                    let report =
                        reader.scrape_into(format, escaping, filter, self_metrics, &mut appended);
                    assert!(report.problems.is_empty(), "{what}: {:?}", report.problems);
                    assert_eq!(&appended[..4], b"kept", "{what}");
                    assert!(appended[4..] == streamed[..], "{what}: the bytes differ");
                    let text = String::from_utf8(streamed).unwrap();
                    assert!(text.contains("my"), "{what}");
                    if *filter == filters[0] {
                        assert!(text.len() > 4 * CHUNK, "{what}: {} bytes", text.len());
                    }
                    let self_family = match escaping {
                        Escaping::Dots => "shmetrics__reader__segments",
                        _ => "shmetrics_reader_segments",
                    };
                    assert_eq!(text.contains(self_family), self_metrics, "{what}");
                }
            }
        }
    }
}
