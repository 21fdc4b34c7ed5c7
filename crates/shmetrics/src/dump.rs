//! `shmetrics dump`: merge a metrics directory once and print the exposition.

use std::io::{self, Write};

use shmetrics_reader::{PrefixFilter, Reader};

use crate::cli::{CliError, DumpArgs};

/// Scrapes `args.dir` once and writes the rendering to stdout. Problems the reader finds in
/// segments are logged (`log::warn!`, to stderr) and do not fail the dump.
///
/// # Errors
/// Exit status 2 when the directory is missing, not a directory or unreadable; 1 when
/// stdout cannot be written (a closed pipe ends the dump quietly with success).
pub fn run(args: &DumpArgs) -> Result<(), CliError> {
    // Every `ReaderError` names the path: missing, not a directory, or not accessible.
    let mut reader =
        Reader::open(&args.dir).map_err(|e| CliError::with_code(2, format!("dump: {e}")))?;
    let filter = PrefixFilter::new(args.prefixes.iter().cloned());
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let result = reader
        .scrape_escaped(
            args.format.into(),
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
            log::debug!(
                "{} live, {} dead, {} bad segments; {} series",
                report.live_segments,
                report.dead_segments,
                report.bad_segments,
                report.series
            );
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::new(format!("dump: writing to stdout: {e}"))),
    }
}
