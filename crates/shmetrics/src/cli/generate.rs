//! `shmetrics generate`: start writer processes that run a known workload.
//!
//! The parent re-executes this program ([`std::env::current_exe`]) once per process with
//! the hidden `generate-worker` subcommand, so every writer is a separate process with its
//! own registry and segments. Without `--stay` it waits for all of them and fails if any
//! failed. With `--stay` each worker, once its operations are done, writes `ready <pid>` on
//! a pipe to the parent and then blocks until SIGTERM; the parent prints the pids, one per
//! line, and exits, leaving the workers running.

use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;

use clap::{Args, ValueEnum};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::unistd::Pid;
use shmetrics_layout::{MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE};
use shmetrics_workload::{GenWorkload, MetricSet, VllmWorkload, WorkloadError};
use shmetrics_writer::{Options, Registry};

use super::error::CliError;

/// The workloads `generate` can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum WorkloadKind {
    /// Deterministic: gen_c*_total counters, gen_g* gauges, gen_h*_seconds histograms.
    Gen,
    /// Every vLLM metric (workloads/vllm_metrics.json), updated as engine steps.
    Vllm,
}

impl WorkloadKind {
    /// The value as spelled on the command line.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Gen => "gen",
            Self::Vllm => "vllm",
        }
    }
}

/// Arguments of `generate`.
#[derive(Debug, Args)]
pub(crate) struct GenerateArgs {
    /// The metrics directory; it must exist.
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: PathBuf,
    /// Writer processes to start.
    #[arg(long, value_name = "P", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) processes: u32,
    /// Series per process, split evenly over the 15 gen families (ignored for vllm).
    #[arg(long, value_name = "S", default_value_t = 15)]
    pub(crate) series: usize,
    /// Rounds of operations (gen: updates of every series; vllm: engine steps).
    #[arg(long, value_name = "N")]
    pub(crate) ops: u64,
    /// Keep the writers alive after their operations until each gets SIGTERM; print their
    /// pids, one per line, once all are done.
    #[arg(long)]
    pub(crate) stay: bool,
    /// Which workload to run.
    #[arg(long, value_enum, default_value_t = WorkloadKind::Gen)]
    pub(crate) workload: WorkloadKind,
    /// Size of each writer's first segment in bytes (a multiple of 4096; default: the
    /// writer's default).
    #[arg(long, value_name = "BYTES")]
    pub(crate) segment_size: Option<usize>,
    /// Write each counter increment and histogram observation with an exemplar (a
    /// `trace_id` label; gen workload only).
    #[arg(long)]
    pub(crate) exemplars: bool,
}

/// Arguments of the hidden `generate-worker` subcommand: one writer process.
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// The metrics directory.
    #[arg(long)]
    pub(crate) dir: PathBuf,
    /// Index of this process among the workers (0-based).
    #[arg(long)]
    pub(crate) index: u32,
    /// Series (gen workload).
    #[arg(long)]
    pub(crate) series: usize,
    /// Rounds of operations.
    #[arg(long)]
    pub(crate) ops: u64,
    /// Stay alive after the operations until SIGTERM, after writing `ready <pid>`.
    #[arg(long)]
    pub(crate) stay: bool,
    /// Which workload to run.
    #[arg(long, value_enum)]
    pub(crate) workload: WorkloadKind,
    /// Size of the first segment in bytes.
    #[arg(long)]
    pub(crate) segment_size: Option<usize>,
    /// Exemplars on every counter increment and histogram observation.
    #[arg(long)]
    pub(crate) exemplars: bool,
}

/// Checks what the workers would otherwise each fail on, so the user gets one message.
fn check_args(args: &GenerateArgs) -> Result<(), CliError> {
    match std::fs::metadata(&args.dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(CliError::with_code(
                2,
                format!("generate: {} is not a directory", args.dir.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(CliError::with_code(
                2,
                format!(
                    "generate: metrics directory {} does not exist",
                    args.dir.display()
                ),
            ));
        }
        Err(e) => {
            return Err(CliError::with_code(
                2,
                format!("generate: {}: {e}", args.dir.display()),
            ));
        }
    }
    if args.exemplars && args.workload != WorkloadKind::Gen {
        return Err(CliError::with_code(
            2,
            "generate: --exemplars is for the gen workload only".to_owned(),
        ));
    }
    if let Some(size) = args.segment_size {
        let range = MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE;
        if !range.contains(&(size as u64)) || !size.is_multiple_of(4096) {
            return Err(CliError::with_code(
                2,
                format!(
                    "generate: --segment-size {size} must be a multiple of 4096 between {MIN_SEGMENT_SIZE} and {MAX_SEGMENT_SIZE}"
                ),
            ));
        }
    }
    Ok(())
}

fn worker_command(exe: &Path, args: &GenerateArgs, index: u32) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg("generate-worker")
        .arg("--dir")
        .arg(&args.dir)
        .arg("--index")
        .arg(index.to_string())
        .arg("--series")
        .arg(args.series.to_string())
        .arg("--ops")
        .arg(args.ops.to_string())
        .arg("--workload")
        .arg(args.workload.as_str())
        .stdin(Stdio::null());
    if let Some(size) = args.segment_size {
        cmd.arg("--segment-size").arg(size.to_string());
    }
    if args.exemplars {
        cmd.arg("--exemplars");
    }
    if args.stay {
        cmd.arg("--stay")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    } else {
        cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
    }
    cmd
}

/// Asks `child` to stop (SIGTERM) and reaps it. Used only on children this process
/// started, when `generate` fails part-way.
fn stop(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let _ = child.wait();
}

fn describe(status: io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("status unknown ({e})"),
    }
}

/// Runs `generate`: starts the workers and waits for them (or, with `--stay`, for their
/// `ready` lines).
///
/// # Errors
/// Exit status 2 for a missing directory or a bad `--segment-size`; 1 when a worker cannot
/// be started or fails.
pub(crate) fn run(args: &GenerateArgs) -> Result<(), CliError> {
    check_args(args)?;
    let exe = std::env::current_exe().map_err(|e| {
        CliError::new(format!(
            "generate: cannot locate the shmetrics executable: {e}"
        ))
    })?;
    let mut children: Vec<Child> = Vec::with_capacity(args.processes as usize);
    for index in 0..args.processes {
        match worker_command(&exe, args, index).spawn() {
            Ok(child) => children.push(child),
            Err(e) => {
                children.iter_mut().for_each(stop);
                return Err(CliError::new(format!(
                    "generate: cannot start worker {index} ({}): {e}",
                    exe.display()
                )));
            }
        }
    }
    if args.stay {
        await_ready(children)
    } else {
        await_exit(children)
    }
}

/// Waits for every worker to exit; fails if any did not succeed.
fn await_exit(children: Vec<Child>) -> Result<(), CliError> {
    let total = children.len();
    let mut failures = Vec::new();
    for (index, mut child) in children.into_iter().enumerate() {
        let pid = child.id();
        match child.wait() {
            Ok(status) if status.success() => {}
            status => failures.push(format!("worker {index} (pid {pid}) {}", describe(status))),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CliError::new(format!(
            "generate: {} of {total} workers failed: {}",
            failures.len(),
            failures.join("; ")
        )))
    }
}

/// Copies a worker's stderr to ours until it closes (it never closes while the worker
/// stays; the thread then ends with this process), a whole line at a time: the lines of
/// workers passed on at once never mix, however long.
fn forward_stderr(from: ChildStderr) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut from = BufReader::new(from);
        let mut line = Vec::new();
        while from.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let _ = io::stderr().write_all(&line);
            line.clear();
        }
    })
}

/// Reads the first line of a worker's stdout and sends it (`None` at end of file).
fn read_ready(index: usize, from: ChildStdout, to: mpsc::Sender<(usize, Option<String>)>) {
    std::thread::spawn(move || {
        let mut line = String::new();
        let got = match BufReader::new(from).read_line(&mut line) {
            Ok(n) if n > 0 => Some(line.trim_end().to_owned()),
            _ => None,
        };
        let _ = to.send((index, got));
    });
}

/// Waits until every worker has written `ready <pid>`, then prints the pids. If one fails
/// instead, stops the others and reports it.
fn await_ready(mut children: Vec<Child>) -> Result<(), CliError> {
    let (tx, rx) = mpsc::channel();
    let mut forwarders = Vec::with_capacity(children.len());
    for (index, child) in children.iter_mut().enumerate() {
        forwarders.push(child.stderr.take().map(forward_stderr));
        if let Some(out) = child.stdout.take() {
            read_ready(index, out, tx.clone());
        }
    }
    drop(tx);
    let mut ready = vec![false; children.len()];
    let mut failed = None;
    for _ in 0..children.len() {
        let Ok((index, line)) = rx.recv() else { break };
        let expected = format!("ready {}", children[index].id());
        if line.as_deref() == Some(expected.as_str()) {
            ready[index] = true;
        } else {
            failed = Some(index);
            break;
        }
    }
    if let Some(index) = failed.or_else(|| ready.iter().position(|r| !r)) {
        let pid = children[index].id();
        // It is exiting or has exited; reap it and let its stderr reach ours first.
        stop(&mut children[index]);
        let status = describe(children[index].wait());
        if let Some(f) = forwarders[index].take() {
            let _ = f.join();
        }
        for (i, child) in children.iter_mut().enumerate() {
            if i != index {
                stop(child);
            }
        }
        return Err(CliError::new(format!(
            "generate: worker {index} (pid {pid}) failed before it was ready ({status}); stopped the other workers"
        )));
    }
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut text = String::new();
    for child in &children {
        text.push_str(&child.id().to_string());
        text.push('\n');
    }
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| CliError::new(format!("generate: writing the worker pids to stdout: {e}")))
    // Dropping `children` neither kills nor waits: the workers keep running.
}

fn workload_err(index: u32) -> impl FnOnce(WorkloadError) -> CliError {
    move |e| CliError::new(format!("generate-worker {index}: {e}"))
}

/// Runs one worker: opens a registry in the directory, registers the workload, performs
/// the operations in interleaved rounds (so a concurrent scrape sees progress), and with
/// `--stay` reports `ready <pid>` on stdout and blocks until a signal ends the process.
///
/// # Errors
/// When the registry or the workload cannot be set up, or the ready line cannot be
/// written.
pub(crate) fn run_worker(args: &WorkerArgs) -> Result<(), CliError> {
    let index = args.index;
    if args.stay {
        // A staying worker outlives its parent and maybe the terminal session: only
        // SIGTERM (or SIGKILL) should end it. SIGPIPE is already ignored by the Rust
        // runtime, so a closed stdout pipe cannot kill it either.
        let mut hup = SigSet::empty();
        hup.add(Signal::SIGHUP);
        hup.thread_block()
            .map_err(|e| CliError::new(format!("generate-worker {index}: blocking SIGHUP: {e}")))?;
    }
    let mut options = Options::default();
    if let Some(size) = args.segment_size {
        options.initial_segment_size = size;
        options.max_segment_size = options.max_segment_size.max(size);
    }
    let registry = Registry::open_with(&args.dir, options).map_err(|e| {
        CliError::new(format!(
            "generate-worker {index}: opening a registry in {}: {e}",
            args.dir.display()
        ))
    })?;
    let _workload: Box<dyn std::any::Any> = match args.workload {
        WorkloadKind::Gen => {
            let w = GenWorkload::register(&registry, args.series).map_err(workload_err(index))?;
            for round in 0..args.ops {
                if args.exemplars {
                    w.round_with_exemplars(round).map_err(|e| {
                        CliError::new(format!("generate-worker {index}: exemplar: {e}"))
                    })?;
                } else {
                    w.round(round);
                }
            }
            Box::new(w)
        }
        WorkloadKind::Vllm => {
            let set = MetricSet::vllm().map_err(workload_err(index))?;
            let seed = 0x5eed_0000 + u64::from(index);
            let mut w = VllmWorkload::register(&registry, &set, &set.context(index), seed)
                .map_err(workload_err(index))?;
            for _ in 0..args.ops {
                w.step();
            }
            Box::new(w)
        }
    };
    if registry.dropped_series() > 0 {
        log::warn!(
            "generate-worker {index}: {} series did not fit in the segments",
            registry.dropped_series()
        );
    }
    if !args.stay {
        return Ok(());
    }
    let pid = std::process::id();
    let mut out = io::stdout().lock();
    writeln!(out, "ready {pid}")
        .and_then(|()| out.flush())
        .map_err(|e| CliError::new(format!("generate-worker {index}: reporting ready: {e}")))?;
    drop(out);
    log::debug!("generate-worker {index} (pid {pid}) ready");
    // The registry and the handles in `_workload` hold the segment locks; SIGTERM's default
    // action ends the process and the kernel releases them.
    loop {
        std::thread::park();
    }
}
