#!/usr/bin/env python3
"""The cost of `serve --process-metrics` on a warm scrape: 128 live writer processes x 1,000
series (`shmetrics generate --stay`), two `serve` processes on the same directory, one with
`--process-metrics`, scraped alternately (ROUNDS rounds of BATCH scrapes each, so both see
the same machine noise); prints the median scrape time of each and their ratio.

    cargo build --release -p shmetrics
    python3 benches/compare/process_metrics_cost.py [--processes 128] [--series 1000] [--rounds 10] [--batch 20]
"""

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target/release/shmetrics")


def serve(directory, extra):
    proc = subprocess.Popen([BIN, "serve", "--dir", directory, "--listen", "127.0.0.1:0", "--compact-interval-secs", "0", *extra],
                            stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    match = re.match(r"serving http://(\S+)/metrics", line)
    if not match:
        sys.exit(f"serve did not start: {line}")
    return proc, f"http://{match.group(1)}/metrics"


def scrape(url):
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        body = r.read()
    return time.perf_counter() - start, body


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, default=128)
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--batch", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="shmetrics-process-cost-") as directory:
        out = subprocess.run([BIN, "generate", "--dir", directory, "--processes", str(args.processes), "--series",
                              str(args.series), "--ops", "10", "--stay"], capture_output=True, text=True, check=True)
        writers = [int(p) for p in out.stdout.split()]
        servers = []
        try:
            plain, plain_url = serve(directory, [])
            servers.append(plain)
            with_pm, pm_url = serve(directory, ["--process-metrics"])
            servers.append(with_pm)
            _, body = scrape(pm_url)
            reported = body.decode().count("process_cpu_seconds_total{")
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
            print(f"{args.processes} live writers x {args.series} series; process metrics of {reported} writers")
            print(f"serve:                     {a:.2f} ms median warm scrape")
            print(f"serve --process-metrics:   {b:.2f} ms median warm scrape ({b / a:.2f}x, +{b - a:.2f} ms)")
        finally:
            for s in servers:
                s.terminate()
                s.wait()
            for pid in writers:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass


if __name__ == "__main__":
    main()
