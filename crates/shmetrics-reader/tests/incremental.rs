//! A long-lived reader follows the directory: segments that appear after the listing was
//! trusted, writers that die (their totals fold into the dead baseline), and files that
//! vanish.

use std::time::Duration;

use shmetrics_reader::Reader;
use shmetrics_reader::snapshot::Value;
use shmetrics_writer::{GaugeMode, Options, Registry};

fn total(reader: &mut Reader) -> (f64, Option<f64>, usize, usize) {
    let scrape = reader.snapshot();
    let counter = match scrape.snapshot.family("req") {
        Some(f) => f
            .series
            .iter()
            .map(|s| match s.value {
                Value::Counter(v) => v,
                _ => panic!("not a counter"),
            })
            .sum(),
        None => 0.0,
    };
    let gauge = scrape
        .snapshot
        .family("up")
        .map(|f| match f.series[0].value {
            Value::Gauge(v) => v,
            _ => panic!("not a gauge"),
        });
    (
        counter,
        gauge,
        scrape.report.live_segments,
        scrape.report.dead_segments,
    )
}

fn process(dir: &std::path::Path, pid: u32, inc: f64) -> Registry {
    let r = Registry::open_simulating_pid(dir, Options::default(), pid).unwrap();
    r.counter("req_total", "Requests.", &[])
        .unwrap()
        .unlabelled()
        .unwrap()
        .inc_by(inc);
    r.gauge("up", "Live processes.", &[], GaugeMode::LiveSum)
        .unwrap()
        .unlabelled()
        .unwrap()
        .set(1.0);
    r
}

#[test]
fn appearing_dying_and_vanishing_segments() {
    let dir = tempfile::tempdir().unwrap();
    let first = process(dir.path(), 1, 1.0);
    let mut reader = Reader::open(dir.path()).unwrap();
    assert_eq!(total(&mut reader), (1.0, Some(1.0), 1, 0));
    // Let the listing become trusted (older than the directory's mtime by the margin).
    std::thread::sleep(Duration::from_millis(120));
    assert_eq!(total(&mut reader), (1.0, Some(1.0), 1, 0));
    assert_eq!(total(&mut reader), (1.0, Some(1.0), 1, 0));

    // A new process after a trusted listing is seen on the next scrape.
    let second = process(dir.path(), 2, 2.0);
    assert_eq!(total(&mut reader), (3.0, Some(2.0), 2, 0));
    std::thread::sleep(Duration::from_millis(120));
    assert_eq!(total(&mut reader), (3.0, Some(2.0), 2, 0));

    // A writer dies: its counter stays (now from the dead baseline), its live gauge goes.
    let second_path = second.segment_paths()[0].clone();
    drop(second);
    assert_eq!(total(&mut reader), (3.0, Some(1.0), 1, 1));
    assert_eq!(total(&mut reader), (3.0, Some(1.0), 1, 1));
    // Writes by the live process still show on top of the baseline.
    first
        .counter("req_total", "Requests.", &[])
        .unwrap()
        .unlabelled()
        .unwrap()
        .inc_by(10.0);
    assert_eq!(total(&mut reader), (13.0, Some(1.0), 1, 1));

    // A vanished segment is forgotten.
    std::fs::remove_file(&second_path).unwrap();
    assert_eq!(total(&mut reader), (11.0, Some(1.0), 1, 0));

    // And a fresh reader agrees with the long-lived one.
    let mut fresh = Reader::open(dir.path()).unwrap();
    assert_eq!(total(&mut fresh), total(&mut reader));
}

/// Resident kilobytes of this process's read-only mappings of files under `dir` (from
/// `/proc/self/smaps`): the readers' (the writers in this process map read-write).
fn mapped_rss_kib(dir: &std::path::Path) -> u64 {
    let dir = std::fs::canonicalize(dir).unwrap();
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    let mut kib = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            let fields: Vec<&str> = line.split_whitespace().collect();
            inside = fields.get(1) == Some(&"r--s")
                && fields
                    .get(5)
                    .is_some_and(|path| std::path::Path::new(path).starts_with(&dir));
        } else if inside && first == "Rss:" {
            kib += line
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap();
        }
    }
    kib
}

#[test]
fn released_pages_are_read_again_with_current_values() {
    let dir = tempfile::tempdir().unwrap();
    // Big enough segments that their pages are worth counting.
    let options = Options {
        initial_segment_size: 1 << 20,
        ..Options::default()
    };
    let writers: Vec<Registry> = (1..=3)
        .map(|pid| Registry::open_simulating_pid(dir.path(), options.clone(), pid).unwrap())
        .collect();
    let counters: Vec<_> = writers
        .iter()
        .map(|r| {
            let family = r.counter("req_total", "Requests.", &["i"]).unwrap();
            (0..2_000)
                .map(|i| family.labels(&[i.to_string()]).unwrap().clone())
                .collect::<Vec<_>>()
        })
        .collect();

    let mut kept = Reader::open(dir.path()).unwrap();
    kept.set_resident_budget(usize::MAX);
    let mut released = Reader::open(dir.path()).unwrap();
    released.set_resident_budget(0);
    for round in 1..=3u32 {
        for process in &counters {
            for c in process {
                c.inc();
            }
        }
        let a = kept.snapshot().snapshot;
        let b = released.snapshot().snapshot;
        assert_eq!(a, b, "round {round}");
        let family = b.family("req").unwrap();
        assert_eq!(family.series.len(), 2_000);
        for s in &family.series {
            assert_eq!(s.value, Value::Counter(f64::from(3 * round)));
        }
    }
    // Both readers live in this process: the one that keeps its pages has them all mapped;
    // without it, only each segment's header page stays resident (mapped apart, 4 KiB).
    assert!(mapped_rss_kib(dir.path()) >= 3 * 2_000 * 16 / 1024);
    drop(kept);
    assert_eq!(mapped_rss_kib(dir.path()), 3 * 4);
    drop(writers);
}

#[test]
fn the_resident_budget_counts_the_slots_a_scrape_reads_not_the_file_size() {
    let dir = tempfile::tempdir().unwrap();
    // Default segments (256 KiB) with 200 counters each: two pages of slots at their end.
    let writers: Vec<Registry> = (1..=4)
        .map(|pid| Registry::open_simulating_pid(dir.path(), Options::default(), pid).unwrap())
        .collect();
    for w in &writers {
        let family = w.counter("req_total", "Requests.", &["i"]).unwrap();
        for i in 0..200 {
            family.labels(&[i.to_string()]).unwrap().inc();
        }
    }
    let headers_kib = 4 * 4;
    // 256 KiB holds what reading the slots of all four maps (a 64 KiB fault-around window
    // each), though it is the size of one file.
    let mut reader = Reader::open(dir.path()).unwrap();
    reader.set_resident_budget(256 << 10);
    for _ in 0..2 {
        let scrape = reader.snapshot();
        let family = scrape.snapshot.family("req").unwrap();
        assert_eq!(family.series.len(), 200);
        assert!(family.series.iter().all(|s| s.value == Value::Counter(4.0)));
    }
    // At least the page of slots each segment's read touched stays mapped; how many
    // neighbouring pages the kernel maps around a fault depends on what its readahead put
    // in the page cache (56 to 256 KiB seen here), never more than the budget.
    let kept = mapped_rss_kib(dir.path());
    assert!(
        kept >= headers_kib + 4 * 4 && kept <= headers_kib + 256,
        "{kept} KiB mapped: the slot pages of every segment should stay, within the budget"
    );
    // A budget below one segment's slots releases them all after each read.
    drop(reader);
    let mut reader = Reader::open(dir.path()).unwrap();
    reader.set_resident_budget(4 << 10);
    reader.snapshot();
    reader.snapshot();
    assert_eq!(mapped_rss_kib(dir.path()), headers_kib);
    drop(writers);
}
