//! One segment, taken apart for a human: header fields, liveness, every metadata record
//! with its series' current values, and what failed validation.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! let dump = shmetrics_reader::inspect::inspect("/tmp/metrics/shmetrics-1-ab-0.shm".as_ref())?;
//! print!("{dump}");
//! std::process::exit(if dump.is_valid() { 0 } else { 1 });
//! # }
//! ```
//!
//! The analysis goes through the same code as a scrape: the segment is opened, checked and
//! mapped by the reader's segment code ([`SegmentHeader::parse`] on the header, then the
//! metadata parsed by [`parse_records`] and checked record by record against the family
//! declarations and the file bounds), and values are read with the layout's slot
//! operations. Nothing in the file is trusted: a value is only read from slots that a
//! validated series record places inside the file.

use std::fmt::{self, Write as _};
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use shmetrics_layout::exemplar::{ExemplarRead, exemplar_read};
use shmetrics_layout::record::{
    ExemplarsRecord, FamilyRecord, FoldedRecord, PartRecord, Record, SeriesRecord, parse_records,
};
use shmetrics_layout::slots::{
    GaugeValue, HistogramValue, counter_read_words, gauge_read, histogram_read,
};
use shmetrics_layout::{
    DROPPED_SERIES_WORD, HEADER_SIZE, LayoutError, MAGIC, META_LEN_WORD, MetricKind,
    SLOT_FLOOR_WORD, SegmentHeader, suffix, view,
};

use crate::segment::{Rejection, SegmentFile, open_segment};

/// The header of a segment that passed validation, with the three fields that change after
/// publication (`meta_len`, `slot_floor`, `dropped_series`) read again at inspection time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderInfo {
    /// The header as validated when the file was opened.
    pub header: SegmentHeader,
    /// Published metadata bytes, read atomically at inspection time.
    pub meta_len: u64,
    /// Lowest allocated slot offset, read atomically at inspection time.
    pub slot_floor: u64,
    /// Series the writer could not place, read atomically at inspection time.
    pub dropped_series: u64,
}

/// The current value in a series' slots.
#[derive(Clone, Debug, PartialEq)]
pub enum SlotValue {
    /// A counter's value.
    Counter(f64),
    /// A gauge's value and last write time.
    Gauge(GaugeValue),
    /// A histogram's per-bucket counts (not cumulative, the last is `+Inf`) and sum.
    Histogram(HistogramValue),
    /// A summary's count and sum.
    Summary {
        /// Observations.
        count: u64,
        /// Sum of observations.
        sum: f64,
        /// Whether count and sum describe the same observations (see [`HistogramValue`]).
        consistent: bool,
    },
}

/// One validated metadata record.
#[derive(Clone, Debug, PartialEq)]
pub enum RecordEntry {
    /// A family declaration.
    Family(FamilyRecord),
    /// A series declaration, with its family and the value in its slots.
    Series {
        /// The record as stored.
        record: SeriesRecord,
        /// The family it belongs to (declared earlier in the same segment).
        family: Arc<FamilyRecord>,
        /// The value read from its slots.
        value: SlotValue,
    },
    /// In an archive: a segment whose values it holds.
    Folded(FoldedRecord),
    /// In an archive: a sealed part whose values it holds too.
    Part(PartRecord),
    /// The exemplar slots of a series, and what each holds now.
    Exemplars {
        /// The record as stored.
        record: ExemplarsRecord,
        /// Each slot read (a histogram's in bucket order).
        slots: Vec<ExemplarRead>,
    },
}

/// A validated record and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordInfo {
    /// Offset of the record within the metadata area (bytes after the header).
    pub offset: usize,
    /// The record.
    pub entry: RecordEntry,
}

/// Everything [`inspect`] found in one segment file.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentDump {
    /// The file inspected.
    pub path: PathBuf,
    /// Its size in bytes.
    pub file_size: u64,
    /// Its first bytes (at most 16), shown when the header is invalid.
    pub leading_bytes: Vec<u8>,
    /// The validated header, or why it was rejected (then nothing else was read).
    pub header: Result<HeaderInfo, LayoutError>,
    /// Whether a writer holds the segment's lock; `None` when the lock could not be probed.
    pub live: Option<bool>,
    /// Records that passed validation, in file order.
    pub records: Vec<RecordInfo>,
    /// The validation failure that stopped the metadata walk, if any: records after it are
    /// ignored by readers.
    pub record_error: Option<LayoutError>,
}

impl SegmentDump {
    /// Whether the header and every published record passed validation.
    pub fn is_valid(&self) -> bool {
        self.header.is_ok() && self.record_error.is_none()
    }

    /// The first validation error: the header's, else the records'.
    pub fn error(&self) -> Option<&LayoutError> {
        self.header.as_ref().err().or(self.record_error.as_ref())
    }
}

/// Opens, validates and reads one segment file. A file that fails validation is not an
/// error of this function: the failure is described in the returned [`SegmentDump`].
///
/// `path` may be a symbolic link (it is resolved first, as the user named it explicitly);
/// the file must be a regular file. It is opened read-only and never blocks on a FIFO.
///
/// # Errors
/// When the file cannot be opened, is not a regular file, or cannot be read or mapped.
pub fn inspect(path: &Path) -> io::Result<SegmentDump> {
    let resolved = std::fs::canonicalize(path)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&resolved)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    let file_size = meta.len();
    let mut leading_bytes = vec![0u8; file_size.min(16) as usize];
    file.read_exact_at(&mut leading_bytes, 0)?;
    let mut dump = SegmentDump {
        path: path.to_owned(),
        file_size,
        leading_bytes,
        header: Err(LayoutError::TruncatedHeader { len: file_size }),
        live: None,
        records: Vec::new(),
        record_error: None,
    };
    // The owner check protects scrapes of a shared directory; a file named explicitly is
    // inspected whoever owns it.
    let mut seg = match open_segment(&resolved, meta.uid()) {
        Ok(seg) => seg,
        Err(Rejection::Bad(e)) => {
            dump.header = Err(e);
            dump.live = probe(&file);
            return Ok(dump);
        }
        Err(Rejection::Skip(reason, detail)) => {
            return Err(io::Error::other(format!(
                "{}: {detail} ({})",
                path.display(),
                reason.as_str()
            )));
        }
    };
    seg.refresh_metadata();
    dump.live = Some(seg.live);
    let words = seg.words();
    // SYNC POINT meta-len: acquire, as in a scrape (only displayed here).
    let meta_len = words[META_LEN_WORD].load(Ordering::Acquire);
    dump.header = Ok(HeaderInfo {
        header: seg.header,
        meta_len,
        // SYNC POINT slot-floor: relaxed; displayed only.
        slot_floor: words[SLOT_FLOOR_WORD].load(Ordering::Relaxed),
        // SYNC POINT dropped-series: relaxed; a statistic.
        dropped_series: words[DROPPED_SERIES_WORD].load(Ordering::Relaxed),
    });
    dump.records = accepted_records(&seg);
    dump.record_error = seg.corrupt.clone();
    Ok(dump)
}

/// Whether someone holds the lock of `file` (`None` when the probe itself fails).
fn probe(file: &std::fs::File) -> Option<bool> {
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            Some(false)
        }
        Err(std::fs::TryLockError::WouldBlock) => Some(true),
        Err(std::fs::TryLockError::Error(_)) => None,
    }
}

/// The records `seg` accepted (everything before its parsed length), with their offsets
/// and the values of their series.
fn accepted_records(seg: &SegmentFile) -> Vec<RecordInfo> {
    let mut bytes = Vec::with_capacity(seg.parsed_len());
    // The accepted prefix was validated against the file size when it was parsed, and
    // published records never change.
    view::load_bytes(seg.words(), HEADER_SIZE, seg.parsed_len(), &mut bytes);
    let mut out = Vec::new();
    let mut offset = 0;
    let mut series_index = 0;
    for parsed in parse_records(&bytes, 0) {
        // Already accepted once, so a failure here cannot happen; stop rather than trust.
        let Ok((record, end)) = parsed else { break };
        let entry = match record {
            Record::Family(f) => RecordEntry::Family(f),
            Record::Folded(f) => RecordEntry::Folded(f),
            Record::Part(p) => RecordEntry::Part(p),
            Record::Exemplars(record) => {
                // Accepted, so the slots lie within the file.
                let words = u32::try_from(record.block_offset / 8)
                    .ok()
                    .and_then(|word| seg.exemplar_block(word, record.count, record.slot_words));
                let slots = match words {
                    Some(block) => block.slots.chunks(block.width).map(exemplar_read).collect(),
                    None => Vec::new(),
                };
                RecordEntry::Exemplars { record, slots }
            }
            Record::Series(record) => {
                let Some(local) = seg.series.get(series_index) else {
                    break;
                };
                let family = Arc::clone(&seg.families[local.family as usize]);
                let value = read_value(&family, seg.slots(series_index));
                series_index += 1;
                RecordEntry::Series {
                    record,
                    family,
                    value,
                }
            }
        };
        out.push(RecordInfo { offset, entry });
        offset = end;
    }
    out
}

fn read_value(family: &FamilyRecord, words: &[shmetrics_layout::sync::AtomicU64]) -> SlotValue {
    match family.kind {
        MetricKind::Counter => {
            // As the merge reads it: the integer and fractional words summed exactly.
            let (int, fraction) = counter_read_words(words);
            let mut sum = crate::exact::ExactSum::default();
            sum.add_int(int);
            sum.add(fraction);
            SlotValue::Counter(sum.value())
        }
        // An info's and a stateset's slots are a gauge's (a state index as the value).
        MetricKind::Gauge | MetricKind::Info | MetricKind::StateSet => {
            SlotValue::Gauge(gauge_read(words))
        }
        MetricKind::Histogram | MetricKind::Summary => {
            let mut h = HistogramValue::default();
            histogram_read(words, family.bounds.len(), &mut h);
            if family.kind == MetricKind::Summary {
                SlotValue::Summary {
                    count: h.count(),
                    sum: h.sum,
                    consistent: h.consistent,
                }
            } else {
                SlotValue::Histogram(h)
            }
        }
    }
}

/// `2023-11-14T22:13:20.123456789Z` for nanoseconds since the Unix epoch.
pub fn format_unix_nanos(nanos: u64) -> String {
    let secs = nanos / 1_000_000_000;
    let frac = nanos % 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{frac:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn labels_text(names: &[String], values: &[String]) -> String {
    let mut out = String::from("{");
    // An info series' own labels follow the family's, as name and value pairs.
    let extra = values
        .get(names.len()..)
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|p| (&p[0], &p[1]));
    for (i, (n, v)) in names.iter().zip(values).chain(extra).enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{n}=\"");
        crate::render::escape_label_value(v, &mut out);
        out.push('"');
    }
    out.push('}');
    out
}

fn exposed_name(f: &FamilyRecord) -> String {
    match f.kind {
        MetricKind::Counter => format!("{}{}", f.name, suffix::TOTAL),
        MetricKind::Info => format!("{}{}", f.name, suffix::INFO),
        _ => f.name.clone(),
    }
}

impl fmt::Display for SlotValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Counter(v) => write!(f, "value {v}"),
            Self::Gauge(g) if g.timestamp == 0 => write!(f, "value {}", g.value),
            Self::Gauge(g) => write!(
                f,
                "value {}, last set {} ns ({})",
                g.value,
                g.timestamp,
                format_unix_nanos(g.timestamp)
            ),
            Self::Histogram(h) => {
                write!(f, "count {}, sum {}", h.count(), h.sum)?;
                if !h.consistent {
                    f.write_str(" (torn read: writers kept it busy)")?;
                }
                Ok(())
            }
            Self::Summary {
                count,
                sum,
                consistent,
            } => {
                write!(f, "count {count}, sum {sum}")?;
                if !consistent {
                    f.write_str(" (torn read: writers kept it busy)")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for SegmentDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "segment: {} ({} bytes)",
            self.path.display(),
            self.file_size
        )?;
        match &self.header {
            Ok(info) => write_header(f, info)?,
            Err(e) => {
                writeln!(
                    f,
                    "header: INVALID ({}): {e}",
                    crate::ProblemReason::from(e)
                )?;
                write!(f, "  first bytes:")?;
                if self.leading_bytes.is_empty() {
                    write!(f, " (none)")?;
                }
                for b in &self.leading_bytes {
                    write!(f, " {b:02x}")?;
                }
                writeln!(f)?;
            }
        }
        match self.live {
            Some(true) => writeln!(f, "liveness: live (a writer holds the segment's lock)")?,
            Some(false) => writeln!(f, "liveness: dead (nobody holds the segment's lock)")?,
            None => writeln!(f, "liveness: unknown (the lock could not be probed)")?,
        }
        if self.header.is_ok() {
            let families = self
                .records
                .iter()
                .filter(|r| matches!(r.entry, RecordEntry::Family(_)))
                .count();
            writeln!(
                f,
                "records: {} valid ({families} families, {} series)",
                self.records.len(),
                self.records.len() - families
            )?;
            for r in &self.records {
                write_record(f, r)?;
            }
        }
        match self.error() {
            None => writeln!(f, "validation: ok"),
            Some(e @ LayoutError::BadAreaBounds { .. }) if self.header.is_ok() => writeln!(
                f,
                "validation: FAILED ({}): published metadata no longer fits: {e}",
                crate::ProblemReason::from(e)
            ),
            Some(e) if self.header.is_ok() => writeln!(
                f,
                "validation: FAILED ({}): {e}; readers ignore the metadata from there on",
                crate::ProblemReason::from(e)
            ),
            Some(e) => writeln!(
                f,
                "validation: FAILED ({}): {e}; readers skip this segment",
                crate::ProblemReason::from(e)
            ),
        }
    }
}

fn write_header(f: &mut fmt::Formatter<'_>, info: &HeaderInfo) -> fmt::Result {
    let h = &info.header;
    writeln!(f, "header: valid")?;
    let magic_ok = if h.magic == MAGIC { "ok" } else { "BAD" };
    writeln!(
        f,
        "  magic:          {magic_ok} ({})",
        String::from_utf8_lossy(&h.magic)
    )?;
    writeln!(f, "  endianness:     native (mark {:#010x})", h.endian)?;
    writeln!(f, "  version:        {}", h.version)?;
    writeln!(f, "  header size:    {}", h.header_size)?;
    writeln!(f, "  file size:      {}", h.file_size)?;
    writeln!(f, "  pid:            {}", h.pid)?;
    writeln!(f, "  sequence:       {}", h.sequence)?;
    writeln!(f, "  instance id:    {:#018x}", h.instance_id)?;
    writeln!(
        f,
        "  start time:     {} clock ticks since boot",
        h.start_time_ticks
    )?;
    writeln!(
        f,
        "  created:        {} ns since the epoch ({})",
        h.created_unix_nanos,
        format_unix_nanos(h.created_unix_nanos)
    )?;
    writeln!(f, "  meta_len:       {}", info.meta_len)?;
    writeln!(f, "  slot_floor:     {}", info.slot_floor)?;
    writeln!(f, "  dropped_series: {}", info.dropped_series)
}

fn write_record(f: &mut fmt::Formatter<'_>, r: &RecordInfo) -> fmt::Result {
    match &r.entry {
        RecordEntry::Family(fam) => {
            write!(
                f,
                "  @{:<7} family #{} {} {}",
                r.offset, fam.id, fam.name, fam.kind
            )?;
            if let Some(mode) = fam.mode {
                write!(f, " mode={mode}")?;
            }
            if matches!(fam.kind, MetricKind::Counter | MetricKind::Info) {
                write!(f, " (exposed as {})", exposed_name(fam))?;
            }
            writeln!(f)?;
            writeln!(f, "             help: {:?}", fam.help)?;
            writeln!(f, "             labels: [{}]", fam.label_names.join(", "))?;
            if fam.kind == MetricKind::Histogram {
                let bounds: Vec<String> = fam.bounds.iter().map(f64::to_string).collect();
                writeln!(
                    f,
                    "             bounds: [{}] (+Inf implied)",
                    bounds.join(", ")
                )?;
            }
            if fam.kind == MetricKind::StateSet {
                writeln!(f, "             states: {:?}", fam.states)?;
            }
            Ok(())
        }
        RecordEntry::Series {
            record,
            family,
            value,
        } => {
            writeln!(
                f,
                "  @{:<7} series of #{} {}{} slots at {}: {value}",
                r.offset,
                record.family_id,
                family.name,
                labels_text(&family.label_names, &record.label_values),
                record.slot_offset
            )?;
            if let Some(p) = record.process {
                writeln!(
                    f,
                    "             from pid {} (created {})",
                    p.pid,
                    format_unix_nanos(p.created_unix_nanos)
                )?;
            }
            if let SlotValue::Histogram(h) = value {
                write!(f, "             buckets:")?;
                for (i, n) in h.buckets.iter().enumerate() {
                    match family.bounds.get(i) {
                        Some(b) => write!(f, " le={b}:{n}")?,
                        None => write!(f, " le=+Inf:{n}")?,
                    }
                }
                writeln!(f, " (per bucket, not cumulative)")?;
            }
            Ok(())
        }
        RecordEntry::Folded(folded) => writeln!(
            f,
            "  @{:<7} folded segment: instance {:016x} sequence {}",
            r.offset, folded.instance_id, folded.sequence
        ),
        RecordEntry::Part(part) => writeln!(
            f,
            "  @{:<7} archive part: instance {:016x}",
            r.offset, part.instance_id
        ),
        RecordEntry::Exemplars { record, slots } => {
            write!(
                f,
                "  @{:<7} exemplars of the series at slot offset {} of segment {} ({} slots of {} words at {}):",
                r.offset,
                record.series_slot_offset,
                record.series_sequence,
                record.count,
                record.slot_words,
                record.block_offset
            )?;
            for (i, slot) in slots.iter().enumerate() {
                match slot {
                    ExemplarRead::Empty => continue,
                    ExemplarRead::Exemplar(e) => {
                        write!(f, " [{i}] {{")?;
                        for (j, (name, value)) in e.labels.iter().enumerate() {
                            let comma = if j > 0 { "," } else { "" };
                            write!(f, "{comma}{name}={value:?}")?;
                        }
                        write!(f, "}} {} at {}", e.value, format_unix_nanos(e.unix_nanos))?;
                    }
                    ExemplarRead::Torn => write!(f, " [{i}] being written")?,
                    ExemplarRead::Invalid => write!(f, " [{i}] invalid")?,
                }
            }
            writeln!(f)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shmetrics_writer::{GaugeMode, Registry};

    fn only_segment(dir: &Path) -> PathBuf {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(paths.len(), 1, "{paths:?}");
        paths.pop().unwrap()
    }

    fn values(dump: &SegmentDump) -> Vec<(String, Vec<String>, SlotValue)> {
        dump.records
            .iter()
            .filter_map(|r| match &r.entry {
                RecordEntry::Series {
                    record,
                    family,
                    value,
                } => Some((
                    family.name.clone(),
                    record.label_values.clone(),
                    value.clone(),
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn reads_every_type_and_liveness() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        let c = reg.counter("c_total", "C.", &["k"]).unwrap();
        c.labels(&["a"]).unwrap().inc_by(3.5);
        let g = reg.gauge("g", "G.", &[], GaugeMode::MostRecent).unwrap();
        g.unlabelled().unwrap().set(-2.0);
        let h = reg.histogram("h", "H.", &[], &[1.0, 2.0]).unwrap();
        h.unlabelled().unwrap().observe(0.5);
        h.unlabelled().unwrap().observe(9.0);
        let s = reg.summary("s", "S.", &[]).unwrap();
        s.unlabelled().unwrap().observe(3.0);
        let path = only_segment(dir.path());

        let dump = inspect(&path).unwrap();
        assert!(dump.is_valid(), "{dump}");
        assert_eq!(dump.live, Some(true));
        let header = dump.header.as_ref().unwrap();
        assert_eq!(header.header.pid, std::process::id());
        assert_eq!(header.dropped_series, 0);
        let offsets: Vec<usize> = dump.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets.len(), 8);
        assert_eq!(offsets[0], 0);
        assert!(offsets.windows(2).all(|w| w[0] < w[1]));
        assert!(*offsets.last().unwrap() < header.meta_len as usize);
        let vals = values(&dump);
        assert_eq!(
            vals[0],
            ("c".into(), vec!["a".into()], SlotValue::Counter(3.5))
        );
        match &vals[1].2 {
            SlotValue::Gauge(v) => {
                assert_eq!(v.value, -2.0);
                assert!(v.timestamp > 0);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            vals[2].2,
            SlotValue::Histogram(HistogramValue {
                buckets: vec![1, 0, 1],
                sum: 9.5,
                consistent: true
            })
        );
        assert_eq!(
            vals[3].2,
            SlotValue::Summary {
                count: 1,
                sum: 3.0,
                consistent: true
            }
        );
        let text = dump.to_string();
        assert!(
            text.contains("family #0 c counter (exposed as c_total)"),
            "{text}"
        );
        assert!(text.contains("c{k=\"a\"} slots at "), "{text}");
        assert!(text.contains("le=1:1 le=2:0 le=+Inf:1"), "{text}");
        assert!(text.contains("liveness: live"), "{text}");
        assert!(text.ends_with("validation: ok\n"), "{text}");

        drop((c, g, h, s, reg));
        let dump = inspect(&path).unwrap();
        assert_eq!(dump.live, Some(false));
        assert_eq!(values(&dump)[0].2, SlotValue::Counter(3.5));
    }

    #[test]
    fn stops_at_the_first_bad_record() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        reg.counter("a", "A.", &[])
            .unwrap()
            .unlabelled()
            .unwrap()
            .inc();
        reg.counter("b", "B.", &[])
            .unwrap()
            .unlabelled()
            .unwrap()
            .inc();
        drop(reg);
        let path = only_segment(dir.path());
        let good = inspect(&path).unwrap();
        assert_eq!(good.records.len(), 4);
        let third = good.records[2].offset;
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        // Record header: u32 length, then u16 kind.
        file.write_all_at(&9u16.to_ne_bytes(), (HEADER_SIZE + third + 4) as u64)
            .unwrap();
        let dump = inspect(&path).unwrap();
        assert!(!dump.is_valid());
        assert!(dump.header.is_ok());
        assert_eq!(dump.records, good.records[..2]);
        assert_eq!(
            dump.record_error,
            Some(LayoutError::UnknownRecordKind {
                offset: third,
                kind: 9
            })
        );
        let text = dump.to_string();
        assert!(
            text.contains(&format!(
                "validation: FAILED (unknown_record_kind): record at metadata offset {third} has unknown kind 9"
            )),
            "{text}"
        );
    }

    #[test]
    fn reports_a_bad_header() {
        let dir = tempfile::tempdir().unwrap();
        drop(Registry::open(dir.path()).unwrap());
        let path = only_segment(dir.path());
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&3u32.to_ne_bytes(), 12).unwrap(); // version
        let dump = inspect(&path).unwrap();
        assert_eq!(dump.header, Err(LayoutError::UnsupportedVersion(3)));
        assert_eq!(dump.error(), Some(&LayoutError::UnsupportedVersion(3)));
        assert!(dump.records.is_empty());
        assert_eq!(dump.live, Some(false));
        assert_eq!(&dump.leading_bytes[..8], b"SHMETRIC");
        let text = dump.to_string();
        assert!(
            text.contains("header: INVALID (unsupported_version)"),
            "{text}"
        );
        assert!(text.contains("readers skip this segment"), "{text}");

        let short = dir.path().join("short.shm");
        std::fs::write(&short, b"SHM").unwrap();
        let dump = inspect(&short).unwrap();
        assert_eq!(dump.header, Err(LayoutError::TruncatedHeader { len: 3 }));
        assert_eq!(dump.leading_bytes, b"SHM");
    }

    #[test]
    fn refuses_what_is_not_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = inspect(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let fifo = dir.path().join("fifo.shm");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = inspect(&fifo).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let err = inspect(&dir.path().join("missing.shm")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn formats_times() {
        assert_eq!(format_unix_nanos(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            format_unix_nanos(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(
            format_unix_nanos(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
    }
}
