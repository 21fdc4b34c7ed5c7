//! A whole segment built in memory: records from the front, value slots from the end, the
//! header last. For segments written in one go rather than grown by a live writer (a
//! translated `.db` file, an archive, a test's crafted file).
//!
//! ```
//! use shmetrics_layout::image::SegmentImage;
//! use shmetrics_layout::record::{FamilyRecord, Record, SeriesRecord};
//! use shmetrics_layout::{MetricKind, SegmentHeader, SegmentIdentity};
//!
//! let mut image = SegmentImage::new(SegmentIdentity {
//!     pid: 42,
//!     sequence: 0,
//!     instance_id: 7,
//!     start_time_ticks: 0,
//!     created_unix_nanos: 1,
//! });
//! image.record(Record::Family(FamilyRecord {
//!     id: 0,
//!     kind: MetricKind::Counter,
//!     mode: None,
//!     name: "req".into(),
//!     help: "Requests.".into(),
//!     label_names: vec![],
//!     bounds: vec![],
//! }));
//! // A counter's slots: integer part 3, fractional part 0.5.
//! image.series(SeriesRecord::default(), vec![3, 0.5f64.to_bits()]);
//! let bytes = image.build().unwrap();
//! let header = SegmentHeader::parse(&bytes, bytes.len() as u64).unwrap();
//! assert_eq!(header.pid, 42);
//! ```

use crate::record::{Record, SeriesRecord};
use crate::{FLAG_ARCHIVE, HEADER_SIZE, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE};
use crate::{SegmentHeader, SegmentIdentity};

/// A segment under construction.
#[derive(Clone, Debug)]
pub struct SegmentImage {
    identity: SegmentIdentity,
    flags: u32,
    /// Records in file order; a series' slot offset is filled in by `build`.
    entries: Vec<Entry>,
}

#[derive(Clone, Debug)]
enum Entry {
    Record(Record),
    Series(SeriesRecord, Vec<u64>),
}

impl SegmentImage {
    /// An empty segment of the process `identity`.
    pub fn new(identity: SegmentIdentity) -> Self {
        Self {
            identity,
            flags: 0,
            entries: Vec::new(),
        }
    }

    /// Marks the segment as an archive.
    pub fn archive(&mut self) -> &mut Self {
        self.flags |= FLAG_ARCHIVE;
        self
    }

    /// Appends a record as it is (a series record's slot offset included).
    pub fn record(&mut self, record: Record) -> &mut Self {
        self.entries.push(Entry::Record(record));
        self
    }

    /// Appends a series record whose slots hold `words`: the slots are placed below the
    /// previous series' and the record's `slot_offset` points at them.
    pub fn series(&mut self, record: SeriesRecord, words: Vec<u64>) -> &mut Self {
        self.entries.push(Entry::Series(record, words));
        self
    }

    /// The file's bytes: the smallest multiple of 4096 (at least the minimum segment size)
    /// that holds the header, the records and the slots.
    ///
    /// # Errors
    /// When the segment would be larger than [`MAX_SEGMENT_SIZE`].
    pub fn build(&self) -> Result<Vec<u8>, String> {
        let encoded = |e: &Entry| match e {
            Entry::Record(r) => r.encode(),
            Entry::Series(s, _) => s.encode(),
        };
        let meta_len: usize = self.entries.iter().map(|e| encoded(e).len()).sum();
        let slots_len: usize = self
            .entries
            .iter()
            .map(|e| match e {
                Entry::Series(_, words) => words.len() * 8,
                Entry::Record(_) => 0,
            })
            .sum();
        let size = (HEADER_SIZE + meta_len + slots_len)
            .next_multiple_of(4096)
            .max(MIN_SEGMENT_SIZE as usize);
        if size as u64 > MAX_SEGMENT_SIZE {
            return Err(format!(
                "{size} bytes of records and slots exceed the largest segment ({MAX_SEGMENT_SIZE})"
            ));
        }
        let mut bytes = vec![0u8; size];
        let (mut at, mut floor) = (HEADER_SIZE, size);
        for e in &self.entries {
            let record = match e {
                Entry::Record(r) => r.encode(),
                Entry::Series(s, words) => {
                    floor -= words.len() * 8;
                    for (i, w) in words.iter().enumerate() {
                        let o = floor + i * 8;
                        bytes[o..o + 8].copy_from_slice(&w.to_ne_bytes());
                    }
                    SeriesRecord {
                        slot_offset: floor as u64,
                        ..s.clone()
                    }
                    .encode()
                }
            };
            bytes[at..at + record.len()].copy_from_slice(&record);
            at += record.len();
        }
        let mut header = SegmentHeader::new(size as u64, self.identity);
        header.flags = self.flags;
        header.meta_len = meta_len as u64;
        header.slot_floor = floor as u64;
        bytes[..HEADER_SIZE].copy_from_slice(header.as_bytes());
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MetricKind;
    use crate::record::{FamilyRecord, parse_records};

    #[test]
    fn records_come_first_and_slots_fill_down_from_the_end() {
        let mut image = SegmentImage::new(SegmentIdentity {
            pid: 1,
            sequence: 0,
            instance_id: 2,
            start_time_ticks: 0,
            created_unix_nanos: 3,
        });
        let family = FamilyRecord {
            id: 5,
            kind: MetricKind::Gauge,
            mode: Some(crate::GaugeMode::Sum),
            name: "g".into(),
            help: "G.".into(),
            label_names: vec!["a".into()],
            bounds: vec![],
        };
        image.record(Record::Family(family.clone()));
        for (i, v) in ["x", "y"].iter().enumerate() {
            let record = SeriesRecord {
                family_id: 5,
                label_values: vec![(*v).into()],
                ..SeriesRecord::default()
            };
            image.series(record, vec![(i as f64 + 1.0).to_bits(), 9]);
        }
        let bytes = image.build().unwrap();
        assert_eq!(bytes.len(), 4096);
        let header = SegmentHeader::parse(&bytes, 4096).unwrap();
        assert_eq!(header.slot_floor, 4096 - 32);
        let meta = &bytes[HEADER_SIZE..HEADER_SIZE + header.meta_len as usize];
        let records: Vec<Record> = parse_records(meta, 0).map(|r| r.unwrap().0).collect();
        assert_eq!(records[0], Record::Family(family));
        let offsets: Vec<u64> = records[1..]
            .iter()
            .map(|r| match r {
                Record::Series(s) => s.slot_offset,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(offsets, [4096 - 16, 4096 - 32]);
        let word = |o: usize| u64::from_ne_bytes(bytes[o..o + 8].try_into().unwrap());
        assert_eq!(f64::from_bits(word(4096 - 16)), 1.0);
        assert_eq!(f64::from_bits(word(4096 - 32)), 2.0);
        assert_eq!(word(4096 - 24), 9);
    }
}
