//! The registry: opens the process's segment in the metrics directory and registers
//! families; placement (`placement.rs`) puts their series in segments.

use std::any::Any;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use shmetrics_layout::names::exposed_names;
use shmetrics_layout::record::check_family;
use shmetrics_layout::{GaugeMode, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, MetricKind};

use crate::def::FamilyDef;
use crate::error::{Difference, Error, Result, SegmentOp};
use crate::family::{
    Child, CounterFamily, Family, GaugeFamily, HistogramFamily, InfoFamily, StateSetFamily,
    SummaryFamily,
};
use crate::identity::ProcessIdentity;
use crate::options::Options;
use crate::placement::{Shared, family_record};

/// The environment variable naming the metrics directory, shared with `prometheus_client`.
pub const DIR_ENV: &str = "PROMETHEUS_MULTIPROC_DIR";

/// The bucket bounds of `prometheus_client` and the Go client, used when none are given.
pub const DEFAULT_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

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
/// running.unlabelled()?.set(3.0);
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
        self.shared.lock_state().end_liveness();
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
                    op: SegmentOp::StatDirectory,
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
            || !crate::valid_stripes(options.contention_stripes)
        {
            return Err(Error::InvalidOptions {
                options: Box::new(options),
            });
        }
        let mut identity = ProcessIdentity::current();
        if let Some(pid) = pid {
            identity.pid = pid;
        }
        let shared = Arc::new(Shared::open(dir, identity, options)?);
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
        check_family(&family_record(&def, 0)).map_err(Error::InvalidFamily)?;
        // The state lock first: fork's prepare handler holds every registry's state lock,
        // so no thread is inside this section at a fork and a forked child never inherits
        // the family map locked. Lock order: state, then families.
        let _state = self.shared.lock_state();
        let mut families = self.families.lock();
        if let Some(existing) = families.get(&def.name) {
            if existing.def != def {
                return Err(Error::Conflict {
                    name: def.name.clone(),
                    difference: difference(&existing.def, &def),
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
                difference: Difference::ExposedAlike {
                    kind: other.def.kind,
                    other: other.def.name.clone(),
                    exposed: clash,
                },
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
    /// A series whose fractional increments threads of this process add at once is spread
    /// over copies when found so ([`Options::contention_stripes`]).
    ///
    /// # Errors
    /// [`Error::InvalidFamily`] for an invalid name or label name, [`Error::Conflict`] if
    /// the name is registered with another definition.
    pub fn counter(&self, name: &str, help: &str, labels: &[&str]) -> Result<CounterFamily> {
        self.register(counter_def(name, help, labels))
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
    /// `bounds` means [`DEFAULT_BUCKETS`]. A series that threads of this process observe at
    /// once is spread over copies when found so ([`Options::contention_stripes`]), as a
    /// [`Registry::histogram_striped`] family's are from the start.
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
        let bounds = finite_bounds(bounds);
        self.register(def(MetricKind::Histogram, None, name, help, labels, bounds))
    }

    /// Registers a histogram family (as [`Registry::histogram`]) whose series each keep
    /// `stripes` copies of their slots, for series that several threads observe at once:
    /// each thread writes the copy its number picks (threads are numbered in the order of
    /// their first striped write), so up to `stripes` threads never fight over a cache
    /// line. Each copy is a series record of its own, with the same labels; readers add
    /// them up as they add processes, so the exposition is the same as without stripes. A
    /// series takes `stripes` times the slots (and exemplar slots); the count is a power of
    /// two from 1 to [`MAX_STRIPES`](crate::MAX_STRIPES), and registering the name again
    /// with another count is a conflict. Each copy's slots are on cache lines of their own.
    /// A thread whose copy another thread writes at the same time moves to another.
    /// `docs/performance.md`, "Striped series: the contention taken away", measures what it
    /// saves and costs.
    ///
    /// # Errors
    /// As [`Registry::histogram`], and [`Error::InvalidStripes`].
    pub fn histogram_striped(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        bounds: &[f64],
        stripes: usize,
    ) -> Result<HistogramFamily> {
        let bounds = finite_bounds(bounds);
        let def = def(MetricKind::Histogram, None, name, help, labels, bounds);
        self.register(striped(def, stripes)?)
    }

    /// Registers a counter family (as [`Registry::counter`]) whose series each keep
    /// `stripes` copies, as [`Registry::histogram_striped`]: for a counter that several
    /// threads add to at once.
    ///
    /// # Errors
    /// As [`Registry::counter`], and [`Error::InvalidStripes`].
    pub fn counter_striped(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        stripes: usize,
    ) -> Result<CounterFamily> {
        self.register(striped(counter_def(name, help, labels), stripes)?)
    }

    /// Registers a summary family (count and sum). A series that threads of this process
    /// observe at once is spread over copies when found so ([`Options::contention_stripes`]).
    ///
    /// # Errors
    /// As [`Registry::counter`].
    pub fn summary(&self, name: &str, help: &str, labels: &[&str]) -> Result<SummaryFamily> {
        self.register(def(MetricKind::Summary, None, name, help, labels, &[]))
    }

    /// Registers an info family (`prometheus_client`'s `Info`, exposed as `name_info`): each
    /// label set of the family shows the info last set, merged across processes by `mode`,
    /// `LiveMostRecent` (the newest among live processes) or `MostRecent` (dead ones too).
    ///
    /// # Errors
    /// As [`Registry::counter`], and [`Error::InvalidFamily`] for another mode.
    pub fn info(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        mode: GaugeMode,
    ) -> Result<InfoFamily> {
        let def = def(MetricKind::Info, Some(mode), name, help, labels, &[]);
        self.register(def).map(InfoFamily::new)
    }

    /// Registers a stateset family (`prometheus_client`'s `Enum`): each series is in one of
    /// `states`, merged across processes by `mode` as [`Registry::info`]'s. A series shows
    /// the first state until it is set.
    ///
    /// # Errors
    /// As [`Registry::info`], and [`Error::InvalidFamily`] for no states, a state listed
    /// twice, or a name that cannot label the states (not a valid label name, or one of
    /// `labels`).
    pub fn state_set(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        states: &[&str],
        mode: GaugeMode,
    ) -> Result<StateSetFamily> {
        let mut def = def(MetricKind::StateSet, Some(mode), name, help, labels, &[]);
        def.states = states.iter().map(|s| (*s).to_owned()).collect();
        self.register(def)
    }
}

/// A counter's definition: `name` without a trailing `_total`, as `prometheus_client`
/// registers it (the exposition adds it back).
fn counter_def(name: &str, help: &str, labels: &[&str]) -> FamilyDef {
    let base = name.strip_suffix("_total").unwrap_or(name);
    def(MetricKind::Counter, None, base, help, labels, &[])
}

/// `def` with `stripes` copies of each series, if [`valid_stripes`](crate::valid_stripes).
fn striped(def: FamilyDef, stripes: usize) -> Result<FamilyDef> {
    if !crate::valid_stripes(stripes) {
        return Err(Error::InvalidStripes {
            name: def.name,
            stripes,
        });
    }
    Ok(FamilyDef { stripes, ..def })
}

/// A histogram's bounds as registered: [`DEFAULT_BUCKETS`] for none, a trailing `+Inf`
/// left out (it is implied).
fn finite_bounds(bounds: &[f64]) -> &[f64] {
    match bounds {
        [] => &DEFAULT_BUCKETS[..],
        [finite @ .., last] if *last == f64::INFINITY => finite,
        all => all,
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
        states: Arc::from([]),
        stripes: 1,
    }
}

fn difference(a: &FamilyDef, b: &FamilyDef) -> Difference {
    if a.kind != b.kind {
        Difference::Kind {
            before: a.kind,
            now: b.kind,
        }
    } else if a.mode != b.mode {
        Difference::GaugeMode {
            before: a.mode,
            now: b.mode,
        }
    } else if a.label_names != b.label_names {
        Difference::LabelNames {
            before: a.label_names.to_vec(),
            now: b.label_names.to_vec(),
        }
    } else if a.bounds != b.bounds {
        Difference::Buckets {
            before: a.bounds.to_vec(),
            now: b.bounds.to_vec(),
        }
    } else if a.states != b.states {
        Difference::States {
            before: a.states.to_vec(),
            now: b.states.to_vec(),
        }
    } else if a.stripes != b.stripes {
        Difference::Stripes {
            before: a.stripes,
            now: b.stripes,
        }
    } else {
        Difference::Help {
            before: a.help.to_string(),
            now: b.help.to_string(),
        }
    }
}
