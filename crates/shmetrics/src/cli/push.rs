//! `shmetrics push`: push the merged, filtered directory to a Prometheus Pushgateway, once
//! or every N seconds (see `shmetrics::push`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use shmetrics::push::{PushError, PushMethod, PushOptions, PushTarget, Pushed, push};
use shmetrics::server::Signals;
use shmetrics_reader::{Format, PrefixFilter, Reader};

use super::error::CliError;
use super::http::parse_prefix;

/// Arguments of `push`.
#[derive(Debug, Args)]
pub(crate) struct PushArgs {
    /// The Pushgateway: http://HOST[:PORT][/PATH] (port 9091 when absent).
    #[arg(long, value_name = "URL")]
    pub(crate) gateway: String,
    /// The job label of the group pushed to.
    #[arg(long, value_name = "NAME")]
    pub(crate) job: String,
    /// A grouping label of the group, NAME=VALUE (repeatable), such as instance=node-3.
    #[arg(long = "grouping", value_name = "NAME=VALUE", value_parser = parse_grouping)]
    pub(crate) grouping: Vec<(String, String)>,
    /// The metrics directory (default: $PROMETHEUS_MULTIPROC_DIR).
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// Keep only families whose name starts with this prefix (repeatable; all when absent).
    #[arg(long = "prefix", value_name = "P", value_parser = parse_prefix)]
    pub(crate) prefixes: Vec<String>,
    /// put replaces every metric of the group (push_to_gateway); post replaces the pushed
    /// metric names only (pushadd_to_gateway).
    #[arg(long, value_name = "METHOD", default_value = "put", value_parser = ["put", "post"])]
    pub(crate) method: String,
    /// Push every SECS seconds until SIGINT or SIGTERM, then once more (default: once).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) interval: Option<u64>,
    /// Attempts after a failed one (connection error, timeout, 5xx answer), waiting 0.5 s,
    /// then twice as long each time (at most 30 s). A 4xx answer is not retried.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub(crate) retries: u32,
    /// Timeout of connecting, sending and reading the answer, each, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) timeout_secs: u64,
}

/// Parses `--grouping NAME=VALUE`.
fn parse_grouping(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))?;
    if !shmetrics_layout::names::is_legacy_label_name(name) || name == "job" {
        return Err(format!("{name:?} is not a label name other than job"));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// Renders the directory and pushes it.
fn push_once(
    reader: &mut Reader,
    filter: &PrefixFilter,
    target: &PushTarget,
    options: &PushOptions,
) -> Result<Pushed, PushError> {
    let mut body = Vec::new();
    let report = reader
        .scrape(Format::Prometheus, filter, false, &mut body)
        .map_err(|e| PushError::Invalid(format!("rendering the directory: {e}")))?;
    log::info!(
        "push: {} series of {} live and {} dead segments, {} bytes",
        report.series,
        report.live_segments,
        report.dead_segments,
        body.len()
    );
    push(target, &body, options)
}

/// Runs `push`.
///
/// # Errors
/// Exit status 2 for a bad gateway URL, job, grouping label or directory; 1 when a push
/// failed (refused, or every attempt failed): once, or at the final push after a signal.
pub(crate) fn run(args: &PushArgs) -> Result<ExitCode, CliError> {
    let grouping: Vec<(&str, &str)> = args
        .grouping
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let target = PushTarget::new(&args.gateway, &args.job, &grouping)
        .map_err(|e| CliError::with_code(2, format!("push: {e}")))?;
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::var_os(shmetrics_writer::DIR_ENV)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| {
                CliError::with_code(
                    2,
                    format!("push: give --dir DIR or set {}", shmetrics_writer::DIR_ENV),
                )
            })?,
    };
    let mut reader =
        Reader::open(&dir).map_err(|e| CliError::with_code(2, format!("push: {e}")))?;
    let filter = PrefixFilter::new(args.prefixes.iter().cloned());
    let options = {
        let mut o = PushOptions::default();
        o.method = if args.method == "post" {
            PushMethod::Post
        } else {
            PushMethod::Put
        };
        o.retries = args.retries;
        o.timeout = Duration::from_secs(args.timeout_secs);
        o
    };
    let failed = |e: PushError| CliError::new(format!("push: {e}"));
    let Some(interval) = args.interval else {
        let pushed = push_once(&mut reader, &filter, &target, &options).map_err(failed)?;
        log::info!(
            "push: {} (HTTP {}, {} attempts)",
            target.url(),
            pushed.status,
            pushed.attempts
        );
        return Ok(ExitCode::SUCCESS);
    };

    // Every `interval` until a signal, then once more: a batch job's last values arrive.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("push: cannot start the runtime: {e}")))?;
    rt.block_on(async {
        let mut signals = Signals::new()
            .map_err(|e| CliError::new(format!("push: cannot catch signals: {e}")))?;
        let mut tick = tokio::time::interval(Duration::from_secs(interval));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                signal = signals.recv() => {
                    log::info!("push: signal {signal}: a last push");
                    break;
                }
                _ = tick.tick() => {}
            }
            // A failed periodic push is said and the next one tried.
            // (Blocking: nothing else runs on this runtime; a signal is seen after the push.)
            match push_once(&mut reader, &filter, &target, &options) {
                Ok(p) => log::info!(
                    "push: {} (HTTP {}, {} attempts)",
                    target.url(),
                    p.status,
                    p.attempts
                ),
                Err(e) => log::error!("push: {e}"),
            }
        }
        push_once(&mut reader, &filter, &target, &options).map_err(failed)?;
        Ok(ExitCode::SUCCESS)
    })
}
