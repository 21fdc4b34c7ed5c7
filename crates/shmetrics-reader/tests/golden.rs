//! Golden renders: the exact text a scraper receives, in both formats, for every metric type
//! and every gauge mode, from several simulated processes (two live, one dead).
//!
//! The expected files live in `tests/golden/`. They were written and checked by hand against
//! docs/semantics.md and `prometheus_client`'s `MultiProcessCollector` (see the comments on each
//! test for the arithmetic). After a deliberate change of the output, regenerate them with
//! `UPDATE_GOLDEN=1 cargo test -p shmetrics-reader --test golden` and review the diff line by
//! line before accepting it; a normal run compares exactly and fails with a line diff.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use shmetrics_reader::{Format, PrefixFilter, Reader, ScrapeReport};
use shmetrics_writer::{GaugeMode, Options, Registry};

/// Opens a registry that presents itself as process `pid`.
fn process(dir: &Path, pid: u32) -> Registry {
    Registry::open_simulating_pid(dir, Options::default(), pid).expect("open registry")
}

/// Returns once the wall clock has moved past the time of the call, so that a gauge write
/// made afterwards carries a strictly newer timestamp than every write made before.
/// Bounded: fails after about a second of a clock that does not advance.
fn next_tick() {
    let start = SystemTime::now();
    for _ in 0..20_000 {
        if SystemTime::now() > start {
            return;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    panic!("the wall clock did not advance");
}

/// Renders `reader`'s directory without self-metrics.
fn render(reader: &mut Reader, format: Format, filter: &PrefixFilter) -> (String, ScrapeReport) {
    // Creation times differ at every run: `_created` samples have tests of their own
    // (created.rs).
    reader.set_created_series(false);
    let mut out = Vec::new();
    let report = reader
        .scrape(format, filter, false, &mut out)
        .expect("render into a Vec");
    (String::from_utf8(out).expect("UTF-8 output"), report)
}

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// A line diff (longest common subsequence): `-` expected only, `+` actual only.
fn line_diff(expected: &str, actual: &str) -> String {
    let e: Vec<&str> = expected.split_inclusive('\n').collect();
    let a: Vec<&str> = actual.split_inclusive('\n').collect();
    let mut lcs = vec![vec![0usize; a.len() + 1]; e.len() + 1];
    for i in (0..e.len()).rev() {
        for j in (0..a.len()).rev() {
            lcs[i][j] = if e[i] == a[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = String::new();
    let (mut i, mut j) = (0, 0);
    let mut line = |mark: char, text: &str| {
        out.push(mark);
        out.push(' ');
        out.push_str(&format!("{text:?}"));
        out.push('\n');
    };
    while i < e.len() || j < a.len() {
        if i < e.len() && j < a.len() && e[i] == a[j] {
            line(' ', e[i]);
            i += 1;
            j += 1;
        } else if j < a.len() && (i == e.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            line('+', a[j]);
            j += 1;
        } else {
            line('-', e[i]);
            i += 1;
        }
    }
    out
}

/// Compares `actual` with the golden file `name`, or rewrites the file when
/// `UPDATE_GOLDEN=1`. Returns a description of the mismatch, if any.
fn compare_golden(name: &str, actual: &str) -> Option<String> {
    let path = golden_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, actual).expect("write golden file");
        eprintln!("updated {}", path.display());
        return None;
    }
    let expected = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            return Some(format!(
                "cannot read {}: {e}; create it with UPDATE_GOLDEN=1 and review it",
                path.display()
            ));
        }
    };
    (expected != actual).then(|| {
        format!(
            "{} differs from the render (- expected, + actual):\n{}",
            path.display(),
            line_diff(&expected, actual)
        )
    })
}

/// Renders the directory in both formats and checks `<stem>.prom` and `<stem>.om`.
fn check_both(reader: &mut Reader, filter: &PrefixFilter, stem: &str) -> Vec<ScrapeReport> {
    let mut failures = Vec::new();
    let mut reports = Vec::new();
    for (format, ext) in [(Format::Prometheus, "prom"), (Format::OpenMetrics, "om")] {
        let (text, report) = render(reader, format, filter);
        assert_count_is_inf_bucket(&text);
        failures.extend(compare_golden(&format!("{stem}.{ext}"), &text));
        reports.push(report);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    reports
}

/// Every histogram series' `_count` equals its `+Inf` bucket, read from the rendered text.
fn assert_count_is_inf_bucket(text: &str) {
    for line in text.lines() {
        let Some((series, inf)) = line.split_once(",le=\"+Inf\"} ") else {
            continue;
        };
        let (name, labels) = series.split_once("_bucket{").expect("a bucket sample");
        let count_line = format!("{name}_count{{{labels}}} {inf}");
        assert!(
            text.lines().any(|l| l == count_line),
            "no `{count_line}` for `{line}` in:\n{text}"
        );
    }
}

fn assert_segments(report: &ScrapeReport, live: usize, dead: usize) {
    assert_eq!(
        (
            report.live_segments,
            report.dead_segments,
            report.bad_segments
        ),
        (live, dead, 0),
        "{report:?}"
    );
    assert!(report.problems.is_empty(), "{report:?}");
    assert!(report.conflicts.is_empty(), "{report:?}");
    assert!(report.skipped.is_empty(), "{report:?}");
}

/// Every metric type, from processes 101 and 102 (live) and 103 (dead):
///
/// - `http_requests_total` (registered with `_total`, labels declared as `path, code` and
///   rendered sorted): `code=200,path=/a` = 1 + 1 + 0.5 (101) + 0.25 (102) + 10 (103, dead,
///   still counted) = 12.75; `code=500,path=/b` = 1 (102) + 0.125 (103) = 1.125.
/// - `errors_total`: created by 102 and never incremented: one series at 0.
/// - `vllm:prompt_tokens` (no `_total` given): 512 (101) + 128 (103) = 640; its help text
///   and label value hold `\`, `"` and a newline.
/// - `vllm:e2e_request_latency_seconds`, bounds 1e-7, 0.5, 1, 2.5e10: observations 0.5,
///   0.75, 3e10 (101), 1e-7, 2 (102), 1, 0.25 (103) give per-bucket 1, 2, 2, 1, 1, so
///   cumulative 1, 3, 5, 6, 7 = `_count`; a value equal to a bound falls in that bound's
///   bucket. Sum 30000000001.25 + 2.0000001 + 1.25 = 30000000004.5 (1e-7 is below the
///   precision at that magnitude, in any order of addition). Model `n` only from 103: 5.0.
/// - `request_size_bytes` summary: 100 + 50.5 + 0.25 = 150.75 over 3 observations.
/// - `float_formats` (sum gauge, one writer): integers as `1.0`, shortest round-trip
///   otherwise, decimal up to 1e16 and exponents from 1e16 on and below 1e-5, `+Inf`, `-Inf`, `NaN`.
#[test]
fn every_type() {
    let dir = tempfile::tempdir().unwrap();
    let help_tokens = "Prefill tokens \\ \"quoted\"\nsecond line.";
    let latency_help = "Histogram of end-to-end request latency in seconds.";
    let bounds = [1e-7, 0.5, 1.0, 2.5e10];
    let weird = "a\\b\"c\nd";

    let p101 = process(dir.path(), 101);
    let p102 = process(dir.path(), 102);
    {
        let p103 = process(dir.path(), 103);
        let requests = p103
            .counter("http_requests_total", "Requests served.", &["path", "code"])
            .unwrap();
        requests.labels(&["/a", "200"]).unwrap().inc_by(10.0);
        requests.labels(&["/b", "500"]).unwrap().inc_by(0.125);
        let tokens = p103
            .counter("vllm:prompt_tokens", help_tokens, &["model_name"])
            .unwrap();
        tokens.labels(&[weird]).unwrap().inc_by(128.0);
        let latency = p103
            .histogram(
                "vllm:e2e_request_latency_seconds",
                latency_help,
                &["model_name"],
                &bounds,
            )
            .unwrap();
        latency.labels(&["m"]).unwrap().observe(1.0);
        latency.labels(&["m"]).unwrap().observe(0.25);
        latency.labels(&["n"]).unwrap().observe(5.0);
        let size = p103
            .summary("request_size_bytes", "Request size.", &[])
            .unwrap();
        size.unlabelled().unwrap().observe(0.25);
        // Process 103 exits: the registry and every family and handle are dropped here.
    }

    let requests = p101
        .counter("http_requests_total", "Requests served.", &["path", "code"])
        .unwrap();
    let a200 = requests.labels(&["/a", "200"]).unwrap().clone();
    a200.inc();
    a200.inc();
    a200.inc_by(0.5);
    let tokens = p101
        .counter("vllm:prompt_tokens", help_tokens, &["model_name"])
        .unwrap();
    tokens.labels(&[weird]).unwrap().inc_by(512.0);
    let latency = p101
        .histogram(
            "vllm:e2e_request_latency_seconds",
            latency_help,
            &["model_name"],
            &bounds,
        )
        .unwrap();
    for v in [0.5, 0.75, 3e10] {
        latency.labels(&["m"]).unwrap().observe(v);
    }
    p101.summary("request_size_bytes", "Request size.", &[])
        .unwrap()
        .unlabelled()
        .unwrap()
        .observe(100.0);
    let formats = p101
        .gauge(
            "float_formats",
            "Values that exercise number formatting.",
            &["value"],
            GaugeMode::Sum,
        )
        .unwrap();
    for (label, v) in [
        ("one", 1.0),
        ("half", 0.5),
        ("tiny", 1e-7),
        ("big_int", 123_456_789_012_345.0),
        ("large", 1e15),
        ("larger", 1e16),
        ("huge", f64::MAX),
        ("third", 1.0 / 3.0),
        ("neg", -2.5),
        ("zero", 0.0),
        ("pos_inf", f64::INFINITY),
        ("neg_inf", f64::NEG_INFINITY),
        ("nan", f64::NAN),
    ] {
        formats.labels(&[label]).unwrap().set(v);
    }

    let requests = p102
        .counter("http_requests_total", "Requests served.", &["path", "code"])
        .unwrap();
    requests.labels(&["/a", "200"]).unwrap().inc_by(0.25);
    requests.labels(&["/b", "500"]).unwrap().inc();
    p102.counter("errors_total", "Errors seen.", &[])
        .unwrap()
        .unlabelled()
        .unwrap();
    let latency = p102
        .histogram(
            "vllm:e2e_request_latency_seconds",
            latency_help,
            &["model_name"],
            &bounds,
        )
        .unwrap();
    latency.labels(&["m"]).unwrap().observe(1e-7);
    latency.labels(&["m"]).unwrap().observe(2.0);
    p102.summary("request_size_bytes", "Request size.", &[])
        .unwrap()
        .unlabelled()
        .unwrap()
        .observe(50.5);

    let mut reader = Reader::open(dir.path()).unwrap();
    for report in check_both(&mut reader, &PrefixFilter::default(), "types") {
        assert_segments(&report, 2, 1);
    }

    // The snapshot behind the text, for the values a user reads programmatically.
    let snapshot = reader.snapshot().snapshot;
    let latency = snapshot.family("vllm:e2e_request_latency_seconds").unwrap();
    assert_eq!(
        latency.series[0].value,
        shmetrics_reader::snapshot::Value::Histogram {
            buckets: vec![1, 2, 2, 1, 1],
            sum: 30_000_000_004.5,
        }
    );
    let requests = snapshot.family("http_requests").unwrap();
    let pairs: Vec<(&str, &str)> = requests.series[0]
        .labels
        .pairs
        .iter()
        .map(|(n, v)| (&**n, &**v))
        .collect();
    assert_eq!(pairs, [("code", "200"), ("path", "/a")]);
    drop((a200, p101, p102));
}

/// Every gauge mode, one family each, from processes 201 and 202 (live) and 203 (dead).
/// Per series, the values each process holds and the order of the writes:
///
/// | series | 201 | 202 | 203 (dead) | write order (oldest first) |
/// |---|---|---|---|---|
/// | a | 1 then +2 = 3 | -1.5 | -7.25 | 202, 201 set, 201 add, 203 |
/// | b | 0.5 | 2 | 100 | 203, 201, 202 |
/// | c | 4 | created, never written (0) | - | 201 |
/// | d | - | created, never written (0) | - | - |
///
/// So: min a -7.25 b 0.5 c 0 d 0; livemin a -1.5 (the dead -7.25 is ignored); max a 3
/// b 100; livemax b 2; sum a -5.75 b 102.5 c 4 d 0; livesum a 1.5 b 2.5; mostrecent a
/// -7.25 (the dead process wrote last) b 2 c 4 (202 never wrote c) and no `d` at all;
/// livemostrecent a 3 (201's add is the newest live write); all: one series per process
/// with a `pid` label after the others, 203 included; liveall without 203.
#[test]
fn every_gauge_mode() {
    let dir = tempfile::tempdir().unwrap();
    let p201 = process(dir.path(), 201);
    let p202 = process(dir.path(), 202);
    let p203 = process(dir.path(), 203);
    let family = |reg: &Registry, mode: GaugeMode| {
        reg.gauge(
            &format!("{mode}_merged"),
            &format!("Gauge merged in mode {mode}."),
            &["series"],
            mode,
        )
        .unwrap()
    };
    for mode in GaugeMode::ALL {
        let (g201, g202, g203) = (
            family(&p201, mode),
            family(&p202, mode),
            family(&p203, mode),
        );
        g202.labels(&["a"]).unwrap().set(-1.5);
        next_tick();
        g201.labels(&["a"]).unwrap().set(1.0);
        next_tick();
        g201.labels(&["a"]).unwrap().add(2.0);
        next_tick();
        g203.labels(&["a"]).unwrap().set(-7.25);
        next_tick();
        g203.labels(&["b"]).unwrap().set(100.0);
        next_tick();
        g201.labels(&["b"]).unwrap().set(0.5);
        next_tick();
        g202.labels(&["b"]).unwrap().set(2.0);
        g201.labels(&["c"]).unwrap().set(4.0);
        g202.labels(&["c"]).unwrap();
        g202.labels(&["d"]).unwrap();
    }
    drop(p203);

    let mut reader = Reader::open(dir.path()).unwrap();
    for report in check_both(&mut reader, &PrefixFilter::default(), "modes") {
        assert_segments(&report, 2, 1);
    }
    drop((p201, p202));
}

/// A prefix filter keeps or drops whole families: `vllm:` keeps the three `vllm:` families
/// and drops `vllm_legacy_requests` (no colon), `xvllm:requests` (prefix not at the start),
/// `lmcache:hits` and `http_requests`.
#[test]
fn prefix_filter() {
    let dir = tempfile::tempdir().unwrap();
    let p301 = process(dir.path(), 301);
    let p302 = process(dir.path(), 302);
    for (reg, engine, running, tokens) in [(&p301, "0", 3.0, 7.0), (&p302, "1", 5.0, 0.5)] {
        reg.gauge(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            &["model_name", "engine"],
            GaugeMode::MostRecent,
        )
        .unwrap()
        .labels(&["llama", engine])
        .unwrap()
        .set(running);
        reg.counter(
            "vllm:generation_tokens_total",
            "Number of generation tokens processed.",
            &["model_name"],
        )
        .unwrap()
        .labels(&["llama"])
        .unwrap()
        .inc_by(tokens);
        reg.gauge(
            "vllm:lora_requests_info",
            "Running stats on lora requests.",
            &["running_lora_adapters", "max_lora", "waiting_lora_adapters"],
            GaugeMode::Sum,
        )
        .unwrap()
        .labels(&["", "1", ""])
        .unwrap()
        .set(1.0);
        reg.gauge("vllm_legacy_requests", "Dropped.", &[], GaugeMode::LiveSum)
            .unwrap()
            .unlabelled()
            .unwrap()
            .set(1.0);
        reg.gauge("xvllm:requests", "Dropped.", &[], GaugeMode::Max)
            .unwrap()
            .unlabelled()
            .unwrap()
            .set(1.0);
        reg.counter("lmcache:hits", "Dropped unless asked for.", &[])
            .unwrap()
            .unlabelled()
            .unwrap()
            .inc();
        reg.counter("http_requests", "Dropped.", &[])
            .unwrap()
            .unlabelled()
            .unwrap()
            .inc();
    }
    let mut reader = Reader::open(dir.path()).unwrap();
    for report in check_both(&mut reader, &PrefixFilter::new(["vllm:"]), "filter") {
        assert_segments(&report, 2, 0);
    }

    let help_lines = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("# HELP "))
            .map(|l| l.split(' ').nth(2).unwrap().to_owned())
            .collect()
    };
    let (two, _) = render(
        &mut reader,
        Format::OpenMetrics,
        &PrefixFilter::new(["vllm:", "lmcache:"]),
    );
    assert_eq!(
        help_lines(&two),
        [
            "lmcache:hits",
            "vllm:generation_tokens",
            "vllm:lora_requests_info",
            "vllm:num_requests_running"
        ]
    );
    assert!(two.contains("\nlmcache:hits_total 2.0\n"), "{two}");
    let (all, _) = render(&mut reader, Format::Prometheus, &PrefixFilter::default());
    assert_eq!(
        help_lines(&all),
        [
            "http_requests_total",
            "lmcache:hits_total",
            "vllm:generation_tokens_total",
            "vllm:lora_requests_info",
            "vllm:num_requests_running",
            "vllm_legacy_requests",
            "xvllm:requests"
        ]
    );
    let none = PrefixFilter::new(["nomatch"]);
    assert_eq!(render(&mut reader, Format::Prometheus, &none).0, "");
    assert_eq!(render(&mut reader, Format::OpenMetrics, &none).0, "# EOF\n");
    drop((p301, p302));
}

/// The renderer's output for an empty directory, and the self-metrics a clean directory
/// reports (no invalid segments, so that family has no series and is left out).
#[test]
fn empty_directory_and_self_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let mut reader = Reader::open(dir.path()).unwrap();
    assert_eq!(
        render(&mut reader, Format::Prometheus, &PrefixFilter::default()).0,
        ""
    );
    let registry = process(dir.path(), 401);
    registry
        .counter("jobs_total", "Jobs.", &[])
        .unwrap()
        .unlabelled()
        .unwrap()
        .inc();
    let mut out = Vec::new();
    reader
        .scrape(
            Format::Prometheus,
            &PrefixFilter::new(["nomatch"]),
            true,
            &mut out,
        )
        .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "# HELP shmetrics_reader_compaction_failures Automatic compactions that failed in a row; each failure doubles the wait before the next attempt.\n\
         # TYPE shmetrics_reader_compaction_failures gauge\n\
         shmetrics_reader_compaction_failures 0.0\n\
         # HELP shmetrics_reader_conflicts Families declared inconsistently across processes, by what differs.\n\
         # TYPE shmetrics_reader_conflicts gauge\n\
         shmetrics_reader_conflicts{kind=\"buckets\"} 0.0\n\
         shmetrics_reader_conflicts{kind=\"gauge_mode\"} 0.0\n\
         shmetrics_reader_conflicts{kind=\"help\"} 0.0\n\
         shmetrics_reader_conflicts{kind=\"name\"} 0.0\n\
         shmetrics_reader_conflicts{kind=\"type\"} 0.0\n\
         # HELP shmetrics_reader_fold_threads Threads the last snapshot folded the live segments on.\n\
         # TYPE shmetrics_reader_fold_threads gauge\n\
         shmetrics_reader_fold_threads 1.0\n\
         # HELP shmetrics_reader_segments Segments in the metrics directory, by state.\n\
         # TYPE shmetrics_reader_segments gauge\n\
         shmetrics_reader_segments{state=\"bad\"} 0.0\n\
         shmetrics_reader_segments{state=\"dead\"} 0.0\n\
         shmetrics_reader_segments{state=\"live\"} 1.0\n\
         # HELP shmetrics_reader_series Merged series in the last snapshot.\n\
         # TYPE shmetrics_reader_series gauge\n\
         shmetrics_reader_series 1.0\n\
         # HELP shmetrics_reader_skipped_files Directory entries not read as segments of this user, by reason (file_limit, out_of_memory and interrupted are retried at the next scrape).\n\
         # TYPE shmetrics_reader_skipped_files gauge\n\
         shmetrics_reader_skipped_files{reason=\"file_limit\"} 0.0\n\
         shmetrics_reader_skipped_files{reason=\"foreign_file\"} 0.0\n\
         shmetrics_reader_skipped_files{reason=\"foreign_owner\"} 0.0\n\
         shmetrics_reader_skipped_files{reason=\"interrupted\"} 0.0\n\
         shmetrics_reader_skipped_files{reason=\"not_regular\"} 0.0\n\
         shmetrics_reader_skipped_files{reason=\"out_of_memory\"} 0.0\n\
         shmetrics_reader_skipped_files{reason=\"squatted\"} 0.0\n\
         shmetrics_reader_skipped_files{reason=\"stray_archive\"} 0.0\n\
         shmetrics_reader_skipped_files{reason=\"symlink\"} 0.0\n\
         shmetrics_reader_skipped_files{reason=\"unreadable\"} 0.0\n\
         # HELP shmetrics_writer_dropped_series Series writers could not place because their segments were full.\n\
         # TYPE shmetrics_writer_dropped_series gauge\n\
         shmetrics_writer_dropped_series 0.0\n"
    );
    drop(registry);
}

/// Names outside the classic character sets (`prometheus_client` 0.26 and Prometheus 3
/// accept any UTF-8), in both formats and every escaping scheme: `underscores` (the
/// default), `allow-utf-8` (names quoted, the sample name inside the braces), `dots` and
/// `values`. A classic family renders the same in every scheme but `dots`. The expected text
/// is `prometheus_client` 0.26's `generate_latest(registry, escaping)` and
/// `openmetrics.generate_latest(registry, escaping)` on the same metrics, compared line by
/// line, but for three things: bucket counts are integers here; the `all`-mode gauge has
/// its `pid` label (in-process `prometheus_client` has none); and in OpenMetrics
/// `prometheus_client` 0.26 escapes a sample name with the label-name character set, so
/// `vllm:num_requests` samples come out as `vllm_num_requests` under a `# TYPE
/// vllm:num_requests` line, which names them as another family: here the sample names
/// are the family's.
#[test]
fn utf8_names_in_every_escaping() {
    use shmetrics_reader::render::{Escaping, Exposition};
    let dir = tempfile::tempdir().unwrap();
    let p = process(dir.path(), 901);
    p.counter("my.dotted", "Dotted \"name\".", &["lbl.x", "plain"])
        .unwrap()
        .labels(&["v\"1", "p"])
        .unwrap()
        .inc_by(2.0);
    p.histogram("lat.seconds", "Latency.", &["a:b"], &[0.5])
        .unwrap()
        .labels(&["x"])
        .unwrap()
        .observe(0.25);
    p.gauge(
        "vllm:num_requests",
        "Classic.",
        &["model_name"],
        GaugeMode::MostRecent,
    )
    .unwrap()
    .labels(&["m_1"])
    .unwrap()
    .set(3.0);
    p.gauge("é", "Accented.", &[], GaugeMode::All)
        .unwrap()
        .unlabelled()
        .unwrap()
        .set(1.5);
    let mut reader = Reader::open(dir.path()).unwrap();
    let scrape = reader.snapshot();
    let mut failures = Vec::new();
    for escaping in [
        Escaping::Underscores,
        Escaping::AllowUtf8,
        Escaping::Dots,
        Escaping::Values,
    ] {
        for (format, ext) in [(Format::Prometheus, "prom"), (Format::OpenMetrics, "om")] {
            let mut out = Vec::new();
            Exposition {
                snapshot: &scrape.snapshot,
                text: Some(&scrape.text),
                extra: &[],
                format,
                filter: &PrefixFilter::default(),
                escaping,
                created: false,
            }
            .write(&mut out)
            .unwrap();
            let text = String::from_utf8(out).unwrap();
            let name = format!("utf8.{}.{ext}", escaping.as_str());
            failures.extend(compare_golden(&name, &text));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
