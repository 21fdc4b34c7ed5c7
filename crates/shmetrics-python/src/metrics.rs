//! `Counter`, `Gauge`, `Histogram` and `Summary`: `prometheus_client`'s metric classes with
//! their writes going straight to the process's segment.
//!
//! Each class is both the metric and its children: `Counter(...)` with label names is a
//! parent whose `labels(...)` returns a `Counter` child; without label names it is its own
//! child. A child's `inc`/`set`/`observe` is one native call and one to three atomic
//! instructions. The same child objects serve the drop-in as `prometheus_client` value
//! objects (`inc(amount)`, `set(value, timestamp)`, `get()`, `set_exemplar`, ...).

use std::sync::Arc;

use pyo3::exceptions::{PyNotImplementedError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyTuple};
use shmetrics_writer::GaugeMode;

use crate::labels::{Info, Node, check_exemplar, full_name, helper, label_names};
use crate::registry::{Registry, to_py_err, writer_registry};

/// `float(value)`: floats and ints directly, anything else through Python's `float()`.
fn to_f64(value: &Bound<'_, PyAny>) -> PyResult<f64> {
    match value.extract::<f64>() {
        Ok(v) => Ok(v),
        Err(_) => value
            .py()
            .get_type::<PyFloat>()
            .call1((value,))?
            .extract::<f64>(),
    }
}

fn repr(info: &Info, class: &str) -> String {
    format!("shmetrics.{class}({})", info.name)
}

fn str_refs(names: &[String]) -> Vec<&str> {
    names.iter().map(String::as_str).collect()
}

/// A counter: only goes up. Summed over every process, dead ones included.
#[pyclass(frozen, module = "shmetrics._native", name = "Counter")]
pub(crate) struct Counter {
    node: Node<shmetrics_writer::Counter>,
    info: Arc<Info>,
}

#[pymethods]
impl Counter {
    #[new]
    #[pyo3(signature = (name, documentation, labelnames=None, namespace="", subsystem="", unit="", registry=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: &str,
        documentation: &str,
        labelnames: Option<&Bound<'_, PyAny>>,
        namespace: &str,
        subsystem: &str,
        unit: &str,
        registry: Option<&Bound<'_, Registry>>,
    ) -> PyResult<Self> {
        let info = Info {
            kind: "counter",
            name: full_name("counter", name, namespace, subsystem, unit)?,
            label_names: label_names(labelnames)?,
        };
        let family = writer_registry(py, registry)?
            .counter(&info.name, documentation, &str_refs(&info.label_names))
            .map_err(to_py_err)?;
        Ok(Self {
            node: Node::new(py, family)?,
            info: Arc::new(info),
        })
    }

    /// Adds `amount` (default 1); a negative amount is a `ValueError`. An exemplar (labels
    /// as `prometheus_client` checks them) becomes the series' exemplar, with value
    /// `amount`, timed now: OpenMetrics expositions show the newest of any process.
    #[pyo3(signature = (amount=1.0, exemplar=None))]
    fn inc(&self, amount: f64, exemplar: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let child = self.node.child(&self.info)?;
        if amount < 0.0 {
            return Err(PyValueError::new_err(
                "Counters can only be incremented by non-negative amounts.",
            ));
        }
        let labels = match exemplar {
            Some(exemplar) => check_exemplar(exemplar)?,
            None => None,
        };
        // Labels prometheus_client accepts and OpenMetrics 1.0 cannot carry (UTF-8 names
        // under its newer validation) store no exemplar; the increment counts regardless.
        if labels.is_none_or(|l| child.inc_by_with_exemplar(amount, &l).is_err()) {
            child.inc_by(amount);
        }
        Ok(())
    }

    /// What this process has counted.
    fn get(&self) -> PyResult<f64> {
        Ok(self.node.child(&self.info)?.get())
    }

    /// `set(0)` sets this process's count back to zero: `prometheus_client`'s
    /// `Counter.reset()` calls it, and the merged counter drops by what this process had
    /// counted, as in its multiprocess mode. Any other value is refused: a counter only
    /// goes up.
    #[pyo3(signature = (value, timestamp=None))]
    fn set(&self, value: f64, timestamp: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let _ = timestamp;
        if value != 0.0 {
            return Err(PyNotImplementedError::new_err(format!(
                "counter {}: a counter can only be set back to 0 (Counter.reset()); it \
                 otherwise only goes up",
                self.info.name
            )));
        }
        self.node.child(&self.info)?.reset();
        Ok(())
    }

    /// Sets this process's count back to zero, as `prometheus_client`'s `Counter.reset()`:
    /// the merged counter drops by what this process had counted.
    fn reset(&self) -> PyResult<()> {
        self.node.child(&self.info)?.reset();
        Ok(())
    }

    /// Counts exceptions of type `exception` raised out of a block or function.
    #[pyo3(signature = (exception=None))]
    fn count_exceptions<'py>(
        slf: &Bound<'py, Self>,
        exception: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let me = slf.get();
        me.node.child(&me.info)?;
        let py = slf.py();
        let exception = match exception {
            Some(e) => e.clone(),
            None => py.get_type::<pyo3::exceptions::PyException>().into_any(),
        };
        helper(py, "ExceptionCounter", (slf, exception))
    }

    /// The child for these label values, by position or by name.
    #[pyo3(signature = (*values, **by_name))]
    fn labels<'py>(
        slf: &Bound<'py, Self>,
        values: &Bound<'py, PyTuple>,
        by_name: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, Self>> {
        let me = slf.get();
        me.node
            .labels(slf, &me.info, values, by_name, |child| Self {
                node: Node::Child(child),
                info: Arc::clone(&me.info),
            })
    }

    /// Makes `exemplar` (`prometheus_client`'s `Exemplar(labels, value, timestamp)`) the
    /// series' exemplar, timed now, without adding: what `prometheus_client`'s own
    /// `Counter.inc` calls on its value after adding (a subclass that overrides `inc` and
    /// calls the original). Labels OpenMetrics 1.0 cannot carry store none.
    fn set_exemplar(&self, exemplar: &Bound<'_, PyAny>) -> PyResult<()> {
        let labels = exemplar.getattr("labels")?;
        let Some(labels) = check_exemplar(&labels)? else {
            return Ok(());
        };
        let value: f64 = exemplar.getattr("value")?.extract()?;
        let _ = self.node.child(&self.info)?.set_exemplar(value, &labels);
        Ok(())
    }

    /// Always `None`: `prometheus_client` keeps its exemplar on the metric in one process;
    /// here the merged directory has the newest of every process (OpenMetrics shows it).
    fn get_exemplar(&self) -> Option<Py<PyAny>> {
        None
    }

    /// The full metric name (without `_total`).
    #[getter]
    fn name(&self) -> &str {
        &self.info.name
    }

    fn __repr__(&self) -> String {
        repr(&self.info, "Counter")
    }
}

/// A gauge, merged across processes by its `multiprocess_mode`.
#[pyclass(frozen, module = "shmetrics._native", name = "Gauge")]
pub(crate) struct Gauge {
    node: Node<shmetrics_writer::Gauge>,
    info: Arc<Info>,
    mode: GaugeMode,
}

impl Gauge {
    #[inline(always)]
    fn add(&self, delta: f64, what: &str) -> PyResult<()> {
        let child = self.node.child(&self.info)?;
        if self.mode.needs_timestamp() {
            return Err(PyRuntimeError::new_err(format!(
                "{what} must not be used with the mostrecent mode"
            )));
        }
        child.add(delta);
        Ok(())
    }
}

#[pymethods]
impl Gauge {
    #[new]
    #[pyo3(signature = (name, documentation, labelnames=None, namespace="", subsystem="", unit="", registry=None, multiprocess_mode="all"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: &str,
        documentation: &str,
        labelnames: Option<&Bound<'_, PyAny>>,
        namespace: &str,
        subsystem: &str,
        unit: &str,
        registry: Option<&Bound<'_, Registry>>,
        multiprocess_mode: &str,
    ) -> PyResult<Self> {
        let mode: GaugeMode = multiprocess_mode.parse().map_err(|_| {
            PyValueError::new_err(format!("Invalid multiprocess mode: {multiprocess_mode}"))
        })?;
        let info = Info {
            kind: "gauge",
            name: full_name("gauge", name, namespace, subsystem, unit)?,
            label_names: label_names(labelnames)?,
        };
        let family = writer_registry(py, registry)?
            .gauge(
                &info.name,
                documentation,
                &str_refs(&info.label_names),
                mode,
            )
            .map_err(to_py_err)?;
        Ok(Self {
            node: Node::new(py, family)?,
            info: Arc::new(info),
            mode,
        })
    }

    /// Adds `amount` (default 1). Not allowed in the `mostrecent` modes.
    #[pyo3(signature = (amount=1.0))]
    fn inc(&self, amount: f64) -> PyResult<()> {
        self.add(amount, "inc")
    }

    /// Subtracts `amount` (default 1). Not allowed in the `mostrecent` modes.
    #[pyo3(signature = (amount=1.0))]
    fn dec(&self, amount: f64) -> PyResult<()> {
        self.add(-amount, "dec")
    }

    /// Sets the value (`float(value)`). `timestamp` is accepted for compatibility with
    /// `prometheus_client`'s value objects; the write time is taken here.
    #[pyo3(signature = (value, timestamp=None))]
    fn set(&self, value: &Bound<'_, PyAny>, timestamp: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let _ = timestamp;
        let child = self.node.child(&self.info)?;
        child.set(to_f64(value)?);
        Ok(())
    }

    /// Sets the value to the current Unix time in seconds.
    fn set_to_current_time(&self) -> PyResult<()> {
        let child = self.node.child(&self.info)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        child.set(now);
        Ok(())
    }

    /// Increments on entry to a block or function, decrements on exit.
    fn track_inprogress<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let me = slf.get();
        me.node.child(&me.info)?;
        helper(slf.py(), "InprogressTracker", (slf,))
    }

    /// Sets the gauge to the duration of a block or function, in seconds.
    fn time<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        helper(slf.py(), "Timer", (slf, "set"))
    }

    /// The value this process last wrote.
    fn get(&self) -> PyResult<f64> {
        Ok(self.node.child(&self.info)?.get())
    }

    /// The child for these label values, by position or by name.
    #[pyo3(signature = (*values, **by_name))]
    fn labels<'py>(
        slf: &Bound<'py, Self>,
        values: &Bound<'py, PyTuple>,
        by_name: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, Self>> {
        let me = slf.get();
        me.node
            .labels(slf, &me.info, values, by_name, |child| Self {
                node: Node::Child(child),
                info: Arc::clone(&me.info),
                mode: me.mode,
            })
    }

    /// Exemplars are not kept in multiprocess mode.
    fn set_exemplar(&self, _exemplar: &Bound<'_, PyAny>) {}

    /// Always `None`.
    fn get_exemplar(&self) -> Option<Py<PyAny>> {
        None
    }

    /// The merge mode, spelled as in `prometheus_client`.
    #[getter]
    fn multiprocess_mode(&self) -> &'static str {
        self.mode.as_str()
    }

    /// The full metric name.
    #[getter]
    fn name(&self) -> &str {
        &self.info.name
    }

    fn __repr__(&self) -> String {
        repr(&self.info, "Gauge")
    }
}

/// Parses `prometheus_client`'s `buckets` argument: sorted numbers (or numeric strings),
/// `+Inf` appended when missing, at least one finite bound. Returns the finite bounds.
fn parse_buckets(buckets: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<f64>> {
    let Some(buckets) = buckets else {
        return Ok(shmetrics_writer::DEFAULT_BUCKETS.to_vec());
    };
    let mut bounds: Vec<f64> = buckets
        .try_iter()?
        .map(|b| to_f64(&b?))
        .collect::<PyResult<_>>()?;
    if bounds.windows(2).any(|w| w[0] > w[1]) {
        return Err(PyValueError::new_err("Buckets not in sorted order"));
    }
    if bounds.last() != Some(&f64::INFINITY) {
        bounds.push(f64::INFINITY);
    }
    if bounds.len() < 2 {
        return Err(PyValueError::new_err("Must have at least two buckets"));
    }
    bounds.pop();
    Ok(bounds)
}

/// A histogram: per-bucket counts and the sum, summed over every process.
#[pyclass(frozen, module = "shmetrics._native", name = "Histogram")]
pub(crate) struct Histogram {
    node: Node<shmetrics_writer::Histogram>,
    info: Arc<Info>,
    /// Upper bounds including `+Inf`.
    upper_bounds: Arc<[f64]>,
}

#[pymethods]
impl Histogram {
    #[new]
    #[pyo3(signature = (name, documentation, labelnames=None, namespace="", subsystem="", unit="", registry=None, buckets=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: &str,
        documentation: &str,
        labelnames: Option<&Bound<'_, PyAny>>,
        namespace: &str,
        subsystem: &str,
        unit: &str,
        registry: Option<&Bound<'_, Registry>>,
        buckets: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let bounds = parse_buckets(buckets)?;
        let info = Info {
            kind: "histogram",
            name: full_name("histogram", name, namespace, subsystem, unit)?,
            label_names: label_names(labelnames)?,
        };
        let family = writer_registry(py, registry)?
            .histogram(
                &info.name,
                documentation,
                &str_refs(&info.label_names),
                &bounds,
            )
            .map_err(to_py_err)?;
        let upper_bounds = bounds.iter().copied().chain([f64::INFINITY]).collect();
        Ok(Self {
            node: Node::new(py, family)?,
            info: Arc::new(info),
            upper_bounds,
        })
    }

    /// Records one observation. An exemplar (labels as `prometheus_client` checks them)
    /// becomes the exemplar of the bucket `amount` falls in, timed now.
    #[pyo3(signature = (amount, exemplar=None))]
    fn observe(&self, amount: f64, exemplar: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let child = self.node.child(&self.info)?;
        let labels = match exemplar {
            Some(exemplar) => check_exemplar(exemplar)?,
            None => None,
        };
        // As `Counter.inc`: labels OpenMetrics 1.0 cannot carry store no exemplar.
        if labels.is_none_or(|l| child.observe_with_exemplar(amount, &l).is_err()) {
            child.observe(amount);
        }
        Ok(())
    }

    /// Observes the duration of a block or function, in seconds.
    fn time<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        helper(slf.py(), "Timer", (slf, "observe"))
    }

    /// What this process observed: per-bucket counts (not cumulative) and the sum.
    fn get(&self) -> PyResult<(Vec<u64>, f64)> {
        let t = self.node.child(&self.info)?.get();
        Ok((t.buckets, t.sum))
    }

    /// The bucket upper bounds, `+Inf` last.
    #[getter]
    fn upper_bounds(&self) -> Vec<f64> {
        self.upper_bounds.to_vec()
    }

    /// Read-only value objects for `prometheus_client`'s `_sum` and `_buckets` attributes:
    /// `(sum, [bucket, ...])`.
    fn _parts(&self) -> PyResult<(ValuePart, Vec<ValuePart>)> {
        let child = self.node.child(&self.info)?;
        let sum = ValuePart::new(Part::HistogramSum(child.clone()));
        let buckets = (0..self.upper_bounds.len())
            .map(|i| ValuePart::new(Part::Bucket(child.clone(), i)))
            .collect();
        Ok((sum, buckets))
    }

    /// The child for these label values, by position or by name.
    #[pyo3(signature = (*values, **by_name))]
    fn labels<'py>(
        slf: &Bound<'py, Self>,
        values: &Bound<'py, PyTuple>,
        by_name: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, Self>> {
        let me = slf.get();
        me.node
            .labels(slf, &me.info, values, by_name, |child| Self {
                node: Node::Child(child),
                info: Arc::clone(&me.info),
                upper_bounds: Arc::clone(&me.upper_bounds),
            })
    }

    /// The full metric name.
    #[getter]
    fn name(&self) -> &str {
        &self.info.name
    }

    fn __repr__(&self) -> String {
        repr(&self.info, "Histogram")
    }
}

/// A summary: observation count and sum, summed over every process (no quantiles, as in
/// `prometheus_client`).
#[pyclass(frozen, module = "shmetrics._native", name = "Summary")]
pub(crate) struct Summary {
    node: Node<shmetrics_writer::Summary>,
    info: Arc<Info>,
}

#[pymethods]
impl Summary {
    #[new]
    #[pyo3(signature = (name, documentation, labelnames=None, namespace="", subsystem="", unit="", registry=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: &str,
        documentation: &str,
        labelnames: Option<&Bound<'_, PyAny>>,
        namespace: &str,
        subsystem: &str,
        unit: &str,
        registry: Option<&Bound<'_, Registry>>,
    ) -> PyResult<Self> {
        let info = Info {
            kind: "summary",
            name: full_name("summary", name, namespace, subsystem, unit)?,
            label_names: label_names(labelnames)?,
        };
        let family = writer_registry(py, registry)?
            .summary(&info.name, documentation, &str_refs(&info.label_names))
            .map_err(to_py_err)?;
        Ok(Self {
            node: Node::new(py, family)?,
            info: Arc::new(info),
        })
    }

    /// Records one observation.
    fn observe(&self, amount: f64) -> PyResult<()> {
        self.node.child(&self.info)?.observe(amount);
        Ok(())
    }

    /// Observes the duration of a block or function, in seconds.
    fn time<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        helper(slf.py(), "Timer", (slf, "observe"))
    }

    /// What this process observed: `(count, sum)`.
    fn get(&self) -> PyResult<(u64, f64)> {
        let t = self.node.child(&self.info)?.get();
        Ok((t.count, t.sum))
    }

    /// Read-only value objects for `prometheus_client`'s `_count` and `_sum` attributes.
    fn _parts(&self) -> PyResult<(ValuePart, ValuePart)> {
        let child = self.node.child(&self.info)?;
        Ok((
            ValuePart::new(Part::Count(child.clone())),
            ValuePart::new(Part::SummarySum(child.clone())),
        ))
    }

    /// The child for these label values, by position or by name.
    #[pyo3(signature = (*values, **by_name))]
    fn labels<'py>(
        slf: &Bound<'py, Self>,
        values: &Bound<'py, PyTuple>,
        by_name: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, Self>> {
        let me = slf.get();
        me.node
            .labels(slf, &me.info, values, by_name, |child| Self {
                node: Node::Child(child),
                info: Arc::clone(&me.info),
            })
    }

    /// The full metric name.
    #[getter]
    fn name(&self) -> &str {
        &self.info.name
    }

    fn __repr__(&self) -> String {
        repr(&self.info, "Summary")
    }
}

enum Part {
    Bucket(shmetrics_writer::Histogram, usize),
    HistogramSum(shmetrics_writer::Histogram),
    Count(shmetrics_writer::Summary),
    SummarySum(shmetrics_writer::Summary),
}

/// One number of a histogram or summary child, in the shape of a `prometheus_client` value
/// object, so that code reading `h._sum.get()` or `h._buckets[i].get()` keeps working.
/// Writes go through `observe` only: a histogram's bucket, sum and count change together.
#[pyclass(frozen, module = "shmetrics._native", name = "ValuePart")]
pub(crate) struct ValuePart {
    part: Part,
}

impl ValuePart {
    fn new(part: Part) -> Self {
        Self { part }
    }
}

#[pymethods]
impl ValuePart {
    /// This process's value (a bucket's own count, not cumulative).
    fn get(&self) -> f64 {
        match &self.part {
            Part::Bucket(h, i) => h.get().buckets[*i] as f64,
            Part::HistogramSum(h) => h.get().sum,
            Part::Count(s) => s.get().count as f64,
            Part::SummarySum(s) => s.get().sum,
        }
    }

    /// Refused: record observations with `observe`.
    #[pyo3(signature = (*_args, **_kwargs))]
    fn inc(&self, _args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        Err(self.read_only())
    }

    /// Refused: record observations with `observe`.
    #[pyo3(signature = (*_args, **_kwargs))]
    fn set(&self, _args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        Err(self.read_only())
    }

    /// Exemplars are not kept in multiprocess mode.
    fn set_exemplar(&self, _exemplar: &Bound<'_, PyAny>) {}

    /// Always `None`.
    fn get_exemplar(&self) -> Option<Py<PyAny>> {
        None
    }
}

impl ValuePart {
    fn read_only(&self) -> PyErr {
        PyNotImplementedError::new_err(
            "shmetrics histogram and summary parts are read-only: use observe(), which \
             updates bucket, sum and count together",
        )
    }
}

// The native fast paths (`fastcall.rs`): each write does what its method does for one
// number given by position (no exemplar) and returns true, or returns false having done
// nothing where the method must answer (a parent, a refused amount or mode), so that the
// method raises its own error; `labels` finds a parent's known children.
crate::fastcall::fast_methods! {
    writes {
        CounterInc: Counter, c"inc", Some(1.0),
            |c, v| (v >= 0.0 || v.is_nan()) && c.node.write(|child| child.inc_by(v));
        GaugeInc: Gauge, c"inc", Some(1.0),
            |g, v| !g.mode.needs_timestamp() && g.node.write(|child| child.add(v));
        GaugeDec: Gauge, c"dec", Some(1.0),
            |g, v| !g.mode.needs_timestamp() && g.node.write(|child| child.add(-v));
        GaugeSet: Gauge, c"set", None, |g, v| g.node.write(|child| child.set(v));
        HistogramObserve: Histogram, c"observe", None, |h, v| h.node.write(|child| child.observe(v));
        SummaryObserve: Summary, c"observe", None, |s, v| s.node.write(|child| child.observe(v));
    }
    labels {
        CounterLabels: Counter;
        GaugeLabels: Gauge;
        HistogramLabels: Histogram;
        SummaryLabels: Summary;
    }
}
