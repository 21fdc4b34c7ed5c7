//! Why a segment or a record was rejected.

use std::fmt;

/// A reason to reject untrusted segment bytes. Each variant names what was wrong, so that a
/// reader can report it; [`LayoutError::reason`] gives a short stable label for metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The file is shorter than a header.
    TruncatedHeader {
        /// Bytes available.
        len: u64,
    },
    /// The first eight bytes are not the shmetrics magic.
    BadMagic,
    /// The segment was written on a machine of the other byte order.
    EndianMismatch,
    /// A layout version this reader does not know.
    UnsupportedVersion(u32),
    /// The header size field is not [`crate::HEADER_SIZE`].
    BadHeaderSize(u32),
    /// The header sets flags this reader does not know.
    UnknownFlags(u32),
    /// The header's file size differs from the file's actual size.
    FileSizeMismatch {
        /// Size recorded in the header.
        header: u64,
        /// Size of the file.
        actual: u64,
    },
    /// The file size is out of range or not a multiple of 8.
    BadFileSize(u64),
    /// A file on tmpfs with fewer pages allocated than its size: not written by a shmetrics
    /// writer (which reserves every byte), and reading its holes would make tmpfs allocate
    /// them (and raise `SIGBUS` when it is full).
    SparseFile {
        /// Bytes allocated to the file.
        allocated: u64,
        /// Size of the file.
        size: u64,
    },
    /// Reading the file's mapping faulted (`SIGBUS`, caught): the file shrank under the
    /// reader, or its file system could not supply a page.
    FaultedPage {
        /// Size of the file when it was mapped.
        mapped: u64,
        /// Size of the file now.
        actual: u64,
    },
    /// The metadata and slot areas overlap or leave the file.
    BadAreaBounds {
        /// Published metadata length.
        meta_len: u64,
        /// Lowest slot offset.
        slot_floor: u64,
        /// File size.
        file_size: u64,
    },
    /// A record runs past the published metadata.
    TruncatedRecord {
        /// Offset of the record within the metadata area.
        offset: usize,
    },
    /// A record's length field is too small, unaligned or too large.
    BadRecordLength {
        /// Offset of the record within the metadata area.
        offset: usize,
        /// The length field.
        len: u32,
    },
    /// A record kind this reader does not know.
    UnknownRecordKind {
        /// Offset of the record.
        offset: usize,
        /// The kind field.
        kind: u16,
    },
    /// A record field is malformed; the message says which.
    BadRecord {
        /// Offset of the record.
        offset: usize,
        /// What is wrong.
        what: String,
    },
}

impl LayoutError {
    /// A short, stable label for this kind of error, used as a metric label value.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TruncatedHeader { .. } => "truncated_header",
            Self::BadMagic => "bad_magic",
            Self::EndianMismatch => "endian_mismatch",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::BadHeaderSize(_) | Self::UnknownFlags(_) => "bad_header",
            Self::FileSizeMismatch { .. } => "file_size_mismatch",
            Self::BadFileSize(_) => "bad_file_size",
            Self::FaultedPage { .. } => "faulted_page",
            Self::SparseFile { .. } => "sparse_file",
            Self::BadAreaBounds { .. } => "bad_area_bounds",
            Self::TruncatedRecord { .. } => "truncated_record",
            Self::BadRecordLength { .. } => "bad_record_length",
            Self::UnknownRecordKind { .. } => "unknown_record_kind",
            Self::BadRecord { .. } => "bad_record",
        }
    }
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TruncatedHeader { len } => {
                write!(
                    f,
                    "truncated header: {len} bytes, need {}",
                    crate::HEADER_SIZE
                )
            }
            Self::BadMagic => f.write_str("not a shmetrics segment (bad magic)"),
            Self::EndianMismatch => f.write_str("segment written with the other byte order"),
            Self::UnsupportedVersion(v) => write!(
                f,
                "unsupported layout version {v} (this build reads version {})",
                crate::LAYOUT_VERSION
            ),
            Self::BadHeaderSize(s) => write!(f, "bad header size {s}"),
            Self::UnknownFlags(flags) => write!(f, "unknown header flags {flags:#x}"),
            Self::FileSizeMismatch { header, actual } => write!(
                f,
                "header says the file has {header} bytes but it has {actual}"
            ),
            Self::BadFileSize(s) => write!(f, "file size {s} out of range or unaligned"),
            Self::SparseFile { allocated, size } => write!(
                f,
                "a sparse file on tmpfs ({allocated} of {size} bytes allocated): not read, \
                 since reading its holes would allocate shared memory"
            ),
            Self::FaultedPage { mapped, actual } => write!(
                f,
                "a page of the file could not be read (mapped with {mapped} bytes, it has \
                 {actual} now, or its file system could not supply the page): nothing read \
                 from it is used"
            ),
            Self::BadAreaBounds {
                meta_len,
                slot_floor,
                file_size,
            } => write!(
                f,
                "metadata length {meta_len} and slot floor {slot_floor} do not fit a {file_size}-byte file"
            ),
            Self::TruncatedRecord { offset } => {
                write!(
                    f,
                    "record at metadata offset {offset} runs past the published metadata"
                )
            }
            Self::BadRecordLength { offset, len } => {
                write!(f, "record at metadata offset {offset} has bad length {len}")
            }
            Self::UnknownRecordKind { offset, kind } => {
                write!(
                    f,
                    "record at metadata offset {offset} has unknown kind {kind}"
                )
            }
            Self::BadRecord { offset, what } => {
                write!(f, "record at metadata offset {offset}: {what}")
            }
        }
    }
}

impl std::error::Error for LayoutError {}
