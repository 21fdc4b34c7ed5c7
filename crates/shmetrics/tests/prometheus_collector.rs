//! The tikv `prometheus` crate collector: a worker's own registry plus the engines'
//! metrics directory, rendered together, filtered, with every family name once.
//!
//! The directory is written by two simulated engine processes (`open_simulating_pid`), so
//! the expected values are exact merges across processes.

use prometheus::{CounterVec, Gauge, Histogram, HistogramOpts, Opts, Registry, TextEncoder};
use shmetrics::PrefixFilter;
use shmetrics::prometheus_collector::{
    CLASHES_FAMILY, DirCollector, gather_with_host, render_with_host,
};
use shmetrics_writer::{GaugeMode, Options};

mod support;
use support::engines::{
    assert_clashing_histogram_left_out, start_engines, vllm_filter, write_info_and_stateset,
};
use support::{assert_type_lines_unique, promtool_check};

/// The worker's own registry: two `dynamo_` families and a gauge whose name the engines
/// also write.
fn host() -> Registry {
    let host = Registry::new();
    let requests = CounterVec::new(
        Opts::new("dynamo_component_requests_total", "Requests served."),
        &["endpoint"],
    )
    .unwrap();
    host.register(Box::new(requests.clone())).unwrap();
    requests.with_label_values(&["generate"]).inc_by(4.0);

    let duration = Histogram::with_opts(
        HistogramOpts::new(
            "dynamo_component_request_duration_seconds",
            "Request duration.",
        )
        .buckets(vec![0.5, 1.0]),
    )
    .unwrap();
    host.register(Box::new(duration.clone())).unwrap();
    duration.observe(0.25);
    duration.observe(0.75);

    let running = Gauge::new(
        "vllm:num_requests_running",
        "Requests running, as the worker counts them.",
    )
    .unwrap();
    host.register(Box::new(running.clone())).unwrap();
    running.set(99.0);
    host
}

const ENGINE_FAMILIES: &str = "\
# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{model_name=\"m\",le=\"0.25\"} 1
vllm:e2e_request_latency_seconds_bucket{model_name=\"m\",le=\"1\"} 3
vllm:e2e_request_latency_seconds_bucket{model_name=\"m\",le=\"4\"} 4
vllm:e2e_request_latency_seconds_bucket{model_name=\"m\",le=\"+Inf\"} 5
vllm:e2e_request_latency_seconds_sum{model_name=\"m\"} 11.125
vllm:e2e_request_latency_seconds_count{model_name=\"m\"} 5
# HELP vllm:engine_up Engine process is up.
# TYPE vllm:engine_up gauge
vllm:engine_up{pid=\"1001\"} 1
vllm:engine_up{pid=\"1002\"} 1
";

const ENGINE_FAMILIES_AFTER_RUNNING: &str = "\
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name=\"m\"} 7
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{model_name=\"m\"} 42
vllm:prompt_tokens_total{model_name=\"n\"} 1
# HELP vllm:request_queue_time_seconds Time spent in the waiting queue.
# TYPE vllm:request_queue_time_seconds summary
vllm:request_queue_time_seconds_sum{model_name=\"m\"} 2
vllm:request_queue_time_seconds_count{model_name=\"m\"} 2
";

const HOST_FAMILIES: &str = "\
# HELP dynamo_component_request_duration_seconds Request duration.
# TYPE dynamo_component_request_duration_seconds histogram
dynamo_component_request_duration_seconds_bucket{le=\"0.5\"} 1
dynamo_component_request_duration_seconds_bucket{le=\"1\"} 2
dynamo_component_request_duration_seconds_bucket{le=\"+Inf\"} 2
dynamo_component_request_duration_seconds_sum 1
dynamo_component_request_duration_seconds_count 2
# HELP dynamo_component_requests_total Requests served.
# TYPE dynamo_component_requests_total counter
dynamo_component_requests_total{endpoint=\"generate\"} 4
";

const HOST_RUNNING: &str = "\
# HELP vllm:num_requests_running Requests running, as the worker counts them.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running 99
";

fn clashes_family(n: usize) -> String {
    assert_eq!(CLASHES_FAMILY, "shmetrics_collector_clashes");
    format!(
        "# HELP shmetrics_collector_clashes Families of the metrics directory dropped from \
         the last gather because the host registry has a family of the same name.\n\
         # TYPE shmetrics_collector_clashes gauge\nshmetrics_collector_clashes {n}\n"
    )
}

fn encode(families: &[prometheus::proto::MetricFamily]) -> String {
    TextEncoder::new().encode_to_string(families).unwrap()
}

#[test]
fn host_and_directory_render_together_filtered_with_each_family_once() {
    let engines = start_engines();
    let host = host();
    let collector = DirCollector::open(engines.dir.path(), vllm_filter()).unwrap();

    let mut out = Vec::new();
    let gathered = render_with_host(&host, &collector, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();

    // The whole rendering, exactly: host families, the clash gauge, the engine families
    // merged over both processes; the host's `vllm:num_requests_running` (99) in place of
    // the engines' (5); no `process_restarts` (filtered out).
    let expected = format!(
        "{HOST_FAMILIES}{}{ENGINE_FAMILIES}{HOST_RUNNING}{ENGINE_FAMILIES_AFTER_RUNNING}",
        clashes_family(1)
    );
    assert_eq!(text, expected);
    assert_eq!(gathered.clashes, ["vllm:num_requests_running"]);
    assert_eq!(gathered.report.live_segments, 2);
    assert_eq!(gathered.report.dead_segments, 0);
    assert!(!text.contains("process_restarts"));
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("vllm:num_requests_running "))
            .count(),
        1
    );
    assert_type_lines_unique(&text);
    promtool_check(&text, "the collector output");

    // The clash is reported on every gather, not only the first.
    let again = gather_with_host(&host, &collector);
    assert_eq!(again.clashes, ["vllm:num_requests_running"]);
    assert_eq!(encode(&again.families), expected);
}

#[test]
fn without_a_clash_the_gauge_reads_zero_and_every_engine_family_is_emitted() {
    let engines = start_engines();
    let host = Registry::new();
    let collector = DirCollector::open(engines.dir.path(), vllm_filter()).unwrap();
    let gathered = gather_with_host(&host, &collector);
    assert!(gathered.clashes.is_empty());
    let engines_running = "\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running 5
";
    assert_eq!(
        encode(&gathered.families),
        format!(
            "{}{ENGINE_FAMILIES}{engines_running}{ENGINE_FAMILIES_AFTER_RUNNING}",
            clashes_family(0)
        )
    );
}

#[test]
fn a_clashing_sample_name_counts_as_a_clash() {
    let engines = start_engines();
    let host = Registry::new();
    // A host gauge named like the engines' histogram's `_count` sample.
    let g = Gauge::new("vllm:e2e_request_latency_seconds_count", "Host gauge.").unwrap();
    host.register(Box::new(g.clone())).unwrap();
    g.set(1.0);
    let collector = DirCollector::open(engines.dir.path(), vllm_filter()).unwrap();
    let gathered = gather_with_host(&host, &collector);
    assert_eq!(gathered.clashes, ["vllm:e2e_request_latency_seconds"]);
    let text = encode(&gathered.families);
    assert_clashing_histogram_left_out(&text, |n| n.to_string());
}

#[test]
fn registered_directly_in_a_registry_the_collector_yields_the_engine_families() {
    let engines = start_engines();
    let other = start_engines();
    let registry = Registry::new();
    let requests = prometheus::IntCounter::new("dynamo_requests_total", "Requests.").unwrap();
    registry.register(Box::new(requests.clone())).unwrap();
    requests.inc();

    registry
        .register(Box::new(
            DirCollector::open(engines.dir.path(), vllm_filter()).unwrap(),
        ))
        .unwrap();
    let text = encode(&registry.gather());
    assert_eq!(
        text,
        format!(
            "# HELP dynamo_requests_total Requests.\n# TYPE dynamo_requests_total counter\n\
             dynamo_requests_total 1\n{ENGINE_FAMILIES}\
             # HELP vllm:num_requests_running Number of requests in model execution batches.\n\
             # TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 5\n\
             {ENGINE_FAMILIES_AFTER_RUNNING}"
        )
    );
    promtool_check(&text, "the collector output");

    // A collector of the same directory is refused (it would double every series); one
    // of another directory registers beside it.
    let same = DirCollector::open(engines.dir.path(), PrefixFilter::new(["lmcache:"])).unwrap();
    assert!(matches!(
        registry.register(Box::new(same)),
        Err(prometheus::Error::AlreadyReg)
    ));
    registry
        .register(Box::new(
            DirCollector::open(other.dir.path(), PrefixFilter::new(["lmcache:"])).unwrap(),
        ))
        .unwrap();
    assert_eq!(encode(&registry.gather()), text);
}

#[test]
fn excluded_families_are_never_emitted() {
    let engines = start_engines();
    let registry = host();
    // The host knows its own names: the gauge by name, and a counter by its base name.
    let collector = DirCollector::open(engines.dir.path(), vllm_filter())
        .unwrap()
        .exclude(["vllm:num_requests_running", "vllm:prompt_tokens"]);
    let direct: Vec<String> = prometheus::core::Collector::collect(&collector)
        .iter()
        .map(|f| f.name().to_owned())
        .collect();
    assert_eq!(
        direct,
        [
            "vllm:e2e_request_latency_seconds",
            "vllm:engine_up",
            "vllm:num_requests_waiting",
            "vllm:request_queue_time_seconds",
        ]
    );

    registry.register(Box::new(collector)).unwrap();
    let text = encode(&registry.gather());
    assert_type_lines_unique(&text);
    assert!(text.contains(HOST_RUNNING), "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("vllm:num_requests_running "))
            .count(),
        1
    );
    assert!(!text.contains("vllm:prompt_tokens_total"));
    assert!(text.contains(ENGINE_FAMILIES), "{text}");

    // The exposition name of a counter works as well.
    let by_total = DirCollector::open(engines.dir.path(), vllm_filter())
        .unwrap()
        .exclude(["vllm:prompt_tokens_total"]);
    let names: Vec<String> = prometheus::core::Collector::collect(&by_total)
        .iter()
        .map(|f| f.name().to_owned())
        .collect();
    assert!(!names.iter().any(|n| n == "vllm:prompt_tokens_total"));
    assert!(names.iter().any(|n| n == "vllm:num_requests_running"));
}

#[test]
fn self_metrics_describe_the_directory() {
    let engines = start_engines();
    let collector = DirCollector::open(engines.dir.path(), vllm_filter())
        .unwrap()
        .with_self_metrics(true);
    let gathered = gather_with_host(&Registry::new(), &collector);
    let text = encode(&gathered.families);
    assert!(
        text.contains(
            "shmetrics_reader_segments{state=\"bad\"} 0\n\
             shmetrics_reader_segments{state=\"dead\"} 0\n\
             shmetrics_reader_segments{state=\"live\"} 2\n"
        ),
        "{text}"
    );
    assert_type_lines_unique(&text);
    promtool_check(&text, "the collector output");
}

/// A counter `x` and a gauge `x_total` would share an exposition name, and a per-process
/// gauge may not declare its own `pid`: the writer refuses both within a process; across
/// processes the reader keeps the older family and the collector emits it once.
#[test]
fn names_the_directory_would_duplicate_are_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let old =
        shmetrics_writer::Registry::open_simulating_pid(dir.path(), Options::default(), 7).unwrap();
    old.counter("vllm:x", "A counter.", &[])
        .unwrap()
        .unlabelled()
        .unwrap()
        .inc_by(2.0);
    assert!(
        old.gauge("vllm:x_total", "A gauge.", &[], GaugeMode::Sum)
            .is_err()
    );
    assert!(
        old.gauge("vllm:y", "Own pid.", &["pid"], GaugeMode::All)
            .is_err()
    );
    std::thread::sleep(std::time::Duration::from_millis(2));
    let new =
        shmetrics_writer::Registry::open_simulating_pid(dir.path(), Options::default(), 8).unwrap();
    new.gauge("vllm:x_total", "A gauge.", &[], GaugeMode::Sum)
        .unwrap()
        .unlabelled()
        .unwrap()
        .set(9.0);
    let collector = DirCollector::open(dir.path(), vllm_filter()).unwrap();
    let (families, report) = collector.collect_with_report();
    assert_eq!(
        encode(&families),
        "# HELP vllm:x_total A counter.\n# TYPE vllm:x_total counter\nvllm:x_total 2\n"
    );
    assert_eq!(report.conflicts.len(), 1);
    assert_eq!(
        report.conflicts[0].kind,
        shmetrics_reader::ConflictKind::Name
    );
    promtool_check(&encode(&families), "the collector output");
}

#[test]
fn collector_is_usable_from_several_threads() {
    let engines = start_engines();
    let collector =
        std::sync::Arc::new(DirCollector::open(engines.dir.path(), vllm_filter()).unwrap());
    let host = host();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let c = std::sync::Arc::clone(&collector);
            let h = host.clone();
            std::thread::spawn(move || {
                (0..10)
                    .map(|_| encode(&gather_with_host(&h, &c).families))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let expected = format!(
        "{HOST_FAMILIES}{}{ENGINE_FAMILIES}{HOST_RUNNING}{ENGINE_FAMILIES_AFTER_RUNNING}",
        clashes_family(1)
    );
    for h in handles {
        for text in h.join().unwrap() {
            assert_eq!(text, expected);
        }
    }
}

/// Names outside the classic character sets reach the tikv encoder as the classic formats
/// expose them (`my.dotted` as `my_dotted`): it prints names as they are.
#[test]
fn utf8_names_are_exposed_with_underscores() {
    let dir = tempfile::tempdir().unwrap();
    let writer = shmetrics_writer::Registry::open_with(dir.path(), Options::default()).unwrap();
    writer
        .counter("my.dotted", "Dotted.", &["lbl.x"])
        .unwrap()
        .labels(&["v"])
        .unwrap()
        .inc_by(2.0);
    let registry = Registry::new();
    registry
        .register(Box::new(
            DirCollector::open(dir.path(), PrefixFilter::default()).unwrap(),
        ))
        .unwrap();
    let text = encode(&registry.gather());
    assert_eq!(
        text,
        "# HELP my_dotted_total Dotted.\n# TYPE my_dotted_total counter\n\
         my_dotted_total{lbl_x=\"v\"} 2\n"
    );
    promtool_check(&text, "UTF-8 names through the tikv collector");
}

/// An info and a stateset come out as the gauges prometheus_client's text format has them.
#[test]
fn infos_and_statesets_are_gauges_as_in_the_text_format() {
    let dir = tempfile::tempdir().unwrap();
    let _writer = write_info_and_stateset(dir.path());
    let registry = Registry::new();
    registry
        .register(Box::new(
            DirCollector::open(dir.path(), PrefixFilter::new(["build", "phase"])).unwrap(),
        ))
        .unwrap();
    let text = encode(&registry.gather());
    assert_eq!(
        text,
        "# HELP build_info Build.\n# TYPE build_info gauge\n\
         build_info{component=\"api\",version=\"1.0\"} 1\n\
         # HELP phase Phase.\n# TYPE phase gauge\nphase{phase=\"a\"} 0\nphase{phase=\"b\"} 1\n"
    );
    promtool_check(&text, "infos and statesets");
}
