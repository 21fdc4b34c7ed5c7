//! `shmetrics man`: manual pages, generated from the command line's own definition.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::error::CliError;

/// Arguments of `man`.
#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// Write shmetrics.1 and one shmetrics-COMMAND.1 per subcommand into this directory
    /// (created if missing) instead of printing shmetrics.1 to stdout.
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
}

/// Prints `shmetrics(1)`, or writes every page into `args.dir`.
///
/// # Errors
/// Exit status 1 when a page cannot be written.
pub(crate) fn run(args: &ManArgs) -> Result<(), CliError> {
    let command = super::completions::visible_command();
    let Some(dir) = &args.dir else {
        let mut page = Vec::new();
        render(&command, &mut page)?;
        return std::io::stdout()
            .write_all(&page)
            .map_err(|e| CliError::new(format!("man: writing to stdout: {e}")));
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::new(format!("man: cannot create {}: {e}", dir.display())))?;
    let mut pages = vec![("shmetrics.1".to_owned(), command.clone())];
    for sub in command.get_subcommands() {
        let name = format!("shmetrics-{}", sub.get_name());
        pages.push((format!("{name}.1"), sub.clone().name(name)));
    }
    for (file, page_command) in pages {
        let mut page = Vec::new();
        render(&page_command, &mut page)?;
        let path = dir.join(&file);
        std::fs::write(&path, page)
            .map_err(|e| CliError::new(format!("man: cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}

fn render(command: &clap::Command, out: &mut Vec<u8>) -> Result<(), CliError> {
    clap_mangen::Man::new(command.clone())
        .render(out)
        .map_err(|e| CliError::new(format!("man: {e}")))
}
