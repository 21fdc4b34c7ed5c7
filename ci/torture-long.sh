#!/usr/bin/env bash
# The long form of the torture test (crates/shmetrics-reader/tests/torture.rs): 16 writer
# processes SIGKILLed and restarted at random moments (default 300 kills) while a reader
# scrapes continuously and a compactor runs (some runs stopped half-way). Prints the run's
# figures; record them in docs/reliability.md.
#
# Usage: ci/torture-long.sh [KILLS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
export TORTURE_KILLS="${1:-300}"
export TORTURE_SEED="${2:-$(date +%s)}"
echo "torture: TORTURE_KILLS=$TORTURE_KILLS TORTURE_SEED=$TORTURE_SEED"
cargo test --release --locked -p shmetrics-reader --test torture -- --nocapture 2>&1 \
  | grep -E '^torture:|test result|panicked|FAILED'
