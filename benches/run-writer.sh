#!/usr/bin/env bash
# Runs the writer benches (benches/writer.rs and, on two threads, benches/writer_threads.rs)
# and prints, per operation, criterion's mean
# time, its physical limit's mean time from the same group and their ratio (with the
# target of docs/performance.md), then each peer's mean time (tikv `prometheus`, `prometheus-client`,
# `metrics`) and how many times faster shmetrics is (peer time / shmetrics time).
#
# Usage: benches/run-writer.sh [--quick] [extra criterion args, e.g. a filter or
#        --measurement-time 10]
#   --quick  shorter criterion times (0.3 s warm-up, 1 s measurement, 20 samples per
#            benchmark: about a minute and a half of measuring instead of about four);
#            noisier, for a first look.
#
# Results are read from criterion's estimates.json files under $CRITERION_HOME, else
# $CARGO_TARGET_DIR/criterion, else the workspace target directory's criterion/ (the same
# order criterion itself uses). Timings are noisy on a shared machine: compare ratios from
# one run, not absolute times across runs. The load average before and after is printed
# with the table for that reason.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/criterion-env.sh"

criterion_args=()
for arg in "$@"; do
    if [[ "$arg" == --quick ]]; then
        criterion_args+=(--warm-up-time 0.3 --measurement-time 1 --sample-size 20)
    else
        criterion_args+=("$arg")
    fi
done

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
started="$(date +%s)"
cargo bench -p shmetrics-benches --bench writer --bench writer_threads -- --noplot ${criterion_args[@]+"${criterion_args[@]}"}
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

criterion_dir="$(criterion_dir)"

python3 - "$criterion_dir" "$started" "$load_before" "$load_after" "$(nproc)" <<'EOF'
import json
import os
import sys

criterion_dir, started, load_before, load_after, cores = sys.argv[1:]
started = int(started)

TIKV = "tikv prometheus"
PC = "prometheus-client"
# group: (shmetrics benchmarks, raw baseline or None, target (docs/performance.md), peers)
GROUPS = [
    ("counter_inc", ["shmetrics"], "raw_fetch_add", "<= 1.2x raw", [
        ("tikv_int_counter", f"{TIKV} IntCounter::inc"),
        ("tikv_counter_f64", f"{TIKV} Counter::inc (f64)"),
        ("prometheus_client", f"{PC} Counter::inc"),
        ("metrics", "metrics Counter::increment"),
    ]),
    ("counter_inc_by_f64", ["shmetrics"], "raw_f64_cas", "", [
        ("tikv_counter_f64", f"{TIKV} Counter::inc_by"),
        ("prometheus_client", f"{PC} Counter<f64>::inc_by"),
    ]),
    ("gauge_set", ["shmetrics_mostrecent", "shmetrics_livesum"], "raw_store", "", [
        ("tikv", f"{TIKV} Gauge::set"),
        ("prometheus_client", f"{PC} Gauge<f64>::set"),
        ("metrics", "metrics Gauge::set"),
    ]),
    ("histogram_observe_20", ["shmetrics"], "raw_histogram", "<= 1.5x raw", [
        ("tikv", f"{TIKV} Histogram::observe"),
        ("prometheus_client", f"{PC} Histogram::observe"),
        ("metrics", "metrics Histogram::record"),
    ]),
    ("histogram_observe_20_fixed", ["shmetrics"], "raw_histogram", "<= 1.5x raw", [
        ("tikv", f"{TIKV} Histogram::observe"),
        ("prometheus_client", f"{PC} Histogram::observe"),
        ("metrics", "metrics Histogram::record"),
    ]),
    ("labels_lookup_2", ["shmetrics"], "raw_fetch_add", "faster than tikv", [
        ("tikv", f"{TIKV} with_label_values"),
        ("prometheus_client", f"{PC} get_or_create"),
        ("metrics", "metrics counter!(labels)"),
    ]),
    ("labels_lookup_4", ["shmetrics"], "raw_fetch_add", "faster than tikv", [
        ("tikv", f"{TIKV} with_label_values"),
        ("prometheus_client", f"{PC} get_or_create"),
        ("metrics", "metrics counter!(labels)"),
    ]),
    ("child_create", ["shmetrics"], None, "", [
        ("tikv", f"{TIKV} with_label_values"),
        ("prometheus_client", f"{PC} get_or_create"),
        ("metrics", "metrics counter!(labels)"),
    ]),
    ("counter_inc_2t", ["shmetrics"], "raw_fetch_add", "", [
        ("tikv_int_counter", f"{TIKV} IntCounter::inc"),
        ("prometheus_client", f"{PC} Counter::inc"),
        ("metrics", "metrics Counter::increment"),
    ]),
    ("counter_inc_by_f64_2t", ["shmetrics"], "raw_f64_cas", "", [
        ("tikv_counter_f64", f"{TIKV} Counter::inc_by"),
        ("prometheus_client", f"{PC} Counter<f64>::inc_by"),
    ]),
    ("gauge_set_2t", ["shmetrics_mostrecent", "shmetrics_livesum"], "raw_store", "", [
        ("tikv", f"{TIKV} Gauge::set"),
        ("prometheus_client", f"{PC} Gauge<f64>::set"),
        ("metrics", "metrics Gauge::set"),
    ]),
    ("histogram_observe_20_2t", ["shmetrics"], "raw_histogram", "", [
        ("tikv", f"{TIKV} Histogram::observe"),
        ("prometheus_client", f"{PC} Histogram::observe"),
        ("metrics", "metrics Histogram::record"),
    ]),
    ("labels_lookup_2_2t", ["shmetrics"], "raw_fetch_add", "", [
        ("tikv", f"{TIKV} with_label_values"),
        ("prometheus_client", f"{PC} get_or_create"),
        ("metrics", "metrics counter!(labels)"),
    ]),
    ("labels_lookup_4_2t", ["shmetrics"], "raw_fetch_add", "", [
        ("tikv", f"{TIKV} with_label_values"),
        ("prometheus_client", f"{PC} get_or_create"),
        ("metrics", "metrics counter!(labels)"),
    ]),
    ("child_create_2t", ["shmetrics"], None, "", [
        ("tikv", f"{TIKV} with_label_values"),
        ("prometheus_client", f"{PC} get_or_create"),
        ("metrics", "metrics counter!(labels)"),
    ]),
]

any_stale = False
any_missing = False


def mean_ns(group, bench):
    """Criterion's mean estimate in ns, or None when the benchmark did not run."""
    global any_stale, any_missing
    path = os.path.join(criterion_dir, group, bench, "new", "estimates.json")
    try:
        with open(path) as f:
            estimates = json.load(f)
    except FileNotFoundError:
        any_missing = True
        return None
    if os.path.getmtime(path) < started:
        any_stale = True
        return None
    return estimates["mean"]["point_estimate"]


def ns(value):
    return "-" if value is None else f"{value:.2f}"


def ratio(a, b):
    return "-" if a is None or b is None else f"{a / b:.2f}x"


header = ("operation", "ns", "raw", "raw ns", "x raw", "target", "peer", "peer ns",
          "speedup")
table = [header]
for group, ours, raw, target, peers in GROUPS:
    raw_ns = mean_ns(group, raw) if raw else None
    for bench in ours:
        op_ns = mean_ns(group, bench)
        first = (f"{group}/{bench}", ns(op_ns), raw or "-", ns(raw_ns), ratio(op_ns, raw_ns),
                 target or "-")
        blank = ("",) * len(first)
        for n, (peer, label) in enumerate(peers):
            peer_ns = mean_ns(group, peer)
            table.append((first if n == 0 else blank) + (label, ns(peer_ns),
                                                         ratio(peer_ns, op_ns)))
        if not peers:
            table.append(first + ("", "", ""))

widths = [max(len(row[i]) for row in table) for i in range(len(header))]
left = {0, 2, 5, 6}
print()
print(f"writer benches: mean of criterion's estimates ({criterion_dir})")
print(f"machine: {cores} cores; load average (1, 5, 15 min) before {load_before}, "
      f"after {load_after}")
print("x raw: shmetrics time / the physical limit's; speedup: the peer's time / shmetrics' "
      "(> 1: shmetrics is faster)")
print()
for n, row in enumerate(table):
    print("  ".join(cell.ljust(w) if i in left else cell.rjust(w)
                    for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    if n == 0:
        print("  ".join("-" * w for w in widths))
if any_stale or any_missing:
    print("-: a benchmark without a result from this run (filtered out by the arguments?)")
EOF
