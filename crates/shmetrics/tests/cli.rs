//! The `shmetrics` command line, end to end: real writer processes started by `generate`,
//! merged by `dump`, taken apart by `inspect`.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_shmetrics");

fn shmetrics(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run shmetrics")
}

/// Runs shmetrics, requires success, returns stdout.
fn ok(args: &[&str]) -> String {
    let out = shmetrics(args);
    assert!(
        out.status.success(),
        "shmetrics {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn generate(dir: &Path, processes: u32, series: u32, ops: u32, extra: &[&str]) -> String {
    let (p, s, n) = (processes.to_string(), series.to_string(), ops.to_string());
    let mut args = vec![
        "generate",
        "--dir",
        dir.to_str().unwrap(),
        "--processes",
        &p,
        "--series",
        &s,
        "--ops",
        &n,
    ];
    args.extend_from_slice(extra);
    ok(&args)
}

fn dump(dir: &Path, extra: &[&str]) -> String {
    let mut args = vec!["dump", "--dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    ok(&args)
}

/// Workers started with `--stay`: SIGTERMed when dropped, so a failing test leaves none.
struct Stayers(Vec<i32>);

impl Stayers {
    fn parse(stdout: &str, expected: usize) -> Self {
        let pids: Vec<i32> = stdout
            .lines()
            .map(|l| l.parse().unwrap_or_else(|_| panic!("not a pid: {l:?}")))
            .collect();
        assert_eq!(pids.len(), expected, "one pid per worker: {stdout:?}");
        Self(pids)
    }

    fn terminate(&mut self) {
        for pid in self.0.drain(..) {
            kill(Pid::from_raw(pid), Signal::SIGTERM).expect("SIGTERM a worker");
        }
    }
}

impl Drop for Stayers {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
}

/// One sample line of the text format.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let name: String = chars.by_ref().take_while(|&c| c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label {name} in {text}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => panic!("dangling escape in {text}"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(name, value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (metric, value) = line.rsplit_once(' ').expect("sample has a value");
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let (name, labels) = match metric.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').unwrap())),
                None => (metric, BTreeMap::new()),
            };
            Sample {
                name: name.to_owned(),
                labels,
                value,
            }
        })
        .collect()
}

/// Samples of `name`, keyed by their `series` label (and `le` for buckets).
fn by_series(all: &[Sample], name: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for s in all.iter().filter(|s| s.name == name) {
        let key = (
            s.labels.get("series").cloned().unwrap_or_default(),
            s.labels.get("le").cloned().unwrap_or_default(),
        );
        assert!(out.insert(key, s.value).is_none(), "duplicate {s:?}");
    }
    out
}

fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect()
}

fn value_of(all: &[Sample], name: &str, label: (&str, &str)) -> Option<f64> {
    all.iter()
        .find(|s| s.name == name && s.labels.get(label.0).map(String::as_str) == Some(label.1))
        .map(|s| s.value)
}

/// Series per gen family for `total` series per process (the CLI's documented split).
fn split(total: usize, family: usize) -> usize {
    total / 15 + usize::from(family < total % 15)
}

/// Checks the counter, mostrecent-gauge and histogram families of a gen dump.
fn check_gen(all: &[Sample], series: usize, processes: u32, ops: u32) {
    let total = f64::from(processes * ops);
    for k in 0..5 {
        let c = by_series(all, &format!("gen_c{k}_total"));
        assert_eq!(c.len(), split(series, k), "series of gen_c{k}_total");
        assert!(c.values().all(|&v| v == total), "gen_c{k}_total: {c:?}");
    }
    for k in 0..3 {
        let g = by_series(all, &format!("gen_g{k}"));
        assert_eq!(g.len(), split(series, 5 + k), "series of gen_g{k}");
        assert!(g.values().all(|&v| v == f64::from(ops)), "gen_g{k}: {g:?}");
    }
    for k in 0..5 {
        let name = format!("gen_h{k}_seconds");
        let count = by_series(all, &format!("{name}_count"));
        assert_eq!(count.len(), split(series, 10 + k), "series of {name}");
        assert!(
            count.values().all(|&v| v == total),
            "{name}_count: {count:?}"
        );
        let buckets = by_series(all, &format!("{name}_bucket"));
        assert_eq!(buckets.len(), count.len() * 21, "{name}: 20 bounds + Inf");
        for (series, _) in count.keys() {
            let inf = buckets[&(series.clone(), "+Inf".to_owned())];
            assert_eq!(inf, total, "{name} series {series} +Inf");
            // Round r puts series i's observation in bucket (r + i) % 21: cumulative
            // bucket b holds processes * |{r < ops : (r + i) % 21 <= b}|.
            let i: u64 = series.parse().unwrap();
            for b in 0..20u32 {
                let le = (0.001 * f64::from(1u32 << b)).to_string();
                let want = (0..u64::from(ops))
                    .filter(|r| (r + i) % 21 <= u64::from(b))
                    .count() as f64
                    * f64::from(processes);
                assert_eq!(
                    buckets[&(series.clone(), le.clone())],
                    want,
                    "{name} series {series} le={le}"
                );
            }
        }
    }
}

#[test]
fn generate_then_dump_gives_exact_totals() {
    let dir = tempfile::tempdir().unwrap();
    let out = generate(dir.path(), 3, 30, 7, &[]);
    assert_eq!(out, "", "generate without --stay prints nothing");
    let text = dump(dir.path(), &[]);
    let all = samples(&text);
    check_gen(&all, 30, 3, 7);
    // Every writer exited: livesum gauges count only live processes, so they are gone.
    let fams = families(&text);
    assert!(
        !fams.contains("gen_g3") && !fams.contains("gen_g4"),
        "{fams:?}"
    );
    assert_eq!(
        value_of(&all, "shmetrics_reader_segments", ("state", "dead")),
        Some(3.0)
    );
    assert_eq!(
        value_of(&all, "shmetrics_reader_segments", ("state", "live")),
        Some(0.0)
    );
    // 10 families x 2 series, 5 of them histograms of 21 buckets + count + sum.
    let gen_samples = all.iter().filter(|s| s.name.starts_with("gen_")).count();
    assert_eq!(gen_samples, 5 * 2 + 3 * 2 + 5 * 2 * 23);
}

#[test]
fn stay_keeps_writers_live_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // 17 series: c0 and c1 get two, every other family one.
    let out = generate(dir.path(), 3, 17, 5, &["--stay"]);
    let mut workers = Stayers::parse(&out, 3);
    let all = samples(&dump(dir.path(), &[]));
    check_gen(&all, 17, 3, 5);
    for k in 3..5 {
        let g = by_series(&all, &format!("gen_g{k}"));
        assert_eq!(g.len(), 1);
        assert!(g.values().all(|&v| v == 3.0), "livesum gen_g{k}: {g:?}");
    }
    assert_eq!(
        value_of(&all, "shmetrics_reader_segments", ("state", "live")),
        Some(3.0)
    );

    workers.terminate();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut text = dump(dir.path(), &[]);
    for _ in 0..400 {
        if value_of(
            &samples(&text),
            "shmetrics_reader_segments",
            ("state", "dead"),
        ) == Some(3.0)
            || Instant::now() > deadline
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        text = dump(dir.path(), &[]);
    }
    let all = samples(&text);
    assert_eq!(
        value_of(&all, "shmetrics_reader_segments", ("state", "dead")),
        Some(3.0),
        "the SIGTERMed workers are reported dead:\n{text}"
    );
    let fams = families(&text);
    assert!(
        !fams.contains("gen_g3") && !fams.contains("gen_g4"),
        "{fams:?}"
    );
    check_gen(&all, 17, 3, 5);
}

#[test]
fn dump_formats_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 2, 15, 3, &[]);

    let om = dump(dir.path(), &["--format", "openmetrics"]);
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert_eq!(om.matches("# EOF").count(), 1);
    assert!(om.contains("# TYPE gen_c0 counter\n"), "{om}");
    assert!(om.contains("gen_c0_total{series=\"0\"} 6.0\n"), "{om}");
    assert!(
        om.contains("gen_c0_total{series=\"0\"} 6.0\ngen_c0_created{series=\"0\"} "),
        "{om}"
    );
    // prometheus_client's switch for `_created` samples holds for `dump` too.
    let without = Command::new(BIN)
        .args(["dump", "--format", "openmetrics", "--dir"])
        .arg(dir.path())
        .env("PROMETHEUS_DISABLE_CREATED_SERIES", "1")
        .output()
        .unwrap();
    assert!(without.status.success());
    let without = String::from_utf8(without.stdout).unwrap();
    assert!(
        without.contains("gen_c0_total{series=\"0\"} 6.0\n"),
        "{without}"
    );
    assert!(!without.contains("_created"), "{without}");
    let text = dump(dir.path(), &["--format", "prometheus"]);
    assert!(!text.contains("# EOF"));
    assert!(text.contains("# TYPE gen_c0_total counter\n"), "{text}");
    assert_eq!(text, dump(dir.path(), &[]), "prometheus is the default");

    let self_metrics: BTreeSet<String> = [
        "shmetrics_reader_compaction_failures",
        "shmetrics_reader_conflicts",
        "shmetrics_reader_fold_threads",
        "shmetrics_reader_segments",
        "shmetrics_reader_series",
        "shmetrics_reader_skipped_files",
        "shmetrics_writer_dropped_series",
    ]
    .map(String::from)
    .into();
    let filtered = dump(dir.path(), &["--prefix", "gen_c1", "--prefix", "gen_h"]);
    let mut want: BTreeSet<String> = (0..5).map(|k| format!("gen_h{k}_seconds")).collect();
    want.insert("gen_c1_total".into());
    let gen_only: BTreeSet<String> = want.clone();
    want.extend(self_metrics.iter().cloned());
    assert_eq!(families(&filtered), want);

    let bare = dump(
        dir.path(),
        &[
            "--prefix",
            "gen_c1",
            "--prefix",
            "gen_h",
            "--no-self-metrics",
        ],
    );
    assert_eq!(families(&bare), gen_only);
    assert!(!bare.contains("shmetrics_"));

    let none = dump(dir.path(), &["--prefix", "nothing_", "--no-self-metrics"]);
    assert_eq!(none, "");
}

/// `--escaping` writes names outside the classic sets as the scheme says; underscores by
/// default; an unknown scheme is refused with the list.
#[test]
fn dump_escapes_names_as_asked() {
    let dir = tempfile::tempdir().unwrap();
    let registry = shmetrics_writer::Registry::open(dir.path()).unwrap();
    registry
        .counter("my.dotted", "Dotted.", &["lbl.x"])
        .unwrap()
        .labels(&["v"])
        .unwrap()
        .inc_by(2.0);
    let bare = ["--no-self-metrics"];
    let line = |args: &[&str]| {
        let text = dump(dir.path(), &[&bare[..], args].concat());
        text.lines()
            .find(|l| !l.starts_with('#'))
            .unwrap()
            .to_owned()
    };
    assert_eq!(line(&[]), "my_dotted_total{lbl_x=\"v\"} 2.0");
    assert_eq!(
        line(&["--escaping", "allow-utf-8"]),
        "{\"my.dotted_total\",\"lbl.x\"=\"v\"} 2.0"
    );
    assert_eq!(
        line(&["--escaping", "values", "--format", "openmetrics"]),
        "U__my_2e_dotted__total{U__lbl_2e_x=\"v\"} 2.0"
    );
    let out = shmetrics(&[
        "dump",
        "--dir",
        dir.path().to_str().unwrap(),
        "--escaping",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("unknown escaping \"x\"; expected underscores, allow-utf-8, dots or values"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(registry);
}

#[test]
fn dump_of_a_missing_or_non_directory_path_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let out = shmetrics(&["dump", "--dir", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(out.stdout.is_empty());

    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = shmetrics(&["dump", "--dir", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(file.to_str().unwrap()), "{err}");
    assert!(err.contains("not a directory"), "{err}");
}

/// A directory that is not a metrics directory (a wrong `--dir`) is dumped with a warning
/// that counts what was skipped; `-q` silences it, `-v` adds what was read; a directory of
/// segments and nothing else gets no warning.
#[test]
fn dump_says_what_it_skipped() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
    std::fs::write(dir.path().join("config.yaml"), b"y").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", dir.path().join("link")).unwrap();
    let path = dir.path().to_str().unwrap();
    let out = shmetrics(&["dump", "--dir", path, "--no-self-metrics"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "shmetrics: warning: dump: {path}: no metrics segment or prometheus_client file \
             found; 4 entries skipped (1 symlink, 1 not_regular, 2 foreign_file) (is this the \
             directory the processes write to?)\n"
        )
    );
    let quiet = shmetrics(&["-q", "dump", "--dir", path]);
    assert_eq!(quiet.status.code(), Some(0));
    assert!(
        quiet.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );

    let segments_only = tempfile::tempdir().unwrap();
    generate(segments_only.path(), 2, 15, 1, &[]);
    let out = shmetrics(&["dump", "--dir", segments_only.path().to_str().unwrap()]);
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verbose = shmetrics(&[
        "dump",
        "-v",
        "--dir",
        segments_only.path().to_str().unwrap(),
    ]);
    // 13 of the 15: the livesum gauges of dead writers are left out.
    assert_eq!(
        String::from_utf8(verbose.stderr).unwrap(),
        "shmetrics: info: dump: 0 live, 2 dead, 0 bad segments; 13 series\n"
    );
    // Segments beside a stray file: counted, and the stray file named by its reason.
    std::fs::write(segments_only.path().join("stray"), b"z").unwrap();
    let out = shmetrics(&["dump", "--dir", segments_only.path().to_str().unwrap()]);
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "shmetrics: warning: dump: {}: 2 segments read; 1 entries skipped (1 foreign_file)\n",
            segments_only.path().display()
        )
    );
}

/// An empty prefix, or a list given as one value, is refused with a line that says what to
/// do, by `dump`, `serve` and `run` alike.
#[test]
fn malformed_prefixes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    for (command, code) in [
        (vec!["dump", "--dir", path], 2),
        (vec!["serve", "--dir", path, "--listen", "127.0.0.1:0"], 2),
        (vec!["run", "--listen", "127.0.0.1:0"], 125),
    ] {
        for (prefix, says) in [
            (
                "",
                "an empty prefix keeps every family; leave --prefix out to keep them all",
            ),
            (
                "vllm:,lmcache:",
                "\"vllm:,lmcache:\" has ',' in it, which no metric name starts with; give \
                 --prefix once per prefix (--prefix vllm: --prefix lmcache:)",
            ),
            ("vllm: ", "\"vllm: \" has ' ' in it"),
        ] {
            let mut args = command.clone();
            args.extend(["--prefix", prefix]);
            if command[0] == "run" {
                args.extend(["--", "true"]);
            }
            let out = shmetrics(&args);
            assert_eq!(out.status.code(), Some(code), "{args:?}");
            let err = String::from_utf8(out.stderr).unwrap();
            assert!(
                err.starts_with(&format!(
                    "error: invalid value '{prefix}' for '--prefix <P>': {says}"
                )),
                "{args:?}: {err}"
            );
        }
    }
}

/// `--listen` takes a host name, resolved at start-up.
#[test]
fn listen_accepts_host_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Command::new(BIN)
        .args([
            "serve",
            "--dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "localhost:0",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(serve.stderr.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _ = kill(Pid::from_raw(serve.id() as i32), Signal::SIGTERM);
    serve.wait().unwrap();
    let addr = line
        .strip_prefix("serving http://")
        .and_then(|rest| rest.split_once("/metrics"))
        .map(|(addr, _)| addr.parse::<std::net::SocketAddr>().unwrap())
        .unwrap_or_else(|| panic!("{line:?}"));
    assert!(addr.ip().is_loopback(), "{addr}");
    assert_ne!(addr.port(), 0);

    let out = shmetrics(&[
        "serve",
        "--dir",
        "/tmp",
        "--listen",
        "no-such-host.invalid:8081",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with(
            "error: invalid value 'no-such-host.invalid:8081' for '--listen <ADDR>': cannot \
             resolve host \"no-such-host.invalid\": "
        ),
        "{err}"
    );
}

/// Starts `shmetrics serve --listen 127.0.0.1:0 ARGS`; returns it, its address and its
/// stderr after the `serving` line.
fn start_serve(
    args: &[&str],
) -> (
    std::process::Child,
    String,
    std::io::BufReader<std::process::ChildStderr>,
) {
    start_serve_with_env(args, &[])
}

/// As [`start_serve`], with `env` added to the environment.
fn start_serve_with_env(
    args: &[&str],
    env: &[(&str, &str)],
) -> (
    std::process::Child,
    String,
    std::io::BufReader<std::process::ChildStderr>,
) {
    let mut serve = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(serve.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    let addr = line
        .strip_prefix("serving http://")
        .and_then(|rest| rest.split_once("/metrics"))
        .map(|(addr, _)| addr.to_owned())
        .unwrap_or_else(|| panic!("{line:?}"));
    (serve, addr, stderr)
}

/// `GET path` on `addr`: the whole response, headers included.
fn get(addr: &str, path: &str) -> String {
    get_with(addr, path, "")
}

/// As [`get`], with `headers` (each line ending in CRLF) added to the request.
fn get_with(addr: &str, path: &str, headers: &str) -> String {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(
        &mut conn,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut conn, &mut out).unwrap();
    out
}

/// `serve --process-metrics` gives each live writer's process metrics under its pid,
/// whatever `--prefix` keeps, and none once it has exited.
#[test]
fn serve_process_metrics_name_each_live_writer() {
    let dir = tempfile::tempdir().unwrap();
    let out = generate(dir.path(), 2, 15, 1, &["--stay"]);
    let mut workers = Stayers::parse(&out, 2);
    let path = dir.path().to_str().unwrap();
    let (mut serve, addr, _stderr) =
        start_serve(&["--dir", path, "--process-metrics", "--prefix", "gen_c0"]);
    let text = get(&addr, "/metrics");
    for pid in &workers.0 {
        for family in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
        ] {
            assert!(
                text.contains(&format!("{family}{{pid=\"{pid}\"}} ")),
                "{family} {pid}: {text}"
            );
        }
    }
    assert!(
        text.contains("shmetrics_reader_process_metrics_writers{state=\"reported\"} 2.0"),
        "{text}"
    );
    assert!(!text.contains("gen_c1"), "{text}");
    workers.terminate();
    // Bounded: until both have exited and released their segments.
    let mut text = String::new();
    for _ in 0..100 {
        text = get(&addr, "/metrics");
        if !text.contains("process_cpu_seconds_total{") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!text.contains("process_cpu_seconds_total{"), "{text}");
    assert!(
        text.contains("shmetrics_reader_process_metrics_writers{state=\"reported\"} 0.0"),
        "{text}"
    );
    let _ = kill(Pid::from_raw(serve.id() as i32), Signal::SIGTERM);
    assert!(serve.wait().unwrap().success());
}

/// OpenMetrics answers have a `_created` sample per counter series; `--no-created-series`
/// and prometheus_client's `PROMETHEUS_DISABLE_CREATED_SERIES` turn them off; the text format
/// never has them.
#[test]
fn serve_created_series_follow_the_flag_and_prometheus_client_variable() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 1, 15, 1, &[]);
    let path = dir.path().to_str().unwrap();
    const OPENMETRICS: &str = "Accept: application/openmetrics-text; version=1.0.0\r\n";
    /// Flags, environment, and whether `_created` samples are shown.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], bool);
    let cases: [Case<'_>; 5] = [
        (&[], &[], true),
        (&["--no-created-series"], &[], false),
        (&[], &[("PROMETHEUS_DISABLE_CREATED_SERIES", "True")], false),
        (&[], &[("PROMETHEUS_DISABLE_CREATED_SERIES", "t")], false),
        (&[], &[("PROMETHEUS_DISABLE_CREATED_SERIES", "false")], true),
    ];
    for (flags, env, shown) in cases {
        let args: Vec<&str> = ["--dir", path, "--no-self-metrics"]
            .into_iter()
            .chain(flags.iter().copied())
            .collect();
        let (mut serve, addr, _stderr) = start_serve_with_env(&args, env);
        let om = get_with(&addr, "/metrics", OPENMETRICS);
        assert!(om.contains("application/openmetrics-text"), "{om}");
        let counters = om.lines().filter(|l| l.starts_with("gen_c")).count();
        let created = om
            .lines()
            .filter(|l| l.starts_with("gen_c") && l.contains("_created"))
            .count();
        assert!(counters > 0, "{om}");
        // One per counter series: half the counter lines are `_total`, half `_created`.
        let expected = if shown { counters / 2 } else { 0 };
        assert_eq!(created, expected, "{flags:?} {env:?}: {om}");
        let text = get(&addr, "/metrics");
        assert!(!text.contains("_created"), "{text}");
        let _ = kill(Pid::from_raw(serve.id() as i32), Signal::SIGTERM);
        assert!(serve.wait().unwrap().success());
    }
}

/// A `--prefix` that keeps none of the directory's families (a misspelling: `vlm:`, `VLLM:`)
/// is named in a warning by `dump`; `serve` warns, once, at its first snapshot with
/// families, when its prefixes keep none of them (one of several matching nothing is how
/// `--prefix vllm: --prefix lmcache:` looks without LMCache). Prefixes that match say
/// nothing.
#[test]
fn a_prefix_that_matches_no_family_is_named() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 1, 15, 1, &[]);
    let path = dir.path().to_str().unwrap();
    let out = shmetrics(&[
        "dump", "--dir", path, "--prefix", "gen_c", "--prefix", "vlm:",
    ]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "shmetrics: warning: dump: --prefix vlm: matches none of the 13 families in {path}\n"
        )
    );
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("gen_c0_total")
    );
    let fine = shmetrics(&["dump", "--dir", path, "--prefix", "gen_"]);
    assert!(
        fine.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&fine.stderr)
    );

    let (mut serve, addr, mut stderr) =
        start_serve(&["--dir", path, "--prefix", "VLLM:", "--prefix", "Gen_"]);
    for _ in 0..2 {
        get(&addr, "/metrics");
    }
    let _ = kill(Pid::from_raw(serve.id() as i32), Signal::SIGTERM);
    serve.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert_eq!(rest.matches("matches none").count(), 1, "{rest}");
    assert!(
        rest.contains(
            "shmetrics: warning: --prefix VLLM:, --prefix Gen_ matches none of the 13 families \
             in the directory: /metrics serves none of them (names are case-sensitive: vllm:, \
             lmcache:, dynamo_)"
        ),
        "{rest}"
    );
}

/// `serve` over a directory of foreign files only (a wrong `--dir`) says so at start-up; over
/// an empty one (writers not started yet) it says nothing.
#[test]
fn serve_warns_when_the_directory_holds_no_metrics_file() {
    let stderr_of = |dir: &Path| -> Vec<String> {
        let mut serve = Command::new(BIN)
            .args([
                "serve",
                "--dir",
                dir.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = serve.stderr.take().unwrap();
        // The announcement and the warning come before serving starts; then stop it.
        std::thread::sleep(std::time::Duration::from_millis(500));
        let _ = kill(Pid::from_raw(serve.id() as i32), Signal::SIGTERM);
        assert!(serve.wait().unwrap().success());
        std::io::BufRead::lines(std::io::BufReader::new(stderr))
            .map(Result::unwrap)
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(stderr_of(dir.path()).len(), 1, "only the serving line");
    std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
    std::fs::write(dir.path().join("config.yaml"), b"y").unwrap();
    let lines = stderr_of(dir.path());
    assert!(
        lines[0].starts_with("serving http://127.0.0.1:"),
        "{lines:?}"
    );
    assert_eq!(
        lines[1],
        format!(
            "shmetrics: warning: serve: {} holds 2 entries and no metrics segment or \
             prometheus_client file (is this the directory the processes write to?)",
            dir.path().display()
        )
    );
}

#[test]
fn dump_reports_bad_segments_on_stderr_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 1, 15, 4, &[]);
    let bad = dir.path().join("shmetrics-1-0-0.shm");
    std::fs::write(&bad, vec![0u8; 4096]).unwrap();
    let out = shmetrics(&["dump", "--dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad_magic"), "{err}");
    assert!(err.contains(bad.to_str().unwrap()), "{err}");
    let all = samples(&String::from_utf8(out.stdout).unwrap());
    check_gen(&all, 15, 1, 4);
    assert_eq!(
        value_of(
            &all,
            "shmetrics_reader_invalid_segments",
            ("reason", "bad_magic")
        ),
        Some(1.0)
    );
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with("shmetrics-") && name.ends_with(".shm")
        })
        .collect();
    out.sort();
    out
}

#[test]
fn inspect_a_valid_segment() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 1, 15, 7, &[]);
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 1);
    let out = shmetrics(&["inspect", segs[0].to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("header: valid"), "{text}");
    assert!(text.contains("magic:          ok (SHMETRIC)"), "{text}");
    assert!(text.contains("liveness: dead"), "{text}");
    assert!(
        text.contains("records: 30 valid (15 families, 15 series)"),
        "{text}"
    );
    assert!(
        text.contains("family #0 gen_c0 counter (exposed as gen_c0_total)"),
        "{text}"
    );
    let c0 = text
        .lines()
        .find(|l| l.contains("series of #0 gen_c0{series=\"0\"} slots at "))
        .unwrap_or_else(|| panic!("no gen_c0 series line in {text}"));
    assert!(c0.ends_with(": value 7"), "{c0}");
    assert!(
        text.contains("family #8 gen_g3 gauge mode=livesum"),
        "{text}"
    );
    assert!(text.contains("gen_g0{series=\"0\"}"), "{text}");
    assert!(text.contains("value 7, last set "), "{text}");
    // Rounds 0..7 of series 0 fill buckets 0..=6 once each.
    assert!(
        text.contains("le=0.001:1 le=0.002:1 le=0.004:1 le=0.008:1 le=0.016:1 le=0.032:1 le=0.064:1 le=0.128:0"),
        "{text}"
    );
    assert!(text.contains("count 7, sum "), "{text}");
    assert!(text.ends_with("validation: ok\n"), "{text}");
}

#[test]
fn inspect_reports_a_corrupted_magic() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 1, 15, 2, &[]);
    let seg = &segments(dir.path())[0];
    let file = std::fs::OpenOptions::new().write(true).open(seg).unwrap();
    file.write_all_at(b"NOTMAGIC", 0).unwrap();
    let out = shmetrics(&["inspect", seg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("header: INVALID (bad_magic): not a shmetrics segment (bad magic)"),
        "{text}"
    );
    assert!(
        text.contains("first bytes: 4e 4f 54 4d 41 47 49 43"),
        "{text}"
    );
    assert!(text.contains("validation: FAILED (bad_magic)"), "{text}");
    assert!(!text.contains("family #"), "{text}");
}

#[test]
fn inspect_reports_a_bad_record_after_the_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 1, 15, 2, &[]);
    let seg = &segments(dir.path())[0];
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(seg)
        .unwrap();
    // The second record starts right after the first (a family record), whose length is
    // the first word of its header; its kind is the u16 after that length.
    let mut len = [0u8; 4];
    file.read_exact_at(&mut len, 128).unwrap();
    let second = u32::from_ne_bytes(len) as u64;
    file.write_all_at(&0x7777u16.to_ne_bytes(), 128 + second + 4)
        .unwrap();
    let out = shmetrics(&["inspect", seg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("header: valid"), "{text}");
    assert!(
        text.contains("records: 1 valid (1 families, 0 series)"),
        "{text}"
    );
    assert!(text.contains("family #0 gen_c0 counter"), "{text}");
    assert!(
        text.contains(&format!(
            "validation: FAILED (unknown_record_kind): record at metadata offset {second} has unknown kind 30583"
        )),
        "{text}"
    );
}

#[test]
fn inspect_of_a_missing_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("shmetrics-1-2-0.shm");
    let out = shmetrics(&["inspect", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
    let out = shmetrics(&["inspect", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file"));
}

#[test]
fn vllm_workload_exposes_every_metric_of_the_json() {
    let json: serde_json::Value =
        serde_json::from_str(shmetrics_workload::VLLM_METRICS_JSON).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // --stay keeps the livesum gauges (in-flight operations, websocket connections) live.
    let out = generate(dir.path(), 2, 0, 20, &["--workload", "vllm", "--stay"]);
    let _workers = Stayers::parse(&out, 2);
    let text = dump(dir.path(), &[]);
    let fams = families(&text);
    let metrics = json["metrics"].as_array().unwrap();
    assert_eq!(metrics.len(), 69);
    for m in metrics {
        let name = m["name"].as_str().unwrap();
        let exposed = match m["type"].as_str().unwrap() {
            "counter" => format!("{}_total", name.strip_suffix("_total").unwrap_or(name)),
            _ => name.to_owned(),
        };
        assert!(fams.contains(&exposed), "{exposed} missing from the dump");
    }
    assert!(text.contains("engine=\"0\""));
    assert!(text.contains("engine=\"1\""));
    assert!(text.contains("model_name=\"Qwen/Qwen3-0.6B\""));
    let all = samples(&text);
    assert_eq!(
        value_of(&all, "shmetrics_reader_segments", ("state", "live")),
        Some(2.0)
    );
    let dropped = all
        .iter()
        .find(|s| s.name == "shmetrics_writer_dropped_series")
        .unwrap();
    assert_eq!(dropped.value, 0.0);
    // Each engine's iteration-tokens histogram saw exactly one observation per step.
    for engine in ["0", "1"] {
        assert_eq!(
            value_of(
                &all,
                "vllm:iteration_tokens_total_count",
                ("engine", engine)
            ),
            Some(20.0)
        );
    }
}

#[test]
fn generate_fails_when_a_worker_fails() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    // A 1 KiB file size limit kills each worker (SIGXFSZ) when it reserves its segment.
    for stay in [false, true] {
        let script = format!(
            "ulimit -f 1; exec \"$0\" generate --dir \"$1\" --processes 2 --ops 3{}",
            if stay { " --stay" } else { "" }
        );
        let out = Command::new("sh")
            .args(["-c", &script, BIN, d])
            .output()
            .expect("run sh");
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or_default();
        assert!(last.starts_with("shmetrics: generate: "), "{err}");
        assert!(last.contains("worker"), "{err}");
        if stay {
            assert!(last.contains("failed before it was ready"), "{err}");
        } else {
            assert!(last.contains("2 of 2 workers failed"), "{err}");
        }
        assert!(out.stdout.is_empty());
    }
    let missing = dir.path().join("missing");
    let out = shmetrics(&[
        "generate",
        "--dir",
        missing.to_str().unwrap(),
        "--processes",
        "1",
        "--ops",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(missing.to_str().unwrap()));
}

#[test]
fn compact_folds_dead_writers_without_changing_the_dump() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 3, 30, 7, &[]);
    let before = dump(dir.path(), &["--no-self-metrics"]);
    assert_eq!(segments(dir.path()).len(), 3);

    let out = ok(&["compact", "--dir", dir.path().to_str().unwrap()]);
    assert!(
        out.contains("folded 3 dead segments into archive generation 0")
            && out.contains("removed 3 files"),
        "{out}"
    );
    let left = segments(dir.path());
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].ends_with("shmetrics-archive.shm"));
    assert_eq!(dump(dir.path(), &["--no-self-metrics"]), before);
    check_gen(&samples(&before), 30, 3, 7);

    // More writers die: a second generation holds everything.
    generate(dir.path(), 2, 30, 7, &[]);
    let out = ok(&["compact", "--dir", dir.path().to_str().unwrap()]);
    assert!(out.contains("into archive generation 1"), "{out}");
    assert_eq!(segments(dir.path()).len(), 1);
    check_gen(&samples(&dump(dir.path(), &[])), 30, 5, 7);

    let out = ok(&["compact", "--dir", dir.path().to_str().unwrap()]);
    assert!(out.contains("no dead segments"), "{out}");
}

#[test]
fn compact_exits_3_while_another_compactor_runs_and_2_without_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let lock = std::fs::File::create(dir.path().join(".shmetrics-compact.lock")).unwrap();
    lock.lock().unwrap();
    let out = shmetrics(&["compact", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another compactor holds"), "{err}");
    let missing = dir.path().join("missing");
    let out = shmetrics(&["compact", "--dir", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

/// `dump` while segment files are truncated under it, one after another: every run ends with
/// an exit status (0: a truncated file is skipped and reported), never by a signal. Before,
/// a truncation between `dump`'s mapping and its reads killed it with SIGBUS.
#[test]
fn dump_survives_files_truncated_under_it() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 24, 400, 3, &[]);
    let segments: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "shm"))
        .collect();
    assert!(segments.len() >= 24);
    let cutter = {
        let segments = segments.clone();
        std::thread::spawn(move || {
            for path in segments {
                std::thread::sleep(Duration::from_millis(15));
                let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                file.set_len(4096).unwrap();
            }
        })
    };
    let started = Instant::now();
    let mut runs = 0;
    while !cutter.is_finished() && started.elapsed() < Duration::from_secs(60) {
        let out = Command::new(BIN)
            .args(["dump", "--dir", dir.path().to_str().unwrap()])
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            None,
            "dump killed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        runs += 1;
    }
    cutter.join().unwrap();
    assert!(runs > 0);
    // Afterwards every file is rejected by its header, and reported.
    let out = Command::new(BIN)
        .args(["dump", "--dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!(
            "shmetrics_reader_segments{{state=\"bad\"}} {}.0",
            segments.len()
        )),
        "{text}"
    );
}

/// README's command-line synopsis names exactly the options each subcommand's `--help`
/// lists (`run` takes `serve`'s as "serve's other options"), so neither drifts.
#[test]
fn readme_synopsis_matches_help() {
    let readme = include_str!("../../../README.md");
    let section = &readme[readme.find("## Command line").expect("the section")..];
    let block = section
        .split("```text\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the synopsis block");
    let options = |text: &str| -> BTreeSet<String> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .filter(|w| w.starts_with("--") && w.len() > 2)
            .map(str::to_owned)
            .collect()
    };
    let mut synopsis: BTreeMap<String, String> = BTreeMap::new();
    let mut current = String::new();
    for line in block.lines() {
        if let Some(rest) = line.strip_prefix("shmetrics ") {
            current = rest.split_whitespace().next().unwrap().to_owned();
        }
        let entry = synopsis.entry(current.clone()).or_default();
        entry.push_str(line);
        entry.push('\n');
    }
    let global: BTreeSet<String> = ["--help", "--verbose", "--quiet", "--version"]
        .map(str::to_owned)
        .into();
    let help_options = |command: &str| -> BTreeSet<String> {
        let help = ok(&[command, "--help"]);
        options(&help).difference(&global).cloned().collect()
    };
    // Every subcommand the top-level help lists (but `help`) has its synopsis.
    let top = ok(&["--help"]);
    let commands: Vec<String> = top
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect();
    assert!(commands.len() >= 10, "{top}");
    assert_eq!(
        synopsis.keys().cloned().collect::<BTreeSet<_>>(),
        commands.iter().cloned().collect::<BTreeSet<_>>()
    );
    for command in commands.iter().map(String::as_str) {
        let mut documented = options(&synopsis[command]);
        if command == "run" {
            documented.extend(
                options(&synopsis["serve"])
                    .into_iter()
                    .filter(|o| o != "--dir"),
            );
        }
        assert_eq!(
            documented,
            help_options(command),
            "README synopsis of {command}"
        );
    }
}

/// Completion scripts and manual pages are generated for every visible subcommand.
#[test]
fn completions_and_manual_pages() {
    let bash = ok(&["completions", "bash"]);
    assert!(bash.contains("_shmetrics()"), "{bash}");
    for sub in [
        "serve", "run", "dump", "demo", "compact", "generate", "inspect",
    ] {
        assert!(
            bash.contains(&format!("cmd=\"shmetrics__subcmd__{sub}\"")),
            "bash completes {sub}"
        );
    }
    assert!(bash.contains("--compact-interval-secs"));
    assert!(
        !bash.contains("generate-worker"),
        "hidden subcommands are not offered"
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        assert!(ok(&["completions", shell]).contains("serve"), "{shell}");
    }
    let page = ok(&["man"]);
    assert!(page.contains(".TH shmetrics 1"), "{page}");

    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    ok(&["man", "--dir", pages.to_str().unwrap()]);
    let mut names: Vec<String> = std::fs::read_dir(&pages)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "shmetrics-compact.1",
            "shmetrics-completions.1",
            "shmetrics-demo.1",
            "shmetrics-dump.1",
            "shmetrics-generate.1",
            "shmetrics-inspect.1",
            "shmetrics-man.1",
            "shmetrics-push.1",
            "shmetrics-run.1",
            "shmetrics-serve.1",
            "shmetrics.1",
        ]
    );
    let serve = std::fs::read_to_string(pages.join("shmetrics-serve.1")).unwrap();
    assert!(serve.contains(".TH shmetrics-serve 1"), "{serve}");
    assert!(serve.contains("compact\\-interval\\-secs"), "{serve}");
}

/// A demo killed with SIGKILL cannot remove its directory; the next demo removes every such
/// directory of a dead pid (and none of a running one), and says where it listens.
#[test]
fn demo_removes_the_directories_of_killed_demos() {
    let tmp = tempfile::tempdir().unwrap();
    let mut gone = Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let stale = tmp
        .path()
        .join(format!("shmetrics-demo-{dead_pid}-0000abcd"));
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("shmetrics-1-0-0.shm"), b"left behind").unwrap();
    let running = tmp
        .path()
        .join(format!("shmetrics-demo-{}-0000abcd", std::process::id()));
    std::fs::create_dir(&running).unwrap();
    let other = tmp.path().join("shmetrics-demo-notes");
    std::fs::create_dir(&other).unwrap();
    let out = Command::new(BIN)
        .args([
            "demo",
            "--engines",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--duration",
            "1",
        ])
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stale.exists(), "the killed demo's directory is removed");
    assert!(running.exists(), "a running demo's directory is kept");
    assert!(other.exists(), "a name that is not a demo's is kept");
    let mut left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    left.sort();
    let mut expected = vec![running.clone(), other.clone()];
    expected.sort();
    assert_eq!(left, expected, "the demo removed its own directory too");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let serving = stdout.lines().nth(1).unwrap();
    let port = serving
        .strip_prefix("serving http://127.0.0.1:")
        .and_then(|rest| rest.split_once("/metrics"))
        .map(|(port, _)| port)
        .unwrap_or_else(|| panic!("{serving}"));
    assert_eq!(
        serving,
        format!(
            "serving http://127.0.0.1:{port}/metrics (listening on 127.0.0.1:{port})  Ctrl-C to stop"
        )
    );
}
