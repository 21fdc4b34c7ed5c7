//! `scaling`: aggregate writer throughput of N writer processes, and what a reader scraping
//! every 10 ms costs them (docs/performance.md, "Targets": ≤ 5 % writer throughput loss).
//!
//! ```text
//! cargo build --profile bench -p shmetrics-benches --bin scaling
//! target/release/scaling [--writers 1,2,4,8,16] [--series 1000] [--duration-ms 1000]
//!                        [--scrape-ms 10] [--repeats 3]
//! ```
//!
//! For each writer count N, `--repeats` times, two phases run in alternating order (so a
//! drift of the machine hits both alike): N fresh writer processes (this binary run again
//! with `--worker`) on their own segments in a fresh directory, without a reader ("quiet"),
//! then with this process scraping the directory every `--scrape-ms` into Prometheus text
//! ("scraped"). Every writer registers the `gen` workload with `--series` series (a third
//! each counters, gauges, histograms with 20 buckets) and runs its rounds (every series
//! touched once per round) for `--duration-ms` after a common start signal, then reports
//! its operations, its wall time and its CPU time through its stdout pipe.
//!
//! Printed per N (medians over the repeats): aggregate operations per second quiet and
//! scraped, the throughput loss, and the loss of operations per writer CPU second. On a
//! machine with fewer cores than N + 1 the reader's CPU time is taken from the writers, so
//! the throughput loss there includes that share; the per-CPU-second figure separates the
//! interference (cache lines the reader pulls away from the writers) from it. The last line
//! is a JSON object of all figures.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::time::{ClockId, clock_gettime};
use shmetrics_benches::fixtures::{BoxError, gen_segment_size};
use shmetrics_benches::median;
use shmetrics_reader::{PrefixFilter, Reader};
use shmetrics_workload::GenWorkload;
use shmetrics_writer::{Options, Registry};

const USAGE: &str = "usage: scaling [--writers 1,2,4,8,16] [--series S] [--duration-ms MS] \
                     [--scrape-ms MS] [--repeats R]";

#[derive(Debug, Clone)]
struct Config {
    writers: Vec<usize>,
    series: usize,
    duration: Duration,
    scrape_every: Duration,
    repeats: usize,
}

/// What one writer process reports.
#[derive(Debug, Clone, Copy)]
struct WriterReport {
    ops: u64,
    wall_s: f64,
    cpu_s: f64,
}

/// One phase: N writers, with or without the scraper.
#[derive(Debug, Clone, Copy)]
struct PhaseResult {
    ops_per_s: f64,
    ops_per_cpu_s: f64,
    scrapes: u64,
    scrape_cpu_s: f64,
    scrape_mean_ms: f64,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some("--worker") {
        worker(&args[1..])
    } else {
        parse_args(&args).and_then(|c| run(&c))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scaling: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(args: &[String]) -> Result<Config, BoxError> {
    let mut config = Config {
        writers: vec![1, 2, 4, 8, 16],
        series: 1_000,
        duration: Duration::from_millis(1_000),
        scrape_every: Duration::from_millis(10),
        repeats: 3,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--writers" => {
                config.writers = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--series" => config.series = value()?.parse()?,
            "--duration-ms" => config.duration = Duration::from_millis(value()?.parse()?),
            "--scrape-ms" => config.scrape_every = Duration::from_millis(value()?.parse()?),
            "--repeats" => config.repeats = value()?.parse()?,
            "-h" | "--help" => return Err(USAGE.into()),
            _ => return Err(format!("unknown argument {arg:?}\n{USAGE}").into()),
        }
    }
    if config.writers.is_empty() || config.writers.contains(&0) {
        return Err("--writers needs counts of at least 1".into());
    }
    if config.series < 15 || config.repeats == 0 || config.duration.is_zero() {
        return Err("--series must be at least 15, --repeats and --duration-ms at least 1".into());
    }
    Ok(config)
}

fn run(config: &Config) -> Result<(), BoxError> {
    println!(
        "scaling: {} cores, {} series per writer, {} ms per phase, scrape every {} ms, {} repeats",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        config.series,
        config.duration.as_millis(),
        config.scrape_every.as_millis(),
        config.repeats
    );
    println!(
        "{:>7} {:>14} {:>14} {:>8} {:>12} {:>9} {:>11} {:>10}",
        "writers",
        "quiet ops/s",
        "scraped ops/s",
        "loss",
        "loss/cpu-s",
        "scrapes",
        "scrape ms",
        "reader cpu"
    );
    let mut json = Vec::new();
    for &n in &config.writers {
        let mut quiet = Vec::new();
        let mut scraped = Vec::new();
        for repeat in 0..config.repeats {
            // Alternate which phase goes first.
            for scrape in [repeat % 2 == 1, repeat % 2 == 0] {
                let result = phase(config, n, scrape)?;
                if scrape { &mut scraped } else { &mut quiet }.push(result);
            }
        }
        let q = median(quiet.iter().map(|r| r.ops_per_s));
        let s = median(scraped.iter().map(|r| r.ops_per_s));
        let qc = median(quiet.iter().map(|r| r.ops_per_cpu_s));
        let sc = median(scraped.iter().map(|r| r.ops_per_cpu_s));
        let scrapes = median(scraped.iter().map(|r| r.scrapes as f64));
        let scrape_ms = median(scraped.iter().map(|r| r.scrape_mean_ms));
        let reader_cpu = median(
            scraped
                .iter()
                .map(|r| r.scrape_cpu_s / config.duration.as_secs_f64()),
        );
        let loss = 1.0 - s / q;
        let loss_cpu = 1.0 - sc / qc;
        println!(
            "{n:>7} {q:>14.0} {s:>14.0} {:>7.2}% {:>11.2}% {scrapes:>9.0} {scrape_ms:>11.3} {:>9.1}%",
            loss * 100.0,
            loss_cpu * 100.0,
            reader_cpu * 100.0
        );
        json.push(format!(
            "{{\"writers\":{n},\"quiet_ops_per_s\":{q:.0},\"scraped_ops_per_s\":{s:.0},\
             \"loss\":{loss:.5},\"quiet_ops_per_cpu_s\":{qc:.0},\"scraped_ops_per_cpu_s\":{sc:.0},\
             \"loss_per_cpu_s\":{loss_cpu:.5},\"scrapes\":{scrapes:.0},\
             \"scrape_mean_ms\":{scrape_ms:.4},\"reader_cpu_share\":{reader_cpu:.4}}}"
        ));
    }
    println!(
        "{{\"cores\":{},\"series\":{},\"duration_ms\":{},\"scrape_ms\":{},\"repeats\":{},\"rows\":[{}]}}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        config.series,
        config.duration.as_millis(),
        config.scrape_every.as_millis(),
        config.repeats,
        json.join(",")
    );
    Ok(())
}

/// A started writer process, waiting for the start signal.
struct Writer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Writer {
    fn spawn(dir: &Path, config: &Config) -> Result<Self, BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--worker")
            .arg(dir)
            .arg(config.series.to_string())
            .arg(config.duration.as_millis().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin pipe")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout pipe")?);
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    fn read_line(&mut self) -> Result<String, BoxError> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err(format!("writer {} exited early", self.child.id()).into());
        }
        Ok(line.trim_end().to_owned())
    }

    fn finish(mut self) -> Result<WriterReport, BoxError> {
        let line = self.read_line()?;
        let status = self.child.wait()?;
        if !status.success() {
            return Err(format!("writer exited with {status}").into());
        }
        let mut fields = line.split(' ');
        let mut next = || fields.next().ok_or_else(|| format!("bad report {line:?}"));
        Ok(WriterReport {
            ops: next()?.parse()?,
            wall_s: next()?.parse()?,
            cpu_s: next()?.parse()?,
        })
    }
}

fn phase(config: &Config, n: usize, scrape: bool) -> Result<PhaseResult, BoxError> {
    let dir = tempfile::Builder::new()
        .prefix("shmetrics-scaling-")
        .tempdir()?;
    let mut writers = (0..n)
        .map(|_| Writer::spawn(dir.path(), config))
        .collect::<Result<Vec<_>, _>>()?;
    for w in &mut writers {
        let line = w.read_line()?;
        if line != "ready" {
            return Err(format!("writer said {line:?} instead of ready").into());
        }
    }
    let mut reader = Reader::open(dir.path())?;
    let filter = PrefixFilter::default();
    let mut out = Vec::new();
    // One scrape before the start, so the scraped phase measures steady state, not the
    // first parse of every segment's metadata.
    shmetrics_benches::scrape_text(&mut reader, &filter, &mut out);

    for w in &mut writers {
        w.stdin.write_all(b"go\n")?;
        w.stdin.flush()?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = scrape.then(|| {
        let stop = Arc::clone(&stop);
        let every = config.scrape_every;
        std::thread::spawn(move || -> Result<(u64, f64, f64), String> {
            let cpu_start = thread_cpu_s().map_err(|e| e.to_string())?;
            let mut scrapes = 0u64;
            let mut busy = Duration::ZERO;
            let mut next = Instant::now();
            // Relaxed: a stop flag; nothing else is published through it.
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                out.clear();
                shmetrics_benches::scrape_text(&mut reader, &filter, &mut out);
                busy += started.elapsed();
                scrapes += 1;
                next += every;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            let cpu = thread_cpu_s().map_err(|e| e.to_string())? - cpu_start;
            let mean_ms = busy.as_secs_f64() * 1e3 / scrapes.max(1) as f64;
            Ok((scrapes, cpu, mean_ms))
        })
    });
    let reports = writers
        .into_iter()
        .map(Writer::finish)
        .collect::<Result<Vec<_>, _>>()?;
    // Relaxed: see the loop above.
    stop.store(true, Ordering::Relaxed);
    let (scrapes, scrape_cpu_s, scrape_mean_ms) = match scraper {
        Some(handle) => handle.join().map_err(|_| "scraper panicked")??,
        None => (0, 0.0, 0.0),
    };
    let ops_per_s = reports.iter().map(|r| r.ops as f64 / r.wall_s).sum();
    let ops: u64 = reports.iter().map(|r| r.ops).sum();
    let cpu: f64 = reports.iter().map(|r| r.cpu_s).sum();
    Ok(PhaseResult {
        ops_per_s,
        ops_per_cpu_s: ops as f64 / cpu,
        scrapes,
        scrape_cpu_s,
        scrape_mean_ms,
    })
}

fn thread_cpu_s() -> nix::Result<f64> {
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)?;
    Ok(t.tv_sec() as f64 + t.tv_nsec() as f64 * 1e-9)
}

/// `scaling --worker DIR SERIES DURATION_MS`: registers the `gen` workload, says `ready`,
/// waits for `go` on stdin, runs rounds for the duration, prints `OPS WALL_S CPU_S`.
fn worker(args: &[String]) -> Result<(), BoxError> {
    let [dir, series, duration_ms] = args else {
        return Err("--worker DIR SERIES DURATION_MS".into());
    };
    let series: usize = series.parse()?;
    let duration = Duration::from_millis(duration_ms.parse()?);
    let options = Options {
        initial_segment_size: gen_segment_size(series),
        ..Options::default()
    };
    let registry = Registry::open_with(Path::new(dir), options)?;
    let workload = GenWorkload::register(&registry, series)?;
    let per_round = workload.series() as u64;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    let mut go = String::new();
    std::io::stdin().read_line(&mut go)?;
    if go.trim_end() != "go" {
        return Err(format!("expected go, got {go:?}").into());
    }

    let cpu_start = clock_gettime(ClockId::CLOCK_PROCESS_CPUTIME_ID)?;
    let start = Instant::now();
    let mut rounds = 0u64;
    while start.elapsed() < duration {
        workload.round(rounds);
        rounds += 1;
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu_end = clock_gettime(ClockId::CLOCK_PROCESS_CPUTIME_ID)?;
    let cpu = (cpu_end - cpu_start).tv_sec() as f64 + (cpu_end - cpu_start).tv_nsec() as f64 * 1e-9;
    if registry.dropped_series() != 0 {
        return Err(format!("{} series dropped", registry.dropped_series()).into());
    }
    writeln!(stdout, "{} {wall:.6} {cpu:.6}", rounds * per_round)?;
    Ok(())
}
