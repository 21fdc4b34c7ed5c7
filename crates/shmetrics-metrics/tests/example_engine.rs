//! Runs the `engine_axum` example (built by `cargo test` with the other targets): its
//! engine processes write through the `metrics` macros, its axum worker serves `/metrics`;
//! one scrape must show the exact totals over every engine, pass promtool, and name each
//! family once. SIGINT or SIGTERM stops the worker, which stops its engines, removes the
//! directory it made and exits cleanly.

#[path = "../../shmetrics/tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{assert_type_lines_unique, example_binary, http_get, promtool_check};

const ENGINES: usize = 3;
const REQUESTS: usize = 640;
const TIMEOUT: Duration = Duration::from_secs(60);

/// Kills the worker if the test fails half-way.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn engine_axum_example_serves_the_sum_of_its_engines() {
    let dir = tempfile::tempdir().unwrap();
    let mut worker = Worker(
        Command::new(example_binary("engine_axum"))
            .args(["--engines", &ENGINES.to_string()])
            .args(["--requests", &REQUESTS.to_string(), "--port", "0", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, lines) = mpsc::channel();
    let stdout = worker.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut url = None;
    loop {
        let line = lines.recv_timeout(TIMEOUT).expect("the worker reports");
        if let Some(u) = line.strip_prefix("serving ") {
            url = Some(u.to_owned());
        } else if line == "engines done" {
            break;
        }
    }
    let (head, body) = http_get(&url.expect("the worker printed its URL"), None);
    assert!(
        head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );

    let per_model = ENGINES * REQUESTS / 2;
    // Tokens: 16 + i % 16 per request.
    let tokens: usize = (0..REQUESTS).map(|i| 16 + i % 16).sum::<usize>() * ENGINES;
    for line in [
        format!("engine_requests_total{{model=\"llama\"}} {per_model}.0"),
        format!("engine_requests_total{{model=\"qwen\"}} {per_model}.0"),
        format!("engine_generated_tokens_total {tokens}.0"),
        format!("engine_request_latency_seconds_count{{model=\"llama\"}} {per_model}"),
        // Latencies (i % 64 + 1) ms: llama (even i) 1, 3, ... 63 ms; 5 ms and below: 1, 3, 5.
        format!(
            "engine_request_latency_seconds_bucket{{model=\"llama\",le=\"0.005\"}} {}",
            3 * per_model / 32
        ),
        "engine_requests_running 0.0".to_owned(),
        format!(
            "engine_info{{version=\"{}\"}} 1.0",
            env!("CARGO_PKG_VERSION")
        ),
        format!("shmetrics_reader_segments{{state=\"live\"}} {ENGINES}.0"),
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing line {line:?} in:\n{body}"
        );
    }
    assert_type_lines_unique(&body);
    promtool_check(&body, "the engine_axum example's /metrics");

    kill(Pid::from_raw(worker.0.id() as i32), Signal::SIGINT).unwrap();
    let status = worker.0.wait().unwrap();
    assert!(status.success(), "worker exit status {status}");
}

/// Without `--dir` the worker makes its own directory under `TMPDIR`; SIGTERM (what a
/// service manager or `kill` sends) stops it as Ctrl-C does: engines stopped, exit status
/// 0, the directory removed.
#[test]
fn engine_axum_example_cleans_up_after_sigterm_and_sigint() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let tmp = tempfile::tempdir().unwrap();
        let mut worker = Worker(
            Command::new(example_binary("engine_axum"))
                .args(["--engines", "2", "--requests", "10", "--port", "0"])
                .env("TMPDIR", tmp.path())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut stdout = BufReader::new(worker.0.stdout.take().unwrap());
        let mut done = false;
        while !done {
            let mut line = String::new();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "the worker exited early"
            );
            done = line.trim_end() == "engines done";
        }
        let dir = tmp
            .path()
            .join(format!("shmetrics-engine-{}", worker.0.id()));
        assert!(dir.is_dir(), "{} while running", dir.display());
        kill(Pid::from_raw(worker.0.id() as i32), signal).unwrap();
        let status = worker.0.wait().unwrap();
        assert!(status.success(), "{signal}: worker exit status {status}");
        assert!(!dir.exists(), "{signal}: {} left behind", dir.display());
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "{signal}"
        );
    }
}
