//! Shared helpers for the shmetrics benches.
//!
//! The baselines of the targets in docs/performance.md ("the physical limit") run on the same kind of memory the
//! writer's handles use: words of a file mapped shared ([`MappedWords`]). The histogram
//! baseline ([`raw_histogram_observe`]) and the shmetrics histogram bench share one
//! pre-generated cycle of values ([`observation_cycle`]) so that both do identical work.
//! The label-lookup benches share their label sets ([`label_sets_2`], [`label_sets_4`],
//! [`distinct_label_values`]) with their peers, and the two-thread benches share
//! [`on_two_threads`].

use shmetrics_layout::sync::AtomicU64;
use std::fs::File;
use std::io;
use std::sync::Barrier;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use memmap2::MmapRaw;
use shmetrics_layout::view::words_from_raw;

pub mod fixtures;

/// The 20 finite bucket bounds of the histogram benches: vLLM's
/// `vllm:e2e_request_latency_seconds` bounds without the last one.
pub const BOUNDS_20: [f64; 20] = [
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0,
];

/// The value of the predictable histogram benches (the same value every time, so the bucket
/// search's branches are perfectly predicted, as in the 5 ns anchor of docs/performance.md, "Targets"): inside the
/// middle bucket (index 10 of 21, `(15, 20]`), so the search makes as many comparisons (11)
/// as the average over [`observation_cycle`]'s buckets.
pub const FIXED_OBSERVATION: f64 = 17.5;

/// How many values [`observation_cycle`] makes for the histogram benches (a power of two,
/// so the benches wrap their index with a mask).
pub const CYCLE_LEN: usize = 1024;

/// A temporary file of `len` bytes mapped shared (read-write), viewed as atomic words.
///
/// The file is anonymous (unlinked as soon as it is created), so nothing outside this
/// object can reach the memory.
#[derive(Debug)]
pub struct MappedWords {
    map: MmapRaw,
    _file: File,
}

impl MappedWords {
    /// Creates and maps a zeroed temporary file of `len` bytes.
    ///
    /// # Errors
    /// When the temporary file cannot be created, sized or mapped.
    ///
    /// # Panics
    /// If `len` is zero or not a multiple of 8.
    pub fn new(len: usize) -> io::Result<Self> {
        assert!(
            len > 0 && len.is_multiple_of(8),
            "mapping length {len} must be a positive multiple of 8"
        );
        let file = tempfile::tempfile()?;
        file.set_len(len as u64)?;
        let map = MmapRaw::map_raw(&file)?;
        Ok(Self { map, _file: file })
    }

    /// The whole mapping, as atomic words.
    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: `mmap` returns a page-aligned address, and `new` checked that the length
        // is a multiple of 8; the mapping is valid for reads and writes until `self.map`
        // is dropped, which the returned borrow of `self` outlives; the file is anonymous
        // and private to this object, and this view is the only way this crate touches the
        // mapping, so every access to it is an atomic access of one aligned word.
        unsafe { words_from_raw(self.map.as_ptr(), self.map.len()) }
    }

    /// The word at byte `offset` of the mapping.
    ///
    /// # Panics
    /// If `offset` is not 8-aligned or the word does not fit in the mapping.
    pub fn word_at(&self, offset: usize) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8), "offset {offset} is not 8-aligned");
        &self.words()[offset / 8]
    }
}

/// The limit for one counter increment: one relaxed `fetch_add` of 1.
#[inline(always)]
pub fn raw_fetch_add(word: &AtomicU64) {
    word.fetch_add(1, Ordering::Relaxed);
}

/// The limit for one histogram observation: a linear search over `bounds`, a relaxed
/// `fetch_add` on the bucket's word (`buckets` has one word per bound plus `+Inf`), and an
/// f64 add on `sum` (the value's bits) by a `compare_exchange_weak` loop.
///
/// # Panics
/// If `buckets` has fewer than `bounds.len() + 1` words.
#[inline(always)]
pub fn raw_histogram_observe(bounds: &[f64], buckets: &[AtomicU64], sum: &AtomicU64, v: f64) {
    let bucket = bounds.iter().position(|&b| v <= b).unwrap_or(bounds.len());
    buckets[bucket].fetch_add(1, Ordering::Relaxed);
    raw_f64_add(sum, v);
}

/// The limit for one f64 counter increment: an f64 add on `word` (the value's bits) by a
/// relaxed `compare_exchange_weak` loop.
#[inline(always)]
pub fn raw_f64_add(word: &AtomicU64, v: f64) {
    let mut current = word.load(Ordering::Relaxed);
    loop {
        let new = (f64::from_bits(current) + v).to_bits();
        match word.compare_exchange_weak(current, new, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break,
            Err(actual) => current = actual,
        }
    }
}

/// The limit for one gauge set: a relaxed store of the value's bits.
#[inline(always)]
pub fn raw_store_f64(word: &AtomicU64, v: f64) {
    word.store(v.to_bits(), Ordering::Relaxed);
}

/// The label values of the two-label lookup benches: 100 sets, `model-a`..`model-j` ×
/// `0`..`9`, model first. The benches look up `["model-a", "0"]`.
pub fn label_sets_2() -> Vec<[String; 2]> {
    let mut sets = Vec::with_capacity(100);
    for model in 'a'..='j' {
        for rank in 0..10 {
            sets.push([format!("model-{model}"), rank.to_string()]);
        }
    }
    sets
}

/// The label values of the four-label lookup benches: 100 sets, `model-a`..`model-e` ×
/// `0`..`4` × `prefill`/`decode` × `stop`/`length`. The benches look up
/// `["model-a", "0", "prefill", "stop"]`.
pub fn label_sets_4() -> Vec<[String; 4]> {
    let mut sets = Vec::with_capacity(100);
    for model in 'a'..='e' {
        for rank in 0..5 {
            for phase in ["prefill", "decode"] {
                for reason in ["stop", "length"] {
                    sets.push([
                        format!("model-{model}"),
                        rank.to_string(),
                        phase.to_owned(),
                        reason.to_owned(),
                    ]);
                }
            }
        }
    }
    sets
}

/// `n` distinct pairs of label values for the child-creation benches, shaped like real ones
/// (`model-00042`, `rank-3`).
pub fn distinct_label_values(n: usize) -> Vec<[String; 2]> {
    (0..n)
        .map(|i| [format!("model-{:05}", i / 8), format!("rank-{}", i % 8)])
        .collect()
}

/// Runs `op` `iters` times on each of two threads released together by a barrier, and
/// returns the slower thread's time from its release to its last `op`: the time per
/// operation of one thread while another does the same, times `iters`.
///
/// # Panics
/// If `op` panics on either thread.
pub fn on_two_threads(iters: u64, op: impl Fn() + Sync) -> Duration {
    two_threads(|_| {
        for _ in 0..iters {
            op();
        }
    })
}

/// `observe` of `values` on two threads, `ops` each, each thread walking the values (a
/// cycle) from its own half: no shared index, so the only line the threads fight over is
/// the subject's. The slower thread's time, as [`two_threads`].
pub fn observe_on_two_threads(ops: u64, values: &[f64], observe: impl Fn(f64) + Sync) -> Duration {
    two_threads(|thread| {
        let start = thread * values.len() / 2;
        for at in (start..).take(ops as usize) {
            observe(std::hint::black_box(values[at % values.len()]));
        }
    })
}

/// Runs `work(0)` and `work(1)` on two threads released together; returns the slower
/// thread's time from its release to the end of its `work`.
///
/// # Panics
/// If `work` panics on either thread.
pub fn two_threads(work: impl Fn(usize) + Sync) -> Duration {
    let barrier = Barrier::new(2);
    let (work, barrier) = (&work, &barrier);
    std::thread::scope(|scope| {
        let threads = [0, 1].map(|thread| {
            scope.spawn(move || {
                barrier.wait();
                let start = Instant::now();
                work(thread);
                start.elapsed()
            })
        });
        threads
            .into_iter()
            .map(|t| t.join().expect("a bench thread panicked"))
            .max()
            .expect("two threads")
    })
}

/// `len` observations for histograms with `bounds`, in a fixed pseudo-random order of
/// buckets (so the bucket search's branches are not trivially predictable), each value
/// strictly inside its bucket; the first `bounds.len() + 1` values visit every bucket, the
/// `+Inf` one included, once each.
///
/// # Panics
/// If `bounds` is empty, not strictly increasing, or has a non-positive first bound.
pub fn observation_cycle(bounds: &[f64], len: usize) -> Vec<f64> {
    assert!(
        !bounds.is_empty() && bounds[0] > 0.0 && bounds.windows(2).all(|w| w[0] < w[1]),
        "bounds must be positive and strictly increasing"
    );
    let buckets = bounds.len() + 1;
    // A fixed 64-bit LCG (Knuth's MMIX constants): the same cycle on every run.
    let mut state: u64 = 0x5eed_5eed_5eed_5eed;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    (0..len)
        .map(|i| {
            let bucket = if i < buckets {
                i
            } else {
                (next() % buckets as u64) as usize
            };
            let (low, high) = match bucket {
                0 => (0.0, bounds[0]),
                b if b == bounds.len() => (bounds[b - 1], 2.0 * bounds[b - 1]),
                b => (bounds[b - 1], bounds[b]),
            };
            // A fraction in [1/16, 15/16]: strictly inside (low, high).
            let fraction = (1 + next() % 15) as f64 / 16.0;
            low + (high - low) * fraction
        })
        .collect()
}

/// Whether criterion was given a filter (a positional argument), so some benches of a group
/// may not have run: the checks after each group that every peer did its work only hold
/// when none was skipped.
pub fn filtered() -> bool {
    // criterion's options that take a separate value.
    const WITH_VALUE: &[&str] = &[
        "--save-baseline",
        "-s",
        "--baseline",
        "-b",
        "--baseline-lenient",
        "--load-baseline",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--profile-time",
        "--color",
        "-c",
        "--output-format",
        "--plotting-backend",
        "--format",
    ];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if WITH_VALUE.contains(&arg.as_str()) {
            args.next();
        } else if !arg.starts_with('-') {
            return true;
        }
    }
    false
}

/// One whole scrape of `reader` in the text format, appended to `out`, without
/// self-metrics: what the scrape benches time.
pub fn scrape_text(
    reader: &mut shmetrics_reader::Reader,
    filter: &shmetrics_reader::PrefixFilter,
    out: &mut Vec<u8>,
) -> shmetrics_reader::ScrapeReport {
    use shmetrics_reader::{Escaping, Format};
    reader.scrape_into(Format::Prometheus, Escaping::default(), filter, false, out)
}

/// The median of `values` (the mean of the middle two for an even count); NaN sorts last.
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shmetrics_layout::slots::bucket_index;
    use std::collections::HashSet;
    use std::sync::Mutex;

    #[test]
    fn mapped_words_start_zeroed_and_keep_writes() {
        let map = MappedWords::new(4096).unwrap();
        assert_eq!(map.words().len(), 512);
        assert!(map.words().iter().all(|w| w.load(Ordering::Relaxed) == 0));
        raw_fetch_add(map.word_at(64));
        raw_fetch_add(map.word_at(64));
        assert_eq!(map.words()[8].load(Ordering::Relaxed), 2);
        assert_eq!(map.words()[7].load(Ordering::Relaxed), 0);
    }

    #[test]
    #[should_panic(expected = "not 8-aligned")]
    fn unaligned_offsets_are_refused() {
        let map = MappedWords::new(64).unwrap();
        let _ = map.word_at(4);
    }

    #[test]
    fn cycle_is_fixed_and_visits_every_bucket_first() {
        let cycle = observation_cycle(&BOUNDS_20, CYCLE_LEN);
        assert_eq!(cycle.len(), CYCLE_LEN);
        assert_eq!(cycle, observation_cycle(&BOUNDS_20, CYCLE_LEN));
        let first: Vec<usize> = cycle[..21]
            .iter()
            .map(|&v| bucket_index(&BOUNDS_20, v))
            .collect();
        assert_eq!(first, (0..21).collect::<Vec<_>>());
        // No value sits on a bound, where `v <= b` vs `v < b` would disagree.
        assert!(cycle.iter().all(|v| !BOUNDS_20.contains(v)));
        let mut per_bucket = [0usize; 21];
        for &v in &cycle {
            per_bucket[bucket_index(&BOUNDS_20, v)] += 1;
        }
        // Spread: every bucket gets a fair share (1024 / 21 ≈ 49), none dominates.
        assert!(
            per_bucket.iter().all(|&n| (20..=100).contains(&n)),
            "{per_bucket:?}"
        );
    }

    #[test]
    fn raw_histogram_counts_like_the_layout() {
        let map = MappedWords::new(4096).unwrap();
        let words = map.words();
        let (sum, buckets) = (&words[0], &words[1..22]);
        let values = [0.1, 0.3, 0.31, 2.5, 1920.0, 5000.0, 5000.0];
        for v in values {
            raw_histogram_observe(&BOUNDS_20, buckets, sum, v);
        }
        let mut expected = [0u64; 21];
        for v in values {
            expected[bucket_index(&BOUNDS_20, v)] += 1;
        }
        let got: Vec<u64> = buckets.iter().map(|w| w.load(Ordering::Relaxed)).collect();
        assert_eq!(got, expected);
        assert_eq!(got[0], 2); // 0.1 and 0.3 (bounds are inclusive)
        assert_eq!(got[20], 2); // 5000 twice, in +Inf
        assert_eq!(
            f64::from_bits(sum.load(Ordering::Relaxed)),
            values.iter().sum::<f64>()
        );
    }

    #[test]
    fn fixed_observation_is_in_the_middle_bucket() {
        assert_eq!(bucket_index(&BOUNDS_20, FIXED_OBSERVATION), 10);
        assert_eq!((BOUNDS_20[9], BOUNDS_20[10]), (15.0, 20.0));
    }

    #[test]
    fn raw_f64_ops_write_the_value_bits() {
        let map = MappedWords::new(64).unwrap();
        let word = map.word_at(8);
        raw_store_f64(word, 2.25);
        assert_eq!(f64::from_bits(word.load(Ordering::Relaxed)), 2.25);
        raw_f64_add(word, 0.5);
        raw_f64_add(word, 0.5);
        assert_eq!(f64::from_bits(word.load(Ordering::Relaxed)), 3.25);
        assert_eq!(map.words()[0].load(Ordering::Relaxed), 0);
    }

    #[test]
    fn label_sets_are_distinct_and_start_with_the_looked_up_one() {
        let two = label_sets_2();
        assert_eq!(two.len(), 100);
        assert_eq!(two[0], ["model-a", "0"]);
        assert_eq!(two[99], ["model-j", "9"]);
        assert_eq!(two.iter().collect::<HashSet<_>>().len(), 100);
        let four = label_sets_4();
        assert_eq!(four.len(), 100);
        assert_eq!(four[0], ["model-a", "0", "prefill", "stop"]);
        assert_eq!(four[99], ["model-e", "4", "decode", "length"]);
        assert_eq!(four.iter().collect::<HashSet<_>>().len(), 100);
        let created = distinct_label_values(1000);
        assert_eq!(created[9], ["model-00001", "rank-1"]);
        assert_eq!(created.iter().collect::<HashSet<_>>().len(), 1000);
    }

    #[test]
    fn two_threads_each_run_every_iteration() {
        let count = AtomicU64::new(0);
        let threads = Mutex::new(HashSet::new());
        on_two_threads(10_000, || {
            count.fetch_add(1, Ordering::Relaxed);
            threads.lock().unwrap().insert(std::thread::current().id());
        });
        assert_eq!(count.load(Ordering::Relaxed), 20_000);
        assert_eq!(threads.into_inner().unwrap().len(), 2);
    }
}
