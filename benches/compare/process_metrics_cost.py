#!/usr/bin/env python3
"""The cost of a `serve` option on a warm scrape, `--process-metrics` by default: 128 live
writer processes x 1,000 series (`shmetrics generate --stay`), two `serve` processes on the
same directory, one with the option, scraped alternately (ROUNDS rounds of BATCH scrapes
each, so both see the same machine noise); prints the median scrape time of each and their
ratio. `--openmetrics` asks both for OpenMetrics (for `--option=--no-created-series`: the
cost of the `_created` samples is the plain server's beside the other's). `--exemplars`
gives the second server a directory of its own whose writers (as many, the same series)
stored an exemplar with every counter increment and histogram observation (`generate
--exemplars`): with `--openmetrics`, the cost of exemplars and the option together.
`--baseline-binary PATH` runs the first server from another build (for instance the commit
before a change, built in a git worktree) and `--option=` gives the second none: the two
builds on the same directory, same scrapes.

    cargo build --release -p shmetrics
    python3 benches/compare/process_metrics_cost.py [--processes 128] [--series 1000] [--rounds 10] [--batch 20] [--option=--process-metrics] [--openmetrics] [--exemplars] [--baseline-binary PATH]
"""

import argparse
import os
import statistics
import tempfile
import time
import urllib.request

from common import Cleanup, start_generate, start_serve

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target/release/shmetrics")


def serve(directory, extra, cleanup, binary=BIN):
    return start_serve(binary, directory, cleanup, ["--compact-interval-secs", "0", *extra], self_metrics=True)


ACCEPT = {}


def scrape(url):
    start = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, headers=ACCEPT), timeout=60) as r:
        body = r.read()
    return time.perf_counter() - start, body


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, default=128)
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--option", default="--process-metrics",
                    help="the serve options measured (split at spaces; empty for none)")
    ap.add_argument("--openmetrics", action="store_true", help="scrape OpenMetrics")
    ap.add_argument("--exemplars", action="store_true", help="the second server's writers store exemplars")
    ap.add_argument("--baseline-binary", default=BIN, help="shmetrics binary of the first server")
    args = ap.parse_args()
    if args.openmetrics:
        ACCEPT["Accept"] = "application/openmetrics-text; version=1.0.0"
    with tempfile.TemporaryDirectory(prefix="shmetrics-process-cost-") as base:
        directory = os.path.join(base, "plain")
        os.mkdir(directory)

        cleanup = Cleanup()

        def generate(into, extra):
            start_generate(BIN, into, ["--processes", str(args.processes), "--series", str(args.series), "--ops", "10",
                                       *extra], cleanup)

        generate(directory, [])
        second = directory
        if args.exemplars:
            second = os.path.join(base, "exemplars")
            os.mkdir(second)
            generate(second, ["--exemplars"])
        try:
            _, plain_url = serve(directory, [], cleanup, args.baseline_binary)
            _, pm_url = serve(second, args.option.split(), cleanup)
            sizes = [len(scrape(url)[1]) for url in (plain_url, pm_url)]
            _, body = scrape(pm_url)
            reported = body.decode().count("process_cpu_seconds_total{")
            shown = body.decode().count(" # {")
            for url in (plain_url, pm_url):
                for _ in range(5):
                    scrape(url)  # warm
            times = {plain_url: [], pm_url: []}
            for _ in range(args.rounds):
                for url in (plain_url, pm_url):
                    for _ in range(args.batch):
                        times[url].append(scrape(url)[0])
            a = statistics.median(times[plain_url]) * 1e3
            b = statistics.median(times[pm_url]) * 1e3
            fmt = "OpenMetrics" if args.openmetrics else "text"
            print(f"{args.processes} live writers x {args.series} series, {fmt}; process metrics of {reported} writers"
                  + (f"; {shown} exemplars shown by the second server" if args.exemplars else ""))
            first = "serve" if args.baseline_binary == BIN else f"serve ({args.baseline_binary})"
            print(f"{first}: {a:.2f} ms median warm scrape, {sizes[0]} bytes")
            print(f"serve {args.option}: {b:.2f} ms median warm scrape, {sizes[1]} bytes ({b / a:.2f}x, {b - a:+.2f} ms)")
        finally:
            cleanup.all()


if __name__ == "__main__":
    main()
