//! Embedding the engine metrics in a Rust server that exposes its own metrics with the
//! official [`prometheus_client`] crate.
//!
//! The design mirrors [`crate::prometheus_collector`] (the tikv crate's collector): a
//! [`DirCollector`] reads a metrics directory (the engines' `PROMETHEUS_MULTIPROC_DIR`) and
//! keeps the families a [`PrefixFilter`] selects. Two ways to use it:
//!
//! - **[`encode_with_host`] (recommended).** The server keeps its own
//!   [`prometheus_client::registry::Registry`] and, on each scrape, encodes it together with
//!   the collector, in OpenMetrics or in the Prometheus text format. A family that both
//!   sides have is emitted once, the host's, and the clash is reported: in
//!   [`Encoded::clashes`], as a `log::warn!` once per name, and in the
//!   `shmetrics_collector_clashes` gauge appended to the output.
//! - **Registering the collector** (`registry.register_collector(Box::new(collector))`):
//!   every encoding of the registry then includes the engine families. prometheus-client
//!   does not compare names across metrics and collectors (a name registered twice is
//!   encoded twice), so the server must make sure no name clashes, for example with
//!   [`DirCollector::exclude`] naming its own families. Registering the same directory twice
//!   would double every engine series: prometheus-client has no collector identity to
//!   refuse it.
//!
//! # Why duplicates are removed in [`encode_with_host`] and not inside `encode()`
//!
//! A [`Collector`] gets a [`DescriptorEncoder`] and can only write to it: it cannot ask the
//! registry that called it what the other metrics are. Only code that sees both sides, after
//! the host registry was encoded, can drop one of them. [`encode_with_host`] encodes the host
//! registry first, reads the family and sample names it wrote, then encodes the directory's
//! families that clash with none of them. A prefix or labels the host gave its registry
//! (`Registry::with_prefix`) apply to the host's metrics only; registered directly in such
//! a registry, the collector's families get them too.
//!
//! # Format notes
//!
//! Counters are named as the engines named them, with `_total` on their samples (the
//! encoders add it). Histograms carry their bounds and `+Inf`. prometheus-client has no
//! summary type: a summary (count and sum, as `prometheus_client` in multiprocess mode
//! writes) is encoded as two `unknown` (`untyped`) families `<name>_count` and
//! `<name>_sum`, so the samples keep the names and values Prometheus would have stored.
//! Gauges in the `all` and `liveall` modes carry a `pid` label after their own labels. The
//! OpenMetrics encoder of prometheus-client writes help text unescaped, so a newline in a
//! help text becomes a space (in both formats, for identical help text). For
//! byte-compatible output without prometheus-client, use [`crate::Reader::scrape`].
//!
//! # Example
//!
//! ```no_run
//! use prometheus_client::metrics::counter::Counter;
//! use prometheus_client::registry::Registry;
//! use shmetrics::PrefixFilter;
//! use shmetrics::Format;
//! use shmetrics::prometheus_client_collector::{DirCollector, encode_with_host};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut host = Registry::default();
//! let requests = Counter::<u64>::default();
//! host.register("dynamo_component_requests", "Requests served.", requests.clone());
//!
//! let engines = DirCollector::open(
//!     std::env::var("PROMETHEUS_MULTIPROC_DIR")?,
//!     PrefixFilter::new(["vllm:", "lmcache:"]),
//! )?;
//!
//! // On each scrape of /metrics:
//! let mut body = String::new();
//! let encoded = encode_with_host(&mut body, &host, &engines, Format::OpenMetrics)?;
//! for name in &encoded.clashes {
//!     eprintln!("{name} is served by the host; the engines' family was dropped");
//! }
//! # Ok(()) }
//! ```

use std::collections::HashSet;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, LabelSetEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use shmetrics_layout::names::{Escaping, escaped_name};
use shmetrics_layout::{MetricKind, suffix};
use shmetrics_reader::snapshot::{Family, Series, SeriesLabels, Value};
use shmetrics_reader::{Format, PrefixFilter, Reader, ScrapeReport};

use crate::dir_source::{DirSource, dir_collector_builders};
pub use crate::prometheus_collector::CLASHES_FAMILY;
use crate::prometheus_collector::CLASHES_HELP;

/// A [`prometheus_client`] [`Collector`] over a metrics directory: each `encode()` takes a
/// fresh snapshot and writes the families kept by its filter.
pub struct DirCollector {
    source: DirSource,
}

impl std::fmt::Debug for DirCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirCollector")
            .field("filter", &self.source.filter)
            .field("excluded", &self.source.excluded)
            .field("self_metrics", &self.source.self_metrics)
            .finish_non_exhaustive()
    }
}

impl DirCollector {
    /// A collector over `reader`'s directory keeping the families `filter` selects.
    pub fn new(reader: Reader, filter: PrefixFilter) -> Self {
        Self {
            source: DirSource::new(reader, filter),
        }
    }

    dir_collector_builders!();

    /// Takes a snapshot and returns the kept families (shmetrics' merged form, by name)
    /// with the reader's report of the scrape.
    pub fn families_with_report(&self) -> (Vec<Family>, ScrapeReport) {
        self.source.families()
    }
}

impl Collector for DirCollector {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        encode_families(&self.source.families().0, encoder)
    }
}

/// Families taken from one snapshot, encoded by a registry of their own.
#[derive(Debug)]
struct Taken(Vec<Family>);

impl Collector for Taken {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        encode_families(&self.0, encoder)
    }
}

/// A series' labels (sorted by name) and, for per-process gauges, `pid` last.
struct SeriesLabelSet<'a>(&'a Series);

impl EncodeLabelSet for SeriesLabelSet<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (name, value) in &self.0.labels.pairs {
            // As the classic formats expose names outside their character set.
            let name = escaped_name(name, false, Escaping::Underscores);
            (name.as_str(), &**value).encode(encoder.encode_label())?;
        }
        if let Some(pid) = self.0.pid {
            ("pid", pid.to_string().as_str()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// A stateset series' labels with one state under the family's name, in label order.
struct StateLabelSet<'a>(&'a Series, &'a str, &'a str);

impl EncodeLabelSet for StateLabelSet<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Self(series, name, state) = *self;
        let at = series.labels.pairs.partition_point(|(n, _)| **n < *name);
        let pairs = (series.labels.pairs[..at].iter())
            .map(|(n, v)| (&**n, &**v))
            .chain([(name, state)])
            .chain(series.labels.pairs[at..].iter().map(|(n, v)| (&**n, &**v)));
        for (n, v) in pairs {
            let n = escaped_name(n, false, Escaping::Underscores);
            (n.as_str(), v).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// Help text the OpenMetrics encoder (which does not escape) can write on one line.
fn one_line(help: &str) -> std::borrow::Cow<'_, str> {
    if help.contains('\n') {
        help.replace('\n', " ").into()
    } else {
        help.into()
    }
}

fn encode_families(
    families: &[Family],
    mut encoder: DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    for family in families {
        let help = one_line(&family.help);
        if family.kind == MetricKind::Summary {
            encode_summary(family, &help, &mut encoder)?;
            continue;
        }
        let metric_type = match family.kind {
            MetricKind::Counter => MetricType::Counter,
            // An info and a stateset as gauges, as prometheus_client's text format has them.
            MetricKind::Gauge | MetricKind::Info | MetricKind::StateSet => MetricType::Gauge,
            MetricKind::Histogram | MetricKind::Summary => MetricType::Histogram,
        };
        let name = match family.kind {
            MetricKind::Info => format!("{}{}", family.name, suffix::INFO),
            _ => family.name.to_string(),
        };
        let name = escaped_name(&name, true, Escaping::Underscores);
        let mut descriptor = encoder.encode_descriptor(&name, &help, None, metric_type)?;
        for series in &family.series {
            if let Value::State { states, index } = &series.value {
                // One metric per state.
                for (i, state) in states.iter().enumerate() {
                    let with_state = StateLabelSet(series, &family.name, state);
                    let mut metric = descriptor.encode_family(&with_state)?;
                    metric.encode_gauge(&i64::from(i == *index))?;
                }
                continue;
            }
            let labels = SeriesLabelSet(series);
            let mut metric = descriptor.encode_family(&labels)?;
            match &series.value {
                Value::Counter(v) => metric.encode_counter::<NoLabelSet, _, f64>(v, None)?,
                Value::Gauge(v) => metric.encode_gauge(v)?,
                Value::Histogram { buckets, sum } => {
                    let bounds = family.bounds.iter().copied().chain([f64::INFINITY]);
                    let pairs: Vec<(f64, u64)> = bounds.zip(buckets.iter().copied()).collect();
                    let count = buckets.iter().sum();
                    metric.encode_histogram::<NoLabelSet>(*sum, count, &pairs, None)?;
                }
                Value::Info => metric.encode_gauge(&1i64)?,
                // Written above, one metric per state.
                Value::State { .. } => {}
                // Summaries are encoded by `encode_summary`; a family has one kind.
                Value::Summary { .. } => return Err(std::fmt::Error),
            }
        }
    }
    Ok(())
}

/// A summary as two `unknown` families, `<name>_count` and `<name>_sum`.
fn encode_summary(
    family: &Family,
    help: &str,
    encoder: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    for part in ["count", "sum"] {
        let name = escaped_name(
            &format!("{}_{part}", family.name),
            true,
            Escaping::Underscores,
        );
        let help = format!("{help} ({part} of the summary's observations)");
        let mut descriptor = encoder.encode_descriptor(&name, &help, None, MetricType::Unknown)?;
        for series in &family.series {
            let Value::Summary { count, sum } = series.value else {
                return Err(std::fmt::Error);
            };
            let labels = SeriesLabelSet(series);
            let mut metric = descriptor.encode_family(&labels)?;
            match part {
                "count" => metric.encode_gauge(&count)?,
                _ => metric.encode_gauge(&sum)?,
            }
        }
    }
    Ok(())
}

/// Every name a family of the directory occupies: its family names (a counter's with and
/// without `_total`) and its sample names, in either text format.
fn occupied_names(family: &Family) -> Vec<String> {
    let name = &*family.name;
    // prometheus-client writes `_created` for counters and histograms.
    let created = match family.kind {
        MetricKind::Counter | MetricKind::Histogram => Some(suffix::CREATED),
        MetricKind::Gauge | MetricKind::Summary | MetricKind::Info | MetricKind::StateSet => None,
    };
    let samples = family.kind.sample_suffixes().iter().copied();
    std::iter::once("")
        .chain(samples.filter(|s| !s.is_empty()))
        .chain(created)
        .map(|s| format!("{name}{s}"))
        .collect()
}

/// The names a text exposition uses: the family names of its `# HELP`/`# TYPE`/`# UNIT`
/// lines and the names of its samples.
fn exposition_names(text: &str) -> HashSet<String> {
    let mut names = HashSet::new();
    for line in text.lines() {
        let name = match line.strip_prefix('#') {
            Some(comment) => {
                let mut words = comment.split_ascii_whitespace();
                match words.next() {
                    Some("HELP" | "TYPE" | "UNIT") => words.next(),
                    _ => None,
                }
            }
            None => line.split(['{', ' ']).next(),
        };
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            names.insert(name.to_owned());
        }
    }
    names
}

/// Encodes `registry` in `format` with prometheus-client's encoder of that format
/// ([`prometheus_client::encoding::text`] for OpenMetrics,
/// [`prometheus_client::encoding::prometheus_text`] for text 0.0.4).
fn encode_registry(format: Format, out: &mut String, registry: &Registry) -> std::fmt::Result {
    match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode_registry(out, registry),
        Format::Prometheus => prometheus_client::encoding::prometheus_text::encode(out, registry),
    }
}

/// The result of [`encode_with_host`].
#[derive(Clone, Debug, Default)]
pub struct Encoded {
    /// Names of the directory families dropped because the host's exposition uses one of
    /// their names (family or sample name), sorted.
    pub clashes: Vec<String>,
    /// What the directory scrape found (segment counts, problems, conflicts).
    pub report: ScrapeReport,
}

/// Encodes `host`, then the kept families of `dir` that clash with none of its names, then
/// the [`CLASHES_FAMILY`] gauge (unless the host has a family of that name), into `out`
/// in `format`: each name appears once; on a clash the host's family is kept and the
/// directory's dropped and reported (see [`Encoded`]). `dir` must not also be registered
/// in `host`.
///
/// # Errors
/// Errors of the encoders.
pub fn encode_with_host(
    out: &mut String,
    host: &Registry,
    dir: &DirCollector,
    format: Format,
) -> Result<Encoded, std::fmt::Error> {
    let start = out.len();
    encode_registry(format, out, host)?;
    let host_names = exposition_names(&out[start..]);
    let (families, report) = dir.source.families();
    let mut clashes = Vec::new();
    let mut kept = Vec::with_capacity(families.len() + 1);
    for family in families {
        if occupied_names(&family)
            .iter()
            .any(|n| host_names.contains(n))
        {
            dir.source.warn_once(
                &family.name,
                "the host registry has a family with this name (or a clashing sample \
                 name); the host's is emitted and the metrics directory's dropped",
            );
            clashes.push(family.name.to_string());
        } else {
            kept.push(family);
        }
    }
    clashes.sort();
    if !host_names.contains(CLASHES_FAMILY) {
        kept.push(clashes_family(clashes.len()));
    }
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Taken(kept)));
    encode_registry(format, out, &registry)?;
    if format == Format::OpenMetrics {
        prometheus_client::encoding::text::encode_eof(out)?;
    }
    Ok(Encoded { clashes, report })
}

fn clashes_family(count: usize) -> Family {
    Family {
        name: CLASHES_FAMILY.into(),
        kind: MetricKind::Gauge,
        help: CLASHES_HELP.into(),
        bounds: Arc::new([]),
        series: vec![Series {
            labels: Arc::new(SeriesLabels::new(Vec::new())),
            pid: None,
            created_unix_nanos: None,
            exemplars: None,
            value: Value::Gauge(count as f64),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_reads_comments_and_samples() {
        let text = "# HELP a_total A.\n# TYPE a counter\na_total{x=\"1 2\"} 1\n\
                    # UNIT b_seconds seconds\nb_seconds 2\n# EOF\n# some comment\n";
        let mut names: Vec<String> = exposition_names(text).into_iter().collect();
        names.sort();
        assert_eq!(names, ["a", "a_total", "b_seconds"]);
    }

    #[test]
    fn help_text_is_kept_on_one_line() {
        assert_eq!(one_line("a\nb"), "a b");
        assert!(matches!(one_line("ab"), std::borrow::Cow::Borrowed("ab")));
    }
}
