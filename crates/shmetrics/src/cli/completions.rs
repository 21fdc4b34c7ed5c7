//! `shmetrics completions SHELL`: the shell completion script, generated from the command
//! line's own definition.

use std::io::Write;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;
use super::error::CliError;

/// Arguments of `completions`.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_name = "SHELL")]
    pub(crate) shell: Shell,
}

/// Writes the completion script for `args.shell` to stdout.
///
/// # Errors
/// Exit status 1 when stdout cannot be written.
pub(crate) fn run(args: &CompletionsArgs) -> Result<(), CliError> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut visible_command(), "shmetrics", &mut script);
    std::io::stdout()
        .write_all(&script)
        .map_err(|e| CliError::new(format!("completions: writing to stdout: {e}")))
}

/// The command line without its hidden (internal) subcommands, which completion scripts
/// would otherwise offer.
pub(crate) fn visible_command() -> clap::Command {
    let full = Cli::command();
    let mut visible = clap::Command::new(full.get_name().to_owned())
        .bin_name("shmetrics")
        .version(full.get_version().map(str::to_owned).unwrap_or_default())
        .about(full.get_about().cloned().unwrap_or_default());
    for arg in full.get_arguments() {
        visible = visible.arg(arg.clone());
    }
    for sub in full.get_subcommands().filter(|s| !s.is_hide_set()) {
        visible = visible.subcommand(sub.clone());
    }
    visible
}
