//! Two simulated engine processes (`open_simulating_pid`) writing `vllm:` families into a
//! temporary metrics directory: the fixture of the collector tests, whose expected values
//! are exact merges across both processes.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use shmetrics_reader::PrefixFilter;
use shmetrics_writer::{GaugeMode, Options};

/// Two engine processes writing `vllm:` families (and one family the filter drops).
pub(crate) struct Engines {
    pub(crate) dir: tempfile::TempDir,
    /// Kept alive: their segments stay live (locked) for the whole test.
    _registries: Vec<shmetrics_writer::Registry>,
}

fn engine(dir: &Path, pid: u32) -> shmetrics_writer::Registry {
    let r = shmetrics_writer::Registry::open_simulating_pid(dir, Options::default(), pid)
        .expect("open engine registry");
    r.counter(
        "vllm:prompt_tokens_total",
        "Number of prefill tokens processed.",
        &["model_name"],
    )
    .unwrap();
    r.histogram(
        "vllm:e2e_request_latency_seconds",
        "Histogram of e2e request latency in seconds.",
        &["model_name"],
        &[0.25, 1.0, 4.0],
    )
    .unwrap();
    r.gauge(
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed.",
        &["model_name"],
        GaugeMode::MostRecent,
    )
    .unwrap();
    r.gauge(
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
        &[],
        GaugeMode::MostRecent,
    )
    .unwrap();
    r.gauge(
        "vllm:engine_up",
        "Engine process is up.",
        &[],
        GaugeMode::All,
    )
    .unwrap();
    r.summary(
        "vllm:request_queue_time_seconds",
        "Time spent in the waiting queue.",
        &["model_name"],
    )
    .unwrap();
    r.counter(
        "process_restarts_total",
        "Not an engine family: filtered out.",
        &[],
    )
    .unwrap();
    r
}

/// Waits (bounded) until the wall clock has moved past `t`, so that a later `mostrecent`
/// write carries a strictly newer timestamp.
fn wait_clock_past(t: SystemTime) {
    let start = Instant::now();
    while SystemTime::now() <= t {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "wall clock did not advance"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub(crate) fn start_engines() -> Engines {
    let dir = tempfile::tempdir().unwrap();
    let a = engine(dir.path(), 1001);
    let b = engine(dir.path(), 1002);

    let tokens = |r: &shmetrics_writer::Registry, model: &str, n: f64| {
        r.counter(
            "vllm:prompt_tokens_total",
            "Number of prefill tokens processed.",
            &["model_name"],
        )
        .unwrap()
        .labels(&[model])
        .unwrap()
        .inc_by(n);
    };
    tokens(&a, "m", 10.0);
    tokens(&b, "m", 32.0);
    tokens(&b, "n", 1.0);

    let latency = |r: &shmetrics_writer::Registry, v: f64| {
        r.histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            &["model_name"],
            &[0.25, 1.0, 4.0],
        )
        .unwrap()
        .labels(&["m"])
        .unwrap()
        .observe(v);
    };
    for v in [0.125, 0.5] {
        latency(&a, v);
    }
    for v in [0.5, 2.0, 8.0] {
        latency(&b, v);
    }

    let gauge = |r: &shmetrics_writer::Registry, name: &str, help: &str, labels: &[&str], mode| {
        r.gauge(name, help, labels, mode).unwrap()
    };
    let waiting = |r: &shmetrics_writer::Registry| {
        gauge(
            r,
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            &["model_name"],
            GaugeMode::MostRecent,
        )
        .labels(&["m"])
        .unwrap()
        .clone()
    };
    waiting(&a).set(3.0);
    wait_clock_past(SystemTime::now());
    waiting(&b).set(7.0);

    gauge(
        &a,
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
        &[],
        GaugeMode::MostRecent,
    )
    .unlabelled()
    .unwrap()
    .set(5.0);

    for r in [&a, &b] {
        gauge(
            r,
            "vllm:engine_up",
            "Engine process is up.",
            &[],
            GaugeMode::All,
        )
        .unlabelled()
        .unwrap()
        .set(1.0);
    }

    let queue = |r: &shmetrics_writer::Registry, v: f64| {
        r.summary(
            "vllm:request_queue_time_seconds",
            "Time spent in the waiting queue.",
            &["model_name"],
        )
        .unwrap()
        .labels(&["m"])
        .unwrap()
        .observe(v);
    };
    queue(&a, 0.5);
    queue(&b, 1.5);

    a.counter(
        "process_restarts_total",
        "Not an engine family: filtered out.",
        &[],
    )
    .unwrap()
    .unlabelled()
    .unwrap()
    .inc();

    Engines {
        dir,
        _registries: vec![a, b],
    }
}

pub(crate) fn vllm_filter() -> PrefixFilter {
    PrefixFilter::new(["vllm:", "lmcache:"])
}

/// Checks the exposition of a host whose gauge `vllm:e2e_request_latency_seconds_count`
/// clashes with the engines' histogram: the histogram is left out (the host's gauge is the
/// only `_count` line, no bucket), the clash is counted, the other engine families stay, and
/// every family is typed once. `whole` is how the encoder writes a whole number of the
/// directory's (`"1"` or `"1.0"`).
pub(crate) fn assert_clashing_histogram_left_out(text: &str, whole: fn(u32) -> String) {
    assert!(
        !text.contains("vllm:e2e_request_latency_seconds_bucket"),
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("vllm:e2e_request_latency_seconds_count"))
            .collect::<Vec<_>>(),
        ["vllm:e2e_request_latency_seconds_count 1"]
    );
    assert!(text.contains(&format!("shmetrics_collector_clashes {}\n", whole(1))));
    assert!(text.contains(&format!(
        "vllm:prompt_tokens_total{{model_name=\"m\"}} {}\n",
        whole(42)
    )));
    // Not promtool: it flags the host's gauge named `..._count`, the premise of the test.
    super::assert_type_lines_unique(text);
}

/// A process writing an info (`build{component="api"}`, version 1.0) and a stateset (`phase`,
/// states a and b, in b) into `dir`; the directory's writer while the registry is held.
pub(crate) fn write_info_and_stateset(dir: &Path) -> shmetrics_writer::Registry {
    let writer = shmetrics_writer::Registry::open(dir).unwrap();
    writer
        .info("build", "Build.", &["component"], GaugeMode::LiveMostRecent)
        .unwrap()
        .set(&["api"], &[("version", "1.0")])
        .unwrap();
    writer
        .state_set(
            "phase",
            "Phase.",
            &[],
            &["a", "b"],
            GaugeMode::LiveMostRecent,
        )
        .unwrap()
        .unlabelled()
        .unwrap()
        .state("b")
        .unwrap();
    writer
}
