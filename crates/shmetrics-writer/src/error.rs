//! Errors of the writer.

use std::io;
use std::path::PathBuf;

use shmetrics_layout::{DefinitionError, GaugeMode, MetricKind};

use crate::Options;

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
        op: SegmentOp,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Options out of range (segment sizes, segment count, contention stripes).
    #[error("segment sizes must be multiples of 4096 in {min}..={max}, max_segments > 0 and contention_stripes a power of two up to {max_stripes}: {options:?}", min = shmetrics_layout::MIN_SEGMENT_SIZE, max = shmetrics_layout::MAX_SEGMENT_SIZE, max_stripes = crate::MAX_STRIPES)]
    InvalidOptions {
        /// The options given.
        options: Box<Options>,
    },
    /// A family definition is invalid (bad name, label or buckets) or over the
    /// [`limits`](shmetrics_layout::limits).
    #[error(transparent)]
    InvalidFamily(DefinitionError),
    /// A family of this name was already registered with a different definition.
    #[error("metric {name} is already registered with a different definition: {difference}")]
    Conflict {
        /// The family name.
        name: String,
        /// What differs.
        difference: Difference,
    },
    /// Stripes that are not a power of two from 1 to [`MAX_STRIPES`](crate::MAX_STRIPES).
    #[error("stripes of {name}: {stripes} is not a power of two from 1 to {max}", max = crate::MAX_STRIPES)]
    InvalidStripes {
        /// The family name.
        name: String,
        /// The stripes asked for.
        stripes: usize,
    },
    /// Label values do not match the family's label names or pass the limits.
    #[error("labels of {name}: {source}")]
    InvalidLabels {
        /// The family name.
        name: String,
        /// What is wrong.
        source: DefinitionError,
    },
    /// Exemplar labels OpenMetrics does not allow (names, repeats, over 128 characters).
    #[error("{0}")]
    InvalidExemplar(shmetrics_layout::exemplar::ExemplarError),
    /// A state that is not one of its stateset's.
    #[error("unknown state {state:?}; the states are {states:?}")]
    UnknownState {
        /// The state asked for.
        state: String,
        /// The family's states.
        states: Vec<String>,
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

/// What a registration differs in from the family registered before it
/// ([`Error::Conflict`]): the first field that differs, or another family with the same
/// exposed name.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Difference {
    /// The metric type.
    Kind {
        /// Registered before.
        before: MetricKind,
        /// Asked for now.
        now: MetricKind,
    },
    /// The gauge mode.
    GaugeMode {
        /// Registered before.
        before: Option<GaugeMode>,
        /// Asked for now.
        now: Option<GaugeMode>,
    },
    /// The label names.
    LabelNames {
        /// Registered before.
        before: Vec<String>,
        /// Asked for now.
        now: Vec<String>,
    },
    /// The bucket bounds.
    Buckets {
        /// Registered before.
        before: Vec<f64>,
        /// Asked for now.
        now: Vec<f64>,
    },
    /// A stateset's states.
    States {
        /// Registered before.
        before: Vec<String>,
        /// Asked for now.
        now: Vec<String>,
    },
    /// The stripes (`Registry::histogram_striped`).
    Stripes {
        /// Registered before.
        before: usize,
        /// Asked for now.
        now: usize,
    },
    /// The help text.
    Help {
        /// Registered before.
        before: String,
        /// Asked for now.
        now: String,
    },
    /// Another family would expose a sample of the same name.
    ExposedAlike {
        /// The other family's type.
        kind: MetricKind,
        /// The other family's name.
        other: String,
        /// The sample name both would expose.
        exposed: String,
    },
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn lists<T: std::fmt::Display>(
            f: &mut std::fmt::Formatter<'_>,
            what: &str,
            before: &[T],
            now: &[T],
        ) -> std::fmt::Result {
            let list = |items: &[T]| {
                let items: Vec<String> = items.iter().map(T::to_string).collect();
                format!("({})", items.join(", "))
            };
            write!(f, "{what} {} before, {} now", list(before), list(now))
        }
        fn mode(m: Option<GaugeMode>) -> String {
            m.map_or_else(|| "none".to_owned(), |m| m.to_string())
        }
        match self {
            Self::Kind { before, now } => write!(f, "type {before} before, {now} now"),
            Self::GaugeMode { before, now } => {
                write!(f, "gauge mode {} before, {} now", mode(*before), mode(*now))
            }
            Self::LabelNames { before, now } => lists(f, "label names", before, now),
            Self::Buckets { before, now } => lists(f, "buckets", before, now),
            Self::States { before, now } => lists(f, "states", before, now),
            Self::Stripes { before, now } => write!(f, "{before} stripes before, {now} now"),
            Self::Help { before, now } => write!(f, "help {before:?} before, {now:?} now"),
            Self::ExposedAlike {
                kind,
                other,
                exposed,
            } => write!(
                f,
                "both it and {kind} {other} would be exposed as {exposed}"
            ),
        }
    }
}

/// A system call on a segment or the directory, as [`Error::Io`] names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SegmentOp {
    /// Reading the metrics directory's metadata.
    StatDirectory,
    /// Creating a segment's temporary file.
    Create,
    /// Locking a segment.
    Lock,
    /// Reserving a segment's bytes on the file system.
    Reserve,
    /// Writing a new segment's header.
    WriteHeader,
    /// Writing a new segment's metadata.
    WriteMetadata,
    /// Writing a new segment's image.
    Write,
    /// Linking a segment under its final name.
    Link,
    /// Mapping a segment.
    Map,
    /// Mapping a new segment over the old one's addresses in a forked child.
    RemapInChild,
}

impl std::fmt::Display for SegmentOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::StatDirectory => "stat metrics directory",
            Self::Create => "create segment",
            Self::Lock => "lock segment",
            Self::Reserve => "reserve segment space",
            Self::WriteHeader => "write segment header",
            Self::WriteMetadata => "write segment metadata",
            Self::Write => "write segment",
            Self::Link => "link segment",
            Self::Map => "map segment",
            Self::RemapInChild => "remap segment in forked child",
        })
    }
}

/// Result of writer operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
