//! Torture: 16 writer processes with random operation mixes are SIGKILLed at random moments
//! and restarted, while the test scrapes continuously and another thread compacts.
//!
//! Each writer works in batches: before a batch it reports what it is about to do (one
//! series, an amount), after it that the batch is done. So for every series the parent
//! knows what was completed (batches reported done) and what may have happened (every
//! batch started); a batch cut by SIGKILL may count in part. Checked:
//!
//! - every scrape: no counter and no histogram bucket below its value in the previous
//!   scrape, each histogram's buckets adding up to its count, and the rendered exposition
//!   well-formed (every sample line a name, labels and a number; `+Inf` bucket = `_count`);
//! - at the end (all writers killed, one last compaction): every series between completed
//!   and started, summed over every incarnation that ever ran.
//!
//! Short form by default (`cargo test`): 24 kills. `TORTURE_KILLS=N` sets the number of
//! kills (`ci/torture-long.sh` runs 300); `TORTURE_SEED` the random seed. The figures of a
//! run are printed at the end (run with `--nocapture`).

#[allow(dead_code)]
mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ChildProcess, child_role, param, say};
use shmetrics_reader::compact::CompactStop;
use shmetrics_reader::render::render;
use shmetrics_reader::snapshot::{Snapshot, Value};
use shmetrics_reader::{CompactError, Format, PrefixFilter, Reader};
use shmetrics_writer::{GaugeMode, Registry};

const TEST: &str = "sigkilled_writers_lose_and_double_nothing";
const WRITERS: usize = 16;
/// Counter series (label `k`) and histogram series (label `k`) each writer uses.
const SERIES: u64 = 4;
const BOUNDS: [f64; 3] = [1.0, 2.0, 4.0];
const REPORT_TIMEOUT: Duration = Duration::from_secs(60);

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A series a batch works on: `c` (counter) or `h` (histogram), label `k`.
fn series_key(kind: &str, k: u64) -> String {
    format!("{kind}{k}")
}

fn writer() {
    let dir: String = param("dir");
    let mut rng = Rng(param::<u64>("seed") | 1);
    let registry = Registry::open(&dir).expect("open registry");
    let counters = registry
        .counter("torture_ops_total", "Operations.", &["k"])
        .expect("counter family");
    let histograms = registry
        .histogram("torture_latency", "Latency.", &["k"], &BOUNDS)
        .expect("histogram family");
    let up = registry
        .gauge("torture_up", "Live writers.", &[], GaugeMode::LiveSum)
        .expect("gauge family");
    let last = registry
        .gauge(
            "torture_last",
            "Last batch size.",
            &[],
            GaugeMode::MostRecent,
        )
        .expect("gauge family");
    up.unlabelled().expect("child").set(1.0);
    say("ready");
    for batch in 0u64.. {
        let k = rng.below(SERIES);
        let amount = 1 + rng.below(2_000);
        if rng.below(2) == 0 {
            let key = series_key("c", k);
            say(format!("start {batch} {key} {amount}"));
            let c = counters.labels(&[k.to_string()]).expect("child");
            for _ in 0..amount {
                c.inc();
            }
        } else {
            let key = series_key("h", k);
            say(format!("start {batch} {key} {amount}"));
            let h = histograms.labels(&[k.to_string()]).expect("child");
            for i in 0..amount {
                h.observe((i % 6) as f64);
            }
        }
        last.unlabelled().expect("child").set(amount as f64);
        say(format!("done {batch}"));
    }
}

/// What the parent learnt from one writer incarnation's reports: per series, the amounts
/// of the batches reported done and of every batch reported started.
#[derive(Default)]
struct Reports {
    /// The batch under way (a writer runs one at a time): number, series, amount.
    current: Option<(u64, String, u64)>,
    /// Per series: (completed, started).
    bounds: HashMap<String, (u64, u64)>,
}

impl Reports {
    /// Takes the report lines waiting now.
    fn take(&mut self, child: &ChildProcess) {
        while let Some(line) = child.try_line() {
            self.note(&line);
        }
    }

    /// Takes every report line of a child that has exited.
    fn take_all(&mut self, child: &ChildProcess) {
        for line in child.remaining_lines(REPORT_TIMEOUT) {
            self.note(&line);
        }
    }

    fn note(&mut self, line: &str) {
        let mut parts = line.split(' ');
        match parts.next() {
            Some("start") => {
                let batch = parts.next().unwrap().parse().unwrap();
                let key = parts.next().unwrap().to_owned();
                let amount = parts.next().unwrap().parse().unwrap();
                self.bounds.entry(key.clone()).or_default().1 += amount;
                self.current = Some((batch, key, amount));
            }
            Some("done") => {
                let batch: u64 = parts.next().unwrap().parse().unwrap();
                let (started, key, amount) = self.current.take().expect("a batch under way");
                assert_eq!(started, batch, "batches run one at a time");
                self.bounds.entry(key).or_default().0 += amount;
            }
            Some("ready") => {}
            other => panic!("unexpected report {other:?}"),
        }
    }

    /// Adds this incarnation's (completed, started) per series to `bounds`.
    fn add_to(&self, bounds: &mut HashMap<String, (u64, u64)>) {
        for (key, (done, started)) in &self.bounds {
            let b = bounds.entry(key.clone()).or_default();
            b.0 += done;
            b.1 += started;
        }
    }
}

/// Every counter value and histogram bucket count by series, for the monotonicity check.
fn monotone_values(s: &Snapshot) -> HashMap<String, Vec<f64>> {
    let mut out = HashMap::new();
    for family in &s.families {
        for series in &family.series {
            let key = format!("{}{{{}}}", family.name, series.labels);
            match &series.value {
                Value::Counter(v) => {
                    out.insert(key, vec![*v]);
                }
                Value::Histogram { buckets, sum: _ } => {
                    out.insert(key, buckets.iter().map(|&b| b as f64).collect());
                }
                _ => {}
            }
        }
    }
    out
}

/// The series value this test checks: a counter's total, a histogram's count.
fn series_value(s: &Snapshot, key: &str) -> u64 {
    let (family, k) = match key.split_at(1) {
        ("c", k) => ("torture_ops", k),
        (_, k) => ("torture_latency", k),
    };
    let Some(f) = s.family(family) else { return 0 };
    f.series
        .iter()
        .find(|x| x.labels.get("k") == Some(k))
        .map_or(0, |x| match &x.value {
            Value::Counter(v) => *v as u64,
            Value::Histogram { buckets, .. } => buckets.iter().sum(),
            other => panic!("{other:?}"),
        })
}

/// A light exposition check of every scrape: every sample line is `name{labels} number`,
/// and each histogram's `+Inf` bucket equals its `_count`.
fn check_exposition(text: &str) {
    let mut inf: HashMap<String, String> = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name in {line:?}"
        );
        if name.ends_with("_bucket") && series.contains("le=\"+Inf\"") {
            let labels = series[name_end..].replace(",le=\"+Inf\"", "");
            let labels = labels.replace("{le=\"+Inf\"}", "");
            inf.insert(
                format!("{}{labels}", &name[..name.len() - 7]),
                value.to_owned(),
            );
        } else if let Some(base) = name.strip_suffix("_count") {
            let key = format!("{base}{}", &series[name_end..]);
            assert_eq!(inf.get(&key).map(String::as_str), Some(value), "{line:?}");
        }
    }
}

#[test]
fn sigkilled_writers_lose_and_double_nothing() {
    if let Some(role) = child_role() {
        assert_eq!(role, "writer");
        return writer();
    }
    let kills: usize = std::env::var("TORTURE_KILLS")
        .ok()
        .map_or(24, |v| v.parse().expect("TORTURE_KILLS"));
    let seed: u64 = std::env::var("TORTURE_SEED")
        .ok()
        .map_or(0x5eed, |v| v.parse().expect("TORTURE_SEED"));
    let mut rng = Rng(seed | 1);
    let dir = tempfile::tempdir().unwrap();
    let dir_param = ("dir", dir.path().to_str().unwrap().to_owned());
    let spawn = |rng: &mut Rng| {
        let mut child = ChildProcess::spawn(
            TEST,
            "writer",
            &[dir_param.clone(), ("seed", rng.next().to_string())],
        );
        assert_eq!(child.expect_line(REPORT_TIMEOUT), "ready");
        (child, Reports::default())
    };
    let mut writers: Vec<(ChildProcess, Reports)> = (0..WRITERS).map(|_| spawn(&mut rng)).collect();
    let mut finished: Vec<Reports> = Vec::new();

    let stop = Arc::new(AtomicBool::new(false));
    let scrapes = Arc::new(Mutex::new((0usize, 0usize)));
    let scraper = {
        let (path, stop, scrapes) = (
            dir.path().to_owned(),
            Arc::clone(&stop),
            Arc::clone(&scrapes),
        );
        std::thread::spawn(move || {
            let mut reader = Reader::open(&path).unwrap();
            let mut previous: HashMap<String, Vec<f64>> = HashMap::new();
            let mut samples = 0;
            // Relaxed: a stop flag.
            while !stop.load(Ordering::Relaxed) {
                let scrape = reader.snapshot();
                assert!(
                    scrape.report.problems.is_empty(),
                    "{:?}",
                    scrape.report.problems
                );
                let values = monotone_values(&scrape.snapshot);
                for (key, now) in &values {
                    if let Some(before) = previous.get(key) {
                        for (b, n) in before.iter().zip(now) {
                            assert!(n >= b, "{key} went down: {before:?} -> {now:?}");
                        }
                    }
                }
                previous = values;
                let mut text = Vec::new();
                render(
                    &scrape.snapshot,
                    &[],
                    Format::Prometheus,
                    &PrefixFilter::default(),
                    &mut text,
                )
                .unwrap();
                let text = String::from_utf8(text).unwrap();
                check_exposition(&text);
                samples += text.lines().filter(|l| !l.starts_with('#')).count();
                let mut s = scrapes.lock().unwrap();
                *s = (s.0 + 1, samples);
            }
        })
    };
    let compactor = {
        let (path, stop) = (dir.path().to_owned(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut reader = Reader::open(&path).unwrap();
            let mut runs = 0;
            let mut stop_points = 0u64;
            // Relaxed: a stop flag.
            while !stop.load(Ordering::Relaxed) {
                // Now and then a compaction killed half-way, as a compactor process would be.
                stop_points += 1;
                let stop_at = match stop_points % 5 {
                    0 => Some(CompactStop::BeforeRename),
                    1 => Some(CompactStop::AfterRemoving(1)),
                    _ => None,
                };
                match reader.compact_stopping(stop_at) {
                    Ok(_) => runs += 1,
                    Err(CompactError::Busy(_)) => {}
                    Err(e) => panic!("{e}"),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            runs
        })
    };

    let started = Instant::now();
    for _ in 0..kills {
        std::thread::sleep(Duration::from_millis(5 + rng.below(40)));
        let victim = rng.below(WRITERS as u64) as usize;
        let (mut child, mut reports) = std::mem::replace(&mut writers[victim], spawn(&mut rng));
        child.sigkill();
        child.wait(REPORT_TIMEOUT);
        // Everything it wrote to the pipe before it died, up to the end of the pipe.
        reports.take_all(&child);
        finished.push(reports);
        for (child, reports) in &mut writers {
            reports.take(child);
        }
    }
    for (mut child, mut reports) in writers {
        child.sigkill();
        child.wait(REPORT_TIMEOUT);
        reports.take_all(&child);
        finished.push(reports);
    }
    // Relaxed: a stop flag.
    stop.store(true, Ordering::Relaxed);
    scraper.join().expect("scraper");
    let compactions = compactor.join().expect("compactor");

    let mut reader = Reader::open(dir.path()).unwrap();
    reader.compact().unwrap();
    let last = reader.snapshot();
    assert_eq!(last.report.live_segments, 0);
    let mut bounds: HashMap<String, (u64, u64)> = HashMap::new();
    for r in &finished {
        r.add_to(&mut bounds);
    }
    let mut checked_ops = 0;
    for (key, (completed, maybe)) in &bounds {
        let value = series_value(&last.snapshot, key);
        assert!(
            *completed <= value && value <= *maybe,
            "{key}: {value} not within [{completed}, {maybe}]"
        );
        checked_ops += completed;
    }
    let (scrape_count, samples) = *scrapes.lock().unwrap();
    assert!(scrape_count > 0 && compactions > 0);
    println!(
        "torture: {kills} kills, {} writer incarnations, {checked_ops} completed operations \
         checked over {} series, {scrape_count} scrapes ({samples} samples) all monotonic and \
         well-formed, {compactions} compactions (some stopped half-way), {:.1} s",
        finished.len(),
        bounds.len(),
        started.elapsed().as_secs_f64()
    );
}
