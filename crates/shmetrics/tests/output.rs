//! What `shmetrics` writes to stdout and stderr.
//!
//! Every line goes out in one `write(2)`: whoever reads the stream as it grows (a
//! supervisor tailing a log file, a script waiting for the `serving http://…` line to learn
//! the port) never sees half a line, and the lines of two processes sharing the stream
//! (`run` and its command, the demo and its engines) never mix within a line. Seen from
//! outside, with `strace -ff -e trace=write,writev`: each write to descriptor 1 or 2 must
//! write whole lines, all of its bytes. README's test command installs strace and sets
//! `SHMETRICS_REQUIRE_VALIDATORS=1`, which makes a missing strace a failure; where the
//! kernel refuses to trace (ptrace denied in a container), those tests say so on stderr and
//! check nothing.
//!
//! A stream that is gone (a closed pipe: a supervisor that died, `| head`) loses its lines
//! and nothing else: `serve` goes on serving, the demo goes on running, `compact` compacts.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_shmetrics");
/// Longest wait for a traced command to start serving or to exit.
const WAIT: Duration = Duration::from_secs(60);

/// Whether strace can trace here; `false` (after saying why) where it cannot, a panic where
/// it is missing and README's test command requires it.
fn can_trace() -> bool {
    let required = support::required();
    match Command::new("strace")
        .args(["-o", "/dev/null", "true"])
        .output()
    {
        Err(e) if required => panic!("strace is required (SHMETRICS_REQUIRE_VALIDATORS=1): {e}"),
        Err(e) => {
            eprintln!("output: skipped: strace: {e}");
            false
        }
        Ok(out) if !out.status.success() => {
            eprintln!(
                "whole_lines: skipped: strace cannot trace here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            false
        }
        Ok(_) => true,
    }
}

/// `shmetrics ARGS` under strace, which writes one file per thread under `logs/w`.
fn traced(logs: &Path, args: &[&str]) -> Command {
    traced_program(logs, BIN, args)
}

/// `PROGRAM ARGS` under strace, as [`traced`].
fn traced_program(logs: &Path, program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("strace");
    cmd.args(["-ff", "-qq", "-xx", "-s", "1048576", "-e", "signal=none"])
        .args(["-e", "trace=write,writev", "-o"])
        .arg(logs.join("w"))
        .arg(program)
        .args(args)
        .env_remove("DYN_SYSTEM_PORT")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

/// Runs `shmetrics ARGS` to its end under strace, with a `TMPDIR` of its own (where `run`
/// and the demo make their directories); returns the trace files' directory and the output.
fn run_traced(args: &[&str]) -> (tempfile::TempDir, Output) {
    let (logs, tmp) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let out = traced(logs.path(), args)
        .env("TMPDIR", tmp.path())
        .env_remove("PROMETHEUS_MULTIPROC_DIR")
        .output()
        .unwrap();
    (logs, out)
}

/// A demo of one engine that stops by itself after a second.
const SHORT_DEMO: &[&str] = &[
    "demo",
    "--engines",
    "1",
    "--listen",
    "127.0.0.1:0",
    "--duration",
    "1",
];

/// Decodes strace's `-xx` string (`\x41\x42…`) into bytes.
fn decode(hex: &str) -> Vec<u8> {
    hex.split("\\x")
        .filter(|h| !h.is_empty())
        .map(|h| u8::from_str_radix(h, 16).unwrap_or_else(|_| panic!("strace string {hex:?}")))
        .collect()
}

/// One write to stdout or stderr: the descriptor, the bytes asked for, the count written.
struct Write2 {
    fd: u8,
    bytes: Vec<u8>,
    written: usize,
    call: String,
}

/// Every write and writev to descriptors 1 and 2 in the trace files under `logs`.
fn writes(logs: &Path) -> Vec<Write2> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(logs).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for call in text.lines() {
            let Some(args) = call
                .strip_prefix("write(")
                .or_else(|| call.strip_prefix("writev("))
            else {
                continue;
            };
            let fd = match args.split_once(',') {
                Some(("1", _)) => 1,
                Some(("2", _)) => 2,
                _ => continue,
            };
            let (args, result) = call.rsplit_once(" = ").expect("a finished call");
            assert!(!args.contains("\"..."), "strace cut a string short: {call}");
            let bytes = args
                .split('"')
                .skip(1)
                .step_by(2)
                .flat_map(decode)
                .collect();
            let written = result
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("failed write: {call}"));
            found.push(Write2 {
                fd,
                bytes,
                written,
                call: call.to_owned(),
            });
        }
    }
    found
}

/// Asserts that every write to stdout and stderr wrote whole lines, all of its bytes;
/// returns what went to `fd`, for checking that the expected lines were written at all.
fn assert_whole_lines(logs: &Path, fd: u8) -> String {
    let writes = writes(logs);
    for w in &writes {
        assert!(
            w.bytes.ends_with(b"\n") && w.written == w.bytes.len(),
            "a write of part of a line to descriptor {}: {:?} ({} of {} bytes written)\n{}",
            w.fd,
            String::from_utf8_lossy(&w.bytes),
            w.written,
            w.bytes.len(),
            &w.call[..w.call.len().min(300)]
        );
    }
    let text: Vec<u8> = (writes.iter())
        .filter(|w| w.fd == fd)
        .flat_map(|w| w.bytes.clone())
        .collect();
    String::from_utf8(text).unwrap()
}

/// The pid of `parent`'s only child.
fn child_of(parent: &Child) -> Pid {
    let id = parent.id();
    let deadline = Instant::now() + WAIT;
    loop {
        let children =
            std::fs::read_to_string(format!("/proc/{id}/task/{id}/children")).unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            return Pid::from_raw(pid.parse().unwrap());
        }
        assert!(Instant::now() < deadline, "strace started no process");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits (bounded) for `child` to exit; returns whether it succeeded.
fn exits_ok(child: &mut Child) -> bool {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the traced command did not exit in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A directory of foreign files only: `serve` warns about it at start-up.
fn foreign_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
    dir
}

#[test]
fn serve_writes_its_serving_line_and_log_lines_whole() {
    if !can_trace() {
        return;
    }
    let logs = tempfile::tempdir().unwrap();
    let dir = foreign_dir();
    let mut strace = traced(
        logs.path(),
        &[
            "serve",
            "-v",
            "--dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stderr = BufReader::new(strace.stderr.take().unwrap());
    let mut serving = String::new();
    stderr.read_line(&mut serving).unwrap();
    let addr = serving
        .strip_prefix("serving http://")
        .and_then(|rest| rest.split_once("/metrics from "))
        .map(|(addr, _)| addr.to_owned())
        .unwrap_or_else(|| panic!("{serving:?}"));
    // Answered with 200 (`http_get` fails the test otherwise).
    support::http_get(&format!("http://{addr}/metrics"), None);
    kill(child_of(&strace), Signal::SIGTERM).unwrap();
    assert!(exits_ok(&mut strace), "serve stops cleanly on SIGTERM");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();

    let written = assert_whole_lines(logs.path(), 2);
    assert_eq!(
        written,
        format!("{serving}{rest}"),
        "all of stderr was traced"
    );
    assert!(
        written.starts_with("serving http://127.0.0.1:"),
        "{written}"
    );
    assert!(
        written.contains("shmetrics: warning: serve: ") && written.contains("shmetrics: info: "),
        "the warning about the directory and -v's lines: {written}"
    );
}

#[test]
fn run_and_its_command_write_whole_lines() {
    if !can_trace() {
        return;
    }
    let (logs, out) = run_traced(&[
        "run",
        "--listen",
        "127.0.0.1:0",
        "--",
        "sh",
        "-c",
        "echo the command ran; exit 3",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "run returns the command's status"
    );
    let stderr = assert_whole_lines(logs.path(), 2);
    assert_eq!(stderr, String::from_utf8(out.stderr).unwrap());
    assert!(stderr.starts_with("serving http://127.0.0.1:"), "{stderr}");
    assert_eq!(
        assert_whole_lines(logs.path(), 1),
        "the command ran\n",
        "the command's stdout"
    );
}

#[test]
fn the_demo_writes_its_banner_whole() {
    if !can_trace() {
        return;
    }
    let (logs, out) = run_traced(SHORT_DEMO);
    assert!(out.status.success(), "{out:?}");
    let stdout = assert_whole_lines(logs.path(), 1);
    assert_eq!(stdout, String::from_utf8(out.stdout).unwrap());
    assert!(
        stdout
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("serving http://127.0.0.1:")),
        "{stdout}"
    );
}

#[test]
fn failures_and_skipped_segments_are_reported_in_whole_lines() {
    if !can_trace() {
        return;
    }
    let missing = PathBuf::from("/nonexistent/shmetrics-whole-lines");
    let (logs, out) = run_traced(&["dump", "--dir", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = assert_whole_lines(logs.path(), 2);
    assert!(stderr.starts_with("shmetrics: "), "{stderr}");
    assert_eq!(stderr, String::from_utf8(out.stderr).unwrap());

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("shmetrics-1-0-0.shm"), vec![0u8; 4096]).unwrap();
    let (logs, out) = run_traced(&["dump", "--dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let stderr = assert_whole_lines(logs.path(), 2);
    assert!(
        stderr.contains("shmetrics-1-0-0.shm"),
        "the skipped segment: {stderr}"
    );
}

/// `generate --stay` passes its workers' stderr on: a worker's error line longer than a
/// pipe's atomic write (here 7.7 KB, naming a segment path of 3.7 KB twice) still goes out
/// whole, so two workers' lines cannot mix.
#[test]
fn generate_passes_its_workers_long_lines_on_whole() {
    if !can_trace() {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let mut dir = base.path().to_path_buf();
    while dir.as_os_str().len() < 3_700 {
        dir.push("d".repeat(250));
    }
    std::fs::create_dir_all(&dir).unwrap();
    // Each worker's segment cannot grow past 1 KiB: it fails with EFBIG (SIGXFSZ, which
    // would kill it, is ignored) and names the segment in its error line.
    let script = "trap '' XFSZ; ulimit -f 1; \
                  exec \"$0\" generate --dir \"$1\" --processes 2 --ops 1 --stay";
    let logs = tempfile::tempdir().unwrap();
    let out = traced_program(
        logs.path(),
        "sh",
        &["-c", script, BIN, dir.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_whole_lines(logs.path(), 2);
    let stderr = String::from_utf8(out.stderr).unwrap();
    let (summary, passed_on): (Vec<&str>, Vec<&str>) =
        (stderr.lines()).partition(|l| l.starts_with("shmetrics: generate: "));
    assert!(
        summary.len() == 1 && summary[0].contains("failed before it was ready"),
        "{summary:?}"
    );
    assert!(
        !passed_on.is_empty(),
        "the failed worker's line is passed on"
    );
    for line in passed_on {
        assert!(
            line.starts_with("shmetrics: generate-worker ")
                && line.len() > 7_000
                && line.ends_with(": File too large (os error 27)"),
            "{line}"
        );
    }
}

/// A pipe whose reading end is already closed: every write to it fails (`EPIPE`).
fn gone() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn serve_goes_on_serving_when_its_stderr_is_gone() {
    let dir = foreign_dir();
    let deadline = Instant::now() + WAIT;
    // The port is picked free and then handed over, so another process may take it in
    // between: then serve exits 2 and the next port is tried.
    loop {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut serve = Command::new(BIN)
            .args([
                "serve",
                "-v",
                "--dir",
                dir.path().to_str().unwrap(),
                "--listen",
                &addr,
            ])
            .env_remove("DYN_SYSTEM_PORT")
            .stderr(gone())
            .spawn()
            .unwrap();
        let status = loop {
            if let Some(status) = serve.try_wait().unwrap() {
                break Some(status);
            }
            if TcpStream::connect(&addr).is_ok() {
                break None;
            }
            assert!(Instant::now() < deadline, "serve never listened");
            std::thread::sleep(Duration::from_millis(20));
        };
        match status {
            Some(status) if status.code() == Some(2) => continue,
            Some(status) => panic!("serve exited ({status}) with its stderr gone"),
            None => {}
        }
        // The serving line, the warning and -v's lines were all lost; serving goes on.
        for path in ["/metrics", "/health", "/metrics"] {
            // Answered with 200 (`http_get` fails the test otherwise).
            support::http_get(&format!("http://{addr}{path}"), None);
        }
        assert!(serve.try_wait().unwrap().is_none(), "still serving");
        kill(Pid::from_raw(serve.id() as i32), Signal::SIGTERM).unwrap();
        assert!(exits_ok(&mut serve), "stops cleanly on SIGTERM");
        return;
    }
}

/// Runs `shmetrics ARGS` to its end with `TMPDIR=tmp` and its stdout [`gone`]; asserts
/// that it succeeded and returns its output.
fn succeeds_with_stdout_gone(args: &[&str], tmp: &Path) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .env("TMPDIR", tmp)
        .stdout(gone())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_demo_runs_its_course_when_its_stdout_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let out = succeeds_with_stdout_gone(SHORT_DEMO, tmp.path());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "nothing to complain about"
    );
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "the demo removed its directory"
    );
}

#[test]
fn compact_compacts_when_its_stdout_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let generate = Command::new(BIN)
        .args(["generate", "--dir", dir.path().to_str().unwrap()])
        .args(["--processes", "2", "--series", "10", "--ops", "3"])
        .output()
        .unwrap();
    assert!(generate.status.success(), "{generate:?}");
    succeeds_with_stdout_gone(
        &["compact", "--dir", dir.path().to_str().unwrap()],
        dir.path(),
    );
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [".shmetrics-compact.lock", "shmetrics-archive.shm"],
        "the dead writers' segments were folded into the archive"
    );
}
