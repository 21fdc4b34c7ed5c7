//! The official `prometheus-client` crate collector: a server's own registry plus the
//! engines' metrics directory, encoded together in both text formats, filtered, every
//! family once.
//!
//! The directory is written by two simulated engine processes (`support::engines`), so the
//! expected values are exact merges across processes.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use shmetrics::prometheus_client_collector::{CLASHES_FAMILY, DirCollector, encode_with_host};
use shmetrics::{Format, PrefixFilter};

mod support;
use support::engines::{
    assert_clashing_histogram_left_out, start_engines, vllm_filter, write_info_and_stateset,
};
use support::{assert_type_lines_unique, promtool_check};

type Labels = Vec<(String, String)>;

/// The server's own registry: two `dynamo_` families and a gauge whose name the engines
/// also write.
fn host() -> Registry {
    let mut host = Registry::default();
    let requests = Family::<Labels, Counter>::default();
    host.register(
        "dynamo_component_requests",
        "Requests served.",
        requests.clone(),
    );
    requests
        .get_or_create(&vec![("endpoint".into(), "generate".into())])
        .inc_by(4);
    let duration = Histogram::new([0.5, 1.0]);
    host.register(
        "dynamo_component_request_duration_seconds",
        "Request duration.",
        duration.clone(),
    );
    duration.observe(0.25);
    duration.observe(0.75);
    let running = Gauge::<i64>::default();
    host.register(
        "vllm:num_requests_running",
        "Requests running, as the worker counts them.",
        running.clone(),
    );
    running.set(99);
    host
}

fn encode(host: &Registry, dir: &DirCollector, format: Format) -> (String, Vec<String>) {
    let mut out = String::new();
    let encoded = encode_with_host(&mut out, host, dir, format).unwrap();
    (out, encoded.clashes)
}

/// The engines' `vllm:num_requests_running`, emitted when the host has no such family.
const OM_ENGINES_RUNNING: &str = "\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running 5.0
";

const OM_HOST: &str = "\
# HELP dynamo_component_requests Requests served..
# TYPE dynamo_component_requests counter
dynamo_component_requests_total{endpoint=\"generate\"} 4
# HELP dynamo_component_request_duration_seconds Request duration..
# TYPE dynamo_component_request_duration_seconds histogram
dynamo_component_request_duration_seconds_sum 1.0
dynamo_component_request_duration_seconds_count 2
dynamo_component_request_duration_seconds_bucket{le=\"0.5\"} 1
dynamo_component_request_duration_seconds_bucket{le=\"1.0\"} 2
dynamo_component_request_duration_seconds_bucket{le=\"+Inf\"} 2
# HELP vllm:num_requests_running Requests running, as the worker counts them..
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running 99
";

const OM_ENGINES: &str = "\
# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_sum{model_name=\"m\"} 11.125
vllm:e2e_request_latency_seconds_count{model_name=\"m\"} 5
vllm:e2e_request_latency_seconds_bucket{le=\"0.25\",model_name=\"m\"} 1
vllm:e2e_request_latency_seconds_bucket{le=\"1.0\",model_name=\"m\"} 3
vllm:e2e_request_latency_seconds_bucket{le=\"4.0\",model_name=\"m\"} 4
vllm:e2e_request_latency_seconds_bucket{le=\"+Inf\",model_name=\"m\"} 5
# HELP vllm:engine_up Engine process is up.
# TYPE vllm:engine_up gauge
vllm:engine_up{pid=\"1001\"} 1.0
vllm:engine_up{pid=\"1002\"} 1.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name=\"m\"} 7.0
# HELP vllm:prompt_tokens Number of prefill tokens processed.
# TYPE vllm:prompt_tokens counter
vllm:prompt_tokens_total{model_name=\"m\"} 42.0
vllm:prompt_tokens_total{model_name=\"n\"} 1.0
# HELP vllm:request_queue_time_seconds_count Time spent in the waiting queue. (count of the summary's observations)
# TYPE vllm:request_queue_time_seconds_count unknown
vllm:request_queue_time_seconds_count{model_name=\"m\"} 2
# HELP vllm:request_queue_time_seconds_sum Time spent in the waiting queue. (sum of the summary's observations)
# TYPE vllm:request_queue_time_seconds_sum unknown
vllm:request_queue_time_seconds_sum{model_name=\"m\"} 2.0
";

const PROM_HOST: &str = "\
# HELP dynamo_component_requests_total Requests served..
# TYPE dynamo_component_requests_total counter
dynamo_component_requests_total{endpoint=\"generate\"} 4
# HELP dynamo_component_request_duration_seconds Request duration..
# TYPE dynamo_component_request_duration_seconds histogram
dynamo_component_request_duration_seconds_bucket{le=\"0.5\"} 1
dynamo_component_request_duration_seconds_bucket{le=\"1\"} 2
dynamo_component_request_duration_seconds_bucket{le=\"+Inf\"} 2
dynamo_component_request_duration_seconds_sum 1.0
dynamo_component_request_duration_seconds_count 2
# HELP vllm:num_requests_running Requests running, as the worker counts them..
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running 99
";

const PROM_ENGINES: &str = "\
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
vllm:engine_up{pid=\"1001\"} 1.0
vllm:engine_up{pid=\"1002\"} 1.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name=\"m\"} 7.0
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{model_name=\"m\"} 42.0
vllm:prompt_tokens_total{model_name=\"n\"} 1.0
# HELP vllm:request_queue_time_seconds_count Time spent in the waiting queue. (count of the summary's observations)
# TYPE vllm:request_queue_time_seconds_count untyped
vllm:request_queue_time_seconds_count{model_name=\"m\"} 2
# HELP vllm:request_queue_time_seconds_sum Time spent in the waiting queue. (sum of the summary's observations)
# TYPE vllm:request_queue_time_seconds_sum untyped
vllm:request_queue_time_seconds_sum{model_name=\"m\"} 2.0
";

fn clashes_family(n: usize, format: Format) -> String {
    assert_eq!(CLASHES_FAMILY, "shmetrics_collector_clashes");
    let eof = match format {
        Format::OpenMetrics => "# EOF\n",
        Format::Prometheus => "",
    };
    format!(
        "# HELP shmetrics_collector_clashes Families of the metrics directory dropped from \
         the last gather because the host registry has a family of the same name.\n\
         # TYPE shmetrics_collector_clashes gauge\nshmetrics_collector_clashes {n}.0\n{eof}"
    )
}

/// The Prometheus text must pass promtool; both formats must name each family once.
fn check(text: &str, format: Format) {
    assert_type_lines_unique(text);
    if format == Format::Prometheus {
        promtool_check(text, "the prometheus-client collector output");
    }
}

#[test]
fn host_and_directory_encode_together_with_each_family_once() {
    let engines = start_engines();
    let host = host();
    let collector = DirCollector::open(engines.dir.path(), vllm_filter()).unwrap();
    for (format, host_text, engines_text) in [
        (Format::OpenMetrics, OM_HOST, OM_ENGINES),
        (Format::Prometheus, PROM_HOST, PROM_ENGINES),
    ] {
        let (text, clashes) = encode(&host, &collector, format);
        // The host's families as prometheus-client writes them (its `vllm:num_requests_running`,
        // 99, in place of the engines', 5), the engine families merged over both processes
        // (no `process_restarts`: filtered out), the clash gauge.
        assert_eq!(
            text,
            format!("{host_text}{engines_text}{}", clashes_family(1, format)),
            "{format:?}"
        );
        assert_eq!(clashes, ["vllm:num_requests_running"]);
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("vllm:num_requests_running "))
                .collect::<Vec<_>>(),
            ["vllm:num_requests_running 99"]
        );
        check(&text, format);
        // On every scrape, not only the first.
        assert_eq!(encode(&host, &collector, format).1, clashes);
    }
}

#[test]
fn without_a_clash_every_engine_family_is_emitted() {
    let engines = start_engines();
    let collector = DirCollector::open(engines.dir.path(), vllm_filter()).unwrap();
    let (text, clashes) = encode(&Registry::default(), &collector, Format::OpenMetrics);
    assert!(clashes.is_empty());
    let (before, after) =
        OM_ENGINES.split_at(OM_ENGINES.find("# HELP vllm:num_requests_waiting").unwrap());
    assert_eq!(
        text,
        format!(
            "{before}{OM_ENGINES_RUNNING}{after}{}",
            clashes_family(0, Format::OpenMetrics)
        )
    );
    check(&text, Format::OpenMetrics);
}

#[test]
fn a_clashing_sample_name_counts_as_a_clash() {
    let engines = start_engines();
    let mut host = Registry::default();
    // A host gauge named like the engines' histogram's `_count` sample.
    let gauge = Gauge::<i64>::default();
    host.register(
        "vllm:e2e_request_latency_seconds_count",
        "Host gauge",
        gauge.clone(),
    );
    gauge.set(1);
    let collector = DirCollector::open(engines.dir.path(), vllm_filter()).unwrap();
    for format in [Format::OpenMetrics, Format::Prometheus] {
        let (text, clashes) = encode(&host, &collector, format);
        assert_eq!(clashes, ["vllm:e2e_request_latency_seconds"]);
        assert_clashing_histogram_left_out(&text, |n| format!("{n}.0"));
    }
}

#[test]
fn registered_directly_with_the_host_names_excluded() {
    let engines = start_engines();
    let mut registry = host();
    // The server knows its own names: the gauge it writes itself is excluded.
    registry.register_collector(Box::new(
        DirCollector::open(engines.dir.path(), vllm_filter())
            .unwrap()
            .exclude(["vllm:num_requests_running"]),
    ));
    let mut om = String::new();
    prometheus_client::encoding::text::encode(&mut om, &registry).unwrap();
    assert_eq!(om, format!("{OM_HOST}{OM_ENGINES}# EOF\n"));
    check(&om, Format::OpenMetrics);
    let mut prom = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut prom, &registry).unwrap();
    assert_eq!(prom, format!("{PROM_HOST}{PROM_ENGINES}"));
    check(&prom, Format::Prometheus);

    // A counter is excluded by its base name or its exposition name.
    for name in ["vllm:prompt_tokens", "vllm:prompt_tokens_total"] {
        let collector = DirCollector::open(engines.dir.path(), vllm_filter())
            .unwrap()
            .exclude([name]);
        let (families, _) = collector.families_with_report();
        assert!(families.iter().all(|f| &*f.name != "vllm:prompt_tokens"));
        assert!(
            families
                .iter()
                .any(|f| &*f.name == "vllm:num_requests_running")
        );
    }
}

#[test]
fn self_metrics_describe_the_directory() {
    let engines = start_engines();
    let collector = DirCollector::open(engines.dir.path(), PrefixFilter::new(["nothing:"]))
        .unwrap()
        .with_self_metrics(true);
    let (text, _) = encode(&Registry::default(), &collector, Format::Prometheus);
    assert!(
        text.contains(
            "shmetrics_reader_segments{state=\"bad\"} 0.0\n\
             shmetrics_reader_segments{state=\"dead\"} 0.0\n\
             shmetrics_reader_segments{state=\"live\"} 2.0\n"
        ),
        "{text}"
    );
    assert!(!text.contains("vllm:"));
    check(&text, Format::Prometheus);
}

#[test]
fn help_text_with_a_newline_stays_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let registry = shmetrics_writer::Registry::open(dir.path()).unwrap();
    registry
        .counter("jobs", "Jobs done,\ncounted \\ once.", &[])
        .unwrap()
        .unlabelled()
        .unwrap()
        .inc();
    let collector = DirCollector::open(dir.path(), PrefixFilter::default()).unwrap();
    for (format, expected) in [
        (
            Format::OpenMetrics,
            "# HELP jobs Jobs done, counted \\ once.\n# TYPE jobs counter\njobs_total 1.0\n",
        ),
        (
            Format::Prometheus,
            "# HELP jobs_total Jobs done, counted \\\\ once.\n# TYPE jobs_total counter\njobs_total 1.0\n",
        ),
    ] {
        let (text, _) = encode(&Registry::default(), &collector, format);
        assert_eq!(text, format!("{expected}{}", clashes_family(0, format)));
    }
}

/// The `prometheus_client_server` example, killed on drop.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn prometheus_client_server_example_serves_both_formats() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server(
        std::process::Command::new(support::example_binary("prometheus_client_server"))
            .args(["--demo", "--port", "0", "--prefix", "vllm:", "--dir"])
            .arg(dir.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("serving ")
        .expect("the server prints its URL");

    let (head, om) = support::http_get(url, None);
    assert!(
        head.contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    let (head, prom) = support::http_get(url, Some("text/plain;version=0.0.4"));
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    for (text, format) in [(&om, Format::OpenMetrics), (&prom, Format::Prometheus)] {
        // The server's gauge wins over the demo engine's; the clash is counted.
        assert!(text.contains("\nvllm:num_requests_running 0\n"), "{text}");
        assert!(
            text.contains("\nshmetrics_collector_clashes 1.0\n"),
            "{text}"
        );
        assert!(
            text.contains("\nvllm:prompt_tokens_total{model_name=\"llama\"} 512.0\n"),
            "{text}"
        );
        check(text, format);
    }
    assert!(om.ends_with("# EOF\n"));
    assert!(om.contains("\nserver_scrapes_total 1\n"), "{om}");
    assert!(prom.contains("\nserver_scrapes_total 2\n"), "{prom}");
}

/// Names outside the classic character sets reach the prometheus-client encoder as the
/// classic formats expose them (`my.dotted` as `my_dotted`).
#[test]
fn utf8_names_are_exposed_with_underscores() {
    let dir = tempfile::tempdir().unwrap();
    let writer = shmetrics_writer::Registry::open(dir.path()).unwrap();
    writer
        .counter("my.dotted", "Dotted.", &["lbl.x"])
        .unwrap()
        .labels(&["v"])
        .unwrap()
        .inc_by(2.0);
    let collector = DirCollector::open(dir.path(), PrefixFilter::default()).unwrap();
    let mut out = String::new();
    encode_with_host(
        &mut out,
        &Registry::default(),
        &collector,
        Format::Prometheus,
    )
    .unwrap();
    assert!(
        out.contains("\nmy_dotted_total{lbl_x=\"v\"} 2.0\n"),
        "{out}"
    );
    assert!(!out.contains("my.dotted"), "{out}");
    check(&out, Format::Prometheus);
}

/// An info and a stateset come out as gauges (`name_info`; one sample per state), as
/// prometheus_client's text format has them.
#[test]
fn infos_and_statesets_are_gauges() {
    let dir = tempfile::tempdir().unwrap();
    let _writer = write_info_and_stateset(dir.path());
    let collector = DirCollector::open(dir.path(), PrefixFilter::default()).unwrap();
    let (text, _) = encode(&Registry::default(), &collector, Format::Prometheus);
    assert!(
        text.contains("# TYPE build_info gauge\nbuild_info{component=\"api\",version=\"1.0\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE phase gauge\nphase{phase=\"a\"} 0\nphase{phase=\"b\"} 1\n"),
        "{text}"
    );
    promtool_check(&text, "infos and statesets");
}
