//! Every exposition we produce must pass the external validators: `promtool check metrics`
//! (Debian's prometheus package) for the text format, and the Python `prometheus_client`
//! text and OpenMetrics parsers (ci/check_exposition.py) for both formats.
//!
//! README's test command installs both and sets `SHMETRICS_REQUIRE_VALIDATORS=1`, which
//! turns a missing validator into a failure instead of a skipped check.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod support;
use support::{promtool_available, promtool_check, required};

const BIN: &str = env!("CARGO_BIN_EXE_shmetrics");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python interpreter with prometheus_client, or None (a failure when required).
fn python() -> Option<String> {
    let python = std::env::var("SHMETRICS_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import prometheus_client"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Some(python)
    } else {
        assert!(!required(), "{python} cannot import prometheus_client");
        eprintln!("prometheus_client not available: Python parser checks skipped");
        None
    }
}

/// Runs the Python parser for `format` on `text`; returns its JSON summary line.
fn python_check(python: &str, format: &str, text: &str, what: &str) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let out = Command::new(python)
        .arg(repo_root().join("ci/check_exposition.py"))
        .arg(format)
        .arg(file.path())
        .output()
        .expect("run check_exposition.py");
    assert!(
        out.status.success(),
        "Python {format} parser rejected {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn run(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run shmetrics");
    assert!(
        out.status.success(),
        "shmetrics {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn check_directory(dir: &str, what: &str) {
    let text = run(&["dump", "--dir", dir, "--format", "prometheus"]);
    let om = run(&["dump", "--dir", dir, "--format", "openmetrics"]);
    assert!(om.ends_with("# EOF\n"));
    if promtool_available() {
        promtool_check(&text, what);
    }
    if let Some(python) = python() {
        let a = python_check(&python, "prometheus", &text, what);
        let b = python_check(&python, "openmetrics", &om, what);
        // Both parsers see the same families (the text parser strips _total from counter
        // family names, as prometheus_client does).
        let names = |s: &str| s.split("\"names\": ").nth(1).unwrap().to_owned();
        assert_eq!(names(&a), names(&b), "families differ between formats");
    }
}

#[test]
fn vllm_workload_from_several_processes_passes_validators() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    run(&[
        "generate",
        "--dir",
        d,
        "--workload",
        "vllm",
        "--processes",
        "4",
        "--series",
        "0",
        "--ops",
        "40",
    ]);
    check_directory(d, "the vLLM workload");
}

#[test]
fn generated_workload_passes_validators() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    run(&[
        "generate",
        "--dir",
        d,
        "--processes",
        "3",
        "--series",
        "45",
        "--ops",
        "5",
    ]);
    check_directory(d, "the gen workload");
}

#[test]
fn golden_renders_pass_validators() {
    let golden = repo_root().join("crates/shmetrics-reader/tests/golden");
    let mut checked = 0;
    let python = python();
    let promtool = promtool_available();
    for entry in std::fs::read_dir(&golden).expect("golden files exist") {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let what = path.display().to_string();
        let file = path.file_name().unwrap().to_str().unwrap();
        // Names escaped with dots or values are for scrapers that unescape them (Prometheus
        // 3): `U__a_2e_b__bucket` is not `U__a_2e_b` + `_bucket` to a classic parser, as in
        // prometheus_client's output of the same. Debian's promtool (2.42) predates quoted
        // UTF-8 names.
        if file.starts_with("utf8.dots.") || file.starts_with("utf8.values.") {
            continue;
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some("prom") => {
                if promtool && !file.starts_with("utf8.allow-utf-8.") {
                    promtool_check(&text, &what);
                }
                if let Some(p) = &python {
                    python_check(p, "prometheus", &text, &what);
                }
            }
            Some("om") => {
                if let Some(p) = &python {
                    python_check(p, "openmetrics", &text, &what);
                }
            }
            _ => continue,
        }
        checked += 1;
    }
    assert!(
        checked >= 4,
        "expected golden files in {}",
        golden.display()
    );
}

/// GET `path` from `addr` over a plain HTTP/1.1 connection; returns status and body.
fn http_get(addr: &str, path: &str, accept: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the demo");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the response");
    let raw = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("end of headers");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, body.to_owned())
}

/// Kills the demo if the test fails half-way.
struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn demo_serves_valid_metrics_and_leaves_nothing_behind() {
    use std::io::{BufRead, BufReader};
    let mut demo = Demo(
        Command::new(BIN)
            .args(["demo", "--engines", "3", "--listen", "127.0.0.1:0"])
            .args(["--duration", "120", "--rate", "20"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the demo"),
    );
    let mut lines = BufReader::new(demo.0.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let dir = PathBuf::from(first.rsplit(" writing to ").next().unwrap());
    assert!(dir.is_dir(), "{first}");
    let serving = lines.next().unwrap().unwrap();
    let url = serving
        .split_whitespace()
        .nth(1)
        .expect("serving URL")
        .to_owned();
    let addr = url
        .strip_prefix("http://")
        .and_then(|u| u.strip_suffix("/metrics"))
        .expect("http://ADDR/metrics")
        .to_owned();

    // Wait (bounded) until every engine has written and finished some requests.
    let mut text = String::new();
    for _ in 0..200 {
        let (status, body) = http_get(&addr, "/metrics", "text/plain;version=0.0.4");
        assert_eq!(status, 200);
        text = body;
        let engines_seen = (0..3)
            .filter(|i| text.contains(&format!("vllm:request_success_total{{engine=\"{i}\"")))
            .count();
        if engines_seen == 3 && text.contains("dynamo_component_requests_total{") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for i in 0..3 {
        assert!(
            text.contains(&format!("engine=\"{i}\"")),
            "engine {i} missing:\n{text}"
        );
    }
    assert!(text.contains("# TYPE dynamo_component_request_duration_seconds histogram"));
    assert!(text.contains("# TYPE shmetrics_scrape_duration_seconds histogram"));
    let (status, om) = http_get(
        &addr,
        "/metrics",
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    );
    assert_eq!(status, 200);
    assert!(om.ends_with("# EOF\n"));
    if promtool_available() {
        promtool_check(&text, "the demo");
    }
    if let Some(python) = python() {
        python_check(&python, "prometheus", &text, "the demo");
        python_check(&python, "openmetrics", &om, "the demo");
    }

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(demo.0.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = demo.0.wait().unwrap();
    assert!(status.success(), "demo exited with {status}: {rest:?}");
    assert!(
        rest.last()
            .is_some_and(|l| l.starts_with("stopped by signal 2")),
        "{rest:?}"
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "still listening on {addr}"
    );
}
