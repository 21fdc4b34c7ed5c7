//! Segments built in one go rather than grown by a live writer: a translated `.db` file, a
//! compactor's archive, a writer's new segment (empty, or a forked child's copy of its
//! parent's records), a test's crafted file.
//!
//! [`ImageBuilder`] appends records from the front and slots down from the end and writes
//! the header last, into an [`ImageSink`]: bytes, atomic words or a file. The size comes
//! first, added up by [`ImageSize`] from the records' `encoded_len`, so that each record is
//! encoded once, straight into place. [`SegmentImage`] does both for a handful of records.
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
//!     states: vec![],
//! }));
//! // A counter's slots: integer part 3, fractional part 0.5.
//! image.series(SeriesRecord::default(), vec![3, 0.5f64.to_bits()]);
//! let bytes = image.build().unwrap();
//! let header = SegmentHeader::parse(&bytes, bytes.len() as u64).unwrap();
//! assert_eq!(header.pid, 42);
//! ```

use std::convert::Infallible;

use crate::exemplar::{
    Exemplar, encode_exemplar_labels, exemplar_block_words, exemplar_slot_width,
    exemplar_slot_words,
};
use crate::record::{EncodeRecord, ExemplarsRecord, Record, SeriesFields, SeriesRecord};
use crate::slots::{counter_store, gauge_set, histogram_store};
use crate::sync::AtomicU64;
use crate::{FLAG_ARCHIVE, HEADER_SIZE, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, view};
use crate::{SegmentHeader, SegmentIdentity};

/// What an image will hold, added up before it is built; its file size follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImageSize {
    /// Bytes of records.
    pub meta_len: usize,
    /// Words of slots.
    pub slot_words: usize,
}

impl ImageSize {
    /// Counts a record of `encoded_len` bytes.
    pub fn record(&mut self, encoded_len: usize) {
        self.meta_len += encoded_len;
    }

    /// Counts `words` slot words.
    pub fn slots(&mut self, words: usize) {
        self.slot_words += words;
    }

    /// Bytes of the header, records and slots.
    pub fn needed(&self) -> u64 {
        (HEADER_SIZE + self.meta_len + self.slot_words * 8) as u64
    }

    /// The file size: the smallest multiple of 4096, at least [`MIN_SEGMENT_SIZE`], that
    /// holds the header, records and slots.
    ///
    /// # Errors
    /// [`ImageError::TooLarge`] beyond [`MAX_SEGMENT_SIZE`].
    pub fn file_size(&self) -> Result<usize, ImageError> {
        let needed = self.needed();
        let size = needed.next_multiple_of(4096).max(MIN_SEGMENT_SIZE);
        if size > MAX_SEGMENT_SIZE {
            return Err(ImageError::TooLarge { needed });
        }
        Ok(size as usize)
    }
}

/// Why an image cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError<E = Infallible> {
    /// The header, records and slots need more than the largest segment.
    #[error(
        "the header, records and slots need {needed} bytes, more than the largest segment \
         ({max})",
        max = MAX_SEGMENT_SIZE
    )]
    TooLarge {
        /// Bytes needed.
        needed: u64,
    },
    /// The header, records and slots added so far need more than the image's size (it was
    /// measured for less).
    #[error("the header, records and slots need {needed} bytes, more than the image's {size}")]
    Overflow {
        /// Bytes needed.
        needed: u64,
        /// The image's size.
        size: u64,
    },
    /// The sink failed.
    #[error(transparent)]
    Sink(E),
}

/// A series' slot values, as an image stores them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Slots<'a> {
    /// This many words, left zero.
    Zero(usize),
    /// A counter's integer and fractional words ([`counter_store`]).
    Counter {
        /// The integer word.
        int: u64,
        /// The fractional word.
        fraction: f64,
    },
    /// A gauge's value and write time ([`gauge_set`]).
    Gauge {
        /// The value.
        value: f64,
        /// Write time in ns since the epoch, 0 for none.
        timestamp: u64,
    },
    /// A histogram's or summary's per-bucket counts, the last `+Inf`, and sum
    /// ([`histogram_store`]).
    Histogram {
        /// Per-bucket counts.
        buckets: &'a [u64],
        /// The sum.
        sum: f64,
    },
    /// Words as they are (a test's crafted values).
    Raw(&'a [u64]),
}

impl Slots<'_> {
    /// Words taken.
    pub fn width(&self) -> usize {
        match self {
            Self::Zero(n) => *n,
            Self::Counter { .. } | Self::Gauge { .. } => 2,
            Self::Histogram { buckets, .. } => 2 + buckets.len(),
            Self::Raw(words) => words.len(),
        }
    }

    /// Stores the values into `words`, zero until then.
    fn store(&self, words: &[AtomicU64]) {
        match *self {
            Self::Zero(_) => {}
            Self::Counter { int, fraction } => counter_store(words, int, fraction),
            Self::Gauge { value, timestamp } => {
                gauge_set(words, value, (timestamp != 0).then_some(timestamp));
            }
            Self::Histogram { buckets, sum } => histogram_store(words, buckets, sum),
            Self::Raw(raw) => view::store_bytes(words, 0, bytemuck::cast_slice(raw)),
        }
    }
}

/// Where an image's bytes go: `size` bytes, zero until written. Offsets and lengths are
/// multiples of 8.
pub trait ImageSink {
    /// Why writing fails ([`Infallible`] in memory).
    type Error;

    /// The image's size in bytes.
    fn size(&self) -> usize;

    /// Copies `bytes` in at byte `offset`.
    ///
    /// # Errors
    /// The sink's own.
    fn put_bytes(&mut self, offset: usize, bytes: &[u8]) -> Result<(), Self::Error>;

    /// The `len` words at byte `offset`, when the sink is memory of words: slot values are
    /// then stored in place by the slot functions rather than staged and copied in.
    fn words(&self, offset: usize, len: usize) -> Option<&[AtomicU64]> {
        let _ = (offset, len);
        None
    }
}

impl ImageSink for [u8] {
    type Error = Infallible;

    fn size(&self) -> usize {
        self.len()
    }

    fn put_bytes(&mut self, offset: usize, bytes: &[u8]) -> Result<(), Infallible> {
        self[offset..offset + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }
}

/// Words private to their builder until it publishes them (a compactor's archive).
impl ImageSink for [AtomicU64] {
    type Error = Infallible;

    fn size(&self) -> usize {
        self.len() * 8
    }

    fn put_bytes(&mut self, offset: usize, bytes: &[u8]) -> Result<(), Infallible> {
        view::store_bytes(self, offset, bytes);
        Ok(())
    }

    fn words(&self, offset: usize, len: usize) -> Option<&[AtomicU64]> {
        Some(&self[offset / 8..offset / 8 + len])
    }
}

/// The slot width of a block holding `exemplars`: narrow when each one's labels fit.
pub fn exemplar_block_width(exemplars: &[Option<Exemplar>]) -> usize {
    let widest = (exemplars.iter().flatten())
        .filter_map(|e| encode_exemplar_labels(&e.labels).ok())
        .map(|labels| labels.len())
        .max()
        .unwrap_or(0);
    exemplar_slot_width(widest)
}

/// Builds a segment image into a sink: records from the front
/// ([`ImageBuilder::record`], [`ImageBuilder::series`]), slots down from the end, the header
/// last ([`ImageBuilder::finish`]).
pub struct ImageBuilder<'a, S: ImageSink + ?Sized> {
    sink: &'a mut S,
    header: SegmentHeader,
    /// Byte offset of the next record.
    meta_end: usize,
    /// Byte offset of the lowest slot so far.
    floor: usize,
    /// The record being encoded, or slot values staged as bytes.
    buf: Vec<u8>,
    /// Slot values being staged for a sink that is not words.
    staged: Vec<AtomicU64>,
}

impl<S: ImageSink + ?Sized> std::fmt::Debug for ImageBuilder<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageBuilder")
            .field("size", &self.header.file_size)
            .field("meta_end", &self.meta_end)
            .field("floor", &self.floor)
            .finish_non_exhaustive()
    }
}

impl<'a, S: ImageSink + ?Sized> ImageBuilder<'a, S> {
    /// An empty segment of the process `identity` over `sink`, whose size it takes.
    pub fn new(sink: &'a mut S, identity: SegmentIdentity) -> Self {
        let size = sink.size();
        Self {
            sink,
            header: SegmentHeader::new(size as u64, identity),
            meta_end: HEADER_SIZE,
            floor: size,
            buf: Vec::new(),
            staged: Vec::new(),
        }
    }

    /// Marks the segment as an archive.
    pub fn archive(&mut self) -> &mut Self {
        self.header.flags |= FLAG_ARCHIVE;
        self
    }

    /// Sets the header's count of series that could not be placed.
    pub fn dropped_series(&mut self, n: u64) -> &mut Self {
        self.header.dropped_series = n;
        self
    }

    /// Appends a record as it is (a series record's slot offset included).
    ///
    /// # Errors
    /// [`ImageError::Overflow`] when it does not fit; the sink's.
    pub fn record(&mut self, record: &impl EncodeRecord) -> Result<(), ImageError<S::Error>> {
        self.buf.clear();
        record.encode_into(&mut self.buf);
        self.fits(self.buf.len(), 0)?;
        self.sink
            .put_bytes(self.meta_end, &self.buf)
            .map_err(ImageError::Sink)?;
        self.meta_end += self.buf.len();
        Ok(())
    }

    /// Appends records already encoded (a forked child's copy of its parent's).
    ///
    /// # Errors
    /// As [`ImageBuilder::record`].
    ///
    /// # Panics
    /// When `bytes` is not a multiple of 8 long.
    pub fn encoded_records(&mut self, bytes: &[u8]) -> Result<(), ImageError<S::Error>> {
        assert!(
            bytes.len().is_multiple_of(8),
            "records are padded to 8 bytes"
        );
        self.fits(bytes.len(), 0)?;
        if !bytes.is_empty() {
            self.sink
                .put_bytes(self.meta_end, bytes)
                .map_err(ImageError::Sink)?;
        }
        self.meta_end += bytes.len();
        Ok(())
    }

    /// Appends a series record whose slots hold `slots`, placed below the previous slots;
    /// the record's `slot_offset` is set to them. Returns that offset.
    ///
    /// # Errors
    /// As [`ImageBuilder::record`].
    pub fn series(
        &mut self,
        series: SeriesFields<'_>,
        slots: Slots<'_>,
    ) -> Result<u64, ImageError<S::Error>> {
        let width = slots.width();
        self.fits(series.encoded_len(), width)?;
        self.floor -= width * 8;
        let series = SeriesFields {
            slot_offset: self.floor as u64,
            ..series
        };
        self.record(&series)?;
        self.store_slots(self.floor, slots)?;
        Ok(self.floor as u64)
    }

    /// Appends the exemplar slots of the series whose slots are at `series_slot_offset`
    /// (one per entry, a histogram's bucket order), each holding its exemplar whole or
    /// empty, and their record. Exemplars with labels a writer would refuse are left out.
    ///
    /// # Errors
    /// As [`ImageBuilder::record`].
    pub fn exemplars(
        &mut self,
        series_slot_offset: u64,
        exemplars: &[Option<Exemplar>],
    ) -> Result<(), ImageError<S::Error>> {
        let slot_words = exemplar_block_width(exemplars);
        let mut record = ExemplarsRecord {
            series_sequence: self.header.sequence,
            series_slot_offset,
            block_offset: 0,
            count: exemplars.len() as u32,
            slot_words: slot_words as u32,
        };
        let count = exemplars.len();
        let width = exemplar_block_words(count, slot_words);
        self.fits(record.encoded_len(), width)?;
        self.floor -= width * 8;
        record.block_offset = self.floor as u64;
        self.record(&record)?;
        // The index (each slot's time), then the slots.
        let mut index = vec![0u64; count];
        for (i, exemplar) in exemplars.iter().enumerate() {
            let Some(exemplar) = exemplar else { continue };
            if let Some(words) = exemplar_slot_words(exemplar, slot_words) {
                index[i] = exemplar.unix_nanos;
                let offset = self.floor + (count + i * slot_words) * 8;
                self.sink
                    .put_bytes(offset, bytemuck::cast_slice(&words))
                    .map_err(ImageError::Sink)?;
            }
        }
        self.sink
            .put_bytes(self.floor, bytemuck::cast_slice(&index))
            .map_err(ImageError::Sink)?;
        Ok(())
    }

    /// Reserves `words` slot words below the previous slots, left zero (slots whose records
    /// are among [`ImageBuilder::encoded_records`]). Returns their byte offset.
    ///
    /// # Errors
    /// [`ImageError::Overflow`] when they do not fit.
    pub fn reserve_slots(&mut self, words: usize) -> Result<usize, ImageError<S::Error>> {
        self.fits(0, words)?;
        self.floor -= words * 8;
        Ok(self.floor)
    }

    /// Writes the header, which publishes what was added, and returns it.
    ///
    /// # Errors
    /// The sink's.
    pub fn finish(mut self) -> Result<SegmentHeader, ImageError<S::Error>> {
        self.header.meta_len = (self.meta_end - HEADER_SIZE) as u64;
        self.header.slot_floor = self.floor as u64;
        self.sink
            .put_bytes(0, self.header.as_bytes())
            .map_err(ImageError::Sink)?;
        Ok(self.header)
    }

    /// Whether `meta` more bytes of records and `slot_words` more words of slots fit.
    fn fits(&self, meta: usize, slot_words: usize) -> Result<(), ImageError<S::Error>> {
        let size = self.header.file_size;
        let slots = size - self.floor as u64 + slot_words as u64 * 8;
        let needed = (self.meta_end + meta) as u64 + slots;
        if needed > size {
            return Err(ImageError::Overflow { needed, size });
        }
        Ok(())
    }

    /// Stores `slots` at byte `offset`: in place in a sink of words, else staged in words by
    /// the slot functions and copied in as bytes.
    fn store_slots(&mut self, offset: usize, slots: Slots<'_>) -> Result<(), ImageError<S::Error>> {
        let width = slots.width();
        if let Some(words) = self.sink.words(offset, width) {
            slots.store(words);
            return Ok(());
        }
        let bytes = match slots {
            Slots::Zero(_) => return Ok(()),
            Slots::Raw(raw) => bytemuck::cast_slice(raw),
            typed => {
                self.staged.clear();
                self.staged.resize_with(width, || AtomicU64::new(0));
                typed.store(&self.staged);
                self.buf.clear();
                view::load_bytes(&self.staged, 0, width * 8, &mut self.buf);
                &self.buf[..]
            }
        };
        self.sink.put_bytes(offset, bytes).map_err(ImageError::Sink)
    }
}

/// A whole segment built in memory from records and slot words, for a test's crafted file.
#[derive(Clone, Debug)]
pub struct SegmentImage {
    identity: SegmentIdentity,
    archive: bool,
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
            archive: false,
            entries: Vec::new(),
        }
    }

    /// Marks the segment as an archive.
    pub fn archive(&mut self) -> &mut Self {
        self.archive = true;
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

    /// The file's bytes, [`ImageSize::file_size`] long.
    ///
    /// # Errors
    /// [`ImageError::TooLarge`] beyond [`MAX_SEGMENT_SIZE`].
    pub fn build(&self) -> Result<Vec<u8>, ImageError> {
        let mut size = ImageSize::default();
        for e in &self.entries {
            match e {
                Entry::Record(r) => size.record(r.encoded_len()),
                Entry::Series(s, words) => {
                    size.record(s.encoded_len());
                    size.slots(words.len());
                }
            }
        }
        let mut bytes = vec![0u8; size.file_size()?];
        let mut image = ImageBuilder::new(&mut bytes[..], self.identity);
        if self.archive {
            image.archive();
        }
        for e in &self.entries {
            match e {
                Entry::Record(r) => image.record(r)?,
                Entry::Series(s, words) => {
                    image.series(s.fields(), Slots::Raw(words))?;
                }
            }
        }
        image.finish()?;
        Ok(bytes)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::record::{FamilyRecord, FoldedRecord, ProcessOf, parse_records};
    use crate::slots::{
        GaugeValue, HistogramValue, counter_read_words, gauge_read, histogram_read, slot_words,
    };
    use crate::sync::Ordering;
    use crate::{GaugeMode, MetricKind};

    fn identity() -> SegmentIdentity {
        SegmentIdentity {
            pid: 1,
            sequence: 4,
            instance_id: 2,
            start_time_ticks: 5,
            created_unix_nanos: 3,
        }
    }

    fn family(id: u32, kind: MetricKind, mode: Option<GaugeMode>, bounds: &[f64]) -> Record {
        Record::Family(FamilyRecord {
            id,
            kind,
            mode,
            name: format!("f{id}"),
            help: "Help.".into(),
            label_names: vec!["a".into()],
            bounds: bounds.to_vec(),
            states: Vec::new(),
        })
    }

    /// Builds an archive of every kind of slot value into `sink`, measured first; returns
    /// the header and each series' slot offset.
    fn build<S: ImageSink<Error = Infallible> + ?Sized>(sink: &mut S) -> (SegmentHeader, Vec<u64>) {
        let labels = [vec!["x".to_owned()], vec!["y".repeat(2000)]];
        let parts = [0.1, 1e-20];
        let buckets = [1, 0, 4];
        let series = |i: usize, process, exact_parts| SeriesFields {
            family_id: i as u32,
            slot_offset: 0,
            label_values: &labels[i % 2],
            created_unix_nanos: (!i.is_multiple_of(3)).then_some(1_000 + i as u64),
            process,
            exact_parts,
        };
        let process = ProcessOf {
            pid: 7,
            created_unix_nanos: 8,
        };
        let records = [
            (
                family(0, MetricKind::Counter, None, &[]),
                series(0, None, &parts[..]),
                Slots::Counter {
                    int: 3,
                    fraction: 0.5,
                },
            ),
            (
                family(1, MetricKind::Gauge, Some(GaugeMode::MostRecent), &[]),
                series(1, None, &[]),
                Slots::Gauge {
                    value: -2.5,
                    timestamp: 99,
                },
            ),
            (
                family(2, MetricKind::Gauge, Some(GaugeMode::All), &[]),
                series(2, Some(process), &[]),
                Slots::Gauge {
                    value: 1.5,
                    timestamp: 0,
                },
            ),
            (
                family(3, MetricKind::Histogram, None, &[1.0, 2.0]),
                series(3, None, &[]),
                Slots::Histogram {
                    buckets: &buckets,
                    sum: 6.25,
                },
            ),
            (
                family(4, MetricKind::Summary, None, &[]),
                series(4, None, &[]),
                Slots::Zero(3),
            ),
            (
                family(5, MetricKind::Counter, None, &[]),
                series(5, None, &[]),
                Slots::Raw(&[11, 12]),
            ),
        ];
        let folded = FoldedRecord {
            instance_id: 9,
            sequence: 1,
        };
        let mut size = ImageSize::default();
        size.record(folded.encoded_len());
        for (f, s, slots) in &records {
            size.record(f.encoded_len());
            size.record(s.encoded_len());
            size.slots(slots.width());
        }
        assert_eq!(size.file_size().unwrap(), sink.size());
        let mut image = ImageBuilder::new(sink, identity());
        image.archive().dropped_series(6);
        image.record(&folded).unwrap();
        let mut offsets = Vec::new();
        for (f, s, slots) in records {
            image.record(&f).unwrap();
            offsets.push(image.series(s, slots).unwrap());
        }
        (image.finish().unwrap(), offsets)
    }

    #[test]
    fn an_image_parses_back_the_same_from_bytes_and_from_words() {
        let mut bytes = vec![0u8; 8192];
        let (header, offsets) = build(&mut bytes[..]);
        let mut words: Vec<AtomicU64> = (0..1024).map(|_| AtomicU64::new(0)).collect();
        assert_eq!(build(&mut words[..]), (header, offsets.clone()));
        let mut from_words = Vec::new();
        view::load_bytes(&words, 0, 8192, &mut from_words);
        assert_eq!(
            from_words, bytes,
            "the staged and the in-place slot stores agree"
        );

        assert_eq!(SegmentHeader::parse(&bytes, 8192).unwrap(), header);
        assert!(header.is_archive());
        assert_eq!(header.dropped_series, 6);
        assert_eq!((header.pid, header.sequence, header.instance_id), (1, 4, 2));
        let meta = &bytes[HEADER_SIZE..HEADER_SIZE + header.meta_len as usize];
        let records: Vec<Record> = parse_records(meta, 0).map(|r| r.unwrap().0).collect();
        assert_eq!(records.len(), 1 + 6 * 2);
        let series: Vec<&SeriesRecord> = records
            .iter()
            .filter_map(|r| match r {
                Record::Series(s) => Some(s),
                _ => None,
            })
            .collect();
        let slot_offsets: Vec<u64> = series.iter().map(|s| s.slot_offset).collect();
        assert_eq!(slot_offsets, offsets);
        let widths = [2, 2, 2, slot_words(MetricKind::Histogram, 2), 3, 2];
        let mut floor = 8192;
        for (offset, width) in offsets.iter().zip(widths) {
            floor -= width as u64 * 8;
            assert_eq!(*offset, floor);
        }
        assert_eq!(header.slot_floor, floor);
        assert_eq!(series[0].exact_parts, [0.1, 1e-20]);
        assert_eq!(series[2].process.map(|p| p.pid), Some(7));
        assert_eq!(series[1].label_values[0].len(), 2000);

        let at = |i: usize, width: usize| &words[offsets[i] as usize / 8..][..width];
        assert_eq!(counter_read_words(at(0, 2)), (3, 0.5));
        let gauge = |value, timestamp| GaugeValue { value, timestamp };
        assert_eq!(gauge_read(at(1, 2)), gauge(-2.5, 99));
        assert_eq!(gauge_read(at(2, 2)), gauge(1.5, 0));
        let mut histogram = HistogramValue {
            buckets: Vec::new(),
            sum: 0.0,
            consistent: false,
        };
        histogram_read(at(3, 5), 2, &mut histogram);
        assert_eq!((histogram.buckets, histogram.sum), (vec![1, 0, 4], 6.25));
        assert!(histogram.consistent);
        assert!(at(4, 3).iter().all(|w| w.load(Ordering::Relaxed) == 0));
        let raw: Vec<u64> = at(5, 2).iter().map(|w| w.load(Ordering::Relaxed)).collect();
        assert_eq!(raw, [11, 12]);
    }

    #[test]
    fn what_was_not_measured_is_refused() {
        let too_large = ImageSize {
            meta_len: 1 << 30,
            slot_words: 0,
        };
        assert!(matches!(
            too_large.file_size(),
            Err(ImageError::TooLarge { needed }) if needed == (1 << 30) + HEADER_SIZE as u64
        ));
        let mut bytes = vec![0u8; 4096];
        let mut image = ImageBuilder::new(&mut bytes[..], identity());
        let err = image.reserve_slots(500).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the header, records and slots need 4128 bytes, more than the image's 4096"
        );
        assert_eq!(image.reserve_slots(400).unwrap(), 4096 - 3200);
        let record = family(0, MetricKind::Counter, None, &[]);
        let series = SeriesRecord::default();
        let mut refused = 0;
        while image.record(&record).is_ok() {}
        for slots in [
            Slots::Zero(1),
            Slots::Counter {
                int: 1,
                fraction: 0.0,
            },
        ] {
            refused += usize::from(image.series(series.fields(), slots).is_err());
        }
        assert_eq!(refused, 2);
        let header = image.finish().unwrap();
        assert!(header.meta_len as usize + HEADER_SIZE <= header.slot_floor as usize);
        assert!(SegmentHeader::parse(&bytes, 4096).is_ok());
    }

    #[test]
    fn encoded_records_and_reserved_slots_make_a_copy() {
        let mut original = SegmentImage::new(identity());
        original
            .record(family(0, MetricKind::Counter, None, &[]))
            .series(SeriesRecord::default(), vec![0, 0]);
        let original = original.build().unwrap();
        let header = SegmentHeader::parse(&original, 4096).unwrap();
        let meta = &original[HEADER_SIZE..HEADER_SIZE + header.meta_len as usize];
        let mut copy = vec![0u8; 4096];
        let mut image = ImageBuilder::new(&mut copy[..], identity());
        image.encoded_records(meta).unwrap();
        image
            .reserve_slots((4096 - header.slot_floor as usize) / 8)
            .unwrap();
        assert_eq!(image.finish().unwrap(), header);
        assert_eq!(copy, original);
    }

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
            states: Vec::new(),
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
