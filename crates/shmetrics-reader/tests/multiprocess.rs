//! Real multi-process tests: the writers are separate processes (re-executed copies of this
//! test binary, see `common`), the reader runs in the test process.
//!
//! - `concurrent_writers_exact_totals`: 8 processes × 3 threads write while the reader
//!   scrapes as fast as it can; every snapshot is monotonic and renders, the totals are exact.
//! - `sigkilled_writer_is_dead_but_counted`: liveness comes from the kernel dropping the
//!   lock of a SIGKILLed writer; its counters stay, its `live*` gauges go.
//! - `forked_child_writes_its_own_segment`: `fork()` without exec gives the child its own
//!   segment; the parent's segment never sees the child's writes.
//! - `forked_child_of_a_spread_series_writes_its_own_copies`: a series spread over copies
//!   by two threads before `fork()` is written in the child's own segment, copies included.
//! - `a_forked_child_that_cannot_create_its_segment_says_so_and_goes_on`: a child whose
//!   segment cannot be created reports it without the stderr lock another thread held at
//!   the fork, and goes on with no metrics.
//! - `fork_while_threads_register`: forking while other threads create label sets and
//!   register families leaves no lock held in the child; `fork_while_threads_open_watched_segments`
//!   the same while they open segments watched for truncation.

mod common;

use shmetrics_layout::sync::AtomicU64;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{ChildProcess, child_role, param, say, wait_for_eof, wait_for_line, wait_pid};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use shmetrics_layout::MetricKind;
use shmetrics_reader::inspect::{RecordEntry, inspect};
use shmetrics_reader::render::render;
use shmetrics_reader::snapshot::{Snapshot, Value};
use shmetrics_reader::{Format, PrefixFilter, Reader, Scrape};
use shmetrics_writer::{CounterFamily, GaugeMode, Options, Registry};

/// Longest wait for a child's next report.
const REPORT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a released child to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

fn dir_param(dir: &Path) -> (&'static str, String) {
    ("dir", dir.to_str().expect("utf-8 temp dir").to_owned())
}

fn counter(snapshot: &Snapshot, name: &str, labels: &str) -> Option<f64> {
    let family = snapshot.family(name)?;
    assert_eq!(family.kind, MetricKind::Counter, "{name}");
    family
        .series
        .iter()
        .find(|s| s.labels.to_string() == labels)
        .map(|s| match s.value {
            Value::Counter(v) => v,
            ref other => panic!("{name}{{{labels}}}: {other:?}"),
        })
}

/// The value of a gauge family without labels, merged to one series.
fn gauge(snapshot: &Snapshot, name: &str) -> Option<f64> {
    let family = snapshot.family(name)?;
    assert_eq!(family.kind, MetricKind::Gauge, "{name}");
    match family.series.as_slice() {
        [series] => match series.value {
            Value::Gauge(v) => Some(v),
            ref other => panic!("{name}: {other:?}"),
        },
        other => panic!("{name}: expected one series, got {other:?}"),
    }
}

/// `(pid, value)` of each series of a per-process gauge family without other labels.
fn per_process_gauge(snapshot: &Snapshot, name: &str) -> Vec<(u32, f64)> {
    let family = snapshot
        .family(name)
        .unwrap_or_else(|| panic!("{name} missing"));
    family
        .series
        .iter()
        .map(|s| match s.value {
            Value::Gauge(v) => (s.pid.expect("per-process series has a pid"), v),
            ref other => panic!("{name}: {other:?}"),
        })
        .collect()
}

fn render_text(snapshot: &Snapshot, format: Format) -> String {
    let mut out = Vec::new();
    render(snapshot, &[], format, &PrefixFilter::default(), &mut out).expect("render");
    String::from_utf8(out).expect("utf-8 exposition")
}

/// Sample lines of an exposition: `name{labels}` (as printed) to value text.
fn samples(text: &str) -> HashMap<&str, &str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            l.rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"))
        })
        .collect()
}

fn assert_clean(scrape: &Scrape) {
    let report = &scrape.report;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.conflicts.is_empty(), "{:?}", report.conflicts);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(report.bad_segments, 0);
    assert_eq!(report.dropped_series, 0);
}

// ---------------------------------------------------------------------------------------
// 1. Concurrent writers, scraped continuously, exact totals.

const WRITERS: usize = 8;
const THREADS: usize = 3;
const OPS: u64 = 50_000;
const FINAL_LAST_OP: f64 = 42.0;
const HISTOGRAM_KINDS: [&str; 2] = ["fast", "slow"];

/// 20 finite buckets: 1, 2, …, 20 (and `+Inf`).
fn bounds() -> Vec<f64> {
    (1..=20).map(f64::from).collect()
}

/// What thread `t` observes into histogram series `kind` at step `i`: multiples of 1/4 up
/// to 22.25, so every bucket (`+Inf` included) is hit and every partial sum is exact in
/// f64 whatever the order of additions. That makes the expected `_sum` exact, not merely
/// close.
fn observation(kind: &str, t: usize, i: u64) -> f64 {
    match kind {
        "fast" => (i % 21) as f64 + 0.5,
        _ => ((i * 7 + t as u64) % 23) as f64 + 0.25,
    }
}

fn writer_child() {
    let registry = Registry::open(param::<String>("dir")).expect("open registry");
    let requests = registry
        .counter("mp_requests_total", "Requests served.", &["method"])
        .unwrap();
    let latency = registry
        .histogram("mp_latency_seconds", "Latency.", &["kind"], &bounds())
        .unwrap();
    let last_op = registry
        .gauge("mp_last_op", "Last step.", &[], GaugeMode::MostRecent)
        .unwrap();
    let started = registry
        .gauge("mp_threads_started", "Threads.", &[], GaugeMode::LiveSum)
        .unwrap();
    let busy = registry
        .gauge("mp_busy", "Threads in a step.", &[], GaugeMode::LiveSum)
        .unwrap();
    // Every series exists before the parent says go.
    let get = requests.labels(&["get"]).unwrap();
    let post = requests.labels(&["post"]).unwrap();
    let fast = latency.labels(&["fast"]).unwrap();
    let slow = latency.labels(&["slow"]).unwrap();
    let last_op = last_op.unlabelled().unwrap();
    let started = started.unlabelled().unwrap();
    let busy = busy.unlabelled().unwrap();
    say("ready");
    assert_eq!(wait_for_line(), "go");
    std::thread::scope(|s| {
        for t in 0..THREADS {
            s.spawn(move || {
                started.inc();
                for i in 0..OPS {
                    busy.inc();
                    get.inc();
                    post.inc_by(2.0);
                    fast.observe(observation("fast", t, i));
                    slow.observe(observation("slow", t, i));
                    last_op.set(i as f64);
                    busy.dec();
                }
                last_op.set(FINAL_LAST_OP);
            });
        }
    });
    say("done");
    wait_for_eof();
}

/// The exact final values, keyed `name{labels}`.
struct Expected {
    counters: BTreeMap<String, f64>,
    /// Per-bucket (not cumulative) counts, the last one `+Inf`, and the sum.
    histograms: BTreeMap<String, (Vec<u64>, f64)>,
}

impl Expected {
    fn compute() -> Self {
        let steps = (WRITERS * THREADS) as f64 * OPS as f64;
        let counters = BTreeMap::from([
            (r#"mp_requests{method="get"}"#.to_owned(), steps),
            (r#"mp_requests{method="post"}"#.to_owned(), 2.0 * steps),
        ]);
        let bounds = bounds();
        let mut histograms = BTreeMap::new();
        for kind in HISTOGRAM_KINDS {
            let mut buckets = vec![0u64; bounds.len() + 1];
            let mut sum = 0.0;
            for t in 0..THREADS {
                for i in 0..OPS {
                    let v = observation(kind, t, i);
                    let bucket = bounds.iter().position(|&b| v <= b).unwrap_or(bounds.len());
                    buckets[bucket] += WRITERS as u64;
                    sum += v * WRITERS as f64;
                }
            }
            assert!(
                buckets.iter().all(|&b| b > 0),
                "{kind} must hit every bucket"
            );
            histograms.insert(
                format!(r#"mp_latency_seconds{{kind="{kind}"}}"#),
                (buckets, sum),
            );
        }
        Self {
            counters,
            histograms,
        }
    }

    fn assert_reached(&self, snapshot: &Snapshot) {
        let mut counters = BTreeMap::new();
        let mut histograms = BTreeMap::new();
        for family in &snapshot.families {
            for series in &family.series {
                let key = format!("{}{{{}}}", family.name, series.labels);
                match &series.value {
                    Value::Counter(v) => {
                        counters.insert(key, *v);
                    }
                    Value::Histogram { buckets, sum } => {
                        histograms.insert(key, (buckets.clone(), *sum));
                    }
                    _ => {}
                }
            }
        }
        assert_eq!(counters, self.counters);
        assert_eq!(histograms, self.histograms);
        assert_eq!(gauge(snapshot, "mp_last_op"), Some(FINAL_LAST_OP));
    }
}

/// What the scrapes so far have shown, to check that nothing goes backwards.
#[derive(Default)]
struct Monotonic {
    counters: HashMap<String, f64>,
    /// Cumulative bucket counts, `+Inf` last.
    cumulative: HashMap<String, Vec<u64>>,
    /// Snapshots in which writes were visibly in progress.
    partial: usize,
}

impl Monotonic {
    fn check(&mut self, scrape: &Scrape, expected: &Expected) {
        assert_clean(scrape);
        let live = scrape.report.live_segments as f64;
        let mut seen = 0;
        let mut partial = false;
        for family in &scrape.snapshot.families {
            for series in &family.series {
                let key = format!("{}{{{}}}", family.name, series.labels);
                match &series.value {
                    Value::Counter(v) => {
                        let max = expected.counters[&key];
                        assert!(v.fract() == 0.0 && *v <= max, "{key} = {v}, final {max}");
                        partial |= *v > 0.0 && *v < max;
                        let before = self.counters.insert(key.clone(), *v).unwrap_or(0.0);
                        assert!(*v >= before, "{key} went down: {before} -> {v}");
                        seen += 1;
                    }
                    Value::Histogram { buckets, sum } => {
                        let cumulative: Vec<u64> = buckets
                            .iter()
                            .scan(0u64, |acc, b| {
                                *acc += b;
                                Some(*acc)
                            })
                            .collect();
                        let count = *cumulative.last().expect("+Inf bucket");
                        let (final_buckets, final_sum) = &expected.histograms[&key];
                        let final_count: u64 = final_buckets.iter().sum();
                        assert!(count <= final_count, "{key}: count {count} > {final_count}");
                        assert!(*sum <= *final_sum, "{key}: sum {sum} > {final_sum}");
                        partial |= count > 0 && count < final_count;
                        if let Some(before) = self.cumulative.get(&key) {
                            for (i, (b, a)) in before.iter().zip(&cumulative).enumerate() {
                                assert!(a >= b, "{key} bucket {i} went down: {b} -> {a}");
                            }
                        }
                        self.cumulative.insert(key, cumulative);
                        seen += 1;
                    }
                    Value::Gauge(v) => match &*family.name {
                        "mp_last_op" => assert!(
                            v.fract() == 0.0 && (0.0..OPS as f64).contains(v),
                            "mp_last_op = {v}"
                        ),
                        // Each live process has between 0 and THREADS threads counted.
                        "mp_busy" | "mp_threads_started" => assert!(
                            v.fract() == 0.0 && *v >= 0.0 && *v <= THREADS as f64 * live,
                            "{key} = {v} with {live} live processes"
                        ),
                        other => panic!("unexpected gauge {other}"),
                    },
                    other => panic!("unexpected value {other:?}"),
                }
            }
        }
        // A series seen once never disappears (that would be a decrease to nothing).
        assert_eq!(seen, self.counters.len() + self.cumulative.len());
        self.partial += usize::from(partial);
    }
}

/// Renders in both formats and checks, for every histogram series, that `_count` equals
/// the `+Inf` bucket and the snapshot's total.
fn check_renders(snapshot: &Snapshot) {
    for format in [Format::Prometheus, Format::OpenMetrics] {
        let text = render_text(snapshot, format);
        let samples = samples(&text);
        for family in snapshot
            .families
            .iter()
            .filter(|f| f.kind == MetricKind::Histogram)
        {
            let name = &family.name;
            for series in &family.series {
                let labels = &series.labels.to_string();
                let Value::Histogram { buckets, .. } = &series.value else {
                    panic!("{name}: {:?}", series.value)
                };
                let total = buckets.iter().sum::<u64>().to_string();
                let inf = samples[&*format!(r#"{name}_bucket{{{labels},le="+Inf"}}"#)];
                let count = samples[&*format!("{name}_count{{{labels}}}")];
                assert_eq!((inf, count), (&*total, &*total), "{name}{{{labels}}}");
            }
        }
        if format == Format::OpenMetrics {
            assert!(text.ends_with("# EOF\n"));
        }
    }
}

#[test]
fn concurrent_writers_exact_totals() {
    if let Some(role) = child_role() {
        assert_eq!(role, "writer");
        return writer_child();
    }
    let dir = tempfile::tempdir().unwrap();
    let expected = Expected::compute();
    let mut children: Vec<ChildProcess> = (0..WRITERS)
        .map(|_| {
            ChildProcess::spawn(
                "concurrent_writers_exact_totals",
                "writer",
                &[dir_param(dir.path())],
            )
        })
        .collect();
    for child in &mut children {
        assert_eq!(child.expect_line(REPORT_TIMEOUT), "ready");
    }
    let mut reader = Reader::open(dir.path()).unwrap();
    let before = reader.snapshot();
    assert_eq!(before.report.live_segments, WRITERS);
    assert_eq!(
        counter(&before.snapshot, "mp_requests", r#"method="get""#),
        Some(0.0)
    );
    assert_eq!(gauge(&before.snapshot, "mp_threads_started"), Some(0.0));
    // No mostrecent gauge was written yet: like prometheus_client, no value at all.
    assert_eq!(gauge(&before.snapshot, "mp_last_op"), None);

    for child in &mut children {
        child.send_line("go");
    }
    let mut monotonic = Monotonic::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut done = 0;
    let mut released = false;
    let mut scrapes = 0usize;
    loop {
        assert!(
            Instant::now() < deadline,
            "writers not finished after 60 s ({done} of {WRITERS} done, released: {released})"
        );
        let scrape = reader.snapshot();
        monotonic.check(&scrape, &expected);
        if scrapes.is_multiple_of(3) {
            check_renders(&scrape.snapshot);
        }
        scrapes += 1;
        if released {
            if children.iter_mut().all(|c| c.try_status().is_some()) {
                break;
            }
            continue;
        }
        for child in &mut children {
            while let Some(line) = child.try_line() {
                assert_eq!(line, "done", "from {}", child.pid());
                done += 1;
            }
            if let Some(status) = child.try_status() {
                panic!(
                    "writer {} exited before it was released: {status:?}",
                    child.pid()
                );
            }
        }
        if done == WRITERS {
            // Every thread has finished and every process is still alive.
            let scrape = reader.snapshot();
            monotonic.check(&scrape, &expected);
            check_renders(&scrape.snapshot);
            expected.assert_reached(&scrape.snapshot);
            assert_eq!(scrape.report.live_segments, WRITERS);
            assert_eq!(scrape.report.dead_segments, 0);
            let threads = (WRITERS * THREADS) as f64;
            assert_eq!(gauge(&scrape.snapshot, "mp_threads_started"), Some(threads));
            assert_eq!(gauge(&scrape.snapshot, "mp_busy"), Some(0.0));
            for child in &mut children {
                child.close_stdin();
            }
            released = true;
        }
    }
    for child in &mut children {
        child.expect_success(Duration::ZERO);
    }
    let last = reader.snapshot();
    monotonic.check(&last, &expected);
    check_renders(&last.snapshot);
    expected.assert_reached(&last.snapshot);
    assert_eq!(last.report.live_segments, 0);
    assert_eq!(last.report.dead_segments, WRITERS);
    // livesum gauges count live processes only: none is left.
    assert_eq!(last.snapshot.family("mp_threads_started"), None);
    assert_eq!(last.snapshot.family("mp_busy"), None);
    // A fresh reader (a restarted scraper) sees the same totals.
    let fresh = Reader::open(dir.path()).unwrap().snapshot();
    assert_eq!(fresh.snapshot, last.snapshot);
    println!(
        "{scrapes} scrapes, {} while writes were in progress",
        monotonic.partial
    );
}

// ---------------------------------------------------------------------------------------
// 2. Liveness after SIGKILL.

fn victim_child() {
    let registry = Registry::open(param::<String>("dir")).expect("open registry");
    let requests = registry
        .counter("victim_requests_total", "Requests.", &["code"])
        .unwrap();
    requests.labels(&["200"]).unwrap().inc_by(7.0);
    let gauges = [
        ("victim_in_flight", GaugeMode::LiveSum, 5.0),
        ("victim_up", GaugeMode::LiveAll, 1.0),
        ("victim_temperature", GaugeMode::LiveMostRecent, 21.5),
        ("victim_lora_requests", GaugeMode::Sum, 2.5),
    ];
    for (name, mode, value) in gauges {
        let family = registry.gauge(name, "A gauge.", &[], mode).unwrap();
        family.unlabelled().unwrap().set(value);
    }
    say(format!("ready {}", std::process::id()));
    wait_for_eof();
}

#[test]
fn sigkilled_writer_is_dead_but_counted() {
    if let Some(role) = child_role() {
        assert_eq!(role, "victim");
        return victim_child();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = ChildProcess::spawn(
        "sigkilled_writer_is_dead_but_counted",
        "victim",
        &[dir_param(dir.path())],
    );
    let pid = child.pid();
    assert_eq!(child.expect_line(REPORT_TIMEOUT), format!("ready {pid}"));

    let mut reader = Reader::open(dir.path()).unwrap();
    let alive = reader.snapshot();
    assert_clean(&alive);
    assert_eq!(
        (alive.report.live_segments, alive.report.dead_segments),
        (1, 0)
    );
    let snap = &alive.snapshot;
    assert_eq!(counter(snap, "victim_requests", r#"code="200""#), Some(7.0));
    assert_eq!(gauge(snap, "victim_in_flight"), Some(5.0));
    assert_eq!(
        per_process_gauge(snap, "victim_up"),
        [(pid.as_raw() as u32, 1.0)]
    );
    assert_eq!(gauge(snap, "victim_temperature"), Some(21.5));
    assert_eq!(gauge(snap, "victim_lora_requests"), Some(2.5));
    let text = render_text(snap, Format::Prometheus);
    assert!(
        text.contains(&format!("victim_up{{pid=\"{pid}\"}} 1.0\n")),
        "{text}"
    );

    child.sigkill();
    assert_eq!(
        child.wait(EXIT_TIMEOUT),
        WaitStatus::Signaled(pid, Signal::SIGKILL, false)
    );

    let dead = reader.snapshot();
    assert_clean(&dead);
    assert_eq!(
        (dead.report.live_segments, dead.report.dead_segments),
        (0, 1)
    );
    let snap = &dead.snapshot;
    assert_eq!(counter(snap, "victim_requests", r#"code="200""#), Some(7.0));
    for live_only in ["victim_in_flight", "victim_up", "victim_temperature"] {
        assert_eq!(
            snap.family(live_only),
            None,
            "{live_only} outlived its process"
        );
    }
    assert_eq!(gauge(snap, "victim_lora_requests"), Some(2.5));
    for format in [Format::Prometheus, Format::OpenMetrics] {
        let text = render_text(snap, format);
        assert!(
            text.contains("victim_requests_total{code=\"200\"} 7.0\n"),
            "{text}"
        );
        assert!(text.contains("victim_lora_requests 2.5\n"), "{text}");
        for live_only in ["victim_in_flight", "victim_up", "victim_temperature"] {
            assert!(!text.contains(live_only), "{live_only} in {text}");
        }
    }
    // A reader started after the death agrees.
    assert_eq!(Reader::open(dir.path()).unwrap().snapshot().snapshot, *snap);
}

// ---------------------------------------------------------------------------------------
// 3. fork() without exec, from a single writer thread.

/// Thread ids of this process other than the calling thread.
fn other_threads() -> Vec<i32> {
    let me = nix::unistd::gettid().as_raw();
    let mut tids: Vec<i32> = std::fs::read_dir("/proc/self/task")
        .expect("list threads")
        .map(|e| {
            let name = e.expect("task entry").file_name();
            name.to_str().expect("tid").parse().expect("tid")
        })
        .filter(|&tid| tid != me)
        .collect();
    tids.sort_unstable();
    tids
}

/// Asserts that the only thread besides this one is libtest's main thread, which runs a test
/// on a thread of its own and waits for its result (the registry starts none): the state a
/// test may `fork()` in.
fn assert_alone_but_libtest() {
    let others = other_threads();
    let main_thread = std::process::id() as i32;
    assert!(
        others.is_empty() || others == [main_thread],
        "threads other than libtest's main thread: {others:?}"
    );
}

/// A forked grandchild that is still running after this long dies of SIGALRM: a hung one
/// must not outlive the test (it would also hold the test's stderr open).
const GRANDCHILD_ALARM_S: u32 = 60;

/// Asserts that the forked grandchild `child` exits with status 0 in time.
fn assert_exited_cleanly(child: Pid) {
    assert_eq!(
        wait_pid(child, EXIT_TIMEOUT),
        Some(WaitStatus::Exited(child, 0)),
        "grandchild {child}"
    );
}

/// The forking process's part after the fork: reports `original pid=… grandchild=…` and
/// `fields`, waits until the test closes its stdin, and reaps the grandchild.
fn report_original_then_reap(child: Pid, fields: String) {
    say(format!(
        "original pid={} grandchild={child} {fields}",
        std::process::id()
    ));
    wait_for_eof();
    assert_exited_cleanly(child);
}

/// Runs the grandchild's part of a fork test and exits: it must never return into the
/// caller's frames (libtest's, or a thread scope whose threads it does not have).
fn run_grandchild(body: impl FnOnce()) -> ! {
    nix::unistd::alarm::set(GRANDCHILD_ALARM_S);
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(body));
    std::process::exit(if outcome.is_ok() { 0 } else { 1 })
}

fn single_thread_fork_child() {
    let registry = Registry::open(param::<String>("dir")).expect("open registry");
    let ops = registry
        .counter("forked_ops_total", "Operations.", &[])
        .unwrap()
        .unlabelled()
        .unwrap()
        .clone();
    let own = registry
        .gauge(
            "forked_own_ops",
            "Operations this process counted itself.",
            &[],
            GaugeMode::All,
        )
        .unwrap()
        .unlabelled()
        .unwrap()
        .clone();
    for _ in 0..2 {
        ops.inc();
    }
    // An exemplar before the fork: its slots are placed in the segment the child copies.
    ops.inc_by_with_exemplar(1.0, &[("at", "before-fork")])
        .unwrap();
    assert_alone_but_libtest();
    // SAFETY: after fork() only the calling thread exists in the child, so a lock another
    // thread held stays held there. The only other thread is libtest's main thread (checked
    // above), parked on the channel that waits for this test's result and holding no lock
    // this code takes; the registry's locks are taken across the fork by its atfork
    // handlers, and glibc's fork leaves malloc usable in the child. The child never returns
    // into libtest: `run_grandchild` exits.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        ForkResult::Child => run_grandchild(|| {
            for _ in 0..4 {
                ops.inc();
            }
            ops.inc_by_with_exemplar(1.0, &[("at", "grandchild")])
                .unwrap();
            own.set(ops.get());
            say(format!(
                "grandchild pid={} recreations={} segments={}",
                std::process::id(),
                shmetrics_writer::fork_recreations(),
                registry.segment_paths().len()
            ));
            wait_for_eof();
        }),
        ForkResult::Parent { child } => {
            for _ in 0..7 {
                ops.inc();
            }
            own.set(ops.get());
            let recreations = shmetrics_writer::fork_recreations();
            report_original_then_reap(child, format!("recreations={recreations}"));
        }
    }
}

/// Parses `word key=value key=value…` into the word and the pairs.
fn fields(line: &str) -> (&str, BTreeMap<&str, &str>) {
    let mut parts = line.split(' ');
    let word = parts.next().expect("a word");
    let pairs = parts
        .map(|p| {
            p.split_once('=')
                .unwrap_or_else(|| panic!("bad field {p:?}"))
        })
        .collect();
    (word, pairs)
}

/// The two reports of a fork test, `original …` and `grandchild …`, by their first word.
type Reports = BTreeMap<String, BTreeMap<String, String>>;

/// Starts test `test`'s child in `role` with `params` and reads its two reports
/// (`original` and `grandchild`, in either order), checking that they name the child and
/// its own child. Returns the child, its pid and the reports.
fn run_forker(test: &str, role: &str, params: &[(&str, String)]) -> (ChildProcess, u32, Reports) {
    let mut child = ChildProcess::spawn(test, role, params);
    let original = child.pid().as_raw() as u32;
    // A grandchild hung in `fork()` (in a fork handler) never reaches its alarm, and is
    // not a child of this process: killed when it does not report.
    let mut unreported = None;
    let mut reports = Reports::new();
    for _ in 0..2 {
        let line = child.expect_line(REPORT_TIMEOUT);
        let (word, pairs) = fields(&line);
        let pairs: BTreeMap<String, String> = (pairs.into_iter())
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        if word == "original" {
            unreported = Some(KillOnDrop(pairs["grandchild"].parse().unwrap()));
        }
        assert!(reports.insert(word.to_owned(), pairs).is_none(), "{line}");
    }
    std::mem::forget(unreported);
    let (orig, gc) = (&reports["original"], &reports["grandchild"]);
    assert_eq!(orig["pid"], original.to_string());
    assert_eq!(gc["pid"], orig["grandchild"]);
    (child, original, reports)
}

/// SIGKILLs a process that is not this one's child (so not reaped by it) when dropped.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

/// The `at` label of the exemplar of counter `name`'s unlabelled series.
fn exemplar_label(snapshot: &Snapshot, name: &str) -> Option<String> {
    let series = snapshot.family(name)?.series.first()?;
    let exemplar = series.exemplars.as_deref()?.first()?.as_ref()?;
    exemplar
        .labels
        .iter()
        .find(|(n, _)| n == "at")
        .map(|(_, v)| v.clone())
}

/// The snapshot of one segment file alone, read from a copy in a directory of its own.
fn snapshot_of_segment(path: &Path) -> Snapshot {
    let alone = tempfile::tempdir().unwrap();
    std::fs::copy(path, alone.path().join(path.file_name().unwrap())).unwrap();
    let scrape = Reader::open(alone.path()).unwrap().snapshot();
    assert_clean(&scrape);
    scrape.snapshot
}

#[test]
fn forked_child_writes_its_own_segment() {
    if let Some(role) = child_role() {
        assert_eq!(role, "forker");
        return single_thread_fork_child();
    }
    let dir = tempfile::tempdir().unwrap();
    let test = "forked_child_writes_its_own_segment";
    let (mut child, original, reports) = run_forker(test, "forker", &[dir_param(dir.path())]);
    let (orig, gc) = (&reports["original"], &reports["grandchild"]);
    assert_eq!(orig["recreations"], "0");
    assert_eq!(
        gc["recreations"], "1",
        "the grandchild re-created its one registry"
    );
    assert_eq!(gc["segments"], "1");
    let grandchild: u32 = gc["pid"].parse().unwrap();
    assert_ne!(grandchild, original);

    // Two segment files, one per process, named by pid.
    let files = common::segment_files(dir.path());
    let pids: Vec<u32> = files.iter().map(|(pid, _)| *pid).collect();
    let mut want = vec![original, grandchild];
    want.sort_unstable();
    assert_eq!(pids, want, "{files:?}");

    let mut reader = Reader::open(dir.path()).unwrap();
    let merged = reader.snapshot();
    assert_clean(&merged);
    assert_eq!(merged.report.live_segments, 2);
    assert_eq!(counter(&merged.snapshot, "forked_ops", ""), Some(15.0));
    // Merged, the newest exemplar: the grandchild's.
    assert_eq!(
        exemplar_label(&merged.snapshot, "forked_ops"),
        Some("grandchild".to_owned())
    );
    let mut per_pid = vec![(original, 10.0), (grandchild, 5.0)];
    per_pid.sort_by_key(|&(pid, _)| pid);
    assert_eq!(
        per_process_gauge(&merged.snapshot, "forked_own_ops"),
        per_pid
    );

    // Each segment alone: the original's never saw the grandchild's 5.
    for (pid, path) in &files {
        let alone = snapshot_of_segment(path);
        let want = if *pid == original { 10.0 } else { 5.0 };
        assert_eq!(
            counter(&alone, "forked_ops", ""),
            Some(want),
            "segment of {pid}"
        );
        assert_eq!(per_process_gauge(&alone, "forked_own_ops"), [(*pid, want)]);
        // Its exemplar too: the grandchild's slots start empty (a copy of the records, not
        // of the values) and hold its own; the original keeps its own.
        let want = if *pid == original {
            "before-fork"
        } else {
            "grandchild"
        };
        assert_eq!(
            exemplar_label(&alone, "forked_ops"),
            Some(want.to_owned()),
            "segment of {pid}"
        );
    }

    child.close_stdin();
    child.expect_success(EXIT_TIMEOUT);
    let after = reader.snapshot();
    assert_eq!(
        (after.report.live_segments, after.report.dead_segments),
        (0, 2)
    );
    assert_eq!(counter(&after.snapshot, "forked_ops", ""), Some(15.0));
    assert_eq!(
        per_process_gauge(&after.snapshot, "forked_own_ops"),
        per_pid
    );
}

/// Series records of family `name` in `registry`'s segments.
fn series_records(registry: &Registry, name: &str) -> usize {
    let paths = registry.segment_paths();
    let records = paths.iter().flat_map(|p| inspect(p).unwrap().records);
    let named = |entry: &RecordEntry| matches!(entry, RecordEntry::Series { family, .. } if family.name == name);
    records.filter(|r| named(&r.entry)).count()
}

fn spread_fork_child() {
    let options = Options {
        contention_stripes: 4,
        ..Options::default()
    };
    let registry = Registry::open_with(param::<String>("dir"), options).expect("open registry");
    let family = registry.counter("spread_ops_total", "Operations.", &[]);
    let ops = family.unwrap().unlabelled().unwrap().clone();
    // Two threads add halves; after the first thousand of both, the series is spread over
    // its four copies as when found contended; then they end, and the fork happens on
    // this thread alone.
    let halfway = std::sync::Barrier::new(2);
    let adds: u64 = std::thread::scope(|s| {
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let (ops, halfway) = (&ops, &halfway);
                s.spawn(move || {
                    (0..1_000).for_each(|_| ops.inc_by(0.5));
                    halfway.wait();
                    if t == 0 {
                        ops.spread_now();
                    }
                    halfway.wait();
                    (0..10_000).for_each(|_| ops.inc_by(0.5));
                    11_000
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    });
    assert_eq!(
        series_records(&registry, "spread_ops"),
        4,
        "spread before the fork"
    );
    assert_eq!(ops.get(), adds as f64 * 0.5);
    assert_alone_but_libtest();
    // SAFETY: as in `single_thread_fork_child`: the writing threads have ended, the only
    // other thread is libtest's main thread, and the grandchild never returns into libtest.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        ForkResult::Child => run_grandchild(|| {
            for _ in 0..4 {
                ops.inc_by(0.25);
            }
            say(format!(
                "grandchild pid={} copies={}",
                std::process::id(),
                series_records(&registry, "spread_ops")
            ));
            wait_for_eof();
        }),
        ForkResult::Parent { child } => {
            for _ in 0..8 {
                ops.inc_by(0.75);
            }
            report_original_then_reap(child, format!("before={}", adds as f64 * 0.5));
        }
    }
}

/// A series spread over copies before a `fork()`: the child writes its copies in its own
/// segment (its records, copies included, with zero values), the parent's never see them.
#[test]
fn forked_child_of_a_spread_series_writes_its_own_copies() {
    if let Some(role) = child_role() {
        assert_eq!(role, "spread-forker");
        return spread_fork_child();
    }
    let dir = tempfile::tempdir().unwrap();
    let test = "forked_child_of_a_spread_series_writes_its_own_copies";
    let (mut child, original, reports) =
        run_forker(test, "spread-forker", &[dir_param(dir.path())]);
    let (orig, gc) = (&reports["original"], &reports["grandchild"]);
    assert_eq!(
        gc["copies"], "4",
        "the grandchild's segment declares the copies too"
    );
    let grandchild: u32 = gc["pid"].parse().unwrap();
    let before: f64 = orig["before"].parse().unwrap();
    assert!(before > 0.0);

    let merged = Reader::open(dir.path()).unwrap().snapshot();
    assert_clean(&merged);
    assert_eq!(merged.report.live_segments, 2);
    assert_eq!(
        counter(&merged.snapshot, "spread_ops", ""),
        Some(before + 7.0)
    );
    // Each segment alone: the parent's holds what it added before and after the fork, the
    // grandchild's only its own 1.0.
    let files = common::segment_files(dir.path());
    assert_eq!(files.len(), 2, "{files:?}");
    for (pid, path) in &files {
        let want = if *pid == original {
            before + 6.0
        } else {
            assert_eq!(*pid, grandchild);
            1.0
        };
        let alone = snapshot_of_segment(path);
        assert_eq!(
            counter(&alone, "spread_ops", ""),
            Some(want),
            "segment of {pid}"
        );
    }
    child.close_stdin();
    child.expect_success(EXIT_TIMEOUT);
}

fn failed_fork_child() {
    let dir: PathBuf = param("dir");
    // This process's stderr, and so its grandchild's, goes to the file the test reads.
    let log = std::fs::File::create(param::<PathBuf>("stderr")).expect("stderr file");
    nix::unistd::dup2_stderr(&log).expect("redirect stderr");
    let registry = Registry::open(&dir).expect("open registry");
    let family = registry.counter("failed_fork_ops_total", "Operations.", &[]);
    let ops = family.unwrap().unlabelled().unwrap().clone();
    ops.inc_by(2.0);
    // The directory moves away and a file takes its name: the grandchild cannot create its
    // segment there. The parent's segment, already mapped, moves with the directory.
    std::fs::rename(&dir, param::<PathBuf>("moved")).expect("move the directory");
    std::fs::write(&dir, b"not a directory").expect("a file in its place");
    // Another thread holds the standard library's stderr lock across the fork, as a thread
    // that is printing at that moment does; in the grandchild no thread will release it.
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let _stderr = std::io::stderr().lock();
        held_tx.send(()).unwrap();
        let _ = release_rx.recv();
    });
    held_rx.recv().unwrap();
    // SAFETY: after fork() only the calling thread exists in the child, so a lock another
    // thread held stays held there. Besides libtest's main thread (parked, holding no lock
    // this code takes), the holder thread holds stderr's lock, which is the point of the
    // test: neither the atfork child handler nor the grandchild's code below may take it.
    // The grandchild never returns into libtest: `run_grandchild` exits.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        ForkResult::Child => run_grandchild(|| {
            ops.inc();
            say(format!(
                "grandchild pid={} recreations={}",
                std::process::id(),
                shmetrics_writer::fork_recreations()
            ));
            wait_for_eof();
        }),
        ForkResult::Parent { child } => {
            release_tx.send(()).unwrap();
            holder.join().unwrap();
            ops.inc_by(3.0);
            report_original_then_reap(child, format!("ops={}", ops.get()));
        }
    }
}

/// A forked child that cannot create its own segment (its directory is gone) while another
/// thread of the parent held stderr's lock at the fork: the child says so in a line of its
/// own and goes on, keeping no metrics; the parent's segment never sees the child's writes.
#[test]
fn a_forked_child_that_cannot_create_its_segment_says_so_and_goes_on() {
    if let Some(role) = child_role() {
        assert_eq!(role, "failed-forker");
        return failed_fork_child();
    }
    let base = tempfile::tempdir().unwrap();
    let (dir, moved, stderr) = (
        base.path().join("metrics"),
        base.path().join("moved"),
        base.path().join("stderr.log"),
    );
    std::fs::create_dir(&dir).unwrap();
    let test = "a_forked_child_that_cannot_create_its_segment_says_so_and_goes_on";
    let params = [
        dir_param(&dir),
        ("moved", moved.display().to_string()),
        ("stderr", stderr.display().to_string()),
    ];
    let (mut child, _, reports) = run_forker(test, "failed-forker", &params);
    let (orig, gc) = (&reports["original"], &reports["grandchild"]);
    assert_eq!(gc["recreations"], "1", "the child handler ran");
    assert_eq!(orig["ops"], "5", "the parent's own adds only");
    child.close_stdin();
    child.expect_success(EXIT_TIMEOUT);

    let log = std::fs::read_to_string(&stderr).unwrap();
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("shmetrics: forked child"))
        .collect();
    assert_eq!(said.len(), 1, "{log}");
    assert!(
        said[0].starts_with("shmetrics: forked child keeps no metrics for this segment: ")
            && said[0].contains(&*dir.display().to_string())
            && log.ends_with('\n'),
        "{log}"
    );
    // Only the parent's segment, with only its own adds.
    let merged = Reader::open(&moved).unwrap().snapshot();
    assert_clean(&merged);
    assert_eq!(merged.report.live_segments, 0, "both processes have exited");
    assert_eq!(common::segment_files(&moved).len(), 1);
    assert_eq!(counter(&merged.snapshot, "failed_fork_ops", ""), Some(5.0));
}

// ---------------------------------------------------------------------------------------
// 4. fork() while other threads create label sets and register families.

const CHURN_THREADS: usize = 3;
const FORKS: usize = 8;
/// Safety bound on label sets per churn thread (they stop when the forks are done).
const MAX_CHURN: u64 = 200_000;
/// A churn thread registers a new family every this many label sets.
const FAMILY_EVERY: u64 = 4;

/// Creates label sets (and every few, a family) until told to stop; returns how many of
/// each it created, every one incremented once.
fn churn(
    t: usize,
    registry: &Registry,
    family: &CounterFamily,
    stop: &AtomicBool,
    progress: &AtomicU64,
) -> (u64, u64) {
    let thread = t.to_string();
    let mut families = 0;
    let mut n = 0;
    while n < MAX_CHURN && !stop.load(Ordering::Acquire) {
        family
            .labels(&[thread.as_str(), &n.to_string()])
            .unwrap()
            .inc();
        if n.is_multiple_of(FAMILY_EVERY) {
            registry
                .counter(
                    &format!("churn_family_{t}_{n}"),
                    "Registered while forking.",
                    &[],
                )
                .unwrap()
                .unlabelled()
                .unwrap()
                .inc();
            families += 1;
        }
        n += 1;
        progress.store(n, Ordering::Release);
    }
    (n, families)
}

/// Polls `done` for up to 20 s.
fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    true
}

fn fork_under_churn_child() {
    // Watched: every segment is watched for truncation, and small, so that the churn opens
    // new ones (and registers their ranges while holding the state lock) during the forks.
    let watched: bool = param("watched");
    let options = if watched {
        Options {
            guard_truncation: true,
            initial_segment_size: 4096,
            max_segment_size: 4096,
            max_segments: 4096,
            ..Options::default()
        }
    } else {
        Options::default()
    };
    // Watched, a registry opened first without the guard registers the writer's fork
    // handlers before the guard's lock is ever used: their order must not depend on that.
    let _plain = watched.then(|| Registry::open(param::<String>("dir")).expect("open registry"));
    let registry = Registry::open_with(param::<String>("dir"), options).expect("open registry");
    let family = registry
        .counter("churn_total", "Label sets created.", &["thread", "n"])
        .unwrap();
    let listed = registry
        .counter(
            "listed_total",
            "Label sets of a family being listed.",
            &["name"],
        )
        .unwrap();
    for name in ["a", "b"] {
        listed.labels(&[name]).unwrap().inc();
    }
    let stop = AtomicBool::new(false);
    let progress: [AtomicU64; CHURN_THREADS] = Default::default();
    let total = || {
        progress
            .iter()
            .map(|p| p.load(Ordering::Acquire))
            .sum::<u64>()
    };
    let mut grandchildren = Vec::new();
    let results: Vec<(u64, u64)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..CHURN_THREADS)
            .map(|t| {
                let (registry, family, stop, progress) = (&registry, &family, &stop, &progress[t]);
                s.spawn(move || churn(t, registry, family, stop, progress))
            })
            .collect();
        // And one thread listing a family's children (which locks its child table).
        let lister = s.spawn(|| {
            let mut listings = 0u64;
            while !stop.load(Ordering::Acquire) {
                assert!(listed.children().len() >= 2);
                listings += 1;
            }
            listings
        });
        let mut ok = wait_until(|| progress.iter().all(|p| p.load(Ordering::Acquire) >= 64));
        for k in 0..FORKS {
            if !ok {
                break;
            }
            let before = total();
            // SAFETY: after fork() only the calling thread exists in the child; a lock any
            // other thread held stays held there. The churn threads may hold the
            // allocator's locks (glibc's fork makes malloc usable in the child) and the
            // registry's locks: shmetrics' atfork handlers must leave none of those held,
            // which is what this test checks (a grandchild that hangs on one is killed
            // after a timeout and fails the test). No other thread prints, so stdout's
            // lock is free; libtest's main thread is parked waiting for the test result.
            // The grandchild never returns into this scope: `run_grandchild` exits.
            match unsafe { nix::unistd::fork() }.expect("fork") {
                ForkResult::Child => run_grandchild(|| {
                    let recreations = shmetrics_writer::fork_recreations();
                    let key = k.to_string();
                    family
                        .labels(&["grandchild", key.as_str()])
                        .unwrap()
                        .inc_by(5.0);
                    listed.labels(&[format!("grandchild_{k}")]).unwrap().inc();
                    registry
                        .counter(&format!("after_fork_{k}"), "Registered after fork.", &[])
                        .unwrap()
                        .unlabelled()
                        .unwrap()
                        .inc();
                    say(format!(
                        "grandchild k={k} pid={} recreations={recreations}",
                        std::process::id()
                    ));
                }),
                ForkResult::Parent { child } => grandchildren.push(child),
            }
            // Let the churn go on between forks, so each fork lands in the middle of it.
            ok = wait_until(|| total() >= before + 64);
        }
        stop.store(true, Ordering::Release);
        assert!(ok, "churn threads stalled: {:?}", progress);
        assert!(lister.join().expect("lister thread") > 0);
        workers
            .into_iter()
            .map(|w| w.join().expect("churn thread"))
            .collect()
    });
    // Reap every grandchild within one deadline; kill the ones that hang before failing.
    let deadline = Instant::now() + Duration::from_secs(20);
    let statuses: Vec<Option<WaitStatus>> = grandchildren
        .iter()
        .map(|&pid| wait_pid(pid, deadline.saturating_duration_since(Instant::now())))
        .collect();
    let mut failures = Vec::new();
    for (k, (&pid, status)) in grandchildren.iter().zip(&statuses).enumerate() {
        match status {
            Some(WaitStatus::Exited(_, 0)) => {}
            None => {
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                failures.push(format!(
                    "grandchild {k} (pid {pid}) hung: it inherited a held lock"
                ));
            }
            Some(status) => failures.push(format!("grandchild {k} (pid {pid}) failed: {status:?}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let list = |f: fn(&(u64, u64)) -> u64| {
        results
            .iter()
            .map(|r| f(r).to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let pids: Vec<String> = grandchildren.iter().map(Pid::to_string).collect();
    say(format!(
        "totals created={} families={} grandchildren={}",
        list(|r| r.0),
        list(|r| r.1),
        pids.join(",")
    ));
}

#[test]
fn fork_while_threads_register() {
    if let Some(role) = child_role() {
        assert_eq!(role, "churn");
        return fork_under_churn_child();
    }
    fork_while_threads_register_in("fork_while_threads_register", false);
}

/// As `fork_while_threads_register`, with segments watched for truncation and small: the
/// churn threads open new segments during the forks, registering each one's range (the
/// truncation guard's lock) under the registry's state lock, which the fork handlers must
/// take in that same order.
#[test]
fn fork_while_threads_open_watched_segments() {
    if let Some(role) = child_role() {
        assert_eq!(role, "churn");
        return fork_under_churn_child();
    }
    fork_while_threads_register_in("fork_while_threads_open_watched_segments", true);
}

fn fork_while_threads_register_in(test: &str, watched: bool) {
    let dir = tempfile::tempdir().unwrap();
    let params = [dir_param(dir.path()), ("watched", watched.to_string())];
    let mut child = ChildProcess::spawn(test, "churn", &params);
    let forker = child.pid().as_raw() as u32;
    let mut reported = BTreeMap::new();
    let totals = loop {
        // Longer than the child's own deadlines, so its report of a hang arrives first.
        let line = child.expect_line(Duration::from_secs(90));
        let (word, f) = fields(&line);
        match word {
            "grandchild" => {
                let registries = if watched { "2" } else { "1" };
                assert_eq!(f["recreations"], registries, "{line}");
                let pid: u32 = f["pid"].parse().unwrap();
                assert!(
                    reported
                        .insert(f["k"].parse::<usize>().unwrap(), pid)
                        .is_none()
                );
            }
            "totals" => break line,
            _ => panic!("unexpected report {line}"),
        }
    };
    child.expect_success(EXIT_TIMEOUT);
    let (_, f) = fields(&totals);
    let parse = |s: &str| -> Vec<u64> { s.split(',').map(|x| x.parse().unwrap()).collect() };
    let created = parse(f["created"]);
    let families = parse(f["families"]);
    let grandchildren = parse(f["grandchildren"]);
    assert_eq!(grandchildren.len(), FORKS);
    let want: Vec<u32> = grandchildren.iter().map(|&p| p as u32).collect();
    let got: Vec<u32> = (0..FORKS).map(|k| reported[&k]).collect();
    assert_eq!(got, want, "grandchildren's own pids vs. fork()'s");
    for (t, (&c, &fam)) in created.iter().zip(&families).enumerate() {
        assert!(c >= 64, "thread {t} created only {c} label sets");
        assert_eq!(fam, c.div_ceil(FAMILY_EVERY), "thread {t}");
    }

    // One process per pid in the file names: the forker and every grandchild.
    let files = common::segment_files(dir.path());
    let pids: BTreeSet<u32> = files.iter().map(|(pid, _)| *pid).collect();
    let want: BTreeSet<u32> = want.into_iter().chain([forker]).collect();
    assert_eq!(pids, want);
    if watched {
        let opened = files.iter().filter(|(pid, _)| *pid == forker).count();
        assert!(opened > FORKS, "the churn opened {opened} segments");
    }

    let scrape = Reader::open(dir.path()).unwrap().snapshot();
    assert_clean(&scrape);
    assert_eq!(scrape.report.live_segments, 0);
    assert_eq!(scrape.report.dead_segments, files.len());
    let snap = &scrape.snapshot;
    let churn = snap.family("churn").expect("churn family");
    let mut per_thread = vec![0u64; CHURN_THREADS];
    let mut by_grandchild = BTreeMap::new();
    let mut total = 0.0;
    for series in &churn.series {
        let Value::Counter(v) = series.value else {
            panic!("{:?}", series.value)
        };
        total += v;
        let thread = series.labels.get("thread").unwrap();
        let n = series.labels.get("n").unwrap();
        if thread == "grandchild" {
            by_grandchild.insert(n.parse::<usize>().unwrap(), v);
        } else {
            assert_eq!(v, 1.0, "{}", series.labels);
            per_thread[thread.parse::<usize>().unwrap()] += 1;
        }
    }
    assert_eq!(per_thread, created);
    let five_each: BTreeMap<usize, f64> = (0..FORKS).map(|k| (k, 5.0)).collect();
    assert_eq!(by_grandchild, five_each);
    let label_sets: u64 = created.iter().sum();
    assert_eq!(total, label_sets as f64 + 5.0 * FORKS as f64);
    for k in 0..FORKS {
        assert_eq!(counter(snap, &format!("after_fork_{k}"), ""), Some(1.0));
        let labels = format!(r#"name="grandchild_{k}""#);
        assert_eq!(counter(snap, "listed", &labels), Some(1.0));
    }
    assert_eq!(counter(snap, "listed", r#"name="a""#), Some(1.0));
    assert_eq!(snap.family("listed").unwrap().series.len(), 2 + FORKS);
    let registered: Vec<f64> = snap
        .families
        .iter()
        .filter(|f| f.name.starts_with("churn_family_"))
        .map(|f| match f.series.as_slice() {
            [s] => match s.value {
                Value::Counter(v) => v,
                ref other => panic!("{}: {other:?}", f.name),
            },
            other => panic!("{}: {other:?}", f.name),
        })
        .collect();
    assert_eq!(registered.len() as u64, families.iter().sum::<u64>());
    assert!(registered.iter().all(|&v| v == 1.0));
}
