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

- ``prometheus_client.values.ValueClass`` (when multiprocess mode is on) and
  ``values.MultiProcessValue``: shmetrics value classes, one per process identifier, that
  return shmetrics value objects for counters and gauges (used by any code that builds
  values itself); ``ValueClass`` decides, when a metric is created, whether it goes to
  shmetrics segments (these classes), stays in memory (``MutexValue``) or keeps
  ``prometheus_client``'s own files (a class made before ``install()``);
- ``__init__``, ``info`` and ``state`` of ``Info`` and ``Enum``, which multiprocess mode
  cannot hold: each observable one gets a native info or enum (an extra keyword,
  ``multiprocess_mode``, ``livemostrecent`` by default or ``mostrecent``, says how processes
  merge), written at each ``info()`` and ``state()``;
- ``_metric_init`` of ``Counter``, ``Gauge``, ``Histogram`` and ``Summary``: each child gets
  a native shmetrics child as its value, and (unless a subclass overrides them) its
  ``inc``/``dec``/``set``/``observe`` are bound straight to the native methods, so a call is
  one native call;
- ``Histogram.observe`` and ``Summary.observe``: a histogram's bucket, sum and count are
  written together;
- ``MetricWrapperBase.labels``: binds a native ``labels`` to each labelled metric, which
  finds a label set seen before without a Python frame or a lock;
- ``MultiProcessCollector.collect``: reads the directory with the shmetrics reader;
- ``multiprocess.mark_process_dead``: also ends the liveness of a custom identifier's
  logical process written by this one.

``_created`` samples: in an OpenMetrics exposition (``prometheus_client``'s OpenMetrics
``generate_latest``, which ``make_asgi_app``, ``make_wsgi_app`` and ``start_http_server``
use when Prometheus asks for OpenMetrics), each counter, histogram and summary series gets
the ``_created`` sample ``prometheus_client`` gives it outside multiprocess mode: the
series' creation time in the oldest process that has it, stable across deaths and
compactions. Off where ``prometheus_client`` turns it off
(``PROMETHEUS_DISABLE_CREATED_SERIES``, ``disable_created_metrics()``). The text format
stays exactly as multiprocess mode writes it, without them.

Metrics whose definition shmetrics cannot hold (for example one name registered with two
different help texts in one process, or duplicate bucket bounds) fall back to
``prometheus_client``'s own ``*.db`` files, which the reader merges too: nothing is lost.
So do series whose labels are over shmetrics' limits (``docs/limits.md``); the reader
leaves those out of the exposition and reports them.
"""

from __future__ import annotations

import functools
import glob
import inspect
import logging
import os
import threading
import time
import warnings
import weakref
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from . import _created_series_on, _native

#: The ``prometheus_client`` releases the drop-in is tested with (ci/upstream-prometheus-client.sh
#: runs their own test suites against it): 0.20 to 0.26.
TESTED_VERSIONS = ((0, 20), (0, 26))


def _check_prometheus_client_version() -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("prometheus_client")
    except PackageNotFoundError:
        raise ImportError("the drop-in needs prometheus_client, which is not installed") from None
    low, high = TESTED_VERSIONS
    major_minor = tuple(int("".join(c for c in p if c.isdigit()) or 0) for p in installed.split(".")[:2])
    if not low <= major_minor <= high:
        raise ImportError(
            f"the shmetrics drop-in is tested with prometheus_client {low[0]}.{low[1]} to {high[0]}.{high[1]}, "
            f"and {installed} is installed: install one of those (pip install 'prometheus_client>=0.20,<0.27'), "
            "or use shmetrics' native API"
        )


_check_prometheus_client_version()

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
    """Never needed for shmetrics segments of real processes, whose liveness the kernel
    tracks. Removes the ``live*`` gauge ``*.db`` files of ``pid`` that plain
    ``prometheus_client`` processes may have left, exactly as
    ``prometheus_client.multiprocess.mark_process_dead`` does, and ends the liveness of the
    logical process ``pid`` of a custom process identifier written by this process (its
    ``live*`` gauges leave the merge, as when its files are removed)."""
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
    number = _process_number(pid)
    dkey = _dir_key(path)
    with _lock:
        registry = _registries.get((dkey, number)) if number is not None and dkey is not None else None
    if registry is not None:
        registry.end_liveness()


# --------------------------------------------------------------------------------------
# Collector


def _float_to_go_string() -> Callable[[float], str]:
    from prometheus_client.utils import floatToGoString

    return floatToGoString


@functools.lru_cache(maxsize=None)
def _prometheus_client_version() -> Tuple[int, ...]:
    """The installed release, read once: the package metadata costs more than a collection
    (a process imports one ``prometheus_client``)."""
    from importlib.metadata import version

    parts = []
    for part in version("prometheus_client").split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


_openmetrics_code: List[Any] = []


def _in_openmetrics_exposition() -> bool:
    """Whether this collection runs under ``prometheus_client``'s OpenMetrics
    ``generate_latest`` (a few frames up: it iterates the registry, which calls the
    collector), the only exposition that shows ``_created`` samples as such; the text
    format would turn them into gauge families multiprocess mode never had."""
    import sys

    if not _openmetrics_code:
        try:
            from prometheus_client.openmetrics import exposition
        except ImportError:
            return False
        # The original's code, also while the drop-in's replacement (which calls it when it
        # cannot render natively) stands in its place.
        original = getattr(exposition.generate_latest, "__wrapped__", exposition.generate_latest)
        _openmetrics_code.append(original.__code__)
    code = _openmetrics_code[0]
    frame = sys._getframe(1)
    for _ in range(12):
        if frame is None:
            return False
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def _families_to_metrics(families: List[Tuple[Any, ...]], created: bool = False) -> List[Any]:
    """Turns ``Reader.collect()`` output into ``prometheus_client`` ``Metric`` objects with
    exactly the samples the installed ``MultiProcessCollector`` yields (names, label dicts,
    float values; no timestamps or exemplars), in its order: per series a counter's or
    gauge's sample, a summary's ``_count`` then ``_sum``, a histogram's ``_sum``, buckets by
    bound and ``_count`` (before 0.24, every ``_sum`` of a histogram comes first, then each
    series' buckets and ``_count``). With ``created`` (``families`` from
    ``collect(created=True)``), each counter, histogram and summary series ends with its
    ``_created`` sample, as ``prometheus_client`` writes it outside multiprocess mode.
    A counter's ``_total`` and a histogram's ``_bucket`` samples carry the newest exemplar
    of any process (``collect(exemplars=True)``), as ``prometheus_client`` attaches them
    outside multiprocess mode; its text exposition ignores them, OpenMetrics shows them."""
    from prometheus_client.metrics_core import Metric
    from prometheus_client.samples import Exemplar, Sample

    def exemplar(entry: Tuple[Any, ...], i: int) -> Any:
        shown = entry[4] if len(entry) > 4 else None
        if shown is None or shown[i] is None:
            return None
        labels, value, timestamp = shown[i]
        return Exemplar(labels, value, timestamp)

    go_string = _float_to_go_string()
    sums_first = _prometheus_client_version() < (0, 24)
    out = []
    for name, typ, documentation, bounds, series in families:
        metric = Metric(name, documentation, typ)
        samples = metric.samples
        created_name = name + "_created"

        def add_created(labels: Dict[str, str], entry: Tuple[Any, ...]) -> None:
            if created and entry[3] is not None:
                samples.append(Sample(created_name, labels, entry[3]))

        if typ == "counter":
            total = name + "_total"
            for entry in series:
                samples.append(Sample(total, entry[0], entry[2], None, exemplar(entry, 0)))
                add_created(entry[0], entry)
        elif typ == "gauge":
            for entry in series:
                labels, pid, value = entry[:3]
                if pid is not None:
                    labels["pid"] = pid
                samples.append(Sample(name, labels, value))
        elif typ == "summary":
            count_name, sum_name = name + "_count", name + "_sum"
            for entry in series:
                labels, (count, total) = entry[0], entry[2]
                samples.append(Sample(count_name, labels, float(count)))
                samples.append(Sample(sum_name, labels, total))
                add_created(labels, entry)
        elif typ == "info":
            info_name = name + "_info"
            for entry in series:
                samples.append(Sample(info_name, entry[0], 1.0))
        elif typ == "stateset":
            # `bounds` holds the states; each series' value is the index of its own.
            for entry in series:
                labels, index = entry[0], entry[2]
                for i, state in enumerate(bounds):
                    with_state = dict(labels)
                    with_state[name] = state
                    samples.append(Sample(name, dict(sorted(with_state.items())), 1.0 if i == index else 0.0))
        else:
            les = [go_string(b) for b in bounds]
            bucket_name, count_name, sum_name = name + "_bucket", name + "_count", name + "_sum"
            if sums_first:
                for entry in series:
                    samples.append(Sample(sum_name, entry[0], entry[2][1]))
            for entry in series:
                labels, (counts, total) = entry[0], entry[2]
                if not sums_first:
                    samples.append(Sample(sum_name, labels, total))
                acc = 0.0
                for i, (le, n) in enumerate(zip(les, counts)):
                    acc += n
                    with_le = dict(labels)
                    with_le["le"] = le
                    samples.append(Sample(bucket_name, with_le, acc, None, exemplar(entry, i)))
                samples.append(Sample(count_name, labels, acc))
                add_created(labels, entry)
        out.append(metric)
    return out


_readers: Dict[str, _native.Reader] = {}
_readers_lock = threading.Lock()


def _forget_readers() -> None:
    """In a forked child: the parent's readers are refused there (another thread may have
    been reading with one at the fork) and their cache's lock may be held by a thread the
    child does not have, so the child starts both afresh."""
    global _readers_lock
    _readers_lock = threading.Lock()
    _readers.clear()


os.register_at_fork(after_in_child=_forget_readers)


def _reader(path: str) -> _native.Reader:
    """The reader of a directory, kept between collections (its parsed metadata is reused);
    readers of directories that are gone are dropped when another is opened."""
    key = os.path.realpath(path)
    with _readers_lock:
        reader = _readers.get(key)
        if reader is None:
            for gone in [k for k in _readers if not os.path.isdir(k)]:
                del _readers[gone]
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
    them (all when empty); ``process_metrics=True`` adds the process metrics of every live
    writer (``process_cpu_seconds_total`` and the others of ``prometheus_client``'s process
    collector, which does not work in multiprocess mode, with a ``pid`` label each)::

        registry = CollectorRegistry()
        ShmetricsCollector(registry, prefixes=["vllm:"], process_metrics=True)
        generate_latest(registry)

    ``created`` decides the ``_created`` samples: ``None`` (the default) as the drop-in's
    ``MultiProcessCollector`` (in OpenMetrics expositions, unless ``prometheus_client``
    turned them off), ``True`` or ``False`` always or never.
    """

    def __init__(
        self,
        registry: Any,
        path: Optional[str] = None,
        prefixes: Iterable[str] = (),
        process_metrics: bool = False,
        created: Optional[bool] = None,
    ) -> None:
        self._path = _multiproc_dir(path)
        self._prefixes = list(prefixes)
        self._process_metrics = process_metrics
        self._created = created
        self._reader = _reader(self._path)
        self._reader_pid = os.getpid()
        if registry:
            registry.register(self)

    def _own_reader(self) -> _native.Reader:
        """This process's reader: a collector made before a ``fork()`` (gunicorn's
        ``--preload``) takes the child's own, as the parent's is refused there."""
        if self._reader_pid != os.getpid():
            self._reader, self._reader_pid = _reader(self._path), os.getpid()
        return self._reader

    def collect(self) -> List[Any]:
        """The merged families as ``prometheus_client`` ``Metric`` objects. What the reader
        left out or found damaged is logged once per file and reason (``last_report()`` has
        all of it)."""
        return _collected(self._own_reader(), self._prefixes, self._process_metrics, self._created)

    def last_report(self) -> Dict[str, Any]:
        """What the last collection skipped or found corrupt (see ``Reader.last_report``)."""
        return self._own_reader().last_report()


def _multiprocess_collector_collect(self: Any) -> List[Any]:
    """``MultiProcessCollector.collect`` once installed: the shmetrics reader."""
    return _collected(_reader(self._path), [])


_reported: set = set()


def _collected(
    reader: Any, prefixes: List[str], process_metrics: bool = False, created: Optional[bool] = None
) -> List[Any]:
    """``reader``'s merged families as ``Metric`` objects, logging each problem of the
    collection once per (file, reason): a metric left out is said when it is read, too.
    ``created``: see ``ShmetricsCollector``."""
    if created is None:
        created = _created_series_on() and _in_openmetrics_exposition()
    families = reader.collect(prefixes, process_metrics, created, True)
    _log_problems(reader)
    return _families_to_metrics(families, created)


def _log_problems(reader: Any) -> None:
    """Logs each problem of ``reader``'s last collection once per (file, reason)."""
    for path, reason, detail in reader.last_report()["problems"]:
        if (path, reason) not in _reported:
            _reported.add((path, reason))
            _log.warning("shmetrics: %s: %s (%s)", path, detail, reason)


# --------------------------------------------------------------------------------------
# generate_latest


#: Probes of ``floatToGoString``: every form it writes (positional, Go's exponent form for
#: positive values from a million, Python's exponent form, the special values).
_FLOAT_PROBES = (0.0, -0.0, 1.0, 0.1, 3.3, 0.0001, 1e-05, 1.5e-07, 5e-324, 123456.5, 1e6, 1234567.0,
                 10000000.5, 1e15, 9999999999999998.0, 1e16, 1e21, -1e7, -1e16, 1.7976931348623157e308,
                 float("inf"), float("-inf"), float("nan"))

#: ``_text_style``'s answer per ``floatToGoString`` function (the installed release's, fixed
#: once imported): asking the package metadata for the version costs more than a render.
_text_styles: Dict[Any, Optional[Tuple[bool, bool]]] = {}


def _text_style() -> Optional[Tuple[bool, bool]]:
    """What the native text renderer must do as the installed ``prometheus_client`` does:
    ``(sums_first, two_digit_exponent)``; ``None`` when its ``floatToGoString`` writes a
    probe differently from the native one in either form (a release not tested: then
    ``prometheus_client`` renders)."""
    go_string = _float_to_go_string()
    style = _text_styles.get(go_string, False)
    if style is not False:
        return style
    style = None
    for two_digit in (True, False):
        if all(_native.float_to_go_string(v, two_digit) == go_string(v) for v in _FLOAT_PROBES):
            style = (_prometheus_client_version() < (0, 24), two_digit)
            break
    _text_styles[go_string] = style
    return style


def _native_plan(registry: Any, openmetrics: bool = False) -> Optional[List[Tuple[Any, List[str], bool, bool]]]:
    """What an exposition of ``registry`` reads, when the native renderer can write it as
    ``prometheus_client`` would: a plain ``CollectorRegistry`` without target info whose
    collectors are all the drop-in's (``MultiProcessCollector``, and ``ShmetricsCollector``,
    in the text format without forced ``_created`` samples), unsubclassed; per collector, in
    registration order, its reader, prefixes, process-metrics switch and whether its series
    show ``_created`` samples (in OpenMetrics). ``None`` otherwise."""
    from prometheus_client.multiprocess import MultiProcessCollector
    from prometheus_client.registry import CollectorRegistry

    if type(registry) is not CollectorRegistry:
        return None
    with registry._lock:
        collectors = list(registry._collector_to_names)
        target_info = registry._target_info
    if target_info:
        return None
    plan = []
    for collector in collectors:
        cls = type(collector)
        if cls is MultiProcessCollector and cls.collect is _multiprocess_collector_collect:
            plan.append((_reader(collector._path), [], False, openmetrics and _created_series_on()))
        elif cls is ShmetricsCollector and (openmetrics or collector._created is not True):
            created = _created_series_on() if collector._created is None else collector._created
            plan.append((collector._own_reader(), collector._prefixes, collector._process_metrics,
                         openmetrics and created))
        else:
            return None
    return plan


_DEFAULT_REGISTRY = object()

#: Escaping schemes that leave names of the classic character sets as they are (``dots``
#: doubles their underscores): for them the native text is the same bytes. The native
#: renderer declines any other name.
_SAME_FOR_CLASSIC_NAMES = ("underscores", "allow-utf-8", "values")


@functools.lru_cache(maxsize=None)
def _parameters(generate_latest: Callable[..., bytes]) -> Tuple[str, ...]:
    """The parameter names of this ``generate_latest`` (``escaping`` and OpenMetrics'
    ``version`` came in later releases; before, a call with one raises ``TypeError``, and
    must still)."""
    return tuple(inspect.signature(generate_latest).parameters)


def _generate_latest(registry: Any = _DEFAULT_REGISTRY, *args: Any, **kwargs: Any) -> bytes:
    """``prometheus_client``'s text ``generate_latest`` once installed: for a registry of
    the drop-in's collectors only (see ``_native_plan``), and an escaping that leaves
    classic names alone (the default, ``allow-utf-8`` as Prometheus 3 asks, ``values``), the
    same bytes written natively from the merged families (``Reader.render_prometheus_client``)
    instead of through ``Metric`` objects and ``prometheus_client``'s renderer; any other
    registry, argument or name (outside the classic character sets) goes to
    ``prometheus_client``'s own."""
    original = _originals[("exposition", "generate_latest")]
    if registry is _DEFAULT_REGISTRY:
        from prometheus_client.registry import REGISTRY

        registry = REGISTRY
    if args or any(k != "escaping" or v not in _SAME_FOR_CLASSIC_NAMES for k, v in kwargs.items()):
        return original(registry, *args, **kwargs)
    if any(k not in _parameters(original) for k in kwargs):
        return original(registry, *args, **kwargs)
    plan = _native_plan(registry)
    style = _text_style() if plan is not None else None
    if plan is None or style is None:
        return original(registry, *args, **kwargs)
    parts = []
    for reader, prefixes, process_metrics, _ in plan:
        body = reader.render_prometheus_client(prefixes, process_metrics, *style)
        _log_problems(reader)
        if body is None:
            return original(registry, *args, **kwargs)
        parts.append(body)
    return b"".join(parts)


#: The escapings of an OpenMetrics exposition the native renderer writes (``values`` and
#: ``dots`` change sample names differently per release).
_OPENMETRICS_ESCAPINGS = ("underscores", "allow-utf-8")


@functools.lru_cache(maxsize=None)
def _openmetrics_sample_colons(generate_latest: Callable[..., bytes], escaping: Optional[str]) -> Optional[bool]:
    """Whether this OpenMetrics ``generate_latest`` writes the ``:`` of a sample name as
    ``_`` (0.24 on with ``underscores``: it escapes sample names as label names), asked of
    it once with a probe family ``a:b``; ``None`` when the probe fails."""
    from prometheus_client.metrics_core import CounterMetricFamily
    from prometheus_client.registry import CollectorRegistry

    class Probe:
        def collect(self) -> Iterable[Any]:
            yield CounterMetricFamily("a:b", "Probe.", value=1.0)

    registry = CollectorRegistry()
    registry.register(Probe())
    try:
        text = generate_latest(registry) if escaping is None else generate_latest(registry, escaping=escaping)
    except Exception:  # noqa: BLE001 - a release that does not take the probe renders itself
        return None
    if b"\na_b_total 1.0\n" in text:
        return True
    if b"\na:b_total 1.0\n" in text:
        return False
    return None


def _generate_latest_openmetrics(registry: Any = _DEFAULT_REGISTRY, *args: Any, **kwargs: Any) -> bytes:
    """``prometheus_client``'s OpenMetrics ``generate_latest`` once installed: as
    ``_generate_latest`` for the text format, with the ``_created`` samples and exemplars
    its collectors would give, and ``# EOF``; the ``underscores`` (default) and
    ``allow-utf-8`` escapings; anything else goes to ``prometheus_client``'s own."""
    original = _originals[("openmetrics", "generate_latest")]
    if registry is _DEFAULT_REGISTRY:
        from prometheus_client.registry import REGISTRY

        registry = REGISTRY
    escaping = kwargs.get("escaping")
    if (
        args
        or any(k not in ("escaping", "version") or k not in _parameters(original) for k in kwargs)
        or (escaping is not None and escaping not in _OPENMETRICS_ESCAPINGS)
    ):
        return original(registry, *args, **kwargs)
    plan = _native_plan(registry, openmetrics=True)
    style = _text_style() if plan is not None else None
    # Asked of the renderer itself (under any wrapper, a test's included).
    renderer = inspect.unwrap(original)
    colons = _openmetrics_sample_colons(renderer, escaping) if style is not None else None
    if plan is None or style is None or colons is None:
        return original(registry, *args, **kwargs)
    parts = []
    for reader, prefixes, process_metrics, created in plan:
        body = reader.render_prometheus_client(prefixes, process_metrics, *style, True, created, colons)
        _log_problems(reader)
        if body is None:
            return original(registry, *args, **kwargs)
        parts.append(body)
    parts.append(b"# EOF\n")
    return b"".join(parts)


# --------------------------------------------------------------------------------------
# Writing


_fallback = threading.local()
_warned: set = set()
_lock = threading.RLock()

#: Registries by (directory key, logical process): ``None`` for this process (the native
#: registry follows forks itself), an ``int`` for a custom process identifier's value.
_registries: Dict[Tuple[Any, Optional[int]], Any] = {}
#: Native parent metrics by (registry key, kind, name, help, label names, options).
_parents: Dict[Tuple[Any, ...], Any] = {}
#: ``prometheus_client``'s own value classes for metrics shmetrics does not hold, by
#: process identifier function.
_legacy_classes: Dict[Any, Any] = {}


def _dir_key(directory: str) -> Optional[Tuple[str, int, int]]:
    """What identifies a metrics directory: its real path and inode (a directory removed
    and created again under the same name is another one); ``None`` when it is gone."""
    path = os.path.realpath(directory)
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (path, st.st_dev, st.st_ino)


def _prune() -> None:
    """Forgets the registries and parents of directories that are gone (a test suite's
    fresh directory per test): their descriptors and mappings go once no metric object
    holds them."""
    for key in [k for k in _registries if _dir_key(k[0][0]) != k[0]]:
        del _registries[key]
    for key in [k for k in _parents if _dir_key(k[0][0][0]) != k[0][0]]:
        del _parents[key]


def _multiproc_dir_now() -> Optional[str]:
    """``PROMETHEUS_MULTIPROC_DIR`` as ``prometheus_client`` reads it when it opens a file:
    the deprecated lower-case variable is copied to it, with its warning."""
    if "prometheus_multiproc_dir" in os.environ and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ["prometheus_multiproc_dir"]
        warnings.warn(
            "prometheus_multiproc_dir variable has been deprecated in favor of the upper case naming "
            "PROMETHEUS_MULTIPROC_DIR",
            DeprecationWarning,
        )
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _process_number(identifier: Any) -> Optional[int]:
    """A custom process identifier's value as the process number a segment records, or
    ``None`` when it is not a non-negative 32-bit integer (such processes keep
    ``prometheus_client``'s own files)."""
    try:
        number = int(identifier)
    except (TypeError, ValueError):
        return None
    if str(number) != str(identifier) or not 0 <= number < 2**32:
        return None
    return number


def _registry(directory: str, process: Optional[int]) -> Any:
    """The native registry writing into ``directory`` for this process (``process`` None) or
    for a logical process of a custom identifier."""
    dkey = _dir_key(directory)
    if dkey is None:
        raise ValueError(f"metrics directory {directory} does not exist")
    key = (dkey, process)
    with _lock:
        registry = _registries.get(key)
        if registry is None:
            _prune()
            default = _native.configured_registry() if process is None else None
            if default is not None and _dir_key(default.path) == dkey:
                registry = default
            elif process is None:
                registry = _native.Registry(dkey[0], follow_environment=True)
            else:
                registry = _native.Registry(dkey[0], process=process)
            _registries[key] = registry
        return registry


def _parent(registry_key: Any, registry: Any, kind: str, name: str, documentation: str,
            labelnames: Tuple[str, ...], extra: Dict[str, Any]) -> Any:
    """The native metric of one ``prometheus_client`` metric in one registry; raises
    ``ValueError`` when the writer refuses its definition."""
    key = (registry_key, kind, name, documentation, tuple(labelnames), tuple(sorted(extra.items())))
    parent = _parents.get(key)
    if parent is None:
        created = _NATIVE[kind](name, documentation, list(labelnames), registry=registry, **extra)
        with _lock:
            parent = _parents.setdefault(key, created)
    return parent


def _warn_once(key: Any, message: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        _log.warning(message, *args)


_NATIVE = {
    "counter": _native.Counter,
    "gauge": _native.Gauge,
    "histogram": _native.Histogram,
    "summary": _native.Summary,
    "info": _native.Info,
    "enum": _native.Enum,
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
    not to hold it: ``values.ValueClass`` is not multiprocess now (or is
    ``prometheus_client``'s own class), no metrics directory is set, a fallback is in
    progress, or the writer refuses the definition or the labels. The directory and the
    process are those of the moment, as ``prometheus_client``'s files are opened: a
    metric created after ``PROMETHEUS_MULTIPROC_DIR`` changed writes into the new one. With
    a custom process identifier the child asks it at every operation (``_Identified``)."""
    if getattr(_fallback, "active", False):
        return None
    from prometheus_client import values

    identifier = getattr(values.ValueClass, "_shmetrics_identifier", None)
    if identifier is None:
        return None
    directory = _multiproc_dir_now()
    if directory is None or _dir_key(directory) is None:
        return None

    def child_of(process: Optional[int], directory: str = directory) -> Any:
        registry = _registry(directory, process)
        parent = _parent((_dir_key(directory), process), registry, kind, name, documentation, labelnames, extra)
        return parent.labels(*labelvalues) if labelvalues else parent

    def child_now(process: Optional[int]) -> Any:
        # When the identifier changes (as after a fork), prometheus_client reopens its
        # files in the directory of that moment.
        return child_of(process, _multiproc_dir_now() or directory)

    try:
        if identifier is os.getpid:
            return child_of(None)
        process = _process_number(identifier())
        if process is None:
            return None
        return _Identified(kind, identifier, child_now, child_of(process), process)
    except ValueError as e:
        # prometheus_client would take it, so its own `.db` file does (the reader reports
        # what it cannot merge there).
        _warn_once((kind, name, documentation), "shmetrics: %s %s stays in prometheus_client's own files: %s",
                   kind, name, e)
        return None


class _Identified:
    """A series written for a custom process identifier: the identifier is asked at every
    operation and, when its value changed (as after a fork), the operation goes to that
    process's series, as ``MultiProcessValue``'s files do."""

    __slots__ = ("_kind", "_identifier", "_child_of", "_child", "_process")

    def __init__(self, kind: str, identifier: Callable[[], Any], child_of: Callable[[Optional[int]], Any],
                 child: Any, process: int) -> None:
        self._kind = kind
        self._identifier = identifier
        self._child_of = child_of
        self._child = child
        self._process = process

    def _current(self) -> Any:
        process = _process_number(self._identifier())
        if process is None:
            raise ValueError("shmetrics: the process identifier changed to a value that is not a process number")
        if process != self._process:
            self._child = self._child_of(process)
            self._process = process
        return self._child

    def inc(self, amount: float = 1.0, exemplar: Any = None) -> None:
        if self._kind == "counter":
            self._current().inc(amount, exemplar)
        else:
            self._current().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self._current().dec(amount)

    def set(self, value: float, timestamp: Any = None) -> None:
        self._current().set(value, timestamp)

    def reset(self) -> None:
        self._current().reset()

    def get(self) -> Any:
        return self._current().get()

    def observe(self, amount: float, exemplar: Any = None) -> None:
        if self._kind == "histogram":
            self._current().observe(amount, exemplar)
        else:
            self._current().observe(amount)

    def info(self, val: Dict[str, str]) -> None:
        self._current().info(val)

    def state(self, state: str) -> None:
        self._current().state(state)

    def _parts(self) -> Tuple[Any, Any]:
        first, rest = self._current()._parts()
        if isinstance(rest, list):
            return _IdentifiedPart(self, 0, None), [_IdentifiedPart(self, 1, i) for i in range(len(rest))]
        return _IdentifiedPart(self, 0, None), _IdentifiedPart(self, 1, None)


class _IdentifiedPart:
    """One of ``_parts()`` of an ``_Identified`` series, read from the current process's."""

    __slots__ = ("_owner", "_which", "_index")

    def __init__(self, owner: _Identified, which: int, index: Optional[int]) -> None:
        self._owner = owner
        self._which = which
        self._index = index

    def get(self) -> float:
        part = self._owner._current()._parts()[self._which]
        return (part if self._index is None else part[self._index]).get()


def _run_original(metric: Any, original: Callable[[Any], None]) -> None:
    """Runs ``prometheus_client``'s own ``_metric_init`` with its own value class."""
    previous = getattr(_fallback, "active", False)
    _fallback.active = True
    try:
        original(metric)
    finally:
        _fallback.active = previous


def _legacy_value_class(identifier: Callable[[], Any]) -> Any:
    """``prometheus_client``'s own ``MultiProcessValue(identifier)`` class (one per
    identifier, as its files are cached per class)."""
    with _lock:
        cls = _legacy_classes.get(identifier)
        if cls is None:
            cls = _legacy_classes[identifier] = _originals[("values", "MultiProcessValue")](identifier)
        return cls


class _ShmetricsValue:
    """Installed as ``prometheus_client.values.ValueClass`` (and returned by
    ``values.MultiProcessValue``): shmetrics value objects for counters and gauges,
    ``prometheus_client``'s own multiprocess class for everything else."""

    _multiprocess = True
    #: The process identifier (``MultiProcessValue``'s argument).
    _shmetrics_identifier: Callable[[], Any] = os.getpid

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
        if _multiproc_dir_now() is None:
            from prometheus_client import values

            legacy = values.MutexValue
        else:
            legacy = _legacy_value_class(cls._shmetrics_identifier)
        if multiprocess_mode:
            kwargs["multiprocess_mode"] = multiprocess_mode
        return legacy(typ, metric_name, name, labelnames, labelvalues, help_text, **kwargs)

    @classmethod
    def close_all_files(cls) -> None:
        """As ``MmapedValue.close_all_files``: shmetrics segments need no closing."""


def _multi_process_value(process_identifier: Callable[[], Any] = os.getpid) -> Any:
    """``values.MultiProcessValue`` once installed: the shmetrics value class for
    ``process_identifier`` (the default is this process, followed across forks)."""
    if process_identifier is os.getpid:
        return _ShmetricsValue
    return type("_ShmetricsValue", (_ShmetricsValue,), {"_shmetrics_identifier": staticmethod(process_identifier)})


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
    a labelled metric binds a native ``labels`` to it (``_native.fast_labels``: a label set
    seen before is found without a Python frame or a lock), unless a subclass overrides
    ``labels``; every call that is not such a hit runs ``prometheus_client``'s own code."""
    original = _originals[("MetricWrapperBase", "labels")]
    child = original(self, *labelvalues, **labelkwargs)
    if "_metrics" in self.__dict__ and "labels" not in self.__dict__ and type(self).labels is _labels:
        _bind_fast_labels(self)
    return child


#: Metrics with a native ``labels`` bound: ``uninstall`` unbinds them.
_fast_labelled: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _bind_fast_labels(metric: Any) -> None:
    """Binds a native ``labels`` over ``metric``'s current ``_metrics`` dict."""
    metric.labels = _native.fast_labels(metric, _originals[("MetricWrapperBase", "labels")])
    with _install_lock:  # not while uninstall() walks the set
        _fast_labelled.add(metric)


def _has_fast_labels(metric: Any) -> bool:
    """Whether ``metric`` has a native ``labels`` bound (a builtin over a ``FastLabels``)."""
    return isinstance(getattr(metric.__dict__.get("labels"), "__self__", None), _native.FastLabels)


def _clear(self: Any) -> None:
    """``clear()`` once installed: ``prometheus_client``'s, which replaces ``_metrics`` with
    a new dict, then a native ``labels`` over the new one (it holds the dict it was made with)."""
    _originals[("MetricWrapperBase", "clear")](self)
    if _has_fast_labels(self):
        _bind_fast_labels(self)


#: Patched methods that were inherited, not the class's own.
_inherited: set = set()

#: The merge mode of the drop-in's ``Info`` and ``Enum`` when none is given.
_NEWEST_DEFAULT = "livemostrecent"


def _info_init(self: Any, *args: Any, multiprocess_mode: str = _NEWEST_DEFAULT, **kwargs: Any) -> None:
    """``Info.__init__`` once installed: ``prometheus_client``'s, then (in multiprocess
    mode) a native info for each observable metric, merged across processes by
    ``multiprocess_mode`` (``livemostrecent`` or ``mostrecent``; children inherit it)."""
    _originals[("Info", "__init__")](self, *args, **kwargs)
    _attach_newest(self, "info", multiprocess_mode, {})


def _enum_init(self: Any, *args: Any, multiprocess_mode: str = _NEWEST_DEFAULT, **kwargs: Any) -> None:
    """``Enum.__init__`` once installed: as ``_info_init``, for a native enum in the first
    state until ``state()`` is called."""
    _originals[("Enum", "__init__")](self, *args, **kwargs)
    _attach_newest(self, "enum", multiprocess_mode, {"states": tuple(self._states)})


def _attach_newest(self: Any, kind: str, mode: str, extra: Dict[str, Any]) -> None:
    if mode not in ("livemostrecent", "mostrecent"):
        raise ValueError(f"Invalid multiprocess mode for {kind} {self._name}: {mode} (livemostrecent or mostrecent)")
    if mode != _NEWEST_DEFAULT:
        # Children made by `labels()` inherit it. Only a mode given is recorded: the
        # keyword is shmetrics', so `prometheus_client`'s own `__init__` (after `uninstall()`)
        # takes the metrics that never used it.
        self._kwargs["multiprocess_mode"] = mode
    native = None
    if self._is_observable():
        extra = dict(extra, multiprocess_mode=mode)
        native = _native_child(kind, self._name, self._documentation, tuple(self._labelnames),
                               tuple(self._labelvalues), **extra)
    self._shmetrics = native


def _info_info(self: Any, val: Dict[str, str]) -> None:
    """``Info.info`` once installed: ``prometheus_client``'s checks and value, then the
    process's segment."""
    _originals[("Info", "info")](self, val)
    native = self.__dict__.get("_shmetrics")
    if native is not None:
        native.info(dict(val))


def _enum_state(self: Any, state: str) -> None:
    """``Enum.state`` once installed: ``prometheus_client``'s checks and value, then the
    process's segment."""
    _originals[("Enum", "state")](self, state)
    native = self.__dict__.get("_shmetrics")
    if native is not None:
        native.state(state)


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
    ("Info", "__init__", _info_init),
    ("Info", "info", _info_info),
    ("Enum", "__init__", _enum_init),
    ("Enum", "state", _enum_state),
    ("MetricWrapperBase", "labels", _labels),
    ("MetricWrapperBase", "clear", _clear),
]


def install() -> None:
    """Makes ``prometheus_client`` write into shmetrics segments and read through the
    shmetrics reader. Idempotent; safe whether or not ``prometheus_client`` was imported
    before. Metrics created before the call keep the storage they were created with
    (``*.db`` files in multiprocess mode, which the reader still merges)."""
    import prometheus_client
    from prometheus_client import exposition, metrics, multiprocess, values
    from prometheus_client.openmetrics import exposition as om_exposition

    with _install_lock:
        if _originals:
            return
        _originals[("values", "ValueClass")] = values.ValueClass
        _originals[("values", "MultiProcessValue")] = values.MultiProcessValue
        _originals[("multiprocess", "mark_process_dead")] = multiprocess.mark_process_dead
        _originals[("MultiProcessCollector", "collect")] = multiprocess.MultiProcessCollector.collect
        for cls_name, attr, replacement in _PATCHES:
            cls = getattr(metrics, cls_name)
            # An inherited method (``Info.__init__``) is called through its class, and
            # removed again by ``uninstall``.
            _originals[(cls_name, attr)] = getattr(cls, attr)
            if attr not in cls.__dict__:
                _inherited.add((cls_name, attr))
            setattr(cls, attr, replacement)
        values.MultiProcessValue = _multi_process_value
        # Multiprocess mode stays what prometheus_client chose at its import (or what was
        # set since): in-memory values stay in memory.
        if getattr(values.ValueClass, "_multiprocess", False) or _multiproc_dir_now():
            values.ValueClass = _ShmetricsValue
        multiprocess.mark_process_dead = mark_process_dead
        multiprocess.MultiProcessCollector.collect = _multiprocess_collector_collect
        _originals[("exposition", "generate_latest")] = exposition.generate_latest
        _originals[("prometheus_client", "generate_latest")] = prometheus_client.generate_latest
        fast = functools.wraps(exposition.generate_latest)(_generate_latest)
        exposition.generate_latest = fast
        if prometheus_client.generate_latest is _originals[("exposition", "generate_latest")]:
            prometheus_client.generate_latest = fast
        _originals[("openmetrics", "generate_latest")] = om_exposition.generate_latest
        om_exposition.generate_latest = functools.wraps(om_exposition.generate_latest)(
            _generate_latest_openmetrics
        )


def uninstall() -> None:
    """Restores ``prometheus_client`` as it was before :func:`install`. Metrics created
    meanwhile keep writing into shmetrics segments."""
    import prometheus_client
    from prometheus_client import exposition, metrics, multiprocess, values
    from prometheus_client.openmetrics import exposition as om_exposition

    with _install_lock:
        if not _originals:
            return
        for cls_name, attr, _ in _PATCHES:
            if (cls_name, attr) in _inherited:
                delattr(getattr(metrics, cls_name), attr)
            else:
                setattr(getattr(metrics, cls_name), attr, _originals[(cls_name, attr)])
        _inherited.clear()
        values.ValueClass = _originals[("values", "ValueClass")]
        values.MultiProcessValue = _originals[("values", "MultiProcessValue")]
        multiprocess.mark_process_dead = _originals[("multiprocess", "mark_process_dead")]
        multiprocess.MultiProcessCollector.collect = _originals[("MultiProcessCollector", "collect")]
        if getattr(exposition.generate_latest, "__wrapped__", None) is _originals[("exposition", "generate_latest")]:
            exposition.generate_latest = _originals[("exposition", "generate_latest")]
        if getattr(prometheus_client.generate_latest, "__wrapped__", None) is _originals[("exposition", "generate_latest")]:
            prometheus_client.generate_latest = _originals[("prometheus_client", "generate_latest")]
        if getattr(om_exposition.generate_latest, "__wrapped__", None) is _originals[("openmetrics", "generate_latest")]:
            om_exposition.generate_latest = _originals[("openmetrics", "generate_latest")]
        for metric in list(_fast_labelled):
            if _has_fast_labels(metric):
                del metric.__dict__["labels"]
        _fast_labelled.clear()
        _originals.clear()
        _legacy_classes.clear()


def installed() -> bool:
    """Whether :func:`install` is in effect."""
    return bool(_originals)
