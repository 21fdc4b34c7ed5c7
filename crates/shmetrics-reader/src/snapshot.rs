//! A merged snapshot of a directory: what the renderers print.

use std::sync::Arc;

use shmetrics_layout::MetricKind;
pub use shmetrics_layout::exemplar::Exemplar;

use crate::filter::PrefixFilter;

/// The labels of one merged series, sorted by label name. A reader's merge index keeps one
/// per merged series across scrapes and shares it with every snapshot; `Display` writes them
/// as exposition text (`a="x",b="y"`, values escaped, names as they are).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesLabels {
    /// `(name, value)` pairs sorted by name.
    pub pairs: Vec<(Box<str>, Box<str>)>,
}

impl SeriesLabels {
    /// Builds the labels from pairs, sorting them by name.
    pub fn new(mut pairs: Vec<(Box<str>, Box<str>)>) -> Self {
        pairs.sort();
        Self { pairs }
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
    /// An info: its labels are the series' (the family's and the info's own); its sample,
    /// `name_info`, is 1.
    Info,
    /// A stateset in the state at `index` of `states`: one sample per state, labelled with
    /// the family's name, 1 for that state and 0 for the others.
    State {
        /// The family's states.
        states: Arc<[String]>,
        /// The current one.
        index: usize,
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
    /// A counter's, histogram's or summary's creation time in ns since the Unix epoch: the
    /// oldest among the processes that have the series, dead and compacted ones included
    /// (OpenMetrics' `_created` sample). `None` for gauges and where it is not known.
    pub created_unix_nanos: Option<u64>,
    /// A counter's exemplar (one entry, its `_total` sample's) or a histogram's (one entry
    /// per bucket, `+Inf` last): the newest of any process, dead and compacted ones included,
    /// shown in OpenMetrics only. `None` when no process stored one.
    pub exemplars: Option<Exemplars>,
    /// The value.
    pub value: Value,
}

/// The exemplars of one series, per sample that can have one (see [`Series::exemplars`]).
pub type Exemplars = Box<[Option<Exemplar>]>;

impl Series {
    /// [`Series::created_unix_nanos`] in seconds since the Unix epoch, as `_created` shows it.
    pub fn created_seconds(&self) -> Option<f64> {
        self.created_unix_nanos.map(unix_seconds)
    }
}

/// Nanoseconds since the Unix epoch as seconds, rounded once (as `_created` samples and
/// exemplar timestamps show them).
pub fn unix_seconds(nanos: u64) -> f64 {
    (nanos / 1_000_000_000) as f64 + (nanos % 1_000_000_000) as f64 / 1e9
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
                created_unix_nanos: None,
                exemplars: None,
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
