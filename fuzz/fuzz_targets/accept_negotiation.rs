//! Accept / Accept-Encoding negotiation (see shmetrics_fuzz_checks::negotiate::accept).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shmetrics_fuzz_checks::negotiate::accept(data));
