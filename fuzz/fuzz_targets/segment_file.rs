//! A whole segment file through the reader and inspect (see shmetrics_fuzz_checks::segment::file).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shmetrics_fuzz_checks::segment::file(data));
