//! `scrape-client`: a minimal HTTP/1.1 load generator for `/metrics` endpoints.
//!
//! ```text
//! scrape-client URL [--count N] [--warmup W] [--accept HEADER] [--close]
//! ```
//!
//! It sends `GET` requests one after another (never two at once) over
//! [`std::net::TcpStream`] and times each from the moment the request is written to the
//! moment the last byte of the body is read. The body length comes from `Content-Length`;
//! a chunked body is decoded, and a body with neither is read to the end of the connection.
//! Every response must have status 200, or the run fails.
//!
//! Connections: one keep-alive connection is reused for every request, as Prometheus does.
//! When the server closes it (an HTTP/1.0 response, `Connection: close`, or a body delimited
//! by the end of the connection) or `--close` is given, the next request opens a new one.
//! Connecting is not part of the timed interval, so a server that closes after each response
//! (Python's `wsgiref`, which `prometheus_client.start_http_server` uses) is timed on the same
//! interval as one that keeps the connection open. `connections` in the result says how many
//! were opened.
//!
//! The first `--warmup` requests (default 5) are made and checked but not counted. The
//! result is one JSON line on stdout:
//! `{"url":..,"count":..,"warmup":..,"connections":..,"p50_ms":..,"p90_ms":..,"p99_ms":..,
//! "mean_ms":..,"min_ms":..,"max_ms":..,"body_bytes":..,"samples":..}`; percentiles are
//! nearest-rank over the counted requests; `body_bytes` and `samples` (lines that are
//! neither empty nor comments) describe the last body.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: scrape-client URL [--count N] [--warmup W] [--accept HEADER] [--close]
  URL          http://HOST:PORT/PATH (plain HTTP only)
  --count N    timed requests (default 200)
  --warmup W   untimed requests before them (default 5)
  --accept H   Accept header to send (default: none, which asks for the text format 0.0.4)
  --close      open a new connection for every request (default: keep-alive)";

/// Command-line options.
#[derive(Debug)]
struct Options {
    url: String,
    host: String,
    authority: String,
    path: String,
    count: usize,
    warmup: usize,
    accept: Option<String>,
    close: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut url = None;
    let mut count = 200usize;
    let mut warmup = 5usize;
    let mut accept = None;
    let mut close = false;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--count" => {
                count = value("--count")?
                    .parse()
                    .map_err(|e| format!("--count: {e}"))?;
            }
            "--warmup" => {
                warmup = value("--warmup")?
                    .parse()
                    .map_err(|e| format!("--warmup: {e}"))?;
            }
            "--accept" => accept = Some(value("--accept")?),
            "--close" => close = true,
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s if url.is_none() => url = Some(s.to_owned()),
            s => return Err(format!("unexpected argument {s}")),
        }
    }
    let url = url.ok_or("missing URL")?;
    if count == 0 {
        return Err("--count must be at least 1".into());
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("{url}: no host"));
    }
    let host = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok(Options {
        url: url.clone(),
        host,
        authority: authority.to_owned(),
        path: path.to_owned(),
        count,
        warmup,
        accept,
        close,
    })
}

/// One response, read fully.
#[derive(Debug)]
struct Response {
    status: u16,
    body: Vec<u8>,
    /// The server will not take another request on this connection.
    closes: bool,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn read_line(reader: &mut impl BufRead, line: &mut String) -> io::Result<()> {
    line.clear();
    if reader.read_line(line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before the response was complete",
        ));
    }
    Ok(())
}

/// Reads one response (status line, headers, body) from `reader`.
fn read_response(reader: &mut impl BufRead) -> io::Result<Response> {
    let mut line = String::new();
    read_line(reader, &mut line)?;
    let mut parts = line.trim_end().splitn(3, ' ');
    let version = parts.next().unwrap_or_default().to_owned();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
    if !version.starts_with("HTTP/1.") {
        return Err(bad(format!("bad status line {line:?}")));
    }
    let mut closes = version == "HTTP/1.0";
    let mut length: Option<usize> = None;
    let mut chunked = false;
    loop {
        read_line(reader, &mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line {header:?}")))?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = Some(
                    value
                        .parse()
                        .map_err(|_| bad(format!("bad Content-Length {value:?}")))?,
                );
            }
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "connection" => {
                let v = value.to_ascii_lowercase();
                if v.contains("close") {
                    closes = true;
                } else if v.contains("keep-alive") {
                    closes = false;
                }
            }
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            read_line(reader, &mut line)?;
            let size_text = line.trim_end().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size_text.trim(), 16)
                .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    read_line(reader, &mut line)?;
                    if line.trim_end().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            read_line(reader, &mut line)?;
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        reader.read_exact(&mut body)?;
    } else {
        reader.read_to_end(&mut body)?;
        closes = true;
    }
    Ok(Response {
        status,
        body,
        closes,
    })
}

/// Lines of an exposition that are samples: neither empty nor comments.
fn count_samples(body: &[u8]) -> usize {
    body.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && l[0] != b'#')
        .count()
}

/// Nearest-rank percentile `p` (0–100) of sorted, non-empty `sorted`.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn connect(opts: &Options) -> io::Result<BufReader<TcpStream>> {
    let addr = opts
        .host
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| bad(format!("{}: no address", opts.host)))?;
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    Ok(BufReader::with_capacity(1 << 16, stream))
}

fn run(opts: &Options) -> io::Result<String> {
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: shmetrics-scrape-client\r\n",
        opts.path, opts.authority
    );
    if let Some(accept) = &opts.accept {
        request.push_str(&format!("Accept: {accept}\r\n"));
    }
    if opts.close {
        request.push_str("Connection: close\r\n");
    }
    request.push_str("\r\n");

    let mut conn: Option<BufReader<TcpStream>> = None;
    let mut connections = 0usize;
    let mut times = Vec::with_capacity(opts.count);
    let mut last_body = Vec::new();
    for i in 0..opts.warmup + opts.count {
        let reader = match &mut conn {
            Some(r) => r,
            None => {
                connections += 1;
                conn.insert(connect(opts)?)
            }
        };
        let start = Instant::now();
        reader.get_mut().write_all(request.as_bytes())?;
        let response = read_response(reader)?;
        let elapsed = start.elapsed();
        if response.status != 200 {
            return Err(io::Error::other(format!(
                "request {} got status {} ({} body bytes)",
                i + 1,
                response.status,
                response.body.len()
            )));
        }
        if i >= opts.warmup {
            times.push(elapsed);
        }
        if response.closes || opts.close {
            conn = None;
        }
        last_body = response.body;
    }
    times.sort_unstable();
    let total: Duration = times.iter().sum();
    let mean = total / u32::try_from(times.len()).unwrap_or(u32::MAX);
    Ok(format!(
        "{{\"url\":\"{}\",\"count\":{},\"warmup\":{},\"connections\":{},\"p50_ms\":{:.4},\"p90_ms\":{:.4},\"p99_ms\":{:.4},\"mean_ms\":{:.4},\"min_ms\":{:.4},\"max_ms\":{:.4},\"body_bytes\":{},\"samples\":{}}}",
        opts.url.replace('\\', "\\\\").replace('"', "\\\""),
        opts.count,
        opts.warmup,
        connections,
        ms(percentile(&times, 50.0)),
        ms(percentile(&times, 90.0)),
        ms(percentile(&times, 99.0)),
        ms(mean),
        ms(times[0]),
        ms(times[times.len() - 1]),
        last_body.len(),
        count_samples(&last_body),
    ))
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("scrape-client: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("scrape-client: {}: {e}", opts.url);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_content_length_keep_alive() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\na 1\n\nHTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        let mut r = &raw[..];
        let first = read_response(&mut r).unwrap();
        assert_eq!(first.status, 200);
        assert_eq!(first.body, b"a 1\n\n");
        assert!(!first.closes);
        let second = read_response(&mut r).unwrap();
        assert_eq!(second.status, 404);
        assert!(second.body.is_empty());
        assert!(r.is_empty());
    }

    #[test]
    fn reads_chunked_and_http10_close() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n# x\n\r\n3;ext=1\r\nb 2\r\n0\r\n\r\n";
        let mut r = &raw[..];
        let resp = read_response(&mut r).unwrap();
        assert_eq!(resp.body, b"# x\nb 2");
        assert!(!resp.closes);

        let raw = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let resp = read_response(&mut &raw[..]).unwrap();
        assert_eq!(resp.body, b"ok");
        assert!(resp.closes);

        let raw = b"HTTP/1.1 200 OK\r\n\r\nto the end";
        let resp = read_response(&mut &raw[..]).unwrap();
        assert_eq!(resp.body, b"to the end");
        assert!(resp.closes);

        let truncated = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort";
        assert!(read_response(&mut &truncated[..]).is_err());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=200).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(100));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(198));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(200));
        assert_eq!(percentile(&v[..1], 50.0), Duration::from_millis(1));
    }

    /// Serves `requests` requests on 127.0.0.1 with `response`, one connection per
    /// request when `one_per_connection`, else all on one; returns the URL.
    fn serve(
        requests: usize,
        one_per_connection: bool,
        response: &'static [u8],
    ) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/metrics", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while seen.len() < requests {
                let (stream, _) = listener.accept().unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut reader = BufReader::new(stream);
                loop {
                    let mut head = String::new();
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                        head.push_str(&line);
                        line.clear();
                    }
                    if head.is_empty() {
                        break;
                    }
                    seen.push(head);
                    reader.get_mut().write_all(response).unwrap();
                    if one_per_connection || seen.len() == requests {
                        break;
                    }
                }
            }
            seen
        });
        (url, handle)
    }

    fn options(url: &str, extra: &[&str]) -> Options {
        let args = [url, "--count", "4", "--warmup", "2"];
        parse_args(args.iter().chain(extra).map(|s| (*s).to_owned())).unwrap()
    }

    #[test]
    fn keep_alive_uses_one_connection() {
        let body = b"HTTP/1.1 200 OK\r\nContent-Length: 18\r\n\r\n# TYPE a gauge\na 1";
        let (url, server) = serve(6, false, body);
        let out = run(&options(
            &url,
            &["--accept", "application/openmetrics-text"],
        ))
        .unwrap();
        let requests = server.join().unwrap();
        assert_eq!(requests.len(), 6);
        assert!(requests[0].starts_with("GET /metrics HTTP/1.1\r\n"));
        assert!(requests[0].contains("\r\nAccept: application/openmetrics-text\r\n"));
        assert!(
            out.contains("\"count\":4,\"warmup\":2,\"connections\":1,"),
            "{out}"
        );
        assert!(out.ends_with("\"body_bytes\":18,\"samples\":1}"), "{out}");
    }

    #[test]
    fn reconnects_when_the_server_closes() {
        let body = b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\na 1\n";
        let (url, server) = serve(6, true, body);
        let out = run(&options(&url, &[])).unwrap();
        assert_eq!(server.join().unwrap().len(), 6);
        assert!(out.contains("\"connections\":6,"), "{out}");
        assert!(out.ends_with("\"body_bytes\":4,\"samples\":1}"), "{out}");
    }

    #[test]
    fn fails_on_a_status_other_than_200() {
        let body = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
        let (url, server) = serve(1, false, body);
        let err = run(&options(&url, &[])).unwrap_err();
        assert_eq!(err.to_string(), "request 1 got status 503 (0 body bytes)");
        assert_eq!(server.join().unwrap().len(), 1);
    }

    #[test]
    fn parses_urls_and_counts_samples() {
        let args = ["http://127.0.0.1:9/metrics", "--count", "3", "--close"];
        let o = parse_args(args.iter().map(|s| (*s).to_owned())).unwrap();
        assert_eq!(
            (o.host.as_str(), o.path.as_str(), o.count, o.close),
            ("127.0.0.1:9", "/metrics", 3, true)
        );
        let o = parse_args(["http://localhost".to_owned()].into_iter()).unwrap();
        assert_eq!((o.host.as_str(), o.path.as_str()), ("localhost:80", "/"));
        assert!(parse_args(["https://x/".to_owned()].into_iter()).is_err());
        assert_eq!(
            count_samples(b"# HELP a x\n# TYPE a gauge\na 1.0\nb{x=\"1\"} 2\n\n"),
            2
        );
    }
}
