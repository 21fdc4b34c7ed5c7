//! The fixed 128-byte segment header and its validation.
//!
//! Every field is native-endian; [`ENDIAN_MARK`] lets a reader on a machine of the other
//! byte order reject the segment instead of misreading it. Three fields change after the
//! segment is published and are therefore read and written only as atomic words:
//! `meta_len` ([`META_LEN_WORD`]), `slot_floor` ([`SLOT_FLOOR_WORD`]) and `dropped_series`
//! ([`DROPPED_SERIES_WORD`]). See `docs/layout.md` for the byte map.

use bytemuck::{Pod, Zeroable};

use crate::LayoutError;

/// First eight bytes of every segment.
pub const MAGIC: [u8; 8] = *b"SHMETRIC";
/// Written as a native `u32`; reads back differently on a machine of the other byte order.
pub const ENDIAN_MARK: u32 = 0x0102_0304;
/// The layout version this crate writes. Version 2 added series creation times
/// (`record::SERIES_FLAG_CREATED`); a reader reads every version from
/// [`OLDEST_LAYOUT_VERSION`] to this one.
pub const LAYOUT_VERSION: u32 = 2;
/// The oldest layout version this crate reads.
pub const OLDEST_LAYOUT_VERSION: u32 = 1;
/// Size of the header in bytes; metadata records start right after it.
pub const HEADER_SIZE: usize = 128;
/// Smallest segment file accepted.
pub const MIN_SEGMENT_SIZE: u64 = 4096;
/// Largest segment file accepted (1 GiB).
pub const MAX_SEGMENT_SIZE: u64 = 1 << 30;

/// `flags` bit of an archive: the folded values of dead processes, written once by a
/// compactor (see `docs/concurrency.md`, "Compaction"); never locked, never written again.
pub const FLAG_ARCHIVE: u32 = 1;

/// Word index (8-byte units from the start of the file) of `meta_len`.
pub const META_LEN_WORD: usize = 8;
/// Word index of `slot_floor`.
pub const SLOT_FLOOR_WORD: usize = 9;
/// Word index of `dropped_series`.
pub const DROPPED_SERIES_WORD: usize = 10;

/// The segment header, exactly as stored in the first [`HEADER_SIZE`] bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct SegmentHeader {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`ENDIAN_MARK`].
    pub endian: u32,
    /// [`LAYOUT_VERSION`].
    pub version: u32,
    /// [`HEADER_SIZE`].
    pub header_size: u32,
    /// Reserved, zero.
    pub flags: u32,
    /// Size of the whole file in bytes, fixed at creation.
    pub file_size: u64,
    /// Process id of the writer.
    pub pid: u32,
    /// 0 for a process's first segment, then 1, 2, ... for its continuation segments.
    pub sequence: u32,
    /// Random id of the writing process incarnation, shared by its continuation segments;
    /// unlike the pid it is never reused.
    pub instance_id: u64,
    /// The writer's process start time in clock ticks since boot (`/proc/self/stat`, field 22).
    pub start_time_ticks: u64,
    /// Wall-clock creation time of the segment, nanoseconds since the Unix epoch.
    pub created_unix_nanos: u64,
    /// Bytes of published metadata records after the header (atomic).
    pub meta_len: u64,
    /// Byte offset of the lowest allocated value slot; slots grow down from the end (atomic).
    pub slot_floor: u64,
    /// Series the writer could not place in any segment (atomic).
    pub dropped_series: u64,
    /// Reserved, zero.
    pub reserved: [u64; 5],
}

const _: () = assert!(std::mem::size_of::<SegmentHeader>() == HEADER_SIZE);
const _: () = assert!(std::mem::offset_of!(SegmentHeader, meta_len) == META_LEN_WORD * 8);
const _: () = assert!(std::mem::offset_of!(SegmentHeader, slot_floor) == SLOT_FLOOR_WORD * 8);
const _: () =
    assert!(std::mem::offset_of!(SegmentHeader, dropped_series) == DROPPED_SERIES_WORD * 8);

impl SegmentHeader {
    /// A fresh header for a new, empty segment of `file_size` bytes.
    pub fn new(file_size: u64, identity: SegmentIdentity) -> Self {
        Self {
            magic: MAGIC,
            endian: ENDIAN_MARK,
            version: LAYOUT_VERSION,
            header_size: HEADER_SIZE as u32,
            flags: 0,
            file_size,
            pid: identity.pid,
            sequence: identity.sequence,
            instance_id: identity.instance_id,
            start_time_ticks: identity.start_time_ticks,
            created_unix_nanos: identity.created_unix_nanos,
            meta_len: 0,
            slot_floor: file_size,
            dropped_series: 0,
            reserved: [0; 5],
        }
    }

    /// The header's bytes, as stored at the start of the file.
    pub fn as_bytes(&self) -> &[u8] {
        bytemuck::bytes_of(self)
    }

    /// Parses and checks a header from the first [`HEADER_SIZE`] bytes of `bytes`, against
    /// the actual size of the file it came from.
    pub fn parse(bytes: &[u8], actual_file_size: u64) -> Result<Self, LayoutError> {
        if bytes.len() < HEADER_SIZE || actual_file_size < HEADER_SIZE as u64 {
            return Err(LayoutError::TruncatedHeader {
                len: actual_file_size.min(bytes.len() as u64),
            });
        }
        let header: SegmentHeader = bytemuck::pod_read_unaligned(&bytes[..HEADER_SIZE]);
        header.check(actual_file_size)?;
        Ok(header)
    }

    /// Whether this segment is an archive ([`FLAG_ARCHIVE`]).
    pub fn is_archive(&self) -> bool {
        self.flags & FLAG_ARCHIVE != 0
    }

    /// Checks every field that can be checked on its own.
    pub fn check(&self, actual_file_size: u64) -> Result<(), LayoutError> {
        if self.magic != MAGIC {
            return Err(LayoutError::BadMagic);
        }
        if self.endian != ENDIAN_MARK {
            return Err(LayoutError::EndianMismatch);
        }
        if !(OLDEST_LAYOUT_VERSION..=LAYOUT_VERSION).contains(&self.version) {
            return Err(LayoutError::UnsupportedVersion(self.version));
        }
        if self.header_size as usize != HEADER_SIZE {
            return Err(LayoutError::BadHeaderSize(self.header_size));
        }
        if self.flags & !FLAG_ARCHIVE != 0 {
            return Err(LayoutError::UnknownFlags(self.flags));
        }
        if self.file_size != actual_file_size {
            return Err(LayoutError::FileSizeMismatch {
                header: self.file_size,
                actual: actual_file_size,
            });
        }
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&self.file_size)
            || !self.file_size.is_multiple_of(8)
        {
            return Err(LayoutError::BadFileSize(self.file_size));
        }
        check_bounds(self.file_size, self.meta_len, self.slot_floor)
    }
}

/// Checks a (`meta_len`, `slot_floor`) pair against the file size: the metadata area and the
/// slot area must not overlap and must lie inside the file.
pub fn check_bounds(file_size: u64, meta_len: u64, slot_floor: u64) -> Result<(), LayoutError> {
    let meta_end = (HEADER_SIZE as u64).checked_add(meta_len);
    match meta_end {
        Some(end) if meta_len.is_multiple_of(8) && end <= slot_floor && slot_floor <= file_size => {
            Ok(())
        }
        _ => Err(LayoutError::BadAreaBounds {
            meta_len,
            slot_floor,
            file_size,
        }),
    }
}

/// Who wrote a segment: the fields of the header that identify the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentIdentity {
    /// Process id.
    pub pid: u32,
    /// Continuation number, 0 for the first segment.
    pub sequence: u32,
    /// Random id of the process incarnation.
    pub instance_id: u64,
    /// Process start time in clock ticks since boot.
    pub start_time_ticks: u64,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_unix_nanos: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> SegmentIdentity {
        SegmentIdentity {
            pid: 42,
            sequence: 0,
            instance_id: 7,
            start_time_ticks: 100,
            created_unix_nanos: 1,
        }
    }

    #[test]
    fn round_trip() {
        let h = SegmentHeader::new(8192, identity());
        let bytes = bytemuck::bytes_of(&h).to_vec();
        assert_eq!(SegmentHeader::parse(&bytes, 8192), Ok(h));
    }

    #[test]
    fn rejects_each_bad_field() {
        let good = SegmentHeader::new(8192, identity());
        type Mutation = Box<dyn Fn(&mut SegmentHeader)>;
        let cases: Vec<(Mutation, LayoutError)> = vec![
            (Box::new(|h| h.magic[0] = b'X'), LayoutError::BadMagic),
            (
                Box::new(|h| h.endian = ENDIAN_MARK.swap_bytes()),
                LayoutError::EndianMismatch,
            ),
            (
                Box::new(|h| h.version = LAYOUT_VERSION + 1),
                LayoutError::UnsupportedVersion(3),
            ),
            (
                Box::new(|h| h.version = 0),
                LayoutError::UnsupportedVersion(0),
            ),
            (
                Box::new(|h| h.header_size = 64),
                LayoutError::BadHeaderSize(64),
            ),
            (
                Box::new(|h| h.file_size = 4096),
                LayoutError::FileSizeMismatch {
                    header: 4096,
                    actual: 8192,
                },
            ),
            (
                Box::new(|h| h.meta_len = 8192),
                LayoutError::BadAreaBounds {
                    meta_len: 8192,
                    slot_floor: 8192,
                    file_size: 8192,
                },
            ),
            (
                Box::new(|h| h.meta_len = 3),
                LayoutError::BadAreaBounds {
                    meta_len: 3,
                    slot_floor: 8192,
                    file_size: 8192,
                },
            ),
            (
                Box::new(|h| h.slot_floor = 9000),
                LayoutError::BadAreaBounds {
                    meta_len: 0,
                    slot_floor: 9000,
                    file_size: 8192,
                },
            ),
        ];
        for (mutate, expected) in cases {
            let mut h = good;
            mutate(&mut h);
            assert_eq!(
                SegmentHeader::parse(bytemuck::bytes_of(&h), 8192),
                Err(expected)
            );
        }
        assert_eq!(
            SegmentHeader::parse(&[0u8; 10], 10),
            Err(LayoutError::TruncatedHeader { len: 10 })
        );
        // Segments of layout version 1 (no series creation times) are still read.
        let mut v1 = good;
        v1.version = OLDEST_LAYOUT_VERSION;
        assert_eq!(SegmentHeader::parse(bytemuck::bytes_of(&v1), 8192), Ok(v1));
    }
}
