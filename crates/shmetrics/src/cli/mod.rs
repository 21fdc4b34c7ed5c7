//! The `shmetrics` command line: one module per subcommand, each owning its arguments and
//! its `run`; [`error::CliError`] is how any of them fails.

mod compact;
mod completions;
mod demo;
mod dump;
mod error;
mod generate;
mod http;
mod inspect;
mod man;
mod output;
mod push;
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
    about = "Multi-process Prometheus metrics in shared memory: serve a metrics directory on /metrics, run a command with one, push one to a Pushgateway, and dump, inspect, compact or generate metrics directories.",
    // clap_complete and clap_mangen name the program from here.
    bin_name = "shmetrics",
    long_about = None,
    after_help = "Log lines go to stderr: warnings and errors by default, -v for what the \
                  command does, -vv for details, -q for errors only. RUST_LOG (such as \
                  RUST_LOG=shmetrics_reader=debug) sets the levels per module when neither \
                  -v nor -q is given."
)]
pub(crate) struct Cli {
    /// Log more: -v what the command does, -vv details, -vvv everything.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "quiet", display_order = 1000)]
    verbose: u8,
    /// Log errors only.
    #[arg(short, long, global = true, display_order = 1000)]
    quiet: bool,
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
    /// Push the merged directory to a Prometheus Pushgateway, once or every N seconds.
    Push(push::PushArgs),
    /// Print the shell completion script for SHELL (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Print the manual page, or write one per subcommand into a directory.
    Man(man::ManArgs),
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
        Command::Push(args) => push::run(&args),
        Command::Completions(args) => completions::run(&args).map(done),
        Command::Man(args) => man::run(&args).map(done),
    }
}

/// Exit status of `run` for its own failures (bad arguments, a port in use, a directory it
/// cannot serve), distinct from any status of the command it runs: 125, as `env`, `nohup`
/// and container runtimes use it.
pub(crate) const RUN_FAILED: u8 = 125;

/// Sets up logging to stderr: `shmetrics: warning: ...` lines. `-v`/`-q` set the level;
/// without them `RUST_LOG` does, else warnings and errors.
fn init_logging(verbose: u8, quiet: bool) {
    use std::io::Write;
    let mut builder = if verbose > 0 || quiet {
        let level = match (quiet, verbose) {
            (true, _) => log::LevelFilter::Error,
            (false, 1) => log::LevelFilter::Info,
            (false, 2) => log::LevelFilter::Debug,
            _ => log::LevelFilter::Trace,
        };
        let mut b = env_logger::Builder::new();
        b.filter_level(level);
        b
    } else {
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
    };
    builder
        .format(|buf, record| {
            let level = match record.level() {
                log::Level::Error => "error",
                log::Level::Warn => "warning",
                log::Level::Info => "info",
                log::Level::Debug => "debug",
                log::Level::Trace => "trace",
            };
            if record.level() <= log::Level::Info {
                writeln!(buf, "shmetrics: {level}: {}", record.args())
            } else {
                writeln!(
                    buf,
                    "shmetrics: {level}: {}: {}",
                    record.target(),
                    record.args()
                )
            }
        })
        .init();
}

/// The whole program: parses the arguments, sets up logging (see [`init_logging`]), runs
/// the command and turns a failure into a one-line message on stderr.
pub(crate) fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with status 0; usage errors are clap's one
            // message, with status 2, or `run`'s own status for its arguments.
            let _ = e.print();
            if !e.use_stderr() {
                return ExitCode::SUCCESS;
            }
            let is_run = std::env::args_os()
                .skip(1)
                .find(|a| !a.to_string_lossy().starts_with('-'))
                .is_some_and(|a| a == "run");
            return ExitCode::from(if is_run { RUN_FAILED } else { 2 });
        }
    };
    init_logging(cli.verbose, cli.quiet);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            output::err_line(format_args!("shmetrics: {e}"));
            ExitCode::from(e.code)
        }
    }
}
