//! Exposition: Prometheus text format 0.0.4 and OpenMetrics 1.0, streamed into any
//! `io::Write`, with prefix filters.
//!
//! Text format: <https://prometheus.io/docs/instrumenting/exposition_formats/>.
//! OpenMetrics: <https://github.com/prometheus/OpenMetrics/blob/main/specification/OpenMetrics.md>.

mod escape;
mod number;
mod text;

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use shmetrics_layout::names::Escaping;
use shmetrics_layout::names::{
    escape_name, escaped_name, is_legacy_label_name, is_legacy_metric_name,
};
use shmetrics_layout::{MetricKind, suffix};

pub use escape::{escape_help, escape_label_value};
pub use number::{write_f64, write_le};
use text::write_labels;
pub use text::{SeriesText, SnapshotText};

pub use crate::filter::PrefixFilter;
use crate::snapshot::{Exemplar, Family, Series, Snapshot, Value, unix_seconds};

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

/// Renders the families of `snapshot` kept by `filter`, then `extra` families (self-metrics,
/// always kept), merged in name order. OpenMetrics output ends with `# EOF`. Written a piece
/// of [`CHUNK`] bytes at a time: memory stays bounded however large the exposition is.
/// Labels are written out at each call: to render one snapshot many times, give an
/// [`Exposition`] its [`SnapshotText`].
pub fn render(
    snapshot: &Snapshot,
    extra: &[Family],
    format: Format,
    filter: &PrefixFilter,
    out: &mut dyn Write,
) -> io::Result<()> {
    Exposition {
        snapshot,
        text: None,
        extra,
        format,
        filter,
        escaping: Escaping::default(),
        created: true,
    }
    .write(out)
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
    let exposition = Exposition {
        snapshot,
        text: None,
        extra,
        format,
        filter,
        escaping: Escaping::default(),
        created: true,
    };
    exposition.render_some(&mut Cursor::default(), buf, usize::MAX);
}

/// The size of the pieces [`render`] writes: large enough that a write costs little per
/// byte, small enough to stay in cache.
pub const CHUNK: usize = 256 * 1024;

/// What one exposition shows: the families of `snapshot` kept by `filter` and the `extra`
/// families, merged in name order, in `format`.
#[derive(Clone, Copy, Debug)]
pub struct Exposition<'a> {
    /// The merged directory.
    pub snapshot: &'a Snapshot,
    /// The text of the snapshot's series labels, with the renderer's cache of their line
    /// prefixes (as a reader hands it out with the snapshot); without it, labels are written
    /// out at each rendering.
    pub text: Option<&'a SnapshotText>,
    /// Families rendered whatever the filter (self-metrics, an embedder's), sorted by name.
    pub extra: &'a [Family],
    /// The format.
    pub format: Format,
    /// Which of the snapshot's families to keep.
    pub filter: &'a PrefixFilter,
    /// How names outside the classic character sets are exposed.
    pub escaping: Escaping,
    /// In OpenMetrics, a `_created` sample after each counter, histogram and summary series
    /// whose creation time is known, as prometheus_client writes one unless
    /// `PROMETHEUS_DISABLE_CREATED_SERIES` is set. The text format never has them (as
    /// prometheus_client's multiprocess mode).
    pub created: bool,
}

/// Where the rendering of an [`Exposition`] stands, so that it can be rendered a piece at a
/// time (a large body streamed rather than held whole). Starts at the beginning.
#[derive(Clone, Debug, Default)]
pub struct Cursor {
    /// The next candidate family of the snapshot.
    next_family: usize,
    /// The next candidate extra family.
    next_extra: usize,
    /// The family being rendered (`true`: an extra one) and its next series.
    current: Option<(bool, usize, usize)>,
    /// Whether the end (`# EOF` in OpenMetrics) was written.
    done: bool,
    scratch: Scratch,
}

impl Cursor {
    /// Whether the whole exposition was rendered.
    pub fn is_done(&self) -> bool {
        self.done
    }
}

impl<'a> Exposition<'a> {
    /// Writes the whole exposition to `out`, a piece of [`CHUNK`] bytes at a time: memory
    /// stays bounded however large the exposition is.
    pub fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        self.write_through(out, &mut Vec::with_capacity(CHUNK))
    }

    /// As [`Exposition::write`], through `buf` (cleared first; a caller keeps it between
    /// renderings so that a steady state allocates nothing).
    pub fn write_through(&self, out: &mut dyn Write, buf: &mut Vec<u8>) -> io::Result<()> {
        let mut cursor = Cursor::default();
        loop {
            buf.clear();
            let done = self.render_some(&mut cursor, buf, CHUNK);
            out.write_all(buf)?;
            if done {
                return Ok(());
            }
        }
    }

    /// Appends to `buf`, from `cursor` on, until `buf` holds at least `at_least` bytes or the
    /// exposition ends; returns whether it ended. A piece ends after a whole series, so it
    /// passes `at_least` by at most one series' lines (bounded by
    /// `shmetrics_layout::limits::MAX_SERIES_TEXT`) or one family's help text.
    pub fn render_some(&self, cursor: &mut Cursor, buf: &mut Vec<u8>, at_least: usize) -> bool {
        while !cursor.done && buf.len() < at_least {
            let Some((extra, index, next)) = cursor.current else {
                match self.next_family(cursor) {
                    Some((extra, index)) => {
                        let family = self.family(extra, index);
                        let (format, escaping) = (self.format, self.escaping);
                        render_header(family, format, escaping, &mut cursor.scratch, buf);
                        cursor.scratch.texts = match (extra, self.text) {
                            (false, Some(text)) => text.family(index),
                            _ => (0, 0),
                        };
                        cursor.current = Some((extra, index, 0));
                    }
                    None => {
                        if self.format == Format::OpenMetrics {
                            buf.extend_from_slice(b"# EOF\n");
                        }
                        cursor.done = true;
                    }
                }
                continue;
            };
            let family = self.family(extra, index);
            match family.series.get(next) {
                Some(series) => {
                    let scratch = &mut cursor.scratch;
                    let text = self.text.and_then(|t| t.get(scratch.texts, series, next));
                    let classic_names = match text {
                        Some(text) => text.classic_names,
                        None => (series.labels.pairs.iter()).all(|(n, _)| is_legacy_label_name(n)),
                    };
                    // Set only for counters, histograms and summaries (the merge's rule).
                    let created = series
                        .created_unix_nanos
                        .filter(|_| self.format == Format::OpenMetrics && self.created);
                    // A stateset's name labels its states: the escaped path writes it as the
                    // escaping says.
                    let stateset = family.kind == MetricKind::StateSet;
                    // Exemplars exist in OpenMetrics only; their series take the general
                    // path (no cached line prefixes).
                    let exemplars = (series.exemplars.as_deref())
                        .filter(|_| self.format == Format::OpenMetrics);
                    if scratch.classic && classic_names && !stateset && exemplars.is_none() {
                        render_series(family, series, text, scratch, buf);
                        if let Some(created) = created {
                            render_created(family, series, text, created, scratch, buf);
                        }
                    } else {
                        let escaping = self.escaping;
                        let late = Late { created, exemplars };
                        render_escaped_series(family, series, escaping, late, scratch, buf);
                    }
                    cursor.current = Some((extra, index, next + 1));
                }
                None => cursor.current = None,
            }
        }
        cursor.done
    }

    fn family(&self, extra: bool, index: usize) -> &'a Family {
        if extra {
            &self.extra[index]
        } else {
            &self.snapshot.families[index]
        }
    }

    /// The next family in name order (`true`: an extra one), advancing past it.
    fn next_family(&self, cursor: &mut Cursor) -> Option<(bool, usize)> {
        let families = &self.snapshot.families;
        while cursor.next_family < families.len()
            && !self.filter.keeps(&families[cursor.next_family].name)
        {
            cursor.next_family += 1;
        }
        let kept = families.get(cursor.next_family);
        let extra = self.extra.get(cursor.next_extra);
        let take_extra = match (kept, extra) {
            (Some(a), Some(b)) => a.name > b.name,
            (None, Some(_)) => true,
            (Some(_), None) => false,
            (None, None) => return None,
        };
        if take_extra {
            cursor.next_extra += 1;
            Some((true, cursor.next_extra - 1))
        } else {
            cursor.next_family += 1;
            Some((false, cursor.next_family - 1))
        }
    }
}

/// Buffers reused across families.
#[derive(Clone, Debug, Default)]
struct Scratch {
    /// Every `le` value of the current family, concatenated.
    les: Vec<u8>,
    /// End offset of each `le` value in `les`.
    le_ends: Vec<usize>,
    /// `name_bucket{labels,` of the current histogram series.
    head: Vec<u8>,
    /// The current series' labels as text, when the exposition has no text for them.
    labels: String,
    /// Where the current family's series texts are in the exposition's `SnapshotText`
    /// (empty for an extra family).
    texts: (usize, usize),
    /// Whether the current family's name is exposed as it is (classic, and the escaping
    /// keeps classic names): its series with classic label names take the fast path.
    classic: bool,
}

/// Appends a family's `# HELP` and `# TYPE` lines and prepares its `le` values.
fn render_header(
    family: &Family,
    format: Format,
    escaping: Escaping,
    scratch: &mut Scratch,
    buf: &mut Vec<u8>,
) {
    // The text format names a counter's family by its sample, `_total`, and an info's by
    // `_info`, as prometheus_client does.
    let counter_suffix = match (family.kind, format) {
        (MetricKind::Counter, Format::Prometheus) => suffix::TOTAL,
        (MetricKind::Info, Format::Prometheus) => suffix::INFO,
        _ => "",
    };
    let type_name = match format {
        Format::Prometheus => family.kind.text_type(),
        Format::OpenMetrics => family.kind.as_str(),
    };
    scratch.classic = escaping.keeps_legacy_names() && is_legacy_metric_name(&family.name);
    let name = escaped_name(&format!("{}{counter_suffix}", family.name), true, escaping);
    for (line, value) in [(&b"# HELP "[..], None), (b"# TYPE ", Some(type_name))] {
        buf.extend_from_slice(line);
        buf.extend_from_slice(name.as_bytes());
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
}

/// Appends `name{labels,pid="..."` (no closing brace) and whether anything was opened.
fn open_sample(
    buf: &mut Vec<u8>,
    name: &[u8],
    suffix: &[u8],
    labels: &str,
    pid: Option<u32>,
) -> bool {
    buf.extend_from_slice(name);
    buf.extend_from_slice(suffix);
    let labels = labels.as_bytes();
    if labels.is_empty() && pid.is_none() {
        return false;
    }
    buf.push(b'{');
    buf.extend_from_slice(labels);
    if let Some(pid) = pid {
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
fn sample(buf: &mut Vec<u8>, name: &[u8], suffix: &[u8], labels: &str, pid: Option<u32>) {
    if open_sample(buf, name, suffix, labels, pid) {
        buf.push(b'}');
    }
    buf.push(b' ');
}

/// Appends `name_bucket{labels,le="` (the bound and `"} ` follow).
fn open_bucket(buf: &mut Vec<u8>, name: &[u8], labels: &str, pid: Option<u32>) {
    if open_sample(buf, name, suffix::BUCKET.as_bytes(), labels, pid) {
        buf.push(b',');
    } else {
        buf.push(b'{');
    }
    buf.extend_from_slice(b"le=\"");
}

fn write_count(buf: &mut Vec<u8>, n: u64) {
    buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    buf.push(b'\n');
}

/// Appends the lines of a series whose family and label names are exposed as they are:
/// from its cached line prefixes when `text` has them.
fn render_series(
    family: &Family,
    series: &Series,
    text: Option<&SeriesText>,
    scratch: &mut Scratch,
    buf: &mut Vec<u8>,
) {
    let labels: &str = match text {
        Some(text) => {
            if series.pid.is_none()
                && let Some(lines) = text.line_prefixes(family)
                && lines.render(&series.value, buf)
            {
                return;
            }
            &text.rendered
        }
        None => {
            scratch.labels.clear();
            write_labels(&series.labels, &mut scratch.labels);
            &scratch.labels
        }
    };
    let name = family.name.as_bytes();
    let pid = series.pid;
    match &series.value {
        Value::Counter(v) => {
            sample(buf, name, suffix::TOTAL.as_bytes(), labels, pid);
            write_f64(*v, buf);
            buf.push(b'\n');
        }
        Value::Gauge(v) => {
            sample(buf, name, b"", labels, pid);
            write_f64(*v, buf);
            buf.push(b'\n');
        }
        Value::Histogram { buckets, sum } => {
            let head = &mut scratch.head;
            head.clear();
            open_bucket(head, name, labels, pid);
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
            sample(buf, name, suffix::COUNT.as_bytes(), labels, pid);
            write_count(buf, cumulative);
            sample(buf, name, suffix::SUM.as_bytes(), labels, pid);
            write_f64(*sum, buf);
            buf.push(b'\n');
        }
        Value::Summary { count, sum } => {
            sample(buf, name, suffix::COUNT.as_bytes(), labels, pid);
            write_count(buf, *count);
            sample(buf, name, suffix::SUM.as_bytes(), labels, pid);
            write_f64(*sum, buf);
            buf.push(b'\n');
        }
        Value::Info => {
            sample(buf, name, suffix::INFO.as_bytes(), labels, pid);
            buf.extend_from_slice(b"1.0\n");
        }
        Value::State { states, index } => {
            state_lines(family, series, states, *index, Escaping::default(), buf);
        }
    }
}

/// Appends a stateset series' lines: one per state, labelled with the family's name (in
/// label order, as prometheus_client sorts them), 1 for the current state and 0 for the
/// others. Names are escaped by `escaping`.
fn state_lines(
    family: &Family,
    series: &Series,
    states: &[String],
    index: usize,
    escaping: Escaping,
    buf: &mut Vec<u8>,
) {
    let name = &*family.name;
    let quoted = escaping == Escaping::AllowUtf8 && !is_legacy_metric_name(name);
    let exposed = escaped_name(name, true, escaping);
    let at = series.labels.pairs.partition_point(|(n, _)| **n < *name);
    let mut labels = String::new();
    for (i, state) in states.iter().enumerate() {
        labels.clear();
        let pairs = series.labels.pairs[..at]
            .iter()
            .map(|(n, v)| (&**n, &**v))
            .chain([(name, state.as_str())])
            .chain(series.labels.pairs[at..].iter().map(|(n, v)| (&**n, &**v)));
        for (n, v) in pairs {
            if !labels.is_empty() || quoted {
                labels.push(',');
            }
            escape_name(n, false, escaping, &mut labels);
            labels.push_str("=\"");
            escape_label_value(v, &mut labels);
            labels.push('"');
        }
        if let Some(pid) = series.pid {
            labels.push_str(&format!(",pid=\"{pid}\""));
        }
        // Under allow-utf-8, a name outside the classic set goes inside the braces.
        if quoted {
            buf.push(b'{');
            buf.extend_from_slice(exposed.as_bytes());
        } else {
            buf.extend_from_slice(exposed.as_bytes());
            buf.push(b'{');
        }
        buf.extend_from_slice(labels.as_bytes());
        buf.extend_from_slice(if i == index { b"} 1.0\n" } else { b"} 0.0\n" });
    }
}

/// Appends the `_created` line of a series whose family and label names are exposed as they
/// are.
fn render_created(
    family: &Family,
    series: &Series,
    text: Option<&SeriesText>,
    created_unix_nanos: u64,
    scratch: &mut Scratch,
    buf: &mut Vec<u8>,
) {
    let labels: &str = match text {
        Some(text) => &text.rendered,
        None => &scratch.labels,
    };
    let name = family.name.as_bytes();
    sample(buf, name, suffix::CREATED.as_bytes(), labels, series.pid);
    write_f64(unix_seconds(created_unix_nanos), buf);
    buf.push(b'\n');
}

/// What OpenMetrics adds to a series' lines: its `_created` sample and its exemplars.
#[derive(Clone, Copy, Default)]
struct Late<'a> {
    created: Option<u64>,
    exemplars: Option<&'a [Option<Exemplar>]>,
}

impl Late<'_> {
    /// Ends a sample line (its value written) with exemplar `i`, if there is one:
    /// ` # {labels} value timestamp`, as OpenMetrics writes it.
    fn end_line(&self, i: usize, buf: &mut Vec<u8>) {
        let Some(exemplar) = self
            .exemplars
            .and_then(|e| e.get(i))
            .and_then(Option::as_ref)
        else {
            if buf.last() != Some(&b'\n') {
                buf.push(b'\n');
            }
            return;
        };
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        buf.extend_from_slice(b" # {");
        let mut labels = String::new();
        for (name, value) in &exemplar.labels {
            if !labels.is_empty() {
                labels.push(',');
            }
            // Exemplar label names are classic ones (checked when stored and read).
            labels.push_str(name);
            labels.push_str("=\"");
            escape_label_value(value, &mut labels);
            labels.push('"');
        }
        buf.extend_from_slice(labels.as_bytes());
        buf.extend_from_slice(b"} ");
        write_f64(exemplar.value, buf);
        buf.push(b' ');
        write_f64(unix_seconds(exemplar.unix_nanos), buf);
        buf.push(b'\n');
    }
}

/// Appends the lines of a series whose family or label names are not exposed as they are,
/// or that has exemplars: each name escaped by `escaping`, and under
/// [`Escaping::AllowUtf8`] a quoted sample name inside the braces
/// (`{"my.name_total",a="x"} 1.0`).
fn render_escaped_series(
    family: &Family,
    series: &Series,
    escaping: Escaping,
    late: Late<'_>,
    scratch: &Scratch,
    buf: &mut Vec<u8>,
) {
    let mut labels = String::new();
    for (name, value) in &series.labels.pairs {
        if !labels.is_empty() {
            labels.push(',');
        }
        escape_name(name, false, escaping, &mut labels);
        labels.push_str("=\"");
        escape_label_value(value, &mut labels);
        labels.push('"');
    }
    if let Some(pid) = series.pid {
        if !labels.is_empty() {
            labels.push(',');
        }
        labels.push_str(&format!("pid=\"{pid}\""));
    }
    let line = |buf: &mut Vec<u8>, suffix: &str, le: Option<&[u8]>| {
        let sample = format!("{}{suffix}", family.name);
        let quoted = escaping == Escaping::AllowUtf8 && !is_legacy_metric_name(&sample);
        let name = escaped_name(&sample, true, escaping);
        let any_labels = quoted || !labels.is_empty() || le.is_some();
        if quoted {
            buf.push(b'{');
            buf.extend_from_slice(name.as_bytes());
            if !labels.is_empty() || le.is_some() {
                buf.push(b',');
            }
        } else {
            buf.extend_from_slice(name.as_bytes());
            if any_labels {
                buf.push(b'{');
            }
        }
        buf.extend_from_slice(labels.as_bytes());
        if let Some(le) = le {
            if !labels.is_empty() {
                buf.push(b',');
            }
            buf.extend_from_slice(b"le=\"");
            buf.extend_from_slice(le);
            buf.push(b'"');
        }
        if any_labels {
            buf.push(b'}');
        }
        buf.push(b' ');
    };
    match &series.value {
        Value::Counter(v) => {
            line(buf, suffix::TOTAL, None);
            write_f64(*v, buf);
            late.end_line(0, buf);
        }
        Value::Gauge(v) => {
            line(buf, "", None);
            write_f64(*v, buf);
            buf.push(b'\n');
        }
        Value::Histogram { buckets, sum } => {
            let mut cumulative = 0u64;
            let mut start = 0;
            for (i, (count, &end)) in buckets.iter().zip(&scratch.le_ends).enumerate() {
                // Saturating, as the other paths.
                cumulative = cumulative.saturating_add(*count);
                line(buf, suffix::BUCKET, Some(&scratch.les[start..end]));
                write_count(buf, cumulative);
                late.end_line(i, buf);
                start = end;
            }
            line(buf, suffix::COUNT, None);
            write_count(buf, cumulative);
            line(buf, suffix::SUM, None);
            write_f64(*sum, buf);
            buf.push(b'\n');
        }
        Value::Summary { count, sum } => {
            line(buf, suffix::COUNT, None);
            write_count(buf, *count);
            line(buf, suffix::SUM, None);
            write_f64(*sum, buf);
            buf.push(b'\n');
        }
        Value::Info => {
            line(buf, suffix::INFO, None);
            buf.extend_from_slice(b"1.0\n");
        }
        Value::State { states, index } => {
            state_lines(family, series, states, *index, escaping, buf);
        }
    }
    if let Some(created) = late.created {
        line(buf, suffix::CREATED, None);
        write_f64(unix_seconds(created), buf);
        buf.push(b'\n');
    }
}

/// The text before the value of every sample line of one series (without a `pid` label),
/// in output order: a counter's or gauge's one line; a histogram's bucket lines, `_count`
/// and `_sum`; a summary's `_count` and `_sum`. The same in both formats.
#[derive(Debug)]
pub(crate) struct LinePrefixes {
    /// What the lines were built for.
    name: Arc<str>,
    kind: MetricKind,
    bounds: Arc<[f64]>,
    /// The prefixes, concatenated.
    bytes: Box<[u8]>,
    /// End offset of each prefix in `bytes`.
    ends: Box<[u32]>,
    /// Bytes counted in the process's cache budget until dropped.
    claimed: usize,
}

impl Drop for LinePrefixes {
    fn drop(&mut self) {
        // SYNC POINT prefix-cache-budget: relaxed, as where it is claimed.
        CACHED_PREFIX_BYTES.fetch_sub(self.claimed, Ordering::Relaxed);
    }
}

/// The most bytes of line prefixes cached for one series: a series with wide labels or many
/// buckets is assembled at each render instead.
const MAX_CACHED_PREFIXES: usize = 16 * 1024;

/// The most bytes of line prefixes cached in this process: the cache of a huge directory
/// would otherwise hold about as much as its exposition. Series past it are assembled at
/// each render.
pub const MAX_CACHED_PREFIX_BYTES: usize = 64 << 20;

/// Bytes of line prefixes cached now, in this process.
static CACHED_PREFIX_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Bytes of line prefixes cached now in this process (at most [`MAX_CACHED_PREFIX_BYTES`]).
pub fn cached_prefix_bytes() -> usize {
    // SYNC POINT prefix-cache-budget: relaxed; a budget, not a publication.
    CACHED_PREFIX_BYTES.load(Ordering::Relaxed)
}

impl LinePrefixes {
    /// The prefixes of a series with `labels` in `family`; `None` when they would take more
    /// than [`MAX_CACHED_PREFIXES`] bytes.
    pub(crate) fn build(family: &Family, labels: &str) -> Option<Self> {
        let lines = match family.kind {
            MetricKind::Counter | MetricKind::Gauge => 1,
            MetricKind::Histogram => family.bounds.len() + 3,
            MetricKind::Summary => 2,
            // Assembled at each render: few series, labels of their own.
            MetricKind::Info | MetricKind::StateSet => return None,
        };
        // Each line: the name, a suffix of at most 7 bytes, braces and the labels, and an
        // `le` label of at most 32 bytes.
        let estimate = lines * (family.name.len() + labels.len() + 48);
        if estimate > MAX_CACHED_PREFIXES {
            return None;
        }
        // Claimed before building, released on drop. SYNC POINT prefix-cache-budget:
        // relaxed; only the total matters, and a race can at most pass it by a series.
        let claimed = CACHED_PREFIX_BYTES.fetch_add(estimate, Ordering::Relaxed);
        if claimed + estimate > MAX_CACHED_PREFIX_BYTES {
            CACHED_PREFIX_BYTES.fetch_sub(estimate, Ordering::Relaxed);
            return None;
        }
        let name = family.name.as_bytes();
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        let mut line = |bytes: &mut Vec<u8>, write: &dyn Fn(&mut Vec<u8>)| {
            write(bytes);
            ends.push(bytes.len() as u32);
        };
        match family.kind {
            MetricKind::Counter => line(&mut bytes, &|b| {
                sample(b, name, suffix::TOTAL.as_bytes(), labels, None)
            }),
            MetricKind::Gauge => line(&mut bytes, &|b| sample(b, name, b"", labels, None)),
            MetricKind::Histogram => {
                let bounds = family.bounds.iter().map(Some).chain([None]);
                for bound in bounds {
                    line(&mut bytes, &|b| {
                        open_bucket(b, name, labels, None);
                        match bound {
                            Some(&bound) => write_le(bound, b),
                            None => b.extend_from_slice(b"+Inf"),
                        }
                        b.extend_from_slice(b"\"} ");
                    });
                }
                line(&mut bytes, &|b| {
                    sample(b, name, suffix::COUNT.as_bytes(), labels, None)
                });
                line(&mut bytes, &|b| {
                    sample(b, name, suffix::SUM.as_bytes(), labels, None)
                });
            }
            MetricKind::Summary => {
                line(&mut bytes, &|b| {
                    sample(b, name, suffix::COUNT.as_bytes(), labels, None)
                });
                line(&mut bytes, &|b| {
                    sample(b, name, suffix::SUM.as_bytes(), labels, None)
                });
            }
            MetricKind::Info | MetricKind::StateSet => return None,
        }
        Some(Self {
            name: Arc::clone(&family.name),
            kind: family.kind,
            bounds: Arc::clone(&family.bounds),
            bytes: bytes.into_boxed_slice(),
            ends: ends.into_boxed_slice(),
            claimed: estimate,
        })
    }

    /// Whether these lines are `family`'s.
    pub(crate) fn belongs_to(&self, family: &Family) -> bool {
        self.kind == family.kind
            && (Arc::ptr_eq(&self.name, &family.name) || self.name == family.name)
            && (Arc::ptr_eq(&self.bounds, &family.bounds) || self.bounds == family.bounds)
    }

    fn prefix(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[start..self.ends[i] as usize]
    }

    /// Appends the sample lines of `value`; false (nothing written) when `value` does not
    /// have the shape of these lines.
    fn render(&self, value: &Value, buf: &mut Vec<u8>) -> bool {
        match (value, self.kind) {
            (Value::Counter(v), MetricKind::Counter) | (Value::Gauge(v), MetricKind::Gauge) => {
                buf.extend_from_slice(self.prefix(0));
                write_f64(*v, buf);
                buf.push(b'\n');
            }
            (Value::Histogram { buckets, sum }, MetricKind::Histogram)
                if buckets.len() + 2 == self.ends.len() =>
            {
                let mut cumulative = 0u64;
                // The digits of `cumulative`, formatted again only when a bucket adds to it:
                // runs of empty buckets (most of a latency histogram's) repeat them.
                let mut digits = itoa::Buffer::new();
                let mut text = digits.format(0u64).as_bytes();
                for (i, &count) in buckets.iter().enumerate() {
                    if count != 0 {
                        // Saturating, as the assembled lines: a corrupt segment's counts can
                        // add up past u64.
                        cumulative = cumulative.saturating_add(count);
                        text = digits.format(cumulative).as_bytes();
                    }
                    buf.extend_from_slice(self.prefix(i));
                    buf.extend_from_slice(text);
                    buf.push(b'\n');
                }
                buf.extend_from_slice(self.prefix(buckets.len()));
                buf.extend_from_slice(text);
                buf.push(b'\n');
                buf.extend_from_slice(self.prefix(buckets.len() + 1));
                write_f64(*sum, buf);
                buf.push(b'\n');
            }
            (Value::Summary { count, sum }, MetricKind::Summary) => {
                buf.extend_from_slice(self.prefix(0));
                write_count(buf, *count);
                buf.extend_from_slice(self.prefix(1));
                write_f64(*sum, buf);
                buf.push(b'\n');
            }
            _ => return false,
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::SeriesLabels;

    fn labels(pairs: &[(&str, &str)]) -> Arc<SeriesLabels> {
        Arc::new(SeriesLabels::new(
            pairs.iter().map(|&(n, v)| (n.into(), v.into())).collect(),
        ))
    }

    fn family(name: &str, kind: MetricKind, bounds: &[f64], series: Vec<Series>) -> Family {
        Family {
            name: name.into(),
            kind,
            help: "Help.".into(),
            bounds: bounds.into(),
            series,
        }
    }

    /// Renders `snapshot` in text format, with `text` when given.
    fn text(snapshot: &Snapshot, text: Option<&SnapshotText>) -> String {
        let mut buf = Vec::new();
        let filter = PrefixFilter::default();
        Exposition {
            snapshot,
            text,
            extra: &[],
            format: Format::Prometheus,
            filter: &filter,
            escaping: Escaping::default(),
            created: true,
        }
        .render_some(&mut Cursor::default(), &mut buf, usize::MAX);
        String::from_utf8(buf).unwrap()
    }

    fn series(labels: &Arc<SeriesLabels>, pid: Option<u32>, value: Value) -> Series {
        Series {
            labels: Arc::clone(labels),
            pid,
            created_unix_nanos: None,
            exemplars: None,
            value,
        }
    }

    #[test]
    fn cached_line_prefixes_render_the_same_bytes_every_time() {
        let l = labels(&[("model", "m\"1"), ("rank", "0")]);
        let empty = labels(&[]);
        let build = || {
            vec![
                family(
                    "a",
                    MetricKind::Counter,
                    &[],
                    vec![series(&l, None, Value::Counter(2.5))],
                ),
                family(
                    "b",
                    MetricKind::Gauge,
                    &[],
                    vec![
                        series(&empty, None, Value::Gauge(-1.0)),
                        series(&l, Some(7), Value::Gauge(3.0)),
                    ],
                ),
                family(
                    "c",
                    MetricKind::Histogram,
                    &[0.5, 1.0],
                    vec![series(
                        &empty,
                        None,
                        Value::Histogram {
                            buckets: vec![1, 0, 2],
                            sum: 4.25,
                        },
                    )],
                ),
                family(
                    "d",
                    MetricKind::Summary,
                    &[],
                    vec![series(&empty, None, Value::Summary { count: 3, sum: 1.5 })],
                ),
                // Empty buckets first and last: counts repeated from before them.
                family(
                    "e",
                    MetricKind::Histogram,
                    &[1.0, 2.0, 3.0],
                    vec![series(
                        &empty,
                        None,
                        Value::Histogram {
                            buckets: vec![0, 2, 0, 0],
                            sum: 3.0,
                        },
                    )],
                ),
            ]
        };
        let expected = "# HELP a_total Help.\n# TYPE a_total counter\n\
            a_total{model=\"m\\\"1\",rank=\"0\"} 2.5\n\
            # HELP b Help.\n# TYPE b gauge\nb -1.0\nb{model=\"m\\\"1\",rank=\"0\",pid=\"7\"} 3.0\n\
            # HELP c Help.\n# TYPE c histogram\n\
            c_bucket{le=\"0.5\"} 1\nc_bucket{le=\"1.0\"} 1\nc_bucket{le=\"+Inf\"} 3\n\
            c_count 3\nc_sum 4.25\n\
            # HELP d Help.\n# TYPE d summary\nd_count 3\nd_sum 1.5\n\
            # HELP e Help.\n# TYPE e histogram\n\
            e_bucket{le=\"1.0\"} 0\ne_bucket{le=\"2.0\"} 2\ne_bucket{le=\"3.0\"} 2\n\
            e_bucket{le=\"+Inf\"} 2\ne_count 2\ne_sum 3.0\n";
        // The first render with texts builds each series' line prefixes, the others use
        // them (a series with a pid assembles its lines); without texts every line is
        // assembled. A text whose labels are not the series' own is not used.
        let snapshot = Snapshot { families: build() };
        let texts = SnapshotText::of(&snapshot);
        for round in 0..3 {
            assert_eq!(text(&snapshot, Some(&texts)), expected, "round {round}");
        }
        assert_eq!(text(&snapshot, None), expected);
        let other = Snapshot { families: build() };
        assert_eq!(text(&other, Some(&texts)), expected);
    }

    #[test]
    fn pieces_of_any_size_join_to_the_whole_exposition() {
        let l = labels(&[("model", "m")]);
        // Wide enough that its line prefixes are not cached.
        let wide = labels(&[("path", &"p\\".repeat(2000))]);
        let bounds: Vec<f64> = (0..200).map(f64::from).collect();
        let families = vec![
            family(
                "a",
                MetricKind::Counter,
                &[],
                vec![series(&l, None, Value::Counter(1.0))],
            ),
            family("empty", MetricKind::Gauge, &[], vec![]),
            family(
                "h",
                MetricKind::Histogram,
                &bounds,
                vec![
                    series(
                        &l,
                        None,
                        Value::Histogram {
                            buckets: vec![1; 201],
                            sum: 2.0,
                        },
                    ),
                    series(
                        &wide,
                        None,
                        Value::Histogram {
                            buckets: vec![2; 201],
                            sum: 3.0,
                        },
                    ),
                ],
            ),
        ];
        let extra = vec![
            family(
                "b",
                MetricKind::Gauge,
                &[],
                vec![series(&l, None, Value::Gauge(2.0))],
            ),
            family(
                "z",
                MetricKind::Gauge,
                &[],
                vec![series(&l, None, Value::Gauge(3.0))],
            ),
        ];
        let snapshot = Snapshot { families };
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let filter = PrefixFilter::default();
            let texts = SnapshotText::of(&snapshot);
            let exposition = Exposition {
                snapshot: &snapshot,
                text: Some(&texts),
                extra: &extra,
                format,
                filter: &filter,
                escaping: Escaping::default(),
                created: true,
            };
            let mut whole = Vec::new();
            render_into(&snapshot, &extra, format, &filter, &mut whole);
            let text = String::from_utf8(whole.clone()).unwrap();
            let names: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("# TYPE "))
                .collect();
            assert_eq!(names.len(), 5, "{names:?}");
            assert!(text.contains(&format!("{}\"", "p\\\\".repeat(2000))));
            for piece in [1, 100, 4096, 1 << 20] {
                let mut cursor = Cursor::default();
                let (mut joined, mut pieces) = (Vec::new(), 0);
                loop {
                    let mut buf = Vec::new();
                    let done = exposition.render_some(&mut cursor, &mut buf, piece);
                    assert!(!buf.is_empty() || done);
                    joined.extend_from_slice(&buf);
                    pieces += 1;
                    if done {
                        break;
                    }
                }
                assert!(cursor.is_done());
                assert_eq!(joined, whole, "{format:?} in pieces of {piece}");
                if piece == 1 {
                    // One piece per header (5) and per series (5), and the end.
                    assert_eq!(pieces, 11);
                }
            }
        }
    }

    #[test]
    fn the_widest_series_within_the_limits_renders_in_max_series_text() {
        use shmetrics_layout::limits::{
            MAX_BUCKETS, MAX_LABEL_SET_LEN, MAX_LABELS, MAX_SERIES_TEXT,
        };
        // Every byte of the label set in values that escape to two bytes; bounds and
        // counts with the longest renderings.
        let names: Vec<String> = (0..MAX_LABELS).map(|i| format!("l{i:02}")).collect();
        let per_value = (MAX_LABEL_SET_LEN - 3 * MAX_LABELS) / MAX_LABELS;
        let pairs: Vec<(&str, String)> = names
            .iter()
            .map(|n| (n.as_str(), "\"".repeat(per_value)))
            .collect();
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let l = labels(&pairs);
        let bounds: Vec<f64> = (0..MAX_BUCKETS)
            .map(|i| -1.2345678901234567e-300 * (MAX_BUCKETS - i) as f64)
            .collect();
        let mut buckets = vec![0; MAX_BUCKETS + 1];
        buckets[0] = u64::MAX / 2;
        let name = "n".repeat(shmetrics_layout::names::MAX_NAME_LEN);
        let f = family(
            &name,
            MetricKind::Histogram,
            &bounds,
            vec![series(
                &l,
                None,
                Value::Histogram {
                    buckets,
                    sum: -1.2345678901234567e-300,
                },
            )],
        );
        let text = text(&Snapshot { families: vec![f] }, None);
        let header = text
            .find("\n# TYPE")
            .and_then(|i| text[i + 1..].find('\n').map(|j| i + j + 2));
        let series_len = text.len() - header.unwrap();
        assert!(series_len > MAX_SERIES_TEXT / 2, "{series_len}");
        assert!(
            series_len <= MAX_SERIES_TEXT,
            "{series_len} > {MAX_SERIES_TEXT}"
        );
    }
}
