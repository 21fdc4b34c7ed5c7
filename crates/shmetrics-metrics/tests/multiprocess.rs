//! The facade recorder across real processes: each child is a re-executed copy of this test
//! binary that installs a [`ShmetricsRecorder`] as its global `metrics` recorder and writes
//! through the macros from several threads. The reader in the test process must see the
//! exact totals, each family once, an exposition promtool accepts; and, once the children
//! have exited, the same counters and histograms and no `livesum` gauge.

#[allow(dead_code)] // The harness serves other tests too.
#[path = "../../shmetrics-reader/tests/common/mod.rs"]
mod common;
#[path = "../../shmetrics/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use common::{ChildProcess, child_role, param, say, wait_for_eof, wait_for_line};
use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use shmetrics_metrics::{GaugeMode, ShmetricsRecorder};
use shmetrics_reader::{PrefixFilter, Reader};
use support::checked_scrape;

const PROCESSES: usize = 4;
const THREADS: usize = 3;
const ITERATIONS: usize = 4000;
/// Observations cycle through these (exact in binary, so every sum is exact).
const VALUES: [f64; 4] = [0.0625, 0.5, 1.0, 4.0];
const TIMEOUT: Duration = Duration::from_secs(60);
const TEST: &str = "facade_recorder_across_processes_yields_exact_totals";

fn child(rank: usize) {
    let dir: String = param("dir");
    let recorder = ShmetricsRecorder::builder()
        .buckets_for_metric("engine_request_latency_seconds", &[0.25, 1.0, 2.0])
        .gauge_mode_for_metric("engine_build_info", GaugeMode::MostRecent)
        .open(&dir)
        .expect("open the recorder");
    recorder.install().expect("install the global recorder");
    describe_counter!("engine_requests_total", "Requests served.");
    describe_counter!("engine_tokens_total", Unit::Count, "Tokens generated.");
    describe_histogram!(
        "engine_request_latency_seconds",
        Unit::Seconds,
        "End-to-end request latency."
    );
    describe_gauge!("engine_kv_blocks_used", "KV-cache blocks in use.");
    describe_gauge!("engine_requests_running", "Requests running.");
    describe_gauge!("engine_build_info", "Engine build.");
    say("ready");
    assert_eq!(wait_for_line(), "go");

    gauge!("engine_kv_blocks_used").set((rank + 1) as f64);
    gauge!("engine_build_info", "version" => "1.2").set(1.0);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            s.spawn(move || {
                // A handle kept by the thread, and macros called on every iteration.
                let tokens = counter!("engine_tokens_total");
                let running = gauge!("engine_requests_running");
                for i in 0..ITERATIONS {
                    running.increment(1.0);
                    let model = if i % 2 == 0 { "llama" } else { "qwen" };
                    // Both label orders: one series.
                    if (i + t) % 3 == 0 {
                        counter!("engine_requests_total", "phase" => "decode", "model" => model)
                            .increment(1);
                    } else {
                        counter!("engine_requests_total", "model" => model, "phase" => "decode")
                            .increment(1);
                    }
                    tokens.increment((i % 5 + 1) as u64);
                    histogram!("engine_request_latency_seconds", "model" => model)
                        .record(VALUES[i % 4]);
                    running.decrement(1.0);
                }
            });
        }
    });
    // A key with other label names: not recorded, counted.
    counter!("engine_requests_total", "rank" => rank.to_string()).increment(1);
    say(format!("done {}", recorder.stats().rejected_keys));
    wait_for_eof();
}

fn scrape(reader: &mut Reader) -> String {
    checked_scrape(
        reader,
        &PrefixFilter::new(["engine_"]),
        "the facade recorder's directory",
    )
}

/// The expected exposition of the counters and histograms (summed over every process).
fn expected_totals() -> String {
    let per_model = (PROCESSES * THREADS * ITERATIONS / 2) as u64;
    let tokens: usize = (0..ITERATIONS).map(|i| i % 5 + 1).sum::<usize>() * PROCESSES * THREADS;
    // Per model, the values it sees: llama (even i) 0.0625 and 1.0, qwen (odd i) 0.5 and 4.0.
    let each = per_model / 2;
    let latency = |model: &str, buckets: [u64; 3], sum: f64| {
        format!(
            "engine_request_latency_seconds_bucket{{model=\"{model}\",le=\"0.25\"}} {}\n\
             engine_request_latency_seconds_bucket{{model=\"{model}\",le=\"1.0\"}} {}\n\
             engine_request_latency_seconds_bucket{{model=\"{model}\",le=\"2.0\"}} {}\n\
             engine_request_latency_seconds_bucket{{model=\"{model}\",le=\"+Inf\"}} {per_model}\n\
             engine_request_latency_seconds_count{{model=\"{model}\"}} {per_model}\n\
             engine_request_latency_seconds_sum{{model=\"{model}\"}} {sum:?}\n",
            buckets[0], buckets[1], buckets[2]
        )
    };
    format!(
        "# HELP engine_request_latency_seconds End-to-end request latency.\n\
         # TYPE engine_request_latency_seconds histogram\n{}{}\
         # HELP engine_requests_total Requests served.\n\
         # TYPE engine_requests_total counter\n\
         engine_requests_total{{model=\"llama\",phase=\"decode\"}} {per_model:?}.0\n\
         engine_requests_total{{model=\"qwen\",phase=\"decode\"}} {per_model:?}.0\n",
        latency("llama", [each, per_model, per_model], each as f64 * 1.0625),
        latency("qwen", [0, each, each], each as f64 * 4.5),
    ) + &format!(
        "# HELP engine_tokens_total Tokens generated.\n\
         # TYPE engine_tokens_total counter\nengine_tokens_total {tokens}.0\n"
    )
}

#[test]
fn facade_recorder_across_processes_yields_exact_totals() {
    if let Some(role) = child_role() {
        return child(role.parse().expect("the role is the rank"));
    }
    let dir = tempfile::tempdir().unwrap();
    let dir_param = ("dir", dir.path().to_str().unwrap().to_owned());
    let mut children: Vec<ChildProcess> = (0..PROCESSES)
        .map(|rank| ChildProcess::spawn(TEST, &rank.to_string(), std::slice::from_ref(&dir_param)))
        .collect();
    for c in &mut children {
        assert_eq!(c.expect_line(TIMEOUT), "ready");
    }
    for c in &mut children {
        c.send_line("go");
    }
    for c in &mut children {
        assert_eq!(
            c.expect_line(TIMEOUT),
            "done 1",
            "one rejected key per process"
        );
    }

    let mut reader = Reader::open(dir.path()).unwrap();
    let live = scrape(&mut reader);
    let kv_blocks: usize = (1..=PROCESSES).sum();
    let expected_live = format!(
        "# HELP engine_build_info Engine build.\n# TYPE engine_build_info gauge\n\
         engine_build_info{{version=\"1.2\"}} 1.0\n\
         # HELP engine_kv_blocks_used KV-cache blocks in use.\n\
         # TYPE engine_kv_blocks_used gauge\nengine_kv_blocks_used {kv_blocks}.0\n"
    ) + &expected_totals()[..]
        + "# HELP engine_requests_running Requests running.\n\
           # TYPE engine_requests_running gauge\nengine_requests_running 0.0\n";
    assert_eq!(sorted_families(&live), sorted_families(&expected_live));

    for c in &mut children {
        c.close_stdin();
    }
    for c in &mut children {
        c.expect_success(TIMEOUT);
    }
    // Dead processes: counters and histograms stay, `livesum` gauges go, `mostrecent`
    // keeps the last value written.
    let after = scrape(&mut reader);
    let expected_after = "# HELP engine_build_info Engine build.\n# TYPE engine_build_info gauge\n\
         engine_build_info{version=\"1.2\"} 1.0\n"
        .to_owned()
        + &expected_totals();
    assert_eq!(sorted_families(&after), sorted_families(&expected_after));
}

/// `text` with its families (each a `# HELP` line and what follows) sorted, to compare
/// expositions family by family.
fn sorted_families(text: &str) -> String {
    let mut families: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") {
            families.push(String::new());
        }
        let family = families.last_mut().expect("text starts with # HELP");
        family.push_str(line);
        family.push('\n');
    }
    families.sort();
    families.concat()
}
