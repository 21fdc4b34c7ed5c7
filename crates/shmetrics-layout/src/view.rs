//! The one place that turns raw memory into atomics.
//!
//! A mapped segment is only ever accessed as a slice of [`AtomicU64`] words, by every
//! process, for every field: the header's mutable fields, the metadata bytes (copied in and
//! out a word at a time) and the value slots. No `&[u8]` over shared memory is ever created,
//! so a concurrent writer in another process can never make a reader's reference lie, and
//! Miri can check the parser on plain heap buffers of words.

#[cfg(not(loom))]
use std::any::Any;
#[cfg(not(loom))]
use std::ptr::NonNull;
#[cfg(not(loom))]
use std::sync::Arc;

use crate::sync::{AtomicU64, Ordering};

#[cfg(not(target_pointer_width = "64"))]
compile_error!("shmetrics needs a 64-bit target with native 64-bit atomics");

/// Views `len` bytes at `ptr` as atomic words.
///
/// # Safety
/// - `ptr` is 8-byte aligned and `len` is a multiple of 8;
/// - the memory is valid for reads for `'a`, and for writes too if anyone writes it;
/// - for `'a`, every access to that memory, from this or any other process, is an atomic
///   access of one aligned 8-byte word (or the memory is not written at all).
#[cfg(not(loom))]
pub unsafe fn words_from_raw<'a>(ptr: *const u8, len: usize) -> &'a [AtomicU64] {
    debug_assert!((ptr as usize).is_multiple_of(8) && len.is_multiple_of(8));
    // SAFETY: the caller guarantees alignment, validity for 'a and atomic-only access;
    // AtomicU64 has the size and alignment of u64.
    unsafe { std::slice::from_raw_parts(ptr.cast::<AtomicU64>(), len / 8) }
}

/// Asks the CPU to start loading `words` into its caches, for a read soon after: a reader
/// walking many slots hides the memory latency of the next ones behind its work on this
/// one. Only a hint: no load happens, nothing is ordered, and it does nothing where the
/// target has no prefetch instruction.
#[inline(always)]
pub fn prefetch(words: &[AtomicU64]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        /// Words per 64-byte cache line.
        const LINE: usize = 8;
        let hint = |word: &AtomicU64| {
            // SAFETY: `prefetch` is an SSE instruction, which every x86-64 processor has;
            // it never faults, reads nothing into the program and writes nothing, whatever
            // the address (here a word of a live slice).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(word).cast()) };
        };
        // Every line the words span: each 8th word, and the last (which may lie on a line
        // of its own when the first is not at a line's start).
        let mut i = 0;
        while i < words.len() {
            hint(&words[i]);
            i += LINE;
        }
        if let Some(last) = words.last() {
            hint(last);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = words;
}

/// Copies `len` bytes starting at byte `offset` (8-aligned) out of `words` into `out`, one
/// relaxed word load at a time. The caller orders this after whatever published the bytes.
///
/// # Panics
/// If the range is unaligned or outside `words`.
pub fn load_bytes(words: &[AtomicU64], offset: usize, len: usize, out: &mut Vec<u8>) {
    assert!(offset.is_multiple_of(8), "unaligned byte offset {offset}");
    let first = offset / 8;
    let count = len.div_ceil(8);
    let start = out.len();
    out.reserve(count * 8);
    for word in &words[first..first + count] {
        // SYNC POINT meta-bytes: relaxed; ordered by the caller's acquire of `meta_len`.
        out.extend_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
    }
    out.truncate(start + len);
}

/// Stores `bytes` (length a multiple of 8) at byte `offset` (8-aligned) of `words`, one
/// relaxed word store at a time. The caller publishes them afterwards with a release store.
///
/// # Panics
/// If the range is unaligned or outside `words`.
pub fn store_bytes(words: &[AtomicU64], offset: usize, bytes: &[u8]) {
    assert!(
        offset.is_multiple_of(8) && bytes.len().is_multiple_of(8),
        "unaligned store"
    );
    let first = offset / 8;
    for (word, chunk) in words[first..first + bytes.len() / 8]
        .iter()
        .zip(bytes.chunks_exact(8))
    {
        let value = u64::from_ne_bytes(chunk.try_into().expect("chunks of 8"));
        // SYNC POINT meta-bytes: relaxed; published by the release store of `meta_len`.
        word.store(value, Ordering::Relaxed);
    }
}

/// Appends `bytes` (whole encoded records) to a segment whose metadata area holds
/// `meta_len` published bytes, and publishes them: the bytes first (relaxed), then the new
/// length (release). Returns the new length. Only the segment's writer calls this, with the
/// length it last published; the caller has checked that the bytes fit.
///
/// # Panics
/// As [`store_bytes`].
pub fn append_records(words: &[AtomicU64], meta_len: usize, bytes: &[u8]) -> usize {
    store_bytes(words, crate::HEADER_SIZE + meta_len, bytes);
    let published = meta_len + bytes.len();
    // SYNC POINT meta-len: release; publishes the record bytes stored above.
    words[crate::META_LEN_WORD].store(published as u64, Ordering::Release);
    published
}

/// How many metadata bytes are published: read it before copying them with [`load_bytes`].
/// Untrusted: check it with [`crate::check_bounds`] or against the file before use.
pub fn published_meta_len(header_words: &[AtomicU64]) -> u64 {
    // SYNC POINT meta-len: acquire; pairs with the release in `append_records`, so the bytes
    // loaded afterwards are those the writer stored before publishing this length.
    header_words[crate::META_LEN_WORD].load(Ordering::Acquire)
}

/// A block of value slots that a handle owns a share of: a pointer to the words plus the
/// object that keeps their memory alive (a segment mapping or a heap buffer).
///
/// Dereferencing costs nothing beyond the pointer itself, which is what keeps the writer's
/// hot path at one atomic instruction.
#[cfg(not(loom))]
pub struct SlotBlock {
    ptr: NonNull<AtomicU64>,
    len: usize,
    _owner: Arc<dyn Any + Send + Sync>,
}

#[cfg(not(loom))]
// SAFETY: a SlotBlock only hands out `&AtomicU64`, which is Sync; the owner is Send + Sync.
unsafe impl Send for SlotBlock {}
#[cfg(not(loom))]
// SAFETY: as above; shared access to atomics from several threads is their purpose.
unsafe impl Sync for SlotBlock {}

#[cfg(not(loom))]
impl SlotBlock {
    /// A block over `words`, kept alive by `owner`.
    ///
    /// # Safety
    /// `words` lies in memory that `owner` keeps valid and in place for as long as `owner`
    /// lives (a mapping it owns, for instance), and that memory is only accessed atomically.
    ///
    /// # Panics
    /// If `words` is empty.
    pub unsafe fn new(owner: Arc<dyn Any + Send + Sync>, words: &[AtomicU64]) -> Self {
        assert!(!words.is_empty(), "a slot block has at least one word");
        Self {
            ptr: NonNull::from(words).cast(),
            len: words.len(),
            _owner: owner,
        }
    }

    /// A block over a fresh zeroed heap buffer of `len` words, for values that cannot live
    /// in a segment.
    ///
    /// # Panics
    /// If `len` is 0.
    pub fn detached(len: usize) -> Self {
        assert!(len > 0, "a slot block has at least one word");
        let buffer: Arc<[AtomicU64]> = (0..len).map(|_| AtomicU64::new(0)).collect();
        let ptr = NonNull::from(&*buffer).cast();
        Self {
            ptr,
            len,
            _owner: Arc::new(buffer),
        }
    }

    /// The first word of the block, without a length check: the hot path of a counter.
    #[inline(always)]
    pub fn first(&self) -> &AtomicU64 {
        // SAFETY: blocks are never empty (checked at construction) and the memory stays
        // valid while `_owner` lives, as for `words`.
        unsafe { self.ptr.as_ref() }
    }

    /// The words of the block.
    #[inline(always)]
    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: `new`'s contract (or `detached`'s own buffer) keeps the memory valid while
        // `_owner` lives, which is at least as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

#[cfg(not(loom))]
impl Clone for SlotBlock {
    fn clone(&self) -> Self {
        Self {
            ptr: self.ptr,
            len: self.len,
            _owner: Arc::clone(&self._owner),
        }
    }
}

#[cfg(not(loom))]
impl std::fmt::Debug for SlotBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotBlock").field("len", &self.len).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_through_words() {
        let words: Vec<AtomicU64> = (0..8).map(|_| AtomicU64::new(u64::MAX)).collect();
        let data: Vec<u8> = (0..24u8).collect();
        store_bytes(&words, 16, &data);
        let mut out = vec![9];
        load_bytes(&words, 16, 21, &mut out);
        assert_eq!(&out[1..], &data[..21]);
        assert_eq!(words[0].load(Ordering::Relaxed), u64::MAX);
        assert_eq!(words[5].load(Ordering::Relaxed), u64::MAX);
    }

    #[test]
    fn detached_block_is_zeroed_and_shared_by_clones() {
        let block = SlotBlock::detached(3);
        let other = block.clone();
        block.words()[2].fetch_add(5, Ordering::Relaxed);
        assert_eq!(other.words()[2].load(Ordering::Relaxed), 5);
        assert_eq!(other.words()[0].load(Ordering::Relaxed), 0);
    }
}
