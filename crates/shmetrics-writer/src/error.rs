//! Errors of the writer.

use std::io;
use std::path::PathBuf;

use shmetrics_layout::DefinitionError;

/// Why opening a registry, registering a family or resolving a child failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `PROMETHEUS_MULTIPROC_DIR` is not set and no directory was given.
    #[error("PROMETHEUS_MULTIPROC_DIR is not set; set it to a directory or pass one explicitly")]
    DirUnset,
    /// The metrics directory does not exist.
    #[error("metrics directory {} does not exist", .0.display())]
    DirMissing(PathBuf),
    /// The metrics path exists but is not a directory.
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// Creating the segment failed because the filesystem is full; nothing was written.
    #[error("no space left to reserve {size} bytes for segment {}", path.display())]
    NoSpace {
        /// The segment being created.
        path: PathBuf,
        /// Bytes that could not be reserved.
        size: u64,
    },
    /// A system call on a segment or the directory failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Options out of range (segment sizes, segment count).
    #[error("segment sizes must be multiples of 4096 in {min}..={max} and max_segments > 0: {options}", min = shmetrics_layout::MIN_SEGMENT_SIZE, max = shmetrics_layout::MAX_SEGMENT_SIZE)]
    InvalidOptions {
        /// The options given, as `Debug` prints them.
        options: String,
    },
    /// A family definition is invalid (bad name, label or buckets) or over the
    /// [`limits`](shmetrics_layout::limits).
    #[error(transparent)]
    InvalidFamily(DefinitionError),
    /// A family of this name was already registered with a different definition.
    #[error("metric {name} is already registered with a different definition: {detail}")]
    Conflict {
        /// The family name.
        name: String,
        /// What differs.
        detail: String,
    },
    /// Label values do not match the family's label names or pass the limits.
    #[error("labels of {name}: {source}")]
    InvalidLabels {
        /// The family name.
        name: String,
        /// What is wrong.
        source: DefinitionError,
    },
    /// Every segment this process may create is full.
    #[error("all {max_segments} segments of this process are full")]
    SegmentsFull {
        /// The most segments per process (`Options::max_segments`).
        max_segments: usize,
    },
    /// One series needs more bytes than the largest segment holds.
    #[error("a series needing {bytes} bytes exceeds the largest segment")]
    SeriesTooLarge {
        /// Bytes the series needs.
        bytes: usize,
    },
}

/// Result of writer operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
