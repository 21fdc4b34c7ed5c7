//! A multi-process Rust engine instrumented with the `metrics` macros, and an axum worker
//! serving the sum over every engine process on `/metrics`.
//!
//! ```sh
//! cargo run -p shmetrics-metrics --example engine_axum -- --engines 4 --port 9400
//! curl -s localhost:9400/metrics
//! ```
//!
//! The parent process is the worker: it creates the metrics directory (`--dir`, default a
//! fresh directory under the system temp dir), starts `--engines` engine processes (this
//! same binary with `--rank`), and serves `/metrics` with a shmetrics `Reader` over the
//! directory. Each engine installs a `ShmetricsRecorder` as its global `metrics` recorder,
//! serves `--requests` simulated requests through the macros and then idles until the
//! worker exits (its stdin closes). The worker prints `serving <url>` once listening and
//! `engines done` once every engine has served its requests; Ctrl-C (SIGINT) or SIGTERM stops
//! everything and removes the directory it created.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use shmetrics_metrics::{GaugeMode, ShmetricsRecorder};
use shmetrics_reader::{Format, PrefixFilter, Reader};

/// Command-line arguments.
struct Args {
    engines: usize,
    port: u16,
    dir: Option<PathBuf>,
    requests: usize,
    rank: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        engines: 2,
        port: 9400,
        dir: None,
        requests: 1000,
        rank: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--engines" => {
                args.engines = value()?.parse().map_err(|e| format!("--engines: {e}"))?
            }
            "--port" => args.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--dir" => args.dir = Some(value()?.into()),
            "--requests" => {
                args.requests = value()?.parse().map_err(|e| format!("--requests: {e}"))?;
            }
            "--rank" => args.rank = Some(value()?.parse().map_err(|e| format!("--rank: {e}"))?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    match (args.rank, &args.dir) {
        (Some(rank), Some(dir)) => engine(rank, dir, args.requests),
        (Some(_), None) => Err("--rank needs --dir".into()),
        (None, _) => worker(&args),
    }
}

/// One engine process: the instrumentation a Rust engine would have.
fn engine(rank: usize, dir: &Path, requests: usize) -> Result<(), Box<dyn std::error::Error>> {
    let recorder = ShmetricsRecorder::builder()
        .buckets_for_prefix("engine_request_", &[0.005, 0.01, 0.05, 0.1, 0.5, 1.0])
        .gauge_mode_for_metric("engine_info", GaugeMode::MostRecent)
        .open(dir)?;
    recorder.install()?;
    // Descriptions first: the help text is fixed at a metric's first use.
    describe_counter!("engine_requests_total", "Requests served.");
    describe_counter!("engine_generated_tokens_total", "Tokens generated.");
    describe_histogram!(
        "engine_request_latency_seconds",
        Unit::Seconds,
        "End-to-end request latency."
    );
    describe_gauge!("engine_requests_running", "Requests running.");
    describe_gauge!("engine_info", "Engine build information.");

    gauge!("engine_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let running = gauge!("engine_requests_running");
    let tokens = counter!("engine_generated_tokens_total");
    for i in 0..requests {
        running.increment(1.0);
        let model = if i % 2 == 0 { "llama" } else { "qwen" };
        counter!("engine_requests_total", "model" => model).increment(1);
        tokens.increment((16 + i % 16) as u64);
        // A deterministic "latency" per request: 1 ms to 64 ms.
        histogram!("engine_request_latency_seconds", "model" => model)
            .record(((i % 64) + 1) as f64 / 1000.0);
        running.decrement(1.0);
    }
    println!("engine {rank} done");
    std::io::stdout().flush()?;
    // Idle until the worker goes away (it holds our stdin).
    std::io::stdin().read_to_end(&mut Vec::new())?;
    Ok(())
}

/// The worker: starts the engines and serves `/metrics`.
fn worker(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let (dir, owned) = match &args.dir {
        Some(dir) => (dir.clone(), false),
        None => {
            let dir = std::env::temp_dir().join(format!("shmetrics-engine-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            (dir, true)
        }
    };
    let exe = std::env::current_exe()?;
    let mut engines: Vec<Child> = (0..args.engines)
        .map(|rank| {
            Command::new(&exe)
                .args([
                    "--rank",
                    &rank.to_string(),
                    "--requests",
                    &args.requests.to_string(),
                ])
                .arg("--dir")
                .arg(&dir)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let outputs: Vec<_> = engines.iter_mut().filter_map(|c| c.stdout.take()).collect();

    let reader = Arc::new(Mutex::new(Reader::open(&dir)?));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let served = runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
        let url = format!("http://{}/metrics", listener.local_addr()?);
        println!("serving {url}");
        std::io::stdout().flush()?;
        // Report once every engine has served its requests.
        std::thread::spawn(move || {
            for out in outputs {
                let mut line = String::new();
                if BufReader::new(out).read_line(&mut line).is_err() || line.is_empty() {
                    eprintln!("an engine exited before finishing");
                    return;
                }
            }
            println!("engines done");
            let _ = std::io::stdout().flush();
        });
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let reader = Arc::clone(&reader);
                async move { scrape(&reader) }
            }),
        );
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    });
    // Closing the engines' stdin lets them exit.
    for engine in &mut engines {
        drop(engine.stdin.take());
        engine.wait()?;
    }
    if owned {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(served?)
}

/// Catches SIGINT and SIGTERM (a service manager or `kill` stops the worker with SIGTERM)
/// from now on; the future resolves at the first of them, and the worker then shuts down
/// and cleans up. Installed before the worker says it serves, so no signal is missed.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// One scrape: the merged directory as Prometheus text.
fn scrape(reader: &Mutex<Reader>) -> impl IntoResponse + use<> {
    let mut body = Vec::new();
    let mut reader = reader
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Writing into a Vec cannot fail.
    let _report = reader.scrape(
        Format::Prometheus,
        &PrefixFilter::default(),
        true,
        &mut body,
    );
    ([(CONTENT_TYPE, Format::Prometheus.content_type())], body)
}
