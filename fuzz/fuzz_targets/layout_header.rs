//! Segment header validation on arbitrary bytes: never panics, and whatever it accepts
//! re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmetrics_layout::{HEADER_SIZE, SegmentHeader};

fuzz_target!(|data: &[u8]| {
    let size = data.len() as u64;
    if let Ok(header) = SegmentHeader::parse(data, size) {
        assert_eq!(header.as_bytes(), &data[..HEADER_SIZE]);
    }
});
