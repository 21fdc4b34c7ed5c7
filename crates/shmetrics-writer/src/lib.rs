//! The shmetrics writer, linked into each instrumented process.
//!
//! [`Registry::open`] creates this process's segment in the metrics directory (by default
//! `PROMETHEUS_MULTIPROC_DIR`); families hand out child handles per label set; a handle's
//! `inc`, `set` and `observe` are one to three atomic instructions on the process's own
//! segment: no lock, no system call, no allocation, no hashing. A counter or histogram that
//! a pool of threads writes at once can be registered striped
//! ([`Registry::counter_striped`], [`Registry::histogram_striped`]): each thread then
//! writes a copy of the series of its own, picked by a thread-local number.
//!
//! ```no_run
//! # fn main() -> Result<(), shmetrics_writer::Error> {
//! use shmetrics_writer::{GaugeMode, Registry};
//!
//! let registry = Registry::open("/tmp/metrics")?;
//! let requests = registry.counter("http_requests_total", "Requests served.", &["code"])?;
//! let ok = requests.labels(&["200"])?.clone();
//! ok.inc();
//!
//! let latency = registry.histogram("http_latency_seconds", "Latency.", &[], &[0.1, 0.5, 1.0])?;
//! latency.unlabelled()?.observe(0.27);
//!
//! let in_flight = registry.gauge("http_in_flight", "In flight.", &[], GaugeMode::LiveSum)?;
//! in_flight.unlabelled()?.inc();
//! # Ok(()) }
//! ```
//!
//! Fork safety: a child created by `fork()` gets segments of its own before `fork()`
//! returns, and all existing handles follow (see the `fork` module docs). Liveness: the
//! process holds an exclusive `flock` on each of its segments for as long as any handle or
//! the registry lives; the kernel drops it when the process dies, which is how readers tell
//! live processes from dead ones.
#![warn(missing_docs)]

// The modules import one another without a cycle: error, identity, options, def and
// child_table import no other; segment imports error; placement (the shared state and the
// placing of series) imports those; exemplars, family and fork import placement (family
// imports exemplars too); stripes imports exemplars, identity and placement, family
// imports stripes; registry imports family and fork.
pub mod child_table;
mod def;
mod error;
mod exemplars;
mod family;
mod fork;
mod identity;
mod options;
mod placement;
mod registry;
mod segment;
mod stripes;

pub use def::{FamilyDef, MAX_STRIPES, valid_stripes};
pub use error::{Difference, Error, Result, SegmentOp};
#[doc(hidden)]
pub use exemplars::Placed;
pub use family::{
    Child, Counter, CounterFamily, Family, Gauge, GaugeFamily, Histogram, HistogramFamily,
    HistogramTotals, InfoFamily, InfoSeries, StateSet, StateSetFamily, Summary, SummaryFamily,
    SummaryTotals,
};
pub use options::{GUARD_TRUNCATION_ENV, Options};
pub use registry::{DEFAULT_BUCKETS, DIR_ENV, Registry};
pub use shmetrics_layout::{GaugeMode, MetricKind};

/// How many times this process re-created its segments after a `fork()` (diagnostics).
pub fn fork_recreations() -> u64 {
    fork::CHILD_RECREATIONS.load(std::sync::atomic::Ordering::Relaxed)
}
