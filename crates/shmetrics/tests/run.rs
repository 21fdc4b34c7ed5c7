//! `shmetrics run`: the managed directory (created private, exported, removed on exit and
//! on SIGTERM; a user's directory left alone), signal forwarding, the command's exit
//! status, and `/metrics` served while the command runs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_shmetrics");
const WAIT: Duration = Duration::from_secs(30);

/// `shmetrics run --listen 127.0.0.1:0 -- ARGS`, with `TMPDIR` set to `tmp` and
/// `PROMETHEUS_MULTIPROC_DIR` set to `dir` (removed when `None`).
fn run_command(tmp: &Path, dir: Option<&Path>, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--listen", "127.0.0.1:0", "--"])
        .args(args)
        .env("TMPDIR", tmp)
        .env("SHMETRICS", BIN)
        .env_remove("DYN_SYSTEM_PORT")
        .stdin(Stdio::null());
    match dir {
        Some(d) => cmd.env("PROMETHEUS_MULTIPROC_DIR", d),
        None => cmd.env_remove("PROMETHEUS_MULTIPROC_DIR"),
    };
    cmd
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A running `run`, SIGKILLed on drop if still running (after a SIGTERM, which it
/// forwards, so its child goes too).
struct Running {
    child: Child,
    stdout: BufReader<ChildStdout>,
    stderr: BufReader<ChildStderr>,
}

impl Running {
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start run");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let stderr = BufReader::new(child.stderr.take().unwrap());
        Self {
            child,
            stdout,
            stderr,
        }
    }

    fn stdout_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read stdout");
        line.trim_end().to_owned()
    }

    /// Reads `serving http://ADDR/metrics from DIR` from stderr.
    fn serving(&mut self) -> (SocketAddr, PathBuf) {
        let mut line = String::new();
        self.stderr.read_line(&mut line).expect("read stderr");
        let (addr, dir) = line
            .trim_end()
            .strip_prefix("serving http://")
            .and_then(|rest| rest.split_once("/metrics from "))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        (addr.parse().expect("an address"), PathBuf::from(dir))
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal run");
    }

    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "run did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn rest_of_stdout(&mut self) -> String {
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        rest
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            std::thread::sleep(Duration::from_millis(200));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// GET /metrics over a plain connection; returns the body (requires 200).
fn metrics(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read the response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    body.to_owned()
}

#[test]
fn exports_a_private_dir_returns_the_status_and_removes_the_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let out: Output = run_command(
        tmp.path(),
        None,
        &[
            "sh",
            "-c",
            r#"echo "$PROMETHEUS_MULTIPROC_DIR"; stat -c %a "$PROMETHEUS_MULTIPROC_DIR"; exit 3"#,
        ],
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let mut lines = stdout.lines();
    let dir = PathBuf::from(lines.next().expect("the directory"));
    assert_eq!(lines.next(), Some("700"), "private to the user");
    assert_eq!(dir.parent(), Some(tmp.path()), "created under $TMPDIR");
    let name = dir.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("shmetrics-run-"), "{name}");
    assert!(stderr.starts_with("serving http://127.0.0.1:"), "{stderr}");
    assert!(
        stderr
            .trim_end()
            .ends_with(&format!("/metrics from {}", dir.display())),
        "{stderr}"
    );
    assert!(!dir.exists(), "removed after the command exited");
    assert!(entries(tmp.path()).is_empty());

    // Success and other statuses pass through unchanged.
    for code in [0, 1, 255] {
        let status = run_command(tmp.path(), None, &["sh", "-c", &format!("exit {code}")])
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(code));
    }
    // A command killed by a signal: 128 + the signal, as a shell reports it.
    let status = run_command(tmp.path(), None, &["sh", "-c", "kill -KILL $$"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(137));
    assert!(entries(tmp.path()).is_empty());
}

#[test]
fn sigterm_is_forwarded_and_the_dir_removed() {
    let tmp = tempfile::tempdir().unwrap();
    // The command itself is `sleep` (exec): SIGTERM ends it, and run reports 143.
    let mut run = Running::start(run_command(
        tmp.path(),
        None,
        &[
            "sh",
            "-c",
            r#"echo "$PROMETHEUS_MULTIPROC_DIR"; exec sleep 30"#,
        ],
    ));
    let (_, served) = run.serving();
    let dir = PathBuf::from(run.stdout_line());
    assert_eq!(served, dir);
    assert!(dir.is_dir());
    run.signal(Signal::SIGTERM);
    assert_eq!(run.wait().code(), Some(128 + 15));
    assert!(!dir.exists(), "removed after SIGTERM");
    assert!(entries(tmp.path()).is_empty());

    // A command that handles SIGTERM: it sees the signal, and its own status is run's.
    let mut run = Running::start(run_command(
        tmp.path(),
        None,
        &[
            "sh",
            "-c",
            r#"trap 'echo got TERM; kill $pid; exit 7' TERM; sleep 30 & pid=$!; echo "$PROMETHEUS_MULTIPROC_DIR"; wait"#,
        ],
    ));
    run.serving();
    let dir = PathBuf::from(run.stdout_line());
    assert!(dir.is_dir());
    run.signal(Signal::SIGTERM);
    assert_eq!(run.wait().code(), Some(7));
    assert_eq!(run.rest_of_stdout(), "got TERM\n");
    assert!(!dir.exists());

    // SIGINT is forwarded too.
    let mut run = Running::start(run_command(
        tmp.path(),
        None,
        &[
            "sh",
            "-c",
            r#"trap 'echo got INT; kill $pid; exit 5' INT; sleep 30 & pid=$!; echo ready; wait"#,
        ],
    ));
    run.serving();
    assert_eq!(run.stdout_line(), "ready");
    run.signal(Signal::SIGINT);
    assert_eq!(run.wait().code(), Some(5));
    assert_eq!(run.rest_of_stdout(), "got INT\n");
    assert!(entries(tmp.path()).is_empty());
}

#[test]
fn a_user_dir_is_used_and_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let user = tempfile::tempdir().unwrap();
    std::fs::write(user.path().join("keep.txt"), b"mine").unwrap();
    let mode_before = std::fs::metadata(user.path()).unwrap().mode();
    let out = run_command(
        tmp.path(),
        Some(user.path()),
        &[
            "sh",
            "-c",
            r#"echo "$PROMETHEUS_MULTIPROC_DIR"; "$SHMETRICS" generate --dir "$PROMETHEUS_MULTIPROC_DIR" --processes 2 --ops 3"#,
        ],
    )
    .output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim_end(),
        user.path().to_str().unwrap()
    );
    let names = entries(user.path());
    assert_eq!(
        names.iter().filter(|n| n.ends_with(".shm")).count(),
        2,
        "{names:?}"
    );
    assert!(names.contains(&"keep.txt".to_owned()));
    assert_eq!(
        std::fs::read(user.path().join("keep.txt")).unwrap(),
        b"mine"
    );
    assert_eq!(std::fs::metadata(user.path()).unwrap().mode(), mode_before);
    assert!(entries(tmp.path()).is_empty(), "no private directory made");

    // Also on SIGTERM.
    let mut run = Running::start(run_command(
        tmp.path(),
        Some(user.path()),
        &["sh", "-c", "echo ready; exec sleep 30"],
    ));
    let (_, served) = run.serving();
    assert_eq!(served, user.path());
    assert_eq!(run.stdout_line(), "ready");
    run.signal(Signal::SIGTERM);
    assert_eq!(run.wait().code(), Some(143));
    assert_eq!(entries(user.path()), names);

    // A user directory that does not exist is an error, and is not created.
    let missing = user.path().join("missing");
    let out = run_command(tmp.path(), Some(&missing), &["true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "shmetrics: run: metrics directory {} does not exist\n",
            missing.display()
        )
    );
    assert!(!missing.exists());
}

#[test]
fn metrics_are_served_while_the_command_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut run = Running::start(run_command(
        tmp.path(),
        None,
        &[
            "sh",
            "-c",
            r#""$SHMETRICS" generate --dir "$PROMETHEUS_MULTIPROC_DIR" --processes 2 --ops 5 && echo written && exec sleep 30"#,
        ],
    ));
    let (addr, dir) = run.serving();
    assert_eq!(run.stdout_line(), "written");
    let body = metrics(addr);
    assert!(
        body.contains("\ngen_c0_total{series=\"0\"} 10.0\n"),
        "{body}"
    );
    assert!(body.contains("\nshmetrics_reader_segments{state=\"dead\"} 2.0\n"));
    run.signal(Signal::SIGTERM);
    assert_eq!(run.wait().code(), Some(143));
    assert!(!dir.exists());
    assert!(TcpStream::connect(addr).is_err(), "no longer serving");
}

#[test]
fn a_missing_command_exits_127_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_command(tmp.path(), None, &["/nonexistent/command", "arg"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("shmetrics: run: /nonexistent/command: command not found"),
        "{err}"
    );
    assert!(entries(tmp.path()).is_empty());
    // No command at all is a usage error: run's own status.
    let out = run_command(tmp.path(), None, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(entries(tmp.path()).is_empty());
}

/// `run` fails with 125, a status of its own, never with one the command could have exited
/// with: a command that exits 2 is told apart from a port in use or a bad argument.
#[test]
fn own_failures_exit_125_and_the_commands_status_passes_through() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_command(tmp.path(), None, &["sh", "-c", "exit 2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "the command's own 2");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["run", "--listen", &addr, "--", "true"])
        .env("TMPDIR", tmp.path())
        .env_remove("PROMETHEUS_MULTIPROC_DIR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with(&format!("shmetrics: run: cannot listen on {addr}: ")),
        "{err}"
    );
    assert!(
        entries(tmp.path()).is_empty(),
        "its private directory removed"
    );

    for bad in [
        &["run", "--bogus", "--", "true"][..],
        &["run", "--prefix", "", "--", "true"],
    ] {
        let out = Command::new(BIN).args(bad).output().unwrap();
        assert_eq!(out.status.code(), Some(125), "{bad:?}");
    }
}

/// A directory the command's processes cannot write to is served, with a warning that says
/// so. Root may write anywhere permission bits say no, so the test uses a directory nobody
/// creates files in: `/proc/1` for root, a 0500 directory for anyone else.
#[test]
fn an_unwritable_directory_is_served_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let locked = tempfile::tempdir().unwrap();
    let dir = if nix::unistd::geteuid().is_root() {
        PathBuf::from("/proc/1")
    } else {
        std::fs::set_permissions(locked.path(), std::fs::Permissions::from_mode(0o500)).unwrap();
        locked.path().to_owned()
    };
    let out = run_command(tmp.path(), Some(&dir), &["true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8(out.stderr).unwrap();
    let warning = format!(
        "shmetrics: warning: run: PROMETHEUS_MULTIPROC_DIR={} is not writable by this user (",
        dir.display()
    );
    assert!(err.starts_with(&warning), "{err}");
    assert!(
        err.lines()
            .next()
            .unwrap()
            .ends_with("): the command's processes cannot create their metrics there"),
        "{err}"
    );
    // A writable one gets no warning.
    let out = run_command(tmp.path(), Some(tmp.path()), &["true"])
        .output()
        .unwrap();
    assert!(!String::from_utf8(out.stderr).unwrap().contains("warning"));
    std::fs::set_permissions(locked.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
}
