//! Compaction: folds the segments of dead processes into one archive and removes their
//! files, so that neither the directory nor a scrape grows with every restarted worker.
//!
//! The protocol (also in `docs/concurrency.md`, "Compaction"):
//!
//! 1. Take `.shmetrics-compact.lock` (exclusive `flock`, never waited for): one compactor at
//!    a time; another one gets [`CompactError::Busy`].
//! 2. List the directory and probe liveness, as a scrape does. The inputs are the newest
//!    archive and every dead segment it does not already hold.
//! 3. Fold them with the merge rules (`Merger::fold_dead`): counters, histograms and
//!    summaries summed; gauges by mode (`live*` dropped: their processes are dead; `min`,
//!    `max`, `sum` folded; `mostrecent` keeps its time; `all` keeps one value per process).
//! 4. Write the new archive (a segment with `FLAG_ARCHIVE`, one generation newer, listing
//!    every segment it holds in `Folded` records) under a `.tmp-` name, `fsync` it, rename it
//!    over `shmetrics-archive.shm`, `fsync` the directory.
//! 5. Remove the folded segment files and `fsync` the directory.
//!
//! A reader ignores any segment the newest archive lists, so between steps 4 and 5 nothing
//! counts twice, and a reader that lists the directory after a file is gone necessarily
//! finds the archive that holds it (the rename precedes every removal). A compactor killed
//! at any point leaves either the old archive and all files (before the rename) or the new
//! archive and some files it lists (after it): the next compaction removes those files and
//! any stale temporary file.

use shmetrics_layout::sync::AtomicU64;
use std::convert::Infallible;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use shmetrics_layout::exemplar::exemplar_block_words;
use shmetrics_layout::image::{ImageBuilder, ImageSize, Slots, exemplar_block_width};
use shmetrics_layout::record::{
    ExemplarsRecord, FamilyRecord, FoldedRecord, PartRecord, ProcessOf, Record, SeriesFields,
};
use shmetrics_layout::{MAX_SEGMENT_SIZE, MetricKind, SEGMENT_SUFFIX, SegmentIdentity};

use crate::directory::{
    ALTERNATIVE_NAMES, Directory, Entry, PART_PREFIX, Purpose, ReaderError, Tracked,
    own_regular_file,
};
pub use crate::directory::{ARCHIVE_NAME, archive_names, part_name};
use crate::exact::{self, ExactSum};
use crate::merge::{Folded, FoldedFamily, FoldedValue, Merger, Source};
use crate::report::ScrapeReport;
use crate::snapshot::Exemplars;

/// File name of the compactors' lock (hidden: readers skip it).
pub const COMPACT_LOCK_NAME: &str = ".shmetrics-compact.lock";

/// Default of [`crate::Reader::set_archive_part_size`] and
/// [`Compactor::set_archive_part_size`]: 64 MiB.
pub const DEFAULT_ARCHIVE_PART_SIZE: usize = 64 << 20;

/// Longest wait between two attempts of a compaction that keeps failing.
const MAX_COMPACTION_BACKOFF: Duration = Duration::from_secs(3600);

/// The names of the compactors' lock, in order, as [`archive_names`]: the first that is a
/// regular file of this user, or that does not exist (then it is created), is the lock.
pub fn lock_names(euid: u32) -> Vec<String> {
    let mut names = vec![COMPACT_LOCK_NAME.to_owned()];
    names.extend((0..ALTERNATIVE_NAMES).map(|k| format!(".shmetrics-compact-u{euid}-{k}.lock")));
    names
}
/// Prefix of temporary files: a writer's segment being created, a compactor's archive
/// being written.
const TEMPORARY_PREFIX: &str = ".tmp-shmetrics-";
/// A temporary file unlocked and untouched for this long belongs to a process that died
/// while creating it (a writer holds its lock from the moment it opens it; a compactor holds
/// the compaction lock).
const STALE_TEMPORARY_AGE: Duration = Duration::from_secs(60);

/// What a compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Generation of the archive now in place (`None`: there is none, nothing was dead).
    pub generation: Option<u32>,
    /// Dead segments folded into the archive by this run.
    pub folded_segments: usize,
    /// Files removed: folded segments (also those of an earlier, interrupted run). Never an
    /// archive: the new one replaces the old by a rename, and a stray copy is left alone.
    pub removed_files: usize,
    /// Stale temporary files removed.
    pub removed_temporary: usize,
    /// Series in the archive.
    pub archived_series: usize,
    /// Series of dead segments left out because they declare their family differently from
    /// the definition in force (they were never scraped either).
    pub conflicting_series: usize,
}

/// Why a compaction failed. Nothing is lost: the directory is as before, or as after a
/// complete compaction that did not remove every folded file (which the next run does).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompactError {
    /// Another compactor holds the lock.
    #[error("another compactor holds {}", .0.display())]
    Busy(PathBuf),
    /// A file system operation failed.
    #[error("{}: {error}", .op.on(.path))]
    Io {
        /// What was being done.
        op: FileOp,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The error.
        #[source]
        error: io::Error,
    },
    /// The archive would exceed the largest segment size.
    #[error(
        "the archive would need {0} bytes, more than the largest segment ({max})",
        max = MAX_SEGMENT_SIZE
    )]
    TooLarge(u64),
    /// The file at the archive's name is this user's but not a readable archive: it is left
    /// alone (its counts may be worth recovering) and compaction stops until it is fixed or
    /// removed.
    #[error(
        "{} is not a readable archive (see the scrape's problems); move it away to let \
         compaction go on",
        .0.display()
    )]
    BadArchive(PathBuf),
    /// Every archive or lock name is taken by another user's file or by something that is
    /// not a regular file.
    #[error(
        "every name compaction may use is taken by another user:{}",
        .0.iter().map(|n| format!(" {}", n.display())).collect::<String>()
    )]
    NamesTaken(Vec<PathBuf>),
    /// Reading a segment to fold faulted (it was truncated meanwhile): nothing was written
    /// or removed; the next scrape drops that segment and the next compaction goes on.
    #[error(
        "{} could not be read while folding it (truncated?); nothing was changed",
        .0.display()
    )]
    Faulted(PathBuf),
}

/// A file system operation of a compaction, as [`CompactError::Io`] names it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileOp {
    /// Taking the compaction lock.
    Lock,
    /// Opening a file.
    Open,
    /// Reading a file's metadata.
    Stat,
    /// Creating a file.
    Create,
    /// Writing and syncing a file.
    Write,
    /// Renaming a file to this name.
    RenameTo(PathBuf),
    /// Sealing an archive part (making it read-only and syncing it).
    Seal,
    /// Removing a folded file.
    Remove,
    /// Syncing the directory.
    SyncDirectory,
}

impl FileOp {
    /// The operation done to `path`, in words: `create /dir/.tmp-...`,
    /// `rename /dir/.tmp-... to /dir/archive-...`.
    pub fn on(&self, path: &Path) -> String {
        let verb = match self {
            Self::Lock => "lock",
            Self::Open => "open",
            Self::Stat => "stat",
            Self::Create => "create",
            Self::Write => "write",
            Self::RenameTo(to) => return format!("rename {} to {}", path.display(), to.display()),
            Self::Seal => "seal",
            Self::Remove => "remove",
            Self::SyncDirectory => "sync directory",
        };
        format!("{verb} {}", path.display())
    }
}

fn io_err(op: FileOp, path: &Path) -> impl FnOnce(io::Error) -> CompactError {
    let path = path.to_path_buf();
    move |error| CompactError::Io { op, path, error }
}

/// Where a compaction stops early, to test that a compactor killed there loses and
/// double-counts nothing.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactStop {
    /// After writing and syncing the temporary archive, before the rename.
    BeforeRename,
    /// After removing this many folded files.
    AfterRemoving(usize),
}

/// Bounds an archive part size as [`crate::Reader::set_archive_part_size`] says.
pub(crate) fn clamp_part_size(bytes: usize) -> usize {
    bytes.clamp(1 << 20, MAX_SEGMENT_SIZE as usize)
}

/// Automatic compaction's timing: an attempt every interval, the wait doubled after each
/// failure in a row (up to an hour), so that a compaction that keeps failing is not retried
/// at full cost every interval.
#[derive(Debug, Default)]
pub(crate) struct Schedule {
    /// The interval and when the last attempt began (or the interval was set); `None`: off.
    interval: Option<(Duration, Instant)>,
    /// Attempts that failed in a row.
    failures: u32,
}

impl Schedule {
    /// Turns automatic compaction on (the first attempt `interval` from now) or off.
    pub(crate) fn set_interval(&mut self, interval: Option<Duration>) {
        self.interval = interval.map(|i| (i, Instant::now()));
    }

    /// Attempts that failed in a row (0 after a success).
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// How long after the last attempt the next one runs.
    fn wait(&self, interval: Duration) -> Duration {
        interval
            .saturating_mul(1 << self.failures.min(16))
            .min(MAX_COMPACTION_BACKOFF.max(interval))
    }

    /// How long until the next attempt is due (zero when it is); `None` when off.
    pub(crate) fn due_in(&self) -> Option<Duration> {
        let (interval, last) = self.interval?;
        Some(self.wait(interval).saturating_sub(last.elapsed()))
    }

    /// Whether an attempt is due; if so, it counts as begun now.
    pub(crate) fn begin_if_due(&mut self) -> bool {
        let Some((interval, last)) = self.interval else {
            return false;
        };
        if last.elapsed() < self.wait(interval) {
            return false;
        }
        self.interval = Some((interval, Instant::now()));
        true
    }

    /// Counts the attempt's `result` (finding another compactor at work is no failure) and
    /// logs what it did to `dir`, or why it failed.
    pub(crate) fn end(&mut self, dir: &Path, result: &Result<CompactReport, CompactError>) {
        match result {
            Ok(_) | Err(CompactError::Busy(_)) => self.failures = 0,
            Err(_) => self.failures = self.failures.saturating_add(1),
        }
        match result {
            Ok(r) if r.folded_segments > 0 || r.removed_files > 0 => log::info!(
                "compacted {}: {} dead segments folded into archive generation {}, {} files \
                 removed",
                dir.display(),
                r.folded_segments,
                r.generation.unwrap_or(0),
                r.removed_files
            ),
            Ok(_) | Err(CompactError::Busy(_)) => {}
            Err(e) => log::warn!(
                "compaction of {} failed: {e}; next attempt in {:?}",
                dir.display(),
                self.interval
                    .map_or(Duration::ZERO, |(interval, _)| self.wait(interval))
            ),
        }
    }
}

/// Compacts a directory on a schedule, beside a [`crate::Reader`] that scrapes it (as
/// `shmetrics serve` does, on a thread of its own so that no scrape waits for a
/// compaction). It reads only what compaction needs: segments' series once they are dead,
/// the archive and its parts; what it finds wrong with the files is left to the reader to
/// log and report, and its failures reach the reader's reports through
/// [`crate::Reader::follow_compactor`].
pub struct Compactor {
    directory: Directory,
    merger: Merger,
    part_size: usize,
    schedule: Schedule,
    handle: CompactorHandle,
    hook: Option<Box<dyn FnMut() + Send>>,
}

impl std::fmt::Debug for Compactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compactor")
            .field("dir", &self.directory.path())
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

impl Compactor {
    /// A compactor of `dir` compacting every `interval` (the first time `interval` from
    /// now), the wait doubled after each failure in a row (up to an hour).
    ///
    /// # Errors
    /// When `dir` is missing or not a directory.
    pub fn open(dir: impl AsRef<Path>, interval: Duration) -> Result<Self, ReaderError> {
        let mut schedule = Schedule::default();
        schedule.set_interval(Some(interval));
        Ok(Self {
            directory: Directory::open(dir.as_ref(), Purpose::Compact)?,
            // It never merges: nothing stays mapped for it.
            merger: Merger::new(0),
            part_size: DEFAULT_ARCHIVE_PART_SIZE,
            schedule,
            handle: CompactorHandle::default(),
            hook: None,
        })
    }

    /// As [`crate::Reader::set_archive_part_size`].
    pub fn set_archive_part_size(&mut self, bytes: usize) {
        self.part_size = clamp_part_size(bytes);
    }

    /// What this compactor shares with the threads beside it.
    pub fn handle(&self) -> CompactorHandle {
        self.handle.clone()
    }

    /// How long until the next compaction is due (zero when it is).
    pub fn due_in(&self) -> Duration {
        self.schedule.due_in().unwrap_or(Duration::ZERO)
    }

    /// Compacts if due and not stopped ([`CompactorHandle::stop`]): logs what it did or why
    /// it failed, and counts the failure in the handle. Returns whether it ran.
    pub fn compact_if_due(&mut self) -> bool {
        if self.handle.stopped() || !self.schedule.begin_if_due() {
            return false;
        }
        let result = self.compact();
        self.schedule.end(self.directory.path(), &result);
        // SYNC POINT compactor-status: relaxed; a statistic.
        self.handle
            .0
            .failures
            .store(self.schedule.failures(), Ordering::Relaxed);
        true
    }

    /// Compacts now, as [`crate::Reader::compact`] does; stops after the batch in progress
    /// once [`CompactorHandle::stop`] is called.
    ///
    /// # Errors
    /// As [`crate::Reader::compact`].
    pub fn compact(&mut self) -> Result<CompactReport, CompactError> {
        // No snapshot drops what faulted (as a reader's does), so each compaction does.
        self.directory.drop_faulted(&mut self.merger);
        let result = compact(
            &mut self.directory,
            &mut self.merger,
            self.part_size,
            Controls {
                stop: None,
                cancel: Some(&self.handle.0.stop),
                hook: self.hook.as_deref_mut().map(|h| h as _),
            },
        );
        // SYNC POINT compactor-status: relaxed, as above.
        self.handle
            .0
            .hidden_squatted
            .store(self.directory.hidden_squatted(), Ordering::Relaxed);
        result
    }

    /// Calls `hook` in every compaction once it holds the compactors' lock (tests hold a
    /// compaction there).
    #[doc(hidden)]
    pub fn set_hook(&mut self, hook: Box<dyn FnMut() + Send>) {
        self.hook = Some(hook);
    }
}

/// What a [`Compactor`] shares with the threads beside it: its failures and the names it
/// found taken, for a reader's reports ([`crate::Reader::follow_compactor`]), and a switch
/// that stops it.
#[derive(Clone, Debug, Default)]
pub struct CompactorHandle(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    /// Scheduled compactions that failed in a row.
    failures: AtomicU32,
    /// Names of the compactors' lock taken by others, found by the last compaction.
    hidden_squatted: AtomicUsize,
    /// Set by [`CompactorHandle::stop`].
    stop: AtomicBool,
}

impl CompactorHandle {
    /// Scheduled compactions that failed in a row (0 after a success); each failure
    /// doubles the wait before the next attempt.
    pub fn failures(&self) -> u32 {
        // SYNC POINT compactor-status: relaxed; a statistic.
        self.0.failures.load(Ordering::Relaxed)
    }

    /// Names of the compactors' lock (which no listing shows) that the last compaction
    /// found taken by another user or by something that is not a regular file.
    pub(crate) fn hidden_squatted(&self) -> usize {
        // SYNC POINT compactor-status: relaxed; a statistic.
        self.0.hidden_squatted.load(Ordering::Relaxed)
    }

    /// Stops the compactor: a compaction in progress stops after its batch (what it did is
    /// complete, the rest is left for later), and no other one starts.
    pub fn stop(&self) {
        // SYNC POINT compactor-stop: relaxed; a request, publishing nothing else.
        self.0.stop.store(true, Ordering::Relaxed);
    }

    fn stopped(&self) -> bool {
        // SYNC POINT compactor-stop: relaxed, as in `stop`.
        self.0.stop.load(Ordering::Relaxed)
    }
}

/// What a compaction may be told besides what to compact.
#[derive(Default)]
pub(crate) struct Controls<'a> {
    /// Where to stop early (tests of crash safety).
    pub(crate) stop: Option<CompactStop>,
    /// Set to stop after the batch in progress ([`CompactorHandle::stop`]).
    pub(crate) cancel: Option<&'a AtomicBool>,
    /// Called once the compactors' lock is held (tests hold a compaction there).
    pub(crate) hook: Option<&'a mut (dyn FnMut() + Send)>,
}

/// Compacts the directory: folds every dead process's segments into the archive and removes
/// their files (see the module docs and `docs/concurrency.md`), the dead segments' series
/// linked into `merger`'s index, the archive files at most `part_size` bytes.
pub(crate) fn compact(
    directory: &mut Directory,
    merger: &mut Merger,
    part_size: usize,
    controls: Controls<'_>,
) -> Result<CompactReport, CompactError> {
    Compaction {
        directory,
        merger,
        part_size,
        stop: controls.stop,
    }
    .run(controls.cancel, controls.hook)
}

/// One compaction of a directory.
struct Compaction<'a> {
    directory: &'a mut Directory,
    merger: &'a mut Merger,
    /// Largest archive file written (`set_archive_part_size`).
    part_size: usize,
    stop: Option<CompactStop>,
}

impl Compaction<'_> {
    fn run(
        &mut self,
        cancel: Option<&AtomicBool>,
        hook: Option<&mut (dyn FnMut() + Send)>,
    ) -> Result<CompactReport, CompactError> {
        self.directory.clear_squatted();
        let (lock, lock_path) = self.open_lock()?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(CompactError::Busy(lock_path)),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io_err(FileOp::Lock, &lock_path)(e));
            }
        }
        if let Some(hook) = hook {
            hook();
        }
        let mut report = CompactReport {
            removed_temporary: self.remove_stale_temporaries(),
            ..CompactReport::default()
        };
        let mut first = true;
        // SYNC POINT compactor-stop: relaxed; a request, publishing nothing else.
        while !cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            // See the directory as it is now, whatever the listing cache says.
            self.directory.forget_listing();
            self.directory
                .refresh(self.merger, &mut ScrapeReport::default());
            if first {
                first = false;
                report.removed_files += self.remove_orphan_parts();
            }
            match self.batch(&mut report)? {
                Batch::More => {}
                Batch::Done => break,
                Batch::Stopped => return Ok(report),
            }
        }
        drop(lock);
        Ok(report)
    }

    /// Folds the oldest dead segments, up to the archive part size of them, into the
    /// archive (sealing the archive as a part first when it would outgrow that size), then
    /// removes their files. Memory and writing stay bounded by the part size, however much
    /// dead data there is; the caller repeats until nothing is left.
    fn batch(&mut self, report: &mut CompactReport) -> Result<Batch, CompactError> {
        let stop = self.stop;
        let archive_path = self.archive_target()?;
        let directory = &*self.directory;
        let archive = directory.current_archive();
        let parts: Vec<&Tracked> = directory.tracked().filter(|t| t.part).collect();
        let held = |instance: u64, sequence: u32| {
            let id = (instance, sequence);
            archive.is_some_and(|a| a.seg.folded.contains(&id))
                || parts.iter().any(|p| p.seg.folded.contains(&id))
        };
        // Files folded by an earlier run that did not get to remove them, and dead ones.
        let mut leftovers: Vec<&Tracked> = Vec::new();
        let mut dead: Vec<&Tracked> = Vec::new();
        for t in directory.tracked() {
            let h = &t.seg.header;
            // Archives (the current one, its parts, strays) are never folded or removed here.
            if h.is_archive() {
                continue;
            }
            if held(h.instance_id, h.sequence) {
                leftovers.push(t);
            } else if !t.seg.live && t.seg.refused.is_empty() {
                // A segment with families or series over the limits keeps its file: what
                // was left out of the merge is never folded away.
                dead.push(t);
            }
        }
        dead.sort_by_key(|t| t.seg.age_key());
        let mut batch_bytes = 0usize;
        let batch_len = dead
            .iter()
            .take_while(|t| {
                let fits = batch_bytes == 0 || batch_bytes + t.seg.size() <= self.part_size;
                if fits {
                    batch_bytes += t.seg.size();
                }
                fits
            })
            .count();
        // A process's segments are folded together: exemplar slots of a series of a full
        // segment may lie in a later segment of the process, found by the series' segment.
        let processes: Vec<u64> = dead[..batch_len]
            .iter()
            .map(|t| t.seg.header.instance_id)
            .collect();
        let mut batch: Vec<&Tracked> = Vec::with_capacity(batch_len);
        let mut more = false;
        for (i, t) in dead.iter().enumerate() {
            if i < batch_len || processes.contains(&t.seg.header.instance_id) {
                batch.push(t);
            } else {
                more = true;
            }
        }
        let batch_bytes: usize = batch.iter().map(|t| t.seg.size()).sum();
        let mut remove: Vec<PathBuf> = leftovers.iter().map(|t| t.seg.path.clone()).collect();

        if !batch.is_empty() {
            let generation = archive.map_or(0, |a| a.seg.header.sequence.wrapping_add(1));
            let mut part_ids: Vec<u64> = archive.map(|a| a.seg.parts.clone()).unwrap_or_default();
            // Seal the archive as a part when it would outgrow the part size with this batch:
            // the new archive then holds the batch alone, and the sealed one never changes.
            let seal = archive.filter(|a| a.seg.size() + batch_bytes > self.part_size);
            if let Some(a) = seal {
                let id = a.seg.header.instance_id;
                self.seal_part(&archive_path, id)?;
                part_ids.push(id);
            }
            let mut sources: Vec<Source<'_>> = archive
                .filter(|_| seal.is_none())
                .into_iter()
                .chain(batch.iter().copied())
                .map(|t| Source {
                    seg: &t.seg,
                    links: &t.links,
                })
                .collect();
            let created = sources
                .iter()
                .map(|s| s.seg.header.created_unix_nanos)
                .min()
                .unwrap_or(0);
            let dropped = sources.iter().map(|s| s.seg.dropped_series()).sum();
            let folded_ids: Vec<(u64, u32)> = leftovers
                .iter()
                .chain(&batch)
                .map(|t| (t.seg.header.instance_id, t.seg.header.sequence))
                .collect();
            let folded = self.merger.fold_dead(&mut sources);
            // A source whose pages faulted read as zeros: never archive that (and never
            // remove its file).
            if let Some(s) = sources.iter().find(|s| s.seg.faulted()) {
                return Err(CompactError::Faulted(s.seg.path.clone()));
            }
            report.conflicting_series += folded.conflicting_series;
            report.archived_series = folded.families.iter().map(|f| f.series.len()).sum();
            let image = archive_image(&ArchiveContents {
                folded: &folded,
                folded_ids: &folded_ids,
                parts: &part_ids,
                generation,
                created,
                dropped,
            })?;
            drop(folded);
            self.publish_archive(&image, &archive_path, stop)?;
            report.generation = Some(generation);
            report.folded_segments += batch.len();
            if stop == Some(CompactStop::BeforeRename) {
                return Ok(Batch::Stopped);
            }
            remove.extend(batch.iter().map(|t| t.seg.path.clone()));
        } else {
            report.generation = archive.map(|a| a.seg.header.sequence);
        }

        for (i, path) in remove.iter().enumerate() {
            if stop == Some(CompactStop::AfterRemoving(i)) {
                return Ok(Batch::Stopped);
            }
            match std::fs::remove_file(path) {
                Ok(()) => report.removed_files += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(FileOp::Remove, path)(e)),
            }
        }
        if !remove.is_empty() {
            sync_dir(directory.path())?;
        }
        Ok(if more && !batch.is_empty() {
            Batch::More
        } else {
            Batch::Done
        })
    }

    /// Makes the archive at `archive` also the part `id` (a second name for the same file:
    /// it is immutable), so that the next archive can list it as a part. A part left by a
    /// run that stopped before its archive was renamed into place is reused.
    fn seal_part(&self, archive: &Path, id: u64) -> Result<(), CompactError> {
        let part = self.directory.path().join(part_name(id));
        match std::fs::hard_link(archive, &part) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !matches!(own_regular_file(&part, self.directory.euid()), Entry::Own) {
                    return Err(io_err(FileOp::Seal, &part)(e));
                }
            }
            // A file system without hard links: a copy, synced, serves as well.
            Err(_) => {
                let tmp = self
                    .directory
                    .path()
                    .join(format!("{TEMPORARY_PREFIX}part-{:016x}", random_u64()));
                let copied = std::fs::copy(archive, &tmp)
                    .and_then(|_| File::open(&tmp)?.sync_all())
                    .and_then(|()| std::fs::rename(&tmp, &part));
                if let Err(e) = copied {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(io_err(FileOp::Seal, &part)(e));
                }
            }
        }
        sync_dir(self.directory.path())
    }

    /// Removes archive parts the archive in place does not list: left by a run that stopped
    /// between sealing a part and renaming the archive that lists it. No archive ever in
    /// place listed them, so no reader uses them.
    fn remove_orphan_parts(&self) -> usize {
        let listed: Vec<u64> = self
            .directory
            .current_archive()
            .map(|t| t.seg.parts.clone())
            .unwrap_or_default();
        let Ok(entries) = std::fs::read_dir(self.directory.path()) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_prefix(PART_PREFIX)?.strip_suffix(SEGMENT_SUFFIX))
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            else {
                continue;
            };
            if listed.contains(&id)
                || !matches!(
                    own_regular_file(&entry.path(), self.directory.euid()),
                    Entry::Own
                )
            {
                continue;
            }
            if std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// Opens the compactors' lock: the first of [`lock_names`] that is this user's regular
    /// file, or that does not exist (created `0600`). Names taken by another user or by
    /// something else are skipped and reported, so no one else can hold or break our lock.
    fn open_lock(&mut self) -> Result<(File, PathBuf), CompactError> {
        let mut taken = Vec::new();
        for name in lock_names(self.directory.euid()) {
            let path = self.directory.path().join(&name);
            // Twice: a name created by another compactor of ours between our look and our
            // create is looked at again.
            for _ in 0..2 {
                match own_regular_file(&path, self.directory.euid()) {
                    Entry::Own => {
                        let file = OpenOptions::new()
                            .read(true)
                            .write(true)
                            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
                            .open(&path)
                            .map_err(io_err(FileOp::Open, &path))?;
                        // Still ours once open (the name could have been replaced meanwhile).
                        let meta = file.metadata().map_err(io_err(FileOp::Stat, &path))?;
                        if meta.is_file() && meta.uid() == self.directory.euid() {
                            return Ok((file, path));
                        }
                        break;
                    }
                    Entry::Missing => {
                        match OpenOptions::new()
                            .read(true)
                            .write(true)
                            .create_new(true)
                            .mode(0o600)
                            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                            .open(&path)
                        {
                            Ok(file) => return Ok((file, path)),
                            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                            Err(e) => return Err(io_err(FileOp::Create, &path)(e)),
                        }
                    }
                    Entry::Taken(why) => {
                        self.directory.report_squatted(&path, &why);
                        break;
                    }
                }
            }
            taken.push(path);
        }
        Err(CompactError::NamesTaken(taken))
    }

    /// The path the next archive is renamed to: the current archive's name (from the last
    /// listing), or the first free name of [`archive_names`].
    fn archive_target(&mut self) -> Result<PathBuf, CompactError> {
        let directory = &mut *self.directory;
        if let Some((k, _)) = directory.archive_entry() {
            let path = directory.path().join(&directory.archive_names()[k]);
            return match directory.current_archive() {
                Some(_) => Ok(path),
                None => Err(CompactError::BadArchive(path)),
            };
        }
        let mut taken = Vec::new();
        for k in 0..directory.archive_names().len() {
            let path = directory.path().join(&directory.archive_names()[k]);
            match own_regular_file(&path, directory.euid()) {
                Entry::Missing => return Ok(path),
                // Ours, but the listing did not see it: it appeared since; next time.
                Entry::Own => return Err(CompactError::BadArchive(path)),
                Entry::Taken(why) => {
                    directory.report_squatted(&path, &why);
                    taken.push(path);
                }
            }
        }
        Err(CompactError::NamesTaken(taken))
    }

    /// Writes `image` to a temporary file, syncs it, renames it to `archive` and syncs the
    /// directory (unless `stop` says to stop before the rename).
    fn publish_archive(
        &self,
        image: &[AtomicU64],
        archive: &Path,
        stop: Option<CompactStop>,
    ) -> Result<(), CompactError> {
        let tmp = self
            .directory
            .path()
            .join(format!("{TEMPORARY_PREFIX}archive-{:016x}", random_u64()));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(io_err(FileOp::Create, &tmp))?;
        let written = write_words(&mut file, image)
            .and_then(|()| file.sync_all())
            .map_err(io_err(FileOp::Write, &tmp));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        if stop == Some(CompactStop::BeforeRename) {
            return Ok(());
        }
        std::fs::rename(&tmp, archive).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_err(FileOp::RenameTo(archive.to_path_buf()), &tmp)(e)
        })?;
        sync_dir(self.directory.path())
    }

    /// Removes temporary files left by processes that died while creating them.
    fn remove_stale_temporaries(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(self.directory.path()) else {
            return 0;
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().starts_with(TEMPORARY_PREFIX) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            let old = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age >= STALE_TEMPORARY_AGE);
            if !meta.file_type().is_file() || meta.uid() != self.directory.euid() || !old {
                continue;
            }
            let Ok(file) = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(entry.path())
            else {
                continue;
            };
            // Unlocked: its creator is gone. Keep the lock while removing it.
            if file.try_lock().is_ok() && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

fn sync_dir(dir: &Path) -> Result<(), CompactError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(FileOp::SyncDirectory, dir))
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// What a new archive holds.
struct ArchiveContents<'a> {
    folded: &'a Folded,
    /// Segments whose values it holds.
    folded_ids: &'a [(u64, u32)],
    /// Its sealed parts.
    parts: &'a [u64],
    generation: u32,
    created: u64,
    dropped: u64,
}

/// Builds the archive file's words: `Folded` and `Part` records, then each family and its
/// series (`all` gauges one process series per process), values in slots at the end of the
/// file, the header last. The records are measured, then encoded once each, straight into
/// the words, which are the only copy of the file.
fn archive_image(c: &ArchiveContents<'_>) -> Result<Vec<AtomicU64>, CompactError> {
    let head = || {
        let folded = c.folded_ids.iter().map(|&(instance_id, sequence)| {
            Record::Folded(FoldedRecord {
                instance_id,
                sequence,
            })
        });
        let parts = c
            .parts
            .iter()
            .map(|&instance_id| Record::Part(PartRecord { instance_id }));
        folded.chain(parts)
    };
    let mut size = ImageSize::default();
    head().for_each(|r| size.record(r.encoded_len()));
    for family in &c.folded.families {
        size.record(family.def.encoded_len());
        let Ok(()) = archive_series(0, family, |series, slots, exemplars| {
            size.record(series.encoded_len());
            size.slots(slots.width());
            if let Some(exemplars) = exemplars {
                size.record(EXEMPLARS_RECORD_LEN);
                let slot_words = exemplar_block_width(exemplars);
                size.slots(exemplar_block_words(exemplars.len(), slot_words));
            }
            Ok::<_, Infallible>(())
        });
    }
    // Also for an image that outgrows its measure, which no archive does.
    let too_large = |_| CompactError::TooLarge(size.needed());
    let mut words: Vec<AtomicU64> = (0..size.file_size().map_err(too_large)? / 8)
        .map(|_| AtomicU64::new(0))
        .collect();
    let mut image = ImageBuilder::new(
        &mut words[..],
        SegmentIdentity {
            pid: 0,
            sequence: c.generation,
            instance_id: random_u64(),
            start_time_ticks: 0,
            created_unix_nanos: c.created,
        },
    );
    image.archive().dropped_series(c.dropped);
    let built = (|| {
        head().try_for_each(|r| image.record(&r))?;
        for (id, family) in c.folded.families.iter().enumerate() {
            let def = FamilyRecord {
                id: id as u32,
                ..(*family.def).clone()
            };
            image.record(&def)?;
            archive_series(def.id, family, |series, slots, exemplars| {
                let offset = image.series(series, slots)?;
                match exemplars {
                    Some(exemplars) => image.exemplars(offset, exemplars),
                    None => Ok(()),
                }
            })?;
        }
        image.finish()
    })();
    built.map_err(too_large)?;
    Ok(words)
}

/// Length of an exemplars record.
const EXEMPLARS_RECORD_LEN: usize = ExemplarsRecord {
    series_sequence: 0,
    series_slot_offset: 0,
    block_offset: 0,
    count: 0,
    slot_words: 0,
}
.encoded_len();

/// Calls `f` with each series of `family` (family id `id` in the archive) as the archive
/// stores it: its record's fields, its slot values and its exemplars.
fn archive_series<E>(
    id: u32,
    family: &FoldedFamily,
    mut f: impl FnMut(SeriesFields<'_>, Slots<'_>, Option<&Exemplars>) -> Result<(), E>,
) -> Result<(), E> {
    for folded in &family.series {
        let exemplars = folded.exemplars.as_ref();
        let series = SeriesFields {
            family_id: id,
            slot_offset: 0,
            label_values: &folded.label_values,
            created_unix_nanos: folded.created_unix_nanos,
            process: None,
            exact_parts: &[],
        };
        let exact = |exact_parts| SeriesFields {
            exact_parts,
            ..series
        };
        match &folded.value {
            FoldedValue::Sum(sum) if family.def.kind == MetricKind::Counter => {
                let (int, fraction, parts) = stored_sum(sum, true);
                f(exact(&parts), Slots::Counter { int, fraction }, exemplars)?;
            }
            FoldedValue::Sum(sum) => {
                let (_, value, parts) = stored_sum(sum, false);
                let slots = Slots::Gauge {
                    value,
                    timestamp: 0,
                };
                f(exact(&parts), slots, None)?;
            }
            &FoldedValue::Gauge { value, timestamp } => {
                f(series, Slots::Gauge { value, timestamp }, None)?;
            }
            FoldedValue::Histogram { buckets, sum } => {
                let (_, sum, parts) = stored_sum(sum, false);
                f(exact(&parts), Slots::Histogram { buckets, sum }, exemplars)?;
            }
            FoldedValue::PerProcess(list) => {
                for &(pid, created_unix_nanos, value) in list {
                    let process = Some(ProcessOf {
                        pid,
                        created_unix_nanos,
                    });
                    let series = SeriesFields { process, ..series };
                    let slots = Slots::Gauge {
                        value,
                        timestamp: 0,
                    };
                    f(series, slots, None)?;
                }
            }
        }
    }
    Ok(())
}

/// Writes `words` as the file's bytes, a chunk at a time.
fn write_words(file: &mut File, words: &[AtomicU64]) -> io::Result<()> {
    let mut chunk = Vec::with_capacity(64 << 10);
    for batch in words.chunks(8 << 10) {
        chunk.clear();
        for w in batch {
            // SYNC POINT counter-build: relaxed, as in `archive_image`.
            chunk.extend_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
        }
        file.write_all(&chunk)?;
    }
    Ok(())
}

/// How one compaction round ended.
enum Batch {
    /// More dead segments are left for another round.
    More,
    Done,
    /// Stopped where a test asked.
    Stopped,
}

/// How an archive stores an exact sum: the integer word (counters, when it fits), the float
/// word (the rest, rounded once) and, when one `f64` cannot hold that rest exactly, its
/// partials for an exact series record (the reader merges those instead of the float word).
fn stored_sum(sum: &ExactSum, with_int: bool) -> (u64, f64, Vec<f64>) {
    if let Some(special) = sum.special() {
        return (0, special, Vec::new());
    }
    let (int, parts) = if with_int {
        sum.split_int()
    } else {
        (0, sum.float_parts())
    };
    match parts[..] {
        [] => (int, 0.0, parts),
        [one] => (int, one, Vec::new()),
        _ => (int, exact::round(&parts), parts),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use shmetrics_layout::GaugeMode;

    use shmetrics_layout::record::{SeriesRecord, parse_records};
    use shmetrics_layout::{HEADER_SIZE, SegmentHeader};

    use super::*;
    use crate::merge::{FoldedFamily, FoldedSeries};

    /// FNV-1a of `bytes`: a fingerprint of an image to pin its bytes.
    pub(crate) fn fingerprint(bytes: impl IntoIterator<Item = u8>) -> u64 {
        bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    fn sum(values: &[f64]) -> ExactSum {
        let mut s = ExactSum::default();
        for &v in values {
            s.add(v);
        }
        s
    }

    fn family(
        kind: MetricKind,
        mode: Option<GaugeMode>,
        name: &str,
        bounds: &[f64],
    ) -> Arc<FamilyRecord> {
        Arc::new(FamilyRecord {
            id: 99,
            kind,
            mode,
            name: name.into(),
            help: format!("Help of {name}."),
            label_names: vec!["a".into()],
            bounds: bounds.to_vec(),
            states: Vec::new(),
        })
    }

    /// Every kind of archived value, the records an archive lists, and its header fields: the
    /// image's bytes (its random instance id aside) are those this version has always written.
    #[cfg(target_endian = "little")]
    #[test]
    fn archive_image_bytes_are_pinned() {
        // Counters', histograms' and summaries' series carry a creation time, gauges' not.
        let folded = |v: &str, value: FoldedValue| FoldedSeries {
            label_values: vec![v.to_owned()],
            created_unix_nanos: match value {
                FoldedValue::Gauge { .. } | FoldedValue::PerProcess(_) => None,
                _ => Some(1_700_000_000_000_000_000 + v.len() as u64),
            },
            exemplars: None,
            value,
        };
        let folded = Folded {
            families: vec![
                FoldedFamily {
                    def: family(MetricKind::Counter, None, "c", &[]),
                    series: vec![
                        folded("x", FoldedValue::Sum(sum(&[3.0, 0.25]))),
                        folded("y", FoldedValue::Sum(sum(&[0.1, 0.2, 1e-300]))),
                        folded("z", FoldedValue::Sum(sum(&[f64::INFINITY]))),
                    ],
                },
                FoldedFamily {
                    def: family(MetricKind::Gauge, Some(GaugeMode::Sum), "gs", &[]),
                    series: vec![folded("x", FoldedValue::Sum(sum(&[0.1, 0.7])))],
                },
                FoldedFamily {
                    def: family(MetricKind::Gauge, Some(GaugeMode::MostRecent), "gm", &[]),
                    series: vec![
                        folded(
                            "x",
                            FoldedValue::Gauge {
                                value: 2.5,
                                timestamp: 77,
                            },
                        ),
                        folded(
                            "y",
                            FoldedValue::Gauge {
                                value: -1.0,
                                timestamp: 0,
                            },
                        ),
                    ],
                },
                FoldedFamily {
                    def: family(MetricKind::Histogram, None, "h", &[1.0, 2.0]),
                    series: vec![folded(
                        "x",
                        FoldedValue::Histogram {
                            buckets: vec![1, 2, 3],
                            sum: sum(&[0.5, 1.5, 0.1, 0.2]),
                        },
                    )],
                },
                FoldedFamily {
                    def: family(MetricKind::Summary, None, "s", &[]),
                    series: vec![folded(
                        "x",
                        FoldedValue::Histogram {
                            buckets: vec![4],
                            sum: sum(&[4.5]),
                        },
                    )],
                },
                FoldedFamily {
                    def: family(MetricKind::Gauge, Some(GaugeMode::All), "ga", &[]),
                    series: vec![folded(
                        "x",
                        FoldedValue::PerProcess(vec![(10, 100, 1.5), (11, 200, 2.5)]),
                    )],
                },
            ],
            conflicting_series: 0,
        };
        let words = archive_image(&ArchiveContents {
            folded: &folded,
            folded_ids: &[(1, 0), (2, 3)],
            parts: &[77],
            generation: 3,
            created: 42,
            dropped: 5,
        })
        .unwrap();
        // The instance id (word 5) is random.
        words[5].store(0, Ordering::Relaxed);
        let bytes: Vec<u8> = words
            .iter()
            .flat_map(|w| w.load(Ordering::Relaxed).to_ne_bytes())
            .collect();
        let header = SegmentHeader::parse(&bytes, bytes.len() as u64).unwrap();
        assert_eq!(
            (bytes.len(), header.meta_len, header.slot_floor),
            (4096, 880, 3904)
        );
        let meta = &bytes[HEADER_SIZE..HEADER_SIZE + header.meta_len as usize];
        let records: Vec<Record> = parse_records(meta, 0).map(|r| r.unwrap().0).collect();
        let series = |f: fn(&SeriesRecord) -> bool| {
            records
                .iter()
                .filter(|r| matches!(r, Record::Series(s) if f(s)))
                .count()
        };
        assert_eq!(records.len(), 3 + 6 + 10);
        assert_eq!(series(|s| !s.exact_parts.is_empty()), 3);
        assert_eq!(series(|s| s.process.is_some()), 2);
        // Counters', `sum` gauges', histograms' and summaries' creation times are kept.
        assert_eq!(series(|s| s.created_unix_nanos.is_some()), 6);
        assert_eq!(fingerprint(bytes), 0x95d7_381d_9151_163f);
    }
}
