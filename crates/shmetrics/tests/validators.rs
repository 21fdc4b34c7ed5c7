//! Every exposition we produce must pass the external validators: `promtool check metrics`
//! (Debian's prometheus package) for the text format, and the Python `prometheus_client`
//! text and OpenMetrics parsers (ci/check_exposition.py) for both formats.
//!
//! README's test command installs both and sets `SHMETRICS_REQUIRE_VALIDATORS=1`, which
//! turns a missing validator into a failure instead of a skipped check.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_shmetrics");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn required() -> bool {
    std::env::var("SHMETRICS_REQUIRE_VALIDATORS").is_ok_and(|v| v == "1")
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

fn promtool_available() -> bool {
    let ok = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok || !required(), "promtool is not installed");
    if !ok {
        eprintln!("promtool not available: promtool checks skipped");
    }
    ok
}

/// Lint findings that come from upstream metric names we must reproduce as they are, not
/// from our rendering: vLLM's `vllm:` prefix, and its histogram
/// `vllm:iteration_tokens_total`.
const ACCEPTED_LINTS: &[&str] = &[
    "metric names should not contain ':'",
    "non-counter metrics should not have \"_total\" suffix",
];

/// Runs `promtool check metrics` on text-format `text`: it must parse, and every lint
/// finding must be one of [`ACCEPTED_LINTS`].
fn promtool_check(text: &str, what: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let findings =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    assert!(
        code == Some(0) || code == Some(3),
        "promtool rejected {what} (exit {code:?}): {findings}"
    );
    for line in findings.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            ACCEPTED_LINTS.iter().any(|a| line.contains(a)),
            "promtool lint finding in {what}: {line}"
        );
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
        match path.extension().and_then(|e| e.to_str()) {
            Some("prom") => {
                if promtool {
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
