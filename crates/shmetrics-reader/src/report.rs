//! What a scrape found wrong or skipped: the report behind the `shmetrics_reader_*`
//! self-metrics and the log lines.

use shmetrics_layout::LayoutError;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

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
    /// Why, as the `reason` label of `shmetrics_reader_invalid_segments` names it.
    pub reason: ProblemReason,
    /// Human-readable detail.
    pub detail: String,
}

/// Why a segment, a `.db` file or a part of one was left out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemReason {
    /// The file is shorter than a header.
    TruncatedHeader,
    /// Not a shmetrics segment.
    BadMagic,
    /// Written on a machine of the other byte order.
    EndianMismatch,
    /// A layout version this reader does not know.
    UnsupportedVersion,
    /// A header size or flags this reader does not know.
    BadHeader,
    /// The header's file size differs from the file's.
    FileSizeMismatch,
    /// A file size the format does not allow.
    BadFileSize,
    /// A page of the mapping faulted (the file shrank under it).
    FaultedPage,
    /// A file with holes on a file system where reading them would allocate.
    SparseFile,
    /// Metadata and slot areas that overlap or pass the end.
    BadAreaBounds,
    /// A record cut short.
    TruncatedRecord,
    /// A record length the format does not allow.
    BadRecordLength,
    /// A record kind this reader does not know.
    UnknownRecordKind,
    /// A record whose contents are invalid.
    BadRecord,
    /// Families or series over the exposition limits, left out.
    OverLimit,
    /// Entries of a `.db` file that cannot be represented, left out.
    LegacyUnsupported,
    /// An empty `.db` file.
    LegacyEmpty,
    /// A `.db` file shorter than it claims.
    LegacyTruncated,
    /// A `.db` file whose entries are corrupt.
    LegacyCorrupt,
    /// A `.db` file that cannot be read.
    LegacyUnreadable,
    /// An archive part that is not the one its archive names, or is invalid.
    BadPart,
    /// An archive part that cannot be opened.
    MissingPart,
}

impl ProblemReason {
    /// The stable label: `bad_magic`, `over_limit`, ...
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TruncatedHeader => "truncated_header",
            Self::BadMagic => "bad_magic",
            Self::EndianMismatch => "endian_mismatch",
            Self::UnsupportedVersion => "unsupported_version",
            Self::BadHeader => "bad_header",
            Self::FileSizeMismatch => "file_size_mismatch",
            Self::BadFileSize => "bad_file_size",
            Self::FaultedPage => "faulted_page",
            Self::SparseFile => "sparse_file",
            Self::BadAreaBounds => "bad_area_bounds",
            Self::TruncatedRecord => "truncated_record",
            Self::BadRecordLength => "bad_record_length",
            Self::UnknownRecordKind => "unknown_record_kind",
            Self::BadRecord => "bad_record",
            Self::OverLimit => "over_limit",
            Self::LegacyUnsupported => "legacy_unsupported",
            Self::LegacyEmpty => "legacy_empty",
            Self::LegacyTruncated => "legacy_truncated",
            Self::LegacyCorrupt => "legacy_corrupt",
            Self::LegacyUnreadable => "legacy_unreadable",
            Self::BadPart => "bad_part",
            Self::MissingPart => "missing_part",
        }
    }
}

impl From<&LayoutError> for ProblemReason {
    fn from(e: &LayoutError) -> Self {
        match e {
            LayoutError::TruncatedHeader { .. } => Self::TruncatedHeader,
            LayoutError::BadMagic => Self::BadMagic,
            LayoutError::EndianMismatch => Self::EndianMismatch,
            LayoutError::UnsupportedVersion(_) => Self::UnsupportedVersion,
            LayoutError::BadHeaderSize(_) | LayoutError::UnknownFlags(_) => Self::BadHeader,
            LayoutError::FileSizeMismatch { .. } => Self::FileSizeMismatch,
            LayoutError::BadFileSize(_) => Self::BadFileSize,
            LayoutError::FaultedPage { .. } => Self::FaultedPage,
            LayoutError::SparseFile { .. } => Self::SparseFile,
            LayoutError::BadAreaBounds { .. } => Self::BadAreaBounds,
            LayoutError::TruncatedRecord { .. } => Self::TruncatedRecord,
            LayoutError::BadRecordLength { .. } => Self::BadRecordLength,
            LayoutError::UnknownRecordKind { .. } => Self::UnknownRecordKind,
            LayoutError::BadRecord { .. } => Self::BadRecord,
            // The enum is non-exhaustive: a variant newer than this match is a record the
            // reader cannot use until it gets its own reason.
            _ => Self::BadRecord,
        }
    }
}

/// Ordered by label, as reports list them.
impl Ord for ProblemReason {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for ProblemReason {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for ProblemReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A family that processes declare inconsistently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The family name.
    pub family: String,
    /// What differs.
    pub kind: ConflictKind,
    /// Human-readable detail, naming the segment that disagrees.
    pub detail: String,
}

/// What two declarations of a family disagree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ConflictKind {
    /// The bucket bounds.
    Buckets,
    /// The gauge mode.
    GaugeMode,
    /// The help text (the first is kept).
    Help,
    /// The exposed names: two families would expose the same name (a counter `x` and a
    /// gauge `x_total`).
    Name,
    /// The metric type.
    Type,
}

impl ConflictKind {
    /// Every kind, in label order.
    pub const ALL: [Self; 5] = [
        Self::Buckets,
        Self::GaugeMode,
        Self::Help,
        Self::Name,
        Self::Type,
    ];

    /// The stable label: `buckets`, `gauge_mode`, `help`, `name`, `type`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Buckets => "buckets",
            Self::GaugeMode => "gauge_mode",
            Self::Help => "help",
            Self::Name => "name",
            Self::Type => "type",
        }
    }
}

impl std::fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything a scrape skipped or found wrong, plus segment counts.
#[derive(Clone, Debug, Default, PartialEq)]
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
    /// Threads the live segments were folded on ([`Reader::set_fold_threads`](crate::Reader::set_fold_threads)).
    pub fold_threads: usize,
    /// Series writers could not place (summed over segments).
    pub dropped_series: u64,
    /// Set when the directory itself could not be read.
    pub dir_error: Option<String>,
    /// Automatic compactions that failed in a row (0 after a success); each failure doubles
    /// the wait before the next attempt.
    pub compaction_failures: u32,
    /// The writers of the live segments (a process once, whatever its segments).
    pub live_writers: std::collections::BTreeSet<crate::process::WriterId>,
    /// Their process metrics, when the reader reads them
    /// ([`Reader::set_process_metrics`](crate::Reader::set_process_metrics)).
    pub processes: Option<crate::process::ProcessReport>,
}

impl ScrapeReport {
    /// Problems counted by reason.
    pub fn problems_by_reason(&self) -> BTreeMap<ProblemReason, usize> {
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
        self.skipping(&p.path, p.reason.as_str(), &p.detail);
    }

    /// Logs once that `path` is skipped, and why (`reason`, a stable label).
    pub(crate) fn skipping(&mut self, path: &Path, reason: &'static str, detail: &str) {
        if self.first(path.to_owned(), reason) {
            log::warn!("skipping {} ({reason}): {detail}", path.display());
        }
    }

    /// Logs `c` once.
    pub(crate) fn conflict(&mut self, c: &Conflict) {
        if self.first(PathBuf::from(&c.family), c.kind.as_str()) {
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
