//! What a scrape found wrong or skipped: the report behind the `shmetrics_reader_*`
//! self-metrics and the log lines.

use std::collections::{BTreeMap, HashSet};
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
    /// The file could not be opened, inspected or mapped, for a reason that lasts (such as
    /// its permissions); tried again at every listing.
    Unreadable,
    /// Opening or mapping failed for lack of descriptors (`EMFILE`, `ENFILE`); tried again
    /// at the next scrape.
    FileLimit,
    /// Opening or mapping failed for lack of memory (`ENOMEM`, `ENOBUFS`); tried again at
    /// the next scrape.
    OutOfMemory,
    /// Opening or reading was interrupted or would block (`EINTR`, `EAGAIN`); tried again
    /// at the next scrape.
    Interrupted,
    /// A file claiming to be an archive that is not the one in use (a copy, a backup, a
    /// crafted file): neither merged nor trusted nor removed.
    StrayArchive,
    /// A name reserved for the archive or the compactors' lock, taken by another user or by
    /// something that is not a regular file; compaction uses the next name.
    Squatted,
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
            Self::FileLimit => "file_limit",
            Self::OutOfMemory => "out_of_memory",
            Self::Interrupted => "interrupted",
            Self::StrayArchive => "stray_archive",
            Self::Squatted => "squatted",
        }
    }

    /// Whether a file skipped for this reason may be read later without changing: such
    /// verdicts are never cached.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::FileLimit | Self::OutOfMemory | Self::Interrupted
        )
    }

    /// The reason for an I/O error met while opening or mapping a file.
    pub fn of_io_error(e: &std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE) => Self::FileLimit,
            Some(libc::ENOMEM | libc::ENOBUFS) => Self::OutOfMemory,
            Some(libc::EINTR | libc::EAGAIN) => Self::Interrupted,
            Some(libc::ELOOP) => Self::Symlink,
            _ => Self::Unreadable,
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
    /// Automatic compactions that failed in a row (0 after a success); each failure doubles
    /// the wait before the next attempt.
    pub compaction_failures: u32,
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

/// Log lines written once per file (or family) and reason.
#[derive(Debug, Default)]
pub(crate) struct LogOnce {
    seen: HashSet<(PathBuf, &'static str)>,
    /// Set for a compactor beside a scraping reader: what both see is the reader's to log.
    quiet: bool,
}

impl LogOnce {
    /// A log that writes only what [`LogOnce::first_of_own`] lets through.
    pub(crate) fn quiet() -> Self {
        Self {
            quiet: true,
            ..Self::default()
        }
    }

    /// Whether lines that a reader beside this one logs too are left to it.
    pub(crate) fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// Whether to log `(path, what)` now: the first time it comes up, unless quiet.
    pub(crate) fn first(&mut self, path: PathBuf, what: &'static str) -> bool {
        !self.quiet && self.seen.insert((path, what))
    }

    /// As [`LogOnce::first`], quiet or not: for what only this one sees.
    pub(crate) fn first_of_own(&mut self, path: PathBuf, what: &'static str) -> bool {
        self.seen.insert((path, what))
    }

    /// Logs `p` once.
    pub(crate) fn problem(&mut self, p: &Problem) {
        if self.first(p.path.clone(), p.reason) {
            log::warn!("skipping {} ({}): {}", p.path.display(), p.reason, p.detail);
        }
    }

    /// Logs `c` once.
    pub(crate) fn conflict(&mut self, c: &Conflict) {
        if self.first(PathBuf::from(&c.family), c.kind) {
            log::warn!(
                "conflicting definitions of {} ({}): {}",
                c.family,
                c.kind,
                c.detail
            );
        }
    }

    /// Bounds the memory: a file that keeps coming back may be logged again.
    pub(crate) fn bound(&mut self) {
        if self.seen.len() > 10_000 {
            self.seen.clear();
        }
    }
}
