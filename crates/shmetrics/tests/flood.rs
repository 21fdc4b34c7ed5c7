//! A flood of connections that never read, against a `serve` whose descriptor limit is
//! 1,024 (as a default container's), in a test binary of its own so that no other test
//! competes for the two cores while it measures a legitimate client's latency.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_shmetrics");

/// `serve` under `prlimit --nofile=1024:1024`, killed on drop.
struct Serve {
    child: Child,
    addr: SocketAddr,
}

impl Serve {
    fn start(dir: &str, args: &[&str]) -> Self {
        let mut child = Command::new("prlimit")
            .args(["--nofile=1024:1024", "--", BIN, "serve", "--dir", dir])
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve under prlimit");
        let mut line = String::new();
        BufReader::new(child.stderr.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .strip_prefix("serving http://")
            .and_then(|rest| rest.split_once("/metrics"))
            .map(|(addr, _)| addr.parse().unwrap())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Self { child, addr }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory of `generate` output: `processes` dead writers of `series` series each.
fn generated(processes: u32, series: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "generate",
            "--dir",
            dir.path().to_str().unwrap(),
            "--ops",
            "2",
        ])
        .args(["--processes", &processes.to_string()])
        .args(["--series", &series.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// GET /metrics on a new connection: the body, and how long it took.
fn scrape(addr: SocketAddr) -> (String, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(
        raw.starts_with("HTTP/1.1 200"),
        "{}",
        &raw[..raw.len().min(200)]
    );
    (raw, started.elapsed())
}

/// The value of the sample line starting with `series ` in `text`.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series}"))
}

/// 1,100 connections that each send 20 pipelined requests for a 150 KB body and never
/// read: a client that scrapes every second meanwhile gets every answer within 2 s. Before,
/// the flood held every descriptor for over a minute and every legitimate scrape timed out.
/// Now connections stop 64 short of the descriptor limit, the stalled ones make room for new
/// ones, their responses time out, and excess ones are refused at once.
#[test]
fn a_flood_of_never_read_pipelined_connections_does_not_lock_out_scrapes() {
    let dir = generated(2, 1500);
    let serve = Serve::start(dir.path().to_str().unwrap(), &["--write-timeout-secs", "3"]);
    let addr = serve.addr;
    let pipelined = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").repeat(20);
    let mut flood = Vec::new();
    for _ in 0..1_100 {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let _ = s.write_all(pipelined.as_bytes());
        flood.push(s);
    }
    let mut worst = Duration::ZERO;
    for _ in 0..8 {
        std::thread::sleep(Duration::from_secs(1));
        let (body, took) = scrape(addr);
        worst = worst.max(took);
        assert!(took < Duration::from_secs(2), "a scrape took {took:?}");
        assert!(body.contains("gen_c0_total"));
    }
    let (body, _) = scrape(addr);
    let closed = |reason: &str| {
        value(
            &body,
            &format!("shmetrics_http_connections_closed_total{{reason=\"{reason}\"}}"),
        )
    };
    eprintln!(
        "slowest legitimate scrape during the flood: {worst:?}; open {}; closed: refused {}, \
         evicted {}, write_timeout {}",
        value(&body, "shmetrics_http_connections"),
        closed("refused"),
        closed("evicted"),
        closed("write_timeout")
    );
    assert!(closed("refused") + closed("evicted") + closed("write_timeout") >= 140.0);
    drop(flood);
}

/// A field of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap()
}

/// 60 clients that each ask for a body of about 8 MB and never read it, one every 50 ms
/// (each gets the body of its own snapshot): the server's resident set stays bounded by
/// its body budget (`--max-body-mib 32`) instead of holding every body (60 clients held
/// 1 GB in the report), and a legitimate scrape still works.
#[test]
fn slow_readers_of_a_large_body_cannot_pin_memory() {
    let dir = generated(1, 18000);
    let serve = Serve::start(
        dir.path().to_str().unwrap(),
        &["--max-body-mib", "32", "--write-timeout-secs", "60"],
    );
    let addr = serve.addr;
    let (body, _) = scrape(addr);
    assert!(body.len() > 6 << 20, "a large body: {} bytes", body.len());
    let pid = serve.child.id();
    let before = status_kib(pid, "VmRSS");
    let mut slow = Vec::new();
    for _ in 0..60 {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        // Read a little, so the response has started, then nothing more.
        let mut first = [0u8; 64];
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let _ = s.read(&mut first).unwrap();
        slow.push(s);
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(600));
    let (body, _) = scrape(addr);
    let rss = status_kib(pid, "VmRSS");
    let peak = status_kib(pid, "VmHWM");
    eprintln!(
        "serve RSS before {before} KiB, after 60 slow readers {rss} KiB (peak {peak} KiB); \
         held {} body bytes; evicted {}",
        value(&body, "shmetrics_http_body_bytes"),
        value(
            &body,
            "shmetrics_http_connections_closed_total{reason=\"evicted\"}"
        )
    );
    assert!(
        peak < before + 200 * 1024,
        "60 slow readers raised the peak resident set from {before} to {peak} KiB"
    );
    drop(slow);
}
