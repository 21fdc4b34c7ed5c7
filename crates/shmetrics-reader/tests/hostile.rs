//! Hostile environments: a directory of 10,000 segments, the reader's descriptors and
//! mappings staying bounded, and two live processes with the same pid: for real, in two pid
//! namespaces sharing one directory (`unshare`, where this machine allows it), and as a
//! simulation that runs everywhere.

#[allow(dead_code)]
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{ChildProcess, child_role, param, say, wait_for_eof};

use shmetrics_reader::Reader;
use shmetrics_reader::snapshot::Value;
use shmetrics_writer::{GaugeMode, Options, Registry};

/// Descriptors of this process open on files under `dir`.
fn open_fds_under(dir: &Path) -> usize {
    let dir = std::fs::canonicalize(dir).unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(&dir))
        .count()
}

/// Read-only mappings of this process of files under `dir` (the readers'; writers map
/// read-write).
fn reader_mappings_under(dir: &Path) -> usize {
    let dir = std::fs::canonicalize(dir).unwrap();
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&"r--s")
                && fields
                    .get(5)
                    .is_some_and(|p| Path::new(p).starts_with(&dir))
        })
        .count()
}

#[test]
fn ten_thousand_segments_in_one_directory() {
    const PROCESSES: u32 = 10_000;
    let dir = tempfile::tempdir().unwrap();
    // The smallest segments (one page), as many short-lived processes would leave behind.
    let options = Options {
        initial_segment_size: 4096,
        ..Options::default()
    };
    let live = Registry::open_simulating_pid(dir.path(), options.clone(), 1).unwrap();
    live.counter("req_total", "Requests.", &["shard"])
        .unwrap()
        .labels(&["live"])
        .unwrap()
        .inc_by(7.0);
    for pid in 2..=PROCESSES {
        let r = Registry::open_simulating_pid(dir.path(), options.clone(), pid).unwrap();
        let shard = (pid % 10).to_string();
        r.counter("req_total", "Requests.", &["shard"])
            .unwrap()
            .labels(&[shard])
            .unwrap()
            .inc();
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        PROCESSES as usize
    );

    let mut reader = Reader::open(dir.path()).unwrap();
    let scrape = reader.snapshot();
    assert_eq!(scrape.report.live_segments, 1);
    assert_eq!(scrape.report.dead_segments, PROCESSES as usize - 1);
    assert!(
        scrape.report.problems.is_empty(),
        "{:?}",
        scrape.report.problems
    );
    assert_eq!(
        common::counter_total(&scrape.snapshot, "req"),
        7.0 + f64::from(PROCESSES - 1)
    );
    // A dead segment keeps no descriptor (its mapping holds the data): the reader needs one
    // per live process only, far below any descriptor limit.
    assert_eq!(
        open_fds_under(dir.path()),
        1 + 1,
        "the live writer's and the reader's"
    );

    // Compaction leaves the live segment and the archive, and the reader lets go of the
    // mappings of everything it removed.
    let report = reader.compact().unwrap();
    assert_eq!(report.folded_segments, PROCESSES as usize - 1);
    let scrape = reader.snapshot();
    assert_eq!(
        common::counter_total(&scrape.snapshot, "req"),
        7.0 + f64::from(PROCESSES - 1)
    );
    assert_eq!(scrape.report.live_segments + scrape.report.dead_segments, 2);
    // Two mappings per segment: the segment and its header page.
    assert_eq!(reader_mappings_under(dir.path()), 2 * 2);
    drop(live);
}

/// What each of the two same-pid processes writes: `value` to a counter, 1 to a `livesum`
/// gauge, `value` × 100 to an `all` gauge.
fn write_same_pid_series(registry: &Registry, value: f64) {
    registry
        .counter("req_total", "Requests.", &[])
        .unwrap()
        .unlabelled()
        .unwrap()
        .inc_by(value);
    registry
        .gauge("up", "Up.", &[], GaugeMode::LiveSum)
        .unwrap()
        .unlabelled()
        .unwrap()
        .set(1.0);
    registry
        .gauge("mem", "Memory.", &[], GaugeMode::All)
        .unwrap()
        .unlabelled()
        .unwrap()
        .set(value * 100.0);
}

/// Two processes with pid `pid` wrote 1 and 2 (the newer 2): both live and counted; the
/// one `pid` label of the `all` gauge shows the newer one's value.
fn check_both_live(reader: &mut Reader, pid: u32) {
    let s = reader.snapshot();
    assert_eq!((s.report.live_segments, s.report.dead_segments), (2, 0));
    assert_eq!(common::counter_total(&s.snapshot, "req"), 3.0);
    assert_eq!(
        s.snapshot.family("up").unwrap().series[0].value,
        Value::Gauge(2.0)
    );
    let mem = &s.snapshot.family("mem").unwrap().series;
    assert_eq!(mem.len(), 1);
    assert_eq!(
        (mem[0].pid, &mem[0].value),
        (Some(pid), &Value::Gauge(200.0))
    );
}

/// After the newer exits: the older stays live (its lock, not its pid, says so) and every
/// count stays.
fn check_older_alone(reader: &mut Reader) {
    let s = reader.snapshot();
    assert_eq!((s.report.live_segments, s.report.dead_segments), (1, 1));
    assert_eq!(common::counter_total(&s.snapshot, "req"), 3.0);
    assert_eq!(
        s.snapshot.family("up").unwrap().series[0].value,
        Value::Gauge(1.0)
    );
}

#[test]
fn two_live_processes_with_the_same_pid() {
    // As two processes of different pid namespaces sharing one directory, simulated in one
    // process: the same pid in both headers, different instances.
    let dir = tempfile::tempdir().unwrap();
    let older = Registry::open_simulating_pid(dir.path(), Options::default(), 42).unwrap();
    std::thread::sleep(Duration::from_millis(2));
    let newer = Registry::open_simulating_pid(dir.path(), Options::default(), 42).unwrap();
    write_same_pid_series(&older, 1.0);
    write_same_pid_series(&newer, 2.0);
    check_both_live(&mut Reader::open(dir.path()).unwrap(), 42);
    drop(newer);
    check_older_alone(&mut Reader::open(dir.path()).unwrap());
    drop(older);
}

/// The wrapper that starts a process as pid 1 of a new pid namespace, if this machine lets
/// us create one (root, or unprivileged user namespaces).
fn pid_namespace_wrapper() -> Option<&'static [&'static str]> {
    const ROOT: &[&str] = &["unshare", "--pid", "--fork", "--kill-child"];
    const USER: &[&str] = &["unshare", "--user", "--pid", "--fork", "--kill-child"];
    [ROOT, USER].into_iter().find(|wrapper| {
        std::process::Command::new(wrapper[0])
            .args(&wrapper[1..])
            .args(["sh", "-c", "test $$ = 1"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

#[test]
fn two_processes_with_one_pid_in_two_pid_namespaces() {
    const TEST: &str = "two_processes_with_one_pid_in_two_pid_namespaces";
    if let Some(role) = child_role() {
        assert_eq!(role, "writer");
        let dir: PathBuf = param("dir");
        let value: f64 = param("value");
        let registry = Registry::open(&dir).unwrap();
        write_same_pid_series(&registry, value);
        say(format!("pid {}", std::process::id()));
        wait_for_eof();
        return;
    }
    let Some(wrapper) = pid_namespace_wrapper() else {
        eprintln!(
            "skipped: no pid namespace can be created here (unshare --pid needs root or \
             user namespaces); two_live_processes_with_the_same_pid simulates the case"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let start = |value: f64| {
        let params = [
            ("dir", dir.path().display().to_string()),
            ("value", value.to_string()),
        ];
        let mut child = ChildProcess::spawn_under(wrapper, TEST, "writer", &params);
        // Each writer is the first process of its namespace.
        assert_eq!(child.expect_line(Duration::from_secs(20)), "pid 1");
        child
    };
    let older = start(1.0);
    std::thread::sleep(Duration::from_millis(2));
    let mut newer = start(2.0);

    let mut reader = Reader::open(dir.path()).unwrap();
    check_both_live(&mut reader, 1);
    newer.close_stdin();
    newer.wait(Duration::from_secs(20));
    check_older_alone(&mut reader);
    drop(older);
}
