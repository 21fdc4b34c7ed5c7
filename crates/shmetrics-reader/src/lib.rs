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

mod census;
pub mod compact;
mod directory;
pub mod exact;
mod filter;
mod fold_pool;
pub mod inspect;
pub mod legacy;
mod merge;
pub mod process;
pub mod render;
mod report;
mod segment;
mod self_metrics;
mod shares;
pub mod snapshot;

use std::io::{self, Write};
use std::path::Path;

pub use census::{Census, census};
pub use compact::{
    CompactError, CompactReport, Compactor, CompactorHandle, DEFAULT_ARCHIVE_PART_SIZE, FileOp,
};
pub use directory::ReaderError;
pub use filter::PrefixFilter;
pub use render::{Escaping, Format, SnapshotText};
pub use report::{Conflict, ConflictKind, Problem, ProblemReason, ScrapeReport, SkipReason};
pub use self_metrics::self_metrics;
use snapshot::Family;
pub use snapshot::Snapshot;

use compact::{CompactStop, Controls, Schedule};
use directory::{Directory, Purpose};
use merge::Merger;

/// Default of [`Reader::set_resident_budget`]: 10 MiB of segment pages stay mapped between
/// scrapes: 160 segments whose slots lie in the last 64 KiB of their file (a vLLM engine's
/// do), 80 of the `gen` workload's 1,000 series with their 20-bucket histograms; a reader
/// of 128 processes × 10,000 series stays under 64 MiB.
pub const DEFAULT_RESIDENT_BUDGET: usize = 10 << 20;

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

/// Reads one metrics directory, caching parsed metadata between scrapes: the directory's
/// files (`directory.rs`), the merge's state (`merge.rs`) and compaction's settings
/// (`compact.rs`).
pub struct Reader {
    directory: Directory,
    merger: Merger,
    render_buf: Vec<u8>,
    /// Automatic compaction (`set_compaction_interval`).
    compaction: Schedule,
    /// Largest archive file a compaction writes (`set_archive_part_size`).
    archive_part_size: usize,
    /// The compactor whose figures this reader reports (`follow_compactor`).
    followed: Option<CompactorHandle>,
    /// Whether snapshots read the live writers' process metrics (`set_process_metrics`).
    process_metrics: bool,
    /// Whether OpenMetrics scrapes have `_created` samples (`set_created_series`).
    created_series: bool,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("dir", &self.directory.path())
            .field("segments", &self.directory.segment_count())
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// Opens a reader on `dir`.
    ///
    /// # Errors
    /// When `dir` is missing or not a directory.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, ReaderError> {
        Ok(Self {
            directory: Directory::open(dir.as_ref(), Purpose::Scrape)?,
            merger: Merger::new(DEFAULT_RESIDENT_BUDGET),
            render_buf: Vec::new(),
            compaction: Schedule::default(),
            archive_part_size: DEFAULT_ARCHIVE_PART_SIZE,
            followed: None,
            process_metrics: false,
            created_series: true,
        })
    }

    /// Compacts the directory automatically (see [`Reader::compact`]): a snapshot taken at
    /// least `interval` after the last compaction (or after this call) runs one first.
    /// Failures are logged and retried after the next interval; a run that finds another
    /// compactor at work is skipped. `None` (the default of a library reader) turns it off.
    /// (A [`Compactor`] compacts beside a reader instead, and no snapshot waits for it.)
    pub fn set_compaction_interval(&mut self, interval: Option<std::time::Duration>) {
        self.compaction.set_interval(interval);
    }

    /// Reports the compactions of the [`Compactor`] behind `handle` (running beside this
    /// reader on the same directory, as `serve` runs one) in this reader's scrapes:
    /// `compaction_failures` counts its failures instead of this reader's automatic
    /// compaction's, and the compactors' lock names it found taken count as `squatted`.
    pub fn follow_compactor(&mut self, handle: CompactorHandle) {
        self.followed = Some(handle);
    }

    /// Bounds what one compaction writes and holds in memory: the archive file stays below
    /// `bytes` (dead segments are folded in batches of at most that size, and an archive that
    /// would outgrow it is sealed as an immutable part, listed by the next archive), so a
    /// compaction's memory is a few times `bytes` beyond the reader's own, whatever the size
    /// of the dead data. Values below 1 MiB are raised to it, above 1 GiB (the largest
    /// segment) lowered to it. Default: [`DEFAULT_ARCHIVE_PART_SIZE`].
    pub fn set_archive_part_size(&mut self, bytes: usize) {
        self.archive_part_size = compact::clamp_part_size(bytes);
    }

    fn compact_if_due(&mut self) {
        if !self.compaction.begin_if_due() {
            return;
        }
        let result = self.compact();
        self.compaction.end(self.directory.path(), &result);
    }

    /// Compacts the directory: folds every dead process's segments into the archive and
    /// removes their files (see the module docs of `compact.rs` and `docs/concurrency.md`).
    /// Scrapes by this reader and others stay exact meanwhile, and the next scrape reads the
    /// archive instead of the removed files.
    ///
    /// # Errors
    /// [`CompactError::Busy`] when another compactor runs; I/O errors with what failed.
    pub fn compact(&mut self) -> Result<CompactReport, CompactError> {
        self.compact_stopping(None)
    }

    /// [`Reader::compact`], stopping where `stop` says (tests of crash safety).
    #[doc(hidden)]
    pub fn compact_stopping(
        &mut self,
        stop: Option<CompactStop>,
    ) -> Result<CompactReport, CompactError> {
        compact::compact(
            &mut self.directory,
            &mut self.merger,
            self.archive_part_size,
            Controls {
                stop,
                ..Controls::default()
            },
        )
    }

    /// Bounds the segment pages that stay mapped (and count in this process's resident set)
    /// between scrapes: live segments are read oldest first, and once `bytes` of them are
    /// kept, the pages of the rest are released after each read (`madvise(MADV_DONTNEED)`;
    /// the data stays in the writers' page cache, and the next scrape maps it again with
    /// minor faults). A segment counts what its read maps: its slots, from the kernel's
    /// 64 KiB fault-around window of the lowest one to the end of the file, not the free
    /// space a writer keeps for later series. Dead segments and large metadata parses never
    /// keep pages. The default, [`DEFAULT_RESIDENT_BUDGET`], keeps a directory of a hundred
    /// typical engines entirely mapped and bounds a huge one (128 processes × 10,000
    /// series) to about 10 MiB of mapped pages; `usize::MAX` keeps everything mapped
    /// (fastest scrapes), 0 releases everything after every read (smallest resident set).
    pub fn set_resident_budget(&mut self, bytes: usize) {
        self.merger.set_resident_budget(bytes);
    }

    /// Lets a snapshot fold the live segments on up to `threads` threads (1, the default of
    /// a library reader: only the calling thread; 0 counts as 1). The further threads
    /// (named `shmetrics-fold`) are started when a snapshot first needs them (one of fewer
    /// live segments uses fewer) and kept, blocked between snapshots, until the count
    /// changes (1 ends them) or the reader is dropped; a forked child starts its own. Each takes, when it runs, the back half of
    /// what the busiest thread has left (at least 2 MiB of slots), and the runs of segments
    /// are joined in the processes' age order, so the merged values are exactly those of
    /// one thread; a thread the system starts late takes only what is left, and none if the
    /// calling thread is done by then (a snapshot never waits for a thread to wake); a directory
    /// under 4 MiB of slots stays on one thread, where sharing it would cost more than it
    /// saves. Each further thread holds 72 bytes per merged series of its own until the
    /// join, and they fold only while that stays under 32 MiB in all (a directory of more
    /// than about 466,000 merged series folds on one thread).
    pub fn set_fold_threads(&mut self, threads: usize) {
        self.merger.set_fold_threads(threads);
    }

    /// Sets the fewest bytes of slots a fold thread takes (2 MiB; 0: any directory is
    /// shared by as many threads as it has segments, up to those asked for: tests of the
    /// parallel fold).
    #[doc(hidden)]
    pub fn set_fold_group_min_bytes(&mut self, bytes: usize) {
        self.merger.set_fold_group_min_bytes(bytes);
    }

    /// Makes each snapshot's calling thread wait for every fold thread to take its share of
    /// the segments before it folds its own, so that every thread folds a run whatever the
    /// system's timing (tests of the join; otherwise a thread that starts late takes less).
    #[doc(hidden)]
    pub fn set_fold_threads_in_step(&mut self, in_step: bool) {
        self.merger.set_fold_threads_in_step(in_step);
    }

    /// Whether each snapshot reads the process metrics of the live writers from `/proc`
    /// ([`process`]: `process_cpu_seconds_total`, memory, open and maximum file descriptors,
    /// start time, each with a `pid` label), rendered beside the merged families whatever
    /// the prefix filter. Off by default.
    pub fn set_process_metrics(&mut self, on: bool) {
        self.process_metrics = on;
    }

    /// Whether OpenMetrics scrapes have a `_created` sample for each counter, histogram and
    /// summary series: the oldest creation time of the series among the processes that have
    /// it (dead and compacted ones included), so a merged counter shows one stable time.
    /// On by default, as prometheus_client; its `PROMETHEUS_DISABLE_CREATED_SERIES` is for
    /// the caller to map here. The text format never has them.
    pub fn set_created_series(&mut self, on: bool) {
        self.created_series = on;
    }

    /// The directory read.
    pub fn dir(&self) -> &Path {
        self.directory.path()
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
            if !self.directory.drop_faulted(&mut self.merger) {
                break;
            }
            scrape = self.snapshot_once();
        }
        scrape
    }

    /// One snapshot: refresh, then merge.
    fn snapshot_once(&mut self) -> Scrape {
        let mut report = ScrapeReport {
            compaction_failures: self
                .followed
                .as_ref()
                .map_or(self.compaction.failures(), CompactorHandle::failures),
            ..ScrapeReport::default()
        };
        self.directory.refresh(&mut self.merger, &mut report);
        if let Some(taken) = self.followed.as_ref().map(CompactorHandle::hidden_squatted)
            && taken > 0
        {
            *report.skipped.entry(SkipReason::Squatted).or_insert(0) += taken;
        }
        let mut sources = self.directory.sources();
        let (snapshot, text) = self.merger.merge(&mut sources, &mut report);
        for c in &report.conflicts {
            self.directory.log().conflict(c);
        }
        report.series = snapshot.series_count();
        if self.process_metrics {
            report.processes = Some(process::read(&report.live_writers));
        }
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
        let written = exposition(
            &scrape,
            &extra,
            format,
            filter,
            escaping,
            self.created_series,
        )
        .write_through(out, &mut self.render_buf);
        written.map(|()| scrape.report)
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
        let created = self.created_series;
        exposition(&scrape, &extra, format, filter, escaping, created).render_some(
            &mut render::Cursor::default(),
            out,
            usize::MAX,
        );
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
        let mut own = process::families(&scrape.report);
        if self_metrics {
            own.extend(self_metrics::self_metrics(&scrape.report));
        }
        if own.is_empty() {
            return (scrape, own);
        }
        let (extra, _) = scrape.snapshot.extra_families(filter, own);
        (scrape, extra)
    }
}

/// What a reader's scrape shows: `scrape` with its label texts, then `extra`.
fn exposition<'a>(
    scrape: &'a Scrape,
    extra: &'a [Family],
    format: Format,
    filter: &'a PrefixFilter,
    escaping: Escaping,
    created: bool,
) -> render::Exposition<'a> {
    render::Exposition {
        snapshot: &scrape.snapshot,
        text: Some(&scrape.text),
        extra,
        format,
        filter,
        escaping,
        created,
    }
}
