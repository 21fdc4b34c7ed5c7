//! `scaling`: aggregate writer throughput of N writer processes, and what a reader scraping
//! every 10 ms costs them (docs/performance.md, "Targets": ≤ 5 % writer throughput loss).
//!
//! ```text
//! cargo build --profile bench -p shmetrics-benches --bin scaling
//! target/release/scaling [--writers 1,2,4,8,16] [--series 1000] [--duration-ms 1000]
//!                        [--scrape-ms 10] [--repeats 3]
//! ```
//!
//! For each writer count N, `--repeats` times, three phases run in rotating order (so a
//! drift of the machine hits all alike): N fresh writer processes (this binary run again
//! with `--worker`) on their own segments in a fresh directory, without a reader ("quiet"),
//! the same with this process scraping the directory every `--scrape-ms` into Prometheus
//! text ("scraped"), and N processes doing the same rounds as raw atomic instructions on a
//! file of theirs mapped shared ("raw", `--worker-raw`: the physical limit, no reader).
//! Every writer registers the `gen` workload with `--series` series (a third each counters,
//! gauges, histograms with 20 buckets) and runs its rounds (every series touched once per
//! round) for `--duration-ms` after a common start signal, then reports its operations, its
//! wall time and its CPU time through its stdout pipe. A raw writer lays out the same
//! series' value words one after another and does, per round, what
//! `shmetrics_benches::raw_fetch_add`, `raw_histogram_observe` and `raw_store_f64` do (the
//! limits of the writer benches) with the same values.
//!
//! Printed per N (medians over the repeats): aggregate operations per second raw, quiet and
//! scraped, quiet as a share of raw, the throughput loss under the reader, the loss of
//! operations per writer CPU second, the slowest writer's loss (the slowest writer's ops/s
//! scraped against the slowest's quiet, in the same repeat), and the spread between writers
//! without a reader (the slowest quiet writer's ops/s below the median quiet writer's). On
//! a machine with fewer cores than N + 1 the reader's CPU time is taken from the writers,
//! so the throughput loss there includes that share; the per-CPU-second figure separates
//! the interference (cache lines the reader pulls away from the writers) from it. The last
//! line is a JSON object of all figures.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::time::{ClockId, clock_gettime};
use shmetrics_benches::fixtures::{BoxError, gen_segment_size};
use shmetrics_benches::{MappedWords, median, raw_fetch_add, raw_histogram_observe, raw_store_f64};
use shmetrics_layout::{GaugeMode, MetricKind};
use shmetrics_reader::{PrefixFilter, Reader};
use shmetrics_workload::{
    GEN_BUCKETS, GEN_FAMILIES, GenWorkload, gen_bounds, gen_family_kind, gen_gauge_mode,
    gen_series_count, gen_slot_words, gen_value,
};
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

/// What runs in a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The `gen` workload as raw atomic instructions, no reader: the physical limit.
    Raw,
    /// shmetrics writers, no reader.
    Quiet,
    /// shmetrics writers, scraped every `--scrape-ms`.
    Scraped,
}

/// One phase's figures.
#[derive(Debug, Clone)]
struct PhaseResult {
    ops_per_s: f64,
    /// Each writer's operations per second.
    writer_ops_per_s: Vec<f64>,
    ops_per_cpu_s: f64,
    scrapes: u64,
    scrape_cpu_s: f64,
    scrape_mean_ms: f64,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("--worker") => worker(&args[1..], false),
        Some("--worker-raw") => worker(&args[1..], true),
        _ => parse_args(&args).and_then(|c| run(&c)),
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
        "{:>7} {:>12} {:>12} {:>13} {:>8} {:>7} {:>10} {:>9} {:>8} {:>8} {:>9} {:>10}",
        "writers",
        "raw ops/s",
        "quiet ops/s",
        "scraped ops/s",
        "of raw",
        "loss",
        "loss/cpu-s",
        "slowest",
        "spread",
        "scrapes",
        "scrape ms",
        "reader cpu"
    );
    let mut json = Vec::new();
    for &n in &config.writers {
        let mut raw = Vec::new();
        let mut quiet = Vec::new();
        let mut scraped = Vec::new();
        for repeat in 0..config.repeats {
            // Rotate the order of the phases, so a drift of the machine hits each alike.
            let mut order = [Phase::Raw, Phase::Quiet, Phase::Scraped];
            order.rotate_left(repeat % 3);
            for kind in order {
                let result = phase(config, n, kind)?;
                match kind {
                    Phase::Raw => raw.push(result),
                    Phase::Quiet => quiet.push(result),
                    Phase::Scraped => scraped.push(result),
                }
            }
        }
        let r = median(raw.iter().map(|p| p.ops_per_s));
        let q = median(quiet.iter().map(|p| p.ops_per_s));
        let s = median(scraped.iter().map(|p| p.ops_per_s));
        let qc = median(quiet.iter().map(|p| p.ops_per_cpu_s));
        let sc = median(scraped.iter().map(|p| p.ops_per_cpu_s));
        // The slowest writer of each scraped phase against the slowest of the quiet phase
        // of the same repeat, and how far the slowest quiet writer is from the median one
        // (the spread between writers without a reader).
        let worst = median(
            quiet
                .iter()
                .zip(&scraped)
                .map(|(q, s)| 1.0 - s.slowest_writer() / q.slowest_writer()),
        );
        let spread = median(
            quiet
                .iter()
                .map(|q| 1.0 - q.slowest_writer() / median(q.writer_ops_per_s.iter().copied())),
        );
        let writer_q = median(
            quiet
                .iter()
                .flat_map(|p| p.writer_ops_per_s.iter().copied()),
        );
        let writer_s = median(
            scraped
                .iter()
                .flat_map(|p| p.writer_ops_per_s.iter().copied()),
        );
        let scrapes = median(scraped.iter().map(|p| p.scrapes as f64));
        let scrape_ms = median(scraped.iter().map(|p| p.scrape_mean_ms));
        let reader_cpu = median(
            scraped
                .iter()
                .map(|p| p.scrape_cpu_s / config.duration.as_secs_f64()),
        );
        let of_raw = q / r;
        let loss = 1.0 - s / q;
        let loss_cpu = 1.0 - sc / qc;
        println!(
            "{n:>7} {r:>12.0} {q:>12.0} {s:>13.0} {:>7.1}% {:>6.2}% {:>9.2}% {:>8.2}% {:>7.2}% {scrapes:>8.0} {scrape_ms:>9.3} {:>9.1}%",
            of_raw * 100.0,
            loss * 100.0,
            loss_cpu * 100.0,
            worst * 100.0,
            spread * 100.0,
            reader_cpu * 100.0
        );
        json.push(format!(
            "{{\"writers\":{n},\"raw_ops_per_s\":{r:.0},\"quiet_ops_per_s\":{q:.0},\
             \"scraped_ops_per_s\":{s:.0},\"quiet_of_raw\":{of_raw:.5},\"loss\":{loss:.5},\
             \"quiet_ops_per_cpu_s\":{qc:.0},\"scraped_ops_per_cpu_s\":{sc:.0},\
             \"loss_per_cpu_s\":{loss_cpu:.5},\"writer_quiet_ops_per_s\":{writer_q:.0},\
             \"writer_scraped_ops_per_s\":{writer_s:.0},\"slowest_writer_loss\":{worst:.5},\"quiet_spread\":{spread:.5},\
             \"scrapes\":{scrapes:.0},\"scrape_mean_ms\":{scrape_ms:.4},\
             \"reader_cpu_share\":{reader_cpu:.4}}}"
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
    fn spawn(dir: &Path, config: &Config, raw: bool) -> Result<Self, BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg(if raw { "--worker-raw" } else { "--worker" })
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

fn phase(config: &Config, n: usize, kind: Phase) -> Result<PhaseResult, BoxError> {
    let scrape = kind == Phase::Scraped;
    let dir = tempfile::Builder::new()
        .prefix("shmetrics-scaling-")
        .tempdir()?;
    let mut writers = (0..n)
        .map(|_| Writer::spawn(dir.path(), config, kind == Phase::Raw))
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
        writer_ops_per_s: reports.iter().map(|r| r.ops as f64 / r.wall_s).collect(),
        ops_per_cpu_s: ops as f64 / cpu,
        scrapes,
        scrape_cpu_s,
        scrape_mean_ms,
    })
}

impl PhaseResult {
    fn slowest_writer(&self) -> f64 {
        self.writer_ops_per_s
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
    }
}

fn thread_cpu_s() -> nix::Result<f64> {
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)?;
    Ok(t.tv_sec() as f64 + t.tv_nsec() as f64 * 1e-9)
}

/// `scaling --worker DIR SERIES DURATION_MS` (or `--worker-raw`): registers the `gen`
/// workload (or lays out its raw words), says `ready`, waits for `go` on stdin, runs rounds
/// for the duration, prints `OPS WALL_S CPU_S`.
fn worker(args: &[String], raw: bool) -> Result<(), BoxError> {
    let [dir, series, duration_ms] = args else {
        return Err("--worker DIR SERIES DURATION_MS".into());
    };
    let series: usize = series.parse()?;
    let duration = Duration::from_millis(duration_ms.parse()?);
    let mut round: Box<dyn FnMut(u64)>;
    let registry;
    let per_round;
    if raw {
        let words = RawGen::new(series)?;
        per_round = words.series() as u64;
        round = Box::new(move |r| words.round(r));
        registry = None;
    } else {
        let options = Options {
            initial_segment_size: gen_segment_size(series),
            ..Options::default()
        };
        let opened = Registry::open_with(Path::new(dir), options)?;
        let workload = GenWorkload::register(&opened, series)?;
        per_round = workload.series() as u64;
        round = Box::new(move |r| workload.round(r));
        registry = Some(opened);
    }
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
        round(rounds);
        rounds += 1;
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu_end = clock_gettime(ClockId::CLOCK_PROCESS_CPUTIME_ID)?;
    let cpu = (cpu_end - cpu_start).tv_sec() as f64 + (cpu_end - cpu_start).tv_nsec() as f64 * 1e-9;
    if let Some(registry) = &registry
        && registry.dropped_series() != 0
    {
        return Err(format!("{} series dropped", registry.dropped_series()).into());
    }
    writeln!(stdout, "{} {wall:.6} {cpu:.6}", rounds * per_round)?;
    Ok(())
}

/// The `gen` workload's series as raw words of a file mapped shared (the size of the
/// segment a writer of the same series would create), each series' value words after the
/// previous one's: the physical limit of a writer's round.
struct RawGen {
    map: MappedWords,
    bounds: Vec<f64>,
    /// Word index of each counter's value.
    counters: Vec<usize>,
    /// Word index of each `mostrecent` gauge's value.
    recent_gauges: Vec<usize>,
    /// Word index of each `livesum` gauge's value.
    live_gauges: Vec<usize>,
    /// Series index within its family and word index of each histogram's sum (its
    /// buckets follow).
    histograms: Vec<(usize, usize)>,
}

impl RawGen {
    fn new(series: usize) -> Result<Self, BoxError> {
        let map = MappedWords::new(gen_segment_size(series))?;
        let mut raw = Self {
            map,
            bounds: gen_bounds(),
            counters: Vec::new(),
            recent_gauges: Vec::new(),
            live_gauges: Vec::new(),
            histograms: Vec::new(),
        };
        let mut next = 0;
        for j in 0..GEN_FAMILIES {
            for i in 0..gen_series_count(series, j) {
                match gen_family_kind(j) {
                    MetricKind::Counter => raw.counters.push(next),
                    MetricKind::Gauge if gen_gauge_mode(j % 5) == GaugeMode::MostRecent => {
                        raw.recent_gauges.push(next);
                    }
                    MetricKind::Gauge => raw.live_gauges.push(next),
                    _ => raw.histograms.push((i, next)),
                }
                next += gen_slot_words(j);
            }
        }
        if next > raw.map.words().len() {
            return Err(format!("{next} words do not fit the mapping").into());
        }
        Ok(raw)
    }

    fn series(&self) -> usize {
        self.counters.len()
            + self.recent_gauges.len()
            + self.live_gauges.len()
            + self.histograms.len()
    }

    /// As `GenWorkload::round`, with the raw instructions.
    fn round(&self, round: u64) {
        let words = self.map.words();
        for &c in &self.counters {
            raw_fetch_add(&words[c]);
        }
        for &(i, at) in &self.histograms {
            let buckets = &words[at + 1..at + 2 + GEN_BUCKETS];
            raw_histogram_observe(&self.bounds, buckets, &words[at], gen_value(round, i));
        }
        for &g in &self.recent_gauges {
            raw_store_f64(&words[g], (round + 1) as f64);
        }
        for &g in &self.live_gauges {
            raw_store_f64(&words[g], 1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn raw_rounds_do_what_the_gen_rounds_do() {
        let series = 100;
        let raw = RawGen::new(series).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let workload = GenWorkload::register(&registry, series).unwrap();
        assert_eq!(raw.series(), workload.series());

        // 21 rounds walk every bucket of every histogram once.
        let rounds = GEN_BUCKETS as u64 + 1;
        for r in 0..rounds {
            raw.round(r);
        }
        let words = raw.map.words();
        let value = |at: usize| words[at].load(Relaxed);
        for &c in &raw.counters {
            assert_eq!(value(c), rounds);
        }
        for &g in &raw.recent_gauges {
            assert_eq!(f64::from_bits(value(g)), rounds as f64);
        }
        for &g in &raw.live_gauges {
            assert_eq!(f64::from_bits(value(g)), 1.0);
        }
        for &(i, at) in &raw.histograms {
            let buckets: Vec<u64> = (at + 1..at + 2 + GEN_BUCKETS).map(value).collect();
            assert_eq!(buckets, vec![1; GEN_BUCKETS + 1], "histogram series {i}");
            let sum: f64 = (0..rounds).map(|r| gen_value(r, i)).sum();
            assert!((f64::from_bits(value(at)) - sum).abs() <= 1e-9 * sum);
        }
        // No two series share a word: the words written add up to what the rounds wrote.
        let touched = words.iter().filter(|w| w.load(Relaxed) != 0).count();
        let expected = raw.counters.len()
            + raw.recent_gauges.len()
            + raw.live_gauges.len()
            + raw.histograms.len() * (GEN_BUCKETS + 2);
        assert_eq!(touched, expected);
    }
}
