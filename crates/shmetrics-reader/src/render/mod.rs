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
    let mut w = io::BufWriter::with_capacity(64 * 1024, out);
    let mut kept = snapshot
        .families
        .iter()
        .filter(|f| filter.keeps(&f.name))
        .peekable();
    let mut extra = extra.iter().peekable();
    let mut line = Vec::with_capacity(256);
    loop {
        let next = match (kept.peek(), extra.peek()) {
            (Some(a), Some(b)) if a.name <= b.name => kept.next(),
            (Some(_), Some(_)) | (None, Some(_)) => extra.next(),
            (Some(_), None) => kept.next(),
            (None, None) => break,
        };
        if let Some(family) = next {
            render_family(family, format, &mut line, &mut w)?;
        }
    }
    if format == Format::OpenMetrics {
        w.write_all(b"# EOF\n")?;
    }
    w.flush()
}

fn render_family(
    family: &Family,
    format: Format,
    line: &mut Vec<u8>,
    w: &mut impl Write,
) -> io::Result<()> {
    let name = &*family.name;
    let header_name = match (family.kind, format) {
        (MetricKind::Counter, Format::Prometheus) => format!("{name}_total"),
        _ => name.to_owned(),
    };
    line.clear();
    line.extend_from_slice(b"# HELP ");
    line.extend_from_slice(header_name.as_bytes());
    line.push(b' ');
    escape_help(&family.help, format == Format::OpenMetrics, line);
    line.extend_from_slice(b"\n# TYPE ");
    line.extend_from_slice(header_name.as_bytes());
    line.push(b' ');
    line.extend_from_slice(family.kind.as_str().as_bytes());
    line.push(b'\n');
    w.write_all(line)?;
    let les: Vec<Vec<u8>> = family
        .bounds
        .iter()
        .map(|&b| {
            let mut s = Vec::new();
            write_le(b, &mut s);
            s
        })
        .chain(std::iter::once(b"+Inf".to_vec()))
        .collect();
    for series in &family.series {
        line.clear();
        render_series(name, series, &les, line);
        w.write_all(line)?;
    }
    Ok(())
}

/// Appends `name{labels[,extra]} ` to `line`.
fn sample_prefix(line: &mut Vec<u8>, name: &str, suffix: &str, series: &Series, extra: &[u8]) {
    line.extend_from_slice(name.as_bytes());
    line.extend_from_slice(suffix.as_bytes());
    let labels = series.labels.rendered.as_bytes();
    let pid = series.pid.map(|p| {
        let mut b = itoa::Buffer::new();
        format!("pid=\"{}\"", b.format(p))
    });
    let parts: [&[u8]; 3] = [labels, pid.as_deref().unwrap_or("").as_bytes(), extra];
    let mut first = true;
    for part in parts.iter().filter(|p| !p.is_empty()) {
        line.push(if first { b'{' } else { b',' });
        line.extend_from_slice(part);
        first = false;
    }
    if !first {
        line.push(b'}');
    }
    line.push(b' ');
}

fn render_series(name: &str, series: &Series, les: &[Vec<u8>], line: &mut Vec<u8>) {
    match &series.value {
        Value::Counter(v) => {
            sample_prefix(line, name, "_total", series, b"");
            write_f64(*v, line);
            line.push(b'\n');
        }
        Value::Gauge(v) => {
            sample_prefix(line, name, "", series, b"");
            write_f64(*v, line);
            line.push(b'\n');
        }
        Value::Histogram { buckets, sum } => {
            let mut cumulative = 0u64;
            let mut le = Vec::with_capacity(32);
            for (count, bound) in buckets.iter().zip(les) {
                cumulative += count;
                le.clear();
                le.extend_from_slice(b"le=\"");
                le.extend_from_slice(bound);
                le.push(b'"');
                sample_prefix(line, name, "_bucket", series, &le);
                line.extend_from_slice(itoa::Buffer::new().format(cumulative).as_bytes());
                line.push(b'\n');
            }
            sample_prefix(line, name, "_count", series, b"");
            line.extend_from_slice(itoa::Buffer::new().format(cumulative).as_bytes());
            line.push(b'\n');
            sample_prefix(line, name, "_sum", series, b"");
            write_f64(*sum, line);
            line.push(b'\n');
        }
        Value::Summary { count, sum } => {
            sample_prefix(line, name, "_count", series, b"");
            line.extend_from_slice(itoa::Buffer::new().format(*count).as_bytes());
            line.push(b'\n');
            sample_prefix(line, name, "_sum", series, b"");
            write_f64(*sum, line);
            line.push(b'\n');
        }
    }
}
