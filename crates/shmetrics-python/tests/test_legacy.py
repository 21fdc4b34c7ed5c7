"""prometheus_client's own *.db files in the same directory: merged by the shmetrics reader
with MultiProcessCollector's rules, so a deployment where some processes still use plain
multiprocess mode is merged correctly; a damaged file is skipped and reported instead of
failing the scrape."""

from __future__ import annotations

import os

import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from conftest import Worker, collect, sample_value
from conftest import WORKLOAD_CODE
from test_equivalence import normalized, workload

from shmetrics.prometheus_client import ShmetricsCollector, mark_process_dead


def test_plain_files_alone_read_like_multiprocess_collector(workers, metrics_dir):
    w = workers("plain")
    w.run(
        "Counter('c', 'c help', ['a'], registry=None).labels('x').inc(2)\n"
        "Gauge('g', 'g help', registry=None, multiprocess_mode='livesum').set(4)\n"
        "Gauge('ga', 'ga help', ['a'], registry=None).labels('x').set(1.5)\n"
        "Histogram('h', 'h help', buckets=[1, 1e6], registry=None).observe(3)\n"
        "Summary('s', 's help', registry=None).observe(2)"
    )
    assert all(f.endswith(".db") for f in os.listdir(metrics_dir))
    expected = normalized(MultiProcessCollector(None, path=metrics_dir).collect(), [w.pid])
    assert normalized(collect(metrics_dir).values(), [w.pid]) == expected
    assert expected["h"][2][0][:2] == ("h_bucket", (("le", "+Inf"),))
    assert ("h_bucket", (("le", "1e+06"),), 1.0, None, None) in expected["h"][2]


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_mixed_deployment_merges_like_an_all_plain_one(tmp_path, seed):
    """The same workload, once with every process in plain multiprocess mode (read by
    MultiProcessCollector) and once with some processes switched to the drop-in (read by
    shmetrics): the same samples, live and after deaths."""
    specs, processes, rounds, dies = workload(seed)
    plain_dir, mixed_dir = tmp_path / "plain", tmp_path / "mixed"
    plain_dir.mkdir()
    mixed_dir.mkdir()
    plain = [Worker(str(plain_dir), "plain") for _ in range(processes)]
    mixed = [Worker(str(mixed_dir), "plain" if p % 2 == 0 else "dropin") for p in range(processes)]
    try:
        for w in plain + mixed:
            w.run(WORKLOAD_CODE, specs=specs)
        for batch in rounds:
            for p, ops in batch:
                plain[p].run("apply(ops)", ops=ops)
                mixed[p].run("apply(ops)", ops=ops)
        files = os.listdir(mixed_dir)
        assert any(f.endswith(".db") for f in files) and any(f.endswith(".shm") for f in files)

        def compare():
            expected = normalized(MultiProcessCollector(None, path=str(plain_dir)).collect(), [w.pid for w in plain])
            actual = normalized(collect(str(mixed_dir)).values(), [w.pid for w in mixed])
            assert actual == expected

        compare()
        for p in dies:
            for group, directory in ((plain, plain_dir), (mixed, mixed_dir)):
                group[p].kill()
                mark_process_dead(group[p].pid, str(directory))
        compare()
    finally:
        for w in plain + mixed:
            w.kill()


def write_good_plain_metrics(workers):
    w = workers("plain")
    w.run("Counter('ok', 'help', registry=None).inc(5)")
    return w


@pytest.mark.parametrize(
    "damage,reason",
    [
        (lambda data: b"", "legacy_empty"),
        (lambda data: data[:12], "legacy_truncated"),
        (lambda data: data[:8] + (10_000).to_bytes(4, "little") + data[12:], "legacy_corrupt"),
        (lambda data: data.replace(b'"bad"', b'{bad'), "legacy_corrupt"),
    ],
    ids=["empty", "truncated", "bad-length", "bad-json"],
)
def test_damaged_file_is_skipped_and_reported(workers, metrics_dir, damage, reason):
    write_good_plain_metrics(workers)
    bad = workers("plain")
    bad.run("Counter('bad', 'help', registry=None).inc(1)")
    path = os.path.join(metrics_dir, f"counter_{bad.pid}.db")
    bad.kill()
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(damage(data))
    with pytest.raises(Exception):
        MultiProcessCollector(None, path=metrics_dir).collect()
    collector = ShmetricsCollector(None, path=metrics_dir)
    families = {m.name: m for m in collector.collect()}
    assert list(families) == ["ok"]
    assert families["ok"].samples[0].value == 5
    problems = collector.last_report()["problems"]
    assert [(p[0], p[1]) for p in problems] == [(path, reason)]


def test_shmetrics_segments_and_plain_files_of_one_family_are_summed(workers, metrics_dir):
    plain, dropin = workers("plain"), workers("dropin")
    code = (
        "c = Counter('requests', 'help', ['code'], registry=None); c.labels('200').inc(n)\n"
        "h = Histogram('latency', 'help', buckets=[1, 2], registry=None); h.observe(n)\n"
        "g = Gauge('workers', 'help', registry=None, multiprocess_mode='all'); g.set(n)"
    )
    plain.run(code, n=1)
    dropin.run(code, n=2)
    assert sample_value(metrics_dir, "requests_total", {"code": "200"}) == 3
    assert sample_value(metrics_dir, "latency_bucket", {"le": "1.0"}) == 1
    assert sample_value(metrics_dir, "latency_bucket", {"le": "2.0"}) == 2
    assert sample_value(metrics_dir, "latency_sum") == 3
    assert sample_value(metrics_dir, "workers", {"pid": str(plain.pid)}) == 1
    assert sample_value(metrics_dir, "workers", {"pid": str(dropin.pid)}) == 2


def test_definition_shmetrics_cannot_hold_falls_back_to_plain_files(workers, metrics_dir):
    w = workers("dropin")
    w.run(
        "Counter('c', 'first help', registry=None).inc(1)\n"
        "Counter('c', 'second help', registry=None).inc(2)\n"
        "Histogram('dup', 'help', buckets=[1, 1, 2], registry=None).observe(1.5)"
    )
    files = sorted(os.listdir(metrics_dir))
    assert [f for f in files if f.endswith(".db")] == [f"counter_{w.pid}.db", f"histogram_{w.pid}.db"]
    assert sample_value(metrics_dir, "c_total") == 3
    assert collect(metrics_dir)["c"].documentation == "first help"
    assert sample_value(metrics_dir, "dup_count") == 1


def test_plain_live_gauges_follow_mark_process_dead(workers, metrics_dir):
    """prometheus_client holds no lock on its files: a plain file counts as live while it
    exists, as for MultiProcessCollector, and mark_process_dead removes it."""
    w = workers("plain")
    w.run("Gauge('g', 'help', registry=None, multiprocess_mode='livesum').set(3)")
    assert sample_value(metrics_dir, "g") == 3
    mark_process_dead(w.pid)
    assert sample_value(metrics_dir, "g") is None


def test_reader_follows_values_and_new_series_of_a_live_plain_process(workers, metrics_dir):
    w = workers("plain")
    w.run("c = Counter('c', 'help', ['a'], registry=None); c.labels('x').inc()")
    collector = ShmetricsCollector(None, path=metrics_dir)

    def samples():
        return sorted((s.labels["a"], s.value) for m in collector.collect() for s in m.samples)

    assert samples() == [("x", 1.0)]
    w.run("c.labels('x').inc(2)")
    assert samples() == [("x", 3.0)]
    w.run("c.labels('y').inc(5)")
    assert samples() == [("x", 3.0), ("y", 5.0)]
