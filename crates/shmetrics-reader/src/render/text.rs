//! The exposition text of a series' labels, built once per merged series and kept across
//! scrapes by the reader's merge index, with the line prefixes the renderer caches in it.
//! The data model ([`SeriesLabels`]) holds none of it.

use std::fmt;
use std::sync::{Arc, OnceLock};

use shmetrics_layout::names::is_legacy_label_name;

use super::LinePrefixes;
use super::escape::escape_label_value;
use crate::snapshot::{Family, Series, SeriesLabels, Snapshot};

/// The labels of one series as exposition text, and the renderer's cache of its sample
/// lines' prefixes.
#[derive(Debug)]
pub struct SeriesText {
    /// The labels this text was built from: a renderer uses the text only for a series
    /// holding these very labels.
    labels: Arc<SeriesLabels>,
    /// The pairs as exposition text, without braces, names as they are.
    pub(super) rendered: Box<str>,
    /// Whether every label name is classic (`[a-zA-Z_][a-zA-Z0-9_]*`), so that `rendered`
    /// is what every escaping scheme but dots exposes.
    pub(super) classic_names: bool,
    lines: OnceLock<Option<LinePrefixes>>,
}

impl SeriesText {
    /// The text of `labels`; line prefixes are built on first use.
    pub fn new(labels: &Arc<SeriesLabels>) -> Self {
        let mut rendered = String::new();
        write_labels(labels, &mut rendered);
        Self {
            labels: Arc::clone(labels),
            rendered: rendered.into(),
            classic_names: labels.pairs.iter().all(|(n, _)| is_legacy_label_name(n)),
            lines: OnceLock::new(),
        }
    }

    /// Whether this is the text of `series`' labels.
    pub(super) fn is_for(&self, series: &Series) -> bool {
        Arc::ptr_eq(&self.labels, &series.labels)
    }

    /// The cached sample-line prefixes of this series in `family`: built on first use; `None`
    /// when they are too large to cache, or were built for another family (name, type or
    /// buckets), which only happens to labels shared across families by hand.
    pub(super) fn line_prefixes(&self, family: &Family) -> Option<&LinePrefixes> {
        let lines = self
            .lines
            .get_or_init(|| LinePrefixes::build(family, &self.rendered))
            .as_ref()?;
        lines.belongs_to(family).then_some(lines)
    }
}

/// The [`SeriesText`] of each series of one snapshot: `families[f][s]` is the text of
/// `snapshot.families[f].series[s]`. A reader hands one out with each snapshot, from the
/// texts its merge index keeps; a caller that renders a snapshot of its own many times can
/// build one with [`SnapshotText::of`].
#[derive(Clone, Debug, Default)]
pub struct SnapshotText {
    families: Vec<Vec<Arc<SeriesText>>>,
}

impl SnapshotText {
    /// Texts for every series of `snapshot` (one per distinct labels of a family).
    pub fn of(snapshot: &Snapshot) -> Self {
        let families = snapshot
            .families
            .iter()
            .map(|family| {
                let mut texts: Vec<Arc<SeriesText>> = Vec::with_capacity(family.series.len());
                for series in &family.series {
                    let text = match texts.last() {
                        Some(last) if last.is_for(series) => Arc::clone(last),
                        _ => Arc::new(SeriesText::new(&series.labels)),
                    };
                    texts.push(text);
                }
                texts
            })
            .collect();
        Self { families }
    }

    /// Starts the texts of the next family.
    pub(crate) fn push_family(&mut self, texts: Vec<Arc<SeriesText>>) {
        self.families.push(texts);
    }

    /// The text of series `series` of family `family`, if there is one for that series.
    pub(super) fn get(&self, family: usize, series: &Series, index: usize) -> Option<&SeriesText> {
        let text = self.families.get(family)?.get(index)?;
        text.is_for(series).then_some(&**text)
    }
}

/// Appends `labels` as exposition text: `a="x",b="y"`, values escaped, names as they are.
pub(super) fn write_labels(labels: &SeriesLabels, out: &mut String) {
    for (i, (name, value)) in labels.pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        escape_label_value(value, out);
        out.push('"');
    }
}

impl fmt::Display for SeriesLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::new();
        write_labels(self, &mut text);
        f.write_str(&text)
    }
}
