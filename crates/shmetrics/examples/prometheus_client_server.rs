//! A server built on the official `prometheus-client` crate that exposes the engines'
//! metrics directory beside its own metrics, each family once.
//!
//! ```sh
//! PROMETHEUS_MULTIPROC_DIR=/tmp/metrics cargo run -p shmetrics --example prometheus_client_server -- \
//!     --port 9401 --prefix vllm: --prefix lmcache:
//! curl -s localhost:9401/metrics                                   # OpenMetrics
//! curl -s -H 'Accept: text/plain' localhost:9401/metrics           # Prometheus text
//! ```
//!
//! `--demo` first writes a few `vllm:` families into the directory from this process (as
//! an engine would), so the example shows something without an engine running. The server
//! counts its own scrapes in `server_scrapes` and keeps its own
//! `vllm:num_requests_running` gauge, which wins over the engines' family of that name (the
//! clash is logged once and counted in `shmetrics_collector_clashes`). It prints
//! `serving <url>` once listening; it serves until killed.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use shmetrics::prometheus_client_collector::{DirCollector, encode_with_host};
use shmetrics::{Format, PrefixFilter};
use shmetrics_writer::GaugeMode;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut port = 9401u16;
    let mut dir = std::env::var_os(shmetrics_writer::DIR_ENV).map(PathBuf::from);
    let mut prefixes = Vec::new();
    let mut demo = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--port" => port = args.next().ok_or("--port needs a value")?.parse()?,
            "--dir" => dir = Some(args.next().ok_or("--dir needs a value")?.into()),
            "--prefix" => prefixes.push(args.next().ok_or("--prefix needs a value")?),
            "--demo" => demo = true,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let dir = dir.ok_or("set PROMETHEUS_MULTIPROC_DIR or pass --dir")?;

    // Kept alive while serving: its segment stays live.
    let _engine = if demo { Some(demo_engine(&dir)?) } else { None };

    let mut host = Registry::default();
    let scrapes = Counter::<u64>::default();
    host.register("server_scrapes", "Scrapes served", scrapes.clone());
    let running = Gauge::<i64>::default();
    host.register(
        "vllm:num_requests_running",
        "Requests running, as the server counts them",
        running.clone(),
    );
    let engines = DirCollector::open(&dir, PrefixFilter::new(prefixes))?;

    let listener = TcpListener::bind(("127.0.0.1", port))?;
    println!("serving http://{}/metrics", listener.local_addr()?);
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let stream = stream?;
        scrapes.inc();
        if let Err(e) = respond(stream, &host, &engines) {
            eprintln!("request failed: {e}");
        }
    }
    Ok(())
}

/// Answers one HTTP/1.1 request: `GET /metrics`, in OpenMetrics unless the client accepts
/// only the Prometheus text format.
fn respond(stream: TcpStream, host: &Registry, engines: &DirCollector) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut openmetrics = true;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        let header = header.to_ascii_lowercase();
        if let Some(accept) = header.strip_prefix("accept:") {
            openmetrics = accept.contains("application/openmetrics-text");
        }
    }
    let mut stream = stream;
    if !request_line.starts_with("GET /metrics ") {
        return stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let format = if openmetrics {
        Format::OpenMetrics
    } else {
        Format::Prometheus
    };
    let mut body = String::new();
    encode_with_host(&mut body, host, engines, format).map_err(std::io::Error::other)?;
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        format.content_type(),
        body.len()
    )
}

/// What an engine process would write, from this process.
fn demo_engine(
    dir: &std::path::Path,
) -> Result<shmetrics_writer::Registry, shmetrics_writer::Error> {
    let registry = shmetrics_writer::Registry::open(dir)?;
    registry
        .counter(
            "vllm:prompt_tokens_total",
            "Number of prefill tokens processed.",
            &["model_name"],
        )?
        .labels(&["llama"])?
        .inc_by(512.0);
    registry
        .gauge(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            &[],
            GaugeMode::LiveSum,
        )?
        .unlabelled()?
        .set(3.0);
    let latency = registry.histogram(
        "vllm:e2e_request_latency_seconds",
        "Histogram of e2e request latency in seconds.",
        &["model_name"],
        &[0.25, 1.0, 4.0],
    )?;
    for v in [0.125, 0.5, 2.0] {
        latency.labels(&["llama"])?.observe(v);
    }
    Ok(registry)
}
