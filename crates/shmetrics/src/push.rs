//! Pushing a merged metrics directory to a Prometheus Pushgateway, for batch jobs whose
//! processes end before any scrape: what `prometheus_client`'s `push_to_gateway` does for
//! one process, for every process of the directory.
//!
//! The body is the merged, filtered directory in the text format 0.0.4, sent with `PUT`
//! (replaces every metric of the group) or `POST` (replaces the pushed metric names only) to
//! `GATEWAY/metrics/job/JOB{/LABEL/VALUE}`; a value that contains `/` (or is empty) goes
//! base64url-encoded as `LABEL@base64/ENCODED`, as the Pushgateway defines. Connection
//! errors, timeouts and 5xx answers are retried with exponential backoff; a 4xx answer (the
//! gateway refused the push, and would again) is not. Plain `http://` only.
//!
//! ```no_run
//! use shmetrics::push::{PushOptions, PushTarget, push};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let target = PushTarget::new("http://127.0.0.1:9091", "nightly-eval", &[("instance", "node-3")])?;
//! let mut reader = shmetrics::Reader::open("/tmp/metrics")?;
//! let mut body = Vec::new();
//! reader.scrape(shmetrics::Format::Prometheus, &shmetrics::PrefixFilter::default(), false, &mut body)?;
//! let pushed = push(&target, &body, &PushOptions::default())?;
//! eprintln!("pushed after {} attempt(s)", pushed.attempts);
//! # Ok(()) }
//! ```

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How a push replaces what the group held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PushMethod {
    /// Replaces every metric of the group (`prometheus_client`'s `push_to_gateway`).
    #[default]
    Put,
    /// Replaces the metrics with the pushed names only (`pushadd_to_gateway`).
    Post,
}

impl PushMethod {
    fn as_str(self) -> &'static str {
        match self {
            Self::Put => "PUT",
            Self::Post => "POST",
        }
    }
}

/// Timeouts and retries of a push.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PushOptions {
    /// `PUT` or `POST`.
    pub method: PushMethod,
    /// Connecting, sending and reading the answer, each.
    pub timeout: Duration,
    /// Attempts after the first, for connection errors, timeouts and 5xx answers.
    pub retries: u32,
    /// Wait before the first retry; doubles each time, up to 30 s.
    pub backoff: Duration,
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            method: PushMethod::Put,
            timeout: Duration::from_secs(30),
            retries: 3,
            backoff: Duration::from_millis(500),
        }
    }
}

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The gateway URL, job or a grouping label cannot be used.
    #[error("{0}")]
    Invalid(String),
    /// The gateway answered 4xx: the push is wrong and would be refused again.
    #[error("the pushgateway refused the push to {url}: HTTP {status}: {body}")]
    Refused {
        /// The URL pushed to.
        url: String,
        /// The status.
        status: u16,
        /// What it said (the start of its answer).
        body: String,
    },
    /// Every attempt failed (connection, timeout, 5xx).
    #[error("cannot push to {url} after {attempts} attempts: {last}")]
    Failed {
        /// The URL pushed to.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
}

/// A successful push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pushed {
    /// The gateway's status (200 or 202).
    pub status: u16,
    /// Attempts it took.
    pub attempts: u32,
}

/// Where to push: a gateway, a job and the grouping labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushTarget {
    host: String,
    port: u16,
    /// The request path: the gateway's own path prefix, then `/metrics/job/...`.
    path: String,
}

impl PushTarget {
    /// The group `job` with `grouping` labels on the gateway at `gateway`
    /// (`http://HOST[:PORT][/PREFIX]`, port 9091 by default).
    ///
    /// # Errors
    /// [`PushError::Invalid`]: not an `http://` URL, an empty job, a grouping label name
    /// that is not a label name (or is `job`), or one given twice.
    pub fn new(gateway: &str, job: &str, grouping: &[(&str, &str)]) -> Result<Self, PushError> {
        let invalid = |why: String| Err(PushError::Invalid(why));
        let Some(rest) = gateway.strip_prefix("http://") else {
            return invalid(format!(
                "pushgateway URL {gateway:?}: only http://HOST[:PORT][/PATH] is supported"
            ));
        };
        let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // HOST, HOST:PORT, [V6] or [V6]:PORT.
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => match v6.split_once(']') {
                Some((h, "")) => (h, None),
                Some((h, rest)) => (h, Some(rest.strip_prefix(':').unwrap_or(rest))),
                None => return invalid(format!("pushgateway URL {gateway:?}: no closing ]")),
            },
            None => match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            },
        };
        let port = match port {
            None => 9091,
            Some(p) => match p.parse() {
                Ok(port) => port,
                Err(_) => return invalid(format!("pushgateway URL {gateway:?}: bad port {p:?}")),
            },
        };
        if host.is_empty() {
            return invalid(format!("pushgateway URL {gateway:?}: no host"));
        }
        if job.is_empty() {
            return invalid("the job name is empty".to_owned());
        }
        let mut path = String::new();
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() {
            path.push('/');
            path.push_str(prefix);
        }
        path.push_str("/metrics");
        push_segment(&mut path, "job", job);
        let mut seen = Vec::new();
        for &(name, value) in grouping {
            if !shmetrics_layout::names::is_legacy_label_name(name) || name == "job" {
                return invalid(format!(
                    "grouping label {name:?} is not a label name other than job"
                ));
            }
            if seen.contains(&name) {
                return invalid(format!("grouping label {name:?} given twice"));
            }
            seen.push(name);
            push_segment(&mut path, name, value);
        }
        Ok(Self {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            path,
        })
    }

    /// The URL pushed to.
    pub fn url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("http://{host}:{}{}", self.port, self.path)
    }
}

/// Appends `/NAME/VALUE`, or `/NAME@base64/ENCODED` when the value has a `/`, is empty or
/// has a character a path segment cannot hold as is.
fn push_segment(path: &mut String, name: &str, value: &str) {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~:@!$&'()*+,;=".contains(&b));
    path.push('/');
    path.push_str(name);
    if plain {
        path.push('/');
        path.push_str(value);
    } else {
        path.push_str("@base64/");
        path.push_str(&base64url(value.as_bytes()));
    }
}

/// RFC 4648 base64url with padding (the Pushgateway accepts both).
fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One attempt: the status and the start of the answer's body.
fn attempt(
    target: &PushTarget,
    body: &[u8],
    options: &PushOptions,
) -> std::io::Result<(u16, String)> {
    let addr = (target.host.as_str(), target.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{} resolves to nothing", target.host)))?;
    let mut stream = TcpStream::connect_timeout(&addr, options.timeout)?;
    stream.set_read_timeout(Some(options.timeout))?;
    stream.set_write_timeout(Some(options.timeout))?;
    let head = format!(
        "{} {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: shmetrics/{}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        options.method.as_str(),
        target.path,
        target.host,
        target.port,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    // The answer is short (a status and an error text at most): keep its first 64 KiB.
    let mut answer = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status in the answer"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .trim()
        .chars()
        .take(500)
        .collect();
    Ok((status, body))
}

/// Pushes `body` (text format 0.0.4) to `target`, retrying as `options` says.
///
/// # Errors
/// [`PushError::Refused`] on a 4xx answer (not retried); [`PushError::Failed`] when every
/// attempt failed.
pub fn push(target: &PushTarget, body: &[u8], options: &PushOptions) -> Result<Pushed, PushError> {
    let url = target.url();
    let mut wait = options.backoff;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let last = match attempt(target, body, options) {
            Ok((status, _)) if (200..300).contains(&status) => {
                return Ok(Pushed { status, attempts });
            }
            Ok((status, body)) if (400..500).contains(&status) => {
                return Err(PushError::Refused { url, status, body });
            }
            Ok((status, body)) => format!("HTTP {status}: {body}"),
            Err(e) => e.to_string(),
        };
        if attempts > options.retries {
            return Err(PushError::Failed {
                url,
                attempts,
                last,
            });
        }
        log::warn!(
            "push to {url} failed ({last}); retrying in {:.1} s",
            wait.as_secs_f64()
        );
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_paths_as_the_pushgateway_defines_them() {
        let t = PushTarget::new(
            "http://gw.example:9091/prefix/",
            "eval job",
            &[("instance", "node-3"), ("path", "a/b"), ("empty", "")],
        )
        .unwrap();
        assert_eq!(
            t.url(),
            "http://gw.example:9091/prefix/metrics/job@base64/ZXZhbCBqb2I=/instance/node-3/path@base64/YS9i/empty@base64/"
        );
        let t = PushTarget::new("http://127.0.0.1", "j", &[]).unwrap();
        assert_eq!(t.url(), "http://127.0.0.1:9091/metrics/job/j");
        let t = PushTarget::new("http://[::1]:9100", "j", &[]).unwrap();
        assert_eq!(t.url(), "http://[::1]:9100/metrics/job/j");
        let t = PushTarget::new("http://[::1]/gw", "j", &[]).unwrap();
        assert_eq!(t.url(), "http://[::1]:9091/gw/metrics/job/j");
    }

    #[test]
    fn bad_targets_say_why() {
        let err = |g: &str, j: &str, l: &[(&str, &str)]| {
            PushTarget::new(g, j, l).unwrap_err().to_string()
        };
        assert_eq!(
            err("https://gw:9091", "j", &[]),
            "pushgateway URL \"https://gw:9091\": only http://HOST[:PORT][/PATH] is supported"
        );
        assert_eq!(
            err("http://gw:x", "j", &[]),
            "pushgateway URL \"http://gw:x\": bad port \"x\""
        );
        assert_eq!(err("http://gw", "", &[]), "the job name is empty");
        assert_eq!(
            err("http://[::1:9091", "j", &[]),
            "pushgateway URL \"http://[::1:9091\": no closing ]"
        );
        assert_eq!(
            err("http://:9091", "j", &[]),
            "pushgateway URL \"http://:9091\": no host"
        );
        assert_eq!(
            err("http://gw", "j", &[("job", "x")]),
            "grouping label \"job\" is not a label name other than job"
        );
        assert_eq!(
            err("http://gw", "j", &[("a-b", "x")]),
            "grouping label \"a-b\" is not a label name other than job"
        );
        assert_eq!(
            err("http://gw", "j", &[("a", "x"), ("a", "y")]),
            "grouping label \"a\" given twice"
        );
    }

    #[test]
    fn base64url_with_padding() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg==");
        assert_eq!(base64url(b"fo"), "Zm8=");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8=");
    }
}
