//! A transient failure to open a new segment (here `EMFILE`: the reader's descriptor limit
//! reached, as a flood of network connections does to a server) is counted and retried at
//! the next scrape; it is never cached as a verdict about the file, which on tmpfs would
//! hide a live writer for good (its size and times never change).
//!
//! This file holds one test: it lowers this process's descriptor limit, which would disturb
//! tests running beside it.

use std::os::fd::AsRawFd;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use shmetrics_reader::snapshot::Value;
use shmetrics_reader::{Reader, SkipReason};
use shmetrics_writer::Registry;

fn counter(reader: &mut Reader) -> (Option<f64>, Option<usize>) {
    let scrape = reader.snapshot();
    let value = scrape
        .snapshot
        .family("req")
        .map(|f| match f.series[0].value {
            Value::Counter(v) => v,
            ref other => panic!("{other:?}"),
        });
    let skipped = scrape.report.skipped.get(&SkipReason::FileLimit).copied();
    (value, skipped)
}

#[test]
fn a_segment_that_could_not_be_opened_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let mut reader = Reader::open(dir.path()).unwrap();
    assert_eq!(counter(&mut reader), (None, None));

    let writer = Registry::open(dir.path()).unwrap();
    let c = writer.counter("req_total", "Requests.", &[]).unwrap();
    c.unlabelled().unwrap().inc_by(5.0);

    // The lowest free descriptor: the listing takes it, so opening the segment fails.
    let lowest = std::fs::File::open("/dev/null").unwrap().as_raw_fd() as u64;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, lowest + 1, hard).unwrap();
    let starved = [counter(&mut reader), counter(&mut reader)];
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    // Counted at every scrape, never cached.
    assert_eq!(starved, [(None, Some(1)), (None, Some(1))]);

    // Descriptors are back: the next scrape sees the writer, with nothing changed in the
    // directory or the file.
    assert_eq!(counter(&mut reader), (Some(5.0), None));
    c.unlabelled().unwrap().inc();
    assert_eq!(counter(&mut reader), (Some(6.0), None));
    drop(writer);
}
