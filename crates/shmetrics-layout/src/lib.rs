//! The shmetrics segment format.
//!
//! A segment is one regular file per writer process (plus continuation segments when it
//! fills up) in the metrics directory:
//!
//! ```text
//! +--------------------+ 0
//! | SegmentHeader      |  128 bytes: magic, endianness, version, sizes, pid, start time
//! +--------------------+ 128
//! | metadata records   |  append-only, grows up; `meta_len` bytes are published
//! |        ...         |
//! +--------------------+ 128 + meta_len
//! |   (free space)     |
//! +--------------------+ slot_floor
//! | value slots        |  8-byte atomic words, allocated downwards from the end
//! +--------------------+ file_size
//! ```
//!
//! This crate does no I/O. It defines the bytes ([`SegmentHeader`], [`record`]), checks
//! untrusted bytes ([`SegmentHeader::parse`], [`record::parse_records`]), and owns the only
//! `unsafe` that turns memory into atomics ([`view`]) together with the slot operations
//! ([`slots`]) that writers and readers perform on them, over the atomics of [`sync`] (std's,
//! or loom's for the models of `tests/loom.rs`). `docs/layout.md` maps every byte.
#![warn(missing_docs)]

mod error;
pub mod exemplar;
#[cfg(not(loom))]
pub mod fault;
mod header;
pub mod image;
mod kind;
pub mod limits;
pub mod names;
pub mod record;
pub mod slots;
pub mod sync;
pub mod view;

pub use error::{DefinitionError, LayoutError, RecordFault, RecordPart, TextField};
pub use header::{
    DROPPED_SERIES_WORD, ENDIAN_MARK, FLAG_ARCHIVE, HEADER_SIZE, LAYOUT_VERSION, MAGIC,
    MAX_SEGMENT_SIZE, META_LEN_WORD, MIN_SEGMENT_SIZE, OLDEST_LAYOUT_VERSION, SLOT_FLOOR_WORD,
    SegmentHeader, SegmentIdentity, check_bounds,
};
pub use kind::{GaugeMode, MetricKind, UnknownGaugeMode, suffix};

/// File name suffix of segment files.
pub const SEGMENT_SUFFIX: &str = ".shm";
/// File name prefix of segment files.
pub const SEGMENT_PREFIX: &str = "shmetrics-";
