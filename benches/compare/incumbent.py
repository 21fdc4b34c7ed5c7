#!/usr/bin/env python3
"""shmetrics against the incumbent, prometheus_client's multiprocess mode, in one run.

Three experiments, each reported as ratios of figures measured in this run:

1. Scrape P processes x S series (default (128, 1000) and (128, 10000); --quick: (8, 1000)),
   the `shmetrics generate` mix on both sides: 15 families (gen_c0..4 counters, gen_g0..2
   `mostrecent` and gen_g3..4 `livesum` gauges, gen_h0..4 histograms with the 20 bounds
   0.001 * 2^k), S series per process split over them, labelled series="<i>", the same
   label sets in every process, after N rounds (--ops) of one update per series.
   - shmetrics: `shmetrics generate --workload gen --processes P --series S --ops N --stay`
     (P writer processes that stay alive). Timed: `shmetrics dump --dir D --no-self-metrics`
     as a fresh process, K times (--scrapes; wall time from spawn to exit, output to
     /dev/null), and a long-running `shmetrics serve --no-self-metrics` timed by
     `scrape-client` (--serve-scrapes after 3 warm-up scrapes: metadata cached, steady
     state). Peak RSS: one more dump under `/usr/bin/time -f %M` (see common.peak_rss_kib:
     a child's wait4 ru_maxrss would include this interpreter's memory) and serve's VmHWM
     (/proc/PID/status, read after its last scrape).
   - prometheus_client: P real writer processes (separate interpreters, --writer-parallelism
     at a time) in multiprocess mode in a fresh PROMETHEUS_MULTIPROC_DIR, each registering
     the same families (names, help, label names, bucket bounds, gauge multiprocess_mode)
     and series and running the same N rounds with the same calls (inc(), observe(value),
     set(value)): no shortcut. Timed in a separate collector process (not a writer): a fresh
     CollectorRegistry() + MultiProcessCollector(registry) + generate_latest(registry) per
     scrape, K scrapes. Peak RSS: the collector process's VmHWM at its end (its
     ru_maxrss, also recorded, counts the spawning interpreter's memory too).
   - Both outputs must hold the same samples with the same values (histogram sums to 1e-9
     relative) before anything is reported.

2. Restarted workers: 4 live writers (the gen mix with --restart-series S, default 30), K
   scrapes; then --restarts R (default 500) writers that start, write the same series for N
   rounds and exit, one after another; then K scrapes again. Reported: after / before for
   each side and scrape method.
   - shmetrics: the live writers are `generate --processes 4 --stay`; each restarted writer
     is one `shmetrics generate --processes 1` run (a fresh process that exits), R runs in
     sequence. Its segment stays in the directory as a dead segment: serve is started
     before with automatic compaction off and kept running across the restarts. Then
     `shmetrics compact` folds the 500 dead segments into the archive and removes them,
     and dump and serve are timed a third time ("compacted"; same samples required).
   - prometheus_client: 4 live writer interpreters; the restarted writers are forked one
     after another from one interpreter that has imported prometheus_client (the
     gunicorn/prefork model: each child is a new process with its own pid and files, writes
     and exits); after each exits the parent calls multiprocess.mark_process_dead(pid), as
     gunicorn's child_exit hook does, which removes its live* gauge files.

3. Write path: per-operation cost of prometheus_client in multiprocess mode, Counter.inc(),
   Counter.labels("model-a", "0").inc() (2 label values among 100 children) and
   Histogram.observe() (the benches' 20 bounds and cycle of 1024 values, one per
   operation), timed with timeit in a child interpreter with PROMETHEUS_MULTIPROC_DIR set
   (and, for reference, without it: single-process mode), against the same operations of
   the Rust writer (`Counter::inc`, `labels(..)` + `inc`, `Histogram::observe`) timed by
   the `write-path` bin (benches/write_path.rs: median over 25 loops of ~20 ms each), or,
   with --criterion, by the `counter_inc`, `labels_lookup_2` and `histogram_observe_20`
   groups of the criterion writer benches (benches/writer.rs; median from estimates.json,
   CRITERION_HOME in a temporary directory). There are no Python bindings yet: this
   compares prometheus_client's Python path with shmetrics' Rust path.

Output: one `name ratio` line per figure, and in normal mode a table of the measured times
and sizes; --out FILE writes everything as JSON. Every process started here is stopped and
every temporary directory removed, also on errors, SIGINT/SIGTERM and when --deadline-min
runs out.

Run from the repository root after building:

    cargo build --release -p shmetrics -p shmetrics-benches
    python3 benches/compare/incumbent.py --quick
    python3 benches/compare/incumbent.py --out incumbent.json

prometheus_client comes from the running interpreter if it has it, else from --python PY,
else from the repository's .venv (--venv), which this script creates with `python3 -m venv`
and provisions with `pip install -r ci/requirements.txt` when missing, as ci/test.sh does.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from common import (write_report, DEFAULT_VENV, REPO, Cleanup, child_env, compare_outputs, count_samples,
                    ensure_prometheus_client, find_binaries, interrupt_on_signals,
                    machine_info, parse_exposition, peak_rss_kib, proc_status_kib, run_pool,
                    run_with_rusage, scrape_client, start_generate, start_serve, stop_proc,
                    summarize, target_dir, time_generate_latest, vm_hwm_kib)

REEXEC_ENV = "SHMETRICS_INCUMBENT_REEXEC"
NAME = "incumbent"

FULL_CASES = "128:1000,128:10000"
QUICK_CASES = "8:1000"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="under 2 minutes: case 8:1000, 10 scrapes, short write timings")
    p.add_argument("--parts", default="scrape,restarts,write",
                   help="which experiments to run (default scrape,restarts,write)")
    p.add_argument("--cases", default=None,
                   help=f"comma-separated P:S scrape cases (default {FULL_CASES})")
    p.add_argument("--ops", type=int, default=10,
                   help="rounds of updates per writer, both sides (default 10)")
    p.add_argument("--scrapes", type=int, default=None,
                   help="timed prometheus_client scrapes and shmetrics dumps per case "
                        "(default 5, quick 10)")
    p.add_argument("--serve-scrapes", type=int, default=50,
                   help="timed scrapes of shmetrics serve per case, after 3 warm-up (default 50)")
    p.add_argument("--live", type=int, default=4, help="live writers of the restart experiment")
    p.add_argument("--restarts", type=int, default=500,
                   help="writers that start, write and exit (default 500)")
    p.add_argument("--restart-series", type=int, default=30,
                   help="series per writer in the restart experiment (default 30)")
    p.add_argument("--restart-scrapes", type=int, default=None,
                   help="timed scrapes before and after, per side (default 20, quick 10)")
    p.add_argument("--timeit-seconds", type=float, default=None,
                   help="approximate time per prometheus_client write measurement "
                        "(default 2, quick 0.5)")
    p.add_argument("--criterion", action="store_true",
                   help="take the Rust write figures from `cargo bench --bench writer` "
                        "(criterion) instead of the write-path bin")
    p.add_argument("--criterion-args", default=None,
                   help="with --criterion: extra criterion arguments (default none, quick "
                        "'--warm-up-time 0.5 --measurement-time 1')")
    p.add_argument("--criterion-dir", default=None,
                   help="with --criterion: read criterion's results from this directory "
                        "instead of running `cargo bench`")
    p.add_argument("--writer-parallelism", type=int, default=0,
                   help="prometheus_client writers running at once (default 2 x CPUs)")
    p.add_argument("--deadline-min", type=float, default=None,
                   help="stop (and clean up) after this many minutes (default 90, quick 5)")
    p.add_argument("--out", default=None, help="write the results as JSON to this file")
    p.add_argument("--python", default=None, help="interpreter with prometheus_client")
    p.add_argument("--venv", default=DEFAULT_VENV,
                   help="venv to create and use when the interpreter lacks prometheus_client "
                        "(default REPO/.venv)")
    p.add_argument("--target-dir", default=None,
                   help="cargo target directory (default $CARGO_TARGET_DIR or ./target)")
    p.add_argument("--shmetrics", default=None, help="shmetrics binary (default TARGET/release)")
    p.add_argument("--scrape-client", default=None,
                   help="scrape-client binary (default TARGET/release)")
    p.add_argument("--write-path", default=None,
                   help="write-path binary (default TARGET/release)")
    # Internal roles of this script, run in child interpreters.
    p.add_argument("--role", choices=["py-writer", "py-collect", "py-restarts", "py-timeit"],
                   help=argparse.SUPPRESS)
    p.add_argument("--series", type=int, help=argparse.SUPPRESS)
    p.add_argument("--stay", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=int, help=argparse.SUPPRESS)
    p.add_argument("--body", help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role:
        return args
    if args.quick:
        args.cases = args.cases or QUICK_CASES
        args.scrapes = args.scrapes or 10
        args.restart_scrapes = args.restart_scrapes or 10
        args.timeit_seconds = args.timeit_seconds or 0.5
        if args.criterion_args is None:
            args.criterion_args = "--warm-up-time 0.5 --measurement-time 1"
        args.deadline_min = args.deadline_min or 5
    args.cases = args.cases or FULL_CASES
    args.scrapes = args.scrapes or 5
    args.restart_scrapes = args.restart_scrapes or 20
    args.timeit_seconds = args.timeit_seconds or 2.0
    args.criterion_args = (args.criterion_args or "").split()
    args.deadline_min = args.deadline_min or 90
    try:
        args.cases = [tuple(int(x) for x in c.split(":")) for c in args.cases.split(",") if c]
    except ValueError:
        p.error("--cases: expected P:S,P:S,...")
    args.parts = {x.strip() for x in args.parts.split(",") if x.strip()}
    if not args.parts <= {"scrape", "restarts", "write"}:
        p.error("--parts: scrape, restarts and/or write")
    if (any(len(c) != 2 or min(c) < 1 for c in args.cases) or args.ops < 1
            or args.scrapes < 1 or args.serve_scrapes < 1 or args.restart_scrapes < 1
            or args.live < 1 or args.restarts < 1 or args.restart_series < 1):
        p.error("counts must be >= 1")
    return args


# ---------------------------------------------------------------------------------------
# The gen workload, as crates/shmetrics-workload/src/lib.rs defines it.
# ---------------------------------------------------------------------------------------

GEN_FAMILIES = 15
GEN_BUCKETS = 20


def gen_family_name(j):
    return (f"gen_c{j % 5}_total", f"gen_g{j % 5}", f"gen_h{j % 5}_seconds")[j // 5]


def gen_gauge_mode(k):
    return "mostrecent" if k < 3 else "livesum"


def gen_series_count(total, j):
    return total // GEN_FAMILIES + (1 if j < total % GEN_FAMILIES else 0)


def gen_bounds():
    return [0.001 * (1 << k) for k in range(GEN_BUCKETS)]


def gen_value(rnd, series):
    return 0.00075 * (1 << ((rnd + series) % (GEN_BUCKETS + 1)))


class PyGen:
    """The gen workload of one process with prometheus_client (multiprocess mode when
    PROMETHEUS_MULTIPROC_DIR is set before prometheus_client is imported)."""

    def __init__(self, series):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        registry = CollectorRegistry()
        self.counters, self.recent, self.live, self.histograms = [], [], [], []
        bounds = gen_bounds()
        for j in range(GEN_FAMILIES):
            name, k = gen_family_name(j), j % 5
            labels = [str(i) for i in range(gen_series_count(series, j))]
            if j // 5 == 0:
                fam = Counter(name, f"Generated counter {k}: incremented once per round.",
                              ["series"], registry=registry)
                self.counters += [fam.labels(x) for x in labels]
            elif j // 5 == 1:
                mode = gen_gauge_mode(k)
                fam = Gauge(name, f"Generated gauge {k} (mode {mode}).", ["series"],
                            registry=registry, multiprocess_mode=mode)
                (self.recent if mode == "mostrecent" else self.live).extend(
                    fam.labels(x) for x in labels)
            else:
                fam = Histogram(name, f"Generated histogram {k}: one observation per round.",
                                ["series"], registry=registry, buckets=bounds)
                self.histograms += [(i, fam.labels(x)) for i, x in enumerate(labels)]

    def round(self, rnd):
        """The same updates as GenWorkload::round."""
        for c in self.counters:
            c.inc()
        for i, h in self.histograms:
            h.observe(gen_value(rnd, i))
        for g in self.recent:
            g.set(rnd + 1)
        for g in self.live:
            g.set(1)


# ---------------------------------------------------------------------------------------
# Child roles (run under the interpreter with prometheus_client).
# ---------------------------------------------------------------------------------------

def py_writer_main(args):
    """One prometheus_client writer: the gen workload, then exit (or, with --stay, print
    `ready` and wait until stdin closes)."""
    w = PyGen(args.series)
    for rnd in range(args.ops):
        w.round(rnd)
    if args.stay:
        print("ready", flush=True)
        sys.stdin.read()
    return 0


def py_collect_main(args):
    """The prometheus_client scrape, timed in its own process; prints JSON."""
    import resource

    stats, body = time_generate_latest(args.dir, args.count, args.warmup)
    with open(args.body, "wb") as f:
        f.write(body)
    stats["body_bytes"] = len(body)
    # VmHWM: this process's own peak. ru_maxrss also counts the memory of the interpreter
    # that spawned it (see common.peak_rss_kib); it is kept for reference.
    stats["maxrss_kib"] = vm_hwm_kib(os.getpid())
    stats["ru_maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(stats), flush=True)
    return 0


def py_restarts_main(args):
    """--count writers, one after another: fork, write the gen workload, exit; the parent
    marks each dead (multiprocess.mark_process_dead) once it has exited."""
    from prometheus_client import multiprocess

    started = time.monotonic()
    for n in range(args.count):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                w = PyGen(args.series)
                for rnd in range(args.ops):
                    w.round(rnd)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"restarted writer {n} (pid {pid}) failed: status {status}")
        multiprocess.mark_process_dead(pid, args.dir)
        if (n + 1) % 100 == 0:
            print(f"    prometheus_client: {n + 1}/{args.count} restarted writers "
                  f"({time.monotonic() - started:.1f} s)", file=sys.stderr, flush=True)
    print(json.dumps({"elapsed_s": time.monotonic() - started}), flush=True)
    return 0


# The benches' bounds and cycle of observations (benches/lib.rs BOUNDS_20, observation_cycle).
BOUNDS_20 = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
             120.0, 240.0, 480.0, 960.0, 1920.0]
CYCLE_LEN = 1024


def observation_cycle(bounds, length):
    buckets = len(bounds) + 1
    state = 0x5eed_5eed_5eed_5eed
    mask = (1 << 64) - 1

    def nxt():
        nonlocal state
        state = (state * 6_364_136_223_846_793_005 + 1_442_695_040_888_963_407) & mask
        return state >> 33

    values = []
    for i in range(length):
        bucket = i if i < buckets else nxt() % buckets
        if bucket == 0:
            low, high = 0.0, bounds[0]
        elif bucket == len(bounds):
            low, high = bounds[-1], 2.0 * bounds[-1]
        else:
            low, high = bounds[bucket - 1], bounds[bucket]
        values.append(low + (high - low) * ((1 + nxt() % 15) / 16.0))
    return values


def py_timeit_main(args):
    """Per-operation times (ns) of prometheus_client writes in this interpreter's mode."""
    import timeit

    from prometheus_client import CollectorRegistry, Counter, Histogram

    registry = CollectorRegistry()
    counter = Counter("bench_requests", "Requests.", registry=registry)
    family = Counter("bench_tokens", "Tokens.", ["model", "rank"], registry=registry)
    for model in "abcdefghij":
        for rank in range(10):
            family.labels(f"model-{model}", str(rank))
    histogram = Histogram("bench_latency_seconds", "Latency.", registry=registry,
                          buckets=BOUNDS_20)
    values = observation_cycle(BOUNDS_20, CYCLE_LEN)
    env = {"counter": counter, "family": family, "histogram": histogram, "values": values}
    cases = [
        ("counter_inc", "counter.inc()", 1),
        ("labels2_inc", 'family.labels("model-a", "0").inc()', 1),
        ("histogram_observe", "for v in values: histogram.observe(v)", CYCLE_LEN),
    ]
    out = {"multiprocess": "PROMETHEUS_MULTIPROC_DIR" in os.environ}
    for name, stmt, ops in cases:
        timer = timeit.Timer(stmt, globals=env)
        number, _ = timer.autorange()  # Enough loops for >= 0.2 s.
        repeats = max(3, int(args.seconds / 0.2))
        runs = sorted(t / (number * ops) * 1e9 for t in timer.repeat(repeats, number))
        out[name] = {"median_ns": runs[len(runs) // 2], "min_ns": runs[0],
                     "repeats": repeats, "ops_per_repeat": number * ops}
    print(json.dumps(out), flush=True)
    return 0


# ---------------------------------------------------------------------------------------
# Measurement helpers.
# ---------------------------------------------------------------------------------------

def say(msg):
    print(msg, flush=True)


def time_dumps(shm, directory, count, cleanup, check_path):
    """One checked dump to `check_path`, `count` timed dumps to /dev/null, and one more for
    the peak RSS (`peak_rss_kib`)."""
    cmd = [shm, "dump", "--dir", directory, "--no-self-metrics"]
    with open(check_path, "wb") as f:
        run_with_rusage(cmd, cleanup, stdout=f)
    with open(check_path, encoding="utf-8") as f:
        text = f.read()
    times = [run_with_rusage(cmd, cleanup)[0] for _ in range(count)]
    stats = summarize(times)
    stats["maxrss_kib"], stats["maxrss_method"] = peak_rss_kib(cmd, cleanup)
    stats["body_bytes"] = len(text.encode("utf-8"))
    return stats, parse_exposition(text)


def py_collect(py, directory, count, warmup, body_path, cleanup, timeout):
    cmd = [py, os.path.abspath(__file__), "--role", "py-collect", "--dir", directory,
           "--count", str(count), "--warmup", str(warmup), "--body", body_path]
    proc = subprocess.Popen(cmd, env=child_env(REEXEC_ENV, PROMETHEUS_MULTIPROC_DIR=directory),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    cleanup.procs.append(proc)
    out, err = proc.communicate(timeout=timeout)
    cleanup.procs.remove(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"prometheus_client collector exited {proc.returncode}: {err.strip()}")
    stats = json.loads(out)
    with open(body_path, encoding="utf-8") as f:
        return stats, parse_exposition(f.read())


def check_same(shm_families, py_families, what):
    """Same number of samples, then the same samples and values (sums to 1e-9)."""
    a, b = count_samples(shm_families), count_samples(py_families)
    if a != b:
        raise RuntimeError(f"{what}: shmetrics exposes {a} samples, prometheus_client {b}")
    compare_outputs(shm_families, py_families, set())
    return a


def serve_scrapes(client, url, count):
    return scrape_client(client, url, count, 3)


def start_py_live(py, directory, n, series, ops, cleanup):
    """`n` prometheus_client writers that stay alive (until stdin closes)."""
    env = child_env(REEXEC_ENV, PROMETHEUS_MULTIPROC_DIR=directory)
    procs = []
    for _ in range(n):
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--role", "py-writer", "--series",
             str(series), "--ops", str(ops), "--stay"],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        cleanup.procs.append(proc)
        procs.append(proc)
    for proc in procs:
        line = proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"prometheus_client live writer failed: {proc.stderr.read()}")
    return procs


def kib_to_mib(k):
    return k / 1024.0


# ---------------------------------------------------------------------------------------
# 1. Scrape P x S.
# ---------------------------------------------------------------------------------------

def measure_scrape(p_count, series, args, bins, cleanup):
    shm, client = bins
    py = sys.executable
    tag = f"{p_count}x{series}"
    tmp = tempfile.mkdtemp(prefix=f"shmetrics-incumbent-{tag}-")
    cleanup.dirs.append(tmp)
    shm_dir, py_dir = os.path.join(tmp, "shmetrics"), os.path.join(tmp, "prometheus_client")
    os.mkdir(shm_dir)
    os.mkdir(py_dir)
    r = {"processes": p_count, "series": series, "ops": args.ops}

    # --- shmetrics -------------------------------------------------------------------
    t0 = time.monotonic()
    pids = start_generate(shm, shm_dir, ["--workload", "gen", "--processes", str(p_count),
                                         "--series", str(series), "--ops", str(args.ops)],
                          cleanup, timeout=1800)
    if len(pids) != p_count:
        raise RuntimeError(f"generate printed {len(pids)} pids, expected {p_count}")
    r["shmetrics_setup_s"] = time.monotonic() - t0
    r["shmetrics_files"] = len(os.listdir(shm_dir))
    dump, shm_families = time_dumps(shm, shm_dir, args.scrapes, cleanup,
                                    os.path.join(tmp, "dump.txt"))
    r["shmetrics_dump"] = dump
    serve, url = start_serve(shm, shm_dir, cleanup)
    sv = serve_scrapes(client, url, args.serve_scrapes)
    sv["vmhwm_kib"] = vm_hwm_kib(serve.pid)
    # What the resident memory is at the end: the reader's own (anonymous) memory and the
    # pages of the mapped segments it has touched.
    sv["rss_anon_kib"] = proc_status_kib(serve.pid, "RssAnon")
    sv["rss_file_kib"] = proc_status_kib(serve.pid, "RssFile")
    stop_proc(serve, cleanup)
    r["shmetrics_serve"] = sv
    cleanup.stop_pids()
    samples = count_samples(shm_families)
    if sv["samples"] != samples:
        raise RuntimeError(f"[{tag}] serve returned {sv['samples']} samples, dump {samples}")
    say(f"  [{tag}] shmetrics: setup {r['shmetrics_setup_s']:.1f} s, {samples} samples; dump "
        f"p50 {dump['p50_ms']:.2f} ms (peak RSS {kib_to_mib(dump['maxrss_kib']):.1f} MiB), "
        f"serve p50 {sv['p50_ms']:.2f} ms (VmHWM {kib_to_mib(sv['vmhwm_kib']):.1f} MiB; at the "
        f"end RssAnon {kib_to_mib(sv['rss_anon_kib']):.1f}, "
        f"RssFile {kib_to_mib(sv['rss_file_kib']):.1f})")

    # --- prometheus_client -----------------------------------------------------------
    parallelism = args.writer_parallelism or 2 * (os.cpu_count() or 1)
    env = child_env(REEXEC_ENV, PROMETHEUS_MULTIPROC_DIR=py_dir)
    cmd = [py, os.path.abspath(__file__), "--role", "py-writer", "--series", str(series),
           "--ops", str(args.ops)]
    t0 = time.monotonic()
    last = [t0]

    def progress(done, total):
        now = time.monotonic()
        if done == total or now - last[0] >= 10:
            last[0] = now
            say(f"    prometheus_client writers: {done}/{total} done ({now - t0:.0f} s)")

    say(f"  [{tag}] prometheus_client: {p_count} writers, {parallelism} at a time ...")
    run_pool([cmd] * p_count, parallelism, cleanup, env=env, progress=progress, label="writer")
    r["python_setup_s"] = time.monotonic() - t0
    r["python_files"] = len(os.listdir(py_dir))
    r["python_bytes"] = sum(os.path.getsize(os.path.join(py_dir, f)) for f in os.listdir(py_dir))
    warmup = 1 if args.scrapes > 5 else 0
    say(f"  [{tag}] prometheus_client: collecting {warmup} + {args.scrapes} scrapes ...")
    gl, py_families = py_collect(py, py_dir, args.scrapes, warmup,
                                 os.path.join(tmp, "py.txt"), cleanup, timeout=3600)
    r["python_generate_latest"] = gl
    r["samples"] = check_same(shm_families, py_families, tag)
    say(f"  [{tag}] prometheus_client: setup {r['python_setup_s']:.1f} s "
        f"({r['python_files']} files), generate_latest p50 {gl['p50_ms']:.1f} ms "
        f"(VmHWM {kib_to_mib(gl['maxrss_kib']):.1f} MiB); same {r['samples']} samples")
    shutil.rmtree(tmp, ignore_errors=True)
    cleanup.dirs.remove(tmp)
    return r


# ---------------------------------------------------------------------------------------
# 2. Restarted workers.
# ---------------------------------------------------------------------------------------

def measure_restarts(args, bins, cleanup):
    shm, client = bins
    py = sys.executable
    tmp = tempfile.mkdtemp(prefix="shmetrics-incumbent-restarts-")
    cleanup.dirs.append(tmp)
    shm_dir, py_dir = os.path.join(tmp, "shmetrics"), os.path.join(tmp, "prometheus_client")
    os.mkdir(shm_dir)
    os.mkdir(py_dir)
    s, n, k = args.restart_series, args.ops, args.restart_scrapes
    r = {"live": args.live, "restarts": args.restarts, "series": s, "ops": n, "scrapes": k}
    gen = ["--workload", "gen", "--series", str(s), "--ops", str(n)]

    start_generate(shm, shm_dir, gen + ["--processes", str(args.live)], cleanup)
    serve, url = start_serve(shm, shm_dir, cleanup, ["--compact-interval-secs", "0"])
    py_live = start_py_live(py, py_dir, args.live, s, n, cleanup)

    seen_families = {}

    def scrape_all(when):
        dump, shm_families = time_dumps(shm, shm_dir, k, cleanup,
                                        os.path.join(tmp, f"dump-{when}.txt"))
        seen_families[when] = shm_families
        sv = serve_scrapes(client, url, max(k, args.serve_scrapes))
        gl, py_families = py_collect(py, py_dir, k, 1, os.path.join(tmp, f"py-{when}.txt"),
                                     cleanup, timeout=1800)
        samples = check_same(shm_families, py_families, f"restarts ({when})")
        if sv["samples"] != samples:
            raise RuntimeError(f"restarts ({when}): serve returned {sv['samples']} samples, "
                               f"dump {samples}")
        say(f"  [restarts, {when}] {samples} samples; dump p50 {dump['p50_ms']:.2f} ms, serve "
            f"p50 {sv['p50_ms']:.3f} ms, prometheus_client p50 {gl['p50_ms']:.1f} ms "
            f"({len(os.listdir(shm_dir))} segments, {len(os.listdir(py_dir))} .db files)")
        return {"samples": samples, "shmetrics_dump": dump, "shmetrics_serve": sv,
                "python_generate_latest": gl, "shmetrics_files": len(os.listdir(shm_dir)),
                "python_files": len(os.listdir(py_dir))}

    r["before"] = scrape_all("before")

    # shmetrics: one `generate --processes 1` run per restarted writer, in sequence.
    t0 = time.monotonic()
    for i in range(args.restarts):
        run_with_rusage([shm, "generate", "--dir", shm_dir, "--processes", "1"] + gen, cleanup,
                        timeout=120)
        if (i + 1) % 100 == 0:
            say(f"    shmetrics: {i + 1}/{args.restarts} restarted writers "
                f"({time.monotonic() - t0:.1f} s)")
    r["shmetrics_restarts_s"] = time.monotonic() - t0

    # prometheus_client: forked one after another from one interpreter.
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [py, os.path.abspath(__file__), "--role", "py-restarts", "--dir", py_dir, "--count",
         str(args.restarts), "--series", str(s), "--ops", str(n)],
        env=child_env(REEXEC_ENV, PROMETHEUS_MULTIPROC_DIR=py_dir), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=None, text=True)
    cleanup.procs.append(proc)
    out, _ = proc.communicate(timeout=3600)
    cleanup.procs.remove(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"prometheus_client restarts exited {proc.returncode}")
    r["python_restarts_s"] = time.monotonic() - t0

    r["after"] = scrape_all("after")

    run_with_rusage([shm, "compact", "--dir", shm_dir], cleanup, timeout=600)
    dump, shm_families = time_dumps(shm, shm_dir, k, cleanup,
                                    os.path.join(tmp, "dump-compacted.txt"))
    sv = serve_scrapes(client, url, max(k, args.serve_scrapes))
    samples = check_same(shm_families, seen_families["after"], "restarts (compacted)")
    if samples != r["after"]["samples"] or sv["samples"] != samples:
        raise RuntimeError(f"restarts (compacted): {samples} samples from dump, "
                           f"{sv['samples']} from serve, {r['after']['samples']} before")
    r["compacted"] = {"samples": samples, "shmetrics_dump": dump, "shmetrics_serve": sv,
                      "shmetrics_files": len(os.listdir(shm_dir))}
    say(f"  [restarts, compacted] dump p50 {dump['p50_ms']:.2f} ms, serve p50 "
        f"{sv['p50_ms']:.3f} ms ({len(os.listdir(shm_dir))} files)")
    r["shmetrics_serve_vmhwm_kib"] = vm_hwm_kib(serve.pid)
    stop_proc(serve, cleanup)
    for p in py_live:
        stop_proc(p, cleanup)
    cleanup.stop_pids()
    shutil.rmtree(tmp, ignore_errors=True)
    cleanup.dirs.remove(tmp)
    return r


# ---------------------------------------------------------------------------------------
# 3. Write path.
# ---------------------------------------------------------------------------------------

RUST_OPS = ("counter_inc", "labels2_inc", "histogram_observe")
# The same operations in benches/writer.rs (criterion group/bench).
CRITERION_BENCHES = {"counter_inc": "counter_inc/shmetrics",
                     "labels2_inc": "labels_lookup_2/shmetrics",
                     "histogram_observe": "histogram_observe_20/shmetrics"}


def rust_write_figures(args, target, tmp, cleanup):
    """Nanoseconds per operation of the Rust writer: from the write-path bin (default), or
    with --criterion from criterion's estimates.json (median) of the writer benches."""
    if not args.criterion:
        cmd = [args.write_path] + (["--batches", "10", "--batch-ms", "10"] if args.quick else [])
        say(f"  [write] {' '.join(cmd)}")
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        cleanup.procs.append(proc)
        out, err = proc.communicate(timeout=600)
        cleanup.procs.remove(proc)
        if proc.returncode != 0:
            raise RuntimeError(f"write-path exited {proc.returncode}: {err.strip()}")
        data = json.loads(out)
        result = {key: dict(data[key], source="write-path") for key in RUST_OPS}
        result["raw_fetch_add"] = dict(data["raw_fetch_add"], source="write-path")
        return result
    crit = args.criterion_dir
    if crit is None:
        crit = os.path.join(tmp, "criterion")
        # Whole groups: the benches' own checks expect every bench of a group to have run.
        groups = "|".join(b.split("/")[0] for b in CRITERION_BENCHES.values())
        cmd = ["cargo", "bench", "-p", "shmetrics-benches", "--bench", "writer", "--",
               "--noplot"] + args.criterion_args + [f"^({groups})/"]
        say(f"  [write] {' '.join(cmd)}")
        env = dict(os.environ, CARGO_TARGET_DIR=os.path.abspath(target), CRITERION_HOME=crit)
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        cleanup.procs.append(proc)
        out, err = proc.communicate(timeout=3600)
        cleanup.procs.remove(proc)
        if proc.returncode != 0:
            raise RuntimeError(f"cargo bench failed ({proc.returncode}): {err.strip()[-2000:]}")
    result = {}
    for key, bench in CRITERION_BENCHES.items():
        with open(os.path.join(crit, bench, "new", "estimates.json"), encoding="utf-8") as f:
            est = json.load(f)
        result[key] = {"median_ns": est["median"]["point_estimate"],
                       "mean_ns": est["mean"]["point_estimate"], "source": f"criterion {bench}"}
    return result


def py_timeit(py, seconds, mp_dir, cleanup):
    """prometheus_client write timings in a child interpreter: multiprocess mode in `mp_dir`,
    or single-process mode when it is None."""
    env = child_env(REEXEC_ENV)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("prometheus_multiproc_dir", None)
    if mp_dir:
        env["PROMETHEUS_MULTIPROC_DIR"] = mp_dir
    proc = subprocess.Popen([py, os.path.abspath(__file__), "--role", "py-timeit", "--seconds",
                             str(seconds)],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    cleanup.procs.append(proc)
    out, err = proc.communicate(timeout=600)
    cleanup.procs.remove(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"prometheus_client timeit exited {proc.returncode}: {err.strip()}")
    return json.loads(out)


def measure_write(args, target, cleanup):
    tmp = tempfile.mkdtemp(prefix="shmetrics-incumbent-write-")
    cleanup.dirs.append(tmp)
    mp_dir = os.path.join(tmp, "prometheus_client")
    os.mkdir(mp_dir)
    r = {"python_multiprocess": py_timeit(sys.executable, args.timeit_seconds, mp_dir, cleanup),
         "python_single_process": py_timeit(sys.executable, args.timeit_seconds, None,
                                            cleanup)}
    if not r["python_multiprocess"]["multiprocess"] or r["python_single_process"]["multiprocess"]:
        raise RuntimeError("prometheus_client timeit ran in the wrong mode")
    r["rust"] = rust_write_figures(args, target, tmp, cleanup)
    for key in RUST_OPS:
        mp = r["python_multiprocess"][key]["median_ns"]
        single = r["python_single_process"][key]["median_ns"]
        say(f"  [write] {key}: prometheus_client mp {mp:.0f} ns, single-process {single:.0f} ns, "
            f"shmetrics (Rust) {r['rust'][key]['median_ns']:.2f} ns")
    shutil.rmtree(tmp, ignore_errors=True)
    cleanup.dirs.remove(tmp)
    return r


# ---------------------------------------------------------------------------------------
# Figures and the table.
# ---------------------------------------------------------------------------------------

def figures(results):
    """[(name, ratio)] in report order."""
    out = []
    for c in results.get("scrape", []):
        tag = f"{c['processes']}x{c['series']}"
        py = c["python_generate_latest"]
        dump, sv = c["shmetrics_dump"], c["shmetrics_serve"]
        out += [(f"scrape_{tag}_speedup_dump", py["p50_ms"] / dump["p50_ms"]),
                (f"scrape_{tag}_speedup_serve", py["p50_ms"] / sv["p50_ms"]),
                (f"scrape_{tag}_rss_ratio_dump", py["maxrss_kib"] / dump["maxrss_kib"]),
                (f"scrape_{tag}_rss_ratio_serve", py["maxrss_kib"] / sv["vmhwm_kib"])]
    rs = results.get("restarts")
    if rs:
        b, a = rs["before"], rs["after"]
        tag = f"restart{rs['restarts']}"
        out += [
            (f"{tag}_python_slowdown",
             a["python_generate_latest"]["p50_ms"] / b["python_generate_latest"]["p50_ms"]),
            (f"{tag}_dump_slowdown",
             a["shmetrics_dump"]["p50_ms"] / b["shmetrics_dump"]["p50_ms"]),
            (f"{tag}_serve_slowdown",
             a["shmetrics_serve"]["p50_ms"] / b["shmetrics_serve"]["p50_ms"]),
            (f"{tag}_after_speedup_dump",
             a["python_generate_latest"]["p50_ms"] / a["shmetrics_dump"]["p50_ms"]),
            (f"{tag}_after_speedup_serve",
             a["python_generate_latest"]["p50_ms"] / a["shmetrics_serve"]["p50_ms"]),
        ]
        c = rs.get("compacted")
        if c:
            out += [
                (f"{tag}_compacted_dump_slowdown",
                 c["shmetrics_dump"]["p50_ms"] / b["shmetrics_dump"]["p50_ms"]),
                (f"{tag}_compacted_serve_slowdown",
                 c["shmetrics_serve"]["p50_ms"] / b["shmetrics_serve"]["p50_ms"]),
            ]
    w = results.get("write")
    if w:
        for key in RUST_OPS:
            rust = w["rust"][key]["median_ns"]
            out.append((f"write_{key}_speedup", w["python_multiprocess"][key]["median_ns"] / rust))
        for key in RUST_OPS:
            rust = w["rust"][key]["median_ns"]
            out.append((f"write_{key}_speedup_vs_single_process",
                        w["python_single_process"][key]["median_ns"] / rust))
    return out


def markdown(head, rows, text_first=False):
    align = [":---" if text_first and i == 0 else "---:" for i in range(len(head))]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def tables(results):
    parts = []
    if results.get("scrape"):
        rows = []
        for c in results["scrape"]:
            py, dump, sv = (c["python_generate_latest"], c["shmetrics_dump"],
                            c["shmetrics_serve"])
            rows.append([c["processes"], c["series"], c["samples"],
                         f"{py['p50_ms']:.1f}", f"{dump['p50_ms']:.2f}", f"{sv['p50_ms']:.2f}",
                         f"{py['p50_ms'] / dump['p50_ms']:.1f}",
                         f"{py['p50_ms'] / sv['p50_ms']:.1f}",
                         f"{kib_to_mib(py['maxrss_kib']):.1f}",
                         f"{kib_to_mib(dump['maxrss_kib']):.1f}",
                         f"{kib_to_mib(sv['vmhwm_kib']):.1f}"])
        parts.append("scrape P x S, ms p50 (py: prometheus_client MultiProcessCollector + "
                     "generate_latest; dump: `shmetrics dump` fresh process; serve: "
                     "`shmetrics serve` steady state via scrape-client) and peak RSS MiB\n" +
                     markdown(["P", "S", "samples", "py ms", "dump ms", "serve ms", "x dump",
                               "x serve", "py RSS", "dump RSS", "serve RSS"], rows))
    rs = results.get("restarts")
    if rs:
        rows = []
        for label, key, field in [("prometheus_client", "python_generate_latest", "p50_ms"),
                                  ("shmetrics dump", "shmetrics_dump", "p50_ms"),
                                  ("shmetrics serve", "shmetrics_serve", "p50_ms")]:
            b, a = rs["before"][key][field], rs["after"][key][field]
            rows.append([label, f"{b:.3f}", f"{a:.3f}", f"{a / b:.2f}"])
        parts.append(f"restarted workers: {rs['live']} live writers, then {rs['restarts']} "
                     f"that start, write {rs['series']} series and exit; scrape ms p50\n" +
                     markdown(["reader", "before", "after", "after/before"], rows, True))
    w = results.get("write")
    if w:
        rows = []
        for key in RUST_OPS:
            mp = w["python_multiprocess"][key]["median_ns"]
            sp = w["python_single_process"][key]["median_ns"]
            rust = w["rust"][key]["median_ns"]
            rows.append([key, f"{mp:.0f}", f"{sp:.0f}", f"{rust:.2f}", f"{mp / rust:.0f}",
                         f"{sp / rust:.0f}"])
        parts.append("write path, ns per operation (median): prometheus_client multiprocess / "
                     "single-process (Python) vs shmetrics (Rust; no Python bindings yet)\n" +
                     markdown(["operation", "py mp", "py single", "shmetrics", "x mp",
                               "x single"], rows, True))
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------

def main():
    args = parse_args(sys.argv[1:])
    if args.role == "py-writer":
        return py_writer_main(args)
    if args.role == "py-collect":
        return py_collect_main(args)
    if args.role == "py-restarts":
        return py_restarts_main(args)
    if args.role == "py-timeit":
        return py_timeit_main(args)
    ensure_prometheus_client(__file__, sys.argv[1:], REEXEC_ENV, python=args.python,
                             venv=args.venv, name=NAME)
    target = target_dir(args.target_dir)
    bins = find_binaries(target, args.shmetrics, args.scrape_client, name=NAME)
    args.write_path = args.write_path or os.path.join(target, "release", "write-path")
    if "write" in args.parts and not args.criterion and not os.access(args.write_path, os.X_OK):
        sys.exit(f"{NAME}: {args.write_path} not found; run `cargo build --release -p shmetrics "
                 "-p shmetrics-benches` (or pass --target-dir / --write-path)")

    interrupt_on_signals()

    def on_alarm(_signum, _frame):
        raise KeyboardInterrupt(f"deadline of {args.deadline_min} min reached")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(max(1, int(args.deadline_min * 60)))
    cleanup = Cleanup()
    results = {}
    started = time.monotonic()
    load_before = os.getloadavg()
    try:
        if "scrape" in args.parts:
            results["scrape"] = []
            for p_count, series in args.cases:
                say(f"scrape {p_count} processes x {series} series ...")
                results["scrape"].append(measure_scrape(p_count, series, args, bins, cleanup))
        if "restarts" in args.parts:
            say(f"restarted workers: {args.live} live + {args.restarts} restarted ...")
            results["restarts"] = measure_restarts(args, bins, cleanup)
        if "write" in args.parts:
            say("write path ...")
            results["write"] = measure_write(args, target, cleanup)
    except KeyboardInterrupt as e:
        print(f"{NAME}: interrupted ({e}); cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.alarm(0)
        cleanup.all()
    figs = figures(results)
    print()
    if not args.quick:
        print(tables(results))
        print()
    for name, ratio in figs:
        print(f"{name} {ratio:.1f}" if ratio >= 10 else f"{name} {ratio:.2f}")
    if args.out:
        report = {
            "command": " ".join([os.path.relpath(os.path.abspath(__file__), REPO)]
                                + sys.argv[1:]),
            "quick": args.quick, "ops": args.ops, "scrapes": args.scrapes,
            "serve_scrapes": args.serve_scrapes, "criterion_args": args.criterion_args,
            "machine": machine_info(load_before),
            "elapsed_s": time.monotonic() - started,
            "figures": {name: ratio for name, ratio in figs},
            "results": results,
        }
        write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
