//! The HTTP endpoint: `/metrics` and `/health` for one metrics directory, on hyper.
//!
//! ```no_run
//! use shmetrics::server::{Server, ServerOptions, default_listen, shutdown_signal};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut options = ServerOptions::new("/tmp/metrics", default_listen()?);
//! options.prefixes = vec!["vllm:".into(), "lmcache:".into()];
//! let server = Server::bind(options)?;
//! eprintln!("serving http://{}/metrics", server.local_addr());
//! let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
//! rt.block_on(server.run(shutdown_signal()))?;
//! # Ok(()) }
//! ```
//!
//! - `GET /metrics` (and `HEAD`): the merged directory, filtered by prefix, plus the
//!   `shmetrics_*` self-metrics, as OpenMetrics 1.0 when the `Accept` header prefers it
//!   (as Prometheus sends it) and as text 0.0.4 otherwise, unless
//!   [`ServerOptions::format`] forces one; names outside the classic character sets
//!   escaped as the `escaping` parameter of `Accept` asks (Prometheus 3's `allow-utf-8`,
//!   `dots`, `values`; `underscores` by default: `negotiate`); gzip-encoded when
//!   `Accept-Encoding` allows it.
//!   Other methods: 405; other paths: 404.
//! - `GET /health`: the directory as it is now (its own cheap pass: which writers are
//!   alive, what this user cannot read) and what the latest scrape found; see
//!   [`Health`] for each field. 503 when the directory is gone or nothing in it is
//!   readable.
//!
//! With a web configuration ([`ServerOptions::web_config`]) every request first passes its
//! rate limit and basic authentication (401 with `WWW-Authenticate`, 429), every response
//! carries its headers, and connections are TLS (rustls; certificate files re-read when
//! they change). With remote write ([`ServerOptions::remote_write`]) the merged, filtered
//! directory is also sent to receivers every interval ([`crate::remote_write`]).
//!
//! Concurrent scrapes share work (see [`ServerOptions::max_snapshot_age`]); snapshots and
//! rendering run on Tokio's blocking threads, never on the async workers, and never make
//! a writer wait. Compaction runs on a task of its own (see
//! [`ServerOptions::compact_interval`]): no scrape waits for it.

mod auth;
mod body;
mod cache;
mod compaction;
mod connections;
mod gate;
mod memory;
pub mod negotiate;
mod self_metrics;
mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use shmetrics_reader::snapshot::Family;
use shmetrics_reader::{Compactor, Format, PrefixFilter, Reader, ReaderError};
use tokio::net::TcpStream;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;

use body::ResponseBody;
use cache::{BodyError, ExtraFn, Renderer, Scraper};
use compaction::Compaction;
pub use connections::raise_descriptor_limit;
use connections::{GuardedIo, Open, Progress, RESERVED_DESCRIPTORS, descriptor_limit};
use gate::Gate;
use self_metrics::{Closed, ServerMetrics, TlsEvent};
use tls::{Reload, Tls};

use crate::remote_write::{RemoteWrite, Shipper};
use crate::web_config::{WebConfig, WebConfigError};

/// The port served when neither `--listen` nor `DYN_SYSTEM_PORT` says otherwise (the
/// port of NVIDIA Dynamo's system server).
pub const DEFAULT_PORT: u16 = 8081;

/// The environment variable naming the port, as in NVIDIA Dynamo.
pub const PORT_ENV: &str = "DYN_SYSTEM_PORT";

/// How long in-flight requests may take to finish once shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long a client may take to send a request's headers (and, with TLS, to finish its
/// handshake).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The default listen address: `0.0.0.0:8081`, or `0.0.0.0:$DYN_SYSTEM_PORT` when that
/// variable is set and not empty.
///
/// # Errors
/// `InvalidInput` when `DYN_SYSTEM_PORT` is set but is not a port number (0–65535).
pub fn default_listen() -> io::Result<SocketAddr> {
    listen_for_port_env(std::env::var_os(PORT_ENV).as_deref())
}

fn listen_for_port_env(value: Option<&std::ffi::OsStr>) -> io::Result<SocketAddr> {
    let port = match value {
        None => DEFAULT_PORT,
        Some(v) if v.is_empty() => DEFAULT_PORT,
        Some(v) => v
            .to_str()
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{PORT_ENV}={} is not a port number (0-65535)",
                        v.to_string_lossy()
                    ),
                )
            })?,
    };
    Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
}

/// Default of [`ServerOptions::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default of [`ServerOptions::write_timeout`].
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`ServerOptions::max_requests_per_connection`].
pub const DEFAULT_MAX_REQUESTS_PER_CONNECTION: u64 = 1000;
/// Default of [`ServerOptions::max_body_bytes`]: 256 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 256 << 20;
/// Default of [`ServerOptions::max_scrape_bytes`]: 1 GiB.
pub const DEFAULT_MAX_SCRAPE_BYTES: u64 = 1 << 30;

/// Default of [`ServerOptions::memory_target`]: 48 MiB. A directory of 128 processes ×
/// 1,000 series keeps all its segment pages mapped under it (the server then holds about
/// 33 MiB); one of 128 × 10,000 holds more anonymous memory than that and keeps the
/// resident budget's floor.
pub const DEFAULT_MEMORY_TARGET: usize = 48 << 20;

/// Most threads a snapshot folds on by default ([`ServerOptions::fold_threads`] 0): the
/// available cores, at most this many.
pub const AUTO_FOLD_THREADS_MAX: usize = 4;

/// Default of [`ServerOptions::compact_interval`]: a minute.
pub const DEFAULT_COMPACT_INTERVAL: Duration = Duration::from_secs(60);

/// What to serve and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerOptions {
    /// The metrics directory (as `PROMETHEUS_MULTIPROC_DIR`).
    pub dir: PathBuf,
    /// The address to listen on; port 0 picks a free port (see [`Server::local_addr`]).
    pub listen: SocketAddr,
    /// Keep only the directory's families whose name starts with one of these (all when
    /// empty). Self-metrics and extra families are always kept.
    pub prefixes: Vec<String>,
    /// Append the `shmetrics_*` self-metrics to every `/metrics` response.
    pub self_metrics: bool,
    /// A scrape reuses the latest snapshot (and its rendering) when it is younger than
    /// this. Whatever the value, a scrape that arrives while a snapshot is being taken
    /// waits for it and reuses it. 0 (the default): only that sharing.
    pub max_snapshot_age: Duration,
    /// Answer every `/metrics` request in this format, whatever its `Accept` header says.
    /// `None` (the default): negotiated from `Accept`.
    pub format: Option<Format>,
    /// Bytes of segments whose pages always may stay mapped between scrapes (see
    /// [`Reader::set_resident_budget`]); the default is
    /// [`shmetrics_reader::DEFAULT_RESIDENT_BUDGET`].
    pub resident_budget: usize,
    /// More segment pages stay mapped while the process's anonymous memory, as measured
    /// after the previous snapshot, leaves room for them under this many bytes: each
    /// snapshot's resident budget is `max(resident_budget, memory_target − anonymous)`.
    /// `None`: `resident_budget` alone. The default is [`DEFAULT_MEMORY_TARGET`].
    pub memory_target: Option<usize>,
    /// Threads a snapshot may fold the live segments on (see
    /// [`Reader::set_fold_threads`]: only a directory of 4 MiB of slots or more uses a
    /// second one). 0 (the default): one per available core, at most
    /// [`AUTO_FOLD_THREADS_MAX`]; 1: the scrape's thread alone.
    pub fold_threads: usize,
    /// Compact the directory (fold dead processes into the archive, remove their files)
    /// every this long, the first time this long after [`Server::bind`], on a task of its
    /// own: scrapes never wait for it. After a failure the wait doubles (up to an hour;
    /// `shmetrics_reader_compaction_failures` counts the failures in a row). `None`: never.
    pub compact_interval: Option<Duration>,
    /// Largest archive file a compaction writes (see [`Reader::set_archive_part_size`]);
    /// the default is [`shmetrics_reader::DEFAULT_ARCHIVE_PART_SIZE`].
    pub archive_part_size: usize,
    /// Most connections open at once (default [`DEFAULT_MAX_CONNECTIONS`]; never more than
    /// the descriptor limit less 64 kept for the directory). When full, the connection that
    /// made no progress for the longest time (at least half a second) is closed for the new one,
    /// else the oldest if it has been open that long (a client trickling bytes cannot hold its
    /// place); if every connection is younger, the new one is closed at once. Both are counted.
    pub max_connections: usize,
    /// A response whose client reads nothing of it for this long is abandoned and its
    /// connection closed (default [`DEFAULT_WRITE_TIMEOUT`]).
    pub write_timeout: Duration,
    /// Requests one connection may send (pipelined or not) before the server closes it
    /// after answering the last (default [`DEFAULT_MAX_REQUESTS_PER_CONNECTION`]).
    pub max_requests_per_connection: u64,
    /// Bytes of rendered bodies the server keeps in memory for clients (the latest
    /// snapshot's and those still being sent; bodies of one snapshot are shared, not copied
    /// per client). Above it, every connection stalled for half a second or more is closed,
    /// so clients that stop reading cannot pin memory (default [`DEFAULT_MAX_BODY_BYTES`]).
    pub max_body_bytes: u64,
    /// The most bytes one `/metrics` exposition may have, uncompressed (default
    /// [`DEFAULT_MAX_SCRAPE_BYTES`]). A larger one is answered with a 500 that says so,
    /// counted in `shmetrics_scrape_failures_total{reason="too_large"}`. Bodies of up to
    /// 32 MiB are rendered once per snapshot and shared; larger ones are streamed, so
    /// this limit bounds the work and bytes of one scrape, not its memory.
    pub max_scrape_bytes: u64,
    /// Serve the process metrics of every live writer (`process_cpu_seconds_total`,
    /// memory, file descriptors, start time, each with a `pid` label), read from `/proc` at
    /// each snapshot (`shmetrics_reader::process`); kept whatever the prefixes. Default off.
    pub process_metrics: bool,
    /// OpenMetrics bodies have a `_created` sample per counter, histogram and summary
    /// series: its oldest creation time among the processes that have it, stable across
    /// deaths and compactions (`shmetrics_reader::Reader::set_created_series`). Default on,
    /// as prometheus_client; [`created_series_from_env`] gives its
    /// `PROMETHEUS_DISABLE_CREATED_SERIES` setting.
    pub created_series: bool,
    /// The web configuration (`--web.config.file`): TLS, basic authentication, response
    /// headers and a rate limit, as [`WebConfig`] describes. `None` (the default): plain
    /// HTTP, open to anyone who can reach the address.
    pub web_config: Option<WebConfig>,
    /// Send the merged, filtered directory to remote write receivers every interval
    /// ([`crate::remote_write`]); `None` (the default): never.
    pub remote_write: Option<RemoteWrite>,
}

/// Whether `_created` samples are on by prometheus_client's rule: off when
/// `PROMETHEUS_DISABLE_CREATED_SERIES` is `true`, `1` or `t` (any case).
pub fn created_series_from_env() -> bool {
    let disabled = std::env::var("PROMETHEUS_DISABLE_CREATED_SERIES").unwrap_or_default();
    !matches!(disabled.to_ascii_lowercase().as_str(), "true" | "1" | "t")
}

impl ServerOptions {
    /// Options for serving `dir` on `listen`: no prefix filter, self-metrics on, maximum
    /// snapshot age 0, format negotiated, the reader's default resident budget, compaction
    /// every [`DEFAULT_COMPACT_INTERVAL`].
    pub fn new(dir: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        Self {
            dir: dir.into(),
            listen,
            prefixes: Vec::new(),
            self_metrics: true,
            max_snapshot_age: Duration::ZERO,
            format: None,
            resident_budget: shmetrics_reader::DEFAULT_RESIDENT_BUDGET,
            memory_target: Some(DEFAULT_MEMORY_TARGET),
            fold_threads: 0,
            compact_interval: Some(DEFAULT_COMPACT_INTERVAL),
            archive_part_size: shmetrics_reader::DEFAULT_ARCHIVE_PART_SIZE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_requests_per_connection: DEFAULT_MAX_REQUESTS_PER_CONNECTION,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_scrape_bytes: DEFAULT_MAX_SCRAPE_BYTES,
            process_metrics: false,
            created_series: true,
            web_config: None,
            remote_write: None,
        }
    }
}

/// A bound, not yet running `/metrics` server.
pub struct Server {
    listener: std::net::TcpListener,
    local_addr: SocketAddr,
    reader: Reader,
    compactor: Option<Compactor>,
    options: ServerOptions,
    extra: Option<ExtraFn>,
    tls: Option<Arc<Tls>>,
    gate: Gate,
    shipper: Option<Arc<Shipper>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("options", &self.options)
            .field("extra", &self.extra.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a server could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The metrics directory cannot be read: missing, not a directory, or inaccessible.
    #[error(transparent)]
    Directory(#[from] ReaderError),
    /// The address cannot be listened on (`AddrInUse` when taken).
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The web configuration cannot be used: a certificate or key file cannot be read or
    /// does not match, or the client CA holds no certificate (the key and the reason).
    #[error(transparent)]
    WebConfig(#[from] WebConfigError),
    /// A remote write target cannot be used (its TLS files).
    #[error("{0}")]
    RemoteWrite(String),
}

impl Server {
    /// Opens a reader on `options.dir` and binds `options.listen`. Needs no runtime.
    ///
    /// # Errors
    /// [`ServerError::Directory`] when the directory is missing, not a directory or
    /// inaccessible, [`ServerError::Listen`] when the address cannot be bound,
    /// [`ServerError::WebConfig`] when the web configuration's certificate, key or client
    /// CA cannot be used, [`ServerError::RemoteWrite`] when a remote write target's TLS
    /// files cannot; each names the path, address or key, with the reason.
    pub fn bind(options: ServerOptions) -> Result<Self, ServerError> {
        let tls = match options.web_config.as_ref() {
            Some(web) => match &web.tls {
                Some(settings) => Some(Arc::new(Tls::new(settings.clone(), &web.path)?)),
                None => None,
            },
            None => None,
        };
        let gate = Gate::new(options.web_config.as_ref());
        let shipper = match &options.remote_write {
            Some(settings) if !settings.targets.is_empty() => Some(Arc::new(
                Shipper::new(settings).map_err(ServerError::RemoteWrite)?,
            )),
            _ => None,
        };
        let mut reader = Reader::open(&options.dir)?;
        reader.set_resident_budget(options.resident_budget);
        reader.set_fold_threads(match options.fold_threads {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get().min(AUTO_FOLD_THREADS_MAX)),
            n => n,
        });
        reader.set_process_metrics(options.process_metrics);
        let compactor = match options.compact_interval {
            Some(interval) => {
                let mut compactor = Compactor::open(&options.dir, interval)?;
                compactor.set_archive_part_size(options.archive_part_size);
                reader.follow_compactor(compactor.handle());
                Some(compactor)
            }
            None => None,
        };
        let listen = |source| ServerError::Listen {
            addr: options.listen,
            source,
        };
        let listener = std::net::TcpListener::bind(options.listen).map_err(listen)?;
        listener.set_nonblocking(true).map_err(listen)?;
        let local_addr = listener.local_addr().map_err(listen)?;
        Ok(Self {
            listener,
            local_addr,
            reader,
            compactor,
            options,
            extra: None,
            tls,
            gate,
            shipper,
        })
    }

    /// Adds families to every `/metrics` response: `extra` is called once per rendering
    /// (on a blocking thread), its families are kept by no prefix filter and are merged
    /// with the directory's in name order. A family whose name the directory or the
    /// self-metrics already emit is left out (logged once).
    #[must_use]
    pub fn with_extra(mut self, extra: Arc<dyn Fn() -> Vec<Family> + Send + Sync>) -> Self {
        self.extra = Some(extra);
        self
    }

    /// Calls `hook` in every compaction once it holds the compactors' lock (tests hold a
    /// compaction there); nothing without compaction.
    #[doc(hidden)]
    #[must_use]
    pub fn with_compaction_hook(mut self, hook: Box<dyn FnMut() + Send>) -> Self {
        if let Some(compactor) = &mut self.compactor {
            compactor.set_hook(hook);
        }
        self
    }

    /// The address actually bound (with the port picked when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether it serves HTTPS (the web configuration has TLS).
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The metrics directory served.
    pub fn dir(&self) -> &Path {
        &self.options.dir
    }

    /// Serves until `shutdown` completes, then stops accepting and compacting, lets
    /// in-flight requests and the compaction batch in progress finish (for at most
    /// [`SHUTDOWN_GRACE`] each) and returns. Must run in a Tokio runtime with IO and time
    /// enabled.
    ///
    /// # Errors
    /// When the listener cannot be registered with the runtime. Failed connections and
    /// accept errors are logged, never fatal.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let listener = tokio::net::TcpListener::from_std(self.listener)?;
        let server_metrics = Arc::new(ServerMetrics::new(
            self.gate.refuses(),
            self.tls.is_some(),
            self.shipper.clone(),
        ));
        let mut reader = self.reader;
        let budget = memory::Budget {
            floor: self.options.resident_budget,
            target: self.options.memory_target,
        };
        let mut anonymous = None;
        let mut renderer = Renderer::new(
            PrefixFilter::new(self.options.prefixes.iter().cloned()),
            self.options.self_metrics,
            Arc::clone(&server_metrics),
            self.extra,
            self.options.max_scrape_bytes,
        );
        renderer.created_series = self.options.created_series;
        let app = Arc::new(App {
            scraper: Scraper::new(
                Box::new(move || {
                    reader.set_resident_budget(budget.next(anonymous));
                    let scrape = reader.snapshot();
                    anonymous = budget.target.and_then(|_| memory::anonymous_resident());
                    scrape
                }),
                self.options.max_snapshot_age,
                renderer,
            ),
            metrics: server_metrics,
            format: self.options.format,
            open: Arc::new(std::sync::Mutex::new(Open::default())),
            epoch: Instant::now(),
            max_body_bytes: self.options.max_body_bytes,
            dir: self.options.dir.clone(),
            gate: self.gate,
        });
        let tls = self.tls;
        let (stop_tx, stop_rx) = watch::channel(false);
        let compaction = self
            .compactor
            .map(|c| Compaction::start(c, stop_rx.clone()));
        let shipping = self.shipper.map(|shipper| {
            let mut tasks = shipper.start(&stop_rx);
            tasks.push(tokio::spawn(collect_for_remote_write(
                shipper,
                Arc::clone(&app),
                PrefixFilter::new(self.options.prefixes.iter().cloned()),
                stop_rx.clone(),
            )));
            tasks
        });
        let mut connections = JoinSet::new();
        let open = Arc::clone(&app.open);
        let epoch = app.epoch;
        // Connections never take the descriptors the reader needs.
        let limit = usize::try_from(descriptor_limit().saturating_sub(RESERVED_DESCRIPTORS))
            .unwrap_or(usize::MAX);
        let max_connections = self.options.max_connections.min(limit).max(1);
        let limits = ConnectionLimits {
            write_timeout: self.options.write_timeout,
            max_requests: self.options.max_requests_per_connection.max(1),
        };
        // A descriptor kept free: when the table is full, accepting still works (closing this
        // one first), so an excess connection is refused at once instead of left queued.
        let mut spare = std::fs::File::open("/dev/null").ok();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let mut open = lock(&open);
                        if open.len() >= max_connections {
                            if !open.evict_for_newcomer(epoch) {
                                app.metrics.count_closed(Closed::Refused);
                                drop(stream);
                                continue;
                            }
                            app.metrics.count_closed(Closed::Evicted);
                        }
                        let progress = Arc::new(Progress::default());
                        let abort = connections.spawn(serve_connection(
                            stream,
                            Arc::clone(&app),
                            stop_rx.clone(),
                            GuardIo { progress: Arc::clone(&progress), epoch, limits },
                            tls.clone(),
                        ));
                        open.insert(abort, progress);
                        app.metrics.open_connections.store(open.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                        // Out of descriptors: use the spare to take one connection off the
                        // queue and refuse it, then keep a spare again.
                        drop(spare.take());
                        if let Ok((stream, _)) = listener.accept().await {
                            drop(stream);
                            app.metrics.count_closed(Closed::Refused);
                        }
                        spare = std::fs::File::open("/dev/null").ok();
                        accept_failed(&e).await;
                    }
                    Err(e) => accept_failed(&e).await,
                },
                Some(done) = connections.join_next_with_id(), if !connections.is_empty() => {
                    let mut open = lock(&open);
                    match done {
                        Ok((id, ())) => open.remove(id),
                        Err(e) => open.remove(e.id()),
                    }
                    app.metrics.open_connections.store(open.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        drop(listener);
        let _ = stop_tx.send(true);
        if let Some(c) = &compaction {
            c.stop();
        }
        let drain = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            log::warn!(
                "{} connections still open {SHUTDOWN_GRACE:?} after shutdown began; closing them",
                connections.len()
            );
            connections.shutdown().await;
        }
        if let Some(c) = compaction {
            c.finish(SHUTDOWN_GRACE).await;
        }
        for task in shipping.into_iter().flatten() {
            let _ = task.await;
        }
        Ok(())
    }
}

/// Every interval, a snapshot (shared with the scrapes arriving meanwhile) encoded once
/// for every remote write target.
async fn collect_for_remote_write(
    shipper: Arc<Shipper>,
    app: Arc<App>,
    filter: PrefixFilter,
    mut stop: watch::Receiver<bool>,
) {
    let filter = Arc::new(filter);
    let mut ticks = tokio::time::interval(shipper.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|&s| s) => return,
        }
        let entry = match app.scraper.entry(Instant::now()).await {
            Ok(e) => e,
            Err(e) => {
                log::warn!("remote write: no snapshot: {e}");
                continue;
            }
        };
        let at = std::time::SystemTime::now();
        let shipper = Arc::clone(&shipper);
        let filter = Arc::clone(&filter);
        let encoded = tokio::task::spawn_blocking(move || {
            let families = entry
                .scrape
                .snapshot
                .families
                .iter()
                .filter(|f| filter.keeps(&f.name));
            shipper.enqueue(families, at);
        })
        .await;
        if let Err(e) = encoded {
            log::error!("remote write: encoding failed: {e}");
        }
    }
}

/// Failed accepts: aborted handshakes are routine; anything else (such as running out of
/// file descriptors) is logged and slows the loop down instead of spinning.
async fn accept_failed(e: &io::Error) {
    match e.kind() {
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset => {}
        _ => {
            log::warn!("accepting a connection: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Per-connection bounds.
#[derive(Clone, Copy)]
struct ConnectionLimits {
    write_timeout: Duration,
    max_requests: u64,
}

/// What a connection's stream needs to report progress and give up on a stalled write.
struct GuardIo {
    progress: Arc<Progress>,
    epoch: Instant,
    limits: ConnectionLimits,
}

async fn serve_connection(
    stream: TcpStream,
    app: Arc<App>,
    stop: watch::Receiver<bool>,
    guard: GuardIo,
    tls: Option<Arc<Tls>>,
) {
    let _ = stream.set_nodelay(true);
    let metrics = Arc::clone(&app.metrics);
    let stream = GuardedIo::new(
        stream,
        guard.progress,
        guard.epoch,
        guard.limits.write_timeout,
        Arc::new(move || metrics.count_closed(Closed::WriteTimeout)),
    );
    let max_requests = guard.limits.max_requests;
    let Some(tls) = tls else {
        return serve_http(stream, app, stop, max_requests).await;
    };
    let (config, reload) = tls.config();
    match reload {
        Reload::None => {}
        Reload::Reloaded => app.metrics.count_tls(TlsEvent::Reloaded),
        Reload::Failed => app.metrics.count_tls(TlsEvent::ReloadFailed),
    }
    let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
    match tokio::time::timeout(HEADER_READ_TIMEOUT, accept).await {
        Ok(Ok(stream)) => serve_http(stream, app, stop, max_requests).await,
        Ok(Err(e)) => {
            log::debug!("TLS handshake: {e}");
            app.metrics.count_tls(TlsEvent::HandshakeFailed);
        }
        Err(_) => {
            log::debug!("TLS handshake: none within {HEADER_READ_TIMEOUT:?}");
            app.metrics.count_tls(TlsEvent::HandshakeFailed);
        }
    }
}

/// Serves HTTP/1.1 on a connection (plain or TLS) until it closes or the server stops.
async fn serve_http<S>(stream: S, app: Arc<App>, mut stop: watch::Receiver<bool>, max_requests: u64)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let served = Arc::new(shmetrics_layout::sync::AtomicU64::new(0));
    let service = service_fn(move |req| {
        let app = Arc::clone(&app);
        let served = Arc::clone(&served);
        async move {
            let mut resp = app.handle(req).await;
            // SYNC POINT server-counter: relaxed; one connection's own count.
            let n = served.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if n == max_requests {
                // The last answer on this connection: hyper closes it once it is written.
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                app.metrics.count_closed(Closed::RequestCap);
            }
            Ok::<_, Infallible>(resp)
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                log::debug!("HTTP connection: {e}");
            }
            return;
        }
        _ = stop.wait_for(|&stopping| stopping) => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        log::debug!("HTTP connection during shutdown: {e}");
    }
}

type HttpResponse = Response<ResponseBody>;

fn response(status: StatusCode, content_type: &'static str, body: ResponseBody) -> HttpResponse {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> HttpResponse {
    response(
        status,
        "text/plain; charset=utf-8",
        ResponseBody::whole(body),
    )
}

fn method_not_allowed() -> HttpResponse {
    let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    resp
}

/// All values of header `name` joined by commas (as a list header means), skipping values
/// that are not visible ASCII; `None` when absent.
fn header_str(req: &Request<Incoming>, name: header::HeaderName) -> Option<String> {
    let values: Vec<&str> = req
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// The `/health` body, as JSON: the directory now ([`shmetrics_reader::census`]: one
/// listing and one lock probe per segment, nothing parsed), and what the latest scrape
/// found.
#[derive(Debug, serde::Serialize)]
#[non_exhaustive]
pub struct Health {
    /// `ok`; `unreadable` when the directory has segment or `.db` files and this user can
    /// read none of them (the worker runs as another user than the writers); `error` when
    /// the directory cannot be listed (gone, not a directory, no permission). Only `ok` is
    /// answered with 200; the others with 503.
    pub status: HealthStatus,
    /// Segments whose writer process is alive now.
    pub live_segments: usize,
    /// Segments of exited writers (merged until compacted into the archive).
    pub dead_segments: usize,
    /// Whether the directory has an archive of compacted segments.
    pub archive: bool,
    /// `prometheus_client` `.db` files.
    pub db_files: usize,
    /// Processes named by `.db` files that exist now (prometheus_client writers).
    pub db_writers: usize,
    /// Segment and `.db` files this user cannot read (another user's, or refused by their
    /// permissions): never merged.
    pub unreadable_files: usize,
    /// Other entries (files that are not metrics, links, directories): ignored.
    pub other_entries: usize,
    /// What the latest `/metrics` snapshot found; `null` before the first.
    pub last_scrape: Option<HealthLastScrape>,
    /// Why the status is `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The verdict of `/health`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum HealthStatus {
    /// The directory is readable (200).
    Ok,
    /// It has segment or `.db` files and this user can read none of them (503).
    Unreadable,
    /// It cannot be listed (503).
    Error,
}

/// The latest snapshot, as `/health` reports it.
#[derive(Debug, serde::Serialize)]
#[non_exhaustive]
pub struct HealthLastScrape {
    /// Seconds since it was taken.
    pub age_seconds: f64,
    /// Merged series it exposed.
    pub series: usize,
    /// Segments it skipped for an invalid header.
    pub bad_segments: usize,
}

impl Health {
    /// The health of `census` (or of the error listing the directory) and of the latest
    /// scrape.
    fn of(
        census: Result<shmetrics_reader::Census, shmetrics_reader::ReaderError>,
        last: Option<cache::LastScrape>,
    ) -> Self {
        let last_scrape = last.map(|l| HealthLastScrape {
            age_seconds: (l.finished.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            series: l.series,
            bad_segments: l.bad_segments,
        });
        match census {
            Ok(c) => Self {
                status: if c.readable() == 0 && c.unreadable > 0 {
                    HealthStatus::Unreadable
                } else {
                    HealthStatus::Ok
                },
                live_segments: c.live_segments,
                dead_segments: c.dead_segments,
                archive: c.archives > 0,
                db_files: c.db_files,
                db_writers: c.db_writers,
                unreadable_files: c.unreadable,
                other_entries: c.other_entries,
                last_scrape,
                error: None,
            },
            Err(e) => Self {
                status: HealthStatus::Error,
                live_segments: 0,
                dead_segments: 0,
                archive: false,
                db_files: 0,
                db_writers: 0,
                unreadable_files: 0,
                other_entries: 0,
                last_scrape,
                error: Some(e.to_string()),
            },
        }
    }
}

/// What the connections share.
struct App {
    scraper: Scraper,
    metrics: Arc<ServerMetrics>,
    /// The format forced on every response, if any.
    format: Option<Format>,
    /// The open connections (the accept loop adds and removes them).
    open: Arc<std::sync::Mutex<Open>>,
    /// When the server started: connections' progress is counted from it.
    epoch: Instant,
    /// See [`ServerOptions::max_body_bytes`].
    max_body_bytes: u64,
    /// The metrics directory, for `/health`'s census.
    dir: PathBuf,
    /// The web configuration's checks and headers.
    gate: Gate,
}

fn lock(open: &std::sync::Mutex<Open>) -> std::sync::MutexGuard<'_, Open> {
    open.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl App {
    async fn handle(&self, req: Request<Incoming>) -> HttpResponse {
        let requested = Instant::now();
        let path = match req.uri().path() {
            "/metrics" => "/metrics",
            "/health" => "/health",
            _ => "other",
        };
        let mut resp = match self.gate.admit(&req).await {
            Err(why) => {
                self.metrics.count_refused(why);
                let (status, message, extra) = Gate::refusal(why);
                let mut resp = text(status, message);
                if let Some((name, value)) = extra {
                    resp.headers_mut().insert(name, value);
                }
                resp
            }
            Ok(()) => match path {
                "/metrics" => self.metrics_endpoint(&req, requested).await,
                "/health" => self.health_endpoint(&req).await,
                _ => text(StatusCode::NOT_FOUND, "not found\n"),
            },
        };
        self.gate.decorate(resp.headers_mut());
        self.metrics.count_request(path, resp.status().as_u16());
        resp
    }

    async fn metrics_endpoint(&self, req: &Request<Incoming>, requested: Instant) -> HttpResponse {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return method_not_allowed();
        }
        let choice = match self.format {
            Some(format) => negotiate::Choice {
                format,
                escaping: None,
            },
            None => negotiate::negotiate(header_str(req, header::ACCEPT).as_deref()),
        };
        let gzip = negotiate::gzip(header_str(req, header::ACCEPT_ENCODING).as_deref());
        let entry = match self.scraper.entry(requested).await {
            Ok(e) => e,
            Err(e) => return internal_error(&e),
        };
        if let Some(e) = &entry.scrape.report.dir_error {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read metrics directory {e}\n"),
            );
        }
        let body = match self
            .scraper
            .body(&entry, choice.format, choice.escaping(), gzip)
            .await
        {
            Ok(b) => b,
            Err(BodyError::TooLarge { limit, at_least }) => {
                log::error!(
                    "scrape refused: the exposition passes the scrape limit of {limit} bytes"
                );
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "the exposition is larger than the scrape limit of {limit} bytes (at \
                         least {at_least}); raise --max-scrape-mib or keep fewer families \
                         with --prefix\n"
                    ),
                );
            }
            Err(BodyError::Failed(e)) if e.kind() == io::ErrorKind::OutOfMemory => {
                log::error!("scrape failed: {e}");
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("scrape failed, out of memory: {e}; the next scrape tries again\n"),
                );
            }
            Err(BodyError::Failed(e)) => return internal_error(&e),
        };
        // SYNC POINT server-counter: relaxed; a memory bound's input.
        if self
            .metrics
            .body_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
            > self.max_body_bytes
        {
            // Clients that stopped reading hold bodies: let them go.
            let evicted = lock(&self.open).evict_all_stalled(self.epoch);
            for _ in 0..evicted {
                self.metrics.count_closed(Closed::Evicted);
            }
        }
        // For HEAD, hyper sends the headers (Content-Length included) and not the body.
        let mut resp = Response::new(body);
        if let Ok(content_type) = HeaderValue::from_str(&choice.content_type()) {
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, content_type);
        }
        let headers = resp.headers_mut();
        // A forced format does not depend on `Accept`.
        let vary = if self.format.is_some() {
            "Accept-Encoding"
        } else {
            "Accept, Accept-Encoding"
        };
        headers.insert(header::VARY, HeaderValue::from_static(vary));
        if gzip {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        resp
    }

    async fn health_endpoint(&self, req: &Request<Incoming>) -> HttpResponse {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return method_not_allowed();
        }
        let dir = self.dir.clone();
        let census = match tokio::task::spawn_blocking(move || shmetrics_reader::census(&dir)).await
        {
            Ok(census) => census,
            Err(e) => return internal_error(&io::Error::other(e)),
        };
        let health = Health::of(census, self.scraper.last_scrape());
        let status = if health.status == HealthStatus::Ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        match serde_json::to_vec(&health) {
            Ok(mut body) => {
                body.push(b'\n');
                response(status, "application/json", ResponseBody::whole(body))
            }
            Err(e) => internal_error(&io::Error::other(e)),
        }
    }
}

fn internal_error(e: &io::Error) -> HttpResponse {
    log::error!("scrape failed: {e}");
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("scrape failed: {e}\n"),
    )
}

/// Termination signals, installed up front so that none is lost between installation and
/// the first wait.
#[derive(Debug)]
pub struct Signals {
    streams: Vec<(i32, Signal)>,
}

impl Signals {
    /// Catches SIGINT and SIGTERM from now on. Must be called in a Tokio runtime.
    ///
    /// # Errors
    /// When a handler cannot be installed.
    pub fn new() -> io::Result<Self> {
        Self::with(&[SignalKind::interrupt(), SignalKind::terminate()])
    }

    /// Catches the given signals from now on.
    pub fn with(kinds: &[SignalKind]) -> io::Result<Self> {
        let streams = kinds
            .iter()
            .map(|&k| Ok((k.as_raw_value(), signal(k)?)))
            .collect::<io::Result<_>>()?;
        Ok(Self { streams })
    }

    /// Waits for the next caught signal and returns its number.
    pub async fn recv(&mut self) -> i32 {
        std::future::poll_fn(|cx| {
            for (number, stream) in &mut self.streams {
                if stream.poll_recv(cx).is_ready() {
                    return Poll::Ready(*number);
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// Completes on the first SIGINT or SIGTERM received after it is first polled (use
/// [`Signals`] to catch signals from an earlier point). If the handlers cannot be
/// installed, logs it and never completes.
pub async fn shutdown_signal() {
    match Signals::new() {
        Ok(mut signals) => {
            signals.recv().await;
        }
        Err(e) => {
            log::error!("cannot catch SIGINT and SIGTERM: {e}");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn listen_address_from_dyn_system_port() {
        let default = SocketAddr::from(([0, 0, 0, 0], 8081));
        assert_eq!(listen_for_port_env(None).unwrap(), default);
        assert_eq!(listen_for_port_env(Some(OsStr::new(""))).unwrap(), default);
        assert_eq!(
            listen_for_port_env(Some(OsStr::new("9090"))).unwrap(),
            SocketAddr::from(([0, 0, 0, 0], 9090))
        );
        assert_eq!(
            listen_for_port_env(Some(OsStr::new("0"))).unwrap(),
            SocketAddr::from(([0, 0, 0, 0], 0))
        );
        for bad in ["http", "65536", "-1", " 80", "80x"] {
            let e = listen_for_port_env(Some(OsStr::new(bad))).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            assert_eq!(
                e.to_string(),
                format!("DYN_SYSTEM_PORT={bad} is not a port number (0-65535)")
            );
        }
    }
}
