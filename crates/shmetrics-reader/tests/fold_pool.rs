//! The fold threads of `Reader::set_fold_threads` are kept between snapshots, ended when
//! the count drops to one or the reader goes, and started anew in a forked child, which
//! folds to the bytes one thread gives. One test in a binary of its own: it counts the
//! process's threads, and it forks.

use std::time::{Duration, Instant};

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use shmetrics_reader::{Format, PrefixFilter, Reader};
use shmetrics_writer::{GaugeMode, Options, Registry};

/// Longest wait for threads to end, or for the forked child to exit.
const WAIT: Duration = Duration::from_secs(30);

/// Thread ids of this process's fold threads.
fn fold_threads() -> Vec<i32> {
    let mut tids: Vec<i32> = std::fs::read_dir("/proc/self/task")
        .expect("list threads")
        .filter_map(|e| {
            let tid = e.expect("task entry").file_name();
            let tid = tid.to_str().expect("tid");
            let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
            (comm.trim_end() == "shmetrics-fold").then(|| tid.parse().expect("tid"))
        })
        .collect();
    tids.sort_unstable();
    tids
}

/// Waits (bounded) until `count` fold threads are left, and returns them.
fn settle_at(count: usize) -> Vec<i32> {
    let deadline = Instant::now() + WAIT;
    loop {
        let tids = fold_threads();
        if tids.len() == count || Instant::now() > deadline {
            return tids;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn scrape(reader: &mut Reader) -> String {
    let mut out = Vec::new();
    (reader.scrape(
        Format::OpenMetrics,
        &PrefixFilter::default(),
        false,
        &mut out,
    ))
    .unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn fold_threads_are_kept_between_snapshots_and_started_anew_after_fork() {
    let dir = tempfile::tempdir().unwrap();
    let registries: Vec<Registry> = (0..6)
        .map(|p| {
            let r =
                Registry::open_simulating_pid(dir.path(), Options::default(), 5000 + p).unwrap();
            let c = r.counter("requests", "Requests.", &["route"]).unwrap();
            c.labels([format!("r{}", p % 2)])
                .unwrap()
                .inc_by(f64::from(p) + 0.1);
            let h = (r.histogram("latency", "Latency.", &[], &[0.5, 1.0])).unwrap();
            h.unlabelled().unwrap().observe(f64::from(p) / 4.0);
            let g = r
                .gauge("queue", "Queue.", &[], GaugeMode::MostRecent)
                .unwrap();
            g.unlabelled().unwrap().set(f64::from(p));
            r
        })
        .collect();
    let expected = scrape(&mut Reader::open(dir.path()).unwrap());

    let mut reader = Reader::open(dir.path()).unwrap();
    reader.set_fold_threads(3);
    reader.set_fold_group_min_bytes(0);
    reader.set_fold_threads_in_step(true);
    assert_eq!(
        fold_threads(),
        Vec::<i32>::new(),
        "none before the first snapshot"
    );
    assert_eq!(scrape(&mut reader), expected);
    let kept = fold_threads();
    assert_eq!(
        kept.len(),
        2,
        "two besides the calling thread, after the snapshot"
    );
    for _ in 0..3 {
        assert_eq!(scrape(&mut reader), expected);
        assert_eq!(fold_threads(), kept, "the same threads, not new ones");
    }
    assert_eq!(reader.snapshot().report.fold_threads, 3);

    // Another count: the old threads end, new ones start.
    reader.set_fold_threads(2);
    assert_eq!(scrape(&mut reader), expected);
    let two = settle_at(1);
    assert_eq!(two.len(), 1, "{two:?}");
    assert!(
        !kept.contains(&two[0]),
        "a new thread: {two:?} after {kept:?}"
    );

    // In a forked child the parent's threads do not exist: the child starts its own and
    // folds to the same bytes (a child that used the parent's pool would hang; an alarm
    // ends it, and the parent's bounded wait reports it).
    // SAFETY: after fork() only the calling thread exists in the child, so a lock another
    // thread held stays held there. The others are libtest's main thread (parked on the
    // channel that waits for this test's result) and the reader's fold thread, blocked
    // between snapshots; neither holds a lock the child takes (glibc's fork leaves malloc
    // usable in the child). The child never returns into libtest: it exits.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        ForkResult::Child => {
            nix::unistd::alarm::set(60);
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let text = scrape(&mut reader);
                let threads = fold_threads().len();
                (text == expected && threads == 1, threads)
            }));
            let code = match outcome {
                Ok((true, _)) => 0,
                Ok((false, threads)) => 10 + threads.min(100) as i32,
                Err(_) => 2,
            };
            // SAFETY: `_exit` ends the child at once, running nothing of libtest's (or of
            // the parent's destructors, whose threads are not here).
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            assert_eq!(wait_child(child), Some(WaitStatus::Exited(child, 0)));
        }
    }
    // The parent's thread is untouched by the child's.
    assert_eq!(fold_threads(), two);

    // One thread: the others end; so do they when the reader goes.
    reader.set_fold_threads(1);
    assert_eq!(scrape(&mut reader), expected);
    assert_eq!(settle_at(0), Vec::<i32>::new());
    reader.set_fold_threads(2);
    assert_eq!(scrape(&mut reader), expected);
    assert_eq!(settle_at(1).len(), 1);

    // A snapshot that needs fewer threads (fewer live segments) uses fewer of the same
    // threads, and one that needs more again starts none: only another count replaces them.
    reader.set_fold_threads(4);
    assert_eq!(scrape(&mut reader), expected);
    let four = settle_at(3);
    assert_eq!(four.len(), 3, "{four:?}");
    let mut registries = registries;
    let ended: Vec<Registry> = registries.drain(2..).collect();
    drop(ended);
    let fewer = scrape(&mut Reader::open(dir.path()).unwrap());
    assert_eq!(scrape(&mut reader), fewer);
    assert_eq!(
        reader.snapshot().report.fold_threads,
        2,
        "two live segments"
    );
    assert_eq!(fold_threads(), four, "the same threads, not new ones");

    drop(reader);
    assert_eq!(settle_at(0), Vec::<i32>::new());
    drop(registries);
}

/// The child's exit status, waiting at most [`WAIT`] (then killing it).
fn wait_child(child: Pid) -> Option<WaitStatus> {
    let deadline = Instant::now() + WAIT;
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)).expect("waitpid") {
            WaitStatus::StillAlive if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            WaitStatus::StillAlive => {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                let _ = waitpid(child, None);
                return None;
            }
            status => return Some(status),
        }
    }
}
