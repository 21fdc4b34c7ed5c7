//! Instruction-count harness for warm scrapes: builds a fixture, scrapes it once to warm
//! the reader's caches, then runs `SCRAPES` more whole scrapes (snapshot, merge, render).
//! `run-scrape-callgrind.sh` runs it under `valgrind --tool=callgrind` with and without
//! `--dry` (everything but the counted scrapes); the difference over `SCRAPES` is the cost
//! of one warm scrape, free of the wall-clock noise of a shared machine, so two builds can
//! be compared exactly.
//!
//! With `--time` it also prints the median, fastest, mean and 90th percentile wall times of
//! the counted scrapes (for a quick A/B of two builds on a quiet machine; criterion's benches
//! are the figures).
//!
//! ```text
//! scrape-instructions gen PROCESSES SERIES SCRAPES [--dry] [--time]
//! scrape-instructions vllm ENGINES SCRAPES [--dry] [--time]
//! scrape-instructions compacted PROCESSES SERIES SCRAPES [--dry] [--time]   # all dead, compacted
//! scrape-instructions dir PATH SCRAPES [--dry] [--time]   # an existing directory (live writers)
//! ```
//!
//! `--fold-threads N` folds on up to N threads (`Reader::set_fold_threads`; default 1);
//! `--keep-mapped` keeps every segment mapped (no resident budget); `--pause-us N` sleeps
//! N microseconds after each scrape, as a server idles between scrapes (its cores go idle,
//! and a fold thread started after the pause may start late).

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use shmetrics_benches::fixtures::{GenFixture, VllmFixture};
use shmetrics_reader::{PrefixFilter, Reader};

/// The flags of a run: `--time`, `--fold-threads N`, `--keep-mapped`, `--pause-us N`.
struct Flags {
    time: bool,
    threads: usize,
    keep_mapped: bool,
    pause: std::time::Duration,
}

fn scrapes(dir: &Path, count: usize, compact: bool, flags: &Flags) {
    let mut reader = Reader::open(dir).expect("open the reader");
    reader.set_fold_threads(flags.threads);
    if flags.keep_mapped {
        reader.set_resident_budget(usize::MAX);
    }
    if compact {
        reader.compact().expect("compact");
    }
    let filter = PrefixFilter::default();
    let mut out = Vec::new();
    let mut times = Vec::with_capacity(count + 1);
    for _ in 0..=count {
        let start = Instant::now();
        out.clear();
        shmetrics_benches::scrape_text(&mut reader, &filter, &mut out);
        black_box(out.len());
        times.push(start.elapsed());
        std::thread::sleep(flags.pause);
    }
    // The first scrape parses the metadata; the others are warm.
    if let (true, Some(warm)) = (flags.time, times.get_mut(1..)) {
        warm.sort();
        let p90 = warm.get(warm.len() * 9 / 10);
        if let (Some(fastest), Some(median), Some(p90)) =
            (warm.first(), warm.get(warm.len() / 2), p90)
        {
            let mean = warm.iter().sum::<std::time::Duration>() / warm.len() as u32;
            let ms = |d: &std::time::Duration| d.as_secs_f64() * 1e3;
            println!(
                "{} warm scrapes: median {:.3} ms, fastest {:.3} ms, mean {:.3} ms, p90 {:.3} ms",
                warm.len(),
                ms(median),
                ms(fastest),
                ms(&mean),
                ms(p90)
            );
        }
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // Takes `--flag N` out of the arguments.
    let mut valued = |flag: &str| -> Option<u64> {
        let i = args.iter().position(|a| a == flag)?;
        let n = args.get(i + 1).and_then(|n| n.parse().ok());
        args.drain(i..(i + 2).min(args.len()));
        Some(n.unwrap_or_else(|| panic!("{flag} takes a number")))
    };
    let threads = valued("--fold-threads").unwrap_or(1) as usize;
    let pause = std::time::Duration::from_micros(valued("--pause-us").unwrap_or(0));
    let dry = args.iter().any(|a| a == "--dry");
    let flags = Flags {
        time: args.iter().any(|a| a == "--time"),
        threads,
        keep_mapped: args.iter().any(|a| a == "--keep-mapped"),
        pause,
    };
    let n = |i: usize| -> usize {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("argument {i} must be a number: {args:?}"))
    };
    let counted = |i: usize| if dry { 0 } else { n(i) };
    match args.first().map(String::as_str) {
        Some("gen") => {
            let fixture = GenFixture::build(n(1), n(2)).expect("build the fixture");
            scrapes(fixture.dir(), counted(3), false, &flags);
        }
        Some("compacted") => {
            let fixture = GenFixture::build(n(1), n(2)).expect("build the fixture");
            scrapes(fixture.dir(), counted(3), true, &flags);
        }
        Some("vllm") => {
            let fixture = VllmFixture::build(n(1)).expect("build the fixture");
            scrapes(fixture.dir(), counted(2), false, &flags);
        }
        Some("dir") => {
            let dir = args.get(1).expect("dir takes a path");
            scrapes(Path::new(dir), counted(2), false, &flags);
        }
        _ => {
            panic!(
                "usage: scrape-instructions gen|compacted P S SCRAPES | vllm N SCRAPES | dir PATH SCRAPES [--dry] [--time] [--fold-threads N] [--keep-mapped] [--pause-us N]"
            )
        }
    }
}
