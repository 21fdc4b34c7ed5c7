//! End to end with a real Prometheus server: Debian's `prometheus` package (2.42 on
//! Debian 12) scrapes `shmetrics serve` over a directory written by `shmetrics generate`,
//! and PromQL over its HTTP API must return exactly the values the writers wrote.
//!
//! # How it runs
//!
//! 1. `shmetrics generate --stay` starts [`PROCESSES`] writer processes that each do
//!    [`OPS`] rounds of the deterministic `gen` workload over [`SERIES`] series and stay
//!    alive (so their `livesum` gauges count).
//! 2. Two `shmetrics serve` processes serve that directory on `127.0.0.1:0`: one with the
//!    default `--format auto` (negotiated from `Accept`), one with `--format prometheus`.
//! 3. One Prometheus server, on a free loopback port with its own temporary data
//!    directory, scrapes both every second: job `openmetrics` scrapes the first, job
//!    `text` the second. Its configuration is written by this test; it reaches nothing but
//!    the two loopback targets (no alerting, remote storage or service discovery).
//! 4. The test polls `/api/v1/query` (bounded) until both jobs have been scraped at least
//!    twice, then checks every `gen` family per job with exact values.
//! 5. Prometheus, both servers and the writers are stopped by pid (SIGTERM, bounded wait,
//!    then SIGKILL); guards do the same when the test fails. The whole test fails after
//!    [`TEST_LIMIT`].
//!
//! # One pass in OpenMetrics, one in text
//!
//! Prometheus 2.42 cannot be told which format to ask for (`scrape_protocols` arrived in
//! 2.49). It always sends
//! `Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1`
//! (with `--enable-feature=native-histograms` it puts protobuf first, and still prefers
//! OpenMetrics over text). So the `openmetrics` job exercises the real negotiation, and
//! the `text` job scrapes a server started with `--format prometheus`, which answers text
//! 0.0.4 (`Content-Type: text/plain; version=0.0.4`) whatever the `Accept` header says;
//! Prometheus picks its parser from that `Content-Type`.
//!
//! That each job really got the format it is meant to is checked through Prometheus
//! itself: `serve` counts every body it renders in
//! `shmetrics_scrape_duration_seconds_count{format=...}`, which Prometheus scrapes too.
//! For job `openmetrics` the `openmetrics` count must be at least 1 and the `prometheus`
//! count 0, and the reverse for job `text`. (Nothing else talks to these servers.)
//!
//! # Requirements
//!
//! The `prometheus` server binary (on `PATH`, or `/usr/bin/prometheus`). README's test
//! command (`ci/test.sh`) installs Debian's package and sets
//! `SHMETRICS_REQUIRE_VALIDATORS=1`, which turns a missing binary into a failure instead
//! of a skipped test.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_shmetrics");

/// Writer processes.
const PROCESSES: u32 = 3;
/// Series per writer, split over the 15 `gen` families. 37 = 2 × 15 + 7: the first seven
/// families (gen_c0..gen_c4, gen_g0, gen_g1) get 3 series, the other eight get 2, so both
/// sides of the split rule are checked.
const SERIES: usize = 37;
/// Rounds of operations per writer.
const OPS: u64 = 7;

/// The whole test fails after this long.
const TEST_LIMIT: Duration = Duration::from_secs(90);
/// How long a stopped process may take to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Read and write timeout of one HTTP request.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two polls.
const POLL: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------------------
// Expected values: the `gen` workload's rules, restated.
// ---------------------------------------------------------------------------------------

/// Series of `gen` family `j` (0..15) when each process registers `total`: `total / 15`,
/// plus one for each of the first `total % 15` families.
fn series_in_family(total: usize, j: usize) -> usize {
    total / 15 + usize::from(j < total % 15)
}

/// Cumulative count of histogram series `series` at bucket `k` (upper bound
/// `0.001 * 2^k`) after `ops` rounds by `processes` processes: round `r` observes a value
/// in bucket `(r + series) % 21`.
fn bucket_count(processes: u32, ops: u64, series: u64, k: u64) -> f64 {
    let per_process = (0..ops).filter(|r| (r + series) % 21 <= k).count();
    f64::from(processes) * per_process as f64
}

// ---------------------------------------------------------------------------------------
// Time limit.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Deadline(Instant);

impl Deadline {
    fn check(self, what: &str) {
        assert!(
            Instant::now() < self.0,
            "end-to-end test exceeded its {TEST_LIMIT:?} limit while {what}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Processes.
// ---------------------------------------------------------------------------------------

/// A child process with its stderr (and stdout) in a log file; stopped on drop.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Self {
        let file = File::create(&log).expect("create a log file");
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone the log file"))
            .stderr(file);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { name, child, log }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits in i32"))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the log, for failure messages.
    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(30);
        format!(
            "--- last lines of the {} log ({}) ---\n{}",
            self.name,
            self.log.display(),
            lines[start..].join("\n")
        )
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, wait up to [`STOP_GRACE`], then SIGKILL. Returns the exit status and
    /// whether SIGKILL was needed.
    fn stop(&mut self) -> (Option<ExitStatus>, bool) {
        if let Some(status) = self.exited() {
            return (Some(status), false);
        }
        let _ = kill(self.pid(), Signal::SIGTERM);
        let until = Instant::now() + STOP_GRACE;
        while Instant::now() < until {
            if let Some(status) = self.exited() {
                return (Some(status), false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        (self.child.wait().ok(), true)
    }

    /// Stops it and requires a clean exit (status 0 on SIGTERM, no SIGKILL needed).
    fn stop_cleanly(&mut self) {
        let (status, killed) = self.stop();
        assert!(
            !killed,
            "{} did not exit within {STOP_GRACE:?} of SIGTERM\n{}",
            self.name,
            self.log_tail()
        );
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "{} exit status on SIGTERM\n{}",
            self.name,
            self.log_tail()
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Whether `pid` is a running process (not gone, not a zombie).
fn running(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may contain any
    // character: take the first field after the last `)`.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, None | Some("Z" | "X"))
}

/// The `generate --stay` writers. They are not our children (their parent, `generate`,
/// has exited), so they are followed through `/proc`.
struct Writers(Vec<i32>);

impl Writers {
    fn start(dir: &Path) -> Self {
        let out = Command::new(BIN)
            .args(["generate", "--stay", "--dir"])
            .arg(dir)
            .args(["--processes", &PROCESSES.to_string()])
            .args(["--series", &SERIES.to_string()])
            .args(["--ops", &OPS.to_string()])
            .stdin(Stdio::null())
            .output()
            .expect("run shmetrics generate");
        assert!(
            out.status.success(),
            "generate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pids: Vec<i32> = String::from_utf8(out.stdout)
            .expect("UTF-8 pids")
            .lines()
            .map(|l| l.parse().expect("one pid per line"))
            .collect();
        assert_eq!(pids.len(), PROCESSES as usize, "one pid per writer");
        Self(pids)
    }

    /// SIGTERM each; wait (bounded) until none runs, SIGKILL any that still does.
    /// Returns the pids that needed SIGKILL.
    fn stop(&mut self) -> Vec<i32> {
        for &pid in &self.0 {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let until = Instant::now() + STOP_GRACE;
        while Instant::now() < until && self.0.iter().any(|&p| running(p)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let stuck: Vec<i32> = self.0.iter().copied().filter(|&p| running(p)).collect();
        for &pid in &stuck {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        self.0.clear();
        stuck
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Starts `cmd` as `name` and waits until its log has a line starting with `serving
/// http://`; returns it with the address `parse` reads from the rest of that line.
fn start_listening(
    name: &'static str,
    cmd: Command,
    log: PathBuf,
    deadline: Deadline,
    parse: fn(&str) -> Option<&str>,
) -> (Proc, SocketAddr) {
    let mut proc = Proc::spawn(name, cmd, log);
    loop {
        let text = proc.log_text();
        if let Some(line) = text.lines().find(|l| l.starts_with("serving http://")) {
            let addr = parse(&line["serving http://".len()..])
                .and_then(|addr| addr.parse::<SocketAddr>().ok())
                .unwrap_or_else(|| panic!("unexpected serving line {line:?}"));
            return (proc, addr);
        }
        if let Some(status) = proc.exited() {
            panic!(
                "{name} exited ({status}) before listening\n{}",
                proc.log_tail()
            );
        }
        deadline.check(&format!("waiting for {name} to listen"));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `shmetrics serve` on `127.0.0.1:0` with `extra` arguments and returns it with
/// the address it printed (`serving http://ADDR/metrics from DIR`).
fn start_serve(dir: &Path, extra: &[&str], log: PathBuf, deadline: Deadline) -> (Proc, SocketAddr) {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .arg("--dir")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env_remove("DYN_SYSTEM_PORT");
    start_listening("serve", cmd, log, deadline, |rest| {
        rest.split_once("/metrics from ").map(|(addr, _)| addr)
    })
}

// ---------------------------------------------------------------------------------------
// Prometheus.
// ---------------------------------------------------------------------------------------

/// Whether SHMETRICS_REQUIRE_VALIDATORS=1 (README's test command) makes a missing
/// Prometheus a failure.
fn required() -> bool {
    std::env::var("SHMETRICS_REQUIRE_VALIDATORS").is_ok_and(|v| v == "1")
}

/// The Prometheus server binary and its version line, if it runs.
fn prometheus_binary() -> Option<(PathBuf, String)> {
    for candidate in [
        PathBuf::from("prometheus"),
        PathBuf::from("/usr/bin/prometheus"),
    ] {
        let Ok(out) = Command::new(&candidate)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
        else {
            continue;
        };
        if out.status.success() {
            // Prometheus 2.x prints its version on stderr, 3.x on stdout.
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            let version = text.lines().next().unwrap_or("").to_owned();
            return Some((candidate, version));
        }
    }
    None
}

/// The Prometheus binary; `None` (the test skipped) when it is not installed, a failure when
/// validators are required.
fn prometheus_or_skip() -> Option<PathBuf> {
    let Some((binary, version)) = prometheus_binary() else {
        assert!(
            !required(),
            "the prometheus server binary is not installed (Debian package prometheus)"
        );
        eprintln!("prometheus not available: end-to-end test skipped");
        return None;
    };
    eprintln!("using {} ({version})", binary.display());
    Some(binary)
}

/// A Prometheus configuration: a 1 s scrape interval and one static job per
/// `(job, target)`.
fn prometheus_config(jobs: &[(&str, SocketAddr)]) -> String {
    let mut yaml = String::from(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
    );
    for (job, target) in jobs {
        writeln!(
            yaml,
            "  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']"
        )
        .unwrap();
    }
    yaml
}

/// A loopback port that was free a moment ago (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Starts Prometheus on a free loopback port and waits until `/-/ready` answers 200.
/// The port is picked by binding port 0 and releasing it, so another process may take it
/// in between: then Prometheus exits with "address already in use" and this tries again
/// with another port (three tries).
fn start_prometheus(
    binary: &Path,
    config: &Path,
    work: &Path,
    extra: &[&str],
    deadline: Deadline,
) -> (Proc, SocketAddr) {
    for attempt in 0..3 {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let data = work.join(format!("prometheus-data-{attempt}"));
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=info")
            .args(extra)
            .current_dir(work);
        for var in [
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
        ] {
            cmd.env_remove(var);
        }
        let log = work.join(format!("prometheus-{attempt}.log"));
        let mut prom = Proc::spawn("prometheus", cmd, log);
        loop {
            if let Some(status) = prom.exited() {
                let text = prom.log_text();
                if text.contains("address already in use") {
                    eprintln!("port {} was taken; trying another", addr.port());
                    break;
                }
                panic!("prometheus exited ({status}) on start\n{}", prom.log_tail());
            }
            if http_get(addr, "/-/ready").is_ok_and(|(status, _)| status == 200) {
                // It answered; make sure it is ours and still running.
                if prom.exited().is_none() {
                    return (prom, addr);
                }
            }
            if Instant::now() >= deadline.0 {
                panic!(
                    "end-to-end test exceeded its {TEST_LIMIT:?} limit waiting for prometheus to be ready\n{}",
                    prom.log_tail()
                );
            }
            std::thread::sleep(POLL);
        }
    }
    panic!("could not start prometheus on a free port in three tries");
}

// ---------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client for the Prometheus API.
// ---------------------------------------------------------------------------------------

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            write!(out, "%{b:02X}").unwrap();
        }
    }
    out
}

/// Decodes a `Transfer-Encoding: chunked` body.
fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line without CRLF")?;
        let size_text = std::str::from_utf8(&raw[..line_end]).map_err(|e| e.to_string())?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|e| format!("bad chunk size {size_text:?}: {e}"))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// `GET path` on `addr` with `Connection: close`: the status and the (de-chunked) body.
fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|e| e.to_string())?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(n, v)| {
            n.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = &raw[split + 4..];
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    String::from_utf8(body)
        .map(|b| (status, b))
        .map_err(|e| e.to_string())
}

/// One element of an instant vector: its labels and value.
type Sample = (BTreeMap<String, String>, f64);

/// Runs an instant query; `Err` with the reason when Prometheus does not answer with a
/// vector.
fn try_query(prom: SocketAddr, promql: &str) -> Result<Vec<Sample>, String> {
    let (status, body) = http_get(prom, &format!("/api/v1/query?query={}", url_encode(promql)))?;
    if status != 200 {
        return Err(format!("HTTP {status}: {body}"));
    }
    let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    if json["status"] != "success" || json["data"]["resultType"] != "vector" {
        return Err(format!("not a vector: {body}"));
    }
    let results = json["data"]["result"]
        .as_array()
        .ok_or_else(|| format!("no result array: {body}"))?;
    results
        .iter()
        .map(|r| {
            let labels = r["metric"]
                .as_object()
                .ok_or_else(|| format!("no labels: {r}"))?
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect();
            let value = r["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| format!("no value: {r}"))?;
            Ok((labels, value))
        })
        .collect()
}

/// A running Prometheus: its address and process (for logs in failure messages).
struct Prometheus {
    addr: SocketAddr,
    proc: Proc,
}

impl Prometheus {
    /// Runs `promql`, which must give exactly one sample; returns it.
    fn one(&self, promql: &str) -> Sample {
        let mut got = try_query(self.addr, promql)
            .unwrap_or_else(|e| panic!("query {promql}: {e}\n{}", self.proc.log_tail()));
        assert_eq!(got.len(), 1, "query {promql}: {got:?}");
        got.pop().unwrap()
    }

    /// Runs `promql`, which must give exactly one sample; returns its value.
    fn value(&self, promql: &str) -> f64 {
        self.one(promql).1
    }

    /// Polls `promql` until it gives one sample with a value of at least `min`.
    fn wait_for(&self, promql: &str, min: f64, deadline: Deadline) {
        loop {
            let last = match try_query(self.addr, promql) {
                Ok(got) if got.len() == 1 && got[0].1 >= min => return,
                Ok(got) => format!("{got:?}"),
                Err(e) => e,
            };
            if Instant::now() >= deadline.0 {
                panic!(
                    "end-to-end test exceeded its {TEST_LIMIT:?} limit waiting for {promql} >= {min}; last answer: {last}\n{}",
                    self.proc.log_tail()
                );
            }
            std::thread::sleep(POLL);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The test.
// ---------------------------------------------------------------------------------------

/// Checks, for one job, every `gen` family against the values written.
fn check_job(prom: &Prometheus, job: &str, target: SocketAddr) {
    let p = f64::from(PROCESSES);
    let n = OPS as f64;
    let sel = format!("job=\"{job}\"");

    let (labels, up) = prom.one(&format!("up{{{sel}}}"));
    assert_eq!(up, 1.0, "{job}: up");
    assert_eq!(labels["instance"], target.to_string(), "{job}: instance");

    for k in 0..5 {
        // Counters: families 0..5, each series incremented once per round per process.
        let series = series_in_family(SERIES, k);
        let c = series as f64;
        let name = format!("gen_c{k}_total");
        assert_eq!(
            prom.value(&format!("count({name}{{{sel}}})")),
            c,
            "{job}: {name} series"
        );
        assert_eq!(
            prom.value(&format!("sum({name}{{{sel}}})")),
            p * n * c,
            "{job}: {name} sum"
        );
        let last = series - 1;
        assert_eq!(
            prom.value(&format!("{name}{{{sel},series=\"{last}\"}}")),
            p * n,
            "{job}: {name} last series"
        );

        // Gauges: families 5..10; g0..g2 mostrecent (N), g3..g4 livesum (one per live
        // writer). Either way one merged series per label set, without a pid label.
        let c = series_in_family(SERIES, 5 + k) as f64;
        let name = format!("gen_g{k}");
        let want = if k < 3 { n } else { p };
        let (labels, v) = prom.one(&format!("{name}{{{sel},series=\"0\"}}"));
        assert_eq!(v, want, "{job}: {name}{{series=\"0\"}}");
        let keys: Vec<&str> = labels.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["__name__", "instance", "job", "series"],
            "{job}: {name}"
        );
        assert_eq!(
            prom.value(&format!("count({name}{{{sel}}})")),
            c,
            "{job}: {name} series"
        );
        assert_eq!(
            prom.value(&format!("sum({name}{{{sel}}})")),
            want * c,
            "{job}: {name} sum"
        );

        // Histograms: families 10..15, one observation per round per process.
        let c = series_in_family(SERIES, 10 + k) as f64;
        let name = format!("gen_h{k}_seconds");
        assert_eq!(
            prom.value(&format!("count({name}_count{{{sel}}})")),
            c,
            "{job}: {name} series"
        );
        assert_eq!(
            prom.value(&format!("sum({name}_count{{{sel}}})")),
            p * n * c,
            "{job}: {name}_count sum"
        );
        // Buckets of series 1: 21 per series (20 bounds and +Inf).
        assert_eq!(
            prom.value(&format!("count({name}_bucket{{{sel},series=\"1\"}})")),
            21.0,
            "{job}: {name} buckets"
        );
        for (bucket, le) in [(0, "0.001"), (2, "0.004"), (5, "0.032"), (20, "+Inf")] {
            assert_eq!(
                prom.value(&format!("{name}_bucket{{{sel},series=\"1\",le=\"{le}\"}}")),
                bucket_count(PROCESSES, OPS, 1, bucket),
                "{job}: {name}_bucket{{series=\"1\",le=\"{le}\"}}"
            );
        }
    }
}

#[test]
fn prometheus_scrapes_exact_values_in_openmetrics_and_text() {
    let started = Instant::now();
    let deadline = Deadline(started + TEST_LIMIT);
    let Some(binary) = prometheus_or_skip() else {
        return;
    };

    let work = tempfile::tempdir().expect("temporary directory");
    let dir = work.path().join("metrics");
    std::fs::create_dir(&dir).unwrap();

    let mut writers = Writers::start(&dir);
    let (mut serve_auto, auto_addr) =
        start_serve(&dir, &[], work.path().join("serve-auto.log"), deadline);
    let (mut serve_text, text_addr) = start_serve(
        &dir,
        &["--format", "prometheus"],
        work.path().join("serve-text.log"),
        deadline,
    );
    let jobs = [("openmetrics", auto_addr), ("text", text_addr)];
    let config = work.path().join("prometheus.yml");
    std::fs::write(&config, prometheus_config(&jobs)).unwrap();
    let (proc, addr) = start_prometheus(&binary, &config, work.path(), &[], deadline);
    let mut prom = Prometheus { addr, proc };

    // Wait until each job has been scraped at least twice: a body counts the renderings
    // before it, so a count of 1 is seen from the second scrape on. This also shows which
    // format each job got (see the module docs).
    for (job, format, other) in [
        ("openmetrics", "openmetrics", "prometheus"),
        ("text", "prometheus", "openmetrics"),
    ] {
        let count = |f: &str| {
            format!("shmetrics_scrape_duration_seconds_count{{job=\"{job}\",format=\"{f}\"}}")
        };
        prom.wait_for(&count(format), 1.0, deadline);
        assert_eq!(
            prom.value(&count(other)),
            0.0,
            "job {job} got only {format}"
        );
    }
    deadline.check("waiting for the scrapes");

    for (job, target) in jobs {
        check_job(&prom, job, target);
    }
    // Both jobs saw the same data, series by series.
    assert_eq!(
        prom.value(
            "count(gen_c0_total{job=\"openmetrics\"} == ignoring(job, instance) gen_c0_total{job=\"text\"})"
        ),
        series_in_family(SERIES, 0) as f64
    );

    // Stop everything by pid, each required to exit cleanly on SIGTERM.
    prom.proc.stop_cleanly();
    serve_auto.stop_cleanly();
    serve_text.stop_cleanly();
    let pids = writers.0.clone();
    assert_eq!(writers.stop(), Vec::<i32>::new(), "writers needed SIGKILL");
    for pid in pids {
        assert!(!running(pid), "writer {pid} still running");
    }
    deadline.check("stopping the processes");
    eprintln!("end-to-end test took {:?}", started.elapsed());
}

/// Exemplars of series that two processes write: `/api/v1/query_exemplars` of a
/// Prometheus with exemplar storage, scraping `serve` in OpenMetrics, returns the newest of
/// either process per counter and per bucket, labels and values intact.
#[test]
fn prometheus_stores_the_exemplars_of_every_process() {
    use shmetrics_writer::{Options, Registry};

    let deadline = Deadline(Instant::now() + TEST_LIMIT);
    let Some(binary) = prometheus_or_skip() else {
        return;
    };
    let work = tempfile::tempdir().expect("temporary directory");
    let dir = work.path().join("metrics");
    std::fs::create_dir(&dir).unwrap();
    // Two writer processes, simulated in this one (each holds its segment's lock).
    let a = Registry::open_simulating_pid(&dir, Options::default(), 1).unwrap();
    let b = Registry::open_simulating_pid(&dir, Options::default(), 2).unwrap();
    let requests = |r: &Registry| r.counter("ex_requests", "Requests.", &["route"]).unwrap();
    let latency = |r: &Registry| {
        (r.histogram("ex_latency_seconds", "Latency.", &["route"], &[0.1, 1.0])).unwrap()
    };
    requests(&a)
        .labels(["/a"])
        .unwrap()
        .inc_by_with_exemplar(1.0, &[("trace_id", "a-1")])
        .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    requests(&b)
        .labels(["/a"])
        .unwrap()
        .inc_by_with_exemplar(2.0, &[("trace_id", "b-1"), ("span_id", "s-1")])
        .unwrap();
    let fast = latency(&a);
    fast.labels(["/a"])
        .unwrap()
        .observe_with_exemplar(0.05, &[("trace_id", "a-fast")])
        .unwrap();
    latency(&b)
        .labels(["/a"])
        .unwrap()
        .observe_with_exemplar(0.5, &[("trace_id", "b-slow")])
        .unwrap();

    let (mut serve, serve_addr) = start_serve(&dir, &[], work.path().join("serve.log"), deadline);
    let config = work.path().join("prometheus.yml");
    std::fs::write(&config, prometheus_config(&[("exemplars", serve_addr)])).unwrap();
    let extra = ["--enable-feature=exemplar-storage"];
    let (proc, addr) = start_prometheus(&binary, &config, work.path(), &extra, deadline);
    let mut prom = Prometheus { addr, proc };
    prom.wait_for("ex_requests_total", 3.0, deadline);

    // Per series (as `name{le}`), the exemplars Prometheus stored: (labels, value).
    type Stored = BTreeMap<String, Vec<(BTreeMap<String, String>, f64)>>;
    let stored = || -> Result<Stored, String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let query = url_encode("{__name__=~\"ex_.*\"}");
        let path = format!(
            "/api/v1/query_exemplars?query={query}&start={}&end={}",
            now - 600,
            now + 600
        );
        let (status, body) = http_get(addr, &path)?;
        if status != 200 {
            return Err(format!("HTTP {status}: {body}"));
        }
        let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let mut out = BTreeMap::new();
        for series in json["data"].as_array().ok_or(body.clone())? {
            let labels = &series["seriesLabels"];
            let name = format!(
                "{}{}",
                labels["__name__"].as_str().unwrap_or_default(),
                labels["le"]
                    .as_str()
                    .map(|le| format!("{{le={le}}}"))
                    .unwrap_or_default()
            );
            let exemplars = (series["exemplars"].as_array().into_iter().flatten())
                .map(|e| {
                    let labels = (e["labels"].as_object().into_iter().flatten())
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect();
                    let value = e["value"].as_str().and_then(|v| v.parse().ok());
                    (labels, value.unwrap_or(f64::NAN))
                })
                .collect();
            out.insert(name, exemplars);
        }
        Ok(out)
    };
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let expected = BTreeMap::from([
        (
            "ex_latency_seconds_bucket{le=0.1}".to_owned(),
            vec![(labels(&[("trace_id", "a-fast")]), 0.05)],
        ),
        (
            "ex_latency_seconds_bucket{le=1.0}".to_owned(),
            vec![(labels(&[("trace_id", "b-slow")]), 0.5)],
        ),
        (
            "ex_requests_total".to_owned(),
            vec![(labels(&[("trace_id", "b-1"), ("span_id", "s-1")]), 2.0)],
        ),
    ]);
    loop {
        let got = stored();
        if got.as_ref().is_ok_and(|got| *got == expected) {
            break;
        }
        assert!(
            Instant::now() < deadline.0,
            "exemplars stored: {got:?}, expected {expected:?}\n{}",
            prom.proc.log_tail()
        );
        std::thread::sleep(POLL);
    }
    prom.proc.stop_cleanly();
    serve.stop_cleanly();
}

// ---------------------------------------------------------------------------------------
// The demo, as Prometheus sees it.
// ---------------------------------------------------------------------------------------

/// Starts `shmetrics demo` on `127.0.0.1:0` with `extra` arguments and returns it with the
/// address its banner gives (`serving http://ADDR/metrics (listening on ...)`).
fn start_demo(extra: &[&str], log: PathBuf, deadline: Deadline) -> (Proc, SocketAddr) {
    let mut cmd = Command::new(BIN);
    cmd.args(["demo", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env_remove("DYN_SYSTEM_PORT");
    start_listening("demo", cmd, log, deadline, |rest| {
        rest.split_once("/metrics ").map(|(addr, _)| addr)
    })
}

/// A query and its value, borrowed for the assertions.
fn r(x: &(String, f64)) -> (&str, f64) {
    (x.0.as_str(), x.1)
}

/// Asserts `a <= b * (1 + slack)`, naming both.
fn at_most(a: (&str, f64), b: (&str, f64), slack: f64) {
    assert!(
        a.1 <= b.1 * (1.0 + slack),
        "{} = {} exceeds {} = {}",
        a.0,
        a.1,
        b.0,
        b.1
    );
}

/// Asserts `lo <= v.1 <= hi`.
fn within(v: (&str, f64), lo: f64, hi: f64) {
    assert!(
        (lo..=hi).contains(&v.1),
        "{} = {} is outside [{lo}, {hi}]",
        v.0,
        v.1
    );
}

/// The demo's engines follow a request model whose quantities agree: Prometheus's own
/// `histogram_quantile` and ratios of `_sum` and `_count` over a real scrape of the demo
/// give prefill <= time to first token <= end-to-end latency, inter-token latency x output
/// tokens ~ decode time, running requests ~ arrival rate x time in the engine, and the
/// values of an 8B model (tens of ms to first token, ~10 ms per token, hundreds of tokens
/// per request). With `--lmcache`, LMCache's families sit beside vLLM's and agree with them.
#[test]
fn prometheus_sees_a_coherent_demo() {
    let started = Instant::now();
    let deadline = Deadline(started + TEST_LIMIT);
    let Some(binary) = prometheus_or_skip() else {
        return;
    };
    let work = tempfile::tempdir().expect("temporary directory");
    let (mut demo, target) = start_demo(
        &[
            "--engines",
            "2",
            "--rate",
            "15",
            "--lmcache",
            "--duration",
            "85",
        ],
        work.path().join("demo.log"),
        deadline,
    );
    let config = work.path().join("prometheus.yml");
    std::fs::write(&config, prometheus_config(&[("demo", target)])).unwrap();
    let (proc, addr) = start_prometheus(&binary, &config, work.path(), &[], deadline);
    let prom = Prometheus { addr, proc };

    // 30 scrapes (30 s) of two engines at 15 requests/s: ~900 requests finished.
    prom.wait_for("count_over_time(up{job=\"demo\"}[5m])", 30.0, deadline);
    let v = |promql: &str| -> (String, f64) { (promql.to_owned(), prom.value(promql)) };
    let q = |quantile: f64, family: &str| {
        v(&format!(
            "histogram_quantile({quantile}, sum by (le) (rate(vllm:{family}_bucket[5m])))"
        ))
    };
    let mean = |family: &str| {
        v(&format!(
            "sum(vllm:{family}_sum) / sum(vllm:{family}_count)"
        ))
    };

    // Quantiles of the per-request intervals, which share their buckets: each request's
    // prefill <= its inference time <= its end-to-end latency, so the quantiles too.
    for quantile in [0.5, 0.9, 0.99] {
        let prefill = q(quantile, "request_prefill_time_seconds");
        let decode = q(quantile, "request_decode_time_seconds");
        let queue = q(quantile, "request_queue_time_seconds");
        let inference = q(quantile, "request_inference_time_seconds");
        let e2e = q(quantile, "e2e_request_latency_seconds");
        at_most(r(&prefill), r(&inference), 1e-9);
        at_most(r(&decode), r(&inference), 1e-9);
        at_most(r(&inference), r(&e2e), 1e-9);
        at_most(r(&queue), r(&e2e), 1e-9);
        let ttft = q(quantile, "time_to_first_token_seconds");
        at_most(r(&ttft), r(&e2e), 1e-9);
    }
    // The ranges of an 8B model on one GPU, lightly loaded.
    within(r(&q(0.9, "time_to_first_token_seconds")), 0.01, 2.0);
    within(r(&q(0.5, "time_to_first_token_seconds")), 0.005, 0.5);
    within(r(&q(0.5, "inter_token_latency_seconds")), 0.005, 0.05);
    within(r(&q(0.9, "e2e_request_latency_seconds")), 1.0, 30.0);
    within(r(&mean("request_generation_tokens")), 100.0, 1000.0);
    within(r(&mean("request_prompt_tokens")), 300.0, 3000.0);
    within(r(&v("max(vllm:kv_cache_usage_perc)")), 1e-4, 0.9);

    // Time to first token = queue + prefill, on average (requests still running have a
    // first token and no queue or prefill observation yet: a few percent).
    let ttft = mean("time_to_first_token_seconds");
    let queue = mean("request_queue_time_seconds");
    let prefill = mean("request_prefill_time_seconds");
    at_most(r(&prefill), r(&ttft), 0.1);
    within(
        (
            "(queue + prefill) / time to first token",
            (queue.1 + prefill.1) / ttft.1,
        ),
        0.85,
        1.15,
    );
    // Inter-token latency x output tokens ~ decode time.
    let itl = mean("inter_token_latency_seconds");
    let output = mean("request_generation_tokens");
    let decode = mean("request_decode_time_seconds");
    within(
        (
            "ITL x (output tokens - 1) / decode time",
            itl.1 * (output.1 - 1.0) / decode.1,
        ),
        0.8,
        1.25,
    );
    // Little's law: requests in the batch = completion rate x time in the engine.
    // (Over the last 20 s: `rate` over a window longer than the data would extrapolate
    // to the window's length.)
    let running = v("sum(avg_over_time(vllm:num_requests_running[20s]))");
    let rate = v("sum(rate(vllm:request_success_total[20s]))");
    let inference = mean("request_inference_time_seconds");
    within(
        (
            "running / (rate x inference time)",
            running.1 / (rate.1 * inference.1),
        ),
        0.65,
        1.35,
    );
    within(r(&rate), 20.0, 40.0);
    eprintln!(
        "demo through Prometheus: p90 TTFT {:.3} s, p50 ITL {:.4} s, p90 e2e {:.2} s, mean output {:.0} tokens, \
         {:.1} requests/s, running {:.1} vs rate x inference {:.1}",
        q(0.9, "time_to_first_token_seconds").1,
        q(0.5, "inter_token_latency_seconds").1,
        q(0.9, "e2e_request_latency_seconds").1,
        output.1,
        rate.1,
        running.1,
        rate.1 * inference.1
    );
    // README's PromQL examples, as printed, each give one value.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let promql = readme
        .split("```promql\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a promql block in README");
    let mut examples = 0;
    for line in promql.lines().filter(|l| !l.trim().is_empty()) {
        within((line, prom.value(line)), 1e-6, 1e6);
        examples += 1;
    }
    assert_eq!(examples, 2, "{promql}");
    // Below saturation nothing waits long.
    within(r(&q(0.9, "request_queue_time_seconds")), 0.0, 0.3);

    // LMCache: both engines' worker rank 0 share a label set, merged into one series, and
    // it counts (up to its 10 s publication lag) the tokens vLLM loaded from it.
    let lmcache_hits = v("lmcache:num_hit_tokens_total");
    let vllm_hits = v("sum(vllm:external_prefix_cache_hits_total)");
    assert!(lmcache_hits.1 > 0.0, "{lmcache_hits:?}");
    at_most(r(&lmcache_hits), r(&vllm_hits), 0.0);
    within(r(&v("lmcache:retrieve_hit_rate")), 0.0, 1.0);
    assert_eq!(v("count(dynamo_component_requests_total)").1, 1.0);

    drop(prom);
    demo.stop_cleanly();
    eprintln!("demo end-to-end test took {:?}", started.elapsed());
}

#[test]
fn split_rule_and_bucket_counts() {
    // The expectations above rest on these; spelled out for the values used.
    let counts: Vec<usize> = (0..15).map(|j| series_in_family(SERIES, j)).collect();
    assert_eq!(counts, [3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2]);
    assert_eq!(counts.iter().sum::<usize>(), SERIES);
    // Series 1, rounds 0..7: buckets 1..=7 get one observation per process each.
    let cumulative: Vec<f64> = (0..=20).map(|k| bucket_count(3, 7, 1, k)).collect();
    let mut want = vec![0.0, 3.0, 6.0, 9.0, 12.0, 15.0, 18.0];
    want.resize(21, 21.0);
    assert_eq!(cumulative, want);
}
