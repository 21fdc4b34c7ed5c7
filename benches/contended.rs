//! `contended`: two threads writing one series at once (an engine's thread pool), shmetrics
//! against the physical limit and the peers, in interleaved rounds.
//!
//! ```text
//! cargo bench -p shmetrics-benches --bench contended -- [--rounds 41] [--ops 200000]
//! ```
//!
//! The criterion groups of `writer_threads.rs` time each subject for seconds in turn; with
//! two threads fighting over one cache line, the machine's state (which cores the threads
//! land on, what else runs) drifts between those seconds, and one subject's figure moves
//! ±50 % from one run to the next. Here every round runs every subject once, for `--ops`
//! operations per thread, in an order rotated each round, so a drift hits all of them alike;
//! each subject's figure is its median over the rounds, and its ratio to the limit is the
//! median of the per-round ratios (the limit and the subject timed seconds apart).
//!
//! Groups (time per operation of the slower thread):
//! - `counter_inc_by_f64`: `inc_by(0.5)` on one float counter; limit: an f64 CAS loop on a
//!   mapped word. `shmetrics` is a counter registered plainly, with the default options
//!   (spread over copies once found contended, `Options::contention_stripes`);
//!   `shmetrics_striped` is the counter registered with 4 stripes
//!   (`Registry::counter_striped`); `shmetrics_one_copy` the counter in a registry that
//!   never spreads a series (`contention_stripes: 1`).
//! - `histogram_observe_20`: `observe` over the benches' cycle of values on one histogram
//!   with 20 bounds, each thread walking the cycle from its own half; limit: linear search,
//!   bucket `fetch_add` and f64 CAS on the sum. `shmetrics_striped` is the same histogram
//!   registered with 4 stripes (`Registry::histogram_striped`): each thread its own copy.
//!   `shmetrics` and `shmetrics_one_copy` as for the counter.
//!   `facade` and `facade_striped` record through the `metrics` facade
//!   (`shmetrics_metrics::ShmetricsRecorder`, a kept `metrics::Histogram` handle), without
//!   a stripe rule and with `stripes(4)`.
//!
//! The last line is a JSON object of all figures.

#[allow(dead_code)]
mod peers;

use std::hint::black_box;

use peers::{FloatCounters, Histograms, STRIPES};
use shmetrics_benches::{
    BOUNDS_20, CYCLE_LEN, median, observation_cycle, observe_on_two_threads, on_two_threads,
    raw_f64_add, raw_histogram_observe,
};
use shmetrics_metrics::ShmetricsRecorder;

const USAGE: &str = "usage: contended [--rounds R] [--ops N]";

/// The histogram the facade subjects record into.
const FACADE_HISTOGRAM: &str = "bench_facade_latency_seconds";

/// A `metrics` facade recorder on a directory of its own, with `stripes` copies of each
/// series, and its handle of [`FACADE_HISTOGRAM`].
struct Facade {
    _dir: tempfile::TempDir,
    recorder: ShmetricsRecorder,
    handle: metrics::Histogram,
    stripes: usize,
}

impl Facade {
    fn new(stripes: usize) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary metrics directory");
        let recorder = ShmetricsRecorder::builder()
            .buckets(&BOUNDS_20)
            .stripes(stripes)
            .open(dir.path())
            .expect("open the recorder");
        let handle =
            metrics::with_local_recorder(&recorder, || metrics::histogram!(FACADE_HISTOGRAM));
        Self {
            _dir: dir,
            recorder,
            handle,
            stripes,
        }
    }

    /// Observations recorded so far.
    fn observed(&self) -> u64 {
        let family = (self.recorder.registry())
            .histogram_striped(
                FACADE_HISTOGRAM,
                FACADE_HISTOGRAM,
                &[],
                &BOUNDS_20,
                self.stripes,
            )
            .expect("the facade registered this family");
        let child = family.unlabelled().expect("resolve the child");
        child.get().buckets.iter().sum()
    }
}

/// One subject of a group: its name and one timed run of `ops` operations per thread.
struct Subject<'a> {
    name: &'static str,
    run: Box<dyn Fn(u64) -> f64 + 'a>,
}

impl<'a> Subject<'a> {
    /// `op` on two threads; a run returns nanoseconds per operation of the slower thread.
    fn new(name: &'static str, op: impl Fn() + Sync + 'a) -> Self {
        Self {
            name,
            run: Box::new(move |ops| on_two_threads(ops, &op).as_nanos() as f64 / ops as f64),
        }
    }

    /// `observe` of the cycle's values on two threads, each walking the cycle from its own
    /// half (no shared index: the only line the threads fight over is the subject's).
    fn observing(name: &'static str, values: &'a [f64], observe: impl Fn(f64) + Sync + 'a) -> Self {
        Self {
            name,
            run: Box::new(move |ops| {
                let time = observe_on_two_threads(ops, values, &observe);
                time.as_nanos() as f64 / ops as f64
            }),
        }
    }
}

/// Runs `subjects` (the first is the limit) `rounds` times in rotated order and prints one
/// line per subject; returns the group's JSON object.
fn run_group(group: &str, subjects: &[Subject<'_>], rounds: usize, ops: u64) -> String {
    // A first round warms caches, page mappings and the CPU's frequency; not counted.
    for s in subjects {
        (s.run)(ops);
    }
    let mut times = vec![Vec::with_capacity(rounds); subjects.len()];
    for round in 0..rounds {
        for k in 0..subjects.len() {
            let i = (round + k) % subjects.len();
            times[i].push((subjects[i].run)(ops));
        }
    }
    let mut json = Vec::new();
    println!("{group}");
    for (i, s) in subjects.iter().enumerate() {
        let ratio = median(times[i].iter().zip(&times[0]).map(|(t, l)| t / l));
        let ns = median(times[i].iter().copied());
        let (lo, hi) = {
            let mut sorted = times[i].clone();
            sorted.sort_by(f64::total_cmp);
            (sorted[rounds / 4], sorted[rounds * 3 / 4])
        };
        println!(
            "  {:<20} {ns:>8.2} ns/op (quartiles {lo:.2}-{hi:.2})  {ratio:>5.2}x {}",
            s.name, subjects[0].name
        );
        json.push(format!(
            "\"{}\":{{\"ns\":{ns:.3},\"q1\":{lo:.3},\"q3\":{hi:.3},\"vs_limit\":{ratio:.4}}}",
            s.name
        ));
    }
    format!("\"{group}\":{{{}}}", json.join(","))
}

fn main() {
    let mut rounds = 41;
    let mut ops: u64 = 200_000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .filter(|&v| v > 0)
                .unwrap_or_else(|| panic!("{name} needs a positive number; {USAGE}"))
        };
        match arg.as_str() {
            "--rounds" => rounds = value("--rounds") as usize,
            "--ops" => ops = value("--ops"),
            // What `cargo bench` passes to every bench binary.
            "--bench" => {}
            other => panic!("unknown argument {other:?}; {USAGE}"),
        }
    }

    let counters = FloatCounters::new();
    let word = counters.raw();
    let counter_group = run_group(
        "counter_inc_by_f64",
        &[
            Subject::new("raw_f64_cas", || raw_f64_add(word, black_box(0.5))),
            Subject::new("shmetrics", || counters.shmetrics.inc_by(black_box(0.5))),
            Subject::new("shmetrics_striped", || {
                counters.striped.inc_by(black_box(0.5))
            }),
            Subject::new("shmetrics_one_copy", || {
                counters.one_copy.inc_by(black_box(0.5))
            }),
            Subject::new("tikv", || counters.tikv.inc_by(black_box(0.5))),
            Subject::new("prometheus_client", || {
                counters.pc.inc_by(black_box(0.5));
            }),
        ],
        rounds,
        ops,
    );
    for v in [
        counters.shmetrics.get(),
        counters.striped.get(),
        counters.one_copy.get(),
        counters.tikv.get(),
        counters.pc.get(),
    ] {
        assert!(
            (v * 2.0).fract() == 0.0,
            "halves from two threads, none lost: {v}"
        );
    }

    let histograms = Histograms::new();
    let (facade, facade_striped) = (Facade::new(1), Facade::new(STRIPES));
    let (sum, buckets) = histograms.raw();
    let values = observation_cycle(&BOUNDS_20, CYCLE_LEN);
    let histogram_group = run_group(
        "histogram_observe_20",
        &[
            Subject::observing("raw_histogram", &values, |v| {
                raw_histogram_observe(&BOUNDS_20, buckets, sum, v)
            }),
            Subject::observing("shmetrics", &values, |v| histograms.shmetrics.observe(v)),
            Subject::observing("shmetrics_striped", &values, |v| {
                histograms.striped.observe(v)
            }),
            Subject::observing("shmetrics_one_copy", &values, |v| {
                histograms.one_copy.observe(v)
            }),
            Subject::observing("tikv", &values, |v| histograms.tikv.observe(v)),
            Subject::observing("prometheus_client", &values, |v| histograms.pc.observe(v)),
            Subject::observing("facade", &values, |v| facade.handle.record(v)),
            Subject::observing("facade_striped", &values, |v| {
                facade_striped.handle.record(v)
            }),
        ],
        rounds,
        ops,
    );
    let observed = [
        &histograms.shmetrics,
        &histograms.striped,
        &histograms.one_copy,
    ]
    .map(|h| h.get().buckets.iter().sum::<u64>());
    for observed in observed
        .into_iter()
        .chain([facade.observed(), facade_striped.observed()])
    {
        assert_eq!(
            observed,
            2 * ops * (rounds as u64 + 1),
            "every observation counted"
        );
    }

    println!("{{\"rounds\":{rounds},\"ops_per_thread\":{ops},{counter_group},{histogram_group}}}");
}
