//! `shmetrics push` against Debian's `prometheus-pushgateway` (started by the test on a free
//! loopback port) and against a scripted HTTP server for the failure paths.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_shmetrics");

fn shmetrics(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run shmetrics")
}

/// `shmetrics push --gateway URL --job j --dir PATH EXTRA...`.
fn push_job_j(url: &str, path: &str, extra: &[&str]) -> Output {
    let mut args = vec!["push", "--gateway", url, "--job", "j", "--dir", path];
    args.extend_from_slice(extra);
    shmetrics(&args)
}

fn generate(dir: &Path, processes: u32, ops: u32) {
    let out = shmetrics(&[
        "generate",
        "--dir",
        dir.to_str().unwrap(),
        "--processes",
        &processes.to_string(),
        "--series",
        "15",
        "--ops",
        &ops.to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// A running pushgateway, killed on drop.
struct Gateway(Child, SocketAddr);

impl Gateway {
    /// Starts Debian's pushgateway on `port`; `None` when it is not installed (a failure
    /// when validators are required).
    fn start(port: u16) -> Option<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = match Command::new("prometheus-pushgateway")
            .arg(format!("--web.listen-address={addr}"))
            // Debian's build persists to /var/lib/prometheus by default: in memory only.
            .arg("--persistence.file=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                assert!(!support::required(), "prometheus-pushgateway: {e}");
                eprintln!("prometheus-pushgateway not available ({e}): skipped");
                return None;
            }
        };
        let gateway = Self(child, addr);
        for _ in 0..200 {
            if TcpStream::connect(addr).is_ok() {
                return Some(gateway);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the pushgateway did not listen on {addr}");
    }

    fn metrics(&self) -> String {
        let mut conn = TcpStream::connect(self.1).unwrap();
        // HTTP/1.0: the answer is not chunked, so no chunk header splits a line.
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        conn.read_to_string(&mut out).unwrap();
        out
    }

    fn url(&self) -> String {
        format!("http://{}", self.1)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of the sample line starting with `series` (name and labels, exactly).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_push_replaces_the_group_with_the_merged_directory() {
    let Some(gateway) = Gateway::start(free_port()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    generate(dir.path(), 3, 4);
    let url = gateway.url();
    let push = |extra: &[&str]| {
        let mut args = vec!["push", "--gateway", &url, "--job", "batch", "--dir", path];
        args.extend(["--grouping", "instance=node1", "--grouping", "path=a/b"]);
        args.extend_from_slice(extra);
        let out = shmetrics(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let labels = "instance=\"node1\",job=\"batch\",path=\"a/b\"";
    push(&[]);
    let text = gateway.metrics();
    // 3 processes x 4 rounds, merged as one series per label set.
    assert_eq!(
        value(&text, &format!("gen_c0_total{{{labels},series=\"0\"}}")),
        Some(12.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!("gen_h0_seconds_count{{{labels},series=\"0\"}}")
        ),
        Some(12.0)
    );
    assert!(value(&text, &format!("push_time_seconds{{{labels}}}")).is_some());

    // Two more processes: the next push replaces the values.
    generate(dir.path(), 2, 4);
    push(&["--prefix", "gen_c"]);
    let text = gateway.metrics();
    assert_eq!(
        value(&text, &format!("gen_c0_total{{{labels},series=\"0\"}}")),
        Some(20.0)
    );
    // PUT replaced the whole group: the families the prefix left out are gone.
    assert!(!text.contains("gen_h0_seconds_count{"), "{text}");
    // POST adds the pushed names and keeps the others.
    push(&["--prefix", "gen_h0", "--method", "post"]);
    let text = gateway.metrics();
    assert_eq!(
        value(&text, &format!("gen_c0_total{{{labels},series=\"0\"}}")),
        Some(20.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("gen_h0_seconds_count{{{labels},series=\"0\"}}")
        ),
        Some(20.0)
    );
}

#[test]
fn a_gateway_that_comes_up_late_gets_the_push_and_one_that_stays_down_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    generate(dir.path(), 1, 2);

    // Down for good: the retries, then one line that says what failed.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let out = push_job_j(&url, path, &["--retries", "2"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.matches("retrying in").count(), 2, "{err}");
    assert!(
        err.ends_with(&format!(
            "shmetrics: push: cannot push to {url}/metrics/job/j after 3 attempts: Connection refused (os error 111)\n"
        )),
        "{err}"
    );

    // Down, then up while the push retries: it arrives.
    if Command::new("prometheus-pushgateway")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            !support::required(),
            "prometheus-pushgateway is not installed"
        );
        return;
    }
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let push = Command::new(BIN)
        .args([
            "push",
            "--gateway",
            &url,
            "--job",
            "late",
            "--dir",
            path,
            "--retries",
            "6",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let gateway = Gateway::start(port).expect("installed");
    let out = push.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("retrying in"), "{err}");
    assert_eq!(
        value(
            &gateway.metrics(),
            "gen_c0_total{instance=\"\",job=\"late\",series=\"0\"}"
        ),
        Some(2.0)
    );
}

/// A scripted HTTP server: answers each request with `status` and counts the requests.
fn scripted(status: u16) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            log.lock().unwrap().push(request_line.trim().to_owned());
            let answer = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: 13\r\nConnection: close\r\n\r\nscripted text"
            );
            let _ = conn.write_all(answer.as_bytes());
        }
    });
    (addr, seen)
}

#[test]
fn a_4xx_is_not_retried_and_a_5xx_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    generate(dir.path(), 1, 1);
    let (addr, seen) = scripted(400);
    let url = format!("http://{addr}");
    let out = push_job_j(&url, path, &["--retries", "3"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "shmetrics: push: the pushgateway refused the push to {url}/metrics/job/j: HTTP 400: scripted text\n"
        )
    );
    assert_eq!(*seen.lock().unwrap(), ["PUT /metrics/job/j HTTP/1.1"]);

    let (addr, seen) = scripted(503);
    let url = format!("http://{addr}");
    let out = push_job_j(&url, path, &["--retries", "2", "--method", "post"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.ends_with("after 3 attempts: HTTP 503: scripted text\n"),
        "{err}"
    );
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|r| r == "POST /metrics/job/j HTTP/1.1")
    );
}

#[test]
fn an_interval_push_pushes_until_a_signal_then_once_more() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 1, 1);
    let (addr, seen) = scripted(200);
    let mut push = Command::new(BIN)
        .args([
            "push",
            "--gateway",
            &format!("http://{addr}"),
            "--job",
            "j",
            "--interval",
            "1",
        ])
        .env("PROMETHEUS_MULTIPROC_DIR", dir.path())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.lock().unwrap().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = seen.lock().unwrap().len();
    assert!(before >= 2, "{before} pushes");
    kill(Pid::from_raw(push.id() as i32), Signal::SIGTERM).unwrap();
    assert!(push.wait().unwrap().success());
    assert_eq!(
        seen.lock().unwrap().len(),
        before + 1,
        "a last push after the signal"
    );
}

#[test]
fn bad_arguments_exit_2_with_a_reason() {
    for (args, says) in [
        (
            vec!["--gateway", "https://gw", "--job", "j", "--dir", "/tmp"],
            "shmetrics: push: pushgateway URL \"https://gw\": only http://HOST[:PORT][/PATH] is supported\n",
        ),
        (
            vec!["--gateway", "http://gw", "--job", "", "--dir", "/tmp"],
            "shmetrics: push: the job name is empty\n",
        ),
        (
            vec![
                "--gateway",
                "http://gw",
                "--job",
                "j",
                "--dir",
                "/nonexistent/metrics",
            ],
            "shmetrics: push: metrics directory /nonexistent/metrics does not exist\n",
        ),
    ] {
        let mut all = vec!["push"];
        all.extend(args);
        let out = Command::new(BIN)
            .args(&all)
            .env_remove("PROMETHEUS_MULTIPROC_DIR")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{all:?}");
        assert_eq!(String::from_utf8(out.stderr).unwrap(), says, "{all:?}");
    }
    let out = Command::new(BIN)
        .args(["push", "--gateway", "http://gw", "--job", "j"])
        .env_remove("PROMETHEUS_MULTIPROC_DIR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "shmetrics: push: give --dir DIR or set PROMETHEUS_MULTIPROC_DIR\n"
    );
    let out = shmetrics(&[
        "push",
        "--gateway",
        "http://gw",
        "--job",
        "j",
        "--grouping",
        "job=x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("\"job\" is not a label name other than job"),
    );
}
