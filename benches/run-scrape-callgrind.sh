#!/usr/bin/env bash
# Instructions per warm scrape (callgrind: a run of SCRAPES scrapes minus a `--dry` run that
# builds the same fixture and warms the same reader, over SCRAPES), for the gen workload with
# live writers, the same directory compacted, and the vLLM set. Instruction counts do not
# depend on the machine's load, unlike criterion's times, so two builds compare exactly.
#
#   benches/run-scrape-callgrind.sh [SCRAPES]     # default 20
set -euo pipefail
cd "$(dirname "$0")/.."
scrapes=${1:-20}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
cargo build --release --locked -q -p shmetrics-benches --bin scrape-instructions
bin=${SCRAPE_INSTRUCTIONS_BIN:-target/release/scrape-instructions}
instructions() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$@" 2>&1 |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
for workload in "gen 128 1000" "compacted 128 1000" "vllm 64"; do
  base=$(instructions $workload "$scrapes" --dry)
  total=$(instructions $workload "$scrapes")
  echo "$workload: $(( (total - base) / scrapes )) instructions per warm scrape"
done
