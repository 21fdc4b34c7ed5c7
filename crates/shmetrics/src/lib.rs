//! The `shmetrics` worker and command line: `dump`, `inspect` and `generate` on metrics
//! directories, and the workloads `generate` runs (reusable by demos and benchmarks).
#![forbid(unsafe_code)]

pub mod cli;
pub mod dump;
pub mod generate;
pub mod inspect;
pub mod workload;
