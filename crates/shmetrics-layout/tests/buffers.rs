//! The layout's unsafe view and its parsers on plain heap buffers, written for Miri
//! (`ci/miri.sh`): a segment image is built in a buffer of words through
//! `view::words_from_raw`, read back through the same view and parsed; slot blocks outlive
//! the handles that created them; the parsers read untrusted bytes at every alignment.
//! Under `cargo test` they are ordinary tests of the same behaviour.
#![cfg(not(loom))]

use shmetrics_layout::sync::AtomicU64;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use shmetrics_layout::record::{FamilyRecord, Record, SeriesRecord, parse_records};
use shmetrics_layout::slots::{
    HistogramValue, bucket_index, counter_add, counter_read, gauge_read, gauge_set,
    histogram_observe, histogram_read, slot_words,
};
use shmetrics_layout::view::{SlotBlock, load_bytes, store_bytes, words_from_raw};
use shmetrics_layout::{
    GaugeMode, HEADER_SIZE, META_LEN_WORD, MetricKind, SLOT_FLOOR_WORD, SegmentHeader,
    SegmentIdentity,
};

const SIZE: usize = 4096;

fn identity() -> SegmentIdentity {
    SegmentIdentity {
        pid: 7,
        sequence: 0,
        instance_id: 9,
        start_time_ticks: 11,
        created_unix_nanos: 13,
    }
}

fn families() -> [FamilyRecord; 2] {
    [
        FamilyRecord {
            id: 0,
            kind: MetricKind::Histogram,
            mode: None,
            name: "lat_seconds".into(),
            help: "Latency \\ \"quoted\"\n.".into(),
            label_names: vec!["k".into()],
            bounds: vec![0.5, 1.0],
            states: Vec::new(),
        },
        FamilyRecord {
            id: 1,
            kind: MetricKind::Gauge,
            mode: Some(GaugeMode::MostRecent),
            name: "level".into(),
            help: String::new(),
            label_names: vec![],
            bounds: vec![],
            states: Vec::new(),
        },
    ]
}

#[test]
fn segment_image_round_trips_through_the_word_view() {
    let mut buffer = vec![0u64; SIZE / 8];
    // SAFETY: the buffer is 8-aligned, SIZE bytes long, outlives `words`, and is accessed
    // only through `words` (atomically) until `words` is last used.
    let words: &[AtomicU64] = unsafe { words_from_raw(buffer.as_mut_ptr().cast::<u8>(), SIZE) };

    // Writer side: header, then records published by `meta_len`, slots from the end.
    let mut header = SegmentHeader::new(SIZE as u64, identity());
    let [hist, gauge] = families();
    let hist_slots = SIZE - slot_words(MetricKind::Histogram, 2) * 8;
    let gauge_slots = hist_slots - slot_words(MetricKind::Gauge, 0) * 8;
    let mut meta = hist.encode();
    meta.extend(
        SeriesRecord {
            family_id: 0,
            slot_offset: hist_slots as u64,
            label_values: vec!["é \"x\"".into()],
            created_unix_nanos: Some(1_700_000_000_000_000_000),
            process: None,
            exact_parts: Vec::new(),
        }
        .encode(),
    );
    meta.extend(gauge.encode());
    meta.extend(
        SeriesRecord {
            family_id: 1,
            slot_offset: gauge_slots as u64,
            label_values: vec![],
            created_unix_nanos: None,
            process: None,
            exact_parts: Vec::new(),
        }
        .encode(),
    );
    header.meta_len = meta.len() as u64;
    header.slot_floor = gauge_slots as u64;
    store_bytes(words, 0, header.as_bytes());
    store_bytes(words, HEADER_SIZE, &meta);
    let hist_words = &words[hist_slots / 8..SIZE / 8];
    for v in [0.1, 0.7, 3.0] {
        histogram_observe(hist_words, bucket_index(&hist.bounds, v), v);
    }
    gauge_set(&words[gauge_slots / 8..hist_slots / 8], -2.5, Some(42));

    // Reader side: the same bytes back through the view, validated and parsed.
    let mut head = Vec::new();
    load_bytes(words, 0, HEADER_SIZE, &mut head);
    let parsed = SegmentHeader::parse(&head, SIZE as u64).unwrap();
    assert_eq!(parsed, header);
    let meta_len = words[META_LEN_WORD].load(Ordering::Acquire) as usize;
    assert_eq!(
        words[SLOT_FLOOR_WORD].load(Ordering::Relaxed),
        gauge_slots as u64
    );
    let mut bytes = Vec::new();
    load_bytes(words, HEADER_SIZE, meta_len, &mut bytes);
    assert_eq!(bytes, meta);
    let records: Vec<Record> = parse_records(&bytes, 0).map(|r| r.unwrap().0).collect();
    assert_eq!(records.len(), 4);
    assert_eq!(records[0], Record::Family(hist.clone()));
    assert_eq!(records[2], Record::Family(gauge));
    let Record::Series(s) = &records[1] else {
        panic!("{:?}", records[1])
    };
    let at = s.slot_offset as usize / 8;
    let mut h = HistogramValue {
        buckets: vec![],
        sum: 0.0,
        consistent: false,
    };
    histogram_read(
        &words[at..at + slot_words(MetricKind::Histogram, 2)],
        2,
        &mut h,
    );
    assert_eq!(h.buckets, [1, 1, 1]);
    assert_eq!(h.sum, 0.1 + 0.7 + 3.0);
    assert!(h.consistent);
    let g = gauge_read(&words[gauge_slots / 8..hist_slots / 8]);
    assert_eq!((g.value, g.timestamp), (-2.5, 42));
    drop(buffer);
}

#[test]
fn slot_blocks_keep_their_memory_alive() {
    let owner: Arc<Vec<AtomicU64>> = Arc::new((0..6).map(|_| AtomicU64::new(0)).collect());
    // SAFETY: the words lie in the Vec that `owner` keeps in place for its lifetime and
    // are only accessed atomically.
    let block = unsafe { SlotBlock::new(owner.clone(), &owner[2..4]) };
    drop(owner);
    let copy = block.clone();
    drop(block);
    counter_add(copy.words(), 3.0);
    counter_add(copy.words(), 0.25);
    copy.first().fetch_add(1, Ordering::Relaxed);
    assert_eq!(counter_read(copy.words()), 4.25);

    let detached = SlotBlock::detached(2);
    let other = detached.clone();
    drop(detached);
    counter_add(other.words(), 1.0);
    assert_eq!(counter_read(other.words()), 1.0);
}

#[test]
fn parsers_read_untrusted_bytes_at_every_alignment() {
    let [hist, gauge] = families();
    let mut valid = hist.encode();
    valid.extend(gauge.encode());
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // A buffer with one spare byte in front, so every slice start is tried unaligned too.
    for round in 0..48 {
        let mut bytes = valid.clone();
        for _ in 0..1 + round % 4 {
            let at = next() as usize % bytes.len();
            bytes[at] = next() as u8;
        }
        bytes.truncate(next() as usize % (bytes.len() + 1));
        for shift in 0..2 {
            let mut shifted = vec![0u8; shift];
            shifted.extend_from_slice(&bytes);
            let input = &shifted[shift..];
            let mut start = 0;
            for parsed in parse_records(input, 0) {
                let Ok((record, end)) = parsed else { break };
                let encoded = record.encode();
                assert_eq!(&encoded[..], &input[start..end]);
                start = end;
            }
            let mut image = SegmentHeader::new(SIZE as u64, identity())
                .as_bytes()
                .to_vec();
            let at = next() as usize % HEADER_SIZE;
            image[at] ^= next() as u8;
            let mut shifted = vec![0u8; shift];
            shifted.extend_from_slice(&image);
            if let Ok(h) = SegmentHeader::parse(&shifted[shift..], SIZE as u64) {
                assert_eq!(h.as_bytes(), &image[..]);
            }
        }
    }
}
