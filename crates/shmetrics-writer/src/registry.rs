//! The registry: opens the process's segment in the metrics directory, registers families
//! and places their series in segments.

use std::any::Any;
use std::cell::OnceCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use shmetrics_layout::names::exposed_names;
use shmetrics_layout::record::{FamilyRecord, SeriesRecord, check_family};
use shmetrics_layout::slots::slot_words;
use shmetrics_layout::view::SlotBlock;
use shmetrics_layout::{
    DROPPED_SERIES_WORD, GaugeMode, HEADER_SIZE, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, MetricKind,
    SegmentIdentity,
};

use crate::error::{Error, Result};
use crate::family::{
    Child, CounterFamily, Family, FamilyDef, GaugeFamily, HistogramFamily, SummaryFamily,
};
use crate::identity::{ProcessIdentity, now_nanos};
use crate::segment::Segment;

/// The environment variable naming the metrics directory, shared with `prometheus_client`.
pub const DIR_ENV: &str = "PROMETHEUS_MULTIPROC_DIR";

/// The bucket bounds of `prometheus_client` and the Go client, used when none are given.
pub const DEFAULT_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Registry settings; the defaults suit most processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Permission bits of new segment files (default `0o600`: only the owner may read).
    pub file_mode: u32,
    /// Size of the first segment in bytes (default 256 KiB). Each continuation segment
    /// doubles the previous size, up to `max_segment_size`.
    pub initial_segment_size: usize,
    /// Largest segment in bytes (default 64 MiB).
    pub max_segment_size: usize,
    /// Most segments per process (default 64). Series beyond what they hold are counted as
    /// dropped and get handles that write to private memory: the engine never fails or
    /// blocks on metrics.
    pub max_segments: usize,
    /// Survive a segment file truncated under this process (default `false`). Only this
    /// process and its own user can truncate its segments; if one does, the next write to a
    /// page past the new end raises `SIGBUS`, which ends the process as for any mapped file.
    /// With this set, a `SIGBUS` inside the process's own segments replaces the page with
    /// private zeros instead: the engine goes on, the series on that page count again from
    /// zero, privately (no reader sees them; the file's new size makes readers reject the
    /// segment), and
    /// [`Registry::truncated`] says so. It installs a process-wide `SIGBUS` handler that
    /// passes any other fault to the handler the process had before.
    pub guard_truncation: bool,
    /// In a child forked from this process, create the child's segments in the directory
    /// `PROMETHEUS_MULTIPROC_DIR` names at the fork (when it names one), instead of this
    /// registry's (default `false`). As `prometheus_client` reopens its files after a fork:
    /// the Python drop-in sets it, so a child forked after the variable changed writes
    /// into the new directory, and one whose registry's directory was removed does not
    /// lose its metrics while the variable names another.
    pub follow_env_dir_after_fork: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            file_mode: 0o600,
            initial_segment_size: 256 * 1024,
            max_segment_size: 64 * 1024 * 1024,
            max_segments: 64,
            guard_truncation: false,
            follow_env_dir_after_fork: false,
        }
    }
}

/// Environment variable that turns [`Options::guard_truncation`] on for registries opened
/// with [`Options::from_env`] (`Registry::open`, `Registry::from_env`, and so the Python
/// package): `1`.
pub const GUARD_TRUNCATION_ENV: &str = "SHMETRICS_GUARD_TRUNCATION";

impl Options {
    /// The defaults, with [`Options::guard_truncation`] on when [`GUARD_TRUNCATION_ENV`] is
    /// `1`: an engine that embeds the Python package or opens registries through
    /// [`Registry::open`] can opt in without code.
    pub fn from_env() -> Self {
        Self {
            guard_truncation: std::env::var(GUARD_TRUNCATION_ENV).as_deref() == Ok("1"),
            ..Self::default()
        }
    }
}

/// State shared by the registry and its families, guarded by one mutex that only
/// registration and first-time child creation take.
pub(crate) struct Shared {
    pub(crate) options: Options,
    /// A std (futex) mutex rather than parking_lot's: it is held across `fork()` (see
    /// `fork.rs`) and released in the child, where the threads that were waiting for it do
    /// not exist. parking_lot's unlock may hand the lock to such a waiter (its eventual
    /// fairness) and keeps waiters in a process-wide table; std's just clears the word.
    pub(crate) state: std::sync::Mutex<State>,
}

impl Shared {
    /// Locks the state. A panic while it was held (only possible on a bug or an allocation
    /// failure) does not stop metrics: the lock is taken anyway, as parking_lot would.
    pub(crate) fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub(crate) struct State {
    /// The metrics directory (changes only in a forked child that follows
    /// `PROMETHEUS_MULTIPROC_DIR`).
    pub(crate) dir: PathBuf,
    pub(crate) identity: ProcessIdentity,
    pub(crate) segments: Vec<Segment>,
    pub(crate) dropped_series: u64,
    /// Set by [`Registry::end_liveness`]: segments are left unlocked.
    pub(crate) ended: bool,
}

impl State {
    pub(crate) fn segment_identity(&self, sequence: u32) -> SegmentIdentity {
        SegmentIdentity {
            pid: self.identity.pid,
            sequence,
            instance_id: self.identity.instance_id,
            start_time_ticks: self.identity.start_time_ticks,
            created_unix_nanos: now_nanos(),
        }
    }

    /// Places a new series: declares its family in the current segment if needed, reserves
    /// its slots, publishes its record. Opens a continuation segment when the current one
    /// is full; when none can be opened the series gets private slots and is counted as
    /// dropped.
    pub(crate) fn place_series(
        &mut self,
        shared: &Shared,
        def: &FamilyDef,
        values: Vec<String>,
    ) -> SlotBlock {
        let width = slot_words(def.kind, def.bounds.len());
        let mut series = SeriesRecord {
            family_id: 0,
            slot_offset: 0,
            label_values: values,
            process: None,
            exact_parts: Vec::new(),
        };
        let series_len = series.encoded_len();
        // The family record is measured only when one must be written (a segment's first
        // series of the family), and then once: the common case builds no family record.
        let family_len = OnceCell::new();
        let family_len = || *family_len.get_or_init(|| family_record(def, 0).encoded_len());
        let fits = self.segments.last().is_some_and(|seg| {
            let declare = if seg.declared.contains_key(&def.name) {
                0
            } else {
                family_len()
            };
            seg.fits(declare + series_len, width)
        });
        if !fits {
            let minimum = HEADER_SIZE + family_len() + series_len + width * 8;
            if let Err(e) = self.open_continuation(shared, minimum) {
                return self.drop_series(def, &e);
            }
        }
        let seg = self.segments.last_mut().expect("a segment exists");
        series.family_id = match seg.declared.get(&def.name) {
            Some(&id) => id,
            None => {
                let id = seg.declared.len() as u32;
                seg.append_record(&family_record(def, id).encode());
                seg.declared.insert(def.name.clone(), id);
                id
            }
        };
        let slot_offset = seg.alloc_slots(width);
        series.slot_offset = slot_offset as u64;
        seg.append_record(&series.encode());
        seg.slot_block(slot_offset, width)
    }

    fn open_continuation(&mut self, shared: &Shared, minimum: usize) -> Result<()> {
        let opts = &shared.options;
        if self.segments.len() >= opts.max_segments {
            return Err(Error::SegmentsFull {
                max_segments: opts.max_segments,
            });
        }
        let previous = self.segments.last().map_or(0, |s| s.size);
        let size = (previous * 2)
            .max(opts.initial_segment_size)
            .min(opts.max_segment_size)
            .max(minimum.next_multiple_of(4096));
        if size as u64 > MAX_SEGMENT_SIZE {
            return Err(Error::SeriesTooLarge { bytes: minimum });
        }
        let identity = self.segment_identity(self.segments.len() as u32);
        let segment = Segment::create(
            &self.dir,
            opts.file_mode,
            identity,
            size,
            opts.guard_truncation,
        )?;
        if self.ended {
            segment.unlock();
        }
        self.segments.push(segment);
        Ok(())
    }

    #[cold]
    fn drop_series(&mut self, def: &FamilyDef, why: &Error) -> SlotBlock {
        self.dropped_series += 1;
        if let Some(first) = self.segments.first().filter(|s| s.writable) {
            // SYNC POINT dropped-series: relaxed; a statistic, publishes nothing.
            first.map.words()[DROPPED_SERIES_WORD].fetch_add(1, Ordering::Relaxed);
        }
        if self.dropped_series == 1 {
            log::warn!(
                "shmetrics: series of {} not exported ({why}); further drops are counted in the segment header",
                def.name
            );
        }
        SlotBlock::detached(slot_words(def.kind, def.bounds.len()))
    }
}

fn family_record(def: &FamilyDef, id: u32) -> FamilyRecord {
    FamilyRecord {
        id,
        kind: def.kind,
        mode: def.mode,
        name: def.name.clone(),
        help: def.help.clone(),
        label_names: def.label_names.clone(),
        bounds: def.bounds.to_vec(),
    }
}

struct Registered {
    def: FamilyDef,
    family: Box<dyn Any + Send + Sync>,
}

/// A process's metrics registry: one per process is typical. Cheap to clone.
///
/// ```no_run
/// # fn main() -> Result<(), shmetrics_writer::Error> {
/// use shmetrics_writer::{GaugeMode, Registry};
/// let registry = Registry::from_env()?; // PROMETHEUS_MULTIPROC_DIR
/// let tokens = registry.counter("vllm:prompt_tokens", "Prefill tokens.", &["model_name"])?;
/// let llama = tokens.labels(&["llama"])?.clone(); // keep the handle: no lookup at all
/// llama.inc_by(512.0);
/// let running = registry.gauge("vllm:num_requests_running", "Running.", &[], GaugeMode::MostRecent)?;
/// running.labels::<&str>(&[])?.set(3.0);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Registry {
    shared: Arc<Shared>,
    families: Arc<parking_lot::Mutex<HashMap<String, Registered>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field(
                "dir",
                &self.shared.state.try_lock().map(|s| s.dir.clone()).ok(),
            )
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Opens a registry in the directory named by `PROMETHEUS_MULTIPROC_DIR`.
    ///
    /// # Errors
    /// [`Error::DirUnset`] when the variable is unset or empty, and the errors of
    /// [`Registry::open`].
    pub fn from_env() -> Result<Self> {
        match std::env::var_os(DIR_ENV) {
            Some(dir) if !dir.is_empty() => Self::open(dir),
            _ => Err(Error::DirUnset),
        }
    }

    /// Opens a registry in `dir` with [`Options::from_env`] (the defaults, and what the
    /// environment turns on).
    ///
    /// # Errors
    /// See [`Registry::open_with`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, Options::from_env())
    }

    /// Opens a registry in `dir`: creates, reserves, locks and publishes this process's
    /// first segment there.
    ///
    /// # Errors
    /// [`Error::DirMissing`], [`Error::NotADirectory`], [`Error::NoSpace`] when the
    /// filesystem cannot hold the segment, [`Error::Io`] for other failures, and
    /// [`Error::InvalidOptions`] for options out of range.
    pub fn open_with(dir: impl AsRef<Path>, options: Options) -> Result<Self> {
        Self::open_inner(dir.as_ref(), options, None)
    }

    /// Opens a registry that presents itself as process `pid`: for tests that simulate
    /// several processes (or a reused pid) inside one, and for `prometheus_client`'s custom
    /// process identifiers (`MultiProcessValue(process_identifier)`), where one process
    /// writes for logical processes of its choosing. Readers see it alive while it (or a
    /// handle of it) exists, until [`Registry::end_liveness`].
    #[doc(hidden)]
    pub fn open_simulating_pid(dir: impl AsRef<Path>, options: Options, pid: u32) -> Result<Self> {
        Self::open_inner(dir.as_ref(), options, Some(pid))
    }

    /// Tells readers this registry's process is dead, as `prometheus_client`'s
    /// `mark_process_dead(pid)` does for a logical process: every segment's lock is
    /// released (and later segments are not locked), so its `live*` gauges leave the
    /// merge and its other values count as a dead process's. Writes still land in its
    /// segments; a reader that saw them dead may not read them again.
    pub fn end_liveness(&self) {
        let mut state = self.shared.lock_state();
        state.ended = true;
        for segment in &state.segments {
            segment.unlock();
        }
    }

    fn open_inner(dir: &Path, options: Options, pid: Option<u32>) -> Result<Self> {
        let dir = dir.to_owned();
        match std::fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(Error::NotADirectory(dir)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::DirMissing(dir));
            }
            Err(source) => {
                return Err(Error::Io {
                    op: "stat metrics directory",
                    path: dir,
                    source,
                });
            }
        }
        let size_range = MIN_SEGMENT_SIZE as usize..=MAX_SEGMENT_SIZE as usize;
        if !size_range.contains(&options.initial_segment_size)
            || !size_range.contains(&options.max_segment_size)
            || !options.initial_segment_size.is_multiple_of(4096)
            || options.max_segments == 0
        {
            return Err(Error::InvalidOptions {
                options: format!("{options:?}"),
            });
        }
        let mut identity = ProcessIdentity::current();
        if let Some(pid) = pid {
            identity.pid = pid;
        }
        let mut state = State {
            dir,
            identity,
            segments: Vec::new(),
            dropped_series: 0,
            ended: false,
        };
        let identity = state.segment_identity(0);
        state.segments.push(Segment::create(
            &state.dir,
            options.file_mode,
            identity,
            options.initial_segment_size,
            options.guard_truncation,
        )?);
        let shared = Arc::new(Shared {
            options,
            state: std::sync::Mutex::new(state),
        });
        crate::fork::track(&shared);
        Ok(Self {
            shared,
            families: Arc::default(),
        })
    }

    /// The metrics directory (in a forked child with
    /// [`Options::follow_env_dir_after_fork`], the one it followed).
    pub fn dir(&self) -> PathBuf {
        self.shared.lock_state().dir.clone()
    }

    /// Paths of this process's segment files, first segment first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        let state = self.shared.lock_state();
        state.segments.iter().map(|s| s.path.clone()).collect()
    }

    /// Series that could not be placed in any segment (see [`Options::max_segments`]).
    pub fn dropped_series(&self) -> u64 {
        self.shared.lock_state().dropped_series
    }

    /// Whether a segment of this process was truncated under it and the pages it lost were
    /// replaced by private memory (only with [`Options::guard_truncation`]; without it the
    /// process would have ended with `SIGBUS`). Series on those pages count privately.
    pub fn truncated(&self) -> bool {
        self.shared
            .lock_state()
            .segments
            .iter()
            .any(|s| s.map.faulted())
    }

    fn register<C: Child>(&self, def: FamilyDef) -> Result<Family<C>> {
        check_family(
            def.kind,
            def.mode,
            &def.name,
            &def.help,
            &def.label_names,
            &def.bounds,
        )
        .map_err(Error::InvalidFamily)?;
        // The state lock first: fork's prepare handler holds every registry's state lock,
        // so no thread is inside this section at a fork and a forked child never inherits
        // the family map locked. Lock order: state, then families.
        let _state = self.shared.lock_state();
        let mut families = self.families.lock();
        if let Some(existing) = families.get(&def.name) {
            if existing.def != def {
                return Err(Error::Conflict {
                    name: def.name.clone(),
                    detail: describe_difference(&existing.def, &def),
                });
            }
            let family = existing
                .family
                .downcast_ref::<Family<C>>()
                .expect("same definition implies same kind");
            return Ok(family.clone());
        }
        let exposed = exposed_names(def.kind, &def.name);
        if let Some((other, clash)) = families.values().find_map(|r| {
            exposed_names(r.def.kind, &r.def.name)
                .into_iter()
                .find(|n| exposed.contains(n))
                .map(|n| (r, n))
        }) {
            return Err(Error::Conflict {
                name: def.name.clone(),
                detail: format!(
                    "both it and {} {} would be exposed as {clash}",
                    other.def.kind, other.def.name
                ),
            });
        }
        let family = Family::<C>::new(def.clone(), Arc::clone(&self.shared));
        families.insert(
            def.name.clone(),
            Registered {
                def,
                family: Box::new(family.clone()),
            },
        );
        Ok(family)
    }

    /// Registers (or returns the already registered) counter family. A trailing `_total`
    /// is stripped from `name`, as `prometheus_client` does; the exposition adds it back.
    ///
    /// # Errors
    /// [`Error::InvalidFamily`] for an invalid name or label name, [`Error::Conflict`] if
    /// the name is registered with another definition.
    pub fn counter(&self, name: &str, help: &str, labels: &[&str]) -> Result<CounterFamily> {
        let base = name.strip_suffix("_total").unwrap_or(name);
        self.register(def(MetricKind::Counter, None, base, help, labels, &[]))
    }

    /// Registers a gauge family merged across processes by `mode`.
    ///
    /// # Errors
    /// As [`Registry::counter`].
    pub fn gauge(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        mode: GaugeMode,
    ) -> Result<GaugeFamily> {
        self.register(def(MetricKind::Gauge, Some(mode), name, help, labels, &[]))
    }

    /// Registers a histogram family with these finite bucket upper bounds (strictly
    /// increasing; a trailing `+Inf` may be given and is implied otherwise). An empty
    /// `bounds` means [`DEFAULT_BUCKETS`].
    ///
    /// # Errors
    /// As [`Registry::counter`], and [`Error::InvalidFamily`] for unsorted or NaN bounds.
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        bounds: &[f64],
    ) -> Result<HistogramFamily> {
        let bounds = match bounds {
            [] => &DEFAULT_BUCKETS[..],
            [finite @ .., last] if *last == f64::INFINITY => finite,
            all => all,
        };
        self.register(def(MetricKind::Histogram, None, name, help, labels, bounds))
    }

    /// Registers a summary family (count and sum).
    ///
    /// # Errors
    /// As [`Registry::counter`].
    pub fn summary(&self, name: &str, help: &str, labels: &[&str]) -> Result<SummaryFamily> {
        self.register(def(MetricKind::Summary, None, name, help, labels, &[]))
    }
}

fn def(
    kind: MetricKind,
    mode: Option<GaugeMode>,
    name: &str,
    help: &str,
    labels: &[&str],
    bounds: &[f64],
) -> FamilyDef {
    FamilyDef {
        kind,
        mode,
        name: name.to_owned(),
        help: help.to_owned(),
        label_names: labels.iter().map(|s| (*s).to_owned()).collect(),
        bounds: bounds.into(),
    }
}

fn describe_difference(a: &FamilyDef, b: &FamilyDef) -> String {
    let list = |items: Vec<String>| format!("({})", items.join(", "));
    let (what, before, now) = if a.kind != b.kind {
        ("type", a.kind.to_string(), b.kind.to_string())
    } else if a.mode != b.mode {
        let mode = |m: Option<GaugeMode>| m.map_or_else(|| "none".to_owned(), |m| m.to_string());
        ("gauge mode", mode(a.mode), mode(b.mode))
    } else if a.label_names != b.label_names {
        (
            "label names",
            list(a.label_names.clone()),
            list(b.label_names.clone()),
        )
    } else if a.bounds != b.bounds {
        let bounds = |b: &[f64]| list(b.iter().map(f64::to_string).collect());
        ("buckets", bounds(&a.bounds), bounds(&b.bounds))
    } else {
        ("help", format!("{:?}", a.help), format!("{:?}", b.help))
    };
    format!("{what} {before} before, {now} now")
}
