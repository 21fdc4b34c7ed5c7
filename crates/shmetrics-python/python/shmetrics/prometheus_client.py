"""Drop-in backend for ``prometheus_client``'s multiprocess mode.

One line at start-up (or ``SHMETRICS_PROMETHEUS_CLIENT=1`` in the environment)::

    import shmetrics.prometheus_client
    shmetrics.prometheus_client.install()

From then on every ``prometheus_client`` ``Counter``, ``Gauge``, ``Histogram`` and
``Summary`` created while ``PROMETHEUS_MULTIPROC_DIR`` is set writes into this process's
shmetrics segment in that directory instead of ``*.db`` files, and every
``MultiProcessCollector`` reads the directory through the shmetrics reader (segments and any
remaining ``*.db`` files, merged with the same rules). It does not matter whether
``prometheus_client`` was imported before: ``install()`` patches its classes and module
attributes in place.

What is patched (all undone by :func:`uninstall`):

- ``prometheus_client.values.ValueClass``: a factory that returns shmetrics value objects for
  counters and gauges (used by any code that builds values itself);
- ``_metric_init`` of ``Counter``, ``Gauge``, ``Histogram`` and ``Summary``: each child gets
  a native shmetrics child as its value, and (unless a subclass overrides them) its
  ``inc``/``dec``/``set``/``observe`` are bound straight to the native methods, so a call is
  one native call;
- ``Histogram.observe`` and ``Summary.observe``: a histogram's bucket, sum and count are
  written together;
- ``MetricWrapperBase.labels``: binds a native ``labels`` to each labelled metric, which
  finds a label set seen before without a Python frame or a lock;
- ``MultiProcessCollector.collect``: reads the directory with the shmetrics reader.

Metrics whose definition shmetrics cannot hold (for example one name registered with two
different help texts in one process, or duplicate bucket bounds) fall back to
``prometheus_client``'s own ``*.db`` files, which the reader merges too: nothing is lost.
So do series whose labels are over shmetrics' limits (``docs/limits.md``); the reader
leaves those out of the exposition and reports them.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from . import _native

__all__ = [
    "ShmetricsCollector",
    "install",
    "installed",
    "mark_process_dead",
    "uninstall",
]

_log = logging.getLogger("shmetrics")

_LIVE_GAUGE_MODES = ("liveall", "livemin", "livemax", "livesum", "livemostrecent")


def mark_process_dead(pid: int, path: Optional[str] = None) -> None:
    """Kept for compatibility; never needed for shmetrics segments, whose liveness the
    kernel tracks. Removes the ``live*`` gauge ``*.db`` files of ``pid`` that plain
    ``prometheus_client`` processes may have left, exactly as
    ``prometheus_client.multiprocess.mark_process_dead`` does."""
    if path is None:
        path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", os.environ.get("prometheus_multiproc_dir"))
    if not path:
        return
    for mode in _LIVE_GAUGE_MODES:
        for f in glob.glob(os.path.join(path, f"gauge_{mode}_{pid}.db")):
            try:
                os.remove(f)
            except FileNotFoundError:
                pass


# --------------------------------------------------------------------------------------
# Collector


def _float_to_go_string() -> Callable[[float], str]:
    from prometheus_client.utils import floatToGoString

    return floatToGoString


def _prometheus_client_version() -> Tuple[int, ...]:
    from importlib.metadata import version

    parts = []
    for part in version("prometheus_client").split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _families_to_metrics(families: List[Tuple[Any, ...]]) -> List[Any]:
    """Turns ``Reader.collect()`` output into ``prometheus_client`` ``Metric`` objects with
    exactly the samples the installed ``MultiProcessCollector`` yields (names, label dicts,
    float values; no timestamps, exemplars or ``_created`` samples), in its order: per
    series a counter's or gauge's sample, a summary's ``_count`` then ``_sum``, a
    histogram's ``_sum``, buckets by bound and ``_count`` (before 0.24, every ``_sum`` of a
    histogram comes first, then each series' buckets and ``_count``)."""
    from prometheus_client.metrics_core import Metric
    from prometheus_client.samples import Sample

    go_string = _float_to_go_string()
    sums_first = _prometheus_client_version() < (0, 24)
    out = []
    for name, typ, documentation, bounds, series in families:
        metric = Metric(name, documentation, typ)
        samples = metric.samples
        if typ == "counter":
            total = name + "_total"
            for labels, _pid, value in series:
                samples.append(Sample(total, labels, value))
        elif typ == "gauge":
            for labels, pid, value in series:
                if pid is not None:
                    labels["pid"] = pid
                samples.append(Sample(name, labels, value))
        elif typ == "summary":
            count_name, sum_name = name + "_count", name + "_sum"
            for labels, _pid, (count, total) in series:
                samples.append(Sample(count_name, labels, float(count)))
                samples.append(Sample(sum_name, labels, total))
        else:
            les = [go_string(b) for b in bounds]
            bucket_name, count_name, sum_name = name + "_bucket", name + "_count", name + "_sum"
            if sums_first:
                for labels, _pid, (_counts, total) in series:
                    samples.append(Sample(sum_name, labels, total))
            for labels, _pid, (counts, total) in series:
                if not sums_first:
                    samples.append(Sample(sum_name, labels, total))
                acc = 0.0
                for le, n in zip(les, counts):
                    acc += n
                    with_le = dict(labels)
                    with_le["le"] = le
                    samples.append(Sample(bucket_name, with_le, acc))
                samples.append(Sample(count_name, labels, acc))
        out.append(metric)
    return out


_readers: Dict[str, _native.Reader] = {}
_readers_lock = threading.Lock()


def _reader(path: str) -> _native.Reader:
    key = os.path.realpath(path)
    with _readers_lock:
        reader = _readers.get(key)
        if reader is None:
            reader = _readers[key] = _native.Reader(key)
        return reader


def _multiproc_dir(path: Optional[str]) -> str:
    if path is None:
        path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", os.environ.get("prometheus_multiproc_dir"))
    if not path or not os.path.isdir(path):
        raise ValueError("env PROMETHEUS_MULTIPROC_DIR is not set or not a directory")
    return path


class ShmetricsCollector:
    """A ``prometheus_client`` collector for a metrics directory, in place of
    ``MultiProcessCollector``: shmetrics segments and ``prometheus_client`` ``*.db`` files,
    merged with ``MultiProcessCollector``'s rules, read incrementally (parsed metadata is
    kept between scrapes). ``prefixes`` keeps only families whose names start with one of
    them (all when empty)::

        registry = CollectorRegistry()
        ShmetricsCollector(registry, prefixes=["vllm:"])
        generate_latest(registry)
    """

    def __init__(
        self,
        registry: Any,
        path: Optional[str] = None,
        prefixes: Iterable[str] = (),
    ) -> None:
        self._path = _multiproc_dir(path)
        self._prefixes = list(prefixes)
        self._reader = _reader(self._path)
        if registry:
            registry.register(self)

    def collect(self) -> List[Any]:
        """The merged families as ``prometheus_client`` ``Metric`` objects."""
        return _families_to_metrics(self._reader.collect(self._prefixes))

    def last_report(self) -> Dict[str, Any]:
        """What the last collection skipped or found corrupt (see ``Reader.last_report``)."""
        return self._reader.last_report()


def _multiprocess_collector_collect(self: Any) -> List[Any]:
    """``MultiProcessCollector.collect`` once installed: the shmetrics reader."""
    return _families_to_metrics(_reader(self._path).collect([]))


# --------------------------------------------------------------------------------------
# Writing


_fallback = threading.local()
_parents: Dict[Tuple[Any, ...], Any] = {}
_parents_lock = threading.Lock()
_warned: set = set()
_legacy_value_class: List[Any] = []


def _legacy_values() -> Any:
    """``prometheus_client``'s own value class for metrics shmetrics does not hold: files in
    ``PROMETHEUS_MULTIPROC_DIR`` when it is set (merged by the reader), memory otherwise."""
    from prometheus_client import values

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR") and not os.environ.get("prometheus_multiproc_dir"):
        return values.MutexValue
    if not _legacy_value_class:
        original = _originals.get(("values", "ValueClass"))
        if getattr(original, "_multiprocess", False):
            _legacy_value_class.append(original)
        else:
            _legacy_value_class.append(values.MultiProcessValue())
    return _legacy_value_class[0]


_NATIVE = {
    "counter": _native.Counter,
    "gauge": _native.Gauge,
    "histogram": _native.Histogram,
    "summary": _native.Summary,
}


def _native_child(
    kind: str,
    name: str,
    documentation: str,
    labelnames: Tuple[str, ...],
    labelvalues: Tuple[str, ...],
    **extra: Any,
) -> Any:
    """The native child for one ``prometheus_client`` series, or ``None`` when shmetrics is
    not to hold it (no metrics directory, a fallback in progress, or a definition the
    writer refuses)."""
    if getattr(_fallback, "active", False):
        return None
    registry = _native.configured_registry()
    if registry is None:
        return None
    key = (kind, name, documentation, tuple(labelnames), tuple(sorted(extra.items())))
    parent = _parents.get(key)
    if parent is None:
        try:
            created = _NATIVE[kind](name, documentation, list(labelnames), registry=registry, **extra)
        except ValueError as e:
            if key not in _warned:
                _warned.add(key)
                _log.warning(
                    "shmetrics: %s %s stays in prometheus_client's own files: %s", kind, name, e
                )
            return None
        with _parents_lock:
            parent = _parents.setdefault(key, created)
    if labelvalues:
        try:
            return parent.labels(*labelvalues)
        except ValueError as e:
            # A label set over the limits: prometheus_client would take it, so its own
            # `.db` file does (the reader reports it there).
            if key not in _warned:
                _warned.add(key)
                _log.warning("shmetrics: a series of %s %s stays in prometheus_client's own files: %s", kind, name, e)
            return None
    return parent


def _run_original(metric: Any, original: Callable[[Any], None]) -> None:
    """Runs ``prometheus_client``'s own ``_metric_init`` with its own value class."""
    previous = getattr(_fallback, "active", False)
    _fallback.active = True
    try:
        original(metric)
    finally:
        _fallback.active = previous


class _ShmetricsValue:
    """Installed as ``prometheus_client.values.ValueClass``: shmetrics value objects for
    counters and gauges, ``prometheus_client``'s own class for everything else."""

    _multiprocess = True

    def __new__(  # type: ignore[misc]
        cls,
        typ: str,
        metric_name: str,
        name: str,
        labelnames: Any,
        labelvalues: Any,
        help_text: str,
        multiprocess_mode: str = "",
        **kwargs: Any,
    ) -> Any:
        native = None
        if typ == "counter":
            native = _native_child("counter", metric_name, help_text, tuple(labelnames), tuple(labelvalues))
        elif typ == "gauge":
            native = _native_child(
                "gauge",
                metric_name,
                help_text,
                tuple(labelnames),
                tuple(labelvalues),
                multiprocess_mode=multiprocess_mode or "all",
            )
        if native is not None:
            return native
        legacy = _legacy_values()
        if multiprocess_mode:
            kwargs["multiprocess_mode"] = multiprocess_mode
        return legacy(typ, metric_name, name, labelnames, labelvalues, help_text, **kwargs)


_originals: Dict[Tuple[str, str], Any] = {}
_install_lock = threading.Lock()


def _counter_metric_init(self: Any) -> None:
    native = _native_child("counter", self._name, self._documentation, self._labelnames, self._labelvalues)
    if native is None:
        return _run_original(self, _originals[("Counter", "_metric_init")])
    self._value = native
    self._created = time.time()
    if type(self).inc is _pc_class("Counter").inc:
        self.inc = native.inc


def _gauge_metric_init(self: Any) -> None:
    native = _native_child(
        "gauge",
        self._name,
        self._documentation,
        self._labelnames,
        self._labelvalues,
        multiprocess_mode=self._multiprocess_mode,
    )
    if native is None:
        return _run_original(self, _originals[("Gauge", "_metric_init")])
    self._value = native
    cls, base = type(self), _pc_class("Gauge")
    for method in ("inc", "dec", "set"):
        if getattr(cls, method) is getattr(base, method):
            setattr(self, method, getattr(native, method))


def _histogram_metric_init(self: Any) -> None:
    native = _native_child(
        "histogram",
        self._name,
        self._documentation,
        self._labelnames,
        self._labelvalues,
        buckets=tuple(self._upper_bounds),
    )
    if native is None:
        return _run_original(self, _originals[("Histogram", "_metric_init")])
    self._created = time.time()
    self._shmetrics = native
    self._sum, self._buckets = native._parts()
    if type(self).observe is _histogram_observe:
        self.observe = native.observe


def _histogram_observe(self: Any, amount: float, exemplar: Optional[Dict[str, str]] = None) -> None:
    self._raise_if_not_observable()
    native = self.__dict__.get("_shmetrics")
    if native is None:
        return _originals[("Histogram", "observe")](self, amount, exemplar)
    native.observe(amount, exemplar)


def _summary_metric_init(self: Any) -> None:
    native = _native_child("summary", self._name, self._documentation, self._labelnames, self._labelvalues)
    if native is None:
        return _run_original(self, _originals[("Summary", "_metric_init")])
    self._created = time.time()
    self._shmetrics = native
    self._count, self._sum = native._parts()
    if type(self).observe is _summary_observe:
        self.observe = native.observe


def _summary_observe(self: Any, amount: float) -> None:
    self._raise_if_not_observable()
    native = self.__dict__.get("_shmetrics")
    if native is None:
        return _originals[("Summary", "observe")](self, amount)
    native.observe(amount)


def _labels(self: Any, *labelvalues: Any, **labelkwargs: Any) -> Any:
    """``labels(...)`` of ``prometheus_client``'s metrics once installed: the first call on
    a labelled metric binds a native ``labels`` to it (``_native.FastLabels``: a label set
    seen before is found without a Python frame or a lock), unless a subclass overrides
    ``labels``; every call that is not such a hit runs ``prometheus_client``'s own code."""
    original = _originals[("MetricWrapperBase", "labels")]
    child = original(self, *labelvalues, **labelkwargs)
    if "_metrics" in self.__dict__ and "labels" not in self.__dict__ and type(self).labels is _labels:
        self.labels = _native.FastLabels(self, original)
    return child


def _pc_class(name: str) -> Any:
    from prometheus_client import metrics

    return getattr(metrics, name)


_PATCHES: List[Tuple[str, str, Callable[..., Any]]] = [
    ("Counter", "_metric_init", _counter_metric_init),
    ("Gauge", "_metric_init", _gauge_metric_init),
    ("Histogram", "_metric_init", _histogram_metric_init),
    ("Histogram", "observe", _histogram_observe),
    ("Summary", "_metric_init", _summary_metric_init),
    ("Summary", "observe", _summary_observe),
    ("MetricWrapperBase", "labels", _labels),
]


def install() -> None:
    """Makes ``prometheus_client`` write into shmetrics segments and read through the
    shmetrics reader. Idempotent; safe whether or not ``prometheus_client`` was imported
    before. Metrics created before the call keep the storage they were created with
    (``*.db`` files in multiprocess mode, which the reader still merges)."""
    from prometheus_client import metrics, multiprocess, values

    with _install_lock:
        if _originals:
            return
        _originals[("values", "ValueClass")] = values.ValueClass
        _originals[("MultiProcessCollector", "collect")] = multiprocess.MultiProcessCollector.collect
        for cls_name, attr, replacement in _PATCHES:
            cls = getattr(metrics, cls_name)
            _originals[(cls_name, attr)] = cls.__dict__[attr]
            setattr(cls, attr, replacement)
        values.ValueClass = _ShmetricsValue
        multiprocess.MultiProcessCollector.collect = _multiprocess_collector_collect


def uninstall() -> None:
    """Restores ``prometheus_client`` as it was before :func:`install`. Metrics created
    meanwhile keep writing into shmetrics segments."""
    from prometheus_client import metrics, multiprocess, values

    with _install_lock:
        if not _originals:
            return
        for cls_name, attr, _ in _PATCHES:
            setattr(getattr(metrics, cls_name), attr, _originals[(cls_name, attr)])
        values.ValueClass = _originals[("values", "ValueClass")]
        multiprocess.MultiProcessCollector.collect = _originals[("MultiProcessCollector", "collect")]
        _originals.clear()
        _legacy_value_class.clear()


def installed() -> bool:
    """Whether :func:`install` is in effect."""
    return bool(_originals)
