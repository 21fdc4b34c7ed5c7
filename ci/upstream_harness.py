"""Runs prometheus_client's own test suite against the shmetrics drop-in.

    python ci/upstream_harness.py TESTS_DIR [--full] [--version V]

TESTS_DIR is the ``tests/`` folder of a prometheus_client sdist (downloaded from the package
registry by ci/upstream-prometheus-client.sh; nothing of it is kept in this repository). The
interpreter running this harness must have that prometheus_client version, pytest and the
shmetrics wheel installed.

Three runs of ``test_multiprocess.py`` (of the whole suite with ``--full``):

1. plain ``prometheus_client`` in one pytest process: the baseline. A test that fails here
   fails for a reason of this machine (no network, certificates), not of the drop-in, and is
   only listed;
2. the drop-in on (``SHMETRICS_PROMETHEUS_CLIENT=1``) in one pytest process, every test
   after the others, as an application's suite runs;
3. the drop-in on, one interpreter per test of ``test_multiprocess.py``.

Every test that passes plain must pass with the drop-in in runs 2 and 3, except those listed
in ``EXPECTED`` with the reason. Exit status 1 otherwise, with the tests named.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from typing import Dict, List, Set

#: Tests that read prometheus_client's ``.db`` files themselves, which the drop-in does not
#: write: the reason each fails with the drop-in on.
EXPECTED: Dict[str, str] = {
    "test_multiprocess.py::TestMultiProcess::test_initialization_detects_pid_change":
        "lists the directory expecting counter_<pid>.db files; the drop-in writes shmetrics segments",
    "test_multiprocess.py::TestMultiProcess::test_merge_no_accumulate":
        "calls MultiProcessCollector.merge() on the .db file names itself; the drop-in writes none",
}

#: Test modules whose optional dependencies a version's suite may lack in the harness venv.
OPTIONAL_MODULES = {"test_asgi.py": "asgiref", "test_aiohttp.py": "aiohttp", "test_twisted.py": "twisted",
                    "test_django.py": "django"}


def outcomes(junit: str) -> Dict[str, str]:
    """Test id (``file::Class::name``) to ``passed``, ``failed`` or ``skipped``."""
    out: Dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        # "tests.test_x.TestY" or "tests.test_x" for a function
        parts = case.get("classname", "").split(".")
        file_index = next((i for i, p in enumerate(parts) if p.startswith("test_")), 0)
        file = parts[file_index] + ".py"
        rest = parts[file_index + 1:]
        test_id = "::".join([file, *rest, case.get("name", "")])
        if case.find("failure") is not None or case.find("error") is not None:
            out[test_id] = "failed"
        elif case.find("skipped") is not None:
            out[test_id] = "skipped"
        else:
            out[test_id] = "passed"
    return out


def pytest(tests_dir: str, targets: List[str], drop_in: bool, ignore: List[str]) -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("prometheus_multiproc_dir", None)
    if drop_in:
        env["SHMETRICS_PROMETHEUS_CLIENT"] = "1"
    else:
        env.pop("SHMETRICS_PROMETHEUS_CLIENT", None)
    with tempfile.TemporaryDirectory() as tmp:
        junit = os.path.join(tmp, "junit.xml")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
               "-o", "junit_family=xunit1", *[f"--ignore={i}" for i in ignore], *targets]
        proc = subprocess.run(cmd, cwd=os.path.dirname(tests_dir), env=env, capture_output=True, text=True,
                              timeout=900)
        if not os.path.exists(junit):
            sys.exit(f"pytest did not run ({' '.join(cmd)}):\n{proc.stdout}\n{proc.stderr}")
        return outcomes(junit)


def collected(tests_dir: str, target: str) -> List[str]:
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", target],
                          cwd=os.path.dirname(tests_dir), capture_output=True, text=True, timeout=300)
    return [line.strip() for line in proc.stdout.splitlines() if "::" in line]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("tests_dir")
    parser.add_argument("--full", action="store_true", help="the whole suite, not only test_multiprocess.py")
    parser.add_argument("--version", default="?")
    args = parser.parse_args()
    tests_dir = os.path.abspath(args.tests_dir)
    ignore = []
    for module, dependency in OPTIONAL_MODULES.items() if args.full else ():
        try:
            __import__(dependency)
        except ImportError:
            ignore.append(os.path.join("tests", module))
    targets = ["tests"] if args.full else ["tests/test_multiprocess.py"]

    plain = pytest(tests_dir, targets, drop_in=False, ignore=ignore)
    together = pytest(tests_dir, targets, drop_in=True, ignore=ignore)
    alone: Dict[str, str] = {}
    for test in collected(tests_dir, "tests/test_multiprocess.py"):
        short = test.split("tests/", 1)[-1]
        alone.update(pytest(tests_dir, [test], drop_in=True, ignore=[]) or {short: "failed"})

    environment: Set[str] = {t for t, o in plain.items() if o == "failed"}
    problems = []
    for name, run in (("in one process", together), ("one interpreter per test", alone)):
        failed = {t for t, o in run.items() if o == "failed"}
        unexpected = sorted(failed - environment - set(EXPECTED))
        # A test that depends on this machine (its network, certificates, timing) may fail
        # once either way: what passes when run again alone is listed, not failed; so is
        # what fails again alone without the drop-in too (it passed plain by chance: 0.26's
        # TestWsgiTLS::test_mtls_untrusted_client_cert_raises races the server's close).
        for test in list(unexpected):
            again = pytest(tests_dir, ["tests/" + test], drop_in=True, ignore=[])
            if again.get(test) == "passed":
                unexpected.remove(test)
                print(f"  failed once with the drop-in {name}, passed again alone: {test}")
                continue
            plain_again = pytest(tests_dir, ["tests/" + test], drop_in=False, ignore=[])
            if plain_again.get(test) == "failed":
                unexpected.remove(test)
                print(f"  failed with the drop-in {name} and again alone without it (this machine): {test}")
        missing = sorted(t for t in plain if t not in run and t.startswith("test_multiprocess.py")
                         and run is alone)
        if unexpected:
            problems.append(f"{name}: failed with the drop-in, passed plain: {', '.join(unexpected)}")
        if missing:
            problems.append(f"{name}: not run: {', '.join(missing)}")
        passed = sum(1 for o in run.values() if o == "passed")
        expected = sorted(failed & set(EXPECTED))
        print(f"prometheus_client {args.version}, drop-in {name}: {len(run)} tests, {passed} passed, "
              f"{len(expected)} expected failures, {sum(1 for o in run.values() if o == 'skipped')} skipped")
    for test in sorted(environment):
        print(f"  failing plain too (this machine), not compared: {test}")
    for test, reason in EXPECTED.items():
        print(f"  expected to fail with the drop-in: {test}: {reason}")
    if ignore:
        print(f"  not run (optional dependency missing): {', '.join(ignore)}")
    for problem in problems:
        print(f"FAIL {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
