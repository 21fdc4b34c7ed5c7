"""The drop-in's mechanics: one line (or one environment variable) switches unchanged
prometheus_client code to shmetrics, whatever the import order, fork-safe."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import collect, sample_value


def segment_files(path):
    return sorted(f for f in os.listdir(path) if f.endswith(".shm"))


def db_files(path):
    return sorted(f for f in os.listdir(path) if f.endswith(".db"))


def run_python(code, metrics_dir, **env):
    full_env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=metrics_dir)
    full_env.pop("SHMETRICS_PROMETHEUS_CLIENT", None)
    full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=full_env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_install_after_prometheus_client_was_imported(metrics_dir):
    run_python(
        """
        import prometheus_client
        from prometheus_client import Counter, Histogram
        import shmetrics.prometheus_client
        shmetrics.prometheus_client.install()
        Counter('c', 'help', ['x']).labels('a').inc(2)
        Histogram('h', 'help', buckets=[1]).observe(0.5)
        """,
        metrics_dir,
    )
    assert db_files(metrics_dir) == [] and len(segment_files(metrics_dir)) == 1
    assert sample_value(metrics_dir, "c_total", {"x": "a"}) == 2
    assert sample_value(metrics_dir, "h_bucket", {"le": "1.0"}) == 1


def test_install_before_prometheus_client_is_imported(metrics_dir):
    out = run_python(
        """
        import sys
        import shmetrics.prometheus_client
        shmetrics.prometheus_client.install()
        from prometheus_client import Counter, Gauge
        Counter('c', 'help').inc(3)
        Gauge('g', 'help', multiprocess_mode='max').set(7)
        print(type(Counter('d', 'help')._value).__module__)
        """,
        metrics_dir,
    )
    assert out.strip() == "shmetrics._native"
    assert db_files(metrics_dir) == []
    assert sample_value(metrics_dir, "c_total") == 3
    assert sample_value(metrics_dir, "g") == 7


def test_environment_variable_needs_no_code_change(metrics_dir):
    out = run_python(
        """
        from prometheus_client import Counter, Summary, values
        Counter('c', 'help').inc(5)
        Summary('s', 'help').observe(2)
        print(values.ValueClass.__name__)
        """,
        metrics_dir,
        SHMETRICS_PROMETHEUS_CLIENT="1",
    )
    assert out.strip() == "_ShmetricsValue"
    assert db_files(metrics_dir) == []
    assert sample_value(metrics_dir, "c_total") == 5
    assert sample_value(metrics_dir, "s_sum") == 2


SWITCH_CHECK = """
from prometheus_client import Counter, values
Counter('c', 'help').inc(2)
print(values.ValueClass.__name__)
"""


def check_switch_starts_cleanly(python, metrics_dir):
    """The environment switch installs the drop-in at start-up with nothing on stderr: the
    ``.pth`` hook runs after the path entries that make the package importable."""
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=metrics_dir, SHMETRICS_PROMETHEUS_CLIENT="1")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([python, "-c", SWITCH_CHECK], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.strip() == "_ShmetricsValue"
    assert db_files(metrics_dir) == [] and len(segment_files(metrics_dir)) == 1


def test_environment_switch_starts_cleanly_in_an_editable_install(metrics_dir):
    check_switch_starts_cleanly(sys.executable, metrics_dir)


@pytest.mark.skipif(
    not os.environ.get("SHMETRICS_WHEEL"),
    reason="needs SHMETRICS_WHEEL, a built wheel (ci/python-test.sh builds one)",
)
def test_environment_switch_starts_cleanly_from_an_installed_wheel(metrics_dir, tmp_path):
    import prometheus_client

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    version = prometheus_client.__version__ if hasattr(prometheus_client, "__version__") else None
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("prometheus_client")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", os.environ["SHMETRICS_WHEEL"],
         f"prometheus_client=={version}"],
        check=True,
        timeout=300,
    )
    check_switch_starts_cleanly(python, metrics_dir)


def test_without_the_switch_prometheus_client_is_untouched(metrics_dir):
    run_python(
        """
        from prometheus_client import Counter
        Counter('c', 'help').inc(5)
        """,
        metrics_dir,
    )
    [db] = db_files(metrics_dir)
    assert db.startswith("counter_")
    assert segment_files(metrics_dir) == []


def test_methods_are_bound_to_native_calls(workers):
    w = workers()
    result = w.run(
        "c = Counter('c', 'help', ['x'], registry=None)\n"
        "g = Gauge('g', 'help', registry=None)\n"
        "h = Histogram('h', 'help', registry=None)\n"
        "s = Summary('s', 'help', registry=None)\n"
        "child = c.labels('a')\n"
        "result = [type(m).__name__ for m in (child.inc, g.inc, g.dec, g.set, h.observe, s.observe)]\n"
        "result.append(c.labels('a') is child)"
    )
    assert result == ["builtin_function_or_method"] * 6 + [True]


def test_subclass_overrides_are_respected(workers, metrics_dir):
    w = workers()
    w.run(
        "class Doubling(Counter):\n"
        "    def inc(self, amount=1, exemplar=None):\n"
        "        super().inc(2 * amount)\n"
        "class Shifted(Histogram):\n"
        "    def observe(self, amount, exemplar=None):\n"
        "        super().observe(amount + 10)\n"
        "Doubling('d', 'help', registry=None).inc(3)\n"
        "Shifted('s', 'help', buckets=[5, 20], registry=None).observe(1)"
    )
    assert sample_value(metrics_dir, "d_total") == 6
    assert sample_value(metrics_dir, "s_bucket", {"le": "5.0"}) == 0
    assert sample_value(metrics_dir, "s_bucket", {"le": "20.0"}) == 1
    assert sample_value(metrics_dir, "s_sum") == 11


def test_in_process_registry_still_reads_values(workers):
    """Code that reads its own registry (tests, /metrics of one process) sees this process's
    values through the value objects."""
    w = workers()
    result = w.run(
        "from prometheus_client import CollectorRegistry\n"
        "r = CollectorRegistry()\n"
        "h = Histogram('h', 'help', buckets=[1, 2], registry=r)\n"
        "s = Summary('s', 'help', registry=r)\n"
        "c = Counter('c', 'help', registry=r)\n"
        "h.observe(1.5); h.observe(0.5); s.observe(4); c.inc(2)\n"
        "result = [r.get_sample_value(n, l) for n, l in [('h_bucket', {'le': '1.0'}), ('h_bucket', {'le': '2.0'}),"
        " ('h_count', {}), ('h_sum', {}), ('s_count', {}), ('s_sum', {}), ('c_total', {})]]"
    )
    assert result == [1.0, 2.0, 2.0, 2.0, 1.0, 4.0, 2.0]


def test_semantics_kept(workers):
    w = workers()
    w.run("c = Counter('c', 'help', registry=None); g = Gauge('g', 'help', registry=None, multiprocess_mode='mostrecent')")
    for code, error in [
        ("c.inc(-1)", "ValueError: Counters can only be incremented by non-negative amounts"),
        ("c._value.set(5)", "NotImplementedError: counter c: a counter can only be set back to 0"),
        ("g.inc()", "RuntimeError: inc must not be used with the mostrecent mode"),
        ("Counter('l', 'help', ['a'], registry=None).inc()", "ValueError: counter metric is missing label values"),
        ("Histogram('hl', 'help', ['a'], registry=None).observe(1)", "ValueError: histogram metric is missing label values"),
    ]:
        with pytest.raises(AssertionError, match=error):
            w.run(code)


EXEMPLAR_CODE = """
import os
if legacy:
    from prometheus_client import validation
    validation.enable_legacy_validation()
c = Counter('c_ex', 'help', registry=None)
h = Histogram('h_ex', 'help', registry=None, buckets=[1])
result = []
for exemplar in exemplars:
    outcome = []
    for call in (lambda: c.inc(1, exemplar), lambda: h.observe(0.5, exemplar)):
        try:
            call()
            outcome.append(None)
        except Exception as e:
            outcome.append(f"{type(e).__name__}: {e}")
    result.append(outcome)
if legacy:
    validation.disable_legacy_validation()
"""

EXEMPLARS = [
    {":o)": "smile"},
    {"trace.id": "x"},
    {"__reserved": "x"},
    {"trace_id": "x" * 120},
    {"trace_id": "x" * 121},
    {"é": "ü"},
    {},
    {"trace_id": "abc", "span_id": "def"},
]


@pytest.mark.parametrize("legacy", [False, True])
def test_exemplars_are_accepted_and_refused_as_by_prometheus_client(workers, tmp_path, legacy):
    """Exemplar checks are prometheus_client's own, in its name-validation mode (UTF-8 names
    by default in 0.26, the legacy rules when enabled; before 0.22, legacy rules only)."""
    if legacy:
        pytest.importorskip("prometheus_client.validation", reason="name-validation modes since 0.22")
    outcomes = {}
    for mode in ("plain", "dropin"):
        directory = tmp_path / mode
        directory.mkdir()
        outcomes[mode] = workers(mode, str(directory)).run(EXEMPLAR_CODE, exemplars=EXEMPLARS, legacy=legacy)
    assert outcomes["dropin"] == outcomes["plain"]
    refused = [o[0] is not None for o in outcomes["plain"]]
    assert any(refused) and not all(refused)


def test_counter_reset_works_as_in_multiprocess_mode(workers, tmp_path):
    """``Counter.reset()`` (a logical restart within a process) sets that process's share to
    zero: the merged counter drops by it, as in plain multiprocess mode."""
    merged = {}
    for mode in ("plain", "dropin"):
        directory = tmp_path / mode
        directory.mkdir()
        first, second = workers(mode, str(directory)), workers(mode, str(directory))
        first.run("c = Counter('c', 'help', registry=None); c.inc(3)")
        second.run("c = Counter('c', 'help', registry=None); c.inc(2)")
        before = sample_value(str(directory), "c_total")
        own = first.run("c.reset(); result = c._value.get()")
        after = sample_value(str(directory), "c_total")
        first.run("c.inc(1)")
        merged[mode] = (before, own, after, sample_value(str(directory), "c_total"))
    assert merged["dropin"] == merged["plain"] == (5.0, 0.0, 2.0, 3.0)


def test_multiprocess_collector_reads_shmetrics(workers, metrics_dir):
    writer, reader = workers(), workers()
    writer.run("Counter('c', 'help', ['x'], registry=None).labels('y').inc(4)")
    text = reader.run(
        "from prometheus_client import CollectorRegistry, generate_latest\n"
        "from prometheus_client.multiprocess import MultiProcessCollector\n"
        "r = CollectorRegistry(); MultiProcessCollector(r)\n"
        "result = generate_latest(r).decode()"
    )
    assert text == '# HELP c_total help\n# TYPE c_total counter\nc_total{x="y"} 4.0\n'


def test_gunicorn_preload_fork(workers, metrics_dir):
    """Metrics created in a master before forking workers (gunicorn --preload): every
    worker writes into its own segment, and the master's stay its own."""
    master = workers()
    result = master.run(
        "import shmetrics\n"
        "c = Counter('requests', 'help', ['w'], registry=None)\n"
        "g = Gauge('in_flight', 'help', registry=None, multiprocess_mode='livesum')\n"
        "c.labels('m').inc()\n"
        "pids = []\n"
        "for i in range(3):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        c.labels('m').inc(10)\n"
        "        c.labels(str(i)).inc(i + 1)\n"
        "        g.inc(100)\n"
        "        os._exit(0 if shmetrics.fork_recreations() == 1 else 3)\n"
        "    pids.append(pid)\n"
        "codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]\n"
        "g.inc(5)\n"
        "result = (codes, c.labels('m')._value.get())"
    )
    assert result == ([0, 0, 0], 1.0)
    assert sample_value(metrics_dir, "requests_total", {"w": "m"}) == 31
    assert [sample_value(metrics_dir, "requests_total", {"w": str(i)}) for i in range(3)] == [1, 2, 3]
    # The dead workers' in-flight count is gone; the master's own is live.
    assert sample_value(metrics_dir, "in_flight") == 5
    assert len(segment_files(metrics_dir)) == 4


def test_multiprocessing_fork(workers, metrics_dir):
    w = workers()
    w.run(
        "import multiprocessing\n"
        "c = Counter('jobs', 'help', registry=None)\n"
        "h = Histogram('job_seconds', 'help', buckets=[1, 10], registry=None)\n"
        "def job(n):\n"
        "    for _ in range(n):\n"
        "        c.inc(); h.observe(n)\n"
        "ctx = multiprocessing.get_context('fork')\n"
        "procs = [ctx.Process(target=job, args=(n,)) for n in range(1, 5)]\n"
        "for p in procs: p.start()\n"
        "for p in procs: p.join()\n"
        "assert [p.exitcode for p in procs] == [0, 0, 0, 0]"
    )
    assert sample_value(metrics_dir, "jobs_total") == 10
    assert sample_value(metrics_dir, "job_seconds_bucket", {"le": "1.0"}) == 1
    assert sample_value(metrics_dir, "job_seconds_count") == 10
    assert sample_value(metrics_dir, "job_seconds_sum") == 1 + 4 + 9 + 16


def test_uninstall_restores_prometheus_client(workers, metrics_dir):
    w = workers()
    result = w.run(
        "import shmetrics.prometheus_client as spc\n"
        "from prometheus_client import values, metrics, multiprocess\n"
        "before = Counter('a', 'help', registry=None)\n"
        "spc.uninstall()\n"
        "result = [spc.installed(), values.ValueClass.__name__, 'inc' in vars(Counter('b', 'help', registry=None)),\n"
        "          metrics.Histogram.observe.__module__, multiprocess.MultiProcessCollector.collect.__module__]\n"
        "before.inc(2)\n"
        "spc.install()\n"
        "result.append(spc.installed())"
    )
    # The worker is forked from this process: its value class before install() is this one's
    # (MutexValue when prometheus_client was first imported without PROMETHEUS_MULTIPROC_DIR).
    from prometheus_client import values

    before = values.ValueClass.__name__
    assert result == [False, before, False, "prometheus_client.metrics", "prometheus_client.multiprocess", True]
    assert sample_value(metrics_dir, "a_total") == 2


def test_labels_fast_path_matches_prometheus_client(workers):
    w = workers()
    result = w.run(
        "c = Counter('c', 'help', ['a', 'b'], registry=None)\n"
        "x = c.labels('1', 'y')\n"
        "result = [c.labels('1', 'y') is x, c.labels(1, 'y') is x, c.labels(a=1, b='y') is x,\n"
        "          c.labels(['l'], 'y') is c.labels(\"['l']\", 'y')]\n"
        "for bad in [lambda: c.labels('1'), lambda: c.labels('1', 'y', 'z'), lambda: x.labels('1', 'y'),\n"
        "            lambda: c.labels('1', b='y')]:\n"
        "    try:\n"
        "        bad()\n"
        "        result.append('no error')\n"
        "    except ValueError:\n"
        "        result.append('ValueError')\n"
        "class Own(Counter):\n"
        "    def labels(self, *values):\n"
        "        return super().labels(*values)\n"
        "o = Own('o', 'help', ['a'], registry=None)\n"
        "o.labels('x').inc()\n"
        "c.clear()\n"
        "y = c.labels('1', 'y')\n"
        "result += [type(c.labels.__self__).__name__, type(o.labels.__self__).__name__, y is x, c._metrics[('1', 'y')] is y,\n"
        "           c.labels('1', 'y') is y]\n"
        "c.remove('1', 'y')\n"
        "z = c.labels('1', 'y')\n"
        "result += [z is y, c._metrics[('1', 'y')] is z, c.labels('1', 'y') is z]\n"
        "import shmetrics.prometheus_client as spc\n"
        "spc.uninstall()\n"
        "c.clear()\n"
        "result += ['labels' in vars(c), c.labels('1', 'y') is z]\n"
        "spc.install()"
    )
    # After clear() and remove(), labels() gives the child prometheus_client holds (the fast
    # path follows the dict clear() puts in place); uninstall() unbinds the fast path.
    assert result == [True, True, True, True] + ["ValueError"] * 4 + [
        "FastLabels", "Own", False, True, True, False, True, True, False, False]


def test_native_labels_follow_the_dict_and_prometheus_client_rules(workers):
    # The native labels() remembers recent label sets by the identity of their strings; it
    # must still answer exactly as prometheus_client's own labels() over the current dict.
    w = workers()
    result = w.run(
        "import sys\n"
        "c = Counter('c', 'help', ['a', 'b'], registry=None)\n"
        "x = c.labels('1', 'y')\n"
        "z = c.labels('1', 'z')\n"  # same first value: the whole label set decides
        "result = [c.labels('1', 'y') is x, c.labels(a='1', b='y') is x,\n"
        "          z is not x and all(c.labels('1', v) is k for _ in range(3) for v, k in [('y', x), ('z', z)])]\n"
        "c._metrics.clear()\n"  # a reset some applications do by hand
        "y = c.labels('1', 'y')\n"
        "result += [y is not x, c.labels('1', 'y') is y, c._metrics[('1', 'y')] is y]\n"
        "kids = {str(i): c.labels(str(i), 'y') for i in range(20)}\n"  # more than remembered
        "result.append(all(c.labels(k, 'y') is v for _ in range(3) for k, v in kids.items()))\n"
        "class Unhashable:\n"
        "    __hash__ = None\n"
        "    def __str__(self):\n"
        "        return '1'\n"
        "result.append(c.labels(Unhashable(), 'y') is y)\n"
        "names = [f'l{i}' for i in range(10)]\n"
        "wide = Counter('wide', 'help', names, registry=None)\n"
        "w1 = wide.labels(*names)\n"
        "result.append(all(wide.labels(*names) is w1 for _ in range(3)))\n"
        "s = 'kept'\n"
        "c.labels(s, 'y')\n"
        "before = sys.getrefcount(s)\n"
        "for _ in range(1000):\n"
        "    c.labels(s, 'y')\n"
        "result.append(sys.getrefcount(s) - before <= 1)\n"  # remembered once, not per call
        "labels = c.labels\n"
        "del c, kids, x, y\n"
        "import gc\n"
        "gc.collect()\n"
        "try:\n"
        "    labels('new', 'y')\n"
        "except ReferenceError:\n"
        "    result.append('ReferenceError')\n"
        "import inspect\n"
        "result.append(str(inspect.signature(labels)))"
    )
    assert result == [True, True, True, True, True, True, True, True, True, True, "ReferenceError",
                      "(*labelvalues, **labelkwargs)"]


def test_without_a_directory_prometheus_client_keeps_its_memory_values(tmp_path):
    env = dict(os.environ)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    code = textwrap.dedent(
        """
        import shmetrics.prometheus_client
        shmetrics.prometheus_client.install()
        from prometheus_client import Counter, REGISTRY
        Counter('c', 'help').inc(2)
        print(type(Counter('d', 'help')._value).__name__, REGISTRY.get_sample_value('c_total'))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["MutexValue", "2.0"]


def test_environment_variable_without_prometheus_client_keeps_the_native_api(metrics_dir, tmp_path):
    """With the switch set but no prometheus_client importable, `import shmetrics` warns and
    the native API works."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "prometheus_client.py").write_text("raise ImportError('prometheus_client is not installed')\n")
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=metrics_dir, SHMETRICS_PROMETHEUS_CLIENT="1")
    env["PYTHONPATH"] = str(blocker)
    code = "import warnings, shmetrics\nshmetrics.Counter('c', 'help').inc(4)\nprint('ok')"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    assert "drop-in cannot be installed" in proc.stderr
    assert sample_value(metrics_dir, "c_total") == 4


def test_metrics_over_the_limits_raise_nothing_and_are_reported(metrics_dir):
    """prometheus_client takes any label value and bucket count: under the drop-in, a metric
    or series over shmetrics' limits stays in prometheus_client's own file instead of
    raising, and the reader leaves it out of the exposition and reports it."""
    run_python(
        """
        import shmetrics.prometheus_client
        shmetrics.prometheus_client.install()
        from prometheus_client import Counter, Histogram
        c = Counter('c', 'help', ['path'])
        c.labels('short').inc(2)
        c.labels('p' * 5000).inc(3)
        Histogram('wide', 'help', buckets=list(range(300))).observe(1)
        """,
        metrics_dir,
    )
    assert len(segment_files(metrics_dir)) == 1
    assert db_files(metrics_dir) != []
    from shmetrics.prometheus_client import ShmetricsCollector

    collector = ShmetricsCollector(None, path=metrics_dir)
    families = {m.name: m for m in collector.collect()}
    assert sorted(families) == ["c"]
    assert [(s.labels, s.value) for s in families["c"].samples] == [({"path": "short"}, 2.0)]
    details = sorted(p[2] for p in collector.last_report()["problems"] if p[1] == "legacy_unsupported")
    assert len(details) == 2, collector.last_report()
    assert "more than the limit of 4096" in details[0]
    assert "wide has 300 buckets, more than the limit of 256" in details[1]


def test_a_metric_created_after_the_directory_changed_writes_into_the_new_one(tmp_path):
    """As prometheus_client opens its files: the directory of the moment a metric is
    created; metrics created before keep theirs."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    code = textwrap.dedent(
        f"""
        import os
        from prometheus_client import Counter
        a = Counter('a', 'help')
        a.inc(1)
        os.environ['PROMETHEUS_MULTIPROC_DIR'] = {str(second)!r}
        b = Counter('b', 'help')
        b.inc(2)
        a.inc(10)
        """
    )
    run_python(code, str(first), SHMETRICS_PROMETHEUS_CLIENT="1")
    assert sorted(collect(str(first))) == ["a"]
    assert sample_value(str(first), "a_total") == 11
    assert sorted(collect(str(second))) == ["b"]
    assert sample_value(str(second), "b_total") == 2
    assert db_files(str(first)) == db_files(str(second)) == []


def test_a_fresh_directory_per_test_in_one_process(tmp_path):
    """The way applications test their metrics: each test sets a new directory, creates its
    metrics, reads them with MultiProcessCollector, closes the files and removes the
    directory. Every test sees exactly its own values, and descriptors do not pile up."""
    code = textwrap.dedent(
        f"""
        import os, shutil, tempfile
        from prometheus_client import CollectorRegistry, Counter, Gauge, values
        from prometheus_client.multiprocess import MultiProcessCollector
        def fds():
            return len(os.listdir('/proc/self/fd'))
        counts = []
        for i in range(300):
            d = tempfile.mkdtemp(dir={str(tmp_path)!r})
            os.environ['PROMETHEUS_MULTIPROC_DIR'] = d
            values.ValueClass = values.MultiProcessValue()
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            Counter('c', 'help', registry=None).inc(i)
            Gauge('g', 'help', registry=None, multiprocess_mode='livesum').set(2 * i)
            assert registry.get_sample_value('c_total') == i, (i, registry.get_sample_value('c_total'))
            assert registry.get_sample_value('g') == 2 * i
            del os.environ['PROMETHEUS_MULTIPROC_DIR']
            # Since 0.25.
            getattr(values, 'close_all_multiprocess_files', lambda: None)()
            values.ValueClass = values.MutexValue
            shutil.rmtree(d)
            counts.append(fds())
        assert max(counts[100:]) <= counts[99] + 4, (counts[99], max(counts[100:]))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={k: v for k, v in dict(os.environ, SHMETRICS_PROMETHEUS_CLIENT="1").items() if k != "PROMETHEUS_MULTIPROC_DIR"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def test_custom_process_identifiers_are_processes(tmp_path):
    """``values.ValueClass = MultiProcessValue(process_identifier)``: the identifier decides
    which process a value belongs to (the ``pid`` label, the live modes), and a value asks it
    at every operation, as prometheus_client's files do; ``mark_process_dead`` ends a
    logical process's liveness."""
    code = textwrap.dedent(
        """
        from prometheus_client import CollectorRegistry, Counter, Gauge, values
        from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        get = registry.get_sample_value
        values.ValueClass = values.MultiProcessValue(lambda: 123)
        g1 = Gauge('g', 'help', registry=None)
        l1 = Gauge('l', 'help', registry=None, multiprocess_mode='livesum')
        values.ValueClass = values.MultiProcessValue(lambda: 456)
        g2 = Gauge('g', 'help', registry=None)
        l2 = Gauge('l', 'help', registry=None, multiprocess_mode='livesum')
        g1.set(1); g2.set(2); l1.set(10); l2.set(20)
        assert (get('g', {'pid': '123'}), get('g', {'pid': '456'}), get('l')) == (1, 2, 30)
        mark_process_dead(123)
        assert (get('g', {'pid': '123'}), get('g', {'pid': '456'}), get('l')) == (1, 2, 20)
        pid = 0
        values.ValueClass = values.MultiProcessValue(lambda: pid)
        c = Counter('c', 'help', registry=None)
        c.inc(2)
        pid = 1
        c.inc(1)
        assert get('c_total') == 3 and c._value.get() == 1
        print('ok')
        """
    )
    assert run_python(code, str(tmp_path), SHMETRICS_PROMETHEUS_CLIENT="1").strip() == "ok"
    assert db_files(str(tmp_path)) == []


FORK_AFTER_CHANGE = """
import os, shutil
from prometheus_client import Counter, values
if plain:
    values.ValueClass = values.MultiProcessValue()
a = Counter('a', 'help')
a.inc(1)
os.environ['PROMETHEUS_MULTIPROC_DIR'] = second
if remove_first:
    shutil.rmtree(first)
pid = os.fork()
if pid == 0:
    try:
        a.inc(5)
        Counter('b', 'help').inc(2)
    finally:
        os._exit(0)
_, status = os.waitpid(pid, 0)
assert status == 0, status
print('ok')
"""


@pytest.mark.parametrize("remove_first", [False, True])
def test_a_fork_after_the_directory_changed_writes_into_the_new_one(tmp_path, remove_first):
    """As prometheus_client reopens its files after a fork: a child forked after
    ``PROMETHEUS_MULTIPROC_DIR`` changed writes every metric, old ones too, into the new
    directory, even when the old one was removed."""
    totals = {}
    for mode in ("plain", "dropin"):
        first, second = tmp_path / mode / "first", tmp_path / mode / "second"
        first.mkdir(parents=True)
        second.mkdir()
        code = textwrap.dedent(
            f"plain = {mode == 'plain'}; first = {str(first)!r}; second = {str(second)!r}; "
            f"remove_first = {remove_first}\n"
        ) + FORK_AFTER_CHANGE
        extra = {} if mode == "plain" else {"SHMETRICS_PROMETHEUS_CLIENT": "1"}
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(first), **extra)
        if mode == "plain":
            env.pop("SHMETRICS_PROMETHEUS_CLIENT", None)
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
        assert proc.stderr == "", proc.stderr
        totals[mode] = (
            None if remove_first else sample_value(str(first), "a_total"),
            sample_value(str(second), "a_total"),
            sample_value(str(second), "b_total"),
        )
    assert totals["dropin"] == totals["plain"] == ((None if remove_first else 1.0), 5.0, 2.0)


def test_a_metric_shmetrics_cannot_store_is_said_in_words_when_created_and_read(metrics_dir):
    """A definition over the limits stays in prometheus_client's own file: a warning says so
    when the metric is created and when a collection leaves it out, in words (no Rust
    values)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import logging
                logging.basicConfig(level=logging.WARNING, format='%(message)s')
                from prometheus_client import CollectorRegistry, Histogram
                from prometheus_client.multiprocess import MultiProcessCollector
                Histogram('wide', 'help', buckets=list(range(300))).observe(1)
                registry = CollectorRegistry()
                MultiProcessCollector(registry)
                for _ in range(2):
                    assert registry.get_sample_value('wide_count') is None
                """
            ),
        ],
        env=dict(os.environ, PROMETHEUS_MULTIPROC_DIR=metrics_dir, SHMETRICS_PROMETHEUS_CLIENT="1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0] == (
        "shmetrics: histogram wide stays in prometheus_client's own files: wide has 300 buckets, "
        "more than the limit of 256"
    ), lines
    [db] = db_files(metrics_dir)
    assert lines[1] == (
        f"shmetrics: {os.path.join(os.path.realpath(metrics_dir), db)}: wide left out: wide has 300 buckets, "
        "more than the limit of 256 (legacy_unsupported)"
    ), lines
    assert len(lines) == 2, lines
