//! Errors of the writer.

use std::io;
use std::path::PathBuf;

/// Why opening a registry, registering a family or resolving a child failed.
#[derive(Debug)]
pub enum Error {
    /// `PROMETHEUS_MULTIPROC_DIR` is not set and no directory was given.
    DirUnset,
    /// The metrics directory does not exist.
    DirMissing(PathBuf),
    /// The metrics path exists but is not a directory.
    NotADirectory(PathBuf),
    /// Creating the segment failed because the filesystem is full; nothing was written.
    NoSpace {
        /// The segment being created.
        path: PathBuf,
        /// Bytes that could not be reserved.
        size: u64,
    },
    /// A system call on a segment or the directory failed.
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A family definition is invalid (bad name, label or buckets) or over the
    /// [`limits`](shmetrics_layout::limits); the text says why.
    InvalidFamily(String),
    /// A family of this name was already registered with a different definition.
    Conflict {
        /// The family name.
        name: String,
        /// What differs.
        detail: String,
    },
    /// Label values do not match the family's label names; the text says how.
    InvalidLabels {
        /// The family name.
        name: String,
        /// What is wrong.
        detail: String,
    },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DirUnset => f.write_str(
                "PROMETHEUS_MULTIPROC_DIR is not set; set it to a directory or pass one explicitly",
            ),
            Self::DirMissing(p) => write!(f, "metrics directory {} does not exist", p.display()),
            Self::NotADirectory(p) => write!(f, "{} is not a directory", p.display()),
            Self::NoSpace { path, size } => write!(
                f,
                "no space left to reserve {size} bytes for segment {}",
                path.display()
            ),
            Self::Io { op, path, source } => {
                write!(f, "{op} {}: {source}", path.display())
            }
            Self::InvalidFamily(detail) => f.write_str(detail),
            Self::Conflict { name, detail } => write!(
                f,
                "metric {name} is already registered with a different definition: {detail}"
            ),
            Self::InvalidLabels { name, detail } => write!(f, "labels of {name}: {detail}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Result of writer operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
