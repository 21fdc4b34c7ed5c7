"""Equivalence: a random workload run once through prometheus_client's own multiprocess mode
and once through the drop-in yields the same parsed samples from MultiProcessCollector and
from ShmetricsCollector: while every process is live, and again after some died (for
prometheus_client with the mark_process_dead call a correct deployment makes; shmetrics
needs none).

Values are quarters, which sum exactly in any order, so the samples must be identical. With
arbitrary floats the two may differ in the last bits: prometheus_client adds per-process
values in file listing order, shmetrics rounds their exact sum once (docs/semantics.md); the
float workload checks that and nothing more."""

from __future__ import annotations

import math
import os
import random

import pytest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from conftest import GAUGE_MODES, WORKLOAD_CODE, Worker, collect


def quarter(rng, high=40):
    """A value that sums exactly in binary floating point, whatever the order."""
    return rng.randint(0, high) / 4


def workload(seed, value=quarter):
    rng = random.Random(seed)
    specs = []
    for i in range(10):
        kind = rng.choice(["counter", "gauge", "gauge", "histogram", "summary"])
        labelnames = ["a", "b", "c"][: rng.randint(0, 2)]
        extra = {}
        if kind == "gauge":
            extra["multiprocess_mode"] = rng.choice(GAUGE_MODES)
        if kind == "histogram" and rng.random() < 0.7:
            extra["buckets"] = sorted(rng.sample([0.25, 0.5, 1, 2.5, 5, 7.5, 1e6], rng.randint(1, 4)))
        name = f"m{i}_{kind}" + ("_total" if kind == "counter" and rng.random() < 0.5 else "")
        specs.append((kind, name, f"help of {name}", labelnames, extra))
    processes = 3
    rounds = []
    for _ in range(4):
        batch = []
        for p in range(processes):
            ops = []
            for _ in range(rng.randint(5, 25)):
                index = rng.randrange(len(specs))
                kind, _, _, labelnames, extra = specs[index]
                labelvalues = [rng.choice(["x", "y", "with space", 'q"uote']) for _ in labelnames]
                mode = extra.get("multiprocess_mode", "")
                if kind == "counter":
                    op = rng.choice(["inc", "touch"])
                elif kind == "gauge":
                    op = "set" if mode.endswith("mostrecent") else rng.choice(["set", "inc", "dec", "touch"])
                else:
                    op = rng.choice(["observe", "observe", "touch"])
                ops.append((index, labelvalues, op, value(rng)))
            batch.append((p, ops))
        rounds.append(batch)
    dies = rng.sample(range(processes), rng.randint(1, 2))
    return specs, processes, rounds, dies


def normalized(metrics, pids):
    """Families as comparable data: pid labels replaced by the worker index, samples sorted,
    families without samples left out (MultiProcessCollector keeps those as bare HELP/TYPE
    lines; shmetrics omits them)."""
    index_of = {str(pid): str(i) for i, pid in enumerate(pids)}
    out = {}
    for m in metrics:
        samples = []
        for s in m.samples:
            labels = dict(s.labels)
            if "pid" in labels:
                labels["pid"] = index_of[labels["pid"]]
            samples.append((s.name, tuple(sorted(labels.items())), float(s.value), s.timestamp, s.exemplar))
        if samples:
            out[m.name] = (m.type, m.documentation, sorted(samples))
    return out


def run(mode, directory, specs, processes, rounds):
    workers = [Worker(directory, mode) for _ in range(processes)]
    for w in workers:
        w.run(WORKLOAD_CODE, specs=specs)
    for batch in rounds:
        for p, ops in batch:
            workers[p].run("apply(ops)", ops=ops)
    return workers


def same_up_to_rounding(actual, expected):
    """Equal samples, float values within a few ulps of prometheus_client's order-dependent
    sums (a handful of additions each)."""
    assert actual.keys() == expected.keys()
    for name, (typ, doc, samples) in expected.items():
        got_typ, got_doc, got = actual[name]
        assert (got_typ, got_doc, len(got)) == (typ, doc, len(samples)), name
        for a, e in zip(got, samples):
            assert a[:2] == e[:2] and a[3:] == e[3:], (name, a, e)
            assert math.isclose(a[2], e[2], rel_tol=64 * 2.0**-52, abs_tol=1e-9), (name, a, e)


@pytest.mark.parametrize("seed", range(1, 9))
def test_random_workload_same_samples(tmp_path, seed):
    check_workload(tmp_path, workload(seed), lambda actual, expected: actual == expected)


@pytest.mark.parametrize("seed", range(9, 12))
def test_random_float_workload_same_up_to_rounding(tmp_path, seed):
    floats = workload(seed, value=lambda rng: rng.uniform(0, 10))
    check_workload(tmp_path, floats, lambda a, e: same_up_to_rounding(a, e) is None)


def check_workload(tmp_path, work, same):
    specs, processes, rounds, dies = work
    plain_dir, shm_dir = tmp_path / "plain", tmp_path / "shmetrics"
    plain_dir.mkdir()
    shm_dir.mkdir()
    plain = run("plain", str(plain_dir), specs, processes, rounds)
    dropin = run("dropin", str(shm_dir), specs, processes, rounds)
    try:
        assert all(f.endswith(".db") for f in os.listdir(plain_dir))
        assert all(f.endswith(".shm") for f in os.listdir(shm_dir))

        def compare():
            expected = normalized(MultiProcessCollector(None, path=str(plain_dir)).collect(), [w.pid for w in plain])
            actual = normalized(collect(str(shm_dir)).values(), [w.pid for w in dropin])
            assert same(actual, expected), (actual, expected)
            return expected

        live = compare()
        assert len(live) >= 5
        for p in dies:
            plain[p].kill()
            mark_process_dead(plain[p].pid, str(plain_dir))
            dropin[p].kill()
        compare()
    finally:
        for w in plain + dropin:
            w.kill()


EXPOSITION_CODE = """
c = Counter('requests', 'Requests.', ['code'])
g = Gauge('queue', 'Queue.', ['q'], multiprocess_mode='livesum')
h = Histogram('latency_seconds', 'Latency.', ['view'], buckets=[0.5, 1, 2.5])
s = Summary('size_bytes', 'Size.', ['kind'])
for i, label in enumerate(['a', 'b', 'c']):
    c.labels(label).inc(i + 1)
    g.labels(label).set(i * 2)
    h.labels(label).observe(i * 0.75)
    h.labels(label).observe(3)
    s.labels(label).observe(i + 0.25)
"""


def test_generate_latest_gives_the_same_bytes_as_plain_multiprocess_mode(tmp_path):
    """The exposition a ``/metrics`` view renders with ``MultiProcessCollector`` and
    ``generate_latest``: each family byte for byte that of plain multiprocess mode on the
    same data, samples in the installed version's order (series are created in label order,
    which is the order both sides then list them in). The order of the families themselves
    is the file listing order in plain mode, which depends on the file system."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    from shmetrics.prometheus_client import ShmetricsCollector

    bodies = {}
    for mode, collector in (("plain", MultiProcessCollector), ("dropin", ShmetricsCollector)):
        directory = tmp_path / mode
        directory.mkdir()
        worker = Worker(str(directory), mode)
        worker.run(EXPOSITION_CODE)
        registry = CollectorRegistry()
        collector(registry, path=str(directory))
        text = generate_latest(registry).decode()
        bodies[mode] = {block.split(" ", 1)[0]: block for block in text.split("# HELP ")[1:]}
        worker.kill()
    assert list(sorted(bodies["plain"])) == ["latency_seconds", "queue", "requests_total", "size_bytes"]
    for family, block in bodies["plain"].items():
        assert bodies["dropin"][family] == block


UTF8_CODE = """
c = Counter('my.dotted', 'Dotted.', ['lbl.x'])
h = Histogram('lat.seconds', 'Latency.', ['a:b'], buckets=[0.5, 1])
g = Gauge('é', 'Accented.', multiprocess_mode='livesum')
c.labels('v').inc(2)
h.labels('x').observe(0.25)
g.set(1.5)
"""


def test_utf8_names_render_as_in_plain_multiprocess_mode(tmp_path):
    """prometheus_client 0.26 takes any UTF-8 metric and label name: through the drop-in
    (shmetrics segments) and from plain processes' ``.db`` files (the legacy reader), every
    family renders as plain multiprocess mode renders it, in each escaping scheme."""
    pytest.importorskip("prometheus_client.validation", reason="UTF-8 names since 0.22")
    from prometheus_client import CollectorRegistry, generate_latest

    from shmetrics.prometheus_client import ShmetricsCollector

    dirs = {}
    for mode in ("plain", "dropin"):
        directory = tmp_path / mode
        directory.mkdir()
        worker = Worker(str(directory), mode)
        worker.run(UTF8_CODE)
        dirs[mode] = (str(directory), worker)
    import inspect

    escapings = ["underscores", "allow-utf-8", "dots", "values"]
    if "escaping" not in inspect.signature(generate_latest).parameters:
        escapings = [None]
    for escaping in escapings:
        bodies = {}
        for name, (directory, collector) in {
            "plain": (dirs["plain"][0], MultiProcessCollector),
            "plain files, shmetrics reader": (dirs["plain"][0], ShmetricsCollector),
            "dropin": (dirs["dropin"][0], ShmetricsCollector),
        }.items():
            registry = CollectorRegistry()
            collector(registry, path=directory)
            text = (generate_latest(registry) if escaping is None else generate_latest(registry, escaping)).decode()
            bodies[name] = {block.split("\n", 1)[0]: block for block in text.split("# HELP ")[1:]}
        assert len(bodies["plain"]) == 3, bodies["plain"]
        for name in ("plain files, shmetrics reader", "dropin"):
            assert bodies[name] == bodies["plain"], (escaping, name)
    for _, worker in dirs.values():
        worker.kill()
