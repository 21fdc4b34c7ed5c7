//! One segment as the reader sees it: opened without following links, checked, mapped
//! read-only, its metadata parsed incrementally and never trusted.

use shmetrics_layout::sync::AtomicU64;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use memmap2::{MmapOptions, MmapRaw, UncheckedAdvice};
use rustc_hash::{FxHashMap, FxHashSet};
use shmetrics_layout::exemplar::{exemplar_block_words, exemplar_count};
use shmetrics_layout::fault::{self, Watch};
use shmetrics_layout::limits;
use shmetrics_layout::record::{
    FamilyRecord, ProcessOf, Record, check_info_labels, check_label_count, parse_records,
};
use shmetrics_layout::slots::slot_words;
use shmetrics_layout::{
    GaugeMode, HEADER_SIZE, LayoutError, MIN_SEGMENT_SIZE, MetricKind, RecordFault, SegmentHeader,
    view,
};

use crate::report::SkipReason;

/// A series declared by a segment: 8 bytes per series, since a reader holds one per
/// series of every process (1.28 million at 128 processes × 10,000 series).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalSeries {
    /// Index into [`SegmentFile::families`].
    pub(crate) family: u32,
    /// Word index of the first slot.
    pub(crate) slot_word: u32,
    /// When the series was created (ns since the Unix epoch): its record's time, the
    /// segment's creation time in a segment of layout version 1, else [`NOT_CREATED`] (a
    /// `prometheus_client` `*.db` file keeps no creation time).
    pub(crate) created_unix_nanos: u64,
}

/// [`LocalSeries::created_unix_nanos`] of a series whose creation time is not known.
pub(crate) const NOT_CREATED: u64 = u64::MAX;

/// What a segment declared over the exposition limits (`shmetrics_layout::limits`): left
/// out of every merge and compaction, reported at every scrape.
#[derive(Debug, Default)]
pub(crate) struct Refused {
    /// Names of the refused families by id (their series are left out with them).
    families: FxHashMap<u32, Box<str>>,
    /// Series left out, those of refused families included.
    pub(crate) series: usize,
    /// The first refusal, in words.
    pub(crate) first: Option<String>,
}

impl Refused {
    /// Whether nothing was refused.
    pub(crate) fn is_empty(&self) -> bool {
        self.families.is_empty() && self.series == 0
    }

    /// The refusals in one sentence.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} families and {} series over the exposition limits left out; the first: {}",
            self.families.len(),
            self.series,
            self.first.as_deref().unwrap_or("")
        )
    }

    fn note(&mut self, why: String) {
        self.first.get_or_insert(why);
    }
}

/// Why a file could not be used as a segment.
#[derive(Debug)]
pub(crate) enum Rejection {
    /// Not a candidate at all.
    Skip(SkipReason, String),
    /// A candidate whose header is invalid.
    Bad(LayoutError),
}

/// An open, mapped, validated segment.
pub(crate) struct SegmentFile {
    /// `SIGBUS` watches over the mappings below (declared first: dropped before they are
    /// unmapped).
    watches: Vec<Watch>,
    pub(crate) path: PathBuf,
    /// The segment file, holding the writer's lock while the writer lives; closed (`None`)
    /// once the segment is dead and read for the last time, so that a reader holds no
    /// descriptor per dead process; `None` for an image built in memory (`legacy.rs`).
    file: Option<File>,
    /// An image built in memory (`legacy.rs`): live for as long as its source exists, and its
    /// pages are its only copy.
    image: bool,
    /// The file's status-change time when its descriptor was closed (dead segments): a file
    /// that replaced it under the same inode number (after a compactor removed it) has
    /// another one, and a dead writer changes it no more.
    ctime: (i64, i64),
    map: MmapRaw,
    /// The header page alone (segment files only): the words every scrape reads
    /// (`meta_len`, `dropped_series`) through a one-page mapping, so reading them maps no
    /// neighbouring page of the segment (the kernel maps up to 16 pages around a fault
    /// within a mapping) and survives `release_pages`.
    header_map: Option<MmapRaw>,
    /// The header as validated at open (identity fields never change afterwards).
    pub(crate) header: SegmentHeader,
    /// Published metadata parsed so far.
    parsed_len: usize,
    /// Byte offset of the lowest slot (of a series or an exemplar block) parsed so far: a
    /// scrape reads the file from there to its end.
    lowest_slot: u64,
    /// Families declared so far, in declaration order.
    pub(crate) families: Vec<Arc<FamilyRecord>>,
    family_index: FxHashMap<u32, usize>,
    /// Series declared so far, in declaration order.
    pub(crate) series: Vec<LocalSeries>,
    /// Label values of the last `unlinked_labels.len()` series, in the family's label-name
    /// order, until the merge index takes them (`merge::Index::link`): a linked series is
    /// identified by its merged id, and the segment keeps no strings for it.
    pub(crate) unlinked_labels: Vec<Vec<String>>,
    /// In an archive: the dead process each `all`-mode gauge series was read from, by
    /// local series index.
    pub(crate) processes: FxHashMap<u32, ProcessOf>,
    /// In an archive: the exact float part of summed values (`SeriesRecord::exact_parts`),
    /// by local series index.
    pub(crate) exact: FxHashMap<u32, Box<[f64]>>,
    /// Exemplar slots (`ExemplarsRecord`): the word index of each block and the words of
    /// each of its slots, by local series index; its slot count is the series' (1 for a
    /// counter, the buckets for a histogram).
    pub(crate) exemplars: FxHashMap<u32, (u32, u32)>,
    /// Exemplar slots in this segment of series declared by an earlier segment of the same
    /// process (placed here when that one was full); resolved by the merge.
    pub(crate) foreign_exemplars: Vec<ForeignExemplars>,
    /// In an archive: the segments (instance id, sequence) whose values it holds.
    pub(crate) folded: FxHashSet<(u64, u32)>,
    /// In an archive: the instance ids of its sealed parts.
    pub(crate) parts: Vec<u64>,
    /// Whether the writer still holds its lock.
    pub(crate) live: bool,
    /// Set when metadata failed validation; nothing after it is parsed.
    pub(crate) corrupt: Option<LayoutError>,
    /// Families and series over the exposition limits.
    pub(crate) refused: Refused,
    /// Set once the segment was read after its writer died: its metadata and header are
    /// final, so later scrapes do not touch its header page again.
    final_dropped: Option<u64>,
}

impl std::fmt::Debug for SegmentFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentFile")
            .field("path", &self.path)
            .field("header", &self.header)
            .field("series", &self.series.len())
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

/// Opens `path` as a segment owned by `euid`. Never follows a symlink and never blocks on a
/// FIFO; anything but a regular file of this user is rejected before it is mapped.
pub(crate) fn open_segment(path: &Path, euid: u32) -> Result<SegmentFile, Rejection> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_rejection)?;
    let meta = file.metadata().map_err(io_rejection)?;
    if !meta.file_type().is_file() {
        return Err(Rejection::Skip(
            SkipReason::NotRegular,
            "not a regular file".into(),
        ));
    }
    if meta.uid() != euid {
        return Err(Rejection::Skip(
            SkipReason::ForeignOwner,
            format!("owned by uid {}, not {euid}", meta.uid()),
        ));
    }
    let size = meta.len();
    if size < HEADER_SIZE as u64 {
        return Err(Rejection::Bad(LayoutError::TruncatedHeader { len: size }));
    }
    // A quick header check before mapping anything: the size must match what it claims.
    let mut head = [0u8; HEADER_SIZE];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut head, 0).map_err(io_rejection)?;
    let header = SegmentHeader::parse(&head, size).map_err(Rejection::Bad)?;
    // On tmpfs, reading a hole of a shared mapping allocates a page (and raises SIGBUS when
    // the tmpfs is full): a writer reserves every byte of its segments, so a file with holes
    // is not one of theirs. (Elsewhere holes read as zeros without allocating anything, and
    // some file systems report fewer blocks than bytes for other reasons: compression.)
    let allocated = meta.blocks().saturating_mul(512);
    if allocated < size
        && nix::sys::statfs::fstatfs(&file)
            .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
    {
        return Err(Rejection::Bad(LayoutError::SparseFile { allocated, size }));
    }
    let map = MmapOptions::new()
        .len(size as usize)
        .map_raw_read_only(&file)
        .map_err(io_rejection)?;
    let header_map = MmapOptions::new()
        .len(MIN_SEGMENT_SIZE as usize)
        .map_raw_read_only(&file)
        .map_err(io_rejection)?;
    let mut segment = SegmentFile::new(path, Some((file, header_map)), map, header);
    segment.probe_liveness();
    Ok(segment)
}

/// A block of exemplar slots: its index (a word per slot, the time of its latest write) and
/// the slots, of `width` words each.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ExemplarBlock<'a> {
    pub(crate) index: &'a [AtomicU64],
    pub(crate) slots: &'a [AtomicU64],
    pub(crate) width: usize,
}

/// Exemplar slots in one segment of series an earlier segment of the same process declares.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ForeignExemplars {
    /// The declaring segment's sequence number.
    pub(crate) sequence: u32,
    /// The series' first slot word there.
    pub(crate) slot_word: u32,
    /// The first word of the slots, here.
    pub(crate) block_word: u32,
    /// Slots: checked against the series' family by the merge.
    pub(crate) count: u32,
    /// Words of each slot.
    pub(crate) slot_words: u32,
}

/// Exemplar slots of a series of `def` ([`exemplar_count`]); `0` for kinds without.
pub(crate) fn exemplar_slots_of(def: &FamilyRecord) -> u32 {
    exemplar_count(def.kind, def.bounds.len()).map_or(0, |n| n as u32)
}

/// Most parts an archive may list (at the default part size, 64 GiB of dead data).
const MAX_PARTS: usize = 1024;

/// A failed open, read or map, by its cause (a transient one is never cached).
fn io_rejection(e: std::io::Error) -> Rejection {
    Rejection::Skip(SkipReason::of_io_error(&e), e.to_string())
}

impl SegmentFile {
    /// A segment with nothing parsed yet: of a file (with its one-page header mapping), or
    /// of an image when `file` is `None`.
    fn new(
        path: &Path,
        file: Option<(File, MmapRaw)>,
        map: MmapRaw,
        header: SegmentHeader,
    ) -> SegmentFile {
        let image = file.is_none();
        let (file, header_map) = file.unzip();
        // A file's pages can vanish under the reader (truncation) or fail to be supplied
        // (a full tmpfs): watch them. An image is anonymous memory of ours.
        let watches = if image {
            Vec::new()
        } else {
            std::iter::once(&map)
                .chain(header_map.as_ref())
                .map(|m| fault::watch(m.as_ptr(), m.len(), fault::Access::Read))
                .collect()
        };
        let lowest_slot = map.len() as u64;
        SegmentFile {
            watches,
            path: path.to_owned(),
            file,
            image,
            ctime: (0, 0),
            map,
            header_map,
            header,
            parsed_len: 0,
            lowest_slot,
            families: Vec::new(),
            family_index: FxHashMap::default(),
            series: Vec::new(),
            unlinked_labels: Vec::new(),
            processes: FxHashMap::default(),
            exact: FxHashMap::default(),
            exemplars: FxHashMap::default(),
            foreign_exemplars: Vec::new(),
            folded: FxHashSet::default(),
            parts: Vec::new(),
            live: true,
            corrupt: None,
            refused: Refused::default(),
            final_dropped: None,
        }
    }

    /// A segment from an image built in memory (a translated `prometheus_client` `.db` file
    /// at `path`) that starts with `header`: checked and parsed like a file, always live.
    pub(crate) fn from_image(
        path: &Path,
        map: MmapRaw,
        header: SegmentHeader,
    ) -> Result<SegmentFile, LayoutError> {
        header.check(map.len() as u64)?;
        let mut segment = SegmentFile::new(path, None, map, header);
        segment.refresh_metadata();
        match segment.corrupt.take() {
            Some(e) => Err(e),
            None => Ok(segment),
        }
    }

    /// Whether reading a mapping of the file faulted (the file shrank or a page could not
    /// be supplied): what was read from it is not to be used, and the segment is dropped.
    pub(crate) fn faulted(&self) -> bool {
        self.watches.iter().any(Watch::faulted)
    }

    /// The mapping as atomic words.
    pub(crate) fn words(&self) -> &[AtomicU64] {
        // SAFETY: `map` is a shared read-only mapping of the whole file (or, for an image,
        // an anonymous mapping this reader owns and writes only through these atomics), alive
        // as long as `self`, page aligned, with a size validated to be a multiple of 8; every
        // process accesses segment memory only through atomic word operations (layout::view).
        // The file is never truncated by shmetrics (see docs/layout.md, "Trust").
        unsafe { view::words_from_raw(self.map.as_ptr(), self.map.len()) }
    }

    /// The header's words: through the one-page header mapping of a file, else the image.
    fn header_words(&self) -> &[AtomicU64] {
        match &self.header_map {
            // SAFETY: `header_map` is a shared read-only mapping of the file's first 4096
            // bytes (every segment is at least that long, checked before mapping), alive as
            // long as `self`, page aligned; as for `words`, the memory is accessed only
            // through atomic word operations. It maps the same page-cache page as the
            // start of `map`: an acquire load through either address orders later loads
            // through both (coherence is per physical location).
            Some(h) => unsafe { view::words_from_raw(h.as_ptr(), h.len()) },
            None => &self.words()[..HEADER_SIZE / 8],
        }
    }

    /// Bytes of published metadata parsed and accepted so far: every record before this
    /// offset passed validation.
    pub(crate) fn parsed_len(&self) -> usize {
        self.parsed_len
    }

    /// Size of the file in bytes.
    pub(crate) fn size(&self) -> usize {
        self.map.len()
    }

    /// Whether the directory entry with our inode number (of status-change time `ctime()`)
    /// is still our file: once removed (by a compactor), a new file may reuse the inode number,
    /// and the reader must not take one for the other.
    pub(crate) fn is_same_file(&self, ctime: impl FnOnce() -> (i64, i64)) -> bool {
        match &self.file {
            // Ours is linked still, so the entry with its inode number is ours.
            Some(file) => file.metadata().is_ok_and(|m| m.nlink() > 0),
            None => self.image || self.ctime == ctime(),
        }
    }

    /// Re-checks whether the writer still holds its lock. A dead segment stays dead: only
    /// its writer ever held the lock, and it is gone.
    pub(crate) fn probe_liveness(&mut self) {
        let Some(file) = self.file.as_ref().filter(|_| self.live) else {
            return;
        };
        match file.try_lock_shared() {
            Ok(()) => {
                let _ = file.unlock();
                self.live = false;
            }
            Err(std::fs::TryLockError::WouldBlock) => {}
            // A lock that cannot be probed is not evidence of death.
            Err(std::fs::TryLockError::Error(e)) => {
                log::debug!("cannot probe lock of {}: {e}", self.path.display());
            }
        }
    }

    /// Parses metadata published since the last call. Returns the index of the first new
    /// series. Stops for good at the first invalid record, keeping what came before it.
    pub(crate) fn refresh_metadata(&mut self) -> usize {
        let first_new = self.series.len();
        if self.corrupt.is_some() || self.final_dropped.is_some() {
            return first_new;
        }
        let parsed_from = self.parsed_len;
        self.parse_published();
        if !self.live {
            // The writer is gone: everything it published is read now, and never again; the
            // descriptor is not needed any more (the mapping keeps the data).
            self.final_dropped = Some(self.read_dropped_series());
            if let Some(file) = self.file.take() {
                self.ctime = file
                    .metadata()
                    .map(|m| (m.ctime(), m.ctime_nsec()))
                    .unwrap_or_default();
            }
        }
        self.release_after_parse(parsed_from);
        first_new
    }

    /// Releases the metadata pages after the first parse of a segment or a large one: the
    /// records are in the heap now and are not read from the mapping again. (A few new
    /// records of a live segment are not worth the system call and the faults that map its
    /// slot pages again.) Without this, a reader's first scrape of a big directory would map
    /// every segment's metadata at once before folding any.
    fn release_after_parse(&self, parsed_from: usize) {
        const WORTH_RELEASING: usize = 64 * 1024;
        let parsed = self.parsed_len - parsed_from;
        if parsed > 0 && (parsed_from == 0 || parsed >= WORTH_RELEASING) {
            self.release_pages();
        }
    }

    /// Parses every record published since the last call.
    fn parse_published(&mut self) {
        let meta_len = view::published_meta_len(self.header_words());
        let words = self.words();
        let size = self.size() as u64;
        if !meta_len.is_multiple_of(8)
            || meta_len < self.parsed_len as u64
            || HEADER_SIZE as u64 + meta_len > size
        {
            self.corrupt = Some(LayoutError::BadAreaBounds {
                meta_len,
                slot_floor: self.header.slot_floor,
                file_size: size,
            });
            return;
        }
        let meta_len = meta_len as usize;
        if meta_len == self.parsed_len {
            return;
        }
        let mut bytes = Vec::with_capacity(meta_len - self.parsed_len);
        view::load_bytes(
            words,
            HEADER_SIZE + self.parsed_len,
            meta_len - self.parsed_len,
            &mut bytes,
        );
        let base = self.parsed_len;
        for parsed in parse_records(&bytes, base) {
            let result = parsed.and_then(|(record, end)| self.accept(record, end).map(|()| end));
            match result {
                Ok(end) => self.parsed_len = end,
                Err(e) => {
                    self.corrupt = Some(e);
                    break;
                }
            }
        }
    }

    /// Checks a record against what came before it and the file, and keeps it.
    fn accept(&mut self, record: Record, end: usize) -> Result<(), LayoutError> {
        let offset = self.parsed_len;
        let fail = |fault: RecordFault| LayoutError::BadRecord { offset, fault };
        match record {
            Record::Family(f) => {
                if self.family_index.contains_key(&f.id)
                    || self.refused.families.contains_key(&f.id)
                {
                    return Err(fail(RecordFault::FamilyIdTwice(f.id)));
                }
                if self.families.iter().any(|g| g.name == f.name)
                    || self.refused.families.values().any(|n| **n == *f.name)
                {
                    return Err(fail(RecordFault::FamilyNameTwice(f.name.as_str().into())));
                }
                let within = limits::check_family(&f.name, &f.label_names, &f.bounds)
                    .and_then(|()| limits::check_states(&f.name, &f.states));
                if let Err(why) = within {
                    self.refused.note(why.to_string());
                    self.refused.families.insert(f.id, f.name.into());
                    return Ok(());
                }
                self.family_index.insert(f.id, self.families.len());
                self.families.push(Arc::new(f));
            }
            Record::Folded(f) => {
                if !self.header.is_archive() {
                    return Err(fail(RecordFault::FoldedOutsideArchive));
                }
                self.folded.insert((f.instance_id, f.sequence));
            }
            Record::Part(p) => {
                if !self.header.is_archive() {
                    return Err(fail(RecordFault::PartOutsideArchive));
                }
                if self.parts.len() >= MAX_PARTS || self.parts.contains(&p.instance_id) {
                    return Err(fail(RecordFault::PartRepeated(p.instance_id)));
                }
                self.parts.push(p.instance_id);
            }
            Record::Exemplars(e) => {
                let words = exemplar_block_words(e.count as usize, e.slot_words as usize);
                let block_word =
                    (self.slots_within(e.block_offset, words as u64, end)).map_err(fail)?;
                let sequence = self.header.sequence;
                if e.series_sequence != sequence {
                    // A writer places slots in a later segment only (an archive never).
                    if e.series_sequence > sequence || self.header.is_archive() {
                        return Err(fail(RecordFault::ExemplarsOfLaterSegment(
                            e.series_sequence,
                        )));
                    }
                    let slot_word = u32::try_from(e.series_slot_offset / 8).map_err(|_| {
                        fail(RecordFault::ExemplarsOfNoSeries(e.series_slot_offset))
                    })?;
                    let foreign = ForeignExemplars {
                        sequence: e.series_sequence,
                        slot_word,
                        block_word,
                        count: e.count,
                        slot_words: e.slot_words,
                    };
                    let twice = (self.foreign_exemplars.iter())
                        .any(|f| (f.sequence, f.slot_word) == (foreign.sequence, slot_word));
                    if twice {
                        return Err(fail(RecordFault::ExemplarsTwice(e.series_slot_offset)));
                    }
                    self.foreign_exemplars.push(foreign);
                    return Ok(());
                }
                let local = u32::try_from(e.series_slot_offset / 8)
                    .ok()
                    .and_then(|w| self.series_by_slot_word(w));
                let Some(local) = local else {
                    // A series over the limits was left out, and its exemplars with it.
                    if self.refused.series > 0 {
                        return Ok(());
                    }
                    return Err(fail(RecordFault::ExemplarsOfNoSeries(e.series_slot_offset)));
                };
                let def = &self.families[self.series[local as usize].family as usize];
                let expected = exemplar_slots_of(def);
                if e.count != expected {
                    return Err(fail(RecordFault::ExemplarCountMismatch {
                        count: e.count,
                        expected,
                    }));
                }
                if self
                    .exemplars
                    .insert(local, (block_word, e.slot_words))
                    .is_some()
                {
                    return Err(fail(RecordFault::ExemplarsTwice(e.series_slot_offset)));
                }
            }
            Record::Series(s) => {
                let Some(&family) = self.family_index.get(&s.family_id) else {
                    if self.refused.families.contains_key(&s.family_id) {
                        self.refused.series += 1;
                        return Ok(());
                    }
                    return Err(fail(RecordFault::UndeclaredFamily(s.family_id)));
                };
                let def = Arc::clone(&self.families[family]);
                // An info series has its own labels after the family's, name and value pairs.
                let labels = match def.kind {
                    MetricKind::Info => check_info_labels(&def.label_names, &s.label_values),
                    _ => check_label_count(&def.label_names, &s.label_values),
                };
                labels.map_err(|e| fail(e.into()))?;
                let width = slot_words(def.kind, def.bounds.len()) as u64;
                let slot_word = self.slots_within(s.slot_offset, width, end).map_err(fail)?;
                // Only an archive holds per-process values, and only of `all` gauges, which
                // it must hold that way.
                let per_process = self.header.is_archive() && def.mode == Some(GaugeMode::All);
                if s.process.is_some() != per_process {
                    return Err(fail(if per_process {
                        RecordFault::MissingProcess(def.name.as_str().into())
                    } else {
                        RecordFault::UnexpectedProcess
                    }));
                }
                if !s.exact_parts.is_empty() {
                    let summed = match def.kind {
                        MetricKind::Gauge => def.mode == Some(GaugeMode::Sum),
                        _ => true,
                    };
                    if !(self.header.is_archive() && summed) {
                        return Err(fail(RecordFault::UnexpectedExactParts));
                    }
                }
                let within = match def.kind {
                    MetricKind::Info => limits::check_info_set(&def.label_names, &s.label_values),
                    _ => limits::check_label_set(&def.label_names, &s.label_values),
                };
                if let Err(why) = within {
                    self.refused
                        .note(format!("a series of {}: {why}", def.name));
                    self.refused.series += 1;
                    return Ok(());
                }
                if !s.exact_parts.is_empty() {
                    self.exact
                        .insert(self.series.len() as u32, s.exact_parts.into_boxed_slice());
                }
                if let Some(p) = s.process {
                    self.processes.insert(self.series.len() as u32, p);
                }
                self.series.push(LocalSeries {
                    family: family as u32,
                    slot_word,
                    created_unix_nanos: s.created_unix_nanos.unwrap_or(
                        if self.header.version == 1 {
                            self.header.created_unix_nanos
                        } else {
                            NOT_CREATED
                        },
                    ),
                });
                self.unlinked_labels.push(s.label_values);
            }
        }
        Ok(())
    }

    /// The word index of `words` slot words at byte `offset`, checked to lie between the end
    /// of the record that declares them (metadata offset `record_end`) and the end of the file.
    fn slots_within(
        &mut self,
        offset: u64,
        words: u64,
        record_end: usize,
    ) -> Result<u32, RecordFault> {
        let slots_end = offset.checked_add(words * 8);
        let in_bounds = offset >= (HEADER_SIZE + record_end) as u64
            && slots_end.is_some_and(|e| e <= self.size() as u64);
        if !in_bounds {
            return Err(RecordFault::SlotsOutside { offset, words });
        }
        let word =
            u32::try_from(offset / 8).map_err(|_| RecordFault::SlotOffsetTooLarge(offset))?;
        self.lowest_slot = self.lowest_slot.min(offset);
        Ok(word)
    }

    /// Bytes of the mapping a scrape's read leaves resident: from the lowest slot to the end
    /// of the file, from the start of its fault-around window (the kernel maps up to 64 KiB
    /// of neighbouring cached pages with each fault, and a writer's segment is allocated
    /// whole). What the resident budget counts, rather than the file's size: a writer's
    /// segment is mostly free space for later series, and its metadata pages are released
    /// after the first parse.
    pub(crate) fn slot_area_bytes(&self) -> usize {
        /// The kernel's default `fault_around_bytes`.
        const FAULT_AROUND: u64 = 64 * 1024;
        let first_page = self.lowest_slot / FAULT_AROUND * FAULT_AROUND;
        self.size().saturating_sub(first_page as usize)
    }

    /// The exemplar block of series `i`, if it has one in this segment.
    pub(crate) fn exemplar_slots(&self, i: u32) -> Option<ExemplarBlock<'_>> {
        let &(block_word, slot_words) = self.exemplars.get(&i)?;
        let def = &self.families[self.series[i as usize].family as usize];
        self.exemplar_block(block_word, exemplar_slots_of(def), slot_words)
    }

    /// The block of `count` exemplar slots of `slot_words` words from word `block_word`
    /// (validated when parsed).
    pub(crate) fn exemplar_block(
        &self,
        block_word: u32,
        count: u32,
        slot_words: u32,
    ) -> Option<ExemplarBlock<'_>> {
        let (first, count, width) = (block_word as usize, count as usize, slot_words as usize);
        let words = (self.words()).get(first..first + exemplar_block_words(count, width))?;
        let (index, slots) = words.split_at(count);
        Some(ExemplarBlock {
            index,
            slots,
            width,
        })
    }

    /// The local index of the counter or histogram series whose slots start at word
    /// `slot_word`, found by bisection: a writer places each series' slots below the
    /// previous one's. `None` if there is none (or the order is not a writer's).
    pub(crate) fn series_by_slot_word(&self, slot_word: u32) -> Option<u32> {
        let i = (self.series).partition_point(|s| s.slot_word > slot_word);
        let s = self.series.get(i).filter(|s| s.slot_word == slot_word)?;
        let def = &self.families[s.family as usize];
        (exemplar_slots_of(def) > 0).then_some(i as u32)
    }

    /// The slot words of series `i`.
    pub(crate) fn slots(&self, i: usize) -> &[AtomicU64] {
        let s = self.series[i];
        let def = &self.families[s.family as usize];
        let width = slot_words(def.kind, def.bounds.len());
        let first = s.slot_word as usize;
        &self.words()[first..first + width]
    }

    /// Drops this reader's page-table entries for the whole mapping, so the pages just read
    /// stop counting in its resident set. The pages themselves stay where the writer keeps
    /// them (the page cache of the file); the next read maps them again with a minor fault
    /// (the kernel maps neighbouring cached pages with it).
    pub(crate) fn release_pages(&self) {
        // An image lives only in this mapping: releasing its pages would lose it.
        if self.image {
            return;
        }
        // SAFETY: MADV_DONTNEED on a shared file mapping (images returned above) discards no
        // data: the pages belong to the file, and a later access maps the same contents again. The mapping is
        // read-only, so no write of this process is lost, and the references `words()`
        // hands out stay valid (they point into the same mapping, still mapped).
        let released = unsafe { self.map.unchecked_advise(UncheckedAdvice::DontNeed) };
        if let Err(e) = released {
            log::debug!("cannot release pages of {}: {e}", self.path.display());
        }
    }

    /// Series the writer could not place (final once the writer is dead).
    pub(crate) fn dropped_series(&self) -> u64 {
        self.final_dropped
            .unwrap_or_else(|| self.read_dropped_series())
    }

    fn read_dropped_series(&self) -> u64 {
        // SYNC POINT dropped-series: relaxed; a statistic.
        self.header_words()[shmetrics_layout::DROPPED_SERIES_WORD].load(Ordering::Relaxed)
    }

    /// Ordering key: oldest segment first. Decides whose definition of a family wins.
    pub(crate) fn age_key(&self) -> (u64, u64, u32) {
        (
            self.header.created_unix_nanos,
            self.header.instance_id,
            self.header.sequence,
        )
    }
}
