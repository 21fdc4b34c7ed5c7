//! The shmetrics reader: merges every segment of a metrics directory into one snapshot and
//! renders it as Prometheus text or OpenMetrics.
//!
//! ```no_run
//! use shmetrics_reader::{Format, PrefixFilter, Reader};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut reader = Reader::open("/tmp/metrics")?;
//! let filter = PrefixFilter::new(["vllm:", "lmcache:"]);
//! let report = reader.scrape(Format::Prometheus, &filter, true, &mut std::io::stdout())?;
//! eprintln!("{} live, {} dead segments", report.live_segments, report.dead_segments);
//! # Ok(()) }
//! ```
//!
//! The reader never takes a lock a writer waits for and never writes into a segment: it
//! maps segments read-only and probes the writer's `flock` with a non-blocking shared
//! attempt. Every byte it reads is validated; a bad segment is skipped and reported (in
//! [`ScrapeReport`], a log line once, and the `shmetrics_reader_*` self-metrics) while the
//! rest of the directory is scraped. Metadata is parsed once per segment and cached, so a
//! steady-state scrape only reads values and renders.
#![warn(missing_docs)]

pub mod compact;
pub mod exact;
mod filter;
pub mod inspect;
pub mod legacy;
mod merge;
pub mod render;
mod report;
mod segment;
mod self_metrics;
pub mod snapshot;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{self, Write};
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustc_hash::FxHashMap;
use shmetrics_layout::{SEGMENT_PREFIX, SEGMENT_SUFFIX};

pub use compact::{CompactError, CompactReport};
pub use filter::PrefixFilter;
pub use render::{Escaping, Format, SnapshotText};
pub use report::{Conflict, Problem, ScrapeReport, SkipReason};
pub use self_metrics::self_metrics;
use snapshot::Family;
pub use snapshot::Snapshot;

use merge::{DeadBaseline, Index, SegmentLinks, Source};

use segment::{Rejection, SegmentFile, open_segment};

/// Why a reader could not be opened.
#[derive(Debug)]
pub enum ReaderError {
    /// The directory does not exist.
    DirMissing(PathBuf),
    /// The path is not a directory.
    NotADirectory(PathBuf),
    /// Another I/O failure.
    Io(PathBuf, io::Error),
}

impl std::fmt::Display for ReaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DirMissing(p) => write!(f, "metrics directory {} does not exist", p.display()),
            Self::NotADirectory(p) => write!(f, "{} is not a directory", p.display()),
            Self::Io(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

impl std::error::Error for ReaderError {}

/// Default of [`Reader::set_resident_budget`]: 16 MiB of segment pages stay mapped between
/// scrapes.
pub const DEFAULT_RESIDENT_BUDGET: usize = 16 << 20;

/// Default of [`Reader::set_archive_part_size`]: 64 MiB.
pub const DEFAULT_ARCHIVE_PART_SIZE: usize = 64 << 20;

/// Longest wait between two attempts of a compaction that keeps failing.
const MAX_COMPACTION_BACKOFF: std::time::Duration = std::time::Duration::from_secs(3600);

/// A listing is trusted to be current only if it happened at least this long after the
/// directory's mtime; filesystems with coarse timestamps round within less than this.
const LISTING_TRUST_MARGIN: std::time::Duration = std::time::Duration::from_millis(50);

pub(crate) struct Tracked {
    seg: SegmentFile,
    links: SegmentLinks,
    seen: bool,
    /// A sealed part of the archive (a hidden file no listing shows): kept while the
    /// archive lists it.
    part: bool,
}

/// A `prometheus_client` `.db` file merged beside the segments (see `legacy`).
struct LegacyTracked {
    file: legacy::LegacyFile,
    links: SegmentLinks,
    seen: bool,
}

/// A file found unusable, and its size and times then: the verdict stands until one of them
/// changes (a rewrite, a `chmod` or `chown`). Transient failures are never kept here.
struct Rejected {
    path: PathBuf,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    rejection: Rejection,
    seen: bool,
}

/// A snapshot and what was found on the way.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    /// The merged families.
    pub snapshot: Snapshot,
    /// The text of the snapshot's series labels, kept across scrapes (see
    /// [`render::Exposition::text`]).
    pub text: SnapshotText,
    /// Counts, problems and conflicts.
    pub report: ScrapeReport,
}

/// Reads one metrics directory, caching parsed metadata between scrapes.
pub struct Reader {
    dir: PathBuf,
    euid: u32,
    segments: FxHashMap<u64, Tracked>,
    legacy: FxHashMap<u64, LegacyTracked>,
    rejected: FxHashMap<u64, Rejected>,
    index: Index,
    dead_baseline: DeadBaseline,
    /// When the directory was last listed, and its mtime then.
    listed: Option<(std::time::SystemTime, std::time::SystemTime)>,
    /// Entries skipped by the last listing, by reason.
    listed_skips: BTreeMap<SkipReason, usize>,
    logged: HashSet<(PathBuf, &'static str)>,
    render_buf: Vec<u8>,
    resident_budget: usize,
    /// Automatic compaction: the interval and when it last ran.
    compaction: Option<(std::time::Duration, std::time::Instant)>,
    /// Automatic compactions that failed in a row: each doubles the wait (up to an hour).
    compaction_failures: u32,
    /// Largest archive file a compaction writes (`set_archive_part_size`).
    pub(crate) archive_part_size: usize,
    /// The names the archive may have (`compact::archive_names`).
    archive_names: Vec<String>,
    /// The archive found by the last listing: the index in `archive_names` of the first name
    /// holding a regular file of this user, and that file's inode number.
    archive_entry: Option<(usize, u64)>,
    /// Names reserved for the archive or the compactors' lock that another user or a
    /// non-file holds.
    squatted: BTreeSet<PathBuf>,
    /// Set when a listing met a transient failure: the next scrape lists again.
    relist: bool,
    /// Set when segments or `.db` images went away: the index may hold series no one has
    /// any more (`merge::Index::collect_garbage`).
    index_garbage: bool,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// Opens a reader on `dir`.
    ///
    /// # Errors
    /// When `dir` is missing or not a directory.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, ReaderError> {
        let dir = dir.as_ref().to_owned();
        let euid = nix::unistd::geteuid().as_raw();
        match std::fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(ReaderError::NotADirectory(dir)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ReaderError::DirMissing(dir));
            }
            Err(e) => return Err(ReaderError::Io(dir, e)),
        }
        Ok(Self {
            dir,
            euid,
            segments: FxHashMap::default(),
            legacy: FxHashMap::default(),
            rejected: FxHashMap::default(),
            index: Index::default(),
            dead_baseline: DeadBaseline::default(),
            listed: None,
            listed_skips: BTreeMap::new(),
            logged: HashSet::new(),
            render_buf: Vec::new(),
            resident_budget: DEFAULT_RESIDENT_BUDGET,
            compaction: None,
            compaction_failures: 0,
            archive_part_size: DEFAULT_ARCHIVE_PART_SIZE,
            archive_names: compact::archive_names(euid),
            archive_entry: None,
            squatted: BTreeSet::new(),
            relist: false,
            index_garbage: false,
        })
    }

    /// Compacts the directory automatically (see [`Reader::compact`]): a snapshot taken at
    /// least `interval` after the last compaction (or after this call) runs one first.
    /// Failures are logged and retried after the next interval; a run that finds another
    /// compactor at work is skipped. `None` (the default of a library reader) turns it off.
    pub fn set_compaction_interval(&mut self, interval: Option<std::time::Duration>) {
        self.compaction = interval.map(|i| (i, std::time::Instant::now()));
    }

    /// Bounds what one compaction writes and holds in memory: the archive file stays below
    /// `bytes` (dead segments are folded in batches of at most that size, and an archive that
    /// would outgrow it is sealed as an immutable part, listed by the next archive), so a
    /// compaction's memory is a few times `bytes` beyond the reader's own, whatever the size
    /// of the dead data. Values below 1 MiB are raised to it, above 1 GiB (the largest
    /// segment) lowered to it. Default: [`DEFAULT_ARCHIVE_PART_SIZE`].
    pub fn set_archive_part_size(&mut self, bytes: usize) {
        self.archive_part_size = bytes.clamp(1 << 20, shmetrics_layout::MAX_SEGMENT_SIZE as usize);
    }

    /// How long after the last attempt the next automatic compaction runs: the interval,
    /// doubled after each failure in a row (up to an hour), so that a compaction that keeps
    /// failing is not retried at full cost every interval.
    fn compaction_wait(&self, interval: std::time::Duration) -> std::time::Duration {
        interval
            .saturating_mul(1 << self.compaction_failures.min(16))
            .min(MAX_COMPACTION_BACKOFF.max(interval))
    }

    fn compact_if_due(&mut self) {
        let Some((interval, last)) = self.compaction else {
            return;
        };
        if last.elapsed() < self.compaction_wait(interval) {
            return;
        }
        self.compaction = Some((interval, std::time::Instant::now()));
        let result = self.compact();
        match &result {
            Ok(_) | Err(CompactError::Busy(_)) => self.compaction_failures = 0,
            Err(_) => self.compaction_failures = self.compaction_failures.saturating_add(1),
        }
        match result {
            Ok(r) if r.folded_segments > 0 || r.removed_files > 0 => log::info!(
                "compacted {}: {} dead segments folded into archive generation {}, {} files \
                 removed",
                self.dir.display(),
                r.folded_segments,
                r.generation.unwrap_or(0),
                r.removed_files
            ),
            Ok(_) | Err(CompactError::Busy(_)) => {}
            Err(e) => log::warn!(
                "compaction of {} failed: {e}; next attempt in {:?}",
                self.dir.display(),
                self.compaction_wait(interval)
            ),
        }
    }

    /// Bounds the segment pages that stay mapped (and count in this process's resident set)
    /// between scrapes: live segments are read oldest first, and once `bytes` of them are
    /// kept, the pages of the rest are released after each read (`madvise(MADV_DONTNEED)`;
    /// the data stays in the writers' page cache, and the next scrape maps it again with
    /// minor faults). Dead segments and large metadata parses never keep pages. The default,
    /// [`DEFAULT_RESIDENT_BUDGET`], keeps a directory of a few hundred typical engines
    /// entirely mapped and bounds a huge one (128 processes × 10,000 series) to about
    /// 16 MiB of mapped pages; `usize::MAX` keeps everything mapped (fastest scrapes),
    /// 0 releases everything after every read (smallest resident set).
    pub fn set_resident_budget(&mut self, bytes: usize) {
        self.resident_budget = bytes;
    }

    /// The directory read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes a merged snapshot of the directory.
    pub fn snapshot(&mut self) -> Scrape {
        self.compact_if_due();
        // A segment whose pages faulted while it was read (truncated under the reader, or a
        // tmpfs that could not supply a page) is dropped and the snapshot taken again: what
        // was read from it is never used. Each retry drops at least one segment.
        const ATTEMPTS: usize = 4;
        let mut scrape = self.snapshot_once();
        for _ in 1..ATTEMPTS {
            if !self.drop_faulted() {
                break;
            }
            scrape = self.snapshot_once();
        }
        scrape
    }

    /// Drops every segment a fault was caught in (see `shmetrics_layout::fault`), rejecting
    /// it until its file changes again. Returns whether there was one.
    fn drop_faulted(&mut self) -> bool {
        let faulted: Vec<u64> = self
            .segments
            .iter()
            .filter(|(_, t)| t.seg.faulted())
            .map(|(&ino, _)| ino)
            .collect();
        for ino in &faulted {
            let Some(t) = self.segments.remove(ino) else {
                continue;
            };
            let meta = std::fs::symlink_metadata(&t.seg.path).ok();
            let error = shmetrics_layout::LayoutError::FaultedPage {
                mapped: t.seg.size() as u64,
                actual: meta.as_ref().map_or(0, |m| m.len()),
            };
            log::warn!("skipping {}: {error}", t.seg.path.display());
            if let Some(m) = meta {
                self.rejected.insert(
                    *ino,
                    Rejected {
                        path: t.seg.path.clone(),
                        len: m.len(),
                        mtime: (m.mtime(), m.mtime_nsec()),
                        ctime: (m.ctime(), m.ctime_nsec()),
                        rejection: Rejection::Bad(error),
                        seen: true,
                    },
                );
            }
        }
        if !faulted.is_empty() {
            self.index_garbage = true;
            self.dead_baseline = DeadBaseline::default();
        }
        !faulted.is_empty()
    }

    /// One snapshot: refresh, then merge.
    fn snapshot_once(&mut self) -> Scrape {
        let mut report = ScrapeReport {
            compaction_failures: self.compaction_failures,
            ..ScrapeReport::default()
        };
        self.refresh(&mut report);
        // The archive and its parts hold every dead segment they list as folded: those are
        // left out if a compactor has not removed them yet. Any other file claiming to be an
        // archive is a stray (reported by `refresh`) and is left out whole.
        let archive = self.current_archive().map(|t| &t.seg);
        let parts: Vec<&SegmentFile> = self
            .segments
            .values()
            .filter(|t| t.part)
            .map(|t| &t.seg)
            .collect();
        let held = |seg: &SegmentFile| {
            let id = (seg.header.instance_id, seg.header.sequence);
            archive.is_some_and(|a| a.folded.contains(&id))
                || parts.iter().any(|p| p.folded.contains(&id))
        };
        let mut sources: Vec<Source<'_>> = self
            .segments
            .values()
            .filter(|t| {
                if t.seg.header.is_archive() {
                    t.part || archive.is_some_and(|a| std::ptr::eq(a, &t.seg))
                } else {
                    !held(&t.seg)
                }
            })
            .map(|t| Source {
                seg: &t.seg,
                links: &t.links,
            })
            .chain(self.legacy.values().filter_map(|t| {
                t.file.seg.as_ref().map(|seg| Source {
                    seg,
                    links: &t.links,
                })
            }))
            .collect();
        let (snapshot, text) = merge::merge(
            &mut self.index,
            &mut sources,
            &mut report.conflicts,
            &mut self.dead_baseline,
            self.resident_budget,
        );
        for c in &report.conflicts {
            if self.logged.insert((PathBuf::from(&c.family), c.kind)) {
                log::warn!(
                    "conflicting definitions of {} ({}): {}",
                    c.family,
                    c.kind,
                    c.detail
                );
            }
        }
        report.series = snapshot.series_count();
        Scrape {
            snapshot,
            text,
            report,
        }
    }

    /// Takes a snapshot and renders it, filtered, into `out`; with `self_metrics`, the
    /// `shmetrics_reader_*` families are appended whatever the filter, except one whose name
    /// a kept family of the directory already has (that family is emitted, once). Names
    /// outside the classic character sets are escaped with underscores.
    ///
    /// # Errors
    /// Only errors of `out`.
    pub fn scrape(
        &mut self,
        format: Format,
        filter: &PrefixFilter,
        self_metrics: bool,
        out: &mut dyn Write,
    ) -> io::Result<ScrapeReport> {
        self.scrape_escaped(format, Escaping::default(), filter, self_metrics, out)
    }

    /// As [`Reader::scrape`], names escaped by `escaping`. Written to `out` a piece of
    /// [`render::CHUNK`] bytes at a time, through a buffer kept between scrapes: memory stays
    /// bounded however large the exposition, and a steady state allocates nothing.
    ///
    /// # Errors
    /// Only errors of `out`.
    pub fn scrape_escaped(
        &mut self,
        format: Format,
        escaping: Escaping,
        filter: &PrefixFilter,
        self_metrics: bool,
        out: &mut dyn Write,
    ) -> io::Result<ScrapeReport> {
        let (scrape, extra) = self.snapshot_with_extra(filter, self_metrics);
        let exposition = render::Exposition {
            snapshot: &scrape.snapshot,
            text: Some(&scrape.text),
            extra: &extra,
            format,
            filter,
            escaping,
        };
        let mut buf = std::mem::take(&mut self.render_buf);
        let mut cursor = render::Cursor::default();
        let written = loop {
            buf.clear();
            let done = exposition.render_some(&mut cursor, &mut buf, render::CHUNK);
            match out.write_all(&buf) {
                Ok(()) if done => break Ok(()),
                Ok(()) => {}
                Err(e) => break Err(e),
            }
        };
        self.render_buf = buf;
        written?;
        Ok(scrape.report)
    }

    /// As [`Reader::scrape_escaped`], the whole exposition appended to `out` with no
    /// intermediate copy: for a caller that keeps the whole body anyway (a cache, a test),
    /// where `out`'s memory grows with the exposition.
    pub fn scrape_into(
        &mut self,
        format: Format,
        escaping: Escaping,
        filter: &PrefixFilter,
        self_metrics: bool,
        out: &mut Vec<u8>,
    ) -> ScrapeReport {
        let (scrape, extra) = self.snapshot_with_extra(filter, self_metrics);
        render::Exposition {
            snapshot: &scrape.snapshot,
            text: Some(&scrape.text),
            extra: &extra,
            format,
            filter,
            escaping,
        }
        .render_some(&mut render::Cursor::default(), out, usize::MAX);
        scrape.report
    }

    /// A snapshot and, with `self_metrics`, the self-metric families to render after it
    /// ([`Snapshot::extra_families`]: a segment may declare a family under a self-metric's
    /// name, and no name is emitted twice).
    fn snapshot_with_extra(
        &mut self,
        filter: &PrefixFilter,
        self_metrics: bool,
    ) -> (Scrape, Vec<Family>) {
        let scrape = self.snapshot();
        if !self_metrics {
            return (scrape, Vec::new());
        }
        let own = self_metrics::self_metrics(&scrape.report);
        let (extra, _) = scrape.snapshot.extra_families(filter, own);
        (scrape, extra)
    }

    /// The archive: the tracked segment found by the last listing at the first archive name
    /// holding a file of this user, if it is one.
    pub(crate) fn current_archive(&self) -> Option<&Tracked> {
        let (_, ino) = self.archive_entry?;
        self.segments
            .get(&ino)
            .filter(|t| t.seg.header.is_archive())
    }

    /// Rescans the directory, opens new segments, drops vanished ones, probes liveness and
    /// parses new metadata.
    fn refresh(&mut self, report: &mut ScrapeReport) {
        match self.listing_needed() {
            Ok(false) => {}
            Ok(true) => self.list_directory(),
            Err(e) => {
                report.dir_error = Some(format!("{}: {e}", self.dir.display()));
                if self.logged.insert((self.dir.clone(), "dir_error")) {
                    log::error!("cannot read metrics directory {}: {e}", self.dir.display());
                }
            }
        }
        for (reason, n) in &self.listed_skips {
            *report.skipped.entry(*reason).or_insert(0) += n;
        }
        for t in self.segments.values_mut() {
            t.seg.probe_liveness();
            t.seg.refresh_metadata();
            self.index.link(&mut t.seg, &mut t.links);
            if t.seg.live {
                report.live_segments += 1;
            } else {
                report.dead_segments += 1;
            }
            report.dropped_series += t.seg.dropped_series();
            if let Some(e) = &t.seg.corrupt {
                let problem = Problem {
                    path: t.seg.path.clone(),
                    reason: e.reason(),
                    detail: format!("metadata after this point ignored: {e}"),
                };
                log_once(&mut self.logged, &problem);
                report.problems.push(problem);
            }
            if !t.seg.refused.is_empty() {
                let problem = Problem {
                    path: t.seg.path.clone(),
                    reason: "over_limit",
                    detail: t.seg.refused.describe(),
                };
                log_once(&mut self.logged, &problem);
                report.problems.push(problem);
            }
        }
        // Names of ours taken by others that the listing did not see (the compactors' lock
        // is hidden from listings).
        let squatted_hidden = self
            .squatted
            .iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."))
            })
            .count();
        if squatted_hidden > 0 {
            *report.skipped.entry(SkipReason::Squatted).or_insert(0) += squatted_hidden;
        }
        self.track_parts(report);
        let current = self.archive_entry.map(|(_, ino)| ino);
        for (&ino, t) in &self.segments {
            if t.seg.header.is_archive() && Some(ino) != current && !t.part {
                *report.skipped.entry(SkipReason::StrayArchive).or_insert(0) += 1;
                if self.logged.insert((t.seg.path.clone(), "stray_archive")) {
                    log::warn!(
                        "ignoring {}: it claims to be an archive but is not the one in use \
                         (a copy or a stray file); it is neither merged nor removed",
                        t.seg.path.display()
                    );
                }
            }
        }
        if let Some((k, _)) = self.archive_entry
            && self.current_archive().is_none()
        {
            let path = self.dir.join(&self.archive_names[k]);
            if self.logged.insert((path.clone(), "not_an_archive")) {
                log::warn!(
                    "{} is not a usable archive; compaction stops until it is moved away",
                    path.display()
                );
            }
        }
        self.refresh_legacy(report);
        if std::mem::take(&mut self.index_garbage) {
            self.collect_garbage();
        }
        for r in self.rejected.values() {
            match &r.rejection {
                Rejection::Skip(reason, _) => *report.skipped.entry(*reason).or_insert(0) += 1,
                Rejection::Bad(_) => report.bad_segments += 1,
            }
        }
        report
            .problems
            .extend(self.rejected.values().filter_map(|r| match &r.rejection {
                Rejection::Bad(e) => Some(Problem {
                    path: r.path.clone(),
                    reason: e.reason(),
                    detail: e.to_string(),
                }),
                Rejection::Skip(..) => None,
            }));
        report
            .problems
            .sort_by(|a, b| (a.reason, &a.path).cmp(&(b.reason, &b.path)));
    }

    /// Opens the archive's parts that are not open yet, and forgets those it no longer
    /// lists. A part is found by name (`.shmetrics-archive-part-<id>.shm`, never listed) and
    /// must be this user's regular file, an archive, with the instance id the archive names.
    fn track_parts(&mut self, report: &mut ScrapeReport) {
        let wanted: Vec<u64> = self
            .current_archive()
            .map(|t| t.seg.parts.clone())
            .unwrap_or_default();
        let before = self.segments.len();
        self.segments
            .retain(|_, t| !t.part || wanted.contains(&t.seg.header.instance_id));
        self.index_garbage |= self.segments.len() < before;
        for id in wanted {
            let open = self
                .segments
                .values()
                .any(|t| t.part && t.seg.header.instance_id == id);
            if open {
                continue;
            }
            let path = self.dir.join(compact::part_name(id));
            let opened = match open_segment(&path, self.euid) {
                Ok(seg) if seg.header.is_archive() && seg.header.instance_id == id => Ok(seg),
                Ok(_) => Err((
                    "bad_part",
                    "not the archive part its archive names".to_owned(),
                )),
                Err(Rejection::Skip(reason, detail)) => {
                    if reason.is_transient() {
                        self.relist = true;
                    }
                    Err(("missing_part", detail))
                }
                Err(Rejection::Bad(e)) => Err(("bad_part", e.to_string())),
            };
            match opened {
                Ok(mut seg) => {
                    let ino = std::fs::symlink_metadata(&path).map_or(u64::MAX - id, |m| m.ino());
                    let mut links = SegmentLinks::default();
                    seg.refresh_metadata();
                    self.index.link(&mut seg, &mut links);
                    report.dead_segments += 1;
                    self.segments.insert(
                        ino,
                        Tracked {
                            seg,
                            links,
                            seen: true,
                            part: true,
                        },
                    );
                }
                Err((reason, detail)) => {
                    let problem = Problem {
                        path,
                        reason,
                        detail: format!("its counts are missing from every scrape: {detail}"),
                    };
                    log_once(&mut self.logged, &problem);
                    report.problems.push(problem);
                }
            }
        }
    }

    /// Lets the index forget series no segment has any more.
    fn collect_garbage(&mut self) {
        let mut links: Vec<&mut SegmentLinks> = self
            .segments
            .values_mut()
            .map(|t| &mut t.links)
            .chain(self.legacy.values_mut().map(|t| &mut t.links))
            .collect();
        if self.index.collect_garbage(&mut links) {
            // Cached merge state is keyed on merged ids.
            self.dead_baseline = DeadBaseline::default();
        }
        // Log-once memory is bounded too: a file that keeps coming back may be logged again.
        if self.logged.len() > 10_000 {
            self.logged.clear();
        }
    }

    /// Re-reads every `.db` file (their values change in place) and links new series.
    fn refresh_legacy(&mut self, report: &mut ScrapeReport) {
        for t in self.legacy.values_mut() {
            match t.file.update() {
                Ok(rebuilt) => {
                    if rebuilt {
                        t.links = SegmentLinks::default();
                        self.index_garbage = true;
                    }
                    if let Some(seg) = t.file.seg.as_mut() {
                        self.index.link(seg, &mut t.links);
                    }
                    for problem in &t.file.left_out {
                        log_once(&mut self.logged, problem);
                    }
                    report.problems.extend(t.file.left_out.iter().cloned());
                }
                Err(e) => {
                    let problem = Problem {
                        path: t.file.path().to_owned(),
                        reason: e.reason(),
                        detail: format!("skipped: {e}"),
                    };
                    log_once(&mut self.logged, &problem);
                    report.problems.push(problem);
                }
            }
        }
    }

    /// Whether the directory must be listed again: its mtime changed since the last
    /// listing, or that listing was too close to the mtime to trust it (a coarse timestamp
    /// could hide a later change within the same tick).
    fn listing_needed(&mut self) -> io::Result<bool> {
        let meta = std::fs::metadata(&self.dir)?;
        let mtime = meta.modified()?;
        let trusted = self.listed.is_some_and(|(at, seen_mtime)| {
            seen_mtime == mtime
                && at
                    .duration_since(mtime)
                    .is_ok_and(|d| d >= LISTING_TRUST_MARGIN)
        });
        if trusted && !std::mem::take(&mut self.relist) {
            return Ok(false);
        }
        self.listed = Some((std::time::SystemTime::now(), mtime));
        Ok(true)
    }

    /// Lists the directory: opens new segments, forgets vanished ones.
    ///
    /// A listing is not atomic: it may return the archive's entry from before a compactor
    /// replaced it and miss the files that compactor removed afterwards, which the old
    /// archive does not hold. A compactor always renames the new archive into place before
    /// it removes anything, so a listing after which the archive we hold is still the one
    /// in place has seen every removed file's values somewhere; otherwise it is redone.
    fn list_directory(&mut self) {
        const ATTEMPTS: usize = 8;
        for attempt in 1..=ATTEMPTS {
            self.list_directory_once();
            if self.archive_is_current() {
                return;
            }
            log::debug!(
                "{}: archive replaced during listing {attempt}, listing again",
                self.dir.display()
            );
        }
        log::warn!(
            "{}: the archive kept changing over {ATTEMPTS} listings; this scrape may miss \
             processes compacted meanwhile",
            self.dir.display()
        );
    }

    /// Whether the archive in the directory now is the one the last listing found (or there
    /// is none and it found none): the first archive name holding a regular file of this
    /// user, by the same rule as the listing, so a name taken by another user or by a
    /// directory never makes the listing look stale.
    fn archive_is_current(&self) -> bool {
        let in_place = self.archive_names.iter().find_map(|name| {
            let m = std::fs::symlink_metadata(self.dir.join(name)).ok()?;
            (m.file_type().is_file() && m.uid() == self.euid).then(|| m.ino())
        });
        in_place == self.archive_entry.map(|(_, ino)| ino)
    }

    fn list_directory_once(&mut self) {
        self.archive_entry = None;
        for t in self.segments.values_mut() {
            t.seen = false;
        }
        for r in self.rejected.values_mut() {
            r.seen = false;
        }
        for t in self.legacy.values_mut() {
            t.seen = false;
        }
        let mut skipped = BTreeMap::new();
        match std::fs::read_dir(&self.dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    self.visit(&entry, &mut skipped);
                }
                let before = self.segments.len() + self.legacy.len();
                self.segments.retain(|_, t| t.seen || t.part);
                self.legacy.retain(|_, t| t.seen);
                self.rejected.retain(|_, r| r.seen);
                self.index_garbage |= self.segments.len() + self.legacy.len() < before;
            }
            Err(e) => {
                // Listed again next time; what was open stays open meanwhile.
                self.listed = None;
                log::debug!("cannot list {}: {e}", self.dir.display());
            }
        }
        self.listed_skips = skipped;
    }

    fn visit(&mut self, entry: &std::fs::DirEntry, skipped: &mut BTreeMap<SkipReason, usize>) {
        let ino = entry.ino();
        // The archive's names: the first holding our own regular file is the archive; one
        // taken by another user or by a non-file is skipped and reported.
        let name = entry.file_name();
        if let Some(k) = self.archive_names.iter().position(|n| *n.as_str() == *name) {
            match compact::own_regular_file(&entry.path(), self.euid) {
                compact::Entry::Own => {
                    if self.archive_entry.is_none_or(|(first, _)| k < first) {
                        self.archive_entry = Some((k, ino));
                    }
                }
                compact::Entry::Missing => return,
                compact::Entry::Taken(why) => {
                    if self.logged.insert((entry.path(), "squatted")) {
                        log::warn!(
                            "{} is {why}: not read, and compaction uses another name",
                            entry.path().display()
                        );
                    }
                    *skipped.entry(SkipReason::Squatted).or_insert(0) += 1;
                    return;
                }
            }
        }
        if let Some(t) = self.segments.get_mut(&ino) {
            let ctime = || {
                entry
                    .metadata()
                    .map(|m| (m.ctime(), m.ctime_nsec()))
                    .unwrap_or_default()
            };
            if t.seg.is_same_file(ctime) {
                t.seen = true;
                return;
            }
            // Our file was removed and this is a new one with the same inode number.
            self.segments.remove(&ino);
            self.index_garbage = true;
        }
        if let Some(t) = self.legacy.get_mut(&ino) {
            t.seen = true;
            return;
        }
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            return; // Segments being created, and hidden files.
        }
        let path = entry.path();
        let mut skip = |reason| {
            *skipped.entry(reason).or_insert(0) += 1;
        };
        let file_type = match entry.file_type() {
            Ok(t) => t,
            Err(_) => return skip(SkipReason::Unreadable),
        };
        if file_type.is_symlink() {
            return skip(SkipReason::Symlink);
        }
        if !file_type.is_file() {
            return skip(SkipReason::NotRegular);
        }
        if let Some(db) = legacy::parse_db_name(&name) {
            return match legacy::open_db(&path, db, self.euid) {
                Ok(file) => {
                    self.legacy.insert(
                        ino,
                        LegacyTracked {
                            file,
                            links: SegmentLinks::default(),
                            seen: true,
                        },
                    );
                }
                Err((reason, _)) => {
                    if reason.is_transient() {
                        self.relist = true;
                    }
                    skip(reason)
                }
            };
        }
        if !(name.starts_with(SEGMENT_PREFIX) && name.ends_with(SEGMENT_SUFFIX)) {
            return skip(SkipReason::ForeignFile);
        }
        let (len, mtime, ctime) = match entry.metadata() {
            Ok(m) => (
                m.len(),
                (m.mtime(), m.mtime_nsec()),
                (m.ctime(), m.ctime_nsec()),
            ),
            Err(e) => {
                let reason = SkipReason::of_io_error(&e);
                if reason.is_transient() {
                    self.relist = true;
                }
                return skip(reason);
            }
        };
        if let Some(r) = self.rejected.get_mut(&ino)
            && r.len == len
            && r.mtime == mtime
            && r.ctime == ctime
        {
            r.seen = true;
            return;
        }
        match open_segment(&path, self.euid) {
            Ok(seg) => {
                self.rejected.remove(&ino);
                self.segments.insert(
                    ino,
                    Tracked {
                        seg,
                        links: SegmentLinks::default(),
                        seen: true,
                        part: false,
                    },
                );
            }
            Err(Rejection::Skip(reason, detail)) if reason.is_transient() => {
                // Not a verdict about the file: counted, logged, and tried again at the next
                // scrape (which lists the directory again for it).
                self.relist = true;
                self.rejected.remove(&ino);
                log::warn!(
                    "cannot open {} for now ({}): {detail}; retrying at the next scrape",
                    path.display(),
                    reason.as_str()
                );
                skip(reason);
            }
            Err(rejection) => {
                let (reason, detail) = match &rejection {
                    Rejection::Skip(r, d) => (r.as_str(), d.clone()),
                    Rejection::Bad(e) => (e.reason(), e.to_string()),
                };
                log_once(
                    &mut self.logged,
                    &Problem {
                        path: path.clone(),
                        reason,
                        detail,
                    },
                );
                self.rejected.insert(
                    ino,
                    Rejected {
                        path,
                        len,
                        mtime,
                        ctime,
                        rejection,
                        seen: true,
                    },
                );
            }
        }
    }
}

fn log_once(logged: &mut HashSet<(PathBuf, &'static str)>, p: &Problem) {
    if logged.insert((p.path.clone(), p.reason)) {
        log::warn!("skipping {} ({}): {}", p.path.display(), p.reason, p.detail);
    }
}
