#!/usr/bin/env bash
# Instructions per labelled lookup + inc, shmetrics against tikv `with_label_values`, with 2
# and 4 label values (callgrind: a run of CALLS lookups minus a run of 0, divided by CALLS).
# Instruction counts do not depend on the machine's load, unlike the criterion times.
#
#   benches/run-lookup-callgrind.sh [CALLS]     # default 100000; needs valgrind
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-100000}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
cargo build --release --locked -q -p shmetrics-benches --bin lookup-instructions
bin=target/release/lookup-instructions
instructions() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$@" 2>&1 |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
for labels in 2 4; do
  for peer in ours tikv; do
    base=$(instructions "$peer" "$labels" 0)
    total=$(instructions "$peer" "$labels" "$calls")
    echo "$peer labels=$labels $(( (total - base) / calls )) instructions per lookup + inc"
  done
done
