//! Value slots: how many words each series takes, and the operations on them.
//!
//! | kind      | words | meaning                                                         |
//! |-----------|-------|-----------------------------------------------------------------|
//! | counter   | 2     | `[0]` integer part (u64), `[1]` fractional increments (f64)     |
//! | gauge     | 2     | `[0]` value (f64), `[1]` last write, ns since epoch (u64, 0 = never) |
//! | histogram | 3 + n | `[0]` completed observations (u64), `[1]` sum (f64), `[2..]` per-bucket counts, the last one `+Inf` |
//! | summary   | 3     | a histogram without finite buckets                              |
//!
//! Writers use only relaxed or release read-modify-writes; readers use the matching
//! acquire loads. Each ordering is named by a `SYNC POINT` listed in `docs/concurrency.md`.

use crate::MetricKind;
use crate::sync::{AtomicU64, Ordering, fence, fetch_add_f64, load_f64, spin_loop, store_f64};

/// Words taken by one series of `kind` with `bucket_count` finite bounds.
pub const fn slot_words(kind: MetricKind, bucket_count: usize) -> usize {
    match kind {
        // An info's and a stateset's slots are a gauge's: a value (a stateset's state
        // index) and the time of the last write.
        MetricKind::Counter | MetricKind::Gauge | MetricKind::Info | MetricKind::StateSet => 2,
        MetricKind::Histogram => 3 + bucket_count,
        MetricKind::Summary => 3,
    }
}

/// Largest integer step that a counter adds to its integer word (2^53, exact in f64).
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

/// Adds `n` to a counter.
#[inline(always)]
pub fn counter_inc(words: &[AtomicU64], n: u64) {
    counter_inc_word(&words[0], n);
}

/// Adds `n` to a counter, given its integer word (the first of its slots).
#[inline(always)]
pub fn counter_inc_word(word: &AtomicU64, n: u64) {
    // SYNC POINT counter: relaxed; a counter word publishes nothing but itself.
    word.fetch_add(n, Ordering::Relaxed);
}

/// Adds `v` to a counter: integral values go to the integer word, others to the f64 word.
/// Negative, NaN and zero increments are ignored (a counter never goes down). Returns
/// whether the f64 word's exchange met another thread's write (see [`fetch_add_f64`]);
/// the integer word's `fetch_add` cannot tell.
#[inline]
pub fn counter_add(words: &[AtomicU64], v: f64) -> bool {
    // In range, `v as i64` converts exactly iff `v` is integral; comparing the round trip
    // avoids `f64::fract`, a library call (software trunc) on baseline x86-64. The signed
    // conversion is one instruction there (the unsigned one a dozen, handling values beyond
    // 2^63 that the range check has already excluded): under contention the check runs
    // between two fights for the line, so its length counts.
    if v > 0.0 && v <= MAX_EXACT && (v as i64) as f64 == v {
        counter_inc(words, v as i64 as u64);
        false
    } else if v > 0.0 {
        // SYNC POINT counter: relaxed, as above.
        fetch_add_f64(&words[1], v, Ordering::Relaxed)
    } else {
        false
    }
}

/// Reads a counter.
#[inline]
pub fn counter_read(words: &[AtomicU64]) -> f64 {
    // SYNC POINT counter: relaxed; each word is monotonic on its own.
    words[0].load(Ordering::Relaxed) as f64 + load_f64(&words[1], Ordering::Relaxed)
}

/// A counter's two words as read: the integer increments and the fractional ones.
#[inline]
pub fn counter_read_words(words: &[AtomicU64]) -> (u64, f64) {
    // SYNC POINT counter: relaxed, as in `counter_read`.
    let int = words[0].load(Ordering::Relaxed);
    // SYNC POINT counter: relaxed, as above.
    (int, load_f64(&words[1], Ordering::Relaxed))
}

/// Sets a live counter back to zero (`Counter.reset()` in `prometheus_client`): the one way
/// a counter word goes down, at its owner's explicit request.
pub fn counter_reset(words: &[AtomicU64]) {
    // SYNC POINT counter-reset: relaxed; a reset publishes nothing but the zeros.
    words[0].store(0, Ordering::Relaxed);
    // SYNC POINT counter-reset: relaxed, as above.
    store_f64(&words[1], 0.0, Ordering::Relaxed);
}

/// Stores a counter's two words at once. For a segment no one else sees yet (a compactor's
/// archive being built); live counters change only through [`counter_inc`] and
/// [`counter_add`] (and [`counter_reset`]).
pub fn counter_store(words: &[AtomicU64], int: u64, fraction: f64) {
    // SYNC POINT counter-build: relaxed; the segment is published later as a whole.
    words[0].store(int, Ordering::Relaxed);
    // SYNC POINT counter-build: relaxed, as above.
    store_f64(&words[1], fraction, Ordering::Relaxed);
}

/// Sets a gauge; `now` is the write time for the `mostrecent` modes, `None` otherwise.
#[inline]
pub fn gauge_set(words: &[AtomicU64], v: f64, now: Option<u64>) {
    // SYNC POINT gauge-value: relaxed store, published by the release on the timestamp.
    store_f64(&words[0], v, Ordering::Relaxed);
    if let Some(ts) = now {
        // SYNC POINT gauge-timestamp: release; a reader that sees this time sees the value.
        words[1].fetch_max(ts, Ordering::Release);
    }
}

/// Adds `delta` to a gauge (negative to decrease); `now` as in [`gauge_set`].
#[inline]
pub fn gauge_add(words: &[AtomicU64], delta: f64, now: Option<u64>) {
    // SYNC POINT gauge-value: relaxed read-modify-write, published as in `gauge_set`.
    fetch_add_f64(&words[0], delta, Ordering::Relaxed);
    if let Some(ts) = now {
        // SYNC POINT gauge-timestamp: release, as in `gauge_set`.
        words[1].fetch_max(ts, Ordering::Release);
    }
}

/// A gauge as read: its value and last write time (0 when never written with a time).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GaugeValue {
    /// The value.
    pub value: f64,
    /// Write time in ns since the epoch, 0 if never set in a `mostrecent` mode.
    pub timestamp: u64,
}

/// Reads a gauge.
#[inline]
pub fn gauge_read(words: &[AtomicU64]) -> GaugeValue {
    // SYNC POINT gauge-timestamp: acquire, pairs with the writer's release.
    let timestamp = words[1].load(Ordering::Acquire);
    // SYNC POINT gauge-value: relaxed, ordered after the acquire above.
    let value = load_f64(&words[0], Ordering::Relaxed);
    GaugeValue { value, timestamp }
}

/// Index of the bucket `v` falls in: the first bound `>= v`, or `bounds.len()` for `+Inf`
/// (and for NaN, which Prometheus counts only in `+Inf`).
#[inline(always)]
pub fn bucket_index(bounds: &[f64], v: f64) -> usize {
    bounds.iter().position(|&b| v <= b).unwrap_or(bounds.len())
}

/// Records one observation into bucket `bucket` (from [`bucket_index`]). Returns whether
/// the sum's exchange met another thread's write (see [`fetch_add_f64`]): the series is
/// written by two threads at once.
#[inline(always)]
pub fn histogram_observe(words: &[AtomicU64], bucket: usize, v: f64) -> bool {
    // SYNC POINT histogram-bucket: relaxed; published by the two releases below.
    words[2 + bucket].fetch_add(1, Ordering::Relaxed);
    // SYNC POINT histogram-sum: release; a reader that acquires this sum sees the bucket.
    let contended = fetch_add_f64(&words[1], v, Ordering::Release);
    // SYNC POINT histogram-count: release; marks the observation complete.
    words[0].fetch_add(1, Ordering::Release);
    contended
}

/// Stores a whole histogram (or summary) at once: per-bucket counts (`bounds + 1`, the last
/// `+Inf`), their total as the count, and the sum. For a segment no one else sees yet (a
/// compactor's archive being built); live histograms change only through
/// [`histogram_observe`].
pub fn histogram_store(words: &[AtomicU64], buckets: &[u64], sum: f64) {
    for (word, &n) in words[2..].iter().zip(buckets) {
        // SYNC POINT histogram-build: relaxed; the segment is published later as a whole.
        word.store(n, Ordering::Relaxed);
    }
    // SYNC POINT histogram-build: relaxed, as above.
    store_f64(&words[1], sum, Ordering::Relaxed);
    // SYNC POINT histogram-build: relaxed, as above.
    words[0].store(buckets.iter().sum(), Ordering::Relaxed);
}

/// A histogram (or summary) as read.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramValue {
    /// Per-bucket counts, not cumulative; the last is `+Inf`.
    pub buckets: Vec<u64>,
    /// Sum of observations.
    pub sum: f64,
    /// Whether `sum` and `buckets` describe exactly the same observations. Only false when
    /// writers kept the series busy through every retry.
    pub consistent: bool,
}

impl Default for HistogramValue {
    /// Empty, consistent: what [`histogram_read`] fills.
    fn default() -> Self {
        Self {
            buckets: Vec::new(),
            sum: 0.0,
            consistent: true,
        }
    }
}

impl HistogramValue {
    /// Total observations: the sum of the buckets, which is also the `+Inf` bucket.
    /// Saturates: counts read from a corrupt segment cannot overflow it.
    pub fn count(&self) -> u64 {
        bucket_total(&self.buckets)
    }
}

/// The total of per-bucket counts, saturating (counts read from a corrupt segment cannot
/// overflow it).
pub fn bucket_total(buckets: &[u64]) -> u64 {
    buckets.iter().fold(0, |a, b| a.saturating_add(*b))
}

/// How many times [`histogram_read`] retries before settling for an inconsistent read. Two
/// under loom: what a read promises does not depend on the number, and each retry
/// multiplies the interleavings a model explores.
pub const HISTOGRAM_READ_TRIES: usize = if cfg!(loom) { 2 } else { 16 };

/// Reads a histogram with `bucket_count` finite buckets, consistently: the sum covers
/// exactly the counted observations. A reader never writes, so it cannot stop writers; it
/// retries while an observation is half done, up to [`HISTOGRAM_READ_TRIES`] times.
///
/// Why equality proves consistency: every observation adds its bucket, then its sum
/// (release), then the count (release). After acquiring the count `c`, the buckets of those
/// `c` observations are visible; after acquiring the sum, the bucket of every observation
/// that sum includes is visible. So the visible buckets total at least `c`, and exceed `c`
/// if the sum includes anything beyond those `c`. A total of exactly `c` means buckets and
/// sum cover the same `c` observations.
pub fn histogram_read(words: &[AtomicU64], bucket_count: usize, out: &mut HistogramValue) {
    out.buckets.resize(bucket_count + 1, 0);
    let read = histogram_read_into(words, &mut out.buckets);
    out.sum = read.sum;
    out.consistent = read.consistent;
}

/// What [`histogram_read_into`] read beside the counts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HistogramRead {
    /// Sum of observations.
    pub sum: f64,
    /// The counts' total, wrapping: exact when `high` is below `2^64 / counts`.
    pub total: u64,
    /// The bitwise or of the counts: a bound on each of them, for free in the read loop.
    pub high: u64,
    /// As [`HistogramValue::consistent`].
    pub consistent: bool,
}

/// [`histogram_read`] into `buckets` (one per finite bucket and `+Inf`), which it
/// overwrites whole: a reader folding many histograms reuses one buffer without clearing
/// it, and gets the counts' total and bound without another pass over them.
#[inline]
pub fn histogram_read_into(words: &[AtomicU64], buckets: &mut [u64]) -> HistogramRead {
    let mut none: [u64; 0] = [];
    read_counts(words, buckets, &mut none)
}

/// [`histogram_read_into`] that also adds the counts to `sums` (one per bucket, wrapping)
/// in the same pass: a reader folding many processes' histograms touches each count once.
/// An attempt that turns out inconsistent has its additions taken back before the retry,
/// so `sums` gains exactly the counts left in `counts` (and a caller can take those back
/// too, exactly, with wrapping subtractions).
///
/// # Panics
/// If `sums` is shorter than `counts`.
#[inline]
pub fn histogram_read_adding(
    words: &[AtomicU64],
    counts: &mut [u64],
    sums: &mut [u64],
) -> HistogramRead {
    let n = counts.len();
    read_counts(words, counts, &mut sums[..n])
}

/// The read loop of [`histogram_read_into`] (`sums` empty) and [`histogram_read_adding`]
/// (`sums` as long as `counts`).
#[inline(always)]
fn read_counts(words: &[AtomicU64], counts: &mut [u64], sums: &mut [u64]) -> HistogramRead {
    let bucket_words = &words[2..2 + counts.len()];
    let adding = !sums.is_empty();
    let mut attempt = 0;
    loop {
        // SYNC POINT histogram-count: acquire, pairs with the writer's release.
        let count = words[0].load(Ordering::Acquire);
        // SYNC POINT histogram-sum: acquire, pairs with the writer's release.
        let sum = load_f64(&words[1], Ordering::Acquire);
        let (mut total, mut high) = (0u64, 0u64);
        if adding {
            for ((slot, word), into) in counts.iter_mut().zip(bucket_words).zip(sums.iter_mut()) {
                // SYNC POINT histogram-bucket: relaxed, ordered after the acquires above.
                *slot = word.load(Ordering::Relaxed);
                *into = into.wrapping_add(*slot);
                total = total.wrapping_add(*slot);
                high |= *slot;
            }
        } else {
            for (slot, word) in counts.iter_mut().zip(bucket_words) {
                // SYNC POINT histogram-bucket: relaxed, ordered after the acquires above.
                *slot = word.load(Ordering::Relaxed);
                total = total.wrapping_add(*slot);
                high |= *slot;
            }
        }
        attempt += 1;
        let consistent = total == count;
        if consistent || attempt == HISTOGRAM_READ_TRIES {
            return HistogramRead {
                sum,
                total,
                high,
                consistent,
            };
        }
        for (into, slot) in sums.iter_mut().zip(counts.iter()) {
            *into = into.wrapping_sub(*slot);
        }
        fence(Ordering::Acquire);
        spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(n: usize) -> Vec<AtomicU64> {
        (0..n).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn counter_integer_and_fraction() {
        let w = words(2);
        counter_inc(&w, 1);
        counter_add(&w, 2.0);
        counter_add(&w, 0.25);
        counter_add(&w, -5.0);
        counter_add(&w, f64::NAN);
        assert_eq!(counter_read(&w), 3.25);
        assert_eq!(w[0].load(Ordering::Relaxed), 3);
        counter_add(&w, 1e300);
        assert_eq!(counter_read(&w), 1e300 + 3.0);
    }

    #[test]
    fn whole_increments_up_to_two_to_the_53_take_the_integer_word() {
        // (increment, integer word, f64 word) of a fresh counter: whole values up to 2^53
        // add exactly to the integer word; fractions and larger values (whole, but beyond
        // the steps an f64 counts exactly) to the f64 word; zeros, negatives and NaN nowhere.
        let cases = [
            (1.0, 1, 0.0),
            (3.0, 3, 0.0),
            (4_503_599_627_370_497.0, (1 << 52) + 1, 0.0),
            (MAX_EXACT, 1 << 53, 0.0),
            (0.5, 0, 0.5),
            (f64::MIN_POSITIVE, 0, f64::MIN_POSITIVE),
            (MAX_EXACT + 2.0, 0, MAX_EXACT + 2.0),
            (1e300, 0, 1e300),
            (f64::INFINITY, 0, f64::INFINITY),
            (0.0, 0, 0.0),
            (-0.0, 0, 0.0),
            (-1.0, 0, 0.0),
            (f64::NAN, 0, 0.0),
        ];
        for (v, int, float) in cases {
            let w = words(2);
            counter_add(&w, v);
            assert_eq!(w[0].load(Ordering::Relaxed), int, "{v}");
            assert_eq!(w[1].load(Ordering::Relaxed), f64::to_bits(float), "{v}");
        }
    }

    #[test]
    fn gauge_timestamps_only_advance() {
        let w = words(2);
        gauge_set(&w, 5.0, Some(100));
        gauge_set(&w, 6.0, Some(50));
        assert_eq!(
            gauge_read(&w),
            GaugeValue {
                value: 6.0,
                timestamp: 100
            }
        );
        gauge_add(&w, -1.5, None);
        assert_eq!(gauge_read(&w).value, 4.5);
    }

    #[test]
    fn histogram_buckets() {
        let bounds = [0.1, 1.0, 10.0];
        let cases = [
            (0.05, 0),
            (0.1, 0),
            (0.5, 1),
            (10.0, 2),
            (11.0, 3),
            (f64::INFINITY, 3),
            (f64::NAN, 3),
            (-1.0, 0),
        ];
        for (v, expected) in cases {
            assert_eq!(bucket_index(&bounds, v), expected, "{v}");
        }
        let w = words(slot_words(MetricKind::Histogram, bounds.len()));
        for v in [0.05, 0.5, 0.5, 20.0] {
            histogram_observe(&w, bucket_index(&bounds, v), v);
        }
        let mut out = HistogramValue {
            buckets: vec![],
            sum: 0.0,
            consistent: false,
        };
        histogram_read(&w, bounds.len(), &mut out);
        assert_eq!(out.buckets, [1, 2, 0, 1]);
        assert_eq!(out.sum, 21.05);
        assert_eq!(out.count(), 4);
        assert!(out.consistent);
    }

    #[test]
    fn half_done_observation_is_detected() {
        let w = words(slot_words(MetricKind::Histogram, 1));
        histogram_observe(&w, 0, 1.0);
        // An observation that has bumped its bucket and sum but not yet the count.
        w[3].fetch_add(1, Ordering::Relaxed);
        fetch_add_f64(&w[1], 7.0, Ordering::Relaxed);
        let mut out = HistogramValue {
            buckets: vec![],
            sum: 0.0,
            consistent: true,
        };
        histogram_read(&w, 1, &mut out);
        assert!(!out.consistent);
        assert_eq!(out.buckets, [1, 1]);
    }

    #[test]
    fn reading_while_adding_adds_the_counts_returned_once() {
        let w = words(5);
        histogram_store(&w, &[2, 0, 7], 3.5);
        let (mut counts, mut sums) = (vec![0; 3], vec![10, 20, 30]);
        let read = histogram_read_adding(&w, &mut counts, &mut sums);
        assert!(read.consistent);
        assert_eq!((read.sum, read.total, read.high), (3.5, 9, 7));
        assert_eq!((counts, sums), (vec![2, 0, 7], vec![12, 20, 37]));
        // A count that never matches its buckets: every retry's additions are taken back,
        // and the last read's counts are added once.
        w[0].store(100, Ordering::Relaxed);
        let (mut counts, mut sums) = (vec![0; 3], vec![10, 20, 30]);
        let read = histogram_read_adding(&w, &mut counts, &mut sums);
        assert!(!read.consistent);
        assert_eq!((counts, sums), (vec![2, 0, 7], vec![12, 20, 37]));
    }
}
