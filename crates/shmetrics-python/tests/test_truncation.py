"""A segment truncated under a long-lived collector in this interpreter: the collector's
next ``collect()`` goes on without the truncated process (which is reported) instead of the
interpreter dying of SIGBUS. The reader catches the fault in its own mappings and chains any
other SIGBUS to the handler the process had (Python's ``faulthandler`` included)."""

from __future__ import annotations

import faulthandler
import glob
import os
import time

from conftest import Worker

WORKER_CODE = """
c = Counter('jobs', 'Jobs.', ['k'])
for k in range(400):
    c.labels(str(k)).inc(n)
"""


def totals(collector):
    out = {}
    for family in collector.collect():
        for s in family.samples:
            out[s.name] = out.get(s.name, 0) + s.value
    return out


def test_a_segment_truncated_under_a_long_lived_collector(metrics_dir):
    from shmetrics.prometheus_client import ShmetricsCollector

    faulthandler.enable()  # a handler of the host's own, installed before ours
    workers = [Worker(metrics_dir) for _ in range(2)]
    try:
        for n, w in enumerate(workers, start=1):
            w.run(WORKER_CODE, n=n)
        # A listing well after the last change is trusted: the collector keeps the files it
        # mapped, so the truncated file is read through the old mapping.
        time.sleep(0.15)
        collector = ShmetricsCollector(None, path=metrics_dir)
        assert totals(collector)["jobs_total"] == 400 * (1 + 2)
        for path in glob.glob(os.path.join(metrics_dir, f"shmetrics-{workers[0].pid}-*.shm")):
            os.truncate(path, 4096)
        after = totals(collector)
        assert after["jobs_total"] == 400 * 2
        assert "faulted_page" in str(collector.last_report())
        assert totals(collector)["jobs_total"] == 400 * 2
    finally:
        for w in workers:
            w.kill()
