//! A merged snapshot of a directory: what the renderers print.

use std::sync::{Arc, OnceLock};

use shmetrics_layout::MetricKind;

use crate::render::{LinePrefixes, PrefixFilter};

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

    /// Families to render after this snapshot's (self-metrics, an embedder's), sorted by
    /// name, less any whose name a family kept by `filter` already has or an earlier one of
    /// `extra` has: no name is emitted twice. Stable: of equal names the first given wins.
    /// The second list names what was left out, for the caller to report.
    pub fn extra_families(
        &self,
        filter: &PrefixFilter,
        mut extra: Vec<Family>,
    ) -> (Vec<Family>, Vec<Arc<str>>) {
        extra.sort_by(|a, b| a.name.cmp(&b.name));
        let mut kept: Vec<Family> = Vec::with_capacity(extra.len());
        let mut left_out = Vec::new();
        for family in extra {
            let merged = filter.keeps(&family.name) && self.family(&family.name).is_some();
            let repeated = kept.last().is_some_and(|l| l.name == family.name);
            if merged || repeated {
                left_out.push(family.name);
            } else {
                kept.push(family);
            }
        }
        (kept, left_out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauge(name: &str, help: &str) -> Family {
        Family {
            name: name.into(),
            kind: MetricKind::Gauge,
            help: help.into(),
            bounds: Arc::from(&[][..]),
            series: vec![Series {
                labels: Arc::new(SeriesLabels::new(Vec::new())),
                pid: None,
                value: Value::Gauge(1.0),
            }],
        }
    }

    #[test]
    fn extra_families_never_name_a_family_twice() {
        let snapshot = Snapshot {
            families: vec![gauge("app_up", "merged"), gauge("zz_up", "merged")],
        };
        let filter = PrefixFilter::new(["app_", "shmetrics_"]);
        let extra = vec![
            gauge("shmetrics_b", "first"),
            gauge("app_up", "extra"),
            gauge("zz_up", "extra"),
            gauge("shmetrics_a", "only"),
            gauge("shmetrics_b", "second"),
        ];
        let (kept, left_out) = snapshot.extra_families(&filter, extra);
        let kept: Vec<(&str, &str)> = kept.iter().map(|f| (&*f.name, &*f.help)).collect();
        // `zz_up` is filtered out of the merged families, so the extra one is emitted.
        assert_eq!(
            kept,
            [
                ("shmetrics_a", "only"),
                ("shmetrics_b", "first"),
                ("zz_up", "extra")
            ]
        );
        let left_out: Vec<&str> = left_out.iter().map(|n| &**n).collect();
        assert_eq!(left_out, ["app_up", "shmetrics_b"]);
    }
}
