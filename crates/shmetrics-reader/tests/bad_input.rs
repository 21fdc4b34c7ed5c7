//! Hostile and foreign directory entries: each is skipped and reported with its exact
//! stable reason (in the `ScrapeReport` and in the `shmetrics_reader_*` self-metrics), the
//! scrape neither panics nor blocks, and a good live segment in the same directory is still
//! scraped with its exact values.
//!
//! Corrupt segments are real segments made by the writer (then abandoned), copied and
//! patched at offsets computed from the layout: `HEADER_SIZE`, the header fields of
//! `SegmentHeader`, and the record layout of `crates/shmetrics-layout/src/record.rs`.
//!
//! These tests must run as root (CI does): the foreign-owner case needs `chown`.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use shmetrics_layout::record::{FamilyRecord, Record, RecordHeader, parse_records};
use shmetrics_layout::{HEADER_SIZE, LAYOUT_VERSION, META_LEN_WORD, SegmentHeader};
use shmetrics_reader::{Format, PrefixFilter, Reader, ScrapeReport, SkipReason};
use shmetrics_writer::{GaugeMode, Options, Registry};

/// The live process whose values must survive every bad neighbour.
const GOOD_PID: u32 = 7;
/// The process that wrote the template segment.
const TEMPLATE_PID: u32 = 2;
/// Where bad files go: named like a segment so that the reader considers them.
const BAD_NAME: &str = "shmetrics-2-00000000000000bd-0.shm";

const GOOD_TEXT: &str = "\
# HELP good_level Level.
# TYPE good_level gauge
good_level 2.0
# HELP good_requests_total Requests.
# TYPE good_requests_total counter
good_requests_total{path=\"/\"} 3.5
";
/// What the template's first two records (the counter family and its series) render.
const TEMPLATE_COUNTER_TEXT: &str = "\
# HELP tmpl_requests_total Template requests.
# TYPE tmpl_requests_total counter
tmpl_requests_total{code=\"200\"} 5.0
";
/// What the whole, uncorrupted template renders.
const TEMPLATE_TEXT: &str = "\
# HELP tmpl_level Template level.
# TYPE tmpl_level gauge
tmpl_level{zone=\"north\"} 1.5
# HELP tmpl_requests_total Template requests.
# TYPE tmpl_requests_total counter
tmpl_requests_total{code=\"200\"} 5.0
";

// Record layout (crates/shmetrics-layout/src/record.rs): an 8-byte `RecordHeader`
// { len: u32, kind: u16, reserved: u16 }, a 16-byte fixed part (`FamilyFixed` { id: u32,
// kind: u8, mode: u8, label_count: u16, bucket_count: u32, reserved: u32 } or `SeriesFixed`
// { family_id: u32, label_count: u16, reserved: u16, slot_offset: u64 }), then a family's
// f64 bounds, then strings, each a native u32 length and its bytes.
const RECORD_HEADER_LEN: usize = size_of::<RecordHeader>();
const RECORD_LEN_AT: usize = offset_of!(RecordHeader, len);
const RECORD_KIND_AT: usize = offset_of!(RecordHeader, kind);
const FIXED_LEN: usize = 16;
const SERIES_SLOT_OFFSET_AT: usize = RECORD_HEADER_LEN + 8;

/// A dead segment written by the real writer, as bytes, with the byte range of each record:
/// 0 the counter family `tmpl_requests`, 1 its series `{code="200"}` (5), 2 the gauge family
/// `tmpl_level` (mode sum), 3 its series `{zone="north"}` (1.5).
struct Template {
    bytes: Vec<u8>,
    records: Vec<(Record, usize, usize)>,
}

impl Template {
    fn new() -> Self {
        let scratch = tempfile::tempdir().unwrap();
        let path = {
            let reg =
                Registry::open_simulating_pid(scratch.path(), Options::default(), TEMPLATE_PID)
                    .unwrap();
            reg.counter("tmpl_requests_total", "Template requests.", &["code"])
                .unwrap()
                .labels(&["200"])
                .unwrap()
                .inc_by(5.0);
            reg.gauge("tmpl_level", "Template level.", &["zone"], GaugeMode::Sum)
                .unwrap()
                .labels(&["north"])
                .unwrap()
                .set(1.5);
            let paths = reg.segment_paths();
            assert_eq!(paths.len(), 1);
            paths[0].clone()
            // The registry and its families drop here: the template's writer is dead.
        };
        let bytes = std::fs::read(&path).unwrap();
        let meta_len = read_u64(&bytes, META_LEN_WORD * 8) as usize;
        let mut start = HEADER_SIZE;
        let records: Vec<(Record, usize, usize)> =
            parse_records(&bytes[HEADER_SIZE..HEADER_SIZE + meta_len], 0)
                .map(|r| {
                    let (record, end) = r.expect("the writer's own records parse");
                    let range = (record, start, HEADER_SIZE + end);
                    start = HEADER_SIZE + end;
                    range
                })
                .collect();
        let kinds: Vec<&str> = records
            .iter()
            .map(|(r, _, _)| match r {
                Record::Family(f) => &*f.name,
                Record::Series(_) => "series",
                Record::Folded(_) => "folded",
                Record::Part(_) => "part",
                Record::Exemplars(_) => "exemplars",
            })
            .collect();
        assert_eq!(kinds, ["tmpl_requests", "series", "tmpl_level", "series"]);
        Self { bytes, records }
    }

    fn start(&self, record: usize) -> usize {
        self.records[record].1
    }

    fn family(&self, record: usize) -> &FamilyRecord {
        match &self.records[record].0 {
            Record::Family(f) => f,
            other => panic!("record {record} is not a family: {other:?}"),
        }
    }

    /// Byte offset of the first byte of the family's name, help, and label names.
    fn family_strings(&self, record: usize) -> (usize, usize, Vec<usize>) {
        let f = self.family(record);
        let mut pos = self.start(record) + RECORD_HEADER_LEN + FIXED_LEN + 8 * f.bounds.len();
        let mut next = |s: &str| {
            assert_eq!(read_u32(&self.bytes, pos) as usize, s.len());
            assert_eq!(&self.bytes[pos + 4..pos + 4 + s.len()], s.as_bytes());
            let at = pos + 4;
            pos += 4 + s.len();
            at
        };
        let name = next(&f.name);
        let help = next(&f.help);
        let labels = f.label_names.iter().map(|l| next(l)).collect();
        (name, help, labels)
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn put_u16(bytes: &mut [u8], at: usize, v: u16) {
    bytes[at..at + 2].copy_from_slice(&v.to_ne_bytes());
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// A directory holding one good live segment (pid 7) and whatever a test adds.
struct Fixture {
    dir: tempfile::TempDir,
    good: Registry,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let good = Registry::open_simulating_pid(dir.path(), Options::default(), GOOD_PID).unwrap();
        let requests = good
            .counter("good_requests_total", "Requests.", &["path"])
            .unwrap();
        let root = requests.labels(&["/"]).unwrap();
        root.inc();
        root.inc();
        root.inc();
        root.inc_by(0.5);
        good.gauge("good_level", "Level.", &[], GaugeMode::LiveMax)
            .unwrap()
            .unlabelled()
            .unwrap()
            .set(2.0);
        Self { dir, good }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `bytes` as a segment-like file and returns its path.
    fn write_bad(&self, bytes: &[u8]) -> PathBuf {
        let path = self.path(BAD_NAME);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

/// What three scrapes by a fresh reader produced: text without self-metrics, then text and
/// OpenMetrics with self-metrics (the later two from cached rejections).
struct Outcome {
    report: ScrapeReport,
    text: String,
    with_self: String,
    openmetrics: String,
}

/// Scrapes `dir` on another thread, so that a scrape that blocks (on a FIFO, say) or
/// panics fails the test with a clear message instead of hanging it.
fn scrape(dir: &Path) -> Outcome {
    let dir = dir.to_owned();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let result = std::panic::catch_unwind(move || {
            let mut reader = Reader::open(&dir).unwrap();
            let mut run = |format, self_metrics| {
                let mut out = Vec::new();
                let report = reader
                    .scrape(format, &PrefixFilter::default(), self_metrics, &mut out)
                    .unwrap();
                (String::from_utf8(out).unwrap(), report)
            };
            let (text, report) = run(Format::Prometheus, false);
            let (with_self, again) = run(Format::Prometheus, true);
            let (openmetrics, third) = run(Format::OpenMetrics, true);
            assert_eq!(report, again, "a second scrape reports the same");
            assert_eq!(report, third, "a third scrape reports the same");
            Outcome {
                report,
                text,
                with_self,
                openmetrics,
            }
        });
        let _ = tx.send(result.map_err(|_| ()));
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(())) => panic!("the scrape panicked (message above)"),
        Err(_) => panic!("the scrape did not return within 60 s: it blocked"),
    }
}

/// How a bad entry must be reported.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// The header is invalid: the whole file is a bad segment.
    BadSegment(&'static str),
    /// The header is valid but metadata from some record on is invalid: the segment is
    /// read up to that record (it is a dead segment here) and the tail is reported.
    CorruptTail(&'static str),
    /// Not a candidate segment at all.
    Skipped(SkipReason),
}

/// Scrapes the fixture and checks the report, the self-metrics and the exact text: the good
/// segment's families, plus `template_text` (what survives of the bad file).
fn check(fx: &Fixture, bad: &Path, expect: Expect, template_text: &str) -> Outcome {
    let out = scrape(fx.dir.path());
    let r = &out.report;
    assert_eq!(out.text, format!("{GOOD_TEXT}{template_text}"), "{r:?}");
    assert_eq!(r.live_segments, 1, "the good segment is live: {r:?}");
    assert!(r.conflicts.is_empty(), "{r:?}");
    assert_eq!(r.dir_error, None);
    match expect {
        Expect::BadSegment(reason) | Expect::CorruptTail(reason) => {
            let tail = matches!(expect, Expect::CorruptTail(_));
            assert_eq!(r.problems.len(), 1, "{r:?}");
            assert_eq!(r.problems[0].path, bad);
            assert_eq!(r.problems[0].reason.as_str(), reason, "{r:?}");
            assert_eq!(
                r.problems[0]
                    .detail
                    .starts_with("metadata after this point ignored: "),
                tail,
                "{r:?}"
            );
            assert_eq!(r.bad_segments, usize::from(!tail), "{r:?}");
            assert_eq!(r.dead_segments, usize::from(tail), "{r:?}");
            assert_eq!(r.skipped, BTreeMap::new(), "{r:?}");
            let line = format!("shmetrics_reader_invalid_segments{{reason=\"{reason}\"}} 1.0\n");
            assert!(out.with_self.contains(&line), "{}", out.with_self);
            assert!(out.openmetrics.contains(&line), "{}", out.openmetrics);
            let state = if tail { "dead" } else { "bad" };
            let segments = format!("shmetrics_reader_segments{{state=\"{state}\"}} 1.0\n");
            assert!(out.with_self.contains(&segments), "{}", out.with_self);
        }
        Expect::Skipped(reason) => {
            assert!(r.problems.is_empty(), "{r:?}");
            assert_eq!(r.bad_segments, 0, "{r:?}");
            assert_eq!(r.dead_segments, 0, "{r:?}");
            assert_eq!(r.skipped, BTreeMap::from([(reason, 1)]), "{r:?}");
            assert!(
                !out.with_self
                    .contains("# TYPE shmetrics_reader_invalid_segments"),
                "{}",
                out.with_self
            );
            let line = format!(
                "shmetrics_reader_skipped_files{{reason=\"{}\"}} 1.0\n",
                reason.as_str()
            );
            assert!(out.with_self.contains(&line), "{}", out.with_self);
        }
    }
    assert!(out.openmetrics.ends_with("# EOF\n"));
    out
}

#[test]
fn stable_reason_strings() {
    let reasons: Vec<&str> = [
        SkipReason::Symlink,
        SkipReason::NotRegular,
        SkipReason::ForeignOwner,
        SkipReason::ForeignFile,
        SkipReason::Unreadable,
    ]
    .into_iter()
    .map(SkipReason::as_str)
    .collect();
    assert_eq!(
        reasons,
        [
            "symlink",
            "not_regular",
            "foreign_owner",
            "foreign_file",
            "unreadable"
        ]
    );
}

#[test]
fn good_template_copy_is_read_as_a_dead_segment() {
    // The baseline of every patched case: the unpatched copy scrapes cleanly.
    let fx = Fixture::new();
    fx.write_bad(&Template::new().bytes);
    let out = scrape(fx.dir.path());
    assert_eq!(out.text, format!("{GOOD_TEXT}{TEMPLATE_TEXT}"));
    let r = &out.report;
    assert_eq!(
        (r.live_segments, r.dead_segments, r.bad_segments),
        (1, 1, 0)
    );
    assert!(r.problems.is_empty() && r.skipped.is_empty(), "{r:?}");
}

#[test]
fn zero_byte_file() {
    let fx = Fixture::new();
    let bad = fx.path("shmetrics-1-0000000000000001-0.shm");
    std::fs::write(&bad, b"").unwrap();
    let out = check(&fx, &bad, Expect::BadSegment("truncated_header"), "");
    assert_eq!(
        out.report.problems[0].detail,
        "truncated header: 0 bytes, need 128"
    );
}

#[test]
fn truncated_header() {
    let fx = Fixture::new();
    let t = Template::new();
    let bad = fx.write_bad(&t.bytes[..HEADER_SIZE - 28]);
    let out = check(&fx, &bad, Expect::BadSegment("truncated_header"), "");
    assert_eq!(
        out.report.problems[0].detail,
        "truncated header: 100 bytes, need 128"
    );
}

#[test]
fn file_cut_short() {
    // A copy that lost its end: the header's file size no longer matches.
    let fx = Fixture::new();
    let t = Template::new();
    let bad = fx.write_bad(&t.bytes[..8192]);
    let out = check(&fx, &bad, Expect::BadSegment("file_size_mismatch"), "");
    assert_eq!(
        out.report.problems[0].detail,
        format!(
            "header says the file has {} bytes but it has 8192",
            t.bytes.len()
        )
    );
}

#[test]
fn meta_len_past_the_metadata_area() {
    let fx = Fixture::new();
    let t = Template::new();
    let mut bytes = t.bytes.clone();
    let file_size = bytes.len() as u64;
    put_u64(&mut bytes, META_LEN_WORD * 8, file_size);
    let bad = fx.write_bad(&bytes);
    check(&fx, &bad, Expect::BadSegment("bad_area_bounds"), "");
}

#[test]
fn record_cut_by_meta_len() {
    // meta_len ends 8 bytes into the last record: the records before it still count.
    let fx = Fixture::new();
    let t = Template::new();
    let mut bytes = t.bytes.clone();
    let cut = t.start(3) + 8 - HEADER_SIZE;
    put_u64(&mut bytes, META_LEN_WORD * 8, cut as u64);
    let bad = fx.write_bad(&bytes);
    check(
        &fx,
        &bad,
        Expect::CorruptTail("truncated_record"),
        TEMPLATE_COUNTER_TEXT,
    );
}

#[test]
fn wrong_magic() {
    let fx = Fixture::new();
    let mut bytes = Template::new().bytes;
    bytes[offset_of!(SegmentHeader, magic)..][..8].copy_from_slice(b"PROMETHE");
    let bad = fx.write_bad(&bytes);
    check(&fx, &bad, Expect::BadSegment("bad_magic"), "");
}

#[test]
fn future_layout_version() {
    let fx = Fixture::new();
    let mut bytes = Template::new().bytes;
    put_u32(
        &mut bytes,
        offset_of!(SegmentHeader, version),
        LAYOUT_VERSION + 1,
    );
    let bad = fx.write_bad(&bytes);
    let out = check(&fx, &bad, Expect::BadSegment("unsupported_version"), "");
    assert_eq!(
        out.report.problems[0].detail,
        format!(
            "unsupported layout version {} (this build reads versions 1 to {LAYOUT_VERSION})",
            LAYOUT_VERSION + 1
        )
    );
}

#[test]
fn record_length_outside_the_file() {
    // The gauge family's length claims 1 MiB, far past the 256 KiB file.
    let fx = Fixture::new();
    let t = Template::new();
    let mut bytes = t.bytes.clone();
    assert!(t.bytes.len() < 1 << 20);
    put_u32(&mut bytes, t.start(2) + RECORD_LEN_AT, 1 << 20);
    let bad = fx.write_bad(&bytes);
    check(
        &fx,
        &bad,
        Expect::CorruptTail("truncated_record"),
        TEMPLATE_COUNTER_TEXT,
    );
}

#[test]
fn record_length_malformed() {
    // Not a multiple of 8 (and larger than any record may be).
    let fx = Fixture::new();
    let t = Template::new();
    let mut bytes = t.bytes.clone();
    put_u32(&mut bytes, t.start(2) + RECORD_LEN_AT, u32::MAX);
    let bad = fx.write_bad(&bytes);
    check(
        &fx,
        &bad,
        Expect::CorruptTail("bad_record_length"),
        TEMPLATE_COUNTER_TEXT,
    );
}

#[test]
fn unknown_record_kind_in_a_later_record() {
    // A segment whose later record is corrupt: the counter before it still counts.
    let fx = Fixture::new();
    let t = Template::new();
    let mut bytes = t.bytes.clone();
    put_u16(&mut bytes, t.start(3) + RECORD_KIND_AT, 9);
    let bad = fx.write_bad(&bytes);
    let out = check(
        &fx,
        &bad,
        Expect::CorruptTail("unknown_record_kind"),
        TEMPLATE_COUNTER_TEXT,
    );
    assert_eq!(
        out.report.problems[0].detail,
        format!(
            "metadata after this point ignored: record at metadata offset {} has unknown kind 9",
            t.start(3) - HEADER_SIZE
        )
    );
}

#[test]
fn series_slot_offset_outside_the_file() {
    let fx = Fixture::new();
    let t = Template::new();
    let mut bytes = t.bytes.clone();
    let file_size = bytes.len() as u64;
    put_u64(&mut bytes, t.start(3) + SERIES_SLOT_OFFSET_AT, file_size);
    let bad = fx.write_bad(&bytes);
    let out = check(
        &fx,
        &bad,
        Expect::CorruptTail("bad_record"),
        TEMPLATE_COUNTER_TEXT,
    );
    assert!(
        out.report.problems[0].detail.ends_with(&format!(
            "slots at {file_size} (2 words) outside the slot area"
        )),
        "{:?}",
        out.report.problems[0]
    );
}

#[test]
fn series_slot_offset_inside_the_metadata() {
    // In the file, but pointing at the records themselves.
    let fx = Fixture::new();
    let t = Template::new();
    let mut bytes = t.bytes.clone();
    put_u64(
        &mut bytes,
        t.start(1) + SERIES_SLOT_OFFSET_AT,
        HEADER_SIZE as u64,
    );
    let bad = fx.write_bad(&bytes);
    check(&fx, &bad, Expect::CorruptTail("bad_record"), "");
}

#[test]
fn non_utf8_family_name() {
    let fx = Fixture::new();
    let t = Template::new();
    let mut bytes = t.bytes.clone();
    let (name, _, _) = t.family_strings(2);
    bytes[name] = 0xFF;
    let bad = fx.write_bad(&bytes);
    let out = check(
        &fx,
        &bad,
        Expect::CorruptTail("bad_record"),
        TEMPLATE_COUNTER_TEXT,
    );
    assert!(
        out.report.problems[0]
            .detail
            .ends_with("family name is not UTF-8"),
        "{:?}",
        out.report.problems[0]
    );
}

#[test]
fn non_utf8_label_name() {
    let fx = Fixture::new();
    let t = Template::new();
    let mut bytes = t.bytes.clone();
    let (_, _, labels) = t.family_strings(0);
    bytes[labels[0] + 1] = 0xC3; // A lone lead byte inside "code".
    let bad = fx.write_bad(&bytes);
    let out = check(&fx, &bad, Expect::CorruptTail("bad_record"), "");
    assert!(
        out.report.problems[0]
            .detail
            .ends_with("label name is not UTF-8"),
        "{:?}",
        out.report.problems[0]
    );
}

/// A name outside the classic character set is not bad input (prometheus_client 0.26 takes
/// any UTF-8): the family is read and exposed escaped (`tmpl-requests` as `tmpl_requests`),
/// in raw-name order.
#[test]
fn non_classic_metric_name_is_read_and_escaped() {
    let fx = Fixture::new();
    let t = Template::new();
    let mut bytes = t.bytes.clone();
    let (name, _, _) = t.family_strings(0);
    bytes[name + 4] = b'-'; // "tmpl-requests"
    fx.write_bad(&bytes);
    let out = scrape(fx.dir.path());
    assert!(out.report.problems.is_empty(), "{:?}", out.report);
    let level = TEMPLATE_TEXT.replace(TEMPLATE_COUNTER_TEXT, "");
    assert_eq!(
        out.text,
        format!("{GOOD_TEXT}{TEMPLATE_COUNTER_TEXT}{level}")
    );
}

#[test]
fn invalid_label_name() {
    let fx = Fixture::new();
    let t = Template::new();
    let mut bytes = t.bytes.clone();
    let (_, _, labels) = t.family_strings(2);
    bytes[labels[0]] = b'_'; // "__ne": reserved by Prometheus
    bytes[labels[0] + 1] = b'_';
    let bad = fx.write_bad(&bytes);
    let out = check(
        &fx,
        &bad,
        Expect::CorruptTail("bad_record"),
        TEMPLATE_COUNTER_TEXT,
    );
    assert!(
        out.report.problems[0]
            .detail
            .ends_with("invalid label name \"__ne\" in tmpl_level"),
        "{:?}",
        out.report.problems[0]
    );
}

#[test]
fn symlink_is_not_followed() {
    // A link to a perfectly valid segment outside the directory: still never read.
    let fx = Fixture::new();
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join(BAD_NAME);
    std::fs::write(&target, Template::new().bytes).unwrap();
    let link = fx.path(BAD_NAME);
    std::os::unix::fs::symlink(&target, &link).unwrap();
    check(&fx, &link, Expect::Skipped(SkipReason::Symlink), "");
}

#[test]
fn symlink_to_the_good_segment_is_not_counted_twice() {
    let fx = Fixture::new();
    let good = fx.good.segment_paths()[0].clone();
    let link = fx.path(BAD_NAME);
    std::os::unix::fs::symlink(&good, &link).unwrap();
    check(&fx, &link, Expect::Skipped(SkipReason::Symlink), "");
}

#[test]
fn fifo_does_not_block_the_scrape() {
    let fx = Fixture::new();
    let fifo = fx.path(BAD_NAME);
    nix::unistd::mkfifo(
        &fifo,
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )
    .unwrap();
    check(&fx, &fifo, Expect::Skipped(SkipReason::NotRegular), "");
}

#[test]
fn subdirectory() {
    let fx = Fixture::new();
    let sub = fx.path(BAD_NAME);
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("shmetrics-9-0000000000000009-0.shm"), b"").unwrap();
    check(&fx, &sub, Expect::Skipped(SkipReason::NotRegular), "");
}

#[test]
fn file_of_another_owner() {
    // Needs root to give a file away; CI runs the tests as root.
    assert!(
        nix::unistd::geteuid().is_root(),
        "bad_input tests must run as root (chown to another uid)"
    );
    let fx = Fixture::new();
    // A valid segment, so that only the owner check can keep it out.
    let bad = fx.write_bad(&Template::new().bytes);
    std::os::unix::fs::chown(&bad, Some(4242), Some(4242)).unwrap();
    check(&fx, &bad, Expect::Skipped(SkipReason::ForeignOwner), "");
}

#[test]
fn file_not_named_like_a_segment() {
    let fx = Fixture::new();
    let other = fx.path("notes.txt");
    std::fs::write(&other, Template::new().bytes).unwrap();
    check(&fx, &other, Expect::Skipped(SkipReason::ForeignFile), "");
}

#[test]
fn rejected_file_replaced_by_a_valid_segment_is_read() {
    // The reader caches rejections; a file renamed over a rejected one is read afresh.
    let fx = Fixture::new();
    let bad = fx.write_bad(b"");
    let mut reader = Reader::open(fx.dir.path()).unwrap();
    let first = reader.snapshot().report;
    assert_eq!(
        (first.bad_segments, first.problems.len()),
        (1, 1),
        "{first:?}"
    );
    // As a writer publishes a segment: complete under a hidden name, then renamed.
    let tmp = fx.path(".tmp-replacement");
    std::fs::write(&tmp, Template::new().bytes).unwrap();
    std::fs::rename(&tmp, &bad).unwrap();
    let mut out = Vec::new();
    let report = reader
        .scrape(
            Format::Prometheus,
            &PrefixFilter::default(),
            false,
            &mut out,
        )
        .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("{GOOD_TEXT}{TEMPLATE_TEXT}")
    );
    assert_eq!(
        (
            report.live_segments,
            report.dead_segments,
            report.bad_segments
        ),
        (1, 1, 0)
    );
    assert!(report.problems.is_empty(), "{report:?}");
}

#[test]
fn everything_at_once() {
    // Every kind of bad entry side by side: each is counted once, the good segment and the
    // intact prefixes of corrupt segments are read, and the reports of repeated scrapes
    // (served from the reader's cache of rejections) agree.
    assert!(nix::unistd::geteuid().is_root(), "must run as root");
    let fx = Fixture::new();
    let t = Template::new();
    let write = |name: &str, bytes: &[u8]| std::fs::write(fx.path(name), bytes).unwrap();
    write("shmetrics-1-0000000000000001-0.shm", b"");
    let mut magic = t.bytes.clone();
    magic[..8].copy_from_slice(b"PROMETHE");
    write("shmetrics-2-0000000000000002-0.shm", &magic);
    let mut version = t.bytes.clone();
    put_u32(
        &mut version,
        offset_of!(SegmentHeader, version),
        LAYOUT_VERSION + 1,
    );
    write("shmetrics-3-0000000000000003-0.shm", &version);
    let mut tail = t.bytes.clone();
    put_u16(&mut tail, t.start(3) + RECORD_KIND_AT, 9);
    write("shmetrics-4-0000000000000004-0.shm", &tail);
    write(
        "shmetrics-5-0000000000000005-0.shm",
        &t.bytes[..HEADER_SIZE],
    );
    write("shmetrics-6-0000000000000006-0.shm", &t.bytes[..100]);
    let foreign = fx.path("shmetrics-8-0000000000000008-0.shm");
    std::fs::write(&foreign, &t.bytes).unwrap();
    std::os::unix::fs::chown(&foreign, Some(4242), None).unwrap();
    nix::unistd::mkfifo(
        &fx.path("shmetrics-9-0000000000000009-0.shm"),
        nix::sys::stat::Mode::S_IRUSR,
    )
    .unwrap();
    std::fs::create_dir(fx.path("shmetrics-10-000000000000000a-0.shm")).unwrap();
    std::os::unix::fs::symlink(
        fx.path("shmetrics-4-0000000000000004-0.shm"),
        fx.path("shmetrics-11-000000000000000b-0.shm"),
    )
    .unwrap();
    write("README", b"not a segment");
    write(".tmp-shmetrics-12-000000000000000c-0.shm", b"");

    let out = scrape(fx.dir.path());
    let r = &out.report;
    assert_eq!(out.text, format!("{GOOD_TEXT}{TEMPLATE_COUNTER_TEXT}"));
    assert_eq!(
        (r.live_segments, r.dead_segments, r.bad_segments),
        (1, 1, 5)
    );
    let reasons: Vec<(&str, String)> = r
        .problems
        .iter()
        .map(|p| {
            let name = p.path.file_name().unwrap().to_string_lossy().into_owned();
            (p.reason.as_str(), name)
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("bad_magic", "shmetrics-2-0000000000000002-0.shm".into()),
            (
                "file_size_mismatch",
                "shmetrics-5-0000000000000005-0.shm".into()
            ),
            (
                "truncated_header",
                "shmetrics-1-0000000000000001-0.shm".into()
            ),
            (
                "truncated_header",
                "shmetrics-6-0000000000000006-0.shm".into()
            ),
            (
                "unknown_record_kind",
                "shmetrics-4-0000000000000004-0.shm".into()
            ),
            (
                "unsupported_version",
                "shmetrics-3-0000000000000003-0.shm".into()
            ),
        ]
    );
    assert_eq!(
        r.skipped,
        BTreeMap::from([
            (SkipReason::Symlink, 1),
            (SkipReason::NotRegular, 2),
            (SkipReason::ForeignOwner, 1),
            (SkipReason::ForeignFile, 1),
        ])
    );
    for line in [
        "shmetrics_reader_invalid_segments{reason=\"bad_magic\"} 1.0",
        "shmetrics_reader_invalid_segments{reason=\"file_size_mismatch\"} 1.0",
        "shmetrics_reader_invalid_segments{reason=\"truncated_header\"} 2.0",
        "shmetrics_reader_invalid_segments{reason=\"unknown_record_kind\"} 1.0",
        "shmetrics_reader_invalid_segments{reason=\"unsupported_version\"} 1.0",
        "shmetrics_reader_segments{state=\"bad\"} 5.0",
        "shmetrics_reader_segments{state=\"dead\"} 1.0",
        "shmetrics_reader_segments{state=\"live\"} 1.0",
        "shmetrics_reader_skipped_files{reason=\"foreign_file\"} 1.0",
        "shmetrics_reader_skipped_files{reason=\"foreign_owner\"} 1.0",
        "shmetrics_reader_skipped_files{reason=\"not_regular\"} 2.0",
        "shmetrics_reader_skipped_files{reason=\"symlink\"} 1.0",
        "shmetrics_reader_skipped_files{reason=\"unreadable\"} 0.0",
    ] {
        assert!(
            out.with_self.lines().any(|l| l == line),
            "missing {line}:\n{}",
            out.with_self
        );
    }
}
