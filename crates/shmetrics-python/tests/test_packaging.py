"""The wheel as a user gets it: a manylinux wheel (auditwheel agrees) that installs into a
fresh venv with nothing but ``pip install <wheel>`` (no index, no other package) and works
there. ci/python-test.sh builds the wheel (``maturin build --release``) and passes it in
``SHMETRICS_WHEEL``.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

WHEEL = os.environ.get("SHMETRICS_WHEEL")

pytestmark = pytest.mark.skipif(
    not WHEEL, reason="needs SHMETRICS_WHEEL, a built wheel (ci/python-test.sh builds one)"
)


def test_the_wheel_is_manylinux():
    name = pathlib.Path(WHEEL).name
    assert re.search(r"-(manylinux_2_\d+|manylinux\d+)_[a-z0-9_]+\.whl$", name), name
    assert "-abi3-" in name, f"one wheel for every Python 3 version: {name}"
    out = subprocess.run(
        [sys.executable, "-m", "auditwheel", "show", WHEEL], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert re.search(r'is consistent with the following platform tag: "manylinux', text), text


def test_the_wheel_installs_alone_and_works(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    # No index: the wheel needs nothing else.
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-index", "--disable-pip-version-check", WHEEL],
        check=True,
        timeout=300,
    )
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    code = (
        "import shmetrics\n"
        "c = shmetrics.Counter('installed_total', 'From the installed wheel.', ['k'])\n"
        "c.labels('v').inc(3)\n"
        "print(shmetrics.generate_latest().decode())\n"
    )
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(metrics))
    env.pop("PYTHONPATH", None)
    out = subprocess.run([python, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert 'installed_total{k="v"} 3.0' in out.stdout, out.stdout
    location = subprocess.run(
        [python, "-c", "import shmetrics; print(shmetrics.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    ).stdout
    assert location.startswith(str(venv)), f"imported from {location}, not the venv"
