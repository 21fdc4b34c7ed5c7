"""shmetrics: lock-free shared-memory Prometheus metrics for multi-process Python.

Native API, in the style of ``prometheus_client``::

    from shmetrics import Counter, Gauge, Histogram

    REQUESTS = Counter("http_requests_total", "Requests served.", ["code"])
    REQUESTS.labels("200").inc()
    IN_FLIGHT = Gauge("http_in_flight", "In flight.", multiprocess_mode="livesum")
    LATENCY = Histogram("http_latency_seconds", "Latency.", buckets=[0.1, 0.5, 1.0])
    BUILD = Info("build", "Build.")  # BUILD.info({"version": "1.2"})
    PHASE = Enum("phase", "Phase.", states=["starting", "running"])  # PHASE.state("running")

Every process writes into its own segment in ``PROMETHEUS_MULTIPROC_DIR`` (or the directory
of an explicit :class:`Registry`); the worker (``shmetrics serve``), :func:`generate_latest`
or the ``prometheus_client`` collector in :mod:`shmetrics.prometheus_client` merge them.

Drop-in for existing ``prometheus_client`` code: call
``shmetrics.prometheus_client.install()`` once, or set ``SHMETRICS_PROMETHEUS_CLIENT=1`` in
the environment (honoured at interpreter start-up and at ``import shmetrics``).
"""

from __future__ import annotations

import os
from typing import Iterable, Optional

from ._native import (
    DEFAULT_BUCKETS,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    Reader,
    Registry,
    Summary,
    configured_registry,
    default_registry,
    fork_recreations,
)
from ._push import push_to_gateway, pushadd_to_gateway

__all__ = [
    "CONTENT_TYPE_LATEST",
    "CONTENT_TYPE_OPENMETRICS",
    "DEFAULT_BUCKETS",
    "Counter",
    "Enum",
    "Gauge",
    "Histogram",
    "Info",
    "Reader",
    "Registry",
    "Summary",
    "configured_registry",
    "default_registry",
    "fork_recreations",
    "generate_latest",
    "push_to_gateway",
    "pushadd_to_gateway",
]

#: Content type of :func:`generate_latest` output (Prometheus text format 0.0.4).
CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"
#: Content type of :func:`generate_latest` output with ``openmetrics=True``.
CONTENT_TYPE_OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

#: Environment variable that installs the ``prometheus_client`` drop-in when set to
#: ``1``/``true``/``yes``/``on``.
DROP_IN_ENV = "SHMETRICS_PROMETHEUS_CLIENT"

_readers: "dict[str, Reader]" = {}


def _forget_readers() -> None:
    """In a forked child: the parent's readers are refused there (another thread may have
    been reading with one at the fork), so the child opens its own."""
    _readers.clear()


os.register_at_fork(after_in_child=_forget_readers)


def _reader_for(path: Optional[str]) -> Reader:
    if path is None:
        path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not path:
            raise ValueError("PROMETHEUS_MULTIPROC_DIR is not set and no path was given")
    key = os.path.realpath(path)
    reader = _readers.get(key)
    if reader is None:
        # Readers of directories that are gone (a test's) go.
        for gone in [k for k in _readers if not os.path.isdir(k)]:
            _readers.pop(gone, None)
        reader = _readers.setdefault(key, Reader(key))
    return reader


def generate_latest(
    path: Optional[str] = None,
    openmetrics: bool = False,
    prefixes: Iterable[str] = (),
    self_metrics: bool = False,
    escaping: str = "underscores",
    process_metrics: bool = False,
    created: Optional[bool] = None,
) -> bytes:
    """Merges the metrics directory (default ``PROMETHEUS_MULTIPROC_DIR``) and renders it as
    Prometheus text, or OpenMetrics with ``openmetrics=True``, keeping only families whose
    names start with one of ``prefixes`` (all when empty). The reader of each directory is
    kept between calls, so a steady-state call only reads values and renders. Names outside
    the classic character sets are escaped as ``escaping`` says (``underscores``,
    ``allow-utf-8``, ``dots`` or ``values``, as ``prometheus_client``'s). With
    ``process_metrics=True``, the process metrics of every live writer (``process_cpu_seconds_total``,
    memory, file descriptors, start time; a ``pid`` label each, read from ``/proc``) follow,
    whatever the prefixes: ``prometheus_client``'s process collector does not work in
    multiprocess mode. OpenMetrics output has a ``_created`` sample per counter, histogram
    and summary series (its creation time in the oldest process that has it) unless
    ``created=False``; the default follows ``prometheus_client``: off when
    ``PROMETHEUS_DISABLE_CREATED_SERIES`` is ``true``, ``1`` or ``t``, or when
    ``prometheus_client.disable_created_metrics()`` was called."""
    if created is None:
        created = _created_series_on()
    return _reader_for(path).render(openmetrics, list(prefixes), self_metrics, escaping, process_metrics, created)


def _created_series_on() -> bool:
    """``prometheus_client``'s switch for ``_created`` samples: its own when it is imported,
    else its environment rule."""
    import sys

    metrics = sys.modules.get("prometheus_client.metrics")
    if metrics is not None and hasattr(metrics, "_use_created"):
        return bool(metrics._use_created)
    return os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() not in ("true", "1", "t")


def _drop_in_requested() -> bool:
    return os.environ.get(DROP_IN_ENV, "").strip().lower() in ("1", "true", "yes", "on")


if _drop_in_requested():
    try:
        from .prometheus_client import install as _install

        _install()
    except ImportError as _e:  # the native API stays usable without prometheus_client
        import warnings

        warnings.warn(
            f"{DROP_IN_ENV} is set but the drop-in cannot be installed: {_e}", RuntimeWarning, stacklevel=2
        )
