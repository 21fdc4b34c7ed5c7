//! A merged snapshot of a directory: what the renderers print.

use std::sync::{Arc, OnceLock};

use shmetrics_layout::MetricKind;

use crate::render::LinePrefixes;

/// The labels of one merged series, sorted by label name, with their exposition text
/// rendered once (`a="x",b="y"`, escaped) and shared by every snapshot.
///
/// The renderer also caches here, on first use, the text before the value of each sample
/// line of the series (`name_bucket{a="x",le="0.5"} `...): a reader's index keeps one
/// `SeriesLabels` per merged series across scrapes, so a steady-state render copies each
/// line's prefix instead of assembling it. Comparisons and hashing ignore that cache.
pub struct SeriesLabels {
    /// `(name, value)` pairs sorted by name.
    pub pairs: Vec<(Box<str>, Box<str>)>,
    /// The pairs as exposition text, without braces, names as they are.
    pub rendered: Box<str>,
    /// Whether every label name is classic (`[a-zA-Z_][a-zA-Z0-9_]*`), so that `rendered`
    /// is what every escaping scheme but dots exposes.
    pub classic_names: bool,
    lines: OnceLock<Option<LinePrefixes>>,
}

impl std::fmt::Debug for SeriesLabels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesLabels")
            .field("pairs", &self.pairs)
            .field("rendered", &self.rendered)
            .finish_non_exhaustive()
    }
}

impl PartialEq for SeriesLabels {
    fn eq(&self, other: &Self) -> bool {
        self.pairs == other.pairs
    }
}

impl Eq for SeriesLabels {}

impl PartialOrd for SeriesLabels {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SeriesLabels {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.pairs.cmp(&other.pairs)
    }
}

impl std::hash::Hash for SeriesLabels {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.pairs.hash(state);
    }
}

impl SeriesLabels {
    /// Builds the labels from pairs, sorting them by name.
    pub fn new(mut pairs: Vec<(Box<str>, Box<str>)>) -> Self {
        pairs.sort();
        let mut rendered = String::new();
        for (i, (name, value)) in pairs.iter().enumerate() {
            if i > 0 {
                rendered.push(',');
            }
            rendered.push_str(name);
            rendered.push_str("=\"");
            crate::render::escape_label_value(value, &mut rendered);
            rendered.push('"');
        }
        let classic_names = pairs
            .iter()
            .all(|(n, _)| shmetrics_layout::names::is_legacy_label_name(n));
        Self {
            pairs,
            rendered: rendered.into(),
            classic_names,
            lines: OnceLock::new(),
        }
    }

    /// The cached sample-line prefixes of this series in `family`: built on first use; `None`
    /// when they are too large to cache, or were built for another family (name, type or
    /// buckets), which only happens to labels shared across families by hand.
    pub(crate) fn line_prefixes(&self, family: &Family) -> Option<&LinePrefixes> {
        let lines = self
            .lines
            .get_or_init(|| LinePrefixes::build(family, &self.rendered))
            .as_ref()?;
        lines.belongs_to(family).then_some(lines)
    }

    /// The value of label `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| &**v)
    }
}

/// A merged value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Counter total.
    Counter(f64),
    /// Merged gauge value.
    Gauge(f64),
    /// Histogram: per-bucket counts (not cumulative; the last is `+Inf`) and sum.
    Histogram {
        /// Per-bucket counts.
        buckets: Vec<u64>,
        /// Sum of observations.
        sum: f64,
    },
    /// Summary: observation count and sum.
    Summary {
        /// Observation count.
        count: u64,
        /// Sum of observations.
        sum: f64,
    },
}

/// One merged series.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Its labels.
    pub labels: Arc<SeriesLabels>,
    /// For gauges in the `all` and `liveall` modes, the process this value comes from
    /// (rendered as a `pid` label after the others).
    pub pid: Option<u32>,
    /// The value.
    pub value: Value,
}

/// One merged family.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    /// Name (a counter's without `_total`).
    pub name: Arc<str>,
    /// Type.
    pub kind: MetricKind,
    /// Help text, unescaped.
    pub help: Arc<str>,
    /// Finite bucket bounds, for histograms.
    pub bounds: Arc<[f64]>,
    /// Series sorted by labels (then pid).
    pub series: Vec<Series>,
}

/// A merged directory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Families sorted by name; only families with at least one series.
    pub families: Vec<Family>,
}

impl Snapshot {
    /// The family called `name`, if present.
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families
            .binary_search_by(|f| (*f.name).cmp(name))
            .ok()
            .map(|i| &self.families[i])
    }

    /// Number of series.
    pub fn series_count(&self) -> usize {
        self.families.iter().map(|f| f.series.len()).sum()
    }
}
