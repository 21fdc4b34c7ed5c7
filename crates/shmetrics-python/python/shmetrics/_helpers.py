"""Context managers and decorators behind ``time()``, ``track_inprogress()`` and
``count_exceptions()``: the same behaviour as ``prometheus_client.context_managers``, without
depending on ``prometheus_client``."""

from __future__ import annotations

import functools
from timeit import default_timer
from types import TracebackType
from typing import Any, Callable, Optional, Tuple, Type, TypeVar, Union

F = TypeVar("F", bound=Callable[..., Any])

ExceptionTypes = Union[Type[BaseException], Tuple[Type[BaseException], ...]]


def _decorate(manager_for_call: Callable[[], Any], f: F) -> F:
    @functools.wraps(f)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with manager_for_call():
            return f(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


class ExceptionCounter:
    """Increments a counter when an exception of the given type leaves the block."""

    def __init__(self, counter: Any, exception: ExceptionTypes) -> None:
        self._counter = counter
        self._exception = exception

    def __enter__(self) -> None:
        pass

    def __exit__(
        self,
        typ: Optional[Type[BaseException]],
        value: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> bool:
        if isinstance(value, self._exception):
            self._counter.inc()
        return False

    def __call__(self, f: F) -> F:
        return _decorate(lambda: self, f)


class InprogressTracker:
    """Increments a gauge on entry and decrements it on exit."""

    def __init__(self, gauge: Any) -> None:
        self._gauge = gauge

    def __enter__(self) -> None:
        self._gauge.inc()

    def __exit__(
        self,
        typ: Optional[Type[BaseException]],
        value: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self._gauge.dec()

    def __call__(self, f: F) -> F:
        return _decorate(lambda: self, f)


class Timer:
    """Calls ``metric.<callback_name>(seconds)`` with the duration of the block."""

    def __init__(self, metric: Any, callback_name: str) -> None:
        self._metric = metric
        self._callback_name = callback_name
        self.duration: Optional[float] = None

    def _new_timer(self) -> "Timer":
        return self.__class__(self._metric, self._callback_name)

    def __enter__(self) -> "Timer":
        self._start = default_timer()
        return self

    def __exit__(
        self,
        typ: Optional[Type[BaseException]],
        value: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        # The clock can go backwards.
        self.duration = max(default_timer() - self._start, 0)
        getattr(self._metric, self._callback_name)(self.duration)

    def labels(self, *args: Any, **kwargs: Any) -> None:
        """Times into the child with these labels (for a timer of a labelled metric)."""
        self._metric = self._metric.labels(*args, **kwargs)

    def __call__(self, f: F) -> F:
        # A new timer per call: thread-safe and reentrant.
        return _decorate(self._new_timer, f)
