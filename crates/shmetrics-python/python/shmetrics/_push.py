"""Pushing the merged metrics directory to a Prometheus Pushgateway: ``prometheus_client``'s
``push_to_gateway`` and ``pushadd_to_gateway``, for every process of the directory at once
(a batch job with several processes pushes one merged group)."""

from __future__ import annotations

import base64
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Dict, Iterable, Optional

_log = logging.getLogger("shmetrics")

CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"


def _segment(name: str, value: str) -> str:
    """``/NAME/VALUE``, or ``/NAME@base64/ENCODED`` for a value with a ``/`` or empty, as
    the Pushgateway (and ``prometheus_client``) encodes it."""
    if "/" in value or not value:
        encoded = base64.urlsafe_b64encode(value.encode()).decode()
        return f"/{name}@base64/{encoded or '='}"
    return f"/{name}/{urllib.parse.quote_plus(value)}"


def _url(gateway: str, job: str, grouping_key: Optional[Dict[str, str]]) -> str:
    if not gateway.startswith(("http://", "https://")):
        gateway = f"http://{gateway}"
    if not job:
        raise ValueError("the job name is empty")
    url = gateway.rstrip("/") + "/metrics" + _segment("job", job)
    for name, value in (grouping_key or {}).items():
        if name == "job":
            raise ValueError("grouping_key cannot hold job: it is the job argument")
        url += _segment(name, str(value))
    return url


def _push(method: str, gateway: str, job: str, grouping_key: Optional[Dict[str, str]], path: Optional[str],
          prefixes: Iterable[str], timeout: Optional[float], retries: int) -> None:
    from . import generate_latest

    url = _url(gateway, job, grouping_key)
    body = generate_latest(path, prefixes=prefixes)
    wait = 0.5
    attempt = 0
    while True:
        attempt += 1
        request = urllib.request.Request(url, data=body, method=method,
                                         headers={"Content-Type": CONTENT_TYPE_LATEST})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
            return
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace").strip()[:500]
            if 400 <= e.code < 500:
                raise OSError(f"the pushgateway refused the push to {url}: HTTP {e.code}: {text}") from e
            last = f"HTTP {e.code}: {text}"
        except (urllib.error.URLError, OSError) as e:
            last = str(getattr(e, "reason", e))
        if attempt > retries:
            raise OSError(f"cannot push to {url} after {attempt} attempts: {last}")
        _log.warning("shmetrics: push to %s failed (%s); retrying in %.1f s", url, last, wait)
        time.sleep(wait)
        wait = min(wait * 2, 30.0)


def push_to_gateway(gateway: str, job: str, grouping_key: Optional[Dict[str, str]] = None,
                    path: Optional[str] = None, prefixes: Iterable[str] = (), timeout: Optional[float] = 30,
                    retries: int = 3) -> None:
    """Replaces the group ``job`` (with ``grouping_key``) on the Pushgateway at ``gateway``
    (``host:port`` or a URL) with the merged metrics directory (default
    ``PROMETHEUS_MULTIPROC_DIR``), filtered by ``prefixes``: ``prometheus_client``'s
    ``push_to_gateway`` with the directory in place of a registry. Connection errors,
    timeouts and 5xx answers are retried ``retries`` times (waiting 0.5 s, doubling); a 4xx
    answer raises ``OSError`` at once, as every exhausted retry does."""
    _push("PUT", gateway, job, grouping_key, path, prefixes, timeout, retries)


def pushadd_to_gateway(gateway: str, job: str, grouping_key: Optional[Dict[str, str]] = None,
                       path: Optional[str] = None, prefixes: Iterable[str] = (), timeout: Optional[float] = 30,
                       retries: int = 3) -> None:
    """As :func:`push_to_gateway` with ``POST``: replaces only the metrics with the pushed
    names in the group."""
    _push("POST", gateway, job, grouping_key, path, prefixes, timeout, retries)
