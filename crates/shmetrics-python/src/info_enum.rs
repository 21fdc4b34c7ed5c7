//! `Info` and `Enum`: `prometheus_client`'s classes that its multiprocess mode cannot hold,
//! written to the process's segment as an info and a stateset family and merged across
//! processes by their `multiprocess_mode` (`livemostrecent` by default: the value last set
//! by a live process; `mostrecent`: by any process).

use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use shmetrics_writer::GaugeMode;

use crate::labels::{Info, Node, full_name, label_names, label_strings};
use crate::registry::{Registry, to_py_err, writer_registry};

/// The merge mode of an info or enum: `livemostrecent` or `mostrecent`.
fn newest_mode(multiprocess_mode: &str) -> PyResult<GaugeMode> {
    match multiprocess_mode.parse::<GaugeMode>() {
        Ok(mode @ (GaugeMode::MostRecent | GaugeMode::LiveMostRecent)) => Ok(mode),
        _ => Err(PyValueError::new_err(format!(
            "Invalid multiprocess mode for an info or enum: {multiprocess_mode} (livemostrecent or mostrecent)"
        ))),
    }
}

/// Label values from `labels(*values, **by_name)`, as every metric class takes them.
fn label_values(
    info: &Info,
    values: &Bound<'_, PyTuple>,
    by_name: Option<&Bound<'_, PyDict>>,
) -> PyResult<Vec<String>> {
    if info.label_names.is_empty() {
        return Err(PyValueError::new_err(format!(
            "No label names were set when constructing {}:{}",
            info.kind, info.name
        )));
    }
    let by_name = by_name.filter(|d| !d.is_empty());
    if !values.is_empty() && by_name.is_some() {
        return Err(PyValueError::new_err("Can't pass both *args and **kwargs"));
    }
    label_strings(info, values, by_name)
}

/// An info: a set of labels describing something (`name_info`, value 1). Each label set of
/// the metric shows the info last set.
#[pyclass(frozen, module = "shmetrics._native", name = "Info")]
pub(crate) struct InfoMetric {
    family: shmetrics_writer::InfoFamily,
    /// The label values of a child; `None` for a labelled parent.
    values: Option<Vec<String>>,
    info: Arc<Info>,
}

#[pymethods]
impl InfoMetric {
    #[new]
    #[pyo3(signature = (name, documentation, labelnames=None, namespace="", subsystem="", unit="", registry=None, multiprocess_mode="livemostrecent"))]
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
        let mode = newest_mode(multiprocess_mode)?;
        let info = Info {
            kind: "info",
            name: full_name("info", name, namespace, subsystem, unit)?,
            label_names: label_names(labelnames)?,
        };
        let names: Vec<&str> = info.label_names.iter().map(String::as_str).collect();
        let family = writer_registry(py, registry)?
            .info(&info.name, documentation, &names, mode)
            .map_err(to_py_err)?;
        Ok(Self {
            family,
            values: info.label_names.is_empty().then(Vec::new),
            info: Arc::new(info),
        })
    }

    /// Sets the info: a dict of label names (not the metric's) to values.
    fn info(&self, val: &Bound<'_, PyDict>) -> PyResult<()> {
        let Some(values) = &self.values else {
            return Err(self.info.missing_labels());
        };
        let pairs: Vec<(String, String)> = val
            .iter()
            .map(|(k, v)| Ok((k.extract::<String>()?, v.extract::<String>()?)))
            .collect::<PyResult<_>>()?;
        self.family.set(values, &pairs).map_err(to_py_err)
    }

    /// The child for these label values, by position or by name.
    #[pyo3(signature = (*values, **by_name))]
    fn labels(
        &self,
        values: &Bound<'_, PyTuple>,
        by_name: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        if self.values.is_some() && !self.info.label_names.is_empty() {
            return Err(PyValueError::new_err(format!(
                "info:{} already has labels set; can not chain calls to .labels()",
                self.info.name
            )));
        }
        Ok(Self {
            family: self.family.clone(),
            values: Some(label_values(&self.info, values, by_name)?),
            info: Arc::clone(&self.info),
        })
    }

    /// The full metric name.
    #[getter]
    fn name(&self) -> &str {
        &self.info.name
    }

    fn __repr__(&self) -> String {
        format!("shmetrics.Info({})", self.info.name)
    }
}

/// An enum: which of a fixed list of states each label set is in (OpenMetrics' stateset;
/// the first state until one is set).
#[pyclass(frozen, module = "shmetrics._native", name = "Enum")]
pub(crate) struct EnumMetric {
    node: Node<shmetrics_writer::StateSet>,
    info: Arc<Info>,
}

#[pymethods]
impl EnumMetric {
    #[new]
    #[pyo3(signature = (name, documentation, labelnames=None, namespace="", subsystem="", unit="", registry=None, states=None, multiprocess_mode="livemostrecent"))]
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
        states: Option<Vec<String>>,
        multiprocess_mode: &str,
    ) -> PyResult<Self> {
        let mode = newest_mode(multiprocess_mode)?;
        let info = Info {
            kind: "stateset",
            name: full_name("enum", name, namespace, subsystem, unit)?,
            label_names: label_names(labelnames)?,
        };
        let states = states.unwrap_or_default();
        if states.is_empty() {
            return Err(PyValueError::new_err(format!(
                "No states provided for Enum metric: {}",
                info.name
            )));
        }
        let names: Vec<&str> = info.label_names.iter().map(String::as_str).collect();
        let states: Vec<&str> = states.iter().map(String::as_str).collect();
        let family = writer_registry(py, registry)?
            .state_set(&info.name, documentation, &names, &states, mode)
            .map_err(to_py_err)?;
        Ok(Self {
            node: Node::new(py, family)?,
            info: Arc::new(info),
        })
    }

    /// Enters `state`, one of the metric's states.
    fn state(&self, state: &str) -> PyResult<()> {
        self.node
            .child(&self.info)?
            .state(state)
            .map_err(|e| PyValueError::new_err(e.to_string()))
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
        format!("shmetrics.Enum({})", self.info.name)
    }
}
