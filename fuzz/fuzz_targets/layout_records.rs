//! Metadata record parsing on arbitrary bytes: never panics, stops at the first error,
//! and every accepted record re-encodes to exactly the bytes it was parsed from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmetrics_layout::record::{Record, parse_records};

fuzz_target!(|data: &[u8]| {
    let mut start = 0;
    for parsed in parse_records(data, 0) {
        let Ok((record, end)) = parsed else { break };
        let encoded = match &record {
            Record::Family(f) => f.encode(),
            Record::Series(s) => s.encode(),
        };
        assert_eq!(&encoded[..], &data[start..end]);
        start = end;
    }
});
