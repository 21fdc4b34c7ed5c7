//! Why a segment or a record was rejected.

use std::fmt;

/// A reason to reject untrusted segment bytes. Each variant names what was wrong, so that a
/// reader can report it (the reader's `ProblemReason` gives each a stable label).
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

/// Why a family definition or a series' label values are refused: a name, label or bucket
/// layout that the formats cannot express, or a [`limits`](crate::limits) passed. Shared by
/// the writer (refused at registration), the legacy `.db` import and the reader (left out).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DefinitionError {
    /// The metric name is not valid UTF-8 text of an allowed length.
    #[error("invalid metric name {0:?}")]
    InvalidMetricName(Box<str>),
    /// The help text is too long.
    #[error("help text of {family} longer than {max} bytes", max = crate::names::MAX_HELP_LEN)]
    HelpTooLong {
        /// The family.
        family: Box<str>,
    },
    /// A label name is not valid.
    #[error("invalid label name {label:?} in {family}")]
    InvalidLabelName {
        /// The family.
        family: Box<str>,
        /// The label name.
        label: Box<str>,
    },
    /// A label name the formats reserve for this kind of family (`le`, `quantile`, `pid`).
    #[error("label name {label:?} is reserved for {}", reserved_for(*kind, *mode))]
    ReservedLabel {
        /// The label name.
        label: Box<str>,
        /// The family's type.
        kind: crate::MetricKind,
        /// The family's gauge mode.
        mode: Option<crate::GaugeMode>,
    },
    /// The same label name twice.
    #[error("duplicate label name {label:?} in {family}")]
    DuplicateLabel {
        /// The family.
        family: Box<str>,
        /// The label name.
        label: Box<str>,
    },
    /// Two label names that the classic formats expose alike (`a.b` and `a_b`).
    #[error("label names {first:?} and {second:?} of {family} are both exposed as {exposed}")]
    LabelsExposedAlike {
        /// The family.
        family: Box<str>,
        /// The first label name.
        first: Box<str>,
        /// The second label name.
        second: Box<str>,
        /// How both are exposed.
        exposed: Box<str>,
    },
    /// A gauge without a mode, or a mode on another type.
    #[error("{family}: a gauge mode is given exactly for gauges")]
    ModeMismatch {
        /// The family.
        family: Box<str>,
    },
    /// Bucket bounds on a family that is not a histogram.
    #[error("{family}: only histograms have bucket bounds")]
    BoundsWithoutHistogram {
        /// The family.
        family: Box<str>,
    },
    /// A NaN or infinite bucket bound.
    #[error("{family}: bucket bounds must be finite (+Inf is implicit)")]
    NonFiniteBound {
        /// The family.
        family: Box<str>,
    },
    /// Bucket bounds out of order or repeated.
    #[error("{family}: bucket bounds must be strictly increasing")]
    UnsortedBounds {
        /// The family.
        family: Box<str>,
    },
    /// More label names than [`MAX_LABELS`](crate::limits::MAX_LABELS).
    #[error("{family} declares {count} labels, more than the limit of {max}", max = crate::limits::MAX_LABELS)]
    TooManyLabels {
        /// The family.
        family: Box<str>,
        /// Label names declared.
        count: usize,
    },
    /// More bucket bounds than [`MAX_BUCKETS`](crate::limits::MAX_BUCKETS).
    #[error("{family} has {count} buckets, more than the limit of {max}", max = crate::limits::MAX_BUCKETS)]
    TooManyBuckets {
        /// The family.
        family: Box<str>,
        /// Bounds declared.
        count: usize,
    },
    /// Label names longer in all than [`MAX_LABEL_SET_LEN`](crate::limits::MAX_LABEL_SET_LEN).
    #[error("the label names of {family} take {bytes} bytes, more than the limit of {max} for a label set", max = crate::limits::MAX_LABEL_SET_LEN)]
    LabelNamesTooLong {
        /// The family.
        family: Box<str>,
        /// Bytes of label names.
        bytes: usize,
    },
    /// Not one label value per label name.
    #[error("{values} label values given for {names} label names")]
    LabelCount {
        /// Values given.
        values: usize,
        /// Label names of the family.
        names: usize,
    },
    /// A label value longer than [`MAX_LABEL_VALUE_LEN`](crate::limits::MAX_LABEL_VALUE_LEN).
    #[error("a label value of {len} bytes, more than the limit of {max}", max = crate::limits::MAX_LABEL_VALUE_LEN)]
    LabelValueTooLong {
        /// Bytes of the value.
        len: usize,
    },
    /// Label names and values longer in all than
    /// [`MAX_LABEL_SET_LEN`](crate::limits::MAX_LABEL_SET_LEN).
    #[error("label names and values of {bytes} bytes, more than the limit of {max} for a label set", max = crate::limits::MAX_LABEL_SET_LEN)]
    LabelSetTooLong {
        /// Bytes of names and values.
        bytes: usize,
    },
}

/// What a reserved label is reserved for, in words.
fn reserved_for(kind: crate::MetricKind, mode: Option<crate::GaugeMode>) -> String {
    match mode {
        Some(mode) => format!("a gauge in mode {mode}"),
        None => format!("a {kind}"),
    }
}
