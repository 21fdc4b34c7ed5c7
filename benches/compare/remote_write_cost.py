#!/usr/bin/env python3
"""What remote write costs and how fast it goes, on 128 live writer processes x 1,000 series
(`shmetrics generate --stay`), into Debian's `victoria-metrics` on a free loopback port:

- CPU per interval: two `serve` processes on the directory for the same DURATION, one
  without remote write (the baseline, idle but for its compactor) and one sending every
  INTERVAL seconds; the difference of their CPU time (utime + stime from /proc) divided by
  the intervals sent: collecting, encoding and sending one request.
- Throughput: a third `serve` whose receiver is down while BACKLOG requests queue up; then
  the receiver starts and the queue drains (one request at a time, backoff capped at
  100 ms): queued samples / time to drain, in samples per second.

    cargo build --release -p shmetrics
    python3 benches/compare/remote_write_cost.py [--processes 128] [--series 1000] [--interval 1] [--duration 20] [--backlog 20]
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from common import Cleanup, start_generate, start_serve

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target/release/shmetrics")
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(directory, extra, cleanup):
    proc, url = start_serve(BIN, directory, cleanup, ["--no-created-series", "--compact-interval-secs", "0", *extra],
                            self_metrics=True)
    return proc, url


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def self_metric(url, name):
    with urllib.request.urlopen(url, timeout=60) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
    sys.exit(f"no {name} at {url}")


def start_vm(base, port, cleanup):
    data = os.path.join(base, f"vm-{port}")
    proc = subprocess.Popen(["victoria-metrics", f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={data}",
                             "-search.latencyOffset=0s"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cleanup.procs.append(proc)
    for _ in range(200):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.05)
    sys.exit("victoria-metrics did not start")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, default=128)
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--backlog", type=int, default=20)
    args = ap.parse_args()
    cleanup = Cleanup()
    with tempfile.TemporaryDirectory(prefix="shmetrics-remote-write-cost-") as base:
        directory = os.path.join(base, "metrics")
        os.mkdir(directory)
        start_generate(BIN, directory, ["--processes", str(args.processes), "--series", str(args.series),
                                        "--ops", "10"], cleanup)
        try:
            port = free_port()
            start_vm(base, port, cleanup)
            url = f"http://127.0.0.1:{port}/api/v1/write"
            idle, idle_url = serve(directory, [], cleanup)
            sending, sending_url = serve(directory, ["--remote-write", url, "--remote-write-interval",
                                                     str(args.interval), "--remote-write-label", "instance=bench"],
                                      cleanup)
            # The first request alone gives the samples per request.
            while (per_request := self_metric(sending_url, "shmetrics_remote_write_samples_sent_total")) == 0:
                time.sleep(0.01)
            time.sleep(args.interval * 2)  # the first requests: page faults, connections
            sent0 = self_metric(sending_url, "shmetrics_remote_write_samples_sent_total")
            cpu0 = (cpu_seconds(idle.pid), cpu_seconds(sending.pid))
            start = time.perf_counter()
            time.sleep(args.duration)
            elapsed = time.perf_counter() - start
            cpu1 = (cpu_seconds(idle.pid), cpu_seconds(sending.pid))
            sent = self_metric(sending_url, "shmetrics_remote_write_samples_sent_total") - sent0
            requests = sent / per_request
            extra_cpu = (cpu1[1] - cpu0[1]) - (cpu1[0] - cpu0[0])
            print(f"{args.processes} live writers x {args.series} series: {per_request:.0f} samples per request, "
                  f"{requests:.0f} requests sent in {elapsed:.1f} s (interval {args.interval} s)")
            print(f"CPU per interval: {extra_cpu / requests * 1e3:.1f} ms "
                  f"(serve with remote write {cpu1[1] - cpu0[1]:.2f} s, without {cpu1[0] - cpu0[0]:.2f} s of CPU)")

            # Throughput: a backlog drained into a receiver that starts late.
            late_port = free_port()
            web = os.path.join(base, "web.yml")
            with open(web, "w") as f:
                f.write(f"remote_write:\n  - url: http://127.0.0.1:{late_port}/api/v1/write\n    name: late\n"
                        "    queue_config: {min_backoff: 10ms, max_backoff: 100ms}\n")
            backlog, backlog_url = serve(directory, ["--web.config.file", web, "--remote-write-interval",
                                                     str(args.interval), "--remote-write-label", "instance=bench2"],
                                      cleanup)
            while self_metric(backlog_url, 'shmetrics_remote_write_queue_requests') < args.backlog:
                time.sleep(0.05)
            queued = self_metric(backlog_url, 'shmetrics_remote_write_queue_requests')
            start_vm(base, late_port, cleanup)
            start = time.perf_counter()
            cpu_start = cpu_seconds(backlog.pid)
            while self_metric(backlog_url, 'shmetrics_remote_write_queue_requests') > 1:
                time.sleep(0.01)
            drain = time.perf_counter() - start
            cpu_drain = cpu_seconds(backlog.pid) - cpu_start
            drained = self_metric(backlog_url, "shmetrics_remote_write_samples_sent_total")
            print(f"throughput: {drained:.0f} samples ({queued:.0f} queued requests) drained in {drain:.2f} s: "
                  f"{drained / drain:,.0f} samples/s, serve's CPU {cpu_drain:.2f} s")
        finally:
            cleanup.all()


if __name__ == "__main__":
    main()
