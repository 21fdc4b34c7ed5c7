//! The reader's own metrics, rendered beside the merged families.

use std::sync::Arc;

use shmetrics_layout::MetricKind;

use crate::report::{ConflictKind, ScrapeReport, SkipReason};
use crate::snapshot::{Family, Series, SeriesLabels, Value};

const SKIP_REASONS: [SkipReason; 10] = [
    SkipReason::FileLimit,
    SkipReason::ForeignFile,
    SkipReason::ForeignOwner,
    SkipReason::Interrupted,
    SkipReason::NotRegular,
    SkipReason::OutOfMemory,
    SkipReason::Squatted,
    SkipReason::StrayArchive,
    SkipReason::Symlink,
    SkipReason::Unreadable,
];

fn gauge(name: &str, help: &str, series: Vec<(Vec<(&str, &str)>, f64)>) -> Family {
    Family {
        name: Arc::from(name),
        kind: MetricKind::Gauge,
        help: Arc::from(help),
        bounds: Arc::from(&[][..]),
        series: series
            .into_iter()
            .map(|(labels, v)| Series {
                labels: Arc::new(SeriesLabels::new(
                    labels
                        .into_iter()
                        .map(|(n, v)| (Box::from(n), Box::from(v)))
                        .collect(),
                )),
                pid: None,
                created_unix_nanos: None,
                exemplars: None,
                value: Value::Gauge(v),
            })
            .collect(),
    }
}

/// The `shmetrics_reader_*` and `shmetrics_writer_*` families describing a scrape, sorted
/// by name.
pub fn self_metrics(report: &ScrapeReport) -> Vec<Family> {
    let mut invalid: Vec<(Vec<(&str, &str)>, f64)> = report
        .problems_by_reason()
        .into_iter()
        .map(|(reason, n)| (vec![("reason", reason.as_str())], n as f64))
        .collect();
    invalid.sort_by(|a, b| a.0.cmp(&b.0));
    vec![
        gauge(
            "shmetrics_reader_compaction_failures",
            "Automatic compactions that failed in a row; each failure doubles the wait before the next attempt.",
            vec![(vec![], f64::from(report.compaction_failures))],
        ),
        gauge(
            "shmetrics_reader_conflicts",
            "Families declared inconsistently across processes, by what differs.",
            ConflictKind::ALL
                .iter()
                .map(|&k| {
                    let n = report.conflicts.iter().filter(|c| c.kind == k).count();
                    (vec![("kind", k.as_str())], n as f64)
                })
                .collect(),
        ),
        gauge(
            "shmetrics_reader_fold_threads",
            "Threads the last snapshot folded the live segments on.",
            vec![(vec![], report.fold_threads as f64)],
        ),
        gauge(
            "shmetrics_reader_invalid_segments",
            "Segments skipped entirely or in part because their bytes failed validation, by reason.",
            invalid,
        ),
        gauge(
            "shmetrics_reader_segments",
            "Segments in the metrics directory, by state.",
            vec![
                (vec![("state", "bad")], report.bad_segments as f64),
                (vec![("state", "dead")], report.dead_segments as f64),
                (vec![("state", "live")], report.live_segments as f64),
            ],
        ),
        gauge(
            "shmetrics_reader_series",
            "Merged series in the last snapshot.",
            vec![(vec![], report.series as f64)],
        ),
        gauge(
            "shmetrics_reader_skipped_files",
            "Directory entries not read as segments of this user, by reason (file_limit, \
             out_of_memory and interrupted are retried at the next scrape).",
            SKIP_REASONS
                .iter()
                .map(|r| {
                    let n = report.skipped.get(r).copied().unwrap_or(0);
                    (vec![("reason", r.as_str())], n as f64)
                })
                .collect(),
        ),
        gauge(
            "shmetrics_writer_dropped_series",
            "Series writers could not place because their segments were full.",
            vec![(vec![], report.dropped_series as f64)],
        ),
    ]
    .into_iter()
    .chain(report.processes.as_ref().map(|p| {
        gauge(
            "shmetrics_reader_process_metrics_writers",
            "Live writers whose process metrics are reported, and those whose pid is not theirs \
             in this pid namespace (no such process here, or another start time): never \
             attributed.",
            vec![
                (vec![("state", "reported")], p.attributed as f64),
                (vec![("state", "unattributed")], p.unattributed as f64),
            ],
        )
    }))
    .filter(|f| !f.series.is_empty())
    .collect()
}
