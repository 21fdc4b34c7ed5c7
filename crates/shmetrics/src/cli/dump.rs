//! `shmetrics dump`: merge a metrics directory once and print the exposition.

use std::io::{self, Write};
use std::path::PathBuf;

use clap::Args;
use shmetrics_reader::{Format, PrefixFilter, Reader, ScrapeReport};

use super::error::CliError;
use super::http::{format_parser, parse_prefix};

/// Arguments of `dump`.
#[derive(Debug, Args)]
pub(crate) struct DumpArgs {
    /// The metrics directory (as PROMETHEUS_MULTIPROC_DIR).
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: PathBuf,
    /// Keep only families whose name starts with this prefix (repeatable; all when absent).
    #[arg(long = "prefix", value_name = "P", value_parser = parse_prefix)]
    pub(crate) prefixes: Vec<String>,
    /// Exposition format. OpenMetrics has a _created sample per counter, histogram and
    /// summary series unless PROMETHEUS_DISABLE_CREATED_SERIES is true, 1 or t.
    #[arg(long, value_name = "FORMAT", default_value = "prometheus", value_parser = format_parser())]
    pub(crate) format: Format,
    /// How names outside the classic character sets are written: underscores (the
    /// classic formats' default), allow-utf-8 (quoted), dots or values.
    #[arg(long, value_name = "SCHEME", default_value = "underscores", value_parser = parse_escaping)]
    pub(crate) escaping: shmetrics_reader::Escaping,
    /// Leave out the reader's own shmetrics_* families.
    #[arg(long)]
    pub(crate) no_self_metrics: bool,
}

fn parse_escaping(s: &str) -> Result<shmetrics_reader::Escaping, String> {
    shmetrics_reader::Escaping::parse(s).ok_or_else(|| {
        format!("unknown escaping {s:?}; expected underscores, allow-utf-8, dots or values")
    })
}

/// Scrapes `args.dir` once and writes the rendering to stdout. Problems the reader finds in
/// segments are logged (`log::warn!`, to stderr) and do not fail the dump.
///
/// # Errors
/// Exit status 2 when the directory is missing, not a directory or unreadable; 1 when
/// stdout cannot be written (a closed pipe ends the dump quietly with success).
pub(crate) fn run(args: &DumpArgs) -> Result<(), CliError> {
    // Every `ReaderError` names the path: missing, not a directory, or not accessible.
    let mut reader =
        Reader::open(&args.dir).map_err(|e| CliError::with_code(2, format!("dump: {e}")))?;
    // `_created` samples (OpenMetrics only) as `serve` has them by default.
    reader.set_created_series(shmetrics::server::created_series_from_env());
    let filter = PrefixFilter::new(args.prefixes.iter().cloned());
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let result = reader
        .scrape_escaped(
            args.format,
            args.escaping,
            &filter,
            !args.no_self_metrics,
            &mut out,
        )
        .and_then(|report| out.flush().map(|()| report));
    match result {
        Ok(report) => {
            if let Some(e) = &report.dir_error {
                return Err(CliError::with_code(
                    2,
                    format!("dump: cannot read metrics directory {e}"),
                ));
            }
            log::info!(
                "dump: {} live, {} dead, {} bad segments; {} series",
                report.live_segments,
                report.dead_segments,
                report.bad_segments,
                report.series
            );
            if let Some(summary) = skipped_summary(&report) {
                log::warn!("dump: {}: {summary}", args.dir.display());
            }
            if !args.prefixes.is_empty() {
                let scrape = reader.snapshot();
                let families = &scrape.snapshot.families;
                // An empty directory was reported above; every prefix matches nothing there.
                let known = if families.is_empty() {
                    &[][..]
                } else {
                    &args.prefixes[..]
                };
                let filter = PrefixFilter::new(known.iter().cloned());
                for prefix in filter.unmatched(families.iter().map(|f| &*f.name)) {
                    log::warn!(
                        "dump: --prefix {prefix} matches none of the {} families in {}",
                        families.len(),
                        args.dir.display()
                    );
                }
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::new(format!("dump: writing to stdout: {e}"))),
    }
}

/// What a user should hear about a directory that held less than it seemed: entries that
/// are not segments (a wrong `--dir`) and no segment at all. `None` when every entry was a
/// segment or a `prometheus_client` file.
fn skipped_summary(report: &ScrapeReport) -> Option<String> {
    let skipped: usize = report.skipped.values().sum();
    let segments = report.live_segments + report.dead_segments + report.bad_segments;
    if skipped == 0 && segments > 0 {
        return None;
    }
    let mut text = if segments == 0 {
        "no metrics segment or prometheus_client file found".to_owned()
    } else {
        format!("{segments} segments read")
    };
    if skipped > 0 {
        let reasons: Vec<String> = report
            .skipped
            .iter()
            .map(|(reason, n)| format!("{n} {}", reason.as_str()))
            .collect();
        text.push_str(&format!(
            "; {skipped} entries skipped ({})",
            reasons.join(", ")
        ));
    }
    if segments == 0 {
        text.push_str(" (is this the directory the processes write to?)");
    }
    Some(text)
}
