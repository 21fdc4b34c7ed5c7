//! `shmetrics._native`: the extension module behind the `shmetrics` Python package.
//!
//! Metric objects in the style of `prometheus_client` (`Counter`, `Gauge`, `Histogram`,
//! `Summary`) whose writes go straight to the process's shared-memory segment through the
//! writer crate, and a `Reader` that merges a directory for the collector. The pure-Python
//! layer (`python/shmetrics/`) adds the `prometheus_client` drop-in and the helpers.
//!
//! `unsafe` only in `fastcall.rs` (vectorcall entry points written against the C API for
//! the calls made once per write); every memory access goes through the writer and reader
//! crates.

mod collect;
mod compat;
mod fastcall;
mod floor;
mod info_enum;
mod labels;
mod metrics;
mod registry;

use pyo3::prelude::*;

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<registry::Registry>()?;
    m.add_class::<metrics::Counter>()?;
    m.add_class::<metrics::Gauge>()?;
    m.add_class::<metrics::Histogram>()?;
    m.add_class::<metrics::Summary>()?;
    m.add_class::<metrics::ValuePart>()?;
    m.add_class::<info_enum::InfoMetric>()?;
    m.add_class::<info_enum::EnumMetric>()?;
    m.add_class::<collect::Reader>()?;
    m.add_class::<fastcall::FastLabels>()?;
    m.add_function(wrap_pyfunction!(fastcall::fast_labels, m)?)?;
    metrics::install_fast_methods(m.py())?;
    m.add_class::<floor::CallFloor>()?;
    m.add_function(wrap_pyfunction!(compat::float_to_go_string, m)?)?;
    m.add_function(wrap_pyfunction!(registry::default_registry, m)?)?;
    m.add_function(wrap_pyfunction!(registry::configured_registry, m)?)?;
    m.add_function(wrap_pyfunction!(registry::fork_recreations, m)?)?;
    m.add(
        "DEFAULT_BUCKETS",
        shmetrics_writer::DEFAULT_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .collect::<Vec<f64>>(),
    )?;
    Ok(())
}
