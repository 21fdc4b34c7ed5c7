//! A harness for tests that run real writer processes.
//!
//! A test re-executes its own test binary (`std::env::current_exe()`) with
//! `--exact <test> --nocapture --test-threads=1` and [`ROLE_ENV`] set: in that process the
//! same test function sees [`child_role`] return the role and plays it instead of the
//! parent. Parameters travel as environment variables ([`param`]); children report on
//! stdout with [`say`] (lines marked with [`MARK`], so the harness's own output is ignored)
//! and block on stdin ([`wait_for_line`], [`wait_for_eof`]) until the parent lets them go.
//! A child whose parent dies reads end-of-file and exits, so nothing outlives a test run.
//!
//! Every wait is bounded; a [`ChildProcess`] is SIGKILLed and reaped when dropped, so a
//! failing assertion never leaves a writer behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Names the role a re-executed test binary plays.
pub(crate) const ROLE_ENV: &str = "SHMETRICS_CHILD_ROLE";
/// Prefix of parameter variables: parameter `dir` is `SHMETRICS_CHILD_dir`.
const PARAM_PREFIX: &str = "SHMETRICS_CHILD_";
/// Marks a report line of a child on its stdout.
pub(crate) const MARK: &str = "@@shmetrics ";

/// The role of this process when a parent test started it, `None` in the parent.
pub(crate) fn child_role() -> Option<String> {
    std::env::var(ROLE_ENV).ok()
}

/// Parameter `name` given by the parent to this child.
pub(crate) fn param<T: FromStr>(name: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    let raw = std::env::var(format!("{PARAM_PREFIX}{name}"))
        .unwrap_or_else(|_| panic!("child parameter {name} is missing"));
    raw.parse()
        .unwrap_or_else(|e| panic!("child parameter {name}={raw:?}: {e:?}"))
}

/// Reports one line to the parent.
pub(crate) fn say(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{MARK}{line}").expect("write to parent");
    out.flush().expect("flush to parent");
}

/// Blocks until the parent writes a line (or closes stdin); returns it.
pub(crate) fn wait_for_line() -> String {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .expect("read stdin");
    line.trim_end().to_owned()
}

/// Blocks until the parent closes our stdin.
pub(crate) fn wait_for_eof() {
    let mut rest = Vec::new();
    std::io::stdin().read_to_end(&mut rest).expect("read stdin");
}

/// Waits for `pid` (a child of this process) for at most `timeout`; `None` if it is
/// still running then.
pub(crate) fn wait_pid(pid: Pid, timeout: Duration) -> Option<WaitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)).expect("waitpid") {
            WaitStatus::StillAlive => {}
            status => return Some(status),
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A re-executed copy of this test binary playing a role; killed and reaped on drop.
pub(crate) struct ChildProcess {
    label: String,
    pid: Pid,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    status: Option<WaitStatus>,
}

impl ChildProcess {
    /// Starts `test` of this binary as a child playing `role`, with `params` as
    /// environment variables (read back with [`param`]).
    pub(crate) fn spawn(test: &str, role: &str, params: &[(&str, String)]) -> Self {
        Self::spawn_under(&[], test, role, params)
    }

    /// As [`ChildProcess::spawn`], with the test binary run by `wrapper` (a command and its
    /// arguments, such as `unshare --pid --fork --kill-child`), which must pass stdin and
    /// stdout through and die with the child.
    pub(crate) fn spawn_under(
        wrapper: &[&str],
        test: &str,
        role: &str,
        params: &[(&str, String)],
    ) -> Self {
        let exe = std::env::current_exe().expect("path of the test binary");
        let mut cmd = match wrapper {
            [] => Command::new(exe),
            [program, args @ ..] => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(exe);
                cmd
            }
        };
        cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(ROLE_ENV, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (name, value) in params {
            cmd.env(format!("{PARAM_PREFIX}{name}"), value);
        }
        let mut child = cmd.spawn().expect("spawn child test process");
        let pid = Pid::from_raw(child.id() as i32);
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        // The std handle is dropped without waiting: this struct reaps the pid with waitpid.
        drop(child);
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest may print "test name ... " on the same line before our mark.
                if let Some(at) = line.find(MARK)
                    && tx.send(line[at + MARK.len()..].to_owned()).is_err()
                {
                    break;
                }
            }
        });
        Self {
            label: format!("{role} child (pid {pid})"),
            pid,
            stdin,
            lines,
            status: None,
        }
    }

    /// The child's pid.
    pub(crate) fn pid(&self) -> Pid {
        self.pid
    }

    /// The next report line, waiting at most `timeout`; fails the test otherwise.
    pub(crate) fn expect_line(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("{}: no report within {timeout:?}", self.label)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.wait(Duration::from_secs(10));
                panic!(
                    "{}: closed its stdout before reporting (status {status:?})",
                    self.label
                )
            }
        }
    }

    /// Every report line left, once the child has exited: read until its stdout closes
    /// (bounded by `timeout`).
    #[allow(dead_code, reason = "used by torture.rs, not by every test crate")]
    pub(crate) fn remaining_lines(&self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => out.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return out,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("{}: stdout still open after {timeout:?}", self.label)
                }
            }
        }
    }

    /// A report line if one is waiting.
    pub(crate) fn try_line(&self) -> Option<String> {
        self.lines.try_recv().ok()
    }

    /// Writes one line to the child's stdin.
    pub(crate) fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write to child");
        stdin.flush().expect("flush to child");
    }

    /// Closes the child's stdin: a child in [`wait_for_eof`] goes on.
    pub(crate) fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The exit status if the child has exited (reaping it), without blocking.
    pub(crate) fn try_status(&mut self) -> Option<WaitStatus> {
        if self.status.is_none() {
            self.status = wait_pid(self.pid, Duration::ZERO);
        }
        self.status
    }

    /// Waits at most `timeout` for the child to exit; fails the test otherwise.
    pub(crate) fn wait(&mut self, timeout: Duration) -> WaitStatus {
        if self.status.is_none() {
            self.status = wait_pid(self.pid, timeout);
        }
        self.status
            .unwrap_or_else(|| panic!("{}: still running after {timeout:?}", self.label))
    }

    /// Waits at most `timeout` for the child to exit and asserts it succeeded.
    pub(crate) fn expect_success(&mut self, timeout: Duration) {
        let status = self.wait(timeout);
        assert_eq!(
            status,
            WaitStatus::Exited(self.pid, 0),
            "{} failed (its stderr is above)",
            self.label
        );
    }

    /// Sends SIGKILL.
    pub(crate) fn sigkill(&self) {
        kill(self.pid, Signal::SIGKILL).expect("kill child");
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.stdin = None;
        if self.status.is_none() {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}

/// Segment files in `dir`, as (pid from the file name, path), sorted.
pub(crate) fn segment_files(dir: &std::path::Path) -> Vec<(u32, std::path::PathBuf)> {
    let mut out: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(dir)
        .expect("read metrics dir")
        .map(|e| e.expect("dir entry").path())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?;
            let rest = name
                .strip_prefix(shmetrics_layout::SEGMENT_PREFIX)?
                .strip_suffix(shmetrics_layout::SEGMENT_SUFFIX)?;
            let pid = rest.split('-').next()?.parse().ok()?;
            Some((pid, path.clone()))
        })
        .collect();
    out.sort();
    out
}

/// The sum of every series of counter family `family` (0 when it is absent).
#[allow(
    dead_code,
    reason = "used by hostile.rs and archive_trust.rs, not by every test crate"
)]
pub(crate) fn counter_total(s: &shmetrics_reader::snapshot::Snapshot, family: &str) -> f64 {
    use shmetrics_reader::snapshot::Value;
    s.family(family).map_or(0.0, |f| {
        f.series
            .iter()
            .map(|x| match x.value {
                Value::Counter(v) => v,
                ref other => panic!("{other:?}"),
            })
            .sum()
    })
}
