//! What a scrape found wrong or skipped: the report behind the `shmetrics_reader_*`
//! self-metrics and the log lines.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Why a directory entry was not read as a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    /// A symbolic link (never followed).
    Symlink,
    /// A directory, FIFO, socket or device.
    NotRegular,
    /// A file owned by another user.
    ForeignOwner,
    /// A file whose name is not a segment's.
    ForeignFile,
    /// The file could not be opened, inspected or mapped.
    Unreadable,
}

impl SkipReason {
    /// A stable label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Symlink => "symlink",
            Self::NotRegular => "not_regular",
            Self::ForeignOwner => "foreign_owner",
            Self::ForeignFile => "foreign_file",
            Self::Unreadable => "unreadable",
        }
    }
}

/// A segment (or part of one) that failed validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub path: PathBuf,
    /// Stable short reason, e.g. `bad_magic` (see `LayoutError::reason`).
    pub reason: &'static str,
    /// Human-readable detail.
    pub detail: String,
}

/// A family that processes declare inconsistently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The family name.
    pub family: String,
    /// `type`, `gauge_mode`, `buckets`, `help`, or `name` (two families would expose the
    /// same name, e.g. a counter `x` and a gauge `x_total`).
    pub kind: &'static str,
    /// Human-readable detail, naming the segment that disagrees.
    pub detail: String,
}

/// Everything a scrape skipped or found wrong, plus segment counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrapeReport {
    /// Segments whose writer is alive.
    pub live_segments: usize,
    /// Segments whose writer has exited.
    pub dead_segments: usize,
    /// Segments skipped entirely because their header is invalid.
    pub bad_segments: usize,
    /// Directory entries skipped, by reason.
    pub skipped: BTreeMap<SkipReason, usize>,
    /// Validation failures: whole segments (bad header) or their tails (bad record).
    pub problems: Vec<Problem>,
    /// Families declared inconsistently across processes.
    pub conflicts: Vec<Conflict>,
    /// Merged series in the snapshot.
    pub series: usize,
    /// Series writers could not place (summed over segments).
    pub dropped_series: u64,
    /// Set when the directory itself could not be read.
    pub dir_error: Option<String>,
}

impl ScrapeReport {
    /// Problems counted by reason.
    pub fn problems_by_reason(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        for p in &self.problems {
            *out.entry(p.reason).or_insert(0) += 1;
        }
        out
    }
}
