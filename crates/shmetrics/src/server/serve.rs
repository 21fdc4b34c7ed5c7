//! `shmetrics serve`: the `/metrics` endpoint for a metrics directory, until a signal.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::cli::{CliError, HttpArgs, ServeArgs};

use super::{Server, ServerOptions, Signals, default_listen};

/// Worker threads of the runtime: requests are light, snapshots and rendering run on the
/// blocking pool.
const WORKER_THREADS: usize = 2;

/// Builds the runtime `serve` and `run` use.
pub(crate) fn runtime(command: &str) -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .thread_name("shmetrics-http")
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("{command}: cannot start the async runtime: {e}")))
}

/// The address to listen on: `--listen`, else the default (which honours
/// `DYN_SYSTEM_PORT`).
pub(crate) fn listen_address(command: &str, args: &HttpArgs) -> Result<SocketAddr, CliError> {
    match args.listen {
        Some(addr) => Ok(addr),
        None => default_listen().map_err(|e| CliError::with_code(2, format!("{command}: {e}"))),
    }
}

/// Server options from the command line.
pub(crate) fn options(dir: &Path, listen: SocketAddr, args: &HttpArgs) -> ServerOptions {
    ServerOptions {
        dir: dir.to_owned(),
        listen,
        prefixes: args.prefixes.clone(),
        self_metrics: !args.no_self_metrics,
        max_snapshot_age: Duration::from_millis(args.max_age_ms),
        format: args.format.forced(),
        resident_budget: args.resident_budget_mib.saturating_mul(1 << 20),
        compact_interval: (args.compact_interval_secs > 0)
            .then(|| Duration::from_secs(args.compact_interval_secs)),
        archive_part_size: args.archive_part_mib.saturating_mul(1 << 20),
        max_connections: args.max_connections,
        write_timeout: Duration::from_secs(args.write_timeout_secs.max(1)),
        max_requests_per_connection: args.max_requests_per_connection,
        max_body_bytes: args.max_body_mib.saturating_mul(1 << 20),
        max_scrape_bytes: args.max_scrape_mib.saturating_mul(1 << 20),
    }
}

/// Binds, failing with exit status 2 and a message naming the directory or address.
pub(crate) fn bind(command: &str, options: ServerOptions) -> Result<Server, CliError> {
    // A connection and an open segment each take a descriptor: use all the process may.
    match crate::server::raise_descriptor_limit() {
        Ok(limit) => log::debug!("{command}: descriptor limit {limit}"),
        Err(e) => log::warn!("{command}: cannot raise the descriptor limit: {e}"),
    }
    Server::bind(options).map_err(|e| CliError::with_code(2, format!("{command}: {e}")))
}

/// The line printed on stderr once the server listens.
pub(crate) fn announce(server: &Server) {
    eprintln!(
        "serving http://{}/metrics from {}",
        server.local_addr(),
        server.dir().display()
    );
}

/// Runs `serve`: binds, prints `serving http://ADDR/metrics from DIR` on stderr, serves
/// until SIGINT or SIGTERM, then shuts down gracefully.
///
/// # Errors
/// Exit status 2 for a missing directory, an address that cannot be bound or a bad
/// `DYN_SYSTEM_PORT`; 1 when the runtime or the signal handlers cannot be set up.
pub fn run(args: &ServeArgs) -> Result<(), CliError> {
    let listen = listen_address("serve", &args.http)?;
    let server = bind("serve", options(&args.dir, listen, &args.http))?;
    let rt = runtime("serve")?;
    let result = rt.block_on(async {
        let mut signals = Signals::new()
            .map_err(|e| CliError::new(format!("serve: cannot catch signals: {e}")))?;
        announce(&server);
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
