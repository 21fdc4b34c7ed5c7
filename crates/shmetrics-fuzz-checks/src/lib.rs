//! What the fuzz targets in `fuzz/` check, as plain functions of the input bytes.
//!
//! Each target in `fuzz/fuzz_targets/` is one call into this crate, so the checks are the
//! same code whether libFuzzer drives them (`cargo +nightly fuzz run <target>`) or an
//! ordinary test replays saved inputs (`tests/regressions.rs` replays every file under
//! `fuzz/regressions/<target>/`). A check panics when the code under test misbehaves: a
//! panic in the code itself, or an assertion about its result.
//!
//! The parsers of untrusted bytes and their targets ([`TARGETS`]):
//!
//! | target | input | code under test |
//! |---|---|---|
//! | `layout_header` | raw bytes | [`shmetrics_layout::SegmentHeader::parse`] |
//! | `layout_records` | raw bytes | [`shmetrics_layout::record::parse_records`] |
//! | `segment_file` | a whole segment file | the reader's open, validation, merge and render ([`shmetrics_reader::Reader`]), and `inspect` |
//! | `segment_records` | metadata and slots behind a valid header | the same, reaching the records |
//! | `accept_negotiation` | an `Accept` / `Accept-Encoding` value | [`shmetrics::server::negotiate`] |
//! | `writer_model` | a scenario (see [`model`]) | writer, reader and inspect against a model, with truncation and corruption |
//! | `legacy_db` | a `prometheus_client` `.db` file | the reader's `.db` parser and its translation ([`shmetrics_reader::legacy`]) |
//!
//! Seeds for the corpora come from [`seeds`] (`cargo run -p shmetrics-fuzz-checks --bin
//! fuzz-seeds -- fuzz/corpus`).
#![forbid(unsafe_code)]

pub mod exposition;
pub mod layout;
pub mod legacy;
pub mod model;
pub mod negotiate;
pub mod seeds;
pub mod segment;

use std::path::PathBuf;

/// A fuzz target's check: panics when the code under test misbehaves on `data`.
pub type Check = fn(&[u8]);

/// Every fuzz target, by the name of its file in `fuzz/fuzz_targets/`, with its check.
pub const TARGETS: [(&str, Check); 7] = [
    ("layout_header", layout::header),
    ("layout_records", layout::records),
    ("segment_file", segment::file),
    ("segment_records", segment::records),
    ("accept_negotiation", negotiate::accept),
    ("writer_model", model::scenario),
    ("legacy_db", legacy::db),
];

/// The check of target `name`.
pub fn check(name: &str) -> Option<Check> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
}

/// Environment variable naming the directory under which checks create their scratch
/// directories (default: `/dev/shm` when it exists, else the system temporary directory).
pub const SCRATCH_ENV: &str = "SHMETRICS_FUZZ_SCRATCH";

/// A fresh, empty directory for one input, removed when dropped.
///
/// # Panics
/// When no directory can be created: the check cannot run at all.
pub fn scratch_dir() -> tempfile::TempDir {
    let base = std::env::var_os(SCRATCH_ENV)
        .map(PathBuf::from)
        .or_else(|| {
            let shm = PathBuf::from("/dev/shm");
            shm.is_dir().then_some(shm)
        })
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix("shmetrics-fuzz-")
        .tempdir_in(&base)
        .unwrap_or_else(|e| {
            panic!(
                "cannot create a scratch directory in {}: {e}",
                base.display()
            )
        })
}
