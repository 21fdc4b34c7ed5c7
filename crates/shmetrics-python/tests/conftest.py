"""Shared fixtures: a fresh metrics directory per test and real writer processes.

The pytest process itself never writes metrics (its default registry stays unopened): every
writer is a forked ``Worker`` process with its own environment, so liveness, pids and fork
handling are those of real processes.
"""

from __future__ import annotations

import multiprocessing
import os
import traceback
from typing import Any, Dict, List, Optional

import pytest

_FORK = multiprocessing.get_context("fork")

#: Code for a worker: ``result`` is the directory through ``MultiProcessCollector`` as
#: ``prometheus_client``'s OpenMetrics and text expositions.
EXPOSE_BOTH = (
    "from prometheus_client import CollectorRegistry\n"
    "from prometheus_client.multiprocess import MultiProcessCollector\n"
    "from prometheus_client.openmetrics.exposition import generate_latest as om\n"
    "from prometheus_client.exposition import generate_latest as text\n"
    "r = CollectorRegistry(); MultiProcessCollector(r)\n"
    "result = (om(r).decode(), text(r).decode())\n"
)


#: Every gauge merge mode of ``multiprocess_mode``.
GAUGE_MODES = ["all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum", "mostrecent", "livemostrecent"]

#: Worker code for random workloads: ``specs`` (kind, name, help, label names, keyword
#: arguments) become ``metrics``; ``apply(ops)`` runs (metric index, label values, method,
#: argument) operations, ``touch`` only creating the child.
WORKLOAD_CODE = """
from prometheus_client import Enum, Info

def make(spec):
    kind, name, documentation, labelnames, extra = spec
    cls = {'counter': Counter, 'gauge': Gauge, 'histogram': Histogram, 'summary': Summary,
           'info': Info, 'enum': Enum}[kind]
    return cls(name, documentation, labelnames, registry=None, **extra)

metrics = [make(s) for s in specs]

def apply(ops):
    for index, labelvalues, op, value in ops:
        m = metrics[index]
        if labelvalues:
            m = m.labels(*labelvalues)
        if op != 'touch':
            getattr(m, op)(value)
"""


def _worker_main(conn: Any, metrics_dir: str, mode: str) -> None:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    namespace: Dict[str, Any] = {}
    try:
        if mode == "dropin":
            import shmetrics.prometheus_client

            shmetrics.prometheus_client.install()
        elif mode == "plain":
            # prometheus_client's own multiprocess mode, chosen as at an import with the
            # variable set.
            from prometheus_client import values

            values.ValueClass = values.MultiProcessValue()
        exec("import os\nfrom prometheus_client import Counter, Gauge, Histogram, Summary", namespace)
        conn.send(("ok", os.getpid()))
    except BaseException:  # noqa: BLE001 - reported to the parent
        conn.send(("err", traceback.format_exc()))
        os._exit(1)
    while True:
        message = conn.recv()
        if message is None:
            conn.close()
            os._exit(0)
        code, params = message
        try:
            namespace.update(params)
            exec(code, namespace)
            conn.send(("ok", namespace.get("result")))
        except BaseException:  # noqa: BLE001 - reported to the parent
            conn.send(("err", traceback.format_exc()))


class Worker:
    """A forked writer process running code sent to it, with state kept between calls.

    ``mode`` is ``"dropin"`` (``prometheus_client`` with shmetrics installed), ``"plain"``
    (``prometheus_client``'s own multiprocess mode) or ``"native"`` (nothing installed).
    """

    def __init__(self, metrics_dir: str, mode: str = "dropin") -> None:
        self._conn, child = _FORK.Pipe()
        self._process = _FORK.Process(target=_worker_main, args=(child, metrics_dir, mode))
        self._process.start()
        child.close()
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"worker failed to start:\n{value}")
        self.pid: int = value

    def run(self, code: str, **params: Any) -> Any:
        """Runs ``code`` in the worker (``params`` become variables); returns ``result``."""
        self._conn.send((code, params))
        status, value = self._conn.recv()
        if status != "ok":
            raise AssertionError(f"worker {self.pid} failed:\n{value}")
        return value

    def exit(self) -> None:
        """Ends the worker normally and waits for it."""
        if self._process.is_alive():
            self._conn.send(None)
        self._process.join(10)
        assert self._process.exitcode == 0, self._process.exitcode

    def kill(self) -> None:
        """SIGKILLs the worker and waits for it."""
        self._process.kill()
        self._process.join(10)


@pytest.fixture
def metrics_dir(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    path = tmp_path / "metrics"
    path.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(path))
    return str(path)


@pytest.fixture
def workers(metrics_dir: str) -> Any:
    """A factory of workers in ``metrics_dir``; every worker still running is ended after
    the test."""
    started: List[Worker] = []

    def start(mode: str = "dropin", directory: Optional[str] = None) -> Worker:
        w = Worker(directory or metrics_dir, mode)
        started.append(w)
        return w

    yield start
    for w in started:
        w.kill()


def histogram_order(series: List[List[Any]]) -> List[Any]:
    """The samples of a histogram's series (each ``[_sum, buckets..., _count]``) in the order
    the installed ``MultiProcessCollector`` yields them: series by series from 0.24 on;
    before, every ``_sum`` first, then each series' buckets and ``_count``."""
    from importlib.metadata import version

    major_minor = tuple(int(p) for p in version("prometheus_client").split(".")[:2])
    if major_minor >= (0, 24):
        return [s for one in series for s in one]
    return [one[0] for one in series] + [s for one in series for s in one[1:]]


def collect(path: str, prefixes: Any = ()) -> Dict[str, Any]:
    """The shmetrics collector's families by name."""
    from shmetrics.prometheus_client import ShmetricsCollector

    return {m.name: m for m in ShmetricsCollector(None, path=path, prefixes=prefixes).collect()}


def sample_value(path: str, name: str, labels: Optional[Dict[str, str]] = None) -> Optional[float]:
    """One sample's value as ``CollectorRegistry.get_sample_value`` returns it."""
    from prometheus_client import CollectorRegistry

    from shmetrics.prometheus_client import ShmetricsCollector

    registry = CollectorRegistry()
    ShmetricsCollector(registry, path=path)
    return registry.get_sample_value(name, labels or {})
