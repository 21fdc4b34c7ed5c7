//! Seed inputs, so the fuzzer starts from valid segments rather than from nothing: real
//! segments written by the writer (every type and gauge mode, escapes in label values and
//! help; and the complete vLLM metric set split over small continuation segments), cut to
//! each target's input format, and real `Accept` headers. `writer_model` needs no seeds:
//! any input decodes to a scenario.

use shmetrics_layout::{HEADER_SIZE, SegmentHeader};
use shmetrics_workload::{MetricSet, VllmWorkload};
use shmetrics_writer::{GaugeMode, Options, Registry};

use crate::scratch_dir;
use crate::segment::records_input;

/// `Accept` and `Accept-Encoding` values that real clients send.
pub const ACCEPT_HEADERS: [&str; 8] = [
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
    "text/plain;version=0.0.4;q=1,*/*;q=0.1",
    "Application/OpenMetrics-Text; Version=\"1.0.0\"",
    "*/*",
    "gzip, deflate, br",
    "br;q=1.0, gzip;q=0.8, *;q=0.1",
    "identity;q=1, *;q=0",
];

/// Segment files (dead, closed) of three writer runs: one small segment with every type and
/// mode, one with exemplars, and the vLLM metric set over 16 KiB continuation segments.
///
/// # Panics
/// When the writer fails in a fresh scratch directory.
pub fn segments() -> Vec<Vec<u8>> {
    let mut out = every_type();
    out.extend(exemplars());
    out.extend(vllm());
    out
}

fn exemplars() -> Vec<Vec<u8>> {
    let dir = scratch_dir();
    let reg = Registry::open_with(dir.path(), small(16384, 1)).expect("open a registry");
    let c = reg
        .counter("seed_traced_total", "Traced.", &["k"])
        .expect("counter");
    (c.labels(&["x"]).expect("child"))
        .inc_by_with_exemplar(2.0, &[("trace_id", "a\\b\"c\nd é"), ("span", "")])
        .expect("exemplar");
    let h = reg
        .histogram("seed_traced_seconds", "Traced.", &[], &[0.1, 1.0])
        .expect("histogram");
    for (v, trace) in [(0.05, "fast"), (5.0, "slow"), (0.5, "")] {
        (h.unlabelled().expect("child"))
            .observe_with_exemplar(v, &[("trace_id", trace)])
            .expect("exemplar");
    }
    read_segments(&reg)
}

fn read_segments(registry: &Registry) -> Vec<Vec<u8>> {
    registry
        .segment_paths()
        .iter()
        .map(|p| std::fs::read(p).expect("read a segment"))
        .collect()
}

fn small(initial_segment_size: usize, max_segments: usize) -> Options {
    Options {
        initial_segment_size,
        max_segment_size: initial_segment_size,
        max_segments,
        ..Options::default()
    }
}

fn every_type() -> Vec<Vec<u8>> {
    let dir = scratch_dir();
    let reg = Registry::open_with(dir.path(), small(4096, 2)).expect("open a registry");
    let c = reg
        .counter(
            "seed_requests_total",
            "Requests \\ \"served\"\nby code.",
            &["code"],
        )
        .expect("counter");
    c.labels(&["200"]).expect("child").inc_by(3.0);
    c.labels(&["a\\b\"c\nd é"]).expect("child").inc_by(0.25);
    for (i, mode) in GaugeMode::ALL.into_iter().enumerate() {
        let g = reg
            .gauge(&format!("seed_gauge_{mode}"), "A gauge.", &["k"], mode)
            .expect("gauge");
        g.labels(&["x"]).expect("child").set(i as f64 - 2.5);
    }
    let h = reg
        .histogram(
            "seed_latency_seconds",
            "Latency.",
            &["k"],
            &[0.1, 1.0, 10.0],
        )
        .expect("histogram");
    for v in [0.05, 0.5, 5.0, 50.0, f64::NAN] {
        h.labels(&["x"]).expect("child").observe(v);
    }
    let s = reg
        .summary("seed_size_bytes", "Sizes.", &[])
        .expect("summary");
    s.unlabelled().expect("child").observe(42.0);
    read_segments(&reg)
}

fn vllm() -> Vec<Vec<u8>> {
    let dir = scratch_dir();
    let reg = Registry::open_with(dir.path(), small(16384, 16)).expect("open a registry");
    let set = MetricSet::vllm().expect("the vLLM metric set parses");
    let mut workload =
        VllmWorkload::register(&reg, &set, &set.context(0), 7).expect("register vLLM metrics");
    for _ in 0..20 {
        workload.step();
    }
    read_segments(&reg)
}

/// The metadata area of a valid segment.
fn metadata(segment: &[u8]) -> Vec<u8> {
    let header = SegmentHeader::parse(segment, segment.len() as u64).expect("a valid segment");
    segment[HEADER_SIZE..HEADER_SIZE + header.meta_len as usize].to_vec()
}

/// Seeds per target, by target name.
///
/// # Panics
/// As [`segments`].
pub fn corpus() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let segments = segments();
    vec![
        ("layout_header", segments.clone()),
        (
            "layout_records",
            segments.iter().map(|s| metadata(s)).collect(),
        ),
        ("segment_file", segments.clone()),
        (
            "segment_records",
            segments.iter().map(|s| records_input(s)).collect(),
        ),
        (
            "accept_negotiation",
            ACCEPT_HEADERS
                .iter()
                .map(|h| h.as_bytes().to_vec())
                .collect(),
        ),
    ]
}
