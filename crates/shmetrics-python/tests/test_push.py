"""``shmetrics.push_to_gateway`` against Debian's ``prometheus-pushgateway`` (started on a
free loopback port; skipped when it is not installed, unless validators are required)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

import shmetrics

WRITER = """
import shmetrics
c = shmetrics.Counter("jobs_done_total", "Jobs done.", ["kind"])
c.labels("eval").inc({n})
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gateway():
    binary = shutil.which("prometheus-pushgateway")
    if binary is None:
        if os.environ.get("SHMETRICS_REQUIRE_VALIDATORS") == "1":
            pytest.fail("prometheus-pushgateway is not installed")
        pytest.skip("prometheus-pushgateway is not installed")
    port = free_port()
    # Debian's build persists to /var/lib/prometheus by default: in memory only.
    proc = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert time.monotonic() < deadline, "the pushgateway did not listen"
        time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    proc.kill()
    proc.wait()


def write(directory, n: int) -> None:
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(directory))
    subprocess.run([sys.executable, "-c", WRITER.format(n=n)], env=env, check=True)


def gateway_metrics(gateway: str) -> str:
    with urllib.request.urlopen(f"http://{gateway}/metrics", timeout=10) as r:
        return r.read().decode()


def test_push_to_gateway_sends_the_merged_directory(tmp_path, gateway):
    for n in (1, 2, 3):  # three processes
        write(tmp_path, n)
    shmetrics.push_to_gateway(gateway, "nightly", {"instance": "node-3", "path": "a/b"}, path=str(tmp_path))
    labels = 'instance="node-3",job="nightly",kind="eval",path="a/b"'
    assert f"jobs_done_total{{{labels}}} 6\n" in gateway_metrics(gateway)
    write(tmp_path, 4)
    shmetrics.pushadd_to_gateway(gateway, "nightly", {"instance": "node-3", "path": "a/b"}, path=str(tmp_path))
    assert f"jobs_done_total{{{labels}}} 10\n" in gateway_metrics(gateway)


def test_a_gateway_that_is_down_is_retried_then_raises(tmp_path):
    write(tmp_path, 1)
    port = free_port()
    started = time.monotonic()
    with pytest.raises(OSError, match=rf"cannot push to http://127.0.0.1:{port}/metrics/job/j after 3 attempts"):
        shmetrics.push_to_gateway(f"127.0.0.1:{port}", "j", path=str(tmp_path), retries=2)
    assert time.monotonic() - started >= 1.5  # 0.5 s then 1 s of backoff
    with pytest.raises(ValueError, match="grouping_key cannot hold job"):
        shmetrics.push_to_gateway("127.0.0.1:1", "j", {"job": "x"}, path=str(tmp_path))
