//! Files truncated under the reader: a live writer's segment, a dead one's and the archive,
//! each cut to 4 KiB while the reader has them mapped. Reading a page past the new end raises
//! `SIGBUS`, which used to kill the reading process; the reader now catches it in its own
//! mappings (`shmetrics_layout::fault`), drops the segment, reports it (`faulted_page`), and
//! the scrape goes on with everything else.

use std::path::{Path, PathBuf};

use shmetrics_layout::MetricKind;
use shmetrics_layout::record::{FamilyRecord, SeriesRecord};
use shmetrics_reader::snapshot::{Snapshot, Value};
use shmetrics_reader::{Format, PrefixFilter, Reader};
use shmetrics_writer::{Options, Registry};

/// A process that counts `n` on `req_total{p}` with enough series to span several pages.
fn process(dir: &Path, pid: u32, n: f64) -> Registry {
    let r = Registry::open_simulating_pid(dir, Options::default(), pid).unwrap();
    let c = r.counter("req_total", "Requests.", &["p", "i"]).unwrap();
    for i in 0..400 {
        c.labels(&[pid.to_string(), i.to_string()])
            .unwrap()
            .inc_by(n);
    }
    r
}

/// Total of `req_total` by process label.
fn totals(s: &Snapshot) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    if let Some(f) = s.family("req") {
        for x in &f.series {
            let Value::Counter(v) = x.value else { panic!() };
            *out.entry(x.labels.get("p").unwrap().to_owned())
                .or_default() += v;
        }
    }
    out
}

fn segment_of(dir: &Path, pid: u32) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("shmetrics-{pid}-"))
        })
        .unwrap()
}

/// Longer than the reader's listing trust margin (50 ms).
const SETTLE: std::time::Duration = std::time::Duration::from_millis(150);

fn truncate(path: &Path) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(4096)
        .unwrap();
}

/// A snapshot and how many segments it reports as cut short: caught faulting
/// (`faulted_page`), or found shorter than their header says when opened again after the
/// truncation changed their status-change time (`file_size_mismatch`).
fn faulted(reader: &mut Reader) -> (Snapshot, usize) {
    let scrape = reader.snapshot();
    let n = scrape
        .report
        .problems
        .iter()
        .filter(|p| matches!(p.reason.as_str(), "faulted_page" | "file_size_mismatch"))
        .inspect(|p| eprintln!("{}: {}", p.reason, p.detail))
        .count();
    assert_eq!(scrape.report.bad_segments, n, "{:?}", scrape.report);
    (scrape.snapshot, n)
}

#[test]
fn a_live_segment_truncated_under_the_reader() {
    live_segment_truncated(1);
}

/// The same, with the truncated (younger) segment folded on a thread of its own.
#[test]
fn a_live_segment_truncated_under_a_reader_folding_on_threads() {
    live_segment_truncated(2);
}

fn live_segment_truncated(fold_threads: usize) {
    let dir = tempfile::tempdir().unwrap();
    let keep = process(dir.path(), 1, 1.0);
    let victim = process(dir.path(), 2, 2.0);
    let mut reader = Reader::open(dir.path()).unwrap();
    reader.set_fold_threads(fold_threads);
    reader.set_fold_group_min_bytes(0);
    reader.set_fold_threads_in_step(true);
    let first = reader.snapshot();
    assert_eq!(totals(&first.snapshot).len(), 2);
    assert_eq!(first.report.fold_threads, fold_threads);
    truncate(&segment_of(dir.path(), 2));
    // Rendering reads every slot of every live segment.
    let mut out = Vec::new();
    reader
        .scrape(Format::Prometheus, &PrefixFilter::default(), true, &mut out)
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("shmetrics_reader_invalid_segments{reason=\"faulted_page\"} 1"),
        "{text}"
    );
    let (snapshot, n) = faulted(&mut reader);
    assert_eq!(n, 1);
    assert_eq!(totals(&snapshot), [("1".to_owned(), 400.0)].into());
    // Another reader opening the truncated file rejects it by its header.
    let fresh = Reader::open(dir.path()).unwrap().snapshot();
    assert_eq!(totals(&fresh.snapshot), [("1".to_owned(), 400.0)].into());
    drop((keep, victim));
}

/// Process 1 (kept), process 3 (to die later), process 2 dead already.
fn one_kept_one_dying_one_dead(dir: &Path) -> (Registry, Registry) {
    let keep = process(dir, 1, 1.0);
    let dying = process(dir, 3, 3.0);
    drop(process(dir, 2, 2.0));
    (keep, dying)
}

/// After the cut and process 3's death: one segment reported, processes 1 and 3 exact.
fn only_the_cut_file_is_missing(reader: &mut Reader) {
    let (snapshot, n) = faulted(reader);
    assert_eq!(n, 1);
    assert_eq!(
        totals(&snapshot),
        [("1".to_owned(), 400.0), ("3".to_owned(), 1200.0)].into()
    );
}

#[test]
fn a_dead_segment_truncated_under_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    let (keep, dying) = one_kept_one_dying_one_dead(dir.path());
    // A listing well after the last change is trusted: later scrapes do not list again
    // until the directory changes, so the truncated file stays the one the reader mapped.
    std::thread::sleep(SETTLE);
    let mut reader = Reader::open(dir.path()).unwrap();
    assert_eq!(totals(&reader.snapshot().snapshot)["2"], 800.0);
    truncate(&segment_of(dir.path(), 2));
    // Dead segments are read into a cached baseline, read again when another process dies
    // (no file comes or goes: the directory is not listed again).
    drop(dying);
    only_the_cut_file_is_missing(&mut reader);
    // A compaction does not fold (or remove) what it could not read.
    reader.compact().unwrap();
    assert_eq!(totals(&reader.snapshot().snapshot)["3"], 1200.0);
    drop(keep);
}

#[test]
fn the_archive_truncated_under_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    let (keep, dying) = one_kept_one_dying_one_dead(dir.path());
    let mut reader = Reader::open(dir.path()).unwrap();
    reader.compact().unwrap();
    std::thread::sleep(SETTLE);
    assert_eq!(totals(&reader.snapshot().snapshot)["2"], 800.0);
    truncate(&dir.path().join(shmetrics_reader::compact::ARCHIVE_NAME));
    drop(dying);
    only_the_cut_file_is_missing(&mut reader);
    // Compaction stops at an archive it cannot read rather than replace it.
    assert!(reader.compact().is_err());
    drop(keep);
}

/// Free bytes of the file system holding `path`.
fn free_bytes(path: &Path) -> u64 {
    let s = nix::sys::statvfs::statvfs(path).unwrap();
    s.blocks_free() as u64 * s.fragment_size() as u64
}

/// A same-user file with a valid header claiming 64 MiB (its size matches) but nothing
/// written, on a 4 MiB tmpfs: reading its pages would make tmpfs allocate them, which fails
/// when the tmpfs is full (SIGBUS in `dump`, `serve` and `compact`), and fills the tmpfs
/// either way. It is rejected as `sparse_file` before anything is mapped, the reader
/// allocates no tmpfs page, and a real writer beside it is read. Mounting needs root (CI
/// runs as root); elsewhere the test says why it is skipped.
#[test]
fn a_sparse_file_on_a_small_tmpfs_allocates_nothing() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let mount = base.path().join("small");
    std::fs::create_dir(&mount).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mount)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mount);

    let writer = Registry::open_with(
        &mount,
        Options {
            initial_segment_size: 64 * 1024,
            ..Options::default()
        },
    )
    .unwrap();
    writer
        .counter("req_total", "Requests.", &["p", "i"])
        .unwrap()
        .labels(&["1", "0"])
        .unwrap()
        .inc_by(5.0);
    // A counter family and 2,000 series whose slots lie one per page in the unwritten end of
    // the file: reading them would allocate 8 MiB on a 4 MiB tmpfs.
    let size: u64 = 64 << 20;
    let mut meta = FamilyRecord {
        id: 0,
        kind: MetricKind::Counter,
        mode: None,
        name: "sparse".into(),
        help: String::new(),
        label_names: vec!["i".into()],
        bounds: Vec::new(),
        states: Vec::new(),
    }
    .encode();
    let series = 2_000u64;
    for k in 0..series {
        meta.extend(
            SeriesRecord {
                family_id: 0,
                slot_offset: size - (k + 1) * 4096,
                label_values: vec![k.to_string()],
                ..SeriesRecord::default()
            }
            .encode(),
        );
    }
    let mut header = shmetrics_layout::SegmentHeader::new(
        size,
        shmetrics_layout::SegmentIdentity {
            pid: 4242,
            sequence: 0,
            instance_id: 0xabc,
            start_time_ticks: 0,
            created_unix_nanos: 1,
        },
    );
    header.meta_len = meta.len() as u64;
    header.slot_floor = size - series * 4096;
    let sparse = mount.join("shmetrics-4242-0000000000000abc-0.shm");
    let file = std::fs::File::create(&sparse).unwrap();
    file.set_len(size).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, header.as_bytes(), 0).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &meta, shmetrics_layout::HEADER_SIZE as u64)
        .unwrap();
    // A dead writer's file: no lock held.
    drop(file);

    let free = free_bytes(&mount);
    let mut reader = Reader::open(&mount).unwrap();
    for _ in 0..3 {
        let scrape = reader.snapshot();
        assert_eq!(totals(&scrape.snapshot), [("1".to_owned(), 5.0)].into());
        let reasons: Vec<&str> = scrape
            .report
            .problems
            .iter()
            .map(|p| p.reason.as_str())
            .collect();
        assert_eq!(reasons, ["sparse_file"]);
    }
    // What `compact` and a fresh `dump` do, too.
    reader.compact().unwrap();
    let fresh = Reader::open(&mount).unwrap().snapshot();
    assert_eq!(fresh.report.bad_segments, 1);
    assert_eq!(free_bytes(&mount), free, "the reader allocated tmpfs pages");
    drop(writer);
}
