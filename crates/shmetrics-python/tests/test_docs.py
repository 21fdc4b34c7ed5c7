"""The Python examples of README.md and docs/python.md, run as printed.

Each block runs in an interpreter of its own (a fresh process: the drop-in's switch and the
default registry are per process), in an empty working directory. README's blocks run with
``PROMETHEUS_MULTIPROC_DIR`` unset, as a user who copies them would; docs/python.md's with
it set to a fresh directory, as the page says to. The WSGI app of the gunicorn recipe is
called with the requests gunicorn would pass it, and the gunicorn command line runs as
printed. The vLLM launcher and ``vllm serve`` line run against a stand-in ``vllm`` package
(on ``PYTHONPATH``, with a ``vllm`` console script on ``PATH``) that registers and updates
metrics through ``prometheus_client`` as vLLM's stat logger does.
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

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
    # OpenMetrics, with the observation's exemplar on its bucket.
    assert 'http_latency_seconds_bucket{le="0.5"} 1 # {trace_id="4bf92f3577b34da6"} 0.27 ' in out.stdout
    assert out.stdout.rstrip("\n").endswith("# EOF"), out.stdout


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
        return  # test_the_vllm_launcher_writes_segments
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


# A stand-in for vLLM's CLI entry point: registers metrics as vLLM's PrometheusStatLogger
# does (names, labels, a mostrecent gauge, a histogram) and records one request for the
# model given on the command line.
VLLM_STAND_IN = """
import sys
from prometheus_client import Counter, Gauge, Histogram

def main():
    model = sys.argv[-1] if len(sys.argv) > 2 else "stand-in"
    labels = ["model_name", "engine"]
    Counter("vllm:prompt_tokens", "Number of prefill tokens processed.", labels).labels(model, "0").inc(42)
    Gauge("vllm:num_requests_running", "Requests in the batch.", labels,
          multiprocess_mode="mostrecent").labels(model, "0").set(3)
    Histogram("vllm:time_to_first_token_seconds", "Time to first token.", labels,
              buckets=[0.01, 0.1, 1.0]).labels(model, "0").observe(0.05)
"""


def vllm_stand_in(tmp_path: pathlib.Path) -> dict[str, str]:
    """Writes the stand-in package and console script; returns the environment that finds
    them (PYTHONPATH, PATH), the drop-in switch and the directory unset."""
    package = tmp_path / "stand-in" / "vllm" / "entrypoints" / "cli"
    package.mkdir(parents=True)
    for init in (package.parents[1], package.parent, package):
        (init / "__init__.py").write_text("")
    (package / "main.py").write_text(VLLM_STAND_IN)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "vllm"
    script.write_text(f"#!{sys.executable}\nfrom vllm.entrypoints.cli.main import main\nmain()\n")
    script.chmod(0o755)
    env = clean_env()
    env["PYTHONPATH"] = str(tmp_path / "stand-in")
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"
    return env


def render(directory: str) -> str:
    code = f"import shmetrics; print(shmetrics.generate_latest(path={directory!r}).decode())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def shell_block(path: pathlib.Path, first: str) -> str:
    blocks = re.findall(r"^```sh\n(.*?)^```", path.read_text(), re.S | re.M)
    (block,) = [b for b in blocks if b.startswith(first)]
    return block


def assert_vllm_wrote(directory: pathlib.Path, created: set[str], model: str) -> None:
    assert created, "no file written"
    assert not [f for f in created if f.endswith(".db")], created
    text = render(str(directory))
    assert f'vllm:prompt_tokens_total{{engine="0",model_name="{model}"}} 42.0' in text, text
    assert f'vllm:num_requests_running{{engine="0",model_name="{model}"}} 3.0' in text, text


def test_the_vllm_launcher_writes_segments(tmp_path):
    (launcher,) = [b for b in DOCS_BLOCKS if "from vllm" in b]
    env = vllm_stand_in(tmp_path)
    directory = tmp_path / "metrics"
    directory.mkdir()
    env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    out = run(launcher, tmp_path, env)
    assert out.returncode == 0, out.stderr
    assert_vllm_wrote(directory, set(os.listdir(directory)), "stand-in")


def test_the_vllm_serve_line_runs_as_printed(tmp_path):
    line = shell_block(ROOT / "docs/python.md", "SHMETRICS_PROMETHEUS_CLIENT=1 PROMETHEUS_MULTIPROC_DIR=")
    directory = pathlib.Path("/tmp/vllm-metrics")
    directory.mkdir(exist_ok=True)
    before = set(os.listdir(directory))
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", line], cwd=tmp_path, env=vllm_stand_in(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    created = set(os.listdir(directory)) - before
    try:
        assert_vllm_wrote(directory, created, "MODEL")
    finally:
        for name in created:
            (directory / name).unlink()


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def requests_counted(body: str) -> float:
    match = re.search(r'^app_requests_total\{path="/hello"\} (\S+)$', body, re.M)
    return float(match.group(1)) if match else 0.0


def test_the_gunicorn_line_runs_as_printed(tmp_path):
    """gunicorn, 4 workers, as printed: requests spread over the workers are all counted in
    one /metrics (whichever worker answers it)."""
    line = shell_block(ROOT / "docs/python.md", "PROMETHEUS_MULTIPROC_DIR=/tmp/metrics gunicorn")
    for block in DOCS_BLOCKS:
        first = block.lstrip().splitlines()[0]
        for name in ("gunicorn.conf.py", "app.py"):
            if first.startswith(f"# {name}"):
                (tmp_path / name).write_text(block)
    pathlib.Path("/tmp/metrics").mkdir(exist_ok=True)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", 8000)) != 0, "port 8000 is taken: gunicorn's default, as printed"
    env = clean_env()
    env["PATH"] = f"{pathlib.Path(sys.executable).parent}:{env.get('PATH', '')}"
    server = subprocess.Popen(["bash", "-euo", "pipefail", "-c", line], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                before = requests_counted(get("http://127.0.0.1:8000/metrics"))
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "gunicorn did not answer within 60 s"
                time.sleep(0.2)
        for _ in range(40):
            assert get("http://127.0.0.1:8000/hello") == "ok"
        after = requests_counted(get("http://127.0.0.1:8000/metrics"))
        assert after - before == 40.0, (before, after)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert server.returncode == 0, server.stdout.read()
