//! Instruction-count harness for warm scrapes: builds a fixture, scrapes it once to warm
//! the reader's caches, then runs `SCRAPES` more whole scrapes (snapshot, merge, render).
//! `run-scrape-callgrind.sh` runs it under `valgrind --tool=callgrind` with and without
//! `--dry` (everything but the counted scrapes); the difference over `SCRAPES` is the cost
//! of one warm scrape, free of the wall-clock noise of a shared machine, so two builds can
//! be compared exactly.
//!
//! ```text
//! scrape-instructions gen PROCESSES SERIES SCRAPES [--dry]
//! scrape-instructions vllm ENGINES SCRAPES [--dry]
//! scrape-instructions compacted PROCESSES SERIES SCRAPES [--dry]   # all dead, compacted
//! ```

use std::hint::black_box;
use std::path::Path;

use shmetrics_benches::fixtures::{GenFixture, VllmFixture};
use shmetrics_reader::{PrefixFilter, Reader};

fn scrapes(dir: &Path, count: usize, compact: bool) {
    let mut reader = Reader::open(dir).expect("open the reader");
    if compact {
        reader.compact().expect("compact");
    }
    let filter = PrefixFilter::default();
    let mut out = Vec::new();
    for _ in 0..=count {
        out.clear();
        shmetrics_benches::scrape_text(&mut reader, &filter, &mut out);
        black_box(out.len());
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dry = args.iter().any(|a| a == "--dry");
    let n = |i: usize| -> usize {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("argument {i} must be a number: {args:?}"))
    };
    let counted = |i: usize| if dry { 0 } else { n(i) };
    match args.first().map(String::as_str) {
        Some("gen") => {
            let fixture = GenFixture::build(n(1), n(2)).expect("build the fixture");
            scrapes(fixture.dir(), counted(3), false);
        }
        Some("compacted") => {
            let fixture = GenFixture::build(n(1), n(2)).expect("build the fixture");
            scrapes(fixture.dir(), counted(3), true);
        }
        Some("vllm") => {
            let fixture = VllmFixture::build(n(1)).expect("build the fixture");
            scrapes(fixture.dir(), counted(2), false);
        }
        _ => {
            panic!("usage: scrape-instructions gen|compacted P S SCRAPES | vllm N SCRAPES [--dry]")
        }
    }
}
