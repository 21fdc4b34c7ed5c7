//! Metadata records: the append-only description of a segment's families and series.
//!
//! A record is an 8-byte [`RecordHeader`] (`len`, `kind`) followed by its payload and zero
//! padding to a multiple of 8 bytes. Records are written once, before the writer advances
//! `meta_len` past them, and never change afterwards. Parsing treats every byte as hostile:
//! each length, count, offset and string is checked, and a failure names its offset.

use bytemuck::{Pod, Zeroable};

use crate::names::{
    Escaping, MAX_HELP_LEN, escaped_name, is_valid_label_name, is_valid_metric_name, reserved_label,
};
use crate::{
    DefinitionError, GaugeMode, LayoutError, MetricKind, RecordFault, RecordPart, TextField,
};

/// Record kind of a [`FamilyRecord`].
pub const RECORD_FAMILY: u16 = 1;
/// Record kind of a [`SeriesRecord`].
pub const RECORD_SERIES: u16 = 2;
/// Record kind of a [`SeriesRecord`] with a [`ProcessOf`]: archives only.
pub const RECORD_PROCESS_SERIES: u16 = 3;
/// Record kind of a [`FoldedRecord`]: archives only.
pub const RECORD_FOLDED: u16 = 4;
/// Record kind of a [`SeriesRecord`] with [`SeriesRecord::exact_parts`]: archives only.
pub const RECORD_EXACT_SERIES: u16 = 5;
/// Record kind of a [`PartRecord`]: archives only.
pub const RECORD_PART: u16 = 6;
/// Record kind of an [`ExemplarsRecord`].
pub const RECORD_EXEMPLARS: u16 = 7;
/// Most partials an exact value may have (an exact sum of `f64`s needs at most 40).
pub const MAX_EXACT_PARTS: usize = 64;
/// Series flag: the fixed part is followed by the series' creation time (`u64`, ns since
/// the Unix epoch). Layout version 2.
pub const SERIES_FLAG_CREATED: u16 = 1;
/// Largest record accepted, in bytes.
pub const MAX_RECORD_LEN: usize = 1 << 20;
/// Gauge-mode byte of a family that is not a gauge.
const NO_MODE: u8 = 0xFF;

/// The first 8 bytes of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct RecordHeader {
    /// Total record length in bytes, header and padding included; a multiple of 8.
    pub len: u32,
    /// [`RECORD_FAMILY`] or [`RECORD_SERIES`].
    pub kind: u16,
    /// Reserved, zero.
    pub reserved: u16,
}

/// Fixed part of a family record's payload.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
struct FamilyFixed {
    id: u32,
    kind: u8,
    mode: u8,
    label_count: u16,
    bucket_count: u32,
    /// A stateset's state count (layout version 2); `0` for other kinds.
    state_count: u32,
}

/// Fixed part of a series record's payload.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
struct SeriesFixed {
    family_id: u32,
    label_count: u16,
    /// [`SERIES_FLAG_CREATED`] or `0`.
    flags: u16,
    slot_offset: u64,
}

/// Fixed part of a process series record's payload, after the [`SeriesFixed`] part.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
struct ProcessFixed {
    pid: u32,
    reserved: u32,
    created_unix_nanos: u64,
}

/// Payload of a part record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
struct PartFixed {
    instance_id: u64,
    reserved: u64,
}

/// Fixed part of an exact series record's payload, after the [`SeriesFixed`] part; the
/// partials (`f64`) follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
struct ExactFixed {
    count: u32,
    reserved: u32,
}

/// Payload of an exemplars record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
struct ExemplarsFixed {
    series_slot_offset: u64,
    block_offset: u64,
    count: u32,
    series_sequence: u32,
    slot_words: u32,
    reserved: u32,
}

/// Payload of a folded record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
struct FoldedFixed {
    instance_id: u64,
    sequence: u32,
    reserved: u32,
}

const _: () = assert!(std::mem::size_of::<RecordHeader>() == 8);
const _: () = assert!(std::mem::size_of::<FamilyFixed>() == 16);
const _: () = assert!(std::mem::size_of::<SeriesFixed>() == 16);

/// Declares a metric family within one segment.
#[derive(Clone, Debug, PartialEq)]
pub struct FamilyRecord {
    /// Id of the family within its segment; series records refer to it.
    pub id: u32,
    /// Metric type.
    pub kind: MetricKind,
    /// Merge mode; `Some` exactly for gauges, infos and statesets
    /// ([`MetricKind::allows_mode`]).
    pub mode: Option<GaugeMode>,
    /// Family name (for counters without the `_total` suffix).
    pub name: String,
    /// Help text, unescaped.
    pub help: String,
    /// Label names, in declaration order.
    pub label_names: Vec<String>,
    /// Finite histogram bucket upper bounds, strictly increasing; `+Inf` is implicit.
    pub bounds: Vec<f64>,
    /// A stateset's states, in order (a series' value is the index of its state); empty
    /// for other kinds.
    pub states: Vec<String>,
}

/// Declares one labelled series (a child) of a family and where its value slots live.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeriesRecord {
    /// The family this series belongs to, as declared earlier in the same segment.
    pub family_id: u32,
    /// Byte offset of the series' first value slot from the start of the file.
    pub slot_offset: u64,
    /// Label values, in the order of the family's label names.
    pub label_values: Vec<String>,
    /// When the series was created, in ns since the Unix epoch (in an archive: the oldest
    /// creation among the processes folded into it); `None` in segments of layout version 1,
    /// where the segment's creation time stands in.
    pub created_unix_nanos: Option<u64>,
    /// In an archive, the dead process a gauge of mode `all` was read from: that mode keeps
    /// one value per process (with a `pid` label). `None` everywhere else.
    pub process: Option<ProcessOf>,
    /// In an archive, when not empty: the exact float part of a summed value (a counter's
    /// fractional word, a histogram's or summary's sum, a `sum` gauge's value) as finite,
    /// non-overlapping partials whose exact sum it is; the slot holds their rounded sum.
    /// Merging the partials instead of the rounded value keeps merged sums exact (see the
    /// reader's `exact` module). Never together with `process`.
    pub exact_parts: Vec<f64>,
}

/// A series record's fields, borrowed: what [`SeriesRecord`] encodes, for a series whose
/// strings and partials live elsewhere (an image builder's, [`crate::image`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SeriesFields<'a> {
    /// As [`SeriesRecord::family_id`].
    pub family_id: u32,
    /// As [`SeriesRecord::slot_offset`].
    pub slot_offset: u64,
    /// As [`SeriesRecord::label_values`].
    pub label_values: &'a [String],
    /// As [`SeriesRecord::created_unix_nanos`].
    pub created_unix_nanos: Option<u64>,
    /// As [`SeriesRecord::process`].
    pub process: Option<ProcessOf>,
    /// As [`SeriesRecord::exact_parts`].
    pub exact_parts: &'a [f64],
}

/// A record that encodes into a buffer: what an image builder appends.
pub trait EncodeRecord {
    /// Appends the record's bytes to `out`.
    fn encode_into(&self, out: &mut Vec<u8>);
}

/// The process an archived series came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessOf {
    /// Its process id.
    pub pid: u32,
    /// Creation time of its segment: orders incarnations of a reused pid (the newest one's
    /// value is kept, as the `pid` label can show only one).
    pub created_unix_nanos: u64,
}

/// In an archive: a segment whose values the archive holds. A reader ignores that segment
/// if it still finds it (a compactor removes it only after publishing the archive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FoldedRecord {
    /// The folded segment's instance id.
    pub instance_id: u64,
    /// The folded segment's sequence number.
    pub sequence: u32,
}

/// In an archive: a sealed archive part whose values belong to this archive too (the file
/// `.shmetrics-archive-part-<instance id>.shm` beside it, whose header has that instance id).
/// Parts never change once sealed; they keep a compaction's memory and rewriting bounded
/// however much dead data there is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartRecord {
    /// The part's instance id.
    pub instance_id: u64,
}

/// Where the exemplar slots of one counter or histogram series are: written once, when
/// the series gets its first exemplar, with the slots, in the segment that holds the
/// series' slots or, when that one is full, a later segment of the same process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExemplarsRecord {
    /// The sequence number of the process's segment that declares the series: this
    /// segment's, or an earlier one's.
    pub series_sequence: u32,
    /// The series' [`SeriesRecord::slot_offset`] in that segment: which series it is.
    pub series_slot_offset: u64,
    /// Byte offset of the first of `count` slots of `slot_words` words each.
    pub block_offset: u64,
    /// A counter's 1 (its `_total` sample); a histogram's bucket count, `+Inf` included.
    pub count: u32,
    /// Words of each slot: [`NARROW_EXEMPLAR_WORDS`](crate::exemplar::NARROW_EXEMPLAR_WORDS)
    /// or [`EXEMPLAR_WORDS`](crate::exemplar::EXEMPLAR_WORDS).
    pub slot_words: u32,
}

/// A parsed record.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A family declaration.
    Family(FamilyRecord),
    /// A series declaration.
    Series(SeriesRecord),
    /// A segment folded into this archive.
    Folded(FoldedRecord),
    /// A sealed part of this archive.
    Part(PartRecord),
    /// The exemplar slots of a series.
    Exemplars(ExemplarsRecord),
}

impl Record {
    /// Length of [`Record::encode`]'s output, without encoding.
    pub fn encoded_len(&self) -> usize {
        match self {
            Record::Family(f) => f.encoded_len(),
            Record::Series(s) => s.encoded_len(),
            Record::Folded(f) => f.encoded_len(),
            Record::Part(p) => p.encoded_len(),
            Record::Exemplars(e) => e.encoded_len(),
        }
    }

    /// The record's bytes, as written.
    pub fn encode(&self) -> Vec<u8> {
        encode(self, self.encoded_len())
    }
}

impl EncodeRecord for Record {
    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Record::Family(f) => f.encode_into(out),
            Record::Series(s) => s.encode_into(out),
            Record::Folded(f) => f.encode_into(out),
            Record::Part(p) => p.encode_into(out),
            Record::Exemplars(e) => e.encode_into(out),
        }
    }
}

/// Checks a family definition, its [`limits`](crate::limits) included; the writer calls
/// this before encoding, the legacy `.db` import before translating. The error says what
/// is wrong.
pub fn check_family(record: &FamilyRecord) -> Result<(), DefinitionError> {
    check_family_format(record)?;
    crate::limits::check_family(&record.name, &record.label_names, &record.bounds)?;
    crate::limits::check_states(&record.name, &record.states)
}

/// Checks what makes a family record well-formed: valid and distinct names, a mode exactly
/// for gauges, increasing finite bounds. The parser applies this; the limits are the
/// reader's to apply, family by family (a family over them is left out, not the rest of
/// the segment).
fn check_family_format(record: &FamilyRecord) -> Result<(), DefinitionError> {
    let FamilyRecord {
        kind,
        mode,
        name,
        help,
        label_names,
        bounds,
        states,
        ..
    } = record;
    let (kind, mode) = (*kind, *mode);
    let family = || Box::from(name.as_str());
    if !is_valid_metric_name(name) {
        return Err(DefinitionError::InvalidMetricName(family()));
    }
    if help.len() > MAX_HELP_LEN {
        return Err(DefinitionError::HelpTooLong { family: family() });
    }
    // Label names are compared as the classic formats expose them: `a.b` and `a_b` would
    // be one label there.
    let exposed: Vec<String> = label_names
        .iter()
        .map(|l| escaped_name(l, false, Escaping::Underscores))
        .collect();
    for (i, label) in label_names.iter().enumerate() {
        if !is_valid_label_name(label) {
            return Err(DefinitionError::InvalidLabelName {
                family: family(),
                label: label.as_str().into(),
            });
        }
        if reserved_label(kind, mode, &exposed[i]) {
            return Err(DefinitionError::ReservedLabel {
                label: label.as_str().into(),
                kind,
                mode,
            });
        }
        if let Some(j) = exposed[..i].iter().position(|e| *e == exposed[i]) {
            return Err(if label_names[j] == *label {
                DefinitionError::DuplicateLabel {
                    family: family(),
                    label: label.as_str().into(),
                }
            } else {
                DefinitionError::LabelsExposedAlike {
                    family: family(),
                    first: label_names[j].as_str().into(),
                    second: label.as_str().into(),
                    exposed: exposed[i].as_str().into(),
                }
            });
        }
    }
    if kind.has_mode() != mode.is_some() || mode.is_some_and(|m| !kind.allows_mode(m)) {
        return Err(DefinitionError::ModeMismatch { family: family() });
    }
    if kind == MetricKind::StateSet {
        // The family name is the label of each state's sample.
        let state_label = escaped_name(name, false, Escaping::Underscores);
        if !is_valid_label_name(name) || exposed.contains(&state_label) {
            return Err(DefinitionError::StateLabel { family: family() });
        }
        if states.is_empty() {
            return Err(DefinitionError::NoStates { family: family() });
        }
        if let Some(i) = (1..states.len()).find(|&i| states[..i].contains(&states[i])) {
            return Err(DefinitionError::DuplicateState {
                family: family(),
                state: states[i].as_str().into(),
            });
        }
    } else if !states.is_empty() {
        return Err(DefinitionError::StatesWithoutStateSet { family: family() });
    }
    if kind != MetricKind::Histogram && !bounds.is_empty() {
        return Err(DefinitionError::BoundsWithoutHistogram { family: family() });
    }
    if bounds.iter().any(|b| !b.is_finite()) {
        return Err(DefinitionError::NonFiniteBound { family: family() });
    }
    if bounds.windows(2).any(|w| w[0] >= w[1]) {
        return Err(DefinitionError::UnsortedBounds { family: family() });
    }
    Ok(())
}

/// Checks that a series gives one value per label name; the reader treats a mismatch as
/// corruption.
pub fn check_label_count<S>(label_names: &[String], values: &[S]) -> Result<(), DefinitionError> {
    if values.len() != label_names.len() {
        return Err(DefinitionError::LabelCount {
            values: values.len(),
            names: label_names.len(),
        });
    }
    Ok(())
}

/// Checks a series' label values: one per label name, within the
/// [`limits`](crate::limits); shared by the writer and the legacy `.db` import.
pub fn check_label_values<S: AsRef<str>>(
    label_names: &[String],
    values: &[S],
) -> Result<(), DefinitionError> {
    check_label_count(label_names, values)?;
    crate::limits::check_label_set(label_names, values)
}

/// Checks an info series' label values: the family's (one per label name), then the info's
/// own labels as name, value, name, value...: valid label names, distinct from each other
/// and from the family's as exposed. The limits are [`crate::limits::check_info_set`]'s.
/// Shared by the writer and the reader.
pub fn check_info_labels<S: AsRef<str>>(
    label_names: &[String],
    values: &[S],
) -> Result<(), DefinitionError> {
    let Some(extra) = values.get(label_names.len()..) else {
        return Err(DefinitionError::LabelCount {
            values: values.len(),
            names: label_names.len(),
        });
    };
    if extra.len() % 2 != 0 {
        return Err(DefinitionError::InfoPairs);
    }
    let mut names: Vec<String> = label_names.to_vec();
    let mut exposed: Vec<String> = label_names
        .iter()
        .map(|l| escaped_name(l, false, Escaping::Underscores))
        .collect();
    for pair in extra.chunks_exact(2) {
        let name = pair[0].as_ref();
        let as_exposed = escaped_name(name, false, Escaping::Underscores);
        if !is_valid_label_name(name) || exposed.contains(&as_exposed) {
            return Err(DefinitionError::InfoLabel { label: name.into() });
        }
        names.push(name.to_owned());
        exposed.push(as_exposed);
    }
    Ok(())
}

/// Bytes [`push_str`] adds for `s`.
fn str_len(s: &str) -> usize {
    4 + s.len()
}

/// A record of `payload` bytes after its header, as encoded: padded to a multiple of 8.
const fn record_len(payload: usize) -> usize {
    (std::mem::size_of::<RecordHeader>() + payload).next_multiple_of(8)
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_ne_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Starts a record at the end of `out`: a placeholder for its header. Returns where it starts.
fn start(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0; 8]);
    at
}

/// Ends the record started at `at`: pads it to a multiple of 8 bytes and writes its header.
fn finish(out: &mut Vec<u8>, at: usize, kind: u16) {
    let len = (out.len() - at).next_multiple_of(8);
    out.resize(at + len, 0);
    let header = RecordHeader {
        len: len as u32,
        kind,
        reserved: 0,
    };
    out[at..at + 8].copy_from_slice(bytemuck::bytes_of(&header));
}

/// `record`'s bytes in a buffer of their own.
fn encode(record: &impl EncodeRecord, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    record.encode_into(&mut out);
    out
}

impl FamilyRecord {
    /// Length of [`FamilyRecord::encode`]'s output, without encoding.
    pub fn encoded_len(&self) -> usize {
        record_len(
            std::mem::size_of::<FamilyFixed>()
                + 8 * self.bounds.len()
                + str_len(&self.name)
                + str_len(&self.help)
                + self.label_names.iter().map(|l| str_len(l)).sum::<usize>()
                + self.states.iter().map(|s| str_len(s)).sum::<usize>(),
        )
    }

    /// Encodes the record, padded to a multiple of 8 bytes. The caller has checked it with
    /// [`check_family`].
    pub fn encode(&self) -> Vec<u8> {
        encode(self, self.encoded_len())
    }
}

impl EncodeRecord for FamilyRecord {
    fn encode_into(&self, out: &mut Vec<u8>) {
        let at = start(out);
        let fixed = FamilyFixed {
            id: self.id,
            kind: self.kind.code(),
            mode: self.mode.map_or(NO_MODE, GaugeMode::code),
            label_count: self.label_names.len() as u16,
            bucket_count: self.bounds.len() as u32,
            state_count: self.states.len() as u32,
        };
        out.extend_from_slice(bytemuck::bytes_of(&fixed));
        for b in &self.bounds {
            out.extend_from_slice(&b.to_ne_bytes());
        }
        push_str(out, &self.name);
        push_str(out, &self.help);
        for l in &self.label_names {
            push_str(out, l);
        }
        for s in &self.states {
            push_str(out, s);
        }
        finish(out, at, RECORD_FAMILY);
    }
}

impl SeriesRecord {
    /// The record's fields, borrowed.
    pub fn fields(&self) -> SeriesFields<'_> {
        SeriesFields {
            family_id: self.family_id,
            slot_offset: self.slot_offset,
            label_values: &self.label_values,
            created_unix_nanos: self.created_unix_nanos,
            process: self.process,
            exact_parts: &self.exact_parts,
        }
    }

    /// Length of [`SeriesRecord::encode`]'s output, without encoding. It does not depend on
    /// `family_id` or `slot_offset`.
    pub fn encoded_len(&self) -> usize {
        self.fields().encoded_len()
    }

    /// Encodes the record, padded to a multiple of 8 bytes.
    ///
    /// # Panics
    /// When both `process` and `exact_parts` are set, or there are more than
    /// [`MAX_EXACT_PARTS`] partials.
    pub fn encode(&self) -> Vec<u8> {
        self.fields().encode()
    }
}

impl EncodeRecord for SeriesRecord {
    fn encode_into(&self, out: &mut Vec<u8>) {
        self.fields().encode_into(out);
    }
}

impl SeriesFields<'_> {
    /// As [`SeriesRecord::encode`], from borrowed fields.
    ///
    /// # Panics
    /// As [`SeriesRecord::encode`].
    pub fn encode(&self) -> Vec<u8> {
        encode(self, self.encoded_len())
    }

    /// As [`SeriesRecord::encoded_len`].
    pub fn encoded_len(&self) -> usize {
        let process = match self.process {
            Some(_) => std::mem::size_of::<ProcessFixed>(),
            None => 0,
        };
        let exact = match self.exact_parts.len() {
            0 => 0,
            n => std::mem::size_of::<ExactFixed>() + 8 * n,
        };
        let created = match self.created_unix_nanos {
            Some(_) => 8,
            None => 0,
        };
        record_len(
            std::mem::size_of::<SeriesFixed>()
                + created
                + process
                + exact
                + self.label_values.iter().map(|v| str_len(v)).sum::<usize>(),
        )
    }
}

/// Panics as [`SeriesRecord::encode`].
impl EncodeRecord for SeriesFields<'_> {
    fn encode_into(&self, out: &mut Vec<u8>) {
        assert!(
            self.process.is_none() || self.exact_parts.is_empty(),
            "a series record has a process or exact parts, not both"
        );
        assert!(self.exact_parts.len() <= MAX_EXACT_PARTS);
        let at = start(out);
        let fixed = SeriesFixed {
            family_id: self.family_id,
            label_count: self.label_values.len() as u16,
            flags: match self.created_unix_nanos {
                Some(_) => SERIES_FLAG_CREATED,
                None => 0,
            },
            slot_offset: self.slot_offset,
        };
        out.extend_from_slice(bytemuck::bytes_of(&fixed));
        if let Some(created) = self.created_unix_nanos {
            out.extend_from_slice(&created.to_ne_bytes());
        }
        if let Some(p) = self.process {
            let process = ProcessFixed {
                pid: p.pid,
                reserved: 0,
                created_unix_nanos: p.created_unix_nanos,
            };
            out.extend_from_slice(bytemuck::bytes_of(&process));
        }
        if !self.exact_parts.is_empty() {
            let exact = ExactFixed {
                count: self.exact_parts.len() as u32,
                reserved: 0,
            };
            out.extend_from_slice(bytemuck::bytes_of(&exact));
            for p in self.exact_parts {
                out.extend_from_slice(&p.to_ne_bytes());
            }
        }
        for v in self.label_values {
            push_str(out, v);
        }
        let kind = match (self.process, self.exact_parts.is_empty()) {
            (Some(_), _) => RECORD_PROCESS_SERIES,
            (None, false) => RECORD_EXACT_SERIES,
            (None, true) => RECORD_SERIES,
        };
        finish(out, at, kind);
    }
}

impl FoldedRecord {
    /// Length of [`FoldedRecord::encode`]'s output: 24 bytes.
    pub const fn encoded_len(&self) -> usize {
        record_len(std::mem::size_of::<FoldedFixed>())
    }

    /// Encodes the record (24 bytes).
    pub fn encode(&self) -> Vec<u8> {
        encode(self, self.encoded_len())
    }
}

impl EncodeRecord for FoldedRecord {
    fn encode_into(&self, out: &mut Vec<u8>) {
        let at = start(out);
        let fixed = FoldedFixed {
            instance_id: self.instance_id,
            sequence: self.sequence,
            reserved: 0,
        };
        out.extend_from_slice(bytemuck::bytes_of(&fixed));
        finish(out, at, RECORD_FOLDED);
    }
}

impl PartRecord {
    /// Length of [`PartRecord::encode`]'s output: 24 bytes.
    pub const fn encoded_len(&self) -> usize {
        record_len(std::mem::size_of::<PartFixed>())
    }

    /// Encodes the record (24 bytes).
    pub fn encode(&self) -> Vec<u8> {
        encode(self, self.encoded_len())
    }
}

impl EncodeRecord for PartRecord {
    fn encode_into(&self, out: &mut Vec<u8>) {
        let at = start(out);
        let fixed = PartFixed {
            instance_id: self.instance_id,
            reserved: 0,
        };
        out.extend_from_slice(bytemuck::bytes_of(&fixed));
        finish(out, at, RECORD_PART);
    }
}

impl ExemplarsRecord {
    /// Length of [`ExemplarsRecord::encode`]'s output: 40 bytes.
    pub const fn encoded_len(&self) -> usize {
        record_len(std::mem::size_of::<ExemplarsFixed>())
    }

    /// Encodes the record (40 bytes).
    pub fn encode(&self) -> Vec<u8> {
        encode(self, self.encoded_len())
    }
}

impl EncodeRecord for ExemplarsRecord {
    fn encode_into(&self, out: &mut Vec<u8>) {
        let at = start(out);
        let fixed = ExemplarsFixed {
            series_slot_offset: self.series_slot_offset,
            block_offset: self.block_offset,
            count: self.count,
            series_sequence: self.series_sequence,
            slot_words: self.slot_words,
            reserved: 0,
        };
        out.extend_from_slice(bytemuck::bytes_of(&fixed));
        finish(out, at, RECORD_EXEMPLARS);
    }
}

/// A bounds-checked cursor over one record's payload.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    record_offset: usize,
}

impl<'a> Cursor<'a> {
    fn fail(&self, fault: impl Into<RecordFault>) -> LayoutError {
        LayoutError::BadRecord {
            offset: self.record_offset,
            fault: fault.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], LayoutError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| self.fail(RecordFault::FieldPastEnd(n)))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn pod<T: Pod>(&mut self) -> Result<T, LayoutError> {
        let bytes = self.take(std::mem::size_of::<T>())?;
        Ok(bytemuck::pod_read_unaligned(bytes))
    }

    fn string(&mut self, limit: usize, field: TextField) -> Result<String, LayoutError> {
        let len = self.pod::<u32>()? as usize;
        if len > limit {
            return Err(self.fail(RecordFault::FieldTooLong { field, len, limit }));
        }
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| self.fail(RecordFault::NotUtf8(field)))
    }

    /// The rest of the record must be zero padding shorter than 8 bytes.
    fn finish(&self) -> Result<(), LayoutError> {
        let rest = &self.bytes[self.pos..];
        if rest.len() >= 8 || rest.iter().any(|&b| b != 0) {
            return Err(self.fail(RecordFault::TrailingBytes));
        }
        Ok(())
    }
}

fn parse_family(c: &mut Cursor<'_>) -> Result<FamilyRecord, LayoutError> {
    let fixed: FamilyFixed = c.pod()?;
    let kind = MetricKind::from_code(fixed.kind)
        .ok_or_else(|| c.fail(RecordFault::UnknownMetricKind(fixed.kind)))?;
    let mode = match fixed.mode {
        NO_MODE => None,
        code => Some(
            GaugeMode::from_code(code)
                .ok_or_else(|| c.fail(RecordFault::UnknownGaugeMode(code)))?,
        ),
    };
    // Counts are bounded by the record's length: each bound takes 8 bytes, each label
    // name at least 4.
    let bucket_count = fixed.bucket_count as usize;
    let bounds = c
        .take(bucket_count * 8)?
        .chunks_exact(8)
        .map(|b| f64::from_ne_bytes(b.try_into().expect("chunks of 8")))
        .collect::<Vec<_>>();
    let name = c.string(crate::names::MAX_NAME_LEN, TextField::FamilyName)?;
    let help = c.string(MAX_HELP_LEN, TextField::Help)?;
    let label_names = (0..fixed.label_count)
        .map(|_| c.string(crate::names::MAX_NAME_LEN, TextField::LabelName))
        .collect::<Result<Vec<_>, _>>()?;
    // Bounded by the record's length too: each state takes at least 4 bytes.
    let states = (0..fixed.state_count)
        .map(|_| c.string(MAX_RECORD_LEN, TextField::State))
        .collect::<Result<Vec<_>, _>>()?;
    c.finish()?;
    let record = FamilyRecord {
        id: fixed.id,
        kind,
        mode,
        name,
        help,
        label_names,
        bounds,
        states,
    };
    check_family_format(&record).map_err(|e| c.fail(e))?;
    Ok(record)
}

/// What follows a series record's fixed part.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SeriesExtra {
    None,
    Process,
    Exact,
}

fn parse_series(c: &mut Cursor<'_>, extra: SeriesExtra) -> Result<SeriesRecord, LayoutError> {
    let fixed: SeriesFixed = c.pod()?;
    if fixed.flags & !SERIES_FLAG_CREATED != 0 {
        return Err(c.fail(RecordFault::UnknownSeriesFlags(fixed.flags)));
    }
    let created_unix_nanos = if fixed.flags & SERIES_FLAG_CREATED != 0 {
        let created: u64 = c.pod()?;
        Some(created)
    } else {
        None
    };
    let process = if extra == SeriesExtra::Process {
        let p: ProcessFixed = c.pod()?;
        if p.reserved != 0 {
            return Err(c.fail(RecordFault::ReservedNotZero(RecordPart::Process)));
        }
        Some(ProcessOf {
            pid: p.pid,
            created_unix_nanos: p.created_unix_nanos,
        })
    } else {
        None
    };
    let exact_parts = if extra == SeriesExtra::Exact {
        let e: ExactFixed = c.pod()?;
        let count = e.count as usize;
        if e.reserved != 0 || count == 0 || count > MAX_EXACT_PARTS {
            return Err(c.fail(RecordFault::ExactPartCount(count)));
        }
        let parts: Vec<f64> = c
            .take(count * 8)?
            .chunks_exact(8)
            .map(|b| f64::from_ne_bytes(b.try_into().expect("chunks of 8")))
            .collect();
        if parts.iter().any(|p| !p.is_finite()) {
            return Err(c.fail(RecordFault::ExactPartNotFinite));
        }
        parts
    } else {
        Vec::new()
    };
    if !fixed.slot_offset.is_multiple_of(8) {
        return Err(c.fail(RecordFault::UnalignedSlot(fixed.slot_offset)));
    }
    let label_values = (0..fixed.label_count)
        .map(|_| c.string(MAX_RECORD_LEN, TextField::LabelValue))
        .collect::<Result<Vec<_>, _>>()?;
    c.finish()?;
    Ok(SeriesRecord {
        family_id: fixed.family_id,
        slot_offset: fixed.slot_offset,
        label_values,
        created_unix_nanos,
        process,
        exact_parts,
    })
}

fn parse_folded(c: &mut Cursor<'_>) -> Result<FoldedRecord, LayoutError> {
    let fixed: FoldedFixed = c.pod()?;
    if fixed.reserved != 0 {
        return Err(c.fail(RecordFault::ReservedNotZero(RecordPart::Folded)));
    }
    c.finish()?;
    Ok(FoldedRecord {
        instance_id: fixed.instance_id,
        sequence: fixed.sequence,
    })
}

fn parse_part(c: &mut Cursor<'_>) -> Result<PartRecord, LayoutError> {
    let fixed: PartFixed = c.pod()?;
    if fixed.reserved != 0 {
        return Err(c.fail(RecordFault::ReservedNotZero(RecordPart::Part)));
    }
    c.finish()?;
    Ok(PartRecord {
        instance_id: fixed.instance_id,
    })
}

fn parse_exemplars(c: &mut Cursor<'_>) -> Result<ExemplarsRecord, LayoutError> {
    let fixed: ExemplarsFixed = c.pod()?;
    if fixed.reserved != 0 {
        return Err(c.fail(RecordFault::ReservedNotZero(RecordPart::Exemplars)));
    }
    let widths = [
        crate::exemplar::NARROW_EXEMPLAR_WORDS,
        crate::exemplar::EXEMPLAR_WORDS,
    ];
    if !widths.contains(&(fixed.slot_words as usize)) {
        return Err(c.fail(RecordFault::ExemplarSlotWidth(fixed.slot_words)));
    }
    for offset in [fixed.series_slot_offset, fixed.block_offset] {
        if !offset.is_multiple_of(8) {
            return Err(c.fail(RecordFault::UnalignedSlot(offset)));
        }
    }
    // A histogram's buckets and `+Inf`, at most.
    if fixed.count == 0 || fixed.count as usize > crate::limits::MAX_BUCKETS + 1 {
        return Err(c.fail(RecordFault::ExemplarCount(fixed.count)));
    }
    c.finish()?;
    Ok(ExemplarsRecord {
        series_sequence: fixed.series_sequence,
        series_slot_offset: fixed.series_slot_offset,
        block_offset: fixed.block_offset,
        count: fixed.count,
        slot_words: fixed.slot_words,
    })
}

/// Parses the records in `bytes`, a copy of published metadata starting at a record
/// boundary. `base_offset` is the metadata offset of `bytes[0]`, used in error messages and
/// in the returned end offsets.
///
/// Yields each record with the metadata offset just past it; stops at the end of `bytes` or
/// at the first error (after yielding it).
pub fn parse_records(bytes: &[u8], base_offset: usize) -> RecordIter<'_> {
    RecordIter {
        bytes,
        pos: 0,
        base_offset,
        failed: false,
    }
}

/// Iterator returned by [`parse_records`].
#[derive(Debug)]
pub struct RecordIter<'a> {
    bytes: &'a [u8],
    pos: usize,
    base_offset: usize,
    failed: bool,
}

impl Iterator for RecordIter<'_> {
    type Item = Result<(Record, usize), LayoutError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos == self.bytes.len() {
            return None;
        }
        let result = self.parse_one();
        self.failed = result.is_err();
        Some(result)
    }
}

impl RecordIter<'_> {
    fn parse_one(&mut self) -> Result<(Record, usize), LayoutError> {
        let offset = self.base_offset + self.pos;
        let rest = &self.bytes[self.pos..];
        if rest.len() < 8 {
            return Err(LayoutError::TruncatedRecord { offset });
        }
        let header: RecordHeader = bytemuck::pod_read_unaligned(&rest[..8]);
        let len = header.len as usize;
        if len < 8 || !len.is_multiple_of(8) || len > MAX_RECORD_LEN {
            return Err(LayoutError::BadRecordLength {
                offset,
                len: header.len,
            });
        }
        if len > rest.len() {
            return Err(LayoutError::TruncatedRecord { offset });
        }
        if header.reserved != 0 {
            return Err(LayoutError::BadRecord {
                offset,
                fault: RecordFault::ReservedNotZero(RecordPart::RecordHeader),
            });
        }
        let mut cursor = Cursor {
            bytes: &rest[8..len],
            pos: 0,
            record_offset: offset,
        };
        let record = match header.kind {
            RECORD_FAMILY => Record::Family(parse_family(&mut cursor)?),
            RECORD_SERIES => Record::Series(parse_series(&mut cursor, SeriesExtra::None)?),
            RECORD_PROCESS_SERIES => {
                Record::Series(parse_series(&mut cursor, SeriesExtra::Process)?)
            }
            RECORD_EXACT_SERIES => Record::Series(parse_series(&mut cursor, SeriesExtra::Exact)?),
            RECORD_FOLDED => Record::Folded(parse_folded(&mut cursor)?),
            RECORD_PART => Record::Part(parse_part(&mut cursor)?),
            RECORD_EXEMPLARS => Record::Exemplars(parse_exemplars(&mut cursor)?),
            kind => return Err(LayoutError::UnknownRecordKind { offset, kind }),
        };
        self.pos += len;
        Ok((record, self.base_offset + self.pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family() -> FamilyRecord {
        FamilyRecord {
            id: 3,
            kind: MetricKind::Histogram,
            mode: None,
            name: "vllm:e2e_request_latency_seconds".into(),
            help: "Histogram of e2e request latency in seconds.".into(),
            label_names: vec!["model_name".into(), "engine".into()],
            bounds: vec![0.3, 0.5, 0.8, 1.0],
            states: Vec::new(),
        }
    }

    fn series() -> SeriesRecord {
        SeriesRecord {
            family_id: 3,
            slot_offset: 4096,
            label_values: vec!["llama".into(), "0".into()],
            created_unix_nanos: Some(1_764_000_000_123_456_789),
            process: None,
            exact_parts: Vec::new(),
        }
    }

    #[test]
    fn exemplars_records_round_trip_and_refuse_what_no_writer_writes() {
        let record = ExemplarsRecord {
            series_sequence: 3,
            series_slot_offset: 8192 - 48,
            block_offset: 4096,
            count: 5,
            slot_words: 16,
        };
        let bytes = record.encode();
        assert_eq!(bytes.len(), record.encoded_len());
        let parsed: Vec<_> = parse_records(&bytes, 64).collect::<Result<_, _>>().unwrap();
        assert_eq!(parsed, [(Record::Exemplars(record), 64 + 40)]);
        let refused = |r: ExemplarsRecord| {
            let e = parse_records(&r.encode(), 0).next().unwrap().unwrap_err();
            e.to_string()
        };
        for (bad, why) in [
            (
                ExemplarsRecord { count: 0, ..record },
                "bad exemplar slot count 0",
            ),
            (
                ExemplarsRecord {
                    count: 258,
                    ..record
                },
                "bad exemplar slot count 258",
            ),
            (
                ExemplarsRecord {
                    block_offset: 4100,
                    ..record
                },
                "unaligned",
            ),
            (
                ExemplarsRecord {
                    series_slot_offset: 3,
                    ..record
                },
                "unaligned",
            ),
        ] {
            let e = refused(bad);
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let mut reserved = bytes.clone();
        reserved[8 + 28] = 1;
        let e = parse_records(&reserved, 0).next().unwrap().unwrap_err();
        assert!(e.to_string().contains("exemplars"), "{e}");
    }

    #[test]
    fn round_trip() {
        let mut bytes = family().encode();
        bytes.extend(series().encode());
        assert_eq!(bytes.len() % 8, 0);
        let parsed: Vec<_> = parse_records(&bytes, 0).collect::<Result<_, _>>().unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].0, Record::Family(family()));
        assert_eq!(parsed[1], (Record::Series(series()), bytes.len()));
    }

    #[test]
    fn encoded_len_is_the_encoding_length() {
        let mut families = vec![family()];
        for n in 0..9 {
            let mut f = family();
            f.name = "n".repeat(n + 1);
            f.help = "h".repeat(n * 3);
            f.label_names = (0..n).map(|i| "l".repeat(i + 1)).collect();
            f.bounds = (0..n).map(|i| i as f64).collect();
            families.push(f);
        }
        for f in &families {
            assert_eq!(f.encoded_len(), f.encode().len(), "{f:?}");
        }
        for n in 0..9 {
            for process in [
                None,
                Some(ProcessOf {
                    pid: 1,
                    created_unix_nanos: 2,
                }),
            ] {
                let s = SeriesRecord {
                    label_values: (0..n).map(|i| "v".repeat(i * 2)).collect(),
                    process,
                    ..series()
                };
                assert_eq!(s.encoded_len(), s.encode().len(), "{s:?}");
            }
            let s = SeriesRecord {
                label_values: (0..n).map(|i| "v".repeat(i * 2)).collect(),
                exact_parts: (0..=n).map(|i| 0.1 * i as f64 + 1.0).collect(),
                ..series()
            };
            assert_eq!(s.encoded_len(), s.encode().len(), "{s:?}");
        }
    }

    #[test]
    fn records_encode_into_one_buffer_as_alone() {
        let records = [
            Record::Family(family()),
            Record::Series(series()),
            Record::Folded(FoldedRecord {
                instance_id: 1,
                sequence: 2,
            }),
            Record::Part(PartRecord { instance_id: 3 }),
        ];
        let mut out = Vec::new();
        for r in &records {
            let at = out.len();
            r.encode_into(&mut out);
            assert_eq!(out[at..], r.encode(), "{r:?}");
            assert_eq!(out.len() - at, r.encoded_len(), "{r:?}");
        }
    }

    #[test]
    fn archive_records_round_trip() {
        let process = SeriesRecord {
            process: Some(ProcessOf {
                pid: 4242,
                created_unix_nanos: 1_700_000_000_000_000_000,
            }),
            ..series()
        };
        let folded = FoldedRecord {
            instance_id: 0x0123_4567_89ab_cdef,
            sequence: 2,
        };
        let exact = SeriesRecord {
            exact_parts: vec![-5.551115123125783e-17, 0.6],
            ..series()
        };
        let part = PartRecord {
            instance_id: 0xfeed_f00d,
        };
        let mut bytes = process.encode();
        let first = bytes.len();
        bytes.extend(folded.encode());
        let second = bytes.len();
        bytes.extend(exact.encode());
        let third = bytes.len();
        bytes.extend(part.encode());
        let parsed: Vec<_> = parse_records(&bytes, 0).collect::<Result<_, _>>().unwrap();
        assert_eq!(parsed[0], (Record::Series(process), first));
        assert_eq!(parsed[1], (Record::Folded(folded), second));
        assert_eq!(parsed[2], (Record::Series(exact), third));
        assert_eq!(parsed[3], (Record::Part(part), bytes.len()));

        // Non-finite partials are rejected.
        let mut bad = SeriesRecord {
            exact_parts: vec![1.0],
            ..series()
        }
        .encode();
        // After the header (8), the fixed part (16), the creation time (8) and the count (8).
        bad[40..48].copy_from_slice(&f64::NAN.to_ne_bytes());
        let err = parse_records(&bad, 0).next().unwrap().unwrap_err();
        assert!(err.to_string().contains("not finite"), "{err}");
    }

    #[test]
    fn rejects_bad_records() {
        let good = family().encode();
        /// Whether an error is the one a case expects.
        type Expected = fn(&LayoutError) -> bool;
        let cases: Vec<(Vec<u8>, Expected)> = vec![
            (good[..good.len() - 8].to_vec(), |e| {
                matches!(e, LayoutError::TruncatedRecord { .. })
            }),
            (
                {
                    let mut b = good.clone();
                    b[0] = 3;
                    b
                },
                |e| matches!(e, LayoutError::BadRecordLength { .. }),
            ),
            (
                {
                    let mut b = good.clone();
                    b[4] = 9;
                    b
                },
                |e| matches!(e, LayoutError::UnknownRecordKind { .. }),
            ),
            (
                {
                    let mut b = good.clone();
                    b[12] = 77;
                    b
                },
                |e| {
                    matches!(
                        e,
                        LayoutError::BadRecord {
                            offset: 0,
                            fault: RecordFault::UnknownMetricKind(77)
                        }
                    )
                },
            ), // type code
            (
                {
                    let mut b = good.clone();
                    b[13] = 1;
                    b
                },
                |e| {
                    matches!(
                        e,
                        LayoutError::BadRecord {
                            fault: RecordFault::Definition(_),
                            ..
                        }
                    )
                },
            ), // mode on a histogram
            (
                {
                    let mut b = good.clone();
                    b[16] = 4;
                    b[17] = 1;
                    b
                },
                |e| {
                    matches!(
                        e,
                        LayoutError::BadRecord {
                            fault: RecordFault::FieldPastEnd(_),
                            ..
                        }
                    )
                },
            ), // bucket count
        ];
        for (i, (bytes, expected)) in cases.into_iter().enumerate() {
            let errs: Vec<_> = parse_records(&bytes, 0).filter_map(Result::err).collect();
            assert_eq!(errs.len(), 1, "case {i}: {errs:?}");
            assert!(expected(&errs[0]), "case {i}: {}", errs[0]);
        }
    }

    #[test]
    fn rejects_invalid_names_and_utf8() {
        let mut f = family();
        f.name = String::new();
        let err = parse_records(&f.encode(), 0).next().unwrap().unwrap_err();
        assert!(err.to_string().contains("invalid metric name"), "{err}");
        // Any UTF-8 name is valid (exposed escaped); `__` label names stay reserved.
        f.name = "my.dotted name".into();
        assert!(parse_records(&f.encode(), 0).next().unwrap().is_ok());
        f.label_names = vec!["__x".into()];
        let err = parse_records(&f.encode(), 0).next().unwrap().unwrap_err();
        assert!(err.to_string().contains("invalid label name"), "{err}");

        let mut bytes = series().encode();
        // The first label value starts after header (8), fixed part (16), creation time (8)
        // and its length (4).
        bytes[36] = 0xFF;
        let err = parse_records(&bytes, 0).next().unwrap().unwrap_err();
        assert!(err.to_string().contains("not UTF-8"), "{err}");

        // Flags: bit 0 says a creation time follows; any other bit is refused.
        let mut bytes = series().encode();
        bytes[14] |= 0x2;
        let err = parse_records(&bytes, 0).next().unwrap().unwrap_err();
        assert!(
            err.to_string().contains("unknown series flags 0x3"),
            "{err}"
        );
    }

    #[test]
    fn series_records_of_version_1_have_no_creation_time() {
        let old = SeriesRecord {
            created_unix_nanos: None,
            ..series()
        };
        let bytes = old.encode();
        // Version 1's layout: header, fixed part with zero flags, the label values.
        assert_eq!(bytes[14..16], [0, 0]);
        assert_eq!(bytes.len(), series().encode().len() - 8);
        let parsed = parse_records(&bytes, 0).next().unwrap().unwrap();
        assert_eq!(parsed.0, Record::Series(old));
    }

    proptest::proptest! {
        /// What the fuzz target `layout_records` checks, on every test run: arbitrary bytes
        /// never panic the parser, and accepted records re-encode to their exact bytes.
        #[test]
        fn arbitrary_bytes_parse_safely(
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            prefix in proptest::bool::ANY,
        ) {
            let mut bytes = if prefix { family().encode() } else { Vec::new() };
            bytes.extend(data);
            let mut start = 0;
            for parsed in parse_records(&bytes, 0) {
                let Ok((record, end)) = parsed else { break };
                let encoded = record.encode();
                proptest::prop_assert_eq!(&encoded[..], &bytes[start..end]);
                start = end;
            }
        }
    }

    #[test]
    fn checks_family_definitions() {
        let check = |kind, mode, name: &str, labels: &[&str], bounds: &[f64], states: &[&str]| {
            check_family(&FamilyRecord {
                id: 0,
                kind,
                mode,
                name: name.into(),
                help: String::new(),
                label_names: labels.iter().map(|s| s.to_string()).collect(),
                bounds: bounds.to_vec(),
                states: states.iter().map(|s| s.to_string()).collect(),
            })
        };
        use GaugeMode::{LiveMostRecent, LiveSum, MostRecent};
        use MetricKind::{Counter, Gauge, Histogram, Info, StateSet, Summary};
        let good = [
            check(Counter, None, "a", &["x"], &[], &[]),
            check(Info, Some(LiveMostRecent), "build", &["x"], &[], &[]),
            check(
                StateSet,
                Some(MostRecent),
                "phase",
                &["x"],
                &[],
                &["a", "b"],
            ),
        ];
        for result in good {
            assert_eq!(result, Ok(()));
        }
        let bad = [
            check(Histogram, None, "h", &["le"], &[1.0], &[]),
            check(Summary, None, "s", &["quantile"], &[], &[]),
            check(Counter, None, "c", &["x", "x"], &[], &[]),
            check(Gauge, None, "g", &[], &[], &[]),
            check(Histogram, None, "h", &[], &[2.0, 1.0], &[]),
            check(Histogram, None, "h", &[], &[f64::NAN], &[]),
            check(Counter, None, "c", &[], &[1.0], &[]),
            check(Counter, None, "c", &["a.b", "a_b"], &[], &[]),
            check(Histogram, None, "h", &["le"], &[], &[]),
            // Infos and statesets: the newest value wins, nothing else.
            check(Info, None, "i", &[], &[], &[]),
            check(Info, Some(LiveSum), "i", &[], &[], &[]),
            check(StateSet, Some(LiveSum), "e", &[], &[], &["a"]),
            // A stateset's states: some, distinct, under a name that can be a label.
            check(StateSet, Some(MostRecent), "e", &[], &[], &[]),
            check(StateSet, Some(MostRecent), "e", &[], &[], &["a", "a"]),
            check(StateSet, Some(MostRecent), "e", &["e"], &[], &["a"]),
            check(StateSet, Some(MostRecent), "__e", &[], &[], &["a"]),
            check(Gauge, Some(MostRecent), "g", &[], &[], &["a"]),
        ];
        for result in bad {
            assert!(result.is_err());
        }
    }

    #[test]
    fn info_labels_are_checked() {
        let names = vec!["a".to_owned()];
        assert_eq!(check_info_labels(&names, &["x", "version", "1.0"]), Ok(()));
        assert_eq!(check_info_labels(&names, &["x"]), Ok(()));
        for bad in [
            &["x", "version"][..],
            &[],
            &["x", "a", "again"],
            &["x", "__r", "v"],
            &["x", "k", "1", "k", "2"],
        ] {
            assert!(check_info_labels(&names, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stateset_families_round_trip() {
        let f = FamilyRecord {
            kind: MetricKind::StateSet,
            mode: Some(GaugeMode::LiveMostRecent),
            name: "phase".into(),
            bounds: Vec::new(),
            states: vec!["starting".into(), "running".into(), "".into()],
            ..family()
        };
        let bytes = f.encode();
        assert_eq!(bytes.len(), f.encoded_len());
        let parsed = parse_records(&bytes, 0).next().unwrap().unwrap();
        assert_eq!(parsed.0, Record::Family(f));
    }
}
