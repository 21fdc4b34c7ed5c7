//! Shared helpers for the shmetrics benches.
