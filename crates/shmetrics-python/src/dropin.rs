//! Native pieces of the `prometheus_client` drop-in (`python/shmetrics/prometheus_client.py`).

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple, PyWeakrefReference};

/// `labels(...)` of one labelled `prometheus_client` metric, bound to it as an instance
/// attribute by the drop-in: a label set seen before, given by position as strings, is found
/// in the metric's own `_metrics` dict with no Python frame and no lock; every other call
/// goes to `prometheus_client`'s own `labels`, which validates, converts and creates.
///
/// It holds that dict itself (no attribute lookup per call): `prometheus_client` changes it
/// in place (`labels`, `remove`, `remove_by_labels`) except in `clear()`, which replaces it,
/// and the drop-in's `clear` binds a new `FastLabels` then. The metric is held weakly (for the
/// fallback), so binding creates no reference cycle.
#[pyclass(frozen, module = "shmetrics._native", name = "FastLabels")]
pub(crate) struct FastLabels {
    metric: Py<PyWeakrefReference>,
    fallback: Py<PyAny>,
    children: Py<PyDict>,
}

#[pymethods]
impl FastLabels {
    #[new]
    fn new(metric: &Bound<'_, PyAny>, fallback: Py<PyAny>) -> PyResult<Self> {
        Ok(Self {
            metric: PyWeakrefReference::new(metric)?.unbind(),
            fallback,
            children: metric
                .getattr(pyo3::intern!(metric.py(), "_metrics"))?
                .cast_into::<PyDict>()?
                .unbind(),
        })
    }

    #[pyo3(signature = (*values, **by_name))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        values: &Bound<'py, PyTuple>,
        by_name: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if by_name.is_none_or(|d| d.is_empty())
            && let Ok(Some(child)) = self.children.bind(py).get_item(values)
        {
            return Ok(child);
        }
        let Some(metric) = self.metric.bind(py).upgrade() else {
            return Err(pyo3::exceptions::PyReferenceError::new_err(
                "the metric of this labels() method no longer exists",
            ));
        };
        let mut args = Vec::with_capacity(values.len() + 1);
        args.push(metric);
        args.extend(values.iter());
        let args = PyTuple::new(py, args)?;
        self.fallback.bind(py).call(args, by_name)
    }
}
