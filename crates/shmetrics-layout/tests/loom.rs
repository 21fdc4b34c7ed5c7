//! loom models of the publish protocols: every interleaving of a writer and a reader (and
//! every value a relaxed load may return under the C++11 memory model) is explored, and each
//! model asserts what a scrape relies on. They run only when the crate is built for loom:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p shmetrics-layout --test loom --release
//! ```
//!
//! (`ci/loom.sh` does that with its own target directory.) The slot operations, byte copies
//! and record parsers under test are the crate's own, running on loom's atomics through
//! `shmetrics_layout::sync`. What happens between processes through the file system
//! (`rename`, `unlink`, a directory listing) is modelled by sequentially consistent
//! atomics: those system calls are totally ordered and visible to every later call.
//! `docs/concurrency.md` lists the pairs; `docs/reliability.md` records the last run.
#![cfg(loom)]

use loom::thread;
use std::sync::Arc;

use shmetrics_layout::exemplar::{
    EXEMPLAR_WORDS, Exemplar, ExemplarRead, encode_exemplar_labels, exemplar_read, exemplar_store,
};
use shmetrics_layout::record::{FamilyRecord, Record, SeriesRecord, parse_records};
use shmetrics_layout::slots::{
    GaugeValue, HistogramValue, counter_add, counter_inc, counter_read, gauge_add, gauge_read,
    gauge_set, histogram_observe, histogram_read, slot_words,
};
use shmetrics_layout::sync::{AtomicU64, Ordering};
use shmetrics_layout::view::{append_records, load_bytes, published_meta_len, store_bytes};
use shmetrics_layout::{
    HEADER_SIZE, MIN_SEGMENT_SIZE, MetricKind, SegmentHeader, SegmentIdentity, check_bounds,
};

fn words(n: usize) -> Arc<Vec<AtomicU64>> {
    Arc::new((0..n).map(|_| AtomicU64::new(0)).collect())
}

fn read_histogram(w: &[AtomicU64], bucket_count: usize) -> HistogramValue {
    let mut out = HistogramValue {
        buckets: vec![],
        sum: 0.0,
        consistent: false,
    };
    histogram_read(w, bucket_count, &mut out);
    out
}

/// Two threads observe into one histogram (bounds `[5]`) while a reader reads it. A read
/// that calls itself consistent shows exactly the observations it counts: buckets, count
/// and sum agree. Once the writers are done, the read is consistent and complete.
///
/// Three threads make the exhaustive search too long (minutes); five preemptions (13 s)
/// cover every interleaving in which each thread is interrupted at most a few times.
#[test]
fn histogram_reads_are_consistent_or_say_so() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(5);
    model.check(|| {
        let w = words(slot_words(MetricKind::Histogram, 1));
        let writers: Vec<_> = [(0, 1.0), (1, 10.0)]
            .into_iter()
            .map(|(bucket, v)| {
                let w = w.clone();
                thread::spawn(move || histogram_observe(&w, bucket, v))
            })
            .collect();
        let seen = read_histogram(&w, 1);
        if seen.consistent {
            let expected_sum = seen.buckets[0] as f64 * 1.0 + seen.buckets[1] as f64 * 10.0;
            assert_eq!(seen.sum, expected_sum, "{seen:?}");
            assert!(seen.buckets.iter().all(|&n| n <= 1), "{seen:?}");
        }
        for writer in writers {
            writer.join().unwrap();
        }
        let end = read_histogram(&w, 1);
        assert!(end.consistent);
        assert_eq!((end.buckets.as_slice(), end.sum), (&[1, 1][..], 11.0));
    });
}

/// One thread observes twice while a reader reads twice: no bucket and no count goes down
/// between the reader's two reads, and the sum of a consistent read matches its buckets.
#[test]
fn histogram_reads_never_go_down() {
    loom::model(|| {
        let w = words(slot_words(MetricKind::Histogram, 1));
        let writer = {
            let w = w.clone();
            thread::spawn(move || {
                histogram_observe(&w, 1, 8.0);
                histogram_observe(&w, 0, 2.0);
            })
        };
        let first = read_histogram(&w, 1);
        let second = read_histogram(&w, 1);
        for (a, b) in first.buckets.iter().zip(&second.buckets) {
            assert!(a <= b, "{first:?} then {second:?}");
        }
        for read in [&first, &second] {
            if read.consistent {
                let expected = read.buckets[0] as f64 * 2.0 + read.buckets[1] as f64 * 8.0;
                assert_eq!(read.sum, expected, "{read:?}");
            }
        }
        writer.join().unwrap();
    });
}

/// A `mostrecent` gauge: a reader that sees a write's time sees that write's value or a
/// later one, never an older value under a newer time (the merge picks the value with the
/// newest time across processes, so a mismatched pair would pick a stale value).
#[test]
fn mostrecent_gauge_time_publishes_its_value() {
    loom::model(|| {
        let w = words(slot_words(MetricKind::Gauge, 0));
        let writer = {
            let w = w.clone();
            thread::spawn(move || {
                gauge_set(&w, 1.0, Some(10));
                gauge_set(&w, 2.0, Some(20));
            })
        };
        let GaugeValue { value, timestamp } = gauge_read(&w);
        let allowed: &[f64] = match timestamp {
            0 => &[0.0, 1.0, 2.0],
            10 => &[1.0, 2.0],
            20 => &[2.0],
            other => panic!("time {other} was never written"),
        };
        assert!(allowed.contains(&value), "{value} at time {timestamp}");
        writer.join().unwrap();
        assert_eq!(
            gauge_read(&w),
            GaugeValue {
                value: 2.0,
                timestamp: 20
            }
        );
    });
}

/// The f64 words (a counter's fraction, a gauge's value) are updated by compare-and-swap
/// loops: concurrent additions from two threads are all kept.
#[test]
fn concurrent_float_additions_are_all_kept() {
    loom::model(|| {
        let counter = words(slot_words(MetricKind::Counter, 0));
        let gauge = words(slot_words(MetricKind::Gauge, 0));
        let other = {
            let (counter, gauge) = (counter.clone(), gauge.clone());
            thread::spawn(move || {
                counter_add(&counter, 0.25);
                gauge_add(&gauge, -1.5, None);
            })
        };
        counter_add(&counter, 0.5);
        counter_inc(&counter, 2);
        gauge_add(&gauge, 4.0, None);
        other.join().unwrap();
        assert_eq!(counter_read(&counter), 2.75);
        assert_eq!(gauge_read(&gauge).value, 2.5);
    });
}

/// The contention signal of a float addition (`counter_add`'s return, which writers use to
/// spread a series over copies): an addition says it met another write exactly when the
/// other thread's addition landed between its read and its exchange, and both are kept
/// either way. Over loom's interleavings both answers occur.
#[test]
fn a_float_addition_says_when_another_write_came_between() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static SEEN_CONTENDED: AtomicBool = AtomicBool::new(false);
    static SEEN_ALONE: AtomicBool = AtomicBool::new(false);
    loom::model(|| {
        let counter = words(slot_words(MetricKind::Counter, 0));
        let other = {
            let counter = counter.clone();
            thread::spawn(move || counter_add(&counter, 0.25))
        };
        let mine = counter_add(&counter, 0.5);
        let theirs = other.join().unwrap();
        assert_eq!(counter_read(&counter), 0.75);
        // Two additions: at most one can find the other's write in its window.
        assert!(!(mine && theirs));
        let seen = if mine || theirs {
            &SEEN_CONTENDED
        } else {
            &SEEN_ALONE
        };
        seen.store(true, Ordering::Relaxed);
    });
    assert!(SEEN_CONTENDED.load(Ordering::Relaxed));
    assert!(SEEN_ALONE.load(Ordering::Relaxed));
}

fn family(id: u32, name: &str) -> FamilyRecord {
    FamilyRecord {
        id,
        kind: MetricKind::Counter,
        mode: None,
        name: name.into(),
        help: String::new(),
        label_names: vec![],
        bounds: vec![],
        states: Vec::new(),
    }
}

fn series(family_id: u32, slot_offset: usize) -> SeriesRecord {
    SeriesRecord {
        family_id,
        slot_offset: slot_offset as u64,
        label_values: vec![],
        created_unix_nanos: Some(1),
        process: None,
        exact_parts: Vec::new(),
    }
}

/// A segment image as a writer builds it: header words, metadata records appended and
/// published by `meta_len`, slots allocated from the end.
struct Image {
    words: Vec<AtomicU64>,
}

/// The smallest segment a reader accepts; a model touches only a few dozen of its words.
const IMAGE_BYTES: usize = MIN_SEGMENT_SIZE as usize;

impl Image {
    fn new() -> Self {
        Self {
            words: (0..IMAGE_BYTES / 8).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// What a writer does before the file is linked into the directory (`pwrite` of the
    /// header and the initial records, then `rename`): nothing here is published yet.
    fn initialise(&self, identity: SegmentIdentity, meta: &[u8]) {
        let mut header = SegmentHeader::new(IMAGE_BYTES as u64, identity);
        header.meta_len = meta.len() as u64;
        header.slot_floor = IMAGE_BYTES as u64 - 32;
        store_bytes(&self.words, 0, header.as_bytes());
        store_bytes(&self.words, HEADER_SIZE, meta);
    }

    /// What the writer's `Segment::append_record` does.
    fn append(&self, meta_len: &mut usize, bytes: &[u8]) {
        *meta_len = append_records(&self.words, *meta_len, bytes);
    }
}

/// A reader's incremental parse of one segment, as `shmetrics-reader`'s `parse_published`
/// does it: acquire `meta_len`, copy the new bytes, parse them from where it stopped.
struct Parsed {
    parsed_len: usize,
    records: Vec<Record>,
}

impl Parsed {
    fn new() -> Self {
        Self {
            parsed_len: 0,
            records: Vec::new(),
        }
    }

    fn catch_up(&mut self, image: &Image) {
        let meta_len = published_meta_len(&image.words) as usize;
        assert!(meta_len >= self.parsed_len && meta_len.is_multiple_of(8));
        let mut bytes = Vec::new();
        load_bytes(
            &image.words,
            HEADER_SIZE + self.parsed_len,
            meta_len - self.parsed_len,
            &mut bytes,
        );
        for parsed in parse_records(&bytes, self.parsed_len) {
            let (record, end) = parsed.expect("published metadata parses");
            self.records.push(record);
            self.parsed_len = end;
        }
        assert_eq!(
            self.parsed_len, meta_len,
            "every published byte is a whole record"
        );
    }
}

/// Metadata records appended one by one while a reader parses incrementally: every parse
/// succeeds, the reader sees a prefix of the records in order, and a series it sees has its
/// slot already reserved inside the file.
#[test]
fn metadata_records_are_published_whole() {
    loom::model(|| {
        let image = Arc::new(Image::new());
        let records = [
            family(0, "requests").encode(),
            series(0, IMAGE_BYTES - 16).encode(),
        ];
        let writer = {
            let image = image.clone();
            let records = records.clone();
            thread::spawn(move || {
                let mut meta_len = 0;
                for bytes in &records {
                    image.append(&mut meta_len, bytes);
                }
            })
        };
        let mut parsed = Parsed::new();
        parsed.catch_up(&image);
        parsed.catch_up(&image);
        writer.join().unwrap();
        parsed.catch_up(&image);
        assert_eq!(parsed.records.len(), 2);
        assert_eq!(parsed.records[0], Record::Family(family(0, "requests")));
        assert_eq!(
            parsed.records[1],
            Record::Series(series(0, IMAGE_BYTES - 16))
        );
    });
}

/// A continuation segment: the writer's first segment is full, so it writes a second one
/// (header and the family record), links it (`rename`), then appends a series there and
/// counts on it. A reader that finds the file finds a valid header and parseable records;
/// it never sees a series' count before the series, and no scrape total goes down.
#[test]
fn continuation_segments_appear_whole() {
    let identity = |sequence| SegmentIdentity {
        pid: 7,
        sequence,
        instance_id: 9,
        start_time_ticks: 11,
        created_unix_nanos: 13,
    };
    loom::model(move || {
        let first = Arc::new(Image::new());
        let second = Arc::new(Image::new());
        // Stands for the directory entry: 0 until `rename` links the continuation.
        let linked = Arc::new(AtomicU64::new(0));
        let first_slot = IMAGE_BYTES - 16;
        let mut meta = family(0, "tokens").encode();
        meta.extend(series(0, first_slot).encode());
        first.initialise(identity(0), &meta);
        counter_inc(&first.words[first_slot / 8..], 1);

        let writer = {
            let (second, linked) = (second.clone(), linked.clone());
            thread::spawn(move || {
                let family_record = family(0, "tokens").encode();
                second.initialise(identity(1), &family_record);
                // SeqCst: `rename` is a system call ordered with every later listing.
                linked.store(1, Ordering::SeqCst);
                let mut meta_len = family_record.len();
                second.append(&mut meta_len, &series(0, first_slot).encode());
                counter_inc(&second.words[first_slot / 8..], 3);
            })
        };

        let mut totals = Vec::new();
        let mut parsed = [Parsed::new(), Parsed::new()];
        for _ in 0..2 {
            let mut total = 0.0;
            let listed = if linked.load(Ordering::SeqCst) == 1 {
                2
            } else {
                1
            };
            for (image, parsed) in [&*first, &*second]
                .into_iter()
                .zip(&mut parsed)
                .take(listed)
            {
                let mut head = Vec::new();
                load_bytes(&image.words, 0, HEADER_SIZE, &mut head);
                let header = SegmentHeader::parse(&head, IMAGE_BYTES as u64)
                    .expect("a linked segment has a valid header");
                check_bounds(IMAGE_BYTES as u64, header.meta_len, header.slot_floor).unwrap();
                parsed.catch_up(image);
                for record in &parsed.records {
                    if let Record::Series(s) = record {
                        let at = s.slot_offset as usize / 8;
                        total += counter_read(&image.words[at..at + 2]);
                    }
                }
            }
            totals.push(total);
        }
        assert!(totals[0] <= totals[1], "a total went down: {totals:?}");
        writer.join().unwrap();
    });
}

/// The compaction hand-off between a compactor and a reader, over a model of the directory.
///
/// Segments: one live (its count never changes here) and two dead ones, `A` and `B`. The
/// archive in place is named by its generation (0: none); generation 1 folds `A`,
/// generation 2 folds `A` and `B`. A first compactor run folds `A` and may be killed after
/// any of its steps; a second run then folds `B` (and finishes what the first left). The
/// reader scrapes meanwhile and must count every process exactly once.
mod compaction {
    use super::*;

    const LIVE: u64 = 1;
    const A: u64 = 10;
    const B: u64 = 100;
    const EVERYTHING: u64 = LIVE + A + B;

    /// The directory: which archive generation is in place and which segment files exist.
    struct Directory {
        archive: AtomicU64,
        a_exists: AtomicU64,
        b_exists: AtomicU64,
    }

    /// What each archive generation holds: its folded count and which segments it lists.
    fn archive(generation: u64) -> (u64, bool, bool) {
        match generation {
            0 => (0, false, false),
            1 => (A, true, false),
            2 => (A + B, true, true),
            other => panic!("no archive generation {other}"),
        }
    }

    /// The compactor's steps after it has written and synced its temporary archive: rename
    /// it into place, then remove the segments it folded.
    fn compact(dir: &Directory, crash_after: usize) {
        // Run 1: fold A into generation 1.
        let steps: [&dyn Fn(); 2] = [&|| dir.archive.store(1, Ordering::SeqCst), &|| {
            dir.a_exists.store(0, Ordering::SeqCst)
        }];
        for step in steps.iter().take(crash_after) {
            step();
        }
        // Run 2, after a restart: the newest archive is 1 if run 1 got as far as its rename,
        // else none; either way generation 2 holds A and B. Then remove what it folded.
        dir.archive.store(2, Ordering::SeqCst);
        dir.a_exists.store(0, Ordering::SeqCst);
        dir.b_exists.store(0, Ordering::SeqCst);
    }

    /// One scrape. `relist` is the reader's `archive_is_current` check: list again when the
    /// archive in place is no longer the one opened during the listing.
    fn scrape(dir: &Directory, relist: bool) -> u64 {
        loop {
            let generation = dir.archive.load(Ordering::SeqCst);
            let a = dir.a_exists.load(Ordering::SeqCst) == 1;
            let b = dir.b_exists.load(Ordering::SeqCst) == 1;
            if relist && dir.archive.load(Ordering::SeqCst) != generation {
                continue;
            }
            let (archived, a_folded, b_folded) = archive(generation);
            let a = if a && !a_folded { A } else { 0 };
            let b = if b && !b_folded { B } else { 0 };
            return LIVE + archived + a + b;
        }
    }

    /// Runs the model; returns whether some interleaving lost or doubled a count (a model
    /// must not panic for that: loom aborts when a panic unwinds through its threads).
    fn model(crash_after: usize, relist: bool) -> bool {
        let wrong = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = wrong.clone();
        loom::model(move || {
            let dir = Arc::new(Directory {
                archive: AtomicU64::new(0),
                a_exists: AtomicU64::new(1),
                b_exists: AtomicU64::new(1),
            });
            let compactor = {
                let dir = dir.clone();
                thread::spawn(move || compact(&dir, crash_after))
            };
            let first = scrape(&dir, relist);
            let second = scrape(&dir, relist);
            compactor.join().unwrap();
            let last = scrape(&dir, relist);
            if [first, second, last] != [EVERYTHING; 3] {
                seen.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        });
        wrong.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[test]
    fn killed_before_the_rename() {
        assert!(!model(0, true));
    }

    #[test]
    fn killed_after_the_rename() {
        assert!(!model(1, true));
    }

    #[test]
    fn completed() {
        assert!(!model(2, true));
    }

    /// The model can fail: without the re-listing, a scrape that opens the old archive and
    /// then lists after the removals misses a folded process.
    #[test]
    fn a_reader_that_does_not_relist_loses_counts() {
        assert!(model(2, false));
    }
}

/// A writer stores two exemplars in a row while a reader reads the slot: the reader sees
/// none yet, the first or the second whole, or gives up on a write in progress (and shows
/// nothing this scrape); never fields of one with fields of the other. Once the writer is
/// done, the second is read.
#[test]
fn exemplar_reads_are_whole_or_nothing() {
    assert!(!exemplar_model(exemplar_read), "a read mixed two exemplars");
}

/// The model can fail: a reader that copies the fields without checking the sequence
/// again mixes the two exemplars in some interleaving.
#[test]
fn an_exemplar_read_without_the_sequence_check_mixes_writes() {
    fn unchecked(w: &[AtomicU64]) -> ExemplarRead {
        let value = f64::from_bits(w[1].load(Ordering::Relaxed));
        let unix_nanos = w[2].load(Ordering::Relaxed);
        let len = w[3].load(Ordering::Relaxed) as usize;
        let bytes = w[4].load(Ordering::Relaxed).to_ne_bytes();
        match shmetrics_layout::exemplar::decode_exemplar_labels(&bytes[..len.min(8)]) {
            _ if len == 0 => ExemplarRead::Empty,
            Some(labels) => ExemplarRead::Exemplar(Exemplar {
                labels,
                value,
                unix_nanos,
            }),
            None => ExemplarRead::Invalid,
        }
    }
    assert!(exemplar_model(unchecked));
}

/// Runs the two-exemplar model with `read` as the reader; whether some interleaving gave a
/// read that is neither exemplar (nor none).
fn exemplar_model(read: fn(&[AtomicU64]) -> ExemplarRead) -> bool {
    let mixed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let found = mixed.clone();
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(move || {
        let w = words(EXEMPLAR_WORDS);
        // Labels of one word each: the model's state space stays small.
        let exemplar = |name: &str, value: f64, unix_nanos: u64| Exemplar {
            labels: vec![(name.to_owned(), "v".to_owned())],
            value,
            unix_nanos,
        };
        let (first, second) = (exemplar("a", 1.0, 10), exemplar("b", 2.0, 20));
        let writer = {
            let w = w.clone();
            let (first, second) = (first.clone(), second.clone());
            thread::spawn(move || {
                for e in [first, second] {
                    let labels = encode_exemplar_labels(&e.labels).unwrap();
                    assert!(exemplar_store(&w, e.value, e.unix_nanos, &labels));
                }
            })
        };
        let whole = match read(&w) {
            ExemplarRead::Empty | ExemplarRead::Torn => true,
            ExemplarRead::Exemplar(e) => e == first || e == second,
            ExemplarRead::Invalid => false,
        };
        if !whole {
            found.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        writer.join().unwrap();
        assert_eq!(exemplar_read(&w), ExemplarRead::Exemplar(second));
    });
    mixed.load(std::sync::atomic::Ordering::Relaxed)
}
