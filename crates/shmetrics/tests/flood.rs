//! What clients and files can make `serve` hold: a flood of connections that never read,
//! against a `serve` whose descriptor limit is 1,024 (as a default container's); slow
//! readers of large bodies; expositions amplified to hundreds of megabytes, against a
//! `serve` whose address space is 1 GiB; the segment pages it keeps under its memory
//! target. In a test binary of its own, its tests one at a
//! time ([`one_at_a_time`]), so that no other test competes for the cores while one
//! measures a legitimate client's latency or a server's memory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Held by each test for its whole run: the test harness runs tests in parallel, and the
/// amplification test's rendering would otherwise slow the flood test's measured scrapes.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

const BIN: &str = env!("CARGO_BIN_EXE_shmetrics");

/// `serve` under `prlimit`, killed on drop.
struct Serve {
    child: Child,
    addr: SocketAddr,
}

impl Serve {
    /// `serve` under `prlimit --nofile=1024:1024`.
    fn start(dir: &str, args: &[&str]) -> Self {
        Self::start_limited("--nofile=1024:1024", dir, args)
    }

    fn start_limited(limit: &str, dir: &str, args: &[&str]) -> Self {
        let mut child = Command::new("prlimit")
            .args([limit, "--", BIN, "serve", "--dir", dir])
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

/// Runs `shmetrics generate --dir DIR ARGS`, which must succeed; its standard output.
fn generate(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["generate", "--dir", dir.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A directory of `generate` output: `processes` dead writers of `series` series each.
fn generated(processes: u32, series: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (processes, series) = (processes.to_string(), series.to_string());
    generate(
        dir.path(),
        &["--ops", "2", "--processes", &processes, "--series", &series],
    );
    dir
}

/// GET /metrics on a new connection, answered 200: the whole response, and how long it took.
fn scrape(addr: SocketAddr) -> (String, Duration) {
    let started = Instant::now();
    let (status, body) = get(addr);
    assert_eq!(status, "HTTP/1.1 200 OK");
    (String::from_utf8(body).unwrap(), started.elapsed())
}

/// The value of the sample line starting with `series ` in `text`.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series}"))
}

/// 1,100 connections that each send 20 pipelined requests for a 150 KB body and never
/// read: a client that scrapes every second meanwhile gets every answer. Before, the flood
/// held every descriptor for over a minute and every legitimate scrape timed out (30 s).
/// Now connections stop 64 short of the descriptor limit, a newcomer takes the place of the
/// connection stalled longest or else the oldest, and the stalled responses time out.
///
/// A liveness bound, not a latency one: in the flood's first seconds the server is writing
/// the pipelined responses of 960 connections (up to 3 MB each fits in loopback's socket
/// buffers), and on 2 cores a scrape has waited up to 5.5 s for its turn (in about half the
/// runs under 10 ms); the slowest is printed. When the server takes in the flood's queued
/// connections late, every open connection can be younger than half a second as a scrape
/// arrives, and the scrape is refused as documented (`ServerOptions::max_connections`); its
/// retry half a second later must be answered, and at most two of the eight scrapes may
/// need one.
#[test]
fn a_flood_of_never_read_pipelined_connections_does_not_lock_out_scrapes() {
    let _serial = one_at_a_time();
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
    let mut retried = 0;
    for _ in 0..8 {
        std::thread::sleep(Duration::from_secs(1));
        let started = Instant::now();
        let body = match try_get(addr) {
            Ok((status, body)) => {
                assert_eq!(status, "HTTP/1.1 200 OK");
                String::from_utf8(body).unwrap()
            }
            Err(e) => {
                eprintln!("a scrape was refused while every connection was young ({e}): retried");
                retried += 1;
                std::thread::sleep(Duration::from_millis(600));
                scrape(addr).0
            }
        };
        let took = started.elapsed();
        worst = worst.max(took);
        assert!(took < Duration::from_secs(15), "a scrape took {took:?}");
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
    assert!(retried <= 2, "{retried} of 8 scrapes were refused first");
    drop(flood);
}

/// 16 clients that each send a request's head one byte every 100 ms, filling a `serve` held
/// to 16 connections: a scrape on a new connection is answered, because the newcomer takes
/// the place of the oldest of them. Before, a connection that sent or received a byte within
/// the last half second could not be evicted, so the trickle (and a pipelined flood still
/// being answered) refused every legitimate scrape until the header timeout.
#[test]
fn clients_that_keep_trickling_cannot_lock_out_scrapes() {
    let _serial = one_at_a_time();
    let dir = generated(1, 10);
    let serve = Serve::start(dir.path().to_str().unwrap(), &["--max-connections", "16"]);
    let addr = serve.addr;
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut trickling: Vec<TcpStream> = (0..16)
                .map(|_| {
                    let mut c = TcpStream::connect(addr).unwrap();
                    write!(c, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nX-Trickle: ").unwrap();
                    c
                })
                .collect();
            // Bounded: 50 rounds of 100 ms, a byte on every connection each round.
            for _ in 0..50 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                trickling.retain_mut(|c| c.write_all(b"a").is_ok());
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        std::thread::sleep(Duration::from_secs(1));
        let answer = try_get(addr);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (status, body) = answer.unwrap_or_else(|e| panic!("the scrape was refused: {e}"));
        assert_eq!(status, "HTTP/1.1 200 OK");
        let body = String::from_utf8(body).unwrap();
        assert_eq!(
            value(
                &body,
                "shmetrics_http_connections_closed_total{reason=\"evicted\"}"
            ),
            1.0
        );
    });
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
    let _serial = one_at_a_time();
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

/// GET /metrics on a new connection: the status line and the body.
fn get(addr: SocketAddr) -> (String, Vec<u8>) {
    try_get(addr).unwrap_or_else(|e| panic!("GET /metrics failed: {e}"))
}

/// GET /metrics on a new connection: the status line and the body, or the connection's
/// error (a refused connection is reset).
fn try_get(addr: SocketAddr) -> std::io::Result<(String, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let body = raw.split_off(end + 4);
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
    {
        assert_eq!(len.parse::<usize>().unwrap(), body.len(), "{head}");
    }
    Ok((head.lines().next().unwrap().to_owned(), body))
}

/// A crafted file with the report's amplification workload, as another tool could write it:
/// 40 series of a histogram with 512 buckets and 32 labels of 4 KiB values, 67 MB of text
/// each.
fn over_the_limits(path: &std::path::Path) {
    use shmetrics_layout::image::SegmentImage;
    use shmetrics_layout::record::{FamilyRecord, Record, SeriesRecord};
    use shmetrics_layout::slots::slot_words;
    use shmetrics_layout::{MetricKind, SegmentIdentity};
    let mut image = SegmentImage::new(SegmentIdentity {
        pid: 999_999,
        sequence: 0,
        instance_id: 99,
        start_time_ticks: 0,
        created_unix_nanos: 1,
    });
    let label_names: Vec<String> = (0..32).map(|i| format!("l{i:02}")).collect();
    image.record(Record::Family(FamilyRecord {
        id: 0,
        kind: MetricKind::Histogram,
        mode: None,
        name: "crafted".into(),
        help: "Amplified.".into(),
        label_names,
        bounds: (0..512).map(f64::from).collect(),
        states: Vec::new(),
    }));
    for i in 0..40 {
        let values = (0..32)
            .map(|l| format!("{i}-{l}-{}", "v".repeat(4090)))
            .collect();
        let record = SeriesRecord {
            family_id: 0,
            label_values: values,
            ..SeriesRecord::default()
        };
        image.series(record, vec![1; slot_words(MetricKind::Histogram, 512)]);
    }
    std::fs::write(path, image.build().unwrap()).unwrap();
}

/// A live process (simulated pid `pid`) with `series` series of histogram `amp` at the
/// limits: 256 buckets, 32 labels whose names and values fill the 8 KiB of a label set with
/// quotes (each escaped to two bytes): about 4.2 MB of text per series.
fn at_the_limits(dir: &std::path::Path, pid: u32, series: u32) -> shmetrics_writer::Registry {
    let r = shmetrics_writer::Registry::open_simulating_pid(
        dir,
        shmetrics_writer::Options::default(),
        pid,
    )
    .unwrap();
    let names: Vec<String> = (0..32).map(|i| format!("l{i:02}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let bounds: Vec<f64> = (0..256).map(f64::from).collect();
    let h = r
        .histogram("amp", "At the limits.", &names, &bounds)
        .unwrap();
    for i in 0..series {
        let values: Vec<String> = (0..32)
            .map(|l| format!("{pid}-{i}-{l}-{}", "\"".repeat(240)))
            .collect();
        h.labels(&values).unwrap().observe(f64::from(i));
    }
    r
}

/// The report's amplification workload against a `serve` limited to 1 GiB of address space:
/// before, 40 such series made `serve` abort on an allocation. Now the family over the
/// limits is left out and reported; families at the limits render 164 MB, streamed with a
/// peak resident set far below it; past `--max-scrape-mib` the scrape is a clean 500,
/// counted; the next normal scrape works.
#[test]
fn amplified_expositions_neither_abort_nor_fill_memory() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let normal = shmetrics_writer::Registry::open_simulating_pid(
        dir.path(),
        shmetrics_writer::Options::default(),
        1,
    )
    .unwrap();
    normal
        .counter("normal_total", "A normal counter.", &[])
        .unwrap()
        .unlabelled()
        .unwrap()
        .inc();
    over_the_limits(&dir.path().join("shmetrics-999999-0-crafted.shm"));
    let first = at_the_limits(dir.path(), 2, 40);
    let serve = Serve::start_limited(
        "--as=1073741824",
        dir.path().to_str().unwrap(),
        &["--max-scrape-mib", "256"],
    );
    let pid = serve.child.id();
    let before = status_kib(pid, "VmRSS");

    // 40 series at the limits: about 170 MB, streamed.
    let (status, body) = get(serve.addr);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.len() > 150 << 20, "{} bytes", body.len());
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("\nnormal_total 1.0\n"));
    assert!(!text.contains("crafted"));
    assert_eq!(
        value(
            &text,
            "shmetrics_reader_invalid_segments{reason=\"over_limit\"}"
        ),
        1.0
    );
    let streamed_len = text.len();
    drop(text);
    let peak = status_kib(pid, "VmHWM");

    // 80 series: past the 256 MiB limit.
    let second = at_the_limits(dir.path(), 3, 40);
    let (status, body) = get(serve.addr);
    assert_eq!(status, "HTTP/1.1 500 Internal Server Error");
    let message = String::from_utf8(body).unwrap();
    assert!(
        message.starts_with(
            "the exposition is larger than the scrape limit of 268435456 bytes (at least "
        ),
        "{message}"
    );

    // The second process exits and its files go: the next scrape is served again.
    drop(second);
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let path = e.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("shmetrics-3-")
        {
            std::fs::remove_file(path).unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(150));
    let (status, body) = get(serve.addr);
    assert_eq!(status, "HTTP/1.1 200 OK");
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("\nnormal_total 1.0\n"));
    assert_eq!(
        value(
            &text,
            "shmetrics_scrape_failures_total{reason=\"too_large\"}"
        ),
        1.0
    );
    let peak = peak.max(status_kib(pid, "VmHWM"));
    eprintln!(
        "serve RSS before {before} KiB, peak {peak} KiB while streaming {streamed_len} bytes \
         twice and refusing one exposition past 256 MiB"
    );
    assert!(
        peak < before + 128 * 1024,
        "streaming raised the peak resident set from {before} to {peak} KiB"
    );
    drop(first);
}

/// Live writers (`generate --stay`), SIGTERMed on drop.
struct LiveWriters(Vec<i32>);

impl LiveWriters {
    fn start(dir: &std::path::Path, processes: u32, series: u32) -> Self {
        let (processes, series) = (processes.to_string(), series.to_string());
        let pids = generate(
            dir,
            &[
                "--stay",
                "--ops",
                "10",
                "--processes",
                &processes,
                "--series",
                &series,
            ],
        );
        Self(
            pids.split_whitespace()
                .map(|p| p.parse().unwrap())
                .collect(),
        )
    }
}

impl Drop for LiveWriters {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

/// Segment pages of live writers beyond `--resident-budget-mib` stay mapped while the
/// server's anonymous memory leaves room for them under `--memory-target-mib` (a
/// directory that fits is not faulted in again at every scrape), and are released after
/// each read without a target.
#[test]
fn the_memory_target_keeps_the_segment_pages_that_fit() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let _writers = LiveWriters::start(dir.path(), 16, 2000);
    let path = dir.path().to_str().unwrap();
    let floor = ["--no-self-metrics", "--resident-budget-mib", "0"];
    let kept = Serve::start(
        path,
        &[&floor[..], &["--memory-target-mib", "512"]].concat(),
    );
    let released = Serve::start(path, &[&floor[..], &["--memory-target-mib", "0"]].concat());
    // The first snapshot has no measure of the anonymous memory yet: the floor.
    for _ in 0..3 {
        scrape(kept.addr);
        scrape(released.addr);
    }
    let kept_kib = status_kib(kept.child.id(), "RssFile");
    let released_kib = status_kib(released.child.id(), "RssFile");
    // 16 segments of 2,000 series (a third of them 20-bucket histograms): ~2.3 MiB of slots.
    assert!(
        kept_kib >= released_kib + 1024,
        "file-backed resident KiB: {kept_kib} with the target, {released_kib} without"
    );
    println!("file-backed resident KiB: {kept_kib} with the target, {released_kib} without");
}
