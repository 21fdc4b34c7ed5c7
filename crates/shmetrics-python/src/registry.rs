//! The writer registry as a Python object, the process-wide default registry, and the
//! mapping of writer errors to Python exceptions.

use std::path::PathBuf;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// A process's metrics registry: its segments in one metrics directory.
///
/// `Registry()` opens `PROMETHEUS_MULTIPROC_DIR`; `Registry(path)` opens `path`. Metrics
/// created without a `registry` argument use [`default_registry`].
#[pyclass(frozen, module = "shmetrics._native", name = "Registry")]
pub(crate) struct Registry {
    pub(crate) inner: shmetrics_writer::Registry,
}

#[pymethods]
impl Registry {
    /// `process`: the logical process this registry writes for, instead of this one (a
    /// `prometheus_client` custom process identifier); readers see it alive until
    /// `end_liveness()`. `follow_environment`: a forked child writes into the directory
    /// `PROMETHEUS_MULTIPROC_DIR` names at the fork, as `prometheus_client`'s files do.
    #[new]
    #[pyo3(signature = (path=None, *, process=None, follow_environment=false))]
    fn new(
        path: Option<PathBuf>,
        process: Option<u32>,
        follow_environment: bool,
    ) -> PyResult<Self> {
        let options = shmetrics_writer::Options {
            follow_env_dir_after_fork: follow_environment,
            ..shmetrics_writer::Options::from_env()
        };
        let inner = match (path, process) {
            (Some(path), Some(pid)) => {
                shmetrics_writer::Registry::open_simulating_pid(path, options, pid)
            }
            (Some(path), None) => shmetrics_writer::Registry::open_with(path, options),
            (None, None) => match std::env::var_os(shmetrics_writer::DIR_ENV) {
                Some(dir) if !dir.is_empty() => shmetrics_writer::Registry::open_with(dir, options),
                _ => Err(shmetrics_writer::Error::DirUnset),
            },
            (None, Some(_)) => {
                return Err(PyValueError::new_err(
                    "a registry for another process needs its directory",
                ));
            }
        }
        .map_err(to_py_err)?;
        Ok(Self { inner })
    }

    /// Tells readers this registry's process is dead (`mark_process_dead` for a logical
    /// process): its `live*` gauges leave the merge.
    fn end_liveness(&self) {
        self.inner.end_liveness();
    }

    /// The metrics directory.
    #[getter]
    fn path(&self) -> String {
        self.inner.dir().to_string_lossy().into_owned()
    }

    /// Paths of this process's segment files, first segment first.
    fn segment_paths(&self) -> Vec<String> {
        self.inner
            .segment_paths()
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    }

    /// Series that could not be placed in any segment.
    fn dropped_series(&self) -> u64 {
        self.inner.dropped_series()
    }

    fn __repr__(&self) -> String {
        format!("shmetrics.Registry({:?})", self.inner.dir())
    }
}

static DEFAULT: PyOnceLock<Py<Registry>> = PyOnceLock::new();

/// The process-wide default registry, opened on first use in `PROMETHEUS_MULTIPROC_DIR`.
/// Raises `ValueError` while the variable is unset (and opens it once it is set).
#[pyfunction]
pub(crate) fn default_registry(py: Python<'_>) -> PyResult<Py<Registry>> {
    DEFAULT
        .get_or_try_init(py, || {
            // Defined by the variable, after a fork too.
            let options = shmetrics_writer::Options {
                follow_env_dir_after_fork: true,
                ..shmetrics_writer::Options::from_env()
            };
            let inner = match std::env::var_os(shmetrics_writer::DIR_ENV) {
                Some(dir) if !dir.is_empty() => shmetrics_writer::Registry::open_with(dir, options),
                _ => Err(shmetrics_writer::Error::DirUnset),
            }
            .map_err(to_py_err)?;
            Py::new(py, Registry { inner })
        })
        .map(|r| r.clone_ref(py))
}

/// The default registry, or `None` while `PROMETHEUS_MULTIPROC_DIR` is unset or empty.
#[pyfunction]
pub(crate) fn configured_registry(py: Python<'_>) -> PyResult<Option<Py<Registry>>> {
    if let Some(r) = DEFAULT.get(py) {
        return Ok(Some(r.clone_ref(py)));
    }
    match std::env::var_os(shmetrics_writer::DIR_ENV) {
        Some(dir) if !dir.is_empty() => default_registry(py).map(Some),
        _ => Ok(None),
    }
}

/// How many times this process re-created its segments after a `fork()`.
#[pyfunction]
pub(crate) fn fork_recreations() -> u64 {
    shmetrics_writer::fork_recreations()
}

/// Maps a writer error to the Python exception a `prometheus_client` user expects: bad
/// definitions and labels are `ValueError`, file system failures `OSError`.
pub(crate) fn to_py_err(e: shmetrics_writer::Error) -> PyErr {
    use shmetrics_writer::Error;
    match e {
        Error::NoSpace { .. } | Error::Io { .. } => PyOSError::new_err(e.to_string()),
        // Bad definitions, labels, options or directories, full segments.
        _ => PyValueError::new_err(e.to_string()),
    }
}

/// The writer registry a metric is created in: `registry` if given, else the default.
pub(crate) fn writer_registry(
    py: Python<'_>,
    registry: Option<&Bound<'_, Registry>>,
) -> PyResult<shmetrics_writer::Registry> {
    match registry {
        Some(r) => Ok(r.get().inner.clone()),
        None => Ok(default_registry(py)?.get().inner.clone()),
    }
}
