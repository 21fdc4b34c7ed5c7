"""prometheus_client's multiprocess scenarios, run through the drop-in with real processes:
unchanged ``prometheus_client`` metric code in each worker, the shmetrics collector reading.
No ``mark_process_dead`` call anywhere: liveness comes from the kernel."""

from __future__ import annotations

import os

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.samples import Sample

from conftest import collect, histogram_order, sample_value

LABELS = {i: i for i in "abcd"}


def with_label(key: str, value: str) -> dict:
    labels = dict(LABELS)
    labels[key] = value
    return labels


def test_writes_go_to_segments_not_db_files(workers, metrics_dir):
    w = workers()
    w.run("Counter('c', 'help', registry=None).inc()")
    files = os.listdir(metrics_dir)
    assert files and all(f.startswith("shmetrics-") and f.endswith(".shm") for f in files), files


def test_counter_adds(workers, metrics_dir):
    w1, w2 = workers(), workers()
    w1.run("c = Counter('c', 'help', registry=None)")
    w2.run("c = Counter('c', 'help', registry=None)")
    assert sample_value(metrics_dir, "c_total") == 0
    w1.run("c.inc(1)")
    w2.run("c.inc(2)")
    assert sample_value(metrics_dir, "c_total") == 3
    w1.exit()
    assert sample_value(metrics_dir, "c_total") == 3


def test_summary_adds(workers, metrics_dir):
    w1, w2 = workers(), workers()
    for w in (w1, w2):
        w.run("s = Summary('s', 'help', registry=None)")
    assert sample_value(metrics_dir, "s_count") == 0
    assert sample_value(metrics_dir, "s_sum") == 0
    w1.run("s.observe(1)")
    w2.run("s.observe(2)")
    assert sample_value(metrics_dir, "s_count") == 2
    assert sample_value(metrics_dir, "s_sum") == 3
    w2.kill()
    assert sample_value(metrics_dir, "s_count") == 2
    assert sample_value(metrics_dir, "s_sum") == 3


def test_histogram_adds(workers, metrics_dir):
    w1, w2 = workers(), workers()
    for w in (w1, w2):
        w.run("h = Histogram('h', 'help', registry=None)")
    assert sample_value(metrics_dir, "h_count") == 0
    assert sample_value(metrics_dir, "h_sum") == 0
    assert sample_value(metrics_dir, "h_bucket", {"le": "5.0"}) == 0
    w1.run("h.observe(1)")
    w2.run("h.observe(2)")
    assert sample_value(metrics_dir, "h_count") == 2
    assert sample_value(metrics_dir, "h_sum") == 3
    assert sample_value(metrics_dir, "h_bucket", {"le": "5.0"}) == 2
    assert sample_value(metrics_dir, "h_bucket", {"le": "0.5"}) == 0
    w1.exit()
    assert sample_value(metrics_dir, "h_count") == 2


# (mode, value set by process A, value set later by process B,
#  expected while both live, expected after A died) - A's value is the one a live* mode
#  must drop. For the "all" modes the expectation is {pid of A or B: value}.
GAUGE_CASES = [
    ("all", 1, 2, {"A": 1, "B": 2}, {"A": 1, "B": 2}),
    ("liveall", 1, 2, {"A": 1, "B": 2}, {"B": 2}),
    ("min", 1, 2, 1, 1),
    ("livemin", 1, 2, 1, 2),
    ("max", 3, 2, 3, 3),
    ("livemax", 3, 2, 3, 2),
    ("sum", 1, 2, 3, 3),
    ("livesum", 1, 2, 3, 2),
    ("mostrecent", 1, 2, 2, 2),
    ("livemostrecent", 1, 2, 2, 2),
]


@pytest.mark.parametrize("mode,a,b,before,after", GAUGE_CASES, ids=[c[0] for c in GAUGE_CASES])
def test_gauge_modes_before_and_after_a_process_dies(workers, metrics_dir, mode, a, b, before, after):
    wa, wb = workers(), workers()
    pids = {"A": str(wa.pid), "B": str(wb.pid)}
    for w in (wa, wb):
        w.run("g = Gauge('g', 'help', registry=None, multiprocess_mode=mode)", mode=mode)
    wa.run("g.set(v)", v=a)
    wb.run("g.set(v)", v=b)

    def observed():
        family = collect(metrics_dir).get("g")
        if family is None:
            return None
        if mode in ("all", "liveall"):
            by_pid = {s.labels["pid"]: s.value for s in family.samples}
            return {k: by_pid[p] for k, p in pids.items() if p in by_pid}
        [sample] = family.samples
        assert sample.labels == {}
        return sample.value

    assert observed() == before
    wa.exit()
    assert observed() == after


def test_mostrecent_follows_the_newest_write_even_of_a_dead_process(workers, metrics_dir):
    wa, wb = workers(), workers()
    for w in (wa, wb):
        w.run(
            "g = Gauge('g', 'help', registry=None, multiprocess_mode='mostrecent')\n"
            "l = Gauge('l', 'help', registry=None, multiprocess_mode='livemostrecent')"
        )
    wb.run("g.set(2); l.set(2)")
    wa.run("g.set(1); l.set(1)")
    assert sample_value(metrics_dir, "g") == 1
    assert sample_value(metrics_dir, "l") == 1
    wa.kill()
    assert sample_value(metrics_dir, "g") == 1
    assert sample_value(metrics_dir, "l") == 2


def test_mostrecent_gauge_never_set_has_no_sample(workers, metrics_dir):
    w = workers()
    w.run("Gauge('g', 'help', registry=None, multiprocess_mode='mostrecent')")
    w.run("Gauge('z', 'help', registry=None, multiprocess_mode='sum')")
    families = collect(metrics_dir)
    assert "g" not in families
    assert families["z"].samples == [Sample("z", {}, 0.0)]


def test_live_gauges_of_all_dead_processes_are_omitted(workers, metrics_dir):
    w = workers()
    w.run("Gauge('g', 'help', registry=None, multiprocess_mode='livesum').set(5)")
    assert sample_value(metrics_dir, "g") == 5
    w.kill()
    assert "g" not in collect(metrics_dir)


def test_namespace_subsystem_unit(workers, metrics_dir):
    w = workers()
    w.run("Counter('c', 'help', registry=None, namespace='ns', subsystem='ss', unit='seconds').inc()")
    assert sample_value(metrics_dir, "ns_ss_c_seconds_total") == 1


def test_counter_across_forks(workers, metrics_dir):
    w = workers()
    w.run(
        "c = Counter('c', 'help', registry=None)\n"
        "c.inc(); c.inc()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    c.inc()\n"
        "    os._exit(0 if c._value.get() == 1 else 7)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "result = (os.waitstatus_to_exitcode(status), c._value.get())"
    )
    assert w.run("result = result") == (0, 2)
    assert sample_value(metrics_dir, "c_total") == 3


def test_collect_exact_samples(workers, metrics_dir):
    wa, wb = workers(), workers()
    code = (
        "c = Counter('c', 'help', labelnames=labels.keys(), registry=None)\n"
        "g = Gauge('g', 'help', labelnames=labels.keys(), registry=None)\n"
        "h = Histogram('h', 'help', labelnames=labels.keys(), registry=None)\n"
        "c.labels(**labels).inc(1)\n"
        "g.labels(**labels).set(1)\n"
        "h.labels(**labels).observe(v)"
    )
    wa.run(code, labels=LABELS, v=1)
    wb.run(code, labels=LABELS, v=5)
    metrics = collect(metrics_dir)
    assert sorted(metrics) == ["c", "g", "h"]
    assert metrics["c"].type == "counter"
    assert metrics["c"].samples == [Sample("c_total", LABELS, 2.0)]
    assert sorted(metrics["g"].samples, key=lambda s: int(s.labels["pid"])) == sorted(
        [Sample("g", with_label("pid", str(wa.pid)), 1.0), Sample("g", with_label("pid", str(wb.pid)), 1.0)],
        key=lambda s: int(s.labels["pid"]),
    )
    buckets = [
        Sample("h_bucket", with_label("le", le), value)
        for le, value in [
            ("0.005", 0.0),
            ("0.01", 0.0),
            ("0.025", 0.0),
            ("0.05", 0.0),
            ("0.075", 0.0),
            ("0.1", 0.0),
            ("0.25", 0.0),
            ("0.5", 0.0),
            ("0.75", 0.0),
            ("1.0", 1.0),
            ("2.5", 1.0),
            ("5.0", 2.0),
            ("7.5", 2.0),
            ("10.0", 2.0),
            ("+Inf", 2.0),
        ]
    ]
    expected = histogram_order([[Sample("h_sum", LABELS, 6.0)] + buckets + [Sample("h_count", LABELS, 2.0)]])
    assert metrics["h"].samples == expected
    # Labels of every sample are sorted by name, then le / pid, as MultiProcessCollector's.
    assert list(metrics["h"].samples[1].labels) == ["a", "b", "c", "d", "le"]
    assert list(metrics["g"].samples[0].labels) == ["a", "b", "c", "d", "pid"]


def test_collect_histogram_ordering(workers, metrics_dir):
    wa, wb = workers(), workers()
    wa.run("h = Histogram('h', 'help', labelnames=['view'], registry=None); h.labels(view='view1').observe(1)")
    wb.run(
        "h = Histogram('h', 'help', labelnames=['view'], registry=None)\n"
        "h.labels(view='view1').observe(5)\n"
        "h.labels(view='view2').observe(1)"
    )
    samples = collect(metrics_dir)["h"].samples
    bounds = ["0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1.0", "2.5", "5.0", "7.5", "10.0", "+Inf"]
    view1 = [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    view2 = [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    series = []
    for view, counts, total in (("view1", view1, 6.0), ("view2", view2, 1.0)):
        series.append(
            [Sample("h_sum", {"view": view}, total)]
            + [Sample("h_bucket", {"view": view, "le": le}, float(n)) for le, n in zip(bounds, counts)]
            + [Sample("h_count", {"view": view}, float(counts[-1]))]
        )
    assert samples == histogram_order(series)


def test_collect_preserves_help(workers, metrics_dir):
    wa, wb = workers(), workers()
    code = (
        "Counter('c', 'c help', labelnames=['a'], registry=None).labels('x').inc(1)\n"
        "Gauge('g', 'g help\\nwith \"quotes\" and \\\\', labelnames=['a'], registry=None).labels('x').set(1)\n"
        "Histogram('h', 'h help', labelnames=['a'], registry=None).labels('x').observe(v)\n"
        "Summary('s', 's help', registry=None).observe(v)"
    )
    wa.run(code, v=1)
    wb.run(code, v=5)
    metrics = collect(metrics_dir)
    assert metrics["c"].documentation == "c help"
    assert metrics["g"].documentation == 'g help\nwith "quotes" and \\'
    assert metrics["h"].documentation == "h help"
    assert metrics["s"].documentation == "s help"


def test_restarted_processes(workers, metrics_dir):
    """A worker dies and a new one takes its place, as under gunicorn: counters and
    histograms keep the dead worker's counts, live gauges show only the new worker."""
    code = (
        "c = Counter('requests', 'help', ['code'], registry=None)\n"
        "h = Histogram('latency', 'help', buckets=[1, 2], registry=None)\n"
        "g = Gauge('in_flight', 'help', registry=None, multiprocess_mode='livesum')\n"
        "c.labels('200').inc(n); h.observe(1.5); g.set(n)"
    )
    for n in (1, 2, 3):
        w = workers()
        w.run(code, n=n)
        w.kill()
    last = workers()
    last.run(code, n=10)
    assert sample_value(metrics_dir, "requests_total", {"code": "200"}) == 16
    assert sample_value(metrics_dir, "latency_bucket", {"le": "2.0"}) == 4
    assert sample_value(metrics_dir, "latency_count") == 4
    assert sample_value(metrics_dir, "in_flight") == 10


def test_exposition_matches_prometheus_client_text(workers, metrics_dir):
    w = workers()
    w.run(
        "Counter('c', 'help', ['x'], registry=None).labels('y').inc(3)\n"
        "Summary('s', 'sh', registry=None).observe(2)"
    )
    from shmetrics.prometheus_client import ShmetricsCollector

    registry = CollectorRegistry()
    ShmetricsCollector(registry, path=metrics_dir)
    assert generate_latest(registry).decode() == (
        "# HELP c_total help\n"
        "# TYPE c_total counter\n"
        'c_total{x="y"} 3.0\n'
        "# HELP s sh\n"
        "# TYPE s summary\n"
        "s_count 1.0\n"
        "s_sum 2.0\n"
    )


def test_prefix_filters(workers, metrics_dir):
    w = workers()
    w.run(
        "Counter('vllm:tokens', 'help', registry=None).inc()\n"
        "Gauge('lmcache:hits', 'help', registry=None).set(1)\n"
        "Counter('other', 'help', registry=None).inc()"
    )
    assert sorted(collect(metrics_dir, prefixes=["vllm:", "lmcache:"])) == ["lmcache:hits", "vllm:tokens"]
    assert sorted(collect(metrics_dir)) == ["lmcache:hits", "other", "vllm:tokens"]


def test_mark_process_dead_is_never_needed_and_harmless(workers, metrics_dir):
    from shmetrics.prometheus_client import mark_process_dead

    w = workers()
    w.run("Gauge('g', 'help', registry=None, multiprocess_mode='livesum').set(4)")
    mark_process_dead(w.pid)
    assert sample_value(metrics_dir, "g") == 4
    w.kill()
    assert sample_value(metrics_dir, "g") is None


def test_collector_requires_a_directory(tmp_path, monkeypatch):
    from shmetrics.prometheus_client import ShmetricsCollector

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with pytest.raises(ValueError, match="PROMETHEUS_MULTIPROC_DIR"):
        ShmetricsCollector(None)
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(ValueError):
        ShmetricsCollector(None, path=str(f))


SCRAPE_WHILE_FORKING = """
import threading, time
import shmetrics
from prometheus_client import CollectorRegistry, generate_latest, multiprocess

import shmetrics.prometheus_client

kept = CollectorRegistry()
if how == "collector_made_before":
    multiprocess.MultiProcessCollector(kept)
elif how == "shmetrics_collector_made_before":
    shmetrics.prometheus_client.ShmetricsCollector(kept)

def scrape():
    if how == "native_generate_latest":
        return shmetrics.generate_latest()
    if how == "collector_per_scrape":
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(kept)

Counter('forks_seen', 'help', registry=None).inc()
assert b'forks_seen_total 1.0' in scrape()
stop = threading.Event()
def keep_scraping():
    while not stop.is_set():
        scrape()
scraper = threading.Thread(target=keep_scraping)
scraper.start()
outcomes = []
for _ in range(forks):
    time.sleep(0.002)
    pid = os.fork()
    if pid == 0:
        try:
            ok = b'forks_seen_total 1.0' in scrape()
        except BaseException:
            os._exit(3)
        os._exit(0 if ok else 4)
    deadline = time.monotonic() + 10
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            outcomes.append(os.waitstatus_to_exitcode(status))
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            outcomes.append('hung')
            break
        time.sleep(0.005)
    if outcomes[-1] != 0:
        break
stop.set()
scraper.join()
result = outcomes
"""


@pytest.mark.parametrize(
    "how",
    [
        "collector_per_scrape",
        "collector_made_before",
        "shmetrics_collector_made_before",
        "native_generate_latest",
    ],
)
def test_a_child_forked_while_another_thread_scrapes_can_scrape(workers, how):
    """A process that scrapes its directory on one thread (the reader is kept between
    scrapes, its lock held while the directory is read) and forks on another: each child
    scrapes too, the way the parent does (a collector per scrape, or one made before the
    fork as with gunicorn's --preload, or the native call), and must neither hang (10 s
    each) nor fail; the first failure ends the loop: "hung", or 3 for an exception, 4 for
    a wrong value."""
    w = workers()
    assert w.run(SCRAPE_WHILE_FORKING, how=how, forks=20) == [0] * 20


def test_a_reader_inherited_through_fork_is_refused_with_a_reason(workers, metrics_dir):
    """A ``Reader`` the application keeps across a ``fork()`` is refused in the child (the
    parent may have been reading with it on another thread: its lock held for good there,
    its state half-changed) with an error that says what to do; the parent's goes on."""
    w = workers()
    code = (
        "import shmetrics\n"
        "Counter('inherited', 'help', registry=None).inc()\n"
        "reader = shmetrics.Reader(path)\n"
        "assert b'inherited_total 1.0' in reader.render()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    try:\n"
        "        reader.render()\n"
        "    except RuntimeError as e:\n"
        "        fresh = shmetrics.Reader(path).render()\n"
        "        os._exit(0 if 'inherited through fork()' in str(e) and b'inherited_total 1.0' in fresh else 5)\n"
        "    os._exit(6)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "result = (os.waitstatus_to_exitcode(status), b'inherited_total 1.0' in reader.render())"
    )
    assert w.run(code, path=metrics_dir) == (0, True)
