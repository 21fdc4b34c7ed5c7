//! Command-line arguments and dispatch.

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The `shmetrics` command line.
#[derive(Debug, Parser)]
#[command(
    name = "shmetrics",
    version,
    about = "Multi-process Prometheus metrics in shared memory: dump, inspect and generate metrics directories.",
    long_about = None
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Merge every segment of a metrics directory and print the exposition.
    Dump(DumpArgs),
    /// Print one segment file: header, liveness, records with their values, validation.
    Inspect(InspectArgs),
    /// Start writer processes that run a known workload in a metrics directory.
    Generate(GenerateArgs),
    /// One writer process of `generate` (internal).
    #[command(hide = true)]
    GenerateWorker(WorkerArgs),
}

/// Exposition format of `dump`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Prometheus text format 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text (ends with `# EOF`).
    Openmetrics,
}

impl From<OutputFormat> for shmetrics_reader::Format {
    fn from(f: OutputFormat) -> Self {
        match f {
            OutputFormat::Prometheus => Self::Prometheus,
            OutputFormat::Openmetrics => Self::OpenMetrics,
        }
    }
}

/// Arguments of `dump`.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The metrics directory (as PROMETHEUS_MULTIPROC_DIR).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Keep only families whose name starts with this prefix (repeatable; all when absent).
    #[arg(long = "prefix", value_name = "P")]
    pub prefixes: Vec<String>,
    /// Exposition format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Prometheus)]
    pub format: OutputFormat,
    /// Leave out the reader's own shmetrics_* families.
    #[arg(long)]
    pub no_self_metrics: bool,
}

/// Arguments of `inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The segment file (`shmetrics-<pid>-<instance>-<seq>.shm`).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// The workloads `generate` can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WorkloadKind {
    /// Deterministic: gen_c*_total counters, gen_g* gauges, gen_h*_seconds histograms.
    Gen,
    /// Every vLLM metric (workloads/vllm_metrics.json), updated as engine steps.
    Vllm,
}

impl WorkloadKind {
    /// The value as spelled on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gen => "gen",
            Self::Vllm => "vllm",
        }
    }
}

/// Arguments of `generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The metrics directory; it must exist.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Writer processes to start.
    #[arg(long, value_name = "P", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub processes: u32,
    /// Series per process, split evenly over the 15 gen families (ignored for vllm).
    #[arg(long, value_name = "S", default_value_t = 15)]
    pub series: usize,
    /// Rounds of operations (gen: updates of every series; vllm: engine steps).
    #[arg(long, value_name = "N")]
    pub ops: u64,
    /// Keep the writers alive after their operations until each gets SIGTERM; print their
    /// pids, one per line, once all are done.
    #[arg(long)]
    pub stay: bool,
    /// Which workload to run.
    #[arg(long, value_enum, default_value_t = WorkloadKind::Gen)]
    pub workload: WorkloadKind,
    /// Size of each writer's first segment in bytes (a multiple of 4096; default: the
    /// writer's default).
    #[arg(long, value_name = "BYTES")]
    pub segment_size: Option<usize>,
}

/// Arguments of the hidden `generate-worker` subcommand: one writer process.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The metrics directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// Index of this process among the workers (0-based).
    #[arg(long)]
    pub index: u32,
    /// Series (gen workload).
    #[arg(long)]
    pub series: usize,
    /// Rounds of operations.
    #[arg(long)]
    pub ops: u64,
    /// Stay alive after the operations until SIGTERM, after writing `ready <pid>`.
    #[arg(long)]
    pub stay: bool,
    /// Which workload to run.
    #[arg(long, value_enum)]
    pub workload: WorkloadKind,
    /// Size of the first segment in bytes.
    #[arg(long)]
    pub segment_size: Option<usize>,
}

/// A failure of a command: a one-line message and the process exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// Exit status (non-zero).
    pub code: u8,
    /// What failed, naming the file, directory or process involved.
    pub message: String,
}

impl CliError {
    /// A failure with exit status 1.
    pub fn new(message: impl Into<String>) -> Self {
        Self::with_code(1, message)
    }

    /// A failure with the given exit status.
    pub fn with_code(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Runs a parsed command line; returns the exit status it should end with.
pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Dump(args) => crate::dump::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Inspect(args) => crate::inspect::run(&args),
        Command::Generate(args) => crate::generate::run(&args).map(|()| ExitCode::SUCCESS),
        Command::GenerateWorker(args) => {
            crate::generate::run_worker(&args).map(|()| ExitCode::SUCCESS)
        }
    }
}

/// The whole program: sets up logging (`RUST_LOG`, default `warn`, to stderr), parses the
/// arguments, runs the command and turns a failure into a one-line message on stderr.
pub fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shmetrics: {e}");
            ExitCode::from(e.code)
        }
    }
}
