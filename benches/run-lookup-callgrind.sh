#!/usr/bin/env bash
# Instructions per labelled lookup + inc, and per first-time child creation + inc,
# shmetrics against tikv `with_label_values`, and shmetrics behind the `metrics` facade
# (the recorder's `register_counter` with a prebuilt key), with 2 and 4 label values
# (callgrind: a run of CALLS operations minus a `--dry` run that prepares the same and skips
# them, over CALLS). Instruction counts do not depend on the machine's load, unlike the
# criterion times.
#
#   benches/run-lookup-callgrind.sh [CALLS]     # default 100000 (creations: CALLS / 10)
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
for op in lookup create; do
  n=$calls
  [ "$op" = create ] && n=$((calls / 10))
  for labels in 2 4; do
    for peer in ours tikv facade; do
      base=$(instructions "$op" "$peer" "$labels" "$n" --dry)
      total=$(instructions "$op" "$peer" "$labels" "$n")
      echo "$op $peer labels=$labels $(( (total - base) / n )) instructions per $op + inc"
    done
  done
done
