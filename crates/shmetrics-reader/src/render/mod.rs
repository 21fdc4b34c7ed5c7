//! Exposition: Prometheus text format 0.0.4 and OpenMetrics 1.0, streamed into any
//! `io::Write`, with prefix filters.
//!
//! Text format: <https://prometheus.io/docs/instrumenting/exposition_formats/>.
//! OpenMetrics: <https://github.com/prometheus/OpenMetrics/blob/main/specification/OpenMetrics.md>.

mod escape;
mod number;

use std::io::{self, Write};

use shmetrics_layout::MetricKind;

pub use escape::{escape_help, escape_label_value};
pub use number::{write_f64, write_le};

use crate::snapshot::{Family, Series, Snapshot, Value};

/// An exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// The exact `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "prometheus" | "text" => Ok(Self::Prometheus),
            "openmetrics" => Ok(Self::OpenMetrics),
            _ => Err(format!(
                "unknown format {s:?}; expected prometheus or openmetrics"
            )),
        }
    }
}

/// Which families to keep: those whose name starts with one of the prefixes; all when the
/// list is empty. A filter keeps or drops whole families.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefixFilter {
    prefixes: Vec<String>,
}

impl PrefixFilter {
    /// A filter keeping families that start with any of `prefixes` (all if empty).
    pub fn new<S: Into<String>>(prefixes: impl IntoIterator<Item = S>) -> Self {
        Self {
            prefixes: prefixes.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether family `name` is kept.
    pub fn keeps(&self, name: &str) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }
}

/// Renders the families of `snapshot` kept by `filter`, then `extra` families (self-metrics,
/// always kept), merged in name order. OpenMetrics output ends with `# EOF`.
pub fn render(
    snapshot: &Snapshot,
    extra: &[Family],
    format: Format,
    filter: &PrefixFilter,
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut buf = Vec::new();
    render_into(snapshot, extra, format, filter, &mut buf);
    out.write_all(&buf)
}

/// As [`render`], appending to a buffer the caller owns (and can reuse between scrapes):
/// no I/O, no intermediate copy.
pub fn render_into(
    snapshot: &Snapshot,
    extra: &[Family],
    format: Format,
    filter: &PrefixFilter,
    buf: &mut Vec<u8>,
) {
    let mut kept = snapshot
        .families
        .iter()
        .filter(|f| filter.keeps(&f.name))
        .peekable();
    let mut extra = extra.iter().peekable();
    let mut scratch = Scratch::default();
    loop {
        let next = match (kept.peek(), extra.peek()) {
            (Some(a), Some(b)) if a.name <= b.name => kept.next(),
            (Some(_), Some(_)) | (None, Some(_)) => extra.next(),
            (Some(_), None) => kept.next(),
            (None, None) => break,
        };
        if let Some(family) = next {
            render_family(family, format, &mut scratch, buf);
        }
    }
    if format == Format::OpenMetrics {
        buf.extend_from_slice(b"# EOF\n");
    }
}

/// Buffers reused across families.
#[derive(Default)]
struct Scratch {
    /// Every `le` value of the current family, concatenated.
    les: Vec<u8>,
    /// End offset of each `le` value in `les`.
    le_ends: Vec<usize>,
    /// `name_bucket{labels,` of the current histogram series.
    head: Vec<u8>,
}

fn render_family(family: &Family, format: Format, scratch: &mut Scratch, buf: &mut Vec<u8>) {
    let name = family.name.as_bytes();
    let counter_suffix: &[u8] = match (family.kind, format) {
        (MetricKind::Counter, Format::Prometheus) => b"_total",
        _ => b"",
    };
    for (line, value) in [
        (&b"# HELP "[..], None),
        (b"# TYPE ", Some(family.kind.as_str())),
    ] {
        buf.extend_from_slice(line);
        buf.extend_from_slice(name);
        buf.extend_from_slice(counter_suffix);
        buf.push(b' ');
        match value {
            None => escape_help(&family.help, format == Format::OpenMetrics, buf),
            Some(kind) => buf.extend_from_slice(kind.as_bytes()),
        }
        buf.push(b'\n');
    }
    if family.kind == MetricKind::Histogram {
        scratch.les.clear();
        scratch.le_ends.clear();
        for &bound in family.bounds.iter() {
            write_le(bound, &mut scratch.les);
            scratch.le_ends.push(scratch.les.len());
        }
        scratch.les.extend_from_slice(b"+Inf");
        scratch.le_ends.push(scratch.les.len());
    }
    for series in &family.series {
        render_series(name, series, scratch, buf);
    }
}

/// Appends `name{labels,pid="..."` (no closing brace) and whether anything was opened.
fn open_sample(buf: &mut Vec<u8>, name: &[u8], suffix: &[u8], series: &Series) -> bool {
    buf.extend_from_slice(name);
    buf.extend_from_slice(suffix);
    let labels = series.labels.rendered.as_bytes();
    if labels.is_empty() && series.pid.is_none() {
        return false;
    }
    buf.push(b'{');
    buf.extend_from_slice(labels);
    if let Some(pid) = series.pid {
        if !labels.is_empty() {
            buf.push(b',');
        }
        buf.extend_from_slice(b"pid=\"");
        buf.extend_from_slice(itoa::Buffer::new().format(pid).as_bytes());
        buf.push(b'"');
    }
    true
}

/// Appends `name{labels} ` (braces only when there are labels).
fn sample(buf: &mut Vec<u8>, name: &[u8], suffix: &[u8], series: &Series) {
    if open_sample(buf, name, suffix, series) {
        buf.push(b'}');
    }
    buf.push(b' ');
}

fn write_count(buf: &mut Vec<u8>, n: u64) {
    buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    buf.push(b'\n');
}

fn render_series(name: &[u8], series: &Series, scratch: &mut Scratch, buf: &mut Vec<u8>) {
    match &series.value {
        Value::Counter(v) => {
            sample(buf, name, b"_total", series);
            write_f64(*v, buf);
            buf.push(b'\n');
        }
        Value::Gauge(v) => {
            sample(buf, name, b"", series);
            write_f64(*v, buf);
            buf.push(b'\n');
        }
        Value::Histogram { buckets, sum } => {
            let head = &mut scratch.head;
            head.clear();
            if open_sample(head, name, b"_bucket", series) {
                head.push(b',');
            } else {
                head.push(b'{');
            }
            head.extend_from_slice(b"le=\"");
            let mut cumulative = 0u64;
            let mut start = 0;
            for (count, &end) in buckets.iter().zip(&scratch.le_ends) {
                // Saturating: a corrupt segment's counts cannot overflow, and the
                // cumulative counts stay non-decreasing.
                cumulative = cumulative.saturating_add(*count);
                buf.extend_from_slice(head);
                buf.extend_from_slice(&scratch.les[start..end]);
                buf.extend_from_slice(b"\"} ");
                write_count(buf, cumulative);
                start = end;
            }
            sample(buf, name, b"_count", series);
            write_count(buf, cumulative);
            sample(buf, name, b"_sum", series);
            write_f64(*sum, buf);
            buf.push(b'\n');
        }
        Value::Summary { count, sum } => {
            sample(buf, name, b"_count", series);
            write_count(buf, *count);
            sample(buf, name, b"_sum", series);
            write_f64(*sum, buf);
            buf.push(b'\n');
        }
    }
}
