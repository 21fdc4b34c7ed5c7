//! Instruction-count harness for the labelled lookup: `calls` lookups of one label set among
//! 100 children, each followed by `inc`, in shmetrics or in tikv `prometheus`. Run under
//! `valgrind --tool=callgrind` twice (with `calls` and with 0) by `run-lookup-callgrind.sh`,
//! whose difference divided by `calls` is the cost of one lookup + inc, free of the noise
//! that wall-clock times carry on a shared machine.
//!
//! ```text
//! lookup-instructions ours|tikv 2|4 CALLS
//! ```

use std::hint::black_box;

use shmetrics_benches::{label_sets_2, label_sets_4};
use shmetrics_writer::Registry;

fn run<const N: usize>(peer: &str, sets: &[[String; N]], names: &[&str], calls: u64) {
    let lookup: [&str; N] = std::array::from_fn(|i| sets[0][i].as_str());
    match peer {
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
            assert_eq!(family.labels(&lookup).expect("known").get(), calls as f64);
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
            assert_eq!(vec.with_label_values(&lookup).get(), calls);
        }
        other => panic!("unknown peer {other:?}: ours or tikv"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [peer, labels, calls] = args.as_slice() else {
        eprintln!("usage: lookup-instructions ours|tikv 2|4 CALLS");
        std::process::exit(2);
    };
    let calls: u64 = calls.parse().expect("CALLS is a number");
    match labels.as_str() {
        "2" => run(peer, &label_sets_2(), &["model", "rank"], calls),
        "4" => run(
            peer,
            &label_sets_4(),
            &["model", "rank", "phase", "reason"],
            calls,
        ),
        other => panic!("labels must be 2 or 4, not {other}"),
    }
}
