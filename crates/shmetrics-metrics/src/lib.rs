//! A [`metrics`] facade recorder backed by shmetrics.
//!
//! A Rust engine instrumented with the `metrics` macros (`counter!`, `gauge!`,
//! `histogram!`, `describe_*!`) installs a [`ShmetricsRecorder`] once per process; from then
//! on every macro writes into the process's shmetrics segment in the metrics directory,
//! and a reader (`shmetrics serve`, the `shmetrics` crate's collectors or any process with a
//! `shmetrics_reader::Reader`) serves the sum over every process on one `/metrics`.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use metrics::{Unit, counter, describe_histogram, gauge, histogram};
//! use shmetrics_metrics::{GaugeMode, ShmetricsRecorder};
//!
//! // Once per process, before the first metric is used (PROMETHEUS_MULTIPROC_DIR).
//! let recorder = ShmetricsRecorder::builder()
//!     .buckets_for_prefix("engine_request_", &[0.01, 0.1, 1.0, 10.0])
//!     .gauge_mode_for_metric("engine_model_loaded", GaugeMode::MostRecent)
//!     .from_env()?;
//! recorder.install()?;
//!
//! describe_histogram!("engine_request_latency_seconds", Unit::Seconds, "End-to-end latency.");
//! counter!("engine_requests_total", "model" => "llama").increment(1);
//! histogram!("engine_request_latency_seconds", "model" => "llama").record(0.27);
//! let running = gauge!("engine_requests_running");
//! running.increment(1.0);
//! # Ok(()) }
//! ```
//!
//! # Hot path
//!
//! A handle the macros return (`let c = counter!(...)`) wraps the resolved shmetrics child:
//! `increment`, `set` and `record` are a virtual call plus the writer's one to three atomic
//! instructions on the process's own segment. A macro call itself looks its key up in a
//! lock-free insert-only map (the key's precomputed hash, a probe, a comparison, an `Arc`
//! clone): no lock, no allocation once the key has been seen. Only the first use of a key
//! takes the recorder's mutex, registers the family if needed and places the series.
//!
//! # Mapping
//!
//! - **Names.** A metric or label name that Prometheus does not allow has its other
//!   characters replaced by `_` (`http.requests` → `http_requests`), as
//!   `metrics-exporter-prometheus` does; a counter's trailing `_total` is implied, so
//!   `counter!("requests")` and `counter!("requests_total")` are one family. Rules
//!   (buckets, gauge modes) match the name as written in the macro.
//! - **Labels.** A shmetrics family has fixed label names. The first use of a name fixes
//!   them (in that key's order); later keys may give the same names in any order. A key
//!   with another set of label names, an invalid family (a name clash across metric types,
//!   `le` on a histogram) or an invalid label value cannot be recorded: the macro cannot
//!   return an error, so the key gets a no-op handle, the problem is logged once per metric
//!   name (`log::warn!`) and counted in [`Stats::rejected_keys`]. Nothing panics.
//! - **Help text and units.** The help text is part of the family definition in the
//!   segment, fixed when the family is registered, which is at the first use of the name.
//!   A `describe_*!` before that gives the help text (and, with
//!   [`RecorderBuilder::unit_suffix`], the unit suffix of the name: `latency` in
//!   [`Unit::Seconds`](metrics::Unit::Seconds) becomes `latency_seconds`); a metric used
//!   without a description gets its name as help text (Prometheus tooling flags families
//!   without help). A description that arrives after the first use with different text or
//!   unit does not change the family: it is logged once and counted in
//!   [`Stats::late_descriptions`]. So describe metrics at start-up, right after installing
//!   the recorder, as the `metrics` documentation recommends. (Processes that described
//!   before and after their first use disagree on the help text; the reader then shows the
//!   oldest segment's and reports a `help` conflict.)
//! - **Histograms** get the bucket bounds of the first matching rule: an exact name
//!   ([`RecorderBuilder::buckets_for_metric`]), else the longest prefix
//!   ([`RecorderBuilder::buckets_for_prefix`]), else the default
//!   ([`RecorderBuilder::buckets`], initially [`DEFAULT_BUCKETS`], the Prometheus clients'
//!   `.005` … `10`). Every process must configure the same bounds for a name: the reader
//!   never mixes buckets (it reports the disagreement and keeps the oldest definition).
//! - **Gauges** are merged across processes by a [`GaugeMode`], chosen by the same kind of
//!   rules ([`RecorderBuilder::gauge_mode_for_metric`], `_for_prefix`, `gauge_mode`).
//! - **Counters**: `increment(n)` adds `n`; `absolute(n)` raises this process's counter to
//!   `n` and never lowers it (concurrent `absolute` calls are serialised by a mutex that
//!   `increment` never takes).
//! - **Threads writing one series at once** (a thread pool recording one latency): counters
//!   and histograms matched by a stripe rule ([`RecorderBuilder::stripes_for_metric`],
//!   `_for_prefix`, `stripes`; 1 by default) get that many copies of each series, and each
//!   thread writes the copy its number picks, so they do not take the series' cache lines
//!   from each other; readers add the copies up, so the exposition is the same, and
//!   processes may use different counts for one name. Without a rule, a histogram (or a
//!   counter's fractional increments, which `metrics` counters do not make) is spread over
//!   copies the first time threads are found writing one series at once
//!   (`Options::contention_stripes` of [`RecorderBuilder::options`]).
//!
//! # Default gauge mode: `livesum`
//!
//! [`DEFAULT_GAUGE_MODE`] is [`GaugeMode::LiveSum`]: the value shown is the sum over the
//! processes alive now. A `metrics` gauge is process-local: each process sets or moves its
//! own value and knows nothing of the others. What an engine split into processes means by
//! such a gauge is almost always a part of a whole: requests running or waiting, KV-cache
//! blocks in use, bytes allocated, connections open. Their whole is the sum of the parts of
//! the processes that exist, which is what the same engine reported as one process:
//! - `increment`/`decrement` gauges (in-flight counts) only make sense summed; under
//!   `mostrecent` they would show one process's count, whichever wrote last;
//! - a dead process's part is gone with it (its requests are no longer in flight), so the
//!   live variant, not `sum`, which would keep a crashed rank's last value forever;
//! - no `pid` label (`all`), which would multiply the series and make dashboards sum by
//!   hand.
//!
//! Gauges whose every process reports the same global fact (a configuration value, "model
//! loaded", a value computed by a coordinator) are the exception: configure them
//! `mostrecent` (or `livemax`/`livemin`) by name or prefix. vLLM's Python engine uses
//! `mostrecent` for its gauges because in its design a single process sets them; a Rust
//! engine whose ranks each set their own does not fit that.
//!
//! # Processes
//!
//! Each process installs its own recorder, which creates the process's own segment; a
//! child created by `fork()` writes into segments of its own (see `shmetrics_writer`).
//! Counters and histograms are summed over every process that ever wrote, dead ones
//! included, so totals never go backwards when a worker restarts.
//!
//! [`DEFAULT_BUCKETS`]: shmetrics_writer::DEFAULT_BUCKETS
//! [`GaugeMode`]: shmetrics_writer::GaugeMode
//! [`GaugeMode::LiveSum`]: shmetrics_writer::GaugeMode::LiveSum
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod handles;
mod names;
mod recorder;
mod rules;

pub use recorder::{
    BucketError, BucketRule, DEFAULT_GAUGE_MODE, Error, RecorderBuilder, ShmetricsRecorder, Stats,
    StripeRule,
};
pub use shmetrics_writer::{DEFAULT_BUCKETS, GaugeMode, Options, Registry};
