//! The definition of a family, as registered: what the registry compares on a second
//! registration, what placement declares in each segment, what handles are built from.

use std::sync::Arc;

use shmetrics_layout::{GaugeMode, MetricKind};

/// The definition of a family, as registered.
#[derive(Clone, Debug, PartialEq)]
pub struct FamilyDef {
    /// Metric type.
    pub kind: MetricKind,
    /// Gauge merge mode; `Some` exactly for gauges.
    pub mode: Option<GaugeMode>,
    /// Family name (a counter's without its `_total` suffix).
    pub name: String,
    /// Help text.
    pub help: String,
    /// Label names.
    pub label_names: Vec<String>,
    /// Finite bucket bounds (histograms only).
    pub bounds: Arc<[f64]>,
    /// States (statesets only).
    pub states: Arc<[String]>,
    /// Copies of each series' slots that writes spread over, one per writing thread (1
    /// unless registered with `Registry::histogram_striped` or `counter_striped`): a
    /// process-local detail, each copy a series record of its own that readers add up.
    pub stripes: usize,
}

/// The most stripes a family may have (`Registry::histogram_striped`, `counter_striped`).
pub const MAX_STRIPES: usize = 64;

/// Whether a family may keep `stripes` copies of each series: a power of two from 1 to
/// [`MAX_STRIPES`].
pub const fn valid_stripes(stripes: usize) -> bool {
    stripes.is_power_of_two() && stripes <= MAX_STRIPES
}
