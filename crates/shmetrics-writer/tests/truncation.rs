//! A writer whose own segment is truncated under it. Without `Options::guard_truncation`
//! the next write past the new end raises `SIGBUS` and ends the process (as for any mapped
//! file: shown here in a child process); with it, the process goes on, the lost pages are
//! private zeros (their series count again from zero, seen by no reader), and
//! `Registry::truncated` says so.

use std::path::Path;
use std::process::Command;

use shmetrics_writer::{Options, Registry};

const ROLE: &str = "SHMETRICS_TRUNCATION_ROLE";

/// Opens a registry in `dir`, writes 1,000 series (several pages of slots), truncates its
/// segment to one page and writes them all again. Returns the registry.
fn write_truncate_write(dir: &Path, guard_truncation: bool) -> Registry {
    let r = Registry::open_with(
        dir,
        Options {
            guard_truncation,
            ..Options::default()
        },
    )
    .unwrap();
    let c = r.counter("jobs_total", "Jobs.", &["i"]).unwrap();
    let children: Vec<_> = (0..1_000)
        .map(|i| c.labels(&[i.to_string()]).unwrap().clone())
        .collect();
    for child in &children {
        child.inc();
    }
    let segment = &r.segment_paths()[0];
    std::fs::OpenOptions::new()
        .write(true)
        .open(segment)
        .unwrap()
        .set_len(4096)
        .unwrap();
    assert!(!r.truncated());
    for child in &children {
        child.inc();
    }
    // Series on a lost page start again from zero, privately; those on the first page,
    // which the file kept, go on.
    assert_eq!(children[999].get(), 1.0);
    r
}

#[test]
fn a_guarded_writer_survives_its_segment_truncated() {
    if std::env::var(ROLE).as_deref() == Ok("unguarded") {
        let dir = tempfile::tempdir().unwrap();
        write_truncate_write(dir.path(), false);
        // Not reached: the second round of writes faults.
        std::process::exit(0);
    }
    let dir = tempfile::tempdir().unwrap();
    let r = write_truncate_write(dir.path(), true);
    assert!(r.truncated());
    // The environment switch, as the Python package would open its registry.
    // SAFETY: no other thread of this test binary reads the environment meanwhile (this
    // file has one test).
    unsafe { std::env::set_var(shmetrics_writer::GUARD_TRUNCATION_ENV, "1") };
    assert!(shmetrics_writer::Options::from_env().guard_truncation);
    // SAFETY: as above.
    unsafe { std::env::remove_var(shmetrics_writer::GUARD_TRUNCATION_ENV) };
    assert!(!shmetrics_writer::Options::from_env().guard_truncation);

    // Unguarded, the same ends the process with SIGBUS.
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_guarded_writer_survives_its_segment_truncated",
            "--nocapture",
        ])
        .env(ROLE, "unguarded")
        .status()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGBUS), "{status:?}");
}
