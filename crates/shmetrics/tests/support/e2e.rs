//! A real Prometheus and the processes around it, for the end-to-end tests: writer
//! processes (`shmetrics generate --stay`), `shmetrics serve`, Debian's `prometheus` (2.42
//! on Debian 12) on a free loopback port, and a small HTTP client for its API; plus the
//! values the `gen` workload writes, restated, and the check that PromQL returns them
//! exactly.
#![allow(dead_code)] // Each test binary uses a subset.

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

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_shmetrics");

/// Writer processes.
pub(crate) const PROCESSES: u32 = 3;
/// Series per writer, split over the 15 `gen` families. 37 = 2 × 15 + 7: the first seven
/// families (gen_c0..gen_c4, gen_g0, gen_g1) get 3 series, the other eight get 2, so both
/// sides of the split rule are checked.
pub(crate) const SERIES: usize = 37;
/// Rounds of operations per writer.
pub(crate) const OPS: u64 = 7;

/// The whole test fails after this long.
pub(crate) const TEST_LIMIT: Duration = Duration::from_secs(90);
/// How long a stopped process may take to exit after SIGTERM before it gets SIGKILL.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(10);
/// Read and write timeout of one HTTP request.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two polls.
pub(crate) const POLL: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------------------
// Expected values: the `gen` workload's rules, restated.
// ---------------------------------------------------------------------------------------

/// Series of `gen` family `j` (0..15) when each process registers `total`: `total / 15`,
/// plus one for each of the first `total % 15` families.
pub(crate) fn series_in_family(total: usize, j: usize) -> usize {
    total / 15 + usize::from(j < total % 15)
}

/// Cumulative count of histogram series `series` at bucket `k` (upper bound
/// `0.001 * 2^k`) after `ops` rounds by `processes` processes: round `r` observes a value
/// in bucket `(r + series) % 21`.
pub(crate) fn bucket_count(processes: u32, ops: u64, series: u64, k: u64) -> f64 {
    let per_process = (0..ops).filter(|r| (r + series) % 21 <= k).count();
    f64::from(processes) * per_process as f64
}

// ---------------------------------------------------------------------------------------
// Time limit.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
pub(crate) struct Deadline(pub(crate) Instant);

impl Deadline {
    pub(crate) fn check(self, what: &str) {
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
pub(crate) struct Proc {
    pub(crate) name: &'static str,
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
}

impl Proc {
    pub(crate) fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Self {
        let file = File::create(&log).expect("create a log file");
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone the log file"))
            .stderr(file);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { name, child, log }
    }

    pub(crate) fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits in i32"))
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the log, for failure messages.
    pub(crate) fn log_tail(&self) -> String {
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

    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, wait up to [`STOP_GRACE`], then SIGKILL. Returns the exit status and
    /// whether SIGKILL was needed.
    pub(crate) fn stop(&mut self) -> (Option<ExitStatus>, bool) {
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
    pub(crate) fn stop_cleanly(&mut self) {
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
pub(crate) fn running(pid: i32) -> bool {
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
pub(crate) struct Writers(pub(crate) Vec<i32>);

impl Writers {
    pub(crate) fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// [`Writers::start`] with `extra` arguments for `generate` (such as
    /// `--workload vllm`).
    pub(crate) fn start_with(dir: &Path, extra: &[&str]) -> Self {
        let out = Command::new(BIN)
            .args(["generate", "--stay", "--dir"])
            .arg(dir)
            .args(["--processes", &PROCESSES.to_string()])
            .args(["--series", &SERIES.to_string()])
            .args(["--ops", &OPS.to_string()])
            .args(extra)
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
    pub(crate) fn stop(&mut self) -> Vec<i32> {
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

/// Starts `cmd` as `name` and waits until its log has a whole line starting with `serving
/// http://` (or `https://`); returns it with the address `parse` reads from the rest of that line.
pub(crate) fn start_listening(
    name: &'static str,
    cmd: Command,
    log: PathBuf,
    deadline: Deadline,
    parse: fn(&str) -> Option<&str>,
) -> (Proc, SocketAddr) {
    let mut proc = Proc::spawn(name, cmd, log);
    loop {
        let text = proc.log_text();
        // Only whole lines: the last one may still be being written.
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        let serving = whole.lines().find_map(|l| {
            l.strip_prefix("serving http://")
                .or_else(|| l.strip_prefix("serving https://"))
                .map(|rest| (l, rest))
        });
        if let Some((line, rest)) = serving {
            let addr = parse(rest)
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
pub(crate) fn start_serve(
    dir: &Path,
    extra: &[&str],
    log: PathBuf,
    deadline: Deadline,
) -> (Proc, SocketAddr) {
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
pub(crate) fn required() -> bool {
    std::env::var("SHMETRICS_REQUIRE_VALIDATORS").is_ok_and(|v| v == "1")
}

/// The Prometheus server binary and its version line, if it runs.
pub(crate) fn prometheus_binary() -> Option<(PathBuf, String)> {
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
pub(crate) fn prometheus_or_skip() -> Option<PathBuf> {
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
pub(crate) fn prometheus_config(jobs: &[(&str, SocketAddr)]) -> String {
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
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Starts Prometheus on a free loopback port and waits until `/-/ready` answers 200.
/// The port is picked by binding port 0 and releasing it, so another process may take it
/// in between: then Prometheus exits with "address already in use" and this tries again
/// with another port (three tries).
pub(crate) fn start_prometheus(
    binary: &Path,
    config: &Path,
    work: &Path,
    extra: &[&str],
    deadline: Deadline,
) -> (Proc, SocketAddr) {
    for attempt in 0..3 {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let data = work.join(format!("prometheus-data-{attempt}"));
        let log = work.join(format!("prometheus-{attempt}.log"));
        match start_prometheus_at(binary, config, work, &data, addr, extra, log, deadline) {
            Ok(prom) => return (prom, addr),
            Err(taken) => eprintln!("{taken}; trying another"),
        }
    }
    panic!("could not start prometheus on a free port in three tries");
}

/// Starts Prometheus on `addr` with its data in `data` (a restart keeps them) and waits
/// until `/-/ready` answers 200; `Err` when the port is taken.
#[allow(clippy::too_many_arguments)]
pub(crate) fn start_prometheus_at(
    binary: &Path,
    config: &Path,
    work: &Path,
    data: &Path,
    addr: SocketAddr,
    extra: &[&str],
    log: PathBuf,
    deadline: Deadline,
) -> Result<Proc, String> {
    let mut cmd = Command::new(binary);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--log.level=info")
        .args(extra)
        .current_dir(work);
    without_proxies(&mut cmd);
    let mut prom = Proc::spawn("prometheus", cmd, log);
    wait_ready(&mut prom, addr, "/-/ready", deadline)?;
    Ok(prom)
}

/// Starts Debian's `victoria-metrics` on `addr` with its data in `data`, answering
/// queries for the present (`-search.latencyOffset=0s`, no cache), and waits until
/// `/health` answers; `Err` when the port is taken.
pub(crate) fn start_victoria_metrics_at(
    work: &Path,
    data: &Path,
    addr: SocketAddr,
    log: PathBuf,
    deadline: Deadline,
) -> Result<Proc, String> {
    let mut cmd = Command::new("victoria-metrics");
    cmd.arg(format!("-httpListenAddr={addr}"))
        .arg(format!("-storageDataPath={}", data.display()))
        .arg("-search.latencyOffset=0s")
        .arg("-search.disableCache")
        .current_dir(work);
    without_proxies(&mut cmd);
    let mut vm = Proc::spawn("victoria-metrics", cmd, log);
    wait_ready(&mut vm, addr, "/health", deadline)?;
    Ok(vm)
}

/// Whether `victoria-metrics` runs; a failure when it does not and validators are
/// required.
pub(crate) fn victoria_metrics_or_skip() -> bool {
    let ok = Command::new("victoria-metrics")
        .arg("-version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok || !required(),
        "victoria-metrics is not installed (Debian package victoria-metrics)"
    );
    if !ok {
        eprintln!("victoria-metrics not available: its checks skipped");
    }
    ok
}

fn without_proxies(cmd: &mut Command) {
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
}

/// Waits until `path` on `addr` answers 200 from `proc` (still running); `Err` when it
/// exited because the address was taken, a panic for any other exit or the deadline.
fn wait_ready(
    proc: &mut Proc,
    addr: SocketAddr,
    path: &str,
    deadline: Deadline,
) -> Result<(), String> {
    loop {
        if let Some(status) = proc.exited() {
            let text = proc.log_text();
            if text.contains("address already in use") {
                return Err(format!("port {} was taken", addr.port()));
            }
            panic!(
                "{} exited ({status}) on start\n{}",
                proc.name,
                proc.log_tail()
            );
        }
        if http_get(addr, path).is_ok_and(|(status, _)| status == 200) && proc.exited().is_none() {
            return Ok(());
        }
        if Instant::now() >= deadline.0 {
            panic!(
                "end-to-end test exceeded its limit waiting for {} to be ready\n{}",
                proc.name,
                proc.log_tail()
            );
        }
        std::thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client for the Prometheus API.
// ---------------------------------------------------------------------------------------

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(crate) fn url_encode(s: &str) -> String {
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
pub(crate) fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
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
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
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
pub(crate) type Sample = (BTreeMap<String, String>, f64);

/// One result of a query: its labels and the result itself.
type Labelled = (BTreeMap<String, String>, serde_json::Value);

/// Runs `promql` now and returns its results, which must be of `kind` (`vector` or
/// `matrix`), each with its labels.
fn query_results(prom: SocketAddr, promql: &str, kind: &str) -> Result<Vec<Labelled>, String> {
    // An explicit time: VictoriaMetrics otherwise answers for a moment in the past.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let (status, body) = http_get(
        prom,
        &format!("/api/v1/query?query={}&time={now:.3}", url_encode(promql)),
    )?;
    if status != 200 {
        return Err(format!("HTTP {status}: {body}"));
    }
    let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    if json["status"] != "success" || json["data"]["resultType"] != kind {
        return Err(format!("not a {kind}: {body}"));
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
            Ok((labels, r.clone()))
        })
        .collect()
}

/// A sample value as the API writes it (a string).
fn number(v: &serde_json::Value) -> Result<f64, String> {
    v.as_str()
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| format!("no value: {v}"))
}

/// Runs an instant query; `Err` with the reason when Prometheus does not answer with a
/// vector.
pub(crate) fn try_query(prom: SocketAddr, promql: &str) -> Result<Vec<Sample>, String> {
    query_results(prom, promql, "vector")?
        .into_iter()
        .map(|(labels, r)| Ok((labels, number(&r["value"][1])?)))
        .collect()
}

/// A series' labels and its `(timestamp, value)` points.
pub(crate) type Points = (BTreeMap<String, String>, Vec<(f64, f64)>);

/// The raw points of a range selector (such as `x[5m]`): per series, its labels and its
/// `(timestamp, value)` points in time order.
pub(crate) fn try_matrix(prom: SocketAddr, promql: &str) -> Result<Vec<Points>, String> {
    query_results(prom, promql, "matrix")?
        .into_iter()
        .map(|(labels, r)| {
            let points = r["values"]
                .as_array()
                .ok_or_else(|| format!("no values: {r}"))?
                .iter()
                .map(|p| {
                    Ok((
                        p[0].as_f64().ok_or_else(|| format!("no time: {p}"))?,
                        number(&p[1])?,
                    ))
                })
                .collect::<Result<Vec<_>, String>>()?;
            Ok((labels, points))
        })
        .collect()
}

/// A running Prometheus: its address and process (for logs in failure messages).
pub(crate) struct Prometheus {
    pub(crate) addr: SocketAddr,
    pub(crate) proc: Proc,
}

impl Prometheus {
    /// Runs `promql`, which must give exactly one sample; returns it.
    pub(crate) fn one(&self, promql: &str) -> Sample {
        let mut got = try_query(self.addr, promql)
            .unwrap_or_else(|e| panic!("query {promql}: {e}\n{}", self.proc.log_tail()));
        assert_eq!(got.len(), 1, "query {promql}: {got:?}");
        got.pop().unwrap()
    }

    /// Runs `promql`, which must give exactly one sample; returns its value.
    pub(crate) fn value(&self, promql: &str) -> f64 {
        self.one(promql).1
    }

    /// Polls `promql` until it gives one sample with a value of at least `min`.
    pub(crate) fn wait_for(&self, promql: &str, min: f64, deadline: Deadline) {
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
pub(crate) fn check_job(prom: &Prometheus, job: &str, target: SocketAddr) {
    let (labels, up) = prom.one(&format!("up{{job=\"{job}\"}}"));
    assert_eq!(up, 1.0, "{job}: up");
    assert_eq!(labels["instance"], target.to_string(), "{job}: instance");
    check_values(prom, job);
}

/// Checks every `gen` family of `job` (its series labelled `job` and `instance`) against
/// the values written.
pub(crate) fn check_values(prom: &Prometheus, job: &str) {
    let p = f64::from(PROCESSES);
    let n = OPS as f64;
    let sel = format!("job=\"{job}\"");

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
