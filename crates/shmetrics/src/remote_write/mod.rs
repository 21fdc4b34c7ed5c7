//! Remote write: the merged, filtered directory sent every interval to Prometheus' remote
//! write receivers (Prometheus, VictoriaMetrics, Mimir, Thanos Receive) with the remote
//! write 1.0 protocol, for fleets whose Prometheus cannot reach every node.
//!
//! Every interval `serve` takes a snapshot (shared with the scrapes that arrive meanwhile),
//! encodes it once (a snappy-compressed protobuf `WriteRequest`, every sample
//! the cumulative value at the snapshot's time, the external labels on every series) and
//! appends it to each target's queue. A task per target sends its queue oldest first, one
//! request at a time, so a series' samples arrive in time order: a 2xx answer takes the
//! request off the queue; a connection error, a timeout, 5xx or 429 keeps it and tries
//! again after a backoff (doubling from `min_backoff` to `max_backoff`); any other 4xx
//! drops it (the receiver refuses it and would again), counted as failed. The queue holds at
//! most `max_queue_bytes` of requests; beyond that the oldest is dropped, counted as failed
//! (never the one being sent, which may still arrive).
//! After an outage the queue drains in order: the receiver gets every interval of the
//! outage, none twice (a request is resent only when no 2xx answer came back; a resent
//! request writes the same points).

mod client;
pub(crate) mod encode;

use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use shmetrics_layout::MetricKind;
use shmetrics_layout::sync::AtomicU64;
use shmetrics_reader::snapshot::{Family, Series, SeriesLabels, Value};
use tokio::sync::{Notify, watch};

/// Default of [`RemoteWrite::interval`].
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
/// Default of [`RemoteWriteTarget::timeout`] (Prometheus' `remote_timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`RemoteWriteTarget::min_backoff`].
pub const DEFAULT_MIN_BACKOFF: Duration = Duration::from_millis(30);
/// Default of [`RemoteWriteTarget::max_backoff`].
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Default of [`RemoteWriteTarget::max_queue_bytes`]: 64 MiB.
pub const DEFAULT_MAX_QUEUE_BYTES: u64 = 64 << 20;

/// A secret given inline or read from a file at each request (so it can be rotated);
/// `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// The value.
    Inline(String),
    /// A file holding it (surrounding whitespace trimmed, as Prometheus does).
    File(PathBuf),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("Inline(..)"),
            Self::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

impl Secret {
    fn read(&self) -> Result<String, String> {
        match self {
            Self::Inline(s) => Ok(s.clone()),
            Self::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
        }
    }
}

/// How a target authenticates the sender.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Credentials {
    /// None.
    #[default]
    None,
    /// `basic_auth`.
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: Secret,
    },
    /// `authorization` (type Bearer) or `bearer_token`.
    Bearer(Secret),
}

/// `tls_config` of a target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA that signs the receiver's certificate; the system's roots when absent.
    pub ca_file: Option<PathBuf>,
    /// A client certificate to present.
    pub cert_file: Option<PathBuf>,
    /// Its key.
    pub key_file: Option<PathBuf>,
    /// The name the receiver's certificate must have (default: the URL's host).
    pub server_name: Option<String>,
}

/// One receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteWriteTarget {
    /// Its name in the `remote` label of the self-metrics (default: the URL).
    pub name: String,
    /// The URL requests are posted to.
    pub url: String,
    host: String,
    port: u16,
    authority: String,
    path: String,
    https: bool,
    /// Longest one request may take (`remote_timeout`).
    pub timeout: Duration,
    /// Extra headers (such as `X-Scope-OrgID`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Credentials.
    pub credentials: Credentials,
    /// TLS settings for an `https` URL.
    pub tls: ClientTls,
    /// First wait before a retry.
    pub min_backoff: Duration,
    /// Longest wait before a retry.
    pub max_backoff: Duration,
    /// Bytes of requests the queue may hold (compressed); beyond, the oldest is dropped.
    pub max_queue_bytes: u64,
}

/// Headers the protocol or the credentials set: a target's `headers` cannot.
pub(crate) const RESERVED_HEADERS: [&str; 6] = [
    "authorization",
    "content-encoding",
    "content-type",
    "host",
    "user-agent",
    "x-prometheus-remote-write-version",
];

impl RemoteWriteTarget {
    /// A target at `url` (`http://` or `https://`, host, optional port, path) with the
    /// defaults.
    ///
    /// # Errors
    /// The URL is not an absolute `http` or `https` URL.
    pub fn new(url: &str) -> Result<Self, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(format!(
                    "{url:?}: the URL must start with http:// or https://"
                ));
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{url:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "{url:?}: give credentials with basic_auth, not in the URL"
            ));
        }
        let host = authority.host().trim_matches(['[', ']']).to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        Ok(Self {
            name: url.to_owned(),
            url: url.to_owned(),
            host,
            port,
            authority: authority.as_str().to_owned(),
            path,
            https,
            timeout: DEFAULT_TIMEOUT,
            headers: Vec::new(),
            credentials: Credentials::None,
            tls: ClientTls::default(),
            min_backoff: DEFAULT_MIN_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            max_queue_bytes: DEFAULT_MAX_QUEUE_BYTES,
        })
    }
}

/// What to send, where and how often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteWrite {
    /// The receivers.
    pub targets: Vec<RemoteWriteTarget>,
    /// How often the directory is collected and sent (default [`DEFAULT_INTERVAL`]).
    pub interval: Duration,
    /// Labels added to every series that has no label of that name (such as `instance`
    /// or `cluster`).
    pub external_labels: Vec<(String, String)>,
}

/// A request waiting in a queue.
struct Pending {
    seq: u64,
    body: Bytes,
    samples: u64,
    collected: Instant,
}

#[derive(Default)]
struct Queue {
    pending: VecDeque<Pending>,
    bytes: u64,
    next_seq: u64,
    /// The request being sent (the front): a full queue drops the next oldest instead,
    /// so a request is never both counted as failed and delivered.
    sending: Option<u64>,
}

/// Counts of one target.
#[derive(Debug, Default)]
struct Counts {
    sent: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
}

/// One target and its queue.
struct Sender {
    target: RemoteWriteTarget,
    tls: Option<Arc<rustls::ClientConfig>>,
    queue: Mutex<Queue>,
    ready: Notify,
    counts: Counts,
}

impl Sender {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(counter: &AtomicU64, samples: u64) {
        // SYNC POINT server-counter: relaxed; a statistic.
        counter.fetch_add(samples, Ordering::Relaxed);
    }

    fn push(&self, body: Bytes, samples: u64, collected: Instant) {
        let mut q = self.lock();
        let size = body.len() as u64;
        loop {
            let oldest =
                usize::from(q.sending.is_some() && q.pending.front().map(|p| p.seq) == q.sending);
            if q.pending.len() <= oldest || q.bytes + size <= self.target.max_queue_bytes {
                break;
            }
            let dropped = q.pending.remove(oldest).expect("in the queue");
            q.bytes -= dropped.body.len() as u64;
            Self::count(&self.counts.failed, dropped.samples);
            log::warn!(
                "remote write {}: queue full ({} bytes): dropped the request collected {:.0?} ago ({} samples)",
                self.target.name,
                self.target.max_queue_bytes,
                dropped.collected.elapsed(),
                dropped.samples
            );
        }
        let seq = q.next_seq;
        q.next_seq += 1;
        q.bytes += size;
        q.pending.push_back(Pending {
            seq,
            body,
            samples,
            collected,
        });
        drop(q);
        self.ready.notify_one();
    }

    /// The oldest request, to be sent.
    fn take_front(&self) -> Option<(u64, Bytes, u64)> {
        let mut q = self.lock();
        let front = q
            .pending
            .front()
            .map(|p| (p.seq, p.body.clone(), p.samples));
        q.sending = front.as_ref().map(|f| f.0);
        front
    }

    /// Takes request `seq` off the queue, if still there (the queue may have dropped it).
    fn pop(&self, seq: u64) {
        let mut q = self.lock();
        if q.pending.front().is_some_and(|p| p.seq == seq) {
            let p = q.pending.pop_front().expect("not empty");
            q.bytes -= p.body.len() as u64;
        }
        q.sending = None;
    }

    async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut backoff = self.target.min_backoff;
        let mut failing = false;
        loop {
            let Some((seq, body, samples)) = self.take_front() else {
                tokio::select! {
                    () = self.ready.notified() => continue,
                    _ = stop.wait_for(|&s| s) => return self.abandon(),
                }
            };
            let outcome = tokio::select! {
                o = client::post(&self.target, self.tls.as_ref(), body) => o,
                _ = stop.wait_for(|&s| s) => return self.abandon(),
            };
            match outcome {
                client::Outcome::Sent => {
                    self.pop(seq);
                    Self::count(&self.counts.sent, samples);
                    if failing {
                        log::info!("remote write {}: sending again", self.target.name);
                        failing = false;
                    }
                    backoff = self.target.min_backoff;
                }
                client::Outcome::Refused(status, text) => {
                    self.pop(seq);
                    Self::count(&self.counts.failed, samples);
                    log::warn!(
                        "remote write {}: HTTP {status}, request dropped ({samples} samples): {text}",
                        self.target.name
                    );
                }
                client::Outcome::Retry(reason) => {
                    // Not in flight while waiting: a full queue may drop it meanwhile.
                    self.lock().sending = None;
                    Self::count(&self.counts.retried, samples);
                    if !failing {
                        log::warn!(
                            "remote write {}: {reason}; retrying (backoff up to {:?})",
                            self.target.name,
                            self.target.max_backoff
                        );
                        failing = true;
                    } else {
                        log::debug!("remote write {}: {reason}", self.target.name);
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = stop.wait_for(|&s| s) => return self.abandon(),
                    }
                    backoff = (backoff * 2).min(self.target.max_backoff);
                }
            }
        }
    }

    fn abandon(&self) {
        let q = self.lock();
        if !q.pending.is_empty() {
            let samples: u64 = q.pending.iter().map(|p| p.samples).sum();
            log::warn!(
                "remote write {}: {} requests ({samples} samples) not sent at shutdown",
                self.target.name,
                q.pending.len()
            );
        }
    }
}

/// The remote write side of a server: the targets' queues and senders.
pub(crate) struct Shipper {
    senders: Vec<Arc<Sender>>,
    external_labels: Vec<(String, String)>,
    /// See [`RemoteWrite::interval`].
    pub(crate) interval: Duration,
}

impl fmt::Debug for Shipper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shipper")
            .field("targets", &self.senders.len())
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl Shipper {
    /// Checks the targets' TLS files now.
    pub(crate) fn new(settings: &RemoteWrite) -> Result<Self, String> {
        let senders = settings
            .targets
            .iter()
            .map(|target| {
                let tls = if target.https {
                    Some(
                        client::tls_config(target)
                            .map_err(|e| format!("remote write {}: {e}", target.name))?,
                    )
                } else {
                    None
                };
                Ok(Arc::new(Sender {
                    target: target.clone(),
                    tls,
                    queue: Mutex::new(Queue::default()),
                    ready: Notify::new(),
                    counts: Counts::default(),
                }))
            })
            .collect::<Result<_, String>>()?;
        if settings.external_labels.is_empty() && !settings.targets.is_empty() {
            log::warn!(
                "remote write without external labels: every node sends the same series; add \
                 --remote-write-label instance=NAME (or external_labels) to tell them apart"
            );
        }
        Ok(Self {
            senders,
            external_labels: settings.external_labels.clone(),
            interval: settings.interval.max(Duration::from_millis(100)),
        })
    }

    /// Encodes `families` (every sample at `at`) once and queues the request for every
    /// target. Runs on a blocking thread: encoding a large directory takes milliseconds.
    pub(crate) fn enqueue<'a>(
        &self,
        families: impl IntoIterator<Item = &'a Family>,
        at: SystemTime,
    ) {
        let timestamp_ms = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let encoded = encode::encode(families, &self.external_labels, timestamp_ms);
        if encoded.samples == 0 {
            // Nothing (yet) passes the prefixes: no request.
            log::debug!("remote write: no samples to send");
            return;
        }
        let body = Bytes::from(encoded.body);
        let collected = Instant::now();
        for sender in &self.senders {
            sender.push(body.clone(), encoded.samples, collected);
        }
    }

    /// Starts a sending task per target; they stop when `stop` turns true.
    pub(crate) fn start(&self, stop: &watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
        self.senders
            .iter()
            .map(|s| tokio::spawn(Arc::clone(s).run(stop.clone())))
            .collect()
    }

    /// The `shmetrics_remote_write_*` self-metrics, a series per target.
    pub(crate) fn families(&self) -> Vec<Family> {
        let family = |name: &str, kind, help: &str, value: &dyn Fn(&Sender) -> f64| Family {
            name: Arc::from(name),
            kind,
            help: Arc::from(help),
            bounds: Arc::from(&[][..]),
            series: self
                .senders
                .iter()
                .map(|s| Series {
                    labels: Arc::new(SeriesLabels::new(vec![(
                        Box::from("remote"),
                        Box::from(s.target.name.as_str()),
                    )])),
                    pid: None,
                    created_unix_nanos: None,
                    exemplars: None,
                    value: match kind {
                        MetricKind::Counter => Value::Counter(value(s)),
                        _ => Value::Gauge(value(s)),
                    },
                })
                .collect(),
        };
        // SYNC POINT server-counter: relaxed loads; statistics.
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        vec![
            family(
                "shmetrics_remote_write_queue_oldest_seconds",
                MetricKind::Gauge,
                "Age of the oldest request not yet sent to the remote write target (0 when its queue is empty).",
                &|s| {
                    s.lock()
                        .pending
                        .front()
                        .map_or(0.0, |p| p.collected.elapsed().as_secs_f64())
                },
            ),
            family(
                "shmetrics_remote_write_queue_requests",
                MetricKind::Gauge,
                "Requests waiting to be sent to the remote write target.",
                &|s| s.lock().pending.len() as f64,
            ),
            family(
                "shmetrics_remote_write_samples_failed",
                MetricKind::Counter,
                "Samples the remote write target will never get: refused with a 4xx answer, or dropped from a full queue.",
                &|s| load(&s.counts.failed),
            ),
            family(
                "shmetrics_remote_write_samples_retried",
                MetricKind::Counter,
                "Samples of requests sent again after a connection error, a timeout, 5xx or 429 (once per attempt).",
                &|s| load(&s.counts.retried),
            ),
            family(
                "shmetrics_remote_write_samples_sent",
                MetricKind::Counter,
                "Samples the remote write target accepted (2xx).",
                &|s| load(&s.counts.sent),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender(max_queue_bytes: u64) -> Sender {
        let mut target = RemoteWriteTarget::new("http://127.0.0.1:9/write").unwrap();
        target.max_queue_bytes = max_queue_bytes;
        Sender {
            target,
            tls: None,
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
            counts: Counts::default(),
        }
    }

    fn seqs(s: &Sender) -> Vec<u64> {
        s.lock().pending.iter().map(|p| p.seq).collect()
    }

    #[test]
    fn a_full_queue_drops_its_oldest_but_never_the_request_being_sent() {
        let s = sender(20);
        let body = || Bytes::from_static(&[0u8; 10]);
        s.push(body(), 5, Instant::now());
        s.push(body(), 5, Instant::now());
        assert_eq!(seqs(&s), [0, 1]);
        // Full: the oldest goes, counted as failed.
        s.push(body(), 5, Instant::now());
        assert_eq!(seqs(&s), [1, 2]);
        assert_eq!(s.counts.failed.load(Ordering::Relaxed), 5);
        // While request 1 is being sent, the next oldest goes instead: 1 may still be
        // delivered, and must not be counted as failed too.
        let (seq, _, _) = s.take_front().unwrap();
        assert_eq!(seq, 1);
        s.push(body(), 5, Instant::now());
        assert_eq!(seqs(&s), [1, 3]);
        assert_eq!(s.counts.failed.load(Ordering::Relaxed), 10);
        s.pop(1);
        assert_eq!(seqs(&s), [3]);
        assert_eq!(s.lock().sending, None);
        assert_eq!(s.lock().bytes, 10);
        // A request larger than the queue: kept alone (everything older dropped).
        let s = sender(5);
        s.push(body(), 5, Instant::now());
        s.push(body(), 5, Instant::now());
        assert_eq!(seqs(&s), [1]);
    }
}
