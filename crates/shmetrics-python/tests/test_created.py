"""``_created`` samples through the drop-in and the native API: in OpenMetrics only, the
oldest process's creation time of each counter, histogram and summary series, stable across
scrapes and process deaths, parsed by ``prometheus_client``'s OpenMetrics parser; off where
``prometheus_client`` turns them off."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from prometheus_client.openmetrics.parser import text_string_to_metric_families

import shmetrics
from conftest import EXPOSE_BOTH

WRITE = (
    "import time\n"
    "before = time.time()\n"
    "c = Counter('jobs', 'Jobs.', ['kind'], registry=None)\n"
    "c.labels(kind).inc()\n"
    "Histogram('lat', 'Latency.', ['kind'], buckets=[1.0], registry=None).labels(kind).observe(0.5)\n"
    "Summary('size', 'Sizes.', ['kind'], registry=None).labels(kind).observe(2.0)\n"
    "Gauge('temp', 'T.', ['kind'], registry=None, multiprocess_mode='livesum').labels(kind).set(1)\n"
    "result = (before, time.time())\n"
)

OPENMETRICS = EXPOSE_BOTH


def _grouped_histograms() -> bool:
    """Whether the installed prometheus_client groups a histogram's samples by series
    (0.24 on). Before, multiprocess mode lists every series' ``_sum`` first, which its own
    OpenMetrics parser refuses for a histogram of two series ("Invalid metric grouping"),
    with or without ``_created``: the drop-in keeps that order."""
    from importlib.metadata import version

    return tuple(int(p) for p in version("prometheus_client").split(".")[:2]) >= (0, 24)


def created_samples(exposition: str) -> dict:
    """``(sample name, kind label)`` -> value of every ``_created`` sample, parsed by
    ``prometheus_client``'s OpenMetrics parser (which checks the exposition); before 0.24,
    read from the lines (see ``_grouped_histograms``)."""
    out = {}
    if not _grouped_histograms():
        for line in exposition.splitlines():
            match = re.fullmatch(r'(\w+_created)\{kind="(\w+)"\} (\S+)', line)
            if match:
                out[(match.group(1), match.group(2))] = float(match.group(3))
        return out
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            if s.name.endswith("_created"):
                out[(s.name, s.labels["kind"])] = s.value
    return out


def test_created_is_the_oldest_process_time_and_stays(workers):
    first, second, reader = workers(), workers(), workers()
    first_time = first.run(WRITE, kind="a")
    time.sleep(0.05)
    second.run(WRITE, kind="a")
    b_time = second.run(WRITE, kind="b")

    om, text = reader.run(OPENMETRICS)
    created = created_samples(om)
    assert sorted(created) == [
        (f"{name}_created", kind) for name in ("jobs", "lat", "size") for kind in ("a", "b")
    ], om
    for name in ("jobs", "lat", "size"):
        assert first_time[0] - 1e-6 <= created[(f"{name}_created", "a")] <= first_time[1] + 1e-6
        assert b_time[0] - 1e-6 <= created[(f"{name}_created", "b")] <= b_time[1] + 1e-6
    # Each series' `_created` follows its other samples.
    assert 'jobs_total{kind="a"} 2.0\njobs_created{kind="a"} ' in om, om
    # The text format is multiprocess mode's, without them.
    assert "_created" not in text, text

    # Stable across scrapes and the death of the oldest process.
    assert created_samples(reader.run(OPENMETRICS)[0]) == created
    first.exit()
    om, _ = reader.run(OPENMETRICS)
    assert created_samples(om) == created
    assert 'jobs_total{kind="a"} 2.0' in om

    # The native renderer gives the same times.
    native = shmetrics.generate_latest(openmetrics=True).decode()
    assert created_samples(native) == created
    assert "_created" not in shmetrics.generate_latest().decode()


def test_prometheus_client_switches_turn_them_off(workers, metrics_dir):
    writer = workers()
    writer.run(WRITE, kind="a")
    reader = workers()
    reader.run("from prometheus_client.metrics import disable_created_metrics\ndisable_created_metrics()")
    om, _ = reader.run(OPENMETRICS)
    assert "_created" not in om and 'jobs_total{kind="a"} 1.0' in om, om
    assert "_created" not in reader.run("import shmetrics\nresult = shmetrics.generate_latest(openmetrics=True).decode()")
    reader.run("from prometheus_client.metrics import enable_created_metrics\nenable_created_metrics()")
    assert "jobs_created" in reader.run(OPENMETRICS)[0]


def test_the_environment_variable_turns_them_off(workers, metrics_dir):
    workers().run(WRITE, kind="a")
    code = (
        "import shmetrics, shmetrics.prometheus_client\n"
        "shmetrics.prometheus_client.install()\n"
        + OPENMETRICS
        + "print(result[0] + shmetrics.generate_latest(openmetrics=True).decode())\n"
    )
    for value, shown in (("True", False), ("1", False), ("t", False), ("false", True), ("", True)):
        # A fresh interpreter: prometheus_client reads the variable when it is imported.
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=metrics_dir, PROMETHEUS_DISABLE_CREATED_SERIES=value)
        env.pop("SHMETRICS_PROMETHEUS_CLIENT", None)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.count("jobs_created") == (2 if shown else 0), (value, out.stdout)
        assert out.stdout.count('jobs_total{kind="a"} 1.0') == 2, out.stdout
