//! The handles behind `metrics::Counter`, `Gauge` and `Histogram`: each wraps a resolved
//! shmetrics child, so an operation is a virtual call plus the child's atomic instructions
//! on the process's own segment (no lock, no allocation, no lookup).

use std::sync::{Arc, Mutex, PoisonError};

use metrics::{CounterFn, GaugeFn, HistogramFn};

/// A counter series.
#[derive(Debug)]
pub(crate) struct CounterHandle {
    pub(crate) counter: shmetrics_writer::Counter,
    /// Serialises `absolute` (read, compare, add) across every counter of the recorder;
    /// `increment` never takes it.
    pub(crate) absolute: Arc<Mutex<()>>,
}

impl CounterFn for CounterHandle {
    #[inline]
    fn increment(&self, value: u64) {
        if value == 1 {
            self.counter.inc();
        } else {
            // Integral: the writer takes its integer path (exact up to 2^53 per call).
            self.counter.inc_by(value as f64);
        }
    }

    /// Raises the counter to `value` if it is below; never lowers it (as `metrics`' own
    /// atomic counter does with `fetch_max`).
    fn absolute(&self, value: u64) {
        let _serial = self.absolute.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.counter.get();
        let target = value as f64;
        if target > current {
            self.counter.inc_by(target - current);
        }
    }
}

/// A gauge series.
#[derive(Debug)]
pub(crate) struct GaugeHandle(pub(crate) shmetrics_writer::Gauge);

impl GaugeFn for GaugeHandle {
    #[inline]
    fn increment(&self, value: f64) {
        self.0.add(value);
    }

    #[inline]
    fn decrement(&self, value: f64) {
        self.0.sub(value);
    }

    #[inline]
    fn set(&self, value: f64) {
        self.0.set(value);
    }
}

/// A histogram series.
#[derive(Debug)]
pub(crate) struct HistogramHandle(pub(crate) shmetrics_writer::Histogram);

impl HistogramFn for HistogramHandle {
    #[inline]
    fn record(&self, value: f64) {
        self.0.observe(value);
    }

    /// `count` observations of `value`, one at a time: each is a complete observation for a
    /// concurrent scrape.
    fn record_many(&self, value: f64, count: usize) {
        for _ in 0..count {
            self.0.observe(value);
        }
    }
}
