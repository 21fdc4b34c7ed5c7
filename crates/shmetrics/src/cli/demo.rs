//! `shmetrics demo`: simulated vLLM engine processes writing the complete vLLM metric set,
//! and a `/metrics` endpoint serving them beside a few `dynamo_*` metrics of the serving
//! process, as an NVIDIA Dynamo worker would.
//!
//! The demo owns a private temporary directory. It starts N engine processes (this program
//! re-executed with the hidden `demo-engine` subcommand); each registers every metric of
//! `workloads/vllm_metrics.json` with its real labels, buckets and gauge modes and runs the
//! request-level engine model of `shmetrics_workload::engine` in real time: Poisson
//! arrivals at `--rate` requests per second, a queue, a batch of up to 256 requests with
//! chunked prefill, steps whose duration follows their work for an 8B model on one GPU.
//! With `--lmcache`, each engine also writes LMCache's 94 `lmcache:` families every 10 s,
//! as a vLLM worker with LMCache does. The serving process writes `dynamo_component_*`
//! metrics into the same directory and serves `vllm:`, `lmcache:` and `dynamo_` families.
//! On Ctrl-C or SIGTERM (or after `--duration`) it stops the server, stops the engines and
//! removes the directory: nothing is left behind.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shmetrics::server::{Server, ServerOptions, Signals};
use shmetrics_reader::Reader;
use shmetrics_reader::snapshot::{Snapshot, Value};
use shmetrics_workload::engine::EngineConfig;
use shmetrics_workload::lmcache::LmcacheWorkload;
use shmetrics_workload::{
    DYNAMO_METRICS_JSON, LMCACHE_METRICS_JSON, MetricSet, ProcessContext, Rng, VllmWorkload,
};
use shmetrics_writer::{Counter, Gauge, GaugeMode, Histogram, Registry};

use super::error::CliError;
use super::http::parse_listen;
use super::output::{err_line, out_line};

/// Arguments of `demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Simulated engine processes to start.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) engines: u32,
    /// Address to listen on: IP:PORT, HOST:PORT, or a PORT on all interfaces; port 0 picks a free one.
    /// Default: 0.0.0.0:8081, or 0.0.0.0:$DYN_SYSTEM_PORT when DYN_SYSTEM_PORT is set.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub(crate) listen: Option<SocketAddr>,
    /// Stop by itself after this many seconds (default: run until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "SECS")]
    pub(crate) duration: Option<u64>,
    /// Requests per second arriving at each engine (a Poisson process); one engine saturates
    /// near 20.
    #[arg(long, value_name = "RPS", default_value_t = 10.0, value_parser = parse_rate)]
    pub(crate) rate: f64,
    /// Also write LMCache's `lmcache:` metrics from every engine, as vLLM workers with
    /// LMCache enabled do.
    #[arg(long)]
    pub(crate) lmcache: bool,
}

/// The model the demo engines serve: the engine model's figures are those of an 8B model.
pub(crate) const DEMO_MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";

/// Parses `--rate`: a number of requests per second from 0.01 to 1000.
fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of requests per second"))?;
    if (0.01..=1000.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!(
            "{s} is out of range: from 0.01 to 1000 requests per second"
        ))
    }
}

/// Arguments of the hidden `demo-engine` subcommand.
#[derive(Debug, Args)]
pub(crate) struct DemoEngineArgs {
    /// The demo's metrics directory.
    #[arg(long)]
    pub(crate) dir: PathBuf,
    /// Engine index (the `engine` label).
    #[arg(long)]
    pub(crate) index: u32,
    /// Requests per second.
    #[arg(long)]
    pub(crate) rate: f64,
    /// Write LMCache's metrics too.
    #[arg(long)]
    pub(crate) lmcache: bool,
    /// Pid of the demo, to exit if it is already gone.
    #[arg(long)]
    pub(crate) parent: u32,
}

/// Families the demo serves, as a Dynamo worker does.
pub(crate) const DEMO_PREFIXES: [&str; 3] = ["vllm:", "lmcache:", "dynamo_"];

/// A private directory removed on drop.
struct DemoDir(PathBuf);

/// Name prefix of the demo's directories: `shmetrics-demo-<pid>-<nanos>`.
const DEMO_DIR_PREFIX: &str = "shmetrics-demo-";

/// Removes the directories under `base` that demos of this user left when they were killed
/// (SIGKILL, a crash): those whose pid is not a running process. Returns how many.
fn remove_stale_demo_dirs(base: &Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    let euid = nix::unistd::geteuid().as_raw();
    let Ok(entries) = std::fs::read_dir(base) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DEMO_DIR_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
            .filter(|&pid| pid > 0)
        else {
            continue;
        };
        // Ours (not followed if a link), and its demo gone: no process has its pid.
        let ours =
            std::fs::symlink_metadata(entry.path()).is_ok_and(|m| m.is_dir() && m.uid() == euid);
        let gone = kill(Pid::from_raw(pid), None) == Err(nix::errno::Errno::ESRCH);
        if ours && gone {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    removed += 1;
                    log::info!(
                        "demo: removed {}, left by a demo that was killed",
                        entry.path().display()
                    );
                }
                Err(e) => log::warn!("demo: cannot remove stale {}: {e}", entry.path().display()),
            }
        }
    }
    removed
}

impl DemoDir {
    fn create() -> std::io::Result<Self> {
        remove_stale_demo_dirs(&std::env::temp_dir());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "{DEMO_DIR_PREFIX}{}-{nanos:08x}",
            std::process::id()
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Self(path))
    }
}

impl Drop for DemoDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            err_line(format_args!(
                "shmetrics demo: cannot remove {}: {e}",
                self.0.display()
            ));
        }
    }
}

/// The engine processes, stopped (SIGTERM, then SIGKILL after a grace period) on drop.
struct Engines(Vec<Child>);

impl Engines {
    fn start(dir: &Path, count: u32, rate: f64, lmcache: bool) -> Result<Self, CliError> {
        let exe = std::env::current_exe()
            .map_err(|e| CliError::new(format!("demo: cannot find this program: {e}")))?;
        let mut engines = Self(Vec::new());
        for index in 0..count {
            let child = Command::new(&exe)
                .arg("demo-engine")
                .arg("--dir")
                .arg(dir)
                .arg("--index")
                .arg(index.to_string())
                .arg("--rate")
                .arg(rate.to_string())
                .args(lmcache.then_some("--lmcache"))
                .arg("--parent")
                .arg(std::process::id().to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .map_err(|e| CliError::new(format!("demo: cannot start engine {index}: {e}")))?;
            engines.0.push(child);
        }
        Ok(engines)
    }

    /// Engines still running.
    fn running(&mut self) -> usize {
        self.0
            .iter_mut()
            .filter_map(|c| c.try_wait().ok())
            .filter(Option::is_none)
            .count()
    }
}

impl Drop for Engines {
    fn drop(&mut self) {
        for child in &self.0 {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for child in &mut self.0 {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The serving process's own `dynamo_component_*` metrics, driven by what the engines do.
struct DynamoMetrics {
    requests: Counter,
    request_bytes: Counter,
    response_bytes: Counter,
    duration: Histogram,
    inflight: Gauge,
    uptime: Gauge,
    started: Instant,
    seen_requests: f64,
    rng: Rng,
}

impl DynamoMetrics {
    fn register(registry: &Registry, model: &str) -> Result<Self, CliError> {
        let set = MetricSet::parse(DYNAMO_METRICS_JSON)
            .map_err(|e| CliError::new(format!("demo: dynamo metric set: {e}")))?;
        let spec = |name: &str| {
            set.metrics
                .iter()
                .find(|m| m.name == name)
                .ok_or_else(|| CliError::new(format!("demo: {name} missing from the Dynamo set")))
        };
        let err = |e: shmetrics_writer::Error| CliError::new(format!("demo: {e}"));
        let values = ["dynamo", "backend", "generate", model];
        let labels = |name: &str| -> Result<Vec<String>, CliError> {
            Ok(spec(name)?.labels.clone().unwrap_or_default())
        };
        let counter = |name: &str| -> Result<Counter, CliError> {
            let names = labels(name)?;
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let family = registry
                .counter(name, &spec(name)?.help, &names)
                .map_err(err)?;
            family.labels(&values[..names.len()]).cloned().map_err(err)
        };
        let gauge = |name: &str| -> Result<Gauge, CliError> {
            let names = labels(name)?;
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let family = registry
                .gauge(name, &spec(name)?.help, &names, GaugeMode::LiveSum)
                .map_err(err)?;
            family.labels(&values[..names.len()]).cloned().map_err(err)
        };
        let duration_name = "dynamo_component_request_duration_seconds";
        let names = labels(duration_name)?;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let bounds = spec(duration_name)?
            .buckets
            .as_ref()
            .and_then(|b| b.bounds())
            .unwrap_or_default();
        let duration = registry
            .histogram(duration_name, &spec(duration_name)?.help, &names, &bounds)
            .map_err(err)?
            .labels(&values[..names.len()])
            .cloned()
            .map_err(err)?;
        Ok(Self {
            requests: counter("dynamo_component_requests_total")?,
            request_bytes: counter("dynamo_component_request_bytes_total")?,
            response_bytes: counter("dynamo_component_response_bytes_total")?,
            duration,
            inflight: gauge("dynamo_component_inflight_requests")?,
            uptime: gauge("dynamo_component_uptime_seconds")?,
            started: Instant::now(),
            seen_requests: 0.0,
            rng: Rng::new(0xd1a0),
        })
    }

    /// Follows the engines: every request they finished went through this worker.
    fn update(&mut self, totals: &Totals) {
        let new = (totals.requests - self.seen_requests).max(0.0);
        self.seen_requests = totals.requests;
        self.requests.inc_by(new);
        for _ in 0..new as u64 {
            self.duration.observe(self.rng.log_uniform(0.05, 8.0));
            self.request_bytes
                .inc_by((200 + self.rng.below(8000)) as f64);
            self.response_bytes
                .inc_by((100 + self.rng.below(4000)) as f64);
        }
        self.inflight.set(totals.running);
        self.uptime.set(self.started.elapsed().as_secs_f64());
    }
}

/// What the live summary shows.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Totals {
    requests: f64,
    prompt_tokens: f64,
    generation_tokens: f64,
    running: f64,
    series: usize,
}

fn family_sum(snapshot: &Snapshot, name: &str) -> f64 {
    snapshot.family(name).map_or(0.0, |f| {
        f.series
            .iter()
            .map(|s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) => *v,
                Value::Histogram { buckets, .. } => buckets.iter().sum::<u64>() as f64,
                Value::Summary { count, .. } => *count as f64,
                Value::Info | Value::State { .. } => 0.0,
            })
            .sum()
    })
}

fn totals(snapshot: &Snapshot) -> Totals {
    Totals {
        requests: family_sum(snapshot, "vllm:request_success"),
        prompt_tokens: family_sum(snapshot, "vllm:prompt_tokens"),
        generation_tokens: family_sum(snapshot, "vllm:generation_tokens"),
        running: family_sum(snapshot, "vllm:num_requests_running"),
        series: snapshot.series_count(),
    }
}

fn human(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.2}G", v / 1e9),
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e4 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

/// Where the server listens, in words: a wildcard address is every interface.
fn listening(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!(
            "listening on {addr}: every interface, as a Dynamo worker does (--listen 127.0.0.1:{} keeps it on this machine)",
            addr.port()
        )
    } else {
        format!("listening on {addr}")
    }
}

/// The URL to print: a wildcard address is reachable on loopback.
fn url(addr: SocketAddr) -> String {
    let host = match addr.ip() {
        ip if ip.is_unspecified() && addr.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        ip if addr.is_ipv6() => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{host}:{}/metrics", addr.port())
}

/// Runs the demo until a signal or the end of `--duration`.
///
/// # Errors
/// When the directory, an engine, the server or the runtime cannot be set up.
pub(crate) fn run(args: &DemoArgs) -> Result<(), CliError> {
    let listen = match args.listen {
        Some(addr) => addr,
        None => shmetrics::server::default_listen()
            .map_err(|e| CliError::with_code(2, format!("demo: {e}")))?,
    };
    let dir = DemoDir::create()
        .map_err(|e| CliError::new(format!("demo: cannot create a metrics directory: {e}")))?;
    let registry = Registry::open(&dir.0).map_err(|e| CliError::new(format!("demo: {e}")))?;
    let model = DEMO_MODEL;
    let mut dynamo = DynamoMetrics::register(&registry, model)?;
    let mut server_options = ServerOptions::new(&dir.0, listen);
    server_options.prefixes = DEMO_PREFIXES.iter().map(|p| (*p).to_owned()).collect();
    let server =
        Server::bind(server_options).map_err(|e| CliError::with_code(2, format!("demo: {e}")))?;
    let address = server.local_addr();
    let mut engines = Engines::start(&dir.0, args.engines, args.rate, args.lmcache)?;
    let mut reader = Reader::open(&dir.0).map_err(|e| CliError::new(format!("demo: {e}")))?;

    // What the demo prints is for the person watching: a stdout that is gone (`| head`)
    // loses the lines, and the demo goes on serving.
    let _ = out_line(format_args!(
        "shmetrics demo: {} simulated vLLM engines ({model}, {} requests/s each{}) writing to {}",
        args.engines,
        args.rate,
        if args.lmcache { ", with LMCache" } else { "" },
        dir.0.display()
    ));
    let _ = out_line(format_args!(
        "serving {} ({})  Ctrl-C to stop",
        url(address),
        listening(address)
    ));
    let _ = out_line(format_args!(
        "try: curl -s {} | grep -E '^vllm:(num_requests_running|prompt_tokens_total)'",
        url(address)
    ));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("demo: cannot start the runtime: {e}")))?;
    let started = Instant::now();
    let duration = args.duration.map(Duration::from_secs);
    let tty = std::io::stdout().is_terminal();
    let engines_ref = &mut engines;
    let reader_ref = &mut reader;
    let dynamo_ref = &mut dynamo;
    let result = rt.block_on(async move {
        let mut signals = Signals::new()
            .map_err(|e| CliError::new(format!("demo: cannot catch signals: {e}")))?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server_task = tokio::spawn(server.run(async move {
            let _ = stop_rx.await;
        }));
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let stopped_by = loop {
            tokio::select! {
                signal = signals.recv() => break format!("signal {signal}"),
                _ = tick.tick() => {}
            }
            let t0 = Instant::now();
            let snapshot = reader_ref.snapshot();
            let scrape_ms = t0.elapsed().as_secs_f64() * 1e3;
            let now = totals(&snapshot.snapshot);
            dynamo_ref.update(&now);
            let live = engines_ref.running();
            let line = format!(
                "[{:>4}s] engines {live}/{} live | requests {} | prompt tokens {} | generation tokens {} | running {} | series {} | snapshot {scrape_ms:.2} ms",
                started.elapsed().as_secs(),
                args.engines,
                human(now.requests),
                human(now.prompt_tokens),
                human(now.generation_tokens),
                now.running,
                now.series,
            );
            if tty {
                let mut out = std::io::stdout().lock();
                let _ = write!(out, "\r{line}\x1b[K").and_then(|()| out.flush());
            } else if started.elapsed().as_secs().is_multiple_of(5) {
                let _ = out_line(format_args!("{line}"));
            }
            if duration.is_some_and(|d| started.elapsed() >= d) {
                break "the end of --duration".to_owned();
            }
        };
        if tty {
            let _ = out_line(format_args!(""));
        }
        let _ = stop_tx.send(());
        match server_task.await {
            Ok(Ok(())) => Ok(stopped_by),
            Ok(Err(e)) => Err(CliError::new(format!("demo: server: {e}"))),
            Err(e) => Err(CliError::new(format!("demo: server task: {e}"))),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    drop(engines);
    drop(registry);
    let path = dir.0.clone();
    drop(dir);
    let stopped_by = result?;
    let _ = out_line(format_args!(
        "stopped by {stopped_by}; engines stopped, {} removed",
        path.display()
    ));
    Ok(())
}

/// One engine process: registers the vLLM metric set (and LMCache's) as engine `index`
/// and runs the engine model in real time until SIGTERM (or until its parent, the demo, is
/// gone).
///
/// # Errors
/// When the registry or the metric set cannot be set up.
pub(crate) fn run_engine(args: &DemoEngineArgs) -> Result<(), CliError> {
    let DemoEngineArgs {
        ref dir,
        index,
        rate,
        lmcache,
        parent,
    } = *args;
    let err = |e: &dyn std::fmt::Display| CliError::new(format!("demo-engine: {e}"));
    // Die with the demo even if it is killed without a chance to stop us.
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(|e| err(&format!("prctl: {e}")))?;
    if nix::unistd::getppid().as_raw() as u32 != parent {
        return Ok(()); // The demo is already gone.
    }
    let registry = Registry::open(dir).map_err(|e| err(&e))?;
    let set = MetricSet::vllm().map_err(|e| err(&e))?;
    let ctx = ProcessContext {
        index,
        model_name: DEMO_MODEL.to_owned(),
    };
    let config = EngineConfig {
        arrival_rate: rate,
        external_cache: lmcache,
        ..EngineConfig::default()
    };
    let seed = 0x5eed ^ u64::from(index);
    let mut workload =
        VllmWorkload::register_with(&registry, &set, &ctx, config, seed).map_err(|e| err(&e))?;
    let mut lmcache = if lmcache {
        let set = MetricSet::parse(LMCACHE_METRICS_JSON).map_err(|e| err(&e))?;
        Some(LmcacheWorkload::register(&registry, &set, &ctx, seed).map_err(|e| err(&e))?)
    } else {
        None
    };
    // The model's clock runs in real time: after each step, wait until the wall clock
    // reaches the model's (a step late because the machine is busy is simply not waited
    // for, so the metrics stay those of the model).
    let started = Instant::now();
    loop {
        let report = workload.step();
        if let Some(l) = &mut lmcache {
            l.record(&report);
        }
        let due = Duration::from_secs_f64(workload.model().now());
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_says_where_it_listens() {
        let any: SocketAddr = "0.0.0.0:8081".parse().unwrap();
        assert_eq!(url(any), "http://127.0.0.1:8081/metrics");
        assert_eq!(
            listening(any),
            "listening on 0.0.0.0:8081: every interface, as a Dynamo worker does (--listen \
             127.0.0.1:8081 keeps it on this machine)"
        );
        let local: SocketAddr = "127.0.0.1:9400".parse().unwrap();
        assert_eq!(listening(local), "listening on 127.0.0.1:9400");
        let v6: SocketAddr = "[::1]:9400".parse().unwrap();
        assert_eq!(url(v6), "http://[::1]:9400/metrics");
    }
}
