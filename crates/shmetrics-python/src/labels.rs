//! What the four metric classes share: naming, the parent/child split, `labels(...)`,
//! exemplar validation and the Python helpers (`time()`, `track_inprogress()`, ...).

use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple};
use shmetrics_writer::{Child, Family};

use crate::fastcall::Recent;

/// A metric object is either a labelled parent that hands out children, or a child (an
/// unlabelled metric is its own only child) that writes.
pub(crate) enum Node<C: Child> {
    /// A family with label names; `children` maps label-value tuples to child objects.
    Parent {
        family: Family<C>,
        children: Py<PyDict>,
        /// Label sets found recently, for the native `labels` (`fastcall.rs`); boxed, as
        /// children (the other variant) are many and small.
        recent: Box<Recent>,
    },
    /// A resolved series handle.
    Child(C),
}

/// Identity of a metric object, shared by a parent and its children.
#[derive(Debug)]
pub(crate) struct Info {
    /// `counter`, `gauge`, `histogram` or `summary`.
    pub(crate) kind: &'static str,
    /// Full name (a counter's without `_total`).
    pub(crate) name: String,
    pub(crate) label_names: Vec<String>,
}

impl Info {
    /// The error `prometheus_client` raises when a labelled parent is written to.
    pub(crate) fn missing_labels(&self) -> PyErr {
        PyValueError::new_err(format!("{} metric is missing label values", self.kind))
    }
}

/// Builds a full metric name the way `prometheus_client` does: `namespace_subsystem_name`,
/// a counter's `_total` removed, `_unit` appended unless already there.
pub(crate) fn full_name(
    kind: &str,
    name: &str,
    namespace: &str,
    subsystem: &str,
    unit: &str,
) -> PyResult<String> {
    if name.is_empty() {
        return Err(PyValueError::new_err("Metric name should not be empty"));
    }
    let mut full = String::new();
    for part in [namespace, subsystem] {
        if !part.is_empty() {
            full.push_str(part);
            full.push('_');
        }
    }
    full.push_str(name);
    if kind == "counter"
        && let Some(base) = full.strip_suffix("_total")
    {
        full.truncate(base.len());
    }
    if !unit.is_empty() && !full.ends_with(&format!("_{unit}")) {
        full.push('_');
        full.push_str(unit);
    }
    Ok(full)
}

/// Label names from any iterable of strings (`None` for none). A lone string is refused, as
/// it would otherwise be split into one-letter names.
pub(crate) fn label_names(names: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    let Some(names) = names else {
        return Ok(Vec::new());
    };
    if names.is_instance_of::<PyString>() {
        return Err(PyValueError::new_err(
            "labelnames must be a sequence of strings, not a string",
        ));
    }
    names.try_iter()?.map(|n| n?.extract::<String>()).collect()
}

impl<C: Child + Clone> Node<C> {
    /// A parent for a family with label names; the child for a family without.
    pub(crate) fn new(py: Python<'_>, family: Family<C>) -> PyResult<Self> {
        if family.def().label_names.is_empty() {
            let child = family.unlabelled().map_err(crate::registry::to_py_err)?;
            Ok(Self::Child(child.clone()))
        } else {
            Ok(Self::Parent {
                family,
                children: PyDict::new(py).unbind(),
                recent: Box::new(Recent::new()),
            })
        }
    }

    /// A parent's children dict and remembered label sets (the native `labels` fast path).
    #[inline(always)]
    pub(crate) fn parent(&self) -> Option<(&Py<PyDict>, &Recent)> {
        match self {
            Self::Parent {
                children, recent, ..
            } => Some((children, recent)),
            Self::Child(_) => None,
        }
    }

    /// Runs `write` on the child handle and returns true, or returns false for a parent
    /// (no error built: the native fast paths, `fastcall.rs`).
    #[inline(always)]
    pub(crate) fn write(&self, write: impl FnOnce(&C)) -> bool {
        match self {
            Self::Child(c) => {
                write(c);
                true
            }
            Self::Parent { .. } => false,
        }
    }

    /// The child handle, or `prometheus_client`'s error for a parent.
    #[inline(always)]
    pub(crate) fn child(&self, info: &Info) -> PyResult<&C> {
        match self {
            Self::Child(c) => Ok(c),
            Self::Parent { .. } => Err(info.missing_labels()),
        }
    }

    /// Resolves `labels(*values, **by_name)` on `slf` to a child object, creating the series
    /// and the object on first use. Values are converted with `str()`, as in
    /// `prometheus_client`.
    pub(crate) fn labels<'py, T>(
        &self,
        slf: &Bound<'py, T>,
        info: &Arc<Info>,
        values: &Bound<'py, PyTuple>,
        by_name: Option<&Bound<'py, PyDict>>,
        make: impl FnOnce(C) -> T,
    ) -> PyResult<Bound<'py, T>>
    where
        T: pyo3::PyClass + Into<pyo3::PyClassInitializer<T>>,
    {
        let py = slf.py();
        let (family, children) = match self {
            Self::Parent {
                family, children, ..
            } => (family, children.bind(py)),
            Self::Child(_) if info.label_names.is_empty() => {
                return Err(PyValueError::new_err(format!(
                    "No label names were set when constructing {}:{}",
                    info.kind, info.name
                )));
            }
            Self::Child(_) => {
                return Err(PyValueError::new_err(format!(
                    "{}:{} already has labels set; can not chain calls to .labels()",
                    info.kind, info.name
                )));
            }
        };
        let by_name = by_name.filter(|d| !d.is_empty());
        if !values.is_empty() && by_name.is_some() {
            return Err(PyValueError::new_err("Can't pass both *args and **kwargs"));
        }
        // Fast path: the exact tuple given was seen before (label values that are strings).
        if by_name.is_none()
            && let Ok(Some(hit)) = children.get_item(values)
        {
            return Ok(hit.cast_into::<T>()?);
        }
        let strings = label_strings(info, values, by_name)?;
        // Label values given as `str` by position are their own `str()`: the tuple given is
        // the key, and a later call with the same string objects (literals, interned) is
        // found by identity, without comparing characters.
        let key =
            if by_name.is_none() && values.iter().all(|v| v.is_exact_instance_of::<PyString>()) {
                values.clone()
            } else {
                PyTuple::new(py, &strings)?
            };
        if let Some(hit) = children.get_item(&key)? {
            return Ok(hit.cast_into::<T>()?);
        }
        let child = family
            .labels(&strings)
            .map_err(crate::registry::to_py_err)?
            .clone();
        let object = Bound::new(py, make(child))?;
        children.set_item(key, &object)?;
        Ok(object)
    }
}

/// The label values of `labels(*values, **by_name)` (after the fast path), by position or
/// by name, converted with `str()`; `prometheus_client`'s errors otherwise.
pub(crate) fn label_strings(
    info: &Info,
    values: &Bound<'_, PyTuple>,
    by_name: Option<&Bound<'_, PyDict>>,
) -> PyResult<Vec<String>> {
    Ok(match by_name {
        Some(by_name) => {
            let mut given: Vec<String> = by_name
                .keys()
                .iter()
                .map(|k| k.extract::<String>())
                .collect::<PyResult<_>>()?;
            let mut expected = info.label_names.clone();
            given.sort();
            expected.sort();
            if given != expected {
                return Err(PyValueError::new_err("Incorrect label names"));
            }
            info.label_names
                .iter()
                .map(|n| {
                    let v = by_name.get_item(n)?.expect("checked above");
                    Ok(v.str()?.to_cow()?.into_owned())
                })
                .collect::<PyResult<_>>()?
        }
        None => {
            if values.len() != info.label_names.len() {
                return Err(PyValueError::new_err("Incorrect label count"));
            }
            values
                .iter()
                .map(|v| Ok(v.str()?.to_cow()?.into_owned()))
                .collect::<PyResult<_>>()?
        }
    })
}

/// Checks an exemplar: with `prometheus_client`'s own check once it is imported (its
/// version's label-name rules, UTF-8 or legacy), else with the legacy rules (valid label
/// names, at most 128 characters in all). Returns the labels to store (names, values as
/// `str()` gives them), `None` for an empty or absent exemplar (none is stored, as
/// `prometheus_client` stores none).
pub(crate) fn check_exemplar(
    exemplar: &Bound<'_, PyAny>,
) -> PyResult<Option<Vec<(String, String)>>> {
    if !exemplar.is_truthy()? {
        return Ok(None);
    }
    let mut labels = Vec::new();
    for item in exemplar.call_method0("items")?.try_iter()? {
        let (name, value): (String, Bound<'_, PyAny>) = item?.extract()?;
        labels.push((name, value.str()?.to_cow()?.into_owned()));
    }
    // Once prometheus_client is loaded, its own check decides, so the drop-in accepts and
    // refuses exactly what it does in the same version and name-validation mode.
    if let Some(validate) = upstream_exemplar_check(exemplar.py())? {
        validate.call1(exemplar.py(), (exemplar,))?;
        return Ok(Some(labels));
    }
    let mut runes = 0;
    for (name, value) in &labels {
        if !shmetrics_layout::names::is_valid_label_name(name) {
            return Err(PyValueError::new_err(format!(
                "Invalid label metric name: {name}"
            )));
        }
        runes += name.chars().count() + value.chars().count();
    }
    if runes > 128 {
        return Err(PyValueError::new_err(format!(
            "Exemplar labels have {runes} UTF-8 characters, exceeding the limit of 128"
        )));
    }
    Ok(Some(labels))
}

static UPSTREAM_EXEMPLAR_CHECK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `prometheus_client`'s `_validate_exemplar` (in `validation` from 0.22, in `metrics`
/// before), once `prometheus_client` is imported; `None` before.
fn upstream_exemplar_check(py: Python<'_>) -> PyResult<Option<&Py<PyAny>>> {
    if let Some(check) = UPSTREAM_EXEMPLAR_CHECK.get(py) {
        return Ok(Some(check));
    }
    let modules = py.import("sys")?.getattr("modules")?;
    if !modules.contains("prometheus_client")? {
        return Ok(None);
    }
    let found = ["prometheus_client.validation", "prometheus_client.metrics"]
        .iter()
        .find_map(|m| py.import(*m).ok()?.getattr("_validate_exemplar").ok());
    Ok(found.map(|f| UPSTREAM_EXEMPLAR_CHECK.get_or_init(py, || f.unbind())))
}

static HELPERS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// Builds one of the `shmetrics._helpers` objects (`Timer`, `InprogressTracker`,
/// `ExceptionCounter`) from `args`.
pub(crate) fn helper<'py, A>(py: Python<'py>, class: &str, args: A) -> PyResult<Bound<'py, PyAny>>
where
    A: pyo3::call::PyCallArgs<'py>,
{
    let module = HELPERS.get_or_try_init(py, || {
        PyModule::import(py, "shmetrics._helpers").map(Bound::unbind)
    })?;
    module.bind(py).getattr(class)?.call1(args)
}
