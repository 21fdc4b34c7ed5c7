//! A request-level model of one vLLM engine serving an 8B model, so that the metrics a
//! simulated engine writes agree with each other the way a real engine's do.
//!
//! Requests arrive as a Poisson process, wait in a FIFO queue, are admitted into the
//! running batch at the start of an engine step, prefill their prompt in chunks under the
//! step's token budget (chunked prefill, as vLLM's V1 scheduler does), then decode one token
//! per step until they reach their output length. The simulated clock advances by each
//! step's duration, computed from the work in it; the time between arrivals is idle. Every
//! latency a request reports is a difference of two instants on that clock, so by
//! construction queue + prefill = time to first token, time to first token <= end-to-end
//! latency, the sum of a request's inter-token latencies is its decode time, and the
//! running and waiting counts follow the arrival rate (Little's law).
//!
//! # Assumptions
//!
//! The defaults describe Llama-3.1-8B-Instruct in bf16 on one 80 GB H100-class GPU, as
//! vLLM runs it with its defaults:
//! - **KV cache**: 27,234 blocks of 16 tokens (435,744 tokens: 57 GB at 128 KiB per token,
//!   which is what is left of 90 % of 80 GB after 16 GB of weights); the numbers match the
//!   `cache_config_info` the workload publishes.
//! - **Scheduler**: at most 256 running requests (`max_num_seqs`) and 2,048 tokens per step
//!   (`max_num_batched_tokens`); running requests decode first, then unfinished prefills
//!   continue, then waiting requests are admitted in arrival order while the budget, the
//!   batch and the KV cache allow. When a decode step needs a block the cache does not
//!   have, the most recently admitted request is preempted (its KV freed, recomputed later).
//! - **Step time**: 6.5 ms fixed (reading 16 GB of weights at ~3 TB/s, plus scheduling),
//!   30 us per request in the batch, 45 ns per token of context the decoding requests
//!   attend to (128 KiB of KV each), and 40 us per prefilled token (25,000 tokens/s of
//!   prefill). A lone request decodes at ~7 ms per token; a batch of 100 with 1,000 tokens
//!   of context each at ~14 ms, more when prefill chunks share the step.
//! - **Requests**: prompts log-normal, median 600 tokens (shape 0.9, 8 to 8,000); natural
//!   output length log-normal, median 150 tokens (shape 0.8, at least 1); `max_tokens` of
//!   256, 512, 1,024 or 2,048 (a request reaching it finishes with reason `length`, else
//!   `stop`). Half of the prompts share a prefix (20 to 90 % of their tokens, whole blocks)
//!   with earlier requests: 70 % of those are found in vLLM's GPU prefix cache; the rest
//!   are found in an external KV cache (LMCache) when the engine has one, else computed.
//! - **Queue**: at most 10,000 waiting requests; arrivals beyond are rejected
//!   (`max_num_queued_reqs`).

use std::collections::VecDeque;

use crate::Rng;

/// The parameters of the model; [`EngineConfig::default`] gives the assumptions of the
/// module documentation at 10 requests per second.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// Mean arrivals per second (a Poisson process).
    pub arrival_rate: f64,
    /// Median prompt length, tokens.
    pub prompt_median: f64,
    /// Shape (sigma of the logarithm) of the prompt length.
    pub prompt_sigma: f64,
    /// Longest prompt, tokens.
    pub prompt_max: u64,
    /// Median natural output length, tokens.
    pub output_median: f64,
    /// Shape of the natural output length.
    pub output_sigma: f64,
    /// The `max_tokens` a request asks for, drawn uniformly.
    pub max_tokens_choices: Vec<u64>,
    /// Most requests in the running batch.
    pub max_num_seqs: usize,
    /// Most tokens (prefill and decode) scheduled in one step.
    pub max_num_batched_tokens: u64,
    /// KV-cache blocks.
    pub kv_blocks: u64,
    /// Tokens per KV-cache block.
    pub block_size: u64,
    /// Fixed time of a step, seconds.
    pub step_base: f64,
    /// Time per request in the batch, seconds.
    pub step_per_request: f64,
    /// Time per token of context attended to by decoding requests, seconds.
    pub step_per_context_token: f64,
    /// Time per prefilled token, seconds.
    pub step_per_prefill_token: f64,
    /// Share of prompts with a prefix shared with earlier requests.
    pub shared_prefix_probability: f64,
    /// Share of the shared prefixes found in the GPU prefix cache (the rest in the
    /// external cache, when there is one).
    pub device_hit_probability: f64,
    /// Whether an external KV cache (LMCache) serves the prefixes the GPU no longer holds.
    pub external_cache: bool,
    /// Most waiting requests; arrivals beyond are rejected.
    pub max_waiting: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            arrival_rate: 10.0,
            prompt_median: 600.0,
            prompt_sigma: 0.9,
            prompt_max: 8_000,
            output_median: 150.0,
            output_sigma: 0.8,
            max_tokens_choices: vec![256, 512, 1024, 2048],
            max_num_seqs: 256,
            max_num_batched_tokens: 2048,
            kv_blocks: 27_234,
            block_size: 16,
            step_base: 0.0065,
            step_per_request: 30e-6,
            step_per_context_token: 45e-9,
            step_per_prefill_token: 40e-6,
            shared_prefix_probability: 0.5,
            device_hit_probability: 0.7,
            external_cache: false,
            max_waiting: 10_000,
        }
    }
}

/// A request admitted into the batch for the first time this step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Admitted {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Of those, found in the GPU prefix cache.
    pub device_cached_tokens: u64,
    /// Of those, loaded from the external KV cache.
    pub external_cached_tokens: u64,
    /// Tokens of the prompt that shared a prefix the GPU did not hold (looked up in the
    /// external cache when there is one).
    pub external_queried_tokens: u64,
    /// The request's `max_tokens`.
    pub max_tokens: u64,
}

impl Admitted {
    /// Prompt tokens computed by the GPU (neither cache had them).
    pub fn computed_tokens(&self) -> u64 {
        self.prompt_tokens - self.device_cached_tokens - self.external_cached_tokens
    }
}

/// Why a request finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// It reached its natural end.
    Stop,
    /// It reached its `max_tokens`.
    Length,
}

impl FinishReason {
    /// vLLM's `finished_reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// A request that finished this step, with the intervals vLLM reports for it (seconds).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Finished {
    /// Arrival to first scheduling.
    pub queue: f64,
    /// First scheduling to first token.
    pub prefill: f64,
    /// First token to last token.
    pub decode: f64,
    /// First scheduling to last token.
    pub inference: f64,
    /// Arrival to last token.
    pub e2e: f64,
    /// Arrival to first token.
    pub ttft: f64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Prompt tokens computed (not found in a cache).
    pub computed_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// The request's `max_tokens`.
    pub max_tokens: u64,
    /// Times it was preempted.
    pub preemptions: u64,
    /// Why it finished.
    pub reason: FinishReason,
}

/// What one engine step did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepReport {
    /// Simulated time at the end of the step, seconds since the model started.
    pub now: f64,
    /// Duration of the step, seconds.
    pub duration: f64,
    /// Idle time before the step (nothing to run until the next arrival), seconds.
    pub idle: f64,
    /// Requests in the running batch after the step.
    pub running: u64,
    /// Requests waiting after the step.
    pub waiting: u64,
    /// Of the waiting, those held back by the batch size or the KV cache (the rest wait
    /// for the token budget of a later step).
    pub waiting_for_capacity: u64,
    /// Share of the KV-cache blocks in use after the step, in `[0, 1]`.
    pub kv_usage: f64,
    /// Tokens scheduled in the step (prefill and decode).
    pub scheduled_tokens: u64,
    /// Prompt tokens prefilled (computed) in the step.
    pub prefill_tokens: u64,
    /// Output tokens generated in the step.
    pub generated_tokens: u64,
    /// Requests admitted for the first time.
    pub admitted: Vec<Admitted>,
    /// Time to first token of each request that produced its first token.
    pub first_tokens: Vec<f64>,
    /// Inter-token latency of each token generated after a request's first.
    pub inter_token: Vec<f64>,
    /// Requests that finished.
    pub finished: Vec<Finished>,
    /// Requests preempted.
    pub preemptions: u64,
    /// Arrivals rejected because the queue was full.
    pub rejected: u64,
}

#[derive(Clone, Debug)]
struct Request {
    arrival: f64,
    prompt: u64,
    device_cached: u64,
    external_cached: u64,
    external_queried: u64,
    target_output: u64,
    max_tokens: u64,
    /// Tokens whose KV is in the cache (prompt and output); 0 after a preemption.
    computed: u64,
    generated: u64,
    scheduled: Option<f64>,
    first_token: Option<f64>,
    last_token: f64,
    preemptions: u64,
}

impl Request {
    /// Tokens to prefill before it can decode: the prompt, plus its output so far after a
    /// preemption.
    fn prefill_target(&self) -> u64 {
        self.prompt + self.generated.saturating_sub(1)
    }

    fn in_prefill(&self) -> bool {
        self.computed < self.prefill_target()
    }
}

/// One engine: its queue, its batch and its clock. See the module documentation.
#[derive(Debug)]
pub struct EngineModel {
    config: EngineConfig,
    rng: Rng,
    now: f64,
    next_arrival: f64,
    waiting: VecDeque<Request>,
    running: Vec<Request>,
}

impl EngineModel {
    /// An engine with `config`, its random draws seeded with `seed`.
    pub fn new(config: EngineConfig, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let first = rng.exponential(1.0 / config.arrival_rate.max(1e-9));
        Self {
            config,
            rng,
            now: 0.0,
            next_arrival: first,
            waiting: VecDeque::new(),
            running: Vec::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Simulated seconds since the model started.
    pub fn now(&self) -> f64 {
        self.now
    }

    fn blocks(&self, tokens: u64) -> u64 {
        tokens.div_ceil(self.config.block_size)
    }

    /// Blocks a running request holds: its whole prefill while it prefills (allocated when
    /// admitted), then its computed tokens.
    fn held_blocks(&self, r: &Request) -> u64 {
        if r.in_prefill() {
            self.blocks(r.prefill_target())
        } else {
            self.blocks(r.computed)
        }
    }

    fn blocks_in_use(&self) -> u64 {
        self.running.iter().map(|r| self.held_blocks(r)).sum()
    }

    /// Blocks the decoding requests need for their next token.
    fn blocks_for_next_tokens(&self) -> u64 {
        self.running
            .iter()
            .filter(|r| !r.in_prefill())
            .map(|r| self.blocks(r.computed + 1) - self.blocks(r.computed))
            .sum()
    }

    fn draw_request(&mut self, arrival: f64) -> Request {
        let c = &self.config;
        let prompt = (self.rng.log_normal(c.prompt_median, c.prompt_sigma).round() as u64)
            .clamp(8, c.prompt_max);
        let natural = (self.rng.log_normal(c.output_median, c.output_sigma).round() as u64).max(1);
        let choices = c.max_tokens_choices.len().max(1) as u64;
        let max_tokens = c
            .max_tokens_choices
            .get(self.rng.below(choices) as usize)
            .copied()
            .unwrap_or(u64::MAX);
        let (mut device, mut external, mut queried) = (0, 0, 0);
        if self.rng.chance(c.shared_prefix_probability) {
            let share = 0.2 + 0.7 * self.rng.unit();
            // Whole blocks, and never the whole prompt: the last token is always computed.
            let shared = ((prompt as f64 * share) as u64 / c.block_size * c.block_size)
                .min(prompt.saturating_sub(1) / c.block_size * c.block_size);
            if self.rng.chance(c.device_hit_probability) {
                device = shared;
            } else {
                queried = shared;
                if c.external_cache {
                    external = shared;
                }
            }
        }
        Request {
            arrival,
            prompt,
            device_cached: device,
            external_cached: external,
            external_queried: queried,
            target_output: natural.min(max_tokens),
            max_tokens,
            computed: 0,
            generated: 0,
            scheduled: None,
            first_token: None,
            last_token: arrival,
            preemptions: 0,
        }
    }

    /// Moves the arrivals up to now into the queue (or rejects them when it is full).
    fn arrive(&mut self, report: &mut StepReport) {
        while self.next_arrival <= self.now {
            let at = self.next_arrival;
            if self.waiting.len() < self.config.max_waiting {
                let request = self.draw_request(at);
                self.waiting.push_back(request);
            } else {
                report.rejected += 1;
            }
            self.next_arrival += self.rng.exponential(1.0 / self.config.arrival_rate);
        }
    }

    /// Preempts the most recently admitted running requests until the decoding ones have
    /// room for their next token (vLLM's recompute preemption): each frees its KV cache and
    /// goes back to the front of the queue.
    fn preempt_for_decode(&mut self, report: &mut StepReport) {
        while self.running.len() > 1
            && self.blocks_in_use() + self.blocks_for_next_tokens() > self.config.kv_blocks
        {
            let Some(mut r) = self.running.pop() else {
                break;
            };
            r.computed = 0;
            r.preemptions += 1;
            report.preemptions += 1;
            self.waiting.push_front(r);
        }
    }

    /// Runs one engine step (first idling until the next arrival when there is nothing to
    /// do) and reports what it did.
    pub fn step(&mut self) -> StepReport {
        let mut report = StepReport::default();
        if self.running.is_empty() && self.waiting.is_empty() && self.next_arrival > self.now {
            report.idle = self.next_arrival - self.now;
            self.now = self.next_arrival;
        }
        self.arrive(&mut report);
        let c = self.config.clone();
        let mut budget = c.max_num_batched_tokens;
        let mut context_tokens = 0;

        // Running requests first: each decodes one token, or prefills its next chunk.
        self.preempt_for_decode(&mut report);
        let mut prefill = Vec::with_capacity(self.running.len());
        let mut decoding = Vec::with_capacity(self.running.len());
        for r in &self.running {
            let (chunk, decodes) = if r.in_prefill() {
                ((r.prefill_target() - r.computed).min(budget), false)
            } else if budget > 0 {
                context_tokens += r.computed;
                (1, true)
            } else {
                (0, false)
            };
            budget -= chunk;
            prefill.push(if decodes { 0 } else { chunk });
            decoding.push(decodes);
        }

        // Then waiting requests, in order, while the batch, the budget and the cache allow.
        let mut blocked_by_capacity = false;
        let mut reserved = self.blocks_in_use() + self.blocks_for_next_tokens();
        while budget > 0 && !self.waiting.is_empty() {
            if self.running.len() >= c.max_num_seqs {
                blocked_by_capacity = true;
                break;
            }
            let front = &self.waiting[0];
            let resumed = front.scheduled.is_some();
            let cached = if resumed {
                0
            } else {
                front.device_cached + front.external_cached
            };
            let need = self.blocks(front.prefill_target());
            if reserved + need > c.kv_blocks {
                blocked_by_capacity = true;
                break;
            }
            let chunk = (front.prefill_target() - cached).min(budget);
            let Some(mut r) = self.waiting.pop_front() else {
                break;
            };
            reserved += need;
            r.computed = cached;
            if !resumed {
                r.scheduled = Some(self.now);
                report.admitted.push(Admitted {
                    prompt_tokens: r.prompt,
                    device_cached_tokens: r.device_cached,
                    external_cached_tokens: r.external_cached,
                    external_queried_tokens: r.external_queried,
                    max_tokens: r.max_tokens,
                });
            }
            budget -= chunk;
            self.running.push(r);
            prefill.push(chunk);
            decoding.push(false);
        }

        // The step's duration follows from its work.
        let prefill_tokens: u64 = prefill.iter().sum();
        let decode_count = decoding.iter().filter(|&&d| d).count() as u64;
        let scheduled = prefill_tokens + decode_count;
        let batch = prefill
            .iter()
            .zip(&decoding)
            .filter(|(p, d)| **p > 0 || **d)
            .count();
        report.duration = c.step_base
            + c.step_per_request * batch as f64
            + c.step_per_context_token * context_tokens as f64
            + c.step_per_prefill_token * prefill_tokens as f64;
        self.now += report.duration;
        let now = self.now;
        report.now = now;
        report.scheduled_tokens = scheduled;
        report.prefill_tokens = prefill_tokens;

        // Apply it: tokens computed, tokens generated, requests finished.
        let mut finished = Vec::new();
        for (idx, r) in self.running.iter_mut().enumerate() {
            let emits = if decoding[idx] {
                r.computed += 1;
                true
            } else if prefill[idx] > 0 {
                r.computed += prefill[idx];
                // The step that completes a prefill samples the next token.
                !r.in_prefill()
            } else {
                false
            };
            if !emits {
                continue;
            }
            r.generated += 1;
            report.generated_tokens += 1;
            match r.first_token {
                None => {
                    r.first_token = Some(now);
                    report.first_tokens.push(now - r.arrival);
                }
                Some(_) => report.inter_token.push(now - r.last_token),
            }
            r.last_token = now;
            if r.generated >= r.target_output {
                finished.push(idx);
            }
        }
        for &idx in finished.iter().rev() {
            let r = self.running.remove(idx);
            let scheduled = r.scheduled.unwrap_or(r.arrival);
            let first = r.first_token.unwrap_or(now);
            report.finished.push(Finished {
                queue: scheduled - r.arrival,
                prefill: first - scheduled,
                decode: now - first,
                inference: now - scheduled,
                e2e: now - r.arrival,
                ttft: first - r.arrival,
                prompt_tokens: r.prompt,
                computed_tokens: r.prompt - r.device_cached - r.external_cached,
                output_tokens: r.generated,
                max_tokens: r.max_tokens,
                preemptions: r.preemptions,
                reason: if r.generated >= r.max_tokens {
                    FinishReason::Length
                } else {
                    FinishReason::Stop
                },
            });
        }
        report.finished.reverse();

        report.running = self.running.len() as u64;
        report.waiting = self.waiting.len() as u64;
        report.waiting_for_capacity = if blocked_by_capacity {
            report.waiting
        } else {
            0
        };
        report.kv_usage = (self.blocks_in_use() as f64 / c.kv_blocks as f64).min(1.0);
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `model` for `seconds` of simulated time and gathers its reports.
    fn run(model: &mut EngineModel, seconds: f64) -> Vec<StepReport> {
        let mut out = Vec::new();
        while model.now() < seconds {
            out.push(model.step());
        }
        out
    }

    fn mean(v: impl Iterator<Item = f64>) -> f64 {
        let (n, s) = v.fold((0u64, 0.0), |(n, s), x| (n + 1, s + x));
        s / n as f64
    }

    #[test]
    fn a_request_latencies_add_up() {
        let mut model = EngineModel::new(EngineConfig::default(), 1);
        let reports = run(&mut model, 300.0);
        let finished: Vec<Finished> = reports.iter().flat_map(|r| r.finished.clone()).collect();
        assert!(finished.len() > 2000, "{}", finished.len());
        for f in &finished {
            assert!(
                f.queue >= 0.0 && f.prefill > 0.0 && f.decode >= 0.0,
                "{f:?}"
            );
            assert!((f.queue + f.prefill - f.ttft).abs() < 1e-9, "{f:?}");
            assert!((f.prefill + f.decode - f.inference).abs() < 1e-9, "{f:?}");
            assert!((f.queue + f.inference - f.e2e).abs() < 1e-9, "{f:?}");
            assert!(f.prefill <= f.ttft && f.ttft <= f.e2e, "{f:?}");
            assert!(
                f.output_tokens >= 1 && f.output_tokens <= f.max_tokens,
                "{f:?}"
            );
            assert_eq!(
                f.reason == FinishReason::Length,
                f.output_tokens == f.max_tokens
            );
        }
        // The inter-token latencies of all requests sum to their decode times.
        let itl: f64 = reports.iter().flat_map(|r| r.inter_token.iter()).sum();
        let decode: f64 = finished.iter().map(|f| f.decode).sum();
        let running_at_end: f64 = 0.5 * 300.0; // Upper bound of the decode time still open.
        assert!(
            itl >= decode && itl <= decode + running_at_end,
            "{itl} vs {decode}"
        );
        // Tokens balance: every generated token belongs to a request.
        let generated: u64 = reports.iter().map(|r| r.generated_tokens).sum();
        let emitted: u64 = finished.iter().map(|f| f.output_tokens).sum();
        assert!(generated >= emitted);
    }

    #[test]
    fn an_8b_model_at_ten_requests_per_second() {
        let mut model = EngineModel::new(EngineConfig::default(), 2);
        let reports = run(&mut model, 600.0);
        let finished: Vec<Finished> = reports.iter().flat_map(|r| r.finished.clone()).collect();
        let rate = finished.len() as f64 / 600.0;
        assert!((9.0..11.0).contains(&rate), "{rate} requests/s");
        let ttft = mean(finished.iter().map(|f| f.ttft));
        let e2e = mean(finished.iter().map(|f| f.e2e));
        let itl = mean(reports.iter().flat_map(|r| r.inter_token.iter().copied()));
        let output = mean(finished.iter().map(|f| f.output_tokens as f64));
        let prompt = mean(finished.iter().map(|f| f.prompt_tokens as f64));
        assert!((0.02..0.5).contains(&ttft), "TTFT {ttft}");
        assert!((0.008..0.05).contains(&itl), "ITL {itl}");
        assert!((150.0..300.0).contains(&output), "output {output}");
        assert!((600.0..1200.0).contains(&prompt), "prompt {prompt}");
        assert!((1.0..10.0).contains(&e2e), "e2e {e2e}");
        // Little's law: requests in the system = arrival rate x time in the system.
        let steps = reports.iter().map(|r| r.duration + r.idle);
        let busy: f64 = reports
            .iter()
            .map(|r| (r.running + r.waiting) as f64 * (r.duration + r.idle))
            .sum::<f64>()
            / steps.sum::<f64>();
        assert!(
            (busy / (rate * e2e) - 1.0).abs() < 0.15,
            "{busy} vs {}",
            rate * e2e
        );
        let kv = mean(reports.iter().map(|r| r.kv_usage));
        assert!(kv > 0.0 && kv < 0.5, "KV usage {kv}");
        assert_eq!(reports.iter().map(|r| r.preemptions).sum::<u64>(), 0);
    }

    #[test]
    fn overload_queues_preempts_and_rejects() {
        let config = EngineConfig {
            arrival_rate: 200.0,
            kv_blocks: 4_000,
            max_waiting: 500,
            ..EngineConfig::default()
        };
        let mut model = EngineModel::new(config, 3);
        let reports = run(&mut model, 60.0);
        let last = reports.last().unwrap();
        assert!(last.waiting >= 400, "{last:?}");
        assert!(reports.iter().map(|r| r.rejected).sum::<u64>() > 0);
        assert!(reports.iter().map(|r| r.preemptions).sum::<u64>() > 0);
        assert!(reports.iter().all(|r| r.kv_usage <= 1.0));
        assert!(reports.iter().all(|r| r.scheduled_tokens <= 2048));
        let queue = mean(
            reports
                .iter()
                .flat_map(|r| r.finished.iter().map(|f| f.queue)),
        );
        assert!(queue > 1.0, "queue {queue}");
        let preempted: Vec<&Finished> = reports
            .iter()
            .flat_map(|r| r.finished.iter())
            .filter(|f| f.preemptions > 0)
            .collect();
        assert!(!preempted.is_empty());
        assert!(preempted.iter().all(|f| f.ttft <= f.e2e));
    }

    #[test]
    fn an_external_cache_serves_what_the_gpu_lost() {
        let with = EngineConfig {
            external_cache: true,
            ..EngineConfig::default()
        };
        let mut a = EngineModel::new(with, 4);
        let mut b = EngineModel::new(EngineConfig::default(), 4);
        let admitted = |m: &mut EngineModel| -> Vec<Admitted> {
            run(m, 120.0).into_iter().flat_map(|r| r.admitted).collect()
        };
        let (a, b) = (admitted(&mut a), admitted(&mut b));
        assert_eq!(a.len(), b.len());
        let external: u64 = a.iter().map(|r| r.external_cached_tokens).sum();
        let queried: u64 = a.iter().map(|r| r.external_queried_tokens).sum();
        assert!(external > 0 && external == queried);
        assert_eq!(b.iter().map(|r| r.external_cached_tokens).sum::<u64>(), 0);
        let computed = |v: &[Admitted]| v.iter().map(Admitted::computed_tokens).sum::<u64>();
        assert_eq!(computed(&b), computed(&a) + external);
    }
}
