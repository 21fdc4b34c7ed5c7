//! `CallFloor`: metric-shaped methods that do nothing, the floor of the Python write path.
//! `benches/compare/python_api.py` times `c.inc()`, `c.labels(...).inc()` and
//! `h.observe(v)` on it beside the real metrics: the cost of a call into a PyO3 method. The
//! write methods' own entry points (`fastcall.rs`) skip PyO3's argument handling, so they
//! can run below it.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

/// Empty methods with the signatures of the metrics' hot ones.
#[pyclass(frozen, module = "shmetrics._native", name = "CallFloor")]
pub(crate) struct CallFloor;

#[pymethods]
impl CallFloor {
    #[new]
    fn new() -> Self {
        Self
    }

    /// As `Counter.inc`, doing nothing.
    #[pyo3(signature = (amount=1.0, exemplar=None))]
    fn inc(&self, amount: f64, exemplar: Option<&Bound<'_, PyAny>>) {
        let _ = (amount, exemplar);
    }

    /// As `Histogram.observe`, doing nothing.
    #[pyo3(signature = (amount, exemplar=None))]
    fn observe(&self, amount: f64, exemplar: Option<&Bound<'_, PyAny>>) {
        let _ = (amount, exemplar);
    }

    /// As `labels(...)`, returning this object (the arguments taken as a metric's are).
    #[pyo3(signature = (*values, **by_name))]
    fn labels<'py>(
        slf: &Bound<'py, Self>,
        values: &Bound<'py, PyTuple>,
        by_name: Option<&Bound<'py, PyDict>>,
    ) -> Bound<'py, Self> {
        let _ = (values, by_name);
        slf.clone()
    }
}
