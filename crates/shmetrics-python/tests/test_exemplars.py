"""Exemplars through the drop-in: unchanged ``inc(exemplar=...)`` and
``observe(v, exemplar=...)`` calls in several processes; the OpenMetrics exposition of
``prometheus_client`` (and shmetrics' native one) shows the newest of any process on each
counter ``_total`` and histogram ``_bucket``, parsed by ``prometheus_client``'s
OpenMetrics parser; the text format has none; refused labels raise as in
``prometheus_client``."""

from __future__ import annotations

import time

from prometheus_client.openmetrics.parser import text_string_to_metric_families

import shmetrics
from conftest import EXPOSE_BOTH

WRITE = (
    "import time\n"
    "before = time.time()\n"
    "c = Counter('jobs', 'Jobs.', registry=None)\n"
    "c.inc(amount, exemplar={'trace_id': trace})\n"
    "h = Histogram('lat', 'Latency.', buckets=[1.0, 5.0], registry=None)\n"
    "h.observe(observed, exemplar={'trace_id': trace})\n"
    "result = (before, time.time())\n"
)


def exemplars(exposition: str) -> dict:
    """``(sample name, le)`` -> ``(trace_id, value, timestamp)`` of every exemplar, as
    ``prometheus_client``'s OpenMetrics parser reads them."""
    out = {}
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            if s.exemplar is not None:
                key = (s.name, s.labels.get("le"))
                out[key] = (s.exemplar.labels["trace_id"], s.exemplar.value, float(s.exemplar.timestamp))
    return out


def test_the_newest_exemplar_of_any_process_is_shown(workers, metrics_dir):
    first, second, scraper = workers(), workers(), workers()
    t1 = first.run(WRITE, amount=2.0, observed=0.5, trace="a1")
    time.sleep(0.01)
    t2 = second.run(WRITE, amount=3.0, observed=3.0, trace="b1")
    time.sleep(0.01)
    t3 = first.run(WRITE, amount=1.0, observed=0.25, trace="a2")

    om, text = scraper.run(EXPOSE_BOTH)
    shown = exemplars(om)
    assert sorted(shown) == [("jobs_total", None), ("lat_bucket", "1.0"), ("lat_bucket", "5.0")], om
    for key, trace, value, (before, after) in [
        (("jobs_total", None), "a2", 1.0, t3),
        (("lat_bucket", "1.0"), "a2", 0.25, t3),
        (("lat_bucket", "5.0"), "b1", 3.0, t2),
    ]:
        assert shown[key][:2] == (trace, value), (key, shown[key])
        assert before - 1e-3 <= shown[key][2] <= after + 1e-3, (key, shown[key], before, after)
    assert t1
    assert 'jobs_total 6.0 # {trace_id="a2"} 1.0 ' in om, om
    # The text format has none, and its samples are unchanged.
    assert " # " not in text and "jobs_total 6.0\n" in text, text
    # The native exposition shows the same.
    native = shmetrics.generate_latest(metrics_dir, openmetrics=True).decode()
    assert exemplars(native) == shown, native

    # The newest writer dies: its exemplars stay.
    first.kill()
    assert exemplars(scraper.run(EXPOSE_BOTH)[0]) == shown


def test_refused_exemplar_labels_raise_and_count_nothing(workers):
    w = workers()
    refusal = w.run(
        "c = Counter('jobs', 'Jobs.', registry=None)\n"
        "try:\n"
        "    c.inc(1, exemplar={'a': 'x' * 200})\n"
        "    long_raised = None\n"
        "except ValueError as e:\n"
        "    long_raised = str(e)\n"
        "try:\n"
        "    c.inc(1, exemplar={'a.b': '1'})\n"
        "    utf8_raised = False\n"
        "except ValueError:\n"
        "    utf8_raised = True\n"
        "c.inc(1, exemplar={})\n"
        "result = (long_raised, utf8_raised, c._value.get())\n"
    )
    long_raised, utf8_raised, value = refusal
    assert long_raised and "128" in long_raised, long_raised
    # A UTF-8 label name: refused by prometheus_client's legacy validation; accepted by its
    # UTF-8 one, then counted with no exemplar (OpenMetrics 1.0 cannot carry it). An empty
    # exemplar stores none and counts, as prometheus_client does.
    assert value == (1.0 if utf8_raised else 2.0)
    om, _ = w.run(EXPOSE_BOTH)
    assert exemplars(om) == {}, om


def test_a_counter_subclass_calling_the_original_inc_stores_its_exemplar(workers):
    """A subclass that overrides ``inc`` and calls ``prometheus_client``'s: that ``inc``
    adds through the value, then calls the value's ``set_exemplar``."""
    w = workers()
    w.run(
        "class Traced(Counter):\n"
        "    def inc(self, amount=1, exemplar=None):\n"
        "        super().inc(amount, exemplar)\n"
        "c = Traced('jobs', 'Jobs.', registry=None)\n"
        "c.inc(4, exemplar={'trace_id': 'sub'})\n"
        "result = None\n"
    )
    om, text = w.run(EXPOSE_BOTH)
    assert exemplars(om)[("jobs_total", None)][:2] == ("sub", 4.0), om
    assert "jobs_total 4.0\n" in text, text


def test_escaped_exemplar_label_values_parse_back(workers, metrics_dir):
    w = workers()
    value = 'a "quoted" \\ back\nslash'
    w.run(
        "Counter('jobs', 'Jobs.', registry=None).inc(1, exemplar={'note': note})\nresult = None\n",
        note=value,
    )
    om, _ = w.run(EXPOSE_BOTH)
    native = shmetrics.generate_latest(metrics_dir, openmetrics=True).decode()
    for exposition in (om, native):
        families = {f.name: f for f in text_string_to_metric_families(exposition)}
        sample = families["jobs"].samples[0]
        assert sample.exemplar.labels == {"note": value}, exposition
