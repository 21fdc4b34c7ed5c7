"""Type stubs of the extension module (crates/shmetrics-python/src)."""

from typing import Any, Callable, Dict, Iterable, List, Literal, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union

from ._helpers import ExceptionCounter, InprogressTracker, Timer

_Self = TypeVar("_Self")
_Number = Union[int, float]
_ExceptionTypes = Union[Type[BaseException], Tuple[Type[BaseException], ...]]
GaugeMode = Literal[
    "all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum", "mostrecent", "livemostrecent"
]

DEFAULT_BUCKETS: List[float]

class Registry:
    """A process's segments in one metrics directory (default ``PROMETHEUS_MULTIPROC_DIR``)."""

    def __init__(
        self, path: Optional[str] = None, *, process: Optional[int] = None, follow_environment: bool = False
    ) -> None: ...
    @property
    def path(self) -> str: ...
    def segment_paths(self) -> List[str]: ...
    def dropped_series(self) -> int: ...
    def end_liveness(self) -> None: ...

def default_registry() -> Registry:
    """The process-wide registry in ``PROMETHEUS_MULTIPROC_DIR``; ``ValueError`` while unset."""

def configured_registry() -> Optional[Registry]:
    """The default registry, or ``None`` while ``PROMETHEUS_MULTIPROC_DIR`` is unset."""

def fork_recreations() -> int:
    """How many times this process re-created its segments after a ``fork()``."""

def float_to_go_string(v: float, two_digit_exponent: bool) -> str:
    """``prometheus_client``'s ``floatToGoString(v)`` as the native text renderer writes it."""

class Counter:
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Optional[Iterable[str]] = None,
        namespace: str = "",
        subsystem: str = "",
        unit: str = "",
        registry: Optional[Registry] = None,
    ) -> None: ...
    def inc(self, amount: _Number = 1, exemplar: Optional[Mapping[str, str]] = None) -> None: ...
    def get(self) -> float: ...
    def set(self, value: float, timestamp: Optional[float] = None) -> None:
        """``set(0)`` is ``reset()``; any other value raises ``NotImplementedError``."""
    def reset(self) -> None:
        """Sets this process's count back to zero (``Counter.reset()``)."""
    def count_exceptions(self, exception: _ExceptionTypes = Exception) -> ExceptionCounter: ...
    def labels(self: _Self, *values: Any, **by_name: Any) -> _Self: ...
    def set_exemplar(self, exemplar: Any) -> None: ...
    def get_exemplar(self) -> None: ...
    @property
    def name(self) -> str: ...

class Gauge:
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Optional[Iterable[str]] = None,
        namespace: str = "",
        subsystem: str = "",
        unit: str = "",
        registry: Optional[Registry] = None,
        multiprocess_mode: GaugeMode = "all",
    ) -> None: ...
    def inc(self, amount: _Number = 1) -> None: ...
    def dec(self, amount: _Number = 1) -> None: ...
    def set(self, value: Any, timestamp: Optional[float] = None) -> None: ...
    def set_to_current_time(self) -> None: ...
    def track_inprogress(self) -> InprogressTracker: ...
    def time(self) -> Timer: ...
    def get(self) -> float: ...
    def labels(self: _Self, *values: Any, **by_name: Any) -> _Self: ...
    def set_exemplar(self, exemplar: Any) -> None: ...
    def get_exemplar(self) -> None: ...
    @property
    def multiprocess_mode(self) -> GaugeMode: ...
    @property
    def name(self) -> str: ...

class Histogram:
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Optional[Iterable[str]] = None,
        namespace: str = "",
        subsystem: str = "",
        unit: str = "",
        registry: Optional[Registry] = None,
        buckets: Optional[Sequence[Union[float, str]]] = None,
    ) -> None: ...
    def observe(self, amount: _Number, exemplar: Optional[Mapping[str, str]] = None) -> None: ...
    def time(self) -> Timer: ...
    def get(self) -> Tuple[List[int], float]:
        """This process's per-bucket counts (not cumulative) and sum."""
    @property
    def upper_bounds(self) -> List[float]: ...
    def _parts(self) -> Tuple["ValuePart", List["ValuePart"]]: ...
    def labels(self: _Self, *values: Any, **by_name: Any) -> _Self: ...
    @property
    def name(self) -> str: ...

class Summary:
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Optional[Iterable[str]] = None,
        namespace: str = "",
        subsystem: str = "",
        unit: str = "",
        registry: Optional[Registry] = None,
    ) -> None: ...
    def observe(self, amount: _Number) -> None: ...
    def time(self) -> Timer: ...
    def get(self) -> Tuple[int, float]:
        """This process's observation count and sum."""
    def _parts(self) -> Tuple["ValuePart", "ValuePart"]: ...
    def labels(self: _Self, *values: Any, **by_name: Any) -> _Self: ...
    @property
    def name(self) -> str: ...

class Info:
    """An info (``name_info``, value 1): per label set, the info last set, merged across
    processes by ``multiprocess_mode`` (``livemostrecent``: by a live process, the default;
    ``mostrecent``: by any)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Optional[Iterable[str]] = None,
        namespace: str = "",
        subsystem: str = "",
        unit: str = "",
        registry: Optional[Registry] = None,
        multiprocess_mode: Literal["livemostrecent", "mostrecent"] = "livemostrecent",
    ) -> None: ...
    def info(self, val: Mapping[str, str]) -> None: ...
    def labels(self: _Self, *values: Any, **by_name: Any) -> _Self: ...
    @property
    def name(self) -> str: ...

class Enum:
    """An enum (OpenMetrics' stateset): per label set, the state last entered (the first
    until one is), merged across processes by ``multiprocess_mode`` as :class:`Info`."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Optional[Iterable[str]] = None,
        namespace: str = "",
        subsystem: str = "",
        unit: str = "",
        registry: Optional[Registry] = None,
        states: Optional[Sequence[str]] = None,
        multiprocess_mode: Literal["livemostrecent", "mostrecent"] = "livemostrecent",
    ) -> None: ...
    def state(self, state: str) -> None: ...
    def labels(self: _Self, *values: Any, **by_name: Any) -> _Self: ...
    @property
    def name(self) -> str: ...

class ValuePart:
    """A read-only number of a histogram or summary child (``prometheus_client``'s ``_sum``,
    ``_count``, ``_buckets[i]``)."""

    def get(self) -> float: ...
    def inc(self, *args: Any, **kwargs: Any) -> None: ...
    def set(self, *args: Any, **kwargs: Any) -> None: ...
    def set_exemplar(self, exemplar: Any) -> None: ...
    def get_exemplar(self) -> None: ...

_Series = Tuple[Dict[str, str], Optional[str], Any]
#: A series of ``collect(created=True)``: its creation time (seconds) last.
_Exemplar = Optional[Tuple[Dict[str, str], float, float]]
_CreatedSeries = Tuple[Dict[str, str], Optional[str], Any, Optional[float], Optional[List[_Exemplar]]]

class Reader:
    """Merges one metrics directory; parsed metadata is kept between calls. Used only in the
    process that opened it: in a child forked since, every call raises ``RuntimeError``."""

    def __init__(self, path: str) -> None: ...
    def collect(
        self,
        prefixes: Sequence[str] = ...,
        process_metrics: bool = False,
        created: bool = False,
        exemplars: bool = False,
    ) -> List[Tuple[str, str, str, Optional[List[float]], Union[List[_Series], List[_CreatedSeries]]]]: ...
    def render(
        self,
        openmetrics: bool = False,
        prefixes: Sequence[str] = ...,
        self_metrics: bool = False,
        escaping: str = "underscores",
        process_metrics: bool = False,
        created: bool = True,
    ) -> bytes: ...
    def render_prometheus_client(
        self, prefixes: List[str], process_metrics: bool, sums_first: bool, two_digit_exponent: bool
    ) -> Optional[bytes]: ...
    def last_report(self) -> Dict[str, Any]: ...

class FastLabels:
    """The state behind a labelled ``prometheus_client`` metric's native ``labels`` once the
    drop-in is installed (the ``__self__`` of what ``fast_labels`` returns)."""

def fast_labels(metric: Any, fallback: Any) -> Callable[..., Any]:
    """``labels`` for ``metric``: a label set already in its ``_metrics`` is found natively;
    every other call is ``fallback(metric, *labelvalues, **labelkwargs)``."""

class CallFloor:
    """Empty methods shaped as the metrics' hot ones: the floor benches/compare/python_api.py
    measures the write path against."""

    def __init__(self) -> None: ...
    def inc(self, amount: float = 1.0, exemplar: Optional[Mapping[str, str]] = None) -> None: ...
    def observe(self, amount: float, exemplar: Optional[Mapping[str, str]] = None) -> None: ...
    def labels(self: _Self, *values: Any, **by_name: Any) -> _Self: ...
