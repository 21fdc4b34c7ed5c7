//! Exemplar slots: one OpenMetrics exemplar (a label set of at most 128 characters, a value
//! and a time), written by the threads of one process and read by any reader without a torn
//! result.
//!
//! A slot is [`NARROW_EXEMPLAR_WORDS`] or [`EXEMPLAR_WORDS`] words (the width of each slot
//! of a block is the block's, [`exemplar_slot_width`]):
//!
//! | word | contents |
//! |---:|---|
//! | 0 | sequence: `0` never written, odd while a write is in progress, even once complete |
//! | 1 | value (`f64` bits) |
//! | 2 | time of the write, ns since the Unix epoch |
//! | 3 | byte length of the encoded labels, at most the slot's room ([`MAX_EXEMPLAR_LABEL_BYTES`] in the widest) |
//! | 4.. | the encoded labels, 8 bytes per word in native byte order, zero-padded |
//!
//! Labels are encoded as name and value pairs, each string a `u16` byte length (native byte
//! order) and its UTF-8 bytes. A writer takes the slot by setting the sequence's low bit
//! (from even to odd), stores the fields and makes it even again ([`exemplar_store`]); a reader that sees
//! the same even sequence before and after copying the fields has a whole exemplar
//! ([`exemplar_read`]), and retries a bounded number of times otherwise. A writer killed
//! mid-write leaves the sequence odd: readers never show that slot. `docs/concurrency.md`
//! lists the orderings (`exemplar-seq`, `exemplar-data`).

use crate::MetricKind;
use crate::names::is_legacy_label_name;
use crate::sync::{AtomicU64, Ordering, fence, spin_loop};

/// Most characters (code points) of an exemplar's label names and values together, as
/// OpenMetrics allows.
pub const MAX_EXEMPLAR_CHARS: usize = 128;
/// Most bytes of encoded exemplar labels: at most 128 pairs (each name has a character)
/// of 4 length bytes, and 128 characters of at most 4 bytes.
pub const MAX_EXEMPLAR_LABEL_BYTES: usize = 4 * MAX_EXEMPLAR_CHARS + 4 * MAX_EXEMPLAR_CHARS;
/// Words of the widest exemplar slot: room for any label set OpenMetrics allows.
pub const EXEMPLAR_WORDS: usize = 4 + MAX_EXEMPLAR_LABEL_BYTES / 8;
/// Words of a narrow exemplar slot: 96 bytes of labels, room for a W3C trace id and span id
/// (`trace_id` and `span_id`, 71 bytes encoded). A reader reads each slot of each process at
/// every scrape: eight times fewer pages than the widest.
pub const NARROW_EXEMPLAR_WORDS: usize = 16;

/// The slot width (in words) of a block whose first exemplar's labels take `label_bytes`
/// encoded: narrow when they fit one, else the widest.
pub const fn exemplar_slot_width(label_bytes: usize) -> usize {
    if label_bytes <= (NARROW_EXEMPLAR_WORDS - LABELS) * 8 {
        NARROW_EXEMPLAR_WORDS
    } else {
        EXEMPLAR_WORDS
    }
}

/// Bytes of labels a slot of `words` words holds.
pub const fn exemplar_label_room(words: usize) -> usize {
    let room = words.saturating_sub(LABELS) * 8;
    if room < MAX_EXEMPLAR_LABEL_BYTES {
        room
    } else {
        MAX_EXEMPLAR_LABEL_BYTES
    }
}
/// Reads of a slot a reader tries before it gives up on it for this scrape.
pub const EXEMPLAR_READ_TRIES: usize = 4;

const SEQ: usize = 0;
const VALUE: usize = 1;
const TIME: usize = 2;
const LEN: usize = 3;
const LABELS: usize = 4;

/// An exemplar, as stored and as read.
#[derive(Clone, Debug, PartialEq)]
pub struct Exemplar {
    /// Its labels, in the order given.
    pub labels: Vec<(String, String)>,
    /// Its value (a counter's increment, a histogram's observation).
    pub value: f64,
    /// When it was written, ns since the Unix epoch.
    pub unix_nanos: u64,
}

/// Why exemplar labels are refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExemplarError {
    /// A label name outside `[a-zA-Z_][a-zA-Z0-9_]*` (OpenMetrics 1.0's label names).
    #[error("exemplar label name {0:?} is not a valid label name")]
    InvalidName(String),
    /// A label name given twice.
    #[error("exemplar label {0:?} is given twice")]
    DuplicateName(String),
    /// More than [`MAX_EXEMPLAR_CHARS`] characters in the names and values together.
    #[error(
        "exemplar labels of {0} characters, more than the {MAX_EXEMPLAR_CHARS} OpenMetrics allows"
    )]
    TooLong(usize),
}

/// Encodes exemplar labels as a slot stores them, checked: valid and distinct names, at most
/// [`MAX_EXEMPLAR_CHARS`] characters in all.
///
/// # Errors
/// What is wrong with the labels, in words.
pub fn encode_exemplar_labels<K: AsRef<str>, V: AsRef<str>>(
    labels: &[(K, V)],
) -> Result<Vec<u8>, ExemplarError> {
    let mut bytes = 0;
    for (i, (name, value)) in labels.iter().enumerate() {
        let (name, value) = (name.as_ref(), value.as_ref());
        if !is_legacy_label_name(name) {
            return Err(ExemplarError::InvalidName(name.to_owned()));
        }
        if labels[..i].iter().any(|(n, _)| n.as_ref() == name) {
            return Err(ExemplarError::DuplicateName(name.to_owned()));
        }
        bytes += name.len() + value.len();
    }
    // A character takes at least a byte: count them only when there may be too many.
    if bytes > MAX_EXEMPLAR_CHARS {
        let chars: usize = (labels.iter())
            .map(|(n, v)| n.as_ref().chars().count() + v.as_ref().chars().count())
            .sum();
        if chars > MAX_EXEMPLAR_CHARS {
            return Err(ExemplarError::TooLong(chars));
        }
    }
    let mut out = Vec::with_capacity(bytes + 4 * labels.len());
    for (name, value) in labels {
        for s in [name.as_ref(), value.as_ref()] {
            // At most 128 characters of 4 bytes: the length fits in a u16.
            out.extend_from_slice(&(s.len() as u16).to_ne_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    debug_assert!(out.len() <= MAX_EXEMPLAR_LABEL_BYTES);
    Ok(out)
}

/// Decodes labels encoded by [`encode_exemplar_labels`]; `None` for bytes it would not
/// have written (a reader trusts no byte of a segment).
pub fn decode_exemplar_labels(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    /// The next length-prefixed string of `rest`, advancing past it.
    fn take(rest: &mut &[u8]) -> Option<String> {
        let (len, tail) = rest.split_first_chunk::<2>()?;
        let (s, tail) = tail.split_at_checked(u16::from_ne_bytes(*len) as usize)?;
        *rest = tail;
        String::from_utf8(s.to_vec()).ok()
    }
    let mut rest = bytes;
    let mut labels: Vec<(String, String)> = Vec::new();
    while !rest.is_empty() {
        labels.push((take(&mut rest)?, take(&mut rest)?));
    }
    // As encoded, so as checked there.
    let again = encode_exemplar_labels(&labels).ok()?;
    (again == bytes).then_some(labels)
}

/// Writes an exemplar into `words` (one slot): `labels` as [`encode_exemplar_labels`]
/// gives them, within the slot's room ([`exemplar_label_room`]). Returns false, writing
/// nothing, when another thread is writing this slot: its exemplar is as recent as this one.
///
/// # Panics
/// When the labels do not fit the slot (the caller checks the room).
pub fn exemplar_store(words: &[AtomicU64], value: f64, unix_nanos: u64, labels: &[u8]) -> bool {
    assert!(labels.len() <= exemplar_label_room(words.len()));
    // SYNC POINT exemplar-seq: acquire, so this write's stores are ordered after the
    // previous writer's. Setting the low bit takes the slot; finding it set means another
    // thread holds it, and the bit stays as that thread left it.
    let seq = words[SEQ].fetch_or(1, Ordering::Acquire);
    if seq & 1 == 1 {
        return false;
    }
    // SYNC POINT exemplar-seq: release fence; a reader that loads any field stored below
    // and then fences with acquire sees the odd sequence (or a later one), never its first.
    fence(Ordering::Release);
    // SYNC POINT exemplar-data: relaxed; published by the sequence around them.
    words[VALUE].store(value.to_bits(), Ordering::Relaxed);
    words[TIME].store(unix_nanos, Ordering::Relaxed);
    words[LEN].store(labels.len() as u64, Ordering::Relaxed);
    for (word, chunk) in words[LABELS..].iter().zip(labels.chunks(8)) {
        let mut bytes = [0u8; 8];
        bytes[..chunk.len()].copy_from_slice(chunk);
        // SYNC POINT exemplar-data: relaxed, as above.
        word.store(u64::from_ne_bytes(bytes), Ordering::Relaxed);
    }
    // SYNC POINT exemplar-seq: release; a reader that acquires the even sequence sees every
    // field stored above.
    words[SEQ].store(seq + 2, Ordering::Release);
    true
}

/// The words of a slot of `width` words holding `exemplar` whole, as [`exemplar_store`]
/// leaves it after a first write: for an image (an archive) built privately and published
/// whole. `None` for labels [`encode_exemplar_labels`] refuses or the slot has no room for.
pub fn exemplar_slot_words(exemplar: &Exemplar, width: usize) -> Option<Vec<u64>> {
    let labels = encode_exemplar_labels(&exemplar.labels).ok()?;
    if labels.len() > exemplar_label_room(width) {
        return None;
    }
    let mut words = vec![0u64; width];
    words[SEQ] = 2;
    words[VALUE] = exemplar.value.to_bits();
    words[TIME] = exemplar.unix_nanos;
    words[LEN] = labels.len() as u64;
    for (word, chunk) in words[LABELS..].iter_mut().zip(labels.chunks(8)) {
        let mut bytes = [0u8; 8];
        bytes[..chunk.len()].copy_from_slice(chunk);
        *word = u64::from_ne_bytes(bytes);
    }
    Some(words)
}

/// Exemplar slots of a series of `kind` with `buckets` finite bounds: a counter's one (its
/// `_total` sample), a histogram's one per bucket with `+Inf`; `None` for the other kinds,
/// whose samples OpenMetrics gives no exemplar.
pub const fn exemplar_count(kind: MetricKind, buckets: usize) -> Option<usize> {
    match kind {
        MetricKind::Counter => Some(1),
        MetricKind::Histogram => Some(buckets + 1),
        _ => None,
    }
}

/// Words of a block of `count` exemplar slots of `slot_words` words: an index of `count`
/// words (each the time of its slot's latest complete write: [`exemplar_index_store`]), then
/// the slots. A reader reads the index to find each sample's newest exemplar among every
/// process, and reads only that slot whole: one cache line per eight samples instead of one
/// per slot.
pub const fn exemplar_block_words(count: usize, slot_words: usize) -> usize {
    count + count * slot_words
}

/// Records in a block's index word that its slot holds an exemplar written at `unix_nanos`
/// (after [`exemplar_store`] returned true).
pub fn exemplar_index_store(word: &AtomicU64, unix_nanos: u64) {
    // SYNC POINT exemplar-index: relaxed; a hint: the slot it names is read whole, with its
    // own sequence, by `exemplar_read`.
    word.store(unix_nanos, Ordering::Relaxed);
}

/// The time an index word gives for its slot's latest exemplar; `None` for a slot never
/// written.
pub fn exemplar_index_load(word: &AtomicU64) -> Option<u64> {
    // SYNC POINT exemplar-index: relaxed; a hint, as above.
    Some(word.load(Ordering::Relaxed)).filter(|&t| t != 0)
}

/// What [`exemplar_read`] found in a slot.
#[derive(Clone, Debug, PartialEq)]
pub enum ExemplarRead {
    /// Never written.
    Empty,
    /// A whole exemplar.
    Exemplar(Exemplar),
    /// Being written through every try (or left mid-write by a process that died): none
    /// this time.
    Torn,
    /// Whole but not something a writer stores (a corrupt segment).
    Invalid,
}

/// Reads the exemplar of `words` (one slot, of any width), trying [`EXEMPLAR_READ_TRIES`]
/// times to see it whole.
pub fn exemplar_read(words: &[AtomicU64]) -> ExemplarRead {
    let room = exemplar_label_room(words.len());
    if words.len() <= LABELS {
        return ExemplarRead::Invalid;
    }
    let mut bytes = Vec::with_capacity(room);
    for _ in 0..EXEMPLAR_READ_TRIES {
        // SYNC POINT exemplar-seq: acquire; the fields of the write that made it even are
        // visible below.
        let first = words[SEQ].load(Ordering::Acquire);
        if first == 0 {
            return ExemplarRead::Empty;
        }
        if first & 1 == 1 {
            spin_loop();
            continue;
        }
        // SYNC POINT exemplar-data: relaxed; checked by the sequence after them.
        let value = f64::from_bits(words[VALUE].load(Ordering::Relaxed));
        let unix_nanos = words[TIME].load(Ordering::Relaxed);
        let len = words[LEN].load(Ordering::Relaxed);
        let len = usize::try_from(len).map_or(usize::MAX, |l| l);
        bytes.clear();
        if len <= room {
            for word in &words[LABELS..LABELS + len.div_ceil(8)] {
                // SYNC POINT exemplar-data: relaxed, as above.
                bytes.extend_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
            }
            bytes.truncate(len);
        }
        // SYNC POINT exemplar-seq: acquire fence, then relaxed; a field stored by a write
        // that began after `first` makes this load see that write's odd sequence or later.
        fence(Ordering::Acquire);
        if words[SEQ].load(Ordering::Relaxed) != first {
            spin_loop();
            continue;
        }
        if len > room {
            return ExemplarRead::Invalid;
        }
        return match decode_exemplar_labels(&bytes) {
            Some(labels) => ExemplarRead::Exemplar(Exemplar {
                labels,
                value,
                unix_nanos,
            }),
            None => ExemplarRead::Invalid,
        };
    }
    ExemplarRead::Torn
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn slot() -> Vec<AtomicU64> {
        (0..EXEMPLAR_WORDS).map(|_| AtomicU64::new(0)).collect()
    }

    fn exemplar(labels: &[(&str, &str)], value: f64, unix_nanos: u64) -> Exemplar {
        Exemplar {
            labels: labels
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            value,
            unix_nanos,
        }
    }

    #[test]
    fn stored_exemplars_read_back_whole() {
        let words = slot();
        assert_eq!(exemplar_read(&words), ExemplarRead::Empty);
        let labels = [
            ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("span", "é"),
        ];
        let encoded = encode_exemplar_labels(&labels).unwrap();
        assert!(exemplar_store(
            &words,
            0.25,
            1_700_000_000_123_456_789,
            &encoded
        ));
        let want = exemplar(&labels, 0.25, 1_700_000_000_123_456_789);
        assert_eq!(exemplar_read(&words), ExemplarRead::Exemplar(want));
        // A newer one replaces it, a shorter label set leaving no trace of the longer.
        let encoded = encode_exemplar_labels(&[("a", "")]).unwrap();
        assert!(exemplar_store(&words, -1.0, 7, &encoded));
        assert_eq!(
            exemplar_read(&words),
            ExemplarRead::Exemplar(exemplar(&[("a", "")], -1.0, 7))
        );
        // No labels at all is an exemplar too.
        assert!(exemplar_store(&words, 3.0, 8, &[]));
        assert_eq!(
            exemplar_read(&words),
            ExemplarRead::Exemplar(exemplar(&[], 3.0, 8))
        );
    }

    #[test]
    fn the_longest_label_sets_fit_their_slot() {
        // 64 pairs of two-character names: 128 characters, 4 length bytes per pair.
        let many: Vec<(String, String)> = (0..64u8)
            .map(|i| {
                (
                    format!("{}{}", (b'a' + i / 26) as char, (b'a' + i % 26) as char),
                    String::new(),
                )
            })
            .collect();
        let wide = vec![("v".to_owned(), "😀".repeat(127))];
        let words = slot();
        for labels in [many, wide] {
            let encoded = encode_exemplar_labels(&labels).unwrap();
            assert!(encoded.len() <= MAX_EXEMPLAR_LABEL_BYTES);
            assert!(exemplar_store(&words, 1.0, 1, &encoded));
            assert!(
                matches!(exemplar_read(&words), ExemplarRead::Exemplar(e) if e.labels == labels)
            );
        }
    }

    #[test]
    fn bad_labels_are_refused_in_words() {
        let message =
            |labels: &[(&str, &str)]| encode_exemplar_labels(labels).unwrap_err().to_string();
        assert_eq!(
            message(&[("trace-id", "x")]),
            r#"exemplar label name "trace-id" is not a valid label name"#
        );
        assert_eq!(
            message(&[("a", "1"), ("a", "2")]),
            r#"exemplar label "a" is given twice"#
        );
        let long = "x".repeat(128);
        assert_eq!(
            message(&[("a", &long)]),
            "exemplar labels of 129 characters, more than the 128 OpenMetrics allows"
        );
        assert!(encode_exemplar_labels(&[("a", &long[1..])]).is_ok());
    }

    #[test]
    fn a_write_left_unfinished_or_bytes_no_writer_stores_show_nothing() {
        let words = slot();
        let encoded = encode_exemplar_labels(&[("a", "b")]).unwrap();
        assert!(exemplar_store(&words, 1.0, 1, &encoded));
        // A writer killed mid-write: the sequence stays odd.
        words[SEQ].store(3, Ordering::Relaxed);
        assert_eq!(exemplar_read(&words), ExemplarRead::Torn);
        assert!(
            !exemplar_store(&words, 2.0, 2, &encoded),
            "the slot is taken"
        );
        // Whole, but not what a writer writes.
        words[SEQ].store(4, Ordering::Relaxed);
        words[LEN].store(MAX_EXEMPLAR_LABEL_BYTES as u64 + 1, Ordering::Relaxed);
        assert_eq!(exemplar_read(&words), ExemplarRead::Invalid);
        words[LEN].store(3, Ordering::Relaxed);
        assert_eq!(exemplar_read(&words), ExemplarRead::Invalid);
        for bad in [&[0xFF, 0xFF][..], &[1, 0, b'-', 0, 0], &[1, 0, 0xC3, 0, 0]] {
            assert_eq!(decode_exemplar_labels(bad), None, "{bad:?}");
        }
        assert_eq!(exemplar_read(&slot()[..LABELS]), ExemplarRead::Invalid);
        // A length past a narrow slot's room, in a narrow slot.
        let narrow = &words[..NARROW_EXEMPLAR_WORDS];
        narrow[LEN].store(97, Ordering::Relaxed);
        assert_eq!(exemplar_read(narrow), ExemplarRead::Invalid);
    }

    #[test]
    fn a_narrow_slot_holds_a_trace_and_span_id_and_a_wider_set_takes_the_widest() {
        let trace = [
            ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("span_id", "00f067aa0ba902b7"),
        ];
        let encoded = encode_exemplar_labels(&trace).unwrap();
        assert_eq!(encoded.len(), 71);
        assert_eq!(exemplar_slot_width(encoded.len()), NARROW_EXEMPLAR_WORDS);
        assert_eq!(exemplar_label_room(NARROW_EXEMPLAR_WORDS), 96);
        let words = slot();
        let narrow = &words[..NARROW_EXEMPLAR_WORDS];
        assert!(exemplar_store(narrow, 0.5, 9, &encoded));
        assert_eq!(
            exemplar_read(narrow),
            ExemplarRead::Exemplar(exemplar(&trace, 0.5, 9))
        );
        assert_eq!(exemplar_slot_width(97), EXEMPLAR_WORDS);
        assert_eq!(
            exemplar_label_room(EXEMPLAR_WORDS),
            MAX_EXEMPLAR_LABEL_BYTES
        );
        let image = exemplar_slot_words(&exemplar(&trace, 0.5, 9), NARROW_EXEMPLAR_WORDS).unwrap();
        let loaded: Vec<AtomicU64> = image.into_iter().map(AtomicU64::new).collect();
        assert_eq!(
            exemplar_read(&loaded),
            ExemplarRead::Exemplar(exemplar(&trace, 0.5, 9))
        );
        let long = "x".repeat(100);
        let long = exemplar(&[("trace_id", long.as_str())], 1.0, 1);
        assert_eq!(exemplar_slot_words(&long, NARROW_EXEMPLAR_WORDS), None);
        assert!(exemplar_slot_words(&long, EXEMPLAR_WORDS).is_some());
    }

    /// Threads write exemplars whose value and time say which labels they carry while a
    /// reader reads: every exemplar read is one that was written, whole.
    #[test]
    fn concurrent_writes_never_read_torn() {
        use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
        /// Stops the writers when the reader is done or fails: a failing assertion must end
        /// the test, not wait for writers that never stop.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Relaxed);
            }
        }
        let words = slot();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            for writer in 0..2u64 {
                let (words, stop) = (&words, &stop);
                s.spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Relaxed) {
                        let id = writer * 1_000_000_000 + i;
                        let labels = [
                            ("id", id.to_string()),
                            ("pad", "p".repeat((id % 100) as usize)),
                        ];
                        let encoded = encode_exemplar_labels(&labels).unwrap();
                        exemplar_store(words, id as f64, id, &encoded);
                        i += 1;
                    }
                });
            }
            let _stop = StopOnDrop(&stop);
            let mut whole = 0;
            // Miri (ci/miri.sh) runs it too, a thousand times slower.
            let reads = if cfg!(miri) { 100 } else { 200_000 };
            // At least `reads` reads, and on until one found an exemplar whole: the writers
            // may not have run yet (the slot still empty), or one may be stopped half-way
            // through its write (the slot torn) for as long as all those reads take, on a
            // busy machine. Past `reads` the reader yields after each miss so that they run.
            // Bounded, so a reader that never sees one fails.
            let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
            let mut done = 0;
            while done < reads || (whole == 0 && std::time::Instant::now() < until) {
                if let ExemplarRead::Exemplar(e) = exemplar_read(&words) {
                    let id = e.unix_nanos;
                    assert_eq!(e.value, id as f64);
                    assert_eq!(e.labels[0].1, id.to_string());
                    assert_eq!(e.labels[1].1, "p".repeat((id % 100) as usize));
                    whole += 1;
                } else if done >= reads {
                    std::thread::yield_now();
                }
                done += 1;
            }
            assert!(whole > 0, "no exemplar read whole in {done} reads");
        });
    }
}
