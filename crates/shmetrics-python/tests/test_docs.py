"""The Python examples of README.md and docs/python.md, run as printed.

Each block runs in an interpreter of its own (a fresh process: the drop-in's switch and the
default registry are per process), in an empty working directory. README's blocks run with
``PROMETHEUS_MULTIPROC_DIR`` unset, as a user who copies them would; docs/python.md's with
it set to a fresh directory, as the page says to. The WSGI app of the gunicorn recipe is
called with the requests gunicorn would pass it. The vLLM launcher is not run: it needs
vLLM; the drop-in lines it is made of are the install block run here.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]


def python_blocks(path: pathlib.Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), re.S | re.M)


def run(code: str, tmp_path: pathlib.Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    script = tmp_path / "example.py"
    script.write_text(code)
    return subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )


def clean_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir", "SHMETRICS_PROMETHEUS_CLIENT"):
        env.pop(name, None)
    return env


README_BLOCKS = python_blocks(ROOT / "README.md")
DOCS_BLOCKS = python_blocks(ROOT / "docs/python.md")


def test_the_blocks_are_found():
    assert len(README_BLOCKS) == 2, README_BLOCKS
    assert len(DOCS_BLOCKS) == 5, DOCS_BLOCKS


@pytest.mark.parametrize("index", range(len(README_BLOCKS)))
def test_readme_python_examples_run_as_printed(index, tmp_path):
    out = run(README_BLOCKS[index], tmp_path, clean_env())
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr


def test_readme_native_api_example_prints_its_metrics(tmp_path):
    (native,) = [b for b in README_BLOCKS if "shmetrics.Counter" in b]
    out = run(native, tmp_path, clean_env())
    assert out.returncode == 0, out.stderr
    assert 'http_requests_total{code="200"} 1.0' in out.stdout, out.stdout
    assert "http_latency_seconds_count 1\n" in out.stdout, out.stdout


def docs_env(tmp_path: pathlib.Path) -> dict[str, str]:
    env = clean_env()
    directory = tmp_path / "metrics"
    directory.mkdir()
    env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return env


@pytest.mark.parametrize("index", range(len(DOCS_BLOCKS)))
def test_docs_python_examples_run_as_printed(index, tmp_path):
    block = DOCS_BLOCKS[index]
    if "from vllm" in block:
        pytest.skip("needs vLLM; its drop-in lines are the install block")
    code = block
    if block.lstrip().startswith("# app.py"):
        # The WSGI app, called as gunicorn calls it: a request, then a scrape.
        code += textwrap.dedent(
            """
            responses = []
            start = lambda status, headers: responses.append((status, headers))
            app({"PATH_INFO": "/hello"}, start)
            body = b"".join(app({"PATH_INFO": "/metrics"}, start)).decode()
            assert [r[0] for r in responses] == ["200 OK", "200 OK"], responses
            print(body)
            """
        )
    out = run(code, tmp_path, docs_env(tmp_path))
    assert out.returncode == 0, out.stderr
    if block.lstrip().startswith("# app.py"):
        assert 'app_requests_total{path="/hello"} 1.0' in out.stdout, out.stdout
