//! Processes that declare the same family differently: every disagreement is reported, the
//! oldest process's definition wins, and no family is ever emitted twice.

use std::path::Path;
use std::time::Duration;

use shmetrics_reader::{Format, PrefixFilter, Reader, ScrapeReport};
use shmetrics_writer::{GaugeMode, Options, Registry};

/// Simulated processes, opened in order so the first is the oldest.
fn processes(dir: &Path, n: u32) -> Vec<Registry> {
    (0..n)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(2));
            Registry::open_simulating_pid(dir, Options::default(), 500 + i).unwrap()
        })
        .collect()
}

fn scrape(dir: &Path) -> (String, ScrapeReport) {
    let mut reader = Reader::open(dir).unwrap();
    let mut out = Vec::new();
    let report = reader
        .scrape(
            Format::Prometheus,
            &PrefixFilter::default(),
            false,
            &mut out,
        )
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let mut types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let before = types.len();
    types.dedup();
    assert_eq!(types.len(), before, "a family emitted twice:\n{text}");
    (text, report)
}

fn kinds(report: &ScrapeReport) -> Vec<&'static str> {
    report.conflicts.iter().map(|c| c.kind.as_str()).collect()
}

#[test]
fn help_text_differs() {
    let dir = tempfile::tempdir().unwrap();
    let p = processes(dir.path(), 2);
    p[0].counter("req_total", "Old help.", &[])
        .unwrap()
        .unlabelled()
        .unwrap()
        .inc_by(2.0);
    p[1].counter("req_total", "New help.", &[])
        .unwrap()
        .unlabelled()
        .unwrap()
        .inc_by(3.0);
    let (text, report) = scrape(dir.path());
    assert_eq!(
        text,
        "# HELP req_total Old help.\n# TYPE req_total counter\nreq_total 5.0\n"
    );
    assert_eq!(kinds(&report), ["help"]);
    assert_eq!(report.conflicts[0].family, "req");
    assert!(
        report.conflicts[0]
            .detail
            .contains("\"New help.\" here, \"Old help.\" first")
    );
}

#[test]
fn type_differs() {
    let dir = tempfile::tempdir().unwrap();
    let p = processes(dir.path(), 2);
    p[0].gauge("t", "T.", &[], GaugeMode::Sum)
        .unwrap()
        .unlabelled()
        .unwrap()
        .set(4.0);
    p[1].counter("t", "T.", &[])
        .unwrap()
        .unlabelled()
        .unwrap()
        .inc();
    let (text, report) = scrape(dir.path());
    assert_eq!(text, "# HELP t T.\n# TYPE t gauge\nt 4.0\n");
    assert_eq!(kinds(&report), ["type"]);
    assert!(
        report.conflicts[0]
            .detail
            .ends_with("counter here, gauge first; its series are left out")
    );
}

#[test]
fn gauge_mode_differs() {
    let dir = tempfile::tempdir().unwrap();
    let p = processes(dir.path(), 3);
    p[0].gauge("g", "G.", &[], GaugeMode::Max)
        .unwrap()
        .unlabelled()
        .unwrap()
        .set(1.0);
    p[1].gauge("g", "G.", &[], GaugeMode::Max)
        .unwrap()
        .unlabelled()
        .unwrap()
        .set(2.0);
    p[2].gauge("g", "G.", &[], GaugeMode::Sum)
        .unwrap()
        .unlabelled()
        .unwrap()
        .set(50.0);
    let (text, report) = scrape(dir.path());
    assert_eq!(text, "# HELP g G.\n# TYPE g gauge\ng 2.0\n");
    assert_eq!(kinds(&report), ["gauge_mode"]);
    // In words, not as Rust values.
    assert!(
        report.conflicts[0]
            .detail
            .contains("sum here, max first; its series are left out"),
        "{}",
        report.conflicts[0].detail
    );
}

#[test]
fn buckets_differ_and_are_never_mixed() {
    let dir = tempfile::tempdir().unwrap();
    let p = processes(dir.path(), 2);
    let h0 = p[0].histogram("h_seconds", "H.", &[], &[1.0, 2.0]).unwrap();
    h0.unlabelled().unwrap().observe(0.5);
    h0.unlabelled().unwrap().observe(1.5);
    let h1 = p[1].histogram("h_seconds", "H.", &[], &[1.0, 5.0]).unwrap();
    h1.unlabelled().unwrap().observe(4.0);
    let (text, report) = scrape(dir.path());
    assert_eq!(
        text,
        "# HELP h_seconds H.\n# TYPE h_seconds histogram\n\
         h_seconds_bucket{le=\"1.0\"} 1\n\
         h_seconds_bucket{le=\"2.0\"} 2\n\
         h_seconds_bucket{le=\"+Inf\"} 2\n\
         h_seconds_count 2\n\
         h_seconds_sum 2.0\n"
    );
    assert_eq!(kinds(&report), ["buckets"]);
    assert!(
        report.conflicts[0]
            .detail
            .contains("(1, 5) here, (1, 2) first"),
        "{}",
        report.conflicts[0].detail
    );
}

#[test]
fn families_that_would_share_an_exposed_name() {
    let dir = tempfile::tempdir().unwrap();
    let p = processes(dir.path(), 2);
    p[0].counter("x", "Counter.", &[])
        .unwrap()
        .unlabelled()
        .unwrap()
        .inc();
    p[1].gauge("x_total", "Gauge.", &[], GaugeMode::Sum)
        .unwrap()
        .unlabelled()
        .unwrap()
        .set(9.0);
    let (text, report) = scrape(dir.path());
    assert_eq!(
        text,
        "# HELP x_total Counter.\n# TYPE x_total counter\nx_total 1.0\n"
    );
    assert_eq!(kinds(&report), ["name"]);
    assert!(
        report.conflicts[0]
            .detail
            .contains("gauge x_total would be exposed as x_total, which x already is")
    );

    // The other way round: the older gauge keeps the name.
    let dir = tempfile::tempdir().unwrap();
    let p = processes(dir.path(), 2);
    p[0].gauge("y_total", "Gauge.", &[], GaugeMode::Sum)
        .unwrap()
        .unlabelled()
        .unwrap()
        .set(9.0);
    p[1].counter("y", "Counter.", &[])
        .unwrap()
        .unlabelled()
        .unwrap()
        .inc();
    let (text, report) = scrape(dir.path());
    assert_eq!(
        text,
        "# HELP y_total Gauge.\n# TYPE y_total gauge\ny_total 9.0\n"
    );
    assert_eq!(kinds(&report), ["name"]);
}

#[test]
fn conflicts_appear_in_self_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let p = processes(dir.path(), 2);
    p[0].counter("a", "One.", &[])
        .unwrap()
        .unlabelled()
        .unwrap()
        .inc();
    p[1].counter("a", "Two.", &[])
        .unwrap()
        .unlabelled()
        .unwrap()
        .inc();
    p[0].gauge("b", "B.", &[], GaugeMode::Sum)
        .unwrap()
        .unlabelled()
        .unwrap()
        .set(1.0);
    p[1].counter("b", "B.", &[])
        .unwrap()
        .unlabelled()
        .unwrap()
        .inc();
    let mut reader = Reader::open(dir.path()).unwrap();
    let mut out = Vec::new();
    reader
        .scrape(
            Format::OpenMetrics,
            &PrefixFilter::new(["zzz"]),
            true,
            &mut out,
        )
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    for line in [
        "shmetrics_reader_conflicts{kind=\"help\"} 1.0",
        "shmetrics_reader_conflicts{kind=\"type\"} 1.0",
        "shmetrics_reader_conflicts{kind=\"buckets\"} 0.0",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}
