//! The metrics directory as a reader sees it: its listing, the segment files and
//! `prometheus_client` `.db` files tracked from one listing to the next, the files found
//! unusable, the archive (found by name) and its parts, and the writers' liveness.
//!
//! [`Directory::refresh`] brings it up to date and links what is new into a [`Merger`]'s
//! index; a scrape merges [`Directory::sources`] (`lib.rs`), a compaction folds its dead
//! segments (`compact.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustc_hash::FxHashMap;
use shmetrics_layout::{SEGMENT_PREFIX, SEGMENT_SUFFIX};

use crate::legacy;
use crate::merge::{Merger, SegmentLinks, Source};
use crate::report::{LogOnce, Problem, ProblemReason, ScrapeReport, SkipReason};
use crate::segment::{Rejection, SegmentFile, open_segment};

/// Why a reader could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReaderError {
    /// The directory does not exist.
    #[error("metrics directory {} does not exist", .0.display())]
    DirMissing(PathBuf),
    /// The path is not a directory.
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// Another I/O failure.
    #[error("{path}: {source}", path = .0.display(), source = .1)]
    Io(PathBuf, #[source] io::Error),
}

/// File name of the archive.
pub const ARCHIVE_NAME: &str = "shmetrics-archive.shm";

/// Per-user names tried, in order, when the fixed archive or lock name is taken by another
/// user's file or by something that is not a regular file.
pub(crate) const ALTERNATIVE_NAMES: usize = 4;

/// The names the archive may have, in order: [`ARCHIVE_NAME`], then per-user names. The
/// archive is the first of them that holds a regular file of this user; a compactor that
/// finds none writes the first one that is free. An entry at one of these names that belongs
/// to another user, or is not a regular file, is squatting: skipped, reported, never renamed
/// over or removed.
pub fn archive_names(euid: u32) -> Vec<String> {
    let mut names = vec![ARCHIVE_NAME.to_owned()];
    names.extend((0..ALTERNATIVE_NAMES).map(|k| format!("shmetrics-archive-u{euid}-{k}.shm")));
    names
}

/// Prefix of archive parts' file names.
pub(crate) const PART_PREFIX: &str = ".shmetrics-archive-part-";

/// The file name of the archive part with instance id `id` (hidden: no listing shows it;
/// only its archive's part record leads to it).
pub fn part_name(id: u64) -> String {
    format!("{PART_PREFIX}{id:016x}.shm")
}

/// What is at a name compaction may use.
pub(crate) enum Entry {
    Missing,
    /// A regular file of this user.
    Own,
    /// Anything else, and why (for the log).
    Taken(String),
}

/// Looks at `path` without following a link.
pub(crate) fn own_regular_file(path: &Path, euid: u32) -> Entry {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Entry::Missing,
        Err(e) => Entry::Taken(format!("not examinable ({e})")),
        Ok(m) if !m.file_type().is_file() => Entry::Taken("not a regular file".into()),
        Ok(m) if m.uid() != euid => Entry::Taken(format!("owned by uid {}", m.uid())),
        Ok(_) => Entry::Own,
    }
}

/// A listing is trusted to be current only if it happened at least this long after the
/// directory's mtime; filesystems with coarse timestamps round within less than this.
const LISTING_TRUST_MARGIN: std::time::Duration = std::time::Duration::from_millis(50);

/// A segment file (or archive part) being followed, and its links into the merge index.
pub(crate) struct Tracked {
    pub(crate) seg: SegmentFile,
    pub(crate) links: SegmentLinks,
    seen: bool,
    /// A sealed part of the archive (a hidden file no listing shows): kept while the
    /// archive lists it.
    pub(crate) part: bool,
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

/// What a directory is read for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Scrapes (and compactions by the same reader): every file and series, problems
    /// logged.
    Scrape,
    /// Compactions only, beside a reader that scrapes (`compact::Compactor`): live
    /// segments' series are parsed once they are dead, `.db` files are not read (neither
    /// is ever folded), and what the reader reports too is not logged.
    Compact,
}

/// One metrics directory and the files in it, kept between listings.
pub(crate) struct Directory {
    path: PathBuf,
    euid: u32,
    purpose: Purpose,
    segments: FxHashMap<u64, Tracked>,
    legacy: FxHashMap<u64, LegacyTracked>,
    rejected: FxHashMap<u64, Rejected>,
    /// When the directory was last listed, and its mtime then.
    listed: Option<(std::time::SystemTime, std::time::SystemTime)>,
    /// Entries skipped by the last listing, by reason.
    listed_skips: BTreeMap<SkipReason, usize>,
    logged: LogOnce,
    /// The names the archive may have ([`archive_names`]).
    archive_names: Vec<String>,
    /// The archive found by the last listing: the index in `archive_names` of the first name
    /// holding a regular file of this user, and that file's inode number.
    archive_entry: Option<(usize, u64)>,
    /// Names reserved for the archive or the compactors' lock that another user or a
    /// non-file holds.
    squatted: BTreeSet<PathBuf>,
    /// Set when a listing met a transient failure: the next refresh lists again.
    relist: bool,
    /// Set when segments or `.db` images went away: the index may hold series no one has
    /// any more (`Merger::collect_garbage`).
    gone: bool,
}

impl Directory {
    /// Opens `path` for `purpose`.
    ///
    /// # Errors
    /// When `path` is missing or not a directory.
    pub(crate) fn open(path: &Path, purpose: Purpose) -> Result<Self, ReaderError> {
        let path = path.to_owned();
        let euid = nix::unistd::geteuid().as_raw();
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(ReaderError::NotADirectory(path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ReaderError::DirMissing(path));
            }
            Err(e) => return Err(ReaderError::Io(path, e)),
        }
        Ok(Self {
            path,
            euid,
            purpose,
            segments: FxHashMap::default(),
            legacy: FxHashMap::default(),
            rejected: FxHashMap::default(),
            listed: None,
            listed_skips: BTreeMap::new(),
            logged: match purpose {
                Purpose::Scrape => LogOnce::default(),
                Purpose::Compact => LogOnce::quiet(),
            },
            archive_names: archive_names(euid),
            archive_entry: None,
            squatted: BTreeSet::new(),
            relist: false,
            gone: false,
        })
    }

    /// The directory's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The user whose files are read.
    pub(crate) fn euid(&self) -> u32 {
        self.euid
    }

    /// Segment files (and archive parts) tracked.
    pub(crate) fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The segment files and archive parts tracked.
    pub(crate) fn tracked(&self) -> impl Iterator<Item = &Tracked> {
        self.segments.values()
    }

    /// The names the archive may have ([`archive_names`]).
    pub(crate) fn archive_names(&self) -> &[String] {
        &self.archive_names
    }

    /// The archive found by the last listing: the index of its name in
    /// [`Directory::archive_names`] and its inode number (a file of this user, which may not
    /// be a usable archive: see [`Directory::current_archive`]).
    pub(crate) fn archive_entry(&self) -> Option<(usize, u64)> {
        self.archive_entry
    }

    /// The log of this directory's problems, each written once.
    pub(crate) fn log(&mut self) -> &mut LogOnce {
        &mut self.logged
    }

    /// Makes the next refresh list the directory, whatever the listing cache says.
    pub(crate) fn forget_listing(&mut self) {
        self.listed = None;
    }

    /// Forgets the names found taken (a compaction looks at them again).
    pub(crate) fn clear_squatted(&mut self) {
        self.squatted.clear();
    }

    /// Logs (once) that `path`, a name compaction may use, is taken, and counts it.
    pub(crate) fn report_squatted(&mut self, path: &Path, why: &str) {
        // A name no listing shows (the compactors' lock) is this compactor's to report, even
        // beside a reader.
        let first = if is_hidden(path) {
            self.logged.first_of_own(path.to_owned(), "squatted")
        } else {
            self.logged.first(path.to_owned(), "squatted")
        };
        if first {
            log::warn!(
                "{} is {why}: compaction will not use that name and tries the next one",
                path.display()
            );
        }
        self.squatted.insert(path.to_owned());
    }

    /// Names of ours taken by others that no listing shows (the compactors' lock).
    pub(crate) fn hidden_squatted(&self) -> usize {
        self.squatted.iter().filter(|p| is_hidden(p)).count()
    }

    /// The archive: the tracked segment found by the last listing at the first archive name
    /// holding a file of this user, if it is one.
    pub(crate) fn current_archive(&self) -> Option<&Tracked> {
        let (_, ino) = self.archive_entry?;
        self.segments
            .get(&ino)
            .filter(|t| t.seg.header.is_archive())
    }

    /// The files a scrape merges: every segment but those the archive or its parts hold
    /// (left out if a compactor has not removed them yet) and any archive but the one in
    /// place and its parts (a stray, reported by `refresh`), then the `.db` images.
    pub(crate) fn sources(&self) -> Vec<Source<'_>> {
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
        self.segments
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
            .collect()
    }

    /// Drops every segment a fault was caught in (see `shmetrics_layout::fault`), rejecting
    /// it until its file changes again, and makes `merger` forget what it folded of the dead
    /// ones. Returns whether there was one.
    pub(crate) fn drop_faulted(&mut self, merger: &mut Merger) -> bool {
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
            if !self.logged.is_quiet() {
                log::warn!("skipping {}: {error}", t.seg.path.display());
            }
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
            self.gone = true;
            merger.forget_dead();
        }
        !faulted.is_empty()
    }

    /// Rescans the directory, opens new segments, drops vanished ones, probes liveness,
    /// parses new metadata and links new series into `merger`; counts and problems go to
    /// `report`.
    pub(crate) fn refresh(&mut self, merger: &mut Merger, report: &mut ScrapeReport) {
        match self.listing_needed() {
            Ok(false) => {}
            Ok(true) => self.list_directory(),
            Err(e) => {
                report.dir_error = Some(format!("{}: {e}", self.path.display()));
                if self.logged.first(self.path.clone(), "dir_error") {
                    log::error!("cannot read metrics directory {}: {e}", self.path.display());
                }
            }
        }
        for (reason, n) in &self.listed_skips {
            *report.skipped.entry(*reason).or_insert(0) += n;
        }
        for t in self.segments.values_mut() {
            t.seg.probe_liveness();
            if t.seg.live && self.purpose == Purpose::Compact {
                // Never folded while live: its series are parsed once it is dead.
                report.live_segments += 1;
                continue;
            }
            t.seg.refresh_metadata();
            merger.link(&mut t.seg, &mut t.links);
            if t.seg.live {
                report.live_segments += 1;
                if !t.seg.header.is_archive() {
                    report.live_writers.insert(crate::process::WriterId {
                        pid: t.seg.header.pid,
                        start_time_ticks: t.seg.header.start_time_ticks,
                    });
                }
            } else {
                report.dead_segments += 1;
            }
            report.dropped_series += t.seg.dropped_series();
            if let Some(e) = &t.seg.corrupt {
                let problem = Problem {
                    path: t.seg.path.clone(),
                    reason: ProblemReason::from(e),
                    detail: format!("metadata after this point ignored: {e}"),
                };
                self.logged.problem(&problem);
                report.problems.push(problem);
            }
            if !t.seg.refused.is_empty() {
                let problem = Problem {
                    path: t.seg.path.clone(),
                    reason: ProblemReason::OverLimit,
                    detail: t.seg.refused.describe(),
                };
                self.logged.problem(&problem);
                report.problems.push(problem);
            }
        }
        let squatted_hidden = self.hidden_squatted();
        if squatted_hidden > 0 {
            *report.skipped.entry(SkipReason::Squatted).or_insert(0) += squatted_hidden;
        }
        self.track_parts(merger, report);
        let current = self.archive_entry.map(|(_, ino)| ino);
        for (&ino, t) in &self.segments {
            if t.seg.header.is_archive() && Some(ino) != current && !t.part {
                *report.skipped.entry(SkipReason::StrayArchive).or_insert(0) += 1;
                if self.logged.first(t.seg.path.clone(), "stray_archive") {
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
            let path = self.path.join(&self.archive_names[k]);
            if self.logged.first(path.clone(), "not_an_archive") {
                log::warn!(
                    "{} is not a usable archive; compaction stops until it is moved away",
                    path.display()
                );
            }
        }
        self.refresh_legacy(merger, report);
        if std::mem::take(&mut self.gone) {
            self.collect_garbage(merger);
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
                    reason: ProblemReason::from(e),
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
    fn track_parts(&mut self, merger: &mut Merger, report: &mut ScrapeReport) {
        let wanted: Vec<u64> = self
            .current_archive()
            .map(|t| t.seg.parts.clone())
            .unwrap_or_default();
        let before = self.segments.len();
        self.segments
            .retain(|_, t| !t.part || wanted.contains(&t.seg.header.instance_id));
        self.gone |= self.segments.len() < before;
        for id in wanted {
            let open = self
                .segments
                .values()
                .any(|t| t.part && t.seg.header.instance_id == id);
            if open {
                continue;
            }
            let path = self.path.join(part_name(id));
            let opened = match open_segment(&path, self.euid) {
                Ok(seg) if seg.header.is_archive() && seg.header.instance_id == id => Ok(seg),
                Ok(_) => Err((
                    ProblemReason::BadPart,
                    "not the archive part its archive names".to_owned(),
                )),
                Err(Rejection::Skip(reason, detail)) => {
                    if reason.is_transient() {
                        self.relist = true;
                    }
                    Err((ProblemReason::MissingPart, detail))
                }
                Err(Rejection::Bad(e)) => Err((ProblemReason::BadPart, e.to_string())),
            };
            match opened {
                Ok(mut seg) => {
                    let ino = std::fs::symlink_metadata(&path).map_or(u64::MAX - id, |m| m.ino());
                    let mut links = SegmentLinks::default();
                    seg.refresh_metadata();
                    merger.link(&mut seg, &mut links);
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
                    self.logged.problem(&problem);
                    report.problems.push(problem);
                }
            }
        }
    }

    /// Lets the index forget series no tracked file has any more.
    fn collect_garbage(&mut self, merger: &mut Merger) {
        let mut links: Vec<&mut SegmentLinks> = self
            .segments
            .values_mut()
            .map(|t| &mut t.links)
            .chain(self.legacy.values_mut().map(|t| &mut t.links))
            .collect();
        merger.collect_garbage(&mut links);
        // Log-once memory is bounded too.
        self.logged.bound();
    }

    /// Re-reads every `.db` file (their values change in place) and links new series.
    fn refresh_legacy(&mut self, merger: &mut Merger, report: &mut ScrapeReport) {
        for t in self.legacy.values_mut() {
            match t.file.update() {
                Ok(rebuilt) => {
                    if rebuilt {
                        t.links = SegmentLinks::default();
                        self.gone = true;
                    }
                    if let Some(seg) = t.file.seg.as_mut() {
                        merger.link(seg, &mut t.links);
                    }
                    for problem in &t.file.left_out {
                        self.logged.problem(problem);
                    }
                    report.problems.extend(t.file.left_out.iter().cloned());
                }
                Err(e) => {
                    let problem = Problem {
                        path: t.file.path().to_owned(),
                        reason: e.reason(),
                        detail: format!("skipped: {e}"),
                    };
                    self.logged.problem(&problem);
                    report.problems.push(problem);
                }
            }
        }
    }

    /// Whether the directory must be listed again: its mtime changed since the last
    /// listing, or that listing was too close to the mtime to trust it (a coarse timestamp
    /// could hide a later change within the same tick).
    fn listing_needed(&mut self) -> io::Result<bool> {
        let meta = std::fs::metadata(&self.path)?;
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
                self.path.display()
            );
        }
        if !self.logged.is_quiet() {
            log::warn!(
                "{}: the archive kept changing over {ATTEMPTS} listings; this scrape may miss \
                 processes compacted meanwhile",
                self.path.display()
            );
        }
    }

    /// Whether the archive in the directory now is the one the last listing found (or there
    /// is none and it found none): the first archive name holding a regular file of this
    /// user, by the same rule as the listing, so a name taken by another user or by a
    /// directory never makes the listing look stale.
    fn archive_is_current(&self) -> bool {
        let in_place = self.archive_names.iter().find_map(|name| {
            let m = std::fs::symlink_metadata(self.path.join(name)).ok()?;
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
        match std::fs::read_dir(&self.path) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    self.visit(&entry, &mut skipped);
                }
                let before = self.segments.len() + self.legacy.len();
                self.segments.retain(|_, t| t.seen || t.part);
                self.legacy.retain(|_, t| t.seen);
                self.rejected.retain(|_, r| r.seen);
                self.gone |= self.segments.len() + self.legacy.len() < before;
            }
            Err(e) => {
                // Listed again next time; what was open stays open meanwhile.
                self.listed = None;
                log::debug!("cannot list {}: {e}", self.path.display());
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
            match own_regular_file(&entry.path(), self.euid) {
                Entry::Own => {
                    if self.archive_entry.is_none_or(|(first, _)| k < first) {
                        self.archive_entry = Some((k, ino));
                    }
                }
                Entry::Missing => return,
                Entry::Taken(why) => {
                    if self.logged.first(entry.path(), "squatted") {
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
            self.gone = true;
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
            if self.purpose == Purpose::Compact {
                return; // Never folded.
            }
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
                if !self.logged.is_quiet() {
                    log::warn!(
                        "cannot open {} for now ({}): {detail}; retrying at the next scrape",
                        path.display(),
                        reason.as_str()
                    );
                }
                skip(reason);
            }
            Err(rejection) => {
                let (reason, detail) = match &rejection {
                    Rejection::Skip(r, d) => (r.as_str(), d.clone()),
                    Rejection::Bad(e) => (ProblemReason::from(e).as_str(), e.to_string()),
                };
                self.logged.skipping(&path, reason, &detail);
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

/// Whether `path` names a hidden file (no listing shows it).
fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."))
}
