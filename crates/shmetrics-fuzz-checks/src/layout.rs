//! The layout crate's two parsers on raw bytes.

use shmetrics_layout::record::parse_records;
use shmetrics_layout::{HEADER_SIZE, SegmentHeader};

/// `layout_header`: header validation on arbitrary bytes (the input's length as the file
/// size). Never panics; whatever it accepts re-encodes to the same bytes and satisfies the
/// area bounds it promises.
pub fn header(data: &[u8]) {
    let size = data.len() as u64;
    if let Ok(header) = SegmentHeader::parse(data, size) {
        assert_eq!(header.as_bytes(), &data[..HEADER_SIZE]);
        assert_eq!(header.file_size, size);
        assert!(
            HEADER_SIZE as u64 + header.meta_len <= header.slot_floor && header.slot_floor <= size,
            "accepted overlapping areas: {header:?}"
        );
    }
}

/// `layout_records`: metadata record parsing on arbitrary bytes. Never panics, stops at
/// the first error, and every accepted record re-encodes to exactly the bytes it was parsed
/// from.
pub fn records(data: &[u8]) {
    let mut start = 0;
    let mut failed = false;
    for parsed in parse_records(data, 0) {
        assert!(!failed, "a record was yielded after an error");
        match parsed {
            Ok((record, end)) => {
                let encoded = record.encode();
                assert_eq!(&encoded[..], &data[start..end]);
                start = end;
            }
            Err(_) => failed = true,
        }
    }
    assert!(
        failed || start == data.len(),
        "parsing stopped early without an error"
    );
}
