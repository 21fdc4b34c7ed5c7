//! `shmetrics compact`: fold the segments of dead processes into the archive, once.

use std::path::PathBuf;

use clap::Args;
use shmetrics_reader::{CompactError, Reader};

use super::error::CliError;
use super::output::out_line;

/// Arguments of `compact`.
#[derive(Debug, Args)]
pub(crate) struct CompactArgs {
    /// The metrics directory (as PROMETHEUS_MULTIPROC_DIR).
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: PathBuf,
    /// Largest archive file a compaction writes, in MiB: dead segments are folded in
    /// batches of at most this size and a full archive is sealed as an immutable part, so a
    /// compaction holds a few times this much memory whatever the size of the dead data.
    #[arg(long, value_name = "MIB", default_value_t = shmetrics_reader::DEFAULT_ARCHIVE_PART_SIZE >> 20)]
    pub(crate) archive_part_mib: usize,
}

/// Compacts `args.dir` and prints what was done on stdout.
///
/// # Errors
/// Exit status 2 when the directory is missing or not a directory; 3 when another compactor
/// is running; 1 when a file operation fails (the message names it; nothing is lost) or
/// the report cannot be written to stdout (a closed pipe ends it quietly, with success).
pub(crate) fn run(args: &CompactArgs) -> Result<(), CliError> {
    let mut reader =
        Reader::open(&args.dir).map_err(|e| CliError::with_code(2, format!("compact: {e}")))?;
    reader.set_archive_part_size(args.archive_part_mib.saturating_mul(1 << 20));
    let report = reader.compact().map_err(|e| match e {
        CompactError::Busy(_) => CliError::with_code(3, format!("compact: {e}")),
        e => CliError::new(format!("compact: {e}")),
    })?;
    let dir = args.dir.display();
    let mut report_lines = vec![match report.generation {
        Some(generation) if report.folded_segments > 0 => format!(
            "{dir}: folded {} dead segments into archive generation {generation} ({} series); \
             removed {} files and {} stale temporary files",
            report.folded_segments,
            report.archived_series,
            report.removed_files,
            report.removed_temporary
        ),
        _ => format!(
            "{dir}: no dead segments to fold{}; removed {} files and {} stale temporary files",
            report
                .generation
                .map(|g| format!(" (archive generation {g})"))
                .unwrap_or_default(),
            report.removed_files,
            report.removed_temporary
        ),
    }];
    if report.conflicting_series > 0 {
        report_lines.push(format!(
            "{} series of dead segments were left out: their family is declared differently \
             from the definition in force (they were not scraped either)",
            report.conflicting_series
        ));
    }
    // The compaction is done whether or not anyone reads the report: a closed pipe ends
    // it quietly, as it ends `dump`.
    match (report_lines.iter()).try_for_each(|line| out_line(format_args!("{line}"))) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::new(format!("compact: writing to stdout: {e}")))
        }
        _ => Ok(()),
    }
}
