//! What the collectors for other Prometheus libraries share: a reader on a metrics
//! directory, the families a filter keeps (minus excluded names, plus self-metrics on
//! request), and a log line once per clashing name.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use shmetrics_layout::MetricKind;
use shmetrics_reader::snapshot::Family;
use shmetrics_reader::{PrefixFilter, Reader, ScrapeReport};

/// The builder methods every directory collector has, over its `source: DirSource` field and
/// its `new(reader, filter)`: `open`, `exclude`, `with_self_metrics` and `filter`. Invoked
/// inside the collector's `impl` block.
macro_rules! dir_collector_builders {
    () => {
        /// Opens a reader on `dir` and wraps it; see [`Self::new`].
        ///
        /// # Errors
        /// When `dir` is missing or not a directory.
        pub fn open(
            dir: impl AsRef<std::path::Path>,
            filter: shmetrics_reader::PrefixFilter,
        ) -> Result<Self, shmetrics_reader::ReaderError> {
            Ok(Self::new(shmetrics_reader::Reader::open(dir)?, filter))
        }

        /// Families this collector never emits, by their exposition name (`vllm:x_total` for
        /// a counter; a counter's base name `vllm:x` matches too). For hosts that register the
        /// collector directly and know their own family names.
        #[must_use]
        pub fn exclude<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
            self.source
                .excluded
                .extend(names.into_iter().map(Into::into));
            self
        }

        /// Also emit the reader's `shmetrics_reader_*` and `shmetrics_writer_*` self-metrics
        /// (segments by state, invalid segments by reason, series count...), whatever the
        /// filter, except one whose name a kept family of the directory already has. Off by
        /// default.
        #[must_use]
        pub fn with_self_metrics(mut self, on: bool) -> Self {
            self.source.self_metrics = on;
            self
        }

        /// The filter.
        pub fn filter(&self) -> &shmetrics_reader::PrefixFilter {
            &self.source.filter
        }
    };
}
pub(crate) use dir_collector_builders;

/// A filtered view of a metrics directory, snapshot on demand.
pub(crate) struct DirSource {
    reader: Mutex<Reader>,
    pub(crate) filter: PrefixFilter,
    pub(crate) excluded: HashSet<String>,
    pub(crate) self_metrics: bool,
    /// Names already warned about (clashes with the host, or within the directory).
    warned: Mutex<HashSet<String>>,
}

impl DirSource {
    pub(crate) fn new(reader: Reader, filter: PrefixFilter) -> Self {
        Self {
            reader: Mutex::new(reader),
            filter,
            excluded: HashSet::new(),
            self_metrics: false,
            warned: Mutex::new(HashSet::new()),
        }
    }

    /// Takes a snapshot and returns the kept families with at least one series, in the
    /// reader's order (by family name; self-metrics last), with the reader's report.
    pub(crate) fn families(&self) -> (Vec<Family>, ScrapeReport) {
        let scrape = self
            .reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .snapshot();
        if let Some(warning) =
            (self.filter).keeps_none_warning(scrape.snapshot.families.iter().map(|f| &*f.name))
        {
            // Once per collector, as a misspelt prefix stays misspelt.
            self.warn_once("prefix filter", &warning);
        }
        let own = if self.self_metrics {
            shmetrics_reader::self_metrics(&scrape.report)
        } else {
            Vec::new()
        };
        let (extra, _) = scrape.snapshot.extra_families(&self.filter, own);
        let families = scrape
            .snapshot
            .families
            .into_iter()
            .filter(|f| self.filter.keeps(&f.name))
            .chain(extra)
            .filter(|f| !self.is_excluded(f))
            .filter(|f| !f.series.is_empty())
            .collect();
        (families, scrape.report)
    }

    /// Whether `family` is excluded by its exposition name (a counter's base name matches
    /// too).
    fn is_excluded(&self, family: &Family) -> bool {
        if self.excluded.is_empty() {
            return false;
        }
        self.excluded.contains(&*family.name)
            || (family.kind == MetricKind::Counter
                && self.excluded.contains(&format!("{}_total", family.name)))
    }

    /// Logs `what` about `name`, once per name for the life of the collector.
    pub(crate) fn warn_once(&self, name: &str, what: &str) {
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        if !warned.contains(name) {
            log::warn!("{name}: {what}");
            warned.insert(name.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Every log line of this test binary, for the test to find its own.
    struct Capture(Mutex<Vec<String>>);

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            let mut lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            lines.push(record.args().to_string());
        }
        fn flush(&self) {}
    }

    static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

    #[test]
    fn a_filter_that_keeps_none_of_the_families_is_logged_once() {
        let _ = log::set_logger(&CAPTURE);
        log::set_max_level(log::LevelFilter::Warn);
        let dir = tempfile::tempdir().unwrap();
        let writer = shmetrics_writer::Registry::open(dir.path()).unwrap();
        writer
            .counter("vllm:requests", "R.", &[])
            .unwrap()
            .unlabelled()
            .unwrap()
            .inc();
        let source = DirSource::new(
            Reader::open(dir.path()).unwrap(),
            PrefixFilter::new(["VLLM:"]),
        );
        for _ in 0..3 {
            assert!(source.families().0.is_empty());
        }
        let kept = DirSource::new(
            Reader::open(dir.path()).unwrap(),
            PrefixFilter::new(["vllm:"]),
        );
        assert_eq!(kept.families().0.len(), 1);
        let lines = CAPTURE.0.lock().unwrap().clone();
        let warned: Vec<&String> = lines
            .iter()
            .filter(|l| l.starts_with("prefix filter:"))
            .collect();
        assert_eq!(
            warned,
            [
                "prefix filter: prefixes VLLM: match none of the 1 families in the directory, so \
                 none of them is exposed (names are case-sensitive: vllm:, lmcache:, dynamo_)"
            ]
        );
    }
}
