"""``Info`` and ``Enum`` in multiprocess mode, which ``prometheus_client`` cannot do: through
the drop-in with unchanged ``prometheus_client`` calls in several processes, and through the
native API. Per label set the value last set by a live process wins (``livemostrecent``,
the default) or by any process (``mostrecent``); OpenMetrics has them as ``info`` and
``stateset``, the text format as gauges, as ``prometheus_client`` renders them."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

import shmetrics
from conftest import EXPOSE_BOTH

DEFINE = (
    "from prometheus_client import Info, Enum\n"
    "build = Info('build', 'Build.', ['component'], registry=None)\n"
    "phase = Enum('phase', 'Phase.', ['component'], states=['starting', 'running', 'stopped'], registry=None)\n"
)

EXPOSE = EXPOSE_BOTH


def om_values(exposition: str) -> dict:
    """``(family, type)`` -> sorted ``(labels, value)`` of each family, parsed by
    ``prometheus_client``'s OpenMetrics parser."""
    out = {}
    for family in text_string_to_metric_families(exposition):
        out[(family.name, family.type)] = sorted(
            (tuple(sorted(s.labels.items())), s.value) for s in family.samples
        )
    return out


def promtool_check(text: str) -> None:
    """`promtool check metrics` on a text exposition, when promtool is there (README's test
    command installs it and requires it)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        assert os.environ.get("SHMETRICS_REQUIRE_VALIDATORS") != "1", "promtool is not installed"
        return
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_info_and_enum_through_the_drop_in_in_several_processes(workers):
    a, b, reader = workers(), workers(), workers()
    a.run(DEFINE + "build.labels('api').info({'version': '1.0'})\nphase.labels('api').state('running')\n")
    time.sleep(0.01)
    b.run(DEFINE + "build.labels('api').info({'version': '1.1', 'commit': 'abc'})\n"
          "phase.labels('api')\nphase.labels('worker')\n")

    om, text = reader.run(EXPOSE)
    values = om_values(om)
    assert values[("build", "info")] == [((("commit", "abc"), ("component", "api"), ("version", "1.1")), 1.0)]
    assert values[("phase", "stateset")] == sorted([
        ((("component", "api"), ("phase", "starting")), 0.0),
        ((("component", "api"), ("phase", "running")), 1.0),
        ((("component", "api"), ("phase", "stopped")), 0.0),
        ((("component", "worker"), ("phase", "starting")), 1.0),
        ((("component", "worker"), ("phase", "running")), 0.0),
        ((("component", "worker"), ("phase", "stopped")), 0.0),
    ]), om
    # The text format: gauges, as prometheus_client writes an Info and an Enum.
    assert "# TYPE build_info gauge\n" in text and "# TYPE phase gauge\n" in text, text
    assert 'build_info{commit="abc",component="api",version="1.1"} 1.0\n' in text, text
    assert 'phase{component="api",phase="running"} 1.0\n' in text, text
    promtool_check(text)

    # The newest write wins; when its process dies, the newest of the live ones.
    time.sleep(0.01)
    b.run("phase.labels('api').state('stopped')\n")
    assert 'phase{component="api",phase="stopped"} 1.0\n' in reader.run(EXPOSE)[1]
    b.exit()
    om, text = reader.run(EXPOSE)
    assert 'build_info{component="api",version="1.0"} 1.0\n' in text, text
    assert 'phase{component="api",phase="running"} 1.0\n' in text, text
    assert "worker" not in text, text
    om_values(om)
    promtool_check(text)


def test_mostrecent_keeps_a_dead_process_value(workers):
    a, reader = workers(), workers()
    a.run("from prometheus_client import Info\n"
          "Info('build', 'Build.', registry=None, multiprocess_mode='mostrecent').info({'version': '2.0'})\n")
    a.exit()
    _, text = reader.run(EXPOSE)
    assert 'build_info{version="2.0"} 1.0\n' in text, text


def test_prometheus_client_checks_still_apply(workers):
    w = workers()
    w.run("from prometheus_client import Info, Enum\n"
          "i = Info('i', 'I.', ['a'], registry=None)\n"
          "e = Enum('e', 'E.', states=['x', 'y'], registry=None)\n")
    for code, message in (
        ("i.labels('1').info({'a': '2'})", "Overlapping labels"),
        ("e.state('z')", "is not in list"),
        ("Info('j', 'J.', registry=None, multiprocess_mode='livesum')", "Invalid multiprocess mode"),
    ):
        with pytest.raises(AssertionError, match=message):
            w.run(code)


def test_native_info_and_enum(metrics_dir):
    registry = shmetrics.Registry(metrics_dir)
    build = shmetrics.Info("build", "Build.", ["component"], registry=registry)
    build.labels(component="api").info({"version": "3.0"})
    phase = shmetrics.Enum("phase", "Phase.", states=["a", "b"], registry=registry, multiprocess_mode="mostrecent")
    phase.state("b")
    with pytest.raises(ValueError, match="unknown state"):
        phase.state("c")
    with pytest.raises(ValueError, match="missing label values"):
        build.info({"version": "x"})
    with pytest.raises(ValueError, match="Invalid multiprocess mode"):
        shmetrics.Enum("e2", "E.", states=["a"], registry=registry, multiprocess_mode="max")
    text = shmetrics.generate_latest(metrics_dir).decode()
    assert 'build_info{component="api",version="3.0"} 1.0\n' in text, text
    assert 'phase{phase="a"} 0.0\nphase{phase="b"} 1.0\n' in text, text
    om = shmetrics.generate_latest(metrics_dir, openmetrics=True).decode()
    values = om_values(om)
    assert values[("build", "info")] == [((("component", "api"), ("version", "3.0")), 1.0)]
    assert values[("phase", "stateset")] == [((("phase", "a"),), 0.0), ((("phase", "b"),), 1.0)]
    promtool_check(text)


def test_metrics_made_while_installed_keep_working_after_uninstall(workers):
    w = workers()
    w.run("from prometheus_client import Info, Enum\n"
          "i = Info('i', 'I.', ['a'], registry=None)\n"
          "e = Enum('e', 'E.', ['a'], states=['x', 'y'], registry=None)\n"
          "import shmetrics.prometheus_client\nshmetrics.prometheus_client.uninstall()\n"
          "i.labels('1').info({'v': '2'})\ne.labels('1').state('y')\n"
          "result = (i.labels('1')._value, e.labels('1')._value)\n")
    assert w.run("result = (i.labels('1')._value, e.labels('1')._value)") == ({"v": "2"}, 1)
