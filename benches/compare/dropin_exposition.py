#!/usr/bin/env python3
"""``generate_latest`` through unchanged prometheus_client code, with the drop-in installed:
the native render behind it against prometheus_client's own renderer over the same
collection, and against shmetrics' native ``generate_latest``, in the same run.

    bash ci/python-test.sh                 # builds shmetrics into .venv (once)
    cargo build --release -p shmetrics     # for `shmetrics generate`
    .venv/bin/python benches/compare/dropin_exposition.py [--quick] [--out FILE]

Part ``directory``: ``shmetrics generate --stay`` leaves 128 writer processes of 1,000
series each running (``--processes``, ``--series``). In this process, with the drop-in
installed, ``registry = CollectorRegistry(); MultiProcessCollector(registry, path=DIR)``,
then per round, in rotated order:

- ``dropin``: ``prometheus_client.generate_latest(registry)``: what an unchanged view calls;
  the drop-in renders natively;
- ``dropin_python``: prometheus_client's own ``generate_latest`` (the one the drop-in
  replaced) over the drop-in's ``collect``: what the drop-in did before;
- ``native``: ``shmetrics.generate_latest(DIR)``, no registry;
- ``dropin_om``, ``dropin_om_python``, ``native_om``: the same three for OpenMetrics
  (``prometheus_client.openmetrics.exposition.generate_latest``, ``openmetrics=True``).

``dropin`` and ``dropin_python`` (and their OpenMetrics pair) must give the same bytes, every
round. Reported: medians of
the rounds' times and of the per-round ratios.

Part ``gunicorn``: three gunicorn servers (4 sync workers each, ``--preload``) run the same
WSGI app: a request counter (path, method, code), a latency histogram (path, the default
buckets) and an in-progress gauge (``livesum``), and a ``/metrics`` view that builds a
``CollectorRegistry``, attaches ``MultiProcessCollector`` and calls ``generate_latest``:
``plain`` (prometheus_client's multiprocess mode), ``dropin`` (``SHMETRICS_PROMETHEUS_CLIENT=1``)
and ``dropin_python`` (the same, its view calling the replaced ``generate_latest``). Each
gets the same traffic first (``--paths`` paths, 8 requests each, spread over its workers by
the kernel), then ``/metrics`` is requested from the three in turn, one new connection per
request. Reported per server: the view's own time (the app measures it and returns it in a
header) and the whole request's, medians; ratios ``plain / x``; and the whole request for an
empty body (``/empty``, the servers in turn): gunicorn's own cost, the floor of any view.
"""

import argparse
import contextlib
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402

APP = textwrap.dedent(
    """
    import os, time
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client import generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    if os.environ.get("VIEW") == "dropin_python":
        from shmetrics.prometheus_client import _originals
        generate_latest = _originals[("exposition", "generate_latest")]

    REQUESTS = Counter("app_requests", "Requests.", ["path", "method", "code"])
    LATENCY = Histogram("app_request_duration_seconds", "Request latency.", ["path"])
    IN_PROGRESS = Gauge("app_requests_in_progress", "Requests in progress.",
                        multiprocess_mode="livesum")

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/empty":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b""]
        if environ["PATH_INFO"] == "/metrics":
            started = time.perf_counter()
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            body = generate_latest(registry)
            took = time.perf_counter() - started
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST),
                                      ("X-View-Seconds", repr(took))])
            return [body]
        with IN_PROGRESS.track_inprogress():
            REQUESTS.labels(environ["PATH_INFO"], environ["REQUEST_METHOD"], "200").inc()
            LATENCY.labels(environ["PATH_INFO"]).observe(0.0042)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    """
)

GUNICORN_CONF = textwrap.dedent(
    """
    from prometheus_client import multiprocess

    def child_exit(server, worker):
        multiprocess.mark_process_dead(worker.pid)
    """
)

SERVERS = ["plain", "dropin", "dropin_python"]
SUBJECTS = ["dropin", "dropin_python", "native", "dropin_om", "dropin_om_python", "native_om"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path):
    """GET on a new connection: (seconds, status, headers, body)."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return time.perf_counter() - started, resp.status, resp, body


def directory_part(args, cleanup):
    import shmetrics
    import shmetrics.prometheus_client as dropin

    target = common.target_dir()
    shm = os.path.join(target, "release", "shmetrics")
    if not os.path.exists(shm):
        sys.exit(f"{shm} is missing: cargo build --release -p shmetrics")
    directory = tempfile.mkdtemp(prefix="dropin-exposition-")
    cleanup.dirs.append(directory)
    started = time.monotonic()
    common.start_generate(shm, directory, ["--processes", str(args.processes),
                                           "--series", str(args.series), "--ops", "2"], cleanup)
    print(f"directory: {args.processes} live writers x {args.series} series "
          f"({time.monotonic() - started:.0f} s to start)", file=sys.stderr)

    dropin.install()
    try:
        # Imported once installed, as an application does.
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
        from prometheus_client.openmetrics import exposition as om

        python_path = dropin._originals[("exposition", "generate_latest")]
        python_om = dropin._originals[("openmetrics", "generate_latest")]
        calls = {
            "dropin": lambda: generate_latest(registry),
            "dropin_python": lambda: python_path(registry),
            "native": lambda: shmetrics.generate_latest(directory),
            "dropin_om": lambda: om.generate_latest(registry),
            "dropin_om_python": lambda: python_om(registry),
            "native_om": lambda: shmetrics.generate_latest(directory, openmetrics=True),
        }
        assert dropin._native_plan(registry) is not None, "the drop-in's native path refused"
        for call in calls.values():   # warm: readers opened, metadata parsed
            call()
        times = {s: [] for s in SUBJECTS}
        size = 0
        for r in range(args.rounds):
            bodies = {}
            for k in range(len(SUBJECTS)):
                subject = SUBJECTS[(r + k) % len(SUBJECTS)]
                best = None
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    body = calls[subject]()
                    took = time.perf_counter() - t0
                    best = took if best is None else min(best, took)
                bodies[subject] = body
                times[subject].append(best)
            if bodies["dropin"] != bodies["dropin_python"] or bodies["dropin_om"] != bodies["dropin_om_python"]:
                raise SystemExit("the drop-in's native render differs from prometheus_client's")
            size = len(bodies["dropin"])
    finally:
        dropin.uninstall()
        cleanup.stop_pids()
    result = {
        "processes": args.processes, "series": args.series, "bytes": size,
        "ms": {s: statistics.median(times[s]) * 1e3 for s in SUBJECTS},
        "dropin_python_over_dropin": statistics.median(
            p / d for p, d in zip(times["dropin_python"], times["dropin"])),
        "dropin_over_native": statistics.median(
            d / n for d, n in zip(times["dropin"], times["native"])),
        "dropin_om_python_over_dropin_om": statistics.median(
            p / d for p, d in zip(times["dropin_om_python"], times["dropin_om"])),
        "dropin_om_over_native_om": statistics.median(
            d / n for d, n in zip(times["dropin_om"], times["native_om"])),
    }
    ms = result["ms"]
    print(f"directory ({size} bytes, medians of {args.rounds} rounds, best of {args.repeat}): "
          f"dropin {ms['dropin']:.2f} ms, dropin_python {ms['dropin_python']:.2f} ms, "
          f"native {ms['native']:.2f} ms; dropin_python/dropin "
          f"{result['dropin_python_over_dropin']:.1f}x, dropin/native "
          f"{result['dropin_over_native']:.2f}x")
    print(f"directory, OpenMetrics: dropin {ms['dropin_om']:.2f} ms, dropin_python "
          f"{ms['dropin_om_python']:.2f} ms, native {ms['native_om']:.2f} ms; dropin_python/dropin "
          f"{result['dropin_om_python_over_dropin_om']:.1f}x, dropin/native "
          f"{result['dropin_om_over_native_om']:.2f}x")
    return result


def gunicorn_part(args, cleanup):
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    if not os.path.exists(gunicorn):
        sys.exit(f"{gunicorn} is missing: bash ci/python-test.sh installs it")
    work = tempfile.mkdtemp(prefix="dropin-gunicorn-")
    cleanup.dirs.append(work)
    with open(os.path.join(work, "app.py"), "w") as f:
        f.write(APP)
    with open(os.path.join(work, "gunicorn.conf.py"), "w") as f:
        f.write(GUNICORN_CONF)
    ports = {}
    for server in SERVERS:
        metrics = os.path.join(work, f"metrics-{server}")
        os.mkdir(metrics)
        env = {k: v for k, v in os.environ.items()
               if k not in ("SHMETRICS_PROMETHEUS_CLIENT", "PROMETHEUS_MULTIPROC_DIR", "VIEW")}
        env["PROMETHEUS_MULTIPROC_DIR"] = metrics
        env["VIEW"] = server
        if server != "plain":
            env["SHMETRICS_PROMETHEUS_CLIENT"] = "1"
        ports[server] = free_port()
        proc = subprocess.Popen(
            [gunicorn, "--preload", "-w", "4", "-c", "gunicorn.conf.py",
             "-b", f"127.0.0.1:{ports[server]}", "app:app"],
            cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        cleanup.procs.append(proc)
    for server, port in ports.items():
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                if get(port, "/ready")[1] == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"gunicorn ({server}) did not start")
            time.sleep(0.1)
    for i in range(args.paths * 8):
        for port in ports.values():
            get(port, f"/api/v1/resource{i % args.paths}")
    first = {s: get(p, "/metrics")[3] for s, p in ports.items()}
    if first["dropin"] != first["dropin_python"]:
        raise SystemExit("the drop-in's native render differs from prometheus_client's")
    view = {s: [] for s in SERVERS}
    whole = {s: [] for s in SERVERS}
    empty = []
    for r in range(args.requests):
        for k in range(len(SERVERS)):
            server = SERVERS[(r + k) % len(SERVERS)]
            took, status, resp, _ = get(ports[server], "/metrics")
            assert status == 200
            view[server].append(float(resp.getheader("X-View-Seconds")))
            whole[server].append(took)
        empty.append(get(ports[SERVERS[r % len(SERVERS)]], "/empty")[0])
    result = {
        "paths": args.paths, "requests": args.requests,
        "bytes": {s: len(b) for s, b in first.items()},
        "view_ms": {s: statistics.median(view[s]) * 1e3 for s in SERVERS},
        "request_ms": {s: statistics.median(whole[s]) * 1e3 for s in SERVERS},
        "empty_request_ms": statistics.median(empty) * 1e3,
    }
    for key in ("view_ms", "request_ms"):
        v = result[key]
        result[f"{key}_plain_over"] = {s: v["plain"] / v[s] for s in SERVERS[1:]}
        print(f"gunicorn {key} (median of {args.requests}): "
              + ", ".join(f"{s} {v[s]:.3f}" for s in SERVERS)
              + "; plain/dropin " + f"{v['plain'] / v['dropin']:.1f}x, plain/dropin_python "
              + f"{v['plain'] / v['dropin_python']:.1f}x")
    floor = result["empty_request_ms"]
    print(f"gunicorn request for an empty body (the floor, any server): {floor:.3f} ms; "
          f"a view costing nothing would be plain/floor = "
          f"{result['request_ms']['plain'] / floor:.1f}x")
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small run that checks the script")
    ap.add_argument("--processes", type=int, default=128)
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--repeat", type=int, default=5, help="calls per subject and round (best kept)")
    ap.add_argument("--paths", type=int, default=50, help="paths the gunicorn apps are sent")
    ap.add_argument("--requests", type=int, default=300, help="/metrics requests per server")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    if args.quick:
        args.processes, args.series, args.rounds, args.repeat = 4, 100, 3, 2
        args.paths, args.requests = 5, 20
    common.interrupt_on_signals()
    cleanup = common.Cleanup()
    try:
        load_before = os.getloadavg()
        report = {"directory": directory_part(args, cleanup),
                  "gunicorn": gunicorn_part(args, cleanup)}
        report["machine"] = common.machine_info(load_before)
    finally:
        cleanup.all()
    if args.out:
        common.write_report(args.out, report)


if __name__ == "__main__":
    main()
