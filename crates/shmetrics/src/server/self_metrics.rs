//! The server's own metrics: scrape duration and HTTP requests, kept in process and
//! converted to [`Family`] values to be rendered beside the reader's self-metrics.

use shmetrics_layout::sync::AtomicU64;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use shmetrics_layout::MetricKind;
use shmetrics_reader::Format;
use shmetrics_reader::snapshot::{Family, Series, SeriesLabels, Value};

/// Upper bounds of the scrape-duration buckets, in seconds: 100 µs to 10 s.
pub(crate) const DURATION_BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The `format` label value of a format (as spelled by `dump --format`).
pub(crate) fn format_label(format: Format) -> &'static str {
    match format {
        Format::Prometheus => "prometheus",
        Format::OpenMetrics => "openmetrics",
    }
}

/// The formats, in label order.
const FORMATS: [Format; 2] = [Format::OpenMetrics, Format::Prometheus];

#[derive(Clone, Debug, Default)]
struct Histogram {
    /// Per-bucket counts (not cumulative); the last is `+Inf`.
    buckets: [u64; DURATION_BOUNDS.len() + 1],
    sum: f64,
}

/// Why the server closed a connection itself.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Closed {
    /// At the connection limit with no stalled connection to evict: refused at once.
    Refused = 0,
    /// Stalled for longest when a new connection needed its place.
    Evicted = 1,
    /// Its client read nothing of a response for the write timeout.
    WriteTimeout = 2,
    /// It reached the most requests one connection may send.
    RequestCap = 3,
}

const CLOSED_REASONS: [(Closed, &str); 4] = [
    (Closed::Evicted, "evicted"),
    (Closed::Refused, "refused"),
    (Closed::RequestCap, "request_cap"),
    (Closed::WriteTimeout, "write_timeout"),
];

/// Why a `/metrics` request got no exposition.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Failure {
    /// The exposition would pass the scrape byte limit.
    TooLarge = 0,
    /// Memory to render it could not be allocated.
    OutOfMemory = 1,
}

const FAILURE_REASONS: [(Failure, &str); 2] = [
    (Failure::OutOfMemory, "out_of_memory"),
    (Failure::TooLarge, "too_large"),
];

/// Why a request was refused before it was served (web configuration).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Refused {
    /// No `Basic` credentials (401).
    NoCredentials = 0,
    /// Credentials that do not verify (401).
    WrongCredentials = 1,
    /// Over the rate limit (429).
    RateLimited = 2,
}

const REFUSED_REASONS: [(Refused, &str); 3] = [
    (Refused::NoCredentials, "no_credentials"),
    (Refused::RateLimited, "rate_limited"),
    (Refused::WrongCredentials, "wrong_credentials"),
];

/// What happened to a TLS connection or to the TLS files.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TlsEvent {
    /// A handshake failed (no or refused client certificate, wrong protocol, timeout).
    HandshakeFailed = 0,
    /// The certificate files changed and were loaded.
    Reloaded = 1,
    /// The certificate files changed and could not be used (the previous ones stay).
    ReloadFailed = 2,
}

/// Counts kept by the server.
#[derive(Debug, Default)]
pub(crate) struct ServerMetrics {
    /// Whether the web configuration refuses requests (credentials or a rate limit):
    /// `shmetrics_http_refused_requests` is rendered.
    gated: bool,
    /// Whether TLS is served: the `shmetrics_tls_*` families are rendered.
    tls: bool,
    /// The remote write queues, whose `shmetrics_remote_write_*` families are rendered.
    remote_write: Option<Arc<crate::remote_write::Shipper>>,
    /// Requests refused before they were served, by [`Refused`] reason.
    refused: [AtomicU64; 3],
    /// TLS events, by [`TlsEvent`].
    tls_events: [AtomicU64; 3],
    /// Connections open now.
    pub(crate) open_connections: AtomicU64,
    /// Bytes of rendered bodies alive: the latest snapshot's and those still being sent.
    pub(crate) body_bytes: AtomicU64,
    /// Connections the server closed itself, by [`Closed`] reason.
    closed: [AtomicU64; 4],
    /// `/metrics` requests answered without an exposition, by [`Failure`] reason.
    failures: [AtomicU64; 2],
    /// Scrape durations, by format (index as in [`FORMATS`]).
    durations: Mutex<[Histogram; 2]>,
    /// Requests by `(path, code)`.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
}

fn format_index(format: Format) -> usize {
    match format {
        Format::OpenMetrics => 0,
        Format::Prometheus => 1,
    }
}

fn labels(pairs: &[(&str, &str)]) -> Arc<SeriesLabels> {
    Arc::new(SeriesLabels::new(
        pairs
            .iter()
            .map(|&(n, v)| (Box::from(n), Box::from(v)))
            .collect(),
    ))
}

/// A gauge family of one unlabelled series.
fn one_gauge(name: &str, help: &str, value: u64) -> Family {
    Family {
        name: Arc::from(name),
        kind: MetricKind::Gauge,
        help: Arc::from(help),
        bounds: Arc::from(&[][..]),
        series: vec![Series {
            labels: labels(&[]),
            pid: None,
            created_unix_nanos: None,
            exemplars: None,
            value: Value::Gauge(value as f64),
        }],
    }
}

/// A counter family with one series per `reason`, in the order given.
fn by_reason<const N: usize>(name: &str, help: &str, counts: [(&str, &AtomicU64); N]) -> Family {
    by_label(name, help, "reason", counts)
}

/// A counter family with one series per value of `label`, in the order given.
fn by_label<const N: usize>(
    name: &str,
    help: &str,
    label: &str,
    counts: [(&str, &AtomicU64); N],
) -> Family {
    Family {
        name: Arc::from(name),
        kind: MetricKind::Counter,
        help: Arc::from(help),
        bounds: Arc::from(&[][..]),
        series: counts
            .iter()
            .map(|&(reason, count)| Series {
                labels: labels(&[(label, reason)]),
                pid: None,
                created_unix_nanos: None,
                exemplars: None,
                // SYNC POINT server-counter: relaxed; a statistic.
                value: Value::Counter(count.load(Ordering::Relaxed) as f64),
            })
            .collect(),
    }
}

impl ServerMetrics {
    /// Counts for a server that refuses requests (`gated`) or not, serves TLS (`tls`) or
    /// not, with remote write queues or none.
    pub(crate) fn new(
        gated: bool,
        tls: bool,
        remote_write: Option<Arc<crate::remote_write::Shipper>>,
    ) -> Self {
        Self {
            gated,
            tls,
            remote_write,
            ..Self::default()
        }
    }

    /// Records the time taken to produce one exposition in `format`.
    pub(crate) fn observe_scrape(&self, format: Format, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = DURATION_BOUNDS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(DURATION_BOUNDS.len());
        let mut d = self
            .durations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let h = &mut d[format_index(format)];
        h.buckets[bucket] += 1;
        h.sum += secs;
    }

    /// Counts a connection the server closed itself.
    pub(crate) fn count_closed(&self, why: Closed) {
        // SYNC POINT server-counter: relaxed; a statistic.
        self.closed[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a `/metrics` request that got no exposition (or only part of a streamed one).
    pub(crate) fn count_failure(&self, why: Failure) {
        // SYNC POINT server-counter: relaxed; a statistic.
        self.failures[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request refused before it was served.
    pub(crate) fn count_refused(&self, why: Refused) {
        // SYNC POINT server-counter: relaxed; a statistic.
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a TLS event.
    pub(crate) fn count_tls(&self, event: TlsEvent) {
        // SYNC POINT server-counter: relaxed; a statistic.
        self.tls_events[event as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one answered request. `path` is one of a fixed set of values, so that
    /// arbitrary request paths cannot grow the label set.
    pub(crate) fn count_request(&self, path: &'static str, code: u16) {
        let mut r = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        *r.entry((path, code)).or_insert(0) += 1;
    }

    /// The families, sorted by name: `shmetrics_http_connections` (open now),
    /// `shmetrics_http_connections_closed` (a counter, by reason), `shmetrics_http_requests`
    /// (a counter, rendered `shmetrics_http_requests_total`),
    /// `shmetrics_scrape_duration_seconds` and `shmetrics_scrape_failures` (a counter, by
    /// reason).
    pub(crate) fn families(&self) -> Vec<Family> {
        let durations = self
            .durations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut out = Vec::with_capacity(5);
        // SYNC POINT server-counter: relaxed loads; statistics.
        out.push(one_gauge(
            "shmetrics_http_connections",
            "HTTP connections open now.",
            self.open_connections.load(Ordering::Relaxed),
        ));
        out.push(one_gauge(
            "shmetrics_http_body_bytes",
            "Bytes of rendered /metrics bodies in memory: the latest snapshot's and those still being sent.",
            self.body_bytes.load(Ordering::Relaxed),
        ));
        out.push(by_reason(
            "shmetrics_http_connections_closed",
            "Connections the server closed itself, by reason: refused at the connection limit, evicted (stalled longest, else open longest, when a new one needed the place), write_timeout (the client stopped reading), request_cap (too many requests on one connection).",
            CLOSED_REASONS.map(|(why, name)| (name, &self.closed[why as usize])),
        ));
        if !requests.is_empty() {
            let mut series: Vec<Series> = requests
                .into_iter()
                .map(|((path, code), n)| Series {
                    labels: labels(&[("code", &code.to_string()), ("path", path)]),
                    pid: None,
                    created_unix_nanos: None,
                    exemplars: None,
                    value: Value::Counter(n as f64),
                })
                .collect();
            series.sort_by(|a, b| a.labels.cmp(&b.labels));
            out.push(Family {
                name: Arc::from("shmetrics_http_requests"),
                kind: MetricKind::Counter,
                help: Arc::from("HTTP requests answered, by path and status code."),
                bounds: Arc::from(&[][..]),
                series,
            });
        }
        out.push(Family {
            name: Arc::from("shmetrics_scrape_duration_seconds"),
            kind: MetricKind::Histogram,
            help: Arc::from(
                "Time to produce one /metrics body (snapshot of the directory plus rendering), by format.",
            ),
            bounds: Arc::from(&DURATION_BOUNDS[..]),
            series: FORMATS
                .iter()
                .map(|&f| {
                    let h = &durations[format_index(f)];
                    Series {
                        labels: labels(&[("format", format_label(f))]),
                        pid: None,
                        created_unix_nanos: None,
                        exemplars: None,
                        value: Value::Histogram {
                            buckets: h.buckets.to_vec(),
                            sum: h.sum,
                        },
                    }
                })
                .collect(),
        });
        out.push(by_reason(
            "shmetrics_scrape_failures",
            "/metrics requests answered without an exposition, by reason: too_large (over the scrape byte limit; 500), out_of_memory (rendering could not allocate; 503, or a streamed body cut short).",
            FAILURE_REASONS.map(|(why, name)| (name, &self.failures[why as usize])),
        ));
        if self.gated {
            out.push(by_reason(
                "shmetrics_http_refused_requests",
                "Requests refused before they were served, by reason: no_credentials and wrong_credentials (basic authentication; 401), rate_limited (the web configuration's rate_limit; 429).",
                REFUSED_REASONS.map(|(why, name)| (name, &self.refused[why as usize])),
            ));
        }
        if self.tls {
            let failures =
                self.tls_events[TlsEvent::HandshakeFailed as usize].load(Ordering::Relaxed);
            let mut family = one_gauge(
                "shmetrics_tls_handshake_failures",
                "TLS handshakes that failed: no or a refused client certificate, no common protocol or cipher, or no handshake within the header timeout.",
                failures,
            );
            family.kind = MetricKind::Counter;
            family.series[0].value = Value::Counter(failures as f64);
            out.push(family);
            out.push(by_label(
                    "shmetrics_tls_reloads",
                    "Changes of the TLS certificate, key or client CA files, by result: loaded (used from the next connection) or failed (the previous files stay in use).",
                    "result",
                    [
                        ("failed", &self.tls_events[TlsEvent::ReloadFailed as usize]),
                        ("loaded", &self.tls_events[TlsEvent::Reloaded as usize]),
                    ],
            ));
        }
        if let Some(shipper) = &self.remote_write {
            out.extend(shipper.families());
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_their_buckets() {
        let m = ServerMetrics::default();
        m.observe_scrape(Format::Prometheus, Duration::from_micros(100));
        m.observe_scrape(Format::Prometheus, Duration::from_millis(3));
        m.observe_scrape(Format::Prometheus, Duration::from_secs(11));
        m.observe_scrape(Format::OpenMetrics, Duration::from_micros(50));
        let fams = m.families();
        assert_eq!(fams.len(), 5, "no requests counted yet");
        let h = &fams[3];
        assert_eq!(&*h.name, "shmetrics_scrape_duration_seconds");
        assert_eq!(h.series.len(), 2);
        assert_eq!(h.series[0].labels.get("format"), Some("openmetrics"));
        assert_eq!(h.series[1].labels.get("format"), Some("prometheus"));
        let Value::Histogram { buckets, sum } = &h.series[1].value else {
            panic!("not a histogram");
        };
        let mut want = vec![0u64; DURATION_BOUNDS.len() + 1];
        want[0] = 1; // 100 µs <= 0.0001
        want[5] = 1; // 3 ms <= 0.005
        want[16] = 1; // 11 s: +Inf
        assert_eq!(buckets, &want);
        assert!((sum - 11.0031).abs() < 1e-9, "{sum}");
        let Value::Histogram { buckets, .. } = &h.series[0].value else {
            panic!("not a histogram");
        };
        assert_eq!(buckets[0], 1);
    }

    #[test]
    fn requests_by_path_and_code_sorted() {
        let m = ServerMetrics::default();
        m.count_request("/metrics", 200);
        m.count_request("/metrics", 200);
        m.count_request("other", 404);
        m.count_request("/health", 200);
        let fams = m.families();
        assert_eq!(&*fams[3].name, "shmetrics_http_requests");
        let got: Vec<(String, f64)> = fams[3]
            .series
            .iter()
            .map(|s| {
                let Value::Counter(v) = s.value else {
                    panic!("not a counter")
                };
                (s.labels.to_string(), v)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (r#"code="200",path="/health""#.to_owned(), 1.0),
                (r#"code="200",path="/metrics""#.to_owned(), 2.0),
                (r#"code="404",path="other""#.to_owned(), 1.0),
            ]
        );
    }
}
