//! Workloads that write metrics like a real process: the deterministic `gen` workload used
//! by tests and benchmarks, and a model of vLLM's metric set (read from
//! `workloads/vllm_metrics.json`) updated as an inference engine would.
//!
//! Both are plain library code over a [`Registry`], so `shmetrics generate`, the demo and the
//! benchmarks drive them the same way: register once, then call a step function. This crate
//! is not part of the `shmetrics` library: it exists for the command line, benches and tests.
#![warn(missing_docs)]

use std::collections::BTreeMap;

pub mod engine;
pub mod lmcache;

use engine::{Admitted, EngineConfig, EngineModel, Finished, StepReport};
use serde::Deserialize;
use serde_json::Value;
use shmetrics_layout::UnknownGaugeMode;
use shmetrics_layout::names::is_legacy_label_name;
use shmetrics_writer::{
    Child, Counter, DEFAULT_BUCKETS, Family, Gauge, GaugeMode, Histogram, MetricKind, Registry,
    Summary,
};

/// Why a workload could not be loaded or registered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadError {
    /// The metric-set JSON does not parse.
    #[error("metric set JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// A metric's `multiprocess_mode` is not a gauge mode.
    #[error("metric {metric}: {source}")]
    GaugeMode {
        /// The metric.
        metric: String,
        /// The mode's error.
        source: UnknownGaugeMode,
    },
    /// The registry refused a family or a series.
    #[error("registering {metric}: {source}")]
    Register {
        /// The metric.
        metric: String,
        /// The writer's error.
        source: shmetrics_writer::Error,
    },
}

fn register_err(metric: &str) -> impl FnOnce(shmetrics_writer::Error) -> WorkloadError + '_ {
    move |source| WorkloadError::Register {
        metric: metric.to_owned(),
        source,
    }
}

/// A small seeded pseudo-random generator (SplitMix64): deterministic, fast, and good
/// enough to vary a workload. Not for anything that needs real randomness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform integer in `[0, n)`; 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
        }
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A value between `lo` and `hi` (both positive), uniform in log space.
    pub fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + (hi.ln() - lo.ln()) * self.unit()).exp()
    }

    /// An exponentially distributed value with mean `mean` (the gap between two events of
    /// a Poisson process).
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }

    /// A standard normal value (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.unit();
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// A log-normal value with median `median` and shape `sigma` (the standard deviation
    /// of its logarithm).
    pub fn log_normal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }
}

// ---------------------------------------------------------------------------------------
// The deterministic `gen` workload.
// ---------------------------------------------------------------------------------------

/// Families of the `gen` workload: 5 counters, 5 gauges, 5 histograms.
pub const GEN_FAMILIES: usize = 15;
/// Finite buckets of the `gen` histograms.
pub const GEN_BUCKETS: usize = 20;

/// Name of `gen` family `j` (0..15): `gen_c0_total`..`gen_c4_total`, `gen_g0`..`gen_g4`,
/// `gen_h0_seconds`..`gen_h4_seconds`.
pub fn gen_family_name(j: usize) -> String {
    match j / 5 {
        0 => format!("gen_c{}_total", j % 5),
        1 => format!("gen_g{}", j % 5),
        _ => format!("gen_h{}_seconds", j % 5),
    }
}

/// Kind of `gen` family `j` (0..15): counters, gauges, histograms, five of each.
pub fn gen_family_kind(j: usize) -> MetricKind {
    match j / 5 {
        0 => MetricKind::Counter,
        1 => MetricKind::Gauge,
        _ => MetricKind::Histogram,
    }
}

/// Slot words of one series of `gen` family `j` (a histogram's with [`GEN_BUCKETS`]).
pub fn gen_slot_words(j: usize) -> usize {
    let kind = gen_family_kind(j);
    let buckets = if kind == MetricKind::Histogram {
        GEN_BUCKETS
    } else {
        0
    };
    shmetrics_layout::slots::slot_words(kind, buckets)
}

/// Gauge mode of `gen` gauge `k` (0..5): `mostrecent` for g0–g2, `livesum` for g3–g4.
pub fn gen_gauge_mode(k: usize) -> GaugeMode {
    if k < 3 {
        GaugeMode::MostRecent
    } else {
        GaugeMode::LiveSum
    }
}

/// Series of `gen` family `j` when a process registers `total` series: `total / 15`, plus
/// one for each of the first `total % 15` families.
pub fn gen_series_count(total: usize, j: usize) -> usize {
    total / GEN_FAMILIES + usize::from(j < total % GEN_FAMILIES)
}

/// Bucket bounds of the `gen` histograms: `0.001 * 2^k` for `k` in `0..20`.
pub fn gen_bounds() -> Vec<f64> {
    (0..GEN_BUCKETS)
        .map(|k| 0.001 * (1u64 << k) as f64)
        .collect()
}

/// The value observed in round `round` on histogram series `series`: `0.00075 * 2^k` with
/// `k = (round + series) % 21`, which falls in bucket `k` (`k = 20` is `+Inf`). Successive
/// rounds walk every bucket.
pub fn gen_value(round: u64, series: usize) -> f64 {
    let k = (round + series as u64) % (GEN_BUCKETS as u64 + 1);
    0.00075 * (1u64 << k) as f64
}

/// The `gen` workload of one process: its series handles.
#[derive(Debug)]
pub struct GenWorkload {
    counters: Vec<Counter>,
    recent_gauges: Vec<Gauge>,
    live_gauges: Vec<Gauge>,
    histograms: Vec<(usize, Histogram)>,
}

impl GenWorkload {
    /// Registers the 15 families and `series` series split over them (see
    /// [`gen_series_count`]), each labelled `series="<i>"` with `i` counting from 0 within
    /// its family.
    ///
    /// # Errors
    /// When the registry refuses a family or a series.
    pub fn register(registry: &Registry, series: usize) -> Result<Self, WorkloadError> {
        let mut w = Self {
            counters: Vec::new(),
            recent_gauges: Vec::new(),
            live_gauges: Vec::new(),
            histograms: Vec::new(),
        };
        let bounds = gen_bounds();
        for j in 0..GEN_FAMILIES {
            let name = gen_family_name(j);
            let k = j % 5;
            let labels: Vec<String> = (0..gen_series_count(series, j))
                .map(|i| i.to_string())
                .collect();
            match gen_family_kind(j) {
                MetricKind::Counter => {
                    let help = format!("Generated counter {k}: incremented once per round.");
                    let fam = registry
                        .counter(&name, &help, &["series"])
                        .map_err(register_err(&name))?;
                    for l in &labels {
                        let c = fam.labels(&[l]).map_err(register_err(&name))?;
                        w.counters.push(c.clone());
                    }
                }
                MetricKind::Gauge => {
                    let mode = gen_gauge_mode(k);
                    let help = format!("Generated gauge {k} (mode {mode}).");
                    let fam = registry
                        .gauge(&name, &help, &["series"], mode)
                        .map_err(register_err(&name))?;
                    for l in &labels {
                        let g = fam.labels(&[l]).map_err(register_err(&name))?.clone();
                        match mode {
                            GaugeMode::MostRecent => w.recent_gauges.push(g),
                            _ => w.live_gauges.push(g),
                        }
                    }
                }
                _ => {
                    let help = format!("Generated histogram {k}: one observation per round.");
                    let fam = registry
                        .histogram(&name, &help, &["series"], &bounds)
                        .map_err(register_err(&name))?;
                    for (i, l) in labels.iter().enumerate() {
                        let h = fam.labels(&[l]).map_err(register_err(&name))?;
                        w.histograms.push((i, h.clone()));
                    }
                }
            }
        }
        Ok(w)
    }

    /// Round `round` (counting from 0): every counter series +1, every histogram series one
    /// observation of [`gen_value`], every `mostrecent` gauge set to `round + 1`, every
    /// `livesum` gauge set to 1. After rounds `0..n` counters and histogram counts are `n`
    /// and `mostrecent` gauges are `n`.
    pub fn round(&self, round: u64) {
        for c in &self.counters {
            c.inc();
        }
        for (i, h) in &self.histograms {
            h.observe(gen_value(round, *i));
        }
        for g in &self.recent_gauges {
            g.set((round + 1) as f64);
        }
        for g in &self.live_gauges {
            g.set(1.0);
        }
    }

    /// As [`GenWorkload::round`], each counter increment and histogram observation with an
    /// exemplar: a `trace_id` label of 32 hex digits (a W3C trace id) made of the round and
    /// the series' index.
    ///
    /// # Errors
    /// Never for these labels; the writer's error otherwise.
    pub fn round_with_exemplars(&self, round: u64) -> Result<(), shmetrics_writer::Error> {
        let trace = |i: usize| [("trace_id", format!("{round:016x}{i:016x}"))];
        for (i, c) in self.counters.iter().enumerate() {
            c.inc_by_with_exemplar(1.0, &trace(i))?;
        }
        for (i, h) in &self.histograms {
            h.observe_with_exemplar(gen_value(round, *i), &trace(*i))?;
        }
        for g in &self.recent_gauges {
            g.set((round + 1) as f64);
        }
        for g in &self.live_gauges {
            g.set(1.0);
        }
        Ok(())
    }

    /// Series registered.
    pub fn series(&self) -> usize {
        self.counters.len()
            + self.recent_gauges.len()
            + self.live_gauges.len()
            + self.histograms.len()
    }
}

// ---------------------------------------------------------------------------------------
// The vLLM metric set.
// ---------------------------------------------------------------------------------------

/// vLLM's metric set as shipped in `workloads/vllm_metrics.json`.
pub const VLLM_METRICS_JSON: &str = include_str!("../workloads/vllm_metrics.json");

/// LMCache's metric set (0.5.6) as shipped in `workloads/lmcache_metrics.json`.
pub const LMCACHE_METRICS_JSON: &str = include_str!("../workloads/lmcache_metrics.json");

/// Dynamo's own metric set as shipped in `workloads/dynamo_metrics.json`.
pub const DYNAMO_METRICS_JSON: &str = include_str!("../workloads/dynamo_metrics.json");

/// A metric set file: the metrics, and example label values.
#[derive(Clone, Debug, Deserialize)]
pub struct MetricSet {
    /// Every metric.
    pub metrics: Vec<MetricSpec>,
    /// Example label values by label name: a list of values, or a description that may
    /// contain a quoted example (`e.g. "Qwen/Qwen3-0.6B"`) or a range (`0..2`).
    #[serde(default)]
    pub typical_label_values: BTreeMap<String, Value>,
}

/// A metric type as spelled in the JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpecKind {
    /// A counter.
    Counter,
    /// A gauge.
    Gauge,
    /// A histogram.
    Histogram,
    /// A summary.
    Summary,
}

impl From<SpecKind> for MetricKind {
    fn from(k: SpecKind) -> Self {
        match k {
            SpecKind::Counter => Self::Counter,
            SpecKind::Gauge => Self::Gauge,
            SpecKind::Histogram => Self::Histogram,
            SpecKind::Summary => Self::Summary,
        }
    }
}

/// Histogram buckets as the JSON gives them.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum BucketSpec {
    /// Explicit finite upper bounds.
    List(Vec<f64>),
    /// A description: a rule plus example lists under keys starting with `example`.
    Described(BTreeMap<String, Value>),
}

impl BucketSpec {
    /// The bounds to register: an explicit list as given; for a description, the example
    /// list with the fewest bounds (vLLM's `request_tokens` buckets for the smallest
    /// `max_model_len` the file shows, which is the one its series counts assume); `None`
    /// when a description has no usable example, meaning [`DEFAULT_BUCKETS`].
    pub fn bounds(&self) -> Option<Vec<f64>> {
        match self {
            Self::List(b) => Some(b.clone()),
            Self::Described(map) => map
                .iter()
                .filter(|(k, _)| k.starts_with("example"))
                .filter_map(|(_, v)| {
                    let list = v.as_array()?;
                    list.iter().map(Value::as_f64).collect::<Option<Vec<f64>>>()
                })
                .filter(|b| !b.is_empty())
                .min_by_key(Vec::len),
        }
    }
}

/// One metric of a set.
#[derive(Clone, Debug, Deserialize)]
pub struct MetricSpec {
    /// Name as registered (a counter's may end in `_total`, which the registry strips).
    pub name: String,
    /// Type.
    #[serde(rename = "type")]
    pub kind: SpecKind,
    /// Help text.
    #[serde(default)]
    pub help: String,
    /// Label names; an entry that is not a valid label name is a description (see
    /// [`MetricSet::label_names`]).
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    /// Histogram buckets; absent means [`DEFAULT_BUCKETS`].
    #[serde(default)]
    pub buckets: Option<BucketSpec>,
    /// `prometheus_client` multiprocess mode of a gauge; absent means `all`, that
    /// library's default.
    #[serde(default)]
    pub multiprocess_mode: Option<String>,
    /// Label values of this metric by label name (a list, or a description).
    #[serde(default)]
    pub label_values: BTreeMap<String, Value>,
    /// How the metric is updated, where the set says (LMCache's: `stats_logger_tick` for
    /// the values its stats thread publishes every 10 s, `set_function_callback` for gauges
    /// read by a callback, which never reach a multiprocess directory).
    #[serde(default)]
    pub update: Option<String>,
    /// When a histogram is observed, where the set says (`observed only with a remote
    /// backend`, ...).
    #[serde(default)]
    pub observed: Option<String>,
}

impl MetricSpec {
    /// The name as exposed: counters end in `_total`.
    pub fn exposed_name(&self) -> String {
        match self.kind {
            SpecKind::Counter => format!("{}_total", self.base_name()),
            _ => self.name.clone(),
        }
    }

    /// The name without a counter's `_total` suffix (the family name in segments).
    pub fn base_name(&self) -> &str {
        match self.kind {
            SpecKind::Counter => self.name.strip_suffix("_total").unwrap_or(&self.name),
            _ => &self.name,
        }
    }

    /// The gauge mode, `all` when absent.
    ///
    /// # Errors
    /// An unknown mode name.
    pub fn gauge_mode(&self) -> Result<GaugeMode, WorkloadError> {
        match &self.multiprocess_mode {
            None => Ok(GaugeMode::All),
            Some(m) => m.parse().map_err(|source| WorkloadError::GaugeMode {
                metric: self.name.clone(),
                source,
            }),
        }
    }
}

/// The fields of vLLM's `CacheConfig` with realistic values, standing in for the label
/// description `<every CacheConfig field name>` of `vllm:cache_config_info` (vLLM labels
/// that gauge with `str()` of every field).
pub const CACHE_CONFIG_LABELS: &[(&str, &str)] = &[
    ("block_size", "16"),
    ("cache_dtype", "auto"),
    ("calculate_kv_scales", "False"),
    ("cpu_offload_gb", "0"),
    ("enable_prefix_caching", "True"),
    ("gpu_memory_utilization", "0.9"),
    ("is_attention_free", "False"),
    ("kv_sharing_fast_prefill", "False"),
    ("mamba_cache_dtype", "auto"),
    ("mamba_page_size_padded", "None"),
    ("mamba_ssm_cache_dtype", "auto"),
    ("num_cpu_blocks", "None"),
    ("num_gpu_blocks", "27234"),
    ("num_gpu_blocks_override", "None"),
    ("prefix_caching_hash_algo", "sha256"),
    ("sliding_window", "None"),
    ("swap_space", "4"),
];

/// Values for labels the JSON names without giving values.
const KNOWN_LABEL_VALUES: &[(&str, &[&str])] = &[
    ("max_lora", &["4"]),
    ("waiting_lora_adapters", &[""]),
    ("running_lora_adapters", &["sql-lora"]),
    ("dynamo_namespace", &["dynamo"]),
    ("dynamo_component", &["backend"]),
    ("dynamo_endpoint", &["generate"]),
    ("dp_rank", &["0"]),
];

/// Fallback model name when the set gives no example.
const DEFAULT_MODEL: &str = "Qwen/Qwen3-0.6B";

/// Most series one family gets from the product of its label values.
pub const MAX_SERIES_PER_FAMILY: usize = 256;

/// Values from a JSON description: a list as is; a string containing a range `a..b`
/// (digits) gives `a`..=`b`; else a string containing a quoted example gives it; else
/// nothing.
fn values_from_json(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(items) => {
            let values: Vec<String> = items
                .iter()
                .filter_map(|i| match i {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    Value::Bool(b) => Some(b.to_string()),
                    _ => None,
                })
                .collect();
            (!values.is_empty()).then_some(values)
        }
        Value::String(s) => range_in(s).or_else(|| quoted_in(s).map(|q| vec![q])),
        _ => None,
    }
}

/// The first `a..b` with decimal `a <= b` (at most 64 values) in `s`.
fn range_in(s: &str) -> Option<Vec<String>> {
    let bytes = s.as_bytes();
    let mut from = 0;
    while let Some(pos) = s[from..].find("..").map(|p| p + from) {
        let start = bytes[..pos]
            .iter()
            .rposition(|b| !b.is_ascii_digit())
            .map_or(0, |p| p + 1);
        let end = bytes[pos + 2..]
            .iter()
            .position(|b| !b.is_ascii_digit())
            .map_or(bytes.len(), |p| p + pos + 2);
        if let (Ok(a), Ok(b)) = (s[start..pos].parse::<u64>(), s[pos + 2..end].parse::<u64>())
            && a <= b
            && b - a < 64
        {
            return Some((a..=b).map(|i| i.to_string()).collect());
        }
        from = pos + 2;
    }
    None
}

/// The text between the first pair of double quotes in `s`, if not empty.
fn quoted_in(s: &str) -> Option<String> {
    let start = s.find('"')? + 1;
    let len = s[start..].find('"')?;
    (len > 0).then(|| s[start..start + len].to_owned())
}

/// Who a process is in a workload: its index (the `engine` label) and model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessContext {
    /// Index of the process among the workload's processes; the `engine` label value.
    pub index: u32,
    /// The `model_name` (and `model`) label value.
    pub model_name: String,
}

/// A metric ready to register: names, mode, bounds and the label values of every series.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedMetric {
    /// Name as given to the registry.
    pub name: String,
    /// Type.
    pub kind: MetricKind,
    /// Help text.
    pub help: String,
    /// Gauge mode (gauges only).
    pub mode: Option<GaugeMode>,
    /// Label names after expanding descriptions.
    pub label_names: Vec<String>,
    /// Finite bucket bounds (histograms only; empty means the registry's defaults).
    pub bounds: Vec<f64>,
    /// Label values of each series, in `label_names` order.
    pub series: Vec<Vec<String>>,
}

impl MetricSet {
    /// Parses a metric-set JSON document.
    ///
    /// # Errors
    /// Malformed JSON or a metric without `name` or `type`, or of an unknown type.
    pub fn parse(json: &str) -> Result<Self, WorkloadError> {
        serde_json::from_str(json).map_err(WorkloadError::Json)
    }

    /// vLLM's metric set ([`VLLM_METRICS_JSON`]).
    ///
    /// # Errors
    /// As [`MetricSet::parse`] (a test keeps the shipped file parseable).
    pub fn vllm() -> Result<Self, WorkloadError> {
        Self::parse(VLLM_METRICS_JSON)
    }

    /// The model name the set suggests (`typical_label_values.model_name`), or
    /// `Qwen/Qwen3-0.6B`.
    pub fn model_name(&self) -> String {
        self.typical_label_values
            .get("model_name")
            .and_then(values_from_json)
            .and_then(|v| v.into_iter().next())
            .unwrap_or_else(|| DEFAULT_MODEL.to_owned())
    }

    /// A context for process `index` with the set's model name.
    pub fn context(&self, index: u32) -> ProcessContext {
        ProcessContext {
            index,
            model_name: self.model_name(),
        }
    }

    /// The label names of `metric`. An entry that is not a classic label name describes
    /// labels instead of naming one: `<every CacheConfig field name>` (any entry mentioning
    /// `CacheConfig`) expands to [`CACHE_CONFIG_LABELS`]; any other is dropped. Duplicates
    /// are dropped.
    pub fn label_names(&self, metric: &MetricSpec) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for label in metric.labels.iter().flatten() {
            let names: Vec<String> = if is_legacy_label_name(label) {
                vec![label.clone()]
            } else if label.contains("CacheConfig") {
                CACHE_CONFIG_LABELS
                    .iter()
                    .map(|(n, _)| (*n).to_owned())
                    .collect()
            } else {
                log::debug!("{}: label description {label:?} dropped", metric.name);
                Vec::new()
            };
            for n in names {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        out
    }

    /// The values label `label` of `metric` takes in process `ctx`, from the first source
    /// that gives any: `model_name`/`model` and `engine` from `ctx`; the metric's own
    /// `label_values`; the set's `typical_label_values`; the metric whose name shares the
    /// longest prefix with this one among those listing values for the label;
    /// [`CACHE_CONFIG_LABELS`] and a few known labels; else the single value `default`.
    pub fn label_values(
        &self,
        metric: &MetricSpec,
        label: &str,
        ctx: &ProcessContext,
    ) -> Vec<String> {
        match label {
            "model_name" | "model" => return vec![ctx.model_name.clone()],
            "engine" => return vec![ctx.index.to_string()],
            _ => {}
        }
        if let Some(v) = metric.label_values.get(label).and_then(values_from_json) {
            return v;
        }
        if let Some(v) = self
            .typical_label_values
            .get(label)
            .and_then(values_from_json)
        {
            return v;
        }
        let common = |other: &str| {
            metric
                .name
                .bytes()
                .zip(other.bytes())
                .take_while(|(a, b)| a == b)
                .count()
        };
        let sibling = self
            .metrics
            .iter()
            .filter(|m| m.name != metric.name)
            .filter_map(|m| {
                let v = m.label_values.get(label).and_then(values_from_json)?;
                Some((common(&m.name), v))
            })
            .max_by_key(|(c, _)| *c);
        if let Some((_, v)) = sibling {
            return v;
        }
        if let Some((_, v)) = CACHE_CONFIG_LABELS.iter().find(|(n, _)| *n == label) {
            return vec![(*v).to_owned()];
        }
        if let Some((_, v)) = KNOWN_LABEL_VALUES.iter().find(|(n, _)| *n == label) {
            return v.iter().map(|s| (*s).to_owned()).collect();
        }
        vec!["default".to_owned()]
    }

    /// Resolves `metric` for process `ctx`: its series are the product of its labels'
    /// values (at most [`MAX_SERIES_PER_FAMILY`]).
    ///
    /// # Errors
    /// An unknown gauge mode.
    pub fn resolve(
        &self,
        metric: &MetricSpec,
        ctx: &ProcessContext,
    ) -> Result<ResolvedMetric, WorkloadError> {
        let kind = MetricKind::from(metric.kind);
        let mode = match kind {
            MetricKind::Gauge => Some(metric.gauge_mode()?),
            _ => None,
        };
        let bounds = match kind {
            MetricKind::Histogram => metric
                .buckets
                .as_ref()
                .and_then(BucketSpec::bounds)
                .unwrap_or_else(|| DEFAULT_BUCKETS.to_vec()),
            _ => Vec::new(),
        };
        let label_names = self.label_names(metric);
        let mut series: Vec<Vec<String>> = vec![Vec::new()];
        for label in &label_names {
            let values = self.label_values(metric, label, ctx);
            series = series
                .iter()
                .flat_map(|prefix| {
                    values.iter().map(move |v| {
                        let mut s = prefix.clone();
                        s.push(v.clone());
                        s
                    })
                })
                .take(MAX_SERIES_PER_FAMILY)
                .collect();
        }
        Ok(ResolvedMetric {
            name: metric.name.clone(),
            kind,
            help: metric.help.clone(),
            mode,
            label_names,
            bounds,
            series,
        })
    }
}

/// The quantities the name-based rules of the families the engine model does not cover
/// are derived from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StepSummary {
    running: u64,
    waiting: u64,
    new_requests: u64,
    finished: u64,
    prompt_tokens: u64,
    cached_tokens: u64,
}

impl From<&StepReport> for StepSummary {
    fn from(r: &StepReport) -> Self {
        Self {
            running: r.running,
            waiting: r.waiting,
            new_requests: r.admitted.len() as u64,
            finished: r.finished.len() as u64,
            prompt_tokens: r.admitted.iter().map(|a| a.prompt_tokens).sum(),
            cached_tokens: r
                .admitted
                .iter()
                .map(|a| a.device_cached_tokens + a.external_cached_tokens)
                .sum(),
        }
    }
}

/// A vLLM family whose values come from the engine model itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Modeled {
    Running,
    Waiting,
    WaitingByReason,
    KvUsage,
    KvFetchByStage,
    PromptTokens,
    PromptTokensBySource,
    PromptTokensCached,
    PromptTokensCachedBySource,
    PrefixQueries,
    PrefixHits,
    ExternalQueries,
    ExternalHits,
    GenerationTokens,
    Success,
    Preemptions,
    Rejections,
    IterationTokens,
    TimeToFirstToken,
    InterToken,
    E2e,
    Queue,
    Inference,
    Prefill,
    Decode,
    PromptLength,
    OutputLength,
    TimePerOutputToken,
    RequestPreemptions,
    PrefillComputed,
    MaxTokens,
    MaxGenerationTokens,
    ParamsN,
}

/// The modeled quantity of a vLLM family, from its name without the `vllm:` prefix.
fn modeled(short: &str) -> Option<Modeled> {
    use Modeled::*;
    Some(match short {
        "num_requests_running" => Running,
        "num_requests_waiting" => Waiting,
        "num_requests_waiting_by_reason" => WaitingByReason,
        "kv_cache_usage_perc" => KvUsage,
        "num_requests_kv_fetch_by_stage" => KvFetchByStage,
        "prompt_tokens" => PromptTokens,
        "prompt_tokens_by_source" => PromptTokensBySource,
        "prompt_tokens_cached" => PromptTokensCached,
        "prompt_tokens_cached_by_source" => PromptTokensCachedBySource,
        "prefix_cache_queries" => PrefixQueries,
        "prefix_cache_hits" => PrefixHits,
        "external_prefix_cache_queries" => ExternalQueries,
        "external_prefix_cache_hits" => ExternalHits,
        "generation_tokens" => GenerationTokens,
        "request_success" => Success,
        "num_preemptions" => Preemptions,
        "admission_rejections" => Rejections,
        "iteration_tokens_total" => IterationTokens,
        "time_to_first_token_seconds" => TimeToFirstToken,
        "inter_token_latency_seconds" => InterToken,
        "e2e_request_latency_seconds" => E2e,
        "request_queue_time_seconds" => Queue,
        "request_inference_time_seconds" => Inference,
        "request_prefill_time_seconds" => Prefill,
        "request_decode_time_seconds" => Decode,
        "request_prompt_tokens" => PromptLength,
        "request_generation_tokens" => OutputLength,
        "request_time_per_output_token_seconds" => TimePerOutputToken,
        "request_num_preemptions" => RequestPreemptions,
        "request_prefill_kv_computed_tokens" => PrefillComputed,
        "request_params_max_tokens" => MaxTokens,
        "request_max_num_generation_tokens" => MaxGenerationTokens,
        "request_params_n" => ParamsN,
        _ => return None,
    })
}

/// A modeled gauge's value for the series whose distinguishing label (`reason`, `stage`)
/// is `label`.
fn modeled_gauge(q: Modeled, label: &str, r: &StepReport) -> f64 {
    match (q, label) {
        (Modeled::Running, _) => r.running as f64,
        (Modeled::Waiting, _) => r.waiting as f64,
        (Modeled::WaitingByReason, "capacity") => r.waiting_for_capacity as f64,
        (Modeled::WaitingByReason, "deferred") => (r.waiting - r.waiting_for_capacity) as f64,
        (Modeled::KvUsage, _) => r.kv_usage,
        // No KV connector fetches anything: every stage is empty.
        _ => 0.0,
    }
}

/// A modeled counter's increment for the series whose distinguishing label (`source`,
/// `finished_reason`, `reason`) is `label`.
fn modeled_increment(q: Modeled, label: &str, r: &StepReport, external_cache: bool) -> f64 {
    let admitted = |f: fn(&Admitted) -> u64| r.admitted.iter().map(f).sum::<u64>() as f64;
    match (q, label) {
        (Modeled::PromptTokens | Modeled::PrefixQueries, _) => admitted(|a| a.prompt_tokens),
        (Modeled::PromptTokensBySource, "local_compute") => admitted(Admitted::computed_tokens),
        (Modeled::PromptTokensBySource, "local_cache_hit")
        | (Modeled::PromptTokensCachedBySource, "device")
        | (Modeled::PrefixHits, _) => admitted(|a| a.device_cached_tokens),
        (Modeled::PromptTokensBySource, "external_kv_transfer")
        | (Modeled::PromptTokensCachedBySource, "external_unspecified")
        | (Modeled::ExternalHits, _) => admitted(|a| a.external_cached_tokens),
        (Modeled::PromptTokensCached, _) => {
            admitted(|a| a.device_cached_tokens + a.external_cached_tokens)
        }
        // The connector is asked for whatever the GPU cache did not have.
        (Modeled::ExternalQueries, _) if external_cache => {
            admitted(|a| a.prompt_tokens - a.device_cached_tokens)
        }
        (Modeled::GenerationTokens, _) => r.generated_tokens as f64,
        (Modeled::Success, reason) => r
            .finished
            .iter()
            .filter(|f| f.reason.label() == reason)
            .count() as f64,
        (Modeled::Preemptions, _) => r.preemptions as f64,
        (Modeled::Rejections, "max_num_queued_reqs") => r.rejected as f64,
        _ => 0.0,
    }
}

/// Calls `observe` with each observation of a modeled histogram in step `r`.
fn modeled_observations(q: Modeled, r: &StepReport, mut observe: impl FnMut(f64)) {
    let mut each =
        |f: fn(&Finished) -> Option<f64>| r.finished.iter().filter_map(f).for_each(&mut observe);
    match q {
        Modeled::IterationTokens if r.scheduled_tokens > 0 => observe(r.scheduled_tokens as f64),
        Modeled::TimeToFirstToken => r.first_tokens.iter().copied().for_each(observe),
        Modeled::InterToken => r.inter_token.iter().copied().for_each(observe),
        Modeled::E2e => each(|f| Some(f.e2e)),
        Modeled::Queue => each(|f| Some(f.queue)),
        Modeled::Inference => each(|f| Some(f.inference)),
        Modeled::Prefill => each(|f| Some(f.prefill)),
        Modeled::Decode => each(|f| Some(f.decode)),
        Modeled::PromptLength => each(|f| Some(f.prompt_tokens as f64)),
        Modeled::OutputLength => each(|f| Some(f.output_tokens as f64)),
        Modeled::TimePerOutputToken => {
            each(|f| (f.output_tokens > 1).then(|| f.decode / (f.output_tokens - 1) as f64))
        }
        Modeled::RequestPreemptions => each(|f| Some(f.preemptions as f64)),
        Modeled::PrefillComputed => each(|f| Some(f.computed_tokens as f64)),
        Modeled::MaxTokens => each(|f| Some(f.max_tokens as f64)),
        Modeled::MaxGenerationTokens => {
            r.admitted.iter().for_each(|a| observe(a.max_tokens as f64));
        }
        Modeled::ParamsN => r.admitted.iter().for_each(|_| observe(1.0)),
        _ => {}
    }
}

/// How a counter grows per step, chosen from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CounterRule {
    PromptTokens,
    CachedTokens,
    GeneratedTokens,
    Running,
    Finished,
    Bytes,
    Flops,
    Rare,
    Small,
}

/// How a gauge is set per step, chosen from its name and mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GaugeRule {
    Running,
    Waiting,
    Ratio,
    Info,
    UnixTime,
    OneHot,
    InFlight,
    Small,
}

/// How many observations a histogram gets per step, chosen from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ObserveRule {
    /// One per running request (inter-token latency).
    PerRunning,
    /// One per admitted request.
    PerNew,
    /// One per finished request.
    PerFinished,
    /// One per step, of the tokens processed.
    StepTokens,
    /// One with probability 1/4 (sampled or occasional events).
    Occasional,
}

fn counter_rule(short: &str) -> CounterRule {
    let has = |s: &str| short.contains(s);
    if has("flops") {
        CounterRule::Flops
    } else if has("bytes") {
        CounterRule::Bytes
    } else if has("preemption")
        || has("failed")
        || has("corrupted")
        || has("expired")
        || has("expiry")
        || has("rejection")
        || has("watermark")
    {
        CounterRule::Rare
    } else if has("prompt_tokens_cached") || has("hits") {
        CounterRule::CachedTokens
    } else if has("prompt_tokens") || has("queries") {
        CounterRule::PromptTokens
    } else if has("tokens") || has("positions") || has("steps") {
        CounterRule::GeneratedTokens
    } else if has("drafts") {
        CounterRule::Running
    } else if has("success") || has("requests") {
        CounterRule::Finished
    } else {
        CounterRule::Small
    }
}

fn gauge_rule(short: &str, mode: Option<GaugeMode>) -> GaugeRule {
    let has = |s: &str| short.contains(s);
    if has("sleep_state") {
        GaugeRule::OneHot
    } else if short.ends_with("_info") {
        if matches!(mode, Some(GaugeMode::Sum | GaugeMode::LiveSum)) {
            GaugeRule::UnixTime
        } else {
            GaugeRule::Info
        }
    } else if has("in_flight") || has("inflight") || has("active") {
        GaugeRule::InFlight
    } else if has("running") {
        GaugeRule::Running
    } else if has("waiting") {
        GaugeRule::Waiting
    } else if has("perc") || has("usage") || has("ratio") || has("rate") {
        GaugeRule::Ratio
    } else {
        GaugeRule::Small
    }
}

fn observe_rule(short: &str) -> ObserveRule {
    let has = |s: &str| short.contains(s);
    if has("inter_token") {
        ObserveRule::PerRunning
    } else if has("iteration_tokens") {
        ObserveRule::StepTokens
    } else if has("first_token") || has("max_num_generation") || has("request_params") {
        ObserveRule::PerNew
    } else if short.starts_with("request_") || has("e2e") {
        ObserveRule::PerFinished
    } else {
        ObserveRule::Occasional
    }
}

#[derive(Debug)]
enum Handles {
    Counter(CounterRule, Vec<Counter>),
    Gauge(GaugeRule, Vec<Gauge>),
    Histogram(ObserveRule, Vec<f64>, Vec<Histogram>),
    Summary(ObserveRule, Vec<Summary>),
    /// Children with the value of their distinguishing label.
    ModeledCounter(Modeled, Vec<(String, Counter)>),
    ModeledGauge(Modeled, Vec<(String, Gauge)>),
    ModeledHistogram(Modeled, Vec<Histogram>),
}

/// Each series' value of the first label that is not `model_name` or `engine` (`""` when
/// there is none), in series order.
fn distinguishing_values(m: &ResolvedMetric) -> Vec<String> {
    let at = m
        .label_names
        .iter()
        .position(|n| n != "model_name" && n != "engine");
    m.series
        .iter()
        .map(|s| at.and_then(|i| s.get(i)).cloned().unwrap_or_default())
        .collect()
}

/// A process writing a whole metric set (built for vLLM's) the way an inference engine
/// does: every metric registered with its type, help, labels, buckets and mode, every
/// series created up front, then [`VllmWorkload::step`] per engine step of an
/// [`EngineModel`].
///
/// The request-level families (running and waiting requests, KV-cache usage, prompt,
/// cached and generated tokens, finished requests by reason, preemptions, and the latency
/// and length histograms: time to first token, inter-token latency, queue, prefill,
/// decode, inference and end-to-end time, prompt and output lengths) take their values
/// from the model, so they agree with each other as a real engine's do. The other families
/// follow their names: token counters grow by the step's prompt, cached or generated
/// tokens; rare-event counters (`failed`, `corrupted`, ...) now and then; `_perc` gauges
/// move in `[0, 1)`; `_info` gauges hold 1 (the current time for `sum`-mode info gauges, as
/// vLLM's `lora_requests_info`); in-flight gauges hold 0–2; other histograms get an
/// occasional observation spread log-uniformly over their buckets. Where such a family has
/// several series, each update goes to the first series three times in four, else to a
/// random one.
#[derive(Debug)]
pub struct VllmWorkload {
    instruments: Vec<Handles>,
    rng: Rng,
    series: usize,
    model: EngineModel,
}

impl VllmWorkload {
    /// Registers every metric of `set` for process `ctx` on `registry`, creates every
    /// series, and starts an engine model with the default [`EngineConfig`] seeded with
    /// `seed`.
    ///
    /// # Errors
    /// An invalid metric description or a family the registry refuses.
    pub fn register(
        registry: &Registry,
        set: &MetricSet,
        ctx: &ProcessContext,
        seed: u64,
    ) -> Result<Self, WorkloadError> {
        Self::register_with(registry, set, ctx, EngineConfig::default(), seed)
    }

    /// As [`VllmWorkload::register`], with the engine model's configuration.
    ///
    /// # Errors
    /// As [`VllmWorkload::register`].
    pub fn register_with(
        registry: &Registry,
        set: &MetricSet,
        ctx: &ProcessContext,
        config: EngineConfig,
        seed: u64,
    ) -> Result<Self, WorkloadError> {
        let mut instruments = Vec::with_capacity(set.metrics.len());
        let mut total = 0;
        for spec in &set.metrics {
            let m = set.resolve(spec, ctx)?;
            let err = register_err(&m.name);
            let labels: Vec<&str> = m.label_names.iter().map(String::as_str).collect();
            let short = m.name.rsplit(':').next().unwrap_or(&m.name);
            total += m.series.len();
            let handles = match (m.kind, modeled(short)) {
                (MetricKind::Counter, Some(q)) => {
                    let fam = registry.counter(&m.name, &m.help, &labels).map_err(err)?;
                    let children = children_of(&fam, &m)?;
                    Handles::ModeledCounter(
                        q,
                        distinguishing_values(&m)
                            .into_iter()
                            .zip(children)
                            .collect(),
                    )
                }
                (MetricKind::Gauge, Some(q)) => {
                    let mode = m.mode.unwrap_or(GaugeMode::All);
                    let fam = registry
                        .gauge(&m.name, &m.help, &labels, mode)
                        .map_err(err)?;
                    let children = children_of(&fam, &m)?;
                    Handles::ModeledGauge(
                        q,
                        distinguishing_values(&m)
                            .into_iter()
                            .zip(children)
                            .collect(),
                    )
                }
                (MetricKind::Histogram, Some(q)) => {
                    let fam = registry
                        .histogram(&m.name, &m.help, &labels, &m.bounds)
                        .map_err(err)?;
                    Handles::ModeledHistogram(q, children_of(&fam, &m)?)
                }
                (MetricKind::Counter, _) => {
                    let fam = registry.counter(&m.name, &m.help, &labels).map_err(err)?;
                    let children = children_of(&fam, &m)?;
                    Handles::Counter(counter_rule(short), children)
                }
                (MetricKind::Gauge, _) => {
                    let mode = m.mode.unwrap_or(GaugeMode::All);
                    let fam = registry
                        .gauge(&m.name, &m.help, &labels, mode)
                        .map_err(err)?;
                    let children = children_of(&fam, &m)?;
                    Handles::Gauge(gauge_rule(short, m.mode), children)
                }
                (MetricKind::Histogram, _) => {
                    let fam = registry
                        .histogram(&m.name, &m.help, &labels, &m.bounds)
                        .map_err(err)?;
                    let children = children_of(&fam, &m)?;
                    let bounds = children
                        .first()
                        .map(|h| h.bounds().to_vec())
                        .unwrap_or_default();
                    Handles::Histogram(observe_rule(short), bounds, children)
                }
                (MetricKind::Summary, _) => {
                    let fam = registry.summary(&m.name, &m.help, &labels).map_err(err)?;
                    let children = children_of(&fam, &m)?;
                    Handles::Summary(observe_rule(short), children)
                }
                (MetricKind::Info | MetricKind::StateSet, _) => {
                    unreachable!("the workload files' kinds are counter, gauge, histogram, summary")
                }
            };
            instruments.push(handles);
        }
        let w = Self {
            instruments,
            rng: Rng::new(seed),
            series: total,
            model: EngineModel::new(config, seed),
        };
        // Info gauges are set once at start-up, as vLLM does.
        for handles in &w.instruments {
            if let Handles::Gauge(GaugeRule::Info, children) = handles {
                for g in children {
                    g.set(1.0);
                }
            }
        }
        Ok(w)
    }

    /// Series registered.
    pub fn series(&self) -> usize {
        self.series
    }

    /// The engine model.
    pub fn model(&self) -> &EngineModel {
        &self.model
    }

    /// One engine step of the model, applied to every metric; returns what it did.
    pub fn step(&mut self) -> StepReport {
        let report = self.model.step();
        let summary = StepSummary::from(&report);
        let external = self.model.config().external_cache;
        for handles in &self.instruments {
            apply(handles, &report, &summary, external, &mut self.rng);
        }
        report
    }
}

/// The children of `family` for every label set of `m`.
fn children_of<C: Child + Clone>(
    family: &Family<C>,
    m: &ResolvedMetric,
) -> Result<Vec<C>, WorkloadError> {
    m.series
        .iter()
        .map(|s| family.labels(s).cloned())
        .collect::<Result<Vec<_>, _>>()
        .map_err(register_err(&m.name))
}

/// Which series of `n` gets an update: the first three times in four, else a random one.
fn pick(rng: &mut Rng, n: usize) -> usize {
    if n <= 1 || rng.chance(0.75) {
        0
    } else {
        rng.below(n as u64) as usize
    }
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn observations(rule: ObserveRule, step: &StepSummary, rng: &mut Rng) -> u64 {
    match rule {
        ObserveRule::PerRunning => step.running,
        ObserveRule::PerNew => step.new_requests,
        ObserveRule::PerFinished => step.finished,
        ObserveRule::StepTokens => 1,
        ObserveRule::Occasional => u64::from(rng.chance(0.25)),
    }
}

/// A value spread over `bounds`: log-uniform from half the first bound to a little past
/// the last, so every bucket including `+Inf` gets some; whole numbers when every bound is
/// one (token, request and byte counts).
fn spread_value(bounds: &[f64], rng: &mut Rng) -> f64 {
    let (lo, hi) = match (bounds.first(), bounds.last()) {
        (Some(&lo), Some(&hi)) if lo > 0.0 && hi > lo => (lo / 2.0, hi * 1.2),
        (Some(&b), _) if b > 0.0 => (b / 2.0, b * 2.0),
        _ => (0.001, 10.0),
    };
    let v = rng.log_uniform(lo, hi);
    if !bounds.is_empty() && bounds.iter().all(|b| b.fract() == 0.0) {
        v.ceil()
    } else {
        v
    }
}

fn apply(
    handles: &Handles,
    report: &StepReport,
    step: &StepSummary,
    external_cache: bool,
    rng: &mut Rng,
) {
    match handles {
        Handles::ModeledCounter(q, children) => {
            for (label, c) in children {
                let amount = modeled_increment(*q, label, report, external_cache);
                if amount > 0.0 {
                    c.inc_by(amount);
                }
            }
        }
        Handles::ModeledGauge(q, children) => {
            for (label, g) in children {
                g.set(modeled_gauge(*q, label, report));
            }
        }
        Handles::ModeledHistogram(q, children) => {
            if let Some(h) = children.first() {
                modeled_observations(*q, report, |v| h.observe(v));
            }
        }
        Handles::Counter(rule, children) => {
            if children.is_empty() {
                return;
            }
            let amount = match rule {
                CounterRule::PromptTokens => step.prompt_tokens as f64,
                CounterRule::CachedTokens => step.cached_tokens as f64,
                CounterRule::GeneratedTokens => step.running as f64,
                CounterRule::Running => step.running as f64,
                CounterRule::Finished => step.finished as f64,
                CounterRule::Bytes => (rng.below(1 << 20) * 4096) as f64,
                CounterRule::Flops => 1e12 * (1.0 + rng.unit()) * step.running as f64,
                CounterRule::Rare => u64::from(rng.chance(1.0 / 32.0)) as f64,
                CounterRule::Small => rng.below(3) as f64,
            };
            children[pick(rng, children.len())].inc_by(amount);
        }
        Handles::Gauge(rule, children) => {
            for (i, g) in children.iter().enumerate() {
                let v = match rule {
                    GaugeRule::Running => step.running as f64,
                    GaugeRule::Waiting if i == 0 => step.waiting as f64,
                    GaugeRule::Waiting => rng.below(step.waiting + 1) as f64,
                    GaugeRule::Ratio => rng.unit(),
                    GaugeRule::Info => 1.0,
                    GaugeRule::UnixTime => now_secs(),
                    GaugeRule::OneHot => f64::from(u8::from(i == 0)),
                    GaugeRule::InFlight => rng.below(3) as f64,
                    GaugeRule::Small => rng.below(8) as f64,
                };
                g.set(v);
            }
        }
        Handles::Histogram(rule, bounds, children) => {
            if children.is_empty() {
                return;
            }
            for _ in 0..observations(*rule, step, rng) {
                let v = match rule {
                    ObserveRule::StepTokens => (step.prompt_tokens + step.running) as f64,
                    _ => spread_value(bounds, rng),
                };
                children[pick(rng, children.len())].observe(v);
            }
        }
        Handles::Summary(rule, children) => {
            if children.is_empty() {
                return;
            }
            for _ in 0..observations(*rule, step, rng) {
                let v = rng.log_uniform(0.001, 10.0);
                children[pick(rng, children.len())].observe(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gen_split_and_values() {
        let counts: Vec<usize> = (0..GEN_FAMILIES).map(|j| gen_series_count(32, j)).collect();
        assert_eq!(counts, [3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]);
        assert_eq!(counts.iter().sum::<usize>(), 32);
        assert_eq!(gen_family_name(0), "gen_c0_total");
        assert_eq!(gen_family_name(7), "gen_g2");
        assert_eq!(gen_family_name(14), "gen_h4_seconds");
        let bounds = gen_bounds();
        assert_eq!(bounds.len(), 20);
        assert_eq!(bounds[0], 0.001);
        assert_eq!(bounds[19], 0.001 * 524_288.0);
        // Every round lands in bucket (round + series) % 21; 20 is +Inf.
        for round in 0..42 {
            for series in 0..3 {
                let bucket =
                    shmetrics_layout::slots::bucket_index(&bounds, gen_value(round, series));
                assert_eq!(bucket as u64, (round + series as u64) % 21);
            }
        }
    }

    #[test]
    fn rng_is_deterministic_and_bounded() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
            let u = a.unit();
            assert!((0.0..1.0).contains(&u));
            assert!(a.below(5) < 5);
            let v = a.log_uniform(0.5, 8.0);
            assert!((0.5..=8.0).contains(&v), "{v}");
            b.unit();
            b.below(5);
            b.log_uniform(0.5, 8.0);
        }
        assert_eq!(Rng::new(1).below(0), 0);
    }

    #[test]
    fn descriptions_give_values() {
        let s = |t: &str| Value::String(t.to_owned());
        assert_eq!(
            values_from_json(&s(
                "0..num_speculative_tokens-1 (e.g. 0..2 for 3 draft tokens)"
            )),
            Some(vec!["0".into(), "1".into(), "2".into()])
        );
        assert_eq!(values_from_json(&s("0..num_speculative_tokens-1")), None);
        assert_eq!(
            values_from_json(&s(
                "served_model_name, e.g. \"Qwen/Qwen3-0.6B\" (one value)"
            )),
            Some(vec!["Qwen/Qwen3-0.6B".into()])
        );
        assert_eq!(
            values_from_json(&serde_json::json!(["a", 1, true])),
            Some(vec!["a".into(), "1".into(), "true".into()])
        );
        assert_eq!(values_from_json(&serde_json::json!([])), None);
    }

    #[test]
    fn vllm_set_resolves_every_metric() {
        let set = MetricSet::vllm().unwrap();
        assert_eq!(set.metrics.len(), 69);
        assert_eq!(set.model_name(), "Qwen/Qwen3-0.6B");
        let ctx = set.context(3);
        let by_name = |n: &str| {
            let spec = set.metrics.iter().find(|m| m.name == n).unwrap();
            set.resolve(spec, &ctx).unwrap()
        };
        let tokens = by_name("vllm:request_prompt_tokens");
        assert_eq!(
            tokens.bounds,
            [
                1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
                10000.0, 20000.0
            ]
        );
        assert_eq!(
            tokens.series,
            [vec!["Qwen/Qwen3-0.6B".to_owned(), "3".to_owned()]]
        );
        let success = by_name("vllm:request_success");
        assert_eq!(
            success.label_names,
            ["model_name", "engine", "finished_reason"]
        );
        assert_eq!(success.series.len(), 5);
        let per_pos = by_name("vllm:spec_decode_num_accepted_tokens_per_pos");
        let positions: Vec<&str> = per_pos.series.iter().map(|s| s[2].as_str()).collect();
        assert_eq!(positions, ["0", "1", "2"]);
        let cache = by_name("vllm:cache_config_info");
        assert_eq!(cache.label_names.len(), CACHE_CONFIG_LABELS.len() + 1);
        assert_eq!(cache.label_names.last().map(String::as_str), Some("engine"));
        assert_eq!(cache.mode, Some(GaugeMode::MostRecent));
        assert_eq!(cache.series.len(), 1);
        let in_flight = by_name("vllm:sleep_mode_operations_in_flight");
        assert_eq!(in_flight.mode, Some(GaugeMode::LiveSum));
        let ops: Vec<&str> = in_flight.series.iter().map(|s| s[0].as_str()).collect();
        assert_eq!(ops, ["sleep", "release_kv_cache_memory", "wake"]);
        let lora = by_name("vllm:lora_requests_info");
        assert_eq!(lora.mode, Some(GaugeMode::Sum));
        assert_eq!(
            lora.series,
            [vec!["4".to_owned(), String::new(), "sql-lora".to_owned()]]
        );
        let flops = set
            .metrics
            .iter()
            .find(|m| m.name == "vllm:estimated_flops_per_gpu_total")
            .unwrap();
        assert_eq!(flops.exposed_name(), "vllm:estimated_flops_per_gpu_total");
        assert_eq!(flops.base_name(), "vllm:estimated_flops_per_gpu");
        for spec in &set.metrics {
            let m = set.resolve(spec, &ctx).unwrap();
            assert!(!m.series.is_empty(), "{}", spec.name);
            assert!(m.series.iter().all(|s| s.len() == m.label_names.len()));
        }
    }

    #[test]
    fn vllm_workload_writes_what_the_engine_model_did() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let set = MetricSet::vllm().unwrap();
        let ctx = set.context(0);
        let mut w = VllmWorkload::register(&registry, &set, &ctx, 1).unwrap();
        assert!(w.series() >= set.metrics.len());
        let reports: Vec<StepReport> = (0..3000).map(|_| w.step()).collect();
        assert_eq!(registry.dropped_series(), 0);
        let labels = |extra: &[&str]| -> Vec<String> {
            let mut v = vec![ctx.model_name.clone(), "0".to_owned()];
            v.extend(extra.iter().map(|s| (*s).to_owned()));
            v
        };
        let counter = |name: &str, extra: &[&str]| {
            let labels = labels(extra);
            let names: &[&str] = if extra.is_empty() {
                &["model_name", "engine"]
            } else if name.ends_with("success") {
                &["model_name", "engine", "finished_reason"]
            } else {
                &["model_name", "engine", "source"]
            };
            let fam = registry
                .counter(name, &spec_help(&set, name), names)
                .unwrap();
            fam.labels(&labels).unwrap().get()
        };
        let histogram = |name: &str| {
            let spec = set.metrics.iter().find(|m| m.name == name).unwrap();
            let m = set.resolve(spec, &ctx).unwrap();
            let fam = registry
                .histogram(name, &m.help, &["model_name", "engine"], &m.bounds)
                .unwrap();
            let t = fam.labels(labels(&[])).unwrap().get();
            (t.buckets.iter().sum::<u64>(), t.sum)
        };
        let finished: Vec<&engine::Finished> = reports.iter().flat_map(|r| &r.finished).collect();
        assert!(finished.len() > 100, "{}", finished.len());
        let success = counter("vllm:request_success", &["stop"])
            + counter("vllm:request_success", &["length"]);
        assert_eq!(success, finished.len() as f64);
        let generated: u64 = reports.iter().map(|r| r.generated_tokens).sum();
        assert_eq!(counter("vllm:generation_tokens", &[]), generated as f64);
        let prompt: u64 = reports
            .iter()
            .flat_map(|r| &r.admitted)
            .map(|a| a.prompt_tokens)
            .sum();
        assert_eq!(counter("vllm:prompt_tokens", &[]), prompt as f64);
        let by_source = counter("vllm:prompt_tokens_by_source", &["local_compute"])
            + counter("vllm:prompt_tokens_by_source", &["local_cache_hit"])
            + counter("vllm:prompt_tokens_by_source", &["external_kv_transfer"]);
        assert_eq!(by_source, prompt as f64);
        let (n, sum) = histogram("vllm:time_to_first_token_seconds");
        let first: Vec<f64> = reports
            .iter()
            .flat_map(|r| r.first_tokens.iter().copied())
            .collect();
        assert_eq!(n, first.len() as u64);
        assert!((sum - first.iter().sum::<f64>()).abs() < 1e-6);
        let (n, e2e) = histogram("vllm:e2e_request_latency_seconds");
        let (_, queue) = histogram("vllm:request_queue_time_seconds");
        let (_, inference) = histogram("vllm:request_inference_time_seconds");
        assert_eq!(n, finished.len() as u64);
        assert!(
            (queue + inference - e2e).abs() < 1e-6,
            "{queue} + {inference} vs {e2e}"
        );
        let (itl_n, _) = histogram("vllm:inter_token_latency_seconds");
        let itl: usize = reports.iter().map(|r| r.inter_token.len()).sum();
        assert_eq!(itl_n, itl as u64);
        let running = registry
            .gauge(
                "vllm:num_requests_running",
                &spec_help(&set, "vllm:num_requests_running"),
                &["model_name", "engine"],
                GaugeMode::MostRecent,
            )
            .unwrap();
        let last = reports.last().unwrap();
        assert_eq!(
            running.labels(labels(&[])).unwrap().get(),
            last.running as f64
        );
    }

    fn spec_help(set: &MetricSet, name: &str) -> String {
        set.metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap()
            .help
            .clone()
    }

    #[test]
    fn rules_follow_names() {
        assert_eq!(counter_rule("prompt_tokens"), CounterRule::PromptTokens);
        assert_eq!(counter_rule("prefix_cache_hits"), CounterRule::CachedTokens);
        assert_eq!(counter_rule("num_preemptions"), CounterRule::Rare);
        assert_eq!(
            counter_rule("generation_tokens"),
            CounterRule::GeneratedTokens
        );
        assert_eq!(counter_rule("request_success"), CounterRule::Finished);
        assert_eq!(
            gauge_rule("lora_requests_info", Some(GaugeMode::Sum)),
            GaugeRule::UnixTime
        );
        assert_eq!(
            gauge_rule("cache_config_info", Some(GaugeMode::MostRecent)),
            GaugeRule::Info
        );
        assert_eq!(gauge_rule("kv_cache_usage_perc", None), GaugeRule::Ratio);
        assert_eq!(
            observe_rule("inter_token_latency_seconds"),
            ObserveRule::PerRunning
        );
        assert_eq!(
            observe_rule("e2e_request_latency_seconds"),
            ObserveRule::PerFinished
        );
        assert_eq!(
            observe_rule("kv_block_lifetime_seconds"),
            ObserveRule::Occasional
        );
    }
}
