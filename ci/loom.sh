#!/usr/bin/env bash
# loom models of the publish protocols (crates/shmetrics-layout/tests/loom.rs): histogram
# and mostrecent-gauge consistency, f64 compare-and-swap additions, exemplar slots, metadata and
# continuation-segment publishing, and the compaction hand-off. Built with `--cfg loom` in
# its own target directory so the ordinary build cache stays valid.
#
#   ci/loom.sh                         # every model, release build
#   ci/loom.sh histogram               # models whose name contains "histogram"
#
# Models are exhaustive (no preemption bound) unless they set one themselves; LOOM_* from
# the environment (LOOM_MAX_PREEMPTIONS, LOOM_LOG, ...) pass through to loom.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${LOOM_TARGET_DIR:-$PWD/target/loom}
export RUSTFLAGS="${RUSTFLAGS:-} --cfg loom"
start=$(date +%s)
cargo test -p shmetrics-layout --test loom --release --locked -- --test-threads 1 "$@"
echo "loom models passed in $(($(date +%s) - start)) s"
