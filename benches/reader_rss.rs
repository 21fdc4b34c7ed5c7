//! Peak memory of a reader scraping a big directory (docs/performance.md, "Targets": reader RSS ≤ 64 MiB at
//! 128 processes × 10,000 series).
//!
//! ```text
//! cargo run --profile bench -p shmetrics-benches --bin reader-rss -- \
//!     [--processes 128] [--series 10000] [--scrapes 5] [--resident-budget-mib M]
//! ```
//!
//! This process builds the directory ([`GenFixture`]: live segments, kept locked until the
//! end), then runs itself again as `reader-rss --measure DIR --scrapes N`: a fresh process
//! that opens a `Reader`, scrapes `N` times (Prometheus text, into a reused `Vec`), and
//! prints its memory from `/proc/self/status` and `/proc/self/smaps` after each step: the
//! resident set (`VmRSS`), its anonymous part (heap: parsed metadata, index, output buffer)
//! and its file-backed part, the part of that which lies in the mapped segments, and at the
//! end the peak resident set (`VmHWM`, what `getrusage` reports as `ru_maxrss`). So the
//! writer's memory is never counted in the reader's.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Instant;

use shmetrics_benches::fixtures::{BoxError, GenFixture};
use shmetrics_reader::{DEFAULT_RESIDENT_BUDGET, PrefixFilter, Reader};

const USAGE: &str =
    "usage: reader-rss [--processes P] [--series S] [--scrapes N] [--resident-budget-mib M]";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reader-rss: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), BoxError> {
    let mut processes = 128usize;
    let mut series = 10_000usize;
    let mut scrapes = 5usize;
    let mut budget_mib: Option<usize> = None;
    let mut measure: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--processes" => processes = value()?.parse()?,
            "--series" => series = value()?.parse()?,
            "--scrapes" => scrapes = value()?.parse()?,
            "--resident-budget-mib" => budget_mib = Some(value()?.parse()?),
            "--measure" => measure = Some(value()?),
            _ => return Err(format!("unknown argument {arg:?}\n{USAGE}").into()),
        }
    }
    if let Some(dir) = measure {
        let budget = budget_mib.map_or(DEFAULT_RESIDENT_BUDGET, |m| m.saturating_mul(1 << 20));
        return measure_reader(Path::new(&dir), scrapes, budget);
    }

    let started = Instant::now();
    let fixture = GenFixture::build(processes, series)?;
    let mut bytes = 0u64;
    for entry in std::fs::read_dir(fixture.dir())? {
        bytes += entry?.metadata()?.len();
    }
    println!(
        "writer: {processes} processes x {series} series ({} series) in {}: {} segment files, \
         {:.1} MiB, built in {:.1} s",
        fixture.series_total(),
        fixture.dir().display(),
        processes,
        mib(bytes),
        started.elapsed().as_secs_f64()
    );
    let status = Command::new(std::env::current_exe()?)
        .arg("--measure")
        .arg(fixture.dir())
        .arg("--scrapes")
        .arg(scrapes.to_string())
        .args(
            budget_mib
                .into_iter()
                .flat_map(|m| ["--resident-budget-mib".to_owned(), m.to_string()]),
        )
        .status()?;
    if !status.success() {
        return Err(format!("the measuring reader failed: {status}").into());
    }
    drop(fixture);
    Ok(())
}

fn measure_reader(dir: &Path, scrapes: usize, budget: usize) -> Result<(), BoxError> {
    let canonical = std::fs::canonicalize(dir)?;
    println!("reader: pid {}, RSS figures in MiB", std::process::id());
    println!(
        "reader: {:<25} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "step", "time ms", "VmRSS", "RssAnon", "RssFile", "segments"
    );
    let row = |step: &str, ms: f64| -> Result<(), BoxError> {
        let status = Status::read()?;
        println!(
            "reader: {:<25} {:>9.1} {:>9} {:>9} {:>9} {:>9}",
            step,
            ms,
            kib(status.rss),
            kib(status.anon),
            kib(status.file + status.shmem),
            kib(segment_rss(&canonical)?),
        );
        Ok(())
    };
    row("start", 0.0)?;
    let mut reader = Reader::open(dir)?;
    reader.set_resident_budget(budget);
    let filter = PrefixFilter::default();
    let mut out = Vec::new();
    let mut report = None;
    for i in 1..=scrapes {
        out.clear();
        let started = Instant::now();
        report = Some(shmetrics_benches::scrape_text(
            &mut reader,
            &filter,
            &mut out,
        ));
        row(
            &format!("after scrape {i}"),
            started.elapsed().as_secs_f64() * 1e3,
        )?;
    }
    let status = Status::read()?;
    if let Some(r) = report {
        println!(
            "reader: {} live segments, {} dead, {} merged series, {} problems; output {:.1} MiB",
            r.live_segments,
            r.dead_segments,
            r.series,
            r.problems.len(),
            mib(out.len() as u64)
        );
    }
    println!(
        "reader: peak RSS (VmHWM, = ru_maxrss) {:.1} MiB; at the end {:.1} MiB = {:.1} MiB \
         anonymous + {:.1} MiB file-backed ({:.1} MiB of it mapped segment pages); PSS {:.1} \
         MiB (pages shared with the writers counted in part)",
        status.hwm as f64 / 1024.0,
        status.rss as f64 / 1024.0,
        status.anon as f64 / 1024.0,
        (status.file + status.shmem) as f64 / 1024.0,
        segment_rss(&canonical)? as f64 / 1024.0,
        pss()? as f64 / 1024.0,
    );
    Ok(())
}

/// Proportional set size in KiB (`/proc/self/smaps_rollup`): each resident page divided by
/// the number of processes mapping it.
fn pss() -> Result<u64, BoxError> {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup")?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .ok_or("no Pss line in /proc/self/smaps_rollup")?;
    Ok(line.trim().trim_end_matches(" kB").parse()?)
}

/// Memory figures of `/proc/self/status`, in KiB.
#[derive(Debug, Default)]
struct Status {
    rss: u64,
    hwm: u64,
    anon: u64,
    file: u64,
    shmem: u64,
}

impl Status {
    fn read() -> Result<Self, BoxError> {
        let text = std::fs::read_to_string("/proc/self/status")?;
        let mut s = Self::default();
        for line in text.lines() {
            let Some((key, rest)) = line.split_once(':') else {
                continue;
            };
            let field = match key {
                "VmRSS" => &mut s.rss,
                "VmHWM" => &mut s.hwm,
                "RssAnon" => &mut s.anon,
                "RssFile" => &mut s.file,
                "RssShmem" => &mut s.shmem,
                _ => continue,
            };
            *field = rest.trim().trim_end_matches(" kB").parse()?;
        }
        Ok(s)
    }
}

/// Resident KiB of the mappings of files in `dir` (the segments), from `/proc/self/smaps`.
fn segment_rss(dir: &Path) -> Result<u64, BoxError> {
    let text = std::fs::read_to_string("/proc/self/smaps")?;
    let prefix = format!("{}/", dir.display());
    let mut total = 0;
    let mut in_segment = false;
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header line: `start-end perms offset dev inode [path]`.
            in_segment = line
                .split_whitespace()
                .nth(5)
                .is_some_and(|p| p.starts_with(&prefix));
        } else if in_segment && let Some(kb) = line.strip_prefix("Rss:") {
            total += kb.trim().trim_end_matches(" kB").parse::<u64>()?;
        }
    }
    Ok(total)
}

fn kib(k: u64) -> String {
    format!("{:.1}M", k as f64 / 1024.0)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
