"""``generate_latest`` through unchanged prometheus_client code once the drop-in is installed:
for a registry of the drop-in's collectors, the text exposition is written natively, and it
must be byte for byte what prometheus_client's own ``generate_latest`` writes for the same
merged families (in the installed release: the CI runs this file with each tested one);
every other registry, argument or name goes to prometheus_client's own."""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import random
import struct

import pytest
import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.utils import floatToGoString

import shmetrics.prometheus_client as dropin
from conftest import GAUGE_MODES, WORKLOAD_CODE, Worker
from shmetrics import _native
from shmetrics.prometheus_client import ShmetricsCollector


#: Values of every form ``floatToGoString`` writes, and label values that need escaping.
VALUES = [0.0, 0.25, 3.3, 1e-05, 1.5e-07, 123456.5, 1e6, 1234567.0, 10000000.5, 1e15, 1e16, 1e21, 2.5e300]
LABEL_VALUES = ["x", "with space", 'q"uote', "back\\slash", "new\nline", "é", ""]


def workload(seed):
    """A few processes' worth of random families of every kind, and their operations."""
    rng = random.Random(seed)
    specs = []
    for i in range(12):
        kind = rng.choice(["counter", "gauge", "gauge", "histogram", "summary", "info", "enum"])
        labelnames = ["a", "b", "z"][: rng.randint(0, 2)]
        extra = {}
        if kind == "gauge":
            extra["multiprocess_mode"] = rng.choice(GAUGE_MODES)
        if kind == "histogram":
            extra["buckets"] = sorted(rng.sample([0.1, 0.25, 1, 2.5, 1e6, 1234567.0, 1e15, 1e21], rng.randint(1, 5)))
        if kind == "enum":
            extra["states"] = ["starting", "running", "stopped"]
        name = f"m{i}_{kind}"
        documentation = rng.choice([f"help of {name}", "back\\slash and\nnewline", "é"])
        specs.append((kind, name, documentation, labelnames, extra))
    ops_per_process = []
    for _ in range(3):
        ops = []
        for _ in range(rng.randint(10, 40)):
            index = rng.randrange(len(specs))
            kind, _, _, labelnames, extra = specs[index]
            labelvalues = [rng.choice(LABEL_VALUES) for _ in labelnames]
            value = rng.choice(VALUES)
            if kind == "counter":
                op = "inc"
            elif kind == "gauge":
                op = "set" if extra["multiprocess_mode"].endswith("mostrecent") else rng.choice(["set", "inc", "dec"])
                value = rng.choice([value, -value])
            elif kind == "info":
                op, value = "info", {"version": rng.choice(LABEL_VALUES)}
            elif kind == "enum":
                op, value = "state", rng.choice(extra["states"])
            else:
                op = "observe"
            ops.append((index, labelvalues, op, value))
        ops_per_process.append(ops)
    return specs, ops_per_process


@contextlib.contextmanager
def installed_here():
    """The drop-in, installed in this process for a block only (the other test files read
    with prometheus_client's own collector here), after the test's workers are forked (a
    worker forked from a process with the drop-in installed and no metrics directory set
    would keep its values in memory)."""
    was = dropin.installed()
    dropin.install()
    try:
        yield
    finally:
        if not was:
            dropin.uninstall()


@contextlib.contextmanager
def one_writer(tmp_path, code):
    """A drop-in worker that ran ``code`` (killed on the way out), the drop-in installed here,
    and a registry with a ``MultiProcessCollector`` over their directory."""
    worker = Worker(str(tmp_path), "dropin")
    with contextlib.ExitStack() as stack:
        stack.callback(worker.kill)
        worker.run(code)
        stack.enter_context(installed_here())
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(tmp_path))
        yield registry


def generate_latest(registry, **kwargs):
    """``prometheus_client.generate_latest`` as an application calls it: looked up at each
    call (the drop-in replaces it while installed; a name imported before would be the
    original)."""
    return prometheus_client.generate_latest(registry, **kwargs)


def original_generate_latest(registry):
    return dropin._originals[("exposition", "generate_latest")](registry)


def openmetrics_generate_latest(registry, **kwargs):
    """``prometheus_client``'s OpenMetrics ``generate_latest``, looked up at each call."""
    from prometheus_client.openmetrics import exposition

    return exposition.generate_latest(registry, **kwargs)


def original_openmetrics(registry, **kwargs):
    return dropin._originals[("openmetrics", "generate_latest")](registry, **kwargs)


@contextlib.contextmanager
def native_only():
    """Makes prometheus_client's own ``generate_latest`` fail inside the block: a call that
    still works was written natively. (Restored before the drop-in is uninstalled: a
    ``monkeypatch`` restoring it after would leave ``_originals`` non-empty, and the next
    ``install()`` would do nothing.)"""

    keys = [("exposition", "generate_latest"), ("openmetrics", "generate_latest")]
    saved = {key: dropin._originals[key] for key in keys}
    for key in keys:

        @functools.wraps(saved[key])  # its signature: what the drop-in asks of the release
        def refuse(*args, **kwargs):
            raise AssertionError("prometheus_client's own generate_latest was called")

        dropin._originals[key] = refuse
    try:
        yield
    finally:
        dropin._originals.update(saved)


@pytest.mark.parametrize("seed", range(6))
def test_native_text_is_byte_for_byte_prometheus_clients(tmp_path, seed):
    specs, ops_per_process = workload(seed)
    workers = [Worker(str(tmp_path), "dropin") for _ in ops_per_process]
    with contextlib.ExitStack() as stack:
        for w in workers:
            stack.callback(w.kill)  # also when an assertion fails: no worker left behind
        for worker, ops in zip(workers, ops_per_process):
            worker.run(WORKLOAD_CODE, specs=specs)
            worker.run("apply(ops)", ops=ops)
        workers[0].kill()  # a dead process's values stay, its live* gauges go
        stack.enter_context(installed_here())
        registries = []
        for collectors in (
            [lambda r: MultiProcessCollector(r, path=str(tmp_path))],
            [lambda r: ShmetricsCollector(r, path=str(tmp_path), prefixes=["m1", "m3"])],
            [lambda r: ShmetricsCollector(r, path=str(tmp_path), prefixes=["m2"]),
             lambda r: MultiProcessCollector(r, path=str(tmp_path))],
        ):
            registry = CollectorRegistry()
            for make in collectors:
                make(registry)
            registries.append(registry)
        original = dropin._originals[("exposition", "generate_latest")]
        # The escapings that leave classic names alone, where the release has them (0.24 on;
        # Prometheus 3 asks for allow-utf-8).
        escapings = [{}]
        if "escaping" in inspect.signature(original).parameters:
            escapings += [{"escaping": e} for e in ("underscores", "allow-utf-8", "values")]
        expected = [[original(r, **e) for e in escapings] for r in registries]
        # OpenMetrics: `_created` samples (on by default) and the escapings it renders.
        om_escapings = [e for e in escapings if e.get("escaping") in (None, "underscores", "allow-utf-8")]
        om_expected = [[original_openmetrics(r, **e) for e in om_escapings] for r in registries]
        with native_only():
            for registry, texts, om_texts in zip(registries, expected, om_expected):
                assert dropin._native_plan(registry) is not None
                for escaping, text in zip(escapings, texts):
                    assert generate_latest(registry, **escaping) == text, escaping
                for escaping, text in zip(om_escapings, om_texts):
                    assert openmetrics_generate_latest(registry, **escaping) == text, escaping
        assert b"_created" in om_expected[0][0]
        assert b"# HELP" in expected[0][0]
        if len(escapings) > 1:
            # dots escaping doubles underscores: prometheus_client's own renders it.
            dots = original(registries[0], escaping="dots")
            assert dots != expected[0][0]
            assert generate_latest(registries[0], escaping="dots") == dots


def test_process_metrics_render_as_prometheus_client_renders_them(tmp_path):
    """Live writers' process metrics (a ``pid`` label each) change between two reads: the
    two expositions have the same lines but for the values of the process families."""
    worker = Worker(str(tmp_path), "dropin")
    with contextlib.ExitStack() as stack:
        stack.callback(worker.kill)
        worker.run("Counter('jobs', 'Jobs.').inc(2)")
        stack.enter_context(installed_here())
        registry = CollectorRegistry()
        ShmetricsCollector(registry, path=str(tmp_path), process_metrics=True)
        native = generate_latest(registry).decode().splitlines()
        python = original_generate_latest(registry).decode().splitlines()

    def shape(lines):
        return [line.rsplit(" ", 1)[0] if "process_" in line and not line.startswith("#") else line
                for line in lines]

    assert any(line.startswith(f'process_cpu_seconds_total{{pid="{worker.pid}"}}') for line in native)
    assert "jobs_total 2.0" in native
    assert shape(native) == shape(python)


def test_floats_are_written_as_float_to_go_string_writes_them():
    """The native renderer's floats against the installed ``floatToGoString``: random bit
    patterns (every exponent), whole numbers, the ranges where the forms change, specials."""
    with installed_here():
        sums_first, two_digit = dropin._text_style()
    rng = random.Random(7)
    values = [struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0] for _ in range(20000)]
    values += [float(rng.randrange(10**k)) for k in range(1, 18) for _ in range(200)]
    values += [rng.uniform(10**k, 10**(k + 1)) for k in range(-6, 18) for _ in range(200)]
    # Between 2^49 and 2^53 a double can lie exactly halfway between two shortest decimal
    # strings; repr takes the even one.
    values += [rng.randrange(2**49, 2**53) + rng.choice((0.125, 0.25, 0.375, 0.5, 0.75)) for _ in range(5000)]
    values += [1e6, 999999.9999999999, 1e15, 1e16, 9999999999999998.0, 1e-4, 9.999999999999999e-05,
               5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -0.0, math.inf, -math.inf, math.nan]
    for v in values:
        assert _native.float_to_go_string(v, two_digit) == floatToGoString(v), v


def test_other_registries_arguments_and_names_go_to_prometheus_client(tmp_path):
    with one_writer(tmp_path, "Counter('requests', 'Requests.', ['code']).labels('200').inc()") as registry:
        plain = original_generate_latest(registry)
        assert generate_latest(registry) == plain

        # A collector that is not the drop-in's: prometheus_client renders it all.
        from prometheus_client.core import GaugeMetricFamily

        class Extra:
            def collect(self):
                yield GaugeMetricFamily("extra", "Extra.", value=1.0)

        mixed = CollectorRegistry()
        MultiProcessCollector(mixed, path=str(tmp_path))
        mixed.register(Extra())
        assert dropin._native_plan(mixed) is None
        assert generate_latest(mixed) == plain + b"# HELP extra Extra.\n# TYPE extra gauge\nextra 1.0\n"

        # Target info, a restricted registry, a subclass, forced _created samples.
        with_info = CollectorRegistry(target_info={"env": "prod"})
        MultiProcessCollector(with_info, path=str(tmp_path))
        assert dropin._native_plan(with_info) is None
        assert b'target_info{env="prod"} 1.0' in generate_latest(with_info)
        restricted = registry.restricted_registry(["requests_total"])
        assert dropin._native_plan(restricted) is None
        assert generate_latest(restricted) == original_generate_latest(restricted)

        class Sub(MultiProcessCollector):
            pass

        sub = CollectorRegistry()
        Sub(sub, path=str(tmp_path))
        assert dropin._native_plan(sub) is None
        created = CollectorRegistry()
        ShmetricsCollector(created, path=str(tmp_path), created=True)
        assert dropin._native_plan(created) is None
        assert b"requests_created" in generate_latest(created)

        # An argument the release does not take raises as prometheus_client's own does.
        if "escaping" not in inspect.signature(dropin._originals[("exposition", "generate_latest")]).parameters:
            with pytest.raises(TypeError):
                generate_latest(registry, escaping="allow-utf-8")


def test_names_outside_the_classic_character_sets_go_to_prometheus_client(tmp_path):
    pytest.importorskip("prometheus_client.validation", reason="UTF-8 names since 0.22")
    with one_writer(tmp_path, "Counter('my.dotted', 'Dotted.', ['lbl']).labels('v').inc()") as registry:
        reader = dropin._reader(str(tmp_path))
        sums_first, two_digit = dropin._text_style()
        assert reader.render_prometheus_client([], False, sums_first, two_digit) is None
        assert generate_latest(registry) == original_generate_latest(registry)
        assert b"my_dotted_total" in generate_latest(registry)


def test_uninstall_restores_generate_latest():
    import prometheus_client
    from prometheus_client import exposition

    with installed_here():
        check_uninstall(prometheus_client, exposition)
    assert not dropin.installed()


def check_uninstall(prometheus_client, exposition):
    assert exposition.generate_latest.__wrapped__ is dropin._originals[("exposition", "generate_latest")]
    assert prometheus_client.generate_latest is exposition.generate_latest
    original = dropin._originals[("exposition", "generate_latest")]
    dropin.uninstall()
    try:
        assert exposition.generate_latest is original
        assert prometheus_client.generate_latest is original
    finally:
        dropin.install()
    assert exposition.generate_latest.__wrapped__ is original


AMPLIFIED = r"""
import os, resource, sys
import shmetrics.prometheus_client as dropin
dropin.install()
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

# 32 labels of 240 quotes each (escaped to two bytes), 255 bounds: about 4 MB of text per
# series, 30 series.
h = Histogram("amp", "Amplified.", [f"l{i:02}" for i in range(32)], buckets=list(range(255)))
for i in range(30):
    h.labels(*[f"{i}" + '"' * 240 for _ in range(32)]).observe(1)
registry = CollectorRegistry()
MultiProcessCollector(registry)
assert dropin._native_plan(registry) is not None
size = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
resource.setrlimit(resource.RLIMIT_AS, (size + (48 << 20), hard))
try:
    generate_latest(registry)
    print("rendered")
except MemoryError as e:
    print("MemoryError", e)
resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
print(len(generate_latest(registry)))
"""


def test_an_exposition_past_the_memory_limit_raises_memory_error(tmp_path):
    """A 120 MB exposition in a process that may map 48 MiB more: ``generate_latest`` raises
    ``MemoryError`` (as ``prometheus_client`` would) instead of the interpreter aborting in
    the native renderer, and renders once memory is there again."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "SHMETRICS_PROMETHEUS_CLIENT"}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", AMPLIFIED], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    lines = out.stdout.splitlines()
    assert lines[0].startswith("MemoryError cannot allocate the exposition's text"), out.stdout
    assert int(lines[1]) > 100 << 20


def test_openmetrics_exemplars_and_created_samples_as_prometheus_client_writes_them(tmp_path):
    """Exemplars (escaped label values, several processes: the newest shown) and `_created`
    samples, with created series on and off, and a name with a colon (which 0.24 on writes
    as `_` in sample names with the default escaping): the same bytes as prometheus_client's
    OpenMetrics renderer."""
    code = (
        "c = Counter('vllm:requests', 'Requests \"served\".', ['model'], registry=None)\n"
        "h = Histogram('latency_seconds', 'Latency.', ['model'], buckets=[0.1, 1, 10], registry=None)\n"
        "c.labels('m1').inc(2, exemplar={'trace_id': tag + '\"q\\\\'})\n"
        "c.labels('m2').inc()\n"
        "h.labels('m1').observe(0.5, exemplar={'trace_id': tag, 'span': 'n\\nl'})\n"
        "h.labels('m1').observe(50)\n"
    )
    workers = [Worker(str(tmp_path), "dropin") for _ in range(2)]
    with contextlib.ExitStack() as stack:
        for w in workers:
            stack.callback(w.kill)
        for i, w in enumerate(workers):
            w.run(code, tag=f"w{i}")
        stack.enter_context(installed_here())
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(tmp_path))
        forced = CollectorRegistry()
        ShmetricsCollector(forced, path=str(tmp_path), created=False)
        cases = [(registry, {}), (forced, {})]
        original = dropin._originals[("openmetrics", "generate_latest")]
        if "escaping" in inspect.signature(original).parameters:
            cases.append((registry, {"escaping": "allow-utf-8"}))
        expected = [original_openmetrics(r, **kw) for r, kw in cases]
        with native_only():
            for (r, kw), text in zip(cases, expected):
                assert openmetrics_generate_latest(r, **kw) == text, kw
        if "version" in inspect.signature(original).parameters:
            with native_only():
                assert openmetrics_generate_latest(registry, version="1.0.0") == expected[0]
        else:
            with pytest.raises(TypeError):  # as prometheus_client's own, without the parameter
                openmetrics_generate_latest(registry, version="1.0.0")
        assert b' # {trace_id="w' in expected[0]
        assert b"_created" in expected[0] and b"_created" not in expected[1]
        if hasattr(prometheus_client, "disable_created_metrics"):
            prometheus_client.disable_created_metrics()
            try:
                off = original_openmetrics(registry)
                with native_only():
                    assert openmetrics_generate_latest(registry) == off
                assert b"_created" not in off
            finally:
                prometheus_client.enable_created_metrics()

