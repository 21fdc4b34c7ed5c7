//! Which archive is trusted: only the file at the archive's name (the first of
//! `compact::archive_names` holding a regular file of this user). A copy of the archive
//! under another name, or a crafted file claiming to be one, is never merged, never trusted
//! to say what may be removed, and never removed; and names taken by another user (the
//! archive's, the compactors' lock) are worked around, never renamed over, locked or
//! waited on.

#[allow(dead_code)]
mod common;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use common::{ChildProcess, child_role, param, say};
use shmetrics_layout::record::FoldedRecord;
use shmetrics_layout::{FLAG_ARCHIVE, HEADER_SIZE, SegmentHeader, SegmentIdentity};
use shmetrics_reader::compact::{ARCHIVE_NAME, COMPACT_LOCK_NAME, archive_names};
use shmetrics_reader::snapshot::Snapshot;
use shmetrics_reader::{Reader, SkipReason};
use shmetrics_writer::{Options, Registry};

/// A process that adds `pid` to `req_total` and stays alive while the registry does.
/// Serialises this binary's tests: a child a test starts holds, between its fork and its
/// exec, a copy of every descriptor open in the process, the segment locks of the other
/// tests included, and a segment whose lock is held looks alive to a compaction.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn process(dir: &Path, pid: u32) -> Registry {
    let r = Registry::open_simulating_pid(dir, Options::default(), pid).unwrap();
    let c = r.counter("req_total", "Requests.", &["p"]).unwrap();
    c.labels(&[format!("{}", pid % 3)])
        .unwrap()
        .inc_by(f64::from(pid));
    r
}

fn total(s: &Snapshot) -> f64 {
    common::counter_total(s, "req")
}

fn fresh_total(dir: &Path) -> f64 {
    total(&Reader::open(dir).unwrap().snapshot().snapshot)
}

fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// (instance id, sequence) of every segment file in `dir`.
fn segment_ids(dir: &Path) -> Vec<(u64, u32)> {
    common::segment_files(dir)
        .into_iter()
        .map(|(_, path)| {
            let bytes = std::fs::read(&path).unwrap();
            let h = SegmentHeader::parse(&bytes[..HEADER_SIZE], bytes.len() as u64).unwrap();
            (h.instance_id, h.sequence)
        })
        .collect()
}

#[test]
fn a_copy_of_the_archive_is_neither_merged_nor_trusted() {
    let _serial = one_at_a_time();
    for run in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        let live = process(dir.path(), 1);
        let mut expected = 1.0;
        for pid in 10..14 {
            drop(process(dir.path(), pid));
            expected += f64::from(pid);
        }
        let mut reader = Reader::open(dir.path()).unwrap();
        reader.compact().unwrap();
        // An operator's backup of the archive, under another segment name.
        let copy = dir.path().join("shmetrics-archive-backup.shm");
        std::fs::copy(dir.path().join(ARCHIVE_NAME), &copy).unwrap();
        let scrape = reader.snapshot();
        assert_eq!(
            total(&scrape.snapshot),
            expected,
            "run {run}: the copy is not merged"
        );
        assert_eq!(
            scrape.report.skipped.get(&SkipReason::StrayArchive),
            Some(&1),
            "run {run}: {:?}",
            scrape.report
        );
        // More deaths and compactions: nothing folded is lost, the copy is left alone.
        for round in 0..3 {
            for pid in 0..3 {
                let pid = 100 + 10 * round + pid;
                drop(process(dir.path(), pid));
                expected += f64::from(pid);
            }
            let report = reader.compact().unwrap();
            assert_eq!(report.folded_segments, 3, "run {run} round {round}");
            assert_eq!(total(&reader.snapshot().snapshot), expected, "run {run}");
            assert_eq!(
                fresh_total(dir.path()),
                expected,
                "run {run}, a fresh reader"
            );
            assert!(copy.exists(), "run {run}: the copy was removed");
        }
        let visible = names(dir.path())
            .iter()
            .filter(|n| !n.starts_with('.'))
            .count();
        assert_eq!(
            visible,
            3,
            "the live segment, the archive and the copy: {:?}",
            names(dir.path())
        );
        drop(live);
    }
}

/// A 4 KiB file claiming to be an archive of generation 0xFFFFFFFF that holds every segment
/// of the directory.
fn crafted_archive(dir: &Path, path: &Path) {
    let mut meta = Vec::new();
    for (instance_id, sequence) in segment_ids(dir) {
        meta.extend(
            FoldedRecord {
                instance_id,
                sequence,
            }
            .encode(),
        );
    }
    let size = 4096;
    let mut header = SegmentHeader::new(
        size,
        SegmentIdentity {
            pid: 0,
            sequence: u32::MAX,
            instance_id: 7,
            start_time_ticks: 0,
            created_unix_nanos: 1,
        },
    );
    header.flags = FLAG_ARCHIVE;
    header.meta_len = meta.len() as u64;
    header.slot_floor = size;
    let mut image = vec![0u8; size as usize];
    image[..HEADER_SIZE].copy_from_slice(header.as_bytes());
    image[HEADER_SIZE..HEADER_SIZE + meta.len()].copy_from_slice(&meta);
    std::fs::write(path, image).unwrap();
}

#[test]
fn a_crafted_archive_hides_nothing() {
    let _serial = one_at_a_time();
    for run in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let live = process(dir.path(), 1);
        let mut expected = 1.0;
        for pid in 10..13 {
            drop(process(dir.path(), pid));
            expected += f64::from(pid);
        }
        let mut reader = Reader::open(dir.path()).unwrap();
        if run % 2 == 1 {
            reader.compact().unwrap();
        }
        let crafted = dir.path().join("shmetrics-zz.shm");
        crafted_archive(dir.path(), &crafted);
        assert_eq!(total(&reader.snapshot().snapshot), expected, "run {run}");
        assert_eq!(fresh_total(dir.path()), expected, "run {run}");
        drop(process(dir.path(), 50));
        expected += 50.0;
        reader.compact().unwrap();
        assert_eq!(total(&reader.snapshot().snapshot), expected, "run {run}");
        assert!(
            crafted.exists(),
            "run {run}: the crafted file is never removed"
        );
        std::fs::remove_file(&crafted).unwrap();
        assert_eq!(total(&reader.snapshot().snapshot), expected, "run {run}");
        assert_eq!(fresh_total(dir.path()), expected, "run {run}");
        drop(live);
    }
}

/// Another user's files at the names compaction uses, in a world-writable directory (sticky
/// as `/tmp`, or not, as a Kubernetes `emptyDir`): the writers' user still
/// compacts, under the next names, and scrapes stay exact. Needs root to create the second
/// user's files and to run the writers as a third user.
#[test]
fn names_taken_by_another_user_are_worked_around() {
    let _serial = one_at_a_time();
    const WRITERS_UID: u32 = 60_001;
    const SQUATTER_UID: u32 = 60_002;
    if child_role().as_deref() == Some("writers") {
        let dir: PathBuf = param::<String>("dir").into();
        nix::unistd::setgid(nix::unistd::Gid::from_raw(WRITERS_UID)).unwrap();
        nix::unistd::setuid(nix::unistd::Uid::from_raw(WRITERS_UID)).unwrap();
        let live = process(&dir, 1);
        let mut expected = 1.0;
        let mut reader = Reader::open(&dir).unwrap();
        for round in 0..3u32 {
            for pid in 0..3 {
                let pid = 10 + 10 * round + pid;
                drop(process(&dir, pid));
                expected += f64::from(pid);
            }
            let report = reader
                .compact()
                .expect("compaction works around taken names");
            assert_eq!(report.folded_segments, 3);
            let scrape = reader.snapshot();
            assert_eq!(total(&scrape.snapshot), expected);
            assert_eq!(fresh_total(&dir), expected);
            // The taken archive name and the taken lock, each counted.
            assert_eq!(
                scrape.report.skipped.get(&SkipReason::Squatted),
                Some(&2),
                "{:?}",
                scrape.report
            );
        }
        let archive = &archive_names(WRITERS_UID)[1];
        assert!(dir.join(archive).exists(), "{:?}", names(&dir));
        say("ok");
        drop(live);
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to create files of two other users");
        return;
    }
    // Sticky like /tmp, and world-writable without the sticky bit like a Kubernetes
    // emptyDir (where another user could also rename our files: nothing can prevent that,
    // but squatting alone is worked around the same way).
    for (squat, mode) in [("file", 0o1777), ("directory", 0o1777), ("file", 0o777)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        // The squatter's lock file, mode 0666 and locked (by this root process, which
        // holds it for the squatter).
        let lock_path = path.join(COMPACT_LOCK_NAME);
        std::fs::write(&lock_path, b"").unwrap();
        std::fs::set_permissions(&lock_path, std::fs::Permissions::from_mode(0o666)).unwrap();
        std::os::unix::fs::chown(&lock_path, Some(SQUATTER_UID), Some(SQUATTER_UID)).unwrap();
        let held = std::fs::File::open(&lock_path).unwrap();
        held.lock().unwrap();
        let archive = path.join(ARCHIVE_NAME);
        match squat {
            "file" => std::fs::write(&archive, b"not yours").unwrap(),
            _ => std::fs::create_dir(&archive).unwrap(),
        }
        std::os::unix::fs::chown(&archive, Some(SQUATTER_UID), Some(SQUATTER_UID)).unwrap();

        let mut child = ChildProcess::spawn(
            "names_taken_by_another_user_are_worked_around",
            "writers",
            &[("dir", path.display().to_string())],
        );
        assert_eq!(
            child.expect_line(Duration::from_secs(60)),
            "ok",
            "{squat} {mode:o}"
        );
        child.close_stdin();
        child.expect_success(Duration::from_secs(30));
        // The squatter's entries are untouched.
        assert!(archive.exists() && lock_path.exists());
        drop(held);
    }
}
