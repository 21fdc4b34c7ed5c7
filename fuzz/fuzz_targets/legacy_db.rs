//! prometheus_client `.db` files on arbitrary bytes (see shmetrics_fuzz_checks::legacy::db).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shmetrics_fuzz_checks::legacy::db(data));
