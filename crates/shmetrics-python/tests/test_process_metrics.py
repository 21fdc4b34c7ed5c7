"""Process metrics of every live writer through the Python API: ``generate_latest`` and
``ShmetricsCollector`` with ``process_metrics=True``."""

from __future__ import annotations

import os
import subprocess
import sys

from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest as prometheus_generate_latest

import shmetrics
from shmetrics.prometheus_client import ShmetricsCollector

WRITER = """
import sys, time
import shmetrics
shmetrics.Counter("work_total", "Work.").inc()
print("ready", flush=True)
sys.stdin.read()  # until the test closes stdin
"""


def start_writer(directory: str) -> subprocess.Popen:
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=directory)
    writer = subprocess.Popen([sys.executable, "-c", WRITER], env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline() == "ready\n"
    return writer


def test_live_writers_have_their_process_metrics(tmp_path):
    directory = str(tmp_path)
    writer = start_writer(directory)
    try:
        pid = f'pid="{writer.pid}"'
        text = shmetrics.generate_latest(directory, prefixes=["nothing_"], process_metrics=True).decode()
        for family in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                       "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                       "process_start_time_seconds"):
            assert f"{family}{{{pid}}} " in text, text
        assert "work_total" not in text
        plain = shmetrics.generate_latest(directory).decode()
        assert "process_" not in plain and "work_total 1.0" in plain

        registry = CollectorRegistry()
        ShmetricsCollector(registry, path=directory, process_metrics=True)
        exposition = prometheus_generate_latest(registry).decode()
        assert f"process_resident_memory_bytes{{{pid}}} " in exposition, exposition
        assert "# TYPE process_cpu_seconds_total counter" in exposition
        assert "work_total 1.0" in exposition
        rss = next(s.value for m in registry.collect() for s in m.samples
                   if s.name == "process_resident_memory_bytes" and s.labels == {"pid": str(writer.pid)})
        with open(f"/proc/{writer.pid}/status") as status:
            vm_rss = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
        assert abs(rss / vm_rss - 1) < 0.1, (rss, vm_rss)
    finally:
        writer.stdin.close()
        writer.wait(timeout=30)
    # The writer is gone: no process metrics for it.
    text = shmetrics.generate_latest(directory, process_metrics=True).decode()
    assert "process_" not in text, text
