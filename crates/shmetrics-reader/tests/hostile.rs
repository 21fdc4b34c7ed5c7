//! Hostile environments: a directory of 10,000 segments, the reader's descriptors and
//! mappings staying bounded, and two live processes with the same pid (as in two pid
//! namespaces sharing one directory).

use std::path::Path;

use shmetrics_reader::Reader;
use shmetrics_reader::snapshot::{Snapshot, Value};
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

fn counter_total(s: &Snapshot, family: &str) -> f64 {
    s.family(family)
        .map(|f| {
            f.series
                .iter()
                .map(|x| match x.value {
                    Value::Counter(v) => v,
                    ref other => panic!("{other:?}"),
                })
                .sum()
        })
        .unwrap_or(0.0)
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
        counter_total(&scrape.snapshot, "req"),
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
        counter_total(&scrape.snapshot, "req"),
        7.0 + f64::from(PROCESSES - 1)
    );
    assert_eq!(scrape.report.live_segments + scrape.report.dead_segments, 2);
    // Two mappings per segment: the segment and its header page.
    assert_eq!(reader_mappings_under(dir.path()), 2 * 2);
    drop(live);
}

#[test]
fn two_live_processes_with_the_same_pid() {
    // As two processes of different pid namespaces sharing one directory: the same pid in
    // both headers, different instances. Liveness comes from each file's lock, never from
    // the pid, so both count; only the `all` gauges, which show one value per pid label,
    // show the newer process's.
    let dir = tempfile::tempdir().unwrap();
    let older = Registry::open_simulating_pid(dir.path(), Options::default(), 42).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    let newer = Registry::open_simulating_pid(dir.path(), Options::default(), 42).unwrap();
    for (r, v) in [(&older, 1.0), (&newer, 2.0)] {
        r.counter("req_total", "Requests.", &[])
            .unwrap()
            .labels::<&str>(&[])
            .unwrap()
            .inc_by(v);
        r.gauge("up", "Up.", &[], GaugeMode::LiveSum)
            .unwrap()
            .labels::<&str>(&[])
            .unwrap()
            .set(1.0);
        r.gauge("mem", "Memory.", &[], GaugeMode::All)
            .unwrap()
            .labels::<&str>(&[])
            .unwrap()
            .set(v * 100.0);
    }
    let s = Reader::open(dir.path()).unwrap().snapshot();
    assert_eq!(s.report.live_segments, 2);
    assert_eq!(counter_total(&s.snapshot, "req"), 3.0);
    assert_eq!(
        s.snapshot.family("up").unwrap().series[0].value,
        Value::Gauge(2.0)
    );
    let mem = &s.snapshot.family("mem").unwrap().series;
    assert_eq!(mem.len(), 1);
    assert_eq!(
        (mem[0].pid, &mem[0].value),
        (Some(42), &Value::Gauge(200.0))
    );

    // One of them exits: the other stays live and counted, the dead one's counts stay.
    drop(newer);
    let s = Reader::open(dir.path()).unwrap().snapshot();
    assert_eq!((s.report.live_segments, s.report.dead_segments), (1, 1));
    assert_eq!(counter_total(&s.snapshot, "req"), 3.0);
    assert_eq!(
        s.snapshot.family("up").unwrap().series[0].value,
        Value::Gauge(1.0)
    );
    drop(older);
}
