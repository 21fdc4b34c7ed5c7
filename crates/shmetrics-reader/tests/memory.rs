//! The reader's memory follows what exists, not history or what files claim: a reader in a
//! process of its own (a re-executed copy of this test binary) reports its resident set
//! while the parent churns through processes or plants files.

#[allow(dead_code)]
mod common;

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Duration;

use common::{ChildProcess, child_role, param, say, wait_for_line};
use shmetrics_reader::Reader;
use shmetrics_writer::{GaugeMode, Options, Registry};

/// A field of `/proc/self/status`, in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Bytes this process has read so far (`rchar` of `/proc/self/io`).
fn bytes_read() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: ")?.parse().ok())
        .unwrap()
}

const CHURN_ROUNDS: usize = 40;
const CHURN_SERIES: usize = 2_000;

/// 40 processes one after another, each with 2,000 `livesum` gauge series of its own, then
/// gone and compacted: each scrape has no series, and the reader's resident set stays flat
/// (it held about 0.5 KB per series ever seen: 30 MB more over these rounds).
#[test]
fn reader_memory_stays_flat_through_series_churn() {
    if child_role().as_deref() == Some("reader") {
        let dir: PathBuf = param::<String>("dir").into();
        let mut reader = Reader::open(&dir).unwrap();
        while !wait_for_line().is_empty() {
            reader.compact().unwrap();
            let scrape = reader.snapshot();
            say(format!("{} {}", scrape.report.series, status_kib("VmRSS")));
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut reader = ChildProcess::spawn(
        "reader_memory_stays_flat_through_series_churn",
        "reader",
        &[("dir", dir.path().display().to_string())],
    );
    let mut rss = Vec::new();
    for round in 0..CHURN_ROUNDS {
        {
            let r =
                Registry::open_simulating_pid(dir.path(), Options::default(), 1000 + round as u32)
                    .unwrap();
            let g = r
                .gauge("churn", "Churn.", &["id"], GaugeMode::LiveSum)
                .unwrap();
            for i in 0..CHURN_SERIES {
                g.labels(&[format!("{round}-{i}")]).unwrap().set(1.0);
            }
        }
        reader.send_line("scrape");
        let line = reader.expect_line(Duration::from_secs(60));
        let (series, kib) = line.split_once(' ').unwrap();
        assert_eq!(
            series, "0",
            "round {round}: the dead processes' livesum series are gone"
        );
        rss.push(kib.parse::<u64>().unwrap());
    }
    reader.close_stdin();
    reader.expect_success(Duration::from_secs(30));
    eprintln!("reader RSS (KiB) after each round: {rss:?}");
    let warm = rss[9];
    let last = *rss.last().unwrap();
    assert!(
        last <= warm + 16 * 1024,
        "the reader grew from {warm} KiB after 10 rounds to {last} KiB after {CHURN_ROUNDS}: {rss:?}"
    );
}

/// Ten `prometheus_client` files of 64 MiB (sparse: a used count claiming all of it, and
/// nothing else): rejected without reading or allocating what they claim, and not read again
/// while they do not change.
#[test]
fn sparse_db_files_cost_neither_memory_nor_reads() {
    if child_role().as_deref() == Some("reader") {
        let dir: PathBuf = param::<String>("dir").into();
        let mut reader = Reader::open(&dir).unwrap();
        let first = reader.snapshot();
        let read_after_first = bytes_read();
        for _ in 0..4 {
            let scrape = reader.snapshot();
            assert_eq!(scrape.report.problems, first.report.problems);
        }
        say(format!(
            "{} {} {}",
            status_kib("VmHWM"),
            bytes_read() - read_after_first,
            first
                .report
                .problems
                .iter()
                .filter(|p| p.reason == shmetrics_reader::ProblemReason::LegacyCorrupt)
                .count()
        ));
        return;
    }
    const CLAIMED: u64 = 64 << 20;
    let dir = tempfile::tempdir().unwrap();
    for n in 0..10 {
        let file =
            std::fs::File::create(dir.path().join(format!("counter_{}.db", 100 + n))).unwrap();
        file.set_len(CLAIMED).unwrap();
        file.write_all_at(&(CLAIMED as i32).to_ne_bytes(), 0)
            .unwrap();
    }
    let mut reader = ChildProcess::spawn(
        "sparse_db_files_cost_neither_memory_nor_reads",
        "reader",
        &[("dir", dir.path().display().to_string())],
    );
    let line = reader.expect_line(Duration::from_secs(60));
    reader.expect_success(Duration::from_secs(30));
    eprintln!("peak KiB, bytes read again, files rejected: {line}");
    let fields: Vec<u64> = line.split(' ').map(|f| f.parse().unwrap()).collect();
    let [peak_kib, reread, rejected] = fields[..] else {
        panic!("{line}")
    };
    assert_eq!(rejected, 10, "each file reported as corrupt");
    assert!(
        peak_kib < 48 * 1024,
        "the reader's peak resident set was {peak_kib} KiB for files claiming 10 x 64 MiB"
    );
    assert!(reread < 4096, "{reread} bytes read again by 4 more scrapes");
}

const DEAD_PROCESSES: u32 = 48;

/// Process `pid`, dead once returned: 1,500 counter series of its own and one shared.
fn dead_process(dir: &std::path::Path, pid: u32) {
    let r = Registry::open_simulating_pid(dir, Options::default(), pid).unwrap();
    let c = r.counter("jobs_total", "Jobs.", &["job"]).unwrap();
    for i in 0..1_500 {
        c.labels(&[format!(
            "process-{pid}-job-{i:06}-with-a-longer-label-value"
        )])
        .unwrap()
        .inc_by(f64::from(i) + 0.25);
    }
    c.labels(&["shared"]).unwrap().inc_by(0.1);
}

/// 48 dead processes of about 0.3 MiB each, compacted with 1 MiB archive parts (standing
/// in for the 1 GiB format limit): the compaction folds everything into bounded parts, the
/// samples are unchanged, and the compactor's peak memory grows by a few parts' worth, not
/// by the 15 MiB of dead data (it built the whole archive, several times over, before).
#[test]
fn compaction_of_more_than_a_part_stays_within_its_memory_budget() {
    if child_role().as_deref() == Some("compactor") {
        let dir: PathBuf = param::<String>("dir").into();
        let mut reader = Reader::open(&dir).unwrap();
        reader.set_archive_part_size(1 << 20);
        let before = reader.snapshot().snapshot;
        let peak_before = status_kib("VmHWM");
        let report = reader.compact().unwrap();
        let peak_after = status_kib("VmHWM");
        assert_eq!(reader.snapshot().snapshot, before, "the compacting reader");
        assert_eq!(
            Reader::open(&dir).unwrap().snapshot().snapshot,
            before,
            "a fresh reader"
        );
        let parts = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".shmetrics-archive-part-")
            })
            .count();
        say(format!(
            "{} {} {} {}",
            report.folded_segments, parts, peak_before, peak_after
        ));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for pid in 0..DEAD_PROCESSES {
        dead_process(dir.path(), 100 + pid);
    }
    let mut compactor = ChildProcess::spawn(
        "compaction_of_more_than_a_part_stays_within_its_memory_budget",
        "compactor",
        &[("dir", dir.path().display().to_string())],
    );
    let line = compactor.expect_line(Duration::from_secs(120));
    compactor.expect_success(Duration::from_secs(30));
    eprintln!("folded segments, parts, peak KiB before and after compaction: {line}");
    let fields: Vec<u64> = line.split(' ').map(|f| f.parse().unwrap()).collect();
    let [folded, parts, peak_before, peak_after] = fields[..] else {
        panic!("{line}")
    };
    assert!(folded >= u64::from(DEAD_PROCESSES), "{line}");
    assert!(parts >= 5, "the dead data spans several parts: {line}");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(
        names,
        ["shmetrics-archive.shm"],
        "every dead segment folded"
    );
    assert!(
        peak_after <= peak_before + 8 * 1024,
        "compaction raised the peak resident set from {peak_before} to {peak_after} KiB"
    );
}
