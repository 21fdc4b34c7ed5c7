//! The HTTP endpoint `serve`, `run` and `demo` share: its arguments, how they become
//! [`ServerOptions`], binding and the runtime.

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use clap::Args;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use shmetrics::Format;
use shmetrics::server::{Server, ServerOptions, default_listen};

use super::error::CliError;

/// Parses `--listen`: `IP:PORT` (`[IPv6]:PORT` for IPv6), `HOST:PORT` (resolved now; the
/// first address is used) or a bare `PORT` (all IPv4 interfaces).
pub(crate) fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    let expected = "expected IP:PORT, HOST:PORT (such as 127.0.0.1:8081, [::1]:8081 or \
                    localhost:8081) or a port";
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s:?} is not an address to listen on; {expected}"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("{s:?} is not an address to listen on; {expected}"));
    }
    match s.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("host {host:?} has no address to listen on")),
        Err(e) => Err(format!("cannot resolve host {host:?}: {e}")),
    }
}

/// Parses `--prefix`: a non-empty start of a metric name. Refuses what is surely a mistake:
/// an empty prefix (which would keep every family: leave `--prefix` out instead) and
/// whitespace, commas or control characters (a list given as one value: repeat `--prefix`).
pub(crate) fn parse_prefix(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err(
            "an empty prefix keeps every family; leave --prefix out to keep them all".into(),
        );
    }
    if let Some(c) = s
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == ',')
    {
        return Err(format!(
            "{s:?} has {c:?} in it, which no metric name starts with; give --prefix once per \
             prefix (--prefix vllm: --prefix lmcache:)"
        ));
    }
    Ok(s.to_owned())
}

/// Parses `--format` of `dump`: an exposition format by name.
pub(crate) fn format_parser() -> impl TypedValueParser<Value = Format> {
    PossibleValuesParser::new([
        PossibleValue::new("prometheus").help("Prometheus text format 0.0.4"),
        PossibleValue::new("openmetrics").help("OpenMetrics 1.0 text (ends with `# EOF`)"),
    ])
    .map(|name| name.parse().expect("a possible value names a format"))
}

/// Parses `--format` of `serve` and `run`: `auto`, or the format every response is forced
/// to.
fn forced_format_parser() -> impl TypedValueParser<Value = ForcedFormat> {
    PossibleValuesParser::new([
        PossibleValue::new("auto").help(
            "Negotiated from the request's Accept header: OpenMetrics 1.0 when the client prefers it (as Prometheus does), else text 0.0.4",
        ),
        PossibleValue::new("prometheus")
            .help("Prometheus text format 0.0.4 for every request, whatever Accept says"),
        PossibleValue::new("openmetrics")
            .help("OpenMetrics 1.0 for every request, whatever Accept says"),
    ])
    .map(|name| ForcedFormat(name.parse().ok()))
}

/// The format every `/metrics` response is forced to; `None` for `auto` (negotiated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ForcedFormat(pub(crate) Option<Format>);

/// How the HTTP endpoint of `serve` and `run` listens and what it serves.
#[derive(Debug, Args)]
pub(crate) struct HttpArgs {
    /// Address to listen on: IP:PORT, HOST:PORT (resolved at start-up, first address), or a
    /// PORT on all interfaces; port 0 picks a free one (the address bound is printed on
    /// stderr). Default: 0.0.0.0:8081, or 0.0.0.0:$DYN_SYSTEM_PORT when DYN_SYSTEM_PORT is
    /// set.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub(crate) listen: Option<SocketAddr>,
    /// Keep only families whose name starts with this prefix (repeatable; all when
    /// absent). The shmetrics_* self-metrics are always kept.
    #[arg(long = "prefix", value_name = "P", value_parser = parse_prefix)]
    pub(crate) prefixes: Vec<String>,
    /// Leave out the shmetrics_* self-metrics.
    #[arg(long)]
    pub(crate) no_self_metrics: bool,
    /// Serve the process metrics of every live writer, read from /proc at each scrape:
    /// process_cpu_seconds_total, process_resident_memory_bytes,
    /// process_virtual_memory_bytes, process_open_fds, process_max_fds and
    /// process_start_time_seconds, each with a pid label (kept whatever --prefix says). A
    /// writer whose pid is not its own here (another pid namespace) is only counted, in
    /// shmetrics_reader_process_metrics_writers.
    #[arg(long)]
    pub(crate) process_metrics: bool,
    /// Leave out OpenMetrics' _created samples (each counter, histogram and summary series'
    /// creation time: the oldest among the processes that have it). Also off when
    /// PROMETHEUS_DISABLE_CREATED_SERIES is true, 1 or t, as in prometheus_client. The
    /// text format never has them.
    #[arg(long)]
    pub(crate) no_created_series: bool,
    /// Reuse the latest snapshot for scrapes arriving less than N milliseconds after it was
    /// taken (0: only scrapes arriving while a snapshot is being taken share it).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) max_age_ms: u64,
    /// Exposition format of /metrics: `auto` negotiates it from the request's Accept
    /// header; `prometheus` (text 0.0.4) or `openmetrics` answer every request in that
    /// format (for scrapers whose Accept header cannot be changed).
    #[arg(long, value_name = "FORMAT", default_value = "auto", value_parser = forced_format_parser())]
    pub(crate) format: ForcedFormat,
    /// MiB of segments whose pages stay mapped between scrapes (oldest live segments
    /// first); the pages of the others are released after each read, which bounds the
    /// server's resident set on huge directories at the cost of minor page faults.
    #[arg(long, value_name = "MIB", default_value_t = shmetrics_reader::DEFAULT_RESIDENT_BUDGET >> 20)]
    pub(crate) resident_budget_mib: usize,
    /// More segments stay mapped while the server's anonymous memory (measured after each
    /// snapshot) leaves room for them under this many MiB, so a directory that fits is not
    /// faulted in again at every scrape; --resident-budget-mib stays the floor (0: the
    /// floor alone).
    #[arg(long, value_name = "MIB", default_value_t = shmetrics::server::DEFAULT_MEMORY_TARGET >> 20)]
    pub(crate) memory_target_mib: usize,
    /// Threads a scrape may fold the live segments on, each taking at least 2 MiB of slots
    /// (a directory under 4 MiB stays on one); the merged values are the same whatever the
    /// count (0: one per available core, at most 4).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) fold_threads: usize,
    /// Fold dead processes' segments into the directory's archive and remove their files
    /// every this many seconds, beside the scrapes (which never wait for it); the wait
    /// doubles after each failure in a row (0: never).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub(crate) compact_interval_secs: u64,
    /// Largest archive file a compaction writes, in MiB: dead segments are folded in
    /// batches of at most this size and a full archive is sealed as an immutable part, so a
    /// compaction holds a few times this much memory whatever the size of the dead data.
    #[arg(long, value_name = "MIB", default_value_t = shmetrics_reader::DEFAULT_ARCHIVE_PART_SIZE >> 20)]
    pub(crate) archive_part_mib: usize,
    /// Most HTTP connections open at once; when full, the connection stalled longest (half a
    /// second or more), else the oldest (open half a second or more), is closed for the new
    /// one, else the new one is refused.
    #[arg(long, value_name = "N", default_value_t = shmetrics::server::DEFAULT_MAX_CONNECTIONS)]
    pub(crate) max_connections: usize,
    /// Close a connection whose client reads nothing of a response for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = shmetrics::server::DEFAULT_WRITE_TIMEOUT.as_secs())]
    pub(crate) write_timeout_secs: u64,
    /// Close a connection after answering this many requests on it.
    #[arg(long, value_name = "N", default_value_t = shmetrics::server::DEFAULT_MAX_REQUESTS_PER_CONNECTION)]
    pub(crate) max_requests_per_connection: u64,
    /// MiB of rendered bodies kept for clients (shared per snapshot); above it, connections
    /// stalled for half a second or more are closed.
    #[arg(long, value_name = "MIB", default_value_t = shmetrics::server::DEFAULT_MAX_BODY_BYTES >> 20)]
    pub(crate) max_body_mib: u64,
    /// The most MiB one /metrics exposition may have, uncompressed; a larger one is
    /// answered with a 500 that says so. Bodies over 32 MiB are streamed, not held.
    #[arg(long, value_name = "MIB", default_value_t = shmetrics::server::DEFAULT_MAX_SCRAPE_BYTES >> 20)]
    pub(crate) max_scrape_mib: u64,
    /// The exporter-toolkit web configuration file, as Prometheus' exporters take it: TLS
    /// (tls_server_config: cert_file, key_file, client_auth_type, client_ca_file,
    /// client_allowed_sans, min_version, cipher_suites, ...), basic authentication
    /// (basic_auth_users with bcrypt hashes, basic_auth_excluded_paths),
    /// http_server_config.headers and rate_limit. Checked at start-up: a bad file exits
    /// with the key and the reason. Certificate files are re-read when they change.
    #[arg(long = "web.config.file", value_name = "PATH")]
    pub(crate) web_config_file: Option<std::path::PathBuf>,
    /// Send the merged, filtered directory to this Prometheus remote write URL (remote
    /// write 1.0: Prometheus' /api/v1/write, VictoriaMetrics, Mimir, Thanos Receive) every
    /// --remote-write-interval, with retries and backoff on 5xx and network errors
    /// (repeatable; the web configuration file's remote_write section adds targets with
    /// credentials, TLS and headers).
    #[arg(long = "remote-write", value_name = "URL", value_parser = parse_remote_write_url)]
    pub(crate) remote_write: Vec<shmetrics::remote_write::RemoteWriteTarget>,
    /// Seconds between two remote writes (fractions allowed).
    #[arg(long, value_name = "SECS", default_value_t = shmetrics::remote_write::DEFAULT_INTERVAL.as_secs_f64(), value_parser = parse_interval)]
    pub(crate) remote_write_interval: f64,
    /// A label added to every series sent by remote write, unless the series has it
    /// (repeatable; such as instance=gpu-node-7 or cluster=prod).
    #[arg(long = "remote-write-label", value_name = "NAME=VALUE", value_parser = parse_label)]
    pub(crate) remote_write_labels: Vec<(String, String)>,
}

/// Parses `--remote-write`.
fn parse_remote_write_url(s: &str) -> Result<shmetrics::remote_write::RemoteWriteTarget, String> {
    shmetrics::remote_write::RemoteWriteTarget::new(s)
}

/// Parses `--remote-write-interval`: positive seconds, at least 0.1.
fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.1 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds of at least 0.1")),
    }
}

/// Parses `--remote-write-label NAME=VALUE`.
fn parse_label(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))?;
    shmetrics::web_config::check_label_name(name)?;
    Ok((name.to_owned(), value.to_owned()))
}

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
///
/// # Errors
/// Exit status 2 when the web configuration file cannot be read or is refused.
pub(crate) fn options(
    command: &str,
    dir: &Path,
    listen: SocketAddr,
    args: &HttpArgs,
) -> Result<ServerOptions, CliError> {
    let web_config = match &args.web_config_file {
        Some(path) => Some(
            shmetrics::web_config::WebConfig::load(path)
                .map_err(|e| CliError::with_code(2, format!("{command}: {e}")))?,
        ),
        None => None,
    };
    let remote_write = remote_write(args, web_config.as_ref());
    Ok(ServerOptions {
        dir: dir.to_owned(),
        listen,
        prefixes: args.prefixes.clone(),
        self_metrics: !args.no_self_metrics,
        max_snapshot_age: Duration::from_millis(args.max_age_ms),
        format: args.format.0,
        resident_budget: args.resident_budget_mib.saturating_mul(1 << 20),
        memory_target: (args.memory_target_mib > 0)
            .then(|| args.memory_target_mib.saturating_mul(1 << 20)),
        fold_threads: args.fold_threads,
        compact_interval: (args.compact_interval_secs > 0)
            .then(|| Duration::from_secs(args.compact_interval_secs)),
        archive_part_size: args.archive_part_mib.saturating_mul(1 << 20),
        max_connections: args.max_connections,
        write_timeout: Duration::from_secs(args.write_timeout_secs.max(1)),
        max_requests_per_connection: args.max_requests_per_connection,
        max_body_bytes: args.max_body_mib.saturating_mul(1 << 20),
        max_scrape_bytes: args.max_scrape_mib.saturating_mul(1 << 20),
        process_metrics: args.process_metrics,
        created_series: !args.no_created_series && shmetrics::server::created_series_from_env(),
        web_config,
        remote_write,
    })
}

/// The remote write settings of the command line and the web configuration file: the
/// file's targets then `--remote-write`'s, the file's external labels overridden by
/// `--remote-write-label`'s.
fn remote_write(
    args: &HttpArgs,
    web: Option<&shmetrics::web_config::WebConfig>,
) -> Option<shmetrics::remote_write::RemoteWrite> {
    let mut targets = web.map(|w| w.remote_write.clone()).unwrap_or_default();
    targets.extend(args.remote_write.iter().cloned());
    if targets.is_empty() {
        return None;
    }
    let mut labels: Vec<(String, String)> =
        web.map(|w| w.external_labels.clone()).unwrap_or_default();
    for (name, value) in &args.remote_write_labels {
        labels.retain(|(n, _)| n != name);
        labels.push((name.clone(), value.clone()));
    }
    Some(shmetrics::remote_write::RemoteWrite {
        targets,
        interval: Duration::from_secs_f64(args.remote_write_interval),
        external_labels: labels,
    })
}

/// Binds, failing with exit status 2 and a message naming the directory or address.
pub(crate) fn bind(command: &str, options: ServerOptions) -> Result<Server, CliError> {
    // A connection and an open segment each take a descriptor: use all the process may.
    match shmetrics::server::raise_descriptor_limit() {
        Ok(limit) => log::debug!("{command}: descriptor limit {limit}"),
        Err(e) => log::warn!("{command}: cannot raise the descriptor limit: {e}"),
    }
    Server::bind(options).map_err(|e| CliError::with_code(2, format!("{command}: {e}")))
}

/// The line printed on stderr once the server listens.
/// Warns when `dir` holds files and none that a scrape can use: only foreign entries (a
/// wrong `--dir`), or metrics files this user cannot read (the server runs as another user
/// than the writers; `/health` says `unreadable`). An empty directory says nothing: the
/// writers have not started yet.
pub(crate) fn warn_about_directory(command: &str, dir: &std::path::Path) {
    let Ok(census) = shmetrics_reader::census(dir) else {
        return; // Bind already refused a missing directory; a listing error shows in /health.
    };
    if census.readable() > 0 {
        return;
    }
    if census.unreadable > 0 {
        log::warn!(
            "{command}: this user can read none of the {} metrics files in {}: run it as the \
             writers' user (/health says \"unreadable\")",
            census.unreadable,
            dir.display()
        );
    } else if census.other_entries > 0 {
        log::warn!(
            "{command}: {} holds {} entries and no metrics segment or prometheus_client file \
             (is this the directory the processes write to?)",
            dir.display(),
            census.other_entries
        );
    }
}

pub(crate) fn announce(server: &Server) {
    super::output::err_line(format_args!(
        "serving {}://{}/metrics from {}",
        if server.tls() { "https" } else { "http" },
        server.local_addr(),
        server.dir().display()
    ));
}
