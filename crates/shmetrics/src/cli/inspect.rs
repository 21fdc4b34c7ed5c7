//! `shmetrics inspect`: print one segment file for a human.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::error::CliError;

/// Arguments of `inspect`.
#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// The segment file (`shmetrics-<pid>-<instance>-<seq>.shm`).
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
}

/// Prints the analysis of `args.file` ([`shmetrics_reader::inspect::inspect`]) to stdout.
///
/// Returns exit status 0 when the segment is fully valid and 1 when it failed validation
/// (the report says where and why).
///
/// # Errors
/// Exit status 2 when the file cannot be opened or read; 1 when stdout cannot be written.
pub(crate) fn run(args: &InspectArgs) -> Result<ExitCode, CliError> {
    let dump = shmetrics_reader::inspect::inspect(&args.file).map_err(|e| {
        CliError::with_code(
            2,
            format!("inspect: cannot open {}: {e}", args.file.display()),
        )
    })?;
    let mut out = io::stdout().lock();
    match write!(out, "{dump}").and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(CliError::new(format!("inspect: writing to stdout: {e}"))),
    }
    Ok(if dump.is_valid() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
