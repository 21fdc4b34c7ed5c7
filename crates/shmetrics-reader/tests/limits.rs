//! What a segment declares over the exposition limits (`shmetrics_layout::limits`), as a
//! tool other than our writer could write it: that family or series is left out of the
//! merge and reported at every scrape, the rest of the segment is merged, and compaction
//! never folds the file away.

use std::path::Path;

use shmetrics_layout::image::SegmentImage;
use shmetrics_layout::limits::{MAX_BUCKETS, MAX_LABEL_VALUE_LEN};
use shmetrics_layout::record::{FamilyRecord, Record, SeriesRecord};
use shmetrics_layout::slots::slot_words;
use shmetrics_layout::{MetricKind, SegmentIdentity};
use shmetrics_reader::snapshot::Value;
use shmetrics_reader::{Reader, self_metrics};
use shmetrics_writer::{Options, Registry};

fn counter(id: u32, name: &str, labels: &[&str]) -> Record {
    Record::Family(FamilyRecord {
        id,
        kind: MetricKind::Counter,
        mode: None,
        name: name.into(),
        help: "Help.".into(),
        label_names: labels.iter().map(|&l| l.into()).collect(),
        bounds: vec![],
        states: Vec::new(),
    })
}

fn series(family_id: u32, values: &[String]) -> SeriesRecord {
    SeriesRecord {
        family_id,
        label_values: values.to_vec(),
        ..SeriesRecord::default()
    }
}

/// A dead process's segment (no lock held) with, in order: counter `ok_total{a,b}` with a
/// series within the limits (value 5) and one whose label set is over them; a histogram
/// `wide` with `MAX_BUCKETS * 2` buckets and a series; counter `after_total` (value 2).
fn crafted(path: &Path) {
    let mut image = SegmentImage::new(SegmentIdentity {
        pid: 999_999,
        sequence: 0,
        instance_id: 77,
        start_time_ticks: 0,
        created_unix_nanos: 1,
    });
    let long = "v".repeat(MAX_LABEL_VALUE_LEN);
    image.record(counter(0, "ok", &["a", "b"]));
    image.series(series(0, &["x".into(), "y".into()]), vec![5, 0]);
    image.series(series(0, &[long.clone(), long]), vec![7, 0]);
    let bounds: Vec<f64> = (0..MAX_BUCKETS * 2).map(|i| i as f64).collect();
    let width = slot_words(MetricKind::Histogram, bounds.len());
    image.record(Record::Family(FamilyRecord {
        id: 1,
        kind: MetricKind::Histogram,
        mode: None,
        name: "wide".into(),
        help: "Too many buckets.".into(),
        label_names: vec![],
        bounds,
        states: Vec::new(),
    }));
    image.series(series(1, &[]), vec![0; width]);
    image.record(counter(2, "after", &[]));
    image.series(series(2, &[]), vec![2, 0]);
    std::fs::write(path, image.build().unwrap()).unwrap();
}

#[test]
fn what_is_over_the_limits_is_left_out_reported_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let live = Registry::open_simulating_pid(dir.path(), Options::default(), 1).unwrap();
    live.counter("ok_total", "Help.", &["a", "b"])
        .unwrap()
        .labels(&["x", "y"])
        .unwrap()
        .inc_by(1.0);
    let path = dir.path().join("shmetrics-999999-0-crafted.shm");
    crafted(&path);

    let mut reader = Reader::open(dir.path()).unwrap();
    for scrape_number in 0..2 {
        let scrape = reader.snapshot();
        let s = &scrape.snapshot;
        let names: Vec<&str> = s.families.iter().map(|f| &*f.name).collect();
        assert_eq!(names, ["after", "ok"], "scrape {scrape_number}");
        let ok = s.family("ok").unwrap();
        assert_eq!(ok.series.len(), 1);
        assert_eq!(ok.series[0].value, Value::Counter(6.0));
        assert_eq!(
            s.family("after").unwrap().series[0].value,
            Value::Counter(2.0)
        );
        let problems: Vec<_> = scrape.report.problems.iter().collect();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, path);
        assert_eq!(
            problems[0].reason,
            shmetrics_reader::ProblemReason::OverLimit
        );
        assert_eq!(
            problems[0].detail,
            "1 families and 2 series over the exposition limits left out; the first: a \
             series of ok: label names and values of 8194 bytes, more than the limit of \
             8192 for a label set"
        );
        let invalid = self_metrics(&scrape.report)
            .into_iter()
            .find(|f| &*f.name == "shmetrics_reader_invalid_segments")
            .unwrap();
        assert_eq!(invalid.series.len(), 1);
        assert_eq!(invalid.series[0].labels.get("reason"), Some("over_limit"));
        assert_eq!(invalid.series[0].value, Value::Gauge(1.0));
    }
    // The dead segment is not folded: what it holds over the limits stays on disk.
    reader.compact().unwrap();
    assert!(path.exists());
    let scrape = reader.snapshot();
    assert_eq!(
        scrape.snapshot.family("ok").unwrap().series[0].value,
        Value::Counter(6.0)
    );
}
