//! The `shmetrics` worker and command line.
#![forbid(unsafe_code)]
