//! A merged snapshot of a directory: what the renderers print.

use std::sync::Arc;

use shmetrics_layout::MetricKind;

/// The labels of one merged series, sorted by label name, with their exposition text
/// rendered once (`a="x",b="y"`, escaped) and shared by every snapshot.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesLabels {
    /// `(name, value)` pairs sorted by name.
    pub pairs: Vec<(Box<str>, Box<str>)>,
    /// The pairs as exposition text, without braces.
    pub rendered: Box<str>,
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
        Self {
            pairs,
            rendered: rendered.into(),
        }
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
