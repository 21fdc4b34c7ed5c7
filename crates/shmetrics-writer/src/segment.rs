//! One segment file of this process: creation (reserve, initialise, lock, then link into
//! the directory), and appending records and slots to it.

use shmetrics_layout::sync::AtomicU64;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use memmap2::{MmapOptions, MmapRaw};
use rustc_hash::FxHashMap;
use shmetrics_layout::fault::{self, Access, Watch};
use shmetrics_layout::image::{ImageBuilder, ImageError, ImageSink};
use shmetrics_layout::view::SlotBlock;
use shmetrics_layout::{
    HEADER_SIZE, SEGMENT_PREFIX, SEGMENT_SUFFIX, SLOT_FLOOR_WORD, SegmentIdentity, view,
};

use crate::error::{Error, Result, SegmentOp};

/// The span that [`Segment::alloc_slots_on_own_lines`] keeps a block's lines apart on: two
/// 64-byte cache lines, as x86 processors fetch lines in such pairs.
pub(crate) const OWN_LINES: usize = 128;

/// Words a block on lines of its own may cost beyond its own: the gaps before and after it.
pub(crate) const OWN_LINES_SLACK: usize = 2 * OWN_LINES / 8;

/// A mapped segment and the file whose lock marks this process alive. Shared by every
/// handle whose slots live in it, so the mapping and the lock outlive the registry if the
/// handles do.
pub(crate) struct SegmentMap {
    /// With `Options::guard_truncation`: the `SIGBUS` watch over `raw` (declared first:
    /// dropped before the mapping is unmapped).
    guard: Option<Watch>,
    raw: MmapRaw,
    /// The open segment file; holding it holds the exclusive `flock` that tells readers
    /// this process is alive. Replaced in a forked child (see `fork.rs`).
    pub(crate) lock: parking_lot::Mutex<File>,
}

impl SegmentMap {
    /// The whole segment as atomic words.
    pub(crate) fn words(&self) -> &[AtomicU64] {
        // SAFETY: `raw` is a shared read-write mapping of the whole file that lives as long
        // as `self`; mappings are page aligned and segment sizes are multiples of 8; every
        // process touches segment memory only through atomic word accesses (layout::view).
        unsafe { view::words_from_raw(self.raw.as_ptr(), self.raw.len()) }
    }

    /// Whether a page of the mapping faulted (the file was truncated) and was replaced by
    /// private memory (with `Options::guard_truncation` only).
    pub(crate) fn faulted(&self) -> bool {
        self.guard.as_ref().is_some_and(Watch::faulted)
    }

    /// Start address and length of the mapping.
    pub(crate) fn region(&self) -> (*mut u8, usize) {
        (self.raw.as_mut_ptr(), self.raw.len())
    }
}

/// Process-local bookkeeping for one segment.
pub(crate) struct Segment {
    pub(crate) map: Arc<SegmentMap>,
    pub(crate) path: PathBuf,
    pub(crate) size: usize,
    /// Bytes of published metadata (mirrors the header word).
    pub(crate) meta_len: usize,
    /// Lowest allocated slot byte offset (mirrors the header word).
    pub(crate) slot_floor: usize,
    /// Families declared in this segment, by name, with their ids here.
    pub(crate) declared: FxHashMap<String, u32>,
    /// False when the segment could not be re-created after a fork; nothing more is
    /// placed in it.
    pub(crate) writable: bool,
}

/// File name of segment `sequence` of a process.
pub(crate) fn segment_name(identity: &SegmentIdentity) -> String {
    format!(
        "{SEGMENT_PREFIX}{}-{:016x}-{}{SEGMENT_SUFFIX}",
        identity.pid, identity.instance_id, identity.sequence
    )
}

fn io_err<'a>(op: SegmentOp, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Creates a new segment file of `size` bytes and links it into `dir` only once it is fully
/// initialised and locked. `meta` is copied in as already-published metadata (used when a
/// forked child re-creates its parent's segments); pass `&[]` for a fresh segment.
///
/// Steps: create a `.tmp-` name exclusively (no symlink following), take the exclusive
/// lock, reserve every byte with `posix_fallocate` (so a full filesystem fails here, never
/// later with SIGBUS), write the metadata and then the header, map, and rename into place.
pub(crate) fn create_segment(
    dir: &Path,
    file_mode: u32,
    identity: SegmentIdentity,
    size: usize,
    meta: &[u8],
    slot_floor: usize,
) -> Result<(File, MmapRaw, PathBuf)> {
    let final_path = dir.join(segment_name(&identity));
    let tmp_path = dir.join(format!(".tmp-{}", segment_name(&identity)));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(file_mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp_path)
        .map_err(io_err(SegmentOp::Create, &tmp_path))?;
    let result = init_segment(&file, &tmp_path, identity, size, meta, slot_floor).and_then(|raw| {
        std::fs::rename(&tmp_path, &final_path).map_err(io_err(SegmentOp::Link, &final_path))?;
        Ok(raw)
    });
    match result {
        Ok(raw) => Ok((file, raw, final_path)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp_path);
            Err(e)
        }
    }
}

fn init_segment(
    file: &File,
    path: &Path,
    identity: SegmentIdentity,
    size: usize,
    meta: &[u8],
    slot_floor: usize,
) -> Result<MmapRaw> {
    // Locked first, so a temporary file without a lock holder is known to be abandoned.
    file.try_lock().map_err(|e| match e {
        std::fs::TryLockError::Error(e) => io_err(SegmentOp::Lock, path)(e),
        std::fs::TryLockError::WouldBlock => {
            io_err(SegmentOp::Lock, path)(io::Error::other("already locked"))
        }
    })?;
    match nix::fcntl::posix_fallocate(file, 0, size as libc::off_t) {
        Ok(()) => {}
        Err(nix::errno::Errno::ENOSPC) => {
            return Err(Error::NoSpace {
                path: path.to_owned(),
                size: size as u64,
            });
        }
        Err(e) => return Err(io_err(SegmentOp::Reserve, path)(e.into())),
    }
    let mut sink = FileSink { file, path, size };
    let mut image = ImageBuilder::new(&mut sink, identity);
    let written = image
        .encoded_records(meta)
        .and_then(|()| image.reserve_slots((size - slot_floor) / 8))
        .and_then(|_| image.finish());
    match written {
        Ok(_) => {}
        Err(ImageError::Sink(e)) => return Err(e),
        Err(e) => {
            // Sized by the caller, so not expected; kept as the source, not its message.
            let source = io::Error::new(io::ErrorKind::InvalidInput, e);
            return Err(io_err(SegmentOp::Write, path)(source));
        }
    }
    MmapOptions::new()
        .len(size)
        .map_raw(file)
        .map_err(io_err(SegmentOp::Map, path))
}

/// A segment file being created, written with `pwrite`; `posix_fallocate` reserved its
/// bytes, which read as zeros until written.
struct FileSink<'a> {
    file: &'a File,
    path: &'a Path,
    size: usize,
}

impl ImageSink for FileSink<'_> {
    type Error = Error;

    fn size(&self) -> usize {
        self.size
    }

    fn put_bytes(&mut self, offset: usize, bytes: &[u8]) -> Result<()> {
        let op = if offset == 0 {
            SegmentOp::WriteHeader
        } else {
            SegmentOp::WriteMetadata
        };
        self.file
            .write_all_at(bytes, offset as u64)
            .map_err(io_err(op, self.path))
    }
}

impl Segment {
    /// Creates a fresh, empty segment.
    pub(crate) fn create(
        dir: &Path,
        file_mode: u32,
        identity: SegmentIdentity,
        size: usize,
        guard_truncation: bool,
    ) -> Result<Self> {
        let (file, raw, path) = create_segment(dir, file_mode, identity, size, &[], size)?;
        let guard =
            guard_truncation.then(|| fault::watch(raw.as_ptr(), raw.len(), Access::ReadWrite));
        Ok(Self {
            map: Arc::new(SegmentMap {
                guard,
                raw,
                lock: parking_lot::Mutex::new(file),
            }),
            path,
            size,
            meta_len: 0,
            slot_floor: size,
            declared: FxHashMap::default(),
            writable: true,
        })
    }

    /// Releases the lock that tells readers this process is alive (`Registry::end_liveness`).
    pub(crate) fn unlock(&self) {
        if let Err(e) = self.map.lock.lock().unlock() {
            log::warn!("cannot unlock segment {}: {e}", self.path.display());
        }
    }

    /// Whether `record_bytes` of metadata plus `slot_words` words of slots still fit.
    pub(crate) fn fits(&self, record_bytes: usize, slot_words: usize) -> bool {
        let meta_end = HEADER_SIZE + self.meta_len + record_bytes;
        self.writable && meta_end + slot_words * 8 <= self.slot_floor
    }

    /// Reserves `words` slot words below the current floor and returns their byte offset.
    /// The caller has checked [`Segment::fits`].
    pub(crate) fn alloc_slots(&mut self, words: usize) -> usize {
        self.slot_floor -= words * 8;
        // SYNC POINT slot-floor: relaxed; informational only, readers bound-check each series.
        self.map.words()[SLOT_FLOOR_WORD].store(self.slot_floor as u64, Ordering::Relaxed);
        self.slot_floor
    }

    /// Reserves `words` slot words as [`Segment::alloc_slots`] does, on lines of their own:
    /// the block starts on a [`OWN_LINES`] boundary and shares no such line with another
    /// block, so threads writing different copies of a series never share a cache line
    /// (nor the line the processor fetches with it). The caller has checked
    /// [`Segment::fits`] for `words` + [`OWN_LINES_SLACK`].
    pub(crate) fn alloc_slots_on_own_lines(&mut self, words: usize) -> usize {
        self.slot_floor -= self.slot_floor % OWN_LINES;
        self.slot_floor -= words * 8;
        self.slot_floor -= self.slot_floor % OWN_LINES;
        // SYNC POINT slot-floor: relaxed, as in `alloc_slots`.
        self.map.words()[SLOT_FLOOR_WORD].store(self.slot_floor as u64, Ordering::Relaxed);
        self.slot_floor
    }

    /// A handle's share of `width` slot words at byte `offset`, keeping the mapping alive.
    pub(crate) fn slot_block(&self, offset: usize, width: usize) -> SlotBlock {
        let words = &self.map.words()[offset / 8..offset / 8 + width];
        // SAFETY: the words lie in the mapping that `self.map` owns and never moves or
        // unmaps while alive; all segment memory is accessed atomically.
        unsafe { SlotBlock::new(self.map.clone(), words) }
    }

    /// Appends one encoded record and publishes it. The caller has checked
    /// [`Segment::fits`].
    pub(crate) fn append_record(&mut self, bytes: &[u8]) {
        self.meta_len = view::append_records(self.map.words(), self.meta_len, bytes);
    }
}

#[cfg(test)]
mod tests {
    use shmetrics_layout::record::{FamilyRecord, Record, SeriesRecord, parse_records};
    use shmetrics_layout::{MetricKind, SegmentHeader};

    use super::*;

    /// What a forked child's segment starts as: the parent's records and slot floor, its own
    /// identity, zeroed slots.
    #[test]
    fn a_created_segment_holds_the_records_and_floor_it_was_given() {
        let dir = tempfile::tempdir().unwrap();
        let records = [
            Record::Family(FamilyRecord {
                id: 0,
                kind: MetricKind::Counter,
                mode: None,
                name: "c".into(),
                help: "C.".into(),
                label_names: vec![],
                bounds: vec![],
                states: Vec::new(),
            }),
            Record::Series(SeriesRecord {
                slot_offset: 8192 - 16,
                ..SeriesRecord::default()
            }),
        ];
        let meta: Vec<u8> = records.iter().flat_map(Record::encode).collect();
        let identity = SegmentIdentity {
            pid: 7,
            sequence: 1,
            instance_id: 9,
            start_time_ticks: 3,
            created_unix_nanos: 4,
        };
        let (_file, _map, path) =
            create_segment(dir.path(), 0o600, identity, 8192, &meta, 8192 - 16).unwrap();
        let bytes = std::fs::read(path).unwrap();
        let header = SegmentHeader::parse(&bytes, 8192).unwrap();
        let mut expected = SegmentHeader::new(8192, identity);
        expected.meta_len = meta.len() as u64;
        expected.slot_floor = 8192 - 16;
        assert_eq!(header, expected);
        let parsed: Vec<Record> = parse_records(&bytes[HEADER_SIZE..][..meta.len()], 0)
            .map(|r| r.unwrap().0)
            .collect();
        assert_eq!(parsed, records);
        assert!(bytes[HEADER_SIZE + meta.len()..].iter().all(|&b| b == 0));
    }
}
