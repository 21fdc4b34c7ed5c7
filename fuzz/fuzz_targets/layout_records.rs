//! Metadata record parsing on arbitrary bytes (see shmetrics_fuzz_checks::layout::records).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shmetrics_fuzz_checks::layout::records(data));
