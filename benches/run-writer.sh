#!/usr/bin/env bash
# Runs the writer benches (benches/writer.rs) and prints, per operation, criterion's mean
# time, its in-process baseline's mean time and their ratio, next to the DESIGN.md §5 target.
#
# Usage: benches/run-writer.sh [extra criterion args, e.g. --measurement-time 10]
#
# Results are read from criterion's estimates.json files under $CRITERION_HOME, else
# $CARGO_TARGET_DIR/criterion, else the workspace target directory's criterion/ (the same
# order criterion itself uses). Timings are noisy on a shared machine: compare ratios from
# one run, not absolute times across runs.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Cargo runs bench binaries from the package directory, not from here: make relative
# directories absolute (against the caller's directory) so cargo and criterion agree.
for var in CARGO_TARGET_DIR CRITERION_HOME; do
    if [[ -n "${!var:-}" && "${!var}" != /* ]]; then
        export "$var=$PWD/${!var}"
    fi
done
cd "$repo_root"

started="$(date +%s)"
cargo bench -p shmetrics-benches --bench writer -- --noplot "$@"

if [[ -n "${CRITERION_HOME:-}" ]]; then
    criterion_dir="$CRITERION_HOME"
elif [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
    criterion_dir="$CARGO_TARGET_DIR/criterion"
else
    criterion_dir="$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/criterion"
fi

python3 - "$criterion_dir" "$started" <<'EOF'
import json
import os
import sys

criterion_dir, started = sys.argv[1], int(sys.argv[2])

# (group, operation, baseline, DESIGN.md §5 target)
ROWS = [
    ("counter_inc", "shmetrics", "raw_fetch_add", "<= 1.2x raw fetch_add"),
    ("histogram_observe_20", "shmetrics", "raw_histogram", "<= 1.5x raw histogram"),
    ("labels_lookup_2", "shmetrics", "raw_fetch_add", "< 11.7 ns (tikv anchor)"),
]


def mean_ns(group, bench):
    path = os.path.join(criterion_dir, group, bench, "new", "estimates.json")
    try:
        with open(path) as f:
            estimates = json.load(f)
    except FileNotFoundError:
        sys.exit(f"run-writer.sh: no results at {path}")
    stale = os.path.getmtime(path) < started
    return estimates["mean"]["point_estimate"], stale


table = [("operation", "time (ns)", "baseline", "baseline (ns)", "ratio", "target")]
any_stale = False
for group, op, base, target in ROWS:
    op_ns, op_stale = mean_ns(group, op)
    base_ns, base_stale = mean_ns(group, base)
    stale = op_stale or base_stale
    any_stale |= stale
    table.append((
        f"{group}/{op}" + (" (stale)" if stale else ""),
        f"{op_ns:.2f}",
        base,
        f"{base_ns:.2f}",
        f"{op_ns / base_ns:.2f}x",
        target,
    ))

widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
print()
print(f"writer benches: mean of criterion's estimates ({criterion_dir})")
for n, row in enumerate(table):
    print("  ".join(cell.ljust(w) if i in (0, 2, 5) else cell.rjust(w)
                    for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    if n == 0:
        print("  ".join("-" * w for w in widths))
if any_stale:
    print("(stale): a result older than this run (filtered out by the arguments?)")
EOF
