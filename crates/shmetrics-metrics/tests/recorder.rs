//! The `metrics` facade recorder in one process: what the macros write, as the reader
//! renders it, exactly; names, labels, descriptions, buckets and gauge modes; keys that
//! cannot be recorded. Several processes are simulated with `open_simulating_pid`; the real
//! multi-process test is `multiprocess.rs`.

use std::path::Path;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
    with_local_recorder,
};
use shmetrics_metrics::{
    BucketError, BucketRule, Error, GaugeMode, Options, Registry, ShmetricsRecorder, Stats,
    StripeRule,
};
use shmetrics_reader::inspect::{RecordEntry, inspect};
use shmetrics_reader::{PrefixFilter, Reader};

#[path = "../../shmetrics/tests/support/mod.rs"]
mod support;
use support::checked_scrape;

/// The whole directory rendered as Prometheus text, checked by promtool and for
/// duplicate families.
fn scrape(dir: &Path) -> String {
    checked_scrape(
        &mut Reader::open(dir).unwrap(),
        &PrefixFilter::default(),
        "the facade recorder's directory",
    )
}

fn recorder(dir: &Path) -> ShmetricsRecorder {
    ShmetricsRecorder::open(dir).unwrap()
}

#[test]
fn macros_write_the_families_the_reader_renders() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = ShmetricsRecorder::builder()
        .buckets_for_metric("engine.latency", &[0.5, 1.0, f64::INFINITY])
        .buckets_for_prefix("engine.", &[10.0])
        .gauge_mode_for_prefix("engine_config_", GaugeMode::MostRecent)
        .open(dir.path())
        .unwrap();
    with_local_recorder(&recorder, || {
        describe_counter!("engine_requests_total", "Requests served.");
        describe_histogram!("engine.latency", Unit::Seconds, "Request latency.");
        describe_gauge!("engine_running", "Requests running.");

        // A handle kept across calls, and the macro called every time.
        let requests = counter!("engine_requests_total", "model" => "llama", "phase" => "prefill");
        requests.increment(1);
        for _ in 0..4 {
            counter!("engine_requests_total", "model" => "llama", "phase" => "prefill")
                .increment(2);
        }
        // Same label names in another order: the same family, the values put in its order.
        counter!("engine_requests_total", "phase" => "decode", "model" => "llama").increment(7);
        counter!("engine_requests", "model" => "qwen", "phase" => "decode").increment(1);

        for v in [0.25, 0.5, 0.75, 3.0] {
            histogram!("engine.latency").record(v);
        }
        histogram!("engine.queue").record_many(2.0, 3);
        histogram!("other_seconds").record(0.007);

        let running = gauge!("engine_running");
        running.increment(3.0);
        running.decrement(1.0);
        gauge!("engine_config_max_batch").set(64.0);
    });
    assert_eq!(
        recorder.stats(),
        Stats {
            families: 6,
            keys: 8,
            rejected_keys: 0,
            late_descriptions: 0,
        }
    );
    let expected = "\
# HELP engine_config_max_batch engine_config_max_batch
# TYPE engine_config_max_batch gauge
engine_config_max_batch 64.0
# HELP engine_latency Request latency.
# TYPE engine_latency histogram
engine_latency_bucket{le=\"0.5\"} 2
engine_latency_bucket{le=\"1.0\"} 3
engine_latency_bucket{le=\"+Inf\"} 4
engine_latency_count 4
engine_latency_sum 4.5
# HELP engine_queue engine_queue
# TYPE engine_queue histogram
engine_queue_bucket{le=\"10.0\"} 3
engine_queue_bucket{le=\"+Inf\"} 3
engine_queue_count 3
engine_queue_sum 6.0
# HELP engine_requests_total Requests served.
# TYPE engine_requests_total counter
engine_requests_total{model=\"llama\",phase=\"decode\"} 7.0
engine_requests_total{model=\"llama\",phase=\"prefill\"} 9.0
engine_requests_total{model=\"qwen\",phase=\"decode\"} 1.0
# HELP engine_running Requests running.
# TYPE engine_running gauge
engine_running 2.0
# HELP other_seconds other_seconds
# TYPE other_seconds histogram
other_seconds_bucket{le=\"0.005\"} 0
other_seconds_bucket{le=\"0.01\"} 1
other_seconds_bucket{le=\"0.025\"} 1
other_seconds_bucket{le=\"0.05\"} 1
other_seconds_bucket{le=\"0.075\"} 1
other_seconds_bucket{le=\"0.1\"} 1
other_seconds_bucket{le=\"0.25\"} 1
other_seconds_bucket{le=\"0.5\"} 1
other_seconds_bucket{le=\"0.75\"} 1
other_seconds_bucket{le=\"1.0\"} 1
other_seconds_bucket{le=\"2.5\"} 1
other_seconds_bucket{le=\"5.0\"} 1
other_seconds_bucket{le=\"7.5\"} 1
other_seconds_bucket{le=\"10.0\"} 1
other_seconds_bucket{le=\"+Inf\"} 1
other_seconds_count 1
other_seconds_sum 0.007
";
    assert_eq!(scrape(dir.path()), expected);

    // The modes the rules chose: registering the same definition again succeeds only
    // with the mode the family has.
    let registry = recorder.registry();
    let max_batch = "engine_config_max_batch";
    assert!(
        registry
            .gauge(max_batch, max_batch, &[], GaugeMode::MostRecent)
            .is_ok()
    );
    assert!(
        registry
            .gauge(max_batch, max_batch, &[], GaugeMode::LiveSum)
            .is_err()
    );
    let running = ("engine_running", "Requests running.");
    assert!(
        registry
            .gauge(running.0, running.1, &[], GaugeMode::LiveSum)
            .is_ok()
    );
    assert!(
        registry
            .gauge(running.0, running.1, &[], GaugeMode::MostRecent)
            .is_err()
    );
}

#[test]
fn unit_suffixes_come_from_descriptions_given_before_first_use() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = ShmetricsRecorder::builder()
        .unit_suffix(true)
        .buckets(&[1.0])
        .open(dir.path())
        .unwrap();
    with_local_recorder(&recorder, || {
        describe_histogram!("rpc_latency", Unit::Seconds, "RPC latency.");
        describe_counter!("sent_total", Unit::Bytes, "Bytes sent.");
        describe_gauge!("queue", Unit::Count, "Queued items.");
        histogram!("rpc_latency").record(0.5);
        counter!("sent_total").increment(1500);
        gauge!("queue").set(3.0);
    });
    assert_eq!(
        scrape(dir.path()),
        "\
# HELP queue Queued items.
# TYPE queue gauge
queue 3.0
# HELP rpc_latency_seconds RPC latency.
# TYPE rpc_latency_seconds histogram
rpc_latency_seconds_bucket{le=\"1.0\"} 1
rpc_latency_seconds_bucket{le=\"+Inf\"} 1
rpc_latency_seconds_count 1
rpc_latency_seconds_sum 0.5
# HELP sent_bytes_total Bytes sent.
# TYPE sent_bytes_total counter
sent_bytes_total 1500.0
"
    );
    assert_eq!(recorder.stats().late_descriptions, 0);
}

#[test]
fn a_late_description_is_counted_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = recorder(dir.path());
    with_local_recorder(&recorder, || {
        counter!("jobs_total").increment(1);
        describe_counter!("jobs_total", "Jobs done.");
        // The same text again, and a description of a metric not used yet: not late.
        describe_gauge!("later", "Used later.");
        gauge!("later").set(1.0);
        describe_gauge!("later", "Used later.");
        counter!("jobs_total").increment(1);
    });
    assert_eq!(recorder.stats().late_descriptions, 1);
    assert_eq!(
        scrape(dir.path()),
        "\
# HELP jobs_total jobs
# TYPE jobs_total counter
jobs_total 2.0
# HELP later Used later.
# TYPE later gauge
later 1.0
"
    );
}

#[test]
fn keys_that_cannot_be_recorded_get_noop_handles_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = recorder(dir.path());
    with_local_recorder(&recorder, || {
        counter!("tasks_total", "queue" => "a").increment(1);
        // Another label set for the same name: not recorded, the family is unharmed.
        counter!("tasks_total", "queue" => "a", "worker" => "1").increment(100);
        counter!("tasks_total").increment(100);
        counter!("tasks_total", "pool" => "a").increment(100);
        // A gauge of a counter's name: Prometheus cannot show both.
        gauge!("tasks_total").set(5.0);
        gauge!("tasks").set(5.0);
        // `le` is the bucket label of a histogram.
        histogram!("sizes", "le" => "x").record(1.0);
        // Repeats of a rejected key are served from the map: counted once.
        for _ in 0..3 {
            counter!("tasks_total", "queue" => "a", "worker" => "1").increment(100);
        }
        counter!("tasks_total", "queue" => "b").increment(2);
    });
    let stats = recorder.stats();
    assert_eq!(stats.rejected_keys, 6, "{stats:?}");
    assert_eq!(stats.families, 1, "{stats:?}");
    assert_eq!(
        scrape(dir.path()),
        "\
# HELP tasks_total tasks
# TYPE tasks_total counter
tasks_total{queue=\"a\"} 1.0
tasks_total{queue=\"b\"} 2.0
"
    );
}

#[test]
fn invalid_names_are_made_valid() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = recorder(dir.path());
    with_local_recorder(&recorder, || {
        counter!("http.requests-total", "status.code" => "200", "__meta" => "x").increment(1);
        counter!("http_requests_total", "status_code" => "200", "x_meta" => "x").increment(1);
        gauge!("9lives").set(9.0);
    });
    assert_eq!(recorder.stats().rejected_keys, 0);
    assert_eq!(
        scrape(dir.path()),
        "\
# HELP _9lives _9lives
# TYPE _9lives gauge
_9lives 9.0
# HELP http_requests_total http_requests
# TYPE http_requests_total counter
http_requests_total{status_code=\"200\",x_meta=\"x\"} 2.0
",
        "`http.requests-total` sanitizes to `http_requests_total`: the same series"
    );
}

#[test]
fn absolute_raises_a_counter_and_never_lowers_it() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = recorder(dir.path());
    with_local_recorder(&recorder, || {
        let c = counter!("mirrored_total");
        c.absolute(10);
        c.increment(2);
        c.absolute(5);
        c.absolute(20);
    });
    assert!(scrape(dir.path()).contains("\nmirrored_total 20.0\n"));
}

#[test]
fn invalid_bucket_rules_fail_the_build() {
    let dir = tempfile::tempdir().unwrap();
    for (builder, rule, message) in [
        (
            ShmetricsRecorder::builder().buckets(&[]),
            BucketRule::Default,
            "histogram buckets: default buckets: no finite bucket bound",
        ),
        (
            ShmetricsRecorder::builder().buckets(&[f64::INFINITY]),
            BucketRule::Default,
            "histogram buckets: default buckets: no finite bucket bound",
        ),
        (
            ShmetricsRecorder::builder().buckets_for_metric("x", &[1.0, 0.5]),
            BucketRule::Metric("x".into()),
            "histogram buckets: buckets of x: ",
        ),
        (
            ShmetricsRecorder::builder().buckets_for_prefix("x", &[f64::NAN]),
            BucketRule::Prefix("x".into()),
            "histogram buckets: buckets of prefix x: ",
        ),
    ] {
        match builder.open(dir.path()) {
            Err(e @ Error::Buckets { .. }) => {
                let Error::Buckets { rule: got, reason } = &e else {
                    unreachable!()
                };
                assert_eq!(*got, rule);
                let text = e.to_string();
                assert!(text.starts_with(message), "{text}");
                match rule {
                    BucketRule::Default => assert_eq!(*reason, BucketError::NoFiniteBound),
                    _ => assert!(matches!(reason, BucketError::Invalid(_)), "{reason:?}"),
                }
            }
            other => panic!("{rule}: {other:?}"),
        }
    }
    // A refused configuration opens no segment.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn gauges_merge_across_processes_by_mode() {
    let dir = tempfile::tempdir().unwrap();
    let open = |pid| {
        let registry = Registry::open_simulating_pid(dir.path(), Options::default(), pid).unwrap();
        ShmetricsRecorder::builder()
            .gauge_mode_for_metric("model_loaded", GaugeMode::MostRecent)
            .build(registry)
            .unwrap()
    };
    let (a, b) = (open(101), open(102));
    with_local_recorder(&a, || {
        gauge!("kv_blocks_used").set(30.0);
        gauge!("requests_running").increment(2.0);
        gauge!("model_loaded").set(0.0);
    });
    std::thread::sleep(std::time::Duration::from_millis(2));
    with_local_recorder(&b, || {
        gauge!("kv_blocks_used").set(12.0);
        gauge!("requests_running").increment(1.0);
        gauge!("model_loaded").set(1.0);
    });
    assert_eq!(
        scrape(dir.path()),
        "\
# HELP kv_blocks_used kv_blocks_used
# TYPE kv_blocks_used gauge
kv_blocks_used 42.0
# HELP model_loaded model_loaded
# TYPE model_loaded gauge
model_loaded 1.0
# HELP requests_running requests_running
# TYPE requests_running gauge
requests_running 3.0
"
    );
}

#[test]
fn handles_from_several_threads_count_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = recorder(dir.path());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let recorder = recorder.clone();
            std::thread::spawn(move || {
                with_local_recorder(&recorder, || {
                    for i in 0..5000u64 {
                        let model = if i % 2 == 0 { "a" } else { "b" };
                        counter!("ops_total", "model" => model).increment(1);
                        histogram!("op_size", "thread" => (t % 2).to_string())
                            .record((i % 4) as f64);
                    }
                })
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let text = scrape(dir.path());
    assert!(text.contains("ops_total{model=\"a\"} 10000.0\nops_total{model=\"b\"} 10000.0\n"));
    // Per thread label: 2 threads × 5000 observations of 0, 1, 2, 3 in turn.
    for t in ["0", "1"] {
        assert!(
            text.contains(&format!("op_size_count{{thread=\"{t}\"}} 10000\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("op_size_sum{{thread=\"{t}\"}} 15000.0\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "op_size_bucket{{thread=\"{t}\",le=\"1.0\"}} 5000\n"
            )),
            "{text}"
        );
    }
    assert_eq!(recorder.stats().keys, 4);
}

/// Writes, from 4 threads at once, 2,000 increments and observations each into the counter
/// and histogram of `pool.` and into `other_total` and `other_seconds`, through `recorder`.
fn write_from_four_threads(recorder: &ShmetricsRecorder) {
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let recorder = recorder.clone();
            std::thread::spawn(move || {
                with_local_recorder(&recorder, || {
                    let (requests, latency) = (
                        counter!("pool.requests", "model" => "a"),
                        histogram!("pool.latency", "model" => "a"),
                    );
                    for i in 0..2000u64 {
                        requests.increment(1);
                        latency.record(((i + t) % 4) as f64 * 0.25);
                        counter!("other_total").increment(1);
                        histogram!("other_seconds").record(0.5);
                    }
                })
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Series records in the segments of `dir`.
fn series_records(dir: &Path) -> usize {
    (std::fs::read_dir(dir).unwrap())
        .map(|e| inspect(&e.unwrap().path()).unwrap())
        .flat_map(|dump| dump.records)
        .filter(|r| matches!(r.entry, RecordEntry::Series { .. }))
        .count()
}

#[test]
fn striped_metrics_show_what_unstriped_ones_do() {
    let (striped_dir, plain_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let striped = ShmetricsRecorder::builder()
        .stripes_for_prefix("pool.", 4)
        .stripes_for_metric("pool.requests", 2)
        .open(striped_dir.path())
        .unwrap();
    write_from_four_threads(&striped);
    write_from_four_threads(&recorder(plain_dir.path()));

    let text = scrape(striped_dir.path());
    assert_eq!(text, scrape(plain_dir.path()));
    assert!(
        text.contains("pool_requests_total{model=\"a\"} 8000.0\n"),
        "{text}"
    );
    assert!(
        text.contains("pool_latency_count{model=\"a\"} 8000\n"),
        "{text}"
    );
    assert!(
        text.contains("pool_latency_sum{model=\"a\"} 3000.0\n"),
        "{text}"
    );
    assert!(text.contains("other_total 8000.0\n"), "{text}");
    assert!(text.contains("other_seconds_count 8000\n"), "{text}");
    assert_eq!(striped.stats().rejected_keys, 0);
    // The exact rule beats the prefix: 2 copies of the counter, 4 of the histogram, 1 of
    // each unmatched metric.
    assert_eq!(series_records(striped_dir.path()), 2 + 4 + 1 + 1);
    assert_eq!(series_records(plain_dir.path()), 4);
}

#[test]
fn invalid_stripe_rules_fail_the_build() {
    let dir = tempfile::tempdir().unwrap();
    for (builder, rule, stripes, message) in [
        (
            ShmetricsRecorder::builder().stripes(0),
            StripeRule::Default,
            0,
            "stripes: default stripes: 0 is not a power of two from 1 to 64",
        ),
        (
            ShmetricsRecorder::builder().stripes_for_metric("x", 3),
            StripeRule::Metric("x".into()),
            3,
            "stripes: stripes of x: 3 is not a power of two from 1 to 64",
        ),
        (
            ShmetricsRecorder::builder()
                .stripes_for_prefix("x", 128)
                .stripes(6),
            StripeRule::Prefix("x".into()),
            128,
            "stripes: stripes of prefix x: 128 is not a power of two from 1 to 64",
        ),
    ] {
        match builder.open(dir.path()) {
            Err(e @ Error::Stripes { .. }) => {
                assert_eq!(e.to_string(), message);
                assert!(
                    matches!(&e, Error::Stripes { rule: r, stripes: n } if *r == rule && *n == stripes),
                    "{e:?}"
                );
            }
            other => panic!("{rule}: {other:?}"),
        }
    }
    // A refused configuration opens no segment.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // Every allowed count builds.
    for n in [1, 2, 64] {
        assert!(
            ShmetricsRecorder::builder()
                .stripes(n)
                .open(dir.path())
                .is_ok()
        );
    }
}

#[test]
fn a_stripe_count_the_registry_already_has_otherwise_rejects_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    // Registered directly, unstriped, with what the facade would give it otherwise.
    let direct = registry
        .histogram(
            "pool_latency",
            "pool_latency",
            &[],
            &shmetrics_metrics::DEFAULT_BUCKETS,
        )
        .unwrap();
    let recorder = ShmetricsRecorder::builder()
        .stripes_for_metric("pool_latency", 4)
        .build(registry)
        .unwrap();
    with_local_recorder(&recorder, || histogram!("pool_latency").record(1.0));
    assert_eq!(recorder.stats().rejected_keys, 1);
    assert_eq!(
        direct
            .unlabelled()
            .unwrap()
            .get()
            .buckets
            .iter()
            .sum::<u64>(),
        0
    );
    // The same rule on a fresh registry records.
    let other = tempfile::tempdir().unwrap();
    let recorder = ShmetricsRecorder::builder()
        .stripes_for_metric("pool_latency", 4)
        .open(other.path())
        .unwrap();
    with_local_recorder(&recorder, || histogram!("pool_latency").record(1.0));
    assert_eq!(recorder.stats().rejected_keys, 0);
    assert!(scrape(other.path()).contains("\npool_latency_count 1\n"));
}
