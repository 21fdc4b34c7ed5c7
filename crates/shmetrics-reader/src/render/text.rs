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

/// The [`SeriesText`] of each series of one snapshot. A reader hands one out with each
/// snapshot: a table of the texts its merge index keeps (shared until a series comes or
/// goes) and, per series of the snapshot, its entry in that table. A caller that renders a
/// snapshot of its own many times can build one with [`SnapshotText::of`].
#[derive(Clone, Debug, Default)]
pub struct SnapshotText {
    table: Arc<[Arc<SeriesText>]>,
    /// The entry in `table` of each series, family after family.
    entries: Vec<u32>,
    /// Where each family's series start in `entries`.
    starts: Vec<u32>,
}

impl SnapshotText {
    /// Texts for every series of `snapshot` (one per distinct labels of a family).
    pub fn of(snapshot: &Snapshot) -> Self {
        let mut table: Vec<Arc<SeriesText>> = Vec::new();
        let mut text = Self::default();
        for family in &snapshot.families {
            text.starts.push(text.entries.len() as u32);
            let first = table.len();
            for series in &family.series {
                if table.len() == first || !table[table.len() - 1].is_for(series) {
                    table.push(Arc::new(SeriesText::new(&series.labels)));
                }
                text.entries.push(table.len() as u32 - 1);
            }
        }
        text.table = table.into();
        text
    }

    /// The texts of a snapshot whose series' entries in `table` [`SnapshotText::push`]
    /// will give.
    pub(crate) fn with_table(table: Arc<[Arc<SeriesText>]>, series: usize) -> Self {
        Self {
            table,
            entries: Vec::with_capacity(series),
            starts: Vec::new(),
        }
    }

    /// Starts the next family.
    pub(crate) fn start_family(&mut self) {
        self.starts.push(self.entries.len() as u32);
    }

    /// Forgets the family just started, which has no series.
    pub(crate) fn cancel_family(&mut self) {
        debug_assert_eq!(self.starts.last(), Some(&(self.entries.len() as u32)));
        self.starts.pop();
    }

    /// Gives the next `count` series of the current family the text at `entry` of the table.
    pub(crate) fn push(&mut self, entry: u32, count: usize) {
        if count == 1 {
            self.entries.push(entry);
        } else {
            self.entries.extend(std::iter::repeat_n(entry, count));
        }
    }

    /// Where family `family`'s entries are: a range to give [`SnapshotText::get`].
    pub(super) fn family(&self, family: usize) -> (usize, usize) {
        let Some(&start) = self.starts.get(family) else {
            return (0, 0);
        };
        let end = self
            .starts
            .get(family + 1)
            .map_or(self.entries.len(), |&e| e as usize);
        (start as usize, end)
    }

    /// The text of `series`, the `index`-th of the family whose entries are at `range`, if
    /// there is one for that series.
    pub(super) fn get(
        &self,
        range: (usize, usize),
        series: &Series,
        index: usize,
    ) -> Option<&SeriesText> {
        let at = range.0 + index;
        if at >= range.1 {
            return None;
        }
        let text = self.table.get(self.entries[at] as usize)?;
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
