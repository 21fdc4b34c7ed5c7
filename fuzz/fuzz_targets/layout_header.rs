//! Segment header validation on arbitrary bytes (see shmetrics_fuzz_checks::layout::header).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shmetrics_fuzz_checks::layout::header(data));
