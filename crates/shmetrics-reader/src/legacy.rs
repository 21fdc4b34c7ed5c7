//! `prometheus_client`'s own multiprocess files (`counter_<pid>.db`,
//! `gauge_livesum_<pid>.db`, `histogram_<pid>.db`, ...), read beside the segments so that a
//! deployment where some processes still use plain multiprocess mode is merged correctly.
//!
//! A `.db` file (`prometheus_client/mmap_dict.py`) is a native-endian `i32` count of used
//! bytes, 4 bytes of padding, then entries: an `i32` key length, the UTF-8 key (a JSON array
//! `[metric_name, sample_name, {label: value}, help]`), padding so that the length word and
//! key end on a multiple of 8 (1 to 8 bytes), and two `f64`: the value and the write time in
//! seconds (0 when not set).
//!
//! Each file is translated into an in-memory segment image (header, family and series
//! records, value slots) that the merge treats like any other segment, so every merge rule,
//! conflict check and renderer applies unchanged. The image is rebuilt when the file has new
//! entries and only its values are refreshed otherwise. Differences from segments:
//!
//! - liveness: `prometheus_client` holds no lock on its files, so a file counts as live for as
//!   long as it exists, exactly as for `MultiProcessCollector` (`mark_process_dead` removes
//!   the `live*` gauge files of a dead process);
//! - the file name gives the process (`pid`) and, for gauges, the mode;
//! - a file that is empty, truncated or corrupt is skipped whole and reported, where
//!   `MultiProcessCollector` fails the entire scrape.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use memmap2::{MmapOptions, MmapRaw};
use rustc_hash::FxHashMap;
use shmetrics_layout::image::{ImageBuilder, ImageError, ImageSize, Slots};
use shmetrics_layout::record::{FamilyRecord, SeriesFields, check_family, check_label_values};
use shmetrics_layout::slots::slot_words;
use shmetrics_layout::{
    GaugeMode, LayoutError, MAX_SEGMENT_SIZE, MetricKind, SegmentIdentity, suffix,
};

use crate::report::{Problem, ProblemReason, SkipReason};
use crate::segment::SegmentFile;

/// Largest `.db` file read, as for segments.
const MAX_DB_LEN: u64 = MAX_SEGMENT_SIZE;

/// What a `.db` file holds, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DbName {
    /// Metric type.
    pub kind: MetricKind,
    /// Gauge mode (gauges only).
    pub mode: Option<GaugeMode>,
    /// The writing process.
    pub pid: u32,
}

/// Parses a `prometheus_client` file name: `counter_<pid>.db`, `summary_<pid>.db`,
/// `histogram_<pid>.db` or `gauge_<mode>_<pid>.db`. `None` for any other name (including a
/// process identifier that is not a number).
pub fn parse_db_name(name: &str) -> Option<DbName> {
    let stem = name.strip_suffix(".db")?;
    let (prefix, pid) = stem.rsplit_once('_')?;
    let pid = pid.parse::<u32>().ok()?;
    let (kind, mode) = match prefix {
        "counter" => (MetricKind::Counter, None),
        "summary" => (MetricKind::Summary, None),
        "histogram" => (MetricKind::Histogram, None),
        _ => {
            let mode = prefix.strip_prefix("gauge_")?.parse::<GaugeMode>().ok()?;
            (MetricKind::Gauge, Some(mode))
        }
    };
    Some(DbName { kind, mode, pid })
}

/// Why a `.db` file was skipped.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The file is empty (a process that died between creating and sizing it).
    #[error("empty prometheus_client file")]
    Empty,
    /// The used-bytes count is impossible or beyond the end of the file.
    #[error("prometheus_client file claims {used} used bytes but has {len}")]
    Truncated {
        /// Bytes the header claims are used.
        used: i64,
        /// Bytes in the file.
        len: u64,
    },
    /// An entry runs past the used bytes, or its key is not a valid key.
    #[error("prometheus_client file corrupt at byte {offset}: {fault}")]
    Corrupt {
        /// Byte offset of the entry.
        offset: usize,
        /// What is wrong.
        fault: DbFault,
    },
    /// The file could not be read (an I/O error, not a verdict about its bytes: it is read
    /// again at the next scrape).
    #[error("prometheus_client file unreadable: {0}")]
    Unreadable(Arc<std::io::Error>),
}

impl DbError {
    /// A stable short reason, as for segment problems.
    pub fn reason(&self) -> ProblemReason {
        match self {
            Self::Empty => ProblemReason::LegacyEmpty,
            Self::Truncated { .. } => ProblemReason::LegacyTruncated,
            Self::Corrupt { .. } => ProblemReason::LegacyCorrupt,
            Self::Unreadable(_) => ProblemReason::LegacyUnreadable,
        }
    }

    fn unreadable(e: std::io::Error) -> Self {
        Self::Unreadable(Arc::new(e))
    }
}

/// What is wrong with a `.db` file's entries, or with the segment image made of them.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbFault {
    /// An entry's length word is past the used bytes.
    #[error("entry length past the used bytes")]
    LengthPastUsed,
    /// A key length of zero, negative or over the limit.
    #[error("impossible key length {0}")]
    KeyLength(i32),
    /// An entry runs past the used bytes.
    #[error("entry runs past the used bytes")]
    EntryPastUsed,
    /// A key that is not the JSON `prometheus_client` writes.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The entries make an image larger than a segment may be.
    #[error("translated image: {0}")]
    Image(#[from] ImageError),
    /// No memory to map the image.
    #[error("cannot map {size} bytes: {error}")]
    Map {
        /// The image's size.
        size: usize,
        /// The error.
        error: Arc<std::io::Error>,
    },
    /// The image was built but does not read back as a segment.
    #[error("translated image rejected: {0}")]
    ImageRejected(LayoutError),
}

/// A `.db` key that is not `prometheus_client`'s JSON `[name, sample, labels, help]`.
#[derive(Clone, Debug, thiserror::Error)]
#[error("bad key: {0}")]
pub struct KeyError(Arc<serde_json::Error>);

/// One entry of a `.db` file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DbEntry<'a> {
    /// Byte offset of the entry in the file.
    pub offset: usize,
    /// The key's bytes (JSON).
    pub key: &'a [u8],
    /// The value.
    pub value: f64,
    /// The write time in seconds since the epoch; 0 when not set.
    pub timestamp: f64,
}

/// The used-bytes count at the start of a `.db` file, checked against the file length.
///
/// # Errors
/// [`DbError::Empty`] for an empty file, [`DbError::Truncated`] when the count is below the
/// 8-byte header or beyond the file.
pub fn db_used(head: &[u8], file_len: u64) -> Result<usize, DbError> {
    if file_len == 0 || head.is_empty() {
        return Err(DbError::Empty);
    }
    let used = match head.get(..4) {
        Some(b) => i64::from(i32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
        None => {
            return Err(DbError::Truncated {
                used: -1,
                len: file_len,
            });
        }
    };
    if used < 8 || used as u64 > file_len || used as u64 > MAX_DB_LEN {
        return Err(DbError::Truncated {
            used,
            len: file_len,
        });
    }
    Ok(used as usize)
}

/// Parses the entries of a `.db` file from its first `used` bytes (`bytes` may be longer:
/// only `bytes[..used]` counts, as `used` comes from [`db_used`]). Every length and offset is
/// checked; the keys are not decoded here (see [`parse_key`]).
///
/// # Errors
/// [`DbError`] naming the first entry that does not fit.
pub fn parse_db(bytes: &[u8], used: usize) -> Result<Vec<DbEntry<'_>>, DbError> {
    let data = bytes.get(..used).ok_or(DbError::Truncated {
        used: used as i64,
        len: bytes.len() as u64,
    })?;
    let mut entries = Vec::new();
    let mut pos = 8;
    while pos < data.len() {
        let (key_len, end) = entry_bounds(data, pos, data.len())?;
        let key_start = pos + 4;
        let values_start = end - 16;
        let f = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&data[at..at + 8]);
            f64::from_ne_bytes(b)
        };
        entries.push(DbEntry {
            offset: pos,
            key: &data[key_start..key_start + key_len],
            value: f(values_start),
            timestamp: f(values_start + 8),
        });
        pos = end;
    }
    Ok(entries)
}

/// Longest key accepted (`prometheus_client` writes the JSON of name, labels and help).
const MAX_KEY_LEN: usize = 1 << 20;

/// The key length and end offset of the entry at `pos`, from its length word in `data`,
/// checked against `used`: a key of 1 byte to [`MAX_KEY_LEN`] (the JSON of a key is never
/// empty), the entry within the used bytes.
fn entry_bounds(data: &[u8], pos: usize, used: usize) -> Result<(usize, usize), DbError> {
    let corrupt = |fault: DbFault| DbError::Corrupt { offset: pos, fault };
    let len_bytes = data
        .get(pos..pos + 4)
        .filter(|_| pos + 4 <= used)
        .ok_or_else(|| corrupt(DbFault::LengthPastUsed))?;
    let key_len = i32::from_ne_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
    if key_len <= 0 || key_len as usize > MAX_KEY_LEN {
        return Err(corrupt(DbFault::KeyLength(key_len)));
    }
    let key_len = key_len as usize;
    // The length word, the key and 1..=8 bytes of padding end on a multiple of 8.
    let padded = key_len + (8 - (key_len + 4) % 8);
    let end = pos + 4 + padded + 16;
    if end > used {
        return Err(corrupt(DbFault::EntryPastUsed));
    }
    Ok((key_len, end))
}

/// A decoded key: `[metric_name, sample_name, labels, help]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbKey {
    /// The family name (`prometheus_client`'s `_name`; a counter's without `_total`).
    pub metric_name: String,
    /// The sample name (`x_total`, `x_bucket`, `x_sum`, ...).
    pub sample_name: String,
    /// Labels, sorted by name (`le` included for buckets).
    pub labels: BTreeMap<String, String>,
    /// Help text.
    pub help: String,
}

/// Decodes an entry's key.
///
/// # Errors
/// [`KeyError`] when the key is not the JSON `prometheus_client` writes.
pub fn parse_key(key: &[u8]) -> Result<DbKey, KeyError> {
    let (metric_name, sample_name, labels, help): (
        String,
        String,
        BTreeMap<String, String>,
        String,
    ) = serde_json::from_slice(key).map_err(|e| KeyError(Arc::new(e)))?;
    Ok(DbKey {
        metric_name,
        sample_name,
        labels,
        help,
    })
}

/// Where an entry's value goes in the image.
#[derive(Clone, Copy, Debug)]
enum Role {
    Counter,
    Gauge,
    Count,
    Sum,
    /// A histogram bucket, by its upper bound (resolved to an index once bounds are known).
    Bucket(f64),
}

struct FamilyPlan {
    record: FamilyRecord,
    series: Vec<usize>,
    /// Histogram upper bounds seen (finite only).
    bounds: Vec<f64>,
    valid: bool,
}

struct SeriesPlan {
    family: usize,
    label_values: Vec<String>,
}

/// What an image was built from, to refresh its values without decoding keys again.
struct Plan {
    /// Per entry: the series (index into the image's series) and role, or `None` for an
    /// entry left out.
    entries: Vec<Option<(usize, Role, usize)>>,
    /// Per image series: kind and number of finite buckets.
    series: Vec<(MetricKind, usize)>,
}

/// A `.db` file being followed, and its segment image.
pub(crate) struct LegacyFile {
    path: PathBuf,
    file: File,
    name: DbName,
    created_unix_nanos: u64,
    ino: u64,
    rebuilds: u64,
    used: usize,
    plan: Option<Plan>,
    buf: Vec<u8>,
    /// The verdict on the file's bytes when they were last found unusable, with the file's
    /// size, times and first 8 bytes then: not read again until one of them changes.
    rejected: Option<(DbError, FileState)>,
    /// Entries left out of the image (unsupported names or labels), reported.
    pub(crate) left_out: Vec<Problem>,
    /// The image; `None` while the file is unusable.
    pub(crate) seg: Option<SegmentFile>,
}

/// Opens a `.db` file owned by `euid` without following links.
pub(crate) fn open_db(
    path: &Path,
    name: DbName,
    euid: u32,
) -> Result<LegacyFile, (SkipReason, String)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| (SkipReason::of_io_error(&e), e.to_string()))?;
    let meta = file
        .metadata()
        .map_err(|e| (SkipReason::of_io_error(&e), e.to_string()))?;
    if !meta.file_type().is_file() {
        return Err((SkipReason::NotRegular, "not a regular file".into()));
    }
    if meta.uid() != euid {
        return Err((
            SkipReason::ForeignOwner,
            format!("owned by uid {}, not {euid}", meta.uid()),
        ));
    }
    let created_unix_nanos = (meta.mtime().max(0) as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec().max(0) as u64);
    Ok(LegacyFile {
        path: path.to_owned(),
        file,
        name,
        created_unix_nanos,
        ino: meta.ino(),
        rebuilds: 0,
        used: 0,
        plan: None,
        buf: Vec::new(),
        rejected: None,
        left_out: Vec::new(),
        seg: None,
    })
}

impl LegacyFile {
    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file again: rebuilds the image when it has new entries, else refreshes the
    /// values. Returns whether the image was rebuilt (its series are new then). On error the
    /// image is dropped: the file is skipped until it reads correctly again.
    pub(crate) fn update(&mut self) -> Result<bool, DbError> {
        match self.read_and_apply() {
            Ok(rebuilt) => Ok(rebuilt),
            Err(e) => {
                self.seg = None;
                self.plan = None;
                self.used = 0;
                Err(e)
            }
        }
    }

    fn read_and_apply(&mut self) -> Result<bool, DbError> {
        let unreadable = DbError::unreadable;
        let meta = self.file.metadata().map_err(unreadable)?;
        let mut head = [0u8; 8];
        let n = self.file.read_at(&mut head, 0).map_err(unreadable)?;
        let state = FileState {
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            head,
        };
        if let Some((error, at)) = &self.rejected
            && *at == state
        {
            return Err(error.clone());
        }
        match self.read_entries(&head[..n], meta.len()) {
            Ok(used) => {
                self.rejected = None;
                self.apply(used)
            }
            Err(e) => {
                self.buf = Vec::new();
                if !matches!(e, DbError::Unreadable(_)) {
                    self.rejected = Some((e.clone(), state));
                }
                Err(e)
            }
        }
    }

    /// Reads the used bytes into `buf`, checking each entry's bounds as it goes, so that
    /// what is read (and allocated) is the entries actually there plus at most one chunk:
    /// a file's claimed size never decides an allocation. Returns the used count.
    fn read_entries(&mut self, head: &[u8], len: u64) -> Result<usize, DbError> {
        const CHUNK: usize = 64 << 10;
        let used = db_used(head, len)?;
        let file = &self.file;
        let buf = &mut self.buf;
        buf.clear();
        let fill = |buf: &mut Vec<u8>, target: usize| -> Result<(), DbError> {
            if buf.len() >= target {
                return Ok(());
            }
            let old = buf.len();
            let new = target.max(old + CHUNK).min(used);
            buf.resize(new, 0);
            file.read_exact_at(&mut buf[old..], old as u64)
                .map_err(DbError::unreadable)
        };
        fill(buf, 8)?;
        let mut pos = 8;
        while pos < used {
            fill(buf, (pos + 4).min(used))?;
            let (_, end) = entry_bounds(buf, pos, used)?;
            fill(buf, end)?;
            pos = end;
        }
        Ok(used)
    }

    /// Parses `buf` (the used bytes, read by `read_entries`) and updates the image.
    fn apply(&mut self, used: usize) -> Result<bool, DbError> {
        // The count may have grown since it was read; entries up to `used` were complete
        // before it was written, and are what counts.
        let buf = std::mem::take(&mut self.buf);
        let result = (|| {
            let entries = parse_db(&buf, used)?;
            let rebuilt = if self.seg.is_none() || used != self.used {
                self.rebuild(&entries)?;
                self.used = used;
                true
            } else {
                false
            };
            if let (Some(plan), Some(seg)) = (&self.plan, &self.seg) {
                apply_values(plan, seg, &entries);
            }
            Ok(rebuilt)
        })();
        self.buf = buf;
        result
    }

    /// Builds a new image from `entries`.
    fn rebuild(&mut self, entries: &[DbEntry<'_>]) -> Result<(), DbError> {
        self.rebuilds += 1;
        // Unique per image, so that cached merge state keyed on segments is recomputed
        // whenever an image is rebuilt.
        let instance_id = self.ino.rotate_left(24) ^ self.rebuilds;
        let mut left_out = Vec::new();
        let image = build_image(
            &self.path,
            self.name,
            self.created_unix_nanos,
            instance_id,
            entries,
            &mut left_out,
        )?;
        self.left_out = left_out
            .into_iter()
            .map(|detail| Problem {
                path: self.path.clone(),
                reason: ProblemReason::LegacyUnsupported,
                detail,
            })
            .collect();
        self.plan = Some(image.plan);
        self.seg = Some(image.seg);
        Ok(())
    }
}

/// What a `.db` file looked like when it was last rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileState {
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    /// The used count and the first bytes after it: `prometheus_client` writes the count
    /// through its mapping, which changes no time on every file system.
    head: [u8; 8],
}

/// A translated file: the segment image and how entries map onto it.
struct Image {
    seg: SegmentFile,
    plan: Plan,
}

/// Translates the entries of a `.db` file into a segment image. Entries that cannot be
/// represented are described in `left_out` and left out.
fn build_image(
    path: &Path,
    name: DbName,
    created_unix_nanos: u64,
    instance_id: u64,
    entries: &[DbEntry<'_>],
    left_out: &mut Vec<String>,
) -> Result<Image, DbError> {
    let DbName { kind, mode, pid } = name;
    let mut families: Vec<FamilyPlan> = Vec::new();
    let mut family_ids: FxHashMap<String, usize> = FxHashMap::default();
    let mut series: Vec<SeriesPlan> = Vec::new();
    let mut series_ids: FxHashMap<(usize, Vec<String>), usize> = FxHashMap::default();
    let mut placed: Vec<Option<(usize, Role)>> = Vec::with_capacity(entries.len());
    for entry in entries {
        let key = parse_key(entry.key).map_err(|e| DbError::Corrupt {
            offset: entry.offset,
            fault: e.into(),
        })?;
        let DbKey {
            metric_name,
            sample_name,
            mut labels,
            help,
        } = key;
        let role = match kind {
            MetricKind::Counter => Some(Role::Counter),
            MetricKind::Gauge => Some(Role::Gauge),
            MetricKind::Summary => match sample_name.strip_prefix(metric_name.as_str()) {
                Some(suffix::COUNT) => Some(Role::Count),
                Some(suffix::SUM) => Some(Role::Sum),
                _ => None,
            },
            MetricKind::Histogram => match sample_name.strip_prefix(metric_name.as_str()) {
                Some(suffix::SUM) => Some(Role::Sum),
                Some(suffix::BUCKET) => labels
                    .remove("le")
                    .and_then(|le| parse_le(&le))
                    .map(Role::Bucket),
                _ => None,
            },
            // prometheus_client keeps no file for these.
            MetricKind::Info | MetricKind::StateSet => None,
        };
        let Some(role) = role else {
            left_out.push(format!(
                "sample {sample_name} of {metric_name} is not understood"
            ));
            placed.push(None);
            continue;
        };
        let name = match kind {
            MetricKind::Counter => metric_name
                .strip_suffix(suffix::TOTAL)
                .unwrap_or(&metric_name)
                .to_owned(),
            _ => metric_name,
        };
        let (label_names, label_values): (Vec<String>, Vec<String>) = labels.into_iter().unzip();
        let family = match family_ids.get(&name) {
            Some(&f) => f,
            None => {
                family_ids.insert(name.clone(), families.len());
                families.push(FamilyPlan {
                    record: FamilyRecord {
                        id: 0,
                        kind,
                        mode,
                        name,
                        help,
                        label_names: label_names.clone(),
                        bounds: Vec::new(),
                        states: Vec::new(),
                    },
                    series: Vec::new(),
                    bounds: Vec::new(),
                    valid: true,
                });
                families.len() - 1
            }
        };
        if families[family].record.label_names != label_names {
            left_out.push(format!(
                "{} has series with label names ({}) and ({}); the second set is left out",
                families[family].record.name,
                families[family].record.label_names.join(", "),
                label_names.join(", ")
            ));
            placed.push(None);
            continue;
        }
        if let Err(e) = check_label_values(&label_names, &label_values) {
            left_out.push(format!("{}: {e}", families[family].record.name));
            placed.push(None);
            continue;
        }
        if let Role::Bucket(le) = role
            && le.is_finite()
            && !families[family].bounds.contains(&le)
        {
            families[family].bounds.push(le);
        }
        let s = *series_ids
            .entry((family, label_values.clone()))
            .or_insert_with(|| {
                series.push(SeriesPlan {
                    family,
                    label_values,
                });
                families[family].series.push(series.len() - 1);
                series.len() - 1
            });
        placed.push(Some((s, role)));
    }
    for f in &mut families {
        f.bounds.sort_by(f64::total_cmp);
        f.record.bounds = std::mem::take(&mut f.bounds);
        let r = &f.record;
        if let Err(e) = check_family(r) {
            f.valid = false;
            let problem = format!("{} left out: {e}", r.name);
            left_out.push(problem);
        }
    }
    // Image series: the series of valid families, family by family; their records follow
    // the families'.
    let mut image_family_id = FxHashMap::default();
    let mut image_series: Vec<usize> = Vec::new();
    let mut image_index = vec![usize::MAX; series.len()];
    let mut size = ImageSize::default();
    for (i, f) in families.iter_mut().enumerate().filter(|(_, f)| f.valid) {
        f.record.id = image_family_id.len() as u32;
        image_family_id.insert(i, f.record.id);
        size.record(f.record.encoded_len());
        for &s in &f.series {
            image_index[s] = image_series.len();
            image_series.push(s);
        }
    }
    let fields = |s: usize| SeriesFields {
        family_id: image_family_id[&series[s].family],
        slot_offset: 0,
        label_values: &series[s].label_values,
        // `*.db` files keep no creation time: the image's stands in.
        created_unix_nanos: None,
        process: None,
        exact_parts: &[],
    };
    let width = |s: usize| {
        let r = &families[series[s].family].record;
        slot_words(r.kind, r.bounds.len())
    };
    for &s in &image_series {
        size.record(fields(s).encoded_len());
        size.slots(width(s));
    }
    let corrupt = |fault: DbFault| DbError::Corrupt { offset: 0, fault };
    let size = size.file_size().map_err(|e| corrupt(e.into()))?;
    let mut map = MmapOptions::new().len(size).map_anon().map_err(|e| {
        corrupt(DbFault::Map {
            size,
            error: Arc::new(e),
        })
    })?;
    let identity = SegmentIdentity {
        pid,
        sequence: 0,
        instance_id,
        start_time_ticks: 0,
        created_unix_nanos,
    };
    let mut image = ImageBuilder::new(&mut map[..], identity);
    let built = (|| {
        for f in families.iter().filter(|f| f.valid) {
            image.record(&f.record)?;
        }
        for &s in &image_series {
            image.series(fields(s), Slots::Zero(width(s)))?;
        }
        image.finish()
    })();
    let header = built.map_err(|e| corrupt(e.into()))?;
    let seg = SegmentFile::from_image(path, MmapRaw::from(map), header)
        .map_err(|e| corrupt(DbFault::ImageRejected(e)))?;
    let plan_series = image_series
        .iter()
        .map(|&s| {
            let r = &families[series[s].family].record;
            (r.kind, r.bounds.len())
        })
        .collect();
    let entries = placed
        .into_iter()
        .map(|p| {
            p.and_then(|(s, role)| {
                let i = image_index[s];
                (i != usize::MAX).then(|| {
                    let bucket = match role {
                        Role::Bucket(le) => {
                            let bounds = &families[series[s].family].record.bounds;
                            bounds.iter().position(|&b| b == le).unwrap_or(bounds.len())
                        }
                        _ => 0,
                    };
                    (i, role, bucket)
                })
            })
        })
        .collect();
    Ok(Image {
        seg,
        plan: Plan {
            entries,
            series: plan_series,
        },
    })
}

/// Writes the entries' values into the image's slots.
fn apply_values(plan: &Plan, seg: &SegmentFile, entries: &[DbEntry<'_>]) {
    // Per series: the words to store, computed fresh from every entry.
    let mut words: Vec<Vec<u64>> = plan
        .series
        .iter()
        .map(|&(kind, buckets)| vec![0; slot_words(kind, buckets)])
        .collect();
    let mut sums = vec![0.0f64; plan.series.len()];
    for (entry, place) in entries.iter().zip(&plan.entries) {
        let Some((i, role, bucket)) = *place else {
            continue;
        };
        let w = &mut words[i];
        match role {
            Role::Counter => w[1] = entry.value.to_bits(),
            Role::Gauge => {
                w[0] = entry.value.to_bits();
                w[1] = seconds_to_nanos(entry.timestamp);
            }
            Role::Sum => sums[i] += entry.value,
            Role::Count => {
                let n = count(entry.value);
                w[0] = n;
                w[2] = n;
            }
            Role::Bucket(_) => w[2 + bucket] = w[2 + bucket].saturating_add(count(entry.value)),
        }
    }
    for (i, w) in words.iter_mut().enumerate() {
        if let (MetricKind::Histogram, _) | (MetricKind::Summary, _) = plan.series[i] {
            w[1] = sums[i].to_bits();
            if plan.series[i].0 == MetricKind::Histogram {
                w[0] = w[2..].iter().fold(0u64, |a, &b| a.saturating_add(b));
            }
        }
        for (slot, &value) in seg.slots(i).iter().zip(w.iter()) {
            // SYNC POINT legacy-image: relaxed; the image is private to this reader and
            // written and read by the same thread, within one scrape.
            slot.store(value, Ordering::Relaxed);
        }
    }
}

/// Translates a whole `.db` file image (`bytes`, named as `name` says) the way the reader
/// does, values included; returns the number of series it holds. For tests and fuzzing.
///
/// # Errors
/// As the reader skips the file: [`DbError`].
pub fn translate(bytes: &[u8], name: DbName) -> Result<usize, DbError> {
    let used = db_used(bytes, bytes.len() as u64)?;
    let entries = parse_db(bytes, used)?;
    let image = build_image(Path::new("<memory>"), name, 1, 1, &entries, &mut Vec::new())?;
    apply_values(&image.plan, &image.seg, &entries);
    Ok(image.seg.series.len())
}

/// A bucket bound as `prometheus_client` writes it (`floatToGoString`: `0.005`, `1e+06`,
/// `+Inf`).
fn parse_le(le: &str) -> Option<f64> {
    match le {
        "+Inf" => Some(f64::INFINITY),
        _ => le.parse::<f64>().ok().filter(|v| !v.is_nan()),
    }
}

/// An observation count stored as a double: integral and non-negative when written by
/// `prometheus_client`; anything else counts as 0.
fn count(v: f64) -> u64 {
    if v.is_finite() && v >= 0.0 {
        v.round() as u64
    } else {
        0
    }
}

fn seconds_to_nanos(ts: f64) -> u64 {
    if ts.is_finite() && ts > 0.0 {
        (ts * 1e9) as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry as `mmap_dict.py` writes it.
    pub(crate) fn entry(key: &str, value: f64, timestamp: f64) -> Vec<u8> {
        let mut out = (key.len() as i32).to_ne_bytes().to_vec();
        out.extend_from_slice(key.as_bytes());
        out.extend(std::iter::repeat_n(b' ', 8 - (key.len() + 4) % 8));
        out.extend_from_slice(&value.to_ne_bytes());
        out.extend_from_slice(&timestamp.to_ne_bytes());
        out
    }

    fn file(entries: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = entries.concat();
        let used = 8 + body.len();
        let mut out = (used as i32).to_ne_bytes().to_vec();
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&body);
        out.resize(used.next_multiple_of(4096), 0);
        out
    }

    #[test]
    fn names() {
        assert_eq!(
            parse_db_name("gauge_livesum_12.db"),
            Some(DbName {
                kind: MetricKind::Gauge,
                mode: Some(GaugeMode::LiveSum),
                pid: 12
            })
        );
        assert_eq!(
            parse_db_name("counter_7.db").map(|n| (n.kind, n.pid)),
            Some((MetricKind::Counter, 7))
        );
        for bad in [
            "counter_x.db",
            "gauge_7.db",
            "gauge_avg_7.db",
            "foo_7.db",
            "counter_7",
            "counter_-1.db",
        ] {
            assert_eq!(parse_db_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn entries_and_keys() {
        let keys = [
            r#"["c", "c_total", {"a": "x"}, "help"]"#,
            r#"["c", "c_total", {"a": "y\u00e9"}, "help"]"#,
            "1234", // key length 4: the padding is a full 8 bytes
        ];
        let bytes = file(&[
            entry(keys[0], 2.0, 0.0),
            entry(keys[1], 3.5, 1.5),
            entry(keys[2], 1.0, 0.0),
        ]);
        let used = db_used(&bytes, bytes.len() as u64).unwrap();
        let entries = parse_db(&bytes, used).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1].value, 3.5);
        assert_eq!(entries[1].timestamp, 1.5);
        assert_eq!(entries[2].key, b"1234");
        let key = parse_key(entries[1].key).unwrap();
        assert_eq!(key.labels["a"], "yé");
        assert_eq!(key.help, "help");
        assert!(parse_key(entries[2].key).is_err());
    }

    #[test]
    fn damaged_files() {
        assert!(matches!(db_used(&[], 0), Err(DbError::Empty)));
        let good = file(&[entry(r#"["c", "c_total", {}, "h"]"#, 1.0, 0.0)]);
        let used = db_used(&good, good.len() as u64).unwrap();
        // The file ends inside the used bytes.
        let truncated = db_used(&good[..used - 1], (used - 1) as u64);
        assert!(
            matches!(truncated, Err(DbError::Truncated { used: u, len }) if u == used as i64 && len == used as u64 - 1),
            "{truncated:?}"
        );
        assert!(matches!(
            db_used(&[3, 0, 0, 0], 4096),
            Err(DbError::Truncated { .. })
        ));
        // An entry whose key length runs past the used bytes.
        let mut bad = good.clone();
        bad[8..12].copy_from_slice(&1000i32.to_ne_bytes());
        assert!(matches!(
            parse_db(&bad, used),
            Err(DbError::Corrupt {
                offset: 8,
                fault: DbFault::EntryPastUsed
            })
        ));
        bad[8..12].copy_from_slice(&(-5i32).to_ne_bytes());
        let negative = parse_db(&bad, used).unwrap_err();
        assert!(matches!(
            negative,
            DbError::Corrupt {
                offset: 8,
                fault: DbFault::KeyLength(-5)
            }
        ));
        assert_eq!(
            negative.to_string(),
            "prometheus_client file corrupt at byte 8: impossible key length -5"
        );
        // Used bytes that stop inside an entry.
        assert!(matches!(
            parse_db(&good, used - 8),
            Err(DbError::Corrupt {
                fault: DbFault::EntryPastUsed,
                ..
            })
        ));
        assert!(parse_db(&good, 8).unwrap().is_empty());
    }

    /// Histogram entries, three of which are left out.
    fn histogram_entries() -> Vec<Vec<u8>> {
        vec![
            entry(r#"["h", "h_sum", {"a": "x"}, "help"]"#, 2.5, 0.0),
            entry(
                r#"["h", "h_bucket", {"a": "x", "le": "1.0"}, "help"]"#,
                1.0,
                0.0,
            ),
            entry(
                r#"["h", "h_bucket", {"a": "x", "le": "+Inf"}, "help"]"#,
                1.0,
                0.0,
            ),
            entry(
                r#"["h", "h_bucket", {"a": "y", "le": "1.0"}, "help"]"#,
                0.0,
                0.0,
            ),
            // Left out: an unknown sample, a second label set, a reserved label name.
            entry(r#"["h", "h_other", {"a": "x"}, "help"]"#, 1.0, 0.0),
            entry(r#"["h", "h_sum", {"b": "x"}, "help"]"#, 1.0, 0.0),
            entry(r#"["h2", "h2_sum", {"__x": "y"}, "help"]"#, 1.0, 0.0),
        ]
    }

    #[test]
    fn translation() {
        let histogram = DbName {
            kind: MetricKind::Histogram,
            mode: None,
            pid: 3,
        };
        let bytes = file(&histogram_entries());
        assert_eq!(translate(&bytes, histogram).unwrap(), 2);
        let mut left_out = Vec::new();
        let used = db_used(&bytes, bytes.len() as u64).unwrap();
        let entries = parse_db(&bytes, used).unwrap();
        let image = build_image(Path::new("t"), histogram, 1, 1, &entries, &mut left_out).unwrap();
        apply_values(&image.plan, &image.seg, &entries);
        assert_eq!(left_out.len(), 3, "{left_out:?}");
        assert_eq!(image.seg.families.len(), 1);
        assert_eq!(image.seg.families[0].bounds, [1.0]);
        let words: Vec<u64> = image
            .seg
            .slots(0)
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .collect();
        assert_eq!(words, [2, 2.5f64.to_bits(), 1, 1]);
        let gauge = DbName {
            kind: MetricKind::Gauge,
            mode: Some(GaugeMode::MostRecent),
            pid: 3,
        };
        let bytes = file(&[entry(r#"["g", "g", {}, "help"]"#, 7.0, 2.0)]);
        assert_eq!(translate(&bytes, gauge).unwrap(), 1);
        let bad_key = file(&[entry(r#"["g", "g", {"a": 1}, "help"]"#, 7.0, 2.0)]);
        assert!(matches!(
            translate(&bad_key, gauge),
            Err(DbError::Corrupt { offset: 8, .. })
        ));
    }

    /// One file of each kind: the translated images' bytes are those this version has
    /// always built (families first, then their series; slots down from the end).
    #[cfg(target_endian = "little")]
    #[test]
    fn image_bytes_are_pinned() {
        let name = |kind, mode| DbName { kind, mode, pid: 3 };
        let files = [
            (
                name(MetricKind::Counter, None),
                vec![
                    entry(
                        r#"["c", "c_total", {"a": "x", "b": "1"}, "help"]"#,
                        2.0,
                        0.0,
                    ),
                    entry(
                        r#"["c", "c_total", {"a": "y", "b": "2"}, "help"]"#,
                        3.5,
                        0.0,
                    ),
                    entry(r#"["d_total", "d_total", {}, "D."]"#, 1.0, 0.0),
                    entry(r#"["c", "c_total", {"a": "x"}, "help"]"#, 1.0, 0.0),
                ],
                0x1841_0e07_8dba_0e9a,
            ),
            (
                name(MetricKind::Gauge, Some(GaugeMode::MostRecent)),
                vec![
                    entry(r#"["g", "g", {"a": "x"}, "help"]"#, 7.0, 2.0),
                    entry(r#"["g", "g", {"a": "y"}, "help"]"#, 8.0, 1.0),
                ],
                0x8f4d_8153_bf26_758e,
            ),
            (
                name(MetricKind::Histogram, None),
                histogram_entries(),
                0x8a60_494f_e7a5_a049,
            ),
            (
                name(MetricKind::Summary, None),
                vec![
                    entry(r#"["s", "s_count", {"a": "x"}, "help"]"#, 4.0, 0.0),
                    entry(r#"["s", "s_sum", {"a": "x"}, "help"]"#, 4.5, 0.0),
                ],
                0x6001_95d8_6e6d_7d63,
            ),
        ];
        for (name, entries, expected) in files {
            let bytes = file(&entries);
            let used = db_used(&bytes, bytes.len() as u64).unwrap();
            let entries = parse_db(&bytes, used).unwrap();
            let image = build_image(Path::new("t"), name, 5, 9, &entries, &mut Vec::new()).unwrap();
            let fnv = image
                .seg
                .words()
                .iter()
                .flat_map(|w| w.load(Ordering::Relaxed).to_ne_bytes())
                .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
            assert_eq!(fnv, expected, "{name:?}: {fnv:#x}");
        }
    }

    #[test]
    fn le_values() {
        assert_eq!(parse_le("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_le("1e+06"), Some(1e6));
        assert_eq!(parse_le("0.005"), Some(0.005));
        assert_eq!(parse_le("NaN"), None);
        assert_eq!(parse_le("x"), None);
    }
}
