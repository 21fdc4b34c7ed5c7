//! The shmetrics worker as a library: the [`server`] behind `shmetrics serve` (`/metrics`
//! and `/health` for a metrics directory), and collectors that put a metrics directory into
//! another crate's registry. The `shmetrics` command line is the binary of this package.
//!
//! Embedding in another server: with the tikv `prometheus` crate, see
//! [`prometheus_collector`]; with the official `prometheus-client` crate, see
//! [`prometheus_client_collector`]. Any other server uses the reader re-exported here: open a
//! [`Reader`] on the metrics directory once, then on each scrape render the merged
//! directory, filtered, into any `io::Write` with [`Reader::scrape`];
//! [`Format::content_type`] gives the matching `Content-Type`.
//!
//! ```no_run
//! use shmetrics::{Format, PrefixFilter, Reader};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut reader = Reader::open("/tmp/metrics")?;
//! let filter = PrefixFilter::new(["vllm:", "lmcache:"]);
//! // On each scrape:
//! let mut body = Vec::new();
//! let report = reader.scrape(Format::Prometheus, &filter, false, &mut body)?;
//! let content_type = Format::Prometheus.content_type();
//! # let _ = (report, content_type);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod dir_source;
pub mod prometheus_client_collector;
pub mod prometheus_collector;
pub mod push;
pub mod remote_write;
pub mod server;
pub mod web_config;

pub use shmetrics_reader::{Format, PrefixFilter, Reader, ReaderError, ScrapeReport};

/// README's Rust examples, compiled as doctests so they stay true.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
