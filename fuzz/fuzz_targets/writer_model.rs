//! Writer scenarios with truncation and corruption against a model (see
//! shmetrics_fuzz_checks::model).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shmetrics_fuzz_checks::model::scenario(data));
