//! LMCache's `lmcache:` metrics as a vLLM engine process with LMCache enabled writes them,
//! fed by the same [`EngineModel`](crate::engine::EngineModel) as its `vllm:` metrics.
//!
//! LMCache 0.5.6 registers 94 families (`workloads/lmcache_metrics.json`) and publishes
//! them from a stats thread every [`LMCACHE_TICK_SECS`] seconds, the first time at start-up:
//! counters grow by what happened since the previous tick, the nine gauges it sets are
//! re-published, and histograms get one observation per request finished in the interval.
//! Gauges LMCache reads through a callback never reach a multiprocess directory: their
//! `livemostrecent` series stay unset (the family shows its `# HELP` and `# TYPE` only) and
//! their `sum` series stay 0, as in a real scrape. Histograms get a series at their first
//! observation; those only a remote, P2P or MLA setup observes never get one.
//!
//! # Assumptions
//!
//! Beside those of [`crate::engine`]: LMCache in-process with its default local CPU
//! backend (5 GB, LRU) and no remote, P2P or disk backend; chunks of 256 tokens at 128 KiB of
//! KV per token (Llama-3.1-8B); whole chunks of each computed prompt are stored; loads
//! from CPU at 25 GB/s and stores at 20 GB/s plus 0.5 ms and 0.3 ms per request; a lookup
//! takes 50 us plus 2 us per chunk; a reused chunk was stored 3 s to 10 min earlier. The
//! labels are LMCache's: `model_name` and `served_model_name` the model, `role` `worker`
//! (and `scheduler` for the views the scheduler side creates), `worker_id` `0`, the rank of
//! the engine's single GPU worker; every data-parallel engine's worker is rank 0, so their
//! series share a label set, are summed (counters, `sum` gauges, histograms) or show the
//! newest value (`livemostrecent` gauges) across processes.

use shmetrics_writer::{Counter, Gauge, GaugeMode, Histogram, HistogramFamily, Registry};

use crate::engine::StepReport;
use crate::{MetricSet, ProcessContext, Rng, SpecKind, WorkloadError, register_err};

/// Seconds between two publications of LMCache's stats thread (hard-coded in LMCache).
pub const LMCACHE_TICK_SECS: f64 = 10.0;

/// Tokens per LMCache chunk.
const CHUNK_TOKENS: u64 = 256;
/// KV bytes per token of the modeled 8B model.
const BYTES_PER_TOKEN: f64 = 131_072.0;
/// The local CPU backend's capacity, bytes.
const LOCAL_CAPACITY: f64 = 5e9;

/// What happened since the previous tick.
#[derive(Clone, Debug, Default)]
struct Interval {
    lookups: u64,
    lookup_tokens: u64,
    /// Hit tokens of each lookup, with its prompt length.
    lookup_hits: Vec<(u64, u64)>,
    vllm_hit_tokens: u64,
    prompt_tokens: u64,
    /// Tokens stored by each store request.
    stores: Vec<u64>,
}

/// A counter and the quantity it counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Count {
    RetrieveRequests,
    StoreRequests,
    LookupRequests,
    RequestedTokens,
    HitTokens,
    StoredTokens,
    LookupTokens,
    LookupHits,
    VllmHitTokens,
    PromptTokens,
    Evictions,
    EvictedKeys,
    ZeroHitLookups,
    /// Remote, P2P or failure counts: 0 in this setup.
    None,
}

/// A gauge the stats thread sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    RetrieveHitRate,
    LookupHitRate,
    LocalCacheUsage,
    ActiveMemoryObjects,
    /// Remote and disk usage, ping latency and error code: 0 in this setup.
    Zero,
}

/// A histogram's observations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Observe {
    TimeToRetrieve,
    RetrieveToGpu,
    RetrieveProcessTokens,
    RetrieveSpeed,
    TimeToStore,
    StoreFromGpu,
    StorePut,
    StoreProcessTokens,
    StoreSpeed,
    TimeToLookup,
    RequestHitRate,
    ChunkLifespan,
    /// Observed only by a remote, P2P or MLA setup.
    Never,
}

fn count(short: &str) -> Count {
    match short {
        "num_retrieve_requests" => Count::RetrieveRequests,
        "num_store_requests" => Count::StoreRequests,
        "num_lookup_requests" => Count::LookupRequests,
        "num_requested_tokens" => Count::RequestedTokens,
        "num_hit_tokens" => Count::HitTokens,
        "num_stored_tokens" => Count::StoredTokens,
        "num_lookup_tokens" => Count::LookupTokens,
        "num_lookup_hits" => Count::LookupHits,
        "num_vllm_hit_tokens" => Count::VllmHitTokens,
        "num_prompt_tokens" => Count::PromptTokens,
        "local_cpu_evict_count" => Count::Evictions,
        "local_cpu_evict_keys_count" => Count::EvictedKeys,
        "lookup_0_hit_requests" => Count::ZeroHitLookups,
        _ => Count::None,
    }
}

fn level(short: &str) -> Level {
    match short {
        "retrieve_hit_rate" => Level::RetrieveHitRate,
        "lookup_hit_rate" => Level::LookupHitRate,
        "local_cache_usage" => Level::LocalCacheUsage,
        "active_memory_objs_count" => Level::ActiveMemoryObjects,
        _ => Level::Zero,
    }
}

fn observe(short: &str) -> Observe {
    match short {
        "time_to_retrieve" => Observe::TimeToRetrieve,
        "retrieve_to_gpu_time" => Observe::RetrieveToGpu,
        "retrieve_process_tokens_time" => Observe::RetrieveProcessTokens,
        "retrieve_speed" => Observe::RetrieveSpeed,
        "time_to_store" => Observe::TimeToStore,
        "store_from_gpu_time" => Observe::StoreFromGpu,
        "store_put_time" => Observe::StorePut,
        "store_process_tokens_time" => Observe::StoreProcessTokens,
        "store_speed" => Observe::StoreSpeed,
        "time_to_lookup" => Observe::TimeToLookup,
        "request_cache_hit_rate" => Observe::RequestHitRate,
        "request_cache_lifespan" => Observe::ChunkLifespan,
        _ => Observe::Never,
    }
}

fn retrieve_seconds(tokens: u64) -> f64 {
    0.0005 + tokens as f64 * BYTES_PER_TOKEN / 25e9
}

fn store_seconds(tokens: u64) -> f64 {
    0.0003 + tokens as f64 * BYTES_PER_TOKEN / 20e9
}

/// A histogram family and its worker series, created at its first observation.
#[derive(Debug)]
struct LazyHistogram {
    what: Observe,
    family: HistogramFamily,
    labels: Vec<String>,
    child: Option<Histogram>,
}

/// The `lmcache:` metrics of one engine process. Feed it every engine step with
/// [`LmcacheWorkload::record`]; it publishes every [`LMCACHE_TICK_SECS`] of the model's
/// clock, as LMCache's stats thread does.
#[derive(Debug)]
pub struct LmcacheWorkload {
    counters: Vec<(Count, Counter)>,
    levels: Vec<(Level, Gauge)>,
    histograms: Vec<LazyHistogram>,
    /// Children of the callback gauges: kept so their series exist, never set.
    _callback_gauges: Vec<Gauge>,
    interval: Interval,
    /// Bytes in the local CPU cache.
    cached_bytes: f64,
    next_tick: f64,
    rng: Rng,
    series: usize,
}

impl LmcacheWorkload {
    /// Registers every family of `set` (LMCache's) for process `ctx` on `registry` and
    /// publishes the first tick, as LMCache does when its engine starts.
    ///
    /// # Errors
    /// An invalid metric description or a family the registry refuses.
    pub fn register(
        registry: &Registry,
        set: &MetricSet,
        ctx: &ProcessContext,
        seed: u64,
    ) -> Result<Self, WorkloadError> {
        let view = |names: &[String], role: &str| -> Vec<String> {
            names
                .iter()
                .map(|n| match n.as_str() {
                    "model_name" | "served_model_name" => ctx.model_name.clone(),
                    "role" => role.to_owned(),
                    "worker_id" => "0".to_owned(),
                    _ => String::new(),
                })
                .collect()
        };
        let mut w = Self {
            counters: Vec::new(),
            levels: Vec::new(),
            histograms: Vec::new(),
            _callback_gauges: Vec::new(),
            interval: Interval::default(),
            cached_bytes: 0.0,
            next_tick: 0.0,
            rng: Rng::new(seed),
            series: 0,
        };
        for spec in &set.metrics {
            let name = spec.name.as_str();
            let err = register_err(name);
            let names = spec.labels.clone().unwrap_or_default();
            let label_refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let worker = view(&names, "worker");
            let short = name.rsplit(':').next().unwrap_or(name);
            let callback = spec.update.as_deref() == Some("set_function_callback");
            match spec.kind {
                SpecKind::Counter => {
                    let family = registry
                        .counter(spec.base_name(), &spec.help, &label_refs)
                        .map_err(err)?;
                    let child = family.labels(&worker).map_err(register_err(name))?.clone();
                    w.counters.push((count(short), child));
                    w.series += 1;
                }
                SpecKind::Gauge => {
                    let mode = spec.gauge_mode()?;
                    let family = registry
                        .gauge(name, &spec.help, &label_refs, mode)
                        .map_err(err)?;
                    if callback {
                        // Both label views get a child at construction; sum-mode ones show
                        // 0, the others no sample.
                        for role in ["worker", "scheduler"] {
                            let child = family
                                .labels(view(&names, role))
                                .map_err(register_err(name))?
                                .clone();
                            w._callback_gauges.push(child);
                            w.series += usize::from(mode == GaugeMode::Sum);
                        }
                    } else {
                        let child = family.labels(&worker).map_err(register_err(name))?.clone();
                        w.levels.push((level(short), child));
                        w.series += 1;
                    }
                }
                SpecKind::Histogram => {
                    let bounds = spec
                        .buckets
                        .as_ref()
                        .and_then(crate::BucketSpec::bounds)
                        .unwrap_or_else(|| shmetrics_writer::DEFAULT_BUCKETS.to_vec());
                    let family = registry
                        .histogram(name, &spec.help, &label_refs, &bounds)
                        .map_err(err)?;
                    w.histograms.push(LazyHistogram {
                        what: observe(short),
                        family,
                        labels: worker,
                        child: None,
                    });
                }
                SpecKind::Summary => {}
            }
        }
        w.publish();
        w.next_tick = LMCACHE_TICK_SECS;
        Ok(w)
    }

    /// Series with a sample after the first tick (counters, set gauges and sum-mode
    /// callback gauges; histograms appear later).
    pub fn series(&self) -> usize {
        self.series
    }

    /// Takes in engine step `report`; publishes when the model's clock passed the next
    /// tick. Returns whether it published.
    pub fn record(&mut self, report: &StepReport) -> bool {
        let i = &mut self.interval;
        for a in &report.admitted {
            i.lookups += 1;
            i.lookup_tokens += a.prompt_tokens;
            i.lookup_hits
                .push((a.external_cached_tokens, a.prompt_tokens));
            i.vllm_hit_tokens += a.device_cached_tokens;
            i.prompt_tokens += a.prompt_tokens;
            let stored = a.computed_tokens() / CHUNK_TOKENS * CHUNK_TOKENS;
            if stored > 0 {
                i.stores.push(stored);
            }
        }
        if report.now < self.next_tick {
            return false;
        }
        self.publish();
        while self.next_tick <= report.now {
            self.next_tick += LMCACHE_TICK_SECS;
        }
        true
    }

    /// One tick of LMCache's stats thread: counters by the interval's deltas (even 0),
    /// the set gauges, one observation per request of the interval.
    fn publish(&mut self) {
        let i = std::mem::take(&mut self.interval);
        let retrieves: Vec<u64> = i
            .lookup_hits
            .iter()
            .map(|&(h, _)| h)
            .filter(|&h| h > 0)
            .collect();
        let hit_tokens: u64 = retrieves.iter().sum();
        let requested: u64 = i
            .lookup_hits
            .iter()
            .filter(|&&(h, _)| h > 0)
            .map(|&(_, p)| p)
            .sum();
        let stored: u64 = i.stores.iter().sum();
        let capacity_chunks = (LOCAL_CAPACITY / (CHUNK_TOKENS as f64 * BYTES_PER_TOKEN)).floor();
        let chunk_bytes = CHUNK_TOKENS as f64 * BYTES_PER_TOKEN;
        let wanted = self.cached_bytes + stored as f64 * BYTES_PER_TOKEN;
        let evicted_chunks = ((wanted - capacity_chunks * chunk_bytes) / chunk_bytes)
            .ceil()
            .max(0.0);
        self.cached_bytes = wanted - evicted_chunks * chunk_bytes;

        for (what, c) in &self.counters {
            let delta = match what {
                Count::RetrieveRequests => retrieves.len() as u64,
                Count::StoreRequests => i.stores.len() as u64,
                Count::LookupRequests => i.lookups,
                Count::RequestedTokens => requested,
                Count::HitTokens | Count::LookupHits => hit_tokens,
                Count::StoredTokens => stored,
                Count::LookupTokens => i.lookup_tokens,
                Count::VllmHitTokens => i.vllm_hit_tokens,
                Count::PromptTokens => i.prompt_tokens,
                Count::Evictions => u64::from(evicted_chunks > 0.0),
                Count::EvictedKeys => evicted_chunks as u64,
                Count::ZeroHitLookups => {
                    i.lookup_hits.iter().filter(|&&(h, _)| h == 0).count() as u64
                }
                Count::None => 0,
            };
            // LMCache increments every counter each tick, by 0 when nothing happened.
            c.inc_by(delta as f64);
        }
        let rate = |hit: u64, of: u64| if of == 0 { 1.0 } else { hit as f64 / of as f64 };
        for (what, g) in &self.levels {
            g.set(match what {
                Level::RetrieveHitRate => rate(hit_tokens, requested),
                Level::LookupHitRate => rate(hit_tokens, i.lookup_tokens),
                Level::LocalCacheUsage => self.cached_bytes,
                Level::ActiveMemoryObjects => (self.cached_bytes / chunk_bytes).round(),
                Level::Zero => 0.0,
            });
        }
        for h in &mut self.histograms {
            let mut values: Vec<f64> = Vec::new();
            let rng = &mut self.rng;
            match h.what {
                Observe::TimeToRetrieve => {
                    values.extend(retrieves.iter().map(|&t| retrieve_seconds(t)))
                }
                Observe::RetrieveToGpu => {
                    values.extend(retrieves.iter().map(|&t| 0.8 * retrieve_seconds(t)))
                }
                Observe::RetrieveProcessTokens => {
                    values.extend(retrieves.iter().map(|&t| 0.1 * retrieve_seconds(t)))
                }
                Observe::RetrieveSpeed => {
                    values.extend(retrieves.iter().map(|&t| t as f64 / retrieve_seconds(t)))
                }
                Observe::TimeToStore => values.extend(i.stores.iter().map(|&t| store_seconds(t))),
                Observe::StoreFromGpu => {
                    values.extend(i.stores.iter().map(|&t| 0.7 * store_seconds(t)))
                }
                Observe::StorePut => {
                    values.extend(i.stores.iter().map(|&t| 0.1 * store_seconds(t)))
                }
                Observe::StoreProcessTokens => {
                    values.extend(i.stores.iter().map(|&t| 0.15 * store_seconds(t)))
                }
                Observe::StoreSpeed => {
                    values.extend(i.stores.iter().map(|&t| t as f64 / store_seconds(t)))
                }
                Observe::TimeToLookup => values.extend(
                    i.lookup_hits
                        .iter()
                        .map(|&(_, p)| 50e-6 + 2e-6 * p.div_ceil(CHUNK_TOKENS) as f64),
                ),
                Observe::RequestHitRate => values.extend(
                    i.lookup_hits
                        .iter()
                        .filter(|&&(h, _)| h > 0)
                        .map(|&(h, p)| h as f64 / p as f64),
                ),
                // Minutes since each reused chunk was stored.
                Observe::ChunkLifespan => values.extend(
                    retrieves
                        .iter()
                        .flat_map(|&t| 0..t / CHUNK_TOKENS)
                        .map(|_| rng.log_uniform(0.05, 10.0)),
                ),
                Observe::Never => {}
            }
            if values.is_empty() {
                continue;
            }
            if h.child.is_none() {
                match h.family.labels(&h.labels) {
                    Ok(child) => h.child = Some(child.clone()),
                    Err(e) => {
                        log::warn!("lmcache workload: {e}");
                        continue;
                    }
                }
            }
            if let Some(child) = &h.child {
                values.into_iter().for_each(|v| child.observe(v));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EngineConfig, EngineModel};
    use shmetrics_reader::{Format, PrefixFilter, Reader};

    fn scrape(dir: &std::path::Path) -> String {
        let mut out = Vec::new();
        Reader::open(dir)
            .unwrap()
            .scrape(
                Format::Prometheus,
                &PrefixFilter::new(["lmcache:"]),
                false,
                &mut out,
            )
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    fn sample(text: &str, name: &str) -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }

    #[test]
    fn lmcache_publishes_every_ten_seconds_what_the_engine_did() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let set = MetricSet::parse(crate::LMCACHE_METRICS_JSON).unwrap();
        assert_eq!(set.metrics.len(), 94);
        let ctx = ProcessContext {
            index: 0,
            model_name: "meta-llama/Llama-3.1-8B-Instruct".to_owned(),
        };
        let mut w = LmcacheWorkload::register(&registry, &set, &ctx, 1).unwrap();

        // At start-up, as LMCache's first tick: 23 counters at 0, 9 set gauges (the hit
        // rates at 1), the 3 sum-mode callback gauges at 0 for both roles; the 39
        // livemostrecent callback gauges have no sample, and a family without samples is
        // not rendered.
        let text = scrape(dir.path());
        assert_eq!(text.matches("# TYPE lmcache:").count(), 23 + 9 + 3);
        assert_eq!(w.series(), 23 + 9 + 6);
        let samples = text.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(samples, 23 + 9 + 6, "{text}");
        assert_eq!(sample(&text, "lmcache:retrieve_hit_rate"), 1.0);
        // Label names sorted, as a multiprocess scrape prints them.
        assert!(text.contains(
            "lmcache:storage_events_done_count{model_name=\"meta-llama/Llama-3.1-8B-Instruct\",\
             role=\"scheduler\",served_model_name=\"meta-llama/Llama-3.1-8B-Instruct\",worker_id=\"0\"} 0.0"
        ));
        assert!(!text.contains("lmcache:periodic_threads_critical_total"));

        // Two minutes of an engine with LMCache: the counters hold the sums over the
        // requests admitted up to the last tick.
        let config = EngineConfig {
            external_cache: true,
            ..EngineConfig::default()
        };
        let mut engine = EngineModel::new(config, 5);
        let (mut prompt, mut external, mut lookups, mut ticks) = (0u64, 0u64, 0u64, 0);
        let (mut prompt_at_tick, mut external_at_tick, mut lookups_at_tick) = (0, 0, 0);
        while engine.now() < 120.0 {
            let report = engine.step();
            for a in &report.admitted {
                prompt += a.prompt_tokens;
                external += a.external_cached_tokens;
                lookups += 1;
            }
            if w.record(&report) {
                ticks += 1;
                (prompt_at_tick, external_at_tick, lookups_at_tick) = (prompt, external, lookups);
            }
        }
        assert_eq!(ticks, 12);
        let text = scrape(dir.path());
        assert_eq!(
            sample(&text, "lmcache:num_prompt_tokens_total"),
            prompt_at_tick as f64
        );
        assert_eq!(
            sample(&text, "lmcache:num_lookup_tokens_total"),
            prompt_at_tick as f64
        );
        assert_eq!(
            sample(&text, "lmcache:num_hit_tokens_total"),
            external_at_tick as f64
        );
        assert_eq!(
            sample(&text, "lmcache:num_lookup_requests_total"),
            lookups_at_tick as f64
        );
        assert!(external_at_tick > 0);
        let usage = sample(&text, "lmcache:local_cache_usage");
        assert!(usage > 0.0 && usage <= LOCAL_CAPACITY, "{usage}");
        // Two minutes at 10 requests/s store more than 5 GB: the LRU evicted.
        assert!(sample(&text, "lmcache:local_cpu_evict_keys_count_total") > 0.0);
        let hit_rate = sample(&text, "lmcache:retrieve_hit_rate");
        assert!(hit_rate > 0.0 && hit_rate < 1.0, "{hit_rate}");
        // The 12 histograms this setup observes have series; the 8 of remote, P2P and MLA
        // setups do not.
        assert_eq!(text.matches("# TYPE lmcache:").count(), 23 + 9 + 3 + 12);
        for never in [
            "p2p_time_to_transfer",
            "remote_time_to_get",
            "retrieve_broadcast_time",
        ] {
            assert!(!text.contains(&format!("lmcache:{never}")), "{never}");
        }
        let time = sample(&text, "lmcache:time_to_retrieve_count");
        assert_eq!(time, sample(&text, "lmcache:num_retrieve_requests_total"));
    }
}
