#!/usr/bin/env bash
# Runs the reader benches (benches/reader.rs) and prints three tables from criterion's
# mean times: the scrape grid (time per scrape, ns and series/s per series read, and for
# some sizes the snapshot and render parts and the limit: every slot read and the result
# rendered), rendering 10,000 merged series against the Rust peers and raw formatting
# (speedups and ratio, next to the target of docs/performance.md), and
# the vLLM metric set by engine count.
#
# Usage: benches/run-reader.sh [extra criterion args, e.g. a filter such as render_10k]
#
# The whole file takes about 2 to 4 minutes on 2 cores (fixtures of up to 1.28 M series
# are built in a few seconds each). The reader's peak RSS is measured apart, in a process
# of its own:
#   cargo run --profile bench -p shmetrics-benches --bin reader-rss -- --processes 128 --series 10000
#
# Results are read from criterion's estimates.json files under $CRITERION_HOME, else
# $CARGO_TARGET_DIR/criterion, else the workspace target directory's criterion/ (the same
# order criterion itself uses). Timings are noisy on a shared machine: compare ratios from
# one run, not absolute times across runs.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/criterion-env.sh"

started="$(date +%s)"
cargo bench -p shmetrics-benches --bench reader -- --noplot "$@"

criterion_dir="$(criterion_dir)"

python3 - "$criterion_dir" "$started" <<'EOF'
import json
import os
import sys

criterion_dir, started = sys.argv[1], int(sys.argv[2])
any_stale = False


def result(group, bench):
    """(mean ns, elements per iteration, stale) or None when the bench has no result."""
    global any_stale
    base = os.path.join(criterion_dir, group, bench, "new")
    try:
        with open(os.path.join(base, "estimates.json")) as f:
            mean = json.load(f)["mean"]["point_estimate"]
        with open(os.path.join(base, "benchmark.json")) as f:
            throughput = json.load(f).get("throughput") or {}
    except FileNotFoundError:
        return None
    stale = os.path.getmtime(os.path.join(base, "estimates.json")) < started
    any_stale |= stale
    return mean, throughput.get("Elements"), stale


def mark(*results):
    return " (stale)" if any(r and r[2] for r in results) else ""


def ms(r):
    return f"{r[0] / 1e6:.3f}" if r else "-"


def table(title, rows, left=(0,)):
    if len(rows) == 1:
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    print(title)
    for n, row in enumerate(rows):
        print("  ".join(c.ljust(w) if i in left else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


print()
print(f"reader benches: mean of criterion's estimates ({criterion_dir})")

rows = [("P x S", "series read", "scrape (ms)", "ns/series", "M series/s",
         "snapshot (ms)", "render (ms)", "render share", "limit (ms)", "scrape / limit",
         "2 threads (ms)", "2 threads / limit")]
for s in (100, 1000, 10000):
    for p in (1, 8, 32, 128):
        bench = f"{p}x{s}"
        scrape = result("scrape", bench)
        if scrape is None:
            continue
        snap = result("snapshot_only", bench)
        rend = result("render_only", bench)
        limit = result("limit", bench)
        two = result("scrape_2_threads", bench)
        read = p * s
        rows.append((
            bench + mark(scrape, snap, rend, limit, two),
            f"{read:,}",
            ms(scrape),
            f"{scrape[0] / read:.1f}",
            f"{read / scrape[0] * 1e3:.1f}",
            ms(snap),
            ms(rend),
            f"{rend[0] / scrape[0]:.0%}" if rend else "-",
            ms(limit),
            f"{scrape[0] / limit[0]:.2f}x" if limit else "-",
            ms(two),
            f"{two[0] / limit[0]:.2f}x" if two and limit else "-",
        ))
table("scrape: Reader::scrape (snapshot + render, text format), P processes x S series each", rows)
print("limit: one relaxed load of every slot word of the directory's segments and the render "
      "of the same snapshot (benches/fixtures.rs, SlotAreas); 2 threads: the scrape with "
      "Reader::set_fold_threads(2)")

ours = result("render_10k", "shmetrics")
raw = result("render_10k", "raw_formatting")
PEERS = ("prometheus_client_text", "prometheus_client_prometheus_text", "tikv_text_encoder")
rows = [("encoder", "time (ms)", "ns/series", "shmetrics speedup", "vs raw formatting")]
for bench in ("shmetrics", "shmetrics_openmetrics", "shmetrics_openmetrics_created", "raw_formatting",
              "raw_cached_prefixes") + PEERS:
    r = result("render_10k", bench)
    if r is None:
        continue
    rows.append((
        bench + mark(r),
        ms(r),
        f"{r[0] / 1e4:.1f}",
        f"{r[0] / ours[0]:.2f}x" if ours and bench in PEERS else "-",
        f"{r[0] / raw[0]:.2f}x" if raw else "-",
    ))
table("render_10k: 10,000 merged series (1 process x 10,000, text format)", rows)
peers = [(result("render_10k", b), b) for b in PEERS]
peers = [(r, b) for r, b in peers if r]
if ours and peers:
    best, name = min(peers)
    print(f"best peer: {name}; shmetrics is {best[0] / ours[0]:.2f}x faster "
          "(target: >= 5x faster than the best peer)")
if ours and raw:
    print(f"shmetrics render / raw formatting: {ours[0] / raw[0]:.2f}x")
om, om_created = result("render_10k", "shmetrics_openmetrics"), result("render_10k", "shmetrics_openmetrics_created")
if om and om_created:
    print(f"OpenMetrics with _created samples (6,665 more lines) / without: {om_created[0] / om[0]:.2f}x")
cached = result("render_10k", "raw_cached_prefixes")
if ours and cached:
    print(f"shmetrics render / raw formatting with cached line prefixes: {ours[0] / cached[0]:.2f}x")

rows = [("engines", "series read", "scrape (ms)", "ns/series")]
for n in (4, 16, 64):
    r = result("vllm", str(n))
    if r is None:
        continue
    rows.append((
        f"{n}{mark(r)}",
        f"{r[1]:,}" if r[1] else "-",
        ms(r),
        f"{r[0] / r[1]:.1f}" if r[1] else "-",
    ))
table("vllm: Reader::scrape of the vLLM metric set, N engines", rows)

if any_stale:
    print("(stale): a result older than this run (filtered out by the arguments?)")
EOF
