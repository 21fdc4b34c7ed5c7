//! End to end with a real Prometheus server: Debian's `prometheus` package (2.42 on
//! Debian 12) scrapes `shmetrics serve` over a directory written by `shmetrics generate`,
//! and PromQL over its HTTP API must return exactly the values the writers wrote.
//!
//! # How it runs
//!
//! 1. `shmetrics generate --stay` starts [`PROCESSES`] writer processes that each do
//!    [`OPS`] rounds of the deterministic `gen` workload over [`SERIES`] series and stay
//!    alive (so their `livesum` gauges count).
//! 2. Two `shmetrics serve` processes serve that directory on `127.0.0.1:0`: one with the
//!    default `--format auto` (negotiated from `Accept`), one with `--format prometheus`.
//! 3. One Prometheus server, on a free loopback port with its own temporary data
//!    directory, scrapes both every second: job `openmetrics` scrapes the first, job
//!    `text` the second. Its configuration is written by this test; it reaches nothing but
//!    the two loopback targets (no alerting, remote storage or service discovery).
//! 4. The test polls `/api/v1/query` (bounded) until both jobs have been scraped at least
//!    twice, then checks every `gen` family per job with exact values.
//! 5. Prometheus, both servers and the writers are stopped by pid (SIGTERM, bounded wait,
//!    then SIGKILL); guards do the same when the test fails. The whole test fails after
//!    [`TEST_LIMIT`].
//!
//! # One pass in OpenMetrics, one in text
//!
//! Prometheus 2.42 cannot be told which format to ask for (`scrape_protocols` arrived in
//! 2.49). It always sends
//! `Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1`
//! (with `--enable-feature=native-histograms` it puts protobuf first, and still prefers
//! OpenMetrics over text). So the `openmetrics` job exercises the real negotiation, and
//! the `text` job scrapes a server started with `--format prometheus`, which answers text
//! 0.0.4 (`Content-Type: text/plain; version=0.0.4`) whatever the `Accept` header says;
//! Prometheus picks its parser from that `Content-Type`.
//!
//! That each job really got the format it is meant to is checked through Prometheus
//! itself: `serve` counts every body it renders in
//! `shmetrics_scrape_duration_seconds_count{format=...}`, which Prometheus scrapes too.
//! For job `openmetrics` the `openmetrics` count must be at least 1 and the `prometheus`
//! count 0, and the reverse for job `text`. (Nothing else talks to these servers.)
//!
//! # Requirements
//!
//! The `prometheus` server binary (on `PATH`, or `/usr/bin/prometheus`). README's test
//! command (`ci/test.sh`) installs Debian's package and sets
//! `SHMETRICS_REQUIRE_VALIDATORS=1`, which turns a missing binary into a failure instead
//! of a skipped test.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "support/e2e.rs"]
mod e2e;

use e2e::*;

#[test]
fn prometheus_scrapes_exact_values_in_openmetrics_and_text() {
    let started = Instant::now();
    let deadline = Deadline(started + TEST_LIMIT);
    let Some(binary) = prometheus_or_skip() else {
        return;
    };

    let work = tempfile::tempdir().expect("temporary directory");
    let dir = work.path().join("metrics");
    std::fs::create_dir(&dir).unwrap();

    let mut writers = Writers::start(&dir);
    let (mut serve_auto, auto_addr) =
        start_serve(&dir, &[], work.path().join("serve-auto.log"), deadline);
    let (mut serve_text, text_addr) = start_serve(
        &dir,
        &["--format", "prometheus"],
        work.path().join("serve-text.log"),
        deadline,
    );
    let jobs = [("openmetrics", auto_addr), ("text", text_addr)];
    let config = work.path().join("prometheus.yml");
    std::fs::write(&config, prometheus_config(&jobs)).unwrap();
    let (proc, addr) = start_prometheus(&binary, &config, work.path(), &[], deadline);
    let mut prom = Prometheus { addr, proc };

    // Wait until each job has been scraped at least twice: a body counts the renderings
    // before it, so a count of 1 is seen from the second scrape on. This also shows which
    // format each job got (see the module docs).
    for (job, format, other) in [
        ("openmetrics", "openmetrics", "prometheus"),
        ("text", "prometheus", "openmetrics"),
    ] {
        let count = |f: &str| {
            format!("shmetrics_scrape_duration_seconds_count{{job=\"{job}\",format=\"{f}\"}}")
        };
        prom.wait_for(&count(format), 1.0, deadline);
        assert_eq!(
            prom.value(&count(other)),
            0.0,
            "job {job} got only {format}"
        );
    }
    deadline.check("waiting for the scrapes");

    for (job, target) in jobs {
        check_job(&prom, job, target);
    }
    // Both jobs saw the same data, series by series.
    assert_eq!(
        prom.value(
            "count(gen_c0_total{job=\"openmetrics\"} == ignoring(job, instance) gen_c0_total{job=\"text\"})"
        ),
        series_in_family(SERIES, 0) as f64
    );

    // Stop everything by pid, each required to exit cleanly on SIGTERM.
    prom.proc.stop_cleanly();
    serve_auto.stop_cleanly();
    serve_text.stop_cleanly();
    let pids = writers.0.clone();
    assert_eq!(writers.stop(), Vec::<i32>::new(), "writers needed SIGKILL");
    for pid in pids {
        assert!(!running(pid), "writer {pid} still running");
    }
    deadline.check("stopping the processes");
    eprintln!("end-to-end test took {:?}", started.elapsed());
}

/// Exemplars of series that two processes write: `/api/v1/query_exemplars` of a
/// Prometheus with exemplar storage, scraping `serve` in OpenMetrics, returns the newest of
/// either process per counter and per bucket, labels and values intact.
#[test]
fn prometheus_stores_the_exemplars_of_every_process() {
    use shmetrics_writer::{Options, Registry};

    let deadline = Deadline(Instant::now() + TEST_LIMIT);
    let Some(binary) = prometheus_or_skip() else {
        return;
    };
    let work = tempfile::tempdir().expect("temporary directory");
    let dir = work.path().join("metrics");
    std::fs::create_dir(&dir).unwrap();
    // Two writer processes, simulated in this one (each holds its segment's lock).
    let a = Registry::open_simulating_pid(&dir, Options::default(), 1).unwrap();
    let b = Registry::open_simulating_pid(&dir, Options::default(), 2).unwrap();
    let requests = |r: &Registry| r.counter("ex_requests", "Requests.", &["route"]).unwrap();
    let latency = |r: &Registry| {
        (r.histogram("ex_latency_seconds", "Latency.", &["route"], &[0.1, 1.0])).unwrap()
    };
    requests(&a)
        .labels(["/a"])
        .unwrap()
        .inc_by_with_exemplar(1.0, &[("trace_id", "a-1")])
        .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    requests(&b)
        .labels(["/a"])
        .unwrap()
        .inc_by_with_exemplar(2.0, &[("trace_id", "b-1"), ("span_id", "s-1")])
        .unwrap();
    let fast = latency(&a);
    fast.labels(["/a"])
        .unwrap()
        .observe_with_exemplar(0.05, &[("trace_id", "a-fast")])
        .unwrap();
    latency(&b)
        .labels(["/a"])
        .unwrap()
        .observe_with_exemplar(0.5, &[("trace_id", "b-slow")])
        .unwrap();

    let (mut serve, serve_addr) = start_serve(&dir, &[], work.path().join("serve.log"), deadline);
    let config = work.path().join("prometheus.yml");
    std::fs::write(&config, prometheus_config(&[("exemplars", serve_addr)])).unwrap();
    let extra = ["--enable-feature=exemplar-storage"];
    let (proc, addr) = start_prometheus(&binary, &config, work.path(), &extra, deadline);
    let mut prom = Prometheus { addr, proc };
    prom.wait_for("ex_requests_total", 3.0, deadline);

    // Per series (as `name{le}`), the exemplars Prometheus stored: (labels, value).
    type Stored = BTreeMap<String, Vec<(BTreeMap<String, String>, f64)>>;
    let stored = || -> Result<Stored, String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let query = url_encode("{__name__=~\"ex_.*\"}");
        let path = format!(
            "/api/v1/query_exemplars?query={query}&start={}&end={}",
            now - 600,
            now + 600
        );
        let (status, body) = http_get(addr, &path)?;
        if status != 200 {
            return Err(format!("HTTP {status}: {body}"));
        }
        let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let mut out = BTreeMap::new();
        for series in json["data"].as_array().ok_or(body.clone())? {
            let labels = &series["seriesLabels"];
            let name = format!(
                "{}{}",
                labels["__name__"].as_str().unwrap_or_default(),
                labels["le"]
                    .as_str()
                    .map(|le| format!("{{le={le}}}"))
                    .unwrap_or_default()
            );
            let exemplars = (series["exemplars"].as_array().into_iter().flatten())
                .map(|e| {
                    let labels = (e["labels"].as_object().into_iter().flatten())
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect();
                    let value = e["value"].as_str().and_then(|v| v.parse().ok());
                    (labels, value.unwrap_or(f64::NAN))
                })
                .collect();
            out.insert(name, exemplars);
        }
        Ok(out)
    };
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let expected = BTreeMap::from([
        (
            "ex_latency_seconds_bucket{le=0.1}".to_owned(),
            vec![(labels(&[("trace_id", "a-fast")]), 0.05)],
        ),
        (
            "ex_latency_seconds_bucket{le=1.0}".to_owned(),
            vec![(labels(&[("trace_id", "b-slow")]), 0.5)],
        ),
        (
            "ex_requests_total".to_owned(),
            vec![(labels(&[("trace_id", "b-1"), ("span_id", "s-1")]), 2.0)],
        ),
    ]);
    loop {
        let got = stored();
        if got.as_ref().is_ok_and(|got| *got == expected) {
            break;
        }
        assert!(
            Instant::now() < deadline.0,
            "exemplars stored: {got:?}, expected {expected:?}\n{}",
            prom.proc.log_tail()
        );
        std::thread::sleep(POLL);
    }
    prom.proc.stop_cleanly();
    serve.stop_cleanly();
}

// ---------------------------------------------------------------------------------------
// The demo, as Prometheus sees it.
// ---------------------------------------------------------------------------------------

/// Starts `shmetrics demo` on `127.0.0.1:0` with `extra` arguments and returns it with the
/// address its banner gives (`serving http://ADDR/metrics (listening on ...)`).
fn start_demo(extra: &[&str], log: PathBuf, deadline: Deadline) -> (Proc, SocketAddr) {
    let mut cmd = Command::new(BIN);
    cmd.args(["demo", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env_remove("DYN_SYSTEM_PORT");
    start_listening("demo", cmd, log, deadline, |rest| {
        rest.split_once("/metrics ").map(|(addr, _)| addr)
    })
}

/// A query and its value, borrowed for the assertions.
fn r(x: &(String, f64)) -> (&str, f64) {
    (x.0.as_str(), x.1)
}

/// Asserts `a <= b * (1 + slack)`, naming both.
fn at_most(a: (&str, f64), b: (&str, f64), slack: f64) {
    assert!(
        a.1 <= b.1 * (1.0 + slack),
        "{} = {} exceeds {} = {}",
        a.0,
        a.1,
        b.0,
        b.1
    );
}

/// Asserts `lo <= v.1 <= hi`.
fn within(v: (&str, f64), lo: f64, hi: f64) {
    assert!(
        (lo..=hi).contains(&v.1),
        "{} = {} is outside [{lo}, {hi}]",
        v.0,
        v.1
    );
}

/// The demo's engines follow a request model whose quantities agree: Prometheus's own
/// `histogram_quantile` and ratios of `_sum` and `_count` over a real scrape of the demo
/// give prefill <= time to first token <= end-to-end latency, inter-token latency x output
/// tokens ~ decode time, running requests ~ arrival rate x time in the engine, and the
/// values of an 8B model (tens of ms to first token, ~10 ms per token, hundreds of tokens
/// per request). With `--lmcache`, LMCache's families sit beside vLLM's and agree with them.
#[test]
fn prometheus_sees_a_coherent_demo() {
    let started = Instant::now();
    let deadline = Deadline(started + TEST_LIMIT);
    let Some(binary) = prometheus_or_skip() else {
        return;
    };
    let work = tempfile::tempdir().expect("temporary directory");
    let (mut demo, target) = start_demo(
        &[
            "--engines",
            "2",
            "--rate",
            "15",
            "--lmcache",
            "--duration",
            "85",
        ],
        work.path().join("demo.log"),
        deadline,
    );
    let config = work.path().join("prometheus.yml");
    std::fs::write(&config, prometheus_config(&[("demo", target)])).unwrap();
    let (proc, addr) = start_prometheus(&binary, &config, work.path(), &[], deadline);
    let prom = Prometheus { addr, proc };

    // 30 scrapes (30 s) of two engines at 15 requests/s: ~900 requests finished.
    prom.wait_for("count_over_time(up{job=\"demo\"}[5m])", 30.0, deadline);
    let v = |promql: &str| -> (String, f64) { (promql.to_owned(), prom.value(promql)) };
    let q = |quantile: f64, family: &str| {
        v(&format!(
            "histogram_quantile({quantile}, sum by (le) (rate(vllm:{family}_bucket[5m])))"
        ))
    };
    let mean = |family: &str| {
        v(&format!(
            "sum(vllm:{family}_sum) / sum(vllm:{family}_count)"
        ))
    };

    // Quantiles of the per-request intervals, which share their buckets: each request's
    // prefill <= its inference time <= its end-to-end latency, so the quantiles too.
    for quantile in [0.5, 0.9, 0.99] {
        let prefill = q(quantile, "request_prefill_time_seconds");
        let decode = q(quantile, "request_decode_time_seconds");
        let queue = q(quantile, "request_queue_time_seconds");
        let inference = q(quantile, "request_inference_time_seconds");
        let e2e = q(quantile, "e2e_request_latency_seconds");
        at_most(r(&prefill), r(&inference), 1e-9);
        at_most(r(&decode), r(&inference), 1e-9);
        at_most(r(&inference), r(&e2e), 1e-9);
        at_most(r(&queue), r(&e2e), 1e-9);
        let ttft = q(quantile, "time_to_first_token_seconds");
        at_most(r(&ttft), r(&e2e), 1e-9);
    }
    // The ranges of an 8B model on one GPU, lightly loaded.
    within(r(&q(0.9, "time_to_first_token_seconds")), 0.01, 2.0);
    within(r(&q(0.5, "time_to_first_token_seconds")), 0.005, 0.5);
    within(r(&q(0.5, "inter_token_latency_seconds")), 0.005, 0.05);
    within(r(&q(0.9, "e2e_request_latency_seconds")), 1.0, 30.0);
    within(r(&mean("request_generation_tokens")), 100.0, 1000.0);
    within(r(&mean("request_prompt_tokens")), 300.0, 3000.0);
    within(r(&v("max(vllm:kv_cache_usage_perc)")), 1e-4, 0.9);

    // Time to first token = queue + prefill, on average (requests still running have a
    // first token and no queue or prefill observation yet: a few percent).
    let ttft = mean("time_to_first_token_seconds");
    let queue = mean("request_queue_time_seconds");
    let prefill = mean("request_prefill_time_seconds");
    at_most(r(&prefill), r(&ttft), 0.1);
    within(
        (
            "(queue + prefill) / time to first token",
            (queue.1 + prefill.1) / ttft.1,
        ),
        0.85,
        1.15,
    );
    // Inter-token latency x output tokens ~ decode time.
    let itl = mean("inter_token_latency_seconds");
    let output = mean("request_generation_tokens");
    let decode = mean("request_decode_time_seconds");
    within(
        (
            "ITL x (output tokens - 1) / decode time",
            itl.1 * (output.1 - 1.0) / decode.1,
        ),
        0.8,
        1.25,
    );
    // Little's law: requests in the batch = completion rate x time in the engine.
    // (Over the last 20 s: `rate` over a window longer than the data would extrapolate
    // to the window's length.)
    let running = v("sum(avg_over_time(vllm:num_requests_running[20s]))");
    let rate = v("sum(rate(vllm:request_success_total[20s]))");
    let inference = mean("request_inference_time_seconds");
    within(
        (
            "running / (rate x inference time)",
            running.1 / (rate.1 * inference.1),
        ),
        0.65,
        1.35,
    );
    within(r(&rate), 20.0, 40.0);
    eprintln!(
        "demo through Prometheus: p90 TTFT {:.3} s, p50 ITL {:.4} s, p90 e2e {:.2} s, mean output {:.0} tokens, \
         {:.1} requests/s, running {:.1} vs rate x inference {:.1}",
        q(0.9, "time_to_first_token_seconds").1,
        q(0.5, "inter_token_latency_seconds").1,
        q(0.9, "e2e_request_latency_seconds").1,
        output.1,
        rate.1,
        running.1,
        rate.1 * inference.1
    );
    // README's PromQL examples, as printed, each give one value.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let promql = readme
        .split("```promql\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a promql block in README");
    let mut examples = 0;
    for line in promql.lines().filter(|l| !l.trim().is_empty()) {
        within((line, prom.value(line)), 1e-6, 1e6);
        examples += 1;
    }
    assert_eq!(examples, 2, "{promql}");
    // Below saturation nothing waits long.
    within(r(&q(0.9, "request_queue_time_seconds")), 0.0, 0.3);

    // LMCache: both engines' worker rank 0 share a label set, merged into one series, and
    // it counts (up to its 10 s publication lag) the tokens vLLM loaded from it.
    let lmcache_hits = v("lmcache:num_hit_tokens_total");
    let vllm_hits = v("sum(vllm:external_prefix_cache_hits_total)");
    assert!(lmcache_hits.1 > 0.0, "{lmcache_hits:?}");
    at_most(r(&lmcache_hits), r(&vllm_hits), 0.0);
    within(r(&v("lmcache:retrieve_hit_rate")), 0.0, 1.0);
    assert_eq!(v("count(dynamo_component_requests_total)").1, 1.0);

    drop(prom);
    demo.stop_cleanly();
    eprintln!("demo end-to-end test took {:?}", started.elapsed());
}

#[test]
fn split_rule_and_bucket_counts() {
    // The expectations above rest on these; spelled out for the values used.
    let counts: Vec<usize> = (0..15).map(|j| series_in_family(SERIES, j)).collect();
    assert_eq!(counts, [3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2]);
    assert_eq!(counts.iter().sum::<usize>(), SERIES);
    // Series 1, rounds 0..7: buckets 1..=7 get one observation per process each.
    let cumulative: Vec<f64> = (0..=20).map(|k| bucket_count(3, 7, 1, k)).collect();
    let mut want = vec![0.0, 3.0, 6.0, 9.0, 12.0, 15.0, 18.0];
    want.resize(21, 21.0);
    assert_eq!(cumulative, want);
}
