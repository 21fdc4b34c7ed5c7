#!/usr/bin/env python3
"""The cost of TLS and basic authentication on a warm scrape: 128 live writer processes x
1,000 series (`shmetrics generate --stay`) served by three `serve` processes on the same
directory: plain HTTP, TLS (`--web.config.file` with a P-256 certificate), and TLS with
basic authentication (a bcrypt hash of cost 10, as `htpasswd -nBC 10` writes). Each is
scraped as Prometheus does (OpenMetrics, gzip, one kept-alive connection), alternately,
ROUNDS rounds of BATCH scrapes each so all three see the same machine noise; then the same
with a new connection per scrape (a TLS handshake each time). Prints median scrape times
and the ratios to plain HTTP.

    cargo build --release -p shmetrics
    python3 benches/compare/secure_serving_cost.py [--processes 128] [--series 1000] [--rounds 10] [--batch 20]

Needs `openssl` (the certificate). The password is a fixed benchmark value.
"""

import argparse
import base64
import http.client
import os
import re
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

from common import Cleanup, start_generate, start_serve

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target/release/shmetrics")
PASSWORD = "shmetrics-bench"
# `htpasswd -nbBC 10 "" shmetrics-bench | tr -d ':\n'`
HASH = "$2y$10$71ci0XkWW/RCU.3ytmuKYu9RQagxSBAEnzEz98dxR1K8/jM5GZlAG"
HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    "Accept-Encoding": "gzip",
}


class Target:
    def __init__(self, name, url, context, auth):
        match = re.match(r"(https?)://127\.0\.0\.1:(\d+)/metrics", url)
        self.name, self.scheme, self.port, self.context = name, match.group(1), int(match.group(2)), context
        self.headers = dict(HEADERS)
        if auth:
            token = base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        self.conn = None

    def connect(self):
        if self.scheme == "https":
            return http.client.HTTPSConnection("localhost", self.port, context=self.context, timeout=60)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def scrape(self, fresh):
        start = time.perf_counter()
        if fresh or self.conn is None:
            if self.conn is not None:
                self.conn.close()
            self.conn = self.connect()
        self.conn.request("GET", "/metrics", headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        took = time.perf_counter() - start
        if response.status != 200:
            sys.exit(f"{self.name}: HTTP {response.status}")
        return took, body


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, default=128)
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--batch", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="shmetrics-secure-cost-") as base:
        directory = os.path.join(base, "metrics")
        os.mkdir(directory)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", os.path.join(base, "server.key"), "-out", os.path.join(base, "server.crt"),
                        "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                       check=True, capture_output=True)
        tls_yml = os.path.join(base, "tls.yml")
        with open(tls_yml, "w") as f:
            f.write("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")
        auth_yml = os.path.join(base, "auth.yml")
        with open(auth_yml, "w") as f:
            f.write("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                    f"basic_auth_users:\n  prometheus: {HASH}\n")
        cleanup = Cleanup()
        start_generate(BIN, directory, ["--processes", str(args.processes), "--series", str(args.series),
                                        "--ops", "10"], cleanup)
        context = ssl.create_default_context(cafile=os.path.join(base, "server.crt"))
        try:
            targets = []
            for name, extra, auth in [("plain HTTP", [], False), ("TLS", ["--web.config.file", tls_yml], False),
                                      ("TLS + basic auth", ["--web.config.file", auth_yml], True)]:
                _, url = start_serve(BIN, directory, cleanup, ["--compact-interval-secs", "0", *extra],
                                     self_metrics=True)
                targets.append(Target(name, url, context, auth))
            size = len(targets[0].scrape(False)[1])
            for fresh in (False, True):
                for t in targets:
                    for _ in range(5):
                        t.scrape(fresh)  # warm (and the first bcrypt)
                times = {t.name: [] for t in targets}
                for _ in range(args.rounds):
                    for t in targets:
                        for _ in range(args.batch):
                            times[t.name].append(t.scrape(fresh)[0])
                base_ms = statistics.median(times[targets[0].name]) * 1e3
                how = "a new connection per scrape" if fresh else "one kept-alive connection"
                print(f"{args.processes} live writers x {args.series} series, OpenMetrics gzip ({size} bytes), {how}:")
                for t in targets:
                    ms = statistics.median(times[t.name]) * 1e3
                    print(f"  {t.name:17} {ms:7.2f} ms median ({ms / base_ms:.2f}x, {ms - base_ms:+.2f} ms)")
        finally:
            cleanup.all()


if __name__ == "__main__":
    main()
