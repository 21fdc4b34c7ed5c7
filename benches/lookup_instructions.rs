//! Instruction-count harness for labelled children, in shmetrics, in tikv `prometheus`, or
//! in shmetrics behind the `metrics` facade (`facade`: the recorder's `register_counter`
//! with a key built beforehand, which is what a `counter!` call does once it has its key):
//! `lookup` runs `calls` lookups of one label set among 100 children, each followed by
//! `inc`; `create` creates `calls` new children after the same 100, each followed by `inc`.
//! `run-lookup-callgrind.sh` runs it under `valgrind --tool=callgrind` twice, with and
//! without `--dry` (which prepares everything, label values included, but skips the timed
//! loop); the difference divided by `calls` is the cost of one operation, free of the noise
//! that wall-clock times carry on a shared machine.
//!
//! ```text
//! lookup-instructions lookup|create ours|tikv|facade 2|4 CALLS [--dry]
//! ```

use std::hint::black_box;

use metrics::{Key, Label, Level, Metadata, Recorder};
use shmetrics_benches::{label_sets_2, label_sets_4};
use shmetrics_metrics::ShmetricsRecorder;
use shmetrics_writer::Registry;

/// What to run: the operation, the peer, and how many times (0 with `--dry`).
struct Run<'a> {
    op: &'a str,
    peer: &'a str,
    calls: u64,
    dry: bool,
}

fn run<const N: usize>(r: &Run<'_>, sets: &[[String; N]], names: &[&'static str]) {
    let lookup: [&str; N] = std::array::from_fn(|i| sets[0][i].as_str());
    // Lookups to run (none with `create` or `--dry`).
    let prepared: Vec<[String; N]> = match r.op {
        "create" => (0..r.calls)
            .map(|i| std::array::from_fn(|k| format!("new-{i}-{k}")))
            .collect(),
        _ => Vec::new(),
    };
    let calls = if r.dry || r.op != "lookup" {
        0
    } else {
        r.calls
    };
    let fresh = &prepared[..if r.dry { 0 } else { prepared.len() }];
    match r.peer {
        "ours" => {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let registry = Registry::open(dir.path()).expect("open a registry");
            let family = registry
                .counter("bench_tokens_total", "Tokens.", names)
                .expect("register the family");
            for set in sets {
                family.labels(set).expect("create a child");
            }
            for _ in 0..calls {
                family.labels(black_box(&lookup)).expect("known").inc();
            }
            for values in fresh {
                family.labels(black_box(values)).expect("created").inc();
            }
            assert_eq!(family.labels(&lookup).expect("known").get(), calls as f64);
            assert_eq!(family.children().len(), sets.len() + fresh.len());
        }
        "tikv" => {
            let vec = prometheus::IntCounterVec::new(
                prometheus::Opts::new("bench_tokens_total", "Tokens."),
                names,
            )
            .expect("a counter vector");
            for set in sets {
                let values: Vec<&str> = set.iter().map(String::as_str).collect();
                vec.with_label_values(&values);
            }
            for _ in 0..calls {
                vec.with_label_values(black_box(&lookup)).inc();
            }
            for values in fresh {
                vec.with_label_values(black_box(values)).inc();
            }
            assert_eq!(vec.with_label_values(&lookup).get(), calls);
        }
        "facade" => {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let recorder = ShmetricsRecorder::open(dir.path()).expect("open a recorder");
            let metadata = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));
            let key = |values: &[String; N]| {
                let labels = names.iter().zip(values);
                let labels: Vec<Label> = labels.map(|(n, v)| Label::new(*n, v.clone())).collect();
                Key::from_parts("bench_tokens_total", labels)
            };
            for set in sets {
                recorder.register_counter(&key(set), &metadata).increment(1);
            }
            let lookup = key(&sets[0]);
            let keys: Vec<Key> = prepared.iter().map(key).collect();
            let fresh = &keys[..fresh.len()];
            for _ in 0..calls {
                let counter = recorder.register_counter(black_box(&lookup), &metadata);
                counter.increment(1);
            }
            for key in fresh {
                let counter = recorder.register_counter(black_box(key), &metadata);
                counter.increment(1);
            }
            let stats = recorder.stats();
            assert_eq!(
                (stats.keys, stats.rejected_keys),
                (sets.len() + fresh.len(), 0)
            );
        }
        other => panic!("unknown peer {other:?}: ours, tikv or facade"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (op, peer, labels, calls, dry) = match args.as_slice() {
        [op, peer, labels, calls] => (op, peer, labels, calls, false),
        [op, peer, labels, calls, dry] if dry == "--dry" => (op, peer, labels, calls, true),
        _ => {
            eprintln!(
                "usage: lookup-instructions lookup|create ours|tikv|facade 2|4 CALLS [--dry]"
            );
            std::process::exit(2);
        }
    };
    assert!(op == "lookup" || op == "create", "unknown operation {op:?}");
    let r = Run {
        op,
        peer,
        calls: calls.parse().expect("CALLS is a number"),
        dry,
    };
    match labels.as_str() {
        "2" => run(&r, &label_sets_2(), &["model", "rank"]),
        "4" => run(&r, &label_sets_4(), &["model", "rank", "phase", "reason"]),
        other => panic!("labels must be 2 or 4, not {other}"),
    }
}
