//! The `shmetrics` command line: one module per subcommand, each owning its arguments and
//! its `run`; [`error::CliError`] is how any of them fails.

mod compact;
mod demo;
mod dump;
mod error;
mod generate;
mod http;
mod inspect;
mod run;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use error::CliError;

/// The `shmetrics` command line.
#[derive(Debug, Parser)]
#[command(
    name = "shmetrics",
    version,
    about = "Multi-process Prometheus metrics in shared memory: dump, inspect and generate metrics directories.",
    long_about = None
)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Merge every segment of a metrics directory and print the exposition.
    Dump(dump::DumpArgs),
    /// Print one segment file: header, liveness, records with their values, validation.
    Inspect(inspect::InspectArgs),
    /// Fold the segments of dead processes into the directory's archive and remove their
    /// files (safe while writers, readers and servers run).
    Compact(compact::CompactArgs),
    /// Start writer processes that run a known workload in a metrics directory.
    Generate(generate::GenerateArgs),
    /// One writer process of `generate` (internal).
    #[command(hide = true)]
    GenerateWorker(generate::WorkerArgs),
    /// Serve /metrics and /health for a metrics directory until SIGINT or SIGTERM.
    Serve(serve::ServeArgs),
    /// Run COMMAND with PROMETHEUS_MULTIPROC_DIR set (a private temporary directory
    /// unless already set) and serve /metrics for it while COMMAND runs.
    Run(run::RunArgs),
    /// Start simulated vLLM engine processes and serve their metrics on /metrics, beside a
    /// few dynamo_* metrics of the serving process, until Ctrl-C.
    Demo(demo::DemoArgs),
    /// One engine process of `demo` (internal).
    #[command(hide = true)]
    DemoEngine(demo::DemoEngineArgs),
}

/// Runs a parsed command line; returns the exit status it should end with.
fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let done = |()| ExitCode::SUCCESS;
    match cli.command {
        Command::Dump(args) => dump::run(&args).map(done),
        Command::Inspect(args) => inspect::run(&args),
        Command::Compact(args) => compact::run(&args).map(done),
        Command::Generate(args) => generate::run(&args).map(done),
        Command::GenerateWorker(args) => generate::run_worker(&args).map(done),
        Command::Serve(args) => serve::run(&args).map(done),
        Command::Run(args) => run::run(&args),
        Command::Demo(args) => demo::run(&args).map(done),
        Command::DemoEngine(args) => demo::run_engine(&args).map(done),
    }
}

/// The whole program: sets up logging (`RUST_LOG`, default `warn`, to stderr), parses the
/// arguments, runs the command and turns a failure into a one-line message on stderr.
pub(crate) fn main() -> ExitCode {
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
