//! The `/metrics` endpoint over real HTTP on 127.0.0.1: content negotiation from the
//! `Accept` headers clients really send, gzip, `HEAD`, 404 and 405, `/health`, the
//! self-metrics, snapshot sharing, concurrent scrapes while writers run, compaction beside
//! the scrapes, graceful shutdown, and the `serve` command itself.
//!
//! The client side speaks minimal HTTP/1.1 over `std::net::TcpStream` (one request per
//! connection, `Connection: close`); the server is the real hyper stack.

use shmetrics_layout::sync::AtomicU64;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shmetrics::server::{Server, ServerError, ServerOptions};
use shmetrics_layout::MetricKind;
use shmetrics_reader::snapshot::{Family, Series, SeriesLabels, Value};
use shmetrics_workload::GenWorkload;
use shmetrics_writer::Registry;

const BIN: &str = env!("CARGO_BIN_EXE_shmetrics");
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// What Prometheus 2.x sends by default.
const PROMETHEUS_2_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
/// What Prometheus 3.x sends by default.
const PROMETHEUS_3_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";
/// Upper bound of any single wait in these tests.
const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client.
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct Resp {
    status: u16,
    /// Header names lower-cased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        let mut found = self.headers.iter().filter(|(n, _)| n == name);
        let first = found.next().map(|(_, v)| v.as_str());
        assert!(found.next().is_none(), "header {name} repeated: {self:?}");
        first
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }

    /// The body, gunzipped when `Content-Encoding: gzip`.
    fn decoded(&self) -> String {
        match self.header("content-encoding") {
            None => self.text(),
            Some("gzip") => {
                let mut out = String::new();
                flate2::read::GzDecoder::new(&self.body[..])
                    .read_to_string(&mut out)
                    .expect("valid gzip");
                out
            }
            Some(other) => panic!("unexpected Content-Encoding {other}"),
        }
    }
}

fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).expect("send request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {:?}", String::from_utf8_lossy(&raw)));
    let head = std::str::from_utf8(&raw[..split]).expect("ASCII head");
    let body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status: u16 = parts.next().unwrap().parse().expect("status code");
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header line");
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let resp = Resp {
        status,
        headers,
        body,
    };
    if method != "HEAD" {
        let len: usize = resp
            .header("content-length")
            .expect("Content-Length")
            .parse()
            .unwrap();
        assert_eq!(len, resp.body.len(), "Content-Length matches the body");
    }
    resp
}

fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
    request(addr, "GET", path, headers)
}

/// GET /metrics, requiring 200.
fn scrape(addr: SocketAddr, headers: &[(&str, &str)]) -> Resp {
    let resp = get(addr, "/metrics", headers);
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    resp
}

// ---------------------------------------------------------------------------------------
// Parsing expositions.
// ---------------------------------------------------------------------------------------

/// Samples keyed by their series text (`name{labels}`, labels as rendered, sorted), in
/// either format. Panics on anything that is not a comment, a sample or `# EOF` at the
/// end of OpenMetrics.
fn samples(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") || line == "# EOF" {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line:?}"));
        assert!(!series.is_empty() && !series.starts_with('#'), "{line:?}");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        assert!(
            out.insert(series.to_owned(), value).is_none(),
            "duplicate series {series}"
        );
    }
    out
}

fn value(all: &HashMap<String, f64>, series: &str) -> f64 {
    *all.get(series)
        .unwrap_or_else(|| panic!("no {series} among {} series", all.len()))
}

// ---------------------------------------------------------------------------------------
// Servers and writers.
// ---------------------------------------------------------------------------------------

/// A server running in-process on its own runtime thread.
struct TestServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    fn start(server: Server) -> Self {
        let addr = server.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(server.run(async move {
                let _ = stopped.await;
            }))
        });
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn with(options: ServerOptions) -> Self {
        Self::start(Server::bind(options).expect("bind"))
    }

    fn shutdown(&mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.thread
            .take()
            .map_or(Ok(()), |t| t.join().expect("server thread panicked"))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.shutdown().expect("server ended with an error");
        } else if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn options(dir: &Path) -> ServerOptions {
    ServerOptions::new(dir, "127.0.0.1:0".parse().unwrap())
}

/// Runs `shmetrics generate` (writers that exit once done, leaving dead segments).
fn generate(dir: &Path, processes: u32, ops: u32) {
    let out = Command::new(BIN)
        .args(["generate", "--dir", dir.to_str().unwrap(), "--processes"])
        .arg(processes.to_string())
        .args(["--series", "15", "--ops"])
        .arg(ops.to_string())
        .output()
        .expect("run generate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writer processes started with `generate --stay`, SIGTERMed on drop.
struct Stayers(Vec<i32>);

impl Stayers {
    fn start(dir: &Path, processes: u32, ops: u32) -> Self {
        Self::with_series(dir, processes, 15, ops)
    }

    fn with_series(dir: &Path, processes: u32, series: u32, ops: u32) -> Self {
        let out = Command::new(BIN)
            .args(["generate", "--stay", "--dir", dir.to_str().unwrap()])
            .arg("--processes")
            .arg(processes.to_string())
            .arg("--series")
            .arg(series.to_string())
            .arg("--ops")
            .arg(ops.to_string())
            .output()
            .expect("run generate --stay");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pids: Vec<i32> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.parse().expect("a pid"))
            .collect();
        assert_eq!(pids.len(), processes as usize);
        Self(pids)
    }
}

impl Drop for Stayers {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
}

/// An in-process writer running gen rounds in a thread until stopped.
struct LiveWriter {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl LiveWriter {
    fn start(dir: &Path) -> Self {
        let registry = Registry::open(dir).expect("open a registry");
        let workload = GenWorkload::register(&registry, 15).expect("register gen");
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let (s, r) = (Arc::clone(&stop), Arc::clone(&rounds));
        let thread = std::thread::spawn(move || {
            let _registry = registry;
            // Bounded: at most 10 million rounds, and stopped by the test long before.
            for round in 0..10_000_000 {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                workload.round(round);
                r.store(round + 1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        Self {
            stop,
            rounds,
            thread: Some(thread),
        }
    }

    /// Stops the rounds; returns how many were done.
    fn stop(&mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("writer thread");
        }
        self.rounds.load(Ordering::SeqCst)
    }
}

impl Drop for LiveWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn bad_segment(dir: &Path) {
    std::fs::write(dir.join("shmetrics-1-0-0.shm"), vec![0u8; 4096]).unwrap();
}

// ---------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------

#[test]
fn content_type_follows_real_accept_headers() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 2, 3);
    let server = TestServer::with(options(dir.path()));
    let cases: &[(Option<&str>, &str)] = &[
        (None, TEXT),
        (Some(PROMETHEUS_2_ACCEPT), OPENMETRICS),
        (
            Some(PROMETHEUS_3_ACCEPT),
            "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=allow-utf-8",
        ),
        (Some("text/plain;version=0.0.4"), TEXT),
        (Some("*/*"), TEXT),
        (Some("application/openmetrics-text;version=1.0.0;q=0"), TEXT),
        (
            Some("application/openmetrics-text;version=1.0.0;q=0,text/plain;q=0.5"),
            TEXT,
        ),
        (Some("application/openmetrics-text"), OPENMETRICS),
        (Some("application/json"), TEXT),
    ];
    for &(accept, want) in cases {
        let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("Accept", *a)).collect();
        let resp = scrape(server.addr, &headers);
        assert_eq!(
            resp.header("content-type"),
            Some(want),
            "Accept: {accept:?}"
        );
        let body = resp.text();
        let all = samples(&body);
        assert_eq!(value(&all, r#"gen_c0_total{series="0"}"#), 6.0);
        assert_eq!(value(&all, r#"gen_h0_seconds_count{series="0"}"#), 6.0);
        if want.starts_with(OPENMETRICS) {
            assert!(body.ends_with("\n# EOF\n"), "Accept: {accept:?}");
            assert!(body.contains("\n# TYPE gen_c0 counter\n"));
        } else {
            assert!(!body.contains("# EOF"), "Accept: {accept:?}");
            assert!(body.contains("\n# TYPE gen_c0_total counter\n"));
        }
    }
}

/// Names outside the classic character set, as a scraper asks for them: the classic
/// underscore escaping by default and for clients that never ask (Prometheus 2), quoted
/// UTF-8 names for Prometheus 3 (`escaping=allow-utf-8`, named in the content type), and
/// the `dots`, `values` and `underscores` schemes when asked for with version 1.0.0.
#[test]
fn utf8_names_are_escaped_as_the_scraper_asks() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    registry
        .counter("my.dotted", "Dotted.", &["lbl.x"])
        .unwrap()
        .labels(&["v"])
        .unwrap()
        .inc_by(3.0);
    let server = TestServer::with(options(dir.path()));
    let text_1 = "text/plain; version=1.0.0; charset=utf-8";
    let cases: &[(Option<&str>, String, &str)] = &[
        (None, TEXT.to_owned(), "my_dotted_total{lbl_x=\"v\"} 3.0"),
        (
            Some(PROMETHEUS_2_ACCEPT),
            OPENMETRICS.to_owned(),
            "my_dotted_total{lbl_x=\"v\"} 3.0",
        ),
        (
            Some(PROMETHEUS_3_ACCEPT),
            format!("{OPENMETRICS}; escaping=allow-utf-8"),
            "{\"my.dotted_total\",\"lbl.x\"=\"v\"} 3.0",
        ),
        (
            Some("text/plain;version=1.0.0;escaping=allow-utf-8"),
            format!("{text_1}; escaping=allow-utf-8"),
            "{\"my.dotted_total\",\"lbl.x\"=\"v\"} 3.0",
        ),
        (
            Some("text/plain;version=1.0.0;escaping=dots"),
            format!("{text_1}; escaping=dots"),
            "my_dot_dotted__total{lbl_dot_x=\"v\"} 3.0",
        ),
        (
            Some("application/openmetrics-text;version=1.0.0;escaping=values"),
            format!("{OPENMETRICS}; escaping=values"),
            "U__my_2e_dotted__total{U__lbl_2e_x=\"v\"} 3.0",
        ),
        (
            Some("application/openmetrics-text;version=1.0.0;escaping=nonsense"),
            format!("{OPENMETRICS}; escaping=underscores"),
            "my_dotted_total{lbl_x=\"v\"} 3.0",
        ),
        // Only version 1.0.0 has the parameter.
        (
            Some("text/plain;version=0.0.4;escaping=allow-utf-8"),
            TEXT.to_owned(),
            "my_dotted_total{lbl_x=\"v\"} 3.0",
        ),
    ];
    for (accept, content_type, line) in cases {
        let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("Accept", *a)).collect();
        let resp = scrape(server.addr, &headers);
        assert_eq!(
            resp.header("content-type"),
            Some(content_type.as_str()),
            "Accept: {accept:?}"
        );
        let body = resp.text();
        assert!(
            body.lines().any(|l| l == *line),
            "Accept: {accept:?}: no line {line:?} in\n{body}"
        );
    }
    drop(registry);
}

#[test]
fn gzip_round_trip_in_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 2, 3);
    // No self-metrics: the data is static, so every scrape renders the same bytes.
    let mut opts = options(dir.path());
    opts.self_metrics = false;
    let server = TestServer::with(opts);
    for accept in ["text/plain", PROMETHEUS_2_ACCEPT] {
        let plain = scrape(server.addr, &[("Accept", accept)]);
        assert_eq!(plain.header("content-encoding"), None);
        assert_eq!(plain.header("vary"), Some("Accept, Accept-Encoding"));
        for encoding in ["gzip", "gzip, deflate, br", "br;q=1.0, gzip;q=0.8", "*"] {
            let zipped = scrape(
                server.addr,
                &[("Accept", accept), ("Accept-Encoding", encoding)],
            );
            assert_eq!(
                zipped.header("content-encoding"),
                Some("gzip"),
                "{encoding}"
            );
            assert_eq!(zipped.header("vary"), Some("Accept, Accept-Encoding"));
            assert_eq!(zipped.header("content-type"), plain.header("content-type"));
            assert!(zipped.body.len() < plain.body.len() / 3, "it compresses");
            assert_eq!(zipped.decoded(), plain.text(), "{encoding}");
        }
        for encoding in ["gzip;q=0", "identity", "deflate"] {
            let resp = scrape(
                server.addr,
                &[("Accept", accept), ("Accept-Encoding", encoding)],
            );
            assert_eq!(resp.header("content-encoding"), None, "{encoding}");
            assert_eq!(resp.body, plain.body);
        }
    }
}

#[test]
fn head_sends_the_headers_of_get_without_a_body() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 1, 2);
    let mut opts = options(dir.path());
    opts.self_metrics = false;
    let server = TestServer::with(opts);
    for (accept, encoding) in [
        ("*/*", "identity"),
        (PROMETHEUS_2_ACCEPT, "identity"),
        (PROMETHEUS_2_ACCEPT, "gzip"),
    ] {
        let headers = [("Accept", accept), ("Accept-Encoding", encoding)];
        let full = scrape(server.addr, &headers);
        let head = request(server.addr, "HEAD", "/metrics", &headers);
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty(), "HEAD has no body");
        for name in ["content-type", "content-encoding", "vary", "content-length"] {
            assert_eq!(head.header(name), full.header(name), "{name}");
        }
        assert_eq!(
            head.header("content-length"),
            Some(full.body.len().to_string().as_str())
        );
    }
    let head = request(server.addr, "HEAD", "/health", &[]);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-type"), Some("application/json"));
}

#[test]
fn other_paths_404_and_other_methods_405() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::with(options(dir.path()));
    for path in ["/", "/metric", "/metrics/", "/healthz", "/favicon.ico"] {
        let resp = get(server.addr, path, &[]);
        assert_eq!(resp.status, 404, "{path}");
        assert_eq!(resp.header("allow"), None);
    }
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        for path in ["/metrics", "/health"] {
            let resp = request(server.addr, method, path, &[("Content-Length", "0")]);
            assert_eq!(resp.status, 405, "{method} {path}");
            assert_eq!(resp.header("allow"), Some("GET, HEAD"), "{method} {path}");
        }
    }
    // A query string does not change the path.
    let resp = scrape(server.addr, &[]);
    let with_query = get(server.addr, "/metrics?debug=1", &[]);
    assert_eq!(with_query.status, 200);
    assert_eq!(
        with_query.header("content-type"),
        resp.header("content-type")
    );
}

/// `/health` as JSON, with its status code.
fn health(addr: SocketAddr) -> (u16, serde_json::Value) {
    let resp = get(addr, "/health", &[]);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    (resp.status, serde_json::from_slice(&resp.body).unwrap())
}

/// `/health` reports the directory as it is now, by a pass of its own, without waiting for
/// or taking a scrape: writers that die are no longer live at the next request; what the
/// latest scrape found is reported apart, with its age.
#[test]
fn health_tells_the_directory_now() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 2, 3);
    let server = TestServer::with(options(dir.path()));
    let (status, body) = health(server.addr);
    assert_eq!(status, 200);
    assert_eq!(
        body,
        serde_json::json!({
            "status": "ok", "live_segments": 0, "dead_segments": 2, "archive": false,
            "db_files": 0, "db_writers": 0, "unreadable_files": 0, "other_entries": 0,
            "last_scrape": null,
        })
    );

    // Three writers start: live at once, before any scrape.
    let writers: Vec<LiveWriter> = (0..3).map(|_| LiveWriter::start(dir.path())).collect();
    let (_, body) = health(server.addr);
    assert_eq!(
        (
            body["live_segments"].as_u64(),
            body["dead_segments"].as_u64()
        ),
        (Some(3), Some(2))
    );
    scrape(server.addr, &[]);
    let (_, body) = health(server.addr);
    assert_eq!(body["last_scrape"]["series"], 15);
    assert_eq!(body["last_scrape"]["bad_segments"], 0);
    let age = body["last_scrape"]["age_seconds"].as_f64().unwrap();
    assert!((0.0..60.0).contains(&age), "{age}");

    // They die: no longer live at /health, with no scrape in between. (Bounded wait: a
    // process another test forks at that moment holds a copy of a segment's descriptor,
    // and so its lock, until it execs.)
    drop(writers);
    let mut answer = health(server.addr);
    for _ in 0..100 {
        if answer.1["live_segments"].as_u64() == Some(0) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        answer = health(server.addr);
    }
    let (status, body) = answer;
    assert_eq!(status, 200);
    assert_eq!(
        (
            body["live_segments"].as_u64(),
            body["dead_segments"].as_u64()
        ),
        (Some(0), Some(5))
    );
    assert_eq!(
        body["last_scrape"]["series"], 15,
        "the scrape before they died"
    );

    // prometheus_client files: counted, and their writers by pid (ours is alive, the
    // other pid is not); other entries counted apart; a bad segment is one more dead file
    // until a scrape finds it bad.
    std::fs::write(
        dir.path()
            .join(format!("counter_{}.db", std::process::id())),
        b"x",
    )
    .unwrap();
    std::fs::write(dir.path().join("gauge_livesum_2147483646.db"), b"x").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    bad_segment(dir.path());
    scrape(server.addr, &[]);
    let (_, body) = health(server.addr);
    assert_eq!(
        (
            body["db_files"].as_u64(),
            body["db_writers"].as_u64(),
            body["other_entries"].as_u64(),
            body["dead_segments"].as_u64(),
        ),
        (Some(2), Some(1), Some(2), Some(6))
    );
    assert_eq!(body["last_scrape"]["bad_segments"], 1);

    // Compacted: the dead segments are folded into the archive.
    shmetrics_reader::Reader::open(dir.path())
        .unwrap()
        .compact()
        .unwrap();
    let (_, body) = health(server.addr);
    assert_eq!(body["archive"], true);
    assert_eq!(
        body["dead_segments"], 1,
        "only the bad segment is left: {body}"
    );
}

/// Files this user cannot read (a worker running as another user than the writers) make
/// `/health` say so with a 503, as does a directory that is gone.
#[test]
fn health_says_when_nothing_is_readable() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 2, 3);
    let server = TestServer::with(options(dir.path()));
    let root = nix::unistd::geteuid().is_root();
    let segments: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for path in &segments {
        if root {
            // Another user's files (nobody's); root could open any mode.
            nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        } else {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o000)).unwrap();
        }
    }
    let (status, body) = health(server.addr);
    assert_eq!(status, 503);
    assert_eq!(body["status"], "unreadable");
    assert_eq!(body["unreadable_files"], 2);
    assert_eq!(
        (
            body["live_segments"].as_u64(),
            body["dead_segments"].as_u64()
        ),
        (Some(0), Some(0))
    );

    // One readable file is enough to be ok.
    let _writer = LiveWriter::start(dir.path());
    let (status, body) = health(server.addr);
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    assert_eq!(body["unreadable_files"], 2);

    std::fs::remove_dir_all(dir.path()).unwrap();
    let (status, body) = health(server.addr);
    assert_eq!(status, 503);
    assert_eq!(body["status"], "error");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("does not exist"), "{error}");
}

#[test]
fn self_metrics_count_scrapes_and_requests() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 2, 3);
    bad_segment(dir.path());
    let server = TestServer::with(options(dir.path()));
    // Each body is rendered before its own scrape is recorded: scrape n shows n - 1.
    for n in 0..3 {
        let all = samples(&scrape(server.addr, &[]).text());
        let count = |format: &str| {
            value(
                &all,
                &format!("shmetrics_scrape_duration_seconds_count{{format=\"{format}\"}}"),
            )
        };
        assert_eq!(count("prometheus"), f64::from(n));
        assert_eq!(count("openmetrics"), 0.0);
        assert_eq!(
            value(
                &all,
                r#"shmetrics_scrape_duration_seconds_bucket{format="prometheus",le="+Inf"}"#
            ),
            f64::from(n)
        );
        if n > 0 {
            assert_eq!(
                value(
                    &all,
                    r#"shmetrics_http_requests_total{code="200",path="/metrics"}"#
                ),
                f64::from(n)
            );
        }
        assert_eq!(
            value(&all, r#"shmetrics_reader_segments{state="dead"}"#),
            2.0
        );
        assert_eq!(
            value(&all, r#"shmetrics_reader_segments{state="bad"}"#),
            1.0
        );
        assert_eq!(
            value(
                &all,
                r#"shmetrics_reader_invalid_segments{reason="bad_magic"}"#
            ),
            1.0
        );
        assert_eq!(value(&all, "shmetrics_reader_series"), 13.0);
    }
    assert_eq!(get(server.addr, "/nope", &[]).status, 404);
    assert_eq!(get(server.addr, "/health", &[]).status, 200);
    let om = scrape(server.addr, &[("Accept", PROMETHEUS_2_ACCEPT)]);
    let all = samples(&om.text());
    assert_eq!(
        value(
            &all,
            r#"shmetrics_scrape_duration_seconds_count{format="prometheus"}"#
        ),
        3.0
    );
    assert_eq!(
        value(
            &all,
            r#"shmetrics_scrape_duration_seconds_count{format="openmetrics"}"#
        ),
        0.0
    );
    assert_eq!(
        value(
            &all,
            r#"shmetrics_http_requests_total{code="200",path="/metrics"}"#
        ),
        3.0
    );
    assert_eq!(
        value(
            &all,
            r#"shmetrics_http_requests_total{code="404",path="other"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &all,
            r#"shmetrics_http_requests_total{code="200",path="/health"}"#
        ),
        1.0
    );
    let body = om.text();
    assert!(body.contains("\n# TYPE shmetrics_http_requests counter\n"));
    assert!(body.contains("\n# TYPE shmetrics_scrape_duration_seconds histogram\n"));
    // Self-metrics are kept whatever the prefix filter; --no-self-metrics drops them all.
    let mut opts = options(dir.path());
    opts.prefixes = vec!["gen_c".into()];
    let filtered = TestServer::with(opts);
    let all = samples(&scrape(filtered.addr, &[]).text());
    assert!(
        all.keys()
            .all(|k| k.starts_with("gen_c") || k.starts_with("shmetrics_"))
    );
    assert_eq!(value(&all, r#"gen_c4_total{series="0"}"#), 6.0);
    assert!(!all.keys().any(|k| k.starts_with("gen_g")));
    assert_eq!(value(&all, "shmetrics_reader_series"), 13.0);
    let mut opts = options(dir.path());
    opts.self_metrics = false;
    let bare = TestServer::with(opts);
    let all = samples(&scrape(bare.addr, &[]).text());
    assert!(!all.keys().any(|k| k.starts_with("shmetrics_")));
    // 5 counters, 3 gauges, 5 histograms of 20 bounds + `+Inf`, `_count` and `_sum`.
    assert_eq!(all.len(), 5 + 3 + 5 * 23);
}

/// A directory of 6 live writers × 8,000 series (4 to 5 MiB of slots) is folded on the
/// threads asked, in groups of at least 2 MiB, with the same samples; the self-metric tells.
#[test]
fn a_large_directory_is_folded_on_the_threads_asked() {
    let dir = tempfile::tempdir().unwrap();
    let _stayers = Stayers::with_series(dir.path(), 6, 8000, 2);
    let served = |threads: usize| {
        let mut opts = options(dir.path());
        opts.fold_threads = threads;
        let server = TestServer::with(opts);
        samples(&scrape(server.addr, &[]).text())
    };
    let (one, two, many) = (served(1), served(2), served(16));
    assert_eq!(value(&one, "shmetrics_reader_fold_threads"), 1.0);
    assert_eq!(value(&two, "shmetrics_reader_fold_threads"), 2.0);
    // At most one group per 2 MiB of slots, whatever the threads allowed.
    assert_eq!(value(&many, "shmetrics_reader_fold_threads"), 2.0);
    let directory = |all: &HashMap<String, f64>| {
        let mut kept: Vec<(String, u64)> = (all.iter())
            .filter(|(k, _)| k.starts_with("gen_"))
            .map(|(k, v)| (k.clone(), v.to_bits()))
            .collect();
        kept.sort();
        kept
    };
    assert_eq!(directory(&two), directory(&one));
    assert_eq!(directory(&many), directory(&one));
    assert!(directory(&one).len() > 8000, "{}", directory(&one).len());
    // The command line's flag reaches the reader.
    let path = dir.path().to_str().unwrap();
    let args = [
        "--dir",
        path,
        "--listen",
        "127.0.0.1:0",
        "--fold-threads",
        "2",
    ];
    let serve = ServeProcess::start(&args, &[]);
    let all = samples(&scrape(serve.addr, &[]).text());
    assert_eq!(value(&all, "shmetrics_reader_fold_threads"), 2.0);
}

#[test]
fn snapshots_are_fresh_by_default_and_reused_within_max_age() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let counter = registry
        .counter("app_requests", "Requests.", &[])
        .unwrap()
        .unlabelled()
        .unwrap()
        .clone();
    counter.inc();
    let fresh = TestServer::with(options(dir.path()));
    let mut opts = options(dir.path());
    opts.max_snapshot_age = Duration::from_secs(3600);
    let cached = TestServer::with(opts);

    let first = scrape(cached.addr, &[]);
    assert_eq!(value(&samples(&first.text()), "app_requests_total"), 1.0);
    assert_eq!(
        value(
            &samples(&scrape(fresh.addr, &[]).text()),
            "app_requests_total"
        ),
        1.0
    );
    counter.inc_by(2.0);
    // Default: every scrape arriving after a snapshot takes a new one.
    assert_eq!(
        value(
            &samples(&scrape(fresh.addr, &[]).text()),
            "app_requests_total"
        ),
        3.0
    );
    // Within the maximum age the same snapshot, and the same rendering, is served.
    let second = scrape(cached.addr, &[]);
    assert_eq!(second.body, first.body, "the cached body");
    // Another format is rendered from that same snapshot, once.
    let om = scrape(cached.addr, &[("Accept", PROMETHEUS_2_ACCEPT)]);
    let all = samples(&om.text());
    assert_eq!(value(&all, "app_requests_total"), 1.0);
    assert_eq!(
        value(
            &all,
            r#"shmetrics_scrape_duration_seconds_count{format="prometheus"}"#
        ),
        1.0,
        "one text rendering"
    );
    let om_again = scrape(cached.addr, &[("Accept", PROMETHEUS_2_ACCEPT)]);
    assert_eq!(om_again.body, om.body);
}

#[test]
fn concurrent_scrapes_while_writers_run() {
    const CLIENTS: usize = 8;
    const SCRAPES: usize = 25;
    const STAY_OPS: u32 = 5;
    let dir = tempfile::tempdir().unwrap();
    let stayers = Stayers::start(dir.path(), 2, STAY_OPS);
    let mut live = LiveWriter::start(dir.path());
    let server = TestServer::with(options(dir.path()));
    let addr = server.addr;
    let clients: Vec<JoinHandle<usize>> = (0..CLIENTS)
        .map(|client| {
            std::thread::spawn(move || {
                let accept = if client % 2 == 0 {
                    PROMETHEUS_2_ACCEPT
                } else {
                    "*/*"
                };
                let encoding = if client % 4 < 2 { "gzip" } else { "identity" };
                let mut last: HashMap<String, f64> = HashMap::new();
                let mut checked = 0;
                for _ in 0..SCRAPES {
                    let resp = scrape(addr, &[("Accept", accept), ("Accept-Encoding", encoding)]);
                    let want = if client % 2 == 0 { OPENMETRICS } else { TEXT };
                    assert_eq!(resp.header("content-type"), Some(want));
                    let body = resp.decoded();
                    if want == OPENMETRICS {
                        assert!(body.ends_with("\n# EOF\n"));
                    }
                    let all = samples(&body);
                    assert!(value(&all, r#"gen_c0_total{series="0"}"#) >= f64::from(2 * STAY_OPS));
                    for (series, &v) in &all {
                        let name = series.split('{').next().unwrap();
                        let monotonic = name.ends_with("_total")
                            || name.ends_with("_bucket")
                            || name.ends_with("_count");
                        if !monotonic {
                            continue;
                        }
                        if let Some(&before) = last.get(series) {
                            assert!(
                                v >= before,
                                "client {client}: {series} went {before} -> {v}"
                            );
                            checked += 1;
                        }
                        last.insert(series.clone(), v);
                    }
                }
                checked
            })
        })
        .collect();
    let checked: usize = clients
        .into_iter()
        .map(|c| c.join().expect("client thread"))
        .sum();
    assert!(checked > 0);
    let rounds = live.stop();
    assert!(rounds > 0);
    // Exact totals once the writers are quiet: 2 staying writers × 5 rounds + the
    // in-process writer's rounds (its thread dropped its registry: its segment is dead,
    // its counts stay).
    let all = samples(&scrape(addr, &[]).text());
    let total = f64::from(2 * STAY_OPS) + rounds as f64;
    for k in 0..5 {
        assert_eq!(
            value(&all, &format!("gen_c{k}_total{{series=\"0\"}}")),
            total
        );
        assert_eq!(
            value(&all, &format!("gen_h{k}_seconds_count{{series=\"0\"}}")),
            total
        );
    }
    assert_eq!(
        value(&all, r#"shmetrics_reader_segments{state="live"}"#),
        2.0
    );
    assert_eq!(
        value(&all, r#"shmetrics_reader_segments{state="dead"}"#),
        1.0
    );
    assert_eq!(
        value(
            &all,
            r#"shmetrics_http_requests_total{code="200",path="/metrics"}"#
        ),
        (CLIENTS * SCRAPES) as f64
    );
    drop(stayers);
}

#[test]
fn extra_families_are_served_and_shutdown_finishes_in_flight_requests() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 1, 2);
    // The extra hook announces each rendering and, the first time, waits to be released:
    // the request is then in flight while the server is told to stop.
    let (entered_tx, entered) = mpsc::channel::<()>();
    let (release, released) = mpsc::channel::<()>();
    let entered_tx = Mutex::new(entered_tx);
    let released = Mutex::new(released);
    let extra = Arc::new(move || {
        let _ = entered_tx.lock().unwrap().send(());
        let _ = released.lock().unwrap().recv_timeout(WAIT);
        vec![Family {
            name: Arc::from("aaa_demo_requests"),
            kind: MetricKind::Counter,
            help: Arc::from("Requests seen by the embedding program."),
            bounds: Arc::from(&[][..]),
            series: vec![Series {
                labels: Arc::new(SeriesLabels::new(vec![(
                    Box::from("model"),
                    Box::from("m"),
                )])),
                pid: None,
                created_unix_nanos: None,
                exemplars: None,
                value: Value::Counter(42.0),
            }],
        }]
    });
    let server = Server::bind(options(dir.path())).unwrap().with_extra(extra);
    let mut server = TestServer::start(server);
    let addr = server.addr;
    let client = std::thread::spawn(move || scrape(addr, &[]));
    entered.recv_timeout(WAIT).expect("the scrape is rendering");
    let stop = server.stop.take().unwrap();
    stop.send(()).unwrap();
    // The listener closes first...
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(addr).is_ok() {
        assert!(Instant::now() < deadline, "the listener is still open");
        std::thread::sleep(Duration::from_millis(10));
    }
    // ...and the request in flight still completes.
    release.send(()).unwrap();
    let resp = client.join().expect("client thread");
    let body = resp.text();
    assert!(body.starts_with(
        "# HELP aaa_demo_requests_total Requests seen by the embedding program.\n# TYPE aaa_demo_requests_total counter\naaa_demo_requests_total{model=\"m\"} 42.0\n"
    ));
    assert_eq!(value(&samples(&body), r#"gen_c0_total{series="0"}"#), 2.0);
    server.shutdown().expect("run returns Ok");
}

// ---------------------------------------------------------------------------------------
// The `serve` command.
// ---------------------------------------------------------------------------------------

/// A `shmetrics serve` process, SIGKILLed on drop if still running.
struct ServeProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServeProcess {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .args(args)
            .env_remove("DYN_SYSTEM_PORT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start serve");
        let mut line = String::new();
        BufReader::new(child.stderr.take().unwrap())
            .read_line(&mut line)
            .expect("read the serving line");
        let addr = line
            .strip_prefix("serving http://")
            .and_then(|rest| rest.split_once("/metrics from "))
            .map(|(addr, _)| addr.parse::<SocketAddr>().expect("an address"))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Self { child, addr }
    }

    fn signal_and_wait(&mut self, signal: Signal) -> ExitStatus {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "serve did not exit on {signal}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn serve_prints_the_bound_address_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 1, 4);
    let d = dir.path().to_str().unwrap();
    let mut serve = ServeProcess::start(
        &["--dir", d, "--listen", "127.0.0.1:0", "--prefix", "gen_c"],
        &[],
    );
    assert_eq!(serve.addr.ip().to_string(), "127.0.0.1");
    assert_ne!(serve.addr.port(), 0);
    let all = samples(&scrape(serve.addr, &[]).text());
    assert_eq!(value(&all, r#"gen_c3_total{series="0"}"#), 4.0);
    assert!(!all.keys().any(|k| k.starts_with("gen_h")));
    assert_eq!(serve.signal_and_wait(Signal::SIGTERM).code(), Some(0));
    assert!(
        TcpStream::connect(serve.addr).is_err(),
        "no longer listening"
    );
}

#[test]
fn serve_honours_dyn_system_port_and_exits_0_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let mut serve = ServeProcess::start(
        &["--dir", d, "--no-self-metrics", "--max-age-ms", "1000"],
        &[("DYN_SYSTEM_PORT", "0")],
    );
    assert_eq!(serve.addr.ip().to_string(), "0.0.0.0", "all interfaces");
    let local = SocketAddr::from(([127, 0, 0, 1], serve.addr.port()));
    let resp = scrape(local, &[]);
    assert_eq!(resp.body, b"", "an empty directory, no self-metrics");
    assert_eq!(serve.signal_and_wait(Signal::SIGINT).code(), Some(0));
}

#[test]
fn serve_format_forces_one_exposition_whatever_the_accept_header() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 2, 3);
    let d = dir.path().to_str().unwrap();
    let accepts = [
        None,
        Some(PROMETHEUS_2_ACCEPT),
        Some(PROMETHEUS_3_ACCEPT),
        Some("text/plain;version=0.0.4"),
        Some("application/openmetrics-text;version=1.0.0"),
    ];
    for (format, want, other) in [
        ("prometheus", TEXT, "openmetrics"),
        ("openmetrics", OPENMETRICS, "prometheus"),
    ] {
        let mut serve = ServeProcess::start(
            &["--dir", d, "--listen", "127.0.0.1:0", "--format", format],
            &[],
        );
        for accept in accepts {
            let mut headers = vec![("Accept-Encoding", "gzip")];
            headers.extend(accept.map(|a| ("Accept", a)));
            let resp = scrape(serve.addr, &headers);
            let what = format!("--format {format}, Accept: {accept:?}");
            assert_eq!(resp.header("content-type"), Some(want), "{what}");
            assert_eq!(resp.header("vary"), Some("Accept-Encoding"), "{what}");
            assert_eq!(resp.header("content-encoding"), Some("gzip"), "{what}");
            let body = resp.decoded();
            assert_eq!(body.ends_with("\n# EOF\n"), want == OPENMETRICS, "{what}");
            let all = samples(&body);
            assert_eq!(value(&all, r#"gen_c0_total{series="0"}"#), 6.0, "{what}");
        }
        // Every rendering so far was in the forced format (scrape n shows n - 1).
        let all = samples(&scrape(serve.addr, &[("Accept", PROMETHEUS_2_ACCEPT)]).decoded());
        let count = |f: &str| {
            value(
                &all,
                &format!("shmetrics_scrape_duration_seconds_count{{format=\"{f}\"}}"),
            )
        };
        assert_eq!(count(format), accepts.len() as f64);
        assert_eq!(count(other), 0.0);
        assert_eq!(serve.signal_and_wait(Signal::SIGTERM).code(), Some(0));
    }
    // `auto` is the default: negotiated.
    let serve = ServeProcess::start(
        &["--dir", d, "--listen", "127.0.0.1:0", "--format", "auto"],
        &[],
    );
    let om = scrape(serve.addr, &[("Accept", PROMETHEUS_2_ACCEPT)]);
    assert_eq!(om.header("content-type"), Some(OPENMETRICS));
    assert_eq!(om.header("vary"), Some("Accept, Accept-Encoding"));
    assert_eq!(scrape(serve.addr, &[]).header("content-type"), Some(TEXT));
    drop(serve);
    let err = serve_fails(
        &["--dir", d, "--listen", "127.0.0.1:0", "--format", "json"],
        &[],
    );
    assert!(err.contains("invalid value 'json' for '--format"), "{err}");
}

fn serve_fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve").args(args).env_remove("DYN_SYSTEM_PORT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run serve");
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn serve_reports_bad_setups_with_exit_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let m = missing.to_str().unwrap();
    assert_eq!(
        serve_fails(&["--dir", m, "--listen", "127.0.0.1:0"], &[]),
        format!("shmetrics: serve: metrics directory {m} does not exist\n")
    );
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let d = dir.path().to_str().unwrap();
    let err = serve_fails(&["--dir", d, "--listen", &addr], &[]);
    assert!(
        err.starts_with(&format!("shmetrics: serve: cannot listen on {addr}: ")),
        "{err}"
    );
    assert!(err.contains("in use"), "{err}");
    assert_eq!(
        serve_fails(&["--dir", d], &[("DYN_SYSTEM_PORT", "http")]),
        "shmetrics: serve: DYN_SYSTEM_PORT=http is not a port number (0-65535)\n"
    );
    let err = serve_fails(&["--dir", d, "--listen", "localhost"], &[]);
    assert!(err.contains("is not an address to listen on"), "{err}");
}

#[test]
fn directory_removed_and_recreated_under_a_running_server() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("metrics");
    std::fs::create_dir(&dir).unwrap();
    let before = Registry::open(&dir).unwrap();
    before
        .counter("before_total", "Before.", &[])
        .unwrap()
        .unlabelled()
        .unwrap()
        .inc();
    let server = TestServer::start(Server::bind(options(&dir)).unwrap());
    let body = String::from_utf8(scrape(server.addr, &[]).body).unwrap();
    assert!(body.contains("before_total 1.0"), "{body}");

    // Removed: a clear error, for as long as it is gone.
    std::fs::remove_dir_all(&dir).unwrap();
    for _ in 0..2 {
        let resp = get(server.addr, "/metrics", &[]);
        assert_eq!(resp.status, 503);
        let text = String::from_utf8(resp.body).unwrap();
        assert!(
            text.starts_with("cannot read metrics directory") && text.contains("metrics"),
            "{text}"
        );
        let health = get(server.addr, "/health", &[]);
        assert_eq!(health.status, 503);
    }

    // Recreated, with a new writer: served again, without the old directory's series.
    std::fs::create_dir(&dir).unwrap();
    let after = Registry::open(&dir).unwrap();
    after
        .counter("after_total", "After.", &[])
        .unwrap()
        .unlabelled()
        .unwrap()
        .inc_by(2.0);
    let body = String::from_utf8(scrape(server.addr, &[]).body).unwrap();
    assert!(body.contains("after_total 2.0"), "{body}");
    assert!(!body.contains("before_total"), "{body}");
    drop((before, after));
}

/// The segment files of writer `pid` in `dir`.
fn segments_of(dir: &Path, pid: i32) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("shmetrics-{pid}-"))
        })
        .collect()
}

fn truncate_to_a_page(path: &Path) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(4096)
        .unwrap();
}

/// Segment files truncated under a running `serve` (a live writer's, then a dead one's,
/// read again when another writer dies): every scrape answers, the server stays up, and the
/// truncated segments are reported while the other writers' values are served. The server
/// died of SIGBUS at the first scrape after such a truncation before.
#[test]
fn segments_truncated_under_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let stayers = Stayers::start(dir.path(), 3, 5);
    generate(dir.path(), 1, 7);
    // Trust the listing: nothing below changes the directory, so the server keeps the
    // files it mapped.
    std::thread::sleep(Duration::from_millis(150));
    let mut serve = ServeProcess::start(&["--dir", d, "--listen", "127.0.0.1:0"], &[]);
    let before = samples(&scrape(serve.addr, &[]).text());
    assert_eq!(
        value(&before, r#"gen_c0_total{series="0"}"#),
        3.0 * 5.0 + 7.0
    );

    for path in segments_of(dir.path(), stayers.0[0]) {
        truncate_to_a_page(&path);
    }
    let resp = scrape(serve.addr, &[]);
    assert_eq!(resp.status, 200);
    let after = samples(&resp.text());
    assert_eq!(
        value(&after, r#"gen_c0_total{series="0"}"#),
        2.0 * 5.0 + 7.0
    );
    assert_eq!(
        value(
            &after,
            r#"shmetrics_reader_invalid_segments{reason="faulted_page"}"#
        ),
        1.0
    );

    // The dead writer's segment, read again into the dead baseline when a writer dies.
    let dead: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("shmetrics-")
                && !stayers
                    .0
                    .iter()
                    .any(|pid| name.starts_with(&format!("shmetrics-{pid}-")))
        })
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    truncate_to_a_page(&dead[0]);
    kill(Pid::from_raw(stayers.0[1]), Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let resp = scrape(serve.addr, &[]);
        assert_eq!(resp.status, 200);
        let all = samples(&resp.text());
        if value(
            &all,
            r#"shmetrics_reader_invalid_segments{reason="faulted_page"}"#,
        ) == 2.0
        {
            assert_eq!(value(&all, r#"gen_c0_total{series="0"}"#), 2.0 * 5.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second truncation was never reported"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        serve.child.try_wait().unwrap().is_none(),
        "serve is still up"
    );
    assert_eq!(serve.signal_and_wait(Signal::SIGTERM).code(), Some(0));
    drop(stayers);
}

/// The samples of the metrics directory in `text` (no self-metric).
fn directory_samples(text: &str) -> HashMap<String, f64> {
    let mut all = samples(text);
    all.retain(|series, _| !series.starts_with("shmetrics_"));
    all
}

/// The samples of `dir` as a reader of its own sees them.
fn read_directly(dir: &Path) -> HashMap<String, f64> {
    let mut out = Vec::new();
    shmetrics_reader::Reader::open(dir).unwrap().scrape_into(
        shmetrics_reader::Format::Prometheus,
        shmetrics_reader::Escaping::default(),
        &shmetrics_reader::PrefixFilter::default(),
        false,
        &mut out,
    );
    directory_samples(&String::from_utf8(out).unwrap())
}

/// Segment files of writers (not the archive) in `dir`.
fn writer_segments(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with("shmetrics-") && !name.starts_with("shmetrics-archive")
        })
        .count()
}

/// A compaction hook that holds every compaction (once it has the compactors' lock) until
/// released, announcing each on the receiver; once the sender is dropped, it holds none.
fn held_compactions() -> (
    Box<dyn FnMut() + Send>,
    mpsc::Receiver<()>,
    mpsc::Sender<()>,
) {
    let (entered_tx, entered) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let hook = Box::new(move || {
        let _ = entered_tx.send(());
        let _ = released.recv_timeout(WAIT);
    });
    (hook, entered, release)
}

/// Compaction runs on a task of its own: a scrape that arrives while a compaction is in
/// progress (held, by a test hook, with the compactors' lock taken) is answered at once,
/// from the files as they are; once the compaction completes, the scrapes read the archive
/// and the same samples.
#[test]
fn scrapes_never_wait_for_a_compaction() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 3, 5);
    let (hook, entered, release) = held_compactions();
    let mut opts = options(dir.path());
    opts.compact_interval = Some(Duration::from_millis(20));
    let server = TestServer::start(Server::bind(opts).unwrap().with_compaction_hook(hook));
    let addr = server.addr;
    // A scrape once a compaction is due (a compaction that ran before a scrape, in the
    // scrape, would start here).
    std::thread::sleep(Duration::from_millis(50));
    let first = std::thread::spawn(move || scrape(addr, &[]).status);
    entered.recv_timeout(WAIT).expect("a compaction started");
    let busy = shmetrics_reader::Reader::open(dir.path())
        .unwrap()
        .compact();
    assert!(
        matches!(busy, Err(shmetrics_reader::CompactError::Busy(_))),
        "the compaction holds the compactors' lock: {busy:?}"
    );
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || done_tx.send(scrape(addr, &[])));
    let during = done
        .recv_timeout(Duration::from_secs(10))
        .expect("the scrape waited for the compaction");
    assert_eq!(during.status, 200);
    let all = samples(&during.text());
    assert_eq!(
        value(&all, "shmetrics_reader_segments{state=\"dead\"}"),
        3.0,
        "nothing compacted yet"
    );
    assert_eq!(writer_segments(dir.path()), 3);
    drop(release);
    assert_eq!(first.join().unwrap(), 200);
    let started = Instant::now();
    while writer_segments(dir.path()) > 0 {
        assert!(started.elapsed() < WAIT, "the compaction never completed");
        std::thread::sleep(Duration::from_millis(10));
    }
    let after = scrape(server.addr, &[]);
    assert_eq!(
        directory_samples(&after.text()),
        directory_samples(&during.text())
    );
    let all = samples(&after.text());
    assert_eq!(value(&all, "shmetrics_reader_compaction_failures"), 0.0);
    assert_eq!(
        value(&all, "shmetrics_reader_segments{state=\"dead\"}"),
        1.0,
        "the archive alone"
    );
}

/// The compaction task's failures (here: a file of ours at the archive's name that is not an
/// archive) are served in `shmetrics_reader_compaction_failures`, and backed off; the dead
/// process is still served from its own file.
#[test]
fn compaction_failures_are_served() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 1, 5);
    std::fs::write(dir.path().join("shmetrics-archive.shm"), [0u8; 4096]).unwrap();
    let mut opts = options(dir.path());
    opts.compact_interval = Some(Duration::from_millis(10));
    let server = TestServer::with(opts);
    let before = directory_samples(&scrape(server.addr, &[]).text());
    let started = Instant::now();
    loop {
        let resp = scrape(server.addr, &[]);
        let failures = value(
            &samples(&resp.text()),
            "shmetrics_reader_compaction_failures",
        );
        if failures >= 2.0 {
            assert_eq!(directory_samples(&resp.text()), before);
            break;
        }
        assert!(started.elapsed() < WAIT, "{failures} failures");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(writer_segments(dir.path()), 1);
}

/// Shutdown stops the compaction task: a compaction in progress ends (after its batch, or
/// before its first once told to stop) before `run` returns, and none starts afterwards.
#[test]
fn shutdown_ends_the_compaction_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 3, 5);
    let expected = read_directly(dir.path());
    let (hook, entered, release) = held_compactions();
    let mut opts = options(dir.path());
    opts.compact_interval = Some(Duration::from_millis(20));
    let mut server = TestServer::start(Server::bind(opts).unwrap().with_compaction_hook(hook));
    entered.recv_timeout(WAIT).expect("a compaction started");
    let stop = server.stop.take().unwrap();
    let _ = stop.send(());
    std::thread::sleep(Duration::from_millis(100));
    release.send(()).unwrap();
    server.shutdown().expect("the server ended");
    // The server's compaction is over: the lock is free, and another compactor finishes
    // whatever it left.
    shmetrics_reader::Reader::open(dir.path())
        .unwrap()
        .compact()
        .expect("the compactors' lock is free");
    assert!(entered.try_recv().is_err(), "a compaction started later");
    assert_eq!(writer_segments(dir.path()), 0);
    assert_eq!(read_directly(dir.path()), expected);
}

/// `Server::bind` says what failed with a typed error whose source is the cause: a missing
/// directory (the reader's error, naming it), an address taken (`AddrInUse` underneath).
#[test]
fn bind_errors_are_typed_with_their_cause() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("gone");
    let err = Server::bind(options(&missing)).unwrap_err();
    assert!(
        matches!(
            &err,
            ServerError::Directory(shmetrics::ReaderError::DirMissing(p)) if *p == missing
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("metrics directory {} does not exist", missing.display())
    );
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = Server::bind(ServerOptions::new(dir.path(), addr)).unwrap_err();
    assert!(
        matches!(&err, ServerError::Listen { addr: a, .. } if *a == addr),
        "{err:?}"
    );
    let source = std::error::Error::source(&err).expect("a source");
    let io = source
        .downcast_ref::<std::io::Error>()
        .expect("an io::Error");
    assert_eq!(io.kind(), std::io::ErrorKind::AddrInUse);
    assert!(
        err.to_string()
            .starts_with(&format!("cannot listen on {addr}: ")),
        "{err}"
    );
}
