//! Records and slots behind a valid header, through the reader and inspect (see
//! shmetrics_fuzz_checks::segment::records).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shmetrics_fuzz_checks::segment::records(data));
