//! Whole segment files through the reader's real path: the bytes are written as a segment
//! file into a fresh directory, scraped with [`Reader`] (listing, open, header check, mmap,
//! incremental metadata parsing, merge) and taken apart with [`inspect`]. Both must agree,
//! and the snapshot must be exactly what the segment's valid records say.

use std::collections::{BTreeMap, HashMap, HashSet};

use shmetrics::prometheus_collector::DirCollector;
use shmetrics_layout::names::exposed_names;
use shmetrics_layout::record::FamilyRecord;
use shmetrics_layout::{HEADER_SIZE, MIN_SEGMENT_SIZE, MetricKind, SegmentHeader, SegmentIdentity};
use shmetrics_reader::exact::ExactSum;
use shmetrics_reader::inspect::{RecordEntry, SegmentDump, SlotValue, inspect};
use shmetrics_reader::snapshot::{Family, Series, Snapshot, Value};
use shmetrics_reader::{
    ConflictKind, Format, PrefixFilter, ProblemReason, Reader, ScrapeReport, self_metrics,
};

use crate::exposition::{check_render, check_snapshot, owned_pairs};
use crate::scratch_dir;

/// Name under which the input is written: a segment file name, so the reader considers it.
pub const SEGMENT_NAME: &str = "shmetrics-4242-00000000000000aa-0.shm";

/// Identity of the header that [`records`] puts in front of its input.
pub const RECORDS_IDENTITY: SegmentIdentity = SegmentIdentity {
    pid: 4242,
    sequence: 0,
    instance_id: 0xaa,
    start_time_ticks: 1,
    created_unix_nanos: 1_700_000_000_000_000_000,
};

/// `segment_file`: the input is a whole segment file.
pub fn file(data: &[u8]) {
    check_segment_bytes(data);
}

/// `segment_records`: the input is `meta_len` (u32, little-endian) followed by everything
/// after the header; [`records_segment`] puts a valid header in front, so every input
/// reaches the metadata parser and the slots.
pub fn records(data: &[u8]) {
    check_segment_bytes(&records_segment(data));
}

/// The segment file that `segment_records` builds from its input: a valid header for a
/// file of at least [`MIN_SEGMENT_SIZE`] bytes, `meta_len` clamped to the input and
/// rounded down to 8, then the input, zero-padded.
pub fn records_segment(data: &[u8]) -> Vec<u8> {
    let (hint, body) = match data.split_first_chunk::<4>() {
        Some((hint, body)) => (u32::from_le_bytes(*hint) as usize, body),
        None => (0, &[][..]),
    };
    let size = (HEADER_SIZE + body.len())
        .next_multiple_of(8)
        .max(MIN_SEGMENT_SIZE as usize);
    let meta_len = hint.min(body.len()) / 8 * 8;
    let mut header = SegmentHeader::new(size as u64, RECORDS_IDENTITY);
    header.meta_len = meta_len as u64;
    header.slot_floor = (HEADER_SIZE + meta_len) as u64;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(body);
    out.resize(size, 0);
    out
}

/// The `segment_records` input that rebuilds `segment` (a valid segment file) with the same
/// records at the same offsets: its `meta_len`, then everything after its header.
///
/// # Panics
/// If `segment` has no valid header.
pub fn records_input(segment: &[u8]) -> Vec<u8> {
    let header = SegmentHeader::parse(segment, segment.len() as u64).expect("a valid segment");
    let mut out = (header.meta_len as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&segment[HEADER_SIZE..]);
    out
}

/// Writes `bytes` as the only segment of a fresh directory, scrapes it twice and inspects
/// it, and checks everything against everything.
///
/// # Panics
/// When the reader panics, or the scrape, the inspection and the exposition disagree.
pub fn check_segment_bytes(bytes: &[u8]) {
    let dir = scratch_dir();
    // An archive is trusted only at the archive's name (elsewhere it is a stray, counted
    // and left out): put one there, so that its records reach the merge.
    let archive = bytes
        .get(..HEADER_SIZE)
        .and_then(|h| SegmentHeader::parse(h, bytes.len() as u64).ok())
        .is_some_and(|h| h.is_archive());
    let name = if archive {
        shmetrics_reader::compact::ARCHIVE_NAME
    } else {
        SEGMENT_NAME
    };
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("write the segment file");
    let mut reader = Reader::open(dir.path()).expect("open a reader");
    let first = reader.snapshot();
    let dump = inspect(&path).expect("inspect a regular file");
    let _ = dump.to_string();
    check_report(&first.report, &dump);
    check_snapshot(&first.snapshot);
    check_render(&first.snapshot, &self_metrics(&first.report));
    let blocked = check_against_dump(&first.snapshot, &dump, bytes);
    assert_eq!(first.report.conflicts.len(), blocked, "{:?}", first.report);
    assert!(
        first
            .report
            .conflicts
            .iter()
            .all(|c| c.kind == ConflictKind::Name)
    );
    // A second scrape goes through the caches (parsed metadata, dead baseline).
    let second = reader.snapshot();
    assert_eq!(second.report, first.report);
    assert_same_snapshot(&second.snapshot, &first.snapshot);
    check_consumers(&mut reader, dir.path());
}

/// The public ways out of a directory never name a family twice, whatever the segments
/// declare (a segment may use a self-metric's name): `Reader::scrape` with self-metrics in
/// both formats, and the tikv `prometheus` collector with self-metrics.
pub fn check_consumers(reader: &mut Reader, dir: &std::path::Path) {
    for format in [Format::Prometheus, Format::OpenMetrics] {
        let mut out = Vec::new();
        reader
            .scrape(format, &PrefixFilter::default(), true, &mut out)
            .expect("scrape into a buffer");
        let text = String::from_utf8(out).expect("exposition is UTF-8");
        let mut names = HashSet::new();
        for line in text.lines() {
            if let Some(name) = line
                .strip_prefix("# TYPE ")
                .and_then(|rest| rest.split(' ').next())
            {
                assert!(
                    names.insert(name),
                    "{format:?} exposition names {name} twice"
                );
            }
        }
    }
    let collector = DirCollector::open(dir, PrefixFilter::default())
        .expect("open a collector")
        .with_self_metrics(true);
    let (families, _) = collector.collect_with_report();
    let mut names = HashSet::new();
    for f in &families {
        assert!(
            names.insert(f.name()),
            "the collector emits {} twice",
            f.name()
        );
    }
}

/// Snapshots equal, NaN included (floats compared by their `Debug` text).
pub fn assert_same_snapshot(a: &Snapshot, b: &Snapshot) {
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}

/// The scrape's report says what the inspection found: one bad segment for a bad header,
/// else one dead segment with its record error, if any, as the only problem.
fn check_report(report: &ScrapeReport, dump: &SegmentDump) {
    assert_eq!(report.dir_error, None);
    assert!(report.skipped.is_empty(), "{report:?}");
    assert_eq!(report.live_segments, 0);
    let reasons: Vec<&str> = report.problems.iter().map(|p| p.reason.as_str()).collect();
    match &dump.header {
        Err(e) => {
            assert_eq!(
                (report.bad_segments, report.dead_segments),
                (1, 0),
                "{report:?}"
            );
            assert_eq!(reasons, [ProblemReason::from(e).as_str()]);
        }
        Ok(info) => {
            assert_eq!(dump.live, Some(false));
            assert_eq!(
                (report.bad_segments, report.dead_segments),
                (0, 1),
                "{report:?}"
            );
            assert_eq!(report.dropped_series, info.dropped_series);
            // The record error, and each part the archive lists (none exists here).
            let parts = dump
                .records
                .iter()
                .filter(|r| matches!(r.entry, RecordEntry::Part(_)))
                .count();
            let mut want: Vec<&str> = dump
                .record_error
                .iter()
                .map(|e| ProblemReason::from(e).as_str())
                .collect();
            want.extend(std::iter::repeat_n("missing_part", parts));
            want.sort_unstable();
            assert_eq!(reasons, want);
        }
    }
}

/// A merged series: family name, label pairs sorted by name, pid.
pub type SeriesKey = (String, Vec<(String, String)>, Option<u32>);

/// The key of series `s` of family `f`.
pub fn series_key(f: &Family, s: &Series) -> SeriesKey {
    (f.name.to_string(), owned_pairs(&s.labels), s.pid)
}

/// What a single dead segment's valid records must merge into, by the documented rules
/// (docs/semantics.md) applied to the values `inspect` read: a family whose exposed names
/// clash with an earlier family's is left out; `live*` gauges of a dead process and
/// `mostrecent` gauges never written are not shown; `all` gauges carry the segment's pid.
/// Returns how many families were left out.
fn check_against_dump(snapshot: &Snapshot, dump: &SegmentDump, bytes: &[u8]) -> usize {
    let pid = dump.header.as_ref().map_or(0, |h| h.header.pid);
    let mut claimed = HashSet::new();
    let mut blocked = HashSet::new();
    let mut defs: HashMap<&str, &FamilyRecord> = HashMap::new();
    let mut expected: BTreeMap<SeriesKey, Vec<Value>> = BTreeMap::new();
    // The exact sum of each series' summed float (a counter's value, a `sum` gauge's, a
    // histogram's or summary's `_sum`) over its records: the merge rounds it once.
    let mut sums: BTreeMap<SeriesKey, ExactSum> = BTreeMap::new();
    for record in &dump.records {
        let (record, family, value) = match &record.entry {
            RecordEntry::Family(f) => {
                let names = exposed_names(f.kind, &f.name);
                if names.iter().any(|n| claimed.contains(n)) {
                    blocked.insert(f.id);
                } else {
                    claimed.extend(names);
                }
                continue;
            }
            RecordEntry::Series {
                record,
                family,
                value,
            } => (record, family, value),
            // Only in an archive, where it names a segment the archive holds, or a part
            // (missing here, and reported).
            RecordEntry::Folded(_) | RecordEntry::Part(_) => continue,
            // Exemplars do not change values; the exposition parser checks their syntax.
            RecordEntry::Exemplars { .. } => continue,
        };
        // An info's and a stateset's newest value per label set has tests of its own; the
        // fold checked here is of values merged one series at a time.
        if blocked.contains(&family.id)
            || matches!(family.kind, MetricKind::Info | MetricKind::StateSet)
        {
            continue;
        }
        let (value, series_pid) = match value {
            SlotValue::Counter(v) => (Value::Counter(*v), None),
            SlotValue::Gauge(g) => {
                let mode = family.mode.expect("gauges have a mode");
                if mode.live_only() || (mode.needs_timestamp() && g.timestamp == 0) {
                    continue;
                }
                let per_process = matches!(
                    mode,
                    shmetrics_layout::GaugeMode::All | shmetrics_layout::GaugeMode::LiveAll
                );
                // An archive's `all` gauges carry the pid of the process they came from.
                let pid = record.process.map_or(pid, |p| p.pid);
                (Value::Gauge(g.value), per_process.then_some(pid))
            }
            SlotValue::Histogram(h) => (
                Value::Histogram {
                    buckets: h.buckets.clone(),
                    sum: h.sum,
                },
                None,
            ),
            SlotValue::Summary { count, sum, .. } => (
                Value::Summary {
                    count: *count,
                    sum: *sum,
                },
                None,
            ),
        };
        let mut pairs: Vec<(String, String)> = family
            .label_names
            .iter()
            .cloned()
            .zip(record.label_values.iter().cloned())
            .collect();
        pairs.sort();
        defs.insert(&family.name, family);
        let key = (family.name.clone(), pairs, series_pid);
        let sum = sums.entry(key.clone()).or_default();
        // The float part: an archive's exact parts when it has them, else the slot's.
        let float = match &value {
            Value::Counter(_) => {
                let word = |at: u64| {
                    let at = at as usize;
                    u64::from_ne_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
                };
                sum.add_int(word(record.slot_offset));
                f64::from_bits(word(record.slot_offset + 8))
            }
            Value::Gauge(v) => *v,
            Value::Histogram { sum, .. } | Value::Summary { sum, .. } => *sum,
            Value::Info | Value::State { .. } => continue,
        };
        if record.exact_parts.is_empty() {
            sum.add(float);
        } else {
            record.exact_parts.iter().for_each(|&p| sum.add(p));
        }
        expected.entry(key).or_default().push(value);
    }
    let mut got: BTreeMap<SeriesKey, &Value> = BTreeMap::new();
    for f in &snapshot.families {
        let def = defs
            .get(&*f.name)
            .unwrap_or_else(|| panic!("family {} is in no valid record", f.name));
        assert_eq!(f.kind, def.kind);
        assert_eq!(*f.help, def.help);
        assert_eq!(*f.bounds, def.bounds);
        if matches!(f.kind, MetricKind::Info | MetricKind::StateSet) {
            continue;
        }
        for s in &f.series {
            got.insert(series_key(f, s), &s.value);
        }
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "series differ from the segment's records"
    );
    for (key, contributions) in &expected {
        let mode = defs[key.0.as_str()].mode;
        check_fold(got[key], contributions, mode, sums[key].value());
    }
    blocked.len()
}

/// A merged value against the values it folds, in record order: sums for counters, `sum`
/// gauges, histograms and summaries (the float summed exactly, `exact_sum`); one of them
/// for the other gauge modes.
fn check_fold(
    got: &Value,
    contributions: &[Value],
    mode: Option<shmetrics_layout::GaugeMode>,
    exact_sum: f64,
) {
    use shmetrics_layout::GaugeMode;
    let mut iter = contributions.iter();
    let mut want = iter.next().expect("a contribution").clone();
    let summed = !matches!(
        mode,
        Some(
            GaugeMode::All
                | GaugeMode::LiveAll
                | GaugeMode::Min
                | GaugeMode::LiveMin
                | GaugeMode::Max
                | GaugeMode::LiveMax
                | GaugeMode::MostRecent
                | GaugeMode::LiveMostRecent
        )
    );
    if !summed {
        assert!(
            contributions.iter().any(|c| same_value(got, c)),
            "{got:?} is none of {contributions:?}"
        );
        return;
    }
    for next in iter {
        match (&mut want, next) {
            (Value::Counter(_), Value::Counter(_)) | (Value::Gauge(_), Value::Gauge(_)) => {}
            (Value::Histogram { buckets, .. }, Value::Histogram { buckets: b, .. }) => {
                for (t, b) in buckets.iter_mut().zip(b) {
                    *t = t.saturating_add(*b);
                }
            }
            (Value::Summary { count, .. }, Value::Summary { count: c, .. }) => {
                *count = count.saturating_add(*c);
            }
            (a, b) => panic!("one series holds {a:?} and {b:?}"),
        }
    }
    match &mut want {
        Value::Counter(v) | Value::Gauge(v) => *v = exact_sum,
        Value::Histogram { sum, .. } | Value::Summary { sum, .. } => *sum = exact_sum,
        // Not folded here (see `check_segment`).
        Value::Info | Value::State { .. } => {}
    }
    assert!(
        same_value(got, &want),
        "merged {got:?}, records fold to {want:?}"
    );
}

/// Bitwise equality of floats (NaN equals NaN), exact for counts.
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Counter(x), Value::Counter(y)) | (Value::Gauge(x), Value::Gauge(y)) => {
            same_f64(*x, *y)
        }
        (
            Value::Histogram {
                buckets: b1,
                sum: s1,
            },
            Value::Histogram {
                buckets: b2,
                sum: s2,
            },
        ) => b1 == b2 && same_f64(*s1, *s2),
        (Value::Summary { count: c1, sum: s1 }, Value::Summary { count: c2, sum: s2 }) => {
            c1 == c2 && same_f64(*s1, *s2)
        }
        (Value::Info, Value::Info) => true,
        (Value::State { index: i1, .. }, Value::State { index: i2, .. }) => i1 == i2,
        _ => false,
    }
}

/// The same bits, or both NaN.
pub fn same_f64(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}
