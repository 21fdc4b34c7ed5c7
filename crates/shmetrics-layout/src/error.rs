//! Why a segment or a record was rejected.

use std::fmt;

/// A reason to reject untrusted segment bytes. Each variant names what was wrong, so that a
/// reader can report it (the reader's `ProblemReason` gives each a stable label).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// The file is shorter than a header.
    #[error("truncated header: {len} bytes, need {need}", need = crate::HEADER_SIZE)]
    TruncatedHeader {
        /// Bytes available.
        len: u64,
    },
    /// The first eight bytes are not the shmetrics magic.
    #[error("not a shmetrics segment (bad magic)")]
    BadMagic,
    /// The segment was written on a machine of the other byte order.
    #[error("segment written with the other byte order")]
    EndianMismatch,
    /// A layout version this reader does not know.
    #[error(
        "unsupported layout version {0} (this build reads versions {oldest} to {current})",
        oldest = crate::OLDEST_LAYOUT_VERSION,
        current = crate::LAYOUT_VERSION
    )]
    UnsupportedVersion(u32),
    /// The header size field is not [`crate::HEADER_SIZE`].
    #[error("bad header size {0}")]
    BadHeaderSize(u32),
    /// The header sets flags this reader does not know.
    #[error("unknown header flags {0:#x}")]
    UnknownFlags(u32),
    /// The header's file size differs from the file's actual size.
    #[error("header says the file has {header} bytes but it has {actual}")]
    FileSizeMismatch {
        /// Size recorded in the header.
        header: u64,
        /// Size of the file.
        actual: u64,
    },
    /// The file size is out of range or not a multiple of 8.
    #[error("file size {0} out of range or unaligned")]
    BadFileSize(u64),
    /// A file on tmpfs with fewer pages allocated than its size: not written by a shmetrics
    /// writer (which reserves every byte), and reading its holes would make tmpfs allocate
    /// them (and raise `SIGBUS` when it is full).
    #[error(
        "a sparse file on tmpfs ({allocated} of {size} bytes allocated): not read, since \
         reading its holes would allocate shared memory"
    )]
    SparseFile {
        /// Bytes allocated to the file.
        allocated: u64,
        /// Size of the file.
        size: u64,
    },
    /// Reading the file's mapping faulted (`SIGBUS`, caught): the file shrank under the
    /// reader, or its file system could not supply a page.
    #[error(
        "a page of the file could not be read (mapped with {mapped} bytes, it has {actual} \
         now, or its file system could not supply the page): nothing read from it is used"
    )]
    FaultedPage {
        /// Size of the file when it was mapped.
        mapped: u64,
        /// Size of the file now.
        actual: u64,
    },
    /// The metadata and slot areas overlap or leave the file.
    #[error(
        "metadata length {meta_len} and slot floor {slot_floor} do not fit a \
         {file_size}-byte file"
    )]
    BadAreaBounds {
        /// Published metadata length.
        meta_len: u64,
        /// Lowest slot offset.
        slot_floor: u64,
        /// File size.
        file_size: u64,
    },
    /// A record runs past the published metadata.
    #[error("record at metadata offset {offset} runs past the published metadata")]
    TruncatedRecord {
        /// Offset of the record within the metadata area.
        offset: usize,
    },
    /// A record's length field is too small, unaligned or too large.
    #[error("record at metadata offset {offset} has bad length {len}")]
    BadRecordLength {
        /// Offset of the record within the metadata area.
        offset: usize,
        /// The length field.
        len: u32,
    },
    /// A record kind this reader does not know.
    #[error("record at metadata offset {offset} has unknown kind {kind}")]
    UnknownRecordKind {
        /// Offset of the record.
        offset: usize,
        /// The kind field.
        kind: u16,
    },
    /// A record is malformed, or does not fit the records before it.
    #[error("record at metadata offset {offset}: {fault}")]
    BadRecord {
        /// Offset of the record.
        offset: usize,
        /// What is wrong.
        fault: RecordFault,
    },
}

/// What is wrong with one record: its own fields ([`crate::record::parse_records`]) or its
/// place among the records before it (the reader's checks).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordFault {
    /// A field runs past the record's end.
    #[error("field of {0} bytes runs past the record")]
    FieldPastEnd(usize),
    /// A text field is longer than its limit.
    #[error("{field} of {len} bytes exceeds {limit}")]
    FieldTooLong {
        /// The field.
        field: TextField,
        /// Its length.
        len: usize,
        /// Its limit.
        limit: usize,
    },
    /// A text field is not UTF-8.
    #[error("{0} is not UTF-8")]
    NotUtf8(TextField),
    /// Bytes other than zero padding follow the last field.
    #[error("trailing bytes after the last field")]
    TrailingBytes,
    /// A reserved field is not zero.
    #[error("reserved {0} field is not zero")]
    ReservedNotZero(RecordPart),
    /// A metric type code this reader does not know.
    #[error("unknown metric type code {0}")]
    UnknownMetricKind(u8),
    /// A gauge mode code this reader does not know.
    #[error("unknown gauge mode code {0}")]
    UnknownGaugeMode(u8),
    /// The family definition is one the formats cannot express.
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    /// An exemplar slot count of zero or over a histogram's most buckets.
    #[error("bad exemplar slot count {0}")]
    ExemplarCount(u32),
    /// Exemplar slots for a slot offset where no counter or histogram series of this
    /// segment is.
    #[error("exemplar slots of no counter or histogram series (slot offset {0})")]
    ExemplarsOfNoSeries(u64),
    /// An exemplar slot width other than the narrow and the widest.
    #[error("bad exemplar slot width {0} words")]
    ExemplarSlotWidth(u32),
    /// Exemplar slots for a series of a later segment of the process, or in an archive
    /// for one of another segment.
    #[error("exemplar slots of a series of segment {0}, not this one or an earlier one")]
    ExemplarsOfLaterSegment(u32),
    /// A second exemplars record for one series.
    #[error("exemplar slots declared twice for the series at slot offset {0}")]
    ExemplarsTwice(u64),
    /// An exemplar slot count other than the series' samples with exemplars.
    #[error("{count} exemplar slots for a series that has {expected}")]
    ExemplarCountMismatch {
        /// The record's count.
        count: u32,
        /// The series': 1 for a counter, its buckets for a histogram.
        expected: u32,
    },
    /// An exact-parts count of zero or over the limit.
    #[error("bad exact part count {0}")]
    ExactPartCount(usize),
    /// An exact part is infinite or NaN.
    #[error("an exact part is not finite")]
    ExactPartNotFinite,
    /// A series record's flags hold a bit this reader does not know.
    #[error("unknown series flags {0:#x}")]
    UnknownSeriesFlags(u16),
    /// A slot offset that is not a multiple of 8.
    #[error("unaligned slot offset {0}")]
    UnalignedSlot(u64),
    /// A second family record with an id already declared.
    #[error("family id {0} declared twice")]
    FamilyIdTwice(u32),
    /// A second family record with a name already declared.
    #[error("family {0} declared twice")]
    FamilyNameTwice(Box<str>),
    /// A series of a family not declared before it.
    #[error("series of undeclared family {0}")]
    UndeclaredFamily(u32),
    /// A series' slots leave the slot area.
    #[error("slots at {offset} ({words} words) outside the slot area")]
    SlotsOutside {
        /// The slot offset.
        offset: u64,
        /// The series' slot words.
        words: u64,
    },
    /// A slot offset beyond what a reader indexes.
    #[error("slot offset {0} too large")]
    SlotOffsetTooLarge(u64),
    /// An archive's series of an `all` gauge without the process it belongs to.
    #[error("archived series of all-mode {0} without its process")]
    MissingProcess(Box<str>),
    /// A series with a process outside an archive's `all` gauge.
    #[error("a process series outside an archive's all-mode gauge")]
    UnexpectedProcess,
    /// Exact parts where only an archive's summed series may have them.
    #[error("exact parts outside an archive's counter, histogram, summary or sum gauge")]
    UnexpectedExactParts,
    /// A folded-segment record in a segment that is not an archive.
    #[error("a folded-segment record outside an archive")]
    FoldedOutsideArchive,
    /// An archive part record in a segment that is not an archive.
    #[error("an archive part record outside an archive")]
    PartOutsideArchive,
    /// An archive part named twice, or more parts than an archive may have.
    #[error("archive part {0:016x} repeated or one too many")]
    PartRepeated(u64),
}

/// A text field of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TextField {
    /// A family's name.
    FamilyName,
    /// A family's help text.
    Help,
    /// A family's label name.
    LabelName,
    /// A series' label value.
    LabelValue,
    /// A stateset's state.
    State,
}

impl fmt::Display for TextField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::FamilyName => "family name",
            Self::Help => "help text",
            Self::LabelName => "label name",
            Self::LabelValue => "label value",
            Self::State => "state",
        })
    }
}

/// The part of a record a reserved field belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordPart {
    /// The header every record starts with.
    RecordHeader,
    /// A family record.
    Family,
    /// A series record's process.
    Process,
    /// A folded-segment record.
    Folded,
    /// An archive part record.
    Part,
    /// An exemplars record.
    Exemplars,
}

impl fmt::Display for RecordPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RecordHeader => "record header",
            Self::Family => "family",
            Self::Process => "process",
            Self::Folded => "folded",
            Self::Part => "part",
            Self::Exemplars => "exemplars",
        })
    }
}

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
    /// A gauge, info or stateset without a mode, a mode on another type, or a mode other
    /// than `mostrecent` or `livemostrecent` on an info or stateset.
    #[error(
        "{family}: a merge mode is given exactly for gauges (any mode), infos and statesets (mostrecent or livemostrecent)"
    )]
    ModeMismatch {
        /// The family.
        family: Box<str>,
    },
    /// A stateset whose name cannot be the label of its states' samples: not a valid label
    /// name, or one of its label names.
    #[error(
        "{family}: a stateset's name labels its states, so it must be a valid label name other than its label names"
    )]
    StateLabel {
        /// The family.
        family: Box<str>,
    },
    /// A stateset without states.
    #[error("{family}: a stateset needs at least one state")]
    NoStates {
        /// The family.
        family: Box<str>,
    },
    /// A state listed twice.
    #[error("{family}: state {state:?} is listed twice")]
    DuplicateState {
        /// The family.
        family: Box<str>,
        /// The state.
        state: Box<str>,
    },
    /// A stateset with more states than [`crate::limits::MAX_STATES`].
    #[error("{family}: {count} states, more than the {max} allowed", max = crate::limits::MAX_STATES)]
    TooManyStates {
        /// The family.
        family: Box<str>,
        /// Its state count.
        count: usize,
    },
    /// A state longer than [`crate::limits::MAX_STATE_LEN`].
    #[error("{family}: a state of {len} bytes, more than the {max} allowed", max = crate::limits::MAX_STATE_LEN)]
    StateTooLong {
        /// The family.
        family: Box<str>,
        /// The state's length.
        len: usize,
    },
    /// An info series whose own labels are not name and value pairs.
    #[error("an info's labels are name and value pairs")]
    InfoPairs,
    /// An info label that is not a valid label name or repeats one of the series' labels.
    #[error("info label {label:?} is not a valid label name, or repeats a label of the series")]
    InfoLabel {
        /// The label name.
        label: Box<str>,
    },
    /// An info series with more labels, its family's included, than
    /// [`crate::limits::MAX_LABELS`].
    #[error("an info series with {count} labels, more than the {max} allowed", max = crate::limits::MAX_LABELS)]
    TooManyInfoLabels {
        /// Its label count.
        count: usize,
    },
    /// States given for a family that is not a stateset.
    #[error("{family}: only a stateset has states")]
    StatesWithoutStateSet {
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
