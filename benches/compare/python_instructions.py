#!/usr/bin/env python3
"""Instructions per Python write call, counted by callgrind (independent of the machine's
load, unlike ``python_api.py``'s times): the same script run with ``--calls`` calls of the
operation and with none, the difference divided by ``--calls``.

    bash ci/python-test.sh                     # builds shmetrics into .venv (once)
    .venv/bin/python benches/compare/python_instructions.py [--config dropin] [--op labels_inc]

Configurations and operations as in ``python_api.py`` (``native``, ``dropin``, ``mp``;
``inc``, ``labels_inc``, ``observe``). Needs ``valgrind``.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from python_api import STATEMENTS  # noqa: E402

SETUP = """
import os, sys
config, calls = sys.argv[1], int(sys.argv[2])
if config == "native":
    import shmetrics as api
    kwargs = {}
else:
    if config == "dropin":
        import shmetrics.prometheus_client
        shmetrics.prometheus_client.install()
    import prometheus_client as api
    kwargs = {"registry": None}
c = api.Counter("requests", "Requests.", **kwargs)
cl = api.Counter("requests_by_code", "Requests.", ["code", "method"], **kwargs)
h = api.Histogram("latency_seconds", "Latency.", **kwargs)
def loop(n):
    for _ in range(n):
        STATEMENT
loop(1000)  # child creation, caches
loop(calls)
"""


def collected(python, config, op, calls, directory):
    """Instructions callgrind counts for the whole script with ``calls`` calls."""
    code = SETUP.replace("STATEMENT", STATEMENTS[op])
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=directory)
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", python, "-c", code, config, str(calls)],
        env=env, capture_output=True, text=True, check=True,
    ).stderr
    return int(re.search(r"Collected : (\d+)", out).group(1))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=["native", "dropin", "mp"], default="dropin")
    p.add_argument("--op", choices=sorted(STATEMENTS), default="labels_inc")
    p.add_argument("--calls", type=int, default=100_000)
    p.add_argument("--python", default=sys.executable)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="shmetrics-pyinstr-") as tmp:
        counts = []
        for calls in (0, args.calls):
            directory = os.path.join(tmp, str(calls))
            os.mkdir(directory)
            counts.append(collected(args.python, args.config, args.op, calls, directory))
    per_call = (counts[1] - counts[0]) / args.calls
    print(f"{args.config} {args.op}: {per_call:.0f} instructions per call ({args.calls} calls)")


if __name__ == "__main__":
    main()
