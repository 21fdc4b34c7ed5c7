//! The reader as a Python object: merged snapshots for the `prometheus_client` collector and
//! rendered expositions for anything that serves `/metrics` itself.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use pyo3::exceptions::{PyMemoryError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use shmetrics_reader::snapshot::{Family, Series, Value};
use shmetrics_reader::{Format, PrefixFilter, Scrape, ScrapeReport};

/// Reads one metrics directory, keeping parsed metadata between scrapes. Thread-safe; the
/// directory is read with the GIL released. Used only in the process that opened it.
#[pyclass(frozen, module = "shmetrics._native", name = "Reader")]
pub(crate) struct Reader {
    /// `None` only once dropped in a forked child (see `Drop`).
    inner: Option<Mutex<State>>,
    /// The process that opened it. A child forked while another thread was reading holds
    /// the lock for good (that thread does not exist there) and the state half-changed, so
    /// a child never uses, nor frees, what it inherited.
    opened_by: u32,
}

impl Drop for Reader {
    fn drop(&mut self) {
        if std::process::id() != self.opened_by {
            // Inherited through fork(): possibly half-changed by a thread of the parent.
            std::mem::forget(self.inner.take());
        }
    }
}

struct State {
    reader: shmetrics_reader::Reader,
    last: ScrapeReport,
    /// Prefix lists already checked against the directory's families (a list that keeps
    /// none of them is logged once).
    checked_prefixes: std::collections::HashSet<Vec<String>>,
}

impl State {
    /// The first time `filter` meets families: a warning when it keeps none of those of
    /// `snapshot` (or, without one, of a snapshot taken for the check).
    fn check_prefixes(
        &mut self,
        filter: &PrefixFilter,
        snapshot: Option<&shmetrics_reader::snapshot::Snapshot>,
    ) -> Option<String> {
        if filter.prefixes().is_empty() || self.checked_prefixes.contains(filter.prefixes()) {
            return None;
        }
        let taken;
        let snapshot = match snapshot {
            Some(s) => s,
            None => {
                taken = self.reader.snapshot().snapshot;
                &taken
            }
        };
        if snapshot.families.is_empty() {
            return None;
        }
        self.checked_prefixes.insert(filter.prefixes().to_vec());
        filter.keeps_none_warning(snapshot.families.iter().map(|f| &*f.name))
    }
}

/// Logs `message` on the `shmetrics` logger, as the drop-in logs what a collection skipped.
fn log_warning(py: Python<'_>, message: &str) -> PyResult<()> {
    py.import("logging")?
        .call_method1("getLogger", ("shmetrics",))?
        .call_method1("warning", ("shmetrics: %s", message))?;
    Ok(())
}

fn reader_err(e: shmetrics_reader::ReaderError) -> PyErr {
    match e {
        shmetrics_reader::ReaderError::Io(..) => PyOSError::new_err(e.to_string()),
        _ => PyValueError::new_err(e.to_string()),
    }
}

/// Takes a reader's state lock (a panic while it was held leaves the state usable).
fn locked(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Reader {
    /// The state's lock, to be taken with the GIL released (`locked`); an error in a process
    /// forked from the one that opened this reader.
    fn state(&self) -> PyResult<&Mutex<State>> {
        match &self.inner {
            Some(inner) if std::process::id() == self.opened_by => Ok(inner),
            _ => Err(PyRuntimeError::new_err(format!(
                "this shmetrics Reader was opened by process {} and inherited through fork(): \
                 open a new one in this process (generate_latest and the collectors do)",
                self.opened_by
            ))),
        }
    }

    /// A snapshot for `collect` and `render_prometheus_client` (the GIL released while it is
    /// taken), its prefix filter and, with `process_metrics`, the live writers' process
    /// families; a prefix list that keeps none of the families is logged the first time.
    fn take(
        &self,
        py: Python<'_>,
        prefixes: Vec<String>,
        process_metrics: bool,
    ) -> PyResult<(Scrape, PrefixFilter, Vec<Family>)> {
        let filter = PrefixFilter::new(prefixes);
        let state = self.state()?;
        let (scrape, warning) = py.detach(|| {
            let mut state = locked(state);
            state.reader.set_process_metrics(process_metrics);
            let scrape = state.reader.snapshot();
            state.last = scrape.report.clone();
            let warning = state.check_prefixes(&filter, Some(&scrape.snapshot));
            (scrape, warning)
        });
        if let Some(warning) = warning {
            log_warning(py, &warning)?;
        }
        let process = shmetrics_reader::process::families(&scrape.report);
        Ok((scrape, filter, process))
    }
}

/// The families a collection shows: the merged ones `filter` keeps, then the process
/// families (`process`) the directory does not have itself.
fn kept<'a>(
    scrape: &'a Scrape,
    filter: &'a PrefixFilter,
    process: &'a [Family],
) -> impl Iterator<Item = &'a Family> {
    let merged = scrape
        .snapshot
        .families
        .iter()
        .filter(|f| filter.keeps(&f.name));
    let extra = process
        .iter()
        .filter(|f| scrape.snapshot.family(&f.name).is_none());
    merged.chain(extra)
}

#[pymethods]
impl Reader {
    #[new]
    fn new(path: PathBuf) -> PyResult<Self> {
        let reader = shmetrics_reader::Reader::open(path).map_err(reader_err)?;
        Ok(Self {
            inner: Some(Mutex::new(State {
                reader,
                last: ScrapeReport::default(),
                checked_prefixes: Default::default(),
            })),
            opened_by: std::process::id(),
        })
    }

    /// The merged families whose names start with one of `prefixes` (all when empty), as
    /// `(name, type, help, upper_bounds, series)`; `upper_bounds` (with `+Inf`) is set for
    /// histograms; each series is `(labels, pid, value)` with `labels` a dict sorted by
    /// name, `pid` a string for gauges in the `all` modes, and `value` a float, a
    /// `(count, sum)` for summaries or a `(bucket_counts, sum)` for histograms, the counts
    /// per bucket, not cumulative. With `process_metrics`, the `process_*` families of the
    /// live writers (read from `/proc`, a `pid` label each) follow, whatever the prefixes.
    /// With `created` or `exemplars`, each series is
    /// `(labels, pid, value, created, exemplars)`: `created` (with `created` only) the
    /// series' creation time in seconds since the epoch for counters, histograms and
    /// summaries (the oldest among the processes that have it), else `None`; `exemplars`
    /// (with `exemplars` only) a counter's or histogram's newest exemplars of any process,
    /// a list with an entry per `_total` or bucket sample, `None` or
    /// `(labels, value, timestamp)`; `None` when no process stored one.
    #[pyo3(signature = (prefixes=Vec::new(), process_metrics=false, created=false, exemplars=false))]
    fn collect<'py>(
        &self,
        py: Python<'py>,
        prefixes: Vec<String>,
        process_metrics: bool,
        created: bool,
        exemplars: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let (scrape, filter, process) = self.take(py, prefixes, process_metrics)?;
        let out = PyList::empty(py);
        for family in kept(&scrape, &filter, &process) {
            out.append(family_to_py(py, family, created, exemplars)?)?;
        }
        Ok(out)
    }

    /// What `prometheus_client.generate_latest` writes for the `Metric` objects the drop-in
    /// makes of `collect(prefixes, process_metrics)`, written natively (`compat.rs`):
    /// `sums_first` and `two_digit_exponent` as the installed `prometheus_client` version
    /// does; with `openmetrics`, what its OpenMetrics `generate_latest` writes (without the
    /// final `# EOF`), with `_created` samples when `created`, and sample names with `:` as
    /// `_` when `sample_colons_as_underscores`. `None` when a family or label name is
    /// outside the classic character sets, which only `prometheus_client` escapes as it
    /// does.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (prefixes, process_metrics, sums_first, two_digit_exponent, openmetrics=false, created=false, sample_colons_as_underscores=false))]
    fn render_prometheus_client<'py>(
        &self,
        py: Python<'py>,
        prefixes: Vec<String>,
        process_metrics: bool,
        sums_first: bool,
        two_digit_exponent: bool,
        openmetrics: bool,
        created: bool,
        sample_colons_as_underscores: bool,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let (scrape, filter, process) = self.take(py, prefixes, process_metrics)?;
        let style = crate::compat::Style {
            sums_first,
            two_digit_exponent,
            openmetrics: openmetrics.then_some(crate::compat::OpenMetrics {
                created,
                sample_colons_as_underscores,
            }),
        };
        let text = py.detach(|| {
            let mut out = String::new();
            crate::compat::render(kept(&scrape, &filter, &process), style, &mut out)
                .map(|done| done.then_some(out))
        });
        let text = text.map_err(|e| {
            PyMemoryError::new_err(format!("cannot allocate the exposition's text: {e}"))
        })?;
        Ok(text.map(|t| PyBytes::new(py, t.as_bytes())))
    }

    /// The merged directory rendered as Prometheus text (or OpenMetrics), filtered by
    /// family-name prefixes; with `self_metrics`, the reader's own `shmetrics_reader_*`
    /// families are appended; with `process_metrics`, the live writers' `process_*`
    /// families. With `created` (the default), OpenMetrics has a `_created` sample per
    /// counter, histogram and summary series.
    #[pyo3(signature = (openmetrics=false, prefixes=Vec::new(), self_metrics=false, escaping="underscores", process_metrics=false, created=true))]
    #[allow(clippy::too_many_arguments)]
    fn render<'py>(
        &self,
        py: Python<'py>,
        openmetrics: bool,
        prefixes: Vec<String>,
        self_metrics: bool,
        escaping: &str,
        process_metrics: bool,
        created: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let escaping = shmetrics_reader::Escaping::parse(escaping).ok_or_else(|| {
            PyValueError::new_err(format!(
                "unknown escaping {escaping:?}; expected underscores, allow-utf-8, dots or values"
            ))
        })?;
        let format = if openmetrics {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        };
        let filter = PrefixFilter::new(prefixes);
        let state = self.state()?;
        let (text, warning) = py
            .detach(|| {
                let mut state = locked(state);
                state.reader.set_process_metrics(process_metrics);
                state.reader.set_created_series(created);
                let warning = state.check_prefixes(&filter, None);
                let mut out = FallibleVec(Vec::new());
                let report = state.reader.scrape_escaped(
                    format,
                    escaping,
                    &filter,
                    self_metrics,
                    &mut out,
                )?;
                state.last = report;
                Ok::<_, std::io::Error>((out.0, warning))
            })
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::OutOfMemory => PyMemoryError::new_err(e.to_string()),
                _ => PyErr::from(e),
            })?;
        if let Some(warning) = warning {
            log_warning(py, &warning)?;
        }
        Ok(PyBytes::new(py, &text))
    }

    /// What the last `collect` or `render` found: segment counts, and each file skipped or
    /// found corrupt, as a dict.
    fn last_report<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let state = locked(self.state()?);
        report_to_py(py, &state.last)
    }
}

/// A series' exemplars as `collect` returns them: per sample that can have one (a
/// counter's `_total`, a histogram's buckets), `None` or `(labels, value, timestamp)`.
fn exemplars_to_py<'py>(
    py: Python<'py>,
    exemplars: &[Option<shmetrics_reader::snapshot::Exemplar>],
) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for exemplar in exemplars {
        match exemplar {
            Some(e) => {
                let labels = PyDict::new(py);
                for (name, value) in &e.labels {
                    labels.set_item(name, value)?;
                }
                let seconds = shmetrics_reader::snapshot::unix_seconds(e.unix_nanos);
                out.append((labels, e.value, seconds))?;
            }
            None => out.append(py.None())?,
        }
    }
    Ok(out)
}

/// A family as `collect` returns it; with `created` or `exemplars`, each series has its
/// creation time (or `None`) and its exemplars (or `None`).
fn family_to_py<'py>(
    py: Python<'py>,
    family: &Family,
    created: bool,
    exemplars: bool,
) -> PyResult<Bound<'py, PyTuple>> {
    let series = PyList::empty(py);
    for s in &family.series {
        let labels = PyDict::new(py);
        for (name, value) in &s.labels.pairs {
            labels.set_item(&**name, &**value)?;
        }
        let pid = s.pid.map(|p| p.to_string());
        let value = match &s.value {
            Value::Counter(v) | Value::Gauge(v) => v.into_pyobject(py)?.into_any(),
            Value::Summary { count, sum } => (*count, *sum).into_pyobject(py)?.into_any(),
            Value::Histogram { buckets, sum } => {
                (buckets.clone(), *sum).into_pyobject(py)?.into_any()
            }
            Value::Info => 1.0f64.into_pyobject(py)?.into_any(),
            Value::State { index, .. } => index.into_pyobject(py)?.into_any(),
        };
        if created || exemplars {
            let created = s.created_seconds().filter(|_| created);
            let shown = match s.exemplars.as_deref().filter(|_| exemplars) {
                Some(list) => Some(exemplars_to_py(py, list)?),
                None => None,
            };
            series.append((labels, pid, value, created, shown))?;
        } else {
            series.append((labels, pid, value))?;
        }
    }
    let bounds = match family.kind {
        shmetrics_layout::MetricKind::Histogram => Some(
            family
                .bounds
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .collect::<Vec<f64>>()
                .into_pyobject(py)?
                .into_any(),
        ),
        // A stateset's states, each series' value the index of its state.
        shmetrics_layout::MetricKind::StateSet => match family.series.first() {
            Some(Series {
                value: Value::State { states, .. },
                ..
            }) => Some(states.to_vec().into_pyobject(py)?.into_any()),
            _ => None,
        },
        _ => None,
    };
    (
        &*family.name,
        family.kind.to_string(),
        &*family.help,
        bounds,
        series,
    )
        .into_pyobject(py)
}

fn report_to_py<'py>(py: Python<'py>, report: &ScrapeReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("live_segments", report.live_segments)?;
    d.set_item("dead_segments", report.dead_segments)?;
    d.set_item("bad_segments", report.bad_segments)?;
    d.set_item("series", report.series)?;
    d.set_item("dropped_series", report.dropped_series)?;
    let skipped = PyDict::new(py);
    for (reason, n) in &report.skipped {
        skipped.set_item(reason.as_str(), n)?;
    }
    d.set_item("skipped", skipped)?;
    let problems = PyList::empty(py);
    for p in &report.problems {
        problems.append((p.path.to_string_lossy(), p.reason.as_str(), &p.detail))?;
    }
    d.set_item("problems", problems)?;
    let conflicts = PyList::empty(py);
    for c in &report.conflicts {
        conflicts.append((&c.family, c.kind.as_str(), &c.detail))?;
    }
    d.set_item("conflicts", conflicts)?;
    d.set_item("dir_error", report.dir_error.clone())?;
    Ok(d)
}

/// A buffer that reports an allocation it cannot make as an error instead of aborting
/// the interpreter.
struct FallibleVec(Vec<u8>);

impl std::io::Write for FallibleVec {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.try_reserve(bytes.len()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!(
                    "cannot allocate {} bytes for the exposition",
                    self.0.len() + bytes.len()
                ),
            )
        })?;
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
