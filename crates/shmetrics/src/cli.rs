//! Command-line arguments and dispatch.

use std::ffi::OsString;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
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
    /// Fold the segments of dead processes into the directory's archive and remove their
    /// files (safe while writers, readers and servers run).
    Compact(CompactArgs),
    /// Start writer processes that run a known workload in a metrics directory.
    Generate(GenerateArgs),
    /// One writer process of `generate` (internal).
    #[command(hide = true)]
    GenerateWorker(WorkerArgs),
    /// Serve /metrics and /health for a metrics directory until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Run COMMAND with PROMETHEUS_MULTIPROC_DIR set (a private temporary directory
    /// unless already set) and serve /metrics for it while COMMAND runs.
    Run(RunArgs),
    /// Start simulated vLLM engine processes and serve their metrics on /metrics, beside a
    /// few dynamo_* metrics of the serving process, until Ctrl-C.
    Demo(DemoArgs),
    /// One engine process of `demo` (internal).
    #[command(hide = true)]
    DemoEngine(DemoEngineArgs),
}

/// Arguments of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Simulated engine processes to start.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub engines: u32,
    /// Address to listen on: IP:PORT, or a PORT on all interfaces; port 0 picks a free one.
    /// Default: 0.0.0.0:8081, or 0.0.0.0:$DYN_SYSTEM_PORT when DYN_SYSTEM_PORT is set.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,
    /// Stop by itself after this many seconds (default: run until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
    /// Mean pause between two engine steps, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 40, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub step_ms: u64,
}

/// Arguments of the hidden `demo-engine` subcommand.
#[derive(Debug, Args)]
pub struct DemoEngineArgs {
    /// The demo's metrics directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// Engine index (the `engine` label).
    #[arg(long)]
    pub index: u32,
    /// Mean pause between steps, in milliseconds.
    #[arg(long)]
    pub step_ms: u64,
    /// Pid of the demo, to exit if it is already gone.
    #[arg(long)]
    pub parent: u32,
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

/// Arguments of `compact`.
#[derive(Debug, Args)]
pub struct CompactArgs {
    /// The metrics directory (as PROMETHEUS_MULTIPROC_DIR).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Largest archive file a compaction writes, in MiB: dead segments are folded in
    /// batches of at most this size and a full archive is sealed as an immutable part, so a
    /// compaction holds a few times this much memory whatever the size of the dead data.
    #[arg(long, value_name = "MIB", default_value_t = shmetrics_reader::DEFAULT_ARCHIVE_PART_SIZE >> 20)]
    pub archive_part_mib: usize,
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
    /// How names outside the classic character sets are written: underscores (the
    /// classic formats' default), allow-utf-8 (quoted), dots or values.
    #[arg(long, value_name = "SCHEME", default_value = "underscores", value_parser = parse_escaping)]
    pub escaping: shmetrics_reader::Escaping,
    /// Leave out the reader's own shmetrics_* families.
    #[arg(long)]
    pub no_self_metrics: bool,
}

fn parse_escaping(s: &str) -> Result<shmetrics_reader::Escaping, String> {
    shmetrics_reader::Escaping::parse(s).ok_or_else(|| {
        format!("unknown escaping {s:?}; expected underscores, allow-utf-8, dots or values")
    })
}

/// Parses `--listen`: `IP:PORT` (`[IPv6]:PORT` for IPv6) or a bare `PORT` (all IPv4
/// interfaces).
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    Err(format!(
        "{s:?} is not an address to listen on; expected IP:PORT (such as 127.0.0.1:8081 or [::1]:8081) or a port"
    ))
}

/// Exposition format of the `/metrics` endpoint of `serve` and `run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ServeFormat {
    /// Negotiated from the request's `Accept` header: OpenMetrics 1.0 when the client
    /// prefers it (as Prometheus does), else text 0.0.4.
    Auto,
    /// Prometheus text format 0.0.4 for every request, whatever `Accept` says.
    Prometheus,
    /// OpenMetrics 1.0 for every request, whatever `Accept` says.
    Openmetrics,
}

impl ServeFormat {
    /// The format every response is forced to; `None` for `auto` (negotiated).
    pub fn forced(self) -> Option<shmetrics_reader::Format> {
        match self {
            Self::Auto => None,
            Self::Prometheus => Some(shmetrics_reader::Format::Prometheus),
            Self::Openmetrics => Some(shmetrics_reader::Format::OpenMetrics),
        }
    }
}

/// How the HTTP endpoint of `serve` and `run` listens and what it serves.
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// Address to listen on: IP:PORT, or a PORT on all interfaces; port 0 picks a free one
    /// (the address bound is printed on stderr). Default: 0.0.0.0:8081, or
    /// 0.0.0.0:$DYN_SYSTEM_PORT when DYN_SYSTEM_PORT is set.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,
    /// Keep only families whose name starts with this prefix (repeatable; all when
    /// absent). The shmetrics_* self-metrics are always kept.
    #[arg(long = "prefix", value_name = "P")]
    pub prefixes: Vec<String>,
    /// Leave out the shmetrics_* self-metrics.
    #[arg(long)]
    pub no_self_metrics: bool,
    /// Reuse the latest snapshot for scrapes arriving less than N milliseconds after it was
    /// taken (0: only scrapes arriving while a snapshot is being taken share it).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_age_ms: u64,
    /// Exposition format of /metrics: `auto` negotiates it from the request's Accept
    /// header; `prometheus` (text 0.0.4) or `openmetrics` answer every request in that
    /// format (for scrapers whose Accept header cannot be changed).
    #[arg(long, value_enum, default_value_t = ServeFormat::Auto)]
    pub format: ServeFormat,
    /// MiB of segments whose pages stay mapped between scrapes (oldest live segments
    /// first); the pages of the others are released after each read, which bounds the
    /// server's resident set on huge directories at the cost of minor page faults.
    #[arg(long, value_name = "MIB", default_value_t = shmetrics_reader::DEFAULT_RESIDENT_BUDGET >> 20)]
    pub resident_budget_mib: usize,
    /// Fold dead processes' segments into the directory's archive and remove their files
    /// before a scrape at least this many seconds after the last time (0: never).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub compact_interval_secs: u64,
    /// Largest archive file a compaction writes, in MiB: dead segments are folded in
    /// batches of at most this size and a full archive is sealed as an immutable part, so a
    /// compaction holds a few times this much memory whatever the size of the dead data.
    #[arg(long, value_name = "MIB", default_value_t = shmetrics_reader::DEFAULT_ARCHIVE_PART_SIZE >> 20)]
    pub archive_part_mib: usize,
    /// Most HTTP connections open at once; when full, the connection stalled longest (half a
    /// second or more) is closed for the new one, else the new one is refused.
    #[arg(long, value_name = "N", default_value_t = crate::server::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Close a connection whose client reads nothing of a response for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = crate::server::DEFAULT_WRITE_TIMEOUT.as_secs())]
    pub write_timeout_secs: u64,
    /// Close a connection after answering this many requests on it.
    #[arg(long, value_name = "N", default_value_t = crate::server::DEFAULT_MAX_REQUESTS_PER_CONNECTION)]
    pub max_requests_per_connection: u64,
    /// MiB of rendered bodies kept for clients (shared per snapshot); above it, connections
    /// stalled for half a second or more are closed.
    #[arg(long, value_name = "MIB", default_value_t = crate::server::DEFAULT_MAX_BODY_BYTES >> 20)]
    pub max_body_mib: u64,
    /// The most MiB one /metrics exposition may have, uncompressed; a larger one is
    /// answered with a 500 that says so. Bodies over 32 MiB are streamed, not held.
    #[arg(long, value_name = "MIB", default_value_t = crate::server::DEFAULT_MAX_SCRAPE_BYTES >> 20)]
    pub max_scrape_mib: u64,
}

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The metrics directory (as PROMETHEUS_MULTIPROC_DIR).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The HTTP endpoint.
    #[command(flatten)]
    pub http: HttpArgs,
}

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The HTTP endpoint.
    #[command(flatten)]
    pub http: HttpArgs,
    /// The command to run, after `--`, with its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
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
        Command::Compact(args) => crate::compact::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Generate(args) => crate::generate::run(&args).map(|()| ExitCode::SUCCESS),
        Command::GenerateWorker(args) => {
            crate::generate::run_worker(&args).map(|()| ExitCode::SUCCESS)
        }
        Command::Serve(args) => crate::server::serve::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Run(args) => crate::run::run(&args),
        Command::Demo(args) => {
            let listen = match args.listen {
                Some(addr) => addr,
                None => crate::server::default_listen()
                    .map_err(|e| CliError::with_code(2, format!("demo: {e}")))?,
            };
            crate::demo::run(&crate::demo::DemoOptions {
                engines: args.engines,
                listen,
                duration: args.duration.map(std::time::Duration::from_secs),
                step: std::time::Duration::from_millis(args.step_ms),
            })
            .map(|()| ExitCode::SUCCESS)
        }
        Command::DemoEngine(args) => crate::demo::run_engine(
            &args.dir,
            args.index,
            std::time::Duration::from_millis(args.step_ms),
            args.parent,
        )
        .map(|()| ExitCode::SUCCESS),
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
