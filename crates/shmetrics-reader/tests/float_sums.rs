//! Merged float sums are exact and never go backwards: whatever processes die, whatever is
//! compacted and in whatever order the reader visits segments, a merged counter, a
//! histogram's `_sum`, `_count` and buckets and a `sum` gauge equal the correctly rounded
//! exact sum of the per-process values, so with non-negative increments they never
//! decrease from one scrape to the next.
//!
//! The oracle is independent of the reader's algorithm: every value written here is a
//! multiple of 2^-60 below 2^60 (any `f64` in [2^-8, 2^60) is), so per-process values and
//! their exact sum are integers once scaled by 2^60, summed in an `i128`, and Rust's
//! `i128 as f64` rounds to nearest, ties to even.

use std::path::Path;

use proptest::prelude::*;
use shmetrics_reader::Reader;
use shmetrics_reader::snapshot::{Snapshot, Value};
use shmetrics_writer::{Counter, Gauge, GaugeMode, Histogram, Options, Registry};

const SCALE: f64 = 1_152_921_504_606_846_976.0; // 2^60
const MAX_EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
const BOUNDS: [f64; 2] = [1.0, 100.0];
const SLOTS: usize = 4;

#[derive(Clone, Debug)]
enum Op {
    /// Process slot `p` adds `v` to the counter, the gauge and observes it.
    Add(usize, f64),
    /// The process in slot `p` dies; a new one takes its slot at its next write.
    Die(usize),
    /// A compaction (by the scraping reader when `true`, else by another one).
    Compact(bool),
    Scrape,
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.1),
        Just(0.2),
        Just(0.7),
        (1u32..1000).prop_map(f64::from),
        0.003_906_25f64..1e6,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..SLOTS, value()).prop_map(|(p, v)| Op::Add(p, v)),
        1 => (0..SLOTS).prop_map(Op::Die),
        1 => proptest::bool::ANY.prop_map(Op::Compact),
        2 => Just(Op::Scrape),
    ]
}

/// One incarnation's words, as the writer keeps them.
#[derive(Default)]
struct Written {
    /// The counter's integer and fractional words (`slots::counter_add`).
    int: u64,
    fraction: f64,
    /// The `sum` gauge's value and the histogram's sum and per-bucket counts.
    gauge: f64,
    sum: f64,
    buckets: [u64; 3],
}

struct Process {
    _registry: Registry,
    counter: Counter,
    gauge: Gauge,
    histogram: Histogram,
}

fn start(dir: &Path, pid: u32) -> Process {
    let registry = Registry::open_simulating_pid(dir, Options::default(), pid).unwrap();
    Process {
        counter: registry
            .counter("c_total", "C.", &[])
            .unwrap()
            .unlabelled()
            .unwrap()
            .clone(),
        gauge: registry
            .gauge("g", "G.", &[], GaugeMode::Sum)
            .unwrap()
            .unlabelled()
            .unwrap()
            .clone(),
        histogram: registry
            .histogram("h", "H.", &[], &BOUNDS)
            .unwrap()
            .unlabelled()
            .unwrap()
            .clone(),
        _registry: registry,
    }
}

/// The exact sum of `values` (each a multiple of 2^-60 below 2^60), rounded once.
fn exact(values: impl Iterator<Item = f64>) -> f64 {
    let scaled: i128 = values
        .map(|v| {
            let s = v * SCALE;
            assert_eq!(s, s.trunc(), "{v} is not a multiple of 2^-60");
            s as i128
        })
        .sum();
    scaled as f64 / SCALE
}

/// What the merge must show: (counter, gauge, histogram sum, cumulative buckets).
fn expected(all: &[Written]) -> (f64, f64, f64, Vec<u64>) {
    let counter = exact(
        all.iter()
            .flat_map(|w| [w.int as f64, w.fraction].into_iter()),
    );
    let gauge = exact(all.iter().map(|w| w.gauge));
    let sum = exact(all.iter().map(|w| w.sum));
    let mut cumulative = Vec::new();
    let mut total = 0;
    for b in 0..3 {
        total += all.iter().map(|w| w.buckets[b]).sum::<u64>();
        cumulative.push(total);
    }
    (counter, gauge, sum, cumulative)
}

fn actual(s: &Snapshot) -> Option<(f64, f64, f64, Vec<u64>)> {
    let one = |name: &str| s.family(name).map(|f| f.series[0].value.clone());
    let counter = match one("c")? {
        Value::Counter(v) => v,
        other => panic!("{other:?}"),
    };
    let gauge = match one("g")? {
        Value::Gauge(v) => v,
        other => panic!("{other:?}"),
    };
    let (sum, buckets) = match one("h")? {
        Value::Histogram { buckets, sum } => (sum, buckets),
        other => panic!("{other:?}"),
    };
    let cumulative = buckets
        .iter()
        .scan(0, |t, b| {
            *t += b;
            Some(*t)
        })
        .collect();
    Some((counter, gauge, sum, cumulative))
}

fn run(ops: &[Op]) {
    let dir = tempfile::tempdir().unwrap();
    let mut reader = Reader::open(dir.path()).unwrap();
    let mut alive: Vec<Option<(Process, usize)>> = (0..SLOTS).map(|_| None).collect();
    let mut written: Vec<Written> = Vec::new();
    let mut next_pid = 100;
    let mut last: Option<(f64, f64, f64, Vec<u64>)> = None;
    let mut check = |reader: &mut Reader, written: &[Written], when: &str| {
        let got = actual(&reader.snapshot().snapshot);
        let Some(got) = got else {
            assert!(written.is_empty(), "{when}: nothing merged");
            return;
        };
        assert_eq!(got, expected(written), "{when}: not the exact sum");
        if let Some(prev) = &last {
            assert!(
                got.0 >= prev.0,
                "{when}: counter went down: {prev:?} -> {got:?}"
            );
            assert!(
                got.2 >= prev.2,
                "{when}: _sum went down: {prev:?} -> {got:?}"
            );
            assert!(
                got.3.iter().zip(&prev.3).all(|(a, b)| a >= b),
                "{when}: buckets"
            );
        }
        last = Some(got);
    };
    for (step, op) in ops.iter().enumerate() {
        let when = format!("step {step} ({op:?})");
        match *op {
            Op::Add(p, v) => {
                let (process, w) = alive[p].get_or_insert_with(|| {
                    next_pid += 1;
                    written.push(Written::default());
                    (start(dir.path(), next_pid), written.len() - 1)
                });
                let w = &mut written[*w];
                process.counter.inc_by(v);
                if v <= MAX_EXACT && v == v.trunc() {
                    w.int += v as u64;
                } else {
                    w.fraction += v;
                }
                process.gauge.add(v);
                w.gauge += v;
                process.histogram.observe(v);
                w.sum += v;
                w.buckets[BOUNDS.iter().position(|&b| v <= b).unwrap_or(2)] += 1;
            }
            Op::Die(p) => drop(alive[p].take()),
            Op::Compact(by_scraper) => {
                if by_scraper {
                    reader.compact().unwrap();
                } else {
                    Reader::open(dir.path()).unwrap().compact().unwrap();
                }
            }
            Op::Scrape => check(&mut reader, &written, &when),
        }
    }
    check(&mut reader, &written, "the last scrape");
    // A restarted reader sees the same exact values.
    let fresh = actual(&Reader::open(dir.path()).unwrap().snapshot().snapshot);
    if !written.is_empty() {
        assert_eq!(fresh, Some(expected(&written)), "a fresh reader");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn merged_sums_are_exact_and_monotonic(ops in proptest::collection::vec(op(), 1..60)) {
        run(&ops);
    }
}

/// The case from the report: three processes add 0.1 once, once and four times; the oldest
/// and the youngest die; nothing is written in between.
#[test]
fn a_process_death_does_not_change_a_float_counter() {
    let a = Op::Add;
    let mut ops = vec![a(0, 0.1), a(1, 0.1)];
    ops.extend([a(2, 0.1), a(2, 0.1), a(2, 0.1), a(2, 0.1), Op::Scrape]);
    ops.extend([
        Op::Die(0),
        Op::Die(2),
        Op::Scrape,
        Op::Compact(true),
        Op::Scrape,
    ]);
    ops.extend([Op::Die(1), Op::Scrape, Op::Compact(false), Op::Scrape]);
    run(&ops);
}
