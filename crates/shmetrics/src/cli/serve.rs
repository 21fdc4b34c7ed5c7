//! `shmetrics serve`: the `/metrics` endpoint for a metrics directory, until a signal.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use shmetrics::server::Signals;

use super::error::CliError;
use super::http::{
    HttpArgs, announce, bind, listen_address, options, runtime, warn_about_directory,
};

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The metrics directory (as PROMETHEUS_MULTIPROC_DIR).
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: PathBuf,
    /// The HTTP endpoint.
    #[command(flatten)]
    pub(crate) http: HttpArgs,
}

/// Runs `serve`: binds, prints `serving http://ADDR/metrics from DIR` on stderr, serves
/// until SIGINT or SIGTERM, then shuts down gracefully.
///
/// # Errors
/// Exit status 2 for a missing directory, an address that cannot be bound or a bad
/// `DYN_SYSTEM_PORT`; 1 when the runtime or the signal handlers cannot be set up.
pub(crate) fn run(args: &ServeArgs) -> Result<(), CliError> {
    let listen = listen_address("serve", &args.http)?;
    let server = bind("serve", options("serve", &args.dir, listen, &args.http)?)?;
    let rt = runtime("serve")?;
    let result = rt.block_on(async {
        let mut signals = Signals::new()
            .map_err(|e| CliError::new(format!("serve: cannot catch signals: {e}")))?;
        announce(&server);
        warn_about_directory("serve", &args.dir);
        server
            .run(async move {
                let signal = signals.recv().await;
                log::info!("signal {signal}: shutting down");
            })
            .await
            .map_err(|e: io::Error| CliError::new(format!("serve: {e}")))
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}
