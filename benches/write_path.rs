//! `write-path`: the per-operation time of the shmetrics writer's hot paths, for
//! `benches/compare/incumbent.py` (which compares them with prometheus_client's).
//!
//! ```text
//! write-path [--batches B] [--batch-ms MS]
//! ```
//!
//! Times, on resolved handles of a registry in a temporary directory:
//! - `counter_inc`: `Counter::inc`;
//! - `labels2_inc`: `family.labels(&["model-a", "0"])` among 100 children, then `inc`;
//! - `histogram_observe`: `Histogram::observe` with the benches' 20 bounds, over their cycle
//!   of 1024 values (`observation_cycle`), one value per operation;
//! - `raw_fetch_add`: the physical limit, `AtomicU64::fetch_add` on a word of a mapped file.
//!
//! The same operations as the `counter_inc`, `labels_lookup_2` and `histogram_observe_20`
//! groups of `benches/writer.rs`, without criterion's statistics: each operation first
//! calibrates a loop length that takes about `--batch-ms` (default 20 ms), then runs
//! `--batches` (default 25) such loops. The result is one JSON line:
//! `{"batches":..,"batch_ms":..,"counter_inc":{"median_ns":..,"min_ns":..,"ops_per_batch":..},
//! ...}`, nanoseconds per operation, median and minimum over the batches.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use shmetrics_benches::{BOUNDS_20, CYCLE_LEN, MappedWords, observation_cycle, raw_fetch_add};
use shmetrics_writer::Registry;

const USAGE: &str = "usage: write-path [--batches B] [--batch-ms MS]
  --batches B    timed loops per operation (default 25)
  --batch-ms MS  approximate duration of one loop in milliseconds (default 20)";

/// Times `op` (called with the iteration index): per-operation nanoseconds of each batch.
fn time_op(batches: usize, batch: Duration, mut op: impl FnMut(usize)) -> (Vec<f64>, u64) {
    // Calibrate: double the loop until it takes at least a tenth of a batch.
    let mut iters: u64 = 1_000;
    loop {
        let start = Instant::now();
        for i in 0..iters {
            op(i as usize);
        }
        let took = start.elapsed();
        if took >= batch / 10 {
            let per = took.as_secs_f64() / iters as f64;
            iters = ((batch.as_secs_f64() / per) as u64).max(1_000);
            break;
        }
        iters *= 2;
    }
    let mut per_op = Vec::with_capacity(batches);
    for _ in 0..batches {
        let start = Instant::now();
        for i in 0..iters {
            op(i as usize);
        }
        per_op.push(start.elapsed().as_secs_f64() * 1e9 / iters as f64);
    }
    per_op.sort_by(f64::total_cmp);
    (per_op, iters)
}

fn summary(name: &str, (per_op, iters): (Vec<f64>, u64)) -> String {
    format!(
        "\"{name}\":{{\"median_ns\":{:.4},\"min_ns\":{:.4},\"ops_per_batch\":{iters}}}",
        per_op[per_op.len() / 2],
        per_op[0]
    )
}

fn parse_args() -> Result<(usize, Duration), String> {
    let mut batches = 25usize;
    let mut batch_ms = 20u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--batches" => {
                batches = value("--batches")?
                    .parse()
                    .map_err(|e| format!("--batches: {e}"))?;
            }
            "--batch-ms" => {
                batch_ms = value("--batch-ms")?
                    .parse()
                    .map_err(|e| format!("--batch-ms: {e}"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            s => return Err(format!("unexpected argument {s}")),
        }
    }
    if batches == 0 || batch_ms == 0 {
        return Err("--batches and --batch-ms must be at least 1".into());
    }
    Ok((batches, Duration::from_millis(batch_ms)))
}

fn run(batches: usize, batch: Duration) -> Result<String, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let registry = Registry::open(dir.path())?;

    let counter = registry
        .counter("bench_requests_total", "Requests.", &[])?
        .unlabelled()?
        .clone();
    let counter_inc = time_op(batches, batch, |_| black_box(&counter).inc());
    if counter.get() < 1.0 {
        return Err("the counter was never incremented".into());
    }

    let family = registry.counter("bench_tokens_total", "Tokens.", &["model", "rank"])?;
    for model in 'a'..='j' {
        for rank in 0..10 {
            family.labels(&[format!("model-{model}"), rank.to_string()])?;
        }
    }
    let lookup: [&str; 2] = ["model-a", "0"];
    let labels2_inc = time_op(batches, batch, |_| {
        if let Ok(c) = family.labels(black_box(&lookup)) {
            c.inc();
        }
    });
    if family.children().len() != 100 || family.labels(&lookup)?.get() < 1.0 {
        return Err("the labelled counter was not incremented in place".into());
    }

    let histogram = registry
        .histogram("bench_latency_seconds", "Latency.", &[], &BOUNDS_20)?
        .unlabelled()?
        .clone();
    let values = observation_cycle(&BOUNDS_20, CYCLE_LEN);
    let histogram_observe = time_op(batches, batch, |i| {
        black_box(&histogram).observe(black_box(values[i & (CYCLE_LEN - 1)]));
    });

    let map = MappedWords::new(64 * 1024)?;
    let word = map.word_at(32 * 1024);
    let raw = time_op(batches, batch, |_| raw_fetch_add(black_box(word)));

    Ok(format!(
        "{{\"batches\":{batches},\"batch_ms\":{},{},{},{},{}}}",
        batch.as_millis(),
        summary("counter_inc", counter_inc),
        summary("labels2_inc", labels2_inc),
        summary("histogram_observe", histogram_observe),
        summary("raw_fetch_add", raw)
    ))
}

fn main() -> ExitCode {
    let (batches, batch) = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("write-path: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(batches, batch) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("write-path: {e}");
            ExitCode::FAILURE
        }
    }
}
