"""The native API: shmetrics.Counter, Gauge, Histogram and Summary in an explicit Registry
(the pytest process never opens the default registry; see conftest)."""

from __future__ import annotations

import pytest

import shmetrics
from conftest import collect, histogram_order


@pytest.fixture
def registry(metrics_dir):
    return shmetrics.Registry(metrics_dir)


def samples(metrics_dir, name):
    family = collect(metrics_dir).get(name)
    return None if family is None else [(s.name, s.labels, s.value) for s in family.samples]


def test_counter(registry, metrics_dir):
    c = shmetrics.Counter("requests_total", "Requests.", ["code", "method"], registry=registry)
    c.labels("200", "get").inc()
    c.labels(code="200", method="get").inc(2.5)
    c.labels(404, "get").inc()
    assert c.labels("200", "get").get() == 3.5
    assert c.labels("200", "get") is c.labels(code="200", method="get")
    assert c.name == "requests"
    assert samples(metrics_dir, "requests") == [
        ("requests_total", {"code": "200", "method": "get"}, 3.5),
        ("requests_total", {"code": "404", "method": "get"}, 1.0),
    ]


def test_write_methods_answer_every_call_shape(registry):
    # inc/dec/set/observe answer one number by position natively (fastcall.rs) and hand
    # every other call to the full method: the outcome of each shape is the method's.
    class Number:
        def __float__(self):
            return 2.0

    c = shmetrics.Counter("c", "help", registry=registry)
    for call in [lambda: c.inc(), lambda: c.inc(0.5), lambda: c.inc(2), lambda: c.inc(True),
                 lambda: c.inc(Number()), lambda: c.inc(amount=3), lambda: c.inc(1, {"a": "b"}),
                 lambda: c.inc(float("nan"))]:
        call()
    assert c.get() == 0.5 + 2 + 1 + 2 + 3 + 1 + 1  # a NaN is ignored (a counter never goes down)
    c.reset()
    c.inc(1.5)
    c.inc(2**53 + 1)  # converted as float() does
    assert c.get() == 1.5 + float(2**53 + 1)
    for call, error in [(lambda: c.inc(-1), ValueError), (lambda: c.inc(-0.5), ValueError),
                        (lambda: c.inc(10**400), OverflowError), (lambda: c.inc("1"), TypeError),
                        (lambda: c.inc(None), TypeError), (lambda: c.inc(1, None, 3), TypeError),
                        (lambda: c.inc(bogus=1), TypeError)]:
        with pytest.raises(error):
            call()
    assert c.get() == 1.5 + float(2**53 + 1)
    labelled = shmetrics.Counter("l", "help", ["a"], registry=registry)
    for call in [lambda: labelled.inc(), lambda: labelled.inc(1.0)]:
        with pytest.raises(ValueError, match="missing label values"):
            call()

    g = shmetrics.Gauge("g", "help", registry=registry)
    g.inc()
    g.inc(2)
    g.dec(0.5)
    g.dec()
    g.inc(-3)
    assert g.get() == -1.5
    g.set(7)
    g.set("8.5")  # float(value), as prometheus_client
    assert g.get() == 8.5
    with pytest.raises(TypeError):
        g.set()
    recent = shmetrics.Gauge("r", "help", registry=registry, multiprocess_mode="mostrecent")
    for call in [lambda: recent.inc(), lambda: recent.dec(1.0)]:
        with pytest.raises(RuntimeError, match="mostrecent"):
            call()
    recent.set(3)
    assert recent.get() == 3

    h = shmetrics.Histogram("h", "help", registry=registry, buckets=[1, 2])
    h.observe(0.5)
    h.observe(2)
    h.observe(amount=5.0)
    h.observe(1, {"trace_id": "x"})
    assert h.get() == ([2, 1, 1], 8.5)
    with pytest.raises(TypeError):
        h.observe()
    with pytest.raises(TypeError):
        h.observe("1")
    s = shmetrics.Summary("s", "help", registry=registry)
    s.observe(1)
    s.observe(0.25)
    assert s.get() == (2, 1.25)
    with pytest.raises(TypeError):
        s.observe(1, 2)
    assert "amount" in (shmetrics.Counter.inc.__doc__ or "") and shmetrics.Counter.inc.__name__ == "inc"


def test_labels_answers_every_call_shape(registry):
    # labels() finds label values seen before, given by position, natively (fastcall.rs,
    # remembering recent ones by the identity of their strings) and hands every other call
    # to the full method: each shape gives the method's child or error.
    import sys

    for cls in (shmetrics.Counter, shmetrics.Gauge, shmetrics.Histogram, shmetrics.Summary):
        m = cls(f"m_{cls.__name__.lower()}", "help", ["a", "b"], registry=registry)
        x = m.labels("1", "y")
        assert m.labels("1", "y") is x and m.labels(a="1", b="y") is x and m.labels(1, "y") is x
        z = m.labels("1", "z")  # same first value: the whole label set decides
        assert z is not x and all(m.labels("1", v) is c for _ in range(3) for v, c in [("y", x), ("z", z)])
        kids = {str(i): m.labels(str(i), "y") for i in range(20)}  # more than remembered
        assert all(m.labels(k, "y") is v for _ in range(3) for k, v in kids.items())

        class Unhashable:
            __hash__ = None

            def __str__(self):
                return "1"

        assert m.labels(Unhashable(), "y") is x
        for call, error in [(lambda: m.labels("1"), "Incorrect label count"),
                            (lambda: m.labels("1", "y", "z"), "Incorrect label count"),
                            (lambda: m.labels("1", b="y"), "both"),
                            (lambda: x.labels("1", "y"), "already has labels"),
                            (lambda: m.labels(), "Incorrect label count")]:
            with pytest.raises(ValueError, match=error):
                call()
        s = "kept"
        m.labels(s, "y")
        before = sys.getrefcount(s)
        for _ in range(1000):
            m.labels(s, "y")
        assert sys.getrefcount(s) - before <= 1  # remembered once, not per call
    unlabelled = shmetrics.Counter("u", "help", registry=registry)
    with pytest.raises(ValueError, match="No label names"):
        unlabelled.labels("x")
    names = [f"l{i}" for i in range(10)]
    wide = shmetrics.Counter("wide", "help", names, registry=registry)
    w = wide.labels(*names)
    assert all(wide.labels(*names) is w for _ in range(3))


def test_fast_methods_survive_a_second_import_of_the_extension(tmp_path):
    # The module's init replaces the PyO3 methods once; a second init (the extension imported
    # again after leaving sys.modules) must not wrap the replacement as the "original",
    # which would send every fallback call back into itself.
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import sys
        import shmetrics._native
        del sys.modules["shmetrics._native"]
        import importlib
        again = importlib.import_module("shmetrics._native")
        import shmetrics
        c = shmetrics.Counter("c", "help", ["a"], registry=shmetrics.Registry(sys.argv[1]))
        c.labels("x").inc()
        c.labels(a="x").inc(amount=2)  # keywords: the PyO3 methods
        try:
            c.labels("x").inc(-1)
        except ValueError as e:
            print("ValueError", e)
        print(again.Counter is shmetrics.Counter, c.labels("x").get())
        """
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "ValueError Counters can only be incremented by non-negative amounts.", "True 3.0"]


def test_counter_errors(registry):
    c = shmetrics.Counter("c", "help", registry=registry)
    with pytest.raises(ValueError, match="non-negative"):
        c.inc(-1)
    with pytest.raises(ValueError, match="No label names"):
        c.labels("x")
    with pytest.raises(NotImplementedError, match="only be set back to 0"):
        c.set(5)
    c.inc(3)
    c.reset()
    assert c.get() == 0
    labelled = shmetrics.Counter("l", "help", ["a", "b"], registry=registry)
    with pytest.raises(ValueError, match="missing label values"):
        labelled.inc()
    with pytest.raises(ValueError, match="Incorrect label count"):
        labelled.labels("x")
    with pytest.raises(ValueError, match="Incorrect label names"):
        labelled.labels(a="x", c="y")
    with pytest.raises(ValueError, match="both"):
        labelled.labels("x", b="y")
    with pytest.raises(ValueError, match="already has labels"):
        labelled.labels("x", "y").labels("x", "y")
    with pytest.raises(ValueError, match="Exemplar labels"):
        c.inc(1, exemplar={"trace_id": "x" * 200})
    c.inc(1, exemplar={"trace_id": "abc"})
    assert c.get() == 1
    with pytest.raises(ValueError):
        shmetrics.Counter("", "help", registry=registry)
    with pytest.raises(ValueError, match="invalid label name"):
        shmetrics.Counter("reserved", "help", ["__x"], registry=registry)
    # Any other UTF-8 name is taken, as by prometheus_client 0.26 (exposed escaped).
    shmetrics.Counter("my.dotted name", "help", ["lbl.x"], registry=registry).labels("v").inc()
    with pytest.raises(ValueError, match="labelnames"):
        shmetrics.Counter("s", "help", "ab", registry=registry)


def test_same_definition_twice_is_the_same_family(registry, metrics_dir):
    a = shmetrics.Counter("c", "help", ["x"], registry=registry)
    b = shmetrics.Counter("c", "help", ["x"], registry=registry)
    a.labels("1").inc()
    b.labels("1").inc()
    assert samples(metrics_dir, "c") == [("c_total", {"x": "1"}, 2.0)]
    with pytest.raises(ValueError, match="different definition"):
        shmetrics.Gauge("c", "help", ["x"], registry=registry)


def test_counter_count_exceptions(registry):
    c = shmetrics.Counter("errors", "help", registry=registry)

    @c.count_exceptions(KeyError)
    def fails(exc):
        raise exc

    with pytest.raises(KeyError):
        fails(KeyError())
    with pytest.raises(ValueError):
        fails(ValueError())
    with pytest.raises(RuntimeError):
        with c.count_exceptions():
            raise RuntimeError()
    assert c.get() == 2
    assert fails.__name__ == "fails"


def test_gauge(registry, metrics_dir):
    g = shmetrics.Gauge("temp", "help", ["room"], registry=registry, multiprocess_mode="livesum")
    k = g.labels("kitchen")
    k.inc()
    k.inc(4)
    k.dec(2)
    assert k.get() == 3
    k.set("7.5")
    assert k.get() == 7.5
    assert g.multiprocess_mode == "livesum"
    with k.track_inprogress():
        assert k.get() == 8.5
    assert k.get() == 7.5

    @k.track_inprogress()
    def busy():
        return k.get()

    assert busy() == 8.5
    with k.time():
        pass
    assert 0 <= k.get() < 5
    k.set_to_current_time()
    import time

    assert abs(k.get() - time.time()) < 60
    k.set(2)
    assert samples(metrics_dir, "temp") == [("temp", {"room": "kitchen"}, 2.0)]


def test_gauge_mostrecent_refuses_inc_and_dec(registry):
    g = shmetrics.Gauge("g", "help", registry=registry, multiprocess_mode="mostrecent")
    with pytest.raises(RuntimeError, match="inc must not be used"):
        g.inc()
    with pytest.raises(RuntimeError, match="dec must not be used"):
        g.dec()
    g.set(3)
    assert g.get() == 3
    with pytest.raises(ValueError, match="Invalid multiprocess mode"):
        shmetrics.Gauge("x", "help", registry=registry, multiprocess_mode="average")


def test_histogram(registry, metrics_dir):
    h = shmetrics.Histogram("latency_seconds", "help", ["path"], registry=registry, buckets=[0.1, "1", 10])
    root = h.labels("/")
    for v in (0.05, 0.1, 0.5, 20):
        root.observe(v)
    assert root.get() == ([2, 1, 0, 1], 20.65)
    assert h.upper_bounds == [0.1, 1.0, 10.0, float("inf")]
    with root.time():
        pass
    assert root.get()[0][0] == 3
    assert samples(metrics_dir, "latency_seconds") == histogram_order(
        [
            [
                ("latency_seconds_sum", {"path": "/"}, pytest.approx(20.65, abs=1.0)),
                ("latency_seconds_bucket", {"path": "/", "le": "0.1"}, 3.0),
                ("latency_seconds_bucket", {"path": "/", "le": "1.0"}, 4.0),
                ("latency_seconds_bucket", {"path": "/", "le": "10.0"}, 4.0),
                ("latency_seconds_bucket", {"path": "/", "le": "+Inf"}, 5.0),
                ("latency_seconds_count", {"path": "/"}, 5.0),
            ]
        ]
    )


def test_histogram_buckets(registry):
    h = shmetrics.Histogram("d", "help", registry=registry)
    assert h.upper_bounds == list(shmetrics.DEFAULT_BUCKETS)
    assert shmetrics.DEFAULT_BUCKETS[-1] == float("inf")
    assert shmetrics.Histogram("i", "help", registry=registry, buckets=[1, float("inf")]).upper_bounds == [1.0, float("inf")]
    with pytest.raises(ValueError, match="sorted"):
        shmetrics.Histogram("u", "help", registry=registry, buckets=[2, 1])
    with pytest.raises(ValueError, match="at least two"):
        shmetrics.Histogram("e", "help", registry=registry, buckets=[float("inf")])
    with pytest.raises(ValueError):
        shmetrics.Histogram("le", "help", ["le"], registry=registry)


def test_histogram_timer_decorator_and_labels(registry):
    h = shmetrics.Histogram("t", "help", ["op"], registry=registry, buckets=[100])

    timer = h.time()
    timer.labels("x")
    with timer:
        pass
    assert h.labels("x").get()[0] == [1, 0]

    @h.labels("y").time()
    def work(n):
        return n * 2

    assert work(2) == 4 and work(3) == 6
    assert h.labels("y").get()[0] == [2, 0]


def test_summary(registry, metrics_dir):
    s = shmetrics.Summary("size_bytes", "help", registry=registry)
    s.observe(512)
    s.observe(0.5)
    assert s.get() == (2, 512.5)
    with s.time():
        pass
    assert s.get()[0] == 3
    with pytest.raises(ValueError):
        shmetrics.Summary("q", "help", ["quantile"], registry=registry)


def test_generate_latest(registry, metrics_dir):
    shmetrics.Counter("c", "help", registry=registry).inc()
    text = shmetrics.generate_latest(metrics_dir).decode()
    assert text == "# HELP c_total help\n# TYPE c_total counter\nc_total 1.0\n"
    om = shmetrics.generate_latest(metrics_dir, openmetrics=True).decode()
    assert om.endswith("# EOF\n") and "c_total 1.0" in om
    assert shmetrics.generate_latest(metrics_dir, prefixes=["x"]) == b""


def test_generate_latest_escapes_names_as_asked(registry, metrics_dir):
    shmetrics.Counter("my.dotted", "help", ["lbl.x"], registry=registry).labels("v").inc(2)
    sample = lambda **kw: [  # noqa: E731
        line for line in shmetrics.generate_latest(metrics_dir, **kw).decode().splitlines() if not line.startswith("#")
    ]
    assert sample() == ['my_dotted_total{lbl_x="v"} 2.0']
    assert sample(escaping="allow-utf-8") == ['{"my.dotted_total","lbl.x"="v"} 2.0']
    assert sample(escaping="dots", openmetrics=True, created=False) == ['my_dot_dotted__total{lbl_dot_x="v"} 2.0']
    # The whole sample name is escaped, as prometheus_client escapes `my.dotted_created`.
    total, created = sample(escaping="dots", openmetrics=True)
    assert total == 'my_dot_dotted__total{lbl_dot_x="v"} 2.0'
    assert created.startswith('my_dot_dotted__created{lbl_dot_x="v"} 1'), created
    with pytest.raises(ValueError, match="unknown escaping"):
        shmetrics.generate_latest(metrics_dir, escaping="legacy")


def test_registry(metrics_dir, tmp_path):
    r = shmetrics.Registry(metrics_dir)
    assert r.path == metrics_dir
    [segment] = r.segment_paths()
    assert segment.startswith(metrics_dir)
    assert r.dropped_series() == 0
    with pytest.raises(ValueError, match="does not exist"):
        shmetrics.Registry(str(tmp_path / "missing"))


def test_prefixes_that_keep_no_family_are_logged_once(registry, metrics_dir, caplog):
    shmetrics.Counter("vllm:requests", "R.", registry=registry).inc()
    caplog.set_level("WARNING", logger="shmetrics")
    for _ in range(3):
        assert shmetrics.generate_latest(metrics_dir, prefixes=["VLLM:"]) == b""
    from shmetrics.prometheus_client import ShmetricsCollector

    collector = ShmetricsCollector(None, path=metrics_dir, prefixes=["vlm:", "VLLM:"])
    for _ in range(2):
        assert collector.collect() == []
    assert shmetrics.generate_latest(metrics_dir, prefixes=["vllm:"]).startswith(b"# HELP vllm:requests_total")
    warnings = [r.getMessage() for r in caplog.records if "match none" in r.getMessage()]
    assert warnings == [
        "shmetrics: prefixes VLLM: match none of the 1 families in the directory, so none of them is exposed "
        "(names are case-sensitive: vllm:, lmcache:, dynamo_)",
        "shmetrics: prefixes vlm:, VLLM: match none of the 1 families in the directory, so none of them is "
        "exposed (names are case-sensitive: vllm:, lmcache:, dynamo_)",
    ], warnings
