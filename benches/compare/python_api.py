#!/usr/bin/env python3
"""Python write path: shmetrics' native API and its prometheus_client drop-in against
prometheus_client in multiprocess mode and in single-process mode, in the same run.

    bash ci/python-test.sh                     # builds shmetrics into .venv (once)
    .venv/bin/python benches/compare/python_api.py [--quick] [--out python_api.json]

Operations (what application code writes):

- ``inc``: ``c.inc()`` on an unlabelled counter;
- ``labels_inc``: ``c.labels("200", "GET").inc()``, a label set seen before;
- ``observe``: ``h.observe(0.3)`` on a histogram with the default 15 buckets.

Each configuration runs in a process of its own (prometheus_client picks its mode at
import; the drop-in patches it): ``native`` (``shmetrics.Counter`` ...), ``dropin``
(prometheus_client after ``shmetrics.prometheus_client.install()``), ``mp``
(prometheus_client with ``PROMETHEUS_MULTIPROC_DIR``), ``single`` (prometheus_client
without it) and ``floor`` (``shmetrics._native.CallFloor``: native methods with the same
signatures that do nothing, ``labels`` returning the object itself: the cost of a call into
a PyO3 method. The native write methods and the drop-in's ``labels`` answer their common
call through entry points of their own that skip PyO3's argument handling
(``crates/shmetrics-python/src/fastcall.rs``), so they can run below it). Each process times every operation with ``timeit`` (best of ``--repeat`` runs of
``--number`` calls, ns per call, the loop included); the configurations take turns for
``--rounds`` rounds and the median round is reported, so load on the machine hits all of
them alike. Ratios are ``mp / x`` and ``single / x``: how many times faster x is; ``x - floor`` is
what x costs above an empty native call.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import timeit

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

CONFIGS = ["native", "dropin", "mp", "single", "floor"]
OPS = ["inc", "labels_inc", "observe"]
STATEMENTS = {
    "inc": "c.inc()",
    "labels_inc": "cl.labels('200', 'GET').inc()",
    "observe": "h.observe(0.3)",
}


def child(config, directory, number, repeat):
    """Runs in a fresh interpreter: sets up one configuration and times every operation."""
    if config not in ("single", "floor"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    else:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if config == "floor":
        from shmetrics import _native

        floor = _native.CallFloor()
        names = {"c": floor, "cl": floor, "h": floor}
    elif config == "native":
        import shmetrics as api

        kwargs = {}
    else:
        if config == "dropin":
            import shmetrics.prometheus_client

            shmetrics.prometheus_client.install()
        import prometheus_client as api

        kwargs = {"registry": None}
    if config != "floor":
        names = {
            "c": api.Counter("requests", "Requests.", **kwargs),
            "cl": api.Counter("requests_by_code", "Requests.", ["code", "method"], **kwargs),
            "h": api.Histogram("latency_seconds", "Latency.", **kwargs),
        }
    if config == "dropin":
        assert type(names["c"]._value).__module__ == "shmetrics._native", "drop-in not active"
    if config == "mp":
        assert names["c"]._value._multiprocess, "multiprocess mode not active"
    result = {}
    for op in OPS:
        timer = timeit.Timer(STATEMENTS[op], globals=names)
        timer.timeit(number=min(number, 10000))  # warm-up: child creation, caches
        best = min(timer.repeat(repeat=repeat, number=number))
        result[op] = best / number * 1e9
    print(json.dumps(result))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke check: 2 rounds of fewer calls")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--number", type=int, default=200_000, help="calls per timing")
    p.add_argument("--repeat", type=int, default=5, help="timings per operation (best kept)")
    p.add_argument("--python", default=sys.executable, help="interpreter with shmetrics and prometheus_client")
    p.add_argument("--out", help="write every figure as JSON here")
    p.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.dir, args.number, args.repeat)
    if args.quick:
        args.rounds, args.number, args.repeat = 2, 20_000, 3

    load_before = os.getloadavg()
    runs = {c: [] for c in CONFIGS}
    with tempfile.TemporaryDirectory(prefix="shmetrics-pybench-") as tmp:
        for r in range(args.rounds):
            for config in CONFIGS:
                directory = os.path.join(tmp, f"{config}-{r}")
                os.mkdir(directory)
                env = dict(os.environ)
                env.pop("SHMETRICS_PROMETHEUS_CLIENT", None)
                out = subprocess.run(
                    [args.python, os.path.abspath(__file__), "--child", config, "--dir", directory,
                     "--number", str(args.number), "--repeat", str(args.repeat)],
                    env=env, check=True, capture_output=True, text=True,
                ).stdout
                runs[config].append(json.loads(out))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    median = {c: {op: statistics.median(run[op] for run in runs[c]) for op in OPS} for c in CONFIGS}
    print(f"{'operation':<12}" + "".join(f"{c:>10}" for c in CONFIGS)
          + "   mp/native  mp/dropin  single/native  single/dropin  native-floor  dropin-floor")
    for op in OPS:
        m = {c: median[c][op] for c in CONFIGS}
        print(f"{op:<12}" + "".join(f"{m[c]:>8.1f}ns" for c in CONFIGS)
              + f"   {m['mp'] / m['native']:>8.1f}x {m['mp'] / m['dropin']:>8.1f}x"
              + f" {m['single'] / m['native']:>12.1f}x {m['single'] / m['dropin']:>12.1f}x"
              + f" {m['native'] - m['floor']:>11.1f}ns {m['dropin'] - m['floor']:>11.1f}ns")
    if args.out:
        import common

        report = {
            "command": " ".join([os.path.relpath(__file__)] + sys.argv[1:]),
            "machine": common.machine_info(load_before),
            "rounds": args.rounds,
            "number": args.number,
            "repeat": args.repeat,
            "median_ns": median,
            "runs_ns": runs,
        }
        common.write_report(args.out, report)


if __name__ == "__main__":
    main()
