"""vLLM's complete metric set (crates/shmetrics-workload/workloads/vllm_metrics.json: every metric
vLLM's PrometheusStatLogger and friends create, with their real names, help texts, labels,
buckets and gauge modes) written with unchanged prometheus_client code by two engine
processes: the drop-in and plain multiprocess mode give the same samples."""

from __future__ import annotations

import json
import os
import random

from prometheus_client.multiprocess import MultiProcessCollector

from conftest import Worker, collect
from conftest import WORKLOAD_CODE
from test_equivalence import normalized

WORKLOAD = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shmetrics-workload", "workloads", "vllm_metrics.json"
)
# vLLM's cache_config_info has one label per CacheConfig field; three of them stand in.
CACHE_CONFIG_FIELDS = ["block_size", "cache_dtype", "enable_prefix_caching"]


def vllm_metrics():
    """(spec, label value choices) per metric, specs in test_equivalence's format."""
    with open(WORKLOAD, encoding="utf-8") as f:
        metrics = json.load(f)["metrics"]
    out = []
    for m in metrics:
        labels = []
        for label in m["labels"]:
            labels += CACHE_CONFIG_FIELDS if label.startswith("<") else [label]
        extra = {}
        if m["type"] == "gauge":
            extra["multiprocess_mode"] = m.get("multiprocess_mode", "all")
        buckets = m.get("buckets")
        if isinstance(buckets, dict):
            buckets = buckets["example_max_model_len_32768"]
        if buckets:
            extra["buckets"] = buckets
        choices = {}
        for label in labels:
            values = m.get("label_values", {}).get(label)
            if isinstance(values, list):
                choices[label] = values
            elif label == "position":
                choices[label] = ["0", "1", "2"]
            elif label == "model_name":
                choices[label] = ["Qwen/Qwen3-0.6B"]
            else:
                choices[label] = ["a", "b"]
        out.append(((m["type"], m["name"], m["help"], labels, extra), choices))
    return out


def engine_ops(metrics, engine, rng):
    ops = []
    for index, ((kind, _, _, labels, extra), choices) in enumerate(metrics):
        for _ in range(3):
            values = [str(engine) if label == "engine" else rng.choice(choices[label]) for label in labels]
            if kind == "counter":
                ops.append((index, values, "inc", rng.randint(0, 64) / 4))
            elif kind == "gauge":
                mode = extra["multiprocess_mode"]
                op = "set" if mode.endswith("mostrecent") else rng.choice(["set", "inc"])
                ops.append((index, values, op, rng.randint(0, 64) / 4))
            else:
                top = max(b for b in extra.get("buckets", [10]) if b != float("inf"))
                ops.append((index, values, "observe", rng.randint(0, int(top * 8)) / 4))
    return ops


def test_vllm_metric_set_through_the_drop_in_matches_multiprocess_mode(tmp_path):
    metrics = vllm_metrics()
    assert len(metrics) == 69
    specs = [spec for spec, _ in metrics]
    rng = random.Random(7)
    ops = [engine_ops(metrics, engine, rng) for engine in range(2)]
    dirs = {mode: tmp_path / mode for mode in ("plain", "dropin")}
    groups = {}
    try:
        for mode, directory in dirs.items():
            directory.mkdir()
            groups[mode] = [Worker(str(directory), mode) for _ in range(2)]
            for engine, w in enumerate(groups[mode]):
                w.run(WORKLOAD_CODE, specs=specs)
                w.run("apply(ops)", ops=ops[engine])
        expected = normalized(
            MultiProcessCollector(None, path=str(dirs["plain"])).collect(), [w.pid for w in groups["plain"]]
        )
        actual = normalized(collect(str(dirs["dropin"])).values(), [w.pid for w in groups["dropin"]])
        assert len(expected) == 69
        assert actual == expected
        assert all(f.endswith(".shm") for f in os.listdir(dirs["dropin"]))
    finally:
        for group in groups.values():
            for w in group:
                w.kill()
