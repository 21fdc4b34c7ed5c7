//! Compaction: dead processes fold into one archive and their files go, and nothing a
//! scrape shows changes: not after a complete run, not after a run killed at any step, not
//! while other readers scrape.

use shmetrics_layout::sync::AtomicU64;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use shmetrics_reader::compact::{ARCHIVE_NAME, COMPACT_LOCK_NAME, CompactStop};
use shmetrics_reader::snapshot::{Snapshot, Value};
use shmetrics_reader::{CompactError, Compactor, Reader};
use shmetrics_writer::{GaugeMode, Options, Registry};

/// Process `pid` writes one series of every type and every gauge mode, with values that
/// depend on `pid` (so that sums, minima and maxima are all different).
fn process(dir: &Path, pid: u32) -> Registry {
    let r = Registry::open_simulating_pid(dir, Options::default(), pid).unwrap();
    let p = f64::from(pid);
    let c = r.counter("req_total", "Requests.", &["route"]).unwrap();
    c.labels(&["/a"]).unwrap().inc_by(p);
    c.labels(&[format!("/p{}", pid % 3)]).unwrap().inc_by(0.5);
    let h = r
        .histogram("lat", "Latency.", &["route"], &[1.0, 10.0])
        .unwrap();
    for v in [0.5, 5.0, p] {
        h.labels(&["/a"]).unwrap().observe(v);
    }
    let s = r.summary("size", "Sizes.", &[]).unwrap();
    s.unlabelled().unwrap().observe(p * 2.0);
    for mode in GaugeMode::ALL {
        let g = r
            .gauge(&format!("g_{mode}"), "A gauge.", &["k"], mode)
            .unwrap();
        g.labels(&["x"]).unwrap().set(p * 10.0 + 1.0);
    }
    // Make `mostrecent` writes of different processes differ in time.
    std::thread::sleep(Duration::from_millis(2));
    r
}

fn files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

fn snapshot(dir: &Path) -> Snapshot {
    Reader::open(dir).unwrap().snapshot().snapshot
}

fn counter(s: &Snapshot, route: &str) -> f64 {
    let f = s.family("req").expect("req family");
    f.series
        .iter()
        .find(|x| x.labels.get("route") == Some(route))
        .map_or(0.0, |x| match x.value {
            Value::Counter(v) => v,
            ref other => panic!("{other:?}"),
        })
}

#[test]
fn folding_dead_processes_changes_no_sample() {
    let dir = tempfile::tempdir().unwrap();
    let live: Vec<Registry> = (1..=2).map(|pid| process(dir.path(), pid)).collect();
    for pid in 10..15 {
        drop(process(dir.path(), pid));
    }
    let before = snapshot(dir.path());
    let mut reader = Reader::open(dir.path()).unwrap();
    assert_eq!(reader.snapshot().snapshot, before);

    let report = reader.compact().unwrap();
    assert_eq!(report.generation, Some(0));
    assert_eq!(report.folded_segments, 5);
    assert_eq!(report.removed_files, 5);
    assert_eq!(report.conflicting_series, 0);
    // Live segments and the archive only.
    assert_eq!(files(dir.path()).len(), 3, "{:?}", files(dir.path()));
    assert!(files(dir.path()).contains(ARCHIVE_NAME));
    assert_eq!(reader.snapshot().snapshot, before, "the compacting reader");
    assert_eq!(snapshot(dir.path()), before, "a fresh reader");

    // A second generation folds the archive and new deaths, including one of the first
    // live processes; a pid that comes back is a new process.
    let mut live = live;
    drop(live.remove(0));
    for pid in 20..23 {
        drop(process(dir.path(), pid));
    }
    let reborn = process(dir.path(), 12);
    let before = snapshot(dir.path());
    let report = reader.compact().unwrap();
    assert_eq!(report.generation, Some(1));
    assert_eq!(report.folded_segments, 4);
    assert_eq!(files(dir.path()).len(), 3, "{:?}", files(dir.path()));
    assert_eq!(reader.snapshot().snapshot, before);
    assert_eq!(snapshot(dir.path()), before);
    // The `all` gauge keeps one value per process, the reborn pid 12 showing its own.
    let all = before.family("g_all").unwrap();
    let pids: Vec<u32> = all.series.iter().filter_map(|s| s.pid).collect();
    assert_eq!(pids, [1, 2, 10, 11, 12, 13, 14, 20, 21, 22]);
    drop(reborn);
    drop(live);
}

#[test]
fn nothing_to_fold_leaves_the_directory_alone() {
    let dir = tempfile::tempdir().unwrap();
    let live = process(dir.path(), 1);
    let before = files(dir.path());
    let report = Reader::open(dir.path()).unwrap().compact().unwrap();
    assert_eq!(report.generation, None);
    assert_eq!((report.folded_segments, report.removed_files), (0, 0));
    assert_eq!(files(dir.path()), before);
    drop(live);
}

/// A compactor killed at any step: readers see the same samples meanwhile, and the next
/// compaction finishes the job.
#[test]
fn a_compactor_killed_at_any_step_loses_and_doubles_nothing() {
    let stops = [
        CompactStop::BeforeRename,
        CompactStop::AfterRemoving(0),
        CompactStop::AfterRemoving(1),
        CompactStop::AfterRemoving(3),
    ];
    for stop in stops {
        let dir = tempfile::tempdir().unwrap();
        let live = process(dir.path(), 1);
        for pid in 2..6 {
            drop(process(dir.path(), pid));
        }
        // A first generation, so that the killed run also has an old archive to replace.
        Reader::open(dir.path()).unwrap().compact().unwrap();
        for pid in 6..9 {
            drop(process(dir.path(), pid));
        }
        let before = snapshot(dir.path());
        let mut watcher = Reader::open(dir.path()).unwrap();
        assert_eq!(watcher.snapshot().snapshot, before);

        let mut killed = Reader::open(dir.path()).unwrap();
        killed.compact_stopping(Some(stop)).unwrap();
        drop(killed);
        assert_eq!(snapshot(dir.path()), before, "{stop:?}: a fresh reader");
        assert_eq!(
            watcher.snapshot().snapshot,
            before,
            "{stop:?}: a running reader"
        );

        let report = Reader::open(dir.path()).unwrap().compact().unwrap();
        assert_eq!(report.generation, Some(1), "{stop:?}");
        assert_eq!(
            files(dir.path()).len(),
            2,
            "{stop:?}: {:?}",
            files(dir.path())
        );
        assert_eq!(snapshot(dir.path()), before, "{stop:?}: after finishing");
        assert_eq!(
            watcher.snapshot().snapshot,
            before,
            "{stop:?}: after finishing"
        );
        drop(live);
    }
}

#[test]
fn one_compactor_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    drop(process(dir.path(), 1));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.path().join(COMPACT_LOCK_NAME))
        .unwrap();
    lock.lock().unwrap();
    let err = Reader::open(dir.path()).unwrap().compact().unwrap_err();
    assert!(matches!(err, CompactError::Busy(_)), "{err}");
    assert!(err.to_string().contains("another compactor holds"), "{err}");
    lock.unlock().unwrap();
    assert_eq!(
        Reader::open(dir.path())
            .unwrap()
            .compact()
            .unwrap()
            .folded_segments,
        1
    );
}

#[test]
fn stale_temporary_files_are_removed_and_others_kept() {
    let dir = tempfile::tempdir().unwrap();
    let old = SystemTime::now() - Duration::from_secs(120);
    let make = |name: &str, modified: SystemTime| {
        let f = std::fs::File::create(dir.path().join(name)).unwrap();
        f.set_modified(modified).unwrap();
        f
    };
    drop(make(".tmp-shmetrics-1-dead-writer", old));
    let locked = make(".tmp-shmetrics-2-creating", old);
    locked.lock().unwrap();
    drop(make(".tmp-shmetrics-3-just-created", SystemTime::now()));
    let report = Reader::open(dir.path()).unwrap().compact().unwrap();
    assert_eq!(report.removed_temporary, 1);
    let left: BTreeSet<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!left.contains(".tmp-shmetrics-1-dead-writer"));
    assert!(left.contains(".tmp-shmetrics-2-creating"));
    assert!(left.contains(".tmp-shmetrics-3-just-created"));
}

/// Processes start, count and die while one thread compacts and the test scrapes: no
/// scrape ever shows a counter lower than the previous scrape or higher than the increments
/// started, and the end total is exact.
#[test]
fn scrapes_during_compactions_never_go_down_or_double() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let counted = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let workers = {
        let (path, counted, done) = (path.clone(), Arc::clone(&counted), Arc::clone(&done));
        std::thread::spawn(move || {
            for pid in 100..260u32 {
                let r = Registry::open_simulating_pid(&path, Options::default(), pid).unwrap();
                let c = r.counter("req_total", "Requests.", &["route"]).unwrap();
                let child = c.labels(&["/a"]).unwrap();
                for _ in 0..5 {
                    // Counted before it is done: an upper bound of what a scrape can see.
                    // SeqCst: ordered before the increment the scrape may observe.
                    counted.fetch_add(1, Ordering::SeqCst);
                    child.inc();
                }
                drop(r);
            }
            // Relaxed: a stop flag.
            done.store(true, Ordering::Relaxed);
        })
    };
    let compactor = {
        let (path, done) = (path.clone(), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut reader = Reader::open(&path).unwrap();
            let mut runs = 0;
            // Relaxed: a stop flag.
            while !done.load(Ordering::Relaxed) {
                match reader.compact() {
                    Ok(_) => runs += 1,
                    Err(CompactError::Busy(_)) => {}
                    Err(e) => panic!("{e}"),
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            runs
        })
    };
    let mut reader = Reader::open(&path).unwrap();
    let mut last = 0.0;
    let mut scrapes = 0;
    for _ in 0..100_000 {
        let bound = counted.load(Ordering::SeqCst) as f64;
        let s = reader.snapshot().snapshot;
        let total = if s.family("req").is_some() {
            counter(&s, "/a")
        } else {
            0.0
        };
        assert!(total >= last, "scrape {scrapes}: {total} after {last}");
        // Everything a scrape can see was counted before the scrape ended.
        let bound_after = counted.load(Ordering::SeqCst) as f64;
        assert!(
            total <= bound_after,
            "scrape {scrapes}: {total} > {bound_after} ({bound})"
        );
        last = total;
        scrapes += 1;
        if done.load(Ordering::Relaxed) {
            break;
        }
    }
    workers.join().unwrap();
    let runs = compactor.join().unwrap();
    assert!(
        runs > 0 && scrapes > 1,
        "{runs} compactions, {scrapes} scrapes"
    );
    let final_report = Reader::open(&path).unwrap().compact().unwrap();
    assert_eq!(files(&path), BTreeSet::from([ARCHIVE_NAME.to_owned()]));
    assert_eq!(counter(&snapshot(&path), "/a"), 800.0, "{final_report:?}");
    assert_eq!(counter(&reader.snapshot().snapshot, "/a"), 800.0);
}

/// The archive parts a directory's archive lists, and the part files in it.
fn parts_listed_and_present(dir: &Path) -> (Vec<u64>, Vec<u64>) {
    use shmetrics_layout::record::{Record, parse_records};
    let bytes = std::fs::read(dir.join(ARCHIVE_NAME)).unwrap();
    let header = shmetrics_layout::SegmentHeader::parse(
        &bytes[..shmetrics_layout::HEADER_SIZE],
        bytes.len() as u64,
    )
    .unwrap();
    let meta = &bytes[shmetrics_layout::HEADER_SIZE..][..header.meta_len as usize];
    let mut listed: Vec<u64> = parse_records(meta, 0)
        .filter_map(|r| match r.unwrap().0 {
            Record::Part(p) => Some(p.instance_id),
            _ => None,
        })
        .collect();
    let mut present: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let hex = name
                .strip_prefix(".shmetrics-archive-part-")?
                .strip_suffix(".shm")?
                .to_owned();
            u64::from_str_radix(&hex, 16).ok()
        })
        .collect();
    listed.sort_unstable();
    present.sort_unstable();
    (listed, present)
}

/// A process with many series of its own, dead once returned.
fn big_dead_process(dir: &Path, pid: u32) {
    let r = Registry::open_simulating_pid(dir, Options::default(), pid).unwrap();
    let c = r.counter("req_total", "Requests.", &["route"]).unwrap();
    for i in 0..2_000 {
        c.labels(&[format!("/p{pid}/{i:05}/a-longer-route-to-fill-the-segment")])
            .unwrap()
            .inc_by(0.5);
    }
    c.labels(&["/a"]).unwrap().inc_by(f64::from(pid));
}

/// Archive parts: dead data beyond the part size is folded into sealed parts the archive
/// lists; a compactor killed after sealing a part but before the archive that lists it is in
/// place leaves an orphan part, which no reader counts and the next compaction removes.
#[test]
fn archive_parts_survive_a_compactor_killed_after_sealing() {
    let dir = tempfile::tempdir().unwrap();
    for pid in 0..12 {
        big_dead_process(dir.path(), 100 + pid);
    }
    let mut reader = Reader::open(dir.path()).unwrap();
    reader.set_archive_part_size(1 << 20);
    let before = reader.snapshot().snapshot;
    reader.compact().unwrap();
    let (listed, present) = parts_listed_and_present(dir.path());
    assert!(listed.len() >= 2, "{listed:?}");
    assert_eq!(listed, present);
    assert_eq!(snapshot(dir.path()), before);

    for pid in 0..6 {
        big_dead_process(dir.path(), 200 + pid);
    }
    let before = snapshot(dir.path());
    reader
        .compact_stopping(Some(CompactStop::BeforeRename))
        .unwrap();
    let (listed_now, present_now) = parts_listed_and_present(dir.path());
    assert_eq!(listed_now, listed, "the archive in place is unchanged");
    assert_eq!(present_now.len(), listed.len() + 1, "one orphan part");
    assert_eq!(snapshot(dir.path()), before, "the orphan is not counted");
    assert_eq!(reader.snapshot().snapshot, before);

    let report = reader.compact().unwrap();
    assert!(report.folded_segments >= 6, "{report:?}");
    let (listed, present) = parts_listed_and_present(dir.path());
    assert_eq!(
        listed, present,
        "the orphan was removed or taken into the archive"
    );
    assert_eq!(snapshot(dir.path()), before);
    assert_eq!(reader.snapshot().snapshot, before);
    assert_eq!(files(dir.path()), BTreeSet::from([ARCHIVE_NAME.to_owned()]));
}

/// A dead process, and a file of ours at the archive's name that is not an archive, which
/// compaction refuses to replace: every compaction fails.
fn compaction_cannot_succeed() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    drop(process(dir.path(), 10));
    std::fs::write(dir.path().join(ARCHIVE_NAME), [0u8; 4096]).unwrap();
    dir
}

/// A compaction that cannot succeed is retried with a doubling wait, not at every interval,
/// and the failures are counted.
#[test]
fn a_failing_compaction_backs_off() {
    let dir = compaction_cannot_succeed();
    let mut reader = Reader::open(dir.path()).unwrap();
    reader.set_compaction_interval(Some(Duration::from_millis(10)));
    let started = std::time::Instant::now();
    let mut failures = 0;
    let mut scrapes = 0;
    while started.elapsed() < Duration::from_millis(700) {
        failures = reader.snapshot().report.compaction_failures;
        scrapes += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    // Attempts at about 10, 30, 70, 150, 310 and 630 ms: at most 7 in 700 ms, where a
    // retry at every interval would have made dozens.
    assert!(
        (2..=7).contains(&failures),
        "{failures} failures in {scrapes} scrapes"
    );
    // The dead process is still counted, from its own file.
    assert_eq!(counter(&reader.snapshot().snapshot, "/a"), 10.0);
}

/// A `Compactor` beside a reader (as `serve` runs one): it folds what dies, also a process
/// that was live at its earlier runs (whose series it parses only once it is dead) and dead
/// data beyond one archive part; the reader's samples never change, and a fresh reader agrees.
#[test]
fn a_compactor_beside_a_reader_changes_no_sample() {
    let dir = tempfile::tempdir().unwrap();
    let live = process(dir.path(), 1);
    let dying = process(dir.path(), 2);
    for pid in 3..6 {
        drop(process(dir.path(), pid));
    }
    let mut reader = Reader::open(dir.path()).unwrap();
    let mut compactor = Compactor::open(dir.path(), Duration::from_secs(3600)).unwrap();
    reader.follow_compactor(compactor.handle());
    let before = reader.snapshot().snapshot;
    let report = compactor.compact().unwrap();
    assert_eq!((report.folded_segments, report.removed_files), (3, 3));
    assert_eq!(reader.snapshot().snapshot, before);
    drop(dying);
    let before = reader.snapshot().snapshot;
    let report = compactor.compact().unwrap();
    assert_eq!(report.folded_segments, 1, "{report:?}");
    assert_eq!(reader.snapshot().snapshot, before);
    compactor.set_archive_part_size(1 << 20);
    for pid in 0..12 {
        big_dead_process(dir.path(), 100 + pid);
    }
    let before = reader.snapshot().snapshot;
    compactor.compact().unwrap();
    let (listed, present) = parts_listed_and_present(dir.path());
    assert!(listed.len() >= 2, "{listed:?}");
    assert_eq!(listed, present);
    let after = reader.snapshot();
    assert_eq!(after.snapshot, before);
    assert_eq!(snapshot(dir.path()), before);
    assert_eq!(after.report.compaction_failures, 0);
    assert_eq!(after.report.live_segments, 1);
    // The live segment and the archive.
    assert_eq!(files(dir.path()).len(), 2);
    drop(live);
}

/// A compactor's failures back off as a reader's automatic compaction's do, and the reader
/// following it reports them.
#[test]
fn a_failing_compactor_backs_off_and_its_reader_reports_it() {
    let dir = compaction_cannot_succeed();
    let mut reader = Reader::open(dir.path()).unwrap();
    let mut compactor = Compactor::open(dir.path(), Duration::from_millis(10)).unwrap();
    reader.follow_compactor(compactor.handle());
    let started = std::time::Instant::now();
    let mut attempts = 0;
    while started.elapsed() < Duration::from_millis(700) {
        std::thread::sleep(compactor.due_in().min(Duration::from_millis(2)));
        attempts += usize::from(compactor.compact_if_due());
    }
    let failures = compactor.handle().failures();
    assert_eq!(failures, attempts as u32);
    assert!((2..=7).contains(&failures), "{failures} failures");
    let report = reader.snapshot().report;
    assert_eq!(report.compaction_failures, failures);
    assert_eq!(counter(&reader.snapshot().snapshot, "/a"), 10.0);
}

/// A stopped compactor does not go on to its next batch and starts no other compaction;
/// what it did not fold is still counted from its files.
#[test]
fn a_stopped_compactor_stops() {
    let dir = tempfile::tempdir().unwrap();
    for pid in 0..3 {
        drop(process(dir.path(), pid));
    }
    let before = snapshot(dir.path());
    let mut compactor = Compactor::open(dir.path(), Duration::ZERO).unwrap();
    let handle = compactor.handle();
    let stop = handle.clone();
    // Stopped once it holds the lock, before its first batch.
    compactor.set_hook(Box::new(move || stop.stop()));
    let report = compactor.compact().unwrap();
    assert_eq!(report.folded_segments, 0, "{report:?}");
    assert!(!compactor.compact_if_due(), "a stopped compactor started");
    assert_eq!(files(dir.path()).len(), 3);
    assert_eq!(snapshot(dir.path()), before);
}
