#!/usr/bin/env python3
"""Scrape latency of `shmetrics serve` beside prometheus_client's MultiProcessCollector.

For each engine count N (default 4, 16, 64):

1. shmetrics: a fresh directory, `shmetrics generate --workload vllm --processes N --ops OPS
   --stay` (N engine processes, each with the complete vLLM metric set, labelled
   engine="<i>", after OPS engine steps), `shmetrics serve --no-self-metrics` on
   127.0.0.1:0, and `scrape-client` (benches/scrape_client.rs) timing COUNT scrapes after
   WARMUP untimed ones.

2. prometheus_client, same logical data: `shmetrics dump --no-self-metrics` of that
   directory is parsed into families (name, type, help, label names, bucket bounds) and
   series (label values and values). N writer processes (separate interpreters, started a
   few at a time) each register every family with prometheus_client in multiprocess mode,
   with the gauge's multiprocess_mode from workloads/vllm_metrics.json, in a fresh
   PROMETHEUS_MULTIPROC_DIR. Writer i creates the series whose engine label is "i" and every
   series without an engine label (as each shmetrics engine process does), so both sides
   hold N copies of the engine-less series and one copy of each engine's series: equal
   cardinality and equal per-process layout. Values: writer i sets its engine's series to
   the dumped value; an engine-less counter, sum/livesum gauge or histogram gets its dumped
   value in writer 0 and zero elsewhere (so the merge gives the dumped value), other gauges
   get the dumped value in every writer. A histogram series observes each finite bucket's
   upper bound as many times as that bucket counts (and a value above the last bound for
   +Inf), so bucket counts are exact and sums approximate. The writers then exit: their
   .db files stay, which is all MultiProcessCollector reads.

   Timed: `generate_latest(registry)` with a fresh `CollectorRegistry()` +
   `MultiProcessCollector(registry)` per scrape (the documented setup), in this process.
   Also over HTTP: a separate process serves `prometheus_client.start_http_server` on
   127.0.0.1:0 with a CollectorRegistry + MultiProcessCollector, timed by the same
   scrape-client as shmetrics.

3. Both outputs are checked to hold the same samples (names and label sets; `le` compared
   as numbers) with the same values (histogram sums excepted), then a table is printed and
   everything is written as JSON to --out.

Every process started here is stopped and every temporary directory removed, also on errors
and on SIGINT/SIGTERM.

Run from the repository root after `cargo build --release -p shmetrics -p shmetrics-benches`:

    python3 benches/compare/scrape_latency.py --out scrape_latency.json
    python3 benches/compare/scrape_latency.py --quick        # N = 4, 50 scrapes

The script needs prometheus_client (ci/requirements.txt); when the interpreter running it
lacks it, it re-executes itself with --python PY or, by default, the repository's
.venv/bin/python (created by ci/test.sh).
"""

import argparse
import json
import math
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time

from common import (write_report, REPO, Cleanup, child_env, compare_outputs, ensure_prometheus_client,
                    find_binaries, interrupt_on_signals, machine_info, parse_exposition,
                    run_pool, scrape_client, start_generate, start_serve, stop_proc,
                    target_dir, time_generate_latest)

REEXEC_ENV = "SHMETRICS_SCRAPE_LATENCY_REEXEC"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", default="4,16,64",
                   help="comma-separated engine counts (default 4,16,64)")
    p.add_argument("--count", type=int, default=200, help="timed scrapes per side (default 200)")
    p.add_argument("--warmup", type=int, default=5, help="untimed scrapes first (default 5)")
    p.add_argument("--ops", type=int, default=200, help="engine steps per engine (default 200)")
    p.add_argument("--quick", action="store_true",
                   help="smoke check: --engines 4 --count 50")
    p.add_argument("--no-http-python", action="store_true",
                   help="skip the prometheus_client start_http_server measurement")
    p.add_argument("--accept", default=None,
                   help="Accept header scrape-client sends (default none: text format 0.0.4)")
    p.add_argument("--out", default=None, help="write the results as JSON to this file")
    p.add_argument("--python", default=None,
                   help="interpreter with prometheus_client (default: .venv/bin/python)")
    p.add_argument("--target-dir", default=None,
                   help="cargo target directory (default $CARGO_TARGET_DIR or ./target)")
    p.add_argument("--shmetrics", default=None, help="shmetrics binary (default TARGET/release)")
    p.add_argument("--scrape-client", default=None,
                   help="scrape-client binary (default TARGET/release)")
    p.add_argument("--writer-parallelism", type=int, default=0,
                   help="prometheus_client writers started at once (default 2 x CPUs)")
    # Internal roles of this script, run in child interpreters.
    p.add_argument("--role", choices=["writer", "py-server"], help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--index", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.engines = "4"
        args.count = 50
    args.engines = [int(x) for x in str(args.engines).split(",") if x.strip()]
    if not args.engines or min(args.engines) < 1 or args.count < 1 or args.warmup < 0:
        p.error("need engine counts >= 1, --count >= 1, --warmup >= 0")
    return args


# ---------------------------------------------------------------------------------------
# From a shmetrics dump to a spec the prometheus_client writers replay.
# ---------------------------------------------------------------------------------------

def gauge_modes():
    path = os.path.join(REPO, "crates", "shmetrics-workload", "workloads", "vllm_metrics.json")
    with open(path, encoding="utf-8") as f:
        metrics = json.load(f)["metrics"]
    return {m["name"]: m.get("multiprocess_mode", "all") for m in metrics if m["type"] == "gauge"}


def build_spec(families, modes):
    """Families with their series, as the writers register them."""
    spec = []
    for fam in families:
        typ = fam["type"]
        name = fam["name"]
        entry = {"type": typ, "help": fam["help"]}
        series = {}  # label tuple (without le/pid) -> payload
        labelnames = None
        bounds = []
        for sname, labels, value in fam["samples"]:
            base = {k: v for k, v in labels.items() if k not in ("le", "pid")}
            if labelnames is None:
                labelnames = sorted(base)
            key = tuple(base.get(k, "") for k in labelnames)
            if typ == "histogram":
                s = series.setdefault(key, {"le": {}, "sum": 0.0})
                if sname.endswith("_bucket"):
                    s["le"][float(labels["le"])] = value
                elif sname.endswith("_sum"):
                    s["sum"] = value
            elif typ == "summary":
                s = series.setdefault(key, {"count": 0.0, "sum": 0.0})
                if sname.endswith("_count"):
                    s["count"] = value
                elif sname.endswith("_sum"):
                    s["sum"] = value
            else:
                series[key] = value
        labelnames = labelnames or []
        if typ == "counter":
            entry["name"] = name[:-len("_total")] if name.endswith("_total") else name
        elif typ in ("gauge", "histogram", "summary"):
            entry["name"] = name
        else:
            raise ValueError(f"family {name}: type {typ} has no prometheus_client equivalent")
        if typ == "gauge":
            entry["mode"] = modes.get(name, "all")
        if typ == "histogram":
            all_bounds = sorted({b for s in series.values() for b in s["le"]})
            bounds = [b for b in all_bounds if not math.isinf(b)]
            entry["buckets"] = bounds
            for key, s in series.items():
                cumulative = [s["le"].get(b, 0.0) for b in bounds] + [s["le"].get(math.inf, 0.0)]
                counts = [int(c - (cumulative[i - 1] if i else 0)) for i, c in enumerate(cumulative)]
                series[key] = {"counts": counts, "sum": s["sum"]}
        entry["labelnames"] = labelnames
        engine_at = labelnames.index("engine") if "engine" in labelnames else None
        entry["series"] = [
            [None if engine_at is None else key[engine_at], list(key), payload]
            for key, payload in series.items()
        ]
        spec.append(entry)
    return spec


def count_series(spec):
    return sum(len(f["series"]) for f in spec)


# ---------------------------------------------------------------------------------------
# Child roles.
# ---------------------------------------------------------------------------------------

def writer_main(spec_path, index):
    """One prometheus_client writer process (PROMETHEUS_MULTIPROC_DIR set by the parent)."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary

    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    me = str(index)
    registry = CollectorRegistry()
    for fam in spec:
        typ, labelnames = fam["type"], fam["labelnames"]
        kw = {"labelnames": labelnames, "registry": registry}
        if typ == "counter":
            metric = Counter(fam["name"], fam["help"], **kw)
        elif typ == "gauge":
            metric = Gauge(fam["name"], fam["help"], multiprocess_mode=fam["mode"], **kw)
        elif typ == "histogram":
            metric = Histogram(fam["name"], fam["help"], buckets=fam["buckets"], **kw)
        else:
            metric = Summary(fam["name"], fam["help"], **kw)
        bounds = fam.get("buckets", [])
        for engine, values, payload in fam["series"]:
            if engine is not None and engine != me:
                continue
            # Engine-less series: additive ones carry their value in writer 0 only.
            carries = engine is not None or index == 0
            child = metric.labels(*values) if labelnames else metric
            if typ == "counter":
                child.inc(payload if carries else 0.0)
            elif typ == "gauge":
                additive = fam["mode"] in ("sum", "livesum")
                child.set(payload if (carries or not additive) else 0.0)
            elif typ == "histogram":
                if carries:
                    above = (bounds[-1] * 2 + 1) if bounds else 1.0
                    for i, n in enumerate(payload["counts"]):
                        v = bounds[i] if i < len(bounds) else above
                        for _ in range(n):
                            child.observe(v)
            else:
                if carries and payload["count"] > 0:
                    n = int(payload["count"])
                    for _ in range(n):
                        child.observe(payload["sum"] / n)
    return 0


def py_server_main():
    """Serves the multiprocess directory with start_http_server; prints the port."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    httpd, _thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    print(httpd.server_port, flush=True)
    # Serve until the parent closes stdin or sends SIGTERM.
    sys.stdin.read()
    httpd.shutdown()
    return 0


# ---------------------------------------------------------------------------------------
# Measurement.
# ---------------------------------------------------------------------------------------

def scrape(client, url, args):
    return scrape_client(client, url, args.count, args.warmup, args.accept)


def run_writers(py, spec_path, n, py_dir, parallelism, cleanup):
    env = child_env(REEXEC_ENV, PROMETHEUS_MULTIPROC_DIR=py_dir)
    commands = [[py, os.path.abspath(__file__), "--role", "writer", "--spec", spec_path,
                 "--index", str(i)] for i in range(n)]
    run_pool(commands, parallelism, cleanup, env=env, label="writer")


def start_py_server(py, py_dir, cleanup):
    env = child_env(REEXEC_ENV, PROMETHEUS_MULTIPROC_DIR=py_dir)
    proc = subprocess.Popen([py, os.path.abspath(__file__), "--role", "py-server"], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    cleanup.procs.append(proc)
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline().strip() if ready else ""
    if not line.isdigit():
        raise RuntimeError(f"prometheus_client server did not start (got {line!r})")
    return proc, f"http://127.0.0.1:{line}/metrics"


def measure(n, args, bins, py, cleanup, modes):
    shm, client = bins
    tmp = tempfile.mkdtemp(prefix=f"shmetrics-scrape-latency-{n}-")
    cleanup.dirs.append(tmp)
    shm_dir = os.path.join(tmp, "shmetrics")
    py_dir = os.path.join(tmp, "prometheus_client")
    os.mkdir(shm_dir)
    os.mkdir(py_dir)
    result = {"engines": n}

    # --- shmetrics -------------------------------------------------------------------
    t0 = time.monotonic()
    pids = start_generate(shm, shm_dir, ["--workload", "vllm", "--processes", str(n),
                                         "--ops", str(args.ops)], cleanup)
    if len(pids) != n:
        raise RuntimeError(f"generate printed {len(pids)} pids, expected {n}")
    result["shmetrics_setup_s"] = time.monotonic() - t0
    dump = subprocess.run([shm, "dump", "--dir", shm_dir, "--no-self-metrics"],
                          check=True, capture_output=True, text=True, timeout=120).stdout
    serve, url = start_serve(shm, shm_dir, cleanup)
    sm = scrape(client, url, args)
    stop_proc(serve, cleanup)
    cleanup.stop_pids()
    families = parse_exposition(dump)
    spec = build_spec(families, modes)
    shm_samples = sum(len(f["samples"]) for f in families)
    result["families"] = len(families)
    result["series"] = count_series(spec)
    result["samples"] = shm_samples
    result["shmetrics"] = sm
    if sm["samples"] != shm_samples:
        raise RuntimeError(f"serve returned {sm['samples']} samples, dump {shm_samples}")
    print(f"  [{n} engines] shmetrics: setup {result['shmetrics_setup_s']:.1f} s, "
          f"{result['series']} series / {shm_samples} samples, "
          f"p50 {sm['p50_ms']:.3f} ms, p99 {sm['p99_ms']:.3f} ms", flush=True)

    # --- prometheus_client -----------------------------------------------------------
    spec_path = os.path.join(tmp, "spec.json")
    with open(spec_path, "w", encoding="utf-8") as f:
        json.dump(spec, f)
    parallelism = args.writer_parallelism or 2 * (os.cpu_count() or 1)
    t0 = time.monotonic()
    run_writers(py, spec_path, n, py_dir, parallelism, cleanup)
    result["python_setup_s"] = time.monotonic() - t0
    result["python_files"] = len(os.listdir(py_dir))
    stats, body = time_generate_latest(py_dir, args.count, args.warmup)
    text = body.decode("utf-8")
    py_families = parse_exposition(text)
    stats["body_bytes"] = len(body)
    stats["samples"] = sum(len(f["samples"]) for f in py_families)
    result["python_generate_latest"] = stats
    summed = {f["name"] for f in families if f["type"] in ("histogram", "summary")}
    result["values_checked"] = compare_outputs(families, py_families, summed)
    print(f"  [{n} engines] prometheus_client: setup {result['python_setup_s']:.1f} s "
          f"({result['python_files']} files), generate_latest p50 {stats['p50_ms']:.3f} ms, "
          f"p99 {stats['p99_ms']:.3f} ms", flush=True)

    if not args.no_http_python:
        server, purl = start_py_server(py, py_dir, cleanup)
        ph = scrape(client, purl, args)
        stop_proc(server, cleanup)
        if ph["samples"] != stats["samples"]:
            raise RuntimeError(f"start_http_server returned {ph['samples']} samples, "
                               f"generate_latest {stats['samples']}")
        result["python_http"] = ph
        print(f"  [{n} engines] prometheus_client over HTTP: p50 {ph['p50_ms']:.3f} ms, "
              f"p99 {ph['p99_ms']:.3f} ms", flush=True)

    shutil.rmtree(tmp, ignore_errors=True)
    cleanup.dirs.remove(tmp)
    return result


def table(results, http):
    head = ["engines", "series", "samples", "shm p50", "shm p99",
            "py gl p50", "py gl p99", "x p50", "x p99"]
    if http:
        head += ["py http p50", "py http p99", "x p50", "x p99"]
    rows = []
    for r in results:
        s, g = r["shmetrics"], r["python_generate_latest"]
        row = [str(r["engines"]), str(r["series"]), str(r["samples"]),
               f"{s['p50_ms']:.3f}", f"{s['p99_ms']:.3f}",
               f"{g['p50_ms']:.3f}", f"{g['p99_ms']:.3f}",
               f"{g['p50_ms'] / s['p50_ms']:.1f}", f"{g['p99_ms'] / s['p99_ms']:.1f}"]
        if http:
            h = r["python_http"]
            row += [f"{h['p50_ms']:.3f}", f"{h['p99_ms']:.3f}",
                    f"{h['p50_ms'] / s['p50_ms']:.1f}", f"{h['p99_ms'] / s['p99_ms']:.1f}"]
        rows.append(row)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main():
    args = parse_args(sys.argv[1:])
    if args.role == "writer":
        return writer_main(args.spec, args.index)
    if args.role == "py-server":
        return py_server_main()
    ensure_prometheus_client(__file__, sys.argv[1:], REEXEC_ENV, python=args.python,
                             name="scrape_latency")
    shm, client = find_binaries(target_dir(args.target_dir), args.shmetrics, args.scrape_client,
                                name="scrape_latency")
    py = sys.executable
    modes = gauge_modes()
    interrupt_on_signals()
    cleanup = Cleanup()
    results = []
    started = time.monotonic()
    load_before = os.getloadavg()
    try:
        for n in args.engines:
            print(f"measuring {n} engines ...", flush=True)
            results.append(measure(n, args, (shm, client), py, cleanup, modes))
    except KeyboardInterrupt as e:
        print(f"scrape_latency: interrupted ({e}); cleaning up", file=sys.stderr)
        return 130
    finally:
        cleanup.all()
    http = not args.no_http_python
    print()
    print(f"scrape latency, ms (p50/p99 over {args.count} scrapes after {args.warmup} warm-up; "
          f"'py gl' = prometheus_client generate_latest in-process, 'py http' = "
          f"start_http_server via scrape-client; x = prometheus_client / shmetrics)")
    print(table(results, http))
    report = {
        "command": " ".join([os.path.relpath(os.path.abspath(__file__), REPO)] + sys.argv[1:]),
        "count": args.count, "warmup": args.warmup, "ops": args.ops, "accept": args.accept,
        "machine": machine_info(load_before),
        "elapsed_s": time.monotonic() - started,
        "results": results,
    }
    if args.out:
        write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
