//! Fixtures of the reader benches (`benches/reader.rs`, the `reader-rss` bin): metrics
//! directories written by simulated processes, and the "raw formatting" baseline.
//!
//! - [`GenFixture`]: `P` processes running the `shmetrics generate` mix
//!   ([`GenWorkload`]: `S` series per process over 15 families, a third counters, a third
//!   gauges in `mostrecent` and `livesum`, a third histograms with 20 buckets, the same
//!   label sets in every process), after a few rounds so every value is non-zero.
//! - [`VllmFixture`]: `N` vLLM engines ([`VllmWorkload`] with contexts `0..N`).
//!
//! All the processes live in this one: each holds its own [`Registry`] opened with
//! [`Registry::open_simulating_pid`], so its segments are live (locked) for as long as the
//! fixture lives, as those of real engines would be.
//!
//! [`RawExposition`] is the physical limit of rendering: the same samples as the shmetrics
//! renderer prints, written with nothing but `memcpy` of pre-rendered pieces and
//! `itoa`/`ryu`, straight into a `Vec<u8>`. [`SlotAreas`] is the physical limit of reading:
//! every value slot of a directory's segments, loaded word by word.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::Path;

use shmetrics_layout::MetricKind;
use shmetrics_layout::sync::Ordering;
use shmetrics_reader::snapshot::{Snapshot, Value};
use shmetrics_workload::{GEN_FAMILIES, GenWorkload, MetricSet, VllmWorkload};
use shmetrics_writer::{Options, Registry};
use tempfile::TempDir;

/// Rounds of the `gen` workload each [`GenFixture`] process runs: counters and histogram
/// counts end at this value per process, `mostrecent` gauges too.
pub const GEN_ROUNDS: u64 = 3;

/// Steps each [`VllmFixture`] engine runs before the benches.
pub const VLLM_STEPS: usize = 20;

/// The pid the first simulated process presents; process `i` is `FIRST_PID + i`.
pub const FIRST_PID: u32 = 4_000_000;

/// A boxed error, for fixture building.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// Bytes of one segment that holds the whole `gen` workload of `series` series, so that no
/// process needs a continuation segment: the header and family records, then per series a
/// record (at most 48 bytes: its header and one short label value) and its value slots.
/// Rounded up to 4 KiB pages, as [`Options::initial_segment_size`] requires.
pub fn gen_segment_size(series: usize) -> usize {
    const FAMILY_RECORDS: usize = 16 * 1024;
    const SERIES_RECORD: usize = 48;
    let per_family = |j: usize| {
        let words = shmetrics_workload::gen_slot_words(j);
        shmetrics_workload::gen_series_count(series, j) * (SERIES_RECORD + 8 * words)
    };
    let bytes = 4096 + FAMILY_RECORDS + (0..GEN_FAMILIES).map(per_family).sum::<usize>();
    bytes.div_ceil(4096) * 4096
}

/// `P` simulated processes running the `gen` workload in a temporary directory.
#[derive(Debug)]
pub struct GenFixture {
    // Declared before `dir`, so dropped first: the segments close, then the directory goes.
    processes: Vec<(GenWorkload, Registry)>,
    series: usize,
    dir: TempDir,
}

impl GenFixture {
    /// Builds `processes` processes with `series` series each (in one segment each), and
    /// runs [`GEN_ROUNDS`] rounds in every process.
    ///
    /// # Errors
    /// When the directory or a registry cannot be created, or a series is refused.
    pub fn build(processes: usize, series: usize) -> Result<Self, BoxError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("shmetrics-bench-gen-{processes}x{series}-"))
            .tempdir()?;
        let options = Options {
            initial_segment_size: gen_segment_size(series),
            ..Options::default()
        };
        let mut all = Vec::with_capacity(processes);
        for i in 0..processes {
            let registry =
                Registry::open_simulating_pid(dir.path(), options.clone(), FIRST_PID + i as u32)?;
            let workload = GenWorkload::register(&registry, series)?;
            for round in 0..GEN_ROUNDS {
                workload.round(round);
            }
            if registry.dropped_series() != 0 {
                return Err(
                    format!("process {i} dropped {} series", registry.dropped_series()).into(),
                );
            }
            all.push((workload, registry));
        }
        let fixture = Self {
            processes: all,
            series,
            dir,
        };
        let files = fixture.segment_files()?;
        if files != processes {
            return Err(format!("{files} segment files for {processes} processes").into());
        }
        Ok(fixture)
    }

    /// The metrics directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Simulated processes.
    pub fn processes(&self) -> usize {
        self.processes.len()
    }

    /// Series per process (and merged series: every process has the same label sets).
    pub fn series_per_process(&self) -> usize {
        self.series
    }

    /// Series over all processes: what a scrape reads.
    pub fn series_total(&self) -> usize {
        self.processes.len() * self.series
    }

    fn segment_files(&self) -> std::io::Result<usize> {
        count_segments(self.dir())
    }
}

/// Segment files in `dir`.
///
/// # Errors
/// When `dir` cannot be listed.
pub fn count_segments(dir: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(shmetrics_layout::SEGMENT_PREFIX)
            && name.ends_with(shmetrics_layout::SEGMENT_SUFFIX)
        {
            n += 1;
        }
    }
    Ok(n)
}

/// The value slots of every segment of a directory, mapped once: the physical limit of a
/// scrape's reading is one load of each of their words.
#[derive(Debug)]
pub struct SlotAreas {
    maps: Vec<memmap2::MmapRaw>,
}

impl SlotAreas {
    /// Maps every segment file of `dir` read-only.
    ///
    /// # Errors
    /// When `dir` cannot be listed or a segment cannot be opened or mapped.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let mut maps = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with(shmetrics_layout::SEGMENT_PREFIX)
                && name.ends_with(shmetrics_layout::SEGMENT_SUFFIX)
            {
                let file = std::fs::File::open(&path)?;
                maps.push(memmap2::MmapOptions::new().map_raw_read_only(&file)?);
            }
        }
        Ok(Self { maps })
    }

    /// Loads every word from each segment's slot floor to its end (relaxed, as a scrape
    /// reads counters) and returns their wrapping sum, so that no load can be left out.
    pub fn read_all(&self) -> u64 {
        let mut total = 0u64;
        for map in &self.maps {
            // SAFETY: `mmap` returns a page-aligned address and a segment's size is a
            // multiple of 8; the mapping lives as long as `self`, which the borrow outlives;
            // the segment's writer and every reader access its memory only as atomic words.
            let words =
                unsafe { shmetrics_layout::view::words_from_raw(map.as_ptr(), map.len() & !7) };
            // Relaxed: a statistic of the fixture, ordered with nothing.
            let floor = words[shmetrics_layout::SLOT_FLOOR_WORD].load(Ordering::Relaxed);
            let first = (floor as usize / 8).min(words.len());
            for word in &words[first..] {
                // Relaxed: what a scrape's counter reads are.
                total = total.wrapping_add(word.load(Ordering::Relaxed));
            }
        }
        total
    }
}

/// The observations a [`GenFixture`] process made on `gen` histogram series `series`, in
/// order ([`shmetrics_workload::gen_value`] of each round): what another library must
/// observe to hold the same histogram, sum included, as a one-process fixture.
pub fn gen_observations(series: usize) -> impl Iterator<Item = f64> {
    (0..GEN_ROUNDS).map(move |round| shmetrics_workload::gen_value(round, series))
}

/// `N` simulated vLLM engines (`engine="0"`..`engine="N-1"`) in a temporary directory,
/// after [`VLLM_STEPS`] steps each.
#[derive(Debug)]
pub struct VllmFixture {
    engines: Vec<(VllmWorkload, Registry)>,
    series: usize,
    dir: TempDir,
}

impl VllmFixture {
    /// Builds `engines` engines with vLLM's metric set.
    ///
    /// # Errors
    /// When the directory or a registry cannot be created, or the metric set is refused.
    pub fn build(engines: usize) -> Result<Self, BoxError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("shmetrics-bench-vllm-{engines}-"))
            .tempdir()?;
        let set = MetricSet::vllm()?;
        let mut all = Vec::with_capacity(engines);
        let mut series = 0;
        for i in 0..engines {
            let registry = Registry::open_simulating_pid(
                dir.path(),
                Options::default(),
                FIRST_PID + i as u32,
            )?;
            let mut workload =
                VllmWorkload::register(&registry, &set, &set.context(i as u32), i as u64 + 1)?;
            for _ in 0..VLLM_STEPS {
                workload.step();
            }
            if registry.dropped_series() != 0 {
                return Err(
                    format!("engine {i} dropped {} series", registry.dropped_series()).into(),
                );
            }
            series += workload.series();
            all.push((workload, registry));
        }
        Ok(Self {
            engines: all,
            series,
            dir,
        })
    }

    /// The metrics directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Engines.
    pub fn engines(&self) -> usize {
        self.engines.len()
    }

    /// Series over all engines: what a scrape reads.
    pub fn series_total(&self) -> usize {
        self.series
    }
}

// ---------------------------------------------------------------------------------------
// The raw formatting baseline.
// ---------------------------------------------------------------------------------------

/// One series, pre-rendered: its labels as exposition text (`a="x",b="y"` plus `pid` for
/// per-process gauges, escaped once) and its value.
#[derive(Debug)]
struct RawSeries {
    labels: Box<[u8]>,
    value: Value,
}

#[derive(Debug)]
struct RawFamily {
    /// `# HELP ...\n# TYPE ...\n`.
    header: Box<[u8]>,
    name: Box<[u8]>,
    kind: MetricKind,
    /// `le` values, `+Inf` last.
    les: Vec<Box<[u8]>>,
    series: Vec<RawSeries>,
}

/// The samples of a snapshot, ready for [`RawExposition::write`]: the least work any text
/// renderer does, used as the baseline of rendering.
#[derive(Debug)]
pub struct RawExposition {
    families: Vec<RawFamily>,
    /// Every sample line's prefix, concatenated in output order.
    prefixes: Vec<u8>,
    /// End offset of each prefix in `prefixes`.
    prefix_ends: Vec<usize>,
}

impl RawExposition {
    /// Pre-renders every piece of `snapshot` that does not depend on a value: HELP and TYPE
    /// lines, names, label sets, `le` values (Prometheus text format).
    pub fn new(snapshot: &Snapshot) -> Self {
        let mut rendered = Vec::new();
        let families = snapshot
            .families
            .iter()
            .map(|f| {
                let exposed = match f.kind {
                    MetricKind::Counter => format!("{}_total", f.name),
                    _ => f.name.to_string(),
                };
                rendered.clear();
                rendered.extend_from_slice(b"# HELP ");
                rendered.extend_from_slice(exposed.as_bytes());
                rendered.push(b' ');
                shmetrics_reader::render::escape_help(&f.help, false, &mut rendered);
                rendered.extend_from_slice(format!("\n# TYPE {exposed} {}\n", f.kind).as_bytes());
                let header = rendered.as_slice().into();
                let les = f
                    .bounds
                    .iter()
                    .map(|&b| {
                        let mut s = Vec::new();
                        shmetrics_reader::render::write_le(b, &mut s);
                        s.into_boxed_slice()
                    })
                    .chain(std::iter::once(b"+Inf".to_vec().into_boxed_slice()))
                    .collect();
                let series = f
                    .series
                    .iter()
                    .map(|s| {
                        let mut labels = s.labels.to_string().into_bytes();
                        if let Some(pid) = s.pid {
                            if !labels.is_empty() {
                                labels.push(b',');
                            }
                            labels.extend_from_slice(format!("pid=\"{pid}\"").as_bytes());
                        }
                        RawSeries {
                            labels: labels.into_boxed_slice(),
                            value: s.value.clone(),
                        }
                    })
                    .collect();
                RawFamily {
                    header,
                    name: f.name.as_bytes().into(),
                    kind: f.kind,
                    les,
                    series,
                }
            })
            .collect();
        let mut raw = Self {
            families,
            prefixes: Vec::new(),
            prefix_ends: Vec::new(),
        };
        // Every sample line's prefix, in output order, for `write_cached_prefixes`.
        let (mut scratch, mut prefixes, mut ends) = (Vec::new(), Vec::new(), Vec::new());
        raw.walk(&mut scratch, |out, name, suffix, labels, le| {
            let start = out.len();
            prefix(out, name, suffix, labels, le);
            prefixes.extend_from_slice(&out[start..]);
            ends.push(prefixes.len());
        });
        raw.prefixes = prefixes;
        raw.prefix_ends = ends;
        raw
    }

    /// Appends the exposition to `out`: `memcpy` of the pieces (name, suffix, label set,
    /// `le`), `itoa` for integers and `ryu` for floats, nothing else. Byte-identical to the
    /// shmetrics renderer's output for finite values below 10^15 (where `ryu` and the
    /// renderer agree).
    pub fn write(&self, out: &mut Vec<u8>) {
        self.walk(out, prefix);
    }

    /// Like [`RawExposition::write`], but every sample line's prefix (`name{labels} `)
    /// comes whole from a table rendered in advance: one `memcpy` per line before the
    /// value. The limit of a renderer that caches each line's prefix across scrapes.
    pub fn write_cached_prefixes(&self, out: &mut Vec<u8>) {
        let mut line = 0;
        let mut start = 0;
        self.walk(out, |out, _, _, _, _| {
            let end = self.prefix_ends[line];
            out.extend_from_slice(&self.prefixes[start..end]);
            start = end;
            line += 1;
        });
    }

    /// Writes every family, calling `put_prefix(out, name, suffix, labels, le)` for the
    /// part of each sample line before its value.
    #[inline(always)]
    fn walk(
        &self,
        out: &mut Vec<u8>,
        mut put_prefix: impl FnMut(&mut Vec<u8>, &[u8], &[u8], &[u8], &[u8]),
    ) {
        let mut int = itoa::Buffer::new();
        let mut float = ryu::Buffer::new();
        for f in &self.families {
            out.extend_from_slice(&f.header);
            for s in &f.series {
                match &s.value {
                    Value::Counter(v) | Value::Gauge(v) => {
                        let suffix: &[u8] = if f.kind == MetricKind::Counter {
                            b"_total"
                        } else {
                            b""
                        };
                        put_prefix(out, &f.name, suffix, &s.labels, b"");
                        out.extend_from_slice(float.format(*v).as_bytes());
                        out.push(b'\n');
                    }
                    Value::Histogram { buckets, sum } => {
                        let mut cumulative = 0u64;
                        for (count, le) in buckets.iter().zip(&f.les) {
                            cumulative += count;
                            put_prefix(out, &f.name, b"_bucket", &s.labels, le);
                            out.extend_from_slice(int.format(cumulative).as_bytes());
                            out.push(b'\n');
                        }
                        put_prefix(out, &f.name, b"_count", &s.labels, b"");
                        out.extend_from_slice(int.format(cumulative).as_bytes());
                        out.push(b'\n');
                        put_prefix(out, &f.name, b"_sum", &s.labels, b"");
                        out.extend_from_slice(float.format(*sum).as_bytes());
                        out.push(b'\n');
                    }
                    Value::Summary { count, sum } => {
                        put_prefix(out, &f.name, b"_count", &s.labels, b"");
                        out.extend_from_slice(int.format(*count).as_bytes());
                        out.push(b'\n');
                        put_prefix(out, &f.name, b"_sum", &s.labels, b"");
                        out.extend_from_slice(float.format(*sum).as_bytes());
                        out.push(b'\n');
                    }
                    // The benchmark workloads have neither.
                    Value::Info | Value::State { .. } => {
                        unreachable!("no info or stateset in the benchmark fixtures")
                    }
                }
            }
        }
    }
}

/// Appends `name suffix{labels[,le="le"]} `.
#[inline(always)]
fn prefix(out: &mut Vec<u8>, name: &[u8], suffix: &[u8], labels: &[u8], le: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(suffix);
    match (labels.is_empty(), le.is_empty()) {
        (true, true) => {}
        (false, true) => {
            out.push(b'{');
            out.extend_from_slice(labels);
            out.push(b'}');
        }
        (true, false) => {
            out.extend_from_slice(b"{le=\"");
            out.extend_from_slice(le);
            out.extend_from_slice(b"\"}");
        }
        (false, false) => {
            out.push(b'{');
            out.extend_from_slice(labels);
            out.extend_from_slice(b",le=\"");
            out.extend_from_slice(le);
            out.extend_from_slice(b"\"}");
        }
    }
    out.push(b' ');
}

// ---------------------------------------------------------------------------------------
// Comparing expositions of different encoders.
// ---------------------------------------------------------------------------------------

/// The samples of a text exposition (Prometheus text or OpenMetrics), by a key that does not
/// depend on the encoder: the sample name, then its labels sorted by name, an `le` value
/// written as its `f64` (`1` and `1.0` are the same bound). Comment lines are skipped.
///
/// # Errors
/// A line that is not `name[{labels}] value`, a sample twice, or a value that is no number.
pub fn samples(text: &str) -> Result<BTreeMap<String, f64>, String> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("no value: {line:?}"))?;
        let value = parse_number(value).ok_or_else(|| format!("bad value: {line:?}"))?;
        let (name, mut labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or_else(|| format!("unclosed labels: {line:?}"))?;
                (
                    name,
                    parse_labels(body).ok_or_else(|| format!("bad labels: {line:?}"))?,
                )
            }
        };
        for (label, value) in &mut labels {
            if label == "le" {
                let bound = parse_number(value).ok_or_else(|| format!("bad le: {line:?}"))?;
                *value = format!("{bound:?}");
            }
        }
        labels.sort();
        let mut key = name.to_owned();
        for (i, (label, value)) in labels.iter().enumerate() {
            key.push(if i == 0 { '{' } else { ',' });
            key.push_str(&format!("{label}={value:?}"));
        }
        if !labels.is_empty() {
            key.push('}');
        }
        if out.insert(key, value).is_some() {
            return Err(format!("sample twice: {line:?}"));
        }
    }
    Ok(out)
}

fn parse_number(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// `a="x",b="y"` into pairs, unescaping `\\`, `\"` and `\n`.
fn parse_labels(body: &str) -> Option<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        pairs.push((name.to_owned(), value));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    Some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shmetrics_reader::{Format, PrefixFilter, Reader};

    fn scrape(dir: &Path) -> (Reader, Vec<u8>) {
        let mut reader = Reader::open(dir).unwrap();
        let mut out = Vec::new();
        let report = reader
            .scrape(
                Format::Prometheus,
                &PrefixFilter::default(),
                false,
                &mut out,
            )
            .unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert!(report.conflicts.is_empty(), "{:?}", report.conflicts);
        (reader, out)
    }

    #[test]
    fn gen_fixture_merges_every_process() {
        let fixture = GenFixture::build(3, 40).unwrap();
        assert_eq!(count_segments(fixture.dir()).unwrap(), 3);
        assert_eq!(fixture.series_total(), 120);
        let mut reader = Reader::open(fixture.dir()).unwrap();
        let scrape = reader.snapshot();
        assert_eq!(scrape.report.live_segments, 3);
        assert_eq!(scrape.report.dead_segments, 0);
        assert_eq!(scrape.report.series, 40);
        let snap = &scrape.snapshot;
        assert_eq!(snap.families.len(), 15);
        // 40 series: 3 in each of the first 10 families, 2 in the last 5.
        let c0 = snap.family("gen_c0").unwrap();
        assert_eq!(c0.series.len(), 3);
        // Counters: 3 processes x GEN_ROUNDS increments.
        assert_eq!(c0.series[0].value, Value::Counter(9.0));
        assert_eq!(c0.series[0].labels.to_string(), "series=\"0\"");
        // mostrecent: the round count; livesum: 1 per live process.
        assert_eq!(
            snap.family("gen_g0").unwrap().series[0].value,
            Value::Gauge(3.0)
        );
        assert_eq!(
            snap.family("gen_g4").unwrap().series[1].value,
            Value::Gauge(3.0)
        );
        let h = snap.family("gen_h4_seconds").unwrap();
        assert_eq!(h.series.len(), 2);
        let Value::Histogram { buckets, sum } = &h.series[1].value else {
            panic!("not a histogram: {:?}", h.series[1].value);
        };
        // Series 1, rounds 0..3: buckets 1, 2, 3 once per process.
        let mut expected = vec![0u64; shmetrics_workload::GEN_BUCKETS + 1];
        expected[1..4].fill(3);
        assert_eq!(buckets, &expected);
        let one: f64 = gen_observations(1).sum();
        assert_eq!(one, 0.00075 * (2.0 + 4.0 + 8.0));
        assert!((sum - 3.0 * one).abs() < 1e-12, "{sum}");
    }

    #[test]
    fn gen_segment_size_fits_the_workload() {
        // One segment per process even at the largest bench size (checked by `build`),
        // and no more than twice what the series need.
        assert_eq!(gen_segment_size(100) % 4096, 0);
        let big = gen_segment_size(10_000);
        assert!((1_000_000..2_500_000).contains(&big), "{big}");
        let fixture = GenFixture::build(1, 3_000).unwrap();
        assert_eq!(count_segments(fixture.dir()).unwrap(), 1);
    }

    #[test]
    fn raw_formatting_is_byte_identical_to_the_renderer() {
        let fixture = GenFixture::build(2, 60).unwrap();
        let (mut reader, rendered) = scrape(fixture.dir());
        let raw = RawExposition::new(&reader.snapshot().snapshot);
        let mut out = Vec::new();
        raw.write(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            String::from_utf8(rendered.clone()).unwrap()
        );
        let mut cached = Vec::new();
        raw.write_cached_prefixes(&mut cached);
        assert_eq!(
            String::from_utf8(cached).unwrap(),
            String::from_utf8(rendered).unwrap()
        );
    }

    #[test]
    fn vllm_fixture_has_every_engine() {
        let fixture = VllmFixture::build(2).unwrap();
        assert_eq!(fixture.engines(), 2);
        assert_eq!(count_segments(fixture.dir()).unwrap(), 2);
        let (_, out) = scrape(fixture.dir());
        let text = String::from_utf8(out).unwrap();
        for engine in ["engine=\"0\"", "engine=\"1\""] {
            assert!(
                text.lines()
                    .any(|l| l.starts_with("vllm:request_success_total{") && l.contains(engine)),
                "{engine} missing"
            );
        }
        assert!(fixture.series_total() > 2 * 69);
    }

    #[test]
    fn samples_ignore_encoder_differences() {
        let a = "# HELP x_total X.\n# TYPE x_total counter\nx_total{b=\"2\",a=\"1\"} 3\n\
                 h_bucket{a=\"q\\\"\",le=\"1\"} 4\nh_bucket{a=\"q\\\"\",le=\"+Inf\"} 5\n# EOF\n";
        let b = "x_total{a=\"1\",b=\"2\"} 3.0\nh_bucket{le=\"1.0\",a=\"q\\\"\"} 4\n\
                 h_bucket{le=\"+Inf\",a=\"q\\\"\"} 5\n";
        let sa = samples(a).unwrap();
        assert_eq!(sa, samples(b).unwrap());
        assert_eq!(sa.len(), 3);
        assert_eq!(sa["x_total{a=\"1\",b=\"2\"}"], 3.0);
        assert_eq!(sa["h_bucket{a=\"q\\\"\",le=\"inf\"}"], 5.0);
        assert_ne!(sa, samples("x_total{a=\"1\",b=\"2\"} 3.5\n").unwrap());
        assert!(samples("x_total{a=\"1\" 3\n").is_err());
        assert!(samples("x 1\nx 2\n").is_err());
    }
}
