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
}
